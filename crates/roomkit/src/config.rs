//! The config file of `roomkit serve` (TOML), read with exactly the keys of
//! the server contract and validated once into [`Settings`], the runtime
//! values. Unknown keys are errors; secrets are only ever named by an
//! environment variable, read here, once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use roomkit_core::model::{ChannelType, HookExecution, HookTrigger};
use roomkit_server::{HttpHookConfig, OnError};

pub use crate::transport::TransportSpec;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The default listening address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The default store.
pub const DEFAULT_STORE: &str = "sqlite://roomkit.db";

/// A problem with the configuration: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config error{}: {key}: {problem}", file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default())]
pub struct ConfigError {
    /// The file, when the problem is in one.
    pub file: Option<PathBuf>,
    /// The key, e.g. `channels[1].provider`, or the flag, e.g. `--addr`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    rooms: RoomsSection,
    /// Kept as tables: each is read by the shape of its `type`.
    #[serde(default)]
    channels: Vec<toml::Table>,
    #[serde(default)]
    hooks: Vec<HookSection>,
    #[serde(default)]
    analytics: Option<crate::analytics::AnalyticsSection>,
    #[serde(default)]
    identity: Option<IdentitySection>,
    #[serde(default)]
    telemetry: Option<TelemetrySection>,
}

/// `[telemetry]`: OTLP/HTTP trace export.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetrySection {
    /// Collector base URL; `/v1/traces` is appended.
    otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    service_name: Option<String>,
    /// Fraction of traces kept.
    sample_ratio: Option<f64>,
    /// Variable holding request headers, `key=value,key2=value2`.
    headers_env: Option<String>,
}

/// `[identity]`: who sent an inbound message (RFC §11).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitySection {
    /// `store` (identities created over REST) or `http` (ask `url`).
    resolver: String,
    /// The resolver service, for `http`.
    url: Option<String>,
    /// How long resolution may take.
    timeout_ms: Option<i64>,
    /// Channel types that trigger resolution; all when absent.
    channel_types: Option<Vec<String>>,
}

/// Which identity resolver runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverSpec {
    /// The built-in resolver over the store's identities.
    Store,
    /// An integrator's service.
    Http(String),
}

/// Identity resolution, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySpec {
    /// The resolver.
    pub resolver: ResolverSpec,
    /// Its time limit.
    pub timeout: Duration,
    /// Channel types it runs for; `None` for all.
    pub channel_types: Option<Vec<ChannelType>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    /// Listening address.
    addr: Option<String>,
    /// Variable holding the API key.
    api_key_env: Option<String>,
    /// Public URL webhooks are signed against.
    public_url: Option<String>,
    /// Requests per second per API key.
    rate_limit_per_key: Option<i64>,
    /// Serve without a key when `api_key_env` names an unset variable.
    open: Option<bool>,
    /// Keys scoped to one organization each.
    #[serde(default)]
    tenant_keys: Vec<TenantKeySection>,
    /// Inbound WebSocket frames per second per connection.
    ws_rate_limit_per_connection: Option<i64>,
    /// Webhook messages per minute per sender and route.
    webhook_rate_limit_per_sender: Option<i64>,
    /// Webhook messages per minute and route from senders not seen before.
    webhook_new_senders_per_minute: Option<i64>,
    /// Time a request head may take to arrive.
    header_timeout_ms: Option<i64>,
    /// Time a keep-alive connection may stay idle.
    idle_timeout_ms: Option<i64>,
    /// Concurrent connections.
    max_connections: Option<i64>,
    /// Concurrent connections of one client address.
    max_connections_per_ip: Option<i64>,
    /// Concurrent WebSocket connections per API key (or client address).
    ws_max_connections_per_key: Option<i64>,
    /// Time one WebSocket write may wait for a client that does not read.
    ws_send_timeout_ms: Option<i64>,
}

/// `[[server.tenant_keys]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantKeySection {
    /// The organization the key is confined to.
    organization_id: String,
    /// Variable holding the key.
    key_env: String,
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    /// `sqlite://PATH`, `memory://` or `postgres://...`.
    url: Option<String>,
}

/// `[rooms]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsSection {
    /// RFC 8.3 chain-depth limit, at least 1.
    max_chain_depth: Option<i64>,
    /// How close to their deadline room timers fire.
    timer_resolution_ms: Option<i64>,
    /// Bound of the pre-commit phase of the pipeline.
    process_timeout_ms: Option<i64>,
}

/// `[[channels]]` of type `websocket`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebSocketSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
}

/// `[[channels]]` of type `ai`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AiSection {
    id: String,
    #[serde(rename = "type")]
    _type: String,
    provider: String,
    model: Option<String>,
    base_url: Option<String>,
    api_key_env: Option<String>,
    system_prompt: Option<String>,
}

/// `[[hooks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HookSection {
    name: String,
    trigger: String,
    execution: Option<String>,
    url: String,
    timeout_ms: Option<i64>,
    priority: Option<i64>,
    on_error: Option<String>,
}

/// A channel to register, as validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    /// A WebSocket channel.
    WebSocket {
        /// Channel id.
        id: String,
    },
    /// The built-in echo agent.
    Echo {
        /// Channel id.
        id: String,
    },
    /// An AI channel with a real provider (OpenAI-compatible or Anthropic).
    Ai(AiSpec),
    /// A transport channel: SMS, email, HTTP webhook or Telegram.
    Transport(TransportSpec),
    /// A voice channel (Twilio Media Streams).
    Voice(Box<crate::voice::VoiceSpec>),
}

impl ChannelSpec {
    /// The channel id.
    pub fn id(&self) -> &str {
        match self {
            Self::WebSocket { id } | Self::Echo { id } => id,
            Self::Ai(a) => a.id(),
            Self::Transport(t) => &t.id,
            Self::Voice(v) => &v.id,
        }
    }
}

/// The configuration of a model-backed AI channel, validated, with its
/// API key already read from the environment.
#[derive(Debug, Clone)]
pub struct AiSpec(pub Box<roomkit_ai::AiChannelConfig>);

impl AiSpec {
    /// The channel id.
    pub fn id(&self) -> &str {
        &self.0.id
    }
}

// Specs compare by their printed form (the key prints redacted), which is
// what tests need.
impl PartialEq for AiSpec {
    fn eq(&self, other: &Self) -> bool {
        format!("{:?}", self.0) == format!("{:?}", other.0)
    }
}

impl Eq for AiSpec {}

/// The store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Its URL.
    pub url: String,
    /// True when nobody asked for it (the built-in default).
    pub is_default: bool,
}

