//! A browser as a [`VoiceBackend`]: the web chat's call button opens a
//! WebSocket and speaks a small protocol of JSON text messages and binary
//! PCM frames.
//!
//! Page to server:
//! - first, text `{"type":"start","sample_rate":16000,"room_id":..,
//!   "participant":..,"name":..}` (`room_id`, `participant` and `name`
//!   optional; `encoding`, when given, must be `"pcm16"`);
//! - binary frames: caller audio, 16-bit little-endian mono PCM at
//!   [`SAMPLE_RATE`] (20 ms frames are usual, any length up to
//!   [`MAX_FRAME_BYTES`] is taken);
//! - text `{"type":"mark","name":..}`: playback reached a mark the server
//!   sent; `{"type":"dtmf","digit":"5"}`; `{"type":"stop"}` hangs up.
//!
//! Server to page:
//! - text `{"type":"started","call_id":..,"sample_rate":16000,"encoding":"pcm16","frame_ms":20}`;
//! - binary frames: agent audio, the same format;
//! - text `{"type":"transcript","text":..,"final":bool}` (the caller as
//!   speech-to-text hears them), `{"type":"agent_text","text":..}` (a
//!   sentence about to be spoken), `{"type":"clear"}` (barge-in: drop
//!   whatever audio is queued, now), `{"type":"mark","name":..}` (echo it
//!   once played), `{"type":"error","error":{"code":..,"message":..}}`,
//!   `{"type":"ended","reason":..}` before the socket closes.
//!
//! A bad message (unreadable JSON, an odd, empty or oversized audio frame,
//! audio before `start`) is logged, counted in
//! [`TransportStats::bad_messages`] and answered with an `error` message;
//! it never ends the call. Authentication is the server's API key, checked
//! before the upgrade by [`authorize_api_key`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use roomkit_audio::AudioFormat;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::backend::{
    BackendEvent, Call, CallInfo, EVENT_QUEUE, MediaMessage, MediaSink, MediaSocket, MediaStream,
    OUTBOUND_QUEUE, Outbound, TransportStats, VoiceBackend, VoiceCapabilities, dtmf_digit,
};
use crate::error::VoiceError;

/// The transport's name (`/voice/browser/media`).
pub const TRANSPORT: &str = "browser";

/// The one rate both directions use: 16 kHz mono PCM16 little-endian (the
/// page's AudioWorklet resamples the microphone to it).
pub const SAMPLE_RATE: u32 = 16_000;

/// How long a socket may take to send `start`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest audio frame taken (one second of audio).
pub const MAX_FRAME_BYTES: usize = SAMPLE_RATE as usize * 2;

/// Largest text message taken.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;

/// After this many bad messages on one call, they are still counted and
/// logged but no longer answered.
pub const MAX_ERROR_REPLIES: u64 = 20;

/// A text message the page sends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BrowserInbound {
    /// Opens the call.
    Start {
        /// The rate of the audio the page sends; must be [`SAMPLE_RATE`].
        sample_rate: u32,
        /// `pcm16` (the default).
        #[serde(default)]
        encoding: Option<String>,
        /// The room to call into (the router's choice when absent).
        #[serde(default)]
        room_id: Option<String>,
        /// Who is calling (the sender of the caller's messages).
        #[serde(default)]
        participant: Option<String>,
        /// A display name.
        #[serde(default)]
        name: Option<String>,
    },
    /// Playback reached a mark.
    Mark {
        /// The mark's name.
        name: String,
    },
    /// A key press.
    Dtmf {
        /// The digit.
        digit: String,
    },
    /// The caller hangs up.
    Stop,
}

/// The browser transport.
#[derive(Debug, Default)]
pub struct BrowserBackend {
    next_call: AtomicU64,
}

impl BrowserBackend {
    /// The transport.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Reads one text message from the page.
///
/// # Errors
/// [`VoiceError::Transport`] for a message over [`MAX_TEXT_BYTES`], or one
/// that is not a message of the protocol.
pub fn parse(text: &str) -> Result<BrowserInbound, VoiceError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(VoiceError::Transport(format!(
            "text message of {} bytes (at most {MAX_TEXT_BYTES})",
            text.len()
        )));
    }
    serde_json::from_str(text)
        .map_err(|e| VoiceError::Transport(format!("unreadable message: {e}")))
}

