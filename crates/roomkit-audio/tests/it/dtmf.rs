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

/// Renders `tones` at `rate`, detects them, and checks each tone against
/// the event at the same place: the digit, its start and its duration
/// within `tol_ms`. Returns the worst start and duration errors and how many
/// tones were lost or reported more than once.
fn check_tones(rate: u32, total_ms: f64, tones: &[Tone], noise: Option<f64>) -> (f64, f64, usize) {
    let x = render(rate, total_ms, tones, noise, 7);
    let evs = detect(rate, &x);
    let (mut worst_start, mut worst_dur, mut bad) = (0f64, 0f64, 0usize);
    for t in tones {
        let hits: Vec<&DtmfEvent> = evs
            .iter()
            .filter(|e| e.t_ms < t.start_ms + t.dur_ms && e.t_ms + e.duration_ms > t.start_ms)
            .collect();
        if hits.len() != 1 || hits[0].digit != t.digit {
            bad += 1;
            continue;
        }
        worst_start = worst_start.max((hits[0].t_ms - t.start_ms).abs());
        worst_dur = worst_dur.max((hits[0].duration_ms - t.dur_ms).abs());
    }
    // Nothing reported where there was no tone.
    bad += evs
        .iter()
        .filter(|e| {
            !tones
                .iter()
                .any(|t| e.t_ms < t.start_ms + t.dur_ms && e.t_ms + e.duration_ms > t.start_ms)
        })
        .count();
    (worst_start, worst_dur, bad)
}

/// All 16 digits, 150 ms apart at odd offsets, with the given deviations.
fn sweep(dur_ms: f64, level_db: f64, twist_db: f64, freq_err: f64) -> Vec<Tone> {
    DIGITS
        .chars()
        .enumerate()
        .map(|(i, d)| {
            let mut t = tone(
                d,
                60.0 + i as f64 * (dur_ms + 90.0) + 3.7 * i as f64,
                dur_ms,
                level_db,
            );
            t.twist_db = twist_db;
            t.freq_err = freq_err;
            t
        })
        .collect()
}

#[test]
fn q24_acceptance_frequency_deviation_twist_and_duration() {
    let mut failures = Vec::new();
    let mut worst = (0f64, 0f64);
    for rate in [8_000u32, 16_000, 48_000] {
        for (label, twist, ferr) in [
            ("+1.5 %", 0.0, 0.015),
            ("-1.5 %", 0.0, -0.015),
            ("twist +4 dB", 4.0, 0.0),
            ("twist -8 dB", -8.0, 0.0),
            ("twist +4 dB, +1.5 %", 4.0, 0.015),
            ("twist -8 dB, -1.5 %", -8.0, -0.015),
        ] {
            for dur in [40.0, 55.0, 100.0] {
                for level in [0.0, -20.0] {
                    let tones = sweep(dur, level, twist, ferr);
                    let total = tones.last().map_or(0.0, |t| t.start_ms + t.dur_ms + 200.0);
                    let (ds, dd, bad) = check_tones(rate, total, &tones, None);
                    worst = (worst.0.max(ds), worst.1.max(dd));
                    if bad > 0 || dd > 20.0 {
                        failures.push(format!(
                            "{rate} Hz {label} {dur} ms at {level} dB: {bad} of 16 lost or doubled, worst start error {ds:.1} ms, worst duration error {dd:.1} ms"
                        ));
                    }
                }
            }
        }
    }
    println!(
        "Q.24 acceptance sweep: worst start error {:.1} ms, worst duration error {:.1} ms",
        worst.0, worst.1
    );
    for f in &failures {
        println!("{f}");
    }
    assert!(failures.is_empty(), "{} failing cases", failures.len());
}

