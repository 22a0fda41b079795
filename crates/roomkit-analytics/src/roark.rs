//! The Roark exporter: `call-started`, chunked stereo PCM uploads (presign,
//! then a PUT with no auth header), and `call-ended` once every chunk is
//! settled, each with retries and backoff, resumable from the spool.
//!
//! Where the reference client misbehaves (protocol notes §12) this one does
//! not: webhook events are retried like chunks, a chunk that keeps failing
//! keeps its index and parks the call instead of leaving a gap, tool
//! results are always paired (see [`crate::export::pair_tool_records`]) and
//! the audio tail is always uploaded.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::{AnalyticsError, Result};
use crate::export::{CallFeed, Exporter, write_when_space};
use crate::protocol::{
    API_KEY_HEADER, BASE_URL_ENV, CHUNK_BYTES, CHUNK_UPLOAD_PATH, CallEnded, DEFAULT_BASE_URL,
    KILL_SWITCH_ENV, PCM_CONTENT_TYPE, PresignRequest, WEBHOOK_PATH, kill_switch_value_disables,
    parse_presign_reply,
};
use crate::retry::RetryPolicy;
use crate::secret::ApiKey;

const TARGET: &str = "roomkit.analytics.roark";
const NAME: &str = "roark";

/// Settings of the Roark exporter.
#[derive(Debug, Clone)]
pub struct RoarkConfig {
    /// API key (sent in `x-roark-api-key` and as a Bearer token, never on
    /// the PUT).
    pub api_key: ApiKey,
    /// API root, without a trailing slash.
    pub base_url: String,
    /// Limit of each webhook and presign request.
    pub request_timeout: Duration,
    /// Limit of each chunk PUT.
    pub put_timeout: Duration,
    /// Retries of every request.
    pub retry: RetryPolicy,
    /// Chunk uploads in flight across all calls (bounds memory: one chunk
    /// each).
    pub max_concurrent_uploads: usize,
    /// Chunk uploads in flight for one call.
    pub uploads_per_call: usize,
}

impl RoarkConfig {
    /// Settings with `base_url` taken verbatim and the protocol's timeouts
    /// (30 s requests, 10 s PUTs).
    pub fn new(api_key: ApiKey, base_url: impl Into<String>) -> Self {
        Self {
            api_key,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            request_timeout: Duration::from_secs(30),
            put_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_concurrent_uploads: 8,
            uploads_per_call: 2,
        }
    }

    /// The base URL to use: `ROARK_BASE_URL` when set, else the configured
    /// one, else `https://api.roark.ai`.
    pub fn resolve_base_url(
        configured: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> String {
        env(BASE_URL_ENV)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| {
                configured
                    .filter(|v| !v.trim().is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned())
            .trim()
            .to_owned()
    }
}

/// Counters of the exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoarkStats {
    /// Requests sent (webhooks, presigns, PUTs).
    pub requests: u64,
    /// Requests that got no answer.
    pub transport_errors: u64,
    /// Requests answered with an error status.
    pub status_errors: u64,
    /// Retries made.
    pub retries: u64,
    /// Chunks uploaded.
    pub chunks_uploaded: u64,
    /// call-started events accepted.
    pub calls_started: u64,
    /// call-ended events accepted.
    pub calls_ended: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    transport_errors: AtomicU64,
    status_errors: AtomicU64,
    retries: AtomicU64,
    chunks_uploaded: AtomicU64,
    calls_started: AtomicU64,
    calls_ended: AtomicU64,
}

/// The largest reply body read from the backend (a presign answer is a few
/// hundred bytes).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Reads at most `limit` bytes of a reply, chunk by chunk; a longer reply
/// is a bad reply and the rest is not read.
async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    let too_large = || AnalyticsError::BadReply {
        exporter: NAME,
        operation: "presign",
        reason: format!("the reply is larger than {limit} bytes"),
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| AnalyticsError::Transport {
            exporter: NAME,
            operation: "presign",
            source: e.without_url(),
        })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
}

/// The Roark exporter.
#[derive(Debug, Clone)]
pub struct RoarkExporter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RoarkConfig,
    api: reqwest::Client,
    s3: reqwest::Client,
    uploads: Semaphore,
    counters: Counters,
}

