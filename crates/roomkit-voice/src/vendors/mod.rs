//! Cloud speech vendors (RFC §12.2), one module per vendor behind a cargo
//! feature of the same name, all on by default:
//!
//! | module | feature | speaks | provides |
//! |---|---|---|---|
//! | [`deepgram`] | `deepgram` | live WebSocket `/v1/listen`, REST `/v1/listen` | [`deepgram::DeepgramStt`] (streaming, interim results) |
//! | [`openai`] | `openai` | `/v1/audio/transcriptions`, `/v1/audio/speech` | [`openai::OpenAiStt`] (per utterance), [`openai::OpenAiTts`] (streamed PCM) |
//! | [`elevenlabs`] | `elevenlabs` | `/v1/text-to-speech/{voice}/stream[/with-timestamps]` | [`elevenlabs::ElevenLabsTts`] (streamed PCM, word marks) |
//!
//! [`fallback`] wraps two providers of a kind: the secondary takes over when
//! the primary fails in a way worth retrying.
//!
//! Every vendor is configured by a serde struct (unknown keys refused) whose
//! API key is only *named* (`api_key_env`) and read once when the provider
//! is built, into a redacting [`Secret`]. Every vendor's `base_url` can be
//! changed (proxies, the fake servers of `crate::fake`). The HTTP clients use
//! ring-only rustls, follow no redirects, bound connecting, waiting for the
//! first byte and every later read, and cap what they read. A
//! [`ProviderFailure`] never carries the remote's own body: only the status
//! or the kind of fault, so nothing a vendor (or a proxy) says reaches logs
//! or API callers verbatim.

// Helpers some vendors do not use when built without the others.
#![cfg_attr(
    not(all(feature = "deepgram", feature = "openai", feature = "elevenlabs")),
    allow(dead_code)
)]

use std::fmt;
use std::time::Duration;

use futures::StreamExt;

use crate::error::{ProviderFailure, VoiceError};
use crate::tts::{TtsChunk, TtsStream};

#[cfg(feature = "deepgram")]
pub mod deepgram;
#[cfg(feature = "elevenlabs")]
pub mod elevenlabs;
pub mod fallback;
#[cfg(feature = "openai")]
pub mod openai;

/// Longest error body read (and then thrown away) before a failure is reported.
const ERROR_BODY_CAP: usize = 16 * 1024;

/// A cloud speech-to-text vendor chosen by its `provider` key, with that
/// vendor's settings beside it (unknown keys refused).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
#[non_exhaustive]
pub enum SttVendorConfig {
    /// Deepgram live recognition.
    #[cfg(feature = "deepgram")]
    Deepgram(deepgram::DeepgramConfig),
    /// OpenAI transcription, per utterance.
    #[cfg(feature = "openai")]
    Openai(openai::OpenAiSttConfig),
}

impl SttVendorConfig {
    /// Builds the provider, reading its key variable now.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for an unset key variable or a bad value.
    pub fn build(&self) -> Result<std::sync::Arc<dyn crate::stt::SttProvider>, VoiceError> {
        match self {
            #[cfg(feature = "deepgram")]
            Self::Deepgram(c) => Ok(std::sync::Arc::new(deepgram::DeepgramStt::from_config(c)?)),
            #[cfg(feature = "openai")]
            Self::Openai(c) => Ok(std::sync::Arc::new(openai::OpenAiStt::from_config(c)?)),
            #[allow(unreachable_patterns)]
            _ => Err(VoiceError::Config(
                "provider: not built into this binary".into(),
            )),
        }
    }
}

/// A cloud text-to-speech vendor chosen by its `provider` key, with that
/// vendor's settings beside it (unknown keys refused).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
#[non_exhaustive]
pub enum TtsVendorConfig {
    /// OpenAI speech.
    #[cfg(feature = "openai")]
    Openai(openai::OpenAiTtsConfig),
    /// ElevenLabs streaming speech.
    #[cfg(feature = "elevenlabs")]
    Elevenlabs(elevenlabs::ElevenLabsConfig),
}

