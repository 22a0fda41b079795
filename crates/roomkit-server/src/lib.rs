//! The RoomKit server: a thin HTTP surface over the engine.
//!
//! It translates REST calls, WebSocket frames and HTTP hook calls into calls
//! of [`roomkit_core::RoomKit`] and back; every rule lives in the core. This
//! crate is the only one that knows HTTP status codes.
//!
//! Start one with [`Server::new`] and [`Server::run`]; register the
//! [`WebSocketChannel`]s with the engine first, all sharing one
//! [`ConnectionRegistry`].

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod calls;
pub mod conn;
pub mod error;
pub mod extract;
pub mod hooks;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod openapi;
pub mod state;
pub mod ui;
pub mod voice;
pub mod webhooks;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use roomkit_core::RoomKit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ServerError};
pub use hooks::{HttpHookConfig, OnError};
pub use identity::HttpIdentityResolver;
pub use state::AppState;
pub use ws::{ConnectionRegistry, WebSocketChannel};

/// Default limit of request bodies and WebSocket messages: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How the server listens and guards its endpoints.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub addr: SocketAddr,
    /// Key REST and WebSocket clients must present, when set.
    pub api_key: Option<auth::ApiKey>,
    /// Requests per second per key, when set.
    pub rate_limit_per_key: Option<u32>,
    /// Largest request body.
    pub body_limit: usize,
    /// Largest WebSocket message.
    pub frame_limit: usize,
    /// How long shutdown waits for open requests and connections.
    pub drain_timeout: Duration,
    /// The public URL providers sign webhooks against (`https://host`);
    /// without it the request's own URL is used.
    pub public_url: Option<String>,
    /// Keys scoped to one organization each (RFC §17.2).
    pub tenant_keys: Vec<auth::TenantKey>,
    /// Inbound WebSocket frames per second per connection, when limited.
    pub ws_rate_limit_per_connection: Option<u32>,
    /// Webhook messages per minute per sender address and route, when
    /// limited.
    pub webhook_rate_limit_per_sender: Option<u32>,
    /// Webhook messages per minute and route from senders the server has
    /// not seen before (each may open a room), when limited.
    pub webhook_new_senders_per_minute: Option<u32>,
    /// Connection caps and timeouts of the listener and WebSocket.
    pub limits: conn::ConnectionLimits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            rate_limit_per_key: None,
            body_limit: DEFAULT_BODY_LIMIT,
            frame_limit: DEFAULT_BODY_LIMIT,
            drain_timeout: Duration::from_secs(10),
            public_url: None,
            tenant_keys: Vec::new(),
            ws_rate_limit_per_connection: None,
            webhook_rate_limit_per_sender: None,
            webhook_new_senders_per_minute: None,
            limits: conn::ConnectionLimits::default(),
        }
    }
}

/// A configured server, ready to run.
pub struct Server {
    state: AppState,
    options: ServerOptions,
    call_reports: Option<std::path::PathBuf>,
    /// The socket bound by [`Server::bind`], if it was called.
    listener: Option<tokio::net::TcpListener>,
}

/// An HTTP client for hooks and the identity resolver, under the outbound
/// rules of [`roomkit_channels::outbound`]: no redirects, bounded connect
/// time. Each call also runs under its hook's or resolver's own timeout;
/// the client's total limit is only a backstop.
///
/// # Errors
/// When the client cannot be built.
pub fn http_client() -> Result<reqwest::Client, ServerError> {
    roomkit_channels::outbound::builder(
        roomkit_channels::outbound::DEFAULT_CONNECT_TIMEOUT,
        Duration::from_secs(300),
    )
    .build()
    .map_err(|e| ServerError::config("http client", e.to_string()))
}

