//! Anthropic Messages (`POST {base_url}/v1/messages`), streamed with
//! typed server-sent events.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, HttpSettings};
use super::openai::parse_arguments;
use crate::error::AiError;
use crate::provider::AIProvider;
use crate::types::{
    AIContentPart, AIContext, AIMessage, AIResponse, ResponseStream, Role, StopReason, StreamEvent,
    ToolCall, Usage,
};

/// Default API root.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The API version sent in `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the protocol; this is used when none is set.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// An Anthropic Messages provider.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    model: String,
    settings: HttpSettings,
    client: reqwest::Client,
}

impl AnthropicProvider {
    /// A provider for `model` with the given connection settings.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(model: impl Into<String>, settings: HttpSettings) -> Result<Self, AiError> {
        Ok(Self {
            model: model.into(),
            client: http::client(&settings)?,
            settings,
        })
    }

    fn url(&self) -> String {
        format!("{}/v1/messages", self.settings.base_url)
    }

    fn headers(&self) -> Result<HeaderMap, AiError> {
        let mut h = HeaderMap::new();
        h.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        if let Some(key) = &self.settings.api_key {
            let mut v = HeaderValue::from_str(key.expose())
                .map_err(|_| AiError::config("api_key", "the API key is not a valid header"))?;
            v.set_sensitive(true);
            h.insert("x-api-key", v);
        }
        Ok(h)
    }

    /// The request body for a conversation.
    pub fn request_body(&self, messages: &[AIMessage], context: &AIContext, stream: bool) -> Value {
        // System text: the context's instructions, then any system messages.
        let mut system: Vec<String> = context
            .system_instructions
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let mut wire: Vec<(Role, Vec<Value>)> = Vec::new();
        for m in messages {
            if m.role == Role::System {
                system.push(m.plain_text());
                continue;
            }
            let blocks = encode_parts(m);
            if blocks.is_empty() {
                continue;
            }
            // The protocol wants user and assistant turns to alternate:
            // consecutive messages of one role are merged.
            match wire.last_mut() {
                Some((role, content)) if *role == m.role => content.extend(blocks),
                _ => wire.push((m.role, blocks)),
            }
        }
        let messages: Vec<Value> = wire
            .into_iter()
            .map(|(role, content)| {
                json!({
                    "role": if role == Role::Assistant { "assistant" } else { "user" },
                    "content": content,
                })
            })
            .collect();
        let mut body = json!({
            "model": self.model,
            "max_tokens": context.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages,
        });
        if let Some(obj) = body.as_object_mut() {
            if !system.is_empty() {
                obj.insert("system".into(), Value::String(system.join("\n\n")));
            }
            if !context.tools.is_empty() {
                let tools: Vec<Value> = context
                    .tools
                    .iter()
                    .map(|t| {
                        json!({
                            "name": t.name,
                            "description": t.description,
                            "input_schema": t.parameters,
                        })
                    })
                    .collect();
                obj.insert("tools".into(), Value::Array(tools));
            }
            if let Some(t) = context.temperature {
                obj.insert("temperature".into(), json!(t));
            }
            if let Some(b) = context.thinking_budget {
                obj.insert(
                    "thinking".into(),
                    json!({"type": "enabled", "budget_tokens": b}),
                );
            }
            if stream {
                obj.insert("stream".into(), Value::Bool(true));
            }
        }
        body
    }
}

fn encode_parts(m: &AIMessage) -> Vec<Value> {
    let mut out = Vec::with_capacity(m.content.len());
    // Tool results must open a user turn.
    for p in &m.content {
        if let AIContentPart::ToolResult(r) = p {
            out.push(json!({
                "type": "tool_result",
                "tool_use_id": r.call_id,
                "content": r.content,
                "is_error": r.is_error,
            }));
        }
    }
    for p in &m.content {
        match p {
            AIContentPart::Text { text } if !text.is_empty() => {
                out.push(json!({"type": "text", "text": text}));
            }
            // Unsigned reasoning (from another provider) cannot be sent
            // back; signed blocks must be.
            AIContentPart::Thinking {
                text,
                signature: Some(sig),
            } if m.role == Role::Assistant => {
                out.push(json!({"type": "thinking", "thinking": text, "signature": sig}));
            }
            AIContentPart::ToolCall(c) if m.role == Role::Assistant => {
                let input = if c.arguments.is_object() {
                    c.arguments.clone()
                } else {
                    json!({})
                };
                out.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
            }
            _ => {}
        }
    }
    out
}

