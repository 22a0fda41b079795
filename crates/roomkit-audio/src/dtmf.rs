//! DTMF (touch-tone) detection with Goertzel-style tone correlators, following ITU-T Q.24 limits.
//!
//! The detector correlates 10 ms blocks at the frame's own sample rate with
//! the eight tones and judges 20 ms windows (two blocks, one block apart).
//! A window holds a digit when exactly one row and one column tone stand out
//! of their group (judged at the window's finer resolution, so a tone 1.5 %
//! off stays clear of its neighbour), the pair carries most of the energy,
//! the twist is within limits and both tones sit within the frequency
//! tolerance (measured from the phase advance between the two blocks; the
//! tone levels are corrected for that offset). Once a window has found a
//! digit, the digit lasts as long as its two tones keep their level block by
//! block, whatever else sounds with them, so speech over a held key neither
//! splits it nor reports it twice; `min_off_ms` of silence in its tones ends
//! it. A digit is reported once its tone has ended, with its start time and
//! its duration measured to about a millisecond from how much of each block
//! the tone filled. Tones shorter than `min_on_ms` are ignored.

use serde::{Deserialize, Serialize};

use crate::stage::StreamMap;
use crate::{AudioError, AudioFrame};

const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Detection limits. The defaults follow Q.24's common values: accept tones
/// of 40 ms and more, reject 23 ms and less, accept ±1.5 % frequency error
/// and reject ±3.5 %, accept 8 dB reverse and 4 dB forward twist. The twist
/// limits sit 1 dB beyond those acceptance values, so that a tone pair
/// exactly at the acceptance edge is not lost to measurement error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DtmfConfig {
    /// Weakest tone accepted, as peak amplitude in dBFS per tone.
    pub min_tone_dbfs: f32,
    /// Largest allowed excess of the low (row) tone over the high tone, in dB.
    pub max_reverse_twist_db: f32,
    /// Largest allowed excess of the high (column) tone over the low tone, in dB.
    pub max_forward_twist_db: f32,
    /// Share of the block energy the two tones must carry (0..1).
    pub min_tone_energy_ratio: f32,
    /// How far each tone must stand above the other tones of its group, in dB.
    pub min_group_margin_db: f32,
    /// Largest frequency error accepted, as a fraction (0.025 = 2.5 %).
    pub max_frequency_error: f32,
    /// Shortest tone reported, in milliseconds.
    pub min_on_ms: f32,
    /// Shortest gap that separates two digits, in milliseconds.
    pub min_off_ms: f32,
}

impl Default for DtmfConfig {
    fn default() -> Self {
        Self {
            min_tone_dbfs: -40.0,
            max_reverse_twist_db: 9.0,
            max_forward_twist_db: 5.0,
            min_tone_energy_ratio: 0.65,
            min_group_margin_db: 6.0,
            max_frequency_error: 0.025,
            min_on_ms: 32.0,
            min_off_ms: 25.0,
        }
    }
}

/// One detected key press.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtmfEvent {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// Start of the tone on the stream's media clock, in milliseconds.
    pub t_ms: f64,
    /// Tone duration in milliseconds.
    pub duration_ms: f64,
    /// Mean share of the block energy held by the tone pair (0..1).
    pub confidence: Option<f32>,
}

/// A DTMF detector stage.
pub trait DtmfDetector {
    /// Provider name.
    fn name(&self) -> &str;
    /// Analyses one frame; returns a digit when one has just ended.
    ///
    /// # Errors
    /// When the frame is not mono or its rate has no whole 10 ms block.
    fn process(
        &mut self,
        frame: &AudioFrame,
        stream: &str,
    ) -> Result<Option<DtmfEvent>, AudioError>;
    /// Ends the stream, reporting a digit still sounding.
    fn finish(&mut self, stream: &str) -> Option<DtmfEvent>;
    /// Drops `stream`'s state.
    fn reset(&mut self, stream: &str);
    /// Drops every stream.
    fn close(&mut self);
}

