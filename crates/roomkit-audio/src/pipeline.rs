//! The pipeline engine: runs the configured stages in the specified order for each stream.
//!
//! Inbound: `[resample] → [record] → [aec] → [agc] → [denoise] → vad → [diarize]`,
//! with DTMF detection reading the resampled frame beside the main chain.
//! Outbound: `[post-process] → [record] → aec reference → [resample]`.
//! AEC and AGC are skipped when the transport declares that it does them itself.

use serde::{Deserialize, Serialize};

use crate::aec::{Aec3Canceller, AecConfig};
use crate::agc::{AgcConfig, LevelAgc};
use crate::denoise::RnnoiseDenoiser;
pub use crate::diarize::{DiarizationProvider, DiarizationResult};
use crate::diarize::{DiarizerConfig, SpectralDiarizer};
use crate::dtmf::{DtmfConfig, DtmfDetector, DtmfEvent, GoertzelDtmf};
use crate::recorder::{RecordingConfig, RecordingHandle, RecordingResult, WavRecorder};
use crate::resample::{ResamplerConfig, RubatoResampler};
use crate::stage::{AecProvider, AgcProvider, DenoiserProvider, PostProcessor, StreamMap};
use crate::taps::{DebugTaps, DebugTapsConfig, TapPoint};
use crate::turn::{InterruptionConfig, TurnDetector};
use crate::vad::{
    EnergyVad, EnergyVadConfig, SegmentingVad, VadConfig, VadEvent, VadEventType, VadProvider,
    WebRtcVad, WebRtcVadMode,
};
use crate::{AudioError, AudioFormat, AudioFrame};

/// Formats on both sides of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioPipelineContract {
    /// Format every stage works in.
    pub internal_format: AudioFormat,
    /// Format the transport delivers.
    pub transport_inbound_format: AudioFormat,
    /// Format the transport expects.
    pub transport_outbound_format: AudioFormat,
}

impl AudioPipelineContract {
    /// Same format everywhere.
    pub fn uniform(format: AudioFormat) -> Self {
        Self {
            internal_format: format,
            transport_inbound_format: format,
            transport_outbound_format: format,
        }
    }
}

/// What the transport (voice backend) already does itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportCapabilities {
    /// The transport cancels echo (NATIVE_AEC): the AEC stage is skipped.
    pub native_aec: bool,
    /// The transport controls gain (NATIVE_AGC): the AGC stage is skipped.
    pub native_agc: bool,
    /// The transport feeds the AEC reference from its playout callback, so
    /// the outbound path must not feed it again.
    pub feeds_aec_reference: bool,
}

/// Built-in VAD engines selectable from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum VadChoice {
    /// libfvad.
    Webrtc {
        /// Aggressiveness.
        #[serde(default)]
        mode: WebRtcVadMode,
    },
    /// RMS above an adaptive noise floor.
    Energy {
        /// Tuning.
        #[serde(default, flatten)]
        config: EnergyVadConfig,
    },
    /// Silero neural VAD (needs the `silero` feature).
    Silero {
        /// Speech probability threshold.
        #[serde(default = "silero_threshold")]
        threshold: f32,
    },
}

fn silero_threshold() -> f32 {
    0.5
}

/// Built-in denoisers selectable from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum DenoiserChoice {
    /// RNNoise.
    Rnnoise,
}

/// Built-in diarizers selectable from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum DiarizationChoice {
    /// [`SpectralDiarizer`]: MFCC statistics per segment, clustered online.
    Builtin(DiarizerConfig),
}

/// Declarative pipeline configuration; turned into running stages by [`AudioPipeline::from_config`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioPipelineConfig {
    /// Format normalisation (recommended).
    pub resampler: Option<ResamplerConfig>,
    /// Echo cancellation.
    pub aec: Option<AecConfig>,
    /// Gain control.
    pub agc: Option<AgcConfig>,
    /// Noise reduction.
    pub denoiser: Option<DenoiserChoice>,
    /// Voice activity detection.
    pub vad: Option<VadChoice>,
    /// Segmentation timing for the VAD.
    pub vad_config: Option<VadConfig>,
    /// Speaker identification (`diarize` is accepted as an alias).
    #[serde(alias = "diarize")]
    pub diarization: Option<DiarizationChoice>,
    /// DTMF detection.
    pub dtmf: Option<DtmfConfig>,
    /// Barge-in behaviour (CONFIRMED when absent).
    pub interruption: Option<InterruptionConfig>,
    /// Diagnostic captures.
    pub debug_taps: Option<DebugTapsConfig>,
}

