//! Resampler quality (SNR on sines) and long-run sample accounting.

use roomkit_audio::resample::{ChunkResampler, RubatoResampler};
use roomkit_audio::{AudioFormat, AudioFrame};

use crate::util::{sine, sine_fit, to_i16};

/// Resamples a sine frame by frame through the stage and returns the output.
fn run_stage(from: u32, to: u32, freq: f64, seconds: f64) -> Vec<f64> {
    let mut stage = RubatoResampler::new(AudioFormat::pcm_mono(to));
    let n_in = (f64::from(from) * seconds) as usize;
    let x = to_i16(&sine(from, freq, 0.5, n_in, 0.0));
    let flen = from as usize / 50;
    let mut out = Vec::new();
    let mut frame = AudioFrame::with_capacity(from, 1, 4096);
    for chunk in x.chunks_exact(flen) {
        frame.samples.clear();
        frame.samples.extend_from_slice(chunk);
        frame.sample_rate = from;
        frame.channels = 1;
        stage.process(&mut frame, "s").unwrap();
        assert_eq!(frame.sample_rate, to);
        assert_eq!(
            frame.samples.len(),
            to as usize / 50,
            "one 20 ms frame in, one out"
        );
        assert_eq!(frame.metadata.original_sample_rate, Some(from));
        out.extend(frame.samples.iter().map(|&s| f64::from(s) / 32767.0));
    }
    out
}

#[test]
fn resampler_snr_on_sines_between_telephony_and_wideband_rates() {
    let cases = [
        (8_000, 16_000, 1_000.0),
        (16_000, 8_000, 1_000.0),
        (16_000, 48_000, 3_000.0),
        (48_000, 16_000, 1_000.0),
        (48_000, 16_000, 6_000.0),
        (24_000, 16_000, 2_000.0),
        (16_000, 24_000, 440.0),
        (48_000, 8_000, 300.0),
        (8_000, 48_000, 3_000.0),
    ];
    for (from, to, f) in cases {
        let y = run_stage(from, to, f, 1.0);
        // Skip the filter's start-up transient.
        let steady = &y[(to as usize / 10)..];
        let (snr, _) = sine_fit(steady, to, f);
        eprintln!("resample {from}->{to} Hz, {f} Hz sine: SNR {snr:.1} dB");
        assert!(snr > 60.0, "{from}->{to} at {f} Hz: SNR {snr:.1} dB");
    }
}

#[test]
fn resampler_removes_content_above_the_new_nyquist() {
    // A 7 kHz tone cannot exist at 8 kHz; it must be filtered, not aliased to 1 kHz.
    let y = run_stage(48_000, 8_000, 7_000.0, 0.5);
    let steady = &y[800..];
    let rms = (steady.iter().map(|v| v * v).sum::<f64>() / steady.len() as f64).sqrt();
    let level_db = 20.0 * (rms / (0.5 / 2f64.sqrt())).log10();
    eprintln!("7 kHz tone after 48k->8k: {level_db:.1} dB");
    assert!(level_db < -50.0, "aliased energy {level_db:.1} dB");
}

/// No drift over an hour of 20 ms frames. Every call turns exactly
/// `input_len` samples into exactly `output_len`, and the two are in the
/// exact rate ratio, so after N frames the output holds N * output_len
/// samples for every N: that is checked for an hour's worth of frames
/// (180,000) by counting, for every rate pair. Running the filter itself for
/// a full hour takes minutes in a debug build, so the signal check runs
/// 9,000 frames (3 minutes) of a continuous sine and requires its phase at
/// the end to sit where the constant filter delay puts it.
#[test]
fn resampler_has_no_drift_over_an_hour_of_frames() {
    let hour_frames: u64 = 180_000;
    for (from, to) in [
        (8_000u32, 16_000u32),
        (16_000, 8_000),
        (48_000, 16_000),
        (16_000, 48_000),
        (24_000, 16_000),
        (8_000, 48_000),
    ] {
        let r = ChunkResampler::new(from, to, from as usize / 50).unwrap();
        assert_eq!(
            r.input_len(),
            from as usize / 50,
            "{from}->{to} takes 20 ms blocks"
        );
        assert_eq!(
            r.output_len() as u64 * u64::from(from),
            r.input_len() as u64 * u64::from(to),
            "{from}->{to} ratio is exact"
        );
        let produced = hour_frames * r.output_len() as u64;
        assert_eq!(
            produced,
            u64::from(to) * 3_600,
            "{from}->{to}: one hour in, one hour out"
        );
    }

    let (from, to) = (8_000u32, 16_000u32);
    let mut r = ChunkResampler::new(from, to, 160).unwrap();
    let freq = 250.0;
    let frames = 9_000usize;
    let mut input = vec![0f32; 160];
    let mut out = vec![0f32; 320];
    let mut total_out = 0usize;
    let mut tail = Vec::new();
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(from);
    for k in 0..frames {
        for (i, v) in input.iter_mut().enumerate() {
            let n = (k * 160 + i) as f64;
            *v = (0.5 * (w * n).sin()) as f32;
        }
        let n = r.process(&input, &mut out).unwrap();
        assert_eq!(n, 320);
        total_out += n;
        if k >= frames - 50 {
            tail.extend(out[..n].iter().map(|&x| f64::from(x)));
        }
    }
    assert_eq!(total_out, frames * 320);
    let delay = r.delay_ms() / 1000.0 * f64::from(to);
    let (snr, phase) = sine_fit(&tail, to, freq);
    let start = (total_out - tail.len()) as f64 - delay;
    let ideal = 2.0 * std::f64::consts::PI * freq * start / f64::from(to);
    let mut err = (phase - ideal).rem_euclid(2.0 * std::f64::consts::PI);
    if err > std::f64::consts::PI {
        err -= 2.0 * std::f64::consts::PI;
    }
    let err_samples = err.abs() / (2.0 * std::f64::consts::PI * freq) * f64::from(to);
    eprintln!("after {frames} frames: SNR {snr:.1} dB, timing error {err_samples:.3} samples");
    assert!(snr > 60.0);
    assert!(err_samples < 0.5, "drifted {err_samples} samples");
}

#[test]
fn resampler_keeps_streams_apart_and_downmixes_stereo() {
    let mut stage = RubatoResampler::new(AudioFormat::pcm_mono(16_000));
    let left = to_i16(&sine(48_000, 500.0, 0.4, 960, 0.0));
    let stereo: Vec<i16> = left.iter().flat_map(|&s| [s, s]).collect();
    let mut a = AudioFrame::new(stereo, 48_000, 2).unwrap();
    stage.process(&mut a, "a").unwrap();
    assert_eq!((a.channels, a.samples.len()), (1, 320));
    assert_eq!(a.metadata.original_channels, Some(2));
    // A second stream at another rate does not disturb the first.
    let mut b = AudioFrame::new(vec![0; 160], 8_000, 1).unwrap();
    stage.process(&mut b, "b").unwrap();
    assert_eq!(b.samples.len(), 320);
}
