//! Email: SMTP to a local SMTP sink (a small in-test server speaking the
//! protocol), SendGrid v3 Mail Send and Inbound Parse, and threading: a
//! reply to our mail lands in the same room and our answer threads to it.

use std::sync::Arc;

use parking_lot::Mutex;
use roomkit_channels::email::EmailChannel;
use roomkit_channels::email::sendgrid::{SendGridConfig, SendGridEmail};
use roomkit_channels::email::smtp::{SmtpConfig, SmtpEmail};
use roomkit_channels::{Secret, WebhookKind};
use roomkit_core::SendEvent;
use roomkit_core::model::DeliveryStatus;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{meta, request, room_with};

/// A minimal SMTP sink on 127.0.0.1: accepts every message and keeps its
/// envelope and data.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<(Vec<String>, String)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(Mutex::new(Vec::new()));
    let s = store.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let mut envelope = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        w.write_all(b"250-sink\r\n250 8BITMIME\r\n").await.unwrap();
                    } else if upper.starts_with("MAIL") || upper.starts_with("RCPT") {
                        envelope.push(line.clone());
                        w.write_all(b"250 OK\r\n").await.unwrap();
                    } else if upper == "DATA" {
                        w.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push_str("\r\n");
                        }
                        s.lock().push((std::mem::take(&mut envelope), data));
                        w.write_all(b"250 queued\r\n").await.unwrap();
                    } else if upper == "QUIT" {
                        w.write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    } else {
                        w.write_all(b"250 OK\r\n").await.unwrap();
                    }
                }
            });
        }
    });
    (port, store)
}

fn header_of<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    data.lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        })
        .map(|l| l[name.len() + 1..].trim())
}

/// T-04: SMTP delivery to a real SMTP conversation with threading headers.
#[tokio::test]
async fn t04_smtp_sends_a_threaded_mail() {
    let (port, sink) = smtp_sink().await;
    let smtp = SmtpEmail::new(&SmtpConfig {
        url: format!("smtp://127.0.0.1:{port}"),
        username: None,
        password: None,
    })
    .unwrap();
    let email = EmailChannel::new("email", "support@example.com", Arc::new(smtp));
    let rx = email.receiver();
    let r = room_with(
        Arc::new(email),
        meta(&[("email_address", "ada@example.org")]),
    )
    .await;
    // Ada writes in (a forwarded raw message); then we answer.
    let raw = "From: Ada <ada@example.org>\r\nTo: support@example.com\r\nSubject: Invoice\r\nMessage-ID: <m1@example.org>\r\n\r\nWhere is my invoice?\r\n";
    let out = rx
        .verify_and_parse(&request(
            WebhookKind::Inbound,
            "u",
            &[("Content-Type", "message/rfc822")],
            raw,
        ))
        .unwrap();
    let mut m = out.messages[0].clone();
    assert_eq!(m.sender_id, "ada@example.org");
    m.room_id = Some(r.room.clone());
    let inbound = r.kit.process_inbound(m).await.unwrap().event.unwrap();
    assert_eq!(
        inbound.channel_data.get("subject").and_then(|v| v.as_str()),
        Some("Invoice")
    );
    let res = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "Attached again."))
        .await
        .unwrap();
    let d = res.delivery_results.iter().next().unwrap().1.clone();
    assert_eq!(d.status, DeliveryStatus::Sent);
    let event_id = res.event.unwrap().id;
    let sent = sink.lock().clone();
    assert_eq!(sent.len(), 1);
    let (envelope, data) = &sent[0];
    assert!(envelope[0].contains("support@example.com"));
    assert!(envelope[1].contains("ada@example.org"));
    assert_eq!(header_of(data, "Subject"), Some("Re: Invoice"));
    assert_eq!(header_of(data, "In-Reply-To"), Some("<m1@example.org>"));
    assert_eq!(header_of(data, "References"), Some("<m1@example.org>"));
    let own_id = format!("<rk.r1.{event_id}@example.com>");
    assert_eq!(header_of(data, "Message-ID"), Some(own_id.as_str()));
    assert_eq!(d.provider_message_id.as_deref(), Some(own_id.as_str()));
    assert!(data.contains("Attached again."));
}

const BOUNDARY: &str = "xYzZY";

