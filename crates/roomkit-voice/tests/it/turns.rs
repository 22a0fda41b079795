//! Per-turn latency and transcripts of whole calls: `voice_turn_metrics`
//! once per caller turn with figures in order, `voice_transcript` for both
//! sides (the agent's cut at a barge-in), and replies that answer no turn
//! leaving the figures alone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use roomkit_ai::EchoAgent;
use roomkit_audio::turn::InterruptionStrategy;
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelId, ChannelType, FrameworkEvent,
    RoomEvent,
};
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext, SendEvent};
use serde_json::json;
use tokio::sync::broadcast;

use crate::call::{QUESTION, media_only, rig, settings, wait_for_event};
use crate::support::{silence, speech};

/// The figures of one `voice_turn_metrics` event.
#[derive(Debug, Clone, Copy)]
struct Turn {
    speech_end_ms: f64,
    eou_delay_ms: f64,
    stt_latency_ms: Option<f64>,
    llm_ttft_ms: Option<f64>,
    tts_ttfb_ms: Option<f64>,
    voice_to_voice_ms: Option<f64>,
}

/// One `voice_transcript` event.
#[derive(Debug, Clone)]
struct Said {
    role: String,
    text: String,
    start_ms: f64,
    end_ms: f64,
    interrupted: bool,
}

/// The turns and transcripts received so far.
fn drain(rx: &mut broadcast::Receiver<Arc<FrameworkEvent>>) -> (Vec<Turn>, Vec<Said>) {
    let (mut turns, mut said) = (Vec::new(), Vec::new());
    while let Ok(e) = rx.try_recv() {
        match e.as_ref() {
            FrameworkEvent::VoiceTurnMetrics {
                speech_end_ms,
                eou_delay_ms,
                stt_latency_ms,
                llm_ttft_ms,
                tts_ttfb_ms,
                voice_to_voice_ms,
                session_id,
                ..
            } => {
                assert!(session_id.starts_with("vs-"), "{session_id}");
                turns.push(Turn {
                    speech_end_ms: *speech_end_ms,
                    eou_delay_ms: *eou_delay_ms,
                    stt_latency_ms: *stt_latency_ms,
                    llm_ttft_ms: *llm_ttft_ms,
                    tts_ttfb_ms: *tts_ttfb_ms,
                    voice_to_voice_ms: *voice_to_voice_ms,
                });
            }
            FrameworkEvent::VoiceTranscript {
                role,
                text,
                start_ms,
                end_ms,
                interrupted,
                ..
            } => said.push(Said {
                role: role.clone(),
                text: text.clone(),
                start_ms: *start_ms,
                end_ms: *end_ms,
                interrupted: *interrupted,
            }),
            _ => {}
        }
    }
    (turns, said)
}

