//! VAD segmentation on espeak-ng speech mixed with silence and noise.
//!
//! Ground truth is where each synthesized phrase is non-silent. Detected
//! segments must match phrase for phrase, starts within 120 ms and ends
//! within 150 ms.

use roomkit_audio::vad::{
    EnergyVad, EnergyVadConfig, SegmentingVad, VadConfig, VadEventType, VadProvider, WebRtcVad,
    WebRtcVadMode,
};
use roomkit_audio::{
    AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    PipelineEvent, TransportCapabilities,
};

use crate::util::{Lcg, active_span, convert, espeak, frames};

pub const START_TOL_MS: f64 = 120.0;
pub const END_TOL_MS: f64 = 150.0;

pub struct Scene {
    pub samples: Vec<i16>,
    pub rate: u32,
    /// (start_ms, end_ms) of each phrase's audible part.
    pub truth: Vec<(f64, f64)>,
}

/// Phrases separated by 1.2-2 s of silence, over white noise at `noise_dbfs`.
pub fn scene(rate: u32, noise_dbfs: f64) -> Option<Scene> {
    let phrases = [
        "Hello there, how are you today",
        "I would like to book a table for two",
        "Yes",
        "Can you call me back tomorrow morning",
    ];
    let gaps_ms = [1000.0, 1500.0, 2000.0, 1200.0, 1500.0];
    scene_of(rate, noise_dbfs, &phrases, &gaps_ms)
}

/// `phrases` with the silences `gaps_ms` before each (one more after the
/// last), over white noise at `noise_dbfs`.
pub fn scene_of(rate: u32, noise_dbfs: f64, phrases: &[&str], gaps_ms: &[f64]) -> Option<Scene> {
    let mut samples = Vec::new();
    let mut truth = Vec::new();
    let ms = |n: usize| n as f64 * 1000.0 / f64::from(rate);
    for (i, p) in phrases.iter().enumerate() {
        samples.extend(std::iter::repeat_n(
            0i16,
            (gaps_ms[i] * f64::from(rate) / 1000.0) as usize,
        ));
        let (x, r) = espeak(p)?;
        let y = convert(&x, r, rate);
        let (a, b) = active_span(&y, 0.02);
        let clip = &y[a..b];
        truth.push((ms(samples.len()), ms(samples.len() + clip.len())));
        // Scale speech to a natural level (peak about -6 dBFS).
        samples.extend(clip.iter().map(|&s| s / 2));
    }
    samples.extend(std::iter::repeat_n(
        0i16,
        (gaps_ms[phrases.len()] * f64::from(rate) / 1000.0) as usize,
    ));
    let mut rng = Lcg(99);
    let sigma = 32768.0 * 10f64.powf(noise_dbfs / 20.0);
    for s in &mut samples {
        let v = f64::from(*s) + sigma * rng.gauss();
        *s = v.round().clamp(-32768.0, 32767.0) as i16;
    }
    Some(Scene {
        samples,
        rate,
        truth,
    })
}

pub fn check_segments(label: &str, segs: &[(f64, f64)], truth: &[(f64, f64)]) {
    eprintln!("{label}: detected {segs:?}\n{label}: truth    {truth:?}");
    assert_eq!(segs.len(), truth.len(), "{label}: segment count");
    for (s, t) in segs.iter().zip(truth) {
        assert!(
            (s.0 - t.0).abs() <= START_TOL_MS,
            "{label}: start {:.0} vs {:.0}",
            s.0,
            t.0
        );
        assert!(
            (s.1 - t.1).abs() <= END_TOL_MS,
            "{label}: end {:.0} vs {:.0}",
            s.1,
            t.1
        );
    }
}

fn segments(vad: &mut dyn VadProvider, sc: &Scene) -> Vec<(f64, f64)> {
    let mut segs = Vec::new();
    let mut start = None;
    let mut handle = |ev: roomkit_audio::vad::VadEvent, segs: &mut Vec<(f64, f64)>| match ev.kind {
        VadEventType::SpeechStart => start = Some(ev.t_ms),
        VadEventType::SpeechEnd => {
            let s = start.take().expect("end without start");
            assert!((ev.t_ms - s - ev.duration_ms.unwrap()).abs() < 1e-6);
            assert!(!ev.audio.as_ref().unwrap().is_empty());
            segs.push((s, ev.t_ms));
        }
        _ => {}
    };
    for f in frames(&sc.samples, sc.rate, sc.rate as usize / 50) {
        if let Some(ev) = vad.process(&f, "s").unwrap() {
            handle(ev, &mut segs);
        }
    }
    while let Some(ev) = vad.finish("s") {
        handle(ev, &mut segs);
    }
    segs
}

