//! Room model and lifecycle (checklist 3.1, C-01..C-14): status gates at
//! every entry point, close racing commits, timers, reopen, archive, reads
//! after close, organization scoping and lifecycle notifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use roomkit_core::clock::{Clock, ManualClock};
use roomkit_core::hooks::SideEffects;
use roomkit_core::model::*;
use roomkit_core::store::RoomQuery;
use roomkit_core::*;
use roomkit_testkit::*;
use tokio::sync::mpsc;

use crate::util::*;

/// C-01: a room carries every field of RFC §5.1, in memory and in JSON.
#[tokio::test]
async fn c01_room_has_every_rfc_field() {
    let kit = RoomKit::builder()
        .clock(Arc::new(ManualClock::new(t0())))
        .build()
        .unwrap();
    let mut meta = Map::new();
    meta.insert("topic".into(), "billing".into());
    let room = kit
        .create_room(CreateRoom {
            id: Some("r".into()),
            organization_id: Some("org-1".into()),
            metadata: meta.clone(),
            inactive_after_seconds: Some(60),
            closed_after_seconds: Some(120),
        })
        .await
        .unwrap();
    assert_eq!(room.id, "r");
    assert_eq!(room.organization_id.as_deref(), Some("org-1"));
    assert_eq!(room.status, RoomStatus::Active);
    assert_eq!(room.created_at, t0());
    assert_eq!(room.updated_at, t0());
    assert_eq!(room.closed_at, None);
    assert_eq!(room.timers.inactive_after_seconds, Some(60));
    assert_eq!(room.timers.closed_after_seconds, Some(120));
    assert_eq!(room.metadata, meta);
    assert_eq!(room.event_count, 0);
    assert_eq!(room.latest_index, None);

    let json = serde_json::to_value(kit.get_room(&room.id).await.unwrap()).unwrap();
    for key in [
        "id",
        "organization_id",
        "status",
        "created_at",
        "updated_at",
        "closed_at",
        "timers",
        "metadata",
        "event_count",
        "latest_index",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    for key in [
        "inactive_after_seconds",
        "closed_after_seconds",
        "last_activity_at",
    ] {
        assert!(json["timers"].get(key).is_some(), "missing timers.{key}");
    }
    assert_eq!(json["status"], "active");
    assert_eq!(json["created_at"], "2025-01-01T00:00:00.000Z");
}

/// C-02: ACTIVE and PAUSED accept events; an event into a PAUSED room
/// resumes it (D9) and emits `room_resumed`.
#[tokio::test]
async fn c02_active_and_paused_accept_events() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let log = FrameworkLog::start(&kit);

    let r = send(&kit, "r", "ws", "while active").await;
    assert!(!r.blocked);

    let paused = kit.pause_room(&"r".into()).await.unwrap();
    assert_eq!(paused.status, RoomStatus::Paused);
    let r = send(&kit, "r", "ws", "while paused").await;
    assert!(!r.blocked, "{r:?}");
    assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
    assert_eq!(
        kit.get_room(&"r".into()).await.unwrap().status,
        RoomStatus::Active
    );
    assert!(log.names().await.contains(&"room_resumed"));
    assert_eq!(
        message_texts(&kit, "r").await,
        vec!["while active", "while paused"]
    );
}

async fn closed_room_refuses(kit: &RoomKit, other: &RecordingChannel) {
    let before = kit.get_room(&"r".into()).await.unwrap();
    let before_tl = timeline(kit, "r").await;
    other.clear();

    let r = kit
        .process_inbound(InboundMessage::text("ws", "alice", "late").in_room("r"))
        .await
        .unwrap();
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::RoomClosed));
    assert!(r.event.is_none(), "nothing stored, so no event: {r:?}");

    let r = send(kit, "r", "ws", "late too").await;
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::RoomClosed));
    assert!(r.event.is_none());

    let after = kit.get_room(&"r".into()).await.unwrap();
    assert_eq!(after.event_count, before.event_count);
    assert_eq!(after.latest_index, before.latest_index);
    assert_eq!(timeline(kit, "r").await, before_tl);
    assert!(other.calls().is_empty(), "nothing broadcast");
}

