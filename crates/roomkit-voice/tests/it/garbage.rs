//! Garbage-input tests of every parser of outside input in the voice crate
//! (the CI-time counterpart of the `twilio_media`, `twilio_voice_webhook`,
//! `browser_media`, `deepgram_live`, `openai_audio` and `elevenlabs_stream`
//! fuzz targets): random bytes and mutated valid messages, a few thousand
//! of each from a fixed seed, must give a value or a clear error, never a
//! panic. Nothing here depends on timing.

use base64::Engine;
use futures::{SinkExt, StreamExt};
use roomkit_voice::backend::{MediaMessage, MediaSink, MediaSocket, dtmf_digit};
use roomkit_voice::browser::{self, BrowserBackend, BrowserInbound};
use roomkit_voice::twilio::{self, TwilioInbound, TwilioMediaStreams};
use roomkit_voice::vendors::PcmAssembler;
use roomkit_voice::vendors::deepgram::{Turn, apply_message, parse_prerecorded};
use roomkit_voice::vendors::elevenlabs::TimestampDecoder;
use roomkit_voice::vendors::openai::parse_transcription;
use roomkit_voice::{BackendEvent, VoiceBackend, VoiceError};

/// Iterations of each garbage loop.
const ROUNDS: usize = 3_000;

/// A small deterministic generator (SplitMix64): the same inputs on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `valid` damaged a few ways: bytes flipped, cut, spliced, repeated,
    /// or a JSON-ish token dropped in.
    fn mutate(&mut self, valid: &[u8]) -> Vec<u8> {
        const TOKENS: [&[u8]; 12] = [
            b"\"",
            b"{",
            b"}",
            b"[",
            b"]",
            b"null",
            b"-1e309",
            b"\\u0000",
            b"\xff",
            b"\n",
            b"18446744073709551616",
            b"\"\xc3\"",
        ];
        let mut out = valid.to_vec();
        for _ in 0..=self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] ^= 1 << self.below(8);
                }
                1 => out.truncate(at),
                2 => {
                    let t = TOKENS[self.below(TOKENS.len())];
                    out.splice(at..at, t.iter().copied());
                }
                3 if !out.is_empty() => {
                    let end = (at + self.below(16)).min(out.len());
                    out.drain(at.min(end)..end);
                }
                4 => {
                    let piece: Vec<u8> = out[at..].iter().take(32).copied().collect();
                    out.splice(at..at, piece);
                }
                _ => {
                    let junk = self.bytes(8);
                    out.splice(at..at, junk);
                }
            }
        }
        out
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mulaw_b64(n: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(vec![0x7f_u8; n])
}

fn twilio_messages() -> Vec<String> {
    vec![
        r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_owned(),
        r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{"from":"+1555"}},"streamSid":"MZ1"}"#.to_owned(),
        format!(
            r#"{{"event":"media","sequenceNumber":"3","media":{{"track":"inbound","chunk":"1","timestamp":"5","payload":"{}"}},"streamSid":"MZ1"}}"#,
            mulaw_b64(160)
        ),
        r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"reply-1"}}"#.to_owned(),
        r##"{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"#"}}"##.to_owned(),
        r#"{"event":"stop","streamSid":"MZ1","stop":{"callSid":"CA1"}}"#.to_owned(),
    ]
}

