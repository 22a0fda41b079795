//! Behaviours that clients written independently of this codebase found
//! wrong, each reproduced through the real binary: write-only bindings,
//! participant lifecycle events, HTTP hook side effects, E.164 addresses in
//! query strings, typed-field errors and the JSON shape of every error.

use std::time::Duration;

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

use crate::{Server, config_file, connect, next_frame, send};

/// Asserts the contract's error shape and returns the message.
fn error_message(status: u16, body: &Value) -> String {
    assert!(status >= 400, "{status} {body}");
    let code = body["error"]["code"].as_str();
    let message = body["error"]["message"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()) && message.is_some(),
        "{status}: not the JSON error shape: {body}"
    );
    message.unwrap_or_default().to_owned()
}

#[tokio::test]
async fn write_only_websocket_binding_receives_no_broadcasts() {
    let path = config_file(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "ws-agent"
type = "websocket"
"#,
    );
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("wo", false).await;
    s.ok(
        "POST",
        "/rooms/wo/channels",
        Some(json!({"channel_id": "ws-agent"})),
    )
    .await;
    s.ok(
        "PATCH",
        "/rooms/wo/channels/ws-agent",
        Some(json!({"access": "write_only"})),
    )
    .await;
    let mut agent = connect(&s.ws_url("/ws/wo?channel_id=ws-agent")).await;
    let mut user = connect(&s.ws_url("/ws/wo?channel_id=ws")).await;

    s.post_text("wo", "ws", "broadcast to the room").await;
    // The readable connection sees it.
    loop {
        let f = next_frame(&mut user).await.expect("open");
        if f["type"] == "event" && f["event"]["content"]["text"] == "broadcast to the room" {
            break;
        }
    }
    // The write-only one can still send...
    send(
        &mut agent,
        json!({"type": "send", "content": {"type": "text", "text": "from the agent"}, "client_ref": 1}),
    )
    .await;
    let mut acked = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        let f = next_frame(&mut agent).await.expect("open");
        if f["type"] == "ack" {
            assert_eq!(f["result"]["blocked"], false, "{f}");
            acked = true;
            break;
        }
        // ...but is never handed what others write.
        assert!(
            !(f["type"] == "event" && f["event"]["source"]["channel_id"] != "ws-agent"),
            "a write-only connection received {f}"
        );
    }
    assert!(acked, "the write-only connection's send was acknowledged");
    // A ping answered means everything queued before it was seen.
    send(&mut agent, json!({"type": "ping"})).await;
    loop {
        let f = next_frame(&mut agent).await.expect("open");
        if f["type"] == "pong" {
            break;
        }
        assert!(
            !(f["type"] == "event" && f["event"]["source"]["channel_id"] != "ws-agent"),
            "a write-only connection received {f}"
        );
    }
    // Made readable again, it receives the room's events once more.
    s.ok(
        "PATCH",
        "/rooms/wo/channels/ws-agent",
        Some(json!({"access": "read_write"})),
    )
    .await;
    s.post_text("wo", "ws", "readable again").await;
    loop {
        let f = next_frame(&mut agent).await.expect("open");
        if f["type"] == "event" && f["event"]["content"]["text"] == "readable again" {
            break;
        }
    }
}

#[tokio::test]
async fn adding_and_removing_a_participant_is_in_the_timeline() {
    let s = Server::start().await;
    s.ok("POST", "/rooms", Some(json!({"id": "pj"}))).await;
    s.ok(
        "POST",
        "/rooms/pj/participants",
        Some(json!({"id": "alice", "display_name": "Alice"})),
    )
    .await;
    let joined: Vec<Value> = s
        .timeline("pj")
        .await
        .into_iter()
        .filter(|e| e["type"] == "participant_joined")
        .collect();
    assert_eq!(joined.len(), 1, "one participant_joined event");
    assert_eq!(joined[0]["source"]["channel_id"], "system");
    assert_eq!(joined[0]["status"], "delivered");
    assert_eq!(joined[0]["content"]["data"]["participant_id"], "alice");

    let (st, _) = s.call("DELETE", "/rooms/pj/participants/alice", None).await;
    assert_eq!(st, 204);
    let timeline = s.timeline("pj").await;
    let left: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["type"] == "participant_left")
        .collect();
    assert_eq!(left.len(), 1, "one participant_left event");
    assert_eq!(left[0]["content"]["data"]["participant_id"], "alice");
    let indexes: Vec<u64> = timeline
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..timeline.len() as u64).collect::<Vec<_>>());
}

