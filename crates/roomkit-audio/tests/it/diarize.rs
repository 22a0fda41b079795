//! Built-in diarization on espeak-ng voices taking turns: speaker count and per-turn attribution.

use roomkit_audio::diarize::{DiarizationProvider, DiarizerConfig, SpectralDiarizer};
use roomkit_audio::{
    AudioFormat, AudioPipeline, AudioPipelineConfig, AudioPipelineContract, PipelineEvent,
    TransportCapabilities,
};

use crate::util::{Lcg, active_span, convert, espeak_voice, frames};

/// A low male voice and a high female voice.
pub const VOICE_A: [&str; 4] = ["-v", "en+m3", "-p", "20"];
pub const VOICE_B: [&str; 4] = ["-v", "en+f3", "-p", "80"];

const LINES: [&str; 8] = [
    "Good morning, thank you for calling the support line",
    "Hi, my internet connection keeps dropping every evening",
    "I am sorry to hear that, can you tell me your account number",
    "Sure, it is four five seven nine two one",
    "Thank you, I can see two outages on your street this week",
    "That explains it, will somebody come out to fix it",
    "A technician is booked for Thursday between nine and noon",
    "Perfect, thanks a lot for your help",
];

pub struct Turns {
    pub samples: Vec<i16>,
    pub rate: u32,
    /// (start_ms, end_ms, speaker index) of each turn.
    pub truth: Vec<(f64, f64, usize)>,
}

/// Turns spoken by `voices[i % voices.len()]`, 700 ms apart, over white noise at `noise_dbfs`.
pub fn turns(rate: u32, voices: &[&[&str]], noise_dbfs: f64) -> Option<Turns> {
    let mut samples = Vec::new();
    let mut truth = Vec::new();
    let gap = rate as usize * 7 / 10;
    let ms = |n: usize| n as f64 * 1000.0 / f64::from(rate);
    for (i, line) in LINES.iter().enumerate() {
        samples.extend(std::iter::repeat_n(0i16, gap));
        let who = i % voices.len();
        let (x, r) = espeak_voice(line, voices[who])?;
        let y = convert(&x, r, rate);
        let (a, b) = active_span(&y, 0.02);
        truth.push((ms(samples.len()), ms(samples.len() + b - a), who));
        samples.extend(y[a..b].iter().map(|&s| s / 2));
    }
    samples.extend(std::iter::repeat_n(0i16, gap));
    let mut rng = Lcg(7);
    let sigma = 32768.0 * 10f64.powf(noise_dbfs / 20.0);
    for s in &mut samples {
        let v = f64::from(*s) + sigma * rng.gauss();
        *s = v.round().clamp(-32768.0, 32767.0) as i16;
    }
    Some(Turns {
        samples,
        rate,
        truth,
    })
}

