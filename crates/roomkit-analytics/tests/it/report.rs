//! The local report exporter: report.json and a stereo WAV per call.

use std::sync::Arc;

use roomkit_analytics::report::{list_reports, read_report, recording_path};
use roomkit_analytics::{ExportState, Exporter, LocalReportExporter};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_call_gets_a_report_and_a_stereo_wav() {
    let spool = tmp_dir("report");
    let dir = spool.join("reports");
    let a = analytics(
        &spool,
        vec![Arc::new(LocalReportExporter::new(&dir)) as Arc<dyn Exporter>],
    );
    let mut s = start("RM_report");
    s.metadata.insert("customer".into(), "acme".into());
    let call = a.start_call(s);
    play_script(&call).await;
    call.flush("agent-ended").await;
    assert_eq!(call.exported().await, ExportState::Completed);

    let r = read_report(&dir, "RM_report").unwrap().unwrap();
    assert_eq!(r.agent_id, "agent-7");
    assert_eq!(r.ended_reason, "agent-ended");
    assert_eq!(r.transcript.len(), 2);
    assert_eq!(r.tool_calls.len(), 2);
    assert_eq!(r.metrics.len(), 2);
    assert_eq!(r.metadata["customer"], "acme");
    assert_eq!(r.duration_seconds, 6.0);
    assert_eq!(r.agent_spoke_first, Some(false));
    // The waveform: the user in the first half, the agent in the second.
    let n = r.waveform.user.len();
    assert!(n > 100);
    assert!(r.waveform.user[..n / 2 - 1].iter().all(|p| *p > 7000));
    assert!(r.waveform.user[n / 2 + 1..].iter().all(|p| *p == 0));
    assert!(r.waveform.agent[..n / 2 - 1].iter().all(|p| *p == 0));
    assert!(r.waveform.agent[n / 2 + 1..].iter().all(|p| *p > 7000));

    let wav = recording_path(&dir, "RM_report").unwrap();
    let mut reader = hound::WavReader::open(wav).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, RATE, 16)
    );
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    check_script_audio(&bytes);

    let list = list_reports(&dir);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].call_id, "RM_report");
    assert_eq!(list[0].transcript_entries, 2);
    assert!(read_report(&dir, "../etc").is_err());
    assert!(read_report(&dir, "RM_none").unwrap().is_none());
}
