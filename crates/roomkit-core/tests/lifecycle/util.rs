//! Shared helpers: kit set-up, timeline invariant checks, a store wrapper
//! that logs the order of writes, and a lock manager that counts holders.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_core::lock::{InMemoryLockManager, LockError, RoomLock, RoomLockManager};
use roomkit_core::model::time::Timestamp;
use roomkit_core::model::*;
use roomkit_core::store::{
    EventPatch, EventQuery, MemoryStore, RoomPatch, RoomQuery, Store, StoreResult, TargetUpdate,
    TaskQuery,
};
use roomkit_core::*;
use roomkit_testkit::RecordingChannel;

/// A fixed starting point for manual clocks.
pub fn t0() -> Timestamp {
    chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Builds a kit with the given channels registered.
pub fn kit_with(channels: &[&RecordingChannel]) -> RoomKit {
    let mut b = RoomKit::builder();
    for c in channels {
        b = b.channel(c.arc());
    }
    b.build().unwrap()
}

/// Creates room `room` and attaches every named channel with defaults.
pub async fn room_with(kit: &RoomKit, room: &str, channels: &[&str]) -> Room {
    let r = kit.create_room(CreateRoom::with_id(room)).await.unwrap();
    for c in channels {
        kit.attach_channel(&r.id, &ChannelId::from(*c), AttachOptions::default())
            .await
            .unwrap();
    }
    kit.get_room(&r.id).await.unwrap()
}

/// The whole timeline of a room.
pub async fn timeline(kit: &RoomKit, room: &str) -> Vec<Arc<RoomEvent>> {
    kit.timeline(&RoomId::from(room), TimelineQuery::default())
        .await
        .unwrap()
}

/// Texts of the message events of a room, in index order.
pub async fn message_texts(kit: &RoomKit, room: &str) -> Vec<String> {
    timeline(kit, room)
        .await
        .iter()
        .filter(|e| e.event_type == EventType::Message)
        .map(|e| e.content.plain_text())
        .collect()
}

/// Sends a text from a channel into a room through direct injection.
pub async fn send(kit: &RoomKit, room: &str, channel: &str, text: &str) -> InboundResult {
    kit.send_event(SendEvent::text(room, channel, text))
        .await
        .unwrap()
}

/// Checks the structural invariants of a room's timeline: indexes
/// 0..event_count-1 without gaps, counters matching, blocked events naming
/// their blocker.
pub async fn assert_timeline_invariants(kit: &RoomKit, room: &str) {
    let room_id = RoomId::from(room);
    let r = kit.get_room(&room_id).await.unwrap();
    let tl = timeline(kit, room).await;
    let indexes: Vec<u64> = tl.iter().map(|e| e.index).collect();
    let expected: Vec<u64> = (0..tl.len() as u64).collect();
    assert_eq!(indexes, expected, "indexes must be gap-free from 0");
    assert_eq!(r.event_count, tl.len() as u64, "event_count");
    assert_eq!(
        r.latest_index,
        tl.len().checked_sub(1).map(|i| i as u64),
        "latest_index"
    );
    for e in &tl {
        if e.status == EventStatus::Blocked {
            assert!(
                e.blocked_by.is_some(),
                "blocked event without blocked_by: {e:?}"
            );
        }
        assert_eq!(e.room_id, room_id);
    }
}

/// Waits for the next message of a channel, giving up after a long
/// (virtual, under a paused clock) time so a broken test fails instead of
/// hanging.
pub async fn recv<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), rx.recv())
        .await
        .expect("nothing arrived")
        .expect("sender dropped")
}

/// Lets spawned tasks run until they have nothing left to do right now.
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// One write a [`LoggingStore`] saw, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// An event was added with this index and status.
    Event {
        /// Index.
        index: u64,
        /// Status.
        status: EventStatus,
    },
    /// The room status was set.
    Status(RoomStatus),
}

/// A store that delegates to a [`MemoryStore`] and logs successful event
/// and status writes in order. It can claim to be shared between processes.
#[derive(Default)]
pub struct LoggingStore {
    inner: MemoryStore,
    shared: AtomicBool,
    log: Mutex<Vec<Write>>,
}

impl LoggingStore {
    /// A store that says it is shared (like a networked database).
    pub fn shared() -> Self {
        let s = Self::default();
        s.shared.store(true, Ordering::SeqCst);
        s
    }

