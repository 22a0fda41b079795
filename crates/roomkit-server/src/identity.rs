//! Identity resolution over HTTP (RFC §11): an [`HttpIdentityResolver`]
//! that asks an integrator's service who sent a message, and the wire form
//! of the ON_IDENTITY_AMBIGUOUS / ON_IDENTITY_UNKNOWN answers of HTTP hooks.
//!
//! Both speak in identity ids: the identities themselves live in the store
//! (created with `POST /identities`), and an id the store does not know is
//! an error of the answer, never a guess.

use std::time::Duration;

use async_trait::async_trait;
use roomkit_core::model::{
    ChannelId, EventContent, EventType, Identity, IdentityId, InboundMessage, RoomEvent,
};
use roomkit_core::{
    IdentityError, IdentityHookPayload, IdentityHookResult, IdentityResolver, IdentityResult,
    InjectedEvent, RoomContext, RoomKit,
};
use serde::Deserialize;

/// Asks `url` to resolve each inbound sender.
///
/// Request: `POST {"channel_id", "channel_type", "address", "room", "message"}`.
/// Answer: `{"status": "identified", "identity_id": ID}`,
/// `{"status": "ambiguous", "candidates": [ID, ...]}` or
/// `{"status": "unknown"}`. A failure, a timeout or an unknown id counts as
/// UNKNOWN (the engine logs it).
pub struct HttpIdentityResolver {
    url: reqwest::Url,
    client: reqwest::Client,
    timeout: Duration,
    kit: std::sync::OnceLock<RoomKit>,
}

impl HttpIdentityResolver {
    /// A resolver posting to `url`, waiting at most `timeout`.
    pub fn new(url: reqwest::Url, client: reqwest::Client, timeout: Duration) -> Self {
        Self {
            url,
            client,
            timeout,
            kit: std::sync::OnceLock::new(),
        }
    }

    /// Gives the resolver the engine whose store holds the identities; call
    /// it once the engine is built.
    pub fn attach_kit(&self, kit: &RoomKit) {
        let _ = self.kit.set(kit.clone());
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ResolvedStatus {
    Identified,
    Ambiguous,
    Unknown,
}

#[derive(Debug, Deserialize)]
struct ResolverAnswer {
    status: ResolvedStatus,
    #[serde(default)]
    identity_id: Option<String>,
    #[serde(default)]
    candidates: Vec<String>,
}

fn fail(message: impl Into<String>, retryable: bool) -> IdentityError {
    IdentityError {
        message: message.into(),
        retryable,
    }
}

/// The largest resolver answer read; a longer one is a failure.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

async fn identities(kit: &RoomKit, ids: &[String]) -> Result<Vec<Identity>, String> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let identity = kit
            .get_identity(&IdentityId::from(id.as_str()))
            .await
            .map_err(|e| {
                tracing::debug!(target: "roomkit.server.identity", identity_id = %id, error = %e, "an answer named an identity that cannot be read");
                "the answer names an identity that cannot be read".to_owned()
            })?;
        out.push(identity);
    }
    Ok(out)
}

