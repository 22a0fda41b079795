//! The inbound pipeline (RFC §10.1) and direct injection (§10.5): routing,
//! context, the locked commit pass (steps 6-12), and the direct mutation
//! APIs of §10.3.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use roomkit_model::{
    BlockReason, ChannelBinding, ChannelCategory, ChannelId, ChannelType, DeleteType, EditSource,
    EventContent, EventId, EventSource, EventStatus, EventType, FrameworkEvent, HookTrigger,
    IdentificationStatus, InboundMessage, InboundResult, Map, Participant, ParticipantId,
    ParticipantStatus, RoomEvent, RoomId, RoomStatus, Visibility,
};
use tokio::time::Instant;

use crate::channel::RoomContext;
use crate::error::{Result, RoomKitError, StoreError};
use crate::hooks::{HookPayload, HookResult, InjectedEvent};
use crate::kit::{AttachOptions, CreateRoom, RoomKit};
use crate::lane::{Job, JobGroup, JobMode};
use crate::router::RouteRequest;
use crate::store::{EventPatch, EventQuery, TargetUpdate};
use crate::telemetry::{AttrValue, SpanName, SyncStage, attr, timed};

/// Direct injection of an event into a room (RFC §10.5).
#[derive(Debug, Clone, Default)]
pub struct SendEvent {
    /// Room.
    pub room_id: RoomId,
    /// Source channel (`"system"` for framework events).
    pub channel_id: ChannelId,
    /// Content.
    pub content: Option<EventContent>,
    /// Event type; derived from the content when `None`.
    pub event_type: Option<EventType>,
    /// Sender address (recorded on the participant).
    pub sender_id: Option<String>,
    /// Participant to attribute the event to.
    pub participant_id: Option<ParticipantId>,
    /// Duplicate-prevention key.
    pub idempotency_key: Option<String>,
    /// Correlation reference.
    pub correlation_id: Option<String>,
    /// Metadata.
    pub metadata: Map,
    /// Intelligence channels asked to act.
    pub addressed_to: Option<Vec<ChannelId>>,
    /// Narrower visibility than the source binding's.
    pub visibility: Option<Visibility>,
    /// Provider-specific data.
    pub channel_data: Map,
}

impl SendEvent {
    /// A text event from a channel into a room.
    pub fn text(
        room_id: impl Into<RoomId>,
        channel_id: impl Into<ChannelId>,
        text: impl Into<String>,
    ) -> Self {
        Self {
            room_id: room_id.into(),
            channel_id: channel_id.into(),
            content: Some(EventContent::text(text)),
            ..Self::default()
        }
    }
}

/// Direct replacement of fields of a stored event (RFC §10.3).
#[derive(Debug, Clone, Default)]
pub struct EventUpdate {
    /// New content.
    pub content: Option<EventContent>,
    /// New source.
    pub source: Option<EventSource>,
    /// New metadata.
    pub metadata: Option<Map>,
}

pub(crate) enum PassKind {
    /// An external message or direct injection (depth 0).
    External { sender: Option<String> },
    /// A channel's response produced while broadcasting `parent`.
    Response { parent: Arc<RoomEvent> },
}

pub(crate) struct Pass {
    pub event: RoomEvent,
    pub kind: PassKind,
    pub deadline: Option<Instant>,
    pub group: Arc<JobGroup>,
    /// Channels already served (streamed) that must not get it again.
    pub exclude: Vec<ChannelId>,
    /// Context read before the lock (step 3); its participants and recent
    /// events are reused for the hook chain, room and bindings are re-read.
    pub context: Option<Arc<RoomContext>>,
}

pub(crate) enum PassOutcome {
    /// Nothing stored.
    Refused(BlockReason),
    /// The key was seen before: the original event.
    Duplicate(Arc<RoomEvent>),
    /// Stored, delivered or blocked.
    Stored {
        event: Arc<RoomEvent>,
        blocked: Option<BlockReason>,
    },
}

const CHAIN_DEPTH_LIMIT: &str = "event_chain_depth_limit";

struct Block {
    blocked_by: String,
    reason: BlockReason,
    detail: Option<String>,
    /// The blocking hook's own metadata, kept on the event under `hook`.
    metadata: Map,
}

fn category_lookup(
    bindings: &[ChannelBinding],
) -> impl Fn(&ChannelId) -> Option<ChannelCategory> + '_ {
    move |c| {
        bindings
            .iter()
            .find(|b| &b.channel_id == c)
            .map(|b| b.category)
    }
}

