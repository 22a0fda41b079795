//! The local spool: every observed call is written to disk as it happens,
//! so an export interrupted by a crash or a restart finishes on the next
//! start.
//!
//! Layout, one directory per call under `<root>/calls/<call id>/`:
//!
//! - `call.json`: what the call started with (written once, atomically);
//! - `records.jsonl`: transcript entries, tool records, metrics, one JSON
//!   object a line, appended as they arrive;
//! - `audio.pcm`: the stereo recording (16-bit little-endian, user left,
//!   agent right), appended as the mixer releases frames;
//! - `ended.json`: how the call ended (written once, atomically, after the
//!   audio is complete): its presence makes the call final;
//! - `export-<exporter>.jsonl`: each exporter's progress log.
//!
//! A line torn by a crash at the end of a `.jsonl` file is ignored; any
//! other unreadable content is a [`AnalyticsError::CorruptSpool`] and the
//! call's directory is moved to `<root>/quarantine/`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{AnalyticsError, Result};
use crate::protocol::{
    BYTES_PER_FRAME, CallStarted, MetricRecord, ToolRecord, TranscriptEntry, format_timestamp,
    parse_timestamp,
};

const META_FILE: &str = "call.json";
const RECORDS_FILE: &str = "records.jsonl";
const AUDIO_FILE: &str = "audio.pcm";
const END_FILE: &str = "ended.json";
/// Reason written for calls found unfinished after a restart.
pub const RESTART_REASON: &str = "process-restarted";

/// What a call started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallMeta {
    /// Layout version of the spool.
    pub version: u32,
    /// The call id.
    pub call_id: String,
    /// The room.
    pub room_id: String,
    /// The call-started body, exactly as it is sent.
    pub started: CallStarted,
    /// Sample rate of `audio.pcm`.
    pub sample_rate: u32,
    /// Integrator data (kept locally; the protocol has no field for it).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndInfo {
    /// `callEndedReason`.
    pub reason: String,
    /// `callEndedAt`, protocol format.
    pub ended_at: String,
    /// Final length of `audio.pcm`.
    pub audio_bytes: u64,
    /// True when the call was finished by recovery after a restart.
    #[serde(default)]
    pub recovered: bool,
}

/// One line of `records.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum SpoolRecord {
    /// A transcript entry.
    Transcript(TranscriptEntry),
    /// A tool call or result.
    Tool(ToolRecord),
    /// A metric.
    Metric(MetricRecord),
    /// Who spoke first (`user` or `assistant`), written once.
    FirstSpeaker(String),
}

/// The spool root.
#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens (and creates) a spool directory.
    ///
    /// # Errors
    /// When the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in [root.join("calls"), root.join("quarantine")] {
            fs::create_dir_all(&d).map_err(|e| AnalyticsError::io(&d, e))?;
        }
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a call.
    pub fn call_dir(&self, call_id: &str) -> PathBuf {
        self.root.join("calls").join(call_id)
    }

    /// Ids of the calls in the spool.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn list_calls(&self) -> Result<Vec<String>> {
        let dir = self.root.join("calls");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| AnalyticsError::io(&dir, e))? {
            let entry = entry.map_err(|e| AnalyticsError::io(&dir, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && let Some(name) = entry.file_name().to_str()
            {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Creates a call's directory and writes `call.json`.
    ///
    /// # Errors
    /// When the directory exists already or cannot be written.
    pub fn create_call(&self, meta: &CallMeta) -> Result<CallWriter> {
        validate_call_id(&meta.call_id)?;
        let dir = self.call_dir(&meta.call_id);
        fs::create_dir(&dir).map_err(|e| AnalyticsError::io(&dir, e))?;
        write_json_atomic(&dir.join(META_FILE), meta)?;
        CallWriter::open(dir)
    }

    /// Moves a call's directory to quarantine; returns where it went.
    pub fn quarantine(&self, call_id: &str, reason: &str) -> Option<PathBuf> {
        let from = self.call_dir(call_id);
        let to = self.root.join("quarantine").join(format!(
            "{call_id}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f")
        ));
        match fs::rename(&from, &to) {
            Ok(()) => {
                tracing::error!(target: "roomkit.analytics.spool", call_id, reason, to = %to.display(), "call quarantined");
                Some(to)
            }
            Err(e) => {
                tracing::error!(target: "roomkit.analytics.spool", call_id, reason, error = %e, "could not quarantine call");
                None
            }
        }
    }

    /// Removes a call whose exports are complete.
    pub fn remove(&self, call_id: &str) {
        let dir = self.call_dir(call_id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!(target: "roomkit.analytics.spool", call_id, error = %e, "could not remove exported call");
        }
    }
}

/// Checks that a call id can name a directory: 1 to 128 of
/// `A-Z a-z 0-9 _ . -`, not starting with a dot.
///
/// # Errors
/// [`AnalyticsError::InvalidCallId`].
pub fn validate_call_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AnalyticsError::InvalidCallId(id.to_owned()))
    }
}

