//! The observer: room and framework events become transcript entries and
//! metrics, flush is idempotent, full queues drop and count, corrupt spool
//! files are quarantined.

use std::sync::Arc;
use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::{AnalyticsConfig, AudioTap, CallAnalytics, ExportState, Exporter, Side};
use roomkit_core::model::{ChannelId, FrameworkEvent, InboundMessage};
use roomkit_core::{AttachOptions, CreateRoom, RoomKit};
use roomkit_testkit::RecordingChannel;

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_twice_or_concurrently_sends_one_call_ended() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir("flush");
    let a = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let call = a.start_call(start("RM_twice"));
    play_script(&call).await;
    let (c1, c2) = (call.clone(), call.clone());
    tokio::join!(c1.flush("agent-ended"), c2.flush("client-disconnected"));
    call.flush("again").await;
    // Records after the flush are ignored.
    call.push(Side::User, &[1; 480], RATE, Duration::from_secs(100));
    call.transcript(roomkit_analytics::TranscriptInput::new(
        roomkit_analytics::Role::User,
        "late",
    ));
    assert_eq!(call.exported().await, ExportState::Completed);
    let ended: Vec<_> = fake
        .accepted_events()
        .into_iter()
        .filter(|e| e["event"] == "call-ended")
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["transcript"].as_array().unwrap().len(), 2);
    check_script_audio(&fake.stitched("RM_twice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_and_framework_events_are_collected_and_closing_the_room_ends_the_call() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir("room");
    let a = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("Your order has shipped.");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(ai.arc())
        .build()
        .unwrap();
    a.attach(&kit);
    let room = kit
        .create_room(CreateRoom::with_id("room-1"))
        .await
        .unwrap();
    for c in ["ws", "ai"] {
        kit.attach_channel(&room.id, &ChannelId::from(c), AttachOptions::default())
            .await
            .unwrap();
    }
    let call = a.start_call(start("RM_room"));
    kit.process_inbound(
        InboundMessage::text("ws", "alice", "Where is my order?").in_room("room-1"),
    )
    .await
    .unwrap();
    kit.idle().await;
    kit.emit_framework_event(FrameworkEvent::AiTurnMetrics {
        room_id: room.id.clone(),
        channel_id: "ai".into(),
        event_id: Default::default(),
        ttft_ms: Some(310.0),
        duration_ms: 900.0,
        prompt_tokens: 120,
        completion_tokens: 14,
        cached_tokens: 0,
        tokens_per_second: Some(f64::INFINITY),
        model: "m".into(),
        provider: "p".into(),
    });
    // Let the dispatcher route the events before the room closes.
    while a.call_in_room(&room.id).is_some() && fake.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    kit.close_room(&room.id).await.unwrap();
    assert_eq!(call.exported().await, ExportState::Completed);
    let ended = fake
        .accepted_events()
        .into_iter()
        .find(|e| e["event"] == "call-ended")
        .unwrap();
    assert_eq!(ended["callEndedReason"], "room-closed");
    let t = ended["transcript"].as_array().unwrap();
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[0]["role"], "user");
    assert_eq!(t[0]["content"], "Where is my order?");
    assert_eq!(t[1]["role"], "assistant");
    assert_eq!(t[1]["content"], "Your order has shipped.");
    assert_eq!(ended["agentSpokeFirst"], false);
    assert!(
        ended.get("recordingSampleRate").is_none(),
        "no audio, no recording fields"
    );
    let m = ended["metrics"].as_array().unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["kind"], "llm");
    assert_eq!(m[0]["ttft"], 0.31);
    assert_eq!(m[0]["totalTokens"], 134);
    assert!(m[0].get("tokensPerSecond").is_none(), "non-finite dropped");
    assert_eq!(m[0]["extra"]["type"], "llm_metrics");
    assert!(a.call_in_room(&room.id).is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_audio_queue_drops_and_counts_instead_of_waiting() {
    let spool = tmp_dir("full");
    let mut cfg = AnalyticsConfig::new(&spool);
    cfg.sample_rate = RATE;
    cfg.audio_queue = 64;
    let report = roomkit_analytics::LocalReportExporter::new(spool.join("reports"));
    let a = CallAnalytics::new(cfg, vec![Arc::new(report) as Arc<dyn Exporter>]).unwrap();
    let call = a.start_call(start("RM_full"));
    let tap = call.tap();
    // The call's task cannot run while this loop holds the only thread.
    for f in 0..200u64 {
        tap.push(Side::User, &[7; FRAME], RATE, Duration::from_millis(f * 20));
    }
    assert_eq!(tap.dropped_frames(), 200 - 64);
    assert_eq!(a.stats().audio_frames_dropped, 200 - 64);
    call.flush("agent-ended").await;
    assert_eq!(call.exported().await, ExportState::Completed);
    let r = roomkit_analytics::report::read_report(&spool.join("reports"), "RM_full")
        .unwrap()
        .unwrap();
    assert_eq!(r.duration_seconds, 64.0 * 0.02);
}

#[tokio::test]
async fn an_unreadable_call_is_quarantined_and_a_damaged_line_is_skipped() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir("corrupt");
    let bad = spool.join("calls").join("RM_bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("call.json"), b"{ not json").unwrap();

    // A finished call whose records file has a broken line in the middle.
    let a = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), "rk_wrong")) as Arc<dyn Exporter>],
    );
    let call = a.start_call(start("RM_badrec"));
    call.transcript(roomkit_analytics::TranscriptInput::new(
        roomkit_analytics::Role::User,
        "hi",
    ));
    call.flush("agent-ended").await;
    assert!(matches!(call.exported().await, ExportState::Parked(_)));
    a.shutdown(Duration::from_secs(1)).await;
    let rec = spool.join("calls").join("RM_badrec").join("records.jsonl");
    let mut text = std::fs::read_to_string(&rec).unwrap();
    text.insert_str(0, "garbage\n");
    std::fs::write(&rec, text).unwrap();

    let b = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let report = b.recover().await.unwrap();
    assert_eq!(report.quarantined, 1, "RM_bad: no readable call.json");
    assert_eq!(report.resumed, 1, "RM_badrec");
    // The damaged line is skipped; the rest of the call is exported.
    let state = b.wait_exported("RM_badrec").await.unwrap();
    assert_eq!(state, ExportState::Completed);
    let q: Vec<String> = std::fs::read_dir(spool.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(q.len(), 1);
    assert!(q[0].starts_with("RM_bad-"), "{q:?}");
    let ended: Vec<serde_json::Value> = fake
        .accepted_events()
        .into_iter()
        .filter(|e| e["event"] == "call-ended")
        .collect();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["transcript"][0]["content"], "hi");
    assert_eq!(b.stats().calls_quarantined, 1);
}
