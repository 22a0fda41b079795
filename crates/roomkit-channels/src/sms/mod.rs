//! The SMS channel (RFC Appendix A.1): type SMS, a transport holding an
//! [`SmsProvider`]. Text is limited to 1,600 characters; the segments a
//! message takes (GSM-7 or UCS-2) are reported on the event's channel data.

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::{Channel, ChannelError, ChannelOutput, DeliveryStatusUpdate, RoomContext};
use roomkit_model::{
    ChannelBinding, ChannelCapabilities, ChannelData, ChannelId, ChannelMediaType, ChannelType,
    DeliveryStatus, EventContent, InboundMessage, Map, RoomEvent, SmsChannelData,
};

use crate::error::ProviderError;
use crate::receiver::{
    WebhookError, WebhookKind, WebhookOutcome, WebhookReceiver, WebhookReply, WebhookRequest,
};
use crate::{ProviderResult, content};

#[cfg(feature = "telnyx")]
pub mod telnyx;
#[cfg(feature = "twilio")]
pub mod twilio;

/// Longest SMS text, in characters (RFC A.1).
pub const SMS_MAX_LENGTH: usize = 1600;

/// An inbound SMS/MMS as a provider parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundSms {
    /// Sender number.
    pub from: String,
    /// Recipient number (ours).
    pub to: String,
    /// Text body.
    pub text: String,
    /// MMS media: URL and MIME type.
    pub media: Vec<(String, String)>,
    /// Provider's message id.
    pub provider_message_id: Option<String>,
    /// The raw payload.
    pub raw: Map,
}

/// An SMS vendor (RFC §6.7 SMSProvider).
#[async_trait]
pub trait SmsProvider: Send + Sync + 'static {
    /// Vendor name, as in the webhook path (`twilio`).
    fn name(&self) -> &'static str;

    /// Sends an event's text and media from `from` to `to`.
    ///
    /// # Errors
    /// Classified vendor failures.
    async fn send(
        &self,
        event: &RoomEvent,
        to: &str,
        from: &str,
    ) -> Result<ProviderResult, ProviderError>;

    /// Whether the request carries this vendor's valid signature.
    fn verify_signature(&self, req: &WebhookRequest) -> bool;

    /// Parses an inbound-message webhook.
    ///
    /// # Errors
    /// [`WebhookError::Malformed`].
    fn parse_webhook(&self, req: &WebhookRequest) -> Result<Vec<InboundSms>, WebhookError>;

    /// Parses a delivery-status webhook.
    ///
    /// # Errors
    /// [`WebhookError::Malformed`].
    fn parse_status(&self, req: &WebhookRequest)
    -> Result<Vec<DeliveryStatusUpdate>, WebhookError>;

    /// The answer the vendor expects to an inbound webhook.
    fn inbound_reply(&self) -> WebhookReply {
        WebhookReply::ok()
    }
}

/// Character encoding of an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsEncoding {
    /// The GSM 03.38 default alphabet: 160 per single, 153 per part.
    Gsm7,
    /// Anything else: 70 per single, 67 per part.
    Ucs2,
}

impl SmsEncoding {
    /// The name used in channel data.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gsm7 => "GSM-7",
            Self::Ucs2 => "UCS-2",
        }
    }
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How many segments a text takes and in which encoding. Extended GSM
/// characters count twice; UCS-2 counts UTF-16 units.
pub fn segments(text: &str) -> (SmsEncoding, u32) {
    let mut septets = 0usize;
    let mut gsm = true;
    for c in text.chars() {
        if GSM7_BASIC.contains(c) {
            septets += 1;
        } else if GSM7_EXTENDED.contains(c) {
            septets += 2;
        } else {
            gsm = false;
            break;
        }
    }
    let (units, single, part, enc) = if gsm {
        (septets, 160, 153, SmsEncoding::Gsm7)
    } else {
        (text.encode_utf16().count(), 70, 67, SmsEncoding::Ucs2)
    };
    let n = if units <= single {
        1
    } else {
        units.div_ceil(part)
    };
    (enc, n as u32)
}

