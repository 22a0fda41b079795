//! Helper processes: this test binary re-run with `ROOMKIT_TEST_CHILD` set.
//! They talk to the parent test through stdout lines (and read commands on
//! stdin).

use std::io::Write;
use std::time::Duration;

use roomkit_core::model::{FrameworkEvent, InboundMessage, RoomId};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{Target, engine};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the helper named by `ROOMKIT_TEST_CHILD`, if any, then exits.
pub fn main_if_child() {
    let Ok(role) = std::env::var("ROOMKIT_TEST_CHILD") else {
        return;
    };
    let target = Target {
        url: std::env::var("ROOMKIT_TEST_CHILD_URL").expect("child URL"),
        schema: std::env::var("ROOMKIT_TEST_CHILD_SCHEMA")
            .ok()
            .filter(|s| !s.is_empty()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        match role.as_str() {
            "crash_writer" => crash_writer(target).await,
            "lock_holder" => lock_holder(target).await,
            "engine_writer" => engine_writer(target).await,
            other => panic!("unknown helper role {other}"),
        }
    });
    std::process::exit(0);
}

/// Writes messages into room `crash` until killed, acknowledging each one
/// after `process_inbound` returned.
async fn crash_writer(target: Target) {
    let backend = target.open().await;
    let (kit, _ws) = engine(&backend);
    say("READY");
    for i in 0..1_000_000u64 {
        let msg = InboundMessage::text("ws", "writer", format!("m{i}")).in_room("crash");
        let result = kit.process_inbound(msg).await.expect("process_inbound");
        let event = result.event.expect("stored event");
        say(&format!("ACK {} {}", event.index, event.id));
    }
}

/// Takes the lock of room `locked` and holds it until killed.
async fn lock_holder(target: Target) {
    let backend = target.open().await;
    let _lock = backend
        .locks
        .acquire(&RoomId::from("locked"))
        .await
        .expect("acquire");
    say("LOCKED");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// One engine of the two-process test: listens, waits for GO, writes its
/// share of messages, and reports every event and `event_processed` its
/// subscribers see until told to STOP.
async fn engine_writer(target: Target) {
    let rooms: Vec<String> = std::env::var("ROOMKIT_ROOMS")
        .expect("rooms")
        .split(',')
        .map(str::to_owned)
        .collect();
    let count: usize = std::env::var("ROOMKIT_COUNT")
        .expect("count")
        .parse()
        .expect("count is a number");
    let name = std::env::var("ROOMKIT_NAME").expect("name");
    let backend = target.open().await;
    let (kit, _ws) = engine(&backend);
    let mut timeline = kit.subscribe_timeline();
    let mut framework = kit.subscribe();
    let mut fanout = backend.start_fanout(&kit);
    fanout.ready().await.expect("fan-out ready");

    tokio::spawn(async move {
        loop {
            match timeline.recv().await {
                Ok(e) => say(&format!("SEEN {}", e.id)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    say(&format!("LAGGED {n}"));
                }
                Err(_) => return,
            }
        }
    });
    tokio::spawn(async move {
        loop {
            match framework.recv().await {
                Ok(ev) => {
                    if let FrameworkEvent::EventProcessed { event_id, .. } = &*ev {
                        say(&format!("FW {event_id}"));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    say(&format!("LAGGED {n}"));
                }
                Err(_) => return,
            }
        }
    });

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    say("READY");
    while let Ok(Some(line)) = stdin.next_line().await {
        if line.trim() == "GO" {
            break;
        }
    }
    for i in 0..count {
        let room = &rooms[i % rooms.len()];
        let msg = InboundMessage::text("ws", format!("{name}-sender"), format!("{name} {i}"))
            .in_room(room.as_str());
        let result = kit.process_inbound(msg).await.expect("process_inbound");
        let event = result.event.expect("stored event");
        say(&format!("WROTE {}", event.id));
    }
    say("WRITTEN");
    while let Ok(Some(line)) = stdin.next_line().await {
        if line.trim() == "STOP" {
            break;
        }
    }
    fanout.stop().await;
    kit.shutdown().await;
    backend.close().await;
}
