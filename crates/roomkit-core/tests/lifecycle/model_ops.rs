//! Property test: random sequences of binding, hook, status and send
//! operations against one room, with the timeline invariants and a small
//! reference model of the expected outcome checked after every step.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use roomkit_core::model::*;
use roomkit_core::*;
use roomkit_testkit::*;

use crate::util::*;

const CHANNELS: [&str; 4] = ["ws-a", "ws-b", "sms", "ai"];
const TEXTS: [&str; 4] = ["hello", "buy", "help", "bye"];
const AI_REPLY: &str = "ai reply";

#[derive(Debug, Clone)]
enum Op {
    Attach(usize),
    Detach(usize),
    Mute(usize),
    Unmute(usize),
    SetAccess(usize, Access),
    Send(usize, usize),
    BlockHook(usize),
    Close,
    Reopen,
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![
        Just(Access::ReadWrite),
        Just(Access::ReadOnly),
        Just(Access::WriteOnly),
        Just(Access::None),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let ch = 0..CHANNELS.len();
    let tx = 0..TEXTS.len();
    prop_oneof![
        3 => ch.clone().prop_map(Op::Attach),
        1 => ch.clone().prop_map(Op::Detach),
        1 => ch.clone().prop_map(Op::Mute),
        1 => ch.clone().prop_map(Op::Unmute),
        1 => (ch.clone(), access()).prop_map(|(c, a)| Op::SetAccess(c, a)),
        6 => (ch, tx.clone()).prop_map(|(c, t)| Op::Send(c, t)),
        1 => tx.prop_map(Op::BlockHook),
        1 => Just(Op::Close),
        1 => Just(Op::Reopen),
    ]
}

/// What the model believes about one binding.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    muted: bool,
    access: Access,
}

#[derive(Debug, Default, Clone)]
struct Model {
    bound: BTreeMap<&'static str, Bound>,
    closed: bool,
    blocked_texts: BTreeSet<&'static str>,
}

impl Model {
    /// The `blocked_by` the engine must give an event from `source` with
    /// `text`, or `None` when it must be delivered (hooks first, then
    /// read-only, then muted: D15).
    fn expected_block(&self, source: &str, text: &str) -> Option<String> {
        let b = self.bound.get(source)?;
        if self.blocked_texts.contains(text) {
            Some("hook".into())
        } else if !b.access.can_write() {
            Some("source_read_only".into())
        } else if b.muted {
            Some("source_muted".into())
        } else {
            None
        }
    }
}

