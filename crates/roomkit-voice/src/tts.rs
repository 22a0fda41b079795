//! Text-to-speech (RFC §12.2): the [`TtsProvider`] trait every vendor
//! implements.
//!
//! A call asks for one stream per sentence (the sentence splitter feeds it
//! while an AI reply is still being generated) and plays the chunks as they
//! come, paced by the transport's clock. Dropping a stream cancels the
//! synthesis (barge-in).

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::ProviderFailure;

/// Where a word ends in the audio, when the provider reports timings: used
/// to cut the stored text at what the caller actually heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordMark {
    /// Byte offset in the synthesized text just past the word.
    pub text_end: usize,
    /// Milliseconds from the start of the stream's audio to the word's end.
    pub audio_end_ms: u32,
}

/// A piece of synthesized audio.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TtsChunk {
    /// 16-bit mono PCM.
    pub samples: Vec<i16>,
    /// Its sample rate.
    pub sample_rate: u32,
    /// Word timings this chunk completes, if the provider gives them.
    pub marks: Vec<WordMark>,
}

/// Audio of one synthesis, in order. An error ends the stream.
pub type TtsStream = BoxStream<'static, Result<TtsChunk, ProviderFailure>>;

/// A text-to-speech vendor.
#[async_trait]
pub trait TtsProvider: Send + Sync + 'static {
    /// The provider's name (`elevenlabs`, `openai`, `espeak`, ...).
    fn name(&self) -> &str;

    /// The sample rate of the audio it produces.
    fn sample_rate(&self) -> u32;

    /// Starts synthesizing `text` and streams the audio as it is made.
    ///
    /// # Errors
    /// When the request cannot be started (the stream carries later errors).
    async fn synthesize_stream(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure>;
}
