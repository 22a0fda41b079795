//! Delivery lanes (RFC §10.1 step 14, §10.2): per room, the delivery sets of
//! committed events run one after another in index order, outside the room
//! lock. Responses re-enter the pipeline as their own commit passes and
//! their deliveries join the same lane.
//!
//! A lane is a queue plus a flag; the first job enqueued on an idle lane
//! starts a drain task that runs until the queue is empty, so idle rooms
//! cost no task.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use roomkit_model::{
    ChannelBinding, ChannelCategory, ChannelId, DeliveryError, DeliveryResult, DeliveryResults,
    DeliveryStatus, EventContent, FrameworkEvent, HookTrigger, Map, Observation, RoomEvent, Task,
};
use tokio::sync::mpsc;

use crate::channel::{Channel, ChannelOutput, RoomContext, TextStream, response_event};
use crate::error::ChannelError;
use crate::hooks::{HookPayload, panic_message};
use crate::kit::RoomKit;
use crate::pipeline::{Pass, PassKind};
use crate::store::{EventPatch, Reader};
use crate::telemetry::{SpanName, attr, timed};
use crate::transcode::truncate_text;

/// A room's delivery queue.
#[derive(Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    /// Jobs with the span they were planned in (the parent of their
    /// broadcast span).
    queue: VecDeque<(Job, tracing::Span)>,
    running: bool,
}

impl Lane {
    pub(crate) fn is_busy(&self) -> bool {
        let s = self.state.lock();
        s.running || !s.queue.is_empty()
    }
}

/// Tracks the jobs caused by one pipeline call, so the caller can return
/// once all of them (reentry included) have run (RFC §10.1 step 18).
pub(crate) struct JobGroup {
    state: Mutex<GroupState>,
    done: tokio::sync::Notify,
}

#[derive(Default)]
struct GroupState {
    pending: usize,
    root_results: DeliveryResults,
}

impl JobGroup {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(GroupState::default()),
            done: tokio::sync::Notify::new(),
        })
    }

    fn add(&self) {
        self.state.lock().pending += 1;
    }

    fn finish(&self) {
        let mut s = self.state.lock();
        s.pending = s.pending.saturating_sub(1);
        if s.pending == 0 {
            self.done.notify_waiters();
        }
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.lock().pending == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn root_results(&self) -> DeliveryResults {
        self.state.lock().root_results.clone()
    }
}

