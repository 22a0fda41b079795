//! What a call sends its speech-to-text session, and which results it is
//! still waiting for (RFC §12.2, §12.3.14).
//!
//! Two ways of listening, chosen by [`SttProvider::supports_streaming`]:
//!
//! - **Streaming** providers hear the caller while they speak: at the VAD's
//!   speech start the call sends the audio of the last moments (the VAD's
//!   leading pad and the speech it needed before it reported a start, kept
//!   here in a short ring), then every frame as it comes, and `Finalize` at
//!   speech end. Their interim results arrive during speech.
//! - **Per-utterance** providers get the VAD's whole segment at speech end,
//!   with `Finalize`.
//!
//! A session reopened in the middle of a streamed utterance is sent the
//! utterance so far, so a broken connection loses no speech.
//!
//! Audio is resampled to the provider's rate in whole 20 ms steps by one
//! resampler whose filter state carries over from frame to frame (it is
//! only reset between utterances, whose audio is not continuous). Every
//! send is a `try_send`: a provider that does not keep up loses audio, which
//! is counted, and never holds the call's task.
//!
//! Each `Finalize` is answered by one final result (the contract of
//! [`crate::stt::SttSession`]); the feed keeps, per `Finalize` sent, whether
//! that final is wanted (speech the interruption controller ignored during
//! playback is listened to for its interim text, then its final is
//! dropped) and by when it must come. A session that lets that time pass is
//! treated as failed.
//!
//! [`SttProvider::supports_streaming`]: crate::stt::SttProvider::supports_streaming

use std::collections::VecDeque;
use std::time::Duration;

use roomkit_audio::resample::RubatoResampler;
use roomkit_audio::{AudioFormat, AudioFrame};
use tokio::time::Instant;

use crate::stt::{SttAudio, SttSession};

/// The resampler's stream name.
const STREAM: &str = "stt";
/// Audio kept for the start of a streamed utterance, in milliseconds.
const RING_MS: usize = 3_000;
/// Longest stretch of an utterance replayed to a reopened session, in seconds.
const UTTERANCE_SECONDS: usize = 60;
/// Silence added after a per-utterance segment to push the resampler's
/// delay out, in milliseconds.
const SEGMENT_TAIL_MS: usize = 100;

/// The wait before reopening an STT session after `failures` failures in
/// a row: half a second, doubling, at most 30 s.
pub(crate) fn stt_backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(6)).min(30_000))
}

/// A `Finalize` sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Awaited {
    /// Its final result is dropped (speech ignored during playback).
    discard: bool,
    /// When the session is given up as stalled.
    deadline: Instant,
}

/// What went wrong sending to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    /// Everything was queued.
    Sent,
    /// There is no session (it is being reopened).
    NoSession,
    /// The session's queue was full: audio was dropped.
    Dropped,
}

/// The call's side of its speech-to-text session.
#[derive(Debug)]
pub(crate) struct SttFeed {
    streaming: bool,
    internal_rate: u32,
    resampler: Option<RubatoResampler>,
    /// Internal-rate samples waiting for a whole resampler step.
    pending: Vec<i16>,
    /// Samples per resampler step (20 ms at the internal rate).
    step: usize,
    /// The last moments of caller audio (streaming only).
    recent: VecDeque<i16>,
    recent_cap: usize,
    /// The VAD's leading pad, in milliseconds.
    pad_ms: f64,
    /// An utterance is being streamed.
    active: bool,
    /// Its audio so far, at the provider's rate, for a session reopened
    /// in the middle of it (bounded by `utterance_cap`).
    utterance: Vec<i16>,
    utterance_cap: usize,
    awaited: VecDeque<Awaited>,
    timeout: Duration,
    /// Audio messages the session's full queue refused.
    dropped: u64,
}

