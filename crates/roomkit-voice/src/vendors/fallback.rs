//! Fallback providers: a primary speech provider, and a secondary that takes
//! over when the primary fails in a way worth retrying
//! ([`ProviderFailure::retryable`]). Fatal failures (a bad key, a refused
//! request) are passed on: another vendor would hide a configuration error.
//!
//! [`FallbackStt`] falls back when a whole-utterance request fails, when a
//! session cannot be opened, and in the middle of a session: it keeps the
//! audio of the turn in progress and of turns finalized but not yet
//! answered (a stalled Finalize is the common way a session fails), and if
//! the primary's session fails it opens one on the secondary, sends it that
//! audio again (with a Finalize for the finalized turns) and carries on
//! there for the rest of the session. At most a minute of each is kept.
//! [`FallbackTts`] falls back when a synthesis
//! cannot start, or when the primary's stream fails before its first chunk;
//! once audio has been played, a failure is passed on (speaking the
//! sentence again from its start would repeat words to the caller).
//!
//! The secondary's chunks carry their own sample rate, which may differ
//! from the primary's [`TtsProvider::sample_rate`]; players resample per
//! chunk.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::ProviderFailure;
use crate::stt::{SESSION_QUEUE, SttAudio, SttProvider, SttSession, Transcript};
use crate::tts::{TtsProvider, TtsStream};

/// Speech-to-text with a fallback.
pub struct FallbackStt {
    name: String,
    primary: Arc<dyn SttProvider>,
    secondary: Arc<dyn SttProvider>,
}

impl std::fmt::Debug for FallbackStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackStt")
            .field("name", &self.name)
            .finish()
    }
}

impl FallbackStt {
    /// `primary`, then `secondary` on a retryable failure. Named
    /// `primary+secondary`.
    pub fn new(primary: Arc<dyn SttProvider>, secondary: Arc<dyn SttProvider>) -> Self {
        Self {
            name: format!("{}+{}", primary.name(), secondary.name()),
            primary,
            secondary,
        }
    }
}

fn log_fallback(kind: &str, failure: &ProviderFailure) {
    tracing::warn!(target: "roomkit.voice.vendor", kind, provider = %failure.provider, failure = %failure.message, "primary provider failed; using the fallback");
}

#[async_trait]
impl SttProvider for FallbackStt {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample_rate(&self) -> u32 {
        self.primary.sample_rate()
    }

    fn supports_streaming(&self) -> bool {
        self.primary.supports_streaming()
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        match self.primary.transcribe(samples, sample_rate).await {
            Err(f) if f.retryable => {
                log_fallback("stt", &f);
                self.secondary.transcribe(samples, sample_rate).await
            }
            other => other,
        }
    }

    async fn open_session(
        self: Arc<Self>,
        sample_rate: u32,
    ) -> Result<SttSession, ProviderFailure> {
        let (inner, switched) = match self.primary.clone().open_session(sample_rate).await {
            Ok(s) => (s, false),
            Err(f) if f.retryable => {
                log_fallback("stt", &f);
                (
                    self.secondary.clone().open_session(sample_rate).await?,
                    true,
                )
            }
            Err(f) => return Err(f),
        };
        let (audio_tx, audio_rx) = mpsc::channel(SESSION_QUEUE);
        let (result_tx, result_rx) = mpsc::channel(SESSION_QUEUE);
        tokio::spawn(relay(
            self.secondary.clone(),
            sample_rate,
            inner,
            switched,
            audio_rx,
            result_tx,
        ));
        Ok(SttSession {
            audio: audio_tx,
            results: result_rx,
        })
    }
}

/// The audio a switch replays: the turns sent but not yet answered with a
/// final (each with its own Finalize, so the secondary answers each one),
/// and the turn in progress. Bounded, oldest audio dropped first.
#[derive(Debug, Default)]
struct Replay {
    /// Audio of turns finalized but not yet answered, oldest first.
    finalized: std::collections::VecDeque<Vec<i16>>,
    /// Audio of the turn in progress.
    current: Vec<i16>,
    /// Most samples kept in each part.
    cap: usize,
}

impl Replay {
    fn new(sample_rate: u32) -> Self {
        Self {
            cap: usize::try_from(sample_rate)
                .unwrap_or(16_000)
                .saturating_mul(REPLAY_SECONDS),
            ..Self::default()
        }
    }

    fn push(&mut self, samples: &[i16]) {
        self.current.extend_from_slice(samples);
        trim(&mut self.current, self.cap);
    }

    fn finalize(&mut self) {
        let current = std::mem::take(&mut self.current);
        self.finalized.push_back(current);
        // Oldest audio goes first; a turn emptied this way still gets its
        // Finalize (and so its answer).
        let mut total: usize = self.finalized.iter().map(Vec::len).sum();
        for turn in &mut self.finalized {
            if total <= self.cap {
                break;
            }
            let cut = (total - self.cap).min(turn.len());
            turn.drain(..cut);
            total -= cut;
        }
    }

    /// A final result arrived: the oldest finalized turn is answered.
    fn answered(&mut self) {
        self.finalized.pop_front();
    }

