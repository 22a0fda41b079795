//! Call recording to WAV: caller and agent audio placed by media-clock timestamps, never by arrival time.
//!
//! Each frame's position in the file is derived from its `timestamp_ms` on
//! the session's media clock, so gaps become silence and jitter in arrival
//! order cannot shift one channel against the other. In stereo the caller
//! (inbound) is the left channel and the agent (outbound) the right one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{AudioError, AudioFrame};

/// Which directions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordingMode {
    /// Caller audio only.
    InboundOnly,
    /// Agent audio only.
    OutboundOnly,
    /// Both directions.
    #[default]
    Both,
}

/// How the two directions are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordingChannelMode {
    /// One mono file, both directions summed.
    Mixed,
    /// One stereo file, caller left, agent right.
    #[default]
    Stereo,
    /// One mono file per direction.
    Separate,
}

/// What and where to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConfig {
    /// Output format; only `wav` is supported.
    #[serde(default = "default_format")]
    pub format: String,
    /// Directions to record.
    #[serde(default)]
    pub mode: RecordingMode,
    /// Channel layout.
    #[serde(default)]
    pub channels: RecordingChannelMode,
    /// Storage backend; only `local` (a directory) is supported.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Directory the files are written to.
    pub directory: PathBuf,
    /// Sample rate of the recording (frames must arrive at this rate).
    #[serde(default = "default_rate")]
    pub sample_rate: u32,
    /// Auto-delete after this many days (kept for the storage layer; not enforced here).
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Recording metadata copied into the result.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

fn default_format() -> String {
    "wav".into()
}
fn default_storage() -> String {
    "local".into()
}
fn default_rate() -> u32 {
    16_000
}

/// Identifies one running recording.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordingHandle {
    /// Unique handle id.
    pub id: String,
    /// Session being recorded.
    pub session_id: String,
}

/// What a finished recording produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingResult {
    /// Recording id.
    pub recording_id: String,
    /// Paths of the written files.
    pub urls: Vec<String>,
    /// Length of the recording in seconds.
    pub duration_seconds: f64,
    /// Output format.
    pub format: String,
    /// Channel layout used.
    pub mode: RecordingChannelMode,
    /// Metadata from the configuration.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Samples dropped because they arrived for a stretch already written.
    pub late_samples_dropped: u64,
}

/// Lines up caller and agent samples on one media clock.
///
/// Push frames from either side in any order; aligned sample pairs come out
/// of [`StereoAligner::drain`] as soon as both sides have covered them. The
/// caller side is the clock master: if the agent side falls behind by more
/// than `max_skew` samples (the agent is simply silent), it is filled with
/// silence. The agent side may run ahead (TTS is often produced faster than
/// real time) up to `max_lead` samples, beyond which the caller side is
/// assumed silent.
#[derive(Debug)]
pub struct StereoAligner {
    rate: u32,
    sides: [Side; 2],
    written: u64,
    max_skew: u64,
    max_lead: u64,
    late_dropped: u64,
}

#[derive(Debug, Default)]
struct Side {
    /// Absolute position just past the last queued sample.
    end: u64,
    queue: VecDeque<i16>,
}

/// Left (caller) or right (agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Caller audio.
    Inbound = 0,
    /// Agent audio.
    Outbound = 1,
}

