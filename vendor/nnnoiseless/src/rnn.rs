use std::borrow::Cow;

use once_cell::sync::OnceCell;

use crate::util::{relu, sigmoid_approx, tansig_approx, zip3};

const MAX_NEURONS: usize = 128;

// RoomKit: the weights are read from bytes with `b as i8` and kept as `f32`
// (see `weights` below) instead of reinterpreting the byte slice as `&[i8]`
// with `unsafe`.

#[derive(Clone, Copy, Debug)]
pub enum Activation {
    Tanh = 0,
    Sigmoid = 1,
    Relu = 2,
}

const WEIGHTS_SCALE: f32 = 1.0 / 256.0;

// RoomKit: biases and weights are stored as `f32` (converted once from the
// model's `i8`s, which is exact) instead of `Cow<'static, [i8]>`, so the
// matrix products below do not convert every weight on every frame.
#[derive(Clone)]
pub struct DenseLayer {
    /// An array of length `nb_neurons`.
    pub bias: Vec<f32>,
    /// An array of length `nb_inputs * nb_neurons`.
    pub input_weights: Vec<f32>,
    pub nb_inputs: usize,
    pub nb_neurons: usize,
    pub activation: Activation,
}

#[derive(Clone)]
pub struct GruLayer {
    /// An array of length `3 * nb_neurons`.
    pub bias: Vec<f32>,
    /// An array of length `3 * nb_inputs * nb_neurons`.
    pub input_weights: Vec<f32>,
    /// An array of length `3 * nb_neurons^2`.
    pub recurrent_weights: Vec<f32>,
    pub nb_inputs: usize,
    pub nb_neurons: usize,
    pub activation: Activation,
}

/// An `RnnModel` contains all the model parameters for the denoising algorithm.
/// `nnnoiseless` has a built-in model that should work for most purposes, but if you have
/// specific needs then you might benefit from training a custom model. Scripts for model
/// training are available as part of [`RNNoise`]; once the model is trained, you can load it
/// here.
///
/// [`RNNoise`]: https://github.com/xiph/rnnoise
#[derive(Clone)]
pub struct RnnModel {
    pub(crate) input_dense: DenseLayer,
    pub(crate) vad_gru: GruLayer,
    pub(crate) noise_gru: GruLayer,
    pub(crate) denoise_gru: GruLayer,
    pub(crate) denoise_output: DenseLayer,
    pub(crate) vad_output: DenseLayer,
}

#[derive(Clone)]
pub struct RnnState<'model> {
    model: Cow<'model, RnnModel>,
    vad_gru_state: Vec<f32>,
    noise_gru_state: Vec<f32>,
    denoise_gru_state: Vec<f32>,
}

impl RnnModel {
    /// Reads an `RnnModel` from an array of bytes, in the format produced by the
    /// `nnnoiseless` training scripts.
    pub fn from_bytes(bytes: &[u8]) -> Option<RnnModel> {
        RnnModel::from_bytes_impl(bytes)
    }

    /// Reads an `RnnModel` from a static array of bytes, in the format produced by the
    /// `nnnoiseless` training scripts.
    ///
    /// This differs from [`RnnModel::from_bytes`] in that the returned model doesn't need to
    /// allocate its own byte buffers; it will just store references to the provided `bytes` array.
    ///
    /// For example, if you have your neural network weights available at compile-time then the
    /// following code will embed them into your binary and initialize a model without allocation:
    ///
    /// ```ignore
    /// let weight_data: &'static [u8] = include_bytes!("/path/to/model/weights.rnn");
    /// let model = RnnModel::from_static_bytes(weight_data).expect("Corrupted model file");
    /// ```
    pub fn from_static_bytes(bytes: &'static [u8]) -> Option<RnnModel> {
        // RoomKit: the weights are converted to `f32`, so this allocates like
        // `from_bytes`.
        RnnModel::from_bytes_impl(bytes)
    }

