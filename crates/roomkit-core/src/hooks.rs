//! The hook engine (RFC §9): registration, priority order, per-hook
//! timeouts, panic containment and the fail-open / fail-closed policy.
//!
//! Sync and async hooks are different types ([`SyncHook`], [`AsyncHook`]):
//! an async hook returns only side effects, so it cannot block or modify by
//! construction.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use futures::FutureExt;
use parking_lot::RwLock;
use roomkit_model::{
    ChannelBinding, ChannelDirection, ChannelId, ChannelType, FrameworkEvent, HookExecution,
    HookTrigger, Map, Observation, Participant, Room, RoomEvent, RoomId, Task,
};

use crate::channel::RoomContext;
use crate::error::HookError;
use crate::kit::RoomKit;
use crate::telemetry::timed;

/// Default per-hook timeout (RFC §9.1).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a hook receives and, for `modify`, returns. Each trigger passes one
/// kind; a `modify` whose payload is of another kind counts as a failure.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HookPayload {
    /// A room event (BEFORE_BROADCAST, AFTER_BROADCAST, ON_EVENT_UPDATED, ...).
    Event(Arc<RoomEvent>),
    /// A room (room lifecycle triggers).
    Room(Room),
    /// A binding (channel lifecycle triggers).
    Binding(ChannelBinding),
    /// A participant (participant triggers).
    Participant(Participant),
    /// A task (ON_TASK_CREATED).
    Task(Task),
    /// Text (BEFORE_TTS and other text triggers).
    Text(String),
    /// Anything else, as JSON.
    Json(serde_json::Value),
    /// An AI request about to be sent (BEFORE_AI_GENERATION).
    AiGeneration(crate::hook_api::AiGenerationPayload),
    /// A tool call asked for by a model (ON_TOOL_CALL).
    ToolCall(crate::hook_api::ToolCallPayload),
    /// A finished AI turn (ON_AI_RESPONSE).
    AiResponse(crate::hook_api::AiResponsePayload),
    /// An identity question (ON_IDENTITY_AMBIGUOUS, ON_IDENTITY_UNKNOWN).
    Identity(Box<crate::identity_pipeline::IdentityHookPayload>),
}

impl HookPayload {
    /// The event, when this payload is one.
    pub fn event(&self) -> Option<&RoomEvent> {
        match self {
            Self::Event(e) => Some(e),
            _ => None,
        }
    }

    fn same_kind(&self, other: &HookPayload) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// Everything a hook is called with.
#[derive(Clone)]
pub struct HookInput {
    /// Why the hook runs.
    pub trigger: HookTrigger,
    /// The payload.
    pub payload: HookPayload,
    /// The room, when the trigger concerns one.
    pub room_id: Option<RoomId>,
    /// The room context (for event triggers run by the pipeline).
    pub context: Option<Arc<RoomContext>>,
    /// A handle on the engine, so hooks can act (attach a channel, ...).
    ///
    /// Sync hooks run under the room lock: an operation on the same room
    /// from inside one waits for the lock and so runs into the hook timeout.
    pub kit: RoomKit,
}

impl HookInput {
    /// The event of an event trigger.
    pub fn event(&self) -> Option<&RoomEvent> {
        self.payload.event()
    }
}

/// Decision of a sync hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    /// Let it through.
    Allow,
    /// Stop it.
    Block,
    /// Replace the payload.
    Modify,
}

/// An event a hook wants stored (and delivered to some channels).
#[derive(Debug, Clone)]
pub struct InjectedEvent {
    /// The event (a draft; the engine assigns id, index and source).
    pub event: RoomEvent,
    /// Channels to deliver to; `None` stores it only.
    pub target_channel_ids: Option<Vec<ChannelId>>,
}

