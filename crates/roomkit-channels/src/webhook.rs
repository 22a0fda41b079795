//! The generic HTTP webhook channel (RFC §6.3, type WEBHOOK: text and rich,
//! unlimited): every delivered event is POSTed as JSON to a configured URL,
//! signed with `X-RoomKit-Signature: sha256=<hex HMAC-SHA256 of
//! "{timestamp}.{body}">` and `X-RoomKit-Timestamp`; inbound JSON posts are
//! verified with the same scheme.
//!
//! The destination comes from the configuration only: a binding's
//! `metadata.url` is used when it falls under one of the channel's
//! `allowed_urls`, and is otherwise ignored (logged) in favour of the
//! configured `url`. Redirects are not followed and answers are read up to
//! a cap (see [`crate::outbound`]).

use std::sync::Arc;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext};
use roomkit_model::{
    ChannelBinding, ChannelCapabilities, ChannelId, ChannelMediaType, ChannelType, EventContent,
    InboundMessage, Map, RoomEvent, RoomId,
};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::ProviderError;
use crate::receiver::{
    WebhookError, WebhookKind, WebhookOutcome, WebhookReceiver, WebhookRequest, constant_time_eq,
};
use crate::{Secret, http};

const PROVIDER: &str = "generic";
/// Signature header.
pub const SIGNATURE_HEADER: &str = "X-RoomKit-Signature";
/// Timestamp header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-RoomKit-Timestamp";
/// How far a signed timestamp may be from now.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Webhook channel settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where events are POSTed.
    pub url: String,
    /// URL prefixes a binding's `metadata.url` may name instead of `url`
    /// (same scheme, host and port; the path at a segment boundary). Empty:
    /// a binding's URL is never used.
    pub allowed_urls: Vec<String>,
    /// Signs outbound posts and verifies inbound ones; without it nothing
    /// is signed and inbound posts are accepted unsigned.
    pub secret: Option<Secret>,
}

/// `sha256=<hex>` over `"{timestamp}.{body}"`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The idempotency key of a signed post that names no message: a digest
/// of exactly what was signed (`"{timestamp}.{body}"`), so a replay of the
/// same signed request within the window is a duplicate, while the same
/// text signed again at another second is a new message.
fn signed_body_key(timestamp: i64, body: &[u8]) -> String {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(timestamp.to_string().as_bytes());
    h.update(b".");
    h.update(body);
    let mut out = String::from("webhook:sha256:");
    for b in h.finalize() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The webhook channel.
pub struct WebhookChannel {
    id: ChannelId,
    config: WebhookConfig,
    allowed: Vec<reqwest::Url>,
    client: reqwest::Client,
}

/// The longest provider message id taken from an endpoint's answer.
pub const MAX_MESSAGE_ID_LEN: usize = 128;

/// Checks an `allowed_urls` entry: an http(s) URL with a host and no user
/// info, query or fragment.
///
/// # Errors
/// What is wrong with it.
pub fn check_allowed_url(url: &str) -> Result<(), &'static str> {
    let parsed = reqwest::Url::parse(url).map_err(|_| "is not a URL")?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry user info");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not have a query or fragment");
    }
    Ok(())
}

