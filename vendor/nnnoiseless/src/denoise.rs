use std::borrow::Cow;

use crate::{RnnModel, FRAME_SIZE, FREQ_SIZE, NB_BANDS};

/// This is the low-level entry-point into `nnnoiseless`: by using the `DenoiseState` directly,
/// you can denoise your audio while keeping copying to a minimum.
// RoomKit: the upstream text pointed to `DenoiseSignal`, which is not part of this copy.
///
/// This struct directly contains various memory buffers that are used while denoising. As such,
/// this is quite a large struct, and should probably be kept behind some kind of pointer.
///
/// # Example
///
/// ```rust
/// # use nnnoiseless::DenoiseState;
/// // One second of 440Hz sine wave at 48kHz sample rate. Note that the input data consists of
/// // `f32`s, but the values should be in the range of an `i16`.
/// let sine: Vec<_> = (0..48_000)
///     .map(|x| (x as f32 * 440.0 * 2.0 * std::f32::consts::PI / 48_000.0).sin() * i16::MAX as f32)
///     .collect();
/// let mut output = Vec::new();
/// let mut out_buf = [0.0; DenoiseState::FRAME_SIZE];
/// let mut denoise = DenoiseState::new();
/// let mut first = true;
/// for chunk in sine.chunks_exact(DenoiseState::FRAME_SIZE) {
///     denoise.process_frame(&mut out_buf[..], chunk);
///
///     // We throw away the first output, as discussed in the documentation for
///     //`DenoiseState::process_frame`.
///     if !first {
///         output.extend_from_slice(&out_buf[..]);
///     }
///     first = false;
/// }
/// ```
#[derive(Clone)]
pub struct DenoiseState<'model> {
    /// Most recent gains that we applied.
    lastg: [f32; crate::NB_BANDS],
    rnn: crate::rnn::RnnState<'model>,
    feat: crate::features::DenoiseFeatures,
}

impl DenoiseState<'static> {
    /// A `DenoiseState` processes this many samples at a time.
    pub const FRAME_SIZE: usize = FRAME_SIZE;

    pub(crate) fn default() -> Self {
        // RoomKit: borrows the shared built-in model instead of owning a copy.
        DenoiseState::from_model_owned(Cow::Borrowed(crate::rnn::default_model()))
    }

    /// Creates a new `DenoiseState`.
    pub fn new() -> Box<DenoiseState<'static>> {
        Box::new(Self::default())
    }

    /// Creates a new `DenoiseState` owning a custom model.
    ///
    /// The main difference between this method and `DenoiseState::with_model` is that here
    /// `DenoiseState` will own the model; this might be more convenient.
    pub fn from_model(model: RnnModel) -> Box<DenoiseState<'static>> {
        Box::new(DenoiseState::from_model_owned(Cow::Owned(model)))
    }
}

impl<'model> DenoiseState<'model> {
    /// Creates a new `DenoiseState` using a custom model.
    ///
    /// The main difference between this method and `DenoiseState::from_model` is that here
    /// `DenoiseState` will borrow the model; this might create some lifetime-related pain, but
    /// it means that the same model can be shared between multiple `DenoiseState`s.
    pub fn with_model(model: &'model RnnModel) -> Box<DenoiseState<'model>> {
        Box::new(DenoiseState::from_model_owned(Cow::Borrowed(model)))
    }

    pub(crate) fn from_model_owned(model: Cow<'model, RnnModel>) -> DenoiseState<'model> {
        DenoiseState {
            lastg: [0.0; NB_BANDS],
            rnn: crate::rnn::RnnState::new(model),
            feat: crate::features::DenoiseFeatures::new(),
        }
    }

    /// Processes a chunk of samples.
    ///
    /// Both `output` and `input` should be slices of length `DenoiseState::FRAME_SIZE`, and they
    /// are assumed to be in 16-bit, 48kHz signed PCM format. Note that although the input and
    /// output are `f32`s, they are supposed to come from 16-bit integers. In particular, they
    /// should be in the range `[-32768.0, 32767.0]` instead of the range `[-1.0, 1.0]` which
    /// is more common for floating-point PCM.
    ///
    /// The current output of `process_frame` depends on the current input, but also on the
    /// preceding inputs. Because of this, you might prefer to discard the very first output; it
    /// will contain some fade-in artifacts.
    pub fn process_frame(&mut self, output: &mut [f32], input: &[f32]) -> f32 {
        let mut g = [0.0; NB_BANDS];
        let mut gf = [1.0; FREQ_SIZE];
        let mut vad_prob = [0.0];

        self.feat.shift_and_filter_input(input);
        let silence = self.feat.compute_frame_features();
        if !silence {
            self.rnn
                .compute(&mut g[..], &mut vad_prob[..], self.feat.features());
            self.feat.pitch_filter(&g);
            for i in 0..NB_BANDS {
                g[i] = g[i].max(0.6 * self.lastg[i]);
                self.lastg[i] = g[i];
            }
            crate::interp_band_gain(&mut gf[..], &g[..]);
            self.feat.apply_gain(&gf);
        }

        self.feat.frame_synthesis(output);
        vad_prob[0]
    }
}

// RoomKit: a check that this copy still behaves like the published crate.
// The expected figures were measured with nnnoiseless 0.5.2 as published.
#[cfg(test)]
mod tests {
    use super::*;

    /// One second at 48 kHz: white-ish noise throughout, a 440 Hz tone in
    /// the second half.
    fn input() -> Vec<f32> {
        let mut state: u32 = 12_345;
        (0..48_000)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = ((state >> 16) as f32 / 65_536.0 - 0.5) * 2000.0;
                let tone = if i >= 24_000 {
                    8000.0 * (i as f32 * 440.0 * 2.0 * std::f32::consts::PI / 48_000.0).sin()
                } else {
                    0.0
                };
                noise + tone
            })
            .collect()
    }

    /// Energy in dB of each tenth of `x`.
    fn tenths_db(x: &[f32]) -> Vec<f64> {
        x.chunks(x.len() / 10)
            .map(|c| {
                let e: f64 = c.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                10.0 * (e / c.len() as f64 + 1e-9).log10()
            })
            .collect()
    }

    #[test]
    fn output_matches_the_published_crate() {
        let input = input();
        let mut state = DenoiseState::new();
        let mut output = vec![0.0; input.len()];
        for (out, inp) in output
            .chunks_exact_mut(FRAME_SIZE)
            .zip(input.chunks_exact(FRAME_SIZE))
        {
            state.process_frame(out, inp);
        }
        let got = tenths_db(&output);
        let noisy = tenths_db(&input);
        eprintln!("{:?}", got);
        // Noise alone, once the network has adapted (from 300 ms on): at
        // least 8 dB quieter than the input.
        for k in 3..5 {
            assert!(
                noisy[k] - got[k] > 8.0,
                "tenth {}: {} dB in, {} dB out",
                k,
                noisy[k],
                got[k]
            );
        }
        let expected: [f64; 10] = EXPECTED_TENTHS_DB;
        for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!((g - e).abs() < 0.1, "tenth {}: {} dB, expected {} dB", k, g, e);
        }
    }

    const EXPECTED_TENTHS_DB: [f64; 10] = [
        50.742,
        50.702,
        49.577,
        45.981,
        44.469,
        74.491,
        74.991,
        74.942,
        74.865,
        74.880,
    ];
}
