//! Entry point of the `roomkit` command: parses the command line and runs
//! the library's subcommands.

use clap::{Parser, Subcommand};
use roomkit::{audio_cmd, serve};

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
    /// Run the RoomKit server: REST API, WebSocket, HTTP hooks and a web chat.
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Audio(args) => audio_cmd::run(args),
        Command::Serve(args) => return serve::main(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("roomkit: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
