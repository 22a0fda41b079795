//! The crash test: a child process (this test binary, re-executed) is
//! killed with SIGKILL in the middle of a call and of its uploads; a new
//! service on the same spool finishes the export: call-started is not sent
//! again, every chunk index from 0 is present once, and exactly one
//! call-ended arrives.

use std::sync::Arc;
use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::protocol::{CHUNK_BYTES, CHUNK_UPLOAD_PATH};
use roomkit_analytics::{
    AudioTap, ExportState, Exporter, RoarkConfig, RoarkExporter, Role, Side, TranscriptInput,
};

use crate::util::*;

const CHILD_ENV: &str = "RK_ANALYTICS_CRASH_CHILD";
const SPOOL_ENV: &str = "RK_ANALYTICS_CRASH_SPOOL";
const URL_ENV: &str = "RK_ANALYTICS_CRASH_URL";
const CALL: &str = "RM_crash";

/// The child's body: streams a call forever (both sides, continuous tones)
/// and never flushes. Does nothing unless started by the crash test.
#[test]
fn crash_child() {
    let (Ok(_), Ok(spool), Ok(url)) = (
        std::env::var(CHILD_ENV),
        std::env::var(SPOOL_ENV),
        std::env::var(URL_ENV),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut cfg = RoarkConfig::new(roomkit_analytics::ApiKey::new(KEY), url);
        cfg.retry = fast_retry();
        let exporter = RoarkExporter::new(cfg).unwrap();
        let a = analytics(
            std::path::Path::new(&spool),
            vec![Arc::new(exporter) as Arc<dyn Exporter>],
        );
        let call = a.start_call(start(CALL));
        call.speaking(Role::Assistant);
        call.transcript(
            TranscriptInput::new(Role::Assistant, "Hello, how can I help?")
                .span(Duration::ZERO, Duration::from_secs(1)),
        );
        call.tool_call("call_1", "lookup", &serde_json::json!({"q": 1}));
        call.tool_result("call_1", &serde_json::json!("found"));
        let tap = call.tap();
        // Twenty times real time, for at most a minute.
        for f in 0..(60 * 50 * 20u64) {
            let first = f * FRAME as u64;
            let media = Duration::from_millis(f * 20);
            tap.push(Side::User, &tone(440.0, first, FRAME), RATE, media);
            tap.push(Side::Agent, &tone(880.0, first, FRAME), RATE, media);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the crash test should have killed this process");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_call_and_mid_upload_the_export_completes_exactly_once() {
    let fake = FakeRoark::start(
        KEY,
        Faults {
            put_delay: Duration::from_millis(300),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let spool = tmp_dir("crash");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash::crash_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env(SPOOL_ENV, &spool)
        .env(URL_ENV, fake.base_url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Wait until two chunks are stored and a further one has its upload
    // URL but no stored object yet: an upload is in flight.
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("child exited early: {status}");
        }
        let stored = fake.chunks(CALL);
        let in_flight = fake.requests().iter().any(|r| {
            r.path == CHUNK_UPLOAD_PATH
                && r.status == 200
                && r.json()
                    .and_then(|v| v["chunkIndex"].as_u64())
                    .is_some_and(|i| !stored.contains_key(&i))
        });
        if stored.len() >= 2 && in_flight {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let before = fake.accepted_events();
    assert_eq!(before.len(), 1, "only call-started before the crash");
    assert_eq!(before[0]["event"], "call-started");
    assert!(spool.join("calls").join(CALL).join("audio.pcm").is_file());
    assert!(!spool.join("calls").join(CALL).join("ended.json").exists());

    fake.set_faults(Faults::default());
    let exporter = roark(&fake.base_url(), KEY);
    let a = analytics(
        &spool,
        vec![Arc::new(exporter.clone()) as Arc<dyn Exporter>],
    );
    let rec = a.recover().await.unwrap();
    assert_eq!((rec.resumed, rec.unfinished, rec.quarantined), (1, 1, 0));
    assert_eq!(a.wait_exported(CALL).await, Some(ExportState::Completed));
    assert_eq!(
        exporter.stats().calls_started,
        0,
        "call-started is not sent again"
    );

    let events = fake.accepted_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event"], "call-started");
    let ended = &events[1];
    assert_eq!(ended["event"], "call-ended");
    assert_eq!(ended["callEndedReason"], "process-restarted");
    assert_eq!(ended["callStartedAt"], events[0]["eventTimestamp"]);
    assert_eq!(ended["recordingSampleRate"], RATE);
    assert_eq!(ended["agentSpokeFirst"], true);
    assert_eq!(ended["transcript"].as_array().unwrap().len(), 1);
    let tools = ended["toolCalls"].as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[1]["content"], "found");

    // Every index from 0, once, each full but the last.
    let chunks = fake.chunks(CALL);
    let n = chunks.len() as u64;
    assert!(n >= 3);
    assert_eq!(
        chunks.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    for (i, c) in &chunks {
        if *i + 1 < n {
            assert_eq!(c.len() as u64, CHUNK_BYTES);
        } else {
            assert!(!c.is_empty() && c.len() as u64 <= CHUNK_BYTES && c.len() % 4 == 0);
        }
    }
    // A PUT accepted twice for one index carries the same bytes (the
    // upload that was in flight at the kill, or was never logged).
    let reqs = fake.requests();
    let ended_seq = reqs
        .iter()
        .filter(|r| r.path.ends_with("livekit-sdk") && r.status == 200)
        .map(|r| r.seq)
        .max()
        .unwrap();
    assert!(
        reqs.iter()
            .filter(|r| r.method == "PUT")
            .all(|r| r.seq < ended_seq)
    );
    // The recording: both tones, continuous and aligned to the sample.
    let pcm = fake.stitched(CALL);
    let (l, r) = split_stereo(&pcm);
    for i in 0..l.len() {
        assert_eq!(
            (l[i], r[i]),
            (tone_sample(440.0, i as u64), tone_sample(880.0, i as u64)),
            "sample {i}"
        );
    }

    // A further restart sends nothing.
    a.shutdown(Duration::from_secs(1)).await;
    let count = fake.requests().len();
    let again = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    assert_eq!(again.recover().await.unwrap().resumed, 0);
    again.shutdown(Duration::from_secs(1)).await;
    assert_eq!(fake.requests().len(), count);
}
