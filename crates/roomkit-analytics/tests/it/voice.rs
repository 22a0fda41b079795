//! Voice sessions as calls: a session's call takes over its room from a
//! text call, its transcript and turn metrics come from the session's
//! framework events on its media clock, its audio through the recording
//! sink, and its end ends the call. Room messages of the session and of
//! the AI channel are not doubled into the transcript; typed ones stay.

use std::sync::Arc;
use std::time::Duration;

use roomkit_analytics::fake::{FakeRoark, Faults};
use roomkit_analytics::{
    CallAnalytics, ExportState, Exporter, RoomCallPolicy, StartCall, VOICE_END_REASON,
    VOICE_SESSION_ID, VOICE_TAKEOVER_REASON,
};
use roomkit_audio::{AudioFrame, RecordingSink};
use roomkit_core::model::{ChannelId, FrameworkEvent, InboundMessage, RoomId};
use roomkit_core::{AttachOptions, CreateRoom, RoomKit};
use roomkit_testkit::RecordingChannel;
use serde_json::Value;

use crate::util::*;

struct Rig {
    fake: FakeRoark,
    a: CallAnalytics,
    kit: RoomKit,
    room: RoomId,
}

async fn rig(tag: &str) -> Rig {
    rig_with(tag, RoomCallPolicy::new("agent-7")).await
}

async fn rig_with(tag: &str, policy: RoomCallPolicy) -> Rig {
    let fake = FakeRoark::start(KEY, Faults::default()).await.unwrap();
    let spool = tmp_dir(tag);
    let a = analytics(
        &spool,
        vec![Arc::new(roark(&fake.base_url(), KEY)) as Arc<dyn Exporter>],
    );
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("Typed answer.");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(ai.arc())
        .build()
        .unwrap();
    a.observe_rooms(&kit, policy);
    let room = kit
        .create_room(CreateRoom::with_id("room-v"))
        .await
        .unwrap()
        .id;
    for c in ["ws", "ai"] {
        kit.attach_channel(&room, &ChannelId::from(c), AttachOptions::default())
            .await
            .unwrap();
    }
    Rig { fake, a, kit, room }
}

async fn say(kit: &RoomKit, text: &str, voice_session: Option<&str>) {
    let mut m = InboundMessage::text("ws", "alice", text).in_room("room-v");
    if let Some(s) = voice_session {
        m.metadata.insert(VOICE_SESSION_ID.into(), s.into());
    }
    kit.process_inbound(m).await.unwrap();
    kit.idle().await;
}

fn voice_start(room: &RoomId, call_id: &str) -> StartCall {
    let mut s = StartCall::new(room.clone(), "agent-7");
    s.call_id = Some(call_id.into());
    s
}

fn transcript(session: &str, role: &str, text: &str, start_ms: f64, end_ms: f64) -> FrameworkEvent {
    FrameworkEvent::VoiceTranscript {
        session_id: session.into(),
        room_id: "room-v".into(),
        channel_id: "voice".into(),
        role: role.into(),
        text: text.into(),
        start_ms,
        end_ms,
        interrupted: false,
    }
}

fn turn(session: &str, ttft: Option<f64>) -> FrameworkEvent {
    FrameworkEvent::VoiceTurnMetrics {
        session_id: session.into(),
        room_id: "room-v".into(),
        channel_id: "voice".into(),
        speech_end_ms: 1000.0,
        eou_delay_ms: 300.0,
        stt_latency_ms: Some(120.0),
        llm_ttft_ms: ttft,
        tts_ttfb_ms: Some(180.0),
        voice_to_voice_ms: Some(500.0),
    }
}

