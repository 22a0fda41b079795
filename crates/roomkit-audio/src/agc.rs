//! Automatic gain control that levels speech to a target without lifting the noise between words.
//!
//! The gain follows a slow estimate of the speech peak level, measured only on
//! frames that stand clearly above a tracked noise floor. Between words and
//! during silence the gain is frozen, so background noise is never "pumped"
//! up, and a fast peak limiter keeps the output out of clipping.

use serde::{Deserialize, Serialize};

use crate::stage::{AgcProvider, FrameProcessor, StreamMap};
use crate::{AudioError, AudioFrame};

/// Tuning of the gain controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgcConfig {
    /// Level the speech peaks are brought to, in dBFS.
    pub target_level_dbfs: f32,
    /// Largest gain ever applied, in dB.
    pub max_gain_db: f32,
    /// Time constant for raising the gain, in milliseconds.
    pub attack_ms: f32,
    /// Time constant for lowering the gain, in milliseconds.
    pub release_ms: f32,
    /// A frame counts as speech only this many dB above the noise floor.
    pub speech_margin_db: f32,
    /// Frames quieter than this (RMS, dBFS) never move the gain.
    pub gate_dbfs: f32,
    /// How fast the speech level estimate falls when speech gets quieter, in dB per second.
    pub level_decay_db_per_s: f32,
}

impl Default for AgcConfig {
    fn default() -> Self {
        Self {
            target_level_dbfs: -3.0,
            max_gain_db: 30.0,
            attack_ms: 10.0,
            release_ms: 100.0,
            speech_margin_db: 10.0,
            gate_dbfs: -65.0,
            level_decay_db_per_s: 3.0,
        }
    }
}

impl AgcConfig {
    /// Checks ranges once at start-up.
    ///
    /// # Errors
    /// [`AudioError::Config`] for a non-negative max gain target or
    /// non-positive time constants.
    pub fn validate(&self) -> Result<(), AudioError> {
        if !(self.target_level_dbfs < 0.0 && self.target_level_dbfs > -60.0) {
            return Err(AudioError::Config(
                "agc target_level_dbfs must be in (-60, 0)".into(),
            ));
        }
        if !(self.max_gain_db >= 0.0 && self.max_gain_db <= 60.0) {
            return Err(AudioError::Config(
                "agc max_gain_db must be in [0, 60]".into(),
            ));
        }
        if self.attack_ms <= 0.0 || self.release_ms <= 0.0 {
            return Err(AudioError::Config(
                "agc attack_ms and release_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct AgcState {
    noise_floor_db: Option<f32>,
    speech_level_db: Option<f32>,
    gain_db: f32,
    applied_lin: f32,
}

/// The built-in level-tracking AGC.
#[derive(Debug)]
pub struct LevelAgc {
    config: AgcConfig,
    streams: StreamMap<AgcState>,
}

impl LevelAgc {
    /// An AGC with the given tuning.
    ///
    /// # Errors
    /// [`AudioError::Config`] if the tuning is out of range.
    pub fn new(config: AgcConfig) -> Result<Self, AudioError> {
        config.validate()?;
        Ok(Self {
            config,
            streams: StreamMap::default(),
        })
    }

    /// Current gain of `stream` in dB (0 before its first frame).
    pub fn gain_db(&mut self, stream: &str) -> f32 {
        self.streams.get_mut(stream).map_or(0.0, |s| s.gain_db)
    }
}

fn db(x: f32) -> f32 {
    20.0 * x.max(1e-9).log10()
}

impl FrameProcessor for LevelAgc {
    fn name(&self) -> &str {
        "level_agc"
    }

    fn process(&mut self, frame: &mut AudioFrame, stream: &str) -> Result<(), AudioError> {
        if frame.samples.is_empty() {
            return Ok(());
        }
        let cfg = &self.config;
        let st = self.streams.get_or_try_insert(stream, || {
            Ok(AgcState {
                noise_floor_db: None,
                speech_level_db: None,
                gain_db: 0.0,
                applied_lin: 1.0,
            })
        })?;
        let dt_ms = frame.duration_ms() as f32;
        let mut peak = 0i32;
        let mut energy = 0f64;
        for &s in &frame.samples {
            let v = i32::from(s);
            peak = peak.max(v.abs());
            energy += f64::from(v * v);
        }
        let rms = (energy / frame.samples.len() as f64).sqrt() as f32 / 32768.0;
        let rms_db = db(rms);
        let peak_db = db(peak as f32 / 32768.0);

        // Noise floor: follows drops at once, rises slowly (1 dB/s), so speech
        // does not drag it up but a noisier room eventually does.
        let floor = match st.noise_floor_db {
            None => rms_db,
            Some(f) if rms_db < f => rms_db,
            Some(f) => f + dt_ms / 1000.0,
        };
        st.noise_floor_db = Some(floor);
        let speech = rms_db > cfg.gate_dbfs && rms_db > floor + cfg.speech_margin_db;

        if speech {
            let level = match st.speech_level_db {
                None => peak_db,
                Some(l) if peak_db > l => l + (peak_db - l) * 0.5,
                Some(l) => (l - cfg.level_decay_db_per_s * dt_ms / 1000.0).max(peak_db),
            };
            st.speech_level_db = Some(level);
            let desired = (cfg.target_level_dbfs - level).clamp(-cfg.max_gain_db, cfg.max_gain_db);
            let tau = if desired > st.gain_db {
                cfg.attack_ms
            } else {
                cfg.release_ms
            };
            let k = 1.0 - (-dt_ms / tau).exp();
            st.gain_db += (desired - st.gain_db) * k;
        } else if let Some(level) = st.speech_level_db {
            // Outside speech the gain may only fall (a louder talker returning
            // is handled by the limiter), never rise.
            let desired = (cfg.target_level_dbfs - level).clamp(-cfg.max_gain_db, cfg.max_gain_db);
            if desired < st.gain_db {
                let k = 1.0 - (-dt_ms / cfg.release_ms).exp();
                st.gain_db += (desired - st.gain_db) * k;
            }
        }

        // Peak limiter: never push this frame's peak above -0.5 dBFS.
        let limit_db = if peak > 0 { -0.5 - peak_db } else { f32::MAX };
        let gain_db = st.gain_db.min(limit_db);
        let target_lin = 10f32.powf(gain_db / 20.0);
        let limit_lin = 10f32.powf(limit_db.min(60.0) / 20.0);
        let start_lin = st.applied_lin;
        let n = frame.samples.len() as f32;
        // Ramp from the previous frame's gain to avoid zipper noise, capped at
        // the limiter's gain for every sample.
        for (i, s) in frame.samples.iter_mut().enumerate() {
            let g = (start_lin + (target_lin - start_lin) * ((i + 1) as f32 / n)).min(limit_lin);
            let v = (f32::from(*s) * g).round().clamp(-32768.0, 32767.0);
            *s = v as i16;
        }
        st.applied_lin = target_lin;
        frame.metadata.gain_applied_db = Some(gain_db);
        Ok(())
    }

    fn reset(&mut self, stream: &str) {
        self.streams.remove(stream);
    }

    fn close(&mut self) {
        self.streams.clear();
    }
}

impl AgcProvider for LevelAgc {}
