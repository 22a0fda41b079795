//! The listener's own accept loop: connection caps, header and idle
//! timeouts, and a small reserve that keeps `/healthz` answering when the
//! caps are reached.
//!
//! Every accepted TCP connection takes a slot: one of `max_connections`
//! overall and one of `max_connections_per_ip` for its client address. The
//! slot travels with the socket, so a connection upgraded to WebSocket keeps
//! holding it until it closes. A connection over either cap is served by the
//! overflow service instead, while one of the few reserve slots is free:
//! `GET /healthz` is answered, anything else gets 503 and the connection is
//! closed. Beyond the reserve a connection is closed at once. Nothing is
//! ever queued.
//!
//! A watchdog per connection closes it when a request head takes longer
//! than the header timeout to arrive (counted from the accept, or from the
//! first byte after the previous answer) and when a keep-alive connection
//! stays idle longer than the idle timeout.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::{Metrics, TimeoutKind};

/// Default time a request head may take: 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a keep-alive connection may stay idle: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default ceiling of concurrent connections (lowered to fit the
/// open-file limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default concurrent connections of one client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;
/// Default concurrent WebSocket connections per key (or address).
pub const DEFAULT_WS_CONNECTIONS_PER_KEY: usize = 1024;
/// Default time a WebSocket write may wait for a client that does not read.
pub const DEFAULT_WS_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections over the caps that may still be answered (`/healthz`, or
/// 503) at once.
pub const OVERFLOW_SLOTS: usize = 64;
/// File descriptors kept free for the store, logs and outbound calls.
const SPARE_FDS: usize = 256;
/// The header timeout of overflow connections, at most.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Caps and timeouts of the listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Time a request head may take to arrive.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Concurrent connections; `None` derives it from the open-file limit
    /// (at most [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: Option<usize>,
    /// Concurrent connections of one client address.
    pub max_connections_per_ip: usize,
    /// Concurrent WebSocket connections per API key (per client address
    /// when no key is presented).
    pub ws_connections_per_key: usize,
    /// How long one WebSocket write may wait for a client that does not
    /// read before the client is closed as too slow.
    pub ws_send_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: None,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            ws_connections_per_key: DEFAULT_WS_CONNECTIONS_PER_KEY,
            ws_send_timeout: DEFAULT_WS_SEND_TIMEOUT,
        }
    }
}

/// The soft open-file limit of this process, read from `/proc` (Linux).
pub fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(usize::MAX);
    }
    soft.parse().ok()
}

impl ConnectionLimits {
    /// The connection cap in force: the configured one, or the default,
    /// lowered in both cases so that connections, the overflow reserve and
    /// some spare descriptors fit the open-file limit.
    pub fn effective_max(&self) -> usize {
        let wanted = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        match open_file_limit() {
            Some(fds) => wanted
                .min(fds.saturating_sub(SPARE_FDS + OVERFLOW_SLOTS))
                .max(1),
            None => wanted,
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    overflow: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Who may be served: counts of open connections against the caps.
struct Admission {
    max: usize,
    per_ip: usize,
    counts: Mutex<Counts>,
}

enum Admit {
    Full(Slot),
    Overflow(Slot),
    Refuse,
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Admit {
        let mut c = self.counts.lock();
        let of_ip = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total < self.max && of_ip < self.per_ip {
            c.total += 1;
            *c.per_ip.entry(ip).or_default() += 1;
            return Admit::Full(Slot {
                admission: self.clone(),
                ip: Some(ip),
            });
        }
        if c.overflow < OVERFLOW_SLOTS {
            c.overflow += 1;
            return Admit::Overflow(Slot {
                admission: self.clone(),
                ip: None,
            });
        }
        Admit::Refuse
    }
}

/// A place under the caps; given back when dropped (with the socket).
struct Slot {
    admission: Arc<Admission>,
    /// The client address of a full slot; `None` for an overflow slot.
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.admission.counts.lock();
        match self.ip {
            Some(ip) => {
                c.total = c.total.saturating_sub(1);
                if let Some(n) = c.per_ip.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.per_ip.remove(&ip);
                    }
                }
            }
            None => c.overflow = c.overflow.saturating_sub(1),
        }
    }
}

/// What a connection is doing, for its watchdog.
struct Phase {
    /// Requests being handled.
    in_flight: usize,
    /// No request has started yet.
    fresh: bool,
    /// When the last request was answered.
    idle_since: Instant,
    /// When the first byte of the next request head arrived.
    head_since: Option<Instant>,
}

