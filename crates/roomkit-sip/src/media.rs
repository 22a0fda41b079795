//! One call's RTP media: the task that receives, buffers, decodes and
//! delivers the caller's audio, and encodes and sends the agent's, both on
//! one 20 ms clock.
//!
//! - **Receiving.** Datagrams are read as RTP ([`crate::rtp`]); audio goes
//!   into the adaptive [`JitterBuffer`], RFC 4733 telephone events become
//!   one [`BackendEvent::Dtmf`] per event. From the first packet on, every
//!   tick delivers exactly one frame: a decoded packet, the codec's
//!   concealment for a lost one, or (after concealment has faded) silence,
//!   so the call's media clock never stops while the call is up.
//! - **Sending.** The agent's frames queue here and leave one per tick,
//!   whatever pace the speech synthesis had; the RTP timestamp advances by
//!   one frame every tick, sent or not, so the far end's playout follows
//!   real time. Digits go out as RFC 4733 events (the audio waits).
//! - **Symmetric RTP.** When the caller is behind a NAT (its SDP names an
//!   address its signalling does not come from), media is sent to where
//!   the caller's media comes from, and packets from any other address are
//!   dropped and counted once the stream has a source. Otherwise media goes
//!   to the SDP address and must come from the SDP's host.
//! - **Ending.** A caller silent on the network for the RTP timeout, a
//!   hang-up from the voice session, or the dialog's stop ends the task;
//!   the dialog is told which.
//!
//! Nothing received is trusted: a datagram that is not RTP, is too long,
//! or carries an unknown payload type is dropped with a counter and a
//! (rate-limited) log line.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use roomkit_audio::codec::{AudioDecoder, AudioEncoder, G711, G711Law};
use roomkit_voice::{BackendEvent, Outbound, TransportStats};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::jitter::{Insert, JitterBuffer, Playout};
use crate::rtcp::{self, ReceiverCounts, SenderInfo};
use crate::rtp::{RtpError, RtpHeader, RtpPacket, TelephoneEvent};

/// Outbound frames queued before the oldest is dropped (two seconds).
const SEND_QUEUE: usize = 100;
/// One frame of the call's clock.
const FRAME: Duration = Duration::from_millis(20);
/// How long after a frame's time the clock's timer wakes the task when no
/// packet did.
const FRAME_SLACK: Duration = Duration::from_millis(15);
/// How far before the caller's packets the frames fall due.
const FRAME_LEAD: Duration = Duration::from_millis(5);
/// RFC 4733 end packets are sent three times (§2.5.1.4).
const END_REPEATS: u32 = 3;
/// The payload type of comfort noise (RFC 3389), ignored quietly.
const COMFORT_NOISE: u8 = 13;

/// RTP counters of a user agent's calls, summed over them, beyond each
/// call's [`TransportStats`].
#[derive(Debug, Default)]
pub struct RtpStats {
    /// Packets received and accepted.
    pub packets_in: AtomicU64,
    /// Packets sent.
    pub packets_out: AtomicU64,
    /// Datagrams that were not valid RTP (or were too long).
    pub bad_packets: AtomicU64,
    /// Packets from an address other than the stream's source.
    pub foreign_packets: AtomicU64,
    /// Packets of a payload type not negotiated.
    pub unknown_payload: AtomicU64,
    /// Packets that arrived after their playout time.
    pub late_packets: AtomicU64,
    /// Packets never received by their playout time.
    pub lost_packets: AtomicU64,
    /// Frames filled by concealment.
    pub concealed_frames: AtomicU64,
    /// Telephone events received.
    pub dtmf_in: AtomicU64,
    /// Interarrival jitter of the call that reported last, in microseconds.
    pub jitter_us: AtomicU64,
}

impl RtpStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The audio codec of a call's RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaCodec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus (48 kHz RTP clock; PCM at 16 kHz).
    Opus,
}

