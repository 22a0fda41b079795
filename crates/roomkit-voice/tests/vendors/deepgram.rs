//! Deepgram live and pre-recorded against the fake Deepgram.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use roomkit_voice::fake::{FakeDeepgram, Faults};
use roomkit_voice::vendors::Secret;
use roomkit_voice::vendors::deepgram::{DeepgramConfig, DeepgramStt};
use roomkit_voice::{ProviderFailure, SttAudio, SttProvider, SttSession, Transcript};

use crate::{NO_HANG, silence, speech};

const KEY: &str = "dg-test-key";

fn provider(base: &str, tweak: impl FnOnce(&mut DeepgramConfig)) -> Arc<DeepgramStt> {
    let mut config = DeepgramConfig {
        base_url: base.to_owned(),
        finalize_timeout_ms: 1_000,
        connect_timeout_ms: 3_000,
        ..DeepgramConfig::default()
    };
    tweak(&mut config);
    Arc::new(DeepgramStt::new(Secret::new(KEY), &config).expect("valid config"))
}

async fn send_speech(session: &SttSession, ms: u32) {
    for frame in speech(16_000, ms).chunks(320) {
        session
            .audio
            .send(SttAudio::Samples(frame.to_vec()))
            .await
            .expect("session open");
    }
}

/// Reads results until a final one (or a failure, or the end).
async fn until_final(
    session: &mut SttSession,
) -> (Vec<Transcript>, Option<Result<Transcript, ProviderFailure>>) {
    let mut interims = Vec::new();
    let end = tokio::time::timeout(NO_HANG, async {
        while let Some(r) = session.results.recv().await {
            match r {
                Ok(t) if !t.is_final => interims.push(t),
                other => return Some(other),
            }
        }
        None
    })
    .await
    .expect("no hang");
    (interims, end)
}

#[tokio::test]
async fn live_gives_interims_then_one_final_per_finalize() {
    let fake = FakeDeepgram::start(KEY, ["hello there how are you", "second turn"])
        .await
        .expect("fake");
    let dg = provider(&fake.base_url(), |_| {});
    assert!(dg.supports_streaming());
    let mut session = dg.clone().open_session(16_000).await.expect("open");

    send_speech(&session, 1_200).await;
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let (interims, end) = until_final(&mut session).await;
    let final1 = end.expect("a result").expect("no failure");
    assert_eq!(final1.text, "hello there how are you");
    assert!(final1.is_final);
    assert!(final1.confidence.is_some_and(|c| c > 0.9));
    assert_eq!(final1.start_ms, Some(0));
    assert!(final1.end_ms.is_some_and(|e| e >= 1_000), "{final1:?}");
    assert!(!interims.is_empty(), "interim results while audio streams");
    assert!(interims.iter().all(|t| !t.is_final));
    assert_eq!(interims[0].text, "hello");
    assert!("hello there how are you".starts_with(&interims[interims.len() - 1].text));

    // The session stays open for the next turn.
    send_speech(&session, 600).await;
    session
        .audio
        .send(SttAudio::Samples(silence(16_000, 200)))
        .await
        .expect("open");
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let (_, end) = until_final(&mut session).await;
    assert_eq!(
        end.expect("a result").expect("no failure").text,
        "second turn"
    );

    // Dropping the audio sender sends CloseStream and ends the results.
    drop(session.audio);
    let rest = tokio::time::timeout(NO_HANG, async {
        let mut n = 0;
        while session.results.recv().await.is_some() {
            n += 1;
        }
        n
    })
    .await
    .expect("results close");
    assert_eq!(rest, 0);

    let conns = fake.connections();
    assert_eq!(conns.len(), 1);
    let c = &conns[0];
    assert_eq!(c.authorization.as_deref(), Some("Token dg-test-key"));
    assert_eq!(c.param("encoding"), Some("linear16"));
    assert_eq!(c.param("sample_rate"), Some("16000"));
    assert_eq!(c.param("channels"), Some("1"));
    assert_eq!(c.param("interim_results"), Some("true"));
    assert_eq!(c.param("model"), Some("nova-3"));
    assert_eq!(c.param("punctuate"), Some("true"));
    assert_eq!(c.finalizes, 2);
    assert_eq!(c.audio_bytes, (1_200 + 600 + 200) * 16 * 2);
    let deadline = Instant::now() + NO_HANG;
    while fake.connections()[0].close_streams == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.connections()[0].close_streams, 1);
}

