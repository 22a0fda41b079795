//! Property tests of every webhook receiver (the CI-time counterpart of the
//! cargo-fuzz targets): random bytes and mutated valid payloads, signed so
//! they get past verification, always end in messages, statuses or a typed
//! [`WebhookError`], never a panic. Also the minimized crash inputs the
//! fuzzers found, replayed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use roomkit_channels::email::sendgrid::{SendGridConfig, SendGridEmail, multipart_fields};
use roomkit_channels::email::{EmailChannel, EmailProvider};
use roomkit_channels::sms::telnyx::{TelnyxConfig, TelnyxSms};
use roomkit_channels::sms::twilio::{TwilioConfig, TwilioSms, signature};
use roomkit_channels::sms::{SmsChannel, SmsProvider};
use roomkit_channels::telegram::{TelegramChannel, TelegramConfig};
use roomkit_channels::webhook::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, WebhookConfig, sign,
};
use roomkit_channels::{Secret, WebhookError, WebhookKind, WebhookReceiver, WebhookRequest};
use serde_json::{Value, json};

const NOW: i64 = 1_700_000_000;
const TOKEN: &str = "twilio-token";
const HOOK_SECRET: &str = "whsec";

fn request(kind: WebhookKind, headers: &[(&str, &str)], body: Vec<u8>) -> WebhookRequest {
    WebhookRequest {
        kind,
        method: "POST".into(),
        url: "https://chat.example.com/webhooks/x/y".into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body,
    }
}

fn telnyx_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// Providers and receivers, built once: each holds an HTTP client.
struct Fixture {
    twilio: Arc<TwilioSms>,
    telnyx: Arc<TelnyxSms>,
    sendgrid: Arc<SendGridEmail>,
    twilio_hook: Arc<dyn WebhookReceiver>,
    telnyx_hook: Arc<dyn WebhookReceiver>,
    sendgrid_hook: Arc<dyn WebhookReceiver>,
    telegram_hook: Arc<dyn WebhookReceiver>,
    generic_hook: Arc<dyn WebhookReceiver>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let b64 = base64::engine::general_purpose::STANDARD;
        let twilio = Arc::new(TwilioSms::new(TwilioConfig::new("AC0", Secret::new(TOKEN))));
        let telnyx = Arc::new(
            TelnyxSms::new(TelnyxConfig {
                api_key: Secret::new("KEY"),
                public_key: b64.encode(telnyx_key().verifying_key().as_bytes()),
                base_url: "http://127.0.0.1:9".into(),
                messaging_profile_id: None,
                webhook_url: None,
            })
            .with_clock(NOW),
        );
        let sendgrid = Arc::new(SendGridEmail::new(SendGridConfig {
            api_key: Secret::new("SG"),
            base_url: "http://127.0.0.1:9".into(),
        }));
        Fixture {
            twilio_hook: SmsChannel::new("sms", "+1555", twilio.clone()).receiver(),
            telnyx_hook: SmsChannel::new("sms", "+1555", telnyx.clone()).receiver(),
            sendgrid_hook: EmailChannel::new("mail", "bot@example.com", sendgrid.clone())
                .receiver(),
            telegram_hook: TelegramChannel::new("tg", TelegramConfig::new(Secret::new("1:a")))
                .receiver(),
            generic_hook: WebhookChannel::new(
                "wh",
                WebhookConfig {
                    url: "http://127.0.0.1:9".into(),
                    secret: Some(Secret::new(HOOK_SECRET)),
                    allowed_urls: Vec::new(),
                },
            )
            .receiver_at(NOW),
            twilio,
            telnyx,
            sendgrid,
        }
    })
}

/// Every error a receiver returns is one of the typed kinds.
fn typed(result: Result<impl Sized, WebhookError>) {
    if let Err(e) = result {
        assert!(
            matches!(
                e,
                WebhookError::BadSignature(_)
                    | WebhookError::Malformed(_)
                    | WebhookError::Unsupported(_)
            ),
            "{e:?}"
        );
        assert!(!e.to_string().is_empty());
    }
}

