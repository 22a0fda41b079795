//! What a voice channel shares with its running calls: the channel's
//! settings and providers, the call taps, the table of running calls and
//! the commands a call takes. Both the channel (`channel`) and each call's
//! task (`session`) use it; neither needs the other's internals.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use roomkit_audio::AudioPipelineConfig;
use roomkit_audio::turn::{HeuristicTurnConfig, InterruptionConfig};
use roomkit_core::RoomKit;
use roomkit_core::model::{ChannelId, EventId, RoomId};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::splitter::DEFAULT_MIN_CHUNK_CHARS;
use crate::stt::SttProvider;
use crate::tts::TtsProvider;

/// Default of [`VoiceSettings::stt_timeout_ms`].
pub const DEFAULT_STT_TIMEOUT_MS: u64 = 20_000;
/// Default of [`VoiceSettings::tts_timeout_ms`].
pub const DEFAULT_TTS_TIMEOUT_MS: u64 = 20_000;

/// How a voice channel treats its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceSettings {
    /// The audio pipeline's stages (as in `roomkit audio process`).
    pub pipeline: AudioPipelineConfig,
    /// Barge-in; the pipeline's `interruption` when absent.
    pub interruption: Option<InterruptionConfig>,
    /// The heuristic turn detector; without it every final transcript is
    /// a turn (VAD-only).
    pub turn: Option<HeuristicTurnConfig>,
    /// The TTS voice.
    pub voice: Option<String>,
    /// Shortest sentence handed to TTS.
    pub min_chunk_chars: usize,
    /// Outbound frame length in milliseconds.
    pub frame_ms: u32,
    /// Longest wait for the final result of an utterance after the call
    /// asked for it, in milliseconds: a session that lets it pass is
    /// treated as failed (an `stt_error` event) and reopened.
    pub stt_timeout_ms: u64,
    /// Longest wait for a sentence's synthesis to start, and between two
    /// pieces of its audio, in milliseconds: the sentence is then skipped
    /// (a `tts_error` event).
    pub tts_timeout_ms: u64,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self {
            pipeline: AudioPipelineConfig::default(),
            interruption: None,
            turn: None,
            voice: None,
            min_chunk_chars: DEFAULT_MIN_CHUNK_CHARS,
            frame_ms: 20,
            stt_timeout_ms: DEFAULT_STT_TIMEOUT_MS,
            tts_timeout_ms: DEFAULT_TTS_TIMEOUT_MS,
        }
    }
}

/// Sees every call a voice channel runs, to tap its audio (call analytics,
/// recording): the sink gets the caller's frames after the resampler and
/// the agent's frames as sent (so cut where a barge-in cut them), both on
/// the call's media clock.
pub trait CallTap: Send + Sync + 'static {
    /// A call became active in `room_id`; return a sink for its audio, or
    /// `None` to leave it alone.
    fn call_started(
        &self,
        session_id: &str,
        room_id: &RoomId,
        info: &crate::backend::CallInfo,
    ) -> Option<Arc<dyn roomkit_audio::RecordingSink>>;
}

pub(crate) struct CallEntry {
    pub room_id: Option<RoomId>,
    pub commands: mpsc::Sender<CallCommand>,
    /// The transport's id of the call (its traces name it).
    pub call_id: String,
}

pub(crate) struct Shared {
    pub id: ChannelId,
    pub settings: VoiceSettings,
    pub stt: Arc<dyn SttProvider>,
    pub tts: Arc<dyn TtsProvider>,
    pub kit: RwLock<Option<RoomKit>>,
    pub taps: RwLock<Vec<Arc<dyn CallTap>>>,
    pub calls: Mutex<HashMap<String, CallEntry>>,
    pub next_reply: AtomicU64,
    pub next_session: AtomicU64,
    pub pending_traces: Mutex<crate::trace::PendingTraces>,
}

impl Shared {
    pub fn kit(&self) -> Option<RoomKit> {
        self.kit.read().ok().and_then(|k| k.clone())
    }

    pub fn set_room(&self, session_id: &str, room_id: RoomId) {
        let mut call_id = None;
        if let Ok(mut calls) = self.calls.lock()
            && let Some(c) = calls.get_mut(session_id)
        {
            c.room_id = Some(room_id.clone());
            call_id = Some(c.call_id.clone());
        }
        // Replay what the transport traced before the call had a room.
        let Some(call_id) = call_id else { return };
        let pending = self
            .pending_traces
            .lock()
            .map(|mut p| p.take(&call_id))
            .unwrap_or_default();
        for mut trace in pending {
            trace.session_id = Some(session_id.to_owned());
            trace.room_id = Some(room_id.to_string());
            self.fire_trace(&room_id, trace);
        }
    }

    /// Fires `on_protocol_trace` hooks of `room_id` with a trace.
    pub fn fire_trace(&self, room_id: &RoomId, trace: crate::trace::ProtocolTrace) {
        let Some(kit) = self.kit() else { return };
        if !kit.has_hooks(roomkit_core::model::HookTrigger::OnProtocolTrace, room_id) {
            return;
        }
        let payload = serde_json::to_value(&trace).unwrap_or_default();
        kit.spawn_async_hooks(
            roomkit_core::model::HookTrigger::OnProtocolTrace,
            room_id,
            roomkit_core::HookPayload::Json(payload),
            None,
        );
    }

    /// The session and room of the call a transport knows as `call_id`.
    pub fn call_by_transport_id(&self, call_id: &str) -> Option<(String, Option<RoomId>)> {
        let calls = self.calls.lock().ok()?;
        calls
            .iter()
            .find(|(_, c)| c.call_id == call_id)
            .map(|(session, c)| (session.clone(), c.room_id.clone()))
    }

    pub fn remove_call(&self, session_id: &str) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.remove(session_id);
        }
    }

    pub fn calls_in(&self, room_id: &RoomId) -> Vec<mpsc::Sender<CallCommand>> {
        self.calls
            .lock()
            .map(|calls| {
                calls
                    .values()
                    .filter(|c| c.room_id.as_ref() == Some(room_id))
                    .map(|c| c.commands.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What the channel asks of a running call.
#[derive(Debug)]
pub(crate) enum CallCommand {
    /// Speak a reply: its sentences arrive on `sentences` in order.
    Reply {
        id: u64,
        sentences: mpsc::Receiver<String>,
        event_id: Option<EventId>,
        streamed: bool,
        /// An AI channel's response to a message: it may answer the
        /// caller's pending turn (its latency figures count from that
        /// turn). Hook injections and people typing are never answers.
        answer: bool,
    },
    /// The streamed reply `id` was stored as `event_id`.
    ReplyStored { id: u64, event_id: EventId },
    /// End the call.
    HangUp,
    /// Hand the call to `target` (blind transfer).
    Transfer { target: String },
}
