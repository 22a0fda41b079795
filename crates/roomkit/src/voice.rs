//! `[[channels]] type = "voice"`: a voice channel, its transport, its speech
//! providers (by name, through `roomkit_voice::registry`), its audio
//! pipeline and (Twilio) its outbound calls, validated at load; and the
//! parts `serve` mounts.

use std::sync::Arc;

use roomkit_audio::turn::{HeuristicTurnConfig, InterruptionConfig};
use roomkit_audio::{
    AudioFormat, AudioPipeline, AudioPipelineConfig, AudioPipelineContract, TransportCapabilities,
};
use roomkit_channels::Secret;
use roomkit_core::model::{ChannelId, HookTrigger};
use roomkit_core::{
    AttachOptions, HookError, HookInput, HookRegistration, RoomKitError, SideEffects,
};
use roomkit_voice::registry::{self, ProviderSpec};
use roomkit_voice::twilio::{StreamTokens, TwilioMediaStreams, TwilioVoiceWebhook, verify_upgrade};
use roomkit_voice::twilio_rest::{DEFAULT_API_BASE, TwilioDialSettings, TwilioDialer};
use roomkit_voice::{CallDialer, VoiceChannel, VoiceMediaEndpoint, VoiceSettings};
use serde::Deserialize;

use crate::config::{ConfigError, Ctx, Env};

/// The transport name of SIP voice channels.
pub const SIP: &str = "sip";

/// The env var holding the Twilio auth token when `auth_token_env` is not set.
pub const DEFAULT_TOKEN_ENV: &str = "TWILIO_AUTH_TOKEN";

/// The env var holding the Twilio account SID when `account_sid_env` is not
/// set.
pub const DEFAULT_ACCOUNT_SID_ENV: &str = "TWILIO_ACCOUNT_SID";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VoiceSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
    transport: String,
    auth_token_env: Option<String>,
    // Outbound calls (Twilio).
    account_sid_env: Option<String>,
    from: Option<String>,
    api_base: Option<String>,
    stt: serde_json::Map<String, serde_json::Value>,
    tts: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pipeline: AudioPipelineConfig,
    interruption: Option<InterruptionConfig>,
    turn: Option<HeuristicTurnConfig>,
    voice: Option<String>,
    min_chunk_chars: Option<usize>,
    agents: Option<Vec<String>>,
    stt_timeout_ms: Option<u64>,
    tts_timeout_ms: Option<u64>,
    sip: Option<crate::sip::SipSection>,
    webrtc: Option<WebRtcSection>,
}

/// `[channels.webrtc]`: where browser media is received.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebRtcSection {
    host: Option<String>,
    public: Option<String>,
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
    /// Outbound calls (`twilio` only).
    pub outbound: Option<OutboundSpec>,
    /// Channels attached to a room the router creates for a call.
    pub agents: Vec<String>,
    /// The SIP user agent (`sip` only).
    pub sip: Option<crate::sip::SipSpec>,
    /// Where browser media is received (`webrtc` only).
    pub webrtc: Option<roomkit_webrtc::WebRtcConfig>,
}

