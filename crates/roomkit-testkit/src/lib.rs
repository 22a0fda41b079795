//! Test support for RoomKit: channels that record what they were given and
//! can be scripted to answer, fail, stall or panic; helpers to collect
//! framework events; the store conformance suite (`conformance`); and a
//! real SIP peer, SIPp, with scenarios and RTP captures built for a test
//! (`sipp`).

pub mod conformance;
pub mod sipp;
pub mod tmpfs;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelDirection, ChannelId,
    ChannelMediaType, ChannelType, EventContent, EventSource, FrameworkEvent, Observation,
    RoomEvent, Task,
};
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext, RoomKit};

/// Which channel method a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `on_event()`.
    OnEvent,
    /// `deliver()`.
    Deliver,
}

/// One call a [`RecordingChannel`] received.
#[derive(Debug, Clone)]
pub struct Call {
    /// Which method.
    pub kind: CallKind,
    /// The event as given (after transcoding).
    pub event: RoomEvent,
    /// The binding it was given with.
    pub binding: ChannelBinding,
    /// The recent events of the context it was given.
    pub context_events: Vec<Arc<RoomEvent>>,
}

/// A scripted answer function for [`RecordingChannel::respond_with`].
pub type Responder = Arc<dyn Fn(&RoomEvent, &RoomContext) -> ChannelOutput + Send + Sync>;

/// A channel that records every call and can be told to answer, fail,
/// stall or panic. Cloning shares the record.
#[derive(Clone)]
pub struct RecordingChannel {
    id: ChannelId,
    channel_type: ChannelType,
    category: ChannelCategory,
    direction: ChannelDirection,
    caps: ChannelCapabilities,
    provider: Option<String>,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Call>>,
    fail_deliver: AtomicBool,
    panic: AtomicBool,
    delay_ms: AtomicUsize,
    responder: Mutex<Option<Responder>>,
    streaming: AtomicBool,
    next_id: AtomicUsize,
}

impl RecordingChannel {
    /// A transport channel of the given type with text-only capabilities.
    pub fn transport(id: &str, channel_type: ChannelType) -> Self {
        Self {
            id: ChannelId::from(id),
            channel_type,
            category: ChannelCategory::Transport,
            direction: ChannelDirection::Bidirectional,
            caps: ChannelCapabilities::text_only(),
            provider: Some("Recording".into()),
            state: Arc::new(State::default()),
        }
    }

    /// A WebSocket-like transport that supports everything (RFC A.8).
    pub fn websocket(id: &str) -> Self {
        Self::transport(id, ChannelType::Websocket).with_capabilities(ChannelCapabilities::full())
    }

    /// An SMS-like transport: text and media, 1600 characters, no edit or
    /// delete (RFC A.1).
    pub fn sms(id: &str) -> Self {
        let mut caps = ChannelCapabilities::text_only();
        caps.media_types = vec![ChannelMediaType::Text, ChannelMediaType::Media];
        caps.max_length = Some(1600);
        caps.supports_media = true;
        caps.supports_read_receipts = true;
        caps.supported_media_types =
            vec!["image/jpeg".into(), "image/png".into(), "image/gif".into()];
        Self::transport(id, ChannelType::Sms).with_capabilities(caps)
    }

    /// An intelligence (AI) channel with text capabilities.
    pub fn ai(id: &str) -> Self {
        Self {
            category: ChannelCategory::Intelligence,
            provider: Some("ScriptedAI".into()),
            ..Self::transport(id, ChannelType::Ai)
        }
    }

    /// Replaces the capabilities.
    pub fn with_capabilities(mut self, caps: ChannelCapabilities) -> Self {
        self.caps = caps;
        self
    }

    /// Sets the direction.
    pub fn with_direction(mut self, d: ChannelDirection) -> Self {
        self.direction = d;
        self
    }

    /// As an `Arc<dyn Channel>` for registration.
    pub fn arc(&self) -> Arc<dyn Channel> {
        Arc::new(self.clone())
    }

    /// Scripts `on_event` answers.
    pub fn respond_with(
        &self,
        f: impl Fn(&RoomEvent, &RoomContext) -> ChannelOutput + Send + Sync + 'static,
    ) {
        *self.state.responder.lock() = Some(Arc::new(f));
    }

    /// Answers every message event with the same text.
    pub fn always_reply(&self, text: &str) {
        let text = text.to_owned();
        self.respond_with(move |e, _| {
            if e.event_type == roomkit_core::model::EventType::Message {
                ChannelOutput::respond(reply(&text))
            } else {
                ChannelOutput::empty()
            }
        });
    }

    /// Makes `deliver()` fail (or succeed again).
    pub fn fail_deliveries(&self, fail: bool) {
        self.state.fail_deliver.store(fail, Ordering::SeqCst);
    }

