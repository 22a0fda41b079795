//! The WebSocket protocol: live views in index order, acks, replay after a
//! reconnect, bad frames, size limit and close codes.

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{Server, connect, next_event, next_frame, send};

#[tokio::test]
async fn two_clients_see_each_other_in_index_order_and_replay_after_reconnect() {
    let s = Server::start().await;
    s.room("r", false).await;
    let mut a = connect(&s.ws_url("/ws/r?channel_id=ws&participant_id=alice")).await;
    let mut b = connect(&s.ws_url("/ws/r?channel_id=ws&participant_id=bob")).await;

    send(
        &mut a,
        json!({"type": "send", "content": {"type": "text", "text": "from a"}, "client_ref": "a1"}),
    )
    .await;
    let ack = next_frame(&mut a).await.unwrap();
    assert_eq!(ack["type"], "ack", "the ack comes before the event: {ack}");
    assert_eq!(ack["client_ref"], "a1");
    assert_eq!(ack["result"]["blocked"], false);
    let a_index = ack["result"]["event"]["index"].as_u64().unwrap();
    let own = next_event(&mut a).await;
    assert_eq!(
        own["index"].as_u64().unwrap(),
        a_index,
        "a sees its own event"
    );
    let seen_by_b = next_event(&mut b).await;
    assert_eq!(seen_by_b["content"]["text"], "from a");
    assert_eq!(seen_by_b["source"]["participant_id"], "alice");

    send(
        &mut b,
        json!({"type": "send", "content": {"type": "text", "text": "from b"}}),
    )
    .await;
    let ack_b = next_frame(&mut b).await.unwrap();
    assert_eq!(ack_b["type"], "ack");
    assert_eq!(ack_b["client_ref"], Value::Null);
    let mut last_b = next_event(&mut b).await["index"].as_u64().unwrap();
    assert_eq!(next_event(&mut a).await["content"]["text"], "from b");

    // REST messages reach both, in index order, without gaps.
    for i in 0..20 {
        s.post_text("r", "ws", &format!("rest {i}")).await;
    }
    // a's last event was b's message, right after its own.
    let mut last_a = a_index + 1;
    for i in 0..20 {
        let ea = next_event(&mut a).await;
        assert_eq!(ea["content"]["text"], format!("rest {i}"));
        assert_eq!(ea["index"].as_u64().unwrap(), last_a + 1);
        last_a = ea["index"].as_u64().unwrap();
        let eb = next_event(&mut b).await;
        assert_eq!(eb["index"].as_u64().unwrap(), last_b + 1);
        last_b += 1;
    }

    // b goes away; what it missed is replayed exactly on reconnect.
    drop(b);
    for i in 0..5 {
        s.post_text("r", "ws", &format!("missed {i}")).await;
    }
    let mut b = connect(&s.ws_url(&format!("/ws/r?channel_id=ws&after_index={last_b}"))).await;
    for i in 0..5 {
        let e = next_event(&mut b).await;
        assert_eq!(e["index"].as_u64().unwrap(), last_b + 1 + i);
        assert_eq!(e["content"]["text"], format!("missed {i}"));
    }
    // Then it is live.
    s.post_text("r", "ws", "live again").await;
    let e = next_event(&mut b).await;
    assert_eq!(e["content"]["text"], "live again");
    assert_eq!(e["index"].as_u64().unwrap(), last_b + 6);
    // The replay matched the timeline exactly.
    let timeline = s.timeline("r").await;
    assert_eq!(
        timeline.last().unwrap()["index"].as_u64().unwrap(),
        last_b + 6
    );
}

#[tokio::test]
async fn events_the_channel_may_not_see_are_not_sent() {
    let s = Server::start().await;
    s.room("r", true).await;
    let mut a = connect(&s.ws_url("/ws/r?channel_id=ws")).await;
    // Visible only to the AI channel: the ws view skips it, without a gap.
    s.ok("POST", "/rooms/r/events", Some(json!({"channel_id": "ai", "content": {"type": "text", "text": "for ai only"}, "visibility": "intelligence"}))).await;
    s.post_text("r", "ws", "for everyone").await;
    let e = next_event(&mut a).await;
    assert_eq!(e["content"]["text"], "for everyone");
}

