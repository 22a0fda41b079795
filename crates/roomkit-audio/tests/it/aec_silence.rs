//! Echo cancellation on a phone call where the far end is fed only while the
//! agent speaks (as the voice session does) and the caller sends digital
//! silence between utterances: the caller's later utterances must pass, the
//! silence must stay silent for the VAD, and echo must still be cancelled.

use roomkit_audio::aec::Aec3Canceller;
use roomkit_audio::stage::{AecProvider, FrameProcessor};
use roomkit_audio::vad::{VadEngine, WebRtcVad, WebRtcVadMode};
use roomkit_audio::{
    AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    PipelineEvent, TransportCapabilities,
};

use crate::util::{to_i16, voice_like};

const RATE: u32 = 16_000;
const FRAME: usize = 320;

fn dbfs(x: &[i16]) -> f64 {
    let e = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len().max(1) as f64;
    10.0 * (e.max(1e-3) / (32768.0f64 * 32768.0)).log10()
}

fn at(seconds: f64) -> usize {
    (seconds * f64::from(RATE)) as usize
}

/// The voice benchmark's agent audio: a 300 Hz tone at about -15 dBFS.
fn tone(rate: u32, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            ((t * 300.0 * std::f64::consts::TAU).sin() * 6000.0) as i16
        })
        .collect()
}

/// Caller utterances at 0.5, 4.5 and 8.5 s (1.2 s each); the agent plays a
/// tone from 2.0 to 3.0 s that does not come back (digital silence on the
/// line) and speech from 6.0 to 8.0 s whose echo does (60 ms, -12 dB). The
/// far end is fed only while the agent plays.
#[test]
fn aec_with_far_end_only_while_the_agent_speaks() {
    let n = at(11.0);
    let mut far = vec![0i16; n];
    far[at(2.0)..at(3.0)].copy_from_slice(&tone(RATE, at(1.0)));
    let agent = to_i16(&voice_like(RATE, at(2.0), 190.0, 0.4, 11));
    far[at(6.0)..at(8.0)].copy_from_slice(&agent);
    let mut near = vec![0i16; n];
    let mut caller = vec![0i16; n];
    for start in [0.5, 4.5, 8.5] {
        let u = to_i16(&voice_like(RATE, at(1.2), 120.0, 0.3, 5));
        caller[at(start)..at(start) + u.len()].copy_from_slice(&u);
    }
    let delay = at(0.06);
    for i in 0..n {
        let echo = if (at(6.0)..at(8.0) + delay).contains(&i) && i >= delay {
            f64::from(far[i - delay]) * 0.25
        } else {
            0.0
        };
        near[i] = (f64::from(caller[i]) + echo).round() as i16;
    }

    let mut aec = Aec3Canceller::default();
    let mut vad = WebRtcVad::new(WebRtcVadMode::Aggressive);
    let mut out = Vec::with_capacity(n);
    let mut vad_speech = Vec::with_capacity(n / FRAME);
    for (i, (f, x)) in far
        .chunks_exact(FRAME)
        .zip(near.chunks_exact(FRAME))
        .enumerate()
    {
        let t = i * FRAME;
        let playing = (at(2.0)..at(3.0)).contains(&t) || (at(6.0)..at(8.0)).contains(&t);
        if playing {
            aec.feed_reference(&AudioFrame::new(f.to_vec(), RATE, 1).unwrap(), "call")
                .unwrap();
        }
        let mut frame = AudioFrame::new(x.to_vec(), RATE, 1).unwrap();
        aec.process(&mut frame, "call").unwrap();
        vad_speech.push(vad.speech_probability(&frame.samples, RATE).unwrap() >= 0.5);
        out.extend_from_slice(&frame.samples);
    }

    // Digital silence while the tone plays and until the next utterance.
    let quiet = at(2.0) / FRAME..at(4.4) / FRAME;
    let loudest = quiet
        .clone()
        .map(|k| dbfs(&out[k * FRAME..(k + 1) * FRAME]))
        .fold(f64::NEG_INFINITY, f64::max);
    let voiced = vad_speech[quiet].iter().filter(|&&v| v).count();
    eprintln!(
        "silence during/after the tone: loudest frame {loudest:.1} dBFS, {voiced} VAD speech frames"
    );

    // Each utterance keeps its level (AEC3 hands the capture back 8 ms late).
    let mut kept = Vec::new();
    for start in [0.5, 4.5, 8.5] {
        let span = at(start + 0.1)..at(start + 1.1);
        let lag = span.start + 128..span.end + 128;
        let loss = dbfs(&caller[span.clone()]) - dbfs(&out[lag]);
        let frames = span.start / FRAME..span.end / FRAME;
        let speech = vad_speech[frames.clone()].iter().filter(|&&v| v).count();
        eprintln!(
            "utterance at {start} s: loss {loss:.1} dB, VAD speech in {speech} of {} frames",
            frames.len()
        );
        kept.push((loss, speech, frames.len()));
    }

    // Echo of the agent's speech, last second of it.
    let echo_span = at(7.0)..at(8.0);
    let erle = dbfs(&near[echo_span.clone()]) - dbfs(&out[echo_span]);
    eprintln!("ERLE over the last second of the echoed reply: {erle:.1} dB");

    assert!(loudest < -70.0, "silence came out at {loudest:.1} dBFS");
    assert_eq!(voiced, 0, "the VAD heard speech in digital silence");
    for (k, (loss, speech, frames)) in kept.iter().enumerate() {
        assert!(*loss < 3.0, "utterance {k} lost {loss:.1} dB");
        assert!(
            speech * 10 >= frames * 8,
            "utterance {k}: speech in {speech} of {frames} frames"
        );
    }
    assert!(erle > 15.0, "ERLE {erle:.1} dB");
}

