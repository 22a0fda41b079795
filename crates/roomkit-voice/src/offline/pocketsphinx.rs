//! [`PocketsphinxStt`]: offline speech-to-text on libpocketsphinx (cargo
//! feature `pocketsphinx`; Debian packages `libpocketsphinx-dev` to build and
//! `pocketsphinx-en-us` for the model).
//!
//! Written against the library Debian bookworm ships (0.8+5prealpha: a
//! decoder configured with `cmd_ln_parse_r` and `ps_init`). Each decoder is
//! one loaded model; the provider keeps a few idle decoders in a pool, and
//! every utterance or session takes one for itself, so decoding never
//! shares a decoder between threads. Decoding runs on blocking threads: a
//! whole utterance ([`SttProvider::transcribe`]) on tokio's blocking pool,
//! a streaming session on a thread of its own that feeds audio to the
//! decoder as it arrives, sends interim hypotheses while the caller speaks
//! and the final one on [`SttAudio::Finalize`].
//!
//! What it recognizes, and how:
//! - **The model is wideband.** Debian's `en-us` acoustic model wants
//!   16 kHz audio. Other rates are resampled, but 8 kHz telephone audio
//!   carries too little of the spectrum: expect little to be recognized.
//! - **Phrases or a JSGF grammar** (`phrases`, `grammar`): the decoder only
//!   chooses among the sentences given, and recognizes them reliably, even
//!   from synthetic (espeak-ng) speech. This is the mode for menus,
//!   commands, and tests.
//! - **The language model** (the default, `en-us.lm.bin`): free-form
//!   dictation. Its accuracy on clean human speech is modest and on
//!   synthetic speech poor.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use roomkit_audio::resample::ChunkResampler;
use tokio::sync::mpsc;

use crate::error::{ProviderFailure, VoiceError};
use crate::stt::{SESSION_QUEUE, SttAudio, SttProvider, SttSession, Transcript};

/// The provider's name in errors and logs.
const NAME: &str = "pocketsphinx";

/// Where Debian's `pocketsphinx-en-us` puts the model.
pub const DEFAULT_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us";

/// The rate the en-us model is trained on.
pub const MODEL_SAMPLE_RATE: u32 = 16_000;

/// Idle decoders kept for the next utterance (each holds a loaded model).
const IDLE_DECODERS: usize = 4;

/// Model-rate samples between two interim hypotheses (half a second).
const INTERIM_EVERY: usize = MODEL_SAMPLE_RATE as usize / 2;

/// Settings of [`PocketsphinxStt`] (the `stt` table of a voice channel with
/// `provider = "pocketsphinx"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PocketsphinxConfig {
    /// The model directory; the three files below default to their places
    /// in it (Debian's layout).
    pub model_dir: PathBuf,
    /// The acoustic model directory (default `<model_dir>/en-us`).
    pub acoustic_model: Option<PathBuf>,
    /// The pronunciation dictionary (default `<model_dir>/cmudict-en-us.dict`).
    pub dictionary: Option<PathBuf>,
    /// The language model for free-form decoding (default
    /// `<model_dir>/en-us.lm.bin`); unused with `grammar` or `phrases`.
    pub language_model: Option<PathBuf>,
    /// A JSGF grammar file: only its sentences are recognized.
    pub grammar: Option<PathBuf>,
    /// The sentences to recognize, as a list: a grammar with one
    /// alternative per phrase. Every word must be in the dictionary.
    pub phrases: Vec<String>,
    /// Whether streaming sessions send interim hypotheses while audio
    /// arrives (every half second of speech).
    pub interim_results: bool,
    /// The library's own spectral noise removal. Off by default: with it
    /// on, a grammar failed to match speech preceded by silence or by a
    /// faint hiss, and a call's audio pipeline has its own denoiser.
    pub remove_noise: bool,
}

impl Default for PocketsphinxConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from(DEFAULT_MODEL_DIR),
            acoustic_model: None,
            dictionary: None,
            language_model: None,
            grammar: None,
            phrases: Vec::new(),
            interim_results: true,
            remove_noise: false,
        }
    }
}

/// What the decoder searches for.
#[derive(Debug, Clone)]
enum Search {
    LanguageModel(PathBuf),
    GrammarFile(PathBuf),
    /// A JSGF grammar made from `phrases`, and its words.
    Phrases {
        jsgf: CString,
        words: Vec<String>,
    },
}

