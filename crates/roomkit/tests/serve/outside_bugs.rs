//! Behaviours that clients written independently of this codebase found
//! wrong, each reproduced through the real binary: write-only bindings,
//! participant lifecycle events, HTTP hook side effects, E.164 addresses in
//! query strings, typed-field errors and the JSON shape of every error.

use std::time::Duration;

use serde_json::json;

use crate::{Server, config_file, connect, next_frame, send};

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
