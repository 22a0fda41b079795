//! RTCP sender and receiver reports (RFC 3550 §6.4): what a call's media
//! task sends every few seconds about the stream it receives (loss,
//! jitter) and the one it sends (packet and octet counts), and what it
//! learns from the peer's reports (its view of our stream, and the round
//! trip time from the LSR/DLSR fields).
//!
//! Reports are read from bytes off the network: a compound packet is walked
//! packet by packet, each length checked; anything malformed is a typed
//! error, never a panic. SDES, BYE and APP packets are skipped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Sender report.
pub const PT_SR: u8 = 200;
/// Receiver report.
pub const PT_RR: u8 = 201;
/// Source description.
pub const PT_SDES: u8 = 202;

/// Why bytes are not RTCP.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// Shorter than a header.
    #[error("{0} bytes are too short for RTCP")]
    TooShort(usize),
    /// Not version 2.
    #[error("RTCP version {0} is not 2")]
    Version(u8),
    /// A packet's length runs past the datagram.
    #[error("an RTCP packet claims {claimed} bytes, {available} are left")]
    Length {
        /// Bytes the header claims.
        claimed: usize,
        /// Bytes left.
        available: usize,
    },
    /// The first packet is not a report (RFC 3550 §6.1).
    #[error("a compound RTCP packet must start with SR or RR, not type {0}")]
    NotReport(u8),
}

/// One report block: what a receiver says of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    /// Lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Lost in all (24 bits, signed).
    pub cumulative_lost: i32,
    /// Highest sequence number received, extended.
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the NTP time of the last SR received from the
    /// source.
    pub last_sr: u32,
    /// Time since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// A sender report's sender part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP time of the report (middle 32 bits kept for LSR).
    pub ntp: u64,
    /// RTP timestamp of the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// A report (SR or RR) read from a compound packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Who sends the report.
    pub ssrc: u32,
    /// For an SR.
    pub sender: Option<SenderInfo>,
    /// Its report blocks.
    pub blocks: Vec<ReportBlock>,
}

