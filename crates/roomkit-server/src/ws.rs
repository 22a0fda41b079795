//! The WebSocket transport: the `websocket` channel, its connection
//! registry, the hub that fans stored events out to connections, and the
//! per-connection protocol of `GET /ws/{room_id}`.
//!
//! A connection is a live view of its room's timeline through its channel's
//! permissions: every stored event the channel may see, in index order,
//! without gaps, its own sent events included. Each connection tracks the
//! next index it owes its client. Live events come from one hub task that
//! follows the engine's timeline stream (and from `deliver()`); anything
//! out of order, dropped by a full queue or lost by a lagging stream is
//! re-read from the store, which always holds every published event.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use dashmap::DashMap;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelId, ChannelType, EventContent,
    EventType, Map, ParticipantId, RoomEvent, RoomId, SystemContent,
};
use roomkit_core::store::Reader;
use roomkit_core::{
    Channel, ChannelError, ChannelOutput, EphemeralEvent, RoomContext, RoomKit, SendEvent,
    TimelineQuery,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::extract::{Params, parse_json};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Close code for an unknown room or a channel not attached to it.
pub const CLOSE_NOT_FOUND: u16 = 4404;
/// Close code for a message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when the server shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a client that keeps sending over its frame rate.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code for a client that stopped reading: one write waited longer
/// than the send timeout.
pub const CLOSE_TOO_SLOW: u16 = 4008;

/// Queue bound of one connection, in frames; when full the connection
/// re-reads the store instead of receiving more live events.
const CONNECTION_QUEUE: usize = 256;
/// Queue bound of one connection, in bytes of frames.
const CONNECTION_QUEUE_BYTES: usize = 1024 * 1024;
/// Most events read from the store per catch-up page.
const CATCH_UP_PAGE: usize = 500;
/// Events of the first catch-up page, before event sizes are known.
const CATCH_UP_FIRST_PAGE: usize = 8;
/// Bytes of events a catch-up page aims at; the event count of each page
/// follows the sizes seen in the previous one.
const CATCH_UP_PAGE_BYTES: usize = 256 * 1024;
/// Bytes a catch-up sends before it lets other tasks run.
const CATCH_UP_YIELD_BYTES: usize = 64 * 1024;
/// How long the close frame to a slow client may take.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Per-key caps of WebSocket connections and the slow-client timeout.
pub struct WsLimits {
    per_key: usize,
    send_timeout: Duration,
    open: DashMap<String, usize>,
}

impl WsLimits {
    /// Caps of `per_key` connections per key; writes may wait
    /// `send_timeout`.
    pub fn new(per_key: usize, send_timeout: Duration) -> Self {
        Self {
            per_key: per_key.max(1),
            send_timeout,
            open: DashMap::new(),
        }
    }

    /// Takes a place for one more connection of `key`, when under the cap.
    fn acquire(self: &Arc<Self>, key: String) -> Option<WsPermit> {
        let mut n = self.open.entry(key.clone()).or_default();
        if *n >= self.per_key {
            return None;
        }
        *n += 1;
        drop(n);
        Some(WsPermit {
            limits: self.clone(),
            key,
        })
    }
}

/// A place under the per-key cap; given back when dropped.
struct WsPermit {
    limits: Arc<WsLimits>,
    key: String,
}

impl Drop for WsPermit {
    fn drop(&mut self) {
        if let Some(mut n) = self.limits.open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        self.limits.open.remove_if(&self.key, |_, n| *n == 0);
    }
}

/// What the per-key cap counts a connection against: the presented key
/// when keys are required (it was checked already), else the client
/// address.
fn cap_key(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    params: &Params,
    peer: Option<std::net::SocketAddr>,
) -> String {
    use std::hash::{Hash, Hasher};
    if state.api_key.is_some() {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|t| t.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned());
        if let Some(token) = bearer.or_else(|| params.text("token").map(str::to_owned)) {
            // Only a digest is kept, never the key itself.
            let mut h = std::collections::hash_map::DefaultHasher::new();
            token.hash(&mut h);
            return format!("key:{:016x}", h.finish());
        }
    }
    match peer {
        Some(addr) => format!("ip:{}", addr.ip()),
        None => "ip:unknown".to_owned(),
    }
}