impl RoarkExporter {
    /// Builds the exporter, honouring the kill switch of the process
    /// environment: `None` when `ROARK_OBSERVABILITY_ENABLED` is `false`,
    /// `0`, `no` or `off`.
    ///
    /// # Errors
    /// Bad settings (empty key, base URL not http(s)) or an HTTP client
    /// that cannot be built.
    pub fn build(config: RoarkConfig) -> Result<Option<Self>> {
        Self::build_with_env(config, &|k| std::env::var(k).ok())
    }

    /// As [`RoarkExporter::build`], reading variables through `env`.
    ///
    /// # Errors
    /// As [`RoarkExporter::build`].
    pub fn build_with_env(
        config: RoarkConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>> {
        if env(KILL_SWITCH_ENV).is_some_and(|v| kill_switch_value_disables(&v)) {
            tracing::info!(target: TARGET, "disabled via {KILL_SWITCH_ENV}");
            return Ok(None);
        }
        Self::new(config).map(Some)
    }

    /// Builds the exporter without looking at the kill switch.
    ///
    /// # Errors
    /// As [`RoarkExporter::build`].
    pub fn new(config: RoarkConfig) -> Result<Self> {
        if config.api_key.is_empty() {
            return Err(AnalyticsError::Config("the Roark API key is empty".into()));
        }
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(AnalyticsError::Config(format!(
                "Roark base URL {:?} is not an http(s) URL",
                config.base_url
            )));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = |timeout: Duration| {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| AnalyticsError::Config(format!("HTTP client: {e}")))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                api: client(config.request_timeout)?,
                // A separate client with no default headers: S3 refuses an
                // Authorization header that is not part of the signature.
                s3: client(config.put_timeout)?,
                uploads: Semaphore::new(config.max_concurrent_uploads.max(1)),
                config,
                counters: Counters::default(),
            }),
        })
    }

    /// Counters.
    pub fn stats(&self) -> RoarkStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RoarkStats {
            requests: l(&c.requests),
            transport_errors: l(&c.transport_errors),
            status_errors: l(&c.status_errors),
            retries: l(&c.retries),
            chunks_uploaded: l(&c.chunks_uploaded),
            calls_started: l(&c.calls_started),
            calls_ended: l(&c.calls_ended),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RoarkConfig {
        &self.inner.config
    }
}

impl Inner {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.base_url, path)
    }

    async fn check(
        &self,
        operation: &'static str,
        sent: std::result::Result<reqwest::Response, reqwest::Error>,
    ) -> Result<reqwest::Response> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let resp = sent.map_err(|e| {
            self.counters
                .transport_errors
                .fetch_add(1, Ordering::Relaxed);
            AnalyticsError::Transport {
                exporter: NAME,
                operation,
                // The URL may carry a presigned signature: keep it out of
                // errors and logs.
                source: e.without_url(),
            }
        })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            self.counters.status_errors.fetch_add(1, Ordering::Relaxed);
            return Err(AnalyticsError::Status {
                exporter: NAME,
                operation,
                status,
            });
        }
        Ok(resp)
    }

    fn authed(&self, url: String, body: Vec<u8>) -> reqwest::RequestBuilder {
        let key = self.config.api_key.expose();
        self.api
            .post(url)
            .header(API_KEY_HEADER, key)
            .header(AUTHORIZATION, format!("Bearer {key}"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
    }

    async fn post_event(&self, operation: &'static str, body: &[u8]) -> Result<()> {
        let sent = self
            .authed(self.url(WEBHOOK_PATH), body.to_vec())
            .send()
            .await;
        self.check(operation, sent).await.map(drop)
    }

    async fn upload_chunk(&self, call_id: &str, index: u64, chunk: &bytes::Bytes) -> Result<()> {
        let body = serde_json::to_vec(&PresignRequest {
            livekit_call_id: call_id.to_owned(),
            chunk_index: index,
            content_type: PCM_CONTENT_TYPE.to_owned(),
        })
        .map_err(|source| AnalyticsError::Encode {
            what: "presign request",
            source,
        })?;
        let sent = self.authed(self.url(CHUNK_UPLOAD_PATH), body).send().await;
        let resp = self.check("presign", sent).await?;
        let reply = read_capped(resp, MAX_REPLY_BYTES).await?;
        let upload_url =
            parse_presign_reply(&reply).map_err(|reason| AnalyticsError::BadReply {
                exporter: NAME,
                operation: "presign",
                reason,
            })?;
        let sent = self
            .s3
            .put(upload_url)
            .header(CONTENT_TYPE, PCM_CONTENT_TYPE)
            .body(chunk.clone())
            .send()
            .await;
        self.check("put", sent).await.map(drop)
    }

    /// Runs `attempt` until it succeeds, a non-retryable error comes, or
    /// the retry budget is spent.
    async fn with_retry<F, Fut>(
        &self,
        feed: &CallFeed,
        operation: &'static str,
        mut attempt: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let policy = self.config.retry;
        let max = policy.max_attempts.max(1);
        let call_id = &feed.meta().call_id;
        let mut n = 0;
        loop {
            n += 1;
            let err = match attempt().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if !err.is_retryable() || n >= max {
                tracing::warn!(target: TARGET, call_id, operation, attempts = n, error = %err, "giving up for now");
                return Err(AnalyticsError::GaveUp {
                    exporter: NAME,
                    attempts: n,
                    last: Box::new(err),
                });
            }
            let delay = policy.delay(n);
            tracing::debug!(target: TARGET, call_id, operation, attempt = n, delay_ms = delay.as_millis() as u64, error = %err, "retrying");
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = feed.cancel_token().cancelled() => return Err(AnalyticsError::ShuttingDown),
            }
        }
    }
}

