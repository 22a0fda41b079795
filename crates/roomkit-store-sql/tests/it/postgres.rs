//! PostgreSQL across processes: distributed room locks, locks of dead
//! holders, and two engine processes writing into the same rooms.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use roomkit_core::RoomKit;
use roomkit_core::model::{EventType, InboundMessage, RoomId};
use roomkit_core::store::EventQuery;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;

use crate::common::{Target, engine, pg_url, room_with_ws, spawn_child};

/// Generous bound for things that must happen; reaching it is a failure.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_is_shared_with_a_distributed_lock() {
    let Some(url) = pg_url("postgres_backend_is_shared_with_a_distributed_lock") else {
        return;
    };
    let backend = Target::postgres(&url).open().await;
    assert!(backend.store.is_shared());
    assert!(backend.locks.is_distributed());
    // So the engine accepts it without allow_unsafe_locking().
    let built = RoomKit::builder()
        .store(backend.store.clone())
        .lock_manager(backend.locks.clone())
        .build();
    assert!(built.is_ok());
    // An in-process lock with this store is refused.
    let unsafe_kit = RoomKit::builder().store(backend.store.clone()).build();
    assert!(unsafe_kit.is_err());
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_locks_exclude_across_lock_managers() {
    let Some(url) = pg_url("postgres_locks_exclude_across_lock_managers") else {
        return;
    };
    let target = Target::postgres(&url);
    // Two backends stand for two processes: their lock managers share
    // nothing but the database.
    let a = target.open().await;
    let b = target.open().await;
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let entries = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let locks = if t % 2 == 0 {
            a.locks.clone()
        } else {
            b.locks.clone()
        };
        let (inside, overlaps, entries) = (inside.clone(), overlaps.clone(), entries.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let lock = locks
                    .acquire(&RoomId::from("shared"))
                    .await
                    .expect("acquire");
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                entries.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                inside.store(false, Ordering::SeqCst);
                drop(lock);
            }
        }));
    }
    for t in tasks {
        t.await.expect("lock task");
    }
    assert_eq!(entries.load(Ordering::SeqCst), 80);
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two holders were inside at once"
    );

    // Different rooms do not block each other.
    let held = a
        .locks
        .acquire(&RoomId::from("one"))
        .await
        .expect("acquire one");
    let other = tokio::time::timeout(PATIENCE, b.locks.acquire(&RoomId::from("two"))).await;
    assert!(matches!(other, Ok(Ok(_))), "another room's lock is free");
    // Locks keep connections: release them before closing.
    drop(other);
    drop(held);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lock_of_a_killed_holder_is_released() {
    let Some(url) = pg_url("postgres_lock_of_a_killed_holder_is_released") else {
        return;
    };
    let target = Target::postgres(&url);
    let backend = target.open().await;
    let mut child = spawn_child("lock_holder", &target, &[]);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    loop {
        match lines.next_line().await.expect("read child") {
            Some(l) if l == "LOCKED" => break,
            Some(_) => {}
            None => panic!("lock holder ended before taking the lock"),
        }
    }
    // While the holder lives, the lock is taken.
    let blocked = tokio::time::timeout(
        Duration::from_millis(300),
        backend.locks.acquire(&RoomId::from("locked")),
    )
    .await;
    assert!(
        blocked.is_err(),
        "the lock was granted while another process held it"
    );
    child.start_kill().expect("kill holder");
    child.wait().await.expect("wait holder");
    // Its session is gone, and with it the lock.
    let lock = tokio::time::timeout(PATIENCE, backend.locks.acquire(&RoomId::from("locked")))
        .await
        .expect("the dead holder's lock was never released")
        .expect("acquire");
    drop(lock);
    backend.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fanout_reaches_another_engine() {
    let Some(url) = pg_url("postgres_fanout_reaches_another_engine") else {
        return;
    };
    let target = Target::postgres(&url);
    let a = target.open().await;
    let b = target.open().await;
    let (kit_a, _wa) = engine(&a);
    let (kit_b, _wb) = engine(&b);
    let mut fan_a = a.start_fanout(&kit_a);
    let mut fan_b = b.start_fanout(&kit_b);
    fan_a.ready().await.expect("fan-out a");
    fan_b.ready().await.expect("fan-out b");
    room_with_ws(&kit_a, "fan").await;
    let mut seen_by_b = kit_b.subscribe_timeline();
    let mut framework_b = kit_b.subscribe();
    let mut seen_by_a = kit_a.subscribe_timeline();
    let result = kit_a
        .process_inbound(InboundMessage::text("ws", "u", "hello other process").in_room("fan"))
        .await
        .expect("process_inbound");
    let sent = result.event.expect("stored");
    let got = tokio::time::timeout(PATIENCE, async {
        loop {
            let e = seen_by_b.recv().await.expect("timeline");
            if e.id == sent.id {
                return e;
            }
        }
    })
    .await
    .expect("the event never reached the other engine");
    assert_eq!(*got, sent, "the other engine sees the committed event");
    tokio::time::timeout(PATIENCE, async {
        loop {
            let ev = framework_b.recv().await.expect("framework");
            if let roomkit_core::model::FrameworkEvent::EventProcessed { event_id, .. } = &*ev
                && *event_id == sent.id
            {
                return;
            }
        }
    })
    .await
    .expect("the framework event never reached the other engine");
    // The committing engine sees its event once: its own notification is
    // ignored.
    kit_a.idle().await;
    let mut own = 0;
    while let Ok(e) = seen_by_a.try_recv() {
        if e.id == sent.id {
            own += 1;
        }
    }
    assert_eq!(own, 1, "the committing engine saw its event exactly once");
    fan_a.stop().await;
    fan_b.stop().await;
    a.close().await;
    b.close().await;
}

#[derive(Default)]
struct ChildLog {
    ready: bool,
    written: bool,
    wrote: Vec<String>,
    seen: HashSet<String>,
    processed: HashSet<String>,
    lagged: bool,
}

fn follow(child: &mut Child) -> Arc<Mutex<ChildLog>> {
    let log = Arc::new(Mutex::new(ChildLog::default()));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let mut l = sink.lock();
            match line.split_once(' ') {
                Some(("SEEN", id)) => {
                    l.seen.insert(id.to_owned());
                }
                Some(("FW", id)) => {
                    l.processed.insert(id.to_owned());
                }
                Some(("WROTE", id)) => l.wrote.push(id.to_owned()),
                Some(("LAGGED", _)) => l.lagged = true,
                _ if line == "READY" => l.ready = true,
                _ if line == "WRITTEN" => l.written = true,
                _ => {}
            }
        }
    });
    log
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn tell(child: &mut Child, line: &str) {
    let stdin = child.stdin.as_mut().expect("stdin");
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write to child");
    stdin.flush().await.expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_engine_processes_share_rooms() {
    let Some(url) = pg_url("postgres_two_engine_processes_share_rooms") else {
        return;
    };
    const PER_PROCESS: usize = 30;
    let target = Target::postgres(&url);
    let rooms = ["r0", "r1", "r2"];
    let backend = target.open().await;
    {
        let (kit, _ws) = engine(&backend);
        for r in rooms {
            room_with_ws(&kit, r).await;
        }
        kit.shutdown().await;
    }
    let mut start = Vec::new();
    for r in rooms {
        let room = backend
            .store
            .get_room(&RoomId::from(r))
            .await
            .unwrap()
            .unwrap();
        start.push(room.event_count);
    }

    let env = |name: &str| {
        vec![
            ("ROOMKIT_ROOMS", rooms.join(",")),
            ("ROOMKIT_COUNT", PER_PROCESS.to_string()),
            ("ROOMKIT_NAME", name.to_owned()),
        ]
    };
    let mut a = spawn_child("engine_writer", &target, &env("a"));
    let mut b = spawn_child("engine_writer", &target, &env("b"));
    let (log_a, log_b) = (follow(&mut a), follow(&mut b));
    wait_for("both engines listening", || {
        log_a.lock().ready && log_b.lock().ready
    })
    .await;
    tell(&mut a, "GO").await;
    tell(&mut b, "GO").await;
    wait_for("both engines done writing", || {
        log_a.lock().written && log_b.lock().written
    })
    .await;

    // The merged timeline of each room: unique, gap-free indexes.
    let mut committed = HashSet::new();
    let mut messages = 0;
    for (r, first) in rooms.iter().zip(&start) {
        let room = RoomId::from(*r);
        let events = backend
            .store
            .list_events(&room, &EventQuery::default())
            .await
            .unwrap();
        let indexes: Vec<u64> = events.iter().map(|e| e.index).collect();
        assert_eq!(
            indexes,
            (0..events.len() as u64).collect::<Vec<_>>(),
            "room {r} gap-free"
        );
        let stored = backend.store.get_room(&room).await.unwrap().unwrap();
        assert_eq!(stored.event_count, events.len() as u64, "room {r} counters");
        for e in events.iter().filter(|e| e.index >= *first) {
            committed.insert(e.id.to_string());
            if e.event_type == EventType::Message {
                messages += 1;
            }
        }
    }
    assert_eq!(
        messages,
        2 * PER_PROCESS,
        "every message stored exactly once"
    );
    let wrote: HashSet<String> = log_a
        .lock()
        .wrote
        .iter()
        .chain(log_b.lock().wrote.iter())
        .cloned()
        .collect();
    assert_eq!(wrote.len(), 2 * PER_PROCESS);
    assert!(wrote.is_subset(&committed));

    // Every committed event reaches the subscribers of both processes, and
    // so does the event_processed notice of every message.
    wait_for("both engines to see every event", || {
        let (la, lb) = (log_a.lock(), log_b.lock());
        committed.is_subset(&la.seen)
            && committed.is_subset(&lb.seen)
            && wrote.is_subset(&la.processed)
            && wrote.is_subset(&lb.processed)
    })
    .await;
    assert!(!log_a.lock().lagged && !log_b.lock().lagged);
    tell(&mut a, "STOP").await;
    tell(&mut b, "STOP").await;
    assert!(a.wait().await.expect("wait a").success());
    assert!(b.wait().await.expect("wait b").success());
    backend.close().await;
}