/// C-03: an event for a CLOSED or ARCHIVED room is refused with
/// `room_closed`, not stored (not even as BLOCKED) and not broadcast.
#[tokio::test]
async fn c03_closed_and_archived_rooms_refuse_without_trace() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let kit = kit_with(&[&ws, &other]);
    room_with(&kit, "r", &["ws", "other"]).await;
    send(&kit, "r", "ws", "before").await;

    kit.close_room(&"r".into()).await.unwrap();
    closed_room_refuses(&kit, &other).await;

    kit.archive_room(&"r".into()).await.unwrap();
    closed_room_refuses(&kit, &other).await;
    assert_timeline_invariants(&kit, "r").await;
}

/// C-04: the refusal holds for an explicit-room inbound message, a direct
/// injection, and an event a hook tries to inject after the close.
#[tokio::test(start_paused = true)]
async fn c04_hook_injection_after_close_is_refused() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
    // An observer that, once the room has been closed, tries to add a
    // notice to it through the engine handle it is given.
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::AfterBroadcast,
        "late-notice",
        move |input: HookInput| {
            let tx = tx.clone();
            let mut closed = closed_rx.clone();
            async move {
                let _ = closed.wait_for(|c| *c).await;
                let mut req = SendEvent::text("r", "system", "notice from a hook");
                req.content = Some(EventContent::system("notice", "notice from a hook"));
                let r = input.kit.send_event(req).await;
                let _ = tx.send(r.map_err(|e| e.to_string()));
                Ok(SideEffects::default())
            }
        },
    ));
    send(&kit, "r", "ws", "hello").await;
    let count = kit.get_room(&"r".into()).await.unwrap().event_count;
    kit.close_room(&"r".into()).await.unwrap();
    closed_tx.send(true).unwrap();

    let r = recv(&mut rx).await.unwrap();
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::RoomClosed));
    assert_eq!(kit.get_room(&"r".into()).await.unwrap().event_count, count);
    assert!(
        timeline(&kit, "r")
            .await
            .iter()
            .all(|e| e.content.plain_text() != "notice from a hook")
    );
}

/// C-04: a BEFORE_BROADCAST hook that would inject never runs for an event
/// a closed room refuses, so its injection cannot slip in either.
#[tokio::test]
async fn c04_injecting_hook_never_runs_for_refused_event() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "injector",
        move |_input: HookInput| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(HookResult::allow().inject(InjectedEvent {
                    event: RoomEvent::system(EventType::System, EventContent::system("x", "y")),
                    target_channel_ids: None,
                }))
            }
        },
    ));
    send(&kit, "r", "ws", "open").await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let open_count = kit.get_room(&"r".into()).await.unwrap().event_count;
    // The message and its injected notice.
    assert_eq!(open_count, 3);

    kit.close_room(&"r".into()).await.unwrap();
    let r = send(&kit, "r", "ws", "closed").await;
    assert_eq!(r.reason, Some(BlockReason::RoomClosed));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "hook must not run");
    assert_eq!(
        kit.get_room(&"r".into()).await.unwrap().event_count,
        open_count
    );
}

/// C-04: an AI reply that finishes after the room closed is refused; it is
/// neither stored nor delivered.
#[tokio::test(start_paused = true)]
async fn c04_late_ai_response_after_close_is_refused() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("too late");
    ai.delay(Duration::from_secs(3));
    let kit = kit_with(&[&ws, &ai]);
    room_with(&kit, "r", &["ws", "ai"]).await;
    let log = FrameworkLog::start(&kit);

    let k = kit.clone();
    let task = tokio::spawn(async move {
        k.process_inbound(InboundMessage::text("ws", "alice", "question").in_room("r"))
            .await
    });
    // Wait until the AI is "generating" (called, still sleeping).
    wait_until(|| !ai.seen_message_texts().is_empty()).await;
    kit.close_room(&"r".into()).await.unwrap();
    let r = task.await.unwrap().unwrap();
    assert!(!r.blocked, "the question itself was committed before close");

    assert_eq!(message_texts(&kit, "r").await, vec!["question"]);
    assert!(
        ws.delivered_texts().is_empty(),
        "{:?}",
        ws.delivered_texts()
    );
    let refused: Vec<_> = log
        .events()
        .await
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                FrameworkEvent::EventRefused {
                    reason: BlockReason::RoomClosed,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(refused.len(), 1, "one refusal for the late reply");
    assert_timeline_invariants(&kit, "r").await;
}

