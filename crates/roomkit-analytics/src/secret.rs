//! The backend API key as a value that never shows itself in logs.

use std::fmt;

/// An API key. `Debug` and `Display` print `[redacted]`; the value is only
/// reachable through [`ApiKey::expose`], used where a request header is set.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key. Surrounding white space is removed.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().trim().to_owned())
    }

    /// Reads the key from an environment variable, once. `None` when it is
    /// unset or blank.
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Self::new)
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the key is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let k = ApiKey::new(" rk_live_secret ");
        assert_eq!(format!("{k:?}"), "[redacted]");
        assert_eq!(format!("{k}"), "[redacted]");
        assert_eq!(k.expose(), "rk_live_secret");
    }
}