fn sane(figure: f64) -> bool {
    figure.is_finite() && figure >= 0.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_reports_its_latency_once_and_both_sides_say_what_was_said() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION],
        20,
    )
    .await;
    let mut framework = rig.kit.subscribe();
    rig.client.say(silence(400));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(1000));

    let asked = wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await
    .expect("the question is committed");
    // The caller's message says where on the media clock it was spoken,
    // in whole milliseconds.
    let start = asked.metadata["speech_start_ms"]
        .as_u64()
        .expect("speech_start_ms");
    let end = asked.metadata["speech_end_ms"]
        .as_u64()
        .expect("speech_end_ms");
    assert!(start >= 200 && end > start + 300, "{start}..{end}");

    let answer = wait_for_event(&rig.kit, Duration::from_secs(10), |e| {
        e.source.channel_id.as_str() == "echo"
    })
    .await
    .expect("the agent answers");
    rig.client
        .next_of("mark", Duration::from_secs(15))
        .await
        .expect("the answer is played to its end");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (turns, said) = drain(&mut framework);
    assert_eq!(turns.len(), 1, "one turn, one report: {turns:?}");
    let t = turns[0];
    println!("turn figures: {t:?}");
    assert_eq!(t.speech_end_ms.round() as u64, end, "{t:?}");
    let stt = t.stt_latency_ms.expect("stt latency");
    let llm = t.llm_ttft_ms.expect("llm time to first text");
    let tts = t.tts_ttfb_ms.expect("tts time to first audio");
    let v2v = t.voice_to_voice_ms.expect("voice to voice");
    for f in [t.eou_delay_ms, stt, llm, tts, v2v] {
        assert!(sane(f), "{t:?}");
    }
    // The moments follow each other: speech end, final transcript, the
    // end-of-utterance decision, the answer's text, its audio, its first
    // frame.
    assert!(t.eou_delay_ms >= stt, "{t:?}");
    assert!(v2v >= t.eou_delay_ms, "{t:?}");
    assert!(v2v + 1e-6 >= t.eou_delay_ms + llm + tts, "{t:?}");
    // The VAD waits for silence before it ends a segment.
    assert!(t.eou_delay_ms > 0.0, "{t:?}");

    let user: Vec<&Said> = said.iter().filter(|s| s.role == "user").collect();
    assert_eq!(user.len(), 1, "{said:?}");
    assert_eq!(user[0].text, QUESTION);
    assert_eq!(user[0].start_ms.round() as u64, start);
    assert_eq!(user[0].end_ms.round() as u64, end);
    assert!(!user[0].interrupted);

    let agent: Vec<&Said> = said.iter().filter(|s| s.role == "agent").collect();
    assert_eq!(agent.len(), 1, "{said:?}");
    let a = agent[0];
    assert_eq!(a.text, answer.content.plain_text());
    assert!(!a.interrupted);
    // The agent starts speaking when its first frame is sent, on the
    // caller's clock, and speaks for about as long as its audio.
    assert!(
        (a.start_ms - (t.speech_end_ms + v2v)).abs() < 1e-6,
        "{a:?} {t:?}"
    );
    let audio_ms = a.text.chars().count() as f64 * 20.0;
    assert!(
        a.end_ms - a.start_ms > audio_ms * 0.5,
        "{a:?} for {audio_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barge_in_reports_the_agent_cut_where_the_caller_stopped_it() {
    let mut rig = rig(
        Arc::new(EchoAgent::new("echo")),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION, ""],
        80,
    )
    .await;
    let mut framework = rig.kit.subscribe();
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    rig.client
        .next_of("media", Duration::from_secs(15))
        .await
        .expect("the answer starts");
    let _ = rig.client.collect(Duration::from_millis(1000)).await;
    rig.client.say(speech("no no stop right there"));
    rig.client
        .next_of("clear", Duration::from_secs(5))
        .await
        .expect("the far end's queue is cleared");
    let cut = wait_for_event(&rig.kit, Duration::from_secs(10), |e| {
        e.source.channel_id.as_str() == "echo"
            && e.metadata.get("interrupted") == Some(&json!(true))
    })
    .await
    .expect("the answer is stored as interrupted");
    let full = cut.metadata["full_text"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (turns, said) = drain(&mut framework);
    // The turn was reported when its answer started playing; the barge-in
    // does not report it again.
    assert_eq!(turns.len(), 1, "{turns:?}");
    assert!(turns[0].voice_to_voice_ms.is_some_and(sane), "{turns:?}");
    let agent: Vec<&Said> = said.iter().filter(|s| s.role == "agent").collect();
    assert_eq!(agent.len(), 1, "{said:?}");
    let a = agent[0];
    assert!(a.interrupted, "{a:?}");
    assert!(
        !a.text.is_empty() && a.text.len() < full.len() && full.starts_with(&a.text),
        "{:?} of {full:?}",
        a.text
    );
    assert_eq!(
        a.text,
        cut.content.plain_text(),
        "the transcript is what is stored"
    );
    // About a second (and the barge-in's decision) was played.
    assert!(a.end_ms > a.start_ms + 500.0, "{a:?}");
}

/// Test double: an intelligence channel that never answers.
struct Silent(ChannelId);

#[async_trait]
impl Channel for Silent {
    fn id(&self) -> &ChannelId {
        &self.0
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
        _event: &RoomEvent,
        _binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        Ok(ChannelOutput::empty())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_answers_no_turn_leaves_the_turn_unanswered() {
    let mut rig = rig(
        Arc::new(Silent("quiet".into())),
        settings(InterruptionStrategy::Immediate),
        &[QUESTION],
        20,
    )
    .await;
    let mut framework = rig.kit.subscribe();
    rig.client.say(silence(300));
    rig.client.say(speech(QUESTION));
    rig.client.say(silence(800));
    wait_for_event(&rig.kit, Duration::from_secs(15), |e| {
        e.source.channel_id.as_str() == "voice" && e.content.plain_text() == QUESTION
    })
    .await
    .expect("the question is committed");
    // Someone else puts text in the room: it is spoken, but it is no
    // answer to the caller's turn.
    let hold = "Please hold the line.";
    rig.kit
        .send_event(SendEvent::text("r1", "system", hold))
        .await
        .unwrap();
    let got = rig.client.collect(Duration::from_secs(3)).await;
    assert!(!media_only(&got).is_empty(), "the text is spoken");
    let (turns, mut said) = drain(&mut framework);
    assert!(turns.is_empty(), "no figures from a non-answer: {turns:?}");

    // The call ends: the unanswered turn is reported with what it has.
    rig.client.stop();
    tokio::time::timeout(Duration::from_secs(5), rig.call.take().unwrap().ended())
        .await
        .expect("the call ends");
    let (turns, later) = drain(&mut framework);
    said.extend(later);
    assert_eq!(turns.len(), 1, "{turns:?}");
    let t = turns[0];
    assert!(
        sane(t.eou_delay_ms) && t.stt_latency_ms.is_some_and(sane),
        "{t:?}"
    );
    assert_eq!(
        (t.llm_ttft_ms, t.tts_ttfb_ms, t.voice_to_voice_ms),
        (None, None, None),
        "{t:?}"
    );
    assert!(
        said.iter()
            .any(|s| s.role == "agent" && s.text == hold && !s.interrupted),
        "{said:?}"
    );
}
