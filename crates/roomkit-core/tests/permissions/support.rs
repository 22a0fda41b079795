//! Shared setup for the permission tests: an engine with recording
//! channels, rooms with bindings, and short forms for sending and reading.

use std::sync::Arc;

use parking_lot::Mutex;
use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

/// Builds an engine with these channels and global hooks.
pub fn kit_with(channels: &[&RecordingChannel], hooks: Vec<HookRegistration>) -> RoomKit {
    let mut b = RoomKit::builder();
    for c in channels {
        b = b.channel(c.arc());
    }
    for h in hooks {
        b = b.hook(h);
    }
    b.build().unwrap()
}

/// Creates room `id` and attaches the channels in order.
pub async fn room_with(kit: &RoomKit, id: &str, bindings: &[(&str, AttachOptions)]) -> RoomId {
    let room = kit.create_room(CreateRoom::with_id(id)).await.unwrap();
    for (channel, opts) in bindings {
        kit.attach_channel(&room.id, &ChannelId::from(*channel), opts.clone())
            .await
            .unwrap();
    }
    room.id
}

/// Default binding options (READ_WRITE, visibility all, not muted).
pub fn rw() -> AttachOptions {
    AttachOptions::default()
}

/// Binding options with the given access.
pub fn access(a: Access) -> AttachOptions {
    AttachOptions {
        access: a,
        ..AttachOptions::default()
    }
}

/// Binding options with the given visibility string.
pub fn visible(v: &str) -> AttachOptions {
    AttachOptions {
        visibility: v.parse().unwrap(),
        ..AttachOptions::default()
    }
}

/// Binding options for a muted binding.
pub fn muted() -> AttachOptions {
    AttachOptions {
        muted: true,
        ..AttachOptions::default()
    }
}

/// An inbound text message from `channel` into `room`.
pub async fn say(kit: &RoomKit, room: &RoomId, channel: &str, text: &str) -> InboundResult {
    kit.process_inbound(InboundMessage::text(channel, "user-1", text).in_room(room.clone()))
        .await
        .unwrap()
}

/// A direct injection (RFC §10.5) of a text event from `channel`.
pub async fn inject(kit: &RoomKit, room: &RoomId, channel: &str, text: &str) -> InboundResult {
    kit.send_event(SendEvent::text(room.clone(), channel, text))
        .await
        .unwrap()
}

/// The whole timeline of a room, unfiltered.
pub async fn timeline(kit: &RoomKit, room: &RoomId) -> Vec<Arc<RoomEvent>> {
    kit.timeline(room, TimelineQuery::default()).await.unwrap()
}

/// The MESSAGE events of a room's timeline.
pub async fn messages(kit: &RoomKit, room: &RoomId) -> Vec<Arc<RoomEvent>> {
    timeline(kit, room)
        .await
        .into_iter()
        .filter(|e| e.event_type == EventType::Message)
        .collect()
}

/// Texts of the MESSAGE events of a room's timeline.
pub async fn message_texts(kit: &RoomKit, room: &RoomId) -> Vec<String> {
    messages(kit, room)
        .await
        .iter()
        .map(|e| e.content.plain_text())
        .collect()
}

/// Texts of the MESSAGE events a reader's timeline view holds.
pub async fn texts_visible_to(kit: &RoomKit, room: &RoomId, reader: &str) -> Vec<String> {
    let q = TimelineQuery {
        visible_to: Some(ChannelId::from(reader)),
        ..TimelineQuery::default()
    };
    kit.timeline(room, q)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == EventType::Message)
        .map(|e| e.content.plain_text())
        .collect()
}

/// A task of the given type.
pub fn task(kind: &str) -> Task {
    Task::new(kind)
}

/// An observation of the given type with no data.
pub fn observation(kind: &str) -> Observation {
    Observation::new(kind, Map::new())
}

/// Task types stored for a room.
pub async fn task_types(kit: &RoomKit, room: &RoomId) -> Vec<String> {
    kit.list_tasks(room, &Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.task_type)
        .collect()
}

/// Observation types stored for a room.
pub async fn observation_types(kit: &RoomKit, room: &RoomId) -> Vec<String> {
    kit.list_observations(room)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.observation_type)
        .collect()
}

/// A shared list that hooks append to, to observe calls and their order.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Vec<String>>>);

impl Trace {
    /// Records one entry.
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().push(s.into());
    }

    /// Everything recorded so far.
    pub fn get(&self) -> Vec<String> {
        self.0.lock().clone()
    }
}

/// A sync BEFORE_BROADCAST-style hook that records its name and answers
/// with `result` every time.
pub fn sync_hook(
    trigger: HookTrigger,
    name: &str,
    trace: &Trace,
    result: impl Fn(&HookInput) -> Result<HookResult, HookError> + Send + Sync + 'static,
) -> HookRegistration {
    let trace = trace.clone();
    let label = name.to_owned();
    let result = Arc::new(result);
    HookRegistration::sync(trigger, name, move |input: HookInput| {
        let trace = trace.clone();
        let label = label.clone();
        let result = result.clone();
        async move {
            let text = input
                .event()
                .map(|e| e.content.plain_text())
                .unwrap_or_default();
            trace.push(format!("{label}:{text}"));
            result(&input)
        }
    })
}

/// An async hook that records its name and the payload's text.
pub fn async_hook(trigger: HookTrigger, name: &str, trace: &Trace) -> HookRegistration {
    let trace = trace.clone();
    let label = name.to_owned();
    HookRegistration::asynchronous(trigger, name, move |input: HookInput| {
        let trace = trace.clone();
        let label = label.clone();
        async move {
            let what = match &input.payload {
                HookPayload::Event(e) => e.content.plain_text(),
                HookPayload::Binding(b) => b.channel_id.to_string(),
                _ => String::new(),
            };
            trace.push(format!("{label}:{what}"));
            Ok(SideEffects::default())
        }
    })
}

/// The framework events of a kind, with their data.
pub async fn framework_named(log: &FrameworkLog, name: &str) -> Vec<FrameworkEvent> {
    log.events()
        .await
        .into_iter()
        .filter(|e| e.name() == name)
        .collect()
}
