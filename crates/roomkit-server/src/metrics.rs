//! Counters of the server, written as Prometheus text at `/metrics`.
//!
//! Besides HTTP and connection counters, the server keeps voice figures
//! from the engine's framework events (see [`spawn_voice_metrics`]): calls
//! started and running, barge-ins, and per-turn latency histograms by
//! stage, as the voice channel measured them on each call's media clock.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use dashmap::DashMap;
use roomkit_core::RoomKit;
use roomkit_core::model::FrameworkEvent;
use tokio::sync::broadcast;

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
    voice: VoiceMetrics,
}

/// Stages of a voice turn, the `stage` label of
/// `roomkit_voice_turn_latency_seconds` (a fixed set).
pub const VOICE_STAGES: [&str; 5] = ["eou", "stt", "llm_ttft", "tts_ttfb", "voice_to_voice"];

/// Upper bounds, in seconds, of the voice latency buckets.
const VOICE_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

/// A histogram of seconds: a count per bucket (not cumulative; the render
/// adds them up), the number of values and their sum in microseconds.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; VOICE_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        if let Some(i) = VOICE_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6).round() as u64, Ordering::Relaxed);
    }
}

/// Voice figures, from framework events.
#[derive(Default)]
struct VoiceMetrics {
    calls_total: AtomicU64,
    calls_active: AtomicI64,
    turns_total: AtomicU64,
    unanswered_total: AtomicU64,
    barge_ins_total: AtomicU64,
    latency: [Histogram; VOICE_STAGES.len()],
    packets_lost_total: AtomicU64,
    jitter: Histogram,
    rtt: Histogram,
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

