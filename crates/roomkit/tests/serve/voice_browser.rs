//! A voice call from the web chat in headless Chromium: the page's Call
//! button opens `/voice/browser/media` (with the API key as `?token=`), the
//! fake microphone plays espeak-ng speech from a WAV file, the offline
//! speech-to-text (pocketsphinx) hears it, the echo agent answers, the
//! offline text-to-speech (espeak) speaks the answer, and the page shows the
//! transcript and receives the agent's audio.
//!
//! Needs chromium, chromedriver, espeak-ng and sox, and a build with the
//! offline speech providers (`scripts/test` turns them on). Without them it
//! says so and skips, except under CI (`CI` set), where it fails.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Server;
use crate::browser::{Driver, eventually, find};

pub(crate) fn missing(what: &str) {
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("ROOMKIT_TEST_REQUIRE_ALL").is_none(),
        "the browser voice test cannot run here (CI or ROOMKIT_TEST_REQUIRE_ALL): {what}"
    );
    println!("skipped: {what}");
}

fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The caller's question: espeak-ng speech, 48 kHz mono 16-bit, with
/// silence around it so the VAD sees it start and end.
pub(crate) fn speech_wav(text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("roomkit-serve-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join(format!("speech-{}.wav", std::process::id()));
    let wav = dir.join(format!("speech-{}-48k.wav", std::process::id()));
    run(
        "espeak-ng",
        &[
            "-v",
            "en-us",
            "-s",
            "140",
            "-w",
            raw.to_str().unwrap(),
            text,
        ],
    );
    run(
        "sox",
        &[
            raw.to_str().unwrap(),
            "-r",
            "48000",
            "-c",
            "1",
            "-b",
            "16",
            wav.to_str().unwrap(),
            "pad",
            "0.8",
            "2.5",
        ],
    );
    wav
}

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
transport = "browser"
stt = { provider = "pocketsphinx", phrases = ["hello robot", "good morning"] }
tts = { provider = "espeak" }

[channels.pipeline]
vad = { provider = "webrtc" }
"#;

pub(crate) async fn script(d: &Driver, js: &str) -> Value {
    d.call(
        reqwest::Method::POST,
        "/execute/sync",
        Some(json!({"script": js, "args": []})),
    )
    .await
}

pub(crate) async fn click(d: &Driver, css: &str) {
    let id = d.element(css).await;
    d.call(
        reqwest::Method::POST,
        &format!("/element/{id}/click"),
        Some(json!({})),
    )
    .await;
}

/// Chromium driven by chromedriver, headless, with `wav` as its fake
/// microphone and `extra` flags; the chromedriver process lives as long as
/// the returned child.
pub(crate) async fn chromium(
    chromium: &str,
    chromedriver: &str,
    wav: &std::path::Path,
    extra: &[&str],
) -> (Driver, tokio::process::Child) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let driver = tokio::process::Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let http = crate::client();
    let base = format!("http://127.0.0.1:{port}");
    eventually("chromedriver is ready", || {
        let http = http.clone();
        let url = format!("{base}/status");
        async move {
            match http.get(url).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        }
    })
    .await;
    let capture = format!("--use-file-for-fake-audio-capture={}", wav.display());
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-background-networking".into(),
        "--use-fake-ui-for-media-stream".into(),
        "--use-fake-device-for-media-stream".into(),
        capture,
        "--autoplay-policy=no-user-gesture-required".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": chromium,
        "args": args}}}});
    let created: Value = http
        .post(format!("{base}/session"))
        .json(&caps)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_owned();
    (
        Driver {
            http,
            base,
            session,
        },
        driver,
    )
}

