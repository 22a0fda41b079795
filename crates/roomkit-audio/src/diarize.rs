//! Speaker diarization: the provider interface (§12.3.9) and a small built-in diarizer.
//!
//! [`SpectralDiarizer`] works on speech segments. Every 10 ms it computes
//! mel-frequency cepstral coefficients (MFCC) over a ~32 ms window, and the
//! pitch from the window's autocorrelation; hops well above the tracked
//! noise floor count as voiced and add to the statistics (per-feature mean
//! and variance) of the current segment. A segment ends
//! when the VAD reports the end of speech, after `hangover_ms` without voiced
//! hops, or once it holds `max_segment_ms` of voiced audio. A finished segment
//! is compared with each known speaker's statistics by the Bhattacharyya
//! distance between diagonal Gaussians (averaged over the features, the
//! pitch counting as `PITCH_WEIGHT` of them); the
//! nearest speaker within `threshold` takes it, otherwise it founds a new
//! speaker, up to `max_speakers` (past the cap it goes to the nearest one).
//! A segment in which under 30 % of the hops have a pitch is taken for noise
//! and ignored. A result is returned when the speaker differs from the
//! previous segment's.
//!
//! All buffers (analysis ring, FFT scratch, mel filters, speaker table) are
//! made when a stream is first seen; steady-state processing allocates
//! nothing except the label copied into a (rare) speaker-change result.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::stage::{StreamMap, i16_to_f32};
use crate::{AudioError, AudioFrame};

/// Speaker identification result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiarizationResult {
    /// Provider-assigned label such as `speaker_0`.
    pub speaker_id: String,
    /// Confidence in [0, 1].
    pub confidence: Option<f32>,
    /// First time this speaker was seen.
    pub is_new_speaker: bool,
    /// Start of the speech attributed to this speaker, on the stream's media clock, in ms.
    #[serde(default)]
    pub t_ms: Option<f64>,
    /// Length of that speech segment, in ms.
    #[serde(default)]
    pub duration_ms: Option<f64>,
}

/// Speaker identification stage.
pub trait DiarizationProvider {
    /// Provider name.
    fn name(&self) -> &str;
    /// Looks at one frame; returns a result when the speaker is known.
    ///
    /// # Errors
    /// When the frame format is unsupported.
    fn process(
        &mut self,
        frame: &AudioFrame,
        stream: &str,
    ) -> Result<Option<DiarizationResult>, AudioError>;
    /// Ends the stream: decides a segment still open, if any.
    fn finish(&mut self, _stream: &str) -> Option<DiarizationResult> {
        None
    }
    /// Drops `stream`'s state.
    fn reset(&mut self, stream: &str);
    /// Drops every stream.
    fn close(&mut self);
}

/// Tuning of [`SpectralDiarizer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiarizerConfig {
    /// Distance (mean per-coefficient Bhattacharyya distance) above which a
    /// segment belongs to a new speaker. Lower splits more eagerly.
    pub threshold: f32,
    /// At most this many speakers per stream; later segments go to the nearest.
    pub max_speakers: usize,
    /// Segments with less voiced audio than this are not attributed, in ms.
    pub min_segment_ms: u32,
    /// A segment is decided once it holds this much voiced audio, in ms.
    pub max_segment_ms: u32,
    /// Silence that closes a segment when no VAD marks its end, in ms.
    pub hangover_ms: u32,
    /// Hops this far above the noise floor count as voiced, in dB.
    pub voiced_margin_db: f32,
}

impl Default for DiarizerConfig {
    fn default() -> Self {
        Self {
            threshold: 0.2,
            max_speakers: 8,
            min_segment_ms: 400,
            max_segment_ms: 4_000,
            hangover_ms: 300,
            voiced_margin_db: 12.0,
        }
    }
}

/// Mel bands of the analysis.
const BANDS: usize = 26;
/// Cepstral coefficients used (c1..=c16; c0, the level, is left out).
const CEPS: usize = 16;
/// Analysis hop, ms.
const HOP_MS: u32 = 10;
/// A speaker's statistics weigh at most this many hops (about a minute), so
/// they can follow a drifting voice.
const MAX_SPEAKER_HOPS: f64 = 6_000.0;
/// A segment too short to attribute joins the next one if that starts within this, ms.
const JOIN_MS: f64 = 1_000.0;
/// Segments where fewer hops than this share have a pitch are not speech.
const MIN_PERIODIC_SHARE: f64 = 0.3;
/// Variance floor of a feature.
const VAR_FLOOR: f64 = 1e-3;
/// Features: the cepstrum, then the pitch in semitones.
const FEATS: usize = CEPS + 1;
/// Weight of the pitch against one cepstral coefficient in the distance.
const PITCH_WEIGHT: f64 = 4.0;
/// Normalised autocorrelation above which a hop counts as periodic.
const PERIODIC: f32 = 0.5;
/// Pitch search range, Hz.
const F0_MIN: f32 = 60.0;
const F0_MAX: f32 = 420.0;

