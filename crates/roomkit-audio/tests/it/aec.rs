//! Echo cancellation on espeak-ng speech: a synthetic echo path (bulk delay
//! and a room-like FIR), a double-talk segment and a jump of the echo delay.

use roomkit_audio::AudioFrame;
use roomkit_audio::aec::Aec3Canceller;
use roomkit_audio::stage::{AecProvider, FrameProcessor};

use crate::util::{Lcg, convert, espeak_voice};

const RATE: u32 = 16_000;
const FRAME: usize = 320;

/// Continuous speech of `voice` for at least `seconds`, peak about -6 dBFS.
fn talk(voice: &[&str], lines: &[&str], seconds: f64) -> Option<Vec<f64>> {
    let mut out = Vec::new();
    let mut k = 0;
    while (out.len() as f64) < seconds * f64::from(RATE) {
        let (x, r) = espeak_voice(lines[k % lines.len()], voice)?;
        let y = convert(&x, r, RATE);
        let peak = y
            .iter()
            .map(|&v| i32::from(v).abs())
            .max()
            .unwrap_or(1)
            .max(1);
        let g = 0.5 / f64::from(peak);
        out.extend(y.iter().map(|&v| f64::from(v) * g));
        out.extend(std::iter::repeat_n(0.0, RATE as usize / 10));
        k += 1;
    }
    out.truncate((seconds * f64::from(RATE)) as usize);
    Some(out)
}

/// Echo of `far` through a delay of `delay(n)` samples and a decaying FIR, about -8 dB.
fn echo(far: &[f64], delay: impl Fn(usize) -> usize) -> Vec<f64> {
    let taps = [
        (0usize, 0.4),
        (9, 0.18),
        (23, -0.1),
        (52, 0.07),
        (97, -0.04),
        (180, 0.02),
    ];
    (0..far.len())
        .map(|n| {
            let d = delay(n);
            taps.iter()
                .filter(|(k, _)| n >= d + k)
                .map(|(k, g)| g * far[n - d - k])
                .sum()
        })
        .collect()
}

fn to_i16(x: &[f64]) -> Vec<i16> {
    crate::util::to_i16(x)
}

fn run(far: &[i16], near: &[i16]) -> Vec<i16> {
    run_with(Aec3Canceller::default(), far, near)
}

fn run_with(mut aec: Aec3Canceller, far: &[i16], near: &[i16]) -> Vec<i16> {
    let mut out = Vec::with_capacity(near.len());
    for (f, n) in far.chunks_exact(FRAME).zip(near.chunks_exact(FRAME)) {
        aec.feed_reference(&AudioFrame::new(f.to_vec(), RATE, 1).unwrap(), "call")
            .unwrap();
        let mut nf = AudioFrame::new(n.to_vec(), RATE, 1).unwrap();
        aec.process(&mut nf, "call").unwrap();
        out.extend_from_slice(&nf.samples);
    }
    out
}

fn energy(x: &[i16]) -> f64 {
    crate::util::energy(x)
}

/// Least-squares gain (dB) and correlation of `out` against `clean`, at the
/// best lag in 0..400 samples (AEC3 hands the capture back 128 samples late).
fn kept(out: &[i16], clean: &[i16]) -> (f64, f64) {
    let mut best = (f64::NEG_INFINITY, 0.0);
    for lag in 0..400 {
        let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
        for i in 0..clean.len() - 400 {
            let x = f64::from(clean[i]);
            let y = f64::from(out[i + lag]);
            xy += x * y;
            xx += x * x;
            yy += y * y;
        }
        let corr = xy / (xx * yy).sqrt().max(1e-9);
        if corr > best.1 {
            best = (20.0 * (xy / xx.max(1e-9)).abs().max(1e-9).log10(), corr);
        }
    }
    best
}

