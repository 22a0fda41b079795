//! The inbound pipeline (RFC §10.1, §13.6), checklist items C-69 to C-79.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_core::model::*;
use roomkit_core::router::{InboundRoomRouter, RouteRequest};
use roomkit_core::store::{RoomQuery, Store};
use roomkit_core::*;
use roomkit_testkit::*;

use crate::support::*;

/// C-69: a message for a channel nobody registered is an error, creates no
/// room and stores nothing, whether or not it names a room.
#[tokio::test]
async fn c69_unregistered_channel_fails_without_side_effects() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    let log = FrameworkLog::start(&kit);

    let err = kit
        .process_inbound(InboundMessage::text("ghost", "+15550000000", "hello"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RoomKitError::ChannelNotRegistered(c) if c.as_str() == "ghost"),
        "{err:?}"
    );
    assert!(
        kit.list_rooms(&RoomQuery::default())
            .await
            .unwrap()
            .is_empty()
    );

    let room = room_with(&kit, "r", &["ws"]).await;
    let before = kit.get_room(&room).await.unwrap();
    let err = kit
        .process_inbound(msg("ghost", "+15550000000", "hello", &room))
        .await
        .unwrap_err();
    assert!(matches!(err, RoomKitError::ChannelNotRegistered(_)));
    let after = kit.get_room(&room).await.unwrap();
    assert_eq!(after.event_count, before.event_count);
    assert!(kit.list_participants(&room).await.unwrap().is_empty());
    assert!(ws.delivered().is_empty());
    let names = log.names().await;
    assert!(!names.contains(&"event_processed"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "room_created").count(), 1);
}

/// A router that counts its calls and always answers with one fixed room.
struct CountingRouter {
    calls: Mutex<Vec<String>>,
    answer: Option<RoomId>,
}

#[async_trait]
impl InboundRoomRouter for CountingRouter {
    async fn route(
        &self,
        request: RouteRequest<'_>,
        store: &dyn Store,
    ) -> Result<Option<Room>, StoreError> {
        self.calls.lock().push(request.sender_id.to_owned());
        match &self.answer {
            Some(id) => store.get_room(id).await,
            None => Ok(None),
        }
    }
}

/// C-70: an explicit room id is used as given; the router is not asked.
#[tokio::test]
async fn c70_explicit_room_id_bypasses_the_router() {
    let ws = RecordingChannel::websocket("ws");
    let router = Arc::new(CountingRouter {
        calls: Mutex::default(),
        answer: Some(RoomId::from("routed")),
    });
    let kit = builder_with(&[&ws]).router(router.clone()).build().unwrap();
    room_with(&kit, "routed", &["ws"]).await;
    let explicit = room_with(&kit, "explicit", &["ws"]).await;

    let r = kit
        .process_inbound(msg("ws", "u1", "to explicit", &explicit))
        .await
        .unwrap();
    assert_eq!(r.event.unwrap().room_id, explicit);
    assert!(router.calls.lock().is_empty(), "router consulted");

    // Without a room id the router decides.
    let r = kit
        .process_inbound(InboundMessage::text("ws", "u1", "to routed"))
        .await
        .unwrap();
    assert_eq!(r.event.unwrap().room_id.as_str(), "routed");
    assert_eq!(router.calls.lock().clone(), vec!["u1".to_owned()]);
}

