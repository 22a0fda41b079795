//! A fake Roark backend on loopback for tests, examples and benchmarks:
//! the webhook, the presign endpoint and an S3-style PUT target that
//! refuses auth headers, with fault injection (errors on a share of
//! requests, slow answers) and a record of all traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use crate::protocol::{API_KEY_HEADER, CHUNK_UPLOAD_PATH, PCM_CONTENT_TYPE, WEBHOOK_PATH};

/// Faults to inject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every `fail_every`-th request (all routes counted together) is
    /// answered 503; 0 for never.
    pub fail_every: u64,
    /// The first `fail_first` requests are answered 503.
    pub fail_first: u64,
    /// Wait before every answer.
    pub delay: Duration,
    /// Extra wait before answering a PUT.
    pub put_delay: Duration,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Order of arrival, from 0.
    pub seq: u64,
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case, in arrival order.
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
}

#[derive(Debug)]
struct State {
    key: String,
    base: String,
    faults: Mutex<Faults>,
    seq: AtomicU64,
    requests: Mutex<Vec<Recorded>>,
    objects: Mutex<BTreeMap<(String, u64), Bytes>>,
}

/// A running fake backend. Stops when dropped.
#[derive(Debug)]
pub struct FakeRoark {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRoark {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRoark {
    /// Starts on a free loopback port, expecting `api_key`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(api_key: &str, faults: Faults) -> std::io::Result<Self> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            api_key,
            faults,
        )
        .await
    }

    /// Starts on a given loopback address.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start_on(
        addr: SocketAddr,
        api_key: &str,
        faults: Faults,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            key: api_key.to_owned(),
            base: format!("http://{addr}"),
            faults: Mutex::new(faults),
            seq: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            objects: Mutex::new(BTreeMap::new()),
        });
        let s = state.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let s = s.clone();
            async move { handle(&s, req).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// The base URL to give the exporter.
    pub fn base_url(&self) -> String {
        self.state.base.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults.
    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock() = faults;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().clone()
    }

    /// Webhook events answered 2xx, in order.
    pub fn accepted_events(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == WEBHOOK_PATH && r.status < 300)
            .filter_map(Recorded::json)
            .collect()
    }

    /// Stored chunks of a call by index.
    pub fn chunks(&self, call_id: &str) -> BTreeMap<u64, Bytes> {
        self.state
            .objects
            .lock()
            .iter()
            .filter(|((c, _), _)| c == call_id)
            .map(|((_, i), b)| (*i, b.clone()))
            .collect()
    }

    /// The chunks of a call concatenated in index order.
    pub fn stitched(&self, call_id: &str) -> Vec<u8> {
        self.chunks(call_id)
            .values()
            .flat_map(|b| b.iter().copied())
            .collect()
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(s: &State, req: Request<Body>) -> Response {
    let seq = s.seq.fetch_add(1, Ordering::SeqCst);
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = axum::body::to_bytes(req.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let mut rec = Recorded {
        seq,
        method,
        path,
        headers,
        body,
        status: 0,
    };
    let faults = *s.faults.lock();
    let resp = if seq < faults.fail_first
        || (faults.fail_every > 0 && seq % faults.fail_every == faults.fail_every - 1)
    {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "injected"}),
        )
    } else {
        route(s, &rec)
    };
    let mut delay = faults.delay;
    if rec.method == "PUT" {
        delay += faults.put_delay;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    rec.status = resp.status().as_u16();
    // A PUT is stored only once its answer is decided, like S3.
    if rec.method == "PUT"
        && rec.status == 200
        && let Some((call, index)) = upload_target(&rec.path)
    {
        s.objects.lock().insert((call, index), rec.body.clone());
    }
    s.requests.lock().push(rec);
    resp
}

fn authorized(s: &State, r: &Recorded) -> bool {
    r.header(API_KEY_HEADER) == Some(s.key.as_str())
        && r.header("authorization") == Some(format!("Bearer {}", s.key).as_str())
}

fn upload_target(path: &str) -> Option<(String, u64)> {
    let path = path.split('?').next()?;
    let rest = path.strip_prefix("/upload/")?;
    let (call, index) = rest.rsplit_once('/')?;
    Some((call.to_owned(), index.parse().ok()?))
}

fn route(s: &State, r: &Recorded) -> Response {
    match (r.method.as_str(), r.path.as_str()) {
        ("POST", WEBHOOK_PATH) => {
            if !authorized(s, r) {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "unauthorized"}),
                );
            }
            match r.json() {
                Some(v) if v.get("event").is_some() => {
                    reply(StatusCode::OK, serde_json::json!({"ok": true}))
                }
                _ => reply(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "bad event"}),
                ),
            }
        }
        ("POST", CHUNK_UPLOAD_PATH) => {
            if !authorized(s, r) {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "unauthorized"}),
                );
            }
            let Some(v) = r.json() else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "not json"}),
                );
            };
            let (Some(call), Some(index)) = (
                v.get("livekitCallId").and_then(|c| c.as_str()),
                v.get("chunkIndex").and_then(serde_json::Value::as_u64),
            ) else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "missing fields"}),
                );
            };
            reply(
                StatusCode::OK,
                serde_json::json!({"data": {
                    "uploadUrl": format!("{}/upload/{call}/{index}?X-Amz-Signature=fake{index}", s.base),
                    "s3Key": format!("calls/p/{call}/chunks/{index:06}.pcm"),
                    "chunkIndex": index,
                    "expiresInSeconds": 900,
                    "method": "PUT",
                    "contentType": PCM_CONTENT_TYPE,
                }}),
            )
        }
        ("PUT", p) if p.starts_with("/upload/") => {
            if r.header("authorization").is_some() || r.header(API_KEY_HEADER).is_some() {
                return reply(
                    StatusCode::FORBIDDEN,
                    serde_json::json!({"error": "auth header not in signature"}),
                );
            }
            if r.header("content-type") != Some(PCM_CONTENT_TYPE)
                || r.header("content-length").is_none()
            {
                return reply(
                    StatusCode::FORBIDDEN,
                    serde_json::json!({"error": "signature mismatch"}),
                );
            }
            if upload_target(p).is_none() {
                return reply(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"error": "no such key"}),
                );
            }
            StatusCode::OK.into_response()
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not found"}),
        ),
    }
}
