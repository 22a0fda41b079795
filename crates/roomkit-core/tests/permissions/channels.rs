//! The channel interface, bindings and capabilities (RFC §5.7, §5.8,
//! §6.1-§6.4): trait defaults, streamed responses, metadata updates, channel
//! types, output mute, live binding changes and their timeline events, hooks
//! and framework events.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::support::*;

/// A channel that implements only what the trait requires plus `deliver`,
/// so every other method is the trait's default.
struct Bare {
    id: ChannelId,
    delivered: Arc<Mutex<Vec<String>>>,
}

impl Bare {
    fn new(id: &str) -> Self {
        Self {
            id: ChannelId::from(id),
            delivered: Arc::default(),
        }
    }
}

#[async_trait]
impl Channel for Bare {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Webhook
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        self.delivered.lock().push(event.content.plain_text());
        Ok(ChannelOutput::sent("bare-1"))
    }
}

/// An intelligence channel that implements nothing optional at all.
struct Thinker(ChannelId);

#[async_trait]
impl Channel for Thinker {
    fn id(&self) -> &ChannelId {
        &self.0
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Ai
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }
}

/// A streaming-capable transport that records each live chunk separately
/// from whole deliveries.
#[derive(Clone, Default)]
struct LiveSink {
    chunks: Arc<Mutex<Vec<String>>>,
    delivered: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Channel for LiveSink {
    fn id(&self) -> &ChannelId {
        static ID: std::sync::OnceLock<ChannelId> = std::sync::OnceLock::new();
        ID.get_or_init(|| ChannelId::from("live"))
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Websocket
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::full()
    }

    fn supports_streaming_delivery(&self) -> bool {
        true
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        self.delivered.lock().push(event.content.plain_text());
        Ok(ChannelOutput::sent("live-1"))
    }

    async fn deliver_stream(
        &self,
        mut stream: TextStream,
        _event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        while let Some(chunk) = stream.next().await {
            self.chunks.lock().push(chunk);
        }
        Ok(ChannelOutput::empty())
    }
}

fn text_stream(parts: &[&str]) -> TextStream {
    let parts: Vec<String> = parts.iter().map(|s| (*s).to_owned()).collect();
    futures::stream::iter(parts).boxed()
}

/// C-33: the trait's defaults: on_event is a no-op, streaming delivery is
/// off, deliver_stream accumulates the text and calls deliver() once,
/// connect_session and close do nothing, handle_inbound keeps the sender.
#[tokio::test]
async fn c33_channel_trait_defaults() {
    let bare = Arc::new(Bare::new("bare"));
    let kit = RoomKit::builder().channel(bare.clone()).build().unwrap();
    let room = room_with(&kit, "r", &[("bare", rw())]).await;
    let binding = kit.get_binding(&room, &"bare".into()).await.unwrap();
    let ctx = kit.context_for(&room, &"bare".into()).await.unwrap();
    let event = RoomEvent::text(EventSource::system(), "ping");

    // on_event: a no-op.
    let out = bare.on_event(&event, &binding, &ctx).await.unwrap();
    assert!(out.events.is_empty());
    assert!(out.response_stream.is_none());
    assert!(out.tasks.is_empty() && out.observations.is_empty());
    assert!(out.metadata_updates.is_empty());

    // Streaming delivery is off by default; deliver_stream still works by
    // gathering the chunks and calling deliver() once with the whole text.
    assert!(!bare.supports_streaming_delivery());
    bare.deliver_stream(text_stream(&["hel", "lo", " you"]), &event, &binding, &ctx)
        .await
        .unwrap();
    assert_eq!(*bare.delivered.lock(), vec!["hello you".to_string()]);

    // connect_session and close: nothing to do, no error.
    let session = VoiceSession {
        id: "s1".into(),
        room_id: Some(room.clone()),
        participant_id: None,
        channel_id: "bare".into(),
        metadata: Map::new(),
    };
    bare.connect_session(&session, &room, &binding)
        .await
        .unwrap();
    bare.close().await.unwrap();

    // Identity and descriptive defaults.
    assert_eq!(bare.category(), ChannelCategory::Transport);
    assert_eq!(bare.direction(), ChannelDirection::Bidirectional);
    assert_eq!(bare.provider_name(), None);
    assert!(bare.info().is_empty());
    assert!(!bare.sender_is_participant());

    // handle_inbound: content kept, sender recorded as the external id.
    let msg = InboundMessage::text("bare", "+15550001", "hi there");
    let ev = bare.handle_inbound(&msg, &ctx).await.unwrap();
    assert_eq!(ev.content.as_text(), Some("hi there"));
    assert_eq!(ev.source.channel_id, ChannelId::from("bare"));
    assert_eq!(ev.source.external_id.as_deref(), Some("+15550001"));
    assert_eq!(ev.event_type, EventType::Message);
}

/// C-33: a channel that does not implement deliver() refuses it, and its
/// category follows its type (AI is intelligence).
#[tokio::test]
async fn c33_deliver_is_unsupported_unless_implemented() {
    let thinker = Arc::new(Thinker(ChannelId::from("brain")));
    let kit = RoomKit::builder().channel(thinker.clone()).build().unwrap();
    let room = room_with(&kit, "r", &[("brain", rw())]).await;
    let binding = kit.get_binding(&room, &"brain".into()).await.unwrap();
    let ctx = kit.context_for(&room, &"brain".into()).await.unwrap();
    let event = RoomEvent::text(EventSource::system(), "x");
    let err = thinker.deliver(&event, &binding, &ctx).await.unwrap_err();
    assert!(matches!(err, ChannelError::Unsupported(_)), "{err:?}");
    assert_eq!(thinker.category(), ChannelCategory::Intelligence);
    assert_eq!(binding.category, ChannelCategory::Intelligence);
}

/// C-33: a channel relying on every default still takes part in a room: it
/// is delivered broadcasts and its inbound messages are committed.
#[tokio::test]
async fn c33_default_channel_works_in_a_room() {
    let bare = Arc::new(Bare::new("bare"));
    let ws = RecordingChannel::websocket("ws");
    let kit = RoomKit::builder()
        .channel(bare.clone())
        .channel(ws.arc())
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &[("bare", rw()), ("ws", rw())]).await;
    say(&kit, &room, "ws", "to bare").await;
    let r = say(&kit, &room, "bare", "from bare").await;
    assert!(!r.blocked);
    assert_eq!(*bare.delivered.lock(), vec!["to bare".to_string()]);
    assert_eq!(ws.delivered_texts(), vec!["from bare".to_string()]);
}

