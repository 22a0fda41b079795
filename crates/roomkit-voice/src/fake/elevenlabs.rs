//! A fake ElevenLabs: `POST /v1/text-to-speech/{voice_id}/stream` (a tone
//! as raw PCM at the asked `output_format=pcm_<rate>`, in chunks of odd
//! sizes) and `/stream/with-timestamps` (one JSON object a line, each with
//! `audio_base64` and the `alignment` of the characters it speaks, times in
//! seconds from the start of the stream).
//!
//! Requests need the `xi-api-key` header (else 401 with ElevenLabs'
//! `{"detail": {"status": "invalid_api_key", ...}}`), a JSON body with
//! `text` (else 422 with a validation `detail` list) and a PCM
//! `output_format` (the fake makes no MP3: 400 otherwise). Every character
//! lasts 60 ms.

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::json;

use super::{
    Common, Faults, Recorded, Running, faulty_body, handle_http, json_reply, lock, pieces, serve,
    tone,
};

/// The PCM rates the fake makes.
const RATES: [u32; 6] = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];
/// Characters per line of the timestamps answer.
const CHARS_PER_LINE: usize = 7;
/// Milliseconds of speech per character.
const CHAR_MS: u64 = 60;

#[derive(Debug)]
struct ElState {
    key: String,
    common: Arc<Common>,
}

/// A running fake ElevenLabs. Stops when dropped.
#[derive(Debug)]
pub struct FakeElevenLabs {
    running: Running,
    state: Arc<ElState>,
}

impl FakeElevenLabs {
    /// Starts on a free loopback port, expecting `api_key`.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(api_key: &str) -> std::io::Result<Self> {
        let state = Arc::new(ElState {
            key: api_key.to_owned(),
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

    /// The base URL to give the provider (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    /// Changes the faults (`stall_after` and `close_after` count bytes of
    /// the answer body).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.state.common.faults) = faults;
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.common.requests).clone()
    }
}

fn detail(status: StatusCode, code: &str, message: &str) -> Response {
    json_reply(
        status,
        json!({"detail": {"status": code, "message": message}}),
    )
}

fn route(s: &ElState, r: &Recorded, faults: Faults) -> Response {
    let path = r.path.split('?').next().unwrap_or("");
    let Some(rest) = path.strip_prefix("/v1/text-to-speech/") else {
        return json_reply(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
    };
    let (voice, timestamps) = match rest.split_once('/') {
        Some((v, "stream")) => (v, false),
        Some((v, "stream/with-timestamps")) => (v, true),
        _ => return json_reply(StatusCode::NOT_FOUND, json!({"detail": "Not Found"})),
    };
    if r.method != "POST" {
        return json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"}),
        );
    }
    if r.header("xi-api-key") != Some(s.key.as_str()) {
        return detail(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key",
        );
    }
    if voice.is_empty() {
        return detail(
            StatusCode::NOT_FOUND,
            "voice_not_found",
            "A voice with the voice_id was not found.",
        );
    }
    let text = r
        .json()
        .and_then(|b| b.get("text").and_then(|t| t.as_str()).map(str::to_owned));
    let Some(text) = text else {
        return json_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}]}),
        );
    };
    let format = r
        .query("output_format")
        .unwrap_or_else(|| "mp3_44100_128".to_owned());
    let Some(rate) = format
        .strip_prefix("pcm_")
        .and_then(|r| r.parse::<u32>().ok())
        .filter(|r| RATES.contains(r))
    else {
        return detail(
            StatusCode::BAD_REQUEST,
            "invalid_output_format",
            "This fake only makes pcm_<rate> output.",
        );
    };
    let chars: Vec<char> = text.chars().collect();
    let body = if timestamps {
        let mut lines = Vec::new();
        for (n, group) in chars.chunks(CHARS_PER_LINE).enumerate() {
            let first = (n * CHARS_PER_LINE) as u64;
            let audio = tone(rate, CHAR_MS * group.len() as u64);
            #[allow(clippy::cast_precision_loss)]
            let at = |i: u64| (i * CHAR_MS) as f64 / 1000.0;
            let starts: Vec<f64> = (0..group.len() as u64).map(|i| at(first + i)).collect();
            let ends: Vec<f64> = (0..group.len() as u64).map(|i| at(first + i + 1)).collect();
            let alignment = json!({
                "characters": group.iter().map(char::to_string).collect::<Vec<_>>(),
                "character_start_times_seconds": starts,
                "character_end_times_seconds": ends,
            });
            let line = json!({
                "audio_base64": base64::engine::general_purpose::STANDARD.encode(&audio),
                "alignment": alignment,
                "normalized_alignment": alignment,
            });
            lines.push(format!("{line}\n"));
        }
        lines.concat().into_bytes()
    } else {
        tone(rate, (CHAR_MS * chars.len() as u64).max(CHAR_MS))
    };
    let content_type = if timestamps {
        "application/json"
    } else {
        "audio/pcm"
    };
    Response::builder()
        .header("content-type", content_type)
        .body(faulty_body(pieces(&body, 3_001), faults))
        .unwrap_or_default()
}