impl InjectedEvent {
    /// A text event delivered to the named channels.
    pub fn text<I, C>(text: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<ChannelId>,
    {
        Self {
            event: RoomEvent::system(
                roomkit_model::EventType::Message,
                roomkit_model::EventContent::text(text),
            ),
            target_channel_ids: Some(targets.into_iter().map(Into::into).collect()),
        }
    }
}

/// Result of a sync hook (RFC §9.4).
#[derive(Debug, Clone)]
pub struct HookResult {
    /// The decision.
    pub action: HookAction,
    /// Replacement payload for `modify`.
    pub event: Option<HookPayload>,
    /// Why it blocked or modified.
    pub reason: Option<String>,
    /// Events to inject.
    pub injected_events: Vec<InjectedEvent>,
    /// Tasks to create.
    pub tasks: Vec<Task>,
    /// Observations to record.
    pub observations: Vec<Observation>,
    /// Hook metadata, kept on a blocked event under `metadata.hook`.
    pub metadata: Map,
    /// Keys to merge into the room's metadata.
    pub metadata_updates: Map,
}

impl HookResult {
    fn with_action(action: HookAction) -> Self {
        Self {
            action,
            event: None,
            reason: None,
            injected_events: Vec::new(),
            tasks: Vec::new(),
            observations: Vec::new(),
            metadata: Map::new(),
            metadata_updates: Map::new(),
        }
    }

    /// Allow.
    pub fn allow() -> Self {
        Self::with_action(HookAction::Allow)
    }

    /// Block with a reason.
    pub fn block(reason: impl Into<String>) -> Self {
        let mut r = Self::with_action(HookAction::Block);
        r.reason = Some(reason.into());
        r
    }

    /// Replace the payload.
    pub fn modify(payload: HookPayload) -> Self {
        let mut r = Self::with_action(HookAction::Modify);
        r.event = Some(payload);
        r
    }

    /// Replace the event.
    pub fn modify_event(event: RoomEvent) -> Self {
        Self::modify(HookPayload::Event(Arc::new(event)))
    }

    /// Adds an injected event.
    pub fn inject(mut self, event: InjectedEvent) -> Self {
        self.injected_events.push(event);
        self
    }

    /// Adds a task.
    pub fn task(mut self, task: Task) -> Self {
        self.tasks.push(task);
        self
    }

    /// Adds an observation.
    pub fn observation(mut self, observation: Observation) -> Self {
        self.observations.push(observation);
        self
    }
}

/// Side effects an async hook may produce (RFC §9.6).
#[derive(Debug, Clone, Default)]
pub struct SideEffects {
    /// Tasks to create.
    pub tasks: Vec<Task>,
    /// Observations to record.
    pub observations: Vec<Observation>,
}

/// A hook that runs inside the pipeline and decides.
#[async_trait]
pub trait SyncHook: Send + Sync + 'static {
    /// Decides about the payload.
    ///
    /// # Errors
    /// A failure is contained by the engine (fail-open, or fail-closed on
    /// BEFORE_TTS and ON_TRANSCRIPTION).
    async fn call(&self, input: HookInput) -> Result<HookResult, HookError>;
}

#[async_trait]
impl<F, Fut> SyncHook for F
where
    F: Fn(HookInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<HookResult, HookError>> + Send + 'static,
{
    async fn call(&self, input: HookInput) -> Result<HookResult, HookError> {
        (self)(input).await
    }
}

/// A hook that observes after the fact.
#[async_trait]
pub trait AsyncHook: Send + Sync + 'static {
    /// Observes; may return side effects to persist.
    ///
    /// # Errors
    /// Failures are logged and reported as `hook_error`, never propagated.
    async fn call(&self, input: HookInput) -> Result<SideEffects, HookError>;
}

/// Wraps a closure as an [`AsyncHook`].
pub struct AsyncFn<F>(pub F);

