//! WebRTC for RoomKit voice channels: the browser call button's transport,
//! in-process, with the pure-Rust sans-IO stack str0m (ICE with host
//! candidates, DTLS-SRTP, Opus).
//!
//! A call starts on a media socket (a WebSocket the server upgrades at
//! `/voice/webrtc/media` and hands to [`WebRtcBackend::accept`]): the page
//! sends its SDP offer as `{"type": "offer", "sdp": ..., "room_id": ...}`,
//! gets `{"type": "answer", "sdp": ...}` back, and the media then flows
//! over UDP between the browser and this process. The socket stays open for
//! the call's life: `{"type": "stop"}` or closing it hangs up, and the
//! server says `{"type": "ended", "reason": ...}` when the call ends.
//!
//! One task per call owns the `Rtc` state machine and its UDP socket: it
//! feeds datagrams and timeouts in, sends what it is told to, decodes the
//! caller's Opus frames to 16 kHz PCM for the voice session and encodes the
//! agent's frames, one 20 ms frame per tick of its clock. The browser
//! cancels its own echo and controls its gain, so the call's capabilities
//! say `native_aec` and `native_agc` and the pipeline skips its AEC and AGC
//! (RFC §12.3).

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use roomkit_audio::AudioFormat;
use roomkit_audio::codec::{AudioDecoder, AudioEncoder, OpusDecoder, OpusEncoder};
use roomkit_voice::backend::{EVENT_QUEUE, OUTBOUND_QUEUE};
use roomkit_voice::{
    BackendEvent, Call, CallInfo, MediaMessage, MediaSocket, Outbound, TransportStats,
    VoiceBackend, VoiceCapabilities, VoiceError,
};
use serde_json::{Value, json};
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// The transport's name (`/voice/webrtc/media`).
pub const TRANSPORT: &str = "webrtc";
/// The PCM rate calls deliver and take (Opus decodes to it).
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples in one 20 ms frame.
const FRAME: usize = (SAMPLE_RATE / 50) as usize;
/// The longest SDP offer taken, in bytes.
pub const MAX_OFFER: usize = 64 * 1024;
/// How long the page has to send its offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// A call whose ICE never connects, or stays disconnected, ends after this.
const ICE_TIMEOUT: Duration = Duration::from_secs(20);

/// How the transport runs.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// The address media is received on (the host candidate's address).
    pub host: IpAddr,
    /// The address announced in the candidate, when the host address is
    /// not the one browsers reach (a container, a NAT with a fixed
    /// mapping).
    pub public: Option<IpAddr>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public: None,
        }
    }
}

/// The WebRTC voice transport.
#[derive(Debug, Clone, Default)]
pub struct WebRtcBackend {
    config: WebRtcConfig,
}

impl WebRtcBackend {
    /// A transport receiving media on `config.host`.
    pub fn new(config: WebRtcConfig) -> Self {
        // One process-wide crypto provider for DTLS; installing it twice
        // is harmless.
        str0m::crypto::from_feature_flags().install_process_default();
        Self { config }
    }
}

fn transport_err(message: impl Into<String>) -> VoiceError {
    VoiceError::Transport(message.into())
}

/// What the page's first message says.
struct Offer {
    sdp: String,
    parameters: BTreeMap<String, String>,
    from: Option<String>,
}

