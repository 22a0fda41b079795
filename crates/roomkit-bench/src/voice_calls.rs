//! `voice_calls`: N concurrent phone calls over the Twilio Media Streams
//! protocol, on loopback, in real time.
//!
//! This process is the callers; the server is a second process
//! (`roomkit-bench voice_server`, see `voice_server.rs`): the production
//! server with one voice channel running the full inbound audio chain
//! (resampling 8 to 16 kHz, AEC3, AGC, RNNoise, WebRTC VAD, DTMF) and the
//! heuristic turn detector, an AI channel, and instant fake speech and
//! model vendors. Its CPU time and memory are read from `/proc`, so the
//! load generator's own cost is not counted.
//!
//! Each caller answers the voice webhook, opens the signed media socket,
//! sends `connected` and `start`, then one 20 ms mu-law `media` message per
//! tick of one shared 20 ms clock: an utterance (espeak-ng speech when
//! `espeak-ng` is on the PATH, else a synthetic voiced signal), then
//! silence until the agent's reply has played (its `mark`), a pause, and
//! the next utterance, for the whole run. Callers start staggered over one
//! turn's length.
//!
//! Figures, over a measured window after a warm-up (see the JSON's `notes`):
//! CPU and RSS of the server per call, late agent frames, and the latency
//! the framework adds between the turn detector's decision and the first
//! agent frame sent.
//!
//! Options: `--calls 100 --seconds 30 --warmup 5 --late-ms 40
//! --pause-ms 1000 --reply-ms 1000 --signal auto|espeak|synthetic`;
//! `--report-file PATH` keeps the server's raw report (turn metrics, fake
//! times); `--without aec,agc` leaves those stages out of the chain.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use roomkit_audio::codec::{G711, G711Law};
use roomkit_audio::resample::RubatoResampler;
use roomkit_audio::{AudioFormat, AudioFrame};
use roomkit_channels::sms::twilio::signature;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{
    CLOCK_TICKS_PER_SECOND, Options, cpu_seconds_of, emit, load_average, mono_ns, percentile,
    steal_ticks,
};
use crate::server::{raise_fd_limit, rss_of};

/// The auth token the server checks the callers' signatures with.
const TOKEN: &str = "bench-twilio-auth-token";
const FRAME_NS: u64 = 20_000_000;
/// Twilio's rate.
const RATE: u32 = 8_000;
const FRAME_SAMPLES: usize = 160;
/// What the espeak-ng caller says.
const UTTERANCE: &str = "What is the weather like today";

/// Runs the workload if it is this module's (`voice_server` is the server
/// half it starts).
///
/// # Errors
/// When the server cannot be started or the calls fail.
pub fn run(workload: &str, opts: &Options) -> anyhow::Result<bool> {
    match workload {
        "voice_calls" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(calls(opts))?;
        }
        "voice_server" => crate::voice_server::run(opts)?,
        "voice_memory" => crate::voice_server::memory(opts)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The caller's utterance as base64 mu-law 20 ms frames.
struct Speech {
    frames: Vec<String>,
    /// Line noise between utterances, 50 frames to cycle through.
    silence: Vec<String>,
    source: &'static str,
}

fn encode(samples: &[i16]) -> String {
    let g711 = G711::new(G711Law::Mu);
    let bytes: Vec<u8> = samples.iter().map(|&s| g711.encode_sample(s)).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// espeak-ng's speech of [`UTTERANCE`] at 8 kHz, or `None` without it.
fn espeak_speech() -> anyhow::Result<Option<Vec<i16>>> {
    let path = std::env::temp_dir().join(format!("roomkit-bench-voice-{}.wav", std::process::id()));
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&path)
        .arg(UTTERANCE)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => return Ok(None),
    }
    let mut reader = hound::WavReader::open(&path)?;
    let spec = reader.spec();
    let samples: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
    let _ = std::fs::remove_file(&path);
    if spec.channels != 1 || spec.sample_rate % 50 != 0 {
        bail!(
            "espeak-ng wrote {} channels at {} Hz",
            spec.channels,
            spec.sample_rate
        );
    }
    let step = spec.sample_rate as usize / 50;
    let mut r = RubatoResampler::new(AudioFormat::pcm_mono(RATE));
    let mut out = Vec::with_capacity(samples.len() * RATE as usize / spec.sample_rate as usize);
    // Padded with 100 ms of silence to push the resampler's delay out.
    let mut padded = samples;
    padded.resize(padded.len().div_ceil(step) * step + 5 * step, 0);
    for chunk in padded.chunks(step) {
        let mut frame = AudioFrame {
            samples: chunk.to_vec(),
            sample_rate: spec.sample_rate,
            channels: 1,
            timestamp_ms: None,
            metadata: Default::default(),
        };
        r.process(&mut frame, "speech")?;
        out.extend_from_slice(&frame.samples);
    }
    Ok(Some(out))
}