    /// The writes so far.
    pub fn writes(&self) -> Vec<Write> {
        self.log.lock().clone()
    }
}

#[async_trait]
impl Store for LoggingStore {
    fn backend_name(&self) -> &'static str {
        "logging"
    }
    fn is_shared(&self) -> bool {
        self.shared.load(Ordering::SeqCst)
    }
    async fn create_room(&self, room: Room) -> StoreResult<Room> {
        self.inner.create_room(room).await
    }
    async fn get_room(&self, id: &RoomId) -> StoreResult<Option<Room>> {
        self.inner.get_room(id).await
    }
    async fn update_room(&self, id: &RoomId, patch: &RoomPatch) -> StoreResult<Room> {
        // Log under the same lock as the write so the order is exact.
        let mut log = self.log.lock();
        let r = self.inner.update_room(id, patch).now_or_never_ok()?;
        if let Some(s) = patch.status {
            log.push(Write::Status(s));
        }
        Ok(r)
    }
    async fn delete_room(&self, id: &RoomId) -> StoreResult<bool> {
        self.inner.delete_room(id).await
    }
    async fn list_rooms(&self, query: &RoomQuery) -> StoreResult<Vec<Room>> {
        self.inner.list_rooms(query).await
    }
    async fn find_latest_room(&self, query: &RoomQuery) -> StoreResult<Option<Room>> {
        self.inner.find_latest_room(query).await
    }
    async fn list_timed_rooms(&self) -> StoreResult<Vec<Room>> {
        self.inner.list_timed_rooms().await
    }
    async fn add_event(
        &self,
        event: RoomEvent,
        target: Option<TargetUpdate>,
    ) -> StoreResult<Arc<RoomEvent>> {
        let mut log = self.log.lock();
        let e = self.inner.add_event(event, target).now_or_never_ok()?;
        log.push(Write::Event {
            index: e.index,
            status: e.status,
        });
        Ok(e)
    }
    async fn get_event(&self, id: &EventId) -> StoreResult<Option<Arc<RoomEvent>>> {
        self.inner.get_event(id).await
    }
    async fn find_event_by_idempotency_key(
        &self,
        room_id: &RoomId,
        key: &str,
    ) -> StoreResult<Option<Arc<RoomEvent>>> {
        self.inner.find_event_by_idempotency_key(room_id, key).await
    }
    async fn list_events(
        &self,
        room_id: &RoomId,
        query: &EventQuery,
    ) -> StoreResult<Vec<Arc<RoomEvent>>> {
        self.inner.list_events(room_id, query).await
    }
    async fn update_event(&self, id: &EventId, patch: &EventPatch) -> StoreResult<Arc<RoomEvent>> {
        self.inner.update_event(id, patch).await
    }
    async fn delete_events(&self, room_id: &RoomId, ids: &[EventId]) -> StoreResult<Vec<EventId>> {
        self.inner.delete_events(room_id, ids).await
    }
    async fn create_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding> {
        self.inner.create_binding(binding).await
    }
    async fn get_binding(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> StoreResult<Option<ChannelBinding>> {
        self.inner.get_binding(room_id, channel_id).await
    }
    async fn update_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding> {
        self.inner.update_binding(binding).await
    }
    async fn delete_binding(&self, room_id: &RoomId, channel_id: &ChannelId) -> StoreResult<bool> {
        self.inner.delete_binding(room_id, channel_id).await
    }
    async fn list_bindings(&self, room_id: &RoomId) -> StoreResult<Vec<ChannelBinding>> {
        self.inner.list_bindings(room_id).await
    }
    async fn rooms_with_binding(&self, channel_id: &ChannelId) -> StoreResult<Vec<Room>> {
        self.inner.rooms_with_binding(channel_id).await
    }
    async fn create_participant(&self, participant: Participant) -> StoreResult<Participant> {
        self.inner.create_participant(participant).await
    }
    async fn get_participant(
        &self,
        room_id: &RoomId,
        id: &ParticipantId,
    ) -> StoreResult<Option<Participant>> {
        self.inner.get_participant(room_id, id).await
    }
    async fn update_participant(&self, participant: Participant) -> StoreResult<Participant> {
        self.inner.update_participant(participant).await
    }
    async fn delete_participant(&self, room_id: &RoomId, id: &ParticipantId) -> StoreResult<bool> {
        self.inner.delete_participant(room_id, id).await
    }
    async fn list_participants(&self, room_id: &RoomId) -> StoreResult<Vec<Participant>> {
        self.inner.list_participants(room_id).await
    }
    async fn find_participant_by_address(
        &self,
        room_id: &RoomId,
        channel_type: &ChannelType,
        address: &str,
    ) -> StoreResult<Option<Participant>> {
        self.inner
            .find_participant_by_address(room_id, channel_type, address)
            .await
    }
    async fn rooms_with_participant_address(
        &self,
        channel_type: &ChannelType,
        address: &str,
    ) -> StoreResult<Vec<Room>> {
        self.inner
            .rooms_with_participant_address(channel_type, address)
            .await
    }
    async fn store_identity(&self, identity: Identity) -> StoreResult<Identity> {
        self.inner.store_identity(identity).await
    }
    async fn get_identity(&self, id: &IdentityId) -> StoreResult<Option<Identity>> {
        self.inner.get_identity(id).await
    }
    async fn resolve_by_address(
        &self,
        channel_type: &ChannelType,
        address: &str,
        organization_id: Option<&str>,
    ) -> StoreResult<Option<Identity>> {
        self.inner
            .resolve_by_address(channel_type, address, organization_id)
            .await
    }
    async fn create_task(&self, task: Task) -> StoreResult<Task> {
        self.inner.create_task(task).await
    }
    async fn get_task(&self, id: &TaskId) -> StoreResult<Option<Task>> {
        self.inner.get_task(id).await
    }
    async fn update_task(&self, task: Task) -> StoreResult<Task> {
        self.inner.update_task(task).await
    }
    async fn list_tasks(&self, room_id: &RoomId, query: &TaskQuery) -> StoreResult<Vec<Task>> {
        self.inner.list_tasks(room_id, query).await
    }
    async fn create_observation(&self, observation: Observation) -> StoreResult<Observation> {
        self.inner.create_observation(observation).await
    }
    async fn list_observations(&self, room_id: &RoomId) -> StoreResult<Vec<Observation>> {
        self.inner.list_observations(room_id).await
    }
}