/// Something the inbound chain noticed.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineEvent {
    /// Speech start/end, silence, level.
    Vad(VadEvent),
    /// A key press.
    Dtmf(DtmfEvent),
    /// The speaker changed (or was first identified).
    Speaker(DiarizationResult),
}

/// One line of the event log, fields in a readable order.
#[derive(Serialize)]
struct EventLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speaker_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_new_speaker: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level_db: Option<f64>,
}

impl PipelineEvent {
    fn line(&self) -> EventLine<'_> {
        let r = |t: f64| (t * 10.0).round() / 10.0;
        let r3 = |c: f32| (f64::from(c) * 1000.0).round() / 1000.0;
        let empty = EventLine {
            kind: "",
            digit: None,
            speaker_id: None,
            is_new_speaker: None,
            t_ms: None,
            duration_ms: None,
            confidence: None,
            level_db: None,
        };
        match self {
            PipelineEvent::Vad(v) => EventLine {
                kind: match v.kind {
                    VadEventType::SpeechStart => "speech_start",
                    VadEventType::SpeechEnd => "speech_end",
                    VadEventType::Silence => "silence",
                    VadEventType::AudioLevel => "audio_level",
                },
                t_ms: Some(r(v.t_ms)),
                duration_ms: v.duration_ms.map(r),
                confidence: v.confidence.map(r3),
                level_db: v.level_db.map(|l| r(f64::from(l))),
                ..empty
            },
            PipelineEvent::Dtmf(d) => EventLine {
                kind: "dtmf",
                digit: Some(d.digit.to_string()),
                t_ms: Some(r(d.t_ms)),
                duration_ms: Some(r(d.duration_ms)),
                confidence: d.confidence.map(r3),
                ..empty
            },
            PipelineEvent::Speaker(s) => EventLine {
                kind: "speaker_change",
                speaker_id: Some(&s.speaker_id),
                is_new_speaker: Some(s.is_new_speaker),
                t_ms: s.t_ms.map(r),
                duration_ms: s.duration_ms.map(r),
                confidence: s.confidence.map(r3),
                ..empty
            },
        }
    }

    /// The event as one JSON object, as written by the `audio process`
    /// command: `type` first, then the digit, `t_ms`, `duration_ms` and the rest.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&self.line()).unwrap_or_default()
    }

    /// The event as a JSON value (same fields as [`Self::to_json_line`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.line()).unwrap_or_default()
    }
}

/// Moves a diarization result's times from the diarizer's input onto the input timeline.
fn shift_speaker(mut res: DiarizationResult, delay: f64) -> DiarizationResult {
    res.t_ms = res.t_ms.map(|t| (t - delay).max(0.0));
    res
}

#[derive(Debug, Default)]
struct StreamClock {
    samples: u64,
    out_samples: u64,
}

/// Assembles a pipeline from provider values (custom or built-in).
#[derive(Default)]
pub struct AudioPipelineBuilder {
    resampler: Option<ResamplerConfig>,
    aec: Option<Box<dyn AecProvider>>,
    agc: Option<Box<dyn AgcProvider>>,
    denoiser: Option<Box<dyn DenoiserProvider>>,
    vad: Option<Box<dyn VadProvider>>,
    diarization: Option<Box<dyn DiarizationProvider>>,
    dtmf: Option<Box<dyn DtmfDetector>>,
    postprocessors: Vec<Box<dyn PostProcessor>>,
    turn_detector: Option<Box<dyn TurnDetector>>,
    interruption: InterruptionConfig,
    taps: Option<DebugTapsConfig>,
    capabilities: TransportCapabilities,
}

impl std::fmt::Debug for AudioPipelineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioPipelineBuilder")
            .finish_non_exhaustive()
    }
}

