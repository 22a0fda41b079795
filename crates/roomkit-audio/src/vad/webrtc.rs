//! The WebRTC (libfvad) voice activity detector as a [`VadEngine`].

use serde::{Deserialize, Serialize};
use webrtc_vad::{SampleRate, Vad, VadMode};

use super::VadEngine;
use crate::AudioError;

/// Aggressiveness of the WebRTC VAD; higher modes reject more non-speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebRtcVadMode {
    /// Mode 0.
    Quality,
    /// Mode 1.
    LowBitrate,
    /// Mode 2.
    #[default]
    Aggressive,
    /// Mode 3.
    VeryAggressive,
}

/// libfvad behind the [`VadEngine`] interface.
///
/// The underlying detector holds a raw C pointer and is therefore neither
/// `Send` nor `Sync`: build the pipeline on the thread that runs it.
pub struct WebRtcVad {
    vad: Vad,
    mode: WebRtcVadMode,
    rate: u32,
}

impl std::fmt::Debug for WebRtcVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcVad")
            .field("mode", &self.mode)
            .field("rate", &self.rate)
            .finish()
    }
}

fn fvad_mode(mode: WebRtcVadMode) -> VadMode {
    match mode {
        WebRtcVadMode::Quality => VadMode::Quality,
        WebRtcVadMode::LowBitrate => VadMode::LowBitrate,
        WebRtcVadMode::Aggressive => VadMode::Aggressive,
        WebRtcVadMode::VeryAggressive => VadMode::VeryAggressive,
    }
}

fn fvad_rate(rate: u32) -> Option<SampleRate> {
    match rate {
        8_000 => Some(SampleRate::Rate8kHz),
        16_000 => Some(SampleRate::Rate16kHz),
        32_000 => Some(SampleRate::Rate32kHz),
        48_000 => Some(SampleRate::Rate48kHz),
        _ => None,
    }
}

impl WebRtcVad {
    /// A detector with the given aggressiveness.
    pub fn new(mode: WebRtcVadMode) -> Self {
        Self {
            vad: Vad::new_with_rate_and_mode(SampleRate::Rate16kHz, fvad_mode(mode)),
            mode,
            rate: 16_000,
        }
    }

    /// True when libfvad can work at `rate`.
    pub fn supports_rate(rate: u32) -> bool {
        fvad_rate(rate).is_some()
    }
}

impl VadEngine for WebRtcVad {
    fn speech_probability(&mut self, samples: &[i16], rate: u32) -> Result<f32, AudioError> {
        if rate != self.rate {
            let r = fvad_rate(rate).ok_or_else(|| AudioError::FormatMismatch {
                stage: "webrtc_vad",
                expected: "8, 16, 32 or 48 kHz".into(),
                got: format!("{rate} Hz"),
            })?;
            self.vad = Vad::new_with_rate_and_mode(r, fvad_mode(self.mode));
            self.rate = rate;
        }
        // libfvad accepts 10, 20 or 30 ms; longer frames are split into 10 ms
        // pieces and count as speech when most pieces are.
        let ten_ms = rate as usize / 100;
        let len = samples.len();
        if len == ten_ms * 2 || len == ten_ms * 3 || len == ten_ms {
            let v = self
                .vad
                .is_voice_segment(samples)
                .map_err(|()| AudioError::provider("libfvad", "classify frame", "rejected"))?;
            return Ok(if v { 1.0 } else { 0.0 });
        }
        if ten_ms == 0 || !len.is_multiple_of(ten_ms) {
            return Err(AudioError::FormatMismatch {
                stage: "webrtc_vad",
                expected: "whole 10 ms blocks".into(),
                got: format!("{len} samples at {rate} Hz"),
            });
        }
        let mut voiced = 0u32;
        let mut total = 0u32;
        for block in samples.chunks_exact(ten_ms) {
            total += 1;
            if self
                .vad
                .is_voice_segment(block)
                .map_err(|()| AudioError::provider("libfvad", "classify frame", "rejected"))?
            {
                voiced += 1;
            }
        }
        Ok(voiced as f32 / total.max(1) as f32)
    }
}
