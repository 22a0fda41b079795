//! The server side of `voice_calls`, run as its own process
//! (`roomkit-bench voice_server`, started by the `voice_calls` workload):
//! the production server (`roomkit_server::Server`, with its connection
//! layer, the Twilio voice webhook and the `/voice/twilio/media` socket)
//! over an engine with one voice channel (`phone`, Twilio Media Streams,
//! the full inbound audio chain and the heuristic turn detector) and one AI
//! channel (`bot`), whose speech and model vendors are the instant
//! **benchmark fakes** below. It prints `roomkit listening on http://ADDR`
//! like `roomkit serve`; when its stdin closes it prints one JSON line with
//! the turn metrics the calls emitted and the time spent in the fakes, then
//! shuts down.
//!
//! Being a separate process, its CPU time and resident memory are the
//! server's alone, without the callers' load generator.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use roomkit_ai::{
    AIContext, AIMessage, AIProvider, AIResponse, AiChannel, AiError, ResponseStream, StreamEvent,
    StreamMode, Usage,
};
use roomkit_audio::AudioPipelineConfig;
use roomkit_audio::turn::HeuristicTurnConfig;
use roomkit_core::RoomKit;
use roomkit_core::model::FrameworkEvent;
use roomkit_server::conn::ConnectionLimits;
use roomkit_server::{ConnectionRegistry, Server, ServerOptions};
use roomkit_voice::twilio::{TwilioMediaStreams, TwilioVoiceWebhook, verify_upgrade};
use roomkit_voice::{
    ProviderFailure, SttProvider, Transcript, TtsChunk, TtsProvider, TtsStream, VoiceChannel,
    VoiceMediaEndpoint, VoiceSettings,
};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::common::{Options, mono_ns};

/// What the benchmark's fake speech-to-text hears in every utterance.
pub const TRANSCRIPT: &str = "What is the weather like today?";

/// Sample rate of the fake text-to-speech (the pipeline's internal rate,
/// as most vendors can be asked for).
const TTS_RATE: u32 = 16_000;

/// The audio chain of the `audio_chain` workload, at the Twilio rate in.
pub fn pipeline() -> anyhow::Result<AudioPipelineConfig> {
    Ok(serde_json::from_value(json!({
        "resampler": {"internal_sample_rate": 16000},
        "aec": {},
        "agc": {},
        "denoiser": {"provider": "rnnoise"},
        "vad": {"provider": "webrtc"},
        "dtmf": {},
    }))?)
}

/// Time spent inside the fakes, per room, in the order of the turns.
#[derive(Default)]
struct FakeTimes {
    rooms: Mutex<HashMap<String, RoomFakes>>,
}

#[derive(Default)]
struct RoomFakes {
    stt_ns: Vec<u64>,
    /// (monotonic time the model was asked, ns spent answering).
    ai: Vec<(u64, u64)>,
    tts_ns: Vec<u64>,
}

impl FakeTimes {
    fn with(&self, room: &str, f: impl FnOnce(&mut RoomFakes)) {
        f(self.rooms.lock().entry(room.to_owned()).or_default());
    }
}

/// Benchmark fake: a speech-to-text vendor that transcribes every
/// utterance, at once, as [`TRANSCRIPT`]. It goes through the trait's
/// default buffered session, like the vendors that transcribe whole
/// utterances.
struct InstantStt {
    times: Arc<FakeTimes>,
}

#[async_trait]
impl SttProvider for InstantStt {
    fn name(&self) -> &str {
        "bench-instant-stt"
    }

    async fn transcribe(
        &self,
        samples: &[i16],
        _sample_rate: u32,
    ) -> Result<Transcript, ProviderFailure> {
        let t0 = Instant::now();
        let t = Transcript::final_text(TRANSCRIPT);
        let _ = samples.len();
        self.times
            .with("", |r| r.stt_ns.push(t0.elapsed().as_nanos() as u64));
        Ok(t)
    }
}

/// Benchmark fake: a text-to-speech vendor that answers every sentence at
/// once with the same tone (`reply_ms` of 300 Hz, made once), in 100 ms
/// chunks, all ready.
struct InstantTts {
    times: Arc<FakeTimes>,
    chunks: Vec<Vec<i16>>,
}

