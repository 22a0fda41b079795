//! Chain depth (RFC §8.3, §17.5), checklist items C-102 and C-103.

use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::support::*;

/// Two AIs that answer each other forever: `analyst` answers the human
/// and `writer`, `writer` answers only `analyst`. Every analyst answer
/// carries a task and an observation.
pub struct PingPong {
    pub kit: RoomKit,
    pub room: RoomId,
    pub human: RecordingChannel,
}

pub async fn ping_pong(builder: impl FnOnce(RoomKitBuilder) -> RoomKitBuilder) -> PingPong {
    let human = RecordingChannel::websocket("human");
    let analyst = RecordingChannel::ai("analyst_ai");
    let writer = RecordingChannel::ai("writer_ai");
    analyst.respond_with(|e, _| {
        let from = e.source.channel_id.as_str();
        if e.event_type != EventType::Message || !(from == "human" || from == "writer_ai") {
            return ChannelOutput::empty();
        }
        let mut data = Map::new();
        data.insert("depth".into(), (e.chain_depth + 1).into());
        reply_with_effects(
            Some(&format!("analysis {}", e.chain_depth + 1)),
            vec![Task::new("review")],
            vec![Observation::new("analysis_note", data)],
        )
    });
    writer.respond_with(|e, _| {
        if e.event_type == EventType::Message && e.source.channel_id.as_str() == "analyst_ai" {
            ChannelOutput::respond(reply(&format!("draft {}", e.chain_depth + 1)))
        } else {
            ChannelOutput::empty()
        }
    });
    let kit = builder(builder_with(&[&human, &analyst, &writer]))
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["human", "analyst_ai", "writer_ai"]).await;
    PingPong { kit, room, human }
}

/// (depth, status, blocked_by, text) of the conversation events.
pub async fn chain(p: &PingPong) -> Vec<(u32, EventStatus, Option<String>, String)> {
    conversation(&p.kit, &p.room)
        .await
        .iter()
        .map(|e| {
            (
                e.chain_depth,
                e.status,
                e.blocked_by.clone(),
                e.content.plain_text(),
            )
        })
        .collect()
}

fn row(depth: u32, text: &str) -> (u32, EventStatus, Option<String>, String) {
    (depth, EventStatus::Delivered, None, text.to_owned())
}

fn blocked_row(depth: u32, text: &str) -> (u32, EventStatus, Option<String>, String) {
    (
        depth,
        EventStatus::Blocked,
        Some("event_chain_depth_limit".to_owned()),
        text.to_owned(),
    )
}

/// C-102: with the default limit of 5, an external event has depth 0,
/// each response its trigger's depth + 1; depths 1 to 4 are delivered and
/// the depth-5 response is stored BLOCKED and broadcast to no one.
#[tokio::test]
async fn c102_default_limit_delivers_depths_1_to_4_and_blocks_5() {
    let p = ping_pong(|b| b).await;
    assert_eq!(p.kit.config().max_chain_depth, 5);
    let r = p
        .kit
        .process_inbound(msg("human", "u", "start", &p.room))
        .await
        .unwrap();
    assert_eq!(r.event.unwrap().chain_depth, 0);
    assert_eq!(
        chain(&p).await,
        vec![
            row(0, "start"),
            row(1, "analysis 1"),
            row(2, "draft 2"),
            row(3, "analysis 3"),
            row(4, "draft 4"),
            blocked_row(5, "analysis 5"),
        ]
    );
    assert_eq!(
        p.human.delivered_texts(),
        vec!["analysis 1", "draft 2", "analysis 3", "draft 4"]
    );
}

/// C-102: the limit is configurable (2: only depth 1 is delivered) and
/// cannot be disabled (0 is raised to 1: even the first response is
/// blocked rather than the chain running unbounded).
#[tokio::test]
async fn c102_limit_is_configurable_and_cannot_be_disabled() {
    let p = ping_pong(|b| b.max_chain_depth(2)).await;
    p.kit
        .process_inbound(msg("human", "u", "start", &p.room))
        .await
        .unwrap();
    assert_eq!(
        chain(&p).await,
        vec![
            row(0, "start"),
            row(1, "analysis 1"),
            blocked_row(2, "draft 2")
        ]
    );
    assert_eq!(p.human.delivered_texts(), vec!["analysis 1"]);

    let p = ping_pong(|b| b.max_chain_depth(0)).await;
    assert_eq!(p.kit.config().max_chain_depth, 1);
    p.kit
        .process_inbound(msg("human", "u", "start", &p.room))
        .await
        .unwrap();
    assert_eq!(
        chain(&p).await,
        vec![row(0, "start"), blocked_row(1, "analysis 1")]
    );
    assert!(p.human.delivered().is_empty());
}

/// C-103: a chain-depth block keeps the event for audit, keeps the
/// blocked channel's tasks and observations, emits
/// chain_depth_exceeded{room_id, channel_id, depth}, and stops the chain.
#[tokio::test]
async fn c103_depth_block_keeps_event_and_side_effects_and_emits_event() {
    let p = ping_pong(|b| b).await;
    let log = FrameworkLog::start(&p.kit);
    p.kit
        .process_inbound(msg("human", "u", "start", &p.room))
        .await
        .unwrap();
    p.kit.idle().await;

    let blocked = conversation(&p.kit, &p.room).await.pop().unwrap();
    assert_eq!(blocked.status, EventStatus::Blocked);
    assert_eq!(blocked.source.channel_id.as_str(), "analyst_ai");
    let room = p.kit.get_room(&p.room).await.unwrap();
    assert_eq!(room.latest_index, Some(blocked.index));

    // Three analyst answers (depths 1, 3, 5): all side effects kept.
    let obs = p.kit.list_observations(&p.room).await.unwrap();
    let mut depths: Vec<i64> = obs
        .iter()
        .map(|o| o.data["depth"].as_i64().unwrap())
        .collect();
    depths.sort();
    assert_eq!(depths, vec![1, 3, 5]);
    let tasks = p
        .kit
        .list_tasks(&p.room, &Default::default())
        .await
        .unwrap();
    assert_eq!(tasks.len(), 3);

    let events = log.events().await;
    let exceeded: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, FrameworkEvent::ChainDepthExceeded { .. }))
        .collect();
    assert_eq!(
        exceeded,
        vec![&FrameworkEvent::ChainDepthExceeded {
            room_id: p.room.clone(),
            channel_id: "analyst_ai".into(),
            depth: 5,
        }]
    );
    assert!(events.contains(&FrameworkEvent::EventBlocked {
        room_id: p.room.clone(),
        event_id: blocked.id.clone(),
        hook_name: "event_chain_depth_limit".into(),
    }));
    // Nothing follows the blocked event.
    assert_eq!(
        timeline(&p.kit, &p.room).await.last().unwrap().id,
        blocked.id
    );
}
