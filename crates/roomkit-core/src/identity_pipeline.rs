//! Identity resolution in the inbound pipeline (RFC §10.1 step 5, §11): the
//! resolver interface, the ON_IDENTITY_AMBIGUOUS / ON_IDENTITY_UNKNOWN hook
//! results, the participant updates they lead to, and delivery-status
//! callbacks that update an event's delivery results (ON_DELIVERY_STATUS).
//!
//! Resolution runs before the room lock (a slow resolver does not hold the
//! room); the participant is then written under the lock, and the commit
//! pass finds the event already attributed. A challenge or a rejection
//! stores the message as BLOCKED and never broadcasts it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use roomkit_model::{
    BlockReason, ChannelBinding, ChannelId, ChannelType, DeliveryError, DeliveryResult,
    DeliveryResults, DeliveryStatus, EventId, EventSource, EventStatus, FrameworkEvent,
    HookTrigger, IdentificationStatus, Identity, IdentityId, InboundMessage, InboundResult, Map,
    Participant, ParticipantId, ParticipantStatus, RoomEvent, RoomId, Visibility,
};
use tokio::time::Instant;

use crate::channel::{Channel, RoomContext};
use crate::error::{HookError, Result, RoomKitError};
use crate::hooks::{HookInput, HookPayload, HookRegistration, HookResult, InjectedEvent, SyncHook};
use crate::kit::{RoomKit, RoomKitBuilder};
use crate::lane::{Job, JobGroup, JobMode};
use crate::store::{EventPatch, Store};

/// Default resolver timeout (decision D14).
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Failure of an identity resolver; resolution then counts as UNKNOWN.
#[derive(Debug, Clone, thiserror::Error)]
#[error("identity resolver failed: {message}")]
pub struct IdentityError {
    /// What went wrong.
    pub message: String,
    /// Whether asking again may succeed.
    pub retryable: bool,
}

impl IdentityError {
    /// True when asking again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// What a resolver found (RFC §11.1).
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityResult {
    /// IDENTIFIED, AMBIGUOUS, UNKNOWN, PENDING, CHALLENGE_SENT or REJECTED.
    pub status: IdentificationStatus,
    /// The identity, when IDENTIFIED.
    pub identity: Option<Identity>,
    /// Candidates, when AMBIGUOUS.
    pub candidates: Vec<Identity>,
    /// Resolution metadata.
    pub metadata: Map,
}

impl IdentityResult {
    /// One match.
    pub fn identified(identity: Identity) -> Self {
        Self {
            status: IdentificationStatus::Identified,
            identity: Some(identity),
            candidates: Vec::new(),
            metadata: Map::new(),
        }
    }

    /// Several matches.
    pub fn ambiguous(candidates: Vec<Identity>) -> Self {
        Self {
            status: IdentificationStatus::Ambiguous,
            identity: None,
            candidates,
            metadata: Map::new(),
        }
    }

    /// No match.
    pub fn unknown() -> Self {
        Self {
            status: IdentificationStatus::Unknown,
            identity: None,
            candidates: Vec::new(),
            metadata: Map::new(),
        }
    }
}

/// Maps an inbound sender address to an identity (RFC §11.1).
#[async_trait]
pub trait IdentityResolver: Send + Sync + 'static {
    /// Resolves the sender of a message.
    ///
    /// # Errors
    /// A failure is logged and resolution counts as UNKNOWN (without hooks).
    async fn resolve(
        &self,
        message: &InboundMessage,
        context: &RoomContext,
    ) -> std::result::Result<IdentityResult, IdentityError>;
}

/// The built-in resolver: the identities of the room's organization that
/// own the sender's address on the channel's type (RFC §17.2 scoping).
pub struct AddressResolver {
    store: Arc<dyn Store>,
    channel_types: Vec<(ChannelId, ChannelType)>,
}

impl AddressResolver {
    /// A resolver over a store's identities. `channel_types` maps channel
    /// ids to their types (inbound messages carry only the id).
    pub fn new(
        store: Arc<dyn Store>,
        channel_types: impl IntoIterator<Item = (ChannelId, ChannelType)>,
    ) -> Self {
        Self {
            store,
            channel_types: channel_types.into_iter().collect(),
        }
    }
}

