//! Request parsing for the HTTP surface: strict JSON bodies, query
//! parameters, and page/cursor handling. Every failure here is a 400 (or a
//! 413 for an oversized body) with a message naming the field.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// Default page size of list endpoints.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size; larger requests are clamped to it.
pub const MAX_LIMIT: usize = 500;

/// A JSON body parsed strictly: unknown fields, wrong types and malformed
/// JSON are a 400 naming the field. An empty body reads as `{}`.
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(state.body_limit)
            } else {
                ApiError::bad_request("invalid_body", r.body_text())
            }
        })?;
        parse_json(&bytes).map(StrictJson)
    }
}

/// Parses a JSON document strictly into `T` (see [`StrictJson`]).
///
/// # Errors
/// A 400 [`ApiError`] naming the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // Two steps: the syntax first, then the shape. serde_json reports some
    // type errors (a number where an enum is expected) as syntax errors when
    // it reads straight into `T`, without a field; read from a parsed tree,
    // every type error is a data error at a path.
    let tree: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    serde_path_to_error::deserialize(tree).map_err(json_error)
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = if path == "." || path.is_empty() {
        format!("invalid request body: {inner}")
    } else {
        format!("invalid field `{path}`: {inner}")
    };
    ApiError::bad_request("invalid_field", message)
}

/// The path parameters of a request. Like axum's `Path`, but a segment that
/// does not decode (`/rooms/%ff`) or does not fit is a 400 in the JSON error
/// shape, naming the segment.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rejection) => Err(path_error(&rejection)),
        }
    }
}

fn path_error(rejection: &axum::extract::rejection::PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    use axum::extract::rejection::PathRejection;
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        // No path parameters matched: a routing fault, not the client's.
        return ApiError::internal(format!("path parameters unavailable: {rejection}"));
    };
    let message = match e.kind() {
        ErrorKind::InvalidUtf8InPathParam { key } => {
            format!("path segment `{key}` is not valid UTF-8 once percent-decoded")
        }
        ErrorKind::ParseErrorAtKey { key, .. } | ErrorKind::DeserializeError { key, .. } => {
            format!("path segment `{key}`: {}", e.body_text())
        }
        other => format!("invalid path: {other}"),
    };
    ApiError::bad_request("invalid_path", message)
}

/// Serde helper for fields where `null` means "clear" and absence means
/// "leave as is": `Option<Option<T>>` with `#[serde(default)]`.
pub mod nullable {
    use super::*;

    /// Deserializes a present value (null included) as `Some(..)`.
    ///
    /// # Errors
    /// When the value is not a `T` or null.
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Ok(Some(Option::<T>::deserialize(d)?))
    }
}

/// The query parameters of a request, with typed accessors that answer 400
/// naming the parameter.
#[derive(Debug, Default)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

impl Params {
    /// A text parameter; an empty value counts as absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A required text parameter.
    ///
    /// # Errors
    /// 400 when it is missing.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.text(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter `{name}` is required"),
            )
        })
    }

    /// A non-negative integer parameter.
    ///
    /// # Errors
    /// 400 when it is not one.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("query parameter `{name}` must be a non-negative integer, got {v:?}"),
                )
            }),
        }
    }

    /// A value parsed from its lower snake case JSON name (an enum).
    ///
    /// # Errors
    /// 400 for an unknown value.
    pub fn parsed<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(v) => serde_json::from_value(serde_json::Value::String(v.to_owned()))
                .map(Some)
                .map_err(|e| {
                    ApiError::bad_request("invalid_query", format!("query parameter `{name}`: {e}"))
                }),
        }
    }

    /// The page size: 50 by default, clamped to 500; 0 or negative is a 400.
    ///
    /// # Errors
    /// 400 for 0, a negative number or text.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let Some(v) = self.0.get("limit") else {
            return Ok(DEFAULT_LIMIT);
        };
        let n: i64 = v.trim().parse().map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter `limit` must be an integer, got {v:?}"),
            )
        })?;
        if n <= 0 {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter `limit` must be at least 1, got {n}"),
            ));
        }
        Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT))
    }

    /// The decoded cursor of kind `kind`, if one was given.
    ///
    /// # Errors
    /// 400 for a cursor this server did not issue for this list.
    pub fn cursor(&self, kind: char) -> Result<Option<String>, ApiError> {
        match self.text("cursor") {
            None => Ok(None),
            Some(c) => Cursor::decode(c, kind).map(Some).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_cursor",
                    format!("query parameter `cursor`: {c:?} is not a cursor of this list"),
                )
            }),
        }
    }

    /// The decoded offset cursor (for lists paged by position).
    ///
    /// # Errors
    /// 400 for a bad cursor.
    pub fn offset(&self) -> Result<usize, ApiError> {
        match self.cursor('o')? {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad_request("invalid_cursor", "query parameter `cursor` is not valid")
            }),
        }
    }
}