fn browser_messages() -> Vec<String> {
    [
        r#"{"type":"start","sample_rate":16000,"encoding":"pcm16","room_id":"r1","participant":"alice","name":"Alice"}"#,
        r#"{"type":"mark","name":"reply-1"}"#,
        r#"{"type":"dtmf","digit":"5"}"#,
        r#"{"type":"stop"}"#,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn check_twilio(text: &str) {
    match twilio::parse(text) {
        Ok(TwilioInbound::Media { media, .. }) => match twilio::decode_payload(&media.payload) {
            Ok(samples) => assert!(!samples.is_empty()),
            Err(e) => assert!(matches!(e, VoiceError::Transport(_))),
        },
        Ok(TwilioInbound::Dtmf { dtmf, .. }) => {
            if let Some(d) = dtmf_digit(&dtmf.digit) {
                assert!(d.is_ascii_digit() || "*#ABCD".contains(d), "{d:?}");
            }
        }
        Ok(_) => {}
        Err(e) => assert!(matches!(e, VoiceError::Transport(_))),
    }
}

#[test]
fn twilio_media_messages_survive_garbage() {
    let mut rng = Rng(0x7111_0001);
    let valid = twilio_messages();
    for _ in 0..ROUNDS {
        let junk = lossy(&rng.bytes(300));
        check_twilio(&junk);
        let _ = twilio::decode_payload(&junk);
        let base = &valid[rng.below(valid.len())];
        let mutated = lossy(&rng.mutate(base.as_bytes()));
        check_twilio(&mutated);
    }
    // Payload edge cases: empty, padding only, whitespace, oversized.
    for payload in [
        "",
        "=",
        "====",
        " \n",
        "AA",
        "A",
        &mulaw_b64(twilio::MAX_MESSAGE_BYTES + 1),
    ] {
        let _ = twilio::decode_payload(payload);
    }
    assert!(twilio::decode_payload(&mulaw_b64(twilio::MAX_MESSAGE_BYTES + 1)).is_err());
    assert!(twilio::parse(&"x".repeat(twilio::MAX_MESSAGE_BYTES + 1)).is_err());
}

#[test]
fn twilio_voice_webhook_survives_garbage() {
    let mut rng = Rng(0x7111_0002);
    let form =
        b"CallSid=CA1&AccountSid=AC1&From=%2B15550001111&To=%2B15550002222&CallStatus=ringing";
    for _ in 0..ROUNDS {
        let body = if rng.below(2) == 0 {
            rng.bytes(200)
        } else {
            rng.mutate(form)
        };
        let url = lossy(&rng.mutate(b"https://example.com/webhooks/voice/twilio?room_id=r1"));
        let sig = lossy(&rng.bytes(40));
        let token = lossy(&rng.bytes(8));
        assert!(
            twilio::verify_webhook(&token, &url, &body, Some(&sig)).is_err() || !token.is_empty()
        );
        assert!(twilio::verify_webhook(&token, &url, &body, None).is_err());
        let _ = twilio::verify_upgrade(&token, &url, &[("x-twilio-signature".into(), sig)]);
        assert!(twilio::media_url_for(&url).ends_with("/voice/twilio/media"));
    }
}

#[test]
fn browser_messages_and_frames_survive_garbage() {
    let mut rng = Rng(0xB0B0_0003);
    let valid = browser_messages();
    for _ in 0..ROUNDS {
        let frame = rng.bytes(700);
        let decoded = browser::decode_frame(&frame);
        let ok = !frame.is_empty()
            && frame.len().is_multiple_of(2)
            && frame.len() <= browser::MAX_FRAME_BYTES;
        assert_eq!(decoded.is_ok(), ok, "frame of {} bytes", frame.len());
        let base = &valid[rng.below(valid.len())];
        for text in [lossy(&frame), lossy(&rng.mutate(base.as_bytes()))] {
            match browser::parse(&text) {
                Ok(BrowserInbound::Dtmf { digit }) => {
                    let _ = dtmf_digit(&digit);
                }
                Ok(BrowserInbound::Start { room_id, name, .. }) => {
                    if let Some(r) = browser::clean(room_id, 256) {
                        assert!(!r.is_empty() && !r.chars().any(char::is_control));
                    }
                    let _ = browser::clean(name, 128);
                }
                Ok(_) => {}
                Err(e) => assert!(matches!(e, VoiceError::Transport(_))),
            }
            let _ = browser::authorize_api_key(
                &["k".to_owned()],
                &text,
                &[("Authorization".to_owned(), text.clone())],
            );
        }
    }
    assert!(browser::decode_frame(&vec![0; browser::MAX_FRAME_BYTES + 2]).is_err());
}

fn deepgram_messages() -> Vec<&'static str> {
    vec![
        r#"{"type":"Metadata","request_id":"r1","created":"2026-01-01T00:00:00.000Z","duration":0.0,"channels":1}"#,
        r#"{"type":"SpeechStarted","channel":[0],"timestamp":0.5}"#,
        r#"{"type":"Results","channel_index":[0,1],"duration":1.02,"start":0.0,"is_final":false,"speech_final":false,"from_finalize":false,"channel":{"alternatives":[{"transcript":"hello","confidence":0.91,"words":[]}]}}"#,
        r#"{"type":"Results","duration":1.5,"start":0.0,"is_final":true,"from_finalize":true,"channel":{"alternatives":[{"transcript":"hello there","confidence":0.98,"languages":["en"]}],"detected_language":"en"}}"#,
        r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":1.5}"#,
        r#"{"type":"Error","description":"bad","message":"x","variant":"y"}"#,
        r#"{"results":{"channels":[{"alternatives":[{"transcript":"hi","confidence":0.99}],"detected_language":"en"}]}}"#,
    ]
}

