//! The browser call protocol: JSON control messages and binary PCM16
//! frames read by the parsers directly, the API-key check of the upgrade,
//! then the same messages (several, split at `0xFF`; a leading `0x00` byte
//! makes a binary frame) sent after a valid `start` through the real
//! transport, which must turn them into events or answer an `error`
//! message, and end the call when the socket closes.

#![no_main]

use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use roomkit_fuzz::{fields, runtime};
use roomkit_voice::VoiceError;
use roomkit_voice::backend::{
    BackendEvent, MediaMessage, MediaSink, MediaSocket, VoiceBackend, dtmf_digit,
};
use roomkit_voice::browser::{self, BrowserBackend, BrowserInbound};

const START: &str = r#"{"type":"start","sample_rate":16000,"encoding":"pcm16","room_id":"r1","participant":"alice","name":"Alice"}"#;

fn message(piece: &[u8]) -> MediaMessage {
    match piece.split_first() {
        Some((0, rest)) => MediaMessage::Binary(rest.to_vec()),
        _ => MediaMessage::Text(String::from_utf8_lossy(piece).into_owned()),
    }
}

fuzz_target!(|data: &[u8]| {
    let pieces = fields(data, 8);
    for piece in &pieces {
        if let Ok(samples) = browser::decode_frame(piece) {
            assert_eq!(samples.len() * 2, piece.len());
            assert_eq!(browser::encode_frame(&samples), piece.to_vec());
        }
        let text = String::from_utf8_lossy(piece);
        match browser::parse(&text) {
            Ok(BrowserInbound::Dtmf { digit }) => {
                let _ = dtmf_digit(&digit);
            }
            Ok(BrowserInbound::Start { room_id, name, .. }) => {
                if let Some(r) = browser::clean(room_id, 256) {
                    assert!(!r.is_empty() && r.chars().count() <= 256);
                    assert!(!r.chars().any(char::is_control));
                }
                let _ = browser::clean(name, 128);
            }
            _ => {}
        }
        let keys = vec![String::from_utf8_lossy(&pieces[0]).into_owned()];
        let headers = vec![("Authorization".to_owned(), text.clone().into_owned())];
        let _ = browser::authorize_api_key(&keys, &text, &headers);
    }

    let mut incoming: Vec<Result<MediaMessage, VoiceError>> =
        vec![Ok(MediaMessage::Text(START.to_owned()))];
    incoming.extend(pieces.iter().map(|p| Ok(message(p))));
    incoming.push(Ok(MediaMessage::Close));
    runtime().block_on(async {
        let (out_tx, mut out_rx) = futures::channel::mpsc::unbounded::<MediaMessage>();
        let sink: MediaSink =
            Box::pin(out_tx.sink_map_err(|e| VoiceError::Transport(e.to_string())));
        let socket = MediaSocket::new(futures::stream::iter(incoming).boxed(), sink);
        let mut call = BrowserBackend::new()
            .accept(socket)
            .await
            .unwrap_or_else(|e| panic!("a valid start opens the call: {e}"));
        loop {
            match call.events.recv().await {
                Some(BackendEvent::HangUp { .. }) | None => break,
                Some(BackendEvent::Audio(s)) => {
                    assert!(!s.is_empty() && s.len() * 2 <= browser::MAX_FRAME_BYTES);
                }
                Some(_) => {}
            }
        }
        // Every answer to the page is a text message of JSON, audio, or the close.
        while let Ok(m) = out_rx.try_recv() {
            if let MediaMessage::Text(t) = m {
                assert!(serde_json::from_str::<serde_json::Value>(&t).is_ok(), "{t}");
            }
        }
    });
});
