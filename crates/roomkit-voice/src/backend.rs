//! The transport side of a call (RFC §12.2 VoiceBackend): what a transport
//! (Twilio Media Streams, SIP/RTP, WebRTC, a browser socket) hands the voice
//! channel, and what the channel asks of it.
//!
//! A transport knows nothing of rooms, speech providers or the pipeline. For
//! every call it produces a [`Call`]: the call's metadata, a receiver of
//! [`BackendEvent`]s (audio decoded to 16-bit PCM at the transport's native
//! rate, signalled DTMF digits, playback marks, hang-up) and a sender of
//! [`Outbound`] commands (audio, clear, mark, DTMF, hang-up). Both are
//! bounded channels, so the one task that runs a call can `select!` over
//! inbound events, its 20 ms send clock and its providers' results without
//! ever waiting on the network: a full outbound queue drops the frame and
//! counts it.
//!
//! Transports that accept calls over a message socket (a WebSocket upgraded
//! by the server) implement [`VoiceBackend::accept`] over a [`MediaSocket`],
//! which the server builds from its own socket type; this crate never
//! depends on an HTTP framework. Transports that find calls by themselves
//! (a SIP listener) hand their `Call`s to the voice channel directly.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::Sink;
use futures::stream::BoxStream;
use roomkit_audio::AudioFormat;
use tokio::sync::mpsc;

use crate::error::VoiceError;

/// How many inbound events a call buffers before the transport drops audio
/// (and counts it): two seconds of 20 ms frames.
pub const EVENT_QUEUE: usize = 100;

/// How many outbound commands a call buffers before it drops audio (and
/// counts it): two seconds of 20 ms frames.
pub const OUTBOUND_QUEUE: usize = 100;

/// What a transport can do (RFC §12.2 VoiceCapability flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VoiceCapabilities {
    /// Audio already queued at the far end can be flushed (`clear`).
    pub interruption: bool,
    /// The transport itself notices caller audio during playback.
    pub barge_in: bool,
    /// The transport cancels echo: the pipeline's AEC is skipped.
    pub native_aec: bool,
    /// The transport controls gain: the pipeline's AGC is skipped.
    pub native_agc: bool,
    /// DTMF tones may arrive inside the audio (the pipeline detects them).
    pub dtmf_inband: bool,
    /// DTMF digits arrive (and may be sent) through signalling.
    pub dtmf_signaling: bool,
    /// The transport can bridge two calls itself.
    pub native_bridge: bool,
    /// The far end shows text: the call sends it the caller's transcripts
    /// ([`Outbound::Transcript`]) and the agent's sentences
    /// ([`Outbound::AgentText`]).
    pub shows_text: bool,
}

/// Who is calling whom, as the transport learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    /// The transport's name (`twilio`, `sip`, `webrtc`).
    pub transport: String,
    /// The call's id at the provider (Twilio `callSid`).
    pub call_id: String,
    /// The media stream's id (Twilio `streamSid`); the call id when the
    /// transport has no separate one.
    pub stream_id: String,
    /// The caller's address (phone number, SIP URI), when known.
    pub from: Option<String>,
    /// The called address, when known.
    pub to: Option<String>,
    /// Parameters the call was set up with (Twilio `customParameters`).
    pub parameters: BTreeMap<String, String>,
    /// The audio the transport delivers and expects, as 16-bit PCM after
    /// its codec (the wire codec is in `codec`).
    pub format: AudioFormat,
    /// The codec on the wire (`mulaw`, `opus`, ...), for information.
    pub codec: String,
}

/// Something that happened on a call.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// Caller audio: 16-bit mono PCM at the call's `format` rate.
    Audio(Vec<i16>),
    /// A digit signalled out of band (RFC 4733, Twilio `dtmf`).
    Dtmf(char),
    /// A mark the call sent came back: everything before it was played.
    Mark(String),
    /// The call ended on the far side (or the transport failed).
    HangUp {
        /// Why, in a few words.
        reason: String,
    },
}

/// What a call asks the transport to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// One frame of agent audio: 16-bit mono PCM at the call's rate.
    Audio(Vec<i16>),
    /// Flush the audio queued at the far end (barge-in).
    Clear,
    /// Report back (as [`BackendEvent::Mark`]) when playback reaches here.
    Mark(String),
    /// Send a DTMF digit.
    Dtmf {
        /// The digit (`0`-`9`, `*`, `#`, `A`-`D`).
        digit: char,
        /// Tone length.
        duration_ms: u32,
    },
    /// End the call.
    HangUp,
    /// Hand the call to another address (a blind transfer: SIP REFER);
    /// the call ends once the transfer target answers. Transports that
    /// cannot transfer log it and keep the call.
    Transfer {
        /// Where to: a SIP URI (`sip:+15551234567@trunk.example`) or a
        /// telephone number.
        target: String,
    },
    /// What speech-to-text heard of the caller so far (sent only to
    /// transports whose capabilities say `shows_text`).
    Transcript {
        /// The text.
        text: String,
        /// A final result (else interim, still changing).
        is_final: bool,
    },
    /// A sentence the agent is about to speak (sent only to transports
    /// whose capabilities say `shows_text`).
    AgentText(String),
}

