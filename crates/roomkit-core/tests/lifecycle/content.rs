//! Room events and their content through the engine (checklist 3.2,
//! C-15..C-25): every event type and content type stored and read back,
//! the composite nesting limit at every entry point, source fields, raw
//! payloads, channel data and the three metadata levels.

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::util::*;

/// Composite content nested `depth` levels deep around a text leaf.
pub fn nested(depth: usize) -> EventContent {
    let mut c = EventContent::text("leaf");
    for _ in 0..depth {
        c = EventContent::Composite(CompositeContent { parts: vec![c] });
    }
    c
}

fn text_of(kind: &str) -> EventContent {
    EventContent::text(kind)
}

/// One value of every content type, with most optional fields filled.
pub fn every_content(target: &EventId) -> Vec<EventContent> {
    let mut params = Map::new();
    params.insert("name".into(), "Ada".into());
    let mut data = Map::new();
    data.insert("k".into(), serde_json::json!([1, 2.5, null, "x"]));
    vec![
        EventContent::Text(TextContent {
            text: "hello".into(),
            language: Some("en".into()),
        }),
        EventContent::Rich(RichContent {
            text: "**bold**".into(),
            plain_text: Some("bold".into()),
            buttons: vec![Button {
                label: "Yes".into(),
                value: Some("y".into()),
                url: None,
            }],
            cards: vec![Card {
                title: "Card".into(),
                subtitle: Some("sub".into()),
                image_url: Some("https://example.com/i.png".into()),
                buttons: vec![],
            }],
            quick_replies: vec![QuickReply {
                label: "No".into(),
                value: None,
            }],
        }),
        EventContent::Media(MediaContent {
            url: "https://example.com/f.pdf".into(),
            mime_type: "application/pdf".into(),
            filename: Some("f.pdf".into()),
            caption: Some("the file".into()),
            size_bytes: Some(1234),
        }),
        EventContent::Location(LocationContent {
            latitude: 45.5,
            longitude: -73.25,
            label: Some("Office".into()),
            address: Some("1 Main St".into()),
        }),
        EventContent::Audio(AudioContent {
            url: "https://example.com/a.ogg".into(),
            duration_seconds: Some(3.5),
            mime_type: "audio/ogg".into(),
            size_bytes: Some(99),
            transcript: Some("hi".into()),
        }),
        EventContent::Video(VideoContent {
            url: "https://example.com/v.mp4".into(),
            duration_seconds: Some(10.0),
            mime_type: "video/mp4".into(),
            size_bytes: None,
            thumbnail_url: Some("https://example.com/t.png".into()),
        }),
        EventContent::Composite(CompositeContent {
            parts: vec![text_of("a"), text_of("b")],
        }),
        EventContent::System(SystemContent {
            code: "note".into(),
            message: "a note".into(),
            data,
        }),
        EventContent::Template(TemplateContent {
            template_id: "welcome".into(),
            language: "en".into(),
            parameters: params,
            fallback: Some(Box::new(text_of("Welcome, Ada"))),
        }),
        EventContent::Edit(EditContent {
            target_event_id: target.clone(),
            new_content: Box::new(text_of("hello (edited)")),
            edit_source: Some(EditSource::System),
        }),
        EventContent::Delete(DeleteContent {
            target_event_id: target.clone(),
            delete_type: DeleteType::System,
            reason: Some("cleanup".into()),
        }),
    ]
}