/// What the progress log says was done already.
#[derive(Debug, Default)]
struct Done {
    started: bool,
    chunks: BTreeSet<u64>,
    ended: bool,
}

impl Done {
    fn from_log(entries: &[serde_json::Value]) -> Self {
        let mut d = Self::default();
        for e in entries {
            match e.get("e").and_then(|v| v.as_str()) {
                Some("started") => d.started = true,
                Some("ended") => d.ended = true,
                Some("chunk") => {
                    if let Some(i) = e.get("i").and_then(serde_json::Value::as_u64) {
                        d.chunks.insert(i);
                    }
                }
                _ => {}
            }
        }
        d
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AnalyticsError::Config(format!("blocking task failed: {e}")))?
}

#[async_trait]
impl Exporter for RoarkExporter {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn export(&self, mut feed: CallFeed) -> Result<()> {
        let inner = &self.inner;
        let log = feed.files().export_log(NAME);
        let l = log.clone();
        let mut done = Done::from_log(&blocking(move || l.load()).await?);
        if done.ended {
            return Ok(());
        }
        let call_id = feed.meta().call_id.clone();
        if !done.started {
            let body = serde_json::to_vec(&feed.meta().started).map_err(|source| {
                AnalyticsError::Encode {
                    what: "call-started",
                    source,
                }
            })?;
            inner
                .with_retry(&feed, "call-started", || {
                    inner.post_event("call-started", &body)
                })
                .await?;
            let l = log.clone();
            write_when_space(&feed, "progress log", move || {
                l.append(&json!({"e": "started"}))
            })
            .await?;
            inner.counters.calls_started.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: TARGET, call_id, agent_id = %feed.meta().started.agent_id, "call-started sent");
            done.started = true;
        }

