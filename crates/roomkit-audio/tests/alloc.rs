//! Proves that the warmed-up inbound chain makes no heap allocation per frame.
//!
//! This is its own test binary because it replaces the global allocator with
//! one that counts allocations made on the calling thread. Every stage of the
//! inbound chain is covered: the 48 kHz → 16 kHz resampler, AEC3 fed with a
//! far-end reference, the level AGC, RNNoise, the WebRTC VAD and the DTMF
//! detector, both one by one and through the pipeline engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::f64::consts::PI;

use roomkit_audio::aec::Aec3Canceller;
use roomkit_audio::agc::{AgcConfig, LevelAgc};
use roomkit_audio::denoise::RnnoiseDenoiser;
use roomkit_audio::dtmf::{DtmfDetector, GoertzelDtmf};
use roomkit_audio::resample::RubatoResampler;
use roomkit_audio::stage::{AecProvider, FrameProcessor};
use roomkit_audio::vad::{SegmentingVad, VadProvider, WebRtcVad};
use roomkit_audio::{
    AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    PipelineEvent, TransportCapabilities,
};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator plus a per-thread count of allocations and
/// reallocations (tests run on parallel threads; each counts only its own).
struct Counting;

// The workspace denies unsafe code, but `GlobalAlloc` can only be
// implemented with an `unsafe impl` whose methods are `unsafe fn`. This one
// forwards every call unchanged to the system allocator and only bumps a
// thread-local counter, and it exists solely in this test binary.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations `f` makes on this thread.
fn count(f: impl FnOnce()) -> u64 {
    let before = allocations();
    f();
    allocations() - before
}

/// Frames used to warm every stage up (AEC3 converges its delay estimate
/// and fills its buffers in the first second or two).
const WARMUP_FRAMES: usize = 100;
/// Frames measured after warm-up. The caller talks throughout, so the VAD
/// stays in one speech segment, and warm-up plus measurement (10 s) stays
/// within the capture buffer the VAD reserves when a segment starts (10 s
/// plus the padding). A longer segment grows that buffer, and each
/// `speech_end` event hands the buffer over: allocations per segment, not
/// per frame (docs/decisions.md, A10).
const MEASURED_FRAMES: usize = 400;

/// A continuous voiced signal (pitch glide, harmonics, 4 Hz envelope that
/// never reaches zero), so the VAD stays inside one speech segment.
fn voice(rate: u32, n: usize, f0: f64, amp: f64) -> Vec<f64> {
    let mut phase = 0.0;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let pitch = f0 * (1.0 + 0.08 * (2.0 * PI * 0.7 * t).sin());
            phase += 2.0 * PI * pitch / f64::from(rate);
            let mut v = 0.0;
            for h in 1..=10 {
                if pitch * f64::from(h) > f64::from(rate) * 0.45 {
                    break;
                }
                v += (phase * f64::from(h)).sin() / f64::from(h);
            }
            let env = 0.55 + 0.45 * (2.0 * PI * 4.0 * t).sin();
            amp * 0.5 * v * env
        })
        .collect()
}

