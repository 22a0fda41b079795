//! Indexing, commit and storage (checklist 3.3, C-26..C-32): gap-free
//! indexes under concurrency, the store's refusal of conflicting writes,
//! counters moving atomically with events, delivery failures never
//! re-marking a committed event, and ownership of stored values.

use std::sync::Arc;
use std::time::Duration;

use roomkit_core::model::*;
use roomkit_core::store::{EventPatch, EventQuery, MemoryStore, RoomPatch, RoomQuery, Store};
use roomkit_core::*;
use roomkit_testkit::*;

use crate::util::*;

/// C-26: indexes run 0, 1, 2, ... without gaps or duplicates, blocked
/// events (hook, read-only, muted, chain depth) included (D1).
#[tokio::test]
async fn c26_indexes_gap_free_including_blocked() {
    let ws = RecordingChannel::websocket("ws");
    let ro = RecordingChannel::websocket("ro");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("again");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(ro.arc())
        .channel(ai.arc())
        .max_chain_depth(1)
        .build()
        .unwrap();
    room_with(&kit, "r", &["ws", "ro"]).await;
    kit.update_binding(
        &"r".into(),
        &"ro".into(),
        BindingUpdate {
            access: Some(Access::ReadOnly),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "deny",
        |input: HookInput| async move {
            Ok(match input.event().and_then(|e| e.content.as_text()) {
                Some("deny") => HookResult::block("denied"),
                _ => HookResult::allow(),
            })
        },
    ));
    send(&kit, "r", "ws", "one").await;
    send(&kit, "r", "ws", "deny").await;
    send(&kit, "r", "ro", "read only").await;
    kit.attach_channel(&"r".into(), &"ai".into(), AttachOptions::default())
        .await
        .unwrap();
    // The AI answers at depth 1, which the limit of 1 blocks.
    send(&kit, "r", "ws", "two").await;
    kit.mute_channel(&"r".into(), &"ws".into()).await.unwrap();
    send(&kit, "r", "ws", "muted").await;

    let tl = timeline(&kit, "r").await;
    let blocked: Vec<_> = tl
        .iter()
        .filter(|e| e.status == EventStatus::Blocked)
        .map(|e| e.blocked_by.clone().unwrap())
        .collect();
    assert_eq!(
        blocked,
        vec![
            "deny",
            "source_read_only",
            "event_chain_depth_limit",
            "source_muted"
        ]
    );
    assert_timeline_invariants(&kit, "r").await;
}

/// C-27: 200 concurrent sends into one room get indexes 0..N-1 exactly
/// once; timeline order, index order and the order subscribers saw the
/// commits in all agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c27_two_hundred_concurrent_sends_get_unique_indexes() {
    let ws = RecordingChannel::websocket("ws");
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&ws, &sms]);
    let mut commits = kit.subscribe_timeline();
    room_with(&kit, "r", &["ws", "sms"]).await;

    let mut tasks = Vec::new();
    for i in 0..200 {
        let k = kit.clone();
        let ch = if i % 2 == 0 { "ws" } else { "sms" };
        tasks.push(tokio::spawn(async move {
            k.send_event(SendEvent::text("r", ch, format!("m{i}")))
                .await
                .unwrap()
        }));
    }
    let mut returned = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert!(!r.blocked);
        returned.push(r.event.unwrap().index);
    }
    returned.sort_unstable();
    assert_eq!(returned, (2..202).collect::<Vec<u64>>());

    let tl = timeline(&kit, "r").await;
    assert_eq!(tl.len(), 202);
    assert_timeline_invariants(&kit, "r").await;
    let mut seen = Vec::new();
    while seen.len() < 202 {
        let e = commits.recv().await.unwrap();
        if e.room_id == "r" {
            seen.push((e.index, e.id.clone()));
        }
    }
    let stored: Vec<_> = tl.iter().map(|e| (e.index, e.id.clone())).collect();
    assert_eq!(
        seen, stored,
        "commit order == index order == timeline order"
    );
    // Every other channel received every message exactly once, in order.
    let sms_got: Vec<u64> = sms.delivered().iter().map(|e| e.index).collect();
    let mut sorted = sms_got.clone();
    sorted.sort_unstable();
    assert_eq!(sms_got, sorted, "per-room delivery follows index order");
    assert_eq!(sms_got.len(), 100);
}

