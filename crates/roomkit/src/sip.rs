//! `transport = "sip"` on a voice channel: the `[channels.sip]` table
//! (listen address, RTP ports, trunks, routes), validated at load, and the
//! running side `serve` starts: the SIP user agent, its registrations, the
//! loop that hands answered calls to the voice channel (in the room their
//! route names), protocol traces to the channel, and the dialer behind
//! `POST /voice/calls`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use roomkit_core::model::{ChannelId, RoomId};
use roomkit_core::{AttachOptions, CreateRoom, RoomKit, RoomKitError};
use roomkit_sip::outbound::{Credentials, DialRequest as SipDial, Registration};
use roomkit_sip::ua::{SipConfig, SipEndpoint, SipTrace, SipTracer, Transport};
use roomkit_sip::{MediaCodec, RegistrationHandle};
use roomkit_voice::{CallDialer, DialError, DialRequest, DialedCall, ProtocolTrace, VoiceChannel};
use serde::Deserialize;

use crate::config::{ConfigError, Ctx, Env};

/// The default SIP listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5060";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SipSection {
    listen: Option<String>,
    listen_env: Option<String>,
    advertise: Option<String>,
    rtp_ports: Option<[u16; 2]>,
    rtp_timeout_s: Option<u64>,
    ring_ms: Option<u64>,
    codecs: Option<Vec<String>>,
    max_calls: Option<usize>,
    session_expires_s: Option<u32>,
    #[serde(default)]
    trunks: Vec<TrunkSection>,
    #[serde(default)]
    routes: Vec<RouteSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrunkSection {
    name: String,
    proxy: String,
    transport: Option<String>,
    username_env: Option<String>,
    password_env: Option<String>,
    from: Option<String>,
    register: Option<bool>,
    register_expires_s: Option<u32>,
    domain: Option<String>,
    keepalive_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSection {
    to: String,
    room_id: Option<String>,
    agents: Option<Vec<String>>,
}

/// A trunk, as validated.
#[derive(Debug, Clone)]
pub struct TrunkSpec {
    /// Its name (for logs).
    pub name: String,
    /// Where INVITEs and REGISTERs go (`host:port`).
    pub proxy: String,
    /// UDP or TCP.
    pub transport: Transport,
    /// Digest credentials, when both variables are set.
    pub credentials: Option<Credentials>,
    /// The caller id of outbound calls.
    pub from: Option<String>,
    /// Keep a registration at the proxy.
    pub register: bool,
    /// Its lifetime.
    pub register_expires: u32,
    /// The registration's domain.
    pub domain: Option<String>,
    /// OPTIONS pings to the proxy at this interval, when set.
    pub keepalive: Option<Duration>,
}

/// Where calls to a number or user go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The called user (`+15551234567`, `support`), or `*` for any.
    pub to: String,
    /// Put the call in this room (created when missing).
    pub room_id: Option<String>,
    /// Attach these channels to the call's room.
    pub agents: Vec<String>,
}

/// The SIP settings of a voice channel.
#[derive(Debug, Clone)]
pub struct SipSpec {
    /// The user agent's settings.
    pub config: SipConfig,
    /// Trunks, the first one places outbound calls.
    pub trunks: Vec<TrunkSpec>,
    /// Routes, first match wins.
    pub routes: Vec<RouteSpec>,
}

fn transport_of(ctx: &Ctx<'_>, key: &str, value: Option<&str>) -> Result<Transport, ConfigError> {
    match value.unwrap_or("udp").to_ascii_lowercase().as_str() {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        other => Err(ctx.err(key, format!("{other:?} is not a SIP transport (udp, tcp)"))),
    }
}

