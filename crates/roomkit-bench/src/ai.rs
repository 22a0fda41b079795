//! AI round-trip workloads, shaped like the reference harness's
//! `ai_roundtrip`: an inbound message goes through the pipeline, the AI
//! channel answers with a provider that replies at once, and the reply is
//! timed when it reaches the WebSocket-like transport. `ai_single` is one
//! room with one message in flight; `ai_multi` is 100 rooms with 16.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;
use roomkit_ai::{AiChannel, StaticProvider, StreamMode, Usage};
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelId, ChannelType, InboundMessage, RoomEvent, RoomId,
};
use roomkit_core::{
    AttachOptions, Channel, ChannelError, ChannelOutput, CreateRoom, RoomContext, RoomKit,
};
use serde_json::json;
use tokio::sync::oneshot;

use crate::common::{Options, cpu_seconds, emit, latency_summary, round1};

/// The fixed reply of the reference harness's mock provider.
pub const REPLY: &str = "This is a fixed reply from the mock AI provider.";

/// Runs an AI workload; `Ok(false)` when the name is not one.
pub fn run(workload: &str, opts: &Options) -> anyhow::Result<bool> {
    let shape = match workload {
        "ai_single" => Shape {
            name: "ai_single",
            rooms: 1,
            in_flight: 1,
            warmup: 100,
            timed: 1000,
        },
        "ai_multi" => Shape {
            name: "ai_multi",
            rooms: 100,
            in_flight: 16,
            warmup: 100,
            timed: 2000,
        },
        _ => return Ok(false),
    };
    let (rt, runtime) = crate::common::runtime(opts)?;
    rt.block_on(roundtrip(opts, shape, &runtime))?;
    Ok(true)
}

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    rooms: usize,
    in_flight: usize,
    warmup: usize,
    timed: usize,
}

/// A WebSocket-like transport whose send function completes the waiter of
/// the room when the AI's reply arrives (the reference's `ws_send`).
struct ReplySink {
    id: ChannelId,
    waiters: Mutex<HashMap<RoomId, oneshot::Sender<Instant>>>,
    replies: AtomicU64,
    wrong: AtomicU64,
}

#[async_trait]
impl Channel for ReplySink {
    fn id(&self) -> &ChannelId {
        &self.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Websocket
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
        let now = Instant::now();
        if event.source.channel_id.as_str() == "ai" {
            if event.content.as_text() == Some(REPLY) {
                self.replies.fetch_add(1, Ordering::Relaxed);
            } else {
                self.wrong.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(tx) = self.waiters.lock().remove(&event.room_id) {
                let _ = tx.send(now);
            }
        }
        Ok(ChannelOutput::empty())
    }
}

/// One message: inbound to reply delivered, in nanoseconds.
async fn send(kit: &RoomKit, sink: &ReplySink, i: usize, rooms: usize) -> anyhow::Result<u64> {
    let room = RoomId::from(format!("room-{}", i % rooms));
    let (tx, rx) = oneshot::channel();
    sink.waiters.lock().insert(room.clone(), tx);
    let msg = InboundMessage::text(
        "ws",
        format!("user-{}", i % rooms),
        format!("question {i}: what is the answer?"),
    )
    .in_room(room);
    let t0 = Instant::now();
    let r = kit.process_inbound(msg).await?;
    if r.blocked {
        anyhow::bail!("message {i} was blocked: {:?}", r.reason);
    }
    let delivered = rx
        .await
        .map_err(|_| anyhow::anyhow!("message {i}: the AI reply never reached the transport"))?;
    Ok(delivered.duration_since(t0).as_nanos() as u64)
}

async fn roundtrip(opts: &Options, shape: Shape, runtime: &str) -> anyhow::Result<()> {
    let warmup = opts.num("warmup", shape.warmup)?;
    let timed = opts.num("messages", shape.timed)?;
    let sink = Arc::new(ReplySink {
        id: ChannelId::from("ws"),
        waiters: Mutex::new(HashMap::new()),
        replies: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
    });
    let provider = Arc::new(StaticProvider::new(
        REPLY,
        Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            cached_tokens: 0,
        },
    ));
    let ai = Arc::new(
        AiChannel::builder("ai")
            .provider(provider)
            .system_prompt("You are a benchmark assistant.")
            .temperature(0.7)
            .max_context_events(50)
            .max_tool_rounds(50)
            .stream(StreamMode::Never)
            .build(),
    );
    let kit = RoomKit::builder()
        .channel(sink.clone())
        .channel(ai.clone())
        .build()?;
    ai.attach_kit(&kit);
    let t0 = Instant::now();
    for r in 0..shape.rooms {
        let id = RoomId::from(format!("room-{r}"));
        kit.create_room(CreateRoom::with_id(id.clone())).await?;
        kit.attach_channel(&id, &"ws".into(), AttachOptions::default())
            .await?;
        kit.attach_channel(&id, &"ai".into(), AttachOptions::default())
            .await?;
    }
    let setup_s = t0.elapsed().as_secs_f64();
    for i in 0..warmup {
        send(&kit, &sink, i, shape.rooms).await?;
    }

    let counter = Arc::new(AtomicU64::new(warmup as u64));
    let end = (warmup + timed) as u64;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut workers = Vec::new();
    // At most one message in flight per room: worker w takes the messages
    // whose room is w modulo the number of workers.
    let in_flight = shape.in_flight.min(shape.rooms);
    for w in 0..in_flight {
        let kit = kit.clone();
        let sink = sink.clone();
        let counter = counter.clone();
        let rooms = shape.rooms;
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>(lat);
                }
                // Keep the per-room rule: shift to a room this worker owns.
                let mut j = i as usize;
                while (j % rooms) % in_flight != w {
                    j += 1;
                }
                let ns = send(&kit, &sink, j, rooms).await?;
                lat.push(ns);
            }
        }));
    }
    let mut samples: Vec<u64> = Vec::with_capacity(timed);
    for w in workers {
        samples.extend(w.await??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    kit.idle().await;
    let lat = latency_summary(&mut samples);
    let replies = sink.replies.load(Ordering::Relaxed);
    let wrong = sink.wrong.load(Ordering::Relaxed);
    let room0 = kit.get_room(&RoomId::from("room-0")).await?;
    let checks_ok = replies == (warmup + timed) as u64 && wrong == 0;
    let mut out = json!({
        "workload": shape.name,
        "store": "memory",
        "runtime": runtime,
        "rooms": shape.rooms,
        "in_flight": in_flight,
        "warmup": warmup,
        "messages": timed,
        "msgs_per_s": round1(timed as f64 / elapsed),
        "cpu_s": (cpu * 1000.0).round() / 1000.0,
        "msgs_per_cpu_s": round1(timed as f64 / cpu.max(1e-9)),
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "setup_s": (setup_s * 1000.0).round() / 1000.0,
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
        anyhow::bail!("workload checks failed: {replies} correct replies, {wrong} wrong");
    }
    Ok(())
}
