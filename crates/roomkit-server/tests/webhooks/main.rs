//! Provider webhooks on a real server on loopback: the receiver is picked by
//! path (and `?channel_id=` between channels of one provider), signatures
//! are checked over the `Host` the request came to or the public URL, and a
//! refused request stores nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use roomkit_channels::Secret;
use roomkit_channels::sms::SmsChannel;
use roomkit_channels::sms::twilio::{TwilioConfig, TwilioSms, signature};
use roomkit_core::RoomKit;
use roomkit_core::store::RoomQuery;
use roomkit_server::{ConnectionRegistry, Server, ServerOptions};

fn sms(id: &str, token: &str) -> SmsChannel {
    let mut config = TwilioConfig::new("AC1", Secret::new(token));
    config.base_url = "http://127.0.0.1:9".into();
    SmsChannel::new(id, "+15550000000", Arc::new(TwilioSms::new(config)))
}

/// Serves two Twilio channels (tokens `token-a`, `token-b`) on loopback.
async fn start(public_url: Option<&str>) -> (RoomKit, String) {
    let a = sms("sms-a", "token-a");
    let b = sms("sms-b", "token-b");
    let (ra, rb) = (a.receiver(), b.receiver());
    let registry = ConnectionRegistry::new();
    let kit = RoomKit::builder()
        .channel(Arc::new(a))
        .channel(Arc::new(b))
        .build()
        .unwrap();
    let options = ServerOptions {
        public_url: public_url.map(str::to_owned),
        ..ServerOptions::default()
    };
    let router = Server::new(kit.clone(), registry, options)
        .with_webhook_receiver("sms-a", ra)
        .with_webhook_receiver("sms-b", rb)
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    (kit, format!("http://{addr}"))
}

fn form(sid: &str) -> Vec<(String, String)> {
    [
        ("MessageSid", sid),
        ("From", "+15551112222"),
        ("To", "+15550000000"),
        ("Body", "hello"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

async fn post(
    url: &str,
    host: Option<&str>,
    sig: &str,
    form: &[(String, String)],
) -> (u16, String) {
    let mut rb = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", sig)
        .body(serde_urlencoded::to_string(form).unwrap());
    if let Some(h) = host {
        rb = rb.header("host", h);
    }
    let resp = rb.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn room_count(kit: &RoomKit) -> usize {
    kit.list_rooms(&RoomQuery::default()).await.unwrap().len()
}

#[tokio::test]
async fn channels_of_one_provider_are_told_apart_by_channel_id() {
    let (kit, base) = start(None).await;
    let path = "/webhooks/sms/twilio";
    let f = form("SM1");
    // Two channels match the path: the caller must say which.
    let url = format!("{base}{path}");
    let (status, body) = post(&url, None, &signature("token-a", &url, &f), &f).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("channel_id"), "{body}");
    // Channel b, signed with a's token: refused.
    let url = format!("{base}{path}?channel_id=sms-b");
    let (status, body) = post(&url, None, &signature("token-a", &url, &f), &f).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("invalid_signature"), "{body}");
    assert_eq!(room_count(&kit).await, 0);
    // Signed with b's token over the URL with its query: accepted on b.
    let (status, body) = post(&url, None, &signature("token-b", &url, &f), &f).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<Response></Response>"), "{body}");
    let rooms = kit.list_rooms(&RoomQuery::default()).await.unwrap();
    assert_eq!(rooms.len(), 1);
    let bindings = kit.list_bindings(&rooms[0].id).await.unwrap();
    assert_eq!(bindings[0].channel_id.as_str(), "sms-b");
}

#[tokio::test]
async fn the_signed_url_is_the_host_the_request_names_or_the_public_url() {
    let (kit, base) = start(None).await;
    let path = "/webhooks/sms/twilio?channel_id=sms-a";
    let f = form("SM2");
    // The provider reached us as example.test (a tunnel keeping the Host).
    let signed = format!("http://example.test:8080{path}");
    let (status, body) = post(
        &format!("{base}{path}"),
        Some("example.test:8080"),
        &signature("token-a", &signed, &f),
        &f,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(room_count(&kit).await, 1);

    let (kit, base) = start(Some("https://chat.example.com/")).await;
    let signed = format!("https://chat.example.com{path}");
    let local = format!("{base}{path}");
    let (status, _) = post(&local, None, &signature("token-a", &local, &f), &f).await;
    assert_eq!(status, 403, "the local URL is not what the provider signed");
    // Twilio may sign with or without the default port.
    let with_port = format!("https://chat.example.com:443{path}");
    let (status, _) = post(&local, None, &signature("token-a", &with_port, &f), &f).await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &local,
        None,
        &signature("token-a", &signed, &form("SM3")),
        &form("SM3"),
    )
    .await;
    assert_eq!(status, 200);
    let rooms = kit.list_rooms(&RoomQuery::default()).await.unwrap();
    assert_eq!(rooms.len(), 1, "both messages reached the sender's room");
    let timeline = kit
        .timeline(&rooms[0].id, roomkit_core::TimelineQuery::default())
        .await
        .unwrap();
    let texts: Vec<String> = timeline
        .iter()
        .filter(|e| e.event_type == roomkit_core::model::EventType::Message)
        .map(|e| e.content.plain_text())
        .collect();
    assert_eq!(texts, ["hello", "hello"], "SM2 and SM3, each once");
}