/// What a Twilio voice channel places outbound calls with; missing pieces
/// are reported when a call is asked for.
#[derive(Debug, Clone)]
pub struct OutboundSpec {
    /// The account SID, when its variable is set.
    pub account_sid: Option<String>,
    /// The variable it is read from.
    pub account_sid_env: String,
    /// The variable the auth token is read from.
    pub auth_token_env: String,
    /// The number calls come from.
    pub from: Option<String>,
    /// Twilio's API base URL.
    pub api_base: String,
    /// `[server] public_url`: where Twilio reaches the voice webhook.
    pub public_url: Option<String>,
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
    public_url: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<VoiceSpec, ConfigError> {
    let mut s: VoiceSection = ctx.section(key, table)?;
    if ![
        "twilio",
        roomkit_voice::browser::TRANSPORT,
        SIP,
        roomkit_webrtc::TRANSPORT,
    ]
    .contains(&s.transport.as_str())
    {
        return Err(ctx.err(
            format!("{key}.transport"),
            format!(
                "{:?} is not a voice transport of this build (twilio, browser, sip, webrtc)",
                s.transport
            ),
        ));
    }
    if s.transport != roomkit_webrtc::TRANSPORT && s.webrtc.is_some() {
        return Err(ctx.err(
            format!("{key}.webrtc"),
            "is a setting of transport \"webrtc\" only",
        ));
    }
    let webrtc = if s.transport == roomkit_webrtc::TRANSPORT {
        let section = s.webrtc.take();
        let ip =
            |name: &str, value: Option<&String>| -> Result<Option<std::net::IpAddr>, ConfigError> {
                value
                    .map(|v| {
                        v.parse().map_err(|_| {
                            ctx.err(
                                format!("{key}.webrtc.{name}"),
                                format!("{v:?} is not an IP address"),
                            )
                        })
                    })
                    .transpose()
            };
        let mut config = roomkit_webrtc::WebRtcConfig::default();
        if let Some(section) = &section {
            if let Some(host) = ip("host", section.host.as_ref())? {
                config.host = host;
            }
            config.public = ip("public", section.public.as_ref())?;
        }
        Some(config)
    } else {
        None
    };
    if s.transport != SIP && s.sip.is_some() {
        return Err(ctx.err(
            format!("{key}.sip"),
            "is a setting of transport \"sip\" only",
        ));
    }
    if s.transport != "twilio" && s.auth_token_env.is_some() {
        return Err(ctx.err(
            format!("{key}.auth_token_env"),
            "is a setting of transport \"twilio\" only",
        ));
    }
    let token_env = s.auth_token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV);
    let auth_token = env.var(token_env).map(Secret::new);
    if auth_token.is_none() && s.transport == "twilio" {
        warnings.push(format!(
            "{key}: {token_env} is not set; Twilio voice webhooks and media sockets will be refused"
        ));
    }
    let sip = match s.sip.take() {
        Some(section) if s.transport == SIP => {
            Some(crate::sip::parse(ctx, key, section, env, warnings)?)
        }
        None if s.transport == SIP => Some(crate::sip::parse(
            ctx,
            key,
            toml::Value::Table(toml::Table::new())
                .try_into()
                .map_err(|e| ctx.err(format!("{key}.sip"), format!("{e}")))?,
            env,
            warnings,
        )?),
        _ => None,
    };
    let outbound = outbound(
        ctx,
        key,
        &s,
        env,
        auth_token.is_some(),
        public_url,
        warnings,
    )?;
    let lookup = |name: &str| env.var(name);
    let stt = ProviderSpec::from_table(s.stt)
        .map_err(|e| ctx.err(format!("{key}.stt"), config_problem(&e)))?;
    registry::stt_provider(&stt, &lookup)
        .map_err(|e| ctx.err(format!("{key}.stt"), config_problem(&e)))?;
    let tts = ProviderSpec::from_table(s.tts)
        .map_err(|e| ctx.err(format!("{key}.tts"), config_problem(&e)))?;
    registry::tts_provider(&tts, &lookup)
        .map_err(|e| ctx.err(format!("{key}.tts"), config_problem(&e)))?;
    check_pipeline(ctx, key, &s.transport, &s.pipeline)?;
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
        outbound,
        agents: s.agents.unwrap_or_default(),
        sip,
        webrtc,
    })
}

/// Builds the channel's audio pipeline once for its transport's audio, as
/// a call does at its start, so that a pipeline no call could run (an
/// internal rate without whole 10 ms blocks, a VAD that does not take the
/// rate, stereo, ...) is a config error instead of a hang-up of every call.
/// Debug taps are left out: building them creates their directory.
fn check_pipeline(
    ctx: &Ctx<'_>,
    key: &str,
    transport: &str,
    pipeline: &AudioPipelineConfig,
) -> Result<(), ConfigError> {
    let rates: &[u32] = if transport == roomkit_voice::browser::TRANSPORT {
        &[roomkit_voice::browser::SAMPLE_RATE]
    } else if transport == roomkit_webrtc::TRANSPORT {
        &[roomkit_webrtc::SAMPLE_RATE]
    } else if transport == SIP {
        // G.711 calls at 8 kHz, Opus calls at 16 kHz.
        &[8_000, 16_000]
    } else {
        &[roomkit_voice::twilio::SAMPLE_RATE]
    };
    for &rate in rates {
        check_pipeline_at(ctx, key, rate, pipeline)?;
    }
    Ok(())
}

