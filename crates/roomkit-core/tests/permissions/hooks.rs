//! The hook engine (RFC §9): registration and filters, the sync chain in
//! priority order, MODIFY, the failure policy, async hooks, HookResult,
//! injected events, blocking, and AFTER_BROADCAST.

use std::sync::Arc;
use std::time::Duration;

use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;
use serde_json::json;

use crate::support::*;

const BB: HookTrigger = HookTrigger::BeforeBroadcast;
const AB: HookTrigger = HookTrigger::AfterBroadcast;

fn allow(_: &HookInput) -> Result<HookResult, HookError> {
    Ok(HookResult::allow())
}

/// A kit with two websocket channels `a` and `b` in room `r`.
async fn two_party(hooks: Vec<HookRegistration>) -> (RoomKit, RoomId, RecordingChannel) {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let kit = kit_with(&[&a, &b], hooks);
    let room = room_with(&kit, "r", &[("a", rw()), ("b", rw())]).await;
    (kit, room, b)
}

/// C-57: a registration has trigger, execution, handler, name, priority
/// (default 0), timeout (default 30 s) and optional filters.
#[test]
fn c57_registration_fields_and_defaults() {
    let trace = Trace::default();
    let s = sync_hook(BB, "gate", &trace, allow);
    assert_eq!(s.trigger, BB);
    assert_eq!(s.name, "gate");
    assert_eq!(s.execution(), HookExecution::Sync);
    assert_eq!(s.priority, 0);
    assert_eq!(s.timeout, Duration::from_secs(30));
    assert!(s.channel_types.is_none() && s.channel_ids.is_none() && s.directions.is_none());

    let tuned = s
        .priority(-3)
        .timeout(Duration::from_millis(250))
        .channel_types([ChannelType::Sms])
        .channel_ids(["sms-1"])
        .directions([ChannelDirection::Inbound]);
    assert_eq!(tuned.priority, -3);
    assert_eq!(tuned.timeout, Duration::from_millis(250));
    assert_eq!(tuned.channel_types, Some(vec![ChannelType::Sms]));
    assert_eq!(tuned.channel_ids, Some(vec![ChannelId::from("sms-1")]));
    assert_eq!(tuned.directions, Some(vec![ChannelDirection::Inbound]));

    let a = async_hook(AB, "watch", &trace);
    assert_eq!(a.execution(), HookExecution::Async);
    assert_eq!(a.priority, 0);
    assert_eq!(a.timeout, Duration::from_secs(30));
    assert_eq!(BB.default_execution(), HookExecution::Sync);
    assert_eq!(AB.default_execution(), HookExecution::Async);
    assert_eq!(BB.as_str(), "before_broadcast");
    assert_eq!(AB.as_str(), "after_broadcast");
}

/// C-57: a per-room hook fires only in its room, sync and async alike.
#[tokio::test]
async fn c57_room_hook_fires_only_in_its_room() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let kit = kit_with(&[&a, &b], vec![]);
    let one = room_with(&kit, "one", &[("a", rw()), ("b", rw())]).await;
    let two = room_with(&kit, "two", &[("a", rw()), ("b", rw())]).await;
    let trace = Trace::default();
    kit.add_room_hook(
        one.clone(),
        sync_hook(BB, "only-one", &trace, |_| Ok(HookResult::block("no"))),
    );
    kit.add_room_hook(one.clone(), async_hook(AB, "after-one", &trace));
    let r1 = say(&kit, &one, "a", "in one").await;
    let r2 = say(&kit, &two, "a", "in two").await;
    kit.idle().await;
    assert!(r1.blocked);
    assert_eq!(r1.event.unwrap().blocked_by.as_deref(), Some("only-one"));
    assert!(!r2.blocked);
    assert_eq!(b.delivered_texts(), vec!["in two"]);
    assert_eq!(trace.get(), vec!["only-one:in one"]);

    // The async one: allow room one again, then check it only sees room one.
    assert!(kit.remove_hook("only-one"));
    say(&kit, &one, "a", "again one").await;
    say(&kit, &two, "a", "again two").await;
    kit.idle().await;
    assert_eq!(trace.get(), vec!["only-one:in one", "after-one:again one"]);
}