/// Reads and checks `[channels.sip]`.
pub(crate) fn parse(
    ctx: &Ctx<'_>,
    key: &str,
    s: SipSection,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<SipSpec, ConfigError> {
    let key = format!("{key}.sip");
    let from_env = s
        .listen_env
        .as_deref()
        .and_then(|name| env.var(name))
        .filter(|v| !v.trim().is_empty());
    let listen_text = from_env
        .clone()
        .or(s.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
        let source = match (&from_env, &s.listen_env) {
            (Some(_), Some(name)) => format!(" (from {name})"),
            _ => String::new(),
        };
        ctx.err(
            format!("{key}.listen"),
            format!("{listen_text:?}{source} is not an address:port"),
        )
    })?;
    let advertise = match &s.advertise {
        Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
            ctx.err(
                format!("{key}.advertise"),
                format!("{a:?} is not an IP address"),
            )
        })?),
        None => None,
    };
    if let Some([low, high]) = s.rtp_ports
        && (low == 0 || low > high || high - low < 2)
    {
        return Err(ctx.err(
            format!("{key}.rtp_ports"),
            "must be [low, high] with 0 < low and at least two ports between them",
        ));
    }
    let mut config = SipConfig {
        listen,
        advertise,
        rtp_ports: s.rtp_ports.map(|[l, h]| (l, h)),
        ..SipConfig::default()
    };
    if let Some(t) = s.rtp_timeout_s {
        if t == 0 {
            return Err(ctx.err(format!("{key}.rtp_timeout_s"), "must be more than 0"));
        }
        config.rtp_timeout = Duration::from_secs(t);
    }
    if let Some(ms) = s.ring_ms {
        config.ring = Duration::from_millis(ms.min(60_000));
    }
    if let Some(n) = s.max_calls {
        if n == 0 {
            return Err(ctx.err(format!("{key}.max_calls"), "must be more than 0"));
        }
        config.max_calls = n;
    }
    if let Some(se) = s.session_expires_s {
        if se != 0 && se < 90 {
            return Err(ctx.err(
                format!("{key}.session_expires_s"),
                "must be 0 (none) or at least 90 (RFC 4028)",
            ));
        }
        config.session_expires = se;
    }
    if let Some(names) = &s.codecs {
        let mut codecs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let codec = match name.to_ascii_lowercase().as_str() {
                "pcmu" => MediaCodec::Pcmu,
                "pcma" => MediaCodec::Pcma,
                "opus" => MediaCodec::Opus,
                other => {
                    return Err(ctx.err(
                        format!("{key}.codecs[{i}]"),
                        format!("{other:?} is not a codec of this build (pcmu, pcma, opus)"),
                    ));
                }
            };
            if !codecs.contains(&codec) {
                codecs.push(codec);
            }
        }
        if codecs.is_empty() {
            return Err(ctx.err(format!("{key}.codecs"), "names no codec"));
        }
        config.codecs = codecs;
    }
    let mut trunks = Vec::new();
    for (i, t) in s.trunks.into_iter().enumerate() {
        let tkey = format!("{key}.trunks[{i}]");
        let transport = transport_of(ctx, &format!("{tkey}.transport"), t.transport.as_deref())?;
        if t.proxy.trim().is_empty() {
            return Err(ctx.err(format!("{tkey}.proxy"), "is empty"));
        }
        let user = t.username_env.as_deref().and_then(|n| env.var(n));
        let password = t.password_env.as_deref().and_then(|n| env.var(n));
        let credentials = match (user, password) {
            (Some(username), Some(password)) => Some(Credentials { username, password }),
            _ => {
                if t.username_env.is_some() || t.password_env.is_some() {
                    warnings.push(format!(
                        "{tkey}: {} or {} is not set; calls through trunk {:?} are placed without credentials",
                        t.username_env.as_deref().unwrap_or("(no username_env)"),
                        t.password_env.as_deref().unwrap_or("(no password_env)"),
                        t.name
                    ));
                }
                None
            }
        };
        let register = t.register.unwrap_or(false);
        if register && credentials.is_none() {
            warnings.push(format!(
                "{tkey}: registering without credentials; most registrars will refuse it"
            ));
        }
        trunks.push(TrunkSpec {
            name: t.name,
            proxy: t.proxy.trim().to_owned(),
            transport,
            credentials,
            from: t.from,
            register,
            register_expires: t.register_expires_s.unwrap_or(3600).max(60),
            domain: t.domain,
            keepalive: match t.keepalive_s {
                Some(0) => {
                    return Err(ctx.err(format!("{tkey}.keepalive_s"), "must be more than 0"));
                }
                Some(s) => Some(Duration::from_secs(s)),
                None => None,
            },
        });
    }
    let routes = s
        .routes
        .into_iter()
        .map(|r| RouteSpec {
            to: r.to,
            room_id: r.room_id,
            agents: r.agents.unwrap_or_default(),
        })
        .collect();
    Ok(SipSpec {
        config,
        trunks,
        routes,
    })
}

/// Checks that route agents name other configured channels.
pub(crate) fn check_routes(
    ctx: &Ctx<'_>,
    key: &str,
    voice_id: &str,
    spec: &SipSpec,
    ids: &std::collections::HashSet<String>,
) -> Result<(), ConfigError> {
    for (i, route) in spec.routes.iter().enumerate() {
        for (j, agent) in route.agents.iter().enumerate() {
            if agent == voice_id || !ids.contains(agent) {
                return Err(ctx.err(
                    format!("{key}.sip.routes[{i}].agents[{j}]"),
                    format!("{agent:?} is not another configured channel"),
                ));
            }
        }
    }
    Ok(())
}

/// Sends the user agent's traces to the voice channel.
struct ChannelTracer {
    channel: VoiceChannel,
    id: String,
}

