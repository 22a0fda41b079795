//! HTTP hooks: a sync hook served by the test allows, blocks with an
//! injected message, modifies; failures follow `on_error`; async hooks are
//! called and ignored.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use parking_lot_free::Calls;
use serde_json::{Value, json};

use crate::{Server, config_file};

mod parking_lot_free {
    use std::sync::Mutex;

    /// Bodies the hook server received.
    #[derive(Default)]
    pub struct Calls(pub Mutex<Vec<serde_json::Value>>);

    impl Calls {
        pub fn push(&self, v: serde_json::Value) {
            self.0.lock().unwrap().push(v);
        }

        pub fn all(&self) -> Vec<serde_json::Value> {
            self.0.lock().unwrap().clone()
        }
    }
}

/// A hook endpoint on loopback that decides by the event's text.
async fn hook_server(calls: Arc<Calls>) -> String {
    let decide = move |Json(body): Json<Value>| {
        let calls = calls.clone();
        async move {
            calls.push(body.clone());
            let text = body["event"]["content"]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if text.contains("slow") {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let answer = if text.contains("card") {
                json!({"action": "block", "reason": "pii detected",
                       "inject": [{"content": {"type": "text", "text": "Please do not share card numbers."},
                                   "target_channel_ids": ["ws"]}],
                       "tasks": [{"type": "review", "title": "Check the message"}],
                       "observations": [{"type": "risk", "data": {"level": "high"}}]})
            } else if text.contains("modify") {
                let mut event = body["event"].clone();
                event["content"] = json!({"type": "text", "text": "modified by hook"});
                json!({"action": "modify", "event": event})
            } else if text.contains("garbage") {
                return "not json at all".to_owned();
            } else {
                json!({"action": "allow"})
            };
            answer.to_string()
        }
    };
    let app = axum::Router::new()
        .route("/hook", post(decide.clone()))
        .route("/audit", post(decide));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn config(hook_base: &str) -> String {
    format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "ai"
type = "ai"
provider = "echo"

[[hooks]]
name = "moderation"
trigger = "before_broadcast"
execution = "sync"
url = "{hook_base}/hook"
timeout_ms = 1000
priority = 0
on_error = "allow"

[[hooks]]
name = "audit"
trigger = "after_broadcast"
execution = "async"
url = "{hook_base}/audit"
timeout_ms = 2000
"#
    )
}

#[tokio::test]
async fn sync_hook_allows_blocks_and_modifies() {
    let calls = Arc::new(Calls::default());
    let base = hook_server(calls.clone()).await;
    let path = config_file(&config(&base));
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("r", false).await;

    let allowed = s.post_text("r", "ws", "allow me").await;
    assert_eq!(allowed["blocked"], false, "{allowed}");
    let first = calls
        .all()
        .into_iter()
        .find(|c| c["hook"] == "moderation")
        .expect("the hook was called");
    assert_eq!(first["trigger"], "before_broadcast");
    assert_eq!(first["room"]["id"], "r");
    assert_eq!(first["event"]["content"]["text"], "allow me");

    let blocked = s.post_text("r", "ws", "my card is 4111").await;
    assert_eq!(blocked["blocked"], true, "{blocked}");
    assert_eq!(blocked["reason"], "hook");
    assert_eq!(blocked["event"]["status"], "blocked");
    assert_eq!(blocked["event"]["blocked_by"], "moderation");
    let timeline = s.timeline("r").await;
    let injected = timeline
        .iter()
        .find(|e| e["content"]["text"] == "Please do not share card numbers.")
        .expect("the injected message is stored");
    assert_eq!(injected["source"]["channel_id"], "system");
    assert_eq!(injected["metadata"]["injected_by"], "moderation");
    assert_eq!(
        injected["index"].as_u64().unwrap(),
        blocked["event"]["index"].as_u64().unwrap() + 1
    );
    let tasks = s.ok("GET", "/rooms/r/tasks", None).await;
    let task = &tasks["items"][0];
    assert_eq!(task["type"], "review");
    assert_eq!(task["status"], "pending");
    assert_eq!(task["title"], "Check the message");
    let tid = task["id"].as_str().unwrap();
    let done = s
        .ok(
            "PATCH",
            &format!("/tasks/{tid}"),
            Some(json!({"status": "completed"})),
        )
        .await;
    assert_eq!(done["status"], "completed");
    let (st, e) = s
        .call(
            "PATCH",
            &format!("/tasks/{tid}"),
            Some(json!({"status": "sideways"})),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    let obs = s.ok("GET", "/rooms/r/observations", None).await;
    assert_eq!(obs["items"][0]["type"], "risk");

    let modified = s.post_text("r", "ws", "please modify this").await;
    assert_eq!(modified["blocked"], false);
    assert_eq!(modified["event"]["content"]["text"], "modified by hook");

    // An unreadable answer is a hook error; on_error = allow lets it through.
    let garbage = s.post_text("r", "ws", "garbage answer").await;
    assert_eq!(garbage["blocked"], false);
    // So is a timeout.
    let slow = s.post_text("r", "ws", "slow answer").await;
    assert_eq!(slow["blocked"], false);

    // The async hook is called for broadcast events; its answer is ignored.
    let mut audited = false;
    for _ in 0..100 {
        if calls
            .all()
            .iter()
            .any(|c| c["hook"] == "audit" && c["trigger"] == "after_broadcast")
        {
            audited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(audited, "the async hook was called");
}

#[tokio::test]
async fn failing_hook_with_on_error_block_blocks_with_its_name() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let path = config_file(&format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[hooks]]
name = "guard"
trigger = "before_broadcast"
url = "http://127.0.0.1:{port}/hook"
timeout_ms = 500
on_error = "block"
"#
    ));
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &[]).await;
    s.room("r", false).await;
    let r = s.post_text("r", "ws", "hello").await;
    assert_eq!(r["blocked"], true, "{r}");
    assert_eq!(r["reason"], "hook");
    assert_eq!(r["event"]["blocked_by"], "guard");
}
