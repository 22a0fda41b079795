//! RNNoise noise suppression (the pure-Rust nnnoiseless port, vendored and
//! sped up, see `vendor/nnnoiseless`), one network state per stream.
//!
//! RNNoise works on 10 ms blocks at 48 kHz. At other internal rates the stage
//! converts each frame up to 48 kHz and back with the same streaming
//! resampler as the pipeline, and reports the extra delay as its latency.

use nnnoiseless::DenoiseState;

use crate::resample::ChunkResampler;
use crate::stage::{DenoiserProvider, FrameProcessor, StreamMap, f32_to_i16, i16_to_f32};
use crate::{AudioError, AudioFrame};

const RN_RATE: u32 = 48_000;
const RN_BLOCK: usize = DenoiseState::FRAME_SIZE;

struct DenoiseStream {
    rate: u32,
    frame_len: usize,
    state: Box<DenoiseState<'static>>,
    up: Option<ChunkResampler>,
    down: Option<ChunkResampler>,
    wide: Vec<f32>,
    wide_out: Vec<f32>,
    narrow_in: Vec<f32>,
    narrow_out: Vec<f32>,
    rn_in: Vec<f32>,
    rn_out: Vec<f32>,
    pending: Vec<f32>,
}

/// The RNNoise denoiser stage.
#[derive(Default)]
pub struct RnnoiseDenoiser {
    streams: StreamMap<DenoiseStream>,
    latency_ms: f64,
}

impl std::fmt::Debug for RnnoiseDenoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RnnoiseDenoiser")
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl RnnoiseDenoiser {
    /// A denoiser with no streams yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Latency the stage adds for frames of `frame_len` samples at `rate`.
    ///
    /// # Errors
    /// When the rate cannot be converted to 48 kHz in whole frames.
    pub fn latency_for(rate: u32, frame_len: usize) -> Result<f64, AudioError> {
        let s = DenoiseStream::new(rate, frame_len)?;
        Ok(s.latency_ms())
    }
}

impl DenoiseStream {
    fn new(rate: u32, frame_len: usize) -> Result<Self, AudioError> {
        let (up, down, wide_len) = if rate == RN_RATE {
            (None, None, frame_len)
        } else {
            let up = ChunkResampler::new(rate, RN_RATE, frame_len)?;
            if up.input_len() != frame_len {
                return Err(AudioError::FormatMismatch {
                    stage: "denoiser",
                    expected: format!("{} samples per frame", up.input_len()),
                    got: format!("{frame_len}"),
                });
            }
            let wide_len = up.output_len();
            let down = ChunkResampler::new(RN_RATE, rate, wide_len)?;
            (Some(up), Some(down), wide_len)
        };
        Ok(Self {
            rate,
            frame_len,
            state: DenoiseState::new(),
            up,
            down,
            wide: vec![0.0; wide_len + RN_BLOCK],
            wide_out: Vec::with_capacity(wide_len + RN_BLOCK),
            narrow_in: Vec::with_capacity(frame_len),
            narrow_out: vec![0.0; frame_len + 8],
            rn_in: vec![0.0; RN_BLOCK],
            rn_out: vec![0.0; RN_BLOCK],
            pending: Vec::with_capacity(wide_len + RN_BLOCK),
        })
    }

    fn latency_ms(&self) -> f64 {
        // RNNoise itself delays by one 10 ms block; frames that are not a
        // multiple of 10 ms wait for the remainder as well.
        let mut ms = 10.0;
        if let (Some(up), Some(down)) = (&self.up, &self.down) {
            ms += up.delay_ms() + down.delay_ms();
        }
        ms
    }
}

impl FrameProcessor for RnnoiseDenoiser {
    fn name(&self) -> &str {
        "rnnoise"
    }

    fn process(&mut self, frame: &mut AudioFrame, stream: &str) -> Result<(), AudioError> {
        if frame.channels != 1 {
            return Err(AudioError::FormatMismatch {
                stage: "denoiser",
                expected: "mono".into(),
                got: format!("{} channels", frame.channels),
            });
        }
        let rate = frame.sample_rate;
        let len = frame.samples.len();
        let st = self
            .streams
            .get_or_try_insert(stream, || DenoiseStream::new(rate, len))?;
        if st.rate != rate || st.frame_len != len {
            *st = DenoiseStream::new(rate, len)?;
        }
        self.latency_ms = st.latency_ms();
        // 1. Bring the frame to 48 kHz, scaled to the 16-bit range RNNoise expects.
        st.narrow_in.clear();
        st.narrow_in
            .extend(frame.samples.iter().map(|&s| i16_to_f32(s)));
        let wide_len = match st.up.as_mut() {
            Some(up) => up.process(&st.narrow_in, &mut st.wide)?,
            None => {
                st.wide[..len].copy_from_slice(&st.narrow_in);
                len
            }
        };
        st.pending
            .extend(st.wide[..wide_len].iter().map(|x| x * 32768.0));
        // 2. Run whole 10 ms blocks; keep the remainder for the next frame.
        st.wide_out.clear();
        let mut consumed = 0;
        while st.pending.len() - consumed >= RN_BLOCK {
            st.rn_in
                .copy_from_slice(&st.pending[consumed..consumed + RN_BLOCK]);
            st.state.process_frame(&mut st.rn_out, &st.rn_in);
            st.wide_out.extend(st.rn_out.iter().map(|x| x / 32768.0));
            consumed += RN_BLOCK;
        }
        st.pending.drain(..consumed);
        // Frames shorter than a block produce nothing yet: pad with silence at
        // the front so the frame keeps its length (the delay is reported).
        if st.wide_out.len() < wide_len {
            let missing = wide_len - st.wide_out.len();
            st.wide_out.splice(0..0, std::iter::repeat_n(0.0, missing));
        }
        // 3. Back to the frame's rate.
        match st.down.as_mut() {
            Some(down) => {
                let n = down.process(&st.wide_out[..wide_len], &mut st.narrow_out)?;
                for (d, &x) in frame.samples.iter_mut().zip(st.narrow_out[..n].iter()) {
                    *d = f32_to_i16(x);
                }
            }
            None => {
                for (d, &x) in frame.samples.iter_mut().zip(st.wide_out.iter()) {
                    *d = f32_to_i16(x);
                }
            }
        }
        Ok(())
    }

    fn reset(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    fn close(&mut self) {
        self.streams.clear();
    }

    fn latency_ms(&self) -> f64 {
        self.latency_ms
    }
}

impl DenoiserProvider for RnnoiseDenoiser {}
