//! Twilio's Calls REST API: [`TwilioRest`] creates a call
//! (`POST {api_base}/2010-04-01/Accounts/{AccountSid}/Calls.json`, form
//! encoded, HTTP basic auth with the account SID and auth token), and
//! [`TwilioDialer`] is the [`CallDialer`] of a Twilio voice channel: it
//! points the call at the channel's own voice webhook, with the room in the
//! query, so the answered call is connected to the media socket and joins
//! that room.
//!
//! The client keeps the outbound HTTP rules of
//! `roomkit_channels::outbound`: no redirects, bounded connect and total
//! time, and answers read only up to a cap. Twilio's error answers
//! (`code`, `message`, `more_info`, `status`) are parsed into
//! [`TwilioApiError`]; its message is kept for the caller of this library
//! and the debug log, while [`DialError`] speaks in this crate's words.

use std::time::Duration;

use async_trait::async_trait;
use roomkit_channels::Secret;
use roomkit_channels::outbound;
use roomkit_core::model::ChannelId;
use serde::Deserialize;

use crate::dial::{CallDialer, DialError, DialRequest, DialedCall};
use crate::error::VoiceError;

/// Twilio's API host.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";

/// Largest answer read from the Calls API (a call resource is ~2 KiB).
pub const ANSWER_CAP: usize = 64 * 1024;

/// How long connecting to the API may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one request to the API may take in all.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);

const PROVIDER: &str = "twilio";

/// The account a [`TwilioRest`] acts for.
#[derive(Debug, Clone)]
pub struct TwilioRestConfig {
    /// The account SID (`AC...`), also the basic-auth user.
    pub account_sid: String,
    /// The auth token, the basic-auth password.
    pub auth_token: Secret,
    /// The API's base URL, without a trailing slash.
    pub api_base: String,
}

/// What Twilio does when the callee answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAnswer {
    /// Fetch TwiML from this URL (a signed webhook POST).
    Url(String),
    /// Run this TwiML document.
    Twiml(String),
}

/// A call to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCall {
    /// The number to ring (`To`).
    pub to: String,
    /// The caller id (`From`), a number of the account.
    pub from: String,
    /// What to do once answered (`Url` or `Twiml`).
    pub answer: CallAnswer,
    /// Where Twilio posts the call's progress (`StatusCallback`).
    pub status_callback: Option<String>,
}

impl CreateCall {
    /// The form fields of the request.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", self.to.clone()), ("From", self.from.clone())];
        match &self.answer {
            CallAnswer::Url(u) => form.push(("Url", u.clone())),
            CallAnswer::Twiml(t) => form.push(("Twiml", t.clone())),
        }
        if let Some(cb) = &self.status_callback {
            form.push(("StatusCallback", cb.clone()));
        }
        form
    }
}

/// The call resource Twilio answers with (the fields this crate reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedCall {
    /// The call SID (`CA...`).
    pub sid: String,
    /// `queued`, `ringing`, ...
    pub status: String,
    /// The callee, as Twilio normalized it.
    #[serde(default)]
    pub to: Option<String>,
    /// The caller id.
    #[serde(default)]
    pub from: Option<String>,
    /// `outbound-api`.
    #[serde(default)]
    pub direction: Option<String>,
}

/// Twilio's error answer: `{"code", "message", "more_info", "status"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TwilioApiError {
    /// Twilio's error code (e.g. `21211`, invalid `To`), when the answer
    /// had one that is a short token.
    pub code: Option<String>,
    /// Twilio's message (remote text: for people and debug logs, not for
    /// API answers).
    pub message: Option<String>,
    /// Twilio's link to the code's documentation.
    pub more_info: Option<String>,
    /// The status the body repeats.
    pub status: Option<u16>,
}

impl TwilioApiError {
    /// Reads Twilio's error shape; `None` when the body is not one.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        let code = obj.get("code").and_then(|c| match c {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) if outbound::is_short_token(s, 32) => Some(s.clone()),
            _ => None,
        });
        let text = |k: &str| obj.get(k).and_then(|m| m.as_str()).map(str::to_owned);
        let status = obj
            .get("status")
            .and_then(serde_json::Value::as_u64)
            .and_then(|s| u16::try_from(s).ok());
        if code.is_none() && !obj.contains_key("message") {
            return None;
        }
        Some(Self {
            code,
            message: text("message"),
            more_info: text("more_info"),
            status,
        })
    }
}

