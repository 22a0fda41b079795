//! Whole calls: a Twilio-protocol client on a loopback WebSocket, the voice
//! channel with the real audio pipeline, a room with an agent, and test
//! doubles for speech-to-text and text-to-speech.

use std::sync::Arc;
use std::time::{Duration, Instant};

use roomkit_ai::EchoAgent;
use roomkit_audio::AudioPipelineConfig;
use roomkit_audio::dtmf::DtmfConfig;
use roomkit_audio::pipeline::VadChoice;
use roomkit_audio::turn::{InterruptionConfig, InterruptionStrategy};
use roomkit_core::model::{ChannelId, EventContent, FrameworkEvent, HookTrigger, RoomEvent};
use roomkit_core::{
    AttachOptions, Channel, CreateRoom, HookInput, HookPayload, HookRegistration, HookResult,
    RoomKit, SideEffects, TimelineQuery,
};
use roomkit_voice::twilio::TwilioMediaStreams;
use roomkit_voice::{CallHandle, CallInfo, CallTap, VoiceChannel, VoiceSettings};
use serde_json::json;

use crate::support::{
    Received, ScriptedStt, StreamingAgent, ToneTts, TwilioClient, decode_media, dtmf_tone,
    media_server, rms, silence, speech,
};

pub(crate) const QUESTION: &str = "what time is it";

pub(crate) fn settings(strategy: InterruptionStrategy) -> VoiceSettings {
    VoiceSettings {
        pipeline: AudioPipelineConfig {
            vad: Some(VadChoice::Webrtc {
                mode: Default::default(),
            }),
            dtmf: Some(DtmfConfig::default()),
            ..AudioPipelineConfig::default()
        },
        interruption: Some(InterruptionConfig {
            strategy,
            ..InterruptionConfig::default()
        }),
        ..VoiceSettings::default()
    }
}

pub(crate) struct Rig {
    pub(crate) kit: RoomKit,
    pub(crate) client: TwilioClient,
    pub(crate) call: Option<CallHandle>,
    pub(crate) stt: Arc<ScriptedStt>,
    pub(crate) tts: Arc<ToneTts>,
    /// Framework events, subscribed before the call started.
    pub(crate) framework: Option<tokio::sync::broadcast::Receiver<Arc<FrameworkEvent>>>,
}

/// A room `r1` with the voice channel and `agent`, and a call in it.
pub(crate) async fn rig(
    agent: Arc<dyn Channel>,
    settings: VoiceSettings,
    script: &[&str],
    ms_per_char: u32,
) -> Rig {
    rig_with_tap(agent, settings, script, ms_per_char, None).await
}

async fn rig_with_tap(
    agent: Arc<dyn Channel>,
    settings: VoiceSettings,
    script: &[&str],
    ms_per_char: u32,
    tap: Option<Arc<dyn CallTap>>,
) -> Rig {
    let stt = ScriptedStt::new(script);
    let tts = ToneTts::new(ms_per_char);
    let voice = VoiceChannel::new("voice", settings, stt.clone(), tts.clone()).unwrap();
    if let Some(tap) = tap {
        voice.add_call_tap(tap);
    }
    let agent_id = agent.id().clone();
    let kit = RoomKit::builder()
        .channel(Arc::new(voice.clone()))
        .channel(agent)
        .build()
        .unwrap();
    voice.attach_kit(&kit);
    kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
    for id in [ChannelId::from("voice"), agent_id] {
        kit.attach_channel(&"r1".into(), &id, AttachOptions::default())
            .await
            .unwrap();
    }
    let framework = Some(kit.subscribe());
    let (url, mut sockets) = media_server().await;
    let client = TwilioClient::connect(&url, json!({"room_id": "r1", "from": "+15550001"})).await;
    let socket = sockets.recv().await.unwrap();
    let call = voice
        .accept(&TwilioMediaStreams::new(), socket)
        .await
        .unwrap();
    Rig {
        kit,
        client,
        call: Some(call),
        stt,
        tts,
        framework,
    }
}

