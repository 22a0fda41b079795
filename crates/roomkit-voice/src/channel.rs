//! The VoiceChannel (RFC §12.2, A.10): a transport channel whose messages
//! are spoken and heard.
//!
//! Calls come from a [`VoiceBackend`] (or any transport that builds a
//! [`Call`]); each runs on its own task (see `session`), which owns the
//! audio pipeline, the speech-to-text session, the turn detector and the
//! playback queue. What the room sends to this channel — through
//! [`Channel::deliver`] or, for a streamed AI reply, live through
//! [`Channel::deliver_stream`] — is split into sentences and spoken on every
//! call of that room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use futures::StreamExt;
use roomkit_core::hooks::HookPayload;
use roomkit_core::model::{
    ChannelBinding, ChannelCapabilities, ChannelId, ChannelMediaType, ChannelType, EventContent,
    EventId, HookTrigger, InboundMessage, RoomEvent, RoomId,
};
use roomkit_core::{Channel, ChannelError, ChannelOutput, RoomContext, RoomKit, TextStream};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Call, MediaSocket, VoiceBackend};
use crate::calls::{CallCommand, CallEntry, Shared};
pub use crate::calls::{CallTap, DEFAULT_STT_TIMEOUT_MS, DEFAULT_TTS_TIMEOUT_MS, VoiceSettings};
use crate::error::VoiceError;
use crate::session;
use crate::splitter::SentenceSplitter;
use crate::stt::SttProvider;
use crate::tts::TtsProvider;

/// A call running on a voice channel.
#[derive(Debug)]
pub struct CallHandle {
    /// The voice session's id.
    pub session_id: String,
    ended: oneshot::Receiver<()>,
}

impl CallHandle {
    /// Waits until the call has ended and its session is closed.
    pub async fn ended(self) {
        let _ = self.ended.await;
    }
}

/// The voice channel.
#[derive(Clone)]
pub struct VoiceChannel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for VoiceChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceChannel")
            .field("id", &self.shared.id)
            .field("stt", &self.shared.stt.name())
            .field("tts", &self.shared.tts.name())
            .finish_non_exhaustive()
    }
}

