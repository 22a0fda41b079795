//! Twilio: the exact send request (form-encoded, basic auth), errors and
//! retry-after, inbound SMS/MMS webhooks with signatures, status callbacks.

use std::sync::Arc;

use roomkit_channels::sms::twilio::{EMPTY_TWIML, TwilioConfig, TwilioSms, signature};
use roomkit_channels::sms::{SmsChannel, SmsProvider};
use roomkit_channels::{Secret, WebhookError, WebhookKind};
use roomkit_core::SendEvent;
use roomkit_core::model::{DeliveryStatus, EventContent, MediaContent};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{form, meta, request, room_with};

const SID: &str = "AC0123456789abcdef";
const TOKEN: &str = "twilio-test-token";
const FROM: &str = "+15550001111";
const TO: &str = "+15551234567";
const HOOK_URL: &str = "https://chat.example.com/webhooks/sms/twilio";

fn provider(base: &str) -> TwilioSms {
    let mut c = TwilioConfig::new(SID, Secret::new(TOKEN));
    c.base_url = base.to_owned();
    c.status_callback_url = Some("https://chat.example.com/webhooks/sms/twilio/status".into());
    TwilioSms::new(c)
}

fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{SID}/Messages.json")
}

async fn twilio_server(status: u16, body: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    server
}

fn form_of(req: &wiremock::Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&req.body).unwrap()
}

/// T-02, T-03: the send request is Twilio's documented form: basic auth
/// with the account SID and token, To from the binding's phone_number, From,
/// Body, StatusCallback.
#[tokio::test]
async fn t03_send_is_a_form_post_with_basic_auth() {
    let server = twilio_server(201, serde_json::json!({"sid": "SM100", "status": "queued"})).await;
    let sms = SmsChannel::new("sms", FROM, Arc::new(provider(&server.uri())));
    let r = room_with(Arc::new(sms), meta(&[("phone_number", TO)])).await;
    let result = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "Your table is ready"))
        .await
        .unwrap();
    let d = result.delivery_results.iter().next().unwrap().1.clone();
    assert_eq!(d.status, DeliveryStatus::Sent);
    assert_eq!(d.provider_message_id.as_deref(), Some("SM100"));

    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let req = &reqs[0];
    assert_eq!(req.url.path(), messages_path());
    let auth = format!(
        "Basic {}",
        base64_encode(format!("{SID}:{TOKEN}").as_bytes())
    );
    assert_eq!(
        req.headers.get("authorization").unwrap().to_str().unwrap(),
        auth
    );
    assert_eq!(
        req.headers.get("content-type").unwrap().to_str().unwrap(),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        form_of(req),
        vec![
            ("To".to_owned(), TO.to_owned()),
            ("From".to_owned(), FROM.to_owned()),
            ("Body".to_owned(), "Your table is ready".to_owned()),
            (
                "StatusCallback".to_owned(),
                format!(
                    "https://chat.example.com/webhooks/sms/twilio/status?event_id={}",
                    result.event.as_ref().unwrap().id
                )
            ),
        ]
    );
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A.1: text longer than 1,600 characters is cut to 1,600; MMS media go
/// out as MediaUrl fields.
#[tokio::test]
async fn t03_long_text_is_limited_and_media_become_media_urls() {
    let server = twilio_server(201, serde_json::json!({"sid": "SM1", "status": "queued"})).await;
    let sms = SmsChannel::new("sms", FROM, Arc::new(provider(&server.uri())));
    let r = room_with(Arc::new(sms), meta(&[("phone_number", TO)])).await;
    r.kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "x".repeat(2000)))
        .await
        .unwrap();
    let mut media = SendEvent::text(r.room.clone(), "ws", "");
    media.content = Some(EventContent::Media(MediaContent {
        url: "https://cdn.example.com/menu.png".into(),
        mime_type: "image/png".into(),
        filename: None,
        caption: Some("Menu".into()),
        size_bytes: None,
    }));
    r.kit.send_event(media).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    let body = |i: usize, k: &str| {
        form_of(&reqs[i])
            .into_iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
    };
    assert_eq!(body(0, "Body").unwrap().chars().count(), 1600);
    assert_eq!(body(1, "Body").as_deref(), Some("Menu"));
    assert_eq!(
        body(1, "MediaUrl").as_deref(),
        Some("https://cdn.example.com/menu.png")
    );
}

