//! A fake Deepgram: the live WebSocket `GET /v1/listen` and the
//! pre-recorded `POST /v1/listen`, transcribing by a script.
//!
//! Live: the handshake needs `Authorization: Token <key>` (else 401
//! `INVALID_AUTH`) and valid query parameters (`encoding`, `sample_rate`
//! with it, `channels`, booleans, `endpointing`; else 400 with Deepgram's
//! `err_code`/`err_msg` shape). Audio must be `linear16`. Audio louder than
//! a threshold is "speech": while it arrives the fake sends interim
//! `Results` every quarter second of audio revealing the script's next
//! transcript word by word; `{"type":"Finalize"}` answers with the final
//! result (`from_finalize: true`, empty text when nothing was spoken);
//! optionally a stretch of silence ends the utterance by itself
//! (`speech_final: true`). `KeepAlive` is counted, `CloseStream` flushes,
//! sends `Metadata` and closes normally, an unknown or malformed text
//! message closes with 1008 `DATA-0000`, and a socket that gets nothing
//! for the idle timeout (10 s by default, as Deepgram) closes with 1011
//! `NET-0001`. [`FakeDeepgram::break_connections`] breaks the open sockets
//! (no close handshake), as a network failure would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{
    Common, Faults, Recorded, Running, Script, handle_http, json_reply, lock, query_pairs, serve,
};

/// Samples louder than this count as speech.
const SPEECH_LEVEL: i32 = 500;

/// What one live connection did.
#[derive(Debug, Clone, Default)]
pub struct DeepgramConnection {
    /// The handshake's query parameters, decoded.
    pub query: Vec<(String, String)>,
    /// The handshake's `Authorization` header.
    pub authorization: Option<String>,
    /// Audio bytes received.
    pub audio_bytes: usize,
    /// KeepAlive messages received.
    pub keepalives: usize,
    /// Finalize messages received.
    pub finalizes: usize,
    /// CloseStream messages received.
    pub close_streams: usize,
    /// Messages sent back.
    pub messages_sent: usize,
    /// Seconds of audio, from its first speech sample, of each utterance
    /// given a final result.
    pub utterances: Vec<f64>,
    /// Whether the connection has ended.
    pub ended: bool,
}

impl DeepgramConnection {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Settings {
    idle_timeout: Duration,
    endpoint_silence: Option<Duration>,
}

#[derive(Debug)]
struct DgState {
    key: String,
    script: Script,
    common: Arc<Common>,
    settings: Mutex<Settings>,
    connections: Mutex<Vec<Arc<Mutex<DeepgramConnection>>>>,
    /// Bumped to break every open live socket.
    breaks: std::sync::atomic::AtomicU64,
    break_now: tokio::sync::Notify,
}

/// A running fake Deepgram. Stops when dropped.
#[derive(Debug)]
pub struct FakeDeepgram {
    running: Running,
    state: Arc<DgState>,
}

impl FakeDeepgram {
    /// Starts on a free loopback port, expecting `api_key`, answering
    /// utterances with `transcripts` in order (then with empty text).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(
        api_key: &str,
        transcripts: impl IntoIterator<Item = impl Into<String>>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(DgState {
            key: api_key.to_owned(),
            script: Script::new(transcripts),
            common: Arc::new(Common::default()),
            settings: Mutex::new(Settings {
                idle_timeout: Duration::from_secs(10),
                endpoint_silence: None,
            }),
            connections: Mutex::new(Vec::new()),
            breaks: std::sync::atomic::AtomicU64::new(0),
            break_now: tokio::sync::Notify::new(),
        });
        let rest_state = state.clone();
        let app = axum::Router::new()
            .route(
                "/v1/listen",
                axum::routing::get(live_handshake).post(move |req: axum::http::Request<Body>| {
                    let s = rest_state.clone();
                    async move { prerecorded(&s, req).await }
                }),
            )
            .fallback(|| async {
                json_reply(
                    StatusCode::NOT_FOUND,
                    json!({"err_code": "NOT_FOUND", "err_msg": "Not found."}),
                )
            })
            .with_state(state.clone());
        let (addr, task) = serve(app).await?;
        Ok(Self {
            running: Running { addr, task },
            state,
        })
    }