    /// Reads an `RnnModel` from an array of bytes, in our new nnnoiseless format.
    ///
    /// The format is simple: each NN layer is represented by an array of signed `i8`'s,
    /// and these layers as simply concatenated.
    ///
    /// The format for a dense layer is
    /// <nb_neurons> <nb_inputs> <activation>
    /// <weights...>
    /// <bias...>
    /// where each of the <?> terms represents a single integer, and each of the <?...> terms
    /// represents an array of integers of the appropriate length (`weights` has length
    /// `nb_neurons * nb_inputs` and `bias` has length `nb_neurons`).
    ///
    /// The format for a GRU layer is
    /// <nb_neurons> <nb_inputs> <activation>
    /// <input_weights...>
    /// <recurrent_weights...>
    /// <bias...>
    /// where `input_weights` and `recurrent_weights` have length `3 * nb_inputs * nb_neurons` each,
    /// and `bias` has length `3 * nb_neurons`.
    fn from_bytes_impl(bytes: &[u8]) -> Option<RnnModel> {
        fn read_array(bytes: &[u8], len: usize) -> Option<(Vec<f32>, &[u8])> {
            if bytes.len() >= len {
                let values = bytes[..len].iter().map(|&b| f32::from(b as i8)).collect();
                Some((values, &bytes[len..]))
            } else {
                None
            }
        }

        fn unsigned(b: u8) -> Option<usize> {
            if (b as i8) >= 0 {
                Some(b as usize)
            } else {
                None
            }
        }

        fn act(x: u8) -> Option<Activation> {
            match x {
                0 => Some(Activation::Tanh),
                1 => Some(Activation::Sigmoid),
                2 => Some(Activation::Relu),
                _ => None,
            }
        }

        fn read_dense(bytes: &[u8]) -> Option<(DenseLayer, &[u8])> {
            if bytes.len() < 3 {
                return None;
            }

            let nb_inputs = unsigned(bytes[0])?;
            let nb_neurons = unsigned(bytes[1])?;
            let activation = act(bytes[2])?;
            let (input_weights, bytes) = read_array(&bytes[3..], nb_neurons * nb_inputs)?;
            let (bias, bytes) = read_array(bytes, nb_neurons)?;

            let layer = DenseLayer {
                nb_inputs,
                nb_neurons,
                input_weights,
                bias,
                activation,
            };
            Some((layer, bytes))
        }

        fn read_gru(bytes: &[u8]) -> Option<(GruLayer, &[u8])> {
            if bytes.len() < 3 {
                return None;
            }

            let nb_inputs = unsigned(bytes[0])?;
            let nb_neurons = unsigned(bytes[1])?;
            let activation = act(bytes[2])?;
            let (input_weights, bytes) = read_array(&bytes[3..], 3 * nb_neurons * nb_inputs)?;
            let (recurrent_weights, bytes) = read_array(bytes, 3 * nb_neurons * nb_neurons)?;
            let (bias, bytes) = read_array(bytes, 3 * nb_neurons)?;

            let layer = GruLayer {
                nb_inputs,
                nb_neurons,
                input_weights,
                recurrent_weights,
                bias,
                activation,
            };
            Some((layer, bytes))
        }

        let (input_dense, bytes) = read_dense(bytes)?;
        let (vad_gru, bytes) = read_gru(bytes)?;
        let (noise_gru, bytes) = read_gru(bytes)?;
        let (denoise_gru, bytes) = read_gru(bytes)?;
        let (denoise_output, bytes) = read_dense(bytes)?;
        let (vad_output, bytes) = read_dense(bytes)?;

        if !bytes.is_empty() {
            return None;
        }

        // The input to the first layer must be of size 42, because that's how many features
        // there are. The denoise output must be of size 22, and the vad output must be of size 1.
        // Other than that, the output of one layer must match with the inputs of the following
        // layer.
        if input_dense.nb_inputs != 42
            || denoise_output.nb_neurons != 22
            || vad_output.nb_neurons != 1
        {
            return None;
        }
        if input_dense.nb_neurons != vad_gru.nb_inputs || vad_gru.nb_neurons != vad_output.nb_inputs
        {
            return None;
        }
        if 42 + input_dense.nb_neurons + vad_gru.nb_neurons != noise_gru.nb_inputs {
            return None;
        }
        if 42 + vad_gru.nb_neurons + noise_gru.nb_neurons != denoise_gru.nb_inputs {
            return None;
        }
        if denoise_gru.nb_neurons != denoise_output.nb_inputs {
            return None;
        }

        Some(RnnModel {
            input_dense,
            vad_gru,
            noise_gru,
            denoise_gru,
            denoise_output,
            vad_output,
        })
    }
}

