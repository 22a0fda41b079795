//! What the user agent starts itself (the UAC side of RFC 3261): outbound
//! calls through a trunk, with digest authentication, and registrations
//! kept alive at a registrar.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use roomkit_voice::Call;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dialog::{self, Dialog, Established, MediaState};
use crate::digest::Challenge;
use crate::inbound::wire_call;
use crate::media::{MediaCodec, StreamParams};
use crate::message::{Method, SipMessage, param, top_value, uri_of};
use crate::sdp::{self, Direction, SessionDescription};
use crate::ua::{Core, Peer, SipEndpoint, T1, T2, TRANSACTION_TIMEOUT, Transport};

/// The telephone-event payload type offered.
const TELEPHONE_EVENT_PT: u8 = 101;

/// A user name and password for digest authentication.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// An outbound call to place.
#[derive(Debug, Clone)]
pub struct DialRequest {
    /// Whom to call: a SIP URI, or a number or user name that is called at
    /// the proxy (`sip:<to>@<proxy>`).
    pub to: String,
    /// The caller's user part or SIP URI (`roomkit` when not given).
    pub from: Option<String>,
    /// Where to send the INVITE (`host:port`); the URI's host when absent.
    pub proxy: Option<String>,
    /// UDP or TCP.
    pub transport: Transport,
    /// Answers the trunk's digest challenge.
    pub credentials: Option<Credentials>,
    /// Handed through as the call's parameters (a `room_id`, ...).
    pub parameters: BTreeMap<String, String>,
    /// How long to wait for an answer.
    pub ring_timeout: Duration,
    /// Told when the callee's phone rings, answers, or the call fails.
    pub progress: Option<Arc<tokio::sync::watch::Sender<Option<DialProgress>>>>,
    /// The Call-ID to use (from [`new_call_id`]), so that the caller knows
    /// it before the call is answered; a fresh one when `None`.
    pub call_id: Option<String>,
}

/// A fresh Call-ID for an outbound call.
pub fn new_call_id() -> String {
    format!("{}@roomkit", dialog::token())
}

/// How far an outbound call got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialProgress {
    /// The callee's phone rings (180 or 183).
    Ringing {
        /// The call's Call-ID.
        call_id: String,
    },
    /// The callee answered.
    Answered {
        /// The call's Call-ID.
        call_id: String,
    },
    /// The call failed.
    Failed(DialError),
}

impl DialProgress {
    /// The Call-ID, once the call got that far.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Self::Ringing { call_id } | Self::Answered { call_id } => Some(call_id),
            Self::Failed(_) => None,
        }
    }
}

impl DialRequest {
    /// A call to `to` with defaults: UDP, no proxy, no credentials, 60 s to
    /// answer.
    pub fn new(to: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            from: None,
            proxy: None,
            transport: Transport::Udp,
            credentials: None,
            parameters: BTreeMap::new(),
            ring_timeout: Duration::from_secs(60),
            progress: None,
            call_id: None,
        }
    }
}

/// Why an outbound call or a registration failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DialError {
    /// The destination is not a usable address.
    #[error("cannot reach {0:?}: not a SIP URI or host:port")]
    Address(String),
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// The peer answered with a final error.
    #[error("the call was refused: {code} {reason}")]
    Rejected {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
    /// Authentication failed or could not be answered.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Nobody answered in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer's media could not be used.
    #[error("unusable answer: {0}")]
    Media(String),
    /// A local resource ran out (RTP port, the agent's queues).
    #[error("{0}")]
    Local(String),
}

/// Resolves `host[:port]` (port 5060 by default).
async fn resolve(target: &str) -> Result<SocketAddr, DialError> {
    let (host, port) = match target.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse::<u16>()
                .map_err(|_| DialError::Address(target.to_owned()))?,
        ),
        _ => (target.trim_matches(['[', ']']).to_owned(), 5060),
    };
    if host.is_empty() {
        return Err(DialError::Address(target.to_owned()));
    }
    let looked_up = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map(|mut addrs| addrs.next());
    match looked_up {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(DialError::Resolve {
            host,
            reason: "no address".into(),
        }),
        Err(e) => Err(DialError::Resolve {
            host,
            reason: e.to_string(),
        }),
    }
}

fn payload_type_of(codec: MediaCodec) -> u8 {
    match codec {
        MediaCodec::Pcmu => 0,
        MediaCodec::Pcma => 8,
        MediaCodec::Opus => 111,
    }
}

/// Who a request outside a dialog is from and to.
struct Addressing<'a> {
    uri: &'a str,
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
}

