//! The call observer: starts calls, collects what happens in them (room
//! events, framework events, explicit records, two audio taps) and hands
//! finished calls to the exporters.
//!
//! Each call has one task that owns its state: the mixer, the spool
//! writer, the first-speaker flag. Everything reaches it through two
//! bounded queues (records, audio), filled with `try_send`: a full queue
//! drops and counts, so the conversation never waits for analytics.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use roomkit_core::RoomKit;
use roomkit_model::{
    ChannelType, EventContent, EventStatus, EventType, FrameworkEvent, RoomEvent, RoomId,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audio_sink::CallRecordingSink;
use crate::clock::{MediaClock, offset_ms};
use crate::error::{AnalyticsError, Result};
use crate::export::{CallFeed, Exporter, Progress};
use crate::mixer::StereoMixer;
use crate::protocol::{
    CHUNK_BYTES, CallStarted, DEFAULT_END_REASON, MetricKind, MetricRecord, ToolCallRecord,
    ToolRecord, ToolResultRecord, TranscriptEntry, format_timestamp,
};
use crate::rooms::RoomCallPolicy;
use crate::spool::{CallFiles, CallMeta, CallWriter, Spool, SpoolRecord, validate_call_id};
use crate::tap::{AudioTap, CallTap, Side, TapFrame};

const TARGET: &str = "roomkit.analytics.observer";

/// Metadata key of a message event: start of the utterance in ms on the
/// call's media clock (set by voice channels).
pub const SPEECH_START_MS: &str = "speech_start_ms";
/// Metadata key of a message event: end of the utterance in ms on the
/// call's media clock.
pub const SPEECH_END_MS: &str = "speech_end_ms";
/// Metadata key a voice session puts on the messages it commits (the
/// caller's utterances, a reply cut at a barge-in).
pub const VOICE_SESSION_ID: &str = "voice_session_id";
/// `callEndedReason` of a voice call whose session ended (the media stream
/// closed, whoever hung up).
pub const VOICE_END_REASON: &str = "client-disconnected";
/// `callEndedReason` of a room's text call ended because a voice session
/// started in the room (the voice session is a call of its own).
pub const VOICE_TAKEOVER_REASON: &str = "voice-call-started";

/// Settings of the analytics service.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Recording sample rate (both channels).
    pub sample_rate: u32,
    /// How far behind the furthest side frames are released when the other
    /// side is silent.
    pub holdback: Duration,
    /// Most audio the mixer holds in memory.
    pub max_buffer: Duration,
    /// Longest recording; later samples are refused and counted.
    pub max_call_duration: Duration,
    /// Bound of each call's audio queue, in frames.
    pub audio_queue: usize,
    /// Bound of each call's record queue.
    pub record_queue: usize,
    /// Keep a call's spool directory after every export completed.
    pub keep_exported: bool,
}

impl AnalyticsConfig {
    /// Defaults with the given spool directory: 24 kHz, 0.5 s hold-back,
    /// 10 s mixer buffer, 6 h maximum, 1024 queued frames, 1024 queued
    /// records.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            spool_dir: spool_dir.into(),
            sample_rate: 24_000,
            holdback: Duration::from_millis(500),
            max_buffer: Duration::from_secs(10),
            max_call_duration: Duration::from_secs(6 * 3600),
            audio_queue: 1024,
            record_queue: 1024,
            keep_exported: false,
        }
    }
}

/// How a call starts.
#[derive(Debug, Clone, Default)]
pub struct StartCall {
    /// The room the call lives in.
    pub room_id: RoomId,
    /// Call id; a random UUID when `None` or empty.
    pub call_id: Option<String>,
    /// Agent id (required by the protocol; verbatim).
    pub agent_id: String,
    /// Agent name.
    pub agent_name: Option<String>,
    /// Agent prompt.
    pub agent_prompt: Option<String>,
    /// Test call.
    pub is_test: bool,
    /// Integrator data, kept in the local report (the Roark protocol has
    /// no field for it).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Whether the call has audio: when false, no offsets are written.
    pub capture_audio: bool,
}

impl StartCall {
    /// A call in `room_id` for `agent_id`, with audio.
    pub fn new(room_id: impl Into<RoomId>, agent_id: impl Into<String>) -> Self {
        Self {
            room_id: room_id.into(),
            agent_id: agent_id.into(),
            capture_audio: true,
            ..Self::default()
        }
    }
}

/// Who is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The human.
    User,
    /// The agent.
    Assistant,
    /// System text.
    System,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

/// A transcript entry handed to the observer.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptInput {
    /// Speaker.
    pub role: Role,
    /// Text (not logged, ever).
    pub text: String,
    /// Start on the media clock; the end when `None`.
    pub start: Option<Duration>,
    /// End on the media clock; the moment of recording when `None`.
    pub end: Option<Duration>,
    /// Language code.
    pub language: Option<String>,
    /// Speaker id.
    pub user_id: Option<String>,
}

impl TranscriptInput {
    /// An entry with no span (it is placed at the moment it is recorded).
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            text: text.into(),
            start: None,
            end: None,
            language: None,
            user_id: None,
        }
    }

    /// Sets the span on the media clock.
    #[must_use]
    pub fn span(mut self, start: Duration, end: Duration) -> Self {
        self.start = Some(start);
        self.end = Some(end);
        self
    }

    /// Sets the language.
    #[must_use]
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets the speaker id.
    #[must_use]
    pub fn user_id(mut self, id: impl Into<String>) -> Self {
        self.user_id = Some(id.into());
        self
    }
}

/// Counters of the whole service.
#[derive(Debug, Default)]
struct Counters {
    calls_started: AtomicU64,
    calls_flushed: AtomicU64,
    calls_disabled: AtomicU64,
    audio_frames_dropped: Arc<AtomicU64>,
    records_dropped: AtomicU64,
    late_samples: AtomicU64,
    refused_samples: AtomicU64,
    spool_errors: AtomicU64,
    bus_lagged: AtomicU64,
    exports_completed: AtomicU64,
    exports_parked: AtomicU64,
    calls_quarantined: AtomicU64,
}

/// A snapshot of the service's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AnalyticsStats {
    /// Calls started with analytics on.
    pub calls_started: u64,
    /// Calls flushed.
    pub calls_flushed: u64,
    /// Calls that ran without analytics (no exporter, or spool failure).
    pub calls_disabled: u64,
    /// Audio frames dropped because a call's queue was full.
    pub audio_frames_dropped: u64,
    /// Records dropped because a call's queue was full.
    pub records_dropped: u64,
    /// Samples dropped because they came after their frames were written.
    pub late_samples: u64,
    /// Samples refused beyond the maximum call duration.
    pub refused_samples: u64,
    /// Spool write failures.
    pub spool_errors: u64,
    /// Room and framework events missed because the bus overran.
    pub bus_lagged: u64,
    /// Calls whose every export completed.
    pub exports_completed: u64,
    /// Calls left in the spool after an export gave up.
    pub exports_parked: u64,
    /// Calls moved to quarantine.
    pub calls_quarantined: u64,
}

/// Where the export of a call stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportState {
    /// Still running.
    Running,
    /// Every exporter finished.
    Completed,
    /// At least one exporter gave up; the call stays in the spool and is
    /// exported again on the next start.
    Parked(Vec<String>),
    /// The call's spool was unreadable and was moved to quarantine.
    Quarantined(String),
    /// Analytics was off for this call.
    Disabled,
}