#[test]
fn deepgram_replies_survive_garbage() {
    let mut rng = Rng(0xDEE9_0004);
    let valid = deepgram_messages();
    let mut turn = Turn::default();
    for i in 0..ROUNDS {
        let junk = rng.bytes(300);
        let base = valid[rng.below(valid.len())];
        let mutated = rng.mutate(base.as_bytes());
        for bytes in [&junk, &mutated] {
            let _ = apply_message(&mut turn, &lossy(bytes));
            if let Some(p) = turn.preview() {
                assert!(!p.is_final && !p.text.is_empty());
                assert!(p.confidence.is_none_or(|c| (0.0..=1.0).contains(&c)));
            }
            match parse_prerecorded(bytes) {
                Ok(t) => {
                    assert!(t.is_final && t.confidence.is_none_or(|c| (0.0..=1.0).contains(&c)))
                }
                Err(f) => assert_eq!(f.message, "listen: unreadable answer"),
            }
        }
        if i % 7 == 0
            && let Some(f) = turn.take_final()
        {
            assert!(f.is_final && !f.text.is_empty());
        }
    }
}

#[test]
fn openai_replies_survive_garbage() {
    let mut rng = Rng(0x0AEA_0005);
    let valid: [&[u8]; 2] = [
        br#"{"text":"Hello there.","usage":{"type":"tokens","input_tokens":14}}"#,
        br#"{"text":" bonjour ","language":"fr"}"#,
    ];
    for _ in 0..ROUNDS {
        let base = valid[rng.below(2)];
        for body in [rng.bytes(200), rng.mutate(base)] {
            match parse_transcription(&body) {
                Ok(t) => assert!(t.is_final && t.text == t.text.trim()),
                Err(f) => assert_eq!(f.message, "transcriptions: unreadable answer"),
            }
        }
        // Speech: raw PCM cut anywhere gives the same samples.
        let pcm = rng.bytes(257);
        let whole: Vec<i16> = pcm
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        let mut a = PcmAssembler::new();
        let mut got = Vec::new();
        let mut rest = pcm.as_slice();
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at((rng.below(9) + 1).min(rest.len()));
            got.extend(a.push(piece));
            rest = tail;
        }
        assert_eq!(got, whole);
        assert_eq!(a.has_partial(), !pcm.len().is_multiple_of(2));
    }
}

fn elevenlabs_line(chars: &str, start: f64, audio: &[u8]) -> String {
    let characters: Vec<String> = chars.chars().map(String::from).collect();
    #[allow(clippy::cast_precision_loss)]
    let starts: Vec<f64> = (0..characters.len())
        .map(|i| start + 0.1 * i as f64)
        .collect();
    let ends: Vec<f64> = starts.iter().map(|s| s + 0.1).collect();
    serde_json::json!({
        "audio_base64": base64::engine::general_purpose::STANDARD.encode(audio),
        "alignment": {
            "characters": characters,
            "character_start_times_seconds": starts,
            "character_end_times_seconds": ends,
        },
    })
    .to_string()
}

