//! The stereo mixer: places each side's samples at their media time on one
//! sample grid (user left, agent right) and emits interleaved frames once
//! both sides are past them, or once they are older than the hold-back.
//!
//! The user side is normally a continuous stream; the agent side only has
//! samples while it speaks. Frames are released when both sides have
//! written past them, or when they are `holdback` behind the furthest side,
//! so a silent agent never holds the recording up. Samples that arrive for
//! frames already released are dropped and counted. What was never written
//! is silence, so real pauses keep their length on both channels.
//!
//! Memory is bounded: the mixer never holds more than `max_buffer` frames;
//! a push further ahead first releases the oldest frames.

use std::collections::VecDeque;
use std::time::Duration;

use crate::tap::Side;

const EMIT_PIECE: usize = 4096;
static ZEROS: [i16; EMIT_PIECE * 2] = [0; EMIT_PIECE * 2];

/// Counters of a mixer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MixerStats {
    /// Frames released so far (the recording's length).
    pub frames: u64,
    /// Samples dropped because their frames had already been released.
    pub late_samples: u64,
    /// Samples refused because their media time was beyond the limit.
    pub refused_samples: u64,
}

/// A sample-aligned two-channel mixer.
#[derive(Debug)]
pub struct StereoMixer {
    rate: u32,
    buf: VecDeque<i16>,
    base: u64,
    heads: [u64; 2],
    seen: [bool; 2],
    holdback: u64,
    max_buffer: u64,
    max_position: u64,
    stats: MixerStats,
    scratch: Vec<i16>,
}

impl StereoMixer {
    /// A mixer at `rate` Hz that releases frames `holdback` behind the
    /// furthest side, never buffers more than `max_buffer` and refuses
    /// samples beyond `max_duration` of media time.
    pub fn new(
        rate: u32,
        holdback: Duration,
        max_buffer: Duration,
        max_duration: Duration,
    ) -> Self {
        let rate = rate.max(1);
        let frames = |d: Duration| -> u64 {
            u64::try_from(d.as_nanos() * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX)
        };
        let holdback = frames(holdback);
        let max_buffer = frames(max_buffer).max(holdback + 2 * EMIT_PIECE as u64);
        Self {
            rate,
            buf: VecDeque::new(),
            base: 0,
            heads: [0; 2],
            seen: [false; 2],
            holdback,
            max_buffer,
            max_position: frames(max_duration),
            stats: MixerStats::default(),
            scratch: Vec::new(),
        }
    }

    /// The output sample rate.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Counters.
    pub fn stats(&self) -> MixerStats {
        MixerStats {
            frames: self.base,
            ..self.stats
        }
    }

    /// The frame index of a media time.
    pub fn frame_of(&self, media: Duration) -> u64 {
        let n = (media.as_nanos() * u128::from(self.rate) + 500_000_000) / 1_000_000_000;
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    /// Adds mono samples of `side` recorded at `rate` whose first sample
    /// plays at `media_time`. Frames released to make room are handed to
    /// `out` as interleaved samples.
    pub fn push(
        &mut self,
        side: Side,
        samples: &[i16],
        rate: u32,
        media_time: Duration,
        out: &mut dyn FnMut(&[i16]),
    ) {
        if samples.is_empty() || rate == 0 {
            return;
        }
        let mut resampled = std::mem::take(&mut self.scratch);
        let samples: &[i16] = if rate == self.rate {
            samples
        } else {
            resample_linear(samples, rate, self.rate, &mut resampled);
            &resampled
        };
        self.place(side, samples, self.frame_of(media_time), out);
        self.scratch = resampled;
    }

    fn place(
        &mut self,
        side: Side,
        mut samples: &[i16],
        mut pos: u64,
        out: &mut dyn FnMut(&[i16]),
    ) {
        let len = samples.len() as u64;
        if pos.saturating_add(len) > self.max_position {
            self.stats.refused_samples += len;
            return;
        }
        if pos < self.base {
            let skip = (self.base - pos).min(len);
            self.stats.late_samples += skip;
            samples = &samples[skip as usize..];
            pos = self.base;
        }
        let ch = side.channel();
        // Pieces small enough that one never exceeds the buffer bound.
        let piece = (self.max_buffer / 2).max(1) as usize;
        for part in samples.chunks(piece) {
            let end = pos + part.len() as u64;
            if end - self.base > self.max_buffer {
                self.emit_until(end - self.max_buffer, out);
            }
            let need = ((end - self.base) * 2) as usize;
            if self.buf.len() < need {
                self.buf.resize(need, 0);
            }
            let start = ((pos - self.base) * 2) as usize + ch;
            for (i, s) in part.iter().enumerate() {
                self.buf[start + 2 * i] = *s;
            }
            self.heads[ch] = self.heads[ch].max(end);
            self.seen[ch] = true;
            pos = end;
        }
    }

    /// Releases the frames that are ready: those both sides have passed,
    /// and those `holdback` behind the furthest side.
    pub fn drain_ready(&mut self, out: &mut dyn FnMut(&[i16])) {
        let furthest = self.heads[0].max(self.heads[1]);
        let both = if self.seen[0] && self.seen[1] {
            self.heads[0].min(self.heads[1])
        } else {
            0
        };
        let ready = both.max(furthest.saturating_sub(self.holdback));
        self.emit_until(ready, out);
    }

    /// Releases everything written so far (end of call): nothing is held
    /// back, so no tail audio is lost.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[i16])) {
        let furthest = self.heads[0].max(self.heads[1]);
        self.emit_until(furthest, out);
    }

