//! `roomkit audio`: run the inbound audio pipeline over WAV files, for debugging calls and tuning pipelines.
//!
//! `roomkit audio process` streams the input through the chosen stages in
//! 20 ms frames and writes the processed audio plus one JSON line per
//! pipeline event. Memory use does not grow with the file's length. Outputs
//! are written under temporary names and only renamed into place when the
//! whole file was processed, so a failed run leaves no output behind.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use roomkit_audio::diarize::DiarizerConfig;
use roomkit_audio::pipeline::{DenoiserChoice, DiarizationChoice, VadChoice};
use roomkit_audio::resample::ChunkResampler;
use roomkit_audio::vad::{EnergyVadConfig, WebRtcVad, WebRtcVadMode};
use roomkit_audio::{
    AudioFormat, AudioFrame, AudioPipeline, AudioPipelineConfig, AudioPipelineContract,
    PipelineEvent, TransportCapabilities,
};

/// Arguments of `roomkit audio`.
#[derive(clap::Args)]
pub struct AudioArgs {
    #[command(subcommand)]
    command: AudioCommand,
}

#[derive(clap::Subcommand)]
enum AudioCommand {
    /// Run the inbound chain over a WAV file and write the result and the events.
    Process(ProcessArgs),
}

/// Which VAD engine `process` uses.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum VadKind {
    /// WebRTC (libfvad), aggressive mode.
    Webrtc,
    /// Energy above the noise floor.
    Energy,
}

#[derive(clap::Args, Debug)]
struct ProcessArgs {
    /// Near-end (caller) audio: 16- or 24-bit integer or 32-bit float WAV, mono or stereo, any rate.
    #[arg(long)]
    input: PathBuf,
    /// Far-end audio played to the caller, used as the echo canceller's reference.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Pipeline configuration (`AudioPipelineConfig` as JSON, or TOML when
    /// the name ends in `.toml`): stage tuning, VAD thresholds, AGC target,
    /// debug taps. Without --stages, the stages it configures are the ones run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stages to run, comma-separated, from: resample, aec, agc, denoise, vad,
    /// dtmf, diarize. Overrides the stages of --config. Default: all but
    /// diarize (aec only when --reference is given).
    #[arg(long, value_delimiter = ',')]
    stages: Option<Vec<String>>,
    /// Internal (and output) sample rate in Hz [default: the config's
    /// resampler rate, else 16000].
    #[arg(long)]
    rate: Option<u32>,
    /// Processed audio (16-bit mono WAV at --rate), exactly as long as the input.
    #[arg(long)]
    output: PathBuf,
    /// Pipeline events, one JSON object per line.
    #[arg(long)]
    events: PathBuf,
    /// VAD engine (overrides the config's) [default: webrtc].
    #[arg(long, value_enum)]
    vad: Option<VadKind>,
    /// Do not print progress lines.
    #[arg(long)]
    quiet: bool,
}

/// Runs `roomkit audio`.
///
/// # Errors
/// A one-line description of what went wrong (unreadable input, bad
/// arguments, write failure); no output file is left behind then.
pub fn run(args: AudioArgs) -> anyhow::Result<()> {
    match args.command {
        AudioCommand::Process(p) => process(&p),
    }
}

const STAGES: [&str; 7] = [
    "resample", "aec", "agc", "denoise", "vad", "dtmf", "diarize",
];

/// Reads an `AudioPipelineConfig` from JSON, or TOML for `*.toml`; errors are one line.
fn load_config(path: &Path) -> anyhow::Result<AudioPipelineConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read config {}: {e}", path.display()))?;
    let one_line = |e: String| e.split_whitespace().collect::<Vec<_>>().join(" ");
    let is_toml = path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("toml"));
    let parsed = if is_toml {
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let at = line.map(|l| format!(" at line {l}")).unwrap_or_default();
            anyhow!(
                "invalid config {}: {}{at}",
                path.display(),
                one_line(e.message().to_owned())
            )
        })?;
        serde_path_to_error::deserialize(table).map_err(|e| {
            let at = e.path().to_string();
            (at, one_line(e.into_inner().message().to_owned()))
        })
    } else {
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            (at, one_line(e.into_inner().to_string()))
        })
    };
    parsed.map_err(|(at, msg)| {
        if at.is_empty() || at == "." {
            anyhow!("invalid config {}: {msg}", path.display())
        } else {
            anyhow!("invalid config {}: {at}: {msg}", path.display())
        }
    })
}

