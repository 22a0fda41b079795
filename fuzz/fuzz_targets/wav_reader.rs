//! WAV input of `roomkit audio process`: the input is written to a file
//! and run through the command's own code (the `roomkit` library's
//! `audio_cmd`) with cheap stages. Every outcome is
//! success or an error, and a failed run leaves no output behind.

#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use roomkit::audio_cmd;
use roomkit_fuzz::scratch_dir;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    audio: audio_cmd::AudioArgs,
}

const STAGE_SETS: [&str; 4] = ["dtmf", "resample,vad", "agc", "resample,dtmf"];
const RATES: [&str; 2] = ["8000", "16000"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, wav)) = data.split_first() else {
        return;
    };
    let dir = scratch_dir();
    let input = dir.join("in.wav");
    let output = dir.join("out.wav");
    let events = dir.join("events.jsonl");
    if std::fs::write(&input, wav).is_err() {
        return;
    }
    let stages = STAGE_SETS[usize::from(selector) % STAGE_SETS.len()];
    let rate = RATES[usize::from(selector >> 4) % RATES.len()];
    let Ok(cli) = Cli::try_parse_from([
        "roomkit-audio",
        "process",
        "--input",
        input.to_str().unwrap_or_default(),
        "--output",
        output.to_str().unwrap_or_default(),
        "--events",
        events.to_str().unwrap_or_default(),
        "--stages",
        stages,
        "--rate",
        rate,
        "--vad",
        "energy",
        "--quiet",
    ]) else {
        return;
    };
    if audio_cmd::run(cli.audio).is_err() {
        assert!(!output.exists(), "a failed run left its output behind");
    }
    let _ = std::fs::remove_file(&output);
    let _ = std::fs::remove_file(&events);
});
