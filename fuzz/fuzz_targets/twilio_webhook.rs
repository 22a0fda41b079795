//! Twilio SMS webhooks: the form body, the signature header and the URL it
//! covers, through the provider's parsers and through the receiver with a
//! valid signature (so parsing is reached past verification).

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use roomkit_channels::sms::SmsChannel;
use roomkit_channels::sms::SmsProvider;
use roomkit_channels::sms::twilio::{TwilioConfig, TwilioSms, signature};
use roomkit_channels::{Secret, WebhookKind, WebhookReceiver, WebhookRequest};
use roomkit_fuzz::{fields, text_fields};

const TOKEN: &str = "fuzz-auth-token";

/// Built once: providers hold an HTTP client, which is slow to make.
fn fixture() -> &'static (Arc<TwilioSms>, Arc<dyn WebhookReceiver>) {
    static FIXTURE: OnceLock<(Arc<TwilioSms>, Arc<dyn WebhookReceiver>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let provider = Arc::new(TwilioSms::new(TwilioConfig::new(
            "AC00000000000000000000000000000000",
            Secret::new(TOKEN),
        )));
        let receiver = SmsChannel::new("sms", "+15550000000", provider.clone()).receiver();
        (provider, receiver)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = text_fields(data, 4);
    let body = fields(data, 4)[3].to_vec();
    let (provider, receiver) = fixture();
    let method = if text[0].starts_with('G') {
        "GET"
    } else {
        "POST"
    };
    let mut req = WebhookRequest {
        kind: WebhookKind::Inbound,
        method: method.into(),
        url: text[1].clone(),
        headers: vec![
            ("X-Twilio-Signature".into(), text[2].clone()),
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ],
        body,
    };
    let _ = provider.verify_signature(&req);
    let _ = provider.parse_webhook(&req);
    let _ = provider.parse_status(&req);

    let params = if method == "POST" {
        req.form().unwrap_or_default()
    } else {
        Vec::new()
    };
    req.headers[0].1 = signature(TOKEN, &req.url, &params);
    for kind in [WebhookKind::Inbound, WebhookKind::Status] {
        req.kind = kind;
        let _ = receiver.verify_and_parse(&req);
    }
});