/// C-34: a streamed response goes live to streaming-capable channels (chunk
/// by chunk), is stored once with the full text, and is then broadcast to
/// the other channels only.
#[tokio::test]
async fn c34_response_stream_pipes_live_then_stores_once() {
    let sms = RecordingChannel::sms("sms");
    let ws = RecordingChannel::websocket("ws");
    ws.accept_streams(true);
    let live = LiveSink::default();
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.event_type == EventType::Message {
            ChannelOutput::stream(text_stream(&["Hel", "lo ", "world"]))
        } else {
            ChannelOutput::empty()
        }
    });
    let kit = RoomKit::builder()
        .channel(sms.arc())
        .channel(ws.arc())
        .channel(Arc::new(live.clone()))
        .channel(ai.arc())
        .build()
        .unwrap();
    let room = room_with(
        &kit,
        "r",
        &[("sms", rw()), ("ws", rw()), ("live", rw()), ("ai", rw())],
    )
    .await;

    let r = say(&kit, &room, "sms", "hi").await;
    assert!(!r.blocked);

    // The live channel saw the chunks as they came, and never got the
    // stored response a second time.
    assert_eq!(*live.chunks.lock(), vec!["Hel", "lo ", "world"]);
    assert_eq!(*live.delivered.lock(), vec!["hi".to_string()]);
    // A streaming channel using the default deliver_stream gets the whole
    // text once.
    assert_eq!(ws.delivered_texts(), vec!["hi", "Hello world"]);
    // A channel that cannot stream gets the stored event by broadcast.
    assert_eq!(sms.delivered_texts(), vec!["Hello world"]);

    let msgs = messages(&kit, &room).await;
    let texts: Vec<_> = msgs.iter().map(|e| e.content.plain_text()).collect();
    assert_eq!(texts, vec!["hi", "Hello world"]);
    let reply = &msgs[1];
    assert_eq!(reply.source.channel_id, ChannelId::from("ai"));
    assert_eq!(reply.status, EventStatus::Delivered);
    assert_eq!(reply.chain_depth, 1);
    assert_eq!(reply.parent_event_id.as_ref(), Some(&msgs[0].id));
}

