//! Telephony transport for RoomKit voice channels.
//!
//! This crate knows nothing of rooms: it turns what arrives from a phone
//! network into [`roomkit_voice::Call`]s (audio frames and events for a
//! voice session), and back.
//!
//! - [`ua`]: the SIP user agent (RFC 3261 over UDP and TCP): inbound and
//!   outbound calls, OPTIONS, registration, protocol traces.
//! - [`message`]: SIP messages read and written; [`digest`]: digest
//!   authentication towards trunks and registrars.
//! - [`sdp`]: session descriptions (RFC 4566) and the codec choice of an
//!   offer (RFC 3264).
//! - [`rtp`]: RTP packets (RFC 3550) and RFC 4733 telephone events;
//!   [`jitter`]: the adaptive jitter buffer; [`media`]: one call's media
//!   task on its 20 ms clock.
//!
//! Every reader takes bytes straight off the network and answers bad input
//! with a typed error, never a panic.

mod dialog;
pub mod digest;
mod inbound;
pub mod jitter;
pub mod media;
pub mod message;
pub mod outbound;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod ua;

pub use media::{MediaCodec, RtpStats};
pub use message::{Method, SipError, SipMessage};
pub use outbound::{
    Credentials, DialError, DialProgress, DialRequest, KeepAliveHandle, Reachability, Registration,
    RegistrationHandle, RegistrationState,
};
pub use rtp::{RtpError, RtpHeader, RtpPacket, TelephoneEvent};
pub use sdp::{SdpError, SessionDescription};
pub use ua::{SipConfig, SipEndpoint, SipStartError, SipStats, SipTrace, SipTracer, Transport};
