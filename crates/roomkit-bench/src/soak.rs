//! `server_soak`: hostile connection load on the real server, bounded in
//! time and connections, loopback only. While it runs, a client asks
//! `/healthz` every 100 ms on a new connection each time.
//!
//! The load, all at once:
//! - half-open connections that send half a request line and then nothing
//!   (reopened when the server closes them);
//! - slow WebSocket readers on a room of large events that never read
//!   (reopened when the server closes them);
//! - requests with random methods and paths.
//!
//! It prints the health checks' latency (max, p99), their failures, the
//! server's peak resident memory and the final size of `/metrics`.
//!
//! Options: `--half-open 500 --slow-readers 200 --random 10000
//! --events 40 --event-bytes 200000 --seconds 60`, `--bin PATH`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Options, emit};
use crate::server::{raise_fd_limit, rss_of, server_binary, start_server};

/// Runs the workload if it is this module's.
///
/// # Errors
/// When the server cannot be started or the load fails.
pub fn run(workload: &str, opts: &Options) -> anyhow::Result<bool> {
    if workload != "server_soak" {
        return Ok(false);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(soak(opts))?;
    Ok(true)
}

fn random_token(seed: &mut u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    (0..len)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ALPHABET[(*seed % 26) as usize] as char
        })
        .collect()
}

fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    let v = crate::common::percentile(sorted, p);
    (v * 10.0).round() / 10.0
}