    /// Makes every call panic (or not).
    pub fn panic_on_call(&self, panic: bool) {
        self.state.panic.store(panic, Ordering::SeqCst);
    }

    /// Makes every call wait first.
    pub fn delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as usize, Ordering::SeqCst);
    }

    /// Declares streaming delivery support.
    pub fn accept_streams(&self, yes: bool) {
        self.state.streaming.store(yes, Ordering::SeqCst);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().clone()
    }

    /// Events given to `deliver()`.
    pub fn delivered(&self) -> Vec<RoomEvent> {
        self.of(CallKind::Deliver)
    }

    /// Events given to `on_event()`.
    pub fn seen(&self) -> Vec<RoomEvent> {
        self.of(CallKind::OnEvent)
    }

    /// Texts of delivered events (plain-text rendering).
    pub fn delivered_texts(&self) -> Vec<String> {
        self.delivered()
            .iter()
            .map(|e| e.content.plain_text())
            .collect()
    }

    /// Texts of events seen by `on_event()`, messages only.
    pub fn seen_message_texts(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|e| e.event_type == roomkit_core::model::EventType::Message)
            .map(|e| e.content.plain_text())
            .collect()
    }

    /// Forgets the calls so far.
    pub fn clear(&self) {
        self.state.calls.lock().clear();
    }

    fn of(&self, kind: CallKind) -> Vec<RoomEvent> {
        self.state
            .calls
            .lock()
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.event.clone())
            .collect()
    }

    async fn before_call(
        &self,
        kind: CallKind,
        event: &RoomEvent,
        binding: &ChannelBinding,
        ctx: &RoomContext,
    ) {
        self.state.calls.lock().push(Call {
            kind,
            event: event.clone(),
            binding: binding.clone(),
            context_events: ctx.recent_events.clone(),
        });
        let ms = self.state.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        }
        if self.state.panic.load(Ordering::SeqCst) {
            panic!("recording channel {} told to panic", self.id);
        }
    }
}

/// A draft reply event with the given text (the engine fills in the source
/// channel when it commits it).
pub fn reply(text: &str) -> RoomEvent {
    let mut source = EventSource::system();
    source.direction = ChannelDirection::Outbound;
    RoomEvent::draft(source, EventContent::text(text))
}

/// A channel output with a reply plus side effects.
pub fn reply_with_effects(
    text: Option<&str>,
    tasks: Vec<Task>,
    observations: Vec<Observation>,
) -> ChannelOutput {
    ChannelOutput {
        events: text.map(reply).into_iter().collect(),
        tasks,
        observations,
        ..ChannelOutput::default()
    }
}

#[async_trait]
impl Channel for RecordingChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        self.channel_type.clone()
    }

    fn category(&self) -> ChannelCategory {
        self.category
    }

    fn direction(&self) -> ChannelDirection {
        self.direction
    }

    fn provider_name(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    fn capabilities(&self) -> ChannelCapabilities {
        self.caps.clone()
    }

    fn supports_streaming_delivery(&self) -> bool {
        self.state.streaming.load(Ordering::SeqCst)
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        binding: &ChannelBinding,
        ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        self.before_call(CallKind::Deliver, event, binding, ctx)
            .await;
        if self.state.fail_deliver.load(Ordering::SeqCst) {
            return Err(ChannelError::Provider {
                provider: "Recording".into(),
                code: "unavailable".into(),
                message: "scripted failure".into(),
                retryable: true,
                retry_after_seconds: None,
            });
        }
        let n = self.state.next_id.fetch_add(1, Ordering::SeqCst);
        Ok(ChannelOutput::sent(format!("{}-msg-{n}", self.id)))
    }

    async fn on_event(
        &self,
        event: &RoomEvent,
        binding: &ChannelBinding,
        ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        self.before_call(CallKind::OnEvent, event, binding, ctx)
            .await;
        let responder = self.state.responder.lock().clone();
        Ok(match responder {
            Some(f) => f(event, ctx),
            None => ChannelOutput::empty(),
        })
    }
}

/// Collects framework events from the moment it is created.
pub struct FrameworkLog {
    events: Arc<Mutex<Vec<FrameworkEvent>>>,
}

impl FrameworkLog {
    /// Subscribes to the kit's framework events.
    pub fn start(kit: &RoomKit) -> Self {
        let mut rx = kit.subscribe();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => sink.lock().push((*e).clone()),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
        });
        Self { events }
    }

    /// Everything collected so far (yields first so pending sends arrive).
    pub async fn events(&self) -> Vec<FrameworkEvent> {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        self.events.lock().clone()
    }

    /// Names of the events collected so far.
    pub async fn names(&self) -> Vec<&'static str> {
        self.events()
            .await
            .iter()
            .map(FrameworkEvent::name)
            .collect()
    }
}