/// First- and second-order sums of the features of some hops (the pitch
/// only over periodic hops, so it has its own count).
#[derive(Debug, Clone, Copy)]
struct Stats {
    n: [f64; FEATS],
    sum: [f64; FEATS],
    sumsq: [f64; FEATS],
}

impl Stats {
    const EMPTY: Self = Self {
        n: [0.0; FEATS],
        sum: [0.0; FEATS],
        sumsq: [0.0; FEATS],
    };

    /// Voiced hops counted.
    fn hops(&self) -> f64 {
        self.n[0]
    }

    fn add(&mut self, f: &[f32; FEATS]) {
        for (k, &x) in f.iter().enumerate() {
            if x.is_nan() {
                continue;
            }
            let v = f64::from(x);
            self.n[k] += 1.0;
            self.sum[k] += v;
            self.sumsq[k] += v * v;
        }
    }

    fn merge(&mut self, other: &Self) {
        for k in 0..FEATS {
            self.n[k] += other.n[k];
            self.sum[k] += other.sum[k];
            self.sumsq[k] += other.sumsq[k];
            if self.n[k] > MAX_SPEAKER_HOPS {
                let s = MAX_SPEAKER_HOPS / self.n[k];
                self.n[k] = MAX_SPEAKER_HOPS;
                self.sum[k] *= s;
                self.sumsq[k] *= s;
            }
        }
    }

    fn moments(&self, k: usize) -> (f64, f64) {
        let n = self.n[k].max(1.0);
        let m = self.sum[k] / n;
        let v = (self.sumsq[k] / n - m * m).max(VAR_FLOOR);
        (m, v)
    }

    /// Weighted mean of the per-feature Bhattacharyya distances between the
    /// two diagonal Gaussians; the pitch counts only when both sides have
    /// enough periodic hops.
    fn distance(&self, other: &Self) -> f64 {
        let mut d = 0.0;
        let mut weight = 0.0;
        for k in 0..FEATS {
            let w = if k == CEPS {
                if self.n[k] < 10.0 || other.n[k] < 10.0 {
                    continue;
                }
                PITCH_WEIGHT
            } else {
                1.0
            };
            let (m1, v1) = self.moments(k);
            let (m2, v2) = other.moments(k);
            let v = 0.5 * (v1 + v2);
            d += w * ((m1 - m2) * (m1 - m2) / (8.0 * v) + 0.5 * (v / (v1 * v2).sqrt()).ln());
            weight += w;
        }
        d / weight
    }
}

struct Speaker {
    label: String,
    stats: Stats,
}

/// Spectral front end of one stream: the sliding window and the MFCC transform.
struct Analyzer {
    rate: u32,
    fft: Arc<dyn RealToComplex<f32>>,
    ifft: Arc<dyn ComplexToReal<f32>>,
    window: Vec<f32>,
    /// Autocorrelation of the window itself, normalised (unbiases the signal's).
    window_acf: Vec<f32>,
    lags: (usize, usize),
    power: Vec<Complex<f32>>,
    acf: Vec<f32>,
    iscratch: Vec<Complex<f32>>,
    ring: Vec<f32>,
    pos: usize,
    since_hop: usize,
    hop: usize,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Per band: first FFT bin and the triangle's weights from there.
    filters: Vec<(usize, Vec<f32>)>,
    /// `CEPS x BANDS` DCT-II rows (c1..).
    dct: Vec<f32>,
    mel: [f32; BANDS],
}

