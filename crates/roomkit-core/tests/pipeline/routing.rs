//! Inbound room routing and direct injection (RFC §10.4, §10.5),
//! checklist items C-97 to C-101.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_core::clock::SequentialIds;
use roomkit_core::model::*;
use roomkit_core::router::{ConversationRouter, DefaultRouter, InboundRoomRouter, RouteRequest};
use roomkit_core::store::{RoomQuery, Store};
use roomkit_core::*;
use roomkit_testkit::*;

use crate::support::*;

async fn route_sms(kit: &RoomKit, sender: &str, text: &str) -> RoomId {
    kit.process_inbound(InboundMessage::text("sms", sender, text))
        .await
        .unwrap()
        .event
        .unwrap()
        .room_id
}

async fn room_count(kit: &RoomKit) -> usize {
    kit.list_rooms(&RoomQuery::default()).await.unwrap().len()
}

/// C-97 rule 1: a sender who already spoke in a room through this channel
/// type returns to that room, even when the channel is bound elsewhere too.
#[tokio::test]
async fn c97_same_sender_same_channel_type_returns_to_its_room() {
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&sms]);
    let first = route_sms(&kit, "+15550000001", "hello").await;
    // A second room on the same channel: rule 2 no longer decides.
    room_with(&kit, "side", &["sms"]).await;
    let again = route_sms(&kit, "+15550000001", "me again").await;
    assert_eq!(again, first);
    assert_eq!(room_count(&kit).await, 2);
    assert_eq!(
        texts(&conversation(&kit, &first).await),
        vec!["hello", "me again"]
    );
}

/// C-97 rule 2: a channel bound to exactly one ACTIVE room takes a new
/// sender into it; once that room is closed, a new room is created.
#[tokio::test]
async fn c97_channel_bound_to_exactly_one_active_room_takes_new_senders() {
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&sms]);
    let support = room_with(&kit, "support", &["sms"]).await;
    assert_eq!(route_sms(&kit, "+15550000001", "hi").await, support);
    assert_eq!(route_sms(&kit, "+15550000002", "hi too").await, support);

    kit.close_room(&support).await.unwrap();
    let fresh = route_sms(&kit, "+15550000003", "anyone?").await;
    assert_ne!(fresh, support);
    let bound: Vec<_> = kit
        .list_bindings(&fresh)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.channel_id)
        .collect();
    assert_eq!(bound, vec![ChannelId::from("sms")]);
}

/// C-97 rule 3: a different sender, on a channel that is not bound to
/// exactly one room, gets a new room; the known sender keeps its own.
#[tokio::test]
async fn c97_different_sender_gets_a_new_room() {
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&sms]);
    let a = route_sms(&kit, "+15550000001", "from a").await;
    room_with(&kit, "side", &["sms"]).await;
    let b = route_sms(&kit, "+15550000002", "from b").await;
    assert_ne!(b, a);
    assert_ne!(b.as_str(), "side");
    assert_eq!(room_count(&kit).await, 3);
    let parts = kit.list_participants(&b).await.unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].address.as_deref(), Some("+15550000002"));
    assert_eq!(route_sms(&kit, "+15550000001", "a again").await, a);
}

/// C-98 and D10: the router never guesses. A channel bound to two rooms
/// gives a new sender a third room, and a sender known in two ACTIVE
/// rooms gets a new room rather than one of them.
#[tokio::test]
async fn c98_ambiguous_matches_create_a_new_room() {
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&sms]);
    let r1 = room_with(&kit, "r1", &["sms"]).await;
    let r2 = room_with(&kit, "r2", &["sms"]).await;
    let third = route_sms(&kit, "+15550000009", "new here").await;
    assert!(third != r1 && third != r2);
    assert_eq!(room_count(&kit).await, 3);

    for room in [&r1, &r2] {
        kit.process_inbound(msg("sms", "+15550000001", "hi", room))
            .await
            .unwrap();
    }
    let routed = route_sms(&kit, "+15550000001", "which room?").await;
    assert!(routed != r1 && routed != r2 && routed != third);
    assert_eq!(room_count(&kit).await, 4);
    assert!(!texts(&conversation(&kit, &r1).await).contains(&"which room?".to_owned()));
    assert!(!texts(&conversation(&kit, &r2).await).contains(&"which room?".to_owned()));
}

