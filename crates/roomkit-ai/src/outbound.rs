//! The outbound HTTP rules of this crate's clients (providers, HTTP tools,
//! MCP over HTTP): redirects are never followed, connecting is bounded in
//! time, and answer bodies are read only up to a byte cap. The server's
//! transport channels follow the same rules with their own copy of these
//! few lines, since the crates do not depend on each other.

use std::time::Duration;

/// Why an answer body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The body is longer than the cap.
    #[error("the answer body is larger than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The connection failed while the body was read.
    #[error("reading the answer body failed")]
    Transport(#[source] reqwest::Error),
}

/// A client builder with no redirects, the connect timeout set and the TLS
/// provider installed. Callers add an overall limit where a whole exchange
/// has one (streamed replies are bounded per read instead).
pub(crate) fn builder(connect: Duration) -> reqwest::ClientBuilder {
    // Installing twice is harmless: the first provider stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
}

/// Reads at most `limit` bytes of `response`'s body; an announced or actual
/// length past the cap is an error, and reading stops there.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads the first `limit` bytes of `response`'s body and stops there;
/// `true` when the body was longer.
pub(crate) async fn read_prefix(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}
