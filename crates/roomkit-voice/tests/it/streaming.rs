//! Streaming speech-to-text through whole calls (interim results while the
//! caller speaks, one message per turn), replies cancelled by a barge-in,
//! and speech providers that fail or stall in the middle of a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use roomkit_ai::EchoAgent;
use roomkit_audio::AudioPipelineConfig;
use roomkit_audio::pipeline::VadChoice;
use roomkit_audio::turn::{InterruptionConfig, InterruptionStrategy};
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelId, ChannelType, EventContent,
    EventType, FrameworkEvent, HookTrigger, RoomEvent,
};
use roomkit_core::{
    AttachOptions, Channel, ChannelError, ChannelOutput, CreateRoom, HookInput, HookRegistration,
    RoomContext, RoomKit, SideEffects, TimelineQuery,
};
use roomkit_voice::browser::{BrowserBackend, encode_frame};
use roomkit_voice::fake::{FakeDeepgram, FakeOpenAiAudio};
use roomkit_voice::tts::TtsStream;
use roomkit_voice::twilio::TwilioMediaStreams;
use roomkit_voice::vendors::Secret;
use roomkit_voice::vendors::deepgram::{DeepgramConfig, DeepgramStt};
use roomkit_voice::vendors::fallback::FallbackTts;
use roomkit_voice::vendors::openai::{OpenAiTts, OpenAiTtsConfig};
use roomkit_voice::{
    CallHandle, ProviderFailure, SttProvider, Transcript, TtsChunk, TtsProvider, VoiceChannel,
    VoiceSettings,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Received, ScriptedStt, ToneTts, TwilioClient, media_server, silence, speech};

const DG_KEY: &str = "dg-test-key";
const QUESTION: &str = "what time is it";

fn deepgram(fake: &FakeDeepgram, sample_rate: u32) -> Arc<DeepgramStt> {
    let config = DeepgramConfig {
        base_url: fake.base_url(),
        sample_rate,
        finalize_timeout_ms: 2_000,
        connect_timeout_ms: 3_000,
        ..DeepgramConfig::default()
    };
    Arc::new(DeepgramStt::new(Secret::new(DG_KEY), &config).unwrap())
}

fn settings(strategy: InterruptionStrategy) -> VoiceSettings {
    VoiceSettings {
        pipeline: AudioPipelineConfig {
            vad: Some(VadChoice::Webrtc {
                mode: Default::default(),
            }),
            ..AudioPipelineConfig::default()
        },
        interruption: Some(InterruptionConfig {
            strategy,
            ..InterruptionConfig::default()
        }),
        ..VoiceSettings::default()
    }
}

/// The engine with the voice channel and `agents`, all in room `r1`.
async fn room(voice: &VoiceChannel, agents: Vec<Arc<dyn Channel>>) -> RoomKit {
    let mut builder = RoomKit::builder().channel(Arc::new(voice.clone()));
    let mut ids = vec![ChannelId::from("voice")];
    for a in agents {
        ids.push(a.id().clone());
        builder = builder.channel(a);
    }
    let kit = builder.build().unwrap();
    voice.attach_kit(&kit);
    kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
    for id in ids {
        kit.attach_channel(&"r1".into(), &id, AttachOptions::default())
            .await
            .unwrap();
    }
    kit
}

/// A Twilio-protocol call into `r1`.
async fn twilio_call(voice: &VoiceChannel) -> (TwilioClient, CallHandle) {
    let (url, mut sockets) = media_server().await;
    let client = TwilioClient::connect(&url, json!({"room_id": "r1", "from": "+15550001"})).await;
    let socket = sockets.recv().await.unwrap();
    let call = voice
        .accept(&TwilioMediaStreams::new(), socket)
        .await
        .unwrap();
    (client, call)
}

async fn timeline(kit: &RoomKit) -> Vec<Arc<RoomEvent>> {
    kit.timeline(&"r1".into(), TimelineQuery::default())
        .await
        .unwrap()
}

