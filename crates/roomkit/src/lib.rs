//! The `roomkit` command as a library: the configuration loader, the
//! server's assembly and the audio tools. The `roomkit` binary (`main.rs`)
//! is a thin command-line front end over these modules; the fuzz targets
//! and tests call them directly (for example [`config::load`]).

pub mod analytics;
pub mod audio_cmd;
pub mod config;
#[cfg(test)]
mod fuzz_tests;
pub mod serve;
pub mod sip;
pub mod telemetry;
pub mod transport;
pub mod voice;
