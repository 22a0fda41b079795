//! Conversation memory (RFC §20): how the history handed to a model is
//! built from the room. The caller hands each provider the requesting
//! channel's own view of the room (RFC §7.5 rule 8), so memory never sees
//! what visibility withheld from the channel.

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::RoomContext;
use roomkit_core::model::{ChannelId, EventType, RoomEvent, RoomId};

use crate::error::AiError;
use crate::types::AIMessage;

/// What a memory provider returns (RFC §20.2): prebuilt messages first,
/// then raw events the channel converts itself.
#[derive(Debug, Clone, Default)]
pub struct MemoryResult {
    /// Messages used as they are (summaries, instructions).
    pub messages: Vec<AIMessage>,
    /// Events to convert, oldest first.
    pub events: Vec<Arc<RoomEvent>>,
    /// How many eligible events were left out, so the model can be told
    /// its history is partial (RFC §19.3.2).
    pub omitted: usize,
}

/// Builds conversation context for one generation (RFC §20.1).
#[async_trait]
pub trait MemoryProvider: Send + Sync + 'static {
    /// The history for answering `current_event`. `context` is already
    /// the channel's filtered view of the room.
    ///
    /// # Errors
    /// Provider-specific failures; the AI channel aborts the turn.
    async fn retrieve(
        &self,
        room_id: &RoomId,
        current_event: &RoomEvent,
        context: &RoomContext,
        channel_id: &ChannelId,
    ) -> Result<MemoryResult, AiError>;

    /// Releases resources.
    async fn close(&self) {}
}

/// The default memory: the last `max_events` conversation messages of the
/// room (RFC §20.3). Lifecycle markers, typing notices and other non-message
/// events are not conversation and are skipped.
#[derive(Debug, Clone)]
pub struct SlidingWindowMemory {
    max_events: usize,
}

impl SlidingWindowMemory {
    /// Keeps at most `max_events` messages (at least one).
    pub fn new(max_events: usize) -> Self {
        Self {
            max_events: max_events.max(1),
        }
    }
}

impl Default for SlidingWindowMemory {
    fn default() -> Self {
        Self::new(50)
    }
}

/// Whether an event is a conversation message a model should read.
pub fn is_conversation(event: &RoomEvent) -> bool {
    event.event_type == EventType::Message
        && event.status != roomkit_core::model::EventStatus::Blocked
        && !event.content.plain_text().trim().is_empty()
}

#[async_trait]
impl MemoryProvider for SlidingWindowMemory {
    async fn retrieve(
        &self,
        _room_id: &RoomId,
        current_event: &RoomEvent,
        context: &RoomContext,
        _channel_id: &ChannelId,
    ) -> Result<MemoryResult, AiError> {
        let mut eligible: Vec<Arc<RoomEvent>> = context
            .recent_events
            .iter()
            .filter(|e| is_conversation(e))
            .cloned()
            .collect();
        // The current event may not be in the snapshot yet (or may have
        // been transcoded for this reader): make sure it ends the history.
        eligible.retain(|e| e.id != current_event.id);
        if is_conversation(current_event) {
            eligible.push(Arc::new(current_event.clone()));
        }
        let omitted = eligible.len().saturating_sub(self.max_events);
        let events = eligible.split_off(omitted);
        Ok(MemoryResult {
            messages: Vec::new(),
            events,
            omitted,
        })
    }
}
