//! Telegram and the HTTP webhook channel through the server: verified
//! inbound posts open rooms (a retry is a duplicate, a forgery is a 403),
//! and replies from a WebSocket client reach local fake endpoints.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::sms::{messages, rooms};
use crate::{Server, config_file, connect, next_frame, send};

/// One request a fake endpoint received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Log = Arc<(Mutex<Vec<Seen>>, Notify)>;

/// A fake HTTP endpoint that records every POST and answers `answer`.
async fn recorder(answer: Value) -> (Log, String) {
    let log: Log = Arc::new((Mutex::new(Vec::new()), Notify::new()));
    let l = log.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
            let l = l.clone();
            let answer = answer.clone();
            async move {
                l.0.lock().unwrap().push(Seen {
                    path: uri.path().to_owned(),
                    headers: headers
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect(),
                    body,
                });
                l.1.notify_waiters();
                axum::Json(answer)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (log, format!("http://{addr}"))
}

async fn first(log: &Log) -> Seen {
    let wait = async {
        loop {
            let notified = log.1.notified();
            if let Some(s) = log.0.lock().unwrap().first().cloned() {
                return s;
            }
            notified.await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the request arrives")
}

/// Attaches `ws`, sends `text` from a WebSocket client and waits for its ack.
async fn reply_from_ws(s: &Server, room: &str, text: &str) {
    s.ok(
        "POST",
        &format!("/rooms/{room}/channels"),
        Some(json!({"channel_id": "ws"})),
    )
    .await;
    let mut ws = connect(&s.ws_url(&format!("/ws/{room}?channel_id=ws"))).await;
    send(
        &mut ws,
        json!({"type": "send", "content": {"type": "text", "text": text}}),
    )
    .await;
    loop {
        let f = next_frame(&mut ws).await.unwrap();
        if f["type"] == "ack" {
            assert_eq!(f["result"]["blocked"], false, "{f}");
            return;
        }
    }
}

#[tokio::test]
async fn telegram_updates_need_the_secret_token_and_replies_use_the_bot_api() {
    let (log, base) =
        recorder(json!({"ok": true, "result": {"message_id": 91, "chat": {"id": 777}}})).await;
    let config = format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "tg"
type = "telegram"
bot_token_env = "TG_TOKEN"
secret_token_env = "TG_SECRET"
base_url = "{base}"
"#
    );
    let path = config_file(&config);
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("TG_TOKEN", "123:abc"), ("TG_SECRET", "tg-secret")],
    )
    .await;
    let update = json!({"update_id": 1001, "message": {"message_id": 5, "chat": {"id": 777},
        "from": {"username": "ada"}, "text": "hi bot"}});
    let post = |secret: Option<&'static str>| {
        let s = &s;
        let update = update.clone();
        async move {
            let mut rb = s
                .http
                .post(s.url("/webhooks/telegram/telegram"))
                .json(&update);
            if let Some(secret) = secret {
                rb = rb.header("X-Telegram-Bot-Api-Secret-Token", secret);
            }
            rb.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(post(None).await, 403);
    assert_eq!(post(Some("guess")).await, 403);
    assert!(rooms(&s).await.is_empty());
    assert_eq!(post(Some("tg-secret")).await, 200);
    assert_eq!(post(Some("tg-secret")).await, 200);
    let all = rooms(&s).await;
    assert_eq!(all.len(), 1);
    let events = messages(&s, &all[0]).await;
    assert_eq!(events.len(), 1, "the retry was a duplicate");
    assert_eq!(events[0]["content"]["text"], "hi bot");
    assert_eq!(events[0]["idempotency_key"], "telegram:1001");

    reply_from_ws(&s, &all[0], "Hello Ada").await;
    let sent = first(&log).await;
    assert_eq!(sent.path, "/bot123:abc/sendMessage");
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(body["chat_id"], 777);
    assert_eq!(body["text"], "Hello Ada");
}

#[tokio::test]
async fn webhook_channel_posts_are_signed_both_ways() {
    let (log, base) = recorder(json!({"id": "ext-1"})).await;
    let config = format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "crm"
type = "webhook"
url = "{base}/events"
secret_env = "HOOK_SECRET"
"#
    );
    let path = config_file(&config);
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("HOOK_SECRET", "hook-secret")],
    )
    .await;
    let body =
        json!({"sender_id": "crm-user-1", "text": "from the CRM", "message_id": "m1"}).to_string();
    let post = |secret: &'static str| {
        let s = &s;
        let body = body.clone();
        async move {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let sig = roomkit_channels::webhook::sign(secret, ts, body.as_bytes());
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
    assert_eq!(post("wrong").await, 403);
    assert!(rooms(&s).await.is_empty());
    assert_eq!(post("hook-secret").await, 200);
    assert_eq!(post("hook-secret").await, 200);
    let all = rooms(&s).await;
    assert_eq!(all.len(), 1);
    let events = messages(&s, &all[0]).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"]["text"], "from the CRM");

    reply_from_ws(&s, &all[0], "Noted").await;
    let sent = first(&log).await;
    assert_eq!(sent.path, "/events");
    let ts: i64 = sent.header("x-roomkit-timestamp").unwrap().parse().unwrap();
    assert_eq!(
        sent.header("x-roomkit-signature").unwrap(),
        roomkit_channels::webhook::sign("hook-secret", ts, sent.body.as_bytes())
    );
    let posted: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(posted["type"], "room_event");
    assert_eq!(posted["event"]["content"]["text"], "Noted");
}

#[tokio::test]
async fn a_webhook_channel_without_a_secret_takes_no_inbound_posts() {
    let config =
        "[[channels]]\nid = \"crm\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/events\"\n";
    let path = config_file(config);
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    let (status, v) = s
        .call(
            "POST",
            "/webhooks/webhook/generic",
            Some(json!({"sender_id": "x", "text": "y"})),
        )
        .await;
    assert_eq!(status, 404, "{v}");
    assert!(rooms(&s).await.is_empty());
}
