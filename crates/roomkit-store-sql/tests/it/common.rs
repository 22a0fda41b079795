//! Helpers: temporary SQLite files, PostgreSQL schemas, engines, and
//! re-running this binary as a helper process.

use roomkit_core::model::{ChannelId, RoomId};
use roomkit_core::{AttachOptions, CreateRoom, RoomKit};
use roomkit_store_sql::{SqlBackend, SqlOptions};
use roomkit_testkit::RecordingChannel;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::process::{Child, Command};

/// The PostgreSQL URL of the test server, or `None` after saying the test
/// was skipped.
pub fn pg_url(test: &str) -> Option<String> {
    match std::env::var("ROOMKIT_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            // The README's test command sets this: there, a missing server
            // is a failure, not a skip.
            if std::env::var_os("ROOMKIT_TEST_REQUIRE_ALL").is_some() {
                panic!(
                    "{test}: ROOMKIT_TEST_POSTGRES_URL is not set (scripts/test starts a private PostgreSQL and sets it)"
                );
            }
            // Straight to stderr, past the test harness's output capture,
            // so a local run shows what it did not test.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "{test}: skipped: ROOMKIT_TEST_POSTGRES_URL not set"
            );
            None
        }
    }
}

/// A unique lowercase name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Options for a test backend in `schema` (PostgreSQL) with small pools.
pub fn options(schema: Option<&str>) -> SqlOptions {
    SqlOptions {
        max_connections: 4,
        lock_connections: 4,
        pg_schema: schema.map(str::to_owned),
        ..SqlOptions::default()
    }
}

/// Where a test's backend lives: a SQLite file or a PostgreSQL schema.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub schema: Option<String>,
}

impl Target {
    pub fn sqlite(dir: &TempDir, name: &str) -> Self {
        Self {
            url: format!("sqlite://{}", dir.path().join(name).display()),
            schema: None,
        }
    }

    pub fn postgres(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            schema: Some(unique("t")),
        }
    }

    pub async fn open(&self) -> SqlBackend {
        roomkit_store_sql::open_with(&self.url, &options(self.schema.as_deref()))
            .await
            .expect("open backend")
    }
}

/// A directory removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(unique("roomkit-sql-test"));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An engine on `backend` with one websocket channel `ws`.
pub fn engine(backend: &SqlBackend) -> (RoomKit, RecordingChannel) {
    let ws = RecordingChannel::websocket("ws");
    let kit = RoomKit::builder()
        .store(backend.store.clone())
        .lock_manager(backend.locks.clone())
        .channel(ws.arc())
        .build()
        .expect("build engine");
    (kit, ws)
}

/// Creates `room` with `ws` attached.
pub async fn room_with_ws(kit: &RoomKit, room: &str) {
    kit.create_room(CreateRoom::with_id(room))
        .await
        .expect("create room");
    kit.attach_channel(
        &RoomId::from(room),
        &ChannelId::from("ws"),
        AttachOptions::default(),
    )
    .await
    .expect("attach ws");
}

/// Starts this test binary again as a helper process of `role`.
pub fn spawn_child(role: &str, target: &Target, extra: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_entry",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env("ROOMKIT_TEST_CHILD", role)
    .env("ROOMKIT_TEST_CHILD_URL", &target.url)
    .env(
        "ROOMKIT_TEST_CHILD_SCHEMA",
        target.schema.clone().unwrap_or_default(),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn helper process")
}

/// A pseudo-random number from the clock (tests need variety, not quality).
pub fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    u64::from(nanos.wrapping_mul(2_654_435_761)) % n.max(1)
}
