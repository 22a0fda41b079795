//! Channel types, capabilities and the per-room channel binding (RFC §5.7,
//! §5.8, §6.2, §7.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::Timestamp;
use crate::{ChannelId, Map, ModelError, ParticipantId, RoomId, Visibility};

/// The kind of a channel (RFC §6.2), plus integrator-defined `custom:` kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ChannelType {
    /// Short Message Service.
    Sms,
    /// Multimedia Message Service.
    Mms,
    /// Rich Communication Services.
    Rcs,
    /// Electronic mail.
    Email,
    /// WhatsApp Business Cloud API.
    Whatsapp,
    /// WhatsApp multi-device protocol.
    WhatsappPersonal,
    /// WebSocket connection.
    Websocket,
    /// Facebook Messenger.
    Messenger,
    /// Microsoft Teams.
    Teams,
    /// Generic HTTP webhook.
    Webhook,
    /// Voice (STT/TTS pipeline).
    Voice,
    /// Speech-to-speech API.
    RealtimeVoice,
    /// Voice plus video.
    AudioVideo,
    /// Speech-to-speech plus video.
    RealtimeAudioVideo,
    /// Video only.
    Video,
    /// Multi-party SFU conference.
    Conference,
    /// Telegram Bot API.
    Telegram,
    /// Command-line interface.
    Cli,
    /// Push notifications.
    Push,
    /// AI agent (intelligence).
    Ai,
    /// Framework-generated events.
    System,
    /// An integrator-defined type, written `custom:<namespace>`.
    Custom(String),
}

const CHANNEL_TYPE_NAMES: &[(&str, ChannelType)] = &[
    ("sms", ChannelType::Sms),
    ("mms", ChannelType::Mms),
    ("rcs", ChannelType::Rcs),
    ("email", ChannelType::Email),
    ("whatsapp", ChannelType::Whatsapp),
    ("whatsapp_personal", ChannelType::WhatsappPersonal),
    ("websocket", ChannelType::Websocket),
    ("messenger", ChannelType::Messenger),
    ("teams", ChannelType::Teams),
    ("webhook", ChannelType::Webhook),
    ("voice", ChannelType::Voice),
    ("realtime_voice", ChannelType::RealtimeVoice),
    ("audio_video", ChannelType::AudioVideo),
    ("realtime_audio_video", ChannelType::RealtimeAudioVideo),
    ("video", ChannelType::Video),
    ("conference", ChannelType::Conference),
    ("telegram", ChannelType::Telegram),
    ("cli", ChannelType::Cli),
    ("push", ChannelType::Push),
    ("ai", ChannelType::Ai),
    ("system", ChannelType::System),
];

impl ChannelType {
    /// The 21 built-in channel types, in RFC order.
    pub fn builtin() -> impl Iterator<Item = ChannelType> {
        CHANNEL_TYPE_NAMES.iter().map(|(_, t)| t.clone())
    }

    /// The wire name (`"sms"`, `"realtime_voice"`, `"custom:slack"`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Custom(s) => s,
            other => CHANNEL_TYPE_NAMES
                .iter()
                .find(|(_, t)| t == other)
                .map_or("custom:unknown", |(n, _)| n),
        }
    }

    /// The category the RFC assigns to this type; `None` for SYSTEM and
    /// custom types.
    pub fn default_category(&self) -> Option<ChannelCategory> {
        match self {
            Self::Ai => Some(ChannelCategory::Intelligence),
            Self::System | Self::Custom(_) => None,
            _ => Some(ChannelCategory::Transport),
        }
    }
}

impl fmt::Display for ChannelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelType {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if let Some((_, t)) = CHANNEL_TYPE_NAMES.iter().find(|(n, _)| *n == lower) {
            return Ok(t.clone());
        }
        match lower.strip_prefix("custom:") {
            Some(ns) if !ns.is_empty() => Ok(Self::Custom(format!("custom:{ns}"))),
            _ => Err(ModelError::Invalid {
                kind: "channel type",
                value: s.to_owned(),
            }),
        }
    }
}

