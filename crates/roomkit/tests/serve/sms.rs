//! SMS through the server: signed Twilio and Telnyx webhooks in, a local
//! fake Twilio REST API out, delivery-status callbacks, and the refusals
//! (bad signature, malformed body, unknown provider) that store nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{Server, config_file, connect, next_frame, send};

pub const TOKEN: &str = "twilio-test-token";
pub const SID: &str = "AC0000";
pub const OUR_NUMBER: &str = "+15550001111";
pub const CUSTOMER: &str = "+15551234567";

/// One request the fake Twilio API received.
#[derive(Debug, Clone)]
pub struct TwilioSend {
    pub path: String,
    pub authorization: String,
    pub content_type: String,
    pub fields: Vec<(String, String)>,
}

/// A fake Twilio Messages API on loopback: records every send and answers
/// with sids `SMout1`, `SMout2`, ...
#[derive(Default)]
pub struct FakeTwilio {
    sends: Mutex<Vec<TwilioSend>>,
    arrived: Notify,
}

impl FakeTwilio {
    pub async fn start() -> (Arc<FakeTwilio>, String) {
        let fake = Arc::new(FakeTwilio::default());
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(
                    |State(fake): State<Arc<FakeTwilio>>,
                     Path(_sid): Path<String>,
                     uri: axum::http::Uri,
                     headers: HeaderMap,
                     body: String| async move {
                        let header = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let n = {
                            let mut sends = fake.sends.lock().unwrap();
                            sends.push(TwilioSend {
                                path: uri.path().to_owned(),
                                authorization: header("authorization"),
                                content_type: header("content-type"),
                                fields: serde_urlencoded::from_str(&body).unwrap(),
                            });
                            sends.len()
                        };
                        fake.arrived.notify_waiters();
                        axum::Json(json!({"sid": format!("SMout{n}"), "status": "queued"}))
                    },
                ),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (fake, format!("http://{addr}"))
    }

    pub fn sends(&self) -> Vec<TwilioSend> {
        self.sends.lock().unwrap().clone()
    }

