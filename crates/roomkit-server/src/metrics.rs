//! Counters of the server, written as Prometheus text at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use dashmap::DashMap;

use crate::state::AppState;

/// Request and connection counters.
#[derive(Default)]
pub struct Metrics {
    requests: DashMap<(String, String, u16), AtomicU64>,
    request_seconds_sum: AtomicU64,
    request_count: AtomicU64,
    ws_open: AtomicI64,
    ws_total: AtomicU64,
    ws_frames_in: AtomicU64,
    ws_frames_out: AtomicU64,
    ws_resyncs: AtomicU64,
    rate_limited: AtomicU64,
    events_seen: AtomicU64,
    conns_open: AtomicI64,
    conns_total: AtomicU64,
    conns_refused: AtomicU64,
    conns_overflow: AtomicU64,
    conns_header_timeouts: AtomicU64,
    conns_idle_timeouts: AtomicU64,
    ws_slow_closed: AtomicU64,
    ws_refused: AtomicU64,
}

/// Why the server closed a connection it had accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// A request head did not arrive in time.
    Header,
    /// A keep-alive connection sat idle too long.
    Idle,
}

impl Metrics {
    /// Records one answered request.
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
        self.request_count.fetch_add(1, Ordering::Relaxed);
        self.request_seconds_sum
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A WebSocket connection opened.
    pub fn ws_opened(&self) {
        self.ws_open.fetch_add(1, Ordering::Relaxed);
        self.ws_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket connection closed.
    pub fn ws_closed(&self) {
        self.ws_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A frame arrived from a client.
    pub fn frame_in(&self) {
        self.ws_frames_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame was sent to a client.
    pub fn frame_out(&self) {
        self.ws_frames_out.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection re-read the store to close a gap.
    pub fn resync(&self) {
        self.ws_resyncs.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused by the rate limiter.
    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A stored event reached the connection hub.
    pub fn event_seen(&self) {
        self.events_seen.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP connection was accepted and is being served.
    pub fn conn_opened(&self) {
        self.conns_open.fetch_add(1, Ordering::Relaxed);
        self.conns_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A served TCP connection closed.
    pub fn conn_closed(&self) {
        self.conns_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection over the caps was closed at once.
    pub fn conn_refused(&self) {
        self.conns_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection over the caps was answered by the overflow service
    /// (`/healthz`, or 503).
    pub fn conn_overflow(&self) {
        self.conns_overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// The server closed a connection for a timeout.
    pub fn conn_timed_out(&self, kind: TimeoutKind) {
        match kind {
            TimeoutKind::Header => &self.conns_header_timeouts,
            TimeoutKind::Idle => &self.conns_idle_timeouts,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket client fell behind and was closed.
    pub fn ws_slow_closed(&self) {
        self.ws_slow_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket upgrade was refused by the per-key cap.
    pub fn ws_refused(&self) {
        self.ws_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP roomkit_http_requests_total HTTP requests answered."
        );
        let _ = writeln!(out, "# TYPE roomkit_http_requests_total counter");
        let mut rows: Vec<_> = self
            .requests
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        rows.sort();
        for ((method, route, status), n) in rows {
            let _ = writeln!(
                out,
                "roomkit_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                route.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        let sum = self.request_seconds_sum.load(Ordering::Relaxed) as f64 / 1e6;
        let count = self.request_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP roomkit_http_request_duration_seconds Time to answer HTTP requests."
        );
        let _ = writeln!(out, "# TYPE roomkit_http_request_duration_seconds summary");
        let _ = writeln!(out, "roomkit_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "roomkit_http_request_duration_seconds_count {count}");
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "roomkit_ws_connections",
            "Open WebSocket connections.",
            self.ws_open.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_ws_connections_total",
            "WebSocket connections accepted.",
            self.ws_total.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_ws_frames_received_total",
            "WebSocket frames received from clients.",
            self.ws_frames_in.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_ws_frames_sent_total",
            "WebSocket frames sent to clients.",
            self.ws_frames_out.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_ws_resyncs_total",
            "Times a connection re-read the store to close a gap.",
            self.ws_resyncs.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_rate_limited_total",
            "Requests refused by the per-key rate limit.",
            self.rate_limited.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_events_stored_total",
            "Stored room events seen by this server.",
            self.events_seen.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "roomkit_connections",
            "Open TCP connections, WebSocket ones included.",
            self.conns_open.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_connections_total",
            "TCP connections accepted within the caps.",
            self.conns_total.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_connections_overflow_total",
            "Connections over the caps answered only for /healthz (503 otherwise).",
            self.conns_overflow.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_connections_refused_total",
            "Connections over the caps and the reserve, closed at once.",
            self.conns_refused.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP roomkit_connections_timed_out_total Connections closed by the server for a timeout.\n# TYPE roomkit_connections_timed_out_total counter\nroomkit_connections_timed_out_total{{reason=\"header\"}} {}\nroomkit_connections_timed_out_total{{reason=\"idle\"}} {}",
            self.conns_header_timeouts.load(Ordering::Relaxed),
            self.conns_idle_timeouts.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_ws_slow_closed_total",
            "WebSocket connections closed because the client fell behind.",
            self.ws_slow_closed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "roomkit_ws_refused_total",
            "WebSocket upgrades refused by the per-key connection cap.",
            self.ws_refused.load(Ordering::Relaxed),
        );
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut out,
                "process_resident_memory_bytes",
                "Resident memory of the server process.",
                rss,
            );
        }
        out
    }
}

/// Resident memory of this process, from `/proc` (Linux only).
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The `method` label: one of a fixed set, so a client cannot add series
/// by inventing methods.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware that counts every answered request by route template.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    state.metrics.request(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_label_has_a_fixed_set_of_values() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::OPTIONS), "OPTIONS");
        assert_eq!(method_label(&Method::CONNECT), "other");
        let invented = Method::from_bytes(b"XYZZY").unwrap_or(Method::TRACE);
        assert_eq!(method_label(&invented), "other");
    }

    #[test]
    fn invented_methods_share_one_series() {
        let m = Metrics::default();
        for name in ["AAA", "BBB", "CCC"] {
            let method = axum::http::Method::from_bytes(name.as_bytes()).unwrap_or_default();
            m.request(method_label(&method), "unmatched", 405, Duration::ZERO);
        }
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("roomkit_http_requests_total{"))
            .count();
        assert_eq!(series, 1, "{text}");
    }
}
