//! Bearer-key authentication, per-key rate limiting and tenant scoping, as
//! one middleware.
//!
//! `/healthz`, the web chat assets, `/openapi.json`, `/webhooks/*` and
//! the media sockets `/voice/{provider}/media` never take the key (webhooks
//! and media sockets are verified by their provider's signature, or by the
//! endpoint's own key check); `POST /voice/calls` does.
//! WebSocket upgrades also accept the key as `?token=`. A request is
//! charged to the verified key's bucket, or on an open server to its
//! client address; a tenant key confines the request to one organization
//! ([`Scope`]).

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
        || is_media_socket(path)
}

/// `/voice/{provider}/media`: media sockets check the provider's signature
/// (or, for browser calls, the key) themselves. Other `/voice/` paths, such
/// as `POST /voice/calls`, take the key like the rest of the API.
fn is_media_socket(path: &str) -> bool {
    path.strip_prefix("/voice/")
        .and_then(|rest| rest.strip_suffix("/media"))
        .is_some_and(|provider| !provider.is_empty() && !provider.contains('/'))
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

/// Who a request acts for, put on every guarded request by [`guard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No key is configured: the API is open.
    Open,
    /// The global (operator) key.
    Global,
    /// A key scoped to one organization (RFC §17.2).
    Tenant(std::sync::Arc<str>),
}

/// A key scoped to one organization: it sees and changes only that
/// organization's rooms, identities, tasks and calls.
#[derive(Clone)]
pub struct TenantKey {
    /// The organization the key belongs to.
    pub organization_id: std::sync::Arc<str>,
    /// The secret.
    pub key: ApiKey,
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKey")
            .field("organization_id", &self.organization_id)
            .field("key", &self.key)
            .finish()
    }
}

/// The organization a request is confined to, read from the request's
/// [`Principal`]: `None` sees every organization (open server, global key).
#[derive(Debug, Clone, Default)]
pub struct Scope(pub Option<std::sync::Arc<str>>);

