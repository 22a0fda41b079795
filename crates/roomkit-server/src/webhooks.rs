//! Provider webhooks: `POST /webhooks/{channel_type}/{provider}` for inbound
//! messages and `.../status` for delivery-status callbacks.
//!
//! The server knows no vendor. Each configured transport channel hands it a
//! [`WebhookReceiver`]; a request is matched to its receiver by the path,
//! verified over the URL the provider signed (`public_url` + path + query
//! when one is configured, else `http://{Host}` + path + query), and only
//! then turned into engine calls: every message goes through
//! `process_inbound` (room routing, identity, hooks, broadcast), every
//! status update through `record_delivery_status`. A refused signature
//! stores nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roomkit_channels::{WebhookError, WebhookKind, WebhookReceiver, WebhookRequest};
use roomkit_core::RoomKitError;
use roomkit_core::model::{ChannelId, InboundMessage};

use crate::error::ApiError;
use crate::state::AppState;

/// A receiver mounted for one channel.
#[derive(Clone)]
pub struct MountedReceiver {
    /// The channel whose traffic it receives.
    pub channel_id: ChannelId,
    /// The provider's verifier and parser.
    pub receiver: Arc<dyn WebhookReceiver>,
}

impl std::fmt::Debug for MountedReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedReceiver")
            .field("channel_id", &self.channel_id)
            .field("channel_type", &self.receiver.channel_type())
            .field("provider", &self.receiver.provider())
            .finish()
    }
}

/// The webhook path of a receiver (without the `/status` suffix).
pub fn path_of(receiver: &dyn WebhookReceiver) -> String {
    format!(
        "/webhooks/{}/{}",
        receiver.channel_type(),
        receiver.provider()
    )
}

/// `POST /webhooks/{channel_type}/{provider}`: inbound messages.
pub async fn inbound(
    state: State<AppState>,
    path: Path<(String, String)>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, path, uri, headers, body, WebhookKind::Inbound).await
}

/// `POST /webhooks/{channel_type}/{provider}/status`: delivery callbacks.
pub async fn status(
    state: State<AppState>,
    path: Path<(String, String)>,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, path, uri, headers, body, WebhookKind::Status).await
}

async fn handle(
    State(state): State<AppState>,
    Path((channel_type, provider)): Path<(String, String)>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: WebhookKind,
) -> Response {
    match run(&state, &channel_type, &provider, &uri, &headers, body, kind).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Picks the receiver of a path; `?channel_id=` chooses between several
/// channels of the same type and provider.
fn select<'a>(
    state: &'a AppState,
    channel_type: &str,
    provider: &str,
    query: Option<&str>,
) -> Result<&'a MountedReceiver, ApiError> {
    let wanted = query.and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == "channel_id")
            .map(|(_, v)| v)
    });
    let mut found = state.webhooks.iter().filter(|m| {
        m.receiver.channel_type() == channel_type
            && m.receiver.provider() == provider
            && wanted.as_deref().is_none_or(|w| m.channel_id.as_str() == w)
    });
    let not_found = || {
        ApiError::not_found(
            "channel_not_found",
            format!(
                "no {channel_type} channel with provider {provider} is configured on this server"
            ),
        )
    };
    let first = found.next().ok_or_else(not_found)?;
    if found.next().is_some() {
        return Err(ApiError::not_found(
            "channel_not_found",
            format!(
                "several {channel_type} channels use provider {provider}; name one with ?channel_id="
            ),
        ));
    }
    Ok(first)
}

/// The URL the provider signed.
pub(crate) fn signed_url(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    if let Some(base) = &state.public_url {
        return Ok(format!("{}{path_and_query}", base.trim_end_matches('/')));
    }
    // The server itself speaks plain HTTP; behind a TLS proxy the public
    // URL must be configured (forwarded headers are not trusted).
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']))
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "the request has no Host header to verify the signature against",
            )
        })?;
    Ok(format!("http://{host}{path_and_query}"))
}