/// Checked settings, ready for the library.
#[derive(Debug, Clone)]
struct Settings {
    remove_noise: bool,
    acoustic_model: PathBuf,
    dictionary: PathBuf,
    search: Search,
}

impl PocketsphinxConfig {
    fn resolve(&self) -> Result<Settings, VoiceError> {
        let acoustic_model = self
            .acoustic_model
            .clone()
            .unwrap_or_else(|| self.model_dir.join("en-us"));
        let dictionary = self
            .dictionary
            .clone()
            .unwrap_or_else(|| self.model_dir.join("cmudict-en-us.dict"));
        require("acoustic_model", &acoustic_model, true)?;
        require("dictionary", &dictionary, false)?;
        let search = match (&self.grammar, self.phrases.is_empty()) {
            (Some(_), false) => {
                return Err(config_error(
                    "`grammar` and `phrases` exclude each other: give one",
                ));
            }
            (Some(grammar), true) => {
                require("grammar", grammar, false)?;
                Search::GrammarFile(grammar.clone())
            }
            (None, false) => phrases_grammar(&self.phrases)?,
            (None, true) => {
                let lm = self
                    .language_model
                    .clone()
                    .unwrap_or_else(|| self.model_dir.join("en-us.lm.bin"));
                require("language_model", &lm, false)?;
                Search::LanguageModel(lm)
            }
        };
        Ok(Settings {
            remove_noise: self.remove_noise,
            acoustic_model,
            dictionary,
            search,
        })
    }
}

fn config_error(message: impl std::fmt::Display) -> VoiceError {
    VoiceError::Config(format!("pocketsphinx: {message}"))
}

fn require(key: &str, path: &Path, dir: bool) -> Result<(), VoiceError> {
    let ok = if dir { path.is_dir() } else { path.is_file() };
    if ok {
        Ok(())
    } else {
        let what = if dir { "directory" } else { "file" };
        Err(config_error(format!(
            "`{key}`: no such {what}: {} (Debian: apt-get install pocketsphinx-en-us)",
            path.display()
        )))
    }
}

/// A JSGF grammar with one alternative per phrase. Phrases are lower-cased
/// and cut into words; punctuation other than apostrophes is dropped.
fn phrases_grammar(phrases: &[String]) -> Result<Search, VoiceError> {
    let mut alternatives = Vec::with_capacity(phrases.len());
    let mut words: Vec<String> = Vec::new();
    for phrase in phrases {
        let cleaned: String = phrase
            .to_lowercase()
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '\'' {
                    c
                } else {
                    ' '
                }
            })
            .collect();
        let phrase_words: Vec<&str> = cleaned.split_whitespace().collect();
        if phrase_words.is_empty() {
            return Err(config_error(format!(
                "`phrases`: the phrase {phrase:?} has no words"
            )));
        }
        for word in &phrase_words {
            if !words.iter().any(|w| w == word) {
                words.push((*word).to_owned());
            }
        }
        alternatives.push(phrase_words.join(" "));
    }
    let jsgf = format!(
        "#JSGF V1.0;\ngrammar roomkit;\npublic <phrase> = {} ;\n",
        alternatives.join(" | ")
    );
    let jsgf = CString::new(jsgf).map_err(|_| config_error("`phrases` cannot contain NUL"))?;
    Ok(Search::Phrases { jsgf, words })
}

/// Speech-to-text with libpocketsphinx, entirely offline.
#[derive(Debug, Clone)]
pub struct PocketsphinxStt {
    pool: Arc<Pool>,
    interim_results: bool,
}

impl PocketsphinxStt {
    /// A provider with these settings. Loads one decoder at once, so a bad
    /// model, dictionary or grammar is reported here; this takes about a
    /// second with the language model (call it at startup or from a
    /// blocking task).
    ///
    /// # Errors
    /// [`VoiceError::Config`] for missing files, unknown words in `phrases`
    /// or a model the library refuses.
    pub fn new(config: PocketsphinxConfig) -> Result<Self, VoiceError> {
        let settings = config.resolve()?;
        let decoder = Decoder::new(&settings).map_err(|f| config_error(f.message))?;
        let pool = Pool {
            settings,
            idle: Mutex::new(vec![decoder]),
        };
        Ok(Self {
            pool: Arc::new(pool),
            interim_results: config.interim_results,
        })
    }
}

#[async_trait]
impl SttProvider for PocketsphinxStt {
    fn name(&self) -> &str {
        NAME
    }

