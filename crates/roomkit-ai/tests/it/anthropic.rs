//! The Anthropic provider against a fake Messages server.

use std::time::Duration;

use futures::StreamExt;
use roomkit_ai::{
    AIContentPart, AIContext, AIMessage, AIProvider, AnthropicProvider, HttpSettings, RetryPolicy,
    Role, SecretString, StopReason, StreamEvent, ToolCall, ToolResult,
};
use serde_json::{Value, json};

use crate::fake::{FakeServer, Reply, sse_named};
use crate::openai::weather_tool;

fn provider(server: &FakeServer) -> AnthropicProvider {
    let mut s = HttpSettings::new(server.base.clone());
    s.api_key = Some(SecretString::new("sk-ant-test"));
    s.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    AnthropicProvider::new("claude-test", s).unwrap()
}

fn message(content: Value, stop: &str) -> Value {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test-2026",
        "content": content, "stop_reason": stop,
        "usage": {"input_tokens": 40, "output_tokens": 12, "cache_read_input_tokens": 8, "cache_creation_input_tokens": 0}
    })
}

#[tokio::test]
async fn request_body_uses_the_native_format() {
    let server = FakeServer::start().await;
    server.push(Reply::json(
        200,
        message(json!([{"type": "text", "text": "Clear."}]), "end_turn"),
    ));
    let history = vec![
        AIMessage::user("Hello"),
        AIMessage::user("Weather in Paris?"),
        AIMessage {
            role: Role::Assistant,
            content: vec![
                AIContentPart::Text {
                    text: "Checking.".into(),
                },
                AIContentPart::ToolCall(ToolCall {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                    arguments: json!({"city": "Paris"}),
                }),
            ],
        },
        AIMessage {
            role: Role::User,
            content: vec![AIContentPart::ToolResult(ToolResult {
                call_id: "toolu_1".into(),
                name: "get_weather".into(),
                content: "sunny".into(),
                is_error: false,
            })],
        },
    ];
    let ctx = AIContext {
        system_instructions: Some("Be brief.".into()),
        tools: vec![weather_tool()],
        ..AIContext::default()
    };
    let r = provider(&server).generate(&history, &ctx).await.unwrap();
    assert_eq!(r.text, "Clear.");
    assert_eq!(r.usage.prompt_tokens, 48);
    assert_eq!(r.usage.cached_tokens, 8);
    assert_eq!(r.usage.completion_tokens, 12);

    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert!(req.header("authorization").is_none());
    let b = &req.body;
    assert_eq!(b["system"], "Be brief.");
    assert_eq!(b["max_tokens"], 1024, "the required default");
    assert_eq!(b["tools"][0]["name"], "get_weather");
    assert_eq!(b["tools"][0]["input_schema"]["required"][0], "city");
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "consecutive user messages are merged");
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"][0]["text"], "Hello");
    assert_eq!(msgs[0]["content"][1]["text"], "Weather in Paris?");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"][1]["type"], "tool_use");
    assert_eq!(msgs[1]["content"][1]["input"]["city"], "Paris");
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
    assert_eq!(msgs[2]["content"][0]["tool_use_id"], "toolu_1");
    assert_eq!(msgs[2]["content"][0]["content"], "sunny");
}

#[tokio::test]
async fn tool_use_response_is_parsed() {
    let server = FakeServer::start().await;
    server.push(Reply::json(
        200,
        message(
            json!([{"type": "text", "text": "Let me look."},
                   {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}]),
            "tool_use",
        ),
    ));
    let r = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.tool_calls[0].id, "toolu_9");
    assert_eq!(r.tool_calls[0].arguments, json!({"city": "Oslo"}));
}