/// The label in force at the middle of each turn, from speaker-change results.
pub fn labels_per_turn(changes: &[(f64, String)], truth: &[(f64, f64, usize)]) -> Vec<String> {
    truth
        .iter()
        .map(|&(a, b, _)| {
            let mid = (a + b) / 2.0;
            changes
                .iter()
                .rev()
                .find(|(t, _)| *t <= mid)
                .map(|(_, l)| l.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// Fraction of turns whose label maps to the right speaker (each label mapped
/// to the speaker it most often stands for).
pub fn accuracy(labels: &[String], truth: &[(f64, f64, usize)]) -> f64 {
    let mut correct = 0;
    for (i, label) in labels.iter().enumerate() {
        let mut votes = [0usize; 8];
        for (l, t) in labels.iter().zip(truth) {
            if l == label {
                votes[t.2] += 1;
            }
        }
        let best = (0..8).max_by_key(|&k| votes[k]).unwrap_or(0);
        if best == truth[i].2 && !label.is_empty() {
            correct += 1;
        }
    }
    correct as f64 / labels.len() as f64
}

fn run_pipeline(t: &Turns) -> (Vec<(f64, String)>, Vec<PipelineEvent>) {
    run_config(
        t,
        serde_json::json!({
            "vad": {"provider": "webrtc"},
            "diarize": {"provider": "builtin"},
        }),
    )
}

fn run_config(t: &Turns, cfg: serde_json::Value) -> (Vec<(f64, String)>, Vec<PipelineEvent>) {
    let cfg: AudioPipelineConfig = serde_json::from_value(cfg).unwrap();
    let contract = AudioPipelineContract::uniform(AudioFormat::pcm_mono(t.rate));
    let mut p =
        AudioPipeline::from_config(&cfg, contract, TransportCapabilities::default()).unwrap();
    let mut events = Vec::new();
    for mut f in frames(&t.samples, t.rate, t.rate as usize / 50) {
        let before = events.len();
        p.process_inbound("call", &mut f, &mut events).unwrap();
        // The frame carrying a change is labelled with the new speaker.
        for e in &events[before..] {
            if let PipelineEvent::Speaker(s) = e {
                assert_eq!(
                    f.metadata.speaker_id.as_deref(),
                    Some(s.speaker_id.as_str())
                );
            }
        }
    }
    p.end_stream("call", &mut events).unwrap();
    let changes = events
        .iter()
        .filter_map(|e| match e {
            PipelineEvent::Speaker(s) => Some((s.t_ms.unwrap(), s.speaker_id.clone())),
            _ => None,
        })
        .collect();
    (changes, events)
}

#[test]
fn two_voices_taking_turns_are_told_apart() {
    for rate in [16_000, 8_000, 48_000] {
        let Some(t) = turns(rate, &[&VOICE_A, &VOICE_B], -60.0) else {
            return;
        };
        let (changes, events) = run_pipeline(&t);
        let labels = labels_per_turn(&changes, &t.truth);
        let mut speakers: Vec<&String> = labels.iter().collect();
        speakers.sort();
        speakers.dedup();
        let acc = accuracy(&labels, &t.truth);
        eprintln!(
            "{rate} Hz: labels per turn {labels:?}, {} speakers, {:.0} % of turns right",
            speakers.len(),
            acc * 100.0
        );
        let distinct = events
            .iter()
            .filter(|e| matches!(e, PipelineEvent::Speaker(s) if s.is_new_speaker))
            .count();
        assert_eq!(distinct, 2, "{rate} Hz: {changes:?}");
        assert!(acc >= 0.8, "{rate} Hz: {labels:?}");
        // A change is reported where the turn began (within 100 ms).
        for (t_ms, _) in &changes {
            let near = t.truth.iter().any(|&(a, _, _)| (a - t_ms).abs() <= 100.0);
            assert!(near, "{rate} Hz: change at {t_ms} ms, turns {:?}", t.truth);
        }
    }
}

#[test]
fn one_voice_is_one_speaker() {
    for voice in [&VOICE_A, &VOICE_B] {
        let Some(t) = turns(16_000, &[voice], -60.0) else {
            return;
        };
        let (changes, _) = run_pipeline(&t);
        eprintln!("{voice:?}: changes {changes:?}");
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1, "speaker_0");
    }
}

#[test]
fn speaker_cap_and_per_stream_state() {
    let Some(t) = turns(16_000, &[&VOICE_A, &VOICE_B], -60.0) else {
        return;
    };
    // With one speaker allowed, every turn goes to speaker_0.
    let mut d = SpectralDiarizer::new(DiarizerConfig {
        max_speakers: 1,
        ..DiarizerConfig::default()
    });
    // Another stream with the other voices only must not disturb "a".
    let mut d2 = SpectralDiarizer::default();
    let mut n_results = 0;
    for f in frames(&t.samples, t.rate, 320) {
        if d.process(&f, "a").unwrap().is_some() {
            n_results += 1;
        }
        let _ = d2.process(&f, "a").unwrap();
        let _ = d2.process(&f, "b").unwrap();
    }
    assert_eq!(n_results, 1);
    assert_eq!(d.speaker_count("a"), 1);
    assert_eq!(d2.speaker_count("a"), 2);
    assert_eq!(d2.speaker_count("b"), 2);
    d2.reset("a");
    assert_eq!(d2.speaker_count("a"), 0);
    assert_eq!(d2.speaker_count("b"), 2);
}

#[test]
fn diarization_config_is_checked() {
    use roomkit_audio::pipeline::DiarizationChoice;
    let c: AudioPipelineConfig = serde_json::from_value(serde_json::json!({
        "diarization": {"provider": "builtin", "threshold": 0.3, "max_speakers": 3}
    }))
    .unwrap();
    let Some(DiarizationChoice::Builtin(d)) = c.diarization else {
        panic!("no diarizer");
    };
    assert_eq!((d.threshold, d.max_speakers, d.hangover_ms), (0.3, 3, 300));
    for bad in [
        serde_json::json!({"diarize": {"provider": "builtin", "thresh": 0.3}}),
        serde_json::json!({"diarize": {"provider": "pyannote"}}),
    ] {
        assert!(
            serde_json::from_value::<AudioPipelineConfig>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn two_voices_in_noise_through_agc_and_denoiser() {
    // Noise at -40 dBFS (speech peaks near -6 dBFS), cleaned up by the chain.
    let Some(t) = turns(16_000, &[&VOICE_A, &VOICE_B], -40.0) else {
        return;
    };
    let (changes, events) = run_config(
        &t,
        serde_json::json!({
            "agc": {},
            "denoiser": {"provider": "rnnoise"},
            "vad": {"provider": "webrtc"},
            "diarization": {"provider": "builtin"},
        }),
    );
    let labels = labels_per_turn(&changes, &t.truth);
    let acc = accuracy(&labels, &t.truth);
    eprintln!(
        "in noise: labels per turn {labels:?}, {:.0} % right",
        acc * 100.0
    );
    let new = events
        .iter()
        .filter(|e| matches!(e, PipelineEvent::Speaker(s) if s.is_new_speaker))
        .count();
    assert_eq!(new, 2, "{changes:?}");
    assert!(acc >= 0.8, "{labels:?}");
}
