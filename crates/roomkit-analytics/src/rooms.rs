//! Which rooms are calls: the policy that turns rooms into observed calls
//! without any code in the conversation path.
//!
//! With [`CallAnalytics::observe_rooms`](crate::CallAnalytics::observe_rooms)
//! a room becomes a call when its first message is committed (a room that
//! never carries a message is not a call), and the call ends when the room
//! is paused (its inactivity timer or an explicit pause), closed, archived
//! or deleted, when no message came for the policy's idle timeout, or when
//! the service shuts down. Messages from AI channels
//! are the agent's side, every other message is the user's.
//!
//! A room can opt out or adjust its call through its metadata, under the
//! key [`ROOM_METADATA_KEY`]:
//!
//! ```json
//! {"analytics": false}
//! {"analytics": {"enabled": true, "is_test": true, "agent_id": "sales-bot",
//!                "agent_name": "Sales", "agent_prompt": "...", "metadata": {"crm": "42"}}}
//! ```

use std::time::Duration;

use roomkit_model::{Map, RoomId};

use crate::observer::StartCall;

/// Key of a room's metadata read by the policy.
pub const ROOM_METADATA_KEY: &str = "analytics";

/// How rooms become calls: the defaults of every call, which a room's
/// metadata can override.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCallPolicy {
    /// Agent id of every call (required by the protocol).
    pub agent_id: String,
    /// Agent name.
    pub agent_name: Option<String>,
    /// Agent prompt.
    pub agent_prompt: Option<String>,
    /// Whether calls are test calls.
    pub is_test: bool,
    /// Whether calls carry audio (audio offsets are written only then). Text
    /// rooms have none; a voice channel that feeds the taps turns it on.
    pub capture_audio: bool,
    /// A call with no message for this long ends (`idle-timeout`), so rooms
    /// that are never paused or closed do not hold calls open forever.
    /// `None` keeps calls open until the room ends.
    pub idle_timeout: Option<Duration>,
}

/// Default of [`RoomCallPolicy::idle_timeout`]: 30 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl RoomCallPolicy {
    /// A policy for `agent_id`, text only, not a test, calls ending after
    /// [`DEFAULT_IDLE_TIMEOUT`] without a message.
    pub fn new(agent_id: impl Into<String>) -> Self {
        Self {
            agent_id: agent_id.into(),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            ..Self::default()
        }
    }

    /// The call to start for a room with `metadata`, or `None` when the room
    /// opted out. Values of the wrong type are ignored (the default holds).
    pub fn start_for(&self, room_id: &RoomId, metadata: &Map) -> Option<StartCall> {
        let mut start = StartCall {
            room_id: room_id.clone(),
            call_id: None,
            agent_id: self.agent_id.clone(),
            agent_name: self.agent_name.clone(),
            agent_prompt: self.agent_prompt.clone(),
            is_test: self.is_test,
            metadata: serde_json::Map::new(),
            capture_audio: self.capture_audio,
        };
        match metadata.get(ROOM_METADATA_KEY) {
            Some(serde_json::Value::Bool(false)) => return None,
            Some(serde_json::Value::Object(o)) => {
                if o.get("enabled").and_then(serde_json::Value::as_bool) == Some(false) {
                    return None;
                }
                let text = |k: &str| {
                    o.get(k)
                        .and_then(serde_json::Value::as_str)
                        .filter(|s| !s.trim().is_empty())
                        .map(str::to_owned)
                };
                if let Some(v) = text("agent_id") {
                    start.agent_id = v;
                }
                if let Some(v) = text("agent_name") {
                    start.agent_name = Some(v);
                }
                if let Some(v) = text("agent_prompt") {
                    start.agent_prompt = Some(v);
                }
                if let Some(v) = o.get("is_test").and_then(serde_json::Value::as_bool) {
                    start.is_test = v;
                }
                if let Some(v) = o.get("capture_audio").and_then(serde_json::Value::as_bool) {
                    start.capture_audio = v;
                }
                if let Some(serde_json::Value::Object(m)) = o.get("metadata") {
                    start.metadata = m.clone();
                }
            }
            // Absent, `true`, or a value of another type: the defaults.
            _ => {}
        }
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn meta(v: serde_json::Value) -> Map {
        match v {
            serde_json::Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn defaults_apply_without_metadata() {
        let p = RoomCallPolicy::new("bot");
        let s = p.start_for(&RoomId::from("r1"), &Map::new()).unwrap();
        assert_eq!(s.agent_id, "bot");
        assert!(!s.is_test);
        assert!(!s.capture_audio);
        assert_eq!(s.room_id, RoomId::from("r1"));
    }

    #[test]
    fn rooms_opt_out_or_override() {
        let p = RoomCallPolicy::new("bot");
        let r = RoomId::from("r");
        assert!(
            p.start_for(&r, &meta(json!({"analytics": false})))
                .is_none()
        );
        assert!(
            p.start_for(&r, &meta(json!({"analytics": {"enabled": false}})))
                .is_none()
        );
        let s = p
            .start_for(
                &r,
                &meta(json!({"analytics": {"is_test": true, "agent_id": "sales",
                    "agent_name": "Sales", "metadata": {"crm": "42"}, "capture_audio": "x"}})),
            )
            .unwrap();
        assert!(s.is_test);
        assert_eq!(s.agent_id, "sales");
        assert_eq!(s.agent_name.as_deref(), Some("Sales"));
        assert_eq!(s.metadata["crm"], "42");
        assert!(!s.capture_audio, "a wrong type keeps the default");
        let s = p
            .start_for(&r, &meta(json!({"analytics": {"agent_id": " "}})))
            .unwrap();
        assert_eq!(s.agent_id, "bot", "a blank agent id keeps the default");
    }
}
