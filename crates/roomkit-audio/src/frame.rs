//! Audio frames, outbound chunks and the format descriptors of the pipeline contract.

use serde::{Deserialize, Serialize};

use crate::AudioError;

/// Sample encodings that the pipeline and its codecs know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Signed 16-bit little-endian PCM, the only encoding stages operate on.
    #[default]
    PcmS16le,
    /// G.711 µ-law.
    Mulaw,
    /// G.711 A-law.
    Alaw,
    /// Opus.
    Opus,
}

impl Encoding {
    /// The conventional lower-case name (`pcm_s16le`, `mulaw`, `alaw`, `opus`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PcmS16le => "pcm_s16le",
            Self::Mulaw => "mulaw",
            Self::Alaw => "alaw",
            Self::Opus => "opus",
        }
    }
}

/// Describes a stream of audio: rate, channel count, sample width and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioFormat {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Interleaved channel count.
    pub channels: u16,
    /// Bytes per sample (2 for 16-bit PCM).
    pub sample_width: u16,
    /// Encoding of the samples.
    #[serde(default)]
    pub codec: Encoding,
}

impl AudioFormat {
    /// 16-bit mono PCM at `sample_rate`.
    pub const fn pcm_mono(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            channels: 1,
            sample_width: 2,
            codec: Encoding::PcmS16le,
        }
    }

    /// Number of samples (all channels) in `ms` milliseconds, if that is a whole number.
    pub fn samples_in_ms(&self, ms: u32) -> Option<usize> {
        let per_channel = u64::from(self.sample_rate) * u64::from(ms);
        if per_channel % 1000 != 0 {
            return None;
        }
        usize::try_from(per_channel / 1000 * u64::from(self.channels)).ok()
    }

    /// Checks that the format is usable by the PCM stages.
    ///
    /// # Errors
    /// [`AudioError::InvalidFormat`] for a zero rate, zero channels or a
    /// sample width other than 2.
    pub fn validate(&self) -> Result<(), AudioError> {
        if self.sample_rate == 0 || self.sample_rate > 384_000 {
            return Err(AudioError::InvalidFormat(format!(
                "sample rate {} Hz",
                self.sample_rate
            )));
        }
        if self.channels == 0 || self.channels > 8 {
            return Err(AudioError::InvalidFormat(format!(
                "{} channels",
                self.channels
            )));
        }
        if self.codec == Encoding::PcmS16le && self.sample_width != 2 {
            return Err(AudioError::InvalidFormat(format!(
                "sample width {} for pcm_s16le",
                self.sample_width
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} Hz x{} {}",
            self.sample_rate,
            self.channels,
            self.codec.as_str()
        )
    }
}

/// Annotations that stages add to a frame as it moves down the pipeline.
///
/// The well-known keys of the specification are typed fields; anything else
/// goes into `extra`, which stays empty (and unallocated) unless used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameMetadata {
    /// Rate of the frame before the resampler touched it.
    pub original_sample_rate: Option<u32>,
    /// Channel count before the resampler touched it.
    pub original_channels: Option<u16>,
    /// Set by the echo canceller.
    pub echo_cancelled: bool,
    /// Gain the AGC applied to this frame, in dB.
    pub gain_applied_db: Option<f32>,
    /// The frame was synthesised by packet loss concealment.
    pub concealed: bool,
    /// Set on the frame where the VAD reported speech starting (`true`) or ending (`false`).
    pub speech: Option<bool>,
    /// Set by diarization on the frame where it reported a speaker change: the new speaker's label.
    pub speaker_id: Option<String>,
    /// Free-form annotations from custom stages.
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

impl FrameMetadata {
    /// Clears every annotation without releasing memory.
    pub fn clear(&mut self) {
        self.original_sample_rate = None;
        self.original_channels = None;
        self.echo_cancelled = false;
        self.gain_applied_db = None;
        self.concealed = false;
        self.speech = None;
        self.speaker_id = None;
        self.extra.clear();
    }
}

/// One block of inbound (or speech-to-speech) audio moving through the pipeline.
///
/// Samples are interleaved signed 16-bit PCM. Stages work on the frame in
/// place; the sample vector keeps its capacity, so a frame reused for every
/// 20 ms block does not allocate after the first one.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    /// Interleaved samples.
    pub samples: Vec<i16>,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
    /// Start of the frame on the stream's media clock, in milliseconds.
    pub timestamp_ms: Option<f64>,
    /// Stage annotations.
    pub metadata: FrameMetadata,
}

