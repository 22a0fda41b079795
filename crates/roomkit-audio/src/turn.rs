//! Post-STT turn detection and barge-in (interruption) handling.
//!
//! These stages work on transcripts and speech timing rather than audio
//! frames. [`HeuristicTurnDetector`] decides from punctuation, trailing
//! filler words and silence length; [`InterruptionController`] applies the
//! IMMEDIATE, CONFIRMED, SEMANTIC or DISABLED barge-in strategy while the
//! agent is speaking.

use serde::{Deserialize, Serialize};

/// One past turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnEntry {
    /// `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub text: String,
}

/// Everything a turn detector may look at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnContext {
    /// Transcript accumulated so far.
    pub transcript: String,
    /// The STT result is final.
    pub is_final: bool,
    /// Silence since the end of speech, in milliseconds.
    pub silence_duration_ms: f64,
    /// Length of the speech segment, in milliseconds.
    pub speech_duration_ms: f64,
    /// Recent turns.
    pub conversation_history: Option<Vec<TurnEntry>>,
    /// Anything else.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A turn detector's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnDecision {
    /// The user has finished.
    pub is_complete: bool,
    /// Confidence in [0, 1].
    pub confidence: f32,
    /// Why, e.g. `terminal_punctuation`, `long_pause`, `trailing_filler`.
    pub reason: Option<String>,
    /// When not complete: how long to wait before asking again.
    pub suggested_wait_ms: Option<f64>,
}

/// Decides whether the user's turn is over.
pub trait TurnDetector {
    /// Detector name.
    fn name(&self) -> &str;
    /// Evaluates the current transcript and timing.
    fn evaluate(&mut self, context: &TurnContext) -> TurnDecision;
    /// Clears internal state.
    fn reset(&mut self);
    /// Releases resources.
    fn close(&mut self) {}
}

/// Tuning of [`HeuristicTurnDetector`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeuristicTurnConfig {
    /// Silence after which a turn is complete whatever the text says.
    pub max_silence_ms: f64,
    /// Silence needed after a sentence that ends with `.`, `?` or `!`.
    pub punctuated_silence_ms: f64,
    /// Words that, when last, suggest the speaker is not done.
    pub continuation_words: Vec<String>,
}

impl Default for HeuristicTurnConfig {
    fn default() -> Self {
        Self {
            max_silence_ms: 1500.0,
            punctuated_silence_ms: 200.0,
            continuation_words: [
                "and", "but", "or", "so", "because", "um", "uh", "like", "the", "a", "to", "of",
                "with", "my", "is",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        }
    }
}

/// Punctuation-and-pause turn detector.
#[derive(Debug, Clone, Default)]
pub struct HeuristicTurnDetector {
    config: HeuristicTurnConfig,
}

impl HeuristicTurnDetector {
    /// A detector with the given tuning.
    pub fn new(config: HeuristicTurnConfig) -> Self {
        Self { config }
    }
}

impl TurnDetector for HeuristicTurnDetector {
    fn name(&self) -> &str {
        "heuristic"
    }

    fn evaluate(&mut self, ctx: &TurnContext) -> TurnDecision {
        let text = ctx.transcript.trim();
        if ctx.silence_duration_ms >= self.config.max_silence_ms {
            return TurnDecision {
                is_complete: true,
                confidence: 0.9,
                reason: Some("long_pause".into()),
                suggested_wait_ms: None,
            };
        }
        let last_word = text
            .split_whitespace()
            .last()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .unwrap_or_default();
        if text.ends_with(['.', '?', '!']) {
            if ctx.silence_duration_ms >= self.config.punctuated_silence_ms {
                return TurnDecision {
                    is_complete: true,
                    confidence: if text.ends_with('?') { 0.9 } else { 0.8 },
                    reason: Some(
                        if text.ends_with('?') {
                            "question_mark"
                        } else {
                            "terminal_punctuation"
                        }
                        .into(),
                    ),
                    suggested_wait_ms: None,
                };
            }
            return TurnDecision {
                is_complete: false,
                confidence: 0.6,
                reason: Some("awaiting_pause".into()),
                suggested_wait_ms: Some(
                    self.config.punctuated_silence_ms - ctx.silence_duration_ms,
                ),
            };
        }
        let trailing = self.config.continuation_words.contains(&last_word);
        TurnDecision {
            is_complete: false,
            confidence: if trailing { 0.8 } else { 0.5 },
            reason: Some(
                if trailing {
                    "trailing_filler"
                } else {
                    "no_terminal_punctuation"
                }
                .into(),
            ),
            suggested_wait_ms: Some(self.config.max_silence_ms - ctx.silence_duration_ms),
        }
    }

