//! A phone call over SIP through the real binary: SIPp calls the server's
//! SIP address, plays a spoken question (espeak-ng, in a pcap built here)
//! and an RFC 4733 digit, and hangs up. The question is transcribed (the
//! fake Deepgram: 8 kHz audio is beyond the offline model) into the room,
//! the agent (the fake OpenAI chat) answers, the answer is spoken (the fake
//! ElevenLabs) and comes back as RTP that decodes to speech; the digit
//! reaches the room's socket as a DTMF event; the SIP messages reach an
//! `on_protocol_trace` hook with the room; the call is exported to the
//! fake Roark exactly once.
//!
//! Needs sipp, espeak-ng and sox (`scripts/setup test` installs them).

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_testkit::sipp::{
    SIPP_PCAP_DIR, Scenario, Sipp, Step, free_udp_port, g711_packets, scratch_dir, speech_8k,
    tools_present as sipp_present, ulaw_decode, write_rtp_pcap,
};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::next_frame;
use crate::voice_twilio::{ROOM, deepgram_and_elevenlabs, missing, rms, setup_transport};

const KEY: &str = "rk_live_sip_test";

/// An HTTP hook receiver keeping every request.
async fn hook_server() -> (String, Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(body);
                axum::Json(json!({"action": "allow"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen, task)
}

/// Reads RTP at `socket` for `limit`: decoded µ-law audio.
fn ear(socket: UdpSocket, limit: Duration) -> Vec<i16> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut audio = Vec::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < limit {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if n > 12 && buf[1] & 0x7f == 0 {
            audio.extend(buf[12..n].iter().map(|&b| ulaw_decode(b)));
        }
    }
    audio
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sipp_call_is_heard_answered_traced_and_exported_once() {
    if !sipp_present() {
        return missing("sipp, espeak-ng and sox are needed for the SIP call");
    }
    let dir = scratch_dir("serve-sip");
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let (hook, seen, _hook_task) = hook_server().await;
    let sip_port = free_udp_port();
    let spool = dir.join("spool");
    let extra = format!(
        r#"
[channels.sip]
listen = "127.0.0.1:{sip_port}"
ring_ms = 100
rtp_timeout_s = 20
routes = [{{ to = "*", room_id = "{ROOM}" }}]

[[hooks]]
name = "sip-traces"
trigger = "on_protocol_trace"
url = "{hook}"

[analytics]
spool_dir = "{}"

[analytics.roark]
api_key_env = "ROARK_SIP_TEST_KEY"
agent_id = "phone-bot"
"#,
        spool.display()
    );
    let base = fake.base_url();
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let mut setup = setup_transport(
        "sip",
        &stt,
        &tts,
        fakes,
        &extra,
        &[
            ("ROARK_SIP_TEST_KEY", KEY),
            ("ROARK_BASE_URL", base.as_str()),
        ],
    )
    .await;

    // The caller: the question, a pause, digit 1, time for the answer, BYE.
    let question = speech_8k("what time is it", &dir);
    let pcap = dir.join("question.pcap");
    let mut padded = vec![0i16; 2400];
    padded.extend_from_slice(&question);
    padded.extend(std::iter::repeat_n(0, 8000));
    write_rtp_pcap(&pcap, &g711_packets(&padded, 0x5150), 6000, 7000);
    let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut scenario = Scenario::call(
        "agent",
        vec![
            Step::PlayPcap(pcap),
            Step::Pause(Duration::from_millis(padded.len() as u64 / 8 + 200)),
            Step::PlayPcap(format!("{SIPP_PCAP_DIR}/dtmf_2833_1.pcap").into()),
            Step::Pause(Duration::from_secs(8)),
            Step::Bye,
        ],
    );
    scenario.media_port = Some(listener.local_addr().unwrap().port());
    let target = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let sipp = Sipp::call(&scenario.to_xml(), target, &dir, &[]);
    let answer = std::thread::spawn(move || ear(listener, Duration::from_secs(14)));

    // The digit reaches the room's socket.
    let deadline = Instant::now() + Duration::from_secs(20);
    let digit = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no DTMF event on the room socket; log: {}",
            setup.s.log()
        );
        let Ok(Ok(f)) = tokio::time::timeout(left, next_frame(&mut setup.room_ws)).await else {
            continue;
        };
        if f["type"] == "ephemeral" && f["event"]["content"]["code"] == "dtmf" {
            break f;
        }
    };
    assert_eq!(digit["event"]["content"]["data"]["digit"], "1", "{digit}");
    assert_eq!(
        digit["event"]["content"]["data"]["source"], "signaling",
        "{digit}"
    );

    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(40)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}; log: {}", setup.s.log());
    let answer = answer.join().unwrap();
    assert!(
        answer.len() >= 8000 && rms(&answer) > 1000.0,
        "the answer did not come back as speech ({} samples, rms {:.0}); log: {}",
        answer.len(),
        rms(&answer),
        setup.s.log()
    );

    // The question and the answer are in the room.
    let s = &setup.s;
    let timeline = s.timeline(ROOM).await;
    let asked = timeline.iter().find(|e| {
        e["source"]["channel_id"] == "phone" && e["content"]["text"] == "what time is it"
    });
    assert!(
        asked.is_some(),
        "the question is not in the room: {timeline:?}"
    );
    assert_eq!(
        asked.unwrap()["source"]["external_id"],
        "+15550100",
        "{asked:?}"
    );
    assert!(
        timeline
            .iter()
            .any(|e| e["source"]["channel_id"] == "bot" && e["type"] == "message"),
        "no answer in the room: {timeline:?}"
    );

    // Exported once: one call started, one ended.
    let of = |kind: &str| {
        fake.accepted_events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .count()
    };
    for _ in 0..300 {
        if of("call-ended") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (of("call-started"), of("call-ended")),
        (1, 1),
        "{:?}",
        fake.accepted_events()
    );

    // The SIP messages reached the trace hook, with the room.
    let traces: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["trigger"] == "on_protocol_trace")
        .cloned()
        .collect();
    let summaries: Vec<String> = traces
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["payload"]["direction"].as_str().unwrap_or_default(),
                t["payload"]["summary"].as_str().unwrap_or_default()
            )
        })
        .collect();
    for wanted in [
        "inbound INVITE from +15550100 to agent",
        "outbound 200 OK (INVITE)",
        "inbound BYE from +15550100",
    ] {
        assert!(
            summaries.iter().any(|s| s == wanted),
            "no {wanted:?} trace in {summaries:?}"
        );
    }
    for t in &traces {
        assert_eq!(t["payload"]["protocol"], "sip", "{t}");
        assert_eq!(t["payload"]["room_id"], ROOM, "{t}");
        assert!(
            t["payload"]["raw"]
                .as_str()
                .unwrap_or_default()
                .contains("SIP/2.0"),
            "{t}"
        );
    }
}

