//! Connection-level hardening, through the real binary: header timeout,
//! connection caps with `/healthz` still answering, slow WebSocket readers
//! closed with 4008, the per-key WebSocket cap, bounded `/metrics` labels,
//! and a small soak of all of them at once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{Server, config_file};

async fn start(server_keys: &str) -> Server {
    let config = config_file(&format!("[server]\n{server_keys}\n"));
    Server::start_with(&["--config", config.to_str().unwrap()], &[]).await
}

/// A client that opens a new connection for every request.
fn fresh_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn metrics(server: &Server) -> String {
    fresh_client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a metric line that starts with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Opens a connection that sends half a request line and then nothing.
async fn half_open(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HT").await.unwrap();
    s
}

fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn half_open_connection_is_closed_after_the_header_timeout() {
    let server = start("header_timeout_ms = 500").await;
    let mut conn = half_open(&server.addr).await;
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(15), conn.read(&mut buf))
        .await
        .expect("the server closes a half-open connection");
    // Closed (EOF) or reset, without an answer to the half request.
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "roomkit_connections_timed_out_total{reason=\"header\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start("idle_timeout_ms = 500").await;
    let mut conn = TcpStream::connect(&server.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // Read the answer, then wait for the server to close the idle
    // connection.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle connection stays open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "roomkit_connections_timed_out_total{reason=\"idle\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

/// Fills a cap with half-open connections: new connections get 503 while
/// `/healthz` keeps answering; once they close, service is back.
async fn cap_is_enforced(key: &str) {
    let server = start(&format!("{key} = 10\nheader_timeout_ms = 60000")).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(half_open(&server.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = fresh_client();
    let resp = http.get(server.url("/rooms")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503, "over the cap ({key})");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");
    for _ in 0..5 {
        let resp = http.get(server.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "/healthz at the cap");
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = http
            .get(server.url("/rooms"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "service did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics(&server).await;
    assert!(
        metric(&text, "roomkit_connections_overflow_total").unwrap_or(0.0) >= 6.0,
        "{text}"
    );
}

#[tokio::test]
async fn connection_cap_answers_503_but_healthz_still_answers() {
    cap_is_enforced("max_connections").await;
}

#[tokio::test]
async fn per_address_cap_answers_503_but_healthz_still_answers() {
    cap_is_enforced("max_connections_per_ip").await;
}

/// Posts `n` text events of `size` bytes each.
async fn large_events(server: &Server, room: &str, n: usize, size: usize) {
    let text = "x".repeat(size);
    for _ in 0..n {
        server.post_text(room, "ws", &text).await;
    }
}

#[tokio::test]
async fn slow_websocket_reader_is_closed_with_4008_and_counted() {
    let server = start("ws_send_timeout_ms = 1000").await;
    server.room("slow", false).await;
    // More than the loopback socket buffers hold.
    large_events(&server, "slow", 100, 200_000).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(server.ws_url("/ws/slow?channel_id=ws&after_index=0"))
            .await
            .unwrap();
    // Do not read until the server has given up on this client.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(&server).await;
        if metric(&text, "roomkit_ws_slow_closed_total") == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "never closed as slow: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the connection ends");
    assert_eq!(code, Some(4008));
}

#[tokio::test]
async fn websocket_connections_per_key_are_capped() {
    let server = start("ws_max_connections_per_key = 2").await;
    server.room("capped", false).await;
    let url = server.ws_url("/ws/capped?channel_id=ws");
    let (a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let third = tokio_tungstenite::connect_async(&url).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
        }
        other => panic!("third connection: {:?}", other.map(|_| ())),
    }
    drop((a, b));
    // The places are given back when the connections close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio_tungstenite::connect_async(&url).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "places not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics(&server).await;
    assert!(metric(&text, "roomkit_ws_refused_total").unwrap_or(0.0) >= 1.0);
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

/// Sends `n` requests with invented methods and paths.
async fn random_requests(server: &Server, n: usize, seed: u64) {
    let http = reqwest::Client::new();
    let mut seed = seed;
    for i in 0..n {
        let method = random_token(&mut seed, 8 + i % 40);
        let path = random_token(&mut seed, 12);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let _ = http
            .request(m, server.url(&format!("/{path}/{i}")))
            .send()
            .await;
    }
}

#[tokio::test]
async fn random_methods_and_paths_do_not_grow_metrics() {
    let server = Server::start().await;
    random_requests(&server, 300, 0x9e37_79b9_7f4a_7c15).await;
    let text = metrics(&server).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("roomkit_http_requests_total{"))
        .collect();
    assert!(series.len() <= 5, "{series:#?}");
    assert!(
        series
            .iter()
            .all(|l| l.contains("method=\"other\"") && l.contains("route=\"unmatched\"")),
        "{series:#?}"
    );
    assert!(text.len() < 100 * 1024);
}

/// A small version of the soak: half-open connections, slow WebSocket
/// readers on a room of large events and random methods, while a client
/// checks `/healthz` every 100 ms on a new connection each time.
#[tokio::test]
async fn small_soak_keeps_healthz_answering_and_memory_bounded() {
    let server = start(
        "max_connections_per_ip = 2000\nheader_timeout_ms = 30000\nws_send_timeout_ms = 2000",
    )
    .await;
    let pid = server.child.id().unwrap();
    server.room("soak", false).await;
    large_events(&server, "soak", 40, 200_000).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let url = server.url("/healthz");
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = fresh_client();
            let mut worst = Duration::ZERO;
            let mut checks = 0u32;
            let mut failures = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), http.get(&url).send()).await {
                    Ok(Ok(r)) if r.status() == 200 => {}
                    _ => failures += 1,
                }
                worst = worst.max(t.elapsed());
                checks += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (checks, failures, worst)
        })
    };
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(half_open(&server.addr).await);
    }
    let mut readers = Vec::new();
    for _ in 0..20 {
        let (ws, _) =
            tokio_tungstenite::connect_async(server.ws_url("/ws/soak?channel_id=ws&after_index=0"))
                .await
                .unwrap();
        readers.push(ws);
    }
    let mut peak = rss_of(pid);
    random_requests(&server, 1000, 0x2545_f491_4f6c_dd1d).await;
    for _ in 0..30 {
        peak = peak.max(rss_of(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics(&server).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (checks, failures, worst) = checker.await.unwrap();
    drop(readers);
    drop(held);
    assert!(checks >= 10, "{checks} checks");
    assert_eq!(failures, 0, "{failures} of {checks} health checks failed");
    assert!(worst < Duration::from_secs(2), "slowest check {worst:?}");
    assert!(peak < 300 * 1024 * 1024, "peak RSS {peak}");
    assert!(text.len() < 100 * 1024, "/metrics is {} bytes", text.len());
}

#[tokio::test]
async fn sigterm_still_drains_with_open_idle_connections() {
    let server = start("header_timeout_ms = 60000").await;
    let _held = half_open(&server.addr).await;
    let http = fresh_client();
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.terminate().await, Some(0));
}

/// The soft open-file limit of a process, and its hard limit.
fn open_file_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let mut words = line.trim_start_matches("Max open files").split_whitespace();
    (
        words.next().unwrap().to_owned(),
        words.next().unwrap().to_owned(),
    )
}

/// The server raises its soft open-file limit to the hard one, so a default
/// soft limit of 1,024 does not decide how many clients it can hold. The
/// server is started under a shell that first lowers its soft limit to 256.
#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" serve --addr 127.0.0.1:0 --store memory://")
        .arg(crate::binary())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    assert!(line.starts_with("roomkit listening on"), "{line}");
    let pid = child.id().unwrap();
    let (soft, hard) = open_file_limits(pid);
    assert_ne!(soft, "256", "the soft limit was not raised");
    assert_eq!(soft, hard, "soft {soft}, hard {hard}");
    let _ = child.kill().await;
}
