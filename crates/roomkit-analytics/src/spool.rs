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
//! - `intact`: an empty file, present while nothing the call appended is
//!   missing from the files (it is removed when a write fails and comes
//!   back once the writer caught up): a call recovered without it is
//!   flagged incomplete;
//! - `export-<exporter>.jsonl`: each exporter's progress log.
//!
//! A line torn by a crash at the end of a `.jsonl` file is ignored, and an
//! unreadable line elsewhere is skipped (the call is exported with what
//! survived, flagged [`EndInfo::recording_incomplete`]); only an unreadable
//! `call.json` is a [`AnalyticsError::CorruptSpool`] that moves the call's
//! directory to `<root>/quarantine/`.
//!
//! A write that fails (a full disk) loses nothing that was written before
//! it: the live call keeps what is not yet written in memory and writes it
//! when space returns (see [`CallWriter`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
/// Present while everything the live call appended is on disk; removed
/// when a write fails (removing needs no space), created again once the
/// writer has caught up. Spool layout 2 and later.
const INTACT_FILE: &str = "intact";
/// The spool layout written by this version.
pub const SPOOL_VERSION: u32 = 2;
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
    /// True when part of the call could not be kept: audio or records lost
    /// while the disk was full, or damaged spool content skipped at
    /// recovery. What survived is exported all the same.
    #[serde(default)]
    pub recording_incomplete: bool,
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
        let created = write_json_atomic(&dir.join(META_FILE), meta)
            .and_then(|()| CallWriter::open(dir.clone()));
        if created.is_err() {
            // A directory without `call.json` would be quarantined at the
            // next start: leave nothing behind (a full disk, usually).
            let _ = fs::remove_dir_all(&dir);
        }
        created
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

/// Most record bytes a writer keeps in memory while they cannot be written
/// (a full disk); later records are dropped and the call is flagged.
const MAX_PENDING_RECORDS: usize = 16 * 1024 * 1024;
/// Most audio bytes a writer keeps in memory while they cannot be written
/// (about 87 s of 24 kHz stereo); older audio is then replaced by silence
/// of the same length, so the recording stays aligned with the transcript.
const MAX_PENDING_AUDIO: usize = 8 * 1024 * 1024;
/// Audio is handed to the OS in writes of about this size.
const AUDIO_WRITE_SIZE: usize = 64 * 1024;

/// One append-only spool file and the bytes not yet written to it.
///
/// Bytes reach the file strictly in order. A write that fails (a full disk)
/// keeps what did not get written in memory; what did get written stays, so
/// the file always holds a prefix of the stream and a later [`Self::drain`]
/// continues exactly where the disk stopped.
#[derive(Debug)]
struct AppendFile {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    written: u64,
    /// Bytes waiting in memory, in order.
    pending: Vec<u8>,
    /// Zero bytes owed to the file before `pending` (audio dropped from
    /// memory, written back as silence).
    zeros: u64,
}

impl AppendFile {
    fn open(path: PathBuf) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AnalyticsError::io(&path, e))?;
        let written = file
            .metadata()
            .map_err(|e| AnalyticsError::io(&path, e))?
            .len();
        Ok(Self {
            path,
            file,
            written,
            pending: Vec::new(),
            zeros: 0,
        })
    }

    fn is_drained(&self) -> bool {
        self.pending.is_empty() && self.zeros == 0
    }

    /// Writes what is pending; on failure keeps the rest.
    fn drain(&mut self) -> Result<()> {
        static ZEROS: [u8; 8192] = [0; 8192];
        while self.zeros > 0 {
            let n = ZEROS
                .len()
                .min(usize::try_from(self.zeros).unwrap_or(ZEROS.len()));
            match self.file.write(&ZEROS[..n]) {
                Ok(0) => return Err(self.no_progress()),
                Ok(k) => {
                    self.zeros -= k as u64;
                    self.written += k as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(AnalyticsError::io(&self.path, e)),
            }
        }
        let mut done = 0;
        let result = loop {
            if done == self.pending.len() {
                break Ok(());
            }
            match self.file.write(&self.pending[done..]) {
                Ok(0) => break Err(self.no_progress()),
                Ok(k) => done += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(AnalyticsError::io(&self.path, e)),
            }
        };
        self.pending.drain(..done);
        self.written += done as u64;
        result
    }

    fn no_progress(&self) -> AnalyticsError {
        AnalyticsError::io(
            &self.path,
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "the file takes no more bytes",
            ),
        )
    }

    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| AnalyticsError::io(&self.path, e))
    }
}

