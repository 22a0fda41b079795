//! The broadcast pipeline and transcoding (RFC §10.2, §6.6), checklist
//! items C-80 to C-88.

use std::sync::Arc;
use std::time::Duration;

use roomkit_core::model::*;
use roomkit_core::transcode::{DefaultTranscoder, Transcoder};
use roomkit_core::*;
use roomkit_testkit::*;

use crate::support::*;

/// C-80 and D4: targets are every binding minus the source, minus
/// WRITE_ONLY and NONE access, minus INBOUND-only channels, filtered by
/// the source binding's visibility. A READ_ONLY transport and an
/// OUTBOUND-only one still receive it.
#[tokio::test]
async fn c80_target_rules_exclude_source_unreadable_and_inbound_only() {
    let src = RecordingChannel::websocket("src");
    let rw = RecordingChannel::websocket("rw");
    let ro = RecordingChannel::websocket("ro");
    let wo = RecordingChannel::websocket("wo");
    let none = RecordingChannel::websocket("none");
    let inbound_only =
        RecordingChannel::websocket("inbound_only").with_direction(ChannelDirection::Inbound);
    let outbound_only =
        RecordingChannel::websocket("outbound_only").with_direction(ChannelDirection::Outbound);
    let all = [&src, &rw, &ro, &wo, &none, &inbound_only, &outbound_only];
    let kit = kit_with(&all);
    let room = kit.create_room(CreateRoom::with_id("r")).await.unwrap().id;
    for (id, access) in [
        ("src", Access::ReadWrite),
        ("rw", Access::ReadWrite),
        ("ro", Access::ReadOnly),
        ("wo", Access::WriteOnly),
        ("none", Access::None),
        ("inbound_only", Access::ReadWrite),
        ("outbound_only", Access::ReadWrite),
    ] {
        attach(
            &kit,
            &room,
            id,
            AttachOptions {
                access,
                ..AttachOptions::default()
            },
        )
        .await;
    }
    kit.idle().await;
    let r = kit
        .process_inbound(msg("src", "u", "hello", &room))
        .await
        .unwrap();
    let got = |c: &RecordingChannel| c.delivered_texts() == vec!["hello"];
    assert!(got(&rw) && got(&ro) && got(&outbound_only));
    assert!(src.delivered().is_empty() && src.seen_message_texts().is_empty());
    for c in [&wo, &none, &inbound_only] {
        assert!(c.delivered().is_empty(), "{} got a delivery", c.id());
        assert!(c.seen_message_texts().is_empty(), "{} got on_event", c.id());
    }
    let mut keys: Vec<&str> = r.delivery_results.keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, vec!["outbound_only", "ro", "rw"]);
}

/// C-80: the source binding's visibility filters targets: "transport"
/// hides the event from intelligence, a channel list keeps only those
/// channels, "none" keeps it in the timeline only.
#[tokio::test]
async fn c80_source_visibility_filters_targets() {
    let src = RecordingChannel::websocket("src");
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::sms("b");
    let ai = RecordingChannel::ai("ai");
    let kit = kit_with(&[&src, &a, &b, &ai]);
    let room = room_with(&kit, "r", &["a", "b", "ai"]).await;
    let set_vis = |v: &str| BindingUpdate {
        visibility: Some(v.parse().unwrap()),
        ..BindingUpdate::default()
    };
    attach(
        &kit,
        &room,
        "src",
        AttachOptions {
            visibility: Visibility::Transport,
            ..AttachOptions::default()
        },
    )
    .await;
    kit.process_inbound(msg("src", "u", "transport only", &room))
        .await
        .unwrap();
    kit.update_binding(&room, &"src".into(), set_vis("b"))
        .await
        .unwrap();
    kit.process_inbound(msg("src", "u", "only b", &room))
        .await
        .unwrap();
    kit.update_binding(&room, &"src".into(), set_vis("none"))
        .await
        .unwrap();
    kit.process_inbound(msg("src", "u", "nobody", &room))
        .await
        .unwrap();

    assert_eq!(a.delivered_texts(), vec!["transport only"]);
    assert_eq!(b.delivered_texts(), vec!["transport only", "only b"]);
    assert!(ai.seen_message_texts().is_empty());
    assert!(texts(&timeline(&kit, &room).await).contains(&"nobody".to_owned()));
}

