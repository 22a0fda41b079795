//! Building AI channels from configuration: the `[[channels]] type = "ai"`
//! table of `roomkit serve`, as a serde struct validated once into a
//! channel.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::agent::AgentIdentity;
use crate::channel::{AiChannel, AiSettings, DEFAULT_MAX_CONTEXT_EVENTS, StreamMode};
use crate::error::AiError;
use crate::provider::AIProvider;
use crate::providers::anthropic::{ANTHROPIC_BASE_URL, AnthropicProvider};
use crate::providers::echo::EchoProvider;
use crate::providers::http::{HttpSettings, RetryPolicy};
use crate::providers::openai::{OPENAI_BASE_URL, OpenAiProvider};
use crate::secret::SecretString;
use crate::tools::{HttpTool, HttpToolConfig, McpServerConfig, McpToolSource, ToolPolicy};

/// Which wire protocol a channel's model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions (OpenAI, Azure, Ollama, vLLM,
    /// LiteLLM, OpenRouter, Mistral, xAI, DeepSeek, ...).
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// The built-in echo provider (no model).
    Echo,
}

impl ProviderKind {
    fn default_key_env(self) -> Option<&'static str> {
        match self {
            Self::Openai => Some("OPENAI_API_KEY"),
            Self::Anthropic => Some("ANTHROPIC_API_KEY"),
            Self::Echo => None,
        }
    }
}

/// A tool in the configuration, tagged by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolConfig {
    /// A tool reached by POSTing JSON to a URL.
    Http(HttpToolConfig),
    /// Every tool of an MCP server.
    Mcp(McpServerConfig),
}

/// The configuration of an AI channel (`[[channels]]` with `type = "ai"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiChannelConfig {
    /// Channel id.
    pub id: String,
    /// Channel type; `"ai"` when given.
    #[serde(default, rename = "type")]
    pub channel_type: Option<String>,
    /// `openai` (any OpenAI-compatible server), `anthropic` or `echo`.
    pub provider: ProviderKind,
    /// Model name; required for `openai` and `anthropic`.
    #[serde(default)]
    pub model: Option<String>,
    /// API root override (proxies, local servers, tests).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Environment variable holding the API key (default `OPENAI_API_KEY`
    /// or `ANTHROPIC_API_KEY`). It is read once, when the channel is built.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// System prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Completion token limit.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Extended-thinking budget (Anthropic).
    #[serde(default)]
    pub thinking_budget: Option<u32>,
    /// History window, in messages (default 50).
    #[serde(default)]
    pub max_context_events: Option<usize>,
    /// Tool rounds per turn (default 200).
    #[serde(default)]
    pub max_tool_rounds: Option<u32>,
    /// Limit of a whole turn in seconds (default 300).
    #[serde(default)]
    pub tool_loop_timeout_seconds: Option<f64>,
    /// `auto` (default), `always` or `never`.
    #[serde(default)]
    pub stream: Option<StreamMode>,
    /// Limit on the wait for the provider's first byte, in milliseconds
    /// (default 60000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Retries of rate-limited, overloaded or failed calls (default 2).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Tools.
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
    /// Which tools the agent may call.
    #[serde(default)]
    pub tool_policy: Option<ToolPolicy>,
    /// Agent identity (role, greeting, ...).
    #[serde(default)]
    pub agent: Option<AgentIdentity>,
    /// The key, when the caller read it already (not from the file).
    #[serde(skip)]
    pub api_key: Option<SecretString>,
}

impl AiChannelConfig {
    /// A minimal configuration.
    pub fn new(id: impl Into<String>, provider: ProviderKind) -> Self {
        Self {
            id: id.into(),
            channel_type: None,
            provider,
            model: None,
            base_url: None,
            api_key_env: None,
            system_prompt: None,
            temperature: None,
            max_tokens: None,
            thinking_budget: None,
            max_context_events: None,
            max_tool_rounds: None,
            tool_loop_timeout_seconds: None,
            stream: None,
            timeout_ms: None,
            max_retries: None,
            tools: Vec::new(),
            tool_policy: None,
            agent: None,
            api_key: None,
        }
    }

