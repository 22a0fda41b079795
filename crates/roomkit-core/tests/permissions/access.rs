//! The permission model (RFC §7): access, muting, visibility, self-skip,
//! no implicit widening, and per-reader history.

use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::support::*;

/// The ids of the channels whose on_event() saw a message with this text.
fn readers_of(text: &str, channels: &[&RecordingChannel]) -> Vec<String> {
    channels
        .iter()
        .filter(|c| c.seen_message_texts().iter().any(|t| t == text))
        .map(|c| c.id().to_string())
        .collect()
}

/// The ids of the channels that were delivered a message with this text.
fn recipients_of(text: &str, channels: &[&RecordingChannel]) -> Vec<String> {
    channels
        .iter()
        .filter(|c| c.delivered_texts().iter().any(|t| t == text))
        .map(|c| c.id().to_string())
        .collect()
}

/// C-45: the access table. READ_WRITE reads and writes, READ_ONLY only
/// reads, WRITE_ONLY only writes, NONE does neither but keeps its binding.
#[tokio::test]
async fn c45_access_table_including_none() {
    let src = RecordingChannel::websocket("src");
    let rw_ch = RecordingChannel::websocket("rw");
    let ro = RecordingChannel::websocket("ro");
    let wo = RecordingChannel::websocket("wo");
    let none = RecordingChannel::websocket("none");
    let all = [&src, &rw_ch, &ro, &wo, &none];
    let kit = kit_with(&all, vec![]);
    let room = room_with(
        &kit,
        "r",
        &[
            ("src", rw()),
            ("rw", access(Access::ReadWrite)),
            ("ro", access(Access::ReadOnly)),
            ("wo", access(Access::WriteOnly)),
            ("none", access(Access::None)),
        ],
    )
    .await;

    // Reading.
    say(&kit, &room, "src", "hello").await;
    assert_eq!(readers_of("hello", &all), vec!["rw", "ro"]);
    assert_eq!(recipients_of("hello", &all), vec!["rw", "ro"]);

    // Writing.
    let expect = [
        ("rw", None),
        ("ro", Some("source_read_only")),
        ("wo", None),
        ("none", Some("source_read_only")),
    ];
    for (ch, blocked_by) in expect {
        let text = format!("from {ch}");
        let r = say(&kit, &room, ch, &text).await;
        let ev = r.event.unwrap();
        assert_eq!(r.blocked, blocked_by.is_some(), "{ch}");
        assert_eq!(ev.blocked_by.as_deref(), blocked_by, "{ch}");
        let heard = recipients_of(&text, &all);
        if blocked_by.is_some() {
            assert_eq!(ev.status, EventStatus::Blocked);
            assert!(heard.is_empty(), "{ch} was heard by {heard:?}");
        } else {
            assert_eq!(ev.status, EventStatus::Delivered);
            assert!(heard.contains(&"src".to_string()), "{ch}: {heard:?}");
        }
    }

    // NONE: the binding is still there, just inactive.
    let b = kit.get_binding(&room, &"none".into()).await.unwrap();
    assert_eq!(b.access, Access::None);
    assert!(none.calls().is_empty(), "NONE was called");
    assert!(wo.seen().is_empty() && wo.delivered().is_empty());
}

/// C-46: a channel gets on_event() exactly when its access can read and
/// the source's visibility includes it, over every combination.
#[tokio::test]
async fn c46_on_event_iff_readable_and_visible() {
    let accesses = [
        Access::ReadWrite,
        Access::ReadOnly,
        Access::WriteOnly,
        Access::None,
    ];
    for (n, acc) in accesses.into_iter().enumerate() {
        for listed in [true, false] {
            let src = RecordingChannel::websocket("src");
            let target = RecordingChannel::websocket("target");
            let ai = RecordingChannel::ai("ai");
            let kit = kit_with(&[&src, &target, &ai], vec![]);
            let vis = if listed { "target,ai" } else { "ai" };
            let room = room_with(
                &kit,
                &format!("r{n}{listed}"),
                &[
                    ("src", visible(vis)),
                    ("target", access(acc)),
                    ("ai", access(acc)),
                ],
            )
            .await;
            say(&kit, &room, "src", "x").await;
            let should = acc.can_read() && listed;
            assert_eq!(
                target.seen_message_texts() == vec!["x"],
                should,
                "access {acc:?}, listed {listed}"
            );
            assert_eq!(target.delivered().len(), usize::from(should));
            // The AI is always listed: only its access decides.
            assert_eq!(
                ai.seen_message_texts() == vec!["x"],
                acc.can_read(),
                "ai access {acc:?}"
            );
        }
    }
}