impl MediaCodec {
    /// The codec for an SDP encoding name and clock rate.
    pub fn from_sdp(encoding: &str, clock_rate: u32) -> Option<Self> {
        match (encoding.to_ascii_uppercase().as_str(), clock_rate) {
            ("PCMU", 8000) => Some(Self::Pcmu),
            ("PCMA", 8000) => Some(Self::Pcma),
            ("OPUS", 48000) => Some(Self::Opus),
            _ => None,
        }
    }

    /// The PCM rate the call's audio has.
    pub fn pcm_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma => 8000,
            Self::Opus => 16000,
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma => 8000,
            Self::Opus => 48000,
        }
    }

    /// The codec as SDP names it (encoding and RTP clock rate).
    pub fn sdp_codec(self) -> crate::sdp::Codec {
        let encoding = match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::Opus => "opus",
        };
        crate::sdp::Codec {
            encoding,
            clock_rate: self.clock_rate(),
        }
    }

    /// The name for logs and call info (`pcmu`, `pcma`, `opus`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "pcmu",
            Self::Pcma => "pcma",
            Self::Opus => "opus",
        }
    }

    fn coder(self) -> Result<Coder, String> {
        Ok(match self {
            Self::Pcmu => Coder::G711(G711::new(G711Law::Mu), G711::new(G711Law::Mu)),
            Self::Pcma => Coder::G711(G711::new(G711Law::A), G711::new(G711Law::A)),
            Self::Opus => Coder::Opus(
                Box::new(roomkit_audio::codec::OpusDecoder::new(16000).map_err(|e| e.to_string())?),
                Box::new(
                    roomkit_audio::codec::OpusEncoder::new(16000, 24_000)
                        .map_err(|e| e.to_string())?,
                ),
            ),
        })
    }
}

enum Coder {
    G711(G711, G711),
    Opus(
        Box<roomkit_audio::codec::OpusDecoder>,
        Box<roomkit_audio::codec::OpusEncoder>,
    ),
}

impl Coder {
    fn decoder(&mut self) -> &mut dyn AudioDecoder {
        match self {
            Self::G711(d, _) => d,
            Self::Opus(d, _) => d.as_mut(),
        }
    }

    fn encoder(&mut self) -> &mut dyn AudioEncoder {
        match self {
            Self::G711(_, e) => e,
            Self::Opus(_, e) => e.as_mut(),
        }
    }
}

/// What was negotiated for the stream (and may change on a re-INVITE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamParams {
    /// The audio payload type.
    pub payload_type: u8,
    /// The telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
    /// Where the peer's SDP says to send media.
    pub remote: Option<SocketAddr>,
    /// This side sends audio (the peer did not put the call on hold).
    pub send: bool,
    /// The peer sends audio (no RTP timeout while it does not).
    pub receive: bool,
    /// The peer is behind a NAT (its SDP names an address other than the
    /// one its signalling comes from): media is sent to wherever its media
    /// comes from (symmetric RTP, RFC 4961), and only that source is
    /// accepted once seen.
    pub latch: bool,
}

impl StreamParams {
    /// Whether a packet from `from` belongs to the stream, latching the
    /// source when it is the first.
    ///
    /// Behind a NAT the first source is latched, and the SDP address is
    /// always accepted too. Otherwise media must come from the SDP's host
    /// (any port: many peers send from another port than they receive on).
    pub fn accepts(&self, from: SocketAddr, source: &mut Option<SocketAddr>) -> bool {
        if self.latch {
            if self.remote == Some(from) || source.is_none() {
                *source = Some(from);
                return true;
            }
            return *source == Some(from);
        }
        match self.remote {
            Some(remote) if remote.ip() != from.ip() => false,
            _ => {
                *source = Some(from);
                true
            }
        }
    }

    /// Where media goes: the latched source behind a NAT, else the SDP
    /// address (or the source when the SDP named none).
    pub fn send_to(&self, source: Option<SocketAddr>) -> Option<SocketAddr> {
        if self.latch {
            source.or(self.remote)
        } else {
            self.remote.or(source)
        }
    }
}

/// What the dialog tells the media task.
#[derive(Debug)]
pub enum MediaControl {
    /// New stream parameters (re-INVITE: hold, resume, new address).
    Update(StreamParams),
    /// Stop: the call is over for `reason`.
    Stop(String),
}