/// C-81: within one event every target is processed concurrently, and
/// each readable transport target gets on_event() and then deliver().
#[tokio::test(start_paused = true)]
async fn c81_targets_of_one_event_run_concurrently_on_event_then_deliver() {
    let src = RecordingChannel::websocket("src");
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::sms("b");
    let kit = kit_with(&[&src, &a, &b]);
    let room = room_with(&kit, "r", &["src", "a", "b"]).await;
    a.clear();
    b.clear();
    a.delay(Duration::from_secs(10));
    b.delay(Duration::from_secs(10));
    let k = kit.clone();
    let r = room.clone();
    let h = tokio::spawn(async move { k.process_inbound(msg("src", "u", "hi", &r)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Both targets are inside their first call while the other still waits.
    assert_eq!(a.calls().len(), 1);
    assert_eq!(b.calls().len(), 1);
    h.await.unwrap().unwrap();
    for c in [&a, &b] {
        let kinds: Vec<CallKind> = c.calls().iter().map(|c| c.kind).collect();
        assert_eq!(kinds, vec![CallKind::OnEvent, CallKind::Deliver]);
    }
}

/// C-82: a failing or panicking target does not stop the others; errors
/// are recorded per channel and broadcast_partial_failure names the
/// failed channels.
#[tokio::test]
async fn c82_one_failing_target_does_not_stop_the_others() {
    let src = RecordingChannel::websocket("src");
    let failing = RecordingChannel::sms("failing");
    failing.fail_deliveries(true);
    let panicking = RecordingChannel::websocket("panicking");
    let healthy = RecordingChannel::websocket("healthy");
    let kit = kit_with(&[&src, &failing, &panicking, &healthy]);
    let room = room_with(&kit, "r", &["src", "failing", "panicking", "healthy"]).await;
    panicking.panic_on_call(true);
    let log = FrameworkLog::start(&kit);

    let r = kit
        .process_inbound(msg("src", "u", "hello", &room))
        .await
        .unwrap();
    assert!(!r.blocked);
    assert_eq!(healthy.delivered_texts(), vec!["hello"]);
    let status = |c: &str| r.delivery_results[&ChannelId::from(c)].status;
    assert_eq!(status("healthy"), DeliveryStatus::Sent);
    assert_eq!(status("failing"), DeliveryStatus::Failed);
    assert_eq!(status("panicking"), DeliveryStatus::Failed);
    let ev = r.event.unwrap();
    let partial: Vec<Vec<ChannelId>> = log
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e {
            FrameworkEvent::BroadcastPartialFailure {
                event_id,
                mut failed_channels,
                ..
            } if event_id == ev.id => {
                failed_channels.sort();
                Some(failed_channels)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        partial,
        vec![vec![
            ChannelId::from("failing"),
            ChannelId::from("panicking")
        ]]
    );
    // The lane survives: the next event is delivered too.
    panicking.panic_on_call(false);
    kit.process_inbound(msg("src", "u", "again", &room))
        .await
        .unwrap();
    assert_eq!(healthy.delivered_texts(), vec!["hello", "again"]);
    assert_eq!(panicking.delivered().len(), 2);
}

/// C-83: what a broadcast collects is all applied: response events are
/// committed, tasks and observations persisted, metadata updates merged
/// into the room, and errors recorded per channel.
#[tokio::test]
async fn c83_broadcast_outputs_are_collected_and_applied() {
    let src = RecordingChannel::websocket("src");
    let bad = RecordingChannel::sms("bad");
    bad.fail_deliveries(true);
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.event_type != EventType::Message || e.source.channel_id.as_str() != "src" {
            return ChannelOutput::empty();
        }
        let mut data = Map::new();
        data.insert("sentiment".into(), "positive".into());
        let mut out = reply_with_effects(
            Some("noted"),
            vec![Task::new("follow_up").with_title("Call back")],
            vec![Observation::new("sentiment", data)],
        );
        out.metadata_updates
            .insert("topic".into(), "billing".into());
        out
    });
    let kit = kit_with(&[&src, &bad, &ai]);
    let room = room_with(&kit, "r", &["src", "bad", "ai"]).await;
    let r = kit
        .process_inbound(msg("src", "u", "my bill", &room))
        .await
        .unwrap();
    kit.idle().await;
    assert_eq!(
        texts(&conversation(&kit, &room).await),
        vec!["my bill", "noted"]
    );
    let tasks = kit.list_tasks(&room, &Default::default()).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_type, "follow_up");
    let obs = kit.list_observations(&room).await.unwrap();
    assert_eq!(obs.len(), 1);
    assert_eq!(
        obs[0].source_channel_id.as_ref().map(|c| c.as_str()),
        Some("ai")
    );
    let room_state = kit.get_room(&room).await.unwrap();
    assert_eq!(room_state.metadata.get("topic"), Some(&"billing".into()));
    assert_eq!(
        r.delivery_results[&ChannelId::from("bad")].status,
        DeliveryStatus::Failed
    );
}

/// C-84: solicitation narrows which intelligence channels are called; an
/// unsolicited AI is neither called nor delivered the event, transports
/// are unaffected, and solicitation never widens visibility.
#[tokio::test]
async fn c84_solicitation_narrows_intelligence_targets_only() {
    let src = RecordingChannel::websocket("src");
    let ws = RecordingChannel::websocket("ws");
    let ai1 = RecordingChannel::ai("ai1");
    let ai2 = RecordingChannel::ai("ai2");
    let kit = kit_with(&[&src, &ws, &ai1, &ai2]);
    let room = room_with(&kit, "r", &["src", "ws", "ai1", "ai2"]).await;
    let send = |text: &str, to: &[&str], vis: Option<Visibility>| SendEvent {
        addressed_to: Some(to.iter().map(|c| ChannelId::from(*c)).collect()),
        visibility: vis,
        ..SendEvent::text(room.clone(), "src", text)
    };
    kit.send_event(send("for ai1", &["ai1"], None))
        .await
        .unwrap();
    assert_eq!(ai1.seen_message_texts(), vec!["for ai1"]);
    assert!(
        ai2.calls()
            .iter()
            .all(|c| c.event.event_type != EventType::Message)
    );
    assert_eq!(ws.delivered_texts(), vec!["for ai1"]);

    // Addressed to ai2, but visible to transports only: ai2 stays out.
    kit.send_event(send("hidden", &["ai2"], Some(Visibility::Transport)))
        .await
        .unwrap();
    assert!(ai2.seen_message_texts().is_empty());
    assert_eq!(ws.delivered_texts(), vec!["for ai1", "hidden"]);
}

fn text_only_sms(id: &str) -> RecordingChannel {
    let mut caps = ChannelCapabilities::text_only();
    caps.max_length = Some(1600);
    RecordingChannel::transport(id, ChannelType::Sms).with_capabilities(caps)
}

/// C-85: every row of the transcoding table for a TEXT-only target.
#[tokio::test]
async fn c85_transcoding_rows_for_a_text_only_target() {
    let src = RecordingChannel::websocket("src");
    let sms = text_only_sms("sms");
    let kit = kit_with(&[&src, &sms]);
    let room = room_with(&kit, "r", &["src", "sms"]).await;
    let media = |caption: Option<&str>, filename: Option<&str>| {
        EventContent::Media(MediaContent {
            url: "https://example.test/f.jpg".into(),
            mime_type: "image/jpeg".into(),
            filename: filename.map(Into::into),
            caption: caption.map(Into::into),
            size_bytes: None,
        })
    };
    let audio = |transcript: Option<&str>| {
        EventContent::Audio(AudioContent {
            url: "https://example.test/a.ogg".into(),
            duration_seconds: Some(3.0),
            mime_type: "audio/ogg".into(),
            size_bytes: None,
            transcript: transcript.map(Into::into),
        })
    };
    let rich = |text: &str, plain: Option<&str>| {
        EventContent::Rich(RichContent {
            text: text.into(),
            plain_text: plain.map(Into::into),
            buttons: vec![],
            cards: vec![],
            quick_replies: vec![],
        })
    };
    let template = |fallback: Option<EventContent>| {
        EventContent::Template(TemplateContent {
            template_id: "order_ready".into(),
            language: "en".into(),
            parameters: Map::new(),
            fallback: fallback.map(Box::new),
        })
    };
    let cases: Vec<(EventContent, &str)> = vec![
        (
            rich("**Bold** text", Some("Bold text, plain")),
            "Bold text, plain",
        ),
        (rich("**Hello** <b>world</b>", None), "Hello world"),
        (media(Some("Receipt"), Some("r.jpg")), "Receipt"),
        (media(None, Some("r.jpg")), "r.jpg"),
        (audio(Some("call me back")), "call me back"),
        (audio(None), "[Voice message]"),
        (
            EventContent::Video(VideoContent {
                url: "https://example.test/v.mp4".into(),
                duration_seconds: None,
                mime_type: "video/mp4".into(),
                size_bytes: None,
                thumbnail_url: None,
            }),
            "[Video]",
        ),
        (
            EventContent::Location(LocationContent {
                latitude: 45.5,
                longitude: -73.25,
                label: Some("Office".into()),
                address: None,
            }),
            "[Location] 45.5, -73.25 - Office",
        ),
        (
            EventContent::Composite(CompositeContent {
                parts: vec![
                    EventContent::text("See attached"),
                    media(Some("Invoice"), None),
                ],
            }),
            "See attached\nInvoice",
        ),
        (
            template(Some(EventContent::text("Your order is ready"))),
            "Your order is ready",
        ),
        (
            template(Some(rich("*Ready*", Some("Ready for pickup")))),
            "Ready for pickup",
        ),
    ];
    for (content, _) in &cases {
        kit.process_inbound(inbound("src", "u", content.clone(), &room))
            .await
            .unwrap();
    }
    let delivered = sms.delivered();
    assert_eq!(delivered.len(), cases.len());
    for (ev, (original, want)) in delivered.iter().zip(&cases) {
        assert!(
            matches!(ev.content, EventContent::Text(_)),
            "{} became {:?}",
            original.kind(),
            ev.content
        );
        assert_eq!(
            ev.content.as_text(),
            Some(*want),
            "from {}",
            original.kind()
        );
    }
    // A template without fallback still reaches the target as text.
    kit.process_inbound(inbound("src", "u", template(None), &room))
        .await
        .unwrap();
    let last = sms.delivered().pop().unwrap();
    assert!(matches!(last.content, EventContent::Text(_)));
    assert!(last.content.plain_text().contains("order_ready"));
    // The timeline keeps the original content.
    let stored = conversation(&kit, &room).await;
    assert!(matches!(stored[0].content, EventContent::Rich(_)));
}

/// C-85: a composite for a target that shows text and media keeps the
/// parts it supports natively and turns the others into text.
#[tokio::test]
async fn c85_composite_parts_fit_the_target() {
    let src = RecordingChannel::websocket("src");
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&src, &sms]);
    let room = room_with(&kit, "r", &["src", "sms"]).await;
    let image = EventContent::Media(MediaContent {
        url: "https://example.test/p.png".into(),
        mime_type: "image/png".into(),
        filename: None,
        caption: None,
        size_bytes: None,
    });
    let content = EventContent::Composite(CompositeContent {
        parts: vec![
            EventContent::text("Here"),
            image.clone(),
            EventContent::Audio(AudioContent {
                url: "https://example.test/a.ogg".into(),
                duration_seconds: None,
                mime_type: "audio/ogg".into(),
                size_bytes: None,
                transcript: None,
            }),
        ],
    });
    kit.process_inbound(inbound("src", "u", content, &room))
        .await
        .unwrap();
    let EventContent::Composite(c) = &sms.delivered()[0].content else {
        panic!("not a composite: {:?}", sms.delivered()[0].content);
    };
    assert_eq!(
        c.parts,
        vec![
            EventContent::text("Here"),
            image,
            EventContent::text("[Voice message]")
        ]
    );
}