/// C-28: the store refuses an event whose (room, index) is taken or is not
/// the next free index, and persists nothing of it.
#[tokio::test]
async fn c28_store_refuses_duplicate_room_index() {
    let store = MemoryStore::new();
    store
        .create_room(Room::new("r".into(), t0()))
        .await
        .unwrap();
    let mk = |id: &str, index: u64, key: Option<&str>| {
        let mut e = RoomEvent::text(EventSource::system(), id);
        e.id = id.into();
        e.room_id = "r".into();
        e.index = index;
        e.status = EventStatus::Delivered;
        e.idempotency_key = key.map(str::to_owned);
        e.created_at = t0();
        e
    };
    store.add_event(mk("e0", 0, Some("k")), None).await.unwrap();
    store.add_event(mk("e1", 1, None), None).await.unwrap();

    let err = store.add_event(mk("dup", 1, None), None).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::IndexConflict {
                index: 1,
                expected: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let err = store.add_event(mk("gap", 5, None), None).await.unwrap_err();
    assert!(matches!(err, StoreError::IndexConflict { .. }), "{err:?}");
    let err = store
        .add_event(mk("again", 2, Some("k")), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateKey { .. }), "{err:?}");
    let err = store.add_event(mk("e1", 2, None), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");

    for id in ["dup", "gap", "again"] {
        assert!(store.get_event(&id.into()).await.unwrap().is_none());
    }
    let room = store.get_room(&"r".into()).await.unwrap().unwrap();
    assert_eq!(room.event_count, 2);
    assert_eq!(room.latest_index, Some(1));
    let all = store
        .list_events(&"r".into(), &EventQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.id.to_string()).collect::<Vec<_>>(),
        ["e0", "e1"]
    );
}

/// C-29: counters never disagree with the stored events: a reader racing
/// many writers never sees a counter ahead of the timeline it read after
/// it, nor a timeline ahead of the counter it read after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c29_counters_move_atomically_with_events() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let mut commits = kit.subscribe_timeline();
    let writers: Vec<_> = (0..100)
        .map(|i| {
            let k = kit.clone();
            tokio::spawn(async move { send(&k, "r", "ws", &format!("w{i}")).await })
        })
        .collect();
    let k = kit.clone();
    let reader = tokio::spawn(async move {
        let store = k.store().clone();
        let mut checks = 0;
        loop {
            let room = store.get_room(&"r".into()).await.unwrap().unwrap();
            let events = store
                .list_events(&"r".into(), &EventQuery::default())
                .await
                .unwrap();
            assert!(
                events.len() as u64 >= room.event_count,
                "counter {} includes events not stored ({})",
                room.event_count,
                events.len()
            );
            let again = store.get_room(&"r".into()).await.unwrap().unwrap();
            assert!(
                again.event_count >= events.len() as u64,
                "events stored without the counter"
            );
            checks += 1;
            if room.event_count >= 101 {
                return checks;
            }
            tokio::task::yield_now().await;
        }
    });
    for w in writers {
        assert!(!w.await.unwrap().blocked);
    }
    assert!(reader.await.unwrap() > 0);
    // Whenever a commit is announced, the room already counts it.
    let store = kit.store().clone();
    let mut n = 0;
    while let Ok(e) = commits.try_recv() {
        let room = store.get_room(&e.room_id).await.unwrap().unwrap();
        assert!(room.event_count > e.index);
        n += 1;
    }
    assert_eq!(n, 100);
}

