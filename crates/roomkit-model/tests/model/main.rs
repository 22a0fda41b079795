//! JSON conventions of the data model: exact enum values, the tagged
//! content union, timestamps, strict content fields and the structural
//! rules of RFC §5. Test names carry the checklist ids they verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use roomkit_model::time::Timestamp;
use roomkit_model::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let text = serde_json::to_string(v).unwrap();
    let back: T = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, v, "{text}");
}

fn ts(s: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn nested(depth: usize) -> EventContent {
    let mut c = EventContent::text("leaf");
    for _ in 0..depth {
        c = EventContent::Composite(CompositeContent { parts: vec![c] });
    }
    c
}

/// C-16: the 23 event types, in RFC order, as lower snake case strings.
#[test]
fn c16_event_types_are_the_23_rfc_values() {
    let names: Vec<Value> = EventType::ALL.iter().map(to_json).collect();
    assert_eq!(
        names,
        [
            "message",
            "system",
            "typing",
            "read_receipt",
            "delivery_receipt",
            "presence",
            "reaction",
            "edit",
            "delete",
            "participant_joined",
            "participant_left",
            "participant_identified",
            "participant_updated",
            "channel_attached",
            "channel_detached",
            "channel_muted",
            "channel_unmuted",
            "channel_updated",
            "dtmf",
            "recording_started",
            "recording_stopped",
            "task_created",
            "observation",
        ]
        .map(Value::from)
    );
    for t in EventType::ALL {
        round_trip(&t);
    }
    let ephemeral: Vec<_> = EventType::ALL
        .into_iter()
        .filter(|t| t.is_ephemeral())
        .collect();
    assert_eq!(ephemeral, [EventType::Typing, EventType::Presence]);
    assert!(serde_json::from_value::<EventType>(json!("MESSAGE")).is_err());
    assert!(serde_json::from_value::<EventType>(json!("shout")).is_err());
}

/// C-17: the five event statuses.
#[test]
fn c17_event_statuses() {
    for (s, name) in [
        (EventStatus::Pending, "pending"),
        (EventStatus::Delivered, "delivered"),
        (EventStatus::Read, "read"),
        (EventStatus::Failed, "failed"),
        (EventStatus::Blocked, "blocked"),
    ] {
        assert_eq!(to_json(&s), name);
        round_trip(&s);
    }
}

/// C-02, C-09: the four room statuses; ACTIVE and PAUSED accept events;
/// ARCHIVED is terminal, CLOSED may be reopened.
#[test]
fn c02_c09_room_statuses_and_transitions() {
    use RoomStatus::*;
    let all = [Active, Paused, Closed, Archived];
    let names: Vec<Value> = all.iter().map(to_json).collect();
    assert_eq!(
        names,
        ["active", "paused", "closed", "archived"].map(Value::from)
    );
    let accepting: Vec<_> = all.into_iter().filter(|s| s.accepts_events()).collect();
    assert_eq!(accepting, [Active, Paused]);
    assert!(Closed.can_move_to(Active));
    assert!(Active.can_move_to(Closed) && Paused.can_move_to(Closed));
    assert!(Active.can_move_to(Archived) && Closed.can_move_to(Archived));
    for to in [Active, Paused, Closed] {
        assert!(!Archived.can_move_to(to), "archived -> {to:?}");
    }
    assert!(!Closed.can_move_to(Paused));
}

/// C-01: a room's JSON form has every field, with RFC 3339 millisecond
/// timestamps and null for unset values.
#[test]
fn c01_room_json_form() {
    let mut room = Room::new("r1".into(), ts("2025-03-04T05:06:07.891Z"));
    room.organization_id = Some("org".into());
    room.timers.inactive_after_seconds = Some(60);
    let v = to_json(&room);
    assert_eq!(v["id"], "r1");
    assert_eq!(v["organization_id"], "org");
    assert_eq!(v["status"], "active");
    assert_eq!(v["created_at"], "2025-03-04T05:06:07.891Z");
    assert_eq!(v["updated_at"], "2025-03-04T05:06:07.891Z");
    assert_eq!(v["closed_at"], Value::Null);
    assert_eq!(v["timers"]["inactive_after_seconds"], 60);
    assert_eq!(v["timers"]["closed_after_seconds"], Value::Null);
    assert_eq!(v["timers"]["last_activity_at"], Value::Null);
    assert_eq!(v["metadata"], json!({}));
    assert_eq!(v["event_count"], 0);
    assert_eq!(v["latest_index"], Value::Null);
    round_trip(&room);
}

/// Timestamps are written as RFC 3339 UTC with exactly three fraction
/// digits, and read from any RFC 3339 form.
#[test]
fn c15_timestamps_rfc3339_milliseconds() {
    let t = ts("2025-01-02T03:04:05Z");
    assert_eq!(time::format(&t), "2025-01-02T03:04:05.000Z");
    let t = ts("2025-01-02T03:04:05.123456Z");
    assert_eq!(time::format(&t), "2025-01-02T03:04:05.123Z");

    let mut e = RoomEvent::text(EventSource::system(), "x");
    e.created_at = ts("2025-01-02T04:04:05.5+01:00");
    assert_eq!(to_json(&e)["created_at"], "2025-01-02T03:04:05.500Z");

    let mut v = to_json(&e);
    v["created_at"] = json!("2025-06-01T12:00:00+02:00");
    let back: RoomEvent = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back.created_at, ts("2025-06-01T10:00:00Z"));
    v["created_at"] = json!("yesterday");
    assert!(serde_json::from_value::<RoomEvent>(v).is_err());
}