/// Runtime values of `roomkit serve`.
#[derive(Debug)]
pub struct Settings {
    /// Listening address.
    pub addr: SocketAddr,
    /// The API key, read from its variable; `None` when auth is off.
    pub api_key: Option<String>,
    /// The public URL webhooks are signed against.
    pub public_url: Option<String>,
    /// Requests per second per key.
    pub rate_limit_per_key: Option<u32>,
    /// The store.
    pub store: StoreSpec,
    /// Chain-depth limit.
    pub max_chain_depth: u32,
    /// Room timer resolution.
    pub timer_resolution: Duration,
    /// Pre-commit processing timeout.
    pub process_timeout: Duration,
    /// Channels to register.
    pub channels: Vec<ChannelSpec>,
    /// HTTP hooks to register.
    pub hooks: Vec<HttpHookConfig>,
    /// Identity resolution, when configured.
    pub identity: Option<IdentitySpec>,
    /// Call analytics (`[analytics]`).
    pub analytics: crate::analytics::AnalyticsSettings,
    /// Trace export.
    pub telemetry: crate::telemetry::TelemetrySettings,
    /// Warnings to log once logging is up.
    pub warnings: Vec<String>,
    /// Keys scoped to one organization each, read from their variables.
    pub tenant_keys: Vec<roomkit_server::auth::TenantKey>,
    /// Inbound WebSocket frames per second per connection.
    pub ws_rate_limit_per_connection: Option<u32>,
    /// Webhook messages per minute per sender and route.
    pub webhook_rate_limit_per_sender: Option<u32>,
    /// Webhook messages per minute and route from new senders.
    pub webhook_new_senders_per_minute: Option<u32>,
    /// Connection caps and timeouts (`[server]`).
    pub limits: roomkit_server::conn::ConnectionLimits,
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--addr`.
    pub addr: Option<String>,
    /// `--store`.
    pub store: Option<String>,
}

/// Reads the environment: a seam so tests need not change the process's.
pub trait Env {
    /// The value of a variable, when set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Where values come from, for error messages.
pub(crate) struct Ctx<'a> {
    file: Option<&'a Path>,
}

impl Ctx<'_> {
    /// An error about `key` in this file.
    pub(crate) fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.map(Path::to_path_buf),
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// Reads a table into a section, naming the key of any problem.
    pub(crate) fn section<T: DeserializeOwned>(
        &self,
        prefix: &str,
        table: toml::Table,
    ) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(table).map_err(|e| {
            let path = e.path().to_string();
            let key = match (prefix.is_empty(), path.as_str()) {
                (true, ".") => "(file)".to_owned(),
                (true, p) => p.to_owned(),
                (false, ".") => prefix.to_owned(),
                (false, p) => format!("{prefix}.{p}"),
            };
            self.err(key, e.into_inner().message().to_owned())
        })
    }
}

/// Loads and validates the configuration: the file when given, then the
/// command-line overrides.
///
/// # Errors
/// A [`ConfigError`] naming the file, key and problem.
pub fn load(
    file: Option<&Path>,
    overrides: &Overrides,
    env: &dyn Env,
) -> Result<Settings, ConfigError> {
    let ctx = Ctx { file };
    let parsed = match file {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ctx.err("(file)", format!("cannot read the file: {e}")))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| ctx.err("(syntax)", e.to_string().trim().replace('\n', " ")))?;
            ctx.section("", table)?
        }
    };
    validate(&ctx, parsed, overrides, env)
}

fn positive_ms(
    ctx: &Ctx<'_>,
    key: &str,
    v: Option<i64>,
    default: u64,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(Duration::from_millis(default)),
        Some(n) if n > 0 => Ok(Duration::from_millis(n as u64)),
        Some(n) => Err(ctx.err(
            key,
            format!("must be a positive number of milliseconds, got {n}"),
        )),
    }
}

/// A count key of `[server]` that must be at least 1.
fn positive_count(ctx: &Ctx<'_>, key: &str, v: Option<i64>) -> Result<Option<usize>, ConfigError> {
    match v {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(n) => Err(ctx.err(key, format!("must be at least 1, got {n}"))),
    }
}

/// The connection caps and timeouts of `[server]`.
fn connection_limits(
    ctx: &Ctx<'_>,
    s: &ServerSection,
) -> Result<roomkit_server::conn::ConnectionLimits, ConfigError> {
    use roomkit_server::conn as c;
    Ok(c::ConnectionLimits {
        header_timeout: positive_ms(
            ctx,
            "server.header_timeout_ms",
            s.header_timeout_ms,
            c::DEFAULT_HEADER_TIMEOUT.as_millis() as u64,
        )?,
        idle_timeout: positive_ms(
            ctx,
            "server.idle_timeout_ms",
            s.idle_timeout_ms,
            c::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
        )?,
        max_connections: positive_count(ctx, "server.max_connections", s.max_connections)?,
        max_connections_per_ip: positive_count(
            ctx,
            "server.max_connections_per_ip",
            s.max_connections_per_ip,
        )?
        .unwrap_or(c::DEFAULT_MAX_CONNECTIONS_PER_IP),
        ws_connections_per_key: positive_count(
            ctx,
            "server.ws_max_connections_per_key",
            s.ws_max_connections_per_key,
        )?
        .unwrap_or(c::DEFAULT_WS_CONNECTIONS_PER_KEY),
        ws_send_timeout: positive_ms(
            ctx,
            "server.ws_send_timeout_ms",
            s.ws_send_timeout_ms,
            c::DEFAULT_WS_SEND_TIMEOUT.as_millis() as u64,
        )?,
    })
}

fn check_store_url(url: &str) -> Result<(), String> {
    if url == "memory://" || url == "memory" {
        return Ok(());
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://roomkit.db".into());
        }
        return Ok(());
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(());
    }
    Err(format!(
        "{url:?} is not a store URL; use sqlite://PATH, memory:// or postgres://USER:PASS@HOST:PORT/DB"
    ))
}

fn validate(
    ctx: &Ctx<'_>,
    f: FileConfig,
    o: &Overrides,
    env: &dyn Env,
) -> Result<Settings, ConfigError> {
    let mut warnings = Vec::new();
    let (addr_key, addr_text) = match (&o.addr, &f.server.addr) {
        (Some(a), _) => ("--addr", a.clone()),
        (None, Some(a)) => ("server.addr", a.clone()),
        (None, None) => ("server.addr", DEFAULT_ADDR.to_owned()),
    };
    let addr: SocketAddr = addr_text.parse().map_err(|_| {
        let e = ctx.err(
            addr_key,
            format!("{addr_text:?} is not a socket address like 127.0.0.1:8080"),
        );
        if addr_key == "--addr" {
            ConfigError { file: None, ..e }
        } else {
            e
        }
    })?;
    let api_key = match &f.server.api_key_env {
        Some(name) if name.trim().is_empty() => {
            return Err(ctx.err("server.api_key_env", "must name an environment variable"));
        }
        Some(name) => {
            let key = env.var(name);
            if key.is_none() {
                if f.server.open != Some(true) {
                    return Err(ctx.err(
                        "server.api_key_env",
                        format!("{name} is not set or is empty; set it, or set server.open = true to serve without a key"),
                    ));
                }
                warnings.push(format!("server.api_key_env names {name}, which is not set, and server.open = true: the API is served without a key"));
            }
            key
        }
        None => None,
    };
    let mut tenant_keys: Vec<roomkit_server::auth::TenantKey> = Vec::new();
    let mut secrets: Vec<(String, String)> = api_key
        .iter()
        .map(|k| ("server.api_key_env".to_owned(), k.clone()))
        .collect();
    for (i, t) in f.server.tenant_keys.iter().enumerate() {
        let key = format!("server.tenant_keys[{i}]");
        if t.organization_id.trim().is_empty() {
            return Err(ctx.err(
                format!("{key}.organization_id"),
                "must name an organization",
            ));
        }
        if t.key_env.trim().is_empty() {
            return Err(ctx.err(
                format!("{key}.key_env"),
                "must name an environment variable",
            ));
        }
        let Some(secret) = env.var(&t.key_env) else {
            return Err(ctx.err(
                format!("{key}.key_env"),
                format!("{} is not set or is empty", t.key_env),
            ));
        };
        if let Some((other, _)) = secrets.iter().find(|(_, s)| *s == secret) {
            return Err(ctx.err(
                format!("{key}.key_env"),
                format!(
                    "{} holds the same key as {other}; every key must be different",
                    t.key_env
                ),
            ));
        }
        secrets.push((format!("{key}.key_env"), secret.clone()));
        tenant_keys.push(roomkit_server::auth::TenantKey {
            organization_id: t.organization_id.as_str().into(),
            key: roomkit_server::auth::ApiKey::new(secret),
        });
    }
    if api_key.is_none() && tenant_keys.is_empty() && !addr.ip().is_loopback() {
        warnings.push(format!("serving without an API key on {addr}, which is not a loopback address: anyone who can reach it can use the whole API"));
    }
    if let Some(url) = &f.server.public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ctx.err(
            "server.public_url",
            format!("{url:?} must start with http:// or https://"),
        ));
    }
    let rate_limit_per_key = match f.server.rate_limit_per_key {
        None => None,
        Some(n) if n >= 1 && n <= i64::from(u32::MAX) => Some(n as u32),
        Some(n) => {
            return Err(ctx.err(
                "server.rate_limit_per_key",
                format!("must be at least 1 request per second, got {n}"),
            ));
        }
    };
    let rate = |key: &str, v: Option<i64>, unit: &str| match v {
        None => Ok(None),
        Some(n) if n >= 1 && n <= i64::from(u32::MAX) => Ok(Some(n as u32)),
        Some(n) => Err(ctx.err(key, format!("must be at least 1 {unit}, got {n}"))),
    };
    let ws_rate_limit_per_connection = rate(
        "server.ws_rate_limit_per_connection",
        f.server.ws_rate_limit_per_connection,
        "frame per second",
    )?
    .or(rate_limit_per_key);
    let webhook_rate_limit_per_sender = rate(
        "server.webhook_rate_limit_per_sender",
        f.server.webhook_rate_limit_per_sender,
        "message per minute",
    )?;
    let webhook_new_senders_per_minute = rate(
        "server.webhook_new_senders_per_minute",
        f.server.webhook_new_senders_per_minute,
        "message per minute",
    )?;

    let store = match (&o.store, &f.store.url) {
        (Some(u), _) => {
            check_store_url(u).map_err(|p| ConfigError {
                file: None,
                key: "--store".into(),
                problem: p,
            })?;
            StoreSpec {
                url: u.clone(),
                is_default: false,
            }
        }
        (None, Some(u)) => {
            check_store_url(u).map_err(|p| ctx.err("store.url", p))?;
            StoreSpec {
                url: u.clone(),
                is_default: false,
            }
        }
        (None, None) => StoreSpec {
            url: DEFAULT_STORE.into(),
            is_default: true,
        },
    };

    let max_chain_depth = match f.rooms.max_chain_depth {
        None => 5,
        Some(n) if n >= 1 && n <= i64::from(u32::MAX) => n as u32,
        Some(n) => {
            return Err(ctx.err(
                "rooms.max_chain_depth",
                format!("must be at least 1 (the limit cannot be disabled), got {n}"),
            ));
        }
    };
    let timer_resolution = positive_ms(
        ctx,
        "rooms.timer_resolution_ms",
        f.rooms.timer_resolution_ms,
        1000,
    )?;
    let process_timeout = positive_ms(
        ctx,
        "rooms.process_timeout_ms",
        f.rooms.process_timeout_ms,
        30_000,
    )?;

    let mut channels = Vec::new();
    let mut ids = HashSet::new();
    for (i, table) in f.channels.into_iter().enumerate() {
        let key = format!("channels[{i}]");
        let spec = channel(
            ctx,
            &key,
            table,
            env,
            f.server.public_url.as_deref(),
            &mut warnings,
        )?;
        let id = spec.id().to_owned();
        if id.trim().is_empty() || id == roomkit_core::model::SYSTEM_CHANNEL_ID {
            return Err(ctx.err(
                format!("{key}.id"),
                format!("{id:?} cannot be a channel id"),
            ));
        }
        if !ids.insert(id.clone()) {
            return Err(ctx.err(
                format!("{key}.id"),
                format!("channel id {id:?} is used twice"),
            ));
        }
        channels.push(spec);
    }
    for (i, spec) in channels.iter().enumerate() {
        if let ChannelSpec::Voice(v) = spec {
            crate::voice::check_agents(ctx, &format!("channels[{i}]"), v, &ids)?;
            if let Some(sip) = &v.sip {
                crate::sip::check_routes(ctx, &format!("channels[{i}]"), &v.id, sip, &ids)?;
            }
        }
    }
    if channels.is_empty() {
        channels = default_channels(env, &mut warnings);
    }

    let mut hooks = Vec::new();
    let mut names = HashSet::new();
    for (i, h) in f.hooks.into_iter().enumerate() {
        let key = format!("hooks[{i}]");
        if h.name.trim().is_empty() {
            return Err(ctx.err(format!("{key}.name"), "must not be empty"));
        }
        if !names.insert(h.name.clone()) {
            return Err(ctx.err(
                format!("{key}.name"),
                format!("hook name {:?} is used twice", h.name),
            ));
        }
        let trigger: HookTrigger = h.trigger.parse().map_err(|_| {
            ctx.err(format!("{key}.trigger"), format!("{:?} is not a hook trigger (lower snake case RFC names, e.g. before_broadcast)", h.trigger))
        })?;
        let execution = match h.execution.as_deref() {
            None => trigger.default_execution(),
            Some("sync") => HookExecution::Sync,
            Some("async") => HookExecution::Async,
            Some(other) => {
                return Err(ctx.err(
                    format!("{key}.execution"),
                    format!("{other:?} must be sync or async"),
                ));
            }
        };
        let url = HttpHookConfig::parse_url(&h.url)
            .map_err(|e| ctx.err(format!("{key}.url"), strip_key(&e.to_string())))?;
        let timeout = positive_ms(ctx, &format!("{key}.timeout_ms"), h.timeout_ms, 30_000)?;
        let priority = match h.priority {
            None => 0,
            Some(p) => i32::try_from(p)
                .map_err(|_| ctx.err(format!("{key}.priority"), format!("{p} is out of range")))?,
        };
        let on_error = match h.on_error.as_deref() {
            None | Some("allow") => OnError::Allow,
            Some("block") => OnError::Block,
            Some(other) => {
                return Err(ctx.err(
                    format!("{key}.on_error"),
                    format!("{other:?} must be allow or block"),
                ));
            }
        };
        hooks.push(HttpHookConfig {
            name: h.name,
            trigger,
            execution,
            url,
            timeout,
            priority,
            on_error,
        });
    }

    let analytics = crate::analytics::validate(f.analytics, env, &mut warnings).map_err(|p| {
        let e = ctx.err(p.key.as_str(), p.problem);
        // An environment variable is not in the file.
        if p.key.starts_with("analytics.") {
            e
        } else {
            ConfigError { file: None, ..e }
        }
    })?;

    let identity = f.identity.map(|i| identity(ctx, i)).transpose()?;

    let limits = connection_limits(ctx, &f.server)?;

    let telemetry = telemetry_settings(ctx, f.telemetry.unwrap_or_default(), env, &mut warnings)?;

    Ok(Settings {
        addr,
        api_key,
        public_url: f.server.public_url,
        rate_limit_per_key,
        store,
        max_chain_depth,
        timer_resolution,
        process_timeout,
        channels,
        hooks,
        identity,
        analytics,
        telemetry,
        warnings,
        tenant_keys,
        ws_rate_limit_per_connection,
        webhook_rate_limit_per_sender,
        webhook_new_senders_per_minute,
        limits,
    })
}

/// Validates `[identity]`.
fn identity(ctx: &Ctx<'_>, i: IdentitySection) -> Result<IdentitySpec, ConfigError> {
    let resolver = match (i.resolver.as_str(), i.url) {
        ("store", None) => ResolverSpec::Store,
        ("store", Some(_)) => {
            return Err(ctx.err("identity.url", "is only for resolver = \"http\""));
        }
        ("http", Some(url)) => {
            HttpHookConfig::parse_url(&url)
                .map_err(|e| ctx.err("identity.url", strip_key(&e.to_string())))?;
            ResolverSpec::Http(url)
        }
        ("http", None) => {
            return Err(ctx.err("identity.url", "is required for resolver = \"http\""));
        }
        (other, _) => {
            return Err(ctx.err(
                "identity.resolver",
                format!("{other:?} must be store or http"),
            ));
        }
    };
    let timeout = positive_ms(
        ctx,
        "identity.timeout_ms",
        i.timeout_ms,
        roomkit_core::DEFAULT_RESOLVER_TIMEOUT.as_millis() as u64,
    )?;
    let channel_types = match i.channel_types {
        None => None,
        Some(names) => Some(
            names
                .iter()
                .enumerate()
                .map(|(n, t)| {
                    t.parse::<ChannelType>().map_err(|_| {
                        ctx.err(
                            format!("identity.channel_types[{n}]"),
                            format!("{t:?} is not a channel type"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(IdentitySpec {
        resolver,
        timeout,
        channel_types,
    })
}

/// `[telemetry]` and the standard OpenTelemetry variables, which win over
/// the file: `OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used
/// as is), `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL), `OTEL_SERVICE_NAME`.
/// `OTEL_EXPORTER_OTLP_HEADERS` is read by the exporter itself.
fn telemetry_settings(
    ctx: &Ctx<'_>,
    t: TelemetrySection,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<crate::telemetry::TelemetrySettings, ConfigError> {
    use crate::telemetry::{DEFAULT_SERVICE_NAME, TelemetrySettings, parse_headers, traces_url};
    let env_err = |key: &str, problem: String| ConfigError {
        file: None,
        key: key.to_owned(),
        problem,
    };
    let check_url = |url: &str| -> Result<(), String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("{url:?} has no host"));
        }
        Ok(())
    };
    if let Some(url) = &t.otlp_endpoint {
        check_url(url).map_err(|p| ctx.err("telemetry.otlp_endpoint", p))?;
    }
    let service_name = match (&t.service_name, env.var("OTEL_SERVICE_NAME")) {
        (_, Some(name)) => name,
        (Some(name), None) if name.trim().is_empty() => {
            return Err(ctx.err("telemetry.service_name", "must not be empty"));
        }
        (Some(name), None) => name.clone(),
        (None, None) => DEFAULT_SERVICE_NAME.to_owned(),
    };
    let sample_ratio = match t.sample_ratio {
        None => 1.0,
        Some(r) if (0.0..=1.0).contains(&r) => r,
        Some(r) => {
            return Err(ctx.err(
                "telemetry.sample_ratio",
                format!("must be between 0.0 and 1.0, got {r}"),
            ));
        }
    };
    let headers = match &t.headers_env {
        Some(name) if name.trim().is_empty() => {
            return Err(ctx.err("telemetry.headers_env", "must name an environment variable"));
        }
        Some(name) => match env.var(name) {
            Some(text) => parse_headers(&text)
                .map_err(|p| ctx.err("telemetry.headers_env", format!("{name}: {p}")))?,
            None => {
                warnings.push(format!(
                    "telemetry.headers_env names {name}, which is not set: traces are sent without extra headers"
                ));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let disabled = env
        .var("OTEL_SDK_DISABLED")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let traces_endpoint = if disabled {
        None
    } else if let Some(url) = env.var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        check_url(&url).map_err(|p| env_err("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", p))?;
        Some(url)
    } else if let Some(url) = env.var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        check_url(&url).map_err(|p| env_err("OTEL_EXPORTER_OTLP_ENDPOINT", p))?;
        Some(traces_url(&url))
    } else {
        t.otlp_endpoint.as_deref().map(traces_url)
    };
    Ok(TelemetrySettings {
        traces_endpoint,
        service_name,
        sample_ratio,
        headers,
    })
}

