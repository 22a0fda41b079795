//! In-memory store (RFC §14.2): one read-write lock over plain maps. Events
//! are kept as shared immutable snapshots, so timeline reads copy pointers,
//! not events.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::RwLock;
use roomkit_model::{
    ChannelBinding, ChannelId, ChannelType, EventId, EventStatus, Identity, IdentityId,
    Observation, Participant, ParticipantId, Room, RoomEvent, RoomId, Task, TaskId,
};

use super::{
    EventPatch, EventQuery, RoomPatch, RoomQuery, Store, StoreResult, TargetUpdate, TaskQuery,
};
use crate::error::StoreError;

/// A store that keeps everything in process memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: BTreeMap<RoomId, RoomData>,
    event_rooms: HashMap<EventId, (RoomId, u64)>,
    identities: HashMap<IdentityId, Identity>,
    tasks: HashMap<TaskId, Task>,
}

struct RoomData {
    room: Room,
    /// Position = index; a hard-deleted event leaves `None`.
    events: Vec<Option<Arc<RoomEvent>>>,
    bindings: Vec<ChannelBinding>,
    participants: Vec<Participant>,
    idempotency: HashMap<String, u64>,
    tasks: Vec<TaskId>,
    observations: Vec<Observation>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn room_data<'a>(inner: &'a Inner, id: &RoomId) -> StoreResult<&'a RoomData> {
    inner
        .rooms
        .get(id)
        .ok_or_else(|| StoreError::not_found("room", id))
}

fn room_data_mut<'a>(inner: &'a mut Inner, id: &RoomId) -> StoreResult<&'a mut RoomData> {
    inner
        .rooms
        .get_mut(id)
        .ok_or_else(|| StoreError::not_found("room", id))
}

#[async_trait]
impl Store for MemoryStore {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn create_room(&self, room: Room) -> StoreResult<Room> {
        let mut inner = self.inner.write();
        if inner.rooms.contains_key(&room.id) {
            return Err(StoreError::Conflict {
                kind: "room",
                id: room.id.to_string(),
            });
        }
        inner.rooms.insert(
            room.id.clone(),
            RoomData {
                room: room.clone(),
                events: Vec::new(),
                bindings: Vec::new(),
                participants: Vec::new(),
                idempotency: HashMap::new(),
                tasks: Vec::new(),
                observations: Vec::new(),
            },
        );
        Ok(room)
    }

    async fn get_room(&self, id: &RoomId) -> StoreResult<Option<Room>> {
        Ok(self.inner.read().rooms.get(id).map(|d| d.room.clone()))
    }

    async fn update_room(&self, id: &RoomId, patch: &RoomPatch) -> StoreResult<Room> {
        let mut inner = self.inner.write();
        let data = room_data_mut(&mut inner, id)?;
        patch.apply(&mut data.room);
        Ok(data.room.clone())
    }

    async fn delete_room(&self, id: &RoomId) -> StoreResult<bool> {
        let mut inner = self.inner.write();
        let Some(data) = inner.rooms.remove(id) else {
            return Ok(false);
        };
        for e in data.events.iter().flatten() {
            inner.event_rooms.remove(&e.id);
        }
        for t in &data.tasks {
            inner.tasks.remove(t);
        }
        Ok(true)
    }

    async fn list_rooms(&self, query: &RoomQuery) -> StoreResult<Vec<Room>> {
        let inner = self.inner.read();
        let limit = query.limit.unwrap_or(usize::MAX);
        let iter: Box<dyn Iterator<Item = (&RoomId, &RoomData)>> = match &query.after {
            Some(after) => Box::new(inner.rooms.range::<RoomId, _>((
                std::ops::Bound::Excluded(after),
                std::ops::Bound::Unbounded,
            ))),
            None => Box::new(inner.rooms.iter()),
        };
        Ok(iter
            .map(|(_, d)| &d.room)
            .filter(|r| query.matches(r))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn find_latest_room(&self, query: &RoomQuery) -> StoreResult<Option<Room>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .values()
            .map(|d| &d.room)
            .filter(|r| query.matches(r))
            .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
            .cloned())
    }

