//! The model's JSON: events, contents, rooms, bindings, participants and
//! the enums with hand-written parsers. Whatever parses must validate
//! without panicking, serialize, and parse back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomkit_model::{
    ChannelBinding, ChannelType, DeliveryResults, EventContent, HookTrigger, Identity,
    InboundMessage, Participant, Room, RoomEvent, Task, Visibility,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let value: T = serde_json::from_slice(data).ok()?;
    let text = serde_json::to_string(&value).unwrap_or_else(|e| panic!("serialize: {e}"));
    serde_json::from_str::<T>(&text)
        .unwrap_or_else(|e| panic!("what was parsed must parse again: {e}: {text}"));
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    if let Some(content) = round_trip::<EventContent>(data) {
        let _ = content.validate();
    }
    if let Some(event) = round_trip::<RoomEvent>(data) {
        let _ = event.content.validate();
    }
    let _ = round_trip::<InboundMessage>(data);
    let _ = round_trip::<Room>(data);
    let _ = round_trip::<ChannelBinding>(data);
    let _ = round_trip::<Participant>(data);
    let _ = round_trip::<Identity>(data);
    let _ = round_trip::<Task>(data);
    let _ = round_trip::<DeliveryResults>(data);
    let _ = round_trip::<ChannelType>(data);
    let _ = round_trip::<Visibility>(data);
    let _ = round_trip::<HookTrigger>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<ChannelType>();
        let _ = text.parse::<Visibility>();
        let _ = text.parse::<HookTrigger>();
    }
});
