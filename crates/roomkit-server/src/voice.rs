//! Media sockets of voice channels: `GET /voice/{provider}/media` upgrades
//! to a WebSocket and hands it, as a `roomkit_voice::MediaSocket`, to the
//! mounted [`roomkit_voice::MediaEndpoint`] of that provider. The server
//! knows no codec and no vendor: the endpoint checks the upgrade (the
//! provider's signature) and runs the call.
//!
//! Outbound calls: `POST /voice/calls` (with the API key) finds or creates
//! the room, attaches the voice channel, and asks the channel's
//! [`roomkit_voice::CallDialer`] to ring the number; the answered call
//! comes back through the voice webhook and the media socket into that
//! room. A failed dial undoes what the request prepared.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Sink, StreamExt};
use roomkit_core::model::{ChannelId, RoomId};
use roomkit_core::{AttachOptions, CreateRoom, RoomKitError};
use roomkit_voice::{DialError, DialRequest, MediaEndpoint, MediaMessage, MediaSocket, VoiceError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Scope;
use crate::error::ApiError;
use crate::extract::{Path, StrictJson};
use crate::ids;
use crate::state::AppState;

/// Largest message on a media socket (Twilio frames are well under 1 KiB).
const MEDIA_MESSAGE_LIMIT: usize = 64 * 1024;

fn select(
    state: &AppState,
    provider: &str,
    query: Option<&str>,
) -> Result<Arc<dyn MediaEndpoint>, ApiError> {
    let wanted = query.and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "channel_id")
            .map(|(_, v)| v)
    });
    let mut found = state.media.iter().filter(|m| {
        m.provider() == provider
            && wanted
                .as_deref()
                .is_none_or(|w| m.channel_id().as_str() == w)
    });
    let first = found.next().cloned().ok_or_else(|| {
        ApiError::not_found(
            "channel_not_found",
            format!("no voice channel with transport {provider} is configured on this server"),
        )
    })?;
    if found.next().is_some() {
        return Err(ApiError::not_found(
            "channel_not_found",
            format!("several voice channels use transport {provider}; name one with ?channel_id="),
        ));
    }
    Ok(first)
}

/// `GET /voice/{provider}/media`: the media socket of a call.
pub async fn media(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let endpoint = match select(&state, &provider, uri.query()) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let url = match crate::webhooks::signed_url(&state, &uri, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    // The provider signed the wss:// form of the URL.
    let url = url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    if !endpoint.authorize(&url, &pairs) {
        tracing::warn!(target: "roomkit.server.voice", channel_id = %endpoint.channel_id(), "media socket refused: bad signature");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the media socket request is not signed by the provider",
        )
        .into_response();
    }
    // A plain request gets the same answer as one on `/ws/{room_id}`.
    let ws = match ws {
        Ok(ws) => ws,
        Err(r) => {
            return ApiError::new(
                r.status(),
                "websocket_upgrade_required",
                format!("this endpoint takes a WebSocket upgrade: {}", r.body_text()),
            )
            .into_response();
        }
    };
    let tasks = state.ws_tasks.clone();
    let shutdown = state.shutdown.clone();
    // Small buffers, as on the room sockets: the library's 128 KiB read
    // buffer is zero-filled before every read, which for 50 small media
    // messages a second per call cost more than parsing them. A larger
    // message still grows the buffer.
    ws.read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(MEDIA_MESSAGE_LIMIT)
        .max_frame_size(MEDIA_MESSAGE_LIMIT)
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                tokio::select! {
                    () = endpoint.serve(media_socket(socket)) => {}
                    () = shutdown.cancelled() => {}
                }
            })
        })
}

/// An axum WebSocket as the voice crate's socket halves.
fn media_socket(socket: WebSocket) -> MediaSocket {
    let (sink, stream) = socket.split();
    let incoming = stream
        .filter_map(|m| async move {
            match m {
                Ok(Message::Text(t)) => Some(Ok(MediaMessage::Text(t.as_str().to_owned()))),
                Ok(Message::Binary(b)) => Some(Ok(MediaMessage::Binary(b.to_vec()))),
                Ok(Message::Close(_)) => Some(Ok(MediaMessage::Close)),
                Ok(_) => None,
                Err(e) => Some(Err(VoiceError::Transport(e.to_string()))),
            }
        })
        .boxed();
    MediaSocket::new(incoming, Box::pin(VoiceSink(sink)))
}

/// A WebSocket sink taking the voice crate's messages and giving its
/// errors, every time. (`SinkExt::sink_map_err` maps only the first error
/// and panics on the next one; a call's last words, `ended` and the close,
/// are both sent to a socket that may already have failed.)
struct VoiceSink<S>(S);

fn transport(e: axum::Error) -> VoiceError {
    VoiceError::Transport(e.to_string())
}