/// A voiced synthetic signal: 1.2 s of three harmonics of 220 Hz under a
/// 4 Hz envelope (the shape of the audio workloads' speech), at 8 kHz.
fn synthetic_speech() -> Vec<i16> {
    let tau = std::f64::consts::TAU;
    (0..RATE as usize * 12 / 10)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let x = 6000.0 * (tau * 220.0 * t).sin()
                + 3000.0 * (tau * 660.0 * t).sin()
                + 1500.0 * (tau * 1800.0 * t).sin();
            let env = 0.55 + 0.45 * (tau * 4.0 * t).sin();
            (x * env) as i16
        })
        .collect()
}

/// A second of white line noise of amplitude `amplitude`, as 50 frames.
fn line_noise(amplitude: i64) -> Vec<String> {
    let mut state: u64 = 1;
    let samples: Vec<i16> = (0..RATE as usize)
        .map(|_| {
            state = (state * 1_103_515_245 + 12_345) % (1u64 << 31);
            if amplitude == 0 {
                0
            } else {
                ((state >> 16) as i64 % (2 * amplitude + 1) - amplitude) as i16
            }
        })
        .collect();
    samples.chunks(FRAME_SAMPLES).map(encode).collect()
}

/// The caller's utterance at 8 kHz (`--signal auto|espeak|synthetic`),
/// and what made it.
pub(crate) fn utterance(opts: &Options) -> anyhow::Result<(Vec<i16>, &'static str)> {
    let wanted = opts.get("signal").unwrap_or("auto");
    Ok(match wanted {
        "synthetic" => (synthetic_speech(), "synthetic voiced signal"),
        "espeak" | "auto" => match espeak_speech()? {
            Some(s) => (s, "espeak-ng"),
            None if wanted == "auto" => (synthetic_speech(), "synthetic voiced signal"),
            None => bail!("--signal espeak: espeak-ng is not on the PATH"),
        },
        other => bail!("--signal: {other:?} is not auto, espeak or synthetic"),
    })
}

fn speech(opts: &Options) -> anyhow::Result<Speech> {
    let noise: i64 = opts.num("noise", 0)?;
    let (samples, source) = utterance(opts)?;
    let mut frames: Vec<String> = samples.chunks(FRAME_SAMPLES).map(encode).collect();
    if let Some(last) = samples.chunks(FRAME_SAMPLES).last()
        && last.len() < FRAME_SAMPLES
    {
        let mut padded = last.to_vec();
        padded.resize(FRAME_SAMPLES, 0);
        frames.pop();
        frames.push(encode(&padded));
    }
    Ok(Speech {
        frames,
        silence: line_noise(noise),
        source,
    })
}

/// One caller turn.
#[derive(Debug, Clone, Copy)]
struct Turn {
    /// When the caller's last speech frame was sent (its slot).
    speech_end_ns: u64,
    /// When the agent's first frame after it arrived.
    first_frame_ns: Option<u64>,
}

/// What one caller saw.
#[derive(Debug, Default)]
struct CallLog {
    turns: Vec<Turn>,
    unanswered: u64,
    agent_frames: u64,
    late: u64,
    late_20ms: u64,
    max_late_ns: u64,
    in_reply: bool,
    reply_first_ns: u64,
    reply_index: u64,
    late_sends: u64,
    max_send_late_ns: u64,
    socket_ended_early: bool,
    error: Option<String>,
}

/// The measured window, in monotonic ns (0 = not yet / still open).
#[derive(Default)]
struct Window {
    start: AtomicU64,
    end: AtomicU64,
    stopping: AtomicBool,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        let (s, e) = (
            self.start.load(Ordering::Relaxed),
            self.end.load(Ordering::Relaxed),
        );
        s != 0 && t >= s && (e == 0 || t <= e)
    }
}