/// The key a DTMF message names, upper-cased: one of `0`-`9`, `*`, `#`,
/// `A`-`D` (either case), or `None` for anything else (an empty string,
/// several characters, another character).
pub fn dtmf_digit(digit: &str) -> Option<char> {
    let mut chars = digit.chars();
    match (chars.next(), chars.next()) {
        (Some(d), None) if d.is_ascii_digit() || "*#ABCDabcd".contains(d) => {
            Some(d.to_ascii_uppercase())
        }
        _ => None,
    }
}

/// Counters a transport keeps per call; read them at any time.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Inbound messages that could not be read (logged and skipped).
    pub bad_messages: AtomicU64,
    /// Inbound audio frames dropped because the call was not keeping up.
    pub dropped_inbound: AtomicU64,
    /// Outbound frames dropped because the transport was not keeping up.
    pub dropped_outbound: AtomicU64,
    /// Inbound audio frames delivered to the call.
    pub frames_in: AtomicU64,
    /// Outbound audio frames written to the transport.
    pub frames_out: AtomicU64,
    /// Network packets of the caller's audio lost on the way (transports
    /// that count them: RTP).
    pub packets_lost: AtomicU64,
    /// Interarrival jitter of the caller's audio, in microseconds (RTP).
    pub jitter_us: AtomicU64,
    /// Round trip time to the far end, in microseconds, 0 until measured
    /// (RTCP).
    pub rtt_us: AtomicU64,
}

impl TransportStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A transport's media work for one call (an RTP or WebRTC task), run by
/// whoever runs the call: [`crate::VoiceChannel::start_call`] runs it on
/// the call's own thread, beside the call's task, so the two wake each
/// other without crossing threads, and so do the sockets it creates there.
/// Elsewhere (a test, a program without a voice channel) call
/// [`Call::start_media`].
pub struct CallMedia(pub Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>);

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallMedia")
    }
}

/// One call, as a transport hands it over.
#[derive(Debug)]
pub struct Call {
    /// Who and how.
    pub info: CallInfo,
    /// What the transport can do for this call.
    pub capabilities: VoiceCapabilities,
    /// Inbound events, in order; closed when the call is gone.
    pub events: mpsc::Receiver<BackendEvent>,
    /// Outbound commands; use `try_send` from the call's task.
    pub outbound: mpsc::Sender<Outbound>,
    /// The transport's counters for this call.
    pub stats: std::sync::Arc<TransportStats>,
    /// Media work the transport leaves to whoever runs the call.
    pub media: Option<CallMedia>,
}

impl Call {
    /// Runs the call's media work (if the transport left any) as a task of
    /// the current Tokio runtime.
    pub fn start_media(&mut self) {
        if let Some(media) = self.media.take() {
            tokio::spawn((media.0)());
        }
    }
}

/// A message on a media socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaMessage {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// The peer closed the socket.
    Close,
}

/// Messages arriving on a media socket.
pub type MediaStream = BoxStream<'static, Result<MediaMessage, VoiceError>>;

/// Messages leaving on a media socket; sending [`MediaMessage::Close`]
/// closes it.
pub type MediaSink = Pin<Box<dyn Sink<MediaMessage, Error = VoiceError> + Send>>;

/// A bidirectional message socket (an upgraded WebSocket), split into its
/// two halves by whoever owns the concrete socket type.
pub struct MediaSocket {
    /// What the peer sends.
    pub incoming: MediaStream,
    /// What we send.
    pub outgoing: MediaSink,
}

impl std::fmt::Debug for MediaSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSocket").finish_non_exhaustive()
    }
}

impl MediaSocket {
    /// A socket from its two halves.
    pub fn new(incoming: MediaStream, outgoing: MediaSink) -> Self {
        Self { incoming, outgoing }
    }
}

/// A voice transport (RFC §12.2 VoiceBackend), a pure transport.
#[async_trait]
pub trait VoiceBackend: Send + Sync + 'static {
    /// The transport's name (`twilio`, `sip`, `webrtc`).
    fn name(&self) -> &str;

    /// What it can do.
    fn capabilities(&self) -> VoiceCapabilities;

    /// The PCM format its calls deliver and expect (after its codec).
    fn native_format(&self) -> AudioFormat;

    /// Takes a call over an upgraded media socket: reads the transport's
    /// handshake and returns the call once its metadata is known. The
    /// transport's own I/O keeps running on tasks of the current runtime.
    ///
    /// # Errors
    /// [`VoiceError::Transport`] when the handshake fails or the transport
    /// does not take calls over sockets.
    async fn accept(&self, socket: MediaSocket) -> Result<Call, VoiceError> {
        drop(socket);
        Err(VoiceError::Transport(format!(
            "the {} transport does not accept media sockets",
            self.name()
        )))
    }
}