impl Server {
    /// A server over `kit`, whose WebSocket channels use `connections`.
    pub fn new(kit: RoomKit, connections: Arc<ConnectionRegistry>, options: ServerOptions) -> Self {
        let state = AppState {
            kit,
            connections,
            api_key: options.api_key.clone(),
            limiter: options
                .rate_limit_per_key
                .map(|n| Arc::new(auth::RateLimiter::new(n))),
            metrics: Arc::new(metrics::Metrics::default()),
            body_limit: options.body_limit,
            frame_limit: options.frame_limit,
            shutdown: CancellationToken::new(),
            ws_tasks: TaskTracker::new(),
            webhooks: Arc::new(Vec::new()),
            public_url: options.public_url.as_deref().map(Arc::from),
            tenant_keys: Arc::new(options.tenant_keys.clone()),
            ws_rate_limit: options.ws_rate_limit_per_connection,
            // Also the memory of seen senders when only new ones are limited.
            webhook_sender_limiter: match (
                options.webhook_rate_limit_per_sender,
                options.webhook_new_senders_per_minute,
            ) {
                (Some(n), _) => Some(Arc::new(auth::RateLimiter::per_minute(n))),
                (None, Some(_)) => Some(Arc::new(auth::RateLimiter::per_minute(u32::MAX))),
                (None, None) => None,
            },
            webhook_new_sender_limiter: options
                .webhook_new_senders_per_minute
                .map(|n| Arc::new(auth::RateLimiter::per_minute(n))),
            ws_limits: Arc::new(ws::WsLimits::new(
                options.limits.ws_connections_per_key,
                options.limits.ws_send_timeout,
            )),
            media: Arc::new(Vec::new()),
            dialers: Arc::new(Vec::new()),
        };
        Self {
            state,
            options,
            call_reports: None,
            listener: None,
        }
    }

    /// Mounts a provider's webhook receiver for `channel_id` at
    /// `/webhooks/{channel_type}/{provider}` (and `.../status`).
    #[must_use]
    pub fn with_webhook_receiver(
        mut self,
        channel_id: impl Into<roomkit_core::model::ChannelId>,
        receiver: Arc<dyn roomkit_channels::WebhookReceiver>,
    ) -> Self {
        let mut all = (*self.state.webhooks).clone();
        let channel_id = channel_id.into();
        tracing::info!(target: "roomkit.server.webhooks", channel_id = %channel_id, path = %webhooks::path_of(receiver.as_ref()), "webhook mounted");
        all.push(webhooks::MountedReceiver {
            channel_id,
            receiver,
        });
        self.state.webhooks = Arc::new(all);
        self
    }

    /// Mounts a voice channel's media socket endpoint at
    /// `/voice/{provider}/media` (its call webhook is a webhook receiver,
    /// mounted with [`Server::with_webhook_receiver`]).
    #[must_use]
    pub fn with_media_endpoint(mut self, endpoint: Arc<dyn roomkit_voice::MediaEndpoint>) -> Self {
        let mut all = (*self.state.media).clone();
        tracing::info!(target: "roomkit.server.voice", channel_id = %endpoint.channel_id(), path = %format!("/voice/{}/media", endpoint.provider()), "media endpoint mounted");
        all.push(endpoint);
        self.state.media = Arc::new(all);
        self
    }

    /// Lets `POST /voice/calls` place outbound calls through a voice
    /// channel's dialer.
    #[must_use]
    pub fn with_call_dialer(mut self, dialer: Arc<dyn roomkit_voice::CallDialer>) -> Self {
        let mut all = (*self.state.dialers).clone();
        tracing::info!(target: "roomkit.server.voice", channel_id = %dialer.channel_id(), provider = %dialer.provider(), ready = dialer.ready().is_ok(), "outbound call dialer mounted");
        all.push(dialer);
        self.state.dialers = Arc::new(all);
        self
    }

    /// Serves the call reports under `dir` (see [`calls`]).
    #[must_use]
    pub fn with_call_reports(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.call_reports = Some(dir.into());
        self
    }

    /// The router (for tests that drive it without a socket). The call
    /// report pages are merged before the layers, so the key check,
    /// metrics, body limit and panic catching cover them too.
    pub fn router(&self) -> Router {
        let app = routes();
        let app = match &self.call_reports {
            Some(dir) => app.merge(calls::routes(dir.clone(), self.state.kit.clone())),
            None => app,
        };
        layered(app, self.state.clone())
    }

    /// Binds the listening socket now, before anything else is started, so
    /// that a process that cannot serve (address in use) fails before it
    /// touches shared state; [`Server::run`] then serves on it.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be used.
    pub async fn bind(mut self) -> Result<Self, ServerError> {
        if self.listener.is_none() {
            self.listener = Some(bind_listener(self.options.addr).await?);
        }
        Ok(self)
    }

