//! EDIT and DELETE processing and direct mutation (RFC §10.3), checklist
//! items C-89 to C-96.

use std::sync::Arc;

use parking_lot::Mutex;
use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::support::*;

/// A room "r" with a WebSocket source `src` and a WebSocket target `ws`,
/// plus mutation-trigger recorders; alice has written "original".
struct Fixture {
    kit: RoomKit,
    room: RoomId,
    ws: RecordingChannel,
    original: RoomEvent,
    updated: HookLog,
    deleted: HookLog,
}

async fn fixture(hooks: Vec<HookRegistration>) -> Fixture {
    let src = RecordingChannel::websocket("src");
    let ws = RecordingChannel::websocket("ws");
    let (on_updated, updated) = recording_hook(HookTrigger::OnEventUpdated, "updated");
    let (on_deleted, deleted) = recording_hook(HookTrigger::OnEventDeleted, "deleted");
    let builder = hooks
        .into_iter()
        .fold(builder_with(&[&src, &ws]), |b, h| b.hook(h));
    let kit = builder.hook(on_updated).hook(on_deleted).build().unwrap();
    let room = room_with(&kit, "r", &["src", "ws"]).await;
    let original = kit
        .process_inbound(msg("src", "alice", "original", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    Fixture {
        kit,
        room,
        ws,
        original,
        updated,
        deleted,
    }
}

impl Fixture {
    async fn send(&self, sender: &str, content: EventContent) -> InboundResult {
        self.kit
            .process_inbound(inbound("src", sender, content, &self.room))
            .await
            .unwrap()
    }

    async fn target(&self) -> Arc<RoomEvent> {
        self.kit
            .get_event(&self.room, &self.original.id)
            .await
            .unwrap()
    }

    async fn count(&self) -> u64 {
        self.kit.get_room(&self.room).await.unwrap().event_count
    }
}

/// C-89: an EDIT or DELETE whose target does not exist, or lives in
/// another room, is rejected (invalid_target) and nothing is stored.
#[tokio::test]
async fn c89_missing_or_foreign_target_is_rejected() {
    let f = fixture(vec![]).await;
    let other = room_with(&f.kit, "other", &["src"]).await;
    let foreign = f
        .kit
        .process_inbound(msg("src", "alice", "elsewhere", &other))
        .await
        .unwrap()
        .event
        .unwrap();
    let before = f.count().await;
    for content in [
        edit_of(&EventId::from("evt_missing"), "x"),
        delete_of(&EventId::from("evt_missing"), DeleteType::Sender),
        edit_of(&foreign.id, "x"),
        delete_of(&foreign.id, DeleteType::Sender),
    ] {
        let r = f.send("alice", content).await;
        assert!(r.blocked);
        assert_eq!(r.reason, Some(BlockReason::InvalidTarget));
        assert!(r.event.is_none());
    }
    assert_eq!(f.count().await, before);
    let foreign_now = f.kit.get_event(&other, &foreign.id).await.unwrap();
    assert_eq!(foreign_now.content.plain_text(), "elsewhere");
    assert!(foreign_now.metadata.is_empty());
    f.kit.idle().await;
    assert_eq!(f.updated.len() + f.deleted.len(), 0);
}

/// C-90: a sender EDIT or SENDER DELETE from anyone but the original
/// author is rejected (not_author); the author's own is accepted.
#[tokio::test]
async fn c90_only_the_author_may_edit_or_sender_delete() {
    let f = fixture(vec![]).await;
    let before = f.count().await;
    let r = f.send("mallory", edit_of(&f.original.id, "hijacked")).await;
    assert_eq!(r.reason, Some(BlockReason::NotAuthor));
    let r = f
        .send("mallory", delete_of(&f.original.id, DeleteType::Sender))
        .await;
    assert_eq!(r.reason, Some(BlockReason::NotAuthor));
    assert_eq!(f.count().await, before);
    assert_eq!(f.target().await.content.plain_text(), "original");
    // The rejected sender left no participant record behind.
    let addresses: Vec<_> = f
        .kit
        .list_participants(&f.room)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|p| p.address)
        .collect();
    assert_eq!(addresses, vec!["alice".to_owned()]);

    let r = f.send("alice", edit_of(&f.original.id, "fixed")).await;
    assert!(!r.blocked, "{r:?}");
    assert_eq!(f.target().await.content.plain_text(), "fixed");
}

/// C-91: an ADMIN delete needs administrative authority: a member who is
/// not the author is rejected, an OWNER participant is accepted. A SYSTEM
/// delete is accepted from the system channel and rejected from a
/// channel's sender.
#[tokio::test]
async fn c91_admin_and_system_deletes_need_authority() {
    let f = fixture(vec![]).await;
    // bob is a plain member (he has spoken once).
    f.kit
        .process_inbound(msg("src", "bob", "hello", &f.room))
        .await
        .unwrap();
    let r = f
        .send("bob", delete_of(&f.original.id, DeleteType::Admin))
        .await;
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::NotAuthor));
    let r = f
        .send("bob", delete_of(&f.original.id, DeleteType::System))
        .await;
    assert_eq!(r.reason, Some(BlockReason::NotAuthor));
    assert!(f.target().await.metadata.get("deleted").is_none());

    f.kit
        .add_participant(
            &f.room,
            AddParticipant {
                role: ParticipantRole::Owner,
                channel_id: Some("src".into()),
                address: Some("boss".into()),
                ..AddParticipant::default()
            },
        )
        .await
        .unwrap();
    let r = f
        .send("boss", delete_of(&f.original.id, DeleteType::Admin))
        .await;
    assert!(!r.blocked, "{r:?}");
    assert_eq!(f.target().await.metadata.get("deleted"), Some(&true.into()));

    // A second message, deleted by the system.
    let second = f
        .kit
        .process_inbound(msg("src", "alice", "second", &f.room))
        .await
        .unwrap()
        .event
        .unwrap();
    let r = f
        .kit
        .send_event(SendEvent {
            content: Some(delete_of(&second.id, DeleteType::System)),
            ..SendEvent::text(f.room.clone(), "system", "")
        })
        .await
        .unwrap();
    assert!(!r.blocked, "{r:?}");
    let second = f.kit.get_event(&f.room, &second.id).await.unwrap();
    assert_eq!(second.metadata.get("deleted"), Some(&true.into()));
}

