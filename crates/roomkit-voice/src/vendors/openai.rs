//! OpenAI audio: speech-to-text through `POST /v1/audio/transcriptions`
//! (one request per utterance) and text-to-speech through
//! `POST /v1/audio/speech` (raw PCM, streamed as it is made).
//!
//! **Transcription.** [`OpenAiStt`] sends each utterance as a WAV file built
//! from the call's PCM in a `multipart/form-data` body (`file`, `model`,
//! `response_format=json`, optional `language` and `prompt`) and reads
//! `{"text": ...}`. It does not stream: its session is the default buffered
//! one, which transcribes the audio gathered up to each
//! [`crate::SttAudio::Finalize`].
//!
//! **Speech.** [`OpenAiTts`] posts `{model, input, voice,
//! response_format: "pcm"}` (plus `instructions` and `speed` when set) and
//! streams the answer, 24 kHz 16-bit little-endian mono PCM, chunk by chunk
//! as it arrives; a sample cut between two network chunks is joined.
//!
//! `base_url` defaults to `https://api.openai.com/v1`, as for the AI
//! channel; a root given without the `/v1` suffix gets it added, so
//! `https://api.openai.com` works too.
//!
//! Faults: 401/403/400 are fatal, 408/429/5xx, timeouts and broken
//! connections retryable; no answer within the timeout, or a body that
//! stalls, ends the request with a retryable [`ProviderFailure`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    Secret, StreamLimits, base_url, http_client, pcm_stream, positive_ms, read_capped,
    send_for_stream, wav_bytes,
};
use crate::error::{ProviderFailure, VoiceError};
use crate::stt::{SttProvider, Transcript};
use crate::tts::{TtsProvider, TtsStream};

/// OpenAI's API root.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The sample rate of `response_format: "pcm"`.
pub const OPENAI_PCM_RATE: u32 = 24_000;
/// The provider's name in failures and logs.
const NAME: &str = "openai";
/// The largest transcription answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// The API root with `/v1` exactly once at its end.
fn api_root(value: &str) -> Result<String, VoiceError> {
    let root = base_url(value)?;
    Ok(if root.ends_with("/v1") {
        root
    } else {
        format!("{root}/v1")
    })
}

/// Settings of OpenAI transcription (`stt.provider = "openai"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiSttConfig {
    /// The environment variable holding the API key (default `OPENAI_API_KEY`).
    pub api_key_env: String,
    /// API root (default `https://api.openai.com/v1`).
    pub base_url: String,
    /// Model (default `gpt-4o-mini-transcribe`; `whisper-1`, `gpt-4o-transcribe`).
    pub model: String,
    /// ISO-639-1 language of the speech (`en`, `fr`, ...); detected when unset.
    pub language: Option<String>,
    /// A prompt that guides spelling and style.
    pub prompt: Option<String>,
    /// Sample rate the call sends audio at (default 16000; 8000 to 48000).
    pub sample_rate: u32,
    /// Longest wait for a connection (default 10000 ms).
    pub connect_timeout_ms: u64,
    /// Longest wait for the answer, and for each read of it (default 30000 ms).
    pub request_timeout_ms: u64,
}