fn stop_reason(s: Option<&str>) -> StopReason {
    match s {
        None | Some("end_turn") => StopReason::EndTurn,
        Some("max_tokens") => StopReason::MaxTokens,
        Some("tool_use") => StopReason::ToolUse,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("refusal") => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Merges later counters (message_delta carries cumulative ones).
    fn merge(&mut self, other: WireUsage) {
        if other.input_tokens.is_some() {
            self.input_tokens = other.input_tokens;
        }
        if other.output_tokens.is_some() {
            self.output_tokens = other.output_tokens;
        }
        if other.cache_read_input_tokens.is_some() {
            self.cache_read_input_tokens = other.cache_read_input_tokens;
        }
        if other.cache_creation_input_tokens.is_some() {
            self.cache_creation_input_tokens = other.cache_creation_input_tokens;
        }
    }

    /// Prompt tokens are the whole prompt: fresh, cache-written and
    /// cache-read input, as OpenAI counts them.
    fn usage(&self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: self.input_tokens.unwrap_or(0)
                + cached
                + self.cache_creation_input_tokens.unwrap_or(0),
            completion_tokens: self.output_tokens.unwrap_or(0),
            cached_tokens: cached,
        }
    }

    fn to_map(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
        })
    }
}

#[derive(Debug, Deserialize)]
struct Message {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
    #[serde(other)]
    Other,
}

fn api_error(provider: &str, v: &Value) -> Option<AiError> {
    if v.get("type").and_then(Value::as_str) != Some("error") {
        return None;
    }
    let kind = v
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("api_error");
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("error")
        .to_owned();
    let provider = provider.to_owned();
    Some(match kind {
        "rate_limit_error" => AiError::RateLimited {
            provider,
            retry_after: None,
            message,
        },
        "authentication_error" | "permission_error" => AiError::Auth {
            provider,
            status: 0,
            message,
        },
        "invalid_request_error" | "not_found_error" | "request_too_large" => AiError::BadRequest {
            provider,
            status: 0,
            message,
        },
        _ => AiError::Overloaded {
            provider,
            status: 0,
            message,
            retry_after: None,
        },
    })
}

fn response_from(provider: &str, fallback_model: &str, m: Message) -> AIResponse {
    let mut text = String::new();
    let mut thinking = Vec::new();
    let mut tool_calls = Vec::new();
    for b in m.content {
        match b {
            Block::Text { text: t } => text.push_str(&t),
            Block::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: if input.is_null() { json!({}) } else { input },
            }),
            Block::Thinking {
                thinking: t,
                signature,
            } => thinking.push(AIContentPart::Thinking { text: t, signature }),
            Block::Other => {}
        }
    }
    let mut provider_metadata = roomkit_core::model::Map::new();
    if let Some(id) = m.id {
        provider_metadata.insert("response_id".into(), id.into());
    }
    provider_metadata.insert("usage".into(), m.usage.to_map());
    let _ = provider;
    AIResponse {
        text,
        thinking,
        tool_calls,
        usage: m.usage.usage(),
        stop_reason: stop_reason(m.stop_reason.as_deref()),
        model: m.model.unwrap_or_else(|| fallback_model.to_owned()),
        provider_metadata,
        ..AIResponse::default()
    }
}

/// One content block being streamed.
#[derive(Debug)]
enum OpenBlock {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
    },
    Thinking {
        text: String,
        signature: Option<String>,
    },
    Other,
}

/// Assembles a streamed message from its typed events.
#[derive(Debug, Default)]
pub(crate) struct StreamAssembler {
    blocks: BTreeMap<u64, OpenBlock>,
    usage: WireUsage,
    stop: Option<String>,
    model: String,
    id: Option<String>,
    started: bool,
    stopped: bool,
}