impl Analyzer {
    fn new(rate: u32) -> Result<Self, AudioError> {
        if !(8_000..=192_000).contains(&rate) {
            return Err(AudioError::FormatMismatch {
                stage: "diarize",
                expected: "8 to 192 kHz".into(),
                got: format!("{rate} Hz"),
            });
        }
        let len = (rate as usize * 25 / 1000).next_power_of_two();
        // Zero-padded to twice the window so the autocorrelation does not wrap.
        let n = 2 * len;
        let hop = rate as usize * HOP_MS as usize / 1000;
        let mut planner = RealFftPlanner::<f32>::new();
        let fft = planner.plan_fft_forward(n);
        let ifft = planner.plan_fft_inverse(n);
        let window: Vec<f32> = (0..len)
            .map(|i| {
                let x = std::f32::consts::TAU * i as f32 / len as f32;
                0.5 - 0.5 * x.cos()
            })
            .collect();
        let min_lag = (rate as f32 / F0_MAX).floor() as usize;
        let max_lag = ((rate as f32 / F0_MIN).ceil() as usize).min(len - 1);
        let w0: f32 = window.iter().map(|w| w * w).sum();
        let window_acf = (0..=max_lag)
            .map(|t| {
                let r: f32 = window.iter().zip(&window[t..]).map(|(a, b)| a * b).sum();
                (r / w0).max(1e-3)
            })
            .collect();
        let bins = n / 2 + 1;
        let mel = |f: f32| 2595.0 * (1.0 + f / 700.0).log10();
        let hz = |m: f32| 700.0 * (10f32.powf(m / 2595.0) - 1.0);
        let lo = mel(60.0);
        let hi = mel((rate as f32 / 2.0 - 200.0).min(7_600.0));
        let bin_hz = rate as f32 / n as f32;
        let edges: Vec<f32> = (0..BANDS + 2)
            .map(|i| hz(lo + (hi - lo) * i as f32 / (BANDS + 1) as f32) / bin_hz)
            .collect();
        let filters = (0..BANDS)
            .map(|b| {
                let (l, c, r) = (edges[b], edges[b + 1], edges[b + 2]);
                let first = (l.floor().max(0.0) as usize).min(bins - 1);
                let last = (r.ceil() as usize).min(bins - 1);
                let weights = (first..=last)
                    .map(|k| {
                        let k = k as f32;
                        if k <= c {
                            ((k - l) / (c - l).max(1e-6)).max(0.0)
                        } else {
                            ((r - k) / (r - c).max(1e-6)).max(0.0)
                        }
                    })
                    .collect();
                (first, weights)
            })
            .collect();
        let dct = (1..=CEPS)
            .flat_map(|k| {
                (0..BANDS).map(move |b| {
                    (std::f32::consts::PI * k as f32 * (b as f32 + 0.5) / BANDS as f32).cos()
                })
            })
            .collect();
        Ok(Self {
            rate,
            input: vec![0.0; n],
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            power: ifft.make_input_vec(),
            acf: ifft.make_output_vec(),
            iscratch: ifft.make_scratch_vec(),
            fft,
            ifft,
            window,
            window_acf,
            lags: (min_lag.max(2), max_lag),
            ring: vec![0.0; len],
            pos: 0,
            since_hop: 0,
            hop,
            filters,
            dct,
            mel: [0.0; BANDS],
        })
    }

    /// Pushes one sample; when a hop completes, returns the level of the
    /// window (dBFS) and leaves it, windowed, ready for [`Self::features`].
    fn push(&mut self, x: f32) -> Option<f32> {
        let len = self.ring.len();
        self.ring[self.pos] = x;
        // The window length is a power of two.
        self.pos = (self.pos + 1) & (len - 1);
        self.since_hop += 1;
        if self.since_hop < self.hop {
            return None;
        }
        self.since_hop = 0;
        let (newer, older) = self.ring.split_at(self.pos);
        let (head, tail) = self.input[..len].split_at_mut(len - self.pos);
        head.copy_from_slice(older);
        tail.copy_from_slice(newer);
        let mut energy = 0.0f32;
        for (v, w) in self.input[..len].iter_mut().zip(&self.window) {
            energy += *v * *v;
            *v *= w;
        }
        self.input[len..].fill(0.0);
        Some(10.0 * (energy / len as f32).max(1e-12).log10() + 3.0)
    }

    /// Features of the window left by the last completed hop (the pitch is
    /// NaN when the hop is not periodic); false if the FFT failed.
    fn features(&mut self, feats: &mut [f32; FEATS]) -> bool {
        if self
            .fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .is_err()
        {
            return false;
        }
        for (b, (first, weights)) in self.filters.iter().enumerate() {
            let mut e = 0.0f32;
            for (w, c) in weights.iter().zip(&self.spectrum[*first..]) {
                e += w * c.norm_sqr();
            }
            self.mel[b] = (e + 1e-9).ln();
        }
        for (k, c) in feats[..CEPS].iter_mut().enumerate() {
            let row = &self.dct[k * BANDS..(k + 1) * BANDS];
            *c = row.iter().zip(&self.mel).map(|(a, b)| a * b).sum::<f32>() / BANDS as f32;
        }
        feats[CEPS] = self.pitch_semitones();
        true
    }

