//! Built-in AI providers: OpenAI-compatible chat completions, Anthropic
//! Messages, the echo provider, and the HTTP plumbing they share.

pub mod anthropic;
pub mod echo;
pub mod http;
pub mod openai;
