//! Integration tests of channels, bindings, permissions and the hook engine
//! (RFC §6, §7, §9). Test names carry the checklist ids (C-nn) they verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod channels;
mod hooks;
mod support;
