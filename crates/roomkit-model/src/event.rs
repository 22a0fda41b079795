//! Room events, their sources, inbound messages and delivery results
//! (RFC §5.2, §5.12, §5.13, §10.1).

use std::collections::BTreeMap;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::{
    ChannelDirection, ChannelId, ChannelType, EventContent, EventId, Map, ParticipantId, RoomId,
    Visibility,
};

pub(crate) fn epoch() -> Timestamp {
    DateTime::UNIX_EPOCH
}

/// What kind of event this is (RFC §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A message.
    #[default]
    Message,
    /// A framework notification.
    System,
    /// Someone is typing (ephemeral).
    Typing,
    /// Read up to an index.
    ReadReceipt,
    /// Provider confirmed delivery.
    DeliveryReceipt,
    /// Online/offline (ephemeral).
    Presence,
    /// Reaction to another event.
    Reaction,
    /// Edit of an earlier message.
    Edit,
    /// Deletion of an earlier message.
    Delete,
    /// A participant joined.
    ParticipantJoined,
    /// A participant left.
    ParticipantLeft,
    /// A pending participant was identified.
    ParticipantIdentified,
    /// A participant's presentation changed.
    ParticipantUpdated,
    /// A channel was attached.
    ChannelAttached,
    /// A channel was detached.
    ChannelDetached,
    /// A channel was muted.
    ChannelMuted,
    /// A channel was unmuted.
    ChannelUnmuted,
    /// A binding changed (access, visibility).
    ChannelUpdated,
    /// A keypad digit.
    Dtmf,
    /// Recording started.
    RecordingStarted,
    /// Recording stopped.
    RecordingStopped,
    /// A task was created.
    TaskCreated,
    /// An observation was recorded.
    Observation,
}

impl EventType {
    /// All 23 event types, in RFC order.
    pub const ALL: [EventType; 23] = [
        Self::Message,
        Self::System,
        Self::Typing,
        Self::ReadReceipt,
        Self::DeliveryReceipt,
        Self::Presence,
        Self::Reaction,
        Self::Edit,
        Self::Delete,
        Self::ParticipantJoined,
        Self::ParticipantLeft,
        Self::ParticipantIdentified,
        Self::ParticipantUpdated,
        Self::ChannelAttached,
        Self::ChannelDetached,
        Self::ChannelMuted,
        Self::ChannelUnmuted,
        Self::ChannelUpdated,
        Self::Dtmf,
        Self::RecordingStarted,
        Self::RecordingStopped,
        Self::TaskCreated,
        Self::Observation,
    ];

    /// True for events that are published live and never stored (§8.4).
    pub fn is_ephemeral(self) -> bool {
        matches!(self, Self::Typing | Self::Presence)
    }
}

/// Outcome of an event (RFC §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Created, not yet processed.
    #[default]
    Pending,
    /// Stored and broadcast.
    Delivered,
    /// Read by a recipient.
    Read,
    /// Delivery failed after all retries.
    Failed,
    /// Stored but not broadcast; `blocked_by` says why.
    Blocked,
}

/// Where an event came from (RFC §5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventSource {
    /// Producing channel.
    pub channel_id: ChannelId,
    /// Its type.
    pub channel_type: ChannelType,
    /// Direction of the message relative to the framework.
    pub direction: ChannelDirection,
    /// The human or program behind it.
    #[serde(default)]
    pub participant_id: Option<ParticipantId>,
    /// External reference (the sender's address for inbound messages).
    #[serde(default)]
    pub external_id: Option<String>,
    /// Provider or backend name.
    #[serde(default)]
    pub provider: Option<String>,
    /// The original provider payload, kept unmodified.
    #[serde(default)]
    pub raw_payload: Map,
    /// The provider's message id.
    #[serde(default)]
    pub provider_message_id: Option<String>,
}

impl EventSource {
    /// The source of framework-generated events.
    pub fn system() -> Self {
        Self {
            channel_id: ChannelId::system(),
            channel_type: ChannelType::System,
            direction: ChannelDirection::Inbound,
            participant_id: None,
            external_id: None,
            provider: None,
            raw_payload: Map::new(),
            provider_message_id: None,
        }
    }

    /// A source for a channel, with nothing else filled in.
    pub fn channel(
        channel_id: ChannelId,
        channel_type: ChannelType,
        direction: ChannelDirection,
    ) -> Self {
        Self {
            channel_id,
            channel_type,
            direction,
            ..Self::system()
        }
    }
}

/// Outcome kind of one delivery (RFC §5.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Handed to the provider.
    Sent,
    /// Accepted for later sending.
    Queued,
    /// Did not go out.
    Failed,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryError {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable description.
    pub message: String,
    /// Whether retrying may help.
    pub retryable: bool,
}

