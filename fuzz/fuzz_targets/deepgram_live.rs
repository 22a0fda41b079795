//! Deepgram replies: text messages of the live socket (`Results`,
//! `Metadata`, `SpeechStarted`, `UtteranceEnd`, `Error`; several, split at
//! `0xFF`) applied in order to one turn, whose interim and final
//! transcripts must stay consistent; and the whole input as a
//! pre-recorded REST answer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_fuzz::text_fields;
use roomkit_voice::vendors::deepgram::{Turn, apply_message, parse_prerecorded};

fuzz_target!(|data: &[u8]| {
    let mut turn = Turn::default();
    for message in text_fields(data, 12) {
        let _ = apply_message(&mut turn, &message);
        if let Some(p) = turn.preview() {
            assert!(!p.is_final);
            assert!(!p.text.is_empty());
            assert!(p.confidence.is_none_or(|c| (0.0..=1.0).contains(&c)));
        }
        if message.len() % 3 == 0
            && let Some(f) = turn.take_final()
        {
            assert!(f.is_final && !f.text.is_empty());
            assert!(turn.preview().is_none());
        }
    }
    match parse_prerecorded(data) {
        Ok(t) => {
            assert!(t.is_final);
            assert!(t.confidence.is_none_or(|c| (0.0..=1.0).contains(&c)));
        }
        Err(f) => assert_eq!(f.message, "listen: unreadable answer"),
    }
});