impl InstantTts {
    fn new(times: Arc<FakeTimes>, reply_ms: u32) -> Self {
        let total = TTS_RATE as usize * reply_ms as usize / 1000;
        let tone: Vec<i16> = (0..total)
            .map(|i| {
                let t = i as f32 / TTS_RATE as f32;
                ((t * 300.0 * std::f32::consts::TAU).sin() * 6000.0) as i16
            })
            .collect();
        let chunks = tone
            .chunks(TTS_RATE as usize / 10)
            .map(<[i16]>::to_vec)
            .collect();
        Self { times, chunks }
    }
}

#[async_trait]
impl TtsProvider for InstantTts {
    fn name(&self) -> &str {
        "bench-instant-tts"
    }

    fn sample_rate(&self) -> u32 {
        TTS_RATE
    }

    async fn synthesize_stream(
        &self,
        text: &str,
        _voice: Option<&str>,
    ) -> Result<TtsStream, ProviderFailure> {
        let t0 = Instant::now();
        let chunks: Vec<Result<TtsChunk, ProviderFailure>> = self
            .chunks
            .iter()
            .map(|c| {
                Ok(TtsChunk {
                    samples: c.clone(),
                    sample_rate: TTS_RATE,
                    marks: Vec::new(),
                })
            })
            .collect();
        let room = room_of_reply(text);
        self.times
            .with(room, |r| r.tts_ns.push(t0.elapsed().as_nanos() as u64));
        Ok(futures::stream::iter(chunks).boxed())
    }
}

/// The room a reply of [`InstantAi`] names (its last word).
fn room_of_reply(text: &str) -> &str {
    text.trim()
        .rsplit(' ')
        .next()
        .unwrap_or("")
        .trim_end_matches('.')
}

/// Benchmark fake: a streaming model that answers every caller message at
/// once, naming the room (so the fakes' time can be told apart per call),
/// word by word as a streaming vendor does.
struct InstantAi {
    times: Arc<FakeTimes>,
}

impl InstantAi {
    fn reply(context: &AIContext) -> (String, String) {
        let room = context
            .room
            .as_ref()
            .map(|r| r.room.id.as_str().to_owned())
            .unwrap_or_default();
        (format!("It will be sunny all day in room {room}."), room)
    }
}

#[async_trait]
impl AIProvider for InstantAi {
    fn name(&self) -> &str {
        "bench-instant-ai"
    }

    fn model_name(&self) -> &str {
        "instant"
    }

    fn supports_streaming(&self) -> bool {
        true
    }

    async fn generate(
        &self,
        _messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<AIResponse, AiError> {
        let (t_mono, t0) = (mono_ns(), Instant::now());
        let (text, room) = Self::reply(context);
        let mut response = AIResponse::text(text);
        response.usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
            cached_tokens: 0,
        };
        self.times.with(&room, |r| {
            r.ai.push((t_mono, t0.elapsed().as_nanos() as u64));
        });
        Ok(response)
    }

    async fn generate_stream(
        &self,
        _messages: &[AIMessage],
        context: &AIContext,
    ) -> Result<ResponseStream, AiError> {
        let (t_mono, t0) = (mono_ns(), Instant::now());
        let (text, room) = Self::reply(context);
        let mut items: Vec<Result<StreamEvent, AiError>> = text
            .split_inclusive(' ')
            .map(|w| Ok(StreamEvent::TextDelta(w.to_owned())))
            .collect();
        let mut response = AIResponse::text(text);
        response.usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
            cached_tokens: 0,
        };
        items.push(Ok(StreamEvent::Done(response)));
        self.times.with(&room, |r| {
            r.ai.push((t_mono, t0.elapsed().as_nanos() as u64));
        });
        Ok(futures::stream::iter(items).boxed())
    }
}

/// Runs the server process until its stdin closes.
///
/// # Errors
/// When the engine or the server cannot be built.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(opts))
}

