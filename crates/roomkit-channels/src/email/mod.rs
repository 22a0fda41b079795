//! The email channel (RFC Appendix A.2): type EMAIL, a transport holding an
//! [`EmailProvider`]. Outbound mail carries a Message-ID naming the room
//! and event (`<rk.{room}.{event}@{domain}>`) and `In-Reply-To` /
//! `References` to the last mail of the conversation, so a customer's reply
//! threads in their mail client and lands back in the same room.

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::{Channel, ChannelError, ChannelOutput, DeliveryStatusUpdate, RoomContext};
use roomkit_model::{
    ChannelBinding, ChannelCapabilities, ChannelData, ChannelId, ChannelMediaType, ChannelType,
    EmailChannelData, EventContent, InboundMessage, Map, RoomEvent, RoomId,
};

use crate::error::ProviderError;
use crate::receiver::{WebhookError, WebhookKind, WebhookOutcome, WebhookReceiver, WebhookRequest};
use crate::sms::recipient;
use crate::{ProviderResult, content};

#[cfg(feature = "sendgrid")]
pub mod sendgrid;
#[cfg(feature = "smtp")]
pub mod smtp;

/// One outbound mail.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutboundEmail {
    /// Sender.
    pub from: String,
    /// Recipient.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body, for rich content.
    pub html: Option<String>,
    /// Message-ID, with angle brackets.
    pub message_id: String,
    /// The mail this one answers.
    pub in_reply_to: Option<String>,
    /// The thread, oldest first.
    pub references: Vec<String>,
    /// Attachment URLs (sent as links in the body).
    pub media_urls: Vec<String>,
}

/// One inbound mail as a provider parsed it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InboundEmail {
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: Option<String>,
    /// Its Message-ID.
    pub message_id: Option<String>,
    /// In-Reply-To.
    pub in_reply_to: Option<String>,
    /// References.
    pub references: Vec<String>,
    /// The raw payload fields.
    pub raw: Map,
}

/// An email vendor (RFC §6.7 EmailProvider).
#[async_trait]
pub trait EmailProvider: Send + Sync + 'static {
    /// Vendor name, as in the webhook path (`smtp`, `sendgrid`).
    fn name(&self) -> &'static str;

    /// Sends one mail.
    ///
    /// # Errors
    /// Classified vendor failures.
    async fn send(&self, email: &OutboundEmail) -> Result<ProviderResult, ProviderError>;

    /// Whether an inbound request is authentic (vendors that sign).
    fn verify(&self, _req: &WebhookRequest) -> bool {
        true
    }

    /// Parses an inbound-mail webhook.
    ///
    /// # Errors
    /// [`WebhookError::Malformed`].
    fn parse_inbound(&self, req: &WebhookRequest) -> Result<Vec<InboundEmail>, WebhookError>;

    /// Parses delivery events.
    ///
    /// # Errors
    /// [`WebhookError::Unsupported`] by default.
    fn parse_status(
        &self,
        _req: &WebhookRequest,
    ) -> Result<Vec<DeliveryStatusUpdate>, WebhookError> {
        Err(WebhookError::Unsupported(format!(
            "{} has no status callbacks",
            self.name()
        )))
    }
}

/// The email channel.
pub struct EmailChannel {
    id: ChannelId,
    from: String,
    domain: String,
    provider: Arc<dyn EmailProvider>,
}

/// The room named by a RoomKit Message-ID (`<rk.{room}.{event}@domain>`).
pub fn room_of_message_id(id: &str) -> Option<RoomId> {
    let inner = id.trim().trim_start_matches('<').trim_end_matches('>');
    let local = inner.split('@').next()?;
    let rest = local.strip_prefix("rk.")?;
    let (room, _event) = rest.rsplit_once('.')?;
    (!room.is_empty()).then(|| RoomId::from(room))
}

impl EmailChannel {
    /// A channel sending from `from` (whose domain names Message-IDs).
    pub fn new(
        id: impl Into<ChannelId>,
        from: impl Into<String>,
        provider: Arc<dyn EmailProvider>,
    ) -> Self {
        let from = from.into();
        let domain = from
            .rsplit_once('@')
            .map_or("roomkit.local", |(_, d)| d)
            .to_owned();
        Self {
            id: id.into(),
            from,
            domain,
            provider,
        }
    }

    /// The receiver for inbound mail (and status events where supported).
    pub fn receiver(&self) -> Arc<dyn WebhookReceiver> {
        Arc::new(EmailWebhook {
            channel_id: self.id.clone(),
            provider: self.provider.clone(),
        })
    }