/// A deterministic random source for the shaper (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The caller's RTP sent through a shaper on loopback: each packet is lost
/// with probability `loss` and otherwise delayed by up to `jitter`, so
/// packets also arrive out of order. Returns when the last one is sent.
fn send_shaped(
    socket: &UdpSocket,
    to: std::net::SocketAddr,
    packets: &[roomkit_testkit::sipp::TimedPacket],
    loss: f64,
    jitter: Duration,
    seed: u64,
) -> usize {
    let mut rng = Rng(seed);
    let mut schedule: Vec<(Duration, &[u8])> = Vec::new();
    for p in packets {
        if rng.unit() < loss {
            continue;
        }
        let delay = jitter.mul_f64(rng.unit());
        schedule.push((Duration::from_millis(p.at_ms) + delay, &p.rtp));
    }
    schedule.sort_by_key(|(at, _)| *at);
    let start = std::time::Instant::now();
    for (at, bytes) in &schedule {
        if let Some(wait) = at.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let _ = socket.send_to(bytes, to);
    }
    schedule.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_through_five_percent_loss_and_40_ms_jitter_is_one_utterance_and_answered() {
    if !sipp_present() {
        return missing("sipp, espeak-ng and sox are needed for the SIP call");
    }
    let dir = scratch_dir("serve-sip-shaped");
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let sip_port = free_udp_port();
    let extra = format!(
        r#"
[channels.sip]
listen = "127.0.0.1:{sip_port}"
rtp_timeout_s = 20
routes = [{{ to = "*", room_id = "{ROOM}" }}]

[analytics]
spool_dir = "{}"

[analytics.roark]
api_key_env = "ROARK_SIP_TEST_KEY"
agent_id = "phone-bot"
"#,
        dir.join("spool").display()
    );
    let base = fake.base_url();
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let setup = setup_transport(
        "sip",
        &stt,
        &tts,
        fakes,
        &extra,
        &[
            ("ROARK_SIP_TEST_KEY", KEY),
            ("ROARK_BASE_URL", base.as_str()),
        ],
    )
    .await;
    let s = &setup.s;

    // SIPp signals; the test's own socket is the caller's media, behind
    // the shaper.
    let media = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut scenario = Scenario::call(
        "agent",
        vec![Step::Pause(Duration::from_secs(14)), Step::Bye],
    );
    scenario.media_port = Some(media.local_addr().unwrap().port());
    let target = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let sipp = Sipp::call(&scenario.to_xml(), target, &dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let server_port = loop {
        if let Some(p) = sipp.answered_media_port() {
            break p;
        }
        assert!(Instant::now() < deadline, "no SDP answer; log: {}", s.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let server_media: std::net::SocketAddr = format!("127.0.0.1:{server_port}").parse().unwrap();

    let question = speech_8k("what time is it", &dir);
    let mut padded = vec![0i16; 2400];
    padded.extend_from_slice(&question);
    padded.extend(std::iter::repeat_n(0, 12_000));
    let packets = g711_packets(&padded, 0xfeed);
    let total = packets.len();
    let sender = media.try_clone().unwrap();
    let started = std::time::Instant::now();
    let shaped = std::thread::spawn(move || {
        send_shaped(
            &sender,
            server_media,
            &packets,
            0.05,
            Duration::from_millis(40),
            0x5eed_0001,
        )
    });
    let answer = std::thread::spawn(move || ear(media, Duration::from_secs(12)));
    let sent = shaped.join().unwrap();
    let lost = total - sent;
    assert!(lost > 0, "the shaper lost nothing of {total}");
    let answer = answer.join().unwrap();
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let call_ms = started.elapsed().as_millis() as u64;
    assert!(done.is_ok(), "{done:?}; log: {}", s.log());

    // One utterance, transcribed; the answer heard.
    let timeline = s.timeline(ROOM).await;
    let heard: Vec<&Value> = timeline
        .iter()
        .filter(|e| e["source"]["channel_id"] == "phone" && e["content"]["type"] == "text")
        .collect();
    assert_eq!(
        heard.len(),
        1,
        "the question arrived as {} utterances ({lost} of {total} packets lost): {heard:?}",
        heard.len()
    );
    assert_eq!(heard[0]["content"]["text"], "what time is it");
    assert!(
        answer.len() >= 8000 && rms(&answer) > 1000.0,
        "the answer was not heard ({} samples, rms {:.0})",
        answer.len(),
        rms(&answer)
    );

    // The recording covers the call without gaps in time.
    for _ in 0..300 {
        if fake
            .accepted_events()
            .iter()
            .any(|e| e["event"] == "call-ended")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started_event = fake
        .accepted_events()
        .into_iter()
        .find(|e| e["event"] == "call-started")
        .expect("the call was exported");
    let call_id = started_event["livekitCallId"].as_str().unwrap().to_owned();
    let stereo = fake.stitched(&call_id);
    let recorded_ms = (stereo.len() / 4 / 24) as u64;
    assert!(
        recorded_ms + 1_000 >= call_ms,
        "the recording holds {recorded_ms} ms of a {call_ms} ms call"
    );
}

/// `POST /voice/calls` on a SIP channel calls through the trunk: the trunk
/// (a SIPp UAS) challenges with digest, the server answers with the
/// credentials from the environment, the REST call returns once the phone
/// rings, and the answered call joins the room until the callee hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_outbound_call_goes_through_the_trunk_with_digest_authentication() {
    if !sipp_present() {
        return missing("sipp, espeak-ng and sox are needed for the SIP call");
    }
    let dir = scratch_dir("serve-sip-outbound");
    let trunk = Sipp::answer(
        &roomkit_testkit::sipp::uas_xml(
            Some(("trunk-user", "trunk-secret")),
            Some(Duration::from_secs(3)),
        ),
        &dir,
        &[],
    );
    let sip_port = free_udp_port();
    let extra = format!(
        r#"
[channels.sip]
listen = "127.0.0.1:{sip_port}"

[[channels.sip.trunks]]
name = "test-trunk"
proxy = "127.0.0.1:{}"
username_env = "TRUNK_USER"
password_env = "TRUNK_PASSWORD"
from = "+15550001111"
"#,
        trunk.sip_port
    );
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let setup = setup_transport(
        "sip",
        &stt,
        &tts,
        fakes,
        &extra,
        &[
            ("TRUNK_USER", "trunk-user"),
            ("TRUNK_PASSWORD", "trunk-secret"),
        ],
    )
    .await;
    let s = &setup.s;
    let (status, body) = s
        .call(
            "POST",
            "/voice/calls",
            Some(json!({"channel_id": "phone", "to": "+15557654321", "room_id": ROOM})),
        )
        .await;
    assert_eq!(status, 201, "{body}; log: {}", s.log());
    // The trunk answers right after ringing: either may be the news.
    assert!(
        body["status"] == "ringing" || body["status"] == "in-progress",
        "{body}"
    );
    assert_eq!(body["from"], "+15550001111", "{body}");
    assert!(
        body["call_sid"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );

    // The answered call joins the room, and ends when the trunk hangs up.
    let done = tokio::task::spawn_blocking(move || trunk.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}; log: {}", s.log());
    let timeline = s.timeline(ROOM).await;
    let started = timeline
        .iter()
        .find(|e| e["content"]["code"] == "session_started")
        .unwrap_or_else(|| panic!("no call in the room: {timeline:?}"));
    assert_eq!(started["content"]["data"]["transport"], "sip", "{started}");
    assert_eq!(
        started["content"]["data"]["to"], "+15557654321",
        "{started}"
    );
}

/// A trunk that refuses the credentials is the REST caller's 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_a_502_naming_the_sip_status() {
    if !sipp_present() {
        return missing("sipp, espeak-ng and sox are needed for the SIP call");
    }
    let dir = scratch_dir("serve-sip-outbound-bad");
    let trunk = Sipp::answer(
        &roomkit_testkit::sipp::uas_xml(Some(("trunk-user", "trunk-secret")), None),
        &dir,
        &[],
    );
    let sip_port = free_udp_port();
    let extra = format!(
        r#"
[channels.sip]
listen = "127.0.0.1:{sip_port}"

[[channels.sip.trunks]]
name = "test-trunk"
proxy = "127.0.0.1:{}"
username_env = "TRUNK_USER"
password_env = "TRUNK_PASSWORD"
"#,
        trunk.sip_port
    );
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let setup = setup_transport(
        "sip",
        &stt,
        &tts,
        fakes,
        &extra,
        &[("TRUNK_USER", "trunk-user"), ("TRUNK_PASSWORD", "wrong")],
    )
    .await;
    let (status, body) = setup
        .s
        .call(
            "POST",
            "/voice/calls",
            Some(json!({"channel_id": "phone", "to": "+15557654321", "room_id": ROOM})),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("403"),
        "{body}"
    );
}

/// `examples/sip-offline.toml` starts with its SIP address taken from
/// `ROOMKIT_SIP_LISTEN` and answers any INVITE with the offline agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sip_offline_example_answers_an_invite_at_roomkit_sip_listen() {
    if !sipp_present() {
        return missing("sipp, espeak-ng and sox are needed for the SIP call");
    }
    let offline = roomkit_voice::registry::STT_PROVIDERS.contains(&"pocketsphinx")
        && roomkit_voice::registry::TTS_PROVIDERS.contains(&"espeak");
    if !offline {
        return missing("this build has no offline speech providers (scripts/test turns them on)");
    }
    let dir = scratch_dir("serve-sip-example");
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sip-offline.toml");
    let sip_port = free_udp_port();
    let listen = format!("127.0.0.1:{sip_port}");
    let store = format!("sqlite://{}", dir.join("example.db").display());
    let s = crate::Server::start_with(
        &["--config", example.to_str().unwrap(), "--store", &store],
        &[("ROOMKIT_SIP_LISTEN", listen.as_str())],
    )
    .await;
    let question = speech_8k("hello", &dir);
    let pcap = dir.join("hello.pcap");
    write_rtp_pcap(&pcap, &g711_packets(&question, 9), 6000, 7000);
    let scenario = Scenario::call(
        "agent",
        vec![
            Step::PlayPcap(pcap),
            Step::Pause(Duration::from_secs(4)),
            Step::Bye,
        ],
    );
    let sipp = Sipp::call(&scenario.to_xml(), listen.parse().unwrap(), &dir, &[]);
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}; log: {}", s.log());
    // The call got a room of its own with the agent in it.
    let rooms = s.ok("GET", "/rooms?limit=100", None).await;
    let mut found = false;
    for room in rooms["items"].as_array().cloned().unwrap_or_default() {
        let id = room["id"].as_str().unwrap_or_default().to_owned();
        let timeline = s.timeline(&id).await;
        let called = timeline.iter().any(|e| {
            e["content"]["code"] == "session_started" && e["content"]["data"]["transport"] == "sip"
        });
        let agent = timeline.iter().any(|e| {
            e["content"]["code"] == "channel_attached"
                && e["content"]["data"]["channel_id"] == "bot"
        });
        found |= called && agent;
    }
    assert!(
        found,
        "no room with the SIP call and the agent: {rooms}; log: {}",
        s.log()
    );
}

/// `POST /voice/calls/{call_sid}/transfer` hands a running SIP call to a
/// number: the caller gets a REFER for it, reports the target's answer,
/// and the call ends with a BYE. An unknown call is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_transfer_sends_refer_and_ends_the_call_when_the_target_answers() {
    if !sipp_present() {
        return missing("sipp, espeak-ng and sox are needed for the SIP call");
    }
    let dir = scratch_dir("serve-sip-transfer");
    let sip_port = free_udp_port();
    let extra = format!(
        r#"
[channels.sip]
listen = "127.0.0.1:{sip_port}"
routes = [{{ to = "*", room_id = "{ROOM}" }}]
"#
    );
    let (stt, tts, fakes) = deepgram_and_elevenlabs().await;
    let setup = setup_transport("sip", &stt, &tts, fakes, &extra, &[]).await;
    let s = &setup.s;
    let scenario = Scenario::call(
        "agent",
        vec![Step::ExpectRefer {
            timeout: Duration::from_secs(20),
        }],
    );
    let target = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let sipp = Sipp::call(&scenario.to_xml(), target, &dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let call_id = loop {
        let timeline = s.timeline(ROOM).await;
        if let Some(id) = timeline
            .iter()
            .find(|e| e["content"]["code"] == "session_started")
            .and_then(|e| e["content"]["data"]["call_id"].as_str())
        {
            break id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the call did not start; log: {}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = s
        .call(
            "POST",
            "/voice/calls/no-such-call/transfer",
            Some(json!({"channel_id": "phone", "to": "+15559990000"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("call_not_found")),
        "{body}"
    );
    let (status, body) = s
        .call(
            "POST",
            &format!("/voice/calls/{call_id}/transfer"),
            Some(json!({"channel_id": "phone", "to": "+15559990000"})),
        )
        .await;
    assert_eq!(status, 202, "{body}; log: {}", s.log());
    assert_eq!(body["status"], "transferring");
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}; log: {}", s.log());
}
