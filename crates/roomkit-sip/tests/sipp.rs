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
    // No voice channel here: the test runs the call's media itself.
    call.start_media();
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

/// Sends the agent's audio (a tone) for `frames` frames, one every 20 ms
/// as a voice session does.
fn speak_tone(call: &Call, frames: usize) {
    let out = call.outbound.clone();
    tokio::spawn(async move {
        let tone: Vec<i16> = (0..160)
            .map(|i| ((i as f32 / 8000.0 * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16)
            .collect();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..frames {
            tick.tick().await;
            if out.send(Outbound::Audio(tone.clone())).await.is_err() {
                break;
            }
        }
    });
}

/// Arrival times (since the start) of the RTP packets reaching `socket`.
fn arrivals(socket: UdpSocket, limit: Duration) -> Vec<Duration> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut times = Vec::new();
    let mut buf = [0u8; 2048];
    while start.elapsed() < limit {
        if let Ok((n, _)) = socket.recv_from(&mut buf)
            && RtpPacket::parse(&buf[..n]).is_ok_and(|p| p.header.payload_type == 0)
        {
            times.push(start.elapsed());
        }
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_invite_puts_the_agent_on_hold_and_another_resumes_it() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("hold");
    let ear = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut scenario = Scenario::call(
        "bot",
        vec![
            Step::Pause(Duration::from_millis(1000)),
            Step::ReInvite {
                direction: "sendonly",
                answer: "recvonly",
            },
            Step::Pause(Duration::from_millis(2000)),
            Step::ReInvite {
                direction: "sendrecv",
                answer: "sendrecv",
            },
            Step::Pause(Duration::from_millis(1500)),
            Step::Bye,
        ],
    );
    scenario.media_port = Some(ear.local_addr().unwrap().port());
    let (ua, mut calls) = endpoint(Duration::ZERO).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .unwrap()
        .unwrap();
    speak_tone(&call, 300);
    let ears = std::thread::spawn(move || arrivals(ear, Duration::from_secs(6)));
    let heard = listen(call, Duration::from_secs(15)).await;
    let times = ears.join().unwrap();
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
    assert_eq!(heard.hang_up.as_deref(), Some("remote hangup"));
    // Audio before the hold, none during it, audio again after it.
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_millis(1500),
        "the longest pause in the agent's audio was {gap:?}"
    );
    let (first, last) = (times[0], times[times.len() - 1]);
    assert!(first < Duration::from_millis(1200), "{first:?}");
    assert!(last > Duration::from_millis(3500), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_transfers_the_call_with_refer_and_it_ends_when_the_target_answers() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("refer");
    let scenario = Scenario::call(
        "bot",
        vec![Step::ExpectRefer {
            timeout: Duration::from_secs(10),
        }],
    );
    let (ua, mut calls) = endpoint(Duration::ZERO).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .unwrap()
        .unwrap();
    call.outbound
        .send(Outbound::Transfer {
            target: "+15559990000".into(),
        })
        .await
        .unwrap();
    let heard = listen(call, Duration::from_secs(15)).await;
    assert_eq!(heard.hang_up.as_deref(), Some("transferred"), "{heard:?}");
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_tcp_is_answered_and_hung_up() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("tcp");
    let scenario = Scenario::call(
        "bot",
        vec![Step::Pause(Duration::from_millis(500)), Step::Bye],
    );
    let (ua, mut calls) = endpoint(Duration::ZERO).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &["-t", "t1"]);
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .expect("the call arrives over TCP")
        .unwrap();
    let heard = listen(call, Duration::from_secs(10)).await;
    assert_eq!(heard.hang_up.as_deref(), Some("remote hangup"));
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_interval_under_90_seconds_is_refused_with_422() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("422");
    let mut scenario = Scenario::call("bot", vec![]);
    scenario.invite_headers = "Session-Expires: 30\nSupported: timer".into();
    scenario.expect_refusal = Some(422);
    let (ua, mut calls) = endpoint(Duration::ZERO).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
    assert!(calls.try_recv().is_err());
    assert_eq!(
        ua.stats()
            .calls_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_a_stranger_or_of_an_unknown_type_is_dropped_and_counted() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("stranger");
    let ear = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut scenario = Scenario::call(
        "bot",
        vec![Step::Pause(Duration::from_millis(2500)), Step::Bye],
    );
    scenario.media_port = Some(ear.local_addr().unwrap().port());
    let (ua, mut calls) = endpoint(Duration::ZERO).await;
    let sipp = Sipp::call(&scenario.to_xml(), ua.local_addr(), &dir, &[]);
    let call = tokio::time::timeout(Duration::from_secs(10), calls.recv())
        .await
        .unwrap()
        .unwrap();
    let port = loop {
        if let Some(p) = sipp.answered_media_port() {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let packet = |pt: u8| {
        let mut p = vec![0x80, pt, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
        p.extend(std::iter::repeat_n(0xff, 160));
        p
    };
    // Another host on loopback, and a payload type nobody negotiated.
    let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
    for _ in 0..5 {
        stranger.send_to(&packet(0), server).unwrap();
        ear.send_to(&packet(96), server).unwrap();
        ear.send_to(b"not rtp at all", server).unwrap();
        ear.send_to(&vec![0x80; 3000], server).unwrap();
    }
    let heard = listen(call, Duration::from_secs(10)).await;
    assert_eq!(heard.hang_up.as_deref(), Some("remote hangup"));
    let stats = ua.rtp_stats();
    assert_eq!(RtpStats::get(&stats.foreign_packets), 5);
    assert_eq!(RtpStats::get(&stats.unknown_payload), 5);
    assert!(RtpStats::get(&stats.bad_packets) >= 5);
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_answers_the_challenge_and_is_refreshed() {
    if !require_tools() {
        return;
    }
    let dir = scratch_dir("register");
    let round = "  <recv request=\"REGISTER\"/>\n  <send>\n    <![CDATA[\n      SIP/2.0 401 Unauthorized\n      [last_Via:]\n      [last_From:]\n      [last_To:];tag=reg1\n      [last_Call-ID:]\n      [last_CSeq:]\n      WWW-Authenticate: Digest realm=\"roomkit.test\", nonce=\"n0nce\", qop=\"auth\"\n      Content-Length: 0\n    ]]>\n  </send>\n  <recv request=\"REGISTER\" check_it=\"true\">\n    <action>\n      <verifyauth assign_to=\"ok\" username=\"agent\" password=\"pw\"/>\n    </action>\n  </recv>\n  <nop test=\"ok\" next=\"good\"/>\n  <send next=\"end\">\n    <![CDATA[\n      SIP/2.0 403 Forbidden\n      [last_Via:]\n      [last_From:]\n      [last_To:];tag=reg1\n      [last_Call-ID:]\n      [last_CSeq:]\n      Content-Length: 0\n    ]]>\n  </send>\n  <label id=\"good\"/>\n  <send>\n    <![CDATA[\n      SIP/2.0 200 OK\n      [last_Via:]\n      [last_From:]\n      [last_To:];tag=reg1\n      [last_Call-ID:]\n      [last_CSeq:]\n      [last_Contact:]\n      Expires: 2\n      Content-Length: 0\n    ]]>\n  </send>\n";
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"registrar\">\n{}{}  <label id=\"end\"/>\n</scenario>\n",
        round,
        round.replace("\"good\"", "\"good2\"")
    );
    let sipp = Sipp::answer(&xml, &dir, &[]);
    let (ua, _calls) = endpoint(Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handle = ua.register(roomkit_sip::Registration {
        registrar: format!("127.0.0.1:{}", sipp.sip_port),
        domain: Some("roomkit.test".into()),
        user: "agent".into(),
        transport: Transport::Udp,
        credentials: Some(Credentials {
            username: "agent".into(),
            password: "pw".into(),
        }),
        expires: 2,
    });
    // Registered, then refreshed after half the lifetime: SIPp ends after
    // the second round.
    let done = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(done.is_ok(), "{done:?}");
    assert_eq!(
        handle.state(),
        roomkit_sip::RegistrationState::Registered { expires: 2 }
    );
}

/// OPTIONS keep-alives tell a live trunk from a dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_keep_alives_tell_a_live_trunk_from_a_dead_one() {
    let (trunk, _calls) = endpoint(Duration::ZERO).await;
    let (ua, _unused) = endpoint(Duration::ZERO).await;
    let alive = ua.keep_alive(
        &trunk.local_addr().to_string(),
        Transport::Udp,
        Duration::from_secs(1),
    );
    // A port nobody answers on.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = ua.keep_alive(
        &silent.local_addr().unwrap().to_string(),
        Transport::Udp,
        Duration::from_secs(1),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (a, d) = (alive.state(), dead.state());
        if matches!(a, roomkit_sip::Reachability::Reachable { status: 200, .. })
            && matches!(d, roomkit_sip::Reachability::Unreachable(_))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alive: {a:?}, dead: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Digits the agent sends leave as RFC 4733 events and arrive as digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_sent_by_one_agent_arrive_as_digits_at_the_other() {
    let (callee, mut calls) = endpoint(Duration::ZERO).await;
    let (caller, _unused) = endpoint(Duration::ZERO).await;
    let mut outgoing = caller
        .dial(DialRequest::new(format!(
            "sip:agent@{}",
            callee.local_addr()
        )))
        .await
        .expect("answered");
    outgoing.start_media();
    let incoming = tokio::time::timeout(Duration::from_secs(5), calls.recv())
        .await
        .unwrap()
        .unwrap();
    // Its media runs from the start, as a voice channel would run it.
    let mut incoming = incoming;
    incoming.start_media();
    assert!(outgoing.capabilities.dtmf_signaling);
    // Some audio first, so the far side's stream has started.
    speak_tone(&outgoing, 20);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for digit in ['5', '#'] {
        outgoing
            .outbound
            .send(Outbound::Dtmf {
                digit,
                duration_ms: 100,
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    outgoing.outbound.send(Outbound::HangUp).await.unwrap();
    let heard = listen(incoming, Duration::from_secs(5)).await;
    assert_eq!(heard.digits, vec!['5', '#'], "{heard:?}");
    assert_eq!(heard.hang_up.as_deref(), Some("remote hangup"));
}
