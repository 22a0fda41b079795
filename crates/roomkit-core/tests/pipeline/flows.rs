//! The Level 0 conversations of RFC Appendix B (B.1, B.2, B.4 to B.7) run
//! end to end through the library with recording channels.
//!
//! The RFC numbers timeline positions as if a room started empty. Here
//! every attach stores a CHANNEL_ATTACHED notice first (decision D6), so a
//! scenario's position `[n]` is found at `n + shift`, `shift` being the
//! number of attach notices its setup produced.

use std::sync::Arc;

use parking_lot::Mutex;
use roomkit_core::model::*;
use roomkit_core::store::RoomQuery;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::chain_depth::{chain, ping_pong};
use crate::support::*;

/// B.1: an SMS from an unknown number creates a room, an ON_ROOM_CREATED
/// hook attaches the AI, the AI answers, and the answer goes back by SMS.
/// Level 0 has no identity resolver: the event carries the participant
/// created lazily for the sender's number.
#[tokio::test]
async fn b1_sms_customer_and_ai() {
    let sms = RecordingChannel::sms("sms_main");
    let ai = RecordingChannel::ai("ai");
    let ai_view = Arc::new(Mutex::new(Vec::<(Vec<String>, Option<usize>)>::new()));
    let sink = ai_view.clone();
    ai.respond_with(move |e, ctx| {
        if e.event_type != EventType::Message {
            return ChannelOutput::empty();
        }
        let history = ctx
            .recent_events
            .iter()
            .filter(|e| e.event_type == EventType::Message)
            .map(|e| e.content.plain_text())
            .collect();
        let sms_max = ctx
            .binding(&ChannelId::from("sms_main"))
            .and_then(|b| b.capabilities.max_length);
        sink.lock().push((history, sms_max));
        ChannelOutput::respond(reply(
            "Bonjour Jean! Comment puis-je vous aider aujourd'hui?",
        ))
    });
    let attach_ai = HookRegistration::asynchronous(
        HookTrigger::OnRoomCreated,
        "attach_ai",
        |input: HookInput| async move {
            let room = input.room_id.clone().unwrap();
            input
                .kit
                .attach_channel(&room, &ChannelId::from("ai"), AttachOptions::default())
                .await
                .map_err(|e| HookError::new(e.to_string()))?;
            Ok(SideEffects::default())
        },
    );
    let (after, after_log) = recording_hook(HookTrigger::AfterBroadcast, "after");
    let kit = builder_with(&[&sms, &ai])
        .hook(attach_ai)
        .hook(after)
        .build()
        .unwrap();
    let log = FrameworkLog::start(&kit);

    let r = kit
        .process_inbound(InboundMessage::text("sms_main", "+15551234567", "Bonjour"))
        .await
        .unwrap();
    kit.idle().await;
    assert!(!r.blocked);

    let rooms = kit.list_rooms(&RoomQuery::default()).await.unwrap();
    assert_eq!(rooms.len(), 1);
    let room = &rooms[0];
    assert_eq!(room.status, RoomStatus::Active);
    let shift = 2; // sms_main and ai attached
    let tl = timeline(&kit, &room.id).await;
    assert_eq!(tl.len(), shift + 2);

    let participants = kit.list_participants(&room.id).await.unwrap();
    assert_eq!(participants.len(), 1);
    let jean = &participants[0];
    assert_eq!(jean.address.as_deref(), Some("+15551234567"));

    let first = &tl[shift];
    assert_eq!(first.event_type, EventType::Message);
    assert_eq!(first.content, EventContent::text("Bonjour"));
    assert_eq!(first.source.channel_id.as_str(), "sms_main");
    assert_eq!(first.source.participant_id.as_ref(), Some(&jean.id));
    assert_eq!(first.chain_depth, 0);
    assert_eq!(first.status, EventStatus::Delivered);
    assert_eq!(first.index, shift as u64);

    let answer = &tl[shift + 1];
    assert_eq!(answer.source.channel_id.as_str(), "ai");
    assert!(answer.content.plain_text().starts_with("Bonjour Jean!"));
    assert_eq!(answer.chain_depth, 1);
    assert_eq!(answer.parent_event_id.as_ref(), Some(&first.id));
    assert_eq!(answer.status, EventStatus::Delivered);

    // The AI was asked with the history so far and the SMS target limits.
    assert_eq!(
        ai_view.lock().clone(),
        vec![(vec!["Bonjour".to_owned()], Some(1600))]
    );
    // Exactly one SMS went out, the answer, within 1600 characters, in the
    // room whose only SMS participant is +15551234567.
    let sent = sms.delivered();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].id, answer.id);
    assert!(sent[0].content.plain_text().chars().count() <= 1600);

    let mut after_ids = after_log.event_ids();
    after_ids.sort();
    let mut want = vec![first.id.clone(), answer.id.clone()];
    want.sort();
    assert_eq!(after_ids, want);

    let room = kit.get_room(&room.id).await.unwrap();
    assert_eq!(room.event_count, shift as u64 + 2);
    assert_eq!(room.latest_index, Some(shift as u64 + 1));

    let events = log.events().await;
    assert!(events.contains(&FrameworkEvent::RoomCreated {
        room_id: room.id.clone(),
        organization_id: None,
    }));
    for id in [&first.id, &answer.id] {
        assert!(events.contains(&FrameworkEvent::EventProcessed {
            room_id: room.id.clone(),
            event_id: id.clone(),
        }));
    }
    assert!(events.contains(&FrameworkEvent::DeliverySucceeded {
        room_id: room.id.clone(),
        event_id: answer.id.clone(),
        channel_id: "sms_main".into(),
    }));
}