/// Far-end speech throughout; near-end speech from 6 to 9 s (double talk);
/// the echo delay jumps from 60 ms to 150 ms at 11 s. In double talk the
/// near-end talker loses at most 6 dB and stays correlated with the clean
/// talker; 1.5 s after the jump the ERLE is back above 20 dB.
#[test]
fn aec_double_talk_and_echo_path_change_on_speech() {
    let far_lines = [
        "Thank you for calling, all our agents are busy at the moment",
        "Your call is important to us, please stay on the line",
        "You can also reach us on our website at any time of day",
    ];
    let near_lines = [
        "Hello, hello, can you hear me, I need to talk to someone now",
        "My order never arrived and I was charged twice for it",
    ];
    let total = 16.0;
    let Some(far) = talk(&["-v", "en+m3", "-p", "30"], &far_lines, total) else {
        return;
    };
    let Some(near_talk) = talk(&["-v", "en+f3", "-p", "70"], &near_lines, 3.0) else {
        return;
    };
    let r = RATE as usize;
    let (dt0, dt1, jump) = (6 * r, 9 * r, 11 * r);
    let jumped = if std::env::var("NOJUMP").is_ok() {
        960
    } else {
        2400
    };
    let e = echo(&far, |n| if n < jump { 960 } else { jumped });
    let mut talker = vec![0.0; far.len()];
    // The near-end talker about as loud as the echo: hard double talk.
    for (t, v) in talker[dt0..].iter_mut().zip(&near_talk) {
        *t = 0.25 * v;
    }
    let mut rng = Lcg(5);
    let near: Vec<f64> = e
        .iter()
        .zip(&talker)
        .map(|(a, b)| a + b + 0.0003 * rng.gauss())
        .collect();
    let (far, near, talker) = (to_i16(&far), to_i16(&near), to_i16(&talker));
    let out = if std::env::var("AEC_EXPERIMENT").is_ok() {
        let v = |k: &str, d: f32| {
            std::env::var(k)
                .ok()
                .and_then(|x| x.parse().ok())
                .unwrap_or(d)
        };
        let mut c = Aec3Canceller::default().aec3_config();
        let dn = &mut c.suppressor.dominant_nearend_detection;
        dn.enr_threshold = v("ENR", dn.enr_threshold);
        dn.enr_exit_threshold = v("ENRX", dn.enr_exit_threshold);
        dn.snr_threshold = v("SNR", dn.snr_threshold);
        dn.trigger_threshold = v("TRIG", dn.trigger_threshold as f32) as usize;
        dn.hold_duration = v("HOLD", dn.hold_duration as f32) as usize;
        let t = &mut c.suppressor.nearend_tuning;
        t.mask_lf.enr_transparent = v("LFT", t.mask_lf.enr_transparent);
        t.mask_lf.enr_suppress = v("LFS", t.mask_lf.enr_suppress);
        t.mask_hf.enr_transparent = v("HFT", t.mask_hf.enr_transparent);
        t.mask_hf.enr_suppress = v("HFS", t.mask_hf.enr_suppress);
        t.max_inc_factor = v("INC", t.max_inc_factor);
        t.max_dec_factor_lf = v("DEC", t.max_dec_factor_lf);
        let d = &mut c.delay;
        d.delay_selection_thresholds.converged =
            v("CONV", d.delay_selection_thresholds.converged as f32) as i32;
        d.delay_selection_thresholds.initial =
            v("INIT", d.delay_selection_thresholds.initial as f32) as i32;
        d.hysteresis_limit_blocks = v("HYST", d.hysteresis_limit_blocks as f32) as usize;
        d.delay_estimate_smoothing_delay_found =
            v("SMOOTH", d.delay_estimate_smoothing_delay_found);
        d.delay_candidate_detection_threshold = v("CAND", d.delay_candidate_detection_threshold);
        run_with(
            Aec3Canceller::with_aec3_config(roomkit_audio::aec::AecConfig::default(), c),
            &far,
            &near,
        )
    } else {
        run(&far, &near)
    };

    let erle =
        |a: usize, b: usize| 10.0 * (energy(&near[a..b]) / energy(&out[a..b]).max(1.0)).log10();
    let before = erle(3 * r, 6 * r);
    let (loss_db, corr) = kept(&out[dt0..dt1], &talker[dt0..dt1]);
    println!(
        "AEC on speech: ERLE before double talk {before:.1} dB; double talk: near end {loss_db:+.1} dB, correlation {corr:.3}"
    );
    let mut timeline = String::new();
    let mut after = f64::NEG_INFINITY;
    for k in 0..10 {
        let a = jump + k * r / 2;
        let v = erle(a, a + r / 2);
        let lvl = 10.0
            * (energy(&near[a..a + r / 2]) / (r / 2) as f64)
                .max(1.0)
                .log10();
        timeline.push_str(&format!(
            " {:.1}s:{v:.1} ({lvl:.0} dB)",
            (a as f64) / r as f64
        ));
        if a >= jump + 3 * r / 2 {
            after = if after.is_finite() { after.min(v) } else { v };
        }
    }
    println!("ERLE after the delay jump (0.5 s windows):{timeline}");
    println!("lowest ERLE from 1.5 s after the jump on: {after:.1} dB");
    assert!(before > 20.0, "ERLE before double talk {before:.1} dB");
    assert!(
        loss_db >= -6.0,
        "near end lost {:.1} dB in double talk",
        -loss_db
    );
    assert!(corr >= 0.9, "near end correlation {corr:.3}");
    assert!(
        after > 20.0,
        "ERLE {after:.1} dB 1.5 s after the echo path changed"
    );
}
