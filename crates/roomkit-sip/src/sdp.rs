//! SDP session descriptions (RFC 4566) and the audio offer/answer of a
//! call (RFC 3264).
//!
//! [`SessionDescription::parse`] reads what a SIP peer sends in an INVITE
//! or its answer: the origin, the session-level connection address and each
//! media section with its formats, `rtpmap`, `fmtp`, `ptime` and direction.
//! Lines this module has no use for are kept as attributes or skipped, as
//! RFC 4566 asks of a reader; what is malformed is named with its line
//! number. [`answer_audio`] picks the codec for a call from an offer, and
//! [`SessionDescription`]'s `Display` writes a description back.

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

/// The largest description accepted (a SIP body; real ones are under 2 KB).
pub const MAX_SDP_LEN: usize = 16 * 1024;
/// The most media sections accepted in one description.
pub const MAX_MEDIA: usize = 16;

/// Why a body is not a usable session description.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// Larger than [`MAX_SDP_LEN`].
    #[error("SDP body of {0} bytes is over the {MAX_SDP_LEN}-byte limit")]
    TooLong(usize),
    /// Not UTF-8 text.
    #[error("SDP body is not UTF-8 text")]
    NotText,
    /// A line that is not `<letter>=<value>`.
    #[error("SDP line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A required line is missing.
    #[error("SDP has no {0}= line")]
    Missing(char),
    /// More than [`MAX_MEDIA`] media sections.
    #[error("SDP has more than {MAX_MEDIA} media sections")]
    TooManyMedia,
}

/// Which way media flows in a section (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default).
    #[default]
    SendRecv,
    /// The describer only sends (the other side is on hold).
    SendOnly,
    /// The describer only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    /// The direction an answerer takes for this offered direction.
    pub fn answer(self) -> Self {
        match self {
            Self::SendRecv => Self::SendRecv,
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            Self::Inactive => Self::Inactive,
        }
    }
}

/// An `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The originator's user name (`-` when none).
    pub username: String,
    /// Session id, unique per originator.
    pub session_id: u64,
    /// Version, increased by every new offer or answer in the session.
    pub session_version: u64,
    /// The originator's address.
    pub address: IpAddr,
}

/// An `a=rtpmap` attribute: what a dynamic payload type means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type.
    pub payload_type: u8,
    /// Encoding name as sent (`PCMU`, `opus`, `telephone-event`, ...).
    pub encoding: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels, when given.
    pub channels: Option<u8>,
}

/// An `m=` section with the attributes that matter for a voice call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// Media type (`audio`, `video`, ...).
    pub kind: String,
    /// Port; 0 means the section is refused or removed.
    pub port: u16,
    /// Transport protocol (`RTP/AVP`, `RTP/SAVPF`, ...).
    pub protocol: String,
    /// Payload types in preference order.
    pub formats: Vec<u8>,
    /// The section's own `c=` address, overriding the session's.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` lines.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` lines: payload type and parameters.
    pub fmtps: Vec<(u8, String)>,
    /// `a=ptime`, milliseconds of audio per packet.
    pub ptime: Option<u32>,
    /// Media direction.
    pub direction: Direction,
    /// Every other attribute: name and value.
    pub attributes: Vec<(String, Option<String>)>,
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line, trimmed (empty when the session has no name).
    pub session_name: String,
    /// The session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Media sections in order.
    pub media: Vec<Media>,
}

/// The static payload types RoomKit knows (RFC 3551).
fn static_codec(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8000)),
        8 => Some(("PCMA", 8000)),
        _ => None,
    }
}

impl Media {
    /// The encoding name and clock rate of a payload type: its `rtpmap`, or
    /// the static assignment for 0 and 8.
    pub fn codec_of(&self, pt: u8) -> Option<(&str, u32)> {
        self.rtpmaps
            .iter()
            .find(|m| m.payload_type == pt)
            .map(|m| (m.encoding.as_str(), m.clock_rate))
            .or_else(|| static_codec(pt))
    }
}

fn bad(line: usize, reason: impl Into<String>) -> SdpError {
    SdpError::BadLine {
        line,
        reason: reason.into(),
    }
}