impl<S> Sink<MediaMessage> for VoiceSink<S>
where
    S: Sink<Message, Error = axum::Error> + Unpin,
{
    type Error = VoiceError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), VoiceError>> {
        Pin::new(&mut self.0).poll_ready(cx).map_err(transport)
    }

    fn start_send(mut self: Pin<&mut Self>, m: MediaMessage) -> Result<(), VoiceError> {
        let message = match m {
            MediaMessage::Text(t) => Message::Text(t.into()),
            MediaMessage::Binary(b) => Message::Binary(b.into()),
            MediaMessage::Close => Message::Close(None),
        };
        Pin::new(&mut self.0).start_send(message).map_err(transport)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), VoiceError>> {
        Pin::new(&mut self.0).poll_flush(cx).map_err(transport)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), VoiceError>> {
        Pin::new(&mut self.0).poll_close(cx).map_err(transport)
    }
}

#[cfg(test)]
mod tests {
    use futures::SinkExt;

    use super::*;

    /// A socket that has failed: every operation errs, every time (as an
    /// axum socket does once the connection is gone).
    struct Failed;

    fn reset() -> axum::Error {
        axum::Error::new("connection reset")
    }

    impl Sink<Message> for Failed {
        type Error = axum::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
            Poll::Ready(Err(reset()))
        }

        fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), axum::Error> {
            Err(reset())
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
            Poll::Ready(Err(reset()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
            Poll::Ready(Err(reset()))
        }
    }

    #[tokio::test]
    async fn a_failed_socket_gives_an_error_on_every_send() {
        let mut sink = VoiceSink(Failed);
        for m in [
            MediaMessage::Text("{\"type\":\"ended\"}".into()),
            MediaMessage::Close,
            MediaMessage::Binary(vec![0, 1]),
        ] {
            let err = sink.send(m).await.err();
            assert!(
                matches!(&err, Some(VoiceError::Transport(m)) if m.contains("connection reset")),
                "{err:?}"
            );
        }
    }
}

/// Body of `POST /voice/calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCallBody {
    /// The voice channel that places the call.
    pub channel_id: String,
    /// The number to ring.
    pub to: String,
    /// The room the answered call joins; a new room when absent.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The caller id; the channel's `from` when absent.
    #[serde(default)]
    pub from: Option<String>,
    /// Metadata of the room created for the call (only without `room_id`).
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// The dialer of a voice channel, when it places calls.
fn dialer_of(state: &AppState, channel: &ChannelId) -> Option<Arc<dyn roomkit_voice::CallDialer>> {
    state
        .dialers
        .iter()
        .find(|d| d.channel_id() == channel)
        .cloned()
}

/// Body of `POST /voice/calls/{call_sid}/transfer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The voice channel the call runs on.
    pub channel_id: String,
    /// Where to hand the call: a number or a `sip:` address.
    pub to: String,
}

/// `POST /voice/calls/{call_sid}/transfer`: hands a running call to another
/// number or address (a blind transfer: SIP REFER); the call ends when the
/// target answers. 202 once asked.
pub async fn transfer_call(
    State(state): State<AppState>,
    crate::extract::Path(call_sid): crate::extract::Path<String>,
    StrictJson(body): StrictJson<TransferBody>,
) -> Result<Response, ApiError> {
    ids::check("channel_id", &body.channel_id)?;
    address("to", &body.to)?;
    if call_sid.is_empty() || call_sid.len() > 256 || call_sid.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "invalid call id: 1 to 256 printable characters",
        ));
    }
    let channel = ChannelId::from(body.channel_id.as_str());
    let Some(dialer) = dialer_of(&state, &channel) else {
        return Err(ApiError::not_found(
            "channel_not_found",
            format!("no voice channel {channel} that places calls is configured on this server"),
        ));
    };
    match dialer.transfer(&call_sid, &body.to).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(
                serde_json::json!({"call_sid": call_sid, "to": body.to, "status": "transferring"}),
            ),
        )
            .into_response()),
        Err(DialError::UnknownCall(_)) => Err(ApiError::not_found(
            "call_not_found",
            format!("no call {call_sid} is running on channel {channel}"),
        )),
        Err(e @ DialError::NotConfigured(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "channel_rejected",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "provider_error",
            e.to_string(),
        )),
    }
}

/// Answer of `POST /voice/calls`.
#[derive(Debug, Serialize)]
pub struct CreatedCall {
    /// The provider's call id (Twilio: the call SID).
    pub call_sid: String,
    /// The provider's word for the call's state (`queued`, ...).
    pub status: String,
    /// The room the answered call joins.
    pub room_id: String,
    /// Whether the room was created for this call.
    pub room_created: bool,
    /// The voice channel.
    pub channel_id: String,
    /// The number rung.
    pub to: String,
    /// The caller id used.
    pub from: String,
}

fn address(field: &str, value: &str) -> Result<(), ApiError> {
    if roomkit_voice::dial::dialable(value) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "invalid_field",
        format!(
            "invalid field `{field}`: must be an E.164 number (+ and 8 to 15 digits) or a sip: or client: address"
        ),
    ))
}

/// What the endpoint changed before dialing, undone when the call fails.
enum Prepared {
    /// The room existed with the channel attached.
    Ready,
    /// The channel was attached to an existing room.
    Attached,
    /// The room was created (and the channel attached).
    Created,
}