/// Marks a job finished even if its execution panicked.
struct FinishOnDrop(Arc<JobGroup>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobMode {
    /// A committed event: the full broadcast, AFTER_BROADCAST afterwards.
    Broadcast,
    /// An injected event, delivered only to its targets.
    Targeted,
    /// A lifecycle marker, passed to on_event() only.
    OnEventOnly,
}

pub(crate) struct Target {
    pub binding: ChannelBinding,
    pub channel: Arc<dyn Channel>,
    pub on_event: bool,
    pub deliver: bool,
}

pub(crate) struct Job {
    pub event: Arc<RoomEvent>,
    pub targets: Vec<Target>,
    pub mode: JobMode,
    pub group: Arc<JobGroup>,
    /// Whether this job's delivery results are the caller's result.
    pub is_root: bool,
    /// Binding snapshot taken at planning time.
    pub bindings: Vec<ChannelBinding>,
}

#[derive(Default)]
struct TargetOutcome {
    channel_id: ChannelId,
    responses: Vec<RoomEvent>,
    stream: Option<TextStream>,
    tasks: Vec<Task>,
    observations: Vec<Observation>,
    metadata_updates: Map,
    delivery: Option<DeliveryResult>,
}

impl TargetOutcome {
    fn absorb(&mut self, out: ChannelOutput) {
        self.responses.extend(out.events);
        if out.response_stream.is_some() {
            self.stream = out.response_stream;
        }
        self.tasks.extend(out.tasks);
        self.observations.extend(out.observations);
        for (k, v) in out.metadata_updates {
            self.metadata_updates.insert(k, v);
        }
    }
}

impl RoomKit {
    /// RFC §10.2 step 2: the targets of a committed event, planned under the
    /// room lock from the binding snapshot.
    pub(crate) fn plan_targets(
        &self,
        event: &RoomEvent,
        bindings: &[ChannelBinding],
        exclude: &[ChannelId],
    ) -> Vec<Target> {
        let mut out = Vec::with_capacity(bindings.len());
        for b in bindings {
            if b.channel_id == event.source.channel_id || exclude.contains(&b.channel_id) {
                continue;
            }
            if !b.access.can_read() || !b.direction.can_deliver() {
                continue;
            }
            if !event.visibility.includes(&b.channel_id, b.category) {
                continue;
            }
            let Some(channel) = self.channel(&b.channel_id) else {
                continue;
            };
            let t = match b.category {
                ChannelCategory::Intelligence => {
                    let solicited = event
                        .addressed_to
                        .as_ref()
                        .is_none_or(|names| names.contains(&b.channel_id));
                    if !solicited {
                        continue;
                    }
                    Target {
                        binding: b.clone(),
                        channel,
                        on_event: true,
                        deliver: false,
                    }
                }
                ChannelCategory::Transport => Target {
                    binding: b.clone(),
                    channel,
                    on_event: true,
                    deliver: !b.output_muted,
                },
            };
            out.push(t);
        }
        out
    }

    /// Targets of an injected event: exactly the named, bound, readable
    /// channels.
    pub(crate) fn plan_explicit(
        &self,
        bindings: &[ChannelBinding],
        names: &[ChannelId],
    ) -> Vec<Target> {
        bindings
            .iter()
            .filter(|b| names.contains(&b.channel_id) && b.access.can_read())
            .filter_map(|b| {
                let channel = self.channel(&b.channel_id)?;
                let transport = b.category == ChannelCategory::Transport;
                Some(Target {
                    binding: b.clone(),
                    channel,
                    on_event: true,
                    deliver: transport && !b.output_muted && b.direction.can_deliver(),
                })
            })
            .collect()
    }

    /// Targets of a lifecycle marker: every readable channel, on_event only.
    pub(crate) fn plan_lifecycle(&self, bindings: &[ChannelBinding]) -> Vec<Target> {
        bindings
            .iter()
            .filter(|b| b.access.can_read())
            .filter_map(|b| {
                Some(Target {
                    binding: b.clone(),
                    channel: self.channel(&b.channel_id)?,
                    on_event: true,
                    deliver: false,
                })
            })
            .collect()
    }

    /// Appends a job to its room's lane, starting a drain task when idle.
    pub(crate) fn enqueue(&self, job: Job) {
        job.group.add();
        let room_id = job.event.room_id.clone();
        let lane = self.inner.lanes.entry(room_id).or_default().value().clone();
        // The planning span is only looked up while telemetry is on; a
        // disabled span costs nothing to keep.
        let parent = if self.telemetry_on() {
            tracing::Span::current()
        } else {
            tracing::Span::none()
        };
        let start = {
            let mut s = lane.state.lock();
            s.queue.push_back((job, parent));
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            let kit = self.clone();
            self.inner
                .tracker
                .spawn(async move { kit.drain(lane).await });
        }
    }

    async fn drain(&self, lane: Arc<Lane>) {
        loop {
            let (job, parent) = {
                let mut s = lane.state.lock();
                match s.queue.pop_front() {
                    Some(j) => j,
                    None => {
                        s.running = false;
                        return;
                    }
                }
            };
            let room_id = job.event.room_id.clone();
            let span = if self.telemetry_on() {
                self.inner.telemetry.start_span(
                    SpanName::Broadcast,
                    &[
                        (attr::ROOM_ID, room_id.as_str().into()),
                        (attr::EVENT_ID, job.event.id.as_str().into()),
                        (
                            attr::CHANNEL_ID,
                            job.event.source.channel_id.as_str().into(),
                        ),
                        (attr::TARGETS, (job.targets.len() as u64).into()),
                    ],
                    Some(&parent),
                )
            } else {
                tracing::Span::none()
            };
            drop(parent);
            let run = Box::pin(timed(span, self.execute_job(job)));
            if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                tracing::error!(target: "roomkit.core.framework", room_id = %room_id, error = %panic_message(&panic), "delivery job panicked; the lane goes on");
            }
        }
    }

    /// Runs one event's delivery set (RFC §10.2 step 3) and what follows it:
    /// reentry, side effects, AFTER_BROADCAST, framework events.
    async fn execute_job(&self, job: Job) {
        let _finish = FinishOnDrop(job.group.clone());
        let room_id = job.event.room_id.clone();
        let ctx = match self.job_context(&job).await {
            Some(c) => c,
            None => return,
        };

        let outcomes: Vec<TargetOutcome> = futures::future::join_all(
            job.targets
                .iter()
                .map(|t| self.run_target(&job.event, t, &ctx)),
        )
        .await;

        // Delivery results: recorded on the event, never changing its status.
        let mut results = DeliveryResults::new();
        let mut failed = Vec::new();
        for o in &outcomes {
            if let Some(d) = &o.delivery {
                if d.status == DeliveryStatus::Failed {
                    failed.push(d.channel_id.clone());
                }
                results.insert(d.channel_id.clone(), d.clone());
            }
        }
        if !results.is_empty() {
            let patch = EventPatch {
                delivery_results: Some(results.clone()),
                ..EventPatch::default()
            };
            if let Err(e) = self.inner.store.update_event(&job.event.id, &patch).await {
                tracing::error!(target: "roomkit.store", room_id = %room_id, event_id = %job.event.id, error = %e, "recording delivery results failed");
            }
        }
        if !failed.is_empty() && failed.len() < job.targets.len() {
            self.emit(FrameworkEvent::BroadcastPartialFailure {
                room_id: room_id.clone(),
                event_id: job.event.id.clone(),
                failed_channels: failed,
            });
        }
        if job.is_root {
            job.group.state.lock().root_results = results;
        }

        // Reentry, side effects and metadata, per responding channel.
        for mut o in outcomes {
            if let Some(stream) = o.stream.take() {
                self.reenter_stream(&job, &o.channel_id, stream, &ctx).await;
            }
            for response in std::mem::take(&mut o.responses) {
                self.reenter(&job, &o.channel_id, response, Vec::new())
                    .await;
            }
            if !o.tasks.is_empty() || !o.observations.is_empty() {
                self.persist_side_effects(
                    &room_id,
                    std::mem::take(&mut o.tasks),
                    std::mem::take(&mut o.observations),
                    o.channel_id.as_str(),
                    Some(&o.channel_id),
                )
                .await;
            }
            self.apply_metadata_updates(&room_id, std::mem::take(&mut o.metadata_updates))
                .await;
        }

        if job.mode == JobMode::Broadcast {
            self.inner.hooks.spawn_async(
                self,
                HookTrigger::AfterBroadcast,
                Some(&room_id),
                HookPayload::Event(job.event.clone()),
                Some(ctx),
            );
            self.emit(FrameworkEvent::EventProcessed {
                room_id,
                event_id: job.event.id.clone(),
            });
        }
    }

    async fn job_context(&self, job: &Job) -> Option<Arc<RoomContext>> {
        if job.targets.is_empty() {
            // Nothing to call: skip the reads (AFTER_BROADCAST gets a
            // context with the planned bindings only).
            let room = self.inner.store.get_room(&job.event.room_id).await.ok()??;
            return Some(Arc::new(RoomContext {
                room,
                bindings: job.bindings.clone(),
                participants: Vec::new(),
                recent_events: Vec::new(),
            }));
        }
        match self.build_context(&job.event.room_id, None).await {
            Ok(mut c) => {
                c.bindings = job.bindings.clone();
                Some(Arc::new(c))
            }
            Err(e) => {
                tracing::warn!(target: "roomkit.core.framework", room_id = %job.event.room_id, event_id = %job.event.id, error = %e, "room gone before delivery; skipping");
                None
            }
        }
    }

    /// Transcode, truncate, then on_event() and/or deliver() for one target.
    async fn run_target(
        &self,
        event: &Arc<RoomEvent>,
        t: &Target,
        ctx: &RoomContext,
    ) -> TargetOutcome {
        let caps = &t.binding.capabilities;
        let mut ev = event.clone();
        let transcoded = self.inner.transcoder.transcode(event, caps);
        if transcoded.is_some() || caps.max_length.is_some() {
            let mut copy = (**event).clone();
            if let Some(c) = transcoded {
                copy.content = c;
            }
            let truncated = match caps.max_length {
                Some(max) => truncate_text(&mut copy.content, max),
                None => false,
            };
            if copy.content != event.content || truncated {
                ev = Arc::new(copy);
            }
        }
        // RFC §7.5 rule 8: the history handed to a channel is its own view,
        // filtered here where the reader is known, not once per broadcast.
        let reader = Reader {
            channel_id: t.binding.channel_id.clone(),
            category: t.binding.category,
        };
        let own_view;
        let ctx = if ctx.recent_events.iter().all(|e| reader.may_see(e)) {
            ctx
        } else {
            own_view = RoomContext {
                recent_events: ctx
                    .recent_events
                    .iter()
                    .filter(|e| reader.may_see(e))
                    .cloned()
                    .collect(),
                ..ctx.clone()
            };
            &own_view
        };
        let mut outcome = TargetOutcome {
            channel_id: t.binding.channel_id.clone(),
            ..TargetOutcome::default()
        };
        if t.on_event {
            let span = self.span(
                SpanName::OnEvent,
                &[
                    (attr::ROOM_ID, ev.room_id.as_str().into()),
                    (attr::EVENT_ID, ev.id.as_str().into()),
                    (attr::CHANNEL_ID, t.binding.channel_id.as_str().into()),
                ],
            );
            match timed(span, self.call(t.channel.on_event(&ev, &t.binding, ctx))).await {
                Ok(out) => outcome.absorb(out),
                Err(e) => {
                    tracing::warn!(target: "roomkit.core.framework", room_id = %ev.room_id, event_id = %ev.id, channel_id = %t.binding.channel_id, error = %e, "on_event failed");
                }
            }
        }
        if t.deliver {
            let started = std::time::Instant::now();
            match self.resilient_deliver(t, &ev, ctx).await {
                Ok(mut out) => {
                    let status = out.delivery_status.unwrap_or(DeliveryStatus::Sent);
                    let mut result = DeliveryResult::sent(
                        t.binding.channel_id.clone(),
                        out.provider_message_id.take(),
                    );
                    result.status = status;
                    outcome.delivery = Some(result);
                    outcome.absorb(out);
                    tracing::debug!(target: "roomkit.core.framework", room_id = %ev.room_id, event_id = %ev.id, channel_id = %t.binding.channel_id, latency_ms = started.elapsed().as_secs_f64() * 1000.0, "delivered");
                    self.emit(FrameworkEvent::DeliverySucceeded {
                        room_id: ev.room_id.clone(),
                        event_id: ev.id.clone(),
                        channel_id: t.binding.channel_id.clone(),
                    });
                }
                Err(e) => {
                    tracing::warn!(target: "roomkit.core.framework", room_id = %ev.room_id, event_id = %ev.id, channel_id = %t.binding.channel_id, error = %e, retryable = e.is_retryable(), "delivery failed");
                    outcome.delivery = Some(DeliveryResult::failed(
                        t.binding.channel_id.clone(),
                        DeliveryError {
                            code: e.code().to_owned(),
                            message: e.to_string(),
                            retryable: e.is_retryable(),
                        },
                    ));
                    self.emit(FrameworkEvent::DeliveryFailed {
                        room_id: ev.room_id.clone(),
                        event_id: ev.id.clone(),
                        channel_id: t.binding.channel_id.clone(),
                        error: e.to_string(),
                    });
                }
            }
        }
        outcome
    }

    /// A channel call with the per-operation timeout and panic containment.
    async fn call<F>(&self, fut: F) -> Result<ChannelOutput, ChannelError>
    where
        F: std::future::Future<Output = Result<ChannelOutput, ChannelError>>,
    {
        let limit = self.inner.config.delivery_timeout;
        match tokio::time::timeout(limit, AssertUnwindSafe(fut).catch_unwind()).await {
            Err(_) => Err(ChannelError::Timeout(limit.as_millis() as u64)),
            Ok(Err(panic)) => Err(ChannelError::Provider {
                provider: "channel".into(),
                code: "panic".into(),
                message: format!("channel panicked: {}", panic_message(&panic)),
                retryable: false,
                retry_after_seconds: None,
            }),
            Ok(Ok(r)) => r,
        }
    }

    /// A response event re-enters the pipeline as its own locked commit pass
    /// (RFC §10.1 step 14).
    async fn reenter(
        &self,
        job: &Job,
        responder: &ChannelId,
        mut response: RoomEvent,
        exclude: Vec<ChannelId>,
    ) {
        let Some(channel) = self.channel(responder) else {
            return;
        };
        // A channel speaks only for itself.
        response.source.channel_id = responder.clone();
        response.source.channel_type = channel.channel_type();
        if response.source.provider.is_none() {
            response.source.provider = channel.provider_name().map(str::to_owned);
        }
        response.room_id = job.event.room_id.clone();
        let pass = Pass {
            event: response,
            kind: PassKind::Response {
                parent: job.event.clone(),
            },
            deadline: None,
            group: job.group.clone(),
            exclude,
            context: None,
        };
        if let Err(e) = Box::pin(self.commit_pass(pass)).await {
            tracing::error!(target: "roomkit.core.framework", room_id = %job.event.room_id, channel_id = %responder, error = %e, "committing a response failed");
        }
    }

    /// A streamed response (RFC §6.1): chunks go live to streaming-capable
    /// channels that would receive the response, the whole text is then
    /// committed once and broadcast to everyone else.
    async fn reenter_stream(
        &self,
        job: &Job,
        responder: &ChannelId,
        mut stream: TextStream,
        ctx: &RoomContext,
    ) {
        let Some(channel) = self.channel(responder) else {
            return;
        };
        let responder_binding = job.bindings.iter().find(|b| &b.channel_id == responder);
        let may_stream = responder_binding.is_some_and(|b| b.can_write());
        let mut senders = Vec::new();
        let mut streamed = Vec::new();
        let mut tasks = Vec::new();
        let placeholder = response_event(channel.as_ref(), EventContent::text(""));
        if let Some(rb) = responder_binding.filter(|_| may_stream) {
            for b in &job.bindings {
                if &b.channel_id == responder
                    || b.category != ChannelCategory::Transport
                    || !b.access.can_read()
                    || b.output_muted
                    || !rb.visibility.includes(&b.channel_id, b.category)
                {
                    continue;
                }
                let Some(target) = self.channel(&b.channel_id) else {
                    continue;
                };
                if !target.supports_streaming_delivery() {
                    continue;
                }
                let (tx, rx) = mpsc::channel::<String>(64);
                senders.push(tx);
                streamed.push(b.channel_id.clone());
                let chunks: TextStream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|c| (c, rx))
                })
                .boxed();
                let (binding, ctx, ev) = (b.clone(), ctx.clone(), placeholder.clone());
                tasks.push(async move { target.deliver_stream(chunks, &ev, &binding, &ctx).await });
            }
        }
        let collect = async {
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                for tx in &senders {
                    // A receiver that went away only loses its live view.
                    let _ = tx.send(chunk.clone()).await;
                }
                text.push_str(&chunk);
            }
            drop(senders);
            text
        };
        let (text, stream_results) = futures::join!(collect, futures::future::join_all(tasks));
        for (id, r) in streamed.iter().zip(stream_results) {
            if let Err(e) = r {
                tracing::warn!(target: "roomkit.core.framework", room_id = %job.event.room_id, channel_id = %id, error = %e, "streamed delivery failed");
            }
        }
        let response = response_event(channel.as_ref(), EventContent::text(text));
        self.reenter(job, responder, response, streamed).await;
    }
}
