//! Speech providers by name, for configuration (`roomkit serve`'s
//! `stt = { provider = "...", ... }` and `tts = { ... }`).
//!
//! Each vendor module adds one arm to [`stt_provider`] or [`tts_provider`]
//! and its name to [`STT_PROVIDERS`] or [`TTS_PROVIDERS`], behind its cargo
//! feature. The options are the provider's table without `provider`, as
//! JSON; a provider reads its own keys and refuses unknown ones.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::VoiceError;
use crate::stt::SttProvider;
use crate::tts::TtsProvider;

/// One configured provider: its name and its own options.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderSpec {
    /// The provider's name.
    pub provider: String,
    /// Its options (API key variable, model, voice, base URL, ...).
    pub options: Map<String, Value>,
}

impl ProviderSpec {
    /// Splits a config table (`{provider = "...", ...}`) into name and options.
    ///
    /// # Errors
    /// [`VoiceError::Config`] when `provider` is missing or not a string.
    pub fn from_table(mut table: Map<String, Value>) -> Result<Self, VoiceError> {
        match table.remove("provider") {
            Some(Value::String(provider)) => Ok(Self {
                provider,
                options: table,
            }),
            Some(_) => Err(VoiceError::Config("provider: must be a string".into())),
            None => Err(VoiceError::Config("provider: is required".into())),
        }
    }
}

/// Reads environment variables (API keys) for providers.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Speech-to-text providers compiled into this build.
// Add "deepgram", "openai" (vendors) and "pocketsphinx" (offline) here.
pub const STT_PROVIDERS: &[&str] = &[
    #[cfg(feature = "pocketsphinx")]
    "pocketsphinx",
];

/// Text-to-speech providers compiled into this build.
// Add "elevenlabs", "openai" (vendors) and "espeak" (offline) here.
pub const TTS_PROVIDERS: &[&str] = &[
    #[cfg(feature = "espeak")]
    "espeak",
];

fn unknown(kind: &str, name: &str, known: &[&str]) -> VoiceError {
    let known = if known.is_empty() {
        "none in this build".to_owned()
    } else {
        known.join(", ")
    };
    VoiceError::Config(format!(
        "provider: {name:?} is not a {kind} provider available in this build (available: {known})"
    ))
}

/// Builds the speech-to-text provider a config names.
///
/// # Errors
/// [`VoiceError::Config`] for an unknown provider or bad options.
pub fn stt_provider(
    spec: &ProviderSpec,
    env: EnvLookup<'_>,
) -> Result<Arc<dyn SttProvider>, VoiceError> {
    let _ = env;
    // Each provider module adds its arm here, e.g.
    // `"deepgram" => Ok(Arc::new(vendors::deepgram::DeepgramStt::from_options(&spec.options, env)?)),`
    match spec.provider.as_str() {
        #[cfg(feature = "pocketsphinx")]
        "pocketsphinx" => {
            let config: crate::offline::PocketsphinxConfig = options(spec)?;
            Ok(Arc::new(crate::offline::PocketsphinxStt::new(config)?))
        }
        _ => Err(unknown("speech-to-text", &spec.provider, STT_PROVIDERS)),
    }
}

/// Builds the text-to-speech provider a config names.
///
/// # Errors
/// [`VoiceError::Config`] for an unknown provider or bad options.
pub fn tts_provider(
    spec: &ProviderSpec,
    env: EnvLookup<'_>,
) -> Result<Arc<dyn TtsProvider>, VoiceError> {
    let _ = env;
    // Each provider module adds its arm here, e.g.
    // `"elevenlabs" => Ok(Arc::new(vendors::elevenlabs::ElevenLabsTts::from_options(&spec.options, env)?)),`
    match spec.provider.as_str() {
        #[cfg(feature = "espeak")]
        "espeak" => {
            let config: crate::offline::EspeakConfig = options(spec)?;
            Ok(Arc::new(crate::offline::EspeakTts::new(config)?))
        }
        _ => Err(unknown("text-to-speech", &spec.provider, TTS_PROVIDERS)),
    }
}

/// A provider's options as its config type (unknown keys refused).
#[cfg(any(feature = "espeak", feature = "pocketsphinx"))]
fn options<T: serde::de::DeserializeOwned>(spec: &ProviderSpec) -> Result<T, VoiceError> {
    serde_json::from_value(Value::Object(spec.options.clone()))
        .map_err(|e| VoiceError::Config(format!("{}: {e}", spec.provider)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_providers_are_named_with_what_is_available() {
        let spec = ProviderSpec::from_table(
            serde_json::json!({"provider": "carrier-pigeon", "model": "x"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(spec.provider, "carrier-pigeon");
        assert_eq!(spec.options.len(), 1);
        let env = |_: &str| None;
        let e = stt_provider(&spec, &env).err().map(|e| e.to_string());
        assert!(
            e.is_some_and(|e| e.contains("\"carrier-pigeon\" is not a speech-to-text provider"))
        );
        assert!(tts_provider(&spec, &env).is_err());
        assert!(ProviderSpec::from_table(Map::new()).is_err());
    }
}