    fn emit_until(&mut self, target: u64, out: &mut dyn FnMut(&[i16])) {
        while self.base < target {
            let n = (target - self.base).min(EMIT_PIECE as u64) as usize;
            let have = (self.buf.len() / 2).min(n);
            if have > 0 {
                let (a, b) = self.buf.as_slices();
                let want = have * 2;
                let a_len = a.len().min(want);
                out(&a[..a_len]);
                if a_len < want {
                    out(&b[..want - a_len]);
                }
                self.buf.drain(..want);
            }
            if have < n {
                out(&ZEROS[..(n - have) * 2]);
            }
            self.base += n as u64;
        }
    }
}

/// Linear-interpolation resampling of one push (analytics recordings do not
/// need a polyphase filter; the audio pipeline normally delivers the
/// recording rate already).
fn resample_linear(input: &[i16], from: u32, to: u32, out: &mut Vec<i16>) {
    out.clear();
    let n = input.len();
    let out_len = ((n as u64 * u64::from(to) + u64::from(from) / 2) / u64::from(from)) as usize;
    let step = f64::from(from) / f64::from(to);
    for i in 0..out_len {
        let x = i as f64 * step;
        let i0 = (x.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        let frac = x - i0 as f64;
        let v = f64::from(input[i0]) + (f64::from(input[i1]) - f64::from(input[i0])) * frac;
        out.push(v.round().clamp(-32768.0, 32767.0) as i16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        m: &mut StereoMixer,
        f: impl FnOnce(&mut StereoMixer, &mut dyn FnMut(&[i16])),
    ) -> Vec<i16> {
        let mut v = Vec::new();
        f(m, &mut |s: &[i16]| v.extend_from_slice(s));
        v
    }

    fn mixer() -> StereoMixer {
        StereoMixer::new(
            1000,
            Duration::from_millis(100),
            Duration::from_secs(60),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn sides_land_on_their_channels_at_their_time() {
        let mut m = mixer();
        let mut out = collect(&mut m, |m, o| {
            m.push(Side::User, &[1, 2, 3], 1000, Duration::from_millis(0), o);
            m.push(Side::Agent, &[7, 8], 1000, Duration::from_millis(1), o);
        });
        out.extend(collect(&mut m, |m, o| m.finish(o)));
        assert_eq!(out, vec![1, 0, 2, 7, 3, 8]);
        assert_eq!(m.stats().frames, 3);
    }

    #[test]
    fn silent_agent_does_not_hold_the_recording() {
        let mut m = mixer();
        let user = vec![5i16; 500];
        let out = collect(&mut m, |m, o| {
            m.push(Side::User, &user, 1000, Duration::ZERO, o);
            m.drain_ready(o);
        });
        assert_eq!(out.len(), 400 * 2, "released all but the hold-back");
        assert!(out.chunks(2).all(|f| f == [5, 0]));
    }

    #[test]
    fn late_samples_are_dropped_and_counted() {
        let mut m = mixer();
        let _ = collect(&mut m, |m, o| {
            m.push(Side::User, &[1; 300], 1000, Duration::ZERO, o);
            m.push(Side::Agent, &[1; 300], 1000, Duration::ZERO, o);
            m.drain_ready(o);
            m.push(Side::Agent, &[9; 10], 1000, Duration::from_millis(295), o);
        });
        assert_eq!(m.stats().late_samples, 5);
    }

    #[test]
    fn far_jumps_release_frames_and_keep_memory_bounded() {
        let mut m = StereoMixer::new(
            1000,
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(3600),
        );
        let out = collect(&mut m, |m, o| {
            m.push(Side::User, &[3; 10], 1000, Duration::from_secs(100), o);
        });
        assert!(m.buf.len() as u64 <= 2 * m.max_buffer);
        assert!(out.len() as u64 >= 2 * (100_000 - m.max_buffer));
        let out2 = collect(&mut m, |m, o| {
            m.push(Side::User, &[1], 1000, Duration::from_secs(7200), o)
        });
        assert!(out2.is_empty());
        assert_eq!(m.stats().refused_samples, 1);
    }

    #[test]
    fn resampling_keeps_duration() {
        let mut v = Vec::new();
        resample_linear(&[100; 160], 16000, 24000, &mut v);
        assert_eq!(v.len(), 240);
        assert!(v.iter().all(|s| *s == 100));
    }
}