#[test]
fn elevenlabs_timestamp_streams_survive_garbage() {
    let mut rng = Rng(0xE1E7_0006);
    let text = "Hi you, thére";
    let valid = format!(
        "{}\n{}\n",
        elevenlabs_line("Hi yo", 0.0, &[0; 64]),
        elevenlabs_line("u, thére", 0.5, &[1; 33])
    );
    for round in 0..ROUNDS {
        let body = if round % 3 == 0 {
            rng.bytes(400)
        } else {
            rng.mutate(valid.as_bytes())
        };
        let mut decoder = TimestampDecoder::new(text.to_owned(), 16_000, 96);
        let mut marks = Vec::new();
        let mut failed = false;
        let mut rest = body.as_slice();
        let mut items = Vec::new();
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at((rng.below(40) + 1).min(rest.len()));
            rest = tail;
            if decoder.feed(piece).is_err() {
                break;
            }
            while let Some(item) = decoder.next_chunk() {
                items.push(item);
            }
        }
        decoder.end();
        while let Some(item) = decoder.next_chunk() {
            items.push(item);
        }
        assert!(decoder.next_chunk().is_none());
        for item in items {
            assert!(!failed, "a chunk came after a failure");
            match item {
                Ok(c) => marks.extend(c.marks),
                Err(_) => failed = true,
            }
        }
        let mut last = 0;
        for m in marks {
            assert!(m.text_end <= text.len() && text.is_char_boundary(m.text_end));
            assert!(m.text_end >= last);
            last = m.text_end;
        }
    }
}

fn socket(
    messages: Vec<MediaMessage>,
) -> (
    MediaSocket,
    futures::channel::mpsc::UnboundedReceiver<MediaMessage>,
) {
    let (out_tx, out_rx) = futures::channel::mpsc::unbounded::<MediaMessage>();
    let sink: MediaSink = Box::pin(out_tx.sink_map_err(|e| VoiceError::Transport(e.to_string())));
    let incoming = futures::stream::iter(messages.into_iter().map(Ok)).boxed();
    (MediaSocket::new(incoming, sink), out_rx)
}

fn garbage_frames(rng: &mut Rng, valid: &[String]) -> Vec<MediaMessage> {
    (0..rng.below(8))
        .map(|_| match rng.below(3) {
            0 => MediaMessage::Binary(rng.bytes(64)),
            1 => MediaMessage::Text(lossy(&rng.bytes(64))),
            _ => {
                let base = &valid[rng.below(valid.len())];
                MediaMessage::Text(lossy(&rng.mutate(base.as_bytes())))
            }
        })
        .collect()
}

/// The real transports, fed a valid `start` then garbage: every call ends
/// with a hang-up when the socket closes, and every text the page is sent
/// back is JSON.
#[tokio::test]
async fn transports_skip_garbage_frames_and_end_cleanly() {
    let mut rng = Rng(0x50C4_0007);
    let tw = twilio_messages();
    let br = browser_messages();
    for _ in 0..300 {
        let mut messages = vec![MediaMessage::Text(tw[1].clone())];
        messages.extend(garbage_frames(&mut rng, &tw));
        messages.push(MediaMessage::Close);
        let (s, _out) = socket(messages);
        let mut call = TwilioMediaStreams::new().accept(s).await.expect("call");
        while let Some(event) = call.events.recv().await {
            if matches!(event, BackendEvent::HangUp { .. }) {
                break;
            }
        }

        let mut messages = vec![MediaMessage::Text(br[0].clone())];
        messages.extend(garbage_frames(&mut rng, &br));
        messages.push(MediaMessage::Close);
        let (s, mut out) = socket(messages);
        let mut call = BrowserBackend::new().accept(s).await.expect("call");
        while let Some(event) = call.events.recv().await {
            if matches!(event, BackendEvent::HangUp { .. }) {
                break;
            }
        }
        while let Ok(m) = out.try_recv() {
            if let MediaMessage::Text(t) = m {
                assert!(serde_json::from_str::<serde_json::Value>(&t).is_ok(), "{t}");
            }
        }
    }
}
