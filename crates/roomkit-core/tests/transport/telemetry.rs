//! Telemetry (RFC §15.7, T-45/T-46): one span per inbound pipeline stage
//! and per delivery attempt, captured here by an in-memory `tracing` layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use roomkit_core::model::{ChannelId, InboundMessage, RoomId};
use roomkit_core::telemetry::SPAN_TARGET;
use roomkit_core::{
    AttachOptions, CreateRoom, HookInput, HookRegistration, HookResult, IdentityError,
    IdentityResolver, IdentityResult, NoopTelemetry, RoomContext, RoomKit,
};
use roomkit_testkit::RecordingChannel;
use tracing::span::{Attributes, Id, Record};
use tracing::{Subscriber, field::Field, field::Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A span as the capturing layer saw it.
#[derive(Debug, Clone)]
struct Captured {
    id: u64,
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != SPAN_TARGET {
            return;
        }
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent().map(|p| p.id().into_u64()));
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Captured {
            id: id.into_u64(),
            name: attrs.metadata().name(),
            parent,
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(s) = spans.iter_mut().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }
}

/// The tests here install a thread-local subscriber while other tests of
/// the binary run without one: they take turns, and each refreshes the
/// callsites' cached interest once its subscriber is in place.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn install(capture: &Capture) -> tracing::subscriber::DefaultGuard {
    let guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    tracing::callsite::rebuild_interest_cache();
    guard
}

impl Capture {
    fn spans(&self) -> Vec<Captured> {
        self.0.lock().unwrap().clone()
    }
}

struct Knows;

#[async_trait]
impl IdentityResolver for Knows {
    async fn resolve(
        &self,
        _message: &InboundMessage,
        _context: &RoomContext,
    ) -> Result<IdentityResult, IdentityError> {
        Ok(IdentityResult::unknown())
    }
}

async fn kit_with(
    telemetry: Option<Arc<dyn roomkit_core::TelemetryProvider>>,
) -> (RoomKit, RecordingChannel, RoomId) {
    let sms = RecordingChannel::sms("sms");
    let ws = RecordingChannel::websocket("ws");
    let mut builder = RoomKit::builder()
        .channel(sms.arc())
        .channel(ws.arc())
        .identity_resolver(Arc::new(Knows))
        .hook(HookRegistration::sync(
            roomkit_core::model::HookTrigger::BeforeBroadcast,
            "let-it-pass",
            |_i: HookInput| async { Ok(HookResult::allow()) },
        ));
    if let Some(t) = telemetry {
        builder = builder.telemetry(t);
    }
    let kit = builder.build().unwrap();
    let room = kit.create_room(CreateRoom::with_id("tr")).await.unwrap();
    for c in ["sms", "ws"] {
        kit.attach_channel(&room.id, &ChannelId::from(c), AttachOptions::default())
            .await
            .unwrap();
    }
    kit.idle().await;
    (kit, ws, room.id)
}

fn message(room: &RoomId) -> InboundMessage {
    let mut m = InboundMessage::text("sms", "+15550001111", "traced hello").in_room(room.clone());
    m.idempotency_key = Some("trace-key-1".into());
    m
}