struct Caller {
    log: Mutex<CallLog>,
    reply_done: AtomicBool,
}

impl Caller {
    /// An agent media frame arrived at `now`. Frame k of a reply is due at
    /// the arrival of the reply's first frame plus k × 20 ms.
    fn on_agent_frame(&self, now: u64, window: &Window, late_ns: u64) {
        let mut log = self.log.lock();
        if !log.in_reply {
            log.in_reply = true;
            log.reply_first_ns = now;
            log.reply_index = 0;
            if let Some(turn) = log.turns.last_mut()
                && turn.first_frame_ns.is_none()
                && now >= turn.speech_end_ns
            {
                turn.first_frame_ns = Some(now);
            }
        } else {
            log.reply_index += 1;
        }
        if !window.contains(now) {
            return;
        }
        log.agent_frames += 1;
        let slot = log.reply_first_ns + log.reply_index * FRAME_NS;
        let late = now.saturating_sub(slot);
        log.max_late_ns = log.max_late_ns.max(late);
        if late > late_ns {
            log.late += 1;
        }
        if late > FRAME_NS {
            log.late_20ms += 1;
        }
    }

    fn on_reply_end(&self) {
        self.log.lock().in_reply = false;
        self.reply_done.store(true, Ordering::Release);
    }
}

/// Where a caller is in its script.
enum Phase {
    Silent { until: u64 },
    Speaking { pos: usize },
    Awaiting { since: u64 },
}

struct Script {
    speech: Arc<Speech>,
    start_tick: u64,
    pause_frames: u64,
    timeout_frames: u64,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Answers the voice webhook for room `room`, then opens the signed media
/// socket and starts the stream.
async fn dial(
    http: &reqwest::Client,
    addr: &str,
    room: &str,
    i: usize,
) -> anyhow::Result<(WsStream, String)> {
    let webhook = format!("http://{addr}/webhooks/voice/twilio?room_id={room}");
    let call_sid = format!("CA{i:06}");
    let from = format!("+1555{i:07}");
    let form = vec![
        ("CallSid".to_owned(), call_sid.clone()),
        ("From".to_owned(), from.clone()),
        ("To".to_owned(), "+15559999".to_owned()),
    ];
    let resp = http
        .post(&webhook)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature(TOKEN, &webhook, &form))
        .body(form_body(&form))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().is_success(),
        "voice webhook: {}",
        resp.status()
    );
    let twiml = resp.text().await?;
    anyhow::ensure!(
        twiml.contains("<Connect>"),
        "voice webhook answered {twiml}"
    );
    let media_url = format!("ws://{addr}/voice/twilio/media");
    let mut request = media_url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "X-Twilio-Signature",
        signature(TOKEN, &media_url, &[]).parse()?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("media socket of call {i}"))?;
    let stream_sid = format!("MZ{i:06}");
    for msg in [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": {
            "streamSid": stream_sid, "accountSid": "AC0001", "callSid": call_sid, "tracks": ["inbound"],
            "customParameters": {"room_id": room, "from": from, "to": "+15559999"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        }}),
    ] {
        ws.send(Message::Text(msg.to_string().into())).await?;
    }
    Ok((ws, stream_sid))
}