impl RoomKit {
    /// Processes a message from outside (RFC §10.1) and returns once its
    /// delivery set, and the delivery of every response it caused, has run.
    ///
    /// Refusals and blocks are results, not errors. The work runs on its own
    /// task, so dropping the returned future does not abandon a half-done
    /// commit.
    ///
    /// # Errors
    /// [`RoomKitError::ChannelNotRegistered`] (nothing is created or stored),
    /// [`RoomKitError::RoomNotFound`] for an explicit unknown room (D11),
    /// [`RoomKitError::ChannelNotAttached`], [`RoomKitError::Invalid`] for
    /// content that breaks the model's rules, channel and store failures.
    pub async fn process_inbound(&self, message: InboundMessage) -> Result<InboundResult> {
        if self.is_shutting_down() {
            return Err(RoomKitError::ShuttingDown);
        }
        let kit = self.clone();
        // Without telemetry the task is the bare pipeline: no span, and no
        // wrapper the (large) pipeline future would be moved through.
        let task = if self.telemetry_on() {
            let span = self.span(
                SpanName::ProcessInbound,
                &[(attr::CHANNEL_ID, message.channel_id.as_str().into())],
            );
            if let Some(room_id) = &message.room_id {
                crate::telemetry::record(&span, attr::ROOM_ID, room_id.as_str().into());
            }
            self.inner.tracker.spawn(Box::pin(timed(span, async move {
                kit.inbound_inner(message).await
            })))
        } else {
            self.inner
                .tracker
                .spawn(Box::pin(async move { kit.inbound_inner(message).await }))
        };
        task.await
            .map_err(|e| RoomKitError::Internal(format!("inbound task failed: {e}")))?
    }

    /// Injects an event directly (RFC §10.5): the same pipeline as an inbound
    /// message from index assignment on.
    ///
    /// # Errors
    /// As [`RoomKit::process_inbound`].
    pub async fn send_event(&self, request: SendEvent) -> Result<InboundResult> {
        if self.is_shutting_down() {
            return Err(RoomKitError::ShuttingDown);
        }
        let kit = self.clone();
        let task = if self.telemetry_on() {
            let span = self.span(
                SpanName::SendEvent,
                &[
                    (attr::ROOM_ID, request.room_id.as_str().into()),
                    (attr::CHANNEL_ID, request.channel_id.as_str().into()),
                ],
            );
            self.inner.tracker.spawn(Box::pin(timed(span, async move {
                kit.send_inner(request).await
            })))
        } else {
            self.inner
                .tracker
                .spawn(Box::pin(async move { kit.send_inner(request).await }))
        };
        task.await
            .map_err(|e| RoomKitError::Internal(format!("send task failed: {e}")))?
    }

    async fn inbound_inner(&self, message: InboundMessage) -> Result<InboundResult> {
        // Step 1: resolve the channel. Nothing is created for an unknown one.
        let channel = self
            .channel(&message.channel_id)
            .ok_or_else(|| RoomKitError::ChannelNotRegistered(message.channel_id.clone()))?;
        message.content.validate()?;
        let deadline = Instant::now() + self.inner.config.process_timeout;

        // Telemetry is looked up once for the pass; when it is off no stage
        // below starts a span, reads a clock or asks for the current span.
        let on = self.telemetry_on();

        // Step 2: route.
        let route = self.span_if(
            on,
            SpanName::RouteRoom,
            &[(attr::CHANNEL_ID, channel.id().as_str().into())],
        );
        let routing = async {
            match &message.room_id {
                Some(id) => Ok::<_, RoomKitError>(self.require_room(id).await?.id),
                None => {
                    self.route_or_create(&channel.id().clone(), &channel.channel_type(), &message)
                        .await
                }
            }
        };
        // Large stage futures are awaited in place when telemetry is off
        // rather than moved through a wrapper.
        let room_id = if on {
            timed(route.clone(), routing).await?
        } else {
            routing.await?
        };
        crate::telemetry::record(&route, attr::ROOM_ID, room_id.as_str().into());
        drop(route);
        if on {
            let root = tracing::Span::current();
            crate::telemetry::record(&root, attr::ROOM_ID, room_id.as_str().into());
        }
        let room_attrs = [
            (attr::ROOM_ID, AttrValue::from(room_id.as_str())),
            (attr::CHANNEL_ID, channel.id().as_str().into()),
        ];

        // Steps 3-4: context, then the channel's conversion, both bounded.
        let context = self.build_context(&room_id, None);
        let context = if on {
            tokio::time::timeout_at(
                deadline,
                timed(self.span(SpanName::BuildContext, &room_attrs), context),
            )
            .await
        } else {
            tokio::time::timeout_at(deadline, context).await
        };
        let ctx = match context {
            Ok(c) => Arc::new(c?),
            Err(_) => return Ok(refused(BlockReason::ProcessTimeout)),
        };
        let converted = timed(
            self.span_if(on, SpanName::HandleInbound, &room_attrs),
            AssertUnwindSafe(channel.handle_inbound(&message, ctx.as_ref())).catch_unwind(),
        );
        let mut event = match tokio::time::timeout_at(deadline, converted).await {
            Err(_) => return Ok(refused(BlockReason::ProcessTimeout)),
            Ok(Err(panic)) => {
                return Err(RoomKitError::Channel {
                    channel_id: channel.id().clone(),
                    source: crate::error::ChannelError::InvalidInbound(format!(
                        "handle_inbound panicked: {}",
                        crate::hooks::panic_message(&panic)
                    )),
                });
            }
            Ok(Ok(Err(e))) => {
                return Err(RoomKitError::Channel {
                    channel_id: channel.id().clone(),
                    source: e,
                });
            }
            Ok(Ok(Ok(e))) => e,
        };
        event.content.validate()?;
        event.room_id = room_id;
        event.source.channel_id = channel.id().clone();
        event.source.channel_type = channel.channel_type();
        if event.source.provider.is_none() {
            event.source.provider = channel.provider_name().map(str::to_owned);
        }
        if event.idempotency_key.is_none() {
            event.idempotency_key = message.idempotency_key.clone();
        }
        normalize_type(&mut event);
        event.chain_depth = 0;
        event.parent_event_id = None;
        // Step 5: identity resolution (RFC §11).
        if let Some(done) = self
            .identity_step(&channel, &message, &ctx, &mut event, deadline)
            .await?
        {
            return Ok(done);
        }
        let pass = Pass {
            event,
            kind: PassKind::External {
                sender: Some(message.sender_id.clone()),
            },
            deadline: Some(deadline),
            group: JobGroup::new(),
            exclude: Vec::new(),
            context: Some(ctx),
        };
        self.run_pass(pass).await
    }

