//! Twilio Media Streams: the protocol both ways over a real loopback
//! WebSocket, unreadable frames, TwiML and webhook signatures.

use std::time::Duration;

use roomkit_voice::twilio::{
    TwilioMediaStreams, encode_outbound, twiml_connect_stream, verify_webhook,
};
use roomkit_voice::{BackendEvent, Outbound, TransportStats, VoiceBackend};
use serde_json::json;

use crate::support::{TwilioClient, dtmf_tone, media_server, mulaw_b64};

async fn next_event(call: &mut roomkit_voice::Call) -> BackendEvent {
    tokio::time::timeout(Duration::from_secs(5), call.events.recv())
        .await
        .expect("an event in time")
        .expect("the call is open")
}

#[tokio::test]
async fn protocol_round_trip_over_a_websocket() {
    let (url, mut sockets) = media_server().await;
    let mut client = TwilioClient::connect(
        &url,
        json!({"room_id": "r1", "from": "+15550001", "to": "+15559999"}),
    )
    .await;
    let socket = sockets.recv().await.unwrap();
    let mut call = TwilioMediaStreams::new().accept(socket).await.unwrap();
    assert_eq!(call.info.transport, "twilio");
    assert_eq!(call.info.call_id, "CA0000000000000000000000000000000a");
    assert_eq!(call.info.stream_id, client.stream_sid);
    assert_eq!(call.info.from.as_deref(), Some("+15550001"));
    assert_eq!(call.info.parameters["room_id"], "r1");
    assert_eq!(call.info.format.sample_rate, 8000);
    assert!(call.capabilities.interruption && call.capabilities.dtmf_signaling);

    // Caller audio: 20 ms frames of PCM, mu-law round trip within a step.
    let tone = dtmf_tone('5', 40);
    client.say(tone.clone());
    let mut got = Vec::new();
    while got.len() < 320 {
        if let BackendEvent::Audio(s) = next_event(&mut call).await {
            assert_eq!(s.len(), 160, "one 20 ms frame per media message");
            if s.iter().any(|&x| x != 0) || !got.is_empty() {
                got.extend(s);
            }
        }
    }
    for (a, b) in tone.iter().zip(&got) {
        assert!((i32::from(*a) - i32::from(*b)).abs() <= 2 + i32::from(a.unsigned_abs() / 16));
    }

    // Signalled DTMF, then a mark coming back.
    client.dtmf("7");
    loop {
        match next_event(&mut call).await {
            BackendEvent::Dtmf(d) => {
                assert_eq!(d, '7');
                break;
            }
            BackendEvent::Audio(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    client.send_json(json!({"event": "mark", "streamSid": client.stream_sid, "sequenceNumber": "5", "mark": {"name": "reply-1"}}));
    loop {
        match next_event(&mut call).await {
            BackendEvent::Mark(m) => {
                assert_eq!(m, "reply-1");
                break;
            }
            BackendEvent::Audio(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    // Out: media, mark, clear, in Twilio's shapes.
    call.outbound
        .send(Outbound::Audio(vec![1000; 160]))
        .await
        .unwrap();
    call.outbound
        .send(Outbound::Mark("m1".into()))
        .await
        .unwrap();
    call.outbound.send(Outbound::Clear).await.unwrap();
    let media = client
        .next_of("media", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(media.json["streamSid"], client.stream_sid.as_str());
    let pcm = crate::support::decode_media(&media.json);
    assert_eq!(pcm.len(), 160);
    assert!(pcm.iter().all(|&s| (s - 1000).abs() < 40));
    let mark = client
        .next_of("mark", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(mark.json["mark"]["name"], "m1");
    let clear = client
        .next_of("clear", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(clear.json["streamSid"], client.stream_sid.as_str());

    // `stop` ends the call.
    client.stop();
    loop {
        match next_event(&mut call).await {
            BackendEvent::HangUp { reason } => {
                assert_eq!(reason, "stop");
                break;
            }
            BackendEvent::Audio(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(TransportStats::get(&call.stats.frames_out) >= 1);
    assert_eq!(TransportStats::get(&call.stats.bad_messages), 0);
}

#[tokio::test]
async fn unreadable_frames_are_counted_and_skipped() {
    let (url, mut sockets) = media_server().await;
    let mut client = TwilioClient::connect(&url, json!({})).await;
    let socket = sockets.recv().await.unwrap();
    let mut call = TwilioMediaStreams::new().accept(socket).await.unwrap();
    let sid = client.stream_sid.clone();
    client.send_text("not json at all {");
    client.send_json(
        json!({"event": "media", "streamSid": sid, "media": {"payload": "%%%not base64%%%"}}),
    );
    client.send_json(json!({"event": "media", "streamSid": sid, "media": {"payload": ""}}));
    client.send_json(json!({"event": "media", "streamSid": sid}));
    client.send_json(json!({"event": "teleport", "streamSid": sid}));
    client.send_json(json!({"event": "dtmf", "streamSid": sid, "dtmf": {"digit": "12"}}));
    client.send_text(&"x".repeat(100_000));
    // The call goes on: the next good frame and a digit still arrive.
    client.dtmf("#");
    client.send_json(json!({"event": "media", "streamSid": sid, "media": {"track": "inbound", "payload": mulaw_b64(&[500; 160])}}));
    let mut saw_digit = false;
    while !saw_digit {
        if let BackendEvent::Dtmf(d) = next_event(&mut call).await {
            assert_eq!(d, '#');
            saw_digit = true;
        }
    }
    assert_eq!(TransportStats::get(&call.stats.bad_messages), 7);
    call.outbound
        .send(Outbound::Mark("still-alive".into()))
        .await
        .unwrap();
    assert!(
        client
            .next_of("mark", Duration::from_secs(5))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_socket_that_never_starts_is_refused() {
    let (url, mut sockets) = media_server().await;
    let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let socket = sockets.recv().await.unwrap();
    drop(ws);
    let err = TwilioMediaStreams::new().accept(socket).await.unwrap_err();
    assert!(
        matches!(err, roomkit_voice::VoiceError::Transport(_)),
        "{err}"
    );
}

#[test]
fn outbound_commands_twilio_cannot_carry_are_not_sent() {
    assert!(encode_outbound("MZ1", &Outbound::HangUp).is_none());
    assert!(
        encode_outbound(
            "MZ1",
            &Outbound::Dtmf {
                digit: '1',
                duration_ms: 100
            }
        )
        .is_none()
    );
    let clear: serde_json::Value =
        serde_json::from_str(&encode_outbound("MZ1", &Outbound::Clear).unwrap()).unwrap();
    assert_eq!(clear, json!({"event": "clear", "streamSid": "MZ1"}));
}

#[test]
fn twiml_connects_the_stream_with_escaped_parameters() {
    let xml = twiml_connect_stream(
        "wss://example.com/voice/twilio/media",
        &[("room_id", "r<1>&\"x\"")],
    );
    assert_eq!(
        xml,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect><Stream url=\"wss://example.com/voice/twilio/media\"><Parameter name=\"room_id\" value=\"r&lt;1&gt;&amp;&quot;x&quot;\"/></Stream></Connect></Response>"
    );
}

#[test]
fn the_voice_webhook_signature_is_checked() {
    let url = "https://example.com/webhooks/voice/twilio";
    let body = b"CallSid=CA1&From=%2B15550001&To=%2B15559999";
    let fields = vec![
        ("CallSid".to_owned(), "CA1".to_owned()),
        ("From".to_owned(), "+15550001".to_owned()),
        ("To".to_owned(), "+15559999".to_owned()),
    ];
    let good = roomkit_channels::sms::twilio::signature("token", url, &fields);
    assert_eq!(
        verify_webhook("token", url, body, Some(&good)).unwrap(),
        fields
    );
    assert!(verify_webhook("other", url, body, Some(&good)).is_err());
    assert!(verify_webhook("token", url, b"CallSid=CA2", Some(&good)).is_err());
    assert!(verify_webhook("token", url, body, None).is_err());
    assert!(verify_webhook("", url, body, Some(&good)).is_err());
    // The default port may or may not be in the signed URL.
    let with_port = roomkit_channels::sms::twilio::signature(
        "token",
        "https://example.com:443/webhooks/voice/twilio",
        &fields,
    );
    assert!(verify_webhook("token", url, body, Some(&with_port)).is_ok());
}
