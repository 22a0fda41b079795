//! Hook chains run on behalf of a channel: the AI channel fires
//! BEFORE_AI_GENERATION, ON_TOOL_CALL and ON_AI_RESPONSE itself, with the
//! typed payloads defined here, through the same engine (priority order,
//! timeouts, panic containment, failure policy) as the pipeline's triggers.

use std::sync::Arc;

use roomkit_model::{
    ChannelDirection, ChannelId, ChannelType, FrameworkEvent, HookTrigger, Map, Observation,
    RoomId, Task,
};

use crate::channel::RoomContext;
use crate::hooks::HookPayload;
use crate::kit::RoomKit;

/// One message of an AI conversation as hooks see it: a role and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct AiHookMessage {
    /// `"system"`, `"user"` or `"assistant"`.
    pub role: String,
    /// The text of the message.
    pub text: String,
}

/// The request an AI channel is about to send to its provider
/// (BEFORE_AI_GENERATION). A hook may block it, or modify it: change the
/// system prompt, the messages, the sampling settings or remove tools.
#[derive(Debug, Clone, PartialEq)]
pub struct AiGenerationPayload {
    /// The AI channel.
    pub channel_id: ChannelId,
    /// Its type (`ai`).
    pub channel_type: ChannelType,
    /// The system prompt.
    pub system_prompt: Option<String>,
    /// The conversation history, oldest first.
    pub messages: Vec<AiHookMessage>,
    /// Names of the tools the model will be offered.
    pub tools: Vec<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token limit.
    pub max_tokens: Option<u32>,
    /// Free-form data (room metadata, target capabilities).
    pub metadata: Map,
}

/// A tool call a model asked for (ON_TOOL_CALL, run as a sync hook). A hook
/// may block it (the model is told the call was denied), modify its
/// arguments, or answer it itself by setting `result`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallPayload {
    /// The AI channel.
    pub channel_id: ChannelId,
    /// Its type (`ai`).
    pub channel_type: ChannelType,
    /// The provider's id of the call.
    pub call_id: String,
    /// Tool name.
    pub name: String,
    /// Arguments, as the model produced them.
    pub arguments: serde_json::Value,
    /// A result supplied by a hook instead of running the tool.
    pub result: Option<String>,
}

/// A finished AI turn (ON_AI_RESPONSE, async).
#[derive(Debug, Clone, PartialEq)]
pub struct AiResponsePayload {
    /// The AI channel.
    pub channel_id: ChannelId,
    /// Its type (`ai`).
    pub channel_type: ChannelType,
    /// The text the turn produced.
    pub text: String,
    /// How many tool calls it made.
    pub tool_calls: u32,
    /// Wall time of the turn in milliseconds.
    pub duration_ms: u64,
    /// Why generation stopped.
    pub stop_reason: String,
    /// Provider name.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Token counters as the provider reported them.
    pub usage: Map,
}

/// Outcome of a hook chain run for a channel.
#[derive(Debug, Clone)]
pub struct HookDecision {
    /// The payload, possibly modified by hooks.
    pub payload: HookPayload,
    /// Name of the hook that blocked and its reason, when one did.
    pub blocked: Option<(String, Option<String>)>,
}

impl HookDecision {
    /// Whether a hook blocked.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }
}

impl RoomKit {
    /// Runs the sync hooks of `trigger` for a room, in priority order, with
    /// the engine's per-hook timeout, panic containment and failure policy.
    /// Tasks and observations the hooks return are stored at once, each
    /// credited to its hook; injected events are not supported here and are
    /// dropped with a warning.
    pub async fn run_sync_hooks(
        &self,
        trigger: HookTrigger,
        room_id: &RoomId,
        payload: HookPayload,
        context: Option<Arc<RoomContext>>,
    ) -> HookDecision {
        let fallback = payload.clone();
        let outcome = self
            .inner
            .hooks
            .run_sync(self, trigger, Some(room_id), payload, context, None)
            .await;
        let Ok(outcome) = outcome else {
            // Without a deadline the engine always decides.
            return HookDecision {
                payload: fallback,
                blocked: None,
            };
        };
        let mut results: Vec<_> = outcome.allowed;
        let blocked = outcome.blocked.map(|(name, r)| {
            let reason = r.reason.clone();
            results.push((name.clone(), r));
            (name, reason)
        });
        for (name, r) in results {
            if !r.injected_events.is_empty() {
                tracing::warn!(target: "roomkit.core.hooks", hook = %name, %trigger, "injected events are not supported on this trigger; dropped");
            }
            if !r.tasks.is_empty() || !r.observations.is_empty() {
                self.persist_side_effects(room_id, r.tasks, r.observations, &name, None)
                    .await;
            }
        }
        HookDecision {
            payload: outcome.payload,
            blocked,
        }
    }

    /// Starts the async hooks of `trigger` for a room and returns at once.
    pub fn spawn_async_hooks(
        &self,
        trigger: HookTrigger,
        room_id: &RoomId,
        payload: HookPayload,
        context: Option<Arc<RoomContext>>,
    ) {
        self.inner
            .hooks
            .spawn_async(self, trigger, Some(room_id), payload, context);
    }

    /// Whether any hook is registered for `trigger` in a room.
    pub fn has_hooks(&self, trigger: HookTrigger, room_id: &RoomId) -> bool {
        self.inner.hooks.has_hooks(trigger, room_id)
    }

    /// Stores tasks and observations a channel produced outside of a
    /// `ChannelOutput` (for instance while a streamed response is running).
    pub async fn persist_channel_side_effects(
        &self,
        room_id: &RoomId,
        channel_id: &ChannelId,
        tasks: Vec<Task>,
        observations: Vec<Observation>,
    ) {
        if tasks.is_empty() && observations.is_empty() {
            return;
        }
        self.persist_side_effects(
            room_id,
            tasks,
            observations,
            channel_id.as_str(),
            Some(channel_id),
        )
        .await;
    }

    /// Publishes a framework event raised by a channel or plugin.
    pub fn emit_framework_event(&self, event: FrameworkEvent) {
        self.emit(event);
    }
}

/// The channel a channel-raised payload speaks for, for hook filters.
pub(crate) fn ai_payload_channel(
    p: &HookPayload,
) -> Option<(&ChannelId, &ChannelType, ChannelDirection)> {
    match p {
        HookPayload::AiGeneration(a) => Some((
            &a.channel_id,
            &a.channel_type,
            ChannelDirection::Bidirectional,
        )),
        HookPayload::ToolCall(t) => Some((
            &t.channel_id,
            &t.channel_type,
            ChannelDirection::Bidirectional,
        )),
        HookPayload::AiResponse(r) => Some((
            &r.channel_id,
            &r.channel_type,
            ChannelDirection::Bidirectional,
        )),
        _ => None,
    }
}
