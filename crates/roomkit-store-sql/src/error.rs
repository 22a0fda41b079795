//! Errors of opening a SQL store, and how database failures map onto the
//! core's [`StoreError`].

use roomkit_core::StoreError;

/// Why a SQL backend could not be opened or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlStoreError {
    /// The URL names no supported database or cannot be parsed.
    #[error("bad database URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given, with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot connect to the {backend} database: {source}")]
    Connect {
        /// `"sqlite"` or `"postgres"`.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Bringing the schema up to date failed.
    #[error("migrating the {backend} schema failed: {source}")]
    Migration {
        /// `"sqlite"` or `"postgres"`.
        backend: &'static str,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Starting the cross-process fan-out failed.
    #[error("cannot start event fan-out: {0}")]
    Fanout(String),
    /// A call lease query failed.
    #[error("call lease query failed: {0}")]
    Lease(#[source] sqlx::Error),
}

impl SqlStoreError {
    /// True when trying again later may succeed (the database was not
    /// reachable), false for configuration mistakes.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Fanout(_))
    }
}

/// Which uniqueness rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// `(room_id, idx)` of events.
    RoomIndex,
    /// `(room_id, idempotency_key)` of events.
    RoomKey,
    /// Any other unique or primary key.
    Unique,
    /// A referenced row (usually the room) does not exist.
    MissingParent,
}

/// Classifies a constraint violation. PostgreSQL names the constraint;
/// SQLite names the columns in its message, so both are looked at.
pub(crate) fn violation(err: &sqlx::Error) -> Option<Violation> {
    let db = err.as_database_error()?;
    let text = match db.constraint() {
        Some(c) => c.to_owned(),
        None => db.message().to_owned(),
    };
    match db.kind() {
        sqlx::error::ErrorKind::UniqueViolation => Some(if text.contains("idempotency_key") {
            Violation::RoomKey
        } else if text.contains("_idx") || text.contains(".idx") {
            Violation::RoomIndex
        } else {
            Violation::Unique
        }),
        sqlx::error::ErrorKind::ForeignKeyViolation => Some(Violation::MissingParent),
        _ => None,
    }
}

/// A driver failure that is not a constraint violation: the backend itself
/// failed (connection lost, disk full, bad data).
///
/// A full disk is told apart in the message (the answer to a client is the
/// same retryable backend error): nothing was written, and writes succeed
/// again by themselves once space is freed.
pub(crate) fn backend(err: sqlx::Error) -> StoreError {
    if is_disk_full(&err) {
        tracing::error!(target: "roomkit.store.sql", error = %err, "database disk is full; writes fail until space is freed");
        return StoreError::Backend(format!(
            "disk full: {err}; nothing was written, retry once space is freed"
        ));
    }
    tracing::warn!(target: "roomkit.store.sql", error = %err, "database operation failed");
    StoreError::Backend(err.to_string())
}

/// SQLite's `SQLITE_FULL` (13) or PostgreSQL's `disk_full` (53100).
pub(crate) fn is_disk_full(err: &sqlx::Error) -> bool {
    let Some(db) = err.as_database_error() else {
        return false;
    };
    matches!(db.code().as_deref(), Some("13" | "53100")) || db.message().contains("disk is full")
}

/// Stored data that does not decode (a corrupted or foreign row).
pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    tracing::error!(target: "roomkit.store.sql", what, error = %err, "stored row does not decode");
    StoreError::Backend(format!("stored {what} does not decode: {err}"))
}

/// Removes a password from a URL before it is shown in an error.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
    }
}
