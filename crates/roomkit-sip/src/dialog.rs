//! An established call's signalling (RFC 3261 §12): the dialog's identity
//! and the task that serves it until BYE.
//!
//! The task answers what the peer sends inside the call: BYE ends it,
//! re-INVITE and UPDATE change the media (hold is a direction of
//! `sendonly` or `inactive`; resume goes back to `sendrecv`) and refresh
//! the session timer (RFC 4028), INFO may carry a digit, NOTIFY reports a
//! transfer's progress. It also acts for the voice session: a hang-up or
//! an RTP timeout becomes a BYE (retransmitted over UDP until answered), a
//! transfer request becomes a REFER (RFC 3515) followed by a BYE once the
//! transfer target answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use roomkit_voice::BackendEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::media::{MediaCodec, MediaControl, MediaNotice, StreamParams};
use crate::message::{Method, SipMessage};
use crate::sdp::{self, Direction, SessionDescription};
use crate::ua::{Core, Peer, T1, T2, TRANSACTION_TIMEOUT, Transport};

/// The shortest session interval accepted (RFC 4028 §4: 90 s).
pub const MIN_SESSION_EXPIRES: u32 = 90;

pub(crate) use crate::ua::token;

/// Who the dialog is between and where its requests go.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    pub call_id: String,
    /// Our party with our tag (From in our requests).
    pub local: String,
    /// Their party with their tag (To in our requests).
    pub remote: String,
    /// The Request-URI of our in-dialog requests (the peer's Contact).
    pub remote_target: String,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Where the peer's signalling comes from.
    pub peer: Peer,
}

impl Dialog {
    /// A new in-dialog request.
    pub fn request(&mut self, core: &Core, method: Method) -> SipMessage {
        self.local_cseq += 1;
        let cseq = format!("{} {method}", self.local_cseq);
        let mut r = SipMessage::request(method, self.remote_target.clone());
        r.push("Via", core.via(self.peer.transport));
        r.push("Max-Forwards", "70");
        r.push("From", self.local.clone());
        r.push("To", self.remote.clone());
        r.push("Call-ID", self.call_id.clone());
        r.push("CSeq", cseq);
        r.push("Contact", format!("<sip:roomkit@{}>", core.host_port()));
        r.push("User-Agent", core.config.user_agent.clone());
        r
    }
}

/// What the media was agreed with, to answer re-offers consistently.
#[derive(Debug, Clone)]
pub(crate) struct MediaState {
    pub codec: MediaCodec,
    pub params: StreamParams,
    pub rtp_port: u16,
    pub session_id: u64,
    pub version: u64,
}

impl MediaState {
    /// This side's SDP for the current state, with `direction`.
    pub fn describe(&mut self, core: &Core, direction: Direction) -> String {
        self.version += 1;
        describe(
            core,
            self.session_id,
            self.version,
            self.rtp_port,
            &[(self.codec, self.params.payload_type)],
            self.params.telephone_event,
            direction,
        )
    }
}