    /// What to send to a new session, in order.
    fn take(&mut self) -> Vec<SttAudio> {
        let mut out = Vec::new();
        for turn in std::mem::take(&mut self.finalized) {
            if !turn.is_empty() {
                out.push(SttAudio::Samples(turn));
            }
            out.push(SttAudio::Finalize);
        }
        if !self.current.is_empty() {
            out.push(SttAudio::Samples(std::mem::take(&mut self.current)));
        }
        out
    }
}

/// Seconds of audio a replay keeps at most (per part).
const REPLAY_SECONDS: usize = 60;

fn trim(samples: &mut Vec<i16>, cap: usize) {
    if samples.len() > cap {
        let excess = samples.len() - cap;
        samples.drain(..excess);
    }
}

/// Forwards a session's audio to the current inner session and its results
/// back, switching to the secondary once if the primary fails mid-session:
/// the secondary first hears the turns the primary left unanswered.
async fn relay(
    secondary: Arc<dyn SttProvider>,
    sample_rate: u32,
    mut inner: SttSession,
    mut switched: bool,
    mut audio: mpsc::Receiver<SttAudio>,
    results: mpsc::Sender<Result<Transcript, ProviderFailure>>,
) {
    let mut replay = Replay::new(sample_rate);
    loop {
        tokio::select! {
            message = audio.recv() => {
                let Some(message) = message else { return };
                if !switched {
                    match &message {
                        SttAudio::Samples(s) => replay.push(s),
                        SttAudio::Finalize => replay.finalize(),
                    }
                }
                // A closed inner session shows up on its results below.
                let _ = inner.audio.send(message).await;
            }
            result = inner.results.recv() => match result {
                Some(Err(f)) if f.retryable && !switched => {
                    log_fallback("stt", &f);
                    switched = true;
                    match secondary.clone().open_session(sample_rate).await {
                        Ok(s) => {
                            inner = s;
                            for message in replay.take() {
                                let _ = inner.audio.send(message).await;
                            }
                        }
                        Err(f2) => {
                            let _ = results.send(Err(f2)).await;
                            return;
                        }
                    }
                }
                Some(r) => {
                    if r.as_ref().is_ok_and(|t| t.is_final) {
                        replay.answered();
                    }
                    let failed = r.is_err();
                    if results.send(r).await.is_err() || failed {
                        return;
                    }
                }
                None => return,
            },
            () = results.closed() => return,
        }
    }
}

/// Text-to-speech with a fallback.
pub struct FallbackTts {
    name: String,
    primary: Arc<dyn TtsProvider>,
    secondary: Arc<dyn TtsProvider>,
}

impl std::fmt::Debug for FallbackTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackTts")
            .field("name", &self.name)
            .finish()
    }
}

impl FallbackTts {
    /// `primary`, then `secondary` on a retryable failure before any audio.
    /// Named `primary+secondary`.
    pub fn new(primary: Arc<dyn TtsProvider>, secondary: Arc<dyn TtsProvider>) -> Self {
        Self {
            name: format!("{}+{}", primary.name(), secondary.name()),
            primary,
            secondary,
        }
    }
}

#[async_trait]
impl TtsProvider for FallbackTts {
    fn name(&self) -> &str {
        &self.name
    }

    fn sample_rate(&self) -> u32 {
        self.primary.sample_rate()
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        let mut primary = match self.primary.synthesize_stream(text, voice).await {
            Ok(s) => s,
            Err(f) if f.retryable => {
                log_fallback("tts", &f);
                return self.secondary.synthesize_stream(text, voice).await;
            }
            Err(f) => return Err(f),
        };
        // Wait for the primary's first item: a failure there still falls back.
        match primary.next().await {
            None => Ok(Box::pin(futures::stream::empty())),
            Some(Ok(first)) => Ok(futures::stream::once(async move { Ok(first) })
                .chain(primary)
                .boxed()),
            Some(Err(f)) if f.retryable => {
                log_fallback("tts", &f);
                self.secondary.synthesize_stream(text, voice).await
            }
            Some(Err(f)) => Err(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each unanswered turn is replayed with its own Finalize, so the
    /// secondary answers each one, and an answer settles only the oldest.
    #[test]
    fn a_replay_keeps_one_finalize_per_unanswered_turn() {
        let mut r = Replay::new(8_000);
        r.push(&[1; 10]);
        r.finalize();
        r.push(&[2; 20]);
        r.finalize();
        r.push(&[3; 30]);
        r.finalize();
        r.answered();
        r.push(&[4; 5]);
        let shape: Vec<(bool, usize)> = r
            .take()
            .into_iter()
            .map(|m| match m {
                SttAudio::Samples(s) => (false, s.len()),
                SttAudio::Finalize => (true, 0),
            })
            .collect();
        assert_eq!(
            shape,
            vec![(false, 20), (true, 0), (false, 30), (true, 0), (false, 5)]
        );
        assert!(r.take().is_empty());
    }

    #[test]
    fn a_replay_drops_the_oldest_audio_but_keeps_every_finalize() {
        let mut r = Replay {
            cap: 25,
            ..Replay::default()
        };
        for n in [10, 20, 30] {
            r.push(&vec![1; n]);
            r.finalize();
        }
        let out = r.take();
        let finalizes = out.iter().filter(|m| **m == SttAudio::Finalize).count();
        let samples: usize = out
            .iter()
            .map(|m| match m {
                SttAudio::Samples(s) => s.len(),
                SttAudio::Finalize => 0,
            })
            .sum();
        assert_eq!((finalizes, samples), (3, 25));
    }
}