/// What the media task tells the dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaNotice {
    /// The voice session hung up: send BYE.
    HangUp,
    /// The peer stopped sending media for the RTP timeout.
    Timeout,
    /// The voice session asked to send a digit the stream cannot carry.
    DtmfUnsupported(char),
    /// The voice session asked to transfer the call.
    Transfer(String),
}

/// A telephone event being sent.
#[derive(Debug)]
struct SendingEvent {
    code: u8,
    timestamp: u32,
    total: u32,
    sent: u32,
    ends: u32,
}

enum Queued {
    Audio(Vec<i16>),
    Mark(String),
}

/// Everything one media task owns.
pub struct MediaTask {
    /// The RTP socket (non-blocking; registered with the runtime that
    /// runs the task, when it starts).
    pub socket: std::net::UdpSocket,
    /// The RTCP socket (the RTP port + 1), when it could be bound; reports
    /// also arrive on the RTP socket when the peer multiplexes them.
    pub rtcp: Option<std::net::UdpSocket>,
    /// The codec.
    pub codec: MediaCodec,
    /// Stream parameters.
    pub params: StreamParams,
    /// Peer silence that ends the call.
    pub rtp_timeout: Duration,
    /// How often RTCP reports go out.
    pub rtcp_interval: Duration,
    /// Caller audio and digits, to the voice session.
    pub events: mpsc::Sender<BackendEvent>,
    /// The voice session's commands.
    pub outbound: mpsc::Receiver<Outbound>,
    /// The dialog's commands.
    pub control: mpsc::Receiver<MediaControl>,
    /// Notices to the dialog.
    pub notices: mpsc::Sender<MediaNotice>,
    /// The transport counters the voice session reads.
    pub stats: Arc<TransportStats>,
    /// RTP counters.
    pub rtp: Arc<RtpStats>,
    /// The call, for logs.
    pub call_id: String,
}

