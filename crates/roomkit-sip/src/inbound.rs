//! An inbound call from INVITE to established (RFC 3261 §13.3, the UAS
//! side): 100 Trying, the SDP answer (RFC 3264), 180 Ringing for the
//! configured ring time, 200 OK retransmitted until the ACK, and then the
//! call handed to the voice channel with its media running.
//!
//! Refusals carry a reason a peer's log shows: 486 when the agent is at
//! its call limit, 488 with a `Warning` when the offer is unreadable or
//! shares no codec, 422 with `Min-SE` for a session interval under 90 s,
//! 503 when no RTP port is free or nobody takes calls. A CANCEL while it
//! rings ends the attempt with 487; a BYE before the ACK ends it too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use roomkit_audio::AudioFormat;
use roomkit_voice::backend::{EVENT_QUEUE, OUTBOUND_QUEUE};
use roomkit_voice::{Call, CallInfo, TransportStats, VoiceCapabilities};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dialog::{self, Dialog, Established, MIN_SESSION_EXPIRES, MediaState};
use crate::media::{MediaCodec, MediaTask, StreamParams};
use crate::message::{Method, SipMessage, uri_of, user_of};
use crate::sdp::{self, SessionDescription};
use crate::ua::{Core, Peer, T1, T2, TRANSACTION_TIMEOUT, Transport};

/// Whether the peer's media address is not where its signalling comes
/// from (a NAT, or an SDP without an address): then media is latched.
pub(crate) fn behind_nat(media_ip: Option<std::net::IpAddr>, peer: Peer) -> bool {
    match media_ip {
        Some(ip) => ip.is_unspecified() || ip != peer.addr.ip(),
        None => true,
    }
}

