//! The Roark exporter against the fake backend: traffic checked field by
//! field, retries through 5xx answers, refused connections and slow
//! answers, resumption after a permanent refusal.

use std::sync::Arc;
use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults, Recorded};
use roomkit_analytics::protocol::{CHUNK_BYTES, CHUNK_UPLOAD_PATH, WEBHOOK_PATH, parse_timestamp};
use roomkit_analytics::{AudioTap, ExportState, Exporter, Side};

use crate::util::*;

fn is_event(r: &Recorded, event: &str) -> bool {
    r.method == "POST" && r.path == WEBHOOK_PATH && r.json().is_some_and(|v| v["event"] == event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_matches_the_protocol_field_by_field_through_injected_5xx() {
    let fake = FakeRoark::start(
        KEY,
        Faults {
            fail_every: 3,
            delay: Duration::from_millis(2),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let spool = tmp_dir("proto");
    let exporter = roark(&fake.base_url(), KEY);
    let analytics = analytics(
        &spool,
        vec![Arc::new(exporter.clone()) as Arc<dyn Exporter>],
    );
    let call = analytics.start_call(start("RM_proto1"));
    assert!(call.is_enabled());
    play_script(&call).await;
    call.flush("agent-ended").await;
    assert_eq!(call.exported().await, ExportState::Completed);

    let reqs = fake.requests();
    assert!(reqs.iter().any(|r| r.status == 503), "faults were injected");
    assert!(exporter.stats().retries > 0, "and retried");

    // call-started comes first: nothing but call-started attempts before
    // the accepted one.
    let started_at = reqs
        .iter()
        .position(|r| is_event(r, "call-started") && r.status == 200)
        .expect("call-started accepted");
    assert!(
        reqs[..started_at]
            .iter()
            .all(|r| is_event(r, "call-started"))
    );
    assert_eq!(
        reqs.iter()
            .filter(|r| is_event(r, "call-started") && r.status == 200)
            .count(),
        1
    );
    assert_eq!(
        reqs.iter()
            .filter(|r| is_event(r, "call-ended") && r.status == 200)
            .count(),
        1
    );

    // Auth: both headers on webhooks and presigns, none on PUTs.
    for r in &reqs {
        if r.method == "POST" {
            assert_eq!(r.header("x-roark-api-key"), Some(KEY), "{}", r.path);
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {KEY}").as_str())
            );
            assert_eq!(r.header("content-type"), Some("application/json"));
        } else {
            assert_eq!(r.method, "PUT");
            assert!(r.path.starts_with("/upload/RM_proto1/"), "{}", r.path);
            assert!(
                r.path.contains("X-Amz-Signature="),
                "the presigned URL is used verbatim"
            );
            assert_eq!(r.header("authorization"), None);
            assert_eq!(r.header("x-roark-api-key"), None);
            assert_eq!(r.header("content-type"), Some("audio/pcm"));
            assert_eq!(
                r.header("content-length"),
                Some(r.body.len().to_string().as_str())
            );
            assert_eq!(r.header("transfer-encoding"), None);
        }
    }

    // call-started body.
    let started = &reqs[started_at];
    assert_eq!(
        key_order(&started.body),
        [
            "event",
            "livekitCallId",
            "eventTimestamp",
            "agentId",
            "isTest",
            "agentName",
            "agentPrompt",
            "roomName"
        ]
    );
    let sv = started.json().unwrap();
    assert_eq!(sv["event"], "call-started");
    assert_eq!(sv["livekitCallId"], "RM_proto1");
    assert_eq!(sv["agentId"], "agent-7");
    assert_eq!(sv["isTest"], true);
    assert_eq!(sv["agentName"], "Support Bot");
    assert_eq!(sv["agentPrompt"], "be nice");
    assert_eq!(sv["roomName"], "room-1");
    let started_ts = sv["eventTimestamp"].as_str().unwrap().to_owned();
    assert!(is_protocol_timestamp(&started_ts), "{started_ts}");
    // Compact JSON, raw UTF-8.
    assert!(!std::str::from_utf8(&started.body).unwrap().contains(": "));

    // Presign bodies: key order, content type, every index from 0 once
    // accepted.
    let presigns: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.path == CHUNK_UPLOAD_PATH)
        .collect();
    let total = SCRIPT_FRAMES * FRAME as u64 * 4;
    let n_chunks = total.div_ceil(CHUNK_BYTES);
    assert_eq!(n_chunks, 3, "two full chunks and a tail");
    for p in &presigns {
        assert!(
            p.seq > started.seq,
            "no presign before call-started was accepted"
        );
        assert_eq!(
            key_order(&p.body),
            ["livekitCallId", "chunkIndex", "contentType"]
        );
        let v = p.json().unwrap();
        assert_eq!(v["livekitCallId"], "RM_proto1");
        assert_eq!(v["contentType"], "audio/pcm");
        assert!(v["chunkIndex"].as_u64().unwrap() < n_chunks);
    }
    let chunks = fake.chunks("RM_proto1");
    assert_eq!(
        chunks.keys().copied().collect::<Vec<_>>(),
        (0..n_chunks).collect::<Vec<_>>()
    );
    for (i, c) in &chunks {
        if *i + 1 < n_chunks {
            assert_eq!(c.len() as u64, CHUNK_BYTES, "chunk {i}");
        } else {
            assert_eq!(c.len() as u64, total - CHUNK_BYTES * (n_chunks - 1), "tail");
        }
    }
    check_script_audio(&fake.stitched("RM_proto1"));

    // call-ended comes after every accepted PUT.
    let ended = reqs
        .iter()
        .find(|r| is_event(r, "call-ended") && r.status == 200)
        .unwrap();
    assert!(
        reqs.iter()
            .filter(|r| r.method == "PUT" && r.status == 200)
            .all(|r| r.seq < ended.seq)
    );
    assert_eq!(
        key_order(&ended.body),
        [
            "event",
            "livekitCallId",
            "eventTimestamp",
            "callStartedAt",
            "callEndedAt",
            "callEndedReason",
            "agentSpokeFirst",
            "recordingSampleRate",
            "recordingNumChannels",
            "transcript",
            "toolCalls",
            "metrics"
        ]
    );
    let ev = ended.json().unwrap();
    assert_eq!(ev["event"], "call-ended");
    assert_eq!(ev["livekitCallId"], "RM_proto1");
    assert_eq!(ev["callStartedAt"], started_ts.as_str());
    assert_eq!(ev["eventTimestamp"], ev["callEndedAt"]);
    assert!(is_protocol_timestamp(ev["callEndedAt"].as_str().unwrap()));
    assert_eq!(ev["callEndedReason"], "agent-ended");
    assert_eq!(ev["agentSpokeFirst"], false);
    assert_eq!(ev["recordingSampleRate"], RATE);
    assert_eq!(ev["recordingNumChannels"], 2);

    // Transcript: keys, offsets, and one anchor for every entry.
    let anchor = parse_timestamp(&started_ts).unwrap();
    let orders = nested_key_orders(&ended.body, "transcript");
    assert_eq!(
        orders[0],
        [
            "role",
            "content",
            "timestamp",
            "endTimestamp",
            "audioOffsetMs",
            "endAudioOffsetMs",
            "userId",
            "language"
        ]
    );
    assert_eq!(
        orders[1],
        [
            "role",
            "content",
            "timestamp",
            "endTimestamp",
            "audioOffsetMs",
            "endAudioOffsetMs"
        ]
    );
    let t = ev["transcript"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["role"], "user");
    assert_eq!(t[0]["content"], "Hi, where is my order?");
    assert_eq!(t[0]["audioOffsetMs"], 500);
    assert_eq!(t[0]["endAudioOffsetMs"], 2000);
    assert_eq!(t[0]["language"], "en");
    assert_eq!(t[0]["userId"], "u-1");
    assert_eq!(t[1]["role"], "assistant");
    assert_eq!(t[1]["audioOffsetMs"], 3000);
    assert_eq!(t[1]["endAudioOffsetMs"], 6000);
    for e in t {
        for (ts, off) in [
            ("timestamp", "audioOffsetMs"),
            ("endTimestamp", "endAudioOffsetMs"),
        ] {
            let at = parse_timestamp(e[ts].as_str().unwrap()).unwrap();
            assert!(is_protocol_timestamp(e[ts].as_str().unwrap()));
            let off = e[off].as_i64().unwrap();
            assert_eq!(
                (at - anchor).num_milliseconds(),
                off,
                "{ts} sits at its offset"
            );
        }
    }

    // Tool calls: the call, then its result, same id; arguments a string.
    let tc = ev["toolCalls"].as_array().unwrap();
    assert_eq!(tc.len(), 2);
    assert_eq!(
        nested_key_orders(&ended.body, "toolCalls"),
        [
            vec![
                "kind",
                "toolCallId",
                "name",
                "arguments",
                "timestamp",
                "audioOffsetMs"
            ],
            vec![
                "kind",
                "toolCallId",
                "content",
                "timestamp",
                "audioOffsetMs"
            ],
        ]
    );
    assert_eq!(tc[0]["kind"], "tool_call");
    assert_eq!(tc[0]["toolCallId"], "call_abc123");
    assert_eq!(tc[0]["name"], "lookup_order");
    assert_eq!(tc[0]["arguments"], r#"{"order_id":"TEST-1234"}"#);
    assert_eq!(tc[1]["kind"], "tool_result");
    assert_eq!(tc[1]["toolCallId"], "call_abc123");
    assert_eq!(tc[1]["content"], r#"{"status":"shipped"}"#);

    // Metrics: kind, timestamp, offset, known fields in alphabetical order
    // of their snake-case names; the NaN is gone, not the event.
    let m = ev["metrics"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    let morders = nested_key_orders(&ended.body, "metrics");
    assert_eq!(
        morders[0],
        [
            "kind",
            "timestamp",
            "audioOffsetMs",
            "endOfUtteranceDelay",
            "transcriptionDelay"
        ]
    );
    assert_eq!(
        morders[1],
        [
            "kind",
            "timestamp",
            "audioOffsetMs",
            "completionTokens",
            "duration",
            "promptTokens",
            "totalTokens"
        ]
    );
    assert_eq!(m[0]["kind"], "eou");
    assert_eq!(m[1]["kind"], "llm");
    assert_eq!(m[1]["promptTokens"], 120);
    assert!(m[1].get("ttft").is_none());

    // The spool is cleaned up once exported.
    assert!(!spool.join("calls").join("RM_proto1").exists());
    analytics.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_do_not_lose_the_call() {
    // A port nobody listens on, yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let spool = tmp_dir("refused");
    let exporter = roark(&format!("http://{addr}"), KEY);
    let analytics = analytics(
        &spool,
        vec![Arc::new(exporter.clone()) as Arc<dyn Exporter>],
    );
    let call = analytics.start_call(start("RM_refused"));
    play_script(&call).await;
    call.flush("agent-ended").await;
    while exporter.stats().transport_errors < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        analytics.export_state("RM_refused"),
        Some(ExportState::Running)
    );
    let fake = FakeRoark::start_on(addr, KEY, Faults::default())
        .await
        .unwrap();
    assert_eq!(call.exported().await, ExportState::Completed);
    let events = fake.accepted_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event"], "call-started");
    assert_eq!(events[1]["event"], "call-ended");
    check_script_audio(&fake.stitched("RM_refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_never_holds_up_the_call() {
    let fake = FakeRoark::start(
        KEY,
        Faults {
            delay: Duration::from_secs(3),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let spool = tmp_dir("slow");
    let mut cfg =
        roomkit_analytics::RoarkConfig::new(roomkit_analytics::ApiKey::new(KEY), fake.base_url());
    cfg.retry = fast_retry();
    cfg.request_timeout = Duration::from_millis(300);
    cfg.put_timeout = Duration::from_millis(300);
    let exporter = roomkit_analytics::RoarkExporter::new(cfg).unwrap();
    let analytics = analytics(
        &spool,
        vec![Arc::new(exporter.clone()) as Arc<dyn Exporter>],
    );
    let call = analytics.start_call(start("RM_slow"));
    // The whole call, flush included, completes while the backend has not
    // answered a single request.
    play_script(&call).await;
    call.flush("agent-ended").await;
    assert!(fake.requests().is_empty(), "no request was answered yet");
    assert_eq!(
        analytics.export_state("RM_slow"),
        Some(ExportState::Running)
    );
    assert_eq!(call.tap().dropped_frames(), 0);
    // Timed-out requests are retried; once the backend is fast, it completes.
    while exporter.stats().transport_errors == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fake.set_faults(Faults::default());
    assert_eq!(call.exported().await, ExportState::Completed);
    let events = fake.accepted_events();
    assert_eq!(
        events.iter().filter(|e| e["event"] == "call-ended").count(),
        1
    );
    check_script_audio(&fake.stitched("RM_slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_parks_the_call_until_the_next_start() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir("parked");
    let wrong = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), "rk_wrong")) as Arc<dyn Exporter>],
    );
    let call = wrong.start_call(start("RM_parked"));
    play_script(&call).await;
    call.flush("agent-ended").await;
    let state = call.exported().await;
    assert!(matches!(state, ExportState::Parked(_)), "{state:?}");
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
    assert!(
        spool.join("calls").join("RM_parked").is_dir(),
        "the call stays in the spool"
    );
    wrong.shutdown(Duration::from_secs(1)).await;

    let right = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let rec = right.recover().await.unwrap();
    assert_eq!((rec.resumed, rec.unfinished), (1, 0));
    assert_eq!(
        right.wait_exported("RM_parked").await,
        Some(ExportState::Completed)
    );
    let events = fake.accepted_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["callEndedReason"], "agent-ended");
    check_script_audio(&fake.stitched("RM_parked"));
}

#[tokio::test]
async fn the_kill_switch_means_no_traffic_and_no_spool() {
    let spool = tmp_dir("off").join("spool");
    let cfg = roomkit_analytics::RoarkConfig::new(
        roomkit_analytics::ApiKey::new(KEY),
        "http://127.0.0.1:9",
    );
    let env = |k: &str| (k == "ROARK_OBSERVABILITY_ENABLED").then(|| "false".to_owned());
    let built = roomkit_analytics::RoarkExporter::build_with_env(cfg, &env).unwrap();
    assert!(built.is_none());
    let exporters: Vec<Arc<dyn Exporter>> = built.into_iter().map(|e| Arc::new(e) as _).collect();
    let a = analytics(&spool, exporters);
    assert!(!a.is_enabled());
    let call = a.start_call(start("RM_off"));
    assert!(!call.is_enabled());
    call.push(Side::User, &[1, 2, 3], RATE, Duration::ZERO);
    call.flush("agent-ended").await;
    assert_eq!(call.exported().await, ExportState::Disabled);
    assert!(!spool.exists(), "no spool is created");
}
