//! RTP datagrams as they arrive on a media port: parsed; what parses is
//! written again from its header and payload and must read back the same;
//! a payload is also read as an RFC 4733 telephone event, which must
//! survive the same round trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_sip::{RtpPacket, TelephoneEvent};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = RtpPacket::parse(data) else {
        return;
    };
    assert!(packet.payload.len() + packet.padding <= data.len());
    let mut out = Vec::new();
    if packet.header.write(packet.payload, &mut out).is_ok() {
        let again = RtpPacket::parse(&out).expect("a written packet parses");
        assert_eq!(again.header, packet.header);
        assert_eq!(again.payload, packet.payload);
    }
    if let Ok(event) = TelephoneEvent::parse(packet.payload) {
        let bytes = event.to_bytes();
        let back = TelephoneEvent::parse(&bytes).expect("four bytes parse");
        assert_eq!((back.event, back.end, back.duration), (event.event, event.end, event.duration));
        assert_eq!(back.volume, event.volume.min(63));
        let _ = event.digit();
    }
});
