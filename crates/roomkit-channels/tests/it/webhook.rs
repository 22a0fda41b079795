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
            allowed_urls: Vec::new(),
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

fn channel_allowing(url: &str, allowed: &[String]) -> WebhookChannel {
    WebhookChannel::new(
        "hook",
        WebhookConfig {
            url: url.into(),
            secret: Some(Secret::new("s3cret")),
            allowed_urls: allowed.to_vec(),
        },
    )
}

async fn sink_answering(status: u16, body: &str) -> MockServer {
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_string(body))
        .mount(&sink)
        .await;
    sink
}

async fn deliver_one(ch: WebhookChannel, metadata: roomkit_core::model::Map) -> serde_json::Value {
    let r = room_with(Arc::new(ch), metadata).await;
    let res = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "x"))
        .await
        .unwrap();
    serde_json::to_value(res.delivery_results.iter().next().unwrap().1).unwrap()
}

/// A binding's metadata.url outside the allow-list is ignored: the event
/// goes to the configured URL and the named server gets nothing.
#[tokio::test]
async fn a_binding_url_outside_the_allow_list_is_not_called() {
    let configured = sink_answering(200, r#"{"id":"ok-1"}"#).await;
    let internal = sink_answering(200, r#"{"id":"internal"}"#).await;
    let ch = channel_allowing(&format!("{}/events", configured.uri()), &[]);
    let url = format!("{}/admin", internal.uri());
    let d = deliver_one(ch, meta(&[("url", &url)])).await;
    assert_eq!(d["provider_message_id"], "ok-1", "{d}");
    assert!(internal.received_requests().await.unwrap().is_empty());
    assert_eq!(configured.received_requests().await.unwrap().len(), 1);
}

/// A binding URL under an allowed prefix is used.
#[tokio::test]
async fn a_binding_url_under_an_allowed_prefix_is_used() {
    let configured = sink_answering(200, r#"{"id":"default"}"#).await;
    let tenant = sink_answering(200, r#"{"id":"tenant-1"}"#).await;
    let allowed = vec![format!("{}/tenants", tenant.uri())];
    let ch = channel_allowing(&format!("{}/events", configured.uri()), &allowed);
    let url = format!("{}/tenants/42", tenant.uri());
    let d = deliver_one(ch, meta(&[("url", &url)])).await;
    assert_eq!(d["provider_message_id"], "tenant-1", "{d}");
    assert!(configured.received_requests().await.unwrap().is_empty());
}

/// A 302 is an error answer: the location is not requested, and nothing of
/// the body reaches the delivery result.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    let internal = sink_answering(200, r#"{"id":"INTERNAL-SECRET"}"#).await;
    let sink = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("{}/private", internal.uri()).as_str())
                .set_body_string("moved INTERNAL-SECRET"),
        )
        .mount(&sink)
        .await;
    let d = deliver_one(channel(&sink.uri()), meta(&[])).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["error"]["code"], "302", "{d}");
    assert!(!d.to_string().contains("INTERNAL-SECRET"), "{d}");
    assert!(internal.received_requests().await.unwrap().is_empty());
}

/// An error answer's text is not echoed; a bad id is not taken.
#[tokio::test]
async fn remote_text_is_not_echoed() {
    let sink = sink_answering(500, r#"{"error":"db password is hunter2"}"#).await;
    let d = deliver_one(channel(&sink.uri()), meta(&[])).await;
    assert_eq!(d["error"]["code"], "500", "{d}");
    assert!(!d.to_string().contains("hunter2"), "{d}");

    let long = "a".repeat(500);
    let sink = sink_answering(200, &format!(r#"{{"id":"{long}"}}"#)).await;
    let d = deliver_one(channel(&sink.uri()), meta(&[])).await;
    assert_eq!(d["status"], "sent", "{d}");
    assert!(d["provider_message_id"].is_null(), "{d}");

    let sink = sink_answering(200, r#"{"id":"<script>x</script>"}"#).await;
    let d = deliver_one(channel(&sink.uri()), meta(&[])).await;
    assert!(d["provider_message_id"].is_null(), "{d}");
}

/// A success answer over the cap fails the delivery without echoing it.
#[tokio::test]
async fn an_oversized_answer_fails_the_delivery() {
    let big = format!(r#"{{"id":"x","pad":"{}"}}"#, "Z".repeat(2 * 1024 * 1024));
    let sink = sink_answering(200, &big).await;
    let d = deliver_one(channel(&sink.uri()), meta(&[])).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert!(d.to_string().len() < 1000, "{d}");
}

#[test]
fn allowed_urls_match_by_origin_and_path_segment() {
    use roomkit_channels::webhook::url_is_allowed;
    let u = |s: &str| reqwest::Url::parse(s).unwrap();
    let base = u("https://hooks.example.com/t");
    assert!(url_is_allowed(&u("https://hooks.example.com/t"), &base));
    assert!(url_is_allowed(
        &u("https://hooks.example.com/t/1?x=2"),
        &base
    ));
    assert!(url_is_allowed(
        &u("https://hooks.example.com:443/t/1"),
        &base
    ));
    assert!(!url_is_allowed(&u("https://hooks.example.com/tx"), &base));
    assert!(!url_is_allowed(&u("http://hooks.example.com/t/1"), &base));
    assert!(!url_is_allowed(
        &u("https://hooks.example.com:8443/t/1"),
        &base
    ));
    assert!(!url_is_allowed(
        &u("https://hooks.example.com.evil.io/t"),
        &base
    ));
    assert!(!url_is_allowed(
        &u("https://a@hooks.example.com/t/1"),
        &base
    ));
    assert!(!url_is_allowed(
        &u("https://hooks.example.com/t/../admin"),
        &base
    ));
    let slash = u("https://hooks.example.com/t/");
    assert!(url_is_allowed(&u("https://hooks.example.com/t/9"), &slash));
    assert!(!url_is_allowed(&u("https://hooks.example.com/t"), &slash));
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
