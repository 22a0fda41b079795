//! Fallback providers over two fakes: the secondary takes over on retryable
//! failures, including a primary that breaks in the middle of a turn.

use std::sync::Arc;
use std::time::Duration;

use roomkit_voice::fake::{FakeDeepgram, FakeElevenLabs, FakeOpenAiAudio, Faults};
use roomkit_voice::vendors::Secret;
use roomkit_voice::vendors::deepgram::{DeepgramConfig, DeepgramStt};
use roomkit_voice::vendors::elevenlabs::{ElevenLabsConfig, ElevenLabsTts};
use roomkit_voice::vendors::fallback::{FallbackStt, FallbackTts};
use roomkit_voice::vendors::openai::{OpenAiStt, OpenAiSttConfig, OpenAiTts, OpenAiTtsConfig};
use roomkit_voice::{SttAudio, SttProvider, TtsProvider};

use crate::openai::drain;
use crate::{NO_HANG, speech};

async fn pair() -> (FakeDeepgram, FakeOpenAiAudio, Arc<FallbackStt>) {
    let dg = FakeDeepgram::start("dg", ["from deepgram"])
        .await
        .expect("fake");
    let oa = FakeOpenAiAudio::start("oa", ["from openai"])
        .await
        .expect("fake");
    let primary = DeepgramStt::new(
        Secret::new("dg"),
        &DeepgramConfig {
            base_url: dg.base_url(),
            finalize_timeout_ms: 500,
            ..DeepgramConfig::default()
        },
    )
    .expect("config");
    let secondary = OpenAiStt::new(
        Secret::new("oa"),
        &OpenAiSttConfig {
            base_url: oa.base_url(),
            ..OpenAiSttConfig::default()
        },
    )
    .expect("config");
    let both = Arc::new(FallbackStt::new(Arc::new(primary), Arc::new(secondary)));
    (dg, oa, both)
}

