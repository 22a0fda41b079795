//! The OpenAI-compatible provider against a fake chat-completions server.

use std::time::Duration;

use futures::StreamExt;
use roomkit_ai::{
    AIContentPart, AIContext, AIMessage, AIProvider, AiError, HttpSettings, OpenAiProvider,
    RetryPolicy, Role, SecretString, StopReason, StreamEvent, ToolCall, ToolDefinition, ToolResult,
};
use serde_json::{Value, json};

use crate::fake::{FakeServer, Reply, sse_data};

pub fn settings(server: &FakeServer) -> HttpSettings {
    let mut s = HttpSettings::new(format!("{}/v1", server.base));
    s.api_key = Some(SecretString::new("sk-test"));
    s.retry = RetryPolicy {
        max_retries: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    s
}

fn provider(server: &FakeServer) -> OpenAiProvider {
    OpenAiProvider::new("gpt-test", settings(server)).unwrap()
}

pub fn weather_tool() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "Weather of a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

fn conversation() -> Vec<AIMessage> {
    vec![
        AIMessage::user("What is the weather in Paris?"),
        AIMessage {
            role: Role::Assistant,
            content: vec![AIContentPart::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: json!({"city": "Paris"}),
            })],
        },
        AIMessage {
            role: Role::User,
            content: vec![AIContentPart::ToolResult(ToolResult {
                call_id: "call_1".into(),
                name: "get_weather".into(),
                content: "{\"sky\":\"clear\"}".into(),
                is_error: false,
            })],
        },
    ]
}

fn context() -> AIContext {
    AIContext {
        system_instructions: Some("You are terse.".into()),
        tools: vec![weather_tool()],
        temperature: Some(0.2),
        max_tokens: Some(64),
        ..AIContext::default()
    }
}

fn completion(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-test-0001",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35, "prompt_tokens_details": {"cached_tokens": 16}}
    })
}