#[test]
fn webrtc_vad_segments_espeak_speech_in_noise() {
    for noise in [-70.0, -50.0] {
        let Some(sc) = scene(16_000, noise) else {
            return;
        };
        let mut vad = SegmentingVad::new("webrtc", VadConfig::default(), || {
            Ok(WebRtcVad::new(WebRtcVadMode::Aggressive))
        });
        check_segments(
            &format!("webrtc, noise {noise} dBFS"),
            &segments(&mut vad, &sc),
            &sc.truth,
        );
    }
}

/// The energy detector is for clean lines: at -50 dBFS noise it loses the
/// single short word "yes" (its voiced part is under the 250 ms minimum), so
/// it is held to -60 dBFS here; the WebRTC detector handles -50 dBFS.
#[test]
fn energy_vad_segments_espeak_speech_in_noise() {
    for noise in [-70.0, -60.0] {
        let Some(sc) = scene(16_000, noise) else {
            return;
        };
        let mut vad = SegmentingVad::new("energy", VadConfig::default(), || {
            Ok(EnergyVad::new(EnergyVadConfig::default()))
        });
        check_segments(
            &format!("energy, noise {noise} dBFS"),
            &segments(&mut vad, &sc),
            &sc.truth,
        );
    }
}

#[test]
fn speech_shorter_than_minimum_is_ignored_and_padding_is_captured() {
    let rate = 16_000u32;
    let r = rate as usize;
    let tone = |n: usize| crate::util::to_i16(&crate::util::voice_like(rate, n, 150.0, 0.4, 2));
    let mut x = vec![0i16; r];
    x.extend(tone(r / 10)); // 100 ms blip
    x.extend(vec![0i16; r]);
    x.extend(tone(r)); // 1 s of speech at 2.1 s
    x.extend(vec![0i16; r]);
    let cfg = VadConfig::default();
    let mut vad = SegmentingVad::new("energy", cfg.clone(), || {
        Ok(EnergyVad::new(EnergyVadConfig::default()))
    });
    let sc = Scene {
        samples: x,
        rate,
        truth: vec![(2100.0, 3100.0)],
    };
    let mut evs = Vec::new();
    for f in frames(&sc.samples, rate, 320) {
        evs.extend(vad.process(&f, "s").unwrap());
    }
    let starts: Vec<_> = evs
        .iter()
        .filter(|e| e.kind == VadEventType::SpeechStart)
        .collect();
    assert_eq!(starts.len(), 1, "the 100 ms blip must not count");
    let end = evs
        .iter()
        .find(|e| e.kind == VadEventType::SpeechEnd)
        .unwrap();
    let audio_ms = end.audio.as_ref().unwrap().len() as f64 * 1000.0 / f64::from(rate);
    let speech_ms = end.duration_ms.unwrap();
    // Captured audio = speech plus up to one pad before and one after.
    assert!(
        audio_ms >= speech_ms + f64::from(cfg.speech_pad_ms) * 2.0 - 40.0,
        "audio {audio_ms} ms for {speech_ms} ms of speech"
    );
    assert!(audio_ms <= speech_ms + f64::from(cfg.speech_pad_ms) * 2.0 + 40.0);
}

