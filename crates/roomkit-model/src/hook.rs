//! Hook triggers and execution modes (RFC §9.1, §9.2).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ModelError;

/// How a hook runs (RFC §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookExecution {
    /// In the pipeline, in priority order; may block or modify.
    Sync,
    /// After the operation, concurrently; observes only.
    Async,
}

/// When a hook fires: every trigger of RFC §9.2. Only the ones that apply to
/// implemented features are emitted; the rest exist so configuration can
/// name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HookTrigger {
    /// `before_broadcast` (SYNC in RFC §9.2).
    BeforeBroadcast,
    /// `after_broadcast` (ASYNC in RFC §9.2).
    AfterBroadcast,
    /// `on_event_updated` (ASYNC in RFC §9.2).
    OnEventUpdated,
    /// `on_event_deleted` (ASYNC in RFC §9.2).
    OnEventDeleted,
    /// `on_channel_attached` (ASYNC in RFC §9.2).
    OnChannelAttached,
    /// `on_channel_detached` (ASYNC in RFC §9.2).
    OnChannelDetached,
    /// `on_channel_muted` (ASYNC in RFC §9.2).
    OnChannelMuted,
    /// `on_channel_unmuted` (ASYNC in RFC §9.2).
    OnChannelUnmuted,
    /// `on_room_created` (ASYNC in RFC §9.2).
    OnRoomCreated,
    /// `on_room_paused` (ASYNC in RFC §9.2).
    OnRoomPaused,
    /// `on_room_closed` (ASYNC in RFC §9.2).
    OnRoomClosed,
    /// `on_identity_ambiguous` (SYNC in RFC §9.2).
    OnIdentityAmbiguous,
    /// `on_identity_unknown` (SYNC in RFC §9.2).
    OnIdentityUnknown,
    /// `on_participant_identified` (ASYNC in RFC §9.2).
    OnParticipantIdentified,
    /// `on_participant_joined` (ASYNC in RFC §9.2).
    OnParticipantJoined,
    /// `on_participant_left` (ASYNC in RFC §9.2).
    OnParticipantLeft,
    /// `on_participant_updated` (ASYNC in RFC §9.2).
    OnParticipantUpdated,
    /// `on_task_created` (ASYNC in RFC §9.2).
    OnTaskCreated,
    /// `on_delivery_status` (ASYNC in RFC §9.2).
    OnDeliveryStatus,
    /// `on_error` (ASYNC in RFC §9.2).
    OnError,
    /// `on_speech_start` (ASYNC in RFC §9.2).
    OnSpeechStart,
    /// `on_speech_end` (ASYNC in RFC §9.2).
    OnSpeechEnd,
    /// `on_transcription` (SYNC in RFC §9.2).
    OnTranscription,
    /// `before_tts` (SYNC in RFC §9.2).
    BeforeTts,
    /// `after_tts` (ASYNC in RFC §9.2).
    AfterTts,
    /// `on_barge_in` (ASYNC in RFC §9.2).
    OnBargeIn,
    /// `on_tts_cancelled` (ASYNC in RFC §9.2).
    OnTtsCancelled,
    /// `on_partial_transcription` (ASYNC in RFC §9.2).
    OnPartialTranscription,
    /// `on_vad_silence` (ASYNC in RFC §9.2).
    OnVadSilence,
    /// `on_vad_audio_level` (ASYNC in RFC §9.2).
    OnVadAudioLevel,
    /// `on_input_audio_level` (ASYNC in RFC §9.2).
    OnInputAudioLevel,
    /// `on_output_audio_level` (ASYNC in RFC §9.2).
    OnOutputAudioLevel,
    /// `on_speaker_change` (ASYNC in RFC §9.2).
    OnSpeakerChange,
    /// `on_dtmf` (ASYNC in RFC §9.2).
    OnDtmf,
    /// `on_turn_complete` (ASYNC in RFC §9.2).
    OnTurnComplete,
    /// `on_turn_incomplete` (ASYNC in RFC §9.2).
    OnTurnIncomplete,
    /// `on_backchannel` (ASYNC in RFC §9.2).
    OnBackchannel,
    /// `on_session_started` (ASYNC in RFC §9.2).
    OnSessionStarted,
    /// `on_recording_started` (ASYNC in RFC §9.2).
    OnRecordingStarted,
    /// `on_recording_stopped` (ASYNC in RFC §9.2).
    OnRecordingStopped,
    /// `on_realtime_tool_call` (SYNC in RFC §9.2).
    OnRealtimeToolCall,
    /// `on_realtime_text_injected` (ASYNC in RFC §9.2).
    OnRealtimeTextInjected,
    /// `on_protocol_trace` (ASYNC in RFC §9.2).
    OnProtocolTrace,
    /// `before_bridge_audio` (SYNC in RFC §9.2).
    BeforeBridgeAudio,
    /// `before_deliver` (SYNC in RFC §9.2).
    BeforeDeliver,
    /// `after_deliver` (ASYNC in RFC §9.2).
    AfterDeliver,
    /// `before_ai_context_build` (SYNC in RFC §9.2).
    BeforeAiContextBuild,
    /// `before_ai_generation` (SYNC in RFC §9.2).
    BeforeAiGeneration,
    /// `on_ai_thinking` (ASYNC in RFC §9.2).
    OnAiThinking,
    /// `on_ai_response` (ASYNC in RFC §9.2).
    OnAiResponse,
    /// `before_tool_use` (SYNC in RFC §9.2).
    BeforeToolUse,
    /// `on_tool_call` (ASYNC in RFC §9.2).
    OnToolCall,
    /// `on_user_input_required` (SYNC in RFC §9.2).
    OnUserInputRequired,
    /// `on_phase_transition` (ASYNC in RFC §9.2).
    OnPhaseTransition,
    /// `on_handoff` (ASYNC in RFC §9.2).
    OnHandoff,
    /// `on_handoff_rejected` (ASYNC in RFC §9.2).
    OnHandoffRejected,
    /// `on_status_posted` (ASYNC in RFC §9.2).
    OnStatusPosted,
    /// `on_task_delegated` (ASYNC in RFC §9.2).
    OnTaskDelegated,
    /// `on_task_completed` (ASYNC in RFC §9.2).
    OnTaskCompleted,
    /// `before_bridge_video` (SYNC in RFC §9.2).
    BeforeBridgeVideo,
    /// `on_video_session_started` (ASYNC in RFC §9.2).
    OnVideoSessionStarted,
    /// `on_video_session_ended` (ASYNC in RFC §9.2).
    OnVideoSessionEnded,
    /// `on_video_track_added` (ASYNC in RFC §9.2).
    OnVideoTrackAdded,
    /// `on_video_track_removed` (ASYNC in RFC §9.2).
    OnVideoTrackRemoved,
    /// `on_vision_result` (ASYNC in RFC §9.2).
    OnVisionResult,
    /// `on_screen_share_started` (ASYNC in RFC §9.2).
    OnScreenShareStarted,
    /// `on_screen_share_stopped` (ASYNC in RFC §9.2).
    OnScreenShareStopped,
    /// `on_video_detection` (ASYNC in RFC §9.2).
    OnVideoDetection,
    /// `on_conference_participant_joined` (ASYNC in RFC §9.2).
    OnConferenceParticipantJoined,
    /// `on_conference_participant_left` (ASYNC in RFC §9.2).
    OnConferenceParticipantLeft,
    /// `on_conference_track_published` (ASYNC in RFC §9.2).
    OnConferenceTrackPublished,
    /// `on_conference_track_unpublished` (ASYNC in RFC §9.2).
    OnConferenceTrackUnpublished,
    /// `on_conference_track_muted` (ASYNC in RFC §9.2).
    OnConferenceTrackMuted,
    /// `on_conference_track_unmuted` (ASYNC in RFC §9.2).
    OnConferenceTrackUnmuted,
    /// `on_active_speaker_changed` (ASYNC in RFC §9.2).
    OnActiveSpeakerChanged,
    /// `on_connection_quality_changed` (ASYNC in RFC §9.2).
    OnConnectionQualityChanged,
    /// `on_plan_updated` (ASYNC in RFC §9.2).
    OnPlanUpdated,
    /// `on_feedback` (ASYNC in RFC §9.2).
    OnFeedback,
}

