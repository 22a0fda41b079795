//! Twilio Media Streams as a [`VoiceBackend`]: the bidirectional media
//! WebSocket of a `<Connect><Stream>` call, the TwiML that starts it, and the
//! signature check of the voice webhook that asks for that TwiML.
//!
//! In: `connected`, `start` (stream and call ids, custom parameters, media
//! format), `media` (base64 G.711 mu-law at 8 kHz), `mark`, `dtmf`, `stop`.
//! Out: `media`, `mark`, `clear`. An unreadable message is logged, counted
//! in [`TransportStats::bad_messages`] and skipped; it never ends the call.
//!
//! Stream tokens: the signed voice webhook adds a `token` `<Parameter>` to
//! the stream, an HMAC-SHA256 over the call SID, the channel, an expiry and
//! every other parameter it passes (see [`StreamTokens`]). A transport made
//! with [`TwilioMediaStreams::with_stream_tokens`] checks it on `start` and
//! closes the socket, with no call, when it is missing, expired or wrong.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use roomkit_audio::AudioFormat;
use roomkit_audio::codec::{G711, G711Law};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::backend::{
    BackendEvent, Call, CallInfo, EVENT_QUEUE, MediaMessage, MediaSocket, OUTBOUND_QUEUE, Outbound,
    TransportStats, VoiceBackend, VoiceCapabilities, dtmf_digit,
};
use crate::error::VoiceError;

/// The transport's name.
pub const TRANSPORT: &str = "twilio";

/// Twilio streams 8 kHz audio.
pub const SAMPLE_RATE: u32 = 8_000;

/// How long a socket may take to send `start`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message accepted on the media socket (a 20 ms frame is ~250
/// bytes; Twilio never sends more than a few kilobytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A message Twilio sends on the media socket.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TwilioInbound {
    /// The socket is open.
    Connected {
        /// Protocol name.
        #[serde(default)]
        protocol: Option<String>,
    },
    /// The stream started.
    Start {
        /// Stream id.
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
        /// Details.
        start: StartBody,
    },
    /// Caller audio.
    Media {
        /// Stream id.
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
        /// The audio.
        media: MediaBody,
    },
    /// A mark we sent was reached.
    Mark {
        /// Stream id.
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
        /// The mark.
        mark: MarkBody,
    },
    /// A key press.
    Dtmf {
        /// Stream id.
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
        /// The digit.
        dtmf: DtmfBody,
    },
    /// The stream ended.
    Stop {
        /// Stream id.
        #[serde(rename = "streamSid", default)]
        stream_sid: Option<String>,
    },
}

/// The `start` message's body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartBody {
    /// Stream id.
    pub stream_sid: String,
    /// Call id.
    pub call_sid: String,
    /// Account id.
    #[serde(default)]
    pub account_sid: Option<String>,
    /// Tracks streamed.
    #[serde(default)]
    pub tracks: Vec<String>,
    /// `<Parameter>`s of the TwiML.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
    /// The audio format.
    #[serde(default)]
    pub media_format: Option<MediaFormat>,
}

/// The media format announced in `start`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw`.
    pub encoding: String,
    /// 8000.
    pub sample_rate: u32,
    /// 1.
    pub channels: u16,
}

/// The `media` message's body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MediaBody {
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub track: Option<String>,
    /// Milliseconds since the stream started, as a string.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Base64 mu-law bytes.
    pub payload: String,
}

/// A mark's body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MarkBody {
    /// The mark's name.
    pub name: String,
}

/// A DTMF message's body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DtmfBody {
    /// The digit.
    pub digit: String,
}

/// The `<Parameter>` that carries a call's stream token.
pub const TOKEN_PARAMETER: &str = "token";

/// How long a stream token stays good after the webhook issued it: Twilio
/// opens the media socket within seconds of the TwiML answer.
pub const STREAM_TOKEN_TTL: Duration = Duration::from_secs(300);

/// Why a `start` message's stream token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamTokenError {
    /// No `token` parameter.
    #[error("the stream has no token parameter")]
    Missing,
    /// Not `<expiry>.<hex>`.
    #[error("the stream token is malformed")]
    Malformed,
    /// Past its expiry.
    #[error("the stream token expired {0} s ago")]
    Expired(u64),
    /// The MAC does not match the call SID, channel and parameters.
    #[error("the stream token does not match the call")]
    Mismatch,
}