/// What the hub hands a connection.
enum Feed {
    /// A stored event and its ready-made `{"type":"event"}` frame.
    Event(Arc<RoomEvent>, Utf8Bytes),
    /// A ready-made `{"type":"ephemeral"}` frame.
    Ephemeral(Utf8Bytes),
}

impl Feed {
    fn len(&self) -> usize {
        match self {
            Self::Event(_, f) | Self::Ephemeral(f) => f.len(),
        }
    }
}

#[derive(Clone)]
struct Handle {
    channel_id: ChannelId,
    tx: mpsc::Sender<Feed>,
    resync: Arc<Notify>,
    /// Bytes of frames waiting in the queue.
    queued: Arc<AtomicUsize>,
}

impl Handle {
    /// Queues `feed` when it fits both bounds of the queue.
    fn offer(&self, feed: Feed) -> bool {
        let len = feed.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > CONNECTION_QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if self.tx.try_send(feed).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// The live WebSocket connections, by room.
#[derive(Default)]
pub struct ConnectionRegistry {
    rooms: DashMap<RoomId, HashMap<u64, Handle>>,
    next_id: AtomicU64,
    frames: parking_lot::Mutex<FrameCache>,
}

/// Bytes of recent event frames kept for catch-up.
const FRAME_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Recently made `{"type":"event"}` frames, by event id and index, so
/// connections catching up on the same events share one copy of each frame
/// instead of serializing it again. Oldest first out, bounded in bytes.
#[derive(Default)]
struct FrameCache {
    frames: HashMap<(String, u64), Utf8Bytes>,
    order: std::collections::VecDeque<(String, u64)>,
    bytes: usize,
}

impl FrameCache {
    fn get(&self, event: &RoomEvent) -> Option<Utf8Bytes> {
        self.frames
            .get(&(event.id.to_string(), event.index))
            .cloned()
    }

    fn put(&mut self, event: &RoomEvent, frame: &Utf8Bytes) {
        if frame.len() > FRAME_CACHE_BYTES / 4 {
            return;
        }
        let key = (event.id.to_string(), event.index);
        if self.frames.contains_key(&key) {
            return;
        }
        self.bytes += frame.len();
        self.frames.insert(key.clone(), frame.clone());
        self.order.push_back(key);
        while self.bytes > FRAME_CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(f) = self.frames.remove(&old) {
                self.bytes -= f.len();
            }
        }
    }
}

/// A registered connection; unregisters itself when dropped.
pub struct Registration {
    /// Connection id, unique in this process.
    pub id: u64,
    room_id: RoomId,
    rx: mpsc::Receiver<Feed>,
    resync: Arc<Notify>,
    registry: Arc<ConnectionRegistry>,
    queued: Arc<AtomicUsize>,
}

/// The next queued frame, its bytes taken off the queue's count.
async fn next_feed(rx: &mut mpsc::Receiver<Feed>, queued: &AtomicUsize) -> Option<Feed> {
    let feed = rx.recv().await?;
    queued.fetch_sub(feed.len(), Ordering::AcqRel);
    Some(feed)
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister_connection(&self.room_id, self.id);
    }
}

#[derive(Serialize)]
struct EventFrame<'a> {
    r#type: &'static str,
    event: &'a RoomEvent,
}

fn frame_of(kind: &'static str, event: &RoomEvent) -> Utf8Bytes {
    let frame = EventFrame {
        r#type: kind,
        event,
    };
    // Serializing a model value into a string cannot fail: every map key is
    // a string and there are no non-finite floats in stored events.
    Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default())
}

