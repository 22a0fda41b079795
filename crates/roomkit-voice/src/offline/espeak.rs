//! [`EspeakTts`]: offline text-to-speech on libespeak-ng (cargo feature
//! `espeak`; Debian packages `libespeak-ng-dev` to build, `espeak-ng-data`
//! to run).
//!
//! libespeak-ng keeps its state in globals and is not thread-safe, so the
//! process has exactly one engine: a dedicated thread, started by the first
//! provider and kept for the life of the process, that initializes the
//! library in synchronous retrieval mode and runs one synthesis at a time.
//! Every [`EspeakTts`] sends its requests to that thread over a channel; the
//! audio comes back over a bounded channel per request, chunk by chunk as the
//! library hands it to its callback (22,050 Hz with the standard data: the
//! rate is the one the library reports). Dropping a [`TtsStream`] cancels its
//! synthesis: the callback sees it and asks the library to abort.
//!
//! Word timings: the library reports where each word starts; a word is
//! taken to end where the next one starts (or where the clause ends), and
//! the chunk that completes it carries the [`WordMark`].

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::CString;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc as std_mpsc};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::mpsc;

use crate::error::{ProviderFailure, VoiceError};
use crate::tts::{TtsChunk, TtsProvider, TtsStream, WordMark};

/// The provider's name in errors and logs.
const NAME: &str = "espeak";

/// Milliseconds of audio the library hands to its callback at a time.
const BUFFER_MS: i32 = 100;

/// Chunks one request buffers ahead of its reader (about 25 s of audio):
/// the library is far faster than real time, so a sentence is normally
/// finished and the shared engine free long before it is played.
const CHUNK_QUEUE: usize = 256;

/// Slowest and fastest speaking rates the library accepts, in words per minute.
pub const RATE_RANGE: std::ops::RangeInclusive<u32> = 80..=450;

/// Settings of [`EspeakTts`] (the `tts` table of a voice channel with
/// `provider = "espeak"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EspeakConfig {
    /// The voice used when a request names none: an espeak-ng voice name
    /// such as `en-us`, `en`, `en-gb-scotland`, `de` or `fr`.
    pub voice: String,
    /// Speaking rate in words per minute (80 to 450); the library's default
    /// (175) when absent.
    pub rate: Option<u32>,
}

impl Default for EspeakConfig {
    fn default() -> Self {
        Self {
            voice: "en-us".to_owned(),
            rate: None,
        }
    }
}

impl EspeakConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`VoiceError::Config`] naming the key and the problem.
    pub fn validate(&self) -> Result<(), VoiceError> {
        if self.voice.trim().is_empty() || self.voice.contains('\0') {
            return Err(VoiceError::Config(
                "espeak: `voice` must be a non-empty voice name".to_owned(),
            ));
        }
        if let Some(rate) = self.rate
            && !RATE_RANGE.contains(&rate)
        {
            return Err(VoiceError::Config(format!(
                "espeak: `rate` must be between {} and {} words per minute, got {rate}",
                RATE_RANGE.start(),
                RATE_RANGE.end()
            )));
        }
        Ok(())
    }
}

/// Text-to-speech with libespeak-ng, entirely offline.
#[derive(Debug, Clone)]
pub struct EspeakTts {
    engine: &'static Engine,
    config: EspeakConfig,
}

impl EspeakTts {
    /// A provider with these settings. Starts the process's engine thread
    /// the first time (and initializes the library there).
    ///
    /// # Errors
    /// [`VoiceError::Config`] for bad settings; [`VoiceError::Tts`] when the
    /// library cannot initialize (for instance, no `espeak-ng-data`).
    pub fn new(config: EspeakConfig) -> Result<Self, VoiceError> {
        config.validate()?;
        let engine = Engine::get().map_err(VoiceError::Tts)?;
        Ok(Self { engine, config })
    }

    /// The settings.
    pub fn config(&self) -> &EspeakConfig {
        &self.config
    }
}

#[async_trait]
impl TtsProvider for EspeakTts {
    fn name(&self) -> &str {
        NAME
    }