/// Appends records and audio of a live call. Owned by the call's task.
///
/// Nothing is lost to a failed write (a full disk): what could not be
/// written waits in memory and every later append, [`CallWriter::retry`]
/// and [`CallWriter::finish`] try again, so the spool catches up by itself
/// once space is back. Only past the memory bounds is data given up: the
/// oldest waiting audio becomes silence of the same length, further records
/// are dropped, and the call's [`EndInfo::recording_incomplete`] is set.
#[derive(Debug)]
pub struct CallWriter {
    dir: PathBuf,
    records: AppendFile,
    audio: AppendFile,
    /// Audio bytes appended so far, written or not.
    audio_bytes: u64,
    /// Records dropped past the memory bound.
    lost_records: u64,
    /// Audio bytes replaced by silence past the memory bound.
    lost_audio: u64,
    /// Whether the `intact` marker is on disk.
    intact: bool,
}

impl CallWriter {
    fn open(dir: PathBuf) -> Result<Self> {
        let marker = dir.join(INTACT_FILE);
        File::create(&marker).map_err(|e| AnalyticsError::io(&marker, e))?;
        Ok(Self {
            records: AppendFile::open(dir.join(RECORDS_FILE))?,
            audio: AppendFile::open(dir.join(AUDIO_FILE))?,
            audio_bytes: 0,
            lost_records: 0,
            lost_audio: 0,
            intact: true,
            dir,
        })
    }

    /// Keeps the `intact` marker true to the files after a write attempt.
    fn mark(&mut self, result: Result<()>) -> Result<()> {
        let marker = self.dir.join(INTACT_FILE);
        if result.is_err() {
            if self.intact {
                // Removing a file needs no space: this works on a full disk.
                match fs::remove_file(&marker) {
                    Ok(()) => self.intact = false,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.intact = false,
                    Err(e) => {
                        tracing::warn!(target: "roomkit.analytics.spool", path = %marker.display(), error = %e, "cannot remove the intact marker");
                    }
                }
            }
        } else if !self.intact && self.is_caught_up() && !self.is_incomplete() {
            // Best effort: a missing marker only flags the call.
            self.intact = File::create(&marker).is_ok();
        }
        result
    }

    /// The call's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of audio appended so far (some may still wait in memory).
    pub fn audio_bytes(&self) -> u64 {
        self.audio_bytes
    }

    /// Whole stereo frames of audio in `audio.pcm`, in bytes: what readers
    /// can be pointed at.
    pub fn written_audio_bytes(&self) -> u64 {
        self.audio.written - self.audio.written % BYTES_PER_FRAME
    }

    /// True when everything appended so far has been written.
    pub fn is_caught_up(&self) -> bool {
        self.records.is_drained() && self.audio.is_drained()
    }

    /// True once data had to be given up (memory bounds exceeded while the
    /// disk was full).
    pub fn is_incomplete(&self) -> bool {
        self.lost_records > 0 || self.lost_audio > 0
    }

    /// Appends one record and hands it to the OS (survives a process
    /// crash).
    ///
    /// # Errors
    /// On encoding failure, or when the record (or an earlier one) could not
    /// be written yet: it is kept and written by a later call.
    pub fn append_record(&mut self, record: &SpoolRecord) -> Result<()> {
        let mut line = serde_json::to_vec(record).map_err(|source| AnalyticsError::Encode {
            what: "spool record",
            source,
        })?;
        line.push(b'\n');
        if self.records.pending.len() + line.len() > MAX_PENDING_RECORDS {
            self.lost_records += 1;
            tracing::warn!(target: "roomkit.analytics.spool", dir = %self.dir.display(), "record dropped: too many records wait for disk space");
        } else {
            self.records.pending.extend_from_slice(&line);
        }
        let r = self.records.drain();
        self.mark(r)
    }

