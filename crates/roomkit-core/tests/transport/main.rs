//! Integration tests of the Level 1 transport machinery in the core:
//! delivery resilience (breaker, retry, rate limit, timeouts) against a
//! scripted fake provider on a paused clock, and identity resolution
//! (RFC §11) through the inbound pipeline. Names carry checklist ids (T-nn).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake;
mod identity;
mod resilience;
mod telemetry;