#[test]
fn pipeline_reports_true_speech_times_through_resampler_agc_and_denoiser() {
    let Some(sc16) = scene(16_000, -55.0) else {
        return;
    };
    // The transport delivers 48 kHz; the pipeline runs at 16 kHz.
    let x48 = convert(&sc16.samples, 16_000, 48_000);
    let cfg: AudioPipelineConfig = serde_json::from_value(serde_json::json!({
        "resampler": {"internal_sample_rate": 16000},
        "agc": {},
        "denoiser": {"provider": "rnnoise"},
        "vad": {"provider": "webrtc", "mode": "aggressive"},
    }))
    .unwrap();
    let contract = AudioPipelineContract {
        internal_format: AudioFormat::pcm_mono(16_000),
        transport_inbound_format: AudioFormat::pcm_mono(48_000),
        transport_outbound_format: AudioFormat::pcm_mono(48_000),
    };
    let mut p =
        AudioPipeline::from_config(&cfg, contract, TransportCapabilities::default()).unwrap();
    let mut events = Vec::new();
    let mut frame = AudioFrame::with_capacity(48_000, 1, 960);
    for c in x48.chunks_exact(960) {
        frame.samples.clear();
        frame.samples.extend_from_slice(c);
        frame.sample_rate = 48_000;
        frame.timestamp_ms = None;
        p.process_inbound("call", &mut frame, &mut events).unwrap();
        assert_eq!(frame.samples.len(), 320);
    }
    p.end_stream("call", &mut events).unwrap();
    let mut segs = Vec::new();
    let mut start = None;
    for ev in &events {
        if let PipelineEvent::Vad(v) = ev {
            match v.kind {
                VadEventType::SpeechStart => start = Some(v.t_ms),
                VadEventType::SpeechEnd => segs.push((start.take().unwrap(), v.t_ms)),
                _ => {}
            }
        }
    }
    check_segments(
        "pipeline 48k->16k + agc + rnnoise + webrtc",
        &segs,
        &sc16.truth,
    );
}

#[cfg(feature = "silero")]
#[test]
fn silero_vad_segments_espeak_speech_in_noise() {
    let Some(sc) = scene(16_000, -50.0) else {
        return;
    };
    let mut vad = SegmentingVad::new("silero", VadConfig::default(), || {
        roomkit_audio::vad::SileroVad::new(0.5)
    });
    check_segments(
        "silero, noise -50 dBFS",
        &segments(&mut vad, &sc),
        &sc.truth,
    );
}

/// Noise for [`noisy_scene`]: white, or pink (−3 dB per octave, Paul
/// Kellett's filter over white Gaussian noise), unit RMS, seeded.
fn noise(n: usize, pink: bool, seed: u64) -> Vec<f64> {
    let mut rng = Lcg(seed);
    let mut b = [0f64; 7];
    let mut x: Vec<f64> = (0..n)
        .map(|_| {
            let w = rng.gauss();
            if !pink {
                return w;
            }
            b[0] = 0.99886 * b[0] + w * 0.0555179;
            b[1] = 0.99332 * b[1] + w * 0.0750759;
            b[2] = 0.96900 * b[2] + w * 0.1538520;
            b[3] = 0.86650 * b[3] + w * 0.3104856;
            b[4] = 0.55000 * b[4] + w * 0.5329522;
            b[5] = -0.7616 * b[5] - w * 0.0168980;
            let p = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + w * 0.5362;
            b[6] = w * 0.115926;
            p
        })
        .collect();
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / n.max(1) as f64).sqrt();
    for v in &mut x {
        *v /= rms.max(1e-12);
    }
    x
}

/// The phrases of [`scene`] in white or pink noise at `snr_db` (speech power
/// over its active spans against the noise power); returns the scene and
/// the SNR measured on the mix.
fn noisy_scene(rate: u32, snr_db: f64, pink: bool) -> Option<(Scene, f64)> {
    // Soft onsets and endings (fricatives, a lone short word) are the hard part.
    let clean = scene_of(
        rate,
        -200.0,
        &[
            "Hello there, how are you today",
            "Yes",
            "She sells sea shells, thanks",
            "Can you call me back tomorrow morning",
        ],
        &[1000.0, 1500.0, 1200.0, 1000.0, 1000.0],
    )?;
    let ms_to = |t: f64| (t * f64::from(rate) / 1000.0) as usize;
    let mut p_speech = 0.0;
    let mut n_speech = 0usize;
    for &(a, b) in &clean.truth {
        for &s in &clean.samples[ms_to(a)..ms_to(b).min(clean.samples.len())] {
            p_speech += f64::from(s) * f64::from(s);
            n_speech += 1;
        }
    }
    let p_speech = p_speech / n_speech.max(1) as f64;
    let sigma = (p_speech / 10f64.powf(snr_db / 10.0)).sqrt();
    let nz = noise(clean.samples.len(), pink, 4242 + u64::from(rate));
    let mut p_noise = 0.0;
    let samples: Vec<i16> = clean
        .samples
        .iter()
        .zip(&nz)
        .map(|(&s, &z)| {
            let v = (f64::from(s) + sigma * z).round().clamp(-32768.0, 32767.0);
            p_noise += (v - f64::from(s)) * (v - f64::from(s));
            v as i16
        })
        .collect();
    let measured = 10.0 * (p_speech / (p_noise / samples.len() as f64)).log10();
    Some((
        Scene {
            samples,
            rate,
            truth: clean.truth,
        },
        measured,
    ))
}