    async fn list_timed_rooms(&self) -> StoreResult<Vec<Room>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .values()
            .map(|d| &d.room)
            .filter(|r| r.timers.is_configured() && r.status.accepts_events())
            .cloned()
            .collect())
    }

    async fn add_event(
        &self,
        event: RoomEvent,
        target: Option<TargetUpdate>,
    ) -> StoreResult<Arc<RoomEvent>> {
        let mut inner = self.inner.write();
        if inner.event_rooms.contains_key(&event.id) {
            return Err(StoreError::Conflict {
                kind: "event",
                id: event.id.to_string(),
            });
        }
        // Validate everything before changing anything, so a refused write
        // leaves no partial state.
        let target_loc = match &target {
            Some(t) => {
                let loc = inner
                    .event_rooms
                    .get(&t.event_id)
                    .filter(|(r, _)| *r == event.room_id)
                    .map(|(_, i)| *i)
                    .ok_or_else(|| StoreError::not_found("event", &t.event_id))?;
                Some(loc)
            }
            None => None,
        };
        let data = room_data_mut(&mut inner, &event.room_id)?;
        if event.index != data.room.event_count {
            return Err(StoreError::IndexConflict {
                room_id: event.room_id.clone(),
                index: event.index,
                expected: data.room.event_count,
            });
        }
        if let Some(key) = &event.idempotency_key
            && data.idempotency.contains_key(key)
        {
            return Err(StoreError::DuplicateKey {
                room_id: event.room_id.clone(),
                key: key.clone(),
            });
        }
        if let (Some(t), Some(idx)) = (&target, target_loc)
            && let Some(Some(slot)) = data.events.get_mut(idx as usize)
        {
            let mut updated = (**slot).clone();
            t.patch.apply(&mut updated);
            *slot = Arc::new(updated);
        }
        if let Some(key) = &event.idempotency_key {
            data.idempotency.insert(key.clone(), event.index);
        }
        data.room.event_count = event.index + 1;
        data.room.latest_index = Some(event.index);
        if event.status == EventStatus::Delivered {
            data.room.timers.last_activity_at = Some(event.created_at);
        }
        let index = event.index;
        let id = event.id.clone();
        let room_id = event.room_id.clone();
        let stored = Arc::new(event);
        data.events.push(Some(stored.clone()));
        inner.event_rooms.insert(id, (room_id, index));
        Ok(stored)
    }

    async fn get_event(&self, id: &EventId) -> StoreResult<Option<Arc<RoomEvent>>> {
        let inner = self.inner.read();
        let Some((room, idx)) = inner.event_rooms.get(id) else {
            return Ok(None);
        };
        Ok(inner
            .rooms
            .get(room)
            .and_then(|d| d.events.get(*idx as usize).cloned().flatten()))
    }

    async fn find_event_by_idempotency_key(
        &self,
        room_id: &RoomId,
        key: &str,
    ) -> StoreResult<Option<Arc<RoomEvent>>> {
        let inner = self.inner.read();
        let Some(data) = inner.rooms.get(room_id) else {
            return Ok(None);
        };
        Ok(data
            .idempotency
            .get(key)
            .and_then(|i| data.events.get(*i as usize).cloned().flatten()))
    }

    async fn list_events(
        &self,
        room_id: &RoomId,
        query: &EventQuery,
    ) -> StoreResult<Vec<Arc<RoomEvent>>> {
        let inner = self.inner.read();
        let data = room_data(&inner, room_id)?;
        let len = data.events.len() as u64;
        let start = query
            .after_index
            .map_or(0, |a| a.saturating_add(1))
            .min(len);
        let end = query.before_index.unwrap_or(len).min(len);
        if start >= end {
            return Ok(Vec::new());
        }
        let slice = &data.events[start as usize..end as usize];
        let visible = |e: &&Arc<RoomEvent>| query.reader.as_ref().is_none_or(|r| r.may_see(e));
        let mut out: Vec<Arc<RoomEvent>> = match query.last {
            Some(n) => {
                let mut v: Vec<_> = slice
                    .iter()
                    .rev()
                    .flatten()
                    .filter(visible)
                    .take(n)
                    .cloned()
                    .collect();
                v.reverse();
                v
            }
            None => slice.iter().flatten().filter(visible).cloned().collect(),
        };
        if let Some(limit) = query.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    async fn update_event(&self, id: &EventId, patch: &EventPatch) -> StoreResult<Arc<RoomEvent>> {
        let mut inner = self.inner.write();
        let (room, idx) = inner
            .event_rooms
            .get(id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("event", id))?;
        let data = room_data_mut(&mut inner, &room)?;
        let slot = data
            .events
            .get_mut(idx as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| StoreError::not_found("event", id))?;
        let mut updated = (**slot).clone();
        patch.apply(&mut updated);
        let updated = Arc::new(updated);
        *slot = updated.clone();
        Ok(updated)
    }

    async fn delete_events(&self, room_id: &RoomId, ids: &[EventId]) -> StoreResult<Vec<EventId>> {
        let mut inner = self.inner.write();
        let mut deleted = Vec::new();
        for id in ids {
            let Some((room, idx)) = inner.event_rooms.get(id).cloned() else {
                continue;
            };
            if &room != room_id {
                continue;
            }
            inner.event_rooms.remove(id);
            if let Some(data) = inner.rooms.get_mut(&room)
                && let Some(slot) = data.events.get_mut(idx as usize)
                && let Some(e) = slot.take()
                && let Some(key) = &e.idempotency_key
            {
                data.idempotency.remove(key);
            }
            deleted.push(id.clone());
        }
        Ok(deleted)
    }

    async fn create_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding> {
        let mut inner = self.inner.write();
        let data = room_data_mut(&mut inner, &binding.room_id)?;
        if data
            .bindings
            .iter()
            .any(|b| b.channel_id == binding.channel_id)
        {
            return Err(StoreError::Conflict {
                kind: "binding",
                id: format!("{}/{}", binding.room_id, binding.channel_id),
            });
        }
        data.bindings.push(binding.clone());
        Ok(binding)
    }

    async fn get_binding(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
    ) -> StoreResult<Option<ChannelBinding>> {
        let inner = self.inner.read();
        Ok(inner.rooms.get(room_id).and_then(|d| {
            d.bindings
                .iter()
                .find(|b| &b.channel_id == channel_id)
                .cloned()
        }))
    }

    async fn update_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding> {
        let mut inner = self.inner.write();
        let data = room_data_mut(&mut inner, &binding.room_id)?;
        let slot = data
            .bindings
            .iter_mut()
            .find(|b| b.channel_id == binding.channel_id)
            .ok_or_else(|| StoreError::not_found("binding", &binding.channel_id))?;
        *slot = binding.clone();
        Ok(binding)
    }

    async fn delete_binding(&self, room_id: &RoomId, channel_id: &ChannelId) -> StoreResult<bool> {
        let mut inner = self.inner.write();
        let Some(data) = inner.rooms.get_mut(room_id) else {
            return Ok(false);
        };
        let before = data.bindings.len();
        data.bindings.retain(|b| &b.channel_id != channel_id);
        Ok(data.bindings.len() != before)
    }

    async fn list_bindings(&self, room_id: &RoomId) -> StoreResult<Vec<ChannelBinding>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .get(room_id)
            .map(|d| d.bindings.clone())
            .unwrap_or_default())
    }

    async fn rooms_with_binding(&self, channel_id: &ChannelId) -> StoreResult<Vec<Room>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .values()
            .filter(|d| d.bindings.iter().any(|b| &b.channel_id == channel_id))
            .map(|d| d.room.clone())
            .collect())
    }

    async fn create_participant(&self, participant: Participant) -> StoreResult<Participant> {
        let mut inner = self.inner.write();
        let data = room_data_mut(&mut inner, &participant.room_id)?;
        if data.participants.iter().any(|p| p.id == participant.id) {
            return Err(StoreError::Conflict {
                kind: "participant",
                id: participant.id.to_string(),
            });
        }
        data.participants.push(participant.clone());
        Ok(participant)
    }

    async fn get_participant(
        &self,
        room_id: &RoomId,
        id: &ParticipantId,
    ) -> StoreResult<Option<Participant>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .get(room_id)
            .and_then(|d| d.participants.iter().find(|p| &p.id == id).cloned()))
    }

    async fn update_participant(&self, participant: Participant) -> StoreResult<Participant> {
        let mut inner = self.inner.write();
        let data = room_data_mut(&mut inner, &participant.room_id)?;
        let slot = data
            .participants
            .iter_mut()
            .find(|p| p.id == participant.id)
            .ok_or_else(|| StoreError::not_found("participant", &participant.id))?;
        *slot = participant.clone();
        Ok(participant)
    }

    async fn delete_participant(&self, room_id: &RoomId, id: &ParticipantId) -> StoreResult<bool> {
        let mut inner = self.inner.write();
        let Some(data) = inner.rooms.get_mut(room_id) else {
            return Ok(false);
        };
        let before = data.participants.len();
        data.participants.retain(|p| &p.id != id);
        Ok(data.participants.len() != before)
    }

    async fn list_participants(&self, room_id: &RoomId) -> StoreResult<Vec<Participant>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .get(room_id)
            .map(|d| d.participants.clone())
            .unwrap_or_default())
    }

    async fn find_participant_by_address(
        &self,
        room_id: &RoomId,
        channel_type: &ChannelType,
        address: &str,
    ) -> StoreResult<Option<Participant>> {
        let inner = self.inner.read();
        Ok(inner.rooms.get(room_id).and_then(|d| {
            d.participants
                .iter()
                .find(|p| {
                    p.address.as_deref() == Some(address)
                        && p.channel_type.as_ref() == Some(channel_type)
                })
                .cloned()
        }))
    }

    async fn rooms_with_participant_address(
        &self,
        channel_type: &ChannelType,
        address: &str,
    ) -> StoreResult<Vec<Room>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .values()
            .filter(|d| {
                d.participants.iter().any(|p| {
                    p.address.as_deref() == Some(address)
                        && p.channel_type.as_ref() == Some(channel_type)
                })
            })
            .map(|d| d.room.clone())
            .collect())
    }

    async fn store_identity(&self, identity: Identity) -> StoreResult<Identity> {
        self.inner
            .write()
            .identities
            .insert(identity.id.clone(), identity.clone());
        Ok(identity)
    }

    async fn get_identity(&self, id: &IdentityId) -> StoreResult<Option<Identity>> {
        Ok(self.inner.read().identities.get(id).cloned())
    }

    async fn resolve_by_address(
        &self,
        channel_type: &ChannelType,
        address: &str,
        organization_id: Option<&str>,
    ) -> StoreResult<Option<Identity>> {
        let inner = self.inner.read();
        let mut matches: Vec<&Identity> = inner
            .identities
            .values()
            .filter(|i| i.organization_id.as_deref() == organization_id)
            .filter(|i| {
                i.channel_addresses
                    .get(channel_type)
                    .is_some_and(|a| a.iter().any(|x| x == address))
            })
            .collect();
        matches.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(matches.first().map(|i| (*i).clone()))
    }

    async fn create_task(&self, task: Task) -> StoreResult<Task> {
        let mut inner = self.inner.write();
        let data = room_data_mut(&mut inner, &task.room_id)?;
        data.tasks.push(task.id.clone());
        inner.tasks.insert(task.id.clone(), task.clone());
        Ok(task)
    }

    async fn get_task(&self, id: &TaskId) -> StoreResult<Option<Task>> {
        Ok(self.inner.read().tasks.get(id).cloned())
    }

    async fn update_task(&self, task: Task) -> StoreResult<Task> {
        let mut inner = self.inner.write();
        let slot = inner
            .tasks
            .get_mut(&task.id)
            .ok_or_else(|| StoreError::not_found("task", &task.id))?;
        *slot = task.clone();
        Ok(task)
    }

    async fn list_tasks(&self, room_id: &RoomId, query: &TaskQuery) -> StoreResult<Vec<Task>> {
        let inner = self.inner.read();
        let Some(data) = inner.rooms.get(room_id) else {
            return Ok(Vec::new());
        };
        Ok(data
            .tasks
            .iter()
            .filter_map(|id| inner.tasks.get(id))
            .filter(|t| query.status.is_none_or(|s| t.status == s))
            .cloned()
            .collect())
    }

    async fn create_observation(&self, observation: Observation) -> StoreResult<Observation> {
        let mut inner = self.inner.write();
        let data = room_data_mut(&mut inner, &observation.room_id)?;
        data.observations.push(observation.clone());
        Ok(observation)
    }

    async fn list_observations(&self, room_id: &RoomId) -> StoreResult<Vec<Observation>> {
        let inner = self.inner.read();
        Ok(inner
            .rooms
            .get(room_id)
            .map(|d| d.observations.clone())
            .unwrap_or_default())
    }
}
