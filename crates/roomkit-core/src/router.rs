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
        match room_of_sender(&request, store).await? {
            SenderRooms::One(room) => Ok(Some(room)),
            SenderRooms::Several => Ok(None),
            SenderRooms::None => only_bound_room(&request, store).await,
        }
    }
}

/// What step 1 found: the rooms accepting events where this sender already
/// has a participant on this channel type.
enum SenderRooms {
    None,
    One(Room),
    Several,
}

/// Step 1 of both strategies. Several matches are logged: the message then
/// gets a new room rather than a guess.
async fn room_of_sender(
    request: &RouteRequest<'_>,
    store: &dyn Store,
) -> Result<SenderRooms, StoreError> {
    let mut rooms: Vec<Room> = store
        .rooms_with_participant_address(request.channel_type, request.sender_id)
        .await?
        .into_iter()
        .filter(|r| r.status.accepts_events())
        .collect();
    Ok(match rooms.len() {
        0 => SenderRooms::None,
        1 => rooms.pop().map_or(SenderRooms::None, SenderRooms::One),
        n => {
            tracing::info!(target: "roomkit.core.router", channel_id = %request.channel_id, candidates = n, "sender matches several rooms; creating a new one");
            SenderRooms::Several
        }
    })
}

/// Step 3 of both strategies: the one room accepting events that the
/// channel is bound to, if exactly one is.
async fn only_bound_room(
    request: &RouteRequest<'_>,
    store: &dyn Store,
) -> Result<Option<Room>, StoreError> {
    let mut bound: Vec<Room> = store
        .rooms_with_binding(request.channel_id)
        .await?
        .into_iter()
        .filter(|r| r.status.accepts_events())
        .collect();
    Ok(if bound.len() == 1 { bound.pop() } else { None })
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
        match room_of_sender(&request, store).await? {
            SenderRooms::One(room) => return Ok(Some(room)),
            SenderRooms::Several => return Ok(None),
            SenderRooms::None => {}
        }
        // Step 3: the one room bound to the channel, while nobody else has
        // spoken through this channel type there.
        let Some(room) = only_bound_room(&request, store).await? else {
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