#[tokio::test]
async fn request_body_carries_system_prompt_order_tools_and_results() {
    let server = FakeServer::start().await;
    server.push(Reply::json(200, completion("Clear skies.")));
    let r = provider(&server)
        .generate(&conversation(), &context())
        .await
        .unwrap();
    assert_eq!(r.text, "Clear skies.");
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(r.usage.prompt_tokens, 31);
    assert_eq!(r.usage.completion_tokens, 4);
    assert_eq!(r.usage.cached_tokens, 16);
    assert_eq!(r.model, "gpt-test-0001");

    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization"), Some("Bearer sk-test"));
    let b = &req.body;
    assert_eq!(b["model"], "gpt-test");
    assert_eq!(
        b["temperature"].as_f64().map(|t| (t * 10.0).round()),
        Some(2.0)
    );
    assert_eq!(b["max_tokens"], 64);
    assert!(b.get("stream").is_none());
    let roles: Vec<&str> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(b["messages"][0]["content"], "You are terse.");
    assert_eq!(b["messages"][2]["content"], Value::Null);
    assert_eq!(b["messages"][2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(
        b["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(b["messages"][3]["tool_call_id"], "call_1");
    assert_eq!(b["messages"][3]["content"], "{\"sky\":\"clear\"}");
    assert_eq!(b["tools"][0]["type"], "function");
    assert_eq!(b["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        b["tools"][0]["function"]["parameters"]["required"][0],
        "city"
    );
}

fn text_chunks(parts: &[&str]) -> String {
    let mut events: Vec<Value> = parts
        .iter()
        .map(|p| json!({"id": "c1", "model": "gpt-test", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}))
        .collect();
    events
        .push(json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    events.push(
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}),
    );
    sse_data(&events, true)
}

async fn collect(
    stream: roomkit_ai::ResponseStream,
) -> (String, Option<roomkit_ai::AIResponse>, Option<AiError>) {
    let mut text = String::new();
    let mut done = None;
    let mut err = None;
    let mut s = stream;
    while let Some(item) = s.next().await {
        match item {
            Ok(StreamEvent::TextDelta(d)) => text.push_str(&d),
            Ok(StreamEvent::ThinkingDelta(_)) => {}
            Ok(StreamEvent::Done(r)) => done = Some(r),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    (text, done, err)
}

#[tokio::test]
async fn streamed_text_survives_any_byte_split() {
    // Multi-byte characters make a split inside a character likely.
    let body = text_chunks(&["Bonjour ", "Jean, ", "ça va ? ", "🙂 très bien"]);
    for sizes in [vec![1], vec![2], vec![3, 7], vec![5, 1, 13], vec![64]] {
        let server = FakeServer::start().await;
        server.push(Reply::sse_split(&body, &sizes));
        let stream = provider(&server)
            .generate_stream(&[AIMessage::user("hi")], &AIContext::default())
            .await
            .unwrap();
        let (text, done, err) = collect(stream).await;
        assert!(err.is_none(), "split {sizes:?}: {err:?}");
        assert_eq!(
            text, "Bonjour Jean, ça va ? 🙂 très bien",
            "split {sizes:?}"
        );
        let done = done.expect("a final response");
        assert_eq!(done.text, text);
        assert_eq!(done.usage.completion_tokens, 3);
        let req = &server.requests()[0];
        assert_eq!(req.body["stream"], true);
        assert_eq!(req.body["stream_options"]["include_usage"], true);
    }
}

#[tokio::test]
async fn tool_calls_spread_over_many_deltas_are_assembled() {
    let args_a = "{\"city\": \"Paris\", \"unit\": \"celsius\"}";
    let args_b = "{\"city\": \"Québec\"}";
    let mut events =
        vec![json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]})];
    events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}));
    events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}}]}));
    // Interleave the two argument strings three characters at a time.
    let a: Vec<char> = args_a.chars().collect();
    let b: Vec<char> = args_b.chars().collect();
    for i in (0..a.len().max(b.len())).step_by(3) {
        for (idx, s) in [(0, &a), (1, &b)] {
            if i < s.len() {
                let piece: String = s[i..(i + 3).min(s.len())].iter().collect();
                events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": idx, "function": {"arguments": piece}}]}}]}));
            }
        }
    }
    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
    let body = sse_data(&events, true);
    let server = FakeServer::start().await;
    server.push(Reply::sse_split(&body, &[17, 3]));
    let stream = provider(&server)
        .generate_stream(&[AIMessage::user("weather?")], &context())
        .await
        .unwrap();
    let (text, done, err) = collect(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "");
    let r = done.unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.tool_calls.len(), 2);
    assert_eq!(r.tool_calls[0].id, "call_a");
    assert_eq!(
        r.tool_calls[0].arguments,
        json!({"city": "Paris", "unit": "celsius"})
    );
    assert_eq!(r.tool_calls[1].id, "call_b");
    assert_eq!(r.tool_calls[1].arguments, json!({"city": "Québec"}));
}

