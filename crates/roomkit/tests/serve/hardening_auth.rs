//! Hardening of authentication, rate limits and tenant isolation, each
//! reproduced as the attack it stops: an unset key variable no longer
//! opens the API, made-up tokens share their address's bucket, webhook and
//! WebSocket floods are limited, and a tenant key sees only its own
//! organization.

use std::time::Duration;

use axum::Json;
use axum::routing::post;
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::sms::{TOKEN, inbound_sms, post_twilio, twilio_config};
use crate::{Server, binary, config_file, connect, next_frame, send};

/// A request with `key` as the bearer token (none when `None`).
async fn call_as(
    s: &Server,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rb = s.http.request(method, s.url(path));
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

#[test]
fn an_unset_api_key_variable_is_a_config_error() {
    let config = config_file("[server]\napi_key_env = \"ROOMKIT_HARDENING_UNSET_KEY\"\n");
    for value in [None, Some("")] {
        let mut cmd = std::process::Command::new(binary());
        cmd.arg("serve")
            .args(["--config", config.to_str().unwrap()])
            .args(["--addr", "127.0.0.1:0", "--store", "memory://"])
            .env_remove("ROOMKIT_HARDENING_UNSET_KEY");
        if let Some(v) = value {
            cmd.env("ROOMKIT_HARDENING_UNSET_KEY", v);
        }
        let out = tokio_free_output(cmd);
        let (code, err) = out;
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(config.to_str().unwrap()), "{err}");
        assert!(err.contains("server.api_key_env"), "{err}");
        assert!(
            err.contains("ROOMKIT_HARDENING_UNSET_KEY is not set"),
            "{err}"
        );
    }
}

/// Runs a command that must exit on its own (within 60 s).
fn tokio_free_output(mut cmd: std::process::Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running although its config is wrong");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn open_true_serves_without_the_key_explicitly() {
    let path =
        config_file("[server]\napi_key_env = \"ROOMKIT_HARDENING_UNSET_KEY2\"\nopen = true\n");
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    let (st, _) = call_as(&s, None, "GET", "/rooms", None).await;
    assert_eq!(st, 200);
    assert!(
        s.log().contains("ROOMKIT_HARDENING_UNSET_KEY2"),
        "the warning names the variable"
    );
}

#[tokio::test]
async fn made_up_tokens_share_their_address_bucket() {
    // No key configured, a limit of 5 per second: 30 requests, each with a
    // different invented token, come from one address and share its bucket.
    let path = config_file("[server]\nrate_limit_per_key = 5\n");
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    let mut refused = 0;
    // Sent together, so a slow machine cannot refill the bucket in between.
    let answers = futures::future::join_all((0..30).map(|i| {
        let token = format!("made-up-{i}-{}", i * 7919);
        let s = &s;
        async move { call_as(s, Some(&token), "GET", "/channels", None).await }
    }))
    .await;
    for (st, body) in answers {
        if st == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
            refused += 1;
        } else {
            assert_eq!(st, 200, "{body}");
        }
    }
    assert!(
        refused > 0,
        "30 requests with 30 invented tokens were all answered"
    );
}

#[tokio::test]
async fn a_wrong_key_never_gets_its_own_bucket() {
    // With a key configured, wrong tokens are 401 and spend nothing of the
    // real key's bucket.
    let path = config_file("[server]\napi_key_env = \"ROOMKIT_API_KEY\"\nrate_limit_per_key = 3\n");
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("ROOMKIT_API_KEY", "real")],
    )
    .await;
    for i in 0..10 {
        let (st, _) = call_as(&s, Some(&format!("wrong-{i}")), "GET", "/channels", None).await;
        assert_eq!(st, 401);
    }
    let (st, _) = call_as(&s, Some("real"), "GET", "/channels", None).await;
    assert_eq!(st, 200);
}

fn webhook_config(limits: &str) -> String {
    // Replies are never sent in these tests: the provider URL is unused.
    twilio_config("http://127.0.0.1:9", &format!("[server]\n{limits}\n"))
}

async fn sms_from(s: &Server, sid: &str, from: &str) -> u16 {
    let path = "/webhooks/sms/twilio";
    post_twilio(
        s,
        path,
        &s.url(path),
        Some(TOKEN),
        &inbound_sms(sid, from, "hello"),
    )
    .await
    .0
}

