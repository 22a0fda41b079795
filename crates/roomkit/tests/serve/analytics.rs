//! Call analytics of `roomkit serve` against a fake Roark backend: rooms
//! become calls, their export follows the protocol, shutdown flushes open
//! calls, and a process killed mid-export finishes it after a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults, Recorded};
use serde_json::{Value, json};

use crate::{Server, binary, config_file};

const KEY: &str = "rk_live_serve_test";

fn tmp(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "roomkit-serve-analytics-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A config exporting to Roark (its base URL comes from `ROARK_BASE_URL`)
/// and writing local reports.
fn analytics_config(spool: &Path, reports: &Path) -> PathBuf {
    config_file(&format!(
        r#"
[analytics]
spool_dir = "{}"
shutdown_grace_ms = 20000

[analytics.roark]
api_key_env = "ROARK_SERVE_TEST_KEY"
agent_id = "support-bot"
agent_name = "Support"
base_url = "https://roark.invalid"

[analytics.reports]
dir = "{}"
"#,
        spool.display(),
        reports.display()
    ))
}

async fn start(config: &Path, fake: &FakeRoark) -> Server {
    let base = fake.base_url();
    Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[
            ("ROARK_SERVE_TEST_KEY", KEY),
            ("ROARK_BASE_URL", base.as_str()),
        ],
    )
    .await
}

/// Waits (with a generous deadline) until `pred` holds for the accepted
/// webhook events.
async fn wait_events(fake: &FakeRoark, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..1200 {
        let ev = fake.accepted_events();
        if pred(&ev) {
            return ev;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}", fake.accepted_events());
}

fn ended(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "call-ended")
        .collect()
}

/// Waits until the echo agent answered in the room.
async fn wait_echo(s: &Server, room: &str) {
    for _ in 0..400 {
        let t = s.timeline(room).await;
        if t.iter().any(|e| e["source"]["channel_id"] == "ai") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no echo in {room}");
}

fn check_auth(r: &Recorded) {
    assert_eq!(r.header("x-roark-api-key"), Some(KEY), "{}", r.path);
    assert_eq!(
        r.header("authorization").map(str::to_owned),
        Some(format!("Bearer {KEY}")),
        "{}",
        r.path
    );
}

#[tokio::test]
async fn a_room_is_a_call_exported_to_roark_and_reported() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let (spool, reports) = (tmp("spool"), tmp("reports"));
    let config = analytics_config(&spool, &reports);
    let s = start(&config, &fake).await;

    s.room("call-1", true).await;
    s.post_text("call-1", "ws", "where is my order?").await;
    wait_echo(&s, "call-1").await;
    // A room opted out by its metadata is no call.
    s.ok(
        "POST",
        "/rooms",
        Some(json!({"id": "quiet", "metadata": {"analytics": false}})),
    )
    .await;
    s.ok(
        "POST",
        "/rooms/quiet/channels",
        Some(json!({"channel_id": "ws"})),
    )
    .await;
    s.post_text("quiet", "ws", "not observed").await;

    s.ok("PATCH", "/rooms/call-1", Some(json!({"status": "closed"})))
        .await;
    let events = wait_events(&fake, "call-ended after the room closed", |e| {
        !ended(e).is_empty()
    })
    .await;

    // call-started comes first, and is the first request of all.
    let reqs = fake.requests();
    let first = &reqs[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/integrations/livekit-sdk");
    let started = first.json().unwrap();
    assert_eq!(started["event"], "call-started");
    assert_eq!(started["agentId"], "support-bot");
    assert_eq!(started["agentName"], "Support");
    assert_eq!(started["isTest"], false);
    assert_eq!(started["roomName"], "call-1");
    for r in reqs.iter().filter(|r| r.method == "POST") {
        check_auth(r);
    }

    let e = ended(&events);
    assert_eq!(e.len(), 1, "exactly one call-ended: {events:?}");
    let e = e[0];
    assert_eq!(e["livekitCallId"], started["livekitCallId"]);
    assert_eq!(e["callStartedAt"], started["eventTimestamp"]);
    assert_eq!(e["callEndedReason"], "room-closed");
    assert_eq!(e["agentSpokeFirst"], false);
    assert!(
        e.get("recordingSampleRate").is_none(),
        "a text room has no audio"
    );
    let t = e["transcript"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[0]["role"], "user");
    assert_eq!(t[0]["content"], "where is my order?");
    assert_eq!(t[1]["role"], "assistant");
    assert!(
        t[1]["content"]
            .as_str()
            .unwrap()
            .ends_with("where is my order?")
    );
    assert!(t[0].get("audioOffsetMs").is_none());
    // Only the observed room was a call.
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "call-started")
            .count(),
        1
    );

    // The local report is listed on the calls page API.
    let call_id = e["livekitCallId"].as_str().unwrap().to_owned();
    let mut listed = Value::Null;
    for _ in 0..400 {
        listed = s.ok("GET", "/call-reports", None).await;
        if listed["items"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed["items"][0]["call_id"], call_id.as_str(), "{listed}");
    let (status, _) = s.call("GET", "/calls", None).await;
    assert_eq!(status, 200);

    assert_eq!(s.terminate().await, Some(0));
    assert_eq!(
        ended(&fake.accepted_events()).len(),
        1,
        "no second call-ended at shutdown"
    );
}