/// C-34 with C-48 and C-50: a stream obeys the responder's binding: a
/// whispering AI streams only to the channels its visibility names, and a
/// muted AI streams to nobody and its text is stored BLOCKED.
#[tokio::test]
async fn c34_response_stream_obeys_visibility_and_mute() {
    for mute in [false, true] {
        let sms = RecordingChannel::sms("sms");
        let ws = RecordingChannel::websocket("ws");
        ws.accept_streams(true);
        let live = LiveSink::default();
        let ai = RecordingChannel::ai("ai");
        ai.respond_with(|e, _| {
            if e.event_type == EventType::Message {
                ChannelOutput::stream(text_stream(&["psst ", "agent"]))
            } else {
                ChannelOutput::empty()
            }
        });
        let kit = RoomKit::builder()
            .channel(sms.arc())
            .channel(ws.arc())
            .channel(Arc::new(live.clone()))
            .channel(ai.arc())
            .build()
            .unwrap();
        let ai_opts = AttachOptions {
            visibility: "ws".parse().unwrap(),
            muted: mute,
            ..AttachOptions::default()
        };
        let room = room_with(
            &kit,
            "r",
            &[("sms", rw()), ("ws", rw()), ("live", rw()), ("ai", ai_opts)],
        )
        .await;
        say(&kit, &room, "sms", "hi").await;
        kit.idle().await;

        assert!(live.chunks.lock().is_empty(), "mute={mute}");
        assert_eq!(*live.delivered.lock(), vec!["hi".to_string()]);
        assert!(sms.delivered().is_empty(), "mute={mute}");
        let expected_ws: Vec<&str> = if mute {
            vec!["hi"]
        } else {
            vec!["hi", "psst agent"]
        };
        assert_eq!(ws.delivered_texts(), expected_ws, "mute={mute}");
        let reply = messages(&kit, &room).await.pop().unwrap();
        assert_eq!(reply.content.as_text(), Some("psst agent"));
        if mute {
            assert_eq!(reply.status, EventStatus::Blocked);
            assert_eq!(reply.blocked_by.as_deref(), Some("source_muted"));
        } else {
            assert_eq!(reply.status, EventStatus::Delivered);
        }
    }
}

/// C-35: metadata_updates from a channel's output are merged into the
/// room's metadata, even when the channel is muted (a side effect).
#[tokio::test]
async fn c35_channel_metadata_updates_reach_room_metadata() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        let mut out = ChannelOutput::respond(reply("noted"));
        out.metadata_updates
            .insert("mood".into(), e.content.plain_text().into());
        out
    });
    let kit = kit_with(&[&ws, &ai], vec![]);
    let mut meta = Map::new();
    meta.insert("keep".into(), 1.into());
    let room = kit
        .create_room(CreateRoom {
            id: Some("r".into()),
            metadata: meta,
            ..CreateRoom::default()
        })
        .await
        .unwrap()
        .id;
    kit.attach_channel(&room, &"ws".into(), rw()).await.unwrap();
    kit.attach_channel(&room, &"ai".into(), muted())
        .await
        .unwrap();

    say(&kit, &room, "ws", "happy").await;
    kit.idle().await;
    let room_now = kit.get_room(&room).await.unwrap();
    assert_eq!(room_now.metadata.get("mood"), Some(&"happy".into()));
    assert_eq!(room_now.metadata.get("keep"), Some(&1.into()));
    // The muted AI's reply itself was not broadcast.
    assert!(ws.delivered().is_empty());
}

/// C-35: metadata_updates from a hook result are applied as well, even when
/// the hook blocks.
#[tokio::test]
async fn c35_hook_metadata_updates_reach_room_metadata() {
    let ws = RecordingChannel::websocket("ws");
    let trace = Trace::default();
    let hook = sync_hook(HookTrigger::BeforeBroadcast, "tagger", &trace, |_| {
        let mut r = HookResult::block("spam");
        r.metadata_updates.insert("flagged".into(), true.into());
        Ok(r)
    });
    let kit = kit_with(&[&ws], vec![hook]);
    let room = room_with(&kit, "r", &[("ws", rw())]).await;
    let r = say(&kit, &room, "ws", "buy now").await;
    assert!(r.blocked);
    kit.idle().await;
    let room_now = kit.get_room(&room).await.unwrap();
    assert_eq!(room_now.metadata.get("flagged"), Some(&true.into()));
}

