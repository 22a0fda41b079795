//! Debug taps: WAV captures at every stage boundary, for comparing the signal before and after each stage.
//!
//! Files are opened lazily on the first frame that reaches a tap and closed
//! when the stream ends. Taps only read frames. Writes go through a buffered
//! writer; this is a development tool and a warning is logged when it is on.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::resample::RubatoResampler;
use crate::{AudioError, AudioFormat, AudioFrame};

/// The capture points, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TapPoint {
    /// After the resampler, before AEC.
    Raw,
    /// After AEC.
    PostAec,
    /// After AGC.
    PostAgc,
    /// After the denoiser (what the VAD hears).
    PostDenoiser,
    /// Each speech segment handed to STT, one file per segment.
    PostVadSpeech,
    /// Outbound audio before post-processing.
    OutboundRaw,
    /// Outbound audio after post-processing, before the resampler.
    OutboundFinal,
}

impl TapPoint {
    /// Every tap point.
    pub const ALL: [TapPoint; 7] = [
        TapPoint::Raw,
        TapPoint::PostAec,
        TapPoint::PostAgc,
        TapPoint::PostDenoiser,
        TapPoint::PostVadSpeech,
        TapPoint::OutboundRaw,
        TapPoint::OutboundFinal,
    ];

    /// File-name stem: order prefix and stage name, e.g. `02_post_aec`.
    pub fn stem(self) -> &'static str {
        match self {
            TapPoint::Raw => "01_raw",
            TapPoint::PostAec => "02_post_aec",
            TapPoint::PostAgc => "03_post_agc",
            TapPoint::PostDenoiser => "04_post_denoiser",
            TapPoint::PostVadSpeech => "05_post_vad_speech",
            TapPoint::OutboundRaw => "06_outbound_raw",
            TapPoint::OutboundFinal => "07_outbound_final",
        }
    }
}

/// Which taps to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TapSelection {
    /// `"all"`.
    All(AllTaps),
    /// An explicit list.
    Only(Vec<TapPoint>),
}

/// The literal `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllTaps {
    /// Every tap.
    All,
}

/// Debug tap configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugTapsConfig {
    /// Directory for the WAV files (created if missing).
    pub output_dir: PathBuf,
    /// Taps to write.
    #[serde(default = "all_taps")]
    pub stages: TapSelection,
    /// Prefix file names with the stream key.
    #[serde(default = "yes")]
    pub session_scoped: bool,
    /// Rate of the files; the internal rate when absent.
    #[serde(default)]
    pub sample_rate: Option<u32>,
}

fn all_taps() -> TapSelection {
    TapSelection::All(AllTaps::All)
}
fn yes() -> bool {
    true
}

impl DebugTapsConfig {
    /// True when `tap` is selected.
    pub fn wants(&self, tap: TapPoint) -> bool {
        match &self.stages {
            TapSelection::All(_) => true,
            TapSelection::Only(list) => list.contains(&tap),
        }
    }
}

type Writer = hound::WavWriter<BufWriter<File>>;

/// The live taps of a pipeline.
pub struct DebugTaps {
    config: DebugTapsConfig,
    writers: HashMap<(String, TapPoint), Writer>,
    segments: HashMap<String, u32>,
    resampler: Option<RubatoResampler>,
    scratch: AudioFrame,
}

impl std::fmt::Debug for DebugTaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugTaps")
            .field("config", &self.config)
            .field("open", &self.writers.len())
            .finish()
    }
}

impl DebugTaps {
    /// Taps as configured; logs a warning because they are not meant for production.
    ///
    /// # Errors
    /// [`AudioError::Io`] when the directory cannot be created.
    pub fn new(config: DebugTapsConfig) -> Result<Self, AudioError> {
        std::fs::create_dir_all(&config.output_dir)?;
        tracing::warn!(dir = %config.output_dir.display(), "audio debug taps are on; they write every stage to disk");
        let resampler = config
            .sample_rate
            .map(|r| RubatoResampler::new(AudioFormat::pcm_mono(r)));
        Ok(Self {
            config,
            writers: HashMap::new(),
            segments: HashMap::new(),
            resampler,
            scratch: AudioFrame::with_capacity(48_000, 1, 4096),
        })
    }

    fn path(&self, stream: &str, stem: &str) -> PathBuf {
        let name = if self.config.session_scoped {
            format!("{stream}_{stem}.wav")
        } else {
            format!("{stem}.wav")
        };
        self.config.output_dir.join(name)
    }

    fn spec(rate: u32) -> hound::WavSpec {
        hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        }
    }

    /// Copies a frame into `tap`'s file for `stream`.
    ///
    /// # Errors
    /// [`AudioError::Io`] on write failure.
    pub fn write(
        &mut self,
        stream: &str,
        tap: TapPoint,
        frame: &AudioFrame,
    ) -> Result<(), AudioError> {
        if !self.config.wants(tap) || frame.channels != 1 {
            return Ok(());
        }
        let frame = match self.resampler.as_mut() {
            Some(r) => {
                self.scratch.samples.clear();
                self.scratch.samples.extend_from_slice(&frame.samples);
                self.scratch.sample_rate = frame.sample_rate;
                self.scratch.channels = 1;
                let key = format!("{stream}/{}", tap.stem());
                r.process(&mut self.scratch, &key)?;
                &self.scratch
            }
            None => frame,
        };
        // Look the writer up without allocating a key in the steady state.
        let key = (stream.to_owned(), tap);
        if !self.writers.contains_key(&key) {
            let path = self.path(stream, tap.stem());
            let w = hound::WavWriter::create(path, Self::spec(frame.sample_rate))?;
            self.writers.insert(key.clone(), w);
        }
        if let Some(w) = self.writers.get_mut(&key) {
            let mut i16w = w.get_i16_writer(frame.samples.len() as u32);
            for &s in &frame.samples {
                i16w.write_sample(s);
            }
            i16w.flush()?;
        }
        Ok(())
    }

    /// Writes one speech segment to its own numbered file.
    ///
    /// # Errors
    /// [`AudioError::Io`] on write failure.
    pub fn write_segment(
        &mut self,
        stream: &str,
        rate: u32,
        audio: &[i16],
    ) -> Result<(), AudioError> {
        if !self.config.wants(TapPoint::PostVadSpeech) {
            return Ok(());
        }
        let n = self.segments.entry(stream.to_owned()).or_insert(0);
        *n += 1;
        let stem = format!("{}_{:03}", TapPoint::PostVadSpeech.stem(), n);
        let mut w = hound::WavWriter::create(self.path(stream, &stem), Self::spec(rate))?;
        for &s in audio {
            w.write_sample(s)?;
        }
        w.finalize()?;
        Ok(())
    }

    /// Finalises and closes `stream`'s files.
    ///
    /// # Errors
    /// [`AudioError::Io`] when a header cannot be finalised.
    pub fn end_stream(&mut self, stream: &str) -> Result<(), AudioError> {
        let keys: Vec<_> = self
            .writers
            .keys()
            .filter(|(s, _)| s == stream)
            .cloned()
            .collect();
        for k in keys {
            if let Some(w) = self.writers.remove(&k) {
                w.finalize()?;
            }
        }
        self.segments.remove(stream);
        Ok(())
    }
}