/// Finds or creates the call's room and attaches the voice channel to it
/// (and, to a room it creates, the dialer's agents).
async fn prepare_room(
    state: &AppState,
    scope: &Scope,
    channel: &ChannelId,
    agents: &[ChannelId],
    body: &mut CreateCallBody,
) -> Result<(RoomId, Prepared), ApiError> {
    let kit = &state.kit;
    if let Some(id) = &body.room_id {
        let room = RoomId::from(id.as_str());
        scope.check_room(kit, &room).await?;
        kit.get_room(&room).await?;
        return match kit.get_binding(&room, channel).await {
            Ok(_) => Ok((room, Prepared::Ready)),
            Err(RoomKitError::ChannelNotAttached { .. }) => {
                match kit
                    .attach_channel(&room, channel, AttachOptions::default())
                    .await
                {
                    Ok(_) => Ok((room, Prepared::Attached)),
                    // Another request attached it meanwhile: it is theirs.
                    Err(RoomKitError::ChannelAlreadyAttached { .. }) => Ok((room, Prepared::Ready)),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        };
    }
    let room = kit
        .create_room(CreateRoom {
            organization_id: scope.owner(None)?,
            metadata: body.metadata.take().unwrap_or_default(),
            ..CreateRoom::default()
        })
        .await?;
    for id in std::iter::once(channel).chain(agents) {
        match kit
            .attach_channel(&room.id, id, AttachOptions::default())
            .await
        {
            Ok(_) | Err(RoomKitError::ChannelAlreadyAttached { .. }) => {}
            Err(e) => {
                let _ = kit.delete_room(&room.id).await;
                return Err(e.into());
            }
        }
    }
    Ok((room.id, Prepared::Created))
}

/// Undoes [`prepare_room`] after a failed dial, so a refused call leaves
/// nothing behind.
async fn unprepare(state: &AppState, room: &RoomId, channel: &ChannelId, prepared: Prepared) {
    let undone = match prepared {
        Prepared::Ready => return,
        Prepared::Attached => state.kit.detach_channel(room, channel).await,
        Prepared::Created => state.kit.delete_room(room).await,
    };
    if let Err(e) = undone {
        tracing::warn!(target: "roomkit.server.voice", room_id = %room, error = %e, "could not undo the room preparation of a failed call");
    }
}

/// `POST /voice/calls`: places an outbound call through a voice channel;
/// the answered call joins `room_id`, or a room created for it.
pub async fn create_call(
    State(state): State<AppState>,
    scope: Scope,
    StrictJson(mut body): StrictJson<CreateCallBody>,
) -> Result<Response, ApiError> {
    ids::check("channel_id", &body.channel_id)?;
    ids::check_opt("room_id", body.room_id.as_deref())?;
    address("to", &body.to)?;
    if let Some(from) = &body.from {
        address("from", from)?;
    }
    if body.room_id.is_some() && body.metadata.is_some() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "invalid field `metadata`: it is the metadata of a room created for the call, and `room_id` names an existing room",
        ));
    }
    let channel = ChannelId::from(body.channel_id.as_str());
    let Some(dialer) = dialer_of(&state, &channel) else {
        if state.kit.channel(&channel).is_some() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "channel_rejected",
                format!(
                    "channel {channel} cannot place calls (only voice channels with transport twilio can)"
                ),
            ));
        }
        return Err(ApiError::not_found(
            "channel_not_found",
            format!("no channel {channel} is configured on this server"),
        ));
    };
    dialer.ready().map_err(|e| dial_error(&channel, &e))?;
    let (room, prepared) =
        prepare_room(&state, &scope, &channel, dialer.agents(), &mut body).await?;
    let request = DialRequest {
        to: body.to.clone(),
        from: body.from.clone(),
        room_id: room.clone(),
    };
    match dialer.dial(&request).await {
        Ok(call) => {
            tracing::info!(target: "roomkit.server.voice", channel_id = %channel, room_id = %room, call_sid = %call.call_id, "outbound call placed");
            let answer = CreatedCall {
                call_sid: call.call_id,
                status: call.status,
                room_id: room.to_string(),
                room_created: matches!(prepared, Prepared::Created),
                channel_id: channel.to_string(),
                to: body.to,
                from: call.from,
            };
            Ok((StatusCode::CREATED, Json(answer)).into_response())
        }
        Err(e) => {
            unprepare(&state, &room, &channel, prepared).await;
            Err(dial_error(&channel, &e))
        }
    }
}

fn dial_error(channel: &ChannelId, e: &DialError) -> ApiError {
    match e {
        DialError::NotConfigured(_) => {
            tracing::warn!(target: "roomkit.server.voice", channel_id = %channel, error = %e, "outbound call refused: not configured");
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "outbound_not_configured",
                e.to_string(),
            )
        }
        _ => {
            tracing::warn!(target: "roomkit.server.voice", channel_id = %channel, error = %e, "outbound call failed at the provider");
            ApiError::new(StatusCode::BAD_GATEWAY, "provider_error", e.to_string())
        }
    }
}