/// C-15: a stored event carries every RFC §5.2 field, in JSON as well.
#[tokio::test]
async fn c15_stored_event_has_every_field() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let kit = kit_with(&[&ws, &other]);
    room_with(&kit, "r", &["ws", "other"]).await;
    let mut req = SendEvent::text("r", "ws", "hi");
    req.idempotency_key = Some("k1".into());
    req.correlation_id = Some("corr".into());
    req.addressed_to = Some(vec![]);
    let ev = kit.send_event(req).await.unwrap().event.unwrap();
    let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
    assert!(!stored.id.is_empty());
    assert_eq!(stored.room_id, "r");
    assert_eq!(stored.index, 2);
    assert_eq!(stored.chain_depth, 0);
    assert_eq!(stored.idempotency_key.as_deref(), Some("k1"));
    assert_eq!(stored.correlation_id.as_deref(), Some("corr"));
    assert_eq!(stored.addressed_to, Some(vec![]));
    assert_eq!(stored.visibility, Visibility::All);
    assert!(
        stored
            .delivery_results
            .contains_key(&ChannelId::from("other"))
    );

    let json = serde_json::to_value(&*stored).unwrap();
    for key in [
        "id",
        "room_id",
        "type",
        "source",
        "content",
        "status",
        "blocked_by",
        "visibility",
        "addressed_to",
        "index",
        "chain_depth",
        "parent_event_id",
        "correlation_id",
        "idempotency_key",
        "created_at",
        "metadata",
        "channel_data",
        "delivery_results",
    ] {
        assert!(json.get(key).is_some(), "missing {key}: {json}");
    }
    assert_eq!(json["type"], "message");
    assert_eq!(json["status"], "delivered");
    assert_eq!(json["visibility"], "all");
    assert_eq!(json["content"]["type"], "text");
}

/// C-16: all 23 event types exist; the 21 storable ones round-trip through
/// the store and JSON, TYPING and PRESENCE are published live only.
#[tokio::test]
async fn c16_every_event_type_round_trips_through_storage() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let target = send(&kit, "r", "ws", "target").await.event.unwrap();
    let mut live = kit.subscribe_ephemeral();
    assert_eq!(EventType::ALL.len(), 23);

    for t in EventType::ALL {
        let mut req = SendEvent::text("r", "system", "x");
        req.event_type = Some(t);
        req.content = Some(match t {
            EventType::Edit => EventContent::Edit(EditContent {
                target_event_id: target.id.clone(),
                new_content: Box::new(EventContent::text("edited")),
                edit_source: Some(EditSource::System),
            }),
            EventType::Delete => EventContent::Delete(DeleteContent {
                target_event_id: target.id.clone(),
                delete_type: DeleteType::System,
                reason: None,
            }),
            _ => EventContent::system(format!("{t:?}"), "x"),
        });
        let count = kit.get_room(&"r".into()).await.unwrap().event_count;
        let r = kit.send_event(req).await.unwrap();
        assert!(!r.blocked, "{t:?}: {r:?}");
        let ev = r.event.unwrap();
        assert_eq!(ev.event_type, t);
        let after = kit.get_room(&"r".into()).await.unwrap().event_count;
        if t.is_ephemeral() {
            assert_eq!(after, count, "{t:?} must not be stored");
            let got = live.recv().await.unwrap();
            assert_eq!(got.event.event_type, t);
            continue;
        }
        assert_eq!(after, count + 1, "{t:?} stored");
        let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
        assert_eq!(stored.event_type, t);
        let json = serde_json::to_string(&*stored).unwrap();
        let back: RoomEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, &*stored, "{t:?} JSON round trip");
    }
    assert_timeline_invariants(&kit, "r").await;
}

/// C-17: statuses are the five RFC values, and every BLOCKED event names
/// what blocked it (hook, read-only source, muted source).
#[tokio::test]
async fn c17_blocked_events_name_their_blocker() {
    let ws = RecordingChannel::websocket("ws");
    let ro = RecordingChannel::websocket("ro");
    let mu = RecordingChannel::websocket("mu");
    let kit = kit_with(&[&ws, &ro, &mu]);
    room_with(&kit, "r", &["ws", "ro", "mu"]).await;
    kit.update_binding(
        &"r".into(),
        &"ro".into(),
        BindingUpdate {
            access: Some(Access::ReadOnly),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    kit.mute_channel(&"r".into(), &"mu".into()).await.unwrap();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "no-secrets",
        |input: HookInput| async move {
            Ok(match input.event().and_then(|e| e.content.as_text()) {
                Some("secret") => HookResult::block("secret"),
                _ => HookResult::allow(),
            })
        },
    ));
    let by = |r: InboundResult| r.event.unwrap().blocked_by;
    assert_eq!(
        by(send(&kit, "r", "ws", "secret").await).as_deref(),
        Some("no-secrets")
    );
    assert_eq!(
        by(send(&kit, "r", "ro", "hi").await).as_deref(),
        Some("source_read_only")
    );
    assert_eq!(
        by(send(&kit, "r", "mu", "hi").await).as_deref(),
        Some("source_muted")
    );
    assert_eq!(by(send(&kit, "r", "ws", "fine").await), None);

    for e in timeline(&kit, "r").await {
        let s = serde_json::to_value(e.status).unwrap();
        assert!(
            ["pending", "delivered", "read", "failed", "blocked"].contains(&s.as_str().unwrap())
        );
        assert_eq!(
            e.status == EventStatus::Blocked,
            e.blocked_by.is_some(),
            "{e:?}"
        );
    }
    assert_timeline_invariants(&kit, "r").await;
}

