//! The provider-neutral data model of AI generation (RFC §6.7): messages
//! and their parts, the generation context, responses, usage, stop reasons
//! and streamed events.

use std::sync::Arc;

use futures::stream::BoxStream;
use roomkit_core::RoomContext;
use roomkit_core::model::{ChannelCapabilities, ChannelMediaType, Map, Observation, Task};
use serde::{Deserialize, Serialize};

use crate::error::AiError;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The people (and other channels) in the room.
    User,
    /// The model.
    Assistant,
}

/// A call of a tool the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id of the call; results refer to it.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments (a JSON object).
    pub arguments: serde_json::Value,
}

/// The result of a tool call, fed back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The id of the call it answers.
    pub call_id: String,
    /// Tool name.
    pub name: String,
    /// The result as text (usually JSON).
    pub content: String,
    /// Whether the call failed or was denied.
    pub is_error: bool,
}

/// One part of a message (RFC A.9 response model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AIContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// Reasoning the model showed, kept so it can be sent back.
    Thinking {
        /// The reasoning text.
        text: String,
        /// Provider signature that must accompany it when sent back.
        signature: Option<String>,
    },
    /// A tool call (assistant messages).
    ToolCall(ToolCall),
    /// A tool result (user messages).
    ToolResult(ToolResult),
}

/// A message of the conversation sent to a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AIMessage {
    /// Speaker.
    pub role: Role,
    /// Its parts, in order.
    pub content: Vec<AIContentPart>,
}

impl AIMessage {
    /// A text message.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![AIContentPart::Text { text: text.into() }],
        }
    }

    /// A user text message.
    pub fn user(text: impl Into<String>) -> Self {
        Self::text(Role::User, text)
    }

    /// An assistant text message.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::text(Role::Assistant, text)
    }

    /// A system text message.
    pub fn system(text: impl Into<String>) -> Self {
        Self::text(Role::System, text)
    }

    /// The text parts joined.
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        for p in &self.content {
            if let AIContentPart::Text { text } = p {
                out.push_str(text);
            }
        }
        out
    }

    /// The tool calls of this message.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.content.iter().filter_map(|p| match p {
            AIContentPart::ToolCall(c) => Some(c),
            _ => None,
        })
    }
}

/// A tool as offered to a model: a name, what it does and a JSON schema of
/// its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Name (letters, digits, `_` and `-`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// Everything a provider needs besides the messages (RFC §6.7 AIContext).
#[derive(Debug, Clone, Default)]
pub struct AIContext {
    /// The room as the AI channel sees it.
    pub room: Option<Arc<RoomContext>>,
    /// Capabilities of the transport the answer is for (RFC §6.4: given
    /// at generation time, never applied afterwards).
    pub target_capabilities: Option<ChannelCapabilities>,
    /// Media types that transport accepts.
    pub target_media_types: Vec<ChannelMediaType>,
    /// System prompt.
    pub system_instructions: Option<String>,
    /// Room metadata and other free-form data.
    pub metadata: Map,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token limit.
    pub max_tokens: Option<u32>,
    /// Token budget for extended thinking, where the provider has it.
    pub thinking_budget: Option<u32>,
}

/// Token counters of one provider call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: u64,
}

impl Usage {
    /// Adds another call's counters.
    pub fn add(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its answer.
    #[default]
    EndTurn,
    /// It hit the token limit.
    MaxTokens,
    /// It wants tool results.
    ToolUse,
    /// A stop sequence matched.
    StopSequence,
    /// The provider filtered the content.
    ContentFilter,
    /// Anything else, as the provider named it.
    Other(String),
}

impl StopReason {
    /// The lower snake case name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::EndTurn => "end_turn",
            Self::MaxTokens => "max_tokens",
            Self::ToolUse => "tool_use",
            Self::StopSequence => "stop_sequence",
            Self::ContentFilter => "content_filter",
            Self::Other(s) => s,
        }
    }
}

/// A provider's answer (RFC §6.7 AIResponse).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AIResponse {
    /// Generated text.
    pub text: String,
    /// Reasoning parts, in order, to be sent back with tool results.
    pub thinking: Vec<AIContentPart>,
    /// Tool calls the model asked for.
    pub tool_calls: Vec<ToolCall>,
    /// Token counters.
    pub usage: Usage,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// The model that answered, as the provider reported it.
    pub model: String,
    /// Tasks to create.
    pub tasks: Vec<Task>,
    /// Observations to record.
    pub observations: Vec<Observation>,
    /// Provider-specific data (raw usage, response id).
    pub provider_metadata: Map,
}

impl AIResponse {
    /// A plain text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// The assistant message this response adds to the conversation.
    pub fn to_message(&self) -> AIMessage {
        let mut content: Vec<AIContentPart> = self.thinking.clone();
        if !self.text.is_empty() {
            content.push(AIContentPart::Text {
                text: self.text.clone(),
            });
        }
        content.extend(self.tool_calls.iter().cloned().map(AIContentPart::ToolCall));
        AIMessage {
            role: Role::Assistant,
            content,
        }
    }
}

/// One item of a streamed generation.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A piece of the answer's text.
    TextDelta(String),
    /// A piece of reasoning.
    ThinkingDelta(String),
    /// The complete response (text, assembled tool calls, usage, stop
    /// reason). Always the last item of a successful stream.
    Done(AIResponse),
}

/// A streamed generation: deltas, then [`StreamEvent::Done`], or an error.
pub type ResponseStream = BoxStream<'static, Result<StreamEvent, AiError>>;
