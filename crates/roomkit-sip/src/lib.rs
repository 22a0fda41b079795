//! Telephony transport for RoomKit voice channels.
//!
//! This crate knows nothing of rooms: it turns what arrives from a phone
//! network into audio frames and events for a voice session, and back. It
//! starts with the media layer: [`rtp`] reads and writes RTP packets
//! (RFC 3550) and RFC 4733 telephone events (DTMF carried in RTP). Every
//! reader takes bytes straight off a socket and answers bad input with a
//! typed error, never a panic.

pub mod rtp;

pub use rtp::{RtpError, RtpHeader, RtpPacket, TelephoneEvent};
