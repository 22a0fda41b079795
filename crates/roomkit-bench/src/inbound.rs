//! Core pipeline workloads, identical in shape to the reference harness:
//! `inbound_single`, `inbound_multi` and `memory_rooms`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelId, ChannelType, EventContent, EventSource,
    EventStatus, EventType, HookTrigger, InboundMessage, RoomEvent, RoomId,
};
use roomkit_core::{
    AttachOptions, Channel, ChannelError, ChannelOutput, CreateRoom, HookRegistration, HookResult,
    RoomContext, RoomKit, SideEffects,
};
use serde_json::json;

use crate::common::{Options, cpu_seconds, emit, latency_summary, percentile, round1, rss_bytes};

/// Runs a core workload; `Ok(false)` when the name is not one.
pub fn run(workload: &str, opts: &Options) -> anyhow::Result<bool> {
    match workload {
        "inbound_single" | "inbound_multi" | "memory_rooms" => {}
        _ => return Ok(false),
    }
    // A durable store is the store module's business.
    if opts.get("store").is_some_and(|s| s != "memory") {
        return Ok(false);
    }
    let (rt, runtime) = crate::common::runtime(opts)?;
    rt.block_on(async {
        match workload {
            "inbound_single" => inbound(opts, Shape::single(), &runtime, None).await,
            "inbound_multi" => inbound(opts, Shape::multi(), &runtime, None).await,
            _ => memory_rooms(opts, &runtime).await,
        }
    })?;
    Ok(true)
}

/// A WebSocket-like transport with a connection registry, like the
/// reference's `WebSocketChannel`: deliver() hands the event to every
/// connection registered for the room (here: an in-memory sink that counts
/// and keeps the last event).
pub struct SinkChannel {
    id: ChannelId,
    connections: Mutex<std::collections::HashMap<RoomId, Vec<Arc<Sink>>>>,
}

/// A registered connection's send function.
#[derive(Default)]
pub struct Sink {
    /// Events received.
    pub count: AtomicU64,
    last: Mutex<Option<RoomEvent>>,
}

impl SinkChannel {
    /// A channel with no connections.
    pub fn new(id: &str) -> Arc<Self> {
        Arc::new(Self {
            id: ChannelId::from(id),
            connections: Mutex::new(Default::default()),
        })
    }

    /// Registers a connection for a room.
    pub fn register(&self, room: &RoomId) -> Arc<Sink> {
        let sink = Arc::new(Sink::default());
        self.connections
            .lock()
            .entry(room.clone())
            .or_default()
            .push(sink.clone());
        sink
    }
}

#[async_trait]
impl Channel for SinkChannel {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Websocket
    }

    fn provider_name(&self) -> Option<&str> {
        Some("bench")
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::full()
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _ctx: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let sinks = self
            .connections
            .lock()
            .get(&event.room_id)
            .cloned()
            .unwrap_or_default();
        for s in sinks {
            s.count.fetch_add(1, Ordering::Relaxed);
            *s.last.lock() = Some(event.clone());
        }
        Ok(ChannelOutput::empty())
    }
}

/// Size of an inbound workload.
#[derive(Clone, Copy)]
pub struct Shape {
    name: &'static str,
    rooms: usize,
    in_flight: usize,
    warmup: usize,
    timed: usize,
}

impl Shape {
    /// One room, one message in flight (W=200, N=5,000).
    pub fn single() -> Self {
        Self {
            name: "inbound_single",
            rooms: 1,
            in_flight: 1,
            warmup: 200,
            timed: 5000,
        }
    }
    /// 1,000 rooms, 64 in flight (W=1,000, N=10,000).
    pub fn multi() -> Self {
        Self {
            name: "inbound_multi",
            rooms: 1000,
            in_flight: 64,
            warmup: 1000,
            timed: 10_000,
        }
    }
}

