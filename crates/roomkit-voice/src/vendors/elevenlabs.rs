//! ElevenLabs text-to-speech over its streaming HTTP endpoint:
//! `POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>`
//! with the key in `xi-api-key` and `{text, model_id, language_code?,
//! voice_settings?}` as JSON; the answer is raw 16-bit little-endian mono PCM
//! at the chosen rate, streamed chunk by chunk as it arrives.
//!
//! With `timestamps = true` the provider uses `/stream/with-timestamps`
//! instead: the answer is a sequence of JSON objects, one per line, each with
//! `audio_base64` (PCM) and `alignment` (the characters of the text with the
//! start and end second of each). The characters are folded into
//! [`WordMark`]s (the byte offset just past each word in the text, the
//! millisecond its sound ends), attached to the chunk in which the word
//! ends; the last word's mark comes on a final chunk without samples. If a
//! chunk's alignment starts before the previous chunk's ended, its times are
//! taken as counted from the chunk's own start and are shifted by the audio
//! already delivered.
//!
//! Faults: 401/403/422 and other 4xx are fatal, 408/429/5xx, timeouts and
//! broken connections retryable; no answer within `first_byte_timeout_ms`,
//! or a body that stalls past `stall_timeout_ms`, ends the stream with a
//! retryable [`ProviderFailure`]; an unreadable line ends it too.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{
    PcmAssembler, Secret, StreamLimits, base_url, http_client, pcm_stream, positive_ms,
    send_for_stream, transport_failure,
};
use crate::error::{ProviderFailure, VoiceError};
use crate::tts::{TtsChunk, TtsProvider, TtsStream, WordMark};

/// ElevenLabs' API root.
pub const ELEVENLABS_BASE_URL: &str = "https://api.elevenlabs.io";
/// The provider's name in failures and logs.
const NAME: &str = "elevenlabs";
/// The PCM rates ElevenLabs offers (`pcm_<rate>`).
pub const PCM_RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];
/// The longest line of the timestamps answer.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// Voice settings sent with each request; unset fields keep the voice's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceSettings {
    /// 0 to 1: lower is more expressive, higher more even.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stability: Option<f32>,
    /// 0 to 1: how closely to keep to the original voice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity_boost: Option<f32>,
    /// 0 to 1: style exaggeration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<f32>,
    /// Speaker boost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_speaker_boost: Option<bool>,
    /// Speed, 0.7 to 1.2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
}

/// Settings of ElevenLabs speech (`tts.provider = "elevenlabs"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElevenLabsConfig {
    /// The environment variable holding the API key (default `ELEVENLABS_API_KEY`).
    pub api_key_env: String,
    /// API root (default `https://api.elevenlabs.io`).
    pub base_url: String,
    /// Voice id when the call names none (required).
    pub voice_id: String,
    /// Model (default `eleven_flash_v2_5`).
    pub model_id: String,
    /// PCM sample rate asked for: 8000, 16000 (default), 22050, 24000, 44100
    /// or 48000 (`output_format=pcm_<rate>`).
    pub sample_rate: u32,
    /// Ask for character timings (`/stream/with-timestamps`) and give word marks.
    pub timestamps: bool,
    /// Language code (ISO 639-1) for models that take one.
    pub language_code: Option<String>,
    /// Voice settings.
    pub voice_settings: Option<VoiceSettings>,
    /// Longest wait for a connection (default 10000 ms).
    pub connect_timeout_ms: u64,
    /// Longest wait for the answer to start (default 10000 ms).
    pub first_byte_timeout_ms: u64,
    /// Longest pause inside the streamed audio (default 10000 ms).
    pub stall_timeout_ms: u64,
    /// Most audio accepted for one synthesis, in bytes (default 32 MiB).
    pub max_audio_bytes: usize,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        Self {
            api_key_env: "ELEVENLABS_API_KEY".to_owned(),
            base_url: ELEVENLABS_BASE_URL.to_owned(),
            voice_id: String::new(),
            model_id: "eleven_flash_v2_5".to_owned(),
            sample_rate: 16_000,
            timestamps: false,
            language_code: None,
            voice_settings: None,
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 10_000,
            stall_timeout_ms: 10_000,
            max_audio_bytes: 32 * 1024 * 1024,
        }
    }
}