/// Failures of the Calls API. The printed forms name the status and code
/// only, never Twilio's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TwilioRestError {
    /// Twilio answered an error status (its error body parsed when it had
    /// Twilio's shape).
    #[error("Twilio answered HTTP {status}{}", .error.as_ref().and_then(|e| e.code.as_deref()).map(|c| format!(" (error {c})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// Twilio's error body.
        error: Option<TwilioApiError>,
    },
    /// The request did not get an answer (connect failure, timeout, cut).
    #[error("the request to Twilio failed: {0}")]
    Transport(&'static str),
    /// A 2xx answer this client cannot read.
    #[error("Twilio's answer is unreadable: {0}")]
    BadAnswer(String),
}

/// A client of Twilio's Calls API for one account.
#[derive(Debug, Clone)]
pub struct TwilioRest {
    config: TwilioRestConfig,
    client: reqwest::Client,
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    }
}

impl TwilioRest {
    /// A client for `config`'s account.
    ///
    /// # Errors
    /// [`VoiceError::Config`] when the HTTP client cannot be built.
    pub fn new(config: TwilioRestConfig) -> Result<Self, VoiceError> {
        let client = outbound::builder(CONNECT_TIMEOUT, TOTAL_TIMEOUT)
            .build()
            .map_err(|e| VoiceError::Config(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self { config, client })
    }

    /// The URL calls are created at.
    pub fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.config.api_base.trim_end_matches('/'),
            self.config.account_sid
        )
    }

    /// Creates a call. Sent once, never retried.
    ///
    /// # Errors
    /// See [`TwilioRestError`].
    pub async fn create_call(&self, call: &CreateCall) -> Result<CreatedCall, TwilioRestError> {
        let body = serde_urlencoded::to_string(call.form())
            .map_err(|e| TwilioRestError::BadAnswer(format!("cannot encode the form: {e}")))?;
        let resp = self
            .client
            .post(self.calls_url())
            .basic_auth(&self.config.account_sid, Some(self.config.auth_token.expose()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(target: "roomkit.voice.twilio", error = %e, "creating a call failed");
                TwilioRestError::Transport(transport_kind(&e))
            })?;
        let status = resp.status().as_u16();
        let bytes = match outbound::read_capped(resp, ANSWER_CAP).await {
            Ok(b) => b,
            Err(outbound::BodyError::Transport(e)) => {
                return Err(TwilioRestError::Transport(transport_kind(&e)));
            }
            Err(e) => {
                if (200..300).contains(&status) {
                    return Err(TwilioRestError::BadAnswer(e.to_string()));
                }
                return Err(TwilioRestError::Api {
                    status,
                    error: None,
                });
            }
        };
        if !(200..300).contains(&status) {
            let error = TwilioApiError::parse(&bytes);
            tracing::debug!(target: "roomkit.voice.twilio", status, code = ?error.as_ref().and_then(|e| e.code.as_deref()), body = %outbound::log_preview(&bytes), "the Calls API refused");
            return Err(TwilioRestError::Api { status, error });
        }
        serde_json::from_slice::<CreatedCall>(&bytes)
            .map_err(|e| TwilioRestError::BadAnswer(format!("not a call resource: {e}")))
    }
}

/// What a Twilio voice channel needs to place calls; each piece may be
/// missing (then [`TwilioDialer::ready`] names it).
#[derive(Debug, Clone, Default)]
pub struct TwilioDialSettings {
    /// The account SID.
    pub account_sid: Option<String>,
    /// The variable the account SID is read from (for messages).
    pub account_sid_env: String,
    /// The auth token.
    pub auth_token: Option<Secret>,
    /// The variable the auth token is read from (for messages).
    pub auth_token_env: String,
    /// The default caller id.
    pub from: Option<String>,
    /// The server's externally reachable base URL (`https://host`).
    pub public_url: Option<String>,
    /// The API's base URL.
    pub api_base: String,
    /// Channels to attach to a room created for a call.
    pub agents: Vec<ChannelId>,
}