/// Issues and checks the per-call stream tokens of one Twilio voice
/// channel.
///
/// The key is HMAC-SHA256(auth token, `"roomkit twilio stream token v1"`):
/// it is derived from the Twilio auth token, so it survives a restart and
/// is shared by every server with the same token, and it is never the auth
/// token itself. A token is `<expiry unix seconds>.<hex HMAC-SHA256>`; the
/// MAC covers, length-prefixed, the channel id, the call SID, the expiry
/// and every stream parameter but the token (sorted by name), so no
/// parameter can be added, dropped or changed.
#[derive(Clone)]
pub struct StreamTokens {
    key: Option<[u8; 32]>,
    channel_id: String,
    ttl: Duration,
}

impl std::fmt::Debug for StreamTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTokens")
            .field("channel_id", &self.channel_id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl StreamTokens {
    /// Tokens of channel `channel_id`, keyed from `auth_token`. With an empty
    /// auth token every check fails.
    pub fn new(auth_token: &str, channel_id: &str) -> Self {
        let key = if auth_token.is_empty() {
            None
        } else {
            hmac_sha256(auth_token.as_bytes(), &[b"roomkit twilio stream token v1"])
        };
        Self {
            key,
            channel_id: channel_id.to_owned(),
            ttl: STREAM_TOKEN_TTL,
        }
    }

    fn mac(
        &self,
        call_sid: &str,
        expires: u64,
        parameters: &BTreeMap<String, String>,
    ) -> Option<[u8; 32]> {
        let key = self.key?;
        let mut message = Vec::new();
        let mut field = |bytes: &[u8]| {
            message.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            message.extend_from_slice(bytes);
        };
        field(self.channel_id.as_bytes());
        field(call_sid.as_bytes());
        field(expires.to_string().as_bytes());
        for (name, value) in parameters {
            if name != TOKEN_PARAMETER {
                field(name.as_bytes());
                field(value.as_bytes());
            }
        }
        hmac_sha256(&key, &[&message])
    }

    /// The token for call `call_sid` with stream `parameters` (a `token`
    /// among them is ignored), good until `now + ttl` (unix seconds);
    /// `None` without an auth token.
    pub fn issue_at(
        &self,
        call_sid: &str,
        parameters: &BTreeMap<String, String>,
        now: u64,
    ) -> Option<String> {
        let expires = now.saturating_add(self.ttl.as_secs());
        let mac = self.mac(call_sid, expires, parameters)?;
        Some(format!("{expires}.{}", hex(&mac)))
    }

    /// Checks the `token` among `parameters` of a `start` for `call_sid`
    /// at `now` (unix seconds); the comparison is constant-time.
    ///
    /// # Errors
    /// A [`StreamTokenError`] naming what is wrong.
    pub fn verify_at(
        &self,
        call_sid: &str,
        parameters: &BTreeMap<String, String>,
        now: u64,
    ) -> Result<(), StreamTokenError> {
        let token = parameters
            .get(TOKEN_PARAMETER)
            .ok_or(StreamTokenError::Missing)?;
        let (expires, given) = token.split_once('.').ok_or(StreamTokenError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| StreamTokenError::Malformed)?;
        let expected = self
            .mac(call_sid, expires, parameters)
            .ok_or(StreamTokenError::Mismatch)?;
        if !bool::from(hex(&expected).as_bytes().ct_eq(given.as_bytes())) {
            return Err(StreamTokenError::Mismatch);
        }
        if now > expires {
            return Err(StreamTokenError::Expired(now - expires));
        }
        Ok(())
    }

    /// [`Self::issue_at`] now.
    pub fn issue(&self, call_sid: &str, parameters: &BTreeMap<String, String>) -> Option<String> {
        self.issue_at(call_sid, parameters, now_unix())
    }

    /// [`Self::verify_at`] now.
    ///
    /// # Errors
    /// A [`StreamTokenError`] naming what is wrong.
    pub fn verify(
        &self,
        call_sid: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Result<(), StreamTokenError> {
        self.verify_at(call_sid, parameters, now_unix())
    }
}

/// The Twilio Media Streams transport.
///
/// Made with [`Self::new`] it trusts the `start` message's parameters (for
/// tests and callers that check streams otherwise); made with
/// [`Self::with_stream_tokens`] it opens a call only for a `start` whose
/// stream token holds.
#[derive(Debug, Clone, Default)]
pub struct TwilioMediaStreams {
    tokens: Option<StreamTokens>,
    refused: Arc<AtomicU64>,
}

impl TwilioMediaStreams {
    /// The transport, trusting `start` as it comes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport, checking each `start`'s stream token with `tokens`.
    pub fn with_stream_tokens(tokens: StreamTokens) -> Self {
        Self {
            tokens: Some(tokens),
            refused: Arc::default(),
        }
    }

    /// Media sockets closed at `start` for a missing, expired or wrong
    /// stream token.
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The JSON of an outbound command, or `None` for commands Twilio's media
/// socket cannot carry.
pub fn encode_outbound(stream_sid: &str, command: &Outbound) -> Option<String> {
    let value = match command {
        Outbound::Audio(samples) => {
            let g711 = G711::new(G711Law::Mu);
            let bytes: Vec<u8> = samples.iter().map(|&s| g711.encode_sample(s)).collect();
            serde_json::json!({
                "event": "media",
                "streamSid": stream_sid,
                "media": {"payload": base64::engine::general_purpose::STANDARD.encode(bytes)},
            })
        }
        Outbound::Clear => serde_json::json!({"event": "clear", "streamSid": stream_sid}),
        Outbound::Mark(name) => serde_json::json!({
            "event": "mark",
            "streamSid": stream_sid,
            "mark": {"name": name},
        }),
        Outbound::Dtmf { .. }
        | Outbound::HangUp
        | Outbound::Transfer { .. }
        | Outbound::Transcript { .. }
        | Outbound::AgentText(_) => return None,
    };
    Some(value.to_string())
}

/// Decodes a `media` payload (base64 mu-law) to PCM.
///
/// # Errors
/// [`VoiceError::Transport`] for bad base64 or an empty or oversized payload.
pub fn decode_payload(payload: &str) -> Result<Vec<i16>, VoiceError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| VoiceError::Transport(format!("media payload is not base64: {e}")))?;
    if bytes.is_empty() || bytes.len() > MAX_MESSAGE_BYTES {
        return Err(VoiceError::Transport(format!(
            "media payload of {} bytes",
            bytes.len()
        )));
    }
    let g711 = G711::new(G711Law::Mu);
    Ok(bytes.iter().map(|&b| g711.decode_sample(b)).collect())
}

/// Reads one text message of the media socket.
///
/// # Errors
/// [`VoiceError::Transport`] for a message over [`MAX_MESSAGE_BYTES`], or
/// one that is not a Twilio Media Streams message.
pub fn parse(message: &str) -> Result<TwilioInbound, VoiceError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(VoiceError::Transport(format!(
            "message of {} bytes",
            message.len()
        )));
    }
    serde_json::from_str(message)
        .map_err(|e| VoiceError::Transport(format!("unreadable Twilio message: {e}")))
}