    /// Pitch of the current window in semitones above 100 Hz, from the
    /// (window-corrected) autocorrelation; NaN when it is not periodic.
    fn pitch_semitones(&mut self) -> f32 {
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = Complex::new(c.norm_sqr(), 0.0);
        }
        if self
            .ifft
            .process_with_scratch(&mut self.power, &mut self.acf, &mut self.iscratch)
            .is_err()
        {
            return f32::NAN;
        }
        let r0 = self.acf[0];
        if r0 <= 1e-9 {
            return f32::NAN;
        }
        let (lo, hi) = self.lags;
        let rho = |t: usize| self.acf[t] / r0 / self.window_acf[t];
        let mut best = (0usize, 0f32);
        for t in lo..=hi {
            let v = rho(t);
            if v > best.1 {
                best = (t, v);
            }
        }
        if best.1 < PERIODIC {
            return f32::NAN;
        }
        // The shortest lag whose peak comes close to the best is the period
        // (longer ones are its multiples).
        let mut lag = best.0;
        for t in lo + 1..best.0 {
            let v = rho(t);
            if v >= 0.85 * best.1 && v >= rho(t - 1) && v >= rho(t + 1) {
                lag = t;
                break;
            }
        }
        let f0 = self.rate as f32 / lag as f32;
        12.0 * (f0 / 100.0).log2()
    }
}

/// Per-stream diarization state.
struct StreamState {
    analyzer: Analyzer,
    speakers: Vec<Speaker>,
    current: Option<usize>,
    segment: Stats,
    in_segment: bool,
    /// A closed segment too short to attribute, waiting to be continued.
    held: bool,
    seg_start_ms: f64,
    seg_end_ms: f64,
    silence_ms: f64,
    floor_db: Option<f32>,
    clock_ms: f64,
    feats: [f32; FEATS],
}

impl StreamState {
    fn new(rate: u32, max_speakers: usize) -> Result<Self, AudioError> {
        Ok(Self {
            analyzer: Analyzer::new(rate)?,
            speakers: Vec::with_capacity(max_speakers),
            current: None,
            segment: Stats::EMPTY,
            in_segment: false,
            held: false,
            seg_start_ms: 0.0,
            seg_end_ms: 0.0,
            silence_ms: 0.0,
            floor_db: None,
            clock_ms: 0.0,
            feats: [0.0; FEATS],
        })
    }

    /// Attributes the open segment and closes it. A segment with too little
    /// voiced audio is kept instead, to be continued by the next one if that
    /// starts within `JOIN_MS` (a word followed by a pause, say).
    fn decide(&mut self, cfg: &DiarizerConfig, force: bool) -> Option<DiarizationResult> {
        self.in_segment = false;
        self.silence_ms = 0.0;
        let voiced_ms = self.segment.hops() * f64::from(HOP_MS);
        // Noise that got past the level gate has hardly any pitch: not a speaker.
        let periodic = self.segment.n[CEPS];
        if voiced_ms >= f64::from(cfg.min_segment_ms)
            && periodic < MIN_PERIODIC_SHARE * self.segment.hops()
        {
            self.held = false;
            self.segment = Stats::EMPTY;
            return None;
        }
        if voiced_ms < f64::from(cfg.min_segment_ms) {
            self.held = !force && voiced_ms > 0.0;
            if !self.held {
                self.segment = Stats::EMPTY;
            }
            return None;
        }
        self.held = false;
        let seg = std::mem::replace(&mut self.segment, Stats::EMPTY);
        let threshold = f64::from(cfg.threshold).max(1e-6);
        let nearest = self
            .speakers
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.stats.distance(&seg)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let (index, is_new, confidence) = match nearest {
            Some((i, d)) if d <= threshold || self.speakers.len() >= cfg.max_speakers.max(1) => {
                (i, false, (1.0 - d / (2.0 * threshold)).clamp(0.0, 1.0))
            }
            other => {
                let confidence =
                    other.map_or(1.0, |(_, d)| (1.0 - threshold / (2.0 * d)).clamp(0.0, 1.0));
                self.speakers.push(Speaker {
                    label: format!("speaker_{}", self.speakers.len()),
                    stats: Stats::EMPTY,
                });
                (self.speakers.len() - 1, true, confidence)
            }
        };
        let speaker = &mut self.speakers[index];
        speaker.stats.merge(&seg);
        let changed = self.current != Some(index);
        self.current = Some(index);
        changed.then(|| DiarizationResult {
            speaker_id: speaker.label.clone(),
            confidence: Some(confidence as f32),
            is_new_speaker: is_new,
            t_ms: Some(self.seg_start_ms),
            duration_ms: Some(self.seg_end_ms - self.seg_start_ms),
        })
    }
}