impl Serialize for ChannelType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChannelType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a channel carries messages or produces intelligence (RFC §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelCategory {
    /// Carries messages to and from people or systems; implements deliver().
    Transport,
    /// Reacts to events (AI); implements on_event().
    Intelligence,
}

/// Which way a channel carries messages (RFC §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelDirection {
    /// Only receives from outside.
    Inbound,
    /// Only sends outward.
    Outbound,
    /// Both.
    Bidirectional,
}

impl ChannelDirection {
    /// True when the channel can deliver outward.
    pub fn can_deliver(self) -> bool {
        !matches!(self, Self::Inbound)
    }
}

/// Read/write permission of a binding (RFC §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Reads and writes.
    #[default]
    ReadWrite,
    /// Observes only.
    ReadOnly,
    /// Writes blind.
    WriteOnly,
    /// Bound but inactive.
    None,
}

impl Access {
    /// True for READ_WRITE and READ_ONLY.
    pub fn can_read(self) -> bool {
        matches!(self, Self::ReadWrite | Self::ReadOnly)
    }

    /// True for READ_WRITE and WRITE_ONLY.
    pub fn can_write(self) -> bool {
        matches!(self, Self::ReadWrite | Self::WriteOnly)
    }
}

/// Content categories a channel can show (RFC §5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelMediaType {
    /// Plain text.
    Text,
    /// Formatted text with buttons, cards and quick replies.
    Rich,
    /// Images, documents, files.
    Media,
    /// Audio messages.
    Audio,
    /// Video messages.
    Video,
    /// Coordinates.
    Location,
    /// Pre-approved templates.
    Template,
}

/// How a channel hands messages to its recipients. The RFC names the field
/// without defining its values; these are the ones this implementation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Each event is pushed as soon as it is committed.
    #[default]
    Immediate,
    /// Events are queued by the provider and sent later.
    Queued,
    /// Text may be streamed token by token.
    Streaming,
}

/// Token-bucket rate limit (RFC §13.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate per second.
    #[serde(default)]
    pub max_per_second: Option<f64>,
    /// Sustained rate per minute.
    #[serde(default)]
    pub max_per_minute: Option<f64>,
    /// Bucket size.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Delivery retry policy (RFC §13.2; defaults per decision D14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts after the first.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Delay of the first retry.
    #[serde(default = "default_base_delay")]
    pub base_delay_seconds: f64,
    /// Growth factor.
    #[serde(default = "default_exp_base")]
    pub exponential_base: f64,
    /// Upper bound of a delay.
    #[serde(default = "default_max_delay")]
    pub max_delay_seconds: f64,
    /// Error codes worth retrying; empty means "any error marked retryable".
    #[serde(default)]
    pub retryable_errors: Vec<String>,
}

fn default_max_retries() -> u32 {
    3
}
fn default_base_delay() -> f64 {
    0.5
}
fn default_exp_base() -> f64 {
    2.0
}
fn default_max_delay() -> f64 {
    10.0
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            base_delay_seconds: default_base_delay(),
            exponential_base: default_exp_base(),
            max_delay_seconds: default_max_delay(),
            retryable_errors: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The un-jittered delay before retry number `attempt` (counted from 0):
    /// `min(base * exponential_base ^ attempt, max)`.
    pub fn delay_seconds(&self, attempt: u32) -> f64 {
        let raw = self.base_delay_seconds * self.exponential_base.powi(attempt as i32);
        raw.min(self.max_delay_seconds)
    }
}

