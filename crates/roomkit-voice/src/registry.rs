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
pub const STT_PROVIDERS: &[&str] = &[
    #[cfg(feature = "deepgram")]
    "deepgram",
    #[cfg(feature = "openai")]
    "openai",
    #[cfg(feature = "pocketsphinx")]
    "pocketsphinx",
];

/// Text-to-speech providers compiled into this build.
pub const TTS_PROVIDERS: &[&str] = &[
    #[cfg(feature = "elevenlabs")]
    "elevenlabs",
    #[cfg(feature = "openai")]
    "openai",
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
    match spec.provider.as_str() {
        #[cfg(feature = "deepgram")]
        "deepgram" => {
            let config: crate::vendors::deepgram::DeepgramConfig = options(spec)?;
            let key = api_key(spec, &config.api_key_env, env)?;
            Ok(Arc::new(crate::vendors::deepgram::DeepgramStt::new(
                key, &config,
            )?))
        }
        #[cfg(feature = "openai")]
        "openai" => {
            let config: crate::vendors::openai::OpenAiSttConfig = options(spec)?;
            let key = api_key(spec, &config.api_key_env, env)?;
            Ok(Arc::new(crate::vendors::openai::OpenAiStt::new(
                key, &config,
            )?))
        }
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
    match spec.provider.as_str() {
        #[cfg(feature = "elevenlabs")]
        "elevenlabs" => {
            let config: crate::vendors::elevenlabs::ElevenLabsConfig = options(spec)?;
            let key = api_key(spec, &config.api_key_env, env)?;
            Ok(Arc::new(crate::vendors::elevenlabs::ElevenLabsTts::new(
                key, &config,
            )?))
        }
        #[cfg(feature = "openai")]
        "openai" => {
            let config: crate::vendors::openai::OpenAiTtsConfig = options(spec)?;
            let key = api_key(spec, &config.api_key_env, env)?;
            Ok(Arc::new(crate::vendors::openai::OpenAiTts::new(
                key, &config,
            )?))
        }
        #[cfg(feature = "espeak")]
        "espeak" => {
            let config: crate::offline::EspeakConfig = options(spec)?;
            Ok(Arc::new(crate::offline::EspeakTts::new(config)?))
        }
        _ => Err(unknown("text-to-speech", &spec.provider, TTS_PROVIDERS)),
    }
}

/// A vendor's API key, read through `env` from the variable its options
/// name (`api_key_env`).
#[cfg(any(feature = "deepgram", feature = "openai", feature = "elevenlabs"))]
fn api_key(
    spec: &ProviderSpec,
    var: &str,
    env: EnvLookup<'_>,
) -> Result<crate::vendors::Secret, VoiceError> {
    match env(var) {
        Some(v) if !v.trim().is_empty() => Ok(crate::vendors::Secret::new(v.trim())),
        _ => Err(VoiceError::Config(format!(
            "{}: api_key_env: environment variable {var} is not set",
            spec.provider
        ))),
    }
}

/// A provider's options as its config type (unknown keys refused).
#[cfg(any(
    feature = "espeak",
    feature = "pocketsphinx",
    feature = "deepgram",
    feature = "openai",
    feature = "elevenlabs"
))]
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

    #[cfg(any(feature = "deepgram", feature = "openai", feature = "elevenlabs"))]
    fn spec(table: Value) -> ProviderSpec {
        ProviderSpec::from_table(table.as_object().cloned().unwrap_or_default()).unwrap_or_default()
    }

    #[cfg(any(feature = "deepgram", feature = "openai", feature = "elevenlabs"))]
    fn env(name: &str) -> Option<String> {
        (name == "TEST_SPEECH_KEY").then(|| "sk-test".to_owned())
    }

    #[cfg(any(feature = "deepgram", feature = "openai", feature = "elevenlabs"))]
    fn stt_error(table: Value) -> String {
        stt_provider(&spec(table), &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[cfg(any(feature = "deepgram", feature = "openai", feature = "elevenlabs"))]
    fn tts_error(table: Value) -> String {
        tts_provider(&spec(table), &env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[cfg(feature = "deepgram")]
    #[test]
    fn deepgram_builds_by_name_and_names_a_bad_option() {
        use serde_json::json;
        assert!(STT_PROVIDERS.contains(&"deepgram"));
        let good = json!({"provider": "deepgram", "api_key_env": "TEST_SPEECH_KEY",
            "base_url": "http://127.0.0.1:9", "model": "nova-2"});
        assert!(stt_provider(&spec(good), &env).is_ok());
        let e = stt_error(
            json!({"provider": "deepgram", "api_key_env": "TEST_SPEECH_KEY", "modle": "x"}),
        );
        assert!(e.contains("modle"), "{e}");
        let e = stt_error(json!({"provider": "deepgram", "api_key_env": "NO_SUCH_KEY"}));
        assert!(e.contains("NO_SUCH_KEY"), "{e}");
        let e = stt_error(
            json!({"provider": "deepgram", "api_key_env": "TEST_SPEECH_KEY", "base_url": "ftp://x"}),
        );
        assert!(e.contains("base_url"), "{e}");
    }

    #[cfg(feature = "openai")]
    #[test]
    fn openai_builds_by_name_for_both_kinds_and_names_a_bad_option() {
        use serde_json::json;
        assert!(STT_PROVIDERS.contains(&"openai") && TTS_PROVIDERS.contains(&"openai"));
        let good = json!({"provider": "openai", "api_key_env": "TEST_SPEECH_KEY",
            "base_url": "http://127.0.0.1:9"});
        assert!(stt_provider(&spec(good.clone()), &env).is_ok());
        assert!(tts_provider(&spec(good), &env).is_ok());
        let e =
            stt_error(json!({"provider": "openai", "api_key_env": "TEST_SPEECH_KEY", "colour": 1}));
        assert!(e.contains("colour"), "{e}");
        let e =
            tts_error(json!({"provider": "openai", "api_key_env": "TEST_SPEECH_KEY", "colour": 1}));
        assert!(e.contains("colour"), "{e}");
        let e = tts_error(json!({"provider": "openai"}));
        assert!(e.contains("OPENAI_API_KEY"), "{e}");
    }

    #[cfg(feature = "elevenlabs")]
    #[test]
    fn elevenlabs_builds_by_name_and_names_a_bad_option() {
        use serde_json::json;
        assert!(TTS_PROVIDERS.contains(&"elevenlabs"));
        let good = json!({"provider": "elevenlabs", "api_key_env": "TEST_SPEECH_KEY", "voice_id": "v1",
            "base_url": "http://127.0.0.1:9"});
        assert!(tts_provider(&spec(good), &env).is_ok());
        let e = tts_error(
            json!({"provider": "elevenlabs", "api_key_env": "TEST_SPEECH_KEY", "speed": "fast"}),
        );
        assert!(e.contains("speed"), "{e}");
        let e = stt_error(json!({"provider": "elevenlabs", "api_key_env": "TEST_SPEECH_KEY"}));
        assert!(e.contains("not a speech-to-text provider"), "{e}");
    }
}
