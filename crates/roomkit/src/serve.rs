//! `roomkit serve`: loads the configuration, builds the engine with its
//! channels, HTTP hooks and call analytics, and runs the server until
//! SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use roomkit_ai::EchoAgent;
use roomkit_core::RoomKit;
use roomkit_core::store::MemoryStore;
use roomkit_server::auth::ApiKey;
use roomkit_server::{ConnectionRegistry, Server, ServerOptions, WebSocketChannel};
use roomkit_store_sql::SqlStoreError;

use crate::config::{self, ChannelSpec, Overrides, ProcessEnv, Settings};
use crate::telemetry::Telemetry;

/// A store URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `roomkit serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without one, built-in defaults are used.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listening address; overrides `[server] addr`.
    #[arg(long)]
    pub addr: Option<String>,
    /// Store URL (sqlite://PATH, memory://, postgres://...); overrides `[store] url`.
    #[arg(long)]
    pub store: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Runs `roomkit serve`: exit 0 after a clean shutdown, 2 for a bad
/// configuration, 1 when the server fails.
pub fn main(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        addr: args.addr.clone(),
        store: args.store.clone(),
    };
    let settings = match config::load(args.config.as_deref(), &overrides, &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roomkit: {e}");
            return ExitCode::from(2);
        }
    };
    // Before the runtime: the trace exporter's HTTP client is a blocking one.
    let telemetry = Telemetry::init(args.log_format, &settings.telemetry);
    let code = run_server(settings);
    // After the server has stopped and outside the runtime: flush the spans.
    telemetry.shutdown();
    code
}

/// Raises the soft open-file limit to the hard one, so connections, not a
/// default of 1,024 descriptors, are what the connection caps bound (the
/// server's global cap still shrinks to fit whatever limit is in force).
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(target: "roomkit.server", limit, "open-file limit");
        }
        Err(e) => {
            tracing::warn!(target: "roomkit.server", error = %e, "cannot raise the open-file limit");
        }
    }
}

