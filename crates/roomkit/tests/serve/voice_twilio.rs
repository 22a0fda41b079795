//! A phone call through the real binary: a Twilio voice webhook, then the
//! Twilio Media Streams socket, with the cloud speech vendors configured by
//! name and pointed at their fakes on loopback (Deepgram hears the question,
//! ElevenLabs speaks the answer; or OpenAI audio does both) and an
//! OpenAI-compatible fake answering as the AI channel. The caller's audio is espeak-ng speech sent as 20 ms
//! mu-law frames in real time.
//!
//! Needs espeak-ng and sox (`.ci/run` installs them); without them the test
//! says so and skips, except under CI (`CI` set), where it fails.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use futures::{SinkExt, StreamExt};
use roomkit_channels::sms::twilio::signature;
use roomkit_voice::Outbound;
use roomkit_voice::fake::{
    FakeDeepgram, FakeElevenLabs, FakeOpenAiAudio, stream_parameters, stream_url,
};
use roomkit_voice::twilio::{decode_payload, encode_outbound};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{Server, connect, next_frame};

const TOKEN: &str = "twilio-test-token";
pub(crate) const ROOM: &str = "call-room";
pub(crate) const SID: &str = "MZ0001";
/// The agent's first answer: long enough (60 ms a character at the fake
/// ElevenLabs) to be interrupted while it plays.
pub(crate) const LONG_ANSWER: &str = "It is half past ten in the morning. The sun is out and the wind is light. \
     You will not need an umbrella today, and the evening should stay dry as well.";
const SHORT_ANSWER: &str = "Okay, I will stop.";

pub(crate) fn missing(what: &str) {
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("ROOMKIT_TEST_REQUIRE_ALL").is_none(),
        "the Twilio voice test cannot run here (CI or ROOMKIT_TEST_REQUIRE_ALL): {what}"
    );
    println!("skipped: {what}");
}

pub(crate) fn tools_present() -> bool {
    crate::browser::find(&["espeak-ng"]).is_some() && crate::browser::find(&["sox"]).is_some()
}

/// espeak-ng speech as 8 kHz mono 16-bit samples.
pub(crate) fn speech(text: &str) -> Vec<i16> {
    let dir = std::env::temp_dir().join("roomkit-serve-tests");
    std::fs::create_dir_all(&dir).unwrap();
    // Unique per call: tests in this process make the same sentence at once.
    let tag = crate::unique();
    let (raw, narrow) = (
        dir.join(format!("tw-{tag}.wav")),
        dir.join(format!("tw-{tag}-8k.wav")),
    );
    let ok = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng failed");
    let ok = std::process::Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&narrow)
        .status()
        .unwrap()
        .success();
    assert!(ok, "sox failed");
    let samples = hound::WavReader::open(&narrow)
        .unwrap()
        .samples::<i16>()
        .map(Result::unwrap)
        .collect();
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&narrow);
    samples
}

/// A DTMF key as the two sine tones of its row and column, at 8 kHz.
fn dtmf_tone(low: f32, high: f32, ms: usize) -> Vec<i16> {
    (0..ms * 8)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let v =
                (t * low * std::f32::consts::TAU).sin() + (t * high * std::f32::consts::TAU).sin();
            (v * 7000.0) as i16
        })
        .collect()
}

