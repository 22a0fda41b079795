//! Property tests of the command's parsers of outside input (the CI-time
//! counterpart of the `config_toml` and `wav_reader` fuzz targets): any
//! configuration file loads or fails with a [`ConfigError`], and any WAV
//! file is processed or refused with an error, never a panic, leaving no
//! output behind when refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use clap::Parser;
use proptest::prelude::*;

use crate::audio_cmd::{self, AudioArgs};
use crate::config::{self, ConfigError, Env, Overrides};

struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomkit-fuzz-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn load_text(name: &str, text: &[u8]) -> Result<config::Settings, ConfigError> {
    let path = scratch(name);
    std::fs::write(&path, text).unwrap();
    let r = config::load(Some(&path), &Overrides::default(), &NoEnv);
    let _ = std::fs::remove_file(&path);
    r
}

const VALID: &str = r#"
[server]
addr = "127.0.0.1:0"
rate_limit_per_key = 10

[store]
url = "memory://"

[rooms]
max_chain_depth = 5
timer_resolution_ms = 100
process_timeout_ms = 1000

[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "ai"
type = "ai"
provider = "echo"

[[hooks]]
name = "h"
url = "http://127.0.0.1:9/hook"
trigger = "before_broadcast"
execution = "sync"
"#;

fn toml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        ".{0,10}".prop_map(|s| format!("{s:?}")),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"ai\"".to_owned()),
        Just("\"sms\"".to_owned()),
        Just("\"postgres://\"".to_owned()),
    ]
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    audio: AudioArgs,
}

fn wav(rate: u32, channels: u16, bits: u16, frames: usize) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for i in 0..frames * usize::from(channels) {
        w.write_sample(((i * 37) % 200) as i32 - 100).unwrap();
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

fn process(name: &str, bytes: &[u8], stages: &str, rate: &str) {
    let input = scratch(&format!("{name}.wav"));
    let output = scratch(&format!("{name}-out.wav"));
    let events = scratch(&format!("{name}-events.jsonl"));
    std::fs::write(&input, bytes).unwrap();
    let cli = Cli::try_parse_from([
        "audio",
        "process",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--stages",
        stages,
        "--rate",
        rate,
        "--vad",
        "energy",
        "--quiet",
    ])
    .unwrap();
    match audio_cmd::run(cli.audio) {
        Ok(()) => assert!(output.exists()),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!output.exists(), "a refused input leaves no output");
            assert!(!events.exists(), "a refused input leaves no events");
        }
    }
    for p in [input, output, events] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn the_valid_sample_config_loads() {
    load_text("valid.toml", VALID.as_bytes()).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_bytes_are_a_config_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = load_text("random.toml", &bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn mutated_valid_configs_load_or_name_the_problem(
        line in 0usize..32,
        value in toml_scalar(),
    ) {
        let lines: Vec<&str> = VALID.lines().collect();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            match l.split_once(" = ") {
                Some((k, _)) if i == line % lines.len() => out.push(format!("{k} = {value}")),
                _ => out.push((*l).to_owned()),
            }
        }
        if let Err(e) = load_text("mutated.toml", out.join("\n").as_bytes()) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn mutated_wav_files_are_processed_or_refused(
        (rate, channels, bits) in (
            prop::sample::select(vec![8_000u32, 16_000, 44_100]),
            1u16..3,
            prop::sample::select(vec![8u16, 16, 24, 32]),
        ),
        frames in 0usize..400,
        edits in prop::collection::vec((0usize..64, any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        stages in prop::sample::select(vec!["dtmf", "resample,vad", "agc"]),
    ) {
        let mut bytes = wav(rate, channels, bits, frames);
        for (at, b) in edits {
            if at < bytes.len() {
                bytes[at] = b;
            }
        }
        let keep = cut.index(bytes.len() + 1);
        if keep > 44 {
            bytes.truncate(keep);
        }
        process("mutated", &bytes, stages, "8000");
    }

    #[test]
    fn random_bytes_are_refused_as_wav(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        process("random", &bytes, "dtmf", "16000");
    }
}