/// C-47: an inbound or injected event from a source that cannot write is
/// stored BLOCKED (source_read_only / source_muted) and not broadcast; with
/// both, read-only wins (D15); event_blocked names the rule.
#[tokio::test]
async fn c47_source_that_cannot_write_is_stored_blocked() {
    let ro = RecordingChannel::websocket("ro");
    let mu = RecordingChannel::websocket("mu");
    let both = RecordingChannel::websocket("both");
    let reader = RecordingChannel::websocket("reader");
    let all = [&ro, &mu, &both, &reader];
    let kit = kit_with(&all, vec![]);
    let log = FrameworkLog::start(&kit);
    let room = room_with(
        &kit,
        "r",
        &[
            ("ro", access(Access::ReadOnly)),
            ("mu", muted()),
            (
                "both",
                AttachOptions {
                    access: Access::ReadOnly,
                    muted: true,
                    ..AttachOptions::default()
                },
            ),
            ("reader", rw()),
        ],
    )
    .await;
    let before = kit.get_room(&room).await.unwrap().event_count;

    let cases = [
        ("ro", "source_read_only"),
        ("mu", "source_muted"),
        ("both", "source_read_only"),
    ];
    let mut n = 0;
    for (ch, rule) in cases {
        for via_inject in [false, true] {
            let text = format!("{ch}-{via_inject}");
            let r = if via_inject {
                inject(&kit, &room, ch, &text).await
            } else {
                say(&kit, &room, ch, &text).await
            };
            n += 1;
            assert!(r.blocked, "{text}");
            assert_eq!(r.reason, Some(BlockReason::Permission));
            assert!(r.delivery_results.is_empty());
            let ev = r.event.unwrap();
            assert_eq!(ev.status, EventStatus::Blocked);
            assert_eq!(ev.blocked_by.as_deref(), Some(rule), "{text}");
            let stored = kit.get_event(&room, &ev.id).await.unwrap();
            assert_eq!(stored.status, EventStatus::Blocked);
            assert_eq!(stored.content.plain_text(), text);
        }
    }
    kit.idle().await;
    assert!(readers_of("ro-false", &all).is_empty());
    assert!(reader.seen_message_texts().is_empty());
    assert!(reader.delivered().is_empty());
    // Each blocked event took an index (D1).
    let after = kit.get_room(&room).await.unwrap().event_count;
    assert_eq!(after, before + n);
    let blocked = framework_named(&log, "event_blocked").await;
    let names: Vec<String> = blocked
        .iter()
        .map(|e| match e {
            FrameworkEvent::EventBlocked { hook_name, .. } => hook_name.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "source_read_only",
            "source_read_only",
            "source_muted",
            "source_muted",
            "source_read_only",
            "source_read_only"
        ]
    );
}