#[async_trait]
impl IdentityResolver for AddressResolver {
    async fn resolve(
        &self,
        message: &InboundMessage,
        context: &RoomContext,
    ) -> std::result::Result<IdentityResult, IdentityError> {
        let ty = self
            .channel_types
            .iter()
            .find(|(id, _)| id == &message.channel_id)
            .map(|(_, t)| t.clone())
            .or_else(|| {
                context
                    .binding(&message.channel_id)
                    .map(|b| b.channel_type.clone())
            });
        let Some(ty) = ty else {
            return Ok(IdentityResult::unknown());
        };
        let found = self
            .store
            .resolve_by_address(
                &ty,
                &crate::identity::normalize_address(&ty, &message.sender_id),
                context.room.organization_id.as_deref(),
            )
            .await
            .map_err(|e| IdentityError {
                message: e.to_string(),
                retryable: e.is_retryable(),
            })?;
        Ok(found.map_or_else(IdentityResult::unknown, IdentityResult::identified))
    }
}

/// Settings of identity resolution.
#[derive(Clone)]
pub struct IdentitySettings {
    /// The resolver; without one no resolution runs.
    pub resolver: Option<Arc<dyn IdentityResolver>>,
    /// How long a resolver may take (decision D13/D14).
    pub timeout: Duration,
    /// Channel types that trigger resolution; `None` means all (RFC §11.4).
    pub channel_types: Option<Vec<ChannelType>>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            resolver: None,
            timeout: DEFAULT_RESOLVER_TIMEOUT,
            channel_types: None,
        }
    }
}

impl std::fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("resolver", &self.resolver.is_some())
            .field("timeout", &self.timeout)
            .field("channel_types", &self.channel_types)
            .finish()
    }
}

impl RoomKitBuilder {
    /// Sets the identity resolver (RFC §11).
    pub fn identity_resolver(mut self, resolver: Arc<dyn IdentityResolver>) -> Self {
        self.identity.resolver = Some(resolver);
        self
    }

    /// Sets the resolver timeout (5 s by default).
    pub fn identity_timeout(mut self, timeout: Duration) -> Self {
        self.identity.timeout = timeout;
        self
    }

    /// Restricts resolution to these channel types (RFC §11.4).
    pub fn identity_channel_types(mut self, types: impl IntoIterator<Item = ChannelType>) -> Self {
        self.identity.channel_types = Some(types.into_iter().collect());
        self
    }
}

/// What an identity hook decided (RFC §11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityAction {
    /// Use `identity`.
    Resolved,
    /// Create a PENDING participant with `candidates`.
    Pending,
    /// Deliver `injected_events` and block the message.
    Challenge,
    /// Reject the message.
    Reject,
    /// Create `new_identity` and a participant with it.
    Create,
}

/// Result of an ON_IDENTITY_AMBIGUOUS / ON_IDENTITY_UNKNOWN hook (RFC §11.3).
#[derive(Debug, Clone)]
pub struct IdentityHookResult {
    /// The decision.
    pub action: IdentityAction,
    /// For `resolved`.
    pub identity: Option<Identity>,
    /// For `pending`; empty keeps the resolver's candidates.
    pub candidates: Vec<Identity>,
    /// For `challenge`.
    pub injected_events: Vec<InjectedEvent>,
    /// For `create`; `None` creates one from the sender's address.
    pub new_identity: Option<Identity>,
    /// For `reject`.
    pub reason: Option<String>,
}

impl IdentityHookResult {
    fn with(action: IdentityAction) -> Self {
        Self {
            action,
            identity: None,
            candidates: Vec::new(),
            injected_events: Vec::new(),
            new_identity: None,
            reason: None,
        }
    }

    /// Use this identity.
    pub fn resolved(identity: Identity) -> Self {
        Self {
            identity: Some(identity),
            ..Self::with(IdentityAction::Resolved)
        }
    }

    /// A PENDING participant with these candidates.
    pub fn pending(candidates: Vec<Identity>) -> Self {
        Self {
            candidates,
            ..Self::with(IdentityAction::Pending)
        }
    }

    /// Send a challenge and block the message.
    pub fn challenge(injected_events: Vec<InjectedEvent>) -> Self {
        Self {
            injected_events,
            ..Self::with(IdentityAction::Challenge)
        }
    }

