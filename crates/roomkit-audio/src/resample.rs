//! Sample-rate and channel conversion between the transport and the pipeline's internal format.
//!
//! Built on rubato's synchronous FFT resampler, one instance per stream, so
//! consecutive frames are filtered as one continuous signal (no per-frame
//! edge effects and no drift: every input frame yields exactly the matching
//! number of output samples).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler as _};
use serde::{Deserialize, Serialize};

use crate::stage::{StreamMap, f32_to_i16, i16_to_f32};
use crate::{AudioError, AudioFormat, AudioFrame};

/// Settings of the internal format the resampler normalises to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResamplerConfig {
    /// Sample rate every stage after the resampler works at, in Hz.
    pub internal_sample_rate: u32,
    /// Channel count after the resampler (1 = mono).
    pub internal_channels: u16,
    /// Bytes per internal sample; only 2 (16-bit PCM) is supported.
    pub internal_sample_width: u16,
    /// Codec hint for transport negotiation (`opus`, `pcm`, ...).
    pub codec: Option<String>,
}

impl Default for ResamplerConfig {
    fn default() -> Self {
        Self {
            internal_sample_rate: 16_000,
            internal_channels: 1,
            internal_sample_width: 2,
            codec: None,
        }
    }
}

impl ResamplerConfig {
    /// The internal PCM format this configuration describes.
    pub fn internal_format(&self) -> AudioFormat {
        AudioFormat {
            sample_rate: self.internal_sample_rate,
            channels: self.internal_channels,
            sample_width: self.internal_sample_width,
            codec: crate::Encoding::PcmS16le,
        }
    }
}

/// A mono streaming resampler with fixed input and output block sizes.
///
/// `input_len()` samples in always give `output_len()` samples out, so the
/// output sample count is exact over any number of blocks.
pub struct ChunkResampler {
    inner: Fft<f32>,
    input_len: usize,
    output_len: usize,
    in_rate: u32,
    out_rate: u32,
}

impl std::fmt::Debug for ChunkResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkResampler")
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .field("input_len", &self.input_len)
            .field("output_len", &self.output_len)
            .finish()
    }
}

impl ChunkResampler {
    /// Creates a resampler whose block is as close as possible to `hint_len`
    /// input samples (the exact size depends on the rate ratio).
    ///
    /// # Errors
    /// [`AudioError::Provider`] when rubato refuses the rates.
    pub fn new(in_rate: u32, out_rate: u32, hint_len: usize) -> Result<Self, AudioError> {
        let inner = Fft::<f32>::new(
            in_rate as usize,
            out_rate as usize,
            hint_len.max(1),
            1,
            FixedSync::Both,
        )
        .map_err(|e| AudioError::provider("rubato", "create resampler", e))?;
        let input_len = inner.input_frames_next();
        let output_len = inner.output_frames_next();
        Ok(Self {
            inner,
            input_len,
            output_len,
            in_rate,
            out_rate,
        })
    }

    /// Input samples per block.
    pub fn input_len(&self) -> usize {
        self.input_len
    }

    /// Output samples per block.
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// Group delay in milliseconds.
    pub fn delay_ms(&self) -> f64 {
        self.inner.output_delay() as f64 * 1000.0 / f64::from(self.out_rate)
    }

    /// Resamples exactly one block: `input.len() == input_len()`,
    /// `output.len() >= output_len()`. Returns the number of samples written.
    ///
    /// # Errors
    /// [`AudioError::Provider`] on a size mismatch.
    pub fn process(&mut self, input: &[f32], output: &mut [f32]) -> Result<usize, AudioError> {
        let inp = InterleavedSlice::new(input, 1, input.len())
            .map_err(|e| AudioError::provider("rubato", "wrap input", e))?;
        let out_frames = output.len();
        let mut out = InterleavedSlice::new_mut(output, 1, out_frames)
            .map_err(|e| AudioError::provider("rubato", "wrap output", e))?;
        let (_, written) = self
            .inner
            .process_into_buffer(&inp, &mut out, None)
            .map_err(|e| AudioError::provider("rubato", "resample", e))?;
        Ok(written)
    }

    /// Clears the filter history.
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

struct StreamResampler {
    in_rate: u32,
    in_channels: u16,
    in_frames: usize,
    core: Option<ChunkResampler>,
    mono_in: Vec<f32>,
    mono_out: Vec<f32>,
}

/// The resampling stage: converts every frame to the internal rate and
/// channel count. Frames must be a whole number of milliseconds long at the
/// standard telephony and wideband rates (8, 16, 24, 32, 44.1, 48 kHz).
pub struct RubatoResampler {
    target: AudioFormat,
    streams: StreamMap<StreamResampler>,
    last_delay_ms: f64,
}

impl std::fmt::Debug for RubatoResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RubatoResampler")
            .field("target", &self.target)
            .finish()
    }
}

