//! Room-level locking (RFC §13.5): everything that decides, indexes, commits
//! or plans delivery for a room runs under its lock.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use roomkit_model::RoomId;

/// A held room lock; dropping it releases the lock.
pub struct RoomLock {
    _guard: Box<dyn Send + Sync>,
}

impl RoomLock {
    /// Wraps whatever keeps a lock held until dropped.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self {
            _guard: Box::new(guard),
        }
    }

    /// Releases the lock (same as dropping it).
    pub fn release(self) {}
}

/// Failure to take a lock.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LockError(pub String);

/// Serializes processing per room.
#[async_trait]
pub trait RoomLockManager: Send + Sync + 'static {
    /// Waits for and takes the lock of a room.
    ///
    /// # Errors
    /// When a distributed lock backend cannot be reached.
    async fn acquire(&self, room_id: &RoomId) -> Result<RoomLock, LockError>;

    /// True when the lock coordinates several processes.
    fn is_distributed(&self) -> bool {
        false
    }

    /// Forgets a deleted room's lock state.
    fn forget(&self, _room_id: &RoomId) {}
}

/// Per-room async mutexes in this process.
#[derive(Default)]
pub struct InMemoryLockManager {
    locks: DashMap<RoomId, Arc<tokio::sync::Mutex<()>>>,
}

impl InMemoryLockManager {
    /// A lock manager with no locks yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RoomLockManager for InMemoryLockManager {
    async fn acquire(&self, room_id: &RoomId) -> Result<RoomLock, LockError> {
        let mutex = match self.locks.get(room_id) {
            Some(m) => m.clone(),
            None => self.locks.entry(room_id.clone()).or_default().clone(),
        };
        Ok(RoomLock::new(mutex.lock_owned().await))
    }

    fn forget(&self, room_id: &RoomId) {
        self.locks.remove(room_id);
    }
}
