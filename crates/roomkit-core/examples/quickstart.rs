//! Quickstart: a room with a console "transport", an echo agent and a
//! moderation hook, driven through the real pipeline.
//!
//! Run with `cargo run -p roomkit-core --example quickstart`.

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelId, ChannelType, EventContent, EventType,
    HookTrigger, InboundMessage, RoomEvent,
};
use roomkit_core::{
    AttachOptions, Channel, ChannelError, ChannelOutput, CreateRoom, HookInput, HookRegistration,
    HookResult, InjectedEvent, RoomContext, RoomKit, TimelineQuery, response_event,
};

/// A transport that "delivers" by printing.
struct Console(ChannelId);

#[async_trait]
impl Channel for Console {
    fn id(&self) -> &ChannelId {
        &self.0
    }
    fn channel_type(&self) -> ChannelType {
        ChannelType::Cli
    }
    fn provider_name(&self) -> Option<&str> {
        Some("console")
    }
    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }
    async fn deliver(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        println!(
            "  [{} receives] #{} {}",
            self.0,
            event.index,
            event.content.plain_text()
        );
        Ok(ChannelOutput::empty())
    }
}

/// An intelligence channel that echoes messages back.
struct Echo(ChannelId);

#[async_trait]
impl Channel for Echo {
    fn id(&self) -> &ChannelId {
        &self.0
    }
    fn channel_type(&self) -> ChannelType {
        ChannelType::Ai
    }
    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }
    async fn on_event(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        if event.event_type != EventType::Message {
            return Ok(ChannelOutput::empty());
        }
        let text = format!("you said: {}", event.content.plain_text());
        Ok(ChannelOutput::respond(response_event(
            self,
            EventContent::text(text),
        )))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kit = RoomKit::builder()
        .channel(Arc::new(Console("alice".into())))
        .channel(Arc::new(Console("bob".into())))
        .channel(Arc::new(Echo("echo".into())))
        .hook(HookRegistration::sync(
            HookTrigger::BeforeBroadcast,
            "no-passwords",
            |input: HookInput| async move {
                let leaks = input
                    .event()
                    .and_then(|e| e.content.as_text())
                    .is_some_and(|t| t.contains("password"));
                Ok(if leaks {
                    HookResult::block("looks like a password").inject(InjectedEvent::text(
                        "Please don't share passwords here.",
                        ["alice"],
                    ))
                } else {
                    HookResult::allow()
                })
            },
        ))
        .build()?;

    let room = kit.create_room(CreateRoom::with_id("demo")).await?;
    for c in ["alice", "bob", "echo"] {
        kit.attach_channel(&room.id, &c.into(), AttachOptions::default())
            .await?;
    }

    println!("alice: hello everyone");
    kit.process_inbound(
        InboundMessage::text("alice", "alice@example.com", "hello everyone").in_room("demo"),
    )
    .await?;
    println!("alice: my password is hunter2");
    let r = kit
        .process_inbound(
            InboundMessage::text("alice", "alice@example.com", "my password is hunter2")
                .in_room("demo"),
        )
        .await?;
    println!("  -> blocked: {} ({:?})", r.blocked, r.reason);

    println!("\ntimeline:");
    for e in kit.timeline(&room.id, TimelineQuery::default()).await? {
        println!(
            "  #{:<2} {:<18} {:<10} {:<10} {}",
            e.index,
            format!("{:?}", e.event_type),
            e.source.channel_id,
            format!("{:?}", e.status),
            e.content.plain_text()
        );
    }
    kit.shutdown().await;
    Ok(())
}