/// C-58: channel_types, channel_ids and directions filters are honoured.
#[tokio::test]
async fn c58_filters_on_type_id_and_direction() {
    let ws = RecordingChannel::websocket("ws");
    let ws2 = RecordingChannel::websocket("ws2");
    let sms = RecordingChannel::sms("sms");
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.content.plain_text() == "ask ai" {
            ChannelOutput::respond(reply("ai answer"))
        } else {
            ChannelOutput::empty()
        }
    });
    let trace = Trace::default();
    let hooks = vec![
        sync_hook(BB, "sms-only", &trace, allow).channel_types([ChannelType::Sms]),
        sync_hook(BB, "ws2-only", &trace, allow).channel_ids(["ws2"]),
        sync_hook(BB, "outbound-only", &trace, allow).directions([ChannelDirection::Outbound]),
        async_hook(AB, "after-sms", &trace).channel_types([ChannelType::Sms]),
    ];
    let kit = kit_with(&[&ws, &ws2, &sms, &ai], hooks);
    let room = room_with(
        &kit,
        "r",
        &[("ws", rw()), ("ws2", rw()), ("sms", rw()), ("ai", rw())],
    )
    .await;
    say(&kit, &room, "ws", "from ws").await;
    say(&kit, &room, "ws2", "from ws2").await;
    say(&kit, &room, "sms", "from sms").await;
    say(&kit, &room, "ws", "ask ai").await;
    kit.idle().await;
    let mut got = trace.get();
    got.sort();
    assert_eq!(
        got,
        vec![
            "after-sms:from sms",
            "outbound-only:ai answer",
            "sms-only:from sms",
            "ws2-only:from ws2",
        ]
    );
}

/// C-59: sync hooks run one after another in priority order (lower
/// first, registration order on ties), each seeing the event and a room
/// context.
#[tokio::test]
async fn c59_sync_hooks_run_in_priority_order() {
    let trace = Trace::default();
    let with_ctx = |name: &str, p: i32| {
        let t = trace.clone();
        sync_hook(BB, name, &trace, move |i| {
            let ok = i.context.as_ref().is_some_and(|ctx| {
                ctx.bindings.len() == 2 && i.room_id.as_ref() == Some(&ctx.room.id)
            });
            if !ok {
                t.push("missing context");
            }
            Ok(HookResult::allow())
        })
        .priority(p)
    };
    let hooks = vec![
        with_ctx("p5", 5),
        with_ctx("p-1", -1),
        with_ctx("p1", 1),
        with_ctx("p0-first", 0),
        with_ctx("p0-second", 0),
    ];
    let (kit, room, _b) = two_party(hooks).await;
    say(&kit, &room, "a", "x").await;
    assert_eq!(
        trace.get(),
        vec!["p-1:x", "p0-first:x", "p0-second:x", "p1:x", "p5:x"]
    );
}

/// C-59: the first BLOCK stops the chain; a later hook's side effects
/// never appear.
#[tokio::test]
async fn c59_first_block_stops_the_chain() {
    let trace = Trace::default();
    let hooks = vec![
        sync_hook(BB, "late", &trace, |_| {
            Ok(HookResult::allow()
                .observation(observation("late_saw_it"))
                .task(task("late_task")))
        })
        .priority(1),
        sync_hook(BB, "gate", &trace, |_| Ok(HookResult::block("nope"))).priority(0),
    ];
    let (kit, room, b) = two_party(hooks).await;
    let r = say(&kit, &room, "a", "bad").await;
    kit.idle().await;
    assert!(r.blocked);
    assert_eq!(trace.get(), vec!["gate:bad"]);
    assert!(observation_types(&kit, &room).await.is_empty());
    assert!(task_types(&kit, &room).await.is_empty());
    assert!(b.seen_message_texts().is_empty());
}