pub(crate) fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// An OpenAI-compatible chat server: the question about the time gets the
/// long answer at once; anything else gets the short one after four
/// seconds (so it cannot be mistaken for the interrupted answer's audio).
async fn fake_chat() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    async fn completions(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        let last_user = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .map(|m| m["content"].to_string())
            .unwrap_or_default();
        let answer = if last_user.contains("what time is it") {
            LONG_ANSWER
        } else {
            tokio::time::sleep(Duration::from_secs(4)).await;
            SHORT_ANSWER
        };
        if body["stream"] == true {
            let mut sse = String::new();
            for word in answer.split_inclusive(' ') {
                let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "model": "fake",
                    "choices": [{"index": 0, "delta": {"content": word}}]});
                sse.push_str(&format!("data: {chunk}\n\n"));
            }
            let end = json!({"id": "c1", "object": "chat.completion.chunk", "model": "fake",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            sse.push_str(&format!("data: {end}\n\n"));
            let usage = json!({"id": "c1", "object": "chat.completion.chunk", "model": "fake",
                "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}});
            sse.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
            ([("content-type", "text/event-stream")], sse).into_response()
        } else {
            axum::Json(json!({"id": "c1", "object": "chat.completion", "model": "fake",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}))
            .into_response()
        }
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(completions));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// The fakes, the server, a room with the phone and the agent, and a
/// room socket watching it.
pub(crate) struct Setup {
    pub(crate) s: Server,
    _fakes: Vec<Box<dyn std::any::Any + Send>>,
    _chat: tokio::task::JoinHandle<()>,
    pub(crate) room_ws: crate::Ws,
}

/// The Deepgram and ElevenLabs fakes, and the speech tables naming them.
pub(crate) async fn deepgram_and_elevenlabs() -> (String, String, Vec<Box<dyn std::any::Any + Send>>)
{
    let deepgram = FakeDeepgram::start("dg-test-key", ["what time is it", "stop please"])
        .await
        .unwrap();
    let elevenlabs = FakeElevenLabs::start("el-test-key").await.unwrap();
    let stt = format!(
        r#"{{ provider = "deepgram", base_url = "{}", api_key_env = "DG_KEY", sample_rate = 8000 }}"#,
        deepgram.base_url()
    );
    let tts = format!(
        r#"{{ provider = "elevenlabs", base_url = "{}", api_key_env = "EL_KEY", voice_id = "voice-1", sample_rate = 16000 }}"#,
        elevenlabs.base_url()
    );
    (stt, tts, vec![Box::new(deepgram), Box::new(elevenlabs)])
}

async fn setup() -> Setup {
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    setup_with(&stt, &tts, fakes).await
}

async fn setup_with(stt: &str, tts: &str, fakes: Vec<Box<dyn std::any::Any + Send>>) -> Setup {
    setup_full(stt, tts, fakes, "", &[]).await
}

/// As `setup_with`, with more config text appended and more variables set.
pub(crate) async fn setup_full(
    stt: &str,
    tts: &str,
    fakes: Vec<Box<dyn std::any::Any + Send>>,
    extra_config: &str,
    extra_env: &[(&str, &str)],
) -> Setup {
    setup_transport("twilio", stt, tts, fakes, extra_config, extra_env).await
}

/// As `setup_full`, with the `phone` channel on another transport.
pub(crate) async fn setup_transport(
    transport: &str,
    stt: &str,
    tts: &str,
    fakes: Vec<Box<dyn std::any::Any + Send>>,
    extra_config: &str,
    extra_env: &[(&str, &str)],
) -> Setup {
    let (chat, chat_task) = fake_chat().await;
    let config = format!(
        r#"
[[channels]]
id = "web"
type = "websocket"

[[channels]]
id = "bot"
type = "ai"
provider = "openai"
model = "fake-model"
base_url = "http://{chat}/v1"
api_key_env = "FAKE_OPENAI_KEY"

[[channels]]
id = "phone"
type = "voice"
transport = "{transport}"
stt = {stt}
tts = {tts}

[channels.pipeline]
vad = {{ provider = "webrtc" }}
dtmf = {{}}
{extra_config}
"#,
    );
    let path = crate::config_file(&config);
    let mut env = vec![
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("DG_KEY", "dg-test-key"),
        ("EL_KEY", "el-test-key"),
        ("OA_KEY", "oa-test-key"),
        ("FAKE_OPENAI_KEY", "sk-fake"),
    ];
    env.extend_from_slice(extra_env);
    let s = Server::start_with(&["--config", path.to_str().unwrap()], &env).await;
    s.ok("POST", "/rooms", Some(json!({"id": ROOM}))).await;
    for ch in ["web", "phone", "bot"] {
        s.ok(
            "POST",
            &format!("/rooms/{ROOM}/channels"),
            Some(json!({"channel_id": ch})),
        )
        .await;
    }
    let room_ws = connect(&s.ws_url(&format!("/ws/{ROOM}?channel_id=web"))).await;
    Setup {
        s,
        _fakes: fakes,
        _chat: chat_task,
        room_ws,
    }
}

/// The caller's side of the media socket: a real-time 20 ms player that
/// sends queued audio, or silence when the queue is empty.
pub(crate) struct Caller {
    queue: Arc<Mutex<VecDeque<i16>>>,
    hang_up: Arc<std::sync::atomic::AtomicBool>,
    rx: futures::stream::SplitStream<crate::Ws>,
    pub(crate) player: tokio::task::JoinHandle<()>,
}

impl Caller {
    pub(crate) fn say(&self, samples: &[i16]) {
        self.queue.lock().unwrap().extend(samples.iter().copied());
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    /// Ends the stream as Twilio does when the caller hangs up: a `stop`
    /// message, then the socket closes.
    pub(crate) async fn hang_up(self) {
        self.hang_up
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.player).await;
    }

    /// The next Twilio message from the server, or `None` at the deadline
    /// or when the socket ends.
    pub(crate) async fn next(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            match tokio::time::timeout_at(deadline, self.rx.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }
}

/// Posts the signed voice webhook of call `CA0001` into the room and
/// returns the media socket URL and the stream parameters of its TwiML, as
/// Twilio reads them.
pub(crate) async fn answer(s: &Server, token: &str) -> (String, Vec<(String, String)>) {
    let webhook = s.url(&format!("/webhooks/voice/twilio?room_id={ROOM}"));
    let form = vec![
        ("CallSid".to_owned(), "CA0001".to_owned()),
        ("From".to_owned(), "+15550001".to_owned()),
        ("To".to_owned(), "+15559999".to_owned()),
    ];
    let resp = s
        .http
        .post(&webhook)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature(token, &webhook, &form))
        .body(serde_urlencoded::to_string(&form).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let twiml = resp.text().await.unwrap();
    assert_eq!(status, 200, "{twiml}; log: {}", s.log());
    let media_url = s.ws_url("/voice/twilio/media");
    assert!(twiml.contains("<Connect>"), "{twiml}");
    assert_eq!(
        stream_url(&twiml).as_deref(),
        Some(media_url.as_str()),
        "{twiml}"
    );
    assert!(
        twiml.contains(&format!("<Parameter name=\"room_id\" value=\"{ROOM}\"/>")),
        "{twiml}"
    );
    (media_url, stream_parameters(&twiml))
}

/// Opens the media socket at `media_url` with Twilio's signature of it
/// (the same for every call) and sends `connected` and a `start` for
/// `call_sid` with `params` as its custom parameters.
pub(crate) async fn open_media(
    media_url: &str,
    token: &str,
    call_sid: &str,
    params: &[(String, String)],
) -> (
    futures::stream::SplitSink<crate::Ws, Message>,
    futures::stream::SplitStream<crate::Ws>,
) {
    let mut request = media_url.into_client_request().unwrap();
    request.headers_mut().insert(
        "X-Twilio-Signature",
        signature(token, media_url, &[]).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut tx, rx) = ws.split();
    let custom: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for msg in [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": {
            "streamSid": SID, "accountSid": "AC0001", "callSid": call_sid, "tracks": ["inbound"],
            "customParameters": custom,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }}),
    ] {
        tx.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
    }
    (tx, rx)
}

