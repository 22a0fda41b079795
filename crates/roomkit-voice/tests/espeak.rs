//! The libespeak-ng text-to-speech provider against the real library
//! (feature `espeak`).

use std::time::Duration;

use futures::StreamExt;
use roomkit_voice::offline::{EspeakConfig, EspeakTts};
use roomkit_voice::{TtsChunk, TtsProvider, VoiceError};

const SENTENCE: &str = "Hello world, please call me back tomorrow.";

fn provider() -> EspeakTts {
    EspeakTts::new(EspeakConfig::default()).expect("libespeak-ng initializes")
}

async fn synthesize(tts: &EspeakTts, text: &str, voice: Option<&str>) -> Vec<TtsChunk> {
    let stream = tts
        .synthesize_stream(text, voice)
        .await
        .expect("stream starts");
    let chunks: Vec<_> = tokio::time::timeout(Duration::from_secs(60), stream.collect::<Vec<_>>())
        .await
        .expect("synthesis finishes");
    chunks.into_iter().map(|c| c.expect("chunk")).collect()
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentence_becomes_audible_speech_in_several_chunks() {
    let tts = provider();
    assert_eq!(tts.name(), "espeak");
    assert_eq!(tts.sample_rate(), 22_050);
    let chunks = synthesize(&tts, SENTENCE, None).await;
    let audio: Vec<i16> = chunks
        .iter()
        .flat_map(|c| c.samples.iter().copied())
        .collect();
    assert!(chunks.iter().all(|c| c.sample_rate == 22_050));
    let with_audio = chunks.iter().filter(|c| !c.samples.is_empty()).count();
    assert!(with_audio >= 5, "expected several chunks, got {with_audio}");
    let seconds = audio.len() as f64 / 22_050.0;
    // Seven words at about 175 words per minute.
    assert!((1.2..8.0).contains(&seconds), "duration {seconds:.2} s");
    let level = rms(&audio);
    assert!(level > 500.0, "RMS {level:.0} is too quiet for speech");

    // Word marks: one per word, in order, inside the audio.
    let marks: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.marks.iter().copied())
        .collect();
    assert_eq!(marks.len(), 7, "{marks:?}");
    let ends: Vec<&str> = marks.iter().map(|m| &SENTENCE[..m.text_end]).collect();
    assert!(ends[0].ends_with("Hello"), "{ends:?}");
    assert!(ends[1].ends_with("world"), "{ends:?}");
    assert!(ends[6].ends_with("tomorrow"), "{ends:?}");
    assert!(
        marks
            .windows(2)
            .all(|w| w[0].audio_end_ms <= w[1].audio_end_ms)
    );
    let total_ms = (seconds * 1000.0) as u32;
    assert!(
        marks.iter().all(|m| m.audio_end_ms <= total_ms + 50),
        "{marks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_voice_change_the_audio() {
    let slow = EspeakTts::new(EspeakConfig {
        rate: Some(100),
        ..EspeakConfig::default()
    })
    .unwrap();
    let fast = EspeakTts::new(EspeakConfig {
        rate: Some(300),
        ..EspeakConfig::default()
    })
    .unwrap();
    let slow_len: usize = synthesize(&slow, SENTENCE, None)
        .await
        .iter()
        .map(|c| c.samples.len())
        .sum();
    let fast_len: usize = synthesize(&fast, SENTENCE, None)
        .await
        .iter()
        .map(|c| c.samples.len())
        .sum();
    assert!(
        slow_len > fast_len * 2,
        "slow {slow_len} vs fast {fast_len}"
    );

    let german = synthesize(&fast, "Guten Tag", Some("de")).await;
    assert!(
        rms(&german
            .iter()
            .flat_map(|c| c.samples.clone())
            .collect::<Vec<_>>())
            > 500.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_voice_is_an_error_in_the_stream() {
    let tts = provider();
    let stream = tts
        .synthesize_stream("hello", Some("no-such-voice-xyz"))
        .await
        .unwrap();
    let items: Vec<_> = stream.collect().await;
    assert_eq!(items.len(), 1, "{items:?}");
    let err = items[0].as_ref().unwrap_err();
    assert!(!err.retryable);
    assert!(err.message.contains("no-such-voice-xyz"), "{err}");
    // The engine still works afterwards.
    assert!(!synthesize(&tts, "still here", None).await.is_empty());
}

#[test]
fn bad_settings_are_config_errors() {
    let err = EspeakTts::new(EspeakConfig {
        rate: Some(20),
        ..EspeakConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, VoiceError::Config(m) if m.contains("rate")),
        "{err}"
    );
    let err = EspeakTts::new(EspeakConfig {
        voice: " ".into(),
        ..EspeakConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, VoiceError::Config(m) if m.contains("voice")),
        "{err}"
    );
    let parsed: Result<EspeakConfig, _> = serde_json::from_str(r#"{"voice":"en","speed":3}"#);
    assert!(parsed.is_err(), "unknown keys are refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_with_nul_and_empty_text_do_not_fail() {
    let tts = provider();
    let chunks = synthesize(&tts, "one\0two", None).await;
    assert!(chunks.iter().map(|c| c.samples.len()).sum::<usize>() > 0);
    let chunks = synthesize(&tts, "", None).await;
    assert!(chunks.iter().all(|c| c.samples.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_synthesis() {
    let tts = provider();
    let long = SENTENCE.repeat(300);

    // Reading the whole text takes a while: minutes of audio.
    let started = std::time::Instant::now();
    let mut stream = tts.synthesize_stream(&long, None).await.unwrap();
    let mut full = 0usize;
    while let Some(chunk) = stream.next().await {
        full += chunk.expect("audio").samples.len();
    }
    let full_time = started.elapsed();
    assert!(full > 22_050 * 60, "{full} samples");

    // Dropped after two chunks, the rest is never made: a short request
    // queued behind it finishes in a fraction of that time.
    let started = std::time::Instant::now();
    let mut stream = tts.synthesize_stream(&long, None).await.unwrap();
    for _ in 0..2 {
        stream.next().await.expect("a chunk").expect("audio");
    }
    drop(stream);
    let chunks = synthesize(&tts, "next", None).await;
    assert!(!chunks.is_empty());
    let cancelled_time = started.elapsed();
    eprintln!("cancelled after {cancelled_time:?}; the whole text took {full_time:?}");
    assert!(
        cancelled_time * 3 < full_time,
        "cancelled {cancelled_time:?}, full {full_time:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_from_two_providers_are_serialized_safely() {
    let a = provider();
    let b = EspeakTts::new(EspeakConfig {
        voice: "en-gb".into(),
        rate: Some(220),
    })
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let tts = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let text = format!("request number {i}");
            let chunks = synthesize(&tts, &text, None).await;
            chunks.iter().map(|c| c.samples.len()).sum::<usize>()
        }));
    }
    for task in tasks {
        let samples = task.await.unwrap();
        assert!(samples > 22_050 / 2, "{samples} samples");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_marks_fall_on_character_boundaries_of_non_ascii_text() {
    let tts = provider();
    let text = "Grüße aus München, schöne Straße";
    let chunks = synthesize(&tts, text, Some("de")).await;
    let marks: Vec<_> = chunks
        .iter()
        .flat_map(|c| c.marks.iter().copied())
        .collect();
    assert_eq!(marks.len(), 5, "{marks:?}");
    for mark in &marks {
        assert!(text.is_char_boundary(mark.text_end), "{mark:?}");
    }
    let ends: Vec<&str> = marks.iter().map(|m| &text[..m.text_end]).collect();
    assert!(ends[0].ends_with("Grüße"), "{ends:?}");
    assert!(ends[2].ends_with("München"), "{ends:?}");
    assert!(ends[4].ends_with("Straße"), "{ends:?}");
}