/// C-60: MODIFY replaces the payload for later hooks, for storage and for
/// broadcast, even when the replacement text is empty; the engine keeps
/// the event's identity and source.
#[tokio::test]
async fn c60_modify_replaces_payload_even_when_empty() {
    let trace = Trace::default();
    let hooks = vec![
        sync_hook(BB, "redact", &trace, |i| {
            let mut e = i.event().unwrap().clone();
            e.content = EventContent::text("");
            e.index = 999;
            e.source = EventSource::system();
            Ok(HookResult::modify_event(e))
        }),
        sync_hook(BB, "after-redact", &trace, allow).priority(1),
    ];
    let (kit, room, b) = two_party(hooks).await;
    let r = say(&kit, &room, "a", "my card is 4111").await;
    assert!(!r.blocked);
    assert_eq!(trace.get(), vec!["redact:my card is 4111", "after-redact:"]);
    let ev = r.event.unwrap();
    let stored = kit.get_event(&room, &ev.id).await.unwrap();
    assert_eq!(stored.content.as_text(), Some(""));
    assert_eq!(stored.status, EventStatus::Delivered);
    assert_eq!(stored.index, 2);
    assert_eq!(stored.source.channel_id.as_str(), "a");
    assert_eq!(b.delivered_texts(), vec![""]);
    assert!(
        !message_texts(&kit, &room)
            .await
            .iter()
            .any(|t| t.contains("4111"))
    );
}

/// C-61: a failing sync hook is treated as ALLOW (fail-open): an error, a
/// panic, a MODIFY with a payload of the wrong type and a MODIFY without a
/// payload each emit hook_error, and the chain and the event go on.
#[tokio::test]
async fn c61_failing_sync_hooks_fail_open() {
    let trace = Trace::default();
    let hooks = vec![
        sync_hook(BB, "errs", &trace, |_| Err(HookError::new("boom"))).priority(0),
        sync_hook(BB, "panics", &trace, |_| panic!("hook exploded")).priority(1),
        sync_hook(BB, "wrong-type", &trace, |_| {
            Ok(HookResult::modify(HookPayload::Text("not an event".into())))
        })
        .priority(2),
        sync_hook(BB, "no-payload", &trace, |_| {
            let mut r = HookResult::allow();
            r.action = HookAction::Modify;
            Ok(r)
        })
        .priority(3),
        sync_hook(BB, "last", &trace, allow).priority(4),
    ];
    let (kit, room, b) = two_party(hooks).await;
    let log = FrameworkLog::start(&kit);
    let r = say(&kit, &room, "a", "survives").await;
    assert!(!r.blocked, "{r:?}");
    let ev = r.event.unwrap();
    assert_eq!(ev.status, EventStatus::Delivered);
    assert_eq!(ev.content.as_text(), Some("survives"));
    assert_eq!(b.delivered_texts(), vec!["survives"]);
    assert_eq!(trace.get().last().unwrap(), "last:survives");

    let errors: Vec<(String, HookTrigger, String)> = framework_named(&log, "hook_error")
        .await
        .into_iter()
        .map(|e| match e {
            FrameworkEvent::HookError {
                hook_name,
                trigger,
                error,
            } => (hook_name, trigger, error),
            _ => unreachable!(),
        })
        .collect();
    let names: Vec<&str> = errors.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, vec!["errs", "panics", "wrong-type", "no-payload"]);
    assert!(errors.iter().all(|(_, t, _)| *t == BB));
    assert!(errors[0].2.contains("boom"));
    assert!(errors[1].2.contains("hook exploded"), "{errors:?}");
    assert!(framework_named(&log, "event_blocked").await.is_empty());
}

/// C-61: a sync hook that exceeds its timeout is treated as ALLOW and
/// hook_timeout{hook_name, trigger, timeout_ms} is emitted.
#[tokio::test(start_paused = true)]
async fn c61_sync_hook_timeout_fails_open() {
    let trace = Trace::default();
    let slow = HookRegistration::sync(BB, "slow", |_i: HookInput| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(HookResult::block("too late to matter"))
    })
    .timeout(Duration::from_secs(2));
    let hooks = vec![slow, sync_hook(BB, "next", &trace, allow).priority(1)];
    let (kit, room, b) = two_party(hooks).await;
    let log = FrameworkLog::start(&kit);
    let r = say(&kit, &room, "a", "patience").await;
    assert!(!r.blocked);
    assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
    assert_eq!(b.delivered_texts(), vec!["patience"]);
    assert_eq!(trace.get(), vec!["next:patience"]);
    let timeouts = framework_named(&log, "hook_timeout").await;
    assert!(
        matches!(
            &timeouts[..],
            [FrameworkEvent::HookTimeout { hook_name, trigger, timeout_ms: 2000 }]
                if hook_name == "slow" && *trigger == BB
        ),
        "{timeouts:?}"
    );
}

