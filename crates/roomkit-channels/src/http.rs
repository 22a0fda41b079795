//! Shared HTTP plumbing for vendor APIs: one client per provider, and the
#![cfg_attr(
    not(any(
        feature = "twilio",
        feature = "telnyx",
        feature = "sendgrid",
        feature = "webhook",
        feature = "telegram"
    )),
    allow(dead_code)
)]
//! mapping of answers to [`ProviderError`].

use reqwest::Response;

use crate::error::ProviderError;
use crate::outbound;

/// A client under the outbound rules (no redirects, bounded connect and
/// total time; the engine also bounds each delivery).
pub(crate) fn client() -> reqwest::Client {
    outbound::client().unwrap_or_else(|_| reqwest::Client::new())
}

pub(crate) fn transport(
    provider: &'static str,
    operation: &'static str,
    e: &reqwest::Error,
) -> ProviderError {
    ProviderError::Transport {
        provider,
        operation,
        message: transport_text(e).to_owned(),
    }
}

/// A fixed description of a transport failure (the client's own text names
/// the URL, which may carry a token; it goes to a debug log only).
pub(crate) fn transport_text(e: &reqwest::Error) -> &'static str {
    tracing::debug!(target: "roomkit.channels.http", error = %e, "transport failure");
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "request failed"
    }
}

/// Seconds from a `Retry-After` header (delta-seconds form).
pub(crate) fn retry_after(resp: &Response) -> Option<f64> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
}

/// A vendor's error code, message and retry-after found in its error body.
pub(crate) type ErrorFields = (Option<String>, Option<String>, Option<f64>);

/// Reads a successful JSON answer (at most
/// [`outbound::DEFAULT_BODY_LIMIT`] bytes), or turns an error answer into a
/// [`ProviderError::Status`] using `code_of` to find the vendor's code and
/// retry hint in its error body.
///
/// Nothing of the vendor's text reaches the error a caller sees: the message
/// is a fixed description of the status, the code is kept only when it is a
/// short token, and the vendor's own message goes to a debug log.
pub(crate) async fn json_or_error(
    provider: &'static str,
    operation: &'static str,
    resp: Response,
    code_of: fn(&serde_json::Value) -> ErrorFields,
) -> Result<serde_json::Value, ProviderError> {
    let status = resp.status().as_u16();
    let header_retry = retry_after(&resp);
    let bytes = match outbound::read_capped(resp, outbound::DEFAULT_BODY_LIMIT).await {
        Ok(b) => b,
        Err(outbound::BodyError::Transport(e)) => return Err(transport(provider, operation, &e)),
        Err(e @ outbound::BodyError::TooLarge { .. }) => {
            tracing::debug!(target: "roomkit.channels.http", provider, operation, status, "answer body over the cap");
            if !(200..300).contains(&status) {
                return Err(ProviderError::Status {
                    provider,
                    operation,
                    status,
                    code: None,
                    message: status_text(status).to_owned(),
                    retry_after_seconds: header_retry,
                });
            }
            return Err(ProviderError::Response {
                provider,
                operation,
                message: format!("HTTP {status}: {e}"),
            });
        }
    };
    let body: Option<serde_json::Value> = if bytes.is_empty() {
        Some(serde_json::Value::Null)
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    if body.is_none() {
        tracing::debug!(target: "roomkit.channels.http", provider, operation, status, body = %outbound::log_preview(&bytes), "answer is not JSON");
    }
    let body = body.unwrap_or(serde_json::Value::Null);
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let (code, message, body_retry) = code_of(&body);
    tracing::debug!(target: "roomkit.channels.http", provider, operation, status, vendor_code = ?code, vendor_message = ?message.as_deref().map(|m| outbound::log_preview(m.as_bytes())), body = %outbound::log_preview(&bytes), "error answer");
    Err(ProviderError::Status {
        provider,
        operation,
        status,
        code: code.filter(|c| outbound::is_short_token(c, 32)),
        message: status_text(status).to_owned(),
        retry_after_seconds: header_retry.or(body_retry),
    })
}

/// A fixed description of an error status.
pub(crate) fn status_text(status: u16) -> &'static str {
    match status {
        300..=399 => "redirect not followed",
        400 => "bad request",
        401 | 403 => "refused: not authorized",
        404 => "not found",
        408 => "request timeout",
        413 => "request too large",
        429 => "rate limited",
        402 | 405..=407 | 409..=412 | 414..=428 | 430..=499 => "request refused",
        500..=599 => "server error",
        _ => "unexpected status",
    }
}
