//! `examples/voice-offline.toml`, the voice agent with no cloud key: the
//! server starts on it and serves the web chat, and a Twilio call into a
//! room with the echo agent gets a spoken answer (pocketsphinx hears the
//! 8 kHz phone audio poorly, but whatever it hears is answered).
//!
//! Needs a build with the offline speech providers (`scripts/test` turns
//! them on), and espeak-ng and sox for the caller's speech. Without them it
//! says so and skips, except under CI (`CI` set), where it fails.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::Server;
use crate::voice_twilio::{ROOM, dial, missing, rms, speech, tools_present};

const TOKEN: &str = "offline-example-token";

fn example() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/voice-offline.toml");
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_voice_example_serves_the_chat_and_answers_a_call() {
    let offline = roomkit_voice::registry::STT_PROVIDERS.contains(&"pocketsphinx")
        && roomkit_voice::registry::TTS_PROVIDERS.contains(&"espeak");
    if !offline {
        return missing(
            "this build has no offline speech providers (run with --features roomkit/espeak,roomkit/pocketsphinx or roomkit-voice's, as scripts/test does)",
        );
    }
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let config = example();
    let s = Server::start_with(&["--config", &config], &[("TWILIO_AUTH_TOKEN", TOKEN)]).await;

    let page = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<html") || html.contains("<!doctype") || html.contains("<!DOCTYPE"),
        "{html}"
    );

    s.ok("POST", "/rooms", Some(json!({"id": ROOM}))).await;
    for ch in ["web", "phone", "bot"] {
        s.ok(
            "POST",
            &format!("/rooms/{ROOM}/channels"),
            Some(json!({"channel_id": ch})),
        )
        .await;
    }
    let mut caller = dial(&s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    caller.say(&speech("hello robot"));
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while answer.len() < 8000 {
        let Some(v) = caller.next(deadline).await else {
            break;
        };
        if v["event"] == "media" {
            answer.extend(
                roomkit_voice::twilio::decode_payload(v["media"]["payload"].as_str().unwrap())
                    .unwrap(),
            );
        }
    }
    let timeline = s.timeline(ROOM).await;
    let heard: Vec<&str> = timeline
        .iter()
        .filter(|e| e["source"]["channel_id"] == "phone")
        .filter_map(|e| e["content"]["text"].as_str())
        .collect();
    println!("pocketsphinx heard the 8 kHz call as {heard:?}");
    assert!(
        answer.len() >= 8000,
        "less than a second of spoken answer ({} samples); heard {heard:?}; log: {}",
        answer.len(),
        s.log()
    );
    let level = rms(&answer);
    println!("answer rms {level:.0}");
    assert!(
        level > 500.0,
        "the answer audio is near silence (rms {level})"
    );
    assert!(
        timeline.iter().any(|e| e["source"]["channel_id"] == "bot"),
        "the echo agent's answer is not stored: {timeline:?}"
    );
    caller.player.abort();
}

/// The README shows a newcomer how to run the example: the command, the
/// address, the browser page, the Twilio webhook and its token variable,
/// and that phone audio is heard poorly by the offline model.
#[test]
fn the_readme_shows_how_to_run_the_offline_voice_example() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    for needle in [
        "--features espeak,pocketsphinx",
        "serve --config examples/voice-offline.toml",
        "--addr",
        "/webhooks/voice/twilio",
        "TWILIO_AUTH_TOKEN",
        "wideband",
    ] {
        assert!(
            readme.contains(needle),
            "the README does not say {needle:?}"
        );
    }
    let example = std::fs::read_to_string(example()).unwrap();
    assert!(
        example.contains("auth_token_env = \"TWILIO_AUTH_TOKEN\""),
        "the example's token variable changed; update the README"
    );
}

/// A Twilio call to the example's plain webhook (no `room_id`, as a
/// number's voice webhook is usually set) gets a room with the agent in
/// it, so the caller is answered rather than talking to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_the_plain_webhook_gets_the_agent() {
    use futures::SinkExt;
    use roomkit_channels::sms::twilio::signature;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let offline = roomkit_voice::registry::STT_PROVIDERS.contains(&"pocketsphinx")
        && roomkit_voice::registry::TTS_PROVIDERS.contains(&"espeak");
    if !offline {
        return missing(
            "this build has no offline speech providers (run with --features roomkit/espeak,roomkit/pocketsphinx or roomkit-voice's, as scripts/test does)",
        );
    }
    let config = example();
    let s = Server::start_with(&["--config", &config], &[("TWILIO_AUTH_TOKEN", TOKEN)]).await;
    let webhook = s.url("/webhooks/voice/twilio");
    let form = vec![
        ("CallSid".to_owned(), "CA0077".to_owned()),
        ("From".to_owned(), "+15550007777".to_owned()),
        ("To".to_owned(), "+15559990000".to_owned()),
    ];
    let resp = s
        .http
        .post(&webhook)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature(TOKEN, &webhook, &form))
        .body(serde_urlencoded::to_string(&form).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let twiml = resp.text().await.unwrap();
    assert!(!twiml.contains("room_id"), "{twiml}");

    let media_url = s.ws_url("/voice/twilio/media");
    // The stream's parameters (with its token) come from the TwiML.
    let params: serde_json::Map<String, serde_json::Value> =
        roomkit_voice::fake::stream_parameters(&twiml)
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
    assert_eq!(params["from"], "+15550007777", "{twiml}");
    let mut request = media_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "X-Twilio-Signature",
        signature(TOKEN, &media_url, &[]).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    for msg in [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ0077", "start": {
            "streamSid": "MZ0077", "accountSid": "AC0001", "callSid": "CA0077", "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }}),
    ] {
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
    }

    // The call's new room has the phone channel and, from `agents`, the bot.
    let deadline = Instant::now() + Duration::from_secs(20);
    let bound = loop {
        let rooms = s.ok("GET", "/rooms", None).await;
        let mut found = None;
        for room in rooms["items"].as_array().unwrap() {
            let id = room["id"].as_str().unwrap();
            let b = s.ok("GET", &format!("/rooms/{id}/channels"), None).await;
            let ids: Vec<String> = b["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|x| x["channel_id"].as_str().map(str::to_owned))
                .collect();
            if ids.iter().any(|c| c == "phone") {
                found = Some(ids);
            }
        }
        match found {
            Some(ids) if ids.iter().any(|c| c == "bot") => break ids,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the call's room has no agent: {other:?}; log: {}",
                    s.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(bound.iter().any(|c| c == "bot"), "{bound:?}");
    let _ = ws.close(None).await;
}
