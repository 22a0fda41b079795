//! Room routing for provider webhooks (RFC §10.4): the default strategy
//! with its third step held to the case the RFC gives for it, a channel
//! dedicated to one conversation in which no one has spoken yet.
//!
//! An SMS number or a mailbox is shared by every customer who writes to it.
//! With the plain default, a room that once bound the number would take the
//! messages of every new sender, and replies there would go to its first
//! sender: a durable disclosure. Here the bound room is used only while no
//! other address has spoken through that channel type in it.

use async_trait::async_trait;
use roomkit_core::StoreError;
use roomkit_core::model::{ParticipantStatus, Room};
use roomkit_core::router::{InboundRoomRouter, RouteRequest};
use roomkit_core::store::Store;

/// The routing strategy of `roomkit serve`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConversationRouter;

#[async_trait]
impl InboundRoomRouter for ConversationRouter {
    async fn route(
        &self,
        request: RouteRequest<'_>,
        store: &dyn Store,
    ) -> Result<Option<Room>, StoreError> {
        // Step 1: the one room where this sender already talks.
        let mut by_sender: Vec<Room> = store
            .rooms_with_participant_address(request.channel_type, request.sender_id)
            .await?
            .into_iter()
            .filter(|r| r.status.accepts_events())
            .collect();
        match by_sender.len() {
            1 => return Ok(by_sender.pop()),
            0 => {}
            n => {
                tracing::info!(target: "roomkit.server.routing", channel_id = %request.channel_id, candidates = n, "sender matches several rooms; creating a new one");
                return Ok(None);
            }
        }
        // Step 3: the one room bound to the channel, while nobody else has
        // spoken through this channel type there.
        let mut bound: Vec<Room> = store
            .rooms_with_binding(request.channel_id)
            .await?
            .into_iter()
            .filter(|r| r.status.accepts_events())
            .collect();
        if bound.len() != 1 {
            return Ok(None);
        }
        let Some(room) = bound.pop() else {
            return Ok(None);
        };
        let taken = store
            .list_participants(&room.id)
            .await?
            .into_iter()
            .any(|p| {
                p.status == ParticipantStatus::Active
                    && p.channel_type.as_ref() == Some(request.channel_type)
                    && p.address.as_deref().is_some_and(|a| a != request.sender_id)
            });
        if taken {
            tracing::info!(target: "roomkit.server.routing", channel_id = %request.channel_id, room_id = %room.id, "the channel's room belongs to another sender; creating a new one");
            return Ok(None);
        }
        Ok(Some(room))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use roomkit_core::model::{ChannelId, ChannelType, Map, RoomId};
    use roomkit_core::store::MemoryStore;
    use roomkit_core::{AddParticipant, AttachOptions, CreateRoom, RoomKit};

    use super::*;

    async fn route(kit: &RoomKit, channel: &str, sender: &str) -> Option<RoomId> {
        let channel_id = ChannelId::from(channel);
        let meta = Map::new();
        ConversationRouter
            .route(
                RouteRequest {
                    channel_id: &channel_id,
                    channel_type: &ChannelType::Sms,
                    sender_id: sender,
                    metadata: &meta,
                },
                kit.store().as_ref(),
            )
            .await
            .unwrap()
            .map(|r| r.id)
    }

    #[tokio::test]
    async fn a_bound_room_takes_its_first_sender_only() {
        let config = roomkit_channels::sms::twilio::TwilioConfig::new(
            "AC1",
            roomkit_channels::Secret::new("t"),
        );
        let sms = roomkit_channels::sms::SmsChannel::new(
            "sms",
            "+1000",
            Arc::new(roomkit_channels::sms::twilio::TwilioSms::new(config)),
        );
        let kit = RoomKit::builder()
            .store(Arc::new(MemoryStore::new()))
            .channel(Arc::new(sms))
            .build()
            .unwrap();
        let room = kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
        kit.attach_channel(&room.id, &ChannelId::from("sms"), AttachOptions::default())
            .await
            .unwrap();
        // Nobody has spoken: the bound room takes the first sender.
        assert_eq!(route(&kit, "sms", "+1555").await, Some(room.id.clone()));
        let p = AddParticipant {
            channel_id: Some(ChannelId::from("sms")),
            address: Some("+1555".into()),
            ..AddParticipant::default()
        };
        kit.add_participant(&room.id, p).await.unwrap();
        // The sender keeps it; anyone else gets a new room.
        assert_eq!(route(&kit, "sms", "+1555").await, Some(room.id));
        assert_eq!(route(&kit, "sms", "+1666").await, None);
    }
}
