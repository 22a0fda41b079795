//! Benchmark runner: `roomkit-bench <workload> [--key value ...]` prints one
//! JSON line per run on stdout (logs go to stderr).
//!
//! Workloads are grouped by module: `inbound` (core pipeline and memory),
//! `audio` (per-frame DSP), `store` (SQL stores), `server` (load through the
//! real server binary), `voice_calls` (concurrent phone calls against the
//! server with instant fake vendors).

// The same allocator the `roomkit` binary ships with, so figures match.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod ai;
mod analytics;
mod audio;
mod common;
mod inbound;
mod server;
mod sip_calls;
mod soak;
mod store;
mod voice_calls;
mod voice_server;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(workload) = args.first().cloned() else {
        eprintln!("usage: roomkit-bench <workload> [--key value ...]");
        eprintln!(
            "workloads: inbound_single inbound_multi memory_rooms audio_stages audio_chain store_append store_page_read server_ws_load server_soak ai_single ai_multi analytics_call analytics_export voice_calls voice_memory sip_calls"
        );
        return std::process::ExitCode::from(2);
    };
    let opts = match common::Options::parse(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("roomkit-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = inbound::run(&workload, &opts)
        .and_then(|done| {
            if done {
                Ok(true)
            } else {
                audio::run(&workload)
            }
        })
        .and_then(|done| {
            if done {
                Ok(true)
            } else {
                store::run(&workload, &opts)
            }
        })
        .and_then(|done| {
            if done {
                Ok(true)
            } else {
                server::run(&workload, &opts)
            }
        })
        .and_then(|done| {
            if done {
                Ok(true)
            } else {
                soak::run(&workload, &opts)
            }
        })
        .and_then(|done| {
            if done {
                Ok(true)
            } else {
                ai::run(&workload, &opts)
            }
        })
        .and_then(|done| {
            if done {
                Ok(true)
            } else {
                analytics::run(&workload, &opts)
            }
        })
        .and_then(|done| {
            if done {
                Ok(true)
            } else {
                voice_calls::run(&workload, &opts)
            }
        })
        .and_then(|done| {
            if done || workload != "sip_calls" {
                Ok(done)
            } else {
                sip_calls::run(&opts).map(|()| true)
            }
        });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("unknown workload {workload:?}");
            std::process::ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("roomkit-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