fn stream_events(text_parts: &[&str], json_parts: &[&str]) -> Vec<Value> {
    let mut ev = vec![
        json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant", "model": "claude-test", "content": [], "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    for t in text_parts {
        ev.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}));
    }
    ev.push(json!({"type": "content_block_stop", "index": 0}));
    if !json_parts.is_empty() {
        ev.push(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_s", "name": "get_weather", "input": {}}}));
        for p in json_parts {
            ev.push(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": p}}));
        }
        ev.push(json!({"type": "content_block_stop", "index": 1}));
    }
    let stop = if json_parts.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    ev.push(json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 17}}));
    ev.push(json!({"type": "message_stop"}));
    ev
}

async fn drain(
    p: &AnthropicProvider,
) -> (
    String,
    Option<roomkit_ai::AIResponse>,
    Option<roomkit_ai::AiError>,
) {
    let mut s = p
        .generate_stream(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    let (mut text, mut done, mut err) = (String::new(), None, None);
    while let Some(i) = s.next().await {
        match i {
            Ok(StreamEvent::TextDelta(d)) => text.push_str(&d),
            Ok(StreamEvent::Done(r)) => done = Some(r),
            Ok(_) => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    (text, done, err)
}

#[tokio::test]
async fn streamed_text_and_tool_input_survive_awkward_splits() {
    let body = sse_named(&stream_events(
        &["Je ", "regarde ", "ça… 🌦"],
        &["{\"ci", "ty\": ", "\"Montréal\"", "}"],
    ));
    for sizes in [vec![1], vec![4, 9], vec![31], vec![2, 3, 5, 7, 11]] {
        let server = FakeServer::start().await;
        server.push(Reply::sse_split(&body, &sizes));
        let (text, done, err) = drain(&provider(&server)).await;
        assert!(err.is_none(), "{sizes:?}: {err:?}");
        assert_eq!(text, "Je regarde ça… 🌦");
        let r = done.unwrap();
        assert_eq!(r.text, text);
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.tool_calls[0].arguments, json!({"city": "Montréal"}));
        assert_eq!(r.usage.prompt_tokens, 25);
        assert_eq!(r.usage.completion_tokens, 17);
        assert_eq!(server.requests()[0].body["stream"], true);
    }
}

#[tokio::test]
async fn an_overloaded_error_event_ends_the_stream() {
    let mut ev = stream_events(&["partial"], &[]);
    ev.truncate(4);
    ev.push(
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    let server = FakeServer::start().await;
    server.push(Reply::sse_split(&sse_named(&ev), &[50]));
    let (text, done, err) = drain(&provider(&server)).await;
    assert_eq!(text, "partial");
    assert!(done.is_none());
    let e = err.unwrap();
    assert_eq!(e.code(), "overloaded");
    assert!(e.to_string().contains("Overloaded"));
}

#[tokio::test]
async fn malformed_events_and_cut_streams_are_errors() {
    let server = FakeServer::start().await;
    let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n";
    server.push(Reply::sse_split(body, &[7]));
    let (_, done, err) = drain(&provider(&server)).await;
    assert!(done.is_none());
    assert!(err.unwrap().to_string().contains("unknown block"));

    let mut ev = stream_events(&["no stop"], &[]);
    ev.pop();
    let server = FakeServer::start().await;
    server.push(Reply::sse_split(&sse_named(&ev), &[64]));
    let (_, done, err) = drain(&provider(&server)).await;
    assert!(done.is_none());
    assert_eq!(err.map(|e| e.code()), Some("malformed"));
}

#[tokio::test]
async fn overload_529_is_retried_and_auth_is_not() {
    let server = FakeServer::start().await;
    server.push(Reply::json(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    server.push(Reply::json(
        200,
        message(json!([{"type": "text", "text": "back"}]), "end_turn"),
    ));
    let r = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    assert_eq!(r.text, "back");
    assert_eq!(server.requests().len(), 2);

    let server = FakeServer::start().await;
    server.always(Reply::json(
        401,
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    ));
    let e = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "auth");
    assert_eq!(server.requests().len(), 1);
    assert!(!format!("{e:?}").contains("sk-ant-test"));
}
