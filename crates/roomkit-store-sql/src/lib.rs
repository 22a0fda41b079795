//! Durable RoomKit stores (RFC §14): an embedded SQLite file for a single
//! process and a shared PostgreSQL database for several, with room locks that
//! work across processes (RFC §13.5) and cross-process fan-out of committed
//! events.
//!
//! [`open`] takes a URL and returns a [`SqlBackend`]: the store, the lock
//! manager that fits it, and [`SqlBackend::start_fanout`] for deployments
//! where several processes serve the same rooms.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = roomkit_store_sql::open("sqlite://data/roomkit.db").await?;
//! let kit = roomkit_core::RoomKit::builder()
//!     .store(backend.store.clone())
//!     .lock_manager(backend.locks.clone())
//!     .build()?;
//! let _fanout = backend.start_fanout(&kit);
//! # Ok(()) }
//! ```

mod codec;
mod error;
mod fanout;
mod leases;
mod lock;
mod store;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use roomkit_core::RoomKit;
use roomkit_core::lock::{InMemoryLockManager, RoomLockManager};
use roomkit_core::store::Store;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use error::SqlStoreError;
pub use fanout::FanoutHandle;
pub use leases::CallLeases;
pub use lock::PgLockManager;
pub use store::{PostgresStore, SqliteStore};

/// The SQLite schema migrations, oldest first.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../migrations/sqlite/0001_initial.sql"),
)];

/// The PostgreSQL schema migrations, oldest first (same versions as SQLite).
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../migrations/postgres/0001_initial.sql"),
)];

/// Tuning of [`open_with`]. The defaults suit a server process.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// Connections of the store's pool.
    pub max_connections: u32,
    /// PostgreSQL only: connections of the lock pool. Every room lock held
    /// by this process occupies one for the lock's tenure.
    pub lock_connections: u32,
    /// PostgreSQL only: keep the tables in this schema (created when
    /// missing) instead of the connection's default. Letters, digits and
    /// `_` only. Processes that should share rooms must use the same one.
    pub pg_schema: Option<String>,
    /// SQLite only: flush to disk on every commit (`synchronous=FULL`), so an
    /// acknowledged event survives a power cut and not only a crash. With
    /// `false` (`NORMAL`), a crash of the process still loses nothing.
    pub sqlite_full_sync: bool,
    /// How long to wait for a connection (and, in SQLite, for another
    /// process's write lock) before failing.
    pub acquire_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            lock_connections: 32,
            pg_schema: None,
            sqlite_full_sync: true,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// An opened SQL backend: the store and the lock manager that together make
/// a [`RoomKit`] safe for this database (RFC §13.5).
///
/// For SQLite, `store.is_shared()` is false and `locks` is an in-process
/// lock. For PostgreSQL, `store.is_shared()` is true and `locks` is a
/// [`PgLockManager`], whose locks are held by database sessions, so a
/// process that dies releases its locks with its connections.
pub struct SqlBackend {
    /// The conversation store.
    pub store: Arc<dyn Store>,
    /// The room lock manager for this store.
    pub locks: Arc<dyn RoomLockManager>,
    kind: Kind,
}

enum Kind {
    Sqlite(Arc<SqliteStore>),
    Postgres {
        store: Arc<PostgresStore>,
        channels: fanout::Channels,
        locks: Arc<PgLockManager>,
    },
}

impl std::fmt::Debug for SqlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlBackend")
            .field("backend", &self.store.backend_name())
            .finish_non_exhaustive()
    }
}

impl SqlBackend {
    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        self.store.backend_name()
    }

    /// Starts delivering events and framework events that other processes
    /// commit on this database to `kit`'s live subscribers (timeline
    /// subscribers such as WebSocket connections, framework event
    /// listeners), and sends `kit`'s own framework events to them.
    ///
    /// A no-op for SQLite (one process). For PostgreSQL it LISTENs on the
    /// database; every commit of the store NOTIFYs the event's id, which the
    /// other processes fetch. A process ignores its own notifications. Call
    /// it inside a tokio runtime; await [`FanoutHandle::ready`] when it
    /// matters that nothing committed from now on is missed.
    pub fn start_fanout(&self, kit: &RoomKit) -> FanoutHandle {
        match &self.kind {
            Kind::Sqlite(_) => FanoutHandle::inactive(),
            Kind::Postgres {
                store, channels, ..
            } => fanout::start(store.clone(), channels.clone(), kit.clone()),
        }
    }

    /// Call ownership leases for this database (see [`CallLeases`]):
    /// `None` for SQLite, which one process uses alone.
    ///
    /// # Errors
    /// When the lease table cannot be created.
    pub async fn call_leases(&self, ttl: Duration) -> Result<Option<CallLeases>, SqlStoreError> {
        match &self.kind {
            Kind::Sqlite(_) => Ok(None),
            Kind::Postgres { store, .. } => {
                Ok(Some(CallLeases::new(store.pool.clone(), ttl).await?))
            }
        }
    }

    /// Closes the database connections, waiting for running statements.
    /// Drop held room locks first: each keeps a connection, and closing
    /// waits for it.
    pub async fn close(&self) {
        match &self.kind {
            Kind::Sqlite(s) => s.close().await,
            Kind::Postgres { store, locks, .. } => {
                store.close().await;
                locks.close().await;
            }
        }
    }
}

