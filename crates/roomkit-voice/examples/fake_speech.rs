//! Runs the fake Deepgram, OpenAI audio and ElevenLabs servers on loopback
//! until interrupted, printing their base URLs, for trying a voice agent
//! without cloud accounts:
//!
//! ```text
//! cargo run -p roomkit-voice --features fake-servers --example fake_speech -- "hello" "book a table"
//! ```
//!
//! Every fake expects the key `test-key`; the arguments are the transcripts
//! the speech-to-text fakes give, one per utterance.

use roomkit_voice::fake::{FakeDeepgram, FakeElevenLabs, FakeOpenAiAudio};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let transcripts: Vec<String> = std::env::args().skip(1).collect();
    let deepgram = FakeDeepgram::start("test-key", transcripts.clone()).await?;
    let openai = FakeOpenAiAudio::start("test-key", transcripts).await?;
    let elevenlabs = FakeElevenLabs::start("test-key").await?;
    println!(
        "{}",
        serde_json::json!({
            "deepgram": deepgram.base_url(),
            "openai": openai.base_url(),
            "elevenlabs": elevenlabs.base_url(),
            "key": "test-key",
        })
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
