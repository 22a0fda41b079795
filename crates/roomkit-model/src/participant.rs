//! Participants and identities (RFC §5.5, §5.6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::{ChannelId, ChannelType, IdentityId, Map, ParticipantId, RoomId};

/// Role of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    /// Room creator or responsible party.
    Owner,
    /// Human agent.
    Agent,
    /// Regular participant.
    #[default]
    Member,
    /// Read-only participant.
    Observer,
    /// Automated participant.
    Bot,
}

impl ParticipantRole {
    /// True for roles that may perform administrative deletes.
    pub fn is_admin(self) -> bool {
        matches!(self, Self::Owner | Self::Agent)
    }
}

/// Presence status of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    /// Participating.
    #[default]
    Active,
    /// No recent activity.
    Inactive,
    /// Left the room.
    Left,
    /// Removed and blocked.
    Banned,
}

/// Identity resolution state (RFC §5.5, §11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentificationStatus {
    /// `identity_id` is set.
    Identified,
    /// Awaiting resolution.
    Pending,
    /// Several candidates.
    Ambiguous,
    /// No match.
    #[default]
    Unknown,
    /// A verification challenge was sent.
    ChallengeSent,
    /// Verification failed.
    Rejected,
}

/// A person or program taking part in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// Unique id.
    pub id: ParticipantId,
    /// The room.
    pub room_id: RoomId,
    /// Primary channel.
    pub channel_id: ChannelId,
    /// Display name.
    pub display_name: Option<String>,
    /// Role.
    pub role: ParticipantRole,
    /// Presence.
    pub status: ParticipantStatus,
    /// Identity resolution state.
    pub identification: IdentificationStatus,
    /// Resolved identity.
    pub identity_id: Option<IdentityId>,
    /// Candidate identities while ambiguous.
    pub candidates: Option<Vec<IdentityId>>,
    /// Every channel the room reached this participant through.
    pub connected_via: Vec<ChannelId>,
    /// Integrator's reference.
    pub external_id: Option<String>,
    /// When the identity was confirmed.
    #[serde(with = "crate::time::opt")]
    pub resolved_at: Option<Timestamp>,
    /// What confirmed it (hook name, "auto", "manual").
    pub resolved_by: Option<String>,
    /// When the participant joined.
    #[serde(with = "crate::time::ser")]
    pub joined_at: Timestamp,
    /// Integrator data.
    pub metadata: Map,
    /// The sender address the participant was first seen with (phone
    /// number, email address, user id). Not an RFC field: the default router
    /// and lazy get-or-create match on it.
    pub address: Option<String>,
    /// Channel type of `address`.
    pub channel_type: Option<ChannelType>,
}

/// A person known across channels (RFC §5.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Unique id.
    pub id: IdentityId,
    /// Tenant scope.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Addresses per channel type.
    #[serde(default)]
    pub channel_addresses: BTreeMap<ChannelType, Vec<String>>,
    /// CRM or other external reference.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Integrator data.
    #[serde(default)]
    pub metadata: Map,
}