/// One 10 ms block: the complex correlation with each of the eight tones
/// (tables starting at the block's first sample) and its energy.
#[derive(Debug, Clone, Copy, Default)]
struct Block {
    re: [f32; 8],
    im: [f32; 8],
    energy: f32,
    t_ms: f64,
}

impl Block {
    /// Peak amplitude of tone `k` over this block alone.
    fn amp(&self, k: usize, n: usize) -> f32 {
        2.0 * self.re[k].hypot(self.im[k]) / n as f32
    }
}

/// The inner product of two equally long slices, summed in eight
/// independent lanes so the loop compiles to packed arithmetic (one running
/// sum made every add wait for the previous one).
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, a_rest) = a.as_chunks::<8>();
    let (b8, b_rest) = b.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

/// The verdict on one 20 ms window (two consecutive blocks).
#[derive(Debug, Clone, Copy, Default)]
struct WindowInfo {
    digit: Option<(usize, usize)>,
    ratio: f32,
}

/// A digit being heard: started by a window that passed every test, kept
/// going while its two tones stay near their level block by block.
#[derive(Debug, Clone, Default)]
struct Run {
    row: usize,
    col: usize,
    /// Start time of the first block of `amps`.
    first_t: f64,
    /// Per block, the 10 ms amplitudes of the row and column tone, from the
    /// block before the first detected window on.
    amps: Vec<[f32; 2]>,
    /// Blocks beyond the `amps` cap, counted as fully covered.
    extra_blocks: u32,
    /// Running maximum of the two tone levels (the provisional steady level).
    peak: [f32; 2],
    /// Consecutive blocks in which the tones fell well below `peak`.
    absent: u32,
    /// Blocks since the run began.
    age: u32,
    /// Windows that passed every test, and the sum of their energy shares.
    windows: u32,
    ratio_sum: f32,
}

/// Blocks kept before the current one, so that a digit first recognised
/// late (its first windows masked by speech or at a limit) still gets its
/// true start.
const HISTORY: usize = 6;

/// At most this many blocks (60 s) of a run keep their levels.
const MAX_RUN_BLOCKS: usize = 6_000;

struct DtmfStream {
    rate: u32,
    block: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// `cos`/`sin` of each tone's phase advance over one block.
    rot: [(f32, f32); 8],
    buf: Vec<f32>,
    buf_t: f64,
    clock_ms: f64,
    /// The last `HISTORY` blocks before the current one, oldest first.
    history: [Block; HISTORY],
    prev: Block,
    blocks_seen: u64,
    run: Option<Run>,
    /// The level buffer of the last finished run, reused by the next one so
    /// a detected digit costs no allocation.
    spare_amps: Vec<[f32; 2]>,
}

/// The Goertzel DTMF detector.
pub struct GoertzelDtmf {
    config: DtmfConfig,
    streams: StreamMap<DtmfStream>,
}

impl std::fmt::Debug for GoertzelDtmf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoertzelDtmf")
            .field("config", &self.config)
            .finish()
    }
}

impl Default for GoertzelDtmf {
    fn default() -> Self {
        Self::new(DtmfConfig::default())
    }
}

fn tone_freq(k: usize) -> f64 {
    if k < 4 { ROWS[k] } else { COLS[k - 4] }
}

/// Gain of an `n`-sample correlation at a tone `df` Hz away from its own
/// frequency (the Dirichlet kernel, 1 at `df = 0`).
fn offset_gain(df: f64, n: usize, rate: u32) -> f64 {
    let x = std::f64::consts::PI * df / f64::from(rate);
    if x.abs() < 1e-9 {
        return 1.0;
    }
    ((x * n as f64).sin() / (n as f64 * x.sin())).abs()
}