async fn wait_for_event(
    kit: &RoomKit,
    within: Duration,
    pred: impl Fn(&RoomEvent) -> bool,
) -> Option<Arc<RoomEvent>> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(e) = timeline(kit).await.into_iter().find(|e| pred(e)) {
            return Some(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The caller's utterances committed to the room.
async fn caller_messages(kit: &RoomKit) -> Vec<String> {
    timeline(kit)
        .await
        .iter()
        .filter(|e| {
            e.source.channel_id.as_str() == "voice"
                && e.event_type == EventType::Message
                && !matches!(e.content, EventContent::System(_))
        })
        .map(|e| e.content.plain_text())
        .collect()
}

/// Framework event names seen so far.
fn names(rx: &mut tokio::sync::broadcast::Receiver<Arc<FrameworkEvent>>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        let detail = match e.as_ref() {
            FrameworkEvent::SttError { error, .. } | FrameworkEvent::TtsError { error, .. } => {
                format!(": {error}")
            }
            _ => String::new(),
        };
        out.push(format!("{}{detail}", e.name()));
    }
    out
}

async fn wait_for_name(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<FrameworkEvent>>,
    seen: &mut Vec<String>,
    prefix: &str,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        seen.extend(names(rx));
        if seen.iter().any(|n| n.starts_with(prefix)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn media_frames(r: &[Received]) -> usize {
    r.iter().filter(|r| r.json["event"] == "media").count()
}

/// 8 kHz samples doubled to 16 kHz (enough for the VAD).
fn wideband(narrow: &[i16]) -> Vec<i16> {
    narrow.iter().flat_map(|&s| [s, s]).collect()
}

// ------------------------------------------------------------ streaming

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_stt_hears_the_caller_live_and_commits_one_message_per_turn() {
    let fake = FakeDeepgram::start(DG_KEY, [QUESTION]).await.unwrap();
    // The provider wants 24 kHz: the call's 16 kHz audio is resampled
    // frame by frame as it streams.
    let stt = deepgram(&fake, 24_000);
    let voice = VoiceChannel::new(
        "voice",
        settings(InterruptionStrategy::Immediate),
        stt,
        ToneTts::new(10),
    )
    .unwrap();
    let kit = room(&voice, vec![Arc::new(EchoAgent::new("echo"))]).await;
    let partial_hooks = Arc::new(AtomicUsize::new(0));
    let p = partial_hooks.clone();
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::OnPartialTranscription,
        "count-partials",
        move |_input: HookInput| {
            let p = p.clone();
            async move {
                p.fetch_add(1, Ordering::SeqCst);
                Ok(SideEffects::default())
            }
        },
    ));

    let (url, mut sockets) = media_server().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type": "start", "sample_rate": 16000, "room_id": "r1", "participant": "alice"})
            .to_string(),
    ))
    .await
    .unwrap();
    let socket = sockets.recv().await.unwrap();
    let voice2 = voice.clone();
    let call = tokio::spawn(async move { voice2.accept(&BrowserBackend::new(), socket).await });

    let question = speech(QUESTION);
    let spoken_samples = question.len() * 2;
    let mut audio = silence(300);
    audio.extend(question);
    // Where the speech ends (16 kHz frames), and when it was sent.
    let speech_frames = audio.len() * 2 / 320;
    let speech_sent_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    audio.extend(silence(1500));
    let audio = wideband(&audio);
    let (mut tx, mut rx) = ws.split();
    let sent_at = speech_sent_at.clone();
    let sender = tokio::spawn(async move {
        for (i, frame) in audio.chunks(320).enumerate() {
            if tx.send(Message::binary(encode_frame(frame))).await.is_err() {
                return;
            }
            if i + 1 == speech_frames {
                *sent_at.lock().unwrap() = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(tx);
    });

    // The transcripts the page is shown, in order, until the final one.
    let mut transcripts: Vec<Value> = Vec::new();
    let mut first_interim_at = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, rx.next()).await {
        if let Message::Text(t) = message {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "transcript" {
                let last = v["final"] == true;
                if !last {
                    first_interim_at.get_or_insert_with(Instant::now);
                }
                transcripts.push(v);
                if last {
                    break;
                }
            }
        }
    }
    let (interims, finals): (Vec<&Value>, Vec<&Value>) =
        transcripts.iter().partition(|t| t["final"] == false);
    assert_eq!(finals.len(), 1, "{transcripts:?}");
    assert_eq!(finals[0]["text"], QUESTION, "{transcripts:?}");
    assert!(
        !interims.is_empty(),
        "interim results reach the page before the final: {transcripts:?}"
    );
    for i in &interims {
        let text = i["text"].as_str().unwrap();
        assert!(QUESTION.starts_with(text), "{text:?}");
    }
    // They came while the caller spoke, word by word, not after the
    // utterance (the VAD reports its end half a second after the speech).
    assert!(interims.len() >= 2, "{transcripts:?}");
    let spoke_until = speech_sent_at.lock().unwrap().expect("the speech was sent");
    let first = first_interim_at.unwrap();
    assert!(
        first < spoke_until,
        "the first interim came {:?} after the speech ended",
        first - spoke_until
    );

    // One message for the turn, and only one.
    wait_for_event(&kit, Duration::from_secs(10), |e| {
        e.source.channel_id.as_str() == "echo"
    })
    .await
    .expect("the agent answers the committed question");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(caller_messages(&kit).await, vec![QUESTION.to_owned()]);
    assert!(
        partial_hooks.load(Ordering::SeqCst) >= 1,
        "ON_PARTIAL_TRANSCRIPTION fired"
    );
    // Deepgram heard the utterance as it was spoken, at its own rate, on
    // one socket, with one Finalize.
    let conns = fake.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].finalizes, 1, "{conns:?}");
    assert_eq!(conns[0].param("sample_rate"), Some("24000"));
    let heard_24k = conns[0].audio_bytes / 2;
    let spoken_24k = spoken_samples * 3 / 2;
    assert!(
        heard_24k as f64 > spoken_24k as f64 * 0.9,
        "{heard_24k} samples at 24 kHz sent for {spoken_24k} spoken"
    );
    sender.abort();
    drop(rx);
    let handle = call.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.ended())
        .await
        .expect("the call ends once the socket is gone");
}