impl MediaTask {
    /// Runs until the call ends; returns why.
    pub async fn run(mut self) -> String {
        // The sockets join the I/O driver of the runtime running the task
        // (the call's thread, beside the voice session).
        let socket = match self.socket.try_clone().and_then(UdpSocket::from_std) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "roomkit.sip.media", call_id = %self.call_id, error = %e, "the RTP socket cannot be used");
                let _ = self.notices.try_send(MediaNotice::HangUp);
                return format!("rtp socket: {e}");
            }
        };
        let rtcp_socket = self
            .rtcp
            .as_ref()
            .and_then(|s| s.try_clone().ok())
            .and_then(|s| UdpSocket::from_std(s).ok());
        let mut coder = match self.codec.coder() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(target: "roomkit.sip.media", call_id = %self.call_id, error = %e, "codec failed to start");
                let _ = self.notices.try_send(MediaNotice::HangUp);
                return format!("codec failed: {e}");
            }
        };
        let pcm_rate = self.codec.pcm_rate();
        let frame = (pcm_rate / 50) as usize;
        let ts_per_frame = self.codec.clock_rate() / 50;
        let mut jitter = JitterBuffer::new(self.codec.clock_rate());
        jitter.set_packet_samples(ts_per_frame);
        // The 20 ms clock both directions run on; aligned to the caller's
        // packets once they come, so that their arrival drives it.
        let mut next_due = tokio::time::Instant::now() + FRAME;
        let mut buf = vec![0u8; 2048];
        let mut decoded = vec![0i16; 5760];
        let mut pending: Vec<i16> = Vec::with_capacity(frame * 4);
        let mut queue: VecDeque<Queued> = VecDeque::with_capacity(8);
        let mut encoded: Vec<u8> = Vec::with_capacity(320);
        let mut packet: Vec<u8> = Vec::with_capacity(400);
        let ssrc: u32 = rand_u32();
        let mut seq: u16 = (rand_u32() & 0x7fff) as u16;
        let mut timestamp: u32 = rand_u32();
        let mut talking = false;
        let mut source: Option<SocketAddr> = None;
        let mut last_rx = Instant::now();
        let mut started = false;
        let mut last_event: Option<u32> = None;
        let mut sending_event: Option<SendingEvent> = None;
        let mut logged_foreign = 0u64;
        let mut counts = ReceiverCounts::default();
        let (mut sent_packets, mut sent_octets) = (0u32, 0u32);
        let rtcp_interval = self.rtcp_interval.max(Duration::from_millis(100));
        let mut report =
            tokio::time::interval_at(tokio::time::Instant::now() + rtcp_interval, rtcp_interval);
        let mut rtcp_buf = vec![0u8; 1500];
        let mut rtcp_out: Vec<u8> = Vec::with_capacity(128);
        let mut rtcp_source: Option<SocketAddr> = None;
        let cname = format!("roomkit-{ssrc:08x}");
        loop {
            tokio::select! {
                received = recv_rtcp(rtcp_socket.as_ref(), &mut rtcp_buf) => {
                    let Some((n, from)) = received else { continue };
                    if let Some(data) = rtcp_buf.get(..n)
                        && self.on_rtcp(data, ssrc, &mut counts)
                    {
                        rtcp_source = Some(from);
                    }
                }
                _ = report.tick() => {
                    let target = rtcp_source.or_else(|| {
                        self.params.send_to(source).map(|a| SocketAddr::new(a.ip(), a.port().wrapping_add(1)))
                    });
                    let jitter = jitter.jitter() as u32;
                    let block = counts.block(jitter);
                    let sender = (sent_packets > 0).then(|| SenderInfo {
                        ntp: rtcp::ntp_of(std::time::SystemTime::now()),
                        rtp_timestamp: timestamp,
                        packets: sent_packets,
                        octets: sent_octets,
                    });
                    rtcp::write(ssrc, sender.as_ref(), block.as_ref(), &cname, &mut rtcp_out);
                    if let (Some(to), Some(socket)) = (target, rtcp_socket.as_ref()) {
                        let _ = socket.send_to(&rtcp_out, to).await;
                    }
                    self.stats.packets_lost.store(counts.lost().max(0) as u64, Ordering::Relaxed);
                }
                received = socket.recv_from(&mut buf) => {
                    let Ok((n, from)) = received else { continue };
                    let Some(data) = buf.get(..n) else { continue };
                    let packet = match RtpPacket::parse(data) {
                        Ok(p) => p,
                        Err(RtpError::Rtcp(_)) => {
                            // RTCP multiplexed on the RTP port (RFC 5761).
                            if self.on_rtcp(data, ssrc, &mut counts) {
                                rtcp_source = Some(from);
                            }
                            continue;
                        }
                        Err(e) => {
                            RtpStats::bump(&self.rtp.bad_packets);
                            TransportStats::bump(&self.stats.bad_messages);
                            tracing::debug!(target: "roomkit.sip.media", call_id = %self.call_id, %from, error = %e, "dropped a datagram that is not RTP");
                            continue;
                        }
                    };
                    if !self.params.accepts(from, &mut source) {
                        RtpStats::bump(&self.rtp.foreign_packets);
                        if logged_foreign.is_multiple_of(100) {
                            tracing::warn!(target: "roomkit.sip.media", call_id = %self.call_id, %from, expected = ?source.or(self.params.remote), dropped = logged_foreign + 1, "dropped RTP from an unexpected address");
                        }
                        logged_foreign += 1;
                        continue;
                    }
                    let pt = packet.header.payload_type;
                    if pt == self.params.payload_type || Some(pt) == self.params.telephone_event {
                        if counts.ssrc.is_some_and(|s| s != packet.header.ssrc) {
                            // A new source (a transfer, a media server
                            // switch): its numbering starts afresh.
                            jitter.reset();
                        }
                        counts.on_packet(packet.header.ssrc, packet.header.sequence);
                    }
                    if pt == self.params.payload_type {
                        if jitter.insert(packet.header.sequence, packet.header.timestamp, packet.payload, Instant::now()) == Insert::Late {
                            RtpStats::bump(&self.rtp.late_packets);
                        }
                    } else if Some(pt) == self.params.telephone_event {
                        // The event's sequence number holds a slot with no audio.
                        if jitter.insert(packet.header.sequence, packet.header.timestamp, &[], Instant::now()) == Insert::Late {
                            RtpStats::bump(&self.rtp.late_packets);
                        }
                        if let Ok(event) = TelephoneEvent::parse(packet.payload)
                            && last_event != Some(packet.header.timestamp)
                        {
                            last_event = Some(packet.header.timestamp);
                            if let Some(digit) = event.digit() {
                                RtpStats::bump(&self.rtp.dtmf_in);
                                tracing::debug!(target: "roomkit.sip.media", call_id = %self.call_id, %digit, "telephone event");
                                let _ = self.events.try_send(BackendEvent::Dtmf(digit));
                            }
                        }
                    } else if pt == COMFORT_NOISE {
                        // Comfort noise: the caller is silent; playout conceals.
                    } else {
                        RtpStats::bump(&self.rtp.unknown_payload);
                        tracing::debug!(target: "roomkit.sip.media", call_id = %self.call_id, payload_type = pt, "dropped RTP of a payload type not negotiated");
                        continue;
                    }
                    RtpStats::bump(&self.rtp.packets_in);
                    last_rx = Instant::now();
                    if !started {
                        // Frames fall due just before the caller's packets
                        // arrive (a little early, for their jitter).
                        next_due = tokio::time::Instant::now() - FRAME_LEAD;
                    }
                    started = true;
                }
                _ = tokio::time::sleep_until(next_due + FRAME_SLACK) => {}
                command = self.outbound.recv() => match command {
                    Some(Outbound::Audio(pcm)) => {
                        if queue.len() >= SEND_QUEUE {
                            TransportStats::bump(&self.stats.dropped_outbound);
                        } else {
                            queue.push_back(Queued::Audio(pcm));
                        }
                    }
                    Some(Outbound::Clear) => {
                        for q in queue.drain(..) {
                            if let Queued::Mark(name) = q {
                                let _ = self.events.try_send(BackendEvent::Mark(name));
                            }
                        }
                    }
                    Some(Outbound::Mark(name)) => queue.push_back(Queued::Mark(name)),
                    Some(Outbound::Dtmf { digit, duration_ms }) => {
                        match (self.params.telephone_event, TelephoneEvent::code_of(digit)) {
                            (Some(_), Some(code)) if sending_event.is_none() => {
                                let total = (duration_ms.clamp(40, 2000) * self.codec.clock_rate() / 1000).max(ts_per_frame);
                                sending_event = Some(SendingEvent { code, timestamp, total, sent: 0, ends: 0 });
                            }
                            _ => {
                                let _ = self.notices.try_send(MediaNotice::DtmfUnsupported(digit));
                            }
                        }
                    }
                    Some(Outbound::HangUp) | None => {
                        let _ = self.notices.try_send(MediaNotice::HangUp);
                        // Wait for the dialog's stop (it sends BYE first).
                        return self.wait_stop().await;
                    }
                    Some(Outbound::Transfer { target }) => {
                        let _ = self.notices.try_send(MediaNotice::Transfer(target));
                    }
                    Some(Outbound::Transcript { .. } | Outbound::AgentText(_)) => {}
                },
                control = self.control.recv() => match control {
                    Some(MediaControl::Update(params)) => {
                        tracing::debug!(target: "roomkit.sip.media", call_id = %self.call_id, ?params, "stream updated");
                        if params.remote != self.params.remote {
                            source = None;
                        }
                        self.params = params;
                        last_rx = Instant::now();
                    }
                    Some(MediaControl::Stop(reason)) => {
                        let _ = self.events.try_send(BackendEvent::HangUp { reason: reason.clone() });
                        return reason;
                    }
                    None => {
                        let _ = self.events.try_send(BackendEvent::HangUp { reason: "signalling ended".into() });
                        return "signalling ended".into();
                    }
                },
            }
            // Every frame whose time has come: one caller frame delivered,
            // one agent packet sent. A packet's arrival usually brings this
            // here; the timer above only when the caller is silent.
            while tokio::time::Instant::now() >= next_due {
                next_due += FRAME;
                // Caller side: one frame per tick once media flows.
                if started {
                    fill_frame(
                        &mut jitter,
                        coder.decoder(),
                        &mut pending,
                        &mut decoded,
                        frame,
                        &self.rtp,
                    );
                    let out: Vec<i16> = pending.drain(..frame).collect();
                    if self.events.try_send(BackendEvent::Audio(out)).is_err() {
                        TransportStats::bump(&self.stats.dropped_inbound);
                    } else {
                        TransportStats::bump(&self.stats.frames_in);
                    }
                    let jitter_us =
                        (jitter.jitter() * 1e6 / f64::from(self.codec.clock_rate())) as u64;
                    self.rtp.jitter_us.store(jitter_us, Ordering::Relaxed);
                    self.stats.jitter_us.store(jitter_us, Ordering::Relaxed);
                }
                if self.params.receive && last_rx.elapsed() > self.rtp_timeout {
                    tracing::info!(target: "roomkit.sip.media", call_id = %self.call_id, timeout_s = self.rtp_timeout.as_secs_f64(), "no RTP from the caller: ending the call");
                    let _ = self.notices.try_send(MediaNotice::Timeout);
                    let _ = self.events.try_send(BackendEvent::HangUp {
                        reason: "rtp timeout".into(),
                    });
                    return "rtp timeout".into();
                }
                // Agent side.
                let target = self.params.send_to(source);
                let mut header = RtpHeader {
                    marker: false,
                    payload_type: self.params.payload_type,
                    sequence: seq,
                    timestamp,
                    ssrc,
                };
                if let Some(event) = sending_event.as_mut() {
                    let (bytes, done) = next_event_packet(event, ts_per_frame);
                    header.payload_type = self
                        .params
                        .telephone_event
                        .unwrap_or(self.params.payload_type);
                    header.marker = event.sent == ts_per_frame;
                    header.timestamp = event.timestamp;
                    send(&socket, target, &header, &bytes, &mut packet, &self.rtp).await;
                    seq = seq.wrapping_add(1);
                    if done {
                        sending_event = None;
                        talking = false;
                    }
                    timestamp = timestamp.wrapping_add(ts_per_frame);
                    continue;
                }
                while let Some(Queued::Mark(_)) = queue.front() {
                    if let Some(Queued::Mark(name)) = queue.pop_front() {
                        let _ = self.events.try_send(BackendEvent::Mark(name));
                    }
                }
                match queue.pop_front() {
                    Some(Queued::Audio(pcm)) => {
                        if self.params.send && coder.encoder().encode(&pcm, &mut encoded).is_ok() {
                            header.marker = !talking;
                            send(&socket, target, &header, &encoded, &mut packet, &self.rtp).await;
                            seq = seq.wrapping_add(1);
                            sent_packets = sent_packets.wrapping_add(1);
                            sent_octets = sent_octets.wrapping_add(encoded.len() as u32);
                            TransportStats::bump(&self.stats.frames_out);
                            talking = true;
                        }
                    }
                    _ => talking = false,
                }
                while let Some(Queued::Mark(_)) = queue.front() {
                    if let Some(Queued::Mark(name)) = queue.pop_front() {
                        let _ = self.events.try_send(BackendEvent::Mark(name));
                    }
                }
                timestamp = timestamp.wrapping_add(ts_per_frame);
            }
        }
    }

    /// Reads an RTCP compound packet: an SR's time for our next report
    /// block, and the peer's report on our stream (round trip time).
    /// Returns whether it was readable.
    fn on_rtcp(&self, data: &[u8], ssrc: u32, counts: &mut ReceiverCounts) -> bool {
        let reports = match rtcp::parse(data) {
            Ok(r) => r,
            Err(e) => {
                RtpStats::bump(&self.rtp.bad_packets);
                tracing::debug!(target: "roomkit.sip.media", call_id = %self.call_id, error = %e, "dropped an unreadable RTCP packet");
                return false;
            }
        };
        let now = rtcp::ntp_middle(rtcp::ntp_of(std::time::SystemTime::now()));
        for report in reports {
            if let Some(sender) = report.sender
                && Some(report.ssrc) == counts.ssrc
            {
                counts.last_sr = Some((rtcp::ntp_middle(sender.ntp), Instant::now()));
            }
            for block in report.blocks.iter().filter(|b| b.ssrc == ssrc) {
                if let Some(rtt) = rtcp::round_trip(block, now) {
                    self.stats
                        .rtt_us
                        .store(rtt.as_micros() as u64, Ordering::Relaxed);
                }
                tracing::debug!(target: "roomkit.sip.media", call_id = %self.call_id, fraction_lost = block.fraction_lost, cumulative_lost = block.cumulative_lost, jitter = block.jitter, "RTCP report on our stream");
            }
        }
        true
    }

    async fn wait_stop(mut self) -> String {
        let reason = loop {
            match self.control.recv().await {
                Some(MediaControl::Stop(reason)) => break reason,
                Some(MediaControl::Update(_)) => {}
                None => break "local hangup".to_owned(),
            }
        };
        let _ = self.events.try_send(BackendEvent::HangUp {
            reason: reason.clone(),
        });
        reason
    }
}

