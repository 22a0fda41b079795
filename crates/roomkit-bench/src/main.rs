//! Benchmark runner: `roomkit-bench <workload>` prints one JSON line per run.

mod audio;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(workload) = args.first() else {
        eprintln!("usage: roomkit-bench <workload> [options]");
        return std::process::ExitCode::from(2);
    };
    match audio::run(workload) {
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