/// The built-in diarizer: MFCC statistics per speech segment, clustered online.
pub struct SpectralDiarizer {
    config: DiarizerConfig,
    streams: StreamMap<StreamState>,
}

impl std::fmt::Debug for SpectralDiarizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpectralDiarizer")
            .field("config", &self.config)
            .field("streams", &self.streams.len())
            .finish()
    }
}

impl Default for SpectralDiarizer {
    fn default() -> Self {
        Self::new(DiarizerConfig::default())
    }
}

impl SpectralDiarizer {
    /// A diarizer with the given tuning.
    pub fn new(config: DiarizerConfig) -> Self {
        Self {
            config,
            streams: StreamMap::default(),
        }
    }

    /// The tuning in force.
    pub fn config(&self) -> &DiarizerConfig {
        &self.config
    }

    /// Number of speakers found so far on `stream`.
    pub fn speaker_count(&mut self, stream: &str) -> usize {
        self.streams.get_mut(stream).map_or(0, |s| s.speakers.len())
    }

    /// Label of the speaker of `stream`'s latest attributed segment.
    pub fn current_speaker(&mut self, stream: &str) -> Option<&str> {
        let s = self.streams.get_mut(stream)?;
        let i = s.current?;
        s.speakers.get(i).map(|sp| sp.label.as_str())
    }
}

impl DiarizationProvider for SpectralDiarizer {
    fn name(&self) -> &str {
        "builtin"
    }

    fn process(
        &mut self,
        frame: &AudioFrame,
        stream: &str,
    ) -> Result<Option<DiarizationResult>, AudioError> {
        if frame.channels != 1 {
            return Err(AudioError::FormatMismatch {
                stage: "diarize",
                expected: "mono".into(),
                got: format!("{} channels", frame.channels),
            });
        }
        let cfg = &self.config;
        let st = self.streams.get_or_try_insert(stream, || {
            StreamState::new(frame.sample_rate, cfg.max_speakers)
        })?;
        if st.analyzer.rate != frame.sample_rate {
            *st = StreamState::new(frame.sample_rate, cfg.max_speakers)?;
        }
        let t0 = frame.timestamp_ms.unwrap_or(st.clock_ms);
        st.clock_ms = t0 + frame.duration_ms();
        let ms_per_sample = 1000.0 / f64::from(frame.sample_rate);
        let mut result = None;
        let mut feats = st.feats;
        for (i, &s) in frame.samples.iter().enumerate() {
            let Some(level) = st.analyzer.push(i16_to_f32(s)) else {
                continue;
            };
            let hop_end = t0 + (i + 1) as f64 * ms_per_sample;
            let hop_ms = f64::from(HOP_MS);
            st.floor_db = Some(match st.floor_db {
                Some(f) if level >= f => f + (hop_ms / 1000.0) as f32,
                _ => level,
            });
            let floor = st.floor_db.unwrap_or(level);
            // Only voiced hops need the spectrum.
            let voiced = level > floor + cfg.voiced_margin_db
                && level > -60.0
                && st.analyzer.features(&mut feats);
            if voiced {
                if !st.in_segment {
                    st.in_segment = true;
                    let start = hop_end - hop_ms;
                    if !(st.held && start - st.seg_end_ms <= JOIN_MS) {
                        st.segment = Stats::EMPTY;
                        st.seg_start_ms = start;
                    }
                    st.held = false;
                }
                st.silence_ms = 0.0;
                st.seg_end_ms = hop_end;
                st.segment.add(&feats);
                if st.segment.hops() * hop_ms >= f64::from(cfg.max_segment_ms) {
                    let r = st.decide(cfg, true);
                    result = result.or(r);
                }
            } else if st.in_segment {
                st.silence_ms += hop_ms;
                if st.silence_ms >= f64::from(cfg.hangover_ms) {
                    let r = st.decide(cfg, false);
                    result = result.or(r);
                }
            }
        }
        st.feats = feats;
        // The VAD marked the end of speech on this frame.
        if frame.metadata.speech == Some(false) && st.in_segment {
            let r = st.decide(cfg, false);
            result = result.or(r);
        }
        Ok(result)
    }

    fn finish(&mut self, stream: &str) -> Option<DiarizationResult> {
        let cfg = &self.config;
        let st = self.streams.get_mut(stream)?;
        if st.in_segment || st.held {
            st.decide(cfg, true)
        } else {
            None
        }
    }

    fn reset(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    fn close(&mut self) {
        self.streams.clear();
    }
}
