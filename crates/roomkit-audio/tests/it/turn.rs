//! Turn detection and the four barge-in strategies.

use roomkit_audio::turn::{
    HeuristicTurnDetector, InterruptionAction, InterruptionConfig, InterruptionController,
    InterruptionStrategy, KeywordBackchannelDetector, TurnContext, TurnDetector,
};

fn ctx(text: &str, silence: f64) -> TurnContext {
    TurnContext {
        transcript: text.into(),
        is_final: true,
        silence_duration_ms: silence,
        speech_duration_ms: 1500.0,
        ..TurnContext::default()
    }
}

#[test]
fn heuristic_turn_detector() {
    let mut t = HeuristicTurnDetector::default();
    assert!(t.evaluate(&ctx("What time is it?", 300.0)).is_complete);
    let d = t.evaluate(&ctx("I want to go to the", 400.0));
    assert!(!d.is_complete);
    assert!(d.suggested_wait_ms.unwrap() > 0.0);
    assert!(t.evaluate(&ctx("I want to go to the", 2000.0)).is_complete);
    assert!(!t.evaluate(&ctx("Fine.", 50.0)).is_complete);
}

fn controller(strategy: InterruptionStrategy, with_detector: bool) -> InterruptionController {
    let cfg = InterruptionConfig {
        strategy,
        ..InterruptionConfig::default()
    };
    let det: Option<Box<dyn roomkit_audio::turn::BackchannelDetector>> =
        with_detector.then(|| Box::new(KeywordBackchannelDetector::default()) as _);
    let mut c = InterruptionController::new(cfg, det);
    c.set_agent_speaking(true);
    c
}

fn interrupts(a: &InterruptionAction) -> bool {
    matches!(a, InterruptionAction::Interrupt { .. })
}

#[test]
fn semantic_decides_a_backchannel_only_when_the_speech_ends() {
    // Without a transcript: short speech waits, then is an acknowledgement.
    let mut c = controller(InterruptionStrategy::Semantic, true);
    c.on_speech_start(0.0);
    assert_eq!(
        c.on_speech_progress(400.0, None, 0.2),
        InterruptionAction::Wait
    );
    assert!(matches!(
        c.on_speech_end(500.0, None, 0.2),
        InterruptionAction::Backchannel(_)
    ));
    // Without a transcript, speech that goes on interrupts.
    c.on_speech_start(1000.0);
    assert_eq!(
        c.on_speech_progress(1400.0, None, 0.3),
        InterruptionAction::Wait
    );
    assert!(interrupts(&c.on_speech_progress(1900.0, None, 0.3)));
    // "okay" so far is not final: it grows into a sentence and interrupts.
    let mut c = controller(InterruptionStrategy::Semantic, true);
    c.on_speech_start(0.0);
    assert_eq!(
        c.on_speech_progress(300.0, Some("okay"), 0.2),
        InterruptionAction::Wait
    );
    assert!(interrupts(&c.on_speech_progress(
        700.0,
        Some("okay but wait"),
        0.2
    )));
    // A long "uh-huh" stays an acknowledgement: the words decide.
    let mut c = controller(InterruptionStrategy::Semantic, true);
    c.on_speech_start(0.0);
    assert_eq!(
        c.on_speech_progress(1500.0, Some("uh-huh"), 0.2),
        InterruptionAction::Wait
    );
    assert!(matches!(
        c.on_speech_end(1600.0, Some("uh-huh"), 0.2),
        InterruptionAction::Backchannel(_)
    ));
}

#[test]
fn immediate_confirmed_semantic_and_disabled() {
    // IMMEDIATE: the speech start alone cancels.
    let mut c = controller(InterruptionStrategy::Immediate, false);
    assert!(interrupts(&c.on_speech_start(1000.0)));

    // CONFIRMED: a 150 ms cough is ignored; 300 ms of speech cancels.
    let mut c = controller(InterruptionStrategy::Confirmed, false);
    assert_eq!(c.on_speech_start(1000.0), InterruptionAction::Wait);
    assert_eq!(
        c.on_speech_progress(1100.0, None, 0.3),
        InterruptionAction::Wait
    );
    assert_eq!(
        c.on_speech_end(1150.0, None, 0.3),
        InterruptionAction::Ignore
    );
    c.on_speech_start(2000.0);
    assert!(interrupts(&c.on_speech_progress(2310.0, None, 0.4)));

    // SEMANTIC: "mm-hmm" is a backchannel, a real sentence interrupts.
    let mut c = controller(InterruptionStrategy::Semantic, true);
    c.on_speech_start(1000.0);
    assert!(matches!(
        c.on_speech_end(1400.0, Some("Mm-hmm."), 0.5),
        InterruptionAction::Backchannel(_)
    ));
    c.on_speech_start(3000.0);
    assert!(interrupts(&c.on_speech_progress(
        3500.0,
        Some("wait, that's not what I asked"),
        0.6
    )));

    // DISABLED: never cancels, queues the speech.
    let mut c = controller(InterruptionStrategy::Disabled, false);
    assert_eq!(c.on_speech_start(1000.0), InterruptionAction::Queue);
    assert_eq!(
        c.on_speech_progress(5000.0, None, 0.9),
        InterruptionAction::Wait
    );
    assert_eq!(
        c.on_speech_end(5000.0, None, 0.9),
        InterruptionAction::Queue
    );

    // Nothing happens while the agent is quiet.
    let mut c = controller(InterruptionStrategy::Immediate, false);
    c.set_agent_speaking(false);
    assert_eq!(c.on_speech_start(10.0), InterruptionAction::Wait);
}
