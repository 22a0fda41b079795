//! OpenAI audio replies: the transcription answer (JSON `{"text": ..}`),
//! and the speech answer, raw 24 kHz PCM16 cut by the network anywhere
//! (the first byte of the input picks the cut sizes), which must give the
//! same samples however it is cut.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_voice::vendors::PcmAssembler;
use roomkit_voice::vendors::openai::parse_transcription;

fuzz_target!(|data: &[u8]| {
    match parse_transcription(data) {
        Ok(t) => {
            assert!(t.is_final);
            assert_eq!(t.text, t.text.trim());
        }
        Err(f) => assert_eq!(f.message, "transcriptions: unreadable answer"),
    }

    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let whole: Vec<i16> = body
        .chunks_exact(2)
        .map(|p| i16::from_le_bytes([p[0], p[1]]))
        .collect();
    let mut pcm = PcmAssembler::new();
    let mut got = Vec::new();
    let mut rest = body;
    let mut step = usize::from(cut % 7) + 1;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(step.min(rest.len()));
        got.extend(pcm.push(piece));
        got.extend(pcm.push(&[]));
        rest = tail;
        step = step % 7 + usize::from(cut >> 4) + 1;
    }
    assert_eq!(got, whole);
    assert_eq!(pcm.has_partial(), body.len() % 2 == 1);
});
