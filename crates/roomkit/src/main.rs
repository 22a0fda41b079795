//! Entry point of the `roomkit` command.

mod audio_cmd;

use clap::{Parser, Subcommand};

/// RoomKit: multi-channel conversations between people, AI agents and programs.
#[derive(Parser)]
#[command(name = "roomkit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Audio tools for debugging calls and tuning pipelines.
    Audio(audio_cmd::AudioArgs),
    /// Run the quickstart: a room with two WebSocket-like channels and an echo agent.
    Quickstart,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Audio(args) => audio_cmd::run(args),
        Command::Quickstart => quickstart(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("roomkit: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn quickstart() -> anyhow::Result<()> {
    anyhow::bail!("quickstart is not available yet")
}