/// The stages a configuration turns on, in `STAGES` order.
fn configured_stages(c: &AudioPipelineConfig) -> Vec<String> {
    let on = [
        c.resampler.is_some(),
        c.aec.is_some(),
        c.agc.is_some(),
        c.denoiser.is_some(),
        c.vad.is_some(),
        c.dtmf.is_some(),
        c.diarization.is_some(),
    ];
    STAGES
        .iter()
        .zip(on)
        .filter(|(_, on)| *on)
        .map(|(s, _)| (*s).to_owned())
        .collect()
}

/// The configuration actually run: exactly `stages`, each with the file's
/// settings when it has them and the defaults otherwise; the pipeline
/// itself never resamples (the input is converted before it).
fn effective_config(
    file: &AudioPipelineConfig,
    stages: &[String],
    vad: Option<VadKind>,
) -> AudioPipelineConfig {
    let has = |name: &str| stages.iter().any(|s| s == name);
    let vad = match vad {
        Some(VadKind::Webrtc) => VadChoice::Webrtc {
            mode: WebRtcVadMode::Aggressive,
        },
        Some(VadKind::Energy) => VadChoice::Energy {
            config: EnergyVadConfig::default(),
        },
        None => file.vad.clone().unwrap_or(VadChoice::Webrtc {
            mode: WebRtcVadMode::Aggressive,
        }),
    };
    AudioPipelineConfig {
        resampler: None,
        aec: has("aec").then(|| file.aec.clone().unwrap_or_default()),
        agc: has("agc").then(|| file.agc.clone().unwrap_or_default()),
        denoiser: has("denoise").then(|| file.denoiser.unwrap_or(DenoiserChoice::Rnnoise)),
        vad: has("vad").then_some(vad),
        vad_config: file.vad_config.clone(),
        dtmf: has("dtmf").then(|| file.dtmf.clone().unwrap_or_default()),
        diarization: has("diarize").then(|| {
            file.diarization
                .clone()
                .unwrap_or_else(|| DiarizationChoice::Builtin(DiarizerConfig::default()))
        }),
        interruption: file.interruption.clone(),
        debug_taps: file.debug_taps.clone(),
    }
}

/// A WAV file read sample by sample as mono floats in [-1, 1].
struct WavSource {
    reader: hound::WavReader<BufReader<File>>,
    channels: usize,
    rate: u32,
    float: bool,
    scale: f32,
    total_frames: u64,
    path: PathBuf,
}

impl WavSource {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let reader = hound::WavReader::open(path)
            .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let spec = reader.spec();
        let float = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 8 | 16 | 24 | 32) => false,
            (hound::SampleFormat::Float, 32) => true,
            (f, b) => bail!(
                "cannot read {}: unsupported sample format {f:?} {b}-bit",
                path.display()
            ),
        };
        if spec.channels == 0 || spec.sample_rate < 8_000 || spec.sample_rate > 192_000 {
            bail!(
                "cannot read {}: unsupported layout ({} channels at {} Hz)",
                path.display(),
                spec.channels,
                spec.sample_rate
            );
        }
        let scale = if float {
            1.0
        } else {
            1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32
        };
        Ok(Self {
            total_frames: u64::from(reader.duration()),
            reader,
            channels: usize::from(spec.channels),
            rate: spec.sample_rate,
            float,
            scale,
            path: path.to_owned(),
        })
    }

    /// Appends up to `frames` mono samples to `out`; returns how many were read.
    fn read(&mut self, frames: usize, out: &mut Vec<f32>) -> anyhow::Result<usize> {
        let ch = self.channels;
        let mut got = 0;
        let mut acc = 0f32;
        let mut n = 0usize;
        let path = &self.path;
        let err = |e: hound::Error| anyhow!("cannot read {}: {e}", path.display());
        if self.float {
            for s in self.reader.samples::<f32>() {
                acc += s.map_err(err)?;
                n += 1;
                if n == ch {
                    out.push(acc / ch as f32);
                    acc = 0.0;
                    n = 0;
                    got += 1;
                    if got == frames {
                        break;
                    }
                }
            }
        } else {
            let scale = self.scale;
            for s in self.reader.samples::<i32>() {
                acc += s.map_err(err)? as f32 * scale;
                n += 1;
                if n == ch {
                    out.push(acc / ch as f32);
                    acc = 0.0;
                    n = 0;
                    got += 1;
                    if got == frames {
                        break;
                    }
                }
            }
        }
        Ok(got)
    }
}

