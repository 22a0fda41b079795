//! RTP packets (RFC 3550) and RFC 4733 telephone events.
//!
//! [`RtpPacket::parse`] reads a datagram without copying: the fixed header,
//! the contributing sources, a header extension and padding are checked
//! against the datagram's length, and whatever is wrong is named in an
//! [`RtpError`]. [`RtpHeader::write`] makes the packets RoomKit sends: a
//! fixed header and the payload, nothing else. [`TelephoneEvent`] is the
//! four-byte payload a phone uses to send a key press (DTMF) in the media
//! stream instead of as a tone.

use thiserror::Error;

/// The largest datagram accepted: an Ethernet MTU. Voice packets are far
/// smaller (a 20 ms Opus frame at its highest bit rate is 1,275 bytes);
/// anything larger is not a voice packet from a well-behaved peer.
pub const MAX_PACKET_LEN: usize = 1500;

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why a datagram is not a usable RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Fewer bytes than the header says there are.
    #[error("RTP packet truncated: {len} bytes, the header needs {needed}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes the header and its declared parts need.
        needed: usize,
    },
    /// Larger than [`MAX_PACKET_LEN`].
    #[error("RTP packet of {len} bytes is over the {max}-byte limit")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0} (only version 2 exists)")]
    BadVersion(u8),
    /// The second byte is an RTCP packet type (RFC 5761): an RTCP packet on
    /// a port shared with RTP.
    #[error("an RTCP packet (type {0}), not RTP")]
    Rtcp(u8),
    /// The padding count is zero or longer than the payload.
    #[error("RTP padding of {padding} bytes does not fit a {available}-byte payload")]
    BadPadding {
        /// The padding count from the packet's last byte.
        padding: usize,
        /// Bytes after the headers.
        available: usize,
    },
    /// A payload type above 127 was asked for when writing.
    #[error("RTP payload type {0} is over 127")]
    BadPayloadType(u8),
    /// A telephone-event payload shorter than four bytes.
    #[error("telephone-event payload of {0} bytes (it needs 4)")]
    ShortEvent(usize),
}

/// The fields of an RTP header that a voice transport uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpHeader {
    /// The marker bit: the first packet of a talkspurt, or of a telephone
    /// event.
    pub marker: bool,
    /// The payload type (0 to 127), mapped to a codec by the session's SDP.
    pub payload_type: u8,
    /// Sequence number, one more per packet, wrapping.
    pub sequence: u16,
    /// Media timestamp in the codec's clock (8,000 per second for G.711).
    pub timestamp: u32,
    /// Synchronisation source: identifies the sender's stream.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Appends a packet with this header and `payload` to `out` (version 2,
    /// no padding, extension or contributing sources).
    ///
    /// # Errors
    /// [`RtpError::BadPayloadType`] above 127, [`RtpError::TooLong`] when
    /// the packet would be over [`MAX_PACKET_LEN`].
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RtpError> {
        if self.payload_type > 0x7f {
            return Err(RtpError::BadPayloadType(self.payload_type));
        }
        let len = FIXED_HEADER_LEN + payload.len();
        if len > MAX_PACKET_LEN {
            return Err(RtpError::TooLong {
                len,
                max: MAX_PACKET_LEN,
            });
        }
        out.reserve(len);
        out.push(0x80);
        out.push(u8::from(self.marker) << 7 | self.payload_type);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
        Ok(())
    }
}

/// A header extension (RFC 3550 §5.3.1): a profile-defined identifier and
/// its data, a whole number of 32-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The profile-defined 16 bits (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// The extension's data.
    pub data: &'a [u8],
}

/// An RTP packet read from a datagram, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The fixed header's fields.
    pub header: RtpHeader,
    /// Contributing sources, four bytes each (a mixer's inputs).
    csrc: &'a [u8],
    /// The header extension, when the X bit is set.
    pub extension: Option<RtpExtension<'a>>,
    /// The payload, without padding.
    pub payload: &'a [u8],
    /// Padding bytes removed from the end (0 without the P bit).
    pub padding: usize,
}