/// Whether `candidate` falls under `allowed`: same scheme, host and port, no
/// user info, and a path equal to the allowed path or below it at a `/`
/// boundary (`https://h/a` allows `https://h/a/b`, not `https://h/ab`).
pub fn url_is_allowed(candidate: &reqwest::Url, allowed: &reqwest::Url) -> bool {
    if candidate.scheme() != allowed.scheme()
        || candidate.host_str() != allowed.host_str()
        || candidate.port_or_known_default() != allowed.port_or_known_default()
        || !candidate.username().is_empty()
        || candidate.password().is_some()
    {
        return false;
    }
    let base = allowed.path();
    let path = candidate.path();
    if base.ends_with('/') {
        return path.starts_with(base);
    }
    path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl WebhookChannel {
    /// A channel posting to `config.url`.
    pub fn new(id: impl Into<ChannelId>, config: WebhookConfig) -> Self {
        let id = id.into();
        let allowed = config
            .allowed_urls
            .iter()
            .filter_map(|u| match reqwest::Url::parse(u) {
                Ok(url) => Some(url),
                Err(e) => {
                    tracing::warn!(target: "roomkit.channels.webhook", channel_id = %id, url = %u, error = %e, "allowed URL is not a URL; skipped");
                    None
                }
            })
            .collect();
        Self {
            id,
            config,
            allowed,
            client: http::client(),
        }
    }

    /// Where an event for `binding` goes: its `metadata.url` when that is
    /// allowed, else the configured URL.
    fn destination<'a>(&'a self, binding: &'a ChannelBinding) -> &'a str {
        let Some(asked) = binding.metadata.get("url") else {
            return &self.config.url;
        };
        if let Some(s) = asked.as_str()
            && let Ok(url) = reqwest::Url::parse(s)
            && self.allowed.iter().any(|a| url_is_allowed(&url, a))
        {
            return s;
        }
        tracing::warn!(target: "roomkit.channels.webhook", channel_id = %self.id, room_id = %binding.room_id, "binding metadata.url is not in allowed_urls; posting to the configured url");
        &self.config.url
    }

    /// The receiver for inbound posts (`/webhooks/webhook/generic`).
    pub fn receiver(&self) -> Arc<dyn WebhookReceiver> {
        Arc::new(WebhookInbound {
            channel_id: self.id.clone(),
            secret: self.config.secret.clone(),
            now: Arc::new(|| chrono::Utc::now().timestamp()),
        })
    }

    /// A receiver with a fixed clock (for tests of the timestamp window).
    pub fn receiver_at(&self, now: i64) -> Arc<dyn WebhookReceiver> {
        Arc::new(WebhookInbound {
            channel_id: self.id.clone(),
            secret: self.config.secret.clone(),
            now: Arc::new(move || now),
        })
    }
}

#[async_trait]
impl Channel for WebhookChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Webhook
    }

    fn provider_name(&self) -> Option<&str> {
        Some(PROVIDER)
    }

    fn capabilities(&self) -> ChannelCapabilities {
        let mut caps = ChannelCapabilities::text_only();
        caps.media_types = vec![ChannelMediaType::Text, ChannelMediaType::Rich];
        caps.supports_rich_text = true;
        caps
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        binding: &ChannelBinding,
        _ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let url = self.destination(binding);
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "room_event",
            "room_id": event.room_id.as_str(),
            "event": event,
        }))
        .map_err(|e| ProviderError::Invalid {
            provider: PROVIDER,
            operation: "deliver",
            message: e.to_string(),
        })?;
        let ts = chrono::Utc::now().timestamp();
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string());
        if let Some(secret) = &self.config.secret {
            req = req.header(SIGNATURE_HEADER, sign(secret.expose(), ts, &body));
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| http::transport(PROVIDER, "deliver", &e))?;
        let answer = http::json_or_error(PROVIDER, "deliver", resp, |b| {
            (
                None,
                b.get("error").and_then(|e| e.as_str()).map(str::to_owned),
                None,
            )
        })
        .await
        .map_err(|e| {
            tracing::warn!(target: "roomkit.channels.webhook", channel_id = %self.id, error = %e, "webhook post failed");
            ChannelError::from(e)
        })?;
        // Only a short token from a successful answer becomes the id.
        let id = answer
            .get("id")
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|id| crate::outbound::is_short_token(id, MAX_MESSAGE_ID_LEN));
        tracing::debug!(target: "roomkit.channels.webhook", channel_id = %self.id, event_id = %event.id, "event posted");
        let mut out = ChannelOutput::empty();
        out.provider_message_id = id;
        Ok(out)
    }
}

/// An inbound post.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundPost {
    sender_id: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    content: Option<EventContent>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    room_id: Option<RoomId>,
    #[serde(default)]
    metadata: Map,
}

type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

struct WebhookInbound {
    channel_id: ChannelId,
    secret: Option<Secret>,
    now: Now,
}

impl WebhookReceiver for WebhookInbound {
    fn channel_type(&self) -> &str {
        "webhook"
    }

    fn provider(&self) -> &str {
        PROVIDER
    }

    fn verify_and_parse(&self, req: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        if req.kind == WebhookKind::Status {
            return Err(WebhookError::Unsupported(
                "the webhook channel has no status callbacks".into(),
            ));
        }
        // The verified timestamp, when the post is signed.
        let mut signed_at = None;
        if let Some(secret) = &self.secret {
            let ts: i64 = req
                .header(TIMESTAMP_HEADER)
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| WebhookError::BadSignature("timestamp missing".into()))?;
            // abs_diff: a timestamp near i64::MIN must not overflow.
            if (self.now)().abs_diff(ts) > TOLERANCE_SECONDS.unsigned_abs() {
                return Err(WebhookError::BadSignature(
                    "timestamp outside the window".into(),
                ));
            }
            let given = req
                .header(SIGNATURE_HEADER)
                .ok_or_else(|| WebhookError::BadSignature("signature missing".into()))?;
            let expected = sign(secret.expose(), ts, &req.body);
            if !constant_time_eq(expected.as_bytes(), given.trim().as_bytes()) {
                return Err(WebhookError::BadSignature("signature mismatch".into()));
            }
            signed_at = Some(ts);
        }
        let post: InboundPost = serde_json::from_slice(&req.body)
            .map_err(|e| WebhookError::Malformed(format!("webhook JSON: {e}")))?;
        if post.sender_id.is_empty() {
            return Err(WebhookError::Malformed("sender_id is empty".into()));
        }
        let content = match (post.content, post.text) {
            (Some(c), _) => c,
            (None, Some(t)) => EventContent::text(t),
            (None, None) => {
                return Err(WebhookError::Malformed(
                    "text or content is required".into(),
                ));
            }
        };
        let mut m = InboundMessage::text(self.channel_id.clone(), post.sender_id, "");
        m.content = content;
        m.idempotency_key = post
            .idempotency_key
            .or_else(|| post.message_id.as_ref().map(|id| format!("webhook:{id}")))
            .or_else(|| signed_at.map(|ts| signed_body_key(ts, &req.body)));
        m.provider_message_id = post.message_id;
        m.room_id = post.room_id;
        m.metadata = post.metadata;
        if let Ok(serde_json::Value::Object(raw)) = req.json() {
            m.raw_payload = raw;
        }
        Ok(WebhookOutcome::messages(vec![m]))
    }
}
