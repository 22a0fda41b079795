//! Call ownership across processes: when several server processes share
//! one store, each sees every room, and only the one holding a room's
//! lease may observe (and so export) its call. The store provides the
//! leases; this crate only asks.

use async_trait::async_trait;
use roomkit_model::RoomId;

/// Decides which process observes a room's call.
#[async_trait]
pub trait CallOwnership: Send + Sync {
    /// True when this process holds (or has just taken) the room's lease
    /// and may start its call. A process that cannot tell (the database is
    /// unreachable) answers false: a call missed is better than one
    /// exported twice.
    async fn claim(&self, room_id: &RoomId) -> bool;
}