impl StreamAssembler {
    /// Feeds one event (`event:` name and `data:` payload); returns the
    /// deltas it carried.
    pub(crate) fn feed(
        &mut self,
        provider: &str,
        event: &str,
        data: &str,
    ) -> Result<Vec<StreamEvent>, AiError> {
        if data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            AiError::malformed(
                provider,
                format!("a stream event is not JSON ({})", http::json_problem(&e)),
            )
        })?;
        if let Some(e) = api_error(provider, &v) {
            return Err(e);
        }
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event)
            .to_owned();
        let index = v.get("index").and_then(Value::as_u64);
        let need_index = || {
            index.ok_or_else(|| AiError::malformed(provider, format!("{kind} without an index")))
        };
        let mut out = Vec::new();
        match kind.as_str() {
            "message_start" => {
                self.started = true;
                if let Some(m) = v.get("message") {
                    if let Some(u) = m.get("usage") {
                        self.usage.merge(parse_usage(provider, u)?);
                    }
                    if let Some(model) = m.get("model").and_then(Value::as_str) {
                        self.model = model.to_owned();
                    }
                    self.id = m.get("id").and_then(Value::as_str).map(str::to_owned);
                }
            }
            "content_block_start" => {
                let i = need_index()?;
                let block = v.get("content_block").ok_or_else(|| {
                    AiError::malformed(provider, "content_block_start without a block")
                })?;
                let open = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        if !t.is_empty() {
                            out.push(StreamEvent::TextDelta(t.clone()));
                        }
                        OpenBlock::Text(t)
                    }
                    Some("tool_use") => OpenBlock::Tool {
                        id: block
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        name: block
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                AiError::malformed(provider, "tool_use block without a name")
                            })?
                            .to_owned(),
                        json: String::new(),
                    },
                    Some("thinking") => OpenBlock::Thinking {
                        text: String::new(),
                        signature: None,
                    },
                    _ => OpenBlock::Other,
                };
                self.blocks.insert(i, open);
            }
            "content_block_delta" => {
                let i = need_index()?;
                let delta = v.get("delta").ok_or_else(|| {
                    AiError::malformed(provider, "content_block_delta without a delta")
                })?;
                let block = self.blocks.get_mut(&i).ok_or_else(|| {
                    AiError::malformed(provider, format!("delta for unknown block {i}"))
                })?;
                let dtype = delta.get("type").and_then(Value::as_str).unwrap_or("");
                let s = |k: &str| {
                    delta
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                match (dtype, block) {
                    ("text_delta", OpenBlock::Text(t)) => {
                        let d = s("text");
                        t.push_str(&d);
                        if !d.is_empty() {
                            out.push(StreamEvent::TextDelta(d));
                        }
                    }
                    ("input_json_delta", OpenBlock::Tool { json, .. }) => {
                        json.push_str(&s("partial_json"));
                    }
                    ("thinking_delta", OpenBlock::Thinking { text, .. }) => {
                        let d = s("thinking");
                        text.push_str(&d);
                        out.push(StreamEvent::ThinkingDelta(d));
                    }
                    ("signature_delta", OpenBlock::Thinking { signature, .. }) => {
                        *signature = Some(s("signature"));
                    }
                    (_, OpenBlock::Other) => {}
                    (other, _) => {
                        return Err(AiError::malformed(
                            provider,
                            format!("delta {other:?} does not fit block {i}"),
                        ));
                    }
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop = Some(r.to_owned());
                }
                if let Some(u) = v.get("usage") {
                    self.usage.merge(parse_usage(provider, u)?);
                }
            }
            "message_stop" => self.stopped = true,
            // ping, content_block_stop and future event types carry
            // nothing we need.
            _ => {}
        }
        Ok(out)
    }

    /// The complete response once the stream ended.
    pub(crate) fn finish(self, provider: &str) -> Result<AIResponse, AiError> {
        if !self.started || !self.stopped {
            return Err(AiError::malformed(
                provider,
                "the stream ended before message_stop",
            ));
        }
        let mut content = Vec::with_capacity(self.blocks.len());
        for (_, b) in self.blocks {
            content.push(match b {
                OpenBlock::Text(text) => Block::Text { text },
                OpenBlock::Tool { id, name, json } => Block::ToolUse {
                    id,
                    name,
                    input: parse_arguments(&json),
                },
                OpenBlock::Thinking { text, signature } => Block::Thinking {
                    thinking: text,
                    signature,
                },
                OpenBlock::Other => Block::Other,
            });
        }
        let message = Message {
            id: self.id,
            model: Some(self.model.clone()),
            content,
            stop_reason: self.stop,
            usage: self.usage,
        };
        Ok(response_from(provider, &self.model, message))
    }
}

