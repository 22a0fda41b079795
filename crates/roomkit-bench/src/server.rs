//! `server_ws_load`: load through the real server. The bench spawns the
//! `roomkit` binary (`roomkit serve` on a loopback port, in-memory store)
//! and is itself the load generator: WebSocket clients spread over rooms,
//! each room receiving messages over REST. It reports deliveries per second,
//! send-to-receive latency and the server's resident memory.
//!
//! Options: `--rooms 100 --clients 1000 --messages 30` (per room),
//! `--bin PATH` (default: `roomkit` next to this executable),
//! `--store URL` (default `memory://`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Options, emit, latency_summary, round1};

/// Runs the workload if it is this module's.
///
/// # Errors
/// When the server cannot be started or the load fails.
pub fn run(workload: &str, opts: &Options) -> anyhow::Result<bool> {
    if workload != "server_ws_load" {
        return Ok(false);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ws_load(opts))?;
    Ok(true)
}

pub(crate) fn server_binary(opts: &Options) -> anyhow::Result<PathBuf> {
    if let Some(p) = opts.get("bin") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let candidate = exe
        .parent()
        .map(|d| d.join("roomkit"))
        .context("no directory for the bench executable")?;
    if !candidate.is_file() {
        bail!(
            "{} not found; build it with `cargo build --release -p roomkit` or pass --bin",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Raises the open-file limit to its hard maximum; the server (a child)
/// inherits it. Both sides hold one socket per client.
pub(crate) fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the rlimit value we own.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Starts `roomkit serve` on a free loopback port with `store` and the
/// config file `config`, waits for its listening line and keeps draining
/// its stdout; answers the child, its pid and its address.
pub(crate) async fn start_server(
    bin: &std::path::Path,
    store: &str,
    config: &std::path::Path,
) -> anyhow::Result<(tokio::process::Child, u32, String)> {
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--addr", "127.0.0.1:0", "--store", store])
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("server pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("server stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("the server did not start in time")??
        .context("the server exited before listening")?;
    let addr = line
        .strip_prefix("roomkit listening on http://")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid, addr))
}

pub(crate) fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

async fn ws_load(opts: &Options) -> anyhow::Result<()> {
    let rooms: usize = opts.num("rooms", 100)?;
    let clients: usize = opts.num("clients", 1000)?;
    let messages: usize = opts.num("messages", 30)?;
    let store = opts.get("store").unwrap_or("memory://").to_owned();
    if rooms == 0 || clients < rooms {
        bail!("need at least one room and one client per room");
    }
    raise_fd_limit();
    let bin = server_binary(opts)?;
    // Every client is on loopback: lift the per-address caps for them.
    let config = std::env::temp_dir().join(format!("roomkit-ws-load-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[server]\nmax_connections_per_ip = {}\nws_max_connections_per_key = {}\n",
            clients + 64,
            clients + 64
        ),
    )?;
    let (mut child, pid, addr) = start_server(&bin, &store, &config).await?;
    let _ = std::fs::remove_file(&config);
    let rss_idle = rss_of(pid);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(rooms)
        .build()?;
    let base = format!("http://{addr}");
    for r in 0..rooms {
        let id = format!("load-{r}");
        let resp = http
            .post(format!("{base}/rooms"))
            .json(&json!({"id": id}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "create room: {}", resp.status());
        let resp = http
            .post(format!("{base}/rooms/{id}/channels"))
            .json(&json!({"channel_id": "ws"}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "attach: {}", resp.status());
    }

    // Clients, spread evenly over the rooms.
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let (lat_tx, mut lat_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    let expected_per_client = messages as u64;
    let mut readers = Vec::with_capacity(clients);
    let connect_started = Instant::now();
    for c in 0..clients {
        let room = format!("load-{}", c % rooms);
        let url = format!("ws://{addr}/ws/{room}?channel_id=ws");
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .with_context(|| format!("connecting client {c}"))?;
        let delivered = delivered.clone();
        let lat_tx = lat_tx.clone();
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            let mut samples = Vec::with_capacity(expected_per_client as usize);
            while samples.len() < expected_per_client as usize {
                let Some(Ok(msg)) = stream.next().await else {
                    break;
                };
                let Message::Text(text) = msg else { continue };
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if frame["type"] != "event" {
                    continue;
                }
                let Some(body) = frame["event"]["content"]["text"].as_str() else {
                    continue;
                };
                if let Some(sent) = body
                    .strip_prefix("load ")
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    let now = epoch.elapsed().as_nanos() as u64;
                    samples.push(now.saturating_sub(sent));
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = lat_tx.send(samples);
        }));
    }
    drop(lat_tx);
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let rss_connected = rss_of(pid);

    // Each room gets its messages over REST, rooms in parallel.
    let started = Instant::now();
    let send_ns = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(
        rooms * messages,
    )));
    let mut senders = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let http = http.clone();
        let base = base.clone();
        let send_ns = send_ns.clone();
        senders.push(tokio::spawn(async move {
            for _ in 0..messages {
                let t0 = Instant::now();
                let sent = epoch.elapsed().as_nanos() as u64;
                let body = json!({"channel_id": "ws", "content": {"type": "text", "text": format!("load {sent}")}});
                let resp = http.post(format!("{base}/rooms/load-{r}/events")).json(&body).send().await?;
                anyhow::ensure!(resp.status().is_success(), "send: {}", resp.status());
                let _ = resp.bytes().await?;
                send_ns.lock().push(t0.elapsed().as_nanos() as u64);
            }
            anyhow::Ok(())
        }));
    }
    let mut rss_peak = rss_connected;
    let sampler = {
        let delivered = delivered.clone();
        let target = (clients * messages) as u64;
        async move {
            let mut peak = 0;
            while delivered.load(Ordering::Relaxed) < target {
                peak = peak.max(rss_of(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak.max(rss_of(pid))
        }
    };
    for s in senders {
        s.await??;
    }
    let sent_secs = started.elapsed().as_secs_f64();
    match tokio::time::timeout(Duration::from_secs(120), sampler).await {
        Ok(peak) => rss_peak = rss_peak.max(peak),
        Err(_) => eprintln!("roomkit-bench: not every delivery arrived within 120 s"),
    }
    let elapsed = started.elapsed().as_secs_f64();
    for r in readers {
        r.abort();
    }
    let mut samples = Vec::with_capacity(clients * messages);
    while let Ok(s) = lat_rx.try_recv() {
        samples.extend(s);
    }
    let total = delivered.load(Ordering::Relaxed);
    let mut sends = std::mem::take(&mut *send_ns.lock());

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let clean_exit = matches!(exit, Ok(Ok(s)) if s.success());

    emit(&json!({
        "workload": "server_ws_load",
        "rooms": rooms,
        "clients": clients,
        "messages_per_room": messages,
        "messages_sent": rooms * messages,
        "deliveries": total,
        "expected_deliveries": clients * messages,
        "connect_seconds": round1(connect_secs),
        "send_seconds": round1(sent_secs),
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "deliveries_per_sec": round1(total as f64 / elapsed),
        "send_to_receive": latency_summary(&mut samples),
        "rest_post": latency_summary(&mut sends),
        "server_rss_idle_bytes": rss_idle,
        "server_rss_connected_bytes": rss_connected,
        "server_rss_peak_bytes": rss_peak,
        "server_clean_exit": clean_exit,
        "store": store,
    }));
    Ok(())
}
