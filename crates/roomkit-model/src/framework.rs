//! Framework events (RFC §8.2): global notifications published to
//! subscribers and never stored in a timeline.

use serde::{Deserialize, Serialize};

use crate::{
    BlockReason, ChannelId, ChannelType, EventId, HookTrigger, IdentityId, ParticipantId, RoomId,
};

/// A framework event, tagged by `type` with the RFC's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FrameworkEvent {
    /// A room was created.
    RoomCreated {
        /// Room.
        room_id: RoomId,
        /// Tenant.
        organization_id: Option<String>,
    },
    /// A room moved to PAUSED.
    RoomPaused {
        /// Room.
        room_id: RoomId,
    },
    /// A PAUSED room became ACTIVE again (decision D9).
    RoomResumed {
        /// Room.
        room_id: RoomId,
    },
    /// A room moved to CLOSED.
    RoomClosed {
        /// Room.
        room_id: RoomId,
    },
    /// A CLOSED room was reopened.
    RoomReopened {
        /// Room.
        room_id: RoomId,
    },
    /// A room moved to ARCHIVED.
    RoomArchived {
        /// Room.
        room_id: RoomId,
    },
    /// A room and its history were deleted.
    RoomDeleted {
        /// Room.
        room_id: RoomId,
    },
    /// A channel was registered.
    ChannelRegistered {
        /// Channel.
        channel_id: ChannelId,
        /// Its type.
        channel_type: ChannelType,
    },
    /// A channel was unregistered.
    ChannelUnregistered {
        /// Channel.
        channel_id: ChannelId,
    },
    /// A source provider connected (Level 2).
    SourceConnected {
        /// Source.
        source_id: String,
    },
    /// A source provider disconnected (Level 2).
    SourceDisconnected {
        /// Source.
        source_id: String,
    },
    /// An event finished processing (committed and its delivery set run).
    EventProcessed {
        /// Room.
        room_id: RoomId,
        /// Event.
        event_id: EventId,
    },
    /// An event was stored as BLOCKED.
    EventBlocked {
        /// Room.
        room_id: RoomId,
        /// Event.
        event_id: EventId,
        /// Hook or rule (`blocked_by`).
        hook_name: String,
    },
    /// A room refused an event because of its status, or the pipeline
    /// rejected it before storing anything (RFC §5.1 asks for this signal
    /// without naming it).
    EventRefused {
        /// Room.
        room_id: RoomId,
        /// Why.
        reason: BlockReason,
    },
    /// An event reached a channel.
    DeliverySucceeded {
        /// Room.
        room_id: RoomId,
        /// Event.
        event_id: EventId,
        /// Target.
        channel_id: ChannelId,
    },
    /// An event could not reach a channel.
    DeliveryFailed {
        /// Room.
        room_id: RoomId,
        /// Event.
        event_id: EventId,
        /// Target.
        channel_id: ChannelId,
        /// What went wrong.
        error: String,
    },
    /// Some targets of an event failed while the event stayed DELIVERED
    /// (RFC §13.6).
    BroadcastPartialFailure {
        /// Room.
        room_id: RoomId,
        /// Event.
        event_id: EventId,
        /// Channels that failed.
        failed_channels: Vec<ChannelId>,
    },
    /// An identity was resolved.
    IdentityResolved {
        /// Participant.
        participant_id: ParticipantId,
        /// Identity.
        identity_id: IdentityId,
    },
    /// Identity resolution timed out.
    IdentityTimeout {
        /// Room.
        room_id: RoomId,
        /// Sender address.
        address: String,
    },
    /// A response was blocked by the chain-depth limit.
    ChainDepthExceeded {
        /// Room.
        room_id: RoomId,
        /// Responding channel.
        channel_id: ChannelId,
        /// Its depth.
        depth: u32,
    },
    /// A hook failed.
    HookError {
        /// Hook.
        hook_name: String,
        /// Trigger.
        trigger: HookTrigger,
        /// What went wrong.
        error: String,
    },
    /// A hook exceeded its timeout.
    HookTimeout {
        /// Hook.
        hook_name: String,
        /// Trigger.
        trigger: HookTrigger,
        /// The limit.
        timeout_ms: u64,
    },
    /// A channel's circuit breaker opened.
    CircuitBreakerOpened {
        /// Channel.
        channel_id: ChannelId,
        /// Consecutive failures.
        failure_count: u32,
    },
    /// A channel's circuit breaker closed.
    CircuitBreakerClosed {
        /// Channel.
        channel_id: ChannelId,
    },
    /// Figures of one AI generation turn (all provider rounds of it).
    AiTurnMetrics {
        /// Room.
        room_id: RoomId,
        /// The AI channel.
        channel_id: ChannelId,
        /// The event the turn answered.
        event_id: EventId,
        /// Time to the first text token, in milliseconds (`None` when the
        /// turn produced no text).
        ttft_ms: Option<f64>,
        /// Wall time of the turn, in milliseconds.
        duration_ms: f64,
        /// Prompt tokens, summed over the provider rounds.
        prompt_tokens: u64,
        /// Completion tokens, summed over the provider rounds.
        completion_tokens: u64,
        /// Prompt tokens served from the provider's cache.
        cached_tokens: u64,
        /// Completion tokens per second of generation time.
        tokens_per_second: Option<f64>,
        /// Model.
        model: String,
        /// Provider.
        provider: String,
    },
    /// An AI channel ran one tool call and has its result (every call the
    /// model makes gets one, denied and failed calls included).
    AiToolCall {
        /// Room.
        room_id: RoomId,
        /// The AI channel.
        channel_id: ChannelId,
        /// The event the turn answered.
        event_id: EventId,
        /// The provider's id of the call, which pairs it with its result.
        call_id: String,
        /// Tool name.
        name: String,
        /// Arguments the tool ran with (after any ON_TOOL_CALL rewrite).
        arguments: serde_json::Value,
        /// The result the model reads.
        result: String,
        /// Whether the result is an error (failure, denial, unknown tool).
        is_error: bool,
        /// Wall time from the model's request to the result, in
        /// milliseconds.
        duration_ms: f64,
    },
    /// A voice session became ACTIVE (RFC §8.2).
    VoiceSessionStarted {
        /// Session.
        session_id: String,
        /// Room.
        room_id: RoomId,
        /// Voice channel.
        channel_id: ChannelId,
    },
    /// A voice session's audio path is live in both directions (RFC §8.2).
    VoiceSessionReady {
        /// Session.
        session_id: String,
        /// Room.
        room_id: RoomId,
        /// Voice channel.
        channel_id: ChannelId,
    },
    /// A voice session ENDED (RFC §8.2).
    VoiceSessionEnded {
        /// Session.
        session_id: String,
        /// Room.
        room_id: RoomId,
        /// Length of the call on its media clock, in milliseconds.
        duration_ms: u64,
    },
    /// What the network did to a call's media, reported once at its end by
    /// transports that measure it (RTP: losses counted from sequence
    /// numbers, interarrival jitter, round trip time from RTCP).
    VoiceNetworkStats {
        /// Session.
        session_id: String,
        /// Room.
        room_id: RoomId,
        /// The caller's packets lost on the way.
        packets_lost: u64,
        /// Interarrival jitter at the end of the call, in milliseconds.
        jitter_ms: f64,
        /// Round trip time, when RTCP measured one, in milliseconds.
        rtt_ms: Option<f64>,
    },
    /// Latency figures of one voice turn (RFC §15.4), measured on the
    /// call's media clock: every duration counts caller audio received
    /// between the two moments, so it is what the caller lived through.
    /// Emitted when the turn's reply starts playing (or when the turn
    /// ends without one, with the later figures `None`).
    VoiceTurnMetrics {
        /// Session.
        session_id: String,
        /// Room.
        room_id: RoomId,
        /// Voice channel.
        channel_id: ChannelId,
        /// Where the caller's utterance ended, in ms on the media clock.
        speech_end_ms: f64,
        /// From the end of speech to the end-of-utterance decision.
        eou_delay_ms: f64,
        /// From the end of speech to the final transcript.
        stt_latency_ms: Option<f64>,
        /// From the caller's message being committed to the first text
        /// of the answer reaching the call.
        llm_ttft_ms: Option<f64>,
        /// From the first text handed to text-to-speech to its first audio.
        tts_ttfb_ms: Option<f64>,
        /// From the end of speech to the first agent audio frame sent.
        voice_to_voice_ms: Option<f64>,
    },
    /// One side of a voice call said something (RFC §12.2): a caller's
    /// final transcript, or the agent's text as actually played (cut at a
    /// barge-in). Times are in ms on the call's media clock.
    VoiceTranscript {
        /// Session.
        session_id: String,
        /// Room.
        room_id: RoomId,
        /// Voice channel.
        channel_id: ChannelId,
        /// `"user"` or `"agent"`.
        role: String,
        /// What was said (for the agent: what the caller heard).
        text: String,
        /// Start of the speech on the media clock.
        start_ms: f64,
        /// End of the speech on the media clock.
        end_ms: f64,
        /// The agent was cut off by the caller.
        interrupted: bool,
    },
    /// A speech-to-text provider failed during a call (RFC §8.2).
    SttError {
        /// Session.
        session_id: String,
        /// Provider name.
        provider: String,
        /// What went wrong.
        error: String,
    },
    /// A text-to-speech provider failed during a call (RFC §8.2).
    TtsError {
        /// Session.
        session_id: String,
        /// Provider name.
        provider: String,
        /// What went wrong.
        error: String,
    },
}