    /// Checks the values that do not need the environment.
    ///
    /// # Errors
    /// [`AiError::Config`] naming the key.
    pub fn validate(&self) -> Result<(), AiError> {
        if let Some(t) = &self.channel_type
            && t != "ai"
        {
            return Err(AiError::config("type", format!("{t:?} is not \"ai\"")));
        }
        if self.provider != ProviderKind::Echo
            && self.model.as_deref().is_none_or(|m| m.trim().is_empty())
        {
            return Err(AiError::config("model", "a model name is required"));
        }
        if let Some(u) = &self.base_url
            && !u.starts_with("http://")
            && !u.starts_with("https://")
        {
            return Err(AiError::config(
                "base_url",
                "must be an http:// or https:// URL",
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(AiError::config("temperature", "must be between 0 and 2"));
        }
        if let Some(t) = self.tool_loop_timeout_seconds
            && !(t.is_finite() && t > 0.0)
        {
            return Err(AiError::config(
                "tool_loop_timeout_seconds",
                "must be a positive number",
            ));
        }
        if self.max_context_events == Some(0) {
            return Err(AiError::config("max_context_events", "must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tools {
            let name = match t {
                ToolConfig::Http(h) => &h.name,
                ToolConfig::Mcp(m) => {
                    m.transport()?;
                    &m.name
                }
            };
            if !names.insert(name.clone()) {
                return Err(AiError::config(
                    format!("tools.{name}"),
                    "the name is used twice",
                ));
            }
        }
        Ok(())
    }

    /// The provider this configuration names, with its key read from the
    /// environment now.
    ///
    /// # Errors
    /// [`AiError::Config`] for invalid values or a named key variable
    /// that is not set.
    pub fn build_provider(&self) -> Result<Arc<dyn AIProvider>, AiError> {
        self.validate()?;
        let model = self.model.clone().unwrap_or_default();
        let key = match (&self.api_key, &self.api_key_env) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(var)) => Some(
                SecretString::from_env(var)
                    .ok_or_else(|| AiError::config("api_key_env", format!("{var} is not set")))?,
            ),
            (None, None) => self
                .provider
                .default_key_env()
                .and_then(SecretString::from_env),
        };
        let settings = |default: &str| {
            let mut s = HttpSettings::new(self.base_url.clone().unwrap_or_else(|| default.into()));
            s.api_key = key.clone();
            if let Some(ms) = self.timeout_ms {
                s.first_byte_timeout = Duration::from_millis(ms);
            }
            if let Some(n) = self.max_retries {
                s.retry = RetryPolicy {
                    max_retries: n,
                    ..RetryPolicy::default()
                };
            }
            s
        };
        Ok(match self.provider {
            ProviderKind::Openai => {
                Arc::new(OpenAiProvider::new(model, settings(OPENAI_BASE_URL))?)
            }
            ProviderKind::Anthropic => {
                Arc::new(AnthropicProvider::new(model, settings(ANTHROPIC_BASE_URL))?)
            }
            ProviderKind::Echo => Arc::new(EchoProvider),
        })
    }

    /// Builds the channel. Call [`AiChannel::attach_kit`] on it once the
    /// engine is built so hooks and metrics work.
    ///
    /// # Errors
    /// [`AiError::Config`] naming the offending key.
    pub fn build(self) -> Result<Arc<AiChannel>, AiError> {
        let provider = self.build_provider()?;
        let settings = AiSettings {
            system_prompt: self.system_prompt.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            thinking_budget: self.thinking_budget,
            max_context_events: self
                .max_context_events
                .unwrap_or(DEFAULT_MAX_CONTEXT_EVENTS),
            max_tool_rounds: self
                .max_tool_rounds
                .unwrap_or(crate::channel::DEFAULT_MAX_TOOL_ROUNDS),
            tool_loop_timeout: Some(
                self.tool_loop_timeout_seconds
                    .map(Duration::from_secs_f64)
                    .unwrap_or(crate::channel::DEFAULT_TOOL_LOOP_TIMEOUT),
            ),
            stream: self.stream.unwrap_or_default(),
        };
        let mut b = AiChannel::builder(self.id.as_str())
            .provider(provider)
            .settings(settings);
        if let Some(p) = self.tool_policy {
            b = b.tool_policy(p);
        }
        if let Some(a) = self.agent {
            b = b.identity(a);
        }
        for t in self.tools {
            b = match t {
                ToolConfig::Http(h) => b.tool(Arc::new(HttpTool::new(h)?)),
                ToolConfig::Mcp(m) => b.tool_source(Arc::new(McpToolSource::new(m)?)),
            };
        }
        Ok(Arc::new(b.build()))
    }
}
