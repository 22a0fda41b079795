//! Providers that need no model: the echo provider (repeats the last user
//! message, and says so) and a fixed-reply provider for tests and
//! benchmarks.

use async_trait::async_trait;

use crate::echo::ECHO_PREFIX;
use crate::error::AiError;
use crate::provider::AIProvider;
use crate::types::{AIContext, AIMessage, AIResponse, Role, Usage};

/// Answers with the text of the last user message, prefixed so nobody
/// mistakes it for a model.
#[derive(Debug, Clone, Default)]
pub struct EchoProvider;

#[async_trait]
impl AIProvider for EchoProvider {
    fn name(&self) -> &str {
        "echo"
    }

    fn model_name(&self) -> &str {
        "echo"
    }

    async fn generate(
        &self,
        messages: &[AIMessage],
        _context: &AIContext,
    ) -> Result<AIResponse, AiError> {
        let last = messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(AIMessage::plain_text)
            .unwrap_or_default();
        let mut r = AIResponse::text(format!("{ECHO_PREFIX}{}", last.trim()));
        r.model = "echo".to_owned();
        Ok(r)
    }
}

/// Answers every call with the same response, at once. It keeps nothing of
/// what it is asked.
#[derive(Debug, Clone)]
pub struct StaticProvider {
    response: AIResponse,
}

impl StaticProvider {
    /// Always answers `text`, reporting `usage`.
    pub fn new(text: impl Into<String>, usage: Usage) -> Self {
        let mut response = AIResponse::text(text);
        response.usage = usage;
        response.model = "static".to_owned();
        Self { response }
    }
}

#[async_trait]
impl AIProvider for StaticProvider {
    fn name(&self) -> &str {
        "static"
    }

    fn model_name(&self) -> &str {
        "static"
    }

    async fn generate(
        &self,
        _messages: &[AIMessage],
        _context: &AIContext,
    ) -> Result<AIResponse, AiError> {
        Ok(self.response.clone())
    }
}
