//! SIP messages as they arrive on the signalling port (a UDP datagram or a
//! frame cut from a TCP stream): parsed; what parses is written again and
//! must read back the same (headers in order, under their long names, and
//! the body), frame as exactly one message on a stream, and have readable
//! parties; any digest challenge in it is read without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_sip::SipMessage;
use roomkit_sip::digest::Challenge;
use roomkit_sip::message::{host_port_of, uri_of, user_of};

fn without_length(m: &SipMessage) -> Vec<(String, String)> {
    m.headers
        .iter()
        .filter(|(n, _)| n != "Content-Length")
        .cloned()
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let _ = SipMessage::frame_len(data);
    let Ok(message) = SipMessage::parse(data) else {
        return;
    };
    let bytes = message.to_bytes();
    let again = SipMessage::parse(&bytes).expect("a written message parses");
    assert_eq!(again.start, message.start);
    assert_eq!(without_length(&again), without_length(&message));
    assert_eq!(again.body, message.body);
    assert_eq!(SipMessage::frame_len(&bytes), Ok(Some(bytes.len())));
    for name in ["From", "To", "Contact"] {
        if let Some(v) = message.header(name) {
            let uri = uri_of(v);
            let _ = (user_of(uri), host_port_of(uri));
        }
    }
    for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
        for v in message.headers_named(name) {
            if let Ok(c) = Challenge::parse(v) {
                let _ = c.answer("u", "p", "INVITE", "sip:x@y", 1, "c");
            }
        }
    }
});
