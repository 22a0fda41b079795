//! The AI channel (RFC §6.4, §12.9, Appendix A.9): an intelligence channel
//! that answers room events through an [`AIProvider`], running the eight
//! generation stages in their normative order: gates, memory, tool
//! resolution, prompt assembly, pre-generation, generation (with the tool
//! loop), post-generation and emission.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::RwLock;
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelDirection, ChannelId, ChannelType,
    EventContent, EventType, FrameworkEvent, HookTrigger, Map, Observation, RoomEvent,
    SYSTEM_CHANNEL_ID, Task,
};
use roomkit_core::{
    AiGenerationPayload, AiHookMessage, AiResponsePayload, Channel, ChannelError, ChannelOutput,
    HookPayload, RoomContext, RoomKit, TextStream, TimelineQuery, ToolCallPayload, response_event,
};
use serde_json::json;

use crate::agent::AgentIdentity;
use crate::error::AiError;
use crate::memory::{MemoryProvider, MemoryResult, SlidingWindowMemory};
use crate::provider::AIProvider;
use crate::tools::{Tool, ToolContext, ToolOutput, ToolPolicy, ToolSource};
use crate::types::{
    AIContentPart, AIContext, AIMessage, AIResponse, Role, StreamEvent, ToolCall, ToolResult, Usage,
};

/// Default of `max_tool_rounds` (RFC A.9).
pub const DEFAULT_MAX_TOOL_ROUNDS: u32 = 200;
/// Default of `tool_loop_timeout` (RFC A.9).
pub const DEFAULT_TOOL_LOOP_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of `max_context_events`.
pub const DEFAULT_MAX_CONTEXT_EVENTS: usize = 50;

/// When the AI channel streams its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// When the provider streams and a transport in the room can show
    /// live text (needs the engine handle, see [`AiChannel::attach_kit`]).
    #[default]
    Auto,
    /// Always stream.
    Always,
    /// Never stream.
    Never,
}

/// Settings of an AI channel (RFC A.9 configuration).
#[derive(Debug, Clone)]
pub struct AiSettings {
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token limit.
    pub max_tokens: Option<u32>,
    /// Extended-thinking budget.
    pub thinking_budget: Option<u32>,
    /// History window of the default memory.
    pub max_context_events: usize,
    /// Tool rounds per turn, at most.
    pub max_tool_rounds: u32,
    /// Limit of a whole turn (all provider calls and tools).
    pub tool_loop_timeout: Option<Duration>,
    /// Streaming.
    pub stream: StreamMode,
}

impl Default for AiSettings {
    fn default() -> Self {
        Self {
            system_prompt: None,
            temperature: None,
            max_tokens: None,
            thinking_budget: None,
            max_context_events: DEFAULT_MAX_CONTEXT_EVENTS,
            max_tool_rounds: DEFAULT_MAX_TOOL_ROUNDS,
            tool_loop_timeout: Some(DEFAULT_TOOL_LOOP_TIMEOUT),
            stream: StreamMode::Auto,
        }
    }
}

/// A gate run first (RFC §12.9 position 1): returns `Some(reason)` to stop
/// the turn before any work is done.
#[async_trait]
pub trait PreContextGate: Send + Sync + 'static {
    /// Decides whether the turn goes on.
    async fn check(&self, event: &RoomEvent, context: &RoomContext) -> Option<String>;
}

/// A stage run after generation (RFC §12.9 position 7): may inspect or
/// rewrite the response, or abort the turn with `Err(reason)`.
#[async_trait]
pub trait PostGenerationStage: Send + Sync + 'static {
    /// Processes the response.
    ///
    /// # Errors
    /// A reason to drop the response.
    async fn process(&self, response: &mut AIResponse) -> Result<(), String>;
}

/// An AI channel: type `ai`, category INTELLIGENCE, direction
/// BIDIRECTIONAL. With an [`AgentIdentity`] it is an Agent (RFC §19.1).
pub struct AiChannel {
    id: ChannelId,
    provider: Option<Arc<dyn AIProvider>>,
    fallback: Option<Arc<dyn AIProvider>>,
    memory: Arc<dyn MemoryProvider>,
    tools: Vec<Arc<dyn Tool>>,
    sources: Vec<Arc<dyn ToolSource>>,
    policy: ToolPolicy,
    settings: AiSettings,
    identity: Option<AgentIdentity>,
    gates: Vec<Arc<dyn PreContextGate>>,
    post: Vec<Arc<dyn PostGenerationStage>>,
    kit: RwLock<Option<RoomKit>>,
}

/// An Agent is an AI channel with an identity (RFC §19.1).
pub type Agent = AiChannel;

impl std::fmt::Debug for AiChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiChannel")
            .field("id", &self.id)
            .field("provider", &self.provider.as_ref().map(|p| p.name()))
            .field("model", &self.provider.as_ref().map(|p| p.model_name()))
            .field("tools", &self.tools.len())
            .field("tool_sources", &self.sources.len())
            .field("settings", &self.settings)
            .finish()
    }
}

/// Builder of an [`AiChannel`].
pub struct AiChannelBuilder {
    channel: AiChannel,
    memory_set: bool,
}

