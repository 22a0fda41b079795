//! RoomKit transport channels (RFC §6.3, §6.7, Appendix A): SMS, email, the
//! generic HTTP webhook channel and Telegram, each a channel type holding a
//! vendor provider behind a trait, one module and one cargo feature per
//! vendor.
//!
//! Inbound traffic arrives through [`WebhookReceiver`]s: the server hands
//! them the raw request (method, the URL the provider signed, headers, body)
//! and gets back verified inbound messages or delivery-status updates plus
//! the exact reply the provider expects. The server needs to know no vendor.

#![warn(missing_docs)]

mod content;
pub mod email;
mod error;
mod http;
pub mod outbound;
pub mod receiver;
mod secret;
pub mod sms;
#[cfg(feature = "telegram")]
pub mod telegram;
#[cfg(feature = "webhook")]
pub mod webhook;

pub use error::ProviderError;
pub use receiver::{
    WebhookError, WebhookKind, WebhookOutcome, WebhookReceiver, WebhookReply, WebhookRequest,
};
pub use secret::{Secret, SecretError};

/// The result of handing one message to a provider (RFC §6.7).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderResult {
    /// The provider's id of the message.
    pub provider_message_id: Option<String>,
    /// The provider's own status word (`queued`, `accepted`, ...).
    pub status: Option<String>,
    /// Whether the provider only queued it for later sending.
    pub queued: bool,
}

impl ProviderResult {
    /// Converts to the channel's output.
    pub fn into_output(self) -> roomkit_core::ChannelOutput {
        let mut out = roomkit_core::ChannelOutput::empty();
        out.provider_message_id = self.provider_message_id;
        if self.queued {
            out.delivery_status = Some(roomkit_model::DeliveryStatus::Queued);
        }
        out
    }
}
