//! Provider failures, classified once and converted into the core's
//! [`ChannelError`] with the provider and operation named.

use roomkit_core::ChannelError;

/// A failure talking to a vendor API.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The request never got an HTTP answer (connect, TLS, I/O).
    #[error("{provider} {operation}: transport failure: {message}")]
    Transport {
        /// Vendor.
        provider: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// Cause.
        message: String,
    },
    /// The vendor answered with an error status.
    #[error("{provider} {operation}: HTTP {status}: {message}")]
    Status {
        /// Vendor.
        provider: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// Vendor error code, when it gave one.
        code: Option<String>,
        /// Vendor message.
        message: String,
        /// Seconds the vendor asked us to wait.
        retry_after_seconds: Option<f64>,
    },
    /// The vendor's answer could not be understood.
    #[error("{provider} {operation}: unexpected response: {message}")]
    Response {
        /// Vendor.
        provider: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The event cannot be sent by this channel (no recipient, no content).
    #[error("{provider} {operation}: {message}")]
    Invalid {
        /// Vendor.
        provider: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// What is missing.
        message: String,
    },
}

impl ProviderError {
    /// Whether trying again may succeed: transport failures, 408, 425, 429
    /// and 5xx answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => {
                matches!(*status, 408 | 425 | 429) || (500..600).contains(status)
            }
            Self::Response { .. } | Self::Invalid { .. } => false,
        }
    }

    fn code(&self) -> String {
        match self {
            Self::Transport { .. } => "transport".into(),
            Self::Status { status, code, .. } => code.clone().unwrap_or_else(|| status.to_string()),
            Self::Response { .. } => "bad_response".into(),
            Self::Invalid { .. } => "invalid".into(),
        }
    }

    fn provider(&self) -> &'static str {
        match self {
            Self::Transport { provider, .. }
            | Self::Status { provider, .. }
            | Self::Response { provider, .. }
            | Self::Invalid { provider, .. } => provider,
        }
    }
}

impl From<ProviderError> for ChannelError {
    fn from(e: ProviderError) -> Self {
        let retry_after_seconds = match &e {
            ProviderError::Status {
                retry_after_seconds,
                ..
            } => *retry_after_seconds,
            _ => None,
        };
        ChannelError::Provider {
            provider: e.provider().to_owned(),
            code: e.code(),
            retryable: e.is_retryable(),
            retry_after_seconds,
            message: e.to_string(),
        }
    }
}