#[tokio::test]
async fn stt_falls_back_mid_turn_and_replays_the_turn() {
    let (dg, oa, both) = pair().await;
    assert_eq!(both.name(), "deepgram+openai");
    assert!(both.supports_streaming());
    // Deepgram accepts the socket, then breaks it instead of its first answer.
    dg.set_faults(Faults {
        close_after: Some(0),
        ..Faults::default()
    });
    let mut session = both.clone().open_session(16_000).await.expect("open");
    let turn = speech(16_000, 1_000);
    for frame in turn.chunks(320) {
        session
            .audio
            .send(SttAudio::Samples(frame.to_vec()))
            .await
            .expect("open");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let t = tokio::time::timeout(NO_HANG, session.results.recv())
        .await
        .expect("no hang")
        .expect("a result")
        .expect("no failure");
    assert_eq!(t.text, "from openai");
    // The secondary heard the whole turn, not only what came after the break.
    let reqs = oa.requests();
    assert_eq!(reqs.len(), 1);
    let body = &reqs[0].body;
    let wav_at = body
        .windows(4)
        .position(|w| w == b"RIFF")
        .expect("a WAV file");
    let data_len = u32::from_le_bytes([
        body[wav_at + 40],
        body[wav_at + 41],
        body[wav_at + 42],
        body[wav_at + 43],
    ]);
    assert_eq!(data_len as usize, turn.len() * 2);
}

#[tokio::test]
async fn stt_falls_back_when_the_primary_cannot_open_or_answer() {
    let (dg, _oa, both) = pair().await;
    dg.set_faults(Faults {
        fail_status: Some(503),
        ..Faults::default()
    });
    let t = both
        .transcribe(&speech(16_000, 200), 16_000)
        .await
        .expect("fallback");
    assert_eq!(t.text, "from openai");
    let mut session = both
        .clone()
        .open_session(16_000)
        .await
        .expect("fallback session");
    session
        .audio
        .send(SttAudio::Samples(speech(16_000, 200)))
        .await
        .expect("open");
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let r = tokio::time::timeout(NO_HANG, session.results.recv())
        .await
        .expect("no hang");
    // The script of the fake OpenAI is used up: an empty final.
    assert!(r.is_some_and(|r| r.is_ok()));
}

#[tokio::test]
async fn a_fatal_primary_failure_is_not_hidden() {
    let (dg, oa, both) = pair().await;
    dg.set_faults(Faults {
        fail_status: Some(401),
        ..Faults::default()
    });
    let err = both
        .transcribe(&speech(16_000, 200), 16_000)
        .await
        .expect_err("fatal");
    assert_eq!(err.provider, "deepgram");
    assert!(!err.retryable);
    assert!(oa.requests().is_empty());
}

#[tokio::test]
async fn tts_falls_back_before_the_first_chunk_only() {
    let el = FakeElevenLabs::start("el").await.expect("fake");
    let oa = FakeOpenAiAudio::start("oa", Vec::<String>::new())
        .await
        .expect("fake");
    let primary = ElevenLabsTts::new(
        Secret::new("el"),
        &ElevenLabsConfig {
            base_url: el.base_url(),
            voice_id: "v".into(),
            stall_timeout_ms: 300,
            ..ElevenLabsConfig::default()
        },
    )
    .expect("config");
    let secondary = OpenAiTts::new(
        Secret::new("oa"),
        &OpenAiTtsConfig {
            base_url: oa.base_url(),
            ..OpenAiTtsConfig::default()
        },
    )
    .expect("config");
    let both = FallbackTts::new(Arc::new(primary), Arc::new(secondary));
    assert_eq!(both.sample_rate(), 16_000);

    // Primary refuses: the secondary speaks (its own rate on its chunks).
    el.set_faults(Faults {
        fail_status: Some(500),
        ..Faults::default()
    });
    let (chunks, failure) =
        drain(both.synthesize_stream("Hello", None).await.expect("stream")).await;
    assert!(failure.is_none());
    assert!(!chunks.is_empty() && chunks.iter().all(|c| c.sample_rate == 24_000));

    // Primary answers, then stalls before any audio: the secondary speaks.
    el.set_faults(Faults {
        stall_after: Some(0),
        ..Faults::default()
    });
    let (chunks, failure) =
        drain(both.synthesize_stream("Hello", None).await.expect("stream")).await;
    assert!(failure.is_none());
    assert!(chunks.iter().all(|c| c.sample_rate == 24_000));

    // Primary stalls after some audio: the failure is passed on.
    el.set_faults(Faults {
        stall_after: Some(4_000),
        ..Faults::default()
    });
    let (chunks, failure) = drain(
        both.synthesize_stream("Hello there friend", None)
            .await
            .expect("stream"),
    )
    .await;
    assert!(chunks.iter().all(|c| c.sample_rate == 16_000) && !chunks.is_empty());
    assert!(failure.is_some_and(|f| f.provider == "elevenlabs" && f.retryable));
    assert_eq!(oa.requests().len(), 2);
}

#[tokio::test]
async fn stt_falls_back_when_the_primary_stalls_on_finalize() {
    let (dg, oa, both) = pair().await;
    // Deepgram takes the audio but never answers anything.
    dg.set_faults(Faults {
        stall_after: Some(0),
        ..Faults::default()
    });
    let mut session = both.clone().open_session(16_000).await.expect("open");
    let turn = speech(16_000, 700);
    for frame in turn.chunks(320) {
        session
            .audio
            .send(SttAudio::Samples(frame.to_vec()))
            .await
            .expect("open");
    }
    session.audio.send(SttAudio::Finalize).await.expect("open");
    // The finalize timeout (500 ms) fails the primary; the secondary gets the
    // finalized turn and answers it.
    let t = tokio::time::timeout(NO_HANG, session.results.recv())
        .await
        .expect("no hang")
        .expect("a result")
        .expect("no failure");
    assert_eq!(t.text, "from openai");
    assert!(t.is_final);
    let reqs = oa.requests();
    assert_eq!(reqs.len(), 1);
    let body = &reqs[0].body;
    let wav_at = body
        .windows(4)
        .position(|w| w == b"RIFF")
        .expect("a WAV file");
    let data_len = u32::from_le_bytes([
        body[wav_at + 40],
        body[wav_at + 41],
        body[wav_at + 42],
        body[wav_at + 43],
    ]);
    assert_eq!(
        data_len as usize,
        turn.len() * 2,
        "the whole finalized turn"
    );
}
