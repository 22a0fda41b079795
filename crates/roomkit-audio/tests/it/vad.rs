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
        (gaps_ms[4] * f64::from(rate) / 1000.0) as usize,
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