    fn reset(&mut self) {}
}

/// Barge-in strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterruptionStrategy {
    /// Stop the agent as soon as the user starts speaking.
    Immediate,
    /// Stop once the user has spoken for `min_speech_ms`.
    #[default]
    Confirmed,
    /// Ask the backchannel detector; stop only on a real interruption.
    Semantic,
    /// Never stop; the user's speech is handled after the agent finishes.
    Disabled,
}

/// Barge-in configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterruptionConfig {
    /// Strategy.
    pub strategy: InterruptionStrategy,
    /// Sustained speech needed by CONFIRMED (and by SEMANTIC without a detector), in ms.
    pub min_speech_ms: u32,
    /// Discard unplayed TTS audio on interruption.
    pub flush_partial_tts: bool,
    /// Store the agent's partial response in the timeline.
    pub keep_partial_transcript: bool,
}

impl Default for InterruptionConfig {
    fn default() -> Self {
        Self {
            strategy: InterruptionStrategy::Confirmed,
            min_speech_ms: 300,
            flush_partial_tts: true,
            keep_partial_transcript: true,
        }
    }
}

/// What a backchannel detector sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackchannelContext {
    /// A short piece of the user's audio, if available.
    pub audio: Option<Vec<i16>>,
    /// Partial transcript, if STT was fast enough.
    pub transcript: Option<String>,
    /// How long the user has been speaking, in ms.
    pub speech_duration_ms: f64,
    /// How far into its response the agent is (0..1).
    pub bot_speech_progress: f32,
}

/// A backchannel detector's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct BackchannelDecision {
    /// Acknowledgement (`mm-hmm`) rather than an interruption.
    pub is_backchannel: bool,
    /// Confidence in [0, 1].
    pub confidence: f32,
    /// Label such as `agreement` or `question`.
    pub label: Option<String>,
}

/// Tells acknowledgements from real interruptions.
pub trait BackchannelDetector {
    /// Detector name.
    fn name(&self) -> &str;
    /// Classifies the user's speech.
    fn classify(&mut self, context: &BackchannelContext) -> BackchannelDecision;
    /// Clears state.
    fn reset(&mut self) {}
}

/// Backchannel detection from short duration and a list of acknowledgement words.
#[derive(Debug, Clone)]
pub struct KeywordBackchannelDetector {
    words: Vec<String>,
    max_duration_ms: f64,
}

impl Default for KeywordBackchannelDetector {
    fn default() -> Self {
        Self {
            words: [
                "mhm", "mm", "hmm", "mm-hmm", "mm hmm", "uh-huh", "uh huh", "aha", "yeah", "yes",
                "ok", "okay", "right", "sure", "yep", "got it", "i see",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            max_duration_ms: 800.0,
        }
    }
}

impl BackchannelDetector for KeywordBackchannelDetector {
    fn name(&self) -> &str {
        "keyword"
    }

    fn classify(&mut self, ctx: &BackchannelContext) -> BackchannelDecision {
        if let Some(t) = &ctx.transcript {
            let norm: String = t
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '-')
                .collect();
            let norm = norm.trim();
            let is_bc = !norm.is_empty() && self.words.iter().any(|w| w == norm);
            return BackchannelDecision {
                is_backchannel: is_bc,
                confidence: 0.85,
                label: Some(if is_bc { "agreement" } else { "interruption" }.into()),
            };
        }
        // Without a transcript, short bursts are taken for acknowledgements.
        let short = ctx.speech_duration_ms < self.max_duration_ms;
        BackchannelDecision {
            is_backchannel: short,
            confidence: 0.55,
            label: Some(
                if short {
                    "short_utterance"
                } else {
                    "long_utterance"
                }
                .into(),
            ),
        }
    }
}

/// What to do about the user's speech during agent playback.
#[derive(Debug, Clone, PartialEq)]
pub enum InterruptionAction {
    /// Nothing yet (keep watching).
    Wait,
    /// Stop the agent now.
    Interrupt {
        /// Drop unplayed audio.
        flush_tts: bool,
        /// Keep the partial response in the timeline.
        keep_partial_transcript: bool,
    },
    /// The user only acknowledged; keep playing (fires ON_BACKCHANNEL).
    Backchannel(BackchannelDecision),
    /// The speech was too short to count; keep playing.
    Ignore,
    /// Keep playing; handle the user's speech after the agent finishes.
    Queue,
}

/// Applies the barge-in strategy to speech events that arrive while the agent speaks.
pub struct InterruptionController {
    config: InterruptionConfig,
    detector: Option<Box<dyn BackchannelDetector>>,
    agent_speaking: bool,
    speech_start_ms: Option<f64>,
    decided: bool,
}

impl std::fmt::Debug for InterruptionController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterruptionController")
            .field("config", &self.config)
            .field("agent_speaking", &self.agent_speaking)
            .finish()
    }
}

