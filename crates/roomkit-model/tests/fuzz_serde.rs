//! Property tests of the model's JSON parsers (the CI-time counterpart of
//! the `event_json` fuzz target): random bytes and mutated valid documents
//! parse or fail with a serde error, never panic; whatever parses
//! validates without panicking and survives a round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use roomkit_model::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn reparse<T: Serialize + DeserializeOwned>(text: &str) -> Option<T> {
    let v: T = serde_json::from_str(text).ok()?;
    let again = serde_json::to_string(&v).unwrap();
    let _: T = serde_json::from_str(&again)
        .unwrap_or_else(|e| panic!("parsed once, not twice: {e}: {again}"));
    Some(v)
}

fn check(text: &str) {
    if let Some(c) = reparse::<EventContent>(text) {
        let _ = c.validate();
    }
    if let Some(e) = reparse::<RoomEvent>(text) {
        let _ = e.content.validate();
    }
    let _ = reparse::<InboundMessage>(text);
    let _ = reparse::<Room>(text);
    let _ = reparse::<ChannelBinding>(text);
    let _ = reparse::<Participant>(text);
    let _ = reparse::<DeliveryResults>(text);
    let _ = reparse::<ChannelType>(text);
    let _ = reparse::<Visibility>(text);
    let _ = reparse::<HookTrigger>(text);
    let _ = text.parse::<ChannelType>();
    let _ = text.parse::<Visibility>();
    let _ = text.parse::<HookTrigger>();
}

fn valid_documents() -> Vec<Value> {
    vec![
        json!({"type": "text", "text": "hi", "language": "en"}),
        json!({"type": "composite", "parts": [
            {"type": "text", "text": "a"},
            {"type": "media", "url": "https://x/y.png", "mime_type": "image/png"},
            {"type": "location", "latitude": 1.0, "longitude": 2.0}]}),
        json!({"type": "edit", "target_event_id": "e1", "new_content": {"type": "text", "text": "b"}}),
        json!({"channel_id": "sms", "sender_id": "+1", "content": {"type": "text", "text": "x"},
               "metadata": {}, "raw_payload": {}}),
        json!("transport"),
        json!("visible_to:ws,sms"),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::from)),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("text"),
            Just("composite"),
            Just("media"),
            Just("edit"),
            Just("delete"),
            Just("system"),
            Just("all"),
            Just("none"),
            Just("2026-01-01T00:00:00Z")
        ]
        .prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn mutate(v: &mut Value, pick: &mut usize, new: &mut Option<Value>) {
    if *pick == 0 {
        if let Some(n) = new.take() {
            *v = n;
        }
        return;
    }
    *pick -= 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => Vec::new(),
    };
    for c in children {
        mutate(c, pick, new);
        if new.is_none() {
            return;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_text_never_panics(text in ".{0,128}") {
        check(&text);
    }

    #[test]
    fn random_bytes_are_a_serde_error_or_a_value(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Err(e) = serde_json::from_slice::<RoomEvent>(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
        if let Err(e) = serde_json::from_slice::<EventContent>(&bytes) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn mutated_valid_documents_never_panic(
        which in 0usize..6,
        edits in prop::collection::vec((0usize..16, leaf()), 1..4),
    ) {
        let mut v = valid_documents()[which].clone();
        for (pick, new) in edits {
            let mut pick = pick;
            mutate(&mut v, &mut pick, &mut Some(new));
        }
        check(&v.to_string());
    }

    #[test]
    fn deeply_nested_content_is_refused_or_parsed(depth in 1usize..300) {
        let mut text = String::from(r#"{"type":"text","text":"x"}"#);
        for _ in 0..depth {
            text = format!(r#"{{"type":"composite","parts":[{text}]}}"#);
        }
        check(&text);
    }
}