impl Scope {
    /// The organization, when the request is confined to one.
    pub fn organization(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// True when this scope may see something of `organization_id`.
    pub fn allows(&self, organization_id: Option<&str>) -> bool {
        match &self.0 {
            None => true,
            Some(org) => organization_id == Some(&**org),
        }
    }

    /// Refuses a tenant key: 403 for endpoints only operators may use.
    ///
    /// # Errors
    /// 403 `forbidden` for a tenant key.
    pub fn operator_only(&self) -> Result<(), ApiError> {
        match &self.0 {
            None => Ok(()),
            Some(_) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint needs the global API key",
            )),
        }
    }

    /// The organization a created resource gets: the requested one for an
    /// unscoped request; for a tenant key its own (when none or the same is
    /// requested), 403 otherwise.
    ///
    /// # Errors
    /// 403 `organization_forbidden` when a tenant key names another
    /// organization.
    pub fn owner(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        match (&self.0, requested) {
            (None, r) => Ok(r),
            (Some(org), None) => Ok(Some(org.to_string())),
            (Some(org), Some(r)) if *r == **org => Ok(Some(r)),
            (Some(_), Some(_)) => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "organization_forbidden",
                "invalid field `organization_id`: this API key belongs to another organization",
            )),
        }
    }

    /// Checks that a room is visible in this scope; a room of another
    /// organization is reported exactly like a room that does not exist.
    ///
    /// # Errors
    /// 404 `room_not_found`, or the store's error.
    pub async fn check_room(
        &self,
        kit: &roomkit_core::RoomKit,
        id: &roomkit_core::model::RoomId,
    ) -> Result<(), ApiError> {
        if self.0.is_none() {
            return Ok(());
        }
        match kit.get_room(id).await {
            Ok(room) if self.allows(room.organization_id.as_deref()) => Ok(()),
            Ok(_) => Err(roomkit_core::RoomKitError::RoomNotFound(id.clone()).into()),
            Err(e) => Err(e.into()),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Scope {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(match parts.extensions.get::<Principal>() {
            Some(Principal::Tenant(org)) => Scope(Some(org.clone())),
            _ => Scope(None),
        })
    }
}

/// Finds who presents `key`: the global key, or a tenant key. Every key is
/// compared, so the time taken does not say which one matched.
fn identify(state: &AppState, key: Option<&str>) -> Option<Principal> {
    let key = key?;
    let mut found = None;
    if state.api_key.as_ref().is_some_and(|k| k.matches(key)) {
        found = Some(Principal::Global);
    }
    for t in state.tenant_keys.iter() {
        if t.key.matches(key) && found.is_none() {
            found = Some(Principal::Tenant(t.organization_id.clone()));
        }
    }
    found
}

/// The bucket of a client address: the address itself, or its /64 for
/// IPv6 (one host usually holds a whole /64).
fn address_bucket(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip6:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The first path segment after `/rooms/`, decoded, for the room check of
/// tenant keys.
fn room_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/rooms/")?;
    let segment = rest.split('/').next().unwrap_or("");
    if segment.is_empty() {
        return None;
    }
    Some(percent_decode_path(segment))
}

/// Percent-decoding of a path segment (`+` stays a plus, as in the router).
fn percent_decode_path(s: &str) -> String {
    percent_decode(&s.replace('+', "%2B"))
}

/// The middleware: 401 without a valid key (when one is configured), 429
/// beyond the rate, and the organization check of tenant keys on
/// `/rooms/{id}/...`. The request carries its [`Principal`] onwards.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = presented_key(&req);
    let keyed = state.api_key.is_some() || !state.tenant_keys.is_empty();
    let principal = if keyed {
        match identify(&state, presented.as_deref()) {
            Some(p) => p,
            None => return ApiError::unauthorized().into_response(),
        }
    } else {
        Principal::Open
    };
    if let Some(limiter) = &state.limiter {
        // A verified key is the bucket; without one, the client's address.
        // An unverified token never names a bucket.
        let bucket = match &principal {
            Principal::Global => "key:global".to_owned(),
            Principal::Tenant(org) => format!("key:tenant:{org}"),
            Principal::Open => req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| address_bucket(c.0.ip()))
                .unwrap_or_else(|| "anonymous".into()),
        };
        if let Err(wait) = limiter.check(&bucket) {
            state.metrics.rate_limited();
            tracing::debug!(target: "roomkit.server.auth", bucket = %bucket, "request rate limited");
            return ApiError::rate_limited(wait.as_secs().max(1)).into_response();
        }
    }
    if let Principal::Tenant(org) = &principal {
        let scope = Scope(Some(org.clone()));
        if req.uri().path() == "/metrics"
            && let Err(e) = scope.operator_only()
        {
            return e.into_response();
        }
        if let Some(room) = room_of_path(req.uri().path())
            && let Err(e) = scope
                .check_room(&state.kit, &roomkit_core::model::RoomId::from(room))
                .await
        {
            return e.into_response();
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// One token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
            rate: rate_per_second,
            burst,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token, or says how long until one is there.
    ///
    /// # Errors
    /// The wait when the bucket is empty.
    pub fn take(&mut self) -> Result<(), Duration> {
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// True when the bucket would be full by `now` (it holds no state).
    fn is_idle(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }
}

/// Token buckets by name, bounded: at most [`MAX_BUCKETS`] are kept; idle
/// (full) ones go first, then the least recently used.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Buckets kept before the least useful ones are dropped.
pub const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    /// A limiter of `per_second` requests per second per key, in bursts of
    /// the same size.
    pub fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Self::with_rate(rate, rate)
    }

    /// A limiter of `per_minute` per key, in bursts of the same size.
    pub fn per_minute(per_minute: u32) -> Self {
        let n = f64::from(per_minute.max(1));
        Self::with_rate(n / 60.0, n)
    }

    fn with_rate(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// True when `key` has a bucket (it was seen and not yet evicted).
    pub fn knows(&self, key: &str) -> bool {
        self.buckets.lock().contains_key(key)
    }

    /// Buckets currently held.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            buckets.retain(|_, b| !b.is_idle(now));
            if buckets.len() >= MAX_BUCKETS {
                // Still full: drop the least recently used tenth.
                let mut ages: Vec<(Instant, String)> =
                    buckets.iter().map(|(k, b)| (b.last, k.clone())).collect();
                ages.sort_unstable();
                for (_, k) in ages.into_iter().take(MAX_BUCKETS / 10) {
                    buckets.remove(&k);
                }
            }
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::new(self.rate, self.burst))
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_sockets_under_voice_are_public() {
        for open in [
            "/voice/twilio/media",
            "/voice/browser/media",
            "/webhooks/voice/twilio",
        ] {
            assert!(is_public(open), "{open}");
        }
        for keyed in [
            "/voice/calls",
            "/voice/",
            "/voice//media",
            "/voice/a/b/media",
            "/voice/twilio/media/x",
        ] {
            assert!(!is_public(keyed), "{keyed}");
        }
    }

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
    fn the_bucket_table_stays_bounded() {
        let l = RateLimiter::new(1);
        for i in 0..MAX_BUCKETS + 500 {
            let _ = l.check(&format!("token-{i}"));
        }
        assert!(l.len() <= MAX_BUCKETS, "{} buckets", l.len());
        // The newest key kept its (spent) bucket.
        assert!(l.check(&format!("token-{}", MAX_BUCKETS + 499)).is_err());
    }

    #[test]
    fn per_minute_buckets_and_memory() {
        let l = RateLimiter::per_minute(2);
        assert!(!l.knows("s"));
        assert!(l.check("s").is_ok());
        assert!(l.knows("s"));
        assert!(l.check("s").is_ok());
        assert!(l.check("s").is_err());
    }

    #[test]
    fn addresses_name_buckets() {
        let v4: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(address_bucket(v4), "ip:10.1.2.3");
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_bucket(a), address_bucket(b), "one /64, one bucket");
        let mapped: std::net::IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(address_bucket(mapped), "ip:10.1.2.3");
    }

    #[test]
    fn room_ids_are_read_from_paths() {
        assert_eq!(room_of_path("/rooms/r1"), Some("r1".into()));
        assert_eq!(room_of_path("/rooms/a%20b/timeline"), Some("a b".into()));
        assert_eq!(room_of_path("/rooms/a+b"), Some("a+b".into()));
        assert_eq!(room_of_path("/rooms"), None);
        assert_eq!(room_of_path("/rooms/"), None);
        assert_eq!(room_of_path("/identities/x"), None);
    }

    #[test]
    fn scopes_confine_tenants() {
        let all = Scope(None);
        let acme = Scope(Some("acme".into()));
        assert!(all.allows(None) && all.allows(Some("x")));
        assert!(acme.allows(Some("acme")));
        assert!(!acme.allows(Some("globex")) && !acme.allows(None));
        assert_eq!(acme.owner(None).unwrap().as_deref(), Some("acme"));
        assert_eq!(
            acme.owner(Some("acme".into())).unwrap().as_deref(),
            Some("acme")
        );
        assert_eq!(
            acme.owner(Some("globex".into()))
                .unwrap_err()
                .status
                .as_u16(),
            403
        );
        assert_eq!(
            all.owner(Some("globex".into())).unwrap().as_deref(),
            Some("globex")
        );
        assert!(all.operator_only().is_ok() && acme.operator_only().is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