#[async_trait]
impl<F, Fut> AsyncHook for AsyncFn<F>
where
    F: Fn(HookInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SideEffects, HookError>> + Send + 'static,
{
    async fn call(&self, input: HookInput) -> Result<SideEffects, HookError> {
        (self.0)(input).await
    }
}

/// The handler of a registration.
#[derive(Clone)]
pub enum HookHandler {
    /// Decides in the pipeline.
    Sync(Arc<dyn SyncHook>),
    /// Observes afterwards.
    Async(Arc<dyn AsyncHook>),
}

/// A hook registration (RFC §9.1).
#[derive(Clone)]
pub struct HookRegistration {
    /// When it fires.
    pub trigger: HookTrigger,
    /// Name (used as `blocked_by`).
    pub name: String,
    /// Lower runs first.
    pub priority: i32,
    /// Per-call limit.
    pub timeout: Duration,
    /// Only for these channel types.
    pub channel_types: Option<Vec<ChannelType>>,
    /// Only for these channels.
    pub channel_ids: Option<Vec<ChannelId>>,
    /// Only for these directions.
    pub directions: Option<Vec<ChannelDirection>>,
    /// The handler.
    pub handler: HookHandler,
}

impl HookRegistration {
    fn new(trigger: HookTrigger, name: impl Into<String>, handler: HookHandler) -> Self {
        Self {
            trigger,
            name: name.into(),
            priority: 0,
            timeout: DEFAULT_HOOK_TIMEOUT,
            channel_types: None,
            channel_ids: None,
            directions: None,
            handler,
        }
    }

    /// A sync hook from a value or closure.
    pub fn sync(trigger: HookTrigger, name: impl Into<String>, hook: impl SyncHook) -> Self {
        Self::new(trigger, name, HookHandler::Sync(Arc::new(hook)))
    }

    /// An async hook from a closure returning side effects.
    pub fn asynchronous<F, Fut>(trigger: HookTrigger, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(HookInput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<SideEffects, HookError>> + Send + 'static,
    {
        Self::new(trigger, name, HookHandler::Async(Arc::new(AsyncFn(f))))
    }

    /// An async hook from a value.
    pub fn async_hook(trigger: HookTrigger, name: impl Into<String>, hook: impl AsyncHook) -> Self {
        Self::new(trigger, name, HookHandler::Async(Arc::new(hook)))
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Restricts to channel types.
    pub fn channel_types(mut self, types: impl IntoIterator<Item = ChannelType>) -> Self {
        self.channel_types = Some(types.into_iter().collect());
        self
    }

    /// Restricts to channel ids.
    pub fn channel_ids<C: Into<ChannelId>>(mut self, ids: impl IntoIterator<Item = C>) -> Self {
        self.channel_ids = Some(ids.into_iter().map(Into::into).collect());
        self
    }

    /// Restricts to directions.
    pub fn directions(mut self, dirs: impl IntoIterator<Item = ChannelDirection>) -> Self {
        self.directions = Some(dirs.into_iter().collect());
        self
    }

    /// Sync or async.
    pub fn execution(&self) -> HookExecution {
        match self.handler {
            HookHandler::Sync(_) => HookExecution::Sync,
            HookHandler::Async(_) => HookExecution::Async,
        }
    }

    /// Whether the filters let a payload from this channel through. Payloads
    /// without a channel pass only unfiltered hooks.
    fn matches(&self, channel: Option<(&ChannelId, &ChannelType, ChannelDirection)>) -> bool {
        if self.channel_types.is_none() && self.channel_ids.is_none() && self.directions.is_none() {
            return true;
        }
        let Some((id, ty, dir)) = channel else {
            return false;
        };
        self.channel_types.as_ref().is_none_or(|t| t.contains(ty))
            && self.channel_ids.as_ref().is_none_or(|i| i.contains(id))
            && self.directions.as_ref().is_none_or(|d| d.contains(&dir))
    }
}

fn payload_channel(p: &HookPayload) -> Option<(&ChannelId, &ChannelType, ChannelDirection)> {
    match p {
        HookPayload::Event(e) => Some((
            &e.source.channel_id,
            &e.source.channel_type,
            e.source.direction,
        )),
        HookPayload::Binding(b) => Some((&b.channel_id, &b.channel_type, b.direction)),
        HookPayload::Identity(_) => crate::identity_pipeline::identity_payload_channel(p),
        _ => crate::hook_api::ai_payload_channel(p),
    }
}

type HookList = Arc<Vec<Arc<HookRegistration>>>;

/// The registered hooks, global and per room.
#[derive(Default)]
pub(crate) struct HookEngine {
    global: RwLock<HashMap<HookTrigger, HookList>>,
    per_room: DashMap<RoomId, HashMap<HookTrigger, HookList>>,
}

fn insert_sorted(map: &mut HashMap<HookTrigger, HookList>, reg: HookRegistration) {
    let list = map.entry(reg.trigger).or_default();
    let mut v: Vec<_> = list.as_ref().clone();
    v.push(Arc::new(reg));
    // Stable: equal priorities keep registration order.
    v.sort_by_key(|h| h.priority);
    *list = Arc::new(v);
}

/// Outcome of a sync chain.
pub(crate) struct SyncOutcome {
    /// The (possibly modified) payload.
    pub payload: HookPayload,
    /// Set when a hook blocked: its name and result.
    pub blocked: Option<(String, HookResult)>,
    /// Results of the hooks that allowed or modified, with their names.
    pub allowed: Vec<(String, HookResult)>,
}

impl HookEngine {
    pub(crate) fn register(&self, reg: HookRegistration) {
        insert_sorted(&mut self.global.write(), reg);
    }

    pub(crate) fn register_for_room(&self, room_id: RoomId, reg: HookRegistration) {
        insert_sorted(&mut self.per_room.entry(room_id).or_default(), reg);
    }

    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut removed = false;
        let strip = |map: &mut HashMap<HookTrigger, HookList>, removed: &mut bool| {
            for list in map.values_mut() {
                if list.iter().any(|h| h.name == name) {
                    *list = Arc::new(list.iter().filter(|h| h.name != name).cloned().collect());
                    *removed = true;
                }
            }
        };
        strip(&mut self.global.write(), &mut removed);
        for mut entry in self.per_room.iter_mut() {
            strip(entry.value_mut(), &mut removed);
        }
        removed
    }

    pub(crate) fn forget_room(&self, room_id: &RoomId) {
        self.per_room.remove(room_id);
    }

    /// The hooks for a trigger in a room, in priority order.
    fn hooks_for(&self, trigger: HookTrigger, room_id: Option<&RoomId>) -> HookList {
        let global = self
            .global
            .read()
            .get(&trigger)
            .cloned()
            .unwrap_or_default();
        let Some(room_id) = room_id else {
            return global;
        };
        if self.per_room.is_empty() {
            return global;
        }
        let Some(room) = self.per_room.get(room_id) else {
            return global;
        };
        let Some(extra) = room.get(&trigger) else {
            return global;
        };
        let mut v: Vec<_> = global.iter().chain(extra.iter()).cloned().collect();
        v.sort_by_key(|h| h.priority);
        Arc::new(v)
    }

    pub(crate) fn has_hooks(&self, trigger: HookTrigger, room_id: &RoomId) -> bool {
        !self.hooks_for(trigger, Some(room_id)).is_empty()
    }

    /// Runs the sync hooks of a trigger in priority order (RFC §9.3).
    /// `deadline` bounds the whole chain (the pre-commit process timeout);
    /// when it passes, `Err(())` is returned and nothing is decided.
    pub(crate) async fn run_sync(
        &self,
        kit: &RoomKit,
        trigger: HookTrigger,
        room_id: Option<&RoomId>,
        payload: HookPayload,
        context: Option<Arc<RoomContext>>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<SyncOutcome, ()> {
        let hooks = self.hooks_for(trigger, room_id);
        let mut outcome = SyncOutcome {
            payload,
            blocked: None,
            allowed: Vec::new(),
        };
        for hook in hooks.iter() {
            let HookHandler::Sync(handler) = &hook.handler else {
                continue;
            };
            if !hook.matches(payload_channel(&outcome.payload)) {
                continue;
            }
            let input = HookInput {
                trigger,
                payload: outcome.payload.clone(),
                room_id: room_id.cloned(),
                context: context.clone(),
                kit: kit.clone(),
            };
            let span = hook_span(kit, trigger, room_id, &hook.name);
            let call = timed(
                span.clone(),
                AssertUnwindSafe(handler.call(input)).catch_unwind(),
            );
            let limited = tokio::time::timeout(hook.timeout, call);
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d, limited).await {
                    Ok(r) => r,
                    Err(_) => return Err(()),
                },
                None => limited.await,
            };
            if !span.is_disabled() {
                let verdict = match &result {
                    Err(_) => "timeout",
                    Ok(Ok(Ok(r))) => match r.action {
                        HookAction::Allow => "allow",
                        HookAction::Block => "block",
                        HookAction::Modify => "modify",
                    },
                    Ok(_) => "error",
                };
                span.record(crate::telemetry::attr::OUTCOME, verdict);
            }
            drop(span);
            let failure = match result {
                Err(_) => {
                    kit.emit(FrameworkEvent::HookTimeout {
                        hook_name: hook.name.clone(),
                        trigger,
                        timeout_ms: hook.timeout.as_millis() as u64,
                    });
                    tracing::warn!(target: "roomkit.core.hooks", hook = %hook.name, %trigger, "sync hook timed out");
                    Some("timeout".to_owned())
                }
                Ok(Err(panic)) => Some(format!("hook panicked: {}", panic_message(&panic))),
                Ok(Ok(Err(e))) => Some(e.0),
                Ok(Ok(Ok(mut r))) => match r.action {
                    HookAction::Allow => {
                        outcome.allowed.push((hook.name.clone(), r));
                        None
                    }
                    HookAction::Block => {
                        tracing::debug!(target: "roomkit.core.hooks", hook = %hook.name, %trigger, "hook blocked");
                        outcome.blocked = Some((hook.name.clone(), r));
                        return Ok(outcome);
                    }
                    HookAction::Modify => match r.event.take() {
                        Some(HookPayload::Event(e)) if e.content.validate().is_err() => {
                            Some("modify returned content that breaks the model's rules".to_owned())
                        }
                        Some(p) if p.same_kind(&outcome.payload) => {
                            outcome.payload = p;
                            outcome.allowed.push((hook.name.clone(), r));
                            None
                        }
                        Some(_) => Some("modify returned a payload of the wrong type".to_owned()),
                        None => Some("modify returned no payload".to_owned()),
                    },
                },
            };
            if let Some(error) = failure {
                if error != "timeout" {
                    tracing::error!(target: "roomkit.core.hooks", hook = %hook.name, %trigger, %error, "sync hook failed");
                    kit.emit(FrameworkEvent::HookError {
                        hook_name: hook.name.clone(),
                        trigger,
                        error: error.clone(),
                    });
                }
                if trigger.fails_closed() {
                    outcome.blocked = Some((hook.name.clone(), HookResult::block(error)));
                    return Ok(outcome);
                }
            }
        }
        Ok(outcome)
    }

    /// Starts the async hooks of a trigger; returns immediately. Each runs
    /// on its own tracked task with its timeout; failures are logged and
    /// reported, side effects persisted.
    pub(crate) fn spawn_async(
        &self,
        kit: &RoomKit,
        trigger: HookTrigger,
        room_id: Option<&RoomId>,
        payload: HookPayload,
        context: Option<Arc<RoomContext>>,
    ) {
        for hook in self.async_hooks(trigger, room_id, &payload) {
            let input = HookInput {
                trigger,
                payload: payload.clone(),
                room_id: room_id.cloned(),
                context: context.clone(),
                kit: kit.clone(),
            };
            let kit2 = kit.clone();
            let span = hook_span(kit, trigger, room_id, &hook.name);
            kit.spawn(Box::pin(run_async_hook(kit2, hook, input, span)));
        }
    }

    /// Runs the async hooks of a trigger and waits for them (used where the
    /// RFC needs their effects before going on, decision D3).
    pub(crate) async fn run_async_now(
        &self,
        kit: &RoomKit,
        trigger: HookTrigger,
        room_id: Option<&RoomId>,
        payload: HookPayload,
    ) {
        let futs: Vec<_> = self
            .async_hooks(trigger, room_id, &payload)
            .into_iter()
            .map(|hook| {
                let input = HookInput {
                    trigger,
                    payload: payload.clone(),
                    room_id: room_id.cloned(),
                    context: None,
                    kit: kit.clone(),
                };
                let span = hook_span(kit, trigger, room_id, &hook.name);
                run_async_hook(kit.clone(), hook, input, span)
            })
            .collect();
        futures::future::join_all(futs).await;
    }

    fn async_hooks(
        &self,
        trigger: HookTrigger,
        room_id: Option<&RoomId>,
        payload: &HookPayload,
    ) -> Vec<Arc<HookRegistration>> {
        let hooks = self.hooks_for(trigger, room_id);
        if hooks.is_empty() {
            return Vec::new();
        }
        let channel = payload_channel(payload);
        hooks
            .iter()
            .filter(|h| matches!(h.handler, HookHandler::Async(_)) && h.matches(channel))
            .cloned()
            .collect()
    }
}

/// The `hook_execution` span of one hook call (RFC §15.7).
fn hook_span(
    kit: &RoomKit,
    trigger: HookTrigger,
    room_id: Option<&RoomId>,
    hook: &str,
) -> tracing::Span {
    use crate::telemetry::attr;
    let span = kit.span(
        crate::telemetry::SpanName::HookExecution,
        &[(attr::HOOK, hook.into())],
    );
    if !span.is_disabled() {
        span.record(attr::TRIGGER, trigger.as_str());
        if let Some(id) = room_id {
            span.record(attr::ROOM_ID, id.as_str());
        }
    }
    span
}

async fn run_async_hook(
    kit: RoomKit,
    hook: Arc<HookRegistration>,
    input: HookInput,
    span: tracing::Span,
) {
    let HookHandler::Async(handler) = &hook.handler else {
        return;
    };
    let trigger = input.trigger;
    let room_id = input.room_id.clone();
    let call = timed(span, AssertUnwindSafe(handler.call(input)).catch_unwind());
    match tokio::time::timeout(hook.timeout, call).await {
        Err(_) => {
            tracing::warn!(target: "roomkit.core.hooks", hook = %hook.name, %trigger, "async hook timed out");
            kit.emit(FrameworkEvent::HookTimeout {
                hook_name: hook.name.clone(),
                trigger,
                timeout_ms: hook.timeout.as_millis() as u64,
            });
        }
        Ok(Err(panic)) => {
            let error = format!("hook panicked: {}", panic_message(&panic));
            tracing::error!(target: "roomkit.core.hooks", hook = %hook.name, %trigger, %error, "async hook failed");
            kit.emit(FrameworkEvent::HookError {
                hook_name: hook.name.clone(),
                trigger,
                error,
            });
        }
        Ok(Ok(Err(e))) => {
            tracing::error!(target: "roomkit.core.hooks", hook = %hook.name, %trigger, error = %e, "async hook failed");
            kit.emit(FrameworkEvent::HookError {
                hook_name: hook.name.clone(),
                trigger,
                error: e.0,
            });
        }
        Ok(Ok(Ok(effects))) => {
            if let Some(room_id) = room_id
                && (!effects.tasks.is_empty() || !effects.observations.is_empty())
            {
                kit.persist_side_effects(
                    &room_id,
                    effects.tasks,
                    effects.observations,
                    &hook.name,
                    None,
                )
                .await;
            }
        }
    }
}

/// Best-effort text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    // `&Box<dyn Any>` coerces to a `dyn Any` that is the box itself, which
    // is what callers holding a caught panic pass: look inside it.
    if let Some(inner) = p.downcast_ref::<Box<dyn std::any::Any + Send>>() {
        return panic_message(inner.as_ref());
    }
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}
