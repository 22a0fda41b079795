//! `sip_calls`: concurrent phone calls over SIP and RTP at real time, from
//! a real SIP peer (SIPp), against the server side of `voice_calls`
//! (`roomkit-bench voice_server --sip ...`, its own process): every call
//! runs the full inbound chain (resampling, AEC, AGC, RNNoise, VAD, DTMF,
//! the heuristic turn detector) and is answered by the instant fakes.
//!
//! Each SIPp call plays one G.711 RTP stream from a pcap built here: a
//! spoken question (espeak-ng, or a synthetic voiced signal) every
//! `--cycle-ms` (4.5 s, the turn cycle of `voice_calls`' callers) for the
//! length of the run; then it hangs up. After the calls are all up and a
//! warm-up, the server's CPU time and resident memory are read over the
//! measured window; the server's RTP counters say how many packets came
//! too late for the jitter buffer or never came.
//!
//! Options: `--calls N` (100), `--seconds S` measured (30), `--warmup S`
//! (5), `--rate R` calls set up per second (20), `--cycle-ms`, `--signal`,
//! `--without`
//! (stages left out, as in `voice_calls`). Prints one JSON line with
//! `calls`, `cpu_core_percent_per_call`, `rss_bytes_per_call` and
//! `late_packets`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use roomkit_testkit::sipp::{Scenario, Step, g711_packets, write_rtp_pcap};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{
    CLOCK_TICKS_PER_SECOND, Options, cpu_seconds_of, emit, load_average, round1, steal_ticks,
};
use crate::server::{raise_fd_limit, rss_of};

/// Default length of one caller cycle (the question, then silence): the
/// average turn cycle `voice_calls`' callers make (speak, hear the whole
/// answer, pause a second), about 4.5 s, so both workloads put the same
/// speech through the chain per second.
const CYCLE_MS: u64 = 4_500;

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(calls(opts))
}

async fn calls(opts: &Options) -> anyhow::Result<()> {
    let n: usize = opts.num("calls", 100)?;
    let seconds: u64 = opts.num("seconds", 30)?;
    let warmup: u64 = opts.num("warmup", 5)?;
    let rate: usize = opts.num("rate", 20)?;
    let cycle_ms: u64 = opts.num("cycle-ms", CYCLE_MS)?;
    anyhow::ensure!(
        (1..=1000).contains(&n) && seconds >= 1 && rate >= 1 && cycle_ms >= 1000,
        "--calls must be 1..=1000, --seconds and --rate at least 1, --cycle-ms at least 1000"
    );
    anyhow::ensure!(
        std::process::Command::new("sipp")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok(),
        "sipp is not on the PATH (Debian: sip-tester; scripts/setup test installs it)"
    );
    raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("roomkit-bench-sip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // The caller's whole call as one RTP stream: the question, then
    // silence, again and again.
    let (question, source) = crate::voice_calls::utterance(opts)?;
    let mut cycle = question;
    cycle.resize((cycle_ms * 8) as usize, 0);
    let setup_s = n.div_ceil(rate) as u64;
    let total_ms = (setup_s + warmup + seconds + 2) * 1000;
    let cycles = total_ms.div_ceil(cycle_ms) as usize;
    let stream: Vec<i16> = cycle
        .iter()
        .copied()
        .cycle()
        .take(cycle.len() * cycles)
        .collect();
    let pcap = dir.join("call.pcap");
    write_rtp_pcap(&pcap, &g711_packets(&stream, 0x51b), 6000, 7000);
    let steps = vec![
        Step::PlayPcap(pcap.clone()),
        Step::Pause(Duration::from_millis(cycles as u64 * cycle_ms)),
        Step::Bye,
    ];
    let scenario = dir.join("calls.xml");
    std::fs::write(&scenario, Scenario::call("agent", steps).to_xml())?;

    // The server process.
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .args([
            "voice_server",
            "--token",
            "sip-bench",
            "--sip",
            "127.0.0.1:0",
        ])
        .args(["--calls", &n.to_string()])
        .args(["--without", opts.get("without").unwrap_or("")])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} voice_server", exe.display()))?;
    let pid = child.id().context("server pid")?;
    let stdin = child.stdin.take().context("server stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("server stdout")?).lines();
    let mut sip_addr = None;
    while sip_addr.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the server did not start in time")??
            .context("the server exited before listening")?;
        sip_addr = line.strip_prefix("roomkit sip on ").map(str::to_owned);
    }
    let sip_addr = sip_addr.context("no SIP address")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_of(pid);

    // The callers.
    let mut sipp = tokio::process::Command::new("sipp")
        .current_dir(&dir)
        .arg("-sf")
        .arg(&scenario)
        .arg(&sip_addr)
        .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", "0"])
        .args(["-l", &n.to_string(), "-m", &n.to_string()])
        .args(["-r", &rate.to_string(), "-rp", "1000"])
        .args([
            "-nostdin",
            "-timeout",
            &format!("{}s", total_ms / 1000 + 60),
        ])
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("sipp-errors.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sipp")?;

    // Setup and warm-up, then the measured window.
    tokio::time::sleep(Duration::from_secs(setup_s + warmup)).await;
    let load_start = load_average();
    let sipp_pid = sipp.id().unwrap_or(0);
    let sipp_cpu0 = cpu_seconds_of(sipp_pid);
    let (cpu0, steal0) = (cpu_seconds_of(pid), steal_ticks());
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let (cpu1, steal1) = (cpu_seconds_of(pid), steal_ticks());
    let sipp_cores = (cpu_seconds_of(sipp_pid) - sipp_cpu0) / wall;
    let rss_busy = rss_of(pid);
    let load_end = load_average();

    let sipp_status = tokio::time::timeout(Duration::from_secs(120), sipp.wait()).await;
    let sipp_ok = matches!(sipp_status, Ok(Ok(s)) if s.success());
    drop(stdin);
    let mut report = Value::Null;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await
    {
        if line.contains(r#""report":"voice_server""#) {
            report = serde_json::from_str(&line)?;
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let rtp = &report["rtp"];
    let cores = (cpu1 - cpu0) / wall;
    let steal = (steal1 - steal0) as f64 / CLOCK_TICKS_PER_SECOND / wall;
    let out = json!({
        "workload": "sip_calls",
        "calls": n,
        "seconds": seconds,
        "signal": source,
        "cycle_ms": cycle_ms,
        "without": opts.get("without").unwrap_or(""),
        "cpu_core_percent_per_call": (cores * 100.0 / n as f64 * 1000.0).round() / 1000.0,
        "server_cores": (cores * 1000.0).round() / 1000.0,
        "calls_per_core": round1(n as f64 / cores.max(1e-9)),
        "rss_bytes_per_call": rss_busy.saturating_sub(rss_idle) / n as u64,
        "rss_idle_bytes": rss_idle,
        "late_packets": rtp["late_packets"],
        "lost_packets": rtp["lost_packets"],
        "packets_in": rtp["packets_in"],
        "packets_out": rtp["packets_out"],
        "concealed_frames": rtp["concealed_frames"],
        "calls_established": rtp["calls_established"],
        "calls_refused": rtp["calls_refused"],
        "turns": report["turn_metrics"].as_array().map_or(0, Vec::len),
        "sipp_clean_exit": sipp_ok,
        "caller_cores": (sipp_cores * 1000.0).round() / 1000.0,
        "host_steal_core_percent": round1(steal * 100.0),
        "load_average_start": load_start,
        "load_average_end": load_end,
    });
    emit(&out);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
