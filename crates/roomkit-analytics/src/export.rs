//! The exporter interface and what every exporter is handed: the spooled
//! call, its live progress, and the call's content assembled from the
//! spool (transcript, paired tool records, metrics).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{AnalyticsError, Result};
use crate::protocol::{MetricRecord, ToolRecord, TranscriptEntry};
use crate::spool::{CallFiles, CallMeta, EndInfo, SpoolRecord};

/// Where a call's recording stands.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Bytes of `audio.pcm` that readers can see.
    pub audio_bytes: u64,
    /// Set once the call is final.
    pub end: Option<EndInfo>,
}

/// A backend a call is exported to. One `export` runs per call and
/// exporter; it must be resumable from its progress log, because after a
/// crash it is run again for the same call.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// Short name, used for the progress log file and in logs.
    fn name(&self) -> &'static str;

    /// Exports one call: may start while the call is live and must return
    /// once the call is final and fully exported.
    ///
    /// # Errors
    /// When the backend could not be reached within the retry budget; the
    /// call then stays in the spool and is exported again on the next
    /// start. A [`AnalyticsError::CorruptSpool`] quarantines the call.
    async fn export(&self, call: CallFeed) -> Result<()>;
}

/// What an exporter gets for one call.
#[derive(Debug, Clone)]
pub struct CallFeed {
    pub(crate) files: CallFiles,
    pub(crate) meta: Arc<CallMeta>,
    pub(crate) progress: watch::Receiver<Progress>,
    pub(crate) cancel: CancellationToken,
}

impl CallFeed {
    /// A feed for a call that is already final (recovery, tests).
    pub fn finished(files: CallFiles, meta: CallMeta, end: EndInfo) -> Self {
        let (tx, rx) = watch::channel(Progress {
            audio_bytes: end.audio_bytes,
            end: Some(end),
        });
        drop(tx);
        Self {
            files,
            meta: Arc::new(meta),
            progress: rx,
            cancel: CancellationToken::new(),
        }
    }

    /// What the call started with.
    pub fn meta(&self) -> &CallMeta {
        &self.meta
    }

    /// The spooled files.
    pub fn files(&self) -> &CallFiles {
        &self.files
    }

    /// Where the recording stands now.
    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Cancelled when the service shuts down.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Waits for the progress to change.
    ///
    /// # Errors
    /// [`AnalyticsError::ShuttingDown`] on shutdown, or when the call's
    /// task ended without making the call final.
    pub async fn changed(&mut self) -> Result<()> {
        tokio::select! {
            r = self.progress.changed() => r.map_err(|_| AnalyticsError::ShuttingDown),
            () = self.cancel.cancelled() => Err(AnalyticsError::ShuttingDown),
        }
    }

    /// Waits until the call is final.
    ///
    /// # Errors
    /// As [`CallFeed::changed`].
    pub async fn wait_end(&mut self) -> Result<EndInfo> {
        loop {
            if let Some(end) = self.progress.borrow().end.clone() {
                return Ok(end);
            }
            self.changed().await?;
        }
    }

    /// The call's content, read from the spool.
    ///
    /// # Errors
    /// I/O errors or a corrupt records file.
    pub async fn content(&self) -> Result<CallContent> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || files.records().map(CallContent::from_records))
            .await
            .map_err(|e| AnalyticsError::Config(format!("reader task failed: {e}")))?
    }
}

