//! Twilio Programmable Messaging: sends with the Messages REST resource
//! (form-encoded, HTTP basic auth with the account SID and auth token),
//! verifies `X-Twilio-Signature` (HMAC-SHA1 over the URL and the sorted
//! form fields, base64), parses inbound SMS/MMS and status callbacks, and
//! answers inbound webhooks with empty TwiML.

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use roomkit_core::DeliveryStatusUpdate;
use roomkit_model::{DeliveryError, Map, RoomEvent};
use sha1::Sha1;

use super::{InboundSms, SmsProvider, map_status};
use crate::error::ProviderError;
use crate::receiver::{WebhookError, WebhookReply, WebhookRequest, constant_time_eq};
use crate::{ProviderResult, Secret, content, http};

const PROVIDER: &str = "twilio";

/// The empty TwiML document Twilio expects in answer to an inbound message.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// Twilio settings.
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// Account SID (`AC...`).
    pub account_sid: String,
    /// Auth token: authenticates sends and signs webhooks.
    pub auth_token: Secret,
    /// API host; `https://api.twilio.com` unless overridden (tests,
    /// proxies).
    pub base_url: String,
    /// URL Twilio posts delivery-status callbacks to, when set.
    pub status_callback_url: Option<String>,
}

impl TwilioConfig {
    /// Settings with the public API host.
    pub fn new(account_sid: impl Into<String>, auth_token: Secret) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token,
            base_url: "https://api.twilio.com".into(),
            status_callback_url: None,
        }
    }
}

/// The Twilio SMS provider.
#[derive(Debug, Clone)]
pub struct TwilioSms {
    config: TwilioConfig,
    client: reqwest::Client,
}

impl TwilioSms {
    /// A provider from its settings.
    pub fn new(config: TwilioConfig) -> Self {
        Self {
            config,
            client: http::client(),
        }
    }
}

/// Twilio's request signature: base64(HMAC-SHA1(auth_token, url + the
/// form fields sorted by name, each as name followed by value)).
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `given` (an `X-Twilio-Signature` header) signs `url` and the
/// form `params` with `auth_token`; the URL is tried with and without its
/// default port, in constant time per comparison. Shared by every Twilio
/// webhook (SMS here, the voice webhook in the voice crate).
pub fn verify_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    given: &str,
) -> bool {
    port_variants(url).iter().any(|url| {
        let expected = signature(auth_token, url, params);
        !expected.is_empty() && constant_time_eq(expected.as_bytes(), given.trim().as_bytes())
    })
}

/// The URL with its default port added or removed: Twilio may sign either
/// form, so both are tried.
fn port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        let Some(rest) = url.strip_prefix(scheme) else {
            continue;
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some(bare) = host.strip_suffix(port) {
            out.push(format!("{scheme}{bare}{path}"));
        } else if !host.contains(':') {
            out.push(format!("{scheme}{host}{port}{path}"));
        }
    }
    out
}

