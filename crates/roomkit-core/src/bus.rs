//! Publication of framework events, committed timeline events and
//! ephemeral events to in-process subscribers.
//!
//! Each stream is a bounded broadcast channel: a subscriber that falls more
//! than its capacity behind loses the oldest items and is told how many it
//! missed (`RecvError::Lagged`); publishing never waits.

use std::sync::Arc;

use roomkit_model::{FrameworkEvent, RoomEvent, RoomId};
use tokio::sync::broadcast;

/// Capacity of each broadcast stream.
pub const BUS_CAPACITY: usize = 4096;

/// A typing or presence notice: published live, never stored (RFC §8.4).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EphemeralEvent {
    /// Room.
    pub room_id: RoomId,
    /// The event (TYPING, PRESENCE, ...), not stored.
    pub event: RoomEvent,
}

pub(crate) struct EventBus {
    pub framework: broadcast::Sender<Arc<FrameworkEvent>>,
    pub timeline: broadcast::Sender<Arc<RoomEvent>>,
    pub ephemeral: broadcast::Sender<Arc<EphemeralEvent>>,
}

impl EventBus {
    pub(crate) fn new() -> Self {
        Self {
            framework: broadcast::channel(BUS_CAPACITY).0,
            timeline: broadcast::channel(BUS_CAPACITY).0,
            ephemeral: broadcast::channel(BUS_CAPACITY).0,
        }
    }
}
