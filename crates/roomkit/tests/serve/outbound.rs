//! Outbound HTTP through the server: a binding cannot choose where the
//! webhook channel posts, redirects are not followed, huge answers are cut
//! off, and nothing a remote says is echoed to API callers. The same holds
//! for HTTP hooks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Server, config_file};

/// A loopback server with a fixed answer, counting the requests and the
/// body bytes it managed to write.
struct Remote {
    base: String,
    hits: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
}

/// What a [`Remote`] answers.
#[derive(Clone)]
enum Answer {
    /// A small answer: status and JSON body.
    Small(u16, &'static str, String),
    /// A 302 to `location`.
    Redirect(String),
    /// 200 with a JSON body `{"<key>": <value>, "pad": "ZZZ..."}` of about
    /// `megabytes` MB, streamed in 64 KiB chunks without a length.
    Huge {
        key: &'static str,
        value: &'static str,
        megabytes: usize,
    },
}

/// Reads one request (head and `content-length` body).
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = sock.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(head);
        }
    }
}

async fn remote(answer: Answer) -> Remote {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let (h, w) = (hits.clone(), written.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (h, w, answer) = (h.clone(), w.clone(), answer.clone());
            tokio::spawn(async move {
                if read_request(&mut sock).await.is_none() {
                    return;
                }
                h.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Answer::Small(status, reason, body) => {
                        let _ = sock
                            .write_all(
                                format!(
                                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                    Answer::Redirect(location) => {
                        let body = "moved: INTERNAL-REDIRECT-TEXT";
                        let _ = sock
                            .write_all(
                                format!(
                                    "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                    Answer::Huge {
                        key,
                        value,
                        megabytes,
                    } => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{{\"{key}\":\"{value}\",\"pad\":\""
                        );
                        if sock.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = vec![b'Z'; 64 * 1024];
                        for _ in 0..megabytes * 16 {
                            if sock.write_all(&chunk).await.is_err() {
                                return;
                            }
                            w.fetch_add(chunk.len(), Ordering::SeqCst);
                        }
                        let _ = sock.write_all(b"\"}").await;
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    Remote {
        base,
        hits,
        written,
    }
}

/// A server with a `ws` channel and a webhook channel `crm` posting to
/// `url`; room `r` has both attached.
async fn webhook_server(url: &str) -> Server {
    let path = config_file(&format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "crm"
type = "webhook"
url = "{url}"
"#
    ));
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("r", false).await;
    s.ok(
        "POST",
        "/rooms/r/channels",
        Some(json!({"channel_id": "crm"})),
    )
    .await;
    s
}

/// Posts from `ws` and returns the answer and the stored event.
async fn post_and_read(s: &Server, text: &str) -> (Value, Value) {
    let answer = s.post_text("r", "ws", text).await;
    let eid = answer["event"]["id"].as_str().unwrap().to_owned();
    let stored = s.ok("GET", &format!("/rooms/r/events/{eid}"), None).await;
    (answer, stored)
}

/// The `crm` delivery result of an answer, whichever shape it has.
fn crm_result(v: &Value) -> Value {
    let r = &v["delivery_results"];
    if r.is_array() {
        r.as_array()
            .unwrap()
            .iter()
            .find(|d| d["channel_id"] == "crm")
            .cloned()
            .unwrap_or(Value::Null)
    } else {
        r["crm"].clone()
    }
}

#[tokio::test]
async fn a_binding_cannot_redirect_the_webhook_channel() {
    let configured = remote(Answer::Small(200, "OK", r#"{"id":"ok-1"}"#.into())).await;
    let internal = remote(Answer::Small(200, "OK", r#"{"id":"INTERNAL"}"#.into())).await;
    let s = webhook_server(&format!("{}/events", configured.base)).await;
    let patched = s
        .ok(
            "PATCH",
            "/rooms/r/channels/crm",
            Some(json!({"metadata": {"url": format!("{}/admin/steal", internal.base)}})),
        )
        .await;
    assert!(patched["metadata"]["url"].as_str().is_some(), "{patched}");
    let (answer, stored) = post_and_read(&s, "hello").await;
    assert_eq!(internal.hits.load(Ordering::SeqCst), 0, "{answer}");
    assert_eq!(configured.hits.load(Ordering::SeqCst), 1, "{answer}");
    assert_eq!(
        crm_result(&answer)["provider_message_id"],
        "ok-1",
        "{answer}"
    );
    assert_eq!(
        crm_result(&stored)["provider_message_id"],
        "ok-1",
        "{stored}"
    );
    assert!(
        s.log().contains("not in allowed_urls"),
        "the ignored URL is logged"
    );
}

#[tokio::test]
async fn a_webhook_redirect_is_not_followed() {
    let internal = remote(Answer::Small(
        200,
        "OK",
        r#"{"id":"INTERNAL-ANSWER"}"#.into(),
    ))
    .await;
    let redirector = remote(Answer::Redirect(format!("{}/private", internal.base))).await;
    let s = webhook_server(&format!("{}/events", redirector.base)).await;
    let (answer, stored) = post_and_read(&s, "hello").await;
    assert_eq!(redirector.hits.load(Ordering::SeqCst), 1);
    assert_eq!(internal.hits.load(Ordering::SeqCst), 0, "{answer}");
    for v in [&answer, &stored] {
        let d = crm_result(v);
        assert_eq!(d["status"], "failed", "{v}");
        assert_eq!(d["error"]["code"], "302", "{v}");
        let text = v.to_string();
        assert!(!text.contains("INTERNAL"), "{text}");
    }
}

#[tokio::test]
async fn a_remote_error_text_is_not_echoed() {
    let failing = remote(Answer::Small(
        500,
        "Internal Server Error",
        r#"{"error":"REMOTE-SECRET db=10.0.0.5"}"#.into(),
    ))
    .await;
    let s = webhook_server(&format!("{}/events", failing.base)).await;
    let (answer, stored) = post_and_read(&s, "hello").await;
    for v in [&answer, &stored] {
        let d = crm_result(v);
        assert_eq!(d["status"], "failed", "{v}");
        assert_eq!(d["error"]["code"], "500", "{v}");
        assert!(!v.to_string().contains("REMOTE-SECRET"), "{v}");
    }
}

/// The peak resident memory of a process, in kB (Linux).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test]
async fn a_huge_webhook_answer_is_cut_off() {
    let huge = remote(Answer::Huge {
        key: "id",
        value: "HUGE-ID",
        megabytes: 50,
    })
    .await;
    let s = webhook_server(&format!("{}/events", huge.base)).await;
    let pid = s.child.id().unwrap();
    let before = peak_rss_kb(pid);
    let (answer, stored) =
        tokio::time::timeout(Duration::from_secs(60), post_and_read(&s, "hello"))
            .await
            .expect("the delivery ends");
    let after = peak_rss_kb(pid);
    let written = huge.written.load(Ordering::SeqCst);
    eprintln!("huge answer: {written} bytes written, peak RSS {before:?} -> {after:?} kB");
    // The server stops reading after a few hundred KiB; what the remote
    // managed to write is that plus the loopback socket buffers.
    assert!(written < 20 * 1024 * 1024, "{written} bytes were read");
    if let (Some(b), Some(a)) = (before, after) {
        assert!(a < b + 40 * 1024, "peak RSS grew from {b} to {a} kB");
    }
    for v in [&answer, &stored] {
        let d = crm_result(v);
        assert_eq!(d["status"], "failed", "{v}");
        let text = v.to_string();
        assert!(!text.contains("ZZZZ"), "the body is echoed");
        assert!(!text.contains("HUGE-ID"), "{text}");
    }
}

/// A server with one sync hook at `url` whose failures block.
async fn hook_server(url: &str) -> Server {
    let path = config_file(&format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[hooks]]
name = "guard"
trigger = "before_broadcast"
execution = "sync"
url = "{url}"
timeout_ms = 20000
on_error = "block"
"#
    ));
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("r", false).await;
    s
}

#[tokio::test]
async fn a_hook_redirect_is_a_hook_error() {
    let internal = remote(Answer::Small(200, "OK", r#"{"action":"allow"}"#.into())).await;
    let redirector = remote(Answer::Redirect(format!("{}/allow", internal.base))).await;
    let s = hook_server(&format!("{}/hook", redirector.base)).await;
    let r = s.post_text("r", "ws", "hello").await;
    assert_eq!(redirector.hits.load(Ordering::SeqCst), 1);
    assert_eq!(internal.hits.load(Ordering::SeqCst), 0, "{r}");
    assert_eq!(r["blocked"], true, "{r}");
    assert_eq!(r["event"]["blocked_by"], "guard", "{r}");
    assert!(!r.to_string().contains("INTERNAL"), "{r}");
}

#[tokio::test]
async fn a_huge_hook_answer_is_a_hook_error() {
    let huge = remote(Answer::Huge {
        key: "action",
        value: "allow",
        megabytes: 50,
    })
    .await;
    let s = hook_server(&format!("{}/hook", huge.base)).await;
    let r = tokio::time::timeout(Duration::from_secs(60), s.post_text("r", "ws", "hello"))
        .await
        .expect("the hook call ends");
    let written = huge.written.load(Ordering::SeqCst);
    eprintln!("huge hook answer: {written} bytes written");
    assert!(written < 20 * 1024 * 1024, "{written} bytes were read");
    assert_eq!(r["blocked"], true, "{r}");
    assert_eq!(r["event"]["blocked_by"], "guard", "{r}");
    assert!(!r.to_string().contains("ZZZZ"), "the body is echoed");
}