/// Reads `c=IN IP4 <addr>` / `c=IN IP6 <addr>` (a multicast TTL suffix is
/// dropped).
fn parse_connection(value: &str, line: usize) -> Result<IpAddr, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some("IN"), Some(kind @ ("IP4" | "IP6")), Some(addr)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(line, "c= must be `IN IP4|IP6 <address>`"));
    };
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad(line, format!("`{addr}` is not an IP address")))?;
    if ip.is_ipv4() != (kind == "IP4") {
        return Err(bad(line, format!("`{addr}` is not an {kind} address")));
    }
    Ok(ip)
}

fn parse_origin(value: &str, line: usize) -> Result<Origin, SdpError> {
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    let [username, id, version, "IN", kind, addr] = parts.as_slice() else {
        return Err(bad(
            line,
            "o= must be `<user> <id> <version> IN IP4|IP6 <address>`",
        ));
    };
    let number = |v: &str, what: &str| {
        v.parse::<u64>()
            .map_err(|_| bad(line, format!("o= {what} `{v}` is not a number")))
    };
    Ok(Origin {
        username: (*username).to_owned(),
        session_id: number(id, "session id")?,
        session_version: number(version, "session version")?,
        address: parse_connection(&format!("IN {kind} {addr}"), line)?,
    })
}

fn parse_payload_type(v: &str, line: usize) -> Result<u8, SdpError> {
    v.parse::<u8>()
        .ok()
        .filter(|pt| *pt <= 127)
        .ok_or_else(|| bad(line, format!("`{v}` is not an RTP payload type (0-127)")))
}

fn parse_media(value: &str, line: usize) -> Result<Media, SdpError> {
    let mut parts = value.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(protocol)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(line, "m= must be `<media> <port> <proto> <formats>`"));
    };
    // `<port>/<count>` is allowed; the count is not used for audio.
    let port_text = port.split('/').next().unwrap_or(port);
    let port = port_text
        .parse::<u16>()
        .map_err(|_| bad(line, format!("m= port `{port_text}` is not a port number")))?;
    let rtp = protocol.starts_with("RTP/");
    let mut formats = Vec::new();
    for f in parts {
        if rtp {
            formats.push(parse_payload_type(f, line)?);
        }
    }
    Ok(Media {
        kind: kind.to_owned(),
        port,
        protocol: protocol.to_owned(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: Direction::default(),
        attributes: Vec::new(),
    })
}

