//! Trace export (RFC §15.7): `roomkit serve` sends its pipeline spans as
//! OTLP/JSON to a collector when one is configured, flushes them on
//! SIGTERM, and keeps serving whatever the collector does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

use super::{Server, config_file};

/// What the fake collector received.
#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<Value>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
}

/// A fake OTLP/HTTP collector on loopback answering `status` to every
/// `POST /v1/traces`.
async fn collector(status: StatusCode) -> (String, Received) {
    let received = Received::default();
    let r = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: String| {
            let r = r.clone();
            async move {
                let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
                r.bodies.lock().unwrap().push(value);
                r.headers.lock().unwrap().push(headers);
                (status, "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    attributes: HashMap<String, String>,
}

fn attr_value(v: &Value) -> String {
    for k in ["stringValue", "intValue", "doubleValue", "boolValue"] {
        if let Some(x) = v.get(k) {
            return match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    v.to_string()
}

fn attributes(list: &Value) -> HashMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["key"].as_str()?.to_owned(), attr_value(&a["value"]))))
        .collect()
}

/// Every span of every request, and every resource's attributes.
fn spans(received: &Received) -> (Vec<Span>, Vec<HashMap<String, String>>) {
    let mut spans = Vec::new();
    let mut resources = Vec::new();
    for body in received.bodies.lock().unwrap().iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            resources.push(attributes(&rs["resource"]["attributes"]));
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    spans.push(Span {
                        name: s["name"].as_str().unwrap_or_default().to_owned(),
                        trace_id: s["traceId"].as_str().unwrap_or_default().to_owned(),
                        span_id: s["spanId"].as_str().unwrap_or_default().to_owned(),
                        parent_id: s["parentSpanId"].as_str().unwrap_or_default().to_owned(),
                        attributes: attributes(&s["attributes"]),
                    });
                }
            }
        }
    }
    (spans, resources)
}

/// The one span with this name and attribute value.
fn find<'a>(spans: &'a [Span], name: &str, key: &str, value: &str) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && s.attributes.get(key).map(String::as_str) == Some(value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} span with {key}={value}; spans: {spans:#?}"
    );
    found[0]
}

#[tokio::test]
async fn t46_pipeline_spans_reach_the_collector_and_are_flushed_on_sigterm() {
    let (endpoint, received) = collector(StatusCode::OK).await;
    let s = Server::start_with(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "roomkit-trace-test"),
        ],
    )
    .await;
    s.room("traced", true).await;
    let result = s.post_text("traced", "ws", "hello traces").await;
    let event_id = result["event"]["id"].as_str().unwrap().to_owned();
    // Nothing forces an export before shutdown: the flush on SIGTERM must
    // deliver the spans.
    assert_eq!(s.terminate().await, Some(0));

    let (spans, resources) = spans(&received);
    assert!(
        resources
            .iter()
            .all(|r| r.get("service.name").map(String::as_str) == Some("roomkit-trace-test")),
        "{resources:?}"
    );
    let root = find(&spans, "send_event", "event_id", &event_id);
    assert_eq!(root.attributes["room_id"], "traced");
    assert_eq!(root.attributes["channel_id"], "ws");
    assert!(root.attributes.contains_key("latency_ms"));
    // The §10.1 stages of the event are children of its root span.
    for stage in [
        "lock_room",
        "permission_check",
        "store_event",
        "plan_broadcast",
        "broadcast",
    ] {
        let child = spans
            .iter()
            .find(|s| s.name == stage && s.parent_id == root.span_id)
            .unwrap_or_else(|| panic!("no {stage} span under the root; spans: {spans:#?}"));
        assert_eq!(child.trace_id, root.trace_id, "{stage}");
        assert_eq!(child.attributes["room_id"], "traced", "{stage}");
    }
    let stored = find(&spans, "store_event", "event_id", &event_id);
    assert_eq!(stored.parent_id, root.span_id);
    let broadcast = find(&spans, "broadcast", "event_id", &event_id);
    // The echo agent is asked inside the broadcast; its answer is delivered
    // to the WebSocket channel, still in the same trace.
    let asked = spans
        .iter()
        .find(|s| s.name == "on_event" && s.parent_id == broadcast.span_id)
        .unwrap_or_else(|| panic!("no on_event under the broadcast; spans: {spans:#?}"));
    assert_eq!(asked.attributes["channel_id"], "ai");
    assert_eq!(asked.trace_id, root.trace_id);
    let in_trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    let delivery = find(&in_trace, "deliver", "channel_id", "ws");
    assert_eq!(delivery.attributes["room_id"], "traced");
    assert_eq!(delivery.attributes["attempt"], "1");
    assert_eq!(delivery.attributes["outcome"], "sent");
    let answer_id = &delivery.attributes["event_id"];
    assert_ne!(answer_id, &event_id, "the delivered event is the answer");
    let answer_broadcast = find(&spans, "broadcast", "event_id", answer_id);
    assert_eq!(delivery.parent_id, answer_broadcast.span_id);
    assert_eq!(answer_broadcast.trace_id, root.trace_id);
    // The exporter's own HTTP requests are not traced.
    assert!(
        spans
            .iter()
            .all(|s| !s.name.contains("HTTP") && !s.name.starts_with("hyper")),
        "{spans:#?}"
    );
}

