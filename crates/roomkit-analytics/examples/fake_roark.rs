//! A fake Roark backend on loopback, to try the `roark_call` example
//! without an account:
//!
//! ```text
//! cargo run --example fake_roark --features roomkit-analytics/fake-server -- --port 8787 --api-key rk_test
//! ```
//!
//! It prints one line per request (method, path, status) and, on Ctrl-C, a
//! summary of the calls it received.

use std::time::Duration;

use clap::Parser;
use roomkit_analytics::fake::{FakeRoark, Faults};

#[derive(Parser, Debug)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8787)]
    port: u16,
    /// The API key to accept.
    #[arg(long, default_value = "rk_test")]
    api_key: String,
    /// Answer every n-th request with 503 (0: never).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = FakeRoark::start_on(
        ([127, 0, 0, 1], args.port).into(),
        &args.api_key,
        Faults {
            fail_every: args.fail_every,
            ..Faults::default()
        },
    )
    .await?;
    println!("fake Roark backend on {}", fake.base_url());
    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let reqs = fake.requests();
                for r in &reqs[seen..] {
                    let event = r.json().and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned));
                    println!("{} {} -> {} {}", r.method, r.path.split('?').next().unwrap_or(""), r.status, event.unwrap_or_default());
                }
                seen = reqs.len();
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for e in fake.accepted_events() {
        println!(
            "{} {}",
            e["event"].as_str().unwrap_or("?"),
            e["livekitCallId"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