/// C-36: the 21 channel types with their exact names and categories, and
/// `custom:<namespace>` types.
#[test]
fn c36_channel_types_and_custom_namespace() {
    let expected = [
        "SMS",
        "MMS",
        "RCS",
        "EMAIL",
        "WHATSAPP",
        "WHATSAPP_PERSONAL",
        "WEBSOCKET",
        "MESSENGER",
        "TEAMS",
        "WEBHOOK",
        "VOICE",
        "REALTIME_VOICE",
        "AUDIO_VIDEO",
        "REALTIME_AUDIO_VIDEO",
        "VIDEO",
        "CONFERENCE",
        "TELEGRAM",
        "CLI",
        "PUSH",
        "AI",
        "SYSTEM",
    ];
    let all: Vec<ChannelType> = ChannelType::builtin().collect();
    assert_eq!(all.len(), 21);
    for (t, name) in all.iter().zip(expected) {
        assert_eq!(t.as_str().to_ascii_uppercase(), name);
        // The wire form round-trips, and parsing ignores case.
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(serde_json::from_value::<ChannelType>(json).unwrap(), *t);
        assert_eq!(name.parse::<ChannelType>().unwrap(), *t);
        let category = t.default_category();
        match name {
            "AI" => assert_eq!(category, Some(ChannelCategory::Intelligence)),
            "SYSTEM" => assert_eq!(category, None),
            _ => assert_eq!(category, Some(ChannelCategory::Transport), "{name}"),
        }
    }

    let custom: ChannelType = "custom:slack".parse().unwrap();
    assert_eq!(custom, ChannelType::Custom("custom:slack".into()));
    assert_eq!(custom.to_string(), "custom:slack");
    assert_eq!(
        serde_json::to_value(&custom).unwrap(),
        serde_json::json!("custom:slack")
    );
    assert_eq!(custom.default_category(), None);
    assert!("custom:".parse::<ChannelType>().is_err());
    assert!("carrier_pigeon".parse::<ChannelType>().is_err());
}

/// C-36: a channel of a custom type registers, attaches and carries
/// messages like a built-in one.
#[tokio::test]
async fn c36_custom_type_channel_is_usable() {
    let slack = RecordingChannel::transport("slack", "custom:slack".parse().unwrap());
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws], vec![]);
    let log = FrameworkLog::start(&kit);
    kit.register_channel(slack.arc()).unwrap();
    let room = room_with(&kit, "r", &[("slack", rw()), ("ws", rw())]).await;
    let r = say(&kit, &room, "slack", "from slack").await;
    assert_eq!(
        r.event.unwrap().source.channel_type,
        ChannelType::Custom("custom:slack".into())
    );
    assert_eq!(ws.delivered_texts(), vec!["from slack"]);
    let binding = kit.get_binding(&room, &"slack".into()).await.unwrap();
    assert_eq!(binding.channel_type.as_str(), "custom:slack");
    let registered = framework_named(&log, "channel_registered").await;
    assert!(matches!(
        &registered[..],
        [FrameworkEvent::ChannelRegistered { channel_id, channel_type }]
            if channel_id.as_str() == "slack" && channel_type.as_str() == "custom:slack"
    ));
}

/// C-37: intelligence channels are never delivered to, whatever reaches
/// them (broadcasts, targeted injections, lifecycle events); their output
/// goes through the pipeline and reaches transports as a stored event.
#[tokio::test]
async fn c37_intelligence_is_never_delivered() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("answer");
    let trace = Trace::default();
    let hook = sync_hook(HookTrigger::BeforeBroadcast, "notify-ai", &trace, |i| {
        let from_ws = i
            .event()
            .is_some_and(|e| e.source.channel_id.as_str() == "ws");
        let mut r = HookResult::allow();
        if from_ws {
            r = r.inject(InjectedEvent::text("note for ai", ["ai"]));
        }
        Ok(r)
    });
    let kit = kit_with(&[&ws, &ai], vec![hook]);
    let room = room_with(&kit, "r", &[("ws", rw()), ("ai", rw())]).await;
    say(&kit, &room, "ws", "question").await;
    kit.idle().await;

    assert!(ai.delivered().is_empty(), "{:?}", ai.delivered_texts());
    let seen = ai.seen_message_texts();
    assert!(seen.contains(&"question".to_string()), "{seen:?}");
    assert!(seen.contains(&"note for ai".to_string()), "{seen:?}");
    // Its answer was committed as its own event and delivered to transports.
    let answers: Vec<_> = messages(&kit, &room)
        .await
        .into_iter()
        .filter(|e| e.source.channel_id.as_str() == "ai")
        .collect();
    assert!(!answers.is_empty());
    assert!(answers.iter().all(|e| e.status == EventStatus::Delivered));
    assert!(ws.delivered_texts().contains(&"answer".to_string()));
}