    fn sample_rate(&self) -> u32 {
        self.engine.sample_rate
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        let voice = voice.unwrap_or(&self.config.voice);
        let voice = CString::new(voice)
            .map_err(|_| ProviderFailure::fatal(NAME, "a voice name cannot contain NUL"))?;
        // The library reads a C string: a NUL inside the text would end it early.
        let text = text.replace('\0', " ");
        let (tx, rx) = mpsc::channel(CHUNK_QUEUE);
        let cancel = Arc::new(AtomicBool::new(false));
        if text.trim().is_empty() {
            // Nothing to say: an empty stream, without a trip to the engine
            // (which would make a click of silence).
            return Ok(Box::pin(ChunkStream { rx, cancel }));
        }
        let job = Job {
            text,
            voice,
            rate: self.config.rate,
            out: tx,
            cancel: Arc::clone(&cancel),
        };
        self.engine
            .jobs
            .send(job)
            .map_err(|_| ProviderFailure::fatal(NAME, "the synthesis thread has stopped"))?;
        Ok(Box::pin(ChunkStream { rx, cancel }))
    }
}

/// The audio of one request; dropping it cancels the synthesis.
struct ChunkStream {
    rx: mpsc::Receiver<Result<TtsChunk, ProviderFailure>>,
    cancel: Arc<AtomicBool>,
}