#[async_trait]
impl IdentityResolver for HttpIdentityResolver {
    async fn resolve(
        &self,
        message: &InboundMessage,
        context: &RoomContext,
    ) -> Result<IdentityResult, IdentityError> {
        let Some(kit) = self.kit.get() else {
            return Err(fail("the resolver is not attached to the engine", false));
        };
        let channel_type = context
            .binding(&message.channel_id)
            .map(|b| b.channel_type.clone());
        let body = serde_json::json!({
            "channel_id": message.channel_id,
            "channel_type": channel_type,
            "address": message.sender_id,
            "room": context.room,
            "message": message,
        });
        let call = async {
            let resp = self
                .client
                .post(self.url.clone())
                .json(&body)
                .send()
                .await
                .map_err(|e| {
                    tracing::debug!(target: "roomkit.server.identity", error = %e, "identity resolver request failed");
                    fail(crate::hooks::request_problem(&e), true)
                })?;
            let status = resp.status();
            if !status.is_success() {
                return Err(fail(
                    crate::hooks::status_problem(status),
                    status.is_server_error(),
                ));
            }
            let bytes = roomkit_channels::outbound::read_capped(resp, MAX_ANSWER_BYTES)
                .await
                .map_err(|e| fail(format!("reading the answer failed: {e}"), true))?;
            serde_json::from_slice::<ResolverAnswer>(&bytes).map_err(|e| {
                fail(
                    format!("unreadable answer: {}", crate::hooks::json_problem(&e)),
                    false,
                )
            })
        };
        let answer = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| fail("no answer in time", true))??;
        match answer.status {
            ResolvedStatus::Unknown => Ok(IdentityResult::unknown()),
            ResolvedStatus::Identified => {
                let Some(id) = answer.identity_id else {
                    return Err(fail("`identified` needs an `identity_id`", false));
                };
                let mut found = identities(kit, &[id]).await.map_err(|e| fail(e, false))?;
                match found.pop() {
                    Some(identity) => Ok(IdentityResult::identified(identity)),
                    None => Ok(IdentityResult::unknown()),
                }
            }
            ResolvedStatus::Ambiguous => {
                let candidates = identities(kit, &answer.candidates)
                    .await
                    .map_err(|e| fail(e, false))?;
                Ok(IdentityResult::ambiguous(candidates))
            }
        }
    }
}

/// The answer of an HTTP hook on an identity trigger.
#[derive(Debug, Deserialize)]
pub(crate) struct IdentityAnswer {
    action: IdentityWireAction,
    #[serde(default)]
    identity_id: Option<String>,
    #[serde(default)]
    candidates: Option<Vec<String>>,
    #[serde(default)]
    new_identity: Option<Identity>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    inject: Vec<IdentityInject>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum IdentityWireAction {
    /// Leave the question to the next hook (or the default).
    Allow,
    Resolved,
    Pending,
    Challenge,
    Reject,
    Create,
}

#[derive(Debug, Deserialize)]
struct IdentityInject {
    content: EventContent,
    #[serde(default)]
    target_channel_ids: Option<Vec<ChannelId>>,
}

/// The request body `payload` of an identity hook.
pub(crate) fn payload_json(p: &IdentityHookPayload) -> serde_json::Value {
    serde_json::json!({
        "room_id": p.room_id,
        "channel_id": p.channel_id,
        "channel_type": p.channel_type,
        "address": p.address,
        "status": p.status,
        "candidates": p.candidates,
        "metadata": p.metadata,
        "message": p.message,
    })
}

/// Turns an identity hook's answer into the engine's result; `None` for
/// `allow` (no decision).
pub(crate) async fn decide(
    kit: &RoomKit,
    p: &IdentityHookPayload,
    answer: IdentityAnswer,
) -> Result<Option<IdentityHookResult>, String> {
    Ok(Some(match answer.action {
        IdentityWireAction::Allow => return Ok(None),
        IdentityWireAction::Resolved => {
            let Some(id) = answer.identity_id else {
                return Err("`resolved` needs an `identity_id`".into());
            };
            let mut found = identities(kit, &[id]).await?;
            match found.pop() {
                Some(identity) => IdentityHookResult::resolved(identity),
                None => return Err("`resolved` named no identity".into()),
            }
        }
        IdentityWireAction::Pending => {
            let candidates = match answer.candidates {
                Some(ids) => identities(kit, &ids).await?,
                None => p.candidates.clone(),
            };
            IdentityHookResult::pending(candidates)
        }
        IdentityWireAction::Challenge => {
            let mut events = Vec::with_capacity(answer.inject.len());
            for inj in answer.inject {
                inj.content.validate().map_err(|e| format!("inject: {e}"))?;
                events.push(InjectedEvent {
                    event: RoomEvent::system(EventType::Message, inj.content),
                    target_channel_ids: inj.target_channel_ids,
                });
            }
            IdentityHookResult::challenge(events)
        }
        IdentityWireAction::Reject => IdentityHookResult::reject(
            answer
                .reason
                .unwrap_or_else(|| "identity rejected".to_owned()),
        ),
        IdentityWireAction::Create => IdentityHookResult::create(answer.new_identity),
    }))
}