/// Polls a future once; the in-memory store never suspends, so its writes
/// complete on the first poll. This keeps the log entry and the write under
/// one (non-async) lock.
trait NowOrNever<T> {
    fn now_or_never_ok(self) -> StoreResult<T>;
}

impl<T, F: std::future::Future<Output = StoreResult<T>>> NowOrNever<T> for F {
    fn now_or_never_ok(self) -> StoreResult<T> {
        use futures::FutureExt;
        match self.now_or_never() {
            Some(r) => r,
            None => Err(roomkit_core::StoreError::Backend(
                "memory store suspended unexpectedly".into(),
            )),
        }
    }
}

/// A lock manager that wraps the in-memory one and counts how many holders
/// a room's lock has at once, and how often it was taken.
#[derive(Default)]
pub struct CountingLocks {
    inner: InMemoryLockManager,
    /// Current holders.
    pub held: Arc<AtomicUsize>,
    /// Most holders seen at once.
    pub max_held: Arc<AtomicUsize>,
    /// Acquisitions so far.
    pub acquired: Arc<AtomicUsize>,
    /// Claims to coordinate several processes.
    pub distributed: bool,
}

impl CountingLocks {
    /// A lock manager that claims to coordinate several processes.
    pub fn distributed() -> Self {
        Self {
            distributed: true,
            ..Self::default()
        }
    }
}

struct Held {
    _inner: RoomLock,
    held: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl RoomLockManager for CountingLocks {
    async fn acquire(&self, room_id: &RoomId) -> Result<RoomLock, LockError> {
        let inner = self.inner.acquire(room_id).await?;
        let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_held.fetch_max(now, Ordering::SeqCst);
        self.acquired.fetch_add(1, Ordering::SeqCst);
        Ok(RoomLock::new(Held {
            _inner: inner,
            held: self.held.clone(),
        }))
    }

    fn is_distributed(&self) -> bool {
        self.distributed
    }
}

/// Waits (in small steps of virtual or real time) until `cond` holds.
pub async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("condition never became true");
}
