//! A fake Twilio Calls API: `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`
//! that checks what Twilio checks and then plays the callee's side of the
//! answer.
//!
//! A request needs HTTP basic auth with the account SID and auth token
//! (else 401, Twilio error 20003), the account SID of the path (else 404,
//! 20404), a form body with `To` (21201 when missing, 21211 when not an
//! E.164 number or a `sip:`/`client:` address), `From` (21213) and `Url` or
//! `Twiml` (21205). Refusals use Twilio's `{code, message, more_info,
//! status}` shape. An accepted call is answered 201 with a call resource
//! (`sid` `CA...`, `status` `queued`, `direction` `outbound-api`).
//!
//! Then the fake "answers the phone" as Twilio does: for `Url` it POSTs the
//! voice webhook, signed with `X-Twilio-Signature` over that exact URL, with
//! `CallSid`, `AccountSid`, `From`, `To`, `Direction=outbound-api`,
//! `CallStatus=in-progress` and `ApiVersion`; it reads the TwiML answer's
//! `<Connect><Stream url=...>` and `<Parameter>`s and reports them as an
//! [`AnsweredCall`]. A test then opens the media socket at that URL.
//!
//! [`Faults`]: `fail_status` answers every request with that status in
//! Twilio's shape (error 20500 for 5xx), `delay` waits before answering.
//! [`FakeTwilio::refuse_with`] makes every create request fail with a given
//! Twilio error.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::json;

use super::{Common, Faults, Recorded, Running, json_reply, lock, record, serve};

/// A Twilio error the fake answers create requests with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioRefusal {
    /// HTTP status.
    pub status: u16,
    /// Twilio's error code.
    pub code: u32,
    /// Twilio's message.
    pub message: String,
}

/// What happened when the fake answered a created call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredCall {
    /// The call's SID.
    pub call_sid: String,
    /// The webhook URL it POSTed (empty for inline `Twiml`).
    pub url: String,
    /// The form it posted.
    pub form: Vec<(String, String)>,
    /// The webhook's status (0 when it could not be reached, 200 for
    /// inline TwiML).
    pub status: u16,
    /// The TwiML: the webhook's answer, or the inline document.
    pub twiml: String,
    /// `<Stream url=...>`, when the TwiML connects a stream.
    pub stream_url: Option<String>,
    /// The stream's `<Parameter>`s.
    pub parameters: Vec<(String, String)>,
}

impl AnsweredCall {
    /// A stream parameter's value.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct TwState {
    account_sid: String,
    auth_token: String,
    common: Arc<Common>,
    refusal: Mutex<Option<TwilioRefusal>>,
    answered: Mutex<Vec<AnsweredCall>>,
    changed: tokio::sync::Notify,
    counter: AtomicU64,
}

/// A running fake Twilio Calls API. Stops when dropped.
#[derive(Debug)]
pub struct FakeTwilio {
    running: Running,
    state: Arc<TwState>,
}

impl FakeTwilio {
    /// Starts on a free loopback port for the account `account_sid` with
    /// `auth_token` (also the key it signs webhooks with).
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(account_sid: &str, auth_token: &str) -> std::io::Result<Self> {
        let state = Arc::new(TwState {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            common: Arc::new(Common::default()),
            refusal: Mutex::new(None),
            answered: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
            counter: AtomicU64::new(0),
        });
        let s = state.clone();
        let app = axum::Router::new().fallback(move |req: axum::http::Request<Body>| {
            let s = s.clone();
            async move { handle(&s, req).await }
        });
        let (addr, task) = serve(app).await?;
        Ok(Self {
            running: Running { addr, task },
            state,
        })
    }