fn strip_key(message: &str) -> String {
    message.strip_prefix("url: ").unwrap_or(message).to_owned()
}

/// The channels of a server started without any configured: `ws` and an
/// `ai` echo agent.
fn default_channels(env: &dyn Env, warnings: &mut Vec<String>) -> Vec<ChannelSpec> {
    let _ = warnings;
    // A provider key in the environment makes `ai` a real model.
    let real = [
        (
            "OPENAI_API_KEY",
            roomkit_ai::ProviderKind::Openai,
            "gpt-4o-mini",
        ),
        (
            "ANTHROPIC_API_KEY",
            roomkit_ai::ProviderKind::Anthropic,
            "claude-sonnet-4-5",
        ),
    ]
    .into_iter()
    .find_map(|(var, kind, model)| {
        let key = env.var(var)?;
        let mut c = roomkit_ai::AiChannelConfig::new("ai", kind);
        c.model = Some(model.into());
        c.system_prompt = Some("You are a helpful assistant.".into());
        c.api_key = Some(roomkit_ai::SecretString::new(key));
        Some(ChannelSpec::Ai(AiSpec(Box::new(c))))
    });
    vec![
        ChannelSpec::WebSocket { id: "ws".into() },
        real.unwrap_or(ChannelSpec::Echo { id: "ai".into() }),
    ]
}