/// C-92: a successful EDIT replaces the target's content, marks it
/// edited, and is itself stored DELIVERED at its own index.
#[tokio::test]
async fn c92_edit_mutates_target_and_is_stored_with_its_own_index() {
    let f = fixture(vec![]).await;
    let before = f.count().await;
    let r = f.send("alice", edit_of(&f.original.id, "corrected")).await;
    assert!(!r.blocked);
    let edit = r.event.unwrap();
    assert_eq!(edit.event_type, EventType::Edit);
    assert_eq!(edit.status, EventStatus::Delivered);
    assert_eq!(edit.index, before);
    assert_eq!(f.count().await, before + 1);
    let target = f.target().await;
    assert_eq!(target.content, EventContent::text("corrected"));
    assert_eq!(target.metadata.get("edited"), Some(&true.into()));
    assert_eq!(target.index, f.original.index);
    let tl = timeline(&f.kit, &f.room).await;
    assert_eq!(tl.last().unwrap().id, edit.id);
}

/// C-93: a successful DELETE soft-marks the target deleted (it stays in
/// the timeline) and is itself stored.
#[tokio::test]
async fn c93_delete_soft_marks_target_and_is_stored() {
    let f = fixture(vec![]).await;
    let before = f.count().await;
    let r = f
        .send("alice", delete_of(&f.original.id, DeleteType::Sender))
        .await;
    let del = r.event.unwrap();
    assert_eq!(del.event_type, EventType::Delete);
    assert_eq!(del.status, EventStatus::Delivered);
    assert_eq!(del.index, before);
    let target = f.target().await;
    assert_eq!(target.metadata.get("deleted"), Some(&true.into()));
    assert_eq!(target.content.plain_text(), "original");
    let ids: Vec<EventId> = timeline(&f.kit, &f.room)
        .await
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert!(ids.contains(&f.original.id) && ids.contains(&del.id));
}