/// C-48 with D5: responses of a muted or read-only channel are not
/// broadcast; they are stored BLOCKED with the rule that stopped them.
#[tokio::test]
async fn c48_responses_of_muted_or_read_only_channels_are_not_broadcast() {
    for (opts, rule) in [
        (muted(), "source_muted"),
        (access(Access::ReadOnly), "source_read_only"),
    ] {
        let ws = RecordingChannel::websocket("ws");
        let sms = RecordingChannel::sms("sms");
        let ai = RecordingChannel::ai("ai");
        ai.always_reply("I would say");
        let kit = kit_with(&[&ws, &sms, &ai], vec![]);
        let room = room_with(&kit, "r", &[("ws", rw()), ("sms", rw()), ("ai", opts)]).await;
        say(&kit, &room, "ws", "question").await;
        kit.idle().await;
        // The AI still read the question.
        assert_eq!(ai.seen_message_texts(), vec!["question"]);
        assert!(ws.delivered().is_empty(), "{rule}");
        assert_eq!(sms.delivered_texts(), vec!["question"], "{rule}");
        let msgs = messages(&kit, &room).await;
        assert_eq!(msgs.len(), 2);
        let answer = &msgs[1];
        assert_eq!(answer.source.channel_id.as_str(), "ai");
        assert_eq!(answer.status, EventStatus::Blocked);
        assert_eq!(answer.blocked_by.as_deref(), Some(rule));
        assert_eq!(answer.chain_depth, 1);
    }
}

/// C-49: muted and read-only channels still read, and their tasks and
/// observations are kept even though their responses are blocked.
#[tokio::test]
async fn c49_side_effects_of_muted_and_read_only_channels_are_kept() {
    let ws = RecordingChannel::websocket("ws");
    let muted_ai = RecordingChannel::ai("muted-ai");
    let observer = RecordingChannel::ai("observer");
    muted_ai.respond_with(|e, _| {
        if e.event_type != EventType::Message {
            return ChannelOutput::empty();
        }
        reply_with_effects(
            Some("hushed"),
            vec![task("follow_up")],
            vec![observation("muted_note")],
        )
    });
    observer.respond_with(|e, _| {
        if e.event_type != EventType::Message {
            return ChannelOutput::empty();
        }
        reply_with_effects(None, vec![], vec![observation("sentiment")])
    });
    let kit = kit_with(&[&ws, &muted_ai, &observer], vec![]);
    let room = room_with(
        &kit,
        "r",
        &[
            ("ws", rw()),
            ("muted-ai", muted()),
            ("observer", access(Access::ReadOnly)),
        ],
    )
    .await;
    say(&kit, &room, "ws", "hello").await;
    kit.idle().await;
    assert_eq!(muted_ai.seen_message_texts(), vec!["hello"]);
    assert_eq!(observer.seen_message_texts(), vec!["hello"]);
    assert_eq!(task_types(&kit, &room).await, vec!["follow_up"]);
    let mut obs = observation_types(&kit, &room).await;
    obs.sort();
    assert_eq!(obs, vec!["muted_note", "sentiment"]);
    let stored = kit.list_observations(&room).await.unwrap();
    let from_observer = stored
        .iter()
        .find(|o| o.observation_type == "sentiment")
        .unwrap();
    assert_eq!(
        from_observer.source_channel_id.as_ref().map(|c| c.as_str()),
        Some("observer")
    );
    assert!(ws.delivered().is_empty());
}

/// C-49: side effects of a hook that allowed an event are kept even when
/// the event is then blocked because its source is muted (rule 2 + rule 3).
#[tokio::test]
async fn c49_hook_side_effects_kept_for_event_blocked_by_rule_2() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let trace = Trace::default();
    let hook = sync_hook(HookTrigger::BeforeBroadcast, "auditor", &trace, |_| {
        Ok(HookResult::allow()
            .task(task("review"))
            .observation(observation("audit")))
    });
    let kit = kit_with(&[&ws, &other], vec![hook]);
    let room = room_with(&kit, "r", &[("ws", muted()), ("other", rw())]).await;
    let r = say(&kit, &room, "ws", "while muted").await;
    assert!(r.blocked);
    assert_eq!(r.event.unwrap().blocked_by.as_deref(), Some("source_muted"));
    kit.idle().await;
    assert_eq!(trace.get(), vec!["auditor:while muted"]);
    assert_eq!(task_types(&kit, &room).await, vec!["review"]);
    assert_eq!(observation_types(&kit, &room).await, vec!["audit"]);
    assert!(other.seen_message_texts().is_empty());
}