impl ConnectionRegistry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a connection of `channel_id` in `room_id`.
    pub fn register_connection(
        self: &Arc<Self>,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        let resync = Arc::new(Notify::new());
        let queued = Arc::new(AtomicUsize::new(0));
        self.rooms.entry(room_id.clone()).or_default().insert(
            id,
            Handle {
                channel_id: channel_id.clone(),
                tx,
                resync: resync.clone(),
                queued: queued.clone(),
            },
        );
        Registration {
            id,
            room_id: room_id.clone(),
            rx,
            resync,
            registry: self.clone(),
            queued,
        }
    }

    /// Removes a connection.
    pub fn unregister_connection(&self, room_id: &RoomId, id: u64) {
        let empty = match self.rooms.get_mut(room_id) {
            Some(mut conns) => {
                conns.remove(&id);
                conns.is_empty()
            }
            None => false,
        };
        if empty {
            self.rooms.remove_if(room_id, |_, conns| conns.is_empty());
        }
    }

    /// The event frame of `event`, made once and shared while it is recent.
    fn event_frame(&self, event: &RoomEvent) -> Utf8Bytes {
        if let Some(f) = self.frames.lock().get(event) {
            return f;
        }
        let frame = frame_of("event", event);
        self.frames.lock().put(event, &frame);
        frame
    }

    /// Connections open in a room.
    pub fn connection_count(&self, room_id: &RoomId) -> usize {
        self.rooms.get(room_id).map_or(0, |c| c.len())
    }

    /// Connections open in all rooms.
    pub fn total_connections(&self) -> usize {
        self.rooms.iter().map(|c| c.len()).sum()
    }

    /// Hands a stored event to the room's connections (of one channel only,
    /// when given). Never waits: a full connection is told to resync.
    pub fn dispatch(&self, event: &Arc<RoomEvent>, only: Option<&ChannelId>) {
        let Some(conns) = self.rooms.get(&event.room_id) else {
            return;
        };
        let frame = self.event_frame(event);
        for h in conns.values() {
            if only.is_some_and(|c| c != &h.channel_id) {
                continue;
            }
            if !h.offer(Feed::Event(event.clone(), frame.clone())) {
                h.resync.notify_one();
            }
        }
    }

    /// Hands a typing or presence notice to the room's connections; dropped
    /// for connections whose queue is full.
    pub fn dispatch_ephemeral(&self, event: &EphemeralEvent) {
        let Some(conns) = self.rooms.get(&event.room_id) else {
            return;
        };
        let frame = frame_of("ephemeral", &event.event);
        for h in conns.values() {
            let _ = h.offer(Feed::Ephemeral(frame.clone()));
        }
    }

    /// Tells every connection to re-read the store (the hub lagged).
    pub fn resync_all(&self) {
        for conns in self.rooms.iter() {
            for h in conns.values() {
                h.resync.notify_one();
            }
        }
    }
}

/// Follows the engine's timeline and ephemeral streams and fans them out to
/// the connections of each room, until `shutdown`.
pub fn spawn_hub(
    kit: &RoomKit,
    registry: Arc<ConnectionRegistry>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut timeline = kit.subscribe_timeline();
    let mut ephemeral = kit.subscribe_ephemeral();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = timeline.recv() => match r {
                    Ok(event) => {
                        metrics.event_seen();
                        registry.dispatch(&event, None);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(target: "roomkit.server.ws", missed = n, "timeline stream lagged; connections resync from the store");
                        registry.resync_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                r = ephemeral.recv() => match r {
                    Ok(e) => registry.dispatch_ephemeral(&e),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    })
}

/// The `websocket` channel (RFC Appendix A.8): full capabilities, and a
/// `deliver()` that hands the event to the connections of this channel.
pub struct WebSocketChannel {
    id: ChannelId,
    registry: Arc<ConnectionRegistry>,
}

impl WebSocketChannel {
    /// A WebSocket channel whose connections live in `registry`.
    pub fn new(id: impl Into<ChannelId>, registry: Arc<ConnectionRegistry>) -> Self {
        Self {
            id: id.into(),
            registry,
        }
    }
}

#[async_trait]
impl Channel for WebSocketChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Websocket
    }

    fn category(&self) -> ChannelCategory {
        ChannelCategory::Transport
    }

    fn provider_name(&self) -> Option<&str> {
        Some("websocket")
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::full()
    }

    fn sender_is_participant(&self) -> bool {
        true
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        // Connections de-duplicate by index, so an event that also arrived
        // through the hub is shown once.
        self.registry
            .dispatch(&Arc::new(event.clone()), Some(&self.id));
        Ok(ChannelOutput::empty())
    }
}