/// C-38: a binding carries every RFC field, with the values given at attach
/// and a snapshot of the channel's capabilities.
#[tokio::test]
async fn c38_binding_has_all_fields() {
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&sms], vec![]);
    let room = room_with(&kit, "r", &[]).await;
    let mut meta = Map::new();
    meta.insert("to".into(), "+15550002".into());
    let opts = AttachOptions {
        access: Access::ReadOnly,
        visibility: "transport".parse().unwrap(),
        muted: true,
        output_muted: true,
        participant_id: Some("par-1".into()),
        metadata: meta.clone(),
        rate_limit: Some(RateLimit {
            max_per_second: Some(1.0),
            max_per_minute: None,
            burst: Some(2),
        }),
        retry_policy: Some(RetryPolicy::default()),
    };
    let b = kit
        .attach_channel(&room, &"sms".into(), opts)
        .await
        .unwrap();
    let stored = kit.get_binding(&room, &"sms".into()).await.unwrap();
    assert_eq!(b, stored);
    assert_eq!(stored.channel_id, ChannelId::from("sms"));
    assert_eq!(stored.room_id, room);
    assert_eq!(stored.channel_type, ChannelType::Sms);
    assert_eq!(stored.category, ChannelCategory::Transport);
    assert_eq!(stored.direction, ChannelDirection::Bidirectional);
    assert_eq!(stored.access, Access::ReadOnly);
    assert!(stored.muted && stored.output_muted);
    assert_eq!(stored.visibility, Visibility::Transport);
    assert_eq!(stored.participant_id, Some("par-1".into()));
    assert_eq!(stored.last_read_index, None);
    assert_eq!(stored.capabilities, sms.capabilities());
    assert_eq!(stored.capabilities.max_length, Some(1600));
    assert_eq!(stored.rate_limit.as_ref().and_then(|r| r.burst), Some(2));
    assert_eq!(stored.retry_policy, Some(RetryPolicy::default()));
    assert_eq!(stored.metadata, meta);

    let json = serde_json::to_value(&stored).unwrap();
    for key in [
        "channel_id",
        "room_id",
        "channel_type",
        "category",
        "direction",
        "access",
        "muted",
        "output_muted",
        "visibility",
        "participant_id",
        "last_read_index",
        "attached_at",
        "capabilities",
        "rate_limit",
        "retry_policy",
        "metadata",
    ] {
        assert!(json.get(key).is_some(), "binding JSON lacks {key}: {json}");
    }
    assert_eq!(json["visibility"], "transport");
    assert_eq!(json["channel_type"], "sms");
}

/// C-38 with D14: a binding attached without options reads and writes,
/// is visible to all and is not muted.
#[tokio::test]
async fn c38_binding_defaults() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws], vec![]);
    let room = room_with(&kit, "r", &[("ws", rw())]).await;
    let b = kit.get_binding(&room, &"ws".into()).await.unwrap();
    assert_eq!(b.access, Access::ReadWrite);
    assert_eq!(b.visibility, Visibility::All);
    assert!(!b.muted && !b.output_muted);
    assert_eq!(b.participant_id, None);
}

