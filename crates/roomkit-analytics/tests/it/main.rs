//! Integration tests of call analytics: the Roark exporter against a fake
//! backend with faults, the observer, the spool and crash recovery, and the
//! local report exporter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audio_sink;
mod crash;
mod disk_full;
mod observer;
mod report;
mod roark;
mod rooms;
mod util;
mod voice;
