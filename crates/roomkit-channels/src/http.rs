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

use std::time::Duration;

use reqwest::Response;

use crate::error::ProviderError;

/// A client with conservative timeouts (the engine also bounds each
/// delivery).
pub(crate) fn client() -> reqwest::Client {
    // reqwest is built without a default TLS provider; use ring unless the
    // process already chose one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

pub(crate) fn transport(
    provider: &'static str,
    operation: &'static str,
    e: &reqwest::Error,
) -> ProviderError {
    ProviderError::Transport {
        provider,
        operation,
        message: e.to_string(),
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

/// Reads a successful JSON answer, or turns an error answer into a
/// [`ProviderError::Status`] using `code_of` to find the vendor's code and
/// message in its error body.
pub(crate) async fn json_or_error(
    provider: &'static str,
    operation: &'static str,
    resp: Response,
    code_of: fn(&serde_json::Value) -> ErrorFields,
) -> Result<serde_json::Value, ProviderError> {
    let status = resp.status().as_u16();
    let header_retry = retry_after(&resp);
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| transport(provider, operation, &e))?;
    let body: serde_json::Value = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).chars().take(500).collect())
        })
    };
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let (code, message, body_retry) = code_of(&body);
    Err(ProviderError::Status {
        provider,
        operation,
        status,
        code,
        message: message.unwrap_or_else(|| format!("HTTP {status}")),
        retry_after_seconds: header_retry.or(body_retry),
    })
}