/// The NTP time (RFC 5905 64-bit format) of `time`.
pub fn ntp_of(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Seconds from 1900 to 1970.
    let seconds = since.as_secs() + 2_208_988_800;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of an NTP time (LSR, and "now" for RTT).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// The round trip time a report block shows, `now` being the middle 32
/// bits of the current NTP time (RFC 3550 §6.4.1); `None` when the peer
/// has not received a sender report of ours yet.
pub fn round_trip(block: &ReportBlock, now: u32) -> Option<Duration> {
    if block.last_sr == 0 {
        return None;
    }
    let units = now
        .wrapping_sub(block.last_sr)
        .wrapping_sub(block.delay_since_last_sr);
    // A negative result (clock trouble) wraps to a huge value: refuse it.
    if units > 0x8000_0000 {
        return None;
    }
    Some(Duration::from_micros(u64::from(units) * 1_000_000 / 65_536))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads the reports of a compound RTCP packet.
///
/// # Errors
/// [`RtcpError`] for anything that is not well-formed RTCP.
pub fn parse(datagram: &[u8]) -> Result<Vec<Report>, RtcpError> {
    let mut reports = Vec::new();
    let mut rest = datagram;
    let mut first = true;
    if rest.len() < 4 {
        return Err(RtcpError::TooShort(rest.len()));
    }
    while rest.len() >= 4 {
        let version = rest[0] >> 6;
        if version != 2 {
            return Err(RtcpError::Version(version));
        }
        let count = usize::from(rest[0] & 0x1f);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(RtcpError::Length {
                claimed: len,
                available: rest.len(),
            });
        }
        if first && pt != PT_SR && pt != PT_RR {
            return Err(RtcpError::NotReport(pt));
        }
        first = false;
        let body = &rest[..len];
        if pt == PT_SR || pt == PT_RR {
            let header = if pt == PT_SR { 28 } else { 8 };
            if body.len() < header + count * 24 {
                return Err(RtcpError::Length {
                    claimed: header + count * 24,
                    available: body.len(),
                });
            }
            let sender = (pt == PT_SR).then(|| SenderInfo {
                ntp: (u64::from(u32_at(body, 8)) << 32) | u64::from(u32_at(body, 12)),
                rtp_timestamp: u32_at(body, 16),
                packets: u32_at(body, 20),
                octets: u32_at(body, 24),
            });
            let blocks = (0..count)
                .map(|i| {
                    let at = header + i * 24;
                    let lost = u32_at(body, at + 4);
                    // 24-bit two's complement.
                    let cumulative = ((lost & 0x00ff_ffff) << 8) as i32 >> 8;
                    ReportBlock {
                        ssrc: u32_at(body, at),
                        fraction_lost: (lost >> 24) as u8,
                        cumulative_lost: cumulative,
                        highest_seq: u32_at(body, at + 8),
                        jitter: u32_at(body, at + 12),
                        last_sr: u32_at(body, at + 16),
                        delay_since_last_sr: u32_at(body, at + 20),
                    }
                })
                .collect();
            reports.push(Report {
                ssrc: u32_at(body, 4),
                sender,
                blocks,
            });
        }
        rest = &rest[len..];
    }
    Ok(reports)
}

/// Writes a compound packet: an SR (when `sender` is given) or an RR, with
/// at most one report block, then an SDES with the CNAME.
pub fn write(
    ssrc: u32,
    sender: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &str,
    out: &mut Vec<u8>,
) {
    out.clear();
    let blocks = usize::from(block.is_some());
    let words = if sender.is_some() { 6 } else { 1 } + blocks * 6;
    out.push(0x80 | blocks as u8);
    out.push(if sender.is_some() { PT_SR } else { PT_RR });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&s.packets.to_be_bytes());
        out.extend_from_slice(&s.octets.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = (u32::from(b.fraction_lost) << 24) | (b.cumulative_lost as u32 & 0x00ff_ffff);
        out.extend_from_slice(&lost.to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    // SDES: one chunk, CNAME, end, padded to a word.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + name.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    out.push(0x81);
    out.push(PT_SDES);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend(std::iter::repeat_n(0, padded - (chunk - 1)));
}

/// What one side counts of the stream it receives, to report on it.
#[derive(Debug, Clone, Default)]
pub struct ReceiverCounts {
    /// The source's SSRC.
    pub ssrc: Option<u32>,
    base_seq: Option<u32>,
    max_ext: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// The middle of the NTP time of the last SR from the source, and when
    /// it arrived.
    pub last_sr: Option<(u32, std::time::Instant)>,
}

impl ReceiverCounts {
    /// Counts one received packet.
    pub fn on_packet(&mut self, ssrc: u32, seq: u16) {
        if self.ssrc != Some(ssrc) {
            *self = Self {
                ssrc: Some(ssrc),
                last_sr: self.last_sr,
                ..Self::default()
            };
        }
        let seq = u32::from(seq);
        let Some(_) = self.base_seq else {
            self.base_seq = Some(seq);
            self.max_ext = seq;
            self.received = 1;
            return;
        };
        // Extend against the highest so far.
        let cycles = self.max_ext & !0xffff;
        let mut ext = cycles | seq;
        if ext + 0x8000 < self.max_ext {
            ext += 0x1_0000;
        } else if ext > self.max_ext + 0x8000 && ext >= 0x1_0000 {
            ext -= 0x1_0000;
        }
        self.max_ext = self.max_ext.max(ext);
        self.received = self.received.saturating_add(1);
    }

    /// Packets lost in all (expected minus received).
    pub fn lost(&self) -> i64 {
        let Some(base) = self.base_seq else { return 0 };
        i64::from(self.max_ext) - i64::from(base) + 1 - i64::from(self.received)
    }

    /// The report block for the next report, `jitter` in timestamp units;
    /// `None` before any packet.
    pub fn block(&mut self, jitter: u32) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let base = self.base_seq?;
        let expected = self.max_ext - base + 1;
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay) = match self.last_sr {
            Some((middle, at)) => {
                let d = at.elapsed().as_secs_f64() * 65_536.0;
                (middle, d as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost: fraction,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: self.max_ext,
            jitter,
            last_sr,
            delay_since_last_sr: delay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_report_reads_back() {
        let sender = SenderInfo {
            ntp: ntp_of(SystemTime::now()),
            rtp_timestamp: 1234,
            packets: 50,
            octets: 8000,
        };
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 12,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 40,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65_536,
        };
        let mut out = Vec::new();
        write(99, Some(&sender), Some(&block), "roomkit@test", &mut out);
        assert_eq!(out.len() % 4, 0);
        let reports = parse(&out).expect("parses");
        assert_eq!(
            reports,
            vec![Report {
                ssrc: 99,
                sender: Some(sender),
                blocks: vec![block]
            }]
        );
        write(99, None, None, "x", &mut out);
        assert_eq!(parse(&out).expect("parses")[0].blocks, vec![]);
    }

    #[test]
    fn refuses_malformed_packets() {
        assert_eq!(parse(&[0x80, 200]), Err(RtcpError::TooShort(2)));
        assert_eq!(parse(&[0x40, 200, 0, 0]), Err(RtcpError::Version(1)));
        assert!(matches!(
            parse(&[0x80, 200, 0, 9, 0, 0, 0, 0]),
            Err(RtcpError::Length { .. })
        ));
        assert_eq!(parse(&[0x81, 202, 0, 0]), Err(RtcpError::NotReport(202)));
        // An RR claiming a block it does not carry.
        assert!(matches!(
            parse(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
            Err(RtcpError::Length { .. })
        ));
    }

    #[test]
    fn counts_losses_and_computes_round_trip() {
        let mut c = ReceiverCounts::default();
        for seq in [65_530u16, 65_531, 65_533, 65_535, 0, 1, 3] {
            c.on_packet(5, seq);
        }
        assert_eq!(c.lost(), 3);
        let block = c.block(10).expect("a block");
        assert_eq!(block.highest_seq, 0x1_0003);
        assert_eq!(block.fraction_lost, (3 * 256 / 10) as u8);
        let rtt = round_trip(
            &ReportBlock {
                last_sr: 1000,
                delay_since_last_sr: 500,
                ..block
            },
            1000 + 500 + 6554,
        )
        .expect("an rtt");
        assert!((rtt.as_millis() as i64 - 100).abs() <= 1, "{rtt:?}");
    }
}