fn multipart(fields: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (k, v) in fields {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body
}

/// T-04: SendGrid v3 Mail Send request, and a reply through Inbound Parse
/// that names our Message-ID lands in the room it came from.
#[tokio::test]
async fn t04_sendgrid_send_and_inbound_parse_thread_into_the_room() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .and(header("authorization", "Bearer SG.test-key"))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sgid-1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sgid-2"))
        .mount(&server)
        .await;
    let sg = SendGridEmail::new(SendGridConfig {
        api_key: Secret::new("SG.test-key"),
        base_url: server.uri(),
    });
    let email = EmailChannel::new("email", "support@example.com", Arc::new(sg));
    let rx = email.receiver();
    let r = room_with(
        Arc::new(email),
        meta(&[
            ("email_address", "ada@example.org"),
            ("subject", "Your booking"),
        ]),
    )
    .await;
    let res = r
        .kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "Booking confirmed."))
        .await
        .unwrap();
    let d = res.delivery_results.iter().next().unwrap().1.clone();
    assert_eq!(d.status, DeliveryStatus::Queued);
    assert_eq!(d.provider_message_id.as_deref(), Some("sgid-1"));
    let event_id = res.event.unwrap().id;
    let reqs = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    let own_id = format!("<rk.r1.{event_id}@example.com>");
    assert_eq!(
        body,
        serde_json::json!({
            "personalizations": [{"to": [{"email": "ada@example.org"}]}],
            "from": {"email": "support@example.com"},
            "subject": "Your booking",
            "content": [{"type": "text/plain", "value": "Booking confirmed."}],
            "custom_args": {"roomkit_message_id": own_id},
        })
    );

    // Ada replies; her client quotes our Message-ID.
    let headers = format!(
        "From: Ada <ada@example.org>\nTo: support@example.com\nSubject: Re: Your booking\nMessage-ID: <r2@example.org>\nIn-Reply-To: {own_id}\nReferences: {own_id}\n"
    );
    let body = multipart(&[
        ("headers", &headers),
        ("from", "Ada <ada@example.org>"),
        ("to", "support@example.com"),
        ("subject", "Re: Your booking"),
        ("text", "Thanks!"),
    ]);
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let out = rx
        .verify_and_parse(&request(
            WebhookKind::Inbound,
            "u",
            &[("Content-Type", &ct)],
            body,
        ))
        .unwrap();
    let m = out.messages[0].clone();
    assert_eq!(m.room_id.as_ref().map(|r| r.as_str()), Some("r1"));
    assert_eq!(m.content.plain_text(), "Thanks!");
    assert_eq!(
        m.idempotency_key.as_deref(),
        Some("sendgrid:<r2@example.org>")
    );
    let ev = r.kit.process_inbound(m).await.unwrap().event.unwrap();
    assert_eq!(ev.room_id.as_str(), "r1");

    // Our next mail answers hers.
    r.kit
        .send_event(SendEvent::text(r.room.clone(), "ws", "You're welcome."))
        .await
        .unwrap();
    let reqs = server.received_requests().await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(body["headers"]["In-Reply-To"], "<r2@example.org>");
    assert_eq!(
        body["headers"]["References"],
        format!("{own_id} <r2@example.org>")
    );

    // Delivery events update the result.
    let events = serde_json::json!([
        {"email": "ada@example.org", "event": "delivered", "sg_message_id": "sgid-1.filter0001.1.0", "timestamp": 1700000000}
    ]);
    let st = rx
        .verify_and_parse(&request(WebhookKind::Status, "u", &[], events.to_string()))
        .unwrap();
    assert_eq!(
        st.statuses[0].provider_message_id.as_deref(),
        Some("sgid-1")
    );
    let updated = r
        .kit
        .record_delivery_status(st.statuses[0].clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.id, event_id);
}

/// A malformed Inbound Parse body is an error, not a panic.
#[tokio::test]
async fn malformed_inbound_parse_is_refused() {
    let sg = SendGridEmail::new(SendGridConfig {
        api_key: Secret::new("k"),
        base_url: "http://127.0.0.1:9".into(),
    });
    let rx = EmailChannel::new("email", "a@b.c", Arc::new(sg)).receiver();
    let e = rx
        .verify_and_parse(&request(
            WebhookKind::Inbound,
            "u",
            &[("Content-Type", "text/plain")],
            "junk",
        ))
        .unwrap_err();
    assert!(!e.is_auth_failure());
}
