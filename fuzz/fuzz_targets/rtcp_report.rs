//! RTCP compound packets as they arrive on a call's RTCP port (or
//! multiplexed on its RTP port): parsed; what parses is written again (its
//! first report with its first block) and reads back the same, and the
//! round trip a block gives never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_sip::rtcp;

fuzz_target!(|data: &[u8]| {
    let Ok(reports) = rtcp::parse(data) else {
        return;
    };
    let Some(first) = reports.first() else {
        return;
    };
    let block = first.blocks.first();
    let mut out = Vec::new();
    rtcp::write(first.ssrc, first.sender.as_ref(), block, "fuzz", &mut out);
    let again = rtcp::parse(&out).expect("a written report parses");
    assert_eq!(again[0].ssrc, first.ssrc);
    assert_eq!(again[0].sender, first.sender);
    assert_eq!(again[0].blocks.first(), block);
    if let Some(b) = block {
        let _ = rtcp::round_trip(b, u32::MAX);
        let _ = rtcp::round_trip(b, 0);
    }
});