/// Runs one body through every receiver, each time validly signed.
fn every_receiver(body: &[u8], content_type: &str) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let f = fixture();

    for kind in [WebhookKind::Inbound, WebhookKind::Status] {
        // Twilio, signed over whatever form fields the body has.
        let mut req = request(kind, &[("Content-Type", content_type)], body.to_vec());
        let params = req.form().unwrap_or_default();
        let sig = signature(TOKEN, &req.url, &params);
        req.headers.push(("X-Twilio-Signature".into(), sig));
        typed(f.twilio.parse_webhook(&req));
        typed(f.twilio.parse_status(&req));
        typed(f.twilio_hook.verify_and_parse(&req));

        // Telnyx, Ed25519-signed.
        let mut signed = NOW.to_string().into_bytes();
        signed.push(b'|');
        signed.extend_from_slice(body);
        let sig = b64.encode(telnyx_key().sign(&signed).to_bytes());
        let now = NOW.to_string();
        let req = request(
            kind,
            &[
                ("telnyx-signature-ed25519", &sig),
                ("telnyx-timestamp", &now),
            ],
            body.to_vec(),
        );
        typed(f.telnyx.parse_webhook(&req));
        typed(f.telnyx.parse_status(&req));
        typed(f.telnyx_hook.verify_and_parse(&req));

        // SendGrid.
        let req = request(kind, &[("Content-Type", content_type)], body.to_vec());
        typed(f.sendgrid.parse_inbound(&req));
        typed(f.sendgrid.parse_status(&req));
        typed(f.sendgrid_hook.verify_and_parse(&req));

        // Telegram, without a secret token.
        let req = request(kind, &[], body.to_vec());
        typed(f.telegram_hook.verify_and_parse(&req));

        // The generic webhook channel, HMAC-signed.
        let sig = sign(HOOK_SECRET, NOW, body);
        let req = request(
            kind,
            &[(TIMESTAMP_HEADER, &now), (SIGNATURE_HEADER, &sig)],
            body.to_vec(),
        );
        typed(f.generic_hook.verify_and_parse(&req));
    }
}

/// Valid payloads of each vendor, to mutate.
fn valid_payloads() -> Vec<Value> {
    vec![
        json!({"data": {"event_type": "message.received", "payload": {
            "id": "m1", "text": "hi", "from": {"phone_number": "+1555"},
            "to": [{"phone_number": "+1666", "status": "delivered"}],
            "media": [{"url": "https://x/y.jpg", "content_type": "image/jpeg"}],
            "errors": [{"code": "40001", "title": "bad"}]}}}),
        json!({"update_id": 5, "message": {"message_id": 9, "chat": {"id": 42},
            "text": "hi", "from": {"username": "ada"},
            "photo": [{"file_id": "f1"}], "location": {"latitude": 1.5, "longitude": 2.5}}}),
        json!({"sender_id": "u1", "text": "hi", "room_id": "r", "message_id": "m",
            "metadata": {"a": 1}, "content": {"type": "text", "text": "hello"}}),
        json!([{"event": "delivered", "sg_message_id": "abc.def"}, {"event": "bounce"}]),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::from)),
        ".{0,16}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"x": 1}])),
    ]
}

