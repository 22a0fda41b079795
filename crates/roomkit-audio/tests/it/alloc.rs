//! Counts heap allocations made on the test thread while the warmed-up inbound chain runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use roomkit_audio::{
    AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    TransportCapabilities,
};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator with a per-thread allocation counter.
struct Counting;

// A global allocator can only be written as an `unsafe impl`; this one only
// forwards to the system allocator and bumps a thread-local counter, and it
// exists solely in this test binary to prove the stages do not allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made by `f` on this thread.
fn count(f: impl FnOnce()) -> u64 {
    let before = allocations();
    f();
    allocations() - before
}

#[test]
fn each_warmed_up_stage_does_not_allocate_per_frame() {
    use roomkit_audio::dtmf::DtmfDetector;
    use roomkit_audio::stage::{AecProvider, FrameProcessor};
    use roomkit_audio::vad::VadProvider;
    let x48 = crate::util::to_i16(&crate::util::voice_like(48_000, 48_000 * 4, 140.0, 0.3, 3));
    let x16 = crate::util::to_i16(&crate::util::voice_like(16_000, 16_000 * 4, 140.0, 0.3, 3));
    let far = crate::util::to_i16(&crate::util::voice_like(16_000, 16_000 * 4, 110.0, 0.3, 4));
    let mut f = AudioFrame::with_capacity(48_000, 1, 960);
    let mut g = AudioFrame::with_capacity(16_000, 1, 320);
    let load = |fr: &mut AudioFrame, c: &[i16], rate: u32| {
        fr.samples.clear();
        fr.samples.extend_from_slice(c);
        fr.sample_rate = rate;
        fr.channels = 1;
    };
    let mut res = roomkit_audio::resample::RubatoResampler::new(AudioFormat::pcm_mono(16_000));
    let mut aec = roomkit_audio::aec::Aec3Canceller::default();
    let mut agc =
        roomkit_audio::agc::LevelAgc::new(roomkit_audio::agc::AgcConfig::default()).unwrap();
    let mut dn = roomkit_audio::denoise::RnnoiseDenoiser::new();
    let mut vad = roomkit_audio::vad::SegmentingVad::new("webrtc", Default::default(), || {
        Ok(roomkit_audio::vad::WebRtcVad::new(Default::default()))
    });
    let mut dtmf = roomkit_audio::dtmf::GoertzelDtmf::default();
    let mut totals = [0u64; 6];
    for (k, ((a, b), r)) in x48
        .chunks_exact(960)
        .zip(x16.chunks_exact(320))
        .zip(far.chunks_exact(320))
        .enumerate()
    {
        let warm = k >= 50;
        let mut c = [0u64; 6];
        load(&mut f, a, 48_000);
        c[0] = count(|| res.process(&mut f, "s").unwrap());
        load(&mut g, r, 16_000);
        c[1] = count(|| {
            aec.feed_reference(&g, "s").unwrap();
            load(&mut g, b, 16_000);
            aec.process(&mut g, "s").unwrap();
        });
        load(&mut g, b, 16_000);
        c[2] = count(|| agc.process(&mut g, "s").unwrap());
        c[3] = count(|| dn.process(&mut g, "s").unwrap());
        c[4] = count(|| {
            vad.process(&g, "s").unwrap();
        });
        c[5] = count(|| {
            dtmf.process(&g, "s").unwrap();
        });
        if warm {
            for i in 0..6 {
                totals[i] += c[i];
            }
        }
    }
    eprintln!(
        "allocations per stage over 150 warmed-up frames [resample, aec, agc, denoise, vad, dtmf]: {totals:?}"
    );
    // The AEC3 port copies its render queue and some block buffers on the
    // heap internally (about 45 small allocations per 10 ms); our wrapper
    // around it allocates nothing. Every other stage must be allocation-free.
    assert_eq!(
        [totals[0], totals[2], totals[3], totals[4], totals[5]],
        [0; 5]
    );
}

/// The whole chain except AEC (whose third-party core allocates, see above).
#[test]
fn warmed_up_inbound_chain_does_not_allocate_per_frame() {
    let cfg: AudioPipelineConfig = serde_json::from_value(serde_json::json!({
        "resampler": {"internal_sample_rate": 16000},
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
    // Continuous speech-like input, so the VAD stays inside one segment.
    let x = crate::util::to_i16(&crate::util::voice_like(48_000, 48_000 * 6, 140.0, 0.3, 3));
    let mut events = Vec::with_capacity(16);
    let mut frame = AudioFrame::with_capacity(48_000, 1, 960);
    let mut counted = 0;
    for (k, c) in x.chunks_exact(960).enumerate() {
        let before = allocations();
        frame.samples.clear();
        frame.samples.extend_from_slice(c);
        frame.sample_rate = 48_000;
        frame.timestamp_ms = None;
        p.process_inbound("call", &mut frame, &mut events).unwrap();
        events.clear();
        let used = allocations() - before;
        if k >= 100 {
            counted += used;
        }
    }
    eprintln!("allocations in 200 warmed-up frames: {counted}");
    assert_eq!(counted, 0);
}

/// The diarizer allocates only on the frames where it reports a speaker change.
#[test]
fn warmed_up_diarizer_allocates_only_for_speaker_changes() {
    use roomkit_audio::diarize::{DiarizationProvider, SpectralDiarizer};
    // Two voices alternating in 2 s turns with 0.5 s pauses.
    let a = crate::util::voice_like(16_000, 16_000 * 2, 110.0, 0.3, 5);
    let b = crate::util::voice_like(16_000, 16_000 * 2, 240.0, 0.3, 6);
    let mut x = Vec::new();
    for turn in 0..6 {
        x.extend(std::iter::repeat_n(0.0, 8_000));
        x.extend_from_slice(if turn % 2 == 0 { &a } else { &b });
    }
    let x = crate::util::to_i16(&x);
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