    async fn send_inner(&self, req: SendEvent) -> Result<InboundResult> {
        let Some(content) = req.content else {
            return Err(RoomKitError::Invalid("content is required".into()));
        };
        content.validate()?;
        self.require_room(&req.room_id).await?;
        let mut source = if req.channel_id.as_str() == roomkit_model::SYSTEM_CHANNEL_ID {
            EventSource::system()
        } else {
            let channel = self
                .channel(&req.channel_id)
                .ok_or_else(|| RoomKitError::ChannelNotRegistered(req.channel_id.clone()))?;
            let mut s = EventSource::channel(
                req.channel_id.clone(),
                channel.channel_type(),
                roomkit_model::ChannelDirection::Inbound,
            );
            s.provider = channel.provider_name().map(str::to_owned);
            s
        };
        source.external_id = req.sender_id.clone();
        source.participant_id = req.participant_id.clone();
        let mut event = RoomEvent::draft(source, content);
        if let Some(t) = req.event_type {
            event.event_type = t;
        }
        normalize_type(&mut event);
        event.room_id = req.room_id.clone();
        event.idempotency_key = req.idempotency_key;
        event.correlation_id = req.correlation_id;
        event.metadata = req.metadata;
        event.addressed_to = req.addressed_to;
        event.visibility = req.visibility.unwrap_or_default();
        event.channel_data = req.channel_data;
        if event.event_type.is_ephemeral() {
            // Typing and presence are published live and never stored (D6).
            self.publish_ephemeral(req.room_id, event.clone());
            return Ok(InboundResult {
                event: Some(event),
                blocked: false,
                reason: None,
                delivery_results: Default::default(),
            });
        }
        let deadline = Instant::now() + self.inner.config.process_timeout;
        let pass = Pass {
            event,
            kind: PassKind::External {
                sender: req.sender_id,
            },
            deadline: Some(deadline),
            group: JobGroup::new(),
            exclude: Vec::new(),
            context: None,
        };
        self.run_pass(pass).await
    }

    /// Runs a pass and waits for its delivery group (RFC §10.1 step 18).
    async fn run_pass(&self, pass: Pass) -> Result<InboundResult> {
        let group = pass.group.clone();
        // Boxed: the commit pass is a large state machine; keeping it off the
        // caller's future avoids copying it around.
        let outcome = Box::pin(self.commit_pass(pass)).await?;
        let root = if self.telemetry_on() {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        };
        if !root.is_disabled() {
            let (event_id, result) = match &outcome {
                PassOutcome::Refused(_) => (None, "refused"),
                PassOutcome::Duplicate(e) => (Some(e.id.as_str()), "duplicate"),
                PassOutcome::Stored { event, blocked } => (
                    Some(event.id.as_str()),
                    if blocked.is_some() {
                        "blocked"
                    } else {
                        "delivered"
                    },
                ),
            };
            if let Some(id) = event_id {
                root.record(attr::EVENT_ID, id);
            }
            root.record(attr::OUTCOME, result);
        }
        group.wait().await;
        Ok(match outcome {
            PassOutcome::Refused(reason) => refused(reason),
            PassOutcome::Duplicate(original) => InboundResult {
                event: Some((*original).clone()),
                blocked: true,
                reason: Some(BlockReason::Duplicate),
                delivery_results: Default::default(),
            },
            PassOutcome::Stored { event, blocked } => {
                let delivery_results = group.root_results();
                let mut event = (*event).clone();
                if !delivery_results.is_empty() {
                    event.delivery_results = delivery_results.clone();
                }
                InboundResult {
                    event: Some(event),
                    blocked: blocked.is_some(),
                    reason: blocked,
                    delivery_results,
                }
            }
        })
    }