impl AiChannelBuilder {
    /// The provider; without one the channel is configuration only and
    /// never generates (RFC §19.1 `is_config_only`).
    pub fn provider(mut self, provider: Arc<dyn AIProvider>) -> Self {
        self.channel.provider = Some(provider);
        self
    }

    /// A provider used when the primary one fails.
    pub fn fallback_provider(mut self, provider: Arc<dyn AIProvider>) -> Self {
        self.channel.fallback = Some(provider);
        self
    }

    /// The memory (default: [`SlidingWindowMemory`] of
    /// `max_context_events`).
    pub fn memory(mut self, memory: Arc<dyn MemoryProvider>) -> Self {
        self.channel.memory = memory;
        self.memory_set = true;
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.channel.tools.push(tool);
        self
    }

    /// Adds a source of tools (an MCP server).
    pub fn tool_source(mut self, source: Arc<dyn ToolSource>) -> Self {
        self.channel.sources.push(source);
        self
    }

    /// The tool policy.
    pub fn tool_policy(mut self, policy: ToolPolicy) -> Self {
        self.channel.policy = policy;
        self
    }

    /// All settings at once.
    pub fn settings(mut self, settings: AiSettings) -> Self {
        self.channel.settings = settings;
        self
    }

    /// The system prompt.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.channel.settings.system_prompt = Some(prompt.into());
        self
    }

    /// Sampling temperature.
    pub fn temperature(mut self, t: f32) -> Self {
        self.channel.settings.temperature = Some(t);
        self
    }

    /// Completion token limit.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.channel.settings.max_tokens = Some(n);
        self
    }

    /// History window of the default memory.
    pub fn max_context_events(mut self, n: usize) -> Self {
        self.channel.settings.max_context_events = n.max(1);
        self
    }

    /// Tool rounds per turn.
    pub fn max_tool_rounds(mut self, n: u32) -> Self {
        self.channel.settings.max_tool_rounds = n;
        self
    }

    /// Limit of a whole turn; `None` for none.
    pub fn tool_loop_timeout(mut self, t: Option<Duration>) -> Self {
        self.channel.settings.tool_loop_timeout = t;
        self
    }

    /// Streaming mode.
    pub fn stream(mut self, mode: StreamMode) -> Self {
        self.channel.settings.stream = mode;
        self
    }

    /// Makes the channel an Agent with this identity.
    pub fn identity(mut self, identity: AgentIdentity) -> Self {
        self.channel.identity = Some(identity);
        self
    }

    /// Appends a gate (RFC §12.9 position 1).
    pub fn gate(mut self, gate: Arc<dyn PreContextGate>) -> Self {
        self.channel.gates.push(gate);
        self
    }

    /// Appends a post-generation stage (RFC §12.9 position 7).
    pub fn post_generation(mut self, stage: Arc<dyn PostGenerationStage>) -> Self {
        self.channel.post.push(stage);
        self
    }

    /// The channel.
    pub fn build(mut self) -> AiChannel {
        if !self.memory_set {
            self.channel.memory = Arc::new(SlidingWindowMemory::new(
                self.channel.settings.max_context_events,
            ));
        }
        self.channel
    }
}

/// What a turn produced.
#[derive(Default)]
struct TurnResult {
    text: String,
    usage: Usage,
    tool_calls: u32,
    loop_end_reason: &'static str,
    model: String,
    tasks: Vec<Task>,
    observations: Vec<Observation>,
    first_text_at: Option<Instant>,
    /// Time the provider spent generating, summed over the turn's calls:
    /// from each call's first text (or its start, when not streamed) to its
    /// answer. Tokens per second are measured over it.
    generation_time: Duration,
}

/// Where streamed text goes, and what happens at the first piece of it.
struct TextSink {
    tx: tokio::sync::mpsc::Sender<String>,
    first: Option<tokio::sync::oneshot::Sender<(Vec<Task>, Vec<Observation>)>>,
}

/// Everything the stages build up for one turn (RFC §12.9.5).
struct Turn {
    event: RoomEvent,
    binding: ChannelBinding,
    room: Arc<RoomContext>,
    started: Instant,
    messages: Vec<AIMessage>,
    ai: AIContext,
    tools: Vec<Arc<dyn Tool>>,
}

impl AiChannel {
    /// A builder for a channel registered under `id`.
    pub fn builder(id: impl Into<ChannelId>) -> AiChannelBuilder {
        AiChannelBuilder {
            channel: AiChannel {
                id: id.into(),
                provider: None,
                fallback: None,
                memory: Arc::new(SlidingWindowMemory::default()),
                tools: Vec::new(),
                sources: Vec::new(),
                policy: ToolPolicy::default(),
                settings: AiSettings::default(),
                identity: None,
                gates: Vec::new(),
                post: Vec::new(),
                kit: RwLock::new(None),
            },
            memory_set: false,
        }
    }

    /// Gives the channel the engine it is registered with, so it can run
    /// the AI hook triggers, publish turn metrics, check which transports
    /// stream, and read more history than the context carries. Without it
    /// the channel still answers, but fires no hooks and publishes no
    /// framework events. The handle is dropped again in `close()`.
    pub fn attach_kit(&self, kit: &RoomKit) {
        *self.kit.write() = Some(kit.clone());
    }

