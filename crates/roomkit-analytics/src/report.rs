//! The local report exporter: for every finished call, a directory with
//! `report.json` (transcript, tool calls, metrics, a two-channel waveform
//! summary) and `recording.wav` (the stereo recording), plus the readers
//! the web UI uses to list and show them.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{AnalyticsError, Result};
use crate::export::{CallFeed, Exporter, write_when_space};
use crate::protocol::{BYTES_PER_FRAME, MetricRecord, ToolRecord, TranscriptEntry};
use crate::spool::validate_call_id;

const TARGET: &str = "roomkit.analytics.report";
const REPORT_FILE: &str = "report.json";
const WAV_FILE: &str = "recording.wav";

/// Peaks of each channel in equal time bins, for drawing a waveform.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Waveform {
    /// Seconds each bin covers.
    pub bin_seconds: f64,
    /// Peak absolute sample of the user channel per bin (0..=32768).
    pub user: Vec<u16>,
    /// Peak absolute sample of the agent channel per bin.
    pub agent: Vec<u16>,
}

/// A finished call as the local exporter writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    /// Call id.
    pub call_id: String,
    /// Room.
    pub room_id: String,
    /// Agent id.
    pub agent_id: String,
    /// Agent name.
    pub agent_name: Option<String>,
    /// Test call.
    pub is_test: bool,
    /// Start (protocol timestamp format).
    pub started_at: String,
    /// End.
    pub ended_at: String,
    /// Why it ended.
    pub ended_reason: String,
    /// Finished by recovery after a restart.
    pub recovered: bool,
    /// Part of the call was lost (the disk was full while it was spooled):
    /// the recording and transcript hold what survived.
    #[serde(default)]
    pub recording_incomplete: bool,
    /// Recording sample rate.
    pub sample_rate: u32,
    /// Recording channels (2).
    pub channels: u16,
    /// Recording length.
    pub duration_seconds: f64,
    /// The WAV file next to the report, when the call had audio.
    pub recording: Option<String>,
    /// Whether the agent spoke first.
    pub agent_spoke_first: Option<bool>,
    /// Transcript, in the protocol's record form.
    pub transcript: Vec<TranscriptEntry>,
    /// Tool calls, each followed by its result.
    pub tool_calls: Vec<ToolRecord>,
    /// Metrics per turn.
    pub metrics: Vec<MetricRecord>,
    /// Waveform summary.
    pub waveform: Waveform,
    /// Integrator data given at the call's start.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// One line of the call list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    /// Call id.
    pub call_id: String,
    /// Room.
    pub room_id: String,
    /// Agent id.
    pub agent_id: String,
    /// Start.
    pub started_at: String,
    /// End.
    pub ended_at: String,
    /// Why it ended.
    pub ended_reason: String,
    /// Recording length.
    pub duration_seconds: f64,
    /// Transcript entries.
    pub transcript_entries: usize,
    /// Tool records.
    pub tool_calls: usize,
    /// Test call.
    pub is_test: bool,
}

/// Writes a local report per finished call under a directory.
#[derive(Debug, Clone)]
pub struct LocalReportExporter {
    dir: PathBuf,
    bins: usize,
}

