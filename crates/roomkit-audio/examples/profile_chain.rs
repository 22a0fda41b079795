//! A fixed amount of work for profilers: runs the inbound chain (or one
//! stage) over synthetic speech so instruction counts can be compared.
//!
//! `cargo run --release -p roomkit-audio --example profile_chain -- [what] [frames]`
//! where `what` is `chain` (48 kHz in, resample + AEC + AGC + RNNoise +
//! WebRTC VAD + DTMF, the default), `aec16`, `aec48`, `denoise16`,
//! `denoise48` or `resample`. Run it under `valgrind --tool=callgrind` and
//! divide the instruction count by the frame count.

use roomkit_audio::aec::Aec3Canceller;
use roomkit_audio::denoise::RnnoiseDenoiser;
use roomkit_audio::resample::RubatoResampler;
use roomkit_audio::stage::{AecProvider, FrameProcessor};
use roomkit_audio::{
    AudioError, AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    TransportCapabilities,
};

/// Speech-like test signal: three harmonics under a 4 Hz envelope, 1.2 s of
/// every 2 s, over small pseudo-random noise (the benchmark's input).
fn signal(rate: u32, seconds: usize) -> Vec<i16> {
    let n = rate as usize * seconds;
    let mut state: u64 = 1;
    let two_pi = 2.0 * std::f64::consts::PI;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            state = (state * 1_103_515_245 + 12_345) % (1u64 << 31);
            let noise = ((state >> 16) % 81) as i64 - 40;
            let tm = t - 2.0 * (t / 2.0).floor();
            let v = if tm < 1.2 {
                let x = 6000.0 * (two_pi * 220.0 * t).sin()
                    + 3000.0 * (two_pi * 660.0 * t).sin()
                    + 1500.0 * (two_pi * 1800.0 * t).sin();
                let env = 0.55 + 0.45 * (two_pi * 4.0 * t).sin();
                (x * env + 0.5).floor() as i64 + noise
            } else {
                noise
            };
            v.clamp(-32768, 32767) as i16
        })
        .collect()
}

fn load(frame: &mut AudioFrame, samples: &[i16], rate: u32) {
    frame.samples.clear();
    frame.samples.extend_from_slice(samples);
    frame.sample_rate = rate;
    frame.channels = 1;
    frame.timestamp_ms = None;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("chain", String::as_str);
    let frames: usize = match args.get(1) {
        Some(n) => n.parse()?,
        None => 500,
    };
    let seconds = frames / 50 + 1;
    let x48 = signal(48_000, seconds);
    let x16 = signal(16_000, seconds);
    let mut frame = AudioFrame::with_capacity(48_000, 1, 960);
    let mut far = AudioFrame::with_capacity(16_000, 1, 320);
    match what {
        "chain" => {
            let cfg: AudioPipelineConfig = serde_json::from_value(serde_json::json!({
                "resampler": {"internal_sample_rate": 16000},
                "aec": {},
                "agc": {},
                "denoiser": {"provider": "rnnoise"},
                "vad": {"provider": "webrtc"},
                "dtmf": {},
            }))?;
            let contract = AudioPipelineContract {
                internal_format: AudioFormat::pcm_mono(16_000),
                transport_inbound_format: AudioFormat::pcm_mono(48_000),
                transport_outbound_format: AudioFormat::pcm_mono(48_000),
            };
            let mut p =
                AudioPipeline::from_config(&cfg, contract, TransportCapabilities::default())?;
            let mut events = Vec::with_capacity(16);
            for k in 0..frames {
                let src = k.saturating_sub(2) * 320;
                load(&mut far, &x16[src..src + 320], 16_000);
                p.feed_aec_reference("call", &far)?;
                load(&mut frame, &x48[k * 960..(k + 1) * 960], 48_000);
                p.process_inbound("call", &mut frame, &mut events)?;
                events.clear();
            }
        }
        "aec16" | "aec48" => {
            let rate = if what == "aec16" { 16_000 } else { 48_000 };
            let x = if rate == 16_000 { &x16 } else { &x48 };
            let len = rate as usize / 50;
            let mut aec = Aec3Canceller::default();
            for k in 0..frames {
                load(&mut far, &x[k * len..(k + 1) * len], rate);
                aec.feed_reference(&far, "s")?;
                let src = k.saturating_sub(2) * len;
                load(&mut frame, &x[src..src + len], rate);
                for v in &mut frame.samples {
                    *v >>= 1;
                }
                aec.process(&mut frame, "s")?;
            }
        }
        "denoise16" | "denoise48" => {
            let rate = if what == "denoise16" { 16_000 } else { 48_000 };
            let x = if rate == 16_000 { &x16 } else { &x48 };
            let len = rate as usize / 50;
            let mut dn = RnnoiseDenoiser::new();
            for k in 0..frames {
                load(&mut frame, &x[k * len..(k + 1) * len], rate);
                dn.process(&mut frame, "s")?;
            }
        }
        "resample" => {
            let mut r = RubatoResampler::new(AudioFormat::pcm_mono(16_000));
            for k in 0..frames {
                load(&mut frame, &x48[k * 960..(k + 1) * 960], 48_000);
                r.process(&mut frame, "s")?;
            }
        }
        other => {
            return Err(Box::new(AudioError::Config(format!(
                "unknown workload {other:?}"
            ))));
        }
    }
    Ok(())
}