/// Turns a source at any rate into 20 ms frames at the internal rate, with
/// the resampler's delay removed so frame times match the input's.
struct FrameSource {
    src: WavSource,
    resampler: Option<ChunkResampler>,
    chunk: Vec<f32>,
    resampled: Vec<f32>,
    fifo: std::collections::VecDeque<f32>,
    skip: usize,
    exhausted: bool,
    flush_left: usize,
    frame_len: usize,
    emitted: u64,
    expected: u64,
    /// How many samples of the last frame lie within the input (the rest is padding).
    valid: usize,
}

impl FrameSource {
    fn new(src: WavSource, rate: u32, allow_resample: bool) -> anyhow::Result<Self> {
        let frame_len = rate as usize / 50;
        let (resampler, skip) = if src.rate == rate {
            (None, 0)
        } else {
            if !allow_resample {
                bail!(
                    "{} is {} Hz but the pipeline runs at {rate} Hz: add the resample stage or pass --rate {}",
                    src.path.display(),
                    src.rate,
                    src.rate
                );
            }
            let r = ChunkResampler::new(src.rate, rate, src.rate as usize / 50)
                .map_err(|e| anyhow!("cannot resample {}: {e}", src.path.display()))?;
            let skip = (r.delay_ms() * f64::from(rate) / 1000.0).round() as usize;
            (Some(r), skip)
        };
        // The input's length at the internal rate, rounded to the nearest sample.
        let expected =
            (src.total_frames * u64::from(rate) + u64::from(src.rate) / 2) / u64::from(src.rate);
        let out_cap = resampler.as_ref().map_or(0, ChunkResampler::output_len);
        Ok(Self {
            src,
            chunk: Vec::with_capacity(8192),
            resampled: vec![0.0; out_cap.max(1)],
            fifo: std::collections::VecDeque::with_capacity(frame_len * 8 + out_cap),
            flush_left: skip,
            resampler,
            skip,
            exhausted: false,
            frame_len,
            emitted: 0,
            expected,
            valid: 0,
        })
    }