/// C-94: when BEFORE_BROADCAST blocks an EDIT or a DELETE, the target is
/// unchanged, the EDIT/DELETE is stored BLOCKED, nothing is delivered, and
/// neither mutation trigger fires.
#[tokio::test]
async fn c94_hook_blocked_edit_or_delete_leaves_target_untouched() {
    let freeze = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "freeze",
        |input: HookInput| async move {
            let t = input.event().unwrap().event_type;
            if matches!(t, EventType::Edit | EventType::Delete) {
                Ok::<_, HookError>(HookResult::block("history is frozen"))
            } else {
                Ok(HookResult::allow())
            }
        },
    );
    let f = fixture(vec![freeze]).await;
    f.ws.clear();
    let r = f.send("alice", edit_of(&f.original.id, "rewritten")).await;
    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::Hook));
    let stored = r.event.unwrap();
    assert_eq!(stored.status, EventStatus::Blocked);
    assert_eq!(stored.blocked_by.as_deref(), Some("freeze"));
    let r = f
        .send("alice", delete_of(&f.original.id, DeleteType::Sender))
        .await;
    assert!(r.blocked);

    let target = f.target().await;
    assert_eq!(target.content.plain_text(), "original");
    assert!(target.metadata.is_empty(), "{:?}", target.metadata);
    assert!(f.ws.delivered().is_empty());
    f.kit.idle().await;
    assert_eq!(f.updated.len(), 0);
    assert_eq!(f.deleted.len(), 0);
}