/// Cuts a text to at most `max` characters.
pub fn limit(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The SMS channel.
pub struct SmsChannel {
    id: ChannelId,
    from: String,
    provider: Arc<dyn SmsProvider>,
}

impl SmsChannel {
    /// A channel sending from `from` through `provider`.
    pub fn new(
        id: impl Into<ChannelId>,
        from: impl Into<String>,
        provider: Arc<dyn SmsProvider>,
    ) -> Self {
        Self {
            id: id.into(),
            from: from.into(),
            provider,
        }
    }

    /// The webhook receiver for this channel's inbound and status callbacks.
    pub fn receiver(&self) -> Arc<dyn WebhookReceiver> {
        Arc::new(SmsWebhook {
            channel_id: self.id.clone(),
            provider: self.provider.clone(),
        })
    }

    /// The RFC A.1 capabilities.
    pub fn sms_capabilities() -> ChannelCapabilities {
        let mut caps = ChannelCapabilities::text_only();
        caps.media_types = vec![ChannelMediaType::Text, ChannelMediaType::Media];
        caps.max_length = Some(SMS_MAX_LENGTH);
        caps.supports_read_receipts = true;
        caps.supports_media = true;
        caps.supported_media_types =
            vec!["image/jpeg".into(), "image/png".into(), "image/gif".into()];
        caps.supports_edit = false;
        caps.supports_delete = false;
        caps
    }
}

/// The recipient of a delivery: the binding's `phone_number`, else the
/// address of the room's participant reached through this channel.
pub(crate) fn recipient(binding: &ChannelBinding, ctx: &RoomContext, key: &str) -> Option<String> {
    if let Some(v) = binding.metadata.get(key).and_then(|v| v.as_str())
        && !v.is_empty()
    {
        return Some(v.to_owned());
    }
    ctx.participants
        .iter()
        .filter(|p| p.status == roomkit_model::ParticipantStatus::Active)
        .filter(|p| {
            p.channel_id == binding.channel_id || p.connected_via.contains(&binding.channel_id)
        })
        .find_map(|p| match (&p.channel_type, &p.address) {
            (Some(t), Some(a)) if *t == binding.channel_type => Some(a.clone()),
            _ => None,
        })
}

#[async_trait]
impl Channel for SmsChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Sms
    }

    fn provider_name(&self) -> Option<&str> {
        Some(self.provider.name())
    }

    fn capabilities(&self) -> ChannelCapabilities {
        Self::sms_capabilities()
    }

    async fn handle_inbound(
        &self,
        message: &InboundMessage,
        _context: &RoomContext,
    ) -> Result<RoomEvent, ChannelError> {
        let mut event = roomkit_core::inbound_event(
            self.id.clone(),
            ChannelType::Sms,
            Some(self.provider.name()),
            message,
        );
        let text = message.content.plain_text();
        let (encoding, count) = segments(&text);
        let data = SmsChannelData {
            from_number: message.sender_id.clone(),
            to_number: message
                .metadata
                .get("to_number")
                .and_then(|v| v.as_str())
                .unwrap_or(&self.from)
                .to_owned(),
            segments: count,
            encoding: Some(encoding.as_str().to_owned()),
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
        let Some(to) = recipient(binding, ctx, "phone_number") else {
            return Err(ProviderError::Invalid {
                provider: self.provider.name(),
                operation: "send",
                message: format!(
                    "no phone_number for channel {} in room {}",
                    self.id, event.room_id
                ),
            }
            .into());
        };
        // The engine truncates to max_length already; this guards direct use.
        let mut ev = event.clone();
        let flat = content::flatten(&ev.content);
        if flat.text.chars().count() > SMS_MAX_LENGTH && flat.media.is_empty() {
            ev.content = EventContent::text(limit(&flat.text, SMS_MAX_LENGTH));
        }
        let (encoding, count) = segments(&content::flatten(&ev.content).text);
        let result = self.provider.send(&ev, &to, &self.from).await.map_err(|e| {
            tracing::warn!(target: "roomkit.channels.sms", channel_id = %self.id, provider = self.provider.name(), error = %e, "SMS send failed");
            ChannelError::from(e)
        })?;
        tracing::info!(target: "roomkit.channels.sms", channel_id = %self.id, event_id = %event.id, provider = self.provider.name(), provider_message_id = ?result.provider_message_id, segments = count, encoding = encoding.as_str(), "SMS sent");
        Ok(result.into_output())
    }
}

/// The webhook endpoint of an SMS channel.
struct SmsWebhook {
    channel_id: ChannelId,
    provider: Arc<dyn SmsProvider>,
}

impl WebhookReceiver for SmsWebhook {
    fn channel_type(&self) -> &str {
        "sms"
    }

    fn provider(&self) -> &str {
        self.provider.name()
    }

    fn verify_and_parse(&self, req: &WebhookRequest) -> Result<WebhookOutcome, WebhookError> {
        if !self.provider.verify_signature(req) {
            tracing::warn!(target: "roomkit.channels.sms", channel_id = %self.channel_id, provider = self.provider.name(), "webhook with a bad signature refused");
            return Err(WebhookError::BadSignature(format!(
                "{} signature did not verify",
                self.provider.name()
            )));
        }
        match req.kind {
            WebhookKind::Status => {
                let mut statuses = self.provider.parse_status(req)?;
                for s in &mut statuses {
                    s.channel_id.get_or_insert_with(|| self.channel_id.clone());
                }
                Ok(WebhookOutcome::statuses(statuses))
            }
            WebhookKind::Inbound => {
                let messages = self
                    .provider
                    .parse_webhook(req)?
                    .into_iter()
                    .map(|sms| self.to_message(sms))
                    .collect();
                Ok(WebhookOutcome::messages(messages).reply(self.provider.inbound_reply()))
            }
        }
    }
}