fn bad(stats: &TransportStats, error: &VoiceError) {
    TransportStats::bump(&stats.bad_messages);
    tracing::warn!(target: "roomkit.voice.twilio", error = %error, "skipped an unreadable media-socket message");
}

#[async_trait]
impl VoiceBackend for TwilioMediaStreams {
    fn name(&self) -> &str {
        TRANSPORT
    }

    fn capabilities(&self) -> VoiceCapabilities {
        VoiceCapabilities {
            interruption: true,
            dtmf_inband: true,
            dtmf_signaling: true,
            ..VoiceCapabilities::default()
        }
    }

    fn native_format(&self) -> AudioFormat {
        AudioFormat::pcm_mono(SAMPLE_RATE)
    }

    async fn accept(&self, socket: MediaSocket) -> Result<Call, VoiceError> {
        let MediaSocket {
            mut incoming,
            mut outgoing,
        } = socket;
        let stats = Arc::new(TransportStats::default());
        let start = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(message) = incoming.next().await {
                let text = match message? {
                    MediaMessage::Text(t) => t,
                    MediaMessage::Binary(_) => {
                        bad(&stats, &VoiceError::Transport("binary message".into()));
                        continue;
                    }
                    MediaMessage::Close => break,
                };
                match parse(&text) {
                    Ok(TwilioInbound::Start { start, .. }) => return Ok(start),
                    Ok(TwilioInbound::Connected { .. }) => {}
                    Ok(other) => {
                        tracing::debug!(target: "roomkit.voice.twilio", ?other, "message before start ignored");
                    }
                    Err(e) => bad(&stats, &e),
                }
            }
            Err(VoiceError::Transport(
                "the media socket closed before `start`".into(),
            ))
        })
        .await
        .map_err(|_| VoiceError::Transport("no `start` message within 10 s".into()))??;

        if let Some(f) = &start.media_format
            && (f.encoding != "audio/x-mulaw" || f.sample_rate != SAMPLE_RATE || f.channels != 1)
        {
            let _ = outgoing.send(MediaMessage::Close).await;
            return Err(VoiceError::Transport(format!(
                "unsupported media format {} at {} Hz x{}",
                f.encoding, f.sample_rate, f.channels
            )));
        }
        let mut start = start;
        if let Some(tokens) = &self.tokens {
            if let Err(e) = tokens.verify(&start.call_sid, &start.custom_parameters) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "roomkit.voice.twilio",
                    call_sid = %start.call_sid,
                    stream_sid = %start.stream_sid,
                    error = %e,
                    "media socket closed: bad stream token; no call started"
                );
                let _ = outgoing.send(MediaMessage::Close).await;
                return Err(VoiceError::Transport(format!("stream token refused: {e}")));
            }
            // Checked; the session never sees it.
            start.custom_parameters.remove(TOKEN_PARAMETER);
        }
        let info = CallInfo {
            transport: TRANSPORT.into(),
            call_id: start.call_sid.clone(),
            stream_id: start.stream_sid.clone(),
            from: start.custom_parameters.get("from").cloned(),
            to: start.custom_parameters.get("to").cloned(),
            parameters: start.custom_parameters.clone(),
            format: self.native_format(),
            codec: "mulaw".into(),
        };
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        tokio::spawn(run_socket(
            incoming,
            outgoing,
            start.stream_sid,
            event_tx,
            out_rx,
            stats.clone(),
        ));
        Ok(Call {
            info,
            capabilities: self.capabilities(),
            events: event_rx,
            outbound: out_tx,
            stats,
            media: None,
        })
    }
}