/// ElevenLabs speech, streamed as PCM.
#[derive(Debug)]
pub struct ElevenLabsTts {
    key: Secret,
    root: String,
    config: ElevenLabsConfig,
    first_byte_timeout: Duration,
    limits: StreamLimits,
    client: reqwest::Client,
}

#[derive(Debug, Serialize)]
struct SpeechRequest<'a> {
    text: &'a str,
    model_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    language_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    voice_settings: Option<&'a VoiceSettings>,
}

impl ElevenLabsTts {
    /// Builds the provider, reading the key from `config.api_key_env` now.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for an unset key variable or a bad value.
    pub fn from_config(config: &ElevenLabsConfig) -> Result<Self, VoiceError> {
        let key = Secret::from_env(&config.api_key_env)?;
        Self::new(key, config)
    }

    /// Builds the provider with a key in hand.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for a bad value.
    pub fn new(key: Secret, config: &ElevenLabsConfig) -> Result<Self, VoiceError> {
        key.check_header_safe()?;
        if config.voice_id.trim().is_empty() {
            return Err(VoiceError::Config("voice_id: is required".into()));
        }
        if config.model_id.trim().is_empty() {
            return Err(VoiceError::Config("model_id: must not be empty".into()));
        }
        if !PCM_RATES.contains(&config.sample_rate) {
            return Err(VoiceError::Config(format!(
                "sample_rate: must be one of {PCM_RATES:?}"
            )));
        }
        if config.max_audio_bytes == 0 {
            return Err(VoiceError::Config(
                "max_audio_bytes: must be positive".into(),
            ));
        }
        Ok(Self {
            key,
            root: base_url(&config.base_url)?,
            first_byte_timeout: positive_ms("first_byte_timeout_ms", config.first_byte_timeout_ms)?,
            limits: StreamLimits {
                stall: positive_ms("stall_timeout_ms", config.stall_timeout_ms)?,
                max_bytes: config.max_audio_bytes,
            },
            client: http_client(positive_ms(
                "connect_timeout_ms",
                config.connect_timeout_ms,
            )?)?,
            config: config.clone(),
        })
    }
}

/// Percent-encodes a path segment.
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl TtsProvider for ElevenLabsTts {
    fn name(&self) -> &str {
        NAME
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        if text.trim().is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let voice = voice
            .filter(|v| !v.trim().is_empty())
            .unwrap_or(&self.config.voice_id);
        let rate = self.config.sample_rate;
        let variant = if self.config.timestamps {
            "stream/with-timestamps"
        } else {
            "stream"
        };
        let url = format!(
            "{}/v1/text-to-speech/{}/{variant}?output_format=pcm_{rate}",
            self.root,
            encode_segment(voice)
        );
        let body = SpeechRequest {
            text,
            model_id: &self.config.model_id,
            language_code: self.config.language_code.as_deref(),
            voice_settings: self.config.voice_settings.as_ref(),
        };
        let request = self
            .client
            .post(url)
            .header("xi-api-key", self.key.expose())
            .json(&body);
        let resp = send_for_stream(NAME, "stream", request, self.first_byte_timeout).await?;
        if self.config.timestamps {
            Ok(timestamp_stream(resp, text.to_owned(), rate, self.limits))
        } else {
            Ok(pcm_stream(NAME, "stream", resp, rate, self.limits))
        }
    }
}

#[derive(Debug, Deserialize)]
struct TimestampLine {
    #[serde(default)]
    audio_base64: Option<String>,
    #[serde(default)]
    alignment: Option<Alignment>,
}

#[derive(Debug, Deserialize)]
struct Alignment {
    #[serde(default)]
    characters: Vec<String>,
    #[serde(default)]
    character_start_times_seconds: Vec<f64>,
    #[serde(default)]
    character_end_times_seconds: Vec<f64>,
}

fn seconds_to_ms(s: f64) -> u32 {
    if s.is_finite() && s > 0.0 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ms = (s * 1000.0).round() as u32;
        ms
    } else {
        0
    }
}

