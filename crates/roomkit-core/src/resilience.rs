//! Delivery resilience (RFC §13.1-13.3, decision D14): a circuit breaker per
//! channel, retries with exponential backoff and full jitter per binding,
//! token-bucket rate limits per binding and per channel, and the
//! per-operation timeout around every `deliver()` call.
//!
//! The state lives in the engine (`Resilience`), keyed by channel (the
//! breaker and the channel's own limit: one provider account behind it) and
//! by `(room, channel)` (the binding's limit). Rate-limited deliveries wait
//! their turn in reservation order; nothing is dropped. All waiting goes
//! through tokio's clock, so tests drive it with a paused clock.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::FutureExt;
use parking_lot::Mutex;
use roomkit_model::{
    ChannelId, EventId, FrameworkEvent, RateLimit, RetryPolicy, RoomEvent, RoomId,
};
use tokio::time::Instant;

use crate::channel::{ChannelOutput, RoomContext};
use crate::error::ChannelError;
use crate::hooks::panic_message;
use crate::kit::{RoomKit, RoomKitBuilder};
use crate::lane::Target;
use crate::telemetry::{SpanName, attr, timed};

/// Code of the error returned while a channel's breaker is open.
pub const CIRCUIT_OPEN: &str = "circuit_open";

/// How retry delays are randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// A uniformly random delay between zero and the computed delay
    /// ("full jitter", decision D14).
    #[default]
    Full,
    /// The computed delay exactly (deterministic; for tests and tools).
    None,
}

/// Engine-wide resilience settings (defaults per decision D14).
#[derive(Debug, Clone)]
pub struct ResilienceConfig {
    /// Consecutive failures that open a channel's breaker.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker waits before letting one probe through.
    pub breaker_cooldown: Duration,
    /// Retry policy of bindings that have none; `None` means such bindings
    /// get a single attempt (retries are configured per binding, RFC §13.2).
    pub default_retry_policy: Option<RetryPolicy>,
    /// Delay randomisation.
    pub jitter: Jitter,
    /// How many provider message ids are remembered for delivery-status
    /// callbacks.
    pub receipt_capacity: usize,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            breaker_failure_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
            default_retry_policy: None,
            jitter: Jitter::Full,
            receipt_capacity: 100_000,
        }
    }
}

/// State of a circuit breaker (RFC §13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Deliveries proceed.
    Closed,
    /// Deliveries fail fast.
    Open,
    /// One probe delivery is allowed through.
    HalfOpen,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

/// A consecutive-failure circuit breaker: CLOSED opens after `threshold`
/// failures in a row, OPEN half-opens after `cooldown`, HALF_OPEN lets
/// exactly one probe through whose outcome closes or reopens it.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<BreakerInner>,
}

/// What the breaker said to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; `probe` is true for the half-open probe.
    Allowed {
        /// Whether this call is the half-open probe.
        probe: bool,
    },
    /// Fail fast; retry after this long at the earliest.
    Rejected {
        /// Time left before a probe is allowed.
        retry_after: Duration,
    },
}