    fn sample_rate(&self) -> u32 {
        MODEL_SAMPLE_RATE
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        let mut rate = Rate::new(sample_rate)?;
        if samples.is_empty() {
            return Ok(Transcript::final_text(""));
        }
        let samples = samples.to_vec();
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || {
            let mut audio = rate.push(&samples)?;
            audio.extend(rate.flush()?);
            let mut decoder = pool.checkout()?;
            let started = std::time::Instant::now();
            let result = decoder.decode_whole(&audio);
            pool.checkin(decoder);
            let text = result?;
            tracing::debug!(
                target: "roomkit.voice.pocketsphinx",
                audio_ms = ms(samples.len(), sample_rate),
                decode_ms = started.elapsed().as_millis() as u64,
                "utterance decoded"
            );
            Ok(Transcript {
                start_ms: Some(0),
                end_ms: Some(ms(samples.len(), sample_rate)),
                ..Transcript::final_text(text)
            })
        })
        .await
        .map_err(|e| ProviderFailure::retryable(NAME, format!("the decoding task failed: {e}")))?
    }

    async fn open_session(
        self: Arc<Self>,
        sample_rate: u32,
    ) -> Result<SttSession, ProviderFailure> {
        let rate = Rate::new(sample_rate)?;
        let (audio_tx, audio_rx) = mpsc::channel::<SttAudio>(SESSION_QUEUE);
        let (result_tx, result_rx) = mpsc::channel(SESSION_QUEUE);
        let pool = Arc::clone(&self.pool);
        let interim = self.interim_results;
        std::thread::Builder::new()
            .name("roomkit-pocketsphinx".to_owned())
            .spawn(move || {
                let session = Session {
                    rate,
                    sample_rate,
                    interim,
                    audio: audio_rx,
                    results: result_tx,
                };
                session.run(&pool);
            })
            .map_err(|e| {
                ProviderFailure::retryable(NAME, format!("cannot start a decoding thread: {e}"))
            })?;
        Ok(SttSession {
            audio: audio_tx,
            results: result_rx,
        })
    }
}

fn ms(samples: usize, rate: u32) -> u64 {
    samples as u64 * 1000 / u64::from(rate.max(1))
}

/// One streaming session, on its own thread.
struct Session {
    rate: Rate,
    sample_rate: u32,
    interim: bool,
    audio: mpsc::Receiver<SttAudio>,
    results: mpsc::Sender<Result<Transcript, ProviderFailure>>,
}

impl Session {
    fn run(mut self, pool: &Pool) {
        let mut decoder = match pool.checkout() {
            Ok(decoder) => decoder,
            Err(failure) => {
                let _ = self.results.blocking_send(Err(failure));
                return;
            }
        };
        if let Err(failure) = self.decode(&mut decoder) {
            tracing::warn!(target: "roomkit.voice.pocketsphinx", error = %failure, "session failed");
            let _ = self.results.blocking_send(Err(failure));
        }
        pool.checkin(decoder);
    }