fn to_i16(x: &[f64]) -> Vec<i16> {
    x.iter()
        .map(|v| (v * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// The far end at 16 kHz (the internal rate) and the near end at 48 kHz:
/// the caller's own voice plus the far end's echo, 60 ms late at -10 dB.
fn signals(frames: usize) -> (Vec<i16>, Vec<i16>) {
    let far16 = voice(16_000, frames * 320, 110.0, 0.4);
    let far48 = voice(48_000, frames * 960, 110.0, 0.4);
    let near = voice(48_000, frames * 960, 150.0, 0.3);
    let delay = 48 * 60;
    let near48: Vec<f64> = near
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v + if i >= delay {
                0.3 * far48[i - delay]
            } else {
                0.0
            }
        })
        .collect();
    (to_i16(&far16), to_i16(&near48))
}

/// A DTMF digit 5 (770 Hz + 1336 Hz) at 16 kHz, 120 ms of tone then silence.
fn dtmf_burst(n: usize) -> Vec<i16> {
    let tone = 16 * 120;
    to_i16(
        &(0..n)
            .map(|i| {
                if i < tone {
                    let t = i as f64 / 16_000.0;
                    0.2 * ((2.0 * PI * 770.0 * t).sin() + (2.0 * PI * 1336.0 * t).sin())
                } else {
                    0.0
                }
            })
            .collect::<Vec<_>>(),
    )
}

fn load(frame: &mut AudioFrame, samples: &[i16], rate: u32) {
    frame.samples.clear();
    frame.samples.extend_from_slice(samples);
    frame.sample_rate = rate;
    frame.channels = 1;
    frame.timestamp_ms = None;
}

#[test]
fn each_warmed_up_stage_allocates_nothing_per_frame() {
    let frames = WARMUP_FRAMES + MEASURED_FRAMES;
    let (far16, near48) = signals(frames);
    let near16 = to_i16(&voice(16_000, frames * 320, 150.0, 0.3));
    let mut f48 = AudioFrame::with_capacity(48_000, 1, 960);
    let mut f16 = AudioFrame::with_capacity(16_000, 1, 320);
    let mut far = AudioFrame::with_capacity(16_000, 1, 320);
    let mut tones = AudioFrame::with_capacity(16_000, 1, 320);
    // A digit sounds at the start of the warm-up and again in the measured frames.
    let burst = dtmf_burst(320 * 25);

    let mut res = RubatoResampler::new(AudioFormat::pcm_mono(16_000));
    let mut aec = Aec3Canceller::default();
    let mut agc = LevelAgc::new(AgcConfig::default()).unwrap();
    let mut dn = RnnoiseDenoiser::new();
    let mut vad = SegmentingVad::new("webrtc", Default::default(), || {
        Ok(WebRtcVad::new(Default::default()))
    });
    let mut dtmf = GoertzelDtmf::default();

    let names = ["resample", "aec", "agc", "denoise", "vad", "dtmf"];
    let mut totals = [0u64; 6];
    let mut digits = 0;
    for k in 0..frames {
        let mut used = [0u64; 6];
        load(&mut f48, &near48[k * 960..(k + 1) * 960], 48_000);
        used[0] = count(|| res.process(&mut f48, "s").unwrap());
        load(&mut far, &far16[k * 320..(k + 1) * 320], 16_000);
        used[1] = count(|| {
            // The far end falls silent one second in four (no reference
            // frame), as between the agent's replies; the canceller then
            // feeds AEC3 silence itself.
            if (k / 50) % 4 != 3 {
                aec.feed_reference(&far, "s").unwrap();
            }
            aec.process(&mut f48, "s").unwrap();
        });
        load(&mut f16, &near16[k * 320..(k + 1) * 320], 16_000);
        used[2] = count(|| agc.process(&mut f16, "s").unwrap());
        used[3] = count(|| dn.process(&mut f16, "s").unwrap());
        used[4] = count(|| {
            vad.process(&f16, "s").unwrap();
        });
        let b = (k % 300) * 320;
        match burst.get(b..b + 320) {
            Some(s) => load(&mut tones, s, 16_000),
            None => load(&mut tones, &[0; 320], 16_000),
        }
        used[5] = count(|| {
            if dtmf.process(&tones, "s").unwrap().is_some() {
                digits += 1;
            }
        });
        if k >= WARMUP_FRAMES {
            for (t, u) in totals.iter_mut().zip(used) {
                *t += u;
            }
        }
    }
    eprintln!("allocations per stage over {MEASURED_FRAMES} warmed-up frames:");
    for (n, t) in names.iter().zip(totals) {
        eprintln!("  {n}: {t}");
    }
    assert_eq!(digits, 2, "the DTMF path ran (digits found)");
    assert_eq!(totals, [0; 6], "allocations per stage {names:?}");
}

#[test]
fn warmed_up_inbound_chain_with_aec_allocates_nothing_per_frame() {
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
        transport_inbound_format: AudioFormat::pcm_mono(48_000),
        transport_outbound_format: AudioFormat::pcm_mono(48_000),
    };
    let mut p =
        AudioPipeline::from_config(&cfg, contract, TransportCapabilities::default()).unwrap();
    let frames = WARMUP_FRAMES + MEASURED_FRAMES;
    let (far16, near48) = signals(frames);
    let mut events: Vec<PipelineEvent> = Vec::with_capacity(16);
    let mut frame = AudioFrame::with_capacity(48_000, 1, 960);
    let mut far = AudioFrame::with_capacity(16_000, 1, 320);
    let mut counted = 0;
    let mut speech_starts = 0;
    for k in 0..frames {
        load(&mut far, &far16[k * 320..(k + 1) * 320], 16_000);
        load(&mut frame, &near48[k * 960..(k + 1) * 960], 48_000);
        let used = count(|| {
            p.feed_aec_reference("call", &far).unwrap();
            p.process_inbound("call", &mut frame, &mut events).unwrap();
        });
        speech_starts += events
            .iter()
            .filter(|e| matches!(e, PipelineEvent::Vad(v) if v.kind == roomkit_audio::vad::VadEventType::SpeechStart))
            .count();
        events.clear();
        assert!(frame.metadata.echo_cancelled);
        if k >= WARMUP_FRAMES {
            counted += used;
        }
    }
    eprintln!("allocations in {MEASURED_FRAMES} warmed-up frames of the whole chain: {counted}");
    assert_eq!(speech_starts, 1, "the VAD found the caller's speech");
    assert_eq!(counted, 0);
}

/// The diarizer allocates only on the frames where it reports a speaker
/// change (the label it hands over), never on the others.
#[test]
fn warmed_up_diarizer_allocates_only_for_speaker_changes() {
    use roomkit_audio::diarize::{DiarizationProvider, SpectralDiarizer};
    // Two voices alternating in 2 s turns with 0.5 s pauses.
    let a = voice(16_000, 16_000 * 2, 110.0, 0.3);
    let b = voice(16_000, 16_000 * 2, 240.0, 0.3);
    let mut x = Vec::new();
    for turn in 0..6 {
        x.extend(std::iter::repeat_n(0.0, 8_000));
        x.extend_from_slice(if turn % 2 == 0 { &a } else { &b });
    }
    let x = to_i16(&x);
    let mut d = SpectralDiarizer::default();
    let mut frame = AudioFrame::with_capacity(16_000, 1, 320);
    let (mut quiet, mut changes) = (0u64, 0);
    for (k, c) in x.chunks_exact(320).enumerate() {
        frame.samples.clear();
        frame.samples.extend_from_slice(c);
        let mut result = None;
        let used = count(|| result = d.process(&frame, "s").unwrap());
        if let Some(r) = result {
            changes += 1;
            drop(r);
        } else if k >= 1 {
            quiet += used;
        }
    }
    eprintln!("diarizer: {changes} speaker changes, {quiet} allocations on other frames");
    assert!(changes >= 2);
    assert_eq!(quiet, 0);
}