    /// The base URL to configure as `api_base` (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    /// Changes the faults (`fail_status`, `delay`).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.state.common.faults) = faults;
    }

    /// Makes every create request fail with `refusal` (`None`: accept again).
    pub fn refuse_with(&self, refusal: Option<TwilioRefusal>) {
        *lock(&self.state.refusal) = refusal;
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.common.requests).clone()
    }

    /// The calls answered so far.
    pub fn answered(&self) -> Vec<AnsweredCall> {
        lock(&self.state.answered).clone()
    }

    /// Waits until `n` calls have been answered, up to `timeout`.
    pub async fn wait_answered(&self, n: usize, timeout: Duration) -> Option<Vec<AnsweredCall>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.changed.notified();
            let all = self.answered();
            if all.len() >= n {
                return Some(all);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    json_reply(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

async fn handle(s: &Arc<TwState>, req: axum::http::Request<Body>) -> Response {
    let mut rec = record(req).await;
    let faults: Faults = s.common.faults();
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let resp = match faults.fail_status {
        Some(status) if status >= 500 => twilio_error(status, 20500, "Internal Server Error"),
        Some(status) => twilio_error(status, 20001, "Injected failure"),
        None => route(s, &rec),
    };
    rec.status = resp.status().as_u16();
    lock(&s.common.requests).push(rec);
    resp
}

fn route(s: &Arc<TwState>, r: &Recorded) -> Response {
    let path = r.path.split('?').next().unwrap_or("");
    let Some(sid) = path
        .strip_prefix("/2010-04-01/Accounts/")
        .and_then(|rest| rest.strip_suffix("/Calls.json"))
    else {
        return twilio_error(404, 20404, "The requested resource was not found");
    };
    if r.method != "POST" {
        return twilio_error(405, 20004, "Method not allowed");
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", s.account_sid, s.auth_token))
    );
    if r.header("authorization") != Some(expected.as_str()) {
        return twilio_error(401, 20003, "Authenticate");
    }
    if sid != s.account_sid {
        return twilio_error(
            404,
            20404,
            &format!("The requested resource /2010-04-01/Accounts/{sid}/Calls.json was not found"),
        );
    }
    if !r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return twilio_error(400, 21201, "No 'To' number is specified");
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&r.body) else {
        return twilio_error(400, 21201, "No 'To' number is specified");
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let Some(to) = field("To") else {
        return twilio_error(400, 21201, "No 'To' number is specified");
    };
    if !crate::dial::dialable(&to) {
        return twilio_error(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    let Some(from) = field("From") else {
        return twilio_error(400, 21213, "No 'From' number is specified");
    };
    let url = field("Url");
    let twiml = field("Twiml");
    if url.is_none() && twiml.is_none() {
        return twilio_error(400, 21205, "Url parameter is required.");
    }
    if let Some(u) = &url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return twilio_error(400, 21205, &format!("Url is not a valid URL: {u}"));
    }
    if let Some(refusal) = lock(&s.refusal).clone() {
        return twilio_error(refusal.status, refusal.code, &refusal.message);
    }
    let n = s.counter.fetch_add(1, Ordering::Relaxed);
    let call_sid = format!("CA{:032x}", (u128::from(n) << 64) | 0x5eed);
    tokio::spawn(answer(
        s.clone(),
        call_sid.clone(),
        from.clone(),
        to.clone(),
        url,
        twiml,
    ));
    json_reply(
        StatusCode::CREATED,
        json!({
            "sid": call_sid,
            "account_sid": s.account_sid,
            "to": to,
            "from": from,
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": format!("/2010-04-01/Accounts/{}/Calls/{call_sid}.json", s.account_sid),
        }),
    )
}

/// Plays the callee picking up: fetches the TwiML and records it.
async fn answer(
    s: Arc<TwState>,
    call_sid: String,
    from: String,
    to: String,
    url: Option<String>,
    twiml: Option<String>,
) {
    let form: Vec<(String, String)> = [
        ("AccountSid", s.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid.as_str()),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
        ("From", from.as_str()),
        ("To", to.as_str()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let (status, twiml, url) = match (url, twiml) {
        (Some(url), _) => {
            let (status, body) = post_webhook(&s.auth_token, &url, &form).await;
            (status, body, url)
        }
        (None, Some(t)) => (200, t, String::new()),
        (None, None) => return,
    };
    let stream_url = stream_url(&twiml);
    let parameters = stream_parameters(&twiml);
    lock(&s.answered).push(AnsweredCall {
        call_sid,
        url,
        form,
        status,
        twiml,
        stream_url,
        parameters,
    });
    s.changed.notify_waiters();
}

async fn post_webhook(token: &str, url: &str, form: &[(String, String)]) -> (u16, String) {
    let Ok(client) = roomkit_channels::outbound::client() else {
        return (0, String::new());
    };
    let signature = roomkit_channels::sms::twilio::signature(token, url, form);
    let body = serde_urlencoded::to_string(form).unwrap_or_default();
    let sent = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, text)
        }
        Err(_) => (0, String::new()),
    }
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The value of `attr="..."` in `tag` (the text of one element's start).
fn attribute(tag: &str, attr: &str) -> Option<String> {
    let start = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    let len = tag[start..].find('"')?;
    Some(xml_unescape(&tag[start..start + len]))
}

/// The `url` of the TwiML's `<Connect><Stream>`.
pub fn stream_url(twiml: &str) -> Option<String> {
    let connect = twiml.find("<Connect>")?;
    let at = twiml[connect..].find("<Stream ")? + connect;
    let end = twiml[at..].find('>')? + at;
    attribute(&twiml[at..end], "url")
}

/// The stream's `<Parameter name value/>`s.
pub fn stream_parameters(twiml: &str) -> Vec<(String, String)> {
    twiml
        .split("<Parameter ")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            Some((attribute(tag, "name")?, attribute(tag, "value")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_and_its_parameters_are_read_from_twiml() {
        let xml = crate::twilio::twiml_connect_stream(
            "wss://h.example/voice/twilio/media?channel_id=a&b",
            &[("from", "+15550001"), ("room_id", "r<1>")],
        );
        assert_eq!(
            stream_url(&xml).as_deref(),
            Some("wss://h.example/voice/twilio/media?channel_id=a&b")
        );
        assert_eq!(
            stream_parameters(&xml),
            vec![
                ("from".to_owned(), "+15550001".to_owned()),
                ("room_id".to_owned(), "r<1>".to_owned())
            ]
        );
        assert_eq!(stream_url("<Response></Response>"), None);
    }
}
