//! What both HTTP providers share: the client, timeouts, error
//! classification of HTTP replies, retries with backoff, and the
//! server-sent-events reader.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;

use crate::error::AiError;
use crate::secret::SecretString;

/// When and how often a failed request is tried again. Only failures that
/// happen before any part of the answer was read are retried, so a retry
/// never duplicates text already handed on.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Upper bound of any delay, a provider's `retry-after` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The delay before retry number `attempt` (0-based) after `error`:
    /// the provider's `retry-after` when it gave one, else exponential
    /// backoff; never more than `max_delay`.
    pub fn delay(&self, attempt: u32, error: &AiError) -> Duration {
        let backoff = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.min(16)));
        error.retry_after().unwrap_or(backoff).min(self.max_delay)
    }
}

/// Connection settings of an HTTP provider.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// API root, without a trailing slash.
    pub base_url: String,
    /// API key.
    pub api_key: Option<SecretString>,
    /// Limit on connecting.
    pub connect_timeout: Duration,
    /// Limit on the wait for the reply's status and headers.
    pub first_byte_timeout: Duration,
    /// Limit on the gap between two pieces of a streamed reply, and on
    /// reading a whole non-streamed body.
    pub read_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
}

impl HttpSettings {
    /// Defaults for `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

/// The largest non-streamed reply body read (a whole completion).
pub(crate) const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// The largest error reply body read.
pub(crate) const MAX_ERROR_BYTES: usize = 64 * 1024;

/// The largest streamed reply, all events together.
pub(crate) const MAX_STREAM_BYTES: usize = 32 * 1024 * 1024;

/// Builds the HTTP client: no redirects, the connect timeout, the TLS
/// backend installed. Replies are bounded by the first-byte and read
/// timeouts and the body caps rather than by one overall limit, since a
/// streamed reply may legitimately last long.
pub(crate) fn client(settings: &HttpSettings) -> Result<reqwest::Client, AiError> {
    crate::outbound::builder(settings.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| AiError::config("http client", e.to_string()))
}

/// Transport-level failure of a request.
fn transport_error(provider: &str, e: &reqwest::Error) -> AiError {
    if e.is_timeout() {
        return AiError::Timeout {
            provider: provider.to_owned(),
            phase: if e.is_connect() { "connect" } else { "request" },
        };
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    AiError::Connection {
        provider: provider.to_owned(),
        message,
    }
}

/// The `retry-after` of a reply: seconds, or Anthropic/OpenAI's
/// `retry-after-ms`. HTTP dates are ignored (backoff applies).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 86_400.0)
        .map(Duration::from_secs_f64)
}

/// The provider's message in an error body: `error.message` in both wire
/// formats, shortened. A body that is not such JSON is not quoted (it goes
/// to a debug log only). These messages stay in [`AiError`] for operator
/// logs; what API callers see is [`AiError::public_message`].
pub(crate) fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    });
    let Some(text) = from_json else {
        if !body.trim().is_empty() {
            tracing::debug!(target: "roomkit.providers.ai.http", body = %preview(body.as_bytes()), "error reply without a JSON message");
        }
        return "(no message)".to_owned();
    };
    let mut short: String = text.chars().take(300).collect();
    if short.is_empty() {
        short = "(empty message)".to_owned();
    }
    short
}

/// Classifies a non-success HTTP reply.
pub(crate) fn classify(provider: &str, status: u16, headers: &HeaderMap, body: &str) -> AiError {
    let provider = provider.to_owned();
    let message = error_message(body);
    match status {
        429 => AiError::RateLimited {
            provider,
            retry_after: retry_after(headers),
            message,
        },
        401 | 403 => AiError::Auth {
            provider,
            status,
            message,
        },
        408 => AiError::Timeout {
            provider,
            phase: "request",
        },
        500..=599 => AiError::Overloaded {
            provider,
            status,
            message,
            retry_after: retry_after(headers),
        },
        _ => AiError::BadRequest {
            provider,
            status,
            message,
        },
    }
}

