//! Smoke test of the `voice_calls` workload: two short calls through the
//! bench binary (which starts its server half as a second process). It
//! checks that the figures are printed and that every call completed a
//! turn; it asserts no timing.

use std::process::Command;

#[test]
fn voice_calls_prints_its_figures_and_every_call_completes() {
    let out = Command::new(env!("CARGO_BIN_EXE_roomkit-bench"))
        .args([
            "voice_calls",
            "--calls",
            "2",
            "--seconds",
            "10",
            "--warmup",
            "0",
        ])
        .output()
        .expect("running roomkit-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "voice_calls failed: {stderr}\n{stdout}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line on stdout: {stdout}\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("the line is JSON");
    assert_eq!(v["workload"], "voice_calls");
    for field in [
        "calls",
        "cpu_core_percent_per_call",
        "rss_bytes_per_call",
        "late_frames",
        "added_latency_p50_ms",
        "added_latency_p99_ms",
        "method",
        "signal",
        "load_average_start",
        "notes",
    ] {
        assert!(v.get(field).is_some(), "no {field} in {line}");
    }
    assert_eq!(v["calls"], 2, "{line}");
    assert_eq!(v["calls_completed"], 2, "not every call completed: {line}");
    assert!(
        v["turns_answered"].as_u64().unwrap_or(0) >= 2,
        "no answered turns: {line}"
    );
}
