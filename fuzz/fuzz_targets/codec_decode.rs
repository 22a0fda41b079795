//! Voice payloads as they arrive off the network: a sequence of packets
//! (length-prefixed in the input) decoded with G.711 µ-law and A-law and
//! with Opus, with losses concealed in between, and their sequence numbers
//! run through the loss detector.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_audio::codec::{AudioDecoder, G711, G711Law, OpusDecoder};
use roomkit_audio::plc::{Concealer, LossDetector};

const RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let rate = RATES[usize::from(selector) % RATES.len()];
    let mut decoders: Vec<Box<dyn AudioDecoder>> = vec![
        Box::new(G711::new(G711Law::Mu)),
        Box::new(G711::new(G711Law::A)),
    ];
    if let Ok(opus) = OpusDecoder::new(rate) {
        decoders.push(Box::new(opus));
    }
    let mut detector = LossDetector::new(u16::from(selector >> 2));
    let mut concealer = Concealer::new(rate, f64::from(selector));
    // Each packet: 2 bytes sequence number, 1 byte output size in 20-sample
    // steps, 1 byte length, then the payload.
    while rest.len() >= 4 {
        let seq = u16::from_be_bytes([rest[0], rest[1]]);
        let out_len = usize::from(rest[2]) * 20;
        let len = usize::from(rest[3]).min(rest.len() - 4);
        let payload = &rest[4..4 + len];
        rest = &rest[4 + len..];
        let _ = detector.on_packet(seq);
        if seq % 7 == 0 {
            detector.mark_received(seq.wrapping_add(1));
        }
        let mut out = vec![0i16; out_len];
        for d in &mut decoders {
            match d.decode(payload, &mut out) {
                Ok(n) => assert!(n <= out.len()),
                Err(_) => {
                    let _ = d.conceal(&mut out);
                }
            }
        }
        if payload.is_empty() {
            concealer.conceal(&mut out);
        } else {
            concealer.good_frame(&out);
        }
    }
    let _ = detector.packets_lost();
});
