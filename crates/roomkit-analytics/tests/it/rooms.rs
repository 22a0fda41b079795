//! Rooms as calls (`observe_rooms`): a room's first message starts its
//! call, pausing or closing the room ends it, a resumed room starts a new
//! call, and room metadata opts out or adjusts the call.

use std::sync::Arc;

use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::{ExportState, Exporter, RoomCallPolicy};
use roomkit_core::model::{ChannelId, InboundMessage, RoomId, RoomStatus};
use roomkit_core::{AttachOptions, CreateRoom, RoomKit};
use roomkit_testkit::RecordingChannel;
use serde_json::{Value, json};

use crate::util::*;

async fn room(kit: &RoomKit, id: &str, metadata: Value) -> RoomId {
    let mut opts = CreateRoom::with_id(id);
    if let Value::Object(m) = metadata {
        opts.metadata = m;
    }
    let room = kit.create_room(opts).await.unwrap();
    for c in ["ws", "ai"] {
        kit.attach_channel(&room.id, &ChannelId::from(c), AttachOptions::default())
            .await
            .unwrap();
    }
    room.id
}

async fn say(kit: &RoomKit, room: &str, text: &str) {
    kit.process_inbound(InboundMessage::text("ws", "alice", text).in_room(room))
        .await
        .unwrap();
    kit.idle().await;
}

/// Waits until the observer has a call in the room (it starts on the
/// dispatcher's task).
async fn call_of(
    a: &roomkit_analytics::CallAnalytics,
    room: &RoomId,
) -> roomkit_analytics::CallHandle {
    for _ in 0..500 {
        if let Some(c) = a.call_in_room(room) {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no call in {room}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_become_calls_by_themselves() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir("rooms");
    let a = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("Noted.");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(ai.arc())
        .build()
        .unwrap();
    a.observe_rooms(&kit, RoomCallPolicy::new("bot"));

    let idle = room(&kit, "idle", Value::Null).await;
    let quiet = room(&kit, "quiet", json!({"analytics": false})).await;
    let test = room(
        &kit,
        "test",
        json!({"analytics": {"is_test": true, "agent_id": "qa-bot"}}),
    )
    .await;
    say(&kit, "quiet", "not observed").await;
    say(&kit, "test", "first call").await;

    let first = call_of(&a, &test).await;
    kit.pause_room(&test).await.unwrap();
    assert_eq!(first.exported().await, ExportState::Completed);
    // Resumed, the room's next message is a new call.
    kit.set_room_status(&test, RoomStatus::Active)
        .await
        .unwrap();
    say(&kit, "test", "second call").await;
    let second = call_of(&a, &test).await;
    assert_ne!(first.call_id(), second.call_id());
    kit.close_room(&test).await.unwrap();
    assert_eq!(second.exported().await, ExportState::Completed);

    assert!(a.call_in_room(&idle).is_none(), "no message, no call");
    assert!(a.call_in_room(&quiet).is_none(), "opted out");
    let events = fake.accepted_events();
    let started: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "call-started")
        .collect();
    let ended: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "call-ended")
        .collect();
    assert_eq!(started.len(), 2, "{events:?}");
    assert_eq!(ended.len(), 2, "{events:?}");
    for s in &started {
        assert_eq!(s["agentId"], "qa-bot");
        assert_eq!(s["isTest"], true);
        assert_eq!(s["roomName"], "test");
    }
    let reason = |id: &str| {
        ended
            .iter()
            .find(|e| e["livekitCallId"] == id)
            .map(|e| e["callEndedReason"].clone())
            .unwrap()
    };
    assert_eq!(reason(first.call_id()), "room-paused");
    assert_eq!(reason(second.call_id()), "room-closed");
    for e in &ended {
        let t = e["transcript"].as_array().unwrap();
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0]["role"], "user");
        assert_eq!(t[1]["role"], "assistant");
        assert_eq!(t[1]["content"], "Noted.");
    }
    a.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_messages_for_the_idle_timeout_ends() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir("idle");
    let a = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("Noted.");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(ai.arc())
        .build()
        .unwrap();
    let policy = RoomCallPolicy {
        idle_timeout: Some(std::time::Duration::from_millis(200)),
        ..RoomCallPolicy::new("bot")
    };
    a.observe_rooms(&kit, policy);
    let id = room(&kit, "idle", Value::Null).await;
    say(&kit, "idle", "hello?").await;
    let call = call_of(&a, &id).await;
    // Nobody says anything more: the call ends by itself.
    assert_eq!(call.exported().await, ExportState::Completed);
    let ended: Vec<Value> = fake
        .accepted_events()
        .into_iter()
        .filter(|e| e["event"] == "call-ended")
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["callEndedReason"], "idle-timeout");
    assert_eq!(ended[0]["transcript"].as_array().unwrap().len(), 2);
    a.shutdown(std::time::Duration::from_secs(5)).await;
}