/// Twilio errors are classified: 429 with Retry-After is retryable and
/// carries the wait, 400 (invalid number) is not.
#[tokio::test]
async fn errors_are_classified_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "3")
                .set_body_json(serde_json::json!({"code": 20429, "message": "Too Many Requests", "status": 429})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
        ))
        .mount(&server)
        .await;
    let p = provider(&server.uri());
    let ev = roomkit_testkit::reply("hi");
    let e = p.send(&ev, TO, FROM).await.unwrap_err();
    assert!(e.is_retryable());
    let ce = roomkit_core::ChannelError::from(e);
    assert!(matches!(
        ce,
        roomkit_core::ChannelError::Provider { ref code, retry_after_seconds: Some(s), .. } if code == "20429" && s == 3.0
    ));
    let e = p.send(&ev, TO, FROM).await.unwrap_err();
    assert!(!e.is_retryable());
    assert_eq!(roomkit_core::ChannelError::from(e).code(), "21211");
}

fn signed(
    kind: WebhookKind,
    url: &str,
    pairs: &[(&str, &str)],
    token: &str,
) -> roomkit_channels::WebhookRequest {
    let params: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sig = signature(token, url, &params);
    request(
        kind,
        url,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Twilio-Signature", &sig),
        ],
        form(pairs),
    )
}

const INBOUND: &[(&str, &str)] = &[
    ("MessageSid", "SM9001"),
    ("AccountSid", SID),
    ("From", TO),
    ("To", FROM),
    ("Body", "Is my order ready?"),
    ("NumMedia", "1"),
    ("MediaUrl0", "https://api.twilio.com/media/ME1"),
    ("MediaContentType0", "image/jpeg"),
];

/// T-07, T-08: a signed inbound MMS becomes an inbound message with the
/// provider id as idempotency key; the reply is empty TwiML.
#[tokio::test]
async fn t07_signed_inbound_mms_is_parsed_and_answered_with_twiml() {
    let sms = SmsChannel::new("sms", FROM, Arc::new(provider("http://127.0.0.1:9")));
    let rx = sms.receiver();
    assert_eq!((rx.channel_type(), rx.provider()), ("sms", "twilio"));
    let out = rx
        .verify_and_parse(&signed(WebhookKind::Inbound, HOOK_URL, INBOUND, TOKEN))
        .unwrap();
    assert_eq!(out.reply.status, 200);
    assert_eq!(out.reply.content_type.as_deref(), Some("text/xml"));
    assert_eq!(out.reply.body, EMPTY_TWIML.as_bytes());
    assert_eq!(out.messages.len(), 1);
    let m = &out.messages[0];
    assert_eq!(m.channel_id.as_str(), "sms");
    assert_eq!(m.sender_id, TO);
    assert_eq!(m.idempotency_key.as_deref(), Some("twilio:SM9001"));
    assert_eq!(m.provider_message_id.as_deref(), Some("SM9001"));
    let EventContent::Composite(c) = &m.content else {
        panic!("expected text and media, got {:?}", m.content)
    };
    assert_eq!(c.parts[0], EventContent::text("Is my order ready?"));
    assert!(matches!(&c.parts[1], EventContent::Media(md) if md.mime_type == "image/jpeg"));
}

/// T-08: a wrong, missing, or re-targeted signature is refused.
#[tokio::test]
async fn t08_bad_signatures_are_refused() {
    let sms = SmsChannel::new("sms", FROM, Arc::new(provider("http://127.0.0.1:9")));
    let rx = sms.receiver();
    let wrong = signed(WebhookKind::Inbound, HOOK_URL, INBOUND, "another-token");
    assert!(matches!(
        rx.verify_and_parse(&wrong),
        Err(WebhookError::BadSignature(_))
    ));
    let mut missing = signed(WebhookKind::Inbound, HOOK_URL, INBOUND, TOKEN);
    missing.headers.retain(|(k, _)| k != "X-Twilio-Signature");
    assert!(rx.verify_and_parse(&missing).unwrap_err().is_auth_failure());
    // Signed for another URL.
    let mut moved = signed(WebhookKind::Inbound, HOOK_URL, INBOUND, TOKEN);
    moved.url = "https://evil.example.com/webhooks/sms/twilio".into();
    assert!(rx.verify_and_parse(&moved).unwrap_err().is_auth_failure());
    // Tampered body.
    let mut tampered = signed(WebhookKind::Inbound, HOOK_URL, INBOUND, TOKEN);
    tampered.body = form(&[("From", TO), ("Body", "send money")]).into_bytes();
    assert!(
        rx.verify_and_parse(&tampered)
            .unwrap_err()
            .is_auth_failure()
    );
}

