//! Error types of the core engine.

use roomkit_model::{ChannelId, EventId, ModelError, RoomId, RoomStatus};

/// Failure of a storage backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named object does not exist.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Kind of object.
        kind: &'static str,
        /// Its id.
        id: String,
    },
    /// An object with this key already exists.
    #[error("{kind} {id} already exists")]
    Conflict {
        /// Kind of object.
        kind: &'static str,
        /// Its key.
        id: String,
    },
    /// `(room_id, index)` is taken or not the room's next index.
    #[error("index {index} conflicts in room {room_id} (next free index is {expected})")]
    IndexConflict {
        /// Room.
        room_id: RoomId,
        /// Requested index.
        index: u64,
        /// The room's `event_count`.
        expected: u64,
    },
    /// The idempotency key is already recorded in the room.
    #[error("idempotency key {key:?} already used in room {room_id}")]
    DuplicateKey {
        /// Room.
        room_id: RoomId,
        /// Key.
        key: String,
    },
    /// The backend itself failed (connection lost, disk full, ...).
    #[error("store backend failed: {0}")]
    Backend(String),
}

impl StoreError {
    /// True when retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Backend(_))
    }

    /// Shorthand for [`StoreError::NotFound`].
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

/// Failure reported by a channel.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The provider refused or failed the request.
    #[error("{provider}: {message}")]
    Provider {
        /// Provider name.
        provider: String,
        /// Machine-readable code.
        code: String,
        /// What went wrong.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
        /// Seconds the provider asked us to wait.
        retry_after_seconds: Option<f64>,
    },
    /// The inbound payload could not be understood.
    #[error("invalid inbound message: {0}")]
    InvalidInbound(String),
    /// The operation is not supported by this channel.
    #[error("not supported by this channel: {0}")]
    Unsupported(&'static str),
    /// The operation took too long.
    #[error("timed out after {0} ms")]
    Timeout(u64),
}

impl ChannelError {
    /// True when retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Provider { retryable, .. } => *retryable,
            Self::Timeout(_) => true,
            _ => false,
        }
    }

    /// Machine-readable code of the failure.
    pub fn code(&self) -> &str {
        match self {
            Self::Provider { code, .. } => code,
            Self::InvalidInbound(_) => "invalid_inbound",
            Self::Unsupported(_) => "unsupported",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// Failure of a hook handler. The engine contains it (fail-open or
/// fail-closed per trigger); it never reaches the caller of the pipeline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

impl HookError {
    /// A hook error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Errors of the [`RoomKit`](crate::RoomKit) API. Expected pipeline outcomes
/// (blocked, refused, duplicate) are not errors: they are
/// [`InboundResult`](roomkit_model::InboundResult) values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomKitError {
    /// No such room.
    #[error("room {0} not found")]
    RoomNotFound(RoomId),
    /// A room with this id already exists.
    #[error("room {0} already exists")]
    RoomExists(RoomId),
    /// No channel with this id is registered.
    #[error("channel {0} is not registered")]
    ChannelNotRegistered(ChannelId),
    /// A channel with this id is already registered.
    #[error("channel {0} is already registered")]
    ChannelAlreadyRegistered(ChannelId),
    /// The channel is not attached to the room.
    #[error("channel {channel_id} is not attached to room {room_id}")]
    ChannelNotAttached {
        /// Room.
        room_id: RoomId,
        /// Channel.
        channel_id: ChannelId,
    },
    /// The channel is already attached to the room.
    #[error("channel {channel_id} is already attached to room {room_id}")]
    ChannelAlreadyAttached {
        /// Room.
        room_id: RoomId,
        /// Channel.
        channel_id: ChannelId,
    },
    /// No such event in the room.
    #[error("event {0} not found")]
    EventNotFound(EventId),
    /// No such participant, task or identity.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// Id.
        id: String,
    },
    /// The requested status change is not allowed.
    #[error("room {room_id} cannot move from {from:?} to {to:?}")]
    IllegalTransition {
        /// Room.
        room_id: RoomId,
        /// Current status.
        from: RoomStatus,
        /// Requested status.
        to: RoomStatus,
    },
    /// The input broke a rule of the data model.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A channel failed while converting an inbound message.
    #[error("channel {channel_id} rejected the inbound message: {source}")]
    Channel {
        /// Channel.
        channel_id: ChannelId,
        /// Cause.
        #[source]
        source: ChannelError,
    },
    /// The room lock could not be taken.
    #[error("room lock for {room_id} unavailable: {message}")]
    Lock {
        /// Room.
        room_id: RoomId,
        /// Cause.
        message: String,
    },
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A bug contained by the engine (a panicking task).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ModelError> for RoomKitError {
    fn from(e: ModelError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// Result type of the core API.
pub type Result<T, E = RoomKitError> = std::result::Result<T, E>;