impl SttFeed {
    /// A feed for a provider that streams (or not), taking audio at
    /// `internal_rate` and giving it at `stt_rate`; `pad_ms` is the VAD's
    /// leading pad, `timeout` the longest wait for a final result.
    pub(crate) fn new(
        streaming: bool,
        internal_rate: u32,
        stt_rate: u32,
        pad_ms: f64,
        timeout: Duration,
    ) -> Self {
        let recent_cap = if streaming {
            internal_rate as usize * RING_MS / 1000
        } else {
            0
        };
        Self {
            streaming,
            internal_rate,
            resampler: (stt_rate != internal_rate)
                .then(|| RubatoResampler::new(AudioFormat::pcm_mono(stt_rate))),
            pending: Vec::new(),
            step: (internal_rate as usize / 50).max(1),
            recent: VecDeque::with_capacity(recent_cap),
            recent_cap,
            pad_ms,
            active: false,
            utterance: Vec::new(),
            utterance_cap: if streaming {
                stt_rate as usize * UTTERANCE_SECONDS
            } else {
                0
            },
            awaited: VecDeque::new(),
            timeout,
            dropped: 0,
        }
    }

    /// Whether the provider hears the caller while they speak.
    pub(crate) fn streaming(&self) -> bool {
        self.streaming
    }

    /// Whether an utterance is being streamed now.
    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// Audio messages dropped so far because the session did not keep up.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keeps a caller frame (internal rate) for the start of the next
    /// streamed utterance.
    pub(crate) fn remember(&mut self, samples: &[i16]) {
        if !self.streaming {
            return;
        }
        let keep = samples.len().min(self.recent_cap);
        let excess = (self.recent.len() + keep).saturating_sub(self.recent_cap);
        self.recent.drain(..excess.min(self.recent.len()));
        self.recent
            .extend(samples[samples.len() - keep..].iter().copied());
    }

    /// Sends a caller frame of the utterance being streamed.
    pub(crate) fn stream(&mut self, stt: Option<&SttSession>, samples: &[i16]) -> SendOutcome {
        if !self.active {
            return SendOutcome::Sent;
        }
        let audio = self.convert(samples.to_vec(), false);
        self.keep(&audio);
        self.send_samples(stt, audio)
    }

    /// A new session while an utterance is streamed: it hears the
    /// utterance so far (audio the failed session may have lost, and what
    /// came while there was none).
    pub(crate) fn resume(&mut self, stt: Option<&SttSession>) -> SendOutcome {
        if !self.active || self.utterance.is_empty() {
            return SendOutcome::Sent;
        }
        let audio = self.utterance.clone();
        self.send_samples(stt, audio)
    }

    fn keep(&mut self, audio: &[i16]) {
        let room = self.utterance_cap.saturating_sub(self.utterance.len());
        self.utterance
            .extend_from_slice(&audio[..audio.len().min(room)]);
    }

    /// Speech started `back_ms` ago: a streaming provider gets the audio
    /// since then (with the VAD's leading pad) and, from now on, every frame.
    pub(crate) fn speech_started(&mut self, stt: Option<&SttSession>, back_ms: f64) -> SendOutcome {
        if !self.streaming {
            return SendOutcome::Sent;
        }
        self.active = true;
        self.restart_resampler();
        let want =
            ((back_ms.max(0.0) + self.pad_ms) * f64::from(self.internal_rate) / 1000.0) as usize;
        let n = want.min(self.recent.len());
        let start = self.recent.len() - n;
        let audio: Vec<i16> = self.recent.range(start..).copied().collect();
        let audio = self.convert(audio, false);
        self.utterance.clear();
        self.keep(&audio);
        self.send_samples(stt, audio)
    }

    /// Speech ended: a streaming provider is asked for its final result; a
    /// per-utterance one gets `segment` (unless `discard`) and is asked for
    /// it. `discard` drops the final when it comes.
    pub(crate) fn speech_ended(
        &mut self,
        stt: Option<&SttSession>,
        segment: Option<Vec<i16>>,
        discard: bool,
    ) -> SendOutcome {
        if self.streaming {
            if !self.active {
                return SendOutcome::Sent;
            }
            self.active = false;
            self.utterance.clear();
            let tail = self.convert(Vec::new(), true);
            if !tail.is_empty() && self.send_samples(stt, tail) == SendOutcome::NoSession {
                return SendOutcome::NoSession;
            }
            return self.finalize(stt, discard);
        }
        if discard {
            return SendOutcome::Sent;
        }
        let Some(mut audio) = segment.filter(|a| !a.is_empty()) else {
            return SendOutcome::Sent;
        };
        if stt.is_none() {
            return SendOutcome::NoSession;
        }
        if self.resampler.is_some() {
            audio.extend(std::iter::repeat_n(
                0,
                self.internal_rate as usize * SEGMENT_TAIL_MS / 1000,
            ));
        }
        self.restart_resampler();
        let audio = self.convert(audio, true);
        match self.send_samples(stt, audio) {
            SendOutcome::Sent => self.finalize(stt, false),
            other => other,
        }
    }

