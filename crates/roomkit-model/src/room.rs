//! The room and its lifecycle (RFC §5.1).

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::{Map, RoomId};

/// Lifecycle state of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomStatus {
    /// Accepting events.
    #[default]
    Active,
    /// Idle; accepts events, which resume it.
    Paused,
    /// Ended; refuses events; may be reopened.
    Closed,
    /// Terminal; refuses events.
    Archived,
}

impl RoomStatus {
    /// True for ACTIVE and PAUSED.
    pub fn accepts_events(self) -> bool {
        matches!(self, Self::Active | Self::Paused)
    }

    /// Whether a move from `self` to `to` is allowed: active and paused
    /// interchange, anything not archived may close or archive, and a closed
    /// room may be reopened. Archived is terminal. Staying put is allowed.
    pub fn can_move_to(self, to: RoomStatus) -> bool {
        use RoomStatus::*;
        if self == to {
            return true;
        }
        match (self, to) {
            (Archived, _) => false,
            (Active, Paused) | (Paused, Active) => true,
            (_, Closed) | (_, Archived) => true,
            (Closed, Active) => true,
            _ => false,
        }
    }
}

/// Automatic transitions (RFC §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoomTimers {
    /// Seconds without an event before ACTIVE becomes PAUSED.
    #[serde(default)]
    pub inactive_after_seconds: Option<u64>,
    /// Seconds in PAUSED before it becomes CLOSED.
    #[serde(default)]
    pub closed_after_seconds: Option<u64>,
    /// When the last event was committed.
    #[serde(default, with = "crate::time::opt")]
    pub last_activity_at: Option<Timestamp>,
    /// When the room last entered PAUSED (kept so the close timer can be
    /// measured from it).
    #[serde(default, with = "crate::time::opt")]
    pub paused_at: Option<Timestamp>,
}

impl RoomTimers {
    /// True when at least one timer is configured.
    pub fn is_configured(&self) -> bool {
        self.inactive_after_seconds.is_some() || self.closed_after_seconds.is_some()
    }
}

/// A conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// Unique id.
    pub id: RoomId,
    /// Tenant the room belongs to.
    pub organization_id: Option<String>,
    /// Lifecycle state.
    pub status: RoomStatus,
    /// Creation time.
    #[serde(with = "crate::time::ser")]
    pub created_at: Timestamp,
    /// Last modification.
    #[serde(with = "crate::time::ser")]
    pub updated_at: Timestamp,
    /// When it was closed.
    #[serde(with = "crate::time::opt")]
    pub closed_at: Option<Timestamp>,
    /// Automatic transitions.
    pub timers: RoomTimers,
    /// Integrator data.
    pub metadata: Map,
    /// Events stored so far (blocked ones included).
    pub event_count: u64,
    /// Index of the newest event; `None` while the room is empty.
    pub latest_index: Option<u64>,
}

impl Room {
    /// A new, empty, active room.
    pub fn new(id: RoomId, now: Timestamp) -> Self {
        Self {
            id,
            organization_id: None,
            status: RoomStatus::Active,
            created_at: now,
            updated_at: now,
            closed_at: None,
            timers: RoomTimers::default(),
            metadata: Map::new(),
            event_count: 0,
            latest_index: None,
        }
    }
}