#[tokio::test]
async fn finalize_without_new_audio_settles_at_once() {
    let fake = FakeDeepgram::start(KEY, ["only words"])
        .await
        .expect("fake");
    fake.set_endpoint_silence(Some(Duration::from_millis(300)));
    let dg = provider(&fake.base_url(), |_| {});
    let mut session = dg.open_session(16_000).await.expect("open");
    send_speech(&session, 500).await;
    session
        .audio
        .send(SttAudio::Samples(silence(16_000, 500)))
        .await
        .expect("open");
    // Deepgram settled the words by itself (speech_final); the turn detector's
    // Finalize delivers them as the turn's one final.
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let (_, end) = until_final(&mut session).await;
    assert_eq!(
        end.expect("a result").expect("no failure").text,
        "only words"
    );
    session.audio.send(SttAudio::Finalize).await.expect("open");
    // Nothing new: every Finalize is answered, here with an empty final
    // at once, and no failure.
    let next = tokio::time::timeout(Duration::from_millis(1_500), session.results.recv()).await;
    let empty = next.ok().flatten().and_then(Result::ok);
    assert!(
        empty
            .as_ref()
            .is_some_and(|t| t.is_final && t.text.is_empty()),
        "an empty final for an empty turn: {empty:?}"
    );
}

#[tokio::test]
async fn keepalives_hold_an_idle_socket_open() {
    let fake = FakeDeepgram::start(KEY, ["after the pause"])
        .await
        .expect("fake");
    fake.set_idle_timeout(Duration::from_millis(800));
    let dg = provider(&fake.base_url(), |c| c.keepalive_ms = 150);
    let mut session = dg.open_session(16_000).await.expect("open");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    send_speech(&session, 400).await;
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let (_, end) = until_final(&mut session).await;
    assert_eq!(
        end.expect("a result").expect("no failure").text,
        "after the pause"
    );
    assert!(
        fake.connections()[0].keepalives >= 3,
        "{:?}",
        fake.connections()
    );
}

#[tokio::test]
async fn an_idle_socket_closed_by_deepgram_is_a_retryable_failure() {
    let fake = FakeDeepgram::start(KEY, ["x"]).await.expect("fake");
    fake.set_idle_timeout(Duration::from_millis(300));
    // Keepalives far apart: Deepgram's idle close (1011) comes first.
    let dg = provider(&fake.base_url(), |c| c.keepalive_ms = 60_000);
    let mut session = dg.open_session(16_000).await.expect("open");
    let (_, end) = until_final(&mut session).await;
    let failure = end.expect("a result").expect_err("a failure");
    assert!(failure.retryable);
    assert!(failure.message.contains("1011"), "{failure}");
    assert!(
        session.results.recv().await.is_none(),
        "one failure, then the end"
    );
}

#[tokio::test]
async fn refused_handshakes_fail_without_echoing_anything() {
    let fake = FakeDeepgram::start("another-key", ["x"])
        .await
        .expect("fake");
    let dg = provider(&fake.base_url(), |_| {});
    let err = dg.clone().open_session(16_000).await.expect_err("refused");
    assert!(!err.retryable, "a bad key is not cured by retrying");
    assert_eq!(err.provider, "deepgram");
    assert!(err.message.contains("401"), "{err}");
    assert!(!err.to_string().contains("INVALID_AUTH") && !err.to_string().contains(KEY));

    fake.set_faults(Faults {
        fail_status: Some(503),
        ..Faults::default()
    });
    let err = dg.open_session(16_000).await.expect_err("refused");
    assert!(err.retryable);
    assert!(err.message.contains("503"));
}