/// The [`CallDialer`] of a Twilio voice channel.
#[derive(Debug)]
pub struct TwilioDialer {
    channel_id: ChannelId,
    rest: Option<TwilioRest>,
    from: Option<String>,
    public_url: Option<String>,
    agents: Vec<ChannelId>,
    missing: Vec<String>,
}

impl TwilioDialer {
    /// A dialer for `channel_id`.
    ///
    /// # Errors
    /// [`VoiceError::Config`] when the HTTP client cannot be built.
    pub fn new(
        channel_id: impl Into<ChannelId>,
        settings: TwilioDialSettings,
    ) -> Result<Self, VoiceError> {
        let mut missing = Vec::new();
        if settings.from.is_none() {
            missing.push("`from` (the number calls come from) is not set".to_owned());
        }
        if settings.account_sid.is_none() {
            missing.push(format!(
                "{} (account_sid_env) is not set",
                settings.account_sid_env
            ));
        }
        if settings.auth_token.is_none() {
            missing.push(format!(
                "{} (auth_token_env) is not set",
                settings.auth_token_env
            ));
        }
        if settings.public_url.is_none() {
            missing.push(
                "[server] public_url (where Twilio reaches the voice webhook) is not set"
                    .to_owned(),
            );
        }
        let rest = match (settings.account_sid, settings.auth_token) {
            (Some(account_sid), Some(auth_token)) => Some(TwilioRest::new(TwilioRestConfig {
                account_sid,
                auth_token,
                api_base: settings.api_base,
            })?),
            _ => None,
        };
        Ok(Self {
            channel_id: channel_id.into(),
            rest,
            from: settings.from,
            public_url: settings.public_url,
            agents: settings.agents,
            missing,
        })
    }

    /// What keeps this channel from placing calls (empty when nothing).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The voice webhook URL Twilio fetches the answer from: the channel's
    /// webhook under the public URL, naming the channel and the room.
    pub fn webhook_url(&self, room_id: &str) -> Option<String> {
        let base = self.public_url.as_deref()?.trim_end_matches('/');
        let query = serde_urlencoded::to_string([
            ("channel_id", self.channel_id.as_str()),
            ("room_id", room_id),
        ])
        .ok()?;
        Some(format!("{base}/webhooks/voice/{PROVIDER}?{query}"))
    }
}

fn refusal(status: u16, error: Option<&TwilioApiError>) -> DialError {
    let code = error.and_then(|e| e.code.clone());
    let what = match status {
        401 | 403 => "the account SID or auth token was not accepted",
        404 => "the account was not found",
        429 => "too many requests",
        400..=499 => "the request was refused",
        _ => "the request failed",
    };
    let mut message = format!("HTTP {status}: {what}");
    if let Some(c) = &code {
        message.push_str(&format!(" (Twilio error {c}"));
        if c.bytes().all(|b| b.is_ascii_digit()) {
            message.push_str(&format!(", https://www.twilio.com/docs/errors/{c}"));
        }
        message.push(')');
    }
    DialError::Refused {
        provider: PROVIDER.into(),
        status,
        code,
        message,
    }
}

#[async_trait]
impl CallDialer for TwilioDialer {
    fn channel_id(&self) -> &ChannelId {
        &self.channel_id
    }

    fn provider(&self) -> &str {
        PROVIDER
    }

    fn agents(&self) -> &[ChannelId] {
        &self.agents
    }

    fn ready(&self) -> Result<(), DialError> {
        if self.missing.is_empty() {
            Ok(())
        } else {
            Err(DialError::NotConfigured(self.missing.join("; ")))
        }
    }