/// Pumps one call's socket until either side ends it.
async fn run_socket(
    mut incoming: crate::backend::MediaStream,
    mut outgoing: crate::backend::MediaSink,
    stream_sid: String,
    events: mpsc::Sender<BackendEvent>,
    mut commands: mpsc::Receiver<Outbound>,
    stats: Arc<TransportStats>,
) {
    let reason = loop {
        tokio::select! {
            message = incoming.next() => {
                let text = match message {
                    None | Some(Ok(MediaMessage::Close)) => break "socket closed".to_owned(),
                    Some(Err(e)) => break format!("socket failed: {e}"),
                    Some(Ok(MediaMessage::Binary(_))) => {
                        bad(&stats, &VoiceError::Transport("binary message".into()));
                        continue;
                    }
                    Some(Ok(MediaMessage::Text(t))) => t,
                };
                let event = match parse(&text) {
                    Ok(TwilioInbound::Media { media, .. }) => {
                        if media.track.as_deref().is_some_and(|t| t != "inbound") {
                            continue;
                        }
                        match decode_payload(&media.payload) {
                            Ok(samples) => BackendEvent::Audio(samples),
                            Err(e) => {
                                bad(&stats, &e);
                                continue;
                            }
                        }
                    }
                    Ok(TwilioInbound::Dtmf { dtmf, .. }) => {
                        if let Some(d) = dtmf_digit(&dtmf.digit) {
                            BackendEvent::Dtmf(d)
                        } else {
                            bad(&stats, &VoiceError::Transport(format!("bad DTMF digit {:?}", dtmf.digit)));
                            continue;
                        }
                    }
                    Ok(TwilioInbound::Mark { mark, .. }) => BackendEvent::Mark(mark.name),
                    Ok(TwilioInbound::Stop { .. }) => break "stop".to_owned(),
                    Ok(TwilioInbound::Connected { .. } | TwilioInbound::Start { .. }) => continue,
                    Err(e) => {
                        bad(&stats, &e);
                        continue;
                    }
                };
                if let BackendEvent::Audio(_) = event {
                    match events.try_send(event) {
                        Ok(()) => TransportStats::bump(&stats.frames_in),
                        Err(mpsc::error::TrySendError::Full(_)) => TransportStats::bump(&stats.dropped_inbound),
                        Err(mpsc::error::TrySendError::Closed(_)) => break "call ended".to_owned(),
                    }
                } else if events.send(event).await.is_err() {
                    break "call ended".to_owned();
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break "call ended".to_owned() };
                if command == Outbound::HangUp {
                    break "hung up".to_owned();
                }
                let Some(json) = encode_outbound(&stream_sid, &command) else {
                    tracing::debug!(target: "roomkit.voice.twilio", ?command, "not carried by Twilio media streams");
                    continue;
                };
                let is_audio = matches!(command, Outbound::Audio(_));
                if let Err(e) = outgoing.send(MediaMessage::Text(json)).await {
                    break format!("socket failed: {e}");
                }
                if is_audio {
                    TransportStats::bump(&stats.frames_out);
                }
            }
        }
    };
    tracing::debug!(target: "roomkit.voice.twilio", stream_sid = %stream_sid, %reason, "media stream ended");
    let _ = outgoing.send(MediaMessage::Close).await;
    let _ = events.send(BackendEvent::HangUp { reason }).await;
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The TwiML answer of the voice webhook: connect the call to the media
/// socket at `stream_url` (`wss://.../voice/twilio/media`), passing
/// `parameters` to the stream's `start` message.
pub fn twiml_connect_stream(stream_url: &str, parameters: &[(&str, &str)]) -> String {
    let mut xml = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect>"#);
    xml.push_str(&format!(r#"<Stream url="{}">"#, xml_escape(stream_url)));
    for (name, value) in parameters {
        xml.push_str(&format!(
            r#"<Parameter name="{}" value="{}"/>"#,
            xml_escape(name),
            xml_escape(value)
        ));
    }
    xml.push_str("</Stream></Connect></Response>");
    xml
}

/// Checks a voice webhook request: `signature` is its `X-Twilio-Signature`
/// header, `url` the URL Twilio called, `form` the urlencoded body. Returns
/// the form fields when the signature holds.
///
/// # Errors
/// [`VoiceError::Transport`] for a missing or wrong signature or an
/// unreadable body.
pub fn verify_webhook(
    auth_token: &str,
    url: &str,
    form: &[u8],
    signature: Option<&str>,
) -> Result<Vec<(String, String)>, VoiceError> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(form)
        .map_err(|e| VoiceError::Transport(format!("unreadable form body: {e}")))?;
    let Some(signature) = signature else {
        return Err(VoiceError::Transport(
            "missing X-Twilio-Signature header".into(),
        ));
    };
    if auth_token.is_empty()
        || !roomkit_channels::sms::twilio::verify_signature(auth_token, url, &fields, signature)
    {
        return Err(VoiceError::Transport("bad X-Twilio-Signature".into()));
    }
    Ok(fields)
}

/// Whether a media-socket upgrade carries Twilio's signature of `url` (Twilio
/// signs the WebSocket handshake like a request without form fields).
pub fn verify_upgrade(auth_token: &str, url: &str, headers: &[(String, String)]) -> bool {
    let Some(given) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-twilio-signature"))
        .map(|(_, v)| v.as_str())
    else {
        return false;
    };
    !auth_token.is_empty()
        && roomkit_channels::sms::twilio::verify_signature(auth_token, url, &[], given)
}

/// The media socket's URL next to a webhook URL: same host, `ws(s)` scheme,
/// path `/voice/twilio/media`.
pub fn media_url_for(webhook_url: &str) -> String {
    let (scheme, rest) = match webhook_url.split_once("://") {
        Some(("https", rest)) => ("wss", rest),
        Some((_, rest)) => ("ws", rest),
        None => ("ws", webhook_url),
    };
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{host}/voice/{TRANSPORT}/media")
}

/// The voice webhook (`POST /webhooks/voice/twilio`) as a
/// [`roomkit_channels::WebhookReceiver`]: checks `X-Twilio-Signature` and
/// answers TwiML that connects the call to the media socket, passing the
/// remote party (`from`: the caller, or the callee of a call we placed),
/// our number (`to`), `direction = outbound` for a call we placed and,
/// when the request names one (`?room_id=`), the room. A `?channel_id=`
/// of the webhook is repeated on the media socket's URL. With
/// [`Self::stream_tokens`] it also passes the call's stream token.
pub struct TwilioVoiceWebhook {
    auth_token: roomkit_channels::Secret,
    tokens: Option<StreamTokens>,
}

impl std::fmt::Debug for TwilioVoiceWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioVoiceWebhook").finish_non_exhaustive()
    }
}