impl SipTracer for ChannelTracer {
    fn trace(&self, t: SipTrace) {
        let mut trace = ProtocolTrace::new(&self.id, t.inbound, "sip", t.summary, Some(t.raw));
        trace
            .metadata
            .insert("peer".into(), serde_json::Value::String(t.peer.to_string()));
        self.channel.emit_trace(&t.call_id, trace);
    }
}

/// A voice channel's running SIP side.
pub struct SipRuntime {
    /// The user agent.
    pub endpoint: SipEndpoint,
    /// The dialer for `POST /voice/calls`.
    pub dialer: Arc<dyn CallDialer>,
    _registrations: Vec<RegistrationHandle>,
    _keep_alives: Vec<roomkit_sip::KeepAliveHandle>,
}

/// Puts a call in its route's room: the named room (created and given the
/// voice channel and the route's agents when missing), or a new room with
/// the route's agents. `None` leaves it to the router.
async fn route_room(
    kit: &RoomKit,
    voice: &ChannelId,
    route: &RouteSpec,
) -> Result<Option<RoomId>, RoomKitError> {
    if route.room_id.is_none() && route.agents.is_empty() {
        return Ok(None);
    }
    let room = match &route.room_id {
        Some(id) => {
            let id = RoomId::from(id.as_str());
            match kit.get_room(&id).await {
                Ok(_) => id,
                Err(RoomKitError::RoomNotFound(_)) => {
                    let options = CreateRoom {
                        id: Some(id.clone()),
                        ..CreateRoom::default()
                    };
                    match kit.create_room(options).await {
                        Ok(r) => r.id,
                        // Created meanwhile by another call.
                        Err(RoomKitError::RoomExists(_)) => id,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        None => kit.create_room(CreateRoom::default()).await?.id,
    };
    let agents = route.agents.iter().map(|a| ChannelId::from(a.as_str()));
    for channel in std::iter::once(voice.clone()).chain(agents) {
        match kit
            .attach_channel(&room, &channel, AttachOptions::default())
            .await
        {
            Ok(_) | Err(RoomKitError::ChannelAlreadyAttached { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(room))
}

/// Whether a route takes calls to `to`.
fn matches(route: &RouteSpec, to: Option<&str>) -> bool {
    route.to == "*" || to.is_some_and(|t| t.eq_ignore_ascii_case(&route.to))
}

/// Starts the SIP side of a voice channel: binds the user agent, keeps the
/// trunks' registrations, and hands answered calls to the channel.
///
/// # Errors
/// When the SIP address cannot be bound.
pub async fn start(
    spec: &SipSpec,
    channel: VoiceChannel,
    kit: RoomKit,
) -> anyhow::Result<SipRuntime> {
    let (endpoint, mut calls) = SipEndpoint::bind(spec.config.clone()).await?;
    let id = roomkit_core::Channel::id(&channel).clone();
    endpoint.set_tracer(Arc::new(ChannelTracer {
        channel: channel.clone(),
        id: id.to_string(),
    }));
    let mut registrations = Vec::new();
    for trunk in spec.trunks.iter().filter(|t| t.register) {
        let user = trunk
            .credentials
            .as_ref()
            .map(|c| c.username.clone())
            .or_else(|| trunk.from.clone())
            .unwrap_or_else(|| "roomkit".into());
        registrations.push(endpoint.register(Registration {
            registrar: trunk.proxy.clone(),
            domain: trunk.domain.clone(),
            user,
            transport: trunk.transport,
            credentials: trunk.credentials.clone(),
            expires: trunk.register_expires,
        }));
    }
    let keep_alives = spec
        .trunks
        .iter()
        .filter_map(|t| {
            t.keepalive
                .map(|every| endpoint.keep_alive(&t.proxy, t.transport, every))
        })
        .collect();
    let routes = spec.routes.clone();
    let accept_channel = channel.clone();
    tokio::spawn(async move {
        while let Some(mut call) = calls.recv().await {
            let route = routes
                .iter()
                .find(|r| matches(r, call.info.to.as_deref()))
                .cloned();
            if let Some(route) = route {
                match route_room(&kit, &id, &route).await {
                    Ok(Some(room)) => {
                        call.info
                            .parameters
                            .insert("room_id".into(), room.to_string());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(target: "roomkit.sip", channel_id = %id, call_id = %call.info.call_id, error = %e, "the call's route failed: hanging up");
                        let _ = call.outbound.try_send(roomkit_voice::Outbound::HangUp);
                        continue;
                    }
                }
            }
            let call_id = call.info.call_id.clone();
            if let Err(e) = accept_channel.start_call(call) {
                tracing::warn!(target: "roomkit.sip", channel_id = %id, %call_id, error = %e, "the call could not start");
            }
        }
    });
    let dialer = Arc::new(SipDialer {
        channel_id: roomkit_core::Channel::id(&channel).clone(),
        endpoint: endpoint.clone(),
        channel,
        trunk: spec.trunks.first().cloned(),
        agents: Vec::new(),
    });
    Ok(SipRuntime {
        endpoint,
        dialer,
        _registrations: registrations,
        _keep_alives: keep_alives,
    })
}

/// Places `POST /voice/calls` calls through the first trunk (or straight
/// to a `sip:` address).
struct SipDialer {
    channel_id: ChannelId,
    endpoint: SipEndpoint,
    channel: VoiceChannel,
    trunk: Option<TrunkSpec>,
    agents: Vec<ChannelId>,
}

/// How long `POST /voice/calls` waits for the callee's phone to ring (or
/// the call to fail) before answering.
const RING_WAIT: Duration = Duration::from_secs(10);

#[async_trait]
impl CallDialer for SipDialer {
    fn channel_id(&self) -> &ChannelId {
        &self.channel_id
    }

    fn provider(&self) -> &str {
        "sip"
    }

    fn agents(&self) -> &[ChannelId] {
        &self.agents
    }

    fn ready(&self) -> Result<(), DialError> {
        Ok(())
    }

    async fn transfer(&self, call_id: &str, to: &str) -> Result<(), DialError> {
        if self.channel.transfer_by_call_id(call_id, to).await {
            tracing::info!(target: "roomkit.sip", channel_id = %self.channel_id, %call_id, %to, "transfer asked");
            Ok(())
        } else {
            Err(DialError::UnknownCall(call_id.to_owned()))
        }
    }

    async fn dial(&self, request: &DialRequest) -> Result<DialedCall, DialError> {
        let direct = request.to.starts_with("sip:");
        if !direct && self.trunk.is_none() {
            return Err(DialError::NotConfigured(
                "no [[channels.sip.trunks]] to call a number through (or give a sip: address)"
                    .into(),
            ));
        }
        let mut sip = SipDial::new(request.to.clone());
        if let Some(trunk) = &self.trunk
            && !direct
        {
            sip.proxy = Some(trunk.proxy.clone());
            sip.transport = trunk.transport;
            sip.credentials = trunk.credentials.clone();
            sip.from = trunk.from.clone();
        }
        if let Some(from) = &request.from {
            sip.from = Some(from.clone());
        }
        sip.parameters = BTreeMap::from([("room_id".to_owned(), request.room_id.to_string())]);
        let from = sip.from.clone().unwrap_or_else(|| "roomkit".into());
        // Known now, so the answer names the call even before it rings.
        let call_id = roomkit_sip::outbound::new_call_id();
        sip.call_id = Some(call_id.clone());
        let (progress_tx, mut progress) = tokio::sync::watch::channel(None);
        sip.progress = Some(Arc::new(progress_tx));
        let endpoint = self.endpoint.clone();
        let channel = self.channel.clone();
        let id = self.channel_id.clone();
        let attempt = tokio::spawn(async move {
            match endpoint.dial(sip).await {
                Ok(call) => {
                    let call_id = call.info.call_id.clone();
                    if let Err(e) = channel.start_call(call) {
                        tracing::warn!(target: "roomkit.sip", channel_id = %id, %call_id, error = %e, "the answered call could not start");
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        });
        // Answer once the phone rings (or the call is answered or fails).
        let waited = tokio::time::timeout(RING_WAIT, async {
            loop {
                if let Some(p) = progress.borrow().clone() {
                    return Some(p);
                }
                if progress.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(roomkit_sip::outbound::DialProgress::Failed(e))) => {
                return Err(refusal(&e));
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => {
                // The attempt ended without reporting: read its outcome.
                return match attempt.await {
                    Ok(Err(e)) => Err(refusal(&e)),
                    _ => Err(DialError::Unavailable {
                        provider: "sip".into(),
                        message: "the call attempt stopped".into(),
                    }),
                };
            }
        }
        let status = match progress.borrow().clone() {
            Some(roomkit_sip::outbound::DialProgress::Answered { .. }) => "in-progress",
            Some(roomkit_sip::outbound::DialProgress::Ringing { .. }) => "ringing",
            // Nothing heard within the wait: the INVITE is still out.
            _ => "calling",
        };
        Ok(DialedCall {
            call_id,
            status: status.into(),
            from,
        })
    }
}

fn refusal(e: &roomkit_sip::DialError) -> DialError {
    match e {
        roomkit_sip::DialError::Rejected { code, .. } => DialError::Refused {
            provider: "sip".into(),
            status: *code,
            code: Some(code.to_string()),
            message: e.to_string(),
        },
        roomkit_sip::DialError::Auth(_) => DialError::Refused {
            provider: "sip".into(),
            status: 401,
            code: None,
            message: e.to_string(),
        },
        other => DialError::Unavailable {
            provider: "sip".into(),
            message: other.to_string(),
        },
    }
}