// ------------------------------------------------------------ barge-in

/// Test double: an agent that answers each of the caller's messages (and
/// nothing else) with one fixed text.
struct FixedAgent {
    id: ChannelId,
    text: String,
}

#[async_trait]
impl Channel for FixedAgent {
    fn id(&self) -> &ChannelId {
        &self.id
    }
    fn channel_type(&self) -> ChannelType {
        ChannelType::Ai
    }
    fn category(&self) -> ChannelCategory {
        ChannelCategory::Intelligence
    }
    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }
    async fn on_event(
        &self,
        event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        if event.event_type != EventType::Message
            || event.source.channel_id.as_str() != "voice"
            || event.content.plain_text().trim().is_empty()
        {
            return Ok(ChannelOutput::empty());
        }
        Ok(ChannelOutput::respond(roomkit_core::response_event(
            self,
            EventContent::text(self.text.clone()),
        )))
    }
}

const FIRST: &str =
    "The first answer is quite a long one, it goes on about the weather for a while.";
const SECOND: &str = "The second answer was queued behind the first one.";

fn two_agents() -> Vec<Arc<dyn Channel>> {
    vec![
        Arc::new(FixedAgent {
            id: "a1".into(),
            text: FIRST.into(),
        }),
        Arc::new(FixedAgent {
            id: "a2".into(),
            text: SECOND.into(),
        }),
    ]
}