/// C-05: close waits for the room lock held by an in-flight commit; the
/// event commits first, and nothing commits after the close.
#[tokio::test(start_paused = true)]
async fn c05_close_waits_for_commit_under_lock() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let gate = Arc::new(tokio::sync::Notify::new());
    let (entered_tx, mut entered_rx) = mpsc::unbounded_channel();
    let g = gate.clone();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "slow-gate",
        move |_input: HookInput| {
            let g = g.clone();
            let tx = entered_tx.clone();
            async move {
                let _ = tx.send(());
                g.notified().await;
                Ok(HookResult::allow())
            }
        },
    ));
    let k = kit.clone();
    let sender = tokio::spawn(async move { send(&k, "r", "ws", "racing").await });
    recv(&mut entered_rx).await;

    let k = kit.clone();
    let closer = tokio::spawn(async move { k.close_room(&"r".into()).await });
    settle().await;
    assert!(!closer.is_finished(), "close must wait for the room lock");
    assert_eq!(
        kit.get_room(&"r".into()).await.unwrap().status,
        RoomStatus::Active
    );

    gate.notify_one();
    let r = sender.await.unwrap();
    assert!(!r.blocked, "committed before the close: {r:?}");
    closer.await.unwrap().unwrap();
    assert_eq!(message_texts(&kit, "r").await, vec!["racing"]);
    let r = send(&kit, "r", "ws", "after").await;
    assert_eq!(r.reason, Some(BlockReason::RoomClosed));
}

/// C-05: many sends racing a close each either commit before it or are
/// refused; the store never sees an event write after the status write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c05_close_races_many_concurrent_sends() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let store = Arc::new(LoggingStore::default());
    let kit = RoomKit::builder()
        .store(store.clone())
        .channel(ws.arc())
        .channel(other.arc())
        .build()
        .unwrap();
    room_with(&kit, "r", &["ws", "other"]).await;

    let mut tasks = Vec::new();
    for i in 0..60 {
        let k = kit.clone();
        tasks.push(tokio::spawn(async move {
            k.send_event(SendEvent::text("r", "ws", format!("m{i}")))
                .await
                .unwrap()
        }));
        if i == 30 {
            let k = kit.clone();
            tasks.push(tokio::spawn(async move {
                k.close_room(&"r".into()).await.unwrap();
                InboundResult {
                    event: None,
                    blocked: false,
                    reason: None,
                    delivery_results: Default::default(),
                }
            }));
        }
    }
    let mut committed = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match (r.blocked, r.reason, r.event) {
            (false, None, Some(e)) => committed.push(e.content.plain_text()),
            (false, None, None) => {} // the closer
            (true, Some(BlockReason::RoomClosed), None) => refused += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(committed.len() + refused, 60);
    let mut stored = message_texts(&kit, "r").await;
    stored.sort();
    committed.sort();
    assert_eq!(stored, committed, "exactly the committed sends are stored");

    let writes = store.writes();
    let close_at = writes
        .iter()
        .position(|w| *w == Write::Status(RoomStatus::Closed))
        .expect("close was written");
    assert!(
        writes[close_at..]
            .iter()
            .all(|w| !matches!(w, Write::Event { .. })),
        "an event was written after the close: {writes:?}"
    );
    assert_timeline_invariants(&kit, "r").await;
}

/// C-06: a refusal is signalled with an `event_refused` framework event.
#[tokio::test]
async fn c06_refusal_emits_framework_event() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    kit.close_room(&"r".into()).await.unwrap();
    let log = FrameworkLog::start(&kit);
    send(&kit, "r", "ws", "refused").await;
    let events = log.events().await;
    assert!(
        events.contains(&FrameworkEvent::EventRefused {
            room_id: "r".into(),
            reason: BlockReason::RoomClosed,
        }),
        "{events:?}"
    );
}