impl AudioPipelineBuilder {
    /// Normalise formats with the built-in resampler.
    #[must_use]
    pub fn resampler(mut self, config: ResamplerConfig) -> Self {
        self.resampler = Some(config);
        self
    }
    /// Echo canceller.
    #[must_use]
    pub fn aec(mut self, aec: Box<dyn AecProvider>) -> Self {
        self.aec = Some(aec);
        self
    }
    /// Gain control.
    #[must_use]
    pub fn agc(mut self, agc: Box<dyn AgcProvider>) -> Self {
        self.agc = Some(agc);
        self
    }
    /// Denoiser.
    #[must_use]
    pub fn denoiser(mut self, d: Box<dyn DenoiserProvider>) -> Self {
        self.denoiser = Some(d);
        self
    }
    /// VAD.
    #[must_use]
    pub fn vad(mut self, v: Box<dyn VadProvider>) -> Self {
        self.vad = Some(v);
        self
    }
    /// Diarization.
    #[must_use]
    pub fn diarization(mut self, d: Box<dyn DiarizationProvider>) -> Self {
        self.diarization = Some(d);
        self
    }
    /// DTMF detector.
    #[must_use]
    pub fn dtmf(mut self, d: Box<dyn DtmfDetector>) -> Self {
        self.dtmf = Some(d);
        self
    }
    /// Appends an outbound post-processor.
    #[must_use]
    pub fn postprocessor(mut self, p: Box<dyn PostProcessor>) -> Self {
        self.postprocessors.push(p);
        self
    }
    /// Turn detector (used after STT, held here for convenience).
    #[must_use]
    pub fn turn_detector(mut self, t: Box<dyn TurnDetector>) -> Self {
        self.turn_detector = Some(t);
        self
    }
    /// Barge-in configuration.
    #[must_use]
    pub fn interruption(mut self, c: InterruptionConfig) -> Self {
        self.interruption = c;
        self
    }
    /// Debug taps.
    #[must_use]
    pub fn debug_taps(mut self, c: DebugTapsConfig) -> Self {
        self.taps = Some(c);
        self
    }
    /// What the transport does natively.
    #[must_use]
    pub fn capabilities(mut self, c: TransportCapabilities) -> Self {
        self.capabilities = c;
        self
    }

    /// Validates formats and builds the pipeline.
    ///
    /// # Errors
    /// [`AudioError::Config`] when the internal format is not mono 16-bit PCM,
    /// or when the transport format differs from the internal one and no
    /// resampler is configured.
    pub fn build(self, contract: AudioPipelineContract) -> Result<AudioPipeline, AudioError> {
        let internal = contract.internal_format;
        internal.validate()?;
        if internal.channels != 1 {
            return Err(AudioError::Config(
                "the internal format must be mono".into(),
            ));
        }
        if internal.samples_in_ms(10).is_none() {
            return Err(AudioError::Config(format!(
                "internal rate {} Hz has no whole 10 ms block",
                internal.sample_rate
            )));
        }
        let (res_in, res_out) = match &self.resampler {
            Some(cfg) => {
                if cfg.internal_format() != internal {
                    return Err(AudioError::Config(format!(
                        "resampler target {} differs from the internal format {}",
                        cfg.internal_format(),
                        internal
                    )));
                }
                (
                    Some(RubatoResampler::new(internal)),
                    Some(RubatoResampler::new(contract.transport_outbound_format)),
                )
            }
            None => {
                for f in [
                    contract.transport_inbound_format,
                    contract.transport_outbound_format,
                ] {
                    if f.sample_rate != internal.sample_rate || f.channels != internal.channels {
                        return Err(AudioError::Config(format!(
                            "transport format {f} differs from internal {internal} and no resampler is configured"
                        )));
                    }
                }
                (None, None)
            }
        };
        let taps = self.taps.map(DebugTaps::new).transpose()?;
        Ok(AudioPipeline {
            contract,
            caps: self.capabilities,
            res_in,
            res_out,
            aec: self.aec,
            agc: self.agc,
            denoiser: self.denoiser,
            vad: self.vad,
            diarization: self.diarization,
            dtmf: self.dtmf,
            postprocessors: self.postprocessors,
            turn_detector: self.turn_detector,
            interruption: self.interruption,
            taps,
            recorder: WavRecorder::new(),
            recordings: StreamMap::default(),
            clocks: StreamMap::default(),
        })
    }
}

