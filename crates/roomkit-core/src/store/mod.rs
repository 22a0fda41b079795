//! The conversation store interface (RFC §14) and its in-memory
//! implementation.
//!
//! A store owns what it is given: writes take values, and reads hand back
//! either caller-owned copies (rooms, bindings, participants) or shared,
//! immutable snapshots (`Arc<RoomEvent>`), so nothing a caller does to a
//! returned value changes stored state (RFC §14.4).

mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_model::time::Timestamp;
use roomkit_model::{
    ChannelBinding, ChannelCategory, ChannelId, ChannelType, DeliveryResults, EventContent,
    EventId, EventSource, EventStatus, Identity, IdentityId, Map, Observation, Participant,
    ParticipantId, Room, RoomEvent, RoomId, RoomStatus, Task, TaskId, TaskStatus,
};

pub use memory::MemoryStore;

use crate::error::StoreError;

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which rooms a listing returns. Rooms are listed in id order; `after` is
/// the cursor (the last id of the previous page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomQuery {
    /// Only rooms of this tenant.
    pub organization_id: Option<String>,
    /// Only rooms in this status.
    pub status: Option<RoomStatus>,
    /// Start after this room id.
    pub after: Option<RoomId>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl RoomQuery {
    /// True when `room` passes the filters (not the paging).
    pub fn matches(&self, room: &Room) -> bool {
        self.organization_id
            .as_ref()
            .is_none_or(|o| room.organization_id.as_ref() == Some(o))
            && self.status.is_none_or(|s| room.status == s)
    }
}

/// Changes to a room. Counters are never changed this way: only committing
/// an event moves them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomPatch {
    /// New status.
    pub status: Option<RoomStatus>,
    /// Replace the metadata.
    pub metadata: Option<Map>,
    /// Merge these keys into the metadata (null values remove keys).
    pub merge_metadata: Option<Map>,
    /// New inactivity timer.
    pub inactive_after_seconds: Option<Option<u64>>,
    /// New close timer.
    pub closed_after_seconds: Option<Option<u64>>,
    /// New `closed_at`.
    pub closed_at: Option<Option<Timestamp>>,
    /// New `timers.paused_at`.
    pub paused_at: Option<Option<Timestamp>>,
    /// New `updated_at`.
    pub updated_at: Option<Timestamp>,
}

impl RoomPatch {
    /// Applies the patch to a room value (shared by every backend that keeps
    /// rooms as values).
    pub fn apply(&self, room: &mut Room) {
        if let Some(s) = self.status {
            room.status = s;
        }
        if let Some(m) = &self.metadata {
            room.metadata = m.clone();
        }
        if let Some(m) = &self.merge_metadata {
            merge_map(&mut room.metadata, m);
        }
        if let Some(v) = self.inactive_after_seconds {
            room.timers.inactive_after_seconds = v;
        }
        if let Some(v) = self.closed_after_seconds {
            room.timers.closed_after_seconds = v;
        }
        if let Some(v) = self.closed_at {
            room.closed_at = v;
        }
        if let Some(v) = self.paused_at {
            room.timers.paused_at = v;
        }
        if let Some(v) = self.updated_at {
            room.updated_at = v;
        }
    }
}

/// Merges `updates` into `target`; a null value removes the key.
pub fn merge_map(target: &mut Map, updates: &Map) {
    for (k, v) in updates {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// The reader a timeline read is filtered for (RFC §7.5 rule 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The reading channel.
    pub channel_id: ChannelId,
    /// Its category.
    pub category: ChannelCategory,
}

impl Reader {
    /// Whether this reader may see `event`: its own events always; others'
    /// only when not blocked and the event's (commit-stamped) visibility
    /// includes the reader.
    pub fn may_see(&self, event: &RoomEvent) -> bool {
        if event.source.channel_id == self.channel_id {
            return true;
        }
        event.status != EventStatus::Blocked
            && event.visibility.includes(&self.channel_id, self.category)
    }
}

/// Which events a timeline read returns, in index order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// Only events with a larger index.
    pub after_index: Option<u64>,
    /// Only events with a smaller index.
    pub before_index: Option<u64>,
    /// At most this many, counted from the oldest match.
    pub limit: Option<usize>,
    /// Only the newest `n` matches (still returned oldest first).
    pub last: Option<usize>,
    /// Only what this reader may see.
    pub reader: Option<Reader>,
}