/// What [`CallAnalytics::recover`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Calls whose export was resumed.
    pub resumed: usize,
    /// Of those, calls that had not been flushed before the restart.
    pub unfinished: usize,
    /// Calls moved to quarantine.
    pub quarantined: usize,
}

struct Inner {
    config: AnalyticsConfig,
    spool: Option<Spool>,
    exporters: Vec<Arc<dyn Exporter>>,
    rooms: RwLock<HashMap<RoomId, CallHandle>>,
    /// Voice calls by session id, with where the session's media clock
    /// starts on the call's.
    voice: Mutex<HashMap<String, VoiceCall>>,
    /// Set by [`CallAnalytics::observe_rooms_owned`]: who may start a
    /// room's call.
    ownership: std::sync::OnceLock<Arc<dyn crate::ownership::CallOwnership>>,
    exports: Mutex<HashMap<String, watch::Receiver<ExportState>>>,
    counters: Arc<Counters>,
    tracker: TaskTracker,
    /// The runtime the service was built on: calls started from another
    /// one (a voice session's own thread) still run their tasks here, so
    /// they outlive the caller's runtime.
    runtime: Option<tokio::runtime::Handle>,
    cancel: CancellationToken,
}

/// The call analytics service. Cheap to clone.
#[derive(Clone)]
pub struct CallAnalytics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CallAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallAnalytics")
            .field("spool", &self.inner.config.spool_dir)
            .field(
                "exporters",
                &self
                    .inner
                    .exporters
                    .iter()
                    .map(|e| e.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CallAnalytics {
    /// A service exporting to `exporters`. With no exporter (for instance
    /// when the kill switch is engaged) it is inert: no spool, no tasks, no
    /// traffic, and every call handle is a no-op.
    ///
    /// # Errors
    /// When the spool directory cannot be created.
    pub fn new(config: AnalyticsConfig, exporters: Vec<Arc<dyn Exporter>>) -> Result<Self> {
        let spool = if exporters.is_empty() {
            None
        } else {
            Some(Spool::open(&config.spool_dir)?)
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                spool,
                exporters,
                rooms: RwLock::new(HashMap::new()),
                voice: Mutex::new(HashMap::new()),
                ownership: std::sync::OnceLock::new(),
                exports: Mutex::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
                tracker: TaskTracker::new(),
                runtime: tokio::runtime::Handle::try_current().ok(),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// Spawns a task of the service on its runtime.
    fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.inner.runtime {
            Some(rt) => {
                self.inner.tracker.spawn_on(task, rt);
            }
            None => {
                self.inner.tracker.spawn(task);
            }
        }
    }

    /// Whether any exporter is configured.
    pub fn is_enabled(&self) -> bool {
        !self.inner.exporters.is_empty()
    }

    /// The configuration.
    pub fn config(&self) -> &AnalyticsConfig {
        &self.inner.config
    }

    /// Counters.
    pub fn stats(&self) -> AnalyticsStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AnalyticsStats {
            calls_started: l(&c.calls_started),
            calls_flushed: l(&c.calls_flushed),
            calls_disabled: l(&c.calls_disabled),
            audio_frames_dropped: l(&c.audio_frames_dropped),
            records_dropped: l(&c.records_dropped),
            late_samples: l(&c.late_samples),
            refused_samples: l(&c.refused_samples),
            spool_errors: l(&c.spool_errors),
            bus_lagged: l(&c.bus_lagged),
            exports_completed: l(&c.exports_completed),
            exports_parked: l(&c.exports_parked),
            calls_quarantined: l(&c.calls_quarantined),
        }
    }

    /// Follows a kit's committed room events and framework events, and
    /// routes them to the call running in their room: text messages become
    /// transcript entries, `ai_turn_metrics` become `llm` metrics,
    /// `ai_tool_call` events become paired tool call and result records, and
    /// a room being paused, closed, archived or deleted flushes its call
    /// (`room-paused`, `room-closed`, `room-archived`, `room-deleted`).
    pub fn attach(&self, kit: &RoomKit) {
        self.spawn_dispatch(kit, None);
    }

    /// As [`CallAnalytics::attach`], and every room becomes a call by
    /// itself under `policy` (see [`crate::rooms`]): the call starts when
    /// the room's first message is committed and ends (flush) when the
    /// room is paused, closed, archived or deleted, or when no message came
    /// for the policy's idle timeout (`idle-timeout`). Use it instead of
    /// `attach`, not with it (each would route every event).
    pub fn observe_rooms(&self, kit: &RoomKit, policy: RoomCallPolicy) {
        self.spawn_dispatch(kit, Some((kit.clone(), policy)));
    }

    /// As [`CallAnalytics::observe_rooms`], for one of several processes
    /// sharing a store: a room's call is started only by the process that
    /// `ownership` says holds the room (asked at each message of a room
    /// without a call here, so a process takes over the rooms of one that
    /// died once their leases expire).
    pub fn observe_rooms_owned(
        &self,
        kit: &RoomKit,
        policy: RoomCallPolicy,
        ownership: Arc<dyn crate::ownership::CallOwnership>,
    ) {
        let _ = self.inner.ownership.set(ownership);
        self.observe_rooms(kit, policy);
    }

    fn spawn_dispatch(&self, kit: &RoomKit, rooms: Option<(RoomKit, RoomCallPolicy)>) {
        if !self.is_enabled() {
            return;
        }
        let timeline = kit.subscribe_timeline();
        let framework = kit.subscribe();
        let this = self.clone();
        self.spawn(async move { this.dispatch(timeline, framework, rooms).await });
    }

    async fn dispatch(
        self,
        mut timeline: broadcast::Receiver<Arc<RoomEvent>>,
        mut framework: broadcast::Receiver<Arc<FrameworkEvent>>,
        rooms: Option<(RoomKit, RoomCallPolicy)>,
    ) {
        let lagged = |n: u64| {
            self.inner
                .counters
                .bus_lagged
                .fetch_add(n, Ordering::Relaxed);
            tracing::warn!(target: TARGET, missed = n, "analytics fell behind the event bus");
        };
        // Rooms that opted out, until they end.
        let mut skipped: HashSet<RoomId> = HashSet::new();
        // Last message of each auto-started call, for the idle timeout.
        let mut last: HashMap<RoomId, Instant> = HashMap::new();
        let idle = rooms.as_ref().and_then(|(_, p)| p.idle_timeout);
        let period = idle.map_or(Duration::from_secs(30), |d| {
            (d / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
        });
        let mut sweep = tokio::time::interval(period);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Room events first: a call starts on its first message,
                // before the framework events of the answer reach it.
                biased;
                () = self.inner.cancel.cancelled() => break,
                r = timeline.recv() => match r {
                    Ok(ev) => {
                        let call = match self.call_in_room(&ev.room_id) {
                            Some(call) => Some(call),
                            None => match &rooms {
                                Some((kit, policy)) => {
                                    self.auto_start(kit, policy, &ev, &mut skipped).await
                                }
                                None => None,
                            },
                        };
                        if let Some(call) = call {
                            // A voice call ends with its session, never idle.
                            if idle.is_some()
                                && ev.event_type == EventType::Message
                                && !call.is_voice()
                            {
                                last.insert(ev.room_id.clone(), Instant::now());
                            }
                            call.room_event(ev);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => lagged(n),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                r = framework.recv() => match r {
                    Ok(ev) => {
                        if let Some(room) = room_ended(&ev) {
                            skipped.remove(room);
                            last.remove(room);
                        }
                        self.framework_event(&ev);
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => lagged(n),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = sweep.tick(), if idle.is_some() => {
                    if let Some(idle) = idle {
                        self.end_idle_calls(&mut last, idle);
                    }
                }
            }
        }
    }

    /// Ends the auto-started calls whose last message is older than `idle`.
    fn end_idle_calls(&self, last: &mut HashMap<RoomId, Instant>, idle: Duration) {
        let now = Instant::now();
        let stale: Vec<RoomId> = last
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= idle)
            .map(|(r, _)| r.clone())
            .collect();
        for room in stale {
            last.remove(&room);
            // A voice call that took the room over ends with its session.
            if let Some(call) = self.call_in_room(&room)
                && !call.is_voice()
            {
                self.spawn(async move {
                    call.flush("idle-timeout").await;
                });
            }
        }
    }

    /// Starts the call of a room on its first message, unless the room
    /// opted out.
    async fn auto_start(
        &self,
        kit: &RoomKit,
        policy: &RoomCallPolicy,
        ev: &RoomEvent,
        skipped: &mut HashSet<RoomId>,
    ) -> Option<CallHandle> {
        if ev.event_type != EventType::Message
            || ev.status == EventStatus::Blocked
            || ev.source.channel_type == ChannelType::System
            || matches!(ev.content, EventContent::System(_))
            || from_voice_session(ev)
            || skipped.contains(&ev.room_id)
        {
            return None;
        }
        if let Some(owners) = self.inner.ownership.get()
            && !owners.claim(&ev.room_id).await
        {
            tracing::debug!(target: TARGET, room_id = %ev.room_id, "another process owns this room's call");
            return None;
        }
        let metadata = match kit.get_room(&ev.room_id).await {
            Ok(room) => room.metadata,
            Err(e) => {
                tracing::warn!(target: TARGET, room_id = %ev.room_id, error = %e, "cannot read the room; its call uses the defaults");
                roomkit_model::Map::new()
            }
        };
        match policy.start_for(&ev.room_id, &metadata) {
            Some(start) => {
                let call = self.start_call(start);
                if !call.is_enabled() {
                    // Logged and counted by start_call; not retried per message.
                    skipped.insert(ev.room_id.clone());
                    return None;
                }
                Some(call)
            }
            None => {
                tracing::debug!(target: TARGET, room_id = %ev.room_id, "room opted out of call analytics");
                skipped.insert(ev.room_id.clone());
                None
            }
        }
    }

    fn framework_event(&self, ev: &FrameworkEvent) {
        match ev {
            FrameworkEvent::AiTurnMetrics {
                room_id,
                ttft_ms,
                duration_ms,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
                tokens_per_second,
                model,
                provider,
                ..
            } => {
                if let Some(call) = self.call_in_room(room_id) {
                    let mut extra = serde_json::Map::new();
                    extra.insert("type".into(), "llm_metrics".into());
                    extra.insert("model".into(), model.clone().into());
                    extra.insert("provider".into(), provider.clone().into());
                    call.metric(MetricRecord {
                        kind: MetricKind::Llm,
                        ttft: ttft_ms.map(|v| v / 1000.0),
                        duration: Some(duration_ms / 1000.0),
                        prompt_tokens: Some(*prompt_tokens),
                        completion_tokens: Some(*completion_tokens),
                        total_tokens: Some(prompt_tokens + completion_tokens),
                        cached_tokens: Some(*cached_tokens),
                        tokens_per_second: *tokens_per_second,
                        extra,
                        ..MetricRecord::default()
                    });
                }
            }
            FrameworkEvent::AiToolCall {
                room_id,
                call_id,
                name,
                arguments,
                result,
                duration_ms,
                ..
            } => {
                if let Some(call) = self.call_in_room(room_id) {
                    // Events may come from other processes: never trust
                    // the number to be sane.
                    let took =
                        Duration::try_from_secs_f64(duration_ms / 1000.0).unwrap_or(Duration::ZERO);
                    call.tool_exchange(call_id, name, arguments, result, took);
                }
            }
            FrameworkEvent::VoiceTranscript {
                session_id,
                role,
                text,
                start_ms,
                end_ms,
                ..
            } => {
                let role = match role.as_str() {
                    "user" => Role::User,
                    "agent" | "assistant" => Role::Assistant,
                    other => {
                        tracing::debug!(target: TARGET, session_id, role = other, "voice transcript of an unknown role ignored");
                        return;
                    }
                };
                if let Some((call, origin)) = self.voice_call(session_id) {
                    let (start, end) = (origin + media_ms(*start_ms), origin + media_ms(*end_ms));
                    call.transcript(TranscriptInput::new(role, text.clone()).span(start, end));
                }
            }
            FrameworkEvent::VoiceTurnMetrics { session_id, .. } => {
                if let Some((call, origin)) = self.voice_call(session_id) {
                    for (m, at, from_voice_llm) in voice_turn_records(ev, origin) {
                        if from_voice_llm {
                            call.send(Cmd::VoiceLlm(Box::new(m), at));
                        } else {
                            call.send(Cmd::Metric(Box::new(m), at));
                        }
                    }
                }
            }
            FrameworkEvent::VoiceSessionEnded { session_id, .. } => {
                let call = self.inner.voice.lock().remove(session_id.as_str());
                tracing::debug!(target: TARGET, session_id, found = call.is_some(), "voice session ended");
                if let Some(v) = call {
                    let call = v.call;
                    self.spawn(async move {
                        call.flush(VOICE_END_REASON).await;
                    });
                }
            }
            ev => {
                if let Some((room_id, reason)) = room_ended(ev).zip(end_reason(ev))
                    && let Some(call) = self.call_in_room(room_id)
                {
                    self.spawn(async move {
                        call.flush(reason).await;
                    });
                }
            }
        }
    }

    /// The call running in a room, if any.
    pub fn call_in_room(&self, room_id: &RoomId) -> Option<CallHandle> {
        self.inner.rooms.read().get(room_id).cloned()
    }

    /// The call of a running voice session, if any.
    pub fn call_of_session(&self, session_id: &str) -> Option<CallHandle> {
        self.voice_call(session_id).map(|(c, _)| c)
    }

    fn voice_call(&self, session_id: &str) -> Option<(CallHandle, Duration)> {
        self.inner
            .voice
            .lock()
            .get(session_id)
            .map(|v| (v.call.clone(), v.origin))
    }

    /// Starts the call of a voice session and returns the recording sink
    /// to register with the session's audio pipeline (`None` when the
    /// call cannot be observed; logged and counted as by
    /// [`CallAnalytics::start_call`]).
    ///
    /// The session's media clock starts now: the `VoiceTranscript` and
    /// `VoiceTurnMetrics` events of `session_id` (routed by
    /// [`CallAnalytics::attach`] or [`CallAnalytics::observe_rooms`]) are
    /// placed on the recording by their media-clock times, and its
    /// `VoiceSessionEnded` ends the call ([`VOICE_END_REASON`]).
    ///
    /// The voice call becomes the room's call: a text call running in the
    /// room ends first ([`VOICE_TAKEOVER_REASON`]). While it runs, the
    /// room's messages from the voice session and from AI channels are
    /// left out of the transcript (the session's transcript events carry
    /// what was said and heard); messages typed by other participants are
    /// kept as user entries at the moment they were committed. A second
    /// voice session in a room that already has one is a call of its own,
    /// which gets only its session's records.
    ///
    /// It may be called from any thread, including a voice session's own
    /// runtime: the call's tasks run on the runtime the service was built
    /// on, so they outlive the session's.
    pub fn start_voice_call(
        &self,
        session_id: &str,
        start: StartCall,
    ) -> Option<CallRecordingSink> {
        if !self.is_enabled() {
            return None;
        }
        let room_id = start.room_id.clone();
        let current = self.call_in_room(&room_id);
        let claim_room = !current.as_ref().is_some_and(CallHandle::is_voice);
        let call = match self.try_start_call(start, Some(session_id), claim_room) {
            Ok(h) => h,
            Err(e) => {
                self.call_not_started(&e);
                return None;
            }
        };
        if claim_room && let Some(text) = current {
            tracing::info!(target: TARGET, room_id = %room_id, call_id = text.call_id(), "a voice session started: the room's text call ends");
            self.spawn(async move {
                text.flush(VOICE_TAKEOVER_REASON).await;
            });
        }
        let sink = call.recording_sink();
        self.inner.voice.lock().insert(
            session_id.to_owned(),
            VoiceCall {
                call,
                origin: sink.origin(),
            },
        );
        Some(sink)
    }

    fn call_not_started(&self, e: &AnalyticsError) {
        self.inner
            .counters
            .calls_disabled
            .fetch_add(1, Ordering::Relaxed);
        if self.is_enabled() {
            self.inner
                .counters
                .spool_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(target: TARGET, error = %e, "call analytics off for this call");
        }
    }

    /// Starts observing a call. Never fails the caller: when the call
    /// cannot be spooled (bad id, disk error) or no exporter is configured,
    /// the handle is a no-op and the problem is logged and counted.
    pub fn start_call(&self, start: StartCall) -> CallHandle {
        match self.try_start_call(start, None, true) {
            Ok(h) => h,
            Err(e) => {
                self.call_not_started(&e);
                CallHandle::disabled()
            }
        }
    }

    fn try_start_call(
        &self,
        start: StartCall,
        voice_session: Option<&str>,
        claim_room: bool,
    ) -> Result<CallHandle> {
        let Some(spool) = &self.inner.spool else {
            return Err(AnalyticsError::Config("no exporter configured".into()));
        };
        let call_id = match start.call_id.filter(|s| !s.is_empty()) {
            Some(id) => id,
            None => uuid::Uuid::new_v4().to_string(),
        };
        validate_call_id(&call_id)?;
        let clock = MediaClock::start();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let meta = CallMeta {
            version: crate::spool::SPOOL_VERSION,
            call_id: call_id.clone(),
            room_id: start.room_id.to_string(),
            started: CallStarted {
                event: "call-started".into(),
                livekit_call_id: call_id.clone(),
                event_timestamp: format_timestamp(clock.anchor_wall()),
                agent_id: start.agent_id,
                is_test: start.is_test,
                agent_name: non_empty(start.agent_name),
                agent_prompt: non_empty(start.agent_prompt),
                job_id: None,
                room_name: Some(start.room_id.to_string()).filter(|s| !s.is_empty()),
                room_sid: None,
            },
            sample_rate: self.inner.config.sample_rate,
            metadata: start.metadata,
        };
        let writer = spool.create_call(&meta)?;
        let files = CallFiles::new(writer.dir().to_owned());
        let cfg = &self.inner.config;
        let (cmd_tx, cmd_rx) = mpsc::channel(cfg.record_queue.max(1));
        let (audio_tx, audio_rx) = mpsc::channel(cfg.audio_queue.max(1));
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let export = self.spawn_exports(files, meta, progress_rx);
        let closed = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(CallShared {
            call_id: call_id.clone(),
            room_id: start.room_id.clone(),
            clock,
            cmd: cmd_tx,
            tap: CallTap {
                tx: Some(audio_tx),
                dropped: Arc::new(AtomicU64::new(0)),
                closed: closed.clone(),
                global_dropped: self.inner.counters.audio_frames_dropped.clone(),
            },
            flushed: AtomicBool::new(false),
            voice_session: voice_session.map(str::to_owned),
            closed,
            counters: self.inner.counters.clone(),
            export,
            analytics: Arc::downgrade(&self.inner),
        });
        let handle = CallHandle {
            shared: Some(shared.clone()),
        };
        let worker = CallWorker {
            mixer: StereoMixer::new(
                cfg.sample_rate,
                cfg.holdback,
                cfg.max_buffer,
                cfg.max_call_duration,
            ),
            writer: Some(writer),
            spool_down: false,
            cancel: self.inner.cancel.child_token(),
            clock,
            capture_audio: start.capture_audio,
            voice: voice_session.is_some(),
            voice_llm: Vec::new(),
            llm_seen: false,
            first_speaker: false,
            published: 0,
            progress: progress_tx,
            counters: self.inner.counters.clone(),
            call_id: call_id.clone(),
            transcript: 0,
            tools: 0,
            metrics: 0,
        };
        self.spawn(worker.run(cmd_rx, audio_rx, shared.clone()));
        if claim_room {
            self.inner
                .rooms
                .write()
                .insert(start.room_id.clone(), handle.clone());
        }
        self.inner
            .counters
            .calls_started
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: TARGET, call_id, room_id = %start.room_id, voice_session, "call started");
        Ok(handle)
    }

    fn spawn_exports(
        &self,
        files: CallFiles,
        meta: CallMeta,
        progress: watch::Receiver<Progress>,
    ) -> watch::Receiver<ExportState> {
        let (state_tx, state_rx) = watch::channel(ExportState::Running);
        self.inner
            .exports
            .lock()
            .insert(meta.call_id.clone(), state_rx.clone());
        let feed = CallFeed {
            files,
            meta: Arc::new(meta),
            progress,
            cancel: self.inner.cancel.child_token(),
        };
        let this = self.clone();
        self.spawn(async move {
            let call_id = feed.meta.call_id.clone();
            let mut tasks = tokio::task::JoinSet::new();
            for exp in &this.inner.exporters {
                let exp = exp.clone();
                let feed = feed.clone();
                tasks.spawn(async move { (exp.name(), exp.export(feed).await) });
            }
            let mut errors = Vec::new();
            let mut corrupt = None;
            while let Some(r) = tasks.join_next().await {
                match r {
                    Ok((_, Ok(()))) => {}
                    Ok((name, Err(e))) => {
                        tracing::warn!(target: TARGET, call_id, exporter = name, error = %e, "export did not complete");
                        if matches!(e, AnalyticsError::CorruptSpool { .. }) {
                            corrupt = Some(e.to_string());
                        }
                        errors.push(format!("{name}: {e}"));
                    }
                    Err(e) => errors.push(format!("export task failed: {e}")),
                }
            }
            let c = &this.inner.counters;
            let state = if let Some(reason) = corrupt {
                if let Some(spool) = &this.inner.spool {
                    spool.quarantine(&call_id, &reason);
                }
                c.calls_quarantined.fetch_add(1, Ordering::Relaxed);
                ExportState::Quarantined(reason)
            } else if errors.is_empty() {
                if !this.inner.config.keep_exported
                    && let Some(spool) = &this.inner.spool
                {
                    spool.remove(&call_id);
                }
                c.exports_completed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(target: TARGET, call_id, "call exported");
                ExportState::Completed
            } else {
                c.exports_parked.fetch_add(1, Ordering::Relaxed);
                ExportState::Parked(errors)
            };
            let _ = state_tx.send(state);
        });
        state_rx
    }

    /// Finishes the export of every call left in the spool by an earlier
    /// run: calls that were never flushed are made final first (reason
    /// `process-restarted`); unreadable calls are quarantined. Call it once
    /// at start, before starting calls.
    ///
    /// # Errors
    /// When the spool cannot be listed.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        let Some(spool) = self.inner.spool.clone() else {
            return Ok(RecoveryReport::default());
        };
        let mut report = RecoveryReport::default();
        let active: Vec<String> = self.inner.exports.lock().keys().cloned().collect();
        for call_id in spool.list_calls()? {
            if active.contains(&call_id) {
                continue;
            }
            let files = CallFiles::new(spool.call_dir(&call_id));
            let f = files.clone();
            let loaded = tokio::task::spawn_blocking(move || -> Result<_> {
                let meta = f.meta()?;
                let (mut end, unfinished) = match f.end()? {
                    Some(end) => (end, false),
                    None => match f.finalize_crashed(&meta) {
                        Ok(end) => (end, true),
                        // The disk is still full: export from what is there
                        // all the same (the next start finalizes again if
                        // the export does not complete).
                        Err(e) if e.is_disk_full() => {
                            tracing::warn!(target: TARGET, call_id = %meta.call_id, error = %e, "cannot mark the call final on disk; exporting it anyway");
                            (f.crashed_end(&meta)?, true)
                        }
                        Err(e) => return Err(e),
                    },
                };
                // Audio the spool promised but does not hold (a file cut
                // short): export what is there, flagged.
                let on_disk = f.audio_len() - f.audio_len() % crate::protocol::BYTES_PER_FRAME;
                if !end.recording_incomplete && f.records_checked()?.1 > 0 {
                    end.recording_incomplete = true;
                }
                if end.audio_bytes > on_disk {
                    tracing::warn!(target: TARGET, call_id = %meta.call_id, expected = end.audio_bytes, found = on_disk, "recording shorter than recorded; exporting what survived");
                    end.audio_bytes = on_disk;
                    end.recording_incomplete = true;
                }
                Ok((meta, end, unfinished))
            })
            .await
            .map_err(|e| AnalyticsError::Config(format!("recovery task failed: {e}")))?;
            match loaded {
                Ok((meta, end, unfinished)) => {
                    tracing::info!(target: TARGET, call_id, unfinished, "resuming export");
                    let (tx, rx) = watch::channel(Progress {
                        audio_bytes: end.audio_bytes,
                        end: Some(end),
                    });
                    drop(tx);
                    let _ = self.spawn_exports(files, meta, rx);
                    report.resumed += 1;
                    report.unfinished += usize::from(unfinished);
                }
                Err(e) if matches!(e, AnalyticsError::CorruptSpool { .. }) => {
                    spool.quarantine(&call_id, &e.to_string());
                    self.inner
                        .counters
                        .calls_quarantined
                        .fetch_add(1, Ordering::Relaxed);
                    report.quarantined += 1;
                }
                Err(e) => {
                    tracing::error!(target: TARGET, call_id, error = %e, "cannot resume export");
                }
            }
        }
        Ok(report)
    }

    /// Where the export of a call stands (`None` for an unknown call).
    pub fn export_state(&self, call_id: &str) -> Option<ExportState> {
        self.inner
            .exports
            .lock()
            .get(call_id)
            .map(|rx| rx.borrow().clone())
    }

    /// Waits until the export of a call is no longer running.
    pub async fn wait_exported(&self, call_id: &str) -> Option<ExportState> {
        let rx = self.inner.exports.lock().get(call_id).cloned();
        let mut rx = rx?;
        loop {
            let s = rx.borrow().clone();
            if s != ExportState::Running {
                return Some(s);
            }
            if rx.changed().await.is_err() {
                return Some(rx.borrow().clone());
            }
        }
    }

    /// Waits until no export is running.
    pub async fn wait_all_exported(&self) {
        let ids: Vec<String> = self.inner.exports.lock().keys().cloned().collect();
        for id in ids {
            self.wait_exported(&id).await;
        }
    }

    /// Flushes every running call (`shutdown`), waits up to `grace` for the
    /// exports, then stops. Exports still running stay in the spool and
    /// resume on the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let mut calls: Vec<CallHandle> = self.inner.rooms.read().values().cloned().collect();
        calls.extend(self.inner.voice.lock().values().map(|v| v.call.clone()));
        for c in calls {
            c.flush("shutdown").await;
        }
        let _ = tokio::time::timeout(grace, self.wait_all_exported()).await;
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// The room whose call a framework event ends, if it ends one.
fn room_ended(ev: &FrameworkEvent) -> Option<&RoomId> {
    match ev {
        FrameworkEvent::RoomPaused { room_id }
        | FrameworkEvent::RoomClosed { room_id }
        | FrameworkEvent::RoomArchived { room_id }
        | FrameworkEvent::RoomDeleted { room_id } => Some(room_id),
        _ => None,
    }
}

/// The `callEndedReason` of a room lifecycle event that ends a call.
fn end_reason(ev: &FrameworkEvent) -> Option<&'static str> {
    match ev {
        FrameworkEvent::RoomPaused { .. } => Some("room-paused"),
        FrameworkEvent::RoomClosed { .. } => Some("room-closed"),
        FrameworkEvent::RoomArchived { .. } => Some("room-archived"),
        FrameworkEvent::RoomDeleted { .. } => Some("room-deleted"),
        _ => None,
    }
}

fn forget_room(inner: &Inner, room_id: &RoomId, call_id: &str, session: Option<&str>) {
    {
        let mut rooms = inner.rooms.write();
        if rooms.get(room_id).is_some_and(|h| h.call_id() == call_id) {
            rooms.remove(room_id);
        }
    }
    if let Some(session) = session {
        let mut voice = inner.voice.lock();
        if voice
            .get(session)
            .is_some_and(|v| v.call.call_id() == call_id)
        {
            voice.remove(session);
        }
    }
}

/// A voice session's call and where the session's media clock starts on
/// the call's.
struct VoiceCall {
    call: CallHandle,
    origin: Duration,
}

/// A media-clock time in ms from an event (maybe from another process):
/// negative, NaN or absurd values become zero instead of a panic.
fn media_ms(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::try_from_secs_f64(ms / 1000.0).unwrap_or(Duration::ZERO)
    } else {
        Duration::ZERO
    }
}

/// Seconds of a duration in ms, when it is a sane one.
fn secs(ms: f64) -> Option<f64> {
    (ms.is_finite() && ms >= 0.0).then_some(ms / 1000.0)
}

/// The metric records of a `VoiceTurnMetrics` event, each with where it
/// sits on the call's media clock (`origin` is the session's zero) and
/// whether it is the voice-measured `llm` record (kept only when nothing
/// else reported the call's language model, see [`CallWorker`]).
///
/// - `eou`: `endOfUtteranceDelay`, `transcriptionDelay` (and the
///   voice-to-voice delay in `extra`), at the end-of-utterance decision;
/// - `stt`: `duration` = end of speech to final transcript, at the final;
/// - `llm`: `ttft`, at the first text of the answer;
/// - `tts`: `ttfb`, where the answer's first audio went out.
fn voice_turn_records(
    ev: &FrameworkEvent,
    origin: Duration,
) -> Vec<(MetricRecord, Duration, bool)> {
    let FrameworkEvent::VoiceTurnMetrics {
        speech_end_ms,
        eou_delay_ms,
        stt_latency_ms,
        llm_ttft_ms,
        tts_ttfb_ms,
        voice_to_voice_ms,
        ..
    } = ev
    else {
        return Vec::new();
    };
    let end = origin + media_ms(*speech_end_ms);
    let eou_at = end + media_ms(*eou_delay_ms);
    let typed = |t: &str| {
        let mut extra = serde_json::Map::new();
        extra.insert("type".into(), t.into());
        extra
    };
    let mut out = Vec::with_capacity(4);
    let mut eou_extra = typed("eou_metrics");
    if let Some(v) = voice_to_voice_ms.and_then(secs) {
        eou_extra.insert("voice_to_voice_delay".into(), v.into());
    }
    out.push((
        MetricRecord {
            kind: MetricKind::Eou,
            end_of_utterance_delay: secs(*eou_delay_ms),
            transcription_delay: stt_latency_ms.and_then(secs),
            extra: eou_extra,
            ..MetricRecord::default()
        },
        eou_at,
        false,
    ));
    if let Some(stt) = stt_latency_ms.and_then(secs) {
        out.push((
            MetricRecord {
                kind: MetricKind::Stt,
                duration: Some(stt),
                extra: typed("stt_metrics"),
                ..MetricRecord::default()
            },
            end + media_ms(stt * 1000.0),
            false,
        ));
    }
    let first_text = llm_ttft_ms.map(|t| eou_at + media_ms(t));
    if let (Some(ttft), Some(at)) = (llm_ttft_ms.and_then(secs), first_text) {
        let mut extra = typed("llm_metrics");
        extra.insert("source".into(), "voice".into());
        out.push((
            MetricRecord {
                kind: MetricKind::Llm,
                ttft: Some(ttft),
                extra,
                ..MetricRecord::default()
            },
            at,
            true,
        ));
    }
    if let Some(ttfb) = tts_ttfb_ms.and_then(secs) {
        let at = match voice_to_voice_ms {
            Some(v) => end + media_ms(*v),
            None => first_text.unwrap_or(eou_at) + media_ms(ttfb * 1000.0),
        };
        out.push((
            MetricRecord {
                kind: MetricKind::Tts,
                ttfb: Some(ttfb),
                extra: typed("tts_metrics"),
                ..MetricRecord::default()
            },
            at,
            false,
        ));
    }
    out
}

/// Whether a room event was committed by a voice session (a caller's
/// utterance, a reply rewritten as heard) or by a voice channel.
fn from_voice_session(ev: &RoomEvent) -> bool {
    matches!(
        ev.source.channel_type,
        ChannelType::Voice | ChannelType::RealtimeVoice
    ) || ev.metadata.contains_key(VOICE_SESSION_ID)
}

/// Shared state of one call.
struct CallShared {
    call_id: String,
    room_id: RoomId,
    clock: MediaClock,
    cmd: mpsc::Sender<Cmd>,
    tap: CallTap,
    flushed: AtomicBool,
    /// The voice session whose call this is.
    voice_session: Option<String>,
    closed: Arc<AtomicBool>,
    counters: Arc<Counters>,
    export: watch::Receiver<ExportState>,
    analytics: std::sync::Weak<Inner>,
}

enum Cmd {
    Transcript(TranscriptInput, Duration),
    RoomEvent(Arc<RoomEvent>),
    ToolCall {
        id: String,
        name: String,
        arguments: String,
        at: Duration,
    },
    ToolResult {
        id: String,
        content: String,
        at: Duration,
    },
    Metric(Box<MetricRecord>, Duration),
    /// An `llm` record measured by a voice session: kept back until the
    /// end, and dropped if another source reported the call's model.
    VoiceLlm(Box<MetricRecord>, Duration),
    Speaking(Role),
    Flush {
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// The handle of one observed call. Cheap to clone; every method returns
/// at once except [`CallHandle::flush`], and none can fail the call.
#[derive(Clone, Default)]
pub struct CallHandle {
    shared: Option<Arc<CallShared>>,
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHandle")
            .field("call_id", &self.call_id())
            .finish()
    }
}

impl CallHandle {
    /// A handle that records nothing.
    pub fn disabled() -> Self {
        Self { shared: None }
    }

    /// Whether this call is observed.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// The call id (empty when disabled).
    pub fn call_id(&self) -> &str {
        self.shared.as_ref().map_or("", |s| s.call_id.as_str())
    }

    /// The room.
    pub fn room_id(&self) -> Option<&RoomId> {
        self.shared.as_ref().map(|s| &s.room_id)
    }

    /// The call's media clock (a fresh one when disabled).
    pub fn media_clock(&self) -> MediaClock {
        self.shared
            .as_ref()
            .map_or_else(MediaClock::start, |s| s.clock)
    }

    /// Whether this is the call of a voice session.
    pub fn is_voice(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.voice_session.is_some())
    }

    /// The audio tap to hand to the recorder.
    pub fn tap(&self) -> CallTap {
        self.shared
            .as_ref()
            .map_or_else(CallTap::disabled, |s| s.tap.clone())
    }

    fn send(&self, cmd: Cmd) {
        let Some(s) = &self.shared else {
            return;
        };
        if s.flushed.load(Ordering::Acquire) {
            return;
        }
        if s.cmd.try_send(cmd).is_err() {
            s.counters.records_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn now(&self) -> Duration {
        self.shared
            .as_ref()
            .map_or(Duration::ZERO, |s| s.clock.now())
    }

    /// Records a transcript entry.
    pub fn transcript(&self, entry: TranscriptInput) {
        self.send(Cmd::Transcript(entry, self.now()));
    }

    fn room_event(&self, ev: Arc<RoomEvent>) {
        self.send(Cmd::RoomEvent(ev));
    }

    /// Records that a tool was called, now. `arguments` follows the
    /// protocol: a string is sent verbatim (`"{}"` when empty), `null` is
    /// `"{}"`, anything else is compact JSON.
    pub fn tool_call(
        &self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: &serde_json::Value,
    ) {
        self.send(Cmd::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments_string(arguments),
            at: self.now(),
        });
    }

    /// Records a tool's result, now. A string is sent verbatim, anything
    /// else as compact JSON; results are paired with their call by id.
    pub fn tool_result(&self, id: impl Into<String>, content: &serde_json::Value) {
        self.send(Cmd::ToolResult {
            id: id.into(),
            content: match content {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            at: self.now(),
        });
    }

    /// Records a tool call that took `took` and its result, now: the call
    /// is placed when it started, the result when it came back, and both
    /// carry the same id so they always pair.
    pub fn tool_exchange(
        &self,
        id: &str,
        name: &str,
        arguments: &serde_json::Value,
        result: &str,
        took: Duration,
    ) {
        let now = self.now();
        self.send(Cmd::ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments: arguments_string(arguments),
            at: now.saturating_sub(took),
        });
        self.send(Cmd::ToolResult {
            id: id.to_owned(),
            content: result.to_owned(),
            at: now,
        });
    }

    /// Records a metric. An empty `timestamp` and a missing offset are
    /// filled with now; non-finite numbers are dropped.
    pub fn metric(&self, metric: MetricRecord) {
        self.send(Cmd::Metric(Box::new(metric), self.now()));
    }

    /// Says that a side started speaking (decides `agentSpokeFirst`).
    pub fn speaking(&self, role: Role) {
        self.send(Cmd::Speaking(role));
    }

    /// Ends the call: queued audio is written, the tail is kept, the call
    /// is made final on disk and the exporters finish it. Calling it again,
    /// or concurrently, is harmless and returns at once. Never fails.
    pub async fn flush(&self, reason: &str) {
        let Some(s) = &self.shared else {
            return;
        };
        if s.flushed.swap(true, Ordering::AcqRel) {
            return;
        }
        let reason = if reason.trim().is_empty() {
            DEFAULT_END_REASON
        } else {
            reason
        };
        let (done, rx) = oneshot::channel();
        // The queue may be full: this one waits, it is the call's end.
        if s.cmd
            .send(Cmd::Flush {
                reason: reason.to_owned(),
                done,
            })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        if let Some(inner) = s.analytics.upgrade() {
            forget_room(&inner, &s.room_id, &s.call_id, s.voice_session.as_deref());
        }
    }

    /// Waits until the export of this call is no longer running.
    pub async fn exported(&self) -> ExportState {
        let Some(s) = &self.shared else {
            return ExportState::Disabled;
        };
        let mut rx = s.export.clone();
        loop {
            let st = rx.borrow().clone();
            if st != ExportState::Running {
                return st;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    }
}

impl AudioTap for CallHandle {
    fn push(&self, side: Side, samples: &[i16], sample_rate: u32, media_time: Duration) {
        if let Some(s) = &self.shared {
            s.tap.push(side, samples, sample_rate, media_time);
        }
    }
}

fn arguments_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "{}".into(),
        serde_json::Value::String(s) if s.is_empty() => "{}".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How often a call whose spool writes failed tries them again.
const SPOOL_RETRY: Duration = Duration::from_secs(1);

struct CallWorker {
    mixer: StereoMixer,
    writer: Option<CallWriter>,
    /// Spool writes are failing (a full disk): data waits in the writer.
    spool_down: bool,
    cancel: CancellationToken,
    clock: MediaClock,
    capture_audio: bool,
    /// The call of a voice session: its transcript comes from the
    /// session's transcript events, not from the room's messages.
    voice: bool,
    /// `llm` records measured by the voice session, written at the end
    /// unless another source (`ai_turn_metrics`) reported the model.
    voice_llm: Vec<MetricRecord>,
    /// An `llm` record came from elsewhere than the voice session.
    llm_seen: bool,
    first_speaker: bool,
    published: u64,
    progress: watch::Sender<Progress>,
    counters: Arc<Counters>,
    call_id: String,
    transcript: u64,
    tools: u64,
    metrics: u64,
}

impl CallWorker {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut audio: mpsc::Receiver<TapFrame>,
        shared: Arc<CallShared>,
    ) {
        let mut audio_open = true;
        let mut retry = tokio::time::interval(SPOOL_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Flush { reason, done }) => break Some((reason, Some(done))),
                    Some(cmd) => self.command(cmd),
                    None => break None,
                },
                frame = audio.recv(), if audio_open => match frame {
                    Some(f) => self.frame(&f),
                    None => audio_open = false,
                },
                _ = retry.tick(), if self.spool_down => self.retry_spool(),
            }
        };
        shared.closed.store(true, Ordering::Release);
        // What was queued before the flush still belongs to the call.
        while let Ok(f) = audio.try_recv() {
            self.frame(&f);
        }
        audio.close();
        while let Ok(cmd) = cmds.try_recv() {
            if !matches!(cmd, Cmd::Flush { .. }) {
                self.command(cmd);
            }
        }
        let (reason, done) = reason.unwrap_or_else(|| ("handle-dropped".to_owned(), None));
        if !self.llm_seen {
            for m in std::mem::take(&mut self.voice_llm) {
                self.metrics += 1;
                self.write_record(&SpoolRecord::Metric(m));
            }
        }
        self.finish(&reason, done).await;
    }

    fn write_record(&mut self, r: &SpoolRecord) {
        if let Some(w) = &mut self.writer {
            let result = w.append_record(r);
            self.spool_result(result);
        }
    }

    /// Notes how a spool write went. A full disk keeps the writer (its
    /// data waits in memory and is retried); any other failure stops the
    /// recording of this call, which the next start then recovers.
    fn spool_result(&mut self, result: Result<()>) {
        match result {
            Ok(()) => {
                if self.spool_down && self.writer.as_ref().is_some_and(CallWriter::is_caught_up) {
                    self.spool_down = false;
                    tracing::info!(target: TARGET, call_id = %self.call_id, "spool writable again; the recording caught up");
                }
            }
            Err(e) if e.is_disk_full() => {
                if !self.spool_down {
                    self.spool_down = true;
                    self.counters.spool_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target: TARGET, call_id = %self.call_id, error = %e, "spool write failed; keeping the recording in memory and retrying");
                }
            }
            Err(e) => {
                self.counters.spool_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: TARGET, call_id = %self.call_id, error = %e, "spool write failed; recording of this call stops");
                self.writer = None;
            }
        }
    }

    /// Writes what waits in memory, then lets the exporters see it.
    fn retry_spool(&mut self) {
        if let Some(w) = &mut self.writer {
            let result = w.retry();
            self.spool_result(result);
            self.publish(true);
        }
    }

    fn speaker(&mut self, role: Role) {
        if !self.first_speaker && matches!(role, Role::User | Role::Assistant) {
            self.first_speaker = true;
            self.write_record(&SpoolRecord::FirstSpeaker(role.as_str().to_owned()));
        }
    }

    fn offset(&self, at: Duration) -> Option<u64> {
        self.capture_audio.then(|| offset_ms(at))
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Transcript(t, at) => self.transcript(t, at),
            Cmd::RoomEvent(ev) => {
                // In a voice call, what the caller said and heard comes
                // from the session; AI text would double the agent's side.
                if self.voice
                    && (from_voice_session(&ev) || ev.source.channel_type == ChannelType::Ai)
                {
                    return;
                }
                if let Some(t) = transcript_of(&ev, &self.clock) {
                    let at = self.clock.media_of(ev.created_at);
                    self.transcript(t, at);
                }
            }
            Cmd::ToolCall {
                id,
                name,
                arguments,
                at,
            } => {
                self.tools += 1;
                let r = ToolRecord::ToolCall(ToolCallRecord {
                    tool_call_id: id,
                    name,
                    arguments,
                    timestamp: format_timestamp(self.clock.wall_at(at)),
                    audio_offset_ms: self.offset(at),
                });
                self.write_record(&SpoolRecord::Tool(r));
            }
            Cmd::ToolResult { id, content, at } => {
                let r = ToolRecord::ToolResult(ToolResultRecord {
                    tool_call_id: id,
                    content,
                    timestamp: format_timestamp(self.clock.wall_at(at)),
                    audio_offset_ms: self.offset(at),
                });
                self.write_record(&SpoolRecord::Tool(r));
            }
            Cmd::Metric(mut m, at) => {
                self.metrics += 1;
                self.place(&mut m, at);
                if m.kind == MetricKind::Llm {
                    self.llm_seen = true;
                }
                self.write_record(&SpoolRecord::Metric(*m));
            }
            Cmd::VoiceLlm(mut m, at) => {
                self.place(&mut m, at);
                self.voice_llm.push(*m);
            }
            Cmd::Speaking(role) => self.speaker(role),
            Cmd::Flush { .. } => {}
        }
    }

    /// Fills a metric's empty timestamp and missing offset with `at`;
    /// drops non-finite numbers.
    fn place(&self, m: &mut MetricRecord, at: Duration) {
        if m.timestamp.is_empty() {
            m.timestamp = format_timestamp(self.clock.wall_at(at));
        }
        if m.audio_offset_ms.is_none() {
            m.audio_offset_ms = self.offset(at);
        }
        m.sanitize();
    }

    fn transcript(&mut self, t: TranscriptInput, at: Duration) {
        let text = t.text.trim();
        if text.is_empty() {
            return;
        }
        self.speaker(t.role);
        let end = t.end.unwrap_or(at);
        let start = t.start.unwrap_or(end).min(end);
        self.transcript += 1;
        let entry = TranscriptEntry {
            role: t.role.as_str().to_owned(),
            content: text.to_owned(),
            timestamp: format_timestamp(self.clock.wall_at(start)),
            end_timestamp: format_timestamp(self.clock.wall_at(end)),
            audio_offset_ms: self.offset(start),
            end_audio_offset_ms: self.offset(end),
            user_id: t.user_id,
            language: t.language,
        };
        self.write_record(&SpoolRecord::Transcript(entry));
    }

    fn frame(&mut self, f: &TapFrame) {
        let Self { mixer, writer, .. } = self;
        let mut result = Ok(());
        let mut sink = |s: &[i16]| {
            if let Some(w) = writer.as_mut() {
                // Every sample is appended (kept in memory when it cannot
                // be written); the first failure is what gets reported.
                let r = w.append_audio(s);
                if result.is_ok() {
                    result = r;
                }
            }
        };
        mixer.push(f.side, &f.samples, f.sample_rate, f.media_time, &mut sink);
        mixer.drain_ready(&mut sink);
        self.spool_result(result);
        self.publish(false);
    }

    /// Makes new whole chunks visible to the exporters. While spool writes
    /// fail, only the periodic retry (`force`) tries again.
    fn publish(&mut self, force: bool) {
        if self.spool_down && !force {
            return;
        }
        let Some(w) = &mut self.writer else {
            return;
        };
        if !force && w.audio_bytes() / CHUNK_BYTES <= self.published / CHUNK_BYTES {
            return;
        }
        let result = w.flush_audio();
        let bytes = w.written_audio_bytes();
        self.spool_result(result);
        if bytes > self.published {
            self.published = bytes;
            self.progress.send_modify(|p| p.audio_bytes = bytes);
        }
    }

    /// Writes `ended.json`. While the disk is full this keeps trying (the
    /// flush itself returns after the first attempt); the exporters wait
    /// meanwhile. On shutdown the call stays unfinished in the spool and
    /// the next start exports it.
    async fn finish(mut self, reason: &str, mut done: Option<oneshot::Sender<()>>) {
        let Self { mixer, writer, .. } = &mut self;
        let mut result = Ok(());
        mixer.finish(&mut |s: &[i16]| {
            if let Some(w) = writer.as_mut() {
                let r = w.append_audio(s);
                if result.is_ok() {
                    result = r;
                }
            }
        });
        self.spool_result(result);
        let stats = self.mixer.stats();
        self.counters
            .late_samples
            .fetch_add(stats.late_samples, Ordering::Relaxed);
        self.counters
            .refused_samples
            .fetch_add(stats.refused_samples, Ordering::Relaxed);
        self.counters.calls_flushed.fetch_add(1, Ordering::Relaxed);
        let ended_at = format_timestamp(self.clock.wall_at(self.clock.now()));
        let end = loop {
            let Some(w) = self.writer.as_mut() else {
                break None;
            };
            let result = w.finish(reason, &ended_at);
            match result {
                Ok(end) => {
                    self.spool_result(Ok(()));
                    break Some(end);
                }
                Err(e) => {
                    let retry = e.is_disk_full();
                    self.spool_result(Err(e));
                    if !retry {
                        break None;
                    }
                }
            }
            if let Some(done) = done.take() {
                let _ = done.send(());
            }
            self.publish(true);
            tokio::select! {
                () = tokio::time::sleep(SPOOL_RETRY) => {}
                () = self.cancel.cancelled() => {
                    tracing::warn!(target: TARGET, call_id = %self.call_id, "shutting down before the spool could be written; the call is exported on the next start");
                    break None;
                }
            }
        };
        self.writer = None;
        if let Some(end) = &end
            && end.recording_incomplete
        {
            tracing::warn!(target: TARGET, call_id = %self.call_id, "part of the recording was lost while the disk was full; exporting what was kept");
        }
        tracing::info!(
            target: TARGET,
            call_id = %self.call_id,
            reason,
            transcript = self.transcript,
            tool_calls = self.tools,
            metrics = self.metrics,
            audio_frames = stats.frames,
            late_samples = stats.late_samples,
            "call flushed"
        );
        match end {
            Some(end) => {
                let bytes = end.audio_bytes;
                self.progress.send_modify(|p| {
                    p.audio_bytes = bytes;
                    p.end = Some(end);
                });
            }
            // Without a final spool the exporters cannot finish: dropping
            // the sender tells them; the call is resumed on the next start.
            None => drop(self.progress),
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// A transcript entry for a committed text message, if it is one.
fn transcript_of(ev: &RoomEvent, clock: &MediaClock) -> Option<TranscriptInput> {
    if ev.event_type != EventType::Message || ev.status == EventStatus::Blocked {
        return None;
    }
    let (text, language) = match &ev.content {
        EventContent::Text(t) => (t.text.clone(), t.language.clone()),
        EventContent::Composite(c) => {
            let mut s = String::new();
            for p in &c.parts {
                if let EventContent::Text(t) = p {
                    s.push_str(&t.text);
                }
            }
            (s, None)
        }
        _ => return None,
    };
    let role = match ev.source.channel_type {
        ChannelType::Ai => Role::Assistant,
        ChannelType::System => return None,
        _ => Role::User,
    };
    let ms = |k: &str| {
        ev.metadata
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .map(Duration::from_millis)
    };
    let at = clock.media_of(ev.created_at);
    let end = ms(SPEECH_END_MS).unwrap_or(at);
    let start = ms(SPEECH_START_MS).unwrap_or(end);
    Some(TranscriptInput {
        role,
        text,
        start: Some(start),
        end: Some(end),
        language,
        user_id: match role {
            Role::User => ev.source.participant_id.as_ref().map(|p| p.to_string()),
            _ => None,
        },
    })
}

impl CallAnalytics {
    /// Ends the call running in a room, if any (see [`CallHandle::flush`]).
    pub async fn flush_room(&self, room_id: &RoomId, reason: &str) {
        if let Some(call) = self.call_in_room(room_id) {
            call.flush(reason).await;
        }
    }
}
