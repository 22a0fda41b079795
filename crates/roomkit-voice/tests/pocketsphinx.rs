//! The libpocketsphinx speech-to-text provider against the real library and
//! Debian's en-us model, on speech made by libespeak-ng (features
//! `pocketsphinx` and `espeak`).
//!
//! The model is wideband, so every test speaks to it at 16 kHz (or at
//! 22.05 kHz, resampled down by the provider), never telephone audio.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use roomkit_audio::resample::ChunkResampler;
use roomkit_voice::offline::pocketsphinx::DEFAULT_MODEL_DIR;
use roomkit_voice::offline::{EspeakConfig, EspeakTts, PocketsphinxConfig, PocketsphinxStt};
use roomkit_voice::{SttAudio, SttProvider, Transcript, TtsProvider, VoiceError};

const PHRASES: [&str; 4] = [
    "hello world please call me back tomorrow",
    "transfer me to sales",
    // Written as people write: lower-cased and stripped for the grammar.
    "What time is it?",
    "cancel my order",
];

/// espeak-ng speech of `text` at its own rate (22,050 Hz).
async fn speak(text: &str) -> Vec<i16> {
    let tts = EspeakTts::new(EspeakConfig::default()).expect("libespeak-ng initializes");
    let stream = tts.synthesize_stream(text, None).await.expect("stream");
    let chunks: Vec<_> = stream.collect().await;
    chunks
        .into_iter()
        .flat_map(|c| c.expect("audio").samples)
        .collect()
}

/// The same speech at 16 kHz, with half a second of silence around it.
async fn speak_16k(text: &str) -> Vec<i16> {
    let speech = speak(text).await;
    let mut resampler = ChunkResampler::new(22_050, 16_000, 441).expect("resampler");
    let block = resampler.input_len();
    let mut input: Vec<f32> = speech.iter().map(|&s| f32::from(s)).collect();
    input.resize(input.len().div_ceil(block) * block, 0.0);
    let mut out = vec![0.0f32; resampler.output_len()];
    let mut audio = vec![0i16; 8_000];
    for chunk in input.chunks(block) {
        let n = resampler.process(chunk, &mut out).expect("resample");
        audio.extend(out[..n].iter().map(|&s| s.clamp(-32768.0, 32767.0) as i16));
    }
    audio.extend(std::iter::repeat_n(0, 8_000));
    audio
}

fn with_phrases() -> PocketsphinxStt {
    PocketsphinxStt::new(PocketsphinxConfig {
        phrases: PHRASES.iter().map(|p| (*p).to_owned()).collect(),
        ..PocketsphinxConfig::default()
    })
    .expect("the model loads")
}

