//! ElevenLabs streaming speech against the fake ElevenLabs.

use std::time::{Duration, Instant};

use roomkit_voice::TtsProvider;
use roomkit_voice::fake::{FakeElevenLabs, Faults};
use roomkit_voice::tts::WordMark;
use roomkit_voice::vendors::Secret;
use roomkit_voice::vendors::elevenlabs::{ElevenLabsConfig, ElevenLabsTts, VoiceSettings};

use crate::openai::drain;

const KEY: &str = "xi-test-key";

fn provider(base: &str, tweak: impl FnOnce(&mut ElevenLabsConfig)) -> ElevenLabsTts {
    let mut config = ElevenLabsConfig {
        base_url: base.to_owned(),
        voice_id: "voice123".to_owned(),
        stall_timeout_ms: 400,
        ..ElevenLabsConfig::default()
    };
    tweak(&mut config);
    ElevenLabsTts::new(Secret::new(KEY), &config).expect("valid config")
}

#[tokio::test]
async fn plain_stream_gives_pcm_at_the_asked_rate() {
    let fake = FakeElevenLabs::start(KEY).await.expect("fake");
    let p = provider(&fake.base_url(), |c| {
        c.voice_settings = Some(VoiceSettings {
            stability: Some(0.4),
            ..VoiceSettings::default()
        });
    });
    assert_eq!(p.sample_rate(), 16_000);
    let (chunks, failure) = drain(
        p.synthesize_stream("Hello there", None)
            .await
            .expect("stream"),
    )
    .await;
    assert!(failure.is_none(), "{failure:?}");
    assert!(chunks.len() > 2);
    assert!(
        chunks
            .iter()
            .all(|c| c.sample_rate == 16_000 && c.marks.is_empty())
    );
    let n: usize = chunks.iter().map(|c| c.samples.len()).sum();
    assert_eq!(n, 16_000 * 11 * 60 / 1000);

    let r = &fake.requests()[0];
    assert_eq!(
        r.path,
        "/v1/text-to-speech/voice123/stream?output_format=pcm_16000"
    );
    assert_eq!(r.header("xi-api-key"), Some(KEY));
    let body = r.json().expect("json");
    assert_eq!(body["text"], "Hello there");
    assert_eq!(body["model_id"], "eleven_flash_v2_5");
    assert!((body["voice_settings"]["stability"].as_f64().unwrap_or(0.0) - 0.4).abs() < 1e-6);
    assert!(
        body["voice_settings"].get("style").is_none(),
        "unset settings are left out"
    );

    // Another voice and rate.
    let p = provider(&fake.base_url(), |c| c.sample_rate = 24_000);
    let (chunks, _) = drain(
        p.synthesize_stream("Hi", Some("other voice"))
            .await
            .expect("stream"),
    )
    .await;
    assert!(chunks.iter().all(|c| c.sample_rate == 24_000));
    assert_eq!(
        fake.requests()[1].path,
        "/v1/text-to-speech/other%20voice/stream?output_format=pcm_24000"
    );
}

#[tokio::test]
async fn timestamps_become_word_marks() {
    let fake = FakeElevenLabs::start(KEY).await.expect("fake");
    let p = provider(&fake.base_url(), |c| c.timestamps = true);
    let text = "Hello big world";
    let (chunks, failure) = drain(p.synthesize_stream(text, None).await.expect("stream")).await;
    assert!(failure.is_none(), "{failure:?}");
    assert!(
        fake.requests()[0]
            .path
            .contains("/stream/with-timestamps?output_format=pcm_16000")
    );
    let n: usize = chunks.iter().map(|c| c.samples.len()).sum();
    assert_eq!(n, 16_000 * 15 * 60 / 1000);
    let marks: Vec<WordMark> = chunks
        .iter()
        .flat_map(|c| c.marks.iter().copied())
        .collect();
    assert_eq!(
        marks,
        vec![
            WordMark {
                text_end: 5,
                audio_end_ms: 300
            },
            WordMark {
                text_end: 9,
                audio_end_ms: 540
            },
            WordMark {
                text_end: 15,
                audio_end_ms: 900
            },
        ]
    );
    // Each mark comes with (or after) the audio it needs.
    let mut audio_ms = 0;
    for c in &chunks {
        audio_ms += c.samples.len() * 1000 / 16_000;
        for m in &c.marks {
            assert!(
                m.audio_end_ms as usize <= audio_ms,
                "{m:?} before {audio_ms} ms"
            );
        }
    }
    let last = chunks.last().expect("chunks");
    assert!(
        last.samples.is_empty() && last.marks.len() == 1,
        "the last word's mark closes the stream"
    );
}

