//! Deepgram speech-to-text: live recognition over Deepgram's WebSocket
//! `/v1/listen` (interim and final results while audio streams), and whole
//! utterances through the pre-recorded REST `/v1/listen`.
//!
//! The live socket is opened with `encoding=linear16`, the session's sample
//! rate, one channel, `interim_results=true`, the model and the other
//! options as query parameters, and `Authorization: Token <key>`. Audio goes
//! up as binary frames of little-endian PCM; `{"type":"KeepAlive"}` is sent
//! whenever no audio went up for `keepalive_ms` (Deepgram closes an idle
//! socket after about ten seconds); [`SttAudio::Finalize`] sends
//! `{"type":"Finalize"}`, and dropping the session's audio sender sends
//! `{"type":"CloseStream"}`.
//!
//! **One final per turn.** Deepgram settles a turn in pieces (`is_final`
//! segments, several per long utterance). The session gathers them and, like
//! every other provider's session, delivers exactly one final
//! [`Transcript`] per [`SttAudio::Finalize`]: the settled segments joined,
//! once Deepgram answers the Finalize (`from_finalize: true`). Meanwhile each
//! `Results` message yields an interim transcript of everything heard so far
//! in the turn (settled segments plus the current guess). The turn detector,
//! not Deepgram's `speech_final`, decides when a turn ends.
//!
//! Faults: a refused handshake is fatal for 401/403 and other 4xx, retryable
//! for 5xx and 429; a socket that closes or errors mid-call, or a Finalize
//! that gets no message at all within `finalize_timeout_ms`, ends the
//! session with a retryable [`ProviderFailure`]. Unreadable messages are
//! logged and skipped.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{Secret, base_url, http_client, pcm_bytes, positive_ms, read_capped, wav_bytes};
use crate::error::{ProviderFailure, VoiceError};
use crate::stt::{SESSION_QUEUE, SttAudio, SttProvider, SttSession, Transcript};

/// Deepgram's API root.
pub const DEEPGRAM_BASE_URL: &str = "https://api.deepgram.com";
/// The provider's name in failures and logs.
const NAME: &str = "deepgram";
/// The largest message accepted from the socket, and the largest REST answer.
const MAX_MESSAGE: usize = 1024 * 1024;
/// How long a closing session waits for Deepgram's last messages.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Settings of the Deepgram provider (`stt.provider = "deepgram"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeepgramConfig {
    /// The environment variable holding the API key (default `DEEPGRAM_API_KEY`).
    pub api_key_env: String,
    /// API root (default `https://api.deepgram.com`); the live socket uses
    /// the same host with `wss://` (`ws://` for an `http://` root).
    pub base_url: String,
    /// Model (default `nova-3`).
    pub model: String,
    /// Language code (`en-US`, `fr`, `multi`, ...); Deepgram's default when unset.
    pub language: Option<String>,
    /// Sample rate the call sends audio at (default 16000; 8000 to 48000).
    pub sample_rate: u32,
    /// Punctuation and capitals (default true).
    pub punctuate: bool,
    /// Deepgram's `smart_format` (numbers, dates; default false).
    pub smart_format: bool,
    /// Deepgram's own end-of-speech silence in ms (`endpointing`); unset
    /// leaves Deepgram's default. Turns still end on the call's Finalize.
    pub endpointing_ms: Option<u32>,
    /// Send a KeepAlive after this long without audio (default 4000 ms).
    pub keepalive_ms: u64,
    /// Longest wait for the socket or an HTTP connection (default 10000 ms).
    pub connect_timeout_ms: u64,
    /// Longest wait for any answer to a Finalize (default 5000 ms).
    pub finalize_timeout_ms: u64,
    /// Longest wait for each read of a whole-utterance request, and for
    /// each write to the socket (default 30000 ms).
    pub request_timeout_ms: u64,
}