    /// Fills `frame` with the next 20 ms; false at the end of the input.
    fn next(&mut self, frame: &mut AudioFrame, rate: u32) -> anyhow::Result<bool> {
        while self.fifo.len() < self.frame_len && !(self.exhausted && self.flush_left == 0) {
            self.chunk.clear();
            let want = self
                .resampler
                .as_ref()
                .map_or(self.frame_len, ChunkResampler::input_len);
            let got = if self.exhausted {
                0
            } else {
                self.src.read(want, &mut self.chunk)?
            };
            if got < want {
                self.exhausted = true;
            }
            match self.resampler.as_mut() {
                Some(r) => {
                    if got == 0 && self.flush_left == 0 {
                        break;
                    }
                    self.chunk.resize(want, 0.0);
                    let n = r.process(&self.chunk, &mut self.resampled)?;
                    let mut out = &self.resampled[..n];
                    if self.skip > 0 {
                        let s = self.skip.min(out.len());
                        out = &out[s..];
                        self.skip -= s;
                    }
                    if got < want {
                        self.flush_left = self.flush_left.saturating_sub(n);
                    }
                    self.fifo.extend(out.iter().copied());
                }
                None => {
                    self.flush_left = 0;
                    self.fifo.extend(self.chunk.iter().copied());
                }
            }
        }
        // Never emit past the input's length; the last frame is padded to a
        // whole frame for the stages, and `valid` says how much of it is real.
        if self.fifo.is_empty() || self.emitted >= self.expected {
            return Ok(false);
        }
        frame.samples.clear();
        for _ in 0..self.frame_len {
            let x = self.fifo.pop_front().unwrap_or(0.0);
            frame
                .samples
                .push((x * 32768.0).round().clamp(-32768.0, 32767.0) as i16);
        }
        frame.sample_rate = rate;
        frame.channels = 1;
        frame.timestamp_ms = Some(self.emitted as f64 * 1000.0 / f64::from(rate));
        frame.metadata.clear();
        self.valid = usize::try_from(self.expected - self.emitted)
            .unwrap_or(usize::MAX)
            .min(self.frame_len);
        self.emitted += self.frame_len as u64;
        Ok(true)
    }
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

fn process(args: &ProcessArgs) -> anyhow::Result<()> {
    let file = args.config.as_deref().map(load_config).transpose()?;
    let stages: Vec<String> = match (&args.stages, &file) {
        (Some(list), _) => list
            .iter()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(c)) => configured_stages(c),
        (None, None) => STAGES
            .iter()
            .filter(|s| **s != "aec" || args.reference.is_some())
            .filter(|s| **s != "diarize")
            .map(|s| (*s).to_owned())
            .collect(),
    };
    for s in &stages {
        if !STAGES.contains(&s.as_str()) {
            bail!("unknown stage {s:?} (choose from {})", STAGES.join(", "));
        }
    }
    let has = |name: &str| stages.iter().any(|s| s == name);
    if has("aec") && args.reference.is_none() {
        bail!("the aec stage needs --reference far.wav");
    }
    let rate = args
        .rate
        .or_else(|| {
            file.as_ref()
                .and_then(|c| c.resampler.as_ref())
                .map(|r| r.internal_sample_rate)
        })
        .unwrap_or(16_000);
    if ![8_000, 16_000, 24_000, 32_000, 48_000].contains(&rate) {
        bail!("--rate must be 8000, 16000, 24000, 32000 or 48000");
    }
    let config = effective_config(&file.unwrap_or_default(), &stages, args.vad);
    if matches!(config.vad, Some(VadChoice::Webrtc { .. })) && !WebRtcVad::supports_rate(rate) {
        bail!("the WebRTC VAD cannot run at {rate} Hz; use --vad energy or another --rate");
    }
    // Open every input before creating any output.
    let near = WavSource::open(&args.input)?;
    let far = args.reference.as_deref().map(WavSource::open).transpose()?;
    let total_s = near.total_frames as f64 / f64::from(near.rate);
    let mut near = FrameSource::new(near, rate, has("resample"))?;
    let mut far = match far {
        Some(f) if has("aec") => Some(FrameSource::new(f, rate, has("resample"))?),
        _ => None,
    };

    let mut pipeline = AudioPipeline::from_config(
        &config,
        AudioPipelineContract::uniform(AudioFormat::pcm_mono(rate)),
        TransportCapabilities::default(),
    )
    .map_err(|e| anyhow!("{e}"))?;