    /// Reject the message.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::with(IdentityAction::Reject)
        }
    }

    /// Create an identity (`None`: from the sender's address) and use it.
    pub fn create(new_identity: Option<Identity>) -> Self {
        Self {
            new_identity,
            ..Self::with(IdentityAction::Create)
        }
    }
}

/// The payload of the identity hooks. The first hook that answers sets
/// `result`; later hooks see it set.
#[derive(Debug, Clone)]
pub struct IdentityHookPayload {
    /// Room.
    pub room_id: RoomId,
    /// Channel the message arrived on.
    pub channel_id: ChannelId,
    /// Its type.
    pub channel_type: ChannelType,
    /// The sender's address.
    pub address: String,
    /// AMBIGUOUS or UNKNOWN.
    pub status: IdentificationStatus,
    /// The resolver's candidates.
    pub candidates: Vec<Identity>,
    /// The resolver's metadata.
    pub metadata: Map,
    /// The inbound message.
    pub message: InboundMessage,
    /// The answer, once a hook gave one.
    pub result: Option<IdentityHookResult>,
}

/// A typed identity hook wrapped as a sync hook.
struct IdentityHookFn<F>(F);

#[async_trait]
impl<F, Fut> SyncHook for IdentityHookFn<F>
where
    F: Fn(IdentityHookPayload, HookInput) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<IdentityHookResult, HookError>> + Send + 'static,
{
    async fn call(&self, input: HookInput) -> std::result::Result<HookResult, HookError> {
        let HookPayload::Identity(p) = &input.payload else {
            return Ok(HookResult::allow());
        };
        if p.result.is_some() {
            return Ok(HookResult::allow());
        }
        let mut answered = (**p).clone();
        answered.result = Some((self.0)((**p).clone(), input.clone()).await?);
        Ok(HookResult::modify(HookPayload::Identity(Box::new(
            answered,
        ))))
    }
}