impl SmsWebhook {
    fn to_message(&self, sms: InboundSms) -> InboundMessage {
        let media = sms
            .media
            .iter()
            .map(|(url, mime)| content::media(url, mime))
            .collect();
        let mut m = InboundMessage::text(self.channel_id.clone(), sms.from, "");
        m.content = content::inbound(&sms.text, media);
        m.idempotency_key = sms
            .provider_message_id
            .as_ref()
            .map(|id| format!("{}:{id}", self.provider.name()));
        m.provider_message_id = sms.provider_message_id;
        m.raw_payload = sms.raw;
        m.metadata.insert("to_number".into(), sms.to.into());
        m
    }
}

/// The query parameter naming our event on a per-message status callback URL.
const EVENT_PARAM: &str = "event_id";

/// The status callback URL for one sent event: the configured URL with the
/// event id added to its query. The provider posts the callback to exactly
/// this URL (and signs it), so the callback names its event even after a
/// restart, when no in-memory receipt remains.
#[cfg_attr(not(any(feature = "twilio", feature = "telnyx")), allow(dead_code))]
pub(crate) fn callback_url_for(base: &str, event: &RoomEvent) -> String {
    match reqwest::Url::parse(base) {
        Ok(mut url) => {
            url.query_pairs_mut()
                .append_pair(EVENT_PARAM, event.id.as_str());
            url.into()
        }
        // Checked at configuration; an unparsable URL is passed on as given.
        Err(_) => base.to_owned(),
    }
}

/// The event a status callback names through its URL, when it does.
#[cfg_attr(not(any(feature = "twilio", feature = "telnyx")), allow(dead_code))]
pub(crate) fn event_of_callback(req: &WebhookRequest) -> Option<roomkit_model::EventId> {
    let url = reqwest::Url::parse(&req.url).ok()?;
    url.query_pairs()
        .find(|(k, v)| k == EVENT_PARAM && !v.is_empty() && v.len() <= 128)
        .map(|(_, v)| roomkit_model::EventId::new(v.as_ref()))
}

/// Maps a vendor status word to the RFC's delivery status.
#[cfg_attr(not(any(feature = "twilio", feature = "telnyx")), allow(dead_code))]
pub(crate) fn map_status(word: &str) -> Option<DeliveryStatus> {
    match word.to_ascii_lowercase().as_str() {
        "queued" | "accepted" | "scheduled" | "sending" | "queued_at_carrier" => {
            Some(DeliveryStatus::Queued)
        }
        "sent" | "delivered" | "read" | "receiving" | "received" | "delivery_unconfirmed" => {
            Some(DeliveryStatus::Sent)
        }
        "failed" | "undelivered" | "canceled" | "delivery_failed" | "sending_failed" => {
            Some(DeliveryStatus::Failed)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_gsm7_and_ucs2_sizes() {
        assert_eq!(segments(""), (SmsEncoding::Gsm7, 1));
        assert_eq!(segments(&"a".repeat(160)), (SmsEncoding::Gsm7, 1));
        assert_eq!(segments(&"a".repeat(161)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segments(&"a".repeat(306)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segments(&"a".repeat(307)), (SmsEncoding::Gsm7, 3));
        // Extended characters take two septets.
        assert_eq!(segments(&"€".repeat(80)), (SmsEncoding::Gsm7, 1));
        assert_eq!(segments(&"€".repeat(81)), (SmsEncoding::Gsm7, 2));
        assert_eq!(segments(&"é".repeat(160)), (SmsEncoding::Gsm7, 1));
        assert_eq!(segments(&"ő".repeat(70)), (SmsEncoding::Ucs2, 1));
        assert_eq!(segments(&"ő".repeat(71)), (SmsEncoding::Ucs2, 2));
        // An emoji is two UTF-16 units.
        assert_eq!(segments(&"😀".repeat(35)), (SmsEncoding::Ucs2, 1));
        assert_eq!(segments(&"a".repeat(1600)), (SmsEncoding::Gsm7, 11));
    }

    #[test]
    fn limit_counts_characters() {
        assert_eq!(limit("héllo", 2), "hé");
        assert_eq!(limit("hi", 5), "hi");
    }

    #[test]
    fn status_words_map_to_rfc_statuses() {
        assert_eq!(map_status("delivered"), Some(DeliveryStatus::Sent));
        assert_eq!(map_status("undelivered"), Some(DeliveryStatus::Failed));
        assert_eq!(map_status("queued"), Some(DeliveryStatus::Queued));
        assert_eq!(map_status("mystery"), None);
    }
}