/// A frame from a client. Parsed once per frame and consumed at once, so
/// the size of the `send` variant does not matter.
#[derive(Debug, Deserialize)]
#[allow(clippy::large_enum_variant)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Runs the inbound pipeline; answered by an `ack`.
    Send {
        /// The content.
        content: EventContent,
        /// Duplicate-prevention key.
        #[serde(default)]
        idempotency_key: Option<String>,
        /// Echoed back in the `ack`.
        #[serde(default)]
        client_ref: Option<serde_json::Value>,
        /// Correlation reference.
        #[serde(default)]
        correlation_id: Option<String>,
        /// Event metadata.
        #[serde(default)]
        metadata: Option<Map>,
        /// Intelligence channels asked to act.
        #[serde(default)]
        addressed_to: Option<Vec<ChannelId>>,
    },
    /// A typing notice (ephemeral, never stored).
    Typing {},
    /// A read receipt up to an index (stored as READ_RECEIPT).
    Read {
        /// Highest index read.
        index: u64,
    },
    /// Answered by `pong`.
    Ping {},
}

/// `GET /ws/{room_id}?channel_id=..[&participant_id=..][&after_index=N]`.
///
/// # Errors
/// 400 when `channel_id` is missing or `after_index` is not a number; 429
/// when the key (or client address) already has as many connections as
/// allowed. An unknown room or unattached channel is reported after the
/// upgrade, with close code 4404.
pub async fn upgrade(
    State(state): State<AppState>,
    scope: crate::auth::Scope,
    Path(room_id): Path<String>,
    headers: axum::http::HeaderMap,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    params: Params,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    // A plain request (no upgrade headers) gets the JSON error shape too.
    let ws = ws.map_err(|r| {
        ApiError::new(
            r.status(),
            "websocket_upgrade_required",
            format!("this endpoint takes a WebSocket upgrade: {}", r.body_text()),
        )
    })?;
    let channel_id = ChannelId::from(params.required("channel_id")?);
    crate::ids::check_opt("participant_id", params.text("participant_id"))?;
    let participant_id = params.text("participant_id").map(ParticipantId::from);
    let after_index = params.u64("after_index")?;
    let room_id = RoomId::from(room_id);
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a);
    let key = cap_key(&state, &headers, &params, peer);
    let Some(permit) = state.ws_limits.acquire(key) else {
        state.metrics.ws_refused();
        tracing::info!(target: "roomkit.server.ws", room_id = %room_id, "websocket refused: too many connections for this key");
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            "this key (or client address) has as many WebSocket connections open as allowed",
        ));
    };
    // Join before answering the handshake: everything committed after the
    // client sees the upgrade reaches it.
    let joined = match scope.check_room(&state.kit, &room_id).await {
        // Another organization's room is closed like an unknown one.
        Err(e) if e.code == "room_not_found" => Err(e.message),
        _ => join(&state, &room_id, &channel_id, after_index).await,
    };
    let frames = state.ws_rate_limit.map(FrameLimit::new);
    let limit = state.frame_limit;
    let tasks = state.ws_tasks.clone();
    let session = Session {
        room_id,
        channel_id,
        participant_id,
        state,
        next: 0,
        reader: None,
        readable: false,
        sent_close: false,
        frames,
        _permit: permit,
    };
    // Small initial buffers: the library's defaults (128 KiB each way) cost
    // more than the rest of a connection. The read buffer still grows for a
    // large frame, and writing through unbuffered sends each event at once.
    Ok(ws
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| tasks.track_future(session.run(socket, joined))))
}

/// A connection that joined its room: registered, with its reader and the
/// first index it owes the client.
struct Joined {
    registration: Registration,
    reader: Reader,
    next: u64,
    /// Whether the binding's access lets the channel read (RFC §7.1).
    readable: bool,
}