/// Runs one routing scenario on a fresh engine with sequential ids and
/// returns the room each message landed in.
async fn scenario() -> Vec<RoomId> {
    let sms = RecordingChannel::sms("sms");
    let kit = builder_with(&[&sms])
        .ids(Arc::new(SequentialIds::default()))
        .build()
        .unwrap();
    let mut out = Vec::new();
    for (sender, text) in [
        ("+1", "a"),
        ("+2", "b"),
        ("+1", "c"),
        ("+3", "d"),
        ("+2", "e"),
    ] {
        out.push(route_sms(&kit, sender, text).await);
        if out.len() == 2 {
            room_with(&kit, "extra", &["sms"]).await;
        }
    }
    // Asking the router itself twice against the same state gives the same
    // answer.
    let ask = |sender: &'static str| {
        let store = kit.store().clone();
        async move {
            let meta = Map::new();
            let req = RouteRequest {
                channel_id: &ChannelId::from("sms"),
                channel_type: &ChannelType::Sms,
                sender_id: sender,
                metadata: &meta,
            };
            DefaultRouter
                .route(req, store.as_ref())
                .await
                .unwrap()
                .map(|r| r.id)
        }
    };
    assert_eq!(ask("+1").await, ask("+1").await);
    assert_eq!(ask("+1").await.as_ref(), Some(&out[0]));
    out
}

/// C-99: routing is deterministic: the same inputs against the same state
/// select the same rooms, run after run.
#[tokio::test]
async fn c99_routing_is_deterministic() {
    let first = scenario().await;
    let second = scenario().await;
    assert_eq!(first, second);
    assert_eq!(first[0], first[1]);
    assert_eq!(first[2], first[0]);
    assert_eq!(first[4], first[1]);
    assert_ne!(first[3], first[0]);
}

/// The conversation router: a bound room takes its first sender, keeps
/// them, and sends everyone else to a room of their own.
#[tokio::test]
async fn conversation_router_keeps_a_bound_room_to_its_first_sender() {
    let sms = RecordingChannel::sms("sms");
    let kit = builder_with(&[&sms])
        .router(Arc::new(ConversationRouter))
        .build()
        .unwrap();
    let support = room_with(&kit, "support", &["sms"]).await;
    assert_eq!(route_sms(&kit, "+15550000001", "hi").await, support);
    assert_eq!(route_sms(&kit, "+15550000001", "again").await, support);
    let other = route_sms(&kit, "+15550000002", "hi too").await;
    assert_ne!(other, support);
    assert_eq!(route_sms(&kit, "+15550000002", "me").await, other);
    assert_eq!(room_count(&kit).await, 2);
    assert_eq!(
        texts(&conversation(&kit, &support).await),
        vec!["hi", "again"]
    );
}

/// Routes by a ticket number in the message metadata and records what it
/// was asked.
#[derive(Default)]
struct TicketRouter {
    asked: Mutex<Vec<(String, String, String, Map)>>,
}

#[async_trait]
impl InboundRoomRouter for TicketRouter {
    async fn route(
        &self,
        request: RouteRequest<'_>,
        store: &dyn Store,
    ) -> Result<Option<Room>, StoreError> {
        self.asked.lock().push((
            request.channel_id.to_string(),
            request.channel_type.to_string(),
            request.sender_id.to_owned(),
            request.metadata.clone(),
        ));
        match request.metadata.get("ticket").and_then(|t| t.as_str()) {
            Some(t) => store.get_room(&RoomId::from(format!("ticket-{t}"))).await,
            None => Ok(None),
        }
    }
}