/// A running audio pipeline serving any number of streams.
///
/// The pipeline is synchronous and single-threaded; it may hold engines that
/// are not `Send` (libfvad), so build it on the thread that will run it.
pub struct AudioPipeline {
    contract: AudioPipelineContract,
    caps: TransportCapabilities,
    res_in: Option<RubatoResampler>,
    res_out: Option<RubatoResampler>,
    aec: Option<Box<dyn AecProvider>>,
    agc: Option<Box<dyn AgcProvider>>,
    denoiser: Option<Box<dyn DenoiserProvider>>,
    vad: Option<Box<dyn VadProvider>>,
    diarization: Option<Box<dyn DiarizationProvider>>,
    dtmf: Option<Box<dyn DtmfDetector>>,
    postprocessors: Vec<Box<dyn PostProcessor>>,
    turn_detector: Option<Box<dyn TurnDetector>>,
    interruption: InterruptionConfig,
    taps: Option<DebugTaps>,
    recorder: WavRecorder,
    recordings: StreamMap<RecordingHandle>,
    clocks: StreamMap<StreamClock>,
}

impl std::fmt::Debug for AudioPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioPipeline")
            .field("contract", &self.contract)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

fn make_vad(
    choice: &VadChoice,
    cfg: VadConfig,
    rate: u32,
) -> Result<Box<dyn VadProvider>, AudioError> {
    Ok(match choice {
        VadChoice::Webrtc { mode } => {
            if !WebRtcVad::supports_rate(rate) {
                return Err(AudioError::Config(format!(
                    "the WebRTC VAD cannot run at {rate} Hz (8, 16, 32 or 48 kHz)"
                )));
            }
            let mode = *mode;
            Box::new(SegmentingVad::new("webrtc", cfg, move || {
                Ok(WebRtcVad::new(mode))
            }))
        }
        VadChoice::Energy { config } => {
            let c = config.clone();
            Box::new(SegmentingVad::new("energy", cfg, move || {
                Ok(EnergyVad::new(c.clone()))
            }))
        }
        #[cfg(feature = "silero")]
        VadChoice::Silero { threshold } => {
            if rate != 16_000 {
                return Err(AudioError::Config(format!(
                    "Silero VAD needs an internal rate of 16 kHz, not {rate} Hz"
                )));
            }
            let t = *threshold;
            crate::vad::SileroVad::check_model()?;
            Box::new(SegmentingVad::new("silero", cfg, move || {
                crate::vad::SileroVad::new(t)
            }))
        }
        #[cfg(not(feature = "silero"))]
        VadChoice::Silero { .. } => {
            return Err(AudioError::Config(
                "Silero VAD was not compiled in (enable the `silero` feature)".into(),
            ));
        }
    })
}

impl AudioPipeline {
    /// An empty builder.
    pub fn builder() -> AudioPipelineBuilder {
        AudioPipelineBuilder::default()
    }

    /// Builds the built-in stages named by `config`.
    ///
    /// # Errors
    /// [`AudioError::Config`] for an inconsistent configuration (see
    /// [`AudioPipelineBuilder::build`]) or a stage that cannot run at the
    /// internal rate.
    pub fn from_config(
        config: &AudioPipelineConfig,
        contract: AudioPipelineContract,
        caps: TransportCapabilities,
    ) -> Result<Self, AudioError> {
        let rate = contract.internal_format.sample_rate;
        let mut b = Self::builder().capabilities(caps);
        if let Some(r) = &config.resampler {
            b = b.resampler(r.clone());
        }
        if let Some(a) = &config.aec {
            b = b.aec(Box::new(Aec3Canceller::new(a.clone())));
        }
        if let Some(a) = &config.agc {
            b = b.agc(Box::new(LevelAgc::new(a.clone())?));
        }
        if let Some(DenoiserChoice::Rnnoise) = config.denoiser {
            b = b.denoiser(Box::new(RnnoiseDenoiser::new()));
        }
        if let Some(v) = &config.vad {
            let vc = config.vad_config.clone().unwrap_or_default();
            b = b.vad(make_vad(v, vc, rate)?);
        }
        if let Some(DiarizationChoice::Builtin(d)) = &config.diarization {
            b = b.diarization(Box::new(SpectralDiarizer::new(d.clone())));
        }
        if let Some(d) = &config.dtmf {
            b = b.dtmf(Box::new(GoertzelDtmf::new(d.clone())));
        }
        if let Some(i) = &config.interruption {
            b = b.interruption(i.clone());
        }
        if let Some(t) = &config.debug_taps {
            b = b.debug_taps(t.clone());
        }
        b.build(contract)
    }

