//! A fake OpenAI audio API: `POST /v1/audio/transcriptions` (multipart,
//! answering scripted text) and `POST /v1/audio/speech` (streaming a tone as
//! 24 kHz PCM in several chunks of odd sizes, so samples straddle chunks).
//!
//! Both need `Authorization: Bearer <key>` (else 401 `invalid_api_key`).
//! Transcriptions need a multipart body with a `model` field and a `file`
//! part holding a WAV file; speech needs JSON with `model`, `input` and
//! `voice`, and `response_format` `pcm` (the only format the fake makes).
//! Refusals use OpenAI's `{"error": {message, type, param, code}}` shape.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::{
    Common, Faults, Recorded, Running, Script, faulty_body, handle_http, json_reply, lock, pieces,
    serve, speech_ms, tone,
};

/// The sample rate of the speech the fake sends.
pub const SPEECH_RATE: u32 = 24_000;
/// The size of the speech answer's chunks (odd on purpose).
const CHUNK: usize = 4_801;

#[derive(Debug)]
struct OaState {
    key: String,
    script: Script,
    common: Arc<Common>,
}

/// A running fake OpenAI audio API. Stops when dropped.
#[derive(Debug)]
pub struct FakeOpenAiAudio {
    running: Running,
    state: Arc<OaState>,
}

impl FakeOpenAiAudio {
    /// Starts on a free loopback port, expecting `api_key`, answering
    /// transcriptions with `transcripts` in order (then with empty text).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(
        api_key: &str,
        transcripts: impl IntoIterator<Item = impl Into<String>>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(OaState {
            key: api_key.to_owned(),
            script: Script::new(transcripts),
            common: Arc::new(Common::default()),
        });
        let s = state.clone();
        let app = axum::Router::new().fallback(move |req: axum::http::Request<Body>| {
            let s = s.clone();
            async move {
                let common = s.common.clone();
                handle_http(&common, req, |rec, faults| route(&s, rec, faults)).await
            }
        });
        let (addr, task) = serve(app).await?;
        Ok(Self {
            running: Running { addr, task },
            state,
        })
    }

    /// The base URL to give the providers (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.running.addr)
    }

    /// Changes the faults (`stall_after` and `close_after` count bytes of
    /// speech audio).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.state.common.faults) = faults;
    }

    /// Adds transcripts to the script.
    pub fn push_transcripts(&self, items: impl IntoIterator<Item = String>) {
        self.state.script.push(items);
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.common.requests).clone()
    }
}

fn oa_error(
    status: StatusCode,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    json_reply(
        status,
        json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }}),
    )
}

fn route(s: &OaState, r: &Recorded, faults: Faults) -> Response {
    let path = r.path.split('?').next().unwrap_or("");
    let known = matches!(path, "/v1/audio/transcriptions" | "/v1/audio/speech");
    if !known {
        return oa_error(StatusCode::NOT_FOUND, "Invalid URL", None, None);
    }
    if r.method != "POST" {
        return oa_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            None,
            None,
        );
    }
    if r.header("authorization") != Some(format!("Bearer {}", s.key).as_str()) {
        return oa_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            None,
            Some("invalid_api_key"),
        );
    }
    if path == "/v1/audio/transcriptions" {
        transcription(s, r)
    } else {
        speech(r, faults)
    }
}

/// One part of a multipart body.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) data: Vec<u8>,
}

