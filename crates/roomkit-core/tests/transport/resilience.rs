//! Breaker, retry, rate limit and timeout around `deliver()` (RFC §13.1-13.3,
//! decision D14), on a paused clock with a scripted provider.

use std::time::Duration;

use roomkit_core::model::{
    ChannelId, DeliveryStatus, EventStatus, FrameworkEvent, RateLimit, RetryPolicy, RoomId,
};
use roomkit_core::{
    AttachOptions, BreakerState, CreateRoom, Jitter, ResilienceConfig, RoomKit, SendEvent,
};
use roomkit_testkit::{FrameworkLog, RecordingChannel};

use crate::fake::{FakeProvider, Step};

fn kit(fake: &FakeProvider, config: ResilienceConfig) -> RoomKit {
    RoomKit::builder()
        .channel(RecordingChannel::websocket("ws").arc())
        .channel(fake.arc())
        .resilience(config)
        .delivery_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn no_jitter() -> ResilienceConfig {
    ResilienceConfig {
        jitter: Jitter::None,
        ..ResilienceConfig::default()
    }
}

async fn room(kit: &RoomKit, sms: AttachOptions) -> RoomId {
    let room = kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    kit.attach_channel(&room.id, &ChannelId::from("ws"), AttachOptions::default())
        .await
        .unwrap();
    kit.attach_channel(&room.id, &ChannelId::from("sms"), sms)
        .await
        .unwrap();
    room.id
}

fn retry(max_retries: u32) -> AttachOptions {
    AttachOptions {
        retry_policy: Some(RetryPolicy {
            max_retries,
            ..RetryPolicy::default()
        }),
        ..AttachOptions::default()
    }
}

async fn send(kit: &RoomKit, room: &RoomId, text: &str) -> roomkit_core::model::InboundResult {
    kit.send_event(SendEvent::text(room.clone(), "ws", text))
        .await
        .unwrap()
}

fn sms_result(r: &roomkit_core::model::InboundResult) -> roomkit_core::model::DeliveryResult {
    r.delivery_results
        .iter()
        .find(|(c, _)| c.as_str() == "sms")
        .map(|(_, d)| d.clone())
        .expect("a delivery result for sms")
}

fn count(events: &[FrameworkEvent], name: &str) -> usize {
    events.iter().filter(|e| e.name() == name).count()
}

/// T-36, T-37: five consecutive failures open the breaker (D14), an open
/// breaker fails fast without calling the provider, after 30 s exactly one
/// probe goes through and its success closes the breaker.
#[tokio::test(start_paused = true)]
async fn t36_breaker_opens_fails_fast_and_closes_on_schedule() {
    let fake = FakeProvider::new("sms");
    fake.then_always(Step::Fail);
    let kit = kit(&fake, no_jitter());
    let log = FrameworkLog::start(&kit);
    let room = room(&kit, AttachOptions::default()).await;
    let sms = ChannelId::from("sms");

    for i in 0..5 {
        let r = send(&kit, &room, &format!("m{i}")).await;
        assert_eq!(sms_result(&r).status, DeliveryStatus::Failed);
        assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
    }
    assert_eq!(fake.calls(), 5);
    assert_eq!(kit.circuit_state(&sms), BreakerState::Open);
    let events = log.events().await;
    let opened: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            FrameworkEvent::CircuitBreakerOpened {
                channel_id,
                failure_count,
            } => Some((channel_id.clone(), *failure_count)),
            _ => None,
        })
        .collect();
    assert_eq!(opened, vec![(sms.clone(), 5)]);

    // Open: fail fast, the provider is not called, the failure is recorded.
    let r = send(&kit, &room, "while open").await;
    let d = sms_result(&r);
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.error.unwrap().code, "circuit_open");
    assert_eq!(fake.calls(), 5);

    // 29 s later still open.
    tokio::time::sleep(Duration::from_secs(29)).await;
    send(&kit, &room, "still open").await;
    assert_eq!(fake.calls(), 5);

    // At 30 s one probe; it fails, so the breaker reopens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kit.circuit_state(&sms), BreakerState::HalfOpen);
    send(&kit, &room, "probe 1").await;
    assert_eq!(fake.calls(), 6);
    assert_eq!(kit.circuit_state(&sms), BreakerState::Open);
    send(&kit, &room, "after failed probe").await;
    assert_eq!(fake.calls(), 6);

    // Next cooldown: the probe succeeds and closes it.
    fake.then_always(Step::Ok);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let r = send(&kit, &room, "probe 2").await;
    assert_eq!(sms_result(&r).status, DeliveryStatus::Sent);
    assert_eq!(kit.circuit_state(&sms), BreakerState::Closed);
    send(&kit, &room, "closed").await;
    assert_eq!(fake.calls(), 8);
    let events = log.events().await;
    assert_eq!(count(&events, "circuit_breaker_opened"), 2);
    assert_eq!(count(&events, "circuit_breaker_closed"), 1);
    assert_eq!(fake.sent(), vec!["probe 2", "closed"]);
}

