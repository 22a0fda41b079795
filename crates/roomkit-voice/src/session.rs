//! One call's task (RFC §12.3.14): the only owner of the call's audio
//! pipeline, speech-to-text session, turn detector, interruption controller
//! and playback queue.
//!
//! It `select!`s over the transport's events, the channel's commands, the
//! TTS audio of the replies being spoken, results of work done elsewhere
//! (hooks, commits) and its send clock, a tick per outbound frame. Provider
//! and engine work runs on the application's runtime and answers through
//! bounded channels, so a slow provider never holds a frame back.
//!
//! The call's media clock counts caller samples at the transport's rate;
//! hook payloads, VAD events and playback positions are stamped on it.
//! Latency figures read it with sub-frame resolution (`media_ms`): the
//! samples received plus the wall time since the last frame arrived, at
//! most that frame's length.
//!
//! Each caller turn is timed on that clock (RFC §15.4): speech end, the
//! end-of-utterance decision (which is also the commit), the final
//! transcript, the first sentence of the answer reaching the call, its
//! first synthesized audio and its first frame sent. One
//! `voice_turn_metrics` event reports them when the answer starts playing,
//! or when the turn ends without one. Both sides' words are reported as
//! `voice_transcript` events.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use roomkit_audio::pipeline::TransportCapabilities;
use roomkit_audio::resample::RubatoResampler;
use roomkit_audio::turn::{
    BackchannelDetector, HeuristicTurnDetector, InterruptionAction, InterruptionController,
    InterruptionStrategy, KeywordBackchannelDetector, TurnContext, TurnDetector,
};
use roomkit_audio::vad::{VadEvent, VadEventType};
use roomkit_audio::{AudioFormat, AudioFrame, AudioPipeline, AudioPipelineContract, PipelineEvent};
use roomkit_core::hooks::HookPayload;
use roomkit_core::model::{
    EventContent, EventId, FrameworkEvent, HookTrigger, InboundMessage, Map, RoomEvent, RoomId,
    SystemContent, VoiceSession,
};
use roomkit_core::{EventUpdate, RoomKit};
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::backend::{BackendEvent, Call, Outbound, TransportStats};
use crate::calls::{CallCommand, Shared};
use crate::listen::{SendOutcome, SttFeed, stt_backoff};
use crate::stt::{SttSession, Transcript};
use crate::tts::TtsChunk;

/// Audio of replies, from their synthesis tasks.
#[derive(Debug)]
enum ReplyMsg {
    Sentence { reply: u64, text: String },
    Audio { reply: u64, chunk: TtsChunk },
    SentenceDone { reply: u64 },
    Done { reply: u64 },
    Failed { reply: u64, error: String },
}

/// Results of work done on the application's runtime.
#[derive(Debug)]
enum Internal {
    /// ON_TRANSCRIPTION ran: the (possibly modified) text, or `None` when blocked.
    Transcribed(Option<String>),
    /// A new STT session after a failure.
    SttReopened(SttSession),
    /// Reopening the STT session failed.
    SttReopenFailed(crate::error::ProviderFailure),
}

#[derive(Debug, Default)]
struct Sentence {
    text: String,
    audio: VecDeque<i16>,
    /// Samples received so far (internal rate).
    total: u64,
    played: u64,
    done: bool,
    /// (sample position, byte end in `text`) of word ends.
    marks: Vec<(u64, usize)>,
}

#[derive(Debug)]
struct Reply {
    id: u64,
    event_id: Option<EventId>,
    streamed: bool,
    sentences: Vec<Sentence>,
    synth_done: bool,
    abort: AbortHandle,
    started: bool,
    /// An AI channel's response (see [`CallCommand::Reply`]).
    answer: bool,
    marks: ReplyMarks,
    /// Its `voice_transcript` was emitted (at a barge-in).
    reported: bool,
}

/// When a reply's milestones happened, in ms on the media clock.
#[derive(Debug, Default, Clone, Copy)]
struct ReplyMarks {
    /// Its first sentence reached the call (and went to text-to-speech).
    first_text_ms: Option<f64>,
    /// Its first synthesized audio arrived.
    first_audio_ms: Option<f64>,
    /// Its first frame was sent.
    first_sent_ms: Option<f64>,
    /// The end of the audio of its last frame sent.
    sent_end_ms: f64,
}

/// Media-clock marks of caller speech being gathered into a turn.
#[derive(Debug, Clone, Copy)]
struct Heard {
    start_ms: f64,
    end_ms: f64,
    /// When the final transcript arrived.
    stt_ms: Option<f64>,
}

/// A committed caller turn whose latency figures are not reported yet.
#[derive(Debug, Clone, Copy)]
struct Answering {
    heard: Heard,
    /// End-of-utterance decision and commit (the same step).
    committed_ms: f64,
    /// The reply that answers it, once one arrived.
    reply: Option<u64>,
}

/// How long (on the media clock) a committed turn waits for an AI answer
/// to arrive before it is reported without one.
const ANSWER_WAIT_MS: f64 = 30_000.0;

impl Reply {
    fn queued(&self) -> usize {
        self.sentences.iter().map(|s| s.audio.len()).sum()
    }

    fn finished(&self) -> bool {
        self.synth_done && self.sentences.iter().all(|s| s.done && s.audio.is_empty())
    }

    /// The text the caller heard: whole sentences played, then the played
    /// part of the current one (by word marks when the provider gave them,
    /// else in proportion to its audio), cut back to a word boundary.
    fn spoken_text(&self) -> String {
        let mut spoken = String::new();
        for s in &self.sentences {
            if s.played == 0 {
                break;
            }
            if s.done && s.audio.is_empty() {
                push_words(&mut spoken, &s.text);
                continue;
            }
            let end = match s.marks.iter().rev().find(|(pos, _)| *pos <= s.played) {
                Some((_, end)) => *end,
                None => {
                    let chars = s.text.chars().count() as u64;
                    let heard = (chars * s.played / s.total.max(1)) as usize;
                    let byte = s
                        .text
                        .char_indices()
                        .nth(heard)
                        .map_or(s.text.len(), |(i, _)| i);
                    // Only whole words count as heard.
                    if byte < s.text.len() && !s.text[byte..].starts_with(char::is_whitespace) {
                        s.text[..byte].rfind(char::is_whitespace).unwrap_or(0)
                    } else {
                        byte
                    }
                }
            };
            push_words(&mut spoken, s.text.get(..end).unwrap_or(""));
            break;
        }
        spoken
    }
}

/// A media-clock reading: `received_ms` of caller audio, plus the time
/// `since` the last frame arrived, at most that frame's length `frame_ms`.
fn sub_frame_ms(received_ms: f64, since: Option<Duration>, frame_ms: f64) -> f64 {
    received_ms + since.map_or(0.0, |d| (d.as_secs_f64() * 1000.0).min(frame_ms))
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// How often ON_INPUT_AUDIO_LEVEL and ON_OUTPUT_AUDIO_LEVEL report, in ms
/// of each direction's media clock: at most ten reports a second per
/// direction, not one per 20 ms frame.
pub(crate) const LEVEL_INTERVAL_MS: f64 = 100.0;

/// The quietest level reported, in dBFS (digital silence reads as this).
const LEVEL_FLOOR_DB: f64 = -100.0;

/// One direction's throttled audio level. Whether a hook listens is looked
/// up once per interval, and samples are only summed while one does, so a
/// call without level hooks pays a comparison per frame.
#[derive(Debug, Default)]
struct LevelMeter {
    /// When the next report (and hook look-up) is due, in ms.
    next_ms: f64,
    /// A hook for the trigger was registered at the last look-up.
    on: bool,
    sum_sq: f64,
    count: u64,
}

impl LevelMeter {
    /// Feeds the frame at `at_ms`; when an interval has passed and a hook
    /// listened during it, the level of that interval's audio in dBFS.
    fn feed(&mut self, at_ms: f64, samples: &[i16], hooked: impl FnOnce() -> bool) -> Option<f64> {
        if self.on {
            self.sum_sq += samples
                .iter()
                .map(|&x| f64::from(x) * f64::from(x))
                .sum::<f64>();
            self.count += samples.len() as u64;
        }
        if at_ms < self.next_ms {
            return None;
        }
        self.next_ms = at_ms + LEVEL_INTERVAL_MS;
        let level = (self.on && self.count > 0).then(|| level_db(self.sum_sq, self.count));
        self.sum_sq = 0.0;
        self.count = 0;
        self.on = hooked();
        level
    }
}

/// RMS level of `count` samples whose squares sum to `sum_sq`, in dBFS
/// (0 is a full-scale square wave), to a tenth of a dB.
fn level_db(sum_sq: f64, count: u64) -> f64 {
    let rms = (sum_sq / count.max(1) as f64).sqrt() / 32768.0;
    let db = if rms > 0.0 {
        (20.0 * rms.log10()).max(LEVEL_FLOOR_DB)
    } else {
        LEVEL_FLOOR_DB
    };
    (db * 10.0).round() / 10.0
}

fn push_words(out: &mut String, text: &str) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(text);
}