/// Minutes of speech with digits in between and on top of it: digits in the
/// clear are each reported once with their duration; no digit, in the clear
/// or under speech, is ever reported twice.
#[test]
fn long_call_with_speech_reports_no_digit_twice() {
    let rate = 8_000u32;
    let phrases = [
        "Hello, I would like to check the balance of my account please.",
        "My card number is four four one two, and the pin is coming now.",
        "Sorry, could you repeat the options once more, I did not catch that.",
        "Press one for sales, two for support, or stay on the line.",
    ];
    let mut clips = Vec::new();
    for p in phrases {
        let Some((x, r)) = crate::util::espeak(p) else {
            return;
        };
        clips.push(crate::util::convert(&x, r, rate));
    }
    let mut rng = Lcg(2024);
    let ms = |n: usize| n as f64 * 1000.0 / f64::from(rate);
    let mut speech: Vec<f64> = Vec::new();
    let mut tones = Vec::new();
    let mut masked = Vec::new();
    // About three minutes: phrase, a pause with one to three digits, and
    // now and then a digit pressed while talking.
    let mut k = 0;
    while ms(speech.len()) < 180_000.0 {
        let clip = &clips[k % clips.len()];
        let at = ms(speech.len());
        speech.extend(clip.iter().map(|&v| f64::from(v) / 32768.0 * 0.7));
        if k % 2 == 1 {
            // A digit held over the middle of the phrase.
            let d = DIGITS
                .chars()
                .nth(rng.next_u32() as usize % 16)
                .unwrap_or('5');
            masked.push(tones.len());
            tones.push(Tone {
                digit: d,
                start_ms: at + ms(clip.len()) * (0.2 + 0.5 * (rng.uniform() + 1.0) / 2.0),
                dur_ms: 150.0 + 350.0 * (rng.uniform() + 1.0) / 2.0,
                level_db: -6.0 - 8.0 * (rng.uniform() + 1.0) / 2.0,
                twist_db: -4.0 + 6.0 * (rng.uniform() + 1.0) / 2.0,
                freq_err: 0.01 * rng.uniform(),
            });
        }
        let mut t = ms(speech.len()) + 300.0 + 200.0 * (rng.uniform() + 1.0);
        for _ in 0..1 + rng.next_u32() % 3 {
            let d = DIGITS
                .chars()
                .nth(rng.next_u32() as usize % 16)
                .unwrap_or('5');
            let dur = 45.0 + 200.0 * (rng.uniform() + 1.0) / 2.0;
            tones.push(Tone {
                digit: d,
                start_ms: t,
                dur_ms: dur,
                level_db: -3.0 - 20.0 * (rng.uniform() + 1.0) / 2.0,
                twist_db: -8.0 + 12.0 * (rng.uniform() + 1.0) / 2.0,
                freq_err: 0.015 * rng.uniform(),
            });
            t += dur + 60.0 + 150.0 * (rng.uniform() + 1.0) / 2.0;
        }
        let end = ((t + 300.0) * f64::from(rate) / 1000.0) as usize;
        speech.resize(end, 0.0);
        k += 1;
    }
    let total_ms = ms(speech.len()) + 100.0;
    let tone_signal = render(rate, total_ms, &tones, None, 1);
    let mut noise = Lcg(77);
    let sigma = 10f64.powf(-55.0 / 20.0);
    let mixed: Vec<f64> = tone_signal
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            f64::from(t) / 32767.0 + speech.get(i).copied().unwrap_or(0.0) + sigma * noise.gauss()
        })
        .collect();
    let evs = detect(rate, &to_i16(&mixed));
    let overlapping = |t: &Tone| -> Vec<&DtmfEvent> {
        evs.iter()
            .filter(|e| e.t_ms < t.start_ms + t.dur_ms && e.t_ms + e.duration_ms > t.start_ms)
            .collect()
    };
    let (mut clear_ok, mut clear_n, mut doubled, mut worst_dur) = (0, 0, 0, 0f64);
    let mut masked_found = 0;
    for (i, t) in tones.iter().enumerate() {
        let hits = overlapping(t);
        if hits.len() > 1 {
            doubled += 1;
            println!(
                "reported {} times: {} at {:.0} ms: {hits:?}",
                hits.len(),
                t.digit,
                t.start_ms
            );
        }
        if masked.contains(&i) {
            masked_found += usize::from(hits.len() == 1 && hits[0].digit == t.digit);
            continue;
        }
        clear_n += 1;
        if hits.len() == 1 && hits[0].digit == t.digit {
            clear_ok += 1;
            worst_dur = worst_dur.max((hits[0].duration_ms - t.dur_ms).abs());
        }
    }
    let false_digits = evs
        .iter()
        .filter(|e| {
            !tones
                .iter()
                .any(|t| e.t_ms < t.start_ms + t.dur_ms && e.t_ms + e.duration_ms > t.start_ms)
        })
        .count();
    println!(
        "long call: {:.0} s, {} digits in the clear ({clear_ok} reported once, worst duration error {worst_dur:.1} ms), {} under speech ({masked_found} found), {doubled} reported twice, {false_digits} false",
        total_ms / 1000.0,
        clear_n,
        masked.len()
    );
    assert_eq!(doubled, 0, "digits reported twice");
    assert_eq!(clear_ok, clear_n, "digits in the clear lost");
    assert!(worst_dur <= 20.0);
    assert_eq!(false_digits, 0);
}
