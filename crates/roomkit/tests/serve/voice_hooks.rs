//! Voice hooks of `roomkit serve` as HTTP hooks: an `on_transcription`
//! hook answering `modify` with a `text` changes what the caller's message
//! says in the room, and one answering `block` keeps the utterance out,
//! on a Twilio call through the real binary (fake Deepgram hears, fake
//! ElevenLabs speaks). Also: text a person types into the room's web chat
//! during the call is spoken to the caller.
//!
//! Needs espeak-ng and sox for the caller's speech; without them it says
//! so and skips, except under CI (`CI` set), where it fails.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::voice_twilio::{
    ROOM, deepgram_and_elevenlabs, dial, missing, setup_full, speech, tools_present,
};

/// The Twilio auth token `setup_full` gives the server.
const TOKEN: &str = "twilio-test-token";

/// An HTTP hook receiver: `on_transcription` is answered with `answer`
/// (the text it got is available as `{text}` in `modify`), everything
/// else with `allow`; every request is kept.
async fn hook_server(
    block: bool,
) -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<Value>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(body.clone());
                if body["trigger"] != "on_transcription" {
                    return axum::Json(json!({"action": "allow"}));
                }
                if block {
                    return axum::Json(json!({"action": "block", "reason": "not on this line"}));
                }
                let heard = body["payload"].as_str().unwrap_or_default();
                axum::Json(json!({"action": "modify", "text": format!("[fixed] {heard}")}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen, task)
}

async fn call_with_hook(block: bool) -> Option<(Vec<Value>, Vec<Value>)> {
    if !tools_present() {
        missing("espeak-ng and sox are needed to make the caller's speech");
        return None;
    }
    let (hook, seen, _task) = hook_server(block).await;
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let extra = format!(
        r#"
[[hooks]]
name = "stt-fix"
trigger = "on_transcription"
url = "http://{hook}/hook"
"#
    );
    let setup = setup_full(&stt, &tts, fakes, &extra, &[]).await;
    let s = &setup.s;
    let caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    caller.say(&speech("what time is it"));
    caller.say(&vec![0; 8000]);
    // Wait until the hook was asked and the call had time to commit.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut timeline = Vec::new();
    while Instant::now() < deadline {
        timeline = s.timeline(ROOM).await;
        let asked = seen
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["trigger"] == "on_transcription");
        let committed = timeline
            .iter()
            .any(|e| e["source"]["channel_id"] == "phone" && e["content"]["type"] == "text");
        if asked && (committed || block) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            timeline = s.timeline(ROOM).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    caller.player.abort();
    let seen = seen.lock().unwrap().clone();
    Some((timeline, seen))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_on_transcription_hook_can_modify_the_callers_words() {
    let Some((timeline, seen)) = call_with_hook(false).await else {
        return;
    };
    let asked: Vec<&Value> = seen
        .iter()
        .filter(|b| b["trigger"] == "on_transcription")
        .collect();
    assert!(!asked.is_empty(), "the hook was not called: {seen:?}");
    assert_eq!(asked[0]["payload"], "what time is it", "{:?}", asked[0]);
    let said: Vec<&str> = timeline
        .iter()
        .filter(|e| e["source"]["channel_id"] == "phone")
        .filter_map(|e| e["content"]["text"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(
        said,
        ["[fixed] what time is it"],
        "the hook's text is not what the caller said in the room: {timeline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_on_transcription_hook_can_block_the_utterance() {
    let Some((timeline, seen)) = call_with_hook(true).await else {
        return;
    };
    assert!(
        seen.iter().any(|b| b["trigger"] == "on_transcription"),
        "the hook was not called: {seen:?}"
    );
    assert!(
        !timeline.iter().any(|e| e["source"]["channel_id"] == "phone"
            && e["content"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("what time"))),
        "a blocked utterance reached the room: {timeline:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_typed_in_the_web_chat_is_spoken_to_the_caller() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let setup = setup_full(&stt, &tts, fakes, "", &[]).await;
    let s = &setup.s;
    let mut caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    // The call has joined the room once its session_started is stored.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let joined = s.timeline(ROOM).await.iter().any(|e| {
            e["source"]["channel_id"] == "phone" && e["content"]["code"] == "session_started"
        });
        if joined {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call did not join; log: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.post_text(
        ROOM,
        "web",
        "Your table is ready, please come to the front desk.",
    )
    .await;
    let mut audio = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while audio.len() < 8000 {
        let Some(v) = caller.next(deadline).await else {
            break;
        };
        if v["event"] == "media" {
            audio.extend(
                roomkit_voice::twilio::decode_payload(v["media"]["payload"].as_str().unwrap())
                    .unwrap(),
            );
        }
    }
    assert!(
        audio.len() >= 8000 && crate::voice_twilio::rms(&audio) > 1000.0,
        "the typed text was not spoken ({} samples); log: {}",
        audio.len(),
        s.log()
    );
    caller.player.abort();
}
