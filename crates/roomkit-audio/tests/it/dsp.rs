//! Echo cancellation, gain control and noise suppression, measured on synthetic signals.

use roomkit_audio::AudioFrame;
use roomkit_audio::aec::{Aec3Canceller, AecConfig};
use roomkit_audio::agc::{AgcConfig, LevelAgc};
use roomkit_audio::denoise::RnnoiseDenoiser;
use roomkit_audio::stage::{AecProvider, FrameProcessor};

use crate::util::{Lcg, db, to_i16, voice_like};

const RATE: u32 = 16_000;
const FRAME: usize = 320;

/// Room-like echo path: 60 ms bulk delay and a short decaying tail, -6 dB.
fn echo_path(far: &[f64]) -> Vec<f64> {
    let d = 960; // 60 ms
    let taps = [
        (0usize, 0.5),
        (17, 0.2),
        (41, -0.12),
        (90, 0.06),
        (160, -0.03),
    ];
    (0..far.len())
        .map(|n| {
            taps.iter()
                .filter(|(k, _)| n >= d + k)
                .map(|(k, g)| g * far[n - d - k])
                .sum()
        })
        .collect()
}

fn run_aec(far: &[i16], near: &[i16]) -> Vec<i16> {
    let mut aec = Aec3Canceller::new(AecConfig::default());
    let mut out = Vec::with_capacity(near.len());
    for (f, n) in far.chunks_exact(FRAME).zip(near.chunks_exact(FRAME)) {
        let fr = AudioFrame::new(f.to_vec(), RATE, 1).unwrap();
        aec.feed_reference(&fr, "call").unwrap();
        let mut nf = AudioFrame::new(n.to_vec(), RATE, 1).unwrap();
        aec.process(&mut nf, "call").unwrap();
        assert!(nf.metadata.echo_cancelled);
        out.extend_from_slice(&nf.samples);
    }
    out
}

fn e(x: &[i16]) -> f64 {
    crate::util::energy(x)
}

#[test]
fn aec_erle_on_delayed_echo_path() {
    let n = RATE as usize * 10;
    let far = voice_like(RATE, n, 130.0, 0.5, 1);
    let mut rng = Lcg(7);
    let near: Vec<f64> = echo_path(&far)
        .iter()
        .map(|v| v + 0.0003 * rng.gauss())
        .collect();
    let (far, near) = (to_i16(&far), to_i16(&near));
    let out = run_aec(&far, &near);
    let s = RATE as usize * 5;
    let erle = db(e(&near[s..]) / e(&out[s..]).max(1.0));
    eprintln!("AEC ERLE after convergence (5-10 s): {erle:.1} dB");
    assert!(erle > 25.0, "ERLE {erle:.1} dB");
}

/// Least-squares gain and correlation of `out` against `reference`, best lag in 0..max_lag
/// (AEC3 returns the capture signal 128 samples late at 16 kHz).
fn match_reference(out: &[i16], reference: &[i16], max_lag: usize) -> (f64, f64) {
    let mut best = (0.0, 0.0);
    for lag in 0..max_lag {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for i in 0..reference.len() - max_lag {
            let x = f64::from(reference[i]);
            let y = f64::from(out[i + lag]);
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        let corr = xy / (xx * yy).sqrt().max(1e-9);
        if corr > best.1 {
            best = (xy / xx.max(1e-9), corr);
        }
    }
    best
}

#[test]
fn aec_keeps_near_end_speech_during_double_talk() {
    let n = RATE as usize * 12;
    let far = voice_like(RATE, n, 120.0, 0.5, 3);
    let echo = echo_path(&far);
    let talker: Vec<f64> = voice_like(RATE, n, 210.0, 0.35, 9)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if (RATE as usize * 6..RATE as usize * 10).contains(&i) {
                *v
            } else {
                0.0
            }
        })
        .collect();
    let near: Vec<f64> = echo.iter().zip(&talker).map(|(a, b)| a + b).collect();
    let (far, near, talker) = (to_i16(&far), to_i16(&near), to_i16(&talker));
    let out = run_aec(&far, &near);
    let r = RATE as usize;
    // Echo only, after convergence.
    let erle = db(e(&near[3 * r..6 * r]) / e(&out[3 * r..6 * r]).max(1.0));
    // Double talk: how much of the near-end talker comes through.
    let (gain, corr) = match_reference(&out[7 * r..10 * r], &talker[7 * r..10 * r], 400);
    let kept_db = 20.0 * gain.abs().max(1e-9).log10();
    eprintln!(
        "double talk: ERLE before {erle:.1} dB, near-end kept {kept_db:.1} dB, correlation {corr:.3}"
    );
    assert!(erle > 20.0, "ERLE {erle:.1}");
    assert!(kept_db > -3.0, "near-end attenuated by {kept_db:.1} dB");
    assert!(corr > 0.9, "near-end distorted: correlation {corr:.3}");
}

