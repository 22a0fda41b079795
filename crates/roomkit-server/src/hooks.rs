//! HTTP hooks: hooks written in any language, reached by POSTing the hook
//! input as JSON to a URL. Sync hooks answer with a decision; async hooks
//! are fire-and-forget.
//!
//! The engine owns ordering and the hook timeout. This adapter adds what is
//! specific to HTTP: the wire format, and the `on_error` policy (a sync hook
//! with `on_error = "block"` turns a failure into a block named after it).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use roomkit_core::hooks::{AsyncHook, SyncHook};
use roomkit_core::model::{
    ChannelId, EventContent, EventType, FrameworkEvent, HookExecution, HookTrigger, Map,
    Observation, Room, RoomEvent, Task,
};
use roomkit_core::{
    HookError, HookInput, HookPayload, HookRegistration, HookResult, InjectedEvent, SideEffects,
};
use serde::Deserialize;

use crate::error::ServerError;

/// The largest hook answer read; a longer one is a hook failure.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What a remote's unreadable JSON answer is called in errors: where it
/// went wrong, never what it said (serde's messages quote the input).
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not of the expected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} (line {}, column {})", e.line(), e.column())
}

/// The error text of a failed request: its kind, without the URL or
/// anything the remote said.
pub(crate) fn request_problem(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirect not followed"
    } else {
        "request failed"
    }
}

/// The error text of a non-2xx answer.
pub(crate) fn status_problem(status: reqwest::StatusCode) -> String {
    if status.is_redirection() {
        format!("answered HTTP {} (redirect not followed)", status.as_u16())
    } else {
        format!("answered HTTP {}", status.as_u16())
    }
}

/// What a failed or timed-out sync hook means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Let the event through (fail open).
    #[default]
    Allow,
    /// Block the event, with the hook's name as `blocked_by`.
    Block,
}

/// A validated HTTP hook.
#[derive(Debug, Clone)]
pub struct HttpHookConfig {
    /// Name (the `blocked_by` of what it blocks).
    pub name: String,
    /// When it fires.
    pub trigger: HookTrigger,
    /// Sync (decides) or async (observes).
    pub execution: HookExecution,
    /// Where to POST.
    pub url: reqwest::Url,
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// Lower runs first.
    pub priority: i32,
    /// Failure policy of a sync hook.
    pub on_error: OnError,
}

impl HttpHookConfig {
    /// Checks the URL scheme and parses it.
    ///
    /// # Errors
    /// [`ServerError::Config`] for a URL that is not `http(s)://...`.
    pub fn parse_url(url: &str) -> Result<reqwest::Url, ServerError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ServerError::config("url", format!("{url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(ServerError::config(
                "url",
                format!("{url:?} must be an http:// or https:// URL with a host"),
            ));
        }
        Ok(parsed)
    }

    /// The engine registration of this hook.
    pub fn registration(self, client: reqwest::Client) -> HookRegistration {
        let name = self.name.clone();
        let trigger = self.trigger;
        let priority = self.priority;
        let timeout = self.timeout;
        let hook = Arc::new(HttpHook {
            config: self,
            client,
        });
        match hook.config.execution {
            HookExecution::Sync => {
                // With `block`, the adapter applies the timeout itself (so it
                // can block); the engine's limit is only a backstop.
                let engine_timeout = if hook.config.on_error == OnError::Block {
                    timeout + Duration::from_secs(1)
                } else {
                    timeout
                };
                HookRegistration::sync(trigger, name, SyncAdapter(hook))
                    .priority(priority)
                    .timeout(engine_timeout)
            }
            HookExecution::Async => HookRegistration::async_hook(trigger, name, AsyncAdapter(hook))
                .priority(priority)
                .timeout(timeout),
        }
    }
}

struct HttpHook {
    config: HttpHookConfig,
    client: reqwest::Client,
}

/// The answer of a sync HTTP hook. Hooks are written in any language, so
/// a field the hook has nothing for may be absent or `null` (in a task or
/// observation too), and the RFC's name `injected_events` is read like
/// `inject`.
#[derive(Debug, Deserialize)]
struct Answer {
    action: Action,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, alias = "injected_events", deserialize_with = "lenient::list")]
    inject: Vec<Inject>,
    #[serde(default, deserialize_with = "lenient::list")]
    tasks: Vec<Task>,
    #[serde(default, deserialize_with = "lenient::list")]
    observations: Vec<Observation>,
    #[serde(default)]
    event: Option<RoomEvent>,
    /// `modify` of a text trigger (`on_transcription`, `before_tts`): the
    /// new text.
    #[serde(default)]
    text: Option<String>,
    #[serde(default, deserialize_with = "lenient::map")]
    metadata_updates: Map,
}

