//! The SIP user agent (RFC 3261): one listening address over UDP and TCP,
//! the messages' way in and out, and which call each belongs to.
//!
//! [`SipEndpoint::bind`] opens the listener and returns the endpoint and a
//! receiver of [`Call`]s: every INVITE that ends in an established call
//! (answered and acknowledged) arrives there, ready for a voice channel's
//! `start_call`. [`SipEndpoint::dial`] places an outbound call and returns
//! it once answered; [`SipEndpoint::register`] keeps a registration at a
//! registrar alive.
//!
//! Every message is read by [`SipMessage::parse`]; what cannot be read is
//! answered `400 Bad Request` when it is a request whose headers allow an
//! answer, and otherwise dropped, always with a log line and a counter.
//! Responses go back to the address the request came from, over the same
//! transport (RFC 3581 symmetric response routing, which is what works
//! behind a NAT), and in-dialog requests go to the address the dialog's
//! peer used.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use roomkit_voice::Call;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::media::MediaCodec;
use crate::message::{Method, SipMessage, top_value};

/// RFC 3261's T1: the first retransmission interval over UDP.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261's T2: the longest retransmission interval.
pub const T2: Duration = Duration::from_secs(4);
/// How long a transaction waits for its final response (64 × T1).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);
/// The methods this agent answers, for `Allow`.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO, REFER, NOTIFY";
/// Messages queued for one dialog before more are dropped.
const DIALOG_QUEUE: usize = 32;

/// How a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// A TCP connection.
    Tcp,
}

impl Transport {
    /// The name in a `Via` header.
    pub fn via_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        }
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Network address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// How the user agent runs.
#[derive(Debug, Clone)]
pub struct SipConfig {
    /// Where to listen, for UDP and TCP alike.
    pub listen: SocketAddr,
    /// The address written into Contact, Via and SDP; by default the
    /// listening address, or, when that is a wildcard, the address of the
    /// interface that routes outward.
    pub advertise: Option<IpAddr>,
    /// RTP ports to use, inclusive; `None` lets the system pick.
    pub rtp_ports: Option<(u16, u16)>,
    /// A call whose peer sends no RTP for this long is ended.
    pub rtp_timeout: Duration,
    /// How often RTCP reports are sent (RFC 3550 recommends 5 s).
    pub rtcp_interval: Duration,
    /// How long an inbound call rings (180) before it is answered.
    pub ring: Duration,
    /// Codecs offered and accepted, in preference order.
    pub codecs: Vec<MediaCodec>,
    /// The most calls at once; more INVITEs are answered 486 Busy Here.
    pub max_calls: usize,
    /// The `User-Agent` / `Server` header.
    pub user_agent: String,
    /// The session interval asked for on outbound calls (RFC 4028), in
    /// seconds; 0 asks for none.
    pub session_expires: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060),
            advertise: None,
            rtp_ports: None,
            rtp_timeout: Duration::from_secs(30),
            rtcp_interval: Duration::from_secs(5),
            ring: Duration::ZERO,
            codecs: default_codecs(),
            max_calls: 1000,
            user_agent: format!("RoomKit/{}", env!("CARGO_PKG_VERSION")),
            session_expires: 0,
        }
    }
}

/// The codecs a build supports, in preference order: G.711 µ-law and
/// A-law, then Opus when built with it.
pub fn default_codecs() -> Vec<MediaCodec> {
    vec![MediaCodec::Pcmu, MediaCodec::Pcma, MediaCodec::Opus]
}

/// Why the user agent could not start.
#[derive(Debug, Error)]
pub enum SipStartError {
    /// A socket could not be bound.
    #[error("cannot listen for SIP on {addr} ({transport}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// UDP or TCP.
        transport: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
}

/// One SIP message crossing the network, for protocol traces (RFC §15.6).
#[derive(Debug, Clone)]
pub struct SipTrace {
    /// Received (else sent).
    pub inbound: bool,
    /// The message's Call-ID.
    pub call_id: String,
    /// A one-line summary (`INVITE from ... to ...`, `200 OK (INVITE)`).
    pub summary: String,
    /// The whole message as sent or received.
    pub raw: String,
    /// The other side.
    pub peer: SocketAddr,
}