impl TwilioVoiceWebhook {
    /// A receiver checking signatures with `auth_token`.
    pub fn new(auth_token: roomkit_channels::Secret) -> Self {
        Self {
            auth_token,
            tokens: None,
        }
    }

    /// The receiver, passing a stream token issued by `tokens` with each
    /// call's parameters (the transport checks it with the same tokens).
    #[must_use]
    pub fn stream_tokens(mut self, tokens: StreamTokens) -> Self {
        self.tokens = Some(tokens);
        self
    }
}

impl roomkit_channels::WebhookReceiver for TwilioVoiceWebhook {
    fn channel_type(&self) -> &str {
        "voice"
    }

    fn provider(&self) -> &str {
        TRANSPORT
    }

    fn verify_and_parse(
        &self,
        req: &roomkit_channels::WebhookRequest,
    ) -> Result<roomkit_channels::WebhookOutcome, roomkit_channels::WebhookError> {
        use roomkit_channels::{WebhookError, WebhookKind, WebhookOutcome, WebhookReply};
        if req.kind != WebhookKind::Inbound {
            return Err(WebhookError::Unsupported(
                "the Twilio voice webhook has no status endpoint".into(),
            ));
        }
        let fields = verify_webhook(
            self.auth_token.expose(),
            &req.url,
            &req.body,
            req.header("X-Twilio-Signature"),
        )
        .map_err(|e| match e {
            VoiceError::Transport(m) if m.starts_with("unreadable") => WebhookError::Malformed(m),
            other => WebhookError::BadSignature(other.to_string()),
        })?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let query: Vec<(String, String)> = req
            .url
            .split_once('?')
            .and_then(|(_, q)| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let in_query = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        // `from` is the remote party, whose speech becomes the messages: on
        // a call we placed (`Direction=outbound-api`) that is Twilio's `To`.
        let outbound = field("Direction").is_some_and(|d| d.starts_with("outbound"));
        let (remote, ours) = if outbound {
            (field("To"), field("From"))
        } else {
            (field("From"), field("To"))
        };
        let mut params: Vec<(&str, &str)> = Vec::new();
        if let Some(f) = remote {
            params.push(("from", f));
        }
        if let Some(t) = ours {
            params.push(("to", t));
        }
        if outbound {
            params.push(("direction", "outbound"));
        }
        if let Some(r) = in_query("room_id") {
            params.push(("room_id", r));
        }
        // The media socket names the same channel as the webhook did.
        let mut stream = media_url_for(&req.url);
        if let Some(c) = in_query("channel_id") {
            stream.push('?');
            stream.push_str(&serde_urlencoded::to_string([("channel_id", c)]).unwrap_or_default());
        }
        let token = match &self.tokens {
            Some(tokens) => {
                let map: BTreeMap<String, String> = params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                let token = field("CallSid").and_then(|sid| tokens.issue(sid, &map));
                if token.is_none() {
                    tracing::warn!(target: "roomkit.voice.twilio", "voice webhook without CallSid: its stream will be refused");
                }
                token
            }
            None => None,
        };
        if let Some(t) = &token {
            params.push((TOKEN_PARAMETER, t));
        }
        let xml = twiml_connect_stream(&stream, &params);
        Ok(WebhookOutcome::messages(Vec::new()).reply(WebhookReply::with_body("text/xml", xml)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn params() -> BTreeMap<String, String> {
        [
            ("from", "+15550001"),
            ("to", "+15559999"),
            ("room_id", "call-room"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn signed(tokens: &StreamTokens, call_sid: &str) -> BTreeMap<String, String> {
        let mut p = params();
        let token = tokens.issue_at(call_sid, &p, NOW).unwrap();
        p.insert(TOKEN_PARAMETER.into(), token);
        p
    }

    #[test]
    fn a_stream_token_verifies_for_its_call() {
        let tokens = StreamTokens::new("auth", "phone");
        let p = signed(&tokens, "CA1");
        assert_eq!(tokens.verify_at("CA1", &p, NOW + 10), Ok(()));
        // A token from another process with the same auth token holds too.
        assert_eq!(
            StreamTokens::new("auth", "phone").verify_at("CA1", &p, NOW),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_room_from_or_call_sid_fails() {
        let tokens = StreamTokens::new("auth", "phone");
        let p = signed(&tokens, "CA1");
        for (name, value) in [
            ("room_id", "other-room"),
            ("from", "+15556666"),
            ("direction", "outbound"),
        ] {
            let mut forged = p.clone();
            forged.insert(name.into(), value.into());
            assert_eq!(
                tokens.verify_at("CA1", &forged, NOW),
                Err(StreamTokenError::Mismatch),
                "{name}"
            );
        }
        let mut dropped = p.clone();
        dropped.remove("room_id");
        assert_eq!(
            tokens.verify_at("CA1", &dropped, NOW),
            Err(StreamTokenError::Mismatch)
        );
        assert_eq!(
            tokens.verify_at("CA2", &p, NOW),
            Err(StreamTokenError::Mismatch)
        );
        // Another channel, or another auth token, does not accept it.
        for other in [
            StreamTokens::new("auth", "phone-2"),
            StreamTokens::new("other", "phone"),
            StreamTokens::new("", "phone"),
        ] {
            assert_eq!(
                other.verify_at("CA1", &p, NOW),
                Err(StreamTokenError::Mismatch)
            );
        }
        // A later expiry written into the token breaks the MAC.
        let mut later = p.clone();
        let token = later[TOKEN_PARAMETER].clone();
        let (_, mac) = token.split_once('.').unwrap();
        later.insert(TOKEN_PARAMETER.into(), format!("{}.{mac}", NOW + 99_999));
        assert_eq!(
            tokens.verify_at("CA1", &later, NOW),
            Err(StreamTokenError::Mismatch)
        );
    }

    #[test]
    fn an_expired_token_fails() {
        let tokens = StreamTokens::new("auth", "phone");
        let p = signed(&tokens, "CA1");
        let ttl = STREAM_TOKEN_TTL.as_secs();
        assert_eq!(tokens.verify_at("CA1", &p, NOW + ttl), Ok(()));
        assert_eq!(
            tokens.verify_at("CA1", &p, NOW + ttl + 1),
            Err(StreamTokenError::Expired(1))
        );
    }

    #[test]
    fn a_missing_or_malformed_token_fails() {
        let tokens = StreamTokens::new("auth", "phone");
        assert_eq!(
            tokens.verify_at("CA1", &params(), NOW),
            Err(StreamTokenError::Missing)
        );
        for bad in ["", "abc", "x.y", "12.", "-1.00", "1.é"] {
            let mut p = params();
            p.insert(TOKEN_PARAMETER.into(), bad.into());
            assert!(tokens.verify_at("CA1", &p, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_webhook_answers_a_token_the_transport_accepts() {
        use roomkit_channels::{Secret, WebhookKind, WebhookReceiver, WebhookRequest};
        let tokens = StreamTokens::new("auth", "phone");
        let hook = TwilioVoiceWebhook::new(Secret::new("auth")).stream_tokens(tokens.clone());
        let url = "https://h.example/webhooks/voice/twilio?room_id=r1";
        let form = vec![
            ("CallSid".to_owned(), "CA9".to_owned()),
            ("From".to_owned(), "+15550001".to_owned()),
            ("To".to_owned(), "+15559999".to_owned()),
        ];
        let sig = roomkit_channels::sms::twilio::signature("auth", url, &form);
        let req = WebhookRequest {
            kind: WebhookKind::Inbound,
            method: "POST".into(),
            url: url.into(),
            headers: vec![("X-Twilio-Signature".into(), sig)],
            body: serde_urlencoded::to_string(&form).unwrap().into_bytes(),
        };
        let outcome = hook.verify_and_parse(&req).unwrap();
        let xml = String::from_utf8(outcome.reply.body).unwrap();
        // `<Parameter name="n" value="v"/>`, values with no escapes here.
        let p: BTreeMap<String, String> = xml
            .split("<Parameter name=\"")
            .skip(1)
            .map(|rest| {
                let (name, rest) = rest.split_once("\" value=\"").unwrap();
                let (value, _) = rest.split_once('"').unwrap();
                (name.to_owned(), value.to_owned())
            })
            .collect();
        assert_eq!(p.get("room_id").map(String::as_str), Some("r1"));
        assert_eq!(tokens.verify("CA9", &p), Ok(()));
        assert!(tokens.verify("CA8", &p).is_err());
    }
}