/// Transports that measure the network (SIP's RTP and RTCP): their calls
/// report [`FrameworkEvent::VoiceNetworkStats`] at the end. (WebRTC's
/// stack keeps its own statistics, not yet read into the call's counters.)
const NETWORK_MEASURED: [&str; 1] = ["sip"];

struct CallTask {
    shared: Arc<Shared>,
    main: Handle,
    kit: RoomKit,
    session_id: String,
    room_id: RoomId,
    sender: String,
    call_id: String,
    out: mpsc::Sender<Outbound>,
    stats: Arc<TransportStats>,
    can_clear: bool,
    shows_text: bool,
    pipeline: AudioPipeline,
    transport_rate: u32,
    /// The transport's name (`sip`, `twilio`, ...).
    transport_name: String,
    internal_rate: u32,
    frame_len: usize,
    /// Caller samples received, at the transport rate: the media clock.
    clock: u64,
    /// Agent samples sent, at the transport rate.
    sent: u64,
    /// End of the last agent frame sent, in ms on the media clock.
    agent_end_ms: f64,
    /// When the last caller frame arrived and its length in ms.
    last_frame_at: Option<Instant>,
    last_frame_ms: f64,
    /// When the last agent frame was sent.
    last_sent_at: Option<Instant>,
    events: Vec<PipelineEvent>,
    // Listening.
    stt: Option<SttSession>,
    stt_rate: u32,
    /// What goes to the STT session and which finals are awaited.
    stt_feed: SttFeed,
    /// Failed (re)opening attempts in a row, for the backoff.
    stt_failures: u32,
    stt_reopening: bool,
    user_speaking: bool,
    /// Start of the current speech segment and how much of it since then
    /// was voiced (frames near the segment's level, not its trailing
    /// silence), for CONFIRMED's "sustained speech".
    speech_start_ms: f64,
    voiced_ms: f64,
    segment_peak: f64,
    discard_segment: bool,
    hold_transcripts: bool,
    held: Vec<String>,
    partial: Option<String>,
    turn: Option<Box<dyn TurnDetector>>,
    turn_text: String,
    turn_deadline: Option<Instant>,
    last_speech_end_ms: f64,
    last_speech_ms: f64,
    /// The last speech segment sent to speech-to-text.
    segment: Option<Heard>,
    /// The speech of the turn being gathered (first segment's start, last
    /// segment's end and transcript).
    turn_heard: Option<Heard>,
    answering: Option<Answering>,
    controller: InterruptionController,
    internal_tx: mpsc::Sender<Internal>,
    // Speaking.
    replies: VecDeque<Reply>,
    reply_tx: mpsc::Sender<ReplyMsg>,
    tts_resampler: Option<RubatoResampler>,
    /// TTS audio waiting for a whole resampler frame: (reply, rate, samples).
    tts_pending: (u64, u32, Vec<i16>),
    pending_cuts: HashMap<u64, String>,
    agent_speaking: bool,
    last_dtmf: Option<(char, f64)>,
    /// ON_INPUT_AUDIO_LEVEL over the caller's processed frames.
    input_level: LevelMeter,
    /// ON_OUTPUT_AUDIO_LEVEL over the agent's frames sent.
    output_level: LevelMeter,
    /// Recording sinks (call taps) registered for the call.
    recording_sinks: usize,
}

/// CONNECTING: announces the session to the room (a `session_started`
/// system event), which also finds or creates the room. `None` when the
/// call has no room (refused, or no room could take it); the reason is
/// logged.
async fn join_room(
    shared: &Shared,
    main: &Handle,
    kit: &RoomKit,
    info: &crate::backend::CallInfo,
    session_id: &str,
    sender: &str,
) -> Option<RoomId> {
    let log_end = |reason: &str| {
        tracing::info!(target: "roomkit.voice.call", session_id = %session_id, reason, "call ended");
    };
    let mut session_meta = Map::new();
    session_meta.insert("call_id".into(), json!(info.call_id));
    session_meta.insert("stream_id".into(), json!(info.stream_id));
    session_meta.insert("transport".into(), json!(info.transport));
    if let Some(f) = &info.from {
        session_meta.insert("from".into(), json!(f));
    }
    if let Some(t) = &info.to {
        session_meta.insert("to".into(), json!(t));
    }
    let explicit_room = info
        .parameters
        .get("room_id")
        .map(|r| RoomId::from(r.as_str()));
    let mut message = InboundMessage::text(shared.id.clone(), sender.to_owned(), "");
    message.content = EventContent::System(SystemContent {
        code: "session_started".into(),
        message: String::new(),
        data: session_meta.clone(),
    });
    message.room_id = explicit_room.clone();
    message.idempotency_key = Some(format!("voice-session:{session_id}"));
    message.session = Some(VoiceSession {
        id: session_id.to_owned(),
        room_id: explicit_room,
        participant_id: None,
        channel_id: shared.id.clone(),
        metadata: session_meta.clone(),
    });
    message.metadata = session_meta;
    let k = kit.clone();
    let started = main
        .spawn(async move { k.process_inbound(message).await })
        .await;
    match started {
        Ok(Ok(r)) if !r.blocked => match r.event {
            Some(e) => Some(e.room_id),
            None => {
                log_end("no room for the call");
                None
            }
        },
        Ok(Ok(r)) => {
            tracing::info!(target: "roomkit.voice.call", session_id = %session_id, reason = ?r.reason, "the room refused the call");
            log_end("refused");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(target: "roomkit.voice.call", session_id = %session_id, error = %e, "the call could not join a room");
            log_end("no room");
            None
        }
        Err(e) => {
            tracing::error!(target: "roomkit.voice.call", session_id = %session_id, error = %e, "session start failed");
            None
        }
    }
}