/// Decodes a binary frame of PCM16 LE.
///
/// # Errors
/// [`VoiceError::Transport`] for an empty, odd-length or oversized frame.
pub fn decode_frame(bytes: &[u8]) -> Result<Vec<i16>, VoiceError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) || bytes.len() > MAX_FRAME_BYTES {
        return Err(VoiceError::Transport(format!(
            "audio frame of {} bytes (PCM16 frames have an even length of 2 to {MAX_FRAME_BYTES})",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// Encodes samples as a binary frame of PCM16 LE.
pub fn encode_frame(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// The message an outbound command becomes, or `None` when the page has no
/// use for it.
pub fn encode_outbound(command: &Outbound) -> Option<MediaMessage> {
    let text = match command {
        Outbound::Audio(samples) => return Some(MediaMessage::Binary(encode_frame(samples))),
        Outbound::Clear => json!({"type": "clear"}),
        Outbound::Mark(name) => json!({"type": "mark", "name": name}),
        Outbound::Transcript { text, is_final } => {
            json!({"type": "transcript", "text": text, "final": is_final})
        }
        Outbound::AgentText(text) => json!({"type": "agent_text", "text": text}),
        Outbound::Dtmf { .. } | Outbound::HangUp | Outbound::Transfer { .. } => return None,
    };
    Some(MediaMessage::Text(text.to_string()))
}

fn error_message(code: &str, message: &str) -> MediaMessage {
    MediaMessage::Text(
        json!({"type": "error", "error": {"code": code, "message": message}}).to_string(),
    )
}

/// Counts and logs a bad message and tells the page (up to
/// [`MAX_ERROR_REPLIES`] times per call).
async fn bad(stats: &TransportStats, outgoing: &mut MediaSink, code: &str, error: &VoiceError) {
    TransportStats::bump(&stats.bad_messages);
    let n = TransportStats::get(&stats.bad_messages);
    tracing::warn!(target: "roomkit.voice.browser", error = %error, bad_messages = n, "skipped a bad media-socket message");
    if n <= MAX_ERROR_REPLIES {
        let _ = outgoing.send(error_message(code, &error.to_string())).await;
    }
}

/// Whether a media-socket upgrade carries one of the server's API keys, as
/// `?token=` or `Authorization: Bearer`; with no keys (an open server)
/// every upgrade may open a call.
pub fn authorize_api_key(keys: &[String], url: &str, headers: &[(String, String)]) -> bool {
    if keys.is_empty() {
        return true;
    }
    let from_query = url.split_once('?').and_then(|(_, q)| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    });
    let from_header = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_owned());
    [from_query, from_header]
        .into_iter()
        .flatten()
        .any(|given| {
            keys.iter()
                .any(|k| constant_time_eq(k.as_bytes(), given.as_bytes()))
        })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A caller-supplied name or id from `start`, made safe to store: trimmed,
/// control characters dropped, at most `max` characters; `None` when
/// nothing is left.
pub fn clean(value: Option<String>, max: usize) -> Option<String> {
    value
        .map(|v| {
            v.trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(max)
                .collect::<String>()
        })
        .filter(|v| !v.is_empty())
}

#[async_trait]
impl VoiceBackend for BrowserBackend {
    fn name(&self) -> &str {
        TRANSPORT
    }

    fn capabilities(&self) -> VoiceCapabilities {
        VoiceCapabilities {
            interruption: true,
            dtmf_signaling: true,
            shows_text: true,
            // The page asks the browser for echo cancellation and gain control.
            native_aec: true,
            native_agc: true,
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
        let waited = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(message) = incoming.next().await {
                match message? {
                    MediaMessage::Text(t) => match parse(&t) {
                        Ok(start @ BrowserInbound::Start { .. }) => return Ok(start),
                        Ok(other) => {
                            tracing::debug!(target: "roomkit.voice.browser", ?other, "message before start ignored");
                        }
                        Err(e) => bad(&stats, &mut outgoing, "invalid_message", &e).await,
                    },
                    MediaMessage::Binary(_) => {
                        let e = VoiceError::Transport("audio before `start`".into());
                        bad(&stats, &mut outgoing, "invalid_message", &e).await;
                    }
                    MediaMessage::Close => break,
                }
            }
            Err(VoiceError::Transport(
                "the media socket closed before `start`".into(),
            ))
        })
        .await;
        let start = match waited {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let _ = outgoing
                    .send(error_message("timeout", "no `start` message within 10 s"))
                    .await;
                let _ = outgoing.send(MediaMessage::Close).await;
                return Err(VoiceError::Transport(
                    "no `start` message within 10 s".into(),
                ));
            }
        };
        let BrowserInbound::Start {
            sample_rate,
            encoding,
            room_id,
            participant,
            name,
        } = start
        else {
            return Err(VoiceError::Transport("no `start` message".into()));
        };
        if sample_rate != SAMPLE_RATE || encoding.as_deref().is_some_and(|e| e != "pcm16") {
            let message = format!(
                "unsupported audio: {} at {sample_rate} Hz (send pcm16 at {SAMPLE_RATE} Hz)",
                encoding.as_deref().unwrap_or("pcm16")
            );
            let _ = outgoing
                .send(error_message("unsupported_format", &message))
                .await;
            let _ = outgoing.send(MediaMessage::Close).await;
            return Err(VoiceError::Transport(message));
        }
        let n = self.next_call.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let call_id = format!("br-{nanos:x}-{n}");
        let mut parameters = BTreeMap::new();
        let participant = clean(participant, 128);
        if let Some(r) = clean(room_id, 256) {
            parameters.insert("room_id".to_owned(), r);
        }
        if let Some(name) = clean(name, 128) {
            parameters.insert("name".to_owned(), name);
        }
        if let Some(p) = &participant {
            parameters.insert("participant".to_owned(), p.clone());
        }
        let info = CallInfo {
            transport: TRANSPORT.into(),
            call_id: call_id.clone(),
            stream_id: call_id.clone(),
            from: participant,
            to: None,
            parameters,
            format: self.native_format(),
            codec: "pcm16".into(),
        };
        let started = json!({
            "type": "started",
            "call_id": call_id,
            "sample_rate": SAMPLE_RATE,
            "encoding": "pcm16",
            "frame_ms": 20,
        });
        outgoing
            .send(MediaMessage::Text(started.to_string()))
            .await?;
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
        tokio::spawn(run_socket(
            incoming,
            outgoing,
            call_id,
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
    mut incoming: MediaStream,
    mut outgoing: MediaSink,
    call_id: String,
    events: mpsc::Sender<BackendEvent>,
    mut commands: mpsc::Receiver<Outbound>,
    stats: Arc<TransportStats>,
) {
    let reason = loop {
        tokio::select! {
            message = incoming.next() => {
                let event = match message {
                    None | Some(Ok(MediaMessage::Close)) => break "socket closed".to_owned(),
                    Some(Err(e)) => break format!("socket failed: {e}"),
                    Some(Ok(MediaMessage::Binary(bytes))) => match decode_frame(&bytes) {
                        Ok(samples) => BackendEvent::Audio(samples),
                        Err(e) => {
                            bad(&stats, &mut outgoing, "invalid_audio", &e).await;
                            continue;
                        }
                    },
                    Some(Ok(MediaMessage::Text(text))) => match parse(&text) {
                        Ok(BrowserInbound::Mark { name }) => BackendEvent::Mark(name),
                        Ok(BrowserInbound::Dtmf { digit }) => {
                            if let Some(d) = dtmf_digit(&digit) {
                                BackendEvent::Dtmf(d)
                            } else {
                                let e = VoiceError::Transport(format!("bad DTMF digit {digit:?}"));
                                bad(&stats, &mut outgoing, "invalid_message", &e).await;
                                continue;
                            }
                        }
                        Ok(BrowserInbound::Stop) => break "stop".to_owned(),
                        Ok(BrowserInbound::Start { .. }) => {
                            let e = VoiceError::Transport("the call has already started".into());
                            bad(&stats, &mut outgoing, "invalid_message", &e).await;
                            continue;
                        }
                        Err(e) => {
                            bad(&stats, &mut outgoing, "invalid_message", &e).await;
                            continue;
                        }
                    },
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
                let Some(message) = encode_outbound(&command) else {
                    tracing::debug!(target: "roomkit.voice.browser", ?command, "not carried to the browser");
                    continue;
                };
                let is_audio = matches!(command, Outbound::Audio(_));
                if let Err(e) = outgoing.send(message).await {
                    break format!("socket failed: {e}");
                }
                if is_audio {
                    TransportStats::bump(&stats.frames_out);
                }
            }
        }
    };
    tracing::debug!(target: "roomkit.voice.browser", %call_id, %reason, "browser call socket ended");
    let ended = json!({"type": "ended", "reason": reason});
    let _ = outgoing.send(MediaMessage::Text(ended.to_string())).await;
    let _ = outgoing.send(MediaMessage::Close).await;
    let _ = events.send(BackendEvent::HangUp { reason }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc as fmpsc;

    struct Peer {
        to_server: fmpsc::UnboundedSender<Result<MediaMessage, VoiceError>>,
        from_server: fmpsc::UnboundedReceiver<MediaMessage>,
    }

    impl Peer {
        fn send_text(&self, v: serde_json::Value) {
            let _ = self
                .to_server
                .unbounded_send(Ok(MediaMessage::Text(v.to_string())));
        }

        fn send(&self, m: MediaMessage) {
            let _ = self.to_server.unbounded_send(Ok(m));
        }

        async fn next(&mut self) -> MediaMessage {
            tokio::time::timeout(Duration::from_secs(5), self.from_server.next())
                .await
                .expect("a message within 5 s")
                .expect("socket open")
        }

        async fn next_json(&mut self) -> serde_json::Value {
            match self.next().await {
                MediaMessage::Text(t) => serde_json::from_str(&t).expect("JSON"),
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    fn pair() -> (MediaSocket, Peer) {
        let (to_server, incoming) = fmpsc::unbounded();
        let (outgoing, from_server) = fmpsc::unbounded::<MediaMessage>();
        let sink: MediaSink =
            Box::pin(outgoing.sink_map_err(|e| VoiceError::Transport(e.to_string())));
        (
            MediaSocket::new(incoming.boxed(), sink),
            Peer {
                to_server,
                from_server,
            },
        )
    }

    async fn started() -> (Call, Peer) {
        let (socket, mut peer) = pair();
        peer.send_text(json!({"type": "start", "sample_rate": 16000, "room_id": "r1", "participant": "alice", "name": "Alice"}));
        let call = BrowserBackend::new().accept(socket).await.expect("call");
        let reply = peer.next_json().await;
        assert_eq!(reply["type"], "started");
        assert_eq!(reply["sample_rate"], 16000);
        (call, peer)
    }

    #[tokio::test]
    async fn start_opens_a_call_with_room_and_participant() {
        let (call, _peer) = started().await;
        assert_eq!(call.info.transport, "browser");
        assert_eq!(call.info.from.as_deref(), Some("alice"));
        assert_eq!(
            call.info.parameters.get("room_id").map(String::as_str),
            Some("r1")
        );
        assert_eq!(call.info.format.sample_rate, 16_000);
        assert!(call.capabilities.shows_text && call.capabilities.interruption);
    }

    #[tokio::test]
    async fn start_at_another_rate_is_refused_with_an_error() {
        let (socket, mut peer) = pair();
        peer.send_text(json!({"type": "start", "sample_rate": 44100}));
        let err = BrowserBackend::new().accept(socket).await.unwrap_err();
        assert!(err.to_string().contains("44100"), "{err}");
        let reply = peer.next_json().await;
        assert_eq!(reply["error"]["code"], "unsupported_format");
    }

    #[tokio::test]
    async fn audio_in_arrives_as_samples() {
        let (mut call, peer) = started().await;
        let samples: Vec<i16> = (0..320).map(|i| (i * 97 - 15_000) as i16).collect();
        peer.send(MediaMessage::Binary(encode_frame(&samples)));
        let event = tokio::time::timeout(Duration::from_secs(5), call.events.recv())
            .await
            .unwrap();
        assert_eq!(event, Some(BackendEvent::Audio(samples)));
        assert_eq!(TransportStats::get(&call.stats.frames_in), 1);
    }

    #[tokio::test]
    async fn audio_text_and_clear_go_out() {
        let (call, mut peer) = started().await;
        call.outbound
            .send(Outbound::Audio(vec![1, -2, 300]))
            .await
            .unwrap();
        assert_eq!(
            peer.next().await,
            MediaMessage::Binary(vec![1, 0, 0xfe, 0xff, 0x2c, 0x01])
        );
        call.outbound
            .send(Outbound::Transcript {
                text: "hello".into(),
                is_final: false,
            })
            .await
            .unwrap();
        let t = peer.next_json().await;
        assert_eq!(
            (t["type"].as_str(), t["final"].as_bool()),
            (Some("transcript"), Some(false))
        );
        call.outbound
            .send(Outbound::AgentText("Hi there.".into()))
            .await
            .unwrap();
        assert_eq!(peer.next_json().await["text"], "Hi there.");
        call.outbound.send(Outbound::Clear).await.unwrap();
        assert_eq!(peer.next_json().await["type"], "clear");
        call.outbound
            .send(Outbound::Mark("reply-1".into()))
            .await
            .unwrap();
        assert_eq!(peer.next_json().await["name"], "reply-1");
        call.outbound.send(Outbound::HangUp).await.unwrap();
        assert_eq!(peer.next_json().await["type"], "ended");
        assert_eq!(peer.next().await, MediaMessage::Close);
    }

    #[tokio::test]
    async fn bad_frames_are_counted_answered_and_the_call_goes_on() {
        let (mut call, mut peer) = started().await;
        peer.send(MediaMessage::Binary(vec![1, 2, 3]));
        peer.send(MediaMessage::Binary(Vec::new()));
        peer.send(MediaMessage::Binary(vec![0; MAX_FRAME_BYTES + 2]));
        peer.send(MediaMessage::Text("{not json".into()));
        peer.send_text(json!({"type": "dance"}));
        peer.send_text(json!({"type": "dtmf", "digit": "55"}));
        peer.send_text(json!({"type": "start", "sample_rate": 16000}));
        for code in [
            "invalid_audio",
            "invalid_audio",
            "invalid_audio",
            "invalid_message",
            "invalid_message",
            "invalid_message",
            "invalid_message",
        ] {
            let m = peer.next_json().await;
            assert_eq!(
                (m["type"].as_str(), m["error"]["code"].as_str()),
                (Some("error"), Some(code))
            );
        }
        assert_eq!(TransportStats::get(&call.stats.bad_messages), 7);
        peer.send(MediaMessage::Binary(encode_frame(&[5, 6])));
        peer.send_text(json!({"type": "mark", "name": "reply-1"}));
        peer.send_text(json!({"type": "dtmf", "digit": "#"}));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(call.events.recv().await.unwrap());
        }
        assert_eq!(
            got,
            vec![
                BackendEvent::Audio(vec![5, 6]),
                BackendEvent::Mark("reply-1".into()),
                BackendEvent::Dtmf('#'),
            ]
        );
        peer.send_text(json!({"type": "stop"}));
        assert_eq!(
            call.events.recv().await,
            Some(BackendEvent::HangUp {
                reason: "stop".into()
            })
        );
    }

    #[tokio::test]
    async fn audio_before_start_is_an_error_not_a_call() {
        let (socket, mut peer) = pair();
        peer.send(MediaMessage::Binary(vec![0; 640]));
        peer.send(MediaMessage::Close);
        let err = BrowserBackend::new().accept(socket).await.unwrap_err();
        assert!(err.to_string().contains("before `start`"), "{err}");
        assert_eq!(peer.next_json().await["error"]["code"], "invalid_message");
    }

    #[test]
    fn api_key_by_query_or_bearer() {
        let keys = vec!["s3cret".to_owned()];
        let none: Vec<(String, String)> = Vec::new();
        assert!(authorize_api_key(&[], "ws://h/voice/browser/media", &none));
        assert!(!authorize_api_key(
            &keys,
            "ws://h/voice/browser/media",
            &none
        ));
        assert!(authorize_api_key(
            &keys,
            "ws://h/voice/browser/media?token=s3cret",
            &none
        ));
        assert!(!authorize_api_key(
            &keys,
            "ws://h/voice/browser/media?token=s3cre",
            &none
        ));
        let bearer = vec![("Authorization".to_owned(), "Bearer s3cret".to_owned())];
        assert!(authorize_api_key(
            &keys,
            "ws://h/voice/browser/media",
            &bearer
        ));
    }
}