    /// The format contract.
    pub fn contract(&self) -> &AudioPipelineContract {
        &self.contract
    }

    /// Barge-in configuration.
    pub fn interruption(&self) -> &InterruptionConfig {
        &self.interruption
    }

    /// The turn detector, if any.
    pub fn turn_detector(&mut self) -> Option<&mut (dyn TurnDetector + 'static)> {
        self.turn_detector.as_deref_mut()
    }

    /// Starts recording `stream` (caller after the resampler, agent after post-processing).
    ///
    /// # Errors
    /// From [`WavRecorder::start`].
    pub fn start_recording(
        &mut self,
        stream: &str,
        config: RecordingConfig,
    ) -> Result<RecordingHandle, AudioError> {
        let handle = self.recorder.start(stream, config)?;
        let h = handle.clone();
        self.recordings.get_or_try_insert(stream, || Ok(h))?;
        Ok(handle)
    }

    /// Feeds `stream`'s recorded frames (caller after the resampler, agent
    /// after post-processing) to `sink` too, until the stream ends.
    pub fn add_recording_sink(
        &mut self,
        stream: &str,
        sink: std::sync::Arc<dyn crate::RecordingSink>,
    ) {
        self.recorder.sinks.add(stream, sink);
    }

    /// Stops `stream`'s recording.
    ///
    /// # Errors
    /// From [`WavRecorder::stop`]; `Ok(None)` if none was running.
    pub fn stop_recording(&mut self, stream: &str) -> Result<Option<RecordingResult>, AudioError> {
        match self.recordings.remove(stream) {
            Some(h) => self.recorder.stop(&h).map(Some),
            None => Ok(None),
        }
    }

    /// Delay of the inbound chain up to (and including) the VAD decision, in ms.
    fn vad_delay_ms(&self) -> f64 {
        let mut d = self
            .res_in
            .as_ref()
            .map_or(0.0, RubatoResampler::latency_ms);
        if !self.caps.native_aec {
            d += self.aec.as_ref().map_or(0.0, |a| a.latency_ms());
        }
        if !self.caps.native_agc {
            d += self.agc.as_ref().map_or(0.0, |a| a.latency_ms());
        }
        d += self.denoiser.as_ref().map_or(0.0, |a| a.latency_ms());
        d += self.vad.as_ref().map_or(0.0, |a| a.latency_ms());
        d
    }

    /// Delay of the inbound chain in front of the diarizer, in ms.
    fn diarize_delay_ms(&self) -> f64 {
        self.vad_delay_ms() - self.vad.as_ref().map_or(0.0, |v| v.latency_ms())
    }

