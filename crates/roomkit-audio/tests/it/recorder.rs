//! Recording: caller and agent channels stay sample-aligned on the media clock despite arrival jitter.

use roomkit_audio::recorder::{
    Direction, RecordingChannelMode, RecordingConfig, RecordingMode, StereoAligner, WavRecorder,
};
use roomkit_audio::{AudioError, AudioFrame};

use crate::util::Lcg;

/// The value a sample at absolute position `pos` carries, so alignment can be checked exactly.
fn mark(pos: u64) -> i16 {
    ((pos % 20_000) as i16) + 1
}

fn frame_at(rate: u32, len: usize, k: u64) -> AudioFrame {
    let start = k * len as u64;
    let samples = (0..len as u64).map(|i| mark(start + i)).collect();
    AudioFrame::new(samples, rate, 1)
        .unwrap()
        .at(start as f64 * 1000.0 / f64::from(rate))
}

/// One hour of 20 ms frames per direction at 8 kHz. Inbound frames arrive in
/// order; outbound frames arrive in bursts up to 12 frames early and
/// shuffled within bursts held for at most 4 frames, and the agent is silent (sends nothing)
/// for stretches. Every written pair must carry the same position mark on
/// both channels (or silence on the right where the agent sent nothing).
#[test]
fn stereo_channels_line_up_to_the_sample_after_an_hour_with_jitter() {
    let rate = 8_000u32;
    let len = 160usize;
    let frames = 180_000u64; // one hour
    let mut rng = Lcg(42);
    // Agent silent in 3 of every 10 seconds.
    let agent_talks = |k: u64| (k / 50) % 10 < 7;
    let mut al = StereoAligner::new(rate);
    let mut pos = 0u64;
    let mut bad = 0u64;
    let mut silent_right = 0u64;
    let mut check = |l: i16, r: i16| -> Result<(), AudioError> {
        let want = mark(pos);
        let k = pos / len as u64;
        if l != want {
            bad += 1;
        }
        if agent_talks(k) {
            if r != want {
                bad += 1;
            }
        } else if r != 0 {
            bad += 1;
        } else {
            silent_right += 1;
        }
        pos += 1;
        Ok(())
    };
    let mut out_next = 0u64;
    let mut pending: Vec<u64> = Vec::new();
    for k in 0..frames {
        al.push(Direction::Inbound, &frame_at(rate, len, k))
            .unwrap();
        // The agent side runs up to 12 frames ahead, in shuffled bursts.
        let ahead = u64::from(rng.next_u32() % 12);
        while out_next <= (k + ahead).min(frames - 1) {
            if agent_talks(out_next) {
                pending.push(out_next);
            }
            out_next += 1;
        }
        if pending.len() >= 4 || pending.iter().any(|&f| f + 4 <= k) || k == frames - 1 {
            for i in (1..pending.len()).rev() {
                let j = rng.next_u32() as usize % (i + 1);
                pending.swap(i, j);
            }
            for f in pending.drain(..) {
                al.push(Direction::Outbound, &frame_at(rate, len, f))
                    .unwrap();
            }
        }
        al.drain(&mut check).unwrap();
    }
    al.flush(&mut check).unwrap();
    let total = frames * len as u64;
    eprintln!(
        "one hour: {pos} samples written, {bad} misaligned, {silent_right} silent agent samples, {} late samples dropped",
        al.late_dropped()
    );
    assert_eq!(pos, total);
    assert_eq!(bad, 0);
    assert_eq!(al.late_dropped(), 0);
}

#[test]
fn wav_recorder_writes_aligned_stereo_and_mono_files() {
    let dir = std::env::temp_dir().join(format!("roomkit-audio-rec-{}", std::process::id()));
    let mut rec = WavRecorder::new();
    let cfg = |mode, channels| RecordingConfig {
        format: "wav".into(),
        mode,
        channels,
        storage: "local".into(),
        directory: dir.clone(),
        sample_rate: 16_000,
        retention_days: None,
        metadata: serde_json::Map::new(),
    };
    let stereo = rec
        .start(
            "call",
            cfg(RecordingMode::Both, RecordingChannelMode::Stereo),
        )
        .unwrap();
    let mono = rec
        .start(
            "call",
            cfg(RecordingMode::InboundOnly, RecordingChannelMode::Mixed),
        )
        .unwrap();
    let mut rng = Lcg(5);
    let n = 500u64;
    for k in 0..n {
        let inbound = frame_at(16_000, 320, k);
        rec.record_inbound(&stereo, &inbound).unwrap();
        rec.record_inbound(&mono, &inbound).unwrap();
        // Outbound is late by 0-3 frames and sometimes missing entirely.
        if k >= 3 && !rng.next_u32().is_multiple_of(10) {
            rec.record_outbound(
                &stereo,
                &frame_at(16_000, 320, k - 3 + u64::from(rng.next_u32() % 2)),
            )
            .ok();
        }
    }
    let res = rec.stop(&stereo).unwrap();
    rec.stop(&mono).unwrap();
    assert_eq!(res.mode, RecordingChannelMode::Stereo);
    assert!(
        (res.duration_seconds - 10.0).abs() < 0.05,
        "{}",
        res.duration_seconds
    );
    let mut reader = hound::WavReader::open(&res.urls[0]).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let s: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let mut misaligned = 0;
    for (i, pair) in s.chunks_exact(2).enumerate() {
        assert_eq!(pair[0], mark(i as u64), "left channel at {i}");
        if pair[1] != 0 && pair[1] != pair[0] {
            misaligned += 1;
        }
    }
    assert_eq!(misaligned, 0);
    std::fs::remove_dir_all(&dir).ok();
}