/// Appends records and audio of a live call. Owned by the call's task.
#[derive(Debug)]
pub struct CallWriter {
    dir: PathBuf,
    records: BufWriter<File>,
    audio: BufWriter<File>,
    audio_bytes: u64,
    byte_buf: Vec<u8>,
}

impl CallWriter {
    fn open(dir: PathBuf) -> Result<Self> {
        let open = |name: &str| -> Result<File> {
            let p = dir.join(name);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| AnalyticsError::io(&p, e))
        };
        Ok(Self {
            records: BufWriter::new(open(RECORDS_FILE)?),
            audio: BufWriter::with_capacity(64 * 1024, open(AUDIO_FILE)?),
            audio_bytes: 0,
            byte_buf: Vec::new(),
            dir,
        })
    }

    /// The call's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of audio appended so far (some may still be buffered).
    pub fn audio_bytes(&self) -> u64 {
        self.audio_bytes
    }

    /// Appends one record and hands it to the OS (survives a process
    /// crash).
    ///
    /// # Errors
    /// On encoding or write failure.
    pub fn append_record(&mut self, record: &SpoolRecord) -> Result<()> {
        let path = || self.dir.join(RECORDS_FILE);
        let mut line = serde_json::to_vec(record).map_err(|source| AnalyticsError::Encode {
            what: "spool record",
            source,
        })?;
        line.push(b'\n');
        self.records
            .write_all(&line)
            .and_then(|()| self.records.flush())
            .map_err(|e| AnalyticsError::io(path(), e))
    }

    /// Appends interleaved stereo samples (buffered).
    ///
    /// # Errors
    /// On write failure.
    pub fn append_audio(&mut self, interleaved: &[i16]) -> Result<()> {
        self.byte_buf.clear();
        self.byte_buf.reserve(interleaved.len() * 2);
        for s in interleaved {
            self.byte_buf.extend_from_slice(&s.to_le_bytes());
        }
        self.audio
            .write_all(&self.byte_buf)
            .map_err(|e| AnalyticsError::io(self.dir.join(AUDIO_FILE), e))?;
        self.audio_bytes += self.byte_buf.len() as u64;
        Ok(())
    }

    /// Hands buffered audio to the OS so readers see it.
    ///
    /// # Errors
    /// On write failure.
    pub fn flush_audio(&mut self) -> Result<()> {
        self.audio
            .flush()
            .map_err(|e| AnalyticsError::io(self.dir.join(AUDIO_FILE), e))
    }

    /// Flushes and syncs everything, then writes `ended.json`: from here on
    /// the call is final.
    ///
    /// # Errors
    /// On write failure.
    pub fn finish(mut self, reason: &str, ended_at: String) -> Result<EndInfo> {
        self.flush_audio()?;
        let sync = |f: &File, name: &str| {
            f.sync_data()
                .map_err(|e| AnalyticsError::io(self.dir.join(name), e))
        };
        sync(self.audio.get_ref(), AUDIO_FILE)?;
        self.records
            .flush()
            .map_err(|e| AnalyticsError::io(self.dir.join(RECORDS_FILE), e))?;
        sync(self.records.get_ref(), RECORDS_FILE)?;
        let end = EndInfo {
            reason: reason.to_owned(),
            ended_at,
            audio_bytes: self.audio_bytes,
            recovered: false,
        };
        write_json_atomic(&self.dir.join(END_FILE), &end)?;
        Ok(end)
    }
}

/// Read access to one spooled call.
#[derive(Debug, Clone)]
pub struct CallFiles {
    dir: PathBuf,
}

impl CallFiles {
    /// The call in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `audio.pcm`.
    pub fn audio_path(&self) -> PathBuf {
        self.dir.join(AUDIO_FILE)
    }

    /// Reads `call.json`.
    ///
    /// # Errors
    /// I/O errors, or [`AnalyticsError::CorruptSpool`].
    pub fn meta(&self) -> Result<CallMeta> {
        read_json(&self.dir.join(META_FILE))?.ok_or_else(|| AnalyticsError::CorruptSpool {
            path: self.dir.join(META_FILE),
            reason: "missing".into(),
        })
    }

    /// Reads `ended.json`, `None` while the call is live.
    ///
    /// # Errors
    /// I/O errors, or [`AnalyticsError::CorruptSpool`].
    pub fn end(&self) -> Result<Option<EndInfo>> {
        read_json(&self.dir.join(END_FILE))
    }

    /// Reads `records.jsonl` (a torn last line is ignored).
    ///
    /// # Errors
    /// I/O errors, or [`AnalyticsError::CorruptSpool`] for a bad line.
    pub fn records(&self) -> Result<Vec<SpoolRecord>> {
        read_jsonl(&self.dir.join(RECORDS_FILE))
    }

    /// Current length of `audio.pcm`.
    pub fn audio_len(&self) -> u64 {
        fs::metadata(self.audio_path()).map_or(0, |m| m.len())
    }

