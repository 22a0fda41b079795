//! A voice call through the server on loopback: the signed Twilio voice
//! webhook answers TwiML, the media socket route upgrades (only with the
//! provider's signature) and hands the socket to the voice channel, and a
//! spoken question comes back as the agent's spoken answer. Speech providers
//! are test doubles; the agent is the echo agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use roomkit_ai::{ECHO_PREFIX, EchoAgent};
use roomkit_audio::AudioPipelineConfig;
use roomkit_audio::pipeline::VadChoice;
use roomkit_channels::Secret;
use roomkit_channels::sms::twilio::signature;
use roomkit_core::model::ChannelId;
use roomkit_core::{AttachOptions, CreateRoom, RoomKit, TimelineQuery};
use roomkit_server::{ConnectionRegistry, Server, ServerOptions};
use roomkit_voice::tts::TtsStream;
use roomkit_voice::twilio::{
    TwilioMediaStreams, TwilioVoiceWebhook, decode_payload, encode_outbound, verify_upgrade,
};
use roomkit_voice::{
    Outbound, ProviderFailure, SttProvider, Transcript, TtsChunk, TtsProvider, VoiceChannel,
    VoiceMediaEndpoint, VoiceSettings,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TOKEN: &str = "voice-token";

/// Test double: every utterance of speech is "what time is it".
struct FixedStt;

#[async_trait]
impl SttProvider for FixedStt {
    fn name(&self) -> &str {
        "fixed-test-stt"
    }
    async fn transcribe(&self, samples: &[i16], rate: u32) -> Result<Transcript, ProviderFailure> {
        let long = samples.len() > rate as usize / 3;
        Ok(Transcript::final_text(if long {
            "what time is it"
        } else {
            ""
        }))
    }
}

/// Test double: a 300 Hz tone, 10 ms per character, at 8 kHz.
struct ToneTts;

#[async_trait]
impl TtsProvider for ToneTts {
    fn name(&self) -> &str {
        "tone-test-tts"
    }
    fn sample_rate(&self) -> u32 {
        8000
    }
    async fn synthesize_stream(
        &self,
        text: &str,
        _voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        let n = text.chars().count() * 80;
        let samples: Vec<i16> = (0..n)
            .map(|i| ((i as f32 * 300.0 / 8000.0 * std::f32::consts::TAU).sin() * 9000.0) as i16)
            .collect();
        Ok(futures::stream::iter([Ok(TtsChunk {
            samples,
            sample_rate: 8000,
            marks: Vec::new(),
        })])
        .boxed())
    }
}

fn speech(text: &str) -> Vec<i16> {
    let dir = std::env::temp_dir().join(format!("roomkit-server-voice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (raw, narrow) = (dir.join("q.wav"), dir.join("q8k.wav"));
    assert!(
        std::process::Command::new("espeak-ng")
            .arg("-w")
            .arg(&raw)
            .arg(text)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        std::process::Command::new("sox")
            .arg(&raw)
            .args(["-r", "8000", "-c", "1", "-b", "16"])
            .arg(&narrow)
            .status()
            .unwrap()
            .success()
    );
    hound::WavReader::open(&narrow)
        .unwrap()
        .samples::<i16>()
        .map(Result::unwrap)
        .collect()
}

async fn start() -> (RoomKit, SocketAddr) {
    let settings = VoiceSettings {
        pipeline: AudioPipelineConfig {
            vad: Some(VadChoice::Webrtc {
                mode: Default::default(),
            }),
            ..AudioPipelineConfig::default()
        },
        ..VoiceSettings::default()
    };
    let voice =
        VoiceChannel::new("voice", settings, Arc::new(FixedStt), Arc::new(ToneTts)).unwrap();
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
    let endpoint = VoiceMediaEndpoint::new(voice, Arc::new(TwilioMediaStreams::new()), |url, h| {
        verify_upgrade(TOKEN, url, h)
    });
    let router = Server::new(
        kit.clone(),
        ConnectionRegistry::new(),
        ServerOptions::default(),
    )
    .with_webhook_receiver(
        "voice",
        Arc::new(TwilioVoiceWebhook::new(Secret::new(TOKEN))),
    )
    .with_media_endpoint(Arc::new(endpoint))
    .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    (kit, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_webhook_answers_twiml_only_when_signed() {
    let (kit, addr) = start().await;
    let url = format!("http://{addr}/webhooks/voice/twilio?room_id=r1");
    let form = vec![
        ("CallSid".to_owned(), "CA1".to_owned()),
        ("From".to_owned(), "+15550001".to_owned()),
        ("To".to_owned(), "+15559999".to_owned()),
    ];
    let post = |sig: String| {
        let url = url.clone();
        let body = serde_urlencoded::to_string(&form).unwrap();
        async move {
            let r = roomkit_server::http_client()
                .unwrap()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("X-Twilio-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status().as_u16(), ct, r.text().await.unwrap())
        }
    };
    let (status, ct, body) = post(signature(TOKEN, &url, &form)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct.as_deref(), Some("text/xml"));
    assert!(
        body.contains(&format!("<Stream url=\"ws://{addr}/voice/twilio/media\">")),
        "{body}"
    );
    assert!(
        body.contains("<Parameter name=\"from\" value=\"+15550001\"/>"),
        "{body}"
    );
    assert!(
        body.contains("<Parameter name=\"room_id\" value=\"r1\"/>"),
        "{body}"
    );

    let (status, _, body) = post(signature("wrong", &url, &form)).await;
    assert_eq!(status, 403);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "invalid_signature");
    let events = kit
        .timeline(&"r1".into(), TimelineQuery::default())
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.source.channel_id.as_str() != "voice")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_media_route_is_answered_with_speech() {
    let (kit, addr) = start().await;
    let ws_url = format!("ws://{addr}/voice/twilio/media");

    // Unsigned upgrades are refused.
    let err = tokio_tungstenite::connect_async(&ws_url).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");

    let mut request = ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "X-Twilio-Signature",
        signature(TOKEN, &ws_url, &[]).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    let sid = "MZ1";
    tx.send(Message::Text(
        json!({"event": "connected", "protocol": "Call"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    tx.send(Message::Text(
        json!({"event": "start", "streamSid": sid, "start": {
            "streamSid": sid, "callSid": "CA1", "tracks": ["inbound"],
            "customParameters": {"room_id": "r1", "from": "+15550001"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }})
        .to_string()
        .into(),
    ))
    .await
    .unwrap();
    let mut audio = vec![0i16; 2400];
    audio.extend(speech("what time is it"));
    audio.extend(vec![0i16; 8000 * 6]);
    let player = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for frame in audio.chunks(160) {
            tick.tick().await;
            let json = encode_outbound(sid, &Outbound::Audio(frame.to_vec())).unwrap();
            if tx.send(Message::Text(json.into())).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, rx.next()).await
        else {
            break;
        };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["event"] == "media" {
            answer.extend(decode_payload(v["media"]["payload"].as_str().unwrap()).unwrap());
        }
        if v["event"] == "mark" {
            break;
        }
    }
    // The echo agent's answer at 10 ms per character.
    let expected = format!("{ECHO_PREFIX}what time is it").chars().count() * 80;
    assert!(
        answer.len().abs_diff(expected) <= 160,
        "the whole answer arrived ({} of {expected} samples)",
        answer.len()
    );
    let rms =
        (answer.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / answer.len() as f64).sqrt();
    assert!(rms > 3000.0, "the answer is the agent's speech, rms {rms}");
    let events = kit
        .timeline(&"r1".into(), TimelineQuery::default())
        .await
        .unwrap();
    let asked = events
        .iter()
        .find(|e| {
            e.source.channel_id.as_str() == "voice" && e.content.plain_text() == "what time is it"
        })
        .expect("the caller's question is in the room");
    assert_eq!(asked.source.external_id.as_deref(), Some("+15550001"));
    assert!(
        events
            .iter()
            .any(|e| e.source.channel_id.as_str() == "echo")
    );
    player.abort();
}