impl StereoAligner {
    /// An aligner at `rate` Hz with the default skew limits (1 s behind, 5 min ahead).
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            sides: [Side::default(), Side::default()],
            written: 0,
            max_skew: u64::from(rate),
            max_lead: u64::from(rate) * 300,
            late_dropped: 0,
        }
    }

    /// Sample position of a media-clock time.
    pub fn position(&self, t_ms: f64) -> u64 {
        (t_ms.max(0.0) * f64::from(self.rate) / 1000.0).round() as u64
    }

    /// Samples dropped because their stretch had already been written.
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// Samples (per channel) written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Queues a mono frame for one side.
    ///
    /// # Errors
    /// [`AudioError::FormatMismatch`] for a frame at another rate or not mono.
    pub fn push(&mut self, dir: Direction, frame: &AudioFrame) -> Result<(), AudioError> {
        if frame.sample_rate != self.rate || frame.channels != 1 {
            return Err(AudioError::FormatMismatch {
                stage: "recorder",
                expected: format!("mono {} Hz", self.rate),
                got: format!("{} ch {} Hz", frame.channels, frame.sample_rate),
            });
        }
        let written = self.written;
        let side = &mut self.sides[dir as usize];
        let pos = match frame.timestamp_ms {
            Some(t) => (t.max(0.0) * f64::from(self.rate) / 1000.0).round() as u64,
            None => side.end,
        };
        let mut samples: &[i16] = &frame.samples;
        let mut pos = pos;
        // The part before `written` is already in the file: too late.
        if pos < written {
            let skip = ((written - pos) as usize).min(samples.len());
            self.late_dropped += skip as u64;
            samples = &samples[skip..];
            pos = written;
        }
        if samples.is_empty() {
            return Ok(());
        }
        // Overwrite whatever is queued there (silence filled in for a frame
        // that arrives out of order), then append the rest.
        if pos < side.end {
            let off = (pos - written) as usize;
            let overlap = ((side.end - pos) as usize).min(samples.len());
            for (i, &s) in samples[..overlap].iter().enumerate() {
                if let Some(q) = side.queue.get_mut(off + i) {
                    *q = s;
                }
            }
            samples = &samples[overlap..];
            pos += overlap as u64;
        }
        if pos > side.end {
            side.queue
                .extend(std::iter::repeat_n(0, (pos - side.end) as usize));
            side.end = pos;
        }
        side.queue.extend(samples.iter().copied());
        side.end += samples.len() as u64;
        Ok(())
    }

    /// Hands every aligned (left, right) pair that is ready to `sink`.
    ///
    /// # Errors
    /// Whatever `sink` returns.
    pub fn drain(
        &mut self,
        mut sink: impl FnMut(i16, i16) -> Result<(), AudioError>,
    ) -> Result<(), AudioError> {
        let (l_end, r_end) = (self.sides[0].end, self.sides[1].end);
        // Agent silent for a while: fill its side up to the skew limit.
        if l_end > r_end + self.max_skew {
            let fill = l_end - self.max_skew;
            self.fill_to(1, fill);
        }
        if self.sides[1].end > self.sides[0].end + self.max_lead {
            let fill = self.sides[1].end - self.max_lead;
            self.fill_to(0, fill);
        }
        let ready = self.sides[0].end.min(self.sides[1].end);
        while self.written < ready {
            let l = self.sides[0].queue.pop_front().unwrap_or(0);
            let r = self.sides[1].queue.pop_front().unwrap_or(0);
            sink(l, r)?;
            self.written += 1;
        }
        Ok(())
    }

    /// Writes out everything queued, padding the shorter side with silence.
    ///
    /// # Errors
    /// Whatever `sink` returns.
    pub fn flush(
        &mut self,
        sink: impl FnMut(i16, i16) -> Result<(), AudioError>,
    ) -> Result<(), AudioError> {
        let end = self.sides[0].end.max(self.sides[1].end);
        self.fill_to(0, end);
        self.fill_to(1, end);
        self.drain(sink)
    }

    fn fill_to(&mut self, side: usize, pos: u64) {
        let s = &mut self.sides[side];
        let start = s.end.max(self.written);
        if pos > start {
            s.queue
                .extend(std::iter::repeat_n(0, (pos - start) as usize));
            s.end = pos;
        }
    }
}

type WavOut = hound::WavWriter<BufWriter<File>>;

enum Layout {
    Mono {
        dir: Direction,
        writer: WavOut,
        next: u64,
    },
    Aligned {
        stereo: bool,
        aligner: StereoAligner,
        writer: WavOut,
    },
    Separate {
        writers: [WavOut; 2],
        next: [u64; 2],
    },
}

struct Active {
    handle: RecordingHandle,
    config: RecordingConfig,
    layout: Layout,
    paths: Vec<PathBuf>,
    late: u64,
}