/// Receives protocol traces; called on the user agent's tasks, so it must
/// not block.
pub trait SipTracer: Send + Sync + 'static {
    /// One message in or out.
    fn trace(&self, trace: SipTrace);
}

/// The user agent's counters.
#[derive(Debug, Default)]
pub struct SipStats {
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Messages sent.
    pub messages_out: AtomicU64,
    /// Messages that could not be read.
    pub bad_messages: AtomicU64,
    /// INVITEs refused (busy, no codec, bad SDP, ...).
    pub calls_refused: AtomicU64,
    /// Calls established.
    pub calls_established: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) type DialogSender = mpsc::Sender<(SipMessage, Peer)>;

/// What all of the agent's tasks share.
pub(crate) struct Core {
    pub config: SipConfig,
    pub udp: UdpSocket,
    pub local: SocketAddr,
    pub advertise: IpAddr,
    pub dialogs: Mutex<HashMap<String, DialogSender>>,
    tcp: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    pub calls: mpsc::Sender<Call>,
    tracer: RwLock<Option<Arc<dyn SipTracer>>>,
    pub stats: SipStats,
    pub rtp: Arc<crate::media::RtpStats>,
    pub active: AtomicUsize,
    next_rtp: AtomicUsize,
    /// The core itself, for the tasks it starts.
    weak: RwLock<std::sync::Weak<Core>>,
}

impl Core {
    /// Sends a message to a peer, over a TCP connection (reused, or opened)
    /// or as a datagram.
    pub async fn send(&self, message: &SipMessage, peer: Peer) {
        let bytes = message.to_bytes();
        self.trace(false, message, &bytes, peer.addr);
        bump(&self.stats.messages_out);
        let sent = match peer.transport {
            Transport::Udp => self.udp.send_to(&bytes, peer.addr).await.map(|_| ()),
            Transport::Tcp => self.send_tcp(bytes, peer.addr).await,
        };
        if let Err(e) = sent {
            tracing::warn!(target: "roomkit.sip", peer = %peer.addr, transport = peer.transport.via_name(), error = %e, message = %message.summary(), "could not send a SIP message");
        }
    }

    async fn send_tcp(&self, bytes: Vec<u8>, addr: SocketAddr) -> std::io::Result<()> {
        let existing = self.tcp.lock().ok().and_then(|m| m.get(&addr).cloned());
        if let Some(tx) = existing
            && tx.send(bytes.clone()).await.is_ok()
        {
            return Ok(());
        }
        // No connection yet (an outbound call over TCP): open one.
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let tx = self.adopt_tcp(stream, addr);
        tx.send(bytes)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed"))
    }