async fn room_count(s: &Server) -> usize {
    let v = s.ok("GET", "/rooms?limit=500", None).await;
    v["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_webhook_flood_from_new_senders_is_limited() {
    let path = config_file(&webhook_config("webhook_new_senders_per_minute = 5"));
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("TWILIO_AUTH_TOKEN", TOKEN)],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(sms_from(&s, &format!("SM-new-{i}"), &format!("+1555000{i:04}")).await);
    }
    let accepted = statuses.iter().filter(|&&c| c == 200).count();
    let refused = statuses.iter().filter(|&&c| c == 429).count();
    assert_eq!(accepted + refused, 20, "{statuses:?}");
    assert!((5..=7).contains(&accepted), "{statuses:?}");
    assert!(
        room_count(&s).await <= accepted,
        "a refused message opens no room"
    );
    // A sender already seen is not new: it still gets through.
    assert_eq!(sms_from(&s, "SM-again", "+15550000000").await, 200);
}

#[tokio::test]
async fn a_webhook_flood_from_one_sender_is_limited() {
    let path = config_file(&webhook_config("webhook_rate_limit_per_sender = 3"));
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("TWILIO_AUTH_TOKEN", TOKEN)],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(sms_from(&s, &format!("SM-one-{i}"), "+15551230000").await);
    }
    let accepted = statuses.iter().filter(|&&c| c == 200).count();
    assert!((3..=4).contains(&accepted), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Another sender has its own allowance.
    assert_eq!(sms_from(&s, "SM-other", "+15559870000").await, 200);
    // Nothing of a refused message was stored.
    let rooms = crate::sms::rooms(&s).await;
    let stored: usize = {
        let mut n = 0;
        for r in &rooms {
            n += crate::sms::messages(&s, r).await.len();
        }
        n
    };
    assert_eq!(stored, accepted + 1);
}