    async fn dial(&self, request: &DialRequest) -> Result<DialedCall, DialError> {
        self.ready()?;
        let (Some(rest), Some(url)) = (&self.rest, self.webhook_url(request.room_id.as_str()))
        else {
            return Err(DialError::NotConfigured(self.missing.join("; ")));
        };
        let Some(from) = request.from.clone().or_else(|| self.from.clone()) else {
            return Err(DialError::NotConfigured(self.missing.join("; ")));
        };
        let call = CreateCall {
            to: request.to.clone(),
            from: from.clone(),
            answer: CallAnswer::Url(url),
            status_callback: None,
        };
        match rest.create_call(&call).await {
            Ok(created) => {
                tracing::info!(target: "roomkit.voice.twilio", channel_id = %self.channel_id, call_sid = %created.sid, status = %created.status, room_id = %request.room_id, "outbound call created");
                Ok(DialedCall {
                    call_id: created.sid,
                    status: created.status,
                    from,
                })
            }
            Err(TwilioRestError::Api { status, error }) if status < 500 => {
                tracing::warn!(target: "roomkit.voice.twilio", channel_id = %self.channel_id, status, code = ?error.as_ref().and_then(|e| e.code.as_deref()), "Twilio refused the outbound call");
                Err(refusal(status, error.as_ref()))
            }
            Err(e) => {
                tracing::warn!(target: "roomkit.voice.twilio", channel_id = %self.channel_id, error = %e, "Twilio could not be asked to place the call");
                Err(DialError::Unavailable {
                    provider: PROVIDER.into(),
                    message: e.to_string(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_error_bodies_parse() {
        let e = TwilioApiError::parse(
            br#"{"code": 21211, "message": "The 'To' number 12 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#,
        );
        assert_eq!(
            e,
            Some(TwilioApiError {
                code: Some("21211".into()),
                message: Some("The 'To' number 12 is not a valid phone number.".into()),
                more_info: Some("https://www.twilio.com/docs/errors/21211".into()),
                status: Some(400),
            })
        );
        assert_eq!(TwilioApiError::parse(b"<html>bad gateway</html>"), None);
        assert_eq!(TwilioApiError::parse(br#"{"sid": "CA1"}"#), None);
        let odd = TwilioApiError::parse(br#"{"code": "no spaces allowed here", "message": 3}"#);
        assert_eq!(odd.map(|e| (e.code, e.message)), Some((None, None)));
    }

    #[test]
    fn the_printed_error_names_status_and_code_but_not_the_message() {
        let e = TwilioRestError::Api {
            status: 400,
            error: Some(TwilioApiError {
                code: Some("21211".into()),
                message: Some("secret-ish remote text".into()),
                ..TwilioApiError::default()
            }),
        };
        assert_eq!(e.to_string(), "Twilio answered HTTP 400 (error 21211)");
        let d = refusal(
            400,
            Some(&TwilioApiError {
                code: Some("21211".into()),
                ..TwilioApiError::default()
            }),
        );
        assert!(d.to_string().contains("21211"), "{d}");
        assert!(!d.to_string().contains("remote"), "{d}");
    }

    use crate::fake::{FakeTwilio, Faults, TwilioRefusal};

    const SID: &str = "AC00000000000000000000000000000001";
    const TOKEN: &str = "tw-token";

    fn client(base: &str, token: &str) -> TwilioRest {
        TwilioRest::new(TwilioRestConfig {
            account_sid: SID.into(),
            auth_token: Secret::new(token),
            api_base: base.into(),
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn call(answer: CallAnswer) -> CreateCall {
        CreateCall {
            to: "+15557654321".into(),
            from: "+15550100200".into(),
            answer,
            status_callback: Some("https://h.example/status".into()),
        }
    }

    /// A voice webhook that checks the fake's signature as the server does
    /// and answers TwiML connecting a stream.
    async fn webhook() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{addr}/hook?room_id=r1");
        let signed = url.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let signed = signed.clone();
                    async move {
                        let sig = headers
                            .get("x-twilio-signature")
                            .and_then(|v| v.to_str().ok());
                        match crate::twilio::verify_webhook(TOKEN, &signed, &body, sig) {
                            Ok(_) => (
                                axum::http::StatusCode::OK,
                                crate::twilio::twiml_connect_stream(
                                    "ws://h.example/voice/twilio/media",
                                    &[("room_id", "r1")],
                                ),
                            ),
                            Err(e) => (axum::http::StatusCode::FORBIDDEN, e.to_string()),
                        }
                    }
                },
            ),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_created_call_is_answered_through_the_signed_webhook() {
        let fake = FakeTwilio::start(SID, TOKEN)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (url, _hook) = webhook().await;
        let created = client(&fake.base_url(), TOKEN)
            .create_call(&call(CallAnswer::Url(url.clone())))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            created.sid.starts_with("CA") && created.sid.len() == 34,
            "{created:?}"
        );
        assert_eq!(created.status, "queued");
        assert_eq!(created.direction.as_deref(), Some("outbound-api"));
        let requests = fake.requests();
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(&requests[0].body).unwrap_or_default();
        for (k, v) in [
            ("To", "+15557654321"),
            ("From", "+15550100200"),
            ("Url", url.as_str()),
            ("StatusCallback", "https://h.example/status"),
        ] {
            assert!(form.iter().any(|(a, b)| a == k && b == v), "{k}: {form:?}");
        }
        let answered = fake
            .wait_answered(1, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("not answered"));
        assert_eq!(answered[0].status, 200, "{}", answered[0].twiml);
        assert_eq!(
            answered[0].stream_url.as_deref(),
            Some("ws://h.example/voice/twilio/media")
        );
        assert_eq!(answered[0].parameter("room_id"), Some("r1"));
        assert!(
            answered[0]
                .form
                .iter()
                .any(|(k, v)| k == "Direction" && v == "outbound-api")
        );
    }

    #[tokio::test]
    async fn inline_twiml_is_sent_as_is() {
        let fake = FakeTwilio::start(SID, TOKEN)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let twiml = crate::twilio::twiml_connect_stream("wss://h.example/m", &[]);
        client(&fake.base_url(), TOKEN)
            .create_call(&call(CallAnswer::Twiml(twiml)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let answered = fake
            .wait_answered(1, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("not answered"));
        assert_eq!(answered[0].stream_url.as_deref(), Some("wss://h.example/m"));
    }

    #[tokio::test]
    async fn twilio_refusals_are_typed() {
        let fake = FakeTwilio::start(SID, TOKEN)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = CallAnswer::Url("http://127.0.0.1:9/hook".into());
        // A wrong token: Twilio's 401 with error 20003.
        let e = client(&fake.base_url(), "wrong")
            .create_call(&call(url.clone()))
            .await
            .err();
        let Some(TwilioRestError::Api {
            status: 401,
            error: Some(err),
        }) = e
        else {
            panic!("{e:?}");
        };
        assert_eq!(err.code.as_deref(), Some("20003"));
        assert_eq!(
            err.more_info.as_deref(),
            Some("https://www.twilio.com/docs/errors/20003")
        );
        // A refused number, with Twilio's message kept for the caller.
        fake.refuse_with(Some(TwilioRefusal {
            status: 400,
            code: 21211,
            message: "The 'To' number is not a valid phone number.".into(),
        }));
        let e = client(&fake.base_url(), TOKEN)
            .create_call(&call(url.clone()))
            .await
            .err();
        let Some(TwilioRestError::Api {
            status: 400,
            error: Some(err),
        }) = e
        else {
            panic!("{e:?}");
        };
        assert_eq!(err.code.as_deref(), Some("21211"));
        assert_eq!(err.status, Some(400));
        assert_eq!(
            err.message.as_deref(),
            Some("The 'To' number is not a valid phone number.")
        );
        // A server error.
        fake.refuse_with(None);
        fake.set_faults(Faults {
            fail_status: Some(500),
            ..Faults::default()
        });
        let e = client(&fake.base_url(), TOKEN)
            .create_call(&call(url.clone()))
            .await
            .err();
        assert!(
            matches!(e, Some(TwilioRestError::Api { status: 500, .. })),
            "{e:?}"
        );
        // Nothing listening.
        let e = client("http://127.0.0.1:9", TOKEN)
            .create_call(&call(url))
            .await
            .err();
        assert_eq!(e, Some(TwilioRestError::Transport("could not connect")));
        assert!(fake.answered().is_empty());
    }

    #[test]
    fn the_webhook_url_names_channel_and_room() {
        let d = TwilioDialer::new(
            "phone",
            TwilioDialSettings {
                public_url: Some("https://voice.example.com/".into()),
                api_base: DEFAULT_API_BASE.into(),
                ..TwilioDialSettings::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            d.webhook_url("room 1&x").as_deref(),
            Some(
                "https://voice.example.com/webhooks/voice/twilio?channel_id=phone&room_id=room+1%26x"
            )
        );
        let missing = d.missing().join("; ");
        assert!(
            missing.contains("`from`") && missing.contains("account_sid_env"),
            "{missing}"
        );
        assert!(matches!(d.ready(), Err(DialError::NotConfigured(_))));
    }
}