impl DtmfStream {
    fn new(rate: u32) -> Result<Self, AudioError> {
        let block = rate as usize / 100;
        if block < 40 || !rate.is_multiple_of(100) || !block.is_multiple_of(2) {
            return Err(AudioError::FormatMismatch {
                stage: "dtmf",
                expected: "a rate with an even number of samples per 10 ms (>= 8 kHz)".into(),
                got: format!("{rate} Hz"),
            });
        }
        let mut cos = Vec::with_capacity(8 * block);
        let mut sin = Vec::with_capacity(8 * block);
        let mut rot = [(1f32, 0f32); 8];
        for (k, f) in ROWS.iter().chain(COLS.iter()).enumerate() {
            let w = 2.0 * std::f64::consts::PI * f / f64::from(rate);
            for n in 0..block {
                cos.push((w * n as f64).cos() as f32);
                sin.push((w * n as f64).sin() as f32);
            }
            rot[k] = (
                (w * block as f64).cos() as f32,
                (w * block as f64).sin() as f32,
            );
        }
        Ok(Self {
            rate,
            block,
            cos,
            sin,
            rot,
            buf: Vec::with_capacity(block),
            buf_t: 0.0,
            clock_ms: 0.0,
            history: [Block::default(); HISTORY],
            prev: Block::default(),
            blocks_seen: 0,
            run: None,
            spare_amps: Vec::with_capacity(64),
        })
    }

    /// Correlates the buffered 10 ms block with the eight tones.
    fn correlate(&self) -> Block {
        let n = self.block;
        let x = &self.buf[..n];
        let mut b = Block {
            energy: lane_dot(x, x),
            t_ms: self.buf_t,
            ..Block::default()
        };
        for k in 0..8 {
            b.re[k] = lane_dot(x, &self.cos[k * n..(k + 1) * n]);
            b.im[k] = -lane_dot(x, &self.sin[k * n..(k + 1) * n]);
        }
        b
    }

    /// Judges the 20 ms window made of the previous and the current block.
    ///
    /// Selectivity (each tone standing above the rest of its group) is
    /// judged on the whole window, whose finer resolution keeps a tone 1.5 %
    /// off clear of its neighbour. Level, twist and energy share use the
    /// 10 ms amplitudes corrected for the frequency offset measured from the
    /// phase advance between the two blocks, so a tone off its nominal
    /// frequency is neither weakened nor twisted by the analysis.
    fn analyse(&self, cur: &Block, cfg: &DtmfConfig) -> WindowInfo {
        let n = self.block;
        let a = &self.prev;
        let mut info = WindowInfo::default();
        if self.blocks_seen < 2 {
            return info;
        }
        let mut win = [0f32; 8];
        let mut level = [0f32; 8];
        let mut dev = [0f32; 8];
        for k in 0..8 {
            // The current block's correlation rotated onto the window's phase reference.
            let (rc, rs) = self.rot[k];
            let (br, bi) = (
                cur.re[k] * rc + cur.im[k] * rs,
                cur.im[k] * rc - cur.re[k] * rs,
            );
            let (wr, wi) = (a.re[k] + br, a.im[k] + bi);
            win[k] = 2.0 * wr.hypot(wi) / (2 * n) as f32;
            // Phase advance beyond the nominal one: the frequency offset.
            let pr = br * a.re[k] + bi * a.im[k];
            let pi = bi * a.re[k] - br * a.im[k];
            let df = f64::from(pi.atan2(pr)) * f64::from(self.rate)
                / (2.0 * std::f64::consts::PI * n as f64);
            let f0 = tone_freq(k);
            dev[k] = (df / f0).abs() as f32;
            let limit = f64::from(cfg.max_frequency_error) * f0;
            let g = offset_gain(df.clamp(-limit, limit), n, self.rate) as f32;
            level[k] = 0.5 * (a.amp(k, n) + cur.amp(k, n)) / g.max(0.1);
        }
        let best = |range: std::ops::Range<usize>| {
            let mut b = range.start;
            for k in range.clone() {
                if win[k] > win[b] {
                    b = k;
                }
            }
            let second = range
                .filter(|&k| k != b)
                .map(|k| win[k])
                .fold(0f32, f32::max);
            (b, second)
        };
        let (r, r2) = best(0..4);
        let (c, c2) = best(4..8);
        let (ar, ac) = (level[r], level[c]);
        let energy = a.energy + cur.energy;
        let min_amp = 10f32.powf(cfg.min_tone_dbfs / 20.0);
        if ar < min_amp || ac < min_amp || energy <= 0.0 {
            return info;
        }
        let twist = 20.0 * (ac / ar).log10();
        if twist > cfg.max_forward_twist_db || -twist > cfg.max_reverse_twist_db {
            return info;
        }
        let margin = 10f32.powf(cfg.min_group_margin_db / 20.0);
        if win[r] < r2 * margin || win[c] < c2 * margin {
            return info;
        }
        let tone_power = (ar * ar + ac * ac) / 2.0;
        let ratio = tone_power / (energy / (2 * n) as f32);
        if ratio < cfg.min_tone_energy_ratio {
            return info;
        }
        if dev[r] > cfg.max_frequency_error || dev[c] > cfg.max_frequency_error {
            return info;
        }
        info.digit = Some((r, c - 4));
        info.ratio = ratio.min(1.0);
        info
    }
}

