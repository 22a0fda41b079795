//! Appendix B flows through the HTTP server: the REST API is driven
//! in-process (the router the `roomkit` binary serves), and the AI channels
//! are built from configuration exactly as `roomkit serve` builds them,
//! with `base_url` pointing at a fake OpenAI-compatible provider.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use roomkit_ai::{AiChannelConfig, ProviderKind, SecretString};
use roomkit_core::RoomKit;
use roomkit_core::model::FrameworkEvent;
use roomkit_server::{ConnectionRegistry, Server, ServerOptions};
use roomkit_testkit::RecordingChannel;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::fake::{FakeServer, Reply};

fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-b", "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 6}
    })
}

fn ai_config(id: &str, provider: &FakeServer, prompt: &str) -> AiChannelConfig {
    let toml = format!(
        r#"
id = "{id}"
type = "ai"
provider = "openai"
model = "fake-model"
base_url = "{}/v1"
system_prompt = "{prompt}"
stream = "never"
max_retries = 0
"#,
        provider.base
    );
    let mut c: AiChannelConfig = toml::from_str(&toml).unwrap();
    c.api_key = Some(SecretString::new("sk-fake"));
    assert_eq!(c.provider, ProviderKind::Openai);
    c
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn timeline(app: &axum::Router, room: &str) -> Vec<Value> {
    let (s, page) = call(
        app,
        "GET",
        &format!("/rooms/{room}/timeline?limit=500"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn b1_customer_sms_and_ai() {
    let provider = FakeServer::start().await;
    provider.push(Reply::json(
        200,
        completion("Bonjour Jean! Comment puis-je vous aider ?"),
    ));
    let ai = ai_config("ai", &provider, "You are a support agent.")
        .build()
        .unwrap();
    let sms = RecordingChannel::sms("sms_main");
    let kit = RoomKit::builder()
        .channel(sms.arc())
        .channel(ai.clone())
        .max_chain_depth(5)
        .build()
        .unwrap();
    ai.attach_kit(&kit);
    let mut fw = kit.subscribe();
    let app = Server::new(
        kit.clone(),
        ConnectionRegistry::new(),
        ServerOptions::default(),
    )
    .router();

    assert_eq!(
        call(&app, "POST", "/rooms", Some(json!({"id": "r1"})))
            .await
            .0,
        StatusCode::CREATED
    );
    for c in ["sms_main", "ai"] {
        let (s, b) = call(
            &app,
            "POST",
            "/rooms/r1/channels",
            Some(json!({"channel_id": c})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, b) = call(
        &app,
        "POST",
        "/rooms/r1/events",
        Some(json!({"channel_id": "sms_main", "sender_id": "+15551234567", "content": {"type": "text", "text": "Bonjour"}})),
    )
    .await;
    assert!(s.is_success(), "{s} {b}");
    kit.idle().await;

    let events = timeline(&app, "r1").await;
    let inbound = events
        .iter()
        .find(|e| e["source"]["channel_id"] == "sms_main")
        .expect("the SMS is stored");
    let reply = events
        .iter()
        .find(|e| e["source"]["channel_id"] == "ai")
        .expect("the AI answered");
    assert_eq!(inbound["chain_depth"], 0);
    assert_eq!(reply["chain_depth"], 1);
    assert_eq!(reply["parent_event_id"], inbound["id"]);
    assert_eq!(reply["status"], "delivered");
    assert_eq!(
        reply["content"]["text"],
        "Bonjour Jean! Comment puis-je vous aider ?"
    );
    assert_eq!(reply["metadata"]["ai_usage"]["completion_tokens"], 6);
    assert_eq!(reply["source"]["provider"], "openai");
    // SMS delivery of the reply; nothing further answered.
    assert_eq!(
        sms.delivered_texts(),
        ["Bonjour Jean! Comment puis-je vous aider ?"]
    );
    assert_eq!(provider.requests().len(), 1);

    // What the provider was asked: the system prompt with the SMS limit,
    // then the customer's message.
    let body = &provider.requests()[0].body;
    assert_eq!(
        provider.requests()[0].header("authorization"),
        Some("Bearer sk-fake")
    );
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "system");
    assert!(
        msgs[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You are a support agent.")
    );
    assert!(
        msgs[0]["content"].as_str().unwrap().contains("1600"),
        "SMS capabilities: {}",
        msgs[0]["content"]
    );
    assert_eq!(msgs[1], json!({"role": "user", "content": "Bonjour"}));

    let mut saw_metrics = false;
    while let Ok(e) = fw.try_recv() {
        if let FrameworkEvent::AiTurnMetrics {
            completion_tokens,
            provider,
            ..
        } = &*e
        {
            assert_eq!(*completion_tokens, 6);
            assert_eq!(provider, "openai");
            saw_metrics = true;
        }
    }
    assert!(saw_metrics, "ai_turn_metrics published");
}

#[tokio::test]
async fn b4_ai_to_ai_until_the_chain_depth_limit() {
    let analyst_p = FakeServer::start().await;
    let writer_p = FakeServer::start().await;
    analyst_p.push(Reply::json(
        200,
        completion("Based on analysis, key findings are: A, B."),
    ));
    analyst_p.push(Reply::json(
        200,
        completion("Good report. One correction: B is C."),
    ));
    analyst_p.push(Reply::json(200, completion("Final check done.")));
    writer_p.push(Reply::json(
        200,
        completion("Here is the report based on the analysis."),
    ));
    writer_p.push(Reply::json(200, completion("Report revised.")));
    let analyst = ai_config("analyst_ai", &analyst_p, "You analyse.")
        .build()
        .unwrap();
    let writer = ai_config("writer_ai", &writer_p, "You write reports.")
        .build()
        .unwrap();
    let human = RecordingChannel::websocket("human");
    let kit = RoomKit::builder()
        .channel(human.arc())
        .channel(analyst.clone())
        .channel(writer.clone())
        .max_chain_depth(5)
        .build()
        .unwrap();
    analyst.attach_kit(&kit);
    writer.attach_kit(&kit);
    let mut fw = kit.subscribe();
    let app = Server::new(
        kit.clone(),
        ConnectionRegistry::new(),
        ServerOptions::default(),
    )
    .router();
    call(&app, "POST", "/rooms", Some(json!({"id": "r4"}))).await;
    for c in ["human", "analyst_ai", "writer_ai"] {
        let (s, _) = call(
            &app,
            "POST",
            "/rooms/r4/channels",
            Some(json!({"channel_id": c})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, b) = call(
        &app,
        "POST",
        "/rooms/r4/events",
        Some(json!({"channel_id": "human", "content": {"type": "text", "text": "Analyse Q3 and write a report."}, "addressed_to": ["analyst_ai"]})),
    )
    .await;
    assert!(s.is_success(), "{s} {b}");
    kit.idle().await;

    let events: Vec<Value> = timeline(&app, "r4")
        .await
        .into_iter()
        .filter(|e| e["type"] == "message")
        .collect();
    let chain: Vec<(String, u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["source"]["channel_id"].as_str().unwrap().to_owned(),
                e["chain_depth"].as_u64().unwrap(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |c: &str, d: u64, s: &str| (c.to_owned(), d, s.to_owned());
    assert_eq!(
        chain,
        [
            expect("human", 0, "delivered"),
            expect("analyst_ai", 1, "delivered"),
            expect("writer_ai", 2, "delivered"),
            expect("analyst_ai", 3, "delivered"),
            expect("writer_ai", 4, "delivered"),
            expect("analyst_ai", 5, "blocked"),
        ]
    );
    let last = events.last().unwrap();
    assert_eq!(last["blocked_by"], "event_chain_depth_limit");
    // Each reply names its parent.
    for w in events.windows(2) {
        assert_eq!(w[1]["parent_event_id"], w[0]["id"]);
    }
    // The writer saw the analyst as a named speaker.
    let wbody = &writer_p.requests()[0].body;
    let last_msg = wbody["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last_msg["role"], "user");
    assert!(
        last_msg["content"]
            .as_str()
            .unwrap()
            .starts_with("[analyst_ai] Based on analysis")
    );
    // The human saw the delivered replies, not the blocked one.
    assert_eq!(human.delivered_texts().len(), 4);
    let mut exceeded = false;
    while let Ok(e) = fw.try_recv() {
        if let FrameworkEvent::ChainDepthExceeded { depth, .. } = &*e {
            assert_eq!(*depth, 5);
            exceeded = true;
        }
    }
    assert!(exceeded, "chain_depth_exceeded published");
    let _ = Arc::strong_count(&analyst);
}