fn run_agc(agc: &mut LevelAgc, x: &[i16]) -> (Vec<i16>, Vec<f32>) {
    let mut out = Vec::new();
    let mut gains = Vec::new();
    for c in x.chunks_exact(FRAME) {
        let mut f = AudioFrame::new(c.to_vec(), RATE, 1).unwrap();
        agc.process(&mut f, "s").unwrap();
        gains.push(f.metadata.gain_applied_db.unwrap());
        out.extend_from_slice(&f.samples);
    }
    (out, gains)
}

#[test]
fn agc_levels_quiet_and_loud_speech_to_the_target() {
    let cfg = AgcConfig::default();
    for amp in [0.02, 0.05, 0.3, 0.9] {
        let mut agc = LevelAgc::new(cfg.clone()).unwrap();
        let x = to_i16(&voice_like(RATE, RATE as usize * 6, 140.0, amp, 5));
        let in_peak = roomkit_audio::signal::peak_dbfs(&x[RATE as usize * 3..]);
        let (y, _) = run_agc(&mut agc, &x);
        let out_peak = roomkit_audio::signal::peak_dbfs(&y[RATE as usize * 3..]);
        eprintln!(
            "AGC: input peak {in_peak:.1} dBFS -> output peak {out_peak:.1} dBFS (target {})",
            cfg.target_level_dbfs
        );
        assert!(
            (out_peak - cfg.target_level_dbfs).abs() <= 3.0,
            "peak {out_peak:.1} dBFS for input {in_peak:.1}"
        );
        assert!(out_peak <= -0.4, "clipping");
    }
}

#[test]
fn agc_does_not_pump_up_noise_between_speech() {
    let r = RATE as usize;
    let mut rng = Lcg(11);
    let noise_amp = 0.001; // about -60 dBFS RMS
    let speech = voice_like(RATE, 3 * r, 150.0, 0.03, 4);
    let x: Vec<f64> = (0..8 * r)
        .map(|i| {
            let s = if (2 * r..5 * r).contains(&i) {
                speech[i - 2 * r]
            } else {
                0.0
            };
            s + noise_amp * rng.gauss()
        })
        .collect();
    let x = to_i16(&x);
    let mut agc = LevelAgc::new(AgcConfig::default()).unwrap();
    let (y, gains) = run_agc(&mut agc, &x);
    let fps = r / FRAME;
    let lead_max = gains[..2 * fps].iter().copied().fold(f32::MIN, f32::max);
    let speech_gain = gains[5 * fps - 1];
    let tail_max = gains[5 * fps + 5..]
        .iter()
        .copied()
        .fold(f32::MIN, f32::max);
    let noise_in = roomkit_audio::signal::rms_dbfs(&x[6 * r..]);
    let noise_out = roomkit_audio::signal::rms_dbfs(&y[6 * r..]);
    eprintln!(
        "AGC gain: noise-only lead max {lead_max:.1} dB, speech {speech_gain:.1} dB, trailing noise max {tail_max:.1} dB; noise {noise_in:.1} -> {noise_out:.1} dBFS"
    );
    assert!(
        lead_max <= 0.5,
        "gain rose on noise alone: {lead_max:.1} dB"
    );
    assert!(
        speech_gain > 15.0,
        "quiet speech not amplified: {speech_gain:.1} dB"
    );
    assert!(
        tail_max <= speech_gain + 0.5,
        "gain kept rising in the pause: {tail_max:.1} dB"
    );
}

fn denoise_case(rate: u32) -> (f64, f64) {
    let r = rate as usize;
    let frame = r / 50;
    let mut rng = Lcg(21);
    let speech = voice_like(rate, 2 * r, 150.0, 0.3, 6);
    let noise: Vec<f64> = (0..6 * r).map(|_| 0.02 * rng.gauss()).collect();
    let clean: Vec<f64> = (0..6 * r)
        .map(|i| {
            if (3 * r..5 * r).contains(&i) {
                speech[i - 3 * r]
            } else {
                0.0
            }
        })
        .collect();
    let noisy = to_i16(
        &clean
            .iter()
            .zip(&noise)
            .map(|(a, b)| a + b)
            .collect::<Vec<_>>(),
    );
    let mut dn = RnnoiseDenoiser::new();
    let mut out = Vec::new();
    for c in noisy.chunks_exact(frame) {
        let mut f = AudioFrame::new(c.to_vec(), rate, 1).unwrap();
        dn.process(&mut f, "s").unwrap();
        out.extend_from_slice(&f.samples);
    }
    let noise_red = db(e(&noisy[r..3 * r]) / e(&out[r..3 * r]).max(1.0));
    let speech_kept = db(e(&out[3 * r + r / 5..5 * r]) / e(&noisy[3 * r + r / 5..5 * r]));
    (noise_red, speech_kept)
}

#[test]
fn rnnoise_removes_noise_and_keeps_speech_at_16_and_48_khz() {
    for rate in [48_000, 16_000] {
        let (nr, kept) = denoise_case(rate);
        eprintln!(
            "RNNoise at {rate} Hz: noise reduced {nr:.1} dB, speech energy change {kept:.1} dB"
        );
        assert!(nr > 10.0, "noise reduction {nr:.1} dB at {rate}");
        assert!(kept > -6.0, "speech lost {kept:.1} dB at {rate}");
    }
}