/// A model-backed `[[channels]] type = "ai"`: its keys are the AI
/// crate's `AiChannelConfig`; the key is read from `api_key_env` (or the
/// provider's usual variable) now, once.
fn ai_channel(
    ctx: &Ctx<'_>,
    key: &str,
    table: toml::Table,
    env: &dyn Env,
) -> Result<ChannelSpec, ConfigError> {
    let mut c: roomkit_ai::AiChannelConfig = ctx.section(key, table)?;
    let ai_err = |e: roomkit_ai::AiError| match e {
        roomkit_ai::AiError::Config { key: k, message } => ctx.err(format!("{key}.{k}"), message),
        other => ctx.err(key, other.to_string()),
    };
    c.validate().map_err(ai_err)?;
    let default_var = match c.provider {
        roomkit_ai::ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
        _ => "OPENAI_API_KEY",
    };
    match &c.api_key_env {
        Some(var) => match env.var(var) {
            Some(k) => c.api_key = Some(roomkit_ai::SecretString::new(k)),
            None => {
                return Err(ctx.err(format!("{key}.api_key_env"), format!("{var} is not set")));
            }
        },
        // Local servers (Ollama, vLLM) need no key.
        None => c.api_key = env.var(default_var).map(roomkit_ai::SecretString::new),
    }
    Ok(ChannelSpec::Ai(AiSpec(Box::new(c))))
}

