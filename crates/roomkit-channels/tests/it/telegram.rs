//! Telegram Bot API: exact sendMessage / sendPhoto / editMessageText
//! requests, 429 with retry_after, webhook updates and the secret token.

use std::sync::Arc;

use roomkit_channels::telegram::{SECRET_HEADER, TelegramChannel, TelegramConfig};
use roomkit_channels::{Secret, WebhookKind};
use roomkit_core::SendEvent;
use roomkit_core::model::{DeliveryStatus, EditContent, EventContent};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{meta, request, room_with};

const TOKEN: &str = "123456:ABC-test";

fn channel(base: &str) -> TelegramChannel {
    let mut c = TelegramConfig::new(Secret::new(TOKEN));
    c.base_url = base.into();
    c.secret_token = Some(Secret::new("hook-secret"));
    TelegramChannel::new("tg", c)
}

async fn bot(server: &MockServer, api: &str, message_id: i64) {
    Mock::given(method("POST"))
        .and(path(format!("/bot{TOKEN}/{api}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"ok": true, "result": {"message_id": message_id, "chat": {"id": 777}}}),
        ))
        .mount(server)
        .await;
}

fn json(req: &wiremock::Request) -> serde_json::Value {
    serde_json::from_slice(&req.body).unwrap()
}

/// sendMessage to the binding's chat, then an edit of that message uses
/// editMessageText with the id Telegram gave it.
#[tokio::test]
async fn send_then_edit_uses_the_bot_api() {
    let server = MockServer::start().await;
    bot(&server, "sendMessage", 41).await;
    bot(&server, "editMessageText", 41).await;
    let r = room_with(
        Arc::new(channel(&server.uri())),
        meta(&[("chat_id", "777")]),
    )
    .await;
    let mut first = SendEvent::text(r.room.clone(), "ws", "Order shipped");
    first.sender_id = Some("agent-1".into());
    let sent = r.kit.send_event(first).await.unwrap();
    let d = sent.delivery_results.iter().next().unwrap().1.clone();
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(d.provider_message_id.as_deref(), Some("41"));
    let original = sent.event.unwrap();
    let mut edit = SendEvent::text(r.room.clone(), "ws", "");
    edit.sender_id = Some("agent-1".into());
    edit.content = Some(EventContent::Edit(EditContent {
        target_event_id: original.id.clone(),
        new_content: Box::new(EventContent::text("Order shipped today")),
        edit_source: None,
    }));
    r.kit.send_event(edit).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        json(&reqs[0]),
        serde_json::json!({"chat_id": 777, "text": "Order shipped"})
    );
    assert_eq!(reqs[1].url.path(), format!("/bot{TOKEN}/editMessageText"));
    assert_eq!(
        json(&reqs[1]),
        serde_json::json!({"chat_id": 777, "message_id": 41, "text": "Order shipped today"})
    );
}

/// Images go out with sendPhoto.
#[tokio::test]
async fn media_uses_send_photo() {
    let server = MockServer::start().await;
    bot(&server, "sendPhoto", 5).await;
    let r = room_with(
        Arc::new(channel(&server.uri())),
        meta(&[("chat_id", "777")]),
    )
    .await;
    let mut ev = SendEvent::text(r.room.clone(), "ws", "");
    ev.content = Some(EventContent::Media(roomkit_core::model::MediaContent {
        url: "https://cdn.example.com/a.png".into(),
        mime_type: "image/png".into(),
        filename: None,
        caption: Some("Look".into()),
        size_bytes: None,
    }));
    r.kit.send_event(ev).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(
        json(&reqs[0]),
        serde_json::json!({"chat_id": 777, "photo": "https://cdn.example.com/a.png", "caption": "Look"})
    );
}

/// A 429 carries Telegram's retry_after as a retryable failure.
#[tokio::test]
async fn flood_control_is_retryable_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(serde_json::json!({
            "ok": false, "error_code": 429,
            "description": "Too Many Requests: retry after 12",
            "parameters": {"retry_after": 12}
        })))
        .mount(&server)
        .await;
    let r = room_with(
        Arc::new(channel(&server.uri())),
        meta(&[("chat_id", "777")]),
    )
    .await;
    let res = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "x"))
        .await
        .unwrap();
    let d = res.delivery_results.iter().next().unwrap().1.clone();
    let e = d.error.unwrap();
    assert!(e.retryable);
    assert_eq!(e.code, "429");
    assert!(
        !e.message.contains(TOKEN),
        "the bot token is never in errors"
    );
}

/// Webhook updates: the secret token is required; messages become inbound
/// messages from the chat.
#[tokio::test]
async fn updates_are_verified_and_parsed() {
    let ch = channel("http://127.0.0.1:9");
    let rx = ch.receiver();
    let body = serde_json::json!({
        "update_id": 10001,
        "message": {
            "message_id": 9, "date": 1700000000,
            "from": {"id": 777, "is_bot": false, "first_name": "Ada", "username": "ada"},
            "chat": {"id": 777, "type": "private"},
            "text": "hi bot"
        }
    })
    .to_string();
    let url = "https://chat.example.com/webhooks/telegram/telegram";
    let ok = request(
        WebhookKind::Inbound,
        url,
        &[(SECRET_HEADER, "hook-secret")],
        body.clone(),
    );
    let out = rx.verify_and_parse(&ok).unwrap();
    let m = &out.messages[0];
    assert_eq!(m.sender_id, "777");
    assert_eq!(m.content.plain_text(), "hi bot");
    assert_eq!(m.idempotency_key.as_deref(), Some("telegram:10001"));
    assert_eq!(m.provider_message_id.as_deref(), Some("9"));
    let bad = request(
        WebhookKind::Inbound,
        url,
        &[(SECRET_HEADER, "nope")],
        body.clone(),
    );
    assert!(rx.verify_and_parse(&bad).unwrap_err().is_auth_failure());
    let none = request(WebhookKind::Inbound, url, &[], body);
    assert!(rx.verify_and_parse(&none).unwrap_err().is_auth_failure());
    let junk = request(
        WebhookKind::Inbound,
        url,
        &[(SECRET_HEADER, "hook-secret")],
        "{not json",
    );
    assert!(!rx.verify_and_parse(&junk).unwrap_err().is_auth_failure());
}