impl Stream for ChunkStream {
    type Item = Result<TtsChunk, ProviderFailure>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// One synthesis request.
struct Job {
    text: String,
    voice: CString,
    rate: Option<u32>,
    out: mpsc::Sender<Result<TtsChunk, ProviderFailure>>,
    cancel: Arc<AtomicBool>,
}

/// The process's one engine thread.
#[derive(Debug)]
struct Engine {
    jobs: std_mpsc::Sender<Job>,
    sample_rate: u32,
}

static ENGINE: OnceLock<Result<Engine, ProviderFailure>> = OnceLock::new();

impl Engine {
    fn get() -> Result<&'static Engine, ProviderFailure> {
        ENGINE
            .get_or_init(Engine::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn start() -> Result<Engine, ProviderFailure> {
        let (jobs_tx, jobs_rx) = std_mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<u32, ProviderFailure>>();
        std::thread::Builder::new()
            .name("roomkit-espeak".to_owned())
            .spawn(move || engine_thread(jobs_rx, ready_tx))
            .map_err(|e| ProviderFailure::fatal(NAME, format!("cannot start its thread: {e}")))?;
        let sample_rate = ready_rx
            .recv()
            .map_err(|_| ProviderFailure::fatal(NAME, "the synthesis thread stopped"))??;
        tracing::info!(target: "roomkit.voice.espeak", sample_rate, "espeak-ng initialized");
        Ok(Engine {
            jobs: jobs_tx,
            sample_rate,
        })
    }
}

fn engine_thread(
    jobs: std_mpsc::Receiver<Job>,
    ready: std_mpsc::Sender<Result<u32, ProviderFailure>>,
) {
    // SAFETY: this is the only thread that ever calls into libespeak-ng
    // (the engine is started once per process, guarded by `ENGINE`). A null
    // path asks for the library's default data directory; DONT_EXIT makes a
    // missing data directory an error return instead of exit().
    let rate = unsafe {
        ffi::espeak_Initialize(
            ffi::AUDIO_OUTPUT_SYNCHRONOUS,
            BUFFER_MS,
            std::ptr::null(),
            ffi::INITIALIZE_DONT_EXIT,
        )
    };
    let Ok(sample_rate) = u32::try_from(rate) else {
        let _ = ready.send(Err(ProviderFailure::fatal(
            NAME,
            "libespeak-ng could not initialize (is espeak-ng-data installed?)",
        )));
        return;
    };
    // SAFETY: same single thread; `on_audio` matches the callback type the
    // header declares and lives for the whole program.
    unsafe { ffi::espeak_SetSynthCallback(Some(on_audio)) };
    if ready.send(Ok(sample_rate)).is_err() {
        return;
    }
    let mut current_voice: Option<CString> = None;
    while let Ok(job) = jobs.recv() {
        run_job(job, sample_rate, &mut current_voice);
    }
}

fn run_job(job: Job, sample_rate: u32, current_voice: &mut Option<CString>) {
    if job.cancel.load(Ordering::Relaxed) || job.out.is_closed() {
        return;
    }
    if current_voice.as_ref() != Some(&job.voice) {
        if !select_voice(&job.voice) {
            *current_voice = None;
            let name = job.voice.to_string_lossy();
            let _ = job.out.blocking_send(Err(ProviderFailure::fatal(
                NAME,
                format!("unknown voice `{name}`"),
            )));
            return;
        }
        *current_voice = Some(job.voice.clone());
    }
    let rate = job.rate.map_or(ffi::RATE_NORMAL, |r| r as i32);
    // SAFETY: engine thread only; plain integer arguments.
    unsafe { ffi::espeak_SetParameter(ffi::PARAM_RATE, rate, 0) };

    let Ok(text) = CString::new(job.text.as_str()) else {
        // NULs were replaced before the job was queued.
        return;
    };
    let started = std::time::Instant::now();
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current::new(&job, sample_rate));
    });
    // SAFETY: engine thread only; `text` is NUL-terminated UTF-8 that lives
    // until the call returns (synchronous mode returns only when the
    // synthesis is complete or aborted); the callback reads only `CURRENT`.
    let rc = unsafe {
        ffi::espeak_Synth(
            text.as_ptr().cast(),
            text.as_bytes_with_nul().len(),
            0,
            ffi::POS_CHARACTER,
            0,
            ffi::CHARS_UTF8,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    let current = CURRENT.with(|c| c.borrow_mut().take());
    let cancelled = job.cancel.load(Ordering::Relaxed) || job.out.is_closed();
    if let Some(mut current) = current
        && !cancelled
    {
        current.flush_marks();
    }
    if rc != ffi::EE_OK && !cancelled {
        let _ = job.out.blocking_send(Err(ProviderFailure::retryable(
            NAME,
            format!("synthesis failed (code {rc})"),
        )));
    }
    tracing::debug!(
        target: "roomkit.voice.espeak",
        chars = job.text.chars().count(),
        cancelled,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "synthesis finished"
    );
}

/// Selects a voice by its name (`en-us`, `de`), else by a language one of
/// its voices declares exactly (`en-gb`). The library's own search by
/// language also returns near misses, which are refused here.
fn select_voice(voice: &CString) -> bool {
    // SAFETY: engine thread only; `voice` is a NUL-terminated string that
    // outlives the call.
    if unsafe { ffi::espeak_SetVoiceByName(voice.as_ptr()) } == ffi::EE_OK {
        return true;
    }
    let wanted = ffi::EspeakVoice {
        name: std::ptr::null(),
        languages: voice.as_ptr(),
        identifier: std::ptr::null(),
        gender: 0,
        age: 0,
        variant: 0,
        xx1: 0,
        score: 0,
        spare: std::ptr::null_mut(),
    };
    // SAFETY: engine thread only; `wanted` and the strings it points to
    // outlive the call, and the library only reads them.
    if unsafe { ffi::espeak_SetVoiceByProperties(&wanted) } != ffi::EE_OK {
        return false;
    }
    // SAFETY: engine thread only; the library returns null or a pointer to
    // its current voice, valid until the voice changes.
    let current = unsafe { ffi::espeak_GetCurrentVoice() };
    if current.is_null() {
        return false;
    }
    // SAFETY: `current` is non-null and points to the library's voice
    // record; its `languages` field is null or a list of (priority byte,
    // NUL-terminated name) entries ended by a zero priority byte.
    let languages = unsafe { (*current).languages };
    if languages.is_null() {
        return false;
    }
    let wanted = voice.to_bytes();
    let mut entry = languages;
    // SAFETY: walks the list as described above, never past its end marker.
    unsafe {
        while *entry != 0 {
            let name = std::ffi::CStr::from_ptr(entry.add(1));
            if name.to_bytes().eq_ignore_ascii_case(wanted) {
                return true;
            }
            entry = entry.add(1 + name.to_bytes().len() + 1);
        }
    }
    false
}

thread_local! {
    /// The request the engine thread is synthesizing, for the callback.
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// State of the synthesis in progress, seen by the callback.
struct Current {
    out: mpsc::Sender<Result<TtsChunk, ProviderFailure>>,
    cancel: Arc<AtomicBool>,
    sample_rate: u32,
    /// Byte offset of each character of the text, and the text's length last.
    char_bytes: Vec<usize>,
    /// Samples sent so far.
    sent: u64,
    /// Byte offset just past the word being spoken.
    word_end: Option<usize>,
    /// Word ends not yet carried by a chunk.
    marks: Vec<WordMark>,
}

impl Current {
    fn new(job: &Job, sample_rate: u32) -> Self {
        let mut char_bytes: Vec<usize> = job.text.char_indices().map(|(i, _)| i).collect();
        char_bytes.push(job.text.len());
        Self {
            out: job.out.clone(),
            cancel: Arc::clone(&job.cancel),
            sample_rate,
            char_bytes,
            sent: 0,
            word_end: None,
            marks: Vec::new(),
        }
    }

    /// Byte offset of a character position (counted from 1, as the library does).
    fn byte_at(&self, chars: i64) -> usize {
        let last = self.char_bytes.len().saturating_sub(1);
        let index = usize::try_from(chars.max(0)).unwrap_or(last).min(last);
        self.char_bytes.get(index).copied().unwrap_or(0)
    }

    fn end_word(&mut self, audio_ms: i32) {
        if let Some(text_end) = self.word_end.take() {
            self.marks.push(WordMark {
                text_end,
                audio_end_ms: u32::try_from(audio_ms).unwrap_or(0),
            });
        }
    }

    /// Handles one callback; `false` asks the library to abort.
    fn on_audio(&mut self, samples: &[i16], events: &[ffi::EspeakEvent]) -> bool {
        if self.cancel.load(Ordering::Relaxed) || self.out.is_closed() {
            return false;
        }
        for event in events {
            match event.kind {
                ffi::EVENT_WORD => {
                    self.end_word(event.audio_position);
                    let start = i64::from(event.text_position) - 1;
                    self.word_end = Some(self.byte_at(start + i64::from(event.length)));
                }
                ffi::EVENT_END | ffi::EVENT_MSG_TERMINATED => self.end_word(event.audio_position),
                _ => {}
            }
        }
        if samples.is_empty() {
            return true;
        }
        self.sent += samples.len() as u64;
        let end_ms = self.sent * 1000 / u64::from(self.sample_rate.max(1));
        let (done, later): (Vec<WordMark>, Vec<WordMark>) = std::mem::take(&mut self.marks)
            .into_iter()
            .partition(|m| u64::from(m.audio_end_ms) <= end_ms);
        self.marks = later;
        let chunk = TtsChunk {
            samples: samples.to_vec(),
            sample_rate: self.sample_rate,
            marks: done,
        };
        self.out.blocking_send(Ok(chunk)).is_ok()
    }

    /// Sends the word ends no chunk has carried yet.
    fn flush_marks(&mut self) {
        self.end_word(
            i32::try_from(self.sent * 1000 / u64::from(self.sample_rate.max(1)))
                .unwrap_or(i32::MAX),
        );
        if self.marks.is_empty() {
            return;
        }
        let chunk = TtsChunk {
            samples: Vec::new(),
            sample_rate: self.sample_rate,
            marks: std::mem::take(&mut self.marks),
        };
        let _ = self.out.blocking_send(Ok(chunk));
    }
}

/// The library's synthesis callback (runs on the engine thread, inside
/// `espeak_Synth`).
unsafe extern "C" fn on_audio(
    wav: *mut std::os::raw::c_short,
    numsamples: std::os::raw::c_int,
    events: *mut ffi::EspeakEvent,
) -> std::os::raw::c_int {
    let samples: &[i16] = match usize::try_from(numsamples) {
        Ok(n) if n > 0 && !wav.is_null() => {
            // SAFETY: the library passes `numsamples` valid samples at `wav`,
            // alive for the duration of this call.
            unsafe { std::slice::from_raw_parts(wav, n) }
        }
        _ => &[],
    };
    let mut list: &[ffi::EspeakEvent] = &[];
    if !events.is_null() {
        let mut n = 0usize;
        // SAFETY: the library passes an array of events ended by one of type
        // LIST_TERMINATED, alive for the duration of this call.
        unsafe {
            while (*events.add(n)).kind != ffi::EVENT_LIST_TERMINATED {
                n += 1;
            }
            list = std::slice::from_raw_parts(events, n);
        }
    }
    let keep_going = CURRENT.with(|c| match c.try_borrow_mut() {
        Ok(mut current) => current
            .as_mut()
            .is_some_and(|cur| cur.on_audio(samples, list)),
        Err(_) => false,
    });
    if keep_going { 0 } else { 1 }
}

/// The few declarations of `espeak-ng/speak_lib.h` this module uses.
mod ffi {
    use std::os::raw::{c_char, c_int, c_short, c_uint, c_void};

    pub const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
    pub const INITIALIZE_DONT_EXIT: c_int = 0x8000;
    pub const EE_OK: c_int = 0;
    pub const POS_CHARACTER: c_int = 1;
    pub const CHARS_UTF8: c_uint = 1;
    pub const PARAM_RATE: c_int = 1;
    pub const RATE_NORMAL: c_int = 175;

    pub const EVENT_LIST_TERMINATED: c_int = 0;
    pub const EVENT_WORD: c_int = 1;
    pub const EVENT_END: c_int = 5;
    pub const EVENT_MSG_TERMINATED: c_int = 6;

    /// `espeak_EVENT`.
    #[repr(C)]
    pub struct EspeakEvent {
        pub kind: c_int,
        pub unique_identifier: c_uint,
        pub text_position: c_int,
        pub length: c_int,
        pub audio_position: c_int,
        pub sample: c_int,
        pub user_data: *mut c_void,
        pub id: EventId,
    }

    /// The union at the end of `espeak_EVENT`.
    #[repr(C)]
    pub union EventId {
        pub number: c_int,
        pub name: *const c_char,
        pub string: [c_char; 8],
    }

    /// `espeak_VOICE`.
    #[repr(C)]
    pub struct EspeakVoice {
        pub name: *const c_char,
        pub languages: *const c_char,
        pub identifier: *const c_char,
        pub gender: u8,
        pub age: u8,
        pub variant: u8,
        pub xx1: u8,
        pub score: c_int,
        pub spare: *mut c_void,
    }

    pub type SynthCallback = unsafe extern "C" fn(
        wav: *mut c_short,
        numsamples: c_int,
        events: *mut EspeakEvent,
    ) -> c_int;

    // SAFETY: these signatures and the structures above follow
    // `espeak-ng/speak_lib.h` (API revision 12, espeak-ng 1.51); enums are
    // C `int`s.
    #[link(name = "espeak-ng")]
    unsafe extern "C" {
        pub fn espeak_Initialize(
            output: c_int,
            buflength: c_int,
            path: *const c_char,
            options: c_int,
        ) -> c_int;
        pub fn espeak_SetSynthCallback(callback: Option<SynthCallback>);
        pub fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
        pub fn espeak_SetVoiceByProperties(voice: *const EspeakVoice) -> c_int;
        pub fn espeak_GetCurrentVoice() -> *const EspeakVoice;
        pub fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn espeak_Synth(
            text: *const c_void,
            size: usize,
            position: c_uint,
            position_type: c_int,
            end_position: c_uint,
            flags: c_uint,
            unique_identifier: *mut c_uint,
            user_data: *mut c_void,
        ) -> c_int;
    }
}
