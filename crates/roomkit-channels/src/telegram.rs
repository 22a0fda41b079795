//! Telegram (RFC Appendix A.13): sends through the Bot API (`sendMessage`,
//! `sendPhoto`, `sendDocument`, `sendLocation`, `editMessageText`,
//! `deleteMessage`) and parses webhook updates, verified with the
//! `X-Telegram-Bot-Api-Secret-Token` header set when the webhook was
//! registered.

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext};
use roomkit_model::{
    ChannelBinding, ChannelCapabilities, ChannelId, ChannelMediaType, ChannelType, EventContent,
    EventId, InboundMessage, LocationContent, RoomEvent,
};

use crate::error::ProviderError;
use crate::receiver::{
    WebhookError, WebhookKind, WebhookOutcome, WebhookReceiver, WebhookRequest, constant_time_eq,
};
use crate::sms::recipient;
use crate::{Secret, content, http};

const PROVIDER: &str = "telegram";
/// Header carrying the webhook's secret token.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";
/// Longest message text (A.13).
pub const MAX_LENGTH: usize = 4096;

/// Telegram bot settings.
#[derive(Debug, Clone)]
pub struct TelegramConfig {
    /// Bot token.
    pub bot_token: Secret,
    /// API host; `https://api.telegram.org` unless overridden.
    pub base_url: String,
    /// The `secret_token` given to `setWebhook`; inbound updates must carry
    /// it. Without one, updates are accepted unverified.
    pub secret_token: Option<Secret>,
}

impl TelegramConfig {
    /// Settings with the public API host.
    pub fn new(bot_token: Secret) -> Self {
        Self {
            bot_token,
            base_url: "https://api.telegram.org".into(),
            secret_token: None,
        }
    }
}

/// The Telegram channel.
pub struct TelegramChannel {
    id: ChannelId,
    config: TelegramConfig,
    client: reqwest::Client,
}

fn error_fields(b: &serde_json::Value) -> http::ErrorFields {
    (
        b.get("error_code").map(|c| c.to_string()),
        b.get("description")
            .and_then(|d| d.as_str())
            .map(str::to_owned),
        b.pointer("/parameters/retry_after")
            .and_then(|r| r.as_f64()),
    )
}

impl TelegramChannel {
    /// A channel for one bot.
    pub fn new(id: impl Into<ChannelId>, config: TelegramConfig) -> Self {
        if config.secret_token.is_none() {
            tracing::warn!(target: "roomkit.providers.telegram.bot", "no webhook secret token: inbound updates are not verified");
        }
        Self {
            id: id.into(),
            config,
            client: http::client(),
        }
    }

    /// The receiver for webhook updates (`/webhooks/telegram/telegram`).
    pub fn receiver(&self) -> Arc<dyn WebhookReceiver> {
        Arc::new(TelegramWebhook {
            channel_id: self.id.clone(),
            secret: self.config.secret_token.clone(),
        })
    }

    async fn call(
        &self,
        method: &'static str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ProviderError> {
        let url = format!(
            "{}/bot{}/{method}",
            self.config.base_url.trim_end_matches('/'),
            self.config.bot_token.expose()
        );
        let resp = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| http::transport(PROVIDER, method, &e).redacted(&self.config.bot_token))?;
        let answer = http::json_or_error(PROVIDER, method, resp, error_fields).await?;
        if answer.get("ok").and_then(|o| o.as_bool()) != Some(true) {
            return Err(ProviderError::Response {
                provider: PROVIDER,
                operation: method,
                message: "ok is not true".into(),
            });
        }
        Ok(answer.get("result").cloned().unwrap_or_default())
    }

    /// The Telegram message id this channel gave an earlier event.
    fn sent_id(&self, ctx: &RoomContext, target: &EventId) -> Option<i64> {
        let ev = ctx.recent_events.iter().find(|e| &e.id == target)?;
        let (_, r) = ev.delivery_results.iter().find(|(c, _)| **c == self.id)?;
        r.provider_message_id.as_deref()?.parse().ok()
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Telegram
    }

    fn provider_name(&self) -> Option<&str> {
        Some(PROVIDER)
    }

    fn capabilities(&self) -> ChannelCapabilities {
        let mut caps = ChannelCapabilities::text_only();
        caps.media_types = vec![
            ChannelMediaType::Text,
            ChannelMediaType::Rich,
            ChannelMediaType::Media,
            ChannelMediaType::Location,
        ];
        caps.max_length = Some(MAX_LENGTH);
        caps.supports_rich_text = true;
        caps.supports_buttons = true;
        caps.supports_media = true;
        caps.supports_edit = true;
        caps.supports_delete = true;
        caps.supports_typing = true;
        caps
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        binding: &ChannelBinding,
        ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let Some(chat) = recipient(binding, ctx, "chat_id") else {
            return Err(ProviderError::Invalid {
                provider: PROVIDER,
                operation: "send",
                message: format!("no chat_id for channel {}", self.id),
            }
            .into());
        };
        let chat_id: serde_json::Value = chat
            .parse::<i64>()
            .map_or_else(|_| chat.clone().into(), Into::into);
        let (method, body) = match &event.content {
            EventContent::Edit(e) => match self.sent_id(ctx, &e.target_event_id) {
                Some(mid) => (
                    "editMessageText",
                    serde_json::json!({"chat_id": chat_id, "message_id": mid, "text": e.new_content.plain_text()}),
                ),
                None => (
                    "sendMessage",
                    serde_json::json!({"chat_id": chat_id, "text": format!("Correction: {}", e.new_content.plain_text())}),
                ),
            },
            EventContent::Delete(d) => match self.sent_id(ctx, &d.target_event_id) {
                Some(mid) => (
                    "deleteMessage",
                    serde_json::json!({"chat_id": chat_id, "message_id": mid}),
                ),
                None => return Ok(ChannelOutput::empty()),
            },
            EventContent::Location(l) => (
                "sendLocation",
                serde_json::json!({"chat_id": chat_id, "latitude": l.latitude, "longitude": l.longitude}),
            ),
            other => {
                let flat = content::flatten(other);
                match flat.media.first() {
                    Some(m) if m.mime_type.starts_with("image/") => (
                        "sendPhoto",
                        serde_json::json!({"chat_id": chat_id, "photo": m.url, "caption": flat.text}),
                    ),
                    Some(m) => (
                        "sendDocument",
                        serde_json::json!({"chat_id": chat_id, "document": m.url, "caption": flat.text}),
                    ),
                    None => (
                        "sendMessage",
                        serde_json::json!({"chat_id": chat_id, "text": flat.text}),
                    ),
                }
            }
        };
        let result = self.call(method, body).await.map_err(|e| {
            tracing::warn!(target: "roomkit.providers.telegram.bot", channel_id = %self.id, method, error = %e, "Bot API call failed");
            ChannelError::from(e)
        })?;
        let mid = result.get("message_id").map(|m| m.to_string());
        tracing::debug!(target: "roomkit.channels.telegram", channel_id = %self.id, method, message_id = ?mid, "sent");
        let mut out = ChannelOutput::empty();
        out.provider_message_id = mid;
        Ok(out)
    }
}