    fn finalize(&mut self, stt: Option<&SttSession>, discard: bool) -> SendOutcome {
        let Some(stt) = stt else {
            return SendOutcome::NoSession;
        };
        if stt.audio.try_send(SttAudio::Finalize).is_err() {
            self.dropped += 1;
            return SendOutcome::Dropped;
        }
        self.awaited.push_back(Awaited {
            discard,
            deadline: Instant::now() + self.timeout,
        });
        SendOutcome::Sent
    }

    /// A final result came: whether to drop it (speech ignored during
    /// playback).
    pub(crate) fn on_final(&mut self) -> bool {
        self.awaited.pop_front().is_some_and(|a| a.discard)
    }

    /// When the oldest unanswered `Finalize` is given up, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.awaited.front().map(|a| a.deadline)
    }

    /// The longest wait for a final result.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The session is gone: nothing it was asked will be answered.
    pub(crate) fn session_lost(&mut self) {
        self.awaited.clear();
    }

    fn restart_resampler(&mut self) {
        self.pending.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.reset(STREAM);
        }
    }

    fn send_samples(&mut self, stt: Option<&SttSession>, audio: Vec<i16>) -> SendOutcome {
        let Some(stt) = stt else {
            return SendOutcome::NoSession;
        };
        if audio.is_empty() {
            return SendOutcome::Sent;
        }
        if stt.audio.try_send(SttAudio::Samples(audio)).is_err() {
            self.dropped += 1;
            return SendOutcome::Dropped;
        }
        SendOutcome::Sent
    }

    /// Resamples to the provider's rate in whole steps; the rest waits for
    /// the next call, or with `flush` is padded with silence to a step.
    fn convert(&mut self, samples: Vec<i16>, flush: bool) -> Vec<i16> {
        let Some(r) = self.resampler.as_mut() else {
            return samples;
        };
        self.pending.extend(samples);
        if flush && !self.pending.is_empty() {
            let len = self.pending.len().div_ceil(self.step) * self.step;
            self.pending.resize(len, 0);
        }
        let whole = self.pending.len() / self.step * self.step;
        let mut out = Vec::with_capacity(whole * 3);
        for piece in self.pending[..whole].chunks(self.step) {
            let mut frame = AudioFrame {
                samples: piece.to_vec(),
                sample_rate: self.internal_rate,
                channels: 1,
                timestamp_ms: None,
                metadata: Default::default(),
            };
            if let Err(e) = r.process(&mut frame, STREAM) {
                tracing::warn!(target: "roomkit.voice.call", error = %e, "resampling for speech-to-text failed");
                break;
            }
            out.extend_from_slice(&frame.samples);
        }
        self.pending.drain(..whole);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn session() -> (SttSession, mpsc::Receiver<SttAudio>) {
        let (audio, rx) = mpsc::channel(64);
        let (_tx, results) = mpsc::channel(1);
        (SttSession { audio, results }, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<SttAudio>) -> (usize, usize) {
        let (mut samples, mut finalizes) = (0, 0);
        while let Ok(m) = rx.try_recv() {
            match m {
                SttAudio::Samples(s) => samples += s.len(),
                SttAudio::Finalize => finalizes += 1,
            }
        }
        (samples, finalizes)
    }

    #[tokio::test]
    async fn a_streamed_utterance_starts_with_the_recent_audio_and_ends_with_finalize() {
        let (s, mut rx) = session();
        let mut feed = SttFeed::new(true, 16_000, 16_000, 300.0, Duration::from_secs(5));
        for _ in 0..100 {
            feed.remember(&[1; 320]);
        }
        assert_eq!(drain(&mut rx), (0, 0), "nothing before speech starts");
        // Speech began 250 ms ago: 250 + 300 ms of pre-roll.
        feed.speech_started(Some(&s), 250.0);
        assert_eq!(drain(&mut rx), (16 * 550, 0));
        feed.stream(Some(&s), &[1; 320]);
        assert_eq!(drain(&mut rx), (320, 0));
        feed.speech_ended(Some(&s), None, true);
        assert_eq!(drain(&mut rx), (0, 1));
        assert!(feed.deadline().is_some());
        assert!(feed.on_final(), "the final of ignored speech is dropped");
        assert!(feed.deadline().is_none());
        assert!(!feed.on_final(), "an unexpected final is kept");
    }

    #[tokio::test]
    async fn resampling_is_frame_by_frame_and_keeps_the_length() {
        let (s, mut rx) = session();
        let mut feed = SttFeed::new(true, 8_000, 16_000, 0.0, Duration::from_secs(5));
        feed.remember(&[0; 160]);
        feed.speech_started(Some(&s), 20.0);
        // Odd frame lengths: the rest waits for a whole step.
        for _ in 0..50 {
            feed.stream(Some(&s), &[100; 100]);
        }
        feed.speech_ended(Some(&s), None, false);
        let (samples, finalizes) = drain(&mut rx);
        assert_eq!(finalizes, 1);
        let input: usize = 160 + 50 * 100;
        let expected = input.div_ceil(160) * 320;
        assert_eq!(samples, expected);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (audio, _rx) = mpsc::channel(1);
        let (_tx, results) = mpsc::channel(1);
        let s = SttSession { audio, results };
        let mut feed = SttFeed::new(true, 16_000, 16_000, 0.0, Duration::from_secs(5));
        feed.remember(&[1; 320]);
        assert_eq!(feed.speech_started(Some(&s), 20.0), SendOutcome::Sent);
        feed.stream(Some(&s), &[1; 320]);
        feed.stream(Some(&s), &[1; 320]);
        assert_eq!(feed.dropped(), 2);
        assert_eq!(
            feed.speech_ended(Some(&s), None, false),
            SendOutcome::Dropped
        );
        assert!(feed.deadline().is_none(), "no final is awaited");
    }

    #[tokio::test]
    async fn a_reopened_session_hears_the_utterance_so_far() {
        let (s, mut rx) = session();
        let mut feed = SttFeed::new(true, 16_000, 16_000, 0.0, Duration::from_secs(5));
        feed.remember(&[1; 320]);
        feed.speech_started(Some(&s), 20.0);
        // The session is lost for two frames.
        feed.session_lost();
        feed.stream(None, &[1; 320]);
        feed.stream(None, &[1; 320]);
        let (s2, mut rx2) = session();
        feed.resume(Some(&s2));
        assert_eq!(drain(&mut rx2), (960, 0), "the whole utterance so far");
        feed.stream(Some(&s2), &[1; 320]);
        feed.speech_ended(Some(&s2), None, false);
        assert_eq!(drain(&mut rx2), (320, 1));
        assert_eq!(drain(&mut rx), (320, 0));
        feed.resume(Some(&s2));
        assert_eq!(
            drain(&mut rx2),
            (0, 0),
            "nothing to replay between utterances"
        );
    }

    #[test]
    fn reopening_backs_off_up_to_half_a_minute() {
        let waits: Vec<u64> = (0..9).map(|n| stt_backoff(n).as_millis() as u64).collect();
        assert_eq!(
            waits,
            vec![
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
        assert_eq!(stt_backoff(u32::MAX), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_per_utterance_provider_gets_the_segment() {
        let (s, mut rx) = session();
        let mut feed = SttFeed::new(false, 16_000, 16_000, 300.0, Duration::from_secs(5));
        feed.remember(&[1; 320]);
        feed.speech_started(Some(&s), 300.0);
        assert_eq!(drain(&mut rx), (0, 0));
        feed.speech_ended(Some(&s), Some(vec![1; 8000]), false);
        assert_eq!(drain(&mut rx), (8000, 1));
        feed.speech_ended(Some(&s), Some(vec![1; 8000]), true);
        assert_eq!(drain(&mut rx), (0, 0), "ignored speech is not sent");
        assert_eq!(
            feed.speech_ended(None, Some(vec![1; 8000]), false),
            SendOutcome::NoSession
        );
    }
}