async fn run(ops: Vec<Op>) {
    let chans: Vec<RecordingChannel> = vec![
        RecordingChannel::websocket("ws-a"),
        RecordingChannel::websocket("ws-b"),
        RecordingChannel::sms("sms"),
        RecordingChannel::ai("ai"),
    ];
    chans[3].respond_with(|e, _| {
        if e.event_type == EventType::Message && e.content.as_text() != Some(AI_REPLY) {
            ChannelOutput::respond(reply(AI_REPLY))
        } else {
            ChannelOutput::empty()
        }
    });
    let kit = kit_with(&chans.iter().collect::<Vec<_>>());
    let room = RoomId::from("r");
    kit.create_room(CreateRoom::with_id("r")).await.unwrap();
    let mut model = Model::default();
    let mut hooks = 0;

    for op in ops {
        let before = kit.get_room(&room).await.unwrap();
        let calls_before: Vec<usize> = chans.iter().map(|c| c.calls().len()).collect();
        let snapshot = model.clone();
        match &op {
            Op::Attach(c) => {
                let r = kit
                    .attach_channel(&room, &CHANNELS[*c].into(), AttachOptions::default())
                    .await;
                assert_eq!(r.is_ok(), !model.bound.contains_key(CHANNELS[*c]), "{r:?}");
                model.bound.entry(CHANNELS[*c]).or_insert(Bound {
                    muted: false,
                    access: Access::ReadWrite,
                });
            }
            Op::Detach(c) => {
                let r = kit.detach_channel(&room, &CHANNELS[*c].into()).await;
                assert_eq!(r.is_ok(), model.bound.remove(CHANNELS[*c]).is_some());
            }
            Op::Mute(c) | Op::Unmute(c) => {
                let mute = matches!(op, Op::Mute(_));
                let r = if mute {
                    kit.mute_channel(&room, &CHANNELS[*c].into()).await
                } else {
                    kit.unmute_channel(&room, &CHANNELS[*c].into()).await
                };
                match model.bound.get_mut(CHANNELS[*c]) {
                    Some(b) => {
                        assert!(r.unwrap().muted == mute);
                        b.muted = mute;
                    }
                    None => assert!(r.is_err()),
                }
            }
            Op::SetAccess(c, a) => {
                let r = kit
                    .update_binding(
                        &room,
                        &CHANNELS[*c].into(),
                        BindingUpdate {
                            access: Some(*a),
                            ..BindingUpdate::default()
                        },
                    )
                    .await;
                match model.bound.get_mut(CHANNELS[*c]) {
                    Some(b) => {
                        assert_eq!(r.unwrap().access, *a);
                        b.access = *a;
                    }
                    None => assert!(r.is_err()),
                }
            }
            Op::Send(c, t) => {
                let r = kit
                    .send_event(SendEvent::text("r", CHANNELS[*c], TEXTS[*t]))
                    .await;
                if model.closed {
                    assert_eq!(r.unwrap().reason, Some(BlockReason::RoomClosed));
                } else if !model.bound.contains_key(CHANNELS[*c]) {
                    assert!(matches!(r, Err(RoomKitError::ChannelNotAttached { .. })));
                } else {
                    let r = r.unwrap();
                    let want = model.expected_block(CHANNELS[*c], TEXTS[*t]);
                    assert_eq!(r.blocked, want.is_some(), "{op:?}: {r:?}");
                }
            }
            Op::BlockHook(t) => {
                hooks += 1;
                let text = TEXTS[*t];
                kit.add_room_hook(
                    room.clone(),
                    HookRegistration::sync(
                        HookTrigger::BeforeBroadcast,
                        format!("hook-{text}-{hooks}"),
                        move |input: HookInput| async move {
                            Ok(
                                if input.event().and_then(|e| e.content.as_text()) == Some(text) {
                                    HookResult::block("not allowed")
                                } else {
                                    HookResult::allow()
                                },
                            )
                        },
                    ),
                );
                model.blocked_texts.insert(text);
            }
            Op::Close => {
                kit.close_room(&room).await.unwrap();
                model.closed = true;
            }
            Op::Reopen => {
                kit.reopen_room(&room).await.unwrap();
                model.closed = false;
            }
        }

        // Structural invariants of the timeline.
        assert_timeline_invariants(&kit, "r").await;
        let after = kit.get_room(&room).await.unwrap();
        assert_eq!(
            after.status,
            if model.closed {
                RoomStatus::Closed
            } else {
                RoomStatus::Active
            }
        );
        // Nothing is stored while the room is closed.
        if snapshot.closed && !matches!(op, Op::Reopen) {
            assert_eq!(after.event_count, before.event_count, "{op:?} while closed");
        }
        // Every new event from a channel got the outcome its source's
        // binding (unchanged during a send) and the hooks dictate.
        let tl = timeline(&kit, "r").await;
        for e in tl.iter().skip(before.event_count as usize) {
            if e.source.channel_id == "system" {
                continue;
            }
            let text = e.content.as_text().unwrap_or_default();
            let want = snapshot.expected_block(e.source.channel_id.as_str(), text);
            match (&want, e.status) {
                (None, EventStatus::Delivered) => {}
                (Some(w), EventStatus::Blocked) if w == "hook" => {
                    assert!(
                        e.blocked_by.as_deref().unwrap().starts_with("hook-"),
                        "{e:?}"
                    )
                }
                (Some(w), EventStatus::Blocked) => {
                    assert_eq!(e.blocked_by.as_deref(), Some(w.as_str()), "{e:?}")
                }
                _ => panic!("{op:?}: expected {want:?}, got {e:?}"),
            }
        }
        // No channel ever receives its own event; during a send, message
        // deliveries reach only bound channels that may read.
        for (i, ch) in chans.iter().enumerate() {
            for call in &ch.calls()[calls_before[i]..] {
                assert_ne!(call.event.source.channel_id, CHANNELS[i], "{op:?}");
                if matches!(op, Op::Send(..)) && call.event.source.channel_id != "system" {
                    let b = snapshot.bound.get(CHANNELS[i]);
                    assert!(
                        b.is_some_and(|b| b.access.can_read()),
                        "{op:?}: {} got {:?} without read access",
                        CHANNELS[i],
                        call.event.content
                    );
                }
            }
        }
        // The store's bindings match the model.
        let bindings = kit.list_bindings(&room).await.unwrap();
        let actual: BTreeMap<String, Bound> = bindings
            .iter()
            .map(|b| {
                (
                    b.channel_id.to_string(),
                    Bound {
                        muted: b.muted,
                        access: b.access,
                    },
                )
            })
            .collect();
        let expected: BTreeMap<String, Bound> = model
            .bound
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        assert_eq!(actual, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// C-03, C-17, C-26: random operation sequences keep the timeline
    /// gap-free and consistent with its counters, store nothing while the
    /// room is closed, block what hooks and permissions forbid (naming the
    /// blocker), and never deliver an event back to its source.
    #[test]
    fn c26_random_operations_keep_timeline_invariants(ops in prop::collection::vec(op(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}
