//! The SQL implementations of the core's `Store` trait: one body of SQL,
//! instantiated for SQLite and for PostgreSQL.
//!
//! Both backends share the schema design and the statements (written with
//! `$n` parameters, which both understand). The few places where the dialects
//! differ are arguments of the `sql_store!` macro (row locks, substring
//! search) or small methods of each store type (how a write transaction
//! begins, what happens right before a commit).
//!
//! The commit point (RFC §10.1 step 12) is one transaction that first moves
//! the room's counters with a compare-and-set on `event_count`, so the
//! statement that claims an index is the one that proves it free, then
//! applies the optional target update and inserts the event. The schema's
//! own `UNIQUE (room_id, idx)` and `UNIQUE (room_id, idempotency_key)` back
//! this up against any writer that bypasses the counters.

use std::sync::Arc;

use roomkit_core::StoreError;
use roomkit_core::store::StoreResult;
use roomkit_model::{
    ChannelBinding, EventStatus, Identity, Observation, Participant, Room, RoomEvent, RoomId, Task,
};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::codec;
use crate::error::{Violation, backend, violation};

/// The columns every room read selects, in [`RoomRow`] order.
macro_rules! room_cols {
    () => {
        "data, event_count, latest_index, last_activity_ns"
    };
}

/// A room as selected: document plus the counters kept in columns.
type RoomRow = (String, i64, Option<i64>, Option<i64>);

fn room_from_row((data, count, latest, activity): RoomRow) -> StoreResult<Room> {
    let mut room: Room = codec::read("room", &data)?;
    room.event_count = codec::to_u64(count)?;
    room.latest_index = latest.map(codec::to_u64).transpose()?;
    room.timers.last_activity_at = activity.map(codec::from_nanos);
    Ok(room)
}

fn rooms_from_rows(rows: Vec<RoomRow>) -> StoreResult<Vec<Room>> {
    rows.into_iter().map(room_from_row).collect()
}

fn event_from_data(data: &str) -> StoreResult<Arc<RoomEvent>> {
    codec::read::<RoomEvent>("event", data).map(Arc::new)
}

fn events_from_rows(rows: Vec<(String,)>) -> StoreResult<Vec<Arc<RoomEvent>>> {
    rows.iter().map(|(d,)| event_from_data(d)).collect()
}

fn docs<T: serde::de::DeserializeOwned>(what: &str, rows: Vec<(String,)>) -> StoreResult<Vec<T>> {
    rows.iter().map(|(d,)| codec::read(what, d)).collect()
}

fn conflict(kind: &'static str, id: impl ToString) -> StoreError {
    StoreError::Conflict {
        kind,
        id: id.to_string(),
    }
}

/// The embedded store: one SQLite file in WAL mode.
///
/// Writers of this process go through one gate before they open a write
/// transaction, so they queue in memory instead of polling SQLite's busy
/// handler; writers of other processes are serialised by SQLite's own file
/// lock.
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    gate: tokio::sync::Mutex<()>,
}

impl SqliteStore {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// Closes the connections (waits for running statements).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn shared(&self) -> bool {
        false
    }

    async fn gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.gate.lock().await)
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        // IMMEDIATE takes the write lock up front, so a transaction never has
        // to upgrade a read lock (which SQLite may refuse with SQLITE_BUSY).
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn announce(
        &self,
        _tx: &mut Transaction<'static, Sqlite>,
        _event: &RoomEvent,
    ) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// The shared store: a PostgreSQL database that several processes use at
/// once. Each commit also queues a notification (delivered by PostgreSQL
/// only if the transaction commits) that the fan-out of other processes
/// listens to.
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    pub(crate) origin: Arc<str>,
    pub(crate) events_channel: Arc<str>,
}

impl PostgresStore {
    /// Closes the connections (waits for running statements).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn shared(&self) -> bool {
        true
    }

    async fn gate(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    async fn announce(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &RoomEvent,
    ) -> Result<(), sqlx::Error> {
        let payload = crate::fanout::event_payload(&self.origin, event);
        if payload.len() >= crate::fanout::MAX_PAYLOAD {
            tracing::warn!(target: "roomkit.store.sql", event_id = %event.id, "event ids too long to announce; other processes will not see this event live");
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&*self.events_channel)
            .bind(payload)
            .execute(&mut **tx)
            .await
            .map(|_| ())
    }
}

