//! Black-box tests of `roomkit serve`: each test starts the real binary on
//! a loopback port and drives it over HTTP and WebSocket, as any client in
//! any language would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod appendix_b;
mod auth;
mod browser;
mod config;
mod disk_full;
mod email;
mod hardening_auth;
mod hardening_conns;
mod hardening_low;
mod hooks;
mod outbound;
mod outside_bugs;
mod rest;
mod sms;
mod store;
mod telemetry;
mod transports;
mod voice_analytics;
mod voice_barge_in_export;
mod voice_browser;
mod voice_garbage;
mod voice_hooks;
mod voice_offline_example;
mod voice_outbound;
mod voice_sip;
mod voice_twilio;
mod voice_webrtc;
mod ws;

use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// A running server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
    pub http: reqwest::Client,
    pub key: Option<String>,
    stderr_log: std::path::PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_roomkit")
}

fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes a config file in a temporary directory and returns its path.
pub fn config_file(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("roomkit-serve-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("config-{}.toml", unique()));
    std::fs::write(&path, text).unwrap();
    path
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

impl Server {
    /// Starts `roomkit serve` on a free port with an in-memory store.
    pub async fn start() -> Server {
        Self::start_with(&[], &[]).await
    }

    /// Starts it with extra arguments and environment variables.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::env::temp_dir().join(format!("roomkit-serve-{}.log", unique()));
        let mut cmd = Command::new(binary());
        cmd.arg("serve");
        if !args.contains(&"--addr") {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        if !args.contains(&"--store") {
            cmd.args(["--store", "memory://"]);
        }
        cmd.args(args)
            .env_remove("ROOMKIT_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let mut key = None;
        for (k, v) in env {
            cmd.env(k, v);
            if *k == "ROOMKIT_API_KEY" {
                key = Some((*v).to_owned());
            }
        }
        let mut child = cmd.spawn().expect("the roomkit binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the server prints its address in time")
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "no listening line; stderr: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let addr = line
            .strip_prefix("roomkit listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // Keep reading stdout so the pipe never fills; nothing else is
        // expected on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            http: client(),
            key,
            stderr_log: log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// Sends a request with a JSON body (or none) and returns the status
    /// and the parsed answer (`Null` when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.auth(self.http.request(method, self.url(path)));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends raw bytes as the body.
    pub async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .auth(self.http.request(method, self.url(path)))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// Creates a room with the `ws` channel (and optionally `ai`) attached.
    pub async fn room(&self, id: &str, with_ai: bool) {
        self.ok("POST", "/rooms", Some(json!({"id": id}))).await;
        self.ok(
            "POST",
            &format!("/rooms/{id}/channels"),
            Some(json!({"channel_id": "ws"})),
        )
        .await;
        if with_ai {
            self.ok(
                "POST",
                &format!("/rooms/{id}/channels"),
                Some(json!({"channel_id": "ai"})),
            )
            .await;
        }
    }

    pub async fn post_text(&self, room: &str, channel: &str, text: &str) -> Value {
        self.ok(
            "POST",
            &format!("/rooms/{room}/events"),
            Some(json!({"channel_id": channel, "content": {"type": "text", "text": text}})),
        )
        .await
    }

    /// Every event of a room's timeline.
    pub async fn timeline(&self, room: &str) -> Vec<Value> {
        let v = self
            .ok("GET", &format!("/rooms/{room}/timeline?limit=500"), None)
            .await;
        v["items"].as_array().unwrap().clone()
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Sends SIGTERM and returns the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            // SAFETY-free: kill(2) through the libc crate is a plain call.
            unsafe_free_kill(pid);
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server exits after SIGTERM")
            .unwrap();
        status.code()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

fn unsafe_free_kill(pid: u32) {
    // `kill -TERM` keeps the tests free of unsafe code.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket connection.
pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws
}

/// The next JSON text frame, skipping pings; `None` when the connection
/// closed (with the close frame's code, when there was one).
pub async fn next_frame(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame arrives in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// The next `{"type":"event"}` frame's event, skipping other frames.
pub async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let f = next_frame(ws).await.expect("connection open");
        if f["type"] == "event" {
            return f["event"].clone();
        }
    }
}

pub async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string())).await.unwrap();
}
