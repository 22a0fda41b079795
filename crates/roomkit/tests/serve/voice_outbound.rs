//! Outbound calls through the real binary: `POST /voice/calls` asks a fake
//! Twilio Calls API to ring a number; the fake then answers like Twilio
//! (the signed voice webhook, then the TwiML's media stream, which the test
//! opens as the callee's side), and the call joins the room. Refusals by
//! the provider, bad bodies, missing keys and missing settings are answered
//! with the contract's error shape and leave nothing behind.

use std::time::Duration;

use futures::SinkExt;
use roomkit_channels::sms::twilio::signature;
use roomkit_voice::fake::{AnsweredCall, FakeOpenAiAudio, FakeTwilio, TwilioRefusal};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::Server;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-outbound-token";
const KEY: &str = "outbound-api-key";
const OUR_NUMBER: &str = "+15550100200";
const CALLEE: &str = "+15557654321";
const ACME_KEY: &str = "acme-tenant-key";
/// Config lines that give `phone` an agent (appended to its table).
const AGENT: &str = r#"agents = ["bot"]

[[channels]]
id = "bot"
type = "ai"
provider = "echo"
"#;

/// A loopback port nobody listens on right now (the server is started on
/// it, so the public URL given to Twilio can name it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    s: Server,
    twilio: FakeTwilio,
    public_url: String,
    _speech: FakeOpenAiAudio,
}

/// The server with a websocket channel `web`, a Twilio voice channel
/// `phone` that can place calls through the fake, and `extra` appended
/// to the config.
async fn setup(extra: &str) -> Setup {
    let twilio = FakeTwilio::start(SID, TOKEN).await.unwrap();
    let speech = FakeOpenAiAudio::start("oa-test-key", Vec::<String>::new())
        .await
        .unwrap();
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let speech_table = format!(
        r#"{{ provider = "openai", base_url = "{}", api_key_env = "OA_KEY" }}"#,
        speech.base_url()
    );
    let config = format!(
        r#"
[server]
api_key_env = "ROOMKIT_API_KEY"
public_url = "{public_url}"

[[channels]]
id = "web"
type = "websocket"

[[channels]]
id = "phone"
type = "voice"
transport = "twilio"
from = "{OUR_NUMBER}"
api_base = "{api_base}"
stt = {speech_table}
tts = {speech_table}
{extra}
"#,
        api_base = twilio.base_url(),
    );
    let path = crate::config_file(&config);
    let addr = format!("127.0.0.1:{port}");
    let s = Server::start_with(
        &["--config", path.to_str().unwrap(), "--addr", &addr],
        &[
            ("ROOMKIT_API_KEY", KEY),
            ("TWILIO_AUTH_TOKEN", TOKEN),
            ("TWILIO_ACCOUNT_SID", SID),
            ("OA_KEY", "oa-test-key"),
            ("ACME_KEY", ACME_KEY),
        ],
    )
    .await;
    assert_eq!(s.addr, addr, "the server did not take the chosen port");
    Setup {
        s,
        twilio,
        public_url,
        _speech: speech,
    }
}

fn form_field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// Opens the answered call's media stream as Twilio would (signed) and
/// starts it with the TwiML's parameters.
async fn open_stream(answered: &AnsweredCall) -> crate::Ws {
    let url = answered
        .stream_url
        .clone()
        .unwrap_or_else(|| panic!("the TwiML connects no stream: {}", answered.twiml));
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "X-Twilio-Signature",
        signature(TOKEN, &url, &[]).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let params: serde_json::Map<String, Value> = answered
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for msg in [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ0042", "start": {
            "streamSid": "MZ0042", "accountSid": SID, "callSid": answered.call_sid, "tracks": ["inbound"],
            "customParameters": params,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }}),
    ] {
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
    }
    ws
}

