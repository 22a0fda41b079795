//! Tools of MCP servers (RFC §21.2), over stdio (a child process) or
//! streamable HTTP. The connection is made on first use and made again
//! after it fails, so a server that starts late is picked up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{Tool, ToolContext, ToolOutput, ToolSource};
use crate::error::AiError;
use crate::types::ToolDefinition;

/// How to reach an MCP server.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        /// Program to run (no shell is involved).
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables.
        env: HashMap<String, String>,
    },
    /// A streamable HTTP endpoint.
    Http {
        /// Endpoint URL.
        url: String,
    },
}

/// Configuration of an MCP tool source (`type = "mcp"` in a tool list).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Name of the server, for logs.
    pub name: String,
    /// `"stdio"` or `"http"`.
    pub transport: String,
    /// Program to run (stdio; no shell is involved).
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments (stdio).
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables (stdio).
    #[serde(default)]
    pub env: HashMap<String, String>,
    /// Endpoint URL (http).
    #[serde(default)]
    pub url: Option<String>,
    /// Limit of one tool call and of connecting, in milliseconds (default
    /// 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl McpServerConfig {
    /// The transport the configuration describes.
    ///
    /// # Errors
    /// [`AiError::Config`] when the keys do not fit the transport.
    pub fn transport(&self) -> Result<McpTransport, AiError> {
        let key = format!("tools.{}", self.name);
        match self.transport.as_str() {
            "stdio" => {
                let command = self.command.clone().ok_or_else(|| {
                    AiError::config(format!("{key}.command"), "stdio needs a command")
                })?;
                if self.url.is_some() {
                    return Err(AiError::config(format!("{key}.url"), "not used with stdio"));
                }
                Ok(McpTransport::Stdio {
                    command,
                    args: self.args.clone(),
                    env: self.env.clone(),
                })
            }
            "http" => {
                let url = self
                    .url
                    .clone()
                    .ok_or_else(|| AiError::config(format!("{key}.url"), "http needs a url"))?;
                if self.command.is_some() {
                    return Err(AiError::config(
                        format!("{key}.command"),
                        "not used with http",
                    ));
                }
                Ok(McpTransport::Http { url })
            }
            other => Err(AiError::config(
                format!("{key}.transport"),
                format!("{other:?} is not an MCP transport (stdio or http)"),
            )),
        }
    }
}

type Client = RunningService<rmcp::RoleClient, ()>;

/// The tools of one MCP server.
pub struct McpToolSource {
    config: McpServerConfig,
    transport: McpTransport,
    client: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for McpToolSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpToolSource")
            .field("config", &self.config)
            .finish()
    }
}

impl McpToolSource {
    /// A source for `config`; nothing is started until tools are needed.
    ///
    /// # Errors
    /// [`AiError::Config`] when the transport keys are inconsistent.
    pub fn new(config: McpServerConfig) -> Result<Self, AiError> {
        let transport = config.transport()?;
        Ok(Self {
            config,
            transport,
            client: Mutex::new(None),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms.unwrap_or(30_000))
    }

    async fn connect(&self) -> Result<Arc<Client>, AiError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref()
            && !c.is_transport_closed()
        {
            return Ok(c.clone());
        }
        let name = &self.config.name;
        let fail = |what: String| AiError::tool(format!("mcp:{name}"), what);
        let client = match &self.transport {
            McpTransport::Stdio { command, args, env } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env).kill_on_drop(true);
                let transport = TokioChildProcess::new(cmd)
                    .map_err(|e| fail(format!("cannot start {command:?}: {e}")))?;
                tokio::time::timeout(self.timeout(), ().serve(transport))
                    .await
                    .map_err(|_| fail("initialization timed out".into()))?
                    .map_err(|e| fail(format!("initialization failed: {e}")))?
            }
            McpTransport::Http { url } => {
                // Our client rather than the library's default: no
                // redirects at all (the default follows same-origin 307/308).
                let http = crate::outbound::builder(Duration::from_secs(10))
                    .build()
                    .map_err(|_| fail("the HTTP client cannot be built".into()))?;
                let transport = StreamableHttpClientTransport::with_client(
                    http,
                    StreamableHttpClientTransportConfig::with_uri(url.as_str()),
                );
                tokio::time::timeout(self.timeout(), ().serve(transport))
                    .await
                    .map_err(|_| fail("initialization timed out".into()))?
                    .map_err(|e| fail(format!("initialization failed: {e}")))?
            }
        };
        tracing::info!(target: "roomkit.channels.ai", mcp_server = %name, "connected to MCP server");
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    async fn forget(&self) {
        *self.client.lock().await = None;
    }
}

#[async_trait]
impl ToolSource for McpToolSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn tools(&self) -> Result<Vec<Arc<dyn Tool>>, AiError> {
        let client = self.connect().await?;
        let listed = tokio::time::timeout(self.timeout(), client.list_all_tools()).await;
        let tools = match listed {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                self.forget().await;
                return Err(AiError::tool(
                    format!("mcp:{}", self.config.name),
                    format!("listing tools failed: {e}"),
                ));
            }
            Err(_) => {
                self.forget().await;
                return Err(AiError::tool(
                    format!("mcp:{}", self.config.name),
                    "listing tools timed out",
                ));
            }
        };
        Ok(tools
            .into_iter()
            .map(|t| {
                Arc::new(McpTool {
                    definition: ToolDefinition {
                        name: t.name.to_string(),
                        description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                        parameters: serde_json::Value::Object((*t.input_schema).clone()),
                    },
                    client: client.clone(),
                    timeout: self.timeout(),
                }) as Arc<dyn Tool>
            })
            .collect())
    }

    async fn close(&self) {
        if let Some(c) = self.client.lock().await.take() {
            // Other holders (tools of a running turn) keep it alive until
            // they finish; the last one closes the transport on drop.
            if let Ok(c) = Arc::try_unwrap(c) {
                let _ = c.cancel().await;
            }
        }
    }
}

struct McpTool {
    definition: ToolDefinition,
    client: Arc<Client>,
    timeout: Duration,
}

#[async_trait]
impl Tool for McpTool {
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        _context: &ToolContext,
    ) -> Result<ToolOutput, AiError> {
        let name = self.definition.name.clone();
        let mut params = CallToolRequestParams::new(name.clone());
        params.arguments = match arguments {
            serde_json::Value::Object(o) => Some(o),
            serde_json::Value::Null => None,
            _ => return Err(AiError::tool(&name, "arguments must be a JSON object")),
        };
        let result = tokio::time::timeout(self.timeout, self.client.call_tool(params))
            .await
            .map_err(|_| AiError::tool(&name, "timed out"))?
            .map_err(|e| AiError::tool(&name, format!("call failed: {e}")))?;
        let mut text = String::new();
        let blocks = serde_json::to_value(&result.content).unwrap_or_default();
        for b in blocks.as_array().into_iter().flatten() {
            if !text.is_empty() {
                text.push('\n');
            }
            match b.get("text").and_then(|t| t.as_str()) {
                Some(t) => text.push_str(t),
                None => text.push_str(&b.to_string()),
            }
        }
        if text.is_empty()
            && let Some(s) = &result.structured_content
        {
            text = s.to_string();
        }
        Ok(ToolOutput {
            content: text,
            is_error: result.is_error.unwrap_or(false),
            ..ToolOutput::default()
        })
    }
}