    fn kit(&self) -> Option<RoomKit> {
        self.kit.read().clone()
    }

    /// Whether the channel has no provider and never generates.
    pub fn is_config_only(&self) -> bool {
        self.provider.is_none()
    }

    /// The agent identity, when it has one.
    pub fn identity(&self) -> Option<&AgentIdentity> {
        self.identity.as_ref()
    }

    /// The settings.
    pub fn settings(&self) -> &AiSettings {
        &self.settings
    }

    /// Whether the channel answers `event` (not its own, not framework
    /// events, only messages with text).
    fn should_answer(&self, event: &RoomEvent) -> bool {
        event.event_type == EventType::Message
            && event.source.channel_id != self.id
            && event.source.channel_id.as_str() != SYSTEM_CHANNEL_ID
            && !event.content.plain_text().trim().is_empty()
    }

    /// The greeting for the marker of this channel's own attachment.
    fn greeting_for(&self, event: &RoomEvent) -> Option<String> {
        if event.event_type != EventType::ChannelAttached {
            return None;
        }
        let EventContent::System(s) = &event.content else {
            return None;
        };
        if s.data.get("channel_id").and_then(|v| v.as_str()) != Some(self.id.as_str()) {
            return None;
        }
        let identity = self.identity.as_ref().filter(|i| i.auto_greet)?;
        identity.greeting.clone().filter(|g| !g.trim().is_empty())
    }

    // ---- stages

    /// Stage 1: gates and BEFORE_AI_CONTEXT_BUILD. `Some(reason)` aborts.
    async fn stage_gates(&self, turn: &Turn, kit: Option<&RoomKit>) -> Option<String> {
        for g in &self.gates {
            if let Some(reason) = g.check(&turn.event, &turn.room).await {
                return Some(reason);
            }
        }
        let kit = kit?;
        if !kit.has_hooks(HookTrigger::BeforeAiContextBuild, &turn.event.room_id) {
            return None;
        }
        let d = kit
            .run_sync_hooks(
                HookTrigger::BeforeAiContextBuild,
                &turn.event.room_id,
                HookPayload::Event(Arc::new(turn.event.clone())),
                Some(turn.room.clone()),
            )
            .await;
        d.blocked
            .map(|(name, reason)| reason.unwrap_or_else(|| format!("blocked by {name}")))
    }

    /// Stage 2: memory. The history comes from the channel's own view of
    /// the room; when the memory wants more than the context carries, the
    /// view is read again, filtered for this channel.
    async fn stage_memory(&self, turn: &mut Turn, kit: Option<&RoomKit>) -> Result<(), AiError> {
        let mut view = turn.room.clone();
        let want = self.settings.max_context_events + 16;
        if let Some(kit) = kit
            && view.recent_events.len() < want
            && view.room.event_count > view.recent_events.len() as u64
        {
            let count = view.room.latest_index.map_or(0, |i| i + 1);
            let after = count.checked_sub(want as u64 + 1);
            match kit
                .timeline(
                    &turn.event.room_id,
                    TimelineQuery {
                        after_index: after,
                        limit: Some(want),
                        visible_to: Some(self.id.clone()),
                    },
                )
                .await
            {
                Ok(events) => {
                    let mut c = (*view).clone();
                    c.recent_events = events;
                    view = Arc::new(c);
                }
                Err(e) => {
                    tracing::warn!(target: "roomkit.channels.ai", channel_id = %self.id, room_id = %turn.event.room_id, error = %e, "reading more history failed; using the context");
                }
            }
        }
        let result: MemoryResult = self
            .memory
            .retrieve(&turn.event.room_id, &turn.event, &view, &self.id)
            .await?;
        let mut messages = result.messages;
        for e in &result.events {
            messages.push(self.to_message(e));
        }
        if result.omitted > 0 {
            turn.ai
                .metadata
                .insert("history_omitted_events".into(), result.omitted.into());
        }
        turn.messages = messages;
        Ok(())
    }

    /// A room event as a message: the channel's own events are the
    /// assistant's; other agents are named so the model can tell speakers
    /// apart.
    fn to_message(&self, e: &RoomEvent) -> AIMessage {
        let text = e.content.plain_text();
        if e.source.channel_id == self.id {
            AIMessage::assistant(text)
        } else if e.source.channel_type == ChannelType::Ai {
            AIMessage::user(format!("[{}] {text}", e.source.channel_id))
        } else {
            AIMessage::user(text)
        }
    }