/// Waits for the call's `session_started` event in `room`.
async fn session_started(s: &Server, room: &str, call_sid: &str) -> Value {
    for _ in 0..200 {
        let found = s.timeline(room).await.into_iter().find(|e| {
            e["content"]["type"] == "system"
                && e["content"]["code"] == "session_started"
                && e["source"]["channel_id"] == "phone"
        });
        if let Some(e) = found {
            assert_eq!(e["metadata"]["call_id"], call_sid, "{e}");
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the answered call did not join room {room}: {:?}\nlog: {}",
        s.timeline(room).await,
        s.log()
    );
}

/// Checks the fake got the right create request and answered the call
/// through the webhook, and returns what it answered.
async fn check_twilio_side(setup: &Setup, room: &str, call_sid: &str) -> AnsweredCall {
    let requests = setup.twilio.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let create = &requests[0];
    assert_eq!(create.status, 201, "{create:?}");
    assert_eq!(
        create.path,
        format!("/2010-04-01/Accounts/{SID}/Calls.json")
    );
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&create.body).unwrap();
    assert_eq!(form_field(&form, "To").as_deref(), Some(CALLEE));
    assert_eq!(form_field(&form, "From").as_deref(), Some(OUR_NUMBER));
    let webhook = format!(
        "{}/webhooks/voice/twilio?channel_id=phone&room_id={room}",
        setup.public_url
    );
    assert_eq!(form_field(&form, "Url").as_deref(), Some(webhook.as_str()));

    let answered = setup
        .twilio
        .wait_answered(1, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("Twilio never answered; log: {}", setup.s.log()))
        .remove(0);
    assert_eq!(answered.call_sid, call_sid);
    assert_eq!(answered.url, webhook);
    assert_eq!(
        answered.status,
        200,
        "the signed webhook was refused: {}; log: {}",
        answered.twiml,
        setup.s.log()
    );
    assert_eq!(
        answered.stream_url.as_deref(),
        Some(format!("ws://{}/voice/twilio/media?channel_id=phone", setup.s.addr).as_str()),
        "{}",
        answered.twiml
    );
    // The remote party (whose speech becomes messages) is the callee.
    assert_eq!(answered.parameter("from"), Some(CALLEE));
    assert_eq!(answered.parameter("to"), Some(OUR_NUMBER));
    assert_eq!(answered.parameter("direction"), Some("outbound"));
    assert_eq!(answered.parameter("room_id"), Some(room));
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_rings_the_number_and_the_answered_call_joins_the_room() {
    let setup = setup("").await;
    let s = &setup.s;
    s.ok("POST", "/rooms", Some(json!({"id": "out-room"})))
        .await;
    s.ok(
        "POST",
        "/rooms/out-room/channels",
        Some(json!({"channel_id": "web"})),
    )
    .await;
    let (status, v) = s
        .call(
            "POST",
            "/voice/calls",
            Some(json!({"channel_id": "phone", "to": CALLEE, "room_id": "out-room"})),
        )
        .await;
    assert_eq!(status, 201, "{v}; log: {}", s.log());
    let call_sid = v["call_sid"].as_str().unwrap().to_owned();
    assert!(call_sid.starts_with("CA"), "{v}");
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["room_id"], "out-room", "{v}");
    assert_eq!(v["room_created"], false, "{v}");
    assert_eq!(v["from"], OUR_NUMBER, "{v}");
    // The voice channel was attached so the call can join.
    let bindings = s.ok("GET", "/rooms/out-room/channels", None).await;
    assert!(
        bindings["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["channel_id"] == "phone"),
        "{bindings}"
    );

    let answered = check_twilio_side(&setup, "out-room", &call_sid).await;
    let _media = open_stream(&answered).await;
    let started = session_started(s, "out-room", &call_sid).await;
    assert_eq!(started["source"]["external_id"], CALLEE, "{started}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_without_a_room_gets_a_new_room_that_the_call_joins() {
    let setup = setup(AGENT).await;
    let s = &setup.s;
    let (status, v) = s
        .call(
            "POST",
            "/voice/calls",
            Some(
                json!({"channel_id": "phone", "to": CALLEE, "metadata": {"campaign": "renewals"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{v}; log: {}", s.log());
    assert_eq!(v["room_created"], true, "{v}");
    let room = v["room_id"].as_str().unwrap().to_owned();
    let call_sid = v["call_sid"].as_str().unwrap().to_owned();
    let stored = s.ok("GET", &format!("/rooms/{room}"), None).await;
    assert_eq!(stored["metadata"]["campaign"], "renewals", "{stored}");
    // The channel's agents were attached after the voice channel.
    let bindings = s.ok("GET", &format!("/rooms/{room}/channels"), None).await;
    let ids: Vec<&str> = bindings["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["channel_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["phone", "bot"], "{bindings}");

    let answered = check_twilio_side(&setup, &room, &call_sid).await;
    let _media = open_stream(&answered).await;
    session_started(s, &room, &call_sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_outbound_call_is_a_502_and_leaves_nothing_behind() {
    let setup = setup(AGENT).await;
    let s = &setup.s;
    s.ok("POST", "/rooms", Some(json!({"id": "kept"}))).await;
    s.ok(
        "POST",
        "/rooms/kept/channels",
        Some(json!({"channel_id": "web"})),
    )
    .await;
    s.post_text("kept", "web", "before").await;
    let rooms_before = s.ok("GET", "/rooms", None).await["items"].clone();

    setup.twilio.refuse_with(Some(TwilioRefusal {
        status: 400,
        code: 21211,
        message: "The 'To' number +15557654321 is not a valid phone number.".into(),
    }));
    for body in [
        json!({"channel_id": "phone", "to": CALLEE}),
        json!({"channel_id": "phone", "to": CALLEE, "room_id": "kept"}),
    ] {
        let (status, v) = s.call("POST", "/voice/calls", Some(body.clone())).await;
        assert_eq!(status, 502, "{body}: {v}");
        assert_eq!(v["error"]["code"], "provider_error", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("HTTP 400") && message.contains("21211"),
            "{message}"
        );
    }
    setup.twilio.refuse_with(Some(TwilioRefusal {
        status: 401,
        code: 20003,
        message: "Authenticate".into(),
    }));
    let (status, v) = s
        .call(
            "POST",
            "/voice/calls",
            Some(json!({"channel_id": "phone", "to": CALLEE})),
        )
        .await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not accepted"),
        "{v}"
    );
    setup.twilio.refuse_with(None);
    setup.twilio.set_faults(roomkit_voice::fake::Faults {
        fail_status: Some(503),
        ..Default::default()
    });
    let (status, v) = s
        .call(
            "POST",
            "/voice/calls",
            Some(json!({"channel_id": "phone", "to": CALLEE})),
        )
        .await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["code"], "provider_error", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("503"),
        "{v}"
    );

    // No room was left for the refused calls, and the existing room kept
    // its events and did not keep the voice channel.
    // (The attach and detach of the voice channel are stored, as every
    // attach is.)
    let ids = |rooms: &Value| {
        rooms
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect::<Vec<_>>()
    };
    let rooms_after = s.ok("GET", "/rooms", None).await["items"].clone();
    assert_eq!(ids(&rooms_before), ids(&rooms_after));
    let bindings = s.ok("GET", "/rooms/kept/channels", None).await;
    assert!(
        !bindings["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["channel_id"] == "phone"),
        "{bindings}"
    );
    assert!(
        s.timeline("kept")
            .await
            .iter()
            .any(|e| e["content"]["text"] == "before")
    );
    assert_eq!(setup.twilio.requests().len(), 4);
    assert!(setup.twilio.answered().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_outbound_call_requests_are_refused_before_twilio_is_asked() {
    // A second Twilio voice channel that lacks `from`.
    let extra = r#"
[[channels]]
id = "phone2"
type = "voice"
transport = "twilio"
api_base = "http://127.0.0.1:9"
stt = { provider = "openai", base_url = "http://127.0.0.1:9/v1", api_key_env = "OA_KEY" }
tts = { provider = "openai", base_url = "http://127.0.0.1:9/v1", api_key_env = "OA_KEY" }
"#;
    let setup = setup(extra).await;
    let s = &setup.s;

    // No key: 401, like every other REST endpoint.
    let resp = s
        .http
        .post(s.url("/voice/calls"))
        .json(&json!({"channel_id": "phone", "to": CALLEE}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized", "{v}");

    let cases = [
        (json!({"to": CALLEE}), 400, "invalid_field"),
        (json!({"channel_id": "phone"}), 400, "invalid_field"),
        (
            json!({"channel_id": "phone", "to": "12345"}),
            400,
            "invalid_field",
        ),
        (
            json!({"channel_id": "phone", "to": "+1 555 765 4321"}),
            400,
            "invalid_field",
        ),
        (
            json!({"channel_id": "phone", "to": CALLEE, "from": "me"}),
            400,
            "invalid_field",
        ),
        (
            json!({"channel_id": "phone", "to": CALLEE, "ring": 3}),
            400,
            "invalid_field",
        ),
        (
            json!({"channel_id": "phone", "to": CALLEE, "room_id": "x", "metadata": {}}),
            400,
            "invalid_field",
        ),
        (
            json!({"channel_id": "nope", "to": CALLEE}),
            404,
            "channel_not_found",
        ),
        (
            json!({"channel_id": "web", "to": CALLEE}),
            422,
            "channel_rejected",
        ),
        (
            json!({"channel_id": "phone", "to": CALLEE, "room_id": "no-such-room"}),
            404,
            "room_not_found",
        ),
        (
            json!({"channel_id": "phone2", "to": CALLEE}),
            422,
            "outbound_not_configured",
        ),
    ];
    for (body, status, code) in cases {
        let (got, v) = s.call("POST", "/voice/calls", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    let (status, v) = s
        .raw("POST", "/voice/calls", b"{\"channel_id\": ".to_vec())
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "malformed_json", "{v}");
    let (_, v) = s
        .call(
            "POST",
            "/voice/calls",
            Some(json!({"channel_id": "phone2", "to": CALLEE})),
        )
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`from`"),
        "{v}"
    );
    assert!(
        s.log()
            .contains("outbound calls (POST /voice/calls) will be refused")
            && s.log().contains("channels[2]"),
        "no startup warning; log: {}",
        s.log()
    );
    let (_, rooms) = s.call("GET", "/rooms", None).await;
    assert_eq!(
        rooms["items"],
        json!([]),
        "a refused request created a room"
    );
    assert!(setup.twilio.requests().is_empty());
}

/// An inbound call that names no room: the router creates one for it, and
/// the channel's `agents` are attached to it, so someone answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_without_a_room_gets_a_new_room_with_the_agents() {
    let setup = setup(AGENT).await;
    let s = &setup.s;
    // A room prepared with other channels is not touched.
    s.ok("POST", "/rooms", Some(json!({"id": "other"}))).await;
    s.ok(
        "POST",
        "/rooms/other/channels",
        Some(json!({"channel_id": "web"})),
    )
    .await;

    let webhook = format!("{}/webhooks/voice/twilio", setup.public_url);
    let form = vec![
        ("CallSid".to_owned(), "CA0077".to_owned()),
        ("From".to_owned(), "+15550007777".to_owned()),
        ("To".to_owned(), OUR_NUMBER.to_owned()),
        ("Direction".to_owned(), "inbound".to_owned()),
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
    // The stream's parameters (with its token) come from the TwiML.
    let parameters = roomkit_voice::fake::stream_parameters(&twiml);
    let answered = AnsweredCall {
        call_sid: "CA0077".into(),
        url: webhook,
        form,
        status: 200,
        twiml,
        stream_url: Some(s.ws_url("/voice/twilio/media")),
        parameters,
    };
    assert_eq!(answered.parameter("from"), Some("+15550007777"));
    assert_eq!(answered.parameter("to"), Some(OUR_NUMBER));
    let _media = open_stream(&answered).await;

    let mut room = None;
    for _ in 0..200 {
        let rooms = s.ok("GET", "/rooms", None).await;
        room = rooms["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .find(|id| id != "other");
        if room.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let room = room.unwrap_or_else(|| panic!("no room for the call; log: {}", s.log()));
    session_started(s, &room, "CA0077").await;
    let bindings = s.ok("GET", &format!("/rooms/{room}/channels"), None).await;
    let ids: Vec<&str> = bindings["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["channel_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["phone", "bot"], "{bindings}");
    let other = s.ok("GET", "/rooms/other/channels", None).await;
    assert_eq!(other["items"].as_array().unwrap().len(), 1, "{other}");
}

#[test]
fn bad_outbound_and_agent_keys_exit_2_naming_them() {
    let voice = |transport: &str, extra: &str| {
        format!(
            r#"
[[channels]]
id = "phone"
type = "voice"
transport = "{transport}"
{extra}
stt = {{ provider = "openai", api_key_env = "OA_KEY" }}
tts = {{ provider = "openai", api_key_env = "OA_KEY" }}
"#
        )
    };
    let cases = [
        (
            voice("twilio", r#"agents = ["ghost"]"#),
            "channels[0].agents[0]",
            "ghost",
        ),
        (
            voice("twilio", r#"agents = ["phone"]"#),
            "channels[0].agents[0]",
            "phone",
        ),
        (
            voice("twilio", r#"from = "5550100""#),
            "channels[0].from",
            "E.164",
        ),
        (
            voice("twilio", r#"api_base = "ftp://x""#),
            "channels[0].api_base",
            "http",
        ),
        (
            voice("twilio", r#"account_sid_env = "BAD_SID""#),
            "channels[0].account_sid_env",
            "BAD_SID",
        ),
        (
            voice("browser", r#"from = "+15550100200""#),
            "channels[0].from",
            "twilio",
        ),
        (
            voice("twilio", r#"form = "+15550100200""#),
            "channels[0]",
            "form",
        ),
    ];
    for (config, key, word) in cases {
        let path = crate::config_file(&config);
        let out = std::process::Command::new(crate::binary())
            .args(["serve", "--addr", "127.0.0.1:0", "--store", "memory://"])
            .arg("--config")
            .arg(&path)
            .env("OA_KEY", "k")
            .env("BAD_SID", "AC12/../x")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}\n{err}");
        assert!(err.contains(key) && err.contains(word), "{config}\n{err}");
    }
}

/// A tenant key places calls only into its organization's rooms, and a
/// room created for its call belongs to its organization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_key_calls_only_into_its_own_rooms() {
    let extra = r#"
[[server.tenant_keys]]
organization_id = "acme"
key_env = "ACME_KEY"
"#;
    let setup = setup(extra).await;
    let s = &setup.s;
    s.ok(
        "POST",
        "/rooms",
        Some(json!({"id": "foreign", "organization_id": "globex"})),
    )
    .await;
    let tenant = |body: Value| {
        s.http
            .post(s.url("/voice/calls"))
            .bearer_auth(ACME_KEY)
            .json(&body)
            .send()
    };
    let resp = tenant(json!({"channel_id": "phone", "to": CALLEE, "room_id": "foreign"}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "room_not_found", "{v}");
    assert!(setup.twilio.requests().is_empty());
    let bindings = s.ok("GET", "/rooms/foreign/channels", None).await;
    assert_eq!(bindings["items"], json!([]), "{bindings}");

    let resp = tenant(json!({"channel_id": "phone", "to": CALLEE}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let v: Value = resp.json().await.unwrap();
    let room = v["room_id"].as_str().unwrap();
    let stored = s.ok("GET", &format!("/rooms/{room}"), None).await;
    assert_eq!(stored["organization_id"], "acme", "{stored}");
}

/// The media socket answers like `/ws`: a signed request that is not an
/// upgrade is told so with 400 `websocket_upgrade_required`, and a path
/// segment that is not UTF-8 is a 400 `invalid_path`, both in the JSON
/// error shape and both codes the OpenAPI document lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_request_on_the_media_socket_is_told_to_upgrade() {
    let setup = setup("").await;
    let s = &setup.s;
    let signed = format!(
        "{}/voice/twilio/media",
        setup.public_url.replacen("http://", "ws://", 1)
    );
    let resp = s
        .http
        .get(s.url("/voice/twilio/media"))
        .header("X-Twilio-Signature", signature(TOKEN, &signed, &[]))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["code"], "websocket_upgrade_required",
        "{body}"
    );

    let (status, body) = s.call("GET", "/voice/%FF/media", None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_path", "{body}");

    let doc = s.ok("GET", "/openapi.json", None).await;
    let media =
        &doc["paths"]["/voice/{provider}/media"]["get"]["responses"]["400"]["x-error-codes"];
    for code in ["websocket_upgrade_required", "invalid_path"] {
        assert!(
            media
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == code)),
            "{code} is not documented: {media}"
        );
    }
}

/// Runs `roomkit serve` on `config` and returns its exit code and stderr;
/// a server that is still running after 30 s (it took the config) is
/// killed and reported with no code.
fn serve_exit(config: &str) -> (Option<i32>, String, String) {
    let path = crate::config_file(config);
    let err = path.with_extension("stderr");
    let mut child = std::process::Command::new(crate::binary())
        .args(["serve", "--addr", "127.0.0.1:0", "--store", "memory://"])
        .arg("--config")
        .arg(&path)
        .env("OA_KEY", "k")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    (code, stderr, path.to_string_lossy().into_owned())
}

/// An audio pipeline that no call could run is refused at load (exit 2,
/// naming `channels[N].pipeline` and the problem) rather than hanging up
/// every call at its start; so is a Twilio-only key on a browser channel.
#[test]
fn an_audio_pipeline_no_call_could_run_exits_2_naming_it() {
    let voice = |transport: &str, extra: &str, pipeline: &str| {
        format!(
            r#"
[[channels]]
id = "phone"
type = "voice"
transport = "{transport}"
{extra}
stt = {{ provider = "openai", api_key_env = "OA_KEY" }}
tts = {{ provider = "openai", api_key_env = "OA_KEY" }}

[channels.pipeline]
{pipeline}
"#
        )
    };
    let cases = [
        (
            voice("twilio", "", "resampler = { internal_sample_rate = 11025 }"),
            "channels[0].pipeline",
            "10 ms",
        ),
        (
            voice("twilio", "", "resampler = { internal_channels = 2 }"),
            "channels[0].pipeline",
            "mono",
        ),
        (
            voice(
                "browser",
                "",
                "resampler = { internal_sample_rate = 22050 }\nvad = { provider = \"webrtc\" }",
            ),
            "channels[0].pipeline",
            "WebRTC VAD",
        ),
        (
            voice("browser", r#"auth_token_env = "TWILIO_AUTH_TOKEN""#, ""),
            "channels[0].auth_token_env",
            "twilio",
        ),
    ];
    for (config, key, word) in cases {
        let (code, err, path) = serve_exit(&config);
        assert_eq!(code, Some(2), "{config}\n{err}");
        assert!(
            err.contains(&path) && err.contains(key) && err.contains(word),
            "{config}\n{err}"
        );
    }
}