/// A urlencoded form body (the webhook's fields are plain ASCII).
fn form_body(form: &[(String, String)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&")
}

/// The caller's sending half: one frame per tick of the shared clock.
#[allow(clippy::too_many_arguments)]
async fn speak(
    mut sink: futures::stream::SplitSink<WsStream, Message>,
    mut ticks: tokio::sync::watch::Receiver<u64>,
    t0: u64,
    stream_sid: String,
    script: Script,
    caller: Arc<Caller>,
    window: Arc<Window>,
) {
    let mut phase = Phase::Silent {
        until: script.start_tick,
    };
    let mut sent = 0u64;
    let mut seq = 2u64;
    'run: loop {
        if ticks.changed().await.is_err() {
            break;
        }
        let k = *ticks.borrow_and_update();
        while sent < k {
            sent += 1;
            let j = sent;
            if let Phase::Silent { until } = phase
                && j >= until
            {
                phase = Phase::Speaking { pos: 0 };
                caller.reply_done.store(false, Ordering::Release);
            }
            let payload = match &mut phase {
                Phase::Speaking { pos } => {
                    let p = &script.speech.frames[*pos];
                    *pos += 1;
                    if *pos == script.speech.frames.len() {
                        caller.log.lock().turns.push(Turn {
                            speech_end_ns: t0 + j * FRAME_NS,
                            first_frame_ns: None,
                        });
                        phase = Phase::Awaiting { since: j };
                    }
                    p
                }
                Phase::Awaiting { since } => {
                    let since = *since;
                    if caller.reply_done.swap(false, Ordering::AcqRel) {
                        phase = Phase::Silent {
                            until: j + script.pause_frames,
                        };
                    } else if j - since > script.timeout_frames {
                        caller.log.lock().unanswered += 1;
                        phase = Phase::Silent {
                            until: j + script.pause_frames,
                        };
                    }
                    &script.speech.silence[j as usize % script.speech.silence.len()]
                }
                Phase::Silent { .. } => {
                    &script.speech.silence[j as usize % script.speech.silence.len()]
                }
            };
            let msg = format!(
                r#"{{"event":"media","sequenceNumber":"{seq}","streamSid":"{stream_sid}","media":{{"track":"inbound","chunk":"{j}","timestamp":"{}","payload":"{payload}"}}}}"#,
                j * 20
            );
            seq += 1;
            let now = mono_ns();
            let late = now.saturating_sub(t0 + j * FRAME_NS);
            if window.contains(now) {
                let mut log = caller.log.lock();
                log.max_send_late_ns = log.max_send_late_ns.max(late);
                if late > FRAME_NS / 2 {
                    log.late_sends += 1;
                }
            }
            if let Err(e) = sink.send(Message::Text(msg.into())).await {
                caller.log.lock().error = Some(format!("send: {e}"));
                break 'run;
            }
        }
    }
    let stop = json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
        "stop": {"accountSid": "AC0001", "callSid": "CA"}});
    let _ = sink.send(Message::Text(stop.to_string().into())).await;
    let _ = sink.close().await;
}

/// The caller's receiving half.
async fn listen(
    mut stream: futures::stream::SplitStream<WsStream>,
    caller: Arc<Caller>,
    window: Arc<Window>,
    late_ns: u64,
) {
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let now = mono_ns();
        let s = text.as_str();
        if s.contains(r#""event":"media""#) {
            caller.on_agent_frame(now, &window, late_ns);
        } else if s.contains(r#""event":"mark""#) || s.contains(r#""event":"clear""#) {
            caller.on_reply_end();
        }
    }
    if !window.stopping.load(Ordering::Relaxed) {
        caller.log.lock().socket_ended_early = true;
    }
}

fn ms(ns: f64) -> f64 {
    (ns / 1e4).round() / 100.0
}

fn summary_ms(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({
        "samples": v.len(),
        "p50_ms": ms(percentile(&v, 50.0)),
        "p99_ms": ms(percentile(&v, 99.0)),
        "max_ms": ms(v.last().copied().unwrap_or(0.0)),
    })
}