/// C-70: an explicit room id that does not exist is an error, never an
/// implicit creation (D11).
#[tokio::test]
async fn c70_unknown_explicit_room_is_an_error() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    let err = kit
        .process_inbound(msg("ws", "u1", "hi", &RoomId::from("nowhere")))
        .await
        .unwrap_err();
    assert!(matches!(err, RoomKitError::RoomNotFound(_)), "{err:?}");
    assert!(
        kit.list_rooms(&RoomQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// C-70 and D3: when the router answers null a room is created, the
/// inbound channel is attached, and ON_ROOM_CREATED hooks finish before
/// the first event is planned, so a hook that attaches an AI channel has
/// that AI receive the first message.
#[tokio::test]
async fn c70_router_null_creates_room_attaches_channel_and_runs_room_created_first() {
    let sms = RecordingChannel::sms("sms");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("welcome");
    let order = Arc::new(Mutex::new(Vec::<String>::new()));
    let hook_order = order.clone();
    let attach_ai = HookRegistration::asynchronous(
        HookTrigger::OnRoomCreated,
        "attach_ai",
        move |input: HookInput| {
            let order = hook_order.clone();
            async move {
                let room = input.room_id.clone().unwrap();
                // Let the pipeline run ahead if it were going to.
                tokio::task::yield_now().await;
                input
                    .kit
                    .attach_channel(&room, &ChannelId::from("ai"), AttachOptions::default())
                    .await
                    .map_err(|e| HookError::new(e.to_string()))?;
                order.lock().push("room_created_hook_done".into());
                Ok(SideEffects::default())
            }
        },
    );
    let probe_order = order.clone();
    let before = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "before",
        move |input: HookInput| {
            let order = probe_order.clone();
            async move {
                if input
                    .event()
                    .is_some_and(|e| e.source.channel_id.as_str() == "sms")
                {
                    order.lock().push("before_broadcast".into());
                }
                Ok::<_, HookError>(HookResult::allow())
            }
        },
    );
    let kit = builder_with(&[&sms, &ai])
        .hook(attach_ai)
        .hook(before)
        .build()
        .unwrap();
    let log = FrameworkLog::start(&kit);

    let r = kit
        .process_inbound(InboundMessage::text("sms", "+15551234567", "Bonjour"))
        .await
        .unwrap();
    assert!(!r.blocked);
    let first = r.event.unwrap();
    let rooms = kit.list_rooms(&RoomQuery::default()).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].id, first.room_id);
    let bound: Vec<String> = kit
        .list_bindings(&first.room_id)
        .await
        .unwrap()
        .iter()
        .map(|b| b.channel_id.to_string())
        .collect();
    assert!(bound.contains(&"sms".to_owned()) && bound.contains(&"ai".to_owned()));
    assert_eq!(
        order.lock().clone(),
        vec!["room_created_hook_done", "before_broadcast"]
    );
    assert_eq!(ai.seen_message_texts(), vec!["Bonjour"]);
    assert_eq!(sms.delivered_texts(), vec!["welcome"]);
    assert!(log.names().await.contains(&"room_created"));
}

/// C-71: the context handed to handle_inbound, to BEFORE_BROADCAST hooks
/// and to on_event() holds the room, all its bindings, all its
/// participants and its recent events.
#[tokio::test]
async fn c71_context_has_room_bindings_participants_and_recent_events() {
    let probe = Probe::new("probe", Duration::ZERO, Arc::default());
    let ai = RecordingChannel::ai("ai");
    let hook_ctx = Arc::new(Mutex::new(None::<Arc<RoomContext>>));
    let sink = hook_ctx.clone();
    let hook = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "ctx",
        move |input: HookInput| {
            let sink = sink.clone();
            async move {
                *sink.lock() = input.context.clone();
                Ok::<_, HookError>(HookResult::allow())
            }
        },
    );
    let kit = RoomKit::builder()
        .channel(probe.arc())
        .channel(ai.arc())
        .hook(hook)
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["probe", "ai"]).await;
    let owner = kit
        .add_participant(
            &room,
            AddParticipant {
                display_name: Some("Owner".into()),
                role: ParticipantRole::Owner,
                ..AddParticipant::default()
            },
        )
        .await
        .unwrap();
    kit.process_inbound(msg("probe", "u1", "first", &room))
        .await
        .unwrap();
    kit.process_inbound(msg("probe", "u1", "second", &room))
        .await
        .unwrap();

    let contexts = probe.inbound_contexts();
    let ctx = contexts.last().unwrap();
    assert_eq!(ctx.room.id, room);
    let mut bound: Vec<_> = ctx
        .bindings
        .iter()
        .map(|b| b.channel_id.to_string())
        .collect();
    bound.sort();
    assert_eq!(bound, vec!["ai", "probe"]);
    // The owner and the lazily created sender record.
    assert_eq!(ctx.participants.len(), 2, "{:?}", ctx.participants);
    assert!(ctx.participants.iter().any(|p| p.id == owner.id));
    assert!(
        ctx.participants
            .iter()
            .any(|p| p.address.as_deref() == Some("u1"))
    );
    assert_eq!(
        texts(&ctx.recent_events).last().map(String::as_str),
        Some("first")
    );
    // The context of the first message already had the attach notices and
    // the owner's join marker (decision D6).
    assert_eq!(contexts[0].recent_events.len(), 3);

    let hook_ctx = hook_ctx.lock().clone().unwrap();
    assert_eq!(hook_ctx.room.id, room);
    assert_eq!(hook_ctx.bindings.len(), 2);
    assert_eq!(hook_ctx.participants.len(), 2);
    assert!(texts(&hook_ctx.recent_events).contains(&"first".to_owned()));

    let call = ai
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.event.content.plain_text() == "second");
    let call = call.unwrap();
    assert!(texts(&call.context_events).contains(&"second".to_owned()));
}

