//! The provider interfaces of the pipeline stages and the per-stream state map they share.
//!
//! Every stage is synchronous and keyed by an opaque stream key (a session or
//! lane id). Adaptive state never crosses streams: each key gets its own
//! instance, created lazily on its first frame and dropped by `reset`.

use std::collections::HashMap;

use crate::{AudioError, AudioFrame};

/// A stage that rewrites frames in place: AGC, denoiser, post-processor.
pub trait FrameProcessor {
    /// Provider name, e.g. `rnnoise`.
    fn name(&self) -> &str;
    /// Processes one frame of `stream` in place.
    ///
    /// # Errors
    /// A stage returns an error for a frame it cannot handle (wrong format);
    /// the frame is then left unchanged.
    fn process(&mut self, frame: &mut AudioFrame, stream: &str) -> Result<(), AudioError>;
    /// Drops the state kept for `stream`.
    fn reset(&mut self, stream: &str);
    /// Releases every stream's state.
    fn close(&mut self);
    /// How far (in ms) the stage delays the signal it outputs.
    fn latency_ms(&self) -> f64 {
        0.0
    }
}

/// Automatic gain control.
pub trait AgcProvider: FrameProcessor {}

/// Noise reduction.
pub trait DenoiserProvider: FrameProcessor {}

/// Outbound processing applied before the recorder and the AEC reference.
pub trait PostProcessor: FrameProcessor {}

/// Acoustic echo cancellation fed with the far-end (played-out) signal.
pub trait AecProvider: FrameProcessor {
    /// Feeds `stream`'s outbound audio as its echo reference.
    ///
    /// Called only for audio that is played; while nothing is played no
    /// reference comes, and the provider treats the far end as silent.
    ///
    /// # Errors
    /// When the reference does not match the capture format.
    fn feed_reference(&mut self, frame: &AudioFrame, stream: &str) -> Result<(), AudioError>;
}

/// Per-stream state store used by the built-in providers.
///
/// Lookups borrow the key, so steady-state processing does not allocate; the
/// key is copied only when a stream is first seen.
#[derive(Debug)]
pub struct StreamMap<S> {
    states: HashMap<String, S>,
}

impl<S> Default for StreamMap<S> {
    fn default() -> Self {
        Self {
            states: HashMap::new(),
        }
    }
}

impl<S> StreamMap<S> {
    /// The state of `stream`, created with `make` on first use.
    ///
    /// # Errors
    /// Whatever `make` returns.
    pub fn get_or_try_insert(
        &mut self,
        stream: &str,
        make: impl FnOnce() -> Result<S, AudioError>,
    ) -> Result<&mut S, AudioError> {
        if !self.states.contains_key(stream) {
            let state = make()?;
            self.states.insert(stream.to_owned(), state);
        }
        self.states
            .get_mut(stream)
            .ok_or_else(|| AudioError::Config("stream state vanished".into()))
    }

    /// The state of `stream` if it exists.
    pub fn get_mut(&mut self, stream: &str) -> Option<&mut S> {
        self.states.get_mut(stream)
    }

    /// Drops `stream`'s state.
    pub fn remove(&mut self, stream: &str) -> Option<S> {
        self.states.remove(stream)
    }

    /// Drops every stream's state.
    pub fn clear(&mut self) {
        self.states.clear();
    }

    /// Number of live streams.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when no stream holds state.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// Converts 16-bit samples to floats in [-1, 1).
#[inline]
pub fn i16_to_f32(s: i16) -> f32 {
    f32::from(s) / 32768.0
}

/// Converts a float in [-1, 1] to a 16-bit sample, rounding and saturating.
#[inline]
pub fn f32_to_i16(x: f32) -> i16 {
    let v = (x * 32768.0).round();
    v.clamp(-32768.0, 32767.0) as i16
}
