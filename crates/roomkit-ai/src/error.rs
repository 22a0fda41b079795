//! The crate's error type: provider failures classified so callers can tell
//! what is worth retrying, plus tool and configuration errors.

use std::time::Duration;

/// What went wrong in an AI provider, tool or configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AiError {
    /// The provider refused the request because of a rate limit (HTTP 429).
    #[error("{provider}: rate limited{}: {message}", retry_after_text(.retry_after))]
    RateLimited {
        /// Provider name.
        provider: String,
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// The credentials were missing, wrong or not allowed (HTTP 401/403).
    #[error("{provider}: authentication failed ({status}): {message}")]
    Auth {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The provider rejected the request itself (HTTP 400, 404, 422, ...).
    #[error("{provider}: bad request ({status}): {message}")]
    BadRequest {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The provider is overloaded or failing (HTTP 5xx, Anthropic 529,
    /// or an `overloaded_error` inside a stream).
    #[error("{provider}: provider unavailable ({status}): {message}")]
    Overloaded {
        /// Provider name.
        provider: String,
        /// HTTP status (0 when reported inside a stream).
        status: u16,
        /// The provider's message.
        message: String,
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The provider did not answer in time.
    #[error("{provider}: timed out during {phase}")]
    Timeout {
        /// Provider name.
        provider: String,
        /// `"connect"`, `"first byte"`, `"stream"` or `"request"`.
        phase: &'static str,
    },
    /// The connection failed before a reply arrived.
    #[error("{provider}: connection failed: {message}")]
    Connection {
        /// Provider name.
        provider: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The reply could not be understood (malformed JSON or SSE, missing
    /// fields, a stream cut short).
    #[error("{provider}: malformed reply: {message}")]
    Malformed {
        /// Provider name.
        provider: String,
        /// What was wrong with it.
        message: String,
    },
    /// A tool failed.
    #[error("tool {tool}: {message}")]
    Tool {
        /// Tool name.
        tool: String,
        /// What went wrong.
        message: String,
    },
    /// The configuration is unusable.
    #[error("{key}: {message}")]
    Config {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

fn retry_after_text(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (retry after {} s)", d.as_secs_f64()),
        None => String::new(),
    }
}

impl AiError {
    /// Whether trying the same request again may succeed: rate limits,
    /// overloads, timeouts and connection failures.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Overloaded { .. }
                | Self::Timeout { .. }
                | Self::Connection { .. }
        )
    }

    /// How long the provider asked callers to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Overloaded { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The description shown to API callers (delivery results, framework
    /// events): the kind of failure and status, never the provider's or a
    /// tool's own words, which stay in [`Display`](std::fmt::Display) for
    /// operator logs.
    pub fn public_message(&self) -> String {
        match self {
            Self::RateLimited {
                provider,
                retry_after,
                ..
            } => format!("{provider}: rate limited{}", retry_after_text(retry_after)),
            Self::Auth {
                provider, status, ..
            } => format!("{provider}: authentication failed ({status})"),
            Self::BadRequest {
                provider, status, ..
            } => format!("{provider}: bad request ({status})"),
            Self::Overloaded {
                provider, status, ..
            } => format!("{provider}: provider unavailable ({status})"),
            Self::Connection { provider, .. } => format!("{provider}: connection failed"),
            Self::Malformed { provider, .. } => format!("{provider}: malformed reply"),
            Self::Tool { tool, .. } => format!("tool {tool} failed"),
            Self::Timeout { .. } | Self::Config { .. } => self.to_string(),
        }
    }

    /// A short machine-readable code (`"rate_limited"`, `"auth"`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Auth { .. } => "auth",
            Self::BadRequest { .. } => "bad_request",
            Self::Overloaded { .. } => "overloaded",
            Self::Timeout { .. } => "timeout",
            Self::Connection { .. } => "connection",
            Self::Malformed { .. } => "malformed",
            Self::Tool { .. } => "tool",
            Self::Config { .. } => "config",
        }
    }

    pub(crate) fn malformed(provider: &str, message: impl Into<String>) -> Self {
        Self::Malformed {
            provider: provider.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn tool(tool: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Tool {
            tool: tool.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = AiError> = std::result::Result<T, E>;
