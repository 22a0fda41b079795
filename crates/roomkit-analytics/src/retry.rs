//! Retry policy with exponential backoff, shared by the exporters.

use std::time::Duration;

/// How often and how patiently a failed request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first included). At least 1.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub initial_delay: Duration,
    /// Upper bound of any delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, 0.5 s doubling up to 30 s: about four minutes of
    /// patience before the call is parked in the spool for the next start.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.initial_delay
            .saturating_mul(1u32 << shift)
            .min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(4), Duration::from_secs(4));
        assert_eq!(p.delay(9), Duration::from_secs(30));
        assert_eq!(p.delay(500), Duration::from_secs(30));
    }
}