/// Checks the room and binding, registers the connection and takes its
/// starting position; the error is the close reason (code 4404).
async fn join(
    state: &AppState,
    room_id: &RoomId,
    channel_id: &ChannelId,
    after_index: Option<u64>,
) -> Result<Joined, String> {
    let kit = &state.kit;
    kit.get_room(room_id).await.map_err(|e| e.to_string())?;
    let binding = kit
        .get_binding(room_id, channel_id)
        .await
        .map_err(|e| e.to_string())?;
    if binding.channel_type != ChannelType::Websocket {
        return Err(format!("channel {channel_id} is not a websocket channel"));
    }
    // Register before reading the position, so nothing committed in
    // between is missed.
    let registration = state.connections.register_connection(room_id, channel_id);
    let next = match after_index {
        Some(n) => n.saturating_add(1),
        None => {
            kit.get_room(room_id)
                .await
                .map_err(|e| e.to_string())?
                .event_count
        }
    };
    Ok(Joined {
        registration,
        reader: Reader {
            channel_id: channel_id.clone(),
            category: binding.category,
        },
        next,
        readable: binding.access.can_read(),
    })
}

type Sink = SplitSink<WebSocket, Message>;

struct Session {
    room_id: RoomId,
    channel_id: ChannelId,
    participant_id: Option<ParticipantId>,
    state: AppState,
    /// The next index this client is owed.
    next: u64,
    reader: Option<Reader>,
    /// Whether the binding may read: a write-only (or `none`) binding is
    /// never a delivery target, so its connections get only their own
    /// events. Follows the CHANNEL_UPDATED markers in timeline order.
    readable: bool,
    sent_close: bool,
    /// The inbound frame limit, when one is configured.
    frames: Option<FrameLimit>,
    /// The place under the per-key cap, held while the connection lives.
    _permit: WsPermit,
}

/// The inbound frame rate of one connection: `limit` frames per second
/// (bursts of the same size). Refused frames spend a second budget of
/// `max(2 × limit, 20)`, refilled at `limit` per second; a client that
/// spends it is disconnected.
struct FrameLimit {
    frames: crate::auth::TokenBucket,
    strikes: crate::auth::TokenBucket,
}

/// What the frame limit says about one inbound frame.
enum FrameVerdict {
    Accept,
    Refuse,
    Disconnect,
}

impl FrameLimit {
    fn new(limit: u32) -> Self {
        let rate = f64::from(limit.max(1));
        Self {
            frames: crate::auth::TokenBucket::new(rate, rate),
            strikes: crate::auth::TokenBucket::new(rate, (2.0 * rate).max(20.0)),
        }
    }

    fn check(&mut self) -> FrameVerdict {
        if self.frames.take().is_ok() {
            FrameVerdict::Accept
        } else if self.strikes.take().is_ok() {
            FrameVerdict::Refuse
        } else {
            FrameVerdict::Disconnect
        }
    }
}

/// The client is gone (or the connection is being closed).
struct Gone;

