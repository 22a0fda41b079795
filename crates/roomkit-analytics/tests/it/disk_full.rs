//! Calls spooled onto a disk that fills up (a small tmpfs; needs root, as
//! in CI, and fails with a clear message when it cannot be mounted):
//! nothing written before is given up, the call is not quarantined, and it
//! is exported once space returns — in the same process, and after a
//! restart when the process ended while the disk was full.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::report::read_report;
use roomkit_analytics::{
    AudioTap, CallAnalytics, CallHandle, ExportState, Exporter, LocalReportExporter, Role, Side,
    TranscriptInput,
};
use roomkit_testkit::tmpfs::Tmpfs;

use crate::util::*;

const CALL: &str = "RM_diskfull";

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Both sides, continuous tones, frames `frames` of the call.
async fn push(call: &CallHandle, frames: std::ops::Range<u64>) {
    let tap = call.tap();
    for f in frames {
        let first = f * FRAME as u64;
        let media = Duration::from_millis(f * 20);
        tap.push(Side::User, &tone(440.0, first, FRAME), RATE, media);
        tap.push(Side::Agent, &tone(880.0, first, FRAME), RATE, media);
        if f.is_multiple_of(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn call_dir(spool: &Path) -> PathBuf {
    spool.join("calls").join(CALL)
}

fn quarantined(spool: &Path) -> usize {
    std::fs::read_dir(spool.join("quarantine")).map_or(0, |d| d.count())
}

fn exporters(fake: &FakeRoark, reports: &Path) -> Vec<Arc<dyn Exporter>> {
    vec![
        Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>,
        Arc::new(LocalReportExporter::new(reports)) as Arc<dyn Exporter>,
    ]
}

/// Starts the call, records 2 s and a transcript entry, waits until they
/// are on disk, fills the disk, records 2 s more and another entry, and
/// waits until the spool noticed.
async fn call_until_the_disk_fills(
    a: &CallAnalytics,
    fake: &FakeRoark,
    spool: &Path,
    disk: &Tmpfs,
) -> CallHandle {
    let call = a.start_call(start(CALL));
    assert!(call.is_enabled());
    call.speaking(Role::User);
    wait_until("call-started", || fake.accepted_events().len() == 1).await;
    let log = call_dir(spool).join("export-roark.jsonl");
    wait_until("the export log", || file_len(&log) > 0).await;
    push(&call, 0..100).await;
    call.transcript(
        TranscriptInput::new(Role::User, "before the disk filled")
            .span(Duration::ZERO, Duration::from_secs(1)),
    );
    let audio = call_dir(spool).join("audio.pcm");
    let records = call_dir(spool).join("records.jsonl");
    wait_until("audio and records on disk", || {
        file_len(&audio) >= 64 * 1024 && file_len(&records) > 40
    })
    .await;

    disk.fill();
    push(&call, 100..200).await;
    call.transcript(
        TranscriptInput::new(Role::Assistant, "while the disk was full")
            .span(Duration::from_secs(2), Duration::from_secs(3)),
    );
    wait_until("the spool noticed the full disk", || {
        a.stats().spool_errors >= 1
    })
    .await;
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_disk_that_fills_is_exported_once_space_returns() {
    let disk = Tmpfs::mount(4096);
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = disk.path().join("spool");
    let reports = disk.path().join("reports");
    let a = analytics(&spool, exporters(&fake, &reports));
    let call = call_until_the_disk_fills(&a, &fake, &spool, &disk).await;

    // The flush returns although the call cannot be made final yet.
    tokio::time::timeout(Duration::from_secs(30), call.flush("agent-ended"))
        .await
        .expect("flush returns while the disk is full");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(a.export_state(CALL), Some(ExportState::Running));
    assert_eq!(fake.accepted_events().len(), 1, "no call-ended yet");
    assert!(call_dir(&spool).is_dir());

    disk.free();
    let state = tokio::time::timeout(Duration::from_secs(60), a.wait_exported(CALL))
        .await
        .expect("exported once space returned");
    assert_eq!(state, Some(ExportState::Completed));
    assert_eq!(quarantined(&spool), 0);

    let events = fake.accepted_events();
    assert_eq!(events.len(), 2, "one call-started, one call-ended");
    let ended = &events[1];
    assert_eq!(ended["event"], "call-ended");
    assert_eq!(ended["callEndedReason"], "agent-ended");
    let texts: Vec<&str> = ended["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["before the disk filled", "while the disk was full"]);
    // Everything recorded while the disk was full was kept and uploaded.
    let pcm = fake.stitched(CALL);
    assert_eq!(pcm.len(), 200 * FRAME * 4, "the whole recording");
    let (l, r) = split_stereo(&pcm);
    for i in 0..l.len() {
        assert_eq!(
            (l[i], r[i]),
            (tone_sample(440.0, i as u64), tone_sample(880.0, i as u64)),
            "sample {i}"
        );
    }
    let report = read_report(&reports, CALL)
        .unwrap()
        .expect("the local report");
    assert!(!report.recording_incomplete, "nothing was lost");
    assert_eq!(report.transcript.len(), 2);
    assert!((report.duration_seconds - 4.0).abs() < 1e-6);
    a.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_left_partial_on_a_full_disk_is_exported_at_the_next_start() {
    let disk = Tmpfs::mount(4096);
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = disk.path().join("spool");
    let reports = disk.path().join("reports");
    let a = analytics(&spool, exporters(&fake, &reports));
    let _call = call_until_the_disk_fills(&a, &fake, &spool, &disk).await;
    // The process ends while the disk is still full: what waited in memory
    // is gone, the spool holds a partial call with no end.
    a.shutdown(Duration::from_millis(200)).await;
    drop(a);
    assert!(call_dir(&spool).join("audio.pcm").is_file());
    assert!(!call_dir(&spool).join("ended.json").exists());
    let on_disk = file_len(&call_dir(&spool).join("audio.pcm")) / 4 * 4;
    assert!(on_disk > 0);

    // The next start, with the disk still full: resumed, not quarantined.
    let b = analytics(&spool, exporters(&fake, &reports));
    let rec = b.recover().await.unwrap();
    assert_eq!((rec.resumed, rec.unfinished, rec.quarantined), (1, 1, 0));
    assert_eq!(quarantined(&spool), 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(b.export_state(CALL), Some(ExportState::Running));

    disk.free();
    let state = tokio::time::timeout(Duration::from_secs(60), b.wait_exported(CALL))
        .await
        .expect("exported once space returned");
    assert_eq!(state, Some(ExportState::Completed));
    assert_eq!(quarantined(&spool), 0);

    let events = fake.accepted_events();
    assert_eq!(
        events.len(),
        2,
        "call-started once, then call-ended: {events:?}"
    );
    let ended = &events[1];
    assert_eq!(ended["event"], "call-ended");
    assert_eq!(ended["callEndedReason"], "process-restarted");
    assert_eq!(ended["transcript"][0]["content"], "before the disk filled");
    assert_eq!(ended["recordingSampleRate"], RATE);
    // What survived on disk, to the sample.
    let pcm = fake.stitched(CALL);
    assert_eq!(pcm.len() as u64, on_disk);
    let (l, r) = split_stereo(&pcm);
    for i in 0..l.len() {
        assert_eq!(
            (l[i], r[i]),
            (tone_sample(440.0, i as u64), tone_sample(880.0, i as u64)),
            "sample {i}"
        );
    }
    let report = read_report(&reports, CALL)
        .unwrap()
        .expect("the local report");
    assert!(report.recovered);
    assert!(
        report.recording_incomplete,
        "flagged: part of the call was lost"
    );
    b.shutdown(Duration::from_secs(1)).await;
}