/// Speech events of the chain `roomkit audio process` runs by default
/// (AGC, RNNoise, WebRTC VAD) at the scene's own rate.
fn chain_segments(sc: &Scene) -> Vec<(f64, f64)> {
    let cfg: AudioPipelineConfig = serde_json::from_value(serde_json::json!({
        "agc": {},
        "denoiser": {"provider": "rnnoise"},
        "vad": {"provider": "webrtc", "mode": "aggressive"},
    }))
    .unwrap();
    let mut p = AudioPipeline::from_config(
        &cfg,
        AudioPipelineContract::uniform(AudioFormat::pcm_mono(sc.rate)),
        TransportCapabilities::default(),
    )
    .unwrap();
    let len = sc.rate as usize / 50;
    let mut events = Vec::new();
    let mut frame = AudioFrame::with_capacity(sc.rate, 1, len);
    for c in sc.samples.chunks_exact(len) {
        frame.samples.clear();
        frame.samples.extend_from_slice(c);
        frame.sample_rate = sc.rate;
        frame.timestamp_ms = None;
        frame.metadata.clear();
        p.process_inbound("call", &mut frame, &mut events).unwrap();
    }
    p.end_stream("call", &mut events).unwrap();
    let mut segs = Vec::new();
    let mut start = None;
    for ev in &events {
        if let PipelineEvent::Vad(v) = ev {
            match v.kind {
                VadEventType::SpeechStart => start = Some(v.t_ms),
                VadEventType::SpeechEnd => segs.push((start.take().unwrap_or(f64::NAN), v.t_ms)),
                _ => {}
            }
        }
    }
    segs
}

/// Speech starts within 150 ms and ends within 400 ms of the truth in 10 dB
/// SNR white and pink noise, at 8, 16 and 48 kHz, through the default chain.
#[test]
fn speech_times_in_10_db_snr_white_and_pink_noise() {
    let mut failures = Vec::new();
    let (mut worst_start, mut worst_end) = (0f64, 0f64);
    for rate in [8_000u32, 16_000, 48_000] {
        for pink in [false, true] {
            let Some((sc, snr)) = noisy_scene(rate, 10.0, pink) else {
                return;
            };
            let segs = chain_segments(&sc);
            let kind = if pink { "pink" } else { "white" };
            let label = format!("{rate} Hz, {kind} noise, SNR {snr:.1} dB");
            let errs: Vec<(f64, f64)> = segs
                .iter()
                .zip(&sc.truth)
                .map(|(s, t)| (s.0 - t.0, s.1 - t.1))
                .collect();
            println!(
                "{label}: {} segments for {}; start/end errors (ms): {}",
                segs.len(),
                sc.truth.len(),
                errs.iter()
                    .map(|(a, b)| format!("{a:+.0}/{b:+.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if segs.len() != sc.truth.len() {
                failures.push(format!("{label}: {segs:?} vs {:?}", sc.truth));
                continue;
            }
            for (a, b) in errs {
                worst_start = worst_start.max(a.abs());
                worst_end = worst_end.max(b.abs());
                if a.abs() > 150.0 || b.abs() > 400.0 {
                    failures.push(format!("{label}: start {a:+.0} ms, end {b:+.0} ms"));
                }
            }
        }
    }
    println!("worst start error {worst_start:.0} ms, worst end error {worst_end:.0} ms");
    assert!(failures.is_empty(), "{failures:#?}");
}
