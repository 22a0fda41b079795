//! Shared benchmark helpers: options, percentiles, CPU time, RSS, JSON output.

use std::collections::HashMap;

/// `--key value` options after the workload name.
#[derive(Debug, Default, Clone)]
pub struct Options(HashMap<String, String>);

impl Options {
    /// Parses `--key value` pairs.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                anyhow::bail!("unexpected argument {k:?}; options look like --key value");
            };
            let Some(v) = it.next() else {
                anyhow::bail!("option --{key} needs a value");
            };
            map.insert(key.to_owned(), v.clone());
        }
        Ok(Self(map))
    }

    /// A string option.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A numeric option with a default.
    pub fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("option --{key}: {v:?} is not a number")),
        }
    }
}

/// The runtime a pipeline workload runs on, from `--threads N` (default 1:
/// a current-thread runtime, as the reference runs one event loop), and its
/// name for the JSON output.
pub fn runtime(opts: &Options) -> anyhow::Result<(tokio::runtime::Runtime, String)> {
    let threads: usize = opts.num("threads", 1)?;
    if threads <= 1 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return Ok((rt, "current_thread".to_owned()));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    Ok((rt, format!("multi_thread:{threads}")))
}

/// Nearest-rank percentile of a sorted sample (same rule as the reference
/// harness: `idx = ceil(p/100 * n) - 1`, clamped).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let n = sorted.len();
    let idx = ((p / 100.0) * n as f64).ceil() as isize - 1;
    sorted[idx.clamp(0, n as isize - 1) as usize]
}

/// Rounds to one decimal, as the reference reports microseconds.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Process CPU time (user + system) in seconds.
pub fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer we pass; the buffer
    // is a properly aligned, zero-initialised rusage owned by this frame.
    #[allow(unsafe_code)]
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return 0.0;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident set size in bytes, from `/proc/self/status` (VmRSS).
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Latency summary in microseconds from nanosecond samples.
pub fn latency_summary(samples_ns: &mut [u64]) -> serde_json::Value {
    let mut us: Vec<f64> = samples_ns.iter().map(|n| *n as f64 / 1000.0).collect();
    us.sort_by(|a, b| a.total_cmp(b));
    let mean = if us.is_empty() {
        0.0
    } else {
        us.iter().sum::<f64>() / us.len() as f64
    };
    serde_json::json!({
        "p50_us": round1(percentile(&us, 50.0)),
        "p90_us": round1(percentile(&us, 90.0)),
        "p99_us": round1(percentile(&us, 99.0)),
        "max_us": round1(us.last().copied().unwrap_or(0.0)),
        "mean_us": round1(mean),
    })
}

/// Prints one JSON line on stdout.
pub fn emit(value: &serde_json::Value) {
    println!("{value}");
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the
/// machine, so stamps taken in the server and in the callers compare.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the value we own.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system) of process `pid` in seconds, from
/// `/proc/PID/stat` (10 ms ticks).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (in parentheses, may hold spaces).
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 here.
    (tick(11) + tick(12)) / 100.0
}

/// The machine's cumulative CPU time stolen by the hypervisor, in clock
/// ticks (the `steal` column of `/proc/stat`); 0 where it is not reported.
pub fn steal_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The kernel's clock ticks per second, which `/proc/stat` counts in.
pub const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}