    /// Waits until at least `n` sends arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<TwilioSend> {
        let wait = async {
            loop {
                let notified = self.arrived.notified();
                let sends = self.sends();
                if sends.len() >= n {
                    return sends;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the fake Twilio API receives the send")
    }
}

/// The config of a server with a Twilio SMS channel and WebSocket channels.
pub fn twilio_config(twilio_base: &str, extra: &str) -> String {
    format!(
        r#"
{extra}
[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "sms-main"
type = "sms"
provider = "twilio"
from = "{OUR_NUMBER}"
account_sid = "{SID}"
auth_token_env = "TWILIO_AUTH_TOKEN"
base_url = "{twilio_base}"
"#
    )
}

pub async fn start_twilio_server(config: &str) -> Server {
    let path = config_file(config);
    Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("TWILIO_AUTH_TOKEN", TOKEN)],
    )
    .await
}

pub fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An inbound SMS as Twilio posts it.
pub fn inbound_sms(sid: &str, from: &str, body: &str) -> Vec<(String, String)> {
    fields(&[
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("AccountSid", SID),
        ("From", from),
        ("To", OUR_NUMBER),
        ("Body", body),
        ("NumMedia", "0"),
    ])
}

/// Posts a form to `path`, signed over `signed_url` with `token` (no
/// signature header when `token` is `None`). Returns status, content type
/// and body.
pub async fn post_twilio(
    s: &Server,
    path: &str,
    signed_url: &str,
    token: Option<&str>,
    form: &[(String, String)],
) -> (u16, String, String) {
    let mut rb = s
        .http
        .post(s.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(form).unwrap());
    if let Some(token) = token {
        let sig = roomkit_channels::sms::twilio::signature(token, signed_url, form);
        rb = rb.header("X-Twilio-Signature", sig);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, resp.text().await.unwrap())
}

/// Posts an inbound SMS signed over the server's own URL.
pub async fn sms_in(s: &Server, sid: &str, from: &str, body: &str) -> (u16, String, String) {
    let path = "/webhooks/sms/twilio";
    post_twilio(
        s,
        path,
        &s.url(path),
        Some(TOKEN),
        &inbound_sms(sid, from, body),
    )
    .await
}

/// The ids of every room.
pub async fn rooms(s: &Server) -> Vec<String> {
    let v = s.ok("GET", "/rooms?limit=500", None).await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The message events of a room.
pub async fn messages(s: &Server, room: &str) -> Vec<Value> {
    s.timeline(room)
        .await
        .into_iter()
        .filter(|e| e["type"] == "message")
        .collect()
}

#[tokio::test]
async fn signed_twilio_inbound_creates_one_event_and_a_retry_is_a_duplicate() {
    let (_fake, base) = FakeTwilio::start().await;
    let s = start_twilio_server(&twilio_config(&base, "")).await;

    let (status, ct, body) = sms_in(&s, "SM0001", CUSTOMER, "Bonjour").await;
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("text/xml"), "{ct}");
    assert!(body.ends_with("<Response></Response>"), "{body}");

    let all = rooms(&s).await;
    assert_eq!(all.len(), 1, "the message created a room: {all:?}");
    let room = &all[0];
    let events = messages(&s, room).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["content"]["type"], "text");
    assert_eq!(e["content"]["text"], "Bonjour");
    assert_eq!(e["source"]["channel_id"], "sms-main");
    assert_eq!(e["source"]["provider"], "twilio");
    assert_eq!(e["idempotency_key"], "twilio:SM0001");
    assert_eq!(e["chain_depth"], 0);
    let pid = e["source"]["participant_id"].as_str().unwrap();
    let parts = s
        .ok("GET", &format!("/rooms/{room}/participants"), None)
        .await;
    let p = parts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pid)
        .expect("the sender is a participant")
        .clone();
    assert_eq!(p["address"], CUSTOMER);
    assert_eq!(p["channel_type"], "sms");
    let bindings = s.ok("GET", &format!("/rooms/{room}/channels"), None).await;
    assert_eq!(bindings["items"][0]["channel_id"], "sms-main");

    // Twilio retries the same message: a duplicate, not a second event.
    let (status, _, body) = sms_in(&s, "SM0001", CUSTOMER, "Bonjour").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(messages(&s, room).await.len(), 1);
    assert_eq!(rooms(&s).await.len(), 1);

    // A second message from the same number lands in the same room.
    sms_in(&s, "SM0002", CUSTOMER, "Are you there?").await;
    let events = messages(&s, room).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["content"]["text"], "Are you there?");
    assert_eq!(events[1]["source"]["participant_id"], pid);

    // Another customer texting the same number gets a room of their own:
    // the first customer's room is bound to the channel, but it is theirs.
    sms_in(&s, "SM0003", "+15557654321", "Hi, new here").await;
    let all = rooms(&s).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(messages(&s, room).await.len(), 2);
    let other = all.iter().find(|r| *r != room).unwrap();
    let events = messages(&s, other).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"]["text"], "Hi, new here");
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_403_and_stores_nothing() {
    let (_fake, base) = FakeTwilio::start().await;
    let s = start_twilio_server(&twilio_config(&base, "")).await;
    let path = "/webhooks/sms/twilio";
    let form = inbound_sms("SM0100", CUSTOMER, "hello");

    let (status, _, body) = post_twilio(&s, path, &s.url(path), Some("wrong-token"), &form).await;
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_signature");
    let (status, _, _) = post_twilio(&s, path, &s.url(path), None, &form).await;
    assert_eq!(status, 403);
    // Signed for another URL (the status endpoint): refused too.
    let (status, _, _) = post_twilio(
        &s,
        path,
        &s.url("/webhooks/sms/twilio/status"),
        Some(TOKEN),
        &form,
    )
    .await;
    assert_eq!(status, 403);
    // A tampered body.
    let sig = roomkit_channels::sms::twilio::signature(TOKEN, &s.url(path), &form);
    let mut tampered = form.clone();
    tampered[5].1 = "send money".into();
    let resp = s
        .http
        .post(s.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", sig)
        .body(serde_urlencoded::to_string(&tampered).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(rooms(&s).await.is_empty(), "nothing was stored");

    // Once a room exists, a refused webhook leaves its timeline unchanged.
    sms_in(&s, "SM0101", CUSTOMER, "real").await;
    let room = rooms(&s).await[0].clone();
    let before = s.timeline(&room).await;
    let (status, _, _) = post_twilio(
        &s,
        path,
        &s.url(path),
        Some("wrong-token"),
        &inbound_sms("SM0102", CUSTOMER, "forged"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(s.timeline(&room).await, before);
}

#[tokio::test]
async fn malformed_and_unknown_webhooks_are_4xx() {
    let (_fake, base) = FakeTwilio::start().await;
    let s = start_twilio_server(&twilio_config(&base, "")).await;
    let path = "/webhooks/sms/twilio";
    // Signed, but without a sender.
    let form = fields(&[("MessageSid", "SM9"), ("Body", "x")]);
    let (status, _, body) = post_twilio(&s, path, &s.url(path), Some(TOKEN), &form).await;
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "malformed_webhook");
    // A status callback without a status.
    let sp = "/webhooks/sms/twilio/status";
    let form = fields(&[("MessageSid", "SM9")]);
    let (status, _, _) = post_twilio(&s, sp, &s.url(sp), Some(TOKEN), &form).await;
    assert_eq!(status, 400);
    // Not configured here.
    for p in [
        "/webhooks/sms/telnyx",
        "/webhooks/email/smtp",
        "/webhooks/pigeon/coop",
        "/webhooks/sms/twilio/status/extra",
    ] {
        let (status, v) = s.call("POST", p, Some(json!({}))).await;
        assert_eq!(status, 404, "{p}: {v}");
    }
    // Over the body limit (on its own connection: the server closes it).
    let big = vec![b'a'; 2 * 1024 * 1024];
    let resp = crate::client()
        .post(s.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", "x")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert!(rooms(&s).await.is_empty());
}

#[tokio::test]
async fn signatures_are_checked_against_the_public_url_without_the_api_key() {
    let (fake, base) = FakeTwilio::start().await;
    let path = config_file(&twilio_config(
        &base,
        "[server]\npublic_url = \"https://chat.example.com\"\napi_key_env = \"ROOMKIT_API_KEY\"\n",
    ));
    // A file store, so the status callback can arrive after a restart.
    let dir = std::env::temp_dir().join(format!("roomkit-serve-sms-{}", crate::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("rooms.db").display());
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--store",
        store.as_str(),
    ];
    let env = [
        ("TWILIO_AUTH_TOKEN", TOKEN),
        ("ROOMKIT_API_KEY", "rest-key"),
    ];
    let s = Server::start_with(&args, &env).await;
    // REST needs the key; the webhook below is sent without it.
    let anonymous = crate::client().get(s.url("/rooms")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let path = "/webhooks/sms/twilio?tenant=7";
    let form = inbound_sms("SM0200", CUSTOMER, "via proxy");
    // Signed over the local URL: not what the provider would have signed.
    let (status, _, _) = post_twilio(&s, path, &s.url(path), Some(TOKEN), &form).await;
    assert_eq!(status, 403);
    let public = format!("https://chat.example.com{path}");
    let (status, _, body) = post_twilio(&s, path, &public, Some(TOKEN), &form).await;
    assert_eq!(status, 200, "{body}");
    let all = rooms(&s).await;
    assert_eq!(all.len(), 1);
    let room = &all[0];

    // Replies ask Twilio to call back at the public status URL of the
    // channel, and that callback is verified over the same URL.
    s.ok(
        "POST",
        &format!("/rooms/{room}/channels"),
        Some(json!({"channel_id": "ws"})),
    )
    .await;
    let sent = s.post_text(room, "ws", "On it").await;
    let event_id = sent["event"]["id"].as_str().unwrap().to_owned();
    let out = fake.wait_for(1).await;
    // The callback URL names the event, so it is understood even by a
    // process that did not send the message.
    let callback_url = format!(
        "https://chat.example.com/webhooks/sms/twilio/status?channel_id=sms-main&event_id={event_id}"
    );
    assert_eq!(
        out[0].fields,
        fields(&[
            ("To", CUSTOMER),
            ("From", OUR_NUMBER),
            ("Body", "On it"),
            ("StatusCallback", callback_url.as_str()),
        ])
    );
    assert_eq!(s.terminate().await, Some(0));
    let s = Server::start_with(&args, &env).await;
    let callback = fields(&[("MessageSid", "SMout1"), ("MessageStatus", "delivered")]);
    let (status, _, body) = post_twilio(
        &s,
        &format!("/webhooks/sms/twilio/status?channel_id=sms-main&event_id={event_id}"),
        &callback_url,
        Some(TOKEN),
        &callback,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let event = s
        .ok("GET", &format!("/rooms/{room}/events/{event_id}"), None)
        .await;
    assert_eq!(event["delivery_results"]["sms-main"]["status"], "sent");
    assert_eq!(
        event["delivery_results"]["sms-main"]["provider_message_id"],
        "SMout1"
    );
}

#[tokio::test]
async fn websocket_replies_reach_twilio_and_status_callbacks_update_delivery_results() {
    let (fake, base) = FakeTwilio::start().await;
    let s = start_twilio_server(&twilio_config(&base, "")).await;
    sms_in(&s, "SM0300", CUSTOMER, "I need help").await;
    let room = rooms(&s).await[0].clone();
    s.ok(
        "POST",
        &format!("/rooms/{room}/channels"),
        Some(json!({"channel_id": "ws"})),
    )
    .await;
    assert!(fake.sends().is_empty(), "inbound SMS is not echoed back");

    let mut agent =
        connect(&s.ws_url(&format!("/ws/{room}?channel_id=ws&participant_id=agent"))).await;
    send(
        &mut agent,
        json!({"type": "send", "content": {"type": "text", "text": "Hello from support"}, "client_ref": "r1"}),
    )
    .await;
    let ack = loop {
        let f = next_frame(&mut agent).await.unwrap();
        if f["type"] == "ack" {
            break f;
        }
    };
    assert_eq!(ack["result"]["blocked"], false, "{ack}");
    let event_id = ack["result"]["event"]["id"].as_str().unwrap().to_owned();

    let sends = fake.wait_for(1).await;
    assert_eq!(sends.len(), 1);
    let out = &sends[0];
    assert_eq!(
        out.path,
        format!("/2010-04-01/Accounts/{SID}/Messages.json")
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"));
    assert_eq!(out.authorization, format!("Basic {basic}"));
    assert_eq!(out.content_type, "application/x-www-form-urlencoded");
    assert_eq!(
        out.fields,
        fields(&[
            ("To", CUSTOMER),
            ("From", OUR_NUMBER),
            ("Body", "Hello from support")
        ])
    );

    let event = s
        .ok("GET", &format!("/rooms/{room}/events/{event_id}"), None)
        .await;
    let result = &event["delivery_results"]["sms-main"];
    assert_eq!(result["provider_message_id"], "SMout1", "{event}");
    assert_eq!(result["status"], "sent", "{event}");

    // Twilio reports the message undelivered.
    let sp = "/webhooks/sms/twilio/status";
    let callback = fields(&[
        ("MessageSid", "SMout1"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("ErrorMessage", "Unreachable destination handset"),
        ("AccountSid", SID),
    ]);
    let (status, _, body) = post_twilio(&s, sp, &s.url(sp), Some(TOKEN), &callback).await;
    assert_eq!(status, 200, "{body}");
    let event = s
        .ok("GET", &format!("/rooms/{room}/events/{event_id}"), None)
        .await;
    let result = &event["delivery_results"]["sms-main"];
    assert_eq!(result["status"], "failed", "{event}");
    assert_eq!(result["error"]["code"], "30003");
    assert_eq!(result["provider_message_id"], "SMout1");

    // A callback for a message this server never sent: 200, nothing changes.
    let unknown = fields(&[("MessageSid", "SMnobody"), ("MessageStatus", "delivered")]);
    let before = s.timeline(&room).await;
    let (status, _, _) = post_twilio(&s, sp, &s.url(sp), Some(TOKEN), &unknown).await;
    assert_eq!(status, 200);
    assert_eq!(s.timeline(&room).await, before);
    // A forged callback: 403, the result stays.
    let forged = fields(&[("MessageSid", "SMout1"), ("MessageStatus", "delivered")]);
    let (status, _, _) = post_twilio(&s, sp, &s.url(sp), Some("nope"), &forged).await;
    assert_eq!(status, 403);
    let event = s
        .ok("GET", &format!("/rooms/{room}/events/{event_id}"), None)
        .await;
    assert_eq!(event["delivery_results"]["sms-main"]["status"], "failed");
}

#[tokio::test]
async fn signed_telnyx_inbound_creates_the_event() {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes());
    let config = format!(
        r#"
[[channels]]
id = "sms-telnyx"
type = "sms"
provider = "telnyx"
from = "{OUR_NUMBER}"
api_key_env = "TELNYX_API_KEY"
public_key = "{public}"
base_url = "http://127.0.0.1:9"
"#
    );
    let path = config_file(&config);
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("TELNYX_API_KEY", "telnyx-key")],
    )
    .await;
    let body = json!({"data": {"event_type": "message.received", "id": "ev-1", "payload": {
        "id": "tx-msg-1", "from": {"phone_number": CUSTOMER},
        "to": [{"phone_number": OUR_NUMBER}], "text": "Salut"
    }}})
    .to_string();
    let post = |signer: SigningKey, body: String| {
        let s = &s;
        async move {
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                .to_string();
            let sig = signer.sign(format!("{ts}|{body}").as_bytes());
            s.http
                .post(s.url("/webhooks/sms/telnyx"))
                .header("content-type", "application/json")
                .header("telnyx-timestamp", ts)
                .header(
                    "telnyx-signature-ed25519",
                    base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
                )
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        post(SigningKey::from_bytes(&[7u8; 32]), body.clone()).await,
        403
    );
    assert!(rooms(&s).await.is_empty());
    assert_eq!(post(key.clone(), body.clone()).await, 200);
    assert_eq!(post(key, body).await, 200, "a retry is accepted");
    let all = rooms(&s).await;
    assert_eq!(all.len(), 1);
    let events = messages(&s, &all[0]).await;
    assert_eq!(events.len(), 1, "the retry was a duplicate: {events:?}");
    assert_eq!(events[0]["content"]["text"], "Salut");
    assert_eq!(events[0]["source"]["provider"], "telnyx");
    assert_eq!(events[0]["idempotency_key"], "telnyx:tx-msg-1");
}

#[tokio::test]
async fn the_store_resolver_identifies_a_known_number() {
    let (_fake, base) = FakeTwilio::start().await;
    let s = start_twilio_server(&twilio_config(
        &base,
        "[identity]\nresolver = \"store\"\nchannel_types = [\"sms\"]\n",
    ))
    .await;
    s.ok(
        "POST",
        "/identities",
        Some(json!({"id": "id_jean", "display_name": "Jean Tremblay",
                    "channel_addresses": {"sms": [CUSTOMER]}})),
    )
    .await;
    sms_in(&s, "SM0400", CUSTOMER, "Bonjour").await;
    sms_in(&s, "SM0401", "+15559990000", "Who am I?").await;
    let all = rooms(&s).await;
    assert_eq!(all.len(), 2, "one room per sender");
    let mut seen = Vec::new();
    for room in &all {
        let parts = s
            .ok("GET", &format!("/rooms/{room}/participants"), None)
            .await;
        for p in parts["items"].as_array().unwrap() {
            seen.push((
                p["address"].as_str().unwrap().to_owned(),
                p["identification"].as_str().unwrap().to_owned(),
                p["identity_id"].clone(),
                p["display_name"].clone(),
            ));
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            (
                CUSTOMER.to_owned(),
                "identified".to_owned(),
                json!("id_jean"),
                json!("Jean Tremblay")
            ),
            (
                "+15559990000".to_owned(),
                "unknown".to_owned(),
                Value::Null,
                json!("+15559990000")
            ),
        ]
    );
}