/// C-18, C-19, C-20: an inbound event's source has every field, keeps the
/// provider payload unmodified and names the provider.
#[tokio::test]
async fn c18_c19_c20_inbound_source_fields_raw_payload_and_provider() {
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&sms]);
    room_with(&kit, "r", &["sms"]).await;
    let raw = serde_json::json!({
        "MessageSid": "SM123",
        "Body": "héllo ✓",
        "NumSegments": 1,
        "Price": -0.0075,
        "Nested": {"list": [1, {"deep": null}], "flag": true},
        "Empty": {}
    });
    let mut msg = InboundMessage::text("sms", "+15550003", "héllo ✓").in_room("r");
    msg.raw_payload = raw.as_object().unwrap().clone();
    msg.provider_message_id = Some("SM123".into());
    let ev = kit.process_inbound(msg).await.unwrap().event.unwrap();
    let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
    let s = &stored.source;
    assert_eq!(s.channel_id, "sms");
    assert_eq!(s.channel_type, ChannelType::Sms);
    assert_eq!(s.direction, ChannelDirection::Inbound);
    assert!(s.participant_id.is_some());
    assert_eq!(s.external_id.as_deref(), Some("+15550003"));
    assert_eq!(s.provider.as_deref(), Some("Recording"));
    assert_eq!(s.provider_message_id.as_deref(), Some("SM123"));
    // C-19: identical after storage and after a JSON round trip.
    assert_eq!(serde_json::Value::Object(s.raw_payload.clone()), raw);
    let back: RoomEvent = serde_json::from_str(&serde_json::to_string(&*stored).unwrap()).unwrap();
    assert_eq!(serde_json::Value::Object(back.source.raw_payload), raw);
}

/// C-20: responses and direct injections carry the channel's provider;
/// system events may leave it empty.
#[tokio::test]
async fn c20_provider_populated_for_responses_and_injections() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("answer");
    let kit = kit_with(&[&ws, &ai]);
    room_with(&kit, "r", &["ws", "ai"]).await;
    send(&kit, "r", "ws", "question").await;
    let tl = timeline(&kit, "r").await;
    let by_text = |t: &str| {
        tl.iter()
            .find(|e| e.content.plain_text() == t)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_text("question").source.provider.as_deref(),
        Some("Recording")
    );
    assert_eq!(
        by_text("answer").source.provider.as_deref(),
        Some("ScriptedAI")
    );
    for e in tl.iter().filter(|e| e.source.channel_id == "system") {
        assert_eq!(e.source.channel_type, ChannelType::System);
    }
}

/// C-21: each of the 11 content types can be injected and reads back
/// identical, one content per event.
#[tokio::test]
async fn c21_every_content_type_round_trips() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let target = send(&kit, "r", "ws", "target").await.event.unwrap();
    let all = every_content(&target.id);
    assert_eq!(all.len(), 11);
    let mut kinds = std::collections::BTreeSet::new();
    for content in all {
        let mut req = SendEvent::text("r", "system", "");
        req.content = Some(content.clone());
        let r = kit.send_event(req).await.unwrap();
        assert!(!r.blocked, "{}: {r:?}", content.kind());
        let stored = kit
            .get_event(&"r".into(), &r.event.unwrap().id)
            .await
            .unwrap();
        assert_eq!(stored.content, content);
        let json = serde_json::to_value(&stored.content).unwrap();
        assert_eq!(json["type"], content.kind());
        kinds.insert(content.kind());
    }
    assert_eq!(kinds.len(), 11);
}