/// Replaces the value at one randomly chosen place of `v` by `leaf`.
fn mutate(v: &mut Value, mut pick: usize, leaf: Value) {
    fn places(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(places).sum(),
            Value::Object(o) => o.values().map(places).sum(),
            _ => 0,
        }
    }
    pick %= places(v);
    fn walk(v: &mut Value, pick: &mut usize, leaf: &mut Option<Value>) {
        if *pick == 0 {
            if let Some(l) = leaf.take() {
                *v = l;
            }
            return;
        }
        *pick -= 1;
        let children: Vec<&mut Value> = match v {
            Value::Array(a) => a.iter_mut().collect(),
            Value::Object(o) => o.values_mut().collect(),
            _ => Vec::new(),
        };
        for c in children {
            walk(c, pick, leaf);
            if leaf.is_none() {
                return;
            }
        }
    }
    walk(v, &mut pick, &mut Some(leaf));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn random_bytes_never_panic_a_receiver(body in prop::collection::vec(any::<u8>(), 0..256)) {
        every_receiver(&body, "application/x-www-form-urlencoded");
        every_receiver(&body, "multipart/form-data; boundary=xYz");
    }

    #[test]
    fn mutated_valid_payloads_never_panic_a_receiver(
        which in 0usize..4,
        picks in prop::collection::vec((any::<usize>(), json_leaf()), 1..4),
    ) {
        let mut v = valid_payloads()[which].clone();
        for (pick, leaf) in picks {
            mutate(&mut v, pick, leaf);
        }
        every_receiver(v.to_string().as_bytes(), "application/json");
    }

    #[test]
    fn random_forms_never_panic_twilio(
        pairs in prop::collection::vec(
            (prop_oneof![Just("From".to_owned()), Just("Body".to_owned()), Just("NumMedia".to_owned()),
                Just("MediaUrl0".to_owned()), Just("MessageStatus".to_owned()), Just("MessageSid".to_owned()),
                ".{0,6}"],
             ".{0,12}"),
            0..6),
    ) {
        let body = serde_urlencoded::to_string(&pairs).unwrap();
        every_receiver(body.as_bytes(), "application/x-www-form-urlencoded");
    }

    #[test]
    fn random_multipart_never_panics_sendgrid(
        boundary in "[-a-zA-Z0-9\"]{0,12}",
        parts in prop::collection::vec((".{0,8}", ".{0,24}", any::<bool>()), 0..5),
    ) {
        let mut body = String::new();
        for (name, value, file) in &parts {
            body.push_str(&format!("--{boundary}\r\n"));
            let filename = if *file { "; filename=\"a.txt\"" } else { "" };
            body.push_str(&format!(
                "Content-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let ct = format!("multipart/form-data; boundary={boundary}");
        typed(multipart_fields(&ct, body.as_bytes()));
        every_receiver(body.as_bytes(), &ct);
    }

    #[test]
    fn signature_headers_never_panic(ts in ".{0,24}", sig in ".{0,64}", ts_num in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(i64::MIN + 1)]) {
        let f = fixture();
        for t in [ts.clone(), ts_num.to_string()] {
            let req = request(
                WebhookKind::Inbound,
                &[("telnyx-signature-ed25519", &sig), ("telnyx-timestamp", &t)],
                b"{}".to_vec(),
            );
            prop_assert!(!f.telnyx.verify_signature(&req));
            let req = request(
                WebhookKind::Inbound,
                &[(TIMESTAMP_HEADER, &t), (SIGNATURE_HEADER, &sig)],
                b"{}".to_vec(),
            );
            let result = f.generic_hook.verify_and_parse(&req);
            prop_assert!(matches!(result, Err(WebhookError::BadSignature(_))));
        }
    }
}

/// Found by fuzzing (`fuzz/regressions/webhook_inbound/`): a timestamp
/// header of `i64::MIN` overflowed the window check and panicked.
#[test]
fn webhook_timestamp_at_i64_min_is_a_bad_signature() {
    let req = request(
        WebhookKind::Inbound,
        &[
            (TIMESTAMP_HEADER, "-9223372036854775808"),
            (SIGNATURE_HEADER, "x"),
        ],
        b"{}".to_vec(),
    );
    let result = fixture().generic_hook.verify_and_parse(&req);
    assert!(
        matches!(result, Err(WebhookError::BadSignature(_))),
        "{result:?}"
    );
}

/// Found by fuzzing (`fuzz/regressions/telnyx_webhook/`): the same
/// overflow in Telnyx's timestamp check.
#[test]
fn telnyx_timestamp_at_i64_min_fails_verification() {
    let req = request(
        WebhookKind::Inbound,
        &[
            ("telnyx-signature-ed25519", "x"),
            ("telnyx-timestamp", "-9223372036854775808"),
        ],
        b"{}".to_vec(),
    );
    assert!(!fixture().telnyx.verify_signature(&req));
    let result = fixture().telnyx_hook.verify_and_parse(&req);
    assert!(
        matches!(result, Err(WebhookError::BadSignature(_))),
        "{result:?}"
    );
}