impl RubatoResampler {
    /// A resampler to `target` (rate and channel count; 16-bit PCM).
    pub fn new(target: AudioFormat) -> Self {
        Self {
            target,
            streams: StreamMap::default(),
            last_delay_ms: 0.0,
        }
    }

    /// The format frames leave this stage in.
    pub fn target(&self) -> AudioFormat {
        self.target
    }

    /// Provider name.
    pub fn name(&self) -> &str {
        "rubato_fft"
    }

    /// Delay added by the most recently used stream's filter, in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        self.last_delay_ms
    }

    /// The delay this stage adds when converting `from_rate` frames of
    /// `frame_len` samples per channel.
    ///
    /// # Errors
    /// When the rate pair is unsupported.
    pub fn delay_for(&self, from_rate: u32, frame_len: usize) -> Result<f64, AudioError> {
        if from_rate == self.target.sample_rate {
            return Ok(0.0);
        }
        Ok(ChunkResampler::new(from_rate, self.target.sample_rate, frame_len)?.delay_ms())
    }

    /// Converts `frame` in place and records its original format in the metadata.
    ///
    /// # Errors
    /// [`AudioError::FormatMismatch`] if the frame length cannot map to a whole
    /// number of output samples; [`AudioError::Provider`] from rubato.
    pub fn process(&mut self, frame: &mut AudioFrame, stream: &str) -> Result<(), AudioError> {
        let original_rate = frame.sample_rate;
        let original_channels = frame.channels;
        frame.metadata.original_sample_rate = Some(original_rate);
        frame.metadata.original_channels = Some(original_channels);
        if original_rate == self.target.sample_rate && original_channels == self.target.channels {
            return Ok(());
        }
        let in_frames = frame.frames();
        let target = self.target;
        let state = self.streams.get_or_try_insert(stream, || {
            StreamResampler::new(original_rate, original_channels, in_frames, target)
        })?;
        if state.in_rate != original_rate
            || state.in_channels != original_channels
            || state.in_frames != in_frames
        {
            *state = StreamResampler::new(original_rate, original_channels, in_frames, target)?;
        }
        // Downmix to mono floats.
        let ch = usize::from(original_channels);
        state.mono_in.clear();
        if ch == 1 {
            state
                .mono_in
                .extend(frame.samples.iter().map(|&s| i16_to_f32(s)));
        } else {
            let scale = 1.0 / ch as f32;
            state.mono_in.extend(
                frame
                    .samples
                    .chunks_exact(ch)
                    .map(|c| c.iter().map(|&s| i16_to_f32(s)).sum::<f32>() * scale),
            );
        }
        let out_len = match state.core.as_mut() {
            Some(core) => {
                let n = core.process(&state.mono_in, &mut state.mono_out)?;
                self.last_delay_ms = core.delay_ms();
                n
            }
            None => {
                state.mono_out.clear();
                state.mono_out.extend_from_slice(&state.mono_in);
                state.mono_out.len()
            }
        };
        let out_ch = usize::from(target.channels);
        frame.samples.clear();
        for &x in &state.mono_out[..out_len] {
            let s = f32_to_i16(x);
            for _ in 0..out_ch {
                frame.samples.push(s);
            }
        }
        frame.sample_rate = target.sample_rate;
        frame.channels = target.channels;
        Ok(())
    }

    /// Drops the stream's filter state.
    pub fn reset(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    /// Drops every stream.
    pub fn close(&mut self) {
        self.streams.clear();
    }
}

impl StreamResampler {
    fn new(
        in_rate: u32,
        in_channels: u16,
        in_frames: usize,
        target: AudioFormat,
    ) -> Result<Self, AudioError> {
        let core = if in_rate == target.sample_rate {
            None
        } else {
            let core = ChunkResampler::new(in_rate, target.sample_rate, in_frames)?;
            if core.input_len() != in_frames {
                return Err(AudioError::FormatMismatch {
                    stage: "resampler",
                    expected: format!("frames of {} samples at {} Hz", core.input_len(), in_rate),
                    got: format!("{in_frames} samples"),
                });
            }
            Some(core)
        };
        let out_cap = core.as_ref().map_or(in_frames, ChunkResampler::output_len);
        Ok(Self {
            in_rate,
            in_channels,
            in_frames,
            core,
            mono_in: Vec::with_capacity(in_frames),
            mono_out: vec![0.0; out_cap],
        })
    }
}
