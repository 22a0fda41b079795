//! The bridge from the audio pipeline's recorder to a call's taps: caller
//! frames go to the user side (left), agent frames to the agent side
//! (right), placed by their media-clock timestamps.

use std::time::Duration;

use roomkit_audio::{AudioFrame, RecordingSink};

use crate::observer::CallHandle;
use crate::tap::{AudioTap, Side};

/// A [`RecordingSink`] feeding one call's audio taps. Register it with
/// `AudioPipeline::add_recording_sink` for the call's stream.
///
/// A frame's `timestamp_ms` is on its stream's media clock, which starts
/// at the stream's first frame; `origin` is where that instant falls on the
/// call's media clock. Multi-channel frames are mixed down to mono.
#[derive(Debug, Clone)]
pub struct CallRecordingSink {
    call: CallHandle,
    origin: Duration,
}

impl CallRecordingSink {
    /// A sink whose stream starts at `origin` on the call's media clock.
    pub fn new(call: CallHandle, origin: Duration) -> Self {
        Self { call, origin }
    }

    /// The call fed.
    pub fn call(&self) -> &CallHandle {
        &self.call
    }

    /// Where the stream's media clock starts on the call's.
    pub fn origin(&self) -> Duration {
        self.origin
    }

    fn push(&self, side: Side, frame: &AudioFrame) {
        if !self.call.is_enabled() || frame.samples.is_empty() || frame.channels == 0 {
            return;
        }
        let at = match frame.timestamp_ms {
            Some(ms) if ms.is_finite() && ms >= 0.0 => {
                // Whole nanoseconds, rounded: 60 ms must not become 59.999….
                self.origin + Duration::from_nanos((ms * 1e6).round() as u64)
            }
            // Without a timestamp the frame ends now.
            _ => {
                let len = frame.samples.len() / usize::from(frame.channels);
                let secs = len as f64 / f64::from(frame.sample_rate.max(1));
                self.call
                    .media_clock()
                    .now()
                    .saturating_sub(Duration::from_secs_f64(secs))
            }
        };
        if frame.channels == 1 {
            self.call.push(side, &frame.samples, frame.sample_rate, at);
        } else {
            let ch = usize::from(frame.channels);
            let mono: Vec<i16> = frame
                .samples
                .chunks_exact(ch)
                .map(|f| {
                    let sum: i32 = f.iter().map(|&s| i32::from(s)).sum();
                    (sum / ch as i32) as i16
                })
                .collect();
            self.call.push(side, &mono, frame.sample_rate, at);
        }
    }
}

impl RecordingSink for CallRecordingSink {
    fn on_inbound(&self, _stream: &str, frame: &AudioFrame) {
        self.push(Side::User, frame);
    }

    fn on_outbound(&self, _stream: &str, frame: &AudioFrame) {
        self.push(Side::Agent, frame);
    }
}

impl CallHandle {
    /// A recording sink for an audio stream starting now on this call's
    /// media clock (see [`CallRecordingSink`]).
    pub fn recording_sink(&self) -> CallRecordingSink {
        CallRecordingSink::new(self.clone(), self.media_clock().now())
    }
}
