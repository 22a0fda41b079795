//! Property tests of the decoders of network audio (the CI-time counterpart
//! of the `codec_decode` fuzz target): random payloads, output sizes and
//! sequence numbers give samples or an [`AudioError`], never a panic, and
//! never more samples than the output holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use roomkit_audio::AudioError;
use roomkit_audio::codec::{AudioDecoder, G711, G711Law, OpusDecoder};
use roomkit_audio::plc::{Concealer, LossDetector};

fn decoders(rate: u32) -> Vec<Box<dyn AudioDecoder>> {
    vec![
        Box::new(G711::new(G711Law::Mu)),
        Box::new(G711::new(G711Law::A)),
        Box::new(OpusDecoder::new(rate).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_payloads_decode_or_fail_typed(
        rate in prop::sample::select(vec![8_000u32, 16_000, 48_000]),
        packets in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..200), 0usize..1000, any::<bool>()),
            1..8,
        ),
    ) {
        let mut all = decoders(rate);
        for (payload, out_len, lost) in packets {
            let mut out = vec![0i16; out_len];
            for d in &mut all {
                let result = if lost { d.conceal(&mut out) } else { d.decode(&payload, &mut out) };
                match result {
                    Ok(n) => prop_assert!(n <= out.len()),
                    Err(e) => prop_assert!(matches!(e, AudioError::Codec { .. }), "{e:?}"),
                }
            }
        }
    }

    #[test]
    fn any_sequence_numbers_keep_the_loss_count_sane(
        window in any::<u16>(),
        seqs in prop::collection::vec(any::<u16>(), 0..200),
    ) {
        let mut d = LossDetector::new(window);
        let mut last = 0;
        for s in seqs {
            let _ = d.on_packet(s);
            d.mark_received(s.wrapping_add(3));
            prop_assert!(d.packets_lost() >= last);
            last = d.packets_lost();
        }
    }

    #[test]
    fn concealment_of_any_size_never_panics(
        rate in 1u32..96_000,
        max_ms in -10.0f64..500.0,
        frames in prop::collection::vec((0usize..2000, any::<bool>()), 0..10),
    ) {
        let mut c = Concealer::new(rate, max_ms);
        for (len, good) in frames {
            let mut out = vec![1i16; len];
            if good { c.good_frame(&out) } else { c.conceal(&mut out) }
        }
    }
}