#[tokio::test]
async fn failures_stalls_and_breaks() {
    let fake = FakeElevenLabs::start("another-key").await.expect("fake");
    let p = provider(&fake.base_url(), |_| {});
    let err = p.synthesize_stream("hello", None).await.err().expect("401");
    assert!(!err.retryable && err.message == "stream: HTTP 401", "{err}");

    let fake = FakeElevenLabs::start(KEY).await.expect("fake");
    for timestamps in [false, true] {
        let p = provider(&fake.base_url(), |c| c.timestamps = timestamps);
        fake.set_faults(Faults {
            fail_status: Some(500),
            ..Faults::default()
        });
        let err = p.synthesize_stream("hello", None).await.err().expect("500");
        assert!(err.retryable && err.message.contains("500"));

        fake.set_faults(Faults {
            stall_after: Some(3_500),
            ..Faults::default()
        });
        let started = Instant::now();
        let (_, failure) = drain(
            p.synthesize_stream("a sentence to say", None)
                .await
                .expect("stream"),
        )
        .await;
        let failure = failure.expect("a failure");
        assert!(
            failure.retryable && failure.message.contains("stalled"),
            "{failure}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));

        fake.set_faults(Faults {
            close_after: Some(3_500),
            ..Faults::default()
        });
        let (_, failure) = drain(
            p.synthesize_stream("a sentence to say", None)
                .await
                .expect("stream"),
        )
        .await;
        assert!(
            failure.is_some_and(|f| f.retryable),
            "timestamps={timestamps}"
        );
    }
}

#[tokio::test]
async fn the_fake_refuses_like_elevenlabs() {
    let fake = FakeElevenLabs::start(KEY).await.expect("fake");
    let client = reqwest::Client::new();
    let url = format!(
        "{}/v1/text-to-speech/v/stream?output_format=pcm_16000",
        fake.base_url()
    );
    let resp = client
        .post(&url)
        .header("xi-api-key", KEY)
        .json(&serde_json::json!({"model_id": "m"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["detail"][0]["loc"][1], "text");
    let resp = client
        .post(&url)
        .json(&serde_json::json!({"text": "x"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["detail"]["status"], "invalid_api_key");
}

#[test]
fn settings_are_checked() {
    let base = ElevenLabsConfig {
        voice_id: "v".into(),
        ..ElevenLabsConfig::default()
    };
    assert!(ElevenLabsTts::new(Secret::new("k"), &base).is_ok());
    let e = ElevenLabsTts::new(
        Secret::new("k"),
        &ElevenLabsConfig {
            sample_rate: 11_025,
            ..base.clone()
        },
    )
    .err();
    assert!(e.is_some_and(|e| e.to_string().contains("sample_rate")));
    let e = ElevenLabsTts::new(
        Secret::new("k"),
        &ElevenLabsConfig {
            voice_id: String::new(),
            ..base
        },
    )
    .err();
    assert!(e.is_some_and(|e| e.to_string().contains("voice_id")));
    let parsed: ElevenLabsConfig =
        serde_json::from_str(r#"{"voice_id":"v","voice_settings":{"speed":1.1}}"#).expect("parses");
    assert_eq!(parsed.voice_settings.and_then(|s| s.speed), Some(1.1));
}