/// Appends decoded (or concealed) audio to `pending` until it holds a frame.
fn fill_frame(
    jitter: &mut JitterBuffer,
    decoder: &mut dyn AudioDecoder,
    pending: &mut Vec<i16>,
    decoded: &mut [i16],
    frame: usize,
    rtp: &RtpStats,
) {
    while pending.len() < frame {
        let n = match jitter.pop() {
            Playout::Packet { payload, .. } if !payload.is_empty() => {
                decoder.decode(payload, decoded).unwrap_or_else(|_| {
                    RtpStats::bump(&rtp.bad_packets);
                    decoder.conceal(&mut decoded[..frame]).unwrap_or(0)
                })
            }
            Playout::Lost => {
                RtpStats::bump(&rtp.lost_packets);
                RtpStats::bump(&rtp.concealed_frames);
                decoder.conceal(&mut decoded[..frame]).unwrap_or(0)
            }
            // A telephone event's slot, or nothing to play: one frame of
            // concealment (it fades to silence by itself).
            _ => {
                RtpStats::bump(&rtp.concealed_frames);
                decoder.conceal(&mut decoded[..frame]).unwrap_or(0)
            }
        };
        if n == 0 {
            pending.resize(frame, 0);
            break;
        }
        pending.extend_from_slice(&decoded[..n.min(decoded.len())]);
    }
}