/// C-07: the close itself is observable although the room refuses events:
/// status and closed_at change, `room_closed` is emitted and ON_ROOM_CLOSED
/// runs with the closed room.
#[tokio::test(start_paused = true)]
async fn c07_close_is_observable() {
    let clock = ManualClock::new(t0());
    let kit = RoomKit::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::OnRoomClosed,
        "on-close",
        move |input: HookInput| {
            let tx = tx.clone();
            async move {
                if let HookPayload::Room(r) = &input.payload {
                    let _ = tx.send(r.clone());
                }
                Ok(SideEffects::default())
            }
        },
    ));
    kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    let log = FrameworkLog::start(&kit);
    clock.advance(Duration::from_secs(5));
    let closed = kit.close_room(&"r".into()).await.unwrap();
    assert_eq!(closed.status, RoomStatus::Closed);
    assert_eq!(closed.closed_at, Some(t0() + chrono::Duration::seconds(5)));

    let from_hook = recv(&mut rx).await;
    assert_eq!(from_hook.id, "r");
    assert_eq!(from_hook.status, RoomStatus::Closed);
    assert!(log.events().await.contains(&FrameworkEvent::RoomClosed {
        room_id: "r".into()
    }));
}

/// C-08: history, participants and bindings stay readable when closed and
/// when archived.
#[tokio::test]
async fn c08_closed_and_archived_rooms_stay_readable() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let first = kit
        .process_inbound(InboundMessage::text("ws", "alice", "hi").in_room("r"))
        .await
        .unwrap()
        .event
        .unwrap();
    let tl = timeline(&kit, "r").await;
    let participants = kit.list_participants(&"r".into()).await.unwrap();
    let bindings = kit.list_bindings(&"r".into()).await.unwrap();
    assert_eq!(participants.len(), 1);
    assert_eq!(bindings.len(), 1);

    for step in ["close", "archive"] {
        match step {
            "close" => kit.close_room(&"r".into()).await.unwrap(),
            _ => kit.archive_room(&"r".into()).await.unwrap(),
        };
        assert_eq!(timeline(&kit, "r").await, tl, "{step}");
        assert_eq!(
            kit.list_participants(&"r".into()).await.unwrap(),
            participants
        );
        assert_eq!(kit.list_bindings(&"r".into()).await.unwrap(), bindings);
        assert_eq!(
            kit.get_event(&"r".into(), &first.id).await.unwrap().id,
            first.id
        );
        assert!(kit.get_room(&"r".into()).await.is_ok());
        assert!(
            kit.list_tasks(&"r".into(), &Default::default())
                .await
                .is_ok()
        );
        assert!(kit.list_observations(&"r".into()).await.is_ok());
    }
}

/// C-09: a CLOSED room can be reopened and accepts events again.
#[tokio::test]
async fn c09_reopened_room_accepts_events() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let log = FrameworkLog::start(&kit);
    kit.close_room(&"r".into()).await.unwrap();
    assert!(send(&kit, "r", "ws", "refused").await.blocked);

    let room = kit.reopen_room(&"r".into()).await.unwrap();
    assert_eq!(room.status, RoomStatus::Active);
    assert_eq!(room.closed_at, None);
    let r = send(&kit, "r", "ws", "accepted").await;
    assert!(!r.blocked);
    assert_eq!(message_texts(&kit, "r").await, vec!["accepted"]);
    assert!(log.names().await.contains(&"room_reopened"));
}

/// C-09: ARCHIVED is terminal: no status change leaves it and it refuses
/// events exactly like CLOSED.
#[tokio::test]
async fn c09_archived_is_terminal() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let archived = kit.archive_room(&"r".into()).await.unwrap();
    assert_eq!(archived.status, RoomStatus::Archived);
    assert!(archived.closed_at.is_some());
    for to in [RoomStatus::Active, RoomStatus::Paused, RoomStatus::Closed] {
        let err = kit.set_room_status(&"r".into(), to).await.unwrap_err();
        assert!(
            matches!(
                err,
                RoomKitError::IllegalTransition {
                    from: RoomStatus::Archived,
                    ..
                }
            ),
            "{to:?}: {err:?}"
        );
    }
    assert!(kit.reopen_room(&"r".into()).await.is_err());
    let r = send(&kit, "r", "ws", "x").await;
    assert_eq!(r.reason, Some(BlockReason::RoomClosed));
    assert_eq!(
        kit.get_room(&"r".into()).await.unwrap().status,
        RoomStatus::Archived
    );
}

