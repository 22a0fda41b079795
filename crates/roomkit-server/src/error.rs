//! Errors of the server: [`ServerError`] for starting and configuring it,
//! [`ApiError`] for the `{"error":{"code","message"}}` answers of the HTTP
//! surface. This module is the one place that maps core errors to status
//! codes.

use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use roomkit_core::{RoomKitError, StoreError};
use serde::Serialize;

/// Failures of building or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A setting is unusable.
    #[error("{key}: {problem}")]
    Config {
        /// The setting, e.g. `hooks[0].url`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The engine refused the setup.
    #[error(transparent)]
    Core(#[from] RoomKitError),
}

impl ServerError {
    /// A configuration error for `key`.
    pub fn config(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// An error answer of the HTTP surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code, lower snake case.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Seconds to wait before retrying (429 only).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 for an invalid request; the message names the field.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for an unknown resource.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 401 for a missing or wrong key.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: send \"Authorization: Bearer <key>\"",
        )
    }

    /// 413 for a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 429 with a retry hint.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this API key; slow down",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 500 for a bug the server contained.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: &self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            response.headers_mut().insert(RETRY_AFTER, v);
        }
        response
    }
}

impl From<RoomKitError> for ApiError {
    fn from(e: RoomKitError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            RoomKitError::RoomNotFound(_) => (StatusCode::NOT_FOUND, "room_not_found".to_owned()),
            RoomKitError::RoomExists(_) => (StatusCode::CONFLICT, "room_exists".to_owned()),
            RoomKitError::ChannelNotRegistered(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "channel_not_registered".to_owned(),
            ),
            RoomKitError::ChannelAlreadyRegistered(_) => (
                StatusCode::CONFLICT,
                "channel_already_registered".to_owned(),
            ),
            RoomKitError::ChannelNotAttached { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "channel_not_attached".to_owned(),
            ),
            RoomKitError::ChannelAlreadyAttached { .. } => {
                (StatusCode::CONFLICT, "channel_already_attached".to_owned())
            }
            RoomKitError::EventNotFound(_) => (StatusCode::NOT_FOUND, "event_not_found".to_owned()),
            RoomKitError::NotFound { kind, .. } => {
                (StatusCode::NOT_FOUND, format!("{kind}_not_found"))
            }
            RoomKitError::IllegalTransition { .. } => {
                (StatusCode::CONFLICT, "illegal_transition".to_owned())
            }
            RoomKitError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request".to_owned()),
            RoomKitError::Channel { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "channel_rejected".to_owned(),
            ),
            RoomKitError::Lock { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "lock_unavailable".to_owned(),
            ),
            RoomKitError::Store(s) => match s {
                StoreError::NotFound { kind, .. } => {
                    (StatusCode::NOT_FOUND, format!("{kind}_not_found"))
                }
                StoreError::Conflict { kind, .. } => {
                    (StatusCode::CONFLICT, format!("{kind}_exists"))
                }
                StoreError::DuplicateKey { .. } | StoreError::IndexConflict { .. } => {
                    (StatusCode::CONFLICT, "conflict".to_owned())
                }
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable".to_owned(),
                ),
            },
            RoomKitError::ShuttingDown => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down".to_owned())
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal".to_owned()),
        };
        if status.is_server_error() {
            tracing::error!(target: "roomkit.server", %status, code = %code, error = %message, "request failed");
        }
        Self::new(status, code, message)
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// Largest error body the safety net reads back to reuse as the message.
const PLAIN_ERROR_LIMIT: usize = 16 * 1024;

/// Middleware: every error answer leaves in the `{"error":{..}}` shape.
/// Handlers and this crate's extractors already answer so; this catches what
/// a framework layer or extractor rejection answers in plain text (an
/// unexpected method on the WebSocket route, a body the limit layer
/// refused, ...), keeping its status and using its text as the message.
/// Provider webhook replies are left as the provider expects them.
pub async fn json_error_shape(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let webhook = request.uri().path().starts_with("/webhooks/");
    let response = next.run(request).await;
    let status = response.status();
    if webhook || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_ERROR_LIMIT)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request".to_owned(),
        StatusCode::UPGRADE_REQUIRED => "upgrade_required".to_owned(),
        s => s
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace([' ', '-'], "_"),
    };
    let mut answer = ApiError::new(status, code, text).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}
