//! Injected time and id sources, so tests can be deterministic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Duration, Utc};
use parking_lot::Mutex;
use roomkit_model::time::Timestamp;

/// Wall-clock time as the engine sees it.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }
}

/// A clock that only moves when told to (for tests of timers).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let by = Duration::from_std(by).unwrap_or(Duration::MAX);
        let mut now = self.0.lock();
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        *self.0.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock()
    }
}

/// Source of unique ids for events, rooms, tasks and the rest.
pub trait IdSource: Send + Sync + 'static {
    /// A new id starting with `prefix` (`"evt"`, `"room"`, ...).
    fn next_id(&self, prefix: &str) -> String;
}

/// Time-ordered random ids (UUID v7), e.g. `evt_0193...`.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidIds;

impl IdSource for UuidIds {
    fn next_id(&self, prefix: &str) -> String {
        let mut buf = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::now_v7().simple().encode_lower(&mut buf);
        let mut out = String::with_capacity(prefix.len() + 1 + id.len());
        out.push_str(prefix);
        out.push('_');
        out.push_str(id);
        out
    }
}

/// Sequential ids (`evt_1`, `evt_2`, ...) for deterministic tests.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdSource for SequentialIds {
    fn next_id(&self, prefix: &str) -> String {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{prefix}_{n}")
    }
}
