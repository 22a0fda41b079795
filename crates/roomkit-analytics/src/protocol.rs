//! The Roark wire protocol: constants, the JSON bodies of `call-started`,
//! `call-ended` and the presign request, and the records they carry, in
//! the protocol's camelCase and key order.
//!
//! The same record types are what the spool stores, so a call rebuilt
//! after a restart sends byte-for-byte what it would have sent live.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Default API root.
pub const DEFAULT_BASE_URL: &str = "https://api.roark.ai";
/// Both webhook events are posted here.
pub const WEBHOOK_PATH: &str = "/v1/integrations/livekit-sdk";
/// Chunk upload URLs are requested here.
pub const CHUNK_UPLOAD_PATH: &str = "/v1/integrations/livekit-sdk/chunk-upload-url";
/// Header carrying the API key (the Bearer header carries it too).
pub const API_KEY_HEADER: &str = "x-roark-api-key";
/// Bytes of every chunk but the last: 256 KiB, a whole number of stereo
/// frames.
pub const CHUNK_BYTES: u64 = 256 * 1024;
/// Content type of chunks, in the presign body and on the PUT.
pub const PCM_CONTENT_TYPE: &str = "audio/pcm";
/// Bytes of one stereo frame (two 16-bit samples).
pub const BYTES_PER_FRAME: u64 = 4;
/// `callEndedReason` when the caller gives none.
pub const DEFAULT_END_REASON: &str = "agent-ended";
/// Kill-switch variable: `false`, `0`, `no` or `off` turn the export off.
pub const KILL_SWITCH_ENV: &str = "ROARK_OBSERVABILITY_ENABLED";
/// Base URL override variable.
pub const BASE_URL_ENV: &str = "ROARK_BASE_URL";

/// Whether the kill switch is engaged for a variable's value (stripped and
/// lower-cased, then one of `false`, `0`, `no`, `off`).
pub fn kill_switch_value_disables(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "false" | "0" | "no" | "off"
    )
}

/// Whether `ROARK_OBSERVABILITY_ENABLED` turns the export off.
pub fn kill_switch_engaged() -> bool {
    std::env::var(KILL_SWITCH_ENV).is_ok_and(|v| kill_switch_value_disables(&v))
}

/// Formats a time the way the protocol writes it: RFC 3339 UTC with
/// microseconds and `+00:00` (`2026-11-21T12:07:57.005454+00:00`).
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Parses a protocol timestamp back.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The first webhook event of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStarted {
    /// Always `"call-started"`.
    pub event: String,
    /// The call id.
    pub livekit_call_id: String,
    /// When the call started (echoed as `callStartedAt` at the end).
    pub event_timestamp: String,
    /// Agent id, verbatim.
    pub agent_id: String,
    /// Test call flag.
    pub is_test: bool,
    /// Agent name, when not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    /// Agent prompt, when not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_prompt: Option<String>,
    /// Job id (not used by RoomKit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Room name: the RoomKit room id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_name: Option<String>,
    /// Room sid (not used by RoomKit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_sid: Option<String>,
}

/// The last webhook event of a call, sent once every chunk is settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallEnded {
    /// Always `"call-ended"`.
    pub event: String,
    /// The call id.
    pub livekit_call_id: String,
    /// Same string as `callEndedAt`.
    pub event_timestamp: String,
    /// The `eventTimestamp` of call-started.
    pub call_started_at: String,
    /// When the call ended.
    pub call_ended_at: String,
    /// Why it ended.
    pub call_ended_reason: String,
    /// Whether the agent spoke first, when a first speaker is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_spoke_first: Option<bool>,
    /// Sample rate of the uploaded chunks, when at least one was uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_sample_rate: Option<u32>,
    /// Always 2, together with the sample rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_num_channels: Option<u32>,
    /// Transcript, when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<TranscriptEntry>,
    /// Tool calls, each followed by its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolRecord>,
    /// Metrics, when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricRecord>,
}

/// One transcript entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEntry {
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text.
    pub content: String,
    /// Start of the utterance.
    pub timestamp: String,
    /// End of the utterance.
    pub end_timestamp: String,
    /// Start, in ms from recording sample 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_offset_ms: Option<u64>,
    /// End, in ms from recording sample 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_audio_offset_ms: Option<u64>,
    /// Speaker id (user turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Language code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// A tool call or a tool result, told apart by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolRecord {
    /// The model asked for a tool.
    ToolCall(ToolCallRecord),
    /// The tool answered.
    ToolResult(ToolResultRecord),
}

impl ToolRecord {
    /// The call id both kinds carry.
    pub fn tool_call_id(&self) -> &str {
        match self {
            Self::ToolCall(c) => &c.tool_call_id,
            Self::ToolResult(r) => &r.tool_call_id,
        }
    }
}

/// `kind: "tool_call"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallRecord {
    /// Pairs the call with its result.
    pub tool_call_id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as a JSON string (`"{}"` when there are none).
    pub arguments: String,
    /// When.
    pub timestamp: String,
    /// Where on the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_offset_ms: Option<u64>,
}