async fn serve(opts: &Options) -> anyhow::Result<()> {
    let token = opts
        .get("token")
        .ok_or_else(|| anyhow::anyhow!("voice_server needs --token"))?
        .to_owned();
    let calls: usize = opts.num("calls", 100)?;
    let reply_ms: u32 = opts.num("reply-ms", 1000)?;
    crate::server::raise_fd_limit();

    let times = Arc::new(FakeTimes::default());
    // `--without aec,agc`: the chain without those stages (diagnosis).
    let mut chain = serde_json::to_value(pipeline()?)?;
    if let (Some(without), Some(map)) = (opts.get("without"), chain.as_object_mut()) {
        for stage in without.split(',') {
            map.remove(stage.trim());
        }
    }
    let settings = VoiceSettings {
        pipeline: serde_json::from_value(chain)?,
        turn: Some(HeuristicTurnConfig::default()),
        ..VoiceSettings::default()
    };
    let voice = VoiceChannel::new(
        "phone",
        settings,
        Arc::new(InstantStt {
            times: times.clone(),
        }),
        Arc::new(InstantTts::new(times.clone(), reply_ms)),
    )?;
    let ai = Arc::new(
        AiChannel::builder("bot")
            .provider(Arc::new(InstantAi {
                times: times.clone(),
            }))
            .stream(StreamMode::Auto)
            .build(),
    );
    let kit = RoomKit::builder()
        .channel(Arc::new(voice.clone()))
        .channel(ai.clone())
        .build()?;
    ai.attach_kit(&kit);
    voice.attach_kit(&kit);

    // The turn metrics every call emits.
    let metrics = Arc::new(Mutex::new(Vec::new()));
    let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut events = kit.subscribe();
    {
        let metrics = metrics.clone();
        let lagged = lagged.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let FrameworkEvent::VoiceTurnMetrics {
                            room_id,
                            speech_end_ms,
                            eou_delay_ms,
                            stt_latency_ms,
                            llm_ttft_ms,
                            tts_ttfb_ms,
                            voice_to_voice_ms,
                            ..
                        } = &*e
                        {
                            metrics.lock().push(json!({
                                "room": room_id.as_str(),
                                "speech_end_ms": speech_end_ms,
                                "eou_delay_ms": eou_delay_ms,
                                "stt_latency_ms": stt_latency_ms,
                                "llm_ttft_ms": llm_ttft_ms,
                                "tts_ttfb_ms": tts_ttfb_ms,
                                "voice_to_voice_ms": voice_to_voice_ms,
                            }));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        });
    }

    let options = ServerOptions {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        limits: ConnectionLimits {
            max_connections_per_ip: calls + 64,
            ws_connections_per_key: calls + 64,
            ..ConnectionLimits::default()
        },
        ..ServerOptions::default()
    };
    let check_token = token.clone();
    let server = Server::new(kit.clone(), ConnectionRegistry::new(), options)
        .with_webhook_receiver(
            "phone",
            Arc::new(TwilioVoiceWebhook::new(roomkit_channels::Secret::new(
                token.as_str(),
            ))),
        )
        .with_media_endpoint(Arc::new(VoiceMediaEndpoint::new(
            voice.clone(),
            Arc::new(TwilioMediaStreams::new()),
            move |url, headers| verify_upgrade(&check_token, url, headers),
        )));

    // `--sip ADDR`: calls also come in over SIP (the `sip_calls`
    // workload); each gets a room of its own with the phone and the agent.
    let sip = match opts.get("sip") {
        Some(addr) => Some(start_sip(addr, calls, &kit, &voice).await?),
        None => None,
    };

    // Stdin closing asks for the report, then the shutdown.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        // Let the last events reach the subscriber.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let fakes: serde_json::Map<String, serde_json::Value> = times
            .rooms
            .lock()
            .iter()
            .map(|(room, f)| {
                (
                    room.clone(),
                    json!({"stt_ns": f.stt_ns, "ai": f.ai, "tts_ns": f.tts_ns}),
                )
            })
            .collect();
        let rtp = sip.as_ref().map(|endpoint| {
            use roomkit_sip::RtpStats;
            let r = endpoint.rtp_stats();
            let s = endpoint.stats();
            let get =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            json!({
                "packets_in": RtpStats::get(&r.packets_in),
                "packets_out": RtpStats::get(&r.packets_out),
                "late_packets": RtpStats::get(&r.late_packets),
                "lost_packets": RtpStats::get(&r.lost_packets),
                "concealed_frames": RtpStats::get(&r.concealed_frames),
                "bad_packets": RtpStats::get(&r.bad_packets),
                "foreign_packets": RtpStats::get(&r.foreign_packets),
                "calls_established": get(&s.calls_established),
                "calls_refused": get(&s.calls_refused),
            })
        });
        let report = json!({
            "report": "voice_server",
            "rtp": rtp,
            "turn_metrics": std::mem::take(&mut *metrics.lock()),
            "framework_events_lagged": lagged.load(std::sync::atomic::Ordering::Relaxed),
            "fakes": fakes,
        });
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{report}");
            let _ = out.flush();
        }
        let _ = stop_tx.send(());
    });
    server
        .run(async move {
            let _ = stop_rx.await;
        })
        .await?;
    Ok(())
}