/// An SDP for one audio stream on `port` offering `codecs` (with their
/// payload types) and telephone events.
pub(crate) fn describe(
    core: &Core,
    session_id: u64,
    version: u64,
    port: u16,
    codecs: &[(MediaCodec, u8)],
    telephone_event: Option<u8>,
    direction: Direction,
) -> String {
    let mut media = sdp::Media {
        kind: "audio".into(),
        port,
        protocol: "RTP/AVP".into(),
        formats: Vec::new(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: Some(20),
        direction,
        attributes: Vec::new(),
    };
    for (codec, pt) in codecs {
        media.formats.push(*pt);
        let (encoding, channels) = match codec {
            MediaCodec::Pcmu => ("PCMU", None),
            MediaCodec::Pcma => ("PCMA", None),
            MediaCodec::Opus => ("opus", Some(2)),
        };
        media.rtpmaps.push(sdp::RtpMap {
            payload_type: *pt,
            encoding: encoding.into(),
            clock_rate: codec.clock_rate(),
            channels,
        });
    }
    if let Some(te) = telephone_event {
        media.formats.push(te);
        media.rtpmaps.push(sdp::RtpMap {
            payload_type: te,
            encoding: "telephone-event".into(),
            clock_rate: 8000,
            channels: None,
        });
        media.fmtps.push((te, "0-16".into()));
    }
    SessionDescription {
        origin: sdp::Origin {
            username: "roomkit".into(),
            session_id,
            session_version: version,
            address: core.advertise,
        },
        session_name: "RoomKit".into(),
        connection: Some(core.advertise),
        media: vec![media],
    }
    .to_string()
}

/// What an offer's direction means for our stream: (we send, they send).
pub(crate) fn flows(offered: Direction) -> (bool, bool) {
    match offered {
        Direction::SendRecv => (true, true),
        Direction::SendOnly => (false, true),
        Direction::RecvOnly => (true, false),
        Direction::Inactive => (false, false),
    }
}

/// The session interval of a request's `Session-Expires`, if any.
pub(crate) fn session_expires(message: &SipMessage) -> Option<u32> {
    message
        .header("Session-Expires")
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse::<u32>().ok())
}

/// A request sent and not yet answered, retransmitted over UDP.
struct Pending {
    message: SipMessage,
    method: Method,
    next: Instant,
    interval: Duration,
    deadline: Instant,
}

/// An established call's signalling task.
pub(crate) struct Established {
    pub core: Arc<Core>,
    pub dialog: Dialog,
    pub rx: mpsc::Receiver<(SipMessage, Peer)>,
    pub control: mpsc::Sender<MediaControl>,
    pub notices: mpsc::Receiver<MediaNotice>,
    pub events: mpsc::Sender<BackendEvent>,
    pub media: MediaState,
    /// Session interval agreed, in seconds, and whether we refresh.
    pub session_timer: Option<(u32, bool)>,
    /// The last response to each request, by CSeq, for retransmissions.
    pub last_response: Option<(u32, SipMessage)>,
}

