//! Twilio Media Streams: text messages of the media socket (`connected`,
//! `start`, `media` with base64 mu-law, `mark`, `dtmf`, `stop`) read by the
//! parser directly, then the same messages (several, split at `0xFF`; a
//! leading `0x00` byte makes a binary frame) sent after a valid `start`
//! through the real transport, which must turn them into events or skip
//! them and end the call when the socket closes.

#![no_main]

use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use roomkit_fuzz::{fields, runtime};
use roomkit_voice::backend::{BackendEvent, MediaMessage, MediaSink, MediaSocket, VoiceBackend};
use roomkit_voice::twilio::{self, TwilioInbound, TwilioMediaStreams};
use roomkit_voice::{VoiceError, backend::dtmf_digit};

const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"streamSid":"MZ1","callSid":"CA1","accountSid":"AC1","tracks":["inbound"],"customParameters":{"from":"+15550001111"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"streamSid":"MZ1"}"#;

fn message(piece: &[u8]) -> MediaMessage {
    match piece.split_first() {
        Some((0, rest)) => MediaMessage::Binary(rest.to_vec()),
        _ => MediaMessage::Text(String::from_utf8_lossy(piece).into_owned()),
    }
}

fn check_parsed(text: &str) {
    let Ok(parsed) = twilio::parse(text) else {
        return;
    };
    match &parsed {
        TwilioInbound::Media { media, .. } => {
            if let Ok(samples) = twilio::decode_payload(&media.payload) {
                assert!(!samples.is_empty() && samples.len() <= twilio::MAX_MESSAGE_BYTES);
            }
        }
        TwilioInbound::Dtmf { dtmf, .. } => {
            if let Some(d) = dtmf_digit(&dtmf.digit) {
                assert!(d.is_ascii_digit() || "*#ABCD".contains(d));
            }
        }
        _ => {}
    }
    // What parses serializes and parses again to the same message.
    if let Ok(json) = serde_json::to_string(&parsed)
        && json.len() <= twilio::MAX_MESSAGE_BYTES
    {
        assert_eq!(twilio::parse(&json).ok(), Some(parsed));
    }
}

fuzz_target!(|data: &[u8]| {
    let pieces = fields(data, 8);
    for piece in &pieces {
        let text = String::from_utf8_lossy(piece);
        check_parsed(&text);
        let _ = twilio::decode_payload(&text);
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
        let mut call = TwilioMediaStreams::new()
            .accept(socket)
            .await
            .unwrap_or_else(|e| panic!("a valid start opens the call: {e}"));
        loop {
            match call.events.recv().await {
                Some(BackendEvent::HangUp { .. }) | None => break,
                Some(BackendEvent::Dtmf(d)) => assert!(d.is_ascii_digit() || "*#ABCD".contains(d)),
                Some(_) => {}
            }
        }
        while out_rx.try_recv().is_ok() {}
    });
});
