//! OpenAI transcription and speech against the fake OpenAI audio API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use roomkit_voice::fake::{FakeOpenAiAudio, Faults};
use roomkit_voice::vendors::Secret;
use roomkit_voice::vendors::openai::{OpenAiStt, OpenAiSttConfig, OpenAiTts, OpenAiTtsConfig};
use roomkit_voice::{ProviderFailure, SttAudio, SttProvider, TtsChunk, TtsProvider};

use crate::{NO_HANG, speech};

const KEY: &str = "sk-test-openai";

fn stt(base: &str, tweak: impl FnOnce(&mut OpenAiSttConfig)) -> Arc<OpenAiStt> {
    let mut config = OpenAiSttConfig {
        base_url: base.to_owned(),
        ..OpenAiSttConfig::default()
    };
    tweak(&mut config);
    Arc::new(OpenAiStt::new(Secret::new(KEY), &config).expect("valid config"))
}

fn tts(base: &str, tweak: impl FnOnce(&mut OpenAiTtsConfig)) -> OpenAiTts {
    let mut config = OpenAiTtsConfig {
        base_url: base.to_owned(),
        ..OpenAiTtsConfig::default()
    };
    tweak(&mut config);
    OpenAiTts::new(Secret::new(KEY), &config).expect("valid config")
}

/// Reads a whole synthesis: its chunks, and the failure that ended it.
pub async fn drain(
    mut stream: roomkit_voice::TtsStream,
) -> (Vec<TtsChunk>, Option<ProviderFailure>) {
    tokio::time::timeout(NO_HANG, async {
        let mut chunks = Vec::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(c) => chunks.push(c),
                Err(f) => {
                    assert!(stream.next().await.is_none(), "a failure ends the stream");
                    return (chunks, Some(f));
                }
            }
        }
        (chunks, None)
    })
    .await
    .expect("no hang")
}

fn field(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let marker = format!("name=\"{name}\"\r\n\r\n");
    let start = text.find(&marker)? + marker.len();
    let end = text[start..].find("\r\n")?;
    Some(text[start..start + end].to_owned())
}

#[tokio::test]
async fn transcription_sends_a_wav_and_reads_the_text() {
    let fake = FakeOpenAiAudio::start(KEY, ["what time is it", "thanks"])
        .await
        .expect("fake");
    let p = stt(&fake.base_url(), |c| c.language = Some("en".into()));
    assert!(!p.supports_streaming());
    let t = p
        .transcribe(&speech(16_000, 500), 16_000)
        .await
        .expect("text");
    assert_eq!(t.text, "what time is it");
    assert!(t.is_final);

    let reqs = fake.requests();
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/audio/transcriptions");
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-openai"));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("multipart/form-data; boundary="))
    );
    assert_eq!(
        field(&r.body, "model").as_deref(),
        Some("gpt-4o-mini-transcribe")
    );
    assert_eq!(field(&r.body, "response_format").as_deref(), Some("json"));
    assert_eq!(field(&r.body, "language").as_deref(), Some("en"));
    let wav_at = r
        .body
        .windows(4)
        .position(|w| w == b"RIFF")
        .expect("a WAV file");
    let wav = &r.body[wav_at..];
    assert_eq!(
        u32::from_le_bytes([wav[24], wav[25], wav[26], wav[27]]),
        16_000
    );
    assert_eq!(
        u32::from_le_bytes([wav[40], wav[41], wav[42], wav[43]]),
        16_000
    );

    // The default session buffers a turn until Finalize.
    let mut session = p.clone().open_session(16_000).await.expect("open");
    session
        .audio
        .send(SttAudio::Samples(speech(16_000, 200)))
        .await
        .expect("open");
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let t = tokio::time::timeout(NO_HANG, session.results.recv())
        .await
        .expect("no hang")
        .expect("a result")
        .expect("no failure");
    assert_eq!(t.text, "thanks");
}