    /// The last mail of this channel's conversation in the room: its
    /// Message-ID, the thread's references and its subject.
    fn thread(&self, ctx: &RoomContext) -> (Option<String>, Vec<String>, Option<String>) {
        for e in ctx.recent_events.iter().rev() {
            let meta = |k: &str| {
                e.metadata
                    .get(k)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let Some(mid) = meta("email_message_id") else {
                continue;
            };
            let mut refs: Vec<String> = e
                .metadata
                .get("email_references")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            refs.push(mid.clone());
            let subject = EmailChannelData::from_map(&e.channel_data).and_then(|d| d.subject);
            return (Some(mid), refs, subject);
        }
        (None, Vec::new(), None)
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Email
    }

    fn provider_name(&self) -> Option<&str> {
        Some(self.provider.name())
    }

    fn capabilities(&self) -> ChannelCapabilities {
        let mut caps = ChannelCapabilities::text_only();
        caps.media_types = vec![
            ChannelMediaType::Text,
            ChannelMediaType::Rich,
            ChannelMediaType::Media,
        ];
        caps.max_length = None;
        caps.supports_threading = true;
        caps.supports_rich_text = true;
        caps.supports_media = true;
        caps
    }

    async fn handle_inbound(
        &self,
        message: &InboundMessage,
        _ctx: &RoomContext,
    ) -> Result<RoomEvent, ChannelError> {
        let mut event = roomkit_core::inbound_event(
            self.id.clone(),
            ChannelType::Email,
            Some(self.provider.name()),
            message,
        );
        let get = |k: &str| {
            message
                .metadata
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let data = EmailChannelData {
            from_address: message.sender_id.clone(),
            to_addresses: message
                .metadata
                .get("email_to")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            cc: Vec::new(),
            subject: get("email_subject"),
            thread_id: get("email_thread_id"),
            html_body: get("email_html"),
        };
        event.channel_data = data.to_map();
        Ok(event)
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        binding: &ChannelBinding,
        ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let Some(to) = recipient(binding, ctx, "email_address") else {
            return Err(ProviderError::Invalid {
                provider: self.provider.name(),
                operation: "send",
                message: format!(
                    "no email_address for channel {} in room {}",
                    self.id, event.room_id
                ),
            }
            .into());
        };
        let (in_reply_to, references, last_subject) = self.thread(ctx);
        let subject = binding
            .metadata
            .get("subject")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| {
                last_subject.map(|s| {
                    if s.to_ascii_lowercase().starts_with("re:") {
                        s
                    } else {
                        format!("Re: {s}")
                    }
                })
            })
            .unwrap_or_else(|| "New message".into());
        let flat = content::flatten(&event.content);
        let html = match &event.content {
            EventContent::Rich(r) => Some(r.text.clone()),
            _ => None,
        };
        let mut text = flat.text;
        let media_urls: Vec<String> = flat.media.iter().map(|m| m.url.clone()).collect();
        for url in &media_urls {
            text.push_str(&format!("\n{url}"));
        }
        let mail = OutboundEmail {
            from: self.from.clone(),
            to,
            subject,
            text,
            html,
            message_id: format!("<rk.{}.{}@{}>", event.room_id, event.id, self.domain),
            in_reply_to,
            references,
            media_urls,
        };
        let result = self.provider.send(&mail).await.map_err(|e| {
            tracing::warn!(target: "roomkit.channels.email", channel_id = %self.id, provider = self.provider.name(), error = %e, "email send failed");
            ChannelError::from(e)
        })?;
        tracing::info!(target: "roomkit.channels.email", channel_id = %self.id, event_id = %event.id, provider = self.provider.name(), "email sent");
        Ok(result.into_output())
    }
}

struct EmailWebhook {
    channel_id: ChannelId,
    provider: Arc<dyn EmailProvider>,
}

impl WebhookReceiver for EmailWebhook {
    fn channel_type(&self) -> &str {
        "email"
    }

    fn provider(&self) -> &str {
        self.provider.name()
    }