    /// The base URL to give the provider (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    /// Changes the faults.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.state.common.faults) = faults;
    }

    /// Adds transcripts to the script.
    pub fn push_transcripts(&self, items: impl IntoIterator<Item = String>) {
        self.state.script.push(items);
    }

    /// Closes live sockets that receive nothing for this long (default 10 s).
    pub fn set_idle_timeout(&self, idle: Duration) {
        lock(&self.state.settings).idle_timeout = idle;
    }

    /// Ends an utterance by itself after this much silence (default never).
    pub fn set_endpoint_silence(&self, silence: Option<Duration>) {
        lock(&self.state.settings).endpoint_silence = silence;
    }

    /// Breaks every open live socket now, without a close handshake (a
    /// network failure in the middle of a call).
    pub fn break_connections(&self) {
        self.state
            .breaks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.state.break_now.notify_waiters();
    }

    /// The live connections so far, in order.
    pub fn connections(&self) -> Vec<DeepgramConnection> {
        lock(&self.state.connections)
            .iter()
            .map(|c| lock(c).clone())
            .collect()
    }

    /// The pre-recorded requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.common.requests).clone()
    }
}

fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "00000000-0000-4000-8000-{:012x}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn dg_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_reply(
        status,
        json!({"err_code": code, "err_msg": message, "request_id": request_id()}),
    )
}

fn check_auth(key: &str, authorization: Option<&str>) -> Option<Response> {
    if authorization == Some(format!("Token {key}").as_str()) {
        return None;
    }
    Some(dg_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_AUTH",
        "Invalid credentials.",
    ))
}

/// Checks the query as Deepgram does; gives the live sample rate.
fn check_query(pairs: &[(String, String)], live: bool) -> Result<u32, Box<Response>> {
    let bad = |m: &str| Box::new(dg_error(StatusCode::BAD_REQUEST, "Bad Request", m));
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    for flag in ["interim_results", "punctuate", "smart_format"] {
        if let Some(v) = get(flag)
            && v != "true"
            && v != "false"
        {
            return Err(bad(&format!("Invalid value for {flag}.")));
        }
    }
    if let Some(v) = get("endpointing")
        && v != "false"
        && v.parse::<u32>().is_err()
    {
        return Err(bad("Invalid value for endpointing."));
    }
    if let Some(v) = get("channels")
        && !v.parse::<u8>().is_ok_and(|c| (1..=8).contains(&c))
    {
        return Err(bad("Invalid value for channels."));
    }
    if get("model").is_some_and(str::is_empty) {
        return Err(bad("Invalid value for model."));
    }
    let rate = match get("sample_rate") {
        Some(v) => match v.parse::<u32>() {
            Ok(r) if (8_000..=48_000).contains(&r) => Some(r),
            _ => return Err(bad("Invalid value for sample_rate.")),
        },
        None => None,
    };
    match get("encoding") {
        Some("linear16") => {
            rate.ok_or_else(|| bad("sample_rate is required when encoding is set."))
        }
        Some(_) => Err(bad("This fake only understands encoding=linear16.")),
        None if live => Err(bad("encoding is required for raw audio.")),
        None => Ok(rate.unwrap_or(16_000)),
    }
}

async fn live_handshake(
    State(state): State<Arc<DgState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let faults = state.common.faults();
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    if let Some(status) = faults.fail_status {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return dg_error(code, "INJECTED", "Injected failure.");
    }
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(refusal) = check_auth(&state.key, authorization.as_deref()) {
        return refusal;
    }
    let pairs = query_pairs(query.as_deref().unwrap_or(""));
    let rate = match check_query(&pairs, true) {
        Ok(r) => r,
        Err(refusal) => return *refusal,
    };
    let Ok(ws) = ws else {
        return dg_error(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "Expected a WebSocket upgrade.",
        );
    };
    let interim = pairs
        .iter()
        .any(|(k, v)| k == "interim_results" && v == "true");
    let conn = Arc::new(Mutex::new(DeepgramConnection {
        query: pairs,
        authorization,
        ..DeepgramConnection::default()
    }));
    lock(&state.connections).push(conn.clone());
    ws.max_message_size(4 * 1024 * 1024)
        .on_upgrade(move |socket| async move {
            Live {
                state,
                conn: conn.clone(),
                rate,
                interim,
                total: 0,
                utterance: Utterance::default(),
                carry: None,
            }
            .run(socket)
            .await;
            lock(&conn).ended = true;
        })
}