/// Tuning aid, run by hand: `AEC_EXPERIMENT=1 cargo test --release ... aec_tuning_experiment`.
#[test]
fn aec_tuning_experiment() {
    if std::env::var("AEC_EXPERIMENT").is_err() {
        return;
    }
    let v = |k: &str, d: f32| {
        std::env::var(k)
            .ok()
            .and_then(|x| x.parse().ok())
            .unwrap_or(d)
    };
    let mut c = Aec3Canceller::default().aec3_config();
    c.suppressor.dominant_nearend_detection.enr_threshold =
        v("ENR", c.suppressor.dominant_nearend_detection.enr_threshold);
    c.suppressor.dominant_nearend_detection.snr_threshold =
        v("SNR", c.suppressor.dominant_nearend_detection.snr_threshold);
    c.suppressor.dominant_nearend_detection.trigger_threshold = v(
        "TRIG",
        c.suppressor.dominant_nearend_detection.trigger_threshold as f32,
    ) as usize;
    c.suppressor.dominant_nearend_detection.hold_duration = v(
        "HOLD",
        c.suppressor.dominant_nearend_detection.hold_duration as f32,
    ) as usize;
    c.suppressor.nearend_tuning.mask_lf.enr_transparent =
        v("LFT", c.suppressor.nearend_tuning.mask_lf.enr_transparent);
    c.suppressor.nearend_tuning.mask_lf.enr_suppress =
        v("LFS", c.suppressor.nearend_tuning.mask_lf.enr_suppress);
    c.suppressor.nearend_tuning.mask_hf.enr_transparent =
        v("HFT", c.suppressor.nearend_tuning.mask_hf.enr_transparent);
    c.suppressor.nearend_tuning.mask_hf.enr_suppress =
        v("HFS", c.suppressor.nearend_tuning.mask_hf.enr_suppress);
    c.suppressor.normal_tuning.mask_lf.enr_transparent =
        v("NLFT", c.suppressor.normal_tuning.mask_lf.enr_transparent);
    c.suppressor.normal_tuning.mask_lf.enr_suppress =
        v("NLFS", c.suppressor.normal_tuning.mask_lf.enr_suppress);
    c.suppressor.normal_tuning.mask_hf.enr_transparent =
        v("NHFT", c.suppressor.normal_tuning.mask_hf.enr_transparent);
    c.suppressor.normal_tuning.mask_hf.enr_suppress =
        v("NHFS", c.suppressor.normal_tuning.mask_hf.enr_suppress);
    c.suppressor.use_subband_nearend_detection = v("SUB", 0.0) > 0.5;
    let len = v("LEN", c.filter.main.length_blocks as f32) as usize;
    c.filter.main.length_blocks = len;
    c.filter.shadow.length_blocks = len;
    c.filter.main_initial.length_blocks = len.min(c.filter.main_initial.length_blocks);
    c.filter.shadow_initial.length_blocks = len.min(c.filter.shadow_initial.length_blocks);
    c.delay.num_filters = v("NF", c.delay.num_filters as f32) as usize;
    let n = RATE as usize * 12;
    let far = voice_like(RATE, n, 120.0, 0.5, 3);
    let echo = echo_path(&far);
    let talker: Vec<f64> = voice_like(RATE, n, 210.0, 0.35, 9)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if (RATE as usize * 6..RATE as usize * 10).contains(&i) {
                *v
            } else {
                0.0
            }
        })
        .collect();
    let near: Vec<f64> = echo.iter().zip(&talker).map(|(a, b)| a + b).collect();
    let (far, near, talker) = (to_i16(&far), to_i16(&near), to_i16(&talker));
    let mut aec = Aec3Canceller::with_aec3_config(AecConfig::default(), c);
    let mut out = Vec::new();
    let t0 = std::time::Instant::now();
    for (f, nn) in far.chunks_exact(FRAME).zip(near.chunks_exact(FRAME)) {
        aec.feed_reference(&AudioFrame::new(f.to_vec(), RATE, 1).unwrap(), "c")
            .unwrap();
        let mut nf = AudioFrame::new(nn.to_vec(), RATE, 1).unwrap();
        aec.process(&mut nf, "c").unwrap();
        out.extend_from_slice(&nf.samples);
    }
    let r = RATE as usize;
    let erle = db(e(&near[3 * r..6 * r]) / e(&out[3 * r..6 * r]).max(1.0));
    let erle2 = db(e(&near[10 * r + r / 2..12 * r]) / e(&out[10 * r + r / 2..12 * r]).max(1.0));
    let (gain, corr) = match_reference(&out[7 * r..10 * r], &talker[7 * r..10 * r], 400);
    eprintln!(
        "EXPERIMENT {:.1} us/frame",
        t0.elapsed().as_secs_f64() * 1e6 / (n / FRAME) as f64
    );
    eprintln!(
        "EXPERIMENT erle {erle:.1} erle-after {erle2:.1} kept {:.1} dB corr {corr:.3}",
        20.0 * gain.abs().log10()
    );
}