    /// Appends interleaved stereo samples (buffered).
    ///
    /// # Errors
    /// When buffered audio could not be written yet: it is kept (up to the
    /// memory bound) and written by a later call.
    pub fn append_audio(&mut self, interleaved: &[i16]) -> Result<()> {
        let a = &mut self.audio;
        a.pending.reserve(interleaved.len() * 2);
        for s in interleaved {
            a.pending.extend_from_slice(&s.to_le_bytes());
        }
        self.audio_bytes += interleaved.len() as u64 * 2;
        if a.pending.len() < AUDIO_WRITE_SIZE {
            return Ok(());
        }
        let r = a.drain();
        let a = &mut self.audio;
        if a.pending.len() > MAX_PENDING_AUDIO {
            // Keep the newest audio; the oldest becomes silence, in whole
            // frames so both channels stay in place.
            let keep = MAX_PENDING_AUDIO / 2;
            let mut cut = a.pending.len() - keep;
            cut -= cut % BYTES_PER_FRAME as usize;
            // `pending` may start inside a frame (a write stopped there):
            // the cut then keeps that frame's alignment too.
            a.pending.drain(..cut);
            a.zeros += cut as u64;
            self.lost_audio += cut as u64;
            tracing::warn!(target: "roomkit.analytics.spool", dir = %self.dir.display(), bytes = cut, "audio dropped: too much audio waits for disk space; silence takes its place");
        }
        self.mark(r)
    }

    /// Hands buffered audio to the OS so readers see it.
    ///
    /// # Errors
    /// When it could not be written yet (it is kept).
    pub fn flush_audio(&mut self) -> Result<()> {
        let r = self.audio.drain();
        self.mark(r)
    }

    /// Tries again to write everything still waiting in memory.
    ///
    /// # Errors
    /// When some of it still cannot be written.
    pub fn retry(&mut self) -> Result<()> {
        let r = self.records.drain();
        let a = self.audio.drain();
        self.mark(r.and(a))
    }

