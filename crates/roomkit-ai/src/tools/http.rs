//! HTTP tools: the model's arguments are POSTed as JSON to a URL, and the
//! reply body is the result. Tools written in any language plug in this way.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;

use super::{Tool, ToolContext, ToolOutput};
use crate::error::AiError;
use crate::secret::SecretString;
use crate::types::ToolDefinition;

/// Largest reply body read and handed to the model; longer ones are cut
/// (the rest is not read). Redirects are not followed: a 3xx is an error
/// result.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Configuration of an HTTP tool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpToolConfig {
    /// Tool name offered to the model.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON schema of the arguments object (an inline table in TOML).
    #[serde(default = "empty_schema")]
    pub parameters: serde_json::Value,
    /// Where the arguments are POSTed.
    pub url: String,
    /// Limit of one call, in milliseconds (default 10000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Environment variable holding a bearer token sent with each call.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

fn empty_schema() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// A tool that POSTs its arguments to a URL.
///
/// The request body is `{"tool": name, "arguments": {...}, "room_id",
/// "channel_id", "event_id", "call_id"}`. A 2xx reply's body is the
/// result; any other status is reported to the model as an error result.
#[derive(Debug, Clone)]
pub struct HttpTool {
    definition: ToolDefinition,
    url: String,
    timeout: Duration,
    token: Option<SecretString>,
    client: reqwest::Client,
}

impl HttpTool {
    /// Builds the tool; the bearer token is read from its variable now.
    ///
    /// # Errors
    /// [`AiError::Config`] for a bad URL or schema, or when the named
    /// variable is not set.
    pub fn new(config: HttpToolConfig) -> Result<Self, AiError> {
        let key = format!("tools.{}", config.name);
        if !config.url.starts_with("http://") && !config.url.starts_with("https://") {
            return Err(AiError::config(
                format!("{key}.url"),
                "must be an http:// or https:// URL",
            ));
        }
        if !config.parameters.is_object() {
            return Err(AiError::config(
                format!("{key}.parameters"),
                "must be a JSON schema object",
            ));
        }
        let token = match &config.api_key_env {
            Some(var) => Some(SecretString::from_env(var).ok_or_else(|| {
                AiError::config(format!("{key}.api_key_env"), format!("{var} is not set"))
            })?),
            None => None,
        };
        let client = crate::outbound::builder(Duration::from_secs(10))
            .build()
            .map_err(|e| AiError::config(key, e.to_string()))?;
        Ok(Self {
            definition: ToolDefinition {
                name: config.name,
                description: config.description,
                parameters: config.parameters,
            },
            url: config.url,
            timeout: Duration::from_millis(config.timeout_ms.unwrap_or(10_000)),
            token,
            client,
        })
    }
}

#[async_trait]
impl Tool for HttpTool {
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &ToolContext,
    ) -> Result<ToolOutput, AiError> {
        let name = &self.definition.name;
        let body = serde_json::json!({
            "tool": name,
            "arguments": arguments,
            "room_id": context.room_id,
            "channel_id": context.channel_id,
            "event_id": context.event_id,
            "call_id": context.call_id,
        });
        let mut req = self
            .client
            .post(&self.url)
            .json(&body)
            .timeout(self.timeout);
        if let Some(t) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                .map_err(|_| AiError::tool(name, "the token is not a valid header"))?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let response = req.send().await.map_err(|e| {
            AiError::tool(
                name,
                if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    format!("request failed: {e}")
                },
            )
        })?;
        let status = response.status();
        // Read no more than what is handed on; the rest is never fetched.
        let (bytes, cut_short) = crate::outbound::read_prefix(response, MAX_RESULT_BYTES)
            .await
            .map_err(|e| {
                AiError::tool(
                    name,
                    if e.is_timeout() {
                        "timed out".to_owned()
                    } else {
                        "reading the reply failed".to_owned()
                    },
                )
            })?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        tracing::debug!(target: "roomkit.channels.ai", tool = %name, status = status.as_u16(), bytes = bytes.len(), cut_short, "http tool answered");
        if status.is_redirection() {
            Ok(ToolOutput::error(format!(
                "the tool answered HTTP {} (redirects are not followed)",
                status.as_u16()
            )))
        } else if status.is_success() {
            Ok(ToolOutput::text(text))
        } else {
            Ok(ToolOutput::error(format!(
                "the tool failed with HTTP {}: {text}",
                status.as_u16()
            )))
        }
    }
}