/// Binds the SIP user agent for `sip_calls` and hands its calls to the
/// voice channel, each in a new room with the phone and the agent. Prints
/// `roomkit sip on ADDR` before the HTTP line.
async fn start_sip(
    addr: &str,
    calls: usize,
    kit: &RoomKit,
    voice: &VoiceChannel,
) -> anyhow::Result<roomkit_sip::SipEndpoint> {
    let config = roomkit_sip::SipConfig {
        listen: addr.parse()?,
        max_calls: calls + 16,
        ..roomkit_sip::SipConfig::default()
    };
    let (endpoint, mut incoming) = roomkit_sip::SipEndpoint::bind(config).await?;
    println!("roomkit sip on {}", endpoint.local_addr());
    let (kit, voice) = (kit.clone(), voice.clone());
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(mut call) = incoming.recv().await {
            n += 1;
            let room = roomkit_core::model::RoomId::from(format!("sip-{n}").as_str());
            let created = kit
                .create_room(roomkit_core::CreateRoom {
                    id: Some(room.clone()),
                    ..roomkit_core::CreateRoom::default()
                })
                .await;
            if created.is_err() {
                continue;
            }
            for ch in ["phone", "bot"] {
                let _ = kit
                    .attach_channel(
                        &room,
                        &roomkit_core::model::ChannelId::from(ch),
                        roomkit_core::AttachOptions::default(),
                    )
                    .await;
            }
            call.info
                .parameters
                .insert("room_id".into(), room.to_string());
            let _ = voice.start_call(call);
        }
    });
    Ok(endpoint)
}

/// `voice_memory`: where a call's memory goes. Builds `--calls N` audio
/// pipelines of the voice workload (8 kHz in, 16 kHz inside) and runs
/// `--frames F` frames in and out through each, first all on this thread,
/// then each on a thread of its own with a current-thread runtime, as calls
/// run; prints the resident memory added per pipeline in each case.
///
/// # Errors
/// When a pipeline cannot be built.
pub fn memory(opts: &Options) -> anyhow::Result<()> {
    use roomkit_audio::pipeline::TransportCapabilities;
    use roomkit_audio::{AudioFormat, AudioFrame, AudioPipeline, AudioPipelineContract};
    let n: usize = opts.num("calls", 20)?;
    let frames: usize = opts.num("frames", 200)?;
    let cfg = pipeline()?;
    let contract = AudioPipelineContract {
        internal_format: AudioFormat::pcm_mono(16_000),
        transport_inbound_format: AudioFormat::pcm_mono(8_000),
        transport_outbound_format: AudioFormat::pcm_mono(8_000),
    };
    let run_one = move |cfg: &AudioPipelineConfig| -> anyhow::Result<AudioPipeline> {
        let mut p = AudioPipeline::from_config(cfg, contract, TransportCapabilities::default())?;
        let mut events = Vec::new();
        for k in 0..frames {
            let samples: Vec<i16> = (0..160)
                .map(|i| (((k * 160 + i) as f32 * 0.2).sin() * 3000.0) as i16)
                .collect();
            let mut f = AudioFrame::new(samples, 8_000, 1)?;
            p.process_inbound("call", &mut f, &mut events)?;
            events.clear();
            let mut o = AudioFrame::new(vec![1000; 320], 16_000, 1)?;
            p.process_outbound("call", &mut o)?;
        }
        Ok(p)
    };
    let base = crate::common::rss_bytes();
    let kept: Vec<AudioPipeline> = (0..n).map(|_| run_one(&cfg)).collect::<Result<_, _>>()?;
    let one_thread = crate::common::rss_bytes().saturating_sub(base) / n as u64;
    drop(kept);
    let base2 = crate::common::rss_bytes();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    let mut threads = Vec::new();
    for _ in 0..n {
        let cfg = cfg.clone();
        let done = done_tx.clone();
        let mut hold = hold_rx.clone();
        threads.push(std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let p = run_one(&cfg);
                let _ = done.send(p.is_ok());
                let _ = hold.changed().await;
                drop(p);
            });
        }));
    }
    for _ in 0..n {
        let _ = done_rx.recv();
    }
    let per_thread = crate::common::rss_bytes().saturating_sub(base2) / n as u64;
    let _ = hold_tx.send(true);
    for t in threads {
        let _ = t.join();
    }
    crate::common::emit(&json!({
        "workload": "voice_memory",
        "pipelines": n,
        "frames": frames,
        "rss_bytes_per_pipeline_one_thread": one_thread,
        "rss_bytes_per_pipeline_own_thread": per_thread,
    }));
    Ok(())
}