/// The utterance being heard.
#[derive(Debug, Default)]
struct Utterance {
    speaking: bool,
    start: u64,
    silent_run: u64,
    last_interim: u64,
    interims: usize,
}

struct Live {
    state: Arc<DgState>,
    conn: Arc<Mutex<DeepgramConnection>>,
    rate: u32,
    interim: bool,
    total: u64,
    utterance: Utterance,
    carry: Option<u8>,
}

/// A send that hit the break fault: end the connection without a close.
struct Broken;

impl Live {
    async fn run(mut self, mut socket: WebSocket) {
        use std::sync::atomic::Ordering;
        let epoch = self.state.breaks.load(Ordering::SeqCst);
        loop {
            let idle = lock(&self.state.settings).idle_timeout;
            let state = self.state.clone();
            let broken = state.break_now.notified();
            if state.breaks.load(Ordering::SeqCst) != epoch {
                return;
            }
            let message = tokio::select! {
                r = tokio::time::timeout(idle, socket.recv()) => match r {
                    Err(_) => {
                        let _ = close(&mut socket, 1011, "NET-0001").await;
                        return;
                    }
                    Ok(None | Some(Err(_))) => return,
                    Ok(Some(Ok(m))) => m,
                },
                () = broken => return,
            };
            let outcome = match message {
                Message::Binary(bytes) => self.on_audio(&mut socket, &bytes).await,
                Message::Text(text) => match self.on_control(&mut socket, text.as_str()).await {
                    Ok(true) => return,
                    Ok(false) => Ok(()),
                    Err(b) => Err(b),
                },
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => Ok(()),
            };
            if outcome.is_err() {
                return;
            }
        }
    }

    fn seconds(&self, samples: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let s = samples as f64 / f64::from(self.rate);
        s
    }

    async fn on_audio(&mut self, socket: &mut WebSocket, bytes: &[u8]) -> Result<(), Broken> {
        lock(&self.conn).audio_bytes += bytes.len();
        let mut data = Vec::with_capacity(bytes.len() + 1);
        data.extend(self.carry.take());
        data.extend_from_slice(bytes);
        let mut pairs = data.chunks_exact(2);
        for p in &mut pairs {
            let s = i32::from(i16::from_le_bytes([p[0], p[1]]));
            if s.abs() > SPEECH_LEVEL {
                if !self.utterance.speaking {
                    self.utterance = Utterance {
                        speaking: true,
                        start: self.total,
                        last_interim: self.total,
                        ..Utterance::default()
                    };
                }
                self.utterance.silent_run = 0;
            } else if self.utterance.speaking {
                self.utterance.silent_run += 1;
            }
            self.total += 1;
        }
        self.carry = pairs.remainder().first().copied();
        if !self.utterance.speaking {
            return Ok(());
        }
        let endpoint = lock(&self.state.settings).endpoint_silence;
        if let Some(silence) = endpoint {
            let needed = u64::from(self.rate)
                * u64::try_from(silence.as_millis()).unwrap_or(u64::MAX)
                / 1000;
            if self.utterance.silent_run >= needed.max(1) {
                let text = self.state.script.next();
                return self.send_result(socket, &text, true, true, false).await;
            }
        }
        if self.interim && self.total - self.utterance.last_interim >= u64::from(self.rate / 4) {
            self.utterance.last_interim = self.total;
            self.utterance.interims += 1;
            let script = self.state.script.peek();
            let words: Vec<&str> = script
                .split_whitespace()
                .take(self.utterance.interims)
                .collect();
            let guess = words.join(" ");
            return self.send_result(socket, &guess, false, false, false).await;
        }
        Ok(())
    }