impl<'a> RtpPacket<'a> {
    /// Reads one RTP packet from a datagram.
    ///
    /// # Errors
    /// An [`RtpError`] naming the first thing that is wrong.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, RtpError> {
        let len = datagram.len();
        if len > MAX_PACKET_LEN {
            return Err(RtpError::TooLong {
                len,
                max: MAX_PACKET_LEN,
            });
        }
        let Some((fixed, rest)) = datagram.split_first_chunk::<FIXED_HEADER_LEN>() else {
            return Err(RtpError::Truncated {
                len,
                needed: FIXED_HEADER_LEN,
            });
        };
        let version = fixed[0] >> 6;
        if version != 2 {
            return Err(RtpError::BadVersion(version));
        }
        // RFC 5761 §4: with RTP and RTCP on one port, a second byte of 192
        // to 223 is an RTCP packet type (SR 200, RR 201, ...).
        if (192..=223).contains(&fixed[1]) {
            return Err(RtpError::Rtcp(fixed[1]));
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let csrc_len = usize::from(fixed[0] & 0x0f) * 4;
        let header = RtpHeader {
            marker: fixed[1] & 0x80 != 0,
            payload_type: fixed[1] & 0x7f,
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        };
        let truncated = |needed: usize| RtpError::Truncated { len, needed };
        let mut needed = FIXED_HEADER_LEN + csrc_len;
        let (csrc, mut rest) = rest.split_at_checked(csrc_len).ok_or(truncated(needed))?;
        let mut extension = None;
        if has_extension {
            needed += 4;
            let (ext_head, after) = rest.split_first_chunk::<4>().ok_or(truncated(needed))?;
            let words = usize::from(u16::from_be_bytes([ext_head[2], ext_head[3]]));
            needed += words * 4;
            let (data, after) = after.split_at_checked(words * 4).ok_or(truncated(needed))?;
            extension = Some(RtpExtension {
                profile: u16::from_be_bytes([ext_head[0], ext_head[1]]),
                data,
            });
            rest = after;
        }
        let mut padding = 0;
        if has_padding {
            let count = rest.last().map_or(0, |&b| usize::from(b));
            if count == 0 || count > rest.len() {
                return Err(RtpError::BadPadding {
                    padding: count,
                    available: rest.len(),
                });
            }
            padding = count;
            rest = &rest[..rest.len() - count];
        }
        Ok(Self {
            header,
            csrc,
            extension,
            payload: rest,
            padding,
        })
    }

    /// The contributing sources, in order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// An RFC 4733 telephone event: one key press, sent as a series of packets
/// with the same timestamp whose `duration` grows until the last ones
/// (usually three) carry `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// The event code: 0-9 the digits, 10 `*`, 11 `#`, 12-15 `A`-`D`, 16
    /// flash; other codes are other events (RFC 4734).
    pub event: u8,
    /// Set on the packets that end the event.
    pub end: bool,
    /// Power level as a positive number of dBm0 below zero (0 to 63).
    pub volume: u8,
    /// Duration so far, in the timestamp clock's units.
    pub duration: u16,
}

/// The DTMF keys in event-code order.
const DTMF_KEYS: &[u8; 16] = b"0123456789*#ABCD";

impl TelephoneEvent {
    /// The payload's length.
    pub const LEN: usize = 4;

