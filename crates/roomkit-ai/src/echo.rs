//! The echo agent: answers every message with a copy of it, and says that it
//! is an echo agent, so nobody mistakes it for a configured AI model.

use async_trait::async_trait;
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelId, ChannelType, EventContent,
    EventType, RoomEvent, SYSTEM_CHANNEL_ID,
};
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext, response_event};

/// Prefix of every answer, so a reader can tell it apart from a model.
pub const ECHO_PREFIX: &str = "Echo agent (no AI provider is configured): you said: ";

/// An intelligence channel that repeats each message it is given.
///
/// It answers message events from other channels only: never its own events,
/// framework (`system`) events such as lifecycle markers or hook
/// injections, nor events without any text.
#[derive(Debug, Clone)]
pub struct EchoAgent {
    id: ChannelId,
}

impl EchoAgent {
    /// An echo agent registered under `id`.
    pub fn new(id: impl Into<ChannelId>) -> Self {
        Self { id: id.into() }
    }

    /// The answer the agent gives to `event`, or `None` when it stays quiet.
    pub fn answer(&self, event: &RoomEvent) -> Option<String> {
        if event.event_type != EventType::Message
            || event.source.channel_id == self.id
            || event.source.channel_id.as_str() == SYSTEM_CHANNEL_ID
        {
            return None;
        }
        let text = event.content.plain_text();
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(format!("{ECHO_PREFIX}{text}"))
    }
}

#[async_trait]
impl Channel for EchoAgent {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Ai
    }

    fn category(&self) -> ChannelCategory {
        ChannelCategory::Intelligence
    }

    fn provider_name(&self) -> Option<&str> {
        Some("echo")
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }

    async fn on_event(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let Some(text) = self.answer(event) else {
            return Ok(ChannelOutput::empty());
        };
        tracing::debug!(target: "roomkit.ai.echo", channel_id = %self.id, room_id = %event.room_id, event_id = %event.id, "echo agent answers");
        Ok(ChannelOutput::respond(response_event(
            self,
            EventContent::text(text),
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use roomkit_core::model::{ChannelDirection, EventSource};
    use roomkit_core::{AttachOptions, CreateRoom, RoomKit, SendEvent, TimelineQuery};
    use roomkit_testkit::RecordingChannel;
    use std::sync::Arc;

    use super::*;

    fn message(from: &str, text: &str) -> RoomEvent {
        let source = EventSource::channel(
            ChannelId::from(from),
            ChannelType::Websocket,
            ChannelDirection::Inbound,
        );
        RoomEvent::text(source, text)
    }

    #[test]
    fn answers_messages_of_others_only() {
        let agent = EchoAgent::new("ai");
        let answer = agent.answer(&message("ws", "hello")).unwrap();
        assert!(answer.starts_with(ECHO_PREFIX));
        assert!(answer.ends_with("hello"));
        assert_eq!(agent.answer(&message("ai", "hello")), None);
        assert_eq!(agent.answer(&message("ws", "   ")), None);
        let mut typing = message("ws", "x");
        typing.event_type = EventType::Typing;
        assert_eq!(agent.answer(&typing), None);
        let system = RoomEvent::system(EventType::Message, EventContent::text("injected"));
        assert_eq!(agent.answer(&system), None);
    }

    #[tokio::test]
    async fn replies_in_the_room() {
        let ws = RecordingChannel::transport("ws", ChannelType::Websocket);
        let kit = RoomKit::builder()
            .channel(Arc::new(ws))
            .channel(Arc::new(EchoAgent::new("ai")))
            .build()
            .unwrap();
        let room = kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
        for c in ["ws", "ai"] {
            kit.attach_channel(&room.id, &ChannelId::from(c), AttachOptions::default())
                .await
                .unwrap();
        }
        let result = kit
            .send_event(SendEvent::text("r1", "ws", "ping"))
            .await
            .unwrap();
        assert!(!result.blocked);
        kit.idle().await;
        let timeline = kit
            .timeline(&room.id, TimelineQuery::default())
            .await
            .unwrap();
        let reply = timeline
            .iter()
            .find(|e| e.source.channel_id.as_str() == "ai")
            .expect("the agent answered");
        assert_eq!(
            reply.content.as_text(),
            Some(format!("{ECHO_PREFIX}ping").as_str())
        );
        assert_eq!(reply.chain_depth, 1);
    }
}
