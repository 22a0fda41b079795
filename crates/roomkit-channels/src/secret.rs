//! A redacting secret type: its value never appears in `Debug` or
//! `Display` output, and it is read once from a named environment variable.

use std::fmt;

/// A secret string (API key, auth token, signing key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why a secret could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The variable is not set or empty.
    #[error("environment variable {0} is not set")]
    Missing(String),
}

impl SecretError {
    /// Never retryable: the configuration must change.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Reads the named environment variable.
    ///
    /// # Errors
    /// [`SecretError::Missing`] when it is unset or empty.
    pub fn from_env(name: &str) -> Result<Self, SecretError> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Self(v)),
            _ => Err(SecretError::Missing(name.to_owned())),
        }
    }

    /// The value, for signing and authenticating only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "hunter2");
        assert!(Secret::from_env("ROOMKIT_SURELY_UNSET_VARIABLE").is_err());
    }
}
