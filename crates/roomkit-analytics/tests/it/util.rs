//! Helpers shared by the tests: temp dirs, tones, key order of JSON
//! objects, a standard scripted call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roomkit_analytics::{
    AnalyticsConfig, ApiKey, AudioTap, CallAnalytics, CallHandle, Exporter, MetricKind,
    MetricRecord, RetryPolicy, RoarkConfig, RoarkExporter, Role, Side, StartCall, TranscriptInput,
};
use serde::de::{Deserializer, MapAccess, Visitor};

pub const KEY: &str = "rk_live_test_key";
pub const RATE: u32 = 24_000;
pub const FRAME: usize = 480;

pub fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rk-analytics-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Sample `n` of a tone, from absolute sample 0 of the recording.
pub fn tone_sample(freq: f64, n: u64) -> i16 {
    let t = n as f64 / f64::from(RATE);
    (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
}

pub fn tone(freq: f64, first: u64, len: usize) -> Vec<i16> {
    (0..len as u64)
        .map(|i| tone_sample(freq, first + i))
        .collect()
}

/// Energy of `freq` in `samples` relative to the signal's energy
/// (Goertzel), near 1 for a pure tone.
pub fn tone_share(samples: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    if energy == 0.0 {
        return 0.0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (samples.len() as f64 * energy)
}

/// Splits interleaved little-endian stereo PCM into (left, right).
pub fn split_stereo(pcm: &[u8]) -> (Vec<i16>, Vec<i16>) {
    assert_eq!(pcm.len() % 4, 0, "whole stereo frames");
    let mut l = Vec::with_capacity(pcm.len() / 4);
    let mut r = Vec::with_capacity(pcm.len() / 4);
    for f in pcm.chunks_exact(4) {
        l.push(i16::from_le_bytes([f[0], f[1]]));
        r.push(i16::from_le_bytes([f[2], f[3]]));
    }
    (l, r)
}

/// The keys of a JSON object in the order they appear in the text.
pub fn key_order(json: &[u8]) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    (&mut de).deserialize_map(Keys).unwrap()
}

/// Key order of each element of an array member.
pub fn nested_key_orders(json: &[u8], member: &str) -> Vec<Vec<String>> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    let Some(arr) = v.get(member).and_then(|a| a.as_array()) else {
        return Vec::new();
    };
    // Re-serialising would sort keys; find each element's text instead.
    let text = std::str::from_utf8(json).unwrap();
    let start = text.find(&format!("\"{member}\":[")).unwrap() + member.len() + 3;
    let mut out = Vec::new();
    let bytes = &text.as_bytes()[start..];
    let mut i = 0;
    for _ in arr {
        // Find the matching closing brace of this element.
        while bytes[i] != b'{' {
            i += 1;
        }
        let begin = i;
        let (mut depth, mut in_str, mut esc) = (0i32, false, false);
        loop {
            let c = bytes[i];
            if in_str {
                if esc {
                    esc = false;
                } else if c == b'\\' {
                    esc = true;
                } else if c == b'"' {
                    in_str = false;
                }
            } else if c == b'"' {
                in_str = true;
            } else if c == b'{' {
                depth += 1;
            } else if c == b'}' {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            i += 1;
        }
        out.push(key_order(&bytes[begin..=i]));
        i += 1;
    }
    out
}

/// Whether a string is a protocol timestamp:
/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`.
pub fn is_protocol_timestamp(s: &str) -> bool {
    s.len() == 32
        && s.ends_with("+00:00")
        && s.as_bytes()[19] == b'.'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 40,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    }
}

pub fn roark(base_url: &str, key: &str) -> RoarkExporter {
    let mut cfg = RoarkConfig::new(ApiKey::new(key), base_url);
    cfg.retry = fast_retry();
    cfg.request_timeout = Duration::from_secs(5);
    cfg.put_timeout = Duration::from_secs(5);
    RoarkExporter::new(cfg).unwrap()
}

pub fn analytics(spool: &std::path::Path, exporters: Vec<Arc<dyn Exporter>>) -> CallAnalytics {
    let mut cfg = AnalyticsConfig::new(spool);
    cfg.sample_rate = RATE;
    CallAnalytics::new(cfg, exporters).unwrap()
}

pub fn start(call_id: &str) -> StartCall {
    let mut s = StartCall::new("room-1", "agent-7");
    s.call_id = Some(call_id.to_owned());
    s.agent_name = Some("Support Bot".into());
    s.agent_prompt = Some("be nice".into());
    s.is_test = true;
    s
}

/// The scripted call of the protocol tests: 6 s; the user speaks 440 Hz
/// for the first 3 s, the agent 880 Hz for the last 3 s while the user's
/// microphone sends silence. One transcript entry each, a tool call with
/// its result, and metrics (one with a NaN that must be dropped).
pub const SCRIPT_FRAMES: u64 = 300; // 6 s of 20 ms frames
pub const USER_FRAMES: u64 = 150;

pub async fn play_script(call: &CallHandle) {
    let tap = call.tap();
    let silence = vec![0i16; FRAME];
    for f in 0..SCRIPT_FRAMES {
        let media = Duration::from_millis(f * 20);
        let first = f * FRAME as u64;
        if f < USER_FRAMES {
            tap.push(Side::User, &tone(440.0, first, FRAME), RATE, media);
        } else {
            tap.push(Side::User, &silence, RATE, media);
            tap.push(Side::Agent, &tone(880.0, first, FRAME), RATE, media);
        }
        if f == 0 {
            call.speaking(Role::User);
        }
        if f.is_multiple_of(20) {
            tokio::task::yield_now().await;
        }
    }
    call.transcript(
        TranscriptInput::new(Role::User, "Hi, where is my order?")
            .span(Duration::from_millis(500), Duration::from_millis(2000))
            .language("en")
            .user_id("u-1"),
    );
    call.metric(MetricRecord {
        kind: MetricKind::Eou,
        end_of_utterance_delay: Some(0.41),
        transcription_delay: Some(0.12),
        ..MetricRecord::default()
    });
    call.tool_call(
        "call_abc123",
        "lookup_order",
        &serde_json::json!({"order_id": "TEST-1234"}),
    );
    call.metric(MetricRecord {
        kind: MetricKind::Llm,
        ttft: Some(f64::NAN),
        duration: Some(0.9),
        prompt_tokens: Some(120),
        completion_tokens: Some(14),
        total_tokens: Some(134),
        ..MetricRecord::default()
    });
    call.tool_result("call_abc123", &serde_json::json!({"status": "shipped"}));
    call.transcript(
        TranscriptInput::new(Role::Assistant, "Let me check that for you.")
            .span(Duration::from_millis(3000), Duration::from_millis(6000)),
    );
}

/// Checks a stitched recording of the script to the sample.
pub fn check_script_audio(pcm: &[u8]) {
    let frames = SCRIPT_FRAMES as usize * FRAME;
    assert_eq!(
        pcm.len(),
        frames * 4,
        "recording is the whole call, tail included"
    );
    let (l, r) = split_stereo(pcm);
    let user_end = USER_FRAMES as usize * FRAME;
    for i in 0..frames {
        let (want_l, want_r) = if i < user_end {
            (tone_sample(440.0, i as u64), 0)
        } else {
            (0, tone_sample(880.0, i as u64))
        };
        assert_eq!((l[i], r[i]), (want_l, want_r), "sample {i}");
    }
    assert!(tone_share(&l[..user_end], 440.0) > 0.9);
    assert!(tone_share(&r[user_end..], 880.0) > 0.9);
    assert!(tone_share(&l[..user_end], 880.0) < 0.01);
}