/// One example of every content type with its exact JSON form.
fn contents() -> Vec<(EventContent, Value)> {
    vec![
        (
            EventContent::text("hi"),
            json!({"type": "text", "text": "hi", "language": null}),
        ),
        (
            EventContent::Rich(RichContent {
                text: "*hi*".into(),
                plain_text: Some("hi".into()),
                buttons: vec![Button {
                    label: "Go".into(),
                    value: Some("go".into()),
                    url: None,
                }],
                cards: vec![],
                quick_replies: vec![QuickReply {
                    label: "ok".into(),
                    value: None,
                }],
            }),
            json!({"type": "rich", "text": "*hi*", "plain_text": "hi",
                   "buttons": [{"label": "Go", "value": "go", "url": null}],
                   "cards": [], "quick_replies": [{"label": "ok", "value": null}]}),
        ),
        (
            EventContent::Media(MediaContent {
                url: "https://x/y.png".into(),
                mime_type: "image/png".into(),
                filename: None,
                caption: Some("pic".into()),
                size_bytes: Some(10),
            }),
            json!({"type": "media", "url": "https://x/y.png", "mime_type": "image/png",
                   "filename": null, "caption": "pic", "size_bytes": 10}),
        ),
        (
            EventContent::Location(LocationContent {
                latitude: 1.5,
                longitude: -2.25,
                label: None,
                address: None,
            }),
            json!({"type": "location", "latitude": 1.5, "longitude": -2.25,
                   "label": null, "address": null}),
        ),
        (
            EventContent::Audio(AudioContent {
                url: "u".into(),
                duration_seconds: Some(1.5),
                mime_type: "audio/ogg".into(),
                size_bytes: None,
                transcript: None,
            }),
            json!({"type": "audio", "url": "u", "duration_seconds": 1.5,
                   "mime_type": "audio/ogg", "size_bytes": null, "transcript": null}),
        ),
        (
            EventContent::Video(VideoContent {
                url: "v".into(),
                duration_seconds: None,
                mime_type: "video/mp4".into(),
                size_bytes: None,
                thumbnail_url: None,
            }),
            json!({"type": "video", "url": "v", "duration_seconds": null,
                   "mime_type": "video/mp4", "size_bytes": null, "thumbnail_url": null}),
        ),
        (
            EventContent::Composite(CompositeContent {
                parts: vec![EventContent::text("a")],
            }),
            json!({"type": "composite",
                   "parts": [{"type": "text", "text": "a", "language": null}]}),
        ),
        (
            EventContent::system("code", "msg"),
            json!({"type": "system", "code": "code", "message": "msg", "data": {}}),
        ),
        (
            EventContent::Template(TemplateContent {
                template_id: "t1".into(),
                language: "en".into(),
                parameters: Map::new(),
                fallback: None,
            }),
            json!({"type": "template", "template_id": "t1", "language": "en",
                   "parameters": {}, "fallback": null}),
        ),
        (
            EventContent::Edit(EditContent {
                target_event_id: "e1".into(),
                new_content: Box::new(EventContent::text("v2")),
                edit_source: Some(EditSource::Sender),
            }),
            json!({"type": "edit", "target_event_id": "e1",
                   "new_content": {"type": "text", "text": "v2", "language": null},
                   "edit_source": "sender"}),
        ),
        (
            EventContent::Delete(DeleteContent {
                target_event_id: "e1".into(),
                delete_type: DeleteType::Admin,
                reason: None,
            }),
            json!({"type": "delete", "target_event_id": "e1",
                   "delete_type": "admin", "reason": null}),
        ),
    ]
}

