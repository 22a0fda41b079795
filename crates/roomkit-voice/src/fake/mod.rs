//! Fake speech vendors on loopback (feature `fake-servers`), for this
//! crate's tests and the server's black-box tests: [`FakeDeepgram`] (live
//! WebSocket and pre-recorded REST), [`FakeOpenAiAudio`] (transcriptions and
//! speech) and [`FakeElevenLabs`] (streamed PCM, with or without
//! timestamps); and [`FakeTwilio`], Twilio's Calls API, which also plays
//! the callee answering (it posts the signed voice webhook and reports the
//! media stream the TwiML names).
//!
//! Each speaks the vendor's documented wire format, checks the key and the
//! parameters as the vendor does and refuses malformed requests with the
//! vendor's error shapes. Recognition is scripted: a fake is given the
//! transcripts to return, one per utterance, in order. Speech is a tone
//! whose length follows the text. [`Faults`] make a fake fail (an HTTP
//! status), stall (stop answering mid-stream, connection left open) or
//! break the connection mid-stream, so tests can show what a call does when
//! its vendor misbehaves. Each fake binds `127.0.0.1:0`, gives its base URL,
//! records what it received, and stops when dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

mod deepgram;
mod elevenlabs;
mod openai;
mod twilio;

pub use deepgram::{DeepgramConnection, FakeDeepgram};
pub use elevenlabs::FakeElevenLabs;
pub use openai::FakeOpenAiAudio;
pub use twilio::{AnsweredCall, FakeTwilio, TwilioRefusal, stream_parameters, stream_url};

/// Faults a fake injects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Answer every request (WebSocket handshakes included) with this status.
    pub fail_status: Option<u16>,
    /// Stop answering after this many units, keeping the connection open:
    /// bytes of streamed audio (HTTP fakes) or messages sent (the live
    /// socket). `Some(0)` answers nothing at all.
    pub stall_after: Option<usize>,
    /// Break the connection (no close handshake) after this many units.
    pub close_after: Option<usize>,
    /// Wait this long before answering each request.
    pub delay: Duration,
}

/// One HTTP request as a fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Bytes,
    /// Status answered.
    pub status: u16,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A query parameter's value.
    pub fn query(&self, name: &str) -> Option<String> {
        query_pairs(self.path.split_once('?').map_or("", |(_, q)| q))
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Locks a mutex, taking the data even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Decoded `key=value` pairs of a query string.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(hex, 16) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The transcripts still to give, one per utterance (empty once used up).
#[derive(Debug, Default)]
pub(crate) struct Script(Mutex<VecDeque<String>>);

impl Script {
    pub(crate) fn new(items: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self(Mutex::new(items.into_iter().map(Into::into).collect()))
    }

    /// The next utterance's transcript.
    pub(crate) fn next(&self) -> String {
        lock(&self.0).pop_front().unwrap_or_default()
    }

    /// The transcript the next call to `next` gives, without taking it.
    pub(crate) fn peek(&self) -> String {
        lock(&self.0).front().cloned().unwrap_or_default()
    }

    pub(crate) fn push(&self, items: impl IntoIterator<Item = String>) {
        lock(&self.0).extend(items);
    }
}

/// A JSON answer.
pub(crate) fn json_reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// How long the fakes speak a text: 60 ms a character, 0.2 s to 10 s.
pub(crate) fn speech_ms(text: &str) -> u64 {
    (text.chars().count() as u64 * 60).clamp(200, 10_000)
}

/// A 440 Hz tone of `ms` milliseconds at `rate`, as little-endian PCM.
pub(crate) fn tone(rate: u32, ms: u64) -> Vec<u8> {
    let n = u64::from(rate) * ms / 1000;
    let mut out = Vec::with_capacity(usize::try_from(n * 2).unwrap_or(0));
    for i in 0..n {
        #[allow(clippy::cast_precision_loss)]
        let t = i as f64 / f64::from(rate);
        #[allow(clippy::cast_possible_truncation)]
        let s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A streamed body of `pieces`, honouring the stall and break faults
/// (counted in bytes).
pub(crate) fn faulty_body(pieces: Vec<Bytes>, faults: Faults) -> Body {
    struct St {
        pieces: VecDeque<Bytes>,
        sent: usize,
        faults: Faults,
    }
    let st = St {
        pieces: pieces.into(),
        sent: 0,
        faults,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if st.faults.stall_after.is_some_and(|n| st.sent >= n) {
            // Headers (and maybe some audio) are out; say nothing more.
            futures::future::pending::<()>().await;
        }
        if st.faults.close_after.is_some_and(|n| st.sent >= n) {
            return Some((Err(std::io::Error::other("injected break")), st));
        }
        let mut piece = st.pieces.pop_front()?;
        // Cut the piece at a fault boundary so the fault hits exactly.
        let limit = [st.faults.stall_after, st.faults.close_after]
            .into_iter()
            .flatten()
            .filter(|n| *n > st.sent)
            .min();
        if let Some(limit) = limit
            && st.sent + piece.len() > limit
        {
            let rest = piece.split_off(limit - st.sent);
            st.pieces.push_front(rest);
        }
        st.sent += piece.len();
        tokio::task::yield_now().await;
        Some((Ok::<Bytes, std::io::Error>(piece), st))
    });
    Body::from_stream(stream)
}

/// Cuts `data` into pieces of `size` bytes (the last may be shorter).
pub(crate) fn pieces(data: &[u8], size: usize) -> Vec<Bytes> {
    data.chunks(size.max(1))
        .map(Bytes::copy_from_slice)
        .collect()
}

/// Starts an axum app on a free loopback port.
pub(crate) async fn serve(
    app: axum::Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

/// Reads a request into a [`Recorded`] (status still 0).
pub(crate) async fn record(req: axum::http::Request<Body>) -> Recorded {
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    Recorded {
        method,
        path,
        headers,
        body,
        status: 0,
    }
}

/// The shared state every HTTP fake keeps.
#[derive(Debug, Default)]
pub(crate) struct Common {
    pub(crate) faults: Mutex<Faults>,
    pub(crate) requests: Mutex<Vec<Recorded>>,
}

impl Common {
    pub(crate) fn faults(&self) -> Faults {
        *lock(&self.faults)
    }
}

/// Shared handle pieces: stops the server when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one request of an HTTP fake: the delay and failure faults, the
/// route, and the record.
pub(crate) async fn handle_http<F>(
    common: &Arc<Common>,
    req: axum::http::Request<Body>,
    route: F,
) -> Response
where
    F: FnOnce(&Recorded, Faults) -> Response,
{
    let mut rec = record(req).await;
    let faults = common.faults();
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let resp = match faults.fail_status {
        Some(status) => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_reply(
                code,
                serde_json::json!({"error": {"message": "injected failure"}}),
            )
        }
        None => route(&rec, faults),
    };
    rec.status = resp.status().as_u16();
    lock(&common.requests).push(rec);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs("a=1&b=x%20y&c&d=%zz&e=%4"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), String::new()),
                ("d".into(), "%zz".into()),
                ("e".into(), "%4".into()),
            ]
        );
    }
}