impl AudioFrame {
    /// Builds a frame and checks its alignment.
    ///
    /// # Errors
    /// [`AudioError::InvalidFormat`] when the rate or channel count is zero or
    /// the sample count is not a multiple of the channel count.
    pub fn new(samples: Vec<i16>, sample_rate: u32, channels: u16) -> Result<Self, AudioError> {
        let frame = Self {
            samples,
            sample_rate,
            channels,
            timestamp_ms: None,
            metadata: FrameMetadata::default(),
        };
        frame.validate()?;
        Ok(frame)
    }

    /// An empty frame whose sample buffer can hold `capacity` samples without
    /// reallocating.
    pub fn with_capacity(sample_rate: u32, channels: u16, capacity: usize) -> Self {
        Self {
            samples: Vec::with_capacity(capacity),
            sample_rate,
            channels,
            timestamp_ms: None,
            metadata: FrameMetadata::default(),
        }
    }

    /// Sets the media-clock timestamp (builder style).
    #[must_use]
    pub fn at(mut self, timestamp_ms: f64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Checks rate, channel count and interleaving.
    ///
    /// # Errors
    /// [`AudioError::InvalidFormat`] describing the first problem found.
    pub fn validate(&self) -> Result<(), AudioError> {
        self.format().validate()?;
        if !self
            .samples
            .len()
            .is_multiple_of(usize::from(self.channels))
        {
            return Err(AudioError::InvalidFormat(format!(
                "{} samples do not divide into {} channels",
                self.samples.len(),
                self.channels
            )));
        }
        Ok(())
    }

    /// The PCM format of this frame.
    pub fn format(&self) -> AudioFormat {
        AudioFormat {
            sample_rate: self.sample_rate,
            channels: self.channels,
            sample_width: 2,
            codec: Encoding::PcmS16le,
        }
    }

    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        self.frames() as f64 * 1000.0 / f64::from(self.sample_rate.max(1))
    }

    /// Raw little-endian bytes, as the wire format `pcm_s16le`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    /// Drops the pipeline annotations and turns the frame into an outbound chunk.
    pub fn into_chunk(self, is_final: bool) -> AudioChunk {
        AudioChunk {
            timestamp_ms: self.timestamp_ms.map(|t| t.round() as i64),
            data: self.to_bytes(),
            sample_rate: self.sample_rate,
            channels: self.channels,
            format: Encoding::PcmS16le,
            is_final,
        }
    }
}

/// A piece of outbound (TTS) audio. It carries no pipeline annotations but
/// says whether it ends the utterance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioChunk {
    /// Encoded samples.
    pub data: Vec<u8>,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u16,
    /// Encoding of `data`.
    pub format: Encoding,
    /// Start of the chunk on the media clock, in milliseconds.
    pub timestamp_ms: Option<i64>,
    /// Last chunk of the utterance.
    pub is_final: bool,
}

impl AudioChunk {
    /// Converts a PCM chunk into a fresh frame (no annotations), checking alignment.
    ///
    /// # Errors
    /// [`AudioError::InvalidFormat`] when the chunk is not 16-bit PCM or its
    /// bytes do not form whole samples for every channel.
    pub fn to_frame(&self) -> Result<AudioFrame, AudioError> {
        if self.format != Encoding::PcmS16le {
            return Err(AudioError::InvalidFormat(format!(
                "chunk encoded as {}, expected pcm_s16le",
                self.format.as_str()
            )));
        }
        if !self.data.len().is_multiple_of(2) {
            return Err(AudioError::InvalidFormat("odd byte count".into()));
        }
        let samples = self
            .data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let mut frame = AudioFrame::new(samples, self.sample_rate, self.channels)?;
        frame.timestamp_ms = self.timestamp_ms.map(|t| t as f64);
        Ok(frame)
    }
}