/// C-95: after a successful EDIT, ON_EVENT_UPDATED fires with the mutated
/// target; after a DELETE, ON_EVENT_DELETED; both once the room lock has
/// been released.
#[tokio::test]
async fn c95_mutation_triggers_fire_after_the_lock_with_the_mutated_target() {
    let locks = Arc::new(ProbeLocks::default());
    let lock_seen = Arc::new(Mutex::new(Vec::<(HookTrigger, bool, RoomEvent)>::new()));
    let hook = |trigger: HookTrigger| {
        let locks = locks.clone();
        let sink = lock_seen.clone();
        HookRegistration::asynchronous(trigger, "lock_probe", move |input: HookInput| {
            let held = locks.is_held();
            let sink = sink.clone();
            async move {
                sink.lock()
                    .push((input.trigger, held, input.event().unwrap().clone()));
                Ok(SideEffects::default())
            }
        })
    };
    let src = RecordingChannel::websocket("src");
    let kit = builder_with(&[&src])
        .lock_manager(locks.clone())
        .hook(hook(HookTrigger::OnEventUpdated))
        .hook(hook(HookTrigger::OnEventDeleted))
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["src"]).await;
    let original = kit
        .process_inbound(msg("src", "alice", "original", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    kit.process_inbound(inbound("src", "alice", edit_of(&original.id, "v2"), &room))
        .await
        .unwrap();
    kit.idle().await;
    kit.process_inbound(inbound(
        "src",
        "alice",
        delete_of(&original.id, DeleteType::Sender),
        &room,
    ))
    .await
    .unwrap();
    kit.idle().await;

    let seen = lock_seen.lock().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (trigger, held, ev) = &seen[0];
    assert_eq!(*trigger, HookTrigger::OnEventUpdated);
    assert!(!held, "ON_EVENT_UPDATED ran under the room lock");
    assert_eq!(ev.id, original.id);
    assert_eq!(ev.content, EventContent::text("v2"));
    assert_eq!(ev.metadata.get("edited"), Some(&true.into()));
    let (trigger, held, ev) = &seen[1];
    assert_eq!(*trigger, HookTrigger::OnEventDeleted);
    assert!(!held, "ON_EVENT_DELETED ran under the room lock");
    assert_eq!(ev.id, original.id);
    assert_eq!(ev.metadata.get("deleted"), Some(&true.into()));
}

/// C-96: update_event replaces the given fields wholesale with no edited
/// marker and fires ON_EVENT_UPDATED; a missing target is a no-op that
/// fires nothing.
#[tokio::test]
async fn c96_update_event_replaces_fields_without_edited_marker() {
    let f = fixture(vec![]).await;
    let mut meta = Map::new();
    meta.insert("reviewed".into(), true.into());
    let updated = f
        .kit
        .update_event(
            &f.room,
            &f.original.id,
            EventUpdate {
                content: Some(EventContent::text("redacted")),
                metadata: Some(meta.clone()),
                ..EventUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.content, EventContent::text("redacted"));
    assert_eq!(updated.metadata, meta);
    assert!(updated.metadata.get("edited").is_none());
    assert_eq!(f.target().await.content, EventContent::text("redacted"));
    let count = f.count().await;

    let missing = f
        .kit
        .update_event(
            &f.room,
            &EventId::from("evt_missing"),
            EventUpdate {
                content: Some(EventContent::text("x")),
                ..EventUpdate::default()
            },
        )
        .await
        .unwrap();
    assert!(missing.is_none());
    assert_eq!(f.count().await, count);
    f.kit.idle().await;
    assert_eq!(f.updated.event_ids(), vec![f.original.id.clone()]);
}

/// C-96: delete_event hard-deletes the target and, when cascading, every
/// reply below it, returns the deleted ids and fires ON_EVENT_DELETED for
/// each; without cascade only the target goes; a missing target is a no-op.
#[tokio::test]
async fn c96_delete_event_hard_deletes_with_cascade_to_replies() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    let echo = RecordingChannel::ai("echo");
    ai.respond_with(|e, _| match e.source.channel_id.as_str() {
        "ws" if e.event_type == EventType::Message => ChannelOutput::respond(reply("answer")),
        _ => ChannelOutput::empty(),
    });
    echo.respond_with(|e, _| match e.source.channel_id.as_str() {
        "ai" => ChannelOutput::respond(reply("echo")),
        _ => ChannelOutput::empty(),
    });
    let (on_deleted, deleted) = recording_hook(HookTrigger::OnEventDeleted, "deleted");
    let kit = builder_with(&[&ws, &ai, &echo])
        .hook(on_deleted)
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["ws", "ai", "echo"]).await;
    let q1 = kit
        .process_inbound(msg("ws", "u", "q1", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    let q2 = kit
        .process_inbound(msg("ws", "u", "q2", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    let conv = conversation(&kit, &room).await;
    assert_eq!(
        texts(&conv),
        vec!["q1", "answer", "echo", "q2", "answer", "echo"]
    );
    let count = kit.get_room(&room).await.unwrap().event_count;

    let mut gone = kit.delete_event(&room, &q1.id, true).await.unwrap();
    gone.sort();
    let mut want = vec![conv[0].id.clone(), conv[1].id.clone(), conv[2].id.clone()];
    want.sort();
    assert_eq!(gone, want);
    assert_eq!(
        texts(&conversation(&kit, &room).await),
        vec!["q2", "answer", "echo"]
    );

    let gone = kit.delete_event(&room, &q2.id, false).await.unwrap();
    assert_eq!(gone, vec![q2.id.clone()]);
    assert_eq!(
        texts(&conversation(&kit, &room).await),
        vec!["answer", "echo"]
    );

    let gone = kit
        .delete_event(&room, &EventId::from("evt_missing"), true)
        .await
        .unwrap();
    assert!(gone.is_empty());
    // Indexes are never reused after a hard delete.
    assert_eq!(kit.get_room(&room).await.unwrap().event_count, count);
    kit.idle().await;
    let mut fired = deleted.event_ids();
    fired.sort();
    let mut expected = want.clone();
    expected.push(q2.id.clone());
    expected.sort();
    assert_eq!(fired, expected);
}