/// C-10: after close no still-attached channel can append, by any route,
/// and binding changes on a closed room add nothing to its timeline.
#[tokio::test]
async fn c10_attached_channels_cannot_append_after_close() {
    let ws = RecordingChannel::websocket("ws");
    let sms = RecordingChannel::sms("sms");
    let late = RecordingChannel::websocket("late");
    let kit = kit_with(&[&ws, &sms, &late]);
    room_with(&kit, "r", &["ws", "sms"]).await;
    kit.close_room(&"r".into()).await.unwrap();
    let count = kit.get_room(&"r".into()).await.unwrap().event_count;

    for ch in ["ws", "sms"] {
        let r = kit
            .process_inbound(InboundMessage::text(ch, "+15550001", "x").in_room("r"))
            .await
            .unwrap();
        assert_eq!(r.reason, Some(BlockReason::RoomClosed), "{ch}");
        let r = send(&kit, "r", ch, "y").await;
        assert_eq!(r.reason, Some(BlockReason::RoomClosed), "{ch}");
    }
    // Bindings remain (closing does not detach) ...
    assert_eq!(kit.list_bindings(&"r".into()).await.unwrap().len(), 2);
    // ... and binding changes leave no timeline trace on a closed room.
    kit.mute_channel(&"r".into(), &"ws".into()).await.unwrap();
    kit.attach_channel(&"r".into(), &"late".into(), AttachOptions::default())
        .await
        .unwrap();
    assert_eq!(
        send(&kit, "r", "late", "z").await.reason,
        Some(BlockReason::RoomClosed)
    );
    assert_eq!(kit.get_room(&"r".into()).await.unwrap().event_count, count);
    assert!(
        ws.calls()
            .iter()
            .all(|c| c.event.event_type != EventType::Message)
    );
}

async fn timed_kit(clock: &ManualClock) -> RoomKit {
    let kit = RoomKit::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    kit.create_room(CreateRoom {
        id: Some("r".into()),
        inactive_after_seconds: Some(60),
        closed_after_seconds: Some(120),
        ..CreateRoom::default()
    })
    .await
    .unwrap();
    kit
}

/// C-11: without events, ACTIVE becomes PAUSED after
/// `inactive_after_seconds`, then CLOSED after `closed_after_seconds` in
/// PAUSED; not a second earlier.
#[tokio::test]
async fn c11_timers_pause_then_close() {
    let clock = ManualClock::new(t0());
    let kit = timed_kit(&clock).await;
    let log = FrameworkLog::start(&kit);
    let status = || async { kit.get_room(&"r".into()).await.unwrap().status };

    clock.advance(Duration::from_secs(59));
    assert_eq!(kit.tick_timers().await.unwrap(), 0);
    assert_eq!(status().await, RoomStatus::Active);

    clock.advance(Duration::from_secs(1));
    assert_eq!(kit.tick_timers().await.unwrap(), 1);
    assert_eq!(status().await, RoomStatus::Paused);

    clock.advance(Duration::from_secs(119));
    assert_eq!(kit.tick_timers().await.unwrap(), 0);
    assert_eq!(status().await, RoomStatus::Paused);

    clock.advance(Duration::from_secs(1));
    assert_eq!(kit.tick_timers().await.unwrap(), 1);
    assert_eq!(status().await, RoomStatus::Closed);

    // A closed room has no timer left to run.
    clock.advance(Duration::from_secs(10_000));
    assert_eq!(kit.tick_timers().await.unwrap(), 0);
    assert_eq!(status().await, RoomStatus::Closed);
    let names = log.names().await;
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "room_paused" || **n == "room_closed")
            .collect::<Vec<_>>(),
        vec![&"room_paused", &"room_closed"]
    );
}