    /// Runs one transport frame of `stream` through the inbound chain, in place.
    /// Events are appended to `events` (reserve capacity to avoid allocation).
    ///
    /// # Errors
    /// A stage's format error; the frame is then only partly processed.
    pub fn process_inbound(
        &mut self,
        stream: &str,
        frame: &mut AudioFrame,
        events: &mut Vec<PipelineEvent>,
    ) -> Result<(), AudioError> {
        frame.validate()?;
        let clock = self
            .clocks
            .get_or_try_insert(stream, || Ok(StreamClock::default()))?;
        if frame.timestamp_ms.is_none() {
            frame.timestamp_ms = Some(clock.samples as f64 * 1000.0 / f64::from(frame.sample_rate));
        }
        clock.samples += frame.frames() as u64;

        if let Some(r) = self.res_in.as_mut() {
            r.process(frame, stream)?;
        }
        self.recorder.sinks.inbound(stream, frame);
        if let Some(h) = self.recordings.get_mut(stream)
            && let Err(err) = self.recorder.record_inbound(h, frame)
        {
            tracing::warn!(stream, error = %err, "inbound recording failed");
        }
        if let Some(t) = self.taps.as_mut() {
            t.write(stream, TapPoint::Raw, frame)?;
        }
        // DTMF reads the resampled frame before anything alters the tones.
        if let Some(d) = self.dtmf.as_mut()
            && let Some(mut ev) = d.process(frame, stream)?
        {
            ev.t_ms -= self
                .res_in
                .as_ref()
                .map_or(0.0, RubatoResampler::latency_ms);
            events.push(PipelineEvent::Dtmf(ev));
        }
        if !self.caps.native_aec
            && let Some(a) = self.aec.as_mut()
        {
            a.process(frame, stream)?;
            if let Some(t) = self.taps.as_mut() {
                t.write(stream, TapPoint::PostAec, frame)?;
            }
        }
        if !self.caps.native_agc
            && let Some(a) = self.agc.as_mut()
        {
            a.process(frame, stream)?;
            if let Some(t) = self.taps.as_mut() {
                t.write(stream, TapPoint::PostAgc, frame)?;
            }
        }
        if let Some(d) = self.denoiser.as_mut() {
            d.process(frame, stream)?;
            if let Some(t) = self.taps.as_mut() {
                t.write(stream, TapPoint::PostDenoiser, frame)?;
            }
        }
        if self.vad.is_some() {
            let delay = self.vad_delay_ms();
            if let Some(v) = self.vad.as_mut()
                && let Some(ev) = v.process(frame, stream)?
            {
                match ev.kind {
                    VadEventType::SpeechStart => frame.metadata.speech = Some(true),
                    VadEventType::SpeechEnd => frame.metadata.speech = Some(false),
                    // Level reports and silence say nothing about a boundary.
                    VadEventType::Silence | VadEventType::AudioLevel => {}
                }
                self.push_vad(stream, ev, delay, frame.sample_rate, events)?;
            }
        }
        if let Some(d) = self.diarization.as_mut()
            && let Some(res) = d.process(frame, stream)?
        {
            frame.metadata.speaker_id = Some(res.speaker_id.clone());
            let delay = self.diarize_delay_ms();
            events.push(PipelineEvent::Speaker(shift_speaker(res, delay)));
        }
        Ok(())
    }

    fn push_vad(
        &mut self,
        stream: &str,
        mut ev: VadEvent,
        delay: f64,
        rate: u32,
        events: &mut Vec<PipelineEvent>,
    ) -> Result<(), AudioError> {
        ev.t_ms = (ev.t_ms - delay).max(0.0);
        if ev.kind == VadEventType::SpeechEnd
            && let (Some(t), Some(audio)) = (self.taps.as_mut(), ev.audio.as_ref())
        {
            t.write_segment(stream, rate, audio)?;
        }
        events.push(PipelineEvent::Vad(ev));
        Ok(())
    }

    /// Runs one outbound frame (TTS or speech-to-speech audio in the internal
    /// format) through post-processing, recording, AEC reference and the
    /// resampler to the transport format.
    ///
    /// # Errors
    /// A stage's format error.
    pub fn process_outbound(
        &mut self,
        stream: &str,
        frame: &mut AudioFrame,
    ) -> Result<(), AudioError> {
        frame.validate()?;
        let clock = self
            .clocks
            .get_or_try_insert(stream, || Ok(StreamClock::default()))?;
        if frame.timestamp_ms.is_none() {
            frame.timestamp_ms =
                Some(clock.out_samples as f64 * 1000.0 / f64::from(frame.sample_rate));
        }
        clock.out_samples += frame.frames() as u64;
        if let Some(t) = self.taps.as_mut() {
            t.write(stream, TapPoint::OutboundRaw, frame)?;
        }
        for p in &mut self.postprocessors {
            p.process(frame, stream)?;
        }
        self.recorder.sinks.outbound(stream, frame);
        if let Some(h) = self.recordings.get_mut(stream)
            && let Err(err) = self.recorder.record_outbound(h, frame)
        {
            tracing::warn!(stream, error = %err, "outbound recording failed");
        }
        if let Some(t) = self.taps.as_mut() {
            t.write(stream, TapPoint::OutboundFinal, frame)?;
        }
        if !self.caps.native_aec
            && !self.caps.feeds_aec_reference
            && let Some(a) = self.aec.as_mut()
        {
            a.feed_reference(frame, stream)?;
        }
        if let Some(r) = self.res_out.as_mut() {
            r.process(frame, stream)?;
        }
        Ok(())
    }