/// A state change caused by an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No change worth reporting.
    None,
    /// The breaker opened after this many consecutive failures.
    Opened(u32),
    /// The breaker closed again.
    Closed,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                probe_in_flight: false,
            }),
        }
    }

    /// The current state (OPEN reads as HALF_OPEN once the cooldown passed).
    pub fn state(&self) -> BreakerState {
        let s = self.inner.lock();
        match (s.state, s.opened_at) {
            (BreakerState::Open, Some(at)) if at.elapsed() >= self.cooldown => {
                BreakerState::HalfOpen
            }
            (st, _) => st,
        }
    }

    /// Asks to make one call.
    pub fn admit(&self) -> Admission {
        let mut s = self.inner.lock();
        match s.state {
            BreakerState::Closed => Admission::Allowed { probe: false },
            BreakerState::Open => {
                let elapsed = s.opened_at.map_or(self.cooldown, |at| at.elapsed());
                if elapsed >= self.cooldown {
                    s.state = BreakerState::HalfOpen;
                    s.probe_in_flight = true;
                    Admission::Allowed { probe: true }
                } else {
                    Admission::Rejected {
                        retry_after: self.cooldown - elapsed,
                    }
                }
            }
            BreakerState::HalfOpen => {
                if s.probe_in_flight {
                    Admission::Rejected {
                        retry_after: Duration::ZERO,
                    }
                } else {
                    s.probe_in_flight = true;
                    Admission::Allowed { probe: true }
                }
            }
        }
    }

    /// Records a successful call.
    pub fn on_success(&self, probe: bool) -> Transition {
        let mut s = self.inner.lock();
        s.consecutive_failures = 0;
        if probe {
            s.probe_in_flight = false;
        }
        if s.state != BreakerState::Closed {
            s.state = BreakerState::Closed;
            s.opened_at = None;
            return Transition::Closed;
        }
        Transition::None
    }

    /// Records a failed call.
    pub fn on_failure(&self, probe: bool) -> Transition {
        let mut s = self.inner.lock();
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        if probe {
            s.probe_in_flight = false;
        }
        let reopen = s.state == BreakerState::HalfOpen;
        let trip = s.state == BreakerState::Closed && s.consecutive_failures >= self.threshold;
        if reopen || trip {
            s.state = BreakerState::Open;
            s.opened_at = Some(Instant::now());
            return Transition::Opened(s.consecutive_failures);
        }
        Transition::None
    }

    /// A probe that ended without an outcome (cancelled): another may run.
    fn release_probe(&self) {
        self.inner.lock().probe_in_flight = false;
    }
}

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
/// Callers reserve a token and are told how long to wait for it; tokens may
/// go negative, which queues later callers behind earlier ones.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: f64, rate_per_second: f64) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            rate: rate_per_second.max(f64::MIN_POSITIVE),
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Reserves one token; returns how long to wait before using it.
    pub fn reserve(&self) -> Duration {
        let mut s = self.state.lock();
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.capacity);
        s.1 = now;
        s.0 -= 1.0;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }
}

/// The buckets of one rate limit (a second and a minute bucket as set).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Vec<TokenBucket>,
}

impl RateLimiter {
    /// Buckets for a limit; `burst` defaults to one, which spaces
    /// deliveries evenly.
    pub fn new(limit: &RateLimit) -> Self {
        let burst = f64::from(limit.burst.unwrap_or(1).max(1));
        let mut buckets = Vec::new();
        if let Some(r) = limit.max_per_second.filter(|r| *r > 0.0) {
            buckets.push(TokenBucket::new(burst, r));
        }
        if let Some(r) = limit.max_per_minute.filter(|r| *r > 0.0) {
            buckets.push(TokenBucket::new(burst, r / 60.0));
        }
        Self {
            limit: limit.clone(),
            buckets,
        }
    }

    /// Reserves a slot in every bucket; returns the longest wait.
    pub fn reserve(&self) -> Duration {
        self.buckets
            .iter()
            .map(TokenBucket::reserve)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// Where a provider message id was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRef {
    /// Room.
    pub room_id: RoomId,
    /// Event.
    pub event_id: EventId,
    /// Channel that delivered it.
    pub channel_id: ChannelId,
}

#[derive(Default)]
struct Receipts {
    map: HashMap<String, ReceiptRef>,
    order: VecDeque<String>,
}

/// The engine's resilience state.
pub(crate) struct Resilience {
    pub(crate) config: ResilienceConfig,
    breakers: DashMap<ChannelId, Arc<CircuitBreaker>>,
    binding_limits: DashMap<(RoomId, ChannelId), Arc<RateLimiter>>,
    channel_limits: DashMap<ChannelId, Arc<RateLimiter>>,
    receipts: Mutex<Receipts>,
}

impl Resilience {
    pub(crate) fn new(config: ResilienceConfig) -> Self {
        Self {
            config,
            breakers: DashMap::new(),
            binding_limits: DashMap::new(),
            channel_limits: DashMap::new(),
            receipts: Mutex::new(Receipts::default()),
        }
    }