#[allow(clippy::too_many_lines)]
async fn calls(opts: &Options) -> anyhow::Result<()> {
    let n: usize = opts.num("calls", 100)?;
    let seconds: u64 = opts.num("seconds", 30)?;
    let warmup: u64 = opts.num("warmup", 5)?;
    let late_ms: u64 = opts.num("late-ms", 40)?;
    let pause_ms: u64 = opts.num("pause-ms", 1000)?;
    let reply_ms: u64 = opts.num("reply-ms", 1000)?;
    anyhow::ensure!(
        (1..=2000).contains(&n) && seconds >= 1,
        "--calls must be 1..=2000 and --seconds at least 1"
    );
    raise_fd_limit();
    let speech = Arc::new(speech(opts)?);
    let load_start = load_average();

    // The server process.
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(&exe)
        .args(["voice_server", "--token", TOKEN])
        .args([
            "--calls",
            &n.to_string(),
            "--reply-ms",
            &reply_ms.to_string(),
        ])
        .args(["--without", opts.get("without").unwrap_or("")])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} voice_server", exe.display()))?;
    let pid = child.id().context("server pid")?;
    let stdin = child.stdin.take().context("server stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("server stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("the server did not start in time")??
        .context("the server exited before listening")?;
    let addr = line
        .strip_prefix("roomkit listening on http://")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss_of(pid);

    // Rooms, each with the phone and the agent.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().build()?;
    let base = format!("http://{addr}");
    for i in 0..n {
        let id = format!("call-{i}");
        let resp = http
            .post(format!("{base}/rooms"))
            .json(&json!({"id": id}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "create room: {}", resp.status());
        for ch in ["phone", "bot"] {
            let resp = http
                .post(format!("{base}/rooms/{id}/channels"))
                .json(&json!({"channel_id": ch}))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "attach: {}", resp.status());
        }
    }
    let rss_rooms = rss_of(pid);

    // The calls.
    let window = Arc::new(Window::default());
    let (tick_tx, tick_rx) = tokio::sync::watch::channel(0u64);
    let frames = speech.frames.len() as u64;
    // A turn: speech, VAD hangover and turn decision, the reply, the pause.
    let turn_frames = frames + 40 + reply_ms / 20 + pause_ms / 20;
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let t0 = mono_ns() + 200_000_000 - FRAME_NS;
    let mut callers = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (ws, sid) = dial(&http, &addr, &format!("call-{i}"), i).await?;
        let caller = Arc::new(Caller {
            log: Mutex::new(CallLog::default()),
            reply_done: AtomicBool::new(false),
        });
        let (sink, stream) = ws.split();
        let script = Script {
            speech: speech.clone(),
            start_tick: 1 + (i as u64 * turn_frames) / n as u64 + 10,
            pause_frames: pause_ms / 20,
            timeout_frames: 500,
        };
        tasks.push(tokio::spawn(listen(
            stream,
            caller.clone(),
            window.clone(),
            late_ms * 1_000_000,
        )));
        tasks.push(tokio::spawn(speak(
            sink,
            tick_rx.clone(),
            t0,
            sid,
            script,
            caller.clone(),
            window.clone(),
        )));
        callers.push(caller);
    }
    drop(tick_rx);
    let rss_connected = rss_of(pid);
    let stop_ticks = Arc::new(AtomicBool::new(false));
    let ticker = {
        let stop = stop_ticks.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval_at(start, Duration::from_millis(20));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                iv.tick().await;
                k += 1;
                if tick_tx.send(k).is_err() {
                    break;
                }
            }
        })
    };

    // Warm-up, then the measured window.
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let cpu0 = cpu_seconds_of(pid);
    let steal0 = steal_ticks();
    let wall0 = Instant::now();
    window.start.store(mono_ns(), Ordering::Relaxed);
    let mut rss_peak = 0;
    let mut rss_sum = 0u64;
    let mut rss_samples = 0u64;
    while wall0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = rss_of(pid);
        rss_peak = rss_peak.max(r);
        rss_sum += r;
        rss_samples += 1;
    }
    let cpu1 = cpu_seconds_of(pid);
    let steal1 = steal_ticks();
    let wall = wall0.elapsed().as_secs_f64();
    window.end.store(mono_ns(), Ordering::Relaxed);
    let load_end = load_average();
    // The turns of the window get their answers before the calls end.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Hang up, then ask the server for its report.
    window.stopping.store(true, Ordering::Relaxed);
    stop_ticks.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), ticker).await;
    for t in tasks {
        if tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .is_err()
        {
            eprintln!("voice_calls: a caller did not end in time");
        }
    }
    drop(stdin);
    let report: Value = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with(r#"{"report":"voice_server""#)
                || line.contains(r#""report":"voice_server""#)
            {
                return serde_json::from_str(&line).ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the server sent no report")?;
    if let Some(path) = opts.get("report-file") {
        std::fs::write(path, report.to_string())?;
    }
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    let clean_exit = matches!(exit, Ok(Ok(s)) if s.success());

    // What the callers saw.
    let (ws_, we_) = (
        window.start.load(Ordering::Relaxed),
        window.end.load(Ordering::Relaxed),
    );
    let mut turns = 0u64;
    let mut answered = 0u64;
    let mut unanswered = 0u64;
    let mut response = Vec::new();
    let (mut agent_frames, mut late, mut late_20, mut max_late) = (0u64, 0u64, 0u64, 0u64);
    let (mut late_sends, mut max_send_late) = (0u64, 0u64);
    let mut completed = 0usize;
    let mut errors = Vec::new();
    // Per call: first-frame arrivals of the window's turns.
    let mut first_frames: HashMap<String, Vec<u64>> = HashMap::new();
    for (i, c) in callers.iter().enumerate() {
        let log = c.log.lock();
        let room = format!("call-{i}");
        let mut answered_here = 0;
        for t in &log.turns {
            if t.speech_end_ns < ws_ || t.speech_end_ns > we_ {
                continue;
            }
            turns += 1;
            if let Some(f) = t.first_frame_ns {
                answered += 1;
                answered_here += 1;
                response.push((f - t.speech_end_ns) as f64);
                first_frames.entry(room.clone()).or_default().push(f);
            }
        }
        unanswered += log.unanswered;
        agent_frames += log.agent_frames;
        late += log.late;
        late_20 += log.late_20ms;
        max_late = max_late.max(log.max_late_ns);
        late_sends += log.late_sends;
        max_send_late = max_send_late.max(log.max_send_late_ns);
        if let Some(e) = &log.error {
            errors.push(format!("call {i}: {e}"));
        }
        if log.error.is_none() && !log.socket_ended_early && answered_here > 0 {
            completed += 1;
        }
    }

    // The fakes' own time, per room and turn: (model asked at, ns in the
    // model + ns in the speech synthesis).
    let mut fakes: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    if let Some(rooms) = report["fakes"].as_object() {
        for (room, f) in rooms {
            let ai: Vec<(u64, u64)> = f["ai"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| (p[0].as_u64().unwrap_or(0), p[1].as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            let tts: Vec<u64> = f["tts_ns"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
                .unwrap_or_default();
            let per_turn = ai
                .iter()
                .enumerate()
                .map(|(k, (at, d))| (*at, d + tts.get(k).copied().unwrap_or(0)))
                .collect();
            fakes.insert(room.clone(), per_turn);
        }
    }
    let mut fake_ns_all: Vec<f64> = fakes
        .values()
        .flat_map(|v| v.iter().map(|(_, d)| *d as f64))
        .collect();
    fake_ns_all.sort_by(f64::total_cmp);

    // Added latency from the sessions' turn metrics (media clock).
    // Every call sends from the clock's first tick, so a call's media time
    // m is the caller's wall time t0 + m.
    let mut added = Vec::new();
    let mut metrics_in_window = 0u64;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let metrics = report["turn_metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for m in &metrics {
        let room = m["room"].as_str().unwrap_or("").to_owned();
        let k = {
            let e = seen.entry(room.clone()).or_default();
            *e += 1;
            *e - 1
        };
        let end_wall = t0 + (m["speech_end_ms"].as_f64().unwrap_or(0.0) * 1e6) as u64;
        if end_wall < ws_ || end_wall > we_ {
            continue;
        }
        metrics_in_window += 1;
        let (Some(v2v), Some(eou)) = (m["voice_to_voice_ms"].as_f64(), m["eou_delay_ms"].as_f64())
        else {
            continue;
        };
        let fake_ms = fakes
            .get(&room)
            .and_then(|v| v.get(k))
            .map_or(0.0, |(_, d)| *d as f64 / 1e6);
        added.push((v2v - eou - fake_ms) * 1e6);
    }

    // Cross-check on the wall clock, across the two processes: from the
    // model being asked to the first agent frame reaching the caller.
    let mut reply_path = Vec::new();
    for (room, arrivals) in &first_frames {
        let Some(asked) = fakes.get(room) else {
            continue;
        };
        for f in arrivals {
            if let Some((at, d)) = asked.iter().rev().find(|(at, _)| at <= f)
                && f - at < 10_000_000_000
            {
                reply_path.push((f - at).saturating_sub(*d) as f64);
            }
        }
    }

    let cpu_percent_total = (cpu1 - cpu0) / wall * 100.0;
    let rss_avg = rss_sum.checked_div(rss_samples).unwrap_or(0);
    let mut added_sorted = added.clone();
    added_sorted.sort_by(f64::total_cmp);
    let have_metrics = !added.is_empty();
    let method = if have_metrics {
        "voice_turn_metrics of each call (media clock): voice_to_voice_ms - eou_delay_ms, i.e. from the turn detector's decision to the first agent frame sent, minus the time spent inside the fake model and fake TTS for that turn"
    } else {
        "unavailable: the calls emitted no voice_turn_metrics with voice_to_voice_ms"
    };
    let mut out = json!({
        "workload": "voice_calls",
        "calls": n,
        "calls_completed": completed,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "signal": speech.source,
        "utterance_ms": frames * 20,
        "cpu_core_percent_per_call": (cpu_percent_total / n as f64 * 1000.0).round() / 1000.0,
        "server_cpu_core_percent": (cpu_percent_total * 10.0).round() / 10.0,
        "host_steal_core_percent": ((steal1.saturating_sub(steal0)) as f64 / CLOCK_TICKS_PER_SECOND / wall * 1000.0).round() / 10.0,
        "calls_per_core_at_this_cost": if cpu_percent_total > 0.0 { (100.0 * n as f64 / cpu_percent_total).floor() } else { 0.0 },
        "rss_bytes_per_call": rss_peak.saturating_sub(rss_idle) / n as u64,
        "server_rss_idle_bytes": rss_idle,
        "server_rss_rooms_bytes": rss_rooms,
        "server_rss_connected_bytes": rss_connected,
        "server_rss_peak_bytes": rss_peak,
        "server_rss_mean_bytes": rss_avg,
        "late_frames": late,
        "late_frame_threshold_ms": late_ms,
        "late_frames_over_20ms": late_20,
        "max_frame_lateness_ms": ms(max_late as f64),
        "agent_frames": agent_frames,
    });
    let more = json!({
        "added_latency_p50_ms": if have_metrics { json!(ms(percentile(&added_sorted, 50.0))) } else { Value::Null },
        "added_latency_p99_ms": if have_metrics { json!(ms(percentile(&added_sorted, 99.0))) } else { Value::Null },
        "added_latency_max_ms": if have_metrics { json!(ms(added_sorted.last().copied().unwrap_or(0.0))) } else { Value::Null },
        "added_latency_samples": added.len(),
        "method": method,
        "reply_path_wall": summary_ms(reply_path),
        "caller_response_wall": summary_ms(response),
        "fake_ns_per_turn_p50": percentile(&fake_ns_all, 50.0),
        "fake_ns_per_turn_max": fake_ns_all.last().copied().unwrap_or(0.0),
        "turns": turns,
        "turns_answered": answered,
        "turns_unanswered": unanswered,
        "turn_metrics_received": metrics.len(),
        "turn_metrics_in_window": metrics_in_window,
        "framework_events_lagged": report["framework_events_lagged"],
        "caller_late_sends": late_sends,
        "caller_max_send_lateness_ms": ms(max_send_late as f64),
        "caller_errors": errors.iter().take(5).collect::<Vec<_>>(),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "server_clean_exit": clean_exit,
        "notes": {
            "cpu": "server process CPU time (user+system, /proc) over the measured window / wall time / calls, as % of one core",
            "host_steal_core_percent": "CPU time the hypervisor gave other guests during the window (steal in /proc/stat), as % of one core: on a shared machine a run with much steal measures the neighbours too",
            "rss": "server peak RSS in the window minus its RSS before any room or call, / calls (rooms included)",
            "late_frames": format!("agent media frames reaching the caller more than {late_ms} ms after their slot; frame k of a reply is due at the arrival of its first frame + k x 20 ms; counted in the window"),
            "reply_path_wall": "wall clock across processes: the fake model being asked to the first agent frame read by the caller, minus the fakes' time (excludes the commit of the caller's message, includes the socket to the caller)",
            "caller_response_wall": "the caller's last speech frame sent to the agent's first frame read: VAD hangover, turn wait and the whole reply path",
            "caller_late_sends": "caller frames sent more than 10 ms after their slot (the load generator falling behind)",
        },
    });
    if let (Some(o), Value::Object(m)) = (out.as_object_mut(), more) {
        o.extend(m);
    }
    emit(&out);
    if n > 0 && completed == 0 {
        bail!("no call completed a turn");
    }
    Ok(())
}
