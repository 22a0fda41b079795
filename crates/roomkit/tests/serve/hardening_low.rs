//! Hardening of `roomkit serve`, smaller items: inbound endpoints that would
//! take unauthenticated posts need an explicit opt-in, a replayed signed
//! webhook without a message id is stored once, client-chosen ids are
//! bounded, and the call report pages sit behind the server's layers, page
//! without overflow, stay inside their directory and keep the key per tab.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sms::{messages, rooms};
use crate::{Server, binary, config_file, connect, next_frame, send};

fn tmp(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "roomkit-serve-hardening-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `roomkit serve` expecting it to stop at once; its exit code and
/// stderr. A server that starts instead is killed after a generous wait and
/// reported with no exit code.
fn run_config(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let log = tmp("stderr").join("stderr.log");
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .args(["--addr", "127.0.0.1:0", "--store", "memory://"])
        .arg("--config")
        .arg(config)
        .env_remove("ROOMKIT_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

const TELEGRAM: &str = "[[channels]]\nid = \"tg\"\ntype = \"telegram\"\nbot_token_env = \"TG_TOKEN\"\nbase_url = \"http://127.0.0.1:9\"\n";
const SENDGRID: &str = "[[channels]]\nid = \"mail\"\ntype = \"email\"\nprovider = \"sendgrid\"\nfrom = \"help@example.com\"\napi_key_env = \"SG_KEY\"\nbase_url = \"http://127.0.0.1:9\"\n";
const SMTP: &str = "[[channels]]\nid = \"mail\"\ntype = \"email\"\nprovider = \"smtp\"\nfrom = \"help@example.com\"\nsmtp_url = \"smtp://127.0.0.1:9\"\n";
const CHANNEL_ENV: &[(&str, &str)] = &[("TG_TOKEN", "123:abc"), ("SG_KEY", "sg")];

#[test]
fn telegram_and_sendgrid_without_authentication_refuse_to_start() {
    for (text, key) in [
        (TELEGRAM, "channels[0].secret_token_env"),
        (SENDGRID, "channels[0].inbound_token_env"),
    ] {
        let path = config_file(text);
        let (code, err) = run_config(&path, CHANNEL_ENV);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(path.to_str().unwrap()), "{err}");
        assert!(err.contains(key), "{err}");
        assert!(err.contains("allow_unauthenticated_inbound"), "{err}");
    }
    // The opt-in cannot be combined with the credential it replaces.
    let path = config_file(&format!(
        "{TELEGRAM}secret_token_env = \"TG_SECRET\"\nallow_unauthenticated_inbound = true\n"
    ));
    let (code, err) = run_config(&path, &[("TG_TOKEN", "1:a"), ("TG_SECRET", "s")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("channels[0].allow_unauthenticated_inbound"),
        "{err}"
    );
}

#[tokio::test]
async fn an_explicitly_open_endpoint_takes_unauthenticated_posts() {
    let path = config_file(&format!("{TELEGRAM}allow_unauthenticated_inbound = true\n"));
    let s = Server::start_with(&["--config", path.to_str().unwrap()], CHANNEL_ENV).await;
    let update = json!({"update_id": 7, "message": {"message_id": 1, "chat": {"id": 5},
        "from": {"username": "ada"}, "text": "open door"}});
    let status = s
        .http
        .post(s.url("/webhooks/telegram/telegram"))
        .json(&update)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert_eq!(rooms(&s).await.len(), 1);
}

#[tokio::test]
async fn smtp_without_a_token_starts_outbound_only() {
    let path = config_file(SMTP);
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    let status = s
        .http
        .post(s.url("/webhooks/email/smtp"))
        .body("From: a@example.com\r\nTo: help@example.com\r\nSubject: x\r\n\r\nhello\r\n")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
    assert!(rooms(&s).await.is_empty());
}

#[tokio::test]
async fn a_replayed_signed_webhook_without_message_id_is_stored_once() {
    let config = "[[channels]]\nid = \"crm\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/events\"\nsecret_env = \"HOOK_SECRET\"\n";
    let path = config_file(config);
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("HOOK_SECRET", "hook-secret")],
    )
    .await;
    let body = json!({"sender_id": "crm-user-1", "text": "pay 100"}).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let post = |ts: i64| {
        let s = &s;
        let body = body.clone();
        async move {
            let sig = roomkit_channels::webhook::sign("hook-secret", ts, body.as_bytes());
            s.http
                .post(s.url("/webhooks/webhook/generic"))
                .header("content-type", "application/json")
                .header("X-RoomKit-Timestamp", ts.to_string())
                .header("X-RoomKit-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The same signed request three times (a replay): stored once, and
    // every answer is the provider's 200.
    for _ in 0..3 {
        assert_eq!(post(now).await, 200);
    }
    let all = rooms(&s).await;
    assert_eq!(all.len(), 1);
    let events = messages(&s, &all[0]).await;
    assert_eq!(events.len(), 1, "the replay was stored again: {events:?}");
    let key = events[0]["idempotency_key"].as_str().unwrap();
    assert!(key.starts_with("webhook:sha256:"), "{key}");
    // The same text signed at another second is a new message.
    assert_eq!(post(now - 1).await, 200);
    assert_eq!(messages(&s, &all[0]).await.len(), 2);
}

#[tokio::test]
async fn over_long_ids_are_refused_at_creation_naming_the_field() {
    let s = Server::start().await;
    let huge = "r".repeat(900 * 1024);
    let (status, v) = s.call("POST", "/rooms", Some(json!({"id": huge}))).await;
    assert_eq!(status, 400, "a 900 KB room id was accepted");
    assert_eq!(v["error"]["code"], "invalid_field");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`id`"),
        "{v}"
    );
    assert!(
        s.ok("GET", "/rooms", None).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, v) = s
        .call("POST", "/rooms", Some(json!({"id": "r".repeat(257)})))
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = s
        .call("POST", "/rooms", Some(json!({"id": "a\u{0}b"})))
        .await;
    assert_eq!(status, 400);
    // At the bound, the room can be read and removed.
    let longest = "r".repeat(256);
    s.ok("POST", "/rooms", Some(json!({"id": longest}))).await;
    s.ok("GET", &format!("/rooms/{longest}"), None).await;
    // Lookups are not bounded: a longer id (one stored before the bound)
    // is simply not found, so it could still be removed.
    let (status, v) = s
        .call("DELETE", &format!("/rooms/{}", "x".repeat(4000)), None)
        .await;
    assert_eq!(status, 404, "{v}");

    let room = "bounded";
    s.room(room, false).await;
    let long = "k".repeat(257);
    for (path, body, field) in [
        (
            format!("/rooms/{room}/participants"),
            json!({"id": long}),
            "id",
        ),
        (
            format!("/rooms/{room}/participants"),
            json!({"address": long}),
            "address",
        ),
        (
            format!("/rooms/{room}/events"),
            json!({"channel_id": "ws", "content": {"type": "text", "text": "x"}, "idempotency_key": long}),
            "idempotency_key",
        ),
        (
            format!("/rooms/{room}/events"),
            json!({"channel_id": "ws", "content": {"type": "text", "text": "x"}, "correlation_id": long}),
            "correlation_id",
        ),
        (
            format!("/rooms/{room}/events"),
            json!({"channel_id": "ws", "content": {"type": "text", "text": "x"}, "participant_id": long}),
            "participant_id",
        ),
        ("/identities".to_owned(), json!({"id": long}), "id"),
        (
            "/identities".to_owned(),
            json!({"channel_addresses": {"sms": [long]}}),
            "channel_addresses.sms[0]",
        ),
    ] {
        let (status, v) = s.call("POST", &path, Some(body)).await;
        assert_eq!(status, 400, "{path} {field}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    assert!(
        s.timeline(room)
            .await
            .iter()
            .all(|e| e["type"] != "message")
    );

    // The WebSocket surface: a participant id on connect, keys in frames.
    let url = s.ws_url(&format!("/ws/{room}?channel_id=ws&participant_id={long}"));
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400);
        }
        other => panic!("the upgrade was not refused: {:?}", other.map(|_| ())),
    }
    let mut ws = connect(&s.ws_url(&format!("/ws/{room}?channel_id=ws"))).await;
    send(
        &mut ws,
        json!({"type": "send", "content": {"type": "text", "text": "x"}, "idempotency_key": long, "client_ref": 1}),
    )
    .await;
    loop {
        let f = next_frame(&mut ws).await.unwrap();
        if f["type"] == "error" {
            assert_eq!(f["error"]["code"], "invalid_field", "{f}");
            assert_eq!(f["client_ref"], 1);
            break;
        }
        assert_ne!(f["type"], "ack", "{f}");
    }
}

/// A report directory as the local exporter writes it.
fn report(dir: &Path, id: &str) {
    let r = json!({
        "call_id": id, "room_id": "r", "agent_id": "a", "agent_name": null, "is_test": false,
        "started_at": "2026-11-21T12:00:00.000000+00:00", "ended_at": "2026-11-21T12:00:06.000000+00:00",
        "ended_reason": "agent-ended", "recovered": false, "sample_rate": 24000, "channels": 2,
        "duration_seconds": 6.0, "recording": null, "agent_spoke_first": false,
        "transcript": [{"role": "user", "content": "hi", "timestamp": "t", "endTimestamp": "t"}],
        "tool_calls": [], "metrics": [],
        "waveform": {"bin_seconds": 0.1, "user": [1], "agent": [0]}, "metadata": {}
    });
    std::fs::create_dir_all(dir.join(id)).unwrap();
    std::fs::write(dir.join(id).join("report.json"), r.to_string()).unwrap();
}

async fn start_with_reports(reports: &Path, env: &[(&str, &str)]) -> Server {
    let spool = tmp("spool");
    // Without the key in the environment the server runs open, which
    // now has to be said.
    let server = if env.iter().any(|(k, _)| *k == "ROOMKIT_API_KEY") {
        "api_key_env = \"ROOMKIT_API_KEY\""
    } else {
        "open = true"
    };
    let path = config_file(&format!(
        "[server]\n{server}\n[analytics]\nspool_dir = \"{}\"\n[analytics.reports]\ndir = \"{}\"\n",
        spool.display(),
        reports.display()
    ));
    Server::start_with(&["--config", path.to_str().unwrap()], env).await
}

#[tokio::test]
async fn call_report_pages_sit_behind_the_server_layers_and_page_safely() {
    let reports = tmp("reports");
    report(&reports, "call-1");
    let s = start_with_reports(&reports, &[("ROOMKIT_API_KEY", "k")]).await;
    let page = s.ok("GET", "/call-reports", None).await;
    assert_eq!(page["items"][0]["call_id"], "call-1");
    // A cursor at the top of the range: no overflow, an empty last page.
    let (status, v) = s
        .call(
            "GET",
            &format!("/call-reports?cursor={}&limit=500", usize::MAX),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["items"], json!([]));
    assert_eq!(v["next_cursor"], Value::Null);
    // Bad query values: JSON 400s.
    for q in ["limit=ten", "limit=0", "cursor=-1", "cursor=x"] {
        let (status, v) = s.call("GET", &format!("/call-reports?{q}"), None).await;
        assert_eq!(status, 400, "{q}: {v}");
        assert!(v["error"]["code"].is_string(), "{q}: {v}");
    }
    // Counted by the metrics layer like every other route.
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("route=\"/call-reports\",status=\"200\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/call-reports\",status=\"400\""),
        "{metrics}"
    );
    // Still behind the key.
    let status = s
        .http
        .get(s.url("/call-reports"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_in_the_reports_directory_are_not_followed() {
    use std::os::unix::fs::symlink;
    let reports = tmp("reports");
    let outside = tmp("outside");
    report(&reports, "call-real");
    // A call directory that is a link to a report outside.
    report(&outside, "secret-call");
    symlink(outside.join("secret-call"), reports.join("call-linked-dir")).unwrap();
    // A real call directory whose files are links out.
    std::fs::create_dir_all(reports.join("call-linked-file")).unwrap();
    symlink(
        outside.join("secret-call").join("report.json"),
        reports.join("call-linked-file").join("report.json"),
    )
    .unwrap();
    std::fs::write(outside.join("secret.wav"), b"RIFF-not-yours").unwrap();
    symlink(
        outside.join("secret.wav"),
        reports.join("call-real").join("recording.wav"),
    )
    .unwrap();

    let s = start_with_reports(&reports, &[]).await;
    let page = s.ok("GET", "/call-reports", None).await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["call-real"], "{page}");
    for id in ["call-linked-dir", "call-linked-file"] {
        let (status, v) = s.call("GET", &format!("/call-reports/{id}"), None).await;
        assert_eq!(status, 404, "{id}: {v}");
    }
    let (status, v) = s
        .call("GET", "/call-reports/call-real/recording.wav", None)
        .await;
    assert_eq!(status, 404, "{v}");
    s.ok("GET", "/call-reports/call-real", None).await;
}

#[tokio::test]
async fn the_calls_page_keeps_the_key_per_tab_like_the_chat() {
    let reports = tmp("reports");
    let s = start_with_reports(&reports, &[]).await;
    let page = s
        .http
        .get(s.url("/calls"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<canvas"), "not the calls page");
    assert!(
        !page.contains("localStorage.setItem(\"roomkit.key\"")
            && !page.contains("localStorage.getItem(\"roomkit.key\""),
        "the calls page keeps the key in localStorage"
    );
    assert!(page.contains("sessionStorage.setItem(\"roomkit.key\""));
    assert!(page.contains("sessionStorage.getItem(\"roomkit.key\""));
}