const TRIGGERS: &[(HookTrigger, &str, HookExecution)] = &[
    (
        HookTrigger::BeforeBroadcast,
        "before_broadcast",
        HookExecution::Sync,
    ),
    (
        HookTrigger::AfterBroadcast,
        "after_broadcast",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnEventUpdated,
        "on_event_updated",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnEventDeleted,
        "on_event_deleted",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnChannelAttached,
        "on_channel_attached",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnChannelDetached,
        "on_channel_detached",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnChannelMuted,
        "on_channel_muted",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnChannelUnmuted,
        "on_channel_unmuted",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnRoomCreated,
        "on_room_created",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnRoomPaused,
        "on_room_paused",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnRoomClosed,
        "on_room_closed",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnIdentityAmbiguous,
        "on_identity_ambiguous",
        HookExecution::Sync,
    ),
    (
        HookTrigger::OnIdentityUnknown,
        "on_identity_unknown",
        HookExecution::Sync,
    ),
    (
        HookTrigger::OnParticipantIdentified,
        "on_participant_identified",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnParticipantJoined,
        "on_participant_joined",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnParticipantLeft,
        "on_participant_left",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnParticipantUpdated,
        "on_participant_updated",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnTaskCreated,
        "on_task_created",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnDeliveryStatus,
        "on_delivery_status",
        HookExecution::Async,
    ),
    (HookTrigger::OnError, "on_error", HookExecution::Async),
    (
        HookTrigger::OnSpeechStart,
        "on_speech_start",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnSpeechEnd,
        "on_speech_end",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnTranscription,
        "on_transcription",
        HookExecution::Sync,
    ),
    (HookTrigger::BeforeTts, "before_tts", HookExecution::Sync),
    (HookTrigger::AfterTts, "after_tts", HookExecution::Async),
    (HookTrigger::OnBargeIn, "on_barge_in", HookExecution::Async),
    (
        HookTrigger::OnTtsCancelled,
        "on_tts_cancelled",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnPartialTranscription,
        "on_partial_transcription",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnVadSilence,
        "on_vad_silence",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnVadAudioLevel,
        "on_vad_audio_level",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnInputAudioLevel,
        "on_input_audio_level",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnOutputAudioLevel,
        "on_output_audio_level",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnSpeakerChange,
        "on_speaker_change",
        HookExecution::Async,
    ),
    (HookTrigger::OnDtmf, "on_dtmf", HookExecution::Async),
    (
        HookTrigger::OnTurnComplete,
        "on_turn_complete",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnTurnIncomplete,
        "on_turn_incomplete",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnBackchannel,
        "on_backchannel",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnSessionStarted,
        "on_session_started",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnRecordingStarted,
        "on_recording_started",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnRecordingStopped,
        "on_recording_stopped",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnRealtimeToolCall,
        "on_realtime_tool_call",
        HookExecution::Sync,
    ),
    (
        HookTrigger::OnRealtimeTextInjected,
        "on_realtime_text_injected",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnProtocolTrace,
        "on_protocol_trace",
        HookExecution::Async,
    ),
    (
        HookTrigger::BeforeBridgeAudio,
        "before_bridge_audio",
        HookExecution::Sync,
    ),
    (
        HookTrigger::BeforeDeliver,
        "before_deliver",
        HookExecution::Sync,
    ),
    (
        HookTrigger::AfterDeliver,
        "after_deliver",
        HookExecution::Async,
    ),
    (
        HookTrigger::BeforeAiContextBuild,
        "before_ai_context_build",
        HookExecution::Sync,
    ),
    (
        HookTrigger::BeforeAiGeneration,
        "before_ai_generation",
        HookExecution::Sync,
    ),
    (
        HookTrigger::OnAiThinking,
        "on_ai_thinking",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnAiResponse,
        "on_ai_response",
        HookExecution::Async,
    ),
    (
        HookTrigger::BeforeToolUse,
        "before_tool_use",
        HookExecution::Sync,
    ),
    (
        HookTrigger::OnToolCall,
        "on_tool_call",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnUserInputRequired,
        "on_user_input_required",
        HookExecution::Sync,
    ),
    (
        HookTrigger::OnPhaseTransition,
        "on_phase_transition",
        HookExecution::Async,
    ),
    (HookTrigger::OnHandoff, "on_handoff", HookExecution::Async),
    (
        HookTrigger::OnHandoffRejected,
        "on_handoff_rejected",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnStatusPosted,
        "on_status_posted",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnTaskDelegated,
        "on_task_delegated",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnTaskCompleted,
        "on_task_completed",
        HookExecution::Async,
    ),
    (
        HookTrigger::BeforeBridgeVideo,
        "before_bridge_video",
        HookExecution::Sync,
    ),
    (
        HookTrigger::OnVideoSessionStarted,
        "on_video_session_started",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnVideoSessionEnded,
        "on_video_session_ended",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnVideoTrackAdded,
        "on_video_track_added",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnVideoTrackRemoved,
        "on_video_track_removed",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnVisionResult,
        "on_vision_result",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnScreenShareStarted,
        "on_screen_share_started",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnScreenShareStopped,
        "on_screen_share_stopped",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnVideoDetection,
        "on_video_detection",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnConferenceParticipantJoined,
        "on_conference_participant_joined",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnConferenceParticipantLeft,
        "on_conference_participant_left",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnConferenceTrackPublished,
        "on_conference_track_published",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnConferenceTrackUnpublished,
        "on_conference_track_unpublished",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnConferenceTrackMuted,
        "on_conference_track_muted",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnConferenceTrackUnmuted,
        "on_conference_track_unmuted",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnActiveSpeakerChanged,
        "on_active_speaker_changed",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnConnectionQualityChanged,
        "on_connection_quality_changed",
        HookExecution::Async,
    ),
    (
        HookTrigger::OnPlanUpdated,
        "on_plan_updated",
        HookExecution::Async,
    ),
    (HookTrigger::OnFeedback, "on_feedback", HookExecution::Async),
];

