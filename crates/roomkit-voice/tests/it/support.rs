//! Test doubles (a scripted speech-to-text, a tone text-to-speech, a
//! streaming agent), a loopback WebSocket that hands its server side to the
//! voice channel, and a client that speaks Twilio's Media Streams protocol.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use roomkit_audio::codec::{G711, G711Law};
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelId, ChannelType, EventType,
    RoomEvent,
};
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext, TextStream};
use roomkit_voice::backend::MediaSink;
use roomkit_voice::tts::TtsStream;
use roomkit_voice::{
    MediaMessage, MediaSocket, ProviderFailure, SttProvider, Transcript, TtsChunk, TtsProvider,
    VoiceError,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- doubles

/// Test double: a speech-to-text provider that answers each utterance long
/// enough to be speech with the next scripted text.
pub struct ScriptedStt {
    script: Mutex<VecDeque<String>>,
    /// Length (in samples at 16 kHz) of every utterance it was given.
    pub heard: Mutex<Vec<usize>>,
}

impl ScriptedStt {
    pub fn new(script: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.iter().map(|s| (*s).to_owned()).collect()),
            heard: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl SttProvider for ScriptedStt {
    fn name(&self) -> &str {
        "scripted-test-stt"
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        self.heard.lock().unwrap().push(samples.len());
        if samples.len() < sample_rate as usize * 3 / 10 {
            return Ok(Transcript::final_text(""));
        }
        let text = self.script.lock().unwrap().pop_front().unwrap_or_default();
        if text == "!fail" {
            return Err(ProviderFailure::retryable(
                "scripted-test-stt",
                "scripted failure",
            ));
        }
        Ok(Transcript::final_text(text))
    }
}

/// Test double: a text-to-speech provider that "speaks" a 440 Hz tone,
/// `ms_per_char` milliseconds per character, in 100 ms chunks.
pub struct ToneTts {
    pub rate: u32,
    pub ms_per_char: u32,
    /// Every text it was asked to speak.
    pub texts: Mutex<Vec<String>>,
    /// Fail the next stream after its first chunk.
    pub fail_next: std::sync::atomic::AtomicBool,
}

impl ToneTts {
    pub fn new(ms_per_char: u32) -> Arc<Self> {
        Arc::new(Self {
            rate: 16_000,
            ms_per_char,
            texts: Mutex::new(Vec::new()),
            fail_next: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl TtsProvider for ToneTts {
    fn name(&self) -> &str {
        "tone-test-tts"
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        _voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        self.texts.lock().unwrap().push(text.to_owned());
        let total = (text.chars().count() as u32 * self.ms_per_char * self.rate / 1000) as usize;
        let rate = self.rate;
        let chunk = rate as usize / 10;
        let samples: Vec<i16> = (0..total)
            .map(|i| {
                let t = i as f32 / rate as f32;
                ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
            })
            .collect();
        let mut chunks: Vec<Result<TtsChunk, ProviderFailure>> = samples
            .chunks(chunk)
            .map(|c| {
                Ok(TtsChunk {
                    samples: c.to_vec(),
                    sample_rate: rate,
                    marks: Vec::new(),
                })
            })
            .collect();
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            chunks.truncate(1);
            chunks.push(Err(ProviderFailure::retryable(
                "tone-test-tts",
                "scripted failure",
            )));
        }
        Ok(futures::stream::iter(chunks).boxed())
    }
}

/// Test double: an intelligence channel that answers every message with a
/// streamed reply: `first`, then after `pause` the `rest`.
pub struct StreamingAgent {
    id: ChannelId,
    pub first: String,
    pub rest: String,
    pub pause: Duration,
    /// When the last chunk was handed out.
    pub finished_at: Arc<Mutex<Option<Instant>>>,
}

impl StreamingAgent {
    pub fn new(id: &str, first: &str, rest: &str, pause: Duration) -> Self {
        Self {
            id: id.into(),
            first: first.into(),
            rest: rest.into(),
            pause,
            finished_at: Arc::new(Mutex::new(None)),
        }
    }
}

#[async_trait]
impl Channel for StreamingAgent {
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
            || event.source.channel_id == self.id
            || event.content.plain_text().trim().is_empty()
        {
            return Ok(ChannelOutput::empty());
        }
        let (first, rest, pause, done) = (
            self.first.clone(),
            self.rest.clone(),
            self.pause,
            self.finished_at.clone(),
        );
        let stream: TextStream = futures::stream::unfold(0u8, move |step| {
            let (first, rest, done) = (first.clone(), rest.clone(), done.clone());
            async move {
                match step {
                    0 => Some((first, 1)),
                    1 => {
                        tokio::time::sleep(pause).await;
                        *done.lock().unwrap() = Some(Instant::now());
                        Some((rest, 2))
                    }
                    _ => None,
                }
            }
        })
        .boxed();
        Ok(ChannelOutput::stream(stream))
    }
}

// ---------------------------------------------------------------- audio

/// `text` spoken by espeak-ng, as 8 kHz 16-bit mono PCM (through sox).
pub fn speech(text: &str) -> Vec<i16> {
    let dir = std::env::temp_dir().join(format!("roomkit-voice-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tag: String = text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    // Tests run in parallel: every call gets files of its own.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let raw = dir.join(format!("{tag}-{n}-22k.wav"));
    let narrow = dir.join(format!("{tag}-{n}-8k.wav"));
    let ok = std::process::Command::new("espeak-ng")
        .arg("-w")
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng is installed (.ci/run installs it)")
        .success();
    assert!(ok, "espeak-ng failed");
    let ok = std::process::Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-b", "16"])
        .arg(&narrow)
        .status()
        .expect("sox is installed (.ci/run installs it)")
        .success();
    assert!(ok, "sox failed");
    let mut reader = hound::WavReader::open(&narrow).unwrap();
    assert_eq!(reader.spec().sample_rate, 8000);
    reader.samples::<i16>().map(Result::unwrap).collect()
}

/// One DTMF key as two summed sines, 8 kHz.
pub fn dtmf_tone(digit: char, ms: u32) -> Vec<i16> {
    let (row, col) = match digit {
        '1' => (697.0, 1209.0),
        '2' => (697.0, 1336.0),
        '3' => (697.0, 1477.0),
        '4' => (770.0, 1209.0),
        '5' => (770.0, 1336.0),
        '6' => (770.0, 1477.0),
        '7' => (852.0, 1209.0),
        '8' => (852.0, 1336.0),
        '9' => (852.0, 1477.0),
        '*' => (941.0, 1209.0),
        '0' => (941.0, 1336.0),
        '#' => (941.0, 1477.0),
        _ => panic!("no such key"),
    };
    (0..(8 * ms) as usize)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let v =
                (t * row * std::f32::consts::TAU).sin() + (t * col * std::f32::consts::TAU).sin();
            (v * 8000.0) as i16
        })
        .collect()
}

pub fn silence(ms: u32) -> Vec<i16> {
    vec![0; (8 * ms) as usize]
}

pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / samples.len() as f64)
        .sqrt()
}

pub fn mulaw_b64(samples: &[i16]) -> String {
    let g = G711::new(G711Law::Mu);
    let bytes: Vec<u8> = samples.iter().map(|&s| g.encode_sample(s)).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_media(message: &Value) -> Vec<i16> {
    let payload = message["media"]["payload"].as_str().unwrap();
    roomkit_voice::twilio::decode_payload(payload).unwrap()
}

// ---------------------------------------------------------------- sockets

fn media_socket(ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> MediaSocket {
    let (sink, stream) = ws.split();
    let incoming = stream
        .filter_map(|m| async move {
            match m {
                Ok(Message::Text(t)) => Some(Ok(MediaMessage::Text(t.as_str().to_owned()))),
                Ok(Message::Binary(b)) => Some(Ok(MediaMessage::Binary(b.to_vec()))),
                Ok(Message::Close(_)) => Some(Ok(MediaMessage::Close)),
                Ok(_) => None,
                Err(e) => Some(Err(VoiceError::Transport(e.to_string()))),
            }
        })
        .boxed();
    let outgoing: MediaSink = Box::pin(
        sink.with(|m: MediaMessage| async move {
            Ok::<_, tokio_tungstenite::tungstenite::Error>(match m {
                MediaMessage::Text(t) => Message::Text(t.into()),
                MediaMessage::Binary(b) => Message::Binary(b.into()),
                MediaMessage::Close => Message::Close(None),
            })
        })
        .sink_map_err(|e| VoiceError::Transport(e.to_string())),
    );
    MediaSocket::new(incoming, outgoing)
}

/// A loopback WebSocket server: every accepted socket is handed over as a
/// [`MediaSocket`].
pub async fn media_server() -> (String, mpsc::Receiver<MediaSocket>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/voice/twilio/media", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                let _ = tx.send(media_socket(ws)).await;
            }
        }
    });
    (url, rx)
}