fn parse_rtpmap(value: &str, line: usize) -> Result<RtpMap, SdpError> {
    let (pt, rest) = value
        .split_once(' ')
        .ok_or_else(|| bad(line, "rtpmap must be `<pt> <encoding>/<rate>`"))?;
    let mut fields = rest.trim().split('/');
    let encoding = fields.next().unwrap_or_default();
    let clock_rate = fields
        .next()
        .and_then(|r| r.parse::<u32>().ok())
        .filter(|r| *r > 0)
        .ok_or_else(|| bad(line, "rtpmap needs a clock rate above 0"))?;
    let channels = match fields.next() {
        Some(c) => Some(
            c.parse::<u8>()
                .map_err(|_| bad(line, format!("rtpmap channels `{c}` is not a number")))?,
        ),
        None => None,
    };
    if encoding.is_empty() {
        return Err(bad(line, "rtpmap has no encoding name"));
    }
    Ok(RtpMap {
        payload_type: parse_payload_type(pt, line)?,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

impl SessionDescription {
    /// Reads a session description.
    ///
    /// # Errors
    /// An [`SdpError`] naming the first problem and its line.
    pub fn parse(body: &[u8]) -> Result<Self, SdpError> {
        if body.len() > MAX_SDP_LEN {
            return Err(SdpError::TooLong(body.len()));
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
        let mut origin = None;
        let mut session_name = None;
        let mut connection = None;
        let mut media: Vec<Media> = Vec::new();
        let mut saw_version = false;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            // Every carriage return ending the line goes: a stray one left
            // on a value would be written back as part of it.
            let raw = raw.trim_end_matches('\r');
            if raw.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = raw.split_once('=') else {
                return Err(bad(n, "not a `<type>=<value>` line"));
            };
            let mut key_chars = key.chars();
            let (Some(key), None) = (key_chars.next(), key_chars.next()) else {
                return Err(bad(n, format!("`{key}` is not a one-letter type")));
            };
            if !saw_version {
                if key != 'v' || value.trim() != "0" {
                    return Err(bad(n, "a description starts with `v=0`"));
                }
                saw_version = true;
                continue;
            }
            match (key, media.last_mut()) {
                ('o', None) => origin = Some(parse_origin(value, n)?),
                ('s', None) => session_name = Some(value.trim().to_owned()),
                ('c', None) => connection = Some(parse_connection(value, n)?),
                ('c', Some(m)) => m.connection = Some(parse_connection(value, n)?),
                ('m', _) => {
                    if media.len() == MAX_MEDIA {
                        return Err(SdpError::TooManyMedia);
                    }
                    media.push(parse_media(value, n)?);
                }
                ('a', Some(m)) => {
                    let (name, val) = match value.split_once(':') {
                        Some((a, v)) => (a, Some(v)),
                        None => (value, None),
                    };
                    match (name, val) {
                        ("rtpmap", Some(v)) => m.rtpmaps.push(parse_rtpmap(v, n)?),
                        ("fmtp", Some(v)) => {
                            let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
                            m.fmtps
                                .push((parse_payload_type(pt, n)?, params.trim().to_owned()));
                        }
                        ("ptime", Some(v)) => {
                            m.ptime = Some(v.trim().parse().map_err(|_| {
                                bad(n, format!("ptime `{v}` is not a number of milliseconds"))
                            })?);
                        }
                        ("sendrecv", None) => m.direction = Direction::SendRecv,
                        ("sendonly", None) => m.direction = Direction::SendOnly,
                        ("recvonly", None) => m.direction = Direction::RecvOnly,
                        ("inactive", None) => m.direction = Direction::Inactive,
                        _ => m.attributes.push((name.to_owned(), val.map(str::to_owned))),
                    }
                }
                // Session-level attributes, bandwidth, timing, repeat,
                // zone, key, information, URI, email and phone lines carry
                // nothing a voice call needs; RFC 4566 §5 lets a reader
                // ignore what it does not use.
                _ => {}
            }
        }
        if !saw_version {
            return Err(SdpError::Missing('v'));
        }
        Ok(Self {
            origin: origin.ok_or(SdpError::Missing('o'))?,
            session_name: session_name.ok_or(SdpError::Missing('s'))?,
            connection,
            media,
        })
    }

    /// The address media of section `index` goes to: its own `c=` or the
    /// session's.
    pub fn media_address(&self, index: usize) -> Option<IpAddr> {
        self.media
            .get(index)
            .and_then(|m| m.connection)
            .or(self.connection)
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = |a: &IpAddr| if a.is_ipv4() { "IP4" } else { "IP6" };
        let o = &self.origin;
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            ip(&o.address),
            o.address
        )?;
        // RFC 4566 §5.3: a session without a name is written `s= `.
        let name = if self.session_name.is_empty() {
            " "
        } else {
            &self.session_name
        };
        write!(f, "s={name}\r\n")?;
        if let Some(c) = &self.connection {
            write!(f, "c=IN {} {c}\r\n", ip(c))?;
        }
        write!(f, "t=0 0\r\n")?;
        for m in &self.media {
            write!(f, "m={} {} {}", m.kind, m.port, m.protocol)?;
            for pt in &m.formats {
                write!(f, " {pt}")?;
            }
            write!(f, "\r\n")?;
            if let Some(c) = &m.connection {
                write!(f, "c=IN {} {c}\r\n", ip(c))?;
            }
            for r in &m.rtpmaps {
                write!(
                    f,
                    "a=rtpmap:{} {}/{}",
                    r.payload_type, r.encoding, r.clock_rate
                )?;
                if let Some(ch) = r.channels {
                    write!(f, "/{ch}")?;
                }
                write!(f, "\r\n")?;
            }
            for (pt, params) in &m.fmtps {
                write!(f, "a=fmtp:{pt} {params}\r\n")?;
            }
            if let Some(p) = m.ptime {
                write!(f, "a=ptime:{p}\r\n")?;
            }
            for (name, value) in &m.attributes {
                match value {
                    Some(v) => write!(f, "a={name}:{v}\r\n")?,
                    None => write!(f, "a={name}\r\n")?,
                }
            }
            write!(f, "a={}\r\n", m.direction.as_str())?;
        }
        Ok(())
    }
}

/// A codec this side can use, by encoding name and clock rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// Encoding name, compared without regard to case.
    pub encoding: &'static str,
    /// RTP clock rate.
    pub clock_rate: u32,
}

/// What was agreed for a call's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioAgreement {
    /// Index of the audio section in the offer.
    pub media_index: usize,
    /// The payload type both sides use for audio, as the offer numbered it.
    pub payload_type: u8,
    /// Its codec.
    pub codec: Codec,
    /// The telephone-event payload type, when the offer has one at the
    /// codec's clock rate.
    pub telephone_event: Option<u8>,
    /// Where to send RTP.
    pub remote: Option<(IpAddr, u16)>,
    /// The direction this side answers with.
    pub direction: Direction,
}