/// Folds character timings into word marks across the chunks of one stream.
#[derive(Debug)]
pub(crate) struct MarkFolder {
    text: String,
    /// Byte offset in `text` of the next character.
    pos: usize,
    /// Whether the last character was part of a word, and when it ended.
    in_word: Option<u32>,
    /// Latest end time seen, in ms from the stream's start.
    last_end_ms: u32,
}

impl MarkFolder {
    pub(crate) fn new(text: String) -> Self {
        Self {
            text,
            pos: 0,
            in_word: None,
            last_end_ms: 0,
        }
    }

    /// The marks of one chunk's alignment; `audio_before_ms` is how much
    /// audio came before the chunk (for chunk-relative timings).
    fn fold(&mut self, alignment: &Alignment, audio_before_ms: u32) -> Vec<WordMark> {
        let mut marks = Vec::new();
        let starts = &alignment.character_start_times_seconds;
        let ends = &alignment.character_end_times_seconds;
        let first_start = starts.first().copied().map_or(0, seconds_to_ms);
        let offset = if first_start.saturating_add(50) < self.last_end_ms {
            audio_before_ms
        } else {
            0
        };
        for (i, ch) in alignment.characters.iter().enumerate() {
            let end_ms = ends
                .get(i)
                .copied()
                .map_or(self.last_end_ms, seconds_to_ms)
                .saturating_add(offset);
            let is_space = ch.chars().all(char::is_whitespace);
            if is_space {
                if let Some(word_end) = self.in_word.take() {
                    marks.push(WordMark {
                        text_end: self.pos,
                        audio_end_ms: word_end,
                    });
                }
            } else {
                self.in_word = Some(end_ms.max(self.last_end_ms));
            }
            self.advance(ch);
            self.last_end_ms = self.last_end_ms.max(end_ms);
        }
        marks
    }

    /// Moves past one aligned character in the text (or as near as the
    /// text allows when the two disagree).
    fn advance(&mut self, ch: &str) {
        let rest = self.text.get(self.pos..).unwrap_or("");
        if rest.starts_with(ch) {
            self.pos += ch.len();
            return;
        }
        let mut p = (self.pos + ch.len().max(1)).min(self.text.len());
        while p < self.text.len() && !self.text.is_char_boundary(p) {
            p += 1;
        }
        self.pos = p;
    }

    /// The mark of a word still open at the end of the stream.
    fn finish(&mut self) -> Option<WordMark> {
        self.in_word.take().map(|end| WordMark {
            text_end: self.pos.min(self.text.len()),
            audio_end_ms: end,
        })
    }
}

/// The `with-timestamps` answer decoded from its bytes, whatever way the
/// network cuts them: lines of JSON (`audio_base64`, `alignment`) become
/// [`TtsChunk`]s with their word marks, and the word still open when the
/// body ends becomes a last, empty chunk with its mark.
///
/// Feed it the body's pieces with [`TimestampDecoder::feed`], say the body
/// ended with [`TimestampDecoder::end`], and take chunks with
/// [`TimestampDecoder::next_chunk`]. After a failure it yields nothing more.
#[derive(Debug)]
pub struct TimestampDecoder {
    buffer: Vec<u8>,
    pcm: PcmAssembler,
    marks: MarkFolder,
    sample_rate: u32,
    max_audio_bytes: usize,
    audio_bytes: usize,
    samples_out: u64,
    ended: bool,
    done: bool,
}