/// Whether a text contains a nine-digit SIN written `ddd-ddd-ddd`.
fn contains_sin(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.windows(11).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            3 | 7 => *c == '-',
            _ => c.is_ascii_digit(),
        })
    })
}

/// B.2: a BEFORE_BROADCAST hook blocks an SMS carrying a SIN, stores it
/// BLOCKED, injects one notice for the customer and one for the advisor,
/// records a compliance observation, and stops lower-priority hooks.
#[tokio::test]
async fn b2_block_and_inject_on_sensitive_data() {
    let sms = RecordingChannel::sms("sms_customer");
    let ws = RecordingChannel::websocket("ws_advisor");
    let ai = RecordingChannel::ai("ai");
    let kit = kit_with(&[&sms, &ws, &ai]);
    let room = room_with(&kit, "r", &["sms_customer", "ws_advisor", "ai"]).await;
    // Five prior events: three attach notices and two messages.
    for t in ["Bonjour", "Comment puis-je aider?"] {
        kit.process_inbound(msg("ws_advisor", "advisor", t, &room))
            .await
            .unwrap();
    }
    assert_eq!(kit.get_room(&room).await.unwrap().event_count, 5);

    let scanner = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "sensitivity_scanner",
        |input: HookInput| async move {
            if !contains_sin(&input.event().unwrap().content.plain_text()) {
                return Ok::<_, HookError>(HookResult::allow());
            }
            let mut data = Map::new();
            data.insert("pattern".into(), "SIN".into());
            Ok(HookResult::block("SIN detected")
                .inject(InjectedEvent::text(
                    "Message blocked. Do not send SIN by SMS.",
                    ["sms_customer"],
                ))
                .inject(InjectedEvent::text(
                    "Client attempted to send SIN. Blocked.",
                    ["ws_advisor"],
                ))
                .observation(Observation::new("compliance_violation", data)))
        },
    )
    .priority(0);
    let later = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "audit_everything",
        |_input: HookInput| async move {
            Ok::<_, HookError>(
                HookResult::allow().observation(Observation::new("audited", Map::new())),
            )
        },
    )
    .priority(10);
    kit.add_hook(scanner);
    kit.add_hook(later);
    for c in [&sms, &ws, &ai] {
        c.clear();
    }
    let log = FrameworkLog::start(&kit);

    let r = kit
        .process_inbound(msg(
            "sms_customer",
            "+15551234567",
            "Mon NAS est 123-456-789",
            &room,
        ))
        .await
        .unwrap();
    kit.idle().await;

    assert!(r.blocked);
    assert_eq!(r.reason, Some(BlockReason::Hook));
    let blocked = r.event.unwrap();
    assert_eq!(blocked.index, 5);
    assert_eq!(blocked.status, EventStatus::Blocked);
    assert_eq!(blocked.blocked_by.as_deref(), Some("sensitivity_scanner"));
    let stored = kit.get_event(&room, &blocked.id).await.unwrap();
    assert_eq!(stored.status, EventStatus::Blocked);

    assert!(ws.calls().iter().all(|c| c.event.id != blocked.id));
    assert!(ai.calls().iter().all(|c| c.event.id != blocked.id));
    assert!(ai.seen_message_texts().is_empty());
    assert_eq!(
        sms.delivered_texts(),
        vec!["Message blocked. Do not send SIN by SMS."]
    );
    assert_eq!(
        ws.delivered_texts(),
        vec!["Client attempted to send SIN. Blocked."]
    );
    // The notices follow the blocked event in the timeline.
    let tl = timeline(&kit, &room).await;
    assert_eq!(tl.len(), 8);
    for notice in &tl[6..] {
        assert_eq!(notice.source.channel_id.as_str(), "system");
        assert_eq!(
            notice.metadata.get("injected_by"),
            Some(&"sensitivity_scanner".into())
        );
    }

    let obs: Vec<String> = kit
        .list_observations(&room)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.observation_type)
        .collect();
    assert_eq!(obs, vec!["compliance_violation"]);
    assert!(log.events().await.contains(&FrameworkEvent::EventBlocked {
        room_id: room.clone(),
        event_id: blocked.id.clone(),
        hook_name: "sensitivity_scanner".into(),
    }));
    assert_eq!(
        kit.get_room(&room).await.unwrap().status,
        RoomStatus::Active
    );
}

