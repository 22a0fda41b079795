//! Telnyx: the v2 send request (JSON, bearer) and Ed25519-signed webhooks
//! (a key pair made in the test; Telnyx publishes no test vector).

use std::sync::Arc;

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use roomkit_channels::sms::SmsChannel;
use roomkit_channels::sms::telnyx::{TelnyxConfig, TelnyxSms};
use roomkit_channels::{Secret, WebhookKind};
use roomkit_core::SendEvent;
use roomkit_core::model::DeliveryStatus;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{meta, request, room_with};

const NOW: i64 = 1_700_000_000;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn keys() -> (SigningKey, String) {
    let sk = SigningKey::from_bytes(&[7u8; 32]);
    let pk = b64(sk.verifying_key().as_bytes());
    (sk, pk)
}

fn provider(base: &str, public_key: &str) -> TelnyxSms {
    TelnyxSms::new(TelnyxConfig {
        api_key: Secret::new("KEY0123"),
        public_key: public_key.into(),
        base_url: base.into(),
        messaging_profile_id: None,
        webhook_url: None,
    })
    .with_clock(NOW)
}

fn signed(
    sk: &SigningKey,
    kind: WebhookKind,
    ts: i64,
    body: &str,
) -> roomkit_channels::WebhookRequest {
    let sig = sk.sign(format!("{ts}|{body}").as_bytes());
    request(
        kind,
        "https://chat.example.com/webhooks/sms/telnyx",
        &[
            ("telnyx-signature-ed25519", &b64(&sig.to_bytes())),
            ("telnyx-timestamp", &ts.to_string()),
            ("content-type", "application/json"),
        ],
        body.to_owned(),
    )
}

#[tokio::test]
async fn send_is_json_with_bearer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/messages"))
        .and(header("authorization", "Bearer KEY0123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "data": {"id": "40317ef6-0000-0000-0000-000000000001", "to": [{"phone_number": "+15551234567", "status": "queued"}]}
        })))
        .mount(&server)
        .await;
    let (_, pk) = keys();
    let sms = SmsChannel::new(
        "sms",
        "+15550001111",
        Arc::new(provider(&server.uri(), &pk)),
    );
    let r = room_with(Arc::new(sms), meta(&[("phone_number", "+15551234567")])).await;
    let res = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "hello"))
        .await
        .unwrap();
    let d = res.delivery_results.iter().next().unwrap().1.clone();
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(
        d.provider_message_id.as_deref(),
        Some("40317ef6-0000-0000-0000-000000000001")
    );
    let reqs = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"from": "+15550001111", "to": "+15551234567", "text": "hello"})
    );
}

#[tokio::test]
async fn ed25519_signed_webhooks_verify_and_parse() {
    let (sk, pk) = keys();
    let sms = SmsChannel::new(
        "sms",
        "+15550001111",
        Arc::new(provider("http://127.0.0.1:9", &pk)),
    );
    let rx = sms.receiver();
    let body = serde_json::json!({"data": {"event_type": "message.received", "id": "ev1", "payload": {
        "id": "msg-1", "from": {"phone_number": "+15551234567"}, "to": [{"phone_number": "+15550001111"}],
        "text": "hi", "media": [{"url": "https://media.telnyx.com/1.jpg", "content_type": "image/jpeg"}]
    }}})
    .to_string();
    let out = rx
        .verify_and_parse(&signed(&sk, WebhookKind::Inbound, NOW, &body))
        .unwrap();
    let m = &out.messages[0];
    assert_eq!(m.sender_id, "+15551234567");
    assert_eq!(m.idempotency_key.as_deref(), Some("telnyx:msg-1"));
    // Wrong key, stale timestamp, tampered body, missing headers.
    let other = SigningKey::from_bytes(&[9u8; 32]);
    assert!(
        rx.verify_and_parse(&signed(&other, WebhookKind::Inbound, NOW, &body))
            .unwrap_err()
            .is_auth_failure()
    );
    assert!(
        rx.verify_and_parse(&signed(&sk, WebhookKind::Inbound, NOW - 301, &body))
            .unwrap_err()
            .is_auth_failure()
    );
    let mut tampered = signed(&sk, WebhookKind::Inbound, NOW, &body);
    tampered.body = body.replace("hi", "pay").into_bytes();
    assert!(
        rx.verify_and_parse(&tampered)
            .unwrap_err()
            .is_auth_failure()
    );
    let mut bare = signed(&sk, WebhookKind::Inbound, NOW, &body);
    bare.headers.clear();
    assert!(rx.verify_and_parse(&bare).unwrap_err().is_auth_failure());
    // A delivery event.
    let status = serde_json::json!({"data": {"event_type": "message.finalized", "payload": {
        "id": "msg-9", "to": [{"phone_number": "+15551234567", "status": "delivery_failed"}],
        "errors": [{"code": "40300", "title": "Blocked as spam"}]
    }}})
    .to_string();
    let out = rx
        .verify_and_parse(&signed(&sk, WebhookKind::Status, NOW, &status))
        .unwrap();
    assert_eq!(out.statuses[0].status, Some(DeliveryStatus::Failed));
    assert_eq!(out.statuses[0].error.as_ref().unwrap().code, "40300");
}
