//! Integration tests of roomkit-audio: signal-level properties of every stage and of the pipeline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aec;
mod aec_silence;
mod codec;
mod diarize;
mod dsp;
mod dtmf;
mod pipeline;
mod recorder;
mod resample;
mod turn;
mod util;
mod vad;