/// The next error frame, skipping events and notices (the connection also
/// sees its own typing notice and read receipt).
async fn next_error(ws: &mut crate::Ws) -> Value {
    loop {
        let f = next_frame(ws).await.unwrap();
        if f["type"] == "error" {
            return f;
        }
        assert!(f["type"] == "event" || f["type"] == "ephemeral", "{f}");
    }
}

#[tokio::test]
async fn ping_typing_read_and_bad_frames() {
    let s = Server::start().await;
    s.room("r", false).await;
    let mut a = connect(&s.ws_url("/ws/r?channel_id=ws&participant_id=alice")).await;
    let mut b = connect(&s.ws_url("/ws/r?channel_id=ws&participant_id=bob")).await;
    send(&mut a, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut a).await.unwrap(), json!({"type": "pong"}));
    send(&mut a, json!({"type": "typing"})).await;
    let typing = loop {
        let f = next_frame(&mut b).await.unwrap();
        if f["type"] == "ephemeral" {
            break f;
        }
    };
    assert_eq!(typing["event"]["type"], "typing");
    assert_eq!(typing["event"]["source"]["participant_id"], "alice");
    send(&mut a, json!({"type": "read", "index": 0})).await;
    let receipt = next_event(&mut b).await;
    assert_eq!(receipt["type"], "read_receipt");

    for bad in [
        "not json",
        "{\"type\":\"shout\"}",
        "{\"type\":\"send\"}",
        "{\"type\":\"ping\",\"extra\":1}",
        "[]",
    ] {
        a.send(Message::text(bad)).await.unwrap();
        let f = next_error(&mut a).await;
        assert!(f["error"]["code"].is_string());
    }
    a.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let f = next_error(&mut a).await;
    assert_eq!(f["error"]["code"], "unsupported_frame");
    // Still open.
    send(&mut a, json!({"type": "ping"})).await;
    let pong = loop {
        let f = next_frame(&mut a).await.unwrap();
        if f["type"] == "pong" {
            break f;
        }
    };
    assert_eq!(pong["type"], "pong");
    let count_before = s.ok("GET", "/rooms/r", None).await["event_count"].clone();
    // Too big: closed with 1009.
    let huge = format!(
        "{{\"type\":\"send\",\"content\":{{\"type\":\"text\",\"text\":\"{}\"}}}}",
        "x".repeat(1024 * 1024 + 16)
    );
    a.send(Message::text(huge)).await.unwrap();
    let code = loop {
        match next_frame(&mut a).await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(1009));
    assert_eq!(
        s.ok("GET", "/rooms/r", None).await["event_count"],
        count_before
    );
}

#[tokio::test]
async fn unknown_room_or_unattached_channel_closes_4404() {
    let s = Server::start().await;
    s.ok("POST", "/rooms", Some(json!({"id": "r"}))).await;
    for path in [
        "/ws/nope?channel_id=ws",
        "/ws/r?channel_id=ws",
        "/ws/r?channel_id=ai",
        "/ws/r?channel_id=unknown",
    ] {
        let mut ws = connect(&s.ws_url(path)).await;
        assert_eq!(next_frame(&mut ws).await.unwrap_err(), Some(4404), "{path}");
    }
    let missing = tokio_tungstenite::connect_async(s.ws_url("/ws/r")).await;
    match missing {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400)
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    // Detaching the channel ends its connections.
    s.ok(
        "POST",
        "/rooms/r/channels",
        Some(json!({"channel_id": "ws"})),
    )
    .await;
    let mut ws = connect(&s.ws_url("/ws/r?channel_id=ws")).await;
    s.ok("DELETE", "/rooms/r/channels/ws", None)
        .await
        .to_string();
    let code = loop {
        match next_frame(&mut ws).await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(4404));
}

#[tokio::test]
async fn sigterm_closes_connections_and_exits_zero() {
    let s = Server::start().await;
    s.room("r", false).await;
    let mut ws = connect(&s.ws_url("/ws/r?channel_id=ws")).await;
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut ws).await.unwrap()["type"], "pong");
    let code = s.terminate().await;
    assert_eq!(code, Some(0));
    let closed = loop {
        match next_frame(&mut ws).await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert!(closed.is_none() || closed == Some(1001), "{closed:?}");
}