fn channel(
    ctx: &Ctx<'_>,
    key: &str,
    table: toml::Table,
    env: &dyn Env,
    public_url: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<ChannelSpec, ConfigError> {
    let ty = match table.get("type") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => return Err(ctx.err(format!("{key}.type"), "must be a string")),
        None => return Err(ctx.err(format!("{key}.type"), "is required")),
    };
    match ty.as_str() {
        "websocket" => {
            let s: WebSocketSection = ctx.section(key, table)?;
            Ok(ChannelSpec::WebSocket { id: s.id })
        }
        "ai" if matches!(table.get("provider"), Some(toml::Value::String(p)) if p != "echo") => {
            ai_channel(ctx, key, table, env)
        }
        "ai" => {
            let s: AiSection = ctx.section(key, table)?;
            match s.provider.as_str() {
                "echo" => {
                    if s.model.is_some() || s.base_url.is_some() || s.system_prompt.is_some() {
                        warnings.push(format!(
                            "{key}: the echo agent ignores model, base_url and system_prompt"
                        ));
                    }
                    if let Some(var) = &s.api_key_env
                        && env.var(var).is_none()
                    {
                        warnings.push(format!("{key}.api_key_env names {var}, which is not set (the echo agent needs no key)"));
                    }
                    Ok(ChannelSpec::Echo { id: s.id })
                }
                other => Err(ctx.err(
                    format!("{key}.provider"),
                    format!("{other:?} is not an AI provider (openai, anthropic or echo)"),
                )),
            }
        }
        "voice" => Ok(ChannelSpec::Voice(Box::new(crate::voice::parse(
            ctx, key, table, env, public_url, warnings,
        )?))),
        "sms" | "email" | "webhook" | "telegram" => Ok(ChannelSpec::Transport(
            crate::transport::parse(ctx, key, &ty, table, env, public_url)?,
        )),
        other => match other.parse::<ChannelType>() {
            Ok(t) if !matches!(t, ChannelType::System | ChannelType::Custom(_)) => Err(ctx.err(
                format!("{key}.type"),
                format!("channel type {other:?} is not available in this build"),
            )),
            _ => Err(ctx.err(
                format!("{key}.type"),
                format!("{other:?} is not a channel type"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use super::*;

    struct FakeEnv(HashMap<&'static str, &'static str>);

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn no_env() -> FakeEnv {
        FakeEnv(HashMap::new())
    }

    fn from_text(text: &str, env: &dyn Env) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("roomkit-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!(
            "{:x}.toml",
            text.len() * 31 + text.bytes().map(usize::from).sum::<usize>()
        ));
        std::fs::write(&path, text).unwrap();
        let r = load(Some(&path), &Overrides::default(), env);
        let _ = std::fs::remove_file(&path);
        r
    }

    #[test]
    fn defaults_without_a_file() {
        let s = load(None, &Overrides::default(), &no_env()).unwrap();
        assert_eq!(s.addr.to_string(), DEFAULT_ADDR);
        assert!(s.store.is_default);
        assert_eq!(s.max_chain_depth, 5);
        assert_eq!(
            s.channels,
            vec![
                ChannelSpec::WebSocket { id: "ws".into() },
                ChannelSpec::Echo { id: "ai".into() }
            ]
        );
        assert!(s.api_key.is_none());
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn provider_keys_without_config_make_ai_a_real_model() {
        let env = FakeEnv([("OPENAI_API_KEY", "sk-test")].into_iter().collect());
        let s = load(None, &Overrides::default(), &env).unwrap();
        let ai = s
            .channels
            .iter()
            .find_map(|c| match c {
                ChannelSpec::Ai(a) => Some(a),
                _ => None,
            })
            .expect("an AI channel");
        assert_eq!(ai.id(), "ai");
        assert_eq!(ai.0.provider, roomkit_ai::ProviderKind::Openai);
        assert!(
            !format!("{s:?}").contains("sk-test"),
            "no secret in debug output"
        );
    }

    #[test]
    fn ai_channels_with_providers_and_tools_are_read() {
        let env = FakeEnv([("MY_KEY", "sk-x")].into_iter().collect());
        let s = from_text(
            r#"
[[channels]]
id = "ai-bot"
type = "ai"
provider = "anthropic"
model = "claude-test"
base_url = "http://127.0.0.1:9100"
api_key_env = "MY_KEY"
system_prompt = "Be kind."
temperature = 0.2
max_tokens = 300

[[channels.tools]]
type = "http"
name = "lookup_order"
description = "Finds an order"
url = "http://127.0.0.1:9300/order"
parameters = { type = "object", properties = { id = { type = "string" } } }

[[channels.tools]]
type = "mcp"
name = "files"
transport = "stdio"
command = "mcp-files"
"#,
            &env,
        )
        .unwrap();
        let ChannelSpec::Ai(a) = &s.channels[0] else {
            panic!("{:?}", s.channels);
        };
        assert_eq!(a.0.tools.len(), 2);
        assert_eq!(a.0.api_key.as_ref().map(|k| k.expose()), Some("sk-x"));
        let e = problem(
            "[[channels]]\nid = \"a\"\ntype = \"ai\"\nprovider = \"openai\"\nmodel = \"m\"\napi_key_env = \"NOPE_UNSET\"\n",
        );
        assert_eq!(e.key, "channels[0].api_key_env");
        let e = problem("[[channels]]\nid = \"a\"\ntype = \"ai\"\nprovider = \"openai\"\n");
        assert_eq!(e.key, "channels[0].model");
        let e = problem(
            "[[channels]]\nid = \"a\"\ntype = \"ai\"\nprovider = \"openai\"\nmodel = \"m\"\ncolour = 1\n",
        );
        assert!(e.problem.contains("colour"), "{e}");
    }

    #[test]
    fn full_file_is_read() {
        let env = FakeEnv([("ROOMKIT_API_KEY", "k1")].into_iter().collect());
        let s = from_text(
            r#"
[server]
addr = "127.0.0.1:9999"
api_key_env = "ROOMKIT_API_KEY"
rate_limit_per_key = 100
[store]
url = "memory://"
[rooms]
max_chain_depth = 3
timer_resolution_ms = 500
process_timeout_ms = 1000
[[channels]]
id = "ws-user"
type = "websocket"
[[channels]]
id = "bot"
type = "ai"
provider = "echo"
[[hooks]]
name = "moderation"
trigger = "before_broadcast"
execution = "sync"
url = "http://127.0.0.1:9300/hook"
timeout_ms = 2000
priority = 0
on_error = "block"
"#,
            &env,
        )
        .unwrap();
        assert_eq!(s.addr.port(), 9999);
        assert_eq!(s.api_key.as_deref(), Some("k1"));
        assert_eq!(s.rate_limit_per_key, Some(100));
        assert_eq!(s.store.url, "memory://");
        assert_eq!(s.max_chain_depth, 3);
        assert_eq!(s.channels.len(), 2);
        assert_eq!(s.hooks.len(), 1);
        assert_eq!(s.hooks[0].on_error, OnError::Block);
        assert_eq!(s.hooks[0].timeout, Duration::from_millis(2000));
    }

    fn problem(text: &str) -> ConfigError {
        from_text(text, &no_env()).unwrap_err()
    }

    #[test]
    fn an_unset_api_key_variable_is_an_error_unless_open() {
        let e = problem("[server]\napi_key_env = \"RK_UNSET_KEY\"\n");
        assert_eq!(e.key, "server.api_key_env", "{e}");
        assert!(e.problem.contains("RK_UNSET_KEY is not set"), "{e}");
        assert!(e.problem.contains("server.open = true"), "{e}");
        let s = from_text(
            "[server]\napi_key_env = \"RK_UNSET_KEY\"\nopen = true\n",
            &no_env(),
        )
        .unwrap();
        assert!(s.api_key.is_none());
        assert!(s.warnings.iter().any(|w| w.contains("RK_UNSET_KEY")));
        // Without a file the server is open, as before, and quiet on loopback.
        let s = from_text("", &no_env()).unwrap();
        assert!(s.api_key.is_none() && s.tenant_keys.is_empty());
        assert!(!s.warnings.iter().any(|w| w.contains("loopback")));
        let s = from_text("[server]\naddr = \"0.0.0.0:8080\"\n", &no_env()).unwrap();
        assert!(
            s.warnings.iter().any(|w| w.contains("loopback")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn tenant_keys_and_limits_are_read() {
        let env = FakeEnv(
            [
                ("G", "global"),
                ("A", "key-a"),
                ("B", "key-b"),
                ("DUP", "key-a"),
            ]
            .into_iter()
            .collect(),
        );
        let s = from_text(
            r#"
[server]
api_key_env = "G"
rate_limit_per_key = 7
webhook_rate_limit_per_sender = 10
webhook_new_senders_per_minute = 20
[[server.tenant_keys]]
organization_id = "acme"
key_env = "A"
[[server.tenant_keys]]
organization_id = "globex"
key_env = "B"
"#,
            &env,
        )
        .unwrap();
        assert_eq!(s.tenant_keys.len(), 2);
        assert_eq!(&*s.tenant_keys[1].organization_id, "globex");
        assert!(s.tenant_keys[0].key.matches("key-a"));
        assert!(!format!("{s:?}").contains("key-a"), "keys never print");
        // The frame limit follows the request limit unless set.
        assert_eq!(s.ws_rate_limit_per_connection, Some(7));
        assert_eq!(s.webhook_rate_limit_per_sender, Some(10));
        assert_eq!(s.webhook_new_senders_per_minute, Some(20));
        let s = from_text("[server]\nws_rate_limit_per_connection = 3\n", &env).unwrap();
        assert_eq!(s.ws_rate_limit_per_connection, Some(3));
        assert_eq!(s.rate_limit_per_key, None);

        let bad = |text: &str| from_text(text, &env).unwrap_err();
        let e = bad("[[server.tenant_keys]]\norganization_id = \"a\"\nkey_env = \"NOPE\"\n");
        assert_eq!(e.key, "server.tenant_keys[0].key_env", "{e}");
        assert!(e.problem.contains("NOPE is not set"), "{e}");
        let e = bad("[[server.tenant_keys]]\norganization_id = \" \"\nkey_env = \"A\"\n");
        assert_eq!(e.key, "server.tenant_keys[0].organization_id", "{e}");
        let e = bad(
            "[[server.tenant_keys]]\norganization_id = \"a\"\nkey_env = \"A\"\n[[server.tenant_keys]]\norganization_id = \"b\"\nkey_env = \"DUP\"\n",
        );
        assert_eq!(e.key, "server.tenant_keys[1].key_env", "{e}");
        assert!(!e.to_string().contains("key-a"), "{e}");
        let e =
            bad("[[server.tenant_keys]]\norganization_id = \"a\"\nkey_env = \"A\"\nkey = \"x\"\n");
        assert!(e.key.contains("key"), "{e}");
        let e = bad("[server]\nwebhook_rate_limit_per_sender = 0\n");
        assert_eq!(e.key, "server.webhook_rate_limit_per_sender", "{e}");
        let e = bad("[server]\nws_rate_limit_per_connection = -1\n");
        assert_eq!(e.key, "server.ws_rate_limit_per_connection", "{e}");
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let s = from_text(
            "[server]\nheader_timeout_ms = 500\nidle_timeout_ms = 700\nmax_connections = 50\nmax_connections_per_ip = 5\nws_max_connections_per_key = 3\nws_send_timeout_ms = 900\n",
            &no_env(),
        )
        .unwrap();
        let l = &s.limits;
        assert_eq!(l.header_timeout, Duration::from_millis(500));
        assert_eq!(l.idle_timeout, Duration::from_millis(700));
        assert_eq!(l.max_connections, Some(50));
        assert_eq!(l.max_connections_per_ip, 5);
        assert_eq!(l.ws_connections_per_key, 3);
        assert_eq!(l.ws_send_timeout, Duration::from_millis(900));
        let d = from_text("", &no_env()).unwrap().limits;
        assert_eq!(d.header_timeout, Duration::from_secs(10));
        assert_eq!(d.max_connections, None);
        assert_eq!(d.max_connections_per_ip, 256);
        for key in [
            "header_timeout_ms",
            "idle_timeout_ms",
            "max_connections",
            "max_connections_per_ip",
            "ws_max_connections_per_key",
            "ws_send_timeout_ms",
        ] {
            let e = problem(&format!("[server]\n{key} = 0\n"));
            assert_eq!(e.key, format!("server.{key}"), "{e}");
        }
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = problem("[server]\nadr = \"x\"\n");
        assert!(e.key.contains("adr"), "{e}");
        assert!(e.to_string().contains(".toml"), "{e}");
        let e = problem("[server]\nrate_limit_per_key = \"many\"\n");
        assert_eq!(e.key, "server.rate_limit_per_key", "{e}");
        let e = problem("[rooms]\nmax_chain_depth = 0\n");
        assert_eq!(e.key, "rooms.max_chain_depth");
        let e = problem("[server]\naddr = \"nowhere\"\n");
        assert_eq!(e.key, "server.addr");
        let e = problem("[store]\nurl = \"mysql://x\"\n");
        assert_eq!(e.key, "store.url");
        let e = problem(
            "[[hooks]]\nname = \"h\"\ntrigger = \"before_everything\"\nurl = \"http://x\"\n",
        );
        assert_eq!(e.key, "hooks[0].trigger");
        let e =
            problem("[[hooks]]\nname = \"h\"\ntrigger = \"before_broadcast\"\nurl = \"ftp://x\"\n");
        assert_eq!(e.key, "hooks[0].url");
        let e = problem(
            "[[hooks]]\nname = \"h\"\ntrigger = \"before_broadcast\"\nurl = \"http://x\"\non_error = \"maybe\"\n",
        );
        assert_eq!(e.key, "hooks[0].on_error");
        let e = problem("this is not toml");
        assert_eq!(e.key, "(syntax)");
        let e = problem(
            "[[channels]]\nid = \"a\"\ntype = \"websocket\"\n[[channels]]\nid = \"a\"\ntype = \"websocket\"\n",
        );
        assert_eq!(e.key, "channels[1].id");
        let e = problem("[[channels]]\nid = \"a\"\ntype = \"websocket\"\ncolour = 1\n");
        assert!(e.key.starts_with("channels[0]"), "{e}");
        assert!(e.problem.contains("colour"), "{e}");
    }

    #[test]
    fn unavailable_features_are_refused_clearly() {
        let e = problem("[[channels]]\nid = \"t\"\ntype = \"carrier_pigeon\"\n");
        assert!(e.problem.contains("not a channel type"), "{e}");
        let e = problem("[[channels]]\nid = \"t\"\ntype = \"realtime_voice\"\n");
        assert!(e.problem.contains("not available in this build"), "{e}");
    }

    fn env_of(pairs: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv(pairs.iter().copied().collect())
    }

    /// A valid Ed25519 public key (the RFC 8032 test 1 key).
    const TELNYX_KEY: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    #[test]
    fn transport_channels_are_read() {
        let env = env_of(&[
            ("TW", "tok"),
            ("TX", "key"),
            ("SG", "sg"),
            ("HS", "hs"),
            ("TG", "tg"),
            ("TGS", "tgs"),
            ("SGT", "sgt"),
        ]);
        let s = from_text(
            &format!(
                r#"
[server]
public_url = "https://chat.example.com/"
[[channels]]
id = "sms-main"
type = "sms"
provider = "twilio"
from = "+15550001111"
account_sid = "AC0000"
auth_token_env = "TW"
base_url = "http://127.0.0.1:9200"
[[channels]]
id = "sms-telnyx"
type = "sms"
provider = "telnyx"
from = "+15550002222"
api_key_env = "TX"
public_key = "{TELNYX_KEY}"
messaging_profile_id = "mp-1"
[[channels]]
id = "email-main"
type = "email"
provider = "smtp"
from = "support@example.com"
smtp_url = "smtp://127.0.0.1:2525"
[[channels]]
id = "email-sg"
type = "email"
provider = "sendgrid"
from = "help@example.com"
api_key_env = "SG"
inbound_token_env = "SGT"
[[channels]]
id = "hook"
type = "webhook"
url = "http://127.0.0.1:9400/in"
secret_env = "HS"
[[channels]]
id = "tg"
type = "telegram"
bot_token_env = "TG"
secret_token_env = "TGS"
"#
            ),
            &env,
        )
        .unwrap();
        assert_eq!(s.channels.len(), 6);
        let ChannelSpec::Transport(t) = &s.channels[0] else {
            panic!("{:?}", s.channels[0]);
        };
        let crate::transport::TransportKind::Twilio { from, config } = &t.kind else {
            panic!("{t:?}");
        };
        assert_eq!(from, "+15550001111");
        assert_eq!(config.auth_token.expose(), "tok");
        assert_eq!(config.base_url, "http://127.0.0.1:9200");
        assert_eq!(
            config.status_callback_url.as_deref(),
            Some("https://chat.example.com/webhooks/sms/twilio/status?channel_id=sms-main")
        );
        let dump = format!("{s:?}");
        for secret in ["tok\"", "\"key\"", "\"sg\"", "\"hs\"", "\"tgs\"", "\"sgt\""] {
            assert!(!dump.contains(secret), "{secret} leaks into {dump}");
        }
    }

    #[test]
    fn voice_channel_errors_name_the_key() {
        let base = "[[channels]]\nid = \"v\"\ntype = \"voice\"\n";
        let e = problem(&format!(
            "{base}transport = \"twilio\"\nstt = {{ provider = \"nope\" }}\ntts = {{ provider = \"nope\" }}\n"
        ));
        assert_eq!(e.key, "channels[0].stt");
        assert!(
            e.problem
                .contains("\"nope\" is not a speech-to-text provider"),
            "{e}"
        );
        let e = problem(&format!(
            "{base}transport = \"pigeon\"\nstt = {{ provider = \"x\" }}\ntts = {{ provider = \"x\" }}\n"
        ));
        assert_eq!(e.key, "channels[0].transport");
        let e = problem(&format!(
            "{base}transport = \"twilio\"\nstt = {{ model = \"x\" }}\ntts = {{ provider = \"x\" }}\n"
        ));
        assert_eq!(e.key, "channels[0].stt");
        assert!(e.problem.contains("provider: is required"), "{e}");
        let e = problem(&format!(
            "{base}transport = \"twilio\"\nstt = {{ provider = \"x\" }}\ntts = {{ provider = \"x\" }}\ncolour = 1\n"
        ));
        assert!(e.problem.contains("colour"), "{e}");
        let e = problem(&format!(
            "{base}transport = \"twilio\"\nstt = {{ provider = \"x\" }}\ntts = {{ provider = \"x\" }}\n[channels.pipeline]\nvad = {{ provider = \"webrtc\", mode = \"loud\" }}\n"
        ));
        assert!(e.key.starts_with("channels[0].pipeline"), "{e}");
        let e = problem(&format!(
            "{base}transport = \"twilio\"\nstt = {{ provider = \"x\" }}\ntts = {{ provider = \"x\" }}\n[channels.interruption]\nstrategy = \"SOMETIMES\"\n"
        ));
        assert!(e.key.starts_with("channels[0].interruption"), "{e}");
    }

    #[test]
    fn transport_channel_errors_name_the_key() {
        let twilio = "[[channels]]\nid = \"s\"\ntype = \"sms\"\nprovider = \"twilio\"\nfrom = \"+1555\"\naccount_sid = \"AC1\"\n";
        let e = problem(&format!("{twilio}auth_token_env = \"UNSET_TOKEN\"\n"));
        assert_eq!(e.key, "channels[0].auth_token_env");
        assert!(e.problem.contains("UNSET_TOKEN is not set"), "{e}");
        let e = problem(twilio);
        assert_eq!(e.key, "channels[0].auth_token_env");
        assert!(e.problem.contains("required"), "{e}");
        let e = from_text(
            &format!("{twilio}auth_token_env = \"T\"\npublic_key = \"x\"\n"),
            &env_of(&[("T", "t")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "channels[0].public_key");
        let e = from_text(
            &format!("{twilio}auth_token_env = \"T\"\ncolour = 1\n"),
            &env_of(&[("T", "t")]),
        )
        .unwrap_err();
        assert!(e.problem.contains("colour"), "{e}");
        let e = problem(
            "[[channels]]\nid = \"s\"\ntype = \"sms\"\nprovider = \"pigeon\"\nfrom = \"+1\"\n",
        );
        assert_eq!(e.key, "channels[0].provider");
        let e = from_text(
            "[[channels]]\nid = \"s\"\ntype = \"sms\"\nprovider = \"telnyx\"\nfrom = \"+1\"\napi_key_env = \"K\"\npublic_key = \"bm90IGEga2V5\"\n",
            &env_of(&[("K", "k")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "channels[0].public_key");
        let e = problem(
            "[[channels]]\nid = \"m\"\ntype = \"email\"\nprovider = \"smtp\"\nfrom = \"a@b\"\nsmtp_url = \"http://x\"\n",
        );
        assert_eq!(e.key, "channels[0].smtp_url");
        let e = problem(
            "[[channels]]\nid = \"m\"\ntype = \"email\"\nprovider = \"sendgrid\"\nfrom = \"a@b\"\n",
        );
        assert_eq!(e.key, "channels[0].api_key_env");
        let e = problem("[[channels]]\nid = \"w\"\ntype = \"webhook\"\nurl = \"ftp://x\"\n");
        assert_eq!(e.key, "channels[0].url");
        let e = problem(
            "[[channels]]\nid = \"w\"\ntype = \"webhook\"\nurl = \"http://x\"\nallowed_urls = [\"https://ok/a\", \"https://h/?q=1\"]\n",
        );
        assert_eq!(e.key, "channels[0].allowed_urls[1]");
        let e = problem("[[channels]]\nid = \"t\"\ntype = \"telegram\"\n");
        assert!(e.key.starts_with("channels[0]"), "{e}");
        assert!(e.problem.contains("bot_token_env"), "{e}");
    }

    #[test]
    fn unauthenticated_inbound_needs_an_explicit_opt_in() {
        let env = env_of(&[("TG", "tg"), ("TGS", "tgs"), ("SG", "sg"), ("SGT", "sgt")]);
        let tg = "[[channels]]\nid = \"t\"\ntype = \"telegram\"\nbot_token_env = \"TG\"\n";
        let e = from_text(tg, &env).unwrap_err();
        assert_eq!(e.key, "channels[0].secret_token_env");
        assert!(e.problem.contains("allow_unauthenticated_inbound"), "{e}");
        assert!(from_text(&format!("{tg}allow_unauthenticated_inbound = true\n"), &env).is_ok());
        assert!(from_text(&format!("{tg}secret_token_env = \"TGS\"\n"), &env).is_ok());
        let e = from_text(
            &format!("{tg}secret_token_env = \"TGS\"\nallow_unauthenticated_inbound = true\n"),
            &env,
        )
        .unwrap_err();
        assert_eq!(e.key, "channels[0].allow_unauthenticated_inbound");
        let sg = "[[channels]]\nid = \"m\"\ntype = \"email\"\nprovider = \"sendgrid\"\nfrom = \"a@b\"\napi_key_env = \"SG\"\n";
        let e = from_text(sg, &env).unwrap_err();
        assert_eq!(e.key, "channels[0].inbound_token_env");
        assert!(from_text(&format!("{sg}allow_unauthenticated_inbound = true\n"), &env).is_ok());
        assert!(from_text(&format!("{sg}inbound_token_env = \"SGT\"\n"), &env).is_ok());
        // SMTP without a token still starts: its inbound path is not mounted.
        let smtp = "[[channels]]\nid = \"m\"\ntype = \"email\"\nprovider = \"smtp\"\nfrom = \"a@b\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\n";
        let s = from_text(smtp, &env).unwrap();
        let ChannelSpec::Transport(t) = &s.channels[0] else {
            panic!("{:?}", s.channels[0]);
        };
        assert!(matches!(
            t.kind,
            crate::transport::TransportKind::Smtp {
                inbound: crate::transport::EmailInbound::Off,
                ..
            }
        ));
    }

    #[test]
    fn identity_resolution_is_read() {
        let s = from_text(
            "[identity]\nresolver = \"http\"\nurl = \"http://127.0.0.1:9500/resolve\"\ntimeout_ms = 800\nchannel_types = [\"sms\", \"email\"]\n",
            &no_env(),
        )
        .unwrap();
        let i = s.identity.unwrap();
        assert_eq!(
            i.resolver,
            ResolverSpec::Http("http://127.0.0.1:9500/resolve".into())
        );
        assert_eq!(i.timeout, Duration::from_millis(800));
        assert_eq!(
            i.channel_types,
            Some(vec![ChannelType::Sms, ChannelType::Email])
        );
        let s = from_text("[identity]\nresolver = \"store\"\n", &no_env()).unwrap();
        assert_eq!(s.identity.unwrap().resolver, ResolverSpec::Store);
        assert!(
            load(None, &Overrides::default(), &no_env())
                .unwrap()
                .identity
                .is_none()
        );
        let e = problem("[identity]\nresolver = \"http\"\n");
        assert_eq!(e.key, "identity.url");
        let e = problem("[identity]\nresolver = \"oracle\"\n");
        assert_eq!(e.key, "identity.resolver");
        let e = problem("[identity]\nresolver = \"http\"\nurl = \"ftp://x\"\n");
        assert_eq!(e.key, "identity.url");
        let e = problem("[identity]\nresolver = \"store\"\ntimeout_ms = 0\n");
        assert_eq!(e.key, "identity.timeout_ms");
        let e = problem("[identity]\nresolver = \"store\"\nfuzzy = true\n");
        assert!(e.problem.contains("fuzzy"), "{e}");
    }

    #[test]
    fn telemetry_is_off_unless_configured() {
        let s = load(None, &Overrides::default(), &no_env()).unwrap();
        assert_eq!(s.telemetry.traces_endpoint, None);
        assert_eq!(s.telemetry.service_name, "roomkit");
        assert_eq!(s.telemetry.sample_ratio, 1.0);
    }

    #[test]
    fn telemetry_section_is_read() {
        let env = FakeEnv(
            [("OTLP_HEADERS", "api-key=k1,x-team=rk")]
                .into_iter()
                .collect(),
        );
        let s = from_text(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"rk-test\"\nsample_ratio = 0.25\nheaders_env = \"OTLP_HEADERS\"\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            s.telemetry.traces_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(s.telemetry.service_name, "rk-test");
        assert_eq!(s.telemetry.sample_ratio, 0.25);
        assert_eq!(s.telemetry.headers.len(), 2);
        assert!(
            !format!("{s:?}").contains("k1"),
            "no header value in debug output"
        );
        let s = from_text("[telemetry]\nheaders_env = \"UNSET_HEADERS\"\n", &no_env()).unwrap();
        assert!(s.telemetry.traces_endpoint.is_none());
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    }

    #[test]
    fn telemetry_environment_wins_over_the_file() {
        let file =
            "[telemetry]\notlp_endpoint = \"http://file:4318\"\nservice_name = \"from-file\"\n";
        let env = FakeEnv(
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
                ("OTEL_SERVICE_NAME", "from-env"),
            ]
            .into_iter()
            .collect(),
        );
        let s = from_text(file, &env).unwrap();
        assert_eq!(
            s.telemetry.traces_endpoint.as_deref(),
            Some("http://env:4318/v1/traces")
        );
        assert_eq!(s.telemetry.service_name, "from-env");
        let env = FakeEnv(
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:9/custom",
                ),
            ]
            .into_iter()
            .collect(),
        );
        let s = load(None, &Overrides::default(), &env).unwrap();
        assert_eq!(
            s.telemetry.traces_endpoint.as_deref(),
            Some("http://traces:9/custom")
        );
        let env = FakeEnv([("OTEL_SDK_DISABLED", "true")].into_iter().collect());
        let s = from_text(file, &env).unwrap();
        assert!(s.telemetry.traces_endpoint.is_none());
        let env = FakeEnv(
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]
                .into_iter()
                .collect(),
        );
        let e = load(None, &Overrides::default(), &env).unwrap_err();
        assert_eq!(e.key, "OTEL_EXPORTER_OTLP_ENDPOINT");
        assert!(e.file.is_none());
    }

    #[test]
    fn telemetry_errors_name_the_key() {
        let e = problem("[telemetry]\notlp_endpoint = \"grpc://x:4317\"\n");
        assert_eq!(e.key, "telemetry.otlp_endpoint");
        let e = problem("[telemetry]\nsample_ratio = 1.5\n");
        assert_eq!(e.key, "telemetry.sample_ratio");
        let e = problem("[telemetry]\nservice_name = \" \"\n");
        assert_eq!(e.key, "telemetry.service_name");
        let e = problem("[telemetry]\nheaders_env = \"\"\n");
        assert_eq!(e.key, "telemetry.headers_env");
        let e = problem("[telemetry]\nendpoint = \"http://x\"\n");
        assert!(e.key.starts_with("telemetry"), "{e}");
        assert!(e.problem.contains("endpoint"), "{e}");
        let env = FakeEnv([("H", "no-equals-sign")].into_iter().collect());
        let e = from_text("[telemetry]\nheaders_env = \"H\"\n", &env).unwrap_err();
        assert_eq!(e.key, "telemetry.headers_env");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            addr: Some("127.0.0.1:0".into()),
            store: Some("memory://".into()),
        };
        let s = load(None, &o, &no_env()).unwrap();
        assert_eq!(s.addr.port(), 0);
        assert!(!s.store.is_default);
        let bad = Overrides {
            addr: Some("x".into()),
            store: None,
        };
        let e = load(None, &bad, &no_env()).unwrap_err();
        assert_eq!(e.key, "--addr");
    }
}