/// How often an exporter tries a local write again while the disk is full.
const DISK_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a blocking local write (a progress log entry, a report file) until
/// it succeeds: while it fails for want of disk space it is tried again
/// every second, so an export pauses on a full disk instead of giving up,
/// and resumes by itself once space is freed.
///
/// # Errors
/// Any other failure, or [`AnalyticsError::ShuttingDown`] when the service
/// stops while the disk is still full.
pub(crate) async fn write_when_space<T, F>(feed: &CallFeed, what: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: Fn() -> Result<T> + Clone + Send + 'static,
{
    let mut waiting = false;
    loop {
        let attempt = f.clone();
        let result = tokio::task::spawn_blocking(attempt)
            .await
            .map_err(|e| AnalyticsError::Config(format!("blocking task failed: {e}")))?;
        match result {
            Err(e) if e.is_disk_full() => {
                if !waiting {
                    waiting = true;
                    tracing::warn!(target: "roomkit.analytics.export", call_id = %feed.meta.call_id, what, error = %e, "disk full; the export waits for space");
                }
            }
            other => {
                if waiting && other.is_ok() {
                    tracing::info!(target: "roomkit.analytics.export", call_id = %feed.meta.call_id, what, "disk space is back; the export continues");
                }
                return other;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(DISK_RETRY) => {}
            () = feed.cancel.cancelled() => return Err(AnalyticsError::ShuttingDown),
        }
    }
}

/// A call's content as it goes into call-ended and reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallContent {
    /// Transcript, in commit order.
    pub transcript: Vec<TranscriptEntry>,
    /// Tool records: each call immediately followed by its results, results
    /// whose call was never seen at the end.
    pub tool_calls: Vec<ToolRecord>,
    /// Metrics, in arrival order.
    pub metrics: Vec<MetricRecord>,
    /// Whether the agent spoke first, when known.
    pub agent_spoke_first: Option<bool>,
}

impl CallContent {
    /// Assembles the content from spool records.
    pub fn from_records(records: Vec<SpoolRecord>) -> Self {
        let mut out = Self::default();
        let mut tools = Vec::new();
        for r in records {
            match r {
                SpoolRecord::Transcript(t) => out.transcript.push(t),
                SpoolRecord::Tool(t) => tools.push(t),
                SpoolRecord::Metric(m) => out.metrics.push(m),
                SpoolRecord::FirstSpeaker(role) => {
                    if out.agent_spoke_first.is_none() {
                        out.agent_spoke_first = Some(role == "assistant");
                    }
                }
            }
        }
        out.tool_calls = pair_tool_records(tools);
        out
    }
}

/// Orders tool records so that every call is immediately followed by its
/// results (matched by `toolCallId`); results with no call come last.
pub fn pair_tool_records(records: Vec<ToolRecord>) -> Vec<ToolRecord> {
    let mut results: HashMap<String, Vec<ToolRecord>> = HashMap::new();
    let mut calls = Vec::new();
    let mut result_order = Vec::new();
    for r in records {
        match r {
            ToolRecord::ToolCall(_) => calls.push(r),
            ToolRecord::ToolResult(ref res) => {
                result_order.push(res.tool_call_id.clone());
                results.entry(res.tool_call_id.clone()).or_default().push(r);
            }
        }
    }
    let mut out = Vec::with_capacity(calls.len() * 2);
    for c in calls {
        let id = c.tool_call_id().to_owned();
        out.push(c);
        if let Some(rs) = results.remove(&id) {
            out.extend(rs);
        }
    }
    for id in result_order {
        if let Some(rs) = results.remove(&id) {
            out.extend(rs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ToolCallRecord, ToolResultRecord};

    fn call(id: &str) -> ToolRecord {
        ToolRecord::ToolCall(ToolCallRecord {
            tool_call_id: id.into(),
            name: "t".into(),
            arguments: "{}".into(),
            timestamp: String::new(),
            audio_offset_ms: None,
        })
    }
    fn res(id: &str) -> ToolRecord {
        ToolRecord::ToolResult(ToolResultRecord {
            tool_call_id: id.into(),
            content: "ok".into(),
            timestamp: String::new(),
            audio_offset_ms: None,
        })
    }

    #[test]
    fn results_follow_their_calls() {
        let got = pair_tool_records(vec![call("a"), call("b"), res("b"), res("z"), res("a")]);
        let ids: Vec<(&str, bool)> = got
            .iter()
            .map(|r| (r.tool_call_id(), matches!(r, ToolRecord::ToolCall(_))))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("a", true),
                ("a", false),
                ("b", true),
                ("b", false),
                ("z", false)
            ]
        );
    }
}
