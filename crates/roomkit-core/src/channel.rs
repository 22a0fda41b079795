//! The channel interface (RFC §6.1): how transports and intelligence plug
//! into rooms.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use roomkit_model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelDirection, ChannelId, ChannelType,
    DeliveryStatus, EventContent, EventSource, InboundMessage, Map, Observation, Participant, Room,
    RoomEvent, RoomId, Task, VoiceSession,
};

use crate::error::ChannelError;

/// A stream of text chunks (token deltas of an AI reply).
pub type TextStream = BoxStream<'static, String>;

/// What a room looks like to a channel or hook at one step of the pipeline
/// (RFC §10.1 step 3).
#[derive(Debug, Clone)]
pub struct RoomContext {
    /// The room.
    pub room: Room,
    /// All of its bindings.
    pub bindings: Vec<ChannelBinding>,
    /// All of its participants.
    pub participants: Vec<Participant>,
    /// Its most recent events, oldest first, unfiltered. Host code (hooks)
    /// reads the whole timeline; channels that rebuild history must use the
    /// per-reader view ([`RoomKit::context_for`](crate::RoomKit::context_for)).
    pub recent_events: Vec<Arc<RoomEvent>>,
}

impl RoomContext {
    /// The binding of a channel in this room.
    pub fn binding(&self, channel_id: &ChannelId) -> Option<&ChannelBinding> {
        self.bindings.iter().find(|b| &b.channel_id == channel_id)
    }
}

/// What a channel returns from `deliver()` or `on_event()` (RFC §6.1).
#[derive(Default)]
pub struct ChannelOutput {
    /// Response events; they re-enter the pipeline as their own commits.
    pub events: Vec<RoomEvent>,
    /// A streamed text response (exclusive with `events`).
    pub response_stream: Option<TextStream>,
    /// Tasks to persist (always allowed).
    pub tasks: Vec<Task>,
    /// Observations to persist (always allowed).
    pub observations: Vec<Observation>,
    /// Keys to merge into the room's metadata (always allowed).
    pub metadata_updates: Map,
    /// For `deliver()`: the provider's id of the sent message.
    pub provider_message_id: Option<String>,
    /// For `deliver()`: `Queued` when the provider only accepted it for later.
    pub delivery_status: Option<DeliveryStatus>,
}

impl std::fmt::Debug for ChannelOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelOutput")
            .field("events", &self.events)
            .field("response_stream", &self.response_stream.is_some())
            .field("tasks", &self.tasks)
            .field("observations", &self.observations)
            .field("metadata_updates", &self.metadata_updates)
            .field("provider_message_id", &self.provider_message_id)
            .finish()
    }
}

impl ChannelOutput {
    /// Nothing to report.
    pub fn empty() -> Self {
        Self::default()
    }

    /// One response event.
    pub fn respond(event: RoomEvent) -> Self {
        Self {
            events: vec![event],
            ..Self::default()
        }
    }

    /// A streamed response.
    pub fn stream(stream: TextStream) -> Self {
        Self {
            response_stream: Some(stream),
            ..Self::default()
        }
    }

    /// A successful send with the provider's message id.
    pub fn sent(provider_message_id: impl Into<String>) -> Self {
        Self {
            provider_message_id: Some(provider_message_id.into()),
            ..Self::default()
        }
    }
}