/// Takes a new INVITE: registers its Call-ID and runs it on its own task.
pub(crate) async fn start(core: Arc<Core>, invite: SipMessage, peer: Peer) {
    let Some(rx) = core.open_dialog(invite.call_id()) else {
        return;
    };
    tokio::spawn(async move {
        let call_id = invite.call_id().to_owned();
        core.active.fetch_add(1, Ordering::Relaxed);
        let established = setup(&core, invite, peer, rx).await;
        match established {
            Some(call) => {
                call.run().await;
            }
            None => {
                core.close_dialog(&call_id);
                core.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    });
}

/// What the peer asked for, read from the INVITE.
struct Offer {
    codec: MediaCodec,
    params: StreamParams,
    direction: sdp::Direction,
    session_timer: Option<u32>,
}

/// Reads the offer, or says how to refuse it.
fn read_offer(
    core: &Core,
    invite: &SipMessage,
    peer: Peer,
) -> Result<Offer, (u16, &'static str, String)> {
    if core.active.load(Ordering::Relaxed) > core.config.max_calls {
        return Err((486, "Busy Here", "the agent is at its call limit".into()));
    }
    let asked = dialog::session_expires(invite);
    if let Some(interval) = asked
        && interval < MIN_SESSION_EXPIRES
    {
        return Err((
            422,
            "Session Interval Too Small",
            format!("session interval {interval} s is under {MIN_SESSION_EXPIRES} s"),
        ));
    }
    if invite.body.is_empty() {
        return Err((
            488,
            "Not Acceptable Here",
            "an INVITE without an SDP offer is not supported".into(),
        ));
    }
    let offer = SessionDescription::parse(&invite.body)
        .map_err(|e| (488, "Not Acceptable Here", format!("unreadable SDP: {e}")))?;
    let supported: Vec<sdp::Codec> = core.config.codecs.iter().map(|c| c.sdp_codec()).collect();
    let agreement = sdp::answer_audio(&offer, &supported)
        .map_err(|e| (488, "Not Acceptable Here", e.to_string()))?;
    let codec = MediaCodec::from_sdp(agreement.codec.encoding, agreement.codec.clock_rate)
        .ok_or((488, "Not Acceptable Here", "no supported codec".to_owned()))?;
    let offered = offer
        .media
        .get(agreement.media_index)
        .map(|m| m.direction)
        .unwrap_or_default();
    let (send, receive) = dialog::flows(offered);
    Ok(Offer {
        codec,
        params: StreamParams {
            payload_type: agreement.payload_type,
            telephone_event: agreement.telephone_event,
            remote: agreement.remote.map(|(ip, port)| SocketAddr::new(ip, port)),
            send,
            receive,
            latch: behind_nat(agreement.remote.map(|(ip, _)| ip), peer),
        },
        direction: agreement.direction,
        session_timer: asked,
    })
}

async fn refuse(core: &Core, invite: &SipMessage, peer: Peer, code: u16, reason: &str, why: &str) {
    tracing::info!(target: "roomkit.sip", call_id = %invite.call_id(), code, reason = why, "call refused");
    core.stats.calls_refused.fetch_add(1, Ordering::Relaxed);
    let mut r = core.response(invite, code, reason);
    r.set_to_tag(&dialog::token());
    if code == 422 {
        r.set("Min-SE", MIN_SESSION_EXPIRES.to_string());
    }
    r.set(
        "Warning",
        format!("399 roomkit \"{}\"", why.replace('"', "'")),
    );
    core.send(&r, peer).await;
}

/// Runs an INVITE to an established call; `None` when it ended before.
async fn setup(
    core: &Arc<Core>,
    invite: SipMessage,
    peer: Peer,
    mut rx: mpsc::Receiver<(SipMessage, Peer)>,
) -> Option<Established> {
    let call_id = invite.call_id().to_owned();
    tracing::info!(target: "roomkit.sip", %call_id, from = invite.header("From").unwrap_or_default(), to = invite.header("To").unwrap_or_default(), peer = %peer.addr, "incoming call");
    let trying = core.response(&invite, 100, "Trying");
    core.send(&trying, peer).await;
    let offer = match read_offer(core, &invite, peer) {
        Ok(o) => o,
        Err((code, reason, why)) => {
            refuse(core, &invite, peer, code, reason, &why).await;
            return None;
        }
    };
    let socket = match core.rtp_socket().await {
        Ok(s) => s,
        Err(e) => {
            refuse(
                core,
                &invite,
                peer,
                503,
                "Service Unavailable",
                &e.to_string(),
            )
            .await;
            return None;
        }
    };
    let rtp_port = socket.0.local_addr().map(|a| a.port()).unwrap_or_default();
    let local_tag = dialog::token();
    let mut media = MediaState {
        codec: offer.codec,
        params: offer.params.clone(),
        rtp_port,
        session_id: u64::from(crate::media::rand_u32()),
        version: 0,
    };
    // Ring.
    if !core.config.ring.is_zero() {
        let mut ringing = core.response(&invite, 180, "Ringing");
        ringing.set_to_tag(&local_tag);
        core.send(&ringing, peer).await;
        let until = Instant::now() + core.config.ring;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                m = rx.recv() => {
                    let (m, from) = m?;
                    match m.method() {
                        Some(Method::Cancel) => {
                            let ok = core.response(&m, 200, "OK");
                            core.send(&ok, from).await;
                            let mut terminated = core.response(&invite, 487, "Request Terminated");
                            terminated.set_to_tag(&local_tag);
                            core.send(&terminated, peer).await;
                            tracing::info!(target: "roomkit.sip", %call_id, "caller cancelled before the answer");
                            // The ACK for the 487 ends the transaction; absorb it briefly.
                            let _ = tokio::time::timeout(T1 * 4, rx.recv()).await;
                            return None;
                        }
                        Some(Method::Invite) => core.send(&ringing, peer).await,
                        _ => {}
                    }
                }
            }
        }
    }
    // Answer.
    let answer = media.describe(core, offer.direction);
    let mut ok = core.response(&invite, 200, "OK");
    ok.set_to_tag(&local_tag);
    ok.set("Contact", format!("<sip:roomkit@{}>", core.host_port()));
    let mut session_timer = None;
    if let Some(asked) = offer.session_timer {
        session_timer = Some((asked, false));
        ok.set("Session-Expires", format!("{asked};refresher=uac"));
        ok.set("Require", "timer");
    }
    ok.set_body("application/sdp", answer.into_bytes());
    core.send(&ok, peer).await;
    // Wait for the ACK, retransmitting the 200 over UDP.
    let start = Instant::now();
    let mut interval = T1;
    let mut next = start + T1;
    loop {
        let wake = if peer.transport == Transport::Udp {
            next
        } else {
            start + TRANSACTION_TIMEOUT
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if start.elapsed() >= TRANSACTION_TIMEOUT {
                    tracing::warn!(target: "roomkit.sip", %call_id, "no ACK for the answer: ending the call");
                    let mut d = dialog_of(core, &invite, peer, &local_tag);
                    let bye = d.request(core, Method::Bye);
                    core.send(&bye, peer).await;
                    return None;
                }
                core.send(&ok, peer).await;
                interval = (interval * 2).min(T2);
                next = Instant::now() + interval;
            }
            m = rx.recv() => {
                let (m, from) = m?;
                match m.method() {
                    Some(Method::Ack) => break,
                    Some(Method::Invite) => core.send(&ok, peer).await,
                    Some(Method::Cancel) => {
                        // Too late: the call is answered.
                        let ok_cancel = core.response(&m, 200, "OK");
                        core.send(&ok_cancel, from).await;
                    }
                    Some(Method::Bye) => {
                        let mut bye_ok = core.response(&m, 200, "OK");
                        bye_ok.set_to_tag(&local_tag);
                        core.send(&bye_ok, from).await;
                        tracing::info!(target: "roomkit.sip", %call_id, "caller hung up before acknowledging the answer");
                        return None;
                    }
                    _ => {}
                }
            }
        }
    }
    core.stats.calls_established.fetch_add(1, Ordering::Relaxed);
    let dialog = dialog_of(core, &invite, peer, &local_tag);
    let (mut call, media_task, links) =
        wire_call(core, &invite, &dialog, &local_tag, socket, &media)?;
    call.media = Some(media_work(media_task));
    if core.calls.try_send(call).is_err() {
        tracing::warn!(target: "roomkit.sip", %call_id, "nobody takes calls: hanging up");
        let mut d = dialog;
        let bye = d.request(core, Method::Bye);
        core.send(&bye, peer).await;
        return None;
    }
    media.params = offer.params;
    Some(Established {
        core: core.clone(),
        dialog,
        rx,
        control: links.control,
        notices: links.notices,
        events: links.events,
        media,
        session_timer,
        last_response: None,
    })
}