/// Reading what hooks in other languages write: `null` for "nothing".
mod lenient {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};

    /// A list that may be `null`; `null` fields of its objects count as
    /// absent, so their defaults apply.
    pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        let items = Option::<Vec<serde_json::Value>>::deserialize(d)?.unwrap_or_default();
        items
            .into_iter()
            .map(|mut item| {
                if let Some(obj) = item.as_object_mut() {
                    obj.retain(|_, v| !v.is_null());
                }
                serde_json::from_value(item).map_err(serde::de::Error::custom)
            })
            .collect()
    }

    /// A map that may be `null`.
    pub fn map<'de, D>(d: D) -> Result<roomkit_core::model::Map, D::Error>
    where
        D: Deserializer<'de>,
    {
        Ok(Option::<roomkit_core::model::Map>::deserialize(d)?.unwrap_or_default())
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Allow,
    Block,
    Modify,
}

/// One event to inject: `{"content": ..}` as the contract writes it, or
/// the RFC's `{"event": {"content": ..}}`.
#[derive(Debug, Deserialize)]
struct Inject {
    #[serde(default)]
    content: Option<EventContent>,
    #[serde(default)]
    event: Option<InjectEvent>,
    #[serde(default)]
    target_channel_ids: Option<Vec<ChannelId>>,
}

#[derive(Debug, Deserialize)]
struct InjectEvent {
    content: EventContent,
}

enum Failure {
    Timeout,
    Error(String),
}

impl HttpHook {
    async fn request_body(&self, input: &HookInput) -> serde_json::Value {
        let room: Option<Room> = match (&input.payload, &input.context) {
            (HookPayload::Room(r), _) => Some(r.clone()),
            (_, Some(ctx)) => Some(ctx.room.clone()),
            _ => match &input.room_id {
                Some(id) => input.kit.get_room(id).await.ok(),
                None => None,
            },
        };
        let (event, payload) = match &input.payload {
            HookPayload::Event(e) => (serde_json::to_value(&**e).ok(), None),
            HookPayload::Room(_) => (None, None),
            HookPayload::Binding(b) => (None, serde_json::to_value(b).ok()),
            HookPayload::Participant(p) => (None, serde_json::to_value(p).ok()),
            HookPayload::Task(t) => (None, serde_json::to_value(t).ok()),
            HookPayload::Text(t) => (None, Some(serde_json::Value::String(t.clone()))),
            HookPayload::Json(v) => (None, Some(v.clone())),
            HookPayload::Identity(p) => (None, Some(crate::identity::payload_json(p))),
            _ => (None, None),
        };
        serde_json::json!({
            "hook": self.config.name,
            "trigger": self.config.trigger,
            "room": room,
            "event": event,
            "payload": payload,
        })
    }