/// A channel: a transport (SMS, email, WebSocket, ...) or an intelligence
/// (AI agent) that can be attached to rooms.
///
/// Channels are shared as `Arc<dyn Channel>`; every method takes `&self`.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Unique channel id.
    fn id(&self) -> &ChannelId;

    /// Channel type.
    fn channel_type(&self) -> ChannelType;

    /// TRANSPORT or INTELLIGENCE; by default the category of the type.
    fn category(&self) -> ChannelCategory {
        self.channel_type()
            .default_category()
            .unwrap_or(ChannelCategory::Transport)
    }

    /// Direction; bidirectional by default.
    fn direction(&self) -> ChannelDirection {
        ChannelDirection::Bidirectional
    }

    /// Provider or backend name written into `EventSource.provider`.
    fn provider_name(&self) -> Option<&str> {
        None
    }

    /// What the channel supports.
    fn capabilities(&self) -> ChannelCapabilities;

    /// Channel instance information (RFC §5.9, level one).
    fn info(&self) -> Map {
        Map::new()
    }

    /// Whether `deliver_stream` accepts live text.
    fn supports_streaming_delivery(&self) -> bool {
        false
    }

    /// Whether the channel's `sender_id` already names a participant, so
    /// identity resolution must not run for it (RFC §11.6).
    fn sender_is_participant(&self) -> bool {
        false
    }

    /// Converts an inbound message into a room event. The default keeps the
    /// content, raw payload and provider ids and marks the sender as the
    /// event's external id.
    ///
    /// # Errors
    /// A channel may reject a message it cannot understand.
    async fn handle_inbound(
        &self,
        message: &InboundMessage,
        _context: &RoomContext,
    ) -> Result<RoomEvent, ChannelError> {
        Ok(inbound_event(
            self.id().clone(),
            self.channel_type(),
            self.provider_name(),
            message,
        ))
    }

    /// Pushes an event to the outside (transports only).
    ///
    /// # Errors
    /// Provider failures; the engine records them per channel.
    async fn deliver(
        &self,
        _event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        Err(ChannelError::Unsupported("deliver"))
    }

    /// Reacts to an event the channel may read. No-op by default.
    ///
    /// # Errors
    /// Failures are recorded per channel and never fail the room.
    async fn on_event(
        &self,
        _event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        Ok(ChannelOutput::empty())
    }

    /// Delivers streamed text. The default accumulates the whole text and
    /// calls `deliver()` with it.
    ///
    /// # Errors
    /// As `deliver()`.
    async fn deliver_stream(
        &self,
        mut stream: TextStream,
        event: &RoomEvent,
        binding: &ChannelBinding,
        context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            text.push_str(&chunk);
        }
        let mut full = event.clone();
        full.content = EventContent::text(text);
        self.deliver(&full, binding, context).await
    }

    /// Connects a voice session (voice channels); no-op by default.
    ///
    /// # Errors
    /// When the session cannot be connected.
    async fn connect_session(
        &self,
        _session: &VoiceSession,
        _room_id: &RoomId,
        _binding: &ChannelBinding,
    ) -> Result<(), ChannelError> {
        Ok(())
    }

    /// Releases resources.
    ///
    /// # Errors
    /// When releasing fails; the engine logs it.
    async fn close(&self) -> Result<(), ChannelError> {
        Ok(())
    }
}

/// The standard conversion of an inbound message into a draft event.
pub fn inbound_event(
    channel_id: ChannelId,
    channel_type: ChannelType,
    provider: Option<&str>,
    message: &InboundMessage,
) -> RoomEvent {
    let mut source = EventSource::channel(channel_id, channel_type, ChannelDirection::Inbound);
    source.external_id = Some(message.sender_id.clone());
    source.provider = provider.map(str::to_owned);
    source.raw_payload = message.raw_payload.clone();
    source.provider_message_id = message.provider_message_id.clone();
    let mut event = RoomEvent::draft(source, message.content.clone());
    event.idempotency_key = message.idempotency_key.clone();
    event.metadata = message.metadata.clone();
    event
}

/// Builds a draft response event from a channel (for `on_event` outputs).
pub fn response_event(channel: &dyn Channel, content: EventContent) -> RoomEvent {
    let mut source = EventSource::channel(
        channel.id().clone(),
        channel.channel_type(),
        ChannelDirection::Outbound,
    );
    source.provider = channel.provider_name().map(str::to_owned);
    RoomEvent::draft(source, content)
}