    /// Reads `len` bytes of audio at `offset`.
    ///
    /// # Errors
    /// I/O errors (including a file shorter than asked).
    pub fn read_audio(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let p = self.audio_path();
        let mut f = File::open(&p).map_err(|e| AnalyticsError::io(&p, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| AnalyticsError::io(&p, e))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf)
            .map_err(|e| AnalyticsError::io(&p, e))?;
        Ok(buf)
    }

    /// Makes an unfinished call final after a crash: cuts a torn stereo
    /// frame off the audio and writes `ended.json` with
    /// [`RESTART_REASON`]. The end time is the later of the last record and
    /// the end of the audio.
    ///
    /// # Errors
    /// I/O errors, or a corrupt `call.json`/`records.jsonl`.
    pub fn finalize_crashed(&self, meta: &CallMeta) -> Result<EndInfo> {
        let p = self.audio_path();
        let len = self.audio_len();
        let whole = len - len % BYTES_PER_FRAME;
        if whole != len {
            let f = OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| AnalyticsError::io(&p, e))?;
            f.set_len(whole).map_err(|e| AnalyticsError::io(&p, e))?;
            f.sync_data().map_err(|e| AnalyticsError::io(&p, e))?;
        }
        let anchor = parse_timestamp(&meta.started.event_timestamp).ok_or_else(|| {
            AnalyticsError::CorruptSpool {
                path: self.dir.join(META_FILE),
                reason: "bad eventTimestamp".into(),
            }
        })?;
        let frames = whole / BYTES_PER_FRAME;
        let micros = frames * 1_000_000 / u64::from(meta.sample_rate.max(1));
        let mut end = anchor + chrono::Duration::microseconds(micros as i64);
        for r in self.records()? {
            let ts = match &r {
                SpoolRecord::Transcript(t) => Some(t.end_timestamp.as_str()),
                SpoolRecord::Tool(ToolRecord::ToolCall(c)) => Some(c.timestamp.as_str()),
                SpoolRecord::Tool(ToolRecord::ToolResult(c)) => Some(c.timestamp.as_str()),
                SpoolRecord::Metric(m) => Some(m.timestamp.as_str()),
                SpoolRecord::FirstSpeaker(_) => None,
            };
            if let Some(t) = ts.and_then(parse_timestamp) {
                end = end.max(t);
            }
        }
        let info = EndInfo {
            reason: RESTART_REASON.to_owned(),
            ended_at: format_timestamp(end),
            audio_bytes: whole,
            recovered: true,
        };
        write_json_atomic(&self.dir.join(END_FILE), &info)?;
        Ok(info)
    }

    /// The progress log of an exporter.
    pub fn export_log(&self, exporter: &str) -> ExportLog {
        ExportLog {
            path: self.dir.join(format!("export-{exporter}.jsonl")),
        }
    }
}

/// An exporter's append-only progress log (one JSON value a line, synced
/// on every append).
#[derive(Debug, Clone)]
pub struct ExportLog {
    path: PathBuf,
}

impl ExportLog {
    /// Entries so far (a torn last line is ignored).
    ///
    /// # Errors
    /// I/O errors, or [`AnalyticsError::CorruptSpool`].
    pub fn load(&self) -> Result<Vec<serde_json::Value>> {
        read_jsonl(&self.path)
    }

    /// Appends an entry and syncs it to disk.
    ///
    /// # Errors
    /// I/O or encoding errors.
    pub fn append(&self, entry: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(|source| AnalyticsError::Encode {
            what: "export log entry",
            source,
        })?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| AnalyticsError::io(&self.path, e))?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| AnalyticsError::io(&self.path, e))
    }
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| AnalyticsError::Encode {
        what: "spool file",
        source,
    })?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| AnalyticsError::io(&tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| AnalyticsError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| AnalyticsError::io(path, e))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AnalyticsError::io(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| AnalyticsError::CorruptSpool {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AnalyticsError::io(path, e)),
    };
    let mut out = Vec::new();
    let mut rest: &[u8] = &bytes;
    let mut line_no = 0usize;
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        line_no += 1;
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v = serde_json::from_slice(line).map_err(|e| AnalyticsError::CorruptSpool {
            path: path.to_owned(),
            reason: format!("line {line_no}: {e}"),
        })?;
        out.push(v);
    }
    if !rest.is_empty() {
        tracing::warn!(target: "roomkit.analytics.spool", path = %path.display(), bytes = rest.len(), "ignoring a torn last line");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rk-spool-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn call_ids_are_checked() {
        assert!(validate_call_id("RM_abc-1.2").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "é"] {
            assert!(validate_call_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn torn_last_line_is_ignored_but_a_bad_middle_line_is_an_error() {
        let d = tmp();
        let p = d.join("x.jsonl");
        fs::write(&p, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let v: Vec<serde_json::Value> = read_jsonl(&p).unwrap();
        assert_eq!(v.len(), 2);
        fs::write(&p, b"{\"a\":1}\nnot json\n{\"a\":2}\n").unwrap();
        let err = read_jsonl::<serde_json::Value>(&p).unwrap_err();
        assert!(matches!(err, AnalyticsError::CorruptSpool { .. }), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
        fs::remove_dir_all(d).unwrap();
    }
}