/// Splits a `multipart/form-data` body; `None` when it is not one.
pub(crate) fn multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type
        .strip_prefix("multipart/form-data")?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    if boundary.is_empty() {
        return None;
    }
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut rest = body;
    // Skip the preamble up to the first delimiter.
    let first = find(rest, &delimiter)?;
    rest = &rest[first + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        rest = &rest[head_end + 4..];
        let end = find(rest, &delimiter)?;
        let data = rest[..end].strip_suffix(b"\r\n")?.to_vec();
        rest = &rest[end + delimiter.len()..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(key)
                    .and_then(|v| v.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_owned())
            })
        };
        parts.push(Part {
            name: param("name")?,
            filename: param("filename"),
            data,
        });
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn transcription(s: &OaState, r: &Recorded) -> Response {
    let Some(parts) = multipart(r.header("content-type").unwrap_or(""), &r.body) else {
        return oa_error(
            StatusCode::BAD_REQUEST,
            "Could not parse multipart form",
            None,
            None,
        );
    };
    let field = |n: &str| parts.iter().find(|p| p.name == n);
    let Some(model) = field("model").map(|p| String::from_utf8_lossy(&p.data).into_owned()) else {
        return oa_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            Some("model"),
            None,
        );
    };
    if model.trim().is_empty() {
        return oa_error(
            StatusCode::BAD_REQUEST,
            "invalid model",
            Some("model"),
            None,
        );
    }
    let Some(file) = field("file").filter(|p| p.filename.is_some()) else {
        return oa_error(
            StatusCode::BAD_REQUEST,
            "you must provide a file parameter",
            Some("file"),
            None,
        );
    };
    if !(file.data.len() >= 44 && file.data.starts_with(b"RIFF") && &file.data[8..12] == b"WAVE") {
        return oa_error(
            StatusCode::BAD_REQUEST,
            "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga', 'oga', 'ogg', 'wav', 'webm']",
            Some("file"),
            Some("invalid_value"),
        );
    }
    let text = s.script.next();
    let format = field("response_format").map(|p| String::from_utf8_lossy(&p.data).into_owned());
    match format.as_deref() {
        None | Some("json") => json_reply(
            StatusCode::OK,
            json!({"text": text, "usage": {"type": "duration", "seconds": 1}}),
        ),
        Some("text") => Response::builder()
            .header("content-type", "text/plain")
            .body(Body::from(text))
            .unwrap_or_default(),
        Some(_) => oa_error(
            StatusCode::BAD_REQUEST,
            "unsupported response_format",
            Some("response_format"),
            None,
        ),
    }
}

fn speech(r: &Recorded, faults: Faults) -> Response {
    let Some(body) = r.json() else {
        return oa_error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            None,
            None,
        );
    };
    for key in ["model", "input", "voice"] {
        if body
            .get(key)
            .and_then(|v| v.as_str())
            .is_none_or(str::is_empty)
        {
            return oa_error(
                StatusCode::BAD_REQUEST,
                &format!("Missing required parameter: '{key}'."),
                Some(key),
                Some("missing_required_parameter"),
            );
        }
    }
    let format = body
        .get("response_format")
        .and_then(|v| v.as_str())
        .unwrap_or("mp3");
    if format != "pcm" {
        return oa_error(
            StatusCode::BAD_REQUEST,
            "This fake only speaks response_format 'pcm'.",
            Some("response_format"),
            None,
        );
    }
    let input = body.get("input").and_then(|v| v.as_str()).unwrap_or("");
    let audio = tone(SPEECH_RATE, speech_ms(input));
    Response::builder()
        .header("content-type", "audio/pcm")
        .body(faulty_body(pieces(&audio, CHUNK), faults))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_are_found() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n\r\n--XyZ--\r\n";
        let parts = multipart("multipart/form-data; boundary=XyZ", body).unwrap_or_default();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "model");
        assert_eq!(parts[0].data, b"whisper-1");
        assert_eq!(parts[1].filename.as_deref(), Some("a.wav"));
        assert_eq!(parts[1].data, b"RIFF\r\n");
        assert!(multipart("multipart/form-data; boundary=XyZ", b"junk").is_none());
        assert!(multipart("application/json", body).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        #[test]
        fn multipart_parsing_never_panics(
            ct in ".{0,60}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = multipart(&ct, &body);
            let _ = multipart("multipart/form-data; boundary=b", &body);
            let _ = super::super::query_pairs(&ct);
        }
    }
}