/// Runs a call to its end.
pub(crate) async fn run_call(
    shared: Arc<Shared>,
    main: Handle,
    mut call: Call,
    session_id: String,
    mut commands: mpsc::Receiver<CallCommand>,
) {
    let Some(kit) = shared.kit() else {
        tracing::error!(target: "roomkit.voice.call", session_id = %session_id, "the voice channel is not bound to an engine");
        let _ = call.outbound.try_send(Outbound::HangUp);
        return;
    };
    let info = call.info.clone();
    let sender = info.from.clone().unwrap_or_else(|| info.call_id.clone());

    let Some(room_id) = join_room(&shared, &main, &kit, &info, &session_id, &sender).await else {
        let _ = call.outbound.try_send(Outbound::HangUp);
        return;
    };
    shared.set_room(&session_id, room_id.clone());

    // The pipeline, built on this thread (its stages are not Send).
    let settings = &shared.settings;
    let transport = info.format;
    let internal = settings
        .pipeline
        .resampler
        .as_ref()
        .map_or(AudioFormat::pcm_mono(transport.sample_rate), |r| {
            r.internal_format()
        });
    let contract = AudioPipelineContract {
        internal_format: internal,
        transport_inbound_format: transport,
        transport_outbound_format: transport,
    };
    let caps = TransportCapabilities {
        native_aec: call.capabilities.native_aec,
        native_agc: call.capabilities.native_agc,
        feeds_aec_reference: false,
    };
    let mut pipeline = match AudioPipeline::from_config(&settings.pipeline, contract, caps) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(target: "roomkit.voice.call", session_id = %session_id, error = %e, "the audio pipeline cannot run this call");
            let _ = call.outbound.try_send(Outbound::HangUp);
            return;
        }
    };
    let taps: Vec<_> = shared.taps.read().map(|t| t.clone()).unwrap_or_default();
    let mut recording_sinks = 0;
    for tap in taps {
        if let Some(sink) = tap.call_started(&session_id, &room_id, &info) {
            pipeline.add_recording_sink(&session_id, sink);
            recording_sinks += 1;
        }
    }
    let interruption = settings
        .interruption
        .clone()
        .unwrap_or_else(|| pipeline.interruption().clone());
    // SEMANTIC tells acknowledgements from interruptions with the keyword
    // detector: on the partial transcript when a streaming STT has one,
    // else on how long the caller has spoken.
    let backchannel = (interruption.strategy == InterruptionStrategy::Semantic)
        .then(|| Box::new(KeywordBackchannelDetector::default()) as Box<dyn BackchannelDetector>);

    // The speech-to-text session.
    let stt_rate = shared.stt.sample_rate();
    let provider = shared.stt.clone();
    let mut stt_retry = false;
    let stt = match main
        .spawn(async move { provider.open_session(stt_rate).await })
        .await
    {
        Ok(Ok(s)) => Some(s),
        Ok(Err(f)) => {
            kit.emit_framework_event(FrameworkEvent::SttError {
                session_id: session_id.clone(),
                provider: shared.stt.name().to_owned(),
                error: f.to_string(),
            });
            stt_retry = f.retryable;
            None
        }
        Err(_) => None,
    };

    let (internal_tx, mut internal_rx) = mpsc::channel(32);
    let (reply_tx, mut reply_rx) = mpsc::channel(64);
    let mut task = CallTask {
        main: main.clone(),
        kit: kit.clone(),
        session_id: session_id.clone(),
        room_id: room_id.clone(),
        sender,
        call_id: info.call_id.clone(),
        out: call.outbound.clone(),
        stats: call.stats.clone(),
        can_clear: call.capabilities.interruption,
        shows_text: call.capabilities.shows_text,
        transport_rate: transport.sample_rate,
        transport_name: info.transport.clone(),
        internal_rate: internal.sample_rate,
        frame_len: (internal.sample_rate * settings.frame_ms / 1000) as usize,
        clock: 0,
        sent: 0,
        agent_end_ms: 0.0,
        last_frame_at: None,
        last_frame_ms: 0.0,
        last_sent_at: None,
        events: Vec::with_capacity(8),
        stt_feed: SttFeed::new(
            shared.stt.supports_streaming(),
            internal.sample_rate,
            stt_rate,
            f64::from(
                settings
                    .pipeline
                    .vad_config
                    .clone()
                    .unwrap_or_default()
                    .speech_pad_ms,
            ),
            Duration::from_millis(settings.stt_timeout_ms),
        ),
        stt_failures: 0,
        stt_reopening: false,
        stt,
        stt_rate,
        user_speaking: false,
        speech_start_ms: 0.0,
        voiced_ms: 0.0,
        segment_peak: 0.0,
        discard_segment: false,
        hold_transcripts: false,
        held: Vec::new(),
        partial: None,
        turn: settings
            .turn
            .clone()
            .map(|c| Box::new(HeuristicTurnDetector::new(c)) as Box<dyn TurnDetector>),
        turn_text: String::new(),
        turn_deadline: None,
        last_speech_end_ms: 0.0,
        last_speech_ms: 0.0,
        segment: None,
        turn_heard: None,
        answering: None,
        controller: InterruptionController::new(interruption, backchannel),
        internal_tx,
        replies: VecDeque::new(),
        reply_tx,
        tts_resampler: None,
        tts_pending: (0, 0, Vec::new()),
        pending_cuts: HashMap::new(),
        agent_speaking: false,
        last_dtmf: None,
        input_level: LevelMeter::default(),
        output_level: LevelMeter::default(),
        recording_sinks,
        pipeline,
        shared: shared.clone(),
    };

    if stt_retry {
        task.reopen_stt();
    }

    // ACTIVE, and the audio path is live.
    kit.emit_framework_event(FrameworkEvent::VoiceSessionStarted {
        session_id: session_id.clone(),
        room_id: room_id.clone(),
        channel_id: shared.id.clone(),
    });
    kit.emit_framework_event(FrameworkEvent::VoiceSessionReady {
        session_id: session_id.clone(),
        room_id: room_id.clone(),
        channel_id: shared.id.clone(),
    });
    task.fire(
        HookTrigger::OnSessionStarted,
        json!({"call_id": info.call_id, "transport": info.transport, "from": info.from, "to": info.to}),
    );
    // The call's audio goes to its recording sinks from the first frame on:
    // announced before any is captured.
    if task.recording_sinks > 0 {
        task.fire(
            HookTrigger::OnRecordingStarted,
            json!({"call_id": info.call_id, "sinks": task.recording_sinks, "mode": "both"}),
        );
    }
    tracing::info!(target: "roomkit.voice.call", session_id = %session_id, room_id = %room_id, call_id = %info.call_id, "call active");

    let frame_period = Duration::from_millis(u64::from(settings.frame_ms));
    let mut tick = tokio::time::interval(frame_period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let reason = loop {
        let deadline = task.turn_deadline;
        let stt_deadline = task.stt_feed.deadline();
        tokio::select! {
            event = call.events.recv() => match event {
                Some(BackendEvent::Audio(samples)) => task.on_audio(samples),
                Some(BackendEvent::Dtmf(d)) => task.on_dtmf(d, "signaling"),
                Some(BackendEvent::Mark(name)) => {
                    tracing::debug!(target: "roomkit.voice.call", session_id = %task.session_id, mark = %name, "playback mark reached");
                }
                Some(BackendEvent::HangUp { reason }) => break reason,
                None => break "transport gone".to_owned(),
            },
            command = commands.recv() => match command {
                Some(CallCommand::Reply { id, sentences, event_id, streamed, answer }) => task.on_reply(id, sentences, event_id, streamed, answer),
                Some(CallCommand::ReplyStored { id, event_id }) => task.on_reply_stored(id, event_id),
                Some(CallCommand::Transfer { target }) => {
                    tracing::info!(target: "roomkit.voice.call", session_id = %task.session_id, %target, "transfer asked");
                    let _ = task.out.try_send(Outbound::Transfer { target });
                }
                Some(CallCommand::HangUp) | None => {
                    let _ = task.out.try_send(Outbound::HangUp);
                    break "hung up by the application".to_owned();
                }
            },
            Some(msg) = reply_rx.recv() => {
                task.on_reply_msg(msg);
                // A reply that can start plays its first frame now, not at
                // the next tick, and the send clock restarts from it.
                if task.can_start_now(frame_period) {
                    task.on_tick();
                    if task.agent_speaking {
                        tick.reset();
                    }
                }
            }
            Some(msg) = internal_rx.recv() => task.on_internal(msg),
            result = recv_stt(&mut task.stt) => task.on_stt_result(result),
            () = sleep_until(stt_deadline), if stt_deadline.is_some() => task.on_stt_timeout(),
            _ = tick.tick() => task.on_tick(),
            () = sleep_until(deadline), if deadline.is_some() => {
                task.turn_deadline = None;
                task.evaluate_turn();
            }
        }
    };
    task.finish(&reason);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The next STT result, or never when there is no session.
async fn recv_stt(
    stt: &mut Option<SttSession>,
) -> Option<Result<Transcript, crate::error::ProviderFailure>> {
    match stt {
        Some(s) => s.results.recv().await,
        None => std::future::pending().await,
    }
}

impl CallTask {
    /// The media clock at frame resolution: caller samples received.
    fn now_ms(&self) -> f64 {
        self.clock as f64 * 1000.0 / f64::from(self.transport_rate)
    }

    /// The media clock with sub-frame resolution, for latency figures: the
    /// samples received plus the wall time since the last frame arrived,
    /// at most that frame's length (so it never runs ahead of the next
    /// frame, and stands still when the caller's audio stops).
    fn media_ms(&self) -> f64 {
        let since = self.last_frame_at.map(|at| at.elapsed());
        sub_frame_ms(self.now_ms(), since, self.last_frame_ms)
    }

    /// Fires an async voice hook, if any is registered.
    fn fire(&self, trigger: HookTrigger, mut payload: serde_json::Value) {
        if !self.kit.has_hooks(trigger, &self.room_id) {
            return;
        }
        if let Some(obj) = payload.as_object_mut() {
            obj.insert("session_id".into(), json!(self.session_id));
            obj.insert("channel_id".into(), json!(self.shared.id.as_str()));
            obj.entry("t_ms").or_insert(json!(self.now_ms()));
        }
        let (kit, room) = (self.kit.clone(), self.room_id.clone());
        self.main.spawn(async move {
            kit.spawn_async_hooks(trigger, &room, HookPayload::Json(payload), None);
        });
    }

    /// Text for transports that show it (a dropped one is only text).
    fn show_text(&self, message: Outbound) {
        if self.shows_text {
            let _ = self.out.try_send(message);
        }
    }

    // ---- listening

    fn on_audio(&mut self, samples: Vec<i16>) {
        if samples.is_empty() {
            return;
        }
        self.clock += samples.len() as u64;
        self.last_frame_at = Some(Instant::now());
        self.last_frame_ms = samples.len() as f64 * 1000.0 / f64::from(self.transport_rate);
        if let Some(a) = &self.answering
            && a.reply.is_none()
            && self.now_ms() - a.committed_ms > ANSWER_WAIT_MS
        {
            tracing::debug!(target: "roomkit.voice.call", session_id = %self.session_id, "no answer to the caller's turn in time");
            self.report_turn(None);
        }
        let mut frame = AudioFrame {
            samples,
            sample_rate: self.transport_rate,
            channels: 1,
            timestamp_ms: None,
            metadata: Default::default(),
        };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let processed = match self.pipeline.process_inbound(
            &self.session_id,
            &mut frame,
            &mut events,
        ) {
            Ok(()) => true,
            Err(e) => {
                TransportStats::bump(&self.stats.bad_messages);
                tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, error = %e, "inbound frame rejected by the pipeline");
                false
            }
        };
        // A streaming STT hears the frame unless speech starts or ends on it
        // (a start sends it with the audio before it).
        let was_streaming = self.stt_feed.active();
        let listened = processed && frame.sample_rate == self.internal_rate;
        if processed {
            let now = self.now_ms();
            let (kit, room) = (&self.kit, &self.room_id);
            if let Some(level_db) = self.input_level.feed(now, &frame.samples, || {
                kit.has_hooks(HookTrigger::OnInputAudioLevel, room)
            }) {
                self.fire(
                    HookTrigger::OnInputAudioLevel,
                    json!({"level_db": level_db, "t_ms": now}),
                );
            }
        }
        if listened {
            self.stt_feed.remember(&frame.samples);
        }
        for event in events.drain(..) {
            match event {
                PipelineEvent::Vad(v) => self.on_vad(v),
                PipelineEvent::Dtmf(d) => self.on_dtmf(d.digit, "inband"),
                PipelineEvent::Speaker(s) => self.fire(
                    HookTrigger::OnSpeakerChange,
                    json!({"speaker_id": s.speaker_id, "is_new_speaker": s.is_new_speaker}),
                ),
            }
        }
        self.events = events;
        if listened && was_streaming && self.stt_feed.active() {
            self.stream_frame(&frame.samples);
        }
        if self.user_speaking {
            let level = rms(&frame.samples);
            self.segment_peak = self.segment_peak.max(level);
            if level >= (0.2 * self.segment_peak).max(200.0) && frame.sample_rate > 0 {
                self.voiced_ms +=
                    frame.samples.len() as f64 * 1000.0 / f64::from(frame.sample_rate);
            }
        }
        if self.user_speaking && self.agent_speaking {
            let progress = self.progress();
            let action = self.controller.on_speech_progress(
                self.speech_start_ms + self.voiced_ms,
                self.partial.as_deref(),
                progress,
            );
            self.act(action);
        }
    }

    fn progress(&self) -> f32 {
        self.replies.front().map_or(0.0, |r| {
            let total: u64 = r.sentences.iter().map(|s| s.total).sum();
            let played: u64 = r.sentences.iter().map(|s| s.played).sum();
            (played as f32 / total.max(1) as f32).min(1.0)
        })
    }

    fn on_vad(&mut self, v: VadEvent) {
        match v.kind {
            VadEventType::SpeechStart => {
                self.user_speaking = true;
                self.speech_start_ms = v.t_ms;
                // The VAD reports a start once speech has lasted a while.
                self.voiced_ms = (self.now_ms() - v.t_ms).max(0.0);
                self.segment_peak = 0.0;
                self.discard_segment = false;
                self.turn_deadline = None;
                self.stt_speech_started(v.t_ms);
                self.fire(HookTrigger::OnSpeechStart, json!({"t_ms": v.t_ms}));
                let action = self.controller.on_speech_start(v.t_ms);
                self.act(action);
            }
            VadEventType::SpeechEnd => {
                self.user_speaking = false;
                self.last_speech_end_ms = self.now_ms();
                self.last_speech_ms = v.duration_ms.unwrap_or(0.0);
                let progress = self.progress();
                // A speech end is reported at the end of the last speech frame.
                let end = v.t_ms;
                let action = self
                    .controller
                    .on_speech_end(end, self.partial.as_deref(), progress);
                self.act(action);
                self.fire(
                    HookTrigger::OnSpeechEnd,
                    json!({"t_ms": v.t_ms, "duration_ms": v.duration_ms}),
                );
                let discard = std::mem::take(&mut self.discard_segment);
                if discard {
                    tracing::debug!(target: "roomkit.voice.call", session_id = %self.session_id, "speech during playback discarded");
                } else {
                    self.segment = Some(Heard {
                        start_ms: self.speech_start_ms,
                        end_ms: end,
                        stt_ms: None,
                    });
                }
                self.stt_speech_ended(v.audio, discard);
            }
            VadEventType::Silence => {
                self.fire(
                    HookTrigger::OnVadSilence,
                    json!({"duration_ms": v.duration_ms}),
                );
            }
            VadEventType::AudioLevel => {
                self.fire(
                    HookTrigger::OnVadAudioLevel,
                    json!({"level_db": v.level_db}),
                );
            }
        }
    }

    /// Acts on the interruption controller's verdict.
    fn act(&mut self, action: InterruptionAction) {
        match action {
            InterruptionAction::Wait => {}
            InterruptionAction::Interrupt {
                flush_tts,
                keep_partial_transcript,
            } => self.interrupt(flush_tts, keep_partial_transcript),
            InterruptionAction::Backchannel(d) => {
                self.discard_segment = true;
                self.fire(
                    HookTrigger::OnBackchannel,
                    json!({"label": d.label, "confidence": d.confidence, "text": self.partial}),
                );
            }
            InterruptionAction::Ignore => self.discard_segment = true,
            InterruptionAction::Queue => self.hold_transcripts = true,
        }
    }

    /// Speech started at `t_ms`: a streaming STT starts hearing it.
    fn stt_speech_started(&mut self, t_ms: f64) {
        if !self.stt_feed.streaming() {
            return;
        }
        self.partial = None;
        let back_ms = (self.now_ms() - t_ms).max(0.0);
        let outcome = self.stt_feed.speech_started(self.stt.as_ref(), back_ms);
        self.stt_sent(outcome, "the start of an utterance");
    }

    /// One caller frame of a streamed utterance.
    fn stream_frame(&mut self, samples: &[i16]) {
        let outcome = self.stt_feed.stream(self.stt.as_ref(), samples);
        if outcome == SendOutcome::Dropped {
            self.stt_sent(outcome, "caller audio");
        }
    }

    /// Speech ended: the STT is asked for the utterance's final result
    /// (`discard`: speech the interruption controller ignored, whose final
    /// is dropped; a per-utterance provider is not even asked).
    fn stt_speech_ended(&mut self, segment: Option<Vec<i16>>, discard: bool) {
        let outcome = self
            .stt_feed
            .speech_ended(self.stt.as_ref(), segment, discard);
        self.stt_sent(outcome, "an utterance");
    }

    fn stt_sent(&self, outcome: SendOutcome, what: &str) {
        match outcome {
            SendOutcome::Sent => {}
            SendOutcome::NoSession => {
                tracing::debug!(target: "roomkit.voice.call", session_id = %self.session_id, what, "no speech-to-text session: audio dropped");
            }
            SendOutcome::Dropped => {
                let dropped = self.stt_feed.dropped();
                // Every drop is counted; the log is kept to a few lines.
                if dropped.is_power_of_two() {
                    tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, what, dropped, "speech-to-text is not keeping up: audio dropped");
                }
            }
        }
    }

    /// An STT result, before it is acted on: a final of ignored speech is
    /// dropped, and a session that answers is healthy again.
    fn on_stt_result(&mut self, result: Option<Result<Transcript, crate::error::ProviderFailure>>) {
        if let Some(Ok(t)) = &result {
            self.stt_failures = 0;
            if t.is_final && self.stt_feed.on_final() {
                self.partial = None;
                tracing::debug!(target: "roomkit.voice.call", session_id = %self.session_id, "final transcript of ignored speech dropped");
                return;
            }
        }
        self.on_stt(result);
    }

    /// No final result within `stt_timeout_ms`: the session is given up.
    fn on_stt_timeout(&mut self) {
        let failure = crate::error::ProviderFailure::retryable(
            self.shared.stt.name(),
            format!(
                "no final result within {} ms",
                self.stt_feed.timeout().as_millis()
            ),
        );
        self.stt_failed(failure.to_string());
    }

    fn on_stt(&mut self, result: Option<Result<Transcript, crate::error::ProviderFailure>>) {
        match result {
            Some(Ok(t)) if !t.is_final => {
                self.show_text(Outbound::Transcript {
                    text: t.text.clone(),
                    is_final: false,
                });
                self.fire(
                    HookTrigger::OnPartialTranscription,
                    json!({"text": t.text, "confidence": t.confidence}),
                );
                self.partial = Some(t.text);
            }
            Some(Ok(t)) => {
                self.partial = None;
                let text = t.text.trim().to_owned();
                if text.is_empty() {
                    return;
                }
                let now = self.media_ms();
                if let Some(s) = self.segment.as_mut() {
                    s.stt_ms.get_or_insert(now);
                }
                self.show_text(Outbound::Transcript {
                    text: text.clone(),
                    is_final: true,
                });
                let (kit, room, tx) = (
                    self.kit.clone(),
                    self.room_id.clone(),
                    self.internal_tx.clone(),
                );
                self.main.spawn(async move {
                    let decision = kit
                        .run_sync_hooks(
                            HookTrigger::OnTranscription,
                            &room,
                            HookPayload::Text(text.clone()),
                            None,
                        )
                        .await;
                    let out = match (decision.blocked, decision.payload) {
                        (Some(_), _) => None,
                        (None, HookPayload::Text(t)) => Some(t),
                        (None, _) => Some(text),
                    };
                    let _ = tx.send(Internal::Transcribed(out)).await;
                });
            }
            Some(Err(f)) => self.stt_failed(f.to_string()),
            None => self.stt_failed("the session closed".into()),
        }
    }

    /// The session failed: an `stt_error` event, and it is reopened
    /// after a backoff that doubles with each failure in a row (half a
    /// second up to 30 s), so a dead provider is not hammered.
    fn stt_failed(&mut self, error: String) {
        self.stt = None;
        self.stt_feed.session_lost();
        let provider = self.shared.stt.name().to_owned();
        tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, %provider, %error, "speech-to-text failed; reopening");
        self.kit.emit_framework_event(FrameworkEvent::SttError {
            session_id: self.session_id.clone(),
            provider,
            error,
        });
        self.reopen_stt();
    }

    fn reopen_stt(&mut self) {
        if self.stt_reopening {
            return;
        }
        self.stt_reopening = true;
        let delay = stt_backoff(self.stt_failures);
        self.stt_failures = self.stt_failures.saturating_add(1);
        let (stt, rate, tx) = (
            self.shared.stt.clone(),
            self.stt_rate,
            self.internal_tx.clone(),
        );
        self.main.spawn(async move {
            tokio::time::sleep(delay).await;
            let msg = match stt.open_session(rate).await {
                Ok(s) => Internal::SttReopened(s),
                Err(f) => Internal::SttReopenFailed(f),
            };
            let _ = tx.send(msg).await;
        });
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::SttReopened(s) => {
                self.stt_reopening = false;
                tracing::info!(target: "roomkit.voice.call", session_id = %self.session_id, "speech-to-text session reopened");
                self.stt = Some(s);
                let outcome = self.stt_feed.resume(self.stt.as_ref());
                self.stt_sent(outcome, "the utterance in progress");
            }
            Internal::SttReopenFailed(f) => {
                self.stt_reopening = false;
                let provider = self.shared.stt.name().to_owned();
                self.kit.emit_framework_event(FrameworkEvent::SttError {
                    session_id: self.session_id.clone(),
                    provider: provider.clone(),
                    error: f.to_string(),
                });
                if f.retryable {
                    tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, %provider, error = %f, "speech-to-text could not be reopened; trying again");
                    self.reopen_stt();
                } else {
                    tracing::error!(target: "roomkit.voice.call", session_id = %self.session_id, %provider, error = %f, "speech-to-text refused; the call goes on without it");
                }
            }
            Internal::Transcribed(None) => {
                tracing::info!(target: "roomkit.voice.call", session_id = %self.session_id, "ON_TRANSCRIPTION blocked an utterance");
            }
            Internal::Transcribed(Some(text)) => {
                if let Some(s) = self.segment {
                    let start = self.turn_heard.map_or(s.start_ms, |t| t.start_ms);
                    self.turn_heard = Some(Heard {
                        start_ms: start,
                        ..s
                    });
                }
                if self.hold_transcripts && self.agent_speaking {
                    self.held.push(text);
                    return;
                }
                push_words(&mut self.turn_text, &text);
                self.evaluate_turn();
            }
        }
    }

    fn evaluate_turn(&mut self) {
        if self.turn_text.is_empty() || self.user_speaking {
            return;
        }
        let silence = self.now_ms() - self.last_speech_end_ms;
        let Some(turn) = self.turn.as_mut() else {
            let text = std::mem::take(&mut self.turn_text);
            self.commit(text);
            return;
        };
        let decision = turn.evaluate(&TurnContext {
            transcript: self.turn_text.clone(),
            is_final: true,
            silence_duration_ms: silence,
            speech_duration_ms: self.last_speech_ms,
            conversation_history: None,
            metadata: Default::default(),
        });
        if decision.is_complete {
            self.fire(
                HookTrigger::OnTurnComplete,
                json!({"text": self.turn_text, "reason": decision.reason, "silence_ms": silence}),
            );
            let text = std::mem::take(&mut self.turn_text);
            self.commit(text);
        } else {
            self.fire(
                HookTrigger::OnTurnIncomplete,
                json!({"text": self.turn_text, "reason": decision.reason, "silence_ms": silence}),
            );
            let wait = decision
                .suggested_wait_ms
                .unwrap_or(300.0)
                .clamp(20.0, 5_000.0);
            self.turn_deadline = Some(Instant::now() + Duration::from_millis(wait as u64));
        }
    }

    /// Commits the caller's utterance to the room: the end of the turn.
    fn commit(&mut self, text: String) {
        let committed_ms = self.media_ms();
        let heard = self.turn_heard.take().unwrap_or(Heard {
            start_ms: self.last_speech_end_ms,
            end_ms: self.last_speech_end_ms,
            stt_ms: None,
        });
        if self.answering.is_some() {
            // The previous turn got no answer before this one.
            self.report_turn(None);
        }
        self.answering = Some(Answering {
            heard,
            committed_ms,
            reply: None,
        });
        self.kit
            .emit_framework_event(FrameworkEvent::VoiceTranscript {
                session_id: self.session_id.clone(),
                room_id: self.room_id.clone(),
                channel_id: self.shared.id.clone(),
                role: "user".into(),
                text: text.clone(),
                start_ms: heard.start_ms,
                end_ms: heard.end_ms,
                interrupted: false,
            });
        let mut message = InboundMessage::text(self.shared.id.clone(), self.sender.clone(), text);
        message.room_id = Some(self.room_id.clone());
        message
            .metadata
            .insert("voice_session_id".into(), json!(self.session_id));
        message
            .metadata
            .insert("call_id".into(), json!(self.call_id));
        message.metadata.insert(
            "media_time_ms".into(),
            json!(self.last_speech_end_ms.round()),
        );
        // Whole milliseconds, as call analytics reads them.
        message.metadata.insert(
            "speech_start_ms".into(),
            json!(heard.start_ms.max(0.0).round() as u64),
        );
        message.metadata.insert(
            "speech_end_ms".into(),
            json!(heard.end_ms.max(0.0).round() as u64),
        );
        let kit = self.kit.clone();
        let session = self.session_id.clone();
        self.main.spawn(async move {
            if let Err(e) = kit.process_inbound(message).await {
                tracing::warn!(target: "roomkit.voice.call", session_id = %session, error = %e, "the utterance could not be committed");
            }
        });
    }

    fn on_dtmf(&mut self, digit: char, source: &str) {
        let now = self.now_ms();
        // One press may arrive both in band and by signalling.
        if let Some((d, t)) = self.last_dtmf
            && d == digit
            && now - t < 250.0
        {
            return;
        }
        self.last_dtmf = Some((digit, now));
        tracing::debug!(target: "roomkit.voice.call", session_id = %self.session_id, %digit, source, "DTMF");
        self.fire(
            HookTrigger::OnDtmf,
            json!({"digit": digit.to_string(), "source": source}),
        );
        let mut data = Map::new();
        data.insert("digit".into(), json!(digit.to_string()));
        data.insert("source".into(), json!(source));
        data.insert("session_id".into(), json!(self.session_id));
        data.insert("t_ms".into(), json!(now));
        let mut source_ev = roomkit_core::model::EventSource::channel(
            self.shared.id.clone(),
            roomkit_core::model::ChannelType::Voice,
            roomkit_core::model::ChannelDirection::Inbound,
        );
        source_ev.external_id = Some(self.sender.clone());
        let mut event = RoomEvent::draft(
            source_ev,
            EventContent::System(SystemContent {
                code: "dtmf".into(),
                message: digit.to_string(),
                data,
            }),
        );
        event.room_id = self.room_id.clone();
        self.kit.publish_ephemeral(self.room_id.clone(), event);
    }

    // ---- speaking

    fn on_reply(
        &mut self,
        id: u64,
        mut sentences: mpsc::Receiver<String>,
        event_id: Option<EventId>,
        streamed: bool,
        answer: bool,
    ) {
        if answer
            && let Some(a) = self.answering.as_mut()
            && a.reply.is_none()
        {
            a.reply = Some(id);
        }
        let tts = self.shared.tts.clone();
        let voice = self.shared.settings.voice.clone();
        let tx = self.reply_tx.clone();
        let (kit, session, provider) = (
            self.kit.clone(),
            self.session_id.clone(),
            tts.name().to_owned(),
        );
        let handle = self.main.spawn(async move {
            use futures::StreamExt;
            while let Some(text) = sentences.recv().await {
                if tx
                    .send(ReplyMsg::Sentence {
                        reply: id,
                        text: text.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                match tts.synthesize_stream(&text, voice.as_deref()).await {
                    Ok(mut stream) => {
                        while let Some(chunk) = stream.next().await {
                            match chunk {
                                Ok(chunk) => {
                                    if tx.send(ReplyMsg::Audio { reply: id, chunk }).await.is_err()
                                    {
                                        return;
                                    }
                                }
                                Err(f) => {
                                    kit.emit_framework_event(FrameworkEvent::TtsError {
                                        session_id: session.clone(),
                                        provider: provider.clone(),
                                        error: f.to_string(),
                                    });
                                    let _ = tx
                                        .send(ReplyMsg::Failed {
                                            reply: id,
                                            error: f.to_string(),
                                        })
                                        .await;
                                    break;
                                }
                            }
                        }
                    }
                    Err(f) => {
                        kit.emit_framework_event(FrameworkEvent::TtsError {
                            session_id: session.clone(),
                            provider: provider.clone(),
                            error: f.to_string(),
                        });
                        let _ = tx
                            .send(ReplyMsg::Failed {
                                reply: id,
                                error: f.to_string(),
                            })
                            .await;
                    }
                }
                if tx.send(ReplyMsg::SentenceDone { reply: id }).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(ReplyMsg::Done { reply: id }).await;
        });
        self.replies.push_back(Reply {
            id,
            event_id,
            streamed,
            sentences: Vec::new(),
            synth_done: false,
            abort: handle.abort_handle(),
            started: false,
            answer,
            marks: ReplyMarks::default(),
            reported: false,
        });
    }

    fn on_reply_stored(&mut self, id: u64, event_id: EventId) {
        if let Some(spoken) = self.pending_cuts.remove(&id) {
            self.store_cut(event_id, spoken);
        } else if let Some(r) = self.replies.iter_mut().find(|r| r.id == id) {
            r.event_id = Some(event_id);
        }
    }

    fn on_reply_msg(&mut self, msg: ReplyMsg) {
        let internal_rate = self.internal_rate;
        let reply_id = match &msg {
            ReplyMsg::Sentence { reply, .. }
            | ReplyMsg::Audio { reply, .. }
            | ReplyMsg::SentenceDone { reply }
            | ReplyMsg::Done { reply }
            | ReplyMsg::Failed { reply, .. } => *reply,
        };
        // Audio of a cancelled reply is dropped here.
        let Some(idx) = self.replies.iter().position(|r| r.id == reply_id) else {
            return;
        };
        let now = self.media_ms();
        match msg {
            ReplyMsg::Sentence { text, .. } => {
                self.replies[idx].marks.first_text_ms.get_or_insert(now);
                self.show_text(Outbound::AgentText(text.clone()));
                self.replies[idx].sentences.push(Sentence {
                    text,
                    ..Sentence::default()
                });
            }
            ReplyMsg::Audio { chunk, .. } => {
                self.replies[idx].marks.first_audio_ms.get_or_insert(now);
                let samples = if chunk.sample_rate == internal_rate {
                    chunk.samples
                } else {
                    self.resample_tts(reply_id, chunk.sample_rate, chunk.samples, false)
                };
                let Some(s) = self.replies[idx].sentences.last_mut() else {
                    return;
                };
                for m in &chunk.marks {
                    let pos = u64::from(m.audio_end_ms) * u64::from(internal_rate) / 1000;
                    s.marks.push((pos, m.text_end.min(s.text.len())));
                }
                s.total += samples.len() as u64;
                s.audio.extend(samples);
            }
            ReplyMsg::SentenceDone { .. } => {
                let (pending_reply, rate, _) = self.tts_pending;
                let tail = if pending_reply == reply_id && rate != 0 {
                    self.resample_tts(reply_id, rate, Vec::new(), true)
                } else {
                    Vec::new()
                };
                if let Some(s) = self.replies[idx].sentences.last_mut() {
                    s.total += tail.len() as u64;
                    s.audio.extend(tail);
                    s.done = true;
                }
            }
            ReplyMsg::Failed { error, .. } => {
                tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, %error, "text-to-speech failed for a sentence");
            }
            ReplyMsg::Done { .. } => self.replies[idx].synth_done = true,
        }
    }

    /// Resamples TTS audio to the internal rate in whole frames of a fixed
    /// length (the resampler takes whole milliseconds, and TTS chunks come
    /// in any length); the rest waits for the next chunk, or, at the end of
    /// a sentence (`flush`), is padded with silence.
    fn resample_tts(&mut self, reply: u64, rate: u32, samples: Vec<i16>, flush: bool) -> Vec<i16> {
        if self.tts_pending.0 != reply || self.tts_pending.1 != rate {
            self.tts_pending = (reply, rate, Vec::new());
        }
        self.tts_pending.2.extend(samples);
        // The shortest of 20, 40 or 100 ms, or 1 s, that is a whole number of samples.
        let step = [20u32, 40, 100, 1000]
            .into_iter()
            .find(|ms| (rate * ms).is_multiple_of(1000))
            .map_or(rate as usize, |ms| (rate * ms / 1000) as usize)
            .max(1);
        if flush && !self.tts_pending.2.is_empty() {
            let len = self.tts_pending.2.len().div_ceil(step) * step;
            self.tts_pending.2.resize(len, 0);
        }
        let whole = self.tts_pending.2.len() / step * step;
        let input: Vec<i16> = self.tts_pending.2.drain(..whole).collect();
        let internal_rate = self.internal_rate;
        let r = self
            .tts_resampler
            .get_or_insert_with(|| RubatoResampler::new(AudioFormat::pcm_mono(internal_rate)));
        let mut out =
            Vec::with_capacity(input.len() * internal_rate as usize / rate.max(1) as usize + 16);
        for piece in input.chunks(step) {
            let mut frame = AudioFrame {
                samples: piece.to_vec(),
                sample_rate: rate,
                channels: 1,
                timestamp_ms: None,
                metadata: Default::default(),
            };
            if let Err(e) = r.process(&mut frame, "tts") {
                tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, error = %e, "TTS audio could not be resampled");
                return out;
            }
            out.extend_from_slice(&frame.samples);
        }
        out
    }

    /// The send clock: one outbound frame per tick while a reply plays.
    fn on_tick(&mut self) {
        let n = self.frame_len;
        loop {
            let Some(reply) = self.replies.front_mut() else {
                if self.agent_speaking {
                    self.stop_speaking();
                }
                return;
            };
            if reply.finished() {
                let Some(done) = self.replies.pop_front() else {
                    return;
                };
                self.reply_played(done);
                continue;
            }
            let queued = reply.queued();
            let complete = reply.synth_done && reply.sentences.iter().all(|s| s.done);
            if queued == 0 || (queued < n && !complete) {
                return;
            }
            let mut samples = Vec::with_capacity(n);
            for s in &mut reply.sentences {
                while samples.len() < n {
                    let Some(x) = s.audio.pop_front() else { break };
                    samples.push(x);
                    s.played += 1;
                }
                if samples.len() == n {
                    break;
                }
            }
            samples.resize(n, 0);
            reply.started = true;
            let (id, first) = (reply.id, reply.marks.first_sent_ms.is_none());
            if !self.agent_speaking {
                self.agent_speaking = true;
                self.controller.set_agent_speaking(true);
            }
            let now = self.media_ms();
            if self.send_frame(samples) {
                let frame_ms = n as f64 * 1000.0 / f64::from(self.internal_rate);
                if let Some(r) = self.replies.front_mut() {
                    r.marks.first_sent_ms.get_or_insert(now);
                    r.marks.sent_end_ms = now + frame_ms;
                }
                if first && self.answering.is_some_and(|a| a.reply == Some(id)) {
                    let marks = self.replies.front().map(|r| r.marks);
                    self.report_turn(marks);
                }
            }
            return;
        }
    }

    /// Reports the latency figures of the committed turn (the one
    /// `answering`): with its answer's marks, or with those it has when the
    /// turn ends without its answer playing.
    fn report_turn(&mut self, answer: Option<ReplyMarks>) {
        let Some(a) = self.answering.take() else {
            return;
        };
        let end = a.heard.end_ms;
        let since = |t: f64, from: f64| (t - from).max(0.0);
        let m = answer.unwrap_or_default();
        let (text, audio, sent) = (m.first_text_ms, m.first_audio_ms, m.first_sent_ms);
        let eou_delay_ms = since(a.committed_ms, end);
        let stt_latency_ms = a.heard.stt_ms.map(|t| since(t, end));
        let llm_ttft_ms = text.map(|t| since(t, a.committed_ms));
        let tts_ttfb_ms = text.zip(audio).map(|(t, au)| since(au, t));
        let voice_to_voice_ms = sent.map(|t| since(t, end));
        tracing::debug!(target: "roomkit.voice.call", session_id = %self.session_id, speech_end_ms = end, eou_delay_ms, ?stt_latency_ms, ?llm_ttft_ms, ?tts_ttfb_ms, ?voice_to_voice_ms, "turn latency");
        self.kit
            .emit_framework_event(FrameworkEvent::VoiceTurnMetrics {
                session_id: self.session_id.clone(),
                room_id: self.room_id.clone(),
                channel_id: self.shared.id.clone(),
                speech_end_ms: end,
                eou_delay_ms,
                stt_latency_ms,
                llm_ttft_ms,
                tts_ttfb_ms,
                voice_to_voice_ms,
            });
    }

    /// A reply that was heard (in part or whole) as a `voice_transcript`.
    fn report_agent(&self, marks: ReplyMarks, text: String, interrupted: bool) {
        let Some(start_ms) = marks.first_sent_ms else {
            return;
        };
        if text.is_empty() {
            return;
        }
        self.kit
            .emit_framework_event(FrameworkEvent::VoiceTranscript {
                session_id: self.session_id.clone(),
                room_id: self.room_id.clone(),
                channel_id: self.shared.id.clone(),
                role: "agent".into(),
                text,
                start_ms,
                end_ms: marks.sent_end_ms.max(start_ms),
                interrupted,
            });
    }

    /// The committed turn's answer is going away unplayed (or will never
    /// play more than it did): its figures are reported now.
    fn answer_gone(&mut self, reply: &Reply) {
        if reply.answer && self.answering.is_some_and(|a| a.reply == Some(reply.id)) {
            self.report_turn(Some(reply.marks));
        }
    }

    /// Whether a queued reply may send its first frame at once: nothing
    /// is playing and no frame went out in the last frame period, so the
    /// far end still gets at most one frame per period.
    fn can_start_now(&self, frame: Duration) -> bool {
        !self.agent_speaking
            && !self.replies.is_empty()
            && self.last_sent_at.is_none_or(|t| t.elapsed() >= frame)
    }

    /// Sends one frame; `false` when the pipeline dropped it.
    fn send_frame(&mut self, samples: Vec<i16>) -> bool {
        // Agent frames sit on the caller's media clock where they are sent
        // (after the previous one when a burst catches up), so recordings
        // put the answer where the caller heard it.
        let at = self.media_ms().max(self.agent_end_ms);
        self.agent_end_ms =
            at + samples.len() as f64 * 1000.0 / f64::from(self.internal_rate.max(1));
        let mut frame = AudioFrame {
            samples,
            sample_rate: self.internal_rate,
            channels: 1,
            timestamp_ms: Some(at),
            metadata: Default::default(),
        };
        if let Err(e) = self.pipeline.process_outbound(&self.session_id, &mut frame) {
            tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, error = %e, "outbound frame rejected by the pipeline");
            return false;
        }
        if frame.samples.is_empty() {
            return false;
        }
        self.sent += frame.samples.len() as u64;
        let (kit, room) = (&self.kit, &self.room_id);
        if let Some(level_db) = self.output_level.feed(at, &frame.samples, || {
            kit.has_hooks(HookTrigger::OnOutputAudioLevel, room)
        }) {
            self.fire(
                HookTrigger::OnOutputAudioLevel,
                json!({"level_db": level_db, "t_ms": at}),
            );
        }
        self.last_sent_at = Some(Instant::now());
        if self.out.try_send(Outbound::Audio(frame.samples)).is_err() {
            TransportStats::bump(&self.stats.dropped_outbound);
        }
        true
    }

    fn reply_played(&mut self, reply: Reply) {
        let _ = self
            .out
            .try_send(Outbound::Mark(format!("reply-{}", reply.id)));
        let text: Vec<&str> = reply.sentences.iter().map(|s| s.text.as_str()).collect();
        let text = text.join(" ");
        self.answer_gone(&reply);
        if !reply.reported {
            self.report_agent(reply.marks, text.clone(), false);
        }
        self.fire(
            HookTrigger::AfterTts,
            json!({"text": text, "reply_event_id": reply.event_id.as_ref().map(EventId::as_str), "streamed": reply.streamed}),
        );
    }

    fn stop_speaking(&mut self) {
        self.agent_speaking = false;
        self.controller.set_agent_speaking(false);
        self.hold_transcripts = false;
        for text in std::mem::take(&mut self.held) {
            push_words(&mut self.turn_text, &text);
        }
        self.evaluate_turn();
    }

    /// Barge-in: nothing more is sent from the next tick on, the far end's
    /// queue is flushed, synthesis is cancelled and the replies are stored
    /// as heard: the current one cut where it stopped, the ones queued
    /// behind it (never started) as heard not at all. Without `flush_tts`
    /// nothing is discarded: the replies play on and keep their full text.
    fn interrupt(&mut self, flush_tts: bool, keep_partial_transcript: bool) {
        let Some(current) = self.replies.front() else {
            return;
        };
        let spoken = current.spoken_text();
        let (reply_id, played, marks, reported) = (
            current.id,
            current.sentences.iter().map(|s| s.played).sum::<u64>(),
            current.marks,
            current.reported,
        );
        let played_ms = played as f64 * 1000.0 / f64::from(self.internal_rate);
        self.fire(
            HookTrigger::OnBargeIn,
            json!({"spoken_text": spoken, "played_ms": played_ms}),
        );
        if !flush_tts {
            tracing::info!(target: "roomkit.voice.call", session_id = %self.session_id, reply = reply_id, played_ms, "barge-in: playback goes on (flush_partial_tts is off)");
            return;
        }
        if !reported {
            self.report_agent(marks, spoken.clone(), true);
        }
        let cancelled: Vec<Reply> = self.replies.drain(..).collect();
        for r in &cancelled {
            r.abort.abort();
            self.answer_gone(r);
        }
        if self.can_clear {
            let _ = self.out.try_send(Outbound::Clear);
        }
        self.agent_speaking = false;
        self.controller.set_agent_speaking(false);
        tracing::info!(target: "roomkit.voice.call", session_id = %self.session_id, reply = reply_id, played_ms, queued = cancelled.len() - 1, "barge-in: playback stopped");
        self.fire(
            HookTrigger::OnTtsCancelled,
            json!({"reason": "barge_in", "spoken_text": spoken, "played_ms": played_ms}),
        );
        if !keep_partial_transcript {
            return;
        }
        for (i, r) in cancelled.into_iter().enumerate() {
            // Only the first was playing; the rest were never heard.
            let heard = if i == 0 {
                spoken.clone()
            } else {
                String::new()
            };
            match r.event_id {
                Some(id) => self.store_cut(id, heard),
                None => {
                    self.pending_cuts.insert(r.id, heard);
                }
            }
        }
    }

    /// Rewrites the stored reply to what the caller heard (decision in
    /// `docs/decisions.md`): content cut, `interrupted`, `played_percentage`
    /// and the `full_text` in metadata.
    fn store_cut(&self, event_id: EventId, spoken: String) {
        let (kit, room, session) = (
            self.kit.clone(),
            self.room_id.clone(),
            self.session_id.clone(),
        );
        self.main.spawn(async move {
            let Ok(event) = kit.get_event(&room, &event_id).await else {
                return;
            };
            let full = event.content.plain_text();
            let percentage = if full.is_empty() {
                0.0
            } else {
                (spoken.chars().count() as f64 * 100.0 / full.chars().count() as f64).min(100.0)
            };
            let mut metadata = event.metadata.clone();
            metadata.insert("interrupted".into(), json!(true));
            metadata.insert(
                "played_percentage".into(),
                json!((percentage * 10.0).round() / 10.0),
            );
            metadata.insert("full_text".into(), json!(full));
            metadata.insert("voice_session_id".into(), json!(session));
            let update = EventUpdate {
                content: Some(EventContent::text(spoken)),
                source: None,
                metadata: Some(metadata),
            };
            if let Err(e) = kit.update_event(&room, &event_id, update).await {
                tracing::warn!(target: "roomkit.voice.call", session_id = %session, error = %e, "the interrupted reply could not be stored as heard");
            }
        });
    }

    fn finish(mut self, reason: &str) {
        // A reply cut by the end of the call is reported as heard.
        if let Some(r) = self.replies.front()
            && !r.reported
        {
            self.report_agent(r.marks, r.spoken_text(), true);
        }
        let replies: Vec<Reply> = self.replies.drain(..).collect();
        for r in replies {
            r.abort.abort();
            self.answer_gone(&r);
        }
        self.report_turn(None);
        self.stt = None;
        let mut events = Vec::new();
        let recording = match self.pipeline.end_stream(&self.session_id, &mut events) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: "roomkit.voice.call", session_id = %self.session_id, error = %e, "closing the call's audio streams failed");
                None
            }
        };
        let duration_ms = self.clock * 1000 / u64::from(self.transport_rate);
        if self.recording_sinks > 0 || recording.is_some() {
            let mut payload = json!({
                "call_id": self.call_id,
                "sinks": self.recording_sinks,
                "duration_ms": duration_ms,
                "reason": reason,
            });
            if let (Some(r), Some(obj)) = (recording, payload.as_object_mut()) {
                obj.insert("recording_id".into(), json!(r.recording_id));
                obj.insert("urls".into(), json!(r.urls));
                obj.insert("format".into(), json!(r.format));
            }
            self.fire(HookTrigger::OnRecordingStopped, payload);
        }
        let packets_lost = TransportStats::get(&self.stats.packets_lost);
        let jitter_us = TransportStats::get(&self.stats.jitter_us);
        let rtt_us = TransportStats::get(&self.stats.rtt_us);
        if NETWORK_MEASURED.contains(&self.transport_name.as_str()) {
            self.kit
                .emit_framework_event(FrameworkEvent::VoiceNetworkStats {
                    session_id: self.session_id.clone(),
                    room_id: self.room_id.clone(),
                    packets_lost,
                    jitter_ms: jitter_us as f64 / 1000.0,
                    rtt_ms: (rtt_us > 0).then_some(rtt_us as f64 / 1000.0),
                });
        }
        self.kit
            .emit_framework_event(FrameworkEvent::VoiceSessionEnded {
                session_id: self.session_id.clone(),
                room_id: self.room_id.clone(),
                duration_ms,
            });
        tracing::info!(target: "roomkit.voice.call", session_id = %self.session_id, reason, duration_ms,
            frames_in = TransportStats::get(&self.stats.frames_in),
            bad_messages = TransportStats::get(&self.stats.bad_messages),
            dropped_outbound = TransportStats::get(&self.stats.dropped_outbound),
            dropped_stt = self.stt_feed.dropped(),
            sent_samples = self.sent,
            packets_lost,
            jitter_us,
            rtt_us,
            "call ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_reported_once_per_interval_and_only_while_a_hook_listens() {
        let loud = vec![16384i16; 160];
        let mut m = LevelMeter::default();
        let mut reports = Vec::new();
        // No hook: nothing summed, nothing reported.
        for i in 0..20 {
            assert_eq!(m.feed(f64::from(i) * 20.0, &loud, || false), None);
        }
        for i in 20..100 {
            if let Some(db) = m.feed(f64::from(i) * 20.0, &loud, || true) {
                reports.push((i, db));
            }
        }
        // 1.6 s of 20 ms frames: one report per 100 ms after the first look-up.
        assert_eq!(reports.len(), 15, "{reports:?}");
        assert!(reports.windows(2).all(|w| w[1].0 - w[0].0 == 5));
        // Half of full scale is -6 dBFS.
        assert!(reports.iter().all(|&(_, db)| (db + 6.0).abs() < 0.1));
        assert_eq!(level_db(0.0, 160), LEVEL_FLOOR_DB);
    }

    #[test]
    fn a_reading_between_frames_adds_the_time_since_the_last_one_up_to_a_frame() {
        let ms = Duration::from_millis;
        assert_eq!(sub_frame_ms(1000.0, None, 20.0), 1000.0);
        assert_eq!(sub_frame_ms(1000.0, Some(ms(7)), 20.0), 1007.0);
        // A late frame does not let the reading run past it.
        assert_eq!(sub_frame_ms(1000.0, Some(ms(55)), 20.0), 1020.0);
        // Monotonic across a frame's arrival: any reading before the frame
        // is at most what the count says once it has arrived.
        for before in [0, 5, 19, 20, 400] {
            let earlier = sub_frame_ms(1000.0, Some(ms(before)), 20.0);
            assert!(earlier <= sub_frame_ms(1020.0, Some(ms(0)), 20.0));
        }
    }
}
