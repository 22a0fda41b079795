//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`):
//! OpenAI itself and the many servers that speak the same protocol (Azure
//! OpenAI, Ollama, vLLM, LiteLLM, OpenRouter, Mistral, xAI, DeepSeek).

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{self, HttpSettings};
use crate::error::AiError;
use crate::provider::AIProvider;
use crate::types::{
    AIContentPart, AIContext, AIMessage, AIResponse, ResponseStream, Role, StopReason, StreamEvent,
    ToolCall, Usage,
};

/// Default API root.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// An OpenAI-compatible chat completions provider.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    name: String,
    model: String,
    settings: HttpSettings,
    client: reqwest::Client,
    stream_usage: bool,
    extra_headers: Vec<(String, String)>,
}

impl OpenAiProvider {
    /// A provider for `model` with the given connection settings.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(model: impl Into<String>, settings: HttpSettings) -> Result<Self, AiError> {
        Ok(Self {
            name: "openai".to_owned(),
            model: model.into(),
            client: http::client(&settings)?,
            settings,
            stream_usage: true,
            extra_headers: Vec::new(),
        })
    }

    /// Renames the provider (for logs and metrics: `"ollama"`, ...).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Whether streamed requests ask for a final usage chunk
    /// (`stream_options.include_usage`); on by default. Turn it off for
    /// servers that reject the option.
    pub fn with_stream_usage(mut self, on: bool) -> Self {
        self.stream_usage = on;
        self
    }

    /// Adds a header to every request (`api-key` for Azure, ...).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.settings.base_url)
    }

    fn headers(&self) -> Result<HeaderMap, AiError> {
        let mut h = HeaderMap::new();
        if let Some(key) = &self.settings.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                .map_err(|_| AiError::config("api_key", "the API key is not a valid header"))?;
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        for (k, v) in &self.extra_headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| AiError::config("headers", format!("{k:?} is not a header name")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| AiError::config("headers", format!("bad value for {k}")))?;
            h.insert(name, value);
        }
        Ok(h)
    }

    /// The request body for a conversation (public for tests and tools
    /// that want to inspect what would be sent).
    pub fn request_body(&self, messages: &[AIMessage], context: &AIContext, stream: bool) -> Value {
        let mut wire = Vec::with_capacity(messages.len() + 1);
        if let Some(system) = context
            .system_instructions
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            wire.push(json!({"role": "system", "content": system}));
        }
        for m in messages {
            encode_message(m, &mut wire);
        }
        let mut body = json!({"model": self.model, "messages": wire});
        let obj = body.as_object_mut();
        if let Some(obj) = obj {
            if !context.tools.is_empty() {
                let tools: Vec<Value> = context
                    .tools
                    .iter()
                    .map(|t| {
                        json!({"type": "function", "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.parameters,
                        }})
                    })
                    .collect();
                obj.insert("tools".into(), Value::Array(tools));
            }
            if let Some(t) = context.temperature {
                obj.insert("temperature".into(), json!(t));
            }
            if let Some(m) = context.max_tokens {
                obj.insert("max_tokens".into(), json!(m));
            }
            if stream {
                obj.insert("stream".into(), Value::Bool(true));
                if self.stream_usage {
                    obj.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
        }
        body
    }
}

fn encode_message(m: &AIMessage, wire: &mut Vec<Value>) {
    match m.role {
        Role::System => wire.push(json!({"role": "system", "content": m.plain_text()})),
        Role::User => {
            // Tool results answer the assistant message just before, so
            // they come first, one `tool` message each.
            for p in &m.content {
                if let AIContentPart::ToolResult(r) = p {
                    wire.push(json!({
                        "role": "tool",
                        "tool_call_id": r.call_id,
                        "content": r.content,
                    }));
                }
            }
            let text = m.plain_text();
            if !text.is_empty() {
                wire.push(json!({"role": "user", "content": text}));
            }
        }
        Role::Assistant => {
            let text = m.plain_text();
            let calls: Vec<Value> = m
                .tool_calls()
                .map(|c| {
                    json!({
                        "id": c.id,
                        "type": "function",
                        "function": {
                            "name": c.name,
                            "arguments": arguments_string(&c.arguments),
                        },
                    })
                })
                .collect();
            let mut msg = json!({
                "role": "assistant",
                "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) },
            });
            if !calls.is_empty()
                && let Some(o) = msg.as_object_mut()
            {
                o.insert("tool_calls".into(), Value::Array(calls));
            }
            wire.push(msg);
        }
    }
}

