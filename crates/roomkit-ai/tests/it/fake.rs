//! A scriptable HTTP server on 127.0.0.1: each request is recorded and
//! answered by the next scripted reply, whose body can be cut into chunks
//! sent with pauses in between.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One scripted reply.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Vec<u8>>,
    pub delay_before: Duration,
    pub delay_between: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![body.to_string().into_bytes()],
            delay_before: Duration::ZERO,
            delay_between: Duration::ZERO,
        }
    }

    pub fn raw(status: u16, content_type: &str, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            chunks: vec![body.as_bytes().to_vec()],
            delay_before: Duration::ZERO,
            delay_between: Duration::ZERO,
        }
    }

    /// An SSE body cut into pieces of the given sizes, cycling.
    pub fn sse_split(body: &str, sizes: &[usize]) -> Self {
        let bytes = body.as_bytes();
        let mut chunks = Vec::new();
        let mut i = 0;
        let mut k = 0;
        while i < bytes.len() {
            let n = sizes[k % sizes.len()].max(1);
            let end = (i + n).min(bytes.len());
            chunks.push(bytes[i..end].to_vec());
            i = end;
            k += 1;
        }
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks,
            delay_before: Duration::ZERO,
            delay_between: Duration::from_millis(1),
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay_before = d;
        self
    }
}

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Option<Reply>>,
}

/// The fake server.
#[derive(Clone)]
pub struct FakeServer {
    pub base: String,
    inner: Arc<Inner>,
}

impl FakeServer {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{addr}"),
            inner,
        }
    }

    pub fn push(&self, r: Reply) -> &Self {
        self.inner.replies.lock().push_back(r);
        self
    }

    /// The reply used when the script is empty.
    pub fn always(&self, r: Reply) {
        *self.inner.fallback.lock() = Some(r);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().clone()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    inner.requests.lock().push(Recorded {
        path,
        headers,
        body,
    });
    let reply = inner.replies.lock().pop_front();
    let reply = reply
        .or_else(|| inner.fallback.lock().clone())
        .unwrap_or_else(|| Reply::raw(599, "text/plain", "no scripted reply"));
    if !reply.delay_before.is_zero() {
        tokio::time::sleep(reply.delay_before).await;
    }
    let between = reply.delay_between;
    let stream = futures::stream::iter(reply.chunks.into_iter().enumerate()).then(
        move |(i, c)| async move {
            if i > 0 && !between.is_zero() {
                tokio::time::sleep(between).await;
            }
            Ok::<_, std::io::Error>(Bytes::from(c))
        },
    );
    let mut b = Response::builder().status(reply.status);
    for (k, v) in reply.headers {
        b = b.header(k, v);
    }
    b.body(Body::from_stream(stream)).unwrap()
}

use futures::StreamExt;

/// An SSE body of `data:` events (OpenAI style).
pub fn sse_data(events: &[Value], done: bool) -> String {
    let mut s = String::new();
    for e in events {
        s.push_str(&format!("data: {e}\n\n"));
    }
    if done {
        s.push_str("data: [DONE]\n\n");
    }
    s
}

/// An SSE body of named events (Anthropic style).
pub fn sse_named(events: &[Value]) -> String {
    let mut s = String::new();
    for e in events {
        let name = e["type"].as_str().unwrap_or("message");
        s.push_str(&format!("event: {name}\ndata: {e}\n\n"));
    }
    s
}
