//! A phone call through the real binary with call analytics on: the
//! Twilio call of `voice_twilio` (espeak-ng question, fake Deepgram, fake
//! OpenAI answering, fake ElevenLabs speaking) is exported to a fake Roark
//! as one call, with the caller on the left of the recording and the
//! agent's answer on the right, a transcript of both sides and the turn's
//! metrics, and shown in the local call report.
//!
//! Needs espeak-ng and sox, as `voice_twilio`.

use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults};
use serde_json::Value;
use tokio::time::Instant;

use crate::voice_twilio::{
    LONG_ANSWER, ROOM, deepgram_and_elevenlabs, dial, missing, rms, setup_full, speech,
    tools_present,
};

const KEY: &str = "rk_live_voice_test";
const TOKEN: &str = "twilio-test-token";
/// The recording's rate (the analytics default).
const RATE: usize = 24_000;

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "roomkit-serve-voice-analytics-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn split_stereo(pcm: &[u8]) -> (Vec<i16>, Vec<i16>) {
    assert_eq!(pcm.len() % 4, 0, "whole stereo frames");
    pcm.chunks_exact(4)
        .map(|f| {
            (
                i16::from_le_bytes([f[0], f[1]]),
                i16::from_le_bytes([f[2], f[3]]),
            )
        })
        .unzip()
}

/// Samples of `ch` between two offsets in ms (clamped to the recording).
fn window(ch: &[i16], from_ms: u64, to_ms: u64) -> &[i16] {
    let at = |ms: u64| (ms as usize * RATE / 1000).min(ch.len());
    &ch[at(from_ms)..at(to_ms)]
}

