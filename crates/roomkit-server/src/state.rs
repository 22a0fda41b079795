//! The shared state of the HTTP surface.

use std::sync::Arc;

use roomkit_core::RoomKit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{ApiKey, RateLimiter, TenantKey};
use crate::metrics::Metrics;
use crate::webhooks::MountedReceiver;
use crate::ws::ConnectionRegistry;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The engine every endpoint calls.
    pub kit: RoomKit,
    /// Live WebSocket connections by room.
    pub connections: Arc<ConnectionRegistry>,
    /// The API key, when one is required.
    pub api_key: Option<ApiKey>,
    /// Per-key request limiter, when configured.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Counters served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Largest accepted WebSocket message, in bytes.
    pub frame_limit: usize,
    /// Cancelled when the server shuts down (closes WebSocket connections).
    pub shutdown: CancellationToken,
    /// WebSocket connection tasks, awaited on shutdown.
    pub ws_tasks: TaskTracker,
    /// Provider webhook receivers of the configured transport channels.
    pub webhooks: Arc<Vec<MountedReceiver>>,
    /// The public URL providers sign webhooks against, when configured.
    pub public_url: Option<Arc<str>>,
    /// Keys scoped to one organization each.
    pub tenant_keys: Arc<Vec<TenantKey>>,
    /// Inbound WebSocket frames per second per connection, when limited.
    pub ws_rate_limit: Option<u32>,
    /// Webhook messages per minute per sender and route, when limited.
    pub webhook_sender_limiter: Option<Arc<RateLimiter>>,
    /// Webhook messages from senders not seen before, per minute and
    /// route, when limited.
    pub webhook_new_sender_limiter: Option<Arc<RateLimiter>>,
    /// WebSocket caps: connections per key, slow-client timeout.
    pub ws_limits: Arc<crate::ws::WsLimits>,
    /// Media socket endpoints of the configured voice channels.
    pub media: Arc<Vec<Arc<dyn roomkit_voice::MediaEndpoint>>>,
    /// Outbound call dialers of the configured voice channels.
    pub dialers: Arc<Vec<Arc<dyn roomkit_voice::CallDialer>>>,
}