/// C-21: the 11 content types, each a `type`-tagged object with the listed
/// fields, round-tripping exactly.
#[test]
fn c21_every_content_type_json_form() {
    let all = contents();
    assert_eq!(all.len(), 11);
    for (content, expected) in &all {
        assert_eq!(&to_json(content), expected, "{}", content.kind());
        assert_eq!(expected["type"], content.kind());
        let back: EventContent = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(&back, content);
    }
    // Optional fields may be left out on input.
    let short: EventContent = serde_json::from_value(json!({"type": "text", "text": "x"})).unwrap();
    assert_eq!(short, EventContent::text("x"));
}

/// C-113: content is validated strictly: unknown fields, unknown types,
/// missing required fields and wrong field types are all rejected.
#[test]
fn c113_content_rejects_unknown_and_malformed_fields() {
    for (_, mut v) in contents() {
        let kind = v["type"].as_str().unwrap().to_owned();
        v["surprise"] = json!(1);
        assert!(
            serde_json::from_value::<EventContent>(v).is_err(),
            "{kind} accepted an unknown field"
        );
    }
    for bad in [
        json!({"type": "sticker", "id": "1"}),
        json!({"text": "no type"}),
        json!({"type": "TEXT", "text": "x"}),
        json!({"type": "text"}),
        json!({"type": "text", "text": 5}),
        json!({"type": "media", "url": "u"}),
        json!({"type": "location", "latitude": "north", "longitude": 1.0}),
        json!({"type": "delete", "target_event_id": "e", "delete_type": "everyone"}),
        json!({"type": "edit", "target_event_id": "e", "new_content": {"type": "nope"}}),
        json!({"type": "composite", "parts": [{"type": "text", "text": "a", "x": 1}]}),
    ] {
        assert!(
            serde_json::from_value::<EventContent>(bad.clone()).is_err(),
            "accepted {bad}"
        );
    }
}

/// C-22: composites nest at most 5 levels; 6 is rejected, also when the
/// nesting hides in a template fallback or an edit's new content.
#[test]
fn c22_composite_nesting_limit() {
    assert_eq!(MAX_COMPOSITE_DEPTH, 5);
    assert_eq!(nested(0).composite_depth(), 0);
    assert_eq!(nested(5).composite_depth(), 5);
    assert!(nested(5).validate().is_ok());
    assert_eq!(
        nested(6).validate(),
        Err(ModelError::CompositeTooDeep { depth: 6, max: 5 })
    );
    // The widest branch counts, not the first.
    let mixed = EventContent::Composite(CompositeContent {
        parts: vec![EventContent::text("flat"), nested(5)],
    });
    assert_eq!(mixed.composite_depth(), 6);
    assert!(mixed.validate().is_err());
    let template = EventContent::Template(TemplateContent {
        template_id: "t".into(),
        language: String::new(),
        parameters: Map::new(),
        fallback: Some(Box::new(nested(6))),
    });
    assert!(template.validate().is_err());
    let edit = EventContent::Edit(EditContent {
        target_event_id: "e".into(),
        new_content: Box::new(nested(6)),
        edit_source: None,
    });
    assert!(edit.validate().is_err());
    // Deep nesting still round-trips through JSON (the limit is a rule of
    // the pipeline, checked by validate()).
    round_trip(&nested(6));
}

/// C-23: delete types and edit sources, including a null edit source.
#[test]
fn c23_delete_types_and_edit_sources() {
    for (d, name) in [
        (DeleteType::Sender, "sender"),
        (DeleteType::System, "system"),
        (DeleteType::Admin, "admin"),
    ] {
        assert_eq!(to_json(&d), name);
        round_trip(&d);
    }
    for (s, name) in [
        (EditSource::Sender, "sender"),
        (EditSource::System, "system"),
    ] {
        assert_eq!(to_json(&s), name);
    }
    let e: EventContent = serde_json::from_value(json!({
        "type": "edit", "target_event_id": "e", "new_content": {"type": "text", "text": "x"},
        "edit_source": null
    }))
    .unwrap();
    match e {
        EventContent::Edit(e) => assert_eq!(e.edit_source, None),
        other => panic!("{other:?}"),
    }
}