impl HookTrigger {
    /// Every trigger, in RFC order.
    pub fn all() -> impl Iterator<Item = HookTrigger> {
        TRIGGERS.iter().map(|(t, _, _)| *t)
    }

    /// The lower snake case name (`"before_broadcast"`).
    pub fn as_str(self) -> &'static str {
        TRIGGERS
            .iter()
            .find(|(t, _, _)| *t == self)
            .map_or("unknown", |(_, n, _)| n)
    }

    /// The execution mode the RFC lists for this trigger. ON_TOOL_CALL is
    /// listed as ASYNC there but treated as SYNC here (decision D17).
    pub fn default_execution(self) -> HookExecution {
        if self == HookTrigger::OnToolCall {
            return HookExecution::Sync;
        }
        TRIGGERS
            .iter()
            .find(|(t, _, _)| *t == self)
            .map_or(HookExecution::Async, |(_, _, e)| *e)
    }

    /// Triggers whose payload is content a hook may exist to withhold: a
    /// failing sync hook on them blocks instead of allowing (RFC §9.3).
    pub fn fails_closed(self) -> bool {
        matches!(self, HookTrigger::BeforeTts | HookTrigger::OnTranscription)
    }
}

impl fmt::Display for HookTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HookTrigger {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        TRIGGERS
            .iter()
            .find(|(_, n, _)| *n == lower)
            .map(|(t, _, _)| *t)
            .ok_or_else(|| ModelError::Invalid {
                kind: "hook trigger",
                value: s.to_owned(),
            })
    }
}

impl Serialize for HookTrigger {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HookTrigger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
