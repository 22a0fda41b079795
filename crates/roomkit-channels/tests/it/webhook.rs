//! The HTTP webhook channel: signed outbound posts a local sink can verify,
//! signed inbound JSON.

use std::sync::Arc;

use roomkit_channels::webhook::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, WebhookConfig, sign,
};
use roomkit_channels::{Secret, WebhookKind};
use roomkit_core::SendEvent;
use roomkit_core::model::DeliveryStatus;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{meta, request, room_with};

fn channel(url: &str) -> WebhookChannel {
    WebhookChannel::new(
        "hook",
        WebhookConfig {
            url: url.into(),
            secret: Some(Secret::new("s3cret")),
        },
    )
}

/// T-06: a local HTTP sink receives the event as signed JSON.
#[tokio::test]
async fn t06_events_are_posted_signed_to_the_sink() {
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sink"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "rcv-1"})))
        .mount(&sink)
        .await;
    let ch = channel(&format!("{}/sink", sink.uri()));
    let r = room_with(Arc::new(ch), meta(&[])).await;
    let res = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "hello hook"))
        .await
        .unwrap();
    let d = res.delivery_results.iter().next().unwrap().1.clone();
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(d.provider_message_id.as_deref(), Some("rcv-1"));
    let reqs = sink.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    let ts: i64 = req
        .headers
        .get(TIMESTAMP_HEADER)
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let sig = req.headers.get(SIGNATURE_HEADER).unwrap().to_str().unwrap();
    assert_eq!(sig, sign("s3cret", ts, &req.body));
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(body["type"], "room_event");
    assert_eq!(body["room_id"], "r1");
    assert_eq!(body["event"]["content"]["text"], "hello hook");
}

/// A 503 from the sink is a retryable failure recorded on the event.
#[tokio::test]
async fn sink_failures_are_recorded() {
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&sink)
        .await;
    let r = room_with(Arc::new(channel(&sink.uri())), meta(&[])).await;
    let res = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "x"))
        .await
        .unwrap();
    let d = res.delivery_results.iter().next().unwrap().1.clone();
    assert_eq!(d.status, DeliveryStatus::Failed);
    let e = d.error.unwrap();
    assert!(e.retryable);
    assert_eq!(e.code, "503");
}

/// Inbound JSON is accepted with a valid signature inside the window and
/// refused otherwise.
#[tokio::test]
async fn inbound_posts_are_verified() {
    let ch = channel("http://127.0.0.1:9/unused");
    let now = 1_700_000_000;
    let rx = ch.receiver_at(now);
    let body = br#"{"sender_id":"crm-42","text":"ticket closed","message_id":"m1"}"#;
    let good = request(
        WebhookKind::Inbound,
        "https://chat.example.com/webhooks/webhook/generic",
        &[
            (TIMESTAMP_HEADER, &now.to_string()),
            (SIGNATURE_HEADER, &sign("s3cret", now, body)),
        ],
        body.to_vec(),
    );
    let out = rx.verify_and_parse(&good).unwrap();
    let m = &out.messages[0];
    assert_eq!(m.sender_id, "crm-42");
    assert_eq!(m.content.plain_text(), "ticket closed");
    assert_eq!(m.idempotency_key.as_deref(), Some("webhook:m1"));
    let stale_ts = now - 301;
    let stale = request(
        WebhookKind::Inbound,
        "u",
        &[
            (TIMESTAMP_HEADER, &stale_ts.to_string()),
            (SIGNATURE_HEADER, &sign("s3cret", stale_ts, body)),
        ],
        body.to_vec(),
    );
    assert!(rx.verify_and_parse(&stale).unwrap_err().is_auth_failure());
    let forged = request(
        WebhookKind::Inbound,
        "u",
        &[
            (TIMESTAMP_HEADER, &now.to_string()),
            (SIGNATURE_HEADER, &sign("other", now, body)),
        ],
        body.to_vec(),
    );
    assert!(rx.verify_and_parse(&forged).unwrap_err().is_auth_failure());
    let malformed_body = br#"{"sender_id":"x"}"#;
    let malformed = request(
        WebhookKind::Inbound,
        "u",
        &[
            (TIMESTAMP_HEADER, &now.to_string()),
            (SIGNATURE_HEADER, &sign("s3cret", now, malformed_body)),
        ],
        malformed_body.to_vec(),
    );
    assert!(
        !rx.verify_and_parse(&malformed)
            .unwrap_err()
            .is_auth_failure()
    );
}

/// A signed post without `message_id` or `idempotency_key` gets a key
/// derived from what was signed: the same request twice has the same key,
/// the same body signed at another second another one.
#[tokio::test]
async fn signed_posts_without_a_message_id_get_a_key_of_the_signed_body() {
    let ch = channel("http://127.0.0.1:9/unused");
    let now = 1_700_000_000;
    let rx = ch.receiver_at(now);
    let body = br#"{"sender_id":"crm-42","text":"ticket closed"}"#;
    let signed_at = |ts: i64| {
        request(
            WebhookKind::Inbound,
            "https://chat.example.com/webhooks/webhook/generic",
            &[
                (TIMESTAMP_HEADER, &ts.to_string()),
                (SIGNATURE_HEADER, &sign("s3cret", ts, body)),
            ],
            body.to_vec(),
        )
    };
    let key = |ts: i64| {
        rx.verify_and_parse(&signed_at(ts)).unwrap().messages[0]
            .idempotency_key
            .clone()
            .unwrap()
    };
    let first = key(now);
    assert!(first.starts_with("webhook:sha256:"), "{first}");
    assert_eq!(first.len(), "webhook:sha256:".len() + 64);
    assert_eq!(key(now), first);
    assert_ne!(key(now - 1), first);
    // An explicit key still wins.
    let body = br#"{"sender_id":"crm-42","text":"x","idempotency_key":"mine"}"#;
    let req = request(
        WebhookKind::Inbound,
        "u",
        &[
            (TIMESTAMP_HEADER, &now.to_string()),
            (SIGNATURE_HEADER, &sign("s3cret", now, body)),
        ],
        body.to_vec(),
    );
    let out = rx.verify_and_parse(&req).unwrap();
    assert_eq!(out.messages[0].idempotency_key.as_deref(), Some("mine"));
}