/// B.4: two AIs answering each other stop at the default chain depth;
/// the depth-5 answer is stored BLOCKED, not delivered, reported, and its
/// side effects are kept. The variant with a limit of 2 and the attempt
/// to disable the limit are in the chain-depth tests (C-102).
#[tokio::test]
async fn b4_ai_to_ai_chain_with_depth_limit() {
    let p = ping_pong(|b| b).await;
    let log = FrameworkLog::start(&p.kit);
    p.kit
        .process_inbound(msg("human", "u", "Analyse Q3 please", &p.room))
        .await
        .unwrap();
    p.kit.idle().await;

    let rows = chain(&p).await;
    let shape: Vec<(u32, EventStatus)> = rows.iter().map(|r| (r.0, r.1)).collect();
    use EventStatus::{Blocked, Delivered};
    assert_eq!(
        shape,
        vec![
            (0, Delivered),
            (1, Delivered),
            (2, Delivered),
            (3, Delivered),
            (4, Delivered),
            (5, Blocked)
        ]
    );
    assert_eq!(rows[5].2.as_deref(), Some("event_chain_depth_limit"));
    let conv = conversation(&p.kit, &p.room).await;
    let sources: Vec<&str> = conv.iter().map(|e| e.source.channel_id.as_str()).collect();
    assert_eq!(
        sources,
        vec![
            "human",
            "analyst_ai",
            "writer_ai",
            "analyst_ai",
            "writer_ai",
            "analyst_ai"
        ]
    );
    // The WebSocket client got the four delivered AI messages only.
    let got: Vec<EventId> = p.human.delivered().into_iter().map(|e| e.id).collect();
    let want: Vec<EventId> = conv[1..5].iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, want);

    assert!(
        log.events()
            .await
            .contains(&FrameworkEvent::ChainDepthExceeded {
                room_id: p.room.clone(),
                channel_id: "analyst_ai".into(),
                depth: 5,
            })
    );
    let obs = p.kit.list_observations(&p.room).await.unwrap();
    assert!(obs.iter().any(|o| o.data["depth"] == 5));
    assert_eq!(
        p.kit
            .list_tasks(&p.room, &Default::default())
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        timeline(&p.kit, &p.room).await.last().unwrap().id,
        conv[5].id
    );
}

