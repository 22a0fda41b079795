//! Telephony transport for RoomKit voice channels.
//!
//! This crate knows nothing of rooms: it turns what arrives from a phone
//! network into audio frames and events for a voice session, and back. It
//! starts with the media layer and its description: [`rtp`] reads and
//! writes RTP packets (RFC 3550) and RFC 4733 telephone events (DTMF
//! carried in RTP), and [`sdp`] reads and writes session descriptions
//! (RFC 4566) and picks a call's audio codec from an offer (RFC 3264).
//! Every reader takes bytes straight off the network and answers bad input
//! with a typed error, never a panic.

pub mod rtp;
pub mod sdp;

pub use rtp::{RtpError, RtpHeader, RtpPacket, TelephoneEvent};
pub use sdp::{SdpError, SessionDescription};
