//! Telnyx Messaging (API v2): sends with `POST /v2/messages` (JSON, bearer
//! API key), verifies webhooks signed with Ed25519 (`telnyx-signature-ed25519`
//! over `"{telnyx-timestamp}|{body}"`, with the account's public key), and
//! parses `message.received` and delivery events.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use roomkit_core::DeliveryStatusUpdate;
use roomkit_model::{DeliveryError, RoomEvent};

use super::{InboundSms, SmsProvider, map_status};
use crate::error::ProviderError;
use crate::receiver::{WebhookError, WebhookRequest};
use crate::{ProviderResult, Secret, content, http};

const PROVIDER: &str = "telnyx";
/// How far a signed timestamp may be from now, in seconds.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Telnyx settings.
#[derive(Debug, Clone)]
pub struct TelnyxConfig {
    /// API key (bearer).
    pub api_key: Secret,
    /// The account's webhook public key, base64 (32 bytes).
    pub public_key: String,
    /// API host; `https://api.telnyx.com` unless overridden.
    pub base_url: String,
    /// Messaging profile, when sends name one.
    pub messaging_profile_id: Option<String>,
    /// URL Telnyx posts delivery events to, when set.
    pub webhook_url: Option<String>,
}

/// The Telnyx SMS provider.
#[derive(Clone)]
pub struct TelnyxSms {
    config: TelnyxConfig,
    key: Option<VerifyingKey>,
    client: reqwest::Client,
    now: Arc<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for TelnyxSms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelnyxSms")
            .field("config", &self.config)
            .finish()
    }
}

impl TelnyxSms {
    /// A provider from its settings. A public key that does not decode
    /// makes every webhook fail verification (and is logged).
    pub fn new(config: TelnyxConfig) -> Self {
        let key = base64::engine::general_purpose::STANDARD
            .decode(config.public_key.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok());
        if key.is_none() {
            tracing::error!(target: "roomkit.providers.sms.telnyx", "the Telnyx public key does not decode; webhooks will be refused");
        }
        Self {
            config,
            key,
            client: http::client(),
            now: Arc::new(|| chrono::Utc::now().timestamp()),
        }
    }

    /// The same provider with a fixed clock (tests of the time window).
    pub fn with_clock(mut self, now: i64) -> Self {
        self.now = Arc::new(move || now);
        self
    }
}

fn error_fields(b: &serde_json::Value) -> http::ErrorFields {
    let first = b.pointer("/errors/0");
    (
        first
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_owned),
        first
            .and_then(|e| e.get("detail").or_else(|| e.get("title")))
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        None,
    )
}

fn str_at<'a>(v: &'a serde_json::Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(|s| s.as_str())
}

#[async_trait]
impl SmsProvider for TelnyxSms {
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
        let mut body = serde_json::json!({"from": from, "to": to, "text": flat.text});
        if let Some(obj) = body.as_object_mut() {
            if !flat.media.is_empty() {
                let urls: Vec<String> = flat.media.iter().map(|m| m.url.clone()).collect();
                obj.insert("media_urls".into(), urls.into());
            }
            if let Some(p) = &self.config.messaging_profile_id {
                obj.insert("messaging_profile_id".into(), p.clone().into());
            }
            if let Some(w) = &self.config.webhook_url {
                obj.insert(
                    "webhook_url".into(),
                    super::callback_url_for(w, event).into(),
                );
            }
        }
        let url = format!("{}/v2/messages", self.config.base_url.trim_end_matches('/'));
        let resp = self
            .client
            .post(url)
            .bearer_auth(self.config.api_key.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| http::transport(PROVIDER, "send", &e))?;
        let answer = http::json_or_error(PROVIDER, "send", resp, error_fields).await?;
        let id = str_at(&answer, "/data/id")
            .map(str::to_owned)
            .ok_or(ProviderError::Response {
                provider: PROVIDER,
                operation: "send",
                message: "no data.id in the answer".into(),
            })?;
        Ok(ProviderResult {
            provider_message_id: Some(id),
            status: str_at(&answer, "/data/to/0/status").map(str::to_owned),
            queued: false,
        })
    }

    fn verify_signature(&self, req: &WebhookRequest) -> bool {
        let (Some(key), Some(sig), Some(ts)) = (
            self.key.as_ref(),
            req.header("telnyx-signature-ed25519"),
            req.header("telnyx-timestamp"),
        ) else {
            return false;
        };
        let Ok(ts_num) = ts.trim().parse::<i64>() else {
            return false;
        };
        // abs_diff: a timestamp near i64::MIN must not overflow.
        if (self.now)().abs_diff(ts_num) > TOLERANCE_SECONDS.unsigned_abs() {
            return false;
        }
        let Some(sig) = base64::engine::general_purpose::STANDARD
            .decode(sig.trim())
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
        else {
            return false;
        };
        let mut signed = Vec::with_capacity(ts.len() + 1 + req.body.len());
        signed.extend_from_slice(ts.trim().as_bytes());
        signed.push(b'|');
        signed.extend_from_slice(&req.body);
        key.verify(&signed, &sig).is_ok()
    }

    fn parse_webhook(&self, req: &WebhookRequest) -> Result<Vec<InboundSms>, WebhookError> {
        let v = req.json()?;
        if str_at(&v, "/data/event_type") != Some("message.received") {
            return Ok(Vec::new());
        }
        let p = v
            .pointer("/data/payload")
            .ok_or_else(|| WebhookError::Malformed("data.payload is missing".into()))?;
        let from = str_at(p, "/from/phone_number")
            .filter(|f| !f.is_empty())
            .ok_or_else(|| WebhookError::Malformed("from.phone_number is missing".into()))?;
        let media = p
            .get("media")
            .and_then(|m| m.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| {
                        Some((
                            m.get("url")?.as_str()?.to_owned(),
                            m.get("content_type")
                                .and_then(|c| c.as_str())
                                .unwrap_or("")
                                .to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(vec![InboundSms {
            from: from.to_owned(),
            to: str_at(p, "/to/0/phone_number")
                .unwrap_or_default()
                .to_owned(),
            text: p
                .get("text")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_owned(),
            media,
            provider_message_id: p.get("id").and_then(|i| i.as_str()).map(str::to_owned),
            raw: v.as_object().cloned().unwrap_or_default(),
        }])
    }

    fn parse_status(
        &self,
        req: &WebhookRequest,
    ) -> Result<Vec<DeliveryStatusUpdate>, WebhookError> {
        let v = req.json()?;
        let p = v
            .pointer("/data/payload")
            .ok_or_else(|| WebhookError::Malformed("data.payload is missing".into()))?;
        let id = p
            .get("id")
            .and_then(|i| i.as_str())
            .ok_or_else(|| WebhookError::Malformed("payload.id is missing".into()))?;
        let word = str_at(p, "/to/0/status").unwrap_or("unknown");
        let error = p.pointer("/errors/0").map(|e| DeliveryError {
            code: e
                .get("code")
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
                .unwrap_or_default(),
            message: e
                .get("title")
                .and_then(|t| t.as_str())
                .unwrap_or("Telnyx error")
                .to_owned(),
            retryable: false,
        });
        Ok(vec![DeliveryStatusUpdate {
            provider_message_id: Some(id.to_owned()),
            event_id: super::event_of_callback(req),
            status: map_status(word),
            provider_status: word.to_owned(),
            error,
            raw: v.as_object().cloned().unwrap_or_default(),
            ..DeliveryStatusUpdate::default()
        }])
    }
}