impl Established {
    /// Serves the call until it ends; returns why.
    pub async fn run(mut self) -> String {
        let mut pending: Option<Pending> = None;
        let mut ending: Option<String> = None;
        let mut timer_deadline = self.timer_deadline();
        let mut transferring = false;
        let reason = loop {
            let retransmit_at = pending.as_ref().map(|p| p.next);
            tokio::select! {
                incoming = self.rx.recv() => {
                    let Some((message, peer)) = incoming else {
                        break "signalling closed".to_owned();
                    };
                    if let Some(code) = message.status() {
                        let method = message.cseq().map(|c| c.method).ok();
                        if let Some(p) = &pending
                            && Some(&p.method) == method.as_ref()
                            && code >= 200
                        {
                            if let Some(done) = pending.take()
                                && done.method == Method::Refer
                                && !(200..300).contains(&code)
                            {
                                tracing::warn!(target: "roomkit.sip", call_id = %self.dialog.call_id, code, "the peer refused the transfer");
                                transferring = false;
                            }
                            if let Some(reason) = &ending {
                                break reason.clone();
                            }
                        } else if code >= 200 && method == Some(Method::Invite) {
                            // A 2xx retransmitted for our refresh re-INVITE: ACK again.
                            self.ack_invite(&message).await;
                        }
                        continue;
                    }
                    match self.on_request(message, peer, &mut timer_deadline, transferring).await {
                        Some(Outcome::End(reason)) => break reason,
                        Some(Outcome::TransferDone) => {
                            transferring = false;
                            let bye = self.dialog.request(&self.core, Method::Bye);
                            self.core.send(&bye, self.dialog.peer).await;
                            let _ = self.control.send(MediaControl::Stop("transferred".into())).await;
                            ending = Some("transferred".into());
                            pending = Some(self.pending(bye, Method::Bye));
                        }
                        None => {}
                    }
                }
                notice = self.notices.recv(), if ending.is_none() => {
                    let reason = match notice {
                        Some(MediaNotice::HangUp) | None => "local hangup".to_owned(),
                        Some(MediaNotice::Timeout) => "rtp timeout".to_owned(),
                        Some(MediaNotice::Transfer(target)) => {
                            if transferring || pending.is_some() {
                                tracing::warn!(target: "roomkit.sip", call_id = %self.dialog.call_id, %target, "a transfer is already under way");
                                continue;
                            }
                            let mut refer = self.dialog.request(&self.core, Method::Refer);
                            refer.push("Refer-To", format!("<{}>", self.transfer_uri(&target)));
                            refer.push("Referred-By", format!("<{}>", crate::message::uri_of(&self.dialog.local)));
                            tracing::info!(target: "roomkit.sip", call_id = %self.dialog.call_id, %target, "transferring the call (REFER)");
                            self.core.send(&refer, self.dialog.peer).await;
                            transferring = true;
                            pending = Some(self.pending(refer, Method::Refer));
                            continue;
                        }
                        Some(MediaNotice::DtmfUnsupported(digit)) => {
                            tracing::warn!(target: "roomkit.sip", call_id = %self.dialog.call_id, %digit, "the call has no telephone-event payload: digit not sent");
                            continue;
                        }
                    };
                    let bye = self.dialog.request(&self.core, Method::Bye);
                    self.core.send(&bye, self.dialog.peer).await;
                    let _ = self.control.send(MediaControl::Stop(reason.clone())).await;
                    ending = Some(reason);
                    pending = Some(self.pending(bye, Method::Bye));
                }
                _ = sleep_until_opt(retransmit_at) => {
                    let Some(p) = pending.as_mut() else { continue };
                    if Instant::now() >= p.deadline {
                        let method = p.method.clone();
                        pending = None;
                        tracing::warn!(target: "roomkit.sip", call_id = %self.dialog.call_id, %method, "no answer to our request");
                        if let Some(reason) = ending.clone() {
                            break reason;
                        }
                        if method == Method::Refer {
                            transferring = false;
                        }
                        continue;
                    }
                    self.core.send(&p.message, self.dialog.peer).await;
                    p.interval = (p.interval * 2).min(T2);
                    p.next = Instant::now() + p.interval;
                }
                _ = sleep_until_opt(timer_deadline), if ending.is_none() => {
                    match self.session_timer {
                        Some((interval, true)) => {
                            // We refresh: a re-INVITE with the same media.
                            let mut invite = self.dialog.request(&self.core, Method::Invite);
                            invite.push("Session-Expires", format!("{interval};refresher=uac"));
                            invite.push("Supported", "timer");
                            let body = self.media.describe(&self.core, self.current_direction());
                            invite.set_body("application/sdp", body.into_bytes());
                            self.core.send(&invite, self.dialog.peer).await;
                            timer_deadline = self.timer_deadline();
                        }
                        _ => {
                            tracing::info!(target: "roomkit.sip", call_id = %self.dialog.call_id, "the session timer expired without a refresh: ending the call");
                            let bye = self.dialog.request(&self.core, Method::Bye);
                            self.core.send(&bye, self.dialog.peer).await;
                            let _ = self.control.send(MediaControl::Stop("session expired".into())).await;
                            ending = Some("session expired".into());
                            pending = Some(self.pending(bye, Method::Bye));
                        }
                    }
                }
            }
        };
        self.core.close_dialog(&self.dialog.call_id);
        self.core.active.fetch_sub(1, Ordering::Relaxed);
        let _ = self.control.send(MediaControl::Stop(reason.clone())).await;
        tracing::info!(target: "roomkit.sip", call_id = %self.dialog.call_id, %reason, "call ended");
        reason
    }

