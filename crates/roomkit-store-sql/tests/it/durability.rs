//! What only a real database shows: everything survives a reopen, a writer
//! killed with SIGKILL loses nothing it acknowledged, and concurrent engine
//! writers keep indexes gap-free.

use std::collections::BTreeMap;

use roomkit_core::model::{InboundMessage, RoomId};
use roomkit_core::store::{EventQuery, TaskQuery};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{Target, TempDir, engine, pg_url, random_below, room_with_ws, spawn_child};

async fn reopen_keeps_everything(target: Target) {
    let room = RoomId::from("durable");
    let (before_room, before_events, before_bindings, before_participants, before_tasks) = {
        let backend = target.open().await;
        let (kit, _ws) = engine(&backend);
        room_with_ws(&kit, "durable").await;
        for i in 0..25 {
            let mut msg =
                InboundMessage::text("ws", format!("user{}", i % 3), format!("hello {i}"))
                    .in_room("durable");
            msg.idempotency_key = Some(format!("key-{i}"));
            kit.process_inbound(msg).await.expect("process_inbound");
        }
        kit.idle().await;
        let store = backend.store.clone();
        let snapshot = (
            store.get_room(&room).await.unwrap().expect("room"),
            store
                .list_events(&room, &EventQuery::default())
                .await
                .unwrap(),
            store.list_bindings(&room).await.unwrap(),
            store.list_participants(&room).await.unwrap(),
            store
                .list_tasks(&room, &TaskQuery::default())
                .await
                .unwrap(),
        );
        kit.shutdown().await;
        backend.close().await;
        snapshot
    };
    assert!(before_events.len() >= 25, "the timeline was written");

    let backend = target.open().await;
    let store = backend.store.clone();
    let room_after = store
        .get_room(&room)
        .await
        .unwrap()
        .expect("room after reopen");
    assert_eq!(room_after, before_room);
    let events_after = store
        .list_events(&room, &EventQuery::default())
        .await
        .unwrap();
    assert_eq!(events_after, before_events);
    assert_eq!(store.list_bindings(&room).await.unwrap(), before_bindings);
    assert_eq!(
        store.list_participants(&room).await.unwrap(),
        before_participants
    );
    assert_eq!(
        store
            .list_tasks(&room, &TaskQuery::default())
            .await
            .unwrap(),
        before_tasks
    );
    // The idempotency keys survive too: a replay is recognised.
    let (kit, _ws) = engine(&backend);
    let mut replay = InboundMessage::text("ws", "user0", "hello 0").in_room("durable");
    replay.idempotency_key = Some("key-0".into());
    let result = kit.process_inbound(replay).await.unwrap();
    assert!(result.blocked, "a replayed key is a duplicate after reopen");
    assert_eq!(
        store.get_room(&room).await.unwrap().unwrap().event_count,
        room_after.event_count,
        "the duplicate stored nothing"
    );
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_everything() {
    let dir = TempDir::new();
    reopen_keeps_everything(Target::sqlite(&dir, "reopen.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reopen_keeps_everything() {
    let Some(url) = pg_url("postgres_reopen_keeps_everything") else {
        return;
    };
    reopen_keeps_everything(Target::postgres(&url)).await;
}

/// Kills a writing child at a random point, then checks that every event it
/// acknowledged is stored, indexes are gap-free and counters match.
async fn crash_keeps_acknowledged_events(target: Target) {
    {
        let backend = target.open().await;
        let (kit, _ws) = engine(&backend);
        room_with_ws(&kit, "crash").await;
        kit.shutdown().await;
        backend.close().await;
    }
    let kill_after = 20 + random_below(180);
    let mut child = spawn_child("crash_writer", &target, &[]);
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut killed = false;
    while let Some(line) = lines.next_line().await.expect("read child") {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (index, id) = rest.split_once(' ').expect("ACK index id");
            acked.insert(index.parse().expect("index"), id.to_owned());
            if !killed && acked.len() as u64 >= kill_after {
                // SIGKILL: no destructor, no flush, no goodbye.
                child.start_kill().expect("kill child");
                killed = true;
            }
        }
    }
    // The pipe is drained: acknowledgements written before the kill count.
    let status = child.wait().await.expect("wait child");
    assert!(
        killed,
        "the child stopped writing before it was killed: {status:?}"
    );
    assert!(!status.success(), "the child was killed");

    let backend = target.open().await;
    let room = RoomId::from("crash");
    let stored = backend
        .store
        .list_events(&room, &EventQuery::default())
        .await
        .unwrap();
    let indexes: Vec<u64> = stored.iter().map(|e| e.index).collect();
    assert_eq!(
        indexes,
        (0..stored.len() as u64).collect::<Vec<_>>(),
        "indexes are gap-free"
    );
    let r = backend.store.get_room(&room).await.unwrap().expect("room");
    assert_eq!(
        r.event_count,
        stored.len() as u64,
        "event_count matches the timeline"
    );
    assert_eq!(
        r.latest_index,
        stored.last().map(|e| e.index),
        "latest_index matches"
    );
    for (index, id) in &acked {
        let e = stored
            .get(*index as usize)
            .unwrap_or_else(|| panic!("acknowledged event {index} lost"));
        assert_eq!(
            e.id.as_str(),
            id,
            "acknowledged event {index} is the one stored"
        );
    }
    let last_acked = acked.keys().next_back().copied().unwrap_or(0);
    assert!(
        stored.len() as u64 <= last_acked + 2,
        "at most the one unacknowledged write in flight was committed"
    );
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_keeps_acknowledged_events() {
    let dir = TempDir::new();
    crash_keeps_acknowledged_events(Target::sqlite(&dir, "crash.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_keeps_acknowledged_events() {
    let Some(url) = pg_url("postgres_crash_keeps_acknowledged_events") else {
        return;
    };
    crash_keeps_acknowledged_events(Target::postgres(&url)).await;
}

/// Many tasks push messages through one engine into one room at once.
async fn concurrent_inbound_gap_free(target: Target) {
    let backend = target.open().await;
    let (kit, _ws) = engine(&backend);
    room_with_ws(&kit, "busy").await;
    let mut tasks = Vec::new();
    for t in 0..6 {
        let kit = kit.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..15 {
                let msg =
                    InboundMessage::text("ws", format!("u{t}"), format!("{t}/{i}")).in_room("busy");
                kit.process_inbound(msg).await.expect("process_inbound");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let room = RoomId::from("busy");
    let events = backend
        .store
        .list_events(&room, &EventQuery::default())
        .await
        .unwrap();
    let indexes: Vec<u64> = events.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (0..events.len() as u64).collect::<Vec<_>>());
    let messages = events
        .iter()
        .filter(|e| e.event_type == roomkit_core::model::EventType::Message)
        .count();
    assert_eq!(messages, 90, "every message stored once");
    let r = backend.store.get_room(&room).await.unwrap().unwrap();
    assert_eq!(r.event_count, events.len() as u64);
    kit.shutdown().await;
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_inbound_gap_free() {
    let dir = TempDir::new();
    concurrent_inbound_gap_free(Target::sqlite(&dir, "busy.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_inbound_gap_free() {
    let Some(url) = pg_url("postgres_concurrent_inbound_gap_free") else {
        return;
    };
    concurrent_inbound_gap_free(Target::postgres(&url)).await;
}