    /// Stage 3: tool resolution: the channel's tools and those of its
    /// sources, filtered by the policy for the agent's role and by the
    /// binding's `tools` list.
    async fn stage_tools(&self, turn: &mut Turn) {
        let mut all: Vec<Arc<dyn Tool>> = self.tools.clone();
        for s in &self.sources {
            match s.tools().await {
                Ok(t) => all.extend(t),
                Err(e) => {
                    tracing::warn!(target: "roomkit.channels.ai", channel_id = %self.id, source = %s.name(), error = %e, "tool source unavailable; going on without its tools");
                }
            }
        }
        let policy = self
            .policy
            .for_role(self.identity.as_ref().and_then(|i| i.role.as_deref()));
        let room_allow: Option<Vec<String>> = turn
            .binding
            .metadata
            .get("tools")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            });
        all.retain(|t| {
            let name = t.definition().name;
            policy.allows(&name)
                && room_allow
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|p| crate::tools::glob_match(p, &name)))
        });
        turn.ai.tools = all.iter().map(|t| t.definition()).collect();
        turn.tools = all;
    }

    /// Stage 4: prompt assembly: the channel's (or binding's) prompt, the
    /// agent identity, the target's capabilities and a note when history
    /// was cut.
    fn stage_prompt(&self, turn: &mut Turn) {
        let md = &turn.binding.metadata;
        let mut parts: Vec<String> = Vec::new();
        if let Some(p) = md
            .get("system_prompt")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| self.settings.system_prompt.clone())
        {
            parts.push(p);
        }
        if let Some(id) = &self.identity {
            let block = id.build_identity_block(None);
            if !block.is_empty() {
                parts.push(block);
            }
        }
        if let Some(caps) = &turn.ai.target_capabilities {
            let mut note = String::new();
            if let Some(max) = caps.max_length {
                note.push_str(&format!(
                    "Your reply is delivered to a channel that shows at most {max} characters."
                ));
            }
            if !caps.supports_rich_text {
                if !note.is_empty() {
                    note.push(' ');
                }
                note.push_str("Write plain text without markup.");
            }
            if !note.is_empty() {
                parts.push(note);
            }
        }
        if let Some(n) = turn.ai.metadata.get("history_omitted_events") {
            parts.push(format!(
                "Only the most recent part of the conversation is shown; {n} earlier messages are left out."
            ));
        }
        turn.ai.system_instructions = if parts.is_empty() {
            None
        } else {
            Some(parts.join("\n\n"))
        };
        let num = |k: &str| md.get(k).and_then(|v| v.as_f64());
        turn.ai.temperature = num("temperature")
            .map(|t| t as f32)
            .or(self.settings.temperature);
        turn.ai.max_tokens = num("max_tokens")
            .map(|t| t as u32)
            .or(self.settings.max_tokens);
        turn.ai.thinking_budget = num("thinking_budget")
            .map(|t| t as u32)
            .or(self.settings.thinking_budget);
    }

    /// Stage 5: BEFORE_AI_GENERATION. `Some(reason)` aborts; a modified
    /// payload replaces prompt, messages, settings and tool list.
    async fn stage_pre_generation(&self, turn: &mut Turn, kit: Option<&RoomKit>) -> Option<String> {
        let kit = kit?;
        if !kit.has_hooks(HookTrigger::BeforeAiGeneration, &turn.event.room_id) {
            return None;
        }
        let payload = AiGenerationPayload {
            channel_id: self.id.clone(),
            channel_type: ChannelType::Ai,
            system_prompt: turn.ai.system_instructions.clone(),
            messages: turn
                .messages
                .iter()
                .map(|m| AiHookMessage {
                    role: match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    }
                    .to_owned(),
                    text: m.plain_text(),
                })
                .collect(),
            tools: turn.ai.tools.iter().map(|t| t.name.clone()).collect(),
            temperature: turn.ai.temperature,
            max_tokens: turn.ai.max_tokens,
            metadata: turn.ai.metadata.clone(),
        };
        let original = payload.clone();
        let d = kit
            .run_sync_hooks(
                HookTrigger::BeforeAiGeneration,
                &turn.event.room_id,
                HookPayload::AiGeneration(payload),
                Some(turn.room.clone()),
            )
            .await;
        if let Some((name, reason)) = d.blocked {
            return Some(reason.unwrap_or_else(|| format!("blocked by {name}")));
        }
        let HookPayload::AiGeneration(p) = d.payload else {
            return None;
        };
        if p == original {
            return None;
        }
        turn.ai.system_instructions = p.system_prompt;
        turn.ai.temperature = p.temperature;
        turn.ai.max_tokens = p.max_tokens;
        turn.ai.metadata = p.metadata;
        if p.messages != original.messages {
            turn.messages = p
                .messages
                .into_iter()
                .map(|m| {
                    let role = match m.role.as_str() {
                        "system" => Role::System,
                        "assistant" => Role::Assistant,
                        _ => Role::User,
                    };
                    AIMessage::text(role, m.text)
                })
                .collect();
        }
        turn.tools
            .retain(|t| p.tools.contains(&t.definition().name));
        turn.ai.tools.retain(|t| p.tools.contains(&t.name));
        None
    }

    /// One provider call, streamed or not, with the fallback provider
    /// used when the primary fails.
    async fn call_provider(
        &self,
        provider: &Arc<dyn AIProvider>,
        messages: &[AIMessage],
        ai: &AIContext,
        sink: &mut Option<TextSink>,
        result: &mut TurnResult,
    ) -> Result<AIResponse, AiError> {
        match self.call_once(provider, messages, ai, sink, result).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let Some(fb) = &self.fallback else {
                    return Err(e);
                };
                // A stream that already showed text cannot be taken back.
                if result.first_text_at.is_some() && sink.is_some() {
                    return Err(e);
                }
                tracing::warn!(target: "roomkit.channels.ai", channel_id = %self.id, provider = %provider.name(), fallback = %fb.name(), error = %e, "provider failed; trying the fallback provider");
                self.call_once(fb, messages, ai, sink, result).await
            }
        }
    }

    async fn call_once(
        &self,
        provider: &Arc<dyn AIProvider>,
        messages: &[AIMessage],
        ai: &AIContext,
        sink: &mut Option<TextSink>,
        result: &mut TurnResult,
    ) -> Result<AIResponse, AiError> {
        let call_started = Instant::now();
        let Some(s) = sink.as_mut() else {
            let r = provider.generate(messages, ai).await?;
            // The whole answer arrives at once: the call is the generation.
            result.generation_time += call_started.elapsed();
            if !r.text.is_empty() {
                result.first_text_at.get_or_insert_with(Instant::now);
            }
            return Ok(r);
        };
        let mut first_in_call: Option<Instant> = None;
        let mut stream = provider.generate_stream(messages, ai).await?;
        let mut separator = !result.text.is_empty();
        while let Some(item) = stream.next().await {
            match item? {
                StreamEvent::TextDelta(d) => {
                    if d.is_empty() {
                        continue;
                    }
                    let chunk = if std::mem::take(&mut separator) {
                        format!("\n\n{d}")
                    } else {
                        d
                    };
                    result.first_text_at.get_or_insert_with(Instant::now);
                    first_in_call.get_or_insert_with(Instant::now);
                    if let Some(first) = s.first.take() {
                        let _ = first.send((
                            std::mem::take(&mut result.tasks),
                            std::mem::take(&mut result.observations),
                        ));
                    }
                    // A reader that went away only loses the live text.
                    let _ = s.tx.send(chunk).await;
                }
                StreamEvent::ThinkingDelta(_) => {}
                StreamEvent::Done(r) => {
                    result.generation_time += first_in_call.unwrap_or(call_started).elapsed();
                    return Ok(r);
                }
            }
        }
        Err(AiError::malformed(
            provider.name(),
            "the stream ended without a final response",
        ))
    }

    /// Stage 6: generation and the tool loop.
    async fn stage_generation(
        &self,
        turn: &Turn,
        kit: Option<&RoomKit>,
        provider: &Arc<dyn AIProvider>,
        sink: &mut Option<TextSink>,
        result: &mut TurnResult,
    ) -> Result<(), AiError> {
        let mut messages = turn.messages.clone();
        let mut rounds = 0u32;
        loop {
            let response = self
                .call_provider(provider, &messages, &turn.ai, sink, result)
                .await?;
            result.usage.add(response.usage);
            result.model = if response.model.is_empty() {
                provider.model_name().to_owned()
            } else {
                response.model.clone()
            };
            result.tasks.extend(response.tasks.iter().cloned());
            result
                .observations
                .extend(response.observations.iter().cloned());
            let mut response = response;
            for stage in &self.post {
                if let Err(reason) = stage.process(&mut response).await {
                    return Err(AiError::tool("post_generation", reason));
                }
            }
            if !response.text.is_empty() {
                if !result.text.is_empty() {
                    result.text.push_str("\n\n");
                }
                result.text.push_str(&response.text);
            }
            if response.tool_calls.is_empty() {
                result.loop_end_reason = "complete";
                return Ok(());
            }
            if rounds >= self.settings.max_tool_rounds {
                tracing::warn!(target: "roomkit.channels.ai", channel_id = %self.id, room_id = %turn.event.room_id, rounds, "tool rounds exhausted; ending the turn");
                result.loop_end_reason = "max_tool_rounds";
                return Ok(());
            }
            rounds += 1;
            messages.push(response.to_message());
            let calls = response.tool_calls.clone();
            let outputs =
                futures::future::join_all(calls.iter().map(|c| self.run_tool_call(turn, kit, c)))
                    .await;
            let mut parts = Vec::with_capacity(outputs.len());
            for (call, out) in calls.iter().zip(outputs) {
                result.tool_calls += 1;
                result.tasks.extend(out.tasks);
                result.observations.extend(out.observations);
                parts.push(AIContentPart::ToolResult(ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: out.content,
                    is_error: out.is_error,
                }));
            }
            messages.push(AIMessage {
                role: Role::User,
                content: parts,
            });
        }
    }

    /// Runs one tool call (see [`Self::resolve_tool_call`]) and publishes
    /// it with its result as an `ai_tool_call` framework event, so
    /// observers (call analytics) can pair every call with its result.
    async fn run_tool_call(
        &self,
        turn: &Turn,
        kit: Option<&RoomKit>,
        call: &ToolCall,
    ) -> ToolOutput {
        let started = Instant::now();
        let (arguments, out) = self.resolve_tool_call(turn, kit, call).await;
        if let Some(kit) = kit {
            kit.emit_framework_event(FrameworkEvent::AiToolCall {
                room_id: turn.event.room_id.clone(),
                channel_id: self.id.clone(),
                event_id: turn.event.id.clone(),
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments,
                result: out.content.clone(),
                is_error: out.is_error,
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            });
        }
        out
    }

    /// Policy, ON_TOOL_CALL, then the tool. Failures become error results
    /// the model reads; they never end the turn. Returns the arguments
    /// used (after any hook rewrite) with the output.
    async fn resolve_tool_call(
        &self,
        turn: &Turn,
        kit: Option<&RoomKit>,
        call: &ToolCall,
    ) -> (serde_json::Value, ToolOutput) {
        let Some(tool) = turn
            .tools
            .iter()
            .find(|t| t.definition().name == call.name)
            .cloned()
        else {
            tracing::warn!(target: "roomkit.channels.ai", channel_id = %self.id, tool = %call.name, "the model called a tool it was not offered");
            return (
                call.arguments.clone(),
                ToolOutput::error(format!("tool {:?} is not available", call.name)),
            );
        };
        let mut arguments = call.arguments.clone();
        if let Some(kit) = kit
            && kit.has_hooks(HookTrigger::OnToolCall, &turn.event.room_id)
        {
            let payload = ToolCallPayload {
                channel_id: self.id.clone(),
                channel_type: ChannelType::Ai,
                call_id: call.id.clone(),
                name: call.name.clone(),
                arguments: arguments.clone(),
                result: None,
            };
            let d = kit
                .run_sync_hooks(
                    HookTrigger::OnToolCall,
                    &turn.event.room_id,
                    HookPayload::ToolCall(payload),
                    Some(turn.room.clone()),
                )
                .await;
            if let Some((name, reason)) = d.blocked {
                tracing::info!(target: "roomkit.channels.ai", channel_id = %self.id, tool = %call.name, hook = %name, "tool call denied by a hook");
                return (
                    arguments,
                    ToolOutput::error(format!(
                        "the call was denied: {}",
                        reason.unwrap_or_else(|| "not allowed".to_owned())
                    )),
                );
            }
            if let HookPayload::ToolCall(p) = d.payload {
                arguments = p.arguments;
                if let Some(r) = p.result {
                    return (arguments, ToolOutput::text(r));
                }
            }
        }
        if !arguments.is_object() {
            let out = ToolOutput::error(format!(
                "the arguments must be a JSON object, got: {}",
                match &arguments {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                }
            ));
            return (arguments, out);
        }
        let ctx = ToolContext {
            room_id: turn.event.room_id.clone(),
            channel_id: self.id.clone(),
            event_id: turn.event.id.clone(),
            call_id: call.id.clone(),
        };
        let started = Instant::now();
        let out = match tool.call(arguments.clone(), &ctx).await {
            Ok(o) => o,
            Err(e) => ToolOutput::error(e.to_string()),
        };
        tracing::info!(target: "roomkit.channels.ai", channel_id = %self.id, room_id = %turn.event.room_id, tool = %call.name, is_error = out.is_error, duration_ms = started.elapsed().as_secs_f64() * 1000.0, "tool called");
        (arguments, out)
    }

    /// Stage 8 (after the response is out): ON_AI_RESPONSE and metrics.
    fn finish_turn(
        &self,
        turn: &Turn,
        kit: Option<&RoomKit>,
        provider: &Arc<dyn AIProvider>,
        r: &TurnResult,
    ) {
        let duration = turn.started.elapsed();
        let ttft = r.first_text_at.map(|t| t.duration_since(turn.started));
        // Left out when the generation time cannot be measured.
        let gen_secs = r.generation_time.as_secs_f64();
        let tps = (gen_secs > 0.0 && r.usage.completion_tokens > 0)
            .then(|| r.usage.completion_tokens as f64 / gen_secs);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(target: "roomkit.channels.ai", channel_id = %self.id, room_id = %turn.event.room_id, event_id = %turn.event.id, provider = %provider.name(), model = %r.model, ttft_ms = ttft.map(ms), duration_ms = ms(duration), prompt_tokens = r.usage.prompt_tokens, completion_tokens = r.usage.completion_tokens, cached_tokens = r.usage.cached_tokens, tool_calls = r.tool_calls, loop_end_reason = r.loop_end_reason, "ai turn finished");
        let Some(kit) = kit else {
            return;
        };
        kit.emit_framework_event(FrameworkEvent::AiTurnMetrics {
            room_id: turn.event.room_id.clone(),
            channel_id: self.id.clone(),
            event_id: turn.event.id.clone(),
            ttft_ms: ttft.map(ms),
            duration_ms: ms(duration),
            prompt_tokens: r.usage.prompt_tokens,
            completion_tokens: r.usage.completion_tokens,
            cached_tokens: r.usage.cached_tokens,
            tokens_per_second: tps,
            model: r.model.clone(),
            provider: provider.name().to_owned(),
        });
        if kit.has_hooks(HookTrigger::OnAiResponse, &turn.event.room_id) {
            kit.spawn_async_hooks(
                HookTrigger::OnAiResponse,
                &turn.event.room_id,
                HookPayload::AiResponse(AiResponsePayload {
                    channel_id: self.id.clone(),
                    channel_type: ChannelType::Ai,
                    text: r.text.clone(),
                    tool_calls: r.tool_calls,
                    duration_ms: duration.as_millis() as u64,
                    stop_reason: r.loop_end_reason.to_owned(),
                    provider: provider.name().to_owned(),
                    model: r.model.clone(),
                    usage: usage_map(&r.usage),
                }),
                Some(turn.room.clone()),
            );
        }
    }

    /// Whether this turn streams.
    fn wants_stream(
        &self,
        provider: &Arc<dyn AIProvider>,
        room: &RoomContext,
        kit: Option<&RoomKit>,
    ) -> bool {
        match self.settings.stream {
            StreamMode::Never => false,
            StreamMode::Always => true,
            StreamMode::Auto => {
                let Some(kit) = kit else {
                    return false;
                };
                provider.supports_streaming()
                    && room.bindings.iter().any(|b| {
                        b.category == ChannelCategory::Transport
                            && b.channel_id != self.id
                            && kit
                                .channel(&b.channel_id)
                                .is_some_and(|c| c.supports_streaming_delivery())
                    })
            }
        }
    }

    /// The transport the answer is for: the one the event came in on, else
    /// the first transport of the room.
    fn target_capabilities(event: &RoomEvent, room: &RoomContext) -> Option<ChannelCapabilities> {
        let transports = || {
            room.bindings
                .iter()
                .filter(|b| b.category == ChannelCategory::Transport)
        };
        transports()
            .find(|b| b.channel_id == event.source.channel_id)
            .or_else(|| transports().next())
            .map(|b| b.capabilities.clone())
    }
}