/// T-38, T-39: retries follow `min(base * 2^attempt, max)` with the attempt
/// counted from 0, stop at max_retries, then delivery_failed is emitted once
/// and the event stays DELIVERED.
#[tokio::test(start_paused = true)]
async fn t38_retries_back_off_and_stop_at_the_limit() {
    let fake = FakeProvider::new("sms");
    fake.then_always(Step::Fail);
    let kit = kit(&fake, no_jitter());
    let log = FrameworkLog::start(&kit);
    let room = room(&kit, retry(3)).await;

    let r = send(&kit, &room, "hello").await;
    assert_eq!(fake.calls(), 4, "one attempt and three retries");
    let t: Vec<f64> = fake.call_times().iter().map(|d| d.as_secs_f64()).collect();
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, vec![0.5, 1.0, 2.0]);
    let d = sms_result(&r);
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert!(d.error.unwrap().retryable);
    assert_eq!(r.event.unwrap().status, EventStatus::Delivered);
    let events = log.events().await;
    assert_eq!(count(&events, "delivery_failed"), 1);
    assert_eq!(count(&events, "circuit_breaker_opened"), 0);
}

/// Full jitter keeps every wait at or under the computed delay.
#[tokio::test(start_paused = true)]
async fn t38_full_jitter_waits_no_longer_than_the_policy() {
    let fake = FakeProvider::new("sms");
    fake.then_always(Step::Fail);
    let kit = kit(&fake, ResilienceConfig::default());
    let room = room(&kit, retry(3)).await;
    send(&kit, &room, "hello").await;
    let t: Vec<f64> = fake.call_times().iter().map(|d| d.as_secs_f64()).collect();
    assert_eq!(t.len(), 4);
    for (i, w) in t.windows(2).enumerate() {
        let cap = 0.5 * 2f64.powi(i as i32);
        assert!(
            w[1] - w[0] <= cap + 1e-9,
            "gap {i} is {} > {cap}",
            w[1] - w[0]
        );
    }
}

/// T-38: errors not marked retryable are not retried.
#[tokio::test(start_paused = true)]
async fn t38_non_retryable_errors_are_not_retried() {
    let fake = FakeProvider::new("sms");
    fake.script(&[Step::FailFatal]);
    let kit = kit(&fake, no_jitter());
    let room = room(&kit, retry(3)).await;
    let r = send(&kit, &room, "hello").await;
    assert_eq!(fake.calls(), 1);
    assert_eq!(sms_result(&r).error.unwrap().code, "400");
}

/// A provider's retry-after outranks the computed delay.
#[tokio::test(start_paused = true)]
async fn retry_after_from_the_provider_is_honoured() {
    let fake = FakeProvider::new("sms");
    fake.script(&[Step::RetryAfter(7.0), Step::Ok]);
    let kit = kit(&fake, no_jitter());
    let room = room(&kit, retry(3)).await;
    let r = send(&kit, &room, "hello").await;
    assert_eq!(sms_result(&r).status, DeliveryStatus::Sent);
    let t = fake.call_times();
    assert_eq!(t[1] - t[0], Duration::from_secs(7));
    assert_eq!(fake.sent(), vec!["hello"]);
}

