//! DTMF detection: every digit over the level range, in noise, Q.24 timing, twist and frequency limits, and speech.
//!
//! Levels are per tone relative to the loudest undistorted pair: at 0 dB each
//! tone peaks at -6 dBFS, so the pair just reaches full scale.

use roomkit_audio::AudioFrame;
use roomkit_audio::dtmf::{DtmfDetector, DtmfEvent, GoertzelDtmf};

use crate::util::{Lcg, to_i16};

const DIGITS: &str = "123A456B789C*0#D";
const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

fn freqs(d: char) -> (f64, f64) {
    let i = DIGITS.find(d).unwrap();
    (ROWS[i / 4], COLS[i % 4])
}

struct Tone {
    digit: char,
    start_ms: f64,
    dur_ms: f64,
    level_db: f64,
    twist_db: f64, // column level minus row level
    freq_err: f64, // relative
}

fn tone(digit: char, start_ms: f64, dur_ms: f64, level_db: f64) -> Tone {
    Tone {
        digit,
        start_ms,
        dur_ms,
        level_db,
        twist_db: 0.0,
        freq_err: 0.0,
    }
}

fn render(
    rate: u32,
    total_ms: f64,
    tones: &[Tone],
    noise_dbfs: Option<f64>,
    seed: u64,
) -> Vec<i16> {
    let n = (total_ms * f64::from(rate) / 1000.0) as usize;
    let mut x = vec![0f64; n];
    for t in tones {
        let (fr, fc) = freqs(t.digit);
        let (fr, fc) = (fr * (1.0 + t.freq_err), fc * (1.0 + t.freq_err));
        let a = 0.5 * 10f64.powf(t.level_db / 20.0);
        let (ar, ac) = (
            a * 10f64.powf(-t.twist_db.max(0.0) / 20.0),
            a * 10f64.powf(t.twist_db.min(0.0) / 20.0),
        );
        let s0 = (t.start_ms * f64::from(rate) / 1000.0).round() as usize;
        let len = (t.dur_ms * f64::from(rate) / 1000.0).round() as usize;
        for i in 0..len {
            let tt = i as f64 / f64::from(rate);
            x[s0 + i] += ar * (2.0 * std::f64::consts::PI * fr * tt).sin()
                + ac * (2.0 * std::f64::consts::PI * fc * tt).sin();
        }
    }
    if let Some(nd) = noise_dbfs {
        let mut rng = Lcg(seed);
        let sigma = 10f64.powf(nd / 20.0);
        for v in &mut x {
            *v += sigma * rng.gauss();
        }
    }
    to_i16(&x)
}

fn detect(rate: u32, x: &[i16]) -> Vec<DtmfEvent> {
    let mut det = GoertzelDtmf::default();
    let len = rate as usize / 50;
    let mut out = Vec::new();
    for (k, c) in x.chunks(len).enumerate() {
        let f = AudioFrame::new(c.to_vec(), rate, 1)
            .unwrap()
            .at(k as f64 * 20.0);
        if let Some(ev) = det.process(&f, "s").unwrap() {
            out.push(ev);
        }
    }
    out.extend(det.finish("s"));
    out
}

fn digits(evs: &[DtmfEvent]) -> String {
    evs.iter().map(|e| e.digit).collect()
}

#[test]
fn every_digit_detected_from_0_to_minus_25_db_with_timing() {
    for rate in [8_000, 16_000, 48_000] {
        for level in [0.0, -10.0, -20.0, -25.0] {
            let tones: Vec<Tone> = DIGITS
                .chars()
                .enumerate()
                .map(|(i, d)| tone(d, 100.0 + i as f64 * 150.0 + 3.3 * i as f64, 70.0, level))
                .collect();
            let x = render(rate, 2_700.0, &tones, None, 1);
            let evs = detect(rate, &x);
            assert_eq!(digits(&evs), DIGITS, "{rate} Hz at {level} dB");
            for (ev, t) in evs.iter().zip(&tones) {
                if (ev.duration_ms - t.dur_ms).abs() > 5.0 || (ev.t_ms - t.start_ms).abs() > 3.0 {
                    eprintln!(
                        "{rate} {level}: {ev:?} vs start {} dur {}",
                        t.start_ms, t.dur_ms
                    );
                }
            }
            for (ev, t) in evs.iter().zip(&tones) {
                assert!(
                    (ev.t_ms - t.start_ms).abs() <= 3.0,
                    "start {} vs {}",
                    ev.t_ms,
                    t.start_ms
                );
                assert!(
                    (ev.duration_ms - t.dur_ms).abs() <= 5.0,
                    "duration {} vs {}",
                    ev.duration_ms,
                    t.dur_ms
                );
            }
        }
    }
}