impl Default for RnnModel {
    fn default() -> RnnModel {
        // RoomKit: a copy of the shared built-in model (see `default_model`).
        default_model().clone()
    }
}

/// The built-in model, parsed once and shared by every `DenoiseState` that
/// uses it.
// RoomKit: upstream parsed (and, for the built-in model, borrowed) the
// weights for every new state; with weights stored as `f32` a shared copy
// keeps one model in memory however many streams are denoised.
pub(crate) fn default_model() -> &'static RnnModel {
    static MODEL: OnceCell<RnnModel> = OnceCell::new();
    MODEL.get_or_init(|| {
        let bytes: &'static [u8] = include_bytes!("weights.rnn");
        RnnModel::from_bytes(bytes).unwrap()
    })
}

impl DenseLayer {
    fn compute(&self, output: &mut [f32], input: &[f32]) {
        // RoomKit: one register-blocked product (see `mul_add`).
        copy(output, &self.bias[..]);
        mul_add(output, &self.input_weights, self.nb_neurons, 0, input);

        match self.activation {
            Activation::Sigmoid => {
                for out in output.iter_mut() {
                    *out = sigmoid_approx(*out * WEIGHTS_SCALE);
                }
            }
            Activation::Tanh => {
                for out in output.iter_mut() {
                    *out = tansig_approx(*out * WEIGHTS_SCALE);
                }
            }
            Activation::Relu => {
                for out in output.iter_mut() {
                    *out = relu(*out * WEIGHTS_SCALE);
                }
            }
        }
    }
}

impl GruLayer {
    fn compute(&self, state: &mut [f32], input: &[f32]) {
        // RoomKit: the input products of the three gates are one pass over
        // the (contiguous) rows of `input_weights`, and the recurrent
        // products of the update and reset gates one pass over
        // `recurrent_weights`. Each output still adds its bias, then its
        // input terms in order, then its recurrent terms in order, so the
        // sums are the same as upstream's gate-by-gate loops.
        let mut zrh = [0.0; 3 * MAX_NEURONS];
        let mut r = [0.0; MAX_NEURONS];
        let n = self.nb_neurons;
        let stride = 3 * n;
        let zrh = &mut zrh[..stride];
        let r = &mut r[..n];

        copy(zrh, &self.bias[..]);
        mul_add(zrh, &self.input_weights, stride, 0, input);
        mul_add(&mut zrh[..2 * n], &self.recurrent_weights, stride, 0, &state[..n]);

        let (zr, h) = zrh.split_at_mut(2 * n);
        let (z, reset) = zr.split_at_mut(n);
        // Update gate.
        for z in z.iter_mut() {
            *z = sigmoid_approx(WEIGHTS_SCALE * *z);
        }
        // Reset gate.
        for (out, (&g, &s)) in r.iter_mut().zip(reset.iter().zip(&state[..n])) {
            *out = s * sigmoid_approx(WEIGHTS_SCALE * g);
        }
        // Output.
        mul_add(h, &self.recurrent_weights, stride, 2 * n, r);

        for (s, &z, &h) in zip3(state, &*z, &*h) {
            let h = match self.activation {
                Activation::Sigmoid => sigmoid_approx(WEIGHTS_SCALE * h),
                Activation::Tanh => tansig_approx(WEIGHTS_SCALE * h),
                Activation::Relu => relu(WEIGHTS_SCALE * h),
            };
            *s = z * *s + (1.0 - z) * h;
        }
    }
}