impl HookRegistration {
    /// An ON_IDENTITY_AMBIGUOUS or ON_IDENTITY_UNKNOWN hook with a typed
    /// answer. It runs through the hook engine (priority, timeout, panic
    /// containment); a failing hook leaves the question to the next one.
    pub fn identity<F, Fut>(trigger: HookTrigger, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(IdentityHookPayload, HookInput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<IdentityHookResult, HookError>> + Send + 'static,
    {
        Self::sync(trigger, name, IdentityHookFn(f))
    }
}

/// The channel an identity payload speaks for, for hook filters.
pub(crate) fn identity_payload_channel(
    p: &HookPayload,
) -> Option<(&ChannelId, &ChannelType, roomkit_model::ChannelDirection)> {
    match p {
        HookPayload::Identity(i) => Some((
            &i.channel_id,
            &i.channel_type,
            roomkit_model::ChannelDirection::Inbound,
        )),
        _ => None,
    }
}

/// What step 5 decided for one message.
enum Decision {
    /// Identified; `by` names what confirmed it.
    Identified { identity: Identity, by: String },
    /// A participant in this state with these candidates.
    Unresolved {
        status: IdentificationStatus,
        candidates: Vec<IdentityId>,
    },
    /// Deliver the challenge, block the message.
    Challenge {
        hook: String,
        events: Vec<InjectedEvent>,
    },
    /// Block the message.
    Reject {
        hook: String,
        reason: Option<String>,
    },
}

/// A delivery-status callback from a provider (RFC §9.2 ON_DELIVERY_STATUS).
#[derive(Debug, Clone, Default)]
pub struct DeliveryStatusUpdate {
    /// The provider's id of the sent message.
    pub provider_message_id: Option<String>,
    /// The event, when the callback names it.
    pub event_id: Option<EventId>,
    /// The channel that sent it, when known.
    pub channel_id: Option<ChannelId>,
    /// The RFC status this maps to (`failed` also for undelivered).
    pub status: Option<DeliveryStatus>,
    /// The provider's own word (`delivered`, `undelivered`, `read`, ...).
    pub provider_status: String,
    /// Failure details for failed deliveries.
    pub error: Option<DeliveryError>,
    /// The raw callback.
    pub raw: Map,
}

impl RoomKit {
    /// RFC §10.1 step 5. Returns a finished result when the message was
    /// blocked by a challenge or a rejection; otherwise attributes the event
    /// to its participant (or leaves that to the commit pass) and returns
    /// `None`.
    pub(crate) async fn identity_step(
        &self,
        channel: &Arc<dyn Channel>,
        message: &InboundMessage,
        ctx: &Arc<RoomContext>,
        event: &mut RoomEvent,
        deadline: Instant,
    ) -> Result<Option<InboundResult>> {
        let settings = &self.inner.identity;
        let Some(resolver) = settings.resolver.clone() else {
            return Ok(None);
        };
        let channel_type = channel.channel_type();
        let address = message.sender_id.clone();
        // §11.6 case 1, §11.4 filtering, and senders without an address.
        if channel.sender_is_participant()
            || address.is_empty()
            || settings
                .channel_types
                .as_ref()
                .is_some_and(|t| !t.contains(&channel_type))
        {
            return Ok(None);
        }
        let room_id = event.room_id.clone();
        let Some(binding) = ctx.binding(channel.id()).cloned() else {
            // The commit pass reports the missing binding.
            return Ok(None);
        };
        // §11.6 case 2: the room has already identified this sender.
        let store = &self.inner.store;
        let known = match &event.source.participant_id {
            Some(pid) => store.get_participant(&room_id, pid).await?,
            None => {
                store
                    .find_participant_by_address(&room_id, &channel_type, &address)
                    .await?
            }
        };
        if known
            .as_ref()
            .is_some_and(|p| p.identification == IdentificationStatus::Identified)
        {
            tracing::debug!(target: "roomkit.identity", room_id = %room_id, channel_id = %channel.id(), "sender already identified; resolution skipped");
            return Ok(None);
        }

        let span = self.span(
            crate::telemetry::SpanName::IdentityResolve,
            &[
                (crate::telemetry::attr::ROOM_ID, room_id.as_str().into()),
                (
                    crate::telemetry::attr::CHANNEL_ID,
                    channel.id().as_str().into(),
                ),
            ],
        );
        let started = Instant::now();
        let resolved = crate::telemetry::timed(
            span.clone(),
            tokio::time::timeout(settings.timeout, resolver.resolve(message, ctx)),
        )
        .await;
        if !span.is_disabled() {
            let outcome = match &resolved {
                Err(_) => "timeout".to_owned(),
                Ok(Err(_)) => "error".to_owned(),
                Ok(Ok(r)) => format!("{:?}", r.status).to_lowercase(),
            };
            span.record(crate::telemetry::attr::OUTCOME, outcome.as_str());
        }
        drop(span);
        let result = match resolved {
            Err(_) => {
                tracing::warn!(target: "roomkit.identity", room_id = %room_id, channel_id = %channel.id(), timeout_ms = settings.timeout.as_millis() as u64, "identity resolver timed out; treated as unknown");
                self.emit(FrameworkEvent::IdentityTimeout {
                    room_id: room_id.clone(),
                    address: address.clone(),
                });
                return Ok(None);
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "roomkit.identity", room_id = %room_id, channel_id = %channel.id(), error = %e, "identity resolver failed; treated as unknown");
                return Ok(None);
            }
            Ok(Ok(r)) => r,
        };
        tracing::debug!(target: "roomkit.identity", room_id = %room_id, channel_id = %channel.id(), status = ?result.status, latency_ms = started.elapsed().as_secs_f64() * 1000.0, "identity resolved");

        let decision = match result.status {
            IdentificationStatus::Identified => match result.identity {
                Some(identity) => Decision::Identified {
                    identity,
                    by: "auto".into(),
                },
                None => {
                    self.ask_hooks(
                        HookTrigger::OnIdentityUnknown,
                        ctx,
                        &binding,
                        message,
                        IdentityResult::unknown(),
                    )
                    .await?
                }
            },
            IdentificationStatus::Ambiguous => {
                self.ask_hooks(
                    HookTrigger::OnIdentityAmbiguous,
                    ctx,
                    &binding,
                    message,
                    result,
                )
                .await?
            }
            IdentificationStatus::Unknown => {
                self.ask_hooks(
                    HookTrigger::OnIdentityUnknown,
                    ctx,
                    &binding,
                    message,
                    result,
                )
                .await?
            }
            IdentificationStatus::Rejected => Decision::Reject {
                hook: "identity_resolver".into(),
                reason: None,
            },
            status => Decision::Unresolved {
                status,
                candidates: result.candidates.iter().map(|i| i.id.clone()).collect(),
            },
        };
        self.apply_decision(decision, &binding, &address, event, deadline)
            .await
    }

    /// Fires an identity hook chain and turns its answer into a decision.
    /// Without an answer, AMBIGUOUS leaves an AMBIGUOUS participant with the
    /// candidates and UNKNOWN an UNKNOWN one.
    async fn ask_hooks(
        &self,
        trigger: HookTrigger,
        ctx: &Arc<RoomContext>,
        binding: &ChannelBinding,
        message: &InboundMessage,
        result: IdentityResult,
    ) -> Result<Decision> {
        let room_id = ctx.room.id.clone();
        let candidate_ids: Vec<IdentityId> =
            result.candidates.iter().map(|i| i.id.clone()).collect();
        let fallback = Decision::Unresolved {
            status: if trigger == HookTrigger::OnIdentityAmbiguous {
                IdentificationStatus::Ambiguous
            } else {
                IdentificationStatus::Unknown
            },
            candidates: candidate_ids.clone(),
        };
        if !self.inner.hooks.has_hooks(trigger, &room_id) {
            return Ok(fallback);
        }
        let payload = IdentityHookPayload {
            room_id: room_id.clone(),
            channel_id: binding.channel_id.clone(),
            channel_type: binding.channel_type.clone(),
            address: message.sender_id.clone(),
            status: result.status,
            candidates: result.candidates,
            metadata: result.metadata,
            message: message.clone(),
            result: None,
        };
        let outcome = self
            .inner
            .hooks
            .run_sync(
                self,
                trigger,
                Some(&room_id),
                HookPayload::Identity(Box::new(payload)),
                Some(ctx.clone()),
                None,
            )
            .await;
        let Ok(outcome) = outcome else {
            return Ok(fallback);
        };
        let answered_by = outcome
            .allowed
            .iter()
            .rev()
            .find(|(_, r)| r.action == crate::hooks::HookAction::Modify)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| trigger.to_string());
        if let Some((name, r)) = outcome.blocked {
            return Ok(Decision::Reject {
                hook: name,
                reason: r.reason,
            });
        }
        let HookPayload::Identity(p) = outcome.payload else {
            return Ok(fallback);
        };
        let Some(answer) = p.result else {
            return Ok(fallback);
        };
        Ok(match answer.action {
            IdentityAction::Resolved => match answer.identity {
                Some(identity) => Decision::Identified {
                    identity,
                    by: answered_by,
                },
                None => fallback,
            },
            IdentityAction::Pending => Decision::Unresolved {
                status: IdentificationStatus::Pending,
                candidates: if answer.candidates.is_empty() {
                    candidate_ids
                } else {
                    answer.candidates.iter().map(|i| i.id.clone()).collect()
                },
            },
            IdentityAction::Challenge => Decision::Challenge {
                hook: answered_by,
                events: answer.injected_events,
            },
            IdentityAction::Reject => Decision::Reject {
                hook: answered_by,
                reason: answer.reason,
            },
            IdentityAction::Create => {
                let identity = self
                    .create_hook_identity(answer.new_identity, binding, &message.sender_id, ctx)
                    .await?;
                Decision::Identified {
                    identity,
                    by: answered_by,
                }
            }
        })
    }

