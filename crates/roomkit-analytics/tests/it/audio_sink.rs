//! The audio pipeline feeds a call's taps through a recording sink: a tone
//! the caller sends lands on the left channel and one the agent plays on
//! the right, both at their exact sample positions in the stitched upload.

use std::sync::Arc;

use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::{CallRecordingSink, ExportState, Exporter};
use roomkit_audio::{AudioFormat, AudioFrame, AudioPipeline, AudioPipelineContract};

use crate::util::*;

#[tokio::test]
async fn pipeline_frames_reach_the_stereo_recording_sample_aligned() {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir("sink");
    let a = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let call = a.start_call(start("RM_sink"));
    let mut pipeline = AudioPipeline::builder()
        .build(AudioPipelineContract::uniform(AudioFormat::pcm_mono(RATE)))
        .unwrap();
    // The stream starts at 0 on the call's media clock.
    pipeline.add_recording_sink(
        "caller",
        Arc::new(CallRecordingSink::new(
            call.clone(),
            std::time::Duration::ZERO,
        )),
    );
    // 2 s each way: the caller speaks 440 Hz, the agent plays 880 Hz,
    // frame by frame as a voice channel would; the pipeline stamps the
    // frames on the stream's media clock.
    let frames = 2 * RATE as usize / FRAME;
    let mut events = Vec::new();
    for i in 0..frames {
        let first = (i * FRAME) as u64;
        let mut inbound = AudioFrame::new(tone(440.0, first, FRAME), RATE, 1).unwrap();
        pipeline
            .process_inbound("caller", &mut inbound, &mut events)
            .unwrap();
        let mut outbound = AudioFrame::new(tone(880.0, first, FRAME), RATE, 1).unwrap();
        pipeline.process_outbound("caller", &mut outbound).unwrap();
    }
    call.flush("agent-ended").await;
    assert_eq!(call.exported().await, ExportState::Completed);

    let (left, right) = split_stereo(&fake.stitched("RM_sink"));
    assert_eq!(left.len(), frames * FRAME, "every sample, nothing more");
    for n in 0..left.len() {
        assert_eq!(left[n], tone_sample(440.0, n as u64), "left sample {n}");
        assert_eq!(right[n], tone_sample(880.0, n as u64), "right sample {n}");
    }
    let ended = fake
        .accepted_events()
        .into_iter()
        .find(|e| e["event"] == "call-ended")
        .unwrap();
    assert_eq!(ended["recordingNumChannels"], 2);
    assert_eq!(ended["recordingSampleRate"], RATE);
    a.shutdown(std::time::Duration::from_secs(5)).await;
}
