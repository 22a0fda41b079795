//! Voice hooks through whole calls: audio levels each way at a bounded
//! rate, recording start and stop around a tapped call, the SEMANTIC
//! barge-in strategy judging the caller's partial transcript, and the
//! provider named on the caller's committed messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use roomkit_ai::EchoAgent;
use roomkit_audio::turn::InterruptionStrategy;
use roomkit_core::model::{ChannelId, EventContent, HookTrigger};
use roomkit_core::{
    AttachOptions, CreateRoom, HookInput, HookPayload, HookRegistration, RoomKit, SideEffects,
};
use roomkit_voice::stt::{SttAudio, SttSession};
use roomkit_voice::twilio::TwilioMediaStreams;
use roomkit_voice::{
    CallHandle, CallInfo, CallTap, ProviderFailure, SttProvider, Transcript, VoiceChannel,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::call::{QUESTION, media_only, settings, wait_for_event};
use crate::support::{ScriptedStt, ToneTts, TwilioClient, media_server, silence, speech};

/// Payloads of the async hooks seen, by trigger name.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

fn record(kit: &RoomKit, seen: &Seen, trigger: HookTrigger) {
    let seen = seen.clone();
    kit.add_hook(HookRegistration::asynchronous(
        trigger,
        format!("record-{trigger}"),
        move |input: HookInput| {
            let seen = seen.clone();
            async move {
                let payload = match input.payload {
                    HookPayload::Json(v) => v,
                    _ => Value::Null,
                };
                seen.lock()
                    .unwrap()
                    .push((input.trigger.to_string(), payload));
                Ok(SideEffects::default())
            }
        },
    ));
}

/// The payloads of `trigger` once there are `n` of them (async hooks land
/// a little after the moment they describe), or what there is after 5 s.
async fn wait_of(seen: &Seen, trigger: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = of(seen, trigger);
        if got.len() >= n || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of(seen: &Seen, trigger: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == trigger)
        .map(|(_, p)| p.clone())
        .collect()
}

/// Room `r1` with the voice channel and an echo agent; `hooks` are
/// registered before the call is placed, so none of its start is missed.
async fn call_with_hooks(
    voice: VoiceChannel,
    hooks: &[HookTrigger],
) -> (RoomKit, TwilioClient, CallHandle, Seen) {
    let kit = RoomKit::builder()
        .channel(Arc::new(voice.clone()))
        .channel(Arc::new(EchoAgent::new("echo")))
        .build()
        .unwrap();
    voice.attach_kit(&kit);
    kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
    for id in [ChannelId::from("voice"), ChannelId::from("echo")] {
        kit.attach_channel(&"r1".into(), &id, AttachOptions::default())
            .await
            .unwrap();
    }
    let seen: Seen = Arc::default();
    for &t in hooks {
        record(&kit, &seen, t);
    }
    let (url, mut sockets) = media_server().await;
    let client = TwilioClient::connect(&url, json!({"room_id": "r1", "from": "+15550001"})).await;
    let socket = sockets.recv().await.unwrap();
    let call = voice
        .accept(&TwilioMediaStreams::new(), socket)
        .await
        .unwrap();
    (kit, client, call, seen)
}

/// Test double: a call tap whose sink throws the audio away.
struct NullTap;

struct NullSink;

impl roomkit_audio::RecordingSink for NullSink {
    fn on_inbound(&self, _stream: &str, _frame: &roomkit_audio::AudioFrame) {}
    fn on_outbound(&self, _stream: &str, _frame: &roomkit_audio::AudioFrame) {}
}

impl CallTap for NullTap {
    fn call_started(
        &self,
        _session_id: &str,
        _room_id: &roomkit_core::model::RoomId,
        _info: &CallInfo,
    ) -> Option<Arc<dyn roomkit_audio::RecordingSink>> {
        Some(Arc::new(NullSink))
    }
}

/// Reports of one level hook: every one in range, at least 100 ms apart
/// on the media clock; returns their levels.
fn levels(reports: &[Value], what: &str) -> Vec<f64> {
    let mut at: Vec<f64> = reports
        .iter()
        .map(|p| p["t_ms"].as_f64().expect("t_ms"))
        .collect();
    at.sort_by(f64::total_cmp);
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= 99.0,
            "{what} reports {} ms apart: {at:?}",
            pair[1] - pair[0]
        );
    }
    reports
        .iter()
        .map(|p| {
            assert!(p["session_id"].is_string(), "{p}");
            let db = p["level_db"].as_f64().expect("level_db");
            assert!((-100.0..=0.0).contains(&db), "{what}: {db} dB");
            db
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn level_and_recording_hooks_fire_and_caller_messages_name_the_stt_provider() {
    let voice = VoiceChannel::new(
        "voice",
        settings(InterruptionStrategy::Immediate),
        ScriptedStt::new(&[QUESTION]),
        ToneTts::new(20),
    )
    .unwrap();
    voice.add_call_tap(Arc::new(NullTap));
    let (kit, mut client, call, seen) = call_with_hooks(
        voice,
        &[
            HookTrigger::OnInputAudioLevel,
            HookTrigger::OnOutputAudioLevel,
            HookTrigger::OnRecordingStarted,
            HookTrigger::OnRecordingStopped,
        ],
    )
    .await;
    client.say(silence(400));
    client.say(speech(QUESTION));
    client.say(silence(800));
    let asked = wait_for_event(&kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await
    .expect("the question is committed");
    // The words were heard by the STT provider, not spoken by the TTS one.
    assert_eq!(asked.source.provider.as_deref(), Some("scripted-test-stt"));
    let started = wait_for_event(
        &kit,
        Duration::from_secs(1),
        |e| matches!(&e.content, EventContent::System(s) if s.code == "session_started"),
    )
    .await
    .expect("the session start is stored");
    assert_eq!(started.source.provider.as_deref(), Some("twilio"));
    client
        .next_of("mark", Duration::from_secs(10))
        .await
        .expect("the answer is spoken");
    client.stop();
    tokio::time::timeout(Duration::from_secs(5), call.ended())
        .await
        .expect("the call ends");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Recording: announced once at the start of the call, before any audio
    // was captured, and once at its end.
    let rec_started = of(&seen, "on_recording_started");
    assert_eq!(rec_started.len(), 1, "{rec_started:?}");
    assert_eq!(rec_started[0]["t_ms"], json!(0.0));
    assert_eq!(rec_started[0]["sinks"], json!(1));
    assert!(rec_started[0]["call_id"].is_string());
    let rec_stopped = of(&seen, "on_recording_stopped");
    assert_eq!(rec_stopped.len(), 1, "{rec_stopped:?}");
    let duration_ms = rec_stopped[0]["duration_ms"].as_u64().unwrap();
    assert!(duration_ms > 2000, "{duration_ms}");

    // Caller levels: about ten a second of the call, loud while speaking
    // and near the floor in silence.
    let input = of(&seen, "on_input_audio_level");
    let expected = duration_ms as f64 / 100.0;
    assert!(
        (input.len() as f64) <= expected + 2.0 && (input.len() as f64) >= expected * 0.5,
        "{} input reports for {duration_ms} ms",
        input.len()
    );
    let db = levels(&input, "input");
    assert!(db.iter().any(|&d| d > -30.0), "speech is loud: {db:?}");
    assert!(db.iter().any(|&d| d < -60.0), "silence is quiet: {db:?}");
    // Agent levels: while the answer played, at most ten a second.
    let output = of(&seen, "on_output_audio_level");
    assert!(!output.is_empty(), "the answer's level is reported");
    let db = levels(&output, "output");
    assert!(db.iter().any(|&d| d > -30.0), "the tone is loud: {db:?}");
}

/// Test double: a streaming STT that says `text` for whatever it hears:
/// as an interim result once 200 ms of an utterance arrived, and as the
/// final result at its end.
struct PartialStt {
    text: Mutex<String>,
}

impl PartialStt {
    fn says(&self, text: &str) {
        *self.text.lock().unwrap() = text.to_owned();
    }
}

#[async_trait]
impl SttProvider for PartialStt {
    fn name(&self) -> &str {
        "partial-test-stt"
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    async fn transcribe(
        &self,
        _samples: &[i16],
        _sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        Ok(Transcript::final_text(self.text.lock().unwrap().clone()))
    }

    async fn open_session(
        self: Arc<Self>,
        sample_rate: u32,
    ) -> Result<SttSession, ProviderFailure> {
        let (audio_tx, mut audio_rx) = mpsc::channel::<SttAudio>(256);
        let (result_tx, result_rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut heard = 0usize;
            let mut told = false;
            while let Some(m) = audio_rx.recv().await {
                let result = match m {
                    SttAudio::Samples(s) => {
                        heard += s.len();
                        if told || heard < sample_rate as usize / 5 {
                            continue;
                        }
                        told = true;
                        Transcript {
                            text: self.text.lock().unwrap().clone(),
                            is_final: false,
                            ..Transcript::default()
                        }
                    }
                    SttAudio::Finalize => {
                        let text = if heard > 0 {
                            self.text.lock().unwrap().clone()
                        } else {
                            String::new()
                        };
                        (heard, told) = (0, false);
                        Transcript::final_text(text)
                    }
                };
                if result_tx.send(Ok(result)).await.is_err() {
                    return;
                }
            }
        });
        Ok(SttSession {
            audio: audio_tx,
            results: result_rx,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_barge_in_lets_a_backchannel_pass_and_stops_on_a_sentence() {
    let stt = Arc::new(PartialStt {
        text: Mutex::new(QUESTION.to_owned()),
    });
    let voice = VoiceChannel::new(
        "voice",
        settings(InterruptionStrategy::Semantic),
        stt.clone(),
        ToneTts::new(80),
    )
    .unwrap();
    let (_kit, mut client, _call, seen) =
        call_with_hooks(voice, &[HookTrigger::OnBackchannel, HookTrigger::OnBargeIn]).await;
    client.say(silence(300));
    client.say(speech(QUESTION));
    client.say(silence(800));
    client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the answer starts");
    // Over a second of speech that the STT hears as "uh-huh": long enough
    // that its length alone would count as an interruption, but its words
    // are an acknowledgement.
    stt.says("uh-huh");
    let ack = speech("yes yes yes yes yes");
    let ack_ms = ack.len() as u64 / 8;
    assert!(ack_ms > 1000, "{ack_ms} ms");
    client.say(ack);
    client.say(silence(600));
    let got = client.collect(Duration::from_millis(ack_ms + 1200)).await;
    assert!(
        got.iter().all(|r| r.json["event"] != "clear"),
        "a backchannel is not a barge-in"
    );
    assert!(media_only(&got).len() > 50, "playback went on");
    let acks = wait_of(&seen, "on_backchannel", 1).await;
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0]["text"], json!("uh-huh"));
    assert!(of(&seen, "on_barge_in").is_empty());

    // A real sentence stops the agent.
    stt.says("no no stop right there please");
    client.say(speech("no no stop right there please"));
    client
        .next_of("clear", Duration::from_secs(5))
        .await
        .expect("a sentence interrupts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(of(&seen, "on_barge_in").len(), 1);
    assert_eq!(of(&seen, "on_backchannel").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantic_barge_in_without_interim_results_judges_by_length() {
    let voice = VoiceChannel::new(
        "voice",
        settings(InterruptionStrategy::Semantic),
        ScriptedStt::new(&[QUESTION, "", ""]),
        ToneTts::new(80),
    )
    .unwrap();
    let (_kit, mut client, _call, seen) =
        call_with_hooks(voice, &[HookTrigger::OnBackchannel, HookTrigger::OnBargeIn]).await;
    client.say(silence(300));
    client.say(speech(QUESTION));
    client.say(silence(800));
    client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the answer starts");
    // A short "okay" (well over the 300 ms CONFIRMED would stop on).
    let ack: Vec<i16> = speech("okay").into_iter().take(8 * 500).collect();
    client.say(ack);
    client.say(silence(800));
    let got = client.collect(Duration::from_millis(1500)).await;
    assert!(
        got.iter().all(|r| r.json["event"] != "clear"),
        "a short acknowledgement is not a barge-in"
    );
    assert_eq!(wait_of(&seen, "on_backchannel", 1).await.len(), 1);
    // A long sentence interrupts.
    client.say(speech("no no stop right there please"));
    client
        .next_of("clear", Duration::from_secs(5))
        .await
        .expect("sustained speech interrupts");
}