fn agent_replies(events: &[Arc<RoomEvent>]) -> Vec<Arc<RoomEvent>> {
    events
        .iter()
        .filter(|e| matches!(e.source.channel_id.as_str(), "a1" | "a2"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barge_in_stores_the_queued_replies_as_never_heard() {
    let voice = VoiceChannel::new(
        "voice",
        settings(InterruptionStrategy::Immediate),
        ScriptedStt::new(&[QUESTION, "stop"]),
        ToneTts::new(60),
    )
    .unwrap();
    let kit = room(&voice, two_agents()).await;
    let (mut client, _call) = twilio_call(&voice).await;
    client.say(silence(300));
    client.say(speech(QUESTION));
    client.say(silence(800));
    client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the first reply plays");
    // Both replies are stored (and so queued) before the caller barges in.
    let stored = wait_for_event(&kit, Duration::from_secs(5), |e| {
        e.source.channel_id.as_str() == "a2"
    })
    .await;
    assert!(stored.is_some(), "both agents answered");
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.say(speech("no no stop right there"));
    client
        .next_of("clear", Duration::from_secs(5))
        .await
        .expect("cleared");

    let deadline = Instant::now() + Duration::from_secs(10);
    let replies = loop {
        let replies = agent_replies(&timeline(&kit).await);
        let marked = replies
            .iter()
            .filter(|e| e.metadata.get("interrupted") == Some(&json!(true)))
            .count();
        if marked == 2 || Instant::now() > deadline {
            break replies;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let summary: Vec<_> = replies
        .iter()
        .map(|e| (e.content.plain_text(), e.metadata.clone()))
        .collect();
    let heard: Vec<&Arc<RoomEvent>> = replies
        .iter()
        .filter(|e| !e.content.plain_text().is_empty())
        .collect();
    let unheard: Vec<&Arc<RoomEvent>> = replies
        .iter()
        .filter(|e| e.content.plain_text().is_empty())
        .collect();
    assert_eq!((heard.len(), unheard.len()), (1, 1), "{summary:?}");
    // The one playing: cut where it stopped.
    let cut = heard[0];
    let full = cut.metadata["full_text"].as_str().unwrap();
    assert_eq!(cut.metadata["interrupted"], true, "{summary:?}");
    assert!(
        full.starts_with(&cut.content.plain_text()) && full.len() > cut.content.plain_text().len()
    );
    // The one queued behind it: never heard.
    let never = unheard[0];
    assert_eq!(never.metadata["interrupted"], true, "{summary:?}");
    assert_eq!(
        never.metadata["played_percentage"],
        json!(0.0),
        "{summary:?}"
    );
    let expected_full = if cut.source.channel_id.as_str() == "a1" {
        SECOND
    } else {
        FIRST
    };
    assert_eq!(never.metadata["full_text"], expected_full, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flush_a_barge_in_lets_the_replies_play_and_keep_their_text() {
    let mut no_flush = settings(InterruptionStrategy::Immediate);
    if let Some(i) = no_flush.interruption.as_mut() {
        i.flush_partial_tts = false;
    }
    let voice = VoiceChannel::new(
        "voice",
        no_flush,
        ScriptedStt::new(&[QUESTION, ""]),
        ToneTts::new(25),
    )
    .unwrap();
    let kit = room(&voice, two_agents()).await;
    let (mut client, _call) = twilio_call(&voice).await;
    client.say(silence(300));
    client.say(speech(QUESTION));
    client.say(silence(800));
    client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the first reply plays");
    wait_for_event(&kit, Duration::from_secs(5), |e| {
        e.source.channel_id.as_str() == "a2"
    })
    .await
    .expect("both agents answered");
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.say(speech("no no stop right there"));
    // Both replies play to their end: two marks, no clear.
    let got = client.collect(Duration::from_secs(7)).await;
    assert!(
        got.iter().all(|r| r.json["event"] != "clear"),
        "never cleared"
    );
    let marks = got.iter().filter(|r| r.json["event"] == "mark").count();
    assert_eq!(marks, 2, "both replies finished");
    let expected = (FIRST.len() + SECOND.len()) * 25 / 20;
    assert!(
        media_frames(&got) + 60 >= expected,
        "{} frames of about {expected}",
        media_frames(&got)
    );
    for e in agent_replies(&timeline(&kit).await) {
        assert!(e.metadata.get("interrupted").is_none(), "{:?}", e.metadata);
        assert!(
            e.content.plain_text() == FIRST || e.content.plain_text() == SECOND,
            "{}",
            e.content.plain_text()
        );
    }
}

// ------------------------------------------------------------ STT faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deepgram_socket_broken_mid_utterance_is_reopened_and_nothing_said_is_lost() {
    const FIRST_WORDS: &str = "hello there how are you doing today";
    let fake = FakeDeepgram::start(DG_KEY, [FIRST_WORDS, QUESTION])
        .await
        .unwrap();
    let voice = VoiceChannel::new(
        "voice",
        settings(InterruptionStrategy::Immediate),
        deepgram(&fake, 8_000),
        ToneTts::new(10),
    )
    .unwrap();
    let kit = room(
        &voice,
        vec![Arc::new(FixedAgent {
            id: "a1".into(),
            text: "Okay.".into(),
        })],
    )
    .await;
    let mut framework = kit.subscribe();
    let (client, _call) = twilio_call(&voice).await;
    let first = speech(FIRST_WORDS);
    let first_s = first.len() as f64 / 8000.0;
    client.say(silence(300));
    client.say(first);
    // Once Deepgram is hearing the utterance, the network breaks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake
        .connections()
        .first()
        .is_none_or(|c| c.messages_sent == 0)
    {
        assert!(Instant::now() < deadline, "{:?}", fake.connections());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.break_connections();
    let mut seen = Vec::new();
    assert!(
        wait_for_name(
            &mut framework,
            &mut seen,
            "stt_error: deepgram",
            Duration::from_secs(10)
        )
        .await,
        "{seen:?}"
    );
    client.say(silence(1500));
    client.say(speech(QUESTION));
    client.say(silence(800));
    wait_for_event(&kit, Duration::from_secs(20), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the next utterance is heard; {seen:?} {:?}",
            fake.connections()
        )
    });
    // The broken utterance was replayed to the new session, whole.
    assert_eq!(
        caller_messages(&kit).await,
        vec![FIRST_WORDS.to_owned(), QUESTION.to_owned()]
    );
    let conns = fake.connections();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert_eq!(conns[1].finalizes, 2, "{conns:?}");
    let heard_s = conns[1].utterances.first().copied().unwrap_or(0.0);
    assert!(
        heard_s > first_s * 0.9,
        "the new session heard {heard_s} s of the {first_s} s utterance"
    );
    seen.extend(names(&mut framework));
    assert!(!seen.iter().any(|n| n == "voice_session_ended"), "{seen:?}");
}

/// Test double: a per-utterance STT whose first request never answers.
struct StallsOnce {
    calls: AtomicUsize,
}

#[async_trait]
impl SttProvider for StallsOnce {
    fn name(&self) -> &str {
        "stalls-once"
    }

    async fn transcribe(
        &self,
        _samples: &[i16],
        _sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            futures::future::pending::<()>().await;
        }
        Ok(Transcript::final_text(QUESTION))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stt_is_given_up_after_the_timeout_and_the_call_goes_on() {
    let mut s = settings(InterruptionStrategy::Immediate);
    s.stt_timeout_ms = 1_500;
    let voice = VoiceChannel::new(
        "voice",
        s,
        Arc::new(StallsOnce {
            calls: AtomicUsize::new(0),
        }),
        ToneTts::new(10),
    )
    .unwrap();
    let kit = room(&voice, vec![Arc::new(EchoAgent::new("echo"))]).await;
    let mut framework = kit.subscribe();
    let (client, _call) = twilio_call(&voice).await;
    client.say(silence(300));
    client.say(speech("hello there"));
    client.say(silence(800));
    let mut seen = Vec::new();
    assert!(
        wait_for_name(
            &mut framework,
            &mut seen,
            "stt_error: stalls-once",
            Duration::from_secs(10)
        )
        .await,
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|n| n.contains("no final result within 1500 ms")),
        "{seen:?}"
    );
    client.say(silence(800));
    client.say(speech(QUESTION));
    client.say(silence(800));
    wait_for_event(&kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await
    .expect("the next utterance is heard by the reopened session");
    assert_eq!(caller_messages(&kit).await, vec![QUESTION.to_owned()]);
}

// ------------------------------------------------------------ TTS faults

/// Test double: a tone TTS that fails (before any audio) for sentences
/// containing `fail`, and stalls after one chunk for those containing
/// `stall`.
struct Flaky {
    inner: Arc<ToneTts>,
}

#[async_trait]
impl TtsProvider for Flaky {
    fn name(&self) -> &str {
        "flaky-test-tts"
    }

    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        if text.contains("fail") {
            return Err(ProviderFailure::retryable("flaky-test-tts", "HTTP 503"));
        }
        let stream = self.inner.synthesize_stream(text, voice).await?;
        if text.contains("stall") {
            return Ok(stream
                .take(1)
                .chain(futures::stream::pending::<Result<TtsChunk, ProviderFailure>>())
                .boxed());
        }
        Ok(stream)
    }
}

const FAILING_REPLY: &str = "This sentence plays as usual. The next one will fail to synthesize. And this last one plays again.";

/// A browser call to an agent that answers with `reply`; returns what the
/// page got (texts and 16 kHz audio samples) within `within`.
async fn browser_call_answered_with(
    tts: Arc<dyn TtsProvider>,
    settings: VoiceSettings,
    reply: &str,
    within: Duration,
) -> (RoomKit, Vec<String>, Vec<Value>, usize) {
    let voice = VoiceChannel::new("voice", settings, ScriptedStt::new(&[QUESTION]), tts).unwrap();
    let kit = room(
        &voice,
        vec![Arc::new(FixedAgent {
            id: "a1".into(),
            text: reply.into(),
        })],
    )
    .await;
    let mut framework = kit.subscribe();
    let (url, mut sockets) = media_server().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type": "start", "sample_rate": 16000, "room_id": "r1"}).to_string(),
    ))
    .await
    .unwrap();
    let socket = sockets.recv().await.unwrap();
    let voice2 = voice.clone();
    tokio::spawn(async move { voice2.accept(&BrowserBackend::new(), socket).await });
    let mut audio = silence(300);
    audio.extend(speech(QUESTION));
    audio.extend(silence(1000));
    let audio = wideband(&audio);
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move {
        for frame in audio.chunks(320) {
            if tx.send(Message::binary(encode_frame(frame))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tx);
    });
    let mut texts = Vec::new();
    let mut samples = 0usize;
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, rx.next()).await {
        match message {
            Message::Binary(b) => samples += b.len() / 2,
            Message::Text(t) => texts.push(serde_json::from_str(t.as_str()).unwrap()),
            _ => {}
        }
    }
    let seen = names(&mut framework);
    (kit, seen, texts, samples)
}

fn agent_texts(texts: &[Value]) -> Vec<String> {
    texts
        .iter()
        .filter(|t| t["type"] == "agent_text")
        .map(|t| t["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tts_failing_mid_reply_is_replaced_by_the_fallback() {
    let fallback = FakeOpenAiAudio::start("oa-test-key", Vec::<String>::new())
        .await
        .unwrap();
    let secondary = Arc::new(
        OpenAiTts::new(
            Secret::new("oa-test-key"),
            &OpenAiTtsConfig {
                base_url: fallback.base_url(),
                ..OpenAiTtsConfig::default()
            },
        )
        .unwrap(),
    );
    let primary = Arc::new(Flaky {
        inner: ToneTts::new(20),
    });
    let tts = Arc::new(FallbackTts::new(primary, secondary));
    let (kit, seen, texts, samples) = browser_call_answered_with(
        tts,
        settings(InterruptionStrategy::Immediate),
        FAILING_REPLY,
        Duration::from_secs(15),
    )
    .await;
    // The failed sentence was spoken by the fallback, the others by the
    // primary: the whole reply was heard.
    let requests = fallback.requests();
    assert_eq!(requests.len(), 1, "one sentence went to the fallback");
    assert_eq!(
        requests[0].json().unwrap()["input"],
        "The next one will fail to synthesize."
    );
    assert_eq!(agent_texts(&texts).len(), 3, "{texts:?}");
    let primary_ms =
        ("This sentence plays as usual.".len() + "And this last one plays again.".len()) * 20;
    assert!(
        samples > primary_ms * 16 + 16 * 200,
        "{samples} samples: the fallback's sentence played too"
    );
    assert!(
        !seen.iter().any(|n| n.starts_with("tts_error")),
        "the fallback hid the failure: {seen:?}"
    );
    let stored = wait_for_event(&kit, Duration::from_secs(2), |e| {
        e.source.channel_id.as_str() == "a1"
    })
    .await
    .unwrap();
    assert_eq!(stored.content.plain_text(), FAILING_REPLY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fallback_a_failing_or_stalling_tts_skips_the_sentence_and_the_call_goes_on() {
    let mut s = settings(InterruptionStrategy::Immediate);
    s.tts_timeout_ms = 1_000;
    let reply = "This sentence plays as usual. The next one will fail to synthesize. \
                 This one will stall after a moment. And this last one plays again.";
    let tts = Arc::new(Flaky {
        inner: ToneTts::new(20),
    });
    let (kit, seen, texts, samples) =
        browser_call_answered_with(tts, s, reply, Duration::from_secs(15)).await;
    let errors: Vec<&String> = seen.iter().filter(|n| n.starts_with("tts_error")).collect();
    assert_eq!(errors.len(), 2, "{seen:?}");
    assert!(
        errors.iter().any(|e| e.contains("HTTP 503"))
            && errors.iter().any(|e| e.contains("1000 ms")),
        "{errors:?}"
    );
    // Every sentence was shown to the page, the failed ones included.
    assert_eq!(agent_texts(&texts).len(), 4, "{texts:?}");
    // The first and last sentences played, and 100 ms of the stalled one.
    let played_ms =
        ("This sentence plays as usual.".len() + "And this last one plays again.".len()) * 20 + 100;
    assert!(
        samples.abs_diff(played_ms * 16) < 16 * 300,
        "{samples} samples for about {played_ms} ms"
    );
    assert!(!seen.iter().any(|n| n == "voice_session_ended"), "{seen:?}");
    let stored = wait_for_event(&kit, Duration::from_secs(2), |e| {
        e.source.channel_id.as_str() == "a1"
    })
    .await
    .unwrap();
    assert_eq!(stored.content.plain_text(), reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_ignored_during_playback_is_heard_live_but_never_committed() {
    let fake = FakeDeepgram::start(DG_KEY, [QUESTION, "yes yes yes"])
        .await
        .unwrap();
    let mut confirmed = settings(InterruptionStrategy::Confirmed);
    if let Some(i) = confirmed.interruption.as_mut() {
        i.min_speech_ms = 800;
    }
    let voice =
        VoiceChannel::new("voice", confirmed, deepgram(&fake, 8_000), ToneTts::new(80)).unwrap();
    let kit = room(&voice, vec![Arc::new(EchoAgent::new("echo"))]).await;
    let (mut client, _call) = twilio_call(&voice).await;
    client.say(silence(300));
    client.say(speech(QUESTION));
    client.say(silence(800));
    client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the answer starts");
    // A 450 ms sound: too short for CONFIRMED's 800 ms, so ignored.
    let blip: Vec<i16> = speech("yes yes yes").into_iter().take(8 * 450).collect();
    client.say(blip);
    let got = client.collect(Duration::from_secs(3)).await;
    assert!(
        got.iter().all(|r| r.json["event"] != "clear"),
        "a short sound is not a barge-in"
    );
    // Deepgram heard it and was asked for its final, which was dropped.
    let conns = fake.connections();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].finalizes, 2, "{conns:?}");
    assert_eq!(caller_messages(&kit).await, vec![QUESTION.to_owned()]);
}