    let out_tmp = partial(&args.output);
    let ev_tmp = partial(&args.events);
    let result = run_frames(
        args,
        rate,
        &mut pipeline,
        &mut near,
        far.as_mut(),
        &out_tmp,
        &ev_tmp,
        total_s,
    );
    match result {
        Ok((samples, events)) => {
            std::fs::rename(&out_tmp, &args.output)
                .with_context(|| format!("cannot write {}", args.output.display()))?;
            std::fs::rename(&ev_tmp, &args.events)
                .with_context(|| format!("cannot write {}", args.events.display()))?;
            if !args.quiet {
                eprintln!(
                    "wrote {} ({:.1} s at {rate} Hz) and {} events to {}",
                    args.output.display(),
                    samples as f64 / f64::from(rate),
                    events,
                    args.events.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            std::fs::remove_file(&out_tmp).ok();
            std::fs::remove_file(&ev_tmp).ok();
            Err(e)
        }
    }
}

/// Runs every frame; returns the samples written and the events written.
#[allow(clippy::too_many_arguments)]
fn run_frames(
    args: &ProcessArgs,
    rate: u32,
    pipeline: &mut AudioPipeline,
    near: &mut FrameSource,
    mut far: Option<&mut FrameSource>,
    out_tmp: &Path,
    ev_tmp: &Path,
    total_s: f64,
) -> anyhow::Result<(u64, u64)> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(out_tmp, spec)
        .map_err(|e| anyhow!("cannot write {}: {e}", args.output.display()))?;
    let ev_file =
        File::create(ev_tmp).map_err(|e| anyhow!("cannot write {}: {e}", args.events.display()))?;
    let mut ev_out = BufWriter::new(ev_file);
    let mut frame = AudioFrame::with_capacity(rate, 1, rate as usize / 50);
    let mut reference = AudioFrame::with_capacity(rate, 1, rate as usize / 50);
    let mut events: Vec<PipelineEvent> = Vec::with_capacity(8);
    let mut n_frames = 0u64;
    let mut n_samples = 0u64;
    let mut n_events = 0u64;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_tenth = 0u64;
    let show_progress = !args.quiet && total_s > 60.0;
    let stream = "input";
    let write_events = |events: &mut Vec<PipelineEvent>,
                        out: &mut BufWriter<File>,
                        n: &mut u64|
     -> anyhow::Result<()> {
        for ev in events.drain(..) {
            writeln!(out, "{}", ev.to_json_line())
                .map_err(|e| anyhow!("cannot write {}: {e}", args.events.display()))?;
            *n += 1;
        }
        Ok(())
    };
    while near.next(&mut frame, rate)? {
        if let Some(f) = far.as_deref_mut() {
            if f.next(&mut reference, rate)? {
                pipeline.feed_aec_reference(stream, &reference)?;
            } else {
                // The far end ended: keep feeding silence so the canceller stays in step.
                reference.samples.clear();
                reference.samples.resize(rate as usize / 50, 0);
                reference.sample_rate = rate;
                pipeline.feed_aec_reference(stream, &reference)?;
            }
        }
        pipeline.process_inbound(stream, &mut frame, &mut events)?;
        // The output keeps the input's exact length: the padding of the last frame is not written.
        let keep = near.valid.min(frame.samples.len());
        n_samples += keep as u64;
        let mut w = wav.get_i16_writer(keep as u32);
        for &s in &frame.samples[..keep] {
            w.write_sample(s);
        }
        w.flush()
            .map_err(|e| anyhow!("cannot write {}: {e}", args.output.display()))?;
        write_events(&mut events, &mut ev_out, &mut n_events)?;
        n_frames += 1;
        // Long files report every tenth of the way, and at least every 5 s.
        let done = n_frames as f64 * 0.02;
        let tenth = (10.0 * done / total_s) as u64;
        if show_progress && (tenth > last_tenth || last_report.elapsed().as_secs_f64() >= 5.0) {
            last_report = Instant::now();
            last_tenth = tenth;
            let speed = done / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "progress: {:.0} of {:.0} s ({:.0}%), {:.0}x real time",
                done,
                total_s,
                100.0 * done / total_s,
                speed
            );
        }
    }
    pipeline.end_stream(stream, &mut events)?;
    write_events(&mut events, &mut ev_out, &mut n_events)?;
    ev_out
        .flush()
        .map_err(|e| anyhow!("cannot write {}: {e}", args.events.display()))?;
    wav.finalize()
        .map_err(|e| anyhow!("cannot write {}: {e}", args.output.display()))?;
    Ok((n_samples, n_events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("roomkit-audio-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// Silence, DTMF "5" (100 ms) at 1.0 s, silence, a 1.2 s voiced burst at 2.0 s, silence.
    fn signal(rate: u32) -> Vec<f32> {
        let n = rate as usize * 5;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let w = |f: f32| (2.0 * std::f32::consts::PI * f * t).sin();
                if (1.0..1.1).contains(&t) {
                    0.25 * (w(770.0) + w(1336.0))
                } else if (2.0..3.2).contains(&t) {
                    let env = 0.6 + 0.4 * w(4.0);
                    0.2 * env * (w(180.0) + 0.5 * w(360.0) + 0.3 * w(720.0) + 0.2 * w(1440.0))
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn write(path: &Path, rate: u32, channels: u16, bits: u16, float: bool) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for x in signal(rate) {
            for _ in 0..channels {
                if float {
                    w.write_sample(x).unwrap();
                } else {
                    let scale = (1i32 << (bits - 1)) as f32 - 1.0;
                    w.write_sample((x * scale) as i32).unwrap();
                }
            }
        }
        w.finalize().unwrap();
    }

    fn args(input: &Path, output: &Path, events: &Path) -> ProcessArgs {
        ProcessArgs {
            input: input.to_owned(),
            reference: None,
            config: None,
            stages: None,
            rate: None,
            output: output.to_owned(),
            events: events.to_owned(),
            vad: None,
            quiet: true,
        }
    }

    #[test]
    fn processes_common_wav_formats_into_audio_and_events() {
        for (i, (rate, ch, bits, float)) in [
            (44_100, 2, 16, false),
            (48_000, 1, 24, false),
            (22_050, 1, 32, true),
            (16_000, 1, 16, false),
        ]
        .into_iter()
        .enumerate()
        {
            let input = tmp(&format!("in{i}.wav"));
            let output = tmp(&format!("out{i}.wav"));
            let events = tmp(&format!("ev{i}.jsonl"));
            write(&input, rate, ch, bits, float);
            process(&args(&input, &output, &events)).unwrap();
            let out = hound::WavReader::open(&output).unwrap();
            assert_eq!((out.spec().sample_rate, out.spec().channels), (16_000, 1));
            assert!(
                (out.duration() as i64 - 80_000).abs() <= 320,
                "{rate} Hz: {} samples",
                out.duration()
            );
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let dtmf: Vec<_> = lines.iter().filter(|l| l["type"] == "dtmf").collect();
            assert_eq!(dtmf.len(), 1, "{rate} Hz: {lines:?}");
            assert_eq!(dtmf[0]["digit"], "5");
            assert!(
                (dtmf[0]["t_ms"].as_f64().unwrap() - 1000.0).abs() < 5.0,
                "{lines:?}"
            );
            assert!(
                (dtmf[0]["duration_ms"].as_f64().unwrap() - 100.0).abs() < 5.0,
                "{lines:?}"
            );
            let start = lines.iter().find(|l| l["type"] == "speech_start").unwrap();
            let end = lines.iter().find(|l| l["type"] == "speech_end").unwrap();
            assert!(
                (start["t_ms"].as_f64().unwrap() - 2000.0).abs() <= 60.0,
                "{rate} Hz: {lines:?}"
            );
            assert!(
                (end["t_ms"].as_f64().unwrap() - 3200.0).abs() <= 200.0,
                "{rate} Hz: {lines:?}"
            );
        }
    }

    #[test]
    fn unreadable_input_fails_with_one_line_and_no_output() {
        let input = tmp("garbage.wav");
        std::fs::write(&input, b"this is not a wav file").unwrap();
        let output = tmp("never.wav");
        let events = tmp("never.jsonl");
        let err = process(&args(&input, &output, &events)).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("cannot read"), "{text}");
        assert!(!text.contains('\n'));
        assert!(!output.exists() && !events.exists());
        assert!(!partial(&output).exists() && !partial(&events).exists());
        // Asking for AEC without a reference is refused before anything is written.
        let mut a = args(&tmp("missing.wav"), &output, &events);
        a.stages = Some(vec!["aec".into()]);
        assert!(process(&a).is_err());
        assert!(!output.exists());
    }
}
