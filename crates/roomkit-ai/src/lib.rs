//! AI channels for RoomKit: intelligence that reads a room and answers.
//!
//! - [`AiChannel`] (and [`Agent`], an AI channel with an identity) runs the
//!   RFC's eight generation stages: gates, memory, tool resolution, prompt
//!   assembly, pre-generation, generation with the tool loop,
//!   post-generation and emission, firing BEFORE_AI_CONTEXT_BUILD,
//!   BEFORE_AI_GENERATION, ON_TOOL_CALL (sync) and ON_AI_RESPONSE.
//! - [`AIProvider`] is the model interface; [`OpenAiProvider`] speaks
//!   OpenAI-compatible chat completions and [`AnthropicProvider`] Anthropic
//!   Messages, both streamed or not, with classified errors and retries.
//! - [`Tool`]s are offered to models with JSON-schema parameters: HTTP
//!   tools, MCP servers' tools, and code-defined ones, filtered by a
//!   [`ToolPolicy`].
//! - [`MemoryProvider`] builds the history; [`SlidingWindowMemory`] is the
//!   default.
//! - [`AiChannelConfig`] builds all of it from configuration.
//! - [`EchoAgent`] is the agent `roomkit serve` uses when no AI provider is
//!   configured.

#![warn(missing_docs)]

mod agent;
mod channel;
mod config;
mod echo;
mod error;
mod memory;
mod outbound;
mod provider;
pub mod providers;
mod secret;
pub mod tools;
mod types;

pub use agent::AgentIdentity;
pub use channel::{
    Agent, AiChannel, AiChannelBuilder, AiSettings, DEFAULT_MAX_CONTEXT_EVENTS,
    DEFAULT_MAX_TOOL_ROUNDS, DEFAULT_TOOL_LOOP_TIMEOUT, PostGenerationStage, PreContextGate,
    StreamMode,
};
pub use config::{AiChannelConfig, ProviderKind, ToolConfig};
pub use echo::{ECHO_PREFIX, EchoAgent};
pub use error::{AiError, Result};
pub use memory::{MemoryProvider, MemoryResult, SlidingWindowMemory, is_conversation};
pub use provider::AIProvider;
pub use providers::anthropic::AnthropicProvider;
pub use providers::echo::{EchoProvider, StaticProvider};
pub use providers::http::{HttpSettings, RetryPolicy};
pub use providers::openai::OpenAiProvider;
pub use secret::SecretString;
pub use tools::{Tool, ToolContext, ToolOutput, ToolPolicy, ToolSource};
pub use types::{
    AIContentPart, AIContext, AIMessage, AIResponse, ResponseStream, Role, StopReason, StreamEvent,
    ToolCall, ToolDefinition, ToolResult, Usage,
};
