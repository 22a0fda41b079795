//! Property tests of the spool readers (the CI-time counterpart of the
//! `spool_record` fuzz target): whatever is on disk after a crash, reading
//! and recovering a call gives values or an [`AnalyticsError`], never a
//! panic, and recovery leaves whole stereo frames of audio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use proptest::prelude::*;
use roomkit_analytics::AnalyticsError;
use roomkit_analytics::protocol::{BYTES_PER_FRAME, CallStarted};
use roomkit_analytics::spool::{CallFiles, CallMeta, Spool, validate_call_id};

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rk-spool-fuzz-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn meta(timestamp: &str, sample_rate: u32) -> CallMeta {
    CallMeta {
        version: 1,
        call_id: "c1".into(),
        room_id: "r1".into(),
        started: CallStarted {
            event: "call-started".into(),
            livekit_call_id: "c1".into(),
            event_timestamp: timestamp.into(),
            agent_id: "a".into(),
            is_test: false,
            agent_name: None,
            agent_prompt: None,
            job_id: None,
            room_name: None,
            room_sid: None,
        },
        sample_rate,
        metadata: Default::default(),
    }
}

fn typed<T>(r: Result<T, AnalyticsError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

fn record_line() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        Just(r#"{"t":"first_speaker","v":"user"}"#.to_owned()),
        Just(r#"{"t":"metric","v":{}}"#.to_owned()),
        Just(r#"{"t":"transcript","v":{"role":"user"}}"#.to_owned()),
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_files_read_or_fail_typed(
        call in prop::collection::vec(any::<u8>(), 0..200),
        records in prop::collection::vec(record_line(), 0..6),
        ended in prop::collection::vec(any::<u8>(), 0..64),
        audio in 0usize..64,
    ) {
        let d = dir();
        std::fs::write(d.join("call.json"), &call).unwrap();
        std::fs::write(d.join("records.jsonl"), records.join("\n")).unwrap();
        std::fs::write(d.join("ended.json"), &ended).unwrap();
        std::fs::write(d.join("audio.pcm"), vec![0u8; audio]).unwrap();
        let files = CallFiles::new(&d);
        typed(files.end());
        typed(files.records());
        typed(files.export_log("x").load());
        typed(files.read_audio(audio as u64 / 2, audio));
        if let Some(m) = typed(files.meta()) {
            typed(files.finalize_crashed(&m));
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn recovery_with_any_timestamp_and_rate(
        timestamp in prop_oneof![
            ".{0,30}",
            Just("9999-12-31T23:59:59.999999+00:00".to_owned()),
            Just("0000-01-01T00:00:00+00:00".to_owned()),
            Just("2026-01-01T00:00:00-23:59".to_owned()),
        ],
        sample_rate in prop_oneof![Just(0u32), Just(1), Just(8_000), any::<u32>()],
        audio in 0usize..4096,
        records in prop::collection::vec(prop_oneof![
            Just(r#"{"t":"metric","v":{"name":"x","value":1.0,"timestamp":"9999-12-31T23:59:59+00:00"}}"#.to_owned()),
            record_line(),
        ], 0..4),
    ) {
        let d = dir();
        std::fs::write(d.join("call.json"), serde_json::to_vec(&meta(&timestamp, sample_rate)).unwrap()).unwrap();
        std::fs::write(d.join("records.jsonl"), records.join("\n")).unwrap();
        std::fs::write(d.join("audio.pcm"), vec![0u8; audio]).unwrap();
        let files = CallFiles::new(&d);
        let m = files.meta().unwrap();
        if let Some(end) = typed(files.finalize_crashed(&m)) {
            prop_assert_eq!(end.audio_bytes % BYTES_PER_FRAME, 0);
            prop_assert_eq!(files.audio_len(), end.audio_bytes);
            prop_assert_eq!(files.end().unwrap(), Some(end));
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn any_call_id_is_checked_without_panic(id in ".{0,24}") {
        let root = dir();
        let spool = Spool::open(&root).unwrap();
        if validate_call_id(&id).is_ok() {
            prop_assert!(spool.call_dir(&id).starts_with(&root));
        }
        std::fs::create_dir_all(root.join("junk dir")).unwrap();
        typed(spool.list_calls());
        std::fs::remove_dir_all(root).unwrap();
    }
}
