//! Voice activity detection: frame classifiers and the segmenter that turns them into speech events.
//!
//! A [`VadEngine`] only answers "is this frame speech?" (with a probability).
//! [`SegmentingVad`] wraps any engine, applies the timing rules of
//! [`VadConfig`] and emits `SpeechStart` / `SpeechEnd` with the speech audio.
//!
//! Event times are where speech really began and ended: the start is the first
//! speech frame of the segment (not the padded start of the captured audio,
//! and not the moment the minimum duration was reached), the end is the end of
//! the last speech frame (not the moment the silence threshold expired).

mod energy;
#[cfg(feature = "silero")]
mod silero;
mod webrtc;

pub use energy::{EnergyVad, EnergyVadConfig};
#[cfg(feature = "silero")]
pub use silero::SileroVad;
pub use webrtc::{WebRtcVad, WebRtcVadMode};

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::stage::StreamMap;
use crate::{AudioError, AudioFrame};

/// Timing rules of speech segmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// Silence that ends a speech segment, in milliseconds.
    pub silence_threshold_ms: u32,
    /// Audio kept before and after the speech in the captured segment, in milliseconds.
    pub speech_pad_ms: u32,
    /// Speech shorter than this never produces events, in milliseconds.
    pub min_speech_duration_ms: u32,
    /// Emit an `AudioLevel` event this often, in milliseconds (off when absent).
    pub level_report_ms: Option<u32>,
    /// Upper bound of captured speech audio per segment, in milliseconds.
    pub max_capture_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            silence_threshold_ms: 500,
            speech_pad_ms: 300,
            min_speech_duration_ms: 250,
            level_report_ms: None,
            max_capture_ms: 60_000,
        }
    }
}

/// Kinds of VAD events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VadEventType {
    /// Speech began.
    SpeechStart,
    /// Speech ended; the event carries the captured audio.
    SpeechEnd,
    /// Silence lasted longer than the threshold.
    Silence,
    /// Periodic level report.
    AudioLevel,
}

/// One VAD event.
#[derive(Debug, Clone, PartialEq)]
pub struct VadEvent {
    /// What happened.
    pub kind: VadEventType,
    /// When it happened on the stream's media clock, in milliseconds.
    pub t_ms: f64,
    /// Captured speech (with padding) on `SpeechEnd`, at the frame's rate.
    pub audio: Option<Vec<i16>>,
    /// Mean speech probability of the segment.
    pub confidence: Option<f32>,
    /// Duration of the speech (or silence), in milliseconds.
    pub duration_ms: Option<f64>,
    /// RMS level in dBFS (on `AudioLevel`).
    pub level_db: Option<f32>,
}

/// A VAD stage.
pub trait VadProvider {
    /// Provider name.
    fn name(&self) -> &str;
    /// Classifies one frame of `stream`; returns an event when something changed.
    ///
    /// # Errors
    /// When the frame format is not supported by the engine.
    fn process(&mut self, frame: &AudioFrame, stream: &str)
    -> Result<Option<VadEvent>, AudioError>;
    /// Ends the stream: closes an open segment, if any.
    fn finish(&mut self, stream: &str) -> Option<VadEvent>;
    /// Drops `stream`'s state.
    fn reset(&mut self, stream: &str);
    /// Drops every stream.
    fn close(&mut self);
    /// Delay between the audio and the engine's decision, in milliseconds.
    fn latency_ms(&self) -> f64 {
        0.0
    }
}

