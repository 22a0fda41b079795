//! Garbage in SIP bodies: random bytes and mutations of a real offer never
//! panic the SDP reader or the codec choice; every refusal is a typed
//! error; whatever is accepted is written out and reads back the same.

mod common;

use common::Rng;
use roomkit_sip::sdp::{Codec, answer_audio};
use roomkit_sip::{SdpError, SessionDescription};

const OFFER: &str = "v=0\r\no=- 3 4 IN IP6 2001:db8::7\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\na=ptime:20\r\na=inactive\r\nm=video 0 RTP/AVP 31\r\n";

const CODECS: &[Codec] = &[
    Codec {
        encoding: "PCMU",
        clock_rate: 8000,
    },
    Codec {
        encoding: "opus",
        clock_rate: 48000,
    },
];

fn check(body: &[u8]) -> Result<(), SdpError> {
    let sdp = SessionDescription::parse(body)?;
    assert_eq!(SessionDescription::parse(sdp.to_string().as_bytes())?, sdp);
    if let Ok(agreed) = answer_audio(&sdp, CODECS) {
        assert!(
            sdp.media[agreed.media_index]
                .formats
                .contains(&agreed.payload_type)
        );
    }
    Ok(())
}

#[test]
fn random_and_mutated_bodies_are_answered_with_errors_or_round_trip() {
    assert!(check(OFFER.as_bytes()).is_ok());
    let mut rng = Rng(0x0bad_5eed_0000_0042);
    let alphabet = b"v=0 IN IP4 6 a:m/audio RTP/AVP\r\n-.12789";
    let (mut accepted, mut refused) = (0u32, 0u32);
    for round in 0..50_000 {
        let body: Vec<u8> = if round % 4 == 0 {
            let len = rng.below(200);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            let mut b = OFFER.as_bytes().to_vec();
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
        };
        match check(&body) {
            Ok(()) => accepted += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    assert!(
        accepted > 1_000 && refused > 1_000,
        "{accepted} accepted, {refused} refused"
    );
}