/// C-22: composite content 5 levels deep is accepted at process_inbound and
/// send_event; 6 levels is rejected there and nothing is stored.
#[tokio::test]
async fn c22_composite_nesting_limit_at_every_entry() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;

    let mut msg = InboundMessage::text("ws", "alice", "").in_room("r");
    msg.content = nested(5);
    assert!(!kit.process_inbound(msg.clone()).await.unwrap().blocked);
    let mut req = SendEvent::text("r", "ws", "");
    req.content = Some(nested(5));
    assert!(!kit.send_event(req.clone()).await.unwrap().blocked);
    let count = kit.get_room(&"r".into()).await.unwrap().event_count;

    msg.content = nested(6);
    let err = kit.process_inbound(msg).await.unwrap_err();
    assert!(matches!(err, RoomKitError::Invalid(_)), "{err:?}");
    req.content = Some(nested(6));
    let err = kit.send_event(req).await.unwrap_err();
    assert!(matches!(err, RoomKitError::Invalid(_)), "{err:?}");
    // Deep nesting hidden inside a template fallback counts as well.
    let mut req = SendEvent::text("r", "ws", "");
    req.content = Some(EventContent::Template(TemplateContent {
        template_id: "t".into(),
        language: "en".into(),
        parameters: Map::new(),
        fallback: Some(Box::new(nested(6))),
    }));
    assert!(kit.send_event(req).await.is_err());
    assert_eq!(kit.get_room(&"r".into()).await.unwrap().event_count, count);
}

/// C-22: a channel's response with too-deep composite content is not
/// stored either.
#[tokio::test]
async fn c22_too_deep_response_is_not_stored() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.event_type == EventType::Message && e.source.channel_id == "ws" {
            let mut r = reply("");
            r.content = nested(6);
            ChannelOutput::respond(r)
        } else {
            ChannelOutput::empty()
        }
    });
    let kit = kit_with(&[&ws, &ai]);
    room_with(&kit, "r", &["ws", "ai"]).await;
    send(&kit, "r", "ws", "question").await;
    let tl = timeline(&kit, "r").await;
    assert!(
        tl.iter().all(|e| e.content.composite_depth() <= 5),
        "{tl:?}"
    );
    assert!(ws.delivered().is_empty());
    assert_timeline_invariants(&kit, "r").await;
}

/// C-23: the delete types and edit sources are stored and read back as
/// given, in their lower snake case JSON form.
#[tokio::test]
async fn c23_delete_types_and_edit_sources_round_trip() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let t = send(&kit, "r", "ws", "target").await.event.unwrap();
    let inject = |content: EventContent| {
        let kit = kit.clone();
        async move {
            let mut req = SendEvent::text("r", "system", "");
            req.content = Some(content);
            let ev = kit.send_event(req).await.unwrap().event.unwrap();
            kit.get_event(&"r".into(), &ev.id).await.unwrap()
        }
    };
    for source in [Some(EditSource::System), None] {
        let e = inject(EventContent::Edit(EditContent {
            target_event_id: t.id.clone(),
            new_content: Box::new(EventContent::text("v2")),
            edit_source: source,
        }))
        .await;
        let json = serde_json::to_value(&e.content).unwrap();
        match source {
            Some(_) => assert_eq!(json["edit_source"], "system"),
            None => assert!(json["edit_source"].is_null()),
        }
    }
    let d = inject(EventContent::Delete(DeleteContent {
        target_event_id: t.id.clone(),
        delete_type: DeleteType::System,
        reason: None,
    }))
    .await;
    assert_eq!(
        serde_json::to_value(&d.content).unwrap()["delete_type"],
        "system"
    );
    let target = kit.get_event(&"r".into(), &t.id).await.unwrap();
    assert_eq!(
        target.metadata.get("deleted"),
        Some(&serde_json::Value::Bool(true))
    );
    assert_eq!(
        target.metadata.get("edited"),
        Some(&serde_json::Value::Bool(true))
    );
}