    fn breaker(&self, channel_id: &ChannelId) -> Arc<CircuitBreaker> {
        self.breakers
            .entry(channel_id.clone())
            .or_insert_with(|| {
                Arc::new(CircuitBreaker::new(
                    self.config.breaker_failure_threshold,
                    self.config.breaker_cooldown,
                ))
            })
            .clone()
    }

    fn limiter<K>(map: &DashMap<K, Arc<RateLimiter>>, key: K, limit: &RateLimit) -> Arc<RateLimiter>
    where
        K: std::hash::Hash + Eq + Clone,
    {
        if let Some(l) = map.get(&key)
            && l.limit == *limit
        {
            return l.clone();
        }
        let l = Arc::new(RateLimiter::new(limit));
        map.insert(key, l.clone());
        l
    }

    pub(crate) fn remember(&self, provider_message_id: &str, r: ReceiptRef) {
        if self.config.receipt_capacity == 0 {
            return;
        }
        let mut s = self.receipts.lock();
        if s.map.insert(provider_message_id.to_owned(), r).is_none() {
            s.order.push_back(provider_message_id.to_owned());
        }
        while s.order.len() > self.config.receipt_capacity {
            if let Some(old) = s.order.pop_front() {
                s.map.remove(&old);
            }
        }
    }

    pub(crate) fn lookup(&self, provider_message_id: &str) -> Option<ReceiptRef> {
        self.receipts.lock().map.get(provider_message_id).cloned()
    }
}

/// A drop guard that frees a half-open probe slot if the call is abandoned.
struct ProbeGuard<'a> {
    breaker: &'a CircuitBreaker,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.breaker.release_probe();
        }
    }
}

/// A random fraction in [0, 1) from the process's UUID generator.
fn random_fraction() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 75;
    bits as f64 / (1u64 << 53) as f64
}

/// The wait before retry number `attempt` (counted from 0): the policy's
/// delay, jittered, but never shorter than what the provider asked for.
pub fn retry_delay(
    policy: &RetryPolicy,
    attempt: u32,
    jitter: Jitter,
    retry_after_seconds: Option<f64>,
) -> Duration {
    let computed = policy.delay_seconds(attempt).max(0.0);
    let jittered = match jitter {
        Jitter::Full => computed * random_fraction(),
        Jitter::None => computed,
    };
    let wait = retry_after_seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(jittered, |ra| jittered.max(ra));
    Duration::from_secs_f64(wait.min(24.0 * 3600.0))
}

/// Whether a policy retries this error: it must be marked retryable and,
/// when the policy lists codes, have one of them (RFC §13.2).
pub fn should_retry(policy: &RetryPolicy, error: &ChannelError) -> bool {
    if !error.is_retryable() || error.code() == CIRCUIT_OPEN {
        return false;
    }
    policy.retryable_errors.is_empty() || policy.retryable_errors.iter().any(|c| c == error.code())
}

impl RoomKitBuilder {
    /// Sets the resilience settings (breaker, default retry, jitter).
    pub fn resilience(mut self, config: ResilienceConfig) -> Self {
        self.resilience = config;
        self
    }
}

impl RoomKit {
    /// The state of a channel's circuit breaker (CLOSED when it never ran).
    pub fn circuit_state(&self, channel_id: &ChannelId) -> BreakerState {
        self.inner
            .resilience
            .breakers
            .get(channel_id)
            .map_or(BreakerState::Closed, |b| b.state())
    }

