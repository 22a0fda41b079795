//! Tasks and observations (RFC §5.10, §5.11): side effects that hooks and
//! channels produce and that are kept whatever the permissions.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::{ChannelId, Map, ObservationId, RoomId, TaskId};

/// Task state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Not started.
    #[default]
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Completed,
    /// Failed.
    Failed,
    /// Abandoned.
    Cancelled,
}

/// A unit of work raised by a hook or channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique id (assigned by the framework when empty).
    #[serde(default)]
    pub id: TaskId,
    /// Originating room (filled in by the framework).
    #[serde(default)]
    pub room_id: RoomId,
    /// Integrator-defined type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// State.
    #[serde(default)]
    pub status: TaskStatus,
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Payload.
    #[serde(default)]
    pub data: Map,
    /// Assignee.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// Channel or hook that created it (filled in by the framework).
    #[serde(default)]
    pub created_by: Option<String>,
    /// Creation time (filled in by the framework).
    #[serde(default = "crate::event::epoch", with = "crate::time::ser")]
    pub created_at: Timestamp,
    /// Integrator data.
    #[serde(default)]
    pub metadata: Map,
}

impl Task {
    /// A draft task of the given type; the framework fills ids and times.
    pub fn new(task_type: impl Into<String>) -> Self {
        Self {
            id: TaskId::default(),
            room_id: RoomId::default(),
            task_type: task_type.into(),
            status: TaskStatus::Pending,
            title: None,
            description: None,
            data: Map::new(),
            assigned_to: None,
            created_by: None,
            created_at: crate::event::epoch(),
            metadata: Map::new(),
        }
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
}

/// A recorded fact about a room (sentiment, compliance, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Unique id (assigned by the framework when empty).
    #[serde(default)]
    pub id: ObservationId,
    /// Originating room (filled in by the framework).
    #[serde(default)]
    pub room_id: RoomId,
    /// Category.
    #[serde(rename = "type")]
    pub observation_type: String,
    /// Payload.
    #[serde(default)]
    pub data: Map,
    /// Channel that produced it.
    #[serde(default)]
    pub source_channel_id: Option<ChannelId>,
    /// Creation time (filled in by the framework).
    #[serde(default = "crate::event::epoch", with = "crate::time::ser")]
    pub created_at: Timestamp,
    /// Integrator data.
    #[serde(default)]
    pub metadata: Map,
}

impl Observation {
    /// A draft observation of the given type with a payload.
    pub fn new(observation_type: impl Into<String>, data: Map) -> Self {
        Self {
            id: ObservationId::default(),
            room_id: RoomId::default(),
            observation_type: observation_type.into(),
            data,
            source_channel_id: None,
            created_at: crate::event::epoch(),
            metadata: Map::new(),
        }
    }
}