/// Changes to a stored event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPatch {
    /// Replace the content.
    pub content: Option<EventContent>,
    /// Replace the source.
    pub source: Option<EventSource>,
    /// Replace the metadata.
    pub metadata: Option<Map>,
    /// Merge keys into the metadata.
    pub merge_metadata: Option<Map>,
    /// Merge per-channel delivery results.
    pub delivery_results: Option<DeliveryResults>,
}

impl EventPatch {
    /// Applies the patch to an event value.
    pub fn apply(&self, e: &mut RoomEvent) {
        if let Some(c) = &self.content {
            e.content = c.clone();
        }
        if let Some(s) = &self.source {
            e.source = s.clone();
        }
        if let Some(m) = &self.metadata {
            e.metadata = m.clone();
        }
        if let Some(m) = &self.merge_metadata {
            merge_map(&mut e.metadata, m);
        }
        if let Some(d) = &self.delivery_results {
            for (k, v) in d {
                e.delivery_results.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A mutation of an earlier event applied in the same transaction as a
/// commit (EDIT/DELETE, RFC §10.1 step 12).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetUpdate {
    /// The event to change.
    pub event_id: EventId,
    /// The change.
    pub patch: EventPatch,
}

/// Filters of a task listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskQuery {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
}

/// Pluggable storage (RFC §14.1).
///
/// # Consistency
/// `add_event` is the commit point: it stores the event and moves the room's
/// counters in one atomic step, and refuses an index other than the room's
/// `event_count` and an idempotency key already used in the room. Backends
/// shared between processes must enforce both in the storage layer.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs (`"memory"`, `"sqlite"`, ...).
    fn backend_name(&self) -> &'static str;

    /// True when several processes may share this store, so an in-process
    /// room lock alone is not enough (RFC §13.5).
    fn is_shared(&self) -> bool {
        false
    }

    // ---- rooms
    /// Creates a room; [`StoreError::Conflict`] when the id is taken.
    async fn create_room(&self, room: Room) -> StoreResult<Room>;
    /// Reads a room.
    async fn get_room(&self, id: &RoomId) -> StoreResult<Option<Room>>;
    /// Applies a patch and returns the new room.
    async fn update_room(&self, id: &RoomId, patch: &RoomPatch) -> StoreResult<Room>;
    /// Deletes a room with its timeline, bindings, participants, tasks and
    /// observations. Returns whether it existed.
    async fn delete_room(&self, id: &RoomId) -> StoreResult<bool>;
    /// Lists rooms in id order.
    async fn list_rooms(&self, query: &RoomQuery) -> StoreResult<Vec<Room>>;
    /// The first matching room in id order.
    async fn find_room(&self, query: &RoomQuery) -> StoreResult<Option<Room>> {
        let mut q = query.clone();
        q.limit = Some(1);
        Ok(self.list_rooms(&q).await?.into_iter().next())
    }
    /// The most recently created matching room (ties broken by id).
    async fn find_latest_room(&self, query: &RoomQuery) -> StoreResult<Option<Room>>;
    /// Rooms that have timers configured and are ACTIVE or PAUSED.
    async fn list_timed_rooms(&self) -> StoreResult<Vec<Room>>;

    // ---- events
    /// Commits an event: stores it and, atomically, sets the room's
    /// `event_count = index + 1` and `latest_index = index`, and for a
    /// DELIVERED event `timers.last_activity_at = created_at`. When `target`
    /// is given, that event is updated in the same transaction.
    async fn add_event(
        &self,
        event: RoomEvent,
        target: Option<TargetUpdate>,
    ) -> StoreResult<Arc<RoomEvent>>;
    /// Reads an event by id.
    async fn get_event(&self, id: &EventId) -> StoreResult<Option<Arc<RoomEvent>>>;
    /// The event that used an idempotency key in a room.
    async fn find_event_by_idempotency_key(
        &self,
        room_id: &RoomId,
        key: &str,
    ) -> StoreResult<Option<Arc<RoomEvent>>>;
    /// Reads a room's timeline in index order.
    async fn list_events(
        &self,
        room_id: &RoomId,
        query: &EventQuery,
    ) -> StoreResult<Vec<Arc<RoomEvent>>>;
    /// Updates a stored event.
    async fn update_event(&self, id: &EventId, patch: &EventPatch) -> StoreResult<Arc<RoomEvent>>;
    /// Hard-deletes events of a room; returns the ids that existed.
    async fn delete_events(&self, room_id: &RoomId, ids: &[EventId]) -> StoreResult<Vec<EventId>>;

    // ---- bindings
    /// Stores a binding; [`StoreError::Conflict`] when one exists.
    async fn create_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding>;
    /// Reads a binding.
    async fn get_binding(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> StoreResult<Option<ChannelBinding>>;
    /// Replaces a binding.
    async fn update_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding>;
    /// Deletes a binding; returns whether it existed.
    async fn delete_binding(&self, room_id: &RoomId, channel_id: &ChannelId) -> StoreResult<bool>;
    /// A room's bindings in attach order.
    async fn list_bindings(&self, room_id: &RoomId) -> StoreResult<Vec<ChannelBinding>>;
    /// Rooms a channel is bound to, in id order.
    async fn rooms_with_binding(&self, channel_id: &ChannelId) -> StoreResult<Vec<Room>>;

    // ---- participants
    /// Stores a participant; [`StoreError::Conflict`] when `(room, id)` exists.
    async fn create_participant(&self, participant: Participant) -> StoreResult<Participant>;
    /// Reads a participant of a room.
    async fn get_participant(
        &self,
        room_id: &RoomId,
        id: &ParticipantId,
    ) -> StoreResult<Option<Participant>>;
    /// Replaces a participant.
    async fn update_participant(&self, participant: Participant) -> StoreResult<Participant>;
    /// Deletes a participant; returns whether it existed.
    async fn delete_participant(&self, room_id: &RoomId, id: &ParticipantId) -> StoreResult<bool>;
    /// A room's participants in join order.
    async fn list_participants(&self, room_id: &RoomId) -> StoreResult<Vec<Participant>>;
    /// The participant of a room with this sender address on this channel type.
    async fn find_participant_by_address(
        &self,
        room_id: &RoomId,
        channel_type: &ChannelType,
        address: &str,
    ) -> StoreResult<Option<Participant>>;
    /// Rooms having a participant with this address on this channel type,
    /// in id order.
    async fn rooms_with_participant_address(
        &self,
        channel_type: &ChannelType,
        address: &str,
    ) -> StoreResult<Vec<Room>>;

    // ---- identities
    /// Creates or replaces an identity.
    async fn store_identity(&self, identity: Identity) -> StoreResult<Identity>;
    /// Reads an identity.
    async fn get_identity(&self, id: &IdentityId) -> StoreResult<Option<Identity>>;
    /// The identity of a tenant that owns an address.
    async fn resolve_by_address(
        &self,
        channel_type: &ChannelType,
        address: &str,
        organization_id: Option<&str>,
    ) -> StoreResult<Option<Identity>>;

    // ---- side effects
    /// Stores a task.
    async fn create_task(&self, task: Task) -> StoreResult<Task>;
    /// Reads a task.
    async fn get_task(&self, id: &TaskId) -> StoreResult<Option<Task>>;
    /// Replaces a task.
    async fn update_task(&self, task: Task) -> StoreResult<Task>;
    /// A room's tasks in creation order.
    async fn list_tasks(&self, room_id: &RoomId, query: &TaskQuery) -> StoreResult<Vec<Task>>;
    /// Stores an observation.
    async fn create_observation(&self, observation: Observation) -> StoreResult<Observation>;
    /// A room's observations in creation order.
    async fn list_observations(&self, room_id: &RoomId) -> StoreResult<Vec<Observation>>;
}