fn full_event() -> RoomEvent {
    let mut source = EventSource::channel(
        "sms-main".into(),
        ChannelType::Sms,
        ChannelDirection::Inbound,
    );
    source.participant_id = Some("p1".into());
    source.external_id = Some("+15550001".into());
    source.provider = Some("TwilioSMS".into());
    source.raw_payload = json!({"Body": "hé", "n": [1, 2.5, null], "o": {}})
        .as_object()
        .unwrap()
        .clone();
    source.provider_message_id = Some("SM1".into());
    let mut e = RoomEvent::text(source, "hé");
    e.id = "e1".into();
    e.room_id = "r1".into();
    e.status = EventStatus::Blocked;
    e.blocked_by = Some("guard".into());
    e.visibility = Visibility::Channels(vec!["a".into(), "b".into()]);
    e.addressed_to = Some(vec!["ai".into()]);
    e.index = 7;
    e.chain_depth = 2;
    e.parent_event_id = Some("e0".into());
    e.correlation_id = Some("c".into());
    e.idempotency_key = Some("k".into());
    e.created_at = ts("2025-01-01T00:00:00.001Z");
    e.metadata.insert("m".into(), json!(true));
    e.channel_data = json!({"future_vendor": {"x": [1]}})
        .as_object()
        .unwrap()
        .clone();
    e.delivery_results.insert(
        "ws".into(),
        DeliveryResult::sent("ws".into(), Some("pm".into())),
    );
    e
}

/// C-15, C-18: a room event has every RFC field, its source every source
/// field, and it round-trips through JSON.
#[test]
fn c15_c18_room_event_json_form() {
    let e = full_event();
    let v = to_json(&e);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
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
        assert!(keys.contains(&key), "missing {key}");
    }
    for key in [
        "channel_id",
        "channel_type",
        "direction",
        "participant_id",
        "external_id",
        "provider",
        "raw_payload",
        "provider_message_id",
    ] {
        assert!(v["source"].get(key).is_some(), "missing source.{key}");
    }
    assert_eq!(v["type"], "message");
    assert_eq!(v["status"], "blocked");
    assert_eq!(v["visibility"], "a,b");
    assert_eq!(v["source"]["channel_type"], "sms");
    assert_eq!(v["source"]["direction"], "inbound");
    assert_eq!(v["delivery_results"]["ws"]["status"], "sent");
    round_trip(&e);
}

/// C-19, C-24: the raw payload and unknown channel data survive a JSON
/// round trip unchanged.
#[test]
fn c19_c24_raw_payload_and_channel_data_preserved() {
    let e = full_event();
    let back: RoomEvent = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(
        Value::Object(back.source.raw_payload),
        json!({"Body": "hé", "n": [1, 2.5, null], "o": {}})
    );
    assert_eq!(
        Value::Object(back.channel_data),
        json!({"future_vendor": {"x": [1]}})
    );
}

/// Visibility strings of RFC §7.3 parse and print back.
#[test]
fn c15_visibility_strings() {
    for (text, v) in [
        ("all", Visibility::All),
        ("none", Visibility::None),
        ("transport", Visibility::Transport),
        ("intelligence", Visibility::Intelligence),
        ("chan_a", Visibility::Channels(vec!["chan_a".into()])),
        (
            "chan_a,chan_b",
            Visibility::Channels(vec!["chan_a".into(), "chan_b".into()]),
        ),
    ] {
        assert_eq!(text.parse::<Visibility>().unwrap(), v);
        assert_eq!(to_json(&v), text);
        round_trip(&v);
    }
    assert!("".parse::<Visibility>().is_err());
    assert!(" , ".parse::<Visibility>().is_err());
    assert_eq!(Visibility::default(), Visibility::All);
}

/// The 21 channel types plus `custom:` types, and the access values.
#[test]
fn c20_channel_types_and_access_values() {
    let names: Vec<String> = ChannelType::builtin().map(|t| t.to_string()).collect();
    assert_eq!(names.len(), 21);
    assert_eq!(names.first().map(String::as_str), Some("sms"));
    assert!(names.contains(&"realtime_audio_video".to_owned()));
    for t in ChannelType::builtin() {
        round_trip(&t);
    }
    let custom: ChannelType = serde_json::from_value(json!("custom:slack")).unwrap();
    assert_eq!(custom, ChannelType::Custom("custom:slack".into()));
    assert!(serde_json::from_value::<ChannelType>(json!("pager")).is_err());
    assert!(serde_json::from_value::<ChannelType>(json!("custom:")).is_err());
    for (a, name, read, write) in [
        (Access::ReadWrite, "read_write", true, true),
        (Access::ReadOnly, "read_only", true, false),
        (Access::WriteOnly, "write_only", false, true),
        (Access::None, "none", false, false),
    ] {
        assert_eq!(to_json(&a), name);
        assert_eq!((a.can_read(), a.can_write()), (read, write), "{name}");
    }
}