impl Default for OpenAiSttConfig {
    fn default() -> Self {
        Self {
            api_key_env: "OPENAI_API_KEY".to_owned(),
            base_url: OPENAI_BASE_URL.to_owned(),
            model: "gpt-4o-mini-transcribe".to_owned(),
            language: None,
            prompt: None,
            sample_rate: 16_000,
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// OpenAI transcription, one request per utterance.
#[derive(Debug)]
pub struct OpenAiStt {
    key: Secret,
    root: String,
    config: OpenAiSttConfig,
    request_timeout: Duration,
    client: reqwest::Client,
}

impl OpenAiStt {
    /// Builds the provider, reading the key from `config.api_key_env` now.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for an unset key variable or a bad value.
    pub fn from_config(config: &OpenAiSttConfig) -> Result<Self, VoiceError> {
        let key = Secret::from_env(&config.api_key_env)?;
        Self::new(key, config)
    }

    /// Builds the provider with a key in hand.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for a bad value.
    pub fn new(key: Secret, config: &OpenAiSttConfig) -> Result<Self, VoiceError> {
        key.check_header_safe()?;
        if config.model.trim().is_empty() {
            return Err(VoiceError::Config("model: must not be empty".into()));
        }
        if !(8_000..=48_000).contains(&config.sample_rate) {
            return Err(VoiceError::Config(
                "sample_rate: must be between 8000 and 48000".into(),
            ));
        }
        Ok(Self {
            key,
            root: api_root(&config.base_url)?,
            request_timeout: positive_ms("request_timeout_ms", config.request_timeout_ms)?,
            client: http_client(positive_ms(
                "connect_timeout_ms",
                config.connect_timeout_ms,
            )?)?,
            config: config.clone(),
        })
    }
}

/// A `multipart/form-data` body: text fields, then one file.
struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self {
            boundary: format!("roomkit-{nanos:08x}-{n:x}-boundary"),
            body: Vec::new(),
        }
    }

    fn text(&mut self, name: &str, value: &str) {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
                self.boundary
            )
            .as_bytes(),
        );
    }

    fn file(&mut self, name: &str, filename: &str, content_type: &str, data: &[u8]) {
        self.body.extend_from_slice(
            format!(
                "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n",
                self.boundary
            )
            .as_bytes(),
        );
        self.body.extend_from_slice(data);
        self.body.extend_from_slice(b"\r\n");
    }

    fn finish(mut self) -> (String, Vec<u8>) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            self.body,
        )
    }
}

#[derive(Debug, Deserialize)]
struct TranscriptionAnswer {
    text: String,
    #[serde(default)]
    language: Option<String>,
}

#[async_trait]
impl SttProvider for OpenAiStt {
    fn name(&self) -> &str {
        NAME
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        if samples.is_empty() {
            return Ok(Transcript::final_text(""));
        }
        let mut form = Multipart::new();
        form.text("model", &self.config.model);
        form.text("response_format", "json");
        if let Some(lang) = &self.config.language {
            form.text("language", lang);
        }
        if let Some(prompt) = &self.config.prompt {
            form.text("prompt", prompt);
        }
        form.file(
            "file",
            "utterance.wav",
            "audio/wav",
            &wav_bytes(samples, sample_rate),
        );
        let (content_type, body) = form.finish();
        let request = self
            .client
            .post(format!("{}/audio/transcriptions", self.root))
            .bearer_auth(self.key.expose())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        let resp = send_for_stream(NAME, "transcriptions", request, self.request_timeout).await?;
        let body = read_capped(
            NAME,
            "transcriptions",
            resp,
            self.request_timeout,
            MAX_ANSWER,
        )
        .await?;
        parse_transcription(&body)
    }
}

/// Reads a transcription answer (`{"text": ..., "language": ...}`).
///
/// # Errors
/// A retryable [`ProviderFailure`] for a body that is not such an answer
/// (the body is not quoted).
pub fn parse_transcription(body: &[u8]) -> Result<Transcript, ProviderFailure> {
    let answer: TranscriptionAnswer = serde_json::from_slice(body)
        .map_err(|_| ProviderFailure::retryable(NAME, "transcriptions: unreadable answer"))?;
    Ok(Transcript {
        text: answer.text.trim().to_owned(),
        is_final: true,
        language: answer.language,
        ..Transcript::default()
    })
}

/// Settings of OpenAI speech (`tts.provider = "openai"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiTtsConfig {
    /// The environment variable holding the API key (default `OPENAI_API_KEY`).
    pub api_key_env: String,
    /// API root (default `https://api.openai.com/v1`).
    pub base_url: String,
    /// Model (default `gpt-4o-mini-tts`; `tts-1`, `tts-1-hd`).
    pub model: String,
    /// Voice when the call names none (default `alloy`).
    pub voice: String,
    /// How to speak (tone, pace; `gpt-4o-mini-tts` only).
    pub instructions: Option<String>,
    /// Speed, 0.25 to 4.0 (OpenAI's default 1.0 when unset).
    pub speed: Option<f32>,
    /// Longest wait for a connection (default 10000 ms).
    pub connect_timeout_ms: u64,
    /// Longest wait for the answer to start (default 10000 ms).
    pub first_byte_timeout_ms: u64,
    /// Longest pause inside the streamed audio (default 10000 ms).
    pub stall_timeout_ms: u64,
    /// Most audio accepted for one synthesis, in bytes (default 32 MiB,
    /// about 11 minutes at 24 kHz).
    pub max_audio_bytes: usize,
}

