//! Integration tests of the AI crate: providers against local fake servers
//! that speak each wire format, the AI channel in a room, tools, and
//! Appendix B flows through the HTTP server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod anthropic;
mod channel;
mod fake;
mod fuzz_replies;
mod openai;
mod server;
mod tools;
