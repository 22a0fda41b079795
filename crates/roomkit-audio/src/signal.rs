//! Small signal measurements shared by the stages, tests and tools (levels, SNR).

/// RMS of 16-bit samples in dBFS (a full-scale square wave is 0 dBFS); -120 for silence.
pub fn rms_dbfs(samples: &[i16]) -> f32 {
    if samples.is_empty() {
        return -120.0;
    }
    let e: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (e / samples.len() as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        -120.0
    } else {
        (20.0 * rms.log10()).max(-120.0) as f32
    }
}

/// Peak level of 16-bit samples in dBFS; -120 for silence.
pub fn peak_dbfs(samples: &[i16]) -> f32 {
    let peak = samples
        .iter()
        .map(|&s| i32::from(s).unsigned_abs())
        .max()
        .unwrap_or(0);
    if peak == 0 {
        -120.0
    } else {
        (20.0 * (f64::from(peak) / 32768.0).log10()) as f32
    }
}

/// Energy (sum of squares) of a float signal.
pub fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}
