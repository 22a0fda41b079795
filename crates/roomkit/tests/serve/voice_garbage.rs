//! Garbage on the media sockets of the real binary: unreadable, truncated,
//! oversized and mistyped frames on `/voice/twilio/media` and
//! `/voice/browser/media`, before and after `start`. Each is skipped with a
//! log line (the browser is also answered an `error` message) or closes
//! that socket; the call goes on until `stop`, the server stays healthy
//! (`/healthz` 200, a new call still opens) and never panics.

use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use roomkit_channels::sms::twilio::signature;
use roomkit_voice::fake::{FakeOpenAiAudio, stream_parameters};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::{Server, Ws};

const TOKEN: &str = "garbage-test-token";
const ROOM: &str = "garbage-room";

/// Deterministic junk bytes (SplitMix64 from `seed`).
fn junk(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// A server with a Twilio and a browser voice channel in one room, their
/// speech providers on a fake OpenAI audio server.
async fn setup() -> (Server, FakeOpenAiAudio) {
    let fake = FakeOpenAiAudio::start("oa-test-key", ["hello"])
        .await
        .unwrap();
    let speech = format!(
        r#"{{ provider = "openai", base_url = "{}", api_key_env = "OA_KEY" }}"#,
        fake.base_url()
    );
    let config = format!(
        r#"
[[channels]]
id = "phone"
type = "voice"
transport = "twilio"
stt = {speech}
tts = {speech}

[[channels]]
id = "web-call"
type = "voice"
transport = "browser"
stt = {speech}
tts = {speech}
"#
    );
    let path = crate::config_file(&config);
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("TWILIO_AUTH_TOKEN", TOKEN), ("OA_KEY", "oa-test-key")],
    )
    .await;
    s.ok("POST", "/rooms", Some(json!({"id": ROOM}))).await;
    for ch in ["phone", "web-call"] {
        s.ok(
            "POST",
            &format!("/rooms/{ROOM}/channels"),
            Some(json!({"channel_id": ch})),
        )
        .await;
    }
    (s, fake)
}

async fn twilio_socket(s: &Server) -> Ws {
    let url = s.ws_url("/voice/twilio/media");
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "X-Twilio-Signature",
        signature(TOKEN, &url, &[]).parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn browser_socket(s: &Server) -> Ws {
    tokio_tungstenite::connect_async(s.ws_url("/voice/browser/media"))
        .await
        .unwrap()
        .0
}

/// Posts the signed voice webhook of call `CA9` into the room, as Twilio
/// does before it opens the media socket: the stream parameters it answers
/// (the room, the caller and the call's stream token).
async fn twilio_answer(s: &Server) -> serde_json::Map<String, Value> {
    let webhook = s.url(&format!("/webhooks/voice/twilio?room_id={ROOM}"));
    let form = vec![
        ("CallSid".to_owned(), "CA9".to_owned()),
        ("From".to_owned(), "+15550009".to_owned()),
        ("To".to_owned(), "+15559999".to_owned()),
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
    assert_eq!(resp.status().as_u16(), 200, "log: {}", s.log());
    let twiml = resp.text().await.unwrap();
    let params: serde_json::Map<String, Value> = stream_parameters(&twiml)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    assert!(params.contains_key("token"), "{twiml}");
    params
}

fn twilio_start(params: &serde_json::Map<String, Value>) -> String {
    json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ9", "start": {
        "streamSid": "MZ9", "accountSid": "AC9", "callSid": "CA9", "tracks": ["inbound"],
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    }})
    .to_string()
}

fn browser_start() -> String {
    json!({"type": "start", "sample_rate": 16000, "room_id": ROOM, "participant": "caller"})
        .to_string()
}

async fn text(ws: &mut Ws, t: impl Into<String>) {
    ws.send(Message::Text(t.into().into())).await.unwrap();
}

/// Reads until the server closes the socket; the JSON texts it sent.
async fn until_closed(ws: &mut Ws) -> Vec<Value> {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("the server closes the socket in time")
        {
            Some(Ok(Message::Text(t))) => {
                texts.push(serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("{e}: {t}")))
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => return texts,
            Some(Ok(_)) => {}
        }
    }
}

/// A text frame that is not UTF-8, sent as a raw frame.
fn not_utf8_frame() -> Message {
    Message::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    ))
}

/// Sends the start of a frame (a header announcing 200 masked bytes, and
/// ten of them), then drops the connection.
async fn truncate_and_drop(mut ws: Ws) {
    let mut raw = vec![0x81, 0x80 | 126, 0, 200, 1, 2, 3, 4];
    raw.extend_from_slice(&[b'x'; 10]);
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() {
        tcp.write_all(&raw).await.unwrap();
        let _ = tcp.shutdown().await;
    }
}

/// The garbage both transports get after `start`.
fn garbage() -> Vec<Message> {
    let mut out: Vec<Message> = [
        "",
        "{",
        "null",
        "[]",
        "42",
        r#"{"event":"dance"}"#,
        r#"{"type":"dance"}"#,
        r#"{"event":"media"}"#,
        r#"{"event":"media","media":{"payload":"!!!not base64"}}"#,
        r#"{"event":"media","media":{"payload":""}}"#,
        r#"{"event":"media","media":{"payload":"/w"}}"#,
        r#"{"event":"dtmf","dtmf":{"digit":"55"}}"#,
        r#"{"event":"dtmf","dtmf":{"digit":""}}"#,
        r#"{"type":"dtmf","digit":"🙂"}"#,
        r#"{"event":"mark"}"#,
        r#"{"type":"mark","name":7}"#,
        r#"{"event":"start","start":{}}"#,
        r#"{"type":"start","sample_rate":-1}"#,
        r#"{"event":"media","media":{"payload":"/////w==","track":"inbound""#,
    ]
    .into_iter()
    .map(|t| Message::Text(t.into()))
    .collect();
    for seed in 0..8 {
        let bytes = junk(seed, 1 + (seed as usize * 37) % 300);
        out.push(Message::Text(
            String::from_utf8_lossy(&bytes).into_owned().into(),
        ));
        out.push(Message::Binary(bytes.into()));
    }
    out.push(Message::Binary(vec![1, 2, 3].into()));
    out.push(Message::Binary(Vec::new().into()));
    out.push(Message::Binary(vec![0; 40_000].into()));
    out
}

