//! `roomkit serve` on a SQLite store whose disk fills up: writes through
//! the REST API and provider webhooks are answered 503 (never 500) while
//! the disk is full, and succeed again by themselves once space is freed,
//! with everything acknowledged before still there.
//!
//! The disk is a 2 MiB tmpfs (needs root, as in CI); the test fails with a
//! clear message when it cannot be mounted.

use roomkit_testkit::tmpfs::Tmpfs;
use serde_json::json;

use crate::sms::{CUSTOMER, FakeTwilio, TOKEN, messages, rooms, sms_in, twilio_config};
use crate::{Server, config_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_and_writes_resume_once_space_returns() {
    let disk = Tmpfs::mount(2048);
    let url = format!("sqlite://{}", disk.path().join("rooms.db").display());
    let (_twilio, base) = FakeTwilio::start().await;
    let config = config_file(&twilio_config(&base, ""));
    let s = Server::start_with(
        &["--config", config.to_str().unwrap(), "--store", &url],
        &[("TWILIO_AUTH_TOKEN", TOKEN)],
    )
    .await;
    s.room("full", false).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let text = format!("before {i}");
        s.post_text("full", "ws", &text).await;
        acked.push(text);
    }
    let (status, _, body) = sms_in(&s, "SM0001", CUSTOMER, "first text").await;
    assert_eq!(status, 200, "{body}");

    disk.fill();
    let padding = "x".repeat(16 * 1024);
    let mut refused = 0;
    for i in 0..400 {
        let text = format!("while full {i} {padding}");
        let (status, v) = s
            .call(
                "POST",
                "/rooms/full/events",
                Some(json!({"channel_id": "ws", "content": {"type": "text", "text": text}})),
            )
            .await;
        match status {
            200..=299 => acked.push(text),
            503 => {
                assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
                assert!(
                    v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("disk full"),
                    "{v}"
                );
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!(
                "a full disk must be answered 503, got {other}: {v}\n{}",
                s.log()
            ),
        }
    }
    assert!(refused > 0, "writes must fail on the full disk");
    // A provider webhook is told to retry later: 503, not 500.
    let (status, _, body) = sms_in(&s, "SM0002", CUSTOMER, "sent while full").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("store_unavailable"), "{body}");

    disk.free();
    // No restart: every write succeeds again, through every pooled
    // connection (more writes than connections).
    for i in 0..24 {
        let text = format!("after {i}");
        let (status, v) = s
            .call(
                "POST",
                "/rooms/full/events",
                Some(json!({"channel_id": "ws", "content": {"type": "text", "text": text}})),
            )
            .await;
        assert!(
            (200..300).contains(&status),
            "write {i} after space returned: {status} {v}\n{}",
            s.log()
        );
        acked.push(text);
    }
    // The provider's retry of the refused webhook now lands.
    let (status, _, body) = sms_in(&s, "SM0002", CUSTOMER, "sent while full").await;
    assert_eq!(status, 200, "{body}");

    let texts: Vec<String> = s
        .timeline("full")
        .await
        .iter()
        .filter_map(|e| e["content"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(texts, acked, "exactly the acknowledged messages, in order");
    let sms_rooms: Vec<String> = rooms(&s)
        .await
        .into_iter()
        .filter(|r| r != "full")
        .collect();
    assert_eq!(sms_rooms.len(), 1, "{sms_rooms:?}");
    let sms: Vec<String> = messages(&s, &sms_rooms[0])
        .await
        .iter()
        .map(|e| e["content"]["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sms, ["first text", "sent while full"]);
    drop(s);
}