#[tokio::test]
async fn a_malformed_chunk_is_a_clear_error() {
    let server = FakeServer::start().await;
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {not json\n\ndata: [DONE]\n\n";
    server.push(Reply::sse_split(body, &[10]));
    let stream = provider(&server)
        .generate_stream(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    let (text, done, err) = collect(stream).await;
    assert_eq!(text, "Hi");
    assert!(done.is_none());
    let err = err.expect("an error");
    assert_eq!(err.code(), "malformed");
    assert!(err.to_string().contains("not JSON"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_stream_cut_short_is_an_error() {
    let server = FakeServer::start().await;
    let body = sse_data(
        &[json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})],
        false,
    );
    server.push(Reply::sse_split(&body, &[8]));
    let stream = provider(&server)
        .generate_stream(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    let (_, done, err) = collect(stream).await;
    assert!(done.is_none());
    assert_eq!(err.map(|e| e.code()), Some("malformed"));
}

#[tokio::test]
async fn a_non_json_body_is_malformed() {
    let server = FakeServer::start().await;
    server.push(Reply::raw(200, "application/json", "<html>oops</html>"));
    let e = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "malformed");
    let server = FakeServer::start().await;
    server.push(Reply::json(200, json!({"choices": []})));
    let e = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "malformed");
}

#[tokio::test]
async fn rate_limit_with_retry_after_is_retried() {
    let server = FakeServer::start().await;
    server.push(
        Reply::json(
            429,
            json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
        )
        .header("retry-after", "20"),
    );
    server.push(Reply::json(200, completion("ok")));
    let r = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    assert_eq!(r.text, "ok");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn rate_limit_exhausting_retries_reports_retry_after() {
    let server = FakeServer::start().await;
    server.always(
        Reply::json(429, json!({"error": {"message": "Rate limit reached"}}))
            .header("retry-after", "20"),
    );
    let e = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap_err();
    assert!(matches!(e, AiError::RateLimited { .. }), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(20)));
    assert!(e.to_string().contains("Rate limit reached"));
    assert_eq!(server.requests().len(), 3, "first attempt and two retries");
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let server = FakeServer::start().await;
    server.push(Reply::json(500, json!({"error": {"message": "boom"}})));
    server.push(Reply::json(503, json!({"error": {"message": "busy"}})));
    server.push(Reply::json(200, completion("third time")));
    let r = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    assert_eq!(r.text, "third time");
    assert_eq!(server.requests().len(), 3);

    let server = FakeServer::start().await;
    server.always(Reply::json(500, json!({"error": {"message": "boom"}})));
    let e = provider(&server)
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "overloaded");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn auth_and_bad_request_are_not_retried() {
    for (status, code) in [(401, "auth"), (400, "bad_request"), (404, "bad_request")] {
        let server = FakeServer::start().await;
        server.always(Reply::json(
            status,
            json!({"error": {"message": "nope", "type": "invalid_request_error"}}),
        ));
        let e = provider(&server)
            .generate(&[AIMessage::user("x")], &AIContext::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code);
        assert_eq!(server.requests().len(), 1, "status {status} is not retried");
        assert!(!e.to_string().contains("sk-test"), "no key in errors");
    }
}

#[tokio::test]
async fn a_slow_first_byte_times_out_and_a_merely_slow_one_does_not() {
    let server = FakeServer::start().await;
    server.always(Reply::json(200, completion("late")).delayed(Duration::from_millis(400)));
    let mut s = settings(&server);
    s.first_byte_timeout = Duration::from_millis(50);
    s.retry = RetryPolicy::none();
    let e = OpenAiProvider::new("gpt-test", s)
        .unwrap()
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            AiError::Timeout {
                phase: "first byte",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_retryable());

    let server = FakeServer::start().await;
    server.push(Reply::json(200, completion("slow but fine")).delayed(Duration::from_millis(100)));
    let mut s = settings(&server);
    s.first_byte_timeout = Duration::from_secs(20);
    let r = OpenAiProvider::new("gpt-test", s)
        .unwrap()
        .generate(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    assert_eq!(r.text, "slow but fine");
}

#[tokio::test]
async fn an_error_object_inside_the_stream_is_classified() {
    let server = FakeServer::start().await;
    let body = sse_data(
        &[
            json!({"choices": [{"index": 0, "delta": {"content": "par"}}]}),
            json!({"error": {"message": "The server had an error", "type": "server_error"}}),
        ],
        false,
    );
    server.push(Reply::sse_split(&body, &[100]));
    let stream = provider(&server)
        .generate_stream(&[AIMessage::user("x")], &AIContext::default())
        .await
        .unwrap();
    let (text, _, err) = collect(stream).await;
    assert_eq!(text, "par");
    assert_eq!(err.map(|e| e.code()), Some("overloaded"));
}