/// Writes recordings of voice sessions as WAV files in a directory.
#[derive(Default)]
pub struct WavRecorder {
    active: Vec<Active>,
    counter: u64,
    /// Sinks fed with the same frames, file or no file.
    pub sinks: crate::sink::RecordingSinks,
}

impl std::fmt::Debug for WavRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavRecorder")
            .field("active", &self.active.len())
            .finish()
    }
}

fn spec(rate: u32, channels: u16) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

fn create(path: &Path, rate: u32, channels: u16) -> Result<WavOut, AudioError> {
    Ok(hound::WavWriter::create(path, spec(rate, channels))?)
}

/// Writes a mono frame at its media-clock position, filling gaps with silence.
fn write_mono(
    writer: &mut WavOut,
    next: &mut u64,
    late: &mut u64,
    rate: u32,
    frame: &AudioFrame,
) -> Result<(), AudioError> {
    let pos = frame.timestamp_ms.map_or(*next, |t| {
        (t.max(0.0) * f64::from(rate) / 1000.0).round() as u64
    });
    let mut samples: &[i16] = &frame.samples;
    if pos < *next {
        let skip = ((*next - pos) as usize).min(samples.len());
        *late += skip as u64;
        samples = &samples[skip..];
    } else {
        for _ in *next..pos {
            writer.write_sample(0i16)?;
        }
        *next = pos;
    }
    for &s in samples {
        writer.write_sample(s)?;
    }
    *next += samples.len() as u64;
    Ok(())
}

impl WavRecorder {
    /// A recorder with no active recordings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Recorder name.
    pub fn name(&self) -> &str {
        "wav"
    }

