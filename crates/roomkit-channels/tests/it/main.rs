//! Integration tests of the transport channels against local fake provider
//! servers speaking each vendor's documented wire format, and of their
//! webhook receivers (signatures, parsing, replies).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod email;
mod support;
mod telegram;
mod telnyx;
mod twilio;
mod webhook;