/// T-07: a status callback maps Twilio's words and carries the error code.
#[tokio::test]
async fn t07_status_callbacks_are_parsed() {
    let sms = SmsChannel::new("sms", FROM, Arc::new(provider("http://127.0.0.1:9")));
    let rx = sms.receiver();
    let url = "https://chat.example.com/webhooks/sms/twilio/status";
    let out = rx
        .verify_and_parse(&signed(
            WebhookKind::Status,
            url,
            &[
                ("MessageSid", "SM100"),
                ("MessageStatus", "undelivered"),
                ("ErrorCode", "30003"),
            ],
            TOKEN,
        ))
        .unwrap();
    assert!(out.messages.is_empty());
    let s = &out.statuses[0];
    assert_eq!(s.provider_message_id.as_deref(), Some("SM100"));
    assert_eq!(s.status, Some(DeliveryStatus::Failed));
    assert_eq!(s.provider_status, "undelivered");
    assert_eq!(s.error.as_ref().unwrap().code, "30003");
    assert_eq!(s.channel_id.as_ref().unwrap().as_str(), "sms");
    assert!(s.event_id.is_none());

    // A callback URL we gave per message names the event.
    let url = "https://chat.example.com/webhooks/sms/twilio/status?event_id=evt_42";
    let out = rx
        .verify_and_parse(&signed(
            WebhookKind::Status,
            url,
            &[("MessageSid", "SM101"), ("MessageStatus", "delivered")],
            TOKEN,
        ))
        .unwrap();
    assert_eq!(
        out.statuses[0].event_id.as_ref().unwrap().as_str(),
        "evt_42"
    );
}

/// Inbound through the kit: the event carries SMS channel data and the
/// reply goes back to the sender's number without a binding phone_number.
#[tokio::test]
async fn inbound_then_reply_reaches_the_sender() {
    let server = twilio_server(201, serde_json::json!({"sid": "SM7", "status": "queued"})).await;
    let sms = SmsChannel::new("sms", FROM, Arc::new(provider(&server.uri())));
    let rx = sms.receiver();
    let r = room_with(Arc::new(sms), meta(&[])).await;
    let out = rx
        .verify_and_parse(&signed(WebhookKind::Inbound, HOOK_URL, INBOUND, TOKEN))
        .unwrap();
    let mut m = out.messages[0].clone();
    m.room_id = Some(r.room.clone());
    let res = r.kit.process_inbound(m).await.unwrap();
    let ev = res.event.unwrap();
    assert_eq!(
        ev.channel_data.get("from_number").and_then(|v| v.as_str()),
        Some(TO)
    );
    assert_eq!(
        ev.channel_data.get("to_number").and_then(|v| v.as_str()),
        Some(FROM)
    );
    assert_eq!(
        ev.channel_data.get("encoding").and_then(|v| v.as_str()),
        Some("GSM-7")
    );
    assert_eq!(r.ws.delivered_texts().len(), 1);
    r.kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "Yes, come in"))
        .await
        .unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    assert!(form_of(&reqs[0]).contains(&("To".to_owned(), TO.to_owned())));
    // A status callback for that send updates the event.
    let status = rx
        .verify_and_parse(&signed(
            WebhookKind::Status,
            HOOK_URL,
            &[("MessageSid", "SM7"), ("MessageStatus", "delivered")],
            TOKEN,
        ))
        .unwrap();
    let updated = r
        .kit
        .record_delivery_status(status.statuses[0].clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.content.plain_text(), "Yes, come in");
}