impl LocalReportExporter {
    /// Reports go to `<dir>/<call id>/`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            bins: 800,
        }
    }

    /// The reports directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Exporter for LocalReportExporter {
    fn name(&self) -> &'static str {
        "report"
    }

    async fn export(&self, mut feed: CallFeed) -> Result<()> {
        let end = feed.wait_end().await?;
        let content = feed.content().await?;
        let meta = feed.meta().clone();
        let files = feed.files().clone();
        let out = self.dir.join(&meta.call_id);
        let bins = self.bins;
        let call_id = meta.call_id.clone();
        let incomplete = end.recording_incomplete;
        // Retried as a whole while the disk is full.
        let write = move || -> Result<()> {
            fs::create_dir_all(&out).map_err(|e| AnalyticsError::io(&out, e))?;
            let frames = end.audio_bytes / BYTES_PER_FRAME;
            let (recording, waveform, frames) = if frames > 0 {
                let (w, written) = write_wav(
                    &files.audio_path(),
                    &out.join(WAV_FILE),
                    meta.sample_rate,
                    frames,
                    bins,
                )?;
                (Some(WAV_FILE.to_owned()), w, written)
            } else {
                (None, Waveform::default(), 0)
            };
            let report = CallReport {
                call_id: meta.call_id.clone(),
                room_id: meta.room_id.clone(),
                agent_id: meta.started.agent_id.clone(),
                agent_name: meta.started.agent_name.clone(),
                is_test: meta.started.is_test,
                started_at: meta.started.event_timestamp.clone(),
                ended_at: end.ended_at.clone(),
                ended_reason: end.reason.clone(),
                recovered: end.recovered,
                recording_incomplete: end.recording_incomplete
                    || frames < end.audio_bytes / BYTES_PER_FRAME,
                sample_rate: meta.sample_rate,
                channels: 2,
                duration_seconds: frames as f64 / f64::from(meta.sample_rate.max(1)),
                recording,
                agent_spoke_first: content.agent_spoke_first,
                transcript: content.transcript.clone(),
                tool_calls: content.tool_calls.clone(),
                metrics: content.metrics.clone(),
                waveform,
                metadata: meta.metadata.clone(),
            };
            let json =
                serde_json::to_vec_pretty(&report).map_err(|source| AnalyticsError::Encode {
                    what: "call report",
                    source,
                })?;
            let tmp = out.join("report.json.tmp");
            let written =
                fs::write(&tmp, json).and_then(|()| fs::rename(&tmp, out.join(REPORT_FILE)));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(AnalyticsError::io(&tmp, e));
            }
            Ok(())
        };
        write_when_space(&feed, "call report", write).await?;
        tracing::info!(target: TARGET, call_id, recording_incomplete = incomplete, "call report written");
        Ok(())
    }
}