impl TimestampDecoder {
    /// A decoder for the synthesis of `text`, whose audio is PCM at
    /// `sample_rate`, accepting at most `max_audio_bytes` of audio.
    pub fn new(text: String, sample_rate: u32, max_audio_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            pcm: PcmAssembler::new(),
            marks: MarkFolder::new(text),
            sample_rate,
            max_audio_bytes,
            audio_bytes: 0,
            samples_out: 0,
            ended: false,
            done: false,
        }
    }

    /// Takes the next piece of the body.
    ///
    /// # Errors
    /// A fatal [`ProviderFailure`] when a line grows past the longest line
    /// accepted; the decoder then stops.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ProviderFailure> {
        if self.buffer.len().saturating_add(bytes.len()) > MAX_LINE {
            self.done = true;
            return Err(ProviderFailure::fatal(
                NAME,
                "stream: a line of the answer is too long",
            ));
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// The body ended: a last line without a newline is read as a line.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Whether the decoder will yield nothing more.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next chunk the whole lines fed so far make, or `None` when it
    /// needs more of the body (or, after the end, has yielded everything).
    /// An error (an unreadable line, bad base64, too much audio) is yielded
    /// once and stops the decoder.
    pub fn next_chunk(&mut self) -> Option<Result<TtsChunk, ProviderFailure>> {
        if self.done {
            return None;
        }
        loop {
            // A whole line buffered: turn it into a chunk.
            if let Some(nl) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=nl).collect();
                match line_to_chunk(
                    &line,
                    &mut self.pcm,
                    &mut self.marks,
                    self.samples_out,
                    self.sample_rate,
                ) {
                    Ok(None) => continue,
                    Ok(Some((chunk, raw))) => {
                        self.audio_bytes = self.audio_bytes.saturating_add(raw);
                        if self.audio_bytes > self.max_audio_bytes {
                            self.done = true;
                            return Some(Err(ProviderFailure::fatal(
                                NAME,
                                format!(
                                    "stream: more than {} bytes of audio",
                                    self.max_audio_bytes
                                ),
                            )));
                        }
                        self.samples_out += chunk.samples.len() as u64;
                        return Some(Ok(chunk));
                    }
                    Err(f) => {
                        self.done = true;
                        return Some(Err(f));
                    }
                }
            }
            if !self.ended {
                return None;
            }
            // The body ended: a last line without newline, then the last mark.
            if !self.buffer.is_empty() {
                self.buffer.push(b'\n');
                continue;
            }
            self.done = true;
            let last = self.marks.finish()?;
            return Some(Ok(TtsChunk {
                samples: Vec::new(),
                sample_rate: self.sample_rate,
                marks: vec![last],
            }));
        }
    }
}

/// The `with-timestamps` answer as a [`TtsStream`].
fn timestamp_stream(
    resp: reqwest::Response,
    text: String,
    sample_rate: u32,
    limits: StreamLimits,
) -> TtsStream {
    struct State {
        resp: Option<reqwest::Response>,
        decoder: TimestampDecoder,
    }
    let state = State {
        resp: Some(resp),
        decoder: TimestampDecoder::new(text, sample_rate, limits.max_bytes),
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(item) = st.decoder.next_chunk() {
                return Some((item, st));
            }
            if st.decoder.is_done() {
                return None;
            }
            let resp = st.resp.as_mut()?;
            let failure = match tokio::time::timeout(limits.stall, resp.chunk()).await {
                Err(_) => ProviderFailure::retryable(
                    NAME,
                    format!(
                        "stream: the audio stalled for {} ms",
                        limits.stall.as_millis()
                    ),
                ),
                Ok(Err(e)) => transport_failure(NAME, "stream", &e),
                Ok(Ok(None)) => {
                    st.resp = None;
                    st.decoder.end();
                    continue;
                }
                Ok(Ok(Some(bytes))) => match st.decoder.feed(&bytes) {
                    Ok(()) => continue,
                    Err(f) => f,
                },
            };
            st.decoder.done = true;
            st.resp = None;
            return Some((Err(failure), st));
        }
    })
    .boxed()
}

