//! `[[channels]] type = "voice"`: a voice channel, its transport, its speech
//! providers (by name, through `roomkit_voice::registry`) and its audio
//! pipeline, validated at load; and the parts `serve` mounts.

use std::sync::Arc;

use roomkit_audio::AudioPipelineConfig;
use roomkit_audio::turn::{HeuristicTurnConfig, InterruptionConfig};
use roomkit_channels::Secret;
use roomkit_voice::registry::{self, ProviderSpec};
use roomkit_voice::twilio::{TwilioMediaStreams, TwilioVoiceWebhook, verify_upgrade};
use roomkit_voice::{VoiceChannel, VoiceMediaEndpoint, VoiceSettings};
use serde::Deserialize;

use crate::config::{ConfigError, Ctx, Env};

/// The env var holding the Twilio auth token when `auth_token_env` is not set.
pub const DEFAULT_TOKEN_ENV: &str = "TWILIO_AUTH_TOKEN";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoiceSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
    transport: String,
    auth_token_env: Option<String>,
    stt: serde_json::Map<String, serde_json::Value>,
    tts: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pipeline: AudioPipelineConfig,
    interruption: Option<InterruptionConfig>,
    turn: Option<HeuristicTurnConfig>,
    voice: Option<String>,
    min_chunk_chars: Option<usize>,
    stt_timeout_ms: Option<u64>,
    tts_timeout_ms: Option<u64>,
}

/// A voice channel, as validated.
#[derive(Debug, Clone)]
pub struct VoiceSpec {
    /// Channel id.
    pub id: String,
    /// `twilio` or `browser`.
    pub transport: String,
    /// The Twilio auth token, when its variable is set.
    pub auth_token: Option<Secret>,
    /// Speech-to-text.
    pub stt: ProviderSpec,
    /// Text-to-speech.
    pub tts: ProviderSpec,
    /// Pipeline, barge-in, turn detection.
    pub settings: VoiceSettings,
}

// Specs compare by their printed form (the token prints redacted).
impl PartialEq for VoiceSpec {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl Eq for VoiceSpec {}

/// Reads and checks one voice channel table.
pub(crate) fn parse(
    ctx: &Ctx<'_>,
    key: &str,
    table: toml::Table,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<VoiceSpec, ConfigError> {
    let s: VoiceSection = ctx.section(key, table)?;
    if s.transport != "twilio" && s.transport != roomkit_voice::browser::TRANSPORT {
        return Err(ctx.err(
            format!("{key}.transport"),
            format!(
                "{:?} is not a voice transport of this build (twilio, browser)",
                s.transport
            ),
        ));
    }
    let token_env = s.auth_token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV);
    let auth_token = env.var(token_env).map(Secret::new);
    if auth_token.is_none() && s.transport == "twilio" {
        warnings.push(format!(
            "{key}: {token_env} is not set; Twilio voice webhooks and media sockets will be refused"
        ));
    }
    let lookup = |name: &str| env.var(name);
    let stt = ProviderSpec::from_table(s.stt)
        .map_err(|e| ctx.err(format!("{key}.stt"), config_problem(&e)))?;
    registry::stt_provider(&stt, &lookup)
        .map_err(|e| ctx.err(format!("{key}.stt"), config_problem(&e)))?;
    let tts = ProviderSpec::from_table(s.tts)
        .map_err(|e| ctx.err(format!("{key}.tts"), config_problem(&e)))?;
    registry::tts_provider(&tts, &lookup)
        .map_err(|e| ctx.err(format!("{key}.tts"), config_problem(&e)))?;
    let mut settings = VoiceSettings {
        pipeline: s.pipeline,
        interruption: s.interruption,
        turn: s.turn,
        voice: s.voice,
        ..VoiceSettings::default()
    };
    if let Some(n) = s.min_chunk_chars {
        settings.min_chunk_chars = n;
    }
    for (name, value, field) in [
        (
            "stt_timeout_ms",
            s.stt_timeout_ms,
            &mut settings.stt_timeout_ms,
        ),
        (
            "tts_timeout_ms",
            s.tts_timeout_ms,
            &mut settings.tts_timeout_ms,
        ),
    ] {
        match value {
            Some(0) => {
                return Err(ctx.err(format!("{key}.{name}"), "must be more than 0".to_owned()));
            }
            Some(ms) => *field = ms,
            None => {}
        }
    }
    Ok(VoiceSpec {
        id: s.id,
        transport: s.transport,
        auth_token,
        stt,
        tts,
        settings,
    })
}

fn config_problem(e: &roomkit_voice::VoiceError) -> String {
    match e {
        roomkit_voice::VoiceError::Config(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Who may open a browser call (`transport = "browser"`): whoever holds
/// the server's API key (`?token=` or `Authorization: Bearer`), or anyone
/// on a server without keys. Tenant keys open no browser call.
#[derive(Clone, Default)]
pub struct BrowserAuth {
    /// The server's API key.
    pub key: Option<String>,
    /// The server takes no key at all.
    pub open: bool,
}

impl std::fmt::Debug for BrowserAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserAuth")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("open", &self.open)
            .finish()
    }
}

/// A voice channel ready to register, with what the server mounts for it.
pub struct BuiltVoice {
    /// The channel (attach the engine once it is built).
    pub channel: VoiceChannel,
    /// The call webhook (Twilio only).
    pub webhook: Option<Arc<dyn roomkit_channels::WebhookReceiver>>,
    /// The media socket endpoint.
    pub media: Arc<dyn roomkit_voice::MediaEndpoint>,
}

/// Builds a validated voice channel.
///
/// # Errors
/// When a provider cannot be built (already checked at load).
pub fn build(spec: &VoiceSpec, browser: &BrowserAuth) -> anyhow::Result<BuiltVoice> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let stt = registry::stt_provider(&spec.stt, &env)?;
    let tts = registry::tts_provider(&spec.tts, &env)?;
    let channel = VoiceChannel::new(spec.id.as_str(), spec.settings.clone(), stt, tts)?;
    if spec.transport == roomkit_voice::browser::TRANSPORT {
        let keys: Vec<String> = browser.key.iter().cloned().collect();
        let open = browser.open;
        let media = Arc::new(VoiceMediaEndpoint::new(
            channel.clone(),
            Arc::new(roomkit_voice::browser::BrowserBackend::new()),
            move |url, headers| {
                open || (!keys.is_empty()
                    && roomkit_voice::browser::authorize_api_key(&keys, url, headers))
            },
        ));
        return Ok(BuiltVoice {
            channel,
            webhook: None,
            media,
        });
    }
    let token = spec.auth_token.clone().unwrap_or_else(|| Secret::new(""));
    let webhook = Arc::new(TwilioVoiceWebhook::new(token.clone()));
    let media = Arc::new(VoiceMediaEndpoint::new(
        channel.clone(),
        Arc::new(TwilioMediaStreams::new()),
        move |url, headers| verify_upgrade(token.expose(), url, headers),
    ));
    Ok(BuiltVoice {
        channel,
        webhook: Some(webhook),
        media,
    })
}