/// Builds the reference setup: two sink channels, the two hooks, `rooms`
/// rooms with both channels attached and one connection per channel.
pub async fn setup(
    kit_builder: roomkit_core::RoomKitBuilder,
    rooms: usize,
) -> anyhow::Result<(
    RoomKit,
    Vec<Arc<Sink>>,
    Vec<Arc<Sink>>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    f64,
)> {
    let ws_a = SinkChannel::new("ws-a");
    let ws_b = SinkChannel::new("ws-b");
    let hook_calls = Arc::new(AtomicU64::new(0));
    let after_calls = Arc::new(AtomicU64::new(0));
    let kit = kit_builder
        .channel(ws_a.clone())
        .channel(ws_b.clone())
        .build()?;
    let t0 = Instant::now();
    let mut sinks_a = Vec::with_capacity(rooms);
    let mut sinks_b = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let id = RoomId::from(format!("room-{r}"));
        kit.create_room(CreateRoom::with_id(id.clone())).await?;
        kit.attach_channel(&id, &"ws-a".into(), AttachOptions::default())
            .await?;
        kit.attach_channel(&id, &"ws-b".into(), AttachOptions::default())
            .await?;
        sinks_a.push(ws_a.register(&id));
        sinks_b.push(ws_b.register(&id));
    }
    let setup_s = t0.elapsed().as_secs_f64();
    let calls = hook_calls.clone();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "inspect_text",
        move |input: roomkit_core::HookInput| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::Relaxed);
                let forbidden = input
                    .event()
                    .and_then(|e| e.content.as_text())
                    .is_some_and(|t| t.contains("forbidden"));
                Ok(if forbidden {
                    HookResult::block("forbidden word")
                } else {
                    HookResult::allow()
                })
            }
        },
    ));
    let after = after_calls.clone();
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::AfterBroadcast,
        "count_after",
        move |_input| {
            let after = after.clone();
            async move {
                after.fetch_add(1, Ordering::Relaxed);
                Ok(SideEffects::default())
            }
        },
    ));
    Ok((kit, sinks_a, sinks_b, hook_calls, after_calls, setup_s))
}

async fn send(kit: &RoomKit, i: usize, rooms: usize) -> anyhow::Result<u64> {
    let msg = InboundMessage::text(
        "ws-a",
        format!("user-{}", i % rooms),
        format!("message {i}"),
    )
    .in_room(format!("room-{}", i % rooms));
    let t = Instant::now();
    let r = kit.process_inbound(msg).await?;
    let ns = t.elapsed().as_nanos() as u64;
    if r.blocked {
        anyhow::bail!("message {i} was blocked: {:?}", r.reason);
    }
    Ok(ns)
}

/// The inbound throughput workload on any store.
pub async fn inbound(
    opts: &Options,
    shape: Shape,
    runtime: &str,
    store: Option<(&str, roomkit_core::RoomKitBuilder)>,
) -> anyhow::Result<()> {
    let warmup = opts.num("warmup", shape.warmup)?;
    let timed = opts.num("messages", shape.timed)?;
    let (store_name, builder) = match store {
        Some((n, b)) => (n.to_owned(), b),
        None => ("memory".to_owned(), RoomKit::builder()),
    };
    let (kit, sinks_a, sinks_b, hook_calls, after_calls, setup_s) =
        setup(builder, shape.rooms).await?;
    let rooms = shape.rooms;

    for i in 0..warmup {
        send(&kit, i, rooms).await?;
    }
    let counter = Arc::new(AtomicU64::new(warmup as u64));
    let end = (warmup + timed) as u64;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..shape.in_flight {
        let kit = kit.clone();
        let counter = counter.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let ns = send(&kit, i as usize, rooms).await?;
                lat.push((i, ns));
            }
        }));
    }
    let mut samples: Vec<(u64, u64)> = Vec::with_capacity(timed);
    for w in workers {
        samples.extend(w.await??);
    }
    // Throughput counts until the async AFTER_BROADCAST counter caught up.
    let expected_after = (warmup + timed) as u64;
    let wait_start = Instant::now();
    while after_calls.load(Ordering::Relaxed) < expected_after
        && wait_start.elapsed() < Duration::from_secs(10)
    {
        tokio::task::yield_now().await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    samples.sort_by_key(|(i, _)| *i);
    let tenths: Vec<f64> = samples
        .chunks(samples.len().div_ceil(10).max(1))
        .map(|c| {
            let mut us: Vec<f64> = c.iter().map(|(_, ns)| *ns as f64 / 1000.0).collect();
            us.sort_by(|a, b| a.total_cmp(b));
            round1(percentile(&us, 50.0))
        })
        .collect();
    let mut ns: Vec<u64> = samples.iter().map(|(_, n)| *n).collect();
    let lat = latency_summary(&mut ns);

    // Checks of the reference harness.
    let received_b: u64 = sinks_b
        .iter()
        .map(|s| s.count.load(Ordering::Relaxed))
        .sum();
    let received_a: u64 = sinks_a
        .iter()
        .map(|s| s.count.load(Ordering::Relaxed))
        .sum();
    let room0 = kit.get_room(&RoomId::from("room-0")).await?;
    let expected_room0 =
        2 + ((warmup + timed) / rooms) as u64 + u64::from(((warmup + timed) % rooms) > 0);
    let checks_ok = received_b == (warmup + timed) as u64
        && received_a == 0
        && hook_calls.load(Ordering::Relaxed) == (warmup + timed) as u64
        && room0.event_count == expected_room0;
    let mut out = json!({
        "workload": shape.name,
        "store": store_name,
        "runtime": runtime,
        "rooms": rooms,
        "in_flight": shape.in_flight,
        "warmup": warmup,
        "messages": timed,
        "msgs_per_s": round1(timed as f64 / elapsed),
        "cpu_s": (cpu * 1000.0).round() / 1000.0,
        "msgs_per_cpu_s": round1(timed as f64 / cpu.max(1e-9)),
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "setup_s": (setup_s * 1000.0).round() / 1000.0,
        "rooms_setup_per_s": round1(rooms as f64 / setup_s.max(1e-9)),
        "p50_by_tenth_us": tenths,
        "room0_events": room0.event_count,
        "checks_ok": checks_ok,
    });
    if let (Some(o), Some(l)) = (out.as_object_mut(), lat.as_object()) {
        for (k, v) in l {
            o.insert(k.clone(), v.clone());
        }
    }
    emit(&out);
    kit.shutdown().await;
    if !checks_ok {
        anyhow::bail!(
            "workload checks failed: ws-b got {received_b}, ws-a got {received_a}, room-0 has {} events",
            room0.event_count
        );
    }
    Ok(())
}

