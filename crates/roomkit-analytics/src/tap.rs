//! Audio taps: the small interface the audio pipeline's recorder feeds.
//!
//! A tap never blocks and never fails: it copies the samples into a
//! bounded queue and returns; when the queue is full the frame is dropped
//! and counted. Mixing and disk writes happen on the call's own task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// Which side of the call a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// What the user said (session input): the left channel.
    User,
    /// What the agent played (session output): the right channel.
    Agent,
}

impl Side {
    /// Channel index in the stereo recording.
    pub fn channel(self) -> usize {
        match self {
            Side::User => 0,
            Side::Agent => 1,
        }
    }
}

/// Something audio frames can be pushed into.
pub trait AudioTap: Send + Sync {
    /// Hands over mono 16-bit samples of `side` at `sample_rate`, the first
    /// of which plays at `media_time` on the call's media clock. Returns at
    /// once; never blocks and never fails. Frames pushed after the call was
    /// flushed, or while the queue is full, are dropped and counted.
    fn push(&self, side: Side, samples: &[i16], sample_rate: u32, media_time: Duration);
}

/// One queued frame.
#[derive(Debug)]
pub(crate) struct TapFrame {
    pub side: Side,
    pub sample_rate: u32,
    pub media_time: Duration,
    pub samples: Box<[i16]>,
}

/// The tap of one call.
#[derive(Debug, Clone)]
pub struct CallTap {
    pub(crate) tx: Option<mpsc::Sender<TapFrame>>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) closed: Arc<AtomicBool>,
    pub(crate) global_dropped: Arc<AtomicU64>,
}

impl CallTap {
    /// A tap that drops everything (analytics off for this call).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            closed: Arc::new(AtomicBool::new(true)),
            global_dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Frames of this call dropped so far because its queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AudioTap for CallTap {
    fn push(&self, side: Side, samples: &[i16], sample_rate: u32, media_time: Duration) {
        let Some(tx) = &self.tx else {
            return;
        };
        if samples.is_empty() || sample_rate == 0 || self.closed.load(Ordering::Acquire) {
            return;
        }
        let frame = TapFrame {
            side,
            sample_rate,
            media_time,
            samples: samples.into(),
        };
        if tx.try_send(frame).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.global_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