#[tokio::test]
async fn a_bad_parameter_is_refused_like_deepgram() {
    let fake = FakeDeepgram::start(KEY, ["x"]).await.expect("fake");
    let dg = provider(&fake.base_url(), |_| {});
    let err = dg
        .open_session(4_000)
        .await
        .expect_err("sample rate out of range");
    assert!(!err.retryable);
    assert!(err.message.contains("400"), "{err}");
    // The same check through plain HTTP shows Deepgram's error body.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/listen?encoding=linear16", fake.base_url()))
        .header("authorization", format!("Token {KEY}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["err_code"], "Bad Request");
    assert!(body["err_msg"].as_str().is_some() && body["request_id"].as_str().is_some());
}

#[tokio::test]
async fn a_stalled_finalize_ends_in_a_failure_within_the_timeout() {
    let fake = FakeDeepgram::start(KEY, ["never said"])
        .await
        .expect("fake");
    fake.set_faults(Faults {
        stall_after: Some(0),
        ..Faults::default()
    });
    let dg = provider(&fake.base_url(), |c| c.finalize_timeout_ms = 500);
    let mut session = dg.open_session(16_000).await.expect("open");
    send_speech(&session, 400).await;
    let started = Instant::now();
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let (_, end) = until_final(&mut session).await;
    let failure = end.expect("a result").expect_err("a failure");
    assert!(failure.retryable);
    assert!(failure.message.contains("Finalize"), "{failure}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(session.results.recv().await.is_none());
}

#[tokio::test]
async fn a_socket_broken_mid_call_ends_in_a_failure() {
    let fake = FakeDeepgram::start(KEY, ["cut short"]).await.expect("fake");
    fake.set_faults(Faults {
        close_after: Some(1),
        ..Faults::default()
    });
    let dg = provider(&fake.base_url(), |_| {});
    let mut session = dg.open_session(16_000).await.expect("open");
    send_speech(&session, 1_500).await;
    let (interims, end) = until_final(&mut session).await;
    // One message was sent before the break (a reset may discard it unread).
    assert!(interims.len() <= 1, "{interims:?}");
    let failure = end.expect("a result").expect_err("a failure");
    assert!(failure.retryable, "{failure}");
    assert!(session.results.recv().await.is_none());
    // Audio sent after the end is refused, not a panic.
    let _ = session.audio.send(SttAudio::Finalize).await;
}

#[tokio::test]
async fn connecting_to_a_silent_host_times_out() {
    // Accepts TCP but never answers the handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let dg = provider(&base, |c| {
        c.connect_timeout_ms = 400;
        c.request_timeout_ms = 400;
    });
    let started = Instant::now();
    let err = dg.clone().open_session(16_000).await.expect_err("timeout");
    assert!(err.retryable && err.message.contains("timed out"), "{err}");
    let err = dg
        .transcribe(&speech(16_000, 100), 16_000)
        .await
        .expect_err("timeout");
    assert!(err.retryable, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn prerecorded_transcribes_a_whole_utterance() {
    let fake = FakeDeepgram::start(KEY, ["the whole thing"])
        .await
        .expect("fake");
    let dg = provider(&fake.base_url(), |c| c.language = Some("en-US".into()));
    let t = dg
        .transcribe(&speech(16_000, 300), 16_000)
        .await
        .expect("transcript");
    assert_eq!(t.text, "the whole thing");
    assert!(t.is_final);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("authorization"), Some("Token dg-test-key"));
    assert_eq!(reqs[0].header("content-type"), Some("audio/wav"));
    assert_eq!(reqs[0].query("model").as_deref(), Some("nova-3"));
    assert_eq!(reqs[0].query("language").as_deref(), Some("en-US"));
    assert!(reqs[0].body.starts_with(b"RIFF"));

    fake.set_faults(Faults {
        fail_status: Some(500),
        ..Faults::default()
    });
    let err = dg
        .transcribe(&speech(16_000, 300), 16_000)
        .await
        .expect_err("500");
    assert!(err.retryable && err.message.contains("500"));
    assert!(!err.message.contains("injected"));
}

/// A hand-made server that sends garbage between real results: the session
/// skips what it cannot read and still delivers the final.
#[tokio::test]
async fn garbage_messages_are_skipped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        use tokio_tungstenite::tungstenite::Message;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && t.contains("Finalize")
            {
                for junk in [
                    "not json",
                    "{\"type\":\"Results\",\"channel\":7}",
                    "{\"type\":\"Results\",\"start\":\"x\"}",
                    "[1,2,3]",
                    "{\"type\":\"UtteranceEnd\",\"channel\":[0,1],\"last_word_end\":1.0}",
                    "{\"type\":\"Results\",\"start\":1e308,\"duration\":-5,\"is_final\":true,\"channel\":{\"alternatives\":[{\"transcript\":\"still here\",\"confidence\":7}]}}",
                ] {
                    let _ = ws.send(Message::Text(junk.into())).await;
                }
                let _ = ws.send(Message::Binary(vec![1, 2, 3].into())).await;
                let _ = ws
                    .send(Message::Text(
                        r#"{"type":"Results","is_final":true,"from_finalize":true,"channel":{"alternatives":[{"transcript":""}]}}"#.into(),
                    ))
                    .await;
            }
        }
    });
    let dg = provider(&base, |_| {});
    let mut session = dg.open_session(16_000).await.expect("open");
    send_speech(&session, 100).await;
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let (_, end) = until_final(&mut session).await;
    let t = end.expect("a result").expect("no failure");
    assert_eq!(t.text, "still here");
    assert_eq!(t.confidence, Some(1.0));
}