/// C-72: BEFORE_BROADCAST (inside steps 6-12) runs with the room lock
/// held; on_event() and deliver() run after it was released.
#[tokio::test]
async fn c72_hooks_run_under_the_lock_and_delivery_outside_it() {
    let locks = Arc::new(ProbeLocks::default());
    let src = RecordingChannel::websocket("src");
    let dst = RecordingChannel::websocket("dst");
    let during_delivery = Arc::new(Mutex::new(Vec::<bool>::new()));
    let (l, sink) = (locks.clone(), during_delivery.clone());
    dst.respond_with(move |e, _| {
        if e.event_type == EventType::Message {
            sink.lock().push(l.is_held());
        }
        ChannelOutput::empty()
    });
    let during_hook = Arc::new(Mutex::new(Vec::<bool>::new()));
    let (l, sink) = (locks.clone(), during_hook.clone());
    let hook = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "observer",
        move |_input: HookInput| {
            let held = l.is_held();
            let sink = sink.clone();
            async move {
                sink.lock().push(held);
                Ok::<_, HookError>(HookResult::allow())
            }
        },
    );
    let kit = builder_with(&[&src, &dst])
        .lock_manager(locks.clone())
        .hook(hook)
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["src", "dst"]).await;
    for t in ["one", "two"] {
        kit.process_inbound(msg("src", "u", t, &room))
            .await
            .unwrap();
    }
    assert_eq!(during_hook.lock().clone(), vec![true, true]);
    assert_eq!(during_delivery.lock().clone(), vec![false, false]);
    assert!(!locks.is_held());
}

/// C-72: while a sync hook of one event holds the room lock, another send
/// to the same room waits before its own steps 6-12, and a send to another
/// room goes through.
#[tokio::test(start_paused = true)]
async fn c72_second_send_to_same_room_waits_for_the_lock() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let c = RecordingChannel::websocket("c");
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((entered_tx, release_rx))));
    let sink = seen.clone();
    let hook = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "gate",
        move |input: HookInput| {
            let sink = sink.clone();
            let gate = gate.clone();
            async move {
                let text = input.event().unwrap().content.plain_text();
                sink.lock().push(text.clone());
                if text == "first" {
                    let (entered, release) = gate.lock().take().unwrap();
                    entered.send(()).unwrap();
                    release.await.unwrap();
                }
                Ok::<_, HookError>(HookResult::allow())
            }
        },
    );
    let kit = builder_with(&[&a, &b, &c]).hook(hook).build().unwrap();
    let r1 = room_with(&kit, "r1", &["a", "b"]).await;
    let r2 = room_with(&kit, "r2", &["c"]).await;

    let k = kit.clone();
    let room = r1.clone();
    let first = tokio::spawn(async move { k.process_inbound(msg("a", "u", "first", &room)).await });
    entered_rx.await.unwrap();
    let k = kit.clone();
    let room = r1.clone();
    let second =
        tokio::spawn(async move { k.process_inbound(msg("b", "v", "second", &room)).await });
    // Another room is not held up by r1's lock.
    let other = kit
        .process_inbound(msg("c", "w", "elsewhere", &r2))
        .await
        .unwrap();
    assert!(!other.blocked);
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(seen.lock().clone(), vec!["first", "elsewhere"]);
    assert!(!texts(&timeline(&kit, &r1).await).contains(&"second".to_owned()));
    assert!(!second.is_finished());

    release_tx.send(()).unwrap();
    let first = first.await.unwrap().unwrap().event.unwrap();
    let second = second.await.unwrap().unwrap().event.unwrap();
    assert_eq!(second.index, first.index + 1);
    assert_eq!(seen.lock().clone(), vec!["first", "elsewhere", "second"]);
}