impl Default for DeepgramConfig {
    fn default() -> Self {
        Self {
            api_key_env: "DEEPGRAM_API_KEY".to_owned(),
            base_url: DEEPGRAM_BASE_URL.to_owned(),
            model: "nova-3".to_owned(),
            language: None,
            sample_rate: 16_000,
            punctuate: true,
            smart_format: false,
            endpointing_ms: None,
            keepalive_ms: 4_000,
            connect_timeout_ms: 10_000,
            finalize_timeout_ms: 5_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// The Deepgram speech-to-text provider.
#[derive(Debug)]
pub struct DeepgramStt {
    key: Secret,
    http_base: String,
    ws_base: String,
    config: DeepgramConfig,
    keepalive: Duration,
    connect_timeout: Duration,
    finalize_timeout: Duration,
    request_timeout: Duration,
    client: reqwest::Client,
    /// TLS settings of `wss://` sockets, made at the first one (the
    /// system's root certificates are read once, not per call).
    tls: OnceLock<Option<Arc<rustls::ClientConfig>>>,
}

/// TLS settings with the system's root certificates and ring, or `None`
/// when no root certificate could be loaded.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        tracing::warn!(target: "roomkit.voice.vendor", provider = NAME, "no root certificates found");
        return None;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Some(Arc::new(config))
}

impl DeepgramStt {
    /// Builds the provider, reading the key from `config.api_key_env` now.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for an unset key variable or a bad value.
    pub fn from_config(config: &DeepgramConfig) -> Result<Self, VoiceError> {
        let key = Secret::from_env(&config.api_key_env)?;
        Self::new(key, config)
    }

    /// Builds the provider with a key in hand.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for a bad value.
    pub fn new(key: Secret, config: &DeepgramConfig) -> Result<Self, VoiceError> {
        key.check_header_safe()?;
        let http_base = base_url(&config.base_url)?;
        let ws_base = if let Some(rest) = http_base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            format!("ws://{}", http_base.trim_start_matches("http://"))
        };
        if config.model.trim().is_empty() {
            return Err(VoiceError::Config("model: must not be empty".into()));
        }
        if !(8_000..=48_000).contains(&config.sample_rate) {
            return Err(VoiceError::Config(
                "sample_rate: must be between 8000 and 48000".into(),
            ));
        }
        let connect_timeout = positive_ms("connect_timeout_ms", config.connect_timeout_ms)?;
        Ok(Self {
            key,
            http_base,
            ws_base,
            keepalive: positive_ms("keepalive_ms", config.keepalive_ms)?,
            finalize_timeout: positive_ms("finalize_timeout_ms", config.finalize_timeout_ms)?,
            request_timeout: positive_ms("request_timeout_ms", config.request_timeout_ms)?,
            client: http_client(connect_timeout)?,
            connect_timeout,
            config: config.clone(),
            tls: OnceLock::new(),
        })
    }

    /// The TLS connector for a `wss://` root; `None` for `ws://`.
    fn connector(&self) -> Result<Option<tokio_tungstenite::Connector>, ProviderFailure> {
        if !self.ws_base.starts_with("wss://") {
            return Ok(None);
        }
        match self.tls.get_or_init(tls_config) {
            Some(config) => Ok(Some(tokio_tungstenite::Connector::Rustls(config.clone()))),
            None => Err(ProviderFailure::fatal(
                NAME,
                "live: no root certificates to check the server with",
            )),
        }
    }

    /// The query string of a request: the audio description (live only),
    /// then the recognition options.
    fn query(&self, sample_rate: Option<u32>) -> String {
        let mut q = Vec::new();
        if let Some(rate) = sample_rate {
            q.push("encoding=linear16".to_owned());
            q.push(format!("sample_rate={rate}"));
            q.push("channels=1".to_owned());
            q.push("interim_results=true".to_owned());
        }
        q.push(format!("model={}", encode(&self.config.model)));
        q.push(format!("punctuate={}", self.config.punctuate));
        if self.config.smart_format {
            q.push("smart_format=true".to_owned());
        }
        if let Some(lang) = &self.config.language {
            q.push(format!("language={}", encode(lang)));
        }
        if sample_rate.is_some()
            && let Some(ms) = self.config.endpointing_ms
        {
            q.push(format!("endpointing={ms}"));
        }
        q.join("&")
    }

    fn auth_value(&self) -> Result<HeaderValue, ProviderFailure> {
        HeaderValue::from_str(&format!("Token {}", self.key.expose()))
            .map_err(|_| ProviderFailure::fatal(NAME, "the API key is not a valid header value"))
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
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
impl SttProvider for DeepgramStt {
    fn name(&self) -> &str {
        NAME
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        if samples.is_empty() {
            return Ok(Transcript::final_text(""));
        }
        let url = format!("{}/v1/listen?{}", self.http_base, self.query(None));
        let send = self
            .client
            .post(url)
            .header(reqwest::header::AUTHORIZATION, self.auth_value()?)
            .header(reqwest::header::CONTENT_TYPE, "audio/wav")
            .body(wav_bytes(samples, sample_rate))
            .send();
        let resp = match tokio::time::timeout(self.request_timeout, send).await {
            Err(_) => return Err(ProviderFailure::retryable(NAME, "listen: timed out")),
            Ok(Err(e)) => return Err(super::transport_failure(NAME, "listen", &e)),
            Ok(Ok(r)) => r,
        };
        if !resp.status().is_success() {
            return Err(super::status_failure(NAME, "listen", resp, self.request_timeout).await);
        }
        let body = read_capped(NAME, "listen", resp, self.request_timeout, MAX_MESSAGE).await?;
        parse_prerecorded(&body)
    }

    async fn open_session(
        self: Arc<Self>,
        sample_rate: u32,
    ) -> Result<SttSession, ProviderFailure> {
        let url = format!(
            "{}/v1/listen?{}",
            self.ws_base,
            self.query(Some(sample_rate))
        );
        let mut request = url
            .into_client_request()
            .map_err(|_| ProviderFailure::fatal(NAME, "the live URL is not valid"))?;
        request
            .headers_mut()
            .insert("authorization", self.auth_value()?);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            self.connector()?,
        );
        let socket = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(ProviderFailure::retryable(
                    NAME,
                    "live: connecting timed out",
                ));
            }
            Ok(Err(e)) => return Err(handshake_failure(&e)),
            Ok(Ok((socket, _))) => socket,
        };
        tracing::debug!(target: "roomkit.voice.vendor", provider = NAME, sample_rate, "live session open");
        let (audio_tx, audio_rx) = mpsc::channel(SESSION_QUEUE);
        let (result_tx, result_rx) = mpsc::channel(SESSION_QUEUE);
        let live = Live {
            keepalive: self.keepalive,
            finalize_timeout: self.finalize_timeout,
            write_timeout: self.request_timeout,
            turn: Turn::default(),
            finalize_deadline: None,
            unanswered: std::collections::VecDeque::new(),
            heard_since_finalize: false,
            audio_since_finalize: false,
            last_send: Instant::now(),
            last_preview: String::new(),
            results: result_tx,
        };
        tokio::spawn(live.run(socket, audio_rx));
        Ok(SttSession {
            audio: audio_tx,
            results: result_rx,
        })
    }
}