/// C-50: every visibility form on the source binding: all, none, transport,
/// intelligence, a single id and a comma-separated list.
#[tokio::test]
async fn c50_every_visibility_form() {
    let cases: [(&str, &[&str]); 6] = [
        ("all", &["t1", "t2", "a1", "a2"]),
        ("none", &[]),
        ("transport", &["t1", "t2"]),
        ("intelligence", &["a1", "a2"]),
        ("t2", &["t2"]),
        ("t1,a2", &["t1", "a2"]),
    ];
    for (n, (vis, expected)) in cases.into_iter().enumerate() {
        let src = RecordingChannel::websocket("src");
        let t1 = RecordingChannel::websocket("t1");
        let t2 = RecordingChannel::sms("t2");
        let a1 = RecordingChannel::ai("a1");
        let a2 = RecordingChannel::ai("a2");
        let all = [&src, &t1, &t2, &a1, &a2];
        let kit = kit_with(&all, vec![]);
        let room = room_with(
            &kit,
            &format!("r{n}"),
            &[
                ("src", visible(vis)),
                ("t1", rw()),
                ("t2", rw()),
                ("a1", rw()),
                ("a2", rw()),
            ],
        )
        .await;
        let r = say(&kit, &room, "src", "secret").await;
        assert!(!r.blocked, "{vis}");
        let ev = r.event.unwrap();
        // Stored and delivered in the timeline sense, whatever the audience.
        assert_eq!(ev.status, EventStatus::Delivered, "{vis}");
        assert_eq!(ev.visibility.to_string(), vis);
        assert_eq!(readers_of("secret", &all), expected.to_vec(), "{vis}");
        let transports: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|c| c.starts_with('t'))
            .collect();
        assert_eq!(recipients_of("secret", &all), transports.to_vec(), "{vis}");
        assert_eq!(message_texts(&kit, &room).await, vec!["secret"]);
    }
}

/// C-50: an event may narrow its source binding's visibility, never widen
/// it; the stamped result decides.
#[tokio::test]
async fn c50_event_visibility_narrows_binding_visibility() {
    let src = RecordingChannel::websocket("src");
    let t1 = RecordingChannel::websocket("t1");
    let t2 = RecordingChannel::websocket("t2");
    let ai = RecordingChannel::ai("ai");
    let all = [&src, &t1, &t2, &ai];
    let kit = kit_with(&all, vec![]);
    let room = room_with(
        &kit,
        "r",
        &[
            ("src", visible("transport")),
            ("t1", rw()),
            ("t2", rw()),
            ("ai", rw()),
        ],
    )
    .await;
    let narrow = SendEvent {
        visibility: Some("t1".parse().unwrap()),
        ..SendEvent::text(room.clone(), "src", "narrow")
    };
    kit.send_event(narrow).await.unwrap();
    let wide = SendEvent {
        visibility: Some(Visibility::All),
        ..SendEvent::text(room.clone(), "src", "wide")
    };
    kit.send_event(wide).await.unwrap();
    let to_ai = SendEvent {
        visibility: Some("ai".parse().unwrap()),
        ..SendEvent::text(room.clone(), "src", "to-ai")
    };
    let r = kit.send_event(to_ai).await.unwrap();
    assert_eq!(readers_of("narrow", &all), vec!["t1"]);
    assert_eq!(readers_of("wide", &all), vec!["t1", "t2"]);
    // A transport-only source cannot reach the AI by naming it.
    assert!(readers_of("to-ai", &all).is_empty());
    assert_eq!(r.event.unwrap().visibility, Visibility::None);
}

/// C-51: a channel never gets its own event back, even when its visibility
/// names itself.
#[tokio::test]
async fn c51_channel_never_receives_its_own_event() {
    let me = RecordingChannel::websocket("me");
    let you = RecordingChannel::websocket("you");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("reply");
    let kit = kit_with(&[&me, &you, &ai], vec![]);
    let room = room_with(
        &kit,
        "r",
        &[("me", visible("me,you,ai")), ("you", rw()), ("ai", rw())],
    )
    .await;
    say(&kit, &room, "me", "mine").await;
    kit.idle().await;
    assert!(!me.seen_message_texts().contains(&"mine".to_string()));
    assert!(!me.delivered_texts().contains(&"mine".to_string()));
    assert_eq!(you.delivered_texts(), vec!["mine", "reply"]);
    // Nor does the AI see its own reply.
    assert_eq!(ai.seen_message_texts(), vec!["mine"]);
    // Its reply does reach the original sender.
    assert_eq!(me.delivered_texts(), vec!["reply"]);
}

