//! The telemetry abstraction of RFC §15.7: a [`TelemetryProvider`] the
//! engine asks for a span around each pipeline stage and each delivery
//! attempt, and for metrics and discrete events.
//!
//! Spans are [`tracing::Span`]s, so the engine stays cheap when nobody
//! listens: a span no subscriber wants is a no-op. The default provider,
//! [`TracingTelemetry`], opens real `tracing` spans under the target
//! [`SPAN_TARGET`] at DEBUG level; what becomes of them is the subscriber's
//! choice (printed by a console layer, exported by an OpenTelemetry layer,
//! or dropped). [`NoopTelemetry`] turns all of it off whatever the
//! subscriber wants.

use std::fmt;
use std::future::Future;
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Either};
use tracing::Instrument;

/// The `tracing` target of every span the engine opens.
pub const SPAN_TARGET: &str = "roomkit.telemetry";

/// The attribute names the engine sets on its spans (RFC §15.7 lists the
/// first five).
pub mod attr {
    /// Room of the operation.
    pub const ROOM_ID: &str = "room_id";
    /// Channel of the operation (the source for inbound stages, the target
    /// for deliveries).
    pub const CHANNEL_ID: &str = "channel_id";
    /// Event being processed or delivered.
    pub const EVENT_ID: &str = "event_id";
    /// Provider behind the channel, when it names one.
    pub const PROVIDER: &str = "provider";
    /// Wall time of the operation, set when it ends.
    pub const LATENCY_MS: &str = "latency_ms";
    /// Delivery attempt, from 1.
    pub const ATTEMPT: &str = "attempt";
    /// How the operation ended (e.g. `sent`, `failed`, `allowed`, `blocked`).
    pub const OUTCOME: &str = "outcome";
    /// Hook trigger, for hook spans.
    pub const TRIGGER: &str = "trigger";
    /// Hook name, for hook spans.
    pub const HOOK: &str = "hook";
    /// Error code of a failed operation.
    pub const ERROR_CODE: &str = "error_code";
    /// Number of targets of a broadcast.
    pub const TARGETS: &str = "targets";
}

/// The operations the engine traces. The names are those of RFC §15.7 where
/// it names one; the others are the §10.1 and §10.2 steps they cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpanName {
    /// A message from outside, the whole of §10.1 (the root span).
    ProcessInbound,
    /// A direct injection (§10.5), the root span of its pass.
    SendEvent,
    /// §10.1 step 2: route to a room (or create one).
    RouteRoom,
    /// §10.1 step 3: read the room context.
    BuildContext,
    /// §10.1 step 4: the channel converts the message.
    HandleInbound,
    /// §10.1 step 5: the identity resolver.
    IdentityResolve,
    /// §10.1 step 6: take the room lock and re-check the room status.
    LockRoom,
    /// §10.1 step 7: the idempotency check.
    IdempotencyCheck,
    /// One hook call (§10.1 steps 9 and 16).
    HookExecution,
    /// §10.1 step 11: the source may write.
    PermissionCheck,
    /// §10.1 steps 10 and 12: the event is stored.
    StoreEvent,
    /// §10.1 step 12: the delivery set is planned under the lock.
    PlanBroadcast,
    /// §10.1 step 14 / §10.2 step 3: one event's delivery set runs.
    Broadcast,
    /// §10.2 step 3c: one channel's `on_event()`.
    OnEvent,
    /// §10.2 step 3d: one `deliver()` attempt to a transport channel.
    Deliver,
    /// An AI channel generates a response.
    AiGenerate,
    /// Speech to text.
    SttTranscribe,
    /// Text to speech.
    TtsSynthesize,
}

impl SpanName {
    /// The span's name as exported.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ProcessInbound => "process_inbound",
            Self::SendEvent => "send_event",
            Self::RouteRoom => "route_room",
            Self::BuildContext => "build_context",
            Self::HandleInbound => "handle_inbound",
            Self::IdentityResolve => "identity_resolve",
            Self::LockRoom => "lock_room",
            Self::IdempotencyCheck => "idempotency_check",
            Self::HookExecution => "hook_execution",
            Self::PermissionCheck => "permission_check",
            Self::StoreEvent => "store_event",
            Self::PlanBroadcast => "plan_broadcast",
            Self::Broadcast => "broadcast",
            Self::OnEvent => "on_event",
            Self::Deliver => "deliver",
            Self::AiGenerate => "ai_generate",
            Self::SttTranscribe => "stt_transcribe",
            Self::TtsSynthesize => "tts_synthesize",
        }
    }
}

impl fmt::Display for SpanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attribute value; borrowed so building one costs nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    /// Text.
    Str(&'a str),
    /// Unsigned integer.
    U64(u64),
    /// Signed integer.
    I64(i64),
    /// Floating point.
    F64(f64),
    /// Boolean.
    Bool(bool),
}

