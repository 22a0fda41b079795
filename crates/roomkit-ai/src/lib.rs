//! AI channels for RoomKit: intelligence that reads a room and answers.
//!
//! This crate holds the built-in [`EchoAgent`], the agent `roomkit serve`
//! uses when no AI provider is configured. It is a real intelligence channel
//! (type `ai`), so it goes through the same pipeline, permissions, chain-depth
//! limit and hooks as a model-backed agent would.

#![warn(missing_docs)]

mod echo;

pub use echo::{ECHO_PREFIX, EchoAgent};