#[tokio::test]
async fn t46_inbound_stages_are_spans_in_pipeline_order() {
    let _serial = SERIAL.lock().await;
    let capture = Capture::default();
    let _guard = install(&capture);
    let (kit, ws, room) = kit_with(None).await;
    let before = capture.spans().len();

    let result = kit.process_inbound(message(&room)).await.unwrap();
    kit.idle().await;
    let event = result.event.unwrap();
    assert_eq!(ws.delivered().len(), 1);

    let spans: Vec<Captured> = capture.spans().split_off(before);
    let mut order: Vec<&str> = Vec::new();
    for s in &spans {
        if !order.contains(&s.name) {
            order.push(s.name);
        }
    }
    assert_eq!(
        order,
        [
            "process_inbound",
            "route_room",
            "build_context",
            "handle_inbound",
            "identity_resolve",
            "lock_room",
            "idempotency_check",
            "hook_execution",
            "permission_check",
            "store_event",
            "plan_broadcast",
            "broadcast",
            "on_event",
            "deliver",
        ]
    );
    let root = &spans[0];
    assert_eq!(root.parent, None);
    assert_eq!(root.fields["room_id"], "tr");
    assert_eq!(root.fields["channel_id"], "sms");
    assert_eq!(root.fields["event_id"], event.id.as_str());
    assert_eq!(root.fields["outcome"], "delivered");
    assert!(root.fields.contains_key("latency_ms"));
    let named = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    // Every stage of §10.1 is a child of the inbound span, the delivery
    // set included.
    for stage in [
        "route_room",
        "build_context",
        "handle_inbound",
        "identity_resolve",
        "lock_room",
        "idempotency_check",
        "hook_execution",
        "permission_check",
        "store_event",
        "plan_broadcast",
        "broadcast",
    ] {
        let s = named(stage);
        assert_eq!(s.parent, Some(root.id), "{stage}");
        assert_eq!(
            s.fields.get("room_id").map(String::as_str),
            Some("tr"),
            "{stage}: {s:?}"
        );
        assert!(s.fields.contains_key("latency_ms"), "{stage}");
    }
    let hook = named("hook_execution");
    assert_eq!(hook.fields["hook"], "let-it-pass");
    assert_eq!(hook.fields["trigger"], "before_broadcast");
    assert_eq!(hook.fields["outcome"], "allow");
    assert_eq!(named("permission_check").fields["outcome"], "allowed");
    assert_eq!(named("store_event").fields["event_id"], event.id.as_str());
    let broadcast = named("broadcast");
    assert_eq!(broadcast.fields["event_id"], event.id.as_str());
    let deliver = named("deliver");
    assert_eq!(deliver.parent, Some(broadcast.id));
    assert_eq!(deliver.fields["channel_id"], "ws");
    assert_eq!(deliver.fields["event_id"], event.id.as_str());
    assert_eq!(deliver.fields["attempt"], "1");
    assert_eq!(deliver.fields["outcome"], "sent");
    assert!(deliver.fields.contains_key("latency_ms"));
}

/// A provider that records what the engine asks of it (T-45), without
/// depending on the installed subscriber.
#[derive(Default)]
struct Recorder(Mutex<Vec<Asked>>);

/// A span name with its start attributes, printed.
type Asked = (String, Vec<(String, String)>);

impl roomkit_core::TelemetryProvider for Recorder {
    fn start_span(
        &self,
        name: roomkit_core::SpanName,
        attributes: &[roomkit_core::telemetry::Attribute<'_>],
        _parent: Option<&tracing::Span>,
    ) -> tracing::Span {
        let attrs = attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), format!("{v:?}")))
            .collect();
        self.0
            .lock()
            .unwrap()
            .push((name.as_str().to_owned(), attrs));
        tracing::Span::none()
    }

    fn record_metric(&self, _: &str, _: f64, _: &[roomkit_core::telemetry::Attribute<'_>]) {}

    fn record_event(&self, _: &str, _: &[roomkit_core::telemetry::Attribute<'_>]) {}
}

#[tokio::test]
async fn t45_a_custom_provider_is_asked_for_each_delivery_attempt() {
    let recorder = Arc::new(Recorder::default());
    let (kit, ws, room) = kit_with(Some(recorder.clone())).await;
    ws.fail_deliveries(true);
    let before = recorder.0.lock().unwrap().len();
    kit.process_inbound(message(&room)).await.unwrap();
    kit.idle().await;
    let asked = recorder.0.lock().unwrap().split_off(before);
    let names: Vec<&str> = asked.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"process_inbound"));
    for stage in ["store_event", "broadcast", "deliver"] {
        assert!(names.contains(&stage), "{names:?}");
    }
    let (_, deliver) = asked.iter().find(|(n, _)| n == "deliver").unwrap();
    assert!(
        deliver.contains(&("channel_id".to_owned(), "Str(\"ws\")".to_owned())),
        "{deliver:?}"
    );
    assert!(
        deliver.contains(&("attempt".to_owned(), "U64(1)".to_owned())),
        "{deliver:?}"
    );
}

#[tokio::test]
async fn t45_the_noop_provider_opens_no_spans() {
    let _serial = SERIAL.lock().await;
    let capture = Capture::default();
    let _guard = install(&capture);
    let (kit, ws, room) = kit_with(Some(Arc::new(NoopTelemetry))).await;
    kit.process_inbound(message(&room)).await.unwrap();
    kit.idle().await;
    assert_eq!(ws.delivered().len(), 1, "the pipeline works as before");
    assert!(capture.spans().is_empty(), "{:?}", capture.spans());
}
