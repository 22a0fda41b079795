//! The AI channel's tool calls reach call analytics: a fake OpenAI server
//! asks for a tool, the tool answers, and the call exported to a fake Roark
//! backend pairs the call with its result and carries the turn's metrics.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use roomkit_ai::{
    AiChannel, AiChannelConfig, AiError, Tool, ToolContext, ToolDefinition, ToolOutput,
};
use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::{
    AnalyticsConfig, ApiKey, CallAnalytics, ExportState, RoarkConfig, RoarkExporter, RoomCallPolicy,
};
use roomkit_core::model::{FrameworkEvent, RoomId};
use serde_json::{Value, json};

use crate::channel::room_with;
use crate::fake::{FakeServer, Reply};

const KEY: &str = "rk_live_ai_test";

struct LookupOrder;

#[async_trait]
impl Tool for LookupOrder {
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "lookup_order".into(),
            description: "Finds an order".into(),
            parameters: json!({"type": "object", "properties": {"order_id": {"type": "string"}}}),
        }
    }

    async fn call(&self, arguments: Value, _: &ToolContext) -> Result<ToolOutput, AiError> {
        Ok(ToolOutput::text(
            json!({"order_id": arguments["order_id"], "status": "shipped"}).to_string(),
        ))
    }
}

fn completion(message: Value) -> Value {
    json!({
        "id": "chatcmpl-t", "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 8}
    })
}

fn provider_config(server: &FakeServer) -> AiChannelConfig {
    let mut c: AiChannelConfig = toml::from_str(&format!(
        "id = \"ai\"\ntype = \"ai\"\nprovider = \"openai\"\nmodel = \"fake-model\"\nbase_url = \"{}/v1\"\nstream = \"never\"\nmax_retries = 0\n",
        server.base
    ))
    .unwrap();
    c.api_key = Some(roomkit_ai::SecretString::new("sk-fake"));
    c
}

#[tokio::test]
async fn tool_calls_are_exported_paired_with_their_results() {
    let openai = FakeServer::start().await;
    openai.push(Reply::json(
        200,
        completion(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_42", "type": "function",
             "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"A-1\"}"}}]})),
    ));
    openai.push(Reply::json(
        200,
        completion(json!({"role": "assistant", "content": "Order A-1 has shipped."})),
    ));
    let provider = provider_config(&openai).build_provider().unwrap();
    let ai = AiChannel::builder("ai")
        .provider(provider)
        .tool(Arc::new(LookupOrder))
        .build();
    let room = room_with(ai, roomkit_testkit::RecordingChannel::websocket("user")).await;

    let roark = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = std::env::temp_dir().join(format!("rk-ai-analytics-{}", uuid_like()));
    let exporter =
        RoarkExporter::new(RoarkConfig::new(ApiKey::new(KEY), roark.base_url())).unwrap();
    let analytics =
        CallAnalytics::new(AnalyticsConfig::new(&spool), vec![Arc::new(exporter)]).unwrap();
    analytics.observe_rooms(&room.kit, RoomCallPolicy::new("support-bot"));
    let mut bus = room.kit.subscribe();

    room.say("where is order A-1?").await;
    assert_eq!(room.user.delivered_texts(), ["Order A-1 has shipped."]);
    // The channel published the tool call with its result.
    let mut seen = None;
    while let Ok(ev) = bus.try_recv() {
        if let FrameworkEvent::AiToolCall {
            call_id,
            name,
            result,
            is_error,
            ..
        } = &*ev
        {
            seen = Some((call_id.clone(), name.clone(), result.clone(), *is_error));
        }
    }
    let (call_id, name, result, is_error) = seen.expect("an ai_tool_call event");
    assert_eq!(
        (call_id.as_str(), name.as_str()),
        ("call_42", "lookup_order")
    );
    assert!(!is_error);
    assert!(result.contains("shipped"));

    let room_id = RoomId::from("r1");
    let call = analytics
        .call_in_room(&room_id)
        .expect("the room is a call");
    // Closing the room ends the call; the observer took the turn's events
    // first (they were published before the close).
    room.kit.close_room(&room_id).await.unwrap();
    assert_eq!(call.exported().await, ExportState::Completed);

    let ended = roark
        .accepted_events()
        .into_iter()
        .find(|e| e["event"] == "call-ended")
        .expect("call-ended");
    let tools = ended["toolCalls"].as_array().expect("toolCalls");
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(tools[0]["kind"], "tool_call");
    assert_eq!(tools[0]["toolCallId"], "call_42");
    assert_eq!(tools[0]["name"], "lookup_order");
    assert_eq!(tools[0]["arguments"], "{\"order_id\":\"A-1\"}");
    assert_eq!(tools[1]["kind"], "tool_result");
    assert_eq!(tools[1]["toolCallId"], "call_42");
    let content: Value = serde_json::from_str(tools[1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["status"], "shipped");
    assert!(tools[0]["timestamp"].as_str().unwrap() <= tools[1]["timestamp"].as_str().unwrap());

    let llm: Vec<&Value> = ended["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter(|m| m["kind"] == "llm")
        .collect();
    assert_eq!(llm.len(), 1, "one llm record per turn");
    assert_eq!(llm[0]["promptTokens"], 60, "both provider rounds");
    assert_eq!(llm[0]["totalTokens"], 76);
    let roles: Vec<&str> = ended["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"]);
    analytics.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&spool);
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}