/// The next RFC 4733 packet of an event being sent: its payload, and
/// whether it was the last.
fn next_event_packet(event: &mut SendingEvent, step: u32) -> ([u8; 4], bool) {
    let mut done = false;
    let end = if event.sent + step >= event.total {
        event.sent = event.total;
        event.ends += 1;
        done = event.ends >= END_REPEATS;
        true
    } else {
        event.sent += step;
        false
    };
    let payload = TelephoneEvent {
        event: event.code,
        end,
        volume: 10,
        duration: event.sent.min(u32::from(u16::MAX)) as u16,
    };
    (payload.to_bytes(), done)
}

async fn send(
    socket: &UdpSocket,
    target: Option<SocketAddr>,
    header: &RtpHeader,
    payload: &[u8],
    packet: &mut Vec<u8>,
    rtp: &RtpStats,
) {
    let Some(target) = target else {
        return;
    };
    packet.clear();
    if header.write(payload, packet).is_err() {
        return;
    }
    if socket.send_to(packet, target).await.is_ok() {
        RtpStats::bump(&rtp.packets_out);
    }
}

/// The next datagram on the RTCP socket, or never when there is none.
async fn recv_rtcp(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// A random 32-bit value (SSRC, initial sequence and timestamp, RFC 3550
/// §5.1).
pub(crate) fn rand_u32() -> u32 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}
