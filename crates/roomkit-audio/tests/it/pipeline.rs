//! Pipeline engine: stage order, native capability skipping, stream isolation, taps, configuration checks.

use std::cell::RefCell;
use std::rc::Rc;

use roomkit_audio::stage::{
    AecProvider, AgcProvider, DenoiserProvider, FrameProcessor, PostProcessor,
};
use roomkit_audio::taps::{DebugTapsConfig, TapSelection};
use roomkit_audio::{
    AudioError, AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    PipelineEvent, TransportCapabilities,
};

type Log = Rc<RefCell<Vec<String>>>;

struct Probe {
    name: &'static str,
    log: Log,
}

impl FrameProcessor for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn process(&mut self, frame: &mut AudioFrame, stream: &str) -> Result<(), AudioError> {
        self.log
            .borrow_mut()
            .push(format!("{}:{stream}:{}", self.name, frame.sample_rate));
        Ok(())
    }
    fn reset(&mut self, stream: &str) {
        self.log
            .borrow_mut()
            .push(format!("reset {}:{stream}", self.name));
    }
    fn close(&mut self) {}
}
impl roomkit_audio::diarize::DiarizationProvider for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn process(
        &mut self,
        frame: &AudioFrame,
        stream: &str,
    ) -> Result<Option<roomkit_audio::diarize::DiarizationResult>, AudioError> {
        self.log
            .borrow_mut()
            .push(format!("{}:{stream}:{}", self.name, frame.sample_rate));
        Ok(None)
    }
    fn finish(&mut self, _stream: &str) -> Option<roomkit_audio::diarize::DiarizationResult> {
        Some(roomkit_audio::diarize::DiarizationResult {
            speaker_id: "speaker_0".into(),
            confidence: None,
            is_new_speaker: true,
            t_ms: Some(0.0),
            duration_ms: Some(20.0),
        })
    }
    fn reset(&mut self, stream: &str) {
        FrameProcessor::reset(self, stream);
    }
    fn close(&mut self) {}
}
impl AgcProvider for Probe {}
impl DenoiserProvider for Probe {}
impl PostProcessor for Probe {}
impl AecProvider for Probe {
    fn feed_reference(&mut self, frame: &AudioFrame, stream: &str) -> Result<(), AudioError> {
        self.log.borrow_mut().push(format!(
            "{}.reference:{stream}:{}",
            self.name, frame.sample_rate
        ));
        Ok(())
    }
}

fn contract() -> AudioPipelineContract {
    AudioPipelineContract {
        internal_format: AudioFormat::pcm_mono(16_000),
        transport_inbound_format: AudioFormat::pcm_mono(48_000),
        transport_outbound_format: AudioFormat::pcm_mono(8_000),
    }
}

fn probed(log: &Log, caps: TransportCapabilities) -> AudioPipeline {
    let p = |name| Probe {
        name,
        log: log.clone(),
    };
    AudioPipeline::builder()
        .resampler(roomkit_audio::resample::ResamplerConfig::default())
        .aec(Box::new(p("aec")))
        .agc(Box::new(p("agc")))
        .denoiser(Box::new(p("denoise")))
        .diarization(Box::new(p("diarize")))
        .postprocessor(Box::new(p("post1")))
        .postprocessor(Box::new(p("post2")))
        .capabilities(caps)
        .build(contract())
        .unwrap()
}

