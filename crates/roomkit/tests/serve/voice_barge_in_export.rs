//! A phone call cut by barge-in, exported with call analytics through the
//! real binary: the agent's side of the recording is the answer as the
//! caller heard it (silent from the cut on), and the transcript holds the
//! words heard, not the whole answer. Also: the call report pages answer
//! bad path segments in the contract's terms.
//!
//! Needs espeak-ng and sox, as `voice_twilio`.

use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults};
use serde_json::Value;
use tokio::time::Instant;

use crate::voice_twilio::{
    LONG_ANSWER, deepgram_and_elevenlabs, dial, missing, rms, setup_full, speech, tools_present,
};

const KEY: &str = "rk_live_barge_test";
const TOKEN: &str = "twilio-test-token";
/// The recording's rate (the analytics default).
const RATE: usize = 24_000;

fn right_channel(pcm: &[u8]) -> Vec<i16> {
    pcm.chunks_exact(4)
        .map(|f| i16::from_le_bytes([f[2], f[3]]))
        .collect()
}

fn window(ch: &[i16], from_ms: u64, to_ms: u64) -> &[i16] {
    let at = |ms: u64| (ms as usize * RATE / 1000).min(ch.len());
    &ch[at(from_ms)..at(to_ms)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_barge_in_is_exported_as_heard() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = std::env::temp_dir().join(format!("roomkit-serve-barge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    std::fs::create_dir_all(&spool).unwrap();
    let analytics = format!(
        "[analytics]\nspool_dir = \"{}\"\n\n[analytics.roark]\napi_key_env = \"ROARK_BARGE_KEY\"\nagent_id = \"phone-bot\"\n",
        spool.display()
    );
    let base = fake.base_url();
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let setup = setup_full(
        &stt,
        &tts,
        fakes,
        &analytics,
        &[("ROARK_BARGE_KEY", KEY), ("ROARK_BASE_URL", base.as_str())],
    )
    .await;
    let s = &setup.s;
    let mut caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    caller.say(&speech("what time is it"));

    // A second of the answer plays, then the caller talks over it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut played = 0usize;
    while played < 50 {
        let Some(v) = caller.next(deadline).await else {
            panic!("the answer did not start; log: {}", s.log());
        };
        if v["event"] == "media" {
            played += 1;
        }
    }
    caller.say(&speech("stop please, stop"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let Some(v) = caller.next(deadline).await else {
            panic!("no clear after the barge-in; log: {}", s.log());
        };
        if v["event"] == "clear" {
            break;
        }
    }
    // Hang up before the agent's reply to the interruption (4 s later).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    caller.hang_up().await;

    let mut ended = Vec::new();
    for _ in 0..600 {
        ended = fake
            .accepted_events()
            .into_iter()
            .filter(|e| e["event"] == "call-ended")
            .collect::<Vec<Value>>();
        if !ended.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ended.len(), 1, "log: {}", s.log());
    let e = &ended[0];
    let call_id = e["livekitCallId"].as_str().unwrap().to_owned();

    // The transcript keeps the words heard, and the agent's span is short.
    let t = e["transcript"].as_array().expect("a transcript");
    let agent = t
        .iter()
        .find(|x| x["role"] == "assistant")
        .unwrap_or_else(|| panic!("no agent entry: {t:?}"));
    let heard = agent["content"].as_str().unwrap().trim_end();
    assert!(
        !heard.is_empty() && LONG_ANSWER.starts_with(heard) && heard.len() < LONG_ANSWER.len(),
        "the agent entry is not the cut answer: {agent}"
    );
    let (a0, a1) = (
        agent["audioOffsetMs"].as_u64().unwrap(),
        agent["endAudioOffsetMs"].as_u64().unwrap(),
    );
    // Sixty milliseconds a character at the fake ElevenLabs: the whole
    // answer would take about nine seconds.
    assert!(a1 > a0 + 500 && a1 - a0 < 6000, "agent span {a0}..{a1} ms");

    // The right channel: the answer while it played, silence after the cut.
    let right = right_channel(&fake.stitched(&call_id));
    let total_ms = (right.len() * 1000 / RATE) as u64;
    let during = rms(window(&right, a0 + 100, a1.saturating_sub(100)));
    let after = rms(window(&right, a1 + 200, total_ms));
    println!("agent {a0}..{a1} ms of {total_ms} ms; right rms {during:.0} then {after:.0}");
    assert!(during > 300.0, "no answer on the right (rms {during})");
    assert!(
        total_ms > a1 + 1000,
        "the recording ends at the cut ({total_ms} ms)"
    );
    assert!(
        after < 50.0,
        "the right channel goes on after the cut (rms {after})"
    );
    let _ = std::fs::remove_dir_all(&spool);
}

/// The call report pages answer a path segment that is not UTF-8 like
/// every other path, with 400 `invalid_path` (not a bare `bad_request`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_report_paths_answer_invalid_path() {
    let dir = std::env::temp_dir().join(format!("roomkit-serve-reports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("reports")).unwrap();
    let config = crate::config_file(&format!(
        "[analytics]\nspool_dir = \"{}\"\n\n[analytics.reports]\ndir = \"{}\"\n",
        dir.join("spool").display(),
        dir.join("reports").display()
    ));
    let s = crate::Server::start_with(&["--config", config.to_str().unwrap()], &[]).await;
    for path in ["/call-reports/%FF", "/call-reports/%FF/recording.wav"] {
        let (status, body) = s.call("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_path", "{path}: {body}");
    }
    let (status, body) = s.call("GET", "/call-reports/nope", None).await;
    assert_eq!(status, 404, "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