/// Why an offer cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NegotiationError {
    /// No active audio section over RTP.
    #[error("the offer has no audio stream over RTP")]
    NoAudio,
    /// None of the offered codecs is supported.
    #[error("none of the offered audio codecs ({offered}) is supported")]
    NoCommonCodec {
        /// The offered codecs, as `name/rate`.
        offered: String,
    },
}

/// Picks the audio codec for a call from an offer (RFC 3264 §6.1): the
/// first active audio section over RTP, and in it the first payload type,
/// in the offerer's order of preference, whose codec is in `supported`.
///
/// # Errors
/// [`NegotiationError`] when there is no audio or no common codec (the
/// SIP answer is then 488 Not Acceptable Here).
pub fn answer_audio(
    offer: &SessionDescription,
    supported: &[Codec],
) -> Result<AudioAgreement, NegotiationError> {
    let (index, media) = offer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.kind == "audio" && m.port != 0 && m.protocol.starts_with("RTP/"))
        .ok_or(NegotiationError::NoAudio)?;
    let mut offered = Vec::new();
    for &pt in &media.formats {
        let Some((name, rate)) = media.codec_of(pt) else {
            continue;
        };
        offered.push(format!("{name}/{rate}"));
        if let Some(codec) = supported
            .iter()
            .find(|c| c.encoding.eq_ignore_ascii_case(name) && c.clock_rate == rate)
        {
            let telephone_event = media.formats.iter().copied().find(|&te| {
                media.codec_of(te).is_some_and(|(n, r)| {
                    n.eq_ignore_ascii_case("telephone-event") && r == codec.clock_rate
                })
            });
            return Ok(AudioAgreement {
                media_index: index,
                payload_type: pt,
                codec: *codec,
                telephone_event,
                remote: offer.media_address(index).map(|a| (a, media.port)),
                direction: media.direction.answer(),
            });
        }
    }
    Err(NegotiationError::NoCommonCodec {
        offered: offered.join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer as a softphone sends it: Opus, G.711 both laws, telephone
    /// events at 48 and 8 kHz, session-level connection.
    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844527 IN IP4 198.51.100.7\r\n\
s=call\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 111 0 8 101 110\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=ptime:20\r\n\
a=rtcp-mux\r\n\
a=sendonly\r\n";

    const PCMU: Codec = Codec {
        encoding: "PCMU",
        clock_rate: 8000,
    };
    const PCMA: Codec = Codec {
        encoding: "PCMA",
        clock_rate: 8000,
    };
    const OPUS: Codec = Codec {
        encoding: "opus",
        clock_rate: 48000,
    };

    #[test]
    fn an_offer_is_read() -> Result<(), SdpError> {
        let sdp = SessionDescription::parse(OFFER.as_bytes())?;
        assert_eq!(sdp.origin.session_version, 2_890_844_527);
        assert_eq!(sdp.session_name, "call");
        let m = &sdp.media[0];
        assert_eq!((m.kind.as_str(), m.port), ("audio", 49170));
        assert_eq!(m.formats, vec![111, 0, 8, 101, 110]);
        assert_eq!(m.codec_of(8), Some(("PCMA", 8000)));
        assert_eq!(m.codec_of(111), Some(("opus", 48000)));
        assert_eq!(m.rtpmaps[0].channels, Some(2));
        assert_eq!(m.fmtps[1], (101, "0-16".to_owned()));
        assert_eq!((m.ptime, m.direction), (Some(20), Direction::SendOnly));
        assert_eq!(m.attributes, vec![("rtcp-mux".to_owned(), None)]);
        assert_eq!(
            sdp.media_address(0),
            Some("198.51.100.7".parse().map_err(|_| SdpError::NotText)?)
        );
        Ok(())
    }

    #[test]
    fn the_codec_follows_the_offerers_preference_among_ours() -> Result<(), SdpError> {
        let sdp = SessionDescription::parse(OFFER.as_bytes())?;
        let g711 = answer_audio(&sdp, &[PCMA, PCMU]).map_err(|_| SdpError::Missing('m'))?;
        assert_eq!((g711.payload_type, g711.codec), (0, PCMU));
        assert_eq!(g711.telephone_event, Some(101));
        assert_eq!(g711.direction, Direction::RecvOnly);
        assert_eq!(g711.remote.map(|r| r.1), Some(49170));
        let opus = answer_audio(&sdp, &[PCMU, OPUS]).map_err(|_| SdpError::Missing('m'))?;
        assert_eq!((opus.payload_type, opus.telephone_event), (111, Some(110)));
        let none = answer_audio(
            &sdp,
            &[Codec {
                encoding: "G722",
                clock_rate: 8000,
            }],
        );
        assert!(
            matches!(none, Err(NegotiationError::NoCommonCodec { offered })
            if offered.starts_with("opus/48000, PCMU/8000, PCMA/8000"))
        );
        Ok(())
    }

    #[test]
    fn a_written_description_reads_back_the_same() -> Result<(), SdpError> {
        let sdp = SessionDescription::parse(OFFER.as_bytes())?;
        let text = sdp.to_string();
        assert!(text.starts_with("v=0\r\no=alice 2890844526 2890844527 IN IP4 198.51.100.7\r\n"));
        assert_eq!(SessionDescription::parse(text.as_bytes())?, sdp);
        Ok(())
    }

    #[test]
    fn bad_descriptions_are_named_with_their_line() {
        let cases: &[(&str, &str)] = &[
            ("o=a 1 1 IN IP4 10.0.0.1\r\n", "line 1"),
            ("v=1\r\n", "line 1"),
            ("v=0\r\nno equals sign\r\n", "line 2"),
            ("v=0\r\nab=c\r\n", "line 2"),
            ("v=0\r\no=a x 1 IN IP4 10.0.0.1\r\n", "session id"),
            ("v=0\r\no=a 1 1 IN IP4 ::1\r\n", "not an IP4 address"),
            (
                "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 nowhere\r\n",
                "line 4",
            ),
            (
                "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n",
                "port",
            ),
            (
                "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 5 RTP/AVP 200\r\n",
                "payload type",
            ),
            (
                "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 5 RTP/AVP 0\r\na=rtpmap:96 opus\r\n",
                "clock rate",
            ),
            (
                "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nm=audio 5 RTP/AVP 0\r\na=ptime:x\r\n",
                "ptime",
            ),
            ("v=0\r\ns=-\r\n", "no o= line"),
            ("v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\n", "no s= line"),
            ("", "no v= line"),
        ];
        for (body, expected) in cases {
            match SessionDescription::parse(body.as_bytes()) {
                Ok(sdp) => panic!("{body:?} was accepted: {sdp:?}"),
                Err(e) => assert!(e.to_string().contains(expected), "{body:?}: {e}"),
            }
        }
        assert_eq!(
            SessionDescription::parse(&[b'v', b'=', 0xff]),
            Err(SdpError::NotText)
        );
        assert_eq!(
            SessionDescription::parse(&vec![b'a'; MAX_SDP_LEN + 1]),
            Err(SdpError::TooLong(MAX_SDP_LEN + 1))
        );
        let many = format!(
            "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\n{}",
            "m=audio 5 RTP/AVP 0\r\n".repeat(MAX_MEDIA + 1)
        );
        assert_eq!(
            SessionDescription::parse(many.as_bytes()),
            Err(SdpError::TooManyMedia)
        );
    }

    /// Found by the `sdp_offer` fuzz target: a last line ending in two
    /// carriage returns kept one in its attribute, which was then written
    /// back as part of the line.
    #[test]
    fn stray_carriage_returns_do_not_stick_to_values() -> Result<(), SdpError> {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nm=audio 5 RTP/AVP 0\r\na=sendr445\r\r";
        let sdp = SessionDescription::parse(body.as_bytes())?;
        assert_eq!(sdp.media[0].attributes, vec![("sendr445".to_owned(), None)]);
        assert_eq!(SessionDescription::parse(sdp.to_string().as_bytes())?, sdp);
        Ok(())
    }

    #[test]
    fn offers_without_usable_audio_are_refused() -> Result<(), SdpError> {
        let video = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nm=video 5000 RTP/AVP 96\r\nm=audio 0 RTP/AVP 0\r\n";
        let sdp = SessionDescription::parse(video.as_bytes())?;
        assert_eq!(answer_audio(&sdp, &[PCMU]), Err(NegotiationError::NoAudio));
        Ok(())
    }
}