/// Opaque cursors: a kind letter and a value, hex-encoded so that clients
/// treat them as tokens.
pub struct Cursor;

impl Cursor {
    /// Encodes a cursor.
    pub fn encode(kind: char, value: &str) -> String {
        let raw = format!("{kind}:{value}");
        raw.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// Decodes a cursor of the given kind.
    pub fn decode(text: &str, kind: char) -> Option<String> {
        if !text.len().is_multiple_of(2) || text.len() > 4096 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect();
        let raw = String::from_utf8(bytes?).ok()?;
        let (k, value) = raw.split_once(':')?;
        (k.len() == 1 && k.starts_with(kind)).then(|| value.to_owned())
    }
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of a list held in memory, by position.
    ///
    /// # Errors
    /// 400 for a bad limit or cursor.
    pub fn by_offset(items: Vec<T>, params: &Params) -> Result<Self, ApiError> {
        let limit = params.limit()?;
        let offset = params.offset()?;
        let total = items.len();
        let items: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
        let end = offset.saturating_add(items.len());
        let next_cursor = (end < total).then(|| Cursor::encode('o', &end.to_string()));
        Ok(Self { items, next_cursor })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default)]
        count: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Colour {
        Red,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Status {
        status: Colour,
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<Body>(br#"{"name":"a","colour":1}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"name":"a","count":"x"}"#).unwrap_err();
        assert!(e.message.contains("count"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"name":"#).unwrap_err();
        assert_eq!(e.code, "malformed_json");
        let e = parse_json::<Body>(b"").unwrap_err();
        assert!(e.message.contains("name"), "{}", e.message);
        let e = parse_json::<Body>(br#"{"name":"a"} x"#).unwrap_err();
        assert_eq!(e.code, "malformed_json");
        // An enum given a number is a type error of that field.
        let e = parse_json::<Status>(br#"{"status":5}"#).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert!(e.message.contains("`status`"), "{}", e.message);
        let e = parse_json::<Status>(br#"{"status":{"x":[1]}}"#).unwrap_err();
        assert!(e.message.contains("`status`"), "{}", e.message);
        assert!(parse_json::<Body>(br#"{"name":"a"}"#).is_ok());
    }

    #[test]
    fn cursors_round_trip_and_reject_foreign_text() {
        let c = Cursor::encode('i', "41");
        assert_eq!(Cursor::decode(&c, 'i').as_deref(), Some("41"));
        assert_eq!(Cursor::decode(&c, 'o'), None);
        assert_eq!(Cursor::decode("zz", 'i'), None);
        assert_eq!(Cursor::decode("abc", 'i'), None);
    }

    #[test]
    fn limits_default_clamp_and_reject() {
        let p = |v: &str| Params([("limit".to_owned(), v.to_owned())].into_iter().collect());
        assert_eq!(Params::default().limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(p("7").limit().unwrap(), 7);
        assert_eq!(p("100000").limit().unwrap(), MAX_LIMIT);
        assert!(p("0").limit().is_err());
        assert!(p("-3").limit().is_err());
        assert!(p("ten").limit().is_err());
    }

    #[test]
    fn offset_pages_walk_the_whole_list() {
        let mut params = Params([("limit".to_owned(), "2".to_owned())].into_iter().collect());
        let mut seen = Vec::new();
        loop {
            let page = Page::by_offset((0..5).collect::<Vec<_>>(), &params).unwrap();
            seen.extend(page.items);
            match page.next_cursor {
                Some(c) => {
                    params.0.insert("cursor".into(), c);
                }
                None => break,
            }
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
    }
}