/// C-86: EDIT and DELETE reach targets that support them natively and
/// untouched; other targets get "Correction: ..." and "[Message deleted]".
#[tokio::test]
async fn c86_edit_and_delete_native_or_text_fallback() {
    let src = RecordingChannel::websocket("src");
    let ws = RecordingChannel::websocket("ws");
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&src, &ws, &sms]);
    let room = room_with(&kit, "r", &["src", "ws", "sms"]).await;
    let original = kit
        .process_inbound(msg("src", "alice", "I need 5000$", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    let edit = edit_of(&original.id, "I need 50000$");
    kit.process_inbound(inbound("src", "alice", edit.clone(), &room))
        .await
        .unwrap();
    let delete = delete_of(&original.id, DeleteType::Sender);
    kit.process_inbound(inbound("src", "alice", delete.clone(), &room))
        .await
        .unwrap();

    let ws_got = ws.delivered();
    assert_eq!(ws_got[1].event_type, EventType::Edit);
    assert_eq!(ws_got[1].content, edit);
    assert_eq!(ws_got[2].event_type, EventType::Delete);
    assert_eq!(ws_got[2].content, delete);
    let sms_got = sms.delivered();
    assert_eq!(
        sms_got[1].content,
        EventContent::text("Correction: I need 50000$")
    );
    assert_eq!(sms_got[2].content, EventContent::text("[Message deleted]"));
}

/// C-87: after transcoding, text is truncated to max_length, counted in
/// characters (multi-byte ones included); the timeline keeps it whole.
#[tokio::test]
async fn c87_truncation_to_max_length_counts_characters() {
    let src = RecordingChannel::websocket("src");
    let sms = RecordingChannel::sms("sms");
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&src, &sms, &ws]);
    let room = room_with(&kit, "r", &["src", "sms", "ws"]).await;
    let long_accents = "é".repeat(1700);
    let long_emoji = "😀".repeat(1601);
    let exact = "a".repeat(1600);
    for t in [&long_accents, &long_emoji, &exact] {
        kit.process_inbound(msg("src", "u", t, &room))
            .await
            .unwrap();
    }
    // A rich message is transcoded first, then truncated.
    let rich = EventContent::Rich(RichContent {
        text: format!("**{}**", "b".repeat(2000)),
        plain_text: None,
        buttons: vec![],
        cards: vec![],
        quick_replies: vec![],
    });
    let sms_only = SendEvent {
        content: Some(rich),
        visibility: Some(Visibility::Channels(vec!["sms".into()])),
        ..SendEvent::text(room.clone(), "src", "")
    };
    kit.send_event(sms_only).await.unwrap();

    let got = sms.delivered_texts();
    assert_eq!(got[0], "é".repeat(1600));
    assert_eq!(got[0].len(), 3200);
    assert_eq!(got[1], "😀".repeat(1600));
    assert_eq!(got[2], exact);
    assert_eq!(got[3], "b".repeat(1600));
    assert_eq!(ws.delivered_texts()[0].chars().count(), 1700);
    let stored = conversation(&kit, &room).await;
    assert_eq!(stored[0].content.plain_text().chars().count(), 1700);
}