impl Session {
    async fn run(mut self, socket: WebSocket, joined: Result<Joined, String>) {
        let (mut sink, mut stream) = socket.split();
        let mut reg = match joined {
            Ok(j) => {
                self.reader = Some(j.reader);
                self.readable = j.readable;
                self.next = j.next;
                j.registration
            }
            Err(reason) => {
                self.close(&mut sink, &mut stream, CLOSE_NOT_FOUND, &reason)
                    .await;
                return;
            }
        };
        let metrics = self.state.metrics.clone();
        metrics.ws_opened();
        tracing::info!(target: "roomkit.server.ws", room_id = %self.room_id, channel_id = %self.channel_id, connection = reg.id, "websocket connected");
        let shutdown = self.state.shutdown.clone();
        let outcome: Result<(), Gone> = async {
            self.catch_up(&mut sink).await?;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.close(&mut sink, &mut stream, CLOSE_GOING_AWAY, "server shutting down").await;
                        return Err(Gone);
                    }
                    msg = stream.next() => match msg {
                        None => return Err(Gone),
                        Some(Ok(Message::Text(text))) => {
                            metrics.frame_in();
                            if self.frame_allowed(&mut sink, &mut stream).await? {
                                self.on_text(&mut sink, text.as_str()).await?;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            metrics.frame_in();
                            if self.frame_allowed(&mut sink, &mut stream).await? {
                                self.send_error(&mut sink, "unsupported_frame", "binary frames are not supported; send JSON text frames", None).await?;
                            }
                        }
                        Some(Ok(Message::Close(_))) => return Err(Gone),
                        // Control frames count against the frame limit too.
                        Some(Ok(_)) => {
                            self.frame_allowed(&mut sink, &mut stream).await?;
                        }
                        Some(Err(e)) => {
                            let text = e.to_string();
                            if text.contains("too long") || text.contains("Space limit") || text.contains("apacity") {
                                tracing::info!(target: "roomkit.server.ws", room_id = %self.room_id, error = %text, "websocket message over the limit");
                                self.close(&mut sink, &mut stream, CLOSE_TOO_BIG, "message too big").await;
                            } else {
                                tracing::debug!(target: "roomkit.server.ws", room_id = %self.room_id, error = %text, "websocket read failed");
                            }
                            return Err(Gone);
                        }
                    },
                    feed = next_feed(&mut reg.rx, &reg.queued) => match feed {
                        Some(Feed::Event(event, frame)) => self.on_event(&mut sink, &event, Some(frame)).await?,
                        Some(Feed::Ephemeral(frame)) => if self.readable {
                            self.send(&mut sink, Message::Text(frame)).await?;
                        },
                        None => return Err(Gone),
                    },
                    _ = reg.resync.notified() => {
                        metrics.resync();
                        self.catch_up(&mut sink).await?;
                    }
                }
            }
        }
        .await;
        let _ = outcome;
        if !self.sent_close {
            let _ = sink.close().await;
        }
        metrics.ws_closed();
        tracing::info!(target: "roomkit.server.ws", room_id = %self.room_id, channel_id = %self.channel_id, connection = reg.id, "websocket disconnected");
        drop(reg);
    }

    /// Applies the frame limit to one inbound data frame: false when the
    /// frame is refused (the client got a `rate_limited` error), `Gone`
    /// when the client was disconnected for flooding.
    async fn frame_allowed(
        &mut self,
        sink: &mut Sink,
        stream: &mut futures::stream::SplitStream<WebSocket>,
    ) -> Result<bool, Gone> {
        let Some(limit) = self.frames.as_mut() else {
            return Ok(true);
        };
        match limit.check() {
            FrameVerdict::Accept => Ok(true),
            FrameVerdict::Refuse => {
                self.state.metrics.rate_limited();
                self.send_error(
                    sink,
                    "rate_limited",
                    "too many frames on this connection; slow down",
                    None,
                )
                .await?;
                Ok(false)
            }
            FrameVerdict::Disconnect => {
                self.state.metrics.rate_limited();
                tracing::info!(target: "roomkit.server.ws", room_id = %self.room_id, channel_id = %self.channel_id, "websocket closed: frame rate exceeded");
                self.close(sink, stream, CLOSE_POLICY, "rate limited").await;
                Err(Gone)
            }
        }
    }

    /// Sends one frame; a client that does not take it within the send
    /// timeout is closed with [`CLOSE_TOO_SLOW`].
    async fn send(&mut self, sink: &mut Sink, msg: Message) -> Result<(), Gone> {
        let limit = self.state.ws_limits.send_timeout;
        match tokio::time::timeout(limit, sink.send(msg)).await {
            Ok(sent) => sent.map_err(|_| Gone)?,
            Err(_) => {
                self.state.metrics.ws_slow_closed();
                tracing::info!(target: "roomkit.server.ws", room_id = %self.room_id, channel_id = %self.channel_id, timeout_ms = limit.as_millis() as u64, "websocket client too slow; closing");
                self.sent_close = true;
                let frame = CloseFrame {
                    code: CLOSE_TOO_SLOW,
                    reason: Utf8Bytes::from_static("client too slow: not reading"),
                };
                // The unsent rest of the stalled frame goes first; give up
                // on a client that still does not read.
                let _ =
                    tokio::time::timeout(SLOW_CLOSE_GRACE, sink.send(Message::Close(Some(frame))))
                        .await;
                return Err(Gone);
            }
        }
        self.state.metrics.frame_out();
        Ok(())
    }

    async fn send_json(&mut self, sink: &mut Sink, value: serde_json::Value) -> Result<(), Gone> {
        self.send(sink, Message::Text(Utf8Bytes::from(value.to_string())))
            .await
    }

    async fn send_error(
        &mut self,
        sink: &mut Sink,
        code: &str,
        message: &str,
        client_ref: Option<serde_json::Value>,
    ) -> Result<(), Gone> {
        let mut frame =
            serde_json::json!({"type": "error", "error": {"code": code, "message": message}});
        if let Some(r) = client_ref {
            frame["client_ref"] = r;
        }
        self.send_json(sink, frame).await
    }

    /// Sends a close frame and waits (briefly) for the client's answer.
    async fn close(
        &mut self,
        sink: &mut Sink,
        stream: &mut futures::stream::SplitStream<WebSocket>,
        code: u16,
        reason: &str,
    ) {
        let mut reason: String = reason.chars().take(100).collect();
        while reason.len() > 120 {
            reason.pop();
        }
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        self.sent_close = true;
        let limit = self.state.ws_limits.send_timeout;
        if !matches!(
            tokio::time::timeout(limit, sink.send(Message::Close(Some(frame)))).await,
            Ok(Ok(()))
        ) {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Sends what the store holds from `next` on (what the client may see).
    ///
    /// Pages are sized by bytes: each page asks for as many events as fit
    /// [`CATCH_UP_PAGE_BYTES`] at the sizes seen in the previous page, and
    /// events are dropped as soon as they are sent.
    async fn catch_up(&mut self, sink: &mut Sink) -> Result<(), Gone> {
        let mut limit = CATCH_UP_FIRST_PAGE;
        loop {
            let query = TimelineQuery {
                after_index: self.next.checked_sub(1),
                limit: Some(limit),
                visible_to: None,
            };
            let page = match self.state.kit.timeline(&self.room_id, query).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(target: "roomkit.server.ws", room_id = %self.room_id, error = %e, "catch-up read failed");
                    return Ok(());
                }
            };
            let full = page.len() == limit;
            let mut bytes = 0usize;
            let mut yielded_at = 0usize;
            let mut count = 0usize;
            for event in page {
                // The store is authoritative: a hole (hard-deleted events)
                // is skipped rather than waited for.
                if event.index >= self.next {
                    let visible = self.reader.as_ref().is_some_and(|r| r.may_see(&event));
                    let frame = visible.then(|| self.state.connections.event_frame(&event));
                    bytes += frame.as_ref().map_or(256, |f| f.len());
                    count += 1;
                    self.emit(sink, &event, frame).await?;
                    // A socket with room takes frame after frame without
                    // waiting: after every 64 KiB, let other connections
                    // (health checks included) run.
                    if bytes - yielded_at >= CATCH_UP_YIELD_BYTES {
                        yielded_at = bytes;
                        tokio::task::yield_now().await;
                    }
                }
            }
            if !full {
                return Ok(());
            }
            let average = (bytes / count.max(1)).max(1);
            limit = (CATCH_UP_PAGE_BYTES / average).clamp(1, CATCH_UP_PAGE);
        }
    }

    async fn on_event(
        &mut self,
        sink: &mut Sink,
        event: &Arc<RoomEvent>,
        frame: Option<Utf8Bytes>,
    ) -> Result<(), Gone> {
        if event.room_id != self.room_id || event.index < self.next {
            return Ok(());
        }
        if event.index > self.next {
            // A gap: the store holds everything up to this event.
            self.state.metrics.resync();
            return self.catch_up(sink).await;
        }
        self.emit(sink, event, frame).await
    }

    /// Sends `event` when the channel may see it and moves past it.
    async fn emit(
        &mut self,
        sink: &mut Sink,
        event: &Arc<RoomEvent>,
        frame: Option<Utf8Bytes>,
    ) -> Result<(), Gone> {
        self.next = event.index + 1;
        if event.event_type == EventType::ChannelUpdated
            && let Some(readable) = access_change(event, &self.channel_id)
        {
            self.readable = readable;
        }
        let visible = self.reader.as_ref().is_some_and(|r| r.may_see(event))
            && (self.readable || event.source.channel_id == self.channel_id);
        if visible {
            let frame = frame.unwrap_or_else(|| frame_of("event", event));
            self.send(sink, Message::Text(frame)).await?;
        }
        if event.event_type == EventType::ChannelDetached && detaches(event, &self.channel_id) {
            let reason = format!("channel {} was detached from the room", self.channel_id);
            let frame = CloseFrame {
                code: CLOSE_NOT_FOUND,
                reason: Utf8Bytes::from(reason),
            };
            self.sent_close = true;
            let _ = sink.send(Message::Close(Some(frame))).await;
            return Err(Gone);
        }
        Ok(())
    }

    async fn on_text(&mut self, sink: &mut Sink, text: &str) -> Result<(), Gone> {
        let frame: ClientFrame = match parse_json(text.as_bytes()) {
            Ok(f) => f,
            Err(e) => return self.send_error(sink, &e.code, &e.message, None).await,
        };
        let kit = self.state.kit.clone();
        match frame {
            ClientFrame::Ping {} => {
                self.send_json(sink, serde_json::json!({"type": "pong"}))
                    .await
            }
            ClientFrame::Send {
                content,
                idempotency_key,
                client_ref,
                correlation_id,
                metadata,
                addressed_to,
            } => {
                if let Err(e) = crate::ids::check_opt("idempotency_key", idempotency_key.as_deref())
                    .and_then(|()| {
                        crate::ids::check_opt("correlation_id", correlation_id.as_deref())
                    })
                {
                    let r = client_ref.unwrap_or(serde_json::Value::Null);
                    return self.send_error(sink, &e.code, &e.message, Some(r)).await;
                }
                let request = SendEvent {
                    room_id: self.room_id.clone(),
                    channel_id: self.channel_id.clone(),
                    content: Some(content),
                    participant_id: self.participant_id.clone(),
                    idempotency_key,
                    correlation_id,
                    metadata: metadata.unwrap_or_default(),
                    addressed_to,
                    ..SendEvent::default()
                };
                // Handled inline: events of this send reach the client only
                // after its ack.
                match kit.send_event(request).await {
                    Ok(result) => {
                        let ack = serde_json::json!({
                            "type": "ack",
                            "client_ref": client_ref,
                            "result": result,
                        });
                        self.send_json(sink, ack).await
                    }
                    Err(e) => {
                        let e = ApiError::from(e);
                        let r = client_ref.unwrap_or(serde_json::Value::Null);
                        self.send_error(sink, &e.code, &e.message, Some(r)).await
                    }
                }
            }
            ClientFrame::Typing {} => {
                let request = SendEvent {
                    room_id: self.room_id.clone(),
                    channel_id: self.channel_id.clone(),
                    content: Some(EventContent::system("typing", "typing")),
                    event_type: Some(EventType::Typing),
                    participant_id: self.participant_id.clone(),
                    ..SendEvent::default()
                };
                match kit.send_event(request).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let e = ApiError::from(e);
                        self.send_error(sink, &e.code, &e.message, None).await
                    }
                }
            }
            ClientFrame::Read { index } => {
                let mut data = Map::new();
                data.insert("index".into(), index.into());
                let request = SendEvent {
                    room_id: self.room_id.clone(),
                    channel_id: self.channel_id.clone(),
                    content: Some(EventContent::System(SystemContent {
                        code: "read".into(),
                        message: format!("read up to index {index}"),
                        data,
                    })),
                    event_type: Some(EventType::ReadReceipt),
                    participant_id: self.participant_id.clone(),
                    ..SendEvent::default()
                };
                match kit.send_event(request).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let e = ApiError::from(e);
                        self.send_error(sink, &e.code, &e.message, None).await
                    }
                }
            }
        }
    }
}

/// True when `event` (a CHANNEL_DETACHED marker) detaches `channel_id`.
/// Whether a CHANNEL_UPDATED marker about `channel_id` leaves it readable;
/// `None` for a marker about another channel.
fn access_change(event: &RoomEvent, channel_id: &ChannelId) -> Option<bool> {
    let EventContent::System(s) = &event.content else {
        return None;
    };
    if s.data.get("channel_id").and_then(|v| v.as_str()) != Some(channel_id.as_str()) {
        return None;
    }
    let access: roomkit_core::model::Access =
        serde_json::from_value(s.data.get("access")?.clone()).ok()?;
    Some(access.can_read())
}

fn detaches(event: &RoomEvent, channel_id: &ChannelId) -> bool {
    match &event.content {
        EventContent::System(s) => s
            .data
            .get("channel_id")
            .and_then(|v| v.as_str())
            .is_some_and(|c| c == channel_id.as_str()),
        _ => false,
    }
}