fn read_offer(text: &str) -> Result<Offer, VoiceError> {
    if text.len() > MAX_OFFER {
        return Err(transport_err(format!(
            "the offer is over {MAX_OFFER} bytes"
        )));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| {
        transport_err(format!(
            "the first message is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if v["type"] != "offer" {
        return Err(transport_err(
            "the first message must be {\"type\": \"offer\", ...}",
        ));
    }
    let sdp = v["sdp"]
        .as_str()
        .ok_or_else(|| transport_err("the offer has no `sdp` string"))?
        .to_owned();
    let mut parameters = BTreeMap::new();
    for key in ["room_id", "participant"] {
        if let Some(value) = v[key].as_str() {
            if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
                return Err(transport_err(format!(
                    "`{key}` must be 1 to 256 printable characters"
                )));
            }
            parameters.insert(key.to_owned(), value.to_owned());
        }
    }
    let from = parameters.get("participant").cloned();
    Ok(Offer {
        sdp,
        parameters,
        from,
    })
}

#[async_trait]
impl VoiceBackend for WebRtcBackend {
    fn name(&self) -> &str {
        TRANSPORT
    }

    fn capabilities(&self) -> VoiceCapabilities {
        VoiceCapabilities {
            interruption: true,
            barge_in: false,
            native_aec: true,
            native_agc: true,
            dtmf_inband: false,
            dtmf_signaling: false,
            native_bridge: false,
            shows_text: false,
        }
    }

    fn native_format(&self) -> AudioFormat {
        AudioFormat::pcm_mono(SAMPLE_RATE)
    }

    async fn accept(&self, socket: MediaSocket) -> Result<Call, VoiceError> {
        let MediaSocket {
            mut incoming,
            mut outgoing,
        } = socket;
        let first = tokio::time::timeout(OFFER_TIMEOUT, incoming.next())
            .await
            .map_err(|_| transport_err("no offer within 10 s"))?;
        let text = match first {
            Some(Ok(MediaMessage::Text(t))) => t,
            Some(Ok(_)) => return Err(transport_err("the first message must be a text offer")),
            Some(Err(e)) => return Err(e),
            None => return Err(transport_err("the socket closed before the offer")),
        };
        let offer = read_offer(&text)?;
        let sdp = SdpOffer::from_sdp_string(&offer.sdp)
            .map_err(|e| transport_err(format!("unreadable SDP offer: {e}")))?;
        let udp = UdpSocket::bind(SocketAddr::new(self.config.host, 0))
            .await
            .map_err(|e| transport_err(format!("no UDP port for media: {e}")))?;
        let local = udp
            .local_addr()
            .map_err(|e| transport_err(format!("no UDP port for media: {e}")))?;
        let announced = SocketAddr::new(self.config.public.unwrap_or(local.ip()), local.port());
        let now = Instant::now();
        let mut rtc = RtcConfig::new().build(now);
        let candidate = Candidate::host(announced, "udp")
            .map_err(|e| transport_err(format!("bad host candidate: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(sdp)
            .map_err(|e| transport_err(format!("the offer cannot be answered: {e}")))?;
        outgoing
            .send(MediaMessage::Text(
                json!({"type": "answer", "sdp": answer.to_sdp_string()}).to_string(),
            ))
            .await?;
        let call_id = format!("wrtc-{:08x}", rand_u32());
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (outbound_tx, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let stats = Arc::new(TransportStats::default());
        let task = CallTask {
            rtc,
            udp,
            local,
            events: events_tx,
            outbound: outbound_rx,
            stats: stats.clone(),
            call_id: call_id.clone(),
        };
        tokio::spawn(task.run(incoming, outgoing));
        tracing::info!(target: "roomkit.webrtc", %call_id, media = %announced, "browser call answered");
        Ok(Call {
            info: CallInfo {
                transport: TRANSPORT.into(),
                call_id: call_id.clone(),
                stream_id: call_id,
                from: offer.from,
                to: None,
                parameters: offer.parameters,
                format: AudioFormat::pcm_mono(SAMPLE_RATE),
                codec: "opus".into(),
            },
            capabilities: self.capabilities(),
            events: events_rx,
            outbound: outbound_tx,
            stats,
            media: None,
        })
    }
}

/// One call's media.
struct CallTask {
    rtc: Rtc,
    udp: UdpSocket,
    local: SocketAddr,
    events: mpsc::Sender<BackendEvent>,
    outbound: mpsc::Receiver<Outbound>,
    stats: Arc<TransportStats>,
    call_id: String,
}

enum Queued {
    Audio(Vec<i16>),
    Mark(String),
}

impl CallTask {
    async fn run(
        mut self,
        mut incoming: roomkit_voice::backend::MediaStream,
        mut outgoing: roomkit_voice::backend::MediaSink,
    ) {
        let reason = self.serve(&mut incoming).await;
        tracing::info!(target: "roomkit.webrtc", call_id = %self.call_id, %reason, "browser call ended");
        let _ = self.events.try_send(BackendEvent::HangUp {
            reason: reason.clone(),
        });
        let _ = outgoing
            .send(MediaMessage::Text(
                json!({"type": "ended", "reason": reason}).to_string(),
            ))
            .await;
        let _ = outgoing.send(MediaMessage::Close).await;
    }

    async fn serve(&mut self, incoming: &mut roomkit_voice::backend::MediaStream) -> String {
        let mut decoder = match OpusDecoder::new(SAMPLE_RATE) {
            Ok(d) => d,
            Err(e) => return format!("opus decoder: {e}"),
        };
        let mut encoder = match OpusEncoder::new(SAMPLE_RATE, 32_000) {
            Ok(e) => e,
            Err(e) => return format!("opus encoder: {e}"),
        };
        let mut buf = vec![0u8; 2048];
        let mut pcm = vec![0i16; 5760];
        let mut encoded = Vec::with_capacity(400);
        let mut queue: VecDeque<Queued> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut mid: Option<Mid> = None;
        let mut media_time: u64 = 0;
        let mut connected_at: Option<Instant> = None;
        let started = Instant::now();
        let mut disconnected_since: Option<Instant> = None;
        loop {
            // Drain what the state machine wants done, up to its next timeout.
            let deadline = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.udp.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Event(e)) => match e {
                        Event::IceConnectionStateChange(state) => {
                            tracing::debug!(target: "roomkit.webrtc", call_id = %self.call_id, ?state, "ICE state");
                            match state {
                                IceConnectionState::Disconnected => {
                                    disconnected_since.get_or_insert_with(Instant::now);
                                }
                                IceConnectionState::Connected | IceConnectionState::Completed => {
                                    disconnected_since = None;
                                    connected_at.get_or_insert_with(Instant::now);
                                }
                                _ => {}
                            }
                        }
                        Event::MediaAdded(added) if added.kind == MediaKind::Audio => {
                            mid = Some(added.mid);
                        }
                        Event::MediaData(data) => match decoder.decode(&data.data, &mut pcm) {
                            Ok(n) => {
                                for frame in pcm[..n].chunks(FRAME) {
                                    if self
                                        .events
                                        .try_send(BackendEvent::Audio(frame.to_vec()))
                                        .is_err()
                                    {
                                        TransportStats::bump(&self.stats.dropped_inbound);
                                    } else {
                                        TransportStats::bump(&self.stats.frames_in);
                                    }
                                }
                            }
                            Err(_) => TransportStats::bump(&self.stats.bad_messages),
                        },
                        _ => {}
                    },
                    Err(e) => return format!("webrtc error: {e}"),
                }
            };
            if connected_at.is_none() && started.elapsed() > ICE_TIMEOUT {
                return "ice did not connect".into();
            }
            if disconnected_since.is_some_and(|at| at.elapsed() > ICE_TIMEOUT) {
                return "media lost".into();
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                received = self.udp.recv_from(&mut buf) => {
                    let Ok((n, source)) = received else { continue };
                    let Some(bytes) = buf.get(..n) else { continue };
                    let Ok(contents) = bytes.try_into() else {
                        TransportStats::bump(&self.stats.bad_messages);
                        continue;
                    };
                    let input = Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source, destination: self.local, contents },
                    );
                    if self.rtc.accepts(&input) {
                        if let Err(e) = self.rtc.handle_input(input) {
                            tracing::debug!(target: "roomkit.webrtc", call_id = %self.call_id, error = %e, "dropped a datagram");
                            TransportStats::bump(&self.stats.bad_messages);
                        }
                    } else {
                        TransportStats::bump(&self.stats.bad_messages);
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
                        return format!("webrtc error: {e}");
                    }
                }
                _ = tick.tick() => {
                    while let Some(Queued::Mark(_)) = queue.front() {
                        if let Some(Queued::Mark(name)) = queue.pop_front() {
                            let _ = self.events.try_send(BackendEvent::Mark(name));
                        }
                    }
                    if let Some(Queued::Audio(frame)) = queue.pop_front()
                        && let Some(mid) = mid
                        && encoder.encode(&frame, &mut encoded).is_ok()
                        && let Some(writer) = self.rtc.writer(mid)
                    {
                        let pt = writer
                            .payload_params()
                            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                            .map(|p| p.pt());
                        if let Some(pt) = pt {
                            let time = MediaTime::new(media_time, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                            if writer.write(pt, Instant::now(), time, encoded.clone()).is_ok() {
                                TransportStats::bump(&self.stats.frames_out);
                            }
                        }
                    }
                    media_time += 960;
                    while let Some(Queued::Mark(_)) = queue.front() {
                        if let Some(Queued::Mark(name)) = queue.pop_front() {
                            let _ = self.events.try_send(BackendEvent::Mark(name));
                        }
                    }
                }
                command = self.outbound.recv() => match command {
                    Some(Outbound::Audio(frame)) => {
                        if queue.len() >= OUTBOUND_QUEUE {
                            TransportStats::bump(&self.stats.dropped_outbound);
                        } else {
                            queue.push_back(Queued::Audio(frame));
                        }
                    }
                    Some(Outbound::Mark(name)) => queue.push_back(Queued::Mark(name)),
                    Some(Outbound::Clear) => {
                        for q in queue.drain(..) {
                            if let Queued::Mark(name) = q {
                                let _ = self.events.try_send(BackendEvent::Mark(name));
                            }
                        }
                    }
                    Some(Outbound::HangUp) | None => return "local hangup".into(),
                    Some(_) => {}
                },
                message = incoming.next() => match message {
                    Some(Ok(MediaMessage::Text(t))) if t.contains("\"stop\"") => return "remote hangup".into(),
                    Some(Ok(MediaMessage::Close)) | None | Some(Err(_)) => return "remote hangup".into(),
                    Some(Ok(_)) => {}
                },
            }
        }
    }
}

/// A random 32-bit value (call ids).
fn rand_u32() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_cancels_its_own_echo() {
        let caps = WebRtcBackend::default().capabilities();
        assert!(caps.native_aec && caps.native_agc && caps.interruption);
        assert_eq!(
            WebRtcBackend::default().native_format(),
            AudioFormat::pcm_mono(16_000)
        );
    }

    #[test]
    fn a_first_message_that_is_not_an_offer_is_refused_with_a_reason() {
        for (text, wanted) in [
            ("not json", "not JSON"),
            (r#"{"type":"start"}"#, "must be"),
            (r#"{"type":"offer"}"#, "no `sdp`"),
            (r#"{"type":"offer","sdp":"v=0","room_id":""}"#, "room_id"),
        ] {
            let Err(e) = read_offer(text) else {
                panic!("{text} was taken");
            };
            assert!(e.to_string().contains(wanted), "{text}: {e}");
        }
        let huge = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(MAX_OFFER));
        assert!(read_offer(&huge).is_err());
        let ok = read_offer(r#"{"type":"offer","sdp":"v=0","room_id":"r1","participant":"ann"}"#)
            .expect("an offer");
        assert_eq!(ok.from.as_deref(), Some("ann"));
        assert_eq!(ok.parameters.get("room_id").map(String::as_str), Some("r1"));
    }

    #[tokio::test]
    async fn garbage_sdp_on_the_socket_is_an_error_not_a_panic() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<MediaMessage, VoiceError>>();
        let sink = futures::sink::drain()
            .sink_map_err(|_: std::convert::Infallible| VoiceError::Transport("closed".into()));
        let socket = MediaSocket::new(Box::pin(rx), Box::pin(sink));
        tx.unbounded_send(Ok(MediaMessage::Text(
            r#"{"type":"offer","sdp":"v=0\r\nm=garbage\r\n"}"#.into(),
        )))
        .expect("queued");
        let err = WebRtcBackend::default()
            .accept(socket)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("SDP"), "{err}");
    }
}
