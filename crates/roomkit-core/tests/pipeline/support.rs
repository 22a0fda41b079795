//! Shared fixtures of the pipeline tests: room setup, hook recorders, a
//! lock manager that reports whether a room lock is held, and a probe
//! channel that logs when its deliveries start and end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_core::lock::{InMemoryLockManager, LockError, RoomLock, RoomLockManager};
use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::RecordingChannel;

/// Builds a kit with the given recording channels registered.
pub fn kit_with(channels: &[&RecordingChannel]) -> RoomKit {
    builder_with(channels).build().unwrap()
}

/// A builder with the given recording channels registered.
pub fn builder_with(channels: &[&RecordingChannel]) -> RoomKitBuilder {
    channels
        .iter()
        .fold(RoomKit::builder(), |b, c| b.channel(c.arc()))
}

/// Creates a room and attaches the channels with default options, then
/// waits until the attach notices have been handed out.
pub async fn room_with(kit: &RoomKit, room: &str, channels: &[&str]) -> RoomId {
    let id = kit.create_room(CreateRoom::with_id(room)).await.unwrap().id;
    for c in channels {
        attach(kit, &id, c, AttachOptions::default()).await;
    }
    kit.idle().await;
    id
}

/// Attaches one channel with the given options.
pub async fn attach(kit: &RoomKit, room: &RoomId, channel: &str, options: AttachOptions) {
    kit.attach_channel(room, &ChannelId::from(channel), options)
        .await
        .unwrap();
}

/// An inbound text message into an explicit room.
pub fn msg(channel: &str, sender: &str, text: &str, room: &RoomId) -> InboundMessage {
    InboundMessage::text(channel, sender, text).in_room(room.clone())
}

/// An inbound message with any content into an explicit room.
pub fn inbound(
    channel: &str,
    sender: &str,
    content: EventContent,
    room: &RoomId,
) -> InboundMessage {
    let mut m = InboundMessage::text(channel, sender, "");
    m.content = content;
    m.in_room(room.clone())
}

/// The whole timeline of a room.
pub async fn timeline(kit: &RoomKit, room: &RoomId) -> Vec<Arc<RoomEvent>> {
    kit.timeline(room, TimelineQuery::default()).await.unwrap()
}

/// The timeline without lifecycle notices (attach, mute, update ...).
pub async fn conversation(kit: &RoomKit, room: &RoomId) -> Vec<Arc<RoomEvent>> {
    timeline(kit, room)
        .await
        .into_iter()
        .filter(|e| !is_lifecycle(e.event_type))
        .collect()
}

/// Whether an event type is a binding or participant lifecycle notice.
pub fn is_lifecycle(t: EventType) -> bool {
    matches!(
        t,
        EventType::ChannelAttached
            | EventType::ChannelDetached
            | EventType::ChannelMuted
            | EventType::ChannelUnmuted
            | EventType::ChannelUpdated
            | EventType::ParticipantJoined
            | EventType::ParticipantLeft
            | EventType::ParticipantIdentified
            | EventType::ParticipantUpdated
    )
}

/// Plain text of each event.
pub fn texts<E: AsRef<RoomEvent>>(events: &[E]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.as_ref().content.plain_text())
        .collect()
}

/// An edit of `target` to a new text, as the sender's own edit.
pub fn edit_of(target: &EventId, text: &str) -> EventContent {
    EventContent::Edit(EditContent {
        target_event_id: target.clone(),
        new_content: Box::new(EventContent::text(text)),
        edit_source: Some(EditSource::Sender),
    })
}

/// A delete of `target` of the given type.
pub fn delete_of(target: &EventId, delete_type: DeleteType) -> EventContent {
    EventContent::Delete(DeleteContent {
        target_event_id: target.clone(),
        delete_type,
        reason: None,
    })
}

/// What hooks of one trigger were given, in call order.
#[derive(Clone, Default)]
pub struct HookLog(Arc<Mutex<Vec<HookPayload>>>);

impl HookLog {
    /// The events among the recorded payloads.
    pub fn events(&self) -> Vec<RoomEvent> {
        self.0
            .lock()
            .iter()
            .filter_map(|p| p.event().cloned())
            .collect()
    }

    /// Ids of the recorded events.
    pub fn event_ids(&self) -> Vec<EventId> {
        self.events().into_iter().map(|e| e.id).collect()
    }

    /// How many calls were recorded.
    pub fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// An async hook that records its payloads.
pub fn recording_hook(trigger: HookTrigger, name: &str) -> (HookRegistration, HookLog) {
    let log = HookLog::default();
    let sink = log.clone();
    let reg = HookRegistration::asynchronous(trigger, name, move |input: HookInput| {
        let sink = sink.clone();
        async move {
            sink.0.lock().push(input.payload);
            Ok(SideEffects::default())
        }
    });
    (reg, log)
}

/// A lock manager that counts the room locks currently held, so tests can
/// tell whether code runs inside or outside the critical section.
#[derive(Default)]
pub struct ProbeLocks {
    inner: InMemoryLockManager,
    held: Arc<AtomicUsize>,
}

struct CountedGuard {
    _lock: RoomLock,
    held: Arc<AtomicUsize>,
}

impl Drop for CountedGuard {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProbeLocks {
    /// Whether any room lock is held right now.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst) > 0
    }
}

#[async_trait]
impl RoomLockManager for ProbeLocks {
    async fn acquire(&self, room_id: &RoomId) -> Result<RoomLock, LockError> {
        let lock = self.inner.acquire(room_id).await?;
        self.held.fetch_add(1, Ordering::SeqCst);
        Ok(RoomLock::new(CountedGuard {
            _lock: lock,
            held: self.held.clone(),
        }))
    }
}

/// A transport whose `deliver()` writes `"<id>:start:<text>"`, waits, then
/// writes `"<id>:end:<text>"` to a log that several probes may share. It
/// also keeps the context its `handle_inbound()` was given.
#[derive(Clone)]
pub struct Probe {
    id: ChannelId,
    delay: Duration,
    log: Arc<Mutex<Vec<String>>>,
    inbound_contexts: Arc<Mutex<Vec<RoomContext>>>,
}

impl Probe {
    /// A probe writing to `log` whose deliveries take `delay`.
    pub fn new(id: &str, delay: Duration, log: Arc<Mutex<Vec<String>>>) -> Self {
        Self {
            id: ChannelId::from(id),
            delay,
            log,
            inbound_contexts: Arc::default(),
        }
    }

    /// As an `Arc<dyn Channel>`.
    pub fn arc(&self) -> Arc<dyn Channel> {
        Arc::new(self.clone())
    }

    /// Contexts given to `handle_inbound()`.
    pub fn inbound_contexts(&self) -> Vec<RoomContext> {
        self.inbound_contexts.lock().clone()
    }
}

#[async_trait]
impl Channel for Probe {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Websocket
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::full()
    }

    async fn handle_inbound(
        &self,
        message: &InboundMessage,
        context: &RoomContext,
    ) -> Result<RoomEvent, ChannelError> {
        self.inbound_contexts.lock().push(context.clone());
        Ok(inbound_event(
            self.id.clone(),
            self.channel_type(),
            None,
            message,
        ))
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let text = event.content.plain_text();
        self.log.lock().push(format!("{}:start:{text}", self.id));
        tokio::time::sleep(self.delay).await;
        self.log.lock().push(format!("{}:end:{text}", self.id));
        Ok(ChannelOutput::sent(format!("{}-{}", self.id, event.index)))
    }
}