    /// Starts recording `session_id`.
    ///
    /// # Errors
    /// [`AudioError::Config`] for an unsupported format or storage;
    /// [`AudioError::Io`] when the files cannot be created.
    pub fn start(
        &mut self,
        session_id: &str,
        config: RecordingConfig,
    ) -> Result<RecordingHandle, AudioError> {
        if config.format != "wav" {
            return Err(AudioError::Config(format!(
                "recording format {} is not supported (wav only)",
                config.format
            )));
        }
        if config.storage != "local" {
            return Err(AudioError::Config(format!(
                "recording storage {} is not supported (local only)",
                config.storage
            )));
        }
        std::fs::create_dir_all(&config.directory)?;
        self.counter += 1;
        let id = format!("{session_id}-rec{}", self.counter);
        let rate = config.sample_rate;
        let dir = &config.directory;
        let mut paths = Vec::new();
        let layout = match (config.mode, config.channels) {
            (RecordingMode::InboundOnly, _) | (RecordingMode::OutboundOnly, _) => {
                let d = if config.mode == RecordingMode::InboundOnly {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                let p = dir.join(format!("{id}.wav"));
                let writer = create(&p, rate, 1)?;
                paths.push(p);
                Layout::Mono {
                    dir: d,
                    writer,
                    next: 0,
                }
            }
            (RecordingMode::Both, RecordingChannelMode::Separate) => {
                let pi = dir.join(format!("{id}_inbound.wav"));
                let po = dir.join(format!("{id}_outbound.wav"));
                let writers = [create(&pi, rate, 1)?, create(&po, rate, 1)?];
                paths.push(pi);
                paths.push(po);
                Layout::Separate {
                    writers,
                    next: [0, 0],
                }
            }
            (RecordingMode::Both, mode) => {
                let stereo = mode == RecordingChannelMode::Stereo;
                let p = dir.join(format!("{id}.wav"));
                let writer = create(&p, rate, if stereo { 2 } else { 1 })?;
                paths.push(p);
                Layout::Aligned {
                    stereo,
                    aligner: StereoAligner::new(rate),
                    writer,
                }
            }
        };
        let handle = RecordingHandle {
            id,
            session_id: session_id.to_owned(),
        };
        self.active.push(Active {
            handle: handle.clone(),
            config,
            layout,
            paths,
            late: 0,
        });
        Ok(handle)
    }

    fn find(&mut self, handle: &RecordingHandle) -> Result<&mut Active, AudioError> {
        self.active
            .iter_mut()
            .find(|a| a.handle == *handle)
            .ok_or_else(|| AudioError::Config(format!("recording {} is not active", handle.id)))
    }

    fn record(
        &mut self,
        handle: &RecordingHandle,
        dir: Direction,
        frame: &AudioFrame,
    ) -> Result<(), AudioError> {
        let a = self.find(handle)?;
        let rate = a.config.sample_rate;
        if frame.sample_rate != rate || frame.channels != 1 {
            return Err(AudioError::FormatMismatch {
                stage: "recorder",
                expected: format!("mono {rate} Hz"),
                got: format!("{} ch {} Hz", frame.channels, frame.sample_rate),
            });
        }
        match &mut a.layout {
            Layout::Mono {
                dir: d,
                writer,
                next,
            } => {
                if *d == dir {
                    write_mono(writer, next, &mut a.late, rate, frame)?;
                }
            }
            Layout::Separate { writers, next } => {
                let i = dir as usize;
                write_mono(&mut writers[i], &mut next[i], &mut a.late, rate, frame)?;
            }
            Layout::Aligned {
                stereo,
                aligner,
                writer,
            } => {
                aligner.push(dir, frame)?;
                let stereo = *stereo;
                aligner.drain(|l, r| write_pair(writer, stereo, l, r))?;
            }
        }
        Ok(())
    }

    /// Records a caller frame (after the resampler, before any processing).
    ///
    /// # Errors
    /// Unknown handle, wrong format, or I/O failure.
    pub fn record_inbound(
        &mut self,
        handle: &RecordingHandle,
        frame: &AudioFrame,
    ) -> Result<(), AudioError> {
        self.record(handle, Direction::Inbound, frame)
    }

    /// Records an agent frame (after post-processing: what the caller heard).
    ///
    /// # Errors
    /// Unknown handle, wrong format, or I/O failure.
    pub fn record_outbound(
        &mut self,
        handle: &RecordingHandle,
        frame: &AudioFrame,
    ) -> Result<(), AudioError> {
        self.record(handle, Direction::Outbound, frame)
    }

    /// Finishes the files and returns where they are.
    ///
    /// # Errors
    /// Unknown handle or I/O failure while finalising headers.
    pub fn stop(&mut self, handle: &RecordingHandle) -> Result<RecordingResult, AudioError> {
        let idx = self
            .active
            .iter()
            .position(|a| a.handle == *handle)
            .ok_or_else(|| AudioError::Config(format!("recording {} is not active", handle.id)))?;
        let mut a = self.active.remove(idx);
        let rate = f64::from(a.config.sample_rate);
        let samples = match a.layout {
            Layout::Mono { writer, next, .. } => {
                writer.finalize()?;
                next
            }
            Layout::Separate { writers, next } => {
                let [w0, w1] = writers;
                w0.finalize()?;
                w1.finalize()?;
                next[0].max(next[1])
            }
            Layout::Aligned {
                stereo,
                mut aligner,
                mut writer,
            } => {
                aligner.flush(|l, r| write_pair(&mut writer, stereo, l, r))?;
                a.late += aligner.late_dropped();
                writer.finalize()?;
                aligner.written()
            }
        };
        Ok(RecordingResult {
            recording_id: a.handle.id,
            urls: a.paths.iter().map(|p| p.display().to_string()).collect(),
            duration_seconds: samples as f64 / rate,
            format: a.config.format,
            mode: a.config.channels,
            metadata: a.config.metadata,
            late_samples_dropped: a.late,
        })
    }

    /// Stops every recording, finalising files.
    pub fn close(&mut self) {
        let handles: Vec<_> = self.active.iter().map(|a| a.handle.clone()).collect();
        for h in handles {
            if let Err(err) = self.stop(&h) {
                tracing::warn!(recording = %h.id, error = %err, "failed to finalise recording");
            }
        }
    }
}

fn write_pair(writer: &mut WavOut, stereo: bool, l: i16, r: i16) -> Result<(), AudioError> {
    if stereo {
        writer.write_sample(l)?;
        writer.write_sample(r)?;
    } else {
        let m = (i32::from(l) + i32::from(r)).clamp(-32768, 32767) as i16;
        writer.write_sample(m)?;
    }
    Ok(())
}