/// C-30: a DELIVERED event stays DELIVERED when a target fails or times
/// out; the failure shows only in that channel's delivery result.
#[tokio::test(start_paused = true)]
async fn c30_delivery_failure_never_remarks_committed_event() {
    let ws = RecordingChannel::websocket("ws");
    let failing = RecordingChannel::sms("failing");
    failing.fail_deliveries(true);
    let slow = RecordingChannel::websocket("slow");
    let ok = RecordingChannel::websocket("ok");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(failing.arc())
        .channel(slow.arc())
        .channel(ok.arc())
        .delivery_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    room_with(&kit, "r", &["ws", "failing", "slow", "ok"]).await;
    slow.delay(Duration::from_secs(60));
    let log = FrameworkLog::start(&kit);

    let r = send(&kit, "r", "ws", "hello").await;
    assert!(!r.blocked);
    let ev = r.event.unwrap();
    assert_eq!(ev.status, EventStatus::Delivered);
    let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
    assert_eq!(stored.status, EventStatus::Delivered);
    assert_eq!(stored.blocked_by, None);
    let res = |c: &str| stored.delivery_results[&ChannelId::from(c)].clone();
    assert_eq!(res("failing").status, DeliveryStatus::Failed);
    assert_eq!(res("slow").status, DeliveryStatus::Failed);
    assert_eq!(res("slow").error.unwrap().code, "timeout");
    assert_eq!(res("ok").status, DeliveryStatus::Sent);
    assert_eq!(ok.delivered_texts(), vec!["hello"]);

    let names = log.names().await;
    assert_eq!(names.iter().filter(|n| **n == "delivery_failed").count(), 2);
    assert!(names.contains(&"broadcast_partial_failure"));
    assert_eq!(
        timeline(&kit, "r")
            .await
            .iter()
            .filter(|e| e.status != EventStatus::Delivered)
            .count(),
        0
    );
}

