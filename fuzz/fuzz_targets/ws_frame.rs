//! WebSocket client frames: the parser every text frame goes through.
//! Whatever it refuses must be a 400 with the contract's error shape.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_server::extract::parse_json;
use roomkit_server::ws::ClientFrame;

fuzz_target!(|data: &[u8]| {
    match parse_json::<ClientFrame>(data) {
        Ok(ClientFrame::Send { content, .. }) => {
            let _ = content.validate();
        }
        Ok(_) => {}
        Err(e) => assert_eq!(e.status.as_u16(), 400, "{e:?}"),
    }
});