#[tokio::test]
async fn a_websocket_frame_flood_is_limited_then_closed() {
    // The frame limit follows rate_limit_per_key when it is not set.
    let path = config_file("[server]\nrate_limit_per_key = 5\n");
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("r", false).await;
    let mut ws = connect(&s.ws_url("/ws/r?channel_id=ws")).await;
    for _ in 0..200 {
        // The server may close before the last frames are written.
        if ws
            .send(Message::text(json!({"type": "ping"}).to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (mut pongs, mut limited) = (0, 0);
    let close = loop {
        match next_frame(&mut ws).await {
            Ok(f) if f["type"] == "pong" => pongs += 1,
            Ok(f) if f["error"]["code"] == "rate_limited" => limited += 1,
            Ok(f) => panic!("unexpected frame {f}"),
            Err(code) => break code,
        }
    };
    assert!(pongs < 50, "{pongs} of 200 pings answered");
    assert!(limited > 0, "refused frames are told so");
    assert_eq!(close, Some(1008), "a persistent flood is disconnected");
}

#[tokio::test]
async fn a_websocket_control_frame_flood_is_closed() {
    let path = config_file("[server]\nws_rate_limit_per_connection = 5\n");
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("r", false).await;
    let mut ws = connect(&s.ws_url("/ws/r?channel_id=ws")).await;
    for _ in 0..200 {
        if ws.send(Message::Ping(vec![1].into())).await.is_err() {
            break;
        }
    }
    let close = loop {
        match next_frame(&mut ws).await {
            Ok(f) => assert_eq!(f["error"]["code"], "rate_limited", "{f}"),
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1008));
}

#[tokio::test]
async fn a_websocket_within_its_frame_rate_is_served() {
    let path = config_file("[server]\nws_rate_limit_per_connection = 20\n");
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("r", false).await;
    let mut ws = connect(&s.ws_url("/ws/r?channel_id=ws")).await;
    for _ in 0..10 {
        send(&mut ws, json!({"type": "ping"})).await;
        assert_eq!(next_frame(&mut ws).await.unwrap()["type"], "pong");
    }
}

/// A hook that files a task for every message containing "task".
async fn task_hook() -> String {
    let decide = |Json(body): Json<Value>| async move {
        let text = body["event"]["content"]["text"].as_str().unwrap_or("");
        let answer = if text.contains("task") {
            json!({"action": "allow", "tasks": [{"type": "review", "title": "look"}]})
        } else {
            json!({"action": "allow"})
        };
        answer.to_string()
    };
    let app = axum::Router::new().route("/hook", post(decide));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

const GLOBAL: &str = "global-operator-key";
const ACME: &str = "acme-tenant-key";
const GLOBEX: &str = "globex-tenant-key";

async fn tenant_server() -> Server {
    let hook = task_hook().await;
    let path = config_file(&format!(
        r#"
[server]
api_key_env = "ROOMKIT_API_KEY"
[[server.tenant_keys]]
organization_id = "acme"
key_env = "ACME_KEY"
[[server.tenant_keys]]
organization_id = "globex"
key_env = "GLOBEX_KEY"

[[channels]]
id = "ws"
type = "websocket"

[[hooks]]
name = "tasks"
trigger = "before_broadcast"
execution = "sync"
url = "{hook}"
timeout_ms = 5000
"#
    ));
    Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[
            ("ROOMKIT_API_KEY", GLOBAL),
            ("ACME_KEY", ACME),
            ("GLOBEX_KEY", GLOBEX),
        ],
    )
    .await
}

fn ids(page: &Value) -> Vec<String> {
    let mut v: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_tenant_key_sees_only_its_organization() {
    let s = tenant_server().await;
    // Each tenant creates a room; the organization is the key's.
    let (st, a) = call_as(
        &s,
        Some(ACME),
        "POST",
        "/rooms",
        Some(json!({"id": "room-a"})),
    )
    .await;
    assert_eq!(st, 201, "{a}");
    assert_eq!(a["organization_id"], "acme");
    let (st, _) = call_as(
        &s,
        Some(GLOBEX),
        "POST",
        "/rooms",
        Some(json!({"id": "room-b", "organization_id": "globex"})),
    )
    .await;
    assert_eq!(st, 201);
    for (key, room) in [(ACME, "room-a"), (GLOBEX, "room-b")] {
        let (st, _) = call_as(
            &s,
            Some(key),
            "POST",
            &format!("/rooms/{room}/channels"),
            Some(json!({"channel_id": "ws"})),
        )
        .await;
        assert_eq!(st, 201);
    }
    // Naming another organization on create is refused.
    let (st, e) = call_as(
        &s,
        Some(ACME),
        "POST",
        "/rooms",
        Some(json!({"organization_id": "globex"})),
    )
    .await;
    assert_eq!(st, 403, "{e}");
    assert_eq!(e["error"]["code"], "organization_forbidden");

    // Lists.
    let (_, page) = call_as(&s, Some(ACME), "GET", "/rooms", None).await;
    assert_eq!(ids(&page), ["room-a"]);
    let (st, page) = call_as(&s, Some(ACME), "GET", "/rooms?organization_id=globex", None).await;
    assert_eq!(st, 200);
    assert!(ids(&page).is_empty());
    let (_, page) = call_as(&s, Some(GLOBAL), "GET", "/rooms", None).await;
    assert_eq!(ids(&page), ["room-a", "room-b"], "the global key sees all");

    // Another organization's room answers exactly like a missing one.
    let (st, missing) = call_as(&s, Some(ACME), "GET", "/rooms/no-such-room", None).await;
    assert_eq!(st, 404);
    let (st, foreign) = call_as(&s, Some(ACME), "GET", "/rooms/room-b", None).await;
    assert_eq!(st, 404, "{foreign}");
    assert_eq!(foreign["error"]["code"], missing["error"]["code"]);
    assert_eq!(
        foreign["error"]["message"]
            .as_str()
            .unwrap()
            .replace("room-b", "X"),
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-room", "X"),
    );
    let text = json!({"channel_id": "ws", "content": {"type": "text", "text": "hi"}});
    for (method, path, body) in [
        (
            "PATCH",
            "/rooms/room-b",
            Some(json!({"metadata": {"x": 1}})),
        ),
        ("DELETE", "/rooms/room-b", None),
        ("GET", "/rooms/room-b/timeline", None),
        ("POST", "/rooms/room-b/events", Some(text.clone())),
        ("GET", "/rooms/room-b/channels", None),
        ("DELETE", "/rooms/room-b/channels/ws", None),
        ("GET", "/rooms/room-b/participants", None),
        ("GET", "/rooms/room-b/tasks", None),
    ] {
        let (st, e) = call_as(&s, Some(ACME), method, path, body).await;
        assert_eq!(st, 404, "{method} {path}: {e}");
        assert_eq!(e["error"]["code"], "room_not_found", "{method} {path}");
    }
    // Untouched: globex still has its room, binding and an empty timeline.
    let (st, room) = call_as(&s, Some(GLOBEX), "GET", "/rooms/room-b", None).await;
    assert_eq!(st, 200);
    assert_eq!(room["metadata"], json!({}));
    let (_, tl) = call_as(&s, Some(GLOBEX), "GET", "/rooms/room-b/timeline", None).await;
    assert!(
        tl["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] != "message")
    );
    let (_, b) = call_as(&s, Some(GLOBEX), "GET", "/rooms/room-b/channels", None).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);

    // Tasks: one in globex's room, out of acme's reach.
    let (st, r) = call_as(
        &s,
        Some(GLOBEX),
        "POST",
        "/rooms/room-b/events",
        Some(json!({"channel_id": "ws", "content": {"type": "text", "text": "make a task"}})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let (_, tasks) = call_as(&s, Some(GLOBEX), "GET", "/rooms/room-b/tasks", None).await;
    let tid = tasks["items"][0]["id"]
        .as_str()
        .expect("the hook filed a task")
        .to_owned();
    let (st, e) = call_as(
        &s,
        Some(ACME),
        "PATCH",
        &format!("/tasks/{tid}"),
        Some(json!({"status": "completed"})),
    )
    .await;
    assert_eq!(st, 404, "{e}");
    assert_eq!(e["error"]["code"], "task_not_found");
    let (st, t) = call_as(
        &s,
        Some(GLOBEX),
        "PATCH",
        &format!("/tasks/{tid}"),
        Some(json!({"title": "mine"})),
    )
    .await;
    assert_eq!(st, 200, "{t}");

    // Operator endpoints.
    let (st, _) = call_as(&s, Some(ACME), "GET", "/metrics", None).await;
    assert_eq!(st, 403);
    let (st, _) = call_as(&s, Some(GLOBAL), "GET", "/metrics", None).await;
    assert_eq!(st, 200);
    // The global key still reaches everything.
    let (st, _) = call_as(&s, Some(GLOBAL), "GET", "/rooms/room-a/timeline", None).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn a_tenant_key_cannot_reach_another_organizations_identities() {
    let s = tenant_server().await;
    let (st, idb) = call_as(&s, Some(GLOBEX), "POST", "/identities", Some(json!({"id": "idn-b", "display_name": "Bea", "channel_addresses": {"sms": ["+15550001111"]}}))).await;
    assert_eq!(st, 201, "{idb}");
    assert_eq!(idb["organization_id"], "globex");
    let (st, e) = call_as(
        &s,
        Some(ACME),
        "POST",
        "/identities",
        Some(json!({"organization_id": "globex"})),
    )
    .await;
    assert_eq!(st, 403, "{e}");

    let (st, e) = call_as(&s, Some(ACME), "GET", "/identities/idn-b", None).await;
    assert_eq!(st, 404, "{e}");
    assert_eq!(e["error"]["code"], "identity_not_found");
    let (st, _) = call_as(
        &s,
        Some(ACME),
        "PATCH",
        "/identities/idn-b",
        Some(json!({"display_name": "stolen"})),
    )
    .await;
    assert_eq!(st, 404);
    for q in ["", "&organization_id=globex"] {
        let path = format!("/identities/resolve?channel=sms&address=%2B15550001111{q}");
        let (st, e) = call_as(&s, Some(ACME), "GET", &path, None).await;
        assert_eq!(st, 404, "{path}: {e}");
    }
    let (st, found) = call_as(
        &s,
        Some(GLOBEX),
        "GET",
        "/identities/resolve?channel=sms&address=%2B15550001111",
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(found["display_name"], "Bea", "nothing was changed");
    let (st, _) = call_as(&s, Some(GLOBAL), "GET", "/identities/idn-b", None).await;
    assert_eq!(st, 200);

    // A participant of acme's room cannot be tied to globex's identity.
    call_as(
        &s,
        Some(ACME),
        "POST",
        "/rooms",
        Some(json!({"id": "room-a"})),
    )
    .await;
    let (st, p) = call_as(
        &s,
        Some(ACME),
        "POST",
        "/rooms/room-a/participants",
        Some(json!({"id": "p1"})),
    )
    .await;
    assert_eq!(st, 201, "{p}");
    let (st, e) = call_as(
        &s,
        Some(ACME),
        "POST",
        "/rooms/room-a/participants/p1/resolve",
        Some(json!({"identity_id": "idn-b"})),
    )
    .await;
    assert_eq!(st, 404, "{e}");
}

#[tokio::test]
async fn a_tenant_key_cannot_open_another_organizations_websocket() {
    let s = tenant_server().await;
    for (key, room) in [(ACME, "room-a"), (GLOBEX, "room-b")] {
        call_as(&s, Some(key), "POST", "/rooms", Some(json!({"id": room}))).await;
        let (st, _) = call_as(
            &s,
            Some(key),
            "POST",
            &format!("/rooms/{room}/channels"),
            Some(json!({"channel_id": "ws"})),
        )
        .await;
        assert_eq!(st, 201);
    }
    // Closed like an unknown room.
    let mut ws = connect(&s.ws_url(&format!("/ws/room-b?channel_id=ws&token={ACME}"))).await;
    assert_eq!(next_frame(&mut ws).await.unwrap_err(), Some(4404));
    let mut ws = connect(&s.ws_url(&format!("/ws/room-a?channel_id=ws&token={ACME}"))).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await.unwrap()["type"], "pong");
    let mut ws = connect(&s.ws_url(&format!("/ws/room-b?channel_id=ws&token={GLOBAL}"))).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await.unwrap()["type"], "pong");
}
