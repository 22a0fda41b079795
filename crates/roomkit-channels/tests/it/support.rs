//! Shared helpers: a kit with a channel attached to a room next to a
//! WebSocket-like recording channel, and webhook request builders.

use std::sync::Arc;

use roomkit_channels::{WebhookKind, WebhookRequest};
use roomkit_core::model::{ChannelId, Map, RoomId};
use roomkit_core::{AttachOptions, Channel, CreateRoom, RoomKit};
use roomkit_testkit::RecordingChannel;

pub struct Room {
    pub kit: RoomKit,
    pub ws: RecordingChannel,
    pub room: RoomId,
}

/// A room with `ws` and the channel under test; the channel's binding gets
/// `metadata`.
pub async fn room_with(channel: Arc<dyn Channel>, metadata: Map) -> Room {
    let ws = RecordingChannel::websocket("ws");
    let id = channel.id().clone();
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(channel)
        .build()
        .unwrap();
    let room = kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
    kit.attach_channel(&room.id, &ChannelId::from("ws"), AttachOptions::default())
        .await
        .unwrap();
    kit.attach_channel(
        &room.id,
        &id,
        AttachOptions {
            metadata,
            ..AttachOptions::default()
        },
    )
    .await
    .unwrap();
    Room {
        kit,
        ws,
        room: room.id,
    }
}

pub fn meta(pairs: &[(&str, &str)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect()
}

pub fn request(
    kind: WebhookKind,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Vec<u8>>,
) -> WebhookRequest {
    WebhookRequest {
        kind,
        method: "POST".into(),
        url: url.into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        body: body.into(),
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}