/// Sends a JSON POST and returns the successful reply (status 2xx, headers
/// read, body not yet). Failures before that point are retried by the
/// policy when they are retryable.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    settings: &HttpSettings,
    provider: &str,
    url: &str,
    headers: &HeaderMap,
    body: &serde_json::Value,
) -> Result<reqwest::Response, AiError> {
    let mut attempt = 0u32;
    loop {
        let result = post_once(client, settings, provider, url, headers, body).await;
        match result {
            Ok(r) => return Ok(r),
            Err(e) if e.is_retryable() && attempt < settings.retry.max_retries => {
                let delay = settings.retry.delay(attempt, &e);
                tracing::warn!(target: "roomkit.providers.ai.http", provider, attempt = attempt + 1, delay_ms = delay.as_millis() as u64, error = %e, "provider call failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn post_once(
    client: &reqwest::Client,
    settings: &HttpSettings,
    provider: &str,
    url: &str,
    headers: &HeaderMap,
    body: &serde_json::Value,
) -> Result<reqwest::Response, AiError> {
    let request = client.post(url).headers(headers.clone()).json(body).send();
    let response = match tokio::time::timeout(settings.first_byte_timeout, request).await {
        Err(_) => {
            return Err(AiError::Timeout {
                provider: provider.to_owned(),
                phase: "first byte",
            });
        }
        Ok(Err(e)) => return Err(transport_error(provider, &e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let read = crate::outbound::read_capped(response, MAX_ERROR_BYTES);
    let text = match tokio::time::timeout(settings.read_timeout, read).await {
        Ok(Ok(t)) => String::from_utf8_lossy(&t).into_owned(),
        Ok(Err(_)) | Err(_) => String::new(),
    };
    Err(classify(provider, status, &headers, &text))
}

/// Reads a whole non-streamed reply body as JSON.
pub(crate) async fn read_json(
    settings: &HttpSettings,
    provider: &str,
    response: reqwest::Response,
) -> Result<serde_json::Value, AiError> {
    let read = crate::outbound::read_capped(response, MAX_REPLY_BYTES);
    let bytes = match tokio::time::timeout(settings.read_timeout, read).await {
        Err(_) => {
            return Err(AiError::Timeout {
                provider: provider.to_owned(),
                phase: "stream",
            });
        }
        Ok(Err(crate::outbound::BodyError::Transport(e))) => {
            return Err(transport_error(provider, &e));
        }
        Ok(Err(e @ crate::outbound::BodyError::TooLarge { .. })) => {
            return Err(AiError::malformed(provider, e.to_string()));
        }
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        tracing::debug!(target: "roomkit.providers.ai.http", provider, body = %preview(&bytes), "reply is not JSON");
        AiError::malformed(provider, format!("the body is not JSON ({})", json_problem(&e)))
    })
}

/// Where a remote's JSON went wrong, without quoting it (serde's messages
/// may quote the input).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} at line {}, column {}", e.line(), e.column())
}

/// The start of a byte string, for debug logs only.
pub(crate) fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

/// The server-sent events of a streamed reply, each with the read timeout
/// applied to the wait for it. Transport and UTF-8 errors end the stream
/// with an error.
pub(crate) fn sse_events(
    settings: &HttpSettings,
    provider: &str,
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, AiError>> + Send + 'static {
    let provider = provider.to_owned();
    let idle = settings.read_timeout;
    let events =
        without_bom(Box::pin(capped(response.bytes_stream(), MAX_STREAM_BYTES))).eventsource();
    futures::stream::unfold(
        (Box::pin(events), provider, false),
        move |(mut events, provider, done)| async move {
            if done {
                return None;
            }
            match tokio::time::timeout(idle, events.next()).await {
                Err(_) => Some((
                    Err(AiError::Timeout {
                        provider: provider.clone(),
                        phase: "stream",
                    }),
                    (events, provider, true),
                )),
                Ok(None) => None,
                Ok(Some(Ok(ev))) => Some((Ok(ev), (events, provider, false))),
                Ok(Some(Err(e))) => {
                    let err = match e {
                        eventsource_stream::EventStreamError::Transport(
                            StreamError::Transport(t),
                        ) => transport_error(&provider, &t),
                        eventsource_stream::EventStreamError::Transport(StreamError::TooLarge) => {
                            AiError::malformed(
                                &provider,
                                format!("the stream is longer than {MAX_STREAM_BYTES} bytes"),
                            )
                        }
                        eventsource_stream::EventStreamError::Utf8(_) => {
                            AiError::malformed(&provider, "event stream: not UTF-8")
                        }
                        eventsource_stream::EventStreamError::Parser(_) => {
                            AiError::malformed(&provider, "event stream: not server-sent events")
                        }
                    };
                    Some((Err(err), (events, provider, true)))
                }
            }
        },
    )
}

/// Why a streamed reply ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The connection failed.
    #[error("transport: {0}")]
    Transport(reqwest::Error),
    /// The stream went past its cap.
    #[error("the stream is too long")]
    TooLarge,
}

/// Passes `body` on until `limit` bytes have gone by, then ends it with
/// [`StreamError::TooLarge`].
pub(crate) fn capped<S>(
    body: S,
    limit: usize,
) -> impl Stream<Item = Result<bytes::Bytes, StreamError>> + Send + 'static
where
    S: Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static,
{
    futures::stream::unfold(
        (Box::pin(body), 0usize, false),
        move |(mut body, seen, done)| async move {
            if done {
                return None;
            }
            match body.next().await? {
                Err(e) => Some((Err(StreamError::Transport(e)), (body, seen, true))),
                Ok(chunk) if seen + chunk.len() > limit => {
                    Some((Err(StreamError::TooLarge), (body, seen, true)))
                }
                Ok(chunk) => {
                    let seen = seen + chunk.len();
                    Some((Ok(chunk), (body, seen, false)))
                }
            }
        },
    )
}

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Drops byte-order marks at the start of a body, however the body is cut
/// into chunks. The SSE format ignores a leading BOM, and eventsource-stream
/// 0.2 panics on one (it slices one byte off a three-byte character).
pub(crate) fn without_bom<S, E>(body: S) -> impl Stream<Item = Result<bytes::Bytes, E>>
where
    S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    futures::stream::unfold((body, Some(Vec::new())), |(mut body, head)| async move {
        let Some(mut head) = head else {
            let item = body.next().await?;
            return Some((item, (body, None)));
        };
        loop {
            while head.starts_with(BOM) {
                head.drain(..BOM.len());
            }
            if !head.is_empty() && !BOM.starts_with(&head) {
                break;
            }
            match body.next().await {
                Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                Some(Err(e)) => return Some((Err(e), (body, None))),
                None => break,
            }
        }
        Some((Ok(bytes::Bytes::from(head)), (body, None)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "7".parse().unwrap_or_else(|_| unreachable!()),
        );
        let e = classify("p", 429, &h, r#"{"error":{"message":"slow down"}}"#);
        assert_eq!(e.code(), "rate_limited");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(e.to_string().contains("slow down"));
        assert!(e.is_retryable());
        assert_eq!(classify("p", 401, &h, "").code(), "auth");
        assert!(!classify("p", 401, &h, "").is_retryable());
        assert_eq!(classify("p", 400, &h, "nope").code(), "bad_request");
        assert_eq!(classify("p", 529, &h, "").code(), "overloaded");
        assert_eq!(classify("p", 503, &h, "").code(), "overloaded");
    }

    #[tokio::test]
    async fn a_stream_past_its_cap_ends_with_an_error() {
        let chunks = (0..10).map(|_| Ok::<_, reqwest::Error>(bytes::Bytes::from(vec![b'x'; 100])));
        let mut out = Box::pin(capped(futures::stream::iter(chunks), 350));
        let mut passed = 0;
        let mut ended_with = None;
        while let Some(item) = out.next().await {
            match item {
                Ok(c) => passed += c.len(),
                Err(e) => ended_with = Some(e),
            }
        }
        assert_eq!(passed, 300);
        assert!(matches!(ended_with, Some(StreamError::TooLarge)));
        let chunks = (0..3).map(|_| Ok::<_, reqwest::Error>(bytes::Bytes::from(vec![b'x'; 100])));
        let all: Vec<_> = capped(futures::stream::iter(chunks), 300).collect().await;
        assert!(all.iter().all(Result::is_ok));
    }

    #[test]
    fn error_messages_never_quote_a_raw_body() {
        assert_eq!(
            error_message("<html>internal 10.0.0.5</html>"),
            "(no message)"
        );
        assert_eq!(
            error_message(r#"{"error":{"message":"slow down"}}"#),
            "slow down"
        );
        let e = classify(
            "p",
            401,
            &HeaderMap::new(),
            r#"{"error":{"message":"key sk-live-123 revoked"}}"#,
        );
        assert!(
            !e.public_message().contains("sk-live"),
            "{}",
            e.public_message()
        );
        assert_eq!(e.public_message(), "p: authentication failed (401)");
        // serde's own message would quote the value.
        let bad = serde_json::from_str::<u32>(r#""SECRET""#);
        let Err(bad) = bad else { unreachable!() };
        assert!(bad.to_string().contains("SECRET"));
        assert!(
            !json_problem(&bad).contains("SECRET"),
            "{}",
            json_problem(&bad)
        );
    }

    #[test]
    fn retry_after_ms_wins_and_delays_are_capped() {
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after-ms",
            "1500".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let policy = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let e = classify("p", 429, &h, "");
        assert_eq!(policy.delay(0, &e), Duration::from_secs(1));
        let e = classify("p", 500, &HeaderMap::new(), "");
        assert_eq!(policy.delay(0, &e), Duration::from_millis(100));
        assert_eq!(policy.delay(2, &e), Duration::from_millis(400));
        assert_eq!(policy.delay(10, &e), Duration::from_secs(1));
    }
}
