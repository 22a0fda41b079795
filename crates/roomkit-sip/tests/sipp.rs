//! The user agent against a real SIP peer, SIPp, on loopback: calls in and
//! out, speech and digits both ways, every way a call can end.
//!
//! These tests drive the transport alone (no rooms): what a voice channel
//! would get from a call is read from the `Call` directly. The whole
//! server is tested the same way in the `roomkit` crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use roomkit_sip::outbound::{Credentials, DialRequest};
use roomkit_sip::ua::Transport;
use roomkit_sip::{RtpPacket, RtpStats, SipConfig, SipEndpoint};
use roomkit_testkit::sipp::{
    SIPP_PCAP_DIR, Scenario, Sipp, Step, g711_packets, scratch_dir, speech_8k, tools_present,
    uas_xml, ulaw_decode, write_rtp_pcap,
};
use roomkit_voice::{BackendEvent, Call, Outbound};

fn require_tools() -> bool {
    if tools_present() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("ROOMKIT_TEST_REQUIRE_ALL").is_none(),
        "sipp, espeak-ng and sox are needed (scripts/setup test installs them)"
    );
    println!("skipped: sipp, espeak-ng and sox are needed");
    false
}

async fn endpoint(ring: Duration) -> (SipEndpoint, tokio::sync::mpsc::Receiver<Call>) {
    endpoint_with(ring, Duration::from_secs(10)).await
}

async fn endpoint_with(
    ring: Duration,
    rtp_timeout: Duration,
) -> (SipEndpoint, tokio::sync::mpsc::Receiver<Call>) {
    let config = SipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ring,
        rtp_timeout,
        ..SipConfig::default()
    };
    SipEndpoint::bind(config).await.unwrap()
}

fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt()
}

/// What the caller's side of a call delivered.
#[derive(Debug, Default)]
struct Heard {
    audio: Vec<i16>,
    digits: Vec<char>,
    hang_up: Option<String>,
}

async fn listen(mut call: Call, limit: Duration) -> Heard {
    let mut heard = Heard::default();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let Ok(event) = tokio::time::timeout_at(deadline, call.events.recv()).await else {
            break;
        };
        match event {
            Some(BackendEvent::Audio(frame)) => heard.audio.extend(frame),
            Some(BackendEvent::Dtmf(d)) => heard.digits.push(d),
            Some(BackendEvent::HangUp { reason }) => {
                heard.hang_up = Some(reason);
                break;
            }
            Some(BackendEvent::Mark(_)) => {}
            None => break,
        }
    }
    heard
}

