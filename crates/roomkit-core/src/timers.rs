//! Room timers (RFC §5.1): ACTIVE → PAUSED after inactivity, PAUSED →
//! CLOSED after a further wait. Driven by the injected clock, so tests can
//! move time by hand.

use std::time::Duration;

use roomkit_model::{Room, RoomStatus};

use crate::error::Result;
use crate::kit::RoomKit;

fn elapsed_secs(now: roomkit_model::time::Timestamp, since: roomkit_model::time::Timestamp) -> i64 {
    (now - since).num_seconds()
}

/// What a timer wants to do to a room now, if anything.
fn due(room: &Room, now: roomkit_model::time::Timestamp) -> Option<RoomStatus> {
    match room.status {
        RoomStatus::Active => {
            let after = room.timers.inactive_after_seconds?;
            let since = room.timers.last_activity_at.unwrap_or(room.created_at);
            (elapsed_secs(now, since) >= after as i64).then_some(RoomStatus::Paused)
        }
        RoomStatus::Paused => {
            let after = room.timers.closed_after_seconds?;
            let since = room.timers.paused_at.unwrap_or(room.updated_at);
            (elapsed_secs(now, since) >= after as i64).then_some(RoomStatus::Closed)
        }
        _ => None,
    }
}

impl RoomKit {
    /// Applies every timer transition that is due now; returns how many
    /// rooms changed. Each change re-checks the room under its lock, so a
    /// message committed meanwhile wins over the timer.
    ///
    /// # Errors
    /// Store failures.
    pub async fn tick_timers(&self) -> Result<usize> {
        let now = self.now();
        let mut changed = 0;
        for room in self.inner.store.list_timed_rooms().await? {
            if due(&room, now).is_none() {
                continue;
            }
            let lock = self.lock_room(&room.id).await?;
            let Some(fresh) = self.inner.store.get_room(&room.id).await? else {
                continue;
            };
            let Some(to) = due(&fresh, self.now()) else {
                continue;
            };
            let updated = self.apply_status(&fresh, to).await?;
            drop(lock);
            self.after_status_change(&updated, fresh.status);
            changed += 1;
        }
        Ok(changed)
    }

    /// Runs [`RoomKit::tick_timers`] every `resolution` until shutdown.
    pub fn start_timers(&self, resolution: Duration) {
        let kit = self.clone();
        let token = self.inner.shutdown.clone();
        self.spawn(async move {
            let mut interval = tokio::time::interval(resolution);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = interval.tick() => {
                        if let Err(e) = kit.tick_timers().await {
                            tracing::error!(target: "roomkit.core.framework", error = %e, "room timer pass failed");
                        }
                    }
                }
            }
        });
    }
}
