//! `RoomKit`: the entry point. Holds the store, channels, hooks, locks and
//! delivery lanes, and exposes room, binding and timeline operations.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::RwLock;
use roomkit_model::{
    Access, ChannelBinding, ChannelId, EventContent, EventId, EventType, FrameworkEvent,
    HookTrigger, IdentificationStatus, Map, Observation, Participant, ParticipantId,
    ParticipantRole, ParticipantStatus, RateLimit, RetryPolicy, Room, RoomEvent, RoomId,
    RoomStatus, RoomTimers, SystemContent, Task, TaskId, Visibility,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{EphemeralEvent, EventBus};
use crate::channel::{Channel, RoomContext};
use crate::clock::{Clock, IdSource, SystemClock, UuidIds};
use crate::error::{Result, RoomKitError, StoreError};
use crate::hooks::{HookEngine, HookPayload, HookRegistration};
use crate::lane::Lane;
use crate::lock::{InMemoryLockManager, RoomLock, RoomLockManager};
use crate::router::{DefaultRouter, InboundRoomRouter};
use crate::store::{EventQuery, MemoryStore, Reader, RoomPatch, RoomQuery, Store, TaskQuery};
use crate::transcode::{DefaultTranscoder, Transcoder};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct KitConfig {
    /// Responses at this depth or deeper are blocked (RFC §8.3); at least 1.
    pub max_chain_depth: u32,
    /// Bound of the pre-commit phase of the pipeline (RFC §13.6).
    pub process_timeout: Duration,
    /// Bound of each `deliver()` / `on_event()` call.
    pub delivery_timeout: Duration,
    /// How many recent events a [`RoomContext`] carries.
    pub context_events: usize,
}

impl Default for KitConfig {
    fn default() -> Self {
        Self {
            max_chain_depth: 5,
            process_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(30),
            context_events: 20,
        }
    }
}

/// Options of [`RoomKit::create_room`].
#[derive(Debug, Clone, Default)]
pub struct CreateRoom {
    /// Room id; generated when `None`.
    pub id: Option<RoomId>,
    /// Tenant.
    pub organization_id: Option<String>,
    /// Integrator data.
    pub metadata: Map,
    /// Inactivity timer.
    pub inactive_after_seconds: Option<u64>,
    /// Close timer.
    pub closed_after_seconds: Option<u64>,
}

impl CreateRoom {
    /// A room with this id.
    pub fn with_id(id: impl Into<RoomId>) -> Self {
        Self {
            id: Some(id.into()),
            ..Self::default()
        }
    }
}

/// Changes of [`RoomKit::update_room`].
#[derive(Debug, Clone, Default)]
pub struct RoomUpdate {
    /// Replace the metadata.
    pub metadata: Option<Map>,
    /// New inactivity timer (`Some(None)` removes it).
    pub inactive_after_seconds: Option<Option<u64>>,
    /// New close timer.
    pub closed_after_seconds: Option<Option<u64>>,
}

/// Options of [`RoomKit::attach_channel`] (defaults per decision D14).
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// Access; READ_WRITE by default.
    pub access: Access,
    /// Visibility of what the channel writes; `all` by default.
    pub visibility: Visibility,
    /// Start muted.
    pub muted: bool,
    /// Start with deliver() suppressed.
    pub output_muted: bool,
    /// Participant the binding belongs to.
    pub participant_id: Option<ParticipantId>,
    /// Binding metadata.
    pub metadata: Map,
    /// Rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Retry policy.
    pub retry_policy: Option<RetryPolicy>,
}

/// Changes of [`RoomKit::update_binding`].
#[derive(Debug, Clone, Default)]
pub struct BindingUpdate {
    /// New access.
    pub access: Option<Access>,
    /// New visibility.
    pub visibility: Option<Visibility>,
    /// New output mute.
    pub output_muted: Option<bool>,
    /// Replace the metadata.
    pub metadata: Option<Map>,
}

/// Options of [`RoomKit::add_participant`].
#[derive(Debug, Clone, Default)]
pub struct AddParticipant {
    /// Id; generated when `None`.
    pub id: Option<ParticipantId>,
    /// Display name.
    pub display_name: Option<String>,
    /// Role; MEMBER by default.
    pub role: ParticipantRole,
    /// Primary channel.
    pub channel_id: Option<ChannelId>,
    /// Sender address on that channel.
    pub address: Option<String>,
    /// Integrator data.
    pub metadata: Map,
}

/// A timeline read (see [`RoomKit::timeline`]).
#[derive(Debug, Clone, Default)]
pub struct TimelineQuery {
    /// Only events after this index.
    pub after_index: Option<u64>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Only what this channel may see (RFC §7.5 rule 8).
    pub visible_to: Option<ChannelId>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub locks: Arc<dyn RoomLockManager>,
    pub router: Arc<dyn InboundRoomRouter>,
    pub transcoder: Arc<dyn Transcoder>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub channels: RwLock<HashMap<ChannelId, Arc<dyn Channel>>>,
    pub hooks: HookEngine,
    pub bus: EventBus,
    pub lanes: DashMap<RoomId, Arc<Lane>>,
    pub config: KitConfig,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    pub resilience: crate::resilience::Resilience,
    pub identity: crate::identity_pipeline::IdentitySettings,
    pub telemetry: Arc<dyn crate::telemetry::TelemetryProvider>,
}