/// B.5: an advisor joins, the AI is muted, narrowed to whisper to the
/// advisor only, unmuted; its answers then reach the advisor and never
/// the customer, until its visibility is opened again.
#[tokio::test]
async fn b5_advisor_joins_ai_whispers() {
    let sms = RecordingChannel::sms("sms");
    let ai = RecordingChannel::ai("ai_support");
    let ws = RecordingChannel::websocket("ws_advisor");
    ai.respond_with(|e, _| {
        if e.event_type == EventType::Message && e.source.channel_id.as_str() == "sms" {
            let text = format!("About \"{}\": ...", e.content.plain_text());
            ChannelOutput::respond(reply(&text))
        } else {
            ChannelOutput::empty()
        }
    });
    let kit = kit_with(&[&sms, &ai, &ws]);
    let room = room_with(&kit, "r", &["sms", "ai_support"]).await;
    let shift = 2;
    let at = |rfc: u64| rfc + shift;
    let customer = |text: &str| msg("sms", "+15551234567", text, &room);
    // [0]-[3]: customer, AI, customer, AI.
    for t in ["Hi", "I want a loan"] {
        kit.process_inbound(customer(t)).await.unwrap();
    }
    let tl = timeline(&kit, &room).await;
    let depths: Vec<u32> = tl[shift as usize..].iter().map(|e| e.chain_depth).collect();
    assert_eq!(depths, vec![0, 1, 0, 1]);

    let last_type = |kit: RoomKit, room: RoomId| async move {
        let tl = timeline(&kit, &room).await;
        let e = tl.last().unwrap();
        (e.index, e.event_type)
    };
    attach(&kit, &room, "ws_advisor", AttachOptions::default()).await;
    assert_eq!(
        last_type(kit.clone(), room.clone()).await,
        (at(4), EventType::ChannelAttached)
    );
    let ai_id = ChannelId::from("ai_support");
    kit.mute_channel(&room, &ai_id).await.unwrap();
    assert_eq!(
        last_type(kit.clone(), room.clone()).await,
        (at(5), EventType::ChannelMuted)
    );
    let to_advisor = BindingUpdate {
        visibility: Some("ws_advisor".parse().unwrap()),
        ..BindingUpdate::default()
    };
    kit.update_binding(&room, &ai_id, to_advisor).await.unwrap();
    assert_eq!(
        last_type(kit.clone(), room.clone()).await,
        (at(6), EventType::ChannelUpdated)
    );
    kit.unmute_channel(&room, &ai_id).await.unwrap();
    assert_eq!(
        last_type(kit.clone(), room.clone()).await,
        (at(7), EventType::ChannelUnmuted)
    );
    kit.idle().await;
    sms.clear();
    ws.clear();
    ai.clear();

    // Step 5: the customer asks; the AI whispers to the advisor.
    let q = kit
        .process_inbound(customer("What rate can I get?"))
        .await
        .unwrap()
        .event
        .unwrap();
    assert_eq!(q.index, at(8));
    assert_eq!(ai.seen_message_texts(), vec!["What rate can I get?"]);
    let whisper = timeline(&kit, &room).await.pop().unwrap();
    assert_eq!(whisper.index, at(9));
    assert_eq!(whisper.source.channel_id, ai_id);
    assert_eq!(
        ws.delivered()
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        vec![q.id.clone(), whisper.id.clone()]
    );
    assert!(sms.delivered().is_empty());

    // Step 6: the advisor answers the customer.
    let advice = kit
        .process_inbound(msg("ws_advisor", "advisor", "4.2% for you", &room))
        .await
        .unwrap()
        .event
        .unwrap();
    assert_eq!(advice.index, at(10));
    assert_eq!(sms.delivered_texts(), vec!["4.2% for you"]);

    // Step 7: the AI speaks to everyone again.
    kit.update_binding(
        &room,
        &ai_id,
        BindingUpdate {
            visibility: Some(Visibility::All),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        last_type(kit.clone(), room.clone()).await,
        (at(11), EventType::ChannelUpdated)
    );

    // Step 8: the customer asks again and the AI's answer reaches them.
    let q2 = kit
        .process_inbound(customer("And for 10 years?"))
        .await
        .unwrap()
        .event
        .unwrap();
    assert_eq!(q2.index, at(12));
    let answer = timeline(&kit, &room).await.pop().unwrap();
    assert_eq!(answer.index, at(13));
    assert_eq!(answer.source.channel_id, ai_id);
    assert_eq!(
        sms.delivered()
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        vec![advice.id.clone(), answer.id.clone()]
    );

    // The customer's history never holds the whisper; the AI's does.
    let customer_view = kit
        .timeline(
            &room,
            TimelineQuery {
                visible_to: Some("sms".into()),
                ..TimelineQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(customer_view.iter().all(|e| e.id != whisper.id));
    assert!(sms.calls().iter().all(|c| c.event.id != whisper.id));
    let ai_ctx = kit.context_for(&room, &ai_id).await.unwrap();
    assert!(ai_ctx.recent_events.iter().any(|e| e.id == whisper.id));
}

/// The B.6 / B.7 room: the customer writes through `wa` (a WebSocket-like
/// transport standing in for WhatsApp), the agent through `ws_agent`
/// (supports edit and delete), plus an SMS mock and a recording AI.
struct EditRoom {
    kit: RoomKit,
    room: RoomId,
    ws: RecordingChannel,
    sms: RecordingChannel,
    ai: RecordingChannel,
    target: RoomEvent,
    updated: HookLog,
    deleted: HookLog,
    after: HookLog,
}

const CUSTOMER: &str = "+15551234567";
const SHIFT: u64 = 4; // wa, ws_agent, sms and ai attached

/// Builds the room with `count` messages at RFC positions 0.., the one at
/// `target_at` being the customer's "I need 5000$".
async fn edit_room(count: u64, target_at: u64) -> EditRoom {
    let wa = RecordingChannel::websocket("wa");
    let ws = RecordingChannel::websocket("ws_agent");
    let sms = RecordingChannel::sms("sms");
    let ai = RecordingChannel::ai("ai");
    let (on_updated, updated) = recording_hook(HookTrigger::OnEventUpdated, "updated");
    let (on_deleted, deleted) = recording_hook(HookTrigger::OnEventDeleted, "deleted");
    let (after_hook, after) = recording_hook(HookTrigger::AfterBroadcast, "after");
    let guard = HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "edit_guard",
        |input: HookInput| async move {
            let e = input.event().unwrap();
            match &e.content {
                EventContent::Edit(edit) if edit.new_content.plain_text().contains("1$") => {
                    Ok::<_, HookError>(HookResult::block("suspicious amount"))
                }
                _ => Ok(HookResult::allow()),
            }
        },
    );
    let kit = builder_with(&[&wa, &ws, &sms, &ai])
        .hook(on_updated)
        .hook(on_deleted)
        .hook(after_hook)
        .hook(guard)
        .build()
        .unwrap();
    let room = room_with(&kit, "r", &["wa", "ws_agent", "sms", "ai"]).await;
    let mut target = None;
    for k in 0..count {
        let m = if k == target_at {
            msg("wa", CUSTOMER, "I need 5000$", &room)
        } else if k % 2 == 0 {
            msg("wa", CUSTOMER, &format!("customer {k}"), &room)
        } else {
            msg("ws_agent", "agent", &format!("agent {k}"), &room)
        };
        let ev = kit.process_inbound(m).await.unwrap().event.unwrap();
        assert_eq!(ev.index, k + SHIFT);
        if k == target_at {
            target = Some(ev);
        }
    }
    kit.idle().await;
    for c in [&ws, &sms, &ai] {
        c.clear();
    }
    EditRoom {
        kit,
        room,
        ws,
        sms,
        ai,
        target: target.unwrap(),
        updated,
        deleted,
        after,
    }
}

impl EditRoom {
    async fn send(&self, sender: &str, content: EventContent) -> InboundResult {
        self.kit
            .process_inbound(inbound("wa", sender, content, &self.room))
            .await
            .unwrap()
    }

    async fn target_now(&self) -> Arc<RoomEvent> {
        self.kit
            .get_event(&self.room, &self.target.id)
            .await
            .unwrap()
    }
}

/// B.6: the customer edits an earlier message: the target is rewritten
/// and marked edited, the EDIT is stored at the next index, the WebSocket
/// agent gets it natively, the SMS gets "Correction: ...", the AI sees the
/// EDIT, ON_EVENT_UPDATED and AFTER_BROADCAST fire. Edits by someone else,
/// of a missing or foreign target, or blocked by a hook change nothing.
#[tokio::test]
async fn b6_edit_across_channels_with_fallback() {
    let f = edit_room(7, 3).await;
    let edit = edit_of(&f.target.id, "I need 50000$");
    let r = f.send(CUSTOMER, edit.clone()).await;
    f.kit.idle().await;
    assert!(!r.blocked, "{r:?}");
    let stored = r.event.unwrap();
    assert_eq!(stored.index, 7 + SHIFT);
    assert_eq!(stored.event_type, EventType::Edit);
    assert_eq!(stored.status, EventStatus::Delivered);

    let target = f.target_now().await;
    assert_eq!(target.content, EventContent::text("I need 50000$"));
    assert_eq!(target.metadata.get("edited"), Some(&true.into()));

    let ws_got = f.ws.delivered();
    assert_eq!(ws_got.len(), 1);
    assert_eq!(ws_got[0].content, edit);
    assert_eq!(f.sms.delivered_texts(), vec!["Correction: I need 50000$"]);
    let ai_seen = f.ai.seen();
    assert_eq!(ai_seen.len(), 1);
    assert_eq!(ai_seen[0].id, stored.id);
    assert_eq!(ai_seen[0].event_type, EventType::Edit);

    let updated = f.updated.events();
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].id, f.target.id);
    assert_eq!(updated[0].content, EventContent::text("I need 50000$"));
    assert!(f.after.event_ids().contains(&stored.id));

    // Negatives: another sender; a missing target; a foreign target; a
    // hook block (stored BLOCKED, no ON_EVENT_UPDATED).
    let count = f.kit.get_room(&f.room).await.unwrap().event_count;
    let r = f
        .send("+15559999999", edit_of(&f.target.id, "I need 1000000$"))
        .await;
    assert_eq!(r.reason, Some(BlockReason::NotAuthor));
    let r = f
        .send(CUSTOMER, edit_of(&EventId::from("evt_missing"), "x"))
        .await;
    assert_eq!(r.reason, Some(BlockReason::InvalidTarget));
    let other = room_with(&f.kit, "other", &["wa"]).await;
    let foreign = f
        .kit
        .process_inbound(msg("wa", CUSTOMER, "elsewhere", &other))
        .await
        .unwrap()
        .event
        .unwrap();
    let r = f.send(CUSTOMER, edit_of(&foreign.id, "moved")).await;
    assert_eq!(r.reason, Some(BlockReason::InvalidTarget));
    assert_eq!(f.kit.get_room(&f.room).await.unwrap().event_count, count);

    let r = f.send(CUSTOMER, edit_of(&f.target.id, "I need 1$")).await;
    assert!(r.blocked);
    assert_eq!(r.event.unwrap().status, EventStatus::Blocked);
    f.kit.idle().await;
    assert_eq!(
        f.target_now().await.content,
        EventContent::text("I need 50000$")
    );
    assert_eq!(f.updated.len(), 1);
}

