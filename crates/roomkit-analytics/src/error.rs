//! The crate's error type, classified so callers know what a retry can fix.

use std::path::PathBuf;

/// What went wrong in call analytics. None of these ever reaches the call
/// itself: the observer logs and counts them, exporters retry or park.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyticsError {
    /// The request never got an answer: connection refused, reset, timed
    /// out.
    #[error("{exporter} {operation}: transport error: {source}")]
    Transport {
        /// Exporter name.
        exporter: &'static str,
        /// What was being sent (`call-started`, `presign`, `put`, ...).
        operation: &'static str,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The backend answered with an error status.
    #[error("{exporter} {operation}: HTTP {status}")]
    Status {
        /// Exporter name.
        exporter: &'static str,
        /// What was being sent.
        operation: &'static str,
        /// The status code.
        status: u16,
    },
    /// The backend's answer could not be understood.
    #[error("{exporter} {operation}: bad reply: {reason}")]
    BadReply {
        /// Exporter name.
        exporter: &'static str,
        /// What was being sent.
        operation: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A file of the spool could not be read or written.
    #[error("spool I/O on {path}: {source}")]
    Spool {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A spool file holds something that cannot be parsed; the call's
    /// directory is moved to quarantine.
    #[error("corrupt spool file {path}: {reason}")]
    CorruptSpool {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A WAV file could not be written.
    #[error("cannot write recording {path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: hound::Error,
    },
    /// A call id that cannot name a spool directory.
    #[error("invalid call id {0:?}: use 1 to 128 of A-Z a-z 0-9 _ . -")]
    InvalidCallId(String),
    /// Bad configuration.
    #[error("analytics configuration: {0}")]
    Config(String),
    /// The export gave up after its retry budget; the call stays in the
    /// spool and is tried again on the next start.
    #[error("{exporter}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Exporter name.
        exporter: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: Box<AnalyticsError>,
    },
    /// The analytics service is shutting down.
    #[error("analytics is shutting down")]
    ShuttingDown,
    /// Another process holds the spool directory's lock: it is running on
    /// the same spool.
    #[error("the call spool {} is in use by another process{}; stop it or give this one another spool directory", dir.display(), holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    SpoolLocked {
        /// The spool directory.
        dir: PathBuf,
        /// The holder's process id, when it could be read.
        holder: Option<u32>,
    },
}

impl AnalyticsError {
    /// Whether trying the same thing again may succeed: transport errors,
    /// 5xx, 408 and 429 answers and unreadable replies are; other 4xx
    /// answers, bad configuration and corrupt files are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::BadReply { .. } | Self::Spool { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::GaveUp { last, .. } => last.is_retryable(),
            Self::CorruptSpool { .. }
            | Self::Encode { .. }
            | Self::Wav { .. }
            | Self::InvalidCallId(_)
            | Self::Config(_)
            | Self::ShuttingDown
            | Self::SpoolLocked { .. } => false,
        }
    }

    /// Whether this is a write that failed for want of space (`ENOSPC`,
    /// `EDQUOT`): it succeeds again once space is freed, so spool writes
    /// are kept and retried instead of given up.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            Self::Spool { source, .. } => source,
            Self::Wav {
                source: hound::Error::IoError(source),
                ..
            } => source,
            Self::GaveUp { last, .. } => return last.is_disk_full(),
            _ => return false,
        };
        matches!(io.raw_os_error(), Some(28 | 122))
            || matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Spool {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = AnalyticsError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let s = |status| AnalyticsError::Status {
            exporter: "roark",
            operation: "presign",
            status,
        };
        assert!(s(500).is_retryable());
        assert!(s(503).is_retryable());
        assert!(s(429).is_retryable());
        assert!(s(408).is_retryable());
        assert!(!s(400).is_retryable());
        assert!(!s(401).is_retryable());
        assert!(!AnalyticsError::InvalidCallId("x/y".into()).is_retryable());
    }
}