/// The RoomKit engine. Cheap to clone: clones share one engine.
#[derive(Clone)]
pub struct RoomKit {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for RoomKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKit")
            .field("store", &self.inner.store.backend_name())
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Builder of a [`RoomKit`].
pub struct RoomKitBuilder {
    store: Option<Arc<dyn Store>>,
    locks: Option<Arc<dyn RoomLockManager>>,
    router: Option<Arc<dyn InboundRoomRouter>>,
    transcoder: Option<Arc<dyn Transcoder>>,
    clock: Option<Arc<dyn Clock>>,
    ids: Option<Arc<dyn IdSource>>,
    channels: Vec<Arc<dyn Channel>>,
    hooks: Vec<HookRegistration>,
    config: KitConfig,
    allow_unsafe_locking: bool,
    pub(crate) resilience: crate::resilience::ResilienceConfig,
    pub(crate) identity: crate::identity_pipeline::IdentitySettings,
    telemetry: Option<Arc<dyn crate::telemetry::TelemetryProvider>>,
}

impl RoomKitBuilder {
    /// The telemetry provider (RFC §15.7); [`crate::TracingTelemetry`] by
    /// default.
    pub fn telemetry(mut self, provider: Arc<dyn crate::telemetry::TelemetryProvider>) -> Self {
        self.telemetry = Some(provider);
        self
    }

    /// The storage backend (in-memory by default).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The lock manager (in-process by default).
    pub fn lock_manager(mut self, locks: Arc<dyn RoomLockManager>) -> Self {
        self.locks = Some(locks);
        self
    }

    /// The inbound router (RFC default strategy by default).
    pub fn router(mut self, router: Arc<dyn InboundRoomRouter>) -> Self {
        self.router = Some(router);
        self
    }

    /// The transcoder (RFC §6.6 rules by default).
    pub fn transcoder(mut self, t: Arc<dyn Transcoder>) -> Self {
        self.transcoder = Some(t);
        self
    }

    /// The clock (system clock by default).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The id source (UUID v7 by default).
    pub fn ids(mut self, ids: Arc<dyn IdSource>) -> Self {
        self.ids = Some(ids);
        self
    }

    /// Registers a channel.
    pub fn channel(mut self, channel: Arc<dyn Channel>) -> Self {
        self.channels.push(channel);
        self
    }

    /// Registers a global hook.
    pub fn hook(mut self, hook: HookRegistration) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Sets the chain-depth limit. Values below 1 are raised to 1: the limit
    /// cannot be disabled (RFC §17.5).
    pub fn max_chain_depth(mut self, depth: u32) -> Self {
        self.config.max_chain_depth = depth.max(1);
        self
    }

    /// Sets the pre-commit processing timeout.
    pub fn process_timeout(mut self, t: Duration) -> Self {
        self.config.process_timeout = t;
        self
    }

    /// Sets the per-delivery timeout.
    pub fn delivery_timeout(mut self, t: Duration) -> Self {
        self.config.delivery_timeout = t;
        self
    }

    /// Sets how many recent events contexts carry.
    pub fn context_events(mut self, n: usize) -> Self {
        self.config.context_events = n;
        self
    }

    /// Accepts a shared store with an in-process lock (for a single process
    /// that happens to use a shareable database).
    pub fn allow_unsafe_locking(mut self) -> Self {
        self.allow_unsafe_locking = true;
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    /// [`RoomKitError::Invalid`] for a shared store with an in-process lock
    /// manager (RFC §13.5) unless allowed, and for duplicate channel ids.
    pub fn build(self) -> Result<RoomKit> {
        let store = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let locks = self
            .locks
            .unwrap_or_else(|| Arc::new(InMemoryLockManager::new()));
        if store.is_shared() && !locks.is_distributed() {
            if self.allow_unsafe_locking {
                tracing::warn!(target: "roomkit.core.locks", store = store.backend_name(), "shared store used with an in-process room lock; run only one process");
            } else {
                return Err(RoomKitError::Invalid(format!(
                    "the {} store can be shared by several processes; use a distributed lock manager or allow_unsafe_locking()",
                    store.backend_name()
                )));
            }
        }
        let mut config = self.config;
        config.max_chain_depth = config.max_chain_depth.max(1);
        let kit = RoomKit {
            inner: Arc::new(Inner {
                store,
                locks,
                router: self.router.unwrap_or_else(|| Arc::new(DefaultRouter)),
                transcoder: self
                    .transcoder
                    .unwrap_or_else(|| Arc::new(DefaultTranscoder)),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                ids: self.ids.unwrap_or_else(|| Arc::new(UuidIds)),
                channels: RwLock::new(HashMap::new()),
                hooks: HookEngine::default(),
                bus: EventBus::new(),
                lanes: DashMap::new(),
                config,
                tracker: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                resilience: crate::resilience::Resilience::new(self.resilience),
                identity: self.identity,
                telemetry: self
                    .telemetry
                    .unwrap_or_else(|| Arc::new(crate::telemetry::TracingTelemetry)),
            }),
        };
        for c in self.channels {
            kit.register_channel(c)?;
        }
        for h in self.hooks {
            kit.add_hook(h);
        }
        Ok(kit)
    }
}

impl RoomKit {
    /// A builder with in-memory defaults.
    pub fn builder() -> RoomKitBuilder {
        RoomKitBuilder {
            store: None,
            locks: None,
            router: None,
            transcoder: None,
            clock: None,
            ids: None,
            channels: Vec::new(),
            hooks: Vec::new(),
            config: KitConfig::default(),
            allow_unsafe_locking: false,
            resilience: Default::default(),
            identity: Default::default(),
            telemetry: None,
        }
    }

