#![deny(missing_docs)]

//! `nnnoiseless` is a crate for removing noise from audio. The main entry point is
//! [`DenoiseState`].
//!
//! [`DenoiseState`]: struct.DenoiseState.html

use once_cell::sync::OnceCell;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use std::sync::Arc;

// RoomKit: the C API, the training tool and the `dasp` signal adapter are
// not part of this copy.
mod simd;
mod util;

mod denoise;
mod features;
mod pitch;
mod rnn;

pub use denoise::DenoiseState;
pub use features::DenoiseFeatures;
pub use rnn::RnnModel;

#[doc(hidden)]
pub const FRAME_SIZE_SHIFT: usize = 2;
#[doc(hidden)]
pub const FRAME_SIZE: usize = 120 << FRAME_SIZE_SHIFT;
pub(crate) const WINDOW_SIZE: usize = 2 * FRAME_SIZE;
#[doc(hidden)]
pub const FREQ_SIZE: usize = FRAME_SIZE + 1;

pub(crate) const PITCH_MIN_PERIOD: usize = 60;
pub(crate) const PITCH_MAX_PERIOD: usize = 768;
pub(crate) const PITCH_FRAME_SIZE: usize = 960;
pub(crate) const PITCH_BUF_SIZE: usize = PITCH_MAX_PERIOD + PITCH_FRAME_SIZE;

#[doc(hidden)]
pub const NB_BANDS: usize = 22;
pub(crate) const CEPS_MEM: usize = 8;
const NB_DELTA_CEPS: usize = 6;
#[doc(hidden)]
pub const NB_FEATURES: usize = NB_BANDS + 3 * NB_DELTA_CEPS + 2;
#[doc(hidden)]
pub const EBAND_5MS: [usize; 22] = [
    // 0  200 400 600 800  1k 1.2 1.4 1.6  2k 2.4 2.8 3.2  4k 4.8 5.6 6.8  8k 9.6 12k 15.6 20k*/
    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 34, 40, 48, 60, 78, 100,
];
// RoomKit: the FFT is realfft's, planned once (see `CommonState`), instead of
// easyfft's, which looked the plan and scratch buffers up in thread-local hash
// maps and copied the input on every transform.
type Complex = realfft::num_complex::Complex32;

/// Computes the correlation between two frequency-domain signals, and aggregates the correlation
/// into bands.
///
/// `out` is the output (duh), and it has length `NB_BANDS`.
// RoomKit: the position of each bin within its band (`frac`) comes from a
// table computed once with the same division, and the loops run over zipped
// slices with the two running sums in locals; the additions are made in the
// same order as upstream's.
pub(crate) fn compute_band_corr(out: &mut [f32], x: &[Complex], p: &[Complex]) {
    let c = common();
    for y in out.iter_mut() {
        *y = 0.0;
    }

    for i in 0..(NB_BANDS - 1) {
        let lo = EBAND_5MS[i] << FRAME_SIZE_SHIFT;
        let hi = EBAND_5MS[i + 1] << FRAME_SIZE_SHIFT;
        let mut low = out[i];
        let mut high = out[i + 1];
        for ((x, p), &frac) in x[lo..hi].iter().zip(&p[lo..hi]).zip(&c.band_frac[lo..hi]) {
            let corr = x.re * p.re + x.im * p.im;
            low += (1.0 - frac) * corr;
            high += frac * corr;
        }
        out[i] = low;
        out[i + 1] = high;
    }
    out[0] *= 2.0;
    out[NB_BANDS - 1] *= 2.0;
}

fn interp_band_gain(out: &mut [f32], band_e: &[f32]) {
    let c = common();
    for y in out.iter_mut() {
        *y = 0.0;
    }

    for i in 0..(NB_BANDS - 1) {
        let lo = EBAND_5MS[i] << FRAME_SIZE_SHIFT;
        let hi = EBAND_5MS[i + 1] << FRAME_SIZE_SHIFT;
        let (e0, e1) = (band_e[i], band_e[i + 1]);
        for (y, &frac) in out[lo..hi].iter_mut().zip(&c.band_frac[lo..hi]) {
            *y = (1.0 - frac) * e0 + frac * e1;
        }
    }
}

struct CommonState {
    window: [f32; WINDOW_SIZE],
    dct_table: [f32; NB_BANDS * NB_BANDS],
    wnorm: f32,
    // RoomKit: the following are not in upstream.
    /// For each bin, its position within its band (0 at the band's first bin).
    band_frac: [f32; FREQ_SIZE],
    /// The forward and inverse real FFTs of `WINDOW_SIZE` samples.
    fft: Arc<dyn RealToComplex<f32>>,
    ifft: Arc<dyn ComplexToReal<f32>>,
}

static COMMON: OnceCell<CommonState> = OnceCell::new();

fn common() -> &'static CommonState {
    if COMMON.get().is_none() {
        let pi = std::f64::consts::PI;
        let mut window = [0.0; WINDOW_SIZE];
        for i in 0..FRAME_SIZE {
            let sin = (0.5 * pi * (i as f64 + 0.5) / FRAME_SIZE as f64).sin();
            window[i] = (0.5 * pi * sin * sin).sin() as f32;
            window[WINDOW_SIZE - i - 1] = (0.5 * pi * sin * sin).sin() as f32;
        }
        let wnorm = 1_f32 / window.iter().map(|x| x * x).sum::<f32>();

        let mut dct_table = [0.0; NB_BANDS * NB_BANDS];
        for i in 0..NB_BANDS {
            for j in 0..NB_BANDS {
                dct_table[i * NB_BANDS + j] =
                    ((i as f64 + 0.5) * j as f64 * pi / NB_BANDS as f64).cos() as f32;
                if j == 0 {
                    dct_table[i * NB_BANDS + j] *= 0.5f32.sqrt();
                }
            }
        }

        let mut band_frac = [0.0; FREQ_SIZE];
        for i in 0..(NB_BANDS - 1) {
            let band_size = (EBAND_5MS[i + 1] - EBAND_5MS[i]) << FRAME_SIZE_SHIFT;
            for j in 0..band_size {
                band_frac[(EBAND_5MS[i] << FRAME_SIZE_SHIFT) + j] = j as f32 / band_size as f32;
            }
        }
        let mut planner = RealFftPlanner::<f32>::new();
        let fft = planner.plan_fft_forward(WINDOW_SIZE);
        let ifft = planner.plan_fft_inverse(WINDOW_SIZE);

        let _ = COMMON.set(CommonState {
            window,
            dct_table,
            wnorm,
            band_frac,
            fft,
            ifft,
        });
    }
    COMMON.get().unwrap()
}

/// A brute-force DCT (discrete cosine transform) of size NB_BANDS.
pub(crate) fn dct(out: &mut [f32], x: &[f32]) {
    let c = common();
    for i in 0..NB_BANDS {
        let mut sum = 0.0;
        for j in 0..NB_BANDS {
            sum += x[j] * c.dct_table[j * NB_BANDS + i];
        }
        out[i] = (sum as f64 * (2.0 / NB_BANDS as f64).sqrt()) as f32;
    }
}

fn apply_window(output: &mut [f32], input: &[f32]) {
    let c = common();
    for (x, &y, &w) in util::zip3(output, input, &c.window[..]) {
        *x = y * w;
    }
}

fn apply_window_in_place(xs: &mut [f32]) {
    let c = common();
    for (x, &w) in xs.iter_mut().zip(&c.window[..]) {
        *x *= w;
    }
}

// RoomKit: the upstream tests read recordings that the published crate does
// not ship; they are not part of this copy.