fn run_server(settings: Settings) -> ExitCode {
    raise_open_file_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roomkit: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomkit: {e:#}");
            // A store URL the store itself cannot parse is a configuration
            // error; anything else is a failure to run.
            let bad_url = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<SqlStoreError>(),
                    Some(SqlStoreError::BadUrl { .. })
                )
            });
            if bad_url {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    for w in &settings.warnings {
        tracing::warn!(target: "roomkit.config", "{w}");
    }
    let registry = ConnectionRegistry::new();
    let mut builder = RoomKit::builder()
        // Shared numbers and mailboxes: a room bound to the channel takes
        // only its first sender (see ConversationRouter).
        .router(Arc::new(roomkit_core::router::ConversationRouter))
        .max_chain_depth(settings.max_chain_depth)
        .process_timeout(settings.process_timeout);
    let url = settings.store.url.as_str();
    let store: Arc<dyn roomkit_core::store::Store>;
    let sql = if url == "memory://" || url == "memory" {
        tracing::info!(target: "roomkit.config", "in-memory store: rooms are lost on exit");
        store = Arc::new(MemoryStore::new());
        builder = builder.store(store.clone());
        None
    } else {
        let backend = roomkit_store_sql::open(url)
            .await
            .with_context(|| format!("opening the store {}", redact(url)))?;
        tracing::info!(target: "roomkit.config", store = %redact(url), "store opened");
        store = backend.store.clone();
        builder = builder
            .store(backend.store.clone())
            .lock_manager(backend.locks.clone());
        Some(backend)
    };
    let mut ai_channels = Vec::new();
    let mut receivers = Vec::new();
    let mut voice_channels = Vec::new();
    let mut dialers = Vec::new();
    let mut sip_channels = Vec::new();
    for spec in &settings.channels {
        builder = match spec {
            ChannelSpec::WebSocket { id } => builder.channel(Arc::new(WebSocketChannel::new(
                id.as_str(),
                registry.clone(),
            ))),
            ChannelSpec::Echo { id } => builder.channel(Arc::new(EchoAgent::new(id.as_str()))),
            ChannelSpec::Ai(spec) => {
                let ai = (*spec.0)
                    .clone()
                    .build()
                    .with_context(|| format!("building AI channel {}", spec.id()))?;
                tracing::info!(target: "roomkit.config", channel_id = %spec.id(), provider = ?spec.0.provider, model = ?spec.0.model, "ai channel registered");
                ai_channels.push(ai.clone());
                builder.channel(ai)
            }
            ChannelSpec::Transport(spec) => {
                let built = transport_channel(spec)?;
                if let Some(receiver) = built.receiver {
                    receivers.push((spec.id.clone(), receiver));
                }
                builder.channel(built.channel)
            }
            ChannelSpec::Voice(spec) => {
                let browser = crate::voice::BrowserAuth {
                    key: settings.api_key.clone(),
                    open: settings.api_key.is_none() && settings.tenant_keys.is_empty(),
                };
                let built = crate::voice::build(spec, &browser)
                    .with_context(|| format!("building voice channel {}", spec.id))?;
                if let Some(hook) = crate::voice::agents_hook(spec) {
                    builder = builder.hook(hook);
                }
                tracing::info!(target: "roomkit.config", channel_id = %spec.id, stt = %spec.stt.provider, tts = %spec.tts.provider, "voice channel registered");
                if let Some(webhook) = built.webhook {
                    receivers.push((spec.id.clone(), webhook));
                }
                if let Some(dialer) = built.dialer {
                    dialers.push(dialer);
                }
                let channel = built.channel.clone();
                if let Some(sip) = &spec.sip {
                    sip_channels.push((built.channel.clone(), sip.clone()));
                }
                voice_channels.push((built.channel, built.media));
                builder.channel(Arc::new(channel))
            }
        };
    }
    if !settings.hooks.is_empty() {
        let client = roomkit_server::http_client()?;
        for hook in &settings.hooks {
            tracing::info!(target: "roomkit.config", hook = %hook.name, trigger = %hook.trigger, url = %hook.url, "http hook registered");
            builder = builder.hook(hook.clone().registration(client.clone()));
        }
    }
    let (builder, http_resolver) = identity_resolution(builder, &settings, store)?;
    let kit = builder.build().context("building the engine")?;
    if let Some(resolver) = &http_resolver {
        resolver.attach_kit(&kit);
    }
    // AI channels fire hooks and publish turn metrics through the engine.
    for ai in &ai_channels {
        ai.attach_kit(&kit);
    }
    // Voice calls commit utterances through the engine.
    for (voice, _) in &voice_channels {
        voice.attach_kit(&kit);
    }
    // Events committed by other processes sharing the store reach this
    // one's connections; the handle lives as long as the server.
    let _fanout = sql.as_ref().map(|b| b.start_fanout(&kit));
    // SIP voice channels: their user agents listen from here on.
    let mut sip_runtimes = Vec::new();
    for (channel, spec) in sip_channels {
        let id = roomkit_core::Channel::id(&channel).clone();
        let runtime = crate::sip::start(&spec, channel, kit.clone())
            .await
            .with_context(|| format!("starting SIP for voice channel {id}"))?;
        tracing::info!(target: "roomkit.config", channel_id = %id, sip = %runtime.endpoint.local_addr(), "SIP voice channel listening");
        dialers.push(runtime.dialer.clone());
        sip_runtimes.push(runtime);
    }
    kit.start_timers(settings.timer_resolution);
    if let Some(url) = &settings.public_url {
        tracing::info!(target: "roomkit.config", public_url = %url, "provider webhook signatures are checked against the public URL");
    }
    let options = ServerOptions {
        addr: settings.addr,
        api_key: settings.api_key.map(ApiKey::new),
        rate_limit_per_key: settings.rate_limit_per_key,
        public_url: settings.public_url.clone(),
        tenant_keys: settings.tenant_keys.clone(),
        ws_rate_limit_per_connection: settings.ws_rate_limit_per_connection,
        webhook_rate_limit_per_sender: settings.webhook_rate_limit_per_sender,
        webhook_new_senders_per_minute: settings.webhook_new_senders_per_minute,
        limits: settings.limits.clone(),
        ..ServerOptions::default()
    };
    let analytics_kit = kit.clone();
    let voices: Vec<roomkit_voice::VoiceChannel> =
        voice_channels.iter().map(|(v, _)| v.clone()).collect();
    let mut server = Server::new(kit, registry, options);
    for (channel_id, receiver) in receivers {
        server = server.with_webhook_receiver(channel_id, receiver);
    }
    for (_, media) in voice_channels {
        if let Some(media) = media {
            server = server.with_media_endpoint(media);
        }
    }
    for dialer in dialers {
        server = server.with_call_dialer(dialer);
    }
    if let Some(dir) = &settings.analytics.reports_dir {
        server = server.with_call_reports(dir);
    }
    // The socket first: a process that cannot serve (address in use) stops
    // here, before it locks or recovers the call spool.
    let server = server.bind().await.context("serving")?;
    // Call analytics: every room is observed as a call (see analytics.rs).
    // Several processes on one PostgreSQL store: one owner per call.
    let leases = match (&sql, settings.analytics.is_enabled()) {
        (Some(b), true) => b
            .call_leases(settings.analytics.lease_time)
            .await
            .context("setting up call leases")?,
        _ => None,
    };
    let analytics = crate::analytics::start(&settings.analytics, &analytics_kit, leases)
        .await
        .context("starting call analytics")?;
    drop(analytics_kit);
    // Every voice session is a call: the tap starts it and records it.
    if let Some(a) = &analytics {
        for voice in &voices {
            voice.add_call_tap(a.voice_tap());
        }
    }
    drop(voices);
    let served = server.run(shutdown_signal()).await.context("serving");
    drop(sip_runtimes);
    // Open calls end with the server; their exports get a bounded drain.
    if let Some(a) = analytics {
        a.shutdown().await;
    }
    served?;
    Ok(())
}