impl Default for OpenAiTtsConfig {
    fn default() -> Self {
        Self {
            api_key_env: "OPENAI_API_KEY".to_owned(),
            base_url: OPENAI_BASE_URL.to_owned(),
            model: "gpt-4o-mini-tts".to_owned(),
            voice: "alloy".to_owned(),
            instructions: None,
            speed: None,
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 10_000,
            stall_timeout_ms: 10_000,
            max_audio_bytes: 32 * 1024 * 1024,
        }
    }
}

/// OpenAI speech, streamed as 24 kHz PCM.
#[derive(Debug)]
pub struct OpenAiTts {
    key: Secret,
    root: String,
    config: OpenAiTtsConfig,
    first_byte_timeout: Duration,
    limits: StreamLimits,
    client: reqwest::Client,
}

#[derive(Debug, Serialize)]
struct SpeechRequest<'a> {
    model: &'a str,
    input: &'a str,
    voice: &'a str,
    response_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f32>,
}

impl OpenAiTts {
    /// Builds the provider, reading the key from `config.api_key_env` now.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for an unset key variable or a bad value.
    pub fn from_config(config: &OpenAiTtsConfig) -> Result<Self, VoiceError> {
        let key = Secret::from_env(&config.api_key_env)?;
        Self::new(key, config)
    }

    /// Builds the provider with a key in hand.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for a bad value.
    pub fn new(key: Secret, config: &OpenAiTtsConfig) -> Result<Self, VoiceError> {
        key.check_header_safe()?;
        if config.model.trim().is_empty() {
            return Err(VoiceError::Config("model: must not be empty".into()));
        }
        if config.voice.trim().is_empty() {
            return Err(VoiceError::Config("voice: must not be empty".into()));
        }
        if let Some(s) = config.speed
            && !(0.25..=4.0).contains(&s)
        {
            return Err(VoiceError::Config(
                "speed: must be between 0.25 and 4.0".into(),
            ));
        }
        if config.max_audio_bytes == 0 {
            return Err(VoiceError::Config(
                "max_audio_bytes: must be positive".into(),
            ));
        }
        Ok(Self {
            key,
            root: api_root(&config.base_url)?,
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

#[async_trait]
impl TtsProvider for OpenAiTts {
    fn name(&self) -> &str {
        NAME
    }

    fn sample_rate(&self) -> u32 {
        OPENAI_PCM_RATE
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        if text.trim().is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let body = SpeechRequest {
            model: &self.config.model,
            input: text,
            voice: voice
                .filter(|v| !v.trim().is_empty())
                .unwrap_or(&self.config.voice),
            response_format: "pcm",
            instructions: self.config.instructions.as_deref(),
            speed: self.config.speed,
        };
        let request = self
            .client
            .post(format!("{}/audio/speech", self.root))
            .bearer_auth(self.key.expose())
            .json(&body);
        let resp = send_for_stream(NAME, "speech", request, self.first_byte_timeout).await?;
        Ok(pcm_stream(
            NAME,
            "speech",
            resp,
            OPENAI_PCM_RATE,
            self.limits,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_get_v1_once() {
        assert_eq!(
            api_root("https://api.openai.com").ok().as_deref(),
            Some("https://api.openai.com/v1")
        );
        assert_eq!(
            api_root("http://127.0.0.1:9/v1/").ok().as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
    }

    #[test]
    fn multipart_is_well_formed() {
        let mut m = Multipart::new();
        m.text("model", "whisper-1");
        m.file("file", "a.wav", "audio/wav", b"RIFF");
        let (ct, body) = m.finish();
        let boundary = ct
            .rsplit_once("boundary=")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert!(text.contains(
            "name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n"
        ));
    }

    #[test]
    fn transcription_answers_parse_or_fail_cleanly() {
        assert_eq!(
            parse_transcription(br#"{"text":" hi there ","usage":{"type":"tokens"}}"#)
                .map(|t| t.text),
            Ok("hi there".to_owned())
        );
        let err = parse_transcription(b"<html>oops</html>").err();
        assert!(err.is_some_and(|e| !e.message.contains("oops")));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Any answer body gives a transcript or a failure that quotes none of it.
        #[test]
        fn transcription_answers_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            match parse_transcription(&body) {
                Ok(t) => proptest::prop_assert!(t.is_final),
                Err(f) => proptest::prop_assert_eq!(f.message, "transcriptions: unreadable answer"),
            }
        }
    }
}