/// Answers the voice webhook (checking the TwiML), then opens the signed
/// media socket and starts the stream with the TwiML's parameters.
pub(crate) async fn dial(s: &Server, token: &str) -> Caller {
    let (media_url, params) = answer(s, token).await;

    // Unsigned, the media socket is refused.
    let refused = tokio_tungstenite::connect_async(media_url.as_str()).await;
    assert!(refused.is_err(), "an unsigned media socket was accepted");

    let (tx, rx) = open_media(&media_url, token, "CA0001", &params).await;
    let queue = Arc::new(Mutex::new(VecDeque::<i16>::new()));
    let hang_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (q, stop) = (queue.clone(), hang_up.clone());
    let mut tx = tx;
    let player = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                let bye = json!({"event": "stop", "sequenceNumber": "2", "streamSid": SID,
                    "stop": {"accountSid": "AC0001", "callSid": "CA0001"}});
                let _ = tx.send(Message::Text(bye.to_string().into())).await;
                let _ = tx.close().await;
                return;
            }
            let frame: Vec<i16> = {
                let mut q = q.lock().unwrap();
                let n = q.len().min(160);
                let mut f: Vec<i16> = q.drain(..n).collect();
                f.resize(160, 0);
                f
            };
            let json = encode_outbound(SID, &Outbound::Audio(frame)).unwrap();
            if tx.send(Message::Text(json.into())).await.is_err() {
                return;
            }
        }
    });
    Caller {
        queue,
        hang_up,
        rx,
        player,
    }
}