/// C-31: the store interface offers the §14.1 operations, and the
/// in-memory store ships and implements them.
#[tokio::test]
async fn c31_store_interface_has_rfc_operations() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    assert_eq!(store.backend_name(), "memory");
    assert!(!store.is_shared());
    // rooms: create, get, update, list, find, find_latest, delete
    let mut room = Room::new("r1".into(), t0());
    room.organization_id = Some("o".into());
    store.create_room(room.clone()).await.unwrap();
    let mut later = Room::new("r2".into(), t0() + chrono::Duration::seconds(1));
    later.organization_id = Some("o".into());
    store.create_room(later).await.unwrap();
    assert!(store.create_room(room).await.is_err(), "duplicate room id");
    assert_eq!(
        store.get_room(&"r1".into()).await.unwrap().unwrap().id,
        "r1"
    );
    let patched = store
        .update_room(
            &"r1".into(),
            &RoomPatch {
                status: Some(RoomStatus::Paused),
                ..RoomPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.status, RoomStatus::Paused);
    let q = RoomQuery {
        organization_id: Some("o".into()),
        ..RoomQuery::default()
    };
    assert_eq!(store.list_rooms(&q).await.unwrap().len(), 2);
    assert_eq!(store.find_room(&q).await.unwrap().unwrap().id, "r1");
    assert_eq!(store.find_latest_room(&q).await.unwrap().unwrap().id, "r2");
    assert!(store.delete_room(&"r2".into()).await.unwrap());
    assert!(store.get_room(&"r2".into()).await.unwrap().is_none());

    // events: add, get, list, update
    let mut e = RoomEvent::text(EventSource::system(), "x");
    e.id = "e0".into();
    e.room_id = "r1".into();
    e.status = EventStatus::Delivered;
    store.add_event(e, None).await.unwrap();
    let mut meta = Map::new();
    meta.insert("k".into(), 1.into());
    let updated = store
        .update_event(
            &"e0".into(),
            &EventPatch {
                merge_metadata: Some(meta),
                ..EventPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.metadata["k"], 1);
    assert_eq!(
        store
            .list_events(&"r1".into(), &EventQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.get_event(&"e0".into()).await.unwrap().is_some());

    // bindings: create, get, list, delete (through the engine, which fills
    // them the way it stores them)
    let ch = RecordingChannel::websocket("ws");
    let kit = RoomKit::builder()
        .store(store.clone())
        .channel(ch.arc())
        .build()
        .unwrap();
    let b = kit
        .attach_channel(&"r1".into(), &"ws".into(), AttachOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.get_binding(&"r1".into(), &"ws".into()).await.unwrap(),
        Some(b)
    );
    assert_eq!(store.list_bindings(&"r1".into()).await.unwrap().len(), 1);

    // participants: create, get, update, list, delete
    let p = kit
        .add_participant(&"r1".into(), AddParticipant::default())
        .await
        .unwrap();
    let mut p2 = store
        .get_participant(&"r1".into(), &p.id)
        .await
        .unwrap()
        .unwrap();
    p2.display_name = Some("Ada".into());
    store.update_participant(p2).await.unwrap();
    assert_eq!(
        store.list_participants(&"r1".into()).await.unwrap()[0]
            .display_name
            .as_deref(),
        Some("Ada")
    );
    assert!(store.delete_participant(&"r1".into(), &p.id).await.unwrap());
    assert!(
        store
            .delete_binding(&"r1".into(), &"ws".into())
            .await
            .unwrap()
    );

    // identities: store, get, resolve_by_address
    let mut addrs = std::collections::BTreeMap::new();
    addrs.insert(ChannelType::Sms, vec!["+1555".to_owned()]);
    let ident = Identity {
        id: "id1".into(),
        organization_id: Some("o".into()),
        display_name: None,
        channel_addresses: addrs,
        external_id: None,
        metadata: Map::new(),
    };
    store.store_identity(ident.clone()).await.unwrap();
    assert_eq!(
        store.get_identity(&"id1".into()).await.unwrap(),
        Some(ident)
    );
    assert_eq!(
        store
            .resolve_by_address(&ChannelType::Sms, "+1555", Some("o"))
            .await
            .unwrap()
            .unwrap()
            .id,
        "id1"
    );

    // tasks and observations: create, list
    let mut t = Task::new("follow_up");
    t.id = "t1".into();
    t.room_id = "r1".into();
    store.create_task(t).await.unwrap();
    assert_eq!(
        store
            .list_tasks(&"r1".into(), &Default::default())
            .await
            .unwrap()
            .len(),
        1
    );
    let mut o = Observation::new("sentiment", Map::new());
    o.id = "o1".into();
    o.room_id = "r1".into();
    store.create_observation(o).await.unwrap();
    assert_eq!(
        store.list_observations(&"r1".into()).await.unwrap().len(),
        1
    );
}

/// C-32: values handed out by the store are the caller's: changing them
/// changes nothing stored, and event snapshots stay frozen.
#[tokio::test]
async fn c32_returned_objects_are_caller_owned() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    kit.process_inbound(InboundMessage::text("ws", "alice", "orig").in_room("r"))
        .await
        .unwrap();

    let mut room = kit.get_room(&"r".into()).await.unwrap();
    room.status = RoomStatus::Archived;
    room.event_count = 999;
    room.metadata.insert("x".into(), 1.into());
    let fresh = kit.get_room(&"r".into()).await.unwrap();
    assert_eq!(fresh.status, RoomStatus::Active);
    assert_eq!(fresh.event_count, 2);
    assert!(fresh.metadata.is_empty());

    let mut bindings = kit.list_bindings(&"r".into()).await.unwrap();
    bindings[0].access = Access::None;
    bindings[0].muted = true;
    let b = kit.get_binding(&"r".into(), &"ws".into()).await.unwrap();
    assert_eq!(b.access, Access::ReadWrite);
    assert!(!b.muted);

    let mut parts = kit.list_participants(&"r".into()).await.unwrap();
    parts[0].display_name = Some("mallory".into());
    assert_eq!(
        kit.list_participants(&"r".into()).await.unwrap()[0]
            .display_name
            .as_deref(),
        Some("alice")
    );

    // An event snapshot taken before an update keeps its content; a copy
    // of it changed by the caller is not the stored event.
    let tl = timeline(&kit, "r").await;
    let snapshot = tl.last().unwrap().clone();
    let mut copy = (*snapshot).clone();
    copy.content = EventContent::text("tampered");
    kit.update_event(
        &"r".into(),
        &snapshot.id,
        EventUpdate {
            content: Some(EventContent::text("updated")),
            ..EventUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(snapshot.content.as_text(), Some("orig"));
    let now = kit.get_event(&"r".into(), &snapshot.id).await.unwrap();
    assert_eq!(now.content.as_text(), Some("updated"));
    assert_eq!(copy.content.as_text(), Some("tampered"));
}
