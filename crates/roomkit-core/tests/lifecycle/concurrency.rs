//! Robustness under concurrency and failure: many writers keep one room's
//! order; panicking hooks and channels never take a room down.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use roomkit_core::hooks::SideEffects;
use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::util::*;

/// C-27, C-105: writers on several channels, plus AI replies re-entering,
/// keep indexes unique and gap-free, and the timeline, index order and
/// subscription order agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c27_mixed_writers_and_replies_keep_commit_order() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::sms("b");
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.content.as_text().is_some_and(|t| t.ends_with('0')) {
            ChannelOutput::respond(reply("noted"))
        } else {
            ChannelOutput::empty()
        }
    });
    let kit = kit_with(&[&a, &b, &ai]);
    let mut commits = kit.subscribe_timeline();
    room_with(&kit, "r", &["a", "b", "ai"]).await;
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let k = kit.clone();
            tokio::spawn(async move {
                if i % 3 == 0 {
                    k.process_inbound(
                        InboundMessage::text("b", format!("+1{i}"), format!("m{i}")).in_room("r"),
                    )
                    .await
                    .unwrap()
                } else {
                    send(&k, "r", "a", &format!("m{i}")).await
                }
            })
        })
        .collect();
    for t in tasks {
        assert!(!t.await.unwrap().blocked);
    }
    assert_timeline_invariants(&kit, "r").await;
    let tl = timeline(&kit, "r").await;
    // 3 lifecycle markers, 120 messages, 12 replies (i = 0, 10, ..., 110).
    assert_eq!(tl.len(), 3 + 120 + 12);
    let mut order = Vec::new();
    while order.len() < tl.len() {
        order.push(commits.recv().await.unwrap().id.clone());
    }
    assert_eq!(order, tl.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    // Each reply comes after the message it answers.
    for e in tl.iter().filter(|e| e.source.channel_id == "ai") {
        let parent = e.parent_event_id.as_ref().unwrap();
        let p = tl.iter().find(|x| &x.id == parent).unwrap();
        assert!(p.index < e.index);
    }
}

/// A panicking sync BEFORE_BROADCAST hook fails open: the event commits,
/// `hook_error` is emitted, and later messages keep flowing.
#[tokio::test]
async fn panicking_sync_hook_does_not_take_room_down() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let kit = kit_with(&[&ws, &other]);
    room_with(&kit, "r", &["ws", "other"]).await;
    let log = FrameworkLog::start(&kit);
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "explodes",
        |input: HookInput| async move {
            if input.event().and_then(|e| e.content.as_text()) == Some("boom") {
                panic!("hook bug");
            }
            Ok(HookResult::allow())
        },
    ));
    let r = send(&kit, "r", "ws", "boom").await;
    assert!(!r.blocked, "fail-open: {r:?}");
    for i in 0..5 {
        assert!(!send(&kit, "r", "ws", &format!("after {i}")).await.blocked);
    }
    assert_eq!(other.delivered_texts().len(), 6);
    let errors: Vec<_> = log
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e {
            FrameworkEvent::HookError {
                hook_name,
                trigger,
                error,
            } => Some((hook_name, trigger, error)),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "explodes");
    assert_eq!(errors[0].1, HookTrigger::BeforeBroadcast);
    assert!(errors[0].2.contains("hook bug"), "{}", errors[0].2);
    assert_timeline_invariants(&kit, "r").await;
}

/// A panicking async hook is reported as `hook_error` and changes nothing
/// else; other async hooks still run.
#[tokio::test(start_paused = true)]
async fn panicking_async_hook_does_not_take_room_down() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let kit = kit_with(&[&ws, &other]);
    room_with(&kit, "r", &["ws", "other"]).await;
    let log = FrameworkLog::start(&kit);
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::AfterBroadcast,
        "observer-bug",
        |input: HookInput| async move {
            if input.event().is_some() {
                panic!("observer bug");
            }
            Ok(SideEffects::default())
        },
    ));
    let healthy = Arc::new(AtomicUsize::new(0));
    let h = healthy.clone();
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::AfterBroadcast,
        "observer-ok",
        move |_input: HookInput| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(SideEffects::default())
            }
        },
    ));
    for i in 0..3 {
        assert!(!send(&kit, "r", "ws", &format!("m{i}")).await.blocked);
    }
    wait_until(|| healthy.load(Ordering::SeqCst) == 3).await;
    let errors = log
        .events()
        .await
        .into_iter()
        .filter(|e| {
            matches!(e, FrameworkEvent::HookError { hook_name, trigger: HookTrigger::AfterBroadcast, .. } if hook_name == "observer-bug")
        })
        .count();
    assert_eq!(errors, 3);
    assert_eq!(other.delivered_texts(), vec!["m0", "m1", "m2"]);
}

/// A channel that panics in deliver() and on_event() fails only its own
/// deliveries: the event stays DELIVERED, the others receive it, and the
/// channel receives again once it recovers.
#[tokio::test]
async fn panicking_channel_does_not_take_room_down() {
    let ws = RecordingChannel::websocket("ws");
    let bad = RecordingChannel::sms("bad");
    let good = RecordingChannel::websocket("good");
    let ai = RecordingChannel::ai("ai");
    let kit = kit_with(&[&ws, &bad, &good, &ai]);
    room_with(&kit, "r", &["ws", "bad", "good", "ai"]).await;
    bad.panic_on_call(true);
    ai.panic_on_call(true);
    let log = FrameworkLog::start(&kit);

    for i in 0..3 {
        let r = send(&kit, "r", "ws", &format!("m{i}")).await;
        assert!(!r.blocked);
        assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
        assert_eq!(
            r.delivery_results[&ChannelId::from("bad")].status,
            DeliveryStatus::Failed
        );
        assert_eq!(
            r.delivery_results[&ChannelId::from("good")].status,
            DeliveryStatus::Sent
        );
    }
    assert_eq!(good.delivered_texts(), vec!["m0", "m1", "m2"]);
    let failed = log
        .events()
        .await
        .into_iter()
        .filter(|e| matches!(e, FrameworkEvent::DeliveryFailed { channel_id, .. } if channel_id == "bad"))
        .count();
    assert_eq!(failed, 3);

    bad.panic_on_call(false);
    ai.panic_on_call(false);
    send(&kit, "r", "ws", "recovered").await;
    assert_eq!(
        bad.delivered_texts().last().map(String::as_str),
        Some("recovered")
    );
    assert_eq!(
        ai.seen_message_texts().last().map(String::as_str),
        Some("recovered")
    );
    assert_timeline_invariants(&kit, "r").await;
}

/// Concurrent writers while one target panics on every call: indexes stay
/// unique and gap-free and the healthy target gets everything in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_with_panicking_target_keep_order() {
    let ws = RecordingChannel::websocket("ws");
    let bad = RecordingChannel::websocket("bad");
    let good = RecordingChannel::websocket("good");
    let kit = kit_with(&[&ws, &bad, &good]);
    room_with(&kit, "r", &["ws", "bad", "good"]).await;
    bad.panic_on_call(true);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let k = kit.clone();
            tokio::spawn(async move { send(&k, "r", "ws", &format!("m{i}")).await })
        })
        .collect();
    for t in tasks {
        assert!(!t.await.unwrap().blocked);
    }
    assert_timeline_invariants(&kit, "r").await;
    let idx: Vec<u64> = good.delivered().iter().map(|e| e.index).collect();
    assert_eq!(idx, (3..63).collect::<Vec<u64>>());
}
