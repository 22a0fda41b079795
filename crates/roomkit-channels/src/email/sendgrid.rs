//! SendGrid: v3 Mail Send (`POST /v3/mail/send`, bearer API key, JSON,
//! answered 202 with `X-Message-Id`), the Inbound Parse webhook
//! (`multipart/form-data` with `from`, `to`, `subject`, `text`, `html` and
//! the raw `headers`), and Event Webhook delivery events (a JSON array).

use async_trait::async_trait;
use roomkit_core::DeliveryStatusUpdate;
use roomkit_model::{DeliveryStatus, Map};

use super::{EmailProvider, InboundEmail, OutboundEmail, inbound_from_headers, parse_headers};
use crate::error::ProviderError;
use crate::receiver::{WebhookError, WebhookRequest};
use crate::{ProviderResult, Secret, http};

const PROVIDER: &str = "sendgrid";

/// SendGrid settings.
#[derive(Debug, Clone)]
pub struct SendGridConfig {
    /// API key.
    pub api_key: Secret,
    /// API host; `https://api.sendgrid.com` unless overridden.
    pub base_url: String,
}

/// The SendGrid provider.
#[derive(Debug, Clone)]
pub struct SendGridEmail {
    config: SendGridConfig,
    client: reqwest::Client,
}

impl SendGridEmail {
    /// A provider from its settings.
    pub fn new(config: SendGridConfig) -> Self {
        Self {
            config,
            client: http::client(),
        }
    }
}

fn error_fields(b: &serde_json::Value) -> http::ErrorFields {
    let first = b.pointer("/errors/0");
    (
        first
            .and_then(|e| e.get("field"))
            .and_then(|f| f.as_str())
            .map(str::to_owned),
        first
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        None,
    )
}

/// The fields of a `multipart/form-data` body (text parts only).
pub fn multipart_fields(
    content_type: &str,
    body: &[u8],
) -> Result<Vec<(String, String)>, WebhookError> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"').to_owned())
        .ok_or_else(|| WebhookError::Malformed("multipart boundary missing".into()))?;
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut fields = Vec::new();
    for part in text.split(&delimiter).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let (headers, value) = parse_headers(part);
        let Some(disposition) = super::header(&headers, "Content-Disposition") else {
            continue;
        };
        if disposition.contains("filename=") {
            continue;
        }
        let Some(name) = disposition
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("name="))
            .next()
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        fields.push((name.trim_matches('"').to_owned(), value.to_owned()));
    }
    Ok(fields)
}

#[async_trait]
impl EmailProvider for SendGridEmail {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn send(&self, email: &OutboundEmail) -> Result<ProviderResult, ProviderError> {
        let mut content = vec![serde_json::json!({"type": "text/plain", "value": email.text})];
        if let Some(html) = &email.html {
            content.push(serde_json::json!({"type": "text/html", "value": html}));
        }
        let mut headers = serde_json::Map::new();
        if let Some(irt) = &email.in_reply_to {
            headers.insert("In-Reply-To".into(), irt.clone().into());
        }
        if !email.references.is_empty() {
            headers.insert("References".into(), email.references.join(" ").into());
        }
        let mut body = serde_json::json!({
            "personalizations": [{"to": [{"email": email.to}]}],
            "from": {"email": email.from},
            "subject": email.subject,
            "content": content,
            "custom_args": {"roomkit_message_id": email.message_id},
        });
        if !headers.is_empty()
            && let Some(obj) = body.as_object_mut()
        {
            obj.insert("headers".into(), headers.into());
        }
        let url = format!(
            "{}/v3/mail/send",
            self.config.base_url.trim_end_matches('/')
        );
        let resp = self
            .client
            .post(url)
            .bearer_auth(self.config.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| http::transport(PROVIDER, "send", &e))?;
        let id = resp
            .headers()
            .get("x-message-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        http::json_or_error(PROVIDER, "send", resp, error_fields).await?;
        tracing::debug!(target: "roomkit.providers.email.sendgrid", provider_message_id = ?id, "mail accepted");
        Ok(ProviderResult {
            provider_message_id: id,
            status: Some("accepted".into()),
            queued: true,
        })
    }

    fn parse_inbound(&self, req: &WebhookRequest) -> Result<Vec<InboundEmail>, WebhookError> {
        let ct = req.header("Content-Type").unwrap_or_default();
        let fields = multipart_fields(ct, &req.body)?;
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (mut headers, _) = parse_headers(get("headers").unwrap_or_default());
        for (k, name) in [("from", "From"), ("to", "To"), ("subject", "Subject")] {
            if super::header(&headers, name).is_none()
                && let Some(v) = get(k)
            {
                headers.push((name.to_owned(), v.to_owned()));
            }
        }
        let raw: Map = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        Ok(vec![inbound_from_headers(
            &headers,
            get("text").unwrap_or_default(),
            get("html").map(str::to_owned),
            raw,
        )?])
    }

    fn parse_status(
        &self,
        req: &WebhookRequest,
    ) -> Result<Vec<DeliveryStatusUpdate>, WebhookError> {
        let events = req.json()?;
        let events = events
            .as_array()
            .ok_or_else(|| WebhookError::Malformed("expected a JSON array of events".into()))?;
        Ok(events
            .iter()
            .filter_map(|e| {
                let word = e.get("event")?.as_str()?;
                let status = match word {
                    "processed" | "deferred" => DeliveryStatus::Queued,
                    "delivered" | "open" | "click" => DeliveryStatus::Sent,
                    "bounce" | "dropped" | "blocked" => DeliveryStatus::Failed,
                    _ => return None,
                };
                let sg = e.get("sg_message_id")?.as_str()?;
                let id = sg.split('.').next().unwrap_or(sg);
                Some(DeliveryStatusUpdate {
                    provider_message_id: Some(id.to_owned()),
                    status: Some(status),
                    provider_status: word.to_owned(),
                    raw: e.as_object().cloned().unwrap_or_default(),
                    ..DeliveryStatusUpdate::default()
                })
            })
            .collect())
    }
}
