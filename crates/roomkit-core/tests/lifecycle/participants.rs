//! Explicit membership changes are lifecycle markers in the timeline
//! (decision D6, T-31): adding a participant stores PARTICIPANT_JOINED,
//! removing one PARTICIPANT_LEFT, each with the next index.

use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::RecordingChannel;

use crate::util::*;

#[tokio::test]
async fn t31_add_and_remove_participant_store_joined_and_left_markers() {
    let ws = RecordingChannel::transport("ws", ChannelType::Websocket);
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let room_id = RoomId::from("r");
    let p = kit
        .add_participant(
            &room_id,
            AddParticipant {
                id: Some(ParticipantId::from("alice")),
                display_name: Some("Alice".into()),
                ..AddParticipant::default()
            },
        )
        .await
        .unwrap();
    kit.remove_participant(&room_id, &p.id).await.unwrap();
    // Removing again changes nothing and stores nothing more.
    kit.remove_participant(&room_id, &p.id).await.unwrap();

    let events = timeline(&kit, "r").await;
    let markers: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e.event_type,
                EventType::ParticipantJoined | EventType::ParticipantLeft
            )
        })
        .collect();
    assert_eq!(markers.len(), 2, "{markers:?}");
    assert_eq!(markers[0].event_type, EventType::ParticipantJoined);
    assert_eq!(markers[1].event_type, EventType::ParticipantLeft);
    for m in &markers {
        assert_eq!(m.source.channel_id.as_str(), "system");
        assert_eq!(m.status, EventStatus::Delivered);
        assert_eq!(m.source.participant_id.as_ref(), Some(&p.id));
        let EventContent::System(s) = &m.content else {
            panic!("a system marker: {m:?}");
        };
        assert_eq!(s.data["participant_id"], "alice");
    }
    assert!(markers[0].index < markers[1].index);
    assert_timeline_invariants(&kit, "r").await;
    // Readable channels see the markers through on_event (not deliver).
    wait_until(|| {
        ws.seen()
            .iter()
            .any(|e| e.event_type == EventType::ParticipantJoined)
    })
    .await;
}

#[tokio::test]
async fn t31_a_closed_room_gets_no_markers() {
    let kit = kit_with(&[]);
    room_with(&kit, "c", &[]).await;
    let room_id = RoomId::from("c");
    kit.set_room_status(&room_id, RoomStatus::Closed)
        .await
        .unwrap();
    let before = timeline(&kit, "c").await.len();
    let p = kit
        .add_participant(&room_id, AddParticipant::default())
        .await
        .unwrap();
    kit.remove_participant(&room_id, &p.id).await.unwrap();
    assert_eq!(timeline(&kit, "c").await.len(), before);
}
