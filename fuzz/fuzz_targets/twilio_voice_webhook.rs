//! The Twilio voice webhook: a form body, the `X-Twilio-Signature` header,
//! the URL it covers and the auth token, through the signature check,
//! the media-socket upgrade check and the media URL; then through the
//! receiver with a valid signature, which must answer TwiML for every
//! readable form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_channels::sms::twilio::signature;
use roomkit_channels::{Secret, WebhookKind, WebhookReceiver, WebhookRequest};
use roomkit_fuzz::{fields, text_fields};
use roomkit_voice::twilio::{
    TwilioVoiceWebhook, media_url_for, twiml_connect_stream, verify_upgrade, verify_webhook,
};

const TOKEN: &str = "fuzz-auth-token";

fuzz_target!(|data: &[u8]| {
    let text = text_fields(data, 4);
    let body = fields(data, 4)[3].to_vec();
    let (token, url, sig) = (&text[0], &text[1], &text[2]);

    let _ = verify_webhook(token, url, &body, Some(sig));
    let _ = verify_webhook(token, url, &body, None);
    let headers = vec![("X-Twilio-Signature".to_owned(), sig.clone())];
    let _ = verify_upgrade(token, url, &headers);
    let media = media_url_for(url);
    assert!(media.ends_with("/voice/twilio/media"), "{media}");
    let xml = twiml_connect_stream(url, &[("from", sig), (token, url)]);
    // Whatever the values hold, they cannot open or close an element.
    assert_eq!(xml.matches('<').count(), 9, "{xml}");

    let receiver = TwilioVoiceWebhook::new(Secret::new(TOKEN));
    let form: Option<Vec<(String, String)>> = serde_urlencoded::from_bytes(&body).ok();
    let mut req = WebhookRequest {
        kind: WebhookKind::Inbound,
        method: "POST".into(),
        url: url.clone(),
        headers: vec![
            (
                "X-Twilio-Signature".into(),
                signature(TOKEN, url, form.as_deref().unwrap_or_default()),
            ),
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ],
        body,
    };
    let outcome = receiver.verify_and_parse(&req);
    if form.is_some() {
        assert!(
            outcome.is_ok(),
            "a validly signed form is answered: {outcome:?}"
        );
    }
    req.headers[0].1 = sig.clone();
    let _ = receiver.verify_and_parse(&req);
    req.kind = WebhookKind::Status;
    assert!(receiver.verify_and_parse(&req).is_err());
});
