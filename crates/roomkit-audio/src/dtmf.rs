//! DTMF (touch-tone) detection with Goertzel-style tone correlators, following ITU-T Q.24 limits.
//!
//! The detector looks at 10 ms blocks at the frame's own sample rate. A block
//! holds a digit when exactly one row and one column tone stand out, the pair
//! carries most of the block's energy, the twist between them is within
//! limits and both tones sit within the frequency tolerance (measured from
//! the phase advance between the two halves of the block). A digit is
//! reported once its tone has ended, with its start time and its duration
//! measured to about a millisecond from how much of the edge blocks the tone
//! filled. Tones shorter than `min_on_ms` are ignored; gaps shorter than
//! `min_off_ms` do not split a digit.

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
/// and reject ±3.5 %, 8 dB reverse and 4 dB forward twist.
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
            max_reverse_twist_db: 8.0,
            max_forward_twist_db: 4.0,
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

#[derive(Debug, Clone, Copy, Default)]
struct BlockInfo {
    amps: [f32; 8],
    digit: Option<(usize, usize)>,
    ratio: f32,
}

#[derive(Debug, Clone, Default)]
struct Run {
    row: usize,
    col: usize,
    first_t: f64,
    lead_cov: f32,
    first_amps: [f32; 2],
    steady: [f32; 2],
    present_amps: Vec<[f32; 2]>,
    absent: u32,
    trail_cov: f32,
    ratio_sum: f32,
    present: u32,
}