/// C-104: framework events are tagged with their RFC names and carry the
/// listed data.
#[test]
fn c104_framework_event_json_form() {
    let cases = [
        (
            FrameworkEvent::RoomCreated {
                room_id: "r".into(),
                organization_id: Some("o".into()),
            },
            json!({"type": "room_created", "room_id": "r", "organization_id": "o"}),
        ),
        (
            FrameworkEvent::RoomPaused {
                room_id: "r".into(),
            },
            json!({"type": "room_paused", "room_id": "r"}),
        ),
        (
            FrameworkEvent::RoomClosed {
                room_id: "r".into(),
            },
            json!({"type": "room_closed", "room_id": "r"}),
        ),
        (
            FrameworkEvent::RoomArchived {
                room_id: "r".into(),
            },
            json!({"type": "room_archived", "room_id": "r"}),
        ),
        (
            FrameworkEvent::EventBlocked {
                room_id: "r".into(),
                event_id: "e".into(),
                hook_name: "h".into(),
            },
            json!({"type": "event_blocked", "room_id": "r", "event_id": "e", "hook_name": "h"}),
        ),
        (
            FrameworkEvent::DeliveryFailed {
                room_id: "r".into(),
                event_id: "e".into(),
                channel_id: "c".into(),
                error: "x".into(),
            },
            json!({"type": "delivery_failed", "room_id": "r", "event_id": "e",
                   "channel_id": "c", "error": "x"}),
        ),
        (
            FrameworkEvent::HookError {
                hook_name: "h".into(),
                trigger: HookTrigger::BeforeBroadcast,
                error: "boom".into(),
            },
            json!({"type": "hook_error", "hook_name": "h", "trigger": "before_broadcast",
                   "error": "boom"}),
        ),
        (
            FrameworkEvent::ChainDepthExceeded {
                room_id: "r".into(),
                channel_id: "ai".into(),
                depth: 5,
            },
            json!({"type": "chain_depth_exceeded", "room_id": "r", "channel_id": "ai",
                   "depth": 5}),
        ),
        (
            FrameworkEvent::EventRefused {
                room_id: "r".into(),
                reason: BlockReason::RoomClosed,
            },
            json!({"type": "event_refused", "room_id": "r", "reason": "room_closed"}),
        ),
    ];
    for (event, expected) in cases {
        assert_eq!(to_json(&event), expected);
        assert_eq!(expected["type"], event.name());
        round_trip(&event);
    }
}

/// The reasons an inbound result can carry, as the exact strings of the
/// RFC where it names them (`room_closed`, `process_timeout`).
#[test]
fn c03_block_reasons_and_inbound_result() {
    for (r, name) in [
        (BlockReason::RoomClosed, "room_closed"),
        (BlockReason::Duplicate, "duplicate"),
        (BlockReason::NotAuthor, "not_author"),
        (BlockReason::InvalidTarget, "invalid_target"),
        (BlockReason::ProcessTimeout, "process_timeout"),
    ] {
        assert_eq!(to_json(&r), name);
    }
    let refused = InboundResult {
        event: None,
        blocked: true,
        reason: Some(BlockReason::RoomClosed),
        delivery_results: Default::default(),
    };
    assert_eq!(
        to_json(&refused),
        json!({"event": null, "blocked": true, "reason": "room_closed", "delivery_results": {}})
    );
    round_trip(&refused);
}

/// C-109: tasks and observations carry the RFC fields, `type` included.
#[test]
fn c109_task_and_observation_fields() {
    for (s, name) in [
        (TaskStatus::Pending, "pending"),
        (TaskStatus::InProgress, "in_progress"),
        (TaskStatus::Completed, "completed"),
        (TaskStatus::Failed, "failed"),
        (TaskStatus::Cancelled, "cancelled"),
    ] {
        assert_eq!(to_json(&s), name);
    }
    let t = to_json(&Task::new("follow_up").with_title("Call back"));
    for key in [
        "id",
        "room_id",
        "type",
        "status",
        "title",
        "description",
        "data",
        "assigned_to",
        "created_by",
        "created_at",
        "metadata",
    ] {
        assert!(t.get(key).is_some(), "task.{key}");
    }
    assert_eq!(t["type"], "follow_up");
    let o = to_json(&Observation::new("sentiment", Map::new()));
    for key in [
        "id",
        "room_id",
        "type",
        "data",
        "source_channel_id",
        "created_at",
        "metadata",
    ] {
        assert!(o.get(key).is_some(), "observation.{key}");
    }
    // A minimal task from outside fills its defaults.
    let t: Task = serde_json::from_value(json!({"type": "x"})).unwrap();
    assert_eq!(t.status, TaskStatus::Pending);
}