/// Sets up identity resolution (RFC §11) from `[identity]`; returns the
/// HTTP resolver, which needs the engine once it is built.
fn identity_resolution(
    mut builder: roomkit_core::RoomKitBuilder,
    settings: &Settings,
    store: Arc<dyn roomkit_core::store::Store>,
) -> anyhow::Result<(
    roomkit_core::RoomKitBuilder,
    Option<Arc<roomkit_server::HttpIdentityResolver>>,
)> {
    let Some(spec) = &settings.identity else {
        return Ok((builder, None));
    };
    builder = builder.identity_timeout(spec.timeout);
    if let Some(types) = &spec.channel_types {
        builder = builder.identity_channel_types(types.iter().cloned());
    }
    match &spec.resolver {
        config::ResolverSpec::Store => {
            tracing::info!(target: "roomkit.config", "identity resolution by the store's identities");
            let resolver = roomkit_core::AddressResolver::new(store, Vec::new());
            Ok((builder.identity_resolver(Arc::new(resolver)), None))
        }
        config::ResolverSpec::Http(url) => {
            tracing::info!(target: "roomkit.config", url = %url, "identity resolution over HTTP");
            let url = roomkit_server::HttpHookConfig::parse_url(url)?;
            let resolver = Arc::new(roomkit_server::HttpIdentityResolver::new(
                url,
                roomkit_server::http_client()?,
                spec.timeout,
            ));
            Ok((builder.identity_resolver(resolver.clone()), Some(resolver)))
        }
    }
}

/// Builds a configured SMS, email, webhook or Telegram channel; its
/// webhook receiver is what the server mounts under `/webhooks/`.
fn transport_channel(
    spec: &crate::transport::TransportSpec,
) -> anyhow::Result<crate::transport::Built> {
    let built =
        crate::transport::build(spec).with_context(|| format!("building channel {}", spec.id))?;
    tracing::info!(target: "roomkit.config", channel_id = %spec.id, channel_type = %built.channel.channel_type(), provider = ?built.channel.provider_name(), "transport channel registered");
    Ok(built)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(target: "roomkit.server", error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(target: "roomkit.server", error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!(target: "roomkit.server", "SIGINT received"),
        _ = terminate => tracing::info!(target: "roomkit.server", "SIGTERM received"),
    }
}