/// C-61 with D14: the default hook timeout is 30 s.
#[tokio::test(start_paused = true)]
async fn c61_default_hook_timeout_is_thirty_seconds() {
    let slow = HookRegistration::sync(BB, "sleepy", |_i: HookInput| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(HookResult::block("never"))
    });
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let kit = RoomKit::builder()
        .channel(a.arc())
        .channel(b.arc())
        .hook(slow)
        .process_timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &[("a", rw()), ("b", rw())]).await;
    let log = FrameworkLog::start(&kit);
    let r = say(&kit, &room, "a", "hello").await;
    assert!(!r.blocked);
    let timeouts = framework_named(&log, "hook_timeout").await;
    assert!(
        matches!(
            &timeouts[..],
            [FrameworkEvent::HookTimeout {
                timeout_ms: 30_000,
                ..
            }]
        ),
        "{timeouts:?}"
    );
}

/// C-62: BEFORE_TTS and ON_TRANSCRIPTION, and only they, fail closed.
#[test]
fn c62_fail_closed_triggers_are_before_tts_and_on_transcription() {
    let closed: Vec<HookTrigger> = HookTrigger::all().filter(|t| t.fails_closed()).collect();
    assert_eq!(
        closed,
        vec![HookTrigger::OnTranscription, HookTrigger::BeforeTts]
    );
    assert!(!BB.fails_closed() && !AB.fails_closed());
}

/// C-63: async hooks run after the operation, concurrently with each other;
/// they cannot block, and their errors and panics are contained and
/// reported while their side effects are kept.
#[tokio::test(start_paused = true)]
async fn c63_async_hooks_run_after_concurrently_and_are_contained() {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let trace = Trace::default();
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let meeting = |name: &'static str| {
        let barrier = barrier.clone();
        let trace = trace.clone();
        let b = b.clone();
        HookRegistration::asynchronous(AB, name, move |input: HookInput| {
            let barrier = barrier.clone();
            let trace = trace.clone();
            let b = b.clone();
            async move {
                let text = input.event().unwrap().content.plain_text();
                // The operation is complete: the delivery already happened.
                assert!(b.delivered_texts().contains(&text));
                // Both hooks must be running at once to pass the barrier.
                barrier.wait().await;
                trace.push(format!("{name}:{text}"));
                Ok(SideEffects {
                    tasks: vec![task(name)],
                    observations: vec![],
                })
            }
        })
        .timeout(Duration::from_secs(5))
    };
    let hooks = vec![
        meeting("left"),
        meeting("right"),
        HookRegistration::asynchronous(AB, "errs", |_i: HookInput| async {
            Err(HookError::new("async boom"))
        }),
        HookRegistration::asynchronous(AB, "panics", |_i: HookInput| async {
            panic!("async hook exploded")
        }),
    ];
    let kit = kit_with(&[&a, &b], hooks);
    let room = room_with(&kit, "r", &[("a", rw()), ("b", rw())]).await;
    let log = FrameworkLog::start(&kit);
    let r = say(&kit, &room, "a", "go").await;
    assert!(!r.blocked);
    assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
    kit.idle().await;

    let mut got = trace.get();
    got.sort();
    assert_eq!(got, vec!["left:go", "right:go"]);
    assert!(framework_named(&log, "hook_timeout").await.is_empty());
    let mut errs: Vec<String> = framework_named(&log, "hook_error")
        .await
        .into_iter()
        .map(|e| match e {
            FrameworkEvent::HookError { hook_name, .. } => hook_name,
            _ => unreachable!(),
        })
        .collect();
    errs.sort();
    assert_eq!(errs, vec!["errs", "panics"]);
    let mut tasks = task_types(&kit, &room).await;
    tasks.sort();
    assert_eq!(tasks, vec!["left", "right"]);
    // The room keeps working afterwards.
    assert!(!say(&kit, &room, "a", "still fine").await.blocked);
}

