//! Call ownership leases on PostgreSQL: with several server processes on
//! one database, each call (one per room at a time) is observed and
//! exported by exactly one of them, the holder of the room's lease.
//!
//! A lease is a row `(room_id, owner, expires_at)` in `call_owners`. A
//! process claims a room by inserting the row, or by taking it over when
//! it has expired; it renews all its leases periodically, so a lease
//! outlives its holder by at most the lease time. SQLite is one process,
//! so it needs no leases.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::error::SqlStoreError;

/// The leases of one process on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct CallLeases {
    pool: PgPool,
    owner: Arc<str>,
    ttl: Duration,
}

impl CallLeases {
    pub(crate) async fn new(pool: PgPool, ttl: Duration) -> Result<Self, SqlStoreError> {
        // Two processes creating the table at once can collide on the
        // catalog; a transaction-scoped advisory lock serialises them.
        let mut tx = pool.begin().await.map_err(SqlStoreError::Lease)?;
        sqlx::query("SELECT pg_advisory_xact_lock(7259001)")
            .execute(&mut *tx)
            .await
            .map_err(SqlStoreError::Lease)?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS call_owners (
                room_id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )",
        )
        .execute(&mut *tx)
        .await
        .map_err(SqlStoreError::Lease)?;
        tx.commit().await.map_err(SqlStoreError::Lease)?;
        Ok(Self {
            pool,
            owner: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            ttl,
        })
    }

    /// This process's owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The lease time.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims `room_id` for this process: true when it holds the lease now
    /// (it was free, expired, or already its own, and is renewed).
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn claim(&self, room_id: &str) -> Result<bool, SqlStoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "INSERT INTO call_owners (room_id, owner, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (room_id) DO UPDATE
                SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
                WHERE call_owners.owner = EXCLUDED.owner OR call_owners.expires_at < now()
             RETURNING owner",
        )
        .bind(room_id)
        .bind(&*self.owner)
        .bind(self.ttl_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(SqlStoreError::Lease)?;
        Ok(row.is_some())
    }

    /// Renews every lease this process holds.
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn renew(&self) -> Result<u64, SqlStoreError> {
        let done = sqlx::query(
            "UPDATE call_owners SET expires_at = now() + $2 * interval '1 millisecond'
             WHERE owner = $1",
        )
        .bind(&*self.owner)
        .bind(self.ttl_ms())
        .execute(&self.pool)
        .await
        .map_err(SqlStoreError::Lease)?;
        Ok(done.rows_affected())
    }

    /// Gives up this process's lease on `room_id` (its call ended).
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn release(&self, room_id: &str) -> Result<(), SqlStoreError> {
        sqlx::query("DELETE FROM call_owners WHERE room_id = $1 AND owner = $2")
            .bind(room_id)
            .bind(&*self.owner)
            .execute(&self.pool)
            .await
            .map_err(SqlStoreError::Lease)?;
        Ok(())
    }
}