pub(crate) async fn wait_for_event(
    kit: &RoomKit,
    within: Duration,
    pred: impl Fn(&RoomEvent) -> bool,
) -> Option<Arc<RoomEvent>> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let events = kit
            .timeline(&"r1".into(), TimelineQuery::default())
            .await
            .unwrap();
        if let Some(e) = events.into_iter().find(|e| pred(e)) {
            return Some(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

pub(crate) fn media_only(r: &[Received]) -> Vec<&Received> {
    r.iter().filter(|r| r.json["event"] == "media").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_question_is_committed_and_the_answer_is_spoken_in_real_time() {
    let tap = Arc::new(CountingTap::default());
    let mut rig = rig_with_tap(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION],
        20,
        Some(tap.clone()),
    )
    .await;
    // Subscribed before the call started, so its first events are seen.
    let mut framework = rig.framework.take();
    let question = speech(QUESTION);
    rig.client.say(silence(400));
    rig.client.say(question.clone());
    rig.client.say(silence(1000));

    // The caller's utterance lands in the room as the caller's message.
    let asked = wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await
    .expect("the question is committed");
    assert_eq!(asked.source.external_id.as_deref(), Some("+15550001"));
    assert!(
        asked.source.participant_id.is_some(),
        "attributed to the caller's participant"
    );
    let heard = rig.stt.heard.lock().unwrap().clone();
    assert!(!heard.is_empty());
    // The whole utterance reached STT, resampled to 16 kHz.
    let spoken_s = question.len() as f64 / 8000.0;
    assert!(
        heard.iter().any(|&n| n as f64 / 16000.0 > spoken_s * 0.7),
        "{heard:?} vs {spoken_s} s"
    );

    // The echo agent answers; the answer is spoken back as paced media.
    let answer = wait_for_event(&rig.kit, Duration::from_secs(10), |e| {
        e.source.channel_id.as_str() == "echo"
    })
    .await
    .expect("the agent answers");
    let answer_text = answer.content.plain_text();
    let expected_ms = answer_text.chars().count() as f64 * 20.0;
    let got = rig
        .client
        .collect(Duration::from_millis(expected_ms as u64 + 3000))
        .await;
    let media = media_only(&got);
    let audio: Vec<i16> = media.iter().flat_map(|m| decode_media(&m.json)).collect();
    let audio_ms = audio.len() as f64 / 8.0;
    assert!(
        (audio_ms - expected_ms).abs() < 200.0,
        "spoke {audio_ms} ms of audio for {expected_ms} ms of text"
    );
    assert!(rms(&audio) > 2000.0, "the answer is audible");
    assert!(
        media.iter().all(|m| decode_media(&m.json).len() == 160),
        "20 ms frames"
    );
    let span = media.last().unwrap().at - media.first().unwrap().at;
    assert!(
        span.as_secs_f64() * 1000.0 > expected_ms * 0.6,
        "paced in real time: {} frames in {span:?}",
        media.len()
    );
    assert!(
        got.iter().any(|r| r.json["event"] == "mark"),
        "a mark follows the reply"
    );
    assert_eq!(rig.tts.texts.lock().unwrap().join(" "), answer_text);
    // A call tap saw the caller's audio and exactly the agent audio sent.
    let (calls, caller, agent) = tap.counts();
    assert_eq!(calls, 1);
    assert!(caller as f64 / 8000.0 > spoken_s, "{caller} caller samples");
    assert_eq!(agent, audio.len(), "the tap's agent audio is what was sent");

    // Hang up: the session ends with its framework events.
    rig.client.stop();
    tokio::time::timeout(Duration::from_secs(5), rig.call.take().unwrap().ended())
        .await
        .expect("the call ends");
    let mut names = Vec::new();
    let rx = framework.as_mut().unwrap();
    while let Ok(e) = rx.try_recv() {
        names.push(e.name());
        if let FrameworkEvent::VoiceSessionEnded { duration_ms, .. } = e.as_ref() {
            assert!(*duration_ms > 2000, "{duration_ms}");
        }
    }
    for n in [
        "voice_session_started",
        "voice_session_ready",
        "voice_session_ended",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_the_far_end_stops_media_and_stores_what_was_heard() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION, ""],
        80,
    )
    .await;
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    let first = rig
        .client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the answer starts");
    // Let the agent talk for a second, then talk over it.
    let before = rig.client.collect(Duration::from_millis(1000)).await;
    let spoken_before = media_only(&before).len() + 1;
    let barge_at = Instant::now();
    rig.client.say(speech("no no stop right there"));
    let clear = rig
        .client
        .next_of("clear", Duration::from_secs(5))
        .await
        .expect("the far end's queue is cleared");
    assert!(clear.at - barge_at < Duration::from_secs(2));
    // Nothing after `clear`: the send clock stopped at once.
    let after = rig.client.collect(Duration::from_millis(1500)).await;
    assert_eq!(media_only(&after).len(), 0, "media frames sent after clear");

    let cut = wait_for_event(&rig.kit, Duration::from_secs(10), |e| {
        e.source.channel_id.as_str() == "echo"
            && e.metadata.get("interrupted") == Some(&json!(true))
    })
    .await
    .expect("the answer is stored as interrupted");
    let full = cut.metadata["full_text"].as_str().unwrap().to_owned();
    let heard = cut.content.plain_text();
    let pct = cut.metadata["played_percentage"].as_f64().unwrap();
    assert!(
        full.starts_with(&heard),
        "{heard:?} is a prefix of {full:?}"
    );
    assert!(heard.len() < full.len() && !heard.is_empty(), "{heard:?}");
    assert!(pct > 0.0 && pct < 100.0, "{pct}");
    // Heard text matches the audio sent (80 ms per character), give or take
    // the frames of the barge-in decision and a word.
    let played_chars = (spoken_before as f64 * 20.0 / 80.0) as i64;
    let heard_chars = heard.chars().count() as i64;
    assert!(
        (heard_chars - played_chars).abs() < 25,
        "heard {heard_chars} chars, ~{played_chars} played before the barge-in"
    );
    let _ = first;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_interruption_keeps_speaking_and_queues_the_caller() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Disabled),
        &[QUESTION, "and another thing"],
        40,
    )
    .await;
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    rig.client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the answer starts");
    rig.client.say(speech("and another thing"));
    rig.client.say(silence(800));
    let got = rig.client.collect(Duration::from_secs(4)).await;
    assert!(
        got.iter().all(|r| r.json["event"] != "clear"),
        "never cleared"
    );
    let second = wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == "and another thing"
    })
    .await
    .expect("the queued utterance is committed after playback");
    let first_answer = wait_for_event(&rig.kit, Duration::from_secs(1), |e| {
        e.source.channel_id.as_str() == "echo"
    })
    .await
    .unwrap();
    assert!(first_answer.metadata.get("interrupted").is_none());
    assert!(second.index > first_answer.index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_starts_speaking_at_its_first_sentence() {
    let agent = StreamingAgent::new(
        "agent",
        "Sure, let me look that up for you. ",
        "It is twelve o'clock.",
        Duration::from_secs(3),
    );
    let finished = agent.finished_at.clone();
    let mut rig = rig(
        Arc::new(agent),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION],
        20,
    )
    .await;
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    let first = rig
        .client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("speech starts");
    let done = *finished.lock().unwrap();
    assert!(
        done.is_none_or(|d| first.at < d),
        "first audio before the reply finished"
    );
    let stored = wait_for_event(&rig.kit, Duration::from_secs(10), |e| {
        e.source.channel_id.as_str() == "agent"
    })
    .await
    .expect("the whole reply is stored");
    assert_eq!(
        stored.content.plain_text(),
        "Sure, let me look that up for you. It is twelve o'clock."
    );
    let texts = rig.tts.texts.lock().unwrap().clone();
    assert_eq!(
        texts,
        vec![
            "Sure, let me look that up for you.".to_owned(),
            "It is twelve o'clock.".to_owned()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_on_a_streamed_reply_cuts_the_stored_text() {
    let agent = StreamingAgent::new(
        "agent",
        "Let me tell you a rather long story about the weather in the mountains. ",
        "It was cold, and then it was colder still, all winter long.",
        Duration::from_millis(200),
    );
    let mut rig = rig(
        Arc::new(agent),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION, ""],
        60,
    )
    .await;
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    rig.client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("speech starts");
    tokio::time::sleep(Duration::from_millis(800)).await;
    rig.client.say(speech("wait a moment"));
    rig.client
        .next_of("clear", Duration::from_secs(5))
        .await
        .expect("cleared");
    let cut = wait_for_event(&rig.kit, Duration::from_secs(10), |e| {
        e.source.channel_id.as_str() == "agent"
            && e.metadata.get("interrupted") == Some(&json!(true))
    })
    .await
    .expect("the streamed reply is stored cut");
    let heard = cut.content.plain_text();
    assert!(heard.starts_with("Let me"), "{heard:?}");
    assert!(!heard.contains("colder"), "{heard:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_band_and_signalled_dtmf_become_events() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &[],
        20,
    )
    .await;
    let mut ephemeral = rig.kit.subscribe_ephemeral();
    rig.client.say(silence(200));
    for d in ['1', '5', '#'] {
        rig.client.say(dtmf_tone(d, 120));
        rig.client.say(silence(120));
    }
    rig.client.say(silence(300));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    rig.client.dtmf("9");
    let mut digits = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while digits.len() < 4 {
        let Ok(Ok(e)) = tokio::time::timeout_at(deadline, ephemeral.recv()).await else {
            break;
        };
        if let EventContent::System(s) = &e.event.content
            && s.code == "dtmf"
        {
            digits.push((
                s.message.clone(),
                s.data["source"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(
        digits,
        vec![
            ("1".to_owned(), "inband".to_owned()),
            ("5".to_owned(), "inband".to_owned()),
            ("#".to_owned(), "inband".to_owned()),
            ("9".to_owned(), "signaling".to_owned()),
        ]
    );
    let _ = &mut rig.client;
}

fn record_async(kit: &RoomKit, seen: &Arc<std::sync::Mutex<Vec<String>>>, trigger: HookTrigger) {
    let seen = seen.clone();
    kit.add_hook(HookRegistration::asynchronous(
        trigger,
        format!("record-{trigger}"),
        move |input: HookInput| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(input.trigger.to_string());
                Ok(SideEffects::default())
            }
        },
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_hooks_fire_and_transcription_and_before_tts_can_modify() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION],
        10,
    )
    .await;
    rig.kit.add_hook(HookRegistration::sync(
        HookTrigger::OnTranscription,
        "fix-stt",
        |input: HookInput| async move {
            let HookPayload::Text(t) = &input.payload else {
                return Ok(HookResult::allow());
            };
            Ok(HookResult::modify(HookPayload::Text(format!(
                "{}?",
                t.to_uppercase()
            ))))
        },
    ));
    rig.kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeTts,
        "reword",
        |input: HookInput| async move {
            let HookPayload::Text(t) = &input.payload else {
                return Ok(HookResult::allow());
            };
            Ok(HookResult::modify(HookPayload::Text(
                t.replace("you said", "you asked"),
            )))
        },
    ));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    for t in [
        HookTrigger::OnSpeechStart,
        HookTrigger::OnSpeechEnd,
        HookTrigger::AfterTts,
        HookTrigger::OnDtmf,
    ] {
        record_async(&rig.kit, &seen, t);
    }
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == "WHAT TIME IS IT?"
    })
    .await
    .expect("ON_TRANSCRIPTION's text is committed");
    rig.client
        .next_of("mark", Duration::from_secs(10))
        .await
        .expect("the answer is spoken");
    let spoken = rig.tts.texts.lock().unwrap().join(" ");
    assert!(spoken.contains("you asked: WHAT TIME IS IT?"), "{spoken}");
    rig.client.dtmf("4");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().unwrap().clone();
    for t in ["on_speech_start", "on_speech_end", "after_tts", "on_dtmf"] {
        assert!(seen.iter().any(|s| s == t), "{t} in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_transcription_hook_keeps_the_utterance_out_of_the_room() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION],
        10,
    )
    .await;
    rig.kit.add_hook(HookRegistration::sync(
        HookTrigger::OnTranscription,
        "redact",
        |_input: HookInput| async move { Ok(HookResult::block("not on this line")) },
    ));
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    let got = rig.client.collect(Duration::from_secs(6)).await;
    assert!(media_only(&got).is_empty(), "nothing to answer");
    assert_eq!(
        rig.stt.heard.lock().unwrap().len(),
        1,
        "the utterance was transcribed"
    );
    let said = wait_for_event(&rig.kit, Duration::from_millis(200), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await;
    assert!(said.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_providers_leave_the_call_standing() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &["!fail", QUESTION, "and another thing"],
        10,
    )
    .await;
    let mut framework = rig.kit.subscribe();
    rig.tts
        .fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The first utterance meets a failing STT; the session is reopened.
    rig.client.say(silence(300));
    rig.client.say(speech("hello there"));
    rig.client.say(silence(1500));
    // The second is heard; its answer's synthesis fails after 100 ms.
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await
    .expect("the call survived the STT failure");
    let first = rig.client.collect(Duration::from_secs(3)).await;
    let partial: usize = media_only(&first).len();
    assert!(
        (1..=10).contains(&partial),
        "only the synthesized part played: {partial} frames"
    );
    // The third utterance is answered in full.
    rig.client.say(speech("and another thing"));
    rig.client.say(silence(800));
    let answer = wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "echo"
            && e.content.plain_text().ends_with("and another thing")
    })
    .await
    .expect("the next turn is answered");
    let expected_frames = answer.content.plain_text().chars().count() * 10 / 20;
    let got = rig.client.collect(Duration::from_secs(4)).await;
    let frames = media_only(&got).len();
    assert!(
        frames.abs_diff(expected_frames) <= 2,
        "{frames} of {expected_frames} frames"
    );
    let mut names = Vec::new();
    while let Ok(e) = framework.try_recv() {
        names.push(e.name());
    }
    assert!(names.contains(&"stt_error"), "{names:?}");
    assert!(names.contains(&"tts_error"), "{names:?}");
    assert!(!names.contains(&"voice_session_ended"), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_interruption_ignores_a_short_sound_and_stops_on_speech() {
    let mut confirmed = settings(InterruptionStrategy::Confirmed);
    if let Some(i) = confirmed.interruption.as_mut() {
        i.min_speech_ms = 800;
    }
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        confirmed,
        &[QUESTION, "", ""],
        80,
    )
    .await;
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    rig.client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the answer starts");
    // A 450 ms sound: speech to the VAD (IMMEDIATE would stop here), but
    // under the 800 ms CONFIRMED needs; playback goes on.
    let blip: Vec<i16> = speech("yes yes yes").into_iter().take(8 * 450).collect();
    rig.client.say(blip);
    let got = rig.client.collect(Duration::from_millis(1500)).await;
    assert!(
        got.iter().all(|r| r.json["event"] != "clear"),
        "a short sound is not a barge-in"
    );
    assert!(media_only(&got).len() > 50, "playback went on");
    rig.client.say(speech("no no stop right there please"));
    rig.client
        .next_of("clear", Duration::from_secs(5))
        .await
        .expect("sustained speech interrupts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_turn_detector_joins_a_sentence_split_by_a_pause() {
    let mut with_turns = settings(InterruptionStrategy::Immediate);
    with_turns.turn = Some(roomkit_audio::turn::HeuristicTurnConfig::default());
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        with_turns,
        &["I want to", "book a table"],
        10,
    )
    .await;
    rig.client.say(silence(300));
    rig.client.say(speech("I want to"));
    rig.client.say(silence(700));
    rig.client.say(speech("book a table"));
    rig.client.say(silence(2500));
    let said = wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice"
            && e.event_type == roomkit_core::model::EventType::Message
            && !e.content.plain_text().is_empty()
            && !matches!(e.content, EventContent::System(_))
    })
    .await
    .expect("the turn is committed");
    assert_eq!(said.content.plain_text(), "I want to book a table");
    assert_eq!(rig.stt.heard.lock().unwrap().len(), 2, "two VAD segments");
    let _ = &mut rig.client;
}