/// The dialog an answered INVITE makes (RFC 3261 §12.1.1).
fn dialog_of(core: &Core, invite: &SipMessage, peer: Peer, local_tag: &str) -> Dialog {
    let to = invite.header("To").unwrap_or_default();
    let local = if crate::message::param(to, "tag").is_some() {
        to.to_owned()
    } else {
        format!("{to};tag={local_tag}")
    };
    let remote_target = invite
        .header("Contact")
        .map(|c| uri_of(crate::message::top_value(c)).to_owned())
        .filter(|c| c.starts_with("sip"))
        .unwrap_or_else(|| {
            format!(
                "sip:{}",
                match peer.addr {
                    SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
                    SocketAddr::V4(a) => a.to_string(),
                }
            )
        });
    let _ = core;
    Dialog {
        call_id: invite.call_id().to_owned(),
        local,
        remote: invite.header("From").unwrap_or_default().to_owned(),
        remote_target,
        local_cseq: 0,
        remote_cseq: invite.cseq().map(|c| c.seq).unwrap_or(0),
        peer,
    }
}

/// The call's media task, for whoever runs the call.
pub(crate) fn media_work(task: MediaTask) -> roomkit_voice::CallMedia {
    roomkit_voice::CallMedia(Box::new(move || {
        Box::pin(async move {
            task.run().await;
        })
    }))
}

/// The channels between the dialog, the media task and the voice session.
pub(crate) struct Links {
    pub control: mpsc::Sender<crate::media::MediaControl>,
    pub notices: mpsc::Receiver<crate::media::MediaNotice>,
    pub events: mpsc::Sender<roomkit_voice::BackendEvent>,
}

/// Builds the voice call and its media task.
pub(crate) fn wire_call(
    core: &Core,
    invite: &SipMessage,
    dialog: &Dialog,
    local_tag: &str,
    sockets: (tokio::net::UdpSocket, Option<tokio::net::UdpSocket>),
    media: &MediaState,
) -> Option<(Call, MediaTask, Links)> {
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let (control_tx, control_rx) = mpsc::channel(8);
    let (notice_tx, notice_rx) = mpsc::channel(8);
    let stats = Arc::new(TransportStats::default());
    let party = |name: &str| {
        invite.header(name).map(|v| {
            let uri = uri_of(v);
            user_of(uri).unwrap_or(uri).to_owned()
        })
    };
    let mut parameters = BTreeMap::new();
    if let crate::message::StartLine::Request { uri, .. } = &invite.start {
        parameters.insert("sip_request_uri".to_owned(), uri.clone());
    }
    if let Some(from) = invite.header("From") {
        parameters.insert("sip_from".to_owned(), uri_of(from).to_owned());
    }
    if let Some(to) = invite.header("To") {
        parameters.insert("sip_to".to_owned(), uri_of(to).to_owned());
    }
    let call = Call {
        info: CallInfo {
            transport: "sip".into(),
            call_id: dialog.call_id.clone(),
            stream_id: format!("sip-{local_tag}"),
            from: party("From"),
            to: party("To"),
            parameters,
            format: AudioFormat::pcm_mono(media.codec.pcm_rate()),
            codec: media.codec.name().into(),
        },
        capabilities: VoiceCapabilities {
            interruption: true,
            barge_in: false,
            native_aec: false,
            native_agc: false,
            dtmf_inband: true,
            dtmf_signaling: media.params.telephone_event.is_some(),
            native_bridge: false,
            shows_text: false,
        },
        events: events_rx,
        outbound: outbound_tx,
        stats: stats.clone(),
        media: None,
    };
    let (socket, rtcp) = sockets;
    let socket = socket.into_std().ok()?;
    let rtcp = rtcp.and_then(|s| s.into_std().ok());
    let task = MediaTask {
        socket,
        rtcp,
        codec: media.codec,
        params: media.params.clone(),
        rtp_timeout: core.config.rtp_timeout,
        rtcp_interval: core.config.rtcp_interval,
        events: events_tx.clone(),
        outbound: outbound_rx,
        control: control_rx,
        notices: notice_tx,
        stats,
        rtp: core.rtp.clone(),
        call_id: dialog.call_id.clone(),
    };
    Some((
        call,
        task,
        Links {
            control: control_tx,
            notices: notice_rx,
            events: events_tx,
        },
    ))
}
