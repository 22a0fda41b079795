//! A cheap energy VAD with an adaptive noise floor, usable at any sample rate.

use serde::{Deserialize, Serialize};

use super::VadEngine;
use crate::AudioError;

/// Tuning of [`EnergyVad`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyVadConfig {
    /// Frames whose RMS (dBFS) is below this are never speech.
    pub min_level_dbfs: f32,
    /// Frames must be this many dB above the tracked noise floor.
    pub margin_db: f32,
}

impl Default for EnergyVadConfig {
    fn default() -> Self {
        Self {
            min_level_dbfs: -50.0,
            margin_db: 8.0,
        }
    }
}

/// RMS-above-noise-floor speech detector.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    config: EnergyVadConfig,
    floor_db: Option<f32>,
}

impl EnergyVad {
    /// A detector with the given tuning.
    pub fn new(config: EnergyVadConfig) -> Self {
        Self {
            config,
            floor_db: None,
        }
    }
}

impl VadEngine for EnergyVad {
    fn speech_probability(&mut self, samples: &[i16], rate: u32) -> Result<f32, AudioError> {
        if samples.is_empty() || rate == 0 {
            return Ok(0.0);
        }
        let level = crate::signal::rms_dbfs(samples);
        let dt = samples.len() as f32 / rate as f32;
        // Noise floor: drops to quieter frames at once, follows frames near
        // it quickly (they are noise), and creeps up only 1 dB/s under
        // speech so a long utterance does not become the new floor.
        let floor = match self.floor_db {
            None => level,
            Some(f) if level < f => level,
            Some(f) if level < f + self.config.margin_db * 0.5 => f + 0.1 * (level - f),
            Some(f) => f + 1.0 * dt,
        };
        self.floor_db = Some(floor);
        let above = level - floor.max(-90.0);
        if level < self.config.min_level_dbfs {
            return Ok(0.0);
        }
        // Map "dB above the floor" to a probability around the margin.
        let p = ((above - self.config.margin_db) / 6.0 + 0.5).clamp(0.0, 1.0);
        Ok(p)
    }
}