/// C-100: an integrator's router plugged in through the builder decides:
/// it is given channel id, type, sender and metadata, its room is used,
/// and its null creates a new room.
#[tokio::test]
async fn c100_custom_router_via_builder() {
    let sms = RecordingChannel::sms("sms");
    let router = Arc::new(TicketRouter::default());
    let kit = builder_with(&[&sms])
        .router(router.clone())
        .build()
        .unwrap();
    let ticket = room_with(&kit, "ticket-42", &["sms"]).await;
    // The default router would pick the only room the channel is bound to;
    // this one does not.
    let mut m = InboundMessage::text("sms", "+1555", "no ticket");
    m.metadata.insert("source".into(), "web".into());
    let r = kit.process_inbound(m).await.unwrap();
    assert_ne!(r.event.unwrap().room_id, ticket);

    let mut m = InboundMessage::text("sms", "+1555", "about my ticket");
    m.metadata.insert("ticket".into(), "42".into());
    let r = kit.process_inbound(m).await.unwrap();
    assert_eq!(r.event.unwrap().room_id, ticket);

    let asked = router.asked.lock().clone();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].0, "sms");
    assert_eq!(asked[0].1, "sms");
    assert_eq!(asked[0].2, "+1555");
    assert_eq!(asked[0].3.get("source"), Some(&"web".into()));
}

/// C-101: send_event runs the same pipeline as an inbound message: next
/// index, BEFORE_BROADCAST (a block stores it BLOCKED and delivers
/// nothing), the write gate, EDIT handling, commit, delivery, reentry and
/// AFTER_BROADCAST.
#[tokio::test]
async fn c101_send_event_runs_the_same_pipeline() {
    let api = RecordingChannel::websocket("api");
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.respond_with(|e, _| {
        if e.event_type == EventType::Message && e.source.channel_id.as_str() == "api" {
            ChannelOutput::respond(reply("ai saw it"))
        } else {
            ChannelOutput::empty()
        }
    });
    let hook = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "censor",
        |input: HookInput| async move {
            if input
                .event()
                .unwrap()
                .content
                .plain_text()
                .contains("forbidden")
            {
                Ok::<_, HookError>(HookResult::block("forbidden word"))
            } else {
                Ok(HookResult::allow())
            }
        },
    );
    let (after, after_log) = recording_hook(HookTrigger::AfterBroadcast, "after");
    let kit = builder_with(&[&api, &ws, &ai])
        .hook(hook)
        .hook(after)
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["api", "ws", "ai"]).await;
    let count = kit.get_room(&room).await.unwrap().event_count;

    let sent = SendEvent {
        sender_id: Some("alice".into()),
        ..SendEvent::text(room.clone(), "api", "hello")
    };
    let r = kit.send_event(sent).await.unwrap();
    assert!(!r.blocked);
    let ev = r.event.unwrap();
    assert_eq!(ev.index, count);
    assert_eq!(ev.status, EventStatus::Delivered);
    assert_eq!(ws.delivered_texts(), vec!["hello", "ai saw it"]);
    let reply_ev = conversation(&kit, &room).await.pop().unwrap();
    assert_eq!(reply_ev.parent_event_id.as_ref(), Some(&ev.id));
    assert_eq!(reply_ev.chain_depth, 1);
    assert!(r.delivery_results.contains_key(&ChannelId::from("ws")));

    let r = kit
        .send_event(SendEvent::text(room.clone(), "api", "forbidden"))
        .await
        .unwrap();
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::Hook));
    assert_eq!(r.event.unwrap().status, EventStatus::Blocked);
    assert_eq!(ws.delivered_texts(), vec!["hello", "ai saw it"]);

    let r = kit
        .send_event(SendEvent {
            content: Some(edit_of(&ev.id, "hello, edited")),
            sender_id: Some("alice".into()),
            ..SendEvent::text(room.clone(), "api", "")
        })
        .await
        .unwrap();
    assert!(!r.blocked, "{r:?}");
    let target = kit.get_event(&room, &ev.id).await.unwrap();
    assert_eq!(target.content.plain_text(), "hello, edited");

    kit.update_binding(
        &room,
        &"api".into(),
        BindingUpdate {
            access: Some(Access::ReadOnly),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    let r = kit
        .send_event(SendEvent::text(room.clone(), "api", "can I?"))
        .await
        .unwrap();
    assert!(r.blocked);
    assert_eq!(
        r.event.unwrap().blocked_by.as_deref(),
        Some("source_read_only")
    );

    kit.idle().await;
    let after_ids = after_log.event_ids();
    assert!(after_ids.contains(&ev.id));
    assert!(after_ids.contains(&reply_ev.id));
}