/// Bytes per room: 10,000 rooms with two bindings and `events` messages,
/// written to the store directly (`store`) or through the pipeline.
async fn memory_rooms(opts: &Options, runtime: &str) -> anyhow::Result<()> {
    let rooms: usize = opts.num("rooms", 10_000)?;
    let events: usize = opts.num("events", 10)?;
    let mode = opts.get("events-mode").unwrap_or("store").to_owned();
    if mode != "store" && mode != "pipeline" {
        anyhow::bail!("--events-mode must be store or pipeline");
    }
    let ws_a = SinkChannel::new("ws-a");
    let ws_b = SinkChannel::new("ws-b");
    let kit = RoomKit::builder().channel(ws_a).channel(ws_b).build()?;
    let populate = |prefix: &'static str, r: usize| {
        let kit = kit.clone();
        let mode = mode.clone();
        async move {
            let id = RoomId::from(format!("{prefix}-{r}"));
            kit.create_room(CreateRoom::with_id(id.clone())).await?;
            kit.attach_channel(&id, &"ws-a".into(), AttachOptions::default())
                .await?;
            kit.attach_channel(&id, &"ws-b".into(), AttachOptions::default())
                .await?;
            for j in 0..events {
                let body = format!("message {j} in room {r}");
                if mode == "pipeline" {
                    kit.process_inbound(
                        InboundMessage::text("ws-a", format!("user-{r}"), body).in_room(id.clone()),
                    )
                    .await?;
                } else {
                    let room = kit.get_room(&id).await?;
                    let mut source = EventSource::channel(
                        "ws-a".into(),
                        ChannelType::Websocket,
                        roomkit_core::model::ChannelDirection::Inbound,
                    );
                    source.participant_id = Some(format!("user-{r}").into());
                    let mut e = RoomEvent::draft(source, EventContent::text(body));
                    e.id = format!("evt-{prefix}-{r}-{j}").into();
                    e.room_id = id.clone();
                    e.event_type = EventType::Message;
                    e.status = EventStatus::Delivered;
                    e.index = room.event_count;
                    e.created_at = kit.now();
                    kit.store().add_event(e, None).await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    for r in 0..20 {
        populate("warm", r).await?;
    }
    kit.idle().await;
    let before = rss_bytes();
    let t0 = Instant::now();
    for r in 0..rooms {
        populate("room", r).await?;
    }
    kit.idle().await;
    let elapsed = t0.elapsed().as_secs_f64();
    let after = rss_bytes();
    emit(&json!({
        "workload": "memory_rooms",
        "runtime": runtime,
        "events_mode": mode,
        "measure": "rss",
        "rooms": rooms,
        "events_per_room": events,
        "bytes_per_room": (after.saturating_sub(before)) / rooms as u64,
        "rss_before": before,
        "rss_after": after,
        "rooms_per_s": round1(rooms as f64 / elapsed),
    }));
    Ok(())
}
