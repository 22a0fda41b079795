//! Call analytics for RoomKit: a call observer that collects a call's
//! transcript, tool calls, per-turn metrics and a sample-aligned stereo
//! recording (user left, agent right), a crash-safe local spool, and
//! exporters: Roark-compatible webhooks and chunk uploads, and local call
//! reports with a WAV file.
//!
//! The entry point is [`CallAnalytics`]: build it with exporters, call
//! [`CallAnalytics::recover`] once at start, [`CallAnalytics::attach`] it to
//! a kit, then [`CallAnalytics::start_call`] for each call and feed the
//! returned [`CallHandle`]'s audio tap. Nothing here can block or fail the
//! call: queues are bounded and drop with counters, and export failures
//! leave the call in the spool for the next start.
//!
//! Notes on wiring:
//! - [`CallAnalytics::observe_rooms`] makes every room a call by itself
//!   (first message starts it, pause/close/archive/delete ends it), under a
//!   [`RoomCallPolicy`] that room metadata can adjust or opt out of; this is
//!   what `roomkit serve` does with its `[analytics]` section.
//! - Tool calls come from the AI channel's `ai_tool_call` framework events
//!   and are exported paired with their results; `ai_turn_metrics` become
//!   `llm` metrics.
//! - Voice audio comes from the audio pipeline: register a
//!   [`CallRecordingSink`] (from [`CallHandle::recording_sink`]) with
//!   `AudioPipeline::add_recording_sink` for the call's stream; for a voice
//!   session, [`CallAnalytics::start_voice_call`] starts the call and
//!   returns the sink, and the session's `voice_transcript`,
//!   `voice_turn_metrics` and `voice_session_ended` events fill and end it.

#![warn(missing_docs)]

pub mod audio_sink;
pub mod clock;
pub mod error;
pub mod export;
#[cfg(feature = "fake-server")]
pub mod fake;
pub mod mixer;
mod observer;
pub mod ownership;
pub mod protocol;
pub mod report;
pub mod retry;
pub mod roark;
pub mod rooms;
pub mod secret;
pub mod spool;
pub mod spool_lock;
pub mod tap;

pub use audio_sink::CallRecordingSink;
pub use clock::MediaClock;
pub use error::{AnalyticsError, Result};
pub use export::{CallContent, CallFeed, Exporter, Progress};
pub use observer::{
    AnalyticsConfig, AnalyticsStats, CallAnalytics, CallHandle, ExportState, RecoveryReport, Role,
    SPEECH_END_MS, SPEECH_START_MS, StartCall, TranscriptInput, VOICE_END_REASON, VOICE_SESSION_ID,
    VOICE_TAKEOVER_REASON,
};
pub use ownership::CallOwnership;
pub use protocol::{MetricKind, MetricRecord};
pub use report::{CallReport, LocalReportExporter, ReportSummary};
pub use retry::RetryPolicy;
pub use roark::{RoarkConfig, RoarkExporter, RoarkStats};
pub use rooms::{DEFAULT_IDLE_TIMEOUT, ROOM_METADATA_KEY, RoomCallPolicy};
pub use secret::ApiKey;
pub use spool_lock::SpoolLock;
pub use tap::{AudioTap, CallTap, Side};