/// Reads RTP arriving at `socket` until `limit` passes: the decoded µ-law
/// audio, sequence numbers and timestamps.
fn receive_rtp(socket: UdpSocket, limit: Duration) -> (Vec<i16>, Vec<(u16, u32)>) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = std::time::Instant::now();
    let (mut audio, mut seen) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 2048];
    while start.elapsed() < limit {
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Ok(p) = RtpPacket::parse(&buf[..n]) else {
            continue;
        };
        if p.header.payload_type == 0 {
            seen.push((p.header.sequence, p.header.timestamp));
            audio.extend(p.payload.iter().map(|&b| ulaw_decode(b)));
        }
    }
    (audio, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sipp_call_brings_speech_and_a_digit_in_and_takes_speech_back_then_hangs_up() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("inbound");
    let question = speech_8k("what time is it", &dir);
    let pcap = dir.join("question.pcap");
    write_rtp_pcap(&pcap, &g711_packets(&question, 0x1234), 6000, 7000);
    // The test stands in for SIPp's media receiver.
    let ear = UdpSocket::bind("127.0.0.1:0").unwrap();
    let ear_port = ear.local_addr().unwrap().port();
    let mut scenario = Scenario::call(
        "bot",
        vec![
            Step::PlayPcap(pcap.clone()),
            Step::Pause(Duration::from_millis(question.len() as u64 / 8 + 300)),
            Step::PlayPcap(format!("{SIPP_PCAP_DIR}/dtmf_2833_1.pcap").into()),
            Step::Pause(Duration::from_millis(3500)),
            Step::Bye,
        ],
    );
    scenario.media_port = Some(ear_port);
    let (ua, mut calls) = endpoint(Duration::from_millis(200)).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);

    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .expect("the call arrives")
        .expect("a call");
    assert_eq!(call.info.transport, "sip");
    assert_eq!(call.info.from.as_deref(), Some("+15550100"));
    assert_eq!(call.info.to.as_deref(), Some("bot"));
    assert_eq!(call.info.codec, "pcmu");
    assert_eq!(call.info.format.sample_rate, 8000);
    assert!(call.capabilities.dtmf_signaling);

    // The agent answers with speech while the caller is still on.
    let answer = speech_8k("it is ten o clock", &dir);
    let out = call.outbound.clone();
    let answer_frames = answer.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for chunk in answer_frames.chunks(160) {
            let mut frame = chunk.to_vec();
            frame.resize(160, 0);
            // Faster than real time: the transport paces.
            if out.send(Outbound::Audio(frame)).await.is_err() {
                break;
            }
        }
        let _ = out.send(Outbound::Mark("answer".into())).await;
    });
    let ears = std::thread::spawn(move || receive_rtp(ear, Duration::from_secs(6)));
    let heard = listen(call, Duration::from_secs(30)).await;
    let (played, seen) = ears.join().unwrap();
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");

    // The question arrived as audio at its level, then the digit, then BYE.
    assert_eq!(heard.hang_up.as_deref(), Some("remote hangup"), "{heard:?}");
    assert_eq!(heard.digits, vec!['1']);
    let level_in = rms(&heard.audio);
    let level_sent = rms(&question);
    assert!(
        level_in > level_sent * 0.3,
        "caller audio at {level_in:.0} rms, sent at {level_sent:.0}"
    );
    // The answer left as paced RTP: consecutive sequence numbers and
    // timestamps one frame apart, all of it, at its level.
    let frames = answer.len().div_ceil(160);
    assert!(seen.len() >= frames, "{} of {frames} packets", seen.len());
    for pair in seen.windows(2).take(frames - 1) {
        assert_eq!(pair[1].0, pair[0].0.wrapping_add(1), "{seen:?}");
        assert_eq!(pair[1].1, pair[0].1.wrapping_add(160), "{seen:?}");
    }
    let level_out = rms(&played);
    assert!(
        level_out > rms(&answer) * 0.5,
        "answer heard at {level_out:.0}, sent at {:.0}",
        rms(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_while_ringing_never_reaches_the_agent() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("cancel");
    let mut scenario = Scenario::call("bot", vec![]);
    scenario.cancel_after_ringing = true;
    let (ua, mut calls) = endpoint(Duration::from_secs(5)).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        calls.try_recv().is_err(),
        "a cancelled call was handed over"
    );
    assert_eq!(ua.active_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_hangs_up_and_the_peer_gets_a_bye() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("local-bye");
    let scenario = Scenario::call(
        "bot",
        vec![Step::ExpectBye {
            timeout: Duration::from_secs(10),
        }],
    );
    let (ua, mut calls) = endpoint(Duration::ZERO).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.outbound.send(Outbound::HangUp).await.unwrap();
    let heard = listen(call, Duration::from_secs(10)).await;
    assert_eq!(heard.hang_up.as_deref(), Some("local hangup"));
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_is_hung_up_after_the_rtp_timeout() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("vanish");
    let question = speech_8k("hello", &dir);
    let pcap = dir.join("hello.pcap");
    write_rtp_pcap(&pcap, &g711_packets(&question, 7), 6000, 7000);
    // Media stops after the greeting; the call is then torn down by us.
    let scenario = Scenario::call(
        "bot",
        vec![
            Step::PlayPcap(pcap),
            Step::ExpectBye {
                timeout: Duration::from_secs(15),
            },
        ],
    );
    let (ua, mut calls) = endpoint_with(Duration::ZERO, Duration::from_secs(3)).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .unwrap()
        .unwrap();
    let heard = listen(call, Duration::from_secs(15)).await;
    assert_eq!(heard.hang_up.as_deref(), Some("rtp timeout"), "{heard:?}");
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_call_answers_the_digest_challenge_and_ends_when_the_callee_hangs_up() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("outbound");
    let sipp = Sipp::answer(
        &uas_xml(Some(("trunk-user", "s3cret")), Some(Duration::from_secs(2))),
        &dir,
        &[],
    );
    let target: SocketAddr = format!("127.0.0.1:{}", sipp.sip_port).parse().unwrap();
    let (ua, _calls) = endpoint(Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut request = DialRequest::new("+15557654321");
    request.proxy = Some(target.to_string());
    request.transport = Transport::Udp;
    request.credentials = Some(Credentials {
        username: "trunk-user".into(),
        password: "s3cret".into(),
    });
    request
        .parameters
        .insert("room_id".into(), "outbound-room".into());
    let call = ua.dial(request).await.expect("the callee answers");
    assert_eq!(call.info.to.as_deref(), Some("+15557654321"));
    assert_eq!(
        call.info.parameters.get("room_id").map(String::as_str),
        Some("outbound-room")
    );
    let heard = listen(call, Duration::from_secs(10)).await;
    assert_eq!(heard.hang_up.as_deref(), Some("remote hangup"), "{heard:?}");
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_the_outbound_call_with_an_auth_error() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("outbound-bad");
    let sipp = Sipp::answer(&uas_xml(Some(("trunk-user", "s3cret")), None), &dir, &[]);
    let target: SocketAddr = format!("127.0.0.1:{}", sipp.sip_port).parse().unwrap();
    let (ua, _calls) = endpoint(Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut request = DialRequest::new("+15557654321");
    request.proxy = Some(target.to_string());
    request.credentials = Some(Credentials {
        username: "trunk-user".into(),
        password: "wrong".into(),
    });
    let err = ua.dial(request).await.expect_err("refused");
    assert!(
        matches!(err, roomkit_sip::DialError::Rejected { code: 403, .. }),
        "{err:?}"
    );
    drop(sipp);
    let _ = RtpStats::get(&ua.rtp_stats().packets_in);
}

/// Two user agents of ours on loopback: an Opus call placed by one and
/// answered by the other carries audio both ways, and each side's RTCP
/// reports give the other a round trip time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_call_between_two_agents_carries_audio_and_measures_round_trip() {
    use std::sync::atomic::Ordering;
    let config = |codecs| SipConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        rtcp_interval: Duration::from_millis(300),
        codecs,
        ..SipConfig::default()
    };
    let (callee, mut calls) = SipEndpoint::bind(config(vec![
        roomkit_sip::MediaCodec::Opus,
        roomkit_sip::MediaCodec::Pcmu,
    ]))
    .await
    .unwrap();
    let (caller, _unused) = SipEndpoint::bind(config(vec![roomkit_sip::MediaCodec::Opus]))
        .await
        .unwrap();
    let mut request = DialRequest::new(format!("sip:agent@{}", callee.local_addr()));
    request.from = Some("+15550111".into());
    let outgoing = caller.dial(request).await.expect("answered");
    let incoming = tokio::time::timeout(Duration::from_secs(5), calls.recv())
        .await
        .unwrap()
        .unwrap();
    for call in [&outgoing, &incoming] {
        assert_eq!(call.info.codec, "opus");
        assert_eq!(call.info.format.sample_rate, 16_000);
    }
    // A 440 Hz tone from each side for two seconds.
    let tone: Vec<i16> = (0..320)
        .map(|i| ((i as f32 / 16_000.0 * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16)
        .collect();
    for call in [&outgoing, &incoming] {
        let out = call.outbound.clone();
        let frame = tone.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                if out.send(Outbound::Audio(frame.clone())).await.is_err() {
                    break;
                }
            }
        });
    }
    let (out_stats, in_stats) = (outgoing.stats.clone(), incoming.stats.clone());
    let hang = incoming.outbound.clone();
    let listener = tokio::spawn(listen(outgoing, Duration::from_secs(6)));
    let heard_in = tokio::spawn(listen(incoming, Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    hang.send(Outbound::HangUp).await.unwrap();
    let heard_out = listener.await.unwrap();
    let heard_in = heard_in.await.unwrap();
    assert_eq!(heard_out.hang_up.as_deref(), Some("remote hangup"));
    assert_eq!(heard_in.hang_up.as_deref(), Some("local hangup"));
    for heard in [&heard_out, &heard_in] {
        let level = rms(&heard.audio);
        assert!(level > 3000.0, "tone heard at rms {level:.0}");
    }
    for stats in [&out_stats, &in_stats] {
        let rtt = stats.rtt_us.load(Ordering::Relaxed);
        assert!(rtt > 0 && rtt < 100_000, "round trip {rtt} us");
        assert_eq!(stats.packets_lost.load(Ordering::Relaxed), 0);
    }
}
