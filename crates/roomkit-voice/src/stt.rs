//! Speech-to-text (RFC §12.2): the [`SttProvider`] trait every vendor
//! implements, and the session shape a call streams audio through.
//!
//! A call opens one [`SttSession`] per utterance or per call (the provider
//! decides what it needs), pushes 16-bit mono PCM at the rate it asked for,
//! sends [`SttAudio::Finalize`] when the turn detector decides the caller
//! has finished, and reads interim and final [`Transcript`]s back. Dropping
//! the audio sender ends the session; the provider then closes `results`.
//!
//! **One answer per Finalize.** A session answers every
//! [`SttAudio::Finalize`] with exactly one final result, in order, with
//! empty text when nothing was heard, unless it fails first. The call
//! counts on it: it knows which utterance each final belongs to, and gives
//! a session that lets a Finalize go unanswered for too long up as stalled.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::ProviderFailure;

/// How many audio messages a session buffers before the call drops audio
/// (and counts it) rather than wait for a slow provider.
pub const SESSION_QUEUE: usize = 256;

/// One recognition result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcript {
    /// The recognized text.
    pub text: String,
    /// Whether this text is settled (`false` for interim results that a
    /// later result replaces).
    pub is_final: bool,
    /// Confidence between 0 and 1, when the provider gives one.
    pub confidence: Option<f32>,
    /// The language, when the provider detects or reports one.
    pub language: Option<String>,
    /// Where the text starts and ends, in milliseconds of the audio sent to
    /// this session, when the provider says.
    pub start_ms: Option<u64>,
    /// See `start_ms`.
    pub end_ms: Option<u64>,
}

impl Transcript {
    /// A final result with just text.
    pub fn final_text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            is_final: true,
            ..Self::default()
        }
    }
}

/// What a call sends into a session.
#[derive(Debug, Clone, PartialEq)]
pub enum SttAudio {
    /// 16-bit mono PCM at the session's sample rate.
    Samples(Vec<i16>),
    /// The caller finished speaking: deliver the final result for what was
    /// sent so far (and keep the session open for the next utterance).
    Finalize,
}

/// An open streaming recognition.
#[derive(Debug)]
pub struct SttSession {
    /// Audio in. Dropping it ends the session.
    pub audio: mpsc::Sender<SttAudio>,
    /// Results out, in order. A provider error is sent once, then the
    /// channel closes.
    pub results: mpsc::Receiver<Result<Transcript, ProviderFailure>>,
}

/// A speech-to-text vendor.
#[async_trait]
pub trait SttProvider: Send + Sync + 'static {
    /// The provider's name (`deepgram`, `openai`, `pocketsphinx`, ...).
    fn name(&self) -> &str;

    /// The sample rate it wants audio in; the call resamples to it.
    fn sample_rate(&self) -> u32 {
        16_000
    }

    /// Whether it gives results while audio streams in (interim results);
    /// `false` for providers that only transcribe whole utterances. A call
    /// streams the caller's audio to a streaming provider's session while
    /// they speak (from the voice activity detector's speech start, with
    /// the audio just before it, to `Finalize` at speech end); others get
    /// each utterance whole at speech end.
    fn supports_streaming(&self) -> bool {
        false
    }

    /// Transcribes one whole utterance of 16-bit mono PCM.
    ///
    /// # Errors
    /// When the provider fails or answers something unreadable.
    async fn transcribe(
        &self,
        samples: &[i16],
        sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure>;

    /// Opens a streaming session. The default buffers each utterance until
    /// [`SttAudio::Finalize`] and calls [`SttProvider::transcribe`] on it.
    ///
    /// # Errors
    /// When the provider cannot be reached.
    async fn open_session(
        self: Arc<Self>,
        sample_rate: u32,
    ) -> Result<SttSession, ProviderFailure> {
        Ok(buffered_session(self, sample_rate))
    }
}

/// A session over a provider that only transcribes whole utterances: audio
/// is collected until [`SttAudio::Finalize`], then transcribed in one call,
/// whose result is sent as final (an empty final when no audio came).
pub fn buffered_session<P: SttProvider + ?Sized>(provider: Arc<P>, sample_rate: u32) -> SttSession {
    let (audio_tx, mut audio_rx) = mpsc::channel::<SttAudio>(SESSION_QUEUE);
    let (result_tx, result_rx) = mpsc::channel(SESSION_QUEUE);
    tokio::spawn(async move {
        let mut utterance: Vec<i16> = Vec::new();
        while let Some(message) = audio_rx.recv().await {
            match message {
                SttAudio::Samples(samples) => utterance.extend_from_slice(&samples),
                SttAudio::Finalize => {
                    let audio = std::mem::take(&mut utterance);
                    let result = if audio.is_empty() {
                        Ok(Transcript::final_text(""))
                    } else {
                        provider.transcribe(&audio, sample_rate).await
                    };
                    let failed = result.is_err();
                    if result_tx.send(result).await.is_err() || failed {
                        return;
                    }
                }
            }
        }
    });
    SttSession {
        audio: audio_tx,
        results: result_rx,
    }
}