#[test]
fn inbound_and_outbound_run_in_specified_order() {
    let log: Log = Rc::default();
    let mut p = probed(&log, TransportCapabilities::default());
    let mut events = Vec::new();
    let mut f = AudioFrame::new(vec![0; 960], 48_000, 1).unwrap();
    p.process_inbound("s1", &mut f, &mut events).unwrap();
    assert_eq!(f.sample_rate, 16_000);
    assert_eq!(
        *log.borrow(),
        [
            "aec:s1:16000",
            "agc:s1:16000",
            "denoise:s1:16000",
            "diarize:s1:16000"
        ]
    );
    log.borrow_mut().clear();
    let mut o = AudioFrame::new(vec![0; 320], 16_000, 1).unwrap();
    p.process_outbound("s1", &mut o).unwrap();
    assert_eq!(
        *log.borrow(),
        ["post1:s1:16000", "post2:s1:16000", "aec.reference:s1:16000"]
    );
    assert_eq!(
        (o.sample_rate, o.samples.len()),
        (8_000, 160),
        "resampled last, to the transport format"
    );
    log.borrow_mut().clear();
    p.end_stream("s1", &mut events).unwrap();
    assert!(log.borrow().contains(&"reset aec:s1".to_string()));
    assert!(log.borrow().contains(&"reset diarize:s1".to_string()));
    // A segment still open when the stream ends is reported.
    assert!(matches!(
        events.last(),
        Some(PipelineEvent::Speaker(s)) if s.speaker_id == "speaker_0"
    ));
    assert_eq!(events.last().unwrap().to_json()["type"], "speaker_change");
}

#[test]
fn native_aec_and_agc_skip_those_stages() {
    let log: Log = Rc::default();
    let caps = TransportCapabilities {
        native_aec: true,
        native_agc: true,
        feeds_aec_reference: false,
    };
    let mut p = probed(&log, caps);
    let mut f = AudioFrame::new(vec![0; 960], 48_000, 1).unwrap();
    p.process_inbound("s", &mut f, &mut Vec::new()).unwrap();
    let mut o = AudioFrame::new(vec![0; 320], 16_000, 1).unwrap();
    p.process_outbound("s", &mut o).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "denoise:s:16000",
            "diarize:s:16000",
            "post1:s:16000",
            "post2:s:16000"
        ]
    );

    // A transport that feeds the reference itself: no reference from the pipeline.
    let log: Log = Rc::default();
    let caps = TransportCapabilities {
        feeds_aec_reference: true,
        ..TransportCapabilities::default()
    };
    let mut p = probed(&log, caps);
    let mut o = AudioFrame::new(vec![0; 320], 16_000, 1).unwrap();
    p.process_outbound("s", &mut o).unwrap();
    assert!(!log.borrow().iter().any(|l| l.contains("reference")));
}

fn full_config() -> AudioPipelineConfig {
    serde_json::from_value(serde_json::json!({
        "resampler": {"internal_sample_rate": 16000},
        "aec": {},
        "agc": {"target_level_dbfs": -6.0},
        "denoiser": {"provider": "rnnoise"},
        "vad": {"provider": "webrtc"},
        "dtmf": {},
    }))
    .unwrap()
}

#[test]
fn streams_do_not_share_state() {
    let contract = contract();
    let x = crate::util::to_i16(&crate::util::voice_like(
        48_000,
        48_000 * 3 / 2,
        150.0,
        0.05,
        1,
    ));
    let run = |interleave: bool| {
        let mut p =
            AudioPipeline::from_config(&full_config(), contract, TransportCapabilities::default())
                .unwrap();
        let mut out = Vec::new();
        let mut evs = Vec::new();
        for c in x.chunks_exact(960) {
            let mut f = AudioFrame::new(c.to_vec(), 48_000, 1).unwrap();
            p.process_inbound("a", &mut f, &mut evs).unwrap();
            out.extend_from_slice(&f.samples);
            if interleave {
                // A loud, different speaker on another stream.
                let mut g = AudioFrame::new(
                    c.iter().map(|s| s.saturating_mul(12)).rev().collect(),
                    48_000,
                    1,
                )
                .unwrap();
                p.process_inbound("b", &mut g, &mut Vec::new()).unwrap();
            }
        }
        (out, evs)
    };
    let (alone, ev_alone) = run(false);
    let (mixed, ev_mixed) = run(true);
    assert_eq!(alone.len(), mixed.len());
    let diff = alone.iter().zip(&mixed).filter(|(a, b)| a != b).count();
    assert_eq!(diff, 0, "stream a changed when stream b was interleaved");
    assert_eq!(ev_alone, ev_mixed);
}