impl FrameworkEvent {
    /// The wire name of the event (`"room_created"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::RoomCreated { .. } => "room_created",
            Self::RoomPaused { .. } => "room_paused",
            Self::RoomResumed { .. } => "room_resumed",
            Self::RoomClosed { .. } => "room_closed",
            Self::RoomReopened { .. } => "room_reopened",
            Self::RoomArchived { .. } => "room_archived",
            Self::RoomDeleted { .. } => "room_deleted",
            Self::ChannelRegistered { .. } => "channel_registered",
            Self::ChannelUnregistered { .. } => "channel_unregistered",
            Self::SourceConnected { .. } => "source_connected",
            Self::SourceDisconnected { .. } => "source_disconnected",
            Self::EventProcessed { .. } => "event_processed",
            Self::EventBlocked { .. } => "event_blocked",
            Self::EventRefused { .. } => "event_refused",
            Self::DeliverySucceeded { .. } => "delivery_succeeded",
            Self::DeliveryFailed { .. } => "delivery_failed",
            Self::BroadcastPartialFailure { .. } => "broadcast_partial_failure",
            Self::IdentityResolved { .. } => "identity_resolved",
            Self::IdentityTimeout { .. } => "identity_timeout",
            Self::ChainDepthExceeded { .. } => "chain_depth_exceeded",
            Self::HookError { .. } => "hook_error",
            Self::HookTimeout { .. } => "hook_timeout",
            Self::CircuitBreakerOpened { .. } => "circuit_breaker_opened",
            Self::CircuitBreakerClosed { .. } => "circuit_breaker_closed",
            Self::AiTurnMetrics { .. } => "ai_turn_metrics",
            Self::AiToolCall { .. } => "ai_tool_call",
            Self::VoiceSessionStarted { .. } => "voice_session_started",
            Self::VoiceSessionReady { .. } => "voice_session_ready",
            Self::VoiceSessionEnded { .. } => "voice_session_ended",
            Self::VoiceNetworkStats { .. } => "voice_network_stats",
            Self::VoiceTurnMetrics { .. } => "voice_turn_metrics",
            Self::VoiceTranscript { .. } => "voice_transcript",
            Self::SttError { .. } => "stt_error",
            Self::TtsError { .. } => "tts_error",
        }
    }
}
