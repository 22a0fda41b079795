//! The media clock of a call: one timeline that the recording, transcript
//! offsets, tool calls and metrics all refer to.
//!
//! Time zero is the call's start, which is also recording sample 0. Audio
//! taps say where their samples sit on this timeline (`media_time`), so the
//! two channels line up to the sample whatever the scheduling jitter of the
//! tasks that feed them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A call's media clock. Cheap to clone.
#[derive(Debug, Clone, Copy)]
pub struct MediaClock {
    anchor_wall: DateTime<Utc>,
    anchor: Instant,
}

impl MediaClock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            anchor_wall: Utc::now(),
            anchor: Instant::now(),
        }
    }

    /// A clock whose zero was at `anchor_wall` (used when a call is
    /// resumed from the spool; `now` then counts from the wall clock).
    pub fn resumed(anchor_wall: DateTime<Utc>) -> Self {
        let behind = (Utc::now() - anchor_wall).to_std().unwrap_or_default();
        let now = Instant::now();
        Self {
            anchor_wall,
            anchor: now.checked_sub(behind).unwrap_or(now),
        }
    }

    /// Wall time of media time zero.
    pub fn anchor_wall(&self) -> DateTime<Utc> {
        self.anchor_wall
    }

    /// Media time now.
    pub fn now(&self) -> Duration {
        self.anchor.elapsed()
    }

    /// Wall time of a media time.
    pub fn wall_at(&self, media: Duration) -> DateTime<Utc> {
        self.anchor_wall + chrono::Duration::from_std(media).unwrap_or(chrono::Duration::MAX)
    }

    /// Media time of a wall time, clamped at zero.
    pub fn media_of(&self, wall: DateTime<Utc>) -> Duration {
        (wall - self.anchor_wall).to_std().unwrap_or_default()
    }
}

/// Milliseconds of a media time, as the protocol's offsets count them.
pub fn offset_ms(media: Duration) -> u64 {
    u64::try_from(media.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn media_time_follows_the_runtime_clock() {
        let c = MediaClock::start();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(offset_ms(c.now()), 1500);
        let wall = c.wall_at(Duration::from_millis(250));
        assert_eq!(c.media_of(wall), Duration::from_millis(250));
        assert_eq!(
            c.media_of(c.anchor_wall() - chrono::Duration::seconds(3)),
            Duration::ZERO
        );
    }
}
