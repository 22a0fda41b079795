//! Garbage on the signalling port: random bytes and mutations of real
//! requests never panic the SIP reader; every refusal is a typed error;
//! whatever is accepted writes back to the same message. A live user agent
//! fed the same garbage over UDP and TCP keeps answering OPTIONS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Rng;
use roomkit_sip::{SipConfig, SipEndpoint, SipError, SipMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const INVITE: &str = "INVITE sip:bot@198.51.100.1 SIP/2.0\r\n\
v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:bot@198.51.100.1>\r\n\
From: \"Alice\" <sip:+15551234567@198.51.100.7>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@198.51.100.7>\r\n\
Content-Type: application/sdp\r\n\
l: 5\r\n\
\r\n\
v=0\r\n";

fn options(call_id: &str) -> String {
    format!(
        "OPTIONS sip:bot@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n\
From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:bot@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn check(bytes: &[u8]) -> Result<(), SipError> {
    let m = SipMessage::parse(bytes)?;
    let written = m.to_bytes();
    let again = SipMessage::parse(&written).expect("a written message parses");
    assert_eq!(again.start, m.start);
    assert_eq!(again.body, m.body);
    assert_eq!(SipMessage::frame_len(&written), Ok(Some(written.len())));
    Ok(())
}

fn mutate(rng: &mut Rng, round: usize) -> Vec<u8> {
    let alphabet = b"SIP/2.0 :;=<>@\r\n\t,\"INVITE v l i 0123456789";
    if round.is_multiple_of(4) {
        let len = rng.below(300);
        return (0..len).map(|_| rng.next() as u8).collect();
    }
    let mut b = INVITE.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        let i = rng.below(b.len());
        match rng.below(3) {
            0 => b[i] = alphabet[rng.below(alphabet.len())],
            1 => {
                b.remove(i);
            }
            _ => b.insert(i, alphabet[rng.below(alphabet.len())]),
        }
    }
    b
}

#[test]
fn random_and_mutated_messages_are_refused_with_errors_or_round_trip() {
    assert!(check(INVITE.as_bytes()).is_ok());
    let mut rng = Rng(0x5195_eed0_0000_0017);
    let (mut accepted, mut refused) = (0u32, 0u32);
    for round in 0..100_000 {
        match check(&mutate(&mut rng, round)) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    assert!(
        accepted > 5_000 && refused > 5_000,
        "{accepted} accepted, {refused} refused"
    );
    assert!(matches!(
        SipMessage::parse(&vec![b'A'; 70_000]),
        Err(SipError::TooLong(_))
    ));
}

#[tokio::test]
async fn a_live_agent_fed_garbage_keeps_answering() {
    let config = SipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..SipConfig::default()
    };
    let (ua, _calls) = SipEndpoint::bind(config).await.unwrap();
    let target = ua.local_addr();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rng = Rng(0xfeed_0000_5150);
    for round in 0..3_000 {
        udp.send_to(&mutate(&mut rng, round), target).await.unwrap();
    }
    // Oversize datagrams too.
    udp.send_to(&vec![b'x'; 9_000], target).await.unwrap();
    udp.send_to(options("after-garbage").as_bytes(), target)
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let answer = loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let m = SipMessage::parse(&buf[..n]).expect("answers parse");
        if m.call_id() == "after-garbage" {
            break m;
        }
    };
    assert_eq!(answer.status(), Some(200));
    assert!(
        ua.stats()
            .bad_messages
            .load(std::sync::atomic::Ordering::Relaxed)
            > 100
    );

    // A TCP stream of garbage is closed; a new connection is served.
    let mut bad = tokio::net::TcpStream::connect(target).await.unwrap();
    let _ = bad.write_all(&vec![b'Z'; 70_000]).await;
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut sink)).await;
    assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    let mut good = tokio::net::TcpStream::connect(target).await.unwrap();
    good.write_all(options("over-tcp").replace("UDP", "TCP").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while SipMessage::frame_len(&got).ok().flatten().is_none() {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, good.read(&mut chunk))
            .await
            .expect("an answer over TCP")
            .unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&chunk[..n]);
    }
    let m = SipMessage::parse(&got).unwrap();
    assert_eq!((m.status(), m.call_id()), (Some(200), "over-tcp"));
}
