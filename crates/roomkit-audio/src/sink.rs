//! Recording sinks: frames the recorder sees, handed to someone else as
//! they pass (call analytics taps, live monitors), without any file.
//!
//! A sink is registered per stream on the pipeline. It receives the same
//! frames as the WAV recorder, at the same points: caller audio after the
//! inbound resampler, agent audio after post-processing, both in the
//! internal format with their `timestamp_ms` on the stream's media clock.
//! Sinks are called on the audio thread: they must return at once (copy
//! into a bounded queue and go), never block and never fail.

use std::sync::Arc;

use crate::AudioFrame;

/// Receives the frames of one recorded stream.
pub trait RecordingSink: Send + Sync {
    /// A caller frame (what the user said).
    fn on_inbound(&self, stream: &str, frame: &AudioFrame);
    /// An agent frame (what the caller heard).
    fn on_outbound(&self, stream: &str, frame: &AudioFrame);
}

/// The sinks registered per stream.
#[derive(Default, Clone)]
pub struct RecordingSinks {
    sinks: Vec<(String, Arc<dyn RecordingSink>)>,
}

impl std::fmt::Debug for RecordingSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSinks")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl RecordingSinks {
    /// Adds a sink for `stream` (a stream may have several).
    pub fn add(&mut self, stream: &str, sink: Arc<dyn RecordingSink>) {
        self.sinks.push((stream.to_owned(), sink));
    }

    /// Removes every sink of `stream`; returns how many there were.
    pub fn remove(&mut self, stream: &str) -> usize {
        let before = self.sinks.len();
        self.sinks.retain(|(s, _)| s != stream);
        before - self.sinks.len()
    }

    /// Whether no sink is registered.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hands a caller frame of `stream` to its sinks.
    pub fn inbound(&self, stream: &str, frame: &AudioFrame) {
        for (s, sink) in &self.sinks {
            if s == stream {
                sink.on_inbound(stream, frame);
            }
        }
    }

    /// Hands an agent frame of `stream` to its sinks.
    pub fn outbound(&self, stream: &str, frame: &AudioFrame) {
        for (s, sink) in &self.sinks {
            if s == stream {
                sink.on_outbound(stream, frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl RecordingSink for Log {
        fn on_inbound(&self, stream: &str, frame: &AudioFrame) {
            self.0
                .lock()
                .unwrap()
                .push(format!("in:{stream}:{}", frame.samples.len()));
        }
        fn on_outbound(&self, stream: &str, frame: &AudioFrame) {
            self.0
                .lock()
                .unwrap()
                .push(format!("out:{stream}:{}", frame.samples.len()));
        }
    }

    #[test]
    fn frames_reach_only_their_stream_sinks() {
        let log = Arc::new(Log::default());
        let mut sinks = RecordingSinks::default();
        sinks.add("a", log.clone());
        let frame = AudioFrame::new(vec![0; 160], 16_000, 1).unwrap();
        sinks.inbound("a", &frame);
        sinks.outbound("b", &frame);
        sinks.outbound("a", &frame);
        assert_eq!(*log.0.lock().unwrap(), vec!["in:a:160", "out:a:160"]);
        assert_eq!(sinks.remove("a"), 1);
        assert!(sinks.is_empty());
        sinks.inbound("a", &frame);
        assert_eq!(log.0.lock().unwrap().len(), 2);
    }
}