    /// Reads the first event of a payload (a packet may carry redundant
    /// events after it, which are ignored).
    ///
    /// # Errors
    /// [`RtpError::ShortEvent`] for fewer than four bytes.
    pub fn parse(payload: &[u8]) -> Result<Self, RtpError> {
        let Some(b) = payload.first_chunk::<4>() else {
            return Err(RtpError::ShortEvent(payload.len()));
        };
        Ok(Self {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// The four payload bytes (the reserved bit is sent as zero; a volume
    /// above 63 is sent as 63).
    pub fn to_bytes(&self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            u8::from(self.end) << 7 | self.volume.min(0x3f),
            d[0],
            d[1],
        ]
    }

    /// The DTMF key of this event, when it is one (0-9, `*`, `#`, A-D).
    pub fn digit(&self) -> Option<char> {
        DTMF_KEYS
            .get(usize::from(self.event))
            .map(|&k| char::from(k))
    }

    /// The event code of a DTMF key (case-insensitive for A-D).
    pub fn code_of(digit: char) -> Option<u8> {
        let key = u8::try_from(digit.to_ascii_uppercase()).ok()?;
        DTMF_KEYS
            .iter()
            .position(|&k| k == key)
            .and_then(|i| u8::try_from(i).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 0,
            sequence: 0xfffe,
            timestamp: 0x0102_0304,
            ssrc: 0xdead_beef,
        }
    }

    #[test]
    fn a_written_packet_reads_back() -> Result<(), RtpError> {
        let mut buf = Vec::new();
        header().write(&[0xff; 160], &mut buf)?;
        assert_eq!(buf.len(), 172);
        assert_eq!(&buf[..4], &[0x80, 0x80, 0xff, 0xfe]);
        let p = RtpPacket::parse(&buf)?;
        assert_eq!(p.header, header());
        assert_eq!(p.payload, &[0xff; 160][..]);
        assert_eq!((p.padding, p.extension, p.csrcs().count()), (0, None, 0));
        Ok(())
    }

    #[test]
    fn csrcs_extension_and_padding_are_read() -> Result<(), RtpError> {
        // V=2, P, X, CC=2; M=0, PT=8.
        let mut d = vec![0xb2, 0x08, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7];
        d.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // two CSRCs
        d.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // one-word extension
        d.extend_from_slice(&[0xd5; 5]); // payload
        d.extend_from_slice(&[0, 0, 3]); // three bytes of padding
        let p = RtpPacket::parse(&d)?;
        assert_eq!(p.header.payload_type, 8);
        assert!(!p.header.marker);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            p.extension,
            Some(RtpExtension {
                profile: 0xbede,
                data: &[0x10, 0xaa, 0, 0]
            })
        );
        assert_eq!(p.payload, &[0xd5; 5][..]);
        assert_eq!(p.padding, 3);
        Ok(())
    }

    #[test]
    fn bad_datagrams_are_named() {
        let ok = {
            let mut b = Vec::new();
            let _ = header().write(&[1, 2, 3], &mut b);
            b
        };
        assert_eq!(
            RtpPacket::parse(&ok[..11]),
            Err(RtpError::Truncated {
                len: 11,
                needed: 12
            })
        );
        let mut v1 = ok.clone();
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion(1)));
        let mut rtcp = ok.clone();
        rtcp[1] = 200;
        assert_eq!(RtpPacket::parse(&rtcp), Err(RtpError::Rtcp(200)));
        // Four CSRCs declared, none present.
        let mut cc = ok.clone();
        cc[0] = 0x84;
        assert_eq!(
            RtpPacket::parse(&cc),
            Err(RtpError::Truncated {
                len: 15,
                needed: 28
            })
        );
        // An extension longer than the packet.
        let mut x = ok[..12].to_vec();
        x[0] |= 0x10;
        x.extend_from_slice(&[0xbe, 0xde, 0, 9]);
        assert_eq!(
            RtpPacket::parse(&x),
            Err(RtpError::Truncated {
                len: 16,
                needed: 52
            })
        );
        // Padding of zero, and padding longer than the payload.
        let mut p0 = ok.clone();
        p0[0] |= 0x20;
        *p0.last_mut().unwrap_or(&mut 0) = 0;
        assert_eq!(
            RtpPacket::parse(&p0),
            Err(RtpError::BadPadding {
                padding: 0,
                available: 3
            })
        );
        let mut p9 = ok.clone();
        p9[0] |= 0x20;
        *p9.last_mut().unwrap_or(&mut 0) = 9;
        assert_eq!(
            RtpPacket::parse(&p9),
            Err(RtpError::BadPadding {
                padding: 9,
                available: 3
            })
        );
        let mut no_payload = ok[..12].to_vec();
        no_payload[0] |= 0x20;
        assert_eq!(
            RtpPacket::parse(&no_payload),
            Err(RtpError::BadPadding {
                padding: 0,
                available: 0
            })
        );
        assert_eq!(
            RtpPacket::parse(&[0x80; MAX_PACKET_LEN + 1]),
            Err(RtpError::TooLong {
                len: MAX_PACKET_LEN + 1,
                max: MAX_PACKET_LEN
            })
        );
    }

    #[test]
    fn bad_headers_are_not_written() {
        let mut out = Vec::new();
        let h = RtpHeader {
            payload_type: 128,
            ..header()
        };
        assert_eq!(h.write(&[], &mut out), Err(RtpError::BadPayloadType(128)));
        assert!(matches!(
            header().write(&[0; MAX_PACKET_LEN], &mut out),
            Err(RtpError::TooLong { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn telephone_events_round_trip_and_name_their_keys() -> Result<(), RtpError> {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1280,
        };
        assert_eq!(e.to_bytes(), [11, 0x8a, 0x05, 0x00]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes())?, e);
        assert_eq!(e.digit(), Some('#'));
        // The reserved bit is ignored when reading.
        assert_eq!(TelephoneEvent::parse(&[5, 0x4a, 0, 160])?.volume, 10);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(RtpError::ShortEvent(3))
        );
        let keys: String = (0..16)
            .filter_map(|c| {
                TelephoneEvent {
                    event: c,
                    end: false,
                    volume: 0,
                    duration: 0,
                }
                .digit()
            })
            .collect();
        assert_eq!(keys, "0123456789*#ABCD");
        assert_eq!(
            TelephoneEvent {
                event: 16,
                end: false,
                volume: 0,
                duration: 0
            }
            .digit(),
            None
        );
        for k in "0123456789*#ABCDabcd".chars() {
            let code = TelephoneEvent::code_of(k);
            let back = code.and_then(|event| {
                TelephoneEvent {
                    event,
                    end: false,
                    volume: 0,
                    duration: 0,
                }
                .digit()
            });
            assert_eq!(back, Some(k.to_ascii_uppercase()));
        }
        assert_eq!(TelephoneEvent::code_of('x'), None);
        assert_eq!(TelephoneEvent::code_of('é'), None);
        Ok(())
    }
}
