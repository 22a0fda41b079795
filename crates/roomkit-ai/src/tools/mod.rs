//! Tools a model may call: the tool interface, tool sources that discover
//! tools at run time (MCP servers), the access policy (RFC §21.1), and the
//! built-in HTTP and MCP tools.

mod http;
mod mcp;
mod policy;

use std::sync::Arc;

use async_trait::async_trait;
use roomkit_core::model::{ChannelId, EventId, Observation, RoomId, Task};

pub use self::http::{HttpTool, HttpToolConfig};
pub use self::mcp::{McpServerConfig, McpToolSource, McpTransport};
pub use self::policy::{RoleOverride, RoleOverrideMode, ToolPolicy, glob_match};
use crate::error::AiError;
use crate::types::ToolDefinition;

/// Where a tool call comes from.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// Room of the conversation.
    pub room_id: RoomId,
    /// The AI channel calling.
    pub channel_id: ChannelId,
    /// The event being answered.
    pub event_id: EventId,
    /// The provider's id of the call.
    pub call_id: String,
}

/// What a tool returns.
#[derive(Debug, Clone, Default)]
pub struct ToolOutput {
    /// The result the model reads (usually JSON text).
    pub content: String,
    /// Whether it is an error the model should know about.
    pub is_error: bool,
    /// Tasks to create in the room.
    pub tasks: Vec<Task>,
    /// Observations to record in the room.
    pub observations: Vec<Observation>,
}

impl ToolOutput {
    /// A successful text result.
    pub fn text(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            ..Self::default()
        }
    }

    /// An error result the model will read.
    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
            ..Self::default()
        }
    }
}

/// A function a model can call, described by a JSON schema.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    /// Name, description and parameter schema.
    fn definition(&self) -> ToolDefinition;

    /// Runs the tool with the model's arguments (a JSON object).
    ///
    /// # Errors
    /// Failures are reported to the model as an error result; they never
    /// end the turn.
    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, AiError>;
}

/// A source of tools discovered at run time (an MCP server).
#[async_trait]
pub trait ToolSource: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &str;

    /// The tools it offers now.
    ///
    /// # Errors
    /// When the source cannot be reached; the turn goes on without its
    /// tools.
    async fn tools(&self) -> Result<Vec<Arc<dyn Tool>>, AiError>;

    /// Releases resources.
    async fn close(&self) {}
}

/// A tool made of a definition and a closure, for code-defined tools.
pub struct FnTool<F> {
    definition: ToolDefinition,
    f: F,
}

impl<F, Fut> FnTool<F>
where
    F: Fn(serde_json::Value, ToolContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<ToolOutput, AiError>> + Send + 'static,
{
    /// A tool named `name` that runs `f`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: serde_json::Value,
        f: F,
    ) -> Self {
        Self {
            definition: ToolDefinition {
                name: name.into(),
                description: description.into(),
                parameters,
            },
            f,
        }
    }
}

#[async_trait]
impl<F, Fut> Tool for FnTool<F>
where
    F: Fn(serde_json::Value, ToolContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<ToolOutput, AiError>> + Send + 'static,
{
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, AiError> {
        (self.f)(arguments, context.clone()).await
    }
}