fn text_of(e: &Value) -> &str {
    e["content"]["text"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_call_is_heard_answered_with_speech_and_can_be_interrupted() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let question = speech("what time is it");
    let interruption = speech("stop please, stop");
    let mut setup = setup().await;
    let s = &setup.s;
    let mut caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    caller.say(&question);

    // The answer's audio comes back as mu-law media frames.
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answer.len() < 8000 {
        let Some(v) = caller.next(deadline).await else {
            break;
        };
        if v["event"] == "media" {
            assert_eq!(v["streamSid"], SID, "{v}");
            answer.extend(decode_payload(v["media"]["payload"].as_str().unwrap()).unwrap());
        }
    }
    assert!(
        answer.len() >= 8000,
        "less than a second of answer audio ({} samples); log: {}",
        answer.len(),
        s.log()
    );
    let level = rms(&answer);
    assert!(
        level > 1000.0,
        "the answer audio is near silence (rms {level})"
    );

    let timeline = s.timeline(ROOM).await;
    let asked = timeline
        .iter()
        .find(|e| e["source"]["channel_id"] == "phone" && text_of(e) == "what time is it")
        .unwrap_or_else(|| panic!("the caller's question is not in the room: {timeline:?}"));
    assert_eq!(asked["source"]["external_id"], "+15550001", "{asked}");
    let answer_event = timeline
        .iter()
        .find(|e| e["source"]["channel_id"] == "bot" && text_of(e) == LONG_ANSWER)
        .unwrap_or_else(|| panic!("the agent's answer is not stored: {timeline:?}"))
        .clone();

    // Barge-in: speak while the answer plays.
    assert_eq!(caller.queued(), 0, "the question was not all sent yet");
    caller.say(&interruption);
    let spoke_at = Instant::now();
    let deadline = spoke_at + Duration::from_secs(15);
    let mut during = 0usize;
    let cleared_at = loop {
        let Some(v) = caller.next(deadline).await else {
            panic!(
                "no clear after the caller spoke over the answer; log: {}",
                s.log()
            );
        };
        if v["event"] == "media" {
            during += 1;
        }
        if v["event"] == "clear" {
            assert_eq!(v["streamSid"], SID, "{v}");
            break Instant::now();
        }
    };
    println!(
        "clear {} ms after the interruption started; {during} media frames meanwhile",
        cleared_at.duration_since(spoke_at).as_millis()
    );
    // The answer was still playing (it is paced in real time and lasts
    // about eight seconds) when the caller spoke.
    assert!(during > 0, "no answer media arrived while the caller spoke");
    // Media stops: nothing more of the interrupted answer after a second.
    // (The agent's reply to the interruption comes four seconds later.)
    let quiet_until = cleared_at + Duration::from_millis(2500);
    let mut last_media = None;
    let mut after_clear = 0usize;
    while let Some(v) = caller.next(quiet_until).await {
        if v["event"] == "media" {
            last_media = Some(Instant::now());
            after_clear += 1;
        }
    }
    println!(
        "{after_clear} media frames after clear, the last {:?} ms after it",
        last_media.map(|t| t.duration_since(cleared_at).as_millis())
    );
    if let Some(t) = last_media {
        let after = t.duration_since(cleared_at);
        assert!(
            after <= Duration::from_secs(1),
            "media went on {} ms after clear",
            after.as_millis()
        );
    }

    // The stored answer now says it was interrupted.
    let id = answer_event["id"].as_str().unwrap().to_owned();
    let mut marked = Value::Null;
    for _ in 0..100 {
        let timeline = s.timeline(ROOM).await;
        if let Some(e) = timeline.iter().find(|e| e["id"] == id.as_str())
            && e["metadata"]["interrupted"] == true
        {
            marked = e.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        marked["metadata"]["interrupted"],
        true,
        "the interrupted answer is not marked; timeline: {:?}",
        s.timeline(ROOM).await
    );
    assert_eq!(marked["metadata"]["full_text"], LONG_ANSWER, "{marked}");
    assert!(
        LONG_ANSWER.starts_with(text_of(&marked)) && text_of(&marked).len() < LONG_ANSWER.len(),
        "the stored answer should be what was heard: {marked}"
    );
    caller.player.abort();
    let _ = &mut setup.room_ws;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_band_dtmf_key_on_a_twilio_call_reaches_the_room_socket() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let mut setup = setup().await;
    let caller = dial(&setup.s, TOKEN).await;
    caller.say(&vec![0; 4000]);
    // "5": 770 Hz and 1336 Hz for 100 ms.
    caller.say(&dtmf_tone(770.0, 1336.0, 100));
    caller.say(&vec![0; 4000]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let digit = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no DTMF event on the room socket; frames: {seen:?}; log: {}",
            setup.s.log()
        );
        let Ok(Ok(f)) = tokio::time::timeout(left, next_frame(&mut setup.room_ws)).await else {
            continue;
        };
        if f["type"] == "ephemeral" && f["event"]["content"]["code"] == "dtmf" {
            break f;
        }
        seen.push(f);
    };
    let event = &digit["event"];
    assert_eq!(event["content"]["data"]["digit"], "5", "{digit}");
    assert_eq!(event["content"]["data"]["source"], "inband", "{digit}");
    assert_eq!(event["source"]["channel_id"], "phone", "{digit}");
    caller.player.abort();
}

/// `roomkit serve` on a config, with one variable set; its exit code and
/// stderr (it must not start).
fn refused(config: &str) -> (Option<i32>, String, String) {
    let path = crate::config_file(config);
    let out = std::process::Command::new(crate::binary())
        .args(["serve", "--addr", "127.0.0.1:0", "--store", "memory://"])
        .arg("--config")
        .arg(&path)
        .env_remove("DEEPGRAM_API_KEY")
        .env_remove("ELEVENLABS_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env("DG_KEY", "dg-test-key")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.to_string_lossy().into_owned(),
    )
}

#[test]
fn a_cloud_provider_with_a_bad_option_or_no_key_exits_2_naming_it() {
    let voice = |stt: &str, tts: &str| {
        format!(
            "[[channels]]\nid = \"phone\"\ntype = \"voice\"\ntransport = \"twilio\"\nstt = {stt}\ntts = {tts}\n"
        )
    };
    let good_tts = r#"{ provider = "openai", api_key_env = "DG_KEY" }"#;
    let cases = [
        (
            voice(
                r#"{ provider = "deepgram", api_key_env = "DG_KEY", modle = "nova-3" }"#,
                good_tts,
            ),
            "channels[0].stt",
            "modle",
        ),
        (
            voice(
                r#"{ provider = "deepgram", api_key_env = "UNSET_DG_KEY" }"#,
                good_tts,
            ),
            "channels[0].stt",
            "UNSET_DG_KEY",
        ),
        (
            voice(
                r#"{ provider = "openai", api_key_env = "DG_KEY" }"#,
                r#"{ provider = "elevenlabs", api_key_env = "DG_KEY" }"#,
            ),
            "channels[0].tts",
            "voice_id",
        ),
        (
            voice(
                r#"{ provider = "openai", api_key_env = "DG_KEY" }"#,
                r#"{ provider = "openai" }"#,
            ),
            "channels[0].tts",
            "OPENAI_API_KEY",
        ),
        (
            voice(
                r#"{ provider = "openai", api_key_env = "DG_KEY" }"#,
                r#"{ provider = "openai", api_key_env = "DG_KEY" }"#,
            ) + "stt_timeout_ms = 0\n",
            "channels[0].stt_timeout_ms",
            "more than 0",
        ),
    ];
    for (config, key, word) in cases {
        let (code, err, path) = refused(&config);
        assert_eq!(code, Some(2), "{config}\n{err}");
        assert!(err.contains(&path), "{err}");
        assert!(err.contains(key) && err.contains(word), "{config}\n{err}");
        assert!(!err.contains("dg-test-key"), "the key leaked: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twilio_call_with_openai_speech_is_heard_and_answered() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let question = speech("what time is it");
    let openai = FakeOpenAiAudio::start("oa-test-key", ["what time is it"])
        .await
        .unwrap();
    let table = format!(
        r#"{{ provider = "openai", base_url = "{}", api_key_env = "OA_KEY" }}"#,
        openai.base_url()
    );
    let setup = setup_with(&table, &table, vec![Box::new(openai)]).await;
    let s = &setup.s;
    let mut caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    caller.say(&question);
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answer.len() < 8000 {
        let Some(v) = caller.next(deadline).await else {
            break;
        };
        if v["event"] == "media" {
            answer.extend(decode_payload(v["media"]["payload"].as_str().unwrap()).unwrap());
        }
    }
    assert!(
        answer.len() >= 8000,
        "less than a second of answer audio ({} samples); log: {}",
        answer.len(),
        s.log()
    );
    let level = rms(&answer);
    assert!(
        level > 1000.0,
        "the answer audio is near silence (rms {level})"
    );
    let timeline = s.timeline(ROOM).await;
    assert!(
        timeline
            .iter()
            .any(|e| e["source"]["channel_id"] == "phone" && text_of(e) == "what time is it"),
        "the caller's question is not in the room: {timeline:?}"
    );
    assert!(
        timeline
            .iter()
            .any(|e| e["source"]["channel_id"] == "bot" && text_of(e) == LONG_ANSWER),
        "the agent's answer is not stored: {timeline:?}"
    );
    caller.player.abort();
}

/// The value of the `/metrics` series `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_text(s: &Server) -> String {
    s.http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const STAGES: [&str; 5] = ["eou", "stt", "llm_ttft", "tts_ttfb", "voice_to_voice"];

fn stage_count(text: &str, stage: &str) -> f64 {
    metric(
        text,
        &format!("roomkit_voice_turn_latency_seconds_count{{stage=\"{stage}\"}}"),
    )
    .unwrap_or_else(|| panic!("no count for stage {stage}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_twilio_call_shows_its_turn_latency_on_metrics() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let question = speech("what time is it");
    let setup = setup().await;
    let s = &setup.s;
    let before = metrics_text(s).await;
    assert_eq!(
        metric(&before, "roomkit_voice_calls_active"),
        Some(0.0),
        "{before}"
    );
    for stage in STAGES {
        assert_eq!(stage_count(&before, stage), 0.0, "{before}");
    }

    let mut caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 2400]);
    caller.say(&question);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Some(v) = caller.next(deadline).await else {
            panic!("the answer never played; log: {}", s.log());
        };
        if v["event"] == "media"
            && rms(&decode_payload(v["media"]["payload"].as_str().unwrap()).unwrap()) > 0.0
        {
            break;
        }
    }

    // The answer started playing: the turn's figures are on /metrics.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = metrics_text(s).await;
        if STAGES.iter().all(|st| stage_count(&text, st) >= 1.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "not every stage has a figure: {text}\nlog: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for stage in STAGES {
        let count = stage_count(&text, stage);
        let inf = metric(
            &text,
            &format!("roomkit_voice_turn_latency_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}"),
        );
        assert_eq!(inf, Some(count), "{text}");
        let sum = metric(
            &text,
            &format!("roomkit_voice_turn_latency_seconds_sum{{stage=\"{stage}\"}}"),
        )
        .unwrap();
        assert!(sum.is_finite() && sum >= 0.0, "{stage}: {sum}");
        println!("{stage}: {count} turn(s), {:.0} ms in all", sum * 1000.0);
    }
    assert!(
        text.contains("# TYPE roomkit_voice_turn_latency_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        metric(&text, "roomkit_voice_calls_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "roomkit_voice_calls_active"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "roomkit_voice_turns_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // The caller goes away: the call is no longer active.
    caller.player.abort();
    drop(caller);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(s).await;
        if metric(&text, "roomkit_voice_calls_active") == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the call is still active: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Deepgram socket breaks in the middle of a call: the call stays up,
/// the server reopens the live session (logging the failure), and the next
/// question is heard and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deepgram_socket_that_breaks_mid_call_is_reopened_and_the_next_question_heard() {
    if !tools_present() {
        return missing("espeak-ng and sox are needed to make the caller's speech");
    }
    let question = speech("what time is it");
    let deepgram = FakeDeepgram::start("dg-test-key", ["what time is it"])
        .await
        .unwrap();
    let elevenlabs = FakeElevenLabs::start("el-test-key").await.unwrap();
    let stt = format!(
        r#"{{ provider = "deepgram", base_url = "{}", api_key_env = "DG_KEY", sample_rate = 8000 }}"#,
        deepgram.base_url()
    );
    let tts = format!(
        r#"{{ provider = "elevenlabs", base_url = "{}", api_key_env = "EL_KEY", voice_id = "voice-1", sample_rate = 16000 }}"#,
        elevenlabs.base_url()
    );
    let setup = setup_with(&stt, &tts, vec![Box::new(elevenlabs)]).await;
    let s = &setup.s;
    let mut caller = dial(s, TOKEN).await;
    caller.say(&vec![0; 4000]);
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        let deepgram = &deepgram;
        async move {
            while deepgram.connections().len() < n {
                assert!(
                    Instant::now() < deadline,
                    "{n} live sessions expected: {:?}; log: {}",
                    deepgram.connections(),
                    s.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    deepgram.break_connections();
    wait_for(2).await;
    caller.say(&vec![0; 2400]);
    caller.say(&question);
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answer.len() < 8000 {
        let Some(v) = caller.next(deadline).await else {
            break;
        };
        if v["event"] == "media" {
            answer.extend(decode_payload(v["media"]["payload"].as_str().unwrap()).unwrap());
        }
    }
    assert!(
        answer.len() >= 8000,
        "no answer after the socket broke ({} samples); log: {}",
        answer.len(),
        s.log()
    );
    let timeline = s.timeline(ROOM).await;
    let asked: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["source"]["channel_id"] == "phone" && !text_of(e).is_empty())
        .collect();
    assert_eq!(asked.len(), 1, "{timeline:?}");
    assert_eq!(text_of(asked[0]), "what time is it");
    let log = s.log();
    assert!(
        log.contains("speech-to-text failed; reopening") && log.contains("deepgram"),
        "{log}"
    );
    assert!(log.contains("speech-to-text session reopened"), "{log}");
    caller.player.abort();
}

/// The `session_started` events of `room`.
async fn sessions_started(s: &Server, room: &str) -> Vec<Value> {
    s.timeline(room)
        .await
        .into_iter()
        .filter(|e| e["content"]["type"] == "system" && e["content"]["code"] == "session_started")
        .collect()
}

/// Whether the server closes the socket within 15 s.
async fn closed_by_server(rx: &mut futures::stream::SplitStream<crate::Ws>) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, rx.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_media_upgrade_with_a_forged_start_opens_no_call() {
    let setup = setup().await;
    let s = &setup.s;
    const OTHER: &str = "other-room";
    s.ok("POST", "/rooms", Some(json!({"id": OTHER}))).await;
    s.ok(
        "POST",
        &format!("/rooms/{OTHER}/channels"),
        Some(json!({"channel_id": "phone"})),
    )
    .await;
    let (media_url, params) = answer(s, TOKEN).await;
    assert!(
        params.iter().any(|(k, _)| k == "token"),
        "the TwiML passes no stream token: {params:?}"
    );
    let with = |name: &str, value: Option<&str>| -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> =
            params.iter().filter(|(k, _)| k != name).cloned().collect();
        if let Some(v) = value {
            p.push((name.to_owned(), v.to_owned()));
        }
        p
    };
    let forged = [
        ("another room", "CA0001", with("room_id", Some(OTHER))),
        ("another caller", "CA0001", with("from", Some("+15556666"))),
        (
            "an added parameter",
            "CA0001",
            with("direction", Some("outbound")),
        ),
        ("no token", "CA0001", with("token", None)),
        (
            "a made-up token",
            "CA0001",
            with("token", Some("9999999999.00ff")),
        ),
        ("another call", "CA0002", params.clone()),
        (
            "the old parameters",
            "CA0001",
            vec![
                ("room_id".to_owned(), OTHER.to_owned()),
                ("from".to_owned(), "+15556666".to_owned()),
            ],
        ),
    ];
    for (what, call_sid, p) in forged {
        // The replayed upgrade is signed correctly; only `start` is forged.
        let (_tx, mut rx) = open_media(&media_url, TOKEN, call_sid, &p).await;
        assert!(
            closed_by_server(&mut rx).await,
            "a start with {what} kept its socket open; log: {}",
            s.log()
        );
    }
    for room in [ROOM, OTHER] {
        let started = sessions_started(s, room).await;
        assert!(
            started.is_empty(),
            "a forged start opened a call in {room}: {started:?}"
        );
    }
    assert!(s.log().contains("bad stream token"), "{}", s.log());

    // The genuine call still joins its room.
    let caller = dial(s, TOKEN).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        let started = sessions_started(s, ROOM).await;
        if !started.is_empty() || Instant::now() > deadline {
            break started;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(started.len(), 1, "{started:?}; log: {}", s.log());
    assert_eq!(
        started[0]["metadata"]["call_id"], "CA0001",
        "{}",
        started[0]
    );
    assert!(sessions_started(s, OTHER).await.is_empty());
    caller.hang_up().await;
}