/// C-11: an event into a PAUSED room resumes it, which stops the close
/// timer; the inactivity timer then counts from that event.
#[tokio::test]
async fn c11_event_in_paused_room_cancels_close_timer() {
    let ws = RecordingChannel::websocket("ws");
    let clock = ManualClock::new(t0());
    let kit = RoomKit::builder()
        .clock(Arc::new(clock.clone()))
        .channel(ws.arc())
        .build()
        .unwrap();
    kit.create_room(CreateRoom {
        id: Some("r".into()),
        inactive_after_seconds: Some(60),
        closed_after_seconds: Some(120),
        ..CreateRoom::default()
    })
    .await
    .unwrap();
    kit.attach_channel(&"r".into(), &"ws".into(), AttachOptions::default())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(kit.tick_timers().await.unwrap(), 1);
    clock.advance(Duration::from_secs(100));
    assert!(!send(&kit, "r", "ws", "back").await.blocked);
    let room = kit.get_room(&"r".into()).await.unwrap();
    assert_eq!(room.status, RoomStatus::Active);

    // 120 s after the pause would have closed it; the room is active now
    // and only 59 s of inactivity have passed.
    clock.advance(Duration::from_secs(59));
    assert_eq!(kit.tick_timers().await.unwrap(), 0);
    assert_eq!(
        kit.get_room(&"r".into()).await.unwrap().status,
        RoomStatus::Active
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(kit.tick_timers().await.unwrap(), 1);
    assert_eq!(
        kit.get_room(&"r".into()).await.unwrap().status,
        RoomStatus::Paused
    );
}

/// C-12: each DELIVERED commit sets `timers.last_activity_at` to the
/// event's time, restarting the inactivity clock.
#[tokio::test]
async fn c12_commit_restarts_inactivity_clock() {
    let ws = RecordingChannel::websocket("ws");
    let clock = ManualClock::new(t0());
    let kit = RoomKit::builder()
        .clock(Arc::new(clock.clone()))
        .channel(ws.arc())
        .build()
        .unwrap();
    kit.create_room(CreateRoom {
        id: Some("r".into()),
        inactive_after_seconds: Some(60),
        ..CreateRoom::default()
    })
    .await
    .unwrap();
    kit.attach_channel(&"r".into(), &"ws".into(), AttachOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(50));
        let ev = send(&kit, "r", "ws", "still here").await.event.unwrap();
        assert_eq!(ev.created_at, clock.now());
        let room = kit.get_room(&"r".into()).await.unwrap();
        assert_eq!(room.timers.last_activity_at, Some(ev.created_at));
        assert_eq!(kit.tick_timers().await.unwrap(), 0);
    }
    clock.advance(Duration::from_secs(60));
    assert_eq!(kit.tick_timers().await.unwrap(), 1);
}

/// C-13: creation, pause, close and archive each emit their framework
/// event with the listed data and fire their hook (no archive hook exists).
#[tokio::test(start_paused = true)]
async fn c13_lifecycle_framework_events_and_hooks() {
    let kit = RoomKit::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for trigger in [
        HookTrigger::OnRoomCreated,
        HookTrigger::OnRoomPaused,
        HookTrigger::OnRoomClosed,
    ] {
        let tx = tx.clone();
        kit.add_hook(HookRegistration::asynchronous(
            trigger,
            format!("observe-{trigger}"),
            move |input: HookInput| {
                let tx = tx.clone();
                async move {
                    if let HookPayload::Room(r) = &input.payload {
                        let _ = tx.send((input.trigger, r.id.clone(), r.status));
                    }
                    Ok(SideEffects::default())
                }
            },
        ));
    }
    let log = FrameworkLog::start(&kit);
    kit.create_room(CreateRoom {
        id: Some("r".into()),
        organization_id: Some("acme".into()),
        ..CreateRoom::default()
    })
    .await
    .unwrap();
    assert_eq!(
        recv(&mut rx).await,
        (HookTrigger::OnRoomCreated, "r".into(), RoomStatus::Active)
    );
    kit.pause_room(&"r".into()).await.unwrap();
    assert_eq!(
        recv(&mut rx).await,
        (HookTrigger::OnRoomPaused, "r".into(), RoomStatus::Paused)
    );
    kit.close_room(&"r".into()).await.unwrap();
    assert_eq!(
        recv(&mut rx).await,
        (HookTrigger::OnRoomClosed, "r".into(), RoomStatus::Closed)
    );
    kit.archive_room(&"r".into()).await.unwrap();
    settle().await;
    assert!(rx.try_recv().is_err(), "no hook fires for archive");

    let lifecycle: Vec<FrameworkEvent> = log
        .events()
        .await
        .into_iter()
        .filter(|e| e.name().starts_with("room_"))
        .collect();
    assert_eq!(
        lifecycle,
        vec![
            FrameworkEvent::RoomCreated {
                room_id: "r".into(),
                organization_id: Some("acme".into()),
            },
            FrameworkEvent::RoomPaused {
                room_id: "r".into()
            },
            FrameworkEvent::RoomClosed {
                room_id: "r".into()
            },
            FrameworkEvent::RoomArchived {
                room_id: "r".into()
            },
        ]
    );
}