#[tokio::test]
async fn a_base_url_without_v1_gets_it() {
    let fake = FakeOpenAiAudio::start(KEY, ["fine"]).await.expect("fake");
    let root = fake.base_url().trim_end_matches("/v1").to_owned();
    let t = stt(&root, |_| {})
        .transcribe(&speech(8_000, 100), 8_000)
        .await;
    assert_eq!(t.map(|t| t.text), Ok("fine".to_owned()));
}

#[tokio::test]
async fn transcription_failures_are_classified_and_never_echo_the_body() {
    let fake = FakeOpenAiAudio::start("another-key", ["x"])
        .await
        .expect("fake");
    let p = stt(&fake.base_url(), |c| c.request_timeout_ms = 400);
    let err = p
        .transcribe(&speech(16_000, 100), 16_000)
        .await
        .expect_err("401");
    assert!(!err.retryable);
    assert_eq!(err.message, "transcriptions: HTTP 401");

    fake.set_faults(Faults {
        fail_status: Some(502),
        ..Faults::default()
    });
    let err = p
        .transcribe(&speech(16_000, 100), 16_000)
        .await
        .expect_err("502");
    assert!(err.retryable);
    assert!(!err.message.contains("injected"));

    fake.set_faults(Faults {
        delay: Duration::from_secs(3),
        ..Faults::default()
    });
    let started = Instant::now();
    let err = p
        .transcribe(&speech(16_000, 100), 16_000)
        .await
        .expect_err("timeout");
    assert!(err.retryable && err.message.contains("no answer"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(2_500));
}

#[tokio::test]
async fn a_failing_buffered_session_reports_once_and_ends() {
    let fake = FakeOpenAiAudio::start(KEY, ["x"]).await.expect("fake");
    fake.set_faults(Faults {
        fail_status: Some(500),
        ..Faults::default()
    });
    let p = stt(&fake.base_url(), |_| {});
    let mut session = p.open_session(16_000).await.expect("open");
    session
        .audio
        .send(SttAudio::Samples(speech(16_000, 100)))
        .await
        .expect("open");
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let r = tokio::time::timeout(NO_HANG, session.results.recv())
        .await
        .expect("no hang");
    assert!(r.is_some_and(|r| r.is_err_and(|f| f.retryable)));
    assert!(session.results.recv().await.is_none());
}

#[tokio::test]
async fn speech_streams_pcm_in_pieces_and_joins_split_samples() {
    let fake = FakeOpenAiAudio::start(KEY, Vec::<String>::new())
        .await
        .expect("fake");
    let p = tts(&fake.base_url(), |c| c.instructions = Some("calm".into()));
    assert_eq!(p.sample_rate(), 24_000);
    let text = "Your order ships tomorrow morning."; // 34 characters: 2.04 s
    let stream = p
        .synthesize_stream(text, Some("nova"))
        .await
        .expect("stream");
    let (chunks, failure) = drain(stream).await;
    assert!(failure.is_none(), "{failure:?}");
    assert!(chunks.len() > 3, "streamed in several chunks");
    assert!(
        chunks
            .iter()
            .all(|c| c.sample_rate == 24_000 && !c.samples.is_empty())
    );
    let samples: Vec<i16> = chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect();
    assert_eq!(samples.len(), 24_000 * 34 * 60 / 1000);
    // Chunks of 4801 bytes split samples; joined right, the tone stays smooth.
    let max_step = samples
        .windows(2)
        .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
        .max();
    assert!(max_step.is_some_and(|m| m < 1_000), "{max_step:?}");
    let peak = samples
        .iter()
        .map(|s| i32::from(*s).abs())
        .max()
        .unwrap_or(0);
    assert!((7_000..=8_000).contains(&peak), "{peak}");

    let body = fake.requests()[0].json().expect("json");
    assert_eq!(body["model"], "gpt-4o-mini-tts");
    assert_eq!(body["input"], text);
    assert_eq!(body["voice"], "nova");
    assert_eq!(body["response_format"], "pcm");
    assert_eq!(body["instructions"], "calm");
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some("Bearer sk-test-openai")
    );

    // No voice named: the configured one.
    let (_, failure) = drain(p.synthesize_stream("Hi.", None).await.expect("stream")).await;
    assert!(failure.is_none());
    assert_eq!(fake.requests()[1].json().expect("json")["voice"], "alloy");
}