/// A per-frame speech classifier, one instance per stream.
pub trait VadEngine {
    /// Speech probability of `samples` (mono, `rate` Hz) in [0, 1].
    ///
    /// # Errors
    /// When the frame length or rate is not supported.
    fn speech_probability(&mut self, samples: &[i16], rate: u32) -> Result<f32, AudioError>;
    /// Probability at or above which a frame counts as speech.
    fn threshold(&self) -> f32 {
        0.5
    }
    /// Delay of the decision relative to the audio, in milliseconds.
    fn latency_ms(&self) -> f64 {
        0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Idle,
    /// Speech seen but not yet long enough to report.
    Candidate,
    Speaking,
}

struct Segmenter<E> {
    engine: E,
    phase: Phase,
    /// Start of the first speech frame of the current candidate/segment.
    start_ms: f64,
    /// End of the last speech frame seen.
    last_speech_end_ms: f64,
    speech_ms: f64,
    silence_ms: f64,
    prob_sum: f64,
    prob_frames: u32,
    /// Recent audio kept for the leading pad.
    preroll: VecDeque<i16>,
    capture: Vec<i16>,
    /// Samples captured after the last speech frame (trailing pad candidates).
    trailing: usize,
    since_level_ms: f64,
    pending: Option<VadEvent>,
    rate: u32,
    clock_ms: f64,
    /// Noise floor (frame RMS, dBFS): follows quieter frames at once and
    /// rises 1 dB/s otherwise.
    floor_db: Option<f32>,
    /// The most recent speech frames: (start, end, RMS dBFS).
    tail: VecDeque<(f64, f64, f32)>,
    /// Loudest frame RMS of the current segment, dBFS.
    peak_db: f32,
    /// The first speech frames of the current candidate: (start, RMS dBFS).
    lead: Vec<(f64, f32)>,
}

/// Speech frames kept from a candidate's start for trimming its beginning.
const LEAD_FRAMES: usize = 32;

/// Speech frames kept for trimming a detector's hang-over off the end.
const TAIL_FRAMES: usize = 16;
/// At most this much is trimmed off a segment's end, in milliseconds.
const MAX_TRIM_MS: f64 = 200.0;
/// Trailing speech frames this close to the noise floor count as hang-over.
const HANGOVER_MARGIN_DB: f32 = 6.0;
/// ... and so do frames this far below the segment's loudest frame.
const HANGOVER_BELOW_PEAK_DB: f32 = 30.0;

/// Any [`VadEngine`] with segmentation and speech capture.
pub struct SegmentingVad<E> {
    name: &'static str,
    config: VadConfig,
    factory: Box<dyn Fn() -> Result<E, AudioError>>,
    streams: StreamMap<Segmenter<E>>,
    latency_ms: f64,
}

impl<E> std::fmt::Debug for SegmentingVad<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentingVad")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish()
    }
}

impl<E: VadEngine> SegmentingVad<E> {
    /// Wraps engines made by `factory` (one per stream) with the timing rules of `config`.
    pub fn new(
        name: &'static str,
        config: VadConfig,
        factory: impl Fn() -> Result<E, AudioError> + 'static,
    ) -> Self {
        Self {
            name,
            config,
            factory: Box::new(factory),
            streams: StreamMap::default(),
            latency_ms: 0.0,
        }
    }

    /// The timing rules in force.
    pub fn config(&self) -> &VadConfig {
        &self.config
    }
}

impl<E: VadEngine> Segmenter<E> {
    fn new(engine: E) -> Self {
        Self {
            engine,
            phase: Phase::Idle,
            start_ms: 0.0,
            last_speech_end_ms: 0.0,
            speech_ms: 0.0,
            silence_ms: 0.0,
            prob_sum: 0.0,
            prob_frames: 0,
            preroll: VecDeque::new(),
            capture: Vec::new(),
            trailing: 0,
            since_level_ms: 0.0,
            pending: None,
            rate: 0,
            clock_ms: 0.0,
            floor_db: None,
            tail: VecDeque::with_capacity(TAIL_FRAMES),
            peak_db: -120.0,
            lead: Vec::with_capacity(LEAD_FRAMES),
        }
    }

    /// Start of the speech proper: the first speech frame of the candidate,
    /// after skipping leading frames the detector called speech although
    /// they sit near the noise floor or far below the candidate's loudest
    /// frame (noise taken for speech while the detector and the stages in
    /// front of it were still adapting, or just before a word).
    fn refined_start(&self) -> f64 {
        let Some(floor) = self.floor_db else {
            return self.start_ms;
        };
        let peak = self.lead.iter().map(|l| l.1).fold(-120.0f32, f32::max);
        self.lead
            .iter()
            .find(|&&(_, rms)| {
                rms >= floor + HANGOVER_MARGIN_DB && rms >= peak - HANGOVER_BELOW_PEAK_DB
            })
            .map_or(self.start_ms, |l| l.0.max(self.start_ms))
    }

