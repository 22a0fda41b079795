//! Identities (RFC §5.6) and the explicit resolution of a participant to an
//! identity (RFC §11, the `resolve` operation of §16.1).
//!
//! Every surface (REST, MCP, WebSocket) calls these methods; the rules
//! (organization scoping, address ownership, the PARTICIPANT_IDENTIFIED
//! marker and its hook) live here.

use std::collections::BTreeMap;

use roomkit_model::{
    ChannelType, EventContent, EventType, FrameworkEvent, HookTrigger, IdentificationStatus,
    Identity, IdentityId, Map, Participant, ParticipantId, RoomEvent, RoomId, SystemContent,
};

use crate::error::{Result, RoomKitError, StoreError};
use crate::hooks::HookPayload;
use crate::kit::RoomKit;

/// Changes of [`RoomKit::update_identity`]; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct IdentityUpdate {
    /// New display name (`Some(None)` clears it).
    pub display_name: Option<Option<String>>,
    /// Replace the addresses.
    pub channel_addresses: Option<BTreeMap<ChannelType, Vec<String>>>,
    /// New external reference (`Some(None)` clears it).
    pub external_id: Option<Option<String>>,
    /// Replace the metadata.
    pub metadata: Option<Map>,
}

/// Channel types whose addresses are phone numbers.
fn is_phone_channel(channel_type: &ChannelType) -> bool {
    matches!(
        channel_type,
        ChannelType::Sms
            | ChannelType::Mms
            | ChannelType::Rcs
            | ChannelType::Whatsapp
            | ChannelType::WhatsappPersonal
            | ChannelType::Voice
    )
}

/// The form an address is stored and looked up in: trimmed, and for a
/// phone number (on a phone channel type, made only of digits, an optional
/// leading `+` and the usual separators) without its separators, so that
/// `+1 (555) 123-4567` and `+15551234567` are one address. Anything else,
/// a WhatsApp JID for instance, is only trimmed.
pub fn normalize_address(channel_type: &ChannelType, address: &str) -> String {
    let trimmed = address.trim();
    let phone_like = is_phone_channel(channel_type)
        && trimmed.chars().any(|c| c.is_ascii_digit())
        && trimmed.chars().enumerate().all(|(i, c)| {
            c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')') || (i == 0 && c == '+')
        });
    if !phone_like {
        return trimmed.to_owned();
    }
    trimmed
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect()
}

fn normalize_addresses(identity: &mut Identity) {
    for (channel_type, addresses) in identity.channel_addresses.iter_mut() {
        for a in addresses.iter_mut() {
            *a = normalize_address(channel_type, a);
        }
    }
}

fn identity_not_found(id: &IdentityId) -> RoomKitError {
    RoomKitError::NotFound {
        kind: "identity",
        id: id.to_string(),
    }
}

impl RoomKit {
    /// Creates an identity. An empty id is generated. Within an
    /// organization an address belongs to at most one identity, so that
    /// resolution by address is never a guess.
    ///
    /// # Errors
    /// [`RoomKitError::Invalid`] for an empty address,
    /// [`StoreError::Conflict`] (as [`RoomKitError::Store`]) when the id is
    /// taken or an address already belongs to another identity.
    pub async fn create_identity(&self, mut identity: Identity) -> Result<Identity> {
        if identity.id.is_empty() {
            identity.id = IdentityId::from(self.new_id("idn"));
        }
        if self.inner.store.get_identity(&identity.id).await?.is_some() {
            return Err(StoreError::Conflict {
                kind: "identity",
                id: identity.id.to_string(),
            }
            .into());
        }
        normalize_addresses(&mut identity);
        self.check_addresses(&identity).await?;
        let stored = self.inner.store.store_identity(identity).await?;
        tracing::info!(target: "roomkit.identity", identity_id = %stored.id, "identity created");
        Ok(stored)
    }

    /// Reads an identity.
    ///
    /// # Errors
    /// [`RoomKitError::NotFound`] for an unknown id.
    pub async fn get_identity(&self, id: &IdentityId) -> Result<Identity> {
        self.inner
            .store
            .get_identity(id)
            .await?
            .ok_or_else(|| identity_not_found(id))
    }

    /// The identity of an organization that owns an address on a channel
    /// type. Resolution never crosses organizations (RFC §17.2): an identity
    /// without an organization is found only when none is given.
    ///
    /// # Errors
    /// [`RoomKitError::NotFound`] when no identity owns the address.
    pub async fn resolve_identity(
        &self,
        channel_type: &ChannelType,
        address: &str,
        organization_id: Option<&str>,
    ) -> Result<Identity> {
        let address = normalize_address(channel_type, address);
        let address = address.as_str();
        self.inner
            .store
            .resolve_by_address(channel_type, address, organization_id)
            .await?
            .ok_or_else(|| RoomKitError::NotFound {
                kind: "identity",
                id: format!("{channel_type}:{address}"),
            })
    }