    async fn create_hook_identity(
        &self,
        new_identity: Option<Identity>,
        binding: &ChannelBinding,
        address: &str,
        ctx: &RoomContext,
    ) -> Result<Identity> {
        let mut identity = new_identity.unwrap_or_else(|| Identity {
            id: IdentityId::from(""),
            organization_id: None,
            display_name: None,
            channel_addresses: Default::default(),
            external_id: None,
            metadata: Map::new(),
        });
        if identity.id.is_empty() {
            identity.id = IdentityId::from(self.new_id("idn"));
        }
        if identity.organization_id.is_none() {
            identity.organization_id = ctx.room.organization_id.clone();
        }
        let addresses = identity
            .channel_addresses
            .entry(binding.channel_type.clone())
            .or_default();
        if !addresses.iter().any(|a| a == address) {
            addresses.push(address.to_owned());
        }
        let stored = self.inner.store.store_identity(identity).await?;
        tracing::info!(target: "roomkit.identity", identity_id = %stored.id, "identity created by an identity hook");
        Ok(stored)
    }

    /// Writes the participant a decision asks for, under the room lock, and
    /// for a challenge or a rejection stores the message as BLOCKED.
    async fn apply_decision(
        &self,
        decision: Decision,
        binding: &ChannelBinding,
        address: &str,
        event: &mut RoomEvent,
        deadline: Instant,
    ) -> Result<Option<InboundResult>> {
        let room_id = event.room_id.clone();
        let lock = match tokio::time::timeout_at(deadline, self.lock_room(&room_id)).await {
            Ok(l) => l?,
            Err(_) => return Ok(Some(refused(BlockReason::ProcessTimeout))),
        };
        let (status, identity, candidates, by) = match &decision {
            Decision::Identified { identity, by } => (
                IdentificationStatus::Identified,
                Some(identity.clone()),
                None,
                Some(by.clone()),
            ),
            Decision::Unresolved { status, candidates } => (
                *status,
                None,
                (!candidates.is_empty()).then(|| candidates.clone()),
                None,
            ),
            Decision::Challenge { .. } => (IdentificationStatus::ChallengeSent, None, None, None),
            Decision::Reject { .. } => (IdentificationStatus::Rejected, None, None, None),
        };
        let (participant, newly_identified) = self
            .upsert_participant(
                &room_id,
                binding,
                address,
                status,
                identity.as_ref(),
                candidates,
                by,
            )
            .await?;
        event.source.participant_id = Some(participant.id.clone());

        let outcome = match decision {
            Decision::Identified { .. } | Decision::Unresolved { .. } => None,
            Decision::Challenge { hook, events } => {
                let reason = format!("identity challenge sent by {hook}");
                Some(
                    self.store_identity_block(event, &hook, &reason, events)
                        .await?,
                )
            }
            Decision::Reject { hook, reason } => {
                let reason = reason.unwrap_or_else(|| "identity rejected".into());
                Some(
                    self.store_identity_block(event, &hook, &reason, Vec::new())
                        .await?,
                )
            }
        };
        drop(lock);

        if newly_identified && let Some(identity) = identity {
            tracing::info!(target: "roomkit.identity", room_id = %room_id, participant_id = %participant.id, identity_id = %identity.id, "participant identified");
            self.emit(FrameworkEvent::IdentityResolved {
                participant_id: participant.id.clone(),
                identity_id: identity.id.clone(),
            });
            self.spawn_hooks(
                HookTrigger::OnParticipantIdentified,
                &room_id,
                HookPayload::Participant(participant),
            );
        }
        match outcome {
            None => Ok(None),
            Some((result, group)) => {
                group.wait().await;
                Ok(Some(result))
            }
        }
    }