    /// An engine with every default (in-memory store and locks).
    pub fn new() -> Self {
        match Self::builder().build() {
            Ok(kit) => kit,
            // The default configuration has no shared store and no channels,
            // so build() has nothing to reject.
            Err(_) => unreachable!("default RoomKit configuration is valid"),
        }
    }

    /// The engine settings.
    pub fn config(&self) -> &KitConfig {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The current time of the engine's clock.
    pub fn now(&self) -> roomkit_model::time::Timestamp {
        // Timestamps are kept at the millisecond precision of their JSON
        // form, so a stored value reads back equal from any backend or API.
        chrono::SubsecRound::trunc_subsecs(self.inner.clock.now(), 3)
    }

    pub(crate) fn new_id(&self, prefix: &str) -> String {
        self.inner.ids.next_id(prefix)
    }

    // ---- framework events and subscriptions

    /// Publishes a framework event (and logs it at debug level).
    pub(crate) fn emit(&self, event: FrameworkEvent) {
        tracing::debug!(target: "roomkit.core.framework", event = event.name(), "framework event");
        // No subscriber is not an error: the event simply has no audience.
        let _ = self.inner.bus.framework.send(Arc::new(event));
    }

    /// Subscribes to framework events (RFC §8.2).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FrameworkEvent>> {
        self.inner.bus.framework.subscribe()
    }

    /// Subscribes to every event stored in any room (blocked ones included),
    /// in commit order per room.
    pub fn subscribe_timeline(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.inner.bus.timeline.subscribe()
    }

    /// Subscribes to ephemeral events (typing, presence).
    pub fn subscribe_ephemeral(&self) -> broadcast::Receiver<Arc<EphemeralEvent>> {
        self.inner.bus.ephemeral.subscribe()
    }

    /// Publishes a typing or presence notice to live subscribers without
    /// storing it (RFC §8.4, decision D6).
    pub fn publish_ephemeral(&self, room_id: RoomId, event: RoomEvent) {
        let _ = self
            .inner
            .bus
            .ephemeral
            .send(Arc::new(EphemeralEvent { room_id, event }));
    }

    /// Publishes to this process's timeline subscribers an event that
    /// another process sharing the store committed (cross-process fan-out).
    pub fn publish_remote_event(&self, event: Arc<RoomEvent>) {
        let _ = self.inner.bus.timeline.send(event);
    }

    /// Publishes to this process's subscribers a framework event raised by
    /// another process sharing the store.
    pub fn publish_remote_framework_event(&self, event: FrameworkEvent) {
        let _ = self.inner.bus.framework.send(Arc::new(event));
    }

    pub(crate) fn publish_stored(&self, event: &Arc<RoomEvent>) {
        let _ = self.inner.bus.timeline.send(event.clone());
    }

    // ---- tasks

    /// The telemetry provider (RFC §15.7).
    pub fn telemetry(&self) -> &Arc<dyn crate::telemetry::TelemetryProvider> {
        &self.inner.telemetry
    }

    /// Whether the provider records spans right now; asked once per pass,
    /// job or hook call so that the disabled path does no telemetry work.
    #[inline]
    pub(crate) fn telemetry_on(&self) -> bool {
        self.inner.telemetry.is_enabled()
    }

    /// A span of the provider under the current one, or a disabled span
    /// when the provider is off.
    pub(crate) fn span(
        &self,
        name: crate::telemetry::SpanName,
        attributes: &[crate::telemetry::Attribute<'_>],
    ) -> tracing::Span {
        self.span_if(self.telemetry_on(), name, attributes)
    }

    /// As [`RoomKit::span`] with the provider's state already known: when
    /// `on` is false nothing is asked of the provider.
    #[inline]
    pub(crate) fn span_if(
        &self,
        on: bool,
        name: crate::telemetry::SpanName,
        attributes: &[crate::telemetry::Attribute<'_>],
    ) -> tracing::Span {
        if on {
            self.inner.telemetry.start_span(name, attributes, None)
        } else {
            tracing::Span::none()
        }
    }

    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn(fut);
    }

    /// Waits until every delivery lane and every hook started so far has
    /// finished, then closes the registered channels. New work is refused
    /// afterwards.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        let channels: Vec<_> = self.inner.channels.read().values().cloned().collect();
        for c in channels {
            if let Err(e) = c.close().await {
                tracing::warn!(target: "roomkit.core.framework", channel_id = %c.id(), error = %e, "channel close failed");
            }
        }
        self.inner.telemetry.close();
    }