fn arguments_string(args: &Value) -> String {
    match args {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Tool arguments as the model wrote them: a JSON value when they parse
/// (an empty string is `{}`), else the raw text, which the tool loop
/// reports back to the model as an error.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

fn stop_reason(s: Option<&str>) -> StopReason {
    match s {
        None | Some("stop") => StopReason::EndTurn,
        Some("length") => StopReason::MaxTokens,
        Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
        Some("content_filter") => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl WireUsage {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
    id: String,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// An error object sent in place of a chunk.
fn stream_error(provider: &str, v: &Value) -> Option<AiError> {
    let err = v.get("error")?;
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("error in stream")
        .to_owned();
    let kind = err
        .get("type")
        .or_else(|| err.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(match kind {
        "rate_limit_exceeded" | "rate_limit_error" => AiError::RateLimited {
            provider: provider.to_owned(),
            retry_after: None,
            message,
        },
        "invalid_request_error" => AiError::BadRequest {
            provider: provider.to_owned(),
            status: 0,
            message,
        },
        _ => AiError::Overloaded {
            provider: provider.to_owned(),
            status: 0,
            message,
            retry_after: None,
        },
    })
}

/// Assembles a streamed completion from its chunks.
#[derive(Debug, Default)]
pub(crate) struct StreamAssembler {
    text: String,
    thinking: String,
    calls: BTreeMap<usize, (String, String, String)>,
    finish: Option<String>,
    usage: Usage,
    model: String,
    id: Option<String>,
    done: bool,
}

impl StreamAssembler {
    /// Feeds one SSE `data` payload; returns the deltas it carried.
    pub(crate) fn feed(&mut self, provider: &str, data: &str) -> Result<Vec<StreamEvent>, AiError> {
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_str(data).map_err(|e| {
            AiError::malformed(
                provider,
                format!("a stream chunk is not JSON ({})", http::json_problem(&e)),
            )
        })?;
        if let Some(e) = stream_error(provider, &value) {
            return Err(e);
        }
        let chunk: Chunk = serde_json::from_value(value)
            .map_err(|e| AiError::malformed(provider, format!("unexpected stream chunk: {e}")))?;
        if self.id.is_none() {
            self.id = chunk.id;
        }
        if let Some(m) = chunk.model {
            self.model = m;
        }
        if let Some(u) = chunk.usage {
            self.usage = u.usage();
        }
        let mut out = Vec::new();
        for choice in chunk.choices {
            if let Some(t) = choice.delta.reasoning_content.filter(|t| !t.is_empty()) {
                self.thinking.push_str(&t);
                out.push(StreamEvent::ThinkingDelta(t));
            }
            if let Some(t) = choice.delta.content.filter(|t| !t.is_empty()) {
                self.text.push_str(&t);
                out.push(StreamEvent::TextDelta(t));
            }
            for d in choice.delta.tool_calls {
                let index = d.index.unwrap_or(self.calls.len().saturating_sub(1));
                let entry = self.calls.entry(index).or_default();
                if let Some(id) = d.id.filter(|s| !s.is_empty()) {
                    entry.0 = id;
                }
                if let Some(f) = d.function {
                    if let Some(n) = f.name {
                        entry.1.push_str(&n);
                    }
                    if let Some(a) = f.arguments {
                        entry.2.push_str(&a);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                self.finish = choice.finish_reason;
            }
        }
        Ok(out)
    }

    /// The complete response once the stream ended.
    pub(crate) fn finish(self, provider: &str) -> Result<AIResponse, AiError> {
        if !self.done && self.finish.is_none() {
            return Err(AiError::malformed(
                provider,
                "the stream ended before the response was complete",
            ));
        }
        let mut tool_calls = Vec::with_capacity(self.calls.len());
        for (i, (id, name, args)) in self.calls {
            if name.is_empty() {
                return Err(AiError::malformed(
                    provider,
                    format!("streamed tool call {i} has no name"),
                ));
            }
            tool_calls.push(ToolCall {
                id: if id.is_empty() {
                    format!("call_{i}")
                } else {
                    id
                },
                name,
                arguments: parse_arguments(&args),
            });
        }
        let mut provider_metadata = roomkit_core::model::Map::new();
        if let Some(id) = self.id {
            provider_metadata.insert("response_id".into(), id.into());
        }
        let mut stop = stop_reason(self.finish.as_deref());
        if !tool_calls.is_empty() && stop == StopReason::EndTurn {
            stop = StopReason::ToolUse;
        }
        Ok(AIResponse {
            text: self.text,
            thinking: if self.thinking.is_empty() {
                Vec::new()
            } else {
                vec![AIContentPart::Thinking {
                    text: self.thinking,
                    signature: None,
                }]
            },
            tool_calls,
            usage: self.usage,
            stop_reason: stop,
            model: self.model,
            provider_metadata,
            ..AIResponse::default()
        })
    }
}

#[async_trait]
impl AIProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
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
        tracing::debug!(target: "roomkit.providers.ai.openai", provider = %self.name, model = %self.model, messages = messages.len(), tools = context.tools.len(), "chat completion");
        let response = http::post_json(
            &self.client,
            &self.settings,
            &self.name,
            &self.url(),
            &self.headers()?,
            &body,
        )
        .await?;
        let value = http::read_json(&self.settings, &self.name, response).await?;
        if let Some(e) = stream_error(&self.name, &value) {
            return Err(e);
        }
        let completion: Completion = serde_json::from_value(value)
            .map_err(|e| AiError::malformed(&self.name, format!("unexpected completion: {e}")))?;
        let Some(choice) = completion.choices.into_iter().next() else {
            return Err(AiError::malformed(
                &self.name,
                "the completion has no choices",
            ));
        };
        let tool_calls: Vec<ToolCall> = choice
            .message
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: parse_arguments(&c.function.arguments),
            })
            .collect();
        let mut provider_metadata = roomkit_core::model::Map::new();
        if let Some(id) = completion.id {
            provider_metadata.insert("response_id".into(), id.into());
        }
        let mut stop = stop_reason(choice.finish_reason.as_deref());
        if !tool_calls.is_empty() && stop == StopReason::EndTurn {
            stop = StopReason::ToolUse;
        }
        Ok(AIResponse {
            text: choice.message.content.unwrap_or_default(),
            thinking: choice
                .message
                .reasoning_content
                .filter(|t| !t.is_empty())
                .map(|text| {
                    vec![AIContentPart::Thinking {
                        text,
                        signature: None,
                    }]
                })
                .unwrap_or_default(),
            tool_calls,
            usage: completion.usage.map(|u| u.usage()).unwrap_or_default(),
            stop_reason: stop,
            model: completion.model.unwrap_or_else(|| self.model.clone()),
            provider_metadata,
            ..AIResponse::default()
        })
    }

    async fn generate_stream(
        &self,
        messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<ResponseStream, AiError> {
        let body = self.request_body(messages, context, true);
        tracing::debug!(target: "roomkit.providers.ai.openai", provider = %self.name, model = %self.model, messages = messages.len(), tools = context.tools.len(), "streamed chat completion");
        let response = http::post_json(
            &self.client,
            &self.settings,
            &self.name,
            &self.url(),
            &self.headers()?,
            &body,
        )
        .await?;
        let events = http::sse_events(&self.settings, &self.name, response);
        let provider = self.name.clone();
        let model = self.model.clone();
        Ok(assemble(provider, model, events.boxed()))
    }
}

type Pending = std::collections::VecDeque<Result<StreamEvent, AiError>>;

fn assemble(
    provider: String,
    model: String,
    events: futures::stream::BoxStream<'static, Result<eventsource_stream::Event, AiError>>,
) -> ResponseStream {
    let state = StreamAssembler {
        model,
        ..StreamAssembler::default()
    };
    futures::stream::unfold(
        (events, Some(state), Pending::new()),
        move |(mut events, mut state, mut pending)| {
            let provider = provider.clone();
            async move {
                loop {
                    if let Some(item) = pending.pop_front() {
                        return Some((item, (events, state, pending)));
                    }
                    let st = state.as_mut()?;
                    if st.done {
                        // Anything after [DONE] is ignored.
                        let st = state.take()?;
                        return Some((
                            st.finish(&provider).map(StreamEvent::Done),
                            (events, None, pending),
                        ));
                    }
                    match events.next().await {
                        None => {
                            let st = state.take()?;
                            return Some((
                                st.finish(&provider).map(StreamEvent::Done),
                                (events, None, pending),
                            ));
                        }
                        Some(Err(e)) => return Some((Err(e), (events, None, pending))),
                        Some(Ok(ev)) => match st.feed(&provider, &ev.data) {
                            Ok(deltas) => pending.extend(deltas.into_iter().map(Ok)),
                            Err(e) => return Some((Err(e), (events, None, pending))),
                        },
                    }
                }
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_tool_call_deltas() {
        let mut a = StreamAssembler::default();
        let chunks = [
            r#"{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"weather","arguments":"{\"ci"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":4}}}"#,
            "[DONE]",
        ];
        for c in chunks {
            a.feed("openai", c).unwrap_or_else(|e| panic!("{e}"));
        }
        let r = a.finish("openai").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "get_weather");
        assert_eq!(r.tool_calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(r.stop_reason, StopReason::ToolUse);
        assert_eq!(r.usage.cached_tokens, 4);
    }

    #[test]
    fn a_cut_stream_is_an_error() {
        let mut a = StreamAssembler::default();
        a.feed("openai", r#"{"choices":[{"delta":{"content":"Hel"}}]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let e = a.finish("openai").err().map(|e| e.code());
        assert_eq!(e, Some("malformed"));
    }
}