#[test]
fn digits_detected_in_white_noise() {
    // Each tone at -20 dB (-26 dBFS peak), noise at -45 dBFS RMS: about 13 dB SNR per tone.
    for seed in 1..4 {
        let tones: Vec<Tone> = DIGITS
            .chars()
            .enumerate()
            .map(|(i, d)| tone(d, 50.0 + i as f64 * 120.0, 60.0, -20.0))
            .collect();
        let x = render(8_000, 2_100.0, &tones, Some(-45.0), seed);
        let evs = detect(8_000, &x);
        assert_eq!(digits(&evs), DIGITS, "seed {seed}");
    }
}

#[test]
fn q24_timing_accepts_40_ms_and_rejects_23_ms() {
    for offset in [0.0, 2.5, 5.0, 7.5] {
        let x = render(
            8_000,
            600.0,
            &[
                tone('5', 100.0 + offset, 40.0, -10.0),
                tone('8', 300.0 + offset, 23.0, -10.0),
            ],
            None,
            1,
        );
        assert_eq!(digits(&detect(8_000, &x)), "5", "offset {offset}");
    }
    // A 10 ms break does not split a digit; a 40 ms pause separates two.
    let x = render(
        8_000,
        800.0,
        &[
            tone('3', 100.0, 60.0, -10.0),
            tone('3', 170.0, 60.0, -10.0),
            tone('3', 400.0, 60.0, -10.0),
            tone('3', 500.0, 60.0, -10.0),
        ],
        None,
        1,
    );
    assert_eq!(digits(&detect(8_000, &x)), "333");
}

#[test]
fn twist_and_frequency_limits() {
    let cases: [(f64, f64, bool); 8] = [
        (-6.0, 0.0, true),   // row 6 dB louder (reverse twist)
        (-10.0, 0.0, false), // 10 dB reverse: beyond 8 dB
        (3.0, 0.0, true),    // column 3 dB louder (forward twist)
        (6.0, 0.0, false),   // 6 dB forward: beyond 4 dB
        (0.0, 0.015, true),
        (0.0, -0.015, true),
        (0.0, 0.035, false),
        (0.0, -0.035, false),
    ];
    for (twist, ferr, want) in cases {
        for d in ['1', '5', '9', 'D', '0'] {
            let t = Tone {
                digit: d,
                start_ms: 60.0,
                dur_ms: 80.0,
                level_db: -6.0,
                twist_db: twist,
                freq_err: ferr,
            };
            let evs = detect(8_000, &render(8_000, 300.0, &[t], None, 1));
            assert_eq!(
                !evs.is_empty(),
                want,
                "digit {d} twist {twist} dB, frequency error {ferr}"
            );
        }
    }
}

#[test]
fn no_false_digits_on_voice_like_signal_and_noise() {
    let x = to_i16(&crate::util::voice_like(8_000, 8_000 * 20, 110.0, 0.6, 3));
    assert!(detect(8_000, &x).is_empty());
    let x = to_i16(&crate::util::voice_like(16_000, 16_000 * 20, 230.0, 0.6, 4));
    assert!(detect(16_000, &x).is_empty());
    let noise = render(8_000, 20_000.0, &[], Some(-20.0), 5);
    assert!(detect(8_000, &noise).is_empty());
}

#[test]
fn no_false_digits_on_synthesised_speech() {
    let phrases = [
        "Hello, I would like to check the balance of my account please.",
        "One two three four five six seven eight nine zero.",
        "The quick brown fox jumps over the lazy dog while singing loudly.",
        "Please transfer me to the billing department, thank you very much.",
    ];
    let mut total_s = 0.0;
    for p in phrases {
        let Some((x, rate)) = crate::util::espeak(p) else {
            return;
        };
        for target in [8_000, 16_000] {
            let y = crate::util::convert(&x, rate, target);
            total_s += y.len() as f64 / f64::from(target);
            let evs = detect(target, &y);
            assert!(
                evs.is_empty(),
                "false digits {:?} in {p:?} at {target} Hz",
                digits(&evs)
            );
        }
    }
    eprintln!("no false DTMF digits in {total_s:.1} s of espeak-ng speech");
}
