//! Offline speech providers: a voice agent that needs no cloud key.
//!
//! - `EspeakTts` (cargo feature `espeak`): text-to-speech on libespeak-ng.
//! - `PocketsphinxStt` (cargo feature `pocketsphinx`): speech-to-text on
//!   libpocketsphinx with Debian's `pocketsphinx-en-us` model.
//!
//! Both link system libraries, so both features are off by default. On
//! Debian: `apt-get install libespeak-ng-dev espeak-ng-data` and
//! `apt-get install libpocketsphinx-dev pocketsphinx-en-us`.
//!
//! The en-us model is wideband: it expects 16 kHz audio and recognizes
//! little of 8 kHz telephone audio, even resampled up to 16 kHz. Free-form
//! decoding with its language model is poor on synthetic speech; a JSGF
//! grammar or a keyword list recognizes known phrases reliably.

#[cfg(feature = "espeak")]
pub mod espeak;
#[cfg(feature = "pocketsphinx")]
pub mod pocketsphinx;

#[cfg(feature = "espeak")]
pub use espeak::{EspeakConfig, EspeakTts};
#[cfg(feature = "pocketsphinx")]
pub use pocketsphinx::{PocketsphinxConfig, PocketsphinxStt};
