//! A whole call through the browser transport over a loopback WebSocket:
//! the page's protocol in, the caller's transcript and the agent's text and
//! audio out, with a text-to-speech that streams chunks of odd lengths at
//! 22,050 Hz (as espeak does).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use roomkit_ai::EchoAgent;
use roomkit_audio::AudioPipelineConfig;
use roomkit_audio::pipeline::VadChoice;
use roomkit_core::model::ChannelId;
use roomkit_core::{AttachOptions, CreateRoom, RoomKit};
use roomkit_voice::browser::{BrowserBackend, encode_frame};
use roomkit_voice::tts::TtsStream;
use roomkit_voice::{ProviderFailure, TtsChunk, TtsProvider, VoiceChannel, VoiceSettings};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{ScriptedStt, media_server, silence, speech};

/// Test double: a tone at 22,050 Hz, 60 ms per character, streamed in
/// chunks of 2,206 samples (not a whole number of milliseconds).
struct OddChunkTts;

const ODD_RATE: u32 = 22_050;

#[async_trait]
impl TtsProvider for OddChunkTts {
    fn name(&self) -> &str {
        "odd-chunk-test-tts"
    }

    fn sample_rate(&self) -> u32 {
        ODD_RATE
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        _voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        let total = text.chars().count() * 60 * ODD_RATE as usize / 1000;
        let samples: Vec<i16> = (0..total)
            .map(|i| {
                ((i as f32 / ODD_RATE as f32 * 300.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
            })
            .collect();
        let chunks: Vec<Result<TtsChunk, ProviderFailure>> = samples
            .chunks(2_206)
            .map(|c| {
                Ok(TtsChunk {
                    samples: c.to_vec(),
                    sample_rate: ODD_RATE,
                    marks: Vec::new(),
                })
            })
            .collect();
        Ok(futures::stream::iter(chunks).boxed())
    }
}

/// 8 kHz samples doubled to 16 kHz (enough for the VAD).
fn wideband(narrow: &[i16]) -> Vec<i16> {
    narrow.iter().flat_map(|&s| [s, s]).collect()
}

#[tokio::test]
async fn a_browser_call_gets_its_transcript_the_agent_text_and_whole_agent_audio() {
    let settings = VoiceSettings {
        pipeline: AudioPipelineConfig {
            vad: Some(VadChoice::Webrtc {
                mode: Default::default(),
            }),
            ..AudioPipelineConfig::default()
        },
        ..VoiceSettings::default()
    };
    let stt = ScriptedStt::new(&["what time is it"]);
    let voice = VoiceChannel::new("voice", settings, stt, Arc::new(OddChunkTts)).unwrap();
    let kit = RoomKit::builder()
        .channel(Arc::new(voice.clone()))
        .channel(Arc::new(EchoAgent::new("echo")))
        .build()
        .unwrap();
    voice.attach_kit(&kit);
    kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
    for id in ["voice", "echo"] {
        kit.attach_channel(&"r1".into(), &ChannelId::from(id), AttachOptions::default())
            .await
            .unwrap();
    }
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
    let backend = BrowserBackend::new();
    let voice2 = voice.clone();
    let call = tokio::spawn(async move { voice2.accept(&backend, socket).await });

    let mut audio = silence(300);
    audio.extend(speech("what time is it"));
    audio.extend(silence(1200));
    let audio = wideband(&audio);
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for frame in audio.chunks(320) {
            if tx.send(Message::binary(encode_frame(frame))).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Keep the socket open while the answer plays.
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(tx);
    });

    let mut texts: Vec<Value> = Vec::new();
    let mut audio_samples = 0usize;
    let answer = "Echo agent (no AI provider is configured): you said: what time is it";
    // The whole answer's audio at 16 kHz, less a little for the resampler.
    let expected = answer.chars().count() * 60 * 16;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while audio_samples < expected * 9 / 10 {
        let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, rx.next()).await else {
            break;
        };
        match message {
            Message::Binary(b) => audio_samples += b.len() / 2,
            Message::Text(t) => texts.push(serde_json::from_str(t.as_str()).unwrap()),
            _ => {}
        }
    }
    assert_eq!(
        texts.first().map(|t| t["type"].clone()),
        Some(json!("started")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t["type"] == "transcript"
            && t["final"] == true
            && t["text"] == "what time is it"),
        "no final transcript: {texts:?}"
    );
    assert!(
        texts.iter().any(|t| t["type"] == "agent_text"
            && t["text"]
                .as_str()
                .is_some_and(|s| s.contains("what time is it"))),
        "no agent text: {texts:?}"
    );
    assert!(
        audio_samples >= expected * 9 / 10,
        "agent audio: {audio_samples} samples at 16 kHz, expected about {expected}; messages: {texts:?}"
    );
    sender.abort();
    drop(rx);
    let handle = call.await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.ended())
        .await
        .expect("the call ends once the socket is gone");
}