async fn run_session(stt: Arc<PocketsphinxStt>, utterances: Vec<Vec<i16>>) -> Vec<Transcript> {
    let mut session = stt.open_session(16_000).await.expect("session");
    let feeder = session.audio.clone();
    drop(session.audio);
    let writer = tokio::spawn(async move {
        for audio in utterances {
            for frame in audio.chunks(320) {
                feeder
                    .send(SttAudio::Samples(frame.to_vec()))
                    .await
                    .expect("send");
            }
            feeder.send(SttAudio::Finalize).await.expect("finalize");
        }
    });
    let mut results = Vec::new();
    while let Some(result) = tokio::time::timeout(Duration::from_secs(120), session.results.recv())
        .await
        .expect("results in time")
    {
        results.push(result.expect("no provider error"));
    }
    writer.await.expect("writer");
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn espeak_speech_round_trips_through_a_phrase_list() {
    let stt = with_phrases();
    assert_eq!(stt.name(), "pocketsphinx");
    assert_eq!(stt.sample_rate(), 16_000);
    for phrase in [
        "transfer me to sales",
        "hello world, please call me back tomorrow.",
    ] {
        let audio = speak_16k(phrase).await;
        let transcript = stt.transcribe(&audio, 16_000).await.expect("transcribed");
        assert!(transcript.is_final);
        assert_eq!(
            transcript.text,
            phrase.replace([',', '.'], ""),
            "16 kHz speech of {phrase:?}"
        );
    }
    // After a faint hiss instead of digital silence.
    let mut audio: Vec<i16> = (0u32..8_000)
        .map(|i| ((i.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 16) % 129) as i16 - 64)
        .collect();
    audio.extend(speak_16k("transfer me to sales").await);
    let transcript = stt.transcribe(&audio, 16_000).await.expect("transcribed");
    assert_eq!(transcript.text, "transfer me to sales", "after a hiss");

    // At espeak's own rate, the provider resamples.
    let audio = speak("what time is it").await;
    let transcript = stt.transcribe(&audio, 22_050).await.expect("transcribed");
    assert_eq!(transcript.text, "what time is it");
    let end_ms = transcript.end_ms.expect("end");
    assert!((500..5_000).contains(&end_ms), "{end_ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_session_gives_interim_and_final_results_per_utterance() {
    let stt = Arc::new(with_phrases());
    assert!(stt.supports_streaming());
    let first = speak_16k("hello world please call me back tomorrow").await;
    let second = speak_16k("cancel my order").await;
    let first_ms = (first.len() / 16) as u64;
    let results = run_session(stt, vec![first, second]).await;
    let finals: Vec<&Transcript> = results.iter().filter(|t| t.is_final).collect();
    assert_eq!(
        finals.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(),
        [
            "hello world please call me back tomorrow",
            "cancel my order"
        ],
        "{results:?}"
    );
    assert_eq!(finals[0].start_ms, Some(0));
    assert_eq!(finals[1].start_ms, Some(first_ms));
    assert!(
        results.iter().any(|t| !t.is_final && !t.text.is_empty()),
        "interim results while speaking: {results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_each_recognize_their_own_speech() {
    let stt = Arc::new(with_phrases());
    let a = speak_16k("transfer me to sales").await;
    let b = speak_16k("what time is it").await;
    let (ra, rb) = tokio::join!(
        run_session(Arc::clone(&stt), vec![a]),
        run_session(Arc::clone(&stt), vec![b])
    );
    let last = |r: &[Transcript]| r.iter().rfind(|t| t.is_final).map(|t| t.text.clone());
    assert_eq!(last(&ra).as_deref(), Some("transfer me to sales"), "{ra:?}");
    assert_eq!(last(&rb).as_deref(), Some("what time is it"), "{rb:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsgf_grammar_file_is_used() {
    let dir = std::env::temp_dir().join(format!("roomkit-pocketsphinx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let grammar = dir.join("menu.gram");
    std::fs::write(
        &grammar,
        "#JSGF V1.0;\ngrammar menu;\npublic <menu> = (press | dial) (one | two | three);\n",
    )
    .unwrap();
    let stt = PocketsphinxStt::new(PocketsphinxConfig {
        grammar: Some(grammar),
        ..PocketsphinxConfig::default()
    })
    .expect("the grammar loads");
    let audio = speak_16k("dial three").await;
    let transcript = stt.transcribe(&audio, 16_000).await.unwrap();
    assert_eq!(transcript.text, "dial three");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_model_decodes_free_form() {
    // Free-form decoding of synthetic speech is poor, so only the shape of
    // the result is checked: the default model loads and answers.
    let stt = PocketsphinxStt::new(PocketsphinxConfig::default()).expect("the model loads");
    let audio = speak_16k("hello world").await;
    let transcript = stt.transcribe(&audio, 16_000).await.unwrap();
    assert!(transcript.is_final);
    assert!(stt.transcribe(&[], 16_000).await.unwrap().text.is_empty());
}

#[tokio::test]
async fn bad_settings_and_input_are_errors() {
    let missing = PocketsphinxStt::new(PocketsphinxConfig {
        model_dir: "/nonexistent/model".into(),
        ..PocketsphinxConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&missing, VoiceError::Config(m) if m.contains("acoustic_model") && m.contains("/nonexistent/model")),
        "{missing}"
    );

    let unknown_word = PocketsphinxStt::new(PocketsphinxConfig {
        phrases: vec!["transfer me to zzqxv".into()],
        ..PocketsphinxConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&unknown_word, VoiceError::Config(m) if m.contains("zzqxv")),
        "{unknown_word}"
    );

    let both = PocketsphinxStt::new(PocketsphinxConfig {
        phrases: vec!["hello".into()],
        grammar: Some(format!("{DEFAULT_MODEL_DIR}/none.gram").into()),
        ..PocketsphinxConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&both, VoiceError::Config(m) if m.contains("phrases")),
        "{both}"
    );

    let empty = PocketsphinxStt::new(PocketsphinxConfig {
        phrases: vec!["...".into()],
        ..PocketsphinxConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&empty, VoiceError::Config(m) if m.contains("no words")),
        "{empty}"
    );

    let parsed: Result<PocketsphinxConfig, _> = serde_json::from_str(r#"{"keywords":["a"]}"#);
    assert!(parsed.is_err(), "unknown keys are refused");

    let stt = with_phrases();
    let err = stt.transcribe(&[0; 100], 0).await.unwrap_err();
    assert!(
        !err.retryable && err.message.contains("sample rate"),
        "{err}"
    );
    // Silence is not a phrase.
    let silence = stt.transcribe(&[0; 16_000], 16_000).await.unwrap();
    assert!(silence.is_final);
}