/// Outcome of delivering one event to one channel (RFC §5.13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryResult {
    /// Target channel.
    pub channel_id: ChannelId,
    /// Outcome.
    pub status: DeliveryStatus,
    /// Provider's message id.
    #[serde(default)]
    pub provider_message_id: Option<String>,
    /// Failure details.
    #[serde(default)]
    pub error: Option<DeliveryError>,
    /// When to retry, if rate limited.
    #[serde(default, with = "crate::time::opt")]
    pub retry_after: Option<Timestamp>,
}

impl DeliveryResult {
    /// A successful send.
    pub fn sent(channel_id: ChannelId, provider_message_id: Option<String>) -> Self {
        Self {
            channel_id,
            status: DeliveryStatus::Sent,
            provider_message_id,
            error: None,
            retry_after: None,
        }
    }

    /// A failure.
    pub fn failed(channel_id: ChannelId, error: DeliveryError) -> Self {
        Self {
            channel_id,
            status: DeliveryStatus::Failed,
            provider_message_id: None,
            error: Some(error),
            retry_after: None,
        }
    }
}

/// Per-channel delivery outcomes of one event, written in JSON as an object
/// keyed by channel id. Kept as a small vector sorted by channel id: an
/// event has a handful of targets, and a tree node per event would cost more
/// memory than the event itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeliveryResults(Vec<DeliveryResult>);

impl DeliveryResults {
    /// No results.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Records (or replaces) the result of a channel.
    pub fn insert(
        &mut self,
        channel_id: ChannelId,
        mut result: DeliveryResult,
    ) -> Option<DeliveryResult> {
        result.channel_id = channel_id;
        match self
            .0
            .binary_search_by(|r| r.channel_id.cmp(&result.channel_id))
        {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], result)),
            Err(i) => {
                self.0.insert(i, result);
                None
            }
        }
    }

    /// The result of a channel.
    pub fn get(&self, channel_id: &ChannelId) -> Option<&DeliveryResult> {
        self.0
            .binary_search_by(|r| r.channel_id.cmp(channel_id))
            .ok()
            .map(|i| &self.0[i])
    }

    /// Whether a channel has a result.
    pub fn contains_key(&self, channel_id: &ChannelId) -> bool {
        self.get(channel_id).is_some()
    }

    /// Number of channels with a result.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no result.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(channel id, result)` pairs in channel id order.
    pub fn iter(&self) -> impl Iterator<Item = (&ChannelId, &DeliveryResult)> {
        self.0.iter().map(|r| (&r.channel_id, r))
    }

    /// Channel ids in order.
    pub fn keys(&self) -> impl Iterator<Item = &ChannelId> {
        self.0.iter().map(|r| &r.channel_id)
    }

    /// Results in channel id order.
    pub fn values(&self) -> impl Iterator<Item = &DeliveryResult> {
        self.0.iter()
    }
}

impl std::ops::Index<&ChannelId> for DeliveryResults {
    type Output = DeliveryResult;

    fn index(&self, channel_id: &ChannelId) -> &DeliveryResult {
        match self.get(channel_id) {
            Some(r) => r,
            None => panic!("no delivery result for channel {channel_id}"),
        }
    }
}

impl<'a> IntoIterator for &'a DeliveryResults {
    type Item = (&'a ChannelId, &'a DeliveryResult);
    type IntoIter = Box<dyn Iterator<Item = (&'a ChannelId, &'a DeliveryResult)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl FromIterator<(ChannelId, DeliveryResult)> for DeliveryResults {
    fn from_iter<I: IntoIterator<Item = (ChannelId, DeliveryResult)>>(iter: I) -> Self {
        let mut out = Self::new();
        for (k, v) in iter {
            out.insert(k, v);
        }
        out
    }
}

impl Serialize for DeliveryResults {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for r in &self.0 {
            map.serialize_entry(&r.channel_id, r)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for DeliveryResults {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<ChannelId, DeliveryResult>::deserialize(d)?;
        Ok(map.into_iter().collect())
    }
}

/// An event in a room's timeline (RFC §5.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// Unique id (assigned by the framework when empty).
    pub id: EventId,
    /// Owning room.
    pub room_id: RoomId,
    /// Kind of event.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// Where it came from.
    pub source: EventSource,
    /// Payload.
    pub content: EventContent,
    /// Outcome.
    pub status: EventStatus,
    /// Hook or rule that blocked it.
    pub blocked_by: Option<String>,
    /// Who may see it.
    pub visibility: Visibility,
    /// Intelligence channels asked to act; `None` is unaddressed (§19.3).
    pub addressed_to: Option<Vec<ChannelId>>,
    /// Position in the room's timeline.
    pub index: u64,
    /// Response-chain depth.
    pub chain_depth: u32,
    /// The event this one responds to.
    pub parent_event_id: Option<EventId>,
    /// Integrator's correlation reference.
    pub correlation_id: Option<String>,
    /// Duplicate-prevention key, scoped to the room.
    pub idempotency_key: Option<String>,
    /// Creation time.
    #[serde(with = "crate::time::ser")]
    pub created_at: Timestamp,
    /// Integrator data.
    pub metadata: Map,
    /// Provider-specific structured data; unknown keys are kept as they are.
    pub channel_data: Map,
    /// Per-channel delivery outcomes.
    pub delivery_results: DeliveryResults,
}

impl RoomEvent {
    /// A draft event with the given source and content. The framework fills
    /// id, room, index, status and time when it stores it.
    pub fn draft(source: EventSource, content: EventContent) -> Self {
        let event_type = match &content {
            EventContent::Edit(_) => EventType::Edit,
            EventContent::Delete(_) => EventType::Delete,
            _ => EventType::Message,
        };
        Self {
            id: EventId::default(),
            room_id: RoomId::default(),
            event_type,
            source,
            content,
            status: EventStatus::Pending,
            blocked_by: None,
            visibility: Visibility::All,
            addressed_to: None,
            index: 0,
            chain_depth: 0,
            parent_event_id: None,
            correlation_id: None,
            idempotency_key: None,
            created_at: epoch(),
            metadata: Map::new(),
            channel_data: Map::new(),
            delivery_results: DeliveryResults::new(),
        }
    }

