//! Telnyx SMS webhooks: the JSON body and the Ed25519 signature and
//! timestamp headers, through the provider's parsers and through the
//! receiver with a valid signature.

#![no_main]

use std::sync::{Arc, OnceLock};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use roomkit_channels::sms::SmsChannel;
use roomkit_channels::sms::SmsProvider;
use roomkit_channels::sms::telnyx::{TelnyxConfig, TelnyxSms};
use roomkit_channels::{Secret, WebhookKind, WebhookReceiver, WebhookRequest};
use roomkit_fuzz::{fields, text_fields};

const NOW: i64 = 1_700_000_000;

/// Built once: providers hold an HTTP client, which is slow to make.
fn fixture() -> &'static (SigningKey, Arc<TelnyxSms>, Arc<dyn WebhookReceiver>) {
    static FIXTURE: OnceLock<(SigningKey, Arc<TelnyxSms>, Arc<dyn WebhookReceiver>)> =
        OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let provider = Arc::new(
            TelnyxSms::new(TelnyxConfig {
                api_key: Secret::new("KEY0"),
                public_key: base64::engine::general_purpose::STANDARD
                    .encode(key.verifying_key().as_bytes()),
                base_url: "http://127.0.0.1:9".into(),
                messaging_profile_id: None,
                webhook_url: None,
            })
            .with_clock(NOW),
        );
        let receiver = SmsChannel::new("sms", "+15550000000", provider.clone()).receiver();
        (key, provider, receiver)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = text_fields(data, 3);
    let body = fields(data, 3)[2].to_vec();
    let (key, provider, receiver) = fixture();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut req = WebhookRequest {
        kind: WebhookKind::Inbound,
        method: "POST".into(),
        url: "https://example.com/webhooks/sms/telnyx".into(),
        headers: vec![
            ("telnyx-signature-ed25519".into(), text[0].clone()),
            ("telnyx-timestamp".into(), text[1].clone()),
            ("content-type".into(), "application/json".into()),
        ],
        body,
    };
    let _ = provider.verify_signature(&req);
    let _ = provider.parse_webhook(&req);
    let _ = provider.parse_status(&req);

    let mut signed = NOW.to_string().into_bytes();
    signed.push(b'|');
    signed.extend_from_slice(&req.body);
    req.headers[0].1 = b64.encode(key.sign(&signed).to_bytes());
    req.headers[1].1 = NOW.to_string();
    for kind in [WebhookKind::Inbound, WebhookKind::Status] {
        req.kind = kind;
        let _ = receiver.verify_and_parse(&req);
    }
});