    /// Finds the sender's participant (by address, then by identity, so one
    /// person reached over several channels is one participant) or creates
    /// it, and records the resolution state. Returns whether it became
    /// IDENTIFIED now. The caller holds the room lock.
    #[allow(clippy::too_many_arguments)]
    async fn upsert_participant(
        &self,
        room_id: &RoomId,
        binding: &ChannelBinding,
        address: &str,
        status: IdentificationStatus,
        identity: Option<&Identity>,
        candidates: Option<Vec<IdentityId>>,
        resolved_by: Option<String>,
    ) -> Result<(Participant, bool)> {
        let store = &self.inner.store;
        let mut existing = store
            .find_participant_by_address(room_id, &binding.channel_type, address)
            .await?;
        if existing.is_none()
            && let Some(identity) = identity
        {
            existing = store
                .list_participants(room_id)
                .await?
                .into_iter()
                .find(|p| p.identity_id.as_ref() == Some(&identity.id));
        }
        let (mut p, created) = match existing {
            Some(p) => (p, false),
            None => (
                Participant {
                    id: ParticipantId::from(self.new_id("par")),
                    room_id: room_id.clone(),
                    channel_id: binding.channel_id.clone(),
                    display_name: Some(address.to_owned()),
                    role: Default::default(),
                    status: ParticipantStatus::Active,
                    identification: IdentificationStatus::Unknown,
                    identity_id: None,
                    candidates: None,
                    connected_via: vec![binding.channel_id.clone()],
                    external_id: None,
                    resolved_at: None,
                    resolved_by: None,
                    joined_at: self.now(),
                    metadata: Map::new(),
                    address: Some(address.to_owned()),
                    channel_type: Some(binding.channel_type.clone()),
                },
                true,
            ),
        };
        if !p.connected_via.contains(&binding.channel_id) {
            if p.channel_id != binding.channel_id {
                tracing::warn!(target: "roomkit.identity", room_id = %room_id, participant_id = %p.id, primary_channel = %p.channel_id, channel_id = %binding.channel_id, "participant reached through a channel other than its primary one");
            }
            p.connected_via.push(binding.channel_id.clone());
        }
        let was_identified = p.identification == IdentificationStatus::Identified;
        p.identification = status;
        if let Some(identity) = identity {
            if p.identity_id.as_ref() != Some(&identity.id) || !was_identified {
                p.resolved_at = Some(self.now());
                p.resolved_by = resolved_by;
            }
            p.identity_id = Some(identity.id.clone());
            p.candidates = None;
            if let Some(name) = &identity.display_name
                && p.display_name.as_deref().is_none_or(|d| d == address)
            {
                p.display_name = Some(name.clone());
            }
        } else {
            p.candidates = candidates;
        }
        let newly_identified =
            status == IdentificationStatus::Identified && (!was_identified || created);
        let p = if created {
            store.create_participant(p).await?
        } else {
            store.update_participant(p).await?
        };
        Ok((p, newly_identified))
    }

