//! The error type shared by every audio stage, codec and the pipeline engine.

use thiserror::Error;

/// Everything that can go wrong while configuring or running audio processing.
///
/// Stages report errors as values; a stage never panics on bad input.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AudioError {
    /// A frame or format was malformed (zero rate, odd sample count, ...).
    #[error("invalid audio format: {0}")]
    InvalidFormat(String),
    /// A stage received a frame in a format it was not configured for.
    #[error("stage {stage} expected {expected}, got {got}")]
    FormatMismatch {
        /// Name of the stage that refused the frame.
        stage: &'static str,
        /// What the stage expects.
        expected: String,
        /// What it received.
        got: String,
    },
    /// The pipeline configuration is inconsistent; raised once at start-up.
    #[error("invalid pipeline configuration: {0}")]
    Config(String),
    /// A third-party DSP library refused an operation.
    #[error("{provider} failed to {operation}: {message}")]
    Provider {
        /// Provider name, e.g. `rubato` or `libopus`.
        provider: &'static str,
        /// What was being attempted.
        operation: &'static str,
        /// The library's own description.
        message: String,
    },
    /// A codec could not encode or decode a payload.
    #[error("codec {codec}: {message}")]
    Codec {
        /// Codec name.
        codec: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Reading or writing audio files failed.
    #[error("audio I/O: {0}")]
    Io(String),
}

impl AudioError {
    /// True when the error comes from configuration and retrying with the
    /// same settings cannot succeed.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_) | Self::FormatMismatch { .. })
    }

    pub(crate) fn provider(
        provider: &'static str,
        operation: &'static str,
        err: impl std::fmt::Display,
    ) -> Self {
        Self::Provider {
            provider,
            operation,
            message: err.to_string(),
        }
    }
}

impl From<hound::Error> for AudioError {
    fn from(err: hound::Error) -> Self {
        Self::Io(err.to_string())
    }
}

impl From<std::io::Error> for AudioError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err.to_string())
    }
}