    /// Step 2 without a room id: ask the router, else create a room, attach
    /// the channel and let ON_ROOM_CREATED hooks finish first (D3).
    async fn route_or_create(
        &self,
        channel_id: &ChannelId,
        channel_type: &ChannelType,
        message: &InboundMessage,
    ) -> Result<RoomId> {
        let request = RouteRequest {
            channel_id,
            channel_type,
            sender_id: &message.sender_id,
            metadata: &message.metadata,
        };
        if let Some(room) = self
            .inner
            .router
            .route(request, self.inner.store.as_ref())
            .await?
        {
            return Ok(room.id);
        }
        let room = self.create_room_inner(CreateRoom::default()).await?;
        self.attach_channel(&room.id, channel_id, AttachOptions::default())
            .await?;
        let room = self.require_room(&room.id).await?;
        self.inner
            .hooks
            .run_async_now(
                self,
                HookTrigger::OnRoomCreated,
                Some(&room.id),
                HookPayload::Room(room.clone()),
            )
            .await;
        Ok(room.id)
    }

    /// Steps 6-12 of RFC §10.1 under the room lock, for inbound messages,
    /// direct injections and response events alike.
    pub(crate) async fn commit_pass(&self, pass: Pass) -> Result<PassOutcome> {
        let Pass {
            mut event,
            kind,
            deadline,
            group,
            exclude,
            context,
        } = pass;
        let room_id = event.room_id.clone();
        let store = self.inner.store.clone();
        let on = self.telemetry_on();
        // Channel responses reach this point unchecked: hold them to the
        // content rules inbound payloads pass (RFC §5.3, §17.1).
        event.content.validate()?;

        // Step 6: lock, then re-read the status under it.
        let room_attr = [(attr::ROOM_ID, AttrValue::from(room_id.as_str()))];
        let locking = timed(
            self.span_if(on, SpanName::LockRoom, &room_attr),
            self.lock_room(&room_id),
        );
        let lock = match deadline {
            Some(d) => match tokio::time::timeout_at(d, locking).await {
                Ok(l) => l?,
                Err(_) => return Ok(self.refuse(&room_id, BlockReason::ProcessTimeout)),
            },
            None => locking.await?,
        };
        let Some(room) = store.get_room(&room_id).await? else {
            return Err(RoomKitError::RoomNotFound(room_id));
        };
        if !room.status.accepts_events() {
            tracing::info!(target: "roomkit.core.framework", room_id = %room_id, status = ?room.status, "event refused: room does not accept events");
            return Ok(self.refuse(&room_id, BlockReason::RoomClosed));
        }

        // Step 7: idempotency, per room (D2).
        if let Some(key) = &event.idempotency_key
            && let Some(original) = timed(
                self.span_if(on, SpanName::IdempotencyCheck, &room_attr),
                store.find_event_by_idempotency_key(&room_id, key),
            )
            .await?
        {
            tracing::debug!(target: "roomkit.core.framework", room_id = %room_id, key = %key, "duplicate idempotency key");
            return Ok(PassOutcome::Duplicate(original));
        }

        let bindings = store.list_bindings(&room_id).await?;
        let is_system = event.source.channel_id.as_str() == roomkit_model::SYSTEM_CHANNEL_ID;
        let source_binding = bindings
            .iter()
            .find(|b| b.channel_id == event.source.channel_id)
            .cloned();
        if source_binding.is_none() && !is_system {
            match &kind {
                PassKind::External { .. } => {
                    return Err(RoomKitError::ChannelNotAttached {
                        room_id,
                        channel_id: event.source.channel_id.clone(),
                    });
                }
                PassKind::Response { .. } => {
                    tracing::warn!(target: "roomkit.core.framework", room_id = %room_id, channel_id = %event.source.channel_id, "response from a channel no longer attached was dropped");
                    return Ok(self.refuse(&room_id, BlockReason::Permission));
                }
            }
        }

        // Lazy participant record for an external sender (D18). A record
        // created here is removed again if the pass ends up storing nothing.
        let mut created_participant: Option<ParticipantId> = None;
        if let (
            PassKind::External {
                sender: Some(address),
            },
            Some(binding),
        ) = (&kind, &source_binding)
            && event.source.participant_id.is_none()
            && !address.is_empty()
        {
            let (p, created) = self
                .get_or_create_participant(&room_id, binding, address)
                .await?;
            if created {
                created_participant = Some(p.id.clone());
            }
            event.source.participant_id = Some(p.id);
        }

        // EDIT/DELETE validation (§10.3); nothing is stored on failure (D12).
        let target_update = match self.validate_mutation(&event, is_system).await? {
            Ok(t) => t,
            Err(reason) => {
                return Ok(self
                    .refuse_discarding(&room_id, reason, created_participant.as_ref())
                    .await);
            }
        };

        // Step 8: identity and index.
        event.id = EventId::from(self.new_id("evt"));
        event.index = room.event_count;
        event.created_at = self.now();
        if let PassKind::Response { parent } = &kind {
            event.chain_depth = parent.chain_depth + 1;
            event.parent_event_id = Some(parent.id.clone());
            if event.correlation_id.is_none() {
                event.correlation_id = parent.correlation_id.clone();
            }
        }
        // Visibility is stamped at commit: the source binding's rule
        // narrowed by the event's own (see docs/decisions.md).
        if let Some(b) = &source_binding {
            event.visibility = b
                .visibility
                .intersect(&event.visibility, category_lookup(&bindings));
        }

        let mut block: Option<Block> = None;
        let mut hook_results: Vec<(String, HookResult)> = Vec::new();
        if matches!(kind, PassKind::Response { .. })
            && event.chain_depth >= self.inner.config.max_chain_depth
        {
            // §8.3: stored for audit, not broadcast, no hooks.
            tracing::warn!(target: "roomkit.core.framework", room_id = %room_id, channel_id = %event.source.channel_id, chain_depth = event.chain_depth, "response blocked by the chain-depth limit");
            self.emit(FrameworkEvent::ChainDepthExceeded {
                room_id: room_id.clone(),
                channel_id: event.source.channel_id.clone(),
                depth: event.chain_depth,
            });
            block = Some(Block {
                blocked_by: CHAIN_DEPTH_LIMIT.into(),
                reason: BlockReason::ChainDepth,
                detail: None,
                metadata: Map::new(),
            });
        } else if self
            .inner
            .hooks
            .has_hooks(HookTrigger::BeforeBroadcast, &room_id)
        {
            // Step 9: BEFORE_BROADCAST in priority order.
            let (participants, recent_events) = match &context {
                Some(c) => (c.participants.clone(), c.recent_events.clone()),
                None => (
                    store.list_participants(&room_id).await?,
                    store
                        .list_events(
                            &room_id,
                            &EventQuery {
                                last: Some(self.inner.config.context_events),
                                ..EventQuery::default()
                            },
                        )
                        .await?,
                ),
            };
            let ctx = Arc::new(RoomContext {
                room: room.clone(),
                bindings: bindings.clone(),
                participants,
                recent_events,
            });
            let original = Arc::new(event);
            let outcome = match self
                .inner
                .hooks
                .run_sync(
                    self,
                    HookTrigger::BeforeBroadcast,
                    Some(&room_id),
                    HookPayload::Event(original.clone()),
                    Some(ctx),
                    deadline,
                )
                .await
            {
                Ok(o) => o,
                Err(()) => {
                    return Ok(self
                        .refuse_discarding(
                            &room_id,
                            BlockReason::ProcessTimeout,
                            created_participant.as_ref(),
                        )
                        .await);
                }
            };
            event = match outcome.payload {
                HookPayload::Event(modified) if !Arc::ptr_eq(&modified, &original) => {
                    adopt_modification(&original, &modified)
                }
                _ => Arc::try_unwrap(original).unwrap_or_else(|a| (*a).clone()),
            };
            hook_results = outcome.allowed;
            if let Some((name, result)) = outcome.blocked {
                block = Some(Block {
                    blocked_by: name.clone(),
                    reason: BlockReason::Hook,
                    detail: result.reason.clone(),
                    metadata: result.metadata.clone(),
                });
                hook_results.push((name, result));
            }
        }

        // Step 11: the source must be able to write (read-only wins, D15).
        if block.is_none()
            && let Some(b) = &source_binding
        {
            let stage = SyncStage::enter(self.span_if(
                on,
                SpanName::PermissionCheck,
                &[
                    (attr::ROOM_ID, room_id.as_str().into()),
                    (attr::CHANNEL_ID, b.channel_id.as_str().into()),
                ],
            ));
            if !b.access.can_write() {
                block = Some(Block {
                    blocked_by: "source_read_only".into(),
                    reason: BlockReason::Permission,
                    detail: None,
                    metadata: Map::new(),
                });
            } else if b.muted {
                block = Some(Block {
                    blocked_by: "source_muted".into(),
                    reason: BlockReason::Permission,
                    detail: None,
                    metadata: Map::new(),
                });
            }
            let verdict = block.as_ref().map_or("allowed", |b| b.blocked_by.as_str());
            stage.record(attr::OUTCOME, verdict.into());
        }

        // The pre-commit phase ends here; past the deadline nothing is written.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(self
                .refuse_discarding(
                    &room_id,
                    BlockReason::ProcessTimeout,
                    created_participant.as_ref(),
                )
                .await);
        }

        let mut next_index = event.index + 1;
        let mut mutated_target: Option<(EventType, EventId)> = None;
        let store_span = self.span_if(
            on,
            SpanName::StoreEvent,
            &[
                (attr::ROOM_ID, room_id.as_str().into()),
                (attr::EVENT_ID, event.id.as_str().into()),
                (attr::CHANNEL_ID, event.source.channel_id.as_str().into()),
                (
                    attr::OUTCOME,
                    if block.is_some() {
                        "blocked"
                    } else {
                        "delivered"
                    }
                    .into(),
                ),
            ],
        );
        let stored = match &block {
            Some(b) => {
                event.status = EventStatus::Blocked;
                event.blocked_by = Some(b.blocked_by.clone());
                if let Some(detail) = &b.detail {
                    event
                        .metadata
                        .insert("block_reason".into(), detail.clone().into());
                }
                if !b.metadata.is_empty() {
                    event
                        .metadata
                        .insert("hook".into(), b.metadata.clone().into());
                }
                let stored = timed(store_span, store.add_event(event, None)).await?;
                tracing::info!(target: "roomkit.core.framework", room_id = %room_id, event_id = %stored.id, index = stored.index, blocked_by = %b.blocked_by, "event stored as blocked");
                self.emit(FrameworkEvent::EventBlocked {
                    room_id: room_id.clone(),
                    event_id: stored.id.clone(),
                    hook_name: b.blocked_by.clone(),
                });
                stored
            }
            None => {
                // Step 12: the commit point.
                event.status = EventStatus::Delivered;
                if let Some(t) = &target_update {
                    mutated_target = Some((event.event_type, t.event_id.clone()));
                }
                let stored = timed(store_span, store.add_event(event, target_update)).await?;
                tracing::info!(target: "roomkit.core.framework", room_id = %room_id, event_id = %stored.id, index = stored.index, channel_id = %stored.source.channel_id, chain_depth = stored.chain_depth, "event committed");
                if room.status == RoomStatus::Paused {
                    // D9: an accepted event resumes a paused room.
                    let resumed = self.apply_status(&room, RoomStatus::Active).await?;
                    self.after_status_change(&resumed, RoomStatus::Paused);
                }
                stored
            }
        };
        self.publish_stored(&stored);

        // Injected events of every hook that ran, after the event (D7).
        let mut injected_jobs = Vec::new();
        for (hook_name, result) in hook_results.iter_mut() {
            for inj in std::mem::take(&mut result.injected_events) {
                if let Some(job) = self
                    .commit_injected(
                        &room_id,
                        inj,
                        hook_name,
                        stored.chain_depth,
                        next_index,
                        &bindings,
                        &group,
                    )
                    .await?
                {
                    injected_jobs.push(job);
                }
                next_index += 1;
            }
        }

        // Plan the broadcast under the lock and append it to the lane.
        if block.is_none() {
            let targets = {
                let stage = SyncStage::enter(self.span_if(
                    on,
                    SpanName::PlanBroadcast,
                    &[
                        (attr::ROOM_ID, room_id.as_str().into()),
                        (attr::EVENT_ID, stored.id.as_str().into()),
                    ],
                ));
                let targets = self.plan_targets(&stored, &bindings, &exclude);
                stage.record(attr::TARGETS, (targets.len() as u64).into());
                targets
            };
            self.enqueue(Job {
                event: stored.clone(),
                targets,
                mode: JobMode::Broadcast,
                group: group.clone(),
                is_root: matches!(kind, PassKind::External { .. }),
                bindings: bindings.clone(),
            });
        }
        for job in injected_jobs {
            self.enqueue(job);
        }
        drop(lock);

        // After the lock: mutation triggers and hook side effects.
        if let Some((ty, target_id)) = mutated_target
            && let Ok(Some(target)) = store.get_event(&target_id).await
        {
            let trigger = if ty == EventType::Delete {
                HookTrigger::OnEventDeleted
            } else {
                HookTrigger::OnEventUpdated
            };
            self.spawn_hooks(trigger, &room_id, HookPayload::Event(target));
        }
        for (name, result) in hook_results {
            self.persist_side_effects(&room_id, result.tasks, result.observations, &name, None)
                .await;
            self.apply_metadata_updates(&room_id, result.metadata_updates)
                .await;
        }
        Ok(PassOutcome::Stored {
            event: stored,
            blocked: block.map(|b| b.reason),
        })
    }

    fn refuse(&self, room_id: &RoomId, reason: BlockReason) -> PassOutcome {
        self.emit(FrameworkEvent::EventRefused {
            room_id: room_id.clone(),
            reason,
        });
        PassOutcome::Refused(reason)
    }

    /// Refuses a pass that may have created its sender's participant record
    /// on the way: the record is removed again, so a refused event leaves
    /// no durable trace (RFC §13.6 for process_timeout, D12 for rejected
    /// EDIT/DELETE). The caller holds the room lock.
    async fn refuse_discarding(
        &self,
        room_id: &RoomId,
        reason: BlockReason,
        created_participant: Option<&ParticipantId>,
    ) -> PassOutcome {
        if let Some(id) = created_participant
            && let Err(e) = self.inner.store.delete_participant(room_id, id).await
        {
            tracing::error!(target: "roomkit.store", room_id = %room_id, participant_id = %id, error = %e, "removing the participant of a refused event failed");
        }
        self.refuse(room_id, reason)
    }

    /// Stores one injected event (D7): next index, DELIVERED, source
    /// `system`, no BEFORE_BROADCAST, delivered only to its targets.
    #[allow(clippy::too_many_arguments)]
    async fn commit_injected(
        &self,
        room_id: &RoomId,
        inj: InjectedEvent,
        hook_name: &str,
        chain_depth: u32,
        index: u64,
        bindings: &[ChannelBinding],
        group: &Arc<JobGroup>,
    ) -> Result<Option<Job>> {
        let mut event = inj.event;
        event.content.validate()?;
        event.id = EventId::from(self.new_id("evt"));
        event.room_id = room_id.clone();
        event.index = index;
        event.chain_depth = chain_depth;
        event.created_at = self.now();
        event.status = EventStatus::Delivered;
        event.source = EventSource::system();
        event.idempotency_key = None;
        event
            .metadata
            .insert("injected_by".into(), hook_name.into());
        event.visibility = match &inj.target_channel_ids {
            Some(t) if !t.is_empty() => Visibility::Channels(t.clone()),
            _ => Visibility::None,
        };
        normalize_type(&mut event);
        let stored = self.inner.store.add_event(event, None).await?;
        self.publish_stored(&stored);
        let Some(targets) = inj.target_channel_ids else {
            return Ok(None);
        };
        let targets = self.plan_explicit(bindings, &targets);
        Ok(Some(Job {
            event: stored,
            targets,
            mode: JobMode::Targeted,
            group: group.clone(),
            is_root: false,
            bindings: bindings.to_vec(),
        }))
    }

    /// Stores a framework event (lifecycle marker) and hands it to readable
    /// channels. The caller holds the room lock.
    pub(crate) async fn commit_system_event(
        &self,
        room: &roomkit_model::Room,
        mut event: RoomEvent,
    ) -> Result<Arc<RoomEvent>> {
        let store = &self.inner.store;
        // Re-read the counters: the caller's copy may predate its own writes.
        let room = store
            .get_room(&room.id)
            .await?
            .unwrap_or_else(|| room.clone());
        event.id = EventId::from(self.new_id("evt"));
        event.room_id = room.id.clone();
        event.index = room.event_count;
        event.created_at = self.now();
        event.status = EventStatus::Delivered;
        let stored = store.add_event(event, None).await?;
        self.publish_stored(&stored);
        let bindings = store.list_bindings(&room.id).await?;
        let targets = self.plan_lifecycle(&bindings);
        if !targets.is_empty() {
            self.enqueue(Job {
                event: stored.clone(),
                targets,
                mode: JobMode::OnEventOnly,
                group: JobGroup::new(),
                is_root: false,
                bindings,
            });
        }
        Ok(stored)
    }

    /// Finds or creates the participant of a sender address (D18); the flag
    /// says whether it was created now. An existing record is never
    /// re-homed; the channel is recorded in `connected_via` (RFC §5.5).
    async fn get_or_create_participant(
        &self,
        room_id: &RoomId,
        binding: &ChannelBinding,
        address: &str,
    ) -> Result<(Participant, bool)> {
        let store = &self.inner.store;
        if let Some(mut p) = store
            .find_participant_by_address(room_id, &binding.channel_type, address)
            .await?
        {
            if !p.connected_via.contains(&binding.channel_id) {
                if p.channel_id != binding.channel_id {
                    tracing::warn!(target: "roomkit.identity", room_id = %room_id, participant_id = %p.id, primary_channel = %p.channel_id, channel_id = %binding.channel_id, "participant reached through a channel other than its primary one");
                }
                p.connected_via.push(binding.channel_id.clone());
                p = store.update_participant(p).await?;
            }
            return Ok((p, false));
        }
        let p = Participant {
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
        };
        match store.create_participant(p).await {
            Ok(p) => Ok((p, true)),
            Err(StoreError::Conflict { .. }) => {
                Err(RoomKitError::Internal("participant id collision".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// §10.3 validation of an EDIT or DELETE. The outer result carries store
    /// failures; the inner one a rejection reason (nothing is stored, D12).
    async fn validate_mutation(
        &self,
        event: &RoomEvent,
        is_system: bool,
    ) -> Result<std::result::Result<Option<TargetUpdate>, BlockReason>> {
        let (target_id, edit, delete) = match &event.content {
            EventContent::Edit(e) => (&e.target_event_id, Some(e), None),
            EventContent::Delete(d) => (&d.target_event_id, None, Some(d)),
            _ => return Ok(Ok(None)),
        };
        let target = match self.inner.store.get_event(target_id).await? {
            Some(t) if t.room_id == event.room_id => t,
            _ => return Ok(Err(BlockReason::InvalidTarget)),
        };
        let is_author = || match (&target.source.participant_id, &event.source.participant_id) {
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
            (None, _) => {
                target.source.external_id.is_some()
                    && target.source.external_id == event.source.external_id
            }
        };
        let mut meta = Map::new();
        if let Some(e) = edit {
            // An unqualified edit from a channel counts as the sender's.
            let by_sender = match e.edit_source {
                Some(EditSource::Sender) => true,
                Some(EditSource::System) => !is_system,
                None => !is_system,
            };
            if by_sender && !is_author() {
                return Ok(Err(BlockReason::NotAuthor));
            }
            meta.insert("edited".into(), true.into());
            return Ok(Ok(Some(TargetUpdate {
                event_id: target.id.clone(),
                patch: EventPatch {
                    content: Some((*e.new_content).clone()),
                    merge_metadata: Some(meta),
                    ..EventPatch::default()
                },
            })));
        }
        if let Some(d) = delete {
            let allowed = match d.delete_type {
                DeleteType::Sender => is_author(),
                DeleteType::System => is_system,
                DeleteType::Admin => is_system || self.sender_is_admin(event).await?,
            };
            if !allowed {
                return Ok(Err(BlockReason::NotAuthor));
            }
            meta.insert("deleted".into(), true.into());
            return Ok(Ok(Some(TargetUpdate {
                event_id: target.id.clone(),
                patch: EventPatch {
                    merge_metadata: Some(meta),
                    ..EventPatch::default()
                },
            })));
        }
        Ok(Ok(None))
    }

    async fn sender_is_admin(&self, event: &RoomEvent) -> Result<bool> {
        let Some(pid) = &event.source.participant_id else {
            return Ok(false);
        };
        Ok(self
            .inner
            .store
            .get_participant(&event.room_id, pid)
            .await?
            .is_some_and(|p| p.role.is_admin()))
    }

    // ---- direct mutation (§10.3)

    /// Replaces fields of a stored event wholesale (no `edited` marker) and
    /// fires ON_EVENT_UPDATED after the lock is released. A missing target
    /// is a no-op that fires nothing (`Ok(None)`).
    ///
    /// # Errors
    /// Store failures; invalid content.
    pub async fn update_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        update: EventUpdate,
    ) -> Result<Option<Arc<RoomEvent>>> {
        if let Some(c) = &update.content {
            c.validate()?;
        }
        let lock = self.lock_room(room_id).await?;
        match self.inner.store.get_event(event_id).await? {
            Some(e) if &e.room_id == room_id => {}
            _ => return Ok(None),
        }
        let patch = EventPatch {
            content: update.content,
            source: update.source,
            metadata: update.metadata,
            ..EventPatch::default()
        };
        let updated = self.inner.store.update_event(event_id, &patch).await?;
        drop(lock);
        self.spawn_hooks(
            HookTrigger::OnEventUpdated,
            room_id,
            HookPayload::Event(updated.clone()),
        );
        Ok(Some(updated))
    }

    /// Hard-deletes an event and, with `cascade_replies`, every event that
    /// responds to it directly or indirectly. Returns the deleted ids; fires
    /// ON_EVENT_DELETED for each after the lock is released.
    ///
    /// # Errors
    /// Store failures.
    pub async fn delete_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        cascade_replies: bool,
    ) -> Result<Vec<EventId>> {
        let lock = self.lock_room(room_id).await?;
        let store = &self.inner.store;
        let target = match store.get_event(event_id).await? {
            Some(e) if &e.room_id == room_id => e,
            _ => return Ok(Vec::new()),
        };
        let mut doomed = vec![target.clone()];
        if cascade_replies {
            let all = store.list_events(room_id, &EventQuery::default()).await?;
            let mut frontier = vec![target.id.clone()];
            while let Some(parent) = frontier.pop() {
                for e in all
                    .iter()
                    .filter(|e| e.parent_event_id.as_ref() == Some(&parent))
                {
                    if !doomed.iter().any(|d| d.id == e.id) {
                        frontier.push(e.id.clone());
                        doomed.push(e.clone());
                    }
                }
            }
        }
        let ids: Vec<EventId> = doomed.iter().map(|e| e.id.clone()).collect();
        let deleted = store.delete_events(room_id, &ids).await?;
        drop(lock);
        for e in doomed.into_iter().filter(|e| deleted.contains(&e.id)) {
            self.spawn_hooks(HookTrigger::OnEventDeleted, room_id, HookPayload::Event(e));
        }
        Ok(deleted)
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

/// EDIT and DELETE types follow the content (the RFC's inbound message has
/// no type field).
fn normalize_type(event: &mut RoomEvent) {
    match event.content {
        EventContent::Edit(_) => event.event_type = EventType::Edit,
        EventContent::Delete(_) => event.event_type = EventType::Delete,
        _ => {}
    }
}

/// A hook's modified event replaces the payload, but the engine keeps the
/// fields it owns (identity, position, source, status).
fn adopt_modification(original: &RoomEvent, modified: &RoomEvent) -> RoomEvent {
    let mut e = modified.clone();
    e.id = original.id.clone();
    e.room_id = original.room_id.clone();
    e.index = original.index;
    e.chain_depth = original.chain_depth;
    e.parent_event_id = original.parent_event_id.clone();
    e.source = original.source.clone();
    e.created_at = original.created_at;
    e.status = original.status;
    e.blocked_by = None;
    e.idempotency_key = original.idempotency_key.clone();
    normalize_type(&mut e);
    e
}