    /// Delivers to one target with the binding's rate limits, the channel's
    /// breaker, the per-operation timeout and the binding's retry policy.
    pub(crate) async fn resilient_deliver(
        &self,
        t: &Target,
        ev: &RoomEvent,
        ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let res = &self.inner.resilience;
        let channel_id = &t.binding.channel_id;
        let policy = t
            .binding
            .retry_policy
            .clone()
            .or_else(|| res.config.default_retry_policy.clone());
        let breaker = res.breaker(channel_id);
        let mut attempt: u32 = 0;
        loop {
            self.wait_for_rate_limits(t, ev).await;
            let span = self.span(
                SpanName::Deliver,
                &[
                    (attr::ROOM_ID, ev.room_id.as_str().into()),
                    (attr::EVENT_ID, ev.id.as_str().into()),
                    (attr::CHANNEL_ID, channel_id.as_str().into()),
                    (attr::ATTEMPT, (attempt + 1).into()),
                ],
            );
            if !span.is_disabled()
                && let Some(provider) = t.channel.provider_name()
            {
                span.record(attr::PROVIDER, provider);
            }
            let probe = match breaker.admit() {
                Admission::Allowed { probe } => probe,
                Admission::Rejected { retry_after } => {
                    if !span.is_disabled() {
                        span.record(attr::OUTCOME, "circuit_open");
                        span.record(attr::ERROR_CODE, CIRCUIT_OPEN);
                    }
                    tracing::warn!(target: "roomkit.core.resilience", room_id = %ev.room_id, event_id = %ev.id, channel_id = %channel_id, "circuit open; delivery failed fast");
                    return Err(ChannelError::Provider {
                        provider: "roomkit".into(),
                        code: CIRCUIT_OPEN.into(),
                        message: format!("circuit breaker of channel {channel_id} is open"),
                        retryable: true,
                        retry_after_seconds: Some(retry_after.as_secs_f64()),
                    });
                }
            };
            let mut guard = ProbeGuard {
                breaker: &breaker,
                armed: probe,
            };
            let outcome = timed(span.clone(), self.timed_deliver(t, ev, ctx)).await;
            if !span.is_disabled() {
                match &outcome {
                    Ok(_) => span.record(attr::OUTCOME, "sent"),
                    Err(e) => {
                        span.record(attr::ERROR_CODE, e.code());
                        span.record(attr::OUTCOME, "failed")
                    }
                };
            }
            drop(span);
            guard.armed = false;
            drop(guard);
            match outcome {
                Ok(out) => {
                    if breaker.on_success(probe) == Transition::Closed {
                        tracing::info!(target: "roomkit.core.resilience", channel_id = %channel_id, "circuit breaker closed");
                        self.emit(FrameworkEvent::CircuitBreakerClosed {
                            channel_id: channel_id.clone(),
                        });
                    }
                    if let Some(pmid) = &out.provider_message_id {
                        res.remember(
                            pmid,
                            ReceiptRef {
                                room_id: ev.room_id.clone(),
                                event_id: ev.id.clone(),
                                channel_id: channel_id.clone(),
                            },
                        );
                    }
                    return Ok(out);
                }
                Err(e) => {
                    if let Transition::Opened(failure_count) = breaker.on_failure(probe) {
                        tracing::warn!(target: "roomkit.core.resilience", channel_id = %channel_id, failure_count, "circuit breaker opened");
                        self.emit(FrameworkEvent::CircuitBreakerOpened {
                            channel_id: channel_id.clone(),
                            failure_count,
                        });
                    }
                    let Some(policy) = policy.as_ref() else {
                        return Err(e);
                    };
                    if attempt >= policy.max_retries || !should_retry(policy, &e) {
                        return Err(e);
                    }
                    let retry_after = match &e {
                        ChannelError::Provider {
                            retry_after_seconds,
                            ..
                        } => *retry_after_seconds,
                        _ => None,
                    };
                    let wait = retry_delay(policy, attempt, res.config.jitter, retry_after);
                    tracing::info!(target: "roomkit.core.resilience", room_id = %ev.room_id, event_id = %ev.id, channel_id = %channel_id, attempt, wait_ms = wait.as_millis() as u64, error = %e, "delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Waits for a slot in the binding's and the channel's token buckets.
    async fn wait_for_rate_limits(&self, t: &Target, ev: &RoomEvent) {
        let res = &self.inner.resilience;
        let mut wait = Duration::ZERO;
        if let Some(limit) = &t.binding.rate_limit {
            let key = (ev.room_id.clone(), t.binding.channel_id.clone());
            wait = wait.max(Resilience::limiter(&res.binding_limits, key, limit).reserve());
        }
        if let Some(limit) = &t.binding.capabilities.rate_limit {
            let key = t.binding.channel_id.clone();
            wait = wait.max(Resilience::limiter(&res.channel_limits, key, limit).reserve());
        }
        if !wait.is_zero() {
            tracing::debug!(target: "roomkit.core.resilience", room_id = %ev.room_id, channel_id = %t.binding.channel_id, wait_ms = wait.as_millis() as u64, "rate limited; delivery queued");
            tokio::time::sleep(wait).await;
        }
    }

    /// One `deliver()` call with the per-operation timeout and panic
    /// containment.
    async fn timed_deliver(
        &self,
        t: &Target,
        ev: &RoomEvent,
        ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let limit = self.inner.config.delivery_timeout;
        let fut = AssertUnwindSafe(t.channel.deliver(ev, &t.binding, ctx)).catch_unwind();
        match tokio::time::timeout(limit, fut).await {
            Err(_) => Err(ChannelError::Timeout(limit.as_millis() as u64)),
            Ok(Err(panic)) => Err(ChannelError::Provider {
                provider: "channel".into(),
                code: "panic".into(),
                message: format!("channel panicked: {}", panic_message(&panic)),
                retryable: false,
                retry_after_seconds: None,
            }),
            Ok(Ok(r)) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_half_opens_and_closes() {
        let b = CircuitBreaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            assert_eq!(b.admit(), Admission::Allowed { probe: false });
            assert_eq!(b.on_failure(false), Transition::None);
        }
        assert_eq!(b.admit(), Admission::Allowed { probe: false });
        assert_eq!(b.on_failure(false), Transition::Opened(3));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Admission::Rejected { .. }));
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Admission::Allowed { probe: true });
        // Exactly one probe.
        assert!(matches!(b.admit(), Admission::Rejected { .. }));
        assert_eq!(b.on_failure(true), Transition::Opened(4));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(matches!(b.admit(), Admission::Rejected { .. }));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(), Admission::Allowed { probe: true });
        assert_eq!(b.on_success(true), Transition::Closed);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(2, Duration::from_secs(1));
        b.on_failure(false);
        b.on_success(false);
        assert_eq!(b.on_failure(false), Transition::None);
        assert_eq!(b.on_failure(false), Transition::Opened(2));
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_queues_instead_of_dropping() {
        let t = TokenBucket::new(2.0, 2.0);
        assert_eq!(t.reserve(), Duration::ZERO);
        assert_eq!(t.reserve(), Duration::ZERO);
        assert_eq!(t.reserve(), Duration::from_millis(500));
        assert_eq!(t.reserve(), Duration::from_millis(1000));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.reserve(), Duration::from_millis(500));
    }

    #[test]
    fn delays_follow_the_policy_and_honour_retry_after() {
        let p = RetryPolicy::default();
        let d: Vec<f64> = (0..6)
            .map(|a| retry_delay(&p, a, Jitter::None, None).as_secs_f64())
            .collect();
        assert_eq!(d, vec![0.5, 1.0, 2.0, 4.0, 8.0, 10.0]);
        for a in 0..6 {
            let j = retry_delay(&p, a, Jitter::Full, None).as_secs_f64();
            assert!(j <= p.delay_seconds(a), "full jitter stays under the cap");
        }
        assert_eq!(
            retry_delay(&p, 0, Jitter::Full, Some(7.0)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn only_retryable_listed_errors_are_retried() {
        let e = |code: &str, retryable| ChannelError::Provider {
            provider: "p".into(),
            code: code.into(),
            message: "m".into(),
            retryable,
            retry_after_seconds: None,
        };
        let mut p = RetryPolicy::default();
        assert!(should_retry(&p, &e("500", true)));
        assert!(!should_retry(&p, &e("400", false)));
        assert!(!should_retry(&p, &e(CIRCUIT_OPEN, true)));
        p.retryable_errors = vec!["429".into()];
        assert!(!should_retry(&p, &e("500", true)));
        assert!(should_retry(&p, &e("429", true)));
    }
}