impl TtsVendorConfig {
    /// Builds the provider, reading its key variable now.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for an unset key variable or a bad value.
    pub fn build(&self) -> Result<std::sync::Arc<dyn crate::tts::TtsProvider>, VoiceError> {
        match self {
            #[cfg(feature = "openai")]
            Self::Openai(c) => Ok(std::sync::Arc::new(openai::OpenAiTts::from_config(c)?)),
            #[cfg(feature = "elevenlabs")]
            Self::Elevenlabs(c) => Ok(std::sync::Arc::new(elevenlabs::ElevenLabsTts::from_config(
                c,
            )?)),
            #[allow(unreachable_patterns)]
            _ => Err(VoiceError::Config(
                "provider: not built into this binary".into(),
            )),
        }
    }
}

/// A secret string (an API key): its value never appears in `Debug` or
/// `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the named environment variable.
    ///
    /// # Errors
    /// [`VoiceError::Config`] naming the variable when it is unset or empty.
    pub fn from_env(name: &str) -> Result<Self, VoiceError> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Self(v.trim().to_owned())),
            _ => Err(VoiceError::Config(format!(
                "api_key_env: environment variable {name} is not set"
            ))),
        }
    }

    /// The value, for authenticating only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Checks that the value can be sent in an HTTP header (visible ASCII),
    /// so a mangled key is a configuration error, not a failing call.
    ///
    /// # Errors
    /// [`VoiceError::Config`], without the value.
    pub fn check_header_safe(&self) -> Result<(), VoiceError> {
        if !self.0.is_empty() && self.0.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            Ok(())
        } else {
            Err(VoiceError::Config(
                "api_key_env: the key is empty or holds characters a header cannot carry".into(),
            ))
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Checks a `base_url` and drops trailing slashes.
pub(crate) fn base_url(value: &str) -> Result<String, VoiceError> {
    let v = value.trim().trim_end_matches('/');
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(v.to_owned()),
        _ => Err(VoiceError::Config(format!(
            "base_url: {value:?} is not an http:// or https:// URL"
        ))),
    }
}

/// A millisecond setting that must be positive.
pub(crate) fn positive_ms(key: &str, ms: u64) -> Result<Duration, VoiceError> {
    if ms == 0 {
        return Err(VoiceError::Config(format!("{key}: must be at least 1 ms")));
    }
    Ok(Duration::from_millis(ms))
}

/// An HTTP client for one provider: ring-only rustls, no redirects, a
/// bounded connect. Reads are bounded by the callers (per read, so long
/// streamed answers are not cut).
pub(crate) fn http_client(connect_timeout: Duration) -> Result<reqwest::Client, VoiceError> {
    // reqwest is built without a TLS provider of its own; use ring unless
    // the process already chose one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| VoiceError::Config(format!("cannot build an HTTP client: {e}")))
}

/// The failure for a transport error: retryable, worded without the
/// remote's answer (reqwest's texts name only the URL and the fault).
pub(crate) fn transport_failure(
    provider: &str,
    operation: &str,
    e: &reqwest::Error,
) -> ProviderFailure {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    };
    tracing::warn!(target: "roomkit.voice.vendor", provider, operation, error = %e, "request failed");
    ProviderFailure::retryable(provider, format!("{operation}: {kind}"))
}