    /// Writes and syncs everything, then writes `ended.json`: from here on
    /// the call is final.
    ///
    /// # Errors
    /// On write failure; nothing is lost and the call can be tried again.
    pub fn finish(&mut self, reason: &str, ended_at: &str) -> Result<EndInfo> {
        self.retry()?;
        self.audio.sync()?;
        self.records.sync()?;
        let end = EndInfo {
            reason: reason.to_owned(),
            ended_at: ended_at.to_owned(),
            audio_bytes: self.written_audio_bytes(),
            recovered: false,
            recording_incomplete: self.is_incomplete(),
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

    /// Reads `records.jsonl`. A torn last line is ignored; any other line
    /// that does not parse is skipped with a warning, so what was written
    /// around it is kept.
    ///
    /// # Errors
    /// I/O errors.
    pub fn records(&self) -> Result<Vec<SpoolRecord>> {
        self.records_checked().map(|(v, _)| v)
    }

    /// As [`CallFiles::records`], with the number of damaged lines skipped.
    ///
    /// # Errors
    /// I/O errors.
    pub fn records_checked(&self) -> Result<(Vec<SpoolRecord>, usize)> {
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

    /// How an unfinished call ends after a crash, without writing
    /// anything: the audio cut to whole stereo frames, reason
    /// [`RESTART_REASON`], the end time the later of the last record and the
    /// end of the audio. Damaged lines skipped in `records.jsonl` or a torn
    /// frame mark it [`EndInfo::recording_incomplete`].
    ///
    /// # Errors
    /// I/O errors, or a corrupt `call.json`.
    pub fn crashed_end(&self, meta: &CallMeta) -> Result<EndInfo> {
        let len = self.audio_len();
        let whole = len - len % BYTES_PER_FRAME;
        let anchor = parse_timestamp(&meta.started.event_timestamp).ok_or_else(|| {
            AnalyticsError::CorruptSpool {
                path: self.dir.join(META_FILE),
                reason: "bad eventTimestamp".into(),
            }
        })?;
        let frames = whole / BYTES_PER_FRAME;
        let micros = frames * 1_000_000 / u64::from(meta.sample_rate.max(1));
        let mut end = anchor + chrono::Duration::microseconds(micros as i64);
        let (records, skipped) = self.records_checked()?;
        for r in records {
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
        Ok(EndInfo {
            reason: RESTART_REASON.to_owned(),
            ended_at: format_timestamp(end),
            audio_bytes: whole,
            recovered: true,
            recording_incomplete: skipped > 0
                || whole != len
                || (meta.version >= 2 && !self.dir.join(INTACT_FILE).exists()),
        })
    }

    /// Makes an unfinished call final after a crash: cuts a torn stereo
    /// frame off the audio and writes `ended.json` as
    /// [`CallFiles::crashed_end`] describes it.
    ///
    /// # Errors
    /// I/O errors (a full disk: [`CallFiles::crashed_end`] still tells how
    /// the call ends), or a corrupt `call.json`.
    pub fn finalize_crashed(&self, meta: &CallMeta) -> Result<EndInfo> {
        let info = self.crashed_end(meta)?;
        let p = self.audio_path();
        if self.audio_len() != info.audio_bytes {
            let f = OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| AnalyticsError::io(&p, e))?;
            f.set_len(info.audio_bytes)
                .map_err(|e| AnalyticsError::io(&p, e))?;
            f.sync_data().map_err(|e| AnalyticsError::io(&p, e))?;
        }
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
    /// Entries so far (a torn last line is ignored, other unreadable lines
    /// are skipped with a warning).
    ///
    /// # Errors
    /// I/O errors.
    pub fn load(&self) -> Result<Vec<serde_json::Value>> {
        read_jsonl(&self.path).map(|(v, _)| v)
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
        let before = f
            .metadata()
            .map_err(|e| AnalyticsError::io(&self.path, e))?
            .len();
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| {
                // Cut a partly written line off (a full disk), so the next
                // entry does not land after a torn one.
                let _ = f.set_len(before);
                AnalyticsError::io(&self.path, e)
            })
    }
}

fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| AnalyticsError::Encode {
        what: "spool file",
        source,
    })?;
    let tmp = path.with_extension("tmp");
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // A half-written temporary file only takes space (a full disk).
        let _ = fs::remove_file(&tmp);
        return Err(AnalyticsError::io(path, e));
    }
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

/// The lines of a `.jsonl` file that parse, and how many did not. A torn
/// last line (no newline) is what a crash leaves and is not counted; a bad
/// line in the middle is skipped with a warning, so one damaged line never
/// costs the rest of the call.
fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<(Vec<T>, usize)> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(AnalyticsError::io(path, e)),
    };
    let mut out = Vec::new();
    let mut skipped = 0usize;
    let mut rest: &[u8] = &bytes;
    let mut line_no = 0usize;
    while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
        line_no += 1;
        let line = &rest[..nl];
        rest = &rest[nl + 1..];
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(v) => out.push(v),
            Err(e) => {
                skipped += 1;
                tracing::warn!(target: "roomkit.analytics.spool", path = %path.display(), line = line_no, error = %e, "skipping an unreadable line");
            }
        }
    }
    if !rest.is_empty() {
        tracing::warn!(target: "roomkit.analytics.spool", path = %path.display(), bytes = rest.len(), "ignoring a torn last line");
    }
    Ok((out, skipped))
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
    fn torn_last_line_is_ignored_and_a_bad_middle_line_is_skipped() {
        let d = tmp();
        let p = d.join("x.jsonl");
        fs::write(&p, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let (v, skipped) = read_jsonl::<serde_json::Value>(&p).unwrap();
        assert_eq!((v.len(), skipped), (2, 0));
        fs::write(&p, b"{\"a\":1}\nnot json\n{\"a\":2}\n").unwrap();
        let (v, skipped) = read_jsonl::<serde_json::Value>(&p).unwrap();
        assert_eq!(
            v,
            vec![serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]
        );
        assert_eq!(skipped, 1);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_failed_append_keeps_its_bytes_and_a_later_drain_writes_them_in_order() {
        // /dev/full refuses every write with ENOSPC.
        let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let mut f = AppendFile {
            path: PathBuf::from("/dev/full"),
            file: full,
            written: 0,
            pending: b"first\n".to_vec(),
            zeros: 3,
        };
        let err = f.drain().unwrap_err();
        assert!(err.is_disk_full(), "{err}");
        f.pending.extend_from_slice(b"second\n");
        assert!(f.drain().is_err());
        assert_eq!((f.written, f.zeros, f.pending.len()), (0, 3, 13));
        // Space is back.
        let d = tmp();
        let p = d.join("x");
        f.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        f.drain().unwrap();
        assert!(f.is_drained());
        assert_eq!(f.written, 16);
        assert_eq!(fs::read(&p).unwrap(), b"\0\0\0first\nsecond\n");
        fs::remove_dir_all(d).unwrap();
    }
}