impl GoertzelDtmf {
    /// A detector with the given limits.
    pub fn new(config: DtmfConfig) -> Self {
        Self {
            config,
            streams: StreamMap::default(),
        }
    }

    /// Turns a finished run into an event.
    ///
    /// The steady level of each tone is the mean of the blocks within 80 %
    /// of its loudest block (blocks the tone filled); every block then
    /// counts the share of it the tone covered, so the duration and start
    /// come out to about a millisecond.
    fn close_run(cfg: &DtmfConfig, run: &Run) -> Option<DtmfEvent> {
        let amps = &run.amps;
        let mut steady = [0f32; 2];
        for (j, s) in steady.iter_mut().enumerate() {
            let max = amps.iter().map(|a| a[j]).fold(0f32, f32::max);
            let (sum, cnt) = amps
                .iter()
                .map(|a| a[j])
                .filter(|&v| v >= 0.8 * max)
                .fold((0f32, 0u32), |(s, c), v| (s + v, c + 1));
            *s = sum / cnt.max(1) as f32;
        }
        let cov = |a: &[f32; 2]| {
            let c = 0.5 * (a[0] / steady[0].max(1e-9) + a[1] / steady[1].max(1e-9));
            let c = c.clamp(0.0, 1.0);
            if c < 0.1 { 0.0 } else { c }
        };
        let first = amps.iter().position(|a| cov(a) > 0.0)?;
        let last = amps.iter().rposition(|a| cov(a) > 0.0)?;
        let covered: f32 =
            amps[first..=last].iter().map(cov).sum::<f32>() + run.extra_blocks as f32;
        let duration = covered * 10.0;
        if duration < cfg.min_on_ms || run.windows < 2 {
            return None;
        }
        // The tone fills the end of its first block.
        let start = run.first_t + first as f64 * 10.0 + f64::from(1.0 - cov(&amps[first])) * 10.0;
        Some(DtmfEvent {
            digit: KEYS[run.row][run.col],
            t_ms: start,
            duration_ms: f64::from(duration),
            confidence: Some(run.ratio_sum / run.windows.max(1) as f32),
        })
    }
}

impl DtmfDetector for GoertzelDtmf {
    fn name(&self) -> &str {
        "goertzel"
    }