/// A message received by the client, with its arrival time.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub json: Value,
}

/// A client speaking Twilio's side of Media Streams.
pub struct TwilioClient {
    pub stream_sid: String,
    raw: mpsc::UnboundedSender<Message>,
    audio: mpsc::UnboundedSender<Vec<i16>>,
    pub received: mpsc::UnboundedReceiver<Received>,
}

impl TwilioClient {
    /// Connects, sends `connected` and `start`, and from then on streams
    /// audio like a phone: a 20 ms frame every 20 ms, silence when nothing
    /// is queued.
    pub async fn connect(url: &str, params: Value) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (mut sink, mut stream) = ws.split();
        let stream_sid = "MZ00000000000000000000000000000001".to_owned();
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<Message>();
        let (audio_tx, mut audio_rx) = mpsc::unbounded_channel::<Vec<i16>>();
        let (recv_tx, recv_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        let json: Value = serde_json::from_str(t.as_str()).unwrap();
                        let _ = recv_tx.send(Received {
                            at: Instant::now(),
                            json,
                        });
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        let sid = stream_sid.clone();
        sink.send(Message::Text(
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        sink.send(Message::Text(
            json!({
                "event": "start", "sequenceNumber": "1", "streamSid": sid,
                "start": {
                    "accountSid": "AC0000", "streamSid": sid, "callSid": "CA0000000000000000000000000000000a",
                    "tracks": ["inbound"], "customParameters": params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
                }
            })
            .to_string()
            .into(),
        ))
        .await
        .unwrap();
        tokio::spawn(async move {
            let mut queued: VecDeque<i16> = VecDeque::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let mut seq = 2u64;
            let mut ts = 0u64;
            loop {
                tokio::select! {
                    m = raw_rx.recv() => match m {
                        Some(m) => {
                            let close = matches!(m, Message::Close(_));
                            if sink.send(m).await.is_err() || close { break; }
                        }
                        None => break,
                    },
                    a = audio_rx.recv() => if let Some(a) = a { queued.extend(a) },
                    _ = tick.tick() => {
                        let frame: Vec<i16> = (0..160).map(|_| queued.pop_front().unwrap_or(0)).collect();
                        let msg = json!({
                            "event": "media", "sequenceNumber": seq.to_string(), "streamSid": sid,
                            "media": {"track": "inbound", "chunk": seq.to_string(), "timestamp": ts.to_string(), "payload": mulaw_b64(&frame)}
                        });
                        seq += 1;
                        ts += 20;
                        if sink.send(Message::Text(msg.to_string().into())).await.is_err() { break; }
                    }
                }
            }
        });
        Self {
            stream_sid,
            raw: raw_tx,
            audio: audio_tx,
            received: recv_rx,
        }
    }

    /// Queues caller audio (played in real time).
    pub fn say(&self, samples: Vec<i16>) {
        self.audio.send(samples).unwrap();
    }

    /// Sends any JSON message as is.
    pub fn send_json(&self, v: Value) {
        let _ = self.raw.send(Message::Text(v.to_string().into()));
    }

    /// Sends a raw text frame.
    pub fn send_text(&self, t: &str) {
        let _ = self.raw.send(Message::Text(t.to_owned().into()));
    }

    pub fn dtmf(&self, digit: &str) {
        self.send_json(json!({"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": "9", "dtmf": {"track": "inbound_track", "digit": digit}}));
    }

    pub fn stop(&self) {
        self.send_json(json!({"event": "stop", "streamSid": self.stream_sid, "sequenceNumber": "99", "stop": {"accountSid": "AC0000", "callSid": "CA0"}}));
    }

    /// The next message of `event` type within `within`.
    pub async fn next_of(&mut self, event: &str, within: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(r)) if r.json["event"] == event => return Some(r),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }

    /// Everything received within `within`.
    pub async fn collect(&mut self, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(Some(r)) = tokio::time::timeout_at(deadline, self.received.recv()).await {
            out.push(r);
        }
        out
    }
}