/// A hook endpoint answering with side effects, as a client in another
/// language would write it (optional lists it has nothing for are null).
async fn effects_hook() -> String {
    let decide = |Json(body): Json<Value>| async move {
        let text = body["event"]["content"]["text"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let answer = if text.contains("block me") {
            json!({"action": "block", "reason": "policy",
                   "inject": null,
                   "tasks": [{"type": "review", "title": "Blocked message"}],
                   "observations": [{"type": "risk", "data": {"level": "high"}}],
                   "event": null})
        } else if text.contains("allow with effects") {
            json!({"action": "allow", "reason": null,
                   "inject": [{"content": {"type": "text", "text": "Noted by the hook."},
                               "target_channel_ids": ["ws"]}],
                   "tasks": [{"type": "follow_up", "title": "Call back"}],
                   "observations": null,
                   "event": null})
        } else {
            json!({"action": "allow"})
        };
        Json(answer)
    };
    let app = axum::Router::new().route("/hook", post(decide));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/hook")
}

#[tokio::test]
async fn http_hook_side_effects_are_kept_when_blocking_and_when_allowing() {
    let url = effects_hook().await;
    let path = config_file(&format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[hooks]]
name = "policy"
trigger = "before_broadcast"
execution = "sync"
url = "{url}"
timeout_ms = 5000
"#
    ));
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("hk", false).await;

    let blocked = s.post_text("hk", "ws", "block me please").await;
    assert_eq!(blocked["blocked"], true, "{blocked}");
    assert_eq!(blocked["event"]["blocked_by"], "policy");
    let tasks = s.ok("GET", "/rooms/hk/tasks", None).await;
    let items = tasks["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{tasks}");
    assert_eq!(items[0]["type"], "review");
    assert_eq!(items[0]["status"], "pending");
    let obs = s.ok("GET", "/rooms/hk/observations", None).await;
    assert_eq!(obs["items"].as_array().unwrap().len(), 1, "{obs}");
    assert_eq!(obs["items"][0]["type"], "risk");

    let allowed = s.post_text("hk", "ws", "allow with effects").await;
    assert_eq!(allowed["blocked"], false, "{allowed}");
    let timeline = s.timeline("hk").await;
    let injected = timeline
        .iter()
        .find(|e| e["content"]["text"] == "Noted by the hook.")
        .unwrap_or_else(|| panic!("the injected event is stored: {timeline:?}"));
    assert_eq!(injected["metadata"]["injected_by"], "policy");
    assert!(injected["index"].as_u64() > allowed["event"]["index"].as_u64());
    let tasks = s.ok("GET", "/rooms/hk/tasks", None).await;
    assert!(
        tasks["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["type"] == "follow_up" && t["title"] == "Call back"),
        "{tasks}"
    );
}

#[tokio::test]
async fn identity_resolves_by_e164_address_with_raw_or_encoded_plus() {
    let s = Server::start().await;
    let created = s
        .ok(
            "POST",
            "/identities",
            Some(json!({"id": "idn-e164", "channel_addresses": {"sms": ["+15551234567"]}})),
        )
        .await;
    assert_eq!(created["channel_addresses"]["sms"][0], "+15551234567");
    // What real clients send: a raw `+`.
    let raw = s
        .ok(
            "GET",
            "/identities/resolve?channel=sms&address=+15551234567",
            None,
        )
        .await;
    assert_eq!(raw["id"], "idn-e164");
    // Percent-encoded.
    let encoded = s
        .ok(
            "GET",
            "/identities/resolve?channel=sms&address=%2B15551234567",
            None,
        )
        .await;
    assert_eq!(encoded["id"], "idn-e164");
    // An unknown number is still a 404 in the error shape.
    let (st, e) = s
        .call(
            "GET",
            "/identities/resolve?channel=sms&address=+15550000000",
            None,
        )
        .await;
    assert_eq!(st, 404, "{e}");
    error_message(st, &e);
}

#[tokio::test]
async fn a_wrongly_typed_field_is_named_in_the_400() {
    let s = Server::start().await;
    s.ok("POST", "/rooms", Some(json!({"id": "tf"}))).await;
    let cases = [
        ("PATCH", "/rooms/tf", "status", json!({"status": 5})),
        ("PATCH", "/rooms/tf", "status", json!({"status": true})),
        ("PATCH", "/rooms/tf", "metadata", json!({"metadata": 3})),
        ("POST", "/rooms", "id", json!({"id": 7})),
        (
            "POST",
            "/rooms/tf/channels",
            "access",
            json!({"channel_id": "ws", "access": 1}),
        ),
        (
            "POST",
            "/rooms/tf/events",
            "content",
            json!({"channel_id": "ws", "content": 5}),
        ),
        ("POST", "/rooms/tf/participants", "role", json!({"role": 2})),
    ];
    for (method, path, field, body) in cases {
        let (st, e) = s.call(method, path, Some(body.clone())).await;
        assert_eq!(st, 400, "{method} {path} {body}: {e}");
        let message = error_message(st, &e);
        assert!(
            message.contains(field),
            "{method} {path} {body}: the message does not name `{field}`: {message}"
        );
    }
}

#[tokio::test]
async fn every_error_has_the_json_error_shape() {
    let s = Server::start().await;
    s.room("es", false).await;
    // Undecodable path segments, on every route shape.
    for path in [
        "/rooms/%ff",
        "/rooms/%ff/timeline",
        "/rooms/es/events/%ff",
        "/rooms/es/channels/%ff/mute",
        "/identities/%ff",
        "/ws/%ff?channel_id=ws",
    ] {
        let method = if path.ends_with("/mute") {
            "POST"
        } else {
            "GET"
        };
        let (st, e) = s.call(method, path, None).await;
        assert_eq!(st, 400, "{path}: {e}");
        let message = error_message(st, &e);
        assert!(message.contains("path"), "{path}: {message}");
    }
    // A plain GET on the WebSocket route.
    let (st, e) = s.call("GET", "/ws/es?channel_id=ws", None).await;
    assert!((400..500).contains(&st), "{st} {e}");
    error_message(st, &e);
    // Bad query strings.
    let (st, e) = s.call("GET", "/rooms?limit=%ff", None).await;
    assert_eq!(st, 400, "{e}");
    error_message(st, &e);
    // A body that is not UTF-8 JSON.
    let (st, e) = s.raw("POST", "/rooms", vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(st, 400, "{e}");
    error_message(st, &e);
    // Unknown paths and methods.
    let (st, e) = s.call("GET", "/nowhere", None).await;
    assert_eq!(st, 404);
    error_message(st, &e);
    let (st, e) = s.call("PUT", "/rooms/es", None).await;
    assert_eq!(st, 405);
    error_message(st, &e);
}
