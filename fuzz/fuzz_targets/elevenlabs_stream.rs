//! ElevenLabs streaming with timestamps: lines of JSON (`audio_base64`,
//! `alignment` with per-character times) cut by the network anywhere,
//! decoded for a synthesized text (the input's first field). Word marks
//! must stay inside the text, on character boundaries and in order; audio
//! past the cap is an error; after an error nothing more comes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_fuzz::fields;
use roomkit_voice::vendors::elevenlabs::TimestampDecoder;

const MAX_AUDIO: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let parts = fields(data, 3);
    let text = String::from_utf8_lossy(parts[0]).into_owned();
    let cut = parts[1].first().copied().unwrap_or(0);
    let body = parts[2];
    let rate = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000][usize::from(cut % 6)];
    let mut decoder = TimestampDecoder::new(text.clone(), rate, MAX_AUDIO);
    let mut chunks = Vec::new();
    let mut failed = false;
    let mut rest = body;
    let step = usize::from(cut >> 3) + 1;
    while !rest.is_empty() && !failed {
        let (piece, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        if decoder.feed(piece).is_err() {
            failed = true;
        }
        while let Some(item) = decoder.next_chunk() {
            match item {
                Ok(c) => chunks.push(c),
                Err(_) => failed = true,
            }
        }
    }
    decoder.end();
    while let Some(item) = decoder.next_chunk() {
        assert!(!failed, "a chunk after a failure");
        match item {
            Ok(c) => chunks.push(c),
            Err(_) => failed = true,
        }
    }
    assert!(decoder.is_done() || failed);
    assert!(decoder.next_chunk().is_none());

    let mut last = 0;
    let mut samples = 0usize;
    for c in &chunks {
        assert_eq!(c.sample_rate, rate);
        samples += c.samples.len();
        for m in &c.marks {
            assert!(m.text_end <= text.len(), "{} > {}", m.text_end, text.len());
            assert!(text.is_char_boundary(m.text_end));
            assert!(m.text_end >= last);
            last = m.text_end;
        }
    }
    assert!(samples * 2 <= MAX_AUDIO);
});
