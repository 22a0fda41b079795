//! The vendor-neutral webhook interface the server mounts at
//! `POST /webhooks/{channel_type}/{provider}[/status]`: verify the
//! provider's signature over the raw request, parse it into inbound
//! messages or delivery-status updates, and say what to answer.

use roomkit_core::DeliveryStatusUpdate;
use roomkit_model::InboundMessage;

/// Which endpoint a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WebhookKind {
    /// `/webhooks/{channel_type}/{provider}`: inbound messages.
    #[default]
    Inbound,
    /// `/webhooks/{channel_type}/{provider}/status`: delivery callbacks.
    Status,
}

/// A raw webhook request as the server received it.
#[derive(Debug, Clone, Default)]
pub struct WebhookRequest {
    /// Inbound or status endpoint.
    pub kind: WebhookKind,
    /// HTTP method.
    pub method: String,
    /// The full URL the provider signed: the configured public URL plus the
    /// path and query when one is set, else the URL of the request itself.
    pub url: String,
    /// Headers; names are compared case-insensitively.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl WebhookRequest {
    /// The first header of this name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8.
    ///
    /// # Errors
    /// [`WebhookError::Malformed`] when it is not UTF-8.
    pub fn body_str(&self) -> Result<&str, WebhookError> {
        std::str::from_utf8(&self.body)
            .map_err(|_| WebhookError::Malformed("body is not UTF-8".into()))
    }

    /// Form fields of a `application/x-www-form-urlencoded` body, in order.
    ///
    /// # Errors
    /// [`WebhookError::Malformed`] when the body is not a form.
    pub fn form(&self) -> Result<Vec<(String, String)>, WebhookError> {
        serde_urlencoded::from_bytes(&self.body)
            .map_err(|e| WebhookError::Malformed(format!("form body: {e}")))
    }

    /// The body as JSON.
    ///
    /// # Errors
    /// [`WebhookError::Malformed`] when it is not JSON.
    pub fn json(&self) -> Result<serde_json::Value, WebhookError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| WebhookError::Malformed(format!("JSON body: {e}")))
    }
}

/// What the provider expects back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookReply {
    /// Status code (200 unless the vendor documents otherwise).
    pub status: u16,
    /// Content type of `body`, when there is one.
    pub content_type: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

impl WebhookReply {
    /// 200 with no body.
    pub fn ok() -> Self {
        Self {
            status: 200,
            content_type: None,
            body: Vec::new(),
        }
    }

    /// 200 with a body.
    pub fn with_body(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: 200,
            content_type: Some(content_type.to_owned()),
            body: body.into(),
        }
    }
}

/// A verified, parsed webhook.
#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    /// Messages to run through `process_inbound`.
    pub messages: Vec<InboundMessage>,
    /// Delivery-status updates to record.
    pub statuses: Vec<DeliveryStatusUpdate>,
    /// The reply to send once they are handled.
    pub reply: WebhookReply,
}

impl WebhookOutcome {
    /// Messages with a plain 200.
    pub fn messages(messages: Vec<InboundMessage>) -> Self {
        Self {
            messages,
            statuses: Vec::new(),
            reply: WebhookReply::ok(),
        }
    }

    /// Status updates with a plain 200.
    pub fn statuses(statuses: Vec<DeliveryStatusUpdate>) -> Self {
        Self {
            messages: Vec::new(),
            statuses,
            reply: WebhookReply::ok(),
        }
    }

    /// Replaces the reply.
    pub fn reply(mut self, reply: WebhookReply) -> Self {
        self.reply = reply;
        self
    }
}

/// Why a webhook was refused. Nothing is stored for any of these.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The signature is missing, malformed, stale or wrong.
    #[error("webhook signature rejected: {0}")]
    BadSignature(String),
    /// The payload could not be understood.
    #[error("malformed webhook: {0}")]
    Malformed(String),
    /// This receiver has no such endpoint (e.g. no status callbacks).
    #[error("unsupported webhook: {0}")]
    Unsupported(String),
}

impl WebhookError {
    /// Whether the request failed authentication (answer 403).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Self::BadSignature(_))
    }

    /// Never retryable: the same request fails the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// A provider's webhook endpoint.
pub trait WebhookReceiver: Send + Sync {
    /// Channel type in the path (`sms`, `email`, `webhook`, `telegram`).
    fn channel_type(&self) -> &str;

    /// Provider in the path (`twilio`, `telnyx`, `sendgrid`, ...).
    fn provider(&self) -> &str;

    /// Verifies and parses one request.
    ///
    /// # Errors
    /// [`WebhookError`]: a bad signature, a malformed body, or an endpoint
    /// this provider does not have.
    fn verify_and_parse(&self, req: &WebhookRequest) -> Result<WebhookOutcome, WebhookError>;
}

/// Constant-time comparison of two byte strings.
#[cfg_attr(
    not(any(feature = "twilio", feature = "webhook", feature = "telegram")),
    allow(dead_code)
)]
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