    fn verify_and_parse(&self, req: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        if !self.provider.verify(req) {
            return Err(WebhookError::BadSignature(format!(
                "{} verification failed",
                self.provider.name()
            )));
        }
        if req.kind == WebhookKind::Status {
            let mut statuses = self.provider.parse_status(req)?;
            for s in &mut statuses {
                s.channel_id.get_or_insert_with(|| self.channel_id.clone());
            }
            return Ok(WebhookOutcome::statuses(statuses));
        }
        let messages = self
            .provider
            .parse_inbound(req)?
            .into_iter()
            .map(|mail| to_message(&self.channel_id, self.provider.name(), mail))
            .collect();
        Ok(WebhookOutcome::messages(messages))
    }
}

fn to_message(channel_id: &ChannelId, provider: &str, mail: InboundEmail) -> InboundMessage {
    let media = Vec::new();
    let mut m = InboundMessage::text(channel_id.clone(), mail.from.clone(), "");
    m.content = content::inbound(mail.text.trim_end(), media);
    // Replies to our own mail name the room in the Message-ID they answer.
    m.room_id = mail
        .in_reply_to
        .iter()
        .chain(mail.references.iter().rev())
        .find_map(|id| room_of_message_id(id));
    let thread = mail
        .references
        .first()
        .cloned()
        .or_else(|| mail.in_reply_to.clone())
        .or_else(|| mail.message_id.clone());
    if let Some(id) = &mail.message_id {
        m.idempotency_key = Some(format!("{provider}:{id}"));
        m.provider_message_id = Some(id.clone());
        m.metadata
            .insert("email_message_id".into(), id.clone().into());
    }
    let mut refs = mail.references.clone();
    if let Some(irt) = &mail.in_reply_to
        && !refs.contains(irt)
    {
        refs.push(irt.clone());
    }
    m.metadata.insert("email_references".into(), refs.into());
    if let Some(t) = thread {
        m.metadata.insert("email_thread_id".into(), t.into());
    }
    if let Some(s) = mail.subject {
        m.metadata.insert("email_subject".into(), s.into());
    }
    if let Some(h) = mail.html {
        m.metadata.insert("email_html".into(), h.into());
    }
    m.metadata.insert("email_to".into(), mail.to.into());
    m.raw_payload = mail.raw;
    m
}

/// Parses the header block of an RFC 5322 message (unfolding continuation
/// lines); returns the headers and the body.
#[cfg_attr(not(any(feature = "smtp", feature = "sendgrid")), allow(dead_code))]
pub(crate) fn parse_headers(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match raw.find("\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match raw.find("\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (raw, ""),
        },
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (headers, body)
}

#[cfg_attr(not(any(feature = "smtp", feature = "sendgrid")), allow(dead_code))]
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Message ids in a References-style header.
#[cfg_attr(not(any(feature = "smtp", feature = "sendgrid")), allow(dead_code))]
pub(crate) fn message_ids(value: &str) -> Vec<String> {
    value
        .split_whitespace()
        .filter(|s| s.starts_with('<') && s.ends_with('>'))
        .map(str::to_owned)
        .collect()
}

/// The bare address of `Name <a@b>`.
#[cfg_attr(not(any(feature = "smtp", feature = "sendgrid")), allow(dead_code))]
pub(crate) fn address(value: &str) -> String {
    match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].trim().to_owned(),
        _ => value.trim().to_owned(),
    }
}

/// An inbound mail from headers and a text body.
#[cfg_attr(not(any(feature = "smtp", feature = "sendgrid")), allow(dead_code))]
pub(crate) fn inbound_from_headers(
    headers: &[(String, String)],
    text: &str,
    html: Option<String>,
    raw: Map,
) -> Result<InboundEmail, WebhookError> {
    let from = header(headers, "From")
        .map(address)
        .filter(|f| !f.is_empty())
        .ok_or_else(|| WebhookError::Malformed("From is missing".into()))?;
    Ok(InboundEmail {
        from,
        to: header(headers, "To")
            .map(|t| t.split(',').map(address).collect())
            .unwrap_or_default(),
        subject: header(headers, "Subject").map(str::to_owned),
        text: text.to_owned(),
        html,
        message_id: header(headers, "Message-ID").and_then(|v| message_ids(v).into_iter().next()),
        in_reply_to: header(headers, "In-Reply-To").and_then(|v| message_ids(v).into_iter().next()),
        references: header(headers, "References")
            .map(message_ids)
            .unwrap_or_default(),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_their_room() {
        assert_eq!(
            room_of_message_id("<rk.room-1.evt-9@example.com>")
                .unwrap()
                .as_str(),
            "room-1"
        );
        assert_eq!(
            room_of_message_id("<rk.a.b.c@example.com>")
                .unwrap()
                .as_str(),
            "a.b"
        );
        assert!(room_of_message_id("<CAF123@mail.gmail.com>").is_none());
    }

    #[test]
    fn headers_unfold() {
        let (h, body) = parse_headers(
            "From: Ada <ada@example.com>\r\nReferences: <a@x>\r\n <b@x>\r\n\r\nHello",
        );
        assert_eq!(address(header(&h, "from").unwrap()), "ada@example.com");
        assert_eq!(
            message_ids(header(&h, "References").unwrap()),
            vec!["<a@x>", "<b@x>"]
        );
        assert_eq!(body, "Hello");
    }
}