    /// Feeds an AEC reference frame directly (for transports that take the
    /// reference from their playout callback).
    ///
    /// # Errors
    /// From the AEC provider.
    pub fn feed_aec_reference(
        &mut self,
        stream: &str,
        frame: &AudioFrame,
    ) -> Result<(), AudioError> {
        match self.aec.as_mut() {
            Some(a) if !self.caps.native_aec => a.feed_reference(frame, stream),
            _ => Ok(()),
        }
    }

    /// Ends `stream`: reports events still pending (an open speech segment, a
    /// sounding DTMF tone), stops its recording, closes its debug taps and
    /// releases every stage's state for it.
    ///
    /// # Errors
    /// I/O errors while finalising files.
    pub fn end_stream(
        &mut self,
        stream: &str,
        events: &mut Vec<PipelineEvent>,
    ) -> Result<Option<RecordingResult>, AudioError> {
        if let Some(d) = self.dtmf.as_mut()
            && let Some(mut ev) = d.finish(stream)
        {
            ev.t_ms -= self
                .res_in
                .as_ref()
                .map_or(0.0, RubatoResampler::latency_ms);
            events.push(PipelineEvent::Dtmf(ev));
        }
        let delay = self.vad_delay_ms();
        let rate = self.contract.internal_format.sample_rate;
        let mut pending = Vec::new();
        if let Some(v) = self.vad.as_mut() {
            while let Some(ev) = v.finish(stream) {
                pending.push(ev);
            }
        }
        for ev in pending {
            self.push_vad(stream, ev, delay, rate, events)?;
        }
        let delay = self.diarize_delay_ms();
        if let Some(res) = self.diarization.as_mut().and_then(|d| d.finish(stream)) {
            events.push(PipelineEvent::Speaker(shift_speaker(res, delay)));
        }
        self.recorder.sinks.remove(stream);
        let rec = self.stop_recording(stream)?;
        if let Some(t) = self.taps.as_mut() {
            t.end_stream(stream)?;
        }
        self.reset_stream(stream);
        Ok(rec)
    }

    /// Releases every stage's state for `stream` (call before the first
    /// frame of a reused key, and when a stream ends).
    pub fn reset_stream(&mut self, stream: &str) {
        if let Some(r) = self.res_in.as_mut() {
            r.reset(stream);
        }
        if let Some(r) = self.res_out.as_mut() {
            r.reset(stream);
        }
        if let Some(a) = self.aec.as_mut() {
            a.reset(stream);
        }
        if let Some(a) = self.agc.as_mut() {
            a.reset(stream);
        }
        if let Some(d) = self.denoiser.as_mut() {
            d.reset(stream);
        }
        if let Some(v) = self.vad.as_mut() {
            v.reset(stream);
        }
        if let Some(d) = self.diarization.as_mut() {
            d.reset(stream);
        }
        if let Some(d) = self.dtmf.as_mut() {
            d.reset(stream);
        }
        for p in &mut self.postprocessors {
            p.reset(stream);
        }
        self.clocks.remove(stream);
    }

    /// Releases everything (all streams, all recordings).
    pub fn close(&mut self) {
        if let Some(r) = self.res_in.as_mut() {
            r.close();
        }
        if let Some(r) = self.res_out.as_mut() {
            r.close();
        }
        if let Some(a) = self.aec.as_mut() {
            a.close();
        }
        if let Some(a) = self.agc.as_mut() {
            a.close();
        }
        if let Some(d) = self.denoiser.as_mut() {
            d.close();
        }
        if let Some(v) = self.vad.as_mut() {
            v.close();
        }
        if let Some(d) = self.diarization.as_mut() {
            d.close();
        }
        if let Some(d) = self.dtmf.as_mut() {
            d.close();
        }
        for p in &mut self.postprocessors {
            p.close();
        }
        self.recorder.close();
        self.recordings.clear();
        self.clocks.clear();
    }
}