#[allow(clippy::too_many_arguments)]
async fn run(
    state: &AppState,
    channel_type: &str,
    provider: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: WebhookKind,
) -> Result<Response, ApiError> {
    let mounted = select(state, channel_type, provider, uri.query())?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.body_limit)
        } else {
            ApiError::bad_request("invalid_body", r.body_text())
        }
    })?;
    let request = WebhookRequest {
        kind,
        method: "POST".into(),
        url: signed_url(state, uri, headers)?,
        headers: headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    let outcome = mounted
        .receiver
        .verify_and_parse(&request)
        .map_err(|e| refusal(&mounted.channel_id, &e))?;
    tracing::debug!(target: "roomkit.server.webhooks", channel_id = %mounted.channel_id, messages = outcome.messages.len(), statuses = outcome.statuses.len(), "webhook verified");
    for message in &outcome.messages {
        check_sender_rate(state, &mounted.channel_id, &message.sender_id)?;
    }
    for message in outcome.messages {
        deliver_inbound(state, &mounted.channel_id, message).await?;
    }
    for update in outcome.statuses {
        let pmid = update.provider_message_id.clone();
        match state.kit.record_delivery_status(update).await? {
            Some(event) => {
                tracing::info!(target: "roomkit.server.webhooks", channel_id = %mounted.channel_id, event_id = %event.id, provider_message_id = ?pmid, "delivery status applied");
            }
            None => {
                tracing::info!(target: "roomkit.server.webhooks", channel_id = %mounted.channel_id, provider_message_id = ?pmid, "delivery status for a message this server does not know; ignored");
            }
        }
    }
    let reply = outcome.reply;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = (status, reply.body).into_response();
    if let Some(ct) = reply
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(response)
}

/// Runs one verified message through the inbound pipeline. A message that
/// names a room which no longer exists (an old email thread) is routed
/// like a new one.
async fn deliver_inbound(
    state: &AppState,
    channel_id: &ChannelId,
    message: InboundMessage,
) -> Result<(), ApiError> {
    let room_named = message.room_id.is_some();
    let mut fallback = message.clone();
    let result = match state.kit.process_inbound(message).await {
        Err(RoomKitError::RoomNotFound(_)) if room_named => {
            fallback.room_id = None;
            state.kit.process_inbound(fallback).await
        }
        other => other,
    };
    match result {
        Ok(r) => {
            let event_id = r.event.as_ref().map(|e| e.id.to_string());
            tracing::info!(target: "roomkit.server.webhooks", channel_id = %channel_id, event_id = ?event_id, blocked = r.blocked, reason = ?r.reason, "inbound webhook message processed");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(target: "roomkit.server.webhooks", channel_id = %channel_id, error = %e, "inbound webhook message failed");
            Err(e.into())
        }
    }
}

/// The webhook limits of one verified message: messages per sender and
/// route, and messages from senders not seen before (each may open a room)
/// per route. A refusal is a 429 the provider retries later; nothing of the
/// request is stored.
fn check_sender_rate(
    state: &AppState,
    channel_id: &ChannelId,
    sender: &str,
) -> Result<(), ApiError> {
    let Some(senders) = &state.webhook_sender_limiter else {
        return Ok(());
    };
    let key = format!("{channel_id}\u{0}{sender}");
    let refused = |wait: std::time::Duration, what: &str| {
        state.metrics.rate_limited();
        tracing::info!(target: "roomkit.server.webhooks", channel_id = %channel_id, limit = what, "webhook message rate limited");
        let mut e = ApiError::rate_limited(wait.as_secs().max(1));
        e.message = format!("too many webhook messages ({what}); retry later");
        e
    };
    if let Some(new_senders) = &state.webhook_new_sender_limiter
        && !senders.knows(&key)
    {
        new_senders
            .check(channel_id.as_str())
            .map_err(|w| refused(w, "new senders on this route"))?;
    }
    senders.check(&key).map_err(|w| refused(w, "this sender"))
}

fn refusal(channel_id: &ChannelId, e: &WebhookError) -> ApiError {
    match e {
        WebhookError::BadSignature(_) => {
            tracing::warn!(target: "roomkit.server.webhooks", channel_id = %channel_id, error = %e, "webhook refused: bad signature");
            ApiError::new(StatusCode::FORBIDDEN, "invalid_signature", e.to_string())
        }
        WebhookError::Malformed(_) => {
            tracing::info!(target: "roomkit.server.webhooks", channel_id = %channel_id, error = %e, "malformed webhook");
            ApiError::bad_request("malformed_webhook", e.to_string())
        }
        WebhookError::Unsupported(_) => ApiError::not_found("webhook_not_found", e.to_string()),
        _ => ApiError::bad_request("malformed_webhook", e.to_string()),
    }
}