#[tokio::test]
async fn a_call_from_the_web_page_shows_the_transcript_and_plays_the_agent() {
    let (Some(chromium_bin), Some(chromedriver)) = (
        find(&["chromium", "chromium-browser"]),
        find(&["chromedriver"]),
    ) else {
        return missing(
            "chromium and chromedriver are missing (Debian packages chromium and chromium-driver; .ci/browser.sh installs them)",
        );
    };
    if find(&["espeak-ng"]).is_none() || find(&["sox"]).is_none() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let offline = roomkit_voice::registry::STT_PROVIDERS.contains(&"pocketsphinx")
        && roomkit_voice::registry::TTS_PROVIDERS.contains(&"espeak");
    if !offline {
        return missing(
            "this build has no offline speech providers (run with --features roomkit-voice/espeak,roomkit-voice/pocketsphinx, as scripts/test does)",
        );
    }
    let wav = speech_wav("hello robot");

    let config = crate::config_file(CONFIG);
    let key = "browser-call-key";
    let s = Server::start_with(
        &["--config", config.to_str().unwrap()],
        &[("ROOMKIT_API_KEY", key)],
    )
    .await;

    // Without the key the media socket is refused before the upgrade.
    let refused = s
        .http
        .get(s.url("/voice/browser/media?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_signature", "{body}");

    let (d, _driver) = chromium(&chromium_bin, &chromedriver, &wav, &[]).await;
    let (http, base) = (d.http.clone(), d.base.clone());

    // The key lives in the tab's sessionStorage, as the chat keeps it.
    d.call(
        reqwest::Method::POST,
        "/url",
        Some(json!({"url": s.url("/")})),
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
        Some(json!({"url": s.url("/?room=call-room")})),
    )
    .await;
    eventually("the page connects and offers a call", || async {
        d.enabled("#message").await
            && script(&d, "return !document.getElementById('call').hidden;").await == true
    })
    .await;
    click(&d, "#call-start").await;

    let mut heard = false;
    let mut stats = Value::Null;
    for _ in 0..900 {
        stats = script(&d, "return window.roomkitCall;").await;
        let finals = script(
            &d,
            "return [...document.querySelectorAll('#transcript li.final')].map(l => l.textContent).join('|');",
        )
        .await;
        heard = finals.as_str().is_some_and(|t| t.contains("hello robot"));
        if heard && stats["audioBytes"].as_u64().unwrap_or(0) > 16_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let transcript = d.text("#transcript").await;
    let call_status = d.text("#call-status").await;
    assert!(
        heard,
        "no final transcript on the page; transcript: {transcript:?}; call status: {call_status:?}; stats: {stats}; log: {}",
        s.log()
    );
    assert!(
        stats["audioBytes"].as_u64().unwrap_or(0) > 16_000,
        "the page received too little agent audio: {stats}; transcript: {transcript:?}; log: {}",
        s.log()
    );
    assert!(
        stats["sentFrames"].as_u64().unwrap_or(0) > 50,
        "the page sent few microphone frames: {stats}"
    );
    let bytes = script(
        &d,
        "return document.getElementById('transcript').dataset.audioBytes;",
    )
    .await;
    assert!(
        bytes
            .as_str()
            .and_then(|b| b.parse::<u64>().ok())
            .is_some_and(|b| b > 0),
        "{bytes}"
    );
    // The agent's sentence was shown, and the room has both sides.
    assert!(
        transcript.contains("hello robot"),
        "agent text missing: {transcript:?}"
    );
    let timeline = s.timeline("call-room").await;
    assert!(
        timeline
            .iter()
            .any(|e| e["source"]["channel_id"] == "phone" && e["content"]["text"] == "hello robot"),
        "the caller's utterance was not stored: {timeline:?}"
    );
    assert!(
        timeline.iter().any(|e| e["source"]["channel_id"] == "bot"
            && e["content"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("hello robot"))),
        "the agent did not answer: {timeline:?}"
    );

    click(&d, "#call-hangup").await;
    eventually("the call ends on the page", || async {
        d.text("#call-status").await.starts_with("Call ended")
    })
    .await;

    let _ = http
        .delete(format!("{base}/session/{}", d.session))
        .send()
        .await;
    let _ = std::fs::remove_file(&wav);
}