    /// Changes an identity.
    ///
    /// # Errors
    /// [`RoomKitError::NotFound`], and the address rules of
    /// [`RoomKit::create_identity`].
    pub async fn update_identity(
        &self,
        id: &IdentityId,
        update: IdentityUpdate,
    ) -> Result<Identity> {
        let mut identity = self.get_identity(id).await?;
        if let Some(v) = update.display_name {
            identity.display_name = v;
        }
        if let Some(v) = update.channel_addresses {
            identity.channel_addresses = v;
        }
        if let Some(v) = update.external_id {
            identity.external_id = v;
        }
        if let Some(v) = update.metadata {
            identity.metadata = v;
        }
        normalize_addresses(&mut identity);
        self.check_addresses(&identity).await?;
        Ok(self.inner.store.store_identity(identity).await?)
    }

    async fn check_addresses(&self, identity: &Identity) -> Result<()> {
        for (channel_type, addresses) in &identity.channel_addresses {
            for address in addresses {
                if address.trim().is_empty() {
                    return Err(RoomKitError::Invalid(format!(
                        "channel_addresses.{channel_type}: an address must not be empty"
                    )));
                }
                if let Some(owner) = self
                    .inner
                    .store
                    .resolve_by_address(channel_type, address, identity.organization_id.as_deref())
                    .await?
                    && owner.id != identity.id
                {
                    return Err(StoreError::Conflict {
                        kind: "address",
                        id: format!("{channel_type}:{address} (owned by identity {})", owner.id),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Resolves a participant to an identity by hand: sets it IDENTIFIED
    /// with that identity, stores a PARTICIPANT_IDENTIFIED event in the
    /// timeline (when the room accepts events), emits `identity_resolved`
    /// and fires ON_PARTICIPANT_IDENTIFIED.
    ///
    /// # Errors
    /// [`RoomKitError::RoomNotFound`], [`RoomKitError::NotFound`] for an
    /// unknown participant or identity, [`RoomKitError::Invalid`] when the
    /// identity belongs to another organization than the room.
    pub async fn resolve_participant(
        &self,
        room_id: &RoomId,
        participant_id: &ParticipantId,
        identity_id: &IdentityId,
    ) -> Result<Participant> {
        let lock = self.lock_room(room_id).await?;
        let room = self.require_room(room_id).await?;
        let mut participant = self
            .inner
            .store
            .get_participant(room_id, participant_id)
            .await?
            .ok_or_else(|| RoomKitError::NotFound {
                kind: "participant",
                id: participant_id.to_string(),
            })?;
        let identity = self.get_identity(identity_id).await?;
        if identity.organization_id.is_some() && identity.organization_id != room.organization_id {
            return Err(RoomKitError::Invalid(format!(
                "identity {identity_id} belongs to another organization than room {room_id}"
            )));
        }
        participant.identification = IdentificationStatus::Identified;
        participant.identity_id = Some(identity.id.clone());
        participant.candidates = None;
        participant.resolved_at = Some(self.now());
        participant.resolved_by = Some("manual".into());
        let participant = self.inner.store.update_participant(participant).await?;
        if room.status.accepts_events() {
            let mut data = Map::new();
            data.insert("participant_id".into(), participant.id.as_str().into());
            data.insert("identity_id".into(), identity.id.as_str().into());
            let content = EventContent::System(SystemContent {
                code: "participant_identified".into(),
                message: format!(
                    "participant {} identified as {}",
                    participant.id, identity.id
                ),
                data,
            });
            let mut event = RoomEvent::system(EventType::ParticipantIdentified, content);
            event.source.participant_id = Some(participant.id.clone());
            self.commit_system_event(&room, event).await?;
        }
        drop(lock);
        tracing::info!(target: "roomkit.identity", room_id = %room_id, participant_id = %participant.id, identity_id = %identity.id, "participant identified");
        self.emit(FrameworkEvent::IdentityResolved {
            participant_id: participant.id.clone(),
            identity_id: identity.id.clone(),
        });
        self.spawn_hooks(
            HookTrigger::OnParticipantIdentified,
            room_id,
            HookPayload::Participant(participant.clone()),
        );
        Ok(participant)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use roomkit_model::{EventStatus, ParticipantRole};

    use super::*;
    use crate::hooks::{HookRegistration, SideEffects};
    use crate::kit::{AddParticipant, CreateRoom, TimelineQuery};

    fn identity(id: &str, org: Option<&str>, phone: &str) -> Identity {
        let mut addresses = BTreeMap::new();
        addresses.insert(ChannelType::Sms, vec![phone.to_owned()]);
        Identity {
            id: IdentityId::from(id),
            organization_id: org.map(str::to_owned),
            display_name: Some("Ada".into()),
            channel_addresses: addresses,
            external_id: None,
            metadata: Map::new(),
        }
    }

    #[tokio::test]
    async fn resolution_is_scoped_to_the_organization() {
        let kit = RoomKit::new();
        kit.create_identity(identity("i1", Some("org-a"), "+1555"))
            .await
            .unwrap();
        let found = kit
            .resolve_identity(&ChannelType::Sms, "+1555", Some("org-a"))
            .await
            .unwrap();
        assert_eq!(found.id.as_str(), "i1");
        let other = kit
            .resolve_identity(&ChannelType::Sms, "+1555", Some("org-b"))
            .await;
        assert!(matches!(other, Err(RoomKitError::NotFound { .. })));
        let unknown = kit
            .resolve_identity(&ChannelType::Sms, "+1999", Some("org-a"))
            .await;
        assert!(matches!(unknown, Err(RoomKitError::NotFound { .. })));
    }

    #[tokio::test]
    async fn ids_and_addresses_are_unique() {
        let kit = RoomKit::new();
        kit.create_identity(identity("i1", None, "+1555"))
            .await
            .unwrap();
        let dup = kit.create_identity(identity("i1", None, "+1666")).await;
        assert!(matches!(
            dup,
            Err(RoomKitError::Store(StoreError::Conflict { .. }))
        ));
        let taken = kit.create_identity(identity("i2", None, "+1555")).await;
        assert!(matches!(
            taken,
            Err(RoomKitError::Store(StoreError::Conflict { .. }))
        ));
        // Another organization may own the same address.
        kit.create_identity(identity("i3", Some("org"), "+1555"))
            .await
            .unwrap();
        let generated = kit
            .create_identity(identity("", None, "+1777"))
            .await
            .unwrap();
        assert!(!generated.id.is_empty());
    }

    #[tokio::test]
    async fn update_changes_only_given_fields() {
        let kit = RoomKit::new();
        kit.create_identity(identity("i1", None, "+1555"))
            .await
            .unwrap();
        let updated = kit
            .update_identity(
                &IdentityId::from("i1"),
                IdentityUpdate {
                    display_name: Some(Some("Grace".into())),
                    ..IdentityUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.display_name.as_deref(), Some("Grace"));
        assert_eq!(updated.channel_addresses.len(), 1);
        let missing = kit
            .update_identity(&IdentityId::from("nope"), IdentityUpdate::default())
            .await;
        assert!(matches!(missing, Err(RoomKitError::NotFound { .. })));
    }

    #[tokio::test]
    async fn resolving_a_participant_identifies_it_and_marks_the_timeline() {
        let kit = RoomKit::new();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        kit.add_hook(HookRegistration::asynchronous(
            HookTrigger::OnParticipantIdentified,
            "count",
            move |_input| {
                let f = f.clone();
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    Ok(SideEffects::default())
                }
            },
        ));
        let mut framework = kit.subscribe();
        let room = kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
        let p = kit
            .add_participant(
                &room.id,
                AddParticipant {
                    id: Some(ParticipantId::from("p1")),
                    role: ParticipantRole::Member,
                    ..AddParticipant::default()
                },
            )
            .await
            .unwrap();
        kit.create_identity(identity("i1", None, "+1555"))
            .await
            .unwrap();
        let resolved = kit
            .resolve_participant(&room.id, &p.id, &IdentityId::from("i1"))
            .await
            .unwrap();
        assert_eq!(resolved.identification, IdentificationStatus::Identified);
        assert_eq!(
            resolved.identity_id.as_ref().map(|i| i.as_str()),
            Some("i1")
        );
        assert!(resolved.resolved_at.is_some());
        let timeline = kit
            .timeline(&room.id, TimelineQuery::default())
            .await
            .unwrap();
        let marker = timeline.last().unwrap();
        assert_eq!(marker.event_type, EventType::ParticipantIdentified);
        assert_eq!(marker.status, EventStatus::Delivered);
        kit.idle().await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        let mut saw = false;
        while let Ok(e) = framework.try_recv() {
            saw |= matches!(*e, FrameworkEvent::IdentityResolved { .. });
        }
        assert!(saw, "identity_resolved was emitted");
    }

    #[tokio::test]
    async fn resolving_refuses_unknowns_and_other_organizations() {
        let kit = RoomKit::new();
        let room = kit
            .create_room(CreateRoom {
                id: Some(RoomId::from("r1")),
                organization_id: Some("org-a".into()),
                ..CreateRoom::default()
            })
            .await
            .unwrap();
        let p = kit
            .add_participant(&room.id, AddParticipant::default())
            .await
            .unwrap();
        let unknown = kit
            .resolve_participant(&room.id, &p.id, &IdentityId::from("nope"))
            .await;
        assert!(matches!(
            unknown,
            Err(RoomKitError::NotFound {
                kind: "identity",
                ..
            })
        ));
        let no_participant = kit
            .resolve_participant(
                &room.id,
                &ParticipantId::from("x"),
                &IdentityId::from("nope"),
            )
            .await;
        assert!(matches!(
            no_participant,
            Err(RoomKitError::NotFound {
                kind: "participant",
                ..
            })
        ));
        kit.create_identity(identity("i2", Some("org-b"), "+1555"))
            .await
            .unwrap();
        let foreign = kit
            .resolve_participant(&room.id, &p.id, &IdentityId::from("i2"))
            .await;
        assert!(matches!(foreign, Err(RoomKitError::Invalid(_))));
        // Only the participant's join marker (decision D6) is stored.
        let count = kit
            .timeline(&room.id, TimelineQuery::default())
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event_type != EventType::ParticipantJoined)
            .count();
        assert_eq!(count, 0, "nothing was stored");
    }
}