async fn healthy(s: &Server) {
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "log: {}", s.log());
    let log = s.log();
    assert!(!log.contains("panicked"), "the server panicked: {log}");
}

#[tokio::test]
async fn twilio_media_socket_survives_garbage() {
    let (s, _fake) = setup().await;
    let params = twilio_answer(&s).await;

    // Garbage before and after `start`, then `stop`: the call ran through
    // all of it and ends on `stop`.
    let mut ws = twilio_socket(&s).await;
    text(&mut ws, "{not json").await;
    ws.send(Message::Binary(vec![9; 7].into())).await.unwrap();
    text(&mut ws, twilio_start(&params)).await;
    for m in garbage() {
        ws.send(m).await.unwrap();
    }
    let media = json!({"event": "media", "streamSid": "MZ9", "media": {"track": "inbound",
        "payload": base64::engine::general_purpose::STANDARD.encode([0xffu8; 160])}});
    text(&mut ws, media.to_string()).await;
    text(
        &mut ws,
        json!({"event": "stop", "streamSid": "MZ9"}).to_string(),
    )
    .await;
    until_closed(&mut ws).await;
    let log = s.log();
    assert!(
        log.contains("skipped an unreadable media-socket message"),
        "no log line for the garbage: {log}"
    );
    assert!(
        !log.contains("bad stream token"),
        "the call's own token was refused: {log}"
    );

    // An oversized message and a text frame that is not UTF-8 close the socket.
    let mut ws = twilio_socket(&s).await;
    text(&mut ws, twilio_start(&params)).await;
    text(&mut ws, "x".repeat(70 * 1024)).await;
    until_closed(&mut ws).await;
    let mut ws = twilio_socket(&s).await;
    text(&mut ws, twilio_start(&params)).await;
    let _ = ws.send(not_utf8_frame()).await;
    until_closed(&mut ws).await;

    // A frame cut off mid-way, before and after `start`.
    truncate_and_drop(twilio_socket(&s).await).await;
    let mut ws = twilio_socket(&s).await;
    text(&mut ws, twilio_start(&params)).await;
    truncate_and_drop(ws).await;

    healthy(&s).await;
    // A new call still opens and ends cleanly.
    let mut ws = twilio_socket(&s).await;
    text(&mut ws, twilio_start(&params)).await;
    text(&mut ws, json!({"event": "stop"}).to_string()).await;
    until_closed(&mut ws).await;
    healthy(&s).await;
}

#[tokio::test]
async fn browser_media_socket_survives_garbage() {
    let (s, _fake) = setup().await;

    let mut ws = browser_socket(&s).await;
    text(&mut ws, "{not json").await;
    ws.send(Message::Binary(vec![0; 640].into())).await.unwrap();
    text(&mut ws, browser_start()).await;
    let sent = garbage();
    let n = sent.len();
    for m in sent {
        ws.send(m).await.unwrap();
    }
    ws.send(Message::Binary(vec![0; 640].into())).await.unwrap();
    text(&mut ws, json!({"type": "stop"}).to_string()).await;
    let answers = until_closed(&mut ws).await;
    assert_eq!(
        answers.first().map(|a| a["type"].clone()),
        Some(json!("error"))
    );
    assert!(
        answers.iter().any(|a| a["type"] == "started"),
        "{answers:?}"
    );
    let errors: Vec<&Value> = answers.iter().filter(|a| a["type"] == "error").collect();
    // One answer per bad message (two before start), up to the per-call cap.
    let expected = (2 + n).min(usize::try_from(roomkit_voice::browser::MAX_ERROR_REPLIES).unwrap());
    assert_eq!(errors.len(), expected, "{answers:?}");
    for e in errors {
        let code = e["error"]["code"].as_str().unwrap_or_default();
        assert!(["invalid_message", "invalid_audio"].contains(&code), "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(
        answers.last().map(|a| a["type"].clone()),
        Some(json!("ended"))
    );

    let mut ws = browser_socket(&s).await;
    text(&mut ws, browser_start()).await;
    ws.send(Message::Binary(vec![0; 70 * 1024].into()))
        .await
        .unwrap();
    until_closed(&mut ws).await;
    let mut ws = browser_socket(&s).await;
    text(&mut ws, browser_start()).await;
    let _ = ws.send(not_utf8_frame()).await;
    until_closed(&mut ws).await;
    truncate_and_drop(browser_socket(&s).await).await;
    let mut ws = browser_socket(&s).await;
    text(&mut ws, browser_start()).await;
    truncate_and_drop(ws).await;

    healthy(&s).await;
    let mut ws = browser_socket(&s).await;
    text(&mut ws, browser_start()).await;
    text(&mut ws, json!({"type": "stop"}).to_string()).await;
    let answers = until_closed(&mut ws).await;
    assert_eq!(
        answers
            .iter()
            .map(|a| a["type"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["started", "ended"]
    );
    healthy(&s).await;
}
