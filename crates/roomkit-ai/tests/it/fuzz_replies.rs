//! Property tests of provider reply parsing (the CI-time counterpart of the
//! `ai_reply` fuzz target): random bytes, mutated completions and mutated
//! event streams, cut into random pieces and served with random statuses,
//! always end in a response or a typed [`AiError`], never a panic, and a
//! stream always ends.

use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use roomkit_ai::{
    AIContext, AIMessage, AIProvider, AiError, AnthropicProvider, HttpSettings, OpenAiProvider,
    RetryPolicy, SecretString,
};
use serde_json::{Value, json};

use crate::fake::{FakeServer, Reply};

fn settings(server: &FakeServer) -> HttpSettings {
    let mut s = HttpSettings::new(format!("{}/v1", server.base));
    s.api_key = Some(SecretString::new("sk-fuzz"));
    s.retry = RetryPolicy {
        max_retries: 0,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
    };
    s
}

fn reply(status: u16, stream: bool, body: &[u8], cuts: &[usize], retry_after: &str) -> Reply {
    let mut chunks = Vec::new();
    let mut rest = body;
    for c in cuts {
        if rest.is_empty() {
            break;
        }
        let n = (c % rest.len()).max(1);
        chunks.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    chunks.push(rest.to_vec());
    let ct = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut headers = vec![("content-type".to_owned(), ct.to_owned())];
    if !retry_after.is_empty() {
        headers.push(("retry-after".to_owned(), retry_after.to_owned()));
    }
    Reply {
        status,
        headers,
        chunks,
        delay_before: Duration::ZERO,
        delay_between: Duration::ZERO,
    }
}

fn typed(e: &AiError) {
    assert!(!e.to_string().is_empty(), "{e:?}");
}

/// Serves `r` and has both providers read it, streamed or not.
fn run(r: Reply, stream: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = FakeServer::start().await;
        server.always(r);
        let providers: Vec<Box<dyn AIProvider>> = vec![
            Box::new(OpenAiProvider::new("gpt-fuzz", settings(&server)).unwrap()),
            Box::new(AnthropicProvider::new("claude-fuzz", settings(&server)).unwrap()),
        ];
        let messages = [AIMessage::user("hi")];
        let context = AIContext::default();
        for p in &providers {
            if stream {
                match p.generate_stream(&messages, &context).await {
                    Ok(mut events) => {
                        while let Some(item) = events.next().await {
                            if let Err(e) = item {
                                typed(&e);
                                break;
                            }
                        }
                    }
                    Err(e) => typed(&e),
                }
            } else if let Err(e) = p.generate(&messages, &context).await {
                typed(&e);
            }
        }
    });
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{}])),
    ]
}

fn replace(v: &mut Value, pick: &mut usize, new: &mut Option<Value>) {
    if *pick == 0 {
        if let Some(n) = new.take() {
            *v = n;
        }
        return;
    }
    *pick -= 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => Vec::new(),
    };
    for c in children {
        replace(c, pick, new);
        if new.is_none() {
            return;
        }
    }
}

fn valid_events() -> Vec<Value> {
    vec![
        // OpenAI chunks.
        json!({"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": "hi",
            "tool_calls": [{"index": 0, "id": "t1", "function": {"name": "f", "arguments": "{\"a\":"}}]},
            "finish_reason": null}]}),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 1}}}),
        // Anthropic events.
        json!({"type": "message_start", "message": {"id": "m1", "model": "c", "usage": {"input_tokens": 3}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
    ]
}

fn valid_completions() -> Vec<Value> {
    vec![
        json!({"id": "c", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "hi", "tool_calls": [{"id": "t", "type": "function",
            "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
        json!({"id": "m", "type": "message", "role": "assistant", "model": "c",
            "content": [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "t", "name": "f", "input": {}},
                {"type": "thinking", "thinking": "x", "signature": "s"}],
            "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 2}}),
        json!({"error": {"type": "rate_limit_error", "message": "slow down"}}),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_bytes_as_any_reply(
        body in prop::collection::vec(any::<u8>(), 0..300),
        cuts in prop::collection::vec(any::<usize>(), 0..4),
        status in prop::sample::select(vec![200u16, 400, 401, 429, 500, 529]),
        retry_after in prop_oneof![Just(String::new()), "[0-9]{1,12}", "[ -~]{0,16}"],
        stream in any::<bool>(),
    ) {
        run(reply(status, stream, &body, &cuts, &retry_after), stream);
    }

    #[test]
    fn mutated_event_streams(
        picks in prop::collection::vec((0usize..8, 0usize..24, leaf()), 1..6),
        named in any::<bool>(),
        done in any::<bool>(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let events = valid_events();
        let mut body = String::new();
        for (which, pick, new) in picks {
            let mut e = events[which].clone();
            replace(&mut e, &mut { pick }, &mut Some(new));
            if named {
                let name = e["type"].as_str().unwrap_or("message").to_owned();
                body.push_str(&format!("event: {name}\n"));
            }
            body.push_str(&format!("data: {e}\n\n"));
        }
        if done {
            body.push_str("data: [DONE]\n\n");
        }
        run(reply(200, true, body.as_bytes(), &cuts, ""), true);
    }

    #[test]
    fn mutated_completions(
        which in 0usize..3,
        edits in prop::collection::vec((0usize..32, leaf()), 1..4),
        status in prop::sample::select(vec![200u16, 400, 429, 500]),
    ) {
        let mut v = valid_completions()[which].clone();
        for (pick, new) in edits {
            replace(&mut v, &mut { pick }, &mut Some(new));
        }
        run(reply(status, false, v.to_string().as_bytes(), &[], ""), false);
    }
}

/// Found by fuzzing (`fuzz/regressions/ai_reply/`): an event stream
/// starting with a UTF-8 byte-order mark panicked inside the SSE parser.
/// The mark is now dropped, however the body is cut, and the stream reads
/// as if it were not there.
#[tokio::test]
async fn a_byte_order_mark_before_the_stream_is_ignored() {
    let chunk = json!({"id": "c", "model": "m", "choices": [{"index": 0,
        "delta": {"content": "hi"}, "finish_reason": "stop"}]});
    let body = format!("\u{feff}\u{feff}data: {chunk}\n\ndata: [DONE]\n\n");
    for sizes in [vec![1000], vec![1], vec![2, 1], vec![3, 5]] {
        let server = FakeServer::start().await;
        let mut r = reply(200, true, body.as_bytes(), &[], "");
        let bytes = body.as_bytes();
        r.chunks = Vec::new();
        let (mut i, mut k) = (0, 0);
        while i < bytes.len() {
            let end = (i + sizes[k % sizes.len()]).min(bytes.len());
            r.chunks.push(bytes[i..end].to_vec());
            i = end;
            k += 1;
        }
        server.always(r);
        let p = OpenAiProvider::new("gpt-fuzz", settings(&server)).unwrap();
        let mut events = p
            .generate_stream(&[AIMessage::user("hi")], &AIContext::default())
            .await
            .unwrap();
        let mut text = String::new();
        while let Some(item) = events.next().await {
            match item.unwrap() {
                roomkit_ai::StreamEvent::TextDelta(t) => text.push_str(&t),
                roomkit_ai::StreamEvent::Done(r) => assert_eq!(r.text, "hi"),
                _ => {}
            }
        }
        assert_eq!(text, "hi", "chunk sizes {sizes:?}");
    }
}
