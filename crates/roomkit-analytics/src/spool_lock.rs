//! An exclusive, process-lifetime lock on a spool directory, so that a
//! second process pointed at the same spool refuses to start instead of
//! recovering (ending and exporting) the calls the first one is still
//! writing.
//!
//! The lock is an operating-system file lock on `<spool>/lock`, released by
//! the system when the holder exits, however it exits; the file also holds
//! the holder's process id, for the refusal message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{AnalyticsError, Result};

/// Name of the lock file inside the spool directory.
pub const LOCK_FILE: &str = "lock";

/// A held spool lock; dropping it releases the lock.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
    path: PathBuf,
}

impl SpoolLock {
    /// Creates the spool directory when missing and locks it for this
    /// process.
    ///
    /// # Errors
    /// [`AnalyticsError::SpoolLocked`] when another process (or another
    /// lock in this one) holds it; [`AnalyticsError::Spool`] when the
    /// directory or the lock file cannot be created.
    pub fn acquire(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| AnalyticsError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| AnalyticsError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(AnalyticsError::SpoolLocked {
                    dir: dir.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(AnalyticsError::io(&path, e)),
        }
        // Ours now: record who holds it.
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all());
        if let Err(e) = written {
            tracing::warn!(target: "roomkit.analytics.spool", path = %path.display(), error = %e, "cannot record the process id in the spool lock");
        }
        tracing::info!(target: "roomkit.analytics.spool", path = %path.display(), "spool locked");
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = std::env::temp_dir().join(format!(
            "roomkit-spool-lock-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let first = SpoolLock::acquire(&dir).unwrap();
        match SpoolLock::acquire(&dir) {
            Err(AnalyticsError::SpoolLocked { dir: d, holder }) => {
                assert_eq!(d, dir);
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected SpoolLocked, got {other:?}"),
        }
        drop(first);
        let again = SpoolLock::acquire(&dir).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