    /// Takes in one framework event; only the voice ones count.
    pub fn framework_event(&self, event: &FrameworkEvent) {
        let v = &self.voice;
        match event {
            FrameworkEvent::VoiceSessionStarted { .. } => {
                v.calls_total.fetch_add(1, Ordering::Relaxed);
                v.calls_active.fetch_add(1, Ordering::Relaxed);
            }
            FrameworkEvent::VoiceSessionEnded { .. } => {
                v.calls_active.fetch_sub(1, Ordering::Relaxed);
            }
            FrameworkEvent::VoiceTurnMetrics {
                eou_delay_ms,
                stt_latency_ms,
                llm_ttft_ms,
                tts_ttfb_ms,
                voice_to_voice_ms,
                ..
            } => {
                v.turns_total.fetch_add(1, Ordering::Relaxed);
                if voice_to_voice_ms.is_none() {
                    v.unanswered_total.fetch_add(1, Ordering::Relaxed);
                }
                let figures = [
                    Some(*eou_delay_ms),
                    *stt_latency_ms,
                    *llm_ttft_ms,
                    *tts_ttfb_ms,
                    *voice_to_voice_ms,
                ];
                for (h, ms) in v.latency.iter().zip(figures) {
                    if let Some(ms) = ms {
                        h.observe(ms / 1000.0);
                    }
                }
            }
            FrameworkEvent::VoiceNetworkStats {
                packets_lost,
                jitter_ms,
                rtt_ms,
                ..
            } => {
                v.packets_lost_total
                    .fetch_add(*packets_lost, Ordering::Relaxed);
                v.jitter.observe(jitter_ms / 1000.0);
                if let Some(rtt) = rtt_ms {
                    v.rtt.observe(rtt / 1000.0);
                }
            }
            FrameworkEvent::VoiceTranscript {
                role, interrupted, ..
            } if *interrupted && role == "agent" => {
                v.barge_ins_total.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn render_voice(&self, out: &mut String) {
        let v = &self.voice;
        let _ = writeln!(
            out,
            "# HELP roomkit_voice_calls_total Voice calls that became active.\n# TYPE roomkit_voice_calls_total counter\nroomkit_voice_calls_total {}",
            v.calls_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP roomkit_voice_calls_active Voice calls running now.\n# TYPE roomkit_voice_calls_active gauge\nroomkit_voice_calls_active {}",
            v.calls_active.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP roomkit_voice_turns_total Caller turns committed on voice calls.\n# TYPE roomkit_voice_turns_total counter\nroomkit_voice_turns_total {}",
            v.turns_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP roomkit_voice_turns_unanswered_total Caller turns whose answer never started playing.\n# TYPE roomkit_voice_turns_unanswered_total counter\nroomkit_voice_turns_unanswered_total {}",
            v.unanswered_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP roomkit_voice_barge_ins_total Agent replies cut off by the caller (talking over them, or hanging up).\n# TYPE roomkit_voice_barge_ins_total counter\nroomkit_voice_barge_ins_total {}",
            v.barge_ins_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP roomkit_voice_packets_lost_total Caller media packets lost on the network (RTP calls).\n# TYPE roomkit_voice_packets_lost_total counter\nroomkit_voice_packets_lost_total {}",
            v.packets_lost_total.load(Ordering::Relaxed)
        );
        for (name, help, h) in [
            (
                "roomkit_voice_jitter_seconds",
                "Interarrival jitter of a call's media at its end (RTP calls).",
                &v.jitter,
            ),
            (
                "roomkit_voice_rtt_seconds",
                "Round trip time to a call's far end, from RTCP (RTP calls).",
                &v.rtt,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            let mut cumulative = 0;
            for (le, n) in VOICE_BUCKETS.iter().zip(&h.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            let count = h.count.load(Ordering::Relaxed);
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
            );
        }
        let name = "roomkit_voice_turn_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of a voice turn's stages, on the call's media clock.\n# TYPE {name} histogram"
        );
        for (stage, h) in VOICE_STAGES.iter().zip(&v.latency) {
            let mut cumulative = 0;
            for (le, n) in VOICE_BUCKETS.iter().zip(&h.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{stage=\"{stage}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {count}\n{name}_sum{{stage=\"{stage}\"}} {sum}\n{name}_count{{stage=\"{stage}\"}} {count}"
            );
        }
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
        self.render_voice(&mut out);
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

/// Feeds `metrics` with the engine's framework events until the engine
/// stops (or the task is aborted). Subscribed before it returns, so no
/// event after the call is missed; a lagging receiver skips what it lost.
pub fn spawn_voice_metrics(kit: &RoomKit, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    let mut events = kit.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => metrics.framework_event(&e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(target: "roomkit.server.metrics", missed = n, "framework events lagged; voice figures miss some");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
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
    fn voice_turns_fill_one_histogram_per_stage() {
        let m = Metrics::default();
        let turn = |eou: f64, v2v: Option<f64>| FrameworkEvent::VoiceTurnMetrics {
            session_id: "vs-1".into(),
            room_id: "r1".into(),
            channel_id: "voice".into(),
            speech_end_ms: 1000.0,
            eou_delay_ms: eou,
            stt_latency_ms: Some(120.0),
            llm_ttft_ms: v2v.map(|_| 400.0),
            tts_ttfb_ms: None,
            voice_to_voice_ms: v2v,
        };
        m.framework_event(&turn(250.0, Some(900.0)));
        m.framework_event(&turn(250.0, None));
        // A figure that is no number is left out of its stage.
        m.framework_event(&turn(f64::NAN, None));
        let text = m.render();
        let line = |l: &str| text.lines().any(|x| x == l);
        let h = "roomkit_voice_turn_latency_seconds";
        assert!(line(&format!("{h}_count{{stage=\"eou\"}} 2")), "{text}");
        assert!(
            line(&format!("{h}_bucket{{stage=\"eou\",le=\"0.2\"}} 0")),
            "{text}"
        );
        assert!(
            line(&format!("{h}_bucket{{stage=\"eou\",le=\"0.3\"}} 2")),
            "{text}"
        );
        assert!(line(&format!("{h}_sum{{stage=\"eou\"}} 0.5")), "{text}");
        assert!(
            line(&format!("{h}_count{{stage=\"voice_to_voice\"}} 1")),
            "{text}"
        );
        assert!(
            line(&format!(
                "{h}_bucket{{stage=\"voice_to_voice\",le=\"+Inf\"}} 1"
            )),
            "{text}"
        );
        assert!(
            line(&format!("{h}_count{{stage=\"tts_ttfb\"}} 0")),
            "{text}"
        );
        assert!(line("roomkit_voice_turns_total 3"), "{text}");
        assert!(line("roomkit_voice_turns_unanswered_total 2"), "{text}");
        let stages: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("roomkit_voice_turn_latency_seconds_count{stage=\""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(stages.len(), VOICE_STAGES.len());
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
