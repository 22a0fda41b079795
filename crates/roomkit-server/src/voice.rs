//! Media sockets of voice channels: `GET /voice/{provider}/media` upgrades
//! to a WebSocket and hands it, as a `roomkit_voice::MediaSocket`, to the
//! mounted [`roomkit_voice::MediaEndpoint`] of that provider. The server
//! knows no codec and no vendor: the endpoint checks the upgrade (the
//! provider's signature) and runs the call.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Sink, StreamExt};
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