async fn soak(opts: &Options) -> anyhow::Result<()> {
    let half_open: usize = opts.num("half-open", 500)?;
    let slow_readers: usize = opts.num("slow-readers", 200)?;
    let random: usize = opts.num("random", 10_000)?;
    let events: usize = opts.num("events", 40)?;
    let event_bytes: usize = opts.num("event-bytes", 200_000)?;
    let seconds: u64 = opts.num("seconds", 60)?;
    anyhow::ensure!(
        seconds <= 110 && half_open + slow_readers <= 5000,
        "the soak is bounded: at most 110 s and 5000 connections"
    );
    raise_fd_limit();
    let bin = server_binary(opts)?;
    // Every client of the soak is on loopback, so the per-address cap is
    // raised to let the whole load in; the other limits are the defaults.
    let config = std::env::temp_dir().join(format!("roomkit-soak-{}.toml", std::process::id()));
    std::fs::write(&config, "[server]\nmax_connections_per_ip = 5000\n")?;
    let (mut child, pid, addr) = start_server(&bin, "memory://", &config).await?;
    let _ = std::fs::remove_file(&config);
    let rss_idle = rss_of(pid);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("http://{addr}");
    let resp = http
        .post(format!("{base}/rooms"))
        .json(&json!({"id": "soak"}))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "create room: {}", resp.status());
    let resp = http
        .post(format!("{base}/rooms/soak/channels"))
        .json(&json!({"channel_id": "ws"}))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "attach: {}", resp.status());
    let big = "x".repeat(event_bytes);
    for _ in 0..events {
        let resp = http
            .post(format!("{base}/rooms/soak/events"))
            .json(&json!({"channel_id": "ws", "content": {"type": "text", "text": big}}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "post: {}", resp.status());
    }
    drop(big);
    let rss_loaded = rss_of(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    // The health checker: a new connection per check.
    let checker = {
        let url = format!("{base}/healthz");
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?;
            let mut latencies = Vec::new();
            let mut slow = Vec::new();
            let mut failures = 0u64;
            let began = Instant::now();
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = matches!(
                    tokio::time::timeout(Duration::from_secs(5), http.get(&url).send()).await,
                    Ok(Ok(r)) if r.status() == 200
                );
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                latencies.push(ms);
                if ms > 100.0 {
                    // When (seconds into the run) and how long, for the
                    // checks over 100 ms.
                    slow.push(json!([
                        (t.duration_since(began).as_secs_f64() * 10.0).round() / 10.0,
                        (ms * 10.0).round() / 10.0
                    ]));
                }
                if !ok {
                    failures += 1;
                }
                next += Duration::from_millis(100);
                tokio::time::sleep_until(next.into()).await;
            }
            anyhow::Ok((latencies, failures, slow))
        })
    };

    // Half-open connections, reopened when the server closes them.
    let reopened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..half_open {
        let stop = stop.clone();
        let addr = addr.clone();
        let reopened = reopened.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let _ = s.write_all(b"GET /healthz HT").await;
                let mut buf = [0u8; 512];
                // Wait for the server to close it (or for the end).
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                        Err(_) => continue,
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {}
                    }
                }
                reopened.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Slow WebSocket readers: connect and never read; each is held until
    // the end (a client that does not read cannot tell when the server
    // gave up on it).
    let ws_url = format!("ws://{addr}/ws/soak?channel_id=ws&after_index=0");
    let ws_opened = Arc::new(AtomicU64::new(0));
    for _ in 0..slow_readers {
        let stop = stop.clone();
        let ws_url = ws_url.clone();
        let ws_opened = ws_opened.clone();
        tasks.push(tokio::spawn(async move {
            let Ok((ws, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
                return;
            };
            ws_opened.fetch_add(1, Ordering::Relaxed);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            drop(ws);
        }));
    }

    // Random methods and paths, a few at a time.
    let sent_random = Arc::new(AtomicU64::new(0));
    let per_worker = random.div_ceil(8);
    for w in 0..8u64 {
        let base = base.clone();
        let stop = stop.clone();
        let sent_random = sent_random.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(http) = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            else {
                return;
            };
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
            for i in 0..per_worker {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let method = random_token(&mut seed, 4 + i % 60);
                let path = random_token(&mut seed, 16);
                let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
                    continue;
                };
                let _ = http.request(m, format!("{base}/{path}/{i}")).send().await;
                sent_random.fetch_add(1, Ordering::Relaxed);
                // Spread the requests over the run.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    let mut rss_peak = rss_loaded;
    let mut reported = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        rss_peak = rss_peak.max(rss_of(pid));
        if started.elapsed().as_secs() >= reported + 10 {
            reported = started.elapsed().as_secs();
            eprintln!(
                "server_soak: {reported} s, rss {} MB, {} random requests",
                rss_of(pid) / (1024 * 1024),
                sent_random.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new connection, as the health checks use.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()?;
    let metrics_text = fresh
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let metrics_series = metrics_text
        .lines()
        .filter(|l| l.starts_with("roomkit_http_requests_total{"))
        .count();
    let metric = |name: &str| -> u64 {
        metrics_text
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    stop.store(true, Ordering::Relaxed);
    let (mut latencies, failures, slow) = checker.await??;
    for t in tasks {
        t.abort();
    }
    let rss_end = rss_of(pid);
    latencies.sort_by(f64::total_cmp);
    let checks = latencies.len();
    let over_100ms = latencies.iter().filter(|&&l| l > 100.0).count();

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let clean_exit = matches!(exit, Ok(Ok(s)) if s.success());

    emit(&json!({
        "workload": "server_soak",
        "seconds": seconds,
        "half_open": half_open,
        "half_open_reopened": reopened.load(Ordering::Relaxed),
        "slow_readers": slow_readers,
        "slow_reader_connections": ws_opened.load(Ordering::Relaxed),
        "random_requests": sent_random.load(Ordering::Relaxed),
        "room_events": events,
        "event_bytes": event_bytes,
        "healthz_checks": checks,
        "healthz_failures": failures,
        "healthz_over_100ms": over_100ms,
        "healthz_slow_checks_at_s_ms": slow,
        "healthz_max_ms": percentile_ms(&latencies, 100.0),
        "healthz_p99_ms": percentile_ms(&latencies, 99.0),
        "healthz_p50_ms": percentile_ms(&latencies, 50.0),
        "server_rss_idle_mb": rss_idle / (1024 * 1024),
        "server_rss_loaded_mb": rss_loaded / (1024 * 1024),
        "server_rss_peak_mb": rss_peak / (1024 * 1024),
        "server_rss_end_mb": rss_end / (1024 * 1024),
        "metrics_bytes": metrics_text.len(),
        "metrics_request_series": metrics_series,
        "ws_slow_closed": metric("roomkit_ws_slow_closed_total"),
        "header_timeouts": metric("roomkit_connections_timed_out_total{reason=\"header\"}"),
        "connections_overflow": metric("roomkit_connections_overflow_total"),
        "connections_refused": metric("roomkit_connections_refused_total"),
        "server_clean_exit": clean_exit,
    }));
    Ok(())
}