    /// Stores the message as BLOCKED and the challenge's injected events
    /// after it; returns the result and the group of the challenge's
    /// deliveries. The caller holds the room lock.
    async fn store_identity_block(
        &self,
        event: &mut RoomEvent,
        hook: &str,
        reason: &str,
        injected: Vec<InjectedEvent>,
    ) -> Result<(InboundResult, Arc<JobGroup>)> {
        let store = &self.inner.store;
        let room_id = event.room_id.clone();
        let group = JobGroup::new();
        let Some(room) = store.get_room(&room_id).await? else {
            return Err(RoomKitError::RoomNotFound(room_id));
        };
        if !room.status.accepts_events() {
            self.emit(FrameworkEvent::EventRefused {
                room_id,
                reason: BlockReason::RoomClosed,
            });
            return Ok((refused(BlockReason::RoomClosed), group));
        }
        if let Some(key) = &event.idempotency_key
            && let Some(original) = store.find_event_by_idempotency_key(&room_id, key).await?
        {
            let result = InboundResult {
                event: Some((*original).clone()),
                blocked: true,
                reason: Some(BlockReason::Duplicate),
                delivery_results: Default::default(),
            };
            return Ok((result, group));
        }
        let mut blocked = event.clone();
        blocked.id = EventId::from(self.new_id("evt"));
        blocked.index = room.event_count;
        blocked.created_at = self.now();
        blocked.status = EventStatus::Blocked;
        blocked.blocked_by = Some(hook.to_owned());
        blocked
            .metadata
            .insert("block_reason".into(), reason.into());
        let stored = store.add_event(blocked, None).await?;
        self.publish_stored(&stored);
        tracing::info!(target: "roomkit.identity", room_id = %room_id, event_id = %stored.id, blocked_by = %hook, "message blocked by identity resolution");
        self.emit(FrameworkEvent::EventBlocked {
            room_id: room_id.clone(),
            event_id: stored.id.clone(),
            hook_name: hook.to_owned(),
        });
        let bindings = store.list_bindings(&room_id).await?;
        for (index, inj) in (stored.index + 1..).zip(injected) {
            let mut e = inj.event;
            e.content.validate()?;
            e.id = EventId::from(self.new_id("evt"));
            e.room_id = room_id.clone();
            e.index = index;
            e.chain_depth = 0;
            e.created_at = self.now();
            e.status = EventStatus::Delivered;
            e.source = EventSource::system();
            e.idempotency_key = None;
            e.metadata.insert("injected_by".into(), hook.into());
            e.visibility = match &inj.target_channel_ids {
                Some(t) if !t.is_empty() => Visibility::Channels(t.clone()),
                _ => Visibility::None,
            };
            let injected = store.add_event(e, None).await?;
            self.publish_stored(&injected);
            if let Some(names) = inj.target_channel_ids {
                let targets = self.plan_explicit(&bindings, &names);
                self.enqueue(Job {
                    event: injected,
                    targets,
                    mode: JobMode::Targeted,
                    group: group.clone(),
                    is_root: false,
                    bindings: bindings.clone(),
                });
            }
        }
        let result = InboundResult {
            event: Some((*stored).clone()),
            blocked: true,
            reason: Some(BlockReason::Hook),
            delivery_results: Default::default(),
        };
        Ok((result, group))
    }