/// Copies the raw stereo PCM into a WAV file and computes the waveform;
/// returns it with the frames actually copied. A PCM file shorter than
/// `frames` (audio lost to a full disk) gives a shorter WAV whose header
/// states its real length. A failed write removes the partial file.
fn write_wav(
    pcm: &Path,
    wav: &Path,
    rate: u32,
    frames: u64,
    bins: usize,
) -> Result<(Waveform, u64)> {
    let tmp = wav.with_extension("wav.tmp");
    let result = copy_wav(pcm, &tmp, wav, rate, frames, bins);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn copy_wav(
    pcm: &Path,
    tmp: &Path,
    wav: &Path,
    rate: u32,
    frames: u64,
    bins: usize,
) -> Result<(Waveform, u64)> {
    use std::io::Read;
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let wav_err = |source| AnalyticsError::Wav {
        path: wav.to_owned(),
        source,
    };
    let file = fs::File::create(tmp).map_err(|e| AnalyticsError::io(tmp, e))?;
    let mut writer = hound::WavWriter::new(BufWriter::new(file), spec).map_err(wav_err)?;
    let mut input = fs::File::open(pcm).map_err(|e| AnalyticsError::io(pcm, e))?;
    let bins = bins.max(1) as u64;
    let per_bin = frames.div_ceil(bins).max(1);
    let mut wf = Waveform {
        bin_seconds: per_bin as f64 / f64::from(rate.max(1)),
        user: vec![0; frames.div_ceil(per_bin) as usize],
        agent: vec![0; frames.div_ceil(per_bin) as usize],
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut frame = 0u64;
    let mut left = frames * BYTES_PER_FRAME;
    let mut carry = 0usize;
    while left > 0 {
        let want = buf.len().min(left as usize + carry) - carry;
        let n = input
            .read(&mut buf[carry..carry + want])
            .map_err(|e| AnalyticsError::io(pcm, e))?;
        if n == 0 {
            break;
        }
        left -= n as u64;
        let have = carry + n;
        let whole = have - have % 4;
        for f in buf[..whole].chunks_exact(4) {
            let l = i16::from_le_bytes([f[0], f[1]]);
            let r = i16::from_le_bytes([f[2], f[3]]);
            writer.write_sample(l).map_err(wav_err)?;
            writer.write_sample(r).map_err(wav_err)?;
            let b = (frame / per_bin) as usize;
            wf.user[b] = wf.user[b].max(l.unsigned_abs());
            wf.agent[b] = wf.agent[b].max(r.unsigned_abs());
            frame += 1;
        }
        buf.copy_within(whole..have, 0);
        carry = have - whole;
    }
    writer.finalize().map_err(wav_err)?;
    fs::rename(tmp, wav).map_err(|e| AnalyticsError::io(wav, e))?;
    if frame < frames {
        tracing::warn!(target: TARGET, wav = %wav.display(), expected = frames, found = frame, "recording shorter than recorded; the WAV holds what survived");
        let used = frame.div_ceil(per_bin) as usize;
        wf.user.truncate(used);
        wf.agent.truncate(used);
    }
    Ok((wf, frame))
}

/// Lists the reports under `dir`, newest first. Unreadable reports are
/// skipped with a warning.
pub fn list_reports(dir: &Path) -> Vec<ReportSummary> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<ReportSummary> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter_map(|id| match read_report(dir, &id) {
            Ok(Some(r)) => Some(ReportSummary {
                call_id: r.call_id,
                room_id: r.room_id,
                agent_id: r.agent_id,
                started_at: r.started_at,
                ended_at: r.ended_at,
                ended_reason: r.ended_reason,
                duration_seconds: r.duration_seconds,
                transcript_entries: r.transcript.len(),
                tool_calls: r.tool_calls.len(),
                is_test: r.is_test,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(target: TARGET, call_id = id, error = %e, "skipping unreadable report");
                None
            }
        })
        .collect();
    out.sort_by(|a, b| b.started_at.cmp(&a.started_at));
    out
}

/// Reads one report; `None` when there is none for that id.
///
/// # Errors
/// An invalid id, I/O errors, or a report that does not parse.
pub fn read_report(dir: &Path, call_id: &str) -> Result<Option<CallReport>> {
    validate_call_id(call_id)?;
    let Some(p) = contained_file(dir, call_id, REPORT_FILE) else {
        return Ok(None);
    };
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AnalyticsError::io(&p, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AnalyticsError::CorruptSpool {
            path: p,
            reason: e.to_string(),
        })
}

/// Path of a call's WAV recording, when it exists.
pub fn recording_path(dir: &Path, call_id: &str) -> Option<PathBuf> {
    validate_call_id(call_id).ok()?;
    contained_file(dir, call_id, WAV_FILE)
}

/// `dir/call_id/name` when it is a regular file reached without following
/// a symbolic link out of `dir`: neither the call's directory nor the file
/// may be a link, and the resolved path must stay under the resolved
/// `dir` (the reports directory itself may be a link the operator made).
/// Anything else reads as absent, with a warning.
fn contained_file(dir: &Path, call_id: &str, name: &str) -> Option<PathBuf> {
    let call_dir = dir.join(call_id);
    let path = call_dir.join(name);
    let refuse = |why: &str| {
        tracing::warn!(target: TARGET, call_id, file = name, reason = why, "refusing a report path");
        None
    };
    match fs::symlink_metadata(&call_dir) {
        Ok(m) if m.file_type().is_symlink() => return refuse("the call directory is a link"),
        Ok(m) if !m.is_dir() => return None,
        Ok(_) => {}
        Err(_) => return None,
    }
    match fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => return refuse("the file is a link"),
        Ok(m) if !m.is_file() => return None,
        Ok(_) => {}
        Err(_) => return None,
    }
    let (Ok(root), Ok(real)) = (fs::canonicalize(dir), fs::canonicalize(&path)) else {
        return None;
    };
    if !real.starts_with(&root) {
        return refuse("the path leaves the reports directory");
    }
    Some(real)
}
