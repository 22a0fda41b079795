//! Typed per-channel data (RFC §5.4). Events keep `channel_data` as a
//! generic JSON object so nothing a provider sends is lost; these types are
//! typed views of the well-known shapes, converted to and from that object.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Map;

/// Conversion between a typed channel data struct and the generic map.
pub trait ChannelData: Serialize + DeserializeOwned {
    /// The generic map form.
    fn to_map(&self) -> Map {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// Reads the typed view from a generic map; `None` when the map does not
    /// have this shape. Keys the type does not know are ignored here and
    /// stay in the map.
    fn from_map(map: &Map) -> Option<Self> {
        serde_json::from_value(serde_json::Value::Object(map.clone())).ok()
    }
}

/// SMS details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsChannelData {
    /// Sender number.
    pub from_number: String,
    /// Recipient number.
    pub to_number: String,
    /// Number of segments.
    #[serde(default)]
    pub segments: u32,
    /// Character encoding (GSM-7, UCS-2).
    #[serde(default)]
    pub encoding: Option<String>,
}

/// Email details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailChannelData {
    /// Sender address.
    pub from_address: String,
    /// Recipients.
    #[serde(default)]
    pub to_addresses: Vec<String>,
    /// Copies.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Subject line.
    #[serde(default)]
    pub subject: Option<String>,
    /// Thread identifier (Message-ID of the thread root).
    #[serde(default)]
    pub thread_id: Option<String>,
    /// HTML body.
    #[serde(default)]
    pub html_body: Option<String>,
}

/// WhatsApp details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatsAppChannelData {
    /// WhatsApp id of the user.
    pub wa_id: String,
    /// Template used.
    #[serde(default)]
    pub template_name: Option<String>,
    /// Interactive buttons.
    #[serde(default)]
    pub buttons: Option<Vec<serde_json::Value>>,
    /// Reply context.
    #[serde(default)]
    pub context: Option<serde_json::Value>,
    /// Group conversation.
    #[serde(default)]
    pub is_group: bool,
}

/// AI generation details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiChannelData {
    /// Model name.
    pub model: String,
    /// Agent name.
    #[serde(default)]
    pub agent_name: Option<String>,
    /// Tokens used.
    #[serde(default)]
    pub tokens_used: Option<u64>,
    /// Generation latency.
    #[serde(default)]
    pub latency_ms: Option<f64>,
}

impl ChannelData for SmsChannelData {}
impl ChannelData for EmailChannelData {}
impl ChannelData for WhatsAppChannelData {}
impl ChannelData for AiChannelData {}

#[cfg(test)]
mod tests {
    use super::*;

    /// C-24: typed data round-trips through the generic map, and unknown
    /// keys stay in the map.
    #[test]
    fn c24_typed_channel_data_round_trips_and_keeps_unknown_keys() {
        let sms = SmsChannelData {
            from_number: "+15550001111".into(),
            to_number: "+15551234567".into(),
            segments: 2,
            encoding: Some("GSM-7".into()),
        };
        let mut map = sms.to_map();
        map.insert("carrier".into(), "acme".into());
        assert_eq!(SmsChannelData::from_map(&map), Some(sms));
        assert_eq!(map.get("carrier").and_then(|v| v.as_str()), Some("acme"));
        assert_eq!(EmailChannelData::from_map(&map), None);
    }
}