impl<'a> From<&'a str> for AttrValue<'a> {
    fn from(v: &'a str) -> Self {
        Self::Str(v)
    }
}

impl From<u64> for AttrValue<'_> {
    fn from(v: u64) -> Self {
        Self::U64(v)
    }
}

impl From<u32> for AttrValue<'_> {
    fn from(v: u32) -> Self {
        Self::U64(u64::from(v))
    }
}

impl From<i64> for AttrValue<'_> {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}

impl From<f64> for AttrValue<'_> {
    fn from(v: f64) -> Self {
        Self::F64(v)
    }
}

impl From<bool> for AttrValue<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// A named attribute.
pub type Attribute<'a> = (&'static str, AttrValue<'a>);

/// Sets an attribute on a span; names the span does not declare are
/// ignored, and a disabled span is left alone without looking the name up.
pub fn record(span: &tracing::Span, name: &'static str, value: AttrValue<'_>) {
    if span.is_disabled() {
        return;
    }
    match value {
        AttrValue::Str(v) => span.record(name, v),
        AttrValue::U64(v) => span.record(name, v),
        AttrValue::I64(v) => span.record(name, v),
        AttrValue::F64(v) => span.record(name, v),
        AttrValue::Bool(v) => span.record(name, v),
    };
}

/// The telemetry provider of RFC §15.7.
///
/// The engine calls [`TelemetryProvider::start_span`] once per stage and per
/// delivery attempt; an implementation that returns [`tracing::Span::none`]
/// costs next to nothing.
pub trait TelemetryProvider: Send + Sync + 'static {
    /// Begins a span. `parent` is the enclosing span; `None` means the
    /// current one. The span is closed when the last handle is dropped.
    fn start_span(
        &self,
        name: SpanName,
        attributes: &[Attribute<'_>],
        parent: Option<&tracing::Span>,
    ) -> tracing::Span;

    /// Records a numeric metric value.
    fn record_metric(&self, name: &str, value: f64, attributes: &[Attribute<'_>]);

    /// Records a discrete event within the current span.
    fn record_event(&self, name: &str, attributes: &[Attribute<'_>]);

    /// Flushes pending data and releases resources. Called by
    /// [`crate::RoomKit::shutdown`].
    fn close(&self) {}

    /// Whether spans started now may be recorded. The engine asks once per
    /// pass, delivery job or hook call, and when the answer is `false` it
    /// starts no span, reads no clock and runs each stage unwrapped. The
    /// default is `true`, so a provider that does not override it sees
    /// every [`TelemetryProvider::start_span`] call.
    fn is_enabled(&self) -> bool {
        true
    }
}

/// Declares one span per name with every attribute the engine may set.
macro_rules! stage_span {
    ($parent:expr, $name:literal) => {
        match $parent {
            Some(p) => tracing::debug_span!(
                target: "roomkit.telemetry", parent: p, $name,
                room_id = tracing::field::Empty, channel_id = tracing::field::Empty,
                event_id = tracing::field::Empty, provider = tracing::field::Empty,
                latency_ms = tracing::field::Empty, attempt = tracing::field::Empty,
                outcome = tracing::field::Empty, trigger = tracing::field::Empty,
                hook = tracing::field::Empty, error_code = tracing::field::Empty,
                targets = tracing::field::Empty,
            ),
            None => tracing::debug_span!(
                target: "roomkit.telemetry", $name,
                room_id = tracing::field::Empty, channel_id = tracing::field::Empty,
                event_id = tracing::field::Empty, provider = tracing::field::Empty,
                latency_ms = tracing::field::Empty, attempt = tracing::field::Empty,
                outcome = tracing::field::Empty, trigger = tracing::field::Empty,
                hook = tracing::field::Empty, error_code = tracing::field::Empty,
                targets = tracing::field::Empty,
            ),
        }
    };
}

/// The default provider: `tracing` spans and events, left to the installed
/// subscriber. With a console layer that enables [`SPAN_TARGET`] this is the
/// console provider of §15.7; with an OpenTelemetry layer it is the OTLP
/// one.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingTelemetry;

impl TelemetryProvider for TracingTelemetry {
    fn start_span(
        &self,
        name: SpanName,
        attributes: &[Attribute<'_>],
        parent: Option<&tracing::Span>,
    ) -> tracing::Span {
        let span = match name {
            SpanName::ProcessInbound => stage_span!(parent, "process_inbound"),
            SpanName::SendEvent => stage_span!(parent, "send_event"),
            SpanName::RouteRoom => stage_span!(parent, "route_room"),
            SpanName::BuildContext => stage_span!(parent, "build_context"),
            SpanName::HandleInbound => stage_span!(parent, "handle_inbound"),
            SpanName::IdentityResolve => stage_span!(parent, "identity_resolve"),
            SpanName::LockRoom => stage_span!(parent, "lock_room"),
            SpanName::IdempotencyCheck => stage_span!(parent, "idempotency_check"),
            SpanName::HookExecution => stage_span!(parent, "hook_execution"),
            SpanName::PermissionCheck => stage_span!(parent, "permission_check"),
            SpanName::StoreEvent => stage_span!(parent, "store_event"),
            SpanName::PlanBroadcast => stage_span!(parent, "plan_broadcast"),
            SpanName::Broadcast => stage_span!(parent, "broadcast"),
            SpanName::OnEvent => stage_span!(parent, "on_event"),
            SpanName::Deliver => stage_span!(parent, "deliver"),
            SpanName::AiGenerate => stage_span!(parent, "ai_generate"),
            SpanName::SttTranscribe => stage_span!(parent, "stt_transcribe"),
            SpanName::TtsSynthesize => stage_span!(parent, "tts_synthesize"),
        };
        // A callsite no subscriber wants gives a disabled span that still
        // carries its metadata; the engine only needs to know it is off.
        if span.is_disabled() {
            return tracing::Span::none();
        }
        for (k, v) in attributes {
            record(&span, k, *v);
        }
        span
    }

    /// True when the installed subscriber enables spans of [`SPAN_TARGET`]
    /// at DEBUG level: a few loads of cached interest and levels.
    fn is_enabled(&self) -> bool {
        tracing::enabled!(
            kind: tracing::metadata::Kind::SPAN,
            target: "roomkit.telemetry",
            tracing::Level::DEBUG
        )
    }

    fn record_metric(&self, name: &str, value: f64, attributes: &[Attribute<'_>]) {
        if tracing::enabled!(target: "roomkit.telemetry", tracing::Level::DEBUG) {
            tracing::debug!(target: "roomkit.telemetry", metric = name, value, attributes = ?attributes, "metric");
        }
    }

    fn record_event(&self, name: &str, attributes: &[Attribute<'_>]) {
        if tracing::enabled!(target: "roomkit.telemetry", tracing::Level::DEBUG) {
            tracing::debug!(target: "roomkit.telemetry", event = name, attributes = ?attributes, "event");
        }
    }
}

/// Telemetry turned off: no spans, metrics or events, whatever the
/// subscriber.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopTelemetry;

impl TelemetryProvider for NoopTelemetry {
    fn start_span(
        &self,
        _name: SpanName,
        _attributes: &[Attribute<'_>],
        _parent: Option<&tracing::Span>,
    ) -> tracing::Span {
        tracing::Span::none()
    }

    fn record_metric(&self, _name: &str, _value: f64, _attributes: &[Attribute<'_>]) {}

    fn record_event(&self, _name: &str, _attributes: &[Attribute<'_>]) {}

    fn is_enabled(&self) -> bool {
        false
    }
}

/// Runs a future inside a span and sets `latency_ms` on it when it ends.
///
/// A disabled span costs one check: the future is returned as it is, with
/// no clock read and no instrumentation around it. An enabled one is boxed
/// with its span, so the future stays barely larger than `fut` either way.
#[inline(always)]
pub fn timed<'a, F>(span: tracing::Span, fut: F) -> Either<F, BoxFuture<'a, F::Output>>
where
    F: Future + Send + 'a,
{
    if span.is_disabled() {
        return Either::Left(fut);
    }
    let started = Instant::now();
    let inner = span.clone();
    Either::Right(Box::pin(
        fut.inspect(move |_| {
            inner.record(attr::LATENCY_MS, elapsed_ms(started));
        })
        .instrument(span),
    ))
}

/// A span entered for a stretch of synchronous code; sets `latency_ms` when
/// dropped. Never hold one across an `.await`.
pub struct SyncStage {
    span: tracing::span::EnteredSpan,
    started: Option<Instant>,
}

impl SyncStage {
    /// Enters `span`.
    pub fn enter(span: tracing::Span) -> Self {
        let started = (!span.is_disabled()).then(Instant::now);
        Self {
            span: span.entered(),
            started,
        }
    }

    /// Sets an attribute on the span.
    pub fn record(&self, name: &'static str, value: AttrValue<'_>) {
        if self.started.is_some() {
            record(&self.span, name, value);
        }
    }
}

impl Drop for SyncStage {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            self.span.record(attr::LATENCY_MS, elapsed_ms(started));
        }
    }
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noop_spans_are_disabled() {
        let span = NoopTelemetry.start_span(SpanName::Deliver, &[], None);
        assert!(span.is_disabled());
    }

    #[test]
    fn names_are_the_rfc_ones() {
        assert_eq!(SpanName::ProcessInbound.as_str(), "process_inbound");
        assert_eq!(SpanName::StoreEvent.to_string(), "store_event");
        assert_eq!(SpanName::HookExecution.as_str(), "hook_execution");
        assert_eq!(SpanName::IdentityResolve.as_str(), "identity_resolve");
    }
}