/// C-52: re-attaching a channel after detaching it does not bring back its
/// earlier, wider binding: the new binding is exactly what the integrator
/// asked for, and a message from it is treated accordingly.
#[tokio::test]
async fn c52_reattach_does_not_restore_wider_permissions() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("from ai");
    let kit = kit_with(&[&ws, &ai], vec![]);
    let room = room_with(&kit, "r", &[("ws", rw()), ("ai", rw())]).await;
    let wide = kit.get_binding(&room, &"ai".into()).await.unwrap();
    assert!(wide.can_write() && wide.visibility == Visibility::All);

    // The integrator narrows, then detaches.
    kit.mute_channel(&room, &"ai".into()).await.unwrap();
    kit.update_binding(
        &room,
        &"ai".into(),
        BindingUpdate {
            access: Some(Access::ReadOnly),
            visibility: Some(Visibility::None),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    kit.detach_channel(&room, &"ai".into()).await.unwrap();

    // Re-attach with narrow options: nothing of the old wide binding returns.
    let narrow = AttachOptions {
        access: Access::ReadOnly,
        muted: true,
        visibility: "ws".parse().unwrap(),
        ..AttachOptions::default()
    };
    let b = kit
        .attach_channel(&room, &"ai".into(), narrow)
        .await
        .unwrap();
    assert_eq!(b.access, Access::ReadOnly);
    assert!(b.muted);
    assert_eq!(b.visibility, "ws".parse().unwrap());
    say(&kit, &room, "ws", "hello").await;
    kit.idle().await;
    assert!(ws.delivered().is_empty(), "the re-attached AI was heard");
    let answer = messages(&kit, &room).await.pop().unwrap();
    assert_eq!(answer.source.channel_id.as_str(), "ai");
    assert_eq!(answer.status, EventStatus::Blocked);
    assert_eq!(answer.blocked_by.as_deref(), Some("source_read_only"));

    // Attaching over an existing binding is refused rather than replacing it.
    let again = kit.attach_channel(&room, &"ai".into(), rw()).await;
    assert!(matches!(
        again,
        Err(RoomKitError::ChannelAlreadyAttached { .. })
    ));
    let still = kit.get_binding(&room, &"ai".into()).await.unwrap();
    assert_eq!(still.access, Access::ReadOnly);
    assert!(still.muted);
}

/// C-53: nothing re-attaches a detached channel: not an inbound message
/// naming the room, not one routed by the default router, not a direct
/// injection, not a hook's targeted injection.
#[tokio::test]
async fn c53_detached_channel_is_never_auto_reattached() {
    let sms = RecordingChannel::sms("sms");
    let ws = RecordingChannel::websocket("ws");
    let trace = Trace::default();
    let hook = sync_hook(HookTrigger::BeforeBroadcast, "poke", &trace, |_| {
        Ok(HookResult::allow().inject(InjectedEvent::text("poke", ["sms"])))
    });
    let kit = kit_with(&[&sms, &ws], vec![hook]);
    let room = room_with(&kit, "r", &[("sms", rw()), ("ws", rw())]).await;
    say(&kit, &room, "sms", "before").await;
    kit.detach_channel(&room, &"sms".into()).await.unwrap();
    kit.idle().await;
    sms.clear();
    let count_before = kit.get_room(&room).await.unwrap().event_count;

    // Explicit room id: refused, nothing stored.
    let explicit = kit
        .process_inbound(InboundMessage::text("sms", "user-1", "explicit").in_room(room.clone()))
        .await;
    assert!(
        matches!(explicit, Err(RoomKitError::ChannelNotAttached { .. })),
        "{explicit:?}"
    );
    // Routed: the same sender's room is found, but the channel stays out.
    let _ = kit
        .process_inbound(InboundMessage::text("sms", "user-1", "routed"))
        .await;
    // Direct injection from the detached channel.
    let injected = kit
        .send_event(SendEvent::text(room.clone(), "sms", "injected"))
        .await;
    assert!(injected.is_err(), "{injected:?}");
    assert_eq!(
        kit.get_room(&room).await.unwrap().event_count,
        count_before,
        "something was stored"
    );

    // A hook's injection naming it does not reach it either.
    say(&kit, &room, "ws", "after").await;
    kit.idle().await;
    assert!(sms.calls().is_empty(), "{:?}", sms.delivered_texts());
    assert!(kit.get_binding(&room, &"sms".into()).await.is_err());
    let bound: Vec<String> = kit
        .list_bindings(&room)
        .await
        .unwrap()
        .iter()
        .map(|b| b.channel_id.to_string())
        .collect();
    assert_eq!(bound, vec!["ws"]);
    let texts = message_texts(&kit, &room).await;
    assert!(
        !texts
            .iter()
            .any(|t| t == "explicit" || t == "routed" || t == "injected")
    );
}

/// A room with a customer transport, a supervisor transport that whispers
/// to one agent only, and two agents.
async fn whisper_room() -> (RoomKit, RoomId, [RecordingChannel; 4]) {
    let customer = RecordingChannel::websocket("customer");
    let supervisor = RecordingChannel::websocket("supervisor");
    let coach = RecordingChannel::ai("coach");
    let helper = RecordingChannel::ai("helper");
    let kit = kit_with(&[&customer, &supervisor, &coach, &helper], vec![]);
    let room = room_with(
        &kit,
        "r",
        &[
            ("customer", rw()),
            ("supervisor", visible("coach")),
            ("coach", rw()),
            ("helper", rw()),
        ],
    )
    .await;
    (kit, room, [customer, supervisor, coach, helper])
}

/// C-54: history rebuilt for a channel never holds an event visibility
/// withheld from it: not the per-reader timeline, not the per-reader
/// context, and not the context a later on_event() call is handed.
#[tokio::test]
async fn c54_rebuilt_history_never_contains_a_whisper_to_another_channel() {
    let (kit, room, [customer, _supervisor, coach, helper]) = whisper_room().await;
    say(&kit, &room, "customer", "I need help").await;
    say(&kit, &room, "supervisor", "offer a discount").await;
    say(&kit, &room, "customer", "anyone there?").await;
    kit.idle().await;

    // At delivery: only the coach was told.
    assert_eq!(coach.seen_message_texts().len(), 3);
    assert_eq!(
        helper.seen_message_texts(),
        vec!["I need help", "anyone there?"]
    );
    assert!(
        !customer
            .delivered_texts()
            .contains(&"offer a discount".into())
    );

    for reader in ["helper", "customer"] {
        let tl = texts_visible_to(&kit, &room, reader).await;
        assert_eq!(tl, vec!["I need help", "anyone there?"], "{reader}");
        let ctx = kit.context_for(&room, &reader.into()).await.unwrap();
        assert!(
            ctx.recent_events
                .iter()
                .all(|e| e.content.plain_text() != "offer a discount"),
            "{reader} context holds the whisper"
        );
    }
    assert!(
        texts_visible_to(&kit, &room, "coach")
            .await
            .contains(&"offer a discount".into())
    );

    // The context handed to the helper's on_event() for the later message
    // is its own view too: a channel that builds a prompt from it must not
    // find the whisper there.
    let calls = helper.calls();
    let last = calls
        .iter()
        .find(|c| c.event.content.plain_text() == "anyone there?")
        .unwrap();
    let leaked: Vec<String> = last
        .context_events
        .iter()
        .map(|e| e.content.plain_text())
        .filter(|t| t == "offer a discount")
        .collect();
    assert!(leaked.is_empty(), "on_event context leaked {leaked:?}");
    // The coach's context for the same message does hold it.
    let coach_call = coach
        .calls()
        .into_iter()
        .find(|c| c.event.content.plain_text() == "anyone there?")
        .unwrap();
    assert!(
        coach_call
            .context_events
            .iter()
            .any(|e| e.content.plain_text() == "offer a discount")
    );
}

/// C-55: a channel always sees its own events in rebuilt history, even
/// ones visible to nobody else and ones that were blocked; hooks read the
/// whole timeline.
#[tokio::test]
async fn c55_own_events_visible_and_hooks_read_everything() {
    let (kit, room, _chs) = whisper_room().await;
    let seen_by_hook = Trace::default();
    let sink = seen_by_hook.clone();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "context-reader",
        move |input: HookInput| {
            let sink = sink.clone();
            async move {
                let ctx = input.context.expect("event hooks get a context");
                for e in &ctx.recent_events {
                    if e.event_type == EventType::Message {
                        sink.push(e.content.plain_text());
                    }
                }
                Ok(HookResult::allow())
            }
        },
    ));
    say(&kit, &room, "supervisor", "whisper one").await;
    kit.mute_channel(&room, &"supervisor".into()).await.unwrap();
    say(&kit, &room, "supervisor", "muted note").await;
    say(&kit, &room, "customer", "hi").await;
    kit.idle().await;

    // The supervisor's own view holds its whisper and its blocked note.
    assert_eq!(
        texts_visible_to(&kit, &room, "supervisor").await,
        vec!["whisper one", "muted note", "hi"]
    );
    let ctx = kit.context_for(&room, &"supervisor".into()).await.unwrap();
    let own: Vec<String> = ctx
        .recent_events
        .iter()
        .filter(|e| e.source.channel_id.as_str() == "supervisor")
        .map(|e| e.content.plain_text())
        .collect();
    assert_eq!(own, vec!["whisper one", "muted note"]);
    // Others do not see the blocked note.
    assert_eq!(
        texts_visible_to(&kit, &room, "coach").await,
        vec!["whisper one", "hi"]
    );
    // The hook, reading before "hi" was committed, saw the whisper and the
    // blocked note although the customer may see neither.
    let hook_saw = seen_by_hook.get();
    assert!(
        hook_saw.contains(&"whisper one".to_string()),
        "{hook_saw:?}"
    );
    assert!(hook_saw.contains(&"muted note".to_string()), "{hook_saw:?}");
}