impl ProviderError {
    /// Removes a secret that may appear in a message (a bot token is part
    /// of every Bot API URL).
    fn redacted(self, secret: &Secret) -> Self {
        match self {
            Self::Transport {
                provider,
                operation,
                message,
            } => Self::Transport {
                provider,
                operation,
                message: message.replace(secret.expose(), "***"),
            },
            other => other,
        }
    }
}

struct TelegramWebhook {
    channel_id: ChannelId,
    secret: Option<Secret>,
}

impl WebhookReceiver for TelegramWebhook {
    fn channel_type(&self) -> &str {
        "telegram"
    }

    fn provider(&self) -> &str {
        PROVIDER
    }

    fn verify_and_parse(&self, req: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        if let Some(secret) = &self.secret {
            let given = req.header(SECRET_HEADER).unwrap_or_default();
            if !constant_time_eq(given.as_bytes(), secret.expose().as_bytes()) {
                return Err(WebhookError::BadSignature("secret token mismatch".into()));
            }
        }
        if req.kind == WebhookKind::Status {
            return Err(WebhookError::Unsupported(
                "Telegram sends no delivery callbacks".into(),
            ));
        }
        let update = req.json()?;
        let update_id = update
            .get("update_id")
            .and_then(|u| u.as_i64())
            .ok_or_else(|| WebhookError::Malformed("update_id is missing".into()))?;
        let Some(msg) = ["message", "edited_message", "channel_post"]
            .iter()
            .find_map(|k| update.get(*k))
        else {
            // Other update kinds (callbacks, polls) carry no message.
            return Ok(WebhookOutcome::messages(Vec::new()));
        };
        let chat = msg
            .pointer("/chat/id")
            .and_then(|c| c.as_i64())
            .ok_or_else(|| WebhookError::Malformed("message.chat.id is missing".into()))?;
        let text = msg
            .get("text")
            .or_else(|| msg.get("caption"))
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let content = if let Some(loc) = msg.get("location") {
            EventContent::Location(LocationContent {
                latitude: loc
                    .get("latitude")
                    .and_then(|v| v.as_f64())
                    .unwrap_or_default(),
                longitude: loc
                    .get("longitude")
                    .and_then(|v| v.as_f64())
                    .unwrap_or_default(),
                label: None,
                address: None,
            })
        } else {
            let media = msg
                .get("photo")
                .and_then(|p| p.as_array())
                .and_then(|sizes| sizes.last())
                .and_then(|p| p.get("file_id"))
                .and_then(|f| f.as_str())
                .map(|f| vec![content::media(&format!("tg://file/{f}"), "image/jpeg")])
                .unwrap_or_default();
            content::inbound(text, media)
        };
        let mut m = InboundMessage::text(self.channel_id.clone(), chat.to_string(), "");
        m.content = content;
        m.idempotency_key = Some(format!("telegram:{update_id}"));
        m.provider_message_id = msg.get("message_id").map(|v| v.to_string());
        if let Some(name) = msg.pointer("/from/username").and_then(|u| u.as_str()) {
            m.metadata.insert("username".into(), name.into());
        }
        if let serde_json::Value::Object(raw) = update {
            m.raw_payload = raw;
        }
        Ok(WebhookOutcome::messages(vec![m]))
    }
}