    /// Runs a TCP connection: a writer fed by a queue, a reader that frames
    /// and dispatches messages.
    fn adopt_tcp(&self, stream: TcpStream, addr: SocketAddr) -> mpsc::Sender<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        if let Ok(mut map) = self.tcp.lock() {
            map.insert(addr, tx.clone());
        }
        let (mut read, mut write) = stream.into_split();
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let core = self.me();
        tokio::spawn(async move {
            let Some(core) = core else { return };
            let mut buffer: Vec<u8> = Vec::with_capacity(4096);
            let mut chunk = vec![0u8; 8192];
            let peer = Peer {
                addr,
                transport: Transport::Tcp,
            };
            'read: loop {
                let n = match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buffer.extend_from_slice(&chunk[..n]);
                loop {
                    match SipMessage::frame_len(&buffer) {
                        Ok(Some(len)) => {
                            let frame: Vec<u8> = buffer.drain(..len).collect();
                            if frame.iter().all(|b| *b == b'\r' || *b == b'\n') {
                                continue;
                            }
                            core.receive(&frame, peer).await;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            bump(&core.stats.bad_messages);
                            tracing::warn!(target: "roomkit.sip", peer = %addr, error = %e, "closing a TCP connection that sent an unreadable stream");
                            break 'read;
                        }
                    }
                }
            }
            if let Ok(mut map) = core.tcp.lock() {
                map.remove(&addr);
            }
        });
        tx
    }

    fn me(&self) -> Option<Arc<Core>> {
        self.weak.read().ok().and_then(|w| w.upgrade())
    }

    fn trace(&self, inbound: bool, message: &SipMessage, raw: &[u8], peer: SocketAddr) {
        let Some(tracer) = self.tracer.read().ok().and_then(|t| t.clone()) else {
            return;
        };
        tracer.trace(SipTrace {
            inbound,
            call_id: message.call_id().to_owned(),
            summary: trace_summary(message),
            raw: String::from_utf8_lossy(raw).into_owned(),
            peer,
        });
    }

    /// Reads and routes one message.
    pub async fn receive(&self, bytes: &[u8], peer: Peer) {
        bump(&self.stats.messages_in);
        let mut message = match SipMessage::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                bump(&self.stats.bad_messages);
                tracing::warn!(target: "roomkit.sip", peer = %peer.addr, error = %e, "dropped an unreadable SIP message");
                return;
            }
        };
        self.trace(true, &message, bytes, peer.addr);
        if message.method().is_some() {
            stamp_received(&mut message, peer.addr);
        }
        let call_id = message.call_id().to_owned();
        let dialog = self
            .dialogs
            .lock()
            .ok()
            .and_then(|d| d.get(&call_id).cloned());
        if let Some(tx) = dialog {
            if tx.try_send((message, peer)).is_err() {
                tracing::warn!(target: "roomkit.sip", %call_id, "a call's SIP queue is full: message dropped");
            }
            return;
        }
        let Some(method) = message.method().cloned() else {
            tracing::debug!(target: "roomkit.sip", %call_id, status = message.status(), "a response for no transaction of ours: dropped");
            return;
        };
        match method {
            Method::Invite if message.to_tag().is_none() => {
                if let Some(core) = self.me() {
                    crate::inbound::start(core, message, peer).await;
                }
            }
            Method::Options => {
                let mut ok = self.response(&message, 200, "OK");
                ok.set("Accept", "application/sdp");
                self.send(&ok, peer).await;
            }
            Method::Ack => {}
            Method::Register => {
                let mut no = self.response(&message, 405, "Method Not Allowed");
                no.set("Allow", ALLOW);
                self.send(&no, peer).await;
            }
            Method::Invite
            | Method::Bye
            | Method::Cancel
            | Method::Info
            | Method::Update
            | Method::Refer
            | Method::Notify
            | Method::Prack => {
                let no = self.response(&message, 481, "Call/Transaction Does Not Exist");
                self.send(&no, peer).await;
            }
            Method::Other(_) => {
                let mut no = self.response(&message, 501, "Not Implemented");
                no.set("Allow", ALLOW);
                self.send(&no, peer).await;
            }
        }
    }

    /// A response to `request` carrying this agent's `Server`, `Allow` and
    /// `Supported` headers (no To tag: add it for dialog responses).
    pub fn response(&self, request: &SipMessage, code: u16, reason: &str) -> SipMessage {
        let mut r = SipMessage::response_to(request, code, reason);
        r.set("Server", self.config.user_agent.clone());
        r.set("Allow", ALLOW);
        r.set("Supported", "timer");
        r
    }

    /// This agent's Via `sent-by` and Contact host.
    pub fn host_port(&self) -> String {
        match self.advertise {
            IpAddr::V6(v6) => format!("[{v6}]:{}", self.local.port()),
            IpAddr::V4(v4) => format!("{v4}:{}", self.local.port()),
        }
    }

    /// A `Via` value for a new request over `transport`, with a fresh
    /// branch and `rport` (RFC 3581).
    pub fn via(&self, transport: Transport) -> String {
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{};rport",
            transport.via_name(),
            self.host_port(),
            token()
        )
    }

    /// Registers a queue for a Call-ID's messages; `None` when the Call-ID
    /// is taken.
    pub fn open_dialog(&self, call_id: &str) -> Option<mpsc::Receiver<(SipMessage, Peer)>> {
        let (tx, rx) = mpsc::channel(DIALOG_QUEUE);
        let mut dialogs = self.dialogs.lock().ok()?;
        if dialogs.contains_key(call_id) {
            return None;
        }
        dialogs.insert(call_id.to_owned(), tx);
        Some(rx)
    }

    /// Forgets a Call-ID.
    pub fn close_dialog(&self, call_id: &str) {
        if let Ok(mut dialogs) = self.dialogs.lock() {
            dialogs.remove(call_id);
        }
    }

    /// The UDP sockets for a call's RTP and RTCP (the next port up), from
    /// the configured range (even RTP ports, RFC 3550 §11) or chosen by the
    /// system; the RTCP socket is `None` when its port is taken.
    pub async fn rtp_socket(&self) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
        let ip = self.local.ip();
        let Some((low, high)) = self.config.rtp_ports else {
            // Look for a free pair a few times, then settle for RTP alone.
            let mut last = None;
            for _ in 0..8 {
                let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
                let port = rtp.local_addr()?.port();
                if let Some(next) = port.checked_add(1)
                    && let Ok(rtcp) = UdpSocket::bind(SocketAddr::new(ip, next)).await
                {
                    return Ok((rtp, Some(rtcp)));
                }
                last = Some(rtp);
            }
            return match last {
                Some(rtp) => Ok((rtp, None)),
                None => UdpSocket::bind(SocketAddr::new(ip, 0))
                    .await
                    .map(|s| (s, None)),
            };
        };
        let low = low + (low % 2);
        let span = usize::from(high.saturating_sub(low) / 2 + 1);
        for _ in 0..span {
            let k = self.next_rtp.fetch_add(1, Ordering::Relaxed) % span;
            let Ok(offset) = u16::try_from(k * 2) else {
                continue;
            };
            let port = low.saturating_add(offset);
            if let Ok(socket) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
                let rtcp = match port.checked_add(1) {
                    Some(p) => UdpSocket::bind(SocketAddr::new(ip, p)).await.ok(),
                    None => None,
                };
                return Ok((socket, rtcp));
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("no free RTP port in {low}-{high}"),
        ))
    }
}