/// A transport whose inbound conversion adds provider-specific data.
struct DataChannel {
    id: ChannelId,
}

#[async_trait]
impl Channel for DataChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }
    fn channel_type(&self) -> ChannelType {
        ChannelType::Custom("custom:test".into())
    }
    fn provider_name(&self) -> Option<&str> {
        Some("DataProvider")
    }
    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }
    fn info(&self) -> Map {
        let mut m = Map::new();
        m.insert("instance".into(), "data-1".into());
        m
    }
    async fn handle_inbound(
        &self,
        message: &InboundMessage,
        _context: &RoomContext,
    ) -> Result<RoomEvent, ChannelError> {
        let mut e = inbound_event(
            self.id.clone(),
            self.channel_type(),
            self.provider_name(),
            message,
        );
        e.channel_data = serde_json::json!({
            "sms": {"num_segments": 2},
            "vendor_specific": {"never": ["heard", "of"], "n": 1.5}
        })
        .as_object()
        .unwrap()
        .clone();
        Ok(e)
    }
}

/// C-24: channel data the engine does not know is kept as given, from a
/// channel's inbound conversion and from a direct injection.
#[tokio::test]
async fn c24_unknown_channel_data_is_preserved() {
    let kit = RoomKit::builder()
        .channel(Arc::new(DataChannel { id: "data".into() }))
        .build()
        .unwrap();
    room_with(&kit, "r", &["data"]).await;
    let ev = kit
        .process_inbound(InboundMessage::text("data", "u", "x").in_room("r"))
        .await
        .unwrap()
        .event
        .unwrap();
    let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
    assert_eq!(stored.channel_data["vendor_specific"]["never"][1], "of");
    assert_eq!(stored.channel_data["sms"]["num_segments"], 2);
    assert_eq!(stored.source.provider.as_deref(), Some("DataProvider"));

    let mut req = SendEvent::text("r", "data", "y");
    let cd = serde_json::json!({"whatsapp": {"context": {"id": "wamid.1"}}, "zzz": [null]});
    req.channel_data = cd.as_object().unwrap().clone();
    let ev = kit.send_event(req).await.unwrap().event.unwrap();
    let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
    assert_eq!(serde_json::Value::Object(stored.channel_data.clone()), cd);
}

/// C-25: channel info, binding metadata and event data are three separate
/// levels: none leaks into or changes another.
#[tokio::test]
async fn c25_three_metadata_levels_stay_apart() {
    let kit = RoomKit::builder()
        .channel(Arc::new(DataChannel { id: "data".into() }))
        .build()
        .unwrap();
    kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    let mut bm = Map::new();
    bm.insert("recipient".into(), "+1555".into());
    kit.attach_channel(
        &"r".into(),
        &"data".into(),
        AttachOptions {
            metadata: bm.clone(),
            ..AttachOptions::default()
        },
    )
    .await
    .unwrap();
    let mut req = SendEvent::text("r", "data", "z");
    req.metadata.insert("event_level".into(), true.into());
    let ev = kit.send_event(req).await.unwrap().event.unwrap();

    let info = kit.channel(&"data".into()).unwrap().info();
    assert_eq!(info.get("instance"), Some(&"data-1".into()));
    assert!(info.get("recipient").is_none() && info.get("event_level").is_none());
    let binding = kit.get_binding(&"r".into(), &"data".into()).await.unwrap();
    assert_eq!(binding.metadata, bm);
    let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
    assert!(stored.metadata.get("recipient").is_none());
    assert!(stored.metadata.get("instance").is_none());
    assert!(stored.channel_data.get("recipient").is_none());
    assert_eq!(stored.metadata.get("event_level"), Some(&true.into()));
}