/// C-56: visibility is stamped on the event at commit: widening the
/// source binding later does not widen its past, and detaching the source
/// does not hide its ordinary history.
#[tokio::test]
async fn c56_visibility_is_stamped_at_commit() {
    let (kit, room, [customer, _supervisor, _coach, helper]) = whisper_room().await;
    say(&kit, &room, "supervisor", "old whisper").await;
    kit.update_binding(
        &room,
        &"supervisor".into(),
        BindingUpdate {
            visibility: Some(Visibility::All),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    say(&kit, &room, "supervisor", "new announcement").await;
    kit.idle().await;

    let stamped = messages(&kit, &room).await;
    assert_eq!(stamped[0].visibility, "coach".parse().unwrap());
    assert_eq!(stamped[1].visibility, Visibility::All);
    assert_eq!(
        texts_visible_to(&kit, &room, "helper").await,
        vec!["new announcement"]
    );
    assert_eq!(helper.seen_message_texts(), vec!["new announcement"]);
    assert_eq!(customer.delivered_texts(), vec!["new announcement"]);

    // The source detaches: its events stay readable by those they were for.
    say(&kit, &room, "customer", "thanks").await;
    kit.detach_channel(&room, &"customer".into()).await.unwrap();
    assert_eq!(
        texts_visible_to(&kit, &room, "helper").await,
        vec!["new announcement", "thanks"]
    );
    let ctx = kit.context_for(&room, &"helper".into()).await.unwrap();
    assert!(
        ctx.recent_events
            .iter()
            .any(|e| e.content.plain_text() == "thanks")
    );
    // And the coach still has the old whisper.
    assert_eq!(
        texts_visible_to(&kit, &room, "coach").await,
        vec!["old whisper", "new announcement", "thanks"]
    );
}