#[tokio::test]
async fn speech_that_stalls_or_breaks_mid_stream_ends_with_a_failure() {
    let fake = FakeOpenAiAudio::start(KEY, Vec::<String>::new())
        .await
        .expect("fake");
    let p = tts(&fake.base_url(), |c| c.stall_timeout_ms = 400);
    fake.set_faults(Faults {
        stall_after: Some(20_000),
        ..Faults::default()
    });
    let started = Instant::now();
    let (chunks, failure) = drain(
        p.synthesize_stream("a long enough sentence", None)
            .await
            .expect("stream"),
    )
    .await;
    let failure = failure.expect("a failure");
    assert!(
        failure.retryable && failure.message.contains("stalled"),
        "{failure}"
    );
    let got: usize = chunks.iter().map(|c| c.samples.len()).sum();
    assert_eq!(got, 10_000, "the audio before the stall was delivered");
    assert!(started.elapsed() < Duration::from_secs(10));

    fake.set_faults(Faults {
        close_after: Some(9_999),
        ..Faults::default()
    });
    let (chunks, failure) = drain(
        p.synthesize_stream("a long enough sentence", None)
            .await
            .expect("stream"),
    )
    .await;
    let failure = failure.expect("a failure");
    assert!(failure.retryable, "{failure}");
    assert!(chunks.iter().map(|c| c.samples.len()).sum::<usize>() <= 4_999);
}

#[tokio::test]
async fn speech_refusals_and_slow_starts() {
    let fake = FakeOpenAiAudio::start(KEY, Vec::<String>::new())
        .await
        .expect("fake");
    let bad_key = OpenAiTts::new(
        Secret::new("wrong"),
        &OpenAiTtsConfig {
            base_url: fake.base_url(),
            ..OpenAiTtsConfig::default()
        },
    )
    .expect("config");
    let err = bad_key
        .synthesize_stream("hello", None)
        .await
        .err()
        .expect("401");
    assert!(!err.retryable && err.message.contains("401"));
    assert!(!err.to_string().contains("Incorrect"));

    let p = tts(&fake.base_url(), |c| c.first_byte_timeout_ms = 300);
    fake.set_faults(Faults {
        delay: Duration::from_secs(3),
        ..Faults::default()
    });
    let started = Instant::now();
    let err = p
        .synthesize_stream("hello", None)
        .await
        .err()
        .expect("timeout");
    assert!(err.retryable && err.message.contains("no answer"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(2_500));

    // Empty text: nothing to say, no request.
    let before = fake.requests().len();
    let (chunks, failure) = drain(p.synthesize_stream("  ", None).await.expect("stream")).await;
    assert!(chunks.is_empty() && failure.is_none());
    assert_eq!(fake.requests().len(), before, "no request for empty text");
}

#[test]
fn bad_settings_are_config_errors() {
    let e = OpenAiTts::new(
        Secret::new("k"),
        &OpenAiTtsConfig {
            speed: Some(9.0),
            ..OpenAiTtsConfig::default()
        },
    )
    .err();
    assert!(e.is_some_and(|e| e.to_string().contains("speed")));
    let e = OpenAiStt::new(
        Secret::new("k"),
        &OpenAiSttConfig {
            base_url: "file:///etc".into(),
            ..OpenAiSttConfig::default()
        },
    )
    .err();
    assert!(e.is_some_and(|e| e.to_string().contains("base_url")));
    let e = OpenAiStt::from_config(&OpenAiSttConfig {
        api_key_env: "ROOMKIT_TEST_SURELY_UNSET_KEY".into(),
        ..OpenAiSttConfig::default()
    })
    .err();
    assert!(e.is_some_and(|e| e.to_string().contains("ROOMKIT_TEST_SURELY_UNSET_KEY")));
    let parsed: Result<OpenAiTtsConfig, _> =
        serde_json::from_str(r#"{"voice":"echo","colour":"red"}"#);
    assert!(parsed.is_err(), "unknown keys are refused");
}