/// Frames of 20 ms at `RATE`: a 440 Hz tone from the caller for
/// `0..1000 ms`, silence after; the agent's 880 Hz from 1500 to 2500 ms.
fn feed(sink: &dyn RecordingSink) {
    for f in 0..150u64 {
        let first = f * FRAME as u64;
        let at = (f * 20) as f64;
        let caller = if f < 50 {
            tone(440.0, first, FRAME)
        } else {
            vec![0; FRAME]
        };
        sink.on_inbound("s", &AudioFrame::new(caller, RATE, 1).unwrap().at(at));
        if (75..125).contains(&f) {
            let agent = tone(880.0, first, FRAME);
            sink.on_outbound("s", &AudioFrame::new(agent, RATE, 1).unwrap().at(at));
        }
    }
}

fn rms(s: &[i16]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
}

fn ended(fake: &FakeRoark, call_id: &str) -> Vec<Value> {
    fake.accepted_events()
        .into_iter()
        .filter(|e| e["event"] == "call-ended" && e["livekitCallId"] == call_id)
        .collect()
}

async fn settled(r: &Rig) {
    r.kit.idle().await;
    // The dispatcher routes on its own task.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_session_is_a_call_with_both_sides_transcript_and_metrics() {
    let r = rig("voice").await;
    // A typed exchange first: the room's text call.
    say(&r.kit, "Hello by text", None).await;
    settled(&r).await;
    let text_call = r.a.call_in_room(&r.room).expect("a text call");
    assert!(!text_call.is_voice());

    // The voice session starts: its call takes the room over.
    let sink =
        r.a.start_voice_call("vs-MZ1-0", voice_start(&r.room, "vs-MZ1-0"))
            .expect("a voice call");
    assert_eq!(text_call.exported().await, ExportState::Completed);
    let text_id = text_call.call_id().to_owned();
    let t_ended = ended(&r.fake, &text_id);
    assert_eq!(t_ended.len(), 1);
    assert_eq!(t_ended[0]["callEndedReason"], VOICE_TAKEOVER_REASON);
    let call =
        r.a.call_in_room(&r.room)
            .expect("the voice call holds the room");
    assert!(call.is_voice());
    assert_eq!(call.call_id(), "vs-MZ1-0");
    assert_eq!(
        r.a.call_of_session("vs-MZ1-0").unwrap().call_id(),
        "vs-MZ1-0"
    );

    feed(&sink);
    // Where the session's media clock starts on the call's.
    let origin = u64::try_from(sink.origin().as_millis()).unwrap();
    let near = |v: &Value, ms: u64| {
        let v = v.as_u64().unwrap();
        assert!(
            (origin + ms..=origin + ms + 1).contains(&v),
            "{v} is not {ms} ms after {origin}"
        );
    };
    // What the session committed and the AI's text answer stay out of the
    // transcript; a message typed by someone else is kept.
    say(&r.kit, "what time is it", Some("vs-MZ1-0")).await;
    say(&r.kit, "typed during the call", None).await;
    r.kit.emit_framework_event(transcript(
        "vs-MZ1-0",
        "user",
        "what time is it",
        40.0,
        1000.0,
    ));
    r.kit.emit_framework_event(turn("vs-MZ1-0", Some(250.0)));
    r.kit.emit_framework_event(transcript(
        "vs-MZ1-0",
        "agent",
        "It is noon.",
        1500.0,
        2500.0,
    ));
    // Garbage for another session, and an unknown role: ignored.
    r.kit
        .emit_framework_event(FrameworkEvent::VoiceTurnMetrics {
            session_id: "other".into(),
            room_id: "room-v".into(),
            channel_id: "voice".into(),
            speech_end_ms: f64::NAN,
            eou_delay_ms: -5.0,
            stt_latency_ms: Some(f64::INFINITY),
            llm_ttft_ms: None,
            tts_ttfb_ms: None,
            voice_to_voice_ms: None,
        });
    r.kit
        .emit_framework_event(transcript("vs-MZ1-0", "narrator", "x", 0.0, 1.0));
    settled(&r).await;
    r.kit
        .emit_framework_event(FrameworkEvent::VoiceSessionEnded {
            session_id: "vs-MZ1-0".into(),
            room_id: r.room.clone(),
            duration_ms: 3000,
        });
    assert_eq!(call.exported().await, ExportState::Completed);
    assert!(r.a.call_of_session("vs-MZ1-0").is_none());

    let started: Vec<_> = r
        .fake
        .accepted_events()
        .into_iter()
        .filter(|e| e["event"] == "call-started" && e["livekitCallId"] == "vs-MZ1-0")
        .collect();
    assert_eq!(started.len(), 1);
    let e = ended(&r.fake, "vs-MZ1-0");
    assert_eq!(e.len(), 1, "call-ended once");
    let e = &e[0];
    assert_eq!(e["callEndedReason"], VOICE_END_REASON);
    assert_eq!(e["recordingNumChannels"], 2);
    assert_eq!(e["agentSpokeFirst"], false);

    let t = e["transcript"].as_array().unwrap();
    let lines: Vec<(&str, &str)> = t
        .iter()
        .map(|x| (x["role"].as_str().unwrap(), x["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            ("user", "typed during the call"),
            ("user", "what time is it"),
            ("assistant", "It is noon."),
        ],
        "{t:?}"
    );
    // Spans on the media clock, from the session's zero.
    near(&t[1]["audioOffsetMs"], 40);
    near(&t[1]["endAudioOffsetMs"], 1000);
    near(&t[2]["audioOffsetMs"], 1500);
    near(&t[2]["endAudioOffsetMs"], 2500);

    let m = e["metrics"].as_array().unwrap();
    let kinds: Vec<&str> = m.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["eou", "stt", "tts", "llm"], "{m:?}");
    let eou = &m[0];
    assert_eq!(eou["endOfUtteranceDelay"], 0.3);
    assert_eq!(eou["transcriptionDelay"], 0.12);
    assert_eq!(eou["extra"]["type"], "eou_metrics");
    assert_eq!(eou["extra"]["voice_to_voice_delay"], 0.5);
    near(&eou["audioOffsetMs"], 1300);
    assert_eq!(m[1]["duration"], 0.12);
    assert_eq!(m[2]["ttfb"], 0.18);
    near(&m[2]["audioOffsetMs"], 1500);
    near(&m[1]["audioOffsetMs"], 1120);
    near(&m[3]["audioOffsetMs"], 1550);
    assert_eq!(
        m[3]["ttft"], 0.25,
        "no AI channel metrics: the voice one stays"
    );
    assert_eq!(m[3]["extra"]["source"], "voice");

    // Caller on the left while they speak, the agent on the right while it
    // answers; the other side silent meanwhile.
    let (left, right) = split_stereo(&r.fake.stitched("vs-MZ1-0"));
    let at = |ms: usize| ms * RATE as usize / 1000;
    let (q, a) = ((at(100), at(900)), (at(1600), at(2400)));
    assert!(rms(&left[q.0..q.1]) > 4000.0);
    assert!(rms(&right[q.0..q.1]) < 10.0);
    assert!(rms(&right[a.0..a.1]) > 4000.0);
    assert!(rms(&left[a.0..a.1]) < 10.0);

    // The next typed message starts a new text call.
    say(&r.kit, "back to text", None).await;
    settled(&r).await;
    let next = r.a.call_in_room(&r.room).expect("a new text call");
    assert!(!next.is_voice());
    assert_ne!(next.call_id(), text_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_channels_llm_metrics_replace_the_voice_measured_ones() {
    let r = rig("voice-llm").await;
    let _sink =
        r.a.start_voice_call("vs-MZ2-0", voice_start(&r.room, "vs-MZ2-0"))
            .expect("a voice call");
    // The session's own message does not start a text call either.
    say(&r.kit, "hi", Some("vs-MZ2-0")).await;
    r.kit.emit_framework_event(turn("vs-MZ2-0", Some(250.0)));
    r.kit.emit_framework_event(FrameworkEvent::AiTurnMetrics {
        room_id: r.room.clone(),
        channel_id: "ai".into(),
        event_id: Default::default(),
        ttft_ms: Some(310.0),
        duration_ms: 900.0,
        prompt_tokens: 120,
        completion_tokens: 14,
        cached_tokens: 0,
        tokens_per_second: None,
        model: "m".into(),
        provider: "p".into(),
    });
    settled(&r).await;
    let call = r.a.call_of_session("vs-MZ2-0").unwrap();
    r.kit
        .emit_framework_event(FrameworkEvent::VoiceSessionEnded {
            session_id: "vs-MZ2-0".into(),
            room_id: r.room.clone(),
            duration_ms: 1000,
        });
    assert_eq!(call.exported().await, ExportState::Completed);
    let e = ended(&r.fake, "vs-MZ2-0");
    assert_eq!(e.len(), 1);
    let m = e[0]["metrics"].as_array().unwrap();
    let llm: Vec<&Value> = m.iter().filter(|x| x["kind"] == "llm").collect();
    assert_eq!(llm.len(), 1, "{m:?}");
    assert_eq!(llm[0]["ttft"], 0.31);
    assert!(llm[0]["extra"].get("source").is_none());
    assert!(m.iter().any(|x| x["kind"] == "eou"));
    // Only the voice call was ever started.
    let started = r
        .fake
        .accepted_events()
        .into_iter()
        .filter(|e| e["event"] == "call-started")
        .count();
    assert_eq!(started, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_started_on_a_sessions_own_runtime_outlives_it() {
    let r = rig("voice-rt").await;
    // A voice session runs on a thread with a runtime of its own, which
    // is gone once the session ends.
    let (a, room) = (r.a.clone(), r.room.clone());
    let sink = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sink = rt.block_on(async move {
            let sink = a.start_voice_call("vs-MZ3-0", voice_start(&room, "vs-MZ3-0"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            sink
        });
        drop(rt);
        sink
    })
    .join()
    .unwrap()
    .expect("a voice call");
    feed(&sink);
    r.kit
        .emit_framework_event(transcript("vs-MZ3-0", "user", "hello", 40.0, 1000.0));
    settled(&r).await;
    let call = r.a.call_of_session("vs-MZ3-0").unwrap();
    r.kit
        .emit_framework_event(FrameworkEvent::VoiceSessionEnded {
            session_id: "vs-MZ3-0".into(),
            room_id: r.room.clone(),
            duration_ms: 3000,
        });
    let state = tokio::time::timeout(Duration::from_secs(20), call.exported())
        .await
        .expect("the export finishes");
    assert_eq!(state, ExportState::Completed);
    let e = ended(&r.fake, "vs-MZ3-0");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["transcript"][0]["content"], "hello");
    assert!(!r.fake.stitched("vs-MZ3-0").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_of_a_text_call_does_not_end_the_voice_call_that_took_over() {
    let mut policy = RoomCallPolicy::new("agent-7");
    policy.idle_timeout = Some(Duration::from_millis(600));
    let r = rig_with("voice-idle", policy).await;
    say(&r.kit, "Hello by text", None).await;
    settled(&r).await;
    let text_call = r.a.call_in_room(&r.room).expect("a text call");
    let _sink =
        r.a.start_voice_call("vs-MZ4-0", voice_start(&r.room, "vs-MZ4-0"))
            .expect("a voice call");
    assert_eq!(text_call.exported().await, ExportState::Completed);
    // Well past the idle timeout of the text call's last message.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let call = r.a.call_of_session("vs-MZ4-0").expect("still running");
    assert!(
        ended(&r.fake, "vs-MZ4-0").is_empty(),
        "ended by the idle timeout"
    );
    r.kit
        .emit_framework_event(FrameworkEvent::VoiceSessionEnded {
            session_id: "vs-MZ4-0".into(),
            room_id: r.room.clone(),
            duration_ms: 1500,
        });
    assert_eq!(call.exported().await, ExportState::Completed);
    assert_eq!(
        ended(&r.fake, "vs-MZ4-0")[0]["callEndedReason"],
        VOICE_END_REASON
    );
}
