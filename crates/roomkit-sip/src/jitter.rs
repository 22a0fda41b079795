//! An adaptive jitter buffer for one RTP stream.
//!
//! Packets go in as they arrive, in any order; the call's 20 ms clock takes
//! them out in sequence order. Before playout starts (and after the buffer
//! ran dry) it waits until it holds `target` packets, where `target` follows
//! the stream's interarrival jitter (RFC 3550 §6.4.1): about three times the
//! jitter estimate plus half a packet, at least one packet and at most
//! [`MAX_TARGET`]. A packet whose turn has passed when it arrives is late
//! and dropped; a missing packet with later ones already waiting is lost,
//! and the caller conceals it. When a jitter spike has passed and the
//! buffer holds more than the target plus three packets, one packet is
//! skipped to bring the delay back down (at most one in ten, so a burst
//! costs little audio).
//!
//! The buffer keeps [`SLOTS`] fixed slots whose payload vectors are reused,
//! so steady-state operation allocates nothing.

use std::time::Instant;

/// Slots in the ring: the most packets held at once.
pub const SLOTS: usize = 64;
/// The most packets the buffer waits for before playing (300 ms of 20 ms
/// packets).
pub const MAX_TARGET: usize = 15;
/// A packet this many sequence numbers behind playout is not late but a
/// restarted stream (RFC 3550 A.1's misorder bound): the buffer starts
/// over from it.
pub const MAX_MISORDER: u64 = 100;
/// Packets held beyond the target before the buffer starts skipping.
const SKIP_MARGIN: usize = 3;
/// Packets played between two skips.
const SKIP_EVERY: u32 = 10;

/// What became of a packet handed to [`JitterBuffer::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Stored for playout.
    Stored,
    /// Its turn had passed.
    Late,
    /// Already stored.
    Duplicate,
    /// So far ahead of playout that older packets were dropped to make
    /// room (the stream jumped: a restart or a new source).
    Resynced,
}

/// What the next playout step is.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next packet's payload, with its RTP timestamp.
    Packet {
        /// RTP timestamp.
        timestamp: u32,
        /// Payload bytes.
        payload: &'a [u8],
    },
    /// The next packet is lost (later ones are here): conceal one packet.
    Lost,
    /// Nothing to play: the stream has not started, paused, or the buffer
    /// is refilling after running dry.
    Waiting,
}

#[derive(Debug, Clone)]
struct Slot {
    seq: u64,
    timestamp: u32,
    filled: bool,
    data: Vec<u8>,
}

/// Counters of one buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets stored.
    pub stored: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Duplicates.
    pub duplicate: u64,
    /// Packets never received by their turn.
    pub lost: u64,
    /// Packets skipped to shrink the delay.
    pub skipped: u64,
    /// Times the buffer ran dry during playout.
    pub underruns: u64,
}