struct DtmfStream {
    rate: u32,
    block: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    buf: Vec<f32>,
    buf_t: f64,
    clock_ms: f64,
    prev: BlockInfo,
    run: Option<Run>,
    /// The block levels buffer of the last finished run, reused by the next
    /// one so a detected digit costs no allocation.
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
        for f in ROWS.iter().chain(COLS.iter()) {
            let w = 2.0 * std::f64::consts::PI * f / f64::from(rate);
            for n in 0..block {
                cos.push((w * n as f64).cos() as f32);
                sin.push((w * n as f64).sin() as f32);
            }
        }
        Ok(Self {
            rate,
            block,
            cos,
            sin,
            buf: Vec::with_capacity(block),
            buf_t: 0.0,
            clock_ms: 0.0,
            prev: BlockInfo::default(),
            run: None,
            spare_amps: Vec::with_capacity(64),
        })
    }

    fn analyse(&self, cfg: &DtmfConfig) -> BlockInfo {
        let n = self.block;
        let half = n / 2;
        let x = &self.buf;
        let energy: f32 = x.iter().map(|v| v * v).sum();
        let mut amps = [0f32; 8];
        let mut dev = [0f32; 8];
        for k in 0..8 {
            let c = &self.cos[k * n..(k + 1) * n];
            let s = &self.sin[k * n..(k + 1) * n];
            let (mut r1, mut i1, mut r2, mut i2) = (0f32, 0f32, 0f32, 0f32);
            for i in 0..half {
                r1 += x[i] * c[i];
                i1 -= x[i] * s[i];
            }
            for i in half..n {
                r2 += x[i] * c[i];
                i2 -= x[i] * s[i];
            }
            let (re, im) = (r1 + r2, i1 + i2);
            amps[k] = 2.0 * (re * re + im * im).sqrt() / n as f32;
            // Phase advance between the halves gives the frequency offset.
            let pr = r2 * r1 + i2 * i1;
            let pi = i2 * r1 - r2 * i1;
            let dphi = pi.atan2(pr);
            let df =
                f64::from(dphi) * f64::from(self.rate) / (2.0 * std::f64::consts::PI * half as f64);
            let f0 = if k < 4 { ROWS[k] } else { COLS[k - 4] };
            dev[k] = (df / f0).abs() as f32;
        }
        let mut info = BlockInfo {
            amps,
            digit: None,
            ratio: 0.0,
        };
        let best = |range: std::ops::Range<usize>| {
            let mut b = range.start;
            for k in range.clone() {
                if amps[k] > amps[b] {
                    b = k;
                }
            }
            let second = range
                .filter(|&k| k != b)
                .map(|k| amps[k])
                .fold(0f32, f32::max);
            (b, second)
        };
        let (r, r2) = best(0..4);
        let (c, c2) = best(4..8);
        let (ar, ac) = (amps[r], amps[c]);
        let min_amp = 10f32.powf(cfg.min_tone_dbfs / 20.0);
        if ar < min_amp || ac < min_amp || energy <= 0.0 {
            return info;
        }
        let twist = 20.0 * (ac / ar).log10();
        if twist > cfg.max_forward_twist_db || -twist > cfg.max_reverse_twist_db {
            return info;
        }
        let margin = 10f32.powf(cfg.min_group_margin_db / 20.0);
        if ar < r2 * margin || ac < c2 * margin {
            return info;
        }
        let tone_power = (ar * ar + ac * ac) / 2.0;
        let ratio = tone_power / (energy / n as f32);
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

fn coverage(amps: &[f32; 8], row: usize, col: usize, steady: [f32; 2]) -> f32 {
    let a = amps[row] / steady[0].max(1e-9);
    let b = amps[4 + col] / steady[1].max(1e-9);
    (0.5 * (a + b)).clamp(0.0, 1.0)
}

impl GoertzelDtmf {
    /// A detector with the given limits.
    pub fn new(config: DtmfConfig) -> Self {
        Self {
            config,
            streams: StreamMap::default(),
        }
    }

    /// Turns a finished run into an event (the run is consumed in place,
    /// so no copy of its block levels is made).
    fn close_run(cfg: &DtmfConfig, run: &mut Run) -> Option<DtmfEvent> {
        // The steady level is the mean of the interior blocks, which the tone
        // fills completely; the edges are measured against it.
        if run.present_amps.len() >= 3 {
            let inner = &run.present_amps[1..run.present_amps.len() - 1];
            let n = inner.len() as f32;
            let s0 = inner.iter().map(|a| a[0]).sum::<f32>() / n;
            let s1 = inner.iter().map(|a| a[1]).sum::<f32>() / n;
            // Edge coverages were computed against a provisional level.
            run.lead_cov *=
                0.5 * (run.first_amps[0] / s0.max(1e-9) + run.first_amps[1] / s1.max(1e-9));
            run.trail_cov *= 0.5 * (run.steady[0] / s0.max(1e-9) + run.steady[1] / s1.max(1e-9));
            run.lead_cov = run.lead_cov.clamp(0.0, 1.0);
            run.trail_cov = run.trail_cov.clamp(0.0, 1.0);
            run.steady = [s0, s1];
        }
        let run = &*run;
        // Re-evaluate coverage of every present block against the steady level.
        let mut covered = 0f32;
        for a in &run.present_amps {
            let c = (0.5 * (a[0] / run.steady[0].max(1e-9) + a[1] / run.steady[1].max(1e-9)))
                .clamp(0.0, 1.0);
            covered += c;
        }
        let first_cov = (0.5
            * (run.first_amps[0] / run.steady[0].max(1e-9)
                + run.first_amps[1] / run.steady[1].max(1e-9)))
        .clamp(0.0, 1.0);
        let lead = run.lead_cov;
        let duration = (covered + lead + run.trail_cov) * 10.0;
        if duration < cfg.min_on_ms || run.present < 2 {
            return None;
        }
        let start = run.first_t + 10.0 - f64::from(lead + first_cov) * 10.0;
        Some(DtmfEvent {
            digit: KEYS[run.row][run.col],
            t_ms: start,
            duration_ms: f64::from(duration),
            confidence: Some(run.ratio_sum / run.present.max(1) as f32),
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
            let info = st.analyse(cfg);
            let block_t = st.buf_t;
            st.buf.clear();
            let max_absent = (cfg.min_off_ms / 10.0).ceil().max(1.0) as u32 + 1;
            let mut finished = None;
            match (&mut st.run, info.digit) {
                (Some(run), Some((r, c))) if run.row == r && run.col == c => {
                    run.absent = 0;
                    run.trail_cov = 0.0;
                    let a = [info.amps[r], info.amps[4 + c]];
                    run.steady = [run.steady[0].max(a[0]), run.steady[1].max(a[1])];
                    run.present_amps.push(a);
                    run.present += 1;
                    run.ratio_sum += info.ratio;
                }
                (Some(run), d) => {
                    if d.is_none() {
                        run.absent += 1;
                        if run.absent == 1 {
                            run.trail_cov = coverage(&info.amps, run.row, run.col, run.steady);
                        }
                    }
                    if d.is_some() || run.absent >= max_absent {
                        finished = st.run.take();
                    }
                }
                (None, _) => {}
            }
            if let Some(mut run) = finished {
                if let Some(ev) = Self::close_run(cfg, &mut run) {
                    out = Some(ev);
                }
                st.spare_amps = run.present_amps;
            }
            if st.run.is_none()
                && let Some((r, c)) = info.digit
            {
                let a = [info.amps[r], info.amps[4 + c]];
                let mut present_amps = std::mem::take(&mut st.spare_amps);
                present_amps.clear();
                present_amps.push(a);
                st.run = Some(Run {
                    row: r,
                    col: c,
                    first_t: block_t,
                    lead_cov: 0.0,
                    first_amps: a,
                    steady: a,
                    present_amps,
                    absent: 0,
                    trail_cov: 0.0,
                    ratio_sum: info.ratio,
                    present: 1,
                });
                if let Some(run) = st.run.as_mut() {
                    // The previous block's share of this tone, judged
                    // against this block's level for now.
                    run.lead_cov = coverage(&st.prev.amps, r, c, a);
                }
            }
            st.prev = info;
        }
        Ok(out)
    }

    fn finish(&mut self, stream: &str) -> Option<DtmfEvent> {
        let cfg = &self.config;
        let st = self.streams.get_mut(stream)?;
        let mut run = st.run.take()?;
        let ev = Self::close_run(cfg, &mut run);
        st.spare_amps = run.present_amps;
        ev
    }

    fn reset(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    fn close(&mut self) {
        self.streams.clear();
    }
}
