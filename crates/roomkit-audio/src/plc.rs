//! Packet loss handling for lossy transports: sequence-number loss detection and a generic concealer.
//!
//! [`LossDetector`] tells packets that are merely late (still inside the
//! reordering window) from packets confirmed lost. Sender pauses (DTX) do not
//! consume sequence numbers and so never count as loss; sequence numbers of
//! packets filtered out upstream (RFC 4733 telephone events) are marked
//! received with [`LossDetector::mark_received`]. [`Concealer`] fills a lost
//! frame by repeating the last good one with a fade that reaches silence
//! within `max_conceal_ms`.

/// What the detector made of an arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next packet, or a later one (a gap opened).
    InOrder,
    /// An earlier packet that arrived inside the reordering window.
    Reordered,
    /// Already seen.
    Duplicate,
    /// So late that its slot was already declared lost and concealed.
    TooLate,
}

/// Sequence-number analysis with a bounded reordering window.
#[derive(Debug, Clone)]
pub struct LossDetector {
    window: u64,
    /// Highest extended sequence number seen.
    highest: Option<u64>,
    /// Extended sequence numbers below this are decided (received or lost).
    decided_below: u64,
    /// Receipt bits for [decided_below, decided_below + 64).
    received: u128,
    packets_lost: u64,
}

impl LossDetector {
    /// A detector that waits for `reorder_window` newer packets (at most 64)
    /// before declaring a missing one lost.
    pub fn new(reorder_window: u16) -> Self {
        Self {
            window: u64::from(reorder_window.clamp(1, 64)),
            highest: None,
            decided_below: 0,
            received: 0,
            packets_lost: 0,
        }
    }

    /// Packets confirmed lost so far.
    pub fn packets_lost(&self) -> u64 {
        self.packets_lost
    }

    fn extend(&self, seq: u16) -> u64 {
        match self.highest {
            None => u64::from(seq),
            Some(h) => {
                // Pick the candidate closest to the highest seen (wrap-around).
                let base = h & !0xFFFF;
                let cands = [base.wrapping_sub(0x10000), base, base + 0x10000];
                let mut best = base + u64::from(seq);
                let mut dist = u64::MAX;
                for c in cands {
                    let v = c.wrapping_add(u64::from(seq));
                    let d = v.abs_diff(h);
                    if d < dist {
                        dist = d;
                        best = v;
                    }
                }
                best
            }
        }
    }

    /// Registers an arriving packet. Returns its classification and the
    /// number of packets newly confirmed lost (to be concealed now, in order,
    /// before this packet is played if it is `InOrder`).
    pub fn on_packet(&mut self, seq: u16) -> (Arrival, u64) {
        let ext = self.extend(seq);
        let Some(h) = self.highest else {
            self.highest = Some(ext);
            self.decided_below = ext;
            self.set_bit(ext);
            return (Arrival::InOrder, 0);
        };
        if ext < self.decided_below {
            return (Arrival::TooLate, 0);
        }
        if ext <= h {
            if self.bit(ext) {
                return (Arrival::Duplicate, 0);
            }
            self.set_bit(ext);
            return (Arrival::Reordered, 0);
        }
        self.highest = Some(ext);
        self.set_bit(ext);
        (Arrival::InOrder, self.settle())
    }

    /// Marks a sequence number as received without it entering the audio
    /// path (a telephone-event packet removed upstream).
    pub fn mark_received(&mut self, seq: u16) {
        let _ = self.on_packet(seq);
    }

    /// Declares lost every missing packet that fell out of the window.
    fn settle(&mut self) -> u64 {
        let Some(h) = self.highest else { return 0 };
        let mut lost = 0;
        while h >= self.decided_below + self.window {
            if self.received & 1 == 0 {
                lost += 1;
            }
            self.received >>= 1;
            self.decided_below += 1;
        }
        self.packets_lost += lost;
        lost
    }

    fn bit(&self, ext: u64) -> bool {
        let off = ext - self.decided_below;
        off < 128 && (self.received >> off) & 1 == 1
    }

    fn set_bit(&mut self, ext: u64) {
        // Jumps far ahead: everything in between is decided as lost at once.
        while ext >= self.decided_below + 128 {
            if self.received & 1 == 0 {
                self.packets_lost += 1;
            }
            self.received >>= 1;
            self.decided_below += 1;
        }
        let off = ext - self.decided_below;
        self.received |= 1u128 << off;
    }
}

/// Generic concealment: repeat the last good frame, fading out, then silence.
#[derive(Debug, Clone)]
pub struct Concealer {
    last: Vec<i16>,
    rate: u32,
    max_conceal_ms: f64,
    concealed_ms: f64,
    concealed_frames: u64,
}

impl Concealer {
    /// A concealer at `rate` Hz that reaches silence after `max_conceal_ms`
    /// (60 ms is the usual choice).
    pub fn new(rate: u32, max_conceal_ms: f64) -> Self {
        Self {
            last: Vec::with_capacity(rate as usize / 25),
            rate,
            max_conceal_ms: max_conceal_ms.max(1.0),
            concealed_ms: 0.0,
            concealed_frames: 0,
        }
    }

    /// Frames synthesised so far.
    pub fn concealed_frames(&self) -> u64 {
        self.concealed_frames
    }

    /// Remembers a correctly received frame and ends any concealment run.
    pub fn good_frame(&mut self, pcm: &[i16]) {
        self.last.clear();
        self.last.extend_from_slice(pcm);
        self.concealed_ms = 0.0;
    }

    /// Fills `out` in place of a lost frame.
    pub fn conceal(&mut self, out: &mut [i16]) {
        self.concealed_frames += 1;
        let ms_per_sample = 1000.0 / f64::from(self.rate.max(1));
        for (i, o) in out.iter_mut().enumerate() {
            let t = self.concealed_ms + i as f64 * ms_per_sample;
            let gain = (1.0 - t / self.max_conceal_ms).max(0.0);
            let src = if self.last.is_empty() {
                0
            } else {
                self.last[i % self.last.len()]
            };
            *o = (f64::from(src) * gain).round() as i16;
        }
        self.concealed_ms += out.len() as f64 * ms_per_sample;
    }
}
