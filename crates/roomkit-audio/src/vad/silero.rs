//! The Silero neural VAD (vendored ONNX model, run by tract) as a [`VadEngine`].
//!
//! The model takes 512 new samples at 16 kHz plus the previous 64 as context
//! and carries a recurrent state between calls. The optimised network is
//! built once per process and shared; each stream keeps its own state.

use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::*;

use super::VadEngine;
use crate::AudioError;

const MODEL: &[u8] = include_bytes!("../../assets/silero/silero_vad_op18_ifless.onnx");
const WINDOW: usize = 512;
const CONTEXT: usize = 64;

type Plan = Arc<TypedRunnableModel>;

static PLAN: OnceLock<Result<Plan, String>> = OnceLock::new();

fn build_plan() -> Result<Plan, String> {
    let mut model = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(MODEL))
        .map_err(|e| e.to_string())?;
    let names: Vec<String> = model
        .input_outlets()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    for (i, name) in names.iter().enumerate() {
        if name == "sr" {
            // The sample rate must be a known constant for tract to resolve
            // the network's shapes.
            model
                .set_input_fact(i, InferenceFact::from(tensor0(16_000i64)))
                .map_err(|e| e.to_string())?;
        }
    }
    let plan = model
        .into_optimized()
        .map_err(|e| e.to_string())?
        .into_runnable()
        .map_err(|e| e.to_string())?;
    Ok(plan)
}

fn plan() -> Result<Plan, AudioError> {
    PLAN.get_or_init(build_plan)
        .clone()
        .map_err(|e| AudioError::provider("tract", "load the Silero model", e))
}

/// Silero VAD at 16 kHz.
pub struct SileroVad {
    plan: Plan,
    input_names: Vec<String>,
    threshold: f32,
    state: Tensor,
    context: [f32; CONTEXT],
    pending: Vec<f32>,
    window: Vec<f32>,
    last_prob: f32,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad")
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl SileroVad {
    /// Loads (once per process) the model and makes a detector with fresh state.
    ///
    /// # Errors
    /// [`AudioError::Provider`] if tract cannot load the model.
    pub fn new(threshold: f32) -> Result<Self, AudioError> {
        let plan = plan()?;
        let input_names = plan
            .model()
            .input_outlets()
            .map_err(|e| AudioError::provider("tract", "inspect the model", e))?
            .iter()
            .map(|o| plan.model().node(o.node).name.clone())
            .collect();
        Ok(Self {
            plan,
            input_names,
            threshold,
            state: Tensor::zero::<f32>(&[2, 1, 128])
                .map_err(|e| AudioError::provider("tract", "allocate state", e))?,
            context: [0.0; CONTEXT],
            pending: Vec::with_capacity(WINDOW * 2),
            window: Vec::with_capacity(WINDOW + CONTEXT),
            last_prob: 0.0,
        })
    }

    /// Checks that the vendored model loads (used when a pipeline is built).
    ///
    /// # Errors
    /// [`AudioError::Provider`] if it does not.
    pub fn check_model() -> Result<(), AudioError> {
        plan().map(|_| ())
    }

    fn infer(&mut self) -> Result<f32, AudioError> {
        let err = |e: TractError| AudioError::provider("tract", "run Silero", e);
        self.window.clear();
        self.window.extend_from_slice(&self.context);
        self.window.extend_from_slice(&self.pending[..WINDOW]);
        self.context
            .copy_from_slice(&self.pending[WINDOW - CONTEXT..WINDOW]);
        self.pending.drain(..WINDOW);
        let input = Tensor::from_shape(&[1, WINDOW + CONTEXT], &self.window).map_err(err)?;
        let mut inputs: TVec<TValue> = TVec::new();
        for name in &self.input_names {
            match name.as_str() {
                "input" => inputs.push(input.clone().into()),
                "state" => inputs.push(self.state.clone().into()),
                "sr" => inputs.push(tensor0(16_000i64).into()),
                other => {
                    return Err(AudioError::provider(
                        "tract",
                        "run Silero",
                        format!("unexpected input {other}"),
                    ));
                }
            }
        }
        let out = self.plan.run(inputs).map_err(err)?;
        let prob = out
            .first()
            .and_then(|t| {
                t.to_plain_array_view::<f32>()
                    .ok()
                    .and_then(|a| a.iter().next().copied())
            })
            .ok_or_else(|| AudioError::provider("tract", "read Silero output", "empty"))?;
        if let Some(state) = out.get(1) {
            self.state = state.clone().into_tensor();
        }
        Ok(prob)
    }
}

impl VadEngine for SileroVad {
    fn speech_probability(&mut self, samples: &[i16], rate: u32) -> Result<f32, AudioError> {
        if rate != 16_000 {
            return Err(AudioError::FormatMismatch {
                stage: "silero_vad",
                expected: "16000 Hz".into(),
                got: format!("{rate} Hz"),
            });
        }
        self.pending
            .extend(samples.iter().map(|&s| f32::from(s) / 32768.0));
        let mut best: Option<f32> = None;
        while self.pending.len() >= WINDOW {
            let p = self.infer()?;
            best = Some(best.map_or(p, |b| b.max(p)));
        }
        if let Some(p) = best {
            self.last_prob = p;
        }
        Ok(self.last_prob)
    }

    fn threshold(&self) -> f32 {
        self.threshold
    }

    fn latency_ms(&self) -> f64 {
        // A decision covers a 32 ms window that may end up to 32 ms after
        // the frame it is reported for; half of that on average.
        16.0
    }
}