    async fn post(&self, input: &HookInput) -> Result<Vec<u8>, Failure> {
        let body = self.request_body(input).await;
        let call = async {
            let response = self
                .client
                .post(self.config.url.clone())
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    tracing::debug!(target: "roomkit.server.hooks", hook = %self.config.name, error = %e, "http hook request failed");
                    Failure::Error(request_problem(&e).to_owned())
                })?;
            let status = response.status();
            if !status.is_success() {
                return Err(Failure::Error(status_problem(status)));
            }
            let bytes = roomkit_channels::outbound::read_capped(response, MAX_ANSWER_BYTES)
                .await
                .map_err(|e| Failure::Error(format!("reading the answer failed: {e}")))?;
            Ok(bytes)
        };
        match tokio::time::timeout(self.config.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }

    fn decide(&self, answer: Answer, input: &HookInput) -> Result<HookResult, String> {
        let mut result = match answer.action {
            Action::Allow => HookResult::allow(),
            Action::Block => HookResult::block(
                answer
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("blocked by hook {}", self.config.name)),
            ),
            // Text triggers (the caller's transcript, the text before
            // speech) are modified with `text`; event triggers with `event`.
            Action::Modify if matches!(input.payload, HookPayload::Text(_)) => {
                let Some(text) = answer.text else {
                    return Err("`modify` of a text trigger needs a `text`".into());
                };
                let mut r = HookResult::modify(HookPayload::Text(text));
                r.reason = answer.reason.clone();
                r
            }
            Action::Modify => {
                let Some(event) = answer.event else {
                    return Err("`modify` needs an `event`".into());
                };
                if !matches!(input.payload, HookPayload::Event(_)) {
                    return Err("`modify` is only possible for event and text triggers".into());
                }
                let mut r = HookResult::modify_event(event);
                r.reason = answer.reason.clone();
                r
            }
        };
        for inj in answer.inject {
            let Some(content) = inj.content.or(inj.event.map(|e| e.content)) else {
                return Err("inject: an injected event needs a `content`".into());
            };
            content.validate().map_err(|e| format!("inject: {e}"))?;
            result.injected_events.push(InjectedEvent {
                event: RoomEvent::system(EventType::Message, content),
                target_channel_ids: inj.target_channel_ids,
            });
        }
        result.tasks = answer.tasks;
        result.observations = answer.observations;
        result.metadata_updates = answer.metadata_updates;
        Ok(result)
    }

    /// The answer to ON_IDENTITY_AMBIGUOUS / ON_IDENTITY_UNKNOWN: `allow`
    /// (no decision) or one of the RFC §11.3 actions.
    async fn decide_identity(
        &self,
        bytes: &[u8],
        payload: &roomkit_core::IdentityHookPayload,
        input: &HookInput,
    ) -> Result<HookResult, Failure> {
        let answer: crate::identity::IdentityAnswer =
            serde_json::from_slice(bytes).map_err(|e| {
                Failure::Error(format!("unreadable identity answer: {}", json_problem(&e)))
            })?;
        match crate::identity::decide(&input.kit, payload, answer)
            .await
            .map_err(Failure::Error)?
        {
            None => Ok(HookResult::allow()),
            Some(result) => {
                let mut answered = payload.clone();
                answered.result = Some(result);
                Ok(HookResult::modify(HookPayload::Identity(Box::new(
                    answered,
                ))))
            }
        }
    }

    /// Reports a failure the engine did not see (on_error = block).
    fn report(&self, input: &HookInput, failure: &Failure) {
        let event = match failure {
            Failure::Timeout => FrameworkEvent::HookTimeout {
                hook_name: self.config.name.clone(),
                trigger: self.config.trigger,
                timeout_ms: self.config.timeout.as_millis() as u64,
            },
            Failure::Error(e) => FrameworkEvent::HookError {
                hook_name: self.config.name.clone(),
                trigger: self.config.trigger,
                error: e.clone(),
            },
        };
        input.kit.publish_remote_framework_event(event);
    }
}

struct SyncAdapter(Arc<HttpHook>);

#[async_trait]
impl SyncHook for SyncAdapter {
    async fn call(&self, input: HookInput) -> Result<HookResult, HookError> {
        let hook = &self.0;
        if let HookPayload::Identity(p) = &input.payload
            && p.result.is_some()
        {
            // An earlier identity hook already answered (the first wins).
            return Ok(HookResult::allow());
        }
        let outcome = match hook.post(&input).await {
            Ok(bytes) => match &input.payload {
                HookPayload::Identity(p) => hook.decide_identity(&bytes, p, &input).await,
                _ => match serde_json::from_slice::<Answer>(&bytes) {
                    Ok(answer) => hook.decide(answer, &input).map_err(Failure::Error),
                    Err(e) => Err(Failure::Error(format!(
                        "unreadable answer: {}",
                        json_problem(&e)
                    ))),
                },
            },
            Err(f) => Err(f),
        };
        match outcome {
            Ok(result) => Ok(result),
            Err(failure) => {
                let message = match &failure {
                    Failure::Timeout => {
                        format!("no answer within {} ms", hook.config.timeout.as_millis())
                    }
                    Failure::Error(e) => e.clone(),
                };
                tracing::warn!(target: "roomkit.server.hooks", hook = %hook.config.name, url = %hook.config.url, error = %message, on_error = ?hook.config.on_error, "http hook failed");
                match hook.config.on_error {
                    OnError::Block => {
                        hook.report(&input, &failure);
                        Ok(HookResult::block(format!(
                            "hook {} failed: {message}",
                            hook.config.name
                        )))
                    }
                    OnError::Allow => match failure {
                        // The engine reports errors itself; a timeout is
                        // reported here because the adapter's own limit
                        // fired first.
                        Failure::Timeout => {
                            hook.report(&input, &failure);
                            Ok(HookResult::allow())
                        }
                        Failure::Error(e) => Err(HookError::new(e)),
                    },
                }
            }
        }
    }
}

struct AsyncAdapter(Arc<HttpHook>);

#[async_trait]
impl AsyncHook for AsyncAdapter {
    async fn call(&self, input: HookInput) -> Result<SideEffects, HookError> {
        match self.0.post(&input).await {
            Ok(_) => Ok(SideEffects::default()),
            Err(Failure::Timeout) => Err(HookError::new(format!(
                "no answer within {} ms",
                self.0.config.timeout.as_millis()
            ))),
            Err(Failure::Error(e)) => Err(HookError::new(e)),
        }
    }
}