fn check_pipeline_at(
    ctx: &Ctx<'_>,
    key: &str,
    rate: u32,
    pipeline: &AudioPipelineConfig,
) -> Result<(), ConfigError> {
    let format = AudioFormat::pcm_mono(rate);
    let internal = pipeline
        .resampler
        .as_ref()
        .map_or(format, |r| r.internal_format());
    let mut probe = pipeline.clone();
    probe.debug_taps = None;
    let contract = AudioPipelineContract {
        internal_format: internal,
        transport_inbound_format: format,
        transport_outbound_format: format,
    };
    AudioPipeline::from_config(&probe, contract, TransportCapabilities::default())
        .map(drop)
        .map_err(|e| {
            ctx.err(
                format!("{key}.pipeline"),
                format!("no call could run this audio pipeline: {e}"),
            )
        })
}

/// Checks a voice channel's `agents` against the configured channel ids.
pub(crate) fn check_agents(
    ctx: &Ctx<'_>,
    key: &str,
    spec: &VoiceSpec,
    ids: &std::collections::HashSet<String>,
) -> Result<(), ConfigError> {
    for (i, agent) in spec.agents.iter().enumerate() {
        if *agent == spec.id || !ids.contains(agent) {
            return Err(ctx.err(
                format!("{key}.agents[{i}]"),
                format!("{agent:?} is not another configured channel"),
            ));
        }
    }
    Ok(())
}

/// The hook that gives a call's new room its agents: when the router
/// creates a room for a call of this channel (the room's only binding is
/// this voice channel), the `agents` channels are attached before the
/// call's first message is committed, as an integrator's room would have
/// them. Rooms created any other way are left alone.
pub fn agents_hook(spec: &VoiceSpec) -> Option<HookRegistration> {
    if spec.agents.is_empty() {
        return None;
    }
    let voice = ChannelId::from(spec.id.as_str());
    let agents: Arc<Vec<ChannelId>> = Arc::new(
        spec.agents
            .iter()
            .map(|a| ChannelId::from(a.as_str()))
            .collect(),
    );
    Some(HookRegistration::asynchronous(
        HookTrigger::OnRoomCreated,
        format!("voice-agents:{}", spec.id),
        move |input: HookInput| {
            let (voice, agents) = (voice.clone(), agents.clone());
            async move {
                let Some(room) = input.room_id else {
                    return Ok(SideEffects::default());
                };
                let bindings = input
                    .kit
                    .list_bindings(&room)
                    .await
                    .map_err(|e| HookError::new(e.to_string()))?;
                if !(bindings.len() == 1 && bindings[0].channel_id == voice) {
                    return Ok(SideEffects::default());
                }
                for agent in agents.iter() {
                    match input
                        .kit
                        .attach_channel(&room, agent, AttachOptions::default())
                        .await
                    {
                        Ok(_) | Err(RoomKitError::ChannelAlreadyAttached { .. }) => {
                            tracing::info!(target: "roomkit.voice.call", room_id = %room, channel_id = %agent, "agent attached to the call's new room");
                        }
                        Err(e) => {
                            tracing::warn!(target: "roomkit.voice.call", room_id = %room, channel_id = %agent, error = %e, "could not attach an agent to the call's new room");
                        }
                    }
                }
                Ok(SideEffects::default())
            }
        },
    ))
}

