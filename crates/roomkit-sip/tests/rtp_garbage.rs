//! Garbage on a media port: random datagrams and mutations of valid packets
//! never panic the RTP reader, every refusal is a typed error, and whatever
//! is accepted writes back to the same header and payload.

mod common;

use common::Rng;
use roomkit_sip::rtp::MAX_PACKET_LEN;
use roomkit_sip::{RtpError, RtpHeader, RtpPacket, TelephoneEvent};

fn check(datagram: &[u8]) -> Result<(), RtpError> {
    let packet = RtpPacket::parse(datagram)?;
    assert!(packet.payload.len() + packet.padding <= datagram.len());
    let mut out = Vec::new();
    packet.header.write(packet.payload, &mut out)?;
    let again = RtpPacket::parse(&out)?;
    assert_eq!(again.header, packet.header);
    assert_eq!(again.payload, packet.payload);
    if let Ok(event) = TelephoneEvent::parse(packet.payload) {
        assert_eq!(TelephoneEvent::parse(&event.to_bytes())?, event);
    }
    Ok(())
}

#[test]
fn random_and_mutated_datagrams_are_answered_with_errors_or_round_trip() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut valid = Vec::new();
    let header = RtpHeader {
        marker: false,
        payload_type: 101,
        sequence: 7,
        timestamp: 160,
        ssrc: 42,
    };
    assert!(header.write(&[3, 0x8a, 0, 160], &mut valid).is_ok());
    let (mut accepted, mut refused) = (0u32, 0u32);
    for round in 0..200_000 {
        let datagram: Vec<u8> = if round % 2 == 0 {
            let len = rng.below(64);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut d = valid.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            d.truncate(rng.below(d.len() + 1));
            d
        };
        match check(&datagram) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    // Both paths were exercised.
    assert!(
        accepted > 1_000 && refused > 1_000,
        "{accepted} accepted, {refused} refused"
    );
    assert!(matches!(
        RtpPacket::parse(&vec![0x80; MAX_PACKET_LEN + 1]),
        Err(RtpError::TooLong { .. })
    ));
}
