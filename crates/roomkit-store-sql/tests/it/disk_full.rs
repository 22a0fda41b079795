//! A SQLite store on a disk that fills up: writes fail with a retryable
//! store error while the disk is full, succeed again by themselves once
//! space is freed (no reopen), and nothing acknowledged before is lost.
//!
//! The disk is a 2 MiB tmpfs (needs root, as in CI); the test fails with a
//! clear message when it cannot be mounted.

use roomkit_core::model::{InboundMessage, RoomId};
use roomkit_core::store::EventQuery;
use roomkit_core::{RoomKitError, StoreError};
use roomkit_testkit::tmpfs::Tmpfs;

use crate::common::{Target, engine, room_with_ws};

fn text_of(e: &roomkit_core::model::RoomEvent) -> Option<String> {
    match &e.content {
        roomkit_core::model::EventContent::Text(t) => Some(t.text.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_resume_by_themselves_once_disk_space_returns() {
    let disk = Tmpfs::mount(2048);
    let target = Target {
        url: format!("sqlite://{}", disk.path().join("rooms.db").display()),
        schema: None,
    };
    let backend = target.open().await;
    let (kit, _ws) = engine(&backend);
    room_with_ws(&kit, "full").await;
    let room = RoomId::from("full");
    let send = |text: String| {
        let kit = kit.clone();
        async move {
            kit.process_inbound(InboundMessage::text("ws", "writer", text.clone()).in_room("full"))
                .await
                .map(|_| text)
        }
    };

    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(
            send(format!("before {i}"))
                .await
                .expect("write before the disk fills"),
        );
    }

    disk.fill();
    let padding = "x".repeat(16 * 1024);
    let mut failures = Vec::new();
    for i in 0..400 {
        match send(format!("while full {i} {padding}")).await {
            Ok(text) => acked.push(text),
            Err(e) => {
                failures.push(e.to_string());
                match &e {
                    RoomKitError::Store(s @ StoreError::Backend(msg)) => {
                        assert!(s.is_retryable(), "{e}");
                        assert!(
                            msg.contains("disk") || msg.contains("full"),
                            "the error says the disk is full: {msg}"
                        );
                    }
                    other => panic!("a full disk is a retryable store error, got {other:?}"),
                }
                if failures.len() >= 12 {
                    break;
                }
            }
        }
    }
    assert!(
        !failures.is_empty(),
        "writes must fail on the full disk ({} succeeded)",
        acked.len()
    );

    disk.free();
    // Every pooled connection gets used: more writes than connections.
    for i in 0..24 {
        match send(format!("after {i}")).await {
            Ok(text) => acked.push(text),
            Err(e) => panic!(
                "write {i} after space returned failed: {e}\nfailures while full: {failures:#?}"
            ),
        }
    }

    let check = |events: &[std::sync::Arc<roomkit_core::model::RoomEvent>]| {
        let texts: Vec<String> = events.iter().filter_map(|e| text_of(e)).collect();
        assert_eq!(texts, acked, "exactly the acknowledged messages, in order");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.index, i as u64, "indexes are gap-free");
        }
    };
    let query = EventQuery {
        limit: Some(10_000),
        ..EventQuery::default()
    };
    check(&backend.store.list_events(&room, &query).await.unwrap());
    kit.shutdown().await;
    backend.close().await;

    // Reopened: the same timeline, and SQLite finds the file sound.
    let backend = target.open().await;
    check(&backend.store.list_events(&room, &query).await.unwrap());
    backend.close().await;
    let pool = sqlx::SqlitePool::connect(&target.url).await.unwrap();
    let (verdict,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(verdict, "ok");
    pool.close().await;
}