    /// End of the speech proper: the last speech frame, minus trailing
    /// frames the detector still called speech although they sit at the
    /// noise floor (its hang-over), within `MAX_TRIM_MS`.
    fn refined_end(&self, cfg: &VadConfig) -> f64 {
        let mut end = self.last_speech_end_ms;
        let Some(floor) = self.floor_db else {
            return end;
        };
        let earliest = (self.last_speech_end_ms - MAX_TRIM_MS)
            .max(self.start_ms + f64::from(cfg.min_speech_duration_ms));
        for &(s, e, rms) in self.tail.iter().rev() {
            let quiet =
                rms < floor + HANGOVER_MARGIN_DB || rms < self.peak_db - HANGOVER_BELOW_PEAK_DB;
            if (e - end).abs() > 0.5 || s < earliest || !quiet {
                break;
            }
            end = s;
        }
        end
    }

    fn end_event(&mut self, cfg: &VadConfig) -> VadEvent {
        self.last_speech_end_ms = self.refined_end(cfg);
        self.tail.clear();
        self.peak_db = -120.0;
        let pad = (cfg.speech_pad_ms as usize * self.rate as usize) / 1000;
        let extra = self.trailing.saturating_sub(pad);
        let keep = self.capture.len() - extra.min(self.capture.len());
        self.capture.truncate(keep);
        let audio = std::mem::take(&mut self.capture);
        let confidence = if self.prob_frames > 0 {
            Some((self.prob_sum / f64::from(self.prob_frames)) as f32)
        } else {
            None
        };
        let ev = VadEvent {
            kind: VadEventType::SpeechEnd,
            t_ms: self.last_speech_end_ms,
            audio: Some(audio),
            confidence,
            duration_ms: Some(self.last_speech_end_ms - self.start_ms),
            level_db: None,
        };
        self.phase = Phase::Idle;
        self.speech_ms = 0.0;
        self.trailing = 0;
        self.prob_sum = 0.0;
        self.prob_frames = 0;
        ev
    }
}

impl<E: VadEngine> VadProvider for SegmentingVad<E> {
    fn name(&self) -> &str {
        self.name
    }