    /// Feeds audio until the sender is dropped (or the reader is gone).
    fn decode(&mut self, decoder: &mut Decoder) -> Result<(), ProviderFailure> {
        // Input samples received, for the results' times.
        let mut received = 0usize;
        let mut utterance_start = 0usize;
        let mut since_interim = 0usize;
        let mut last_interim = String::new();
        while let Some(message) = self.audio.blocking_recv() {
            match message {
                SttAudio::Samples(samples) => {
                    if samples.is_empty() {
                        continue;
                    }
                    if !decoder.in_utterance() {
                        decoder.start()?;
                        utterance_start = received;
                    }
                    received += samples.len();
                    let audio = self.rate.push(&samples)?;
                    decoder.feed(&audio)?;
                    since_interim += audio.len();
                    if self.interim && since_interim >= INTERIM_EVERY {
                        since_interim = 0;
                        let text = decoder.hypothesis();
                        if !text.is_empty() && text != last_interim {
                            last_interim.clone_from(&text);
                            let interim = Transcript {
                                text,
                                is_final: false,
                                ..Transcript::default()
                            };
                            if self.results.blocking_send(Ok(interim)).is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
                SttAudio::Finalize => {
                    if !decoder.in_utterance() {
                        // Every Finalize gets its answer, empty here.
                        if self
                            .results
                            .blocking_send(Ok(Transcript::final_text("")))
                            .is_err()
                        {
                            return Ok(());
                        }
                        continue;
                    }
                    let tail = self.rate.flush()?;
                    decoder.feed(&tail)?;
                    let text = decoder.finish()?;
                    since_interim = 0;
                    last_interim.clear();
                    let result = Transcript {
                        start_ms: Some(ms(utterance_start, self.sample_rate)),
                        end_ms: Some(ms(received, self.sample_rate)),
                        ..Transcript::final_text(text)
                    };
                    if self.results.blocking_send(Ok(result)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Converts audio to the model's rate (a no-op at 16 kHz).
struct Rate {
    core: Option<ChunkResampler>,
    pending: Vec<f32>,
    out: Vec<f32>,
}

impl Rate {
    fn new(sample_rate: u32) -> Result<Self, ProviderFailure> {
        if !(8_000..=192_000).contains(&sample_rate) {
            return Err(ProviderFailure::fatal(
                NAME,
                format!("unsupported sample rate {sample_rate} Hz"),
            ));
        }
        if sample_rate == MODEL_SAMPLE_RATE {
            return Ok(Self {
                core: None,
                pending: Vec::new(),
                out: Vec::new(),
            });
        }
        // Blocks of 20 ms.
        let core = ChunkResampler::new(sample_rate, MODEL_SAMPLE_RATE, sample_rate as usize / 50)
            .map_err(|e| ProviderFailure::fatal(NAME, format!("resampler: {e}")))?;
        let out = vec![0.0; core.output_len()];
        Ok(Self {
            core: Some(core),
            pending: Vec::new(),
            out,
        })
    }

    fn push(&mut self, samples: &[i16]) -> Result<Vec<i16>, ProviderFailure> {
        let Some(core) = self.core.as_mut() else {
            return Ok(samples.to_vec());
        };
        self.pending.extend(samples.iter().map(|&s| f32::from(s)));
        let block = core.input_len();
        let mut converted = Vec::with_capacity(self.pending.len() * 2);
        let mut used = 0;
        while self.pending.len() - used >= block {
            let written = core
                .process(&self.pending[used..used + block], &mut self.out)
                .map_err(|e| ProviderFailure::retryable(NAME, format!("resampler: {e}")))?;
            converted.extend(
                self.out[..written.min(self.out.len())]
                    .iter()
                    .map(|&s| s.clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16),
            );
            used += block;
        }
        self.pending.drain(..used);
        Ok(converted)
    }

    /// Converts what is left of a block (padded with silence).
    fn flush(&mut self) -> Result<Vec<i16>, ProviderFailure> {
        let Some(core) = self.core.as_ref() else {
            return Ok(Vec::new());
        };
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let padding = core.input_len() - self.pending.len();
        self.push(&vec![0; padding])
    }
}

/// Idle decoders and how to make more.
#[derive(Debug)]
struct Pool {
    settings: Settings,
    idle: Mutex<Vec<Decoder>>,
}

impl Pool {
    fn checkout(&self) -> Result<Decoder, ProviderFailure> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(decoder) => Ok(decoder),
            None => Decoder::new(&self.settings),
        }
    }

    fn checkin(&self, mut decoder: Decoder) {
        if decoder.in_utterance() && decoder.finish().is_err() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_DECODERS
        {
            idle.push(decoder);
        }
    }
}

/// Serializes the making of decoders: the library's logging and
/// configuration parsing touch process-wide state.
static INIT: Mutex<()> = Mutex::new(());

/// One loaded decoder (`ps_decoder_t`), used by one thread at a time.
struct Decoder {
    ps: NonNull<ffi::PsDecoder>,
    in_utterance: bool,
    /// The arguments the decoder's configuration points into.
    _args: Vec<CString>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("in_utterance", &self.in_utterance)
            .finish_non_exhaustive()
    }
}

// SAFETY: a decoder has no thread affinity: the library keeps all of its
// state in the decoder object, and this type gives `&mut` access only, so
// it is used by one thread at a time (moving between the pool and the
// threads that borrow it).
unsafe impl Send for Decoder {}

fn c_path(key: &str, path: &Path) -> Result<CString, ProviderFailure> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| ProviderFailure::fatal(NAME, format!("`{key}` contains NUL")))
}

impl Decoder {
    fn new(settings: &Settings) -> Result<Self, ProviderFailure> {
        let mut args = vec![
            c"roomkit".to_owned(),
            c"-hmm".to_owned(),
            c_path("acoustic_model", &settings.acoustic_model)?,
            c"-dict".to_owned(),
            c_path("dictionary", &settings.dictionary)?,
            c"-remove_noise".to_owned(),
            if settings.remove_noise {
                c"yes".to_owned()
            } else {
                c"no".to_owned()
            },
        ];
        match &settings.search {
            Search::LanguageModel(lm) => {
                args.push(c"-lm".to_owned());
                args.push(c_path("language_model", lm)?);
            }
            Search::GrammarFile(grammar) => {
                args.push(c"-jsgf".to_owned());
                args.push(c_path("grammar", grammar)?);
            }
            Search::Phrases { .. } => {}
        }
        let mut argv: Vec<*mut std::os::raw::c_char> =
            args.iter().map(|a| a.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(argv.len()).unwrap_or(i32::MAX);

        let _guard = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: a null stream is the library's documented way to turn its
        // logging (to stderr by default) off; serialized by `INIT`.
        unsafe { ffi::err_set_logfp(std::ptr::null_mut()) };
        // SAFETY: `argv` holds `argc` pointers to NUL-terminated strings
        // that live in `args`, which the decoder keeps for as long as it
        // lives (the configuration may point into them); `ps_args()` is the
        // library's static table of arguments.
        let config = unsafe {
            ffi::cmd_ln_parse_r(
                std::ptr::null_mut(),
                ffi::ps_args(),
                argc,
                argv.as_mut_ptr(),
                1,
            )
        };
        if config.is_null() {
            return Err(ProviderFailure::fatal(
                NAME,
                "the library refused its arguments",
            ));
        }
        // SAFETY: `config` is the valid configuration made above. The
        // decoder takes its own reference, so ours is released right after.
        let ps = unsafe {
            let ps = ffi::ps_init(config);
            ffi::cmd_ln_free_r(config);
            ps
        };
        let Some(ps) = NonNull::new(ps) else {
            return Err(ProviderFailure::fatal(
                NAME,
                format!(
                    "cannot load the model (acoustic model {}, dictionary {}{})",
                    settings.acoustic_model.display(),
                    settings.dictionary.display(),
                    match &settings.search {
                        Search::LanguageModel(p) => format!(", language model {}", p.display()),
                        Search::GrammarFile(p) => format!(", grammar {}", p.display()),
                        Search::Phrases { .. } => String::new(),
                    }
                ),
            ));
        };
        let mut decoder = Decoder {
            ps,
            in_utterance: false,
            _args: args,
        };
        if let Search::Phrases { jsgf, words } = &settings.search {
            decoder.use_phrases(jsgf, words)?;
        }
        Ok(decoder)
    }

    fn use_phrases(&mut self, jsgf: &CStr, words: &[String]) -> Result<(), ProviderFailure> {
        for word in words {
            let c_word = CString::new(word.as_str())
                .map_err(|_| ProviderFailure::fatal(NAME, "`phrases` contains NUL"))?;
            // SAFETY: `self.ps` is a live decoder; the word is NUL-terminated.
            let found = unsafe { ffi::ps_lookup_word(self.ps.as_ptr(), c_word.as_ptr()) };
            if found.is_null() {
                return Err(ProviderFailure::fatal(
                    NAME,
                    format!("`phrases`: the word `{word}` is not in the dictionary"),
                ));
            }
            // SAFETY: the library allocated the pronunciation for the caller
            // to free, with its own allocator.
            unsafe { ffi::ckd_free(found.cast()) };
        }
        let name = c"phrases";
        // SAFETY: `self.ps` is a live decoder; both strings are
        // NUL-terminated and only read during the calls.
        let ok = unsafe {
            ffi::ps_set_jsgf_string(self.ps.as_ptr(), name.as_ptr(), jsgf.as_ptr()) == 0
                && ffi::ps_set_search(self.ps.as_ptr(), name.as_ptr()) == 0
        };
        if ok {
            Ok(())
        } else {
            Err(ProviderFailure::fatal(
                NAME,
                "the library refused the `phrases` grammar",
            ))
        }
    }

    fn in_utterance(&self) -> bool {
        self.in_utterance
    }

    fn start(&mut self) -> Result<(), ProviderFailure> {
        // SAFETY: `self.ps` is a live decoder used by this thread only.
        if unsafe { ffi::ps_start_utt(self.ps.as_ptr()) } < 0 {
            return Err(ProviderFailure::retryable(
                NAME,
                "cannot start an utterance",
            ));
        }
        self.in_utterance = true;
        Ok(())
    }

    fn feed(&mut self, samples: &[i16]) -> Result<(), ProviderFailure> {
        if samples.is_empty() {
            return Ok(());
        }
        // SAFETY: `self.ps` is a live decoder in an utterance; the library
        // reads `samples.len()` samples from the slice during the call.
        let rc =
            unsafe { ffi::ps_process_raw(self.ps.as_ptr(), samples.as_ptr(), samples.len(), 0, 0) };
        if rc < 0 {
            return Err(ProviderFailure::retryable(NAME, "decoding failed"));
        }
        Ok(())
    }

    /// The best hypothesis so far (empty when there is none).
    fn hypothesis(&self) -> String {
        let mut score = 0i32;
        // SAFETY: `self.ps` is a live decoder; the returned string belongs
        // to it and is copied before any other call.
        unsafe {
            let hyp = ffi::ps_get_hyp(self.ps.as_ptr(), &mut score);
            if hyp.is_null() {
                String::new()
            } else {
                CStr::from_ptr(hyp).to_string_lossy().trim().to_owned()
            }
        }
    }

    /// Ends the utterance and returns its text.
    fn finish(&mut self) -> Result<String, ProviderFailure> {
        self.in_utterance = false;
        // SAFETY: `self.ps` is a live decoder used by this thread only.
        if unsafe { ffi::ps_end_utt(self.ps.as_ptr()) } < 0 {
            return Err(ProviderFailure::retryable(NAME, "cannot end the utterance"));
        }
        Ok(self.hypothesis())
    }

    fn decode_whole(&mut self, samples: &[i16]) -> Result<String, ProviderFailure> {
        self.start()?;
        if let Err(failure) = self.feed(samples) {
            let _ = self.finish();
            return Err(failure);
        }
        self.finish()
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: `self.ps` came from `ps_init` and is released once, here;
        // the argument strings it may point into are dropped after it.
        unsafe { ffi::ps_free(self.ps.as_ptr()) };
    }
}

/// The few declarations of `pocketsphinx.h` and sphinxbase's `cmd_ln.h`,
/// `err.h` and `ckd_alloc.h` this module uses (0.8+5prealpha).
mod ffi {
    use std::os::raw::{c_char, c_int, c_void};

    /// `ps_decoder_t`.
    #[repr(C)]
    pub struct PsDecoder {
        _private: [u8; 0],
    }

    /// `cmd_ln_t`.
    #[repr(C)]
    pub struct CmdLn {
        _private: [u8; 0],
    }

    /// `arg_t`.
    #[repr(C)]
    pub struct Arg {
        _private: [u8; 0],
    }

    // SAFETY: these signatures follow the headers of libpocketsphinx
    // 0.8+5prealpha and sphinxbase 0.8+5prealpha (`int32` is `int`).
    #[link(name = "pocketsphinx")]
    unsafe extern "C" {
        pub fn ps_args() -> *const Arg;
        pub fn ps_init(config: *mut CmdLn) -> *mut PsDecoder;
        pub fn ps_free(ps: *mut PsDecoder) -> c_int;
        pub fn ps_start_utt(ps: *mut PsDecoder) -> c_int;
        pub fn ps_process_raw(
            ps: *mut PsDecoder,
            data: *const i16,
            n_samples: usize,
            no_search: c_int,
            full_utt: c_int,
        ) -> c_int;
        pub fn ps_end_utt(ps: *mut PsDecoder) -> c_int;
        pub fn ps_get_hyp(ps: *mut PsDecoder, out_best_score: *mut i32) -> *const c_char;
        pub fn ps_lookup_word(ps: *mut PsDecoder, word: *const c_char) -> *mut c_char;
        pub fn ps_set_jsgf_string(
            ps: *mut PsDecoder,
            name: *const c_char,
            jsgf_string: *const c_char,
        ) -> c_int;
        pub fn ps_set_search(ps: *mut PsDecoder, name: *const c_char) -> c_int;
    }

    // SAFETY: as above.
    #[link(name = "sphinxbase")]
    unsafe extern "C" {
        pub fn cmd_ln_parse_r(
            inout_cmdln: *mut CmdLn,
            defn: *const Arg,
            argc: i32,
            argv: *mut *mut c_char,
            strict: i32,
        ) -> *mut CmdLn;
        pub fn cmd_ln_free_r(cmdln: *mut CmdLn) -> c_int;
        pub fn err_set_logfp(stream: *mut c_void);
        pub fn ckd_free(ptr: *mut c_void);
    }
}