/// B.7: the customer deletes an earlier message: the target is marked
/// deleted and stays, the DELETE is stored at the next index, the
/// WebSocket agent gets it natively, the SMS gets "[Message deleted]", the
/// AI sees the DELETE and ON_EVENT_DELETED fires. A SENDER delete by
/// someone else, or an ADMIN delete without authority, is refused first.
#[tokio::test]
async fn b7_delete_across_channels_with_fallback() {
    let f = edit_room(8, 5).await;
    let r = f
        .send("+15559999999", delete_of(&f.target.id, DeleteType::Sender))
        .await;
    assert_eq!(r.reason, Some(BlockReason::NotAuthor));
    let r = f
        .send("+15559999999", delete_of(&f.target.id, DeleteType::Admin))
        .await;
    assert_eq!(r.reason, Some(BlockReason::NotAuthor));
    assert!(f.target_now().await.metadata.get("deleted").is_none());

    let delete = delete_of(&f.target.id, DeleteType::Sender);
    let r = f.send(CUSTOMER, delete.clone()).await;
    f.kit.idle().await;
    assert!(!r.blocked, "{r:?}");
    let stored = r.event.unwrap();
    assert_eq!(stored.index, 8 + SHIFT);
    assert_eq!(stored.event_type, EventType::Delete);

    let target = f.target_now().await;
    assert_eq!(target.metadata.get("deleted"), Some(&true.into()));
    assert!(
        timeline(&f.kit, &f.room)
            .await
            .iter()
            .any(|e| e.id == f.target.id)
    );
    assert_eq!(f.ws.delivered().len(), 1);
    assert_eq!(f.ws.delivered()[0].content, delete);
    assert_eq!(f.sms.delivered_texts(), vec!["[Message deleted]"]);
    let ai_seen = f.ai.seen();
    assert_eq!(ai_seen.len(), 1);
    assert_eq!(ai_seen[0].event_type, EventType::Delete);
    let deleted = f.deleted.events();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].id, f.target.id);
    assert_eq!(deleted[0].metadata.get("deleted"), Some(&true.into()));
}