impl InterruptionController {
    /// A controller with an optional backchannel detector (used by SEMANTIC).
    pub fn new(config: InterruptionConfig, detector: Option<Box<dyn BackchannelDetector>>) -> Self {
        Self {
            config,
            detector,
            agent_speaking: false,
            speech_start_ms: None,
            decided: false,
        }
    }

    /// The agent started or stopped playing audio.
    pub fn set_agent_speaking(&mut self, speaking: bool) {
        self.agent_speaking = speaking;
        if !speaking {
            self.speech_start_ms = None;
            self.decided = false;
        }
    }

    fn interrupt(&mut self) -> InterruptionAction {
        self.decided = true;
        self.agent_speaking = false;
        InterruptionAction::Interrupt {
            flush_tts: self.config.flush_partial_tts,
            keep_partial_transcript: self.config.keep_partial_transcript,
        }
    }

    /// The VAD reported the start of user speech at `t_ms`.
    pub fn on_speech_start(&mut self, t_ms: f64) -> InterruptionAction {
        if !self.agent_speaking {
            return InterruptionAction::Wait;
        }
        self.speech_start_ms = Some(t_ms);
        self.decided = false;
        match self.config.strategy {
            InterruptionStrategy::Immediate => self.interrupt(),
            InterruptionStrategy::Disabled => InterruptionAction::Queue,
            InterruptionStrategy::Confirmed | InterruptionStrategy::Semantic => {
                InterruptionAction::Wait
            }
        }
    }

    /// Periodic update while the user is still speaking (`now_ms` on the
    /// same clock), optionally with a partial transcript.
    pub fn on_speech_progress(
        &mut self,
        now_ms: f64,
        transcript: Option<&str>,
        progress: f32,
    ) -> InterruptionAction {
        let Some(start) = self.speech_start_ms else {
            return InterruptionAction::Wait;
        };
        if !self.agent_speaking || self.decided {
            return InterruptionAction::Wait;
        }
        let spoken = now_ms - start;
        match self.config.strategy {
            InterruptionStrategy::Confirmed => {
                if spoken >= f64::from(self.config.min_speech_ms) {
                    self.interrupt()
                } else {
                    InterruptionAction::Wait
                }
            }
            InterruptionStrategy::Semantic => {
                if transcript.is_none() && spoken < f64::from(self.config.min_speech_ms) {
                    return InterruptionAction::Wait;
                }
                match self.detector.as_mut() {
                    Some(det) => {
                        let d = det.classify(&BackchannelContext {
                            audio: None,
                            transcript: transcript.map(str::to_owned),
                            speech_duration_ms: spoken,
                            bot_speech_progress: progress,
                        });
                        // Mid-speech, only an interruption is final: what
                        // sounds like an acknowledgement so far ("okay...")
                        // may still grow into a sentence, so a backchannel
                        // is decided when the speech ends.
                        if d.is_backchannel {
                            InterruptionAction::Wait
                        } else {
                            self.interrupt()
                        }
                    }
                    None if spoken >= f64::from(self.config.min_speech_ms) => self.interrupt(),
                    None => InterruptionAction::Wait,
                }
            }
            InterruptionStrategy::Immediate | InterruptionStrategy::Disabled => {
                InterruptionAction::Wait
            }
        }
    }

    /// The VAD reported the end of user speech.
    pub fn on_speech_end(
        &mut self,
        end_ms: f64,
        transcript: Option<&str>,
        progress: f32,
    ) -> InterruptionAction {
        let Some(start) = self.speech_start_ms.take() else {
            return InterruptionAction::Wait;
        };
        if !self.agent_speaking || self.decided {
            self.decided = false;
            return InterruptionAction::Wait;
        }
        let spoken = end_ms - start;
        match self.config.strategy {
            InterruptionStrategy::Confirmed => {
                if spoken >= f64::from(self.config.min_speech_ms) {
                    self.interrupt()
                } else {
                    InterruptionAction::Ignore
                }
            }
            InterruptionStrategy::Semantic => {
                let action = match self.detector.as_mut() {
                    Some(det) => {
                        let d = det.classify(&BackchannelContext {
                            audio: None,
                            transcript: transcript.map(str::to_owned),
                            speech_duration_ms: spoken,
                            bot_speech_progress: progress,
                        });
                        if d.is_backchannel {
                            InterruptionAction::Backchannel(d)
                        } else {
                            self.interrupt()
                        }
                    }
                    None if spoken >= f64::from(self.config.min_speech_ms) => self.interrupt(),
                    None => InterruptionAction::Ignore,
                };
                self.decided = false;
                action
            }
            InterruptionStrategy::Disabled => InterruptionAction::Queue,
            InterruptionStrategy::Immediate => InterruptionAction::Wait,
        }
    }
}
