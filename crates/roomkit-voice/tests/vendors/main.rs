//! The speech vendors against their fake servers over loopback: results
//! parsed, keys and parameters sent, faults (refusals, stalls, broken
//! connections, garbage) ending in a [`roomkit_voice::ProviderFailure`]
//! within the configured time, never a hang or a panic.

mod deepgram;
mod elevenlabs;
mod fallback;
mod openai;

use std::time::Duration;

/// A generous bound for "it did not hang" on a loaded machine.
pub const NO_HANG: Duration = Duration::from_secs(20);

/// `ms` of a loud 300 Hz tone at `rate` (speech to the fakes).
pub fn speech(rate: u32, ms: u32) -> Vec<i16> {
    let n = rate * ms / 1000;
    (0..n)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            #[allow(clippy::cast_possible_truncation)]
            let s = (9000.0 * (2.0 * std::f64::consts::PI * 300.0 * t).sin()) as i16;
            s
        })
        .collect()
}

/// `ms` of digital silence.
pub fn silence(rate: u32, ms: u32) -> Vec<i16> {
    vec![0; (rate * ms / 1000) as usize]
}

#[test]
fn providers_never_show_their_key() {
    use roomkit_voice::vendors::Secret;
    use roomkit_voice::vendors::{deepgram, elevenlabs, openai};
    let key = || Secret::new("sk-very-secret-value");
    let shown = [
        format!(
            "{:?}",
            deepgram::DeepgramStt::new(key(), &deepgram::DeepgramConfig::default())
        ),
        format!(
            "{:?}",
            openai::OpenAiStt::new(key(), &openai::OpenAiSttConfig::default())
        ),
        format!(
            "{:?}",
            openai::OpenAiTts::new(key(), &openai::OpenAiTtsConfig::default())
        ),
        format!(
            "{:?}",
            elevenlabs::ElevenLabsTts::new(
                key(),
                &elevenlabs::ElevenLabsConfig {
                    voice_id: "v".into(),
                    ..elevenlabs::ElevenLabsConfig::default()
                }
            )
        ),
    ];
    for s in shown {
        assert!(s.starts_with("Ok("), "{s}");
        assert!(!s.contains("very-secret"), "{s}");
    }
}
