//! A WebRTC call from the web chat in headless Chromium: the page's Call
//! button, in WebRTC mode, sends its microphone (a fake one playing
//! espeak-ng speech from a WAV file) as an Opus track to the server's
//! `transport = "webrtc"` channel (ICE on loopback, DTLS-SRTP); the offline
//! speech-to-text hears it, the echo agent answers, the offline
//! text-to-speech speaks, and the page receives the agent's audio as its
//! remote track.
//!
//! Needs what `voice_browser` needs.

use std::time::Duration;

use serde_json::Value;

use crate::Server;
use crate::browser::{eventually, find};
use crate::voice_browser::{chromium, click, missing, script, speech_wav};

const CONFIG: &str = r#"
[server]
api_key_env = "ROOMKIT_API_KEY"

[[channels]]
id = "web"
type = "websocket"

[[channels]]
id = "bot"
type = "ai"
provider = "echo"

[[channels]]
id = "phone"
type = "voice"
transport = "webrtc"
stt = { provider = "pocketsphinx", phrases = ["hello robot", "good morning"] }
tts = { provider = "espeak" }

[channels.webrtc]
host = "127.0.0.1"

[channels.pipeline]
vad = { provider = "webrtc" }
aec = {}
agc = {}
"#;

#[tokio::test]
async fn a_webrtc_call_from_the_web_page_is_heard_and_answered() {
    let (Some(chromium_bin), Some(chromedriver)) = (
        find(&["chromium", "chromium-browser"]),
        find(&["chromedriver"]),
    ) else {
        return missing("chromium and chromedriver are missing (.ci/browser.sh installs them)");
    };
    if find(&["espeak-ng"]).is_none() || find(&["sox"]).is_none() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let offline = roomkit_voice::registry::STT_PROVIDERS.contains(&"pocketsphinx")
        && roomkit_voice::registry::TTS_PROVIDERS.contains(&"espeak");
    if !offline {
        return missing("this build has no offline speech providers (scripts/test turns them on)");
    }
    let wav = speech_wav("hello robot");
    let config = crate::config_file(CONFIG);
    let key = "webrtc-call-key";
    let s = Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[("ROOMKIT_API_KEY", key)],
    )
    .await;

    // Without the key the signalling socket is refused before the upgrade.
    let refused = s
        .http
        .get(s.url("/voice/webrtc/media?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);

    let (d, _driver) = chromium(
        &chromium_bin,
        &chromedriver,
        &wav,
        &[
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
        ],
    )
    .await;
    d.call(
        reqwest::Method::POST,
        "/url",
        Some(serde_json::json!({"url": s.url("/")})),
    )
    .await;
    script(
        &d,
        &format!("sessionStorage.setItem('roomkit.key', '{key}'); return true;"),
    )
    .await;
    d.call(
        reqwest::Method::POST,
        "/url",
        Some(serde_json::json!({"url": s.url("/?room=call-room")})),
    )
    .await;
    eventually("the page connects and offers a call", || async {
        d.enabled("#message").await
            && script(&d, "return !document.getElementById('call').hidden;").await == true
    })
    .await;
    script(
        &d,
        "document.getElementById('call-mode').value = 'webrtc'; return true;",
    )
    .await;
    click(&d, "#call-start").await;

    // The caller's words reach the room; the agent's audio reaches the page.
    let mut stats = Value::Null;
    let mut timeline = Vec::new();
    let mut heard = false;
    for _ in 0..600 {
        stats = script(&d, "return window.roomkitCall;").await;
        timeline = s.timeline("call-room").await;
        heard = timeline
            .iter()
            .any(|e| e["source"]["channel_id"] == "phone" && e["content"]["text"] == "hello robot");
        if heard
            && stats["rtcAudioEnergy"].as_f64().unwrap_or(0.0) > 0.001
            && stats["rtcPacketsReceived"].as_u64().unwrap_or(0) > 50
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call_status = d.text("#call-status").await;
    assert!(
        heard,
        "the caller's words are not in the room; status {call_status:?}; stats {stats}; timeline {timeline:?}; log: {}",
        s.log()
    );
    assert!(
        timeline.iter().any(|e| e["source"]["channel_id"] == "bot"
            && e["content"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("hello robot"))),
        "the agent did not answer: {timeline:?}"
    );
    assert!(
        stats["rtcPacketsReceived"].as_u64().unwrap_or(0) > 50
            && stats["rtcAudioEnergy"].as_f64().unwrap_or(0.0) > 0.001,
        "the page did not receive the agent's audio: {stats}; log: {}",
        s.log()
    );
    assert!(
        stats["rtcPacketsSent"].as_u64().unwrap_or(0) > 50,
        "the page sent little audio: {stats}"
    );
    click(&d, "#call-hangup").await;
    eventually("the call ends on the page", || async {
        d.text("#call-status").await.starts_with("Call ended")
    })
    .await;
    let _ = d
        .http
        .delete(format!("{}/session/{}", d.base, d.session))
        .send()
        .await;
    let _ = std::fs::remove_file(&wav);
}
