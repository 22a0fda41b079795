//! Real-time audio processing for RoomKit voice channels: frames, stages, codecs and the pipeline engine.
//!
//! Everything here is synchronous and independent of any async runtime. A
//! voice channel owns one [`AudioPipeline`] per pipeline configuration and
//! calls it for every 10-30 ms frame; stages work on the frame in place and
//! keep their adaptive state per stream key.
//!
//! See the crate README for the stage list, formats and the event JSON.

pub mod aec;
pub mod agc;
pub mod codec;
pub mod denoise;
pub mod diarize;
pub mod dtmf;
mod error;
mod frame;
pub mod pipeline;
pub mod plc;
pub mod recorder;
pub mod resample;
pub mod signal;
pub mod sink;
pub mod stage;
pub mod taps;
pub mod turn;
pub mod vad;

pub use error::AudioError;
pub use frame::{AudioChunk, AudioFormat, AudioFrame, Encoding, FrameMetadata};
pub use pipeline::{
    AudioPipeline, AudioPipelineBuilder, AudioPipelineConfig, AudioPipelineContract, PipelineEvent,
    TransportCapabilities,
};
pub use sink::{RecordingSink, RecordingSinks};