/// Test double: a call tap counting samples each way.
#[derive(Default)]
struct CountingTap {
    calls: std::sync::atomic::AtomicUsize,
    sink: Arc<CountingSink>,
}

#[derive(Default)]
struct CountingSink {
    inbound: std::sync::atomic::AtomicUsize,
    outbound: std::sync::atomic::AtomicUsize,
}

impl roomkit_audio::RecordingSink for CountingSink {
    fn on_inbound(&self, _stream: &str, frame: &roomkit_audio::AudioFrame) {
        self.inbound
            .fetch_add(frame.samples.len(), std::sync::atomic::Ordering::SeqCst);
    }
    fn on_outbound(&self, _stream: &str, frame: &roomkit_audio::AudioFrame) {
        self.outbound
            .fetch_add(frame.samples.len(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl CountingTap {
    fn counts(&self) -> (usize, usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (
            self.calls.load(SeqCst),
            self.sink.inbound.load(SeqCst),
            self.sink.outbound.load(SeqCst),
        )
    }
}

impl CallTap for CountingTap {
    fn call_started(
        &self,
        _session_id: &str,
        room_id: &roomkit_core::model::RoomId,
        info: &CallInfo,
    ) -> Option<Arc<dyn roomkit_audio::RecordingSink>> {
        assert_eq!(room_id.as_str(), "r1");
        assert_eq!(info.transport, "twilio");
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(self.sink.clone())
    }
}
