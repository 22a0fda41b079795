//! HTTP digest authentication as SIP uses it (RFC 3261 §22, RFC 2617, with
//! RFC 8760's SHA-256): reading a `WWW-Authenticate` or
//! `Proxy-Authenticate` challenge and answering it with credentials.
//!
//! Only the client side is here: RoomKit authenticates to the trunks it
//! places calls and registrations through. MD5 and SHA-256, with `qop=auth`
//! or without qop; `auth-int` and the `-sess` variants are refused with a
//! typed error so a call fails with a clear reason rather than a loop of
//! 401s.

use md5::Md5;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DigestError {
    /// The scheme is not `Digest`.
    #[error("the challenge's scheme is not Digest")]
    NotDigest,
    /// A parameter the answer needs is missing.
    #[error("the challenge has no {0}")]
    Missing(&'static str),
    /// The algorithm is not MD5 or SHA-256.
    #[error("digest algorithm {0:?} is not supported (MD5, SHA-256)")]
    Algorithm(String),
    /// The challenge offers only qop values other than `auth`.
    #[error("digest qop {0:?} is not supported (auth)")]
    Qop(String),
}

/// The hash a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5` (the default when the challenge names none).
    Md5,
    /// `SHA-256`.
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn hex(self, input: &str) -> String {
        match self {
            Self::Md5 => to_hex(&Md5::digest(input.as_bytes())),
            Self::Sha256 => to_hex(&Sha256::digest(input.as_bytes())),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// A digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Opaque value to echo.
    pub opaque: Option<String>,
    /// The hash.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` is used.
    pub qop_auth: bool,
    /// The previous nonce was stale (retry with the new one).
    pub stale: bool,
}

/// Splits `a="x, y", b=z` into pairs, honouring quotes.
fn pairs(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = list.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            break;
        };
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = quoted[..end].to_owned();
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        out.push((name.to_ascii_lowercase(), value));
    }
    out
}

impl Challenge {
    /// Reads a `WWW-Authenticate` / `Proxy-Authenticate` value.
    ///
    /// # Errors
    /// [`DigestError`] for another scheme, a missing realm or nonce, or an
    /// algorithm or qop this side does not implement.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::NotDigest);
        }
        let pairs = pairs(params);
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("md5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("sha-256") => Algorithm::Sha256,
            Some(a) => return Err(DigestError::Algorithm(a)),
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) => {
                if q.split(',').any(|v| v.trim().eq_ignore_ascii_case("auth")) {
                    true
                } else {
                    return Err(DigestError::Qop(q));
                }
            }
        };
        Ok(Self {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop_auth,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The `Authorization` / `Proxy-Authorization` value answering this
    /// challenge for `method` on `uri`; `nc` counts the uses of this nonce
    /// (from 1) and `cnonce` is a fresh client nonce.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let h = |s: &str| self.algorithm.hex(s);
        let ha1 = h(&format!("{username}:{}:{password}", self.realm));
        let ha2 = h(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            h(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            h(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut out = format!(
            "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}",
            self.realm,
            self.nonce,
            self.algorithm.name()
        );
        if self.qop_auth {
            out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
        }
        if let Some(opaque) = &self.opaque {
            out.push_str(&format!(", opaque=\"{opaque}\""));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5's worked example (HTTP, but the same arithmetic).
    #[test]
    fn matches_the_rfc_2617_example() {
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("parses");
        assert!(c.qop_auth);
        let answer = c.answer(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            answer.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{answer}"
        );
        assert!(answer.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    #[test]
    fn refuses_what_it_cannot_answer() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(DigestError::Qop("auth-int".to_owned()))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess"),
            Err(DigestError::Algorithm(_))
        ));
        let sha =
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256").expect("parses");
        assert_eq!(sha.algorithm, Algorithm::Sha256);
    }
}