    /// Records a provider's delivery-status callback: updates the event's
    /// delivery result for the channel and fires ON_DELIVERY_STATUS. The
    /// event is found by id or by the provider message id a delivery of
    /// this process recorded. Returns the updated event, or `None` when the
    /// callback names nothing known (it is logged and dropped).
    ///
    /// # Errors
    /// Store failures.
    pub async fn record_delivery_status(
        &self,
        update: DeliveryStatusUpdate,
    ) -> Result<Option<Arc<RoomEvent>>> {
        let receipt = update
            .provider_message_id
            .as_deref()
            .and_then(|p| self.inner.resilience.lookup(p));
        let event_id = update
            .event_id
            .clone()
            .or_else(|| receipt.as_ref().map(|r| r.event_id.clone()));
        let Some(event_id) = event_id else {
            tracing::info!(target: "roomkit.core.framework", provider_message_id = ?update.provider_message_id, status = %update.provider_status, "delivery status for an unknown message ignored");
            return Ok(None);
        };
        let Some(event) = self.inner.store.get_event(&event_id).await? else {
            return Ok(None);
        };
        let channel_id = update
            .channel_id
            .clone()
            .or_else(|| receipt.as_ref().map(|r| r.channel_id.clone()))
            .or_else(|| {
                let pmid = update.provider_message_id.as_deref()?;
                event
                    .delivery_results
                    .iter()
                    .find(|(_, r)| r.provider_message_id.as_deref() == Some(pmid))
                    .map(|(c, _)| c.clone())
            });
        let Some(channel_id) = channel_id else {
            return Ok(None);
        };
        let mut updated = event.clone();
        if let Some(status) = update.status {
            let mut result = event
                .delivery_results
                .iter()
                .find(|(c, _)| **c == channel_id)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| DeliveryResult::sent(channel_id.clone(), None));
            result.status = status;
            if result.provider_message_id.is_none() {
                result.provider_message_id = update.provider_message_id.clone();
            }
            result.error = if status == DeliveryStatus::Failed {
                update.error.clone().or_else(|| {
                    Some(DeliveryError {
                        code: update.provider_status.clone(),
                        message: format!("provider reported {}", update.provider_status),
                        retryable: false,
                    })
                })
            } else {
                None
            };
            let mut results = DeliveryResults::new();
            results.insert(channel_id.clone(), result);
            let patch = EventPatch {
                delivery_results: Some(results),
                ..EventPatch::default()
            };
            updated = self.inner.store.update_event(&event.id, &patch).await?;
        }
        tracing::info!(target: "roomkit.core.framework", room_id = %event.room_id, event_id = %event.id, channel_id = %channel_id, status = %update.provider_status, "delivery status recorded");
        let payload = serde_json::json!({
            "room_id": event.room_id.as_str(),
            "event_id": event.id.as_str(),
            "channel_id": channel_id.as_str(),
            "provider_message_id": update.provider_message_id,
            "status": update.status,
            "provider_status": update.provider_status,
            "error": update.error,
            "raw": update.raw,
        });
        self.spawn_hooks(
            HookTrigger::OnDeliveryStatus,
            &event.room_id,
            HookPayload::Json(payload),
        );
        Ok(Some(updated))
    }
}

fn refused(reason: BlockReason) -> InboundResult {
    InboundResult {
        event: None,
        blocked: true,
        reason: Some(reason),
        delivery_results: Default::default(),
    }
}