/// The bench's caller signal: three harmonics of 220 Hz under a 4 Hz
/// envelope, 1.2 s at 8 kHz.
fn bench_caller() -> Vec<i16> {
    let tau = std::f64::consts::TAU;
    (0..8_000 * 12 / 10)
        .map(|i| {
            let t = f64::from(i) / 8_000.0;
            let x = 6000.0 * (tau * 220.0 * t).sin()
                + 3000.0 * (tau * 660.0 * t).sin()
                + 1500.0 * (tau * 1800.0 * t).sin();
            let env = 0.55 + 0.45 * (tau * 4.0 * t).sin();
            (x * env) as i16
        })
        .collect()
}

/// The voice benchmark's call through the voice workload's chain (8 kHz in,
/// 16 kHz inside, AEC3, AGC, RNNoise, WebRTC VAD, DTMF): three caller
/// utterances, each answered by a 1 s tone that is not echoed. Every
/// utterance starts a speech segment and nothing else does.
#[test]
fn call_chain_hears_every_utterance_and_no_phantom() {
    let cfg: AudioPipelineConfig = serde_json::from_value(serde_json::json!({
        "resampler": {"internal_sample_rate": 16000},
        "aec": {},
        "agc": {},
        "denoiser": {"provider": "rnnoise"},
        "vad": {"provider": "webrtc"},
        "dtmf": {},
    }))
    .unwrap();
    let contract = AudioPipelineContract {
        internal_format: AudioFormat::pcm_mono(16_000),
        transport_inbound_format: AudioFormat::pcm_mono(8_000),
        transport_outbound_format: AudioFormat::pcm_mono(8_000),
    };
    let mut p =
        AudioPipeline::from_config(&cfg, contract, TransportCapabilities::default()).unwrap();
    let caller = bench_caller();
    let mut inbound = vec![0i16; 4_000];
    let mut utterances = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..3 {
        utterances.push(inbound.len() / 160);
        inbound.extend_from_slice(&caller);
        // The reply starts 1 s after the utterance ends and lasts 1 s.
        replies.push(inbound.len() / 160 + 50);
        inbound.resize(inbound.len() + 8_000 * 3, 0);
    }
    let reply = tone(16_000, 16_000);
    let mut starts = Vec::new();
    let mut events = Vec::new();
    for (i, f) in inbound.chunks_exact(160).enumerate() {
        if let Some(&r) = replies.iter().find(|&&r| (r..r + 50).contains(&i)) {
            let k = i - r;
            let mut out =
                AudioFrame::new(reply[k * 320..(k + 1) * 320].to_vec(), 16_000, 1).unwrap();
            p.process_outbound("call", &mut out).unwrap();
        }
        let mut frame = AudioFrame::new(f.to_vec(), 8_000, 1).unwrap();
        events.clear();
        p.process_inbound("call", &mut frame, &mut events).unwrap();
        for e in &events {
            if let PipelineEvent::Vad(v) = e
                && v.kind == roomkit_audio::vad::VadEventType::SpeechStart
            {
                starts.push(i);
            }
        }
    }
    eprintln!(
        "speech starts at frames {starts:?}; utterances at {utterances:?}, replies at {replies:?}"
    );
    assert_eq!(starts.len(), 3, "speech starts at frames {starts:?}");
    for (s, u) in starts.iter().zip(&utterances) {
        assert!(
            (*u..u + 60).contains(s),
            "speech start at frame {s}, utterance at {u}"
        );
    }
}