/// The failure for a refused or failed WebSocket handshake.
fn handshake_failure(e: &tokio_tungstenite::tungstenite::Error) -> ProviderFailure {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            tracing::warn!(target: "roomkit.voice.vendor", provider = NAME, status, "live handshake refused");
            let message = format!("live: HTTP {status}");
            if status == 408 || status == 429 || status >= 500 {
                ProviderFailure::retryable(NAME, message)
            } else {
                ProviderFailure::fatal(NAME, message)
            }
        }
        other => {
            tracing::warn!(target: "roomkit.voice.vendor", provider = NAME, error = %other, "live connection failed");
            ProviderFailure::retryable(NAME, "live: could not connect")
        }
    }
}

/// A `Results` piece of the current turn.
#[derive(Debug, Clone, Default)]
struct Segment {
    text: String,
    confidence: Option<f32>,
    language: Option<String>,
    start_ms: u64,
    end_ms: u64,
}

/// The current turn of a live session: settled segments and the latest
/// guess, fed by [`apply_message`].
#[derive(Debug, Default)]
pub struct Turn {
    settled: Vec<Segment>,
    guess: Option<Segment>,
}

impl Turn {
    /// Settled text plus the guess, as an interim transcript.
    pub fn preview(&self) -> Option<Transcript> {
        let parts: Vec<&Segment> = self.settled.iter().chain(self.guess.as_ref()).collect();
        joined(&parts, false)
    }

    /// The settled text as the turn's final transcript, and a fresh turn.
    pub fn take_final(&mut self) -> Option<Transcript> {
        let settled = std::mem::take(&mut self.settled);
        self.guess = None;
        let parts: Vec<&Segment> = settled.iter().collect();
        joined(&parts, true)
    }
}