#[tokio::test]
async fn telemetry_section_of_the_config_file_configures_export() {
    let (endpoint, received) = collector(StatusCode::OK).await;
    let path = config_file(&format!(
        "[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"from-the-file\"\nsample_ratio = 1.0\nheaders_env = \"TRACE_TEST_HEADERS\"\n"
    ));
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("TRACE_TEST_HEADERS", "x-collector-key=k-123")],
    )
    .await;
    s.room("filed", false).await;
    s.post_text("filed", "ws", "hello").await;
    assert_eq!(s.terminate().await, Some(0));
    let (spans, resources) = spans(&received);
    assert!(
        resources
            .iter()
            .any(|r| r.get("service.name").map(String::as_str) == Some("from-the-file")),
        "{resources:?}"
    );
    assert!(spans.iter().any(|s| s.name == "store_event"));
    let headers = received.headers.lock().unwrap();
    assert!(!headers.is_empty());
    assert!(
        headers
            .iter()
            .all(|h| h.get("x-collector-key").and_then(|v| v.to_str().ok()) == Some("k-123"))
    );
    assert!(
        headers.iter().all(
            |h| h.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/json")
        )
    );
}

/// Posts, reads back and shuts down a server whose collector misbehaves.
async fn serves_despite_the_collector(endpoint: &str) {
    let s = Server::start_with(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]).await;
    s.room("r", true).await;
    for i in 0..3 {
        let r = s.post_text("r", "ws", &format!("message {i}")).await;
        assert_eq!(r["blocked"], false, "{r}");
    }
    let texts: Vec<String> = s
        .timeline("r")
        .await
        .iter()
        .filter_map(|e| e["content"]["text"].as_str().map(str::to_owned))
        .collect();
    assert!(texts.contains(&"message 2".to_owned()), "{texts:?}");
    let (status, _) = s.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(s.terminate().await, Some(0));
}

#[tokio::test]
async fn a_collector_answering_500_changes_nothing() {
    let (endpoint, received) = collector(StatusCode::INTERNAL_SERVER_ERROR).await;
    serves_despite_the_collector(&endpoint).await;
    assert!(!received.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_collector_that_is_down_changes_nothing() {
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    serves_despite_the_collector(&endpoint).await;
}

/// The exporter's thread, when one runs (Linux names threads in /proc).
#[cfg(target_os = "linux")]
fn exporter_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|name| name.starts_with("OpenTelemetry"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn without_configuration_no_exporter_thread_starts() {
    let s = Server::start().await;
    let pid = s.child.id().unwrap();
    assert_eq!(exporter_threads(pid), 0);
    drop(s);
    let (endpoint, _received) = collector(StatusCode::OK).await;
    let s = Server::start_with(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]).await;
    let pid = s.child.id().unwrap();
    assert_eq!(exporter_threads(pid), 1);
}