/// The outbound-call keys of a voice table: refused on a browser channel;
/// on a Twilio channel checked, with a warning naming what is missing when
/// some of them are set but calls still cannot be placed.
fn outbound(
    ctx: &Ctx<'_>,
    key: &str,
    s: &VoiceSection,
    env: &dyn Env,
    has_token: bool,
    public_url: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<OutboundSpec>, ConfigError> {
    let set = [
        ("account_sid_env", s.account_sid_env.is_some()),
        ("from", s.from.is_some()),
        ("api_base", s.api_base.is_some()),
    ];
    if s.transport != "twilio" {
        if let Some((name, _)) = set.iter().find(|(_, on)| *on) {
            return Err(ctx.err(
                format!("{key}.{name}"),
                "is a setting of transport \"twilio\" only",
            ));
        }
        return Ok(None);
    }
    if let Some(from) = &s.from
        && !roomkit_voice::dial::dialable(from)
    {
        return Err(ctx.err(
            format!("{key}.from"),
            format!("{from:?} must be an E.164 number (+ and 8 to 15 digits) or a sip: or client: address"),
        ));
    }
    let api_base = match &s.api_base {
        Some(u) => {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            if !rest.is_some_and(|r| {
                !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace)
            }) {
                return Err(ctx.err(
                    format!("{key}.api_base"),
                    format!("{u:?} must be an http:// or https:// URL with a host"),
                ));
            }
            u.trim_end_matches('/').to_owned()
        }
        None => DEFAULT_API_BASE.to_owned(),
    };
    let sid_env = s
        .account_sid_env
        .clone()
        .unwrap_or_else(|| DEFAULT_ACCOUNT_SID_ENV.to_owned());
    if sid_env.trim().is_empty() {
        return Err(ctx.err(
            format!("{key}.account_sid_env"),
            "must name an environment variable",
        ));
    }
    let account_sid = env.var(&sid_env);
    if let Some(sid) = &account_sid
        && !sid.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ctx.err(
            format!("{key}.account_sid_env"),
            format!("{sid_env} does not hold an account SID (letters and digits only)"),
        ));
    }
    let token_env = s.auth_token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV);
    let mut missing = Vec::new();
    if s.from.is_none() {
        missing.push("from".to_owned());
    }
    if account_sid.is_none() {
        missing.push(sid_env.clone());
    }
    if !has_token {
        missing.push(token_env.to_owned());
    }
    if public_url.is_none() {
        missing.push("[server] public_url".to_owned());
    }
    if set.iter().any(|(_, on)| *on) && !missing.is_empty() {
        warnings.push(format!(
            "{key}: outbound calls (POST /voice/calls) will be refused until these are set: {}",
            missing.join(", ")
        ));
    }
    Ok(Some(OutboundSpec {
        account_sid,
        account_sid_env: sid_env,
        auth_token_env: token_env.to_owned(),
        from: s.from.clone(),
        api_base,
        public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
    }))
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
    /// The media socket endpoint (none for SIP: its media is RTP).
    pub media: Option<Arc<dyn roomkit_voice::MediaEndpoint>>,
    /// The outbound call dialer (Twilio only).
    pub dialer: Option<Arc<dyn CallDialer>>,
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
            media: Some(media),
            dialer: None,
        });
    }
    if let Some(config) = &spec.webrtc {
        // Who may open a call: as for the browser socket.
        let keys: Vec<String> = browser.key.iter().cloned().collect();
        let open = browser.open;
        let media = Arc::new(VoiceMediaEndpoint::new(
            channel.clone(),
            Arc::new(roomkit_webrtc::WebRtcBackend::new(config.clone())),
            move |url, headers| {
                open || (!keys.is_empty()
                    && roomkit_voice::browser::authorize_api_key(&keys, url, headers))
            },
        ));
        return Ok(BuiltVoice {
            channel,
            webhook: None,
            media: Some(media),
            dialer: None,
        });
    }
    if spec.transport == SIP {
        // The SIP user agent starts with the server (crate::sip::start).
        return Ok(BuiltVoice {
            channel,
            webhook: None,
            media: None,
            dialer: None,
        });
    }
    let token = spec.auth_token.clone().unwrap_or_else(|| Secret::new(""));
    // The webhook passes each call a stream token the transport checks on
    // `start`: the upgrade's signature alone is the same for every call.
    let tokens = StreamTokens::new(token.expose(), spec.id.as_str());
    let webhook = Arc::new(TwilioVoiceWebhook::new(token.clone()).stream_tokens(tokens.clone()));
    let media = Arc::new(VoiceMediaEndpoint::new(
        channel.clone(),
        Arc::new(TwilioMediaStreams::with_stream_tokens(tokens)),
        move |url, headers| verify_upgrade(token.expose(), url, headers),
    ));
    let dialer = match &spec.outbound {
        Some(o) => {
            let dialer: Arc<dyn CallDialer> = Arc::new(TwilioDialer::new(
                spec.id.as_str(),
                TwilioDialSettings {
                    account_sid: o.account_sid.clone(),
                    account_sid_env: o.account_sid_env.clone(),
                    auth_token: spec.auth_token.clone(),
                    auth_token_env: o.auth_token_env.clone(),
                    from: o.from.clone(),
                    public_url: o.public_url.clone(),
                    api_base: o.api_base.clone(),
                    agents: spec
                        .agents
                        .iter()
                        .map(|a| ChannelId::from(a.as_str()))
                        .collect(),
                },
            )?);
            Some(dialer)
        }
        None => None,
    };
    Ok(BuiltVoice {
        channel,
        webhook: Some(webhook),
        media: Some(media),
        dialer,
    })
}