/// A stalled provider call is cut by the per-operation timeout and retried;
/// the message reaches the provider exactly once.
#[tokio::test(start_paused = true)]
async fn a_stalled_delivery_times_out_and_is_retried_once() {
    let fake = FakeProvider::new("sms");
    fake.script(&[Step::Stall, Step::Ok]);
    let kit = kit(&fake, no_jitter());
    let room = room(&kit, retry(3)).await;
    let r = send(&kit, &room, "hello").await;
    assert_eq!(sms_result(&r).status, DeliveryStatus::Sent);
    let t = fake.call_times();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t[1] - t[0],
        Duration::from_millis(2500),
        "2 s timeout + 0.5 s backoff"
    );
    assert_eq!(fake.sent(), vec!["hello"]);
}

/// Without a retry policy a timeout is recorded as a failed delivery.
#[tokio::test(start_paused = true)]
async fn a_stall_without_retry_is_recorded_as_failed() {
    let fake = FakeProvider::new("sms");
    fake.script(&[Step::Stall]);
    let kit = kit(&fake, no_jitter());
    let room = room(&kit, AttachOptions::default()).await;
    let r = send(&kit, &room, "hello").await;
    let d = sms_result(&r);
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.error.unwrap().code, "timeout");
    let stored = kit.get_event(&room, &r.event.unwrap().id).await.unwrap();
    assert_eq!(
        stored.delivery_results.iter().next().map(|(_, d)| d.status),
        Some(DeliveryStatus::Failed),
        "the failure is stored on the event"
    );
}

/// T-40: a burst of 20 events to a 2/s binding: all 20 arrive, in order,
/// each once, spaced by the bucket.
#[tokio::test(start_paused = true)]
async fn t40_rate_limited_burst_is_queued_not_dropped() {
    let fake = FakeProvider::new("sms");
    let kit = kit(&fake, no_jitter());
    let room = room(
        &kit,
        AttachOptions {
            rate_limit: Some(RateLimit {
                max_per_second: Some(2.0),
                max_per_minute: None,
                burst: None,
            }),
            ..AttachOptions::default()
        },
    )
    .await;
    let sends = (0..20).map(|i| {
        let kit = kit.clone();
        let room = room.clone();
        async move { send(&kit, &room, &format!("m{i:02}")).await }
    });
    let results = futures::future::join_all(sends).await;
    assert!(
        results
            .iter()
            .all(|r| sms_result(r).status == DeliveryStatus::Sent)
    );
    let mut sent = fake.sent();
    assert_eq!(sent.len(), 20);
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 20, "each message once");
    let t = fake.call_times();
    for w in t.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(500), "spaced: {t:?}");
    }
    assert!(t[19] - t[0] >= Duration::from_millis(9500));
}

/// A channel-level limit (capabilities.rate_limit) holds across rooms.
#[tokio::test(start_paused = true)]
async fn channel_rate_limit_holds_across_rooms() {
    let mut caps = roomkit_core::model::ChannelCapabilities::text_only();
    caps.rate_limit = Some(RateLimit {
        max_per_second: None,
        max_per_minute: Some(60.0),
        burst: Some(2),
    });
    let fake = FakeProvider::new("sms").with_capabilities(caps);
    let kit = kit(&fake, no_jitter());
    let mut rooms = Vec::new();
    for i in 0..6 {
        let room = kit
            .create_room(CreateRoom::with_id(format!("r{i}")))
            .await
            .unwrap();
        for c in ["ws", "sms"] {
            kit.attach_channel(&room.id, &ChannelId::from(c), AttachOptions::default())
                .await
                .unwrap();
        }
        rooms.push(room.id);
    }
    let sends = rooms.iter().map(|room| {
        let kit = kit.clone();
        let room = room.clone();
        async move { send(&kit, &room, "x").await }
    });
    futures::future::join_all(sends).await;
    let t = fake.call_times();
    assert_eq!(t.len(), 6);
    // Two at once (the burst), then one per second.
    assert_eq!(t[5] - t[0], Duration::from_secs(4));
}