fn joined(parts: &[&Segment], is_final: bool) -> Option<Transcript> {
    let texts: Vec<&str> = parts
        .iter()
        .map(|s| s.text.as_str())
        .filter(|t| !t.is_empty())
        .collect();
    if texts.is_empty() {
        return None;
    }
    let confidences: Vec<f32> = parts.iter().filter_map(|s| s.confidence).collect();
    #[allow(clippy::cast_precision_loss)]
    let confidence = (!confidences.is_empty())
        .then(|| confidences.iter().sum::<f32>() / confidences.len() as f32);
    Some(Transcript {
        text: texts.join(" "),
        is_final,
        confidence,
        language: parts.iter().find_map(|s| s.language.clone()),
        start_ms: parts.first().map(|s| s.start_ms),
        end_ms: parts.last().map(|s| s.end_ms),
    })
}

/// Seconds as whole milliseconds; negative, NaN and absurd values clamp.
fn seconds_to_ms(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        // Saturating float-to-int conversion.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ms = (s * 1000.0).round() as u64;
        ms
    } else {
        0
    }
}

#[derive(Debug, Deserialize)]
struct Kind {
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct LiveResults {
    #[serde(default)]
    channel: ResultChannel,
    #[serde(default)]
    is_final: bool,
    #[serde(default)]
    from_finalize: bool,
    #[serde(default)]
    start: Option<f64>,
    #[serde(default)]
    duration: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct ResultChannel {
    #[serde(default)]
    alternatives: Vec<Alternative>,
    #[serde(default)]
    detected_language: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Alternative {
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    confidence: Option<f64>,
    #[serde(default)]
    languages: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Prerecorded {
    results: PrerecordedResults,
}

#[derive(Debug, Deserialize)]
struct PrerecordedResults {
    #[serde(default)]
    channels: Vec<ResultChannel>,
}

#[allow(clippy::cast_possible_truncation)]
fn confidence_of(c: Option<f64>) -> Option<f32> {
    c.filter(|c| c.is_finite())
        .map(|c| c.clamp(0.0, 1.0) as f32)
}

/// Reads a pre-recorded answer (`results.channels[0].alternatives[0]`).
///
/// # Errors
/// A retryable [`ProviderFailure`] for a body that is not such an answer
/// (the body is not quoted).
pub fn parse_prerecorded(body: &[u8]) -> Result<Transcript, ProviderFailure> {
    let parsed: Prerecorded = serde_json::from_slice(body)
        .map_err(|_| ProviderFailure::retryable(NAME, "listen: unreadable answer"))?;
    let channel = parsed
        .results
        .channels
        .into_iter()
        .next()
        .unwrap_or_default();
    let alt = channel.alternatives.into_iter().next().unwrap_or_default();
    Ok(Transcript {
        text: alt.transcript.trim().to_owned(),
        is_final: true,
        confidence: confidence_of(alt.confidence),
        language: channel
            .detected_language
            .or_else(|| alt.languages.into_iter().next()),
        start_ms: None,
        end_ms: None,
    })
}

/// What one text message from the live socket means for the session.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Results: a segment (settled or a guess), and whether it answers a Finalize.
    Results {
        /// The segment is settled (`is_final`).
        is_final: bool,
        /// It answers a Finalize (`from_finalize`).
        from_finalize: bool,
    },
    /// Anything else Deepgram sends (Metadata, SpeechStarted, UtteranceEnd).
    Other,
    /// An error message from Deepgram.
    Error,
    /// Not a message we can read.
    Unreadable,
}

/// Applies one text message of the live socket to the turn.
pub fn apply_message(turn: &mut Turn, text: &str) -> Event {
    let Ok(kind) = serde_json::from_str::<Kind>(text) else {
        return Event::Unreadable;
    };
    match kind.kind.as_str() {
        "Results" => {
            let Ok(r) = serde_json::from_str::<LiveResults>(text) else {
                return Event::Unreadable;
            };
            let language = r.channel.detected_language.clone();
            let alt = r
                .channel
                .alternatives
                .into_iter()
                .next()
                .unwrap_or_default();
            let start_ms = seconds_to_ms(r.start.unwrap_or(0.0));
            let segment = Segment {
                text: alt.transcript.trim().to_owned(),
                confidence: confidence_of(alt.confidence),
                language: language.or_else(|| alt.languages.into_iter().next()),
                start_ms,
                end_ms: start_ms.saturating_add(seconds_to_ms(r.duration.unwrap_or(0.0))),
            };
            if r.is_final {
                turn.guess = None;
                if !segment.text.is_empty() {
                    turn.settled.push(segment);
                }
            } else {
                turn.guess = (!segment.text.is_empty()).then_some(segment);
            }
            Event::Results {
                is_final: r.is_final,
                from_finalize: r.from_finalize,
            }
        }
        "Error" => Event::Error,
        _ => Event::Other,
    }
}

/// The live session's task state.
struct Live {
    keepalive: Duration,
    finalize_timeout: Duration,
    write_timeout: Duration,
    turn: Turn,
    finalize_deadline: Option<Instant>,
    /// Finalizes not answered yet, oldest first: `true` for one sent with
    /// no new audio (answered at once when its turn comes, Deepgram is
    /// not asked), `false` for one Deepgram was asked to answer.
    unanswered: std::collections::VecDeque<bool>,
    heard_since_finalize: bool,
    audio_since_finalize: bool,
    last_send: Instant,
    /// The text of the last interim result sent, so repeats are not sent.
    last_preview: String,
    results: mpsc::Sender<Result<Transcript, ProviderFailure>>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a step of the session loop ended.
enum Step {
    Continue,
    Stop,
}

impl Live {
    async fn run(mut self, socket: Socket, mut audio: mpsc::Receiver<SttAudio>) {
        let (mut sink, mut stream) = socket.split();
        loop {
            let next_keepalive = self.last_send + self.keepalive;
            let wake = self
                .finalize_deadline
                .map_or(next_keepalive, |d| d.min(next_keepalive));
            let step = tokio::select! {
                message = audio.recv() => match message {
                    Some(SttAudio::Samples(samples)) => {
                        if samples.is_empty() {
                            Step::Continue
                        } else {
                            self.audio_since_finalize = true;
                            self.send(&mut sink, Message::Binary(pcm_bytes(&samples).into())).await
                        }
                    }
                    Some(SttAudio::Finalize) => self.finalize(&mut sink).await,
                    None => {
                        self.close(&mut sink, &mut stream).await;
                        Step::Stop
                    }
                },
                frame = stream.next() => self.on_frame(frame).await,
                () = tokio::time::sleep_until(wake) => self.on_timer(&mut sink).await,
                () = self.results.closed() => {
                    self.close(&mut sink, &mut stream).await;
                    Step::Stop
                }
            };
            if matches!(step, Step::Stop) {
                return;
            }
        }
    }

    async fn send<S>(&mut self, sink: &mut S, message: Message) -> Step
    where
        S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        match tokio::time::timeout(self.write_timeout, sink.send(message)).await {
            Ok(Ok(())) => {
                self.last_send = Instant::now();
                Step::Continue
            }
            Ok(Err(_)) => {
                self.fail(ProviderFailure::retryable(
                    NAME,
                    "live: the connection was lost",
                ))
                .await
            }
            Err(_) => {
                self.fail(ProviderFailure::retryable(
                    NAME,
                    "live: sending audio stalled",
                ))
                .await
            }
        }
    }

    async fn finalize<S>(&mut self, sink: &mut S) -> Step
    where
        S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        if !self.audio_since_finalize {
            // Nothing new went up: Deepgram may not answer; settle now, or
            // right after the answers still awaited (answers stay in order).
            self.unanswered.push_back(true);
            return self.answer_settled().await;
        }
        self.unanswered.push_back(false);
        self.audio_since_finalize = false;
        self.heard_since_finalize = false;
        self.finalize_deadline = Some(Instant::now() + self.finalize_timeout);
        self.send(sink, Message::Text(r#"{"type":"Finalize"}"#.into()))
            .await
    }

    /// Answers the Finalizes at the front that need no answer from
    /// Deepgram.
    async fn answer_settled(&mut self) -> Step {
        while self.unanswered.front() == Some(&true) {
            self.unanswered.pop_front();
            if let Step::Stop = self.send_final().await {
                return Step::Stop;
            }
        }
        Step::Continue
    }

    /// Sends the turn's one final result (empty text when nothing was
    /// heard: every Finalize gets its answer).
    async fn send_final(&mut self) -> Step {
        self.last_preview.clear();
        let t = self
            .turn
            .take_final()
            .unwrap_or_else(|| Transcript::final_text(""));
        if self.results.send(Ok(t)).await.is_err() {
            return Step::Stop;
        }
        Step::Continue
    }

    /// Deepgram answered (or the timer settled) the oldest Finalize it
    /// was asked: its final, then those of the empty turns queued behind
    /// it. An answer nobody asked for (a late one, after the timer settled
    /// the turn) is ignored; what it settled goes to the next turn.
    async fn deliver_final(&mut self) -> Step {
        if self.unanswered.pop_front().is_none() {
            self.finalize_deadline = None;
            return Step::Continue;
        }
        if let Step::Stop = self.send_final().await {
            return Step::Stop;
        }
        if let Step::Stop = self.answer_settled().await {
            return Step::Stop;
        }
        self.finalize_deadline =
            (!self.unanswered.is_empty()).then(|| Instant::now() + self.finalize_timeout);
        Step::Continue
    }

    async fn on_timer<S>(&mut self, sink: &mut S) -> Step
    where
        S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
    {
        let now = Instant::now();
        if let Some(deadline) = self.finalize_deadline
            && now >= deadline
        {
            if !self.heard_since_finalize {
                return self
                    .fail(ProviderFailure::retryable(
                        NAME,
                        format!(
                            "live: no answer to Finalize within {} ms",
                            self.finalize_timeout.as_millis()
                        ),
                    ))
                    .await;
            }
            // Deepgram is alive but did not mark an answer: settle what it said.
            if let Step::Stop = self.deliver_final().await {
                return Step::Stop;
            }
        }
        if now >= self.last_send + self.keepalive {
            return self
                .send(sink, Message::Text(r#"{"type":"KeepAlive"}"#.into()))
                .await;
        }
        Step::Continue
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Step {
        match frame {
            Some(Ok(Message::Text(text))) => {
                self.heard_since_finalize = true;
                match apply_message(&mut self.turn, text.as_str()) {
                    Event::Results {
                        is_final,
                        from_finalize,
                    } => {
                        if is_final && from_finalize {
                            return self.deliver_final().await;
                        }
                        if let Some(preview) = self.turn.preview()
                            && preview.text != self.last_preview
                        {
                            self.last_preview.clone_from(&preview.text);
                            if self.results.send(Ok(preview)).await.is_err() {
                                return Step::Stop;
                            }
                        }
                        Step::Continue
                    }
                    Event::Other => Step::Continue,
                    Event::Error => {
                        self.fail(ProviderFailure::retryable(
                            NAME,
                            "live: Deepgram reported an error",
                        ))
                        .await
                    }
                    Event::Unreadable => {
                        tracing::warn!(target: "roomkit.voice.vendor", provider = NAME, "skipped an unreadable live message");
                        Step::Continue
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                tracing::warn!(target: "roomkit.voice.vendor", provider = NAME, code, "Deepgram closed the live socket");
                let failure = if code == 1008 {
                    ProviderFailure::fatal(NAME, format!("live: closed by Deepgram (code {code})"))
                } else {
                    ProviderFailure::retryable(
                        NAME,
                        format!("live: closed by Deepgram (code {code})"),
                    )
                };
                self.fail(failure).await
            }
            Some(Ok(_)) => Step::Continue,
            Some(Err(e)) => {
                tracing::warn!(target: "roomkit.voice.vendor", provider = NAME, error = %e, "live socket failed");
                self.fail(ProviderFailure::retryable(
                    NAME,
                    "live: the connection was lost",
                ))
                .await
            }
            None => {
                self.fail(ProviderFailure::retryable(
                    NAME,
                    "live: the connection was closed",
                ))
                .await
            }
        }
    }

    async fn fail(&mut self, failure: ProviderFailure) -> Step {
        let _ = self.results.send(Err(failure)).await;
        Step::Stop
    }

    /// Ends the stream politely: CloseStream, then Deepgram's last messages
    /// (ignored) until it closes or the grace runs out.
    async fn close<S, R>(&mut self, sink: &mut S, stream: &mut R)
    where
        S: futures::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
        R: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if sink
                .send(Message::Text(r#"{"type":"CloseStream"}"#.into()))
                .await
                .is_err()
            {
                return;
            }
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
            let _ = sink.close().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_join_settled_segments_and_preview_guesses() {
        let mut turn = Turn::default();
        let r = |t: &str, f: bool, ff: bool, start: f64| {
            format!(
                r#"{{"type":"Results","start":{start},"duration":1.0,"is_final":{f},"from_finalize":{ff},"channel":{{"alternatives":[{{"transcript":"{t}","confidence":0.5}}]}}}}"#
            )
        };
        assert_eq!(
            apply_message(&mut turn, &r("hello", false, false, 0.0)),
            Event::Results {
                is_final: false,
                from_finalize: false
            }
        );
        assert_eq!(turn.preview().map(|t| t.text).as_deref(), Some("hello"));
        apply_message(&mut turn, &r("hello there", true, false, 0.0));
        apply_message(&mut turn, &r("general", false, false, 1.0));
        let p = turn.preview();
        assert_eq!(
            p.as_ref().map(|t| t.text.as_str()),
            Some("hello there general")
        );
        assert_eq!(p.as_ref().map(|t| t.is_final), Some(false));
        apply_message(&mut turn, &r("general kenobi", true, true, 1.0));
        let f = turn.take_final();
        assert_eq!(
            f.as_ref().map(|t| t.text.as_str()),
            Some("hello there general kenobi")
        );
        assert_eq!(f.as_ref().and_then(|t| t.end_ms), Some(2000));
        assert!(turn.settled.is_empty() && turn.guess.is_none());
        assert_eq!(apply_message(&mut turn, "{"), Event::Unreadable);
        assert_eq!(
            apply_message(&mut turn, r#"{"type":"UtteranceEnd","channel":[0,1]}"#),
            Event::Other
        );
        assert_eq!(
            apply_message(
                &mut turn,
                r#"{"type":"Results","start":-1e309,"duration":"x"}"#
            ),
            Event::Unreadable
        );
    }

    #[test]
    fn tls_is_only_set_up_for_wss() {
        let plain = DeepgramStt::new(
            Secret::new("k"),
            &DeepgramConfig {
                base_url: "http://127.0.0.1:1".into(),
                ..DeepgramConfig::default()
            },
        );
        assert!(plain.is_ok_and(|p| p.connector().is_ok_and(|c| c.is_none())));
        let tls = DeepgramStt::new(Secret::new("k"), &DeepgramConfig::default());
        assert!(tls.is_ok_and(|p| p.ws_base == "wss://api.deepgram.com"));
    }

    #[test]
    fn seconds_clamp() {
        assert_eq!(seconds_to_ms(f64::NAN), 0);
        assert_eq!(seconds_to_ms(-3.0), 0);
        assert_eq!(seconds_to_ms(1e300), u64::MAX);
        assert_eq!(seconds_to_ms(1.2345), 1235);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("nova-3"), "nova-3");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Random text and mutated real messages never panic, and a turn
        /// stays consistent (a final is never an interim).
        #[test]
        fn live_messages_never_panic(
            junk in ".{0,200}",
            transcript in ".{0,40}",
            start in proptest::num::f64::ANY,
            duration in proptest::num::f64::ANY,
            confidence in proptest::num::f64::ANY,
            is_final in proptest::bool::ANY,
            cut in 0usize..400,
        ) {
            let mut turn = Turn::default();
            let _ = apply_message(&mut turn, &junk);
            let real = serde_json::json!({
                "type": "Results", "start": start, "duration": duration, "is_final": is_final,
                "from_finalize": is_final,
                "channel": {"alternatives": [{"transcript": transcript, "confidence": confidence}]},
            })
            .to_string();
            let _ = apply_message(&mut turn, &real);
            let cut_at = (0..=cut.min(real.len())).rev().find(|i| real.is_char_boundary(*i)).unwrap_or(0);
            let _ = apply_message(&mut turn, &real[..cut_at]);
            if let Some(p) = turn.preview() {
                proptest::prop_assert!(!p.is_final);
                proptest::prop_assert!(p.confidence.is_none_or(|c| (0.0..=1.0).contains(&c)));
            }
            if let Some(f) = turn.take_final() {
                proptest::prop_assert!(f.is_final);
            }
            let _ = parse_prerecorded(junk.as_bytes());
            let _ = parse_prerecorded(real.as_bytes());
        }
    }
}