/// C-73: the delivery set is fixed when the event commits; a binding
/// change made afterwards, while the event waits in the lane, does not
/// change its targets (nor the binding snapshot they are given), but does
/// apply to later events.
#[tokio::test(start_paused = true)]
async fn c73_binding_change_after_commit_keeps_planned_targets() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let slow = Probe::new("slow", Duration::from_secs(10), log.clone());
    let src = RecordingChannel::websocket("src");
    let late = RecordingChannel::websocket("late");
    let kit = RoomKit::builder()
        .channel(slow.arc())
        .channel(src.arc())
        .channel(late.arc())
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["src", "slow", "late"]).await;

    let k = kit.clone();
    let r = room.clone();
    let one = tokio::spawn(async move { k.process_inbound(msg("src", "u", "one", &r)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(log.lock().clone(), vec!["slow:start:one"]);
    let k = kit.clone();
    let r = room.clone();
    let two = tokio::spawn(async move { k.process_inbound(msg("src", "u", "two", &r)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // "two" is committed and waits in the lane behind "one".
    assert!(texts(&timeline(&kit, &room).await).contains(&"two".to_owned()));
    assert!(!late.delivered_texts().contains(&"two".to_owned()));

    kit.update_binding(
        &room,
        &ChannelId::from("late"),
        BindingUpdate {
            access: Some(Access::None),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    one.await.unwrap().unwrap();
    let two = two.await.unwrap().unwrap();
    assert!(two.delivery_results.contains_key(&ChannelId::from("late")));
    assert_eq!(late.delivered_texts(), vec!["one", "two"]);
    let call = late
        .calls()
        .into_iter()
        .find(|c| c.kind == CallKind::Deliver && c.event.content.plain_text() == "two")
        .unwrap();
    assert_eq!(call.binding.access, Access::ReadWrite);

    kit.process_inbound(msg("src", "u", "three", &room))
        .await
        .unwrap();
    assert_eq!(late.delivered_texts(), vec!["one", "two"]);
}

/// C-74: per room, event N's delivery set finishes before event N+1's
/// starts, in index order, while another room's lane runs independently.
#[tokio::test(start_paused = true)]
async fn c74_lane_runs_delivery_sets_in_index_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let slow = Probe::new("slow", Duration::from_secs(3), log.clone());
    let quick = Probe::new("quick", Duration::from_secs(1), log.clone());
    let other_log = Arc::new(Mutex::new(Vec::new()));
    let elsewhere = Probe::new("elsewhere", Duration::ZERO, other_log.clone());
    let src = RecordingChannel::websocket("src");
    let src2 = RecordingChannel::websocket("src2");
    let kit = RoomKit::builder()
        .channel(slow.arc())
        .channel(quick.arc())
        .channel(elsewhere.arc())
        .channel(src.arc())
        .channel(src2.arc())
        .build()
        .unwrap();
    let room = room_with(&kit, "r1", &["src", "slow", "quick"]).await;
    let room2 = room_with(&kit, "r2", &["src2", "elsewhere"]).await;

    let mut handles = Vec::new();
    for t in ["m1", "m2", "m3"] {
        let k = kit.clone();
        let r = room.clone();
        handles.push(tokio::spawn(async move {
            k.process_inbound(msg("src", "u", t, &r)).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Room r2 is not queued behind r1's slow deliveries.
    kit.process_inbound(msg("src2", "u", "independent", &room2))
        .await
        .unwrap();
    assert_eq!(
        other_log.lock().clone(),
        vec!["elsewhere:start:independent", "elsewhere:end:independent"]
    );
    assert!(handles.iter().any(|h| !h.is_finished()));
    for h in handles {
        h.await.unwrap().unwrap();
    }

    let order: Vec<String> = conversation(&kit, &room)
        .await
        .iter()
        .map(|e| e.content.plain_text())
        .collect();
    assert_eq!(order.len(), 3);
    let rank = |entry: &str| {
        let text = entry.rsplit(':').next().unwrap();
        order.iter().position(|t| t == text).unwrap()
    };
    let log = log.lock().clone();
    assert_eq!(log.len(), 12, "{log:?}");
    let ranks: Vec<usize> = log.iter().map(|e| rank(e)).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{log:?}");
    // Within one event the two targets overlap (C-81): both start first.
    for chunk in log.chunks(4) {
        assert!(
            chunk[0].contains(":start:") && chunk[1].contains(":start:"),
            "{log:?}"
        );
    }
}

/// C-75: a response commits in its own locked pass: a new index after its
/// trigger, chain depth + 1, the same atomic commit (counters move), and
/// its delivery joins the lane after the trigger's.
#[tokio::test]
async fn c75_each_response_gets_its_own_commit_pass() {
    let sms = RecordingChannel::sms("sms");
    let ws = RecordingChannel::websocket("ws");
    let ai1 = RecordingChannel::ai("ai1");
    let ai2 = RecordingChannel::ai("ai2");
    ai1.always_reply("from ai1");
    ai2.always_reply("from ai2");
    // AIs answer only the customer, not each other.
    for ai in [&ai1, &ai2] {
        let text = format!("from {}", ai.id());
        ai.respond_with(move |e, _| {
            if e.source.channel_id.as_str() == "sms" && e.event_type == EventType::Message {
                ChannelOutput::respond(reply(&text))
            } else {
                ChannelOutput::empty()
            }
        });
    }
    let kit = kit_with(&[&sms, &ws, &ai1, &ai2]);
    let room = room_with(&kit, "r", &["sms", "ws", "ai1", "ai2"]).await;
    let r = kit
        .process_inbound(msg("sms", "+1555", "question", &room))
        .await
        .unwrap();
    let trigger = r.event.unwrap();

    let conv = conversation(&kit, &room).await;
    assert_eq!(conv.len(), 3);
    let responses = &conv[1..];
    let mut indexes: Vec<u64> = responses.iter().map(|e| e.index).collect();
    indexes.sort();
    assert_eq!(indexes, vec![trigger.index + 1, trigger.index + 2]);
    for resp in responses {
        assert_eq!(resp.chain_depth, 1);
        assert_eq!(resp.status, EventStatus::Delivered);
        assert_eq!(resp.parent_event_id.as_ref(), Some(&trigger.id));
    }
    let room_state = kit.get_room(&room).await.unwrap();
    assert_eq!(room_state.event_count, trigger.index + 3);
    assert_eq!(room_state.latest_index, Some(trigger.index + 2));
    // The lane delivered to ws in index order, and before the call returned.
    let delivered: Vec<u64> = ws.delivered().iter().map(|e| e.index).collect();
    assert_eq!(
        delivered,
        vec![trigger.index, trigger.index + 1, trigger.index + 2]
    );
    assert_eq!(sms.delivered().len(), 2);
}

/// C-76: a response's parent_event_id is the event it answers, also down
/// a chain of responses.
#[tokio::test]
async fn c76_parent_event_id_links_each_response_to_its_trigger() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    let echo = RecordingChannel::ai("echo");
    ai.respond_with(|e, _| {
        if e.source.channel_id.as_str() == "ws" {
            ChannelOutput::respond(reply("ai answer"))
        } else {
            ChannelOutput::empty()
        }
    });
    echo.respond_with(|e, _| {
        if e.source.channel_id.as_str() == "ai" {
            ChannelOutput::respond(reply("echo of ai"))
        } else {
            ChannelOutput::empty()
        }
    });
    let kit = kit_with(&[&ws, &ai, &echo]);
    let room = room_with(&kit, "r", &["ws", "ai", "echo"]).await;
    let root = kit
        .process_inbound(msg("ws", "u", "hi", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    let conv = conversation(&kit, &room).await;
    assert_eq!(texts(&conv), vec!["hi", "ai answer", "echo of ai"]);
    assert_eq!(conv[0].parent_event_id, None);
    assert_eq!(conv[1].parent_event_id.as_ref(), Some(&root.id));
    assert_eq!(conv[2].parent_event_id.as_ref(), Some(&conv[1].id));
    assert_eq!(conv[2].chain_depth, 2);
}

/// C-77: processing emits event_processed{room_id, event_id} and, per
/// transport target, delivery_succeeded or delivery_failed with the error.
#[tokio::test]
async fn c77_processing_emits_event_processed_and_delivery_events() {
    let src = RecordingChannel::websocket("src");
    let good = RecordingChannel::websocket("good");
    let bad = RecordingChannel::sms("bad");
    bad.fail_deliveries(true);
    let ai = RecordingChannel::ai("ai");
    let kit = kit_with(&[&src, &good, &bad, &ai]);
    let room = room_with(&kit, "r", &["src", "good", "bad", "ai"]).await;
    let log = FrameworkLog::start(&kit);
    let ev = kit
        .process_inbound(msg("src", "u", "hello", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    let events = log.events().await;
    assert!(events.contains(&FrameworkEvent::EventProcessed {
        room_id: room.clone(),
        event_id: ev.id.clone(),
    }));
    assert!(events.contains(&FrameworkEvent::DeliverySucceeded {
        room_id: room.clone(),
        event_id: ev.id.clone(),
        channel_id: "good".into(),
    }));
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            FrameworkEvent::DeliveryFailed {
                room_id,
                event_id,
                channel_id,
                error,
            } => Some((
                room_id.clone(),
                event_id.clone(),
                channel_id.clone(),
                error.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, room);
    assert_eq!(failed[0].1, ev.id);
    assert_eq!(failed[0].2.as_str(), "bad");
    assert!(failed[0].3.contains("scripted failure"), "{}", failed[0].3);
    // The intelligence channel is not a delivery target.
    let delivery_channels: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            FrameworkEvent::DeliverySucceeded { channel_id, .. }
            | FrameworkEvent::DeliveryFailed { channel_id, .. } => Some(channel_id.as_str()),
            _ => None,
        })
        .collect();
    assert!(!delivery_channels.contains(&"ai"));
}

/// C-78: the result carries the stored event, blocked=false, no reason,
/// and a delivery_results map of the deliveries actually executed (one
/// per transport target, failures included), once they have run.
#[tokio::test]
async fn c78_inbound_result_reports_executed_deliveries() {
    let src = RecordingChannel::websocket("src");
    let good = RecordingChannel::websocket("good");
    let bad = RecordingChannel::sms("bad");
    bad.fail_deliveries(true);
    let ai = RecordingChannel::ai("ai");
    let kit = kit_with(&[&src, &good, &bad, &ai]);
    let room = room_with(&kit, "r", &["src", "good", "bad", "ai"]).await;
    let r = kit
        .process_inbound(msg("src", "u", "hello", &room))
        .await
        .unwrap();
    assert!(!r.blocked);
    assert_eq!(r.reason, None);
    let ev = r.event.clone().unwrap();
    assert_eq!(ev.status, EventStatus::Delivered);
    assert_eq!(ev.content.plain_text(), "hello");
    let keys: Vec<&str> = r.delivery_results.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, vec!["bad", "good"]);
    let good_r = &r.delivery_results[&ChannelId::from("good")];
    assert_eq!(good_r.status, DeliveryStatus::Sent);
    assert_eq!(good_r.provider_message_id.as_deref(), Some("good-msg-0"));
    let bad_r = &r.delivery_results[&ChannelId::from("bad")];
    assert_eq!(bad_r.status, DeliveryStatus::Failed);
    assert_eq!(bad_r.error.as_ref().unwrap().code, "unavailable");
    // Delivery happened before the call returned.
    assert_eq!(good.delivered_texts(), vec!["hello"]);
    // The stored event records the same results.
    let stored = kit.get_event(&room, &ev.id).await.unwrap();
    assert_eq!(stored.delivery_results, r.delivery_results);
    assert_eq!(stored.status, EventStatus::Delivered);
}

/// C-78 with D8: a blocked event's result carries the stored BLOCKED
/// event, blocked=true, the reason, and no delivery results; a refused
/// one (closed room) carries no event.
#[tokio::test]
async fn c78_blocked_and_refused_results() {
    let src = RecordingChannel::websocket("src");
    let dst = RecordingChannel::websocket("dst");
    let hook = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "no_secrets",
        |input: HookInput| async move {
            if input
                .event()
                .unwrap()
                .content
                .plain_text()
                .contains("secret")
            {
                Ok::<_, HookError>(HookResult::block("contains a secret"))
            } else {
                Ok(HookResult::allow())
            }
        },
    );
    let kit = builder_with(&[&src, &dst]).hook(hook).build().unwrap();
    let room = room_with(&kit, "r", &["src", "dst"]).await;
    let r = kit
        .process_inbound(msg("src", "u", "my secret", &room))
        .await
        .unwrap();
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::Hook));
    assert!(r.delivery_results.is_empty());
    let ev = r.event.unwrap();
    assert_eq!(ev.status, EventStatus::Blocked);
    assert_eq!(ev.blocked_by.as_deref(), Some("no_secrets"));
    assert!(dst.delivered().is_empty());

    kit.close_room(&room).await.unwrap();
    let r = kit
        .process_inbound(msg("src", "u", "too late", &room))
        .await
        .unwrap();
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::RoomClosed));
    assert!(r.event.is_none());
    assert!(!texts(&timeline(&kit, &room).await).contains(&"too late".to_owned()));
}

/// C-79: a slow sync hook past process_timeout aborts before the commit:
/// blocked with reason process_timeout, nothing in the timeline, counters
/// unchanged, no participant record left behind, nothing delivered.
#[tokio::test(start_paused = true)]
async fn c79_process_timeout_aborts_before_commit_leaving_nothing() {
    let src = RecordingChannel::websocket("src");
    let dst = RecordingChannel::websocket("dst");
    let hook = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "slow_scanner",
        |input: HookInput| async move {
            if input.event().unwrap().content.plain_text() == "slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Ok::<_, HookError>(HookResult::allow())
        },
    );
    let kit = builder_with(&[&src, &dst])
        .process_timeout(Duration::from_secs(1))
        .hook(hook)
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["src", "dst"]).await;
    let log = FrameworkLog::start(&kit);
    let before = kit.get_room(&room).await.unwrap();
    let timeline_before = timeline(&kit, &room).await;

    let r = kit
        .process_inbound(msg("src", "+15550001111", "slow", &room))
        .await
        .unwrap();
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::ProcessTimeout));
    assert!(r.event.is_none());
    assert!(r.delivery_results.is_empty());

    kit.idle().await;
    let after = kit.get_room(&room).await.unwrap();
    assert_eq!(after.event_count, before.event_count);
    assert_eq!(after.latest_index, before.latest_index);
    assert_eq!(timeline(&kit, &room).await, timeline_before);
    assert!(
        kit.list_participants(&room).await.unwrap().is_empty(),
        "a timed-out event left a participant record behind"
    );
    assert!(dst.delivered().is_empty());
    let names = log.names().await;
    assert!(!names.contains(&"event_processed"), "{names:?}");

    // The room still works afterwards, at the index the timeout left free.
    let ok = kit
        .process_inbound(msg("src", "+15550001111", "fast", &room))
        .await
        .unwrap();
    assert_eq!(ok.event.unwrap().index, before.event_count);
}

/// C-79: once committed, slowness never re-marks the event: a delivery
/// slower than process_timeout fails by its own per-operation timeout,
/// is reported as delivery_failed and broadcast_partial_failure, and the
/// event stays DELIVERED with blocked=false.
#[tokio::test(start_paused = true)]
async fn c79_slow_delivery_after_commit_never_remarks_the_event() {
    let src = RecordingChannel::websocket("src");
    let slow = RecordingChannel::websocket("slow");
    let fine = RecordingChannel::websocket("fine");
    let kit = builder_with(&[&src, &slow, &fine])
        .process_timeout(Duration::from_secs(1))
        .delivery_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["src", "slow", "fine"]).await;
    slow.delay(Duration::from_secs(60));
    let log = FrameworkLog::start(&kit);

    let r = kit
        .process_inbound(msg("src", "u", "hello", &room))
        .await
        .unwrap();
    assert!(!r.blocked);
    assert_eq!(r.reason, None);
    let ev = r.event.unwrap();
    assert_eq!(ev.status, EventStatus::Delivered);
    let slow_r = &r.delivery_results[&ChannelId::from("slow")];
    assert_eq!(slow_r.status, DeliveryStatus::Failed);
    assert_eq!(slow_r.error.as_ref().unwrap().code, "timeout");
    assert_eq!(
        r.delivery_results[&ChannelId::from("fine")].status,
        DeliveryStatus::Sent
    );
    let stored = kit.get_event(&room, &ev.id).await.unwrap();
    assert_eq!(stored.status, EventStatus::Delivered);
    assert_eq!(stored.blocked_by, None);

    let events = log.events().await;
    assert!(events.iter().any(|e| matches!(e,
        FrameworkEvent::DeliveryFailed { channel_id, event_id, .. }
            if channel_id.as_str() == "slow" && event_id == &ev.id)));
    assert!(events.iter().any(|e| matches!(e,
        FrameworkEvent::BroadcastPartialFailure { failed_channels, event_id, .. }
            if failed_channels == &vec![ChannelId::from("slow")] && event_id == &ev.id)));
}