    fn process(
        &mut self,
        frame: &AudioFrame,
        stream: &str,
    ) -> Result<Option<DtmfEvent>, AudioError> {
        if frame.channels != 1 {
            return Err(AudioError::FormatMismatch {
                stage: "dtmf",
                expected: "mono".into(),
                got: format!("{} channels", frame.channels),
            });
        }
        let rate = frame.sample_rate;
        let st = self
            .streams
            .get_or_try_insert(stream, || DtmfStream::new(rate))?;
        if st.rate != rate {
            *st = DtmfStream::new(rate)?;
        }
        let cfg = &self.config;
        let t0 = frame.timestamp_ms.unwrap_or(st.clock_ms);
        st.clock_ms = t0 + frame.duration_ms();
        let mut out = None;
        let ms_per_sample = 1000.0 / f64::from(rate);
        for (i, &s) in frame.samples.iter().enumerate() {
            if st.buf.is_empty() {
                st.buf_t = t0 + i as f64 * ms_per_sample;
            }
            st.buf.push(f32::from(s) / 32768.0);
            if st.buf.len() < st.block {
                continue;
            }
            let cur = st.correlate();
            st.buf.clear();
            let info = st.analyse(&cur, cfg);
            let n = st.block;
            // Blocks in which the run's tones fall under this share of their
            // level count as silence; this many in a row end the digit.
            let max_absent = (cfg.min_off_ms / 10.0).floor().max(1.0) as u32;
            let mut finished = None;
            if let Some(run) = st.run.as_mut() {
                let a = [cur.amp(run.row, n), cur.amp(4 + run.col, n)];
                run.peak = [run.peak[0].max(a[0]), run.peak[1].max(a[1])];
                if run.amps.len() < MAX_RUN_BLOCKS {
                    run.amps.push(a);
                } else {
                    run.extra_blocks += 1;
                }
                let share = 0.5 * (a[0] / run.peak[0].max(1e-9) + a[1] / run.peak[1].max(1e-9));
                if share < 0.4 {
                    run.absent += 1;
                } else {
                    run.absent = 0;
                }
                if info.digit == Some((run.row, run.col)) {
                    run.windows += 1;
                    run.ratio_sum += info.ratio;
                }
                run.age += 1;
                // A lone window not confirmed by the next ones was not a
                // digit (a moment of speech or noise): drop it, so it cannot
                // hold off a real digit that starts meanwhile.
                let unconfirmed = run.windows < 2 && (run.age >= 3 || info.digit.is_some());
                if run.absent >= max_absent
                    || (unconfirmed && info.digit != Some((run.row, run.col)))
                {
                    finished = st.run.take();
                }
            }
            if let Some(run) = finished {
                if let Some(ev) = Self::close_run(cfg, &run) {
                    out = Some(ev);
                }
                st.spare_amps = run.amps;
            }
            if st.run.is_none()
                && let Some((r, c)) = info.digit
            {
                // The run's levels start at the oldest recent block that
                // still holds some of the tone (at least one block before
                // the window, which may hold the tone's beginning).
                let mut amps = std::mem::take(&mut st.spare_amps);
                amps.clear();
                let here = [cur.amp(r, n), cur.amp(4 + c, n)];
                let filled =
                    |b: &Block| b.amp(r, n) >= 0.25 * here[0] && b.amp(4 + c, n) >= 0.25 * here[1];
                let mut from = HISTORY;
                while from > 0 && filled(&st.history[from - 1]) {
                    from -= 1;
                }
                let from = from.min(HISTORY - 1);
                let first_t = st.history[from].t_ms;
                for b in st.history[from..].iter().chain([&st.prev, &cur]) {
                    amps.push([b.amp(r, n), b.amp(4 + c, n)]);
                }
                let peak = [
                    amps.iter().map(|a| a[0]).fold(0f32, f32::max),
                    amps.iter().map(|a| a[1]).fold(0f32, f32::max),
                ];
                st.run = Some(Run {
                    row: r,
                    col: c,
                    first_t,
                    amps,
                    extra_blocks: 0,
                    peak,
                    absent: 0,
                    age: 0,
                    windows: 1,
                    ratio_sum: info.ratio,
                });
            }
            st.history.rotate_left(1);
            st.history[HISTORY - 1] = std::mem::replace(&mut st.prev, cur);
            st.blocks_seen += 1;
        }
        Ok(out)
    }

    fn finish(&mut self, stream: &str) -> Option<DtmfEvent> {
        let cfg = &self.config;
        let st = self.streams.get_mut(stream)?;
        let run = st.run.take()?;
        let ev = Self::close_run(cfg, &run);
        st.spare_amps = run.amps;
        ev
    }

    fn reset(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    fn close(&mut self) {
        self.streams.clear();
    }
}
