//! Telegram bot updates posted to the webhook, with and without the
//! secret-token header the bot was configured with.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use roomkit_channels::telegram::{TelegramChannel, TelegramConfig};
use roomkit_channels::{Secret, WebhookKind, WebhookReceiver, WebhookRequest};
use roomkit_fuzz::{fields, text_fields};

/// Built once: channels hold an HTTP client, which is slow to make.
fn fixture() -> &'static (Arc<dyn WebhookReceiver>, Arc<dyn WebhookReceiver>) {
    static FIXTURE: OnceLock<(Arc<dyn WebhookReceiver>, Arc<dyn WebhookReceiver>)> =
        OnceLock::new();
    FIXTURE.get_or_init(|| {
        let open =
            TelegramChannel::new("tg", TelegramConfig::new(Secret::new("123:abc"))).receiver();
        let mut config = TelegramConfig::new(Secret::new("123:abc"));
        config.secret_token = Some(Secret::new("s3cret"));
        (open, TelegramChannel::new("tg", config).receiver())
    })
}

fuzz_target!(|data: &[u8]| {
    let text = text_fields(data, 2);
    let body = fields(data, 2)[1].to_vec();
    let (open, guarded) = fixture();
    let mut req = WebhookRequest {
        kind: WebhookKind::Inbound,
        method: "POST".into(),
        url: "https://example.com/webhooks/telegram/telegram".into(),
        headers: vec![("X-Telegram-Bot-Api-Secret-Token".into(), text[0].clone())],
        body,
    };
    for kind in [WebhookKind::Inbound, WebhookKind::Status] {
        req.kind = kind;
        let _ = open.verify_and_parse(&req);
        let _ = guarded.verify_and_parse(&req);
    }
});
