//! Bearer-key authentication and per-key rate limiting, as one middleware.
//!
//! `/healthz`, the web chat assets, `/openapi.json`, `/webhooks/*` and
//! `/voice/*` never take the key (webhooks and media sockets are verified
//! by their provider's signature).
//! WebSocket upgrades also accept the key as `?token=`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use crate::error::ApiError;
use crate::state::AppState;

/// A secret API key. Its `Debug` form never shows the value.
#[derive(Clone)]
pub struct ApiKey(std::sync::Arc<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<std::sync::Arc<str>>) -> Self {
        Self(key.into())
    }

    /// Compares in time independent of where the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        let a = self.0.as_bytes();
        let b = candidate.as_bytes();
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Paths served without the key.
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz" | "/openapi.json" | "/app.js" | "/style.css" | "/favicon.ico" | "/calls"
    ) || path.starts_with("/webhooks/")
        || path.starts_with("/voice/")
}

fn presented_key(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(AUTHORIZATION)
        && let Ok(text) = h.to_str()
    {
        let mut parts = text.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim().to_owned());
        }
        return None;
    }
    if req.uri().path().starts_with("/ws/") {
        let query = req.uri().query().unwrap_or("");
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                return Some(percent_decode(v));
            }
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The middleware: 401 without a valid key (when one is configured), 429
/// beyond the per-key rate.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let key = presented_key(&req);
    if let Some(expected) = &state.api_key
        && !key.as_deref().is_some_and(|k| expected.matches(k))
    {
        return ApiError::unauthorized().into_response();
    }
    if let Some(limiter) = &state.limiter {
        // Without a key the client's address is the bucket.
        let bucket = match key {
            Some(k) => format!("key:{k}"),
            None => req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| format!("ip:{}", c.0.ip()))
                .unwrap_or_else(|| "anonymous".into()),
        };
        if let Err(wait) = limiter.check(&bucket) {
            state.metrics.rate_limited();
            return ApiError::rate_limited(wait.as_secs().max(1)).into_response();
        }
    }
    next.run(req).await
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per key: `rate` requests per second, bursts of `rate`.
pub struct RateLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    /// A limiter of `per_second` requests per second per key.
    pub fn new(per_second: u32) -> Self {
        Self {
            rate: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long to wait for one.
    ///
    /// # Errors
    /// The wait when the bucket is empty.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // Full buckets carry no state worth keeping.
            let rate = self.rate;
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < rate);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.rate,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        let k = ApiKey::new("secret");
        assert!(k.matches("secret"));
        assert!(!k.matches("secreT"));
        assert!(!k.matches("secret2"));
        assert!(!k.matches(""));
        assert!(!format!("{k:?}").contains("secret"));
    }

    #[test]
    fn bucket_allows_a_burst_then_refuses() {
        let l = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        assert!(l.check("a").is_err());
        assert!(l.check("b").is_ok(), "keys have separate buckets");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