#[tokio::test]
async fn sigterm_flushes_open_calls_and_exits_0() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let (spool, reports) = (tmp("spool"), tmp("reports"));
    let config = analytics_config(&spool, &reports);
    let s = start(&config, &fake).await;
    s.room("open", true).await;
    s.post_text("open", "ws", "hello").await;
    wait_echo(&s, "open").await;
    wait_events(&fake, "call-started", |e| {
        e.iter().any(|e| e["event"] == "call-started")
    })
    .await;
    assert_eq!(s.terminate().await, Some(0));
    let events = fake.accepted_events();
    let e = ended(&events);
    assert_eq!(e.len(), 1, "{events:?}");
    assert_eq!(e[0]["callEndedReason"], "shutdown");
    let roles: Vec<&str> = e[0]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"]);
}

#[tokio::test]
async fn a_killed_server_finishes_the_export_after_restart() {
    // Roark refuses everything at first: the call-started stays pending.
    let fake = FakeRoark::start(
        KEY,
        Faults {
            fail_first: u64::MAX,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let (spool, reports) = (tmp("spool"), tmp("reports"));
    let config = analytics_config(&spool, &reports);
    let mut s = start(&config, &fake).await;
    s.room("crash", true).await;
    s.post_text("crash", "ws", "are you there?").await;
    wait_echo(&s, "crash").await;
    // Wait for a refused attempt, so the export is pending for sure, and
    // for both transcript lines in the spool.
    for _ in 0..400 {
        if !fake.requests().is_empty() && spooled_roles(&spool) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!fake.requests().is_empty(), "the exporter tried");
    assert_eq!(spooled_roles(&spool), 2, "both sides are spooled");
    s.child.start_kill().unwrap();
    s.child.wait().await.unwrap();
    assert!(fake.accepted_events().is_empty());

    fake.set_faults(Faults::default());
    let s = start(&config, &fake).await;
    let events = wait_events(&fake, "call-ended after the restart", |e| {
        !ended(e).is_empty()
    })
    .await;
    let e = ended(&events);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["callEndedReason"], "process-restarted");
    let t = e[0]["transcript"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[0]["role"], "user");
    assert_eq!(t[0]["content"], "are you there?");
    assert_eq!(t[1]["role"], "assistant");
    let first = events.first().unwrap();
    assert_eq!(first["event"], "call-started");
    assert_eq!(first["livekitCallId"], e[0]["livekitCallId"]);
    assert_eq!(s.terminate().await, Some(0));
    assert_eq!(ended(&fake.accepted_events()).len(), 1, "exactly once");
}

/// How many of the roles user and assistant appear in the spooled records
/// of the one call in `spool`.
fn spooled_roles(spool: &Path) -> usize {
    let Ok(calls) = std::fs::read_dir(spool.join("calls")) else {
        return 0;
    };
    let mut text = String::new();
    for c in calls.flatten() {
        text.push_str(&std::fs::read_to_string(c.path().join("records.jsonl")).unwrap_or_default());
    }
    ["\"role\":\"user\"", "\"role\":\"assistant\""]
        .iter()
        .filter(|r| text.contains(*r))
        .count()
}

fn run(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(binary());
    cmd.arg("serve")
        .args(["--config", config.to_str().unwrap()])
        .args(["--addr", "127.0.0.1:0", "--store", "memory://"])
        .env_remove("ROARK_SERVE_TEST_KEY")
        .env_remove("ROARK_OBSERVABILITY_ENABLED")
        .env_remove("ROARK_BASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unset_roark_key_is_a_config_error() {
    let config = config_file(
        "[analytics.roark]\napi_key_env = \"ROARK_SERVE_TEST_KEY\"\nagent_id = \"a\"\n",
    );
    let (code, err) = run(&config, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("analytics.roark.api_key_env"), "{err}");
    assert!(err.contains("ROARK_SERVE_TEST_KEY is not set"), "{err}");

    let config =
        config_file("[analytics.roark]\napi_key_env = \"K\"\nagent_id = \"a\"\ncolour = \"red\"\n");
    let (code, err) = run(&config, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[tokio::test]
async fn the_kill_switch_runs_the_server_without_export() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let config = config_file(
        "[analytics.roark]\napi_key_env = \"ROARK_SERVE_TEST_KEY_UNSET\"\nagent_id = \"a\"\n",
    );
    let base = fake.base_url();
    let s = Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[
            ("ROARK_OBSERVABILITY_ENABLED", "false"),
            ("ROARK_BASE_URL", base.as_str()),
        ],
    )
    .await;
    s.room("r", true).await;
    s.post_text("r", "ws", "hi").await;
    wait_echo(&s, "r").await;
    assert!(
        s.log().contains("ROARK_OBSERVABILITY_ENABLED"),
        "the switch is logged"
    );
    assert_eq!(s.terminate().await, Some(0));
    assert!(fake.requests().is_empty(), "no traffic at all");
}

/// Runs a second `roomkit serve` on `config` at `addr` with the Roark
/// environment; its exit code (`None` when it was still running after a
/// generous wait, and was killed) and stderr.
async fn second_instance(config: &Path, addr: &str, fake: &FakeRoark) -> (Option<i32>, String) {
    let base = fake.base_url();
    let mut child = tokio::process::Command::new(binary())
        .args(["serve", "--addr", addr, "--store", "memory://"])
        .args(["--config", config.to_str().unwrap()])
        .env("ROARK_SERVE_TEST_KEY", KEY)
        .env("ROARK_BASE_URL", base.as_str())
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let read = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let code = match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(status) => status.unwrap().code(),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    (code, read.await.unwrap())
}

/// A second server started on the same spool, whether it then fails to
/// bind the running one's address or listens elsewhere, refuses to start
/// and leaves the running server's live call alone: the call is exported
/// once, whole, when it really ends.
#[tokio::test]
async fn a_second_instance_on_the_same_spool_leaves_the_running_calls_alone() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let (spool, reports) = (tmp("spool"), tmp("reports"));
    let config = analytics_config(&spool, &reports);
    let s = start(&config, &fake).await;
    s.room("live", true).await;
    s.post_text("live", "ws", "first words").await;
    wait_echo(&s, "live").await;

    // Same address: the socket is taken, so it stops before the spool.
    let (code, err) = second_instance(&config, &s.addr, &fake).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("address") || err.contains("Address"), "{err}");
    // Another address: the spool is locked.
    let (code, err) = second_instance(&config, "127.0.0.1:0", &fake).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(&spool.display().to_string()), "{err}");
    assert!(
        err.contains(&format!("pid {}", s.child.id().unwrap())),
        "{err}"
    );
    // Give anything a second process might have started time to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        ended(&fake.accepted_events()).is_empty(),
        "the live call was ended by another process: {:?}",
        fake.accepted_events()
    );

    // The running server still records the call, and exports it once.
    s.post_text("live", "ws", "last words").await;
    s.ok("PATCH", "/rooms/live", Some(json!({"status": "closed"})))
        .await;
    let events = wait_events(&fake, "call-ended after the room closed", |e| {
        !ended(e).is_empty()
    })
    .await;
    let e = ended(&events);
    assert_eq!(e.len(), 1, "{events:?}");
    assert_eq!(e[0]["callEndedReason"], "room-closed");
    let t = e[0]["transcript"].to_string();
    assert!(t.contains("first words") && t.contains("last words"), "{t}");
    assert!(!s.log().contains("ERROR"), "{}", s.log());
    assert_eq!(s.terminate().await, Some(0));
}