/// C-13 with D3: a room the inbound pipeline creates emits `room_created`,
/// and its ON_ROOM_CREATED hooks finish before the message is broadcast,
/// so a channel they attach receives it.
#[tokio::test]
async fn c13_auto_created_room_runs_on_room_created_first() {
    let sms = RecordingChannel::sms("sms");
    let ai = RecordingChannel::ai("ai");
    let kit = kit_with(&[&sms, &ai]);
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::OnRoomCreated,
        "attach-ai",
        |input: HookInput| async move {
            if let HookPayload::Room(r) = &input.payload {
                input
                    .kit
                    .attach_channel(&r.id, &"ai".into(), AttachOptions::default())
                    .await
                    .map_err(|e| roomkit_core::HookError::new(e.to_string()))?;
            }
            Ok(SideEffects::default())
        },
    ));
    let log = FrameworkLog::start(&kit);
    let r = kit
        .process_inbound(InboundMessage::text("sms", "+15550002", "hello"))
        .await
        .unwrap();
    let ev = r.event.unwrap();
    assert_eq!(ai.seen_message_texts(), vec!["hello"]);
    let created: Vec<_> = log
        .events()
        .await
        .into_iter()
        .filter(|e| matches!(e, FrameworkEvent::RoomCreated { .. }))
        .collect();
    assert_eq!(
        created,
        vec![FrameworkEvent::RoomCreated {
            room_id: ev.room_id.clone(),
            organization_id: None,
        }]
    );
}

/// C-14: room listings are scoped by organization (and status), and never
/// return another organization's rooms.
#[tokio::test]
async fn c14_list_rooms_is_scoped_by_organization() {
    let kit = RoomKit::new();
    for (id, org) in [
        ("a1", Some("org-a")),
        ("a2", Some("org-a")),
        ("b1", Some("org-b")),
        ("n1", None),
    ] {
        kit.create_room(CreateRoom {
            id: Some(id.into()),
            organization_id: org.map(str::to_owned),
            ..CreateRoom::default()
        })
        .await
        .unwrap();
    }
    kit.close_room(&"a2".into()).await.unwrap();
    let ids = |rooms: Vec<Room>| {
        rooms
            .into_iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>()
    };

    let q = |org: &str, status: Option<RoomStatus>| RoomQuery {
        organization_id: Some(org.into()),
        status,
        ..RoomQuery::default()
    };
    assert_eq!(
        ids(kit.list_rooms(&q("org-a", None)).await.unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(
        ids(kit.list_rooms(&q("org-b", None)).await.unwrap()),
        ["b1"]
    );
    assert_eq!(
        ids(kit
            .list_rooms(&q("org-a", Some(RoomStatus::Active)))
            .await
            .unwrap()),
        ["a1"]
    );
    assert_eq!(
        ids(kit
            .list_rooms(&q("org-b", Some(RoomStatus::Closed)))
            .await
            .unwrap()),
        Vec::<String>::new()
    );
    assert!(kit.list_rooms(&q("org-c", None)).await.unwrap().is_empty());
    assert_eq!(
        ids(kit.list_rooms(&RoomQuery::default()).await.unwrap()),
        ["a1", "a2", "b1", "n1"]
    );
    let latest = kit
        .store()
        .find_latest_room(&q("org-b", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.id, "b1");
}