    fn process(
        &mut self,
        frame: &AudioFrame,
        stream: &str,
    ) -> Result<Option<VadEvent>, AudioError> {
        if frame.channels != 1 {
            return Err(AudioError::FormatMismatch {
                stage: "vad",
                expected: "mono".into(),
                got: format!("{} channels", frame.channels),
            });
        }
        let cfg = &self.config;
        let factory = &self.factory;
        let seg = self
            .streams
            .get_or_try_insert(stream, || Ok(Segmenter::new(factory()?)))?;
        self.latency_ms = seg.engine.latency_ms();
        if seg.rate != frame.sample_rate {
            seg.rate = frame.sample_rate;
            seg.preroll.clear();
        }
        let dur = frame.duration_ms();
        let t0 = frame.timestamp_ms.unwrap_or(seg.clock_ms);
        seg.clock_ms = t0 + dur;
        let prob = seg
            .engine
            .speech_probability(&frame.samples, frame.sample_rate)?;
        let is_speech = prob >= seg.engine.threshold();
        let rms = crate::signal::rms_dbfs(&frame.samples);
        seg.floor_db = Some(match seg.floor_db {
            None => rms,
            Some(f) if rms < f => rms,
            Some(f) => f + (dur / 1000.0) as f32,
        });
        if is_speech {
            if seg.tail.len() == TAIL_FRAMES {
                seg.tail.pop_front();
            }
            seg.tail.push_back((t0, t0 + dur, rms));
            seg.peak_db = seg.peak_db.max(rms);
        }
        let pad_samples = (cfg.speech_pad_ms as usize * frame.sample_rate as usize) / 1000;
        let cap_samples = (cfg.max_capture_ms as usize * frame.sample_rate as usize) / 1000;

        let mut event = seg.pending.take();
        match seg.phase {
            Phase::Idle => {
                if is_speech {
                    seg.phase = Phase::Candidate;
                    seg.start_ms = t0;
                    seg.last_speech_end_ms = t0 + dur;
                    seg.speech_ms = dur;
                    seg.silence_ms = 0.0;
                    seg.prob_sum = f64::from(prob);
                    seg.prob_frames = 1;
                    seg.capture.clear();
                    // Reserve a typical utterance up front so capture does not
                    // reallocate frame by frame while someone is talking.
                    let want = pad_samples * 2 + frame.sample_rate as usize * 10;
                    seg.capture.reserve(want.min(cap_samples.max(1)));
                    seg.capture.extend(seg.preroll.iter());
                    seg.capture.extend_from_slice(&frame.samples);
                    seg.trailing = 0;
                    seg.lead.clear();
                    seg.lead.push((t0, rms));
                }
            }
            Phase::Candidate | Phase::Speaking => {
                if seg.capture.len() + frame.samples.len() <= cap_samples {
                    seg.capture.extend_from_slice(&frame.samples);
                }
                if is_speech {
                    seg.speech_ms += dur;
                    seg.silence_ms = 0.0;
                    seg.last_speech_end_ms = t0 + dur;
                    seg.trailing = 0;
                    seg.prob_sum += f64::from(prob);
                    seg.prob_frames += 1;
                    if seg.phase == Phase::Candidate && seg.lead.len() < LEAD_FRAMES {
                        seg.lead.push((t0, rms));
                    }
                } else {
                    seg.silence_ms += dur;
                    seg.trailing += frame.samples.len();
                }
                if seg.phase == Phase::Candidate {
                    // A candidate dies after a short gap so isolated clicks
                    // cannot add up to "speech".
                    let gap = f64::from(cfg.silence_threshold_ms.min(200));
                    if seg.silence_ms >= gap {
                        seg.phase = Phase::Idle;
                        seg.capture.clear();
                    } else if seg.speech_ms >= f64::from(cfg.min_speech_duration_ms) {
                        seg.phase = Phase::Speaking;
                        seg.start_ms = seg.refined_start();
                        let ev = VadEvent {
                            kind: VadEventType::SpeechStart,
                            t_ms: seg.start_ms,
                            audio: None,
                            confidence: Some((seg.prob_sum / f64::from(seg.prob_frames)) as f32),
                            duration_ms: None,
                            level_db: None,
                        };
                        if event.is_some() {
                            seg.pending = Some(ev);
                        } else {
                            event = Some(ev);
                        }
                    }
                } else if seg.silence_ms >= f64::from(cfg.silence_threshold_ms) {
                    let ev = seg.end_event(cfg);
                    if event.is_some() {
                        seg.pending = Some(ev);
                    } else {
                        event = Some(ev);
                    }
                }
            }
        }
        // Keep the leading pad.
        seg.preroll.extend(frame.samples.iter());
        while seg.preroll.len() > pad_samples {
            seg.preroll.pop_front();
        }
        if let Some(every) = cfg.level_report_ms {
            seg.since_level_ms += dur;
            if seg.since_level_ms >= f64::from(every) && event.is_none() {
                seg.since_level_ms = 0.0;
                event = Some(VadEvent {
                    kind: VadEventType::AudioLevel,
                    t_ms: t0,
                    audio: None,
                    confidence: Some(prob),
                    duration_ms: None,
                    level_db: Some(crate::signal::rms_dbfs(&frame.samples)),
                });
            }
        }
        Ok(event)
    }

    fn finish(&mut self, stream: &str) -> Option<VadEvent> {
        let cfg = &self.config;
        let seg = self.streams.get_mut(stream)?;
        if let Some(ev) = seg.pending.take() {
            return Some(ev);
        }
        match seg.phase {
            Phase::Speaking => Some(seg.end_event(cfg)),
            _ => None,
        }
    }

    fn reset(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    fn close(&mut self) {
        self.streams.clear();
    }

    fn latency_ms(&self) -> f64 {
        self.latency_ms
    }
}