/// The jitter buffer.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    slots: Vec<Slot>,
    clock_rate: u32,
    /// Highest extended sequence number stored.
    highest: Option<u64>,
    /// Extended sequence number played next.
    next: Option<u64>,
    /// Waiting for `target` packets before playing.
    filling: bool,
    jitter: f64,
    last_transit: Option<f64>,
    started: Option<Instant>,
    packet_samples: u32,
    since_skip: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for a stream with `clock_rate` Hz timestamps.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            slots: (0..SLOTS)
                .map(|_| Slot {
                    seq: 0,
                    timestamp: 0,
                    filled: false,
                    data: Vec::with_capacity(160),
                })
                .collect(),
            clock_rate: clock_rate.max(1),
            highest: None,
            next: None,
            filling: true,
            jitter: 0.0,
            last_transit: None,
            started: None,
            packet_samples: clock_rate / 50,
            since_skip: 0,
            stats: JitterStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Interarrival jitter in timestamp units (RFC 3550 §6.4.1).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Packets waited for before playout: about three jitter estimates plus
    /// half a packet.
    pub fn target(&self) -> usize {
        let packet = f64::from(self.packet_samples.max(1));
        let packets = ((3.0 * self.jitter + packet / 2.0) / packet).ceil();
        (packets as usize).clamp(1, MAX_TARGET)
    }

    /// Packets held now, from the next one to play to the newest.
    pub fn depth(&self) -> usize {
        match (self.next, self.highest) {
            (Some(n), Some(h)) if h >= n => (h - n + 1) as usize,
            (None, Some(_)) => self.slots.iter().filter(|s| s.filled).count(),
            _ => 0,
        }
    }

    fn extend(&self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            // Start high enough that earlier packets do not go below zero.
            return (1 << 16) + u64::from(seq);
        };
        let base = h & !0xFFFF;
        let candidates = [
            base.wrapping_sub(1 << 16) | u64::from(seq),
            base | u64::from(seq),
            (base + (1 << 16)) | u64::from(seq),
        ];
        candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base | u64::from(seq))
    }

    /// Stores a packet that arrived at `arrival`.
    pub fn insert(&mut self, seq: u16, timestamp: u32, payload: &[u8], arrival: Instant) -> Insert {
        self.track_jitter(timestamp, arrival);
        let mut ext = self.extend(seq);
        let mut outcome = Insert::Stored;
        if let Some(next) = self.next
            && ext < next
        {
            if next - ext <= MAX_MISORDER {
                self.stats.late += 1;
                return Insert::Late;
            }
            // The sender started over (a new stream, a replayed one).
            self.reset();
            ext = self.extend(seq);
            outcome = Insert::Resynced;
        }
        let floor = self.next.or_else(|| self.oldest_filled());
        if let Some(floor) = floor
            && ext >= floor + SLOTS as u64
        {
            // Too far ahead to fit: the stream jumped. Start over from it.
            self.reset();
            outcome = Insert::Resynced;
        }
        let slot = &mut self.slots[(ext % SLOTS as u64) as usize];
        if slot.filled && slot.seq == ext {
            self.stats.duplicate += 1;
            return Insert::Duplicate;
        }
        slot.seq = ext;
        slot.timestamp = timestamp;
        slot.filled = true;
        slot.data.clear();
        slot.data.extend_from_slice(payload);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.stats.stored += 1;
        outcome
    }

    /// Forgets every packet and the playout position (a new stream), but
    /// keeps the jitter estimate and the counters.
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.filled = false;
        }
        self.next = None;
        self.highest = None;
        self.filling = true;
    }

    fn oldest_filled(&self) -> Option<u64> {
        self.slots.iter().filter(|s| s.filled).map(|s| s.seq).min()
    }

    fn track_jitter(&mut self, timestamp: u32, arrival: Instant) {
        let started = *self.started.get_or_insert(arrival);
        let arrival_units =
            arrival.duration_since(started).as_secs_f64() * f64::from(self.clock_rate);
        let transit = arrival_units - f64::from(timestamp);
        if let Some(last) = self.last_transit {
            let mut d = (transit - last).abs();
            // A timestamp wrap or a new talkspurt far away is not jitter.
            if d > f64::from(self.clock_rate) {
                d = self.jitter;
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Sets how many samples one packet carries (learned from the decoder),
    /// which scales the target.
    pub fn set_packet_samples(&mut self, samples: u32) {
        if samples > 0 {
            self.packet_samples = samples;
        }
    }

    /// The next playout step, for one packet's worth of audio.
    pub fn pop(&mut self) -> Playout<'_> {
        let Some(highest) = self.highest else {
            return Playout::Waiting;
        };
        if self.filling {
            let start = self.next.or_else(|| self.oldest_filled());
            let Some(start) = start else {
                return Playout::Waiting;
            };
            let held = (highest.saturating_sub(start) + 1) as usize;
            if held < self.target() {
                return Playout::Waiting;
            }
            self.filling = false;
            // Playout (re)starts at the oldest packet held.
            self.next = Some(
                self.slots
                    .iter()
                    .filter(|s| s.filled && s.seq >= start)
                    .map(|s| s.seq)
                    .min()
                    .unwrap_or(start),
            );
        }
        let Some(mut next) = self.next else {
            return Playout::Waiting;
        };
        if next > highest {
            // Ran dry: refill before playing again.
            self.stats.underruns += 1;
            self.filling = true;
            return Playout::Waiting;
        }
        // Too much delay built up: skip the oldest packet, at most one in
        // every SKIP_EVERY played, so the delay shrinks gradually.
        self.since_skip = self.since_skip.saturating_add(1);
        if (highest - next + 1) as usize > self.target() + SKIP_MARGIN
            && self.since_skip >= SKIP_EVERY
        {
            self.since_skip = 0;
            let index = (next % SLOTS as u64) as usize;
            if self.slots[index].filled && self.slots[index].seq == next {
                self.slots[index].filled = false;
                self.stats.skipped += 1;
            }
            next += 1;
        }
        self.next = Some(next + 1);
        let index = (next % SLOTS as u64) as usize;
        let slot = &mut self.slots[index];
        if slot.filled && slot.seq == next {
            slot.filled = false;
            let slot = &self.slots[index];
            return Playout::Packet {
                timestamp: slot.timestamp,
                payload: &slot.data,
            };
        }
        self.stats.lost += 1;
        Playout::Lost
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn feed(buffer: &mut JitterBuffer, seq: u16, at: Instant) -> Insert {
        buffer.insert(seq, u32::from(seq) * 160, &[seq as u8], at)
    }

    fn payload_of(p: Playout<'_>) -> Option<u8> {
        match p {
            Playout::Packet { payload, .. } => payload.first().copied(),
            _ => None,
        }
    }

    #[test]
    fn plays_in_order_and_reports_losses() {
        let t0 = Instant::now();
        let mut b = JitterBuffer::new(8000);
        // Arrive out of order, 3 missing.
        for seq in [1u16, 2, 4, 5, 6] {
            let at = t0 + Duration::from_millis(u64::from(seq) * 20);
            assert_eq!(feed(&mut b, seq, at), Insert::Stored);
        }
        assert_eq!(payload_of(b.pop()), Some(1));
        assert_eq!(payload_of(b.pop()), Some(2));
        assert_eq!(b.pop(), Playout::Lost);
        assert_eq!(payload_of(b.pop()), Some(4));
        // 3 arrives after its turn.
        assert_eq!(feed(&mut b, 3, t0), Insert::Late);
        assert_eq!(b.stats().lost, 1);
        assert_eq!(b.stats().late, 1);
    }

    #[test]
    fn waits_for_the_target_after_running_dry() {
        let t0 = Instant::now();
        let mut b = JitterBuffer::new(8000);
        assert_eq!(b.pop(), Playout::Waiting);
        feed(&mut b, 10, t0);
        assert_eq!(payload_of(b.pop()), Some(10));
        assert_eq!(b.pop(), Playout::Waiting);
        assert_eq!(b.stats().underruns, 1);
        feed(&mut b, 11, t0 + Duration::from_millis(40));
        assert_eq!(payload_of(b.pop()), Some(11));
    }

    #[test]
    fn grows_with_jitter() {
        let t0 = Instant::now();
        let mut b = JitterBuffer::new(8000);
        // Packets 20 ms apart arriving with 0 or 40 ms of extra delay.
        for seq in 0u16..60 {
            let extra = if seq % 2 == 0 { 0 } else { 40 };
            let at = t0 + Duration::from_millis(u64::from(seq) * 20 + extra);
            feed(&mut b, seq, at);
        }
        assert!(
            b.target() >= 3,
            "target {} jitter {}",
            b.target(),
            b.jitter()
        );
        assert!(b.target() <= MAX_TARGET);
    }

    #[test]
    fn a_burst_after_a_stall_is_drained_back_to_the_target() {
        let t0 = Instant::now();
        let mut b = JitterBuffer::new(8000);
        // A steady stream, except that packets 50-69 are held for 400 ms
        // and arrive together.
        let arrival = |seq: u64| {
            if (50..70).contains(&seq) {
                70 * 20
            } else {
                seq * 20
            }
        };
        let mut next = 0u64;
        let mut played = 0;
        for tick in 0u64..400 {
            let now = tick * 20;
            while next < 300 && arrival(next) <= now {
                feed(
                    &mut b,
                    next as u16,
                    t0 + Duration::from_millis(arrival(next)),
                );
                next += 1;
            }
            if let Playout::Packet { .. } = b.pop() {
                played += 1;
            }
        }
        assert!(b.stats().underruns >= 1, "{:?}", b.stats());
        assert!(b.stats().skipped >= 1, "{:?}", b.stats());
        assert!(played > 250, "played {played}, {:?}", b.stats());
    }

    #[test]
    fn a_stream_that_starts_over_is_followed() {
        let t0 = Instant::now();
        let at = |k: u64| t0 + Duration::from_millis(k * 20);
        let mut b = JitterBuffer::new(8000);
        for seq in 0u16..300 {
            feed(&mut b, seq, at(u64::from(seq)));
            assert!(matches!(b.pop(), Playout::Packet { .. } | Playout::Waiting));
        }
        // The sender restarts its sequence numbers (and timestamps).
        assert_eq!(feed(&mut b, 0, at(300)), Insert::Resynced);
        for seq in 1u16..4 {
            assert_eq!(feed(&mut b, seq, at(300 + u64::from(seq))), Insert::Stored);
        }
        let played: Vec<Option<u8>> = (0..4).map(|_| payload_of(b.pop())).collect();
        assert_eq!(played, vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(b.stats().late, 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut b = JitterBuffer::new(8000);
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            b.insert(seq, i as u32 * 160, &[i as u8], t0);
        }
        let order: Vec<Option<u8>> = (0..4).map(|_| payload_of(b.pop())).collect();
        assert_eq!(order, vec![Some(0), Some(1), Some(2), Some(3)]);
    }
}