fn usage_map(u: &Usage) -> Map {
    let mut m = Map::new();
    m.insert("prompt_tokens".into(), u.prompt_tokens.into());
    m.insert("completion_tokens".into(), u.completion_tokens.into());
    m.insert("cached_tokens".into(), u.cached_tokens.into());
    m
}

fn channel_error(e: &AiError) -> ChannelError {
    let provider = match e {
        AiError::RateLimited { provider, .. }
        | AiError::Auth { provider, .. }
        | AiError::BadRequest { provider, .. }
        | AiError::Overloaded { provider, .. }
        | AiError::Timeout { provider, .. }
        | AiError::Connection { provider, .. }
        | AiError::Malformed { provider, .. } => provider.clone(),
        _ => "ai".to_owned(),
    };
    ChannelError::Provider {
        provider,
        code: e.code().to_owned(),
        message: e.public_message(),
        retryable: e.is_retryable(),
        retry_after_seconds: e.retry_after().map(|d| d.as_secs_f64()),
    }
}

#[async_trait]
impl Channel for AiChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Ai
    }

    fn category(&self) -> ChannelCategory {
        ChannelCategory::Intelligence
    }

    fn direction(&self) -> ChannelDirection {
        ChannelDirection::Bidirectional
    }

    fn provider_name(&self) -> Option<&str> {
        Some(self.provider.as_ref().map_or("none", |p| p.name()))
    }

    fn capabilities(&self) -> ChannelCapabilities {
        let mut c = ChannelCapabilities::text_only();
        c.supports_rich_text = true;
        c
    }

    fn info(&self) -> Map {
        let mut m = Map::new();
        if let Some(p) = &self.provider {
            m.insert("provider".into(), p.name().into());
            m.insert("model".into(), p.model_name().into());
        }
        m.insert(
            "tools".into(),
            self.tools
                .iter()
                .map(|t| serde_json::Value::String(t.definition().name))
                .collect(),
        );
        if let Some(i) = &self.identity {
            m.insert("agent".into(), serde_json::Value::Object(i.info()));
        }
        m
    }

    async fn on_event(
        &self,
        event: &RoomEvent,
        binding: &ChannelBinding,
        context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        if let Some(greeting) = self.greeting_for(event) {
            return Ok(ChannelOutput::respond(response_event(
                self,
                EventContent::text(greeting),
            )));
        }
        if !self.should_answer(event) {
            return Ok(ChannelOutput::empty());
        }
        let Some(provider) = self.provider.clone() else {
            return Ok(ChannelOutput::empty());
        };
        let kit = self.kit();
        let kit = kit.as_ref();
        let room = Arc::new(context.clone());
        let target = Self::target_capabilities(event, context);
        let mut turn = Turn {
            event: event.clone(),
            binding: binding.clone(),
            started: Instant::now(),
            messages: Vec::new(),
            ai: AIContext {
                room: Some(room.clone()),
                target_media_types: target
                    .as_ref()
                    .map(|c| c.media_types.clone())
                    .unwrap_or_default(),
                target_capabilities: target,
                metadata: context.room.metadata.clone(),
                ..AIContext::default()
            },
            room,
            tools: Vec::new(),
        };
        let abort = |stage: &str, reason: &str| {
            tracing::info!(target: "roomkit.channels.ai", channel_id = %self.id, room_id = %event.room_id, event_id = %event.id, stage, reason, "ai turn aborted");
            Ok(ChannelOutput::empty())
        };
        if let Some(reason) = self.stage_gates(&turn, kit).await {
            return abort("gates", &reason);
        }
        if let Err(e) = self.stage_memory(&mut turn, kit).await {
            return abort("memory", &e.to_string());
        }
        self.stage_tools(&mut turn).await;
        self.stage_prompt(&mut turn);
        if let Some(reason) = self.stage_pre_generation(&mut turn, kit).await {
            return abort("pre_generation", &reason);
        }

        if self.wants_stream(&provider, &turn.room, kit) {
            return self.stream_turn(turn, provider).await;
        }

        let mut result = TurnResult::default();
        let mut sink = None;
        let run = self.stage_generation(&turn, kit, &provider, &mut sink, &mut result);
        let outcome = match self.settings.tool_loop_timeout {
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(r) => r,
                Err(_) => Err(AiError::Timeout {
                    provider: provider.name().to_owned(),
                    phase: "tool loop",
                }),
            },
            None => run.await,
        };
        if let Err(e) = outcome {
            tracing::warn!(target: "roomkit.channels.ai", channel_id = %self.id, room_id = %event.room_id, event_id = %event.id, error = %e, code = e.code(), retryable = e.is_retryable(), "ai turn failed");
            return Err(channel_error(&e));
        }
        // Stage 8: emission.
        self.finish_turn(&turn, kit, &provider, &result);
        let mut out = ChannelOutput {
            tasks: std::mem::take(&mut result.tasks),
            observations: std::mem::take(&mut result.observations),
            ..ChannelOutput::default()
        };
        if !result.text.trim().is_empty() {
            let mut reply = response_event(self, EventContent::text(result.text));
            reply.metadata.insert(
                "ai_usage".into(),
                serde_json::Value::Object(usage_map(&result.usage)),
            );
            reply
                .metadata
                .insert("loop_end_reason".into(), result.loop_end_reason.into());
            reply.metadata.insert("model".into(), result.model.into());
            reply
                .metadata
                .insert("tool_calls".into(), json!(result.tool_calls));
            out.events.push(reply);
        }
        Ok(out)
    }

    async fn close(&self) -> Result<(), ChannelError> {
        for s in &self.sources {
            s.close().await;
        }
        self.memory.close().await;
        *self.kit.write() = None;
        Ok(())
    }
}