/// C-64: HookResult carries action, a replacement payload, reason,
/// injected events, tasks, observations and metadata; a blocking hook's
/// reason and metadata are kept on the blocked event.
#[tokio::test]
async fn c64_hook_result_fields() {
    let r = HookResult::block("policy")
        .inject(InjectedEvent::text("note", ["b"]))
        .task(task("t"))
        .observation(observation("o"));
    assert_eq!(r.action, HookAction::Block);
    assert_eq!(r.reason.as_deref(), Some("policy"));
    assert!(r.event.is_none());
    assert_eq!(r.injected_events.len(), 1);
    assert_eq!(
        r.injected_events[0].target_channel_ids,
        Some(vec![ChannelId::from("b")])
    );
    assert_eq!(r.tasks.len(), 1);
    assert_eq!(r.observations.len(), 1);
    assert!(r.metadata.is_empty());
    assert_eq!(HookResult::allow().action, HookAction::Allow);
    let m = HookResult::modify(HookPayload::Text("x".into()));
    assert_eq!(m.action, HookAction::Modify);
    assert!(matches!(m.event, Some(HookPayload::Text(ref s)) if s == "x"));

    let trace = Trace::default();
    let hook = sync_hook(BB, "scorer", &trace, |_| {
        let mut r = HookResult::block("toxic");
        r.metadata.insert("score".into(), json!(0.93));
        Ok(r)
    });
    let (kit, room, _b) = two_party(vec![hook]).await;
    let ev = say(&kit, &room, "a", "rude words").await.event.unwrap();
    let stored = kit.get_event(&room, &ev.id).await.unwrap();
    assert_eq!(stored.metadata.get("block_reason"), Some(&json!("toxic")));
    assert_eq!(stored.metadata.get("hook"), Some(&json!({"score": 0.93})));
}

/// C-65 with D7: an injected event with no targets is stored only; one
/// with targets is delivered to exactly those channels.
#[tokio::test]
async fn c65_injected_event_targets() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let c = RecordingChannel::sms("c");
    let ai = RecordingChannel::ai("ai");
    let all = [&a, &b, &c, &ai];
    let trace = Trace::default();
    let hook = sync_hook(BB, "injector", &trace, |i| {
        if i.event().unwrap().content.plain_text() != "trigger" {
            return Ok(HookResult::allow());
        }
        let mut store_only = InjectedEvent::text("audit only", Vec::<ChannelId>::new());
        store_only.target_channel_ids = None;
        Ok(HookResult::allow()
            .inject(store_only)
            .inject(InjectedEvent::text("for b and ai", ["b", "ai"])))
    });
    let kit = kit_with(&all, vec![hook]);
    let room = room_with(
        &kit,
        "r",
        &[("a", rw()), ("b", rw()), ("c", rw()), ("ai", rw())],
    )
    .await;
    let r = say(&kit, &room, "a", "trigger").await;
    kit.idle().await;
    let idx = r.event.unwrap().index;

    let msgs = messages(&kit, &room).await;
    let texts: Vec<_> = msgs.iter().map(|e| e.content.plain_text()).collect();
    assert_eq!(texts, vec!["trigger", "audit only", "for b and ai"]);
    for (n, e) in msgs[1..].iter().enumerate() {
        assert_eq!(e.index, idx + 1 + n as u64);
        assert_eq!(e.status, EventStatus::Delivered);
        assert_eq!(e.source.channel_id.as_str(), SYSTEM_CHANNEL_ID);
        assert_eq!(e.metadata.get("injected_by"), Some(&json!("injector")));
    }
    for ch in all {
        assert!(
            !ch.seen_message_texts().contains(&"audit only".to_string()),
            "{} saw a store-only injection",
            ch.id()
        );
    }
    let who: Vec<String> = all
        .iter()
        .filter(|ch| {
            ch.seen_message_texts()
                .contains(&"for b and ai".to_string())
        })
        .map(|ch| ch.id().to_string())
        .collect();
    assert_eq!(who, vec!["b", "ai"]);
    assert_eq!(b.delivered_texts(), vec!["trigger", "for b and ai"]);
    assert_eq!(c.delivered_texts(), vec!["trigger"]);
    assert!(ai.delivered().is_empty());
}