/// A request outside any dialog.
fn new_request(
    core: &Core,
    method: Method,
    a: &Addressing<'_>,
    cseq: u32,
    transport: Transport,
) -> SipMessage {
    let (uri, from, to, call_id) = (a.uri, a.from, a.to, a.call_id);
    let mut r = SipMessage::request(method.clone(), uri);
    r.push("Via", core.via(transport));
    r.push("Max-Forwards", "70");
    r.push("From", from);
    r.push("To", to);
    r.push("Call-ID", call_id);
    r.push("CSeq", format!("{cseq} {method}"));
    r.push("Contact", format!("<sip:roomkit@{}>", core.host_port()));
    r.push("User-Agent", core.config.user_agent.clone());
    r
}

/// Adds the answer to a 401/407 challenge to `request`; `Err` when it
/// cannot be answered.
fn authorize(
    request: &mut SipMessage,
    challenge_response: &SipMessage,
    credentials: Option<&Credentials>,
    uri: &str,
) -> Result<(), DialError> {
    let proxy = challenge_response.status() == Some(407);
    let header = if proxy {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    let credentials = credentials.ok_or_else(|| {
        DialError::Auth(format!(
            "the peer asks for credentials ({}) and none are configured",
            challenge_response.status().unwrap_or_default()
        ))
    })?;
    let challenge = challenge_response
        .headers_named(header)
        .find_map(|v| Challenge::parse(v).ok())
        .ok_or_else(|| DialError::Auth(format!("no usable {header} challenge")))?;
    let method = request
        .method()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let value = challenge.answer(
        &credentials.username,
        &credentials.password,
        &method,
        uri,
        1,
        &dialog::token(),
    );
    request.set(
        if proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        },
        value,
    );
    Ok(())
}

/// The ACK for a non-2xx final answer to an INVITE (same transaction).
fn ack_for_failure(invite: &SipMessage, response: &SipMessage) -> SipMessage {
    let uri = match &invite.start {
        crate::message::StartLine::Request { uri, .. } => uri.clone(),
        crate::message::StartLine::Response { .. } => String::new(),
    };
    let mut ack = SipMessage::request(Method::Ack, uri);
    if let Some(via) = invite.header("Via") {
        ack.push("Via", top_value(via).to_owned());
    }
    ack.push("Max-Forwards", "70");
    for name in ["From", "Call-ID"] {
        if let Some(v) = invite.header(name) {
            ack.push(name, v.to_owned());
        }
    }
    if let Some(to) = response.header("To") {
        ack.push("To", to.to_owned());
    }
    let seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
    ack.push("CSeq", format!("{seq} ACK"));
    ack
}

/// Sends `request` and waits for its final response (retransmitting over
/// UDP), handing provisional ones to `on_provisional`.
async fn transact(
    core: &Core,
    request: &SipMessage,
    peer: Peer,
    rx: &mut mpsc::Receiver<(SipMessage, Peer)>,
    timeout: Duration,
    on_provisional: &mut (dyn FnMut(u16) + Send),
) -> Result<SipMessage, DialError> {
    core.send(request, peer).await;
    let start = Instant::now();
    let mut interval = T1;
    let mut next = Some(start + T1).filter(|_| peer.transport == Transport::Udp);
    let branch = request.branch().map(str::to_owned);
    let seq = request.cseq().map(|c| c.seq).ok();
    loop {
        let deadline = start + timeout;
        let wake = next.map_or(deadline, |n| n.min(deadline));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Err(DialError::Timeout(timeout));
                }
                core.send(request, peer).await;
                interval = (interval * 2).min(T2);
                next = Some(Instant::now() + interval);
            }
            m = rx.recv() => {
                let Some((m, _)) = m else {
                    return Err(DialError::Local("the user agent stopped".into()));
                };
                let Some(code) = m.status() else { continue };
                if m.branch().map(str::to_owned) != branch || m.cseq().map(|c| c.seq).ok() != seq {
                    continue;
                }
                if code >= 200 {
                    return Ok(m);
                }
                on_provisional(code);
                // A provisional answer stops retransmission (RFC 3261 §17.1.1.2).
                if request.method() == Some(&Method::Invite) {
                    next = None;
                }
            }
        }
    }
}