    /// A draft framework (`system` channel) event.
    pub fn system(event_type: EventType, content: EventContent) -> Self {
        let mut e = Self::draft(EventSource::system(), content);
        e.event_type = event_type;
        e
    }

    /// A draft text message from a channel.
    pub fn text(source: EventSource, text: impl Into<String>) -> Self {
        Self::draft(source, EventContent::text(text))
    }
}

/// A voice session to connect after an inbound message is processed
/// (RFC §5.12; used by voice channels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoiceSession {
    /// Session id.
    pub id: String,
    /// Room the session belongs to, when known.
    #[serde(default)]
    pub room_id: Option<RoomId>,
    /// Participant on the call.
    #[serde(default)]
    pub participant_id: Option<String>,
    /// Channel carrying the session.
    pub channel_id: ChannelId,
    /// Session data (caller, callee, codec, ...).
    #[serde(default)]
    pub metadata: Map,
}

/// A message arriving from outside the framework, normalized (RFC §5.12).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// Registered channel it arrived on.
    pub channel_id: ChannelId,
    /// Sender address (phone number, email, user id).
    pub sender_id: String,
    /// Parsed content.
    pub content: EventContent,
    /// Original provider payload.
    #[serde(default)]
    pub raw_payload: Map,
    /// Provider's message id.
    #[serde(default)]
    pub provider_message_id: Option<String>,
    /// When it was originally sent.
    #[serde(default, with = "crate::time::opt")]
    pub timestamp: Option<Timestamp>,
    /// Duplicate-prevention key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Room to use, bypassing the router.
    #[serde(default)]
    pub room_id: Option<RoomId>,
    /// Voice session to connect after processing.
    #[serde(default)]
    pub session: Option<VoiceSession>,
    /// Extra data; copied into the event's metadata.
    #[serde(default)]
    pub metadata: Map,
}

impl InboundMessage {
    /// A text message from `sender_id` on `channel_id`.
    pub fn text(
        channel_id: impl Into<ChannelId>,
        sender_id: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            channel_id: channel_id.into(),
            sender_id: sender_id.into(),
            content: EventContent::text(text),
            raw_payload: Map::new(),
            provider_message_id: None,
            timestamp: None,
            idempotency_key: None,
            room_id: None,
            session: None,
            metadata: Map::new(),
        }
    }

    /// Sets the target room.
    pub fn in_room(mut self, room_id: impl Into<RoomId>) -> Self {
        self.room_id = Some(room_id.into());
        self
    }
}

/// Why the pipeline refused or blocked an event (the `reason` of an
/// [`InboundResult`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// The room is closed or archived; nothing was stored.
    RoomClosed,
    /// The idempotency key was seen before; the original event is returned.
    Duplicate,
    /// An edit or delete by someone other than the author; nothing stored.
    NotAuthor,
    /// An edit or delete of an event that is not in the room; nothing stored.
    InvalidTarget,
    /// Pre-commit processing exceeded its time limit; nothing stored.
    ProcessTimeout,
    /// A BEFORE_BROADCAST hook blocked it; stored as BLOCKED.
    Hook,
    /// The source binding may not write; stored as BLOCKED.
    Permission,
    /// The response chain is too deep; stored as BLOCKED.
    ChainDepth,
}

/// Result of [`process_inbound`] or `send_event` (RFC §10.1 step 18).
///
/// Unlike the RFC's literal shape, `event` carries the stored event also
/// when it was stored as BLOCKED (decision D8), and the original event for a
/// duplicate.
///
/// [`process_inbound`]: https://docs.rs/roomkit-core
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundResult {
    /// The stored event, when one was stored.
    pub event: Option<RoomEvent>,
    /// Whether the event was refused or blocked.
    pub blocked: bool,
    /// Why, when blocked.
    pub reason: Option<BlockReason>,
    /// Deliveries actually executed for this event.
    pub delivery_results: DeliveryResults,
}