/// `kind: "tool_result"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResultRecord {
    /// The call this answers.
    pub tool_call_id: String,
    /// The result as a string.
    pub content: String,
    /// When.
    pub timestamp: String,
    /// Where on the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_offset_ms: Option<u64>,
}

/// Kind of a metric record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// End of utterance detection.
    Eou,
    /// Speech to text.
    Stt,
    /// Language model.
    Llm,
    /// Text to speech.
    Tts,
    /// Anything else (VAD, realtime model, interruptions, ...).
    #[default]
    Agent,
}

/// One metric record. Known fields are top level in the protocol's
/// alphabetical order of their snake-case names; everything else goes to
/// `extra`. Non-finite numbers are dropped instead of spoiling the event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricRecord {
    /// Kind.
    pub kind: MetricKind,
    /// When it was recorded.
    #[serde(default)]
    pub timestamp: String,
    /// Where on the recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_offset_ms: Option<u64>,
    /// Seconds of audio synthesized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_duration: Option<f64>,
    /// Prompt tokens served from cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Seconds the stage took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Seconds from end of speech to end-of-utterance decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_of_utterance_delay: Option<f64>,
    /// Seconds until the conversation item was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conversation_item_added_delay: Option<f64>,
    /// Prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Whether the stage streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamed: Option<bool>,
    /// Generation speed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// Total tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Seconds from end of speech to final transcript.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription_delay: Option<f64>,
    /// Seconds to first audio byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb: Option<f64>,
    /// Seconds to first token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<f64>,
    /// Other scalar fields, snake-case names kept.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MetricRecord {
    /// Drops non-finite numbers and non-scalar extras (protocol §12 Q7).
    pub fn sanitize(&mut self) {
        for f in [
            &mut self.audio_duration,
            &mut self.duration,
            &mut self.end_of_utterance_delay,
            &mut self.on_conversation_item_added_delay,
            &mut self.tokens_per_second,
            &mut self.transcription_delay,
            &mut self.ttfb,
            &mut self.ttft,
        ] {
            if f.is_some_and(|v| !v.is_finite()) {
                *f = None;
            }
        }
        self.extra.retain(|_, v| {
            matches!(
                v,
                serde_json::Value::Bool(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::String(_)
            )
        });
    }
}

/// Body of the presign request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresignRequest {
    /// The call id.
    pub livekit_call_id: String,
    /// Chunk index, from 0 in stream order.
    pub chunk_index: u64,
    /// Always `audio/pcm`.
    pub content_type: String,
}

/// Reads `uploadUrl` from a presign reply: the object itself or its
/// `data` member.
pub fn parse_presign_reply(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let obj = match value.get("data") {
        Some(data) => data,
        None => &value,
    };
    let Some(obj) = obj.as_object() else {
        return Err("reply is not an object".into());
    };
    match obj.get("uploadUrl").and_then(|u| u.as_str()) {
        Some(u) if !u.is_empty() => Ok(u.to_owned()),
        _ => Err("reply has no uploadUrl".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_microseconds_and_offset() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T12:07:57Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_timestamp(t), "2026-11-21T12:07:57.000000+00:00");
        let back = parse_timestamp("2026-11-21T12:07:57.005454+00:00").unwrap();
        assert_eq!(format_timestamp(back), "2026-11-21T12:07:57.005454+00:00");
    }

    #[test]
    fn kill_switch_values() {
        for v in ["false", " False ", "OFF", "0", "no"] {
            assert!(kill_switch_value_disables(v), "{v}");
        }
        for v in ["", "true", "disabled", "1", "yes"] {
            assert!(!kill_switch_value_disables(v), "{v}");
        }
    }

    #[test]
    fn presign_reply_shapes() {
        let wrapped = br#"{"data":{"uploadUrl":"http://x/u","s3Key":"k"}}"#;
        assert_eq!(parse_presign_reply(wrapped).unwrap(), "http://x/u");
        let bare = br#"{"uploadUrl":"http://x/v"}"#;
        assert_eq!(parse_presign_reply(bare).unwrap(), "http://x/v");
        assert!(parse_presign_reply(b"<html>").is_err());
        assert!(parse_presign_reply(br#"{"data":{}}"#).is_err());
        assert!(parse_presign_reply(br#"[1]"#).is_err());
    }

    #[test]
    fn tool_records_carry_kind_first() {
        let r = ToolRecord::ToolCall(ToolCallRecord {
            tool_call_id: "c1".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
            timestamp: "t".into(),
            audio_offset_ms: Some(5),
        });
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"kind":"tool_call","toolCallId":"c1","name":"lookup","arguments":"{}","timestamp":"t","audioOffsetMs":5}"#
        );
    }

    #[test]
    fn metric_sanitize_drops_non_finite() {
        let mut m = MetricRecord {
            kind: MetricKind::Llm,
            ttft: Some(f64::NAN),
            duration: Some(0.5),
            ..Default::default()
        };
        m.sanitize();
        assert_eq!(m.ttft, None);
        assert_eq!(m.duration, Some(0.5));
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.starts_with(r#"{"kind":"llm","timestamp":"#), "{json}");
    }
}
