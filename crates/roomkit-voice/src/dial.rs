//! Outbound calls: a [`CallDialer`] asks a voice transport's provider to
//! ring a number and, once the callee answers, to connect the call to the
//! voice channel in a given room.
//!
//! The server holds the dialers of its voice channels as trait objects, so
//! it places calls without knowing any vendor; the Twilio REST client
//! holds the Twilio one.

use async_trait::async_trait;
use roomkit_core::model::{ChannelId, RoomId};

/// What to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRequest {
    /// The number (or address) to ring.
    pub to: String,
    /// The caller id to show; the channel's configured number when `None`.
    pub from: Option<String>,
    /// The room the answered call joins.
    pub room_id: RoomId,
}

/// A call the provider accepted to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialedCall {
    /// The provider's id of the call (Twilio: the `CA...` call SID).
    pub call_id: String,
    /// The provider's word for the call's state (Twilio: `queued`, ...).
    pub status: String,
    /// The caller id used.
    pub from: String,
}

/// Why a call could not be placed. The texts are this crate's own words
/// (with the provider's status and short error code), never the provider's
/// message: that stays in the Twilio client's typed error and the
/// debug log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The channel lacks settings outbound calls need (named in the text).
    #[error("outbound calls are not configured on this channel: {0}")]
    NotConfigured(String),
    /// The provider refused the request (a bad number, a bad account, ...).
    #[error("{provider} refused the call: {message}")]
    Refused {
        /// The provider's name.
        provider: String,
        /// HTTP status of the refusal.
        status: u16,
        /// The provider's error code, when it is a short token.
        code: Option<String>,
        /// A description in this crate's words.
        message: String,
    },
    /// No running call of this channel has that id.
    #[error("no call {0} is running on this channel")]
    UnknownCall(String),
    /// The provider could not be reached or answered nonsense; whether the
    /// call was placed is unknown, so it is not retried.
    #[error("{provider} could not be asked to place the call: {message}")]
    Unavailable {
        /// The provider's name.
        provider: String,
        /// A description in this crate's words.
        message: String,
    },
}

/// Places outbound calls for one voice channel.
#[async_trait]
pub trait CallDialer: Send + Sync {
    /// The voice channel whose calls this places.
    fn channel_id(&self) -> &ChannelId;

    /// The provider's name (`twilio`).
    fn provider(&self) -> &str;

    /// Channels (agents) to attach, after the voice channel, to a room
    /// created for an outbound call of this channel.
    fn agents(&self) -> &[ChannelId] {
        &[]
    }

    /// `Err` naming what is missing when calls cannot be placed at all; a
    /// caller checks this before preparing a room for the call.
    ///
    /// # Errors
    /// [`DialError::NotConfigured`].
    fn ready(&self) -> Result<(), DialError>;

    /// Asks the provider to place the call. Never retried: a second request
    /// could ring the callee twice.
    ///
    /// # Errors
    /// See [`DialError`].
    async fn dial(&self, request: &DialRequest) -> Result<DialedCall, DialError>;

    /// Hands the running call `call_id` (the provider's id, as `dial` and
    /// the call's events give it) to `to`: a blind transfer. The call ends
    /// once the target answers.
    ///
    /// # Errors
    /// [`DialError::NotConfigured`] when the transport cannot transfer,
    /// [`DialError::UnknownCall`] when no such call runs.
    async fn transfer(&self, call_id: &str, to: &str) -> Result<(), DialError> {
        let _ = (call_id, to);
        Err(DialError::NotConfigured(format!(
            "{} calls cannot be transferred",
            self.provider()
        )))
    }
}

/// Whether `address` is something a phone provider can ring: an E.164
/// number (`+` and 8 to 15 digits, the first not 0), or a `sip:` or
/// `client:` address of at most 256 bytes without spaces or control
/// characters.
pub fn dialable(address: &str) -> bool {
    if let Some(digits) = address.strip_prefix('+') {
        return (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
    }
    let rest = address
        .strip_prefix("sip:")
        .or_else(|| address.strip_prefix("client:"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && address.len() <= 256
            && !r.contains(|c: char| c.is_whitespace() || c.is_control() || "<>\"'".contains(c))
    })
}

#[cfg(test)]
mod tests {
    use super::dialable;

    #[test]
    fn dialable_addresses() {
        for ok in [
            "+15551234567",
            "+441632960961",
            "sip:alice@example.com",
            "client:alice",
        ] {
            assert!(dialable(ok), "{ok}");
        }
        for bad in [
            "",
            "+",
            "+1555",
            "15551234567",
            "+0155512345",
            "+1555123456789012",
            "+1 555 123 4567",
            "sip:",
            "sip:a b",
            "client:<x>",
            "tel:+15551234567",
        ] {
            assert!(!dialable(bad), "{bad}");
        }
    }
}