        // Chunks, in index order, a few at a time.
        let per_call = inner.config.uploads_per_call.max(1);
        let mut next = 0u64;
        let mut running: JoinSet<Result<u64>> = JoinSet::new();
        loop {
            let progress = feed.progress();
            let final_len = progress.end.as_ref().map(|e| e.audio_bytes);
            let available = final_len.unwrap_or(progress.audio_bytes);
            let count = match final_len {
                Some(n) => n.div_ceil(CHUNK_BYTES),
                None => available / CHUNK_BYTES,
            };
            while next < count && running.len() < per_call {
                let index = next;
                next += 1;
                if done.chunks.contains(&index) {
                    continue;
                }
                let offset = index * CHUNK_BYTES;
                let len = CHUNK_BYTES.min(available - offset) as usize;
                let this = self.clone();
                let feed = feed.clone();
                let call_id = call_id.clone();
                running.spawn(async move {
                    let inner = &this.inner;
                    let _permit = inner
                        .uploads
                        .acquire()
                        .await
                        .map_err(|_| AnalyticsError::ShuttingDown)?;
                    let files = feed.files().clone();
                    let chunk =
                        bytes::Bytes::from(blocking(move || files.read_audio(offset, len)).await?);
                    inner
                        .with_retry(&feed, "chunk", || {
                            inner.upload_chunk(&call_id, index, &chunk)
                        })
                        .await?;
                    Ok(index)
                });
            }
            if next >= count && running.is_empty() {
                if final_len.is_some() {
                    break;
                }
                feed.changed().await?;
                continue;
            }
            if running.is_empty() {
                continue;
            }
            tokio::select! {
                r = running.join_next() => {
                    let index = match r {
                        Some(Ok(Ok(i))) => i,
                        Some(Ok(Err(e))) => return Err(e),
                        Some(Err(e)) => return Err(AnalyticsError::Config(format!("upload task failed: {e}"))),
                        None => continue,
                    };
                    let l = log.clone();
                    write_when_space(&feed, "progress log", move || {
                        l.append(&json!({"e": "chunk", "i": index}))
                    })
                    .await?;
                    done.chunks.insert(index);
                    inner.counters.chunks_uploaded.fetch_add(1, Ordering::Relaxed);
                }
                r = feed.changed(), if final_len.is_none() => r?,
            }
        }

        // Every chunk is settled: the call can end.
        let end = feed.wait_end().await?;
        if end.recording_incomplete {
            // The protocol has no field for it: say it here.
            tracing::warn!(target: TARGET, call_id, "exporting a call whose recording is incomplete (spool writes were lost)");
        }
        let content = feed.content().await?;
        let uploaded = !done.chunks.is_empty();
        let ended = CallEnded {
            event: "call-ended".into(),
            livekit_call_id: call_id.clone(),
            event_timestamp: end.ended_at.clone(),
            call_started_at: feed.meta().started.event_timestamp.clone(),
            call_ended_at: end.ended_at.clone(),
            call_ended_reason: end.reason.clone(),
            agent_spoke_first: content.agent_spoke_first,
            recording_sample_rate: uploaded.then_some(feed.meta().sample_rate),
            recording_num_channels: uploaded.then_some(2),
            transcript: content.transcript,
            tool_calls: content.tool_calls,
            metrics: content.metrics,
        };
        let body = serde_json::to_vec(&ended).map_err(|source| AnalyticsError::Encode {
            what: "call-ended",
            source,
        })?;
        inner
            .with_retry(&feed, "call-ended", || {
                inner.post_event("call-ended", &body)
            })
            .await?;
        let l = log.clone();
        write_when_space(&feed, "progress log", move || {
            l.append(&json!({"e": "ended"}))
        })
        .await?;
        inner.counters.calls_ended.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            target: TARGET,
            call_id,
            reason = %end.reason,
            transcript = ended.transcript.len(),
            tool_calls = ended.tool_calls.len(),
            metrics = ended.metrics.len(),
            chunks = done.chunks.len(),
            "call-ended sent"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_resolution_order() {
        let none = |_: &str| None;
        let env = |k: &str| (k == BASE_URL_ENV).then(|| "http://env:1".to_owned());
        assert_eq!(RoarkConfig::resolve_base_url(None, &none), DEFAULT_BASE_URL);
        assert_eq!(
            RoarkConfig::resolve_base_url(Some("http://cfg:2"), &none),
            "http://cfg:2"
        );
        assert_eq!(
            RoarkConfig::resolve_base_url(Some("http://cfg:2"), &env),
            "http://env:1"
        );
    }

    #[test]
    fn kill_switch_disables_the_exporter() {
        let cfg = RoarkConfig::new(ApiKey::new("k"), "http://127.0.0.1:9");
        let off = |k: &str| (k == KILL_SWITCH_ENV).then(|| " OFF ".to_owned());
        assert!(
            RoarkExporter::build_with_env(cfg.clone(), &off)
                .unwrap()
                .is_none()
        );
        let on = |k: &str| (k == KILL_SWITCH_ENV).then(|| "true".to_owned());
        assert!(RoarkExporter::build_with_env(cfg, &on).unwrap().is_some());
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(RoarkExporter::new(RoarkConfig::new(ApiKey::new(""), "http://x")).is_err());
        assert!(RoarkExporter::new(RoarkConfig::new(ApiKey::new("k"), "ftp://x")).is_err());
    }
}