impl<'model> RnnState<'model> {
    pub(crate) fn new(model: Cow<'model, RnnModel>) -> RnnState<'model> {
        let vad_gru_state = vec![0.0f32; model.vad_gru.nb_neurons];
        let noise_gru_state = vec![0.0f32; model.noise_gru.nb_neurons];
        let denoise_gru_state = vec![0.0f32; model.denoise_gru.nb_neurons];
        RnnState {
            model,
            vad_gru_state,
            noise_gru_state,
            denoise_gru_state,
        }
    }

    pub fn compute(&mut self, gains: &mut [f32], vad: &mut [f32], input: &[f32]) {
        assert_eq!(input.len(), INPUT_SIZE);

        let mut buf = [0.0; MAX_NEURONS * 3];
        let mut denoise_buf = [0.0; MAX_NEURONS * 3];
        let model = &self.model;

        let vad_gru_state = &mut self.vad_gru_state[..];
        let noise_gru_state = &mut self.noise_gru_state[..];
        let denoise_gru_state = &mut self.denoise_gru_state[..];
        model
            .input_dense
            .compute(&mut buf[0..model.input_dense.nb_neurons], input);
        model
            .vad_gru
            .compute(vad_gru_state, &buf[0..model.input_dense.nb_neurons]);
        model.vad_output.compute(vad, vad_gru_state);

        copy(&mut buf[model.input_dense.nb_neurons..], vad_gru_state);
        copy(
            &mut buf[(model.input_dense.nb_neurons + model.vad_gru.nb_neurons)..],
            input,
        );
        model.noise_gru.compute(noise_gru_state, &buf);

        copy(&mut denoise_buf, vad_gru_state);
        copy(
            &mut denoise_buf[model.vad_gru.nb_neurons..],
            noise_gru_state,
        );
        copy(
            &mut denoise_buf[(model.vad_gru.nb_neurons + model.noise_gru.nb_neurons)..],
            input,
        );
        model.denoise_gru.compute(denoise_gru_state, &denoise_buf);
        model.denoise_output.compute(gains, denoise_gru_state);
    }
}

const INPUT_SIZE: usize = 42;

fn copy(dst: &mut [f32], src: &[f32]) {
    for (x, y) in dst.iter_mut().zip(src) {
        *x = *y;
    }
}

// RoomKit: upstream's `SubMatrix::mul_add` added one weight column at a time
// into `output` in memory, converting each `i8` weight to `f32` on the way.
// The version below keeps a block of outputs in registers for the whole pass
// over the inputs, which the compiler turns into packed multiplies and adds.
// The per-output order of the additions is unchanged.

crate::simd::wide! {
    /// Adds the product of a weight matrix and `input` to `output`:
    /// `output[j] += sum over i of weights[i * stride + offset + j] * input[i]`,
    /// the inputs taken in order, for every `j` in `0..output.len()`.
    fn mul_add(output: &mut [f32], weights: &[f32], stride: usize, offset: usize, input: &[f32]) => mul_add_body
}

#[inline(always)]
fn mul_add_body(output: &mut [f32], weights: &[f32], stride: usize, offset: usize, input: &[f32]) {
    // Callers may pass a longer input buffer than the matrix has rows (as
    // upstream's zip allowed); only the first rows' worth of it counts.
    let rows = (weights.len() / stride).min(input.len());
    let (weights, input) = (&weights[..rows * stride], &input[..rows]);
    let mut start = 0;
    let mut rest = output;
    while rest.len() >= 16 {
        let (head, tail) = rest.split_at_mut(16);
        mul_add_block::<16>(head, weights, stride, offset + start, input);
        start += 16;
        rest = tail;
    }
    if rest.len() >= 8 {
        let (head, tail) = rest.split_at_mut(8);
        mul_add_block::<8>(head, weights, stride, offset + start, input);
        start += 8;
        rest = tail;
    }
    if rest.len() >= 4 {
        let (head, tail) = rest.split_at_mut(4);
        mul_add_block::<4>(head, weights, stride, offset + start, input);
        start += 4;
        rest = tail;
    }
    for (k, out) in rest.iter_mut().enumerate() {
        mul_add_block::<1>(
            std::slice::from_mut(out),
            weights,
            stride,
            offset + start + k,
            input,
        );
    }
}

/// `mul_add` for `B` outputs starting at column `start`.
#[inline(always)]
fn mul_add_block<const B: usize>(
    output: &mut [f32],
    weights: &[f32],
    stride: usize,
    start: usize,
    input: &[f32],
) {
    let mut acc = [0.0f32; B];
    acc.copy_from_slice(&output[..B]);
    for (row, &x) in weights.chunks_exact(stride).zip(input) {
        for (a, &w) in acc.iter_mut().zip(&row[start..start + B]) {
            *a += w * x;
        }
    }
    output[..B].copy_from_slice(&acc);
}
