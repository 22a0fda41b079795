//! A first end-to-end pass through the pipeline.

use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

#[tokio::test]
async fn message_flows_from_one_channel_to_another() {
    let a = RecordingChannel::websocket("ws-a");
    let b = RecordingChannel::websocket("ws-b");
    let kit = RoomKit::builder()
        .channel(a.arc())
        .channel(b.arc())
        .build()
        .unwrap();
    let room = kit.create_room(CreateRoom::with_id("r1")).await.unwrap();
    kit.attach_channel(&room.id, &"ws-a".into(), AttachOptions::default())
        .await
        .unwrap();
    kit.attach_channel(&room.id, &"ws-b".into(), AttachOptions::default())
        .await
        .unwrap();
    let r = kit
        .process_inbound(InboundMessage::text("ws-a", "user-1", "hello").in_room("r1"))
        .await
        .unwrap();
    assert!(!r.blocked, "{r:?}");
    let ev = r.event.unwrap();
    assert_eq!(ev.index, 2);
    assert_eq!(ev.status, EventStatus::Delivered);
    assert_eq!(b.delivered_texts(), vec!["hello".to_string()]);
    assert!(a.delivered().is_empty());
    assert_eq!(r.delivery_results.len(), 1);
    let room = kit.get_room(&room.id).await.unwrap();
    assert_eq!(room.event_count, 3);
    assert_eq!(room.latest_index, Some(2));
}

#[tokio::test]
async fn ai_reply_reenters_with_depth_and_parent() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("hi there");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(ai.arc())
        .build()
        .unwrap();
    kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    kit.attach_channel(&"r".into(), &"ws".into(), AttachOptions::default())
        .await
        .unwrap();
    kit.attach_channel(&"r".into(), &"ai".into(), AttachOptions::default())
        .await
        .unwrap();
    let r = kit
        .process_inbound(InboundMessage::text("ws", "u", "hello").in_room("r"))
        .await
        .unwrap();
    let first = r.event.unwrap();
    let tl = kit
        .timeline(&"r".into(), TimelineQuery::default())
        .await
        .unwrap();
    let last = tl.last().unwrap();
    assert_eq!(last.content.as_text(), Some("hi there"));
    assert_eq!(last.chain_depth, 1);
    assert_eq!(last.parent_event_id.as_ref(), Some(&first.id));
    assert_eq!(ws.delivered_texts(), vec!["hi there".to_string()]);
}

/// C-22, C-61: a MODIFY that nests composites too deeply is a hook failure:
/// the original event goes through unchanged and `hook_error` is emitted.
#[tokio::test]
async fn c22_hook_modify_with_too_deep_content_fails_open() {
    let a = RecordingChannel::websocket("a");
    let b = RecordingChannel::websocket("b");
    let kit = RoomKit::builder()
        .channel(a.arc())
        .channel(b.arc())
        .hook(HookRegistration::sync(
            HookTrigger::BeforeBroadcast,
            "nester",
            |input: HookInput| async move {
                let mut e = input.event().cloned().unwrap();
                let mut c = EventContent::text("deep");
                for _ in 0..7 {
                    c = EventContent::Composite(CompositeContent { parts: vec![c] });
                }
                e.content = c;
                Ok(HookResult::modify_event(e))
            },
        ))
        .build()
        .unwrap();
    let log = FrameworkLog::start(&kit);
    kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    kit.attach_channel(&"r".into(), &"a".into(), AttachOptions::default())
        .await
        .unwrap();
    kit.attach_channel(&"r".into(), &"b".into(), AttachOptions::default())
        .await
        .unwrap();
    let r = kit
        .process_inbound(InboundMessage::text("a", "u", "plain").in_room("r"))
        .await
        .unwrap();
    assert!(!r.blocked);
    assert_eq!(r.event.unwrap().content.as_text(), Some("plain"));
    assert_eq!(b.delivered_texts(), vec!["plain".to_string()]);
    assert!(log.names().await.contains(&"hook_error"));
}