/// Opens (creating and migrating when needed) the database named by `url`,
/// with default [`SqlOptions`].
///
/// Accepted URLs: `sqlite://PATH` and `sqlite:PATH` (the file and its
/// directory are created when missing; `sqlite:///abs/path.db` is absolute),
/// `postgres://...` and `postgresql://...`.
///
/// # Errors
/// [`SqlStoreError::BadUrl`] for an unsupported or malformed URL,
/// [`SqlStoreError::Connect`] when the database cannot be reached or
/// opened, [`SqlStoreError::Migration`] when the schema cannot be brought up
/// to date (for example a database written by a newer version).
pub async fn open(url: &str) -> Result<SqlBackend, SqlStoreError> {
    open_with(url, &SqlOptions::default()).await
}

/// [`open`] with explicit tuning.
///
/// # Errors
/// As [`open`].
pub async fn open_with(url: &str, options: &SqlOptions) -> Result<SqlBackend, SqlStoreError> {
    let bad = |reason: &str| SqlStoreError::BadUrl {
        url: error::redact(url),
        reason: reason.to_owned(),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let connect = PgConnectOptions::from_str(url).map_err(|e| bad(&e.to_string()))?;
        open_postgres(connect, options).await.map_err(|e| match e {
            SqlStoreError::BadUrl { reason, .. } => bad(&reason),
            other => other,
        })
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err(bad("no file path"));
        }
        if path == ":memory:" || path.starts_with(":memory:") {
            return Err(bad(
                "in-memory SQLite is not offered; use roomkit_core::store::MemoryStore",
            ));
        }
        open_sqlite(std::path::Path::new(path), options).await
    } else {
        Err(bad(
            "expected sqlite://PATH, sqlite:PATH, postgres://... or postgresql://...",
        ))
    }
}

fn migrator(list: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Whether a SQLite connection given back to the pool may be handed out
/// again: only when no transaction is left open on it.
///
/// A transaction whose `COMMIT` failed (`database or disk is full`) is
/// rolled back when it is dropped; the round trip here makes sure that
/// queued rollback has run. When it could not run (SQLite may already have
/// rolled the transaction back itself, and then refuses the `ROLLBACK`), the
/// driver still counts the transaction as open and every later `BEGIN` on
/// the connection would fail, so the connection is closed instead of going
/// back to the pool; the pool opens a fresh one when it is needed.
async fn reusable_after_release(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    conn.ping().await?;
    Ok(outside_transaction(conn))
}

/// False (and a warning) for a connection the driver counts as inside a
/// transaction: it must not be reused.
fn outside_transaction(conn: &sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        tracing::warn!(target: "roomkit.store.sql", "closing a connection left inside a failed transaction");
        return false;
    }
    true
}

async fn open_sqlite(
    path: &std::path::Path,
    options: &SqlOptions,
) -> Result<SqlBackend, SqlStoreError> {
    const BACKEND: &str = "sqlite";
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return Err(SqlStoreError::Connect {
            backend: BACKEND,
            source: sqlx::Error::Io(e),
        });
    }
    let connect = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(if options.sqlite_full_sync {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .foreign_keys(true)
        .busy_timeout(options.acquire_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .after_release(|conn, _| Box::pin(reusable_after_release(conn)))
        .before_acquire(|conn, _| Box::pin(async move { Ok(outside_transaction(conn)) }))
        .connect_with(connect)
        .await
        .map_err(|source| SqlStoreError::Connect {
            backend: BACKEND,
            source,
        })?;
    migrator(SQLITE_MIGRATIONS)
        .run(&pool)
        .await
        .map_err(|source| SqlStoreError::Migration {
            backend: BACKEND,
            source,
        })?;
    tracing::info!(target: "roomkit.store.sql", backend = BACKEND, path = %path.display(), "store opened");
    let store = Arc::new(SqliteStore::new(pool));
    Ok(SqlBackend {
        store: store.clone(),
        locks: Arc::new(InMemoryLockManager::new()),
        kind: Kind::Sqlite(store),
    })
}

async fn open_postgres(
    mut connect: PgConnectOptions,
    options: &SqlOptions,
) -> Result<SqlBackend, SqlStoreError> {
    const BACKEND: &str = "postgres";
    let connect_err = |source| SqlStoreError::Connect {
        backend: BACKEND,
        source,
    };
    if let Some(schema) = &options.pg_schema {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(SqlStoreError::BadUrl {
                url: String::new(),
                reason: format!("schema name {schema:?} must be letters, digits and _"),
            });
        }
        connect = connect.options([("search_path", schema.as_str())]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(2))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect.clone())
        .await
        .map_err(connect_err)?;
    if let Some(schema) = &options.pg_schema {
        // The name was checked above to be a plain identifier.
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&pool)
            .await
            .map_err(connect_err)?;
    }
    migrator(POSTGRES_MIGRATIONS)
        .run(&pool)
        .await
        .map_err(|source| SqlStoreError::Migration {
            backend: BACKEND,
            source,
        })?;
    let lock_pool = PgPoolOptions::new()
        .max_connections(options.lock_connections.max(1))
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(60)))
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy_with(connect);
    let channels = fanout::Channels::new(options.pg_schema.as_deref());
    let store = Arc::new(PostgresStore {
        pool,
        origin: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
        events_channel: channels.events.clone(),
    });
    tracing::info!(target: "roomkit.store.sql", backend = BACKEND, schema = options.pg_schema.as_deref().unwrap_or(""), "store opened");
    let locks = Arc::new(PgLockManager::new(lock_pool, options.pg_schema.as_deref()));
    Ok(SqlBackend {
        store: store.clone(),
        locks: locks.clone(),
        kind: Kind::Postgres {
            store,
            channels,
            locks,
        },
    })
}