/// One line of the timestamps answer: its audio and the marks it completes
/// (`None` for a blank line), and how many raw audio bytes it held.
fn line_to_chunk(
    line: &[u8],
    pcm: &mut PcmAssembler,
    marks: &mut MarkFolder,
    samples_before: u64,
    sample_rate: u32,
) -> Result<Option<(TtsChunk, usize)>, ProviderFailure> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: TimestampLine = serde_json::from_slice(line)
        .map_err(|_| ProviderFailure::retryable(NAME, "stream: unreadable timestamps line"))?;
    let raw = match parsed.audio_base64.as_deref() {
        Some(b64) if !b64.is_empty() => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| ProviderFailure::retryable(NAME, "stream: audio is not base64"))?,
        _ => Vec::new(),
    };
    let samples = pcm.push(&raw);
    let before_ms =
        u32::try_from(samples_before.saturating_mul(1000) / u64::from(sample_rate.max(1)))
            .unwrap_or(u32::MAX);
    let word_marks = parsed
        .alignment
        .as_ref()
        .map(|a| marks.fold(a, before_ms))
        .unwrap_or_default();
    if samples.is_empty() && word_marks.is_empty() {
        return Ok(None);
    }
    Ok(Some((
        TtsChunk {
            samples,
            sample_rate,
            marks: word_marks,
        },
        raw.len(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alignment(chars: &str, start: f64, step: f64) -> Alignment {
        let characters: Vec<String> = chars.chars().map(String::from).collect();
        #[allow(clippy::cast_precision_loss)]
        let starts: Vec<f64> = (0..characters.len())
            .map(|i| start + step * i as f64)
            .collect();
        let ends = starts.iter().map(|s| s + step).collect();
        Alignment {
            characters,
            character_start_times_seconds: starts,
            character_end_times_seconds: ends,
        }
    }

    #[test]
    fn words_end_where_their_last_character_ends() {
        let mut f = MarkFolder::new("Hi you, there".to_owned());
        let m1 = f.fold(&alignment("Hi yo", 0.0, 0.1), 0);
        assert_eq!(
            m1,
            vec![WordMark {
                text_end: 2,
                audio_end_ms: 200
            }]
        );
        let m2 = f.fold(&alignment("u, there", 0.5, 0.1), 500);
        assert_eq!(
            m2,
            vec![WordMark {
                text_end: 7,
                audio_end_ms: 700
            }]
        );
        assert_eq!(
            f.finish(),
            Some(WordMark {
                text_end: 13,
                audio_end_ms: 1300
            })
        );
    }

    #[test]
    fn chunk_relative_times_are_shifted() {
        let mut f = MarkFolder::new("ab cd".to_owned());
        f.fold(&alignment("ab", 0.0, 0.1), 0);
        // Times restart at zero in the next chunk: shifted by the audio before it.
        let m = f.fold(&alignment(" cd", 0.0, 0.1), 200);
        assert_eq!(
            m,
            vec![WordMark {
                text_end: 2,
                audio_end_ms: 200
            }]
        );
        assert_eq!(
            f.finish(),
            Some(WordMark {
                text_end: 5,
                audio_end_ms: 500
            })
        );
    }

    #[test]
    fn mismatched_alignment_stays_in_the_text() {
        let mut f = MarkFolder::new("é".to_owned());
        f.fold(&alignment("xyz w", 0.0, 0.1), 0);
        assert!(f.finish().is_some_and(|m| m.text_end <= 2));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Random lines and random alignments never panic, and marks stay
        /// inside the text, in order.
        #[test]
        fn timestamp_lines_never_panic(
            text in ".{0,40}",
            junk in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            chars in proptest::collection::vec(".{0,3}", 0..20),
            times in proptest::collection::vec(proptest::num::f64::ANY, 0..25),
            audio in proptest::collection::vec(proptest::num::u8::ANY, 0..33),
        ) {
            let mut pcm = PcmAssembler::new();
            let mut folder = MarkFolder::new(text.clone());
            let _ = line_to_chunk(&junk, &mut pcm, &mut folder, 0, 16_000);
            let line = serde_json::json!({
                "audio_base64": base64::engine::general_purpose::STANDARD.encode(&audio),
                "alignment": {
                    "characters": chars,
                    "character_start_times_seconds": times,
                    "character_end_times_seconds": times.iter().rev().collect::<Vec<_>>(),
                },
            })
            .to_string();
            let mut marks = Vec::new();
            if let Ok(Some((chunk, _))) = line_to_chunk(line.as_bytes(), &mut pcm, &mut folder, 17, 0) {
                marks.extend(chunk.marks);
            }
            marks.extend(folder.finish());
            let mut last = 0;
            for m in marks {
                proptest::prop_assert!(m.text_end <= text.len());
                proptest::prop_assert!(text.is_char_boundary(m.text_end));
                proptest::prop_assert!(m.text_end >= last);
                last = m.text_end;
            }
        }
    }
}