    /// Waits until the delivery lanes and hooks started so far are done
    /// (useful in tests and before reading delivery results).
    pub async fn idle(&self) {
        loop {
            let busy = self.inner.lanes.iter().any(|l| l.value().is_busy());
            if !busy && self.inner.tracker.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    // ---- channels

    /// Registers a channel.
    ///
    /// # Errors
    /// [`RoomKitError::ChannelAlreadyRegistered`] for a duplicate id.
    pub fn register_channel(&self, channel: Arc<dyn Channel>) -> Result<()> {
        let id = channel.id().clone();
        let ty = channel.channel_type();
        {
            let mut map = self.inner.channels.write();
            if map.contains_key(&id) {
                return Err(RoomKitError::ChannelAlreadyRegistered(id));
            }
            map.insert(id.clone(), channel);
        }
        tracing::info!(target: "roomkit.core.framework", channel_id = %id, channel_type = %ty, "channel registered");
        self.emit(FrameworkEvent::ChannelRegistered {
            channel_id: id,
            channel_type: ty,
        });
        Ok(())
    }

    /// Unregisters a channel; returns it when it was registered.
    pub fn unregister_channel(&self, id: &ChannelId) -> Option<Arc<dyn Channel>> {
        let removed = self.inner.channels.write().remove(id);
        if removed.is_some() {
            self.emit(FrameworkEvent::ChannelUnregistered {
                channel_id: id.clone(),
            });
        }
        removed
    }

    /// A registered channel.
    pub fn channel(&self, id: &ChannelId) -> Option<Arc<dyn Channel>> {
        self.inner.channels.read().get(id).cloned()
    }

    /// All registered channels, in id order.
    pub fn channels(&self) -> Vec<Arc<dyn Channel>> {
        let mut v: Vec<_> = self.inner.channels.read().values().cloned().collect();
        v.sort_by(|a, b| a.id().cmp(b.id()));
        v
    }

    // ---- hooks

    /// Registers a global hook.
    pub fn add_hook(&self, hook: HookRegistration) {
        self.inner.hooks.register(hook);
    }

    /// Registers a hook for one room only.
    pub fn add_room_hook(&self, room_id: RoomId, hook: HookRegistration) {
        self.inner.hooks.register_for_room(room_id, hook);
    }

    /// Removes every hook with this name; returns whether one existed.
    pub fn remove_hook(&self, name: &str) -> bool {
        self.inner.hooks.remove(name)
    }

    pub(crate) fn spawn_hooks(&self, trigger: HookTrigger, room_id: &RoomId, payload: HookPayload) {
        self.inner
            .hooks
            .spawn_async(self, trigger, Some(room_id), payload, None);
    }

    // ---- locks

    pub(crate) async fn lock_room(&self, room_id: &RoomId) -> Result<RoomLock> {
        self.inner
            .locks
            .acquire(room_id)
            .await
            .map_err(|e| RoomKitError::Lock {
                room_id: room_id.clone(),
                message: e.0,
            })
    }

    pub(crate) async fn require_room(&self, room_id: &RoomId) -> Result<Room> {
        self.inner
            .store
            .get_room(room_id)
            .await?
            .ok_or_else(|| RoomKitError::RoomNotFound(room_id.clone()))
    }

    // ---- rooms

    /// Creates a room; emits `room_created` and fires ON_ROOM_CREATED.
    ///
    /// # Errors
    /// [`RoomKitError::RoomExists`] when the id is taken.
    pub async fn create_room(&self, options: CreateRoom) -> Result<Room> {
        let room = self.create_room_inner(options).await?;
        self.spawn_hooks(
            HookTrigger::OnRoomCreated,
            &room.id,
            HookPayload::Room(room.clone()),
        );
        Ok(room)
    }

    pub(crate) async fn create_room_inner(&self, options: CreateRoom) -> Result<Room> {
        let id = options
            .id
            .unwrap_or_else(|| RoomId::from(self.new_id("room")));
        if id.is_empty() {
            return Err(RoomKitError::Invalid("room id must not be empty".into()));
        }
        let now = self.now();
        let mut room = Room::new(id, now);
        room.organization_id = options.organization_id;
        room.metadata = options.metadata;
        room.timers = RoomTimers {
            inactive_after_seconds: options.inactive_after_seconds,
            closed_after_seconds: options.closed_after_seconds,
            last_activity_at: None,
            paused_at: None,
        };
        let room = match self.inner.store.create_room(room).await {
            Ok(r) => r,
            Err(StoreError::Conflict { id, .. }) => {
                return Err(RoomKitError::RoomExists(RoomId::from(id)));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(target: "roomkit.core.framework", room_id = %room.id, "room created");
        self.emit(FrameworkEvent::RoomCreated {
            room_id: room.id.clone(),
            organization_id: room.organization_id.clone(),
        });
        Ok(room)
    }

    /// Reads a room.
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`].
    pub async fn get_room(&self, room_id: &RoomId) -> Result<Room> {
        self.require_room(room_id).await
    }

    /// Lists rooms in id order.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_rooms(&self, query: &RoomQuery) -> Result<Vec<Room>> {
        Ok(self.inner.store.list_rooms(query).await?)
    }

    /// Changes a room's metadata or timers (not its status or counters).
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`].
    pub async fn update_room(&self, room_id: &RoomId, update: RoomUpdate) -> Result<Room> {
        let _lock = self.lock_room(room_id).await?;
        self.require_room(room_id).await?;
        let patch = RoomPatch {
            metadata: update.metadata,
            inactive_after_seconds: update.inactive_after_seconds,
            closed_after_seconds: update.closed_after_seconds,
            updated_at: Some(self.now()),
            ..RoomPatch::default()
        };
        Ok(self.inner.store.update_room(room_id, &patch).await?)
    }

    /// Moves a room to another status under its lock, so an event racing the
    /// change either commits before it or is refused (RFC §5.1). Emits the
    /// matching framework event and lifecycle hook.
    ///
    /// # Errors
    /// [`RoomKitError::IllegalTransition`] for a move the lifecycle forbids.
    pub async fn set_room_status(&self, room_id: &RoomId, to: RoomStatus) -> Result<Room> {
        let lock = self.lock_room(room_id).await?;
        let room = self.require_room(room_id).await?;
        let from = room.status;
        if !from.can_move_to(to) {
            return Err(RoomKitError::IllegalTransition {
                room_id: room_id.clone(),
                from,
                to,
            });
        }
        if from == to {
            return Ok(room);
        }
        let room = self.apply_status(&room, to).await?;
        drop(lock);
        self.after_status_change(&room, from);
        Ok(room)
    }

    /// Writes a status change (caller holds the lock).
    pub(crate) async fn apply_status(&self, room: &Room, to: RoomStatus) -> Result<Room> {
        let now = self.now();
        let mut patch = RoomPatch {
            status: Some(to),
            updated_at: Some(now),
            ..RoomPatch::default()
        };
        match to {
            RoomStatus::Closed => patch.closed_at = Some(Some(now)),
            RoomStatus::Paused => patch.paused_at = Some(Some(now)),
            RoomStatus::Active => {
                patch.paused_at = Some(None);
                if room.status == RoomStatus::Closed {
                    patch.closed_at = Some(None);
                }
            }
            RoomStatus::Archived => {
                if room.closed_at.is_none() {
                    patch.closed_at = Some(Some(now));
                }
            }
        }
        Ok(self.inner.store.update_room(&room.id, &patch).await?)
    }

    /// Emits the events of a status change (after the lock is released).
    pub(crate) fn after_status_change(&self, room: &Room, from: RoomStatus) {
        let id = room.id.clone();
        tracing::info!(target: "roomkit.core.framework", room_id = %id, from = ?from, to = ?room.status, "room status changed");
        match room.status {
            RoomStatus::Paused => {
                self.emit(FrameworkEvent::RoomPaused {
                    room_id: id.clone(),
                });
                self.spawn_hooks(
                    HookTrigger::OnRoomPaused,
                    &id,
                    HookPayload::Room(room.clone()),
                );
            }
            RoomStatus::Closed => {
                self.emit(FrameworkEvent::RoomClosed {
                    room_id: id.clone(),
                });
                self.spawn_hooks(
                    HookTrigger::OnRoomClosed,
                    &id,
                    HookPayload::Room(room.clone()),
                );
            }
            RoomStatus::Archived => self.emit(FrameworkEvent::RoomArchived { room_id: id }),
            RoomStatus::Active if from == RoomStatus::Closed => {
                self.emit(FrameworkEvent::RoomReopened { room_id: id })
            }
            RoomStatus::Active => self.emit(FrameworkEvent::RoomResumed { room_id: id }),
        }
    }

    /// Pauses a room.
    ///
    /// # Errors
    /// As [`RoomKit::set_room_status`].
    pub async fn pause_room(&self, room_id: &RoomId) -> Result<Room> {
        self.set_room_status(room_id, RoomStatus::Paused).await
    }

    /// Closes a room: from now on it refuses every event, at every entry point.
    ///
    /// # Errors
    /// As [`RoomKit::set_room_status`].
    pub async fn close_room(&self, room_id: &RoomId) -> Result<Room> {
        self.set_room_status(room_id, RoomStatus::Closed).await
    }

    /// Reopens a closed (or resumes a paused) room.
    ///
    /// # Errors
    /// As [`RoomKit::set_room_status`].
    pub async fn reopen_room(&self, room_id: &RoomId) -> Result<Room> {
        self.set_room_status(room_id, RoomStatus::Active).await
    }

    /// Archives a room (terminal).
    ///
    /// # Errors
    /// As [`RoomKit::set_room_status`].
    pub async fn archive_room(&self, room_id: &RoomId) -> Result<Room> {
        self.set_room_status(room_id, RoomStatus::Archived).await
    }

    /// Deletes a room with its timeline and bindings.
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`].
    pub async fn delete_room(&self, room_id: &RoomId) -> Result<()> {
        let lock = self.lock_room(room_id).await?;
        if !self.inner.store.delete_room(room_id).await? {
            return Err(RoomKitError::RoomNotFound(room_id.clone()));
        }
        self.inner.lanes.remove(room_id);
        self.inner.hooks.forget_room(room_id);
        drop(lock);
        self.inner.locks.forget(room_id);
        self.emit(FrameworkEvent::RoomDeleted {
            room_id: room_id.clone(),
        });
        Ok(())
    }

    // ---- bindings

    /// Attaches a registered channel to a room. Stores a CHANNEL_ATTACHED
    /// event (decision D6) and fires ON_CHANNEL_ATTACHED.
    ///
    /// # Errors
    /// [`RoomKitError::ChannelNotRegistered`], [`RoomKitError::RoomNotFound`],
    /// [`RoomKitError::ChannelAlreadyAttached`].
    pub async fn attach_channel(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
        options: AttachOptions,
    ) -> Result<ChannelBinding> {
        let channel = self
            .channel(channel_id)
            .ok_or_else(|| RoomKitError::ChannelNotRegistered(channel_id.clone()))?;
        let lock = self.lock_room(room_id).await?;
        let room = self.require_room(room_id).await?;
        let binding = ChannelBinding {
            channel_id: channel_id.clone(),
            room_id: room_id.clone(),
            channel_type: channel.channel_type(),
            category: channel.category(),
            direction: channel.direction(),
            access: options.access,
            muted: options.muted,
            output_muted: options.output_muted,
            visibility: options.visibility,
            participant_id: options.participant_id,
            last_read_index: None,
            attached_at: self.now(),
            capabilities: channel.capabilities(),
            rate_limit: options.rate_limit,
            retry_policy: options.retry_policy,
            metadata: options.metadata,
        };
        let binding = match self.inner.store.create_binding(binding).await {
            Ok(b) => b,
            Err(StoreError::Conflict { .. }) => {
                return Err(RoomKitError::ChannelAlreadyAttached {
                    room_id: room_id.clone(),
                    channel_id: channel_id.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(target: "roomkit.core.framework", room_id = %room_id, channel_id = %channel_id, "channel attached");
        self.record_lifecycle(&room, EventType::ChannelAttached, &binding)
            .await?;
        drop(lock);
        self.spawn_hooks(
            HookTrigger::OnChannelAttached,
            room_id,
            HookPayload::Binding(binding.clone()),
        );
        Ok(binding)
    }

    /// Detaches a channel from a room.
    ///
    /// # Errors
    /// [`RoomKitError::ChannelNotAttached`], [`RoomKitError::RoomNotFound`].
    pub async fn detach_channel(&self, room_id: &RoomId, channel_id: &ChannelId) -> Result<()> {
        let lock = self.lock_room(room_id).await?;
        let room = self.require_room(room_id).await?;
        let binding = self.require_binding(room_id, channel_id).await?;
        self.inner.store.delete_binding(room_id, channel_id).await?;
        tracing::info!(target: "roomkit.core.framework", room_id = %room_id, channel_id = %channel_id, "channel detached");
        self.record_lifecycle(&room, EventType::ChannelDetached, &binding)
            .await?;
        drop(lock);
        self.spawn_hooks(
            HookTrigger::OnChannelDetached,
            room_id,
            HookPayload::Binding(binding),
        );
        Ok(())
    }

    /// Mutes a channel in a room: it keeps reading, its responses are
    /// suppressed (RFC §7.2).
    ///
    /// # Errors
    /// As [`RoomKit::detach_channel`].
    pub async fn mute_channel(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> Result<ChannelBinding> {
        self.set_muted(room_id, channel_id, true).await
    }

    /// Unmutes a channel in a room.
    ///
    /// # Errors
    /// As [`RoomKit::detach_channel`].
    pub async fn unmute_channel(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> Result<ChannelBinding> {
        self.set_muted(room_id, channel_id, false).await
    }

    async fn set_muted(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
        muted: bool,
    ) -> Result<ChannelBinding> {
        let lock = self.lock_room(room_id).await?;
        let room = self.require_room(room_id).await?;
        let mut binding = self.require_binding(room_id, channel_id).await?;
        if binding.muted == muted {
            return Ok(binding);
        }
        binding.muted = muted;
        let binding = self.inner.store.update_binding(binding).await?;
        let (ty, trigger) = if muted {
            (EventType::ChannelMuted, HookTrigger::OnChannelMuted)
        } else {
            (EventType::ChannelUnmuted, HookTrigger::OnChannelUnmuted)
        };
        self.record_lifecycle(&room, ty, &binding).await?;
        drop(lock);
        self.spawn_hooks(trigger, room_id, HookPayload::Binding(binding.clone()));
        Ok(binding)
    }

    /// Changes a binding's access, visibility, output mute or metadata.
    /// Stores a CHANNEL_UPDATED event when access or visibility changed.
    ///
    /// # Errors
    /// As [`RoomKit::detach_channel`].
    pub async fn update_binding(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
        update: BindingUpdate,
    ) -> Result<ChannelBinding> {
        let lock = self.lock_room(room_id).await?;
        let room = self.require_room(room_id).await?;
        let mut binding = self.require_binding(room_id, channel_id).await?;
        let before = binding.clone();
        if let Some(a) = update.access {
            binding.access = a;
        }
        if let Some(v) = update.visibility {
            binding.visibility = v;
        }
        if let Some(o) = update.output_muted {
            binding.output_muted = o;
        }
        if let Some(m) = update.metadata {
            binding.metadata = m;
        }
        if binding == before {
            return Ok(binding);
        }
        let binding = self.inner.store.update_binding(binding).await?;
        if binding.access != before.access || binding.visibility != before.visibility {
            self.record_lifecycle(&room, EventType::ChannelUpdated, &binding)
                .await?;
        }
        drop(lock);
        Ok(binding)
    }

    /// A binding of a room.
    ///
    /// # Errors
    /// [`RoomKitError::ChannelNotAttached`].
    pub async fn get_binding(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> Result<ChannelBinding> {
        self.require_binding(room_id, channel_id).await
    }

    /// A room's bindings.
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`].
    pub async fn list_bindings(&self, room_id: &RoomId) -> Result<Vec<ChannelBinding>> {
        self.require_room(room_id).await?;
        Ok(self.inner.store.list_bindings(room_id).await?)
    }

    pub(crate) async fn require_binding(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> Result<ChannelBinding> {
        self.inner
            .store
            .get_binding(room_id, channel_id)
            .await?
            .ok_or_else(|| RoomKitError::ChannelNotAttached {
                room_id: room_id.clone(),
                channel_id: channel_id.clone(),
            })
    }

    /// Stores a lifecycle event for a binding change and hands it to the
    /// channels that may read it (decision D6). The caller holds the lock.
    /// A room that refuses events gets no timeline entry: the binding change
    /// itself still happens.
    async fn record_lifecycle(
        &self,
        room: &Room,
        ty: EventType,
        binding: &ChannelBinding,
    ) -> Result<()> {
        if !room.status.accepts_events() {
            return Ok(());
        }
        let mut data = Map::new();
        data.insert("channel_id".into(), binding.channel_id.as_str().into());
        data.insert(
            "access".into(),
            serde_json::to_value(binding.access).unwrap_or_default(),
        );
        data.insert("visibility".into(), binding.visibility.to_string().into());
        data.insert("muted".into(), binding.muted.into());
        let code = serde_json::to_value(ty)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let content = EventContent::System(SystemContent {
            message: format!("{} {}", binding.channel_id, code.replace('_', " ")),
            code,
            data,
        });
        let event = RoomEvent::system(ty, content);
        self.commit_system_event(room, event).await?;
        Ok(())
    }

    /// Stores a PARTICIPANT_JOINED / PARTICIPANT_LEFT marker for an
    /// explicit membership change (decision D6), like the binding markers:
    /// source `system`, handed to the channels that may read it, nothing on
    /// a room that refuses events. The caller holds the lock.
    async fn record_participant_event(
        &self,
        room: &Room,
        ty: EventType,
        participant: &Participant,
    ) -> Result<()> {
        if !room.status.accepts_events() {
            return Ok(());
        }
        let mut data = Map::new();
        data.insert("participant_id".into(), participant.id.as_str().into());
        data.insert(
            "display_name".into(),
            participant.display_name.clone().into(),
        );
        data.insert(
            "role".into(),
            serde_json::to_value(participant.role).unwrap_or_default(),
        );
        if !participant.channel_id.is_empty() {
            data.insert("channel_id".into(), participant.channel_id.as_str().into());
        }
        let code = serde_json::to_value(ty)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let verb = if ty == EventType::ParticipantLeft {
            "left"
        } else {
            "joined"
        };
        let content = EventContent::System(SystemContent {
            message: format!("participant {} {verb}", participant.id),
            code,
            data,
        });
        let mut event = RoomEvent::system(ty, content);
        event.source.participant_id = Some(participant.id.clone());
        self.commit_system_event(room, event).await?;
        Ok(())
    }

    // ---- participants

    /// Adds a participant explicitly (a deliberate join); fires
    /// ON_PARTICIPANT_JOINED.
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`], or a conflict on a duplicate id.
    pub async fn add_participant(
        &self,
        room_id: &RoomId,
        options: AddParticipant,
    ) -> Result<Participant> {
        let lock = self.lock_room(room_id).await?;
        let room = self.require_room(room_id).await?;
        let channel_type = match &options.channel_id {
            Some(c) => self.channel(c).map(|c| c.channel_type()),
            None => None,
        };
        let channel_id = options.channel_id.clone().unwrap_or_default();
        let p = Participant {
            id: options
                .id
                .unwrap_or_else(|| ParticipantId::from(self.new_id("par"))),
            room_id: room_id.clone(),
            connected_via: if channel_id.is_empty() {
                Vec::new()
            } else {
                vec![channel_id.clone()]
            },
            channel_id,
            display_name: options.display_name,
            role: options.role,
            status: ParticipantStatus::Active,
            identification: IdentificationStatus::Unknown,
            identity_id: None,
            candidates: None,
            external_id: None,
            resolved_at: None,
            resolved_by: None,
            joined_at: self.now(),
            metadata: options.metadata,
            address: options.address,
            channel_type,
        };
        // A taken id stays a store conflict, so surfaces can report it as one.
        let p = self.inner.store.create_participant(p).await?;
        self.record_participant_event(&room, EventType::ParticipantJoined, &p)
            .await?;
        drop(lock);
        self.spawn_hooks(
            HookTrigger::OnParticipantJoined,
            room_id,
            HookPayload::Participant(p.clone()),
        );
        Ok(p)
    }

    /// Marks a participant as left (it stays in history); fires
    /// ON_PARTICIPANT_LEFT.
    ///
    /// # Errors
    /// [`RoomKitError::NotFound`] for an unknown participant.
    pub async fn remove_participant(
        &self,
        room_id: &RoomId,
        id: &ParticipantId,
    ) -> Result<Participant> {
        let lock = self.lock_room(room_id).await?;
        let mut p = self
            .inner
            .store
            .get_participant(room_id, id)
            .await?
            .ok_or_else(|| RoomKitError::NotFound {
                kind: "participant",
                id: id.to_string(),
            })?;
        let already_left = p.status == ParticipantStatus::Left;
        p.status = ParticipantStatus::Left;
        let p = self.inner.store.update_participant(p).await?;
        if !already_left && let Some(room) = self.inner.store.get_room(room_id).await? {
            self.record_participant_event(&room, EventType::ParticipantLeft, &p)
                .await?;
        }
        drop(lock);
        self.spawn_hooks(
            HookTrigger::OnParticipantLeft,
            room_id,
            HookPayload::Participant(p.clone()),
        );
        Ok(p)
    }

    /// A room's participants.
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`].
    pub async fn list_participants(&self, room_id: &RoomId) -> Result<Vec<Participant>> {
        self.require_room(room_id).await?;
        Ok(self.inner.store.list_participants(room_id).await?)
    }

    // ---- timeline

    /// Reads a room's timeline in index order; with `visible_to`, only what
    /// that channel may see (its own events always, others' when visibility
    /// allowed them and they were not blocked).
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`].
    pub async fn timeline(
        &self,
        room_id: &RoomId,
        query: TimelineQuery,
    ) -> Result<Vec<Arc<RoomEvent>>> {
        self.require_room(room_id).await?;
        let reader = match &query.visible_to {
            Some(c) => Some(self.reader_for(room_id, c).await?),
            None => None,
        };
        let q = EventQuery {
            after_index: query.after_index,
            limit: query.limit,
            reader,
            ..EventQuery::default()
        };
        Ok(self.inner.store.list_events(room_id, &q).await?)
    }

    async fn reader_for(&self, room_id: &RoomId, channel_id: &ChannelId) -> Result<Reader> {
        let category = match self.inner.store.get_binding(room_id, channel_id).await? {
            Some(b) => b.category,
            None => match self.channel(channel_id) {
                Some(c) => c.category(),
                None => return Err(RoomKitError::ChannelNotRegistered(channel_id.clone())),
            },
        };
        Ok(Reader {
            channel_id: channel_id.clone(),
            category,
        })
    }

    /// Reads one event of a room.
    ///
    /// # Errors
    /// [`RoomKitError::EventNotFound`] when it is not in that room.
    pub async fn get_event(&self, room_id: &RoomId, event_id: &EventId) -> Result<Arc<RoomEvent>> {
        match self.inner.store.get_event(event_id).await? {
            Some(e) if &e.room_id == room_id => Ok(e),
            _ => Err(RoomKitError::EventNotFound(event_id.clone())),
        }
    }

    /// The room as one channel sees it (RFC §7.5 rule 8): recent events are
    /// filtered for that reader.
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`].
    pub async fn context_for(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> Result<RoomContext> {
        let reader = self.reader_for(room_id, channel_id).await?;
        self.build_context(room_id, Some(reader)).await
    }

    pub(crate) async fn build_context(
        &self,
        room_id: &RoomId,
        reader: Option<Reader>,
    ) -> Result<RoomContext> {
        let store = &self.inner.store;
        let room = self.require_room(room_id).await?;
        let bindings = store.list_bindings(room_id).await?;
        let participants = store.list_participants(room_id).await?;
        let recent_events = store
            .list_events(
                room_id,
                &EventQuery {
                    last: Some(self.inner.config.context_events),
                    reader,
                    ..EventQuery::default()
                },
            )
            .await?;
        Ok(RoomContext {
            room,
            bindings,
            participants,
            recent_events,
        })
    }

    // ---- side effects

    /// A room's tasks.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_tasks(&self, room_id: &RoomId, query: &TaskQuery) -> Result<Vec<Task>> {
        self.require_room(room_id).await?;
        Ok(self.inner.store.list_tasks(room_id, query).await?)
    }

    /// Replaces a task (status changes from integrators).
    ///
    /// # Errors
    /// [`RoomKitError::NotFound`].
    pub async fn update_task(&self, task: Task) -> Result<Task> {
        if self.inner.store.get_task(&task.id).await?.is_none() {
            return Err(RoomKitError::NotFound {
                kind: "task",
                id: task.id.to_string(),
            });
        }
        Ok(self.inner.store.update_task(task).await?)
    }

    /// Reads a task.
    ///
    /// # Errors
    /// [`RoomKitError::NotFound`].
    pub async fn get_task(&self, id: &TaskId) -> Result<Task> {
        self.inner
            .store
            .get_task(id)
            .await?
            .ok_or_else(|| RoomKitError::NotFound {
                kind: "task",
                id: id.to_string(),
            })
    }

    /// A room's observations.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_observations(&self, room_id: &RoomId) -> Result<Vec<Observation>> {
        self.require_room(room_id).await?;
        Ok(self.inner.store.list_observations(room_id).await?)
    }