fn parse_usage(provider: &str, v: &Value) -> Result<WireUsage, AiError> {
    serde_json::from_value(v.clone())
        .map_err(|e| AiError::malformed(provider, format!("unexpected usage: {e}")))
}

#[async_trait]
impl AIProvider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn model_name(&self) -> &str {
        &self.model
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    async fn generate(
        &self,
        messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<AIResponse, AiError> {
        let body = self.request_body(messages, context, false);
        tracing::debug!(target: "roomkit.providers.ai.anthropic", model = %self.model, messages = messages.len(), tools = context.tools.len(), "message");
        let response = http::post_json(
            &self.client,
            &self.settings,
            "anthropic",
            &self.url(),
            &self.headers()?,
            &body,
        )
        .await?;
        let value = http::read_json(&self.settings, "anthropic", response).await?;
        if let Some(e) = api_error("anthropic", &value) {
            return Err(e);
        }
        let message: Message = serde_json::from_value(value)
            .map_err(|e| AiError::malformed("anthropic", format!("unexpected message: {e}")))?;
        Ok(response_from("anthropic", &self.model, message))
    }

    async fn generate_stream(
        &self,
        messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<ResponseStream, AiError> {
        let body = self.request_body(messages, context, true);
        tracing::debug!(target: "roomkit.providers.ai.anthropic", model = %self.model, messages = messages.len(), tools = context.tools.len(), "streamed message");
        let response = http::post_json(
            &self.client,
            &self.settings,
            "anthropic",
            &self.url(),
            &self.headers()?,
            &body,
        )
        .await?;
        let events = http::sse_events(&self.settings, "anthropic", response).boxed();
        let state = StreamAssembler {
            model: self.model.clone(),
            ..StreamAssembler::default()
        };
        type Pending = std::collections::VecDeque<Result<StreamEvent, AiError>>;
        let stream = futures::stream::unfold(
            (events, Some(state), Pending::new()),
            |(mut events, mut state, mut pending)| async move {
                loop {
                    if let Some(item) = pending.pop_front() {
                        return Some((item, (events, state, pending)));
                    }
                    let st = state.as_mut()?;
                    if st.stopped {
                        let st = state.take()?;
                        return Some((
                            st.finish("anthropic").map(StreamEvent::Done),
                            (events, None, pending),
                        ));
                    }
                    match events.next().await {
                        None => {
                            let st = state.take()?;
                            return Some((
                                st.finish("anthropic").map(StreamEvent::Done),
                                (events, None, pending),
                            ));
                        }
                        Some(Err(e)) => return Some((Err(e), (events, None, pending))),
                        Some(Ok(ev)) => match st.feed("anthropic", &ev.event, &ev.data) {
                            Ok(d) => pending.extend(d.into_iter().map(Ok)),
                            Err(e) => return Some((Err(e), (events, None, pending))),
                        },
                    }
                }
            },
        );
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_a_tool_use_stream() {
        let mut a = StreamAssembler::default();
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":30}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        for (e, d) in events {
            a.feed("anthropic", e, d).unwrap_or_else(|e| panic!("{e}"));
        }
        let r = a.finish("anthropic").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.text, "Let me check.");
        assert_eq!(r.tool_calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.usage.prompt_tokens, 25);
        assert_eq!(r.usage.cached_tokens, 5);
        assert_eq!(r.usage.completion_tokens, 30);
    }

    #[test]
    fn an_error_event_is_classified() {
        let mut a = StreamAssembler::default();
        let e = a
            .feed(
                "anthropic",
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )
            .err()
            .map(|e| e.code());
        assert_eq!(e, Some("overloaded"));
    }
}
