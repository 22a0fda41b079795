//! Media sockets of voice channels: `GET /voice/{provider}/media` upgrades
//! to a WebSocket and hands it, as a `roomkit_voice::MediaSocket`, to the
//! mounted [`roomkit_voice::MediaEndpoint`] of that provider. The server
//! knows no codec and no vendor: the endpoint checks the upgrade (the
//! provider's signature) and runs the call.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use roomkit_voice::backend::MediaSink;
use roomkit_voice::{MediaEndpoint, MediaMessage, MediaSocket, VoiceError};

use crate::error::ApiError;
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
    let Ok(ws) = ws else {
        return ApiError::bad_request("invalid_request", "this endpoint takes a WebSocket upgrade")
            .into_response();
    };
    let tasks = state.ws_tasks.clone();
    let shutdown = state.shutdown.clone();
    ws.max_message_size(MEDIA_MESSAGE_LIMIT)
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
    let outgoing: MediaSink = Box::pin(
        sink.with(|m: MediaMessage| async move {
            Ok::<_, axum::Error>(match m {
                MediaMessage::Text(t) => Message::Text(t.into()),
                MediaMessage::Binary(b) => Message::Binary(b.into()),
                MediaMessage::Close => Message::Close(None),
            })
        })
        .sink_map_err(|e| VoiceError::Transport(e.to_string())),
    );
    MediaSocket::new(incoming, outgoing)
}