/// Calls the fake received for `room` of `event` (`call-started`, `call-ended`).
fn calls_of(fake: &FakeRoark, room: &str, event: &str) -> usize {
    let events = fake.accepted_events();
    let ids: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "call-started" && e["roomName"] == room)
        .map(|e| &e["livekitCallId"])
        .collect();
    events
        .iter()
        .filter(|e| e["event"] == event && ids.contains(&&e["livekitCallId"]))
        .count()
}

/// Several processes on one PostgreSQL store: each call is exported by
/// one of them only (the holder of its lease), and when the holder is
/// killed another takes the room over once the lease expires.
#[tokio::test]
async fn processes_sharing_postgres_export_each_call_once_and_take_over_a_dead_owner() {
    let url = match std::env::var("ROOMKIT_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ => {
            if std::env::var_os("ROOMKIT_TEST_REQUIRE_ALL").is_some() {
                panic!("ROOMKIT_TEST_POSTGRES_URL is not set (scripts/test sets it)");
            }
            eprintln!("skipped: ROOMKIT_TEST_POSTGRES_URL not set");
            return;
        }
    };
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let config = |tag: &str| {
        config_file(&format!(
            r#"
[analytics]
spool_dir = "{}"
lease_ms = 1500

[analytics.roark]
api_key_env = "ROARK_SERVE_TEST_KEY"
agent_id = "support-bot"
"#,
            tmp(tag).display()
        ))
    };
    let base = fake.base_url();
    let env = [
        ("ROARK_SERVE_TEST_KEY", KEY),
        ("ROARK_BASE_URL", base.as_str()),
    ];
    let (ca, cb) = (config("pg-a"), config("pg-b"));
    let start_on = |c: PathBuf| {
        let url = url.clone();
        async move {
            Server::start_with(&["--config", c.to_str().unwrap(), "--store", &url], &env).await
        }
    };
    let n = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let (taken, shared) = (format!("taken-{n}"), format!("shared-{n}"));

    // A call that A holds before B exists.
    let mut a = start_on(ca).await;
    a.room(&taken, true).await;
    a.post_text(&taken, "ws", "hello from the first process")
        .await;
    wait_echo(&a, &taken).await;
    wait_events(&fake, "A starts its call", |_| {
        calls_of(&fake, &taken, "call-started") == 1
    })
    .await;
    let b = start_on(cb).await;

    // A call both processes see: started and ended once.
    a.room(&shared, true).await;
    a.post_text(&shared, "ws", "one").await;
    b.post_text(&shared, "ws", "two").await;
    wait_echo(&b, &shared).await;
    b.ok(
        "PATCH",
        &format!("/rooms/{shared}"),
        Some(json!({"status": "closed"})),
    )
    .await;
    wait_events(&fake, "the shared call ends", |_| {
        calls_of(&fake, &shared, "call-ended") >= 1
    })
    .await;
    // B, seeing a message of A's room, does not start a second call.
    b.post_text(&taken, "ws", "B is here too").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls_of(&fake, &shared, "call-started"), 1);
    assert_eq!(calls_of(&fake, &shared, "call-ended"), 1);
    assert_eq!(calls_of(&fake, &taken, "call-started"), 1);

    // A dies; after its lease expires, B takes the room over.
    a.child.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    b.post_text(&taken, "ws", "after the first process died")
        .await;
    b.ok(
        "PATCH",
        &format!("/rooms/{taken}"),
        Some(json!({"status": "closed"})),
    )
    .await;
    let events = wait_events(&fake, "B exports the room it took over", |_| {
        calls_of(&fake, &taken, "call-ended") == 1
    })
    .await;
    assert!(
        events
            .iter()
            .filter(|e| e["event"] == "call-ended")
            .any(|e| e["transcript"]
                .to_string()
                .contains("after the first process died")),
        "{events:?}"
    );
    assert_eq!(b.terminate().await, Some(0));
    assert_eq!(calls_of(&fake, &taken, "call-ended"), 1);
}
