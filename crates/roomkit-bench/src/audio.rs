//! Audio benchmarks: per-frame cost of each stage (`audio_stages`) and of the whole inbound chain (`audio_chain`).
//!
//! Both use the reference benchmark's bit-exact input: 60 s per rate of
//! "speech" (three harmonics under a 4 Hz envelope, 1.2 s of every 2 s) over
//! small integer noise, cut into 3,000 frames of 20 ms that are built before
//! timing. Each stage gets 50 warm-up frames on a separate stream, then every
//! frame is timed on its own. One JSON line per measurement goes to stdout.

use std::time::Instant;

use anyhow::Context as _;
use roomkit_audio::aec::Aec3Canceller;
use roomkit_audio::agc::{AgcConfig, LevelAgc};
use roomkit_audio::codec::{AudioDecoder, AudioEncoder, G711, G711Law};
use roomkit_audio::denoise::RnnoiseDenoiser;
use roomkit_audio::dtmf::{DtmfDetector, GoertzelDtmf};
use roomkit_audio::recorder::{RecordingChannelMode, RecordingConfig, RecordingMode, WavRecorder};
use roomkit_audio::resample::RubatoResampler;
use roomkit_audio::stage::{AecProvider, FrameProcessor};
use roomkit_audio::vad::{
    EnergyVad, EnergyVadConfig, SegmentingVad, VadConfig, VadEventType, VadProvider, WebRtcVad,
    WebRtcVadMode,
};
use roomkit_audio::{
    AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    PipelineEvent, TransportCapabilities,
};
use serde_json::json;

const FRAMES: usize = 3_000;
const WARMUP: usize = 50;