/// The failure for an HTTP error status. 408, 429 and 5xx are retryable;
/// other statuses (a bad key, a refused request) are not. The body is read
/// (bounded) and dropped, never quoted.
pub(crate) async fn status_failure(
    provider: &str,
    operation: &str,
    mut resp: reqwest::Response,
    read_timeout: Duration,
) -> ProviderFailure {
    let status = resp.status().as_u16();
    // Drain a little of the body so the connection can be reused; ignore it.
    let _ = tokio::time::timeout(read_timeout, async {
        let mut n = 0usize;
        while let Ok(Some(chunk)) = resp.chunk().await {
            n += chunk.len();
            if n > ERROR_BODY_CAP {
                break;
            }
        }
    })
    .await;
    tracing::warn!(target: "roomkit.voice.vendor", provider, operation, status, "vendor answered an error status");
    let message = format!("{operation}: HTTP {status}");
    if status == 408 || status == 429 || status >= 500 {
        ProviderFailure::retryable(provider, message)
    } else {
        ProviderFailure::fatal(provider, message)
    }
}

/// Reads a whole (small) answer body, each read bounded by `read_timeout`
/// and the total by `cap` bytes.
pub(crate) async fn read_capped(
    provider: &str,
    operation: &str,
    mut resp: reqwest::Response,
    read_timeout: Duration,
    cap: usize,
) -> Result<Vec<u8>, ProviderFailure> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(read_timeout, resp.chunk()).await {
            Err(_) => {
                return Err(ProviderFailure::retryable(
                    provider,
                    format!("{operation}: the answer stalled"),
                ));
            }
            Ok(Err(e)) => return Err(transport_failure(provider, operation, &e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > cap {
                    return Err(ProviderFailure::fatal(
                        provider,
                        format!("{operation}: the answer is larger than {cap} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// Limits of one streamed synthesis.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    /// Longest wait for each read of the body.
    pub stall: Duration,
    /// Most audio bytes accepted.
    pub max_bytes: usize,
}

/// Waits for an answer's headers within `timeout`, and turns error statuses
/// into failures.
pub(crate) async fn send_for_stream(
    provider: &str,
    operation: &str,
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderFailure> {
    let resp = match tokio::time::timeout(timeout, request.send()).await {
        Err(_) => {
            return Err(ProviderFailure::retryable(
                provider,
                format!("{operation}: no answer within {} ms", timeout.as_millis()),
            ));
        }
        Ok(Err(e)) => return Err(transport_failure(provider, operation, &e)),
        Ok(Ok(r)) => r,
    };
    if !resp.status().is_success() {
        return Err(status_failure(provider, operation, resp, timeout).await);
    }
    Ok(resp)
}

/// A raw PCM answer body as a [`TtsStream`]: each network chunk becomes a
/// [`TtsChunk`] as it arrives (a half sample waits for the next chunk). A
/// read that stalls past `limits.stall`, a broken body or too much audio
/// ends the stream with one failure.
pub(crate) fn pcm_stream(
    provider: &'static str,
    operation: &'static str,
    resp: reqwest::Response,
    sample_rate: u32,
    limits: StreamLimits,
) -> TtsStream {
    struct State {
        resp: Option<reqwest::Response>,
        pcm: PcmAssembler,
        bytes: usize,
    }
    let state = State {
        resp: Some(resp),
        pcm: PcmAssembler::new(),
        bytes: 0,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            let resp = st.resp.as_mut()?;
            let failure = match tokio::time::timeout(limits.stall, resp.chunk()).await {
                Err(_) => ProviderFailure::retryable(
                    provider,
                    format!(
                        "{operation}: the audio stalled for {} ms",
                        limits.stall.as_millis()
                    ),
                ),
                Ok(Err(e)) => transport_failure(provider, operation, &e),
                Ok(Ok(None)) => return None,
                Ok(Ok(Some(bytes))) => {
                    st.bytes = st.bytes.saturating_add(bytes.len());
                    if st.bytes > limits.max_bytes {
                        ProviderFailure::fatal(
                            provider,
                            format!("{operation}: more than {} bytes of audio", limits.max_bytes),
                        )
                    } else {
                        let samples = st.pcm.push(&bytes);
                        if samples.is_empty() {
                            continue;
                        }
                        let chunk = TtsChunk {
                            samples,
                            sample_rate,
                            marks: Vec::new(),
                        };
                        return Some((Ok(chunk), st));
                    }
                }
            };
            st.resp = None;
            return Some((Err(failure), st));
        }
    })
    .boxed()
}

/// A 16-bit mono PCM WAV file (a 44-byte header, then the samples).
pub fn wav_bytes(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = u32::try_from(samples.len().saturating_mul(2)).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&sample_rate.saturating_mul(2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Little-endian bytes of 16-bit samples.
pub(crate) fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Turns a byte stream of 16-bit little-endian PCM into samples, keeping an
/// odd trailing byte for the next piece (network chunks need not fall on
/// sample boundaries).
#[derive(Debug, Default)]
pub struct PcmAssembler {
    carry: Option<u8>,
}

impl PcmAssembler {
    /// A fresh assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole samples `bytes` completes.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<i16> {
        let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut rest = bytes;
        if let Some(lo) = self.carry.take() {
            match rest.split_first() {
                Some((hi, tail)) => {
                    out.push(i16::from_le_bytes([lo, *hi]));
                    rest = tail;
                }
                None => {
                    self.carry = Some(lo);
                    return out;
                }
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            out.push(i16::from_le_bytes([p[0], p[1]]));
        }
        if let [last] = pairs.remainder() {
            self.carry = Some(*last);
        }
        out
    }

    /// Whether a half sample is left over (the stream ended mid-sample).
    pub fn has_partial(&self) -> bool {
        self.carry.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(feature = "deepgram", feature = "openai", feature = "elevenlabs"))]
    #[test]
    fn vendor_configs_are_tagged_by_provider() {
        let stt: SttVendorConfig = serde_json::from_str(
            r#"{"provider":"deepgram","model":"nova-2","api_key_env":"X_DG"}"#,
        )
        .expect("parses");
        assert!(
            matches!(&stt, SttVendorConfig::Deepgram(c) if c.model == "nova-2" && c.sample_rate == 16_000)
        );
        let err = stt.build().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("X_DG"), "{err}");
        let tts: TtsVendorConfig =
            serde_json::from_str(r#"{"provider":"elevenlabs","voice_id":"v","timestamps":true}"#)
                .expect("parses");
        assert!(matches!(tts, TtsVendorConfig::Elevenlabs(ref c) if c.timestamps));
        assert!(
            serde_json::from_str::<TtsVendorConfig>(r#"{"provider":"openai","voize":"x"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<SttVendorConfig>(r#"{"provider":"acme"}"#).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("sk-123");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "sk-123");
        assert!(Secret::from_env("ROOMKIT_VOICE_SURELY_UNSET").is_err());
        assert!(s.check_header_safe().is_ok());
        for bad in ["", "a b", "line\nbreak", "é"] {
            let e = Secret::new(bad)
                .check_header_safe()
                .err()
                .map(|e| e.to_string());
            assert!(
                e.is_some_and(|e| !e.contains(bad) || bad.is_empty()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn odd_chunks_make_whole_samples() {
        let samples: Vec<i16> = vec![1, -2, 300, -32768, 32767, 0, 77];
        let bytes = pcm_bytes(&samples);
        for cut in [1usize, 3, 5, 7] {
            let mut a = PcmAssembler::new();
            let mut got = Vec::new();
            for piece in bytes.chunks(cut) {
                got.extend(a.push(piece));
            }
            assert_eq!(got, samples, "chunks of {cut}");
            assert!(!a.has_partial());
        }
    }

    #[test]
    fn wav_header_is_consistent() {
        let w = wav_bytes(&[1, 2, 3], 16_000);
        assert_eq!(w.len(), 44 + 6);
        assert_eq!(&w[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([w[40], w[41], w[42], w[43]]), 6);
        assert_eq!(u32::from_le_bytes([w[24], w[25], w[26], w[27]]), 16_000);
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            base_url("http://127.0.0.1:9/").ok().as_deref(),
            Some("http://127.0.0.1:9")
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://").is_err());
    }
}