/// C-66: a blocking BEFORE_BROADCAST hook: the event is stored BLOCKED with
/// blocked_by = hook name, no channel is called, the hook's injections
/// reach their targets, its side effects are kept, the result is blocked,
/// event_blocked is emitted, and AFTER_BROADCAST does not run (D16).
#[tokio::test]
async fn c66_block_stores_blocked_and_keeps_effects() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("never");
    let trace = Trace::default();
    let hooks = vec![
        sync_hook(BB, "moderator", &trace, |_| {
            Ok(HookResult::block("profanity")
                .inject(InjectedEvent::text("Your message was blocked", ["a"]))
                .task(task("review"))
                .observation(observation("blocked_content")))
        }),
        async_hook(AB, "after", &trace),
    ];
    let kit = kit_with(&[&a, &b, &ai], hooks);
    let room = room_with(&kit, "r", &[("a", rw()), ("b", rw()), ("ai", rw())]).await;
    let log = FrameworkLog::start(&kit);
    let r = say(&kit, &room, "a", "bad word").await;
    kit.idle().await;

    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::Hook));
    assert!(r.delivery_results.is_empty());
    let ev = r.event.unwrap();
    let stored = kit.get_event(&room, &ev.id).await.unwrap();
    assert_eq!(stored.status, EventStatus::Blocked);
    assert_eq!(stored.blocked_by.as_deref(), Some("moderator"));
    assert_eq!(stored.content.as_text(), Some("bad word"));

    for ch in [&b, &ai] {
        assert!(ch.seen_message_texts().is_empty(), "{} was called", ch.id());
        assert!(ch.delivered().is_empty());
    }
    assert_eq!(a.delivered_texts(), vec!["Your message was blocked"]);
    assert_eq!(task_types(&kit, &room).await, vec!["review"]);
    assert_eq!(
        observation_types(&kit, &room).await,
        vec!["blocked_content"]
    );
    let blocked = framework_named(&log, "event_blocked").await;
    assert!(
        matches!(
            &blocked[..],
            [FrameworkEvent::EventBlocked { room_id, event_id, hook_name }]
                if *room_id == room && *event_id == ev.id && hook_name == "moderator"
        ),
        "{blocked:?}"
    );
    assert_eq!(trace.get(), vec!["moderator:bad word"]);
    assert!(framework_named(&log, "event_processed").await.is_empty());
}

/// C-67: an allowing hook can still inject events (committed after the
/// event and delivered after it) and add tasks and observations.
#[tokio::test]
async fn c67_allowing_hook_injects_and_adds_side_effects() {
    let trace = Trace::default();
    let hook = sync_hook(BB, "helper", &trace, |_| {
        Ok(HookResult::allow()
            .inject(InjectedEvent::text("tip: say please", ["b"]))
            .task(task("follow_up"))
            .observation(observation("intent")))
    });
    let (kit, room, b) = two_party(vec![hook]).await;
    let r = say(&kit, &room, "a", "gimme").await;
    kit.idle().await;
    assert!(!r.blocked);
    let ev = r.event.unwrap();
    assert_eq!(ev.status, EventStatus::Delivered);
    assert_eq!(b.delivered_texts(), vec!["gimme", "tip: say please"]);
    let msgs = messages(&kit, &room).await;
    assert_eq!(msgs[1].content.as_text(), Some("tip: say please"));
    assert_eq!(msgs[1].index, ev.index + 1);
    assert_eq!(task_types(&kit, &room).await, vec!["follow_up"]);
    assert_eq!(observation_types(&kit, &room).await, vec!["intent"]);
    let tasks = kit.list_tasks(&room, &Default::default()).await.unwrap();
    assert_eq!(tasks[0].created_by.as_deref(), Some("helper"));
}