struct Activity {
    accepted: Instant,
    phase: Mutex<Phase>,
    changed: Notify,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl Activity {
    fn new(header_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            accepted: now,
            phase: Mutex::new(Phase {
                in_flight: 0,
                fresh: true,
                idle_since: now,
                head_since: None,
            }),
            changed: Notify::new(),
            header_timeout,
            idle_timeout,
        })
    }

    fn bytes_read(&self) {
        let mut p = self.phase.lock();
        if p.in_flight == 0 && p.head_since.is_none() {
            p.head_since = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut p = self.phase.lock();
        p.in_flight += 1;
        p.fresh = false;
        p.head_since = None;
        drop(p);
        self.changed.notify_one();
    }

    fn request_ended(&self) {
        let mut p = self.phase.lock();
        p.in_flight = p.in_flight.saturating_sub(1);
        p.idle_since = Instant::now();
        p.head_since = None;
        drop(p);
        self.changed.notify_one();
    }

    /// When the connection must be closed, and why; `None` while a
    /// request is being handled.
    fn deadline(&self) -> Option<(Instant, TimeoutKind)> {
        let p = self.phase.lock();
        if p.in_flight > 0 {
            None
        } else if p.fresh {
            Some((self.accepted + self.header_timeout, TimeoutKind::Header))
        } else if let Some(h) = p.head_since {
            Some((h + self.header_timeout, TimeoutKind::Header))
        } else {
            Some((p.idle_since + self.idle_timeout, TimeoutKind::Idle))
        }
    }
}

/// Marks the end of a request when dropped (answered or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The socket, with its slot and the activity its watchdog reads.
struct Tracked {
    io: TcpStream,
    activity: Arc<Activity>,
    _slot: Slot,
    _open: Option<OpenConn>,
}

/// Keeps the open-connections gauge true, WebSocket connections included.
struct OpenConn(Arc<Metrics>);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.conn_closed();
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The answer of the overflow service: `/healthz` works, the rest is 503.
fn overflow_answer(req: &Request<Incoming>) -> Response<Body> {
    let health = req.uri().path() == "/healthz"
        && matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        );
    let (status, body) = if health {
        (StatusCode::OK, r#"{"status":"ok"}"#)
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":{"code":"too_many_connections","message":"the server is at its connection limit; retry later"}}"#,
        )
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if !health {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// Serves `listener` with `app` until `stop` is cancelled, then asks every
/// connection to finish its current request and waits up to `drain` for
/// them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    drain: Duration,
) {
    let max = limits.effective_max();
    tracing::info!(
        target: "roomkit.server.conn",
        max_connections = max,
        max_connections_per_ip = limits.max_connections_per_ip,
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        "connection limits"
    );
    let admission = Arc::new(Admission {
        max,
        per_ip: limits.max_connections_per_ip.max(1),
        counts: Mutex::new(Counts::default()),
    });
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or a connection reset before accept:
                // pause briefly instead of spinning.
                tracing::warn!(target: "roomkit.server.conn", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (slot, overflow) = match admission.admit(peer.ip()) {
            Admit::Full(s) => (s, false),
            Admit::Overflow(s) => {
                metrics.conn_overflow();
                tracing::debug!(target: "roomkit.server.conn", peer = %peer, "over the connection caps: overflow service");
                (s, true)
            }
            Admit::Refuse => {
                metrics.conn_refused();
                tracing::debug!(target: "roomkit.server.conn", peer = %peer, "over the connection caps and the reserve: closed");
                drop(stream);
                continue;
            }
        };
        let (header_timeout, idle_timeout) = if overflow {
            (
                limits.header_timeout.min(OVERFLOW_HEADER_TIMEOUT),
                limits.header_timeout.min(OVERFLOW_HEADER_TIMEOUT),
            )
        } else {
            (limits.header_timeout, limits.idle_timeout)
        };
        let activity = Activity::new(header_timeout, idle_timeout);
        let open = if overflow {
            None
        } else {
            metrics.conn_opened();
            Some(OpenConn(metrics.clone()))
        };
        let io = Tracked {
            io: stream,
            activity: activity.clone(),
            _slot: slot,
            _open: open,
        };
        tasks.spawn(connection(
            io,
            peer,
            app.clone(),
            overflow,
            activity,
            metrics.clone(),
            stop.clone(),
        ));
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
        tracing::warn!(target: "roomkit.server.conn", "connections did not finish in time");
    }
}

async fn connection(
    io: Tracked,
    peer: SocketAddr,
    app: Router,
    overflow: bool,
    activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    if overflow {
        builder.http1().keep_alive(false);
    }
    let act = activity.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        act.request_started();
        let guard = InFlight(act.clone());
        let app = app.clone();
        async move {
            let _guard = guard;
            if overflow {
                return Ok::<_, Infallible>(overflow_answer(&req));
            }
            req.extensions_mut().insert(ConnectInfo(peer));
            app.oneshot(req).await
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = if stopping { None } else { activity.deadline() };
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(target: "roomkit.server.conn", peer = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = activity.changed.notified() => {}
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = sleep => {
                let Some((at, kind)) = activity.deadline() else { continue };
                if at > Instant::now() {
                    continue;
                }
                metrics.conn_timed_out(kind);
                tracing::debug!(target: "roomkit.server.conn", peer = %peer, reason = ?kind, "closing a connection for a timeout");
                if kind == TimeoutKind::Idle {
                    // Nothing in flight: let the protocol close politely,
                    // briefly.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                }
                return;
            }
        }
    }
}