#[test]
fn configuration_is_checked_at_start_up() {
    let bad_rate = AudioPipelineContract::uniform(AudioFormat::pcm_mono(24_000));
    let cfg: AudioPipelineConfig =
        serde_json::from_value(serde_json::json!({"vad": {"provider": "webrtc"}})).unwrap();
    let err =
        AudioPipeline::from_config(&cfg, bad_rate, TransportCapabilities::default()).unwrap_err();
    assert!(err.is_config(), "{err}");
    // Transport and internal formats differ without a resampler.
    let err = AudioPipeline::from_config(
        &AudioPipelineConfig::default(),
        contract(),
        TransportCapabilities::default(),
    )
    .unwrap_err();
    assert!(err.is_config());
    // Unknown keys are refused.
    assert!(
        serde_json::from_value::<AudioPipelineConfig>(serde_json::json!({"vadd": {}})).is_err()
    );
    // A malformed frame is an error, not a panic.
    let mut p =
        AudioPipeline::from_config(&full_config(), contract(), TransportCapabilities::default())
            .unwrap();
    let mut f = AudioFrame {
        samples: vec![0; 3],
        sample_rate: 48_000,
        channels: 2,
        timestamp_ms: None,
        metadata: Default::default(),
    };
    assert!(p.process_inbound("s", &mut f, &mut Vec::new()).is_err());
}

#[test]
fn debug_taps_write_one_file_per_stage_and_segment() {
    let dir = std::env::temp_dir().join(format!("roomkit-audio-taps-{}", std::process::id()));
    let mut cfg = full_config();
    cfg.vad = Some(serde_json::from_value(serde_json::json!({"provider": "energy"})).unwrap());
    cfg.debug_taps = Some(DebugTapsConfig {
        output_dir: dir.clone(),
        stages: TapSelection::Only(vec![
            roomkit_audio::taps::TapPoint::Raw,
            roomkit_audio::taps::TapPoint::PostAec,
            roomkit_audio::taps::TapPoint::PostDenoiser,
            roomkit_audio::taps::TapPoint::PostVadSpeech,
            roomkit_audio::taps::TapPoint::OutboundFinal,
        ]),
        session_scoped: true,
        sample_rate: None,
    });
    let mut p =
        AudioPipeline::from_config(&cfg, contract(), TransportCapabilities::default()).unwrap();
    let r = 48_000usize;
    let mut x = vec![0i16; r];
    x.extend(crate::util::to_i16(&crate::util::voice_like(
        48_000, r, 150.0, 0.3, 1,
    )));
    x.extend(vec![0i16; r]);
    let mut evs = Vec::new();
    for c in x.chunks_exact(960) {
        let mut f = AudioFrame::new(c.to_vec(), 48_000, 1).unwrap();
        p.process_inbound("sess", &mut f, &mut evs).unwrap();
    }
    let mut o = AudioFrame::new(vec![0; 320], 16_000, 1).unwrap();
    p.process_outbound("sess", &mut o).unwrap();
    p.end_stream("sess", &mut evs).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "sess_01_raw.wav",
            "sess_02_post_aec.wav",
            "sess_04_post_denoiser.wav",
            "sess_05_post_vad_speech_001.wav",
            "sess_07_outbound_final.wav"
        ]
    );
    let raw = hound::WavReader::open(dir.join("sess_01_raw.wav")).unwrap();
    assert_eq!(
        (raw.spec().sample_rate, raw.len() as usize),
        (16_000, x.len() / 3)
    );
    assert!(evs.iter().any(|e| matches!(e, PipelineEvent::Vad(_))));
    std::fs::remove_dir_all(&dir).ok();
}
