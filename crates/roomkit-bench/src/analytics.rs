//! Call analytics benchmarks: the cost of observing a call while its audio
//! streams in real time (`analytics_call`), and export throughput to a fast
//! fake Roark backend on loopback (`analytics_export`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::{
    AnalyticsConfig, ApiKey, AudioTap, CallAnalytics, CallFeed, ExportState, Exporter, MetricKind,
    MetricRecord, RetryPolicy, RoarkConfig, RoarkExporter, Role, Side, StartCall, TranscriptInput,
};
use serde_json::json;

use crate::common::{Options, cpu_seconds, emit, round1, rss_bytes};

const RATE: u32 = 24_000;
const FRAME: usize = 480;
const KEY: &str = "rk_bench";

/// Runs an analytics workload; `Ok(false)` when the name is not one.
///
/// # Errors
/// When the runtime, spool or fake backend cannot be set up, or an export
/// does not complete.
pub fn run(workload: &str, opts: &Options) -> anyhow::Result<bool> {
    match workload {
        "analytics_call" => {
            let calls = opts.num("calls", 50usize)?;
            let seconds = opts.num("seconds", 10u64)?;
            runtime()?.block_on(observe_calls(calls, seconds))?;
        }
        "analytics_export" => {
            let calls = opts.num("calls", 200usize)?;
            let seconds = opts.num("seconds", 10u64)?;
            runtime()?.block_on(export_calls(calls, seconds))?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn scratch_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let d = std::env::temp_dir().join(format!("rk-bench-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                dir_bytes(&path)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// An exporter that only waits for the end of the call, so the figures are
/// the observer's own (mixing, spool writes).
struct WaitOnly;

#[async_trait]
impl Exporter for WaitOnly {
    fn name(&self) -> &'static str {
        "bench"
    }
    async fn export(&self, mut call: CallFeed) -> roomkit_analytics::Result<()> {
        call.wait_end().await.map(drop)
    }
}

fn tone(freq: f64, first: u64, out: &mut [i16]) {
    for (i, s) in out.iter_mut().enumerate() {
        let t = (first + i as u64) as f64 / f64::from(RATE);
        *s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
    }
}

/// Streams one scripted call: the user's microphone every 20 ms, the agent
/// speaking every other second, a transcript entry and metrics per turn.
async fn stream_call(call: roomkit_analytics::CallHandle, frames: u64, real_time: bool) {
    let tap = call.tap();
    let mut user = vec![0i16; FRAME];
    let mut agent = vec![0i16; FRAME];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for f in 0..frames {
        if real_time {
            tick.tick().await;
        } else if f.is_multiple_of(25) {
            tokio::task::yield_now().await;
        }
        let media = Duration::from_millis(f * 20);
        let agent_turn = (f / 50) % 2 == 1;
        if agent_turn {
            user.fill(0);
            tone(880.0, f * FRAME as u64, &mut agent);
            tap.push(Side::Agent, &agent, RATE, media);
        } else {
            tone(440.0, f * FRAME as u64, &mut user);
        }
        tap.push(Side::User, &user, RATE, media);
        if f % 50 == 49 {
            let role = if agent_turn {
                Role::Assistant
            } else {
                Role::User
            };
            let start = Duration::from_millis((f - 49) * 20);
            call.transcript(TranscriptInput::new(role, "benchmark turn").span(start, media));
            call.metric(MetricRecord {
                kind: if agent_turn {
                    MetricKind::Tts
                } else {
                    MetricKind::Eou
                },
                duration: Some(0.2),
                ..MetricRecord::default()
            });
        }
    }
}

async fn observe_calls(calls: usize, seconds: u64) -> anyhow::Result<()> {
    let spool = scratch_dir("call")?;
    let mut cfg = AnalyticsConfig::new(&spool);
    cfg.sample_rate = RATE;
    let analytics = CallAnalytics::new(cfg, vec![Arc::new(WaitOnly) as Arc<dyn Exporter>])?;
    let frames = seconds * 50;
    let rss0 = rss_bytes();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut handles = Vec::new();
    for i in 0..calls {
        let mut start = StartCall::new(format!("room-{i}"), "bench-agent");
        start.call_id = Some(format!("bench-{i}"));
        let call = analytics.start_call(start);
        handles.push(call.clone());
        tasks.spawn(stream_call(call, frames, true));
    }
    // Peak resident memory while every call is live.
    let mut rss_peak = rss0;
    let mut sampler = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = sampler.tick() => rss_peak = rss_peak.max(rss_bytes()),
        }
    }
    rss_peak = rss_peak.max(rss_bytes());
    let cpu_stream = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let spool_bytes = dir_bytes(&spool.join("calls"));
    for h in &handles {
        h.flush("agent-ended").await;
    }
    analytics.wait_all_exported().await;
    let stats = analytics.stats();
    analytics.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&spool);
    let call_seconds = calls as f64 * seconds as f64;
    emit(&json!({
        "workload": "analytics_call",
        "calls": calls,
        "seconds": seconds,
        "sample_rate": RATE,
        "wall_s": round1(wall),
        "cpu_s": (cpu_stream * 1000.0).round() / 1000.0,
        "cpu_core_percent_per_call": (cpu_stream / call_seconds * 100.0 * 1000.0).round() / 1000.0,
        "rss_bytes_per_call": rss_peak.saturating_sub(rss0) / calls.max(1) as u64,
        "spool_bytes_per_call_second": spool_bytes as f64 / call_seconds,
        "audio_frames_dropped": stats.audio_frames_dropped,
        "records_dropped": stats.records_dropped,
        "late_samples": stats.late_samples,
    }));
    Ok(())
}

async fn export_calls(calls: usize, seconds: u64) -> anyhow::Result<()> {
    let spool = scratch_dir("export")?;
    let fake = FakeRoark::start(KEY, Faults::default()).await?;
    // Fill the spool with finished calls whose export is parked (the
    // backend is unreachable: one attempt, connection refused).
    {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cfg = RoarkConfig::new(ApiKey::new(KEY), format!("http://{closed}"));
        cfg.retry = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        let parked = RoarkExporter::new(cfg)?;
        let mut acfg = AnalyticsConfig::new(&spool);
        acfg.sample_rate = RATE;
        let a = CallAnalytics::new(acfg, vec![Arc::new(parked) as Arc<dyn Exporter>])?;
        for i in 0..calls {
            let mut start = StartCall::new(format!("room-{i}"), "bench-agent");
            start.call_id = Some(format!("export-{i}"));
            let call = a.start_call(start);
            stream_call(call.clone(), seconds * 50, false).await;
            call.flush("agent-ended").await;
            let st = call.exported().await;
            anyhow::ensure!(matches!(st, ExportState::Parked(_)), "setup: {st:?}");
        }
        a.shutdown(Duration::from_secs(5)).await;
    }
    let spool_bytes = dir_bytes(&spool.join("calls"));
    let mut cfg = RoarkConfig::new(ApiKey::new(KEY), fake.base_url());
    cfg.max_concurrent_uploads = 16;
    let exporter = RoarkExporter::new(cfg)?;
    let mut acfg = AnalyticsConfig::new(&spool);
    acfg.sample_rate = RATE;
    let a = CallAnalytics::new(acfg, vec![Arc::new(exporter.clone()) as Arc<dyn Exporter>])?;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let rec = a.recover().await?;
    a.wait_all_exported().await;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let stats = exporter.stats();
    a.shutdown(Duration::from_secs(5)).await;
    anyhow::ensure!(rec.resumed == calls, "resumed {} of {calls}", rec.resumed);
    anyhow::ensure!(
        stats.calls_ended as usize == calls,
        "ended {} of {calls}",
        stats.calls_ended
    );
    let _ = std::fs::remove_dir_all(&spool);
    emit(&json!({
        "workload": "analytics_export",
        "calls": calls,
        "audio_seconds_per_call": seconds,
        "wall_s": (wall * 1000.0).round() / 1000.0,
        "calls_per_s": round1(calls as f64 / wall),
        "requests": stats.requests,
        "requests_per_s": round1(stats.requests as f64 / wall),
        "chunks": stats.chunks_uploaded,
        "mib_per_s": round1(spool_bytes as f64 / wall / (1024.0 * 1024.0)),
        "cpu_s": (cpu * 1000.0).round() / 1000.0,
    }));
    Ok(())
}
