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

#![warn(missing_docs)]

pub mod clock;
pub mod error;
pub mod export;
#[cfg(feature = "fake-server")]
pub mod fake;
pub mod mixer;
mod observer;
pub mod protocol;
pub mod report;
pub mod retry;
pub mod roark;
pub mod secret;
pub mod spool;
pub mod tap;

pub use clock::MediaClock;
pub use error::{AnalyticsError, Result};
pub use export::{CallContent, CallFeed, Exporter, Progress};
pub use observer::{
    AnalyticsConfig, AnalyticsStats, CallAnalytics, CallHandle, ExportState, RecoveryReport, Role,
    SPEECH_END_MS, SPEECH_START_MS, StartCall, TranscriptInput,
};
pub use protocol::{MetricKind, MetricRecord};
pub use report::{CallReport, LocalReportExporter, ReportSummary};
pub use retry::RetryPolicy;
pub use roark::{RoarkConfig, RoarkExporter, RoarkStats};
pub use secret::ApiKey;
pub use tap::{AudioTap, CallTap, Side};
