//! Posts to the generic HTTP webhook channel: the timestamp and signature
//! headers as given, then the same body validly signed so the JSON parser
//! behind verification is reached.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use roomkit_channels::webhook::{
    SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, WebhookConfig, sign,
};
use roomkit_channels::{Secret, WebhookKind, WebhookReceiver, WebhookRequest};
use roomkit_fuzz::{fields, text_fields};

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "whsec-fuzz";

/// Built once: channels hold an HTTP client, which is slow to make.
fn fixture() -> &'static (Arc<dyn WebhookReceiver>, Arc<dyn WebhookReceiver>) {
    static FIXTURE: OnceLock<(Arc<dyn WebhookReceiver>, Arc<dyn WebhookReceiver>)> =
        OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = |secret: Option<Secret>| WebhookConfig {
            url: "http://127.0.0.1:9/hook".into(),
            secret,
            allowed_urls: Vec::new(),
        };
        (
            WebhookChannel::new("wh", config(Some(Secret::new(SECRET)))).receiver_at(NOW),
            WebhookChannel::new("wh", config(None)).receiver_at(NOW),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let text = text_fields(data, 3);
    let body = fields(data, 3)[2].to_vec();
    let (receiver, open) = fixture();
    let mut req = WebhookRequest {
        kind: WebhookKind::Inbound,
        method: "POST".into(),
        url: "https://example.com/webhooks/webhook/generic".into(),
        headers: vec![
            (TIMESTAMP_HEADER.into(), text[0].clone()),
            (SIGNATURE_HEADER.into(), text[1].clone()),
        ],
        body,
    };
    let _ = receiver.verify_and_parse(&req);
    req.headers[0].1 = NOW.to_string();
    req.headers[1].1 = sign(SECRET, NOW, &req.body);
    for kind in [WebhookKind::Inbound, WebhookKind::Status] {
        req.kind = kind;
        let _ = receiver.verify_and_parse(&req);
    }
    let _ = open.verify_and_parse(&req);
});