/// Serves one socket that answers a Finalize with `replies`, then closes.
async fn scripted_server(replies: Vec<tokio_tungstenite::tungstenite::Message>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        while let Some(Ok(m)) = ws.next().await {
            if m.to_text().is_ok_and(|t| t.contains("Finalize")) {
                for r in replies {
                    if ws.send(r).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    });
    base
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever a server sends on the live socket, the session ends (a
    /// result or a failure, then closed) without a panic or a hang.
    #[test]
    fn random_live_messages_never_panic_or_hang(
        texts in proptest::collection::vec(".{0,80}", 0..6),
        binary in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        transcript in "[a-z ]{0,20}",
    ) {
        use tokio_tungstenite::tungstenite::Message;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let mut replies: Vec<Message> = texts.into_iter().map(|t| Message::Text(t.into())).collect();
            replies.push(Message::Binary(binary.into()));
            replies.push(Message::Text(
                serde_json::json!({"type": "Results", "is_final": true, "from_finalize": true,
                    "channel": {"alternatives": [{"transcript": transcript}]}})
                .to_string()
                .into(),
            ));
            let base = scripted_server(replies).await;
            let dg = provider(&base, |c| c.finalize_timeout_ms = 500);
            let mut session = dg.open_session(16_000).await.expect("open");
            send_speech(&session, 60).await;
            session.audio.send(SttAudio::Finalize).await.expect("open");
            let ended = tokio::time::timeout(NO_HANG, async {
                let mut finals = 0;
                while let Some(r) = session.results.recv().await {
                    if r.is_ok_and(|t| t.is_final) {
                        finals += 1;
                    }
                }
                finals
            })
            .await;
            assert!(ended.is_ok_and(|finals| finals <= 1), "no hang, at most one final");
        });
    }
}

/// A `wss://` root goes through the TLS setup (system roots, ring): a peer
/// that is no TLS server fails the session cleanly.
#[tokio::test]
async fn a_failed_tls_handshake_is_a_retryable_failure() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let dg = provider(&format!("https://{addr}"), |_| {});
    let err = dg.open_session(16_000).await.expect_err("no TLS peer");
    assert_eq!(err.provider, "deepgram");
    // With no system roots the session cannot start either; both are clean.
    assert!(err.message.starts_with("live: "), "{err}");
    assert!(
        err.retryable || err.message.contains("root certificates"),
        "{err}"
    );
}

/// Two turns finalized back to back get one final each, in order, and an
/// empty turn in between gets an empty one: the call pairs each final with
/// its utterance.
#[tokio::test]
async fn every_finalize_gets_its_own_final_in_order() {
    let fake = FakeDeepgram::start(KEY, ["first turn", "second turn"])
        .await
        .expect("fake");
    let dg = provider(&fake.base_url(), |_| {});
    let mut session = dg.open_session(16_000).await.expect("open");
    send_speech(&session, 400).await;
    session.audio.send(SttAudio::Finalize).await.expect("open");
    session.audio.send(SttAudio::Finalize).await.expect("open");
    send_speech(&session, 400).await;
    session.audio.send(SttAudio::Finalize).await.expect("open");
    let mut finals = Vec::new();
    let _ = tokio::time::timeout(NO_HANG, async {
        while finals.len() < 3 {
            match session.results.recv().await {
                Some(Ok(t)) if t.is_final => finals.push(t.text),
                Some(Ok(_)) => {}
                other => {
                    finals.push(format!("{other:?}"));
                    return;
                }
            }
        }
    })
    .await;
    assert_eq!(finals, vec!["first turn", "", "second turn"]);
}