    /// A transfer target as a SIP URI: a URI as given, a number at the
    /// peer's host.
    fn transfer_uri(&self, target: &str) -> String {
        if target.starts_with("sip:") || target.starts_with("sips:") || target.starts_with("tel:") {
            return target.to_owned();
        }
        let host = crate::message::host_port_of(&self.dialog.remote_target)
            .map(|(h, p)| match p {
                Some(p) if h.contains(':') => format!("[{h}]:{p}"),
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
            .unwrap_or_else(|| self.dialog.peer.addr.to_string());
        format!("sip:{target}@{host}")
    }

    fn current_direction(&self) -> Direction {
        match (self.media.params.send, self.media.params.receive) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    fn pending(&self, message: SipMessage, method: Method) -> Pending {
        let now = Instant::now();
        let reliable = self.dialog.peer.transport == Transport::Tcp;
        Pending {
            message,
            method,
            // Over TCP nothing is retransmitted: only the timeout applies.
            next: if reliable {
                now + TRANSACTION_TIMEOUT
            } else {
                now + T1
            },
            interval: T1,
            deadline: now + TRANSACTION_TIMEOUT,
        }
    }

    /// When the session timer fires: our refresh at half the interval, or
    /// the peer's missing refresh (RFC 4028 §10: a third before the end,
    /// at most 32 s before).
    fn timer_deadline(&self) -> Option<Instant> {
        let (interval, we_refresh) = self.session_timer?;
        let interval = u64::from(interval);
        let after = if we_refresh {
            interval / 2
        } else {
            interval - (interval / 3).min(32)
        };
        Some(Instant::now() + Duration::from_secs(after))
    }

    async fn ack_invite(&mut self, response: &SipMessage) {
        let Ok(cseq) = response.cseq() else { return };
        let mut ack = self.dialog.request(&self.core, Method::Ack);
        self.dialog.local_cseq -= 1;
        ack.set("CSeq", format!("{} ACK", cseq.seq));
        self.core.send(&ack, self.dialog.peer).await;
    }

    async fn reply(&mut self, request: &SipMessage, response: SipMessage) {
        if let Ok(cseq) = request.cseq() {
            self.last_response = Some((cseq.seq, response.clone()));
        }
        self.core.send(&response, self.dialog.peer).await;
    }

    async fn on_request(
        &mut self,
        request: SipMessage,
        peer: Peer,
        timer_deadline: &mut Option<Instant>,
        transferring: bool,
    ) -> Option<Outcome> {
        let method = request.method().cloned()?;
        let Ok(cseq) = request.cseq() else {
            return None;
        };
        if method == Method::Ack {
            return None;
        }
        // The peer's signalling may move (a new TCP connection, a NAT
        // rebinding); follow it.
        self.dialog.peer = peer;
        if method != Method::Cancel && cseq.seq <= self.dialog.remote_cseq {
            // A retransmission: answer as before.
            if let Some((seq, response)) = &self.last_response
                && *seq == cseq.seq
            {
                let response = response.clone();
                self.core.send(&response, peer).await;
            }
            return None;
        }
        if method != Method::Cancel {
            self.dialog.remote_cseq = cseq.seq;
        }
        match method {
            Method::Bye => {
                let ok = self.core.response(&request, 200, "OK");
                self.reply(&request, ok).await;
                Some(Outcome::End("remote hangup".into()))
            }
            Method::Invite | Method::Update => {
                let response = self.reoffer(&request);
                let refreshed = response.status() == Some(200);
                self.reply(&request, response).await;
                if refreshed {
                    *timer_deadline = self.timer_deadline();
                }
                None
            }
            Method::Info => {
                if let Some(digit) = info_digit(&request) {
                    let _ = self.events.try_send(BackendEvent::Dtmf(digit));
                }
                let ok = self.core.response(&request, 200, "OK");
                self.reply(&request, ok).await;
                None
            }
            Method::Notify => {
                let ok = self.core.response(&request, 200, "OK");
                self.reply(&request, ok).await;
                let body = String::from_utf8_lossy(&request.body);
                let status = body
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("SIP/2.0 "))
                    .and_then(|l| l.split_whitespace().next())
                    .and_then(|c| c.parse::<u16>().ok());
                match status {
                    Some(code) if transferring && (200..300).contains(&code) => {
                        tracing::info!(target: "roomkit.sip", call_id = %self.dialog.call_id, "the transfer target answered");
                        Some(Outcome::TransferDone)
                    }
                    Some(code) if transferring && code >= 300 => {
                        tracing::warn!(target: "roomkit.sip", call_id = %self.dialog.call_id, code, "the transfer failed; the call stays up");
                        None
                    }
                    _ => None,
                }
            }
            Method::Options | Method::Cancel => {
                let ok = self.core.response(&request, 200, "OK");
                self.reply(&request, ok).await;
                None
            }
            Method::Refer => {
                let no = self.core.response(&request, 603, "Decline");
                self.reply(&request, no).await;
                None
            }
            _ => {
                let no = self.core.response(&request, 501, "Not Implemented");
                self.reply(&request, no).await;
                None
            }
        }
    }

    /// Answers a re-INVITE or UPDATE: new media when it carries an offer
    /// (hold, resume, a new address), the session timer refreshed.
    fn reoffer(&mut self, request: &SipMessage) -> SipMessage {
        let mut direction = self.current_direction();
        if !request.body.is_empty() {
            let offer = match SessionDescription::parse(&request.body) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(target: "roomkit.sip", call_id = %self.dialog.call_id, error = %e, "unreadable SDP in a re-offer");
                    let mut r = self.core.response(request, 488, "Not Acceptable Here");
                    r.set("Warning", format!("399 roomkit \"{e}\""));
                    return r;
                }
            };
            let supported = [self.media.codec.sdp_codec()];
            match sdp::answer_audio(&offer, &supported) {
                Ok(agreement) => {
                    let offered = offer
                        .media
                        .get(agreement.media_index)
                        .map(|m| m.direction)
                        .unwrap_or_default();
                    let (send, receive) = flows(offered);
                    let params = StreamParams {
                        payload_type: agreement.payload_type,
                        telephone_event: agreement.telephone_event,
                        remote: agreement
                            .remote
                            .map(|(ip, port)| std::net::SocketAddr::new(ip, port)),
                        send,
                        receive,
                        latch: self.media.params.latch,
                    };
                    if params != self.media.params {
                        tracing::info!(target: "roomkit.sip", call_id = %self.dialog.call_id, send, receive, "media changed by the peer (hold or resume)");
                        self.media.params = params.clone();
                        let _ = self.control.try_send(MediaControl::Update(params));
                    }
                    direction = agreement.direction;
                }
                Err(e) => {
                    let mut r = self.core.response(request, 488, "Not Acceptable Here");
                    r.set("Warning", format!("399 roomkit \"{e}\""));
                    return r;
                }
            }
        }
        let mut ok = self.core.response(request, 200, "OK");
        ok.set(
            "Contact",
            format!("<sip:roomkit@{}>", self.core.host_port()),
        );
        if let Some(asked) = session_expires(request) {
            let interval = asked.max(MIN_SESSION_EXPIRES);
            self.session_timer = Some((interval, false));
            ok.set("Session-Expires", format!("{interval};refresher=uac"));
            ok.set("Require", "timer");
        }
        if request.method() == Some(&Method::Invite) || !request.body.is_empty() {
            let body = self.media.describe(&self.core, direction);
            ok.set_body("application/sdp", body.into_bytes());
        }
        ok
    }
}

/// What a request did to the call.
enum Outcome {
    End(String),
    TransferDone,
}

/// A digit from an INFO body (`application/dtmf-relay`: `Signal=5`, or
/// `application/dtmf`: `5`).
fn info_digit(request: &SipMessage) -> Option<char> {
    let kind = request.header("Content-Type")?.to_ascii_lowercase();
    let body = std::str::from_utf8(&request.body).ok()?;
    let value = if kind.starts_with("application/dtmf-relay") {
        body.lines().find_map(|l| {
            let (name, value) = l.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| value.trim())
        })?
    } else if kind.starts_with("application/dtmf") {
        body.trim()
    } else {
        return None;
    };
    roomkit_voice::backend::dtmf_digit(value)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