/// An integrator's transcoder: shouts at text-only targets, otherwise
/// defers to the default rules.
struct Shouting;

impl Transcoder for Shouting {
    fn transcode(&self, event: &RoomEvent, caps: &ChannelCapabilities) -> Option<EventContent> {
        if caps.media_types == vec![ChannelMediaType::Text] {
            let text = DefaultTranscoder
                .transcode(event, caps)
                .unwrap_or_else(|| event.content.clone())
                .plain_text();
            return Some(EventContent::text(text.to_uppercase()));
        }
        DefaultTranscoder.transcode(event, caps)
    }
}

/// C-88: the transcoding strategy is replaceable through the builder, and
/// max_length still applies to what it produces.
#[tokio::test]
async fn c88_custom_transcoder_via_builder() {
    let src = RecordingChannel::websocket("src");
    let sms = text_only_sms("sms");
    let ws = RecordingChannel::websocket("ws");
    let kit = builder_with(&[&src, &sms, &ws])
        .transcoder(Arc::new(Shouting))
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["src", "sms", "ws"]).await;
    kit.process_inbound(msg("src", "u", "quiet please", &room))
        .await
        .unwrap();
    kit.process_inbound(msg("src", "u", &"x".repeat(2000), &room))
        .await
        .unwrap();
    assert_eq!(sms.delivered_texts()[0], "QUIET PLEASE");
    assert_eq!(sms.delivered_texts()[1], "X".repeat(1600));
    assert_eq!(ws.delivered_texts()[0], "quiet please");
}