impl AiChannel {
    /// Runs generation on its own task and hands the engine a text stream
    /// as soon as the first piece of text exists. Tool side effects made
    /// before that go out with the channel output; later ones are stored
    /// through the engine when the turn ends.
    async fn stream_turn(
        &self,
        turn: Turn,
        provider: Arc<dyn AIProvider>,
    ) -> Result<ChannelOutput, ChannelError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<TurnResult, AiError>>();
        let this = self.shared();
        tokio::spawn(async move {
            let kit = this.kit();
            let mut result = TurnResult::default();
            let mut sink = Some(TextSink {
                tx,
                first: Some(first_tx),
            });
            let run = this.stage_generation(&turn, kit.as_ref(), &provider, &mut sink, &mut result);
            let outcome = match this.settings.tool_loop_timeout {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(r) => r,
                    Err(_) => Err(AiError::Timeout {
                        provider: provider.name().to_owned(),
                        phase: "tool loop",
                    }),
                },
                None => run.await,
            };
            let streamed = sink.as_ref().is_some_and(|s| s.first.is_none());
            drop(sink);
            match outcome {
                Ok(()) => {
                    this.finish_turn(&turn, kit.as_ref(), &provider, &result);
                    if streamed {
                        if let Some(kit) = &kit {
                            kit.persist_channel_side_effects(
                                &turn.event.room_id,
                                &this.id,
                                std::mem::take(&mut result.tasks),
                                std::mem::take(&mut result.observations),
                            )
                            .await;
                        }
                    } else {
                        let _ = done_tx.send(Ok(result));
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "roomkit.channels.ai", channel_id = %this.id, room_id = %turn.event.room_id, event_id = %turn.event.id, error = %e, code = e.code(), "ai turn failed");
                    if !streamed {
                        let _ = done_tx.send(Err(e));
                    }
                }
            }
        });
        match first_rx.await {
            Ok((tasks, observations)) => {
                let stream: TextStream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|c| (c, rx))
                })
                .boxed();
                Ok(ChannelOutput {
                    response_stream: Some(stream),
                    tasks,
                    observations,
                    ..ChannelOutput::default()
                })
            }
            // No text came: the turn ended (or failed) without streaming.
            Err(_) => match done_rx.await {
                Ok(Ok(mut result)) => Ok(ChannelOutput {
                    tasks: std::mem::take(&mut result.tasks),
                    observations: std::mem::take(&mut result.observations),
                    ..ChannelOutput::default()
                }),
                Ok(Err(e)) => Err(channel_error(&e)),
                Err(_) => Ok(ChannelOutput::empty()),
            },
        }
    }

    /// A cheap copy sharing providers, tools and the engine handle, for the
    /// streaming task.
    fn shared(&self) -> Arc<AiChannel> {
        Arc::new(AiChannel {
            id: self.id.clone(),
            provider: self.provider.clone(),
            fallback: self.fallback.clone(),
            memory: self.memory.clone(),
            tools: self.tools.clone(),
            sources: self.sources.clone(),
            policy: self.policy.clone(),
            settings: self.settings.clone(),
            identity: self.identity.clone(),
            gates: self.gates.clone(),
            post: self.post.clone(),
            kit: RwLock::new(self.kit()),
        })
    }
}