    /// Handles a control message; `Ok(true)` when the connection is over.
    async fn on_control(&mut self, socket: &mut WebSocket, text: &str) -> Result<bool, Broken> {
        let kind = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
        match kind.as_deref() {
            Some("KeepAlive") => {
                lock(&self.conn).keepalives += 1;
                Ok(false)
            }
            Some("Finalize") => {
                lock(&self.conn).finalizes += 1;
                let text = if self.utterance.speaking {
                    self.state.script.next()
                } else {
                    String::new()
                };
                self.send_result(socket, &text, true, true, true).await?;
                Ok(false)
            }
            Some("CloseStream") => {
                lock(&self.conn).close_streams += 1;
                if self.utterance.speaking {
                    let text = self.state.script.next();
                    self.send_result(socket, &text, true, true, false).await?;
                }
                let metadata = json!({
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": request_id(),
                    "sha256": "0".repeat(64),
                    "created": "2026-01-01T00:00:00.000Z",
                    "duration": self.seconds(self.total),
                    "channels": 1,
                });
                self.send(socket, metadata.to_string()).await?;
                let _ = close(socket, 1000, "").await;
                Ok(true)
            }
            _ => {
                let _ = close(socket, 1008, "DATA-0000").await;
                Ok(true)
            }
        }
    }

    async fn send_result(
        &mut self,
        socket: &mut WebSocket,
        text: &str,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> Result<(), Broken> {
        let start = if self.utterance.speaking {
            self.utterance.start
        } else {
            self.total
        };
        let message = json!({
            "type": "Results",
            "channel_index": [0, 1],
            "duration": self.seconds(self.total - start),
            "start": self.seconds(start),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": text,
                "confidence": if text.is_empty() { 0.0 } else { 0.98 },
                "words": [],
            }]},
            "metadata": {
                "request_id": request_id(),
                "model_info": {"name": "fake", "version": "0", "arch": "fake"},
                "model_uuid": "00000000-0000-4000-8000-000000000000",
            },
        });
        if is_final {
            if self.utterance.speaking {
                let seconds = self.seconds(self.total - self.utterance.start);
                lock(&self.conn).utterances.push(seconds);
            }
            self.utterance = Utterance::default();
        }
        self.send(socket, message.to_string()).await
    }

    async fn send(&mut self, socket: &mut WebSocket, text: String) -> Result<(), Broken> {
        let faults: Faults = self.state.common.faults();
        let sent = lock(&self.conn).messages_sent;
        if faults.close_after.is_some_and(|n| sent >= n) {
            return Err(Broken);
        }
        if faults.stall_after.is_some_and(|n| sent >= n) {
            return Ok(());
        }
        lock(&self.conn).messages_sent += 1;
        socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| Broken)
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await
}

async fn prerecorded(state: &Arc<DgState>, req: axum::http::Request<Body>) -> Response {
    let state2 = state.clone();
    handle_http(&state.common, req, move |rec, _faults| {
        if let Some(refusal) = check_auth(&state2.key, rec.header("authorization")) {
            return refusal;
        }
        let pairs = query_pairs(rec.path.split_once('?').map_or("", |(_, q)| q));
        if let Err(refusal) = check_query(&pairs, false) {
            return *refusal;
        }
        let wav = rec.header("content-type").is_some_and(|c| c.starts_with("audio/wav"));
        if rec.body.is_empty() || (wav && !rec.body.starts_with(b"RIFF")) {
            return dg_error(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                "Bad Request: failed to process audio: corrupt or unsupported data",
            );
        }
        let text = state2.script.next();
        json_reply(
            StatusCode::OK,
            json!({
                "metadata": {"request_id": request_id(), "channels": 1, "duration": 1.0, "models": ["fake"]},
                "results": {"channels": [{"alternatives": [{
                    "transcript": text,
                    "confidence": 0.97,
                    "words": [],
                }]}]},
            }),
        )
    })
    .await
}