    /// Persists tasks and observations (RFC §10.1 step 15) and fires
    /// ON_TASK_CREATED for each task. Failures are logged, never raised:
    /// side effects never fail the pipeline.
    pub(crate) async fn persist_side_effects(
        &self,
        room_id: &RoomId,
        tasks: Vec<Task>,
        observations: Vec<Observation>,
        created_by: &str,
        source_channel: Option<&ChannelId>,
    ) {
        let now = self.now();
        for mut t in tasks {
            if t.id.is_empty() {
                t.id = TaskId::from(self.new_id("task"));
            }
            t.room_id = room_id.clone();
            t.created_at = now;
            if t.created_by.is_none() {
                t.created_by = Some(created_by.to_owned());
            }
            match self.inner.store.create_task(t).await {
                Ok(t) => {
                    self.spawn_hooks(HookTrigger::OnTaskCreated, room_id, HookPayload::Task(t))
                }
                Err(e) => {
                    tracing::error!(target: "roomkit.store", room_id = %room_id, error = %e, "storing a task failed")
                }
            }
        }
        for mut o in observations {
            if o.id.is_empty() {
                o.id = roomkit_model::ObservationId::from(self.new_id("obs"));
            }
            o.room_id = room_id.clone();
            o.created_at = now;
            if o.source_channel_id.is_none() {
                o.source_channel_id = source_channel.cloned();
            }
            if o.source_channel_id.is_none() && o.metadata.get("created_by").is_none() {
                o.metadata.insert("created_by".into(), created_by.into());
            }
            if let Err(e) = self.inner.store.create_observation(o).await {
                tracing::error!(target: "roomkit.store", room_id = %room_id, error = %e, "storing an observation failed");
            }
        }
    }

    /// Merges keys into a room's metadata (a side effect, always allowed).
    pub(crate) async fn apply_metadata_updates(&self, room_id: &RoomId, updates: Map) {
        if updates.is_empty() {
            return;
        }
        let patch = RoomPatch {
            merge_metadata: Some(updates),
            ..RoomPatch::default()
        };
        if let Err(e) = self.inner.store.update_room(room_id, &patch).await {
            tracing::error!(target: "roomkit.store", room_id = %room_id, error = %e, "room metadata update failed");
        }
    }
}

impl Default for RoomKit {
    fn default() -> Self {
        Self::new()
    }
}
