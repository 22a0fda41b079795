//! A room lock manager for several processes sharing one PostgreSQL
//! database (RFC §13.5).
//!
//! A lock is a transaction-scoped advisory lock (`pg_advisory_xact_lock`)
//! on a hash of the room id, held by an open transaction on a small task of
//! its own. Dropping the [`RoomLock`] guard tells that task to roll back,
//! which releases the lock; a process that dies loses its sessions, and
//! PostgreSQL releases their locks with them. Waiters of the same process
//! queue on an in-process mutex first, so a process spends at most one
//! database connection per contended room.

use async_trait::async_trait;
use roomkit_core::lock::{InMemoryLockManager, LockError, RoomLock, RoomLockManager};
use roomkit_model::RoomId;
use sqlx::PgPool;
use tokio::sync::oneshot;

/// Distributed room locks on PostgreSQL advisory locks.
pub struct PgLockManager {
    pool: PgPool,
    local: InMemoryLockManager,
    namespace: String,
}

impl PgLockManager {
    /// A lock manager using connections of `pool`, which should be a pool
    /// of its own: each held lock keeps one connection. `schema` scopes the
    /// locks like the tables: advisory locks are database-wide, and
    /// deployments in different schemas must not wait for each other.
    pub fn new(pool: PgPool, schema: Option<&str>) -> Self {
        Self {
            pool,
            local: InMemoryLockManager::new(),
            namespace: format!("roomkit.room:{}:", schema.unwrap_or("")),
        }
    }

    /// Closes the lock connections (held locks are released).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What a held lock keeps alive: the signal that ends the holding task
/// (dropped first) and the in-process lock.
struct Held {
    _release: oneshot::Sender<()>,
    _local: RoomLock,
}

fn unreachable_db(e: &sqlx::Error) -> LockError {
    tracing::warn!(target: "roomkit.store.sql.lock", error = %e, "room lock database unavailable");
    LockError(format!("cannot take the room lock in the database: {e}"))
}

/// Holds the advisory lock in a transaction of its own task until the guard
/// is dropped (or the waiting caller gives up), then rolls back at once,
/// which releases it without waiting for the connection's next use.
async fn hold(
    pool: PgPool,
    key: String,
    acquired: oneshot::Sender<Result<(), LockError>>,
    release: oneshot::Receiver<()>,
) {
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let _ = acquired.send(Err(unreachable_db(&e)));
            return;
        }
    };
    // A 64-bit hash computed by the server, so every process and every
    // client library derives the same key.
    if let Err(e) = sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(&key)
        .execute(&mut *tx)
        .await
    {
        let _ = acquired.send(Err(unreachable_db(&e)));
        return;
    }
    if acquired.send(Ok(())).is_ok() {
        // Either the guard sends or it is dropped: both end the tenure.
        let _ = release.await;
    }
    if let Err(e) = tx.rollback().await {
        // The connection is broken; PostgreSQL ends its session and with
        // it the lock.
        tracing::warn!(target: "roomkit.store.sql.lock", error = %e, "room lock release failed");
    }
}

#[async_trait]
impl RoomLockManager for PgLockManager {
    async fn acquire(&self, room_id: &RoomId) -> Result<RoomLock, LockError> {
        let local = self.local.acquire(room_id).await?;
        let (acquired_tx, acquired) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        tokio::spawn(hold(
            self.pool.clone(),
            format!("{}{room_id}", self.namespace),
            acquired_tx,
            release_rx,
        ));
        // Cancel safety: if this future is dropped while waiting, the
        // holding task finds nobody to hand the lock to and releases it.
        match acquired.await {
            Ok(Ok(())) => Ok(RoomLock::new(Held {
                _release: release,
                _local: local,
            })),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LockError("the room lock task ended unexpectedly".into())),
        }
    }

    fn is_distributed(&self) -> bool {
        true
    }

    fn forget(&self, room_id: &RoomId) {
        self.local.forget(room_id);
    }
}
