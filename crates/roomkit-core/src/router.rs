//! Inbound room routing (RFC §10.4): which room a message without an
//! explicit room id belongs to.

use async_trait::async_trait;
use roomkit_model::{ChannelId, ChannelType, Map, ParticipantStatus, Room};

use crate::error::StoreError;
use crate::store::Store;

/// What the router is asked.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Channel the message arrived on.
    pub channel_id: &'a ChannelId,
    /// Its type.
    pub channel_type: &'a ChannelType,
    /// Sender address.
    pub sender_id: &'a str,
    /// Message metadata.
    pub metadata: &'a Map,
}

/// Picks the room of an inbound message; `None` creates a new room.
#[async_trait]
pub trait InboundRoomRouter: Send + Sync + 'static {
    /// Routes a message.
    ///
    /// # Errors
    /// Store failures.
    async fn route(
        &self,
        request: RouteRequest<'_>,
        store: &dyn Store,
    ) -> Result<Option<Room>, StoreError>;
}

/// The RFC's default strategy. It never guesses: whenever more than one
/// room matches a step, it answers `None` (decision D10). PAUSED rooms count
/// like ACTIVE ones (decision D9). Both steps read sorted store answers, so
/// the outcome does not depend on the backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultRouter;

#[async_trait]
impl InboundRoomRouter for DefaultRouter {
    async fn route(
        &self,
        request: RouteRequest<'_>,
        store: &dyn Store,
    ) -> Result<Option<Room>, StoreError> {
        let by_sender: Vec<Room> = store
            .rooms_with_participant_address(request.channel_type, request.sender_id)
            .await?
            .into_iter()
            .filter(|r| r.status.accepts_events())
            .collect();
        match by_sender.len() {
            1 => return Ok(by_sender.into_iter().next()),
            0 => {}
            _ => {
                tracing::info!(target: "roomkit.core.router", channel_id = %request.channel_id, candidates = by_sender.len(), "sender matches several rooms; creating a new one");
                return Ok(None);
            }
        }
        let bound: Vec<Room> = store
            .rooms_with_binding(request.channel_id)
            .await?
            .into_iter()
            .filter(|r| r.status.accepts_events())
            .collect();
        if bound.len() == 1 {
            return Ok(bound.into_iter().next());
        }
        Ok(None)
    }
}

/// The default strategy with its bound-room step held to the case §10.4
/// gives for it, a conversation where no one has spoken yet: a room bound
/// to the channel takes a new sender only while no other address has
/// written through that channel type in it. For channels shared by many
/// people (an SMS number, a mailbox), where the plain step would put a
/// second customer into the first one's room.
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
                tracing::info!(target: "roomkit.core.router", channel_id = %request.channel_id, candidates = n, "sender matches several rooms; creating a new one");
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
            tracing::info!(target: "roomkit.core.router", channel_id = %request.channel_id, room_id = %room.id, "the channel's room belongs to another sender; creating a new one");
            return Ok(None);
        }
        Ok(Some(room))
    }
}