/// The summary a trace shows: `INVITE from X to Y`, `BYE from X`,
/// `200 OK (INVITE)`.
fn trace_summary(message: &SipMessage) -> String {
    use crate::message::{uri_of, user_of};
    let party = |name: &str| {
        message.header(name).map(|v| {
            let uri = uri_of(v);
            user_of(uri).unwrap_or(uri).to_owned()
        })
    };
    match message.method() {
        Some(Method::Invite) => format!(
            "INVITE from {} to {}",
            party("From").unwrap_or_default(),
            party("To").unwrap_or_default()
        ),
        Some(method) => format!("{method} from {}", party("From").unwrap_or_default()),
        None => message.summary(),
    }
}

/// Adds `received` (and fills an empty `rport`) on the top Via of a
/// request when its sent-by is not where it came from (RFC 3261
/// §18.2.1, RFC 3581).
fn stamp_received(message: &mut SipMessage, from: SocketAddr) {
    let Some((_, via)) = message.headers.iter_mut().find(|(n, _)| n == "Via") else {
        return;
    };
    let top = top_value(via).to_owned();
    let rest = via[top.len()..].to_owned();
    let mut params: Vec<String> = top.split(';').map(str::to_owned).collect();
    let mut changed = false;
    for p in params.iter_mut().skip(1) {
        if p.trim().eq_ignore_ascii_case("rport") {
            *p = format!("rport={}", from.port());
            changed = true;
        }
    }
    let sent_by_host = params
        .first()
        .and_then(|v| v.split_whitespace().nth(1))
        .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
        .map(|h| h.trim_matches(['[', ']']).to_owned());
    if sent_by_host.as_deref() != Some(&from.ip().to_string()) || changed {
        if !params.iter().any(|p| p.trim().starts_with("received=")) {
            params.push(format!("received={}", from.ip()));
        }
        *via = format!("{}{}", params.join(";"), rest);
    }
}

/// Binds UDP and TCP on the same port. With port 0 the system picks the
/// UDP port, and the TCP port of that number may be taken: then another
/// UDP port is tried, a few times.
async fn bind_pair(
    listen: SocketAddr,
) -> Result<(UdpSocket, TcpListener, SocketAddr), SipStartError> {
    let attempts = if listen.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| SipStartError::Bind {
                addr: listen,
                transport: "udp",
                source,
            })?;
        let local = udp.local_addr().map_err(|source| SipStartError::Bind {
            addr: listen,
            transport: "udp",
            source,
        })?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp, local)),
            Err(source) => {
                last = Some(SipStartError::Bind {
                    addr: local,
                    transport: "tcp",
                    source,
                });
            }
        }
    }
    Err(last.unwrap_or(SipStartError::Bind {
        addr: listen,
        transport: "tcp",
        source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port pair"),
    }))
}

