//! Integration tests of the voice crate: the Twilio Media Streams transport
//! over a loopback WebSocket, and whole calls through a room with test
//! doubles for the speech providers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod call;
mod support;
mod turns;
mod twilio;