/// C-39: output_muted suppresses deliver() but keeps on_event(), and it can
/// be switched on a live binding.
#[tokio::test]
async fn c39_output_muted_suppresses_deliver_keeps_on_event() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let kit = kit_with(&[&a, &b], vec![]);
    let opts = AttachOptions {
        output_muted: true,
        ..AttachOptions::default()
    };
    let room = room_with(&kit, "r", &[("a", rw()), ("b", opts)]).await;
    let r = say(&kit, &room, "a", "one").await;
    assert_eq!(b.seen_message_texts(), vec!["one"]);
    assert!(b.delivered().is_empty());
    assert!(!r.delivery_results.contains_key(&ChannelId::from("b")));

    kit.update_binding(
        &room,
        &"b".into(),
        BindingUpdate {
            output_muted: Some(false),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    say(&kit, &room, "a", "two").await;
    assert_eq!(b.seen_message_texts(), vec!["one", "two"]);
    assert_eq!(b.delivered_texts(), vec!["two"]);
}

/// C-40: capabilities carry every RFC field, and the 7 media types have
/// their exact names.
#[test]
fn c40_capabilities_fields_and_media_types() {
    let caps = ChannelCapabilities::full();
    let json = serde_json::to_value(&caps).unwrap();
    for key in [
        "media_types",
        "max_length",
        "supports_rich_text",
        "supports_buttons",
        "supports_cards",
        "supports_quick_replies",
        "supports_templates",
        "supports_media",
        "supports_audio",
        "supports_video",
        "supports_threading",
        "supports_typing",
        "supports_read_receipts",
        "supports_reactions",
        "supports_edit",
        "supports_delete",
        "max_buttons",
        "supported_media_types",
        "max_media_size_bytes",
        "delivery_mode",
        "rate_limit",
        "custom",
    ] {
        assert!(json.get(key).is_some(), "capabilities JSON lacks {key}");
    }
    // No max_length means unlimited.
    assert!(json["max_length"].is_null());
    use ChannelMediaType::*;
    let names: Vec<String> = [Text, Rich, Media, Audio, Video, Location, Template]
        .iter()
        .map(|m| {
            serde_json::to_value(m)
                .unwrap()
                .as_str()
                .unwrap()
                .to_ascii_uppercase()
        })
        .collect();
    assert_eq!(
        names,
        [
            "TEXT", "RICH", "MEDIA", "AUDIO", "VIDEO", "LOCATION", "TEMPLATE"
        ]
    );
    assert!(caps.supports(Text) && !ChannelCapabilities::text_only().supports(Rich));
}

/// C-41 and C-42: attach, mute, reconfigure, unmute and detach on a live
/// room; each shows up as an indexed CHANNEL_* event from `system`, and each
/// changes what the channel may do.
#[tokio::test]
async fn c41_c42_live_binding_changes_are_indexed_timeline_events() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("ai says");
    let kit = kit_with(&[&ws, &ai], vec![]);
    let room = room_with(&kit, "r", &[("ws", rw())]).await;

    kit.attach_channel(&room, &"ai".into(), rw()).await.unwrap();
    say(&kit, &room, "ws", "m1").await;
    assert_eq!(ws.delivered_texts(), vec!["ai says"]);

    kit.mute_channel(&room, &"ai".into()).await.unwrap();
    say(&kit, &room, "ws", "m2").await;
    assert_eq!(ws.delivered_texts(), vec!["ai says"], "muted AI was heard");

    kit.update_binding(
        &room,
        &"ai".into(),
        BindingUpdate {
            visibility: Some(Visibility::None),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    kit.unmute_channel(&room, &"ai".into()).await.unwrap();
    say(&kit, &room, "ws", "m3").await;
    // Unmuted but with visibility "none": stored, still not delivered.
    assert_eq!(ws.delivered_texts(), vec!["ai says"]);

    kit.detach_channel(&room, &"ai".into()).await.unwrap();
    ai.clear();
    say(&kit, &room, "ws", "m4").await;
    assert!(ai.seen().is_empty(), "a detached channel still reads");
    assert!(kit.get_binding(&room, &"ai".into()).await.is_err());

    let tl = timeline(&kit, &room).await;
    for (i, e) in tl.iter().enumerate() {
        assert_eq!(e.index, i as u64, "indexes are gap-free");
    }
    let lifecycle: Vec<(EventType, String)> = tl
        .iter()
        .filter(|e| e.source.channel_id.as_str() == SYSTEM_CHANNEL_ID)
        .map(|e| {
            assert_eq!(e.status, EventStatus::Delivered);
            let ch = match &e.content {
                EventContent::System(s) => s.data["channel_id"].as_str().unwrap().to_owned(),
                other => panic!("lifecycle content {other:?}"),
            };
            (e.event_type, ch)
        })
        .collect();
    use EventType::*;
    assert_eq!(
        lifecycle,
        vec![
            (ChannelAttached, "ws".to_string()),
            (ChannelAttached, "ai".to_string()),
            (ChannelMuted, "ai".to_string()),
            (ChannelUpdated, "ai".to_string()),
            (ChannelUnmuted, "ai".to_string()),
            (ChannelDetached, "ai".to_string()),
        ]
    );
    // Lifecycle events interleave with messages in commit order.
    let order: Vec<String> = tl
        .iter()
        .map(|e| match e.event_type {
            Message => e.content.plain_text(),
            t => format!("{t:?}"),
        })
        .collect();
    let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
    assert!(pos("ChannelMuted") < pos("m2") && pos("m2") < pos("ChannelUpdated"));
    assert!(pos("ChannelDetached") < pos("m4"));
    let room_now = kit.get_room(&room).await.unwrap();
    assert_eq!(room_now.event_count, tl.len() as u64);
}

/// C-42: readable channels are handed lifecycle events through on_event();
/// transports are not delivered them.
#[tokio::test]
async fn c42_lifecycle_events_reach_on_event_of_readers() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let kit = kit_with(&[&ws, &other], vec![]);
    let room = room_with(&kit, "r", &[("ws", rw())]).await;
    kit.attach_channel(&room, &"other".into(), rw())
        .await
        .unwrap();
    kit.idle().await;
    let seen: Vec<EventType> = ws.seen().iter().map(|e| e.event_type).collect();
    assert!(
        seen.contains(&EventType::ChannelAttached),
        "ws saw {seen:?}"
    );
    assert!(ws.delivered().is_empty());
}

/// C-43: binding changes fire ON_CHANNEL_ATTACHED, _MUTED, _UNMUTED and
/// _DETACHED (async); a reconfiguration fires no hook.
#[tokio::test]
async fn c43_binding_changes_fire_channel_hooks() {
    let ws = RecordingChannel::websocket("ws");
    let trace = Trace::default();
    let hooks = vec![
        async_hook(HookTrigger::OnChannelAttached, "attached", &trace),
        async_hook(HookTrigger::OnChannelMuted, "muted", &trace),
        async_hook(HookTrigger::OnChannelUnmuted, "unmuted", &trace),
        async_hook(HookTrigger::OnChannelDetached, "detached", &trace),
    ];
    for h in &hooks {
        assert_eq!(h.execution(), HookExecution::Async);
        assert_eq!(h.trigger.default_execution(), HookExecution::Async);
    }
    let kit = kit_with(&[&ws], hooks);
    let room = room_with(&kit, "r", &[]).await;
    let id: ChannelId = "ws".into();
    kit.attach_channel(&room, &id, rw()).await.unwrap();
    kit.idle().await;
    kit.mute_channel(&room, &id).await.unwrap();
    kit.idle().await;
    kit.update_binding(
        &room,
        &id,
        BindingUpdate {
            access: Some(Access::ReadOnly),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    kit.idle().await;
    kit.unmute_channel(&room, &id).await.unwrap();
    kit.idle().await;
    kit.detach_channel(&room, &id).await.unwrap();
    kit.idle().await;
    assert_eq!(
        trace.get(),
        vec!["attached:ws", "muted:ws", "unmuted:ws", "detached:ws"]
    );
    // There is no trigger for CHANNEL_UPDATED at all.
    assert!(
        HookTrigger::all().all(|t| t.as_str() != "on_channel_updated"),
        "an ON_CHANNEL_UPDATED trigger exists"
    );
}

/// C-44: registering and unregistering a channel emit channel_registered
/// {channel_id, channel_type} and channel_unregistered {channel_id}; a
/// duplicate registration fails and emits nothing.
#[tokio::test]
async fn c44_channel_registration_framework_events() {
    let kit = RoomKit::new();
    let log = FrameworkLog::start(&kit);
    let sms = RecordingChannel::sms("sms");
    kit.register_channel(sms.arc()).unwrap();
    let dup = kit.register_channel(sms.arc());
    assert!(matches!(
        dup,
        Err(RoomKitError::ChannelAlreadyRegistered(_))
    ));
    assert!(kit.channel(&"sms".into()).is_some());
    assert!(kit.unregister_channel(&"sms".into()).is_some());
    assert!(kit.unregister_channel(&"sms".into()).is_none());
    assert!(kit.channel(&"sms".into()).is_none());

    let events: Vec<FrameworkEvent> = log
        .events()
        .await
        .into_iter()
        .filter(|e| e.name().starts_with("channel_"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(
        &events[0],
        FrameworkEvent::ChannelRegistered { channel_id, channel_type }
            if channel_id.as_str() == "sms" && *channel_type == ChannelType::Sms
    ));
    assert!(matches!(
        &events[1],
        FrameworkEvent::ChannelUnregistered { channel_id } if channel_id.as_str() == "sms"
    ));
}