/// A fresh token for tags and branches.
pub(crate) fn token() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..16].to_owned()
}

/// A running SIP user agent.
#[derive(Clone)]
pub struct SipEndpoint {
    pub(crate) core: Arc<Core>,
}

impl std::fmt::Debug for SipEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipEndpoint")
            .field("local", &self.core.local)
            .finish_non_exhaustive()
    }
}

/// The address of the interface that routes outward (no packet is sent).
fn outward_address(v6: bool) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if v6 {
        ("[::]:0".parse().ok()?, "[2001:db8::1]:9".parse().ok()?)
    } else {
        ("0.0.0.0:0".parse().ok()?, "192.0.2.1:9".parse().ok()?)
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(probe).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

impl SipEndpoint {
    /// Starts listening. Established inbound calls arrive on the returned
    /// receiver; a receiver that is dropped or full makes new calls be
    /// answered `503 Service Unavailable`.
    ///
    /// # Errors
    /// [`SipStartError::Bind`] when the address is taken or not local.
    pub async fn bind(config: SipConfig) -> Result<(Self, mpsc::Receiver<Call>), SipStartError> {
        let (udp, tcp, local) = bind_pair(config.listen).await?;
        let advertise = config.advertise.unwrap_or_else(|| {
            if local.ip().is_unspecified() {
                outward_address(local.is_ipv6()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            } else {
                local.ip()
            }
        });
        let (calls, rx) = mpsc::channel(64);
        let core = Arc::new(Core {
            config,
            udp,
            local,
            advertise,
            dialogs: Mutex::new(HashMap::new()),
            tcp: Mutex::new(HashMap::new()),
            calls,
            tracer: RwLock::new(None),
            stats: SipStats::default(),
            rtp: Arc::new(crate::media::RtpStats::default()),
            active: AtomicUsize::new(0),
            next_rtp: AtomicUsize::new(0),
            weak: RwLock::new(std::sync::Weak::new()),
        });
        if let Ok(mut w) = core.weak.write() {
            *w = Arc::downgrade(&core);
        }
        let udp_core = Arc::downgrade(&core);
        tokio::spawn(async move {
            let mut buf = vec![0u8; crate::message::MAX_MESSAGE_LEN + 1];
            loop {
                let Some(core) = udp_core.upgrade() else {
                    break;
                };
                let received = core.udp.recv_from(&mut buf).await;
                match received {
                    Ok((n, from)) => {
                        let Some(bytes) = buf.get(..n) else { continue };
                        // CRLF keep-alives (RFC 5626) need no answer.
                        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                            continue;
                        }
                        core.receive(
                            bytes,
                            Peer {
                                addr: from,
                                transport: Transport::Udp,
                            },
                        )
                        .await;
                    }
                    Err(e) => {
                        // ICMP port unreachable from a vanished peer shows
                        // up here on some systems; keep listening.
                        tracing::debug!(target: "roomkit.sip", error = %e, "UDP receive error");
                    }
                }
            }
        });
        let tcp_core = Arc::downgrade(&core);
        tokio::spawn(async move {
            loop {
                let accepted = tcp.accept().await;
                let Some(core) = tcp_core.upgrade() else {
                    break;
                };
                match accepted {
                    Ok((stream, addr)) => {
                        core.adopt_tcp(stream, addr);
                    }
                    Err(e) => {
                        tracing::warn!(target: "roomkit.sip", error = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(target: "roomkit.sip", %local, advertise = %advertise, "SIP user agent listening (UDP and TCP)");
        Ok((Self { core }, rx))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.core.local
    }

    /// The address written into Contact, Via and SDP.
    pub fn advertised_ip(&self) -> IpAddr {
        self.core.advertise
    }

    /// Sends every SIP message in and out to `tracer` from now on.
    pub fn set_tracer(&self, tracer: Arc<dyn SipTracer>) {
        if let Ok(mut t) = self.core.tracer.write() {
            *t = Some(tracer);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &SipStats {
        &self.core.stats
    }

    /// The RTP counters, summed over every call.
    pub fn rtp_stats(&self) -> &crate::media::RtpStats {
        &self.core.rtp
    }

    /// Calls in progress or established.
    pub fn active_calls(&self) -> usize {
        self.core.active.load(Ordering::Relaxed)
    }
}
