//! SQL store benchmarks: appends and timeline page reads straight on the
//! store, and the inbound pipeline on a durable store.
//!
//! `--store sqlite|postgres` picks the backend (SQLite by default).
//! SQLite runs on a fresh file in the temporary directory (`--sqlite-sync
//! full|normal`, full by default); PostgreSQL needs `--url` or
//! `ROOMKIT_BENCH_POSTGRES_URL` / `ROOMKIT_TEST_POSTGRES_URL`, and each run
//! uses a fresh schema.

use std::sync::Arc;
use std::time::Instant;

use roomkit_core::RoomKit;
use roomkit_core::clock::{Clock, SystemClock};
use roomkit_core::model::{
    ChannelDirection, ChannelId, ChannelType, EventSource, EventStatus, Room, RoomEvent, RoomId,
};
use roomkit_core::store::{EventQuery, Store};
use roomkit_store_sql::{SqlBackend, SqlOptions};
use serde_json::json;

use crate::common::{Options, cpu_seconds, emit, latency_summary, round1};

/// Runs a store workload; `Ok(false)` when the name is not one.
pub fn run(workload: &str, opts: &Options) -> anyhow::Result<bool> {
    match workload {
        "store_append" | "store_page_read" | "store_inbound_single" => {}
        // Reached when the core runner passes a durable-store run on.
        "inbound_single" if opts.get("store").is_some_and(|s| s != "memory") => {}
        _ => return Ok(false),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let db = Database::open(opts).await?;
        let result = match workload {
            "store_append" => append(opts, &db).await,
            "store_page_read" => page_read(opts, &db).await,
            _ => inbound(opts, &db).await,
        };
        db.backend.close().await;
        result
    })?;
    Ok(true)
}

/// A fresh database for one run (removed afterwards when it is a file).
struct Database {
    name: String,
    backend: SqlBackend,
    _file: Option<TempFile>,
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Database {
    async fn open(opts: &Options) -> anyhow::Result<Self> {
        let unique = uuid_like();
        match opts.get("store").unwrap_or("sqlite") {
            "sqlite" => {
                let path = std::env::temp_dir().join(format!("roomkit-bench-{unique}.db"));
                let options = SqlOptions {
                    sqlite_full_sync: opts.get("sqlite-sync").unwrap_or("full") != "normal",
                    ..SqlOptions::default()
                };
                let file = TempFile(path.clone());
                let backend =
                    roomkit_store_sql::open_with(&format!("sqlite://{}", path.display()), &options)
                        .await?;
                Ok(Self {
                    name: "sqlite".into(),
                    backend,
                    _file: Some(file),
                })
            }
            "postgres" => {
                let url = opts
                    .get("url")
                    .map(str::to_owned)
                    .or_else(|| std::env::var("ROOMKIT_BENCH_POSTGRES_URL").ok())
                    .or_else(|| std::env::var("ROOMKIT_TEST_POSTGRES_URL").ok())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--store postgres needs --url or ROOMKIT_BENCH_POSTGRES_URL"
                        )
                    })?;
                let options = SqlOptions {
                    pg_schema: Some(format!("bench_{unique}")),
                    ..SqlOptions::default()
                };
                let backend = roomkit_store_sql::open_with(&url, &options).await?;
                Ok(Self {
                    name: "postgres".into(),
                    backend,
                    _file: None,
                })
            }
            other => anyhow::bail!("unknown store {other:?}; use sqlite or postgres"),
        }
    }
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos, std::process::id())
}

fn event(room: &RoomId, index: u64) -> RoomEvent {
    let mut e = RoomEvent::text(
        EventSource::channel(
            ChannelId::from("ws-a"),
            ChannelType::Websocket,
            ChannelDirection::Inbound,
        ),
        format!("message {index} with a little text to store"),
    );
    e.id = format!("{room}-{index}").into();
    e.room_id = room.clone();
    e.index = index;
    e.status = EventStatus::Delivered;
    e.created_at = SystemClock.now();
    e
}

async fn fill(store: &Arc<dyn Store>, room: &RoomId, n: u64) -> anyhow::Result<Vec<u64>> {
    store
        .create_room(Room::new(room.clone(), SystemClock.now()))
        .await?;
    let mut ns = Vec::with_capacity(n as usize);
    for i in 0..n {
        let e = event(room, i);
        let t = Instant::now();
        store.add_event(e, None).await?;
        ns.push(t.elapsed().as_nanos() as u64);
    }
    Ok(ns)
}

/// Sequential commits into one room: the cost of the commit point.
async fn append(opts: &Options, db: &Database) -> anyhow::Result<()> {
    let warmup: u64 = opts.num("warmup", 200)?;
    let n: u64 = opts.num("events", 5000)?;
    let store = db.backend.store.clone();
    fill(&store, &RoomId::from("warmup"), warmup).await?;
    let room = RoomId::from("append");
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut ns = fill(&store, &room, n).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stored = store.get_room(&room).await?.map(|r| r.event_count);
    anyhow::ensure!(
        stored == Some(n),
        "expected {n} events, store has {stored:?}"
    );
    let mut out = json!({
        "workload": "store_append",
        "store": db.name,
        "events": n,
        "events_per_s": round1(n as f64 / elapsed),
        "elapsed_s": round3(elapsed),
        "cpu_s": round3(cpu),
    });
    merge(&mut out, latency_summary(&mut ns));
    emit(&out);
    Ok(())
}

/// Pages of a long timeline at pseudo-random positions, as a client
/// scrolling back would read them.
async fn page_read(opts: &Options, db: &Database) -> anyhow::Result<()> {
    let events: u64 = opts.num("events", 10_000)?;
    let pages: u64 = opts.num("pages", 2000)?;
    let page: usize = opts.num("page-size", 50)?;
    let store = db.backend.store.clone();
    let room = RoomId::from("pages");
    fill(&store, &room, events).await?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % events.saturating_sub(page as u64).max(1)
    };
    for _ in 0..100 {
        read_page(&store, &room, next(), page).await?;
    }
    let mut ns = Vec::with_capacity(pages as usize);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for _ in 0..pages {
        let t = Instant::now();
        read_page(&store, &room, next(), page).await?;
        ns.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let mut out = json!({
        "workload": "store_page_read",
        "store": db.name,
        "timeline_events": events,
        "page_size": page,
        "pages": pages,
        "pages_per_s": round1(pages as f64 / elapsed),
        "cpu_s": round3(cpu),
    });
    merge(&mut out, latency_summary(&mut ns));
    emit(&out);
    Ok(())
}

async fn read_page(
    store: &Arc<dyn Store>,
    room: &RoomId,
    after: u64,
    page: usize,
) -> anyhow::Result<()> {
    let got = store
        .list_events(
            room,
            &EventQuery {
                after_index: Some(after),
                limit: Some(page),
                ..EventQuery::default()
            },
        )
        .await?;
    anyhow::ensure!(
        got.len() == page && got.first().map(|e| e.index) == Some(after + 1),
        "page after {after} came back wrong"
    );
    Ok(())
}

/// `inbound_single` of the core benchmarks, with the durable store and its
/// lock manager in the engine.
async fn inbound(opts: &Options, db: &Database) -> anyhow::Result<()> {
    let builder = RoomKit::builder()
        .store(db.backend.store.clone())
        .lock_manager(db.backend.locks.clone());
    crate::inbound::inbound(
        opts,
        crate::inbound::Shape::single(),
        "current_thread",
        Some((db.name.as_str(), builder)),
    )
    .await
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(a), serde_json::Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}
