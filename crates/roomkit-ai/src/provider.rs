//! The AI provider interface (RFC §6.7): one implementation per wire
//! protocol, chosen by configuration and held as `Arc<dyn AIProvider>`.

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::AiError;
use crate::types::{AIContext, AIMessage, AIResponse, ResponseStream, StreamEvent};

/// A model behind a wire protocol.
#[async_trait]
pub trait AIProvider: Send + Sync + 'static {
    /// Provider name (`"openai"`, `"anthropic"`, ...).
    fn name(&self) -> &str;

    /// Model identifier.
    fn model_name(&self) -> &str;

    /// Whether [`generate_stream`](Self::generate_stream) yields deltas as
    /// they arrive (otherwise it yields the whole answer at once).
    fn supports_streaming(&self) -> bool {
        false
    }

    /// Generates one response to the conversation.
    ///
    /// # Errors
    /// Classified provider failures ([`AiError::is_retryable`] tells which
    /// are worth trying again; providers already retry where it is safe).
    async fn generate(
        &self,
        messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<AIResponse, AiError>;

    /// Generates one response as a stream of deltas ending with
    /// [`StreamEvent::Done`]. The default calls [`generate`](Self::generate)
    /// and yields its text in one piece.
    ///
    /// # Errors
    /// As `generate`, for failures before the stream starts; later failures
    /// arrive as an `Err` item that ends the stream.
    async fn generate_stream(
        &self,
        messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<ResponseStream, AiError> {
        let response = self.generate(messages, context).await?;
        let mut items = Vec::with_capacity(2);
        if !response.text.is_empty() {
            items.push(Ok(StreamEvent::TextDelta(response.text.clone())));
        }
        items.push(Ok(StreamEvent::Done(response)));
        Ok(futures::stream::iter(items).boxed())
    }
}
