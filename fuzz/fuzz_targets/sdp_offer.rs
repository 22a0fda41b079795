//! SDP bodies as they arrive in SIP messages: parsed; what parses is
//! written again and must read back the same, and the audio codec choice
//! must pick a payload type the chosen section offers.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_sip::SessionDescription;
use roomkit_sip::sdp::{Codec, answer_audio};

const CODECS: &[Codec] = &[
    Codec {
        encoding: "PCMU",
        clock_rate: 8000,
    },
    Codec {
        encoding: "PCMA",
        clock_rate: 8000,
    },
    Codec {
        encoding: "opus",
        clock_rate: 48000,
    },
];

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = SessionDescription::parse(data) else {
        return;
    };
    let again = SessionDescription::parse(sdp.to_string().as_bytes())
        .expect("a written description parses");
    assert_eq!(again, sdp);
    if let Ok(agreed) = answer_audio(&sdp, CODECS) {
        assert!(sdp.media[agreed.media_index].formats.contains(&agreed.payload_type));
    }
});