macro_rules! sql_store {
    ($store:ident, backend = $backend:literal, lock_row = $lock_row:literal, instr = $instr:literal) => {
        impl $store {
            async fn room_counters(&self, id: &RoomId) -> StoreResult<Option<i64>> {
                sqlx::query_as::<_, (i64,)>("SELECT event_count FROM rooms WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map(|r| r.map(|(c,)| c))
                    .map_err(backend)
            }

            async fn rooms_where_in(
                &self,
                sql: &'static str,
                a: &str,
                b: Option<&str>,
            ) -> StoreResult<Vec<Room>> {
                let mut q = sqlx::query_as::<_, RoomRow>(sql).bind(a);
                if let Some(b) = b {
                    q = q.bind(b);
                }
                rooms_from_rows(q.fetch_all(&self.pool).await.map_err(backend)?)
            }
        }

        #[async_trait::async_trait]
        impl roomkit_core::store::Store for $store {
            fn backend_name(&self) -> &'static str {
                $backend
            }

            fn is_shared(&self) -> bool {
                self.shared()
            }

            // ---- rooms

            async fn create_room(&self, room: Room) -> StoreResult<Room> {
                let data = codec::room(&room)?;
                let latest = room.latest_index.map(codec::to_i64).transpose()?;
                let _gate = self.gate().await;
                let result = sqlx::query(
                    "INSERT INTO rooms (id, organization_id, status, created_ns, timed, event_count, latest_index, last_activity_ns, data) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(room.id.as_str())
                .bind(room.organization_id.as_deref())
                .bind(codec::name(&room.status))
                .bind(codec::nanos(&room.created_at))
                .bind(i64::from(room.timers.is_configured()))
                .bind(codec::to_i64(room.event_count)?)
                .bind(latest)
                .bind(room.timers.last_activity_at.as_ref().map(codec::nanos))
                .bind(data)
                .execute(&self.pool)
                .await;
                match result {
                    Ok(_) => Ok(room),
                    Err(e) if violation(&e) == Some(Violation::Unique) => {
                        Err(conflict("room", &room.id))
                    }
                    Err(e) => Err(backend(e)),
                }
            }

            async fn get_room(&self, id: &RoomId) -> StoreResult<Option<Room>> {
                sqlx::query_as::<_, RoomRow>(concat!("SELECT ", room_cols!(), " FROM rooms WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?
                    .map(room_from_row)
                    .transpose()
            }

            async fn update_room(
                &self,
                id: &RoomId,
                patch: &roomkit_core::store::RoomPatch,
            ) -> StoreResult<Room> {
                let _gate = self.gate().await;
                let mut tx = self.begin_write().await.map_err(backend)?;
                let row = sqlx::query_as::<_, RoomRow>(concat!(
                    "SELECT ", room_cols!(), " FROM rooms WHERE id = $1", $lock_row
                ))
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
                let Some(row) = row else {
                    return Err(StoreError::not_found("room", id));
                };
                let mut room = room_from_row(row)?;
                patch.apply(&mut room);
                sqlx::query("UPDATE rooms SET status = $1, timed = $2, data = $3 WHERE id = $4")
                    .bind(codec::name(&room.status))
                    .bind(i64::from(room.timers.is_configured()))
                    .bind(codec::room(&room)?)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(room)
            }

            async fn delete_room(&self, id: &RoomId) -> StoreResult<bool> {
                // Events, bindings, participants, tasks and observations go
                // with the room (ON DELETE CASCADE).
                let _gate = self.gate().await;
                let done = sqlx::query("DELETE FROM rooms WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_rooms(
                &self,
                query: &roomkit_core::store::RoomQuery,
            ) -> StoreResult<Vec<Room>> {
                let rows = sqlx::query_as::<_, RoomRow>(concat!(
                    "SELECT ", room_cols!(), " FROM rooms \
                     WHERE ($1 IS NULL OR organization_id = $1) AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id > $3) \
                     ORDER BY id LIMIT $4"
                ))
                .bind(query.organization_id.as_deref())
                .bind(query.status.as_ref().map(codec::name))
                .bind(query.after.as_ref().map(RoomId::as_str))
                .bind(codec::limit(query.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                rooms_from_rows(rows)
            }

            async fn find_latest_room(
                &self,
                query: &roomkit_core::store::RoomQuery,
            ) -> StoreResult<Option<Room>> {
                sqlx::query_as::<_, RoomRow>(concat!(
                    "SELECT ", room_cols!(), " FROM rooms \
                     WHERE ($1 IS NULL OR organization_id = $1) AND ($2 IS NULL OR status = $2) \
                     ORDER BY created_ns DESC, id DESC LIMIT 1"
                ))
                .bind(query.organization_id.as_deref())
                .bind(query.status.as_ref().map(codec::name))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
                .map(room_from_row)
                .transpose()
            }

            async fn list_timed_rooms(&self) -> StoreResult<Vec<Room>> {
                let rows = sqlx::query_as::<_, RoomRow>(concat!(
                    "SELECT ", room_cols!(), " FROM rooms \
                     WHERE timed = 1 AND status IN ('active', 'paused') ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                rooms_from_rows(rows)
            }

            // ---- events

            async fn add_event(
                &self,
                event: RoomEvent,
                target: Option<roomkit_core::store::TargetUpdate>,
            ) -> StoreResult<Arc<RoomEvent>> {
                let index = codec::to_i64(event.index)?;
                let data = codec::event(&event)?;
                let activity = (event.status == EventStatus::Delivered)
                    .then(|| codec::nanos(&event.created_at));
                let _gate = self.gate().await;
                let mut tx = self.begin_write().await.map_err(backend)?;

                // Claim the index: only a room whose event_count is exactly
                // this index moves, and in PostgreSQL the row stays locked
                // until commit, so no other writer can claim it meanwhile.
                let claimed = sqlx::query(
                    "UPDATE rooms SET event_count = $1 + 1, latest_index = $1, \
                     last_activity_ns = COALESCE($2, last_activity_ns) \
                     WHERE id = $3 AND event_count = $1",
                )
                .bind(index)
                .bind(activity)
                .bind(event.room_id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
                if claimed == 0 {
                    drop(tx);
                    return Err(match self.room_counters(&event.room_id).await? {
                        None => StoreError::not_found("room", &event.room_id),
                        Some(count) => StoreError::IndexConflict {
                            room_id: event.room_id.clone(),
                            index: event.index,
                            expected: codec::to_u64(count)?,
                        },
                    });
                }

                if let Some(t) = &target {
                    let row = sqlx::query_as::<_, (String,)>(concat!(
                        "SELECT data FROM events WHERE id = $1 AND room_id = $2", $lock_row
                    ))
                    .bind(t.event_id.as_str())
                    .bind(event.room_id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
                    let Some((old,)) = row else {
                        return Err(StoreError::not_found("event", &t.event_id));
                    };
                    let mut updated: RoomEvent = codec::read("event", &old)?;
                    t.patch.apply(&mut updated);
                    sqlx::query("UPDATE events SET data = $1, source_channel_id = $2 WHERE id = $3")
                        .bind(codec::event(&updated)?)
                        .bind(updated.source.channel_id.as_str())
                        .bind(t.event_id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                }

                let inserted = sqlx::query(
                    "INSERT INTO events (id, room_id, idx, idempotency_key, source_channel_id, status, visibility, data) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(event.id.as_str())
                .bind(event.room_id.as_str())
                .bind(index)
                .bind(event.idempotency_key.as_deref())
                .bind(event.source.channel_id.as_str())
                .bind(codec::name(&event.status))
                .bind(event.visibility.to_string())
                .bind(data)
                .execute(&mut *tx)
                .await;
                if let Err(e) = inserted {
                    drop(tx);
                    return Err(match violation(&e) {
                        Some(Violation::RoomKey) => StoreError::DuplicateKey {
                            room_id: event.room_id.clone(),
                            key: event.idempotency_key.clone().unwrap_or_default(),
                        },
                        Some(Violation::RoomIndex) => StoreError::IndexConflict {
                            room_id: event.room_id.clone(),
                            index: event.index,
                            expected: match self.room_counters(&event.room_id).await? {
                                Some(c) => codec::to_u64(c)?,
                                None => event.index,
                            },
                        },
                        Some(Violation::Unique) => conflict("event", &event.id),
                        Some(Violation::MissingParent) => {
                            StoreError::not_found("room", &event.room_id)
                        }
                        None => backend(e),
                    });
                }
                self.announce(&mut tx, &event).await.map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                tracing::trace!(target: "roomkit.store.sql", room_id = %event.room_id, index = event.index, "event committed");
                Ok(Arc::new(event))
            }

            async fn get_event(
                &self,
                id: &roomkit_model::EventId,
            ) -> StoreResult<Option<Arc<RoomEvent>>> {
                sqlx::query_as::<_, (String,)>("SELECT data FROM events WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?
                    .map(|(d,)| event_from_data(&d))
                    .transpose()
            }

            async fn find_event_by_idempotency_key(
                &self,
                room_id: &RoomId,
                key: &str,
            ) -> StoreResult<Option<Arc<RoomEvent>>> {
                sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM events WHERE room_id = $1 AND idempotency_key = $2",
                )
                .bind(room_id.as_str())
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
                .map(|(d,)| event_from_data(&d))
                .transpose()
            }

            async fn list_events(
                &self,
                room_id: &RoomId,
                query: &roomkit_core::store::EventQuery,
            ) -> StoreResult<Vec<Arc<RoomEvent>>> {
                // The reader filter of RFC §7.5 rule 8, in SQL: own events
                // always; others when not blocked and the stored visibility
                // is `all`, the reader's category, or a list naming it.
                macro_rules! filtered {
                    () => {
                        "FROM events WHERE room_id = $1 AND idx > $2 AND idx < $3 \
                         AND ($4 IS NULL OR source_channel_id = $4 OR (status <> 'blocked' AND ( \
                             visibility = 'all' OR visibility = $5 \
                             OR (visibility NOT IN ('all', 'none', 'transport', 'intelligence') \
                                 AND "
                    };
                }
                let after = query.after_index.map(codec::to_i64).transpose()?.unwrap_or(-1);
                let before = query
                    .before_index
                    .map(codec::to_i64)
                    .transpose()?
                    .unwrap_or(i64::MAX);
                let reader = query.reader.as_ref().map(|r| r.channel_id.as_str());
                let category = query.reader.as_ref().map(|r| codec::name(&r.category));
                let rows = match query.last {
                    None => sqlx::query_as::<_, (String,)>(concat!(
                        "SELECT data ", filtered!(), $instr,
                        "(',' || visibility || ',', ',' || $4 || ',') > 0)))) ORDER BY idx LIMIT $6"
                    ))
                    .bind(room_id.as_str())
                    .bind(after)
                    .bind(before)
                    .bind(reader)
                    .bind(category)
                    .bind(codec::limit(query.limit))
                    .fetch_all(&self.pool)
                    .await,
                    Some(last) => sqlx::query_as::<_, (String,)>(concat!(
                        "SELECT data FROM (SELECT data, idx ", filtered!(), $instr,
                        "(',' || visibility || ',', ',' || $4 || ',') > 0)))) ORDER BY idx DESC LIMIT $6) AS newest \
                         ORDER BY idx LIMIT $7"
                    ))
                    .bind(room_id.as_str())
                    .bind(after)
                    .bind(before)
                    .bind(reader)
                    .bind(category)
                    .bind(codec::limit(Some(last)))
                    .bind(codec::limit(query.limit))
                    .fetch_all(&self.pool)
                    .await,
                };
                let rows = rows.map_err(backend)?;
                // An empty page is the only case where a missing room could
                // hide; look only then, so paging costs one query.
                if rows.is_empty() && self.room_counters(room_id).await?.is_none() {
                    return Err(StoreError::not_found("room", room_id));
                }
                events_from_rows(rows)
            }

            async fn update_event(
                &self,
                id: &roomkit_model::EventId,
                patch: &roomkit_core::store::EventPatch,
            ) -> StoreResult<Arc<RoomEvent>> {
                let _gate = self.gate().await;
                let mut tx = self.begin_write().await.map_err(backend)?;
                let row = sqlx::query_as::<_, (String,)>(concat!(
                    "SELECT data FROM events WHERE id = $1", $lock_row
                ))
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
                let Some((old,)) = row else {
                    return Err(StoreError::not_found("event", id));
                };
                let mut updated: RoomEvent = codec::read("event", &old)?;
                patch.apply(&mut updated);
                sqlx::query("UPDATE events SET data = $1, source_channel_id = $2 WHERE id = $3")
                    .bind(codec::event(&updated)?)
                    .bind(updated.source.channel_id.as_str())
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                tx.commit().await.map_err(backend)?;
                Ok(Arc::new(updated))
            }

            async fn delete_events(
                &self,
                room_id: &RoomId,
                ids: &[roomkit_model::EventId],
            ) -> StoreResult<Vec<roomkit_model::EventId>> {
                let _gate = self.gate().await;
                let mut tx = self.begin_write().await.map_err(backend)?;
                let mut deleted = Vec::new();
                for id in ids {
                    let done = sqlx::query("DELETE FROM events WHERE id = $1 AND room_id = $2")
                        .bind(id.as_str())
                        .bind(room_id.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    if done.rows_affected() > 0 {
                        deleted.push(id.clone());
                    }
                }
                tx.commit().await.map_err(backend)?;
                Ok(deleted)
            }

            // ---- bindings

            async fn create_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding> {
                let data = codec::binding(&binding)?;
                let _gate = self.gate().await;
                let result = sqlx::query(
                    "INSERT INTO bindings (room_id, channel_id, data) VALUES ($1, $2, $3)",
                )
                .bind(binding.room_id.as_str())
                .bind(binding.channel_id.as_str())
                .bind(data)
                .execute(&self.pool)
                .await;
                match result {
                    Ok(_) => Ok(binding),
                    Err(e) => Err(match violation(&e) {
                        Some(Violation::MissingParent) => {
                            StoreError::not_found("room", &binding.room_id)
                        }
                        Some(_) => conflict(
                            "binding",
                            format!("{}/{}", binding.room_id, binding.channel_id),
                        ),
                        None => backend(e),
                    }),
                }
            }

            async fn get_binding(
                &self,
                room_id: &RoomId,
                channel_id: &roomkit_model::ChannelId,
            ) -> StoreResult<Option<ChannelBinding>> {
                sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM bindings WHERE room_id = $1 AND channel_id = $2",
                )
                .bind(room_id.as_str())
                .bind(channel_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
                .map(|(d,)| codec::read("binding", &d))
                .transpose()
            }

            async fn update_binding(&self, binding: ChannelBinding) -> StoreResult<ChannelBinding> {
                let data = codec::binding(&binding)?;
                let _gate = self.gate().await;
                let done = sqlx::query(
                    "UPDATE bindings SET data = $1 WHERE room_id = $2 AND channel_id = $3",
                )
                .bind(data)
                .bind(binding.room_id.as_str())
                .bind(binding.channel_id.as_str())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::not_found("binding", &binding.channel_id));
                }
                Ok(binding)
            }

            async fn delete_binding(
                &self,
                room_id: &RoomId,
                channel_id: &roomkit_model::ChannelId,
            ) -> StoreResult<bool> {
                let _gate = self.gate().await;
                let done = sqlx::query("DELETE FROM bindings WHERE room_id = $1 AND channel_id = $2")
                    .bind(room_id.as_str())
                    .bind(channel_id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_bindings(&self, room_id: &RoomId) -> StoreResult<Vec<ChannelBinding>> {
                let rows = sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM bindings WHERE room_id = $1 ORDER BY seq",
                )
                .bind(room_id.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                docs("binding", rows)
            }

            async fn rooms_with_binding(
                &self,
                channel_id: &roomkit_model::ChannelId,
            ) -> StoreResult<Vec<Room>> {
                self.rooms_where_in(
                    concat!(
                        "SELECT ", room_cols!(), " FROM rooms WHERE id IN \
                         (SELECT room_id FROM bindings WHERE channel_id = $1) ORDER BY id"
                    ),
                    channel_id.as_str(),
                    None,
                )
                .await
            }

            // ---- participants

            async fn create_participant(&self, participant: Participant) -> StoreResult<Participant> {
                let data = codec::participant(&participant)?;
                let _gate = self.gate().await;
                let result = sqlx::query(
                    "INSERT INTO participants (room_id, id, channel_type, address, data) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(participant.room_id.as_str())
                .bind(participant.id.as_str())
                .bind(participant.channel_type.as_ref().map(|t| t.as_str()))
                .bind(participant.address.as_deref())
                .bind(data)
                .execute(&self.pool)
                .await;
                match result {
                    Ok(_) => Ok(participant),
                    Err(e) => Err(match violation(&e) {
                        Some(Violation::MissingParent) => {
                            StoreError::not_found("room", &participant.room_id)
                        }
                        Some(_) => conflict("participant", &participant.id),
                        None => backend(e),
                    }),
                }
            }

            async fn get_participant(
                &self,
                room_id: &RoomId,
                id: &roomkit_model::ParticipantId,
            ) -> StoreResult<Option<Participant>> {
                sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM participants WHERE room_id = $1 AND id = $2",
                )
                .bind(room_id.as_str())
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
                .map(|(d,)| codec::read("participant", &d))
                .transpose()
            }

            async fn update_participant(&self, participant: Participant) -> StoreResult<Participant> {
                let data = codec::participant(&participant)?;
                let _gate = self.gate().await;
                let done = sqlx::query(
                    "UPDATE participants SET channel_type = $1, address = $2, data = $3 WHERE room_id = $4 AND id = $5",
                )
                .bind(participant.channel_type.as_ref().map(|t| t.as_str()))
                .bind(participant.address.as_deref())
                .bind(data)
                .bind(participant.room_id.as_str())
                .bind(participant.id.as_str())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::not_found("participant", &participant.id));
                }
                Ok(participant)
            }

            async fn delete_participant(
                &self,
                room_id: &RoomId,
                id: &roomkit_model::ParticipantId,
            ) -> StoreResult<bool> {
                let _gate = self.gate().await;
                let done = sqlx::query("DELETE FROM participants WHERE room_id = $1 AND id = $2")
                    .bind(room_id.as_str())
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_participants(&self, room_id: &RoomId) -> StoreResult<Vec<Participant>> {
                let rows = sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM participants WHERE room_id = $1 ORDER BY seq",
                )
                .bind(room_id.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                docs("participant", rows)
            }

            async fn find_participant_by_address(
                &self,
                room_id: &RoomId,
                channel_type: &roomkit_model::ChannelType,
                address: &str,
            ) -> StoreResult<Option<Participant>> {
                sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM participants WHERE room_id = $1 AND channel_type = $2 AND address = $3 \
                     ORDER BY seq LIMIT 1",
                )
                .bind(room_id.as_str())
                .bind(channel_type.as_str())
                .bind(address)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
                .map(|(d,)| codec::read("participant", &d))
                .transpose()
            }

            async fn rooms_with_participant_address(
                &self,
                channel_type: &roomkit_model::ChannelType,
                address: &str,
            ) -> StoreResult<Vec<Room>> {
                self.rooms_where_in(
                    concat!(
                        "SELECT ", room_cols!(), " FROM rooms WHERE id IN \
                         (SELECT room_id FROM participants WHERE channel_type = $1 AND address = $2) ORDER BY id"
                    ),
                    channel_type.as_str(),
                    Some(address),
                )
                .await
            }

            // ---- identities

            async fn store_identity(&self, identity: Identity) -> StoreResult<Identity> {
                let data = codec::identity(&identity)?;
                let _gate = self.gate().await;
                let mut tx = self.begin_write().await.map_err(backend)?;
                sqlx::query(
                    "INSERT INTO identities (id, organization_id, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET organization_id = excluded.organization_id, data = excluded.data",
                )
                .bind(identity.id.as_str())
                .bind(identity.organization_id.as_deref())
                .bind(data)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
                sqlx::query("DELETE FROM identity_addresses WHERE identity_id = $1")
                    .bind(identity.id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                for (channel_type, addresses) in &identity.channel_addresses {
                    for address in addresses {
                        sqlx::query(
                            "INSERT INTO identity_addresses (identity_id, channel_type, address, organization_id) \
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(identity.id.as_str())
                        .bind(channel_type.as_str())
                        .bind(address.as_str())
                        .bind(identity.organization_id.as_deref())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    }
                }
                tx.commit().await.map_err(backend)?;
                Ok(identity)
            }

            async fn get_identity(
                &self,
                id: &roomkit_model::IdentityId,
            ) -> StoreResult<Option<Identity>> {
                sqlx::query_as::<_, (String,)>("SELECT data FROM identities WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?
                    .map(|(d,)| codec::read("identity", &d))
                    .transpose()
            }

            async fn resolve_by_address(
                &self,
                channel_type: &roomkit_model::ChannelType,
                address: &str,
                organization_id: Option<&str>,
            ) -> StoreResult<Option<Identity>> {
                // Tenants never see each other's identities: no organization
                // matches only identities without one.
                sqlx::query_as::<_, (String,)>(
                    "SELECT i.data FROM identities i WHERE i.id IN ( \
                         SELECT a.identity_id FROM identity_addresses a \
                         WHERE a.channel_type = $1 AND a.address = $2 \
                         AND (a.organization_id = $3 OR (a.organization_id IS NULL AND $3 IS NULL))) \
                     ORDER BY i.id LIMIT 1",
                )
                .bind(channel_type.as_str())
                .bind(address)
                .bind(organization_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?
                .map(|(d,)| codec::read("identity", &d))
                .transpose()
            }

            // ---- tasks and observations

            async fn create_task(&self, task: Task) -> StoreResult<Task> {
                let data = codec::task(&task)?;
                let _gate = self.gate().await;
                let result = sqlx::query(
                    "INSERT INTO tasks (id, room_id, status, data) VALUES ($1, $2, $3, $4)",
                )
                .bind(task.id.as_str())
                .bind(task.room_id.as_str())
                .bind(codec::name(&task.status))
                .bind(data)
                .execute(&self.pool)
                .await;
                match result {
                    Ok(_) => Ok(task),
                    Err(e) => Err(match violation(&e) {
                        Some(Violation::MissingParent) => StoreError::not_found("room", &task.room_id),
                        Some(_) => conflict("task", &task.id),
                        None => backend(e),
                    }),
                }
            }

            async fn get_task(&self, id: &roomkit_model::TaskId) -> StoreResult<Option<Task>> {
                sqlx::query_as::<_, (String,)>("SELECT data FROM tasks WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(backend)?
                    .map(|(d,)| codec::read("task", &d))
                    .transpose()
            }

            async fn update_task(&self, task: Task) -> StoreResult<Task> {
                let data = codec::task(&task)?;
                let _gate = self.gate().await;
                let done = sqlx::query("UPDATE tasks SET status = $1, data = $2 WHERE id = $3")
                    .bind(codec::name(&task.status))
                    .bind(data)
                    .bind(task.id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::not_found("task", &task.id));
                }
                Ok(task)
            }

            async fn list_tasks(
                &self,
                room_id: &RoomId,
                query: &roomkit_core::store::TaskQuery,
            ) -> StoreResult<Vec<Task>> {
                let rows = sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM tasks WHERE room_id = $1 AND ($2 IS NULL OR status = $2) ORDER BY seq",
                )
                .bind(room_id.as_str())
                .bind(query.status.as_ref().map(codec::name))
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                docs("task", rows)
            }

            async fn create_observation(&self, observation: Observation) -> StoreResult<Observation> {
                let data = codec::observation(&observation)?;
                let _gate = self.gate().await;
                let result = sqlx::query("INSERT INTO observations (room_id, data) VALUES ($1, $2)")
                    .bind(observation.room_id.as_str())
                    .bind(data)
                    .execute(&self.pool)
                    .await;
                match result {
                    Ok(_) => Ok(observation),
                    Err(e) => Err(match violation(&e) {
                        Some(Violation::MissingParent) => {
                            StoreError::not_found("room", &observation.room_id)
                        }
                        _ => backend(e),
                    }),
                }
            }

            async fn list_observations(&self, room_id: &RoomId) -> StoreResult<Vec<Observation>> {
                let rows = sqlx::query_as::<_, (String,)>(
                    "SELECT data FROM observations WHERE room_id = $1 ORDER BY seq",
                )
                .bind(room_id.as_str())
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
                docs("observation", rows)
            }
        }
    };
}

sql_store!(
    SqliteStore,
    backend = "sqlite",
    lock_row = "",
    instr = "instr"
);
sql_store!(
    PostgresStore,
    backend = "postgres",
    lock_row = " FOR UPDATE",
    instr = "strpos"
);