fn of_kind<'a>(events: &'a [Value], event: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_call_is_exported_once_with_both_sides_transcript_and_metrics() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let (spool, reports) = (tmp("spool"), tmp("reports"));
    let analytics = format!(
        r#"
[analytics]
spool_dir = "{}"

[analytics.roark]
api_key_env = "ROARK_VOICE_TEST_KEY"
agent_id = "phone-bot"

[analytics.reports]
dir = "{}"
"#,
        spool.display(),
        reports.display()
    );
    let base = fake.base_url();
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let setup = setup_full(
        &stt,
        &tts,
        fakes,
        &analytics,
        &[
            ("ROARK_VOICE_TEST_KEY", KEY),
            ("ROARK_BASE_URL", base.as_str()),
        ],
    )
    .await;
    let s = &setup.s;

    // The caller: 300 ms of silence, the question, then silence.
    let question = speech("what time is it");
    let question_ms = (question.len() / 8) as u64;
    let mut caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    caller.say(&question);

    // The whole answer plays (it ends with a mark), then the caller hangs up.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut answer = 0usize;
    loop {
        let Some(v) = caller.next(deadline).await else {
            panic!(
                "the answer did not finish playing ({answer} samples); log: {}",
                s.log()
            );
        };
        if v["event"] == "media" {
            answer += 160;
        }
        if v["event"] == "mark" && answer > 8000 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    caller.hang_up().await;

    // One call, started and ended once.
    for _ in 0..600 {
        if !of_kind(&fake.accepted_events(), "call-ended").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything late (a second call) would come within this second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = fake.accepted_events();
    let started = of_kind(&events, "call-started");
    let ended = of_kind(&events, "call-ended");
    assert_eq!(started.len(), 1, "{events:?}; log: {}", s.log());
    assert_eq!(ended.len(), 1, "{events:?}; log: {}", s.log());
    let call_id = started[0]["livekitCallId"].as_str().unwrap().to_owned();
    assert!(call_id.starts_with("vs-MZ0001-"), "{call_id}");
    assert_eq!(started[0]["agentId"], "phone-bot");
    assert_eq!(started[0]["roomName"], ROOM);
    let e = ended[0];
    assert_eq!(e["livekitCallId"], call_id.as_str());
    assert_eq!(e["callEndedReason"], "client-disconnected");
    assert_eq!(e["recordingNumChannels"], 2);
    assert_eq!(e["recordingSampleRate"], RATE);

    // The recording: the caller's speech on the left while the agent is
    // silent, the answer on the right while the caller is silent.
    let (left, right) = split_stereo(&fake.stitched(&call_id));
    let total_ms = (left.len() * 1000 / RATE) as u64;
    println!("recording {total_ms} ms");
    let asked = (400, 300 + question_ms - 100);
    let l = rms(window(&left, asked.0, asked.1));
    let r = rms(window(&right, asked.0, asked.1));
    println!("question: left rms {l:.0}, right rms {r:.0}");
    assert!(l > 500.0, "no caller speech on the left (rms {l})");
    assert!(
        r < 50.0,
        "the agent side is not silent during the question (rms {r})"
    );
    let r = rms(window(&right, 300 + question_ms, total_ms));
    println!("after the question: right rms {r:.0}");
    assert!(
        r > 300.0,
        "no answer on the right after the question (rms {r})"
    );

    // The transcript: the caller's final transcript and the answer as heard.
    let t = e["transcript"].as_array().expect("a transcript");
    let user = t
        .iter()
        .find(|x| x["role"] == "user")
        .unwrap_or_else(|| panic!("no user entry: {t:?}"));
    assert_eq!(user["content"], "what time is it");
    let agent = t
        .iter()
        .find(|x| x["role"] == "assistant")
        .unwrap_or_else(|| panic!("no agent entry: {t:?}"));
    assert!(
        LONG_ANSWER.starts_with(agent["content"].as_str().unwrap().trim_end()),
        "{agent}"
    );
    assert_eq!(
        t.len(),
        2,
        "no room message is doubled into the transcript: {t:?}"
    );
    let span = |x: &Value| {
        (
            x["audioOffsetMs"].as_u64().unwrap(),
            x["endAudioOffsetMs"].as_u64().unwrap(),
        )
    };
    let (u0, u1) = span(user);
    let (a0, a1) = span(agent);
    println!(
        "user {u0}..{u1} ms, agent {a0}..{a1} ms, question sent at 300..{} ms",
        300 + question_ms
    );
    assert!(u1 <= a0, "the answer follows the question: {t:?}");

    // Metrics of the turn.
    let m = e["metrics"].as_array().expect("metrics");
    for kind in ["eou", "stt", "tts"] {
        assert!(
            m.iter().any(|x| x["kind"] == kind),
            "no {kind} metric: {m:?}"
        );
    }
    let eou = m.iter().find(|x| x["kind"] == "eou").unwrap();
    assert!(eou["endOfUtteranceDelay"].as_f64().unwrap() >= 0.0, "{eou}");
    let tts = m.iter().find(|x| x["kind"] == "tts").unwrap();
    assert!(tts["ttfb"].as_f64().unwrap() >= 0.0, "{tts}");

    // The answer on the right while the caller is silent.
    let answered = (a0 + 200, a1.saturating_sub(200));
    assert!(answered.1 > answered.0 + 1000, "answer span {a0}..{a1}");
    let l = rms(window(&left, answered.0, answered.1));
    let r = rms(window(&right, answered.0, answered.1));
    println!("answer: left rms {l:.0}, right rms {r:.0}");
    assert!(r > 500.0, "no answer on the right (rms {r})");
    assert!(
        l < 50.0,
        "the caller side is not silent during the answer (rms {l})"
    );
    // And the answer sits after the question on the recording's own
    // timeline, not at its start.
    let r = rms(window(&right, 0, 300 + question_ms));
    assert!(r < 50.0, "agent audio before the question ended (rms {r})");

    // The local report: both channels' waveform, the transcript on the same
    // timeline, and the page that draws them.
    let mut report = Value::Null;
    for _ in 0..200 {
        let (status, body) = s
            .call("GET", &format!("/call-reports/{call_id}"), None)
            .await;
        if status == 200 {
            report = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wf = &report["waveform"];
    let peak = |lane: &str| {
        wf[lane]
            .as_array()
            .unwrap_or_else(|| panic!("no {lane} waveform: {report}"))
            .iter()
            .filter_map(Value::as_u64)
            .max()
            .unwrap_or(0)
    };
    assert!(peak("user") > 1000 && peak("agent") > 1000, "{wf}");
    assert_eq!(report["transcript"].as_array().map(Vec::len), Some(2));
    let page = s
        .http
        .get(s.url("/calls"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<canvas"),
        "the calls page draws the waveform"
    );
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_dir_all(&reports);
}