/// Runs an audio workload; `Ok(false)` when the name is not an audio workload.
///
/// # Errors
/// When a stage fails to process the benchmark signal.
pub fn run(workload: &str) -> anyhow::Result<bool> {
    match workload {
        "audio_stages" => stages()?,
        "audio_chain" => chain()?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The reference input signal at `rate`, 60 s, exactly as the reference harness defines it.
fn signal(rate: u32) -> Vec<i16> {
    let n = rate as usize * 60;
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

fn frames(x: &[i16], rate: u32) -> Vec<AudioFrame> {
    let len = rate as usize / 50;
    x.chunks_exact(len)
        .take(FRAMES)
        .enumerate()
        .map(|(k, c)| AudioFrame {
            samples: c.to_vec(),
            sample_rate: rate,
            channels: 1,
            timestamp_ms: Some(k as f64 * 20.0),
            metadata: Default::default(),
        })
        .collect()
}

struct Stats {
    /// CPU microseconds per frame, when the run was long enough to measure.
    cpu: Option<f64>,
    mean: f64,
    p50: f64,
    p99: f64,
    total_s: f64,
}

fn stats(mut us: Vec<f64>) -> Stats {
    let total: f64 = us.iter().sum();
    us.sort_by(f64::total_cmp);
    let pick = |q: f64| us[((us.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        cpu: None,
        mean: total / us.len() as f64,
        p50: pick(0.5),
        p99: pick(0.99),
        total_s: total / 1e6,
    }
}

/// Reference figures (µs per audio-second from the reference results, / 50 = mean µs per 20 ms frame).
/// `ratio` is our mean over the reference mean (below 1 = faster); `ratio_p50`
/// uses our median frame, which on a shared machine is the steadier figure.
fn refs(names: &[(&str, f64)], ours: f64, ours_p50: f64) -> serde_json::Value {
    let r4 = |x: f64| (x * 10_000.0).round() / 10_000.0;
    names
        .iter()
        .map(|(n, us_per_s)| {
            let r = us_per_s / 50.0;
            json!({
                "name": n,
                "us_per_frame": (r * 100.0).round() / 100.0,
                "ratio": r4(ours / r),
                "ratio_p50": r4(ours_p50 / r),
            })
        })
        .collect()
}

fn emit(
    workload: &str,
    stage: &str,
    rate: u32,
    s: &Stats,
    reference: &[(&str, f64)],
    extra: serde_json::Value,
) {
    let mut o = json!({
        "workload": workload,
        "stage": stage,
        "rate": rate,
        "frames": FRAMES,
        "us_per_frame": (s.mean * 100.0).round() / 100.0,
        "p50_us": (s.p50 * 100.0).round() / 100.0,
        "p99_us": (s.p99 * 100.0).round() / 100.0,
        "rtf": s.total_s / 60.0,
        "cpu_us_per_frame": s.cpu.map(|c| (c * 100.0).round() / 100.0),
    });
    if !reference.is_empty() {
        o["reference"] = refs(reference, s.mean, s.p50);
    }
    if let serde_json::Value::Object(m) = extra {
        for (k, v) in m {
            o[k] = v;
        }
    }
    println!("{o}");
}

/// Times `f` on every frame (after warm-up on stream `warm`); `f` gets a
/// fresh copy of the frame, made outside the timed region.
fn time_frames(
    input: &[AudioFrame],
    mut f: impl FnMut(&mut AudioFrame, &str, usize) -> anyhow::Result<()>,
) -> anyhow::Result<Stats> {
    let mut scratch = AudioFrame::with_capacity(48_000, 1, 4096);
    for (k, fr) in input.iter().take(WARMUP).enumerate() {
        scratch.clone_from(fr);
        f(&mut scratch, "warm", k)?;
    }
    let mut us = Vec::with_capacity(input.len());
    let cpu_start = thread_cpu_us();
    for (k, fr) in input.iter().enumerate() {
        scratch.clone_from(fr);
        let t = Instant::now();
        f(&mut scratch, "bench", k)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let cpu_end = thread_cpu_us();
    let mut st = stats(us);
    // The CPU clock ticks every 10 ms: only report it over 100 ms or more.
    if let (Some(a), Some(b)) = (cpu_start, cpu_end)
        && b - a >= 100_000.0
    {
        st.cpu = Some((b - a) / input.len() as f64);
    }
    Ok(st)
}

fn stages() -> anyhow::Result<()> {
    let sig48 = signal(48_000);
    let sig16 = signal(16_000);
    let sig8 = signal(8_000);
    let f48 = frames(&sig48, 48_000);
    let f16 = frames(&sig16, 16_000);
    let f8 = frames(&sig8, 8_000);
    let w = "audio_stages";

    // Resampling.
    let mut r = RubatoResampler::new(AudioFormat::pcm_mono(16_000));
    let s = time_frames(&f48, |fr, st, _| Ok(r.process(fr, st)?))?;
    emit(
        w,
        "resample_48k_to_16k",
        48_000,
        &s,
        &[
            ("resample_linear_48k_to_16k", 13_173.0),
            ("resample_numpy_48k_to_16k", 1_088.0),
            ("resample_sinc16_48k_to_16k", 167_934.0),
        ],
        json!({}),
    );
    let mut r = RubatoResampler::new(AudioFormat::pcm_mono(48_000));
    let s = time_frames(&f16, |fr, st, _| Ok(r.process(fr, st)?))?;
    emit(
        w,
        "resample_16k_to_48k",
        16_000,
        &s,
        &[
            ("resample_linear_16k_to_48k", 28_655.0),
            ("resample_numpy_16k_to_48k", 958.0),
            ("resample_sinc16_16k_to_48k", 476_088.0),
        ],
        json!({}),
    );

    for (rate, fr) in [(16_000u32, &f16), (48_000u32, &f48)] {
        // AEC: far = the signal, near = far delayed by two frames at half amplitude.
        let mut aec = Aec3Canceller::default();
        let mut reference = AudioFrame::with_capacity(rate, 1, 960);
        let s = time_frames(fr, |frame, st, k| {
            reference.clone_from(frame);
            let src = if k >= 2 { Some(&fr[k - 2]) } else { None };
            for (i, v) in frame.samples.iter_mut().enumerate() {
                *v = src.map_or(0, |p| p.samples[i] >> 1);
            }
            aec.feed_reference(&reference, st)?;
            aec.process(frame, st)?;
            Ok(())
        })?;
        let r16: &[(&str, f64)] = if rate == 16_000 {
            &[("aec_speex_16k", 2_423.0)]
        } else {
            &[]
        };
        emit(
            w,
            "aec_webrtc_aec3",
            rate,
            &s,
            r16,
            json!({"echo_delay_ms": 40}),
        );

        let mut agc = LevelAgc::new(AgcConfig::default())?;
        let s = time_frames(fr, |frame, st, _| Ok(agc.process(frame, st)?))?;
        let r16: &[(&str, f64)] = if rate == 16_000 {
            &[("agc_simple_16k", 3_786.0)]
        } else {
            &[]
        };
        emit(w, "agc_level", rate, &s, r16, json!({}));

        let mut dn = RnnoiseDenoiser::new();
        let s = time_frames(fr, |frame, st, _| Ok(dn.process(frame, st)?))?;
        emit(
            w,
            "denoise_rnnoise",
            rate,
            &s,
            &[],
            json!({"internal_resampling": rate != 48_000}),
        );

        let mut vad = SegmentingVad::new("webrtc", VadConfig::default(), || {
            Ok(WebRtcVad::new(WebRtcVadMode::Aggressive))
        });
        let mut starts = 0;
        let s = time_frames(fr, |frame, st, _| {
            if let Some(ev) = vad.process(frame, st)?
                && st == "bench"
                && ev.kind == VadEventType::SpeechStart
            {
                starts += 1;
            }
            Ok(())
        })?;
        emit(
            w,
            "vad_webrtc",
            rate,
            &s,
            &[],
            json!({"speech_starts": starts}),
        );

        let mut vad = SegmentingVad::new("energy", VadConfig::default(), || {
            Ok(EnergyVad::new(EnergyVadConfig::default()))
        });
        let mut starts = 0;
        let s = time_frames(fr, |frame, st, _| {
            if let Some(ev) = vad.process(frame, st)?
                && st == "bench"
                && ev.kind == VadEventType::SpeechStart
            {
                starts += 1;
            }
            Ok(())
        })?;
        let r16: &[(&str, f64)] = if rate == 16_000 {
            &[("vad_energy_16k", 443.0)]
        } else {
            &[]
        };
        emit(
            w,
            "vad_energy",
            rate,
            &s,
            r16,
            json!({"speech_starts": starts}),
        );

        let mut dtmf = GoertzelDtmf::default();
        let mut digits = 0;
        let s = time_frames(fr, |frame, st, _| {
            if dtmf.process(frame, st)?.is_some() && st == "bench" {
                digits += 1;
            }
            Ok(())
        })?;
        emit(
            w,
            "dtmf_goertzel",
            rate,
            &s,
            &[],
            json!({"false_digits": digits}),
        );

        let mut diarizer = roomkit_audio::diarize::SpectralDiarizer::default();
        let mut changes = 0;
        let s = time_frames(fr, |frame, st, _| {
            use roomkit_audio::diarize::DiarizationProvider as _;
            if diarizer.process(frame, st)?.is_some() && st == "bench" {
                changes += 1;
            }
            Ok(())
        })?;
        emit(
            w,
            "diarize_builtin",
            rate,
            &s,
            &[],
            json!({"speaker_changes": changes}),
        );
    }

    // G.711 µ-law round trip at 8 kHz.
    let mut codec = G711::new(G711Law::Mu);
    let mut payload = Vec::with_capacity(160);
    let mut pcm = vec![0i16; 160];
    let s = time_frames(&f8, |frame, _, _| {
        codec.encode(&frame.samples, &mut payload)?;
        codec.decode(&payload, &mut pcm)?;
        Ok(())
    })?;
    emit(
        w,
        "g711_mulaw_roundtrip",
        8_000,
        &s,
        &[
            ("g711_mulaw_roundtrip_numpy_8k", 152.0),
            ("g711_mulaw_roundtrip_stdlib_8k", 751.0),
        ],
        json!({}),
    );

    // WAV recording of the inbound stream (synchronous buffered writes; stop included).
    let dir = std::env::temp_dir().join(format!("roomkit-bench-rec-{}", std::process::id()));
    let mut rec = WavRecorder::new();
    let cfg = RecordingConfig {
        format: "wav".into(),
        mode: RecordingMode::InboundOnly,
        channels: RecordingChannelMode::Separate,
        storage: "local".into(),
        directory: dir.clone(),
        sample_rate: 16_000,
        retention_days: None,
        metadata: serde_json::Map::new(),
    };
    let warm = rec.start("warm", cfg.clone())?;
    for f in f16.iter().take(WARMUP) {
        rec.record_inbound(&warm, f)?;
    }
    rec.stop(&warm)?;
    let h = rec.start("bench", cfg)?;
    let mut us = Vec::with_capacity(FRAMES);
    for f in &f16 {
        let t = Instant::now();
        rec.record_inbound(&h, f)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let t = Instant::now();
    let res = rec.stop(&h)?;
    let stop_us = t.elapsed().as_secs_f64() * 1e6;
    if let Some(last) = us.last_mut() {
        *last += stop_us;
    }
    let bytes = std::fs::metadata(&res.urls[0])
        .map(|m| m.len())
        .unwrap_or(0);
    std::fs::remove_dir_all(&dir).ok();
    emit(
        w,
        "wav_recorder",
        16_000,
        &stats(us),
        &[("wav_recorder_16k", 736.0)],
        json!({"file_bytes": bytes}),
    );

    // The engine: 48 kHz in, resample + AGC + energy VAD at 16 kHz.
    let cfg: AudioPipelineConfig = serde_json::from_value(json!({
        "resampler": {"internal_sample_rate": 16000},
        "agc": {},
        "vad": {"provider": "energy"},
    }))?;
    let (s, events) = engine(&cfg, &f48, &f16, false)?;
    emit(
        w,
        "engine_resample_agc_vad_48k",
        48_000,
        &s,
        &[
            ("engine_linear_agc_vad_48k", 17_433.0),
            ("engine_numpy_agc_vad_48k", 5_218.0),
        ],
        json!({"vad_events": events}),
    );
    Ok(())
}

fn contract48() -> AudioPipelineContract {
    AudioPipelineContract {
        internal_format: AudioFormat::pcm_mono(16_000),
        transport_inbound_format: AudioFormat::pcm_mono(48_000),
        transport_outbound_format: AudioFormat::pcm_mono(48_000),
    }
}

/// Runs the pipeline over the 48 kHz frames; with `aec`, the 16 kHz signal
/// two frames earlier is the far end and the near end carries its echo.
fn engine(
    cfg: &AudioPipelineConfig,
    f48: &[AudioFrame],
    f16: &[AudioFrame],
    aec: bool,
) -> anyhow::Result<(Stats, usize)> {
    let mut p = AudioPipeline::from_config(cfg, contract48(), TransportCapabilities::default())
        .context("building the pipeline")?;
    let mut events: Vec<PipelineEvent> = Vec::with_capacity(16);
    let mut scratch = AudioFrame::with_capacity(48_000, 1, 960);
    let silence = AudioFrame::new(vec![0; 320], 16_000, 1)?;
    let mut run = |stream: &str,
                   k: usize,
                   events: &mut Vec<PipelineEvent>,
                   scratch: &mut AudioFrame|
     -> anyhow::Result<()> {
        if aec {
            let far = if k >= 2 { &f16[k - 2] } else { &silence };
            p.feed_aec_reference(stream, far)?;
        }
        p.process_inbound(stream, scratch, events)?;
        Ok(())
    };
    for (k, f) in f48.iter().take(WARMUP).enumerate() {
        scratch.clone_from(f);
        run("warm", k, &mut events, &mut scratch)?;
    }
    events.clear();
    let mut us = Vec::with_capacity(FRAMES);
    let mut n_events = 0;
    for (k, f) in f48.iter().enumerate() {
        scratch.clone_from(f);
        let t = Instant::now();
        run("bench", k, &mut events, &mut scratch)?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        n_events += events
            .iter()
            .filter(|e| matches!(e, PipelineEvent::Vad(_)))
            .count();
        events.clear();
    }
    Ok((stats(us), n_events))
}

/// CPU time (user + system) this thread has used, in microseconds, from
/// `/proc/thread-self/stat` (Linux; `None` elsewhere). Its resolution is one
/// scheduler tick (10 ms), so it is only read around long runs. Unlike wall
/// time it does not count the time the thread waited for a core, which on
/// a shared machine dominates the per-frame means.
fn thread_cpu_us() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI.
    Some((utime + stime) * 10_000.0)
}

/// Mean CPU microseconds per frame of the chain over `passes` runs of all frames.
fn chain_cpu(
    cfg: &AudioPipelineConfig,
    f48: &[AudioFrame],
    f16: &[AudioFrame],
    passes: usize,
) -> anyhow::Result<Option<f64>> {
    let start = thread_cpu_us();
    for _ in 0..passes {
        engine(cfg, f48, f16, true)?;
    }
    let end = thread_cpu_us();
    Ok(match (start, end) {
        (Some(a), Some(b)) => Some((b - a) / ((FRAMES + WARMUP) * passes) as f64),
        _ => None,
    })
}

fn chain() -> anyhow::Result<()> {
    let f48 = frames(&signal(48_000), 48_000);
    let f16 = frames(&signal(16_000), 16_000);
    let cfg: AudioPipelineConfig = serde_json::from_value(json!({
        "resampler": {"internal_sample_rate": 16000},
        "aec": {},
        "agc": {},
        "denoiser": {"provider": "rnnoise"},
        "vad": {"provider": "webrtc"},
        "dtmf": {},
    }))?;
    let (s, events) = engine(&cfg, &f48, &f16, true)?;
    // Per-frame wall times on a busy machine include time spent waiting for
    // a core; the CPU time over several passes is the cost of the work.
    let cpu = chain_cpu(&cfg, &f48, &f16, 4)?;
    let us = cpu.unwrap_or(s.mean);
    let frac = us / 20_000.0;
    let o = json!({
        "workload": "audio_chain",
        "chain": "resample 48k->16k + aec3 + agc + rnnoise + webrtc vad + dtmf",
        "frames": FRAMES,
        "us_per_frame": (us * 100.0).round() / 100.0,
        "wall_us_per_frame": (s.mean * 100.0).round() / 100.0,
        "cpu_us_per_frame": cpu.map(|c| (c * 100.0).round() / 100.0),
        "p50_us": (s.p50 * 100.0).round() / 100.0,
        "p99_us": (s.p99 * 100.0).round() / 100.0,
        "core_fraction_per_session": (frac * 1e6).round() / 1e6,
        "sessions_per_core": (1.0 / frac).floor(),
        "vad_events": events,
        "reference": refs(&[("engine_numpy_agc_vad_48k", 5_218.0), ("engine_linear_agc_vad_48k", 17_433.0)], us, s.p50),
    });
    println!("{o}");
    Ok(())
}
