//! Email through the server: a raw inbound mail posted to the SMTP
//! channel's webhook (with its inbound token) opens a room, and a reply
//! from a WebSocket client reaches a local SMTP server as a threaded mail.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;

use crate::sms::rooms;
use crate::{Server, config_file, connect, next_frame, send};

/// Envelope lines and data of each mail an SMTP sink accepted.
type Mails = Arc<(Mutex<Vec<(Vec<String>, String)>>, Notify)>;

/// A minimal SMTP server on loopback that accepts every mail.
async fn smtp_sink() -> (u16, Mails) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails: Mails = Arc::new((Mutex::new(Vec::new()), Notify::new()));
    let store = mails.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
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
                        store
                            .0
                            .lock()
                            .unwrap()
                            .push((std::mem::take(&mut envelope), data));
                        store.1.notify_waiters();
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
    (port, mails)
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    data.lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[name.len() + 1..].trim())
}

#[tokio::test]
async fn inbound_mail_opens_a_room_and_a_websocket_reply_goes_out_over_smtp() {
    let (port, mails) = smtp_sink().await;
    let config = format!(
        r#"
[[channels]]
id = "ws"
type = "websocket"

[[channels]]
id = "email-main"
type = "email"
provider = "smtp"
from = "support@example.com"
smtp_url = "smtp://127.0.0.1:{port}"
inbound_token_env = "MAIL_TOKEN"
"#
    );
    let path = config_file(&config);
    let s = Server::start_with(
        &["--config", path.to_str().unwrap()],
        &[("MAIL_TOKEN", "mail-secret")],
    )
    .await;
    let raw = "From: Ada <ada@example.org>\r\nTo: support@example.com\r\nSubject: Invoice\r\nMessage-ID: <m1@example.org>\r\n\r\nWhere is my invoice?\r\n";
    let post = |url: String| {
        let s = &s;
        async move {
            s.http
                .post(url)
                .header("content-type", "message/rfc822")
                .body(raw)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Without the token, or with a wrong one: refused, nothing stored.
    assert_eq!(post(s.url("/webhooks/email/smtp")).await, 403);
    assert_eq!(post(s.url("/webhooks/email/smtp?token=nope")).await, 403);
    assert!(rooms(&s).await.is_empty());
    assert_eq!(
        post(s.url("/webhooks/email/smtp?token=mail-secret")).await,
        200
    );
    assert_eq!(
        post(s.url("/webhooks/email/smtp?token=mail-secret")).await,
        200,
        "a redelivered mail is accepted"
    );
    let all = rooms(&s).await;
    assert_eq!(all.len(), 1);
    let room = all[0].clone();
    let events = crate::sms::messages(&s, &room).await;
    assert_eq!(
        events.len(),
        1,
        "the redelivery was a duplicate: {events:?}"
    );
    assert_eq!(events[0]["content"]["text"], "Where is my invoice?");
    assert_eq!(events[0]["source"]["channel_id"], "email-main");

    s.ok(
        "POST",
        &format!("/rooms/{room}/channels"),
        Some(json!({"channel_id": "ws"})),
    )
    .await;
    let mut agent = connect(&s.ws_url(&format!("/ws/{room}?channel_id=ws"))).await;
    send(
        &mut agent,
        json!({"type": "send", "content": {"type": "text", "text": "It is attached again."}}),
    )
    .await;
    let ack = loop {
        let f = next_frame(&mut agent).await.unwrap();
        if f["type"] == "ack" {
            break f;
        }
    };
    assert_eq!(ack["result"]["blocked"], false, "{ack}");
    // The ack comes after delivery, so the mail is already in the sink.
    let wait = async {
        loop {
            let notified = mails.1.notified();
            if let Some(m) = mails.0.lock().unwrap().first().cloned() {
                return m;
            }
            notified.await;
        }
    };
    let (envelope, data) = tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .expect("the mail arrives");
    assert!(
        envelope[0].contains("<support@example.com>"),
        "{envelope:?}"
    );
    assert!(envelope[1].contains("<ada@example.org>"), "{envelope:?}");
    assert_eq!(header(&data, "Subject"), Some("Re: Invoice"));
    assert_eq!(header(&data, "In-Reply-To"), Some("<m1@example.org>"));
    assert!(data.contains("It is attached again."), "{data}");
    let mid = header(&data, "Message-ID").unwrap();
    assert!(mid.starts_with(&format!("<rk.{room}.")), "{mid}");
}