impl VoiceChannel {
    /// A voice channel speaking through `tts` and listening through `stt`.
    ///
    /// # Errors
    /// [`VoiceError::Config`] for an unusable frame length.
    pub fn new(
        id: impl Into<ChannelId>,
        settings: VoiceSettings,
        stt: Arc<dyn SttProvider>,
        tts: Arc<dyn TtsProvider>,
    ) -> Result<Self, VoiceError> {
        if !(10..=60).contains(&settings.frame_ms) || !settings.frame_ms.is_multiple_of(10) {
            return Err(VoiceError::Config(format!(
                "frame_ms must be 10, 20, 30, 40, 50 or 60, not {}",
                settings.frame_ms
            )));
        }
        for (key, ms) in [
            ("stt_timeout_ms", settings.stt_timeout_ms),
            ("tts_timeout_ms", settings.tts_timeout_ms),
        ] {
            if ms == 0 {
                return Err(VoiceError::Config(format!("{key} must be more than 0")));
            }
        }
        let tts: Arc<dyn TtsProvider> = Arc::new(crate::guard::GuardedTts::new(
            tts,
            std::time::Duration::from_millis(settings.tts_timeout_ms),
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                id: id.into(),
                settings,
                stt,
                tts,
                kit: RwLock::new(None),
                taps: RwLock::new(Vec::new()),
                calls: Mutex::new(HashMap::new()),
                next_reply: AtomicU64::new(1),
                next_session: AtomicU64::new(1),
                pending_traces: Mutex::new(crate::trace::PendingTraces::default()),
            }),
        })
    }

    /// Gives the channel the engine its calls commit utterances to. Call it
    /// once the channel is registered; [`Channel::close`] releases it.
    pub fn attach_kit(&self, kit: &RoomKit) {
        if let Ok(mut k) = self.shared.kit.write() {
            *k = Some(kit.clone());
        }
    }

    /// Adds a tap that sees the audio of every call started from now on.
    pub fn add_call_tap(&self, tap: Arc<dyn CallTap>) {
        if let Ok(mut t) = self.shared.taps.write() {
            t.push(tap);
        }
    }

    /// Routes a transport's protocol trace (RFC §15.6) to the
    /// `on_protocol_trace` hooks of its call's room; `call_id` is the
    /// transport's id of the call. A trace of a call that has no room yet
    /// is kept and replayed when the room is known.
    pub fn emit_trace(&self, call_id: &str, mut trace: crate::trace::ProtocolTrace) {
        trace
            .metadata
            .entry("call_id")
            .or_insert_with(|| serde_json::Value::String(call_id.to_owned()));
        match self.shared.call_by_transport_id(call_id) {
            Some((session_id, Some(room_id))) => {
                trace.session_id = Some(session_id);
                trace.room_id = Some(room_id.to_string());
                self.shared.fire_trace(&room_id, trace);
            }
            Some((session_id, None)) => {
                trace.session_id = Some(session_id);
                if let Ok(mut p) = self.shared.pending_traces.lock() {
                    p.keep(call_id, trace);
                }
            }
            None => {
                if let Ok(mut p) = self.shared.pending_traces.lock() {
                    p.keep(call_id, trace);
                }
            }
        }
    }

    /// Hands a running call to `target` (blind transfer, on transports
    /// that can: SIP REFER); `false` when no call has that session id.
    pub async fn transfer(&self, session_id: &str, target: &str) -> bool {
        let commands = self
            .shared
            .calls
            .lock()
            .ok()
            .and_then(|calls| calls.get(session_id).map(|c| c.commands.clone()));
        match commands {
            Some(tx) => tx
                .send(CallCommand::Transfer {
                    target: target.to_owned(),
                })
                .await
                .is_ok(),
            None => false,
        }
    }

    /// Hands the call a transport knows as `call_id` to `target` (blind
    /// transfer); `false` when no running call has that id.
    pub async fn transfer_by_call_id(&self, call_id: &str, target: &str) -> bool {
        match self.shared.call_by_transport_id(call_id) {
            Some((session_id, _)) => self.transfer(&session_id, target).await,
            None => false,
        }
    }

    /// Ends a running call; `false` when no call has that session id.
    pub async fn hang_up(&self, session_id: &str) -> bool {
        let commands = self
            .shared
            .calls
            .lock()
            .ok()
            .and_then(|calls| calls.get(session_id).map(|c| c.commands.clone()));
        match commands {
            Some(tx) => tx.send(CallCommand::HangUp).await.is_ok(),
            None => false,
        }
    }

    /// The session ids of the running calls.
    pub fn call_sessions(&self) -> Vec<String> {
        self.shared
            .calls
            .lock()
            .map(|calls| calls.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// How many calls are running.
    pub fn active_calls(&self) -> usize {
        self.shared.calls.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Accepts a call over a media socket through `backend` and runs it.
    ///
    /// # Errors
    /// The transport's handshake errors.
    pub async fn accept(
        &self,
        backend: &dyn VoiceBackend,
        socket: MediaSocket,
    ) -> Result<CallHandle, VoiceError> {
        let call = backend.accept(socket).await?;
        self.start_call(call)
    }

    /// Runs a call a transport handed over. Must be called from within a
    /// Tokio runtime: provider and engine work runs on it, while the call's
    /// own task (which owns the audio pipeline, whose stages are not `Send`)
    /// runs as a local task of one of the process's call threads (one per
    /// core, the one with the fewest calls).
    ///
    /// # Errors
    /// [`VoiceError::Transport`] when the call threads cannot start.
    pub fn start_call(&self, mut call: Call) -> Result<CallHandle, VoiceError> {
        let main = tokio::runtime::Handle::try_current()
            .map_err(|_| VoiceError::Transport("no Tokio runtime to run the call on".into()))?;
        let n = self.shared.next_session.fetch_add(1, Ordering::Relaxed);
        let session_id = format!("vs-{}-{n}", call.info.stream_id);
        let (tx, rx) = mpsc::channel(64);
        if let Ok(mut calls) = self.shared.calls.lock() {
            calls.insert(
                session_id.clone(),
                CallEntry {
                    room_id: None,
                    commands: tx,
                    call_id: call.info.call_id.clone(),
                },
            );
        }
        let (done_tx, done_rx) = oneshot::channel();
        let shared = self.shared.clone();
        let sid = session_id.clone();
        let media = call.media.take();
        let job: crate::pool::CallJob = Box::new(move || {
            // The transport's media work runs on this thread, beside the call.
            if let Some(media) = media {
                tokio::task::spawn_local((media.0)());
            }
            Box::pin(async move {
                session::run_call(shared.clone(), main, call, sid.clone(), rx).await;
                shared.remove_call(&sid);
                let _ = done_tx.send(());
            })
        });
        if let Err(e) = crate::pool::submit(job) {
            self.shared.remove_call(&session_id);
            return Err(VoiceError::Transport(format!("cannot start the call: {e}")));
        }
        Ok(CallHandle {
            session_id,
            ended: done_rx,
        })
    }

    fn reply_id(&self) -> u64 {
        self.shared.next_reply.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a reply's sentences to every call of the room; returns the
    /// senders (one per call) and the reply id.
    async fn open_reply(
        &self,
        room_id: &RoomId,
        event_id: Option<EventId>,
        streamed: bool,
        answer: bool,
    ) -> (u64, Vec<(mpsc::Sender<CallCommand>, mpsc::Sender<String>)>) {
        let id = self.reply_id();
        let mut out = Vec::new();
        for call in self.shared.calls_in(room_id) {
            let (tx, rx) = mpsc::channel(64);
            let command = CallCommand::Reply {
                id,
                sentences: rx,
                event_id: event_id.clone(),
                streamed,
                answer,
            };
            if call.send(command).await.is_ok() {
                out.push((call, tx));
            }
        }
        (id, out)
    }
}

#[async_trait]
impl Channel for VoiceChannel {
    fn id(&self) -> &ChannelId {
        &self.shared.id
    }

    fn channel_type(&self) -> ChannelType {
        ChannelType::Voice
    }

    /// The provider that speaks: replies delivered to the call are
    /// synthesized by the TTS provider.
    fn provider_name(&self) -> Option<&str> {
        Some(self.shared.tts.name())
    }

    /// What the caller says is heard by the STT provider, so a committed
    /// utterance names it as its `source.provider`; a session notice
    /// (`session_started`) names the transport that carried the call.
    async fn handle_inbound(
        &self,
        message: &InboundMessage,
        _context: &RoomContext,
    ) -> Result<RoomEvent, ChannelError> {
        let transport = match &message.content {
            EventContent::System(_) => message.metadata.get("transport").and_then(|t| t.as_str()),
            _ => None,
        };
        let provider = transport.unwrap_or_else(|| self.shared.stt.name());
        Ok(roomkit_core::inbound_event(
            self.shared.id.clone(),
            ChannelType::Voice,
            Some(provider),
            message,
        ))
    }

    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities {
            media_types: vec![ChannelMediaType::Text, ChannelMediaType::Audio],
            supports_audio: true,
            ..ChannelCapabilities::text_only()
        }
    }

    fn supports_streaming_delivery(&self) -> bool {
        true
    }

    async fn deliver(
        &self,
        event: &RoomEvent,
        binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        if event.source.channel_id == self.shared.id {
            return Ok(ChannelOutput::empty());
        }
        let mut text = event.content.plain_text();
        if text.trim().is_empty() || self.shared.calls_in(&binding.room_id).is_empty() {
            return Ok(ChannelOutput::empty());
        }
        if let Some(kit) = self.shared.kit() {
            let decision = kit
                .run_sync_hooks(
                    HookTrigger::BeforeTts,
                    &binding.room_id,
                    HookPayload::Text(text.clone()),
                    None,
                )
                .await;
            if let Some((hook, reason)) = decision.blocked {
                tracing::info!(target: "roomkit.voice.channel", %hook, ?reason, "BEFORE_TTS blocked the text");
                return Ok(ChannelOutput::empty());
            }
            if let HookPayload::Text(t) = decision.payload {
                text = t;
            }
        }
        // A stored AI response names the message it responds to.
        let answer =
            event.source.channel_type == ChannelType::Ai && event.parent_event_id.is_some();
        let (_, calls) = self
            .open_reply(&binding.room_id, Some(event.id.clone()), false, answer)
            .await;
        let mut splitter = SentenceSplitter::new(self.shared.settings.min_chunk_chars);
        let mut sentences = splitter.push(&text);
        sentences.extend(splitter.finish());
        for (_, tx) in &calls {
            for s in &sentences {
                let _ = tx.send(s.clone()).await;
            }
        }
        Ok(ChannelOutput::empty())
    }

    async fn deliver_stream(
        &self,
        mut stream: TextStream,
        event: &RoomEvent,
        binding: &ChannelBinding,
        _context: &RoomContext,
    ) -> Result<ChannelOutput, ChannelError> {
        let kit = self.shared.kit();
        // Subscribed before the text ends, so the stored event cannot slip by.
        let mut timeline = kit.as_ref().map(RoomKit::subscribe_timeline);
        // Only the engine streams, and only responses: an AI channel's is
        // an answer.
        let answer = event.source.channel_type == ChannelType::Ai;
        let (reply_id, calls) = self.open_reply(&binding.room_id, None, true, answer).await;
        let mut splitter = SentenceSplitter::new(self.shared.settings.min_chunk_chars);
        let mut full = String::new();
        while let Some(chunk) = stream.next().await {
            full.push_str(&chunk);
            for s in splitter.push(&chunk) {
                for (_, tx) in &calls {
                    let _ = tx.send(s.clone()).await;
                }
            }
        }
        if let Some(s) = splitter.finish() {
            for (_, tx) in &calls {
                let _ = tx.send(s.clone()).await;
            }
        }
        let commands: Vec<_> = calls.into_iter().map(|(c, _)| c).collect();
        // The engine stores the whole reply after this returns: find it,
        // so a barge-in can cut it.
        if let Some(mut rx) = timeline.take()
            && !commands.is_empty()
        {
            let room_id = binding.room_id.clone();
            let responder = event.source.channel_id.clone();
            tokio::spawn(async move {
                let wait = tokio::time::timeout(std::time::Duration::from_secs(60), async {
                    loop {
                        match rx.recv().await {
                            Ok(e) => {
                                if e.room_id == room_id
                                    && e.source.channel_id == responder
                                    && e.content.plain_text() == full
                                {
                                    return Some(e.id.clone());
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => return None,
                        }
                    }
                })
                .await;
                if let Ok(Some(event_id)) = wait {
                    for c in commands {
                        let _ = c
                            .send(CallCommand::ReplyStored {
                                id: reply_id,
                                event_id: event_id.clone(),
                            })
                            .await;
                    }
                }
            });
        }
        Ok(ChannelOutput::empty())
    }

    async fn close(&self) -> Result<(), ChannelError> {
        let calls: Vec<_> = self
            .shared
            .calls
            .lock()
            .map(|c| c.values().map(|e| e.commands.clone()).collect())
            .unwrap_or_default();
        for c in calls {
            let _ = c.send(CallCommand::HangUp).await;
        }
        if let Ok(mut k) = self.shared.kit.write() {
            *k = None;
        }
        Ok(())
    }
}