/// What a channel supports (RFC §5.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelCapabilities {
    /// Content categories it can show.
    pub media_types: Vec<ChannelMediaType>,
    /// Longest text, in characters; `None` is unlimited.
    pub max_length: Option<usize>,
    /// Formatted text.
    pub supports_rich_text: bool,
    /// Buttons.
    pub supports_buttons: bool,
    /// Most buttons per message.
    pub max_buttons: Option<u32>,
    /// Cards.
    pub supports_cards: bool,
    /// Quick replies.
    pub supports_quick_replies: bool,
    /// Templates.
    pub supports_templates: bool,
    /// Media attachments.
    pub supports_media: bool,
    /// Accepted MIME types.
    pub supported_media_types: Vec<String>,
    /// Largest attachment.
    pub max_media_size_bytes: Option<u64>,
    /// Audio.
    pub supports_audio: bool,
    /// Video.
    pub supports_video: bool,
    /// Threads.
    pub supports_threading: bool,
    /// Typing indicators.
    pub supports_typing: bool,
    /// Read receipts.
    pub supports_read_receipts: bool,
    /// Reactions.
    pub supports_reactions: bool,
    /// Native edits.
    pub supports_edit: bool,
    /// Native deletes.
    pub supports_delete: bool,
    /// How messages are handed over.
    pub delivery_mode: DeliveryMode,
    /// The channel's own rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Anything else.
    pub custom: Map,
}

impl Default for ChannelCapabilities {
    fn default() -> Self {
        Self::text_only()
    }
}

impl ChannelCapabilities {
    /// Plain text and nothing else.
    pub fn text_only() -> Self {
        Self {
            media_types: vec![ChannelMediaType::Text],
            max_length: None,
            supports_rich_text: false,
            supports_buttons: false,
            max_buttons: None,
            supports_cards: false,
            supports_quick_replies: false,
            supports_templates: false,
            supports_media: false,
            supported_media_types: Vec::new(),
            max_media_size_bytes: None,
            supports_audio: false,
            supports_video: false,
            supports_threading: false,
            supports_typing: false,
            supports_read_receipts: false,
            supports_reactions: false,
            supports_edit: false,
            supports_delete: false,
            delivery_mode: DeliveryMode::Immediate,
            rate_limit: None,
            custom: Map::new(),
        }
    }

    /// Everything a WebSocket client can show (RFC Appendix A.8).
    pub fn full() -> Self {
        use ChannelMediaType::*;
        Self {
            media_types: vec![Text, Rich, Media, Audio, Video, Location],
            supports_rich_text: true,
            supports_buttons: true,
            supports_cards: true,
            supports_quick_replies: true,
            supports_media: true,
            supports_audio: true,
            supports_video: true,
            supports_typing: true,
            supports_read_receipts: true,
            supports_reactions: true,
            supports_edit: true,
            supports_delete: true,
            ..Self::text_only()
        }
    }

    /// True when `media_types` lists `t`.
    pub fn supports(&self, t: ChannelMediaType) -> bool {
        self.media_types.contains(&t)
    }
}

/// A channel attached to a room, with its permissions there (RFC §5.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelBinding {
    /// The channel.
    pub channel_id: ChannelId,
    /// The room.
    pub room_id: RoomId,
    /// The channel's type.
    pub channel_type: ChannelType,
    /// TRANSPORT or INTELLIGENCE.
    pub category: ChannelCategory,
    /// The channel's direction.
    pub direction: ChannelDirection,
    /// Read/write permission.
    pub access: Access,
    /// Response events suppressed; on_event() still called.
    pub muted: bool,
    /// deliver() suppressed; on_event() still called.
    pub output_muted: bool,
    /// Who sees what this channel writes.
    pub visibility: Visibility,
    /// Participant this binding belongs to, if any.
    pub participant_id: Option<ParticipantId>,
    /// Read horizon.
    pub last_read_index: Option<u64>,
    /// When it was attached.
    #[serde(with = "crate::time::ser")]
    pub attached_at: Timestamp,
    /// Capability snapshot of the channel.
    pub capabilities: ChannelCapabilities,
    /// Per-binding rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Per-binding retry policy.
    pub retry_policy: Option<RetryPolicy>,
    /// Binding metadata (recipient address, persona, ...).
    pub metadata: Map,
}

impl ChannelBinding {
    /// True when this binding may write (access allows it and not muted).
    pub fn can_write(&self) -> bool {
        self.access.can_write() && !self.muted
    }
}