/// C-68: AFTER_BROADCAST fires once per broadcast event (responses
/// included), after its delivery set, and not for lifecycle, injected or
/// blocked events.
#[tokio::test]
async fn c68_after_broadcast_once_per_event_after_delivery() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.content.plain_text() == "hi" {
            ChannelOutput::respond(reply("hello human"))
        } else {
            ChannelOutput::empty()
        }
    });
    let trace = Trace::default();
    let delivered_then = Trace::default();
    let seen_b = b.clone();
    let witness = delivered_then.clone();
    let hooks = vec![
        HookRegistration::asynchronous(AB, "after", move |input: HookInput| {
            let seen_b = seen_b.clone();
            let witness = witness.clone();
            async move {
                let text = input.event().unwrap().content.plain_text();
                let done = seen_b.delivered_texts().contains(&text);
                witness.push(format!("{text}:{done}"));
                Ok(SideEffects::default())
            }
        }),
        sync_hook(BB, "gate", &trace, |i| {
            let text = i.event().unwrap().content.plain_text();
            Ok(match text.as_str() {
                "blocked" => HookResult::block("no"),
                "hi" => HookResult::allow().inject(InjectedEvent::text("injected", ["b"])),
                _ => HookResult::allow(),
            })
        }),
    ];
    let kit = kit_with(&[&a, &b, &ai], hooks);
    let room = room_with(&kit, "r", &[("a", rw()), ("b", rw()), ("ai", rw())]).await;
    say(&kit, &room, "a", "hi").await;
    say(&kit, &room, "a", "blocked").await;
    kit.mute_channel(&room, &"ai".into()).await.unwrap();
    kit.idle().await;

    let mut got = delivered_then.get();
    got.sort();
    assert_eq!(got, vec!["hello human:true", "hi:true"]);
}

/// C-68: AFTER_BROADCAST runs outside the room lock, and a slow one does
/// not hold back the next commit in the room.
#[tokio::test(start_paused = true)]
async fn c68_slow_after_broadcast_does_not_delay_next_commit() {
    let trace = Trace::default();
    let t = trace.clone();
    let slow = HookRegistration::asynchronous(AB, "slow", move |input: HookInput| {
        let t = t.clone();
        async move {
            let text = input.event().unwrap().content.plain_text();
            if text == "first" {
                t.push("slow:start");
                tokio::time::sleep(Duration::from_secs(120)).await;
                t.push("slow:end");
            }
            Ok(SideEffects::default())
        }
    })
    .timeout(Duration::from_secs(600));
    let t2 = trace.clone();
    let locker = HookRegistration::asynchronous(AB, "writes-back", move |input: HookInput| {
        let t2 = t2.clone();
        async move {
            let ev = input.event().unwrap();
            if ev.content.plain_text() == "first" {
                // Writing to the same room from the hook needs the room
                // lock: this would time out if the hook ran under it.
                let r = input
                    .kit
                    .send_event(SendEvent::text(ev.room_id.clone(), "system", "from hook"))
                    .await
                    .map_err(|e| HookError::new(e.to_string()))?;
                t2.push(format!("writes-back:{}", r.event.unwrap().index));
            }
            Ok(SideEffects::default())
        }
    })
    .timeout(Duration::from_secs(5));
    let (kit, room, b) = two_party(vec![slow, locker]).await;
    let log = FrameworkLog::start(&kit);
    let first = say(&kit, &room, "a", "first").await;
    while !trace.get().contains(&"slow:start".to_string()) {
        tokio::task::yield_now().await;
    }
    let second = say(&kit, &room, "a", "second").await;
    // The second event committed while the slow hook was still sleeping.
    assert_eq!(second.event.unwrap().status, EventStatus::Delivered);
    let snapshot = trace.get();
    assert!(snapshot.contains(&"slow:start".to_string()), "{snapshot:?}");
    assert!(!snapshot.contains(&"slow:end".to_string()), "{snapshot:?}");
    assert!(b.delivered_texts().contains(&"second".to_string()));

    // Let the paused clock jump past the slow hook's sleep in one step.
    tokio::time::sleep(Duration::from_secs(121)).await;
    kit.idle().await;
    let done = trace.get();
    assert!(done.contains(&"slow:end".to_string()));
    assert!(
        done.iter().any(|s| s.starts_with("writes-back:")),
        "{done:?}"
    );
    assert!(framework_named(&log, "hook_timeout").await.is_empty());
    assert!(framework_named(&log, "hook_error").await.is_empty());
    let texts = message_texts(&kit, &room).await;
    assert!(texts.contains(&"from hook".to_string()));
    assert!(first.event.unwrap().index < kit.get_room(&room).await.unwrap().event_count);
}
