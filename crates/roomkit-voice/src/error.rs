//! Errors of voice calls and of their speech providers.

/// What went wrong with a speech provider, in words safe to show a caller
/// of the API (never the remote's own body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: {message}")]
pub struct ProviderFailure {
    /// The provider's name (`deepgram`, `openai`, `elevenlabs`, ...).
    pub provider: String,
    /// A short description.
    pub message: String,
    /// Whether trying again (or a fallback provider) may help.
    pub retryable: bool,
}

impl ProviderFailure {
    /// A failure that trying again may cure (timeouts, 5xx, closed sockets).
    pub fn retryable(provider: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that repeats until something is changed (bad key, bad request).
    pub fn fatal(provider: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// Errors of the voice crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VoiceError {
    /// A speech-to-text provider failed.
    #[error("speech-to-text: {0}")]
    Stt(ProviderFailure),
    /// A text-to-speech provider failed.
    #[error("text-to-speech: {0}")]
    Tts(ProviderFailure),
    /// The transport (media socket, SIP, ...) failed or sent something unreadable.
    #[error("transport: {0}")]
    Transport(String),
    /// A configuration value is unusable.
    #[error("config: {0}")]
    Config(String),
    /// Audio processing failed.
    #[error("audio: {0}")]
    Audio(#[from] roomkit_audio::AudioError),
    /// The session has ended.
    #[error("the voice session has ended")]
    Ended,
}

impl VoiceError {
    /// Whether trying again may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Stt(f) | Self::Tts(f) => f.retryable,
            Self::Transport(_) => true,
            _ => false,
        }
    }
}
