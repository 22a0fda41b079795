//! A scripted two-sided call exported to a Roark-compatible backend.
//!
//! ```text
//! ROARK_API_KEY=rk_live_... cargo run --release --example roark_call -- --base-url URL --seconds N
//! ```
//!
//! The user speaks a 440 Hz tone and the agent an 880 Hz tone in
//! alternating turns, in real time, with a transcript entry and metrics for
//! each turn and one tool call with its result; then the call is flushed.
//! Exits 0 once call-ended was accepted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use roomkit_analytics::{
    AnalyticsConfig, ApiKey, AudioTap, CallAnalytics, ExportState, Exporter, LocalReportExporter,
    MetricKind, MetricRecord, RoarkConfig, RoarkExporter, Role, Side, StartCall, TranscriptInput,
};

#[derive(Parser, Debug)]
#[command(about = "Play a scripted call through the call observer and the Roark exporter")]
struct Args {
    /// API root of the backend (default: ROARK_BASE_URL, else https://api.roark.ai).
    #[arg(long)]
    base_url: Option<String>,
    /// Length of the call in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Number of turns (alternating user, agent).
    #[arg(long, default_value_t = 4)]
    turns: u64,
    /// Agent id sent with the call.
    #[arg(long, default_value = "roomkit-example-agent")]
    agent_id: String,
    /// Spool directory (default: a fresh directory under the system temp dir).
    #[arg(long)]
    spool: Option<std::path::PathBuf>,
    /// Also write a local call report (JSON and WAV) under this directory.
    #[arg(long)]
    report_dir: Option<std::path::PathBuf>,
    /// Push audio as fast as possible instead of in real time.
    #[arg(long)]
    fast: bool,
}

const RATE: u32 = 24_000;
const FRAME: usize = 480; // 20 ms

fn tone(freq: f64, first_sample: u64, out: &mut [i16]) {
    for (i, s) in out.iter_mut().enumerate() {
        let t = (first_sample + i as u64) as f64 / f64::from(RATE);
        *s = (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "roomkit=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let Some(key) = ApiKey::from_env("ROARK_API_KEY") else {
        bail!("set ROARK_API_KEY to the backend's API key");
    };
    let base_url = args
        .base_url
        .clone()
        .unwrap_or_else(|| RoarkConfig::resolve_base_url(None, &|k| std::env::var(k).ok()));
    let mut exporters: Vec<Arc<dyn Exporter>> = Vec::new();
    let Some(roark) = RoarkExporter::build(RoarkConfig::new(key, base_url))? else {
        eprintln!("Roark export is disabled by ROARK_OBSERVABILITY_ENABLED; nothing to do");
        return Ok(());
    };
    exporters.push(Arc::new(roark.clone()));
    if let Some(dir) = &args.report_dir {
        exporters.push(Arc::new(LocalReportExporter::new(dir)));
    }
    let spool = args
        .spool
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("roark-call-{}", uuid_like())));
    let mut config = AnalyticsConfig::new(&spool);
    config.sample_rate = RATE;
    let analytics = CallAnalytics::new(config, exporters)?;
    let recovered = analytics.recover().await?;
    if recovered.resumed > 0 {
        eprintln!("resumed {} call(s) left in the spool", recovered.resumed);
    }

    let mut start = StartCall::new("example-room", &args.agent_id);
    start.agent_name = Some("RoomKit example agent".into());
    start.agent_prompt = Some("Answer with a tone.".into());
    start.is_test = true;
    let call = analytics.start_call(start);
    if !call.is_enabled() {
        bail!("the call could not be observed (see the log)");
    }
    let tap = call.tap();
    let total_frames = args.seconds.max(1) * u64::from(RATE) / FRAME as u64;
    let turns = args.turns.max(2);
    let frames_per_turn = (total_frames / turns).max(1);
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut buf = vec![0i16; FRAME];
    let silence = vec![0i16; FRAME];
    let ms = |frame: u64| Duration::from_millis(frame * 20);
    for f in 0..total_frames {
        if !args.fast {
            ticker.tick().await;
        }
        let turn = (f / frames_per_turn).min(turns - 1);
        let user_turn = turn.is_multiple_of(2);
        let first = f * FRAME as u64;
        let media = ms(f);
        // The user's microphone is a continuous stream; the agent only
        // plays while it speaks.
        if user_turn {
            tone(440.0, first, &mut buf);
            tap.push(Side::User, &buf, RATE, media);
        } else {
            tap.push(Side::User, &silence, RATE, media);
            tone(880.0, first, &mut buf);
            tap.push(Side::Agent, &buf, RATE, media);
        }
        let last_of_turn = f + 1 == (turn + 1) * frames_per_turn || f + 1 == total_frames;
        if f.is_multiple_of(frames_per_turn) {
            call.speaking(if user_turn {
                Role::User
            } else {
                Role::Assistant
            });
            if !user_turn {
                call.metric(MetricRecord {
                    kind: MetricKind::Llm,
                    ttft: Some(0.31),
                    duration: Some(0.9),
                    prompt_tokens: Some(120),
                    completion_tokens: Some(14),
                    total_tokens: Some(134),
                    ..MetricRecord::default()
                });
                call.metric(MetricRecord {
                    kind: MetricKind::Tts,
                    ttfb: Some(0.18),
                    duration: Some(0.5),
                    streamed: Some(true),
                    ..MetricRecord::default()
                });
                if turn == 1 {
                    call.tool_call(
                        "call_1",
                        "lookup_order",
                        &serde_json::json!({"order_id": "TEST-1234"}),
                    );
                    call.tool_result("call_1", &serde_json::json!({"status": "shipped"}));
                }
            }
        }
        if last_of_turn {
            let start = ms(turn * frames_per_turn);
            let end = ms(f + 1);
            let (role, text) = if user_turn {
                (Role::User, format!("User turn {}", turn / 2 + 1))
            } else {
                (Role::Assistant, format!("Agent turn {}", turn / 2 + 1))
            };
            call.transcript(
                TranscriptInput::new(role, text)
                    .span(start, end)
                    .language("en"),
            );
            if user_turn {
                call.metric(MetricRecord {
                    kind: MetricKind::Eou,
                    end_of_utterance_delay: Some(0.41),
                    transcription_delay: Some(0.12),
                    ..MetricRecord::default()
                });
            }
        }
        if args.fast && f.is_multiple_of(50) {
            tokio::task::yield_now().await;
        }
    }
    call.flush("agent-ended").await;
    let state = call.exported().await;
    let stats = roark.stats();
    eprintln!(
        "call {}: {:?}; chunks uploaded {}, retries {}",
        call.call_id(),
        state,
        stats.chunks_uploaded,
        stats.retries
    );
    analytics.shutdown(Duration::from_secs(1)).await;
    match state {
        ExportState::Completed => {
            println!("call-ended accepted for {}", call.call_id());
            if args.spool.is_none() {
                let _ = std::fs::remove_dir_all(&spool);
            }
            Ok(())
        }
        other => Err(anyhow::anyhow!("export did not complete: {other:?}")).context(
            "the call stays in the spool and is resumed on the next run with the same --spool",
        ),
    }
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}
