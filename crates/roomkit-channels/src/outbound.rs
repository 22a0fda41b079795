//! Outbound HTTP rules shared by every client that calls out of the
//! process: vendors here, and (through this public module) the server's
//! HTTP hooks and identity resolver.
//!
//! Three rules hold for each of them: redirects are never followed (a 3xx
//! answer is an error answer like any other), connecting and the whole
//! exchange are bounded in time, and an answer body is read only up to a
//! byte cap, chunk by chunk, so a huge or endless body is cut off instead of
//! being buffered whole.

use std::time::Duration;

use reqwest::Response;

/// How long connecting may take, unless a client says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one whole exchange may take, unless a client says otherwise.
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer body read from a vendor, webhook endpoint or hook.
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// How many characters of a remote body may appear in a debug log line.
pub const LOG_PREVIEW_CHARS: usize = 200;

/// Why an answer body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is longer than the cap (announced or actually sent).
    #[error("the answer body is larger than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// The connection failed while the body was read.
    #[error("reading the answer body failed")]
    Transport(#[source] reqwest::Error),
}

/// A client builder with the outbound rules applied: no redirects, the
/// given connect and total timeouts, and the TLS provider installed.
pub fn builder(connect: Duration, total: Duration) -> reqwest::ClientBuilder {
    // reqwest is built without a default TLS provider; use ring unless the
    // process already chose one (installing twice is harmless).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
        .timeout(total)
        .pool_idle_timeout(Duration::from_secs(30))
}

/// A client with the outbound rules and the default timeouts.
///
/// # Errors
/// When the TLS backend cannot be set up.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    builder(DEFAULT_CONNECT_TIMEOUT, DEFAULT_TOTAL_TIMEOUT).build()
}

/// Reads `response`'s body, at most `limit` bytes: an announced length over
/// the cap fails before anything is read, and the read stops at the first
/// chunk that goes past it (dropping the response closes the connection).
///
/// # Errors
/// [`BodyError::TooLarge`] past the cap, [`BodyError::Transport`] when the
/// connection fails.
pub async fn read_capped(mut response: Response, limit: usize) -> Result<Vec<u8>, BodyError> {
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

/// The start of a remote body, for a debug log line only (never for an
/// error a caller sees).
pub fn log_preview(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(LOG_PREVIEW_CHARS * 4)])
        .chars()
        .take(LOG_PREVIEW_CHARS)
        .collect()
}

/// Whether `s` is a short identifier (letters, digits, `-_.:`, at most
/// `max` bytes): the only kind of remote text, such as a provider's message
/// id or error code, that is passed on to callers.
pub fn is_short_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP/1.1 server that answers with `head` and then writes
    /// `chunks` chunks of `chunk_len` bytes, counting what it wrote.
    async fn serve(
        head: &'static str,
        chunks: usize,
        chunk_len: usize,
    ) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let task = tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return 0;
            };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            if sock.write_all(head.as_bytes()).await.is_err() {
                return 0;
            }
            let chunk = vec![b'x'; chunk_len];
            let mut written = 0;
            for _ in 0..chunks {
                if sock.write_all(&chunk).await.is_err() {
                    break;
                }
                written += chunk_len;
            }
            written
        });
        (format!("http://{addr}/"), task)
    }

    const UNSIZED: &str = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n";

    async fn get(url: &str) -> Response {
        client()
            .unwrap_or_else(|e| panic!("client: {e}"))
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("send: {e}"))
    }

    #[tokio::test]
    async fn a_body_under_the_cap_is_read_whole() {
        let (url, server) = serve(UNSIZED, 4, 1000).await;
        let body = read_capped(get(&url).await, 4000)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(body.len(), 4000);
        assert_eq!(server.await.unwrap_or(0), 4000);
    }

    #[tokio::test]
    async fn a_streamed_body_past_the_cap_is_cut_off_early() {
        // 64 MB offered; the reader must stop long before.
        let (url, server) = serve(UNSIZED, 1024, 64 * 1024).await;
        let err = read_capped(get(&url).await, 100_000).await;
        assert!(
            matches!(err, Err(BodyError::TooLarge { limit: 100_000 })),
            "{err:?}"
        );
        let written = server.await.unwrap_or(usize::MAX);
        assert!(
            written < 32 * 1024 * 1024,
            "the server could write {written} bytes"
        );
    }

    #[tokio::test]
    async fn an_announced_length_past_the_cap_fails_before_reading() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 5000000\r\nconnection: close\r\n\r\n";
        let (url, _server) = serve(head, 1, 10).await;
        let err = read_capped(get(&url).await, 1000).await;
        assert!(
            matches!(err, Err(BodyError::TooLarge { limit: 1000 })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_body_exactly_at_the_cap_is_accepted() {
        let (url, _server) = serve(UNSIZED, 2, 500).await;
        let body = read_capped(get(&url).await, 1000)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        assert_eq!(body.len(), 1000);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let head = "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/internal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        let (url, _server) = serve(head, 0, 0).await;
        let resp = get(&url).await;
        assert_eq!(resp.status().as_u16(), 302);
    }

    #[test]
    fn short_tokens_and_previews() {
        assert!(is_short_token("SM123abc", 16));
        assert!(is_short_token("ext-1.2:3_4", 16));
        assert!(!is_short_token("", 16));
        assert!(!is_short_token("has space", 16));
        assert!(!is_short_token(&"a".repeat(17), 16));
        assert!(!is_short_token("<html>", 16));
        assert_eq!(
            log_preview("é".repeat(1000).as_bytes()).chars().count(),
            200
        );
        assert_eq!(log_preview(b"short"), "short");
    }
}