impl SipEndpoint {
    /// Places a call and returns it once answered (hand it to a voice
    /// channel's `start_call`).
    ///
    /// # Errors
    /// [`DialError`] when the destination cannot be reached, refuses,
    /// fails authentication, or does not answer in time.
    pub async fn dial(&self, request: DialRequest) -> Result<Call, DialError> {
        let core = &self.core;
        let target_host = match &request.proxy {
            Some(p) => p.clone(),
            None => {
                let (host, port) = crate::message::host_port_of(&request.to)
                    .ok_or_else(|| DialError::Address(request.to.clone()))?;
                match port {
                    Some(p) if host.contains(':') => format!("[{host}]:{p}"),
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_owned(),
                }
            }
        };
        let addr = resolve(&target_host).await?;
        let peer = Peer {
            addr,
            transport: request.transport,
        };
        let uri = if request.to.starts_with("sip:") || request.to.starts_with("sips:") {
            request.to.clone()
        } else {
            format!("sip:{}@{target_host}", request.to)
        };
        let from_uri = match &request.from {
            Some(f) if f.starts_with("sip:") => f.clone(),
            Some(user) => format!("sip:{user}@{}", core.host_port()),
            None => format!("sip:roomkit@{}", core.host_port()),
        };
        let local_tag = dialog::token();
        let from = format!("<{from_uri}>;tag={local_tag}");
        let to = format!("<{uri}>");
        let call_id = request.call_id.clone().unwrap_or_else(new_call_id);
        let mut rx = core
            .open_dialog(&call_id)
            .ok_or_else(|| DialError::Local("Call-ID collision".into()))?;
        core.active.fetch_add(1, Ordering::Relaxed);
        let result = self
            .invite(&uri, &from, &to, &call_id, peer, &request, &mut rx)
            .await;
        match result {
            Ok((invite, ok, socket, media, session_timer)) => {
                let remote = ok.header("To").unwrap_or_default().to_owned();
                let remote_target = ok
                    .header("Contact")
                    .map(|c| uri_of(top_value(c)).to_owned())
                    .unwrap_or_else(|| uri.clone());
                let mut dialog = Dialog {
                    call_id: call_id.clone(),
                    local: from.clone(),
                    remote,
                    remote_target,
                    local_cseq: invite.cseq().map(|c| c.seq).unwrap_or(1),
                    remote_cseq: 0,
                    peer,
                };
                // ACK the 2xx: a new transaction at the remote target.
                let mut ack = dialog.request(core, Method::Ack);
                dialog.local_cseq -= 1;
                ack.set("CSeq", format!("{} ACK", dialog.local_cseq));
                core.send(&ack, peer).await;
                let Some((mut call, task, links)) =
                    wire_call(core, &invite, &dialog, &local_tag, socket, &media)
                else {
                    return Err(DialError::Local("cannot start the call's media".into()));
                };
                call.info.parameters.extend(request.parameters.clone());
                core.stats.calls_established.fetch_add(1, Ordering::Relaxed);
                call.media = Some(crate::inbound::media_work(task));
                let established = Established {
                    core: core.clone(),
                    dialog,
                    rx,
                    control: links.control,
                    notices: links.notices,
                    events: links.events,
                    media,
                    session_timer,
                    last_response: None,
                };
                tokio::spawn(established.run());
                tracing::info!(target: "roomkit.sip", %call_id, to = %uri, "outbound call answered");
                if let Some(p) = &request.progress {
                    p.send_replace(Some(DialProgress::Answered {
                        call_id: call_id.clone(),
                    }));
                }
                Ok(call)
            }
            Err(e) => {
                core.close_dialog(&call_id);
                core.active.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(target: "roomkit.sip", %call_id, to = %uri, error = %e, "outbound call failed");
                if let Some(p) = &request.progress {
                    p.send_replace(Some(DialProgress::Failed(e.clone())));
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn invite(
        &self,
        uri: &str,
        from: &str,
        to: &str,
        call_id: &str,
        peer: Peer,
        request: &DialRequest,
        rx: &mut mpsc::Receiver<(SipMessage, Peer)>,
    ) -> Result<
        (
            SipMessage,
            SipMessage,
            (tokio::net::UdpSocket, Option<tokio::net::UdpSocket>),
            MediaState,
            Option<(u32, bool)>,
        ),
        DialError,
    > {
        let core = &self.core;
        let socket = core
            .rtp_socket()
            .await
            .map_err(|e| DialError::Local(format!("no RTP port: {e}")))?;
        let rtp_port = socket.0.local_addr().map(|a| a.port()).unwrap_or_default();
        let offered: Vec<(MediaCodec, u8)> = core
            .config
            .codecs
            .iter()
            .map(|c| (*c, payload_type_of(*c)))
            .collect();
        let session_id = u64::from(crate::media::rand_u32());
        let offer = dialog::describe(
            core,
            session_id,
            1,
            rtp_port,
            &offered,
            Some(TELEPHONE_EVENT_PT),
            Direction::SendRecv,
        );
        let mut cseq = 1;
        let mut invite = new_request(
            core,
            Method::Invite,
            &Addressing {
                uri,
                from,
                to,
                call_id,
            },
            cseq,
            peer.transport,
        );
        if core.config.session_expires > 0 {
            invite.push("Session-Expires", core.config.session_expires.to_string());
            invite.push("Supported", "timer");
        }
        invite.set_body("application/sdp", offer.into_bytes());
        let mut authenticated = false;
        let deadline = Instant::now() + request.ring_timeout;
        let ok = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut ringing = |code: u16| {
                if (code == 180 || code == 183)
                    && let Some(p) = &request.progress
                {
                    p.send_replace(Some(DialProgress::Ringing {
                        call_id: call_id.to_owned(),
                    }));
                }
            };
            let response = match transact(core, &invite, peer, rx, left, &mut ringing).await {
                Ok(r) => r,
                Err(DialError::Timeout(_)) => {
                    // Withdraw the INVITE (RFC 3261 §9.1).
                    let mut cancel = ack_for_failure(&invite, &invite);
                    cancel.start = crate::message::StartLine::Request {
                        method: Method::Cancel,
                        uri: uri.to_owned(),
                    };
                    cancel.set("CSeq", format!("{cseq} CANCEL"));
                    core.send(&cancel, peer).await;
                    return Err(DialError::Timeout(request.ring_timeout));
                }
                Err(e) => return Err(e),
            };
            let code = response.status().unwrap_or_default();
            if (200..300).contains(&code) {
                break response;
            }
            core.send(&ack_for_failure(&invite, &response), peer).await;
            if (code == 401 || code == 407) && !authenticated {
                authenticated = true;
                cseq += 1;
                let mut again = invite.clone();
                again.set("CSeq", format!("{cseq} INVITE"));
                again.set("Via", core.via(peer.transport));
                authorize(&mut again, &response, request.credentials.as_ref(), uri)?;
                invite = again;
                continue;
            }
            let reason = match &response.start {
                crate::message::StartLine::Response { reason, .. } => reason.clone(),
                crate::message::StartLine::Request { .. } => String::new(),
            };
            if code == 401 || code == 407 {
                return Err(DialError::Auth(format!(
                    "the credentials were refused ({code} {reason})"
                )));
            }
            return Err(DialError::Rejected { code, reason });
        };
        let answer = SessionDescription::parse(&ok.body)
            .map_err(|e| DialError::Media(format!("unreadable SDP answer: {e}")))?;
        let supported: Vec<sdp::Codec> = core.config.codecs.iter().map(|c| c.sdp_codec()).collect();
        let agreement =
            sdp::answer_audio(&answer, &supported).map_err(|e| DialError::Media(e.to_string()))?;
        let codec = MediaCodec::from_sdp(agreement.codec.encoding, agreement.codec.clock_rate)
            .ok_or_else(|| DialError::Media("no supported codec".into()))?;
        let direction = answer
            .media
            .get(agreement.media_index)
            .map(|m| m.direction)
            .unwrap_or_default();
        let (send, receive) = dialog::flows(direction);
        let session_timer = dialog::session_expires(&ok).map(|interval| {
            let we_refresh = ok
                .header("Session-Expires")
                .and_then(|v| param(v, "refresher").map(str::to_owned))
                .is_none_or(|r| r.eq_ignore_ascii_case("uac"));
            (interval.max(dialog::MIN_SESSION_EXPIRES), we_refresh)
        });
        let media = MediaState {
            codec,
            params: StreamParams {
                payload_type: agreement.payload_type,
                telephone_event: agreement.telephone_event,
                remote: agreement.remote.map(|(ip, port)| SocketAddr::new(ip, port)),
                send,
                receive,
                latch: crate::inbound::behind_nat(agreement.remote.map(|(ip, _)| ip), peer),
            },
            rtp_port,
            session_id,
            version: 1,
        };
        Ok((invite, ok, socket, media, session_timer))
    }

    /// Keeps `registration` registered, refreshing at half its lifetime
    /// and retrying failures every 30 s, until the returned handle is
    /// dropped (which does not unregister).
    pub fn register(&self, registration: Registration) -> RegistrationHandle {
        let core = self.core.clone();
        let state = Arc::new(std::sync::Mutex::new(RegistrationState::Pending));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let call_id = format!("{}@roomkit", dialog::token());
            let mut cseq = 0u32;
            loop {
                let outcome = register_once(&core, &registration, &call_id, &mut cseq).await;
                let wait = match outcome {
                    Ok(expires) => {
                        tracing::info!(target: "roomkit.sip", registrar = %registration.registrar, user = %registration.user, expires, "registered");
                        if let Ok(mut s) = shared.lock() {
                            *s = RegistrationState::Registered { expires };
                        }
                        Duration::from_secs(u64::from(expires.max(2) / 2))
                    }
                    Err(e) => {
                        tracing::warn!(target: "roomkit.sip", registrar = %registration.registrar, user = %registration.user, error = %e, "registration failed; retrying in 30 s");
                        if let Ok(mut s) = shared.lock() {
                            *s = RegistrationState::Failed(e.to_string());
                        }
                        Duration::from_secs(30)
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
        RegistrationHandle { task, state }
    }
}

/// Whether a peer kept alive with OPTIONS answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reachability {
    /// Not asked yet.
    Unknown,
    /// It answered (any final status: a peer that refuses OPTIONS is
    /// still alive), with the round trip in milliseconds.
    Reachable {
        /// Status of its answer.
        status: u16,
        /// Round trip of the request.
        rtt_ms: u64,
    },
    /// It did not answer, or could not be resolved.
    Unreachable(String),
}

/// A peer kept alive with OPTIONS; dropping it stops the pings.
#[derive(Debug)]
pub struct KeepAliveHandle {
    task: tokio::task::JoinHandle<()>,
    state: Arc<std::sync::Mutex<Reachability>>,
}

impl KeepAliveHandle {
    /// The last answer.
    pub fn state(&self) -> Reachability {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(Reachability::Unknown)
    }
}

impl Drop for KeepAliveHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SipEndpoint {
    /// Sends OPTIONS to `target` (`host[:port]`) every `interval`, keeping
    /// NAT bindings open and telling whether the trunk is up (logged when
    /// it changes).
    pub fn keep_alive(
        &self,
        target: &str,
        transport: Transport,
        interval: Duration,
    ) -> KeepAliveHandle {
        let core = self.core.clone();
        let target = target.to_owned();
        let state = Arc::new(std::sync::Mutex::new(Reachability::Unknown));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let call_id = format!("{}@roomkit", dialog::token());
            let mut cseq = 0u32;
            let mut was_up: Option<bool> = None;
            loop {
                cseq += 1;
                let started = Instant::now();
                let outcome = ping(&core, &target, transport, &call_id, cseq).await;
                let now = match outcome {
                    Ok(status) => Reachability::Reachable {
                        status,
                        rtt_ms: started.elapsed().as_millis() as u64,
                    },
                    Err(e) => Reachability::Unreachable(e.to_string()),
                };
                let up = matches!(now, Reachability::Reachable { .. });
                if was_up != Some(up) {
                    if up {
                        tracing::info!(target: "roomkit.sip", %target, state = ?now, "trunk reachable");
                    } else {
                        tracing::warn!(target: "roomkit.sip", %target, state = ?now, "trunk unreachable");
                    }
                    was_up = Some(up);
                }
                if let Ok(mut s) = shared.lock() {
                    *s = now;
                }
                tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
            }
        });
        KeepAliveHandle { task, state }
    }
}

/// One OPTIONS transaction; the final status.
async fn ping(
    core: &Arc<Core>,
    target: &str,
    transport: Transport,
    call_id: &str,
    cseq: u32,
) -> Result<u16, DialError> {
    let addr = resolve(target).await?;
    let peer = Peer { addr, transport };
    let uri = format!("sip:{target}");
    let from = format!("<sip:roomkit@{}>;tag={}", core.host_port(), dialog::token());
    let to = format!("<{uri}>");
    let request = new_request(
        core,
        Method::Options,
        &Addressing {
            uri: &uri,
            from: &from,
            to: &to,
            call_id,
        },
        cseq,
        transport,
    );
    let mut rx = loop {
        if let Some(rx) = core.open_dialog(call_id) {
            break rx;
        }
        core.close_dialog(call_id);
    };
    let result = transact(
        core,
        &request,
        peer,
        &mut rx,
        Duration::from_secs(8),
        &mut |_| {},
    )
    .await;
    core.close_dialog(call_id);
    result.map(|r| r.status().unwrap_or_default())
}

/// A binding to keep at a registrar.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The registrar, `host[:port]`.
    pub registrar: String,
    /// The domain of the address of record (the registrar's host when
    /// absent).
    pub domain: Option<String>,
    /// The user part of the address of record.
    pub user: String,
    /// UDP or TCP.
    pub transport: Transport,
    /// Answers the registrar's challenge.
    pub credentials: Option<Credentials>,
    /// The lifetime asked for, in seconds.
    pub expires: u32,
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not answered yet.
    Pending,
    /// Registered for `expires` seconds (refreshed at half).
    Registered {
        /// Lifetime granted.
        expires: u32,
    },
    /// The last attempt failed.
    Failed(String),
}

/// A registration kept alive; dropping it stops the refreshes.
#[derive(Debug)]
pub struct RegistrationHandle {
    task: tokio::task::JoinHandle<()>,
    state: Arc<std::sync::Mutex<RegistrationState>>,
}

impl RegistrationHandle {
    /// Where it stands.
    pub fn state(&self) -> RegistrationState {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or(RegistrationState::Pending)
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One REGISTER transaction (with its challenge); returns the lifetime
/// granted.
async fn register_once(
    core: &Arc<Core>,
    registration: &Registration,
    call_id: &str,
    cseq: &mut u32,
) -> Result<u32, DialError> {
    let addr = resolve(&registration.registrar).await?;
    let peer = Peer {
        addr,
        transport: registration.transport,
    };
    let domain = registration
        .domain
        .clone()
        .unwrap_or_else(|| registration.registrar.clone());
    let uri = format!("sip:{domain}");
    let aor = format!("<sip:{}@{domain}>", registration.user);
    let mut rx = loop {
        if let Some(rx) = core.open_dialog(call_id) {
            break rx;
        }
        core.close_dialog(call_id);
    };
    let result =
        register_exchange(core, registration, &uri, &aor, call_id, cseq, peer, &mut rx).await;
    core.close_dialog(call_id);
    result
}

/// REGISTER, and again with credentials when challenged.
#[allow(clippy::too_many_arguments)]
async fn register_exchange(
    core: &Core,
    registration: &Registration,
    uri: &str,
    aor: &str,
    call_id: &str,
    cseq: &mut u32,
    peer: Peer,
    rx: &mut mpsc::Receiver<(SipMessage, Peer)>,
) -> Result<u32, DialError> {
    *cseq += 1;
    let from = format!("{aor};tag={}", dialog::token());
    let mut register = new_request(
        core,
        Method::Register,
        &Addressing {
            uri,
            from: &from,
            to: aor,
            call_id,
        },
        *cseq,
        peer.transport,
    );
    register.set(
        "Contact",
        format!(
            "<sip:{}@{}>;expires={}",
            registration.user,
            core.host_port(),
            registration.expires
        ),
    );
    register.push("Expires", registration.expires.to_string());
    let response = transact(core, &register, peer, rx, TRANSACTION_TIMEOUT, &mut |_| {}).await?;
    let code = response.status().unwrap_or_default();
    if code != 401 && code != 407 {
        return granted(&response, registration.expires);
    }
    *cseq += 1;
    let mut again = register.clone();
    again.set("CSeq", format!("{} REGISTER", *cseq));
    again.set("Via", core.via(peer.transport));
    authorize(
        &mut again,
        &response,
        registration.credentials.as_ref(),
        uri,
    )?;
    let response = transact(core, &again, peer, rx, TRANSACTION_TIMEOUT, &mut |_| {}).await?;
    granted(&response, registration.expires)
}

/// The lifetime a 2xx to REGISTER grants, or the refusal.
fn granted(response: &SipMessage, asked: u32) -> Result<u32, DialError> {
    let code = response.status().unwrap_or_default();
    if !(200..300).contains(&code) {
        let reason = match &response.start {
            crate::message::StartLine::Response { reason, .. } => reason.clone(),
            crate::message::StartLine::Request { .. } => String::new(),
        };
        return Err(if code == 401 || code == 407 {
            DialError::Auth(format!("the credentials were refused ({code} {reason})"))
        } else {
            DialError::Rejected { code, reason }
        });
    }
    let from_contact = response
        .header("Contact")
        .and_then(|c| param(top_value(c), "expires"))
        .and_then(|e| e.parse::<u32>().ok());
    let from_header = response
        .header("Expires")
        .and_then(|e| e.trim().parse::<u32>().ok());
    Ok(from_contact.or(from_header).unwrap_or(asked))
}
