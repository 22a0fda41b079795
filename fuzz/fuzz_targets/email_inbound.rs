//! Inbound email: SendGrid's multipart Inbound Parse posts (with the
//! content type and its boundary taken from the input), SendGrid's JSON
//! event callbacks, and raw RFC 5322 messages posted to the SMTP receiver.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use roomkit_channels::email::sendgrid::{SendGridConfig, SendGridEmail, multipart_fields};
use roomkit_channels::email::smtp::{SmtpConfig, SmtpEmail};
use roomkit_channels::email::{EmailChannel, EmailProvider, room_of_message_id};
use roomkit_channels::{Secret, WebhookKind, WebhookReceiver, WebhookRequest};
use roomkit_fuzz::{fields, runtime, text_fields};

fn smtp() -> Option<Arc<SmtpEmail>> {
    static SMTP: OnceLock<Option<Arc<SmtpEmail>>> = OnceLock::new();
    SMTP.get_or_init(|| {
        let _guard = runtime().enter();
        SmtpEmail::new(&SmtpConfig {
            url: "smtp://127.0.0.1:2525".into(),
            username: None,
            password: None,
        })
        .ok()
        .map(Arc::new)
    })
    .clone()
}

/// Built once: providers hold an HTTP client, which is slow to make.
fn fixture() -> &'static (Arc<SendGridEmail>, Vec<Arc<dyn WebhookReceiver>>) {
    static FIXTURE: OnceLock<(Arc<SendGridEmail>, Vec<Arc<dyn WebhookReceiver>>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let sendgrid = Arc::new(SendGridEmail::new(SendGridConfig {
            api_key: Secret::new("SG.fuzz"),
            base_url: "http://127.0.0.1:9".into(),
        }));
        let mut providers: Vec<Arc<dyn EmailProvider>> = vec![sendgrid.clone()];
        if let Some(s) = smtp() {
            providers.push(s);
        }
        let receivers = providers
            .into_iter()
            .map(|p| EmailChannel::new("mail", "bot@example.com", p).receiver())
            .collect();
        (sendgrid, receivers)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = text_fields(data, 2);
    let body = fields(data, 2)[1].to_vec();
    let _ = multipart_fields(&text[0], &body);
    let _ = room_of_message_id(&text[1]);

    let (sendgrid, receivers) = fixture();
    let mut req = WebhookRequest {
        kind: WebhookKind::Inbound,
        method: "POST".into(),
        url: "https://example.com/webhooks/email/sendgrid".into(),
        headers: vec![("Content-Type".into(), text[0].clone())],
        body,
    };
    let _ = sendgrid.parse_inbound(&req);
    let _ = sendgrid.parse_status(&req);
    for receiver in receivers {
        for kind in [WebhookKind::Inbound, WebhookKind::Status] {
            req.kind = kind;
            let _ = receiver.verify_and_parse(&req);
        }
    }
});
