//! Email over SMTP with lettre: sends through a relay given as an
//! `smtp://` / `smtps://` URL, and parses raw RFC 5322 messages posted by a
//! mail forwarder as inbound mail (`message/rfc822` bodies).

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{EmailProvider, InboundEmail, OutboundEmail, inbound_from_headers, parse_headers};
use crate::error::ProviderError;
use crate::receiver::{WebhookError, WebhookRequest};
use crate::{ProviderResult, Secret};

const PROVIDER: &str = "smtp";

/// SMTP settings.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain, or `?tls=required`), `smtps://host:port`.
    pub url: String,
    /// User name, when the relay authenticates.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Secret>,
}

/// The SMTP provider.
pub struct SmtpEmail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for SmtpEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SmtpEmail")
    }
}

impl SmtpEmail {
    /// A provider for a relay.
    ///
    /// # Errors
    /// [`ProviderError::Invalid`] for a URL lettre does not accept.
    pub fn new(config: &SmtpConfig) -> Result<Self, ProviderError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url).map_err(|e| {
                ProviderError::Invalid {
                    provider: PROVIDER,
                    operation: "configure",
                    message: e.to_string(),
                }
            })?;
        if let (Some(u), Some(p)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(u.clone(), p.expose().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
        })
    }
}

fn invalid(message: String) -> ProviderError {
    ProviderError::Invalid {
        provider: PROVIDER,
        operation: "send",
        message,
    }
}

#[async_trait]
impl EmailProvider for SmtpEmail {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn send(&self, email: &OutboundEmail) -> Result<ProviderResult, ProviderError> {
        let from: Mailbox = email
            .from
            .parse()
            .map_err(|e| invalid(format!("from: {e}")))?;
        let to: Mailbox = email.to.parse().map_err(|e| invalid(format!("to: {e}")))?;
        let mut builder = Message::builder()
            .from(from)
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(email.message_id.clone()));
        if let Some(irt) = &email.in_reply_to {
            builder = builder.in_reply_to(irt.clone());
        }
        if !email.references.is_empty() {
            builder = builder.references(email.references.join(" "));
        }
        let message = match &email.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                html.clone(),
            )),
            None => builder
                .header(ContentType::TEXT_PLAIN)
                .body(email.text.clone()),
        }
        .map_err(|e| invalid(e.to_string()))?;
        let response = self.transport.send(message).await.map_err(|e| {
            let permanent = e.is_permanent();
            if permanent {
                ProviderError::Status {
                    provider: PROVIDER,
                    operation: "send",
                    status: 550,
                    code: Some("smtp_permanent".into()),
                    message: e.to_string(),
                    retry_after_seconds: None,
                }
            } else {
                ProviderError::Transport {
                    provider: PROVIDER,
                    operation: "send",
                    message: e.to_string(),
                }
            }
        })?;
        tracing::debug!(target: "roomkit.providers.email.smtp", code = %response.code(), "relay accepted the message");
        Ok(ProviderResult {
            provider_message_id: Some(email.message_id.clone()),
            status: Some(response.code().to_string()),
            queued: false,
        })
    }

    fn parse_inbound(&self, req: &WebhookRequest) -> Result<Vec<InboundEmail>, WebhookError> {
        let raw = req.body_str()?;
        let (headers, body) = parse_headers(raw);
        let mut map = roomkit_model::Map::new();
        for (k, v) in &headers {
            map.insert(k.clone(), v.clone().into());
        }
        Ok(vec![inbound_from_headers(&headers, body, None, map)?])
    }
}