fn error_fields(body: &serde_json::Value) -> http::ErrorFields {
    (
        body.get("code").map(|c| match c {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        body.get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        None,
    )
}

fn form_map(fields: &[(String, String)]) -> Map {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[async_trait]
impl SmsProvider for TwilioSms {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn send(
        &self,
        event: &RoomEvent,
        to: &str,
        from: &str,
    ) -> Result<ProviderResult, ProviderError> {
        let flat = content::flatten(&event.content);
        let mut form: Vec<(&str, String)> = vec![("To", to.to_owned()), ("From", from.to_owned())];
        if !flat.text.is_empty() {
            form.push(("Body", flat.text));
        }
        for m in &flat.media {
            form.push(("MediaUrl", m.url.clone()));
        }
        if let Some(cb) = &self.config.status_callback_url {
            form.push(("StatusCallback", super::callback_url_for(cb, event)));
        }
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.config.base_url.trim_end_matches('/'),
            self.config.account_sid
        );
        let resp = self
            .client
            .post(&url)
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose()),
            )
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(serde_urlencoded::to_string(&form).unwrap_or_default())
            .send()
            .await
            .map_err(|e| http::transport(PROVIDER, "send", &e))?;
        let body = http::json_or_error(PROVIDER, "send", resp, error_fields).await?;
        let sid = body.get("sid").and_then(|s| s.as_str()).map(str::to_owned);
        if sid.is_none() {
            return Err(ProviderError::Response {
                provider: PROVIDER,
                operation: "send",
                message: "no sid in the answer".into(),
            });
        }
        let status = body
            .get("status")
            .and_then(|s| s.as_str())
            .map(str::to_owned);
        tracing::debug!(target: "roomkit.providers.sms.twilio", provider_message_id = ?sid, status = ?status, "message accepted");
        Ok(ProviderResult {
            provider_message_id: sid,
            // Twilio answers `queued` for every accepted message; the
            // status callback says what happened next.
            queued: false,
            status,
        })
    }

    fn verify_signature(&self, req: &WebhookRequest) -> bool {
        let Some(given) = req.header("X-Twilio-Signature") else {
            return false;
        };
        let params = if req.method.eq_ignore_ascii_case("POST") {
            match req.form() {
                Ok(p) => p,
                Err(_) => return false,
            }
        } else {
            Vec::new()
        };
        verify_signature(self.config.auth_token.expose(), &req.url, &params, given)
    }

    fn parse_webhook(&self, req: &WebhookRequest) -> Result<Vec<InboundSms>, WebhookError> {
        let fields = req.form()?;
        let from = field(&fields, "From")
            .filter(|f| !f.is_empty())
            .ok_or_else(|| WebhookError::Malformed("From is missing".into()))?;
        let sid = field(&fields, "MessageSid").or_else(|| field(&fields, "SmsMessageSid"));
        let num_media: usize = field(&fields, "NumMedia")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
            .min(10);
        let media = (0..num_media)
            .filter_map(|i| {
                let url = field(&fields, &format!("MediaUrl{i}"))?;
                let mime = field(&fields, &format!("MediaContentType{i}")).unwrap_or("");
                Some((url.to_owned(), mime.to_owned()))
            })
            .collect();
        Ok(vec![InboundSms {
            from: from.to_owned(),
            to: field(&fields, "To").unwrap_or_default().to_owned(),
            text: field(&fields, "Body").unwrap_or_default().to_owned(),
            media,
            provider_message_id: sid.map(str::to_owned),
            raw: form_map(&fields),
        }])
    }

    fn parse_status(
        &self,
        req: &WebhookRequest,
    ) -> Result<Vec<DeliveryStatusUpdate>, WebhookError> {
        let fields = req.form()?;
        let sid = field(&fields, "MessageSid")
            .or_else(|| field(&fields, "SmsSid"))
            .ok_or_else(|| WebhookError::Malformed("MessageSid is missing".into()))?;
        let word = field(&fields, "MessageStatus")
            .or_else(|| field(&fields, "SmsStatus"))
            .ok_or_else(|| WebhookError::Malformed("MessageStatus is missing".into()))?;
        let error = field(&fields, "ErrorCode")
            .filter(|c| !c.is_empty())
            .map(|code| DeliveryError {
                code: code.to_owned(),
                message: field(&fields, "ErrorMessage")
                    .map_or_else(|| format!("Twilio error {code}"), str::to_owned),
                retryable: false,
            });
        Ok(vec![DeliveryStatusUpdate {
            provider_message_id: Some(sid.to_owned()),
            event_id: super::event_of_callback(req),
            status: map_status(word),
            provider_status: word.to_owned(),
            error,
            raw: form_map(&fields),
            ..DeliveryStatusUpdate::default()
        }])
    }

    fn inbound_reply(&self) -> WebhookReply {
        WebhookReply::with_body("text/xml", EMPTY_TWIML)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// Twilio's published validation examples (auth token `12345`).
    #[test]
    fn signature_matches_twilio_published_examples() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert_eq!(
            signature("12345", url, &params("+14158675310")),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert_eq!(
            signature("12345", url, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn default_ports_are_tried_both_ways() {
        let v = port_variants("https://example.com/hook?a=1");
        assert!(v.contains(&"https://example.com:443/hook?a=1".to_owned()));
        let v = port_variants("https://example.com:443/hook");
        assert!(v.contains(&"https://example.com/hook".to_owned()));
    }
}