    /// Listens (on the socket of [`Server::bind`], or binds now), prints `roomkit listening on http://ADDR` on stdout once
    /// connections are accepted, serves until `shutdown` completes, then
    /// drains: stops accepting, finishes open requests, closes WebSocket
    /// connections (code 1001) and shuts the engine down.
    ///
    /// # Errors
    /// [`ServerError::Bind`] when the address cannot be used.
    pub async fn run<F>(mut self, shutdown: F) -> Result<(), ServerError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = match self.listener.take() {
            Some(l) => l,
            None => bind_listener(self.options.addr).await?,
        };
        let local = listener.local_addr()?;
        let state = self.state.clone();
        let hub = ws::spawn_hub(
            &state.kit,
            state.connections.clone(),
            state.metrics.clone(),
            state.shutdown.clone(),
        );
        let voice_metrics = metrics::spawn_voice_metrics(&state.kit, state.metrics.clone());
        let app = self.router();
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "roomkit listening on http://{local}");
            let _ = out.flush();
        }
        tracing::info!(target: "roomkit.server", addr = %local, "listening");
        let token = state.shutdown.clone();
        let signal = tokio::spawn(async move {
            shutdown.await;
            tracing::info!(target: "roomkit.server", "shutting down: no new connections");
            // Stops the accept loop, asks connections to finish their
            // current request, and closes upgraded ones.
            token.cancel();
        });
        conn::serve(
            listener,
            app,
            &self.options.limits,
            state.metrics.clone(),
            state.shutdown.clone(),
            self.options.drain_timeout,
        )
        .await;
        signal.abort();
        state.ws_tasks.close();
        if tokio::time::timeout(self.options.drain_timeout, state.ws_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(target: "roomkit.server", "websocket connections did not close in time");
        }
        hub.abort();
        voice_metrics.abort();
        if tokio::time::timeout(self.options.drain_timeout, state.kit.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(target: "roomkit.server", "engine did not drain in time");
        }
        tracing::info!(target: "roomkit.server", "stopped");
        Ok(())
    }
}

/// Binds the server's listening socket.
async fn bind_listener(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })
}

fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = if let Some(s) = err.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = err.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "unknown panic".to_owned()
    };
    tracing::error!(target: "roomkit.server", panic = %detail, "a request handler panicked");
    ApiError::internal("the server failed while handling this request").into_response()
}

/// The complete router: REST, WebSocket, health, metrics, docs and the web
/// chat, behind the auth, metrics, body-limit and panic layers.
pub fn router(state: AppState) -> Router {
    layered(routes(), state)
}

/// Every route of the server, without layers.
fn routes() -> Router<AppState> {
    use api::*;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::serve))
        .route("/", get(ui::index))
        .route("/app.js", get(ui::script))
        .route("/style.css", get(ui::style))
        .route("/channels", get(list_channels))
        .route("/rooms", post(create_room).get(list_rooms))
        .route(
            "/rooms/{id}",
            get(get_room).patch(update_room).delete(delete_room),
        )
        .route(
            "/rooms/{id}/channels",
            post(attach_channel).get(list_bindings),
        )
        .route(
            "/rooms/{id}/channels/{cid}",
            patch(update_binding).delete(detach_channel),
        )
        .route("/rooms/{id}/channels/{cid}/mute", post(mute))
        .route("/rooms/{id}/channels/{cid}/unmute", post(unmute))
        .route("/rooms/{id}/events", post(send_event))
        .route("/rooms/{id}/events/{eid}", get(get_event))
        .route("/rooms/{id}/timeline", get(timeline))
        .route(
            "/rooms/{id}/participants",
            post(add_participant).get(list_participants),
        )
        .route(
            "/rooms/{id}/participants/{pid}",
            axum::routing::delete(remove_participant),
        )
        .route(
            "/rooms/{id}/participants/{pid}/resolve",
            post(resolve_participant),
        )
        .route("/rooms/{id}/tasks", get(list_tasks))
        .route("/tasks/{id}", patch(update_task))
        .route("/rooms/{id}/observations", get(list_observations))
        .route("/identities", post(create_identity))
        .route("/identities/resolve", get(resolve_identity))
        .route("/identities/{id}", get(get_identity).patch(update_identity))
        .route(
            "/webhooks/{channel_type}/{provider}",
            post(webhooks::inbound),
        )
        .route(
            "/webhooks/{channel_type}/{provider}/status",
            post(webhooks::status),
        )
        .route("/ws/{room_id}", get(ws::upgrade))
        .route("/voice/{provider}/media", get(voice::media))
        .route("/voice/calls", post(voice::create_call))
        .route(
            "/voice/calls/{call_sid}/transfer",
            post(voice::transfer_call),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `routes` behind the auth, body-limit, metrics and panic layers.
fn layered(routes: Router<AppState>, state: AppState) -> Router {
    let body_limit = state.body_limit;
    routes
        .layer(axum::middleware::from_fn(error::json_error_shape))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}
