//! Cross-cutting rules (checklist 3.12, C-104..C-113): framework events,
//! the room lock, I/O outside the lock, unsafe lock/store combinations,
//! idempotency, side effects, addressing, structured logging, the core's
//! dependency boundary and input validation.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use roomkit_core::hooks::SideEffects;
use roomkit_core::model::*;
use roomkit_core::store::RoomQuery;
use roomkit_core::*;
use roomkit_testkit::*;
use tokio::sync::mpsc;

use crate::content::nested;
use crate::util::*;

/// C-104: framework events reach every subscriber with their listed data
/// and never appear in a room timeline.
#[tokio::test]
async fn c104_framework_events_are_published_not_stored() {
    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let kit = RoomKit::new();
    let log_a = FrameworkLog::start(&kit);
    let log_b = FrameworkLog::start(&kit);
    kit.register_channel(ws.arc()).unwrap();
    kit.register_channel(other.arc()).unwrap();
    room_with(&kit, "r", &["ws", "other"]).await;
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "guard",
        |input: HookInput| async move {
            Ok(match input.event().and_then(|e| e.content.as_text()) {
                Some("bad") => HookResult::block("bad"),
                _ => HookResult::allow(),
            })
        },
    ));
    let ok = send(&kit, "r", "ws", "good").await.event.unwrap();
    let bad = send(&kit, "r", "ws", "bad").await.event.unwrap();

    let events = log_a.events().await;
    assert_eq!(events, log_b.events().await, "every subscriber sees all");
    for expected in [
        FrameworkEvent::ChannelRegistered {
            channel_id: "ws".into(),
            channel_type: ChannelType::Websocket,
        },
        FrameworkEvent::RoomCreated {
            room_id: "r".into(),
            organization_id: None,
        },
        FrameworkEvent::EventProcessed {
            room_id: "r".into(),
            event_id: ok.id.clone(),
        },
        FrameworkEvent::DeliverySucceeded {
            room_id: "r".into(),
            event_id: ok.id.clone(),
            channel_id: "other".into(),
        },
        FrameworkEvent::EventBlocked {
            room_id: "r".into(),
            event_id: bad.id.clone(),
            hook_name: "guard".into(),
        },
    ] {
        assert!(events.contains(&expected), "missing {expected:?}");
    }
    // The timeline holds the two lifecycle markers and the two messages,
    // nothing named after a framework event.
    let tl = timeline(&kit, "r").await;
    assert_eq!(tl.len(), 4);
    let names: Vec<&str> = events.iter().map(FrameworkEvent::name).collect();
    for e in &tl {
        assert!(matches!(
            e.event_type,
            EventType::ChannelAttached | EventType::Message
        ));
        if let EventContent::System(s) = &e.content {
            assert!(!names.contains(&s.code.as_str()), "{s:?}");
        }
    }
}

/// C-105: every commit in a room goes through the lock manager, and it
/// never has two holders at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c105_room_processing_is_serialized_by_lock_manager() {
    let locks = Arc::new(CountingLocks::default());
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    ai.always_reply("ok");
    let kit = RoomKit::builder()
        .lock_manager(locks.clone())
        .channel(ws.arc())
        .channel(ai.arc())
        .build()
        .unwrap();
    room_with(&kit, "r", &["ws", "ai"]).await;
    let held = locks.held.clone();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "sees-lock",
        move |_input: HookInput| {
            let held = held.clone();
            async move {
                // Sync hooks run inside the locked commit pass.
                if held.load(Ordering::SeqCst) != 1 {
                    return Ok(HookResult::block("lock not held"));
                }
                Ok(HookResult::allow())
            }
        },
    ));
    let before = locks.acquired.load(Ordering::SeqCst);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let k = kit.clone();
            tokio::spawn(async move { send(&k, "r", "ws", &format!("m{i}")).await })
        })
        .collect();
    for t in tasks {
        assert!(!t.await.unwrap().blocked);
    }
    // 50 messages and 50 replies, each its own locked pass.
    assert!(locks.acquired.load(Ordering::SeqCst) - before >= 100);
    assert_eq!(locks.max_held.load(Ordering::SeqCst), 1);
    assert_eq!(locks.held.load(Ordering::SeqCst), 0, "every lock released");
    assert!(
        timeline(&kit, "r")
            .await
            .iter()
            .all(|e| e.status == EventStatus::Delivered)
    );
    assert_timeline_invariants(&kit, "r").await;
}

/// C-106: a slow transport does not hold the room: the next message
/// commits with the next index while the first delivery is still running.
#[tokio::test(start_paused = true)]
async fn c106_slow_channel_does_not_delay_next_commit() {
    let ws = RecordingChannel::websocket("ws");
    let slow = RecordingChannel::sms("slow");
    let kit = kit_with(&[&ws, &slow]);
    room_with(&kit, "r", &["ws", "slow"]).await;
    settle().await;
    slow.clear();
    slow.delay(Duration::from_secs(3600));
    let mut commits = kit.subscribe_timeline();

    let k = kit.clone();
    let first = tokio::spawn(async move { send(&k, "r", "ws", "first").await });
    let c1 = commits.recv().await.unwrap();
    wait_until(|| slow.delivered().len() == 1).await;

    let k = kit.clone();
    let second = tokio::spawn(async move { send(&k, "r", "ws", "second").await });
    // Well before the slow delivery could end.
    let c2 = tokio::time::timeout(Duration::from_secs(60), commits.recv())
        .await
        .expect("second message must commit while the first is delivered")
        .unwrap();
    assert_eq!(c2.index, c1.index + 1);
    assert_eq!(c2.content.as_text(), Some("second"));
    assert!(!first.is_finished(), "first delivery still running");
    assert_eq!(slow.delivered().len(), 1, "lane keeps per-room order");

    assert!(!first.await.unwrap().blocked);
    assert!(!second.await.unwrap().blocked);
    assert_eq!(slow.delivered_texts(), vec!["first", "second"]);
}

/// C-106: while an AI is generating, another inbound message commits with
/// the next index; the AI's answer takes the index after it.
#[tokio::test(start_paused = true)]
async fn c106_ai_generation_happens_outside_the_lock() {
    let ws = RecordingChannel::websocket("ws");
    let ai = RecordingChannel::ai("ai");
    let kit = kit_with(&[&ws, &ai]);
    room_with(&kit, "r", &["ws", "ai"]).await;
    settle().await;
    ai.respond_with(|e, _| {
        if e.content.as_text() == Some("question") {
            ChannelOutput::respond(reply("answer"))
        } else {
            ChannelOutput::empty()
        }
    });
    ai.delay(Duration::from_secs(3));
    let mut commits = kit.subscribe_timeline();

    let k = kit.clone();
    let first = tokio::spawn(async move {
        k.process_inbound(InboundMessage::text("ws", "u", "question").in_room("r"))
            .await
    });
    let q = commits.recv().await.unwrap();
    wait_until(|| ai.seen_message_texts() == ["question"]).await;
    let other = kit.store().get_room(&"r".into()).await.unwrap().unwrap();
    assert_eq!(other.event_count, q.index + 1, "answer not yet committed");

    let k = kit.clone();
    let second = tokio::spawn(async move {
        k.process_inbound(InboundMessage::text("ws", "u", "meanwhile").in_room("r"))
            .await
    });
    let m = tokio::time::timeout(Duration::from_secs(1), commits.recv())
        .await
        .expect("commit while the AI generates")
        .unwrap();
    assert_eq!(m.content.as_text(), Some("meanwhile"));
    assert_eq!(m.index, q.index + 1);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    let texts = message_texts(&kit, "r").await;
    assert_eq!(texts, vec!["question", "meanwhile", "answer"]);
}

/// C-107: a store shared between processes with an in-process lock is
/// refused at build, unless explicitly allowed or the lock is distributed.
#[test]
fn c107_shared_store_with_in_memory_lock_refused() {
    let err = RoomKit::builder()
        .store(Arc::new(LoggingStore::shared()))
        .build()
        .unwrap_err();
    assert!(matches!(err, RoomKitError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("lock"), "{err}");

    assert!(
        RoomKit::builder()
            .store(Arc::new(LoggingStore::shared()))
            .allow_unsafe_locking()
            .build()
            .is_ok()
    );
    let distributed = CountingLocks::distributed();
    assert!(
        RoomKit::builder()
            .store(Arc::new(LoggingStore::shared()))
            .lock_manager(Arc::new(distributed))
            .build()
            .is_ok()
    );
    assert!(
        RoomKit::builder()
            .store(Arc::new(LoggingStore::default()))
            .build()
            .is_ok(),
        "an unshared store needs no distributed lock"
    );
}

/// C-108: a repeated idempotency key is not reprocessed: the original
/// event comes back as a duplicate, one event is stored, one send made,
/// hooks run once. Keys are scoped per room (D2).
#[tokio::test]
async fn c108_idempotency_key_processed_once() {
    let ws = RecordingChannel::websocket("ws");
    let sms = RecordingChannel::sms("sms");
    let kit = kit_with(&[&ws, &sms]);
    room_with(&kit, "r", &["ws", "sms"]).await;
    room_with(&kit, "r2", &["ws", "sms"]).await;
    let hook_runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hook_runs.clone();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "count",
        move |_input: HookInput| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok(HookResult::allow()) }
        },
    ));
    let msg = |room: &str| {
        let mut m = InboundMessage::text("ws", "alice", "pay").in_room(room);
        m.idempotency_key = Some("wh-1".into());
        m
    };
    let first = kit.process_inbound(msg("r")).await.unwrap();
    assert!(!first.blocked);
    let original = first.event.unwrap();
    let again = kit.process_inbound(msg("r")).await.unwrap();
    assert!(again.blocked);
    assert_eq!(again.reason, Some(BlockReason::Duplicate));
    assert_eq!(again.event.unwrap().id, original.id);
    assert_eq!(message_texts(&kit, "r").await, vec!["pay"]);
    assert_eq!(sms.delivered_texts(), vec!["pay"]);
    assert_eq!(hook_runs.load(Ordering::SeqCst), 1);

    // Another room has its own keys.
    let other = kit.process_inbound(msg("r2")).await.unwrap();
    assert!(!other.blocked);
    assert_ne!(other.event.unwrap().id, original.id);
}

/// C-108: concurrent submissions with one key store exactly one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c108_concurrent_duplicates_store_one_event() {
    let ws = RecordingChannel::websocket("ws");
    let kit = kit_with(&[&ws]);
    room_with(&kit, "r", &["ws"]).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let k = kit.clone();
            tokio::spawn(async move {
                let mut req = SendEvent::text("r", "ws", "once");
                req.idempotency_key = Some("same".into());
                k.send_event(req).await.unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut fresh = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.blocked {
            assert_eq!(r.reason, Some(BlockReason::Duplicate));
        } else {
            fresh += 1;
        }
        ids.insert(r.event.unwrap().id);
    }
    assert_eq!(fresh, 1);
    assert_eq!(ids.len(), 1, "every caller sees the same event");
    assert_eq!(message_texts(&kit, "r").await, vec!["once"]);
}

/// C-109: tasks and observations from hooks and channels are persisted
/// whatever the permissions (blocked by a hook, muted, read-only), with
/// their fields filled, and ON_TASK_CREATED fires for each task.
#[tokio::test(start_paused = true)]
async fn c109_side_effects_persisted_whatever_permissions() {
    let ws = RecordingChannel::websocket("ws");
    let muted_ai = RecordingChannel::ai("muted-ai");
    let ro_ai = RecordingChannel::ai("ro-ai");
    for ai in [&muted_ai, &ro_ai] {
        let name = ai.id().to_string();
        ai.respond_with(move |e, _| {
            if e.event_type == EventType::Message && e.source.channel_id == "ws" {
                reply_with_effects(
                    Some("ignored"),
                    vec![Task::new("review").with_title(name.clone())],
                    vec![Observation::new("sentiment", Map::new())],
                )
            } else {
                ChannelOutput::empty()
            }
        });
    }
    let kit = kit_with(&[&ws, &muted_ai, &ro_ai]);
    room_with(&kit, "r", &["ws", "muted-ai", "ro-ai"]).await;
    kit.mute_channel(&"r".into(), &"muted-ai".into())
        .await
        .unwrap();
    kit.update_binding(
        &"r".into(),
        &"ro-ai".into(),
        BindingUpdate {
            access: Some(Access::ReadOnly),
            ..BindingUpdate::default()
        },
    )
    .await
    .unwrap();
    kit.add_hook(HookRegistration::sync(
        HookTrigger::BeforeBroadcast,
        "compliance",
        |input: HookInput| async move {
            if input.event().and_then(|e| e.content.as_text()) == Some("card 4111") {
                Ok(HookResult::block("pci")
                    .task(Task::new("escalate").with_title("compliance"))
                    .observation(Observation::new("pci", Map::new())))
            } else {
                Ok(HookResult::allow())
            }
        },
    ));
    let (tx, mut rx) = mpsc::unbounded_channel();
    kit.add_hook(HookRegistration::asynchronous(
        HookTrigger::OnTaskCreated,
        "task-watch",
        move |input: HookInput| {
            let tx = tx.clone();
            async move {
                if let HookPayload::Task(t) = &input.payload {
                    let _ = tx.send(t.clone());
                }
                Ok(SideEffects::default())
            }
        },
    ));

    let blocked = send(&kit, "r", "ws", "card 4111").await;
    assert_eq!(
        blocked.event.unwrap().blocked_by.as_deref(),
        Some("compliance")
    );
    send(&kit, "r", "ws", "hello").await;

    let tasks = kit
        .list_tasks(&"r".into(), &Default::default())
        .await
        .unwrap();
    let mut titles: Vec<_> = tasks.iter().map(|t| t.title.clone().unwrap()).collect();
    titles.sort();
    assert_eq!(titles, ["compliance", "muted-ai", "ro-ai"]);
    for t in &tasks {
        assert!(!t.id.is_empty());
        assert_eq!(t.room_id, "r");
        assert_eq!(t.status, TaskStatus::Pending);
        assert!(t.created_by.is_some());
    }
    let by = |title: &str| {
        tasks
            .iter()
            .find(|t| t.title.as_deref() == Some(title))
            .unwrap()
            .created_by
            .clone()
            .unwrap()
    };
    assert_eq!(by("compliance"), "compliance");
    assert_eq!(by("muted-ai"), "muted-ai");

    let obs = kit.list_observations(&"r".into()).await.unwrap();
    assert_eq!(obs.len(), 3);
    let mut sources: Vec<_> = obs
        .iter()
        .map(|o| o.source_channel_id.as_ref().map(|c| c.to_string()))
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [None, Some("muted-ai".into()), Some("ro-ai".into())]
    );
    assert!(obs.iter().all(|o| !o.id.is_empty() && o.room_id == "r"));

    // The responses themselves were suppressed but kept (D5, D15).
    let tl = timeline(&kit, "r").await;
    let mut suppressed: Vec<_> = tl
        .iter()
        .filter(|e| e.content.as_text() == Some("ignored"))
        .map(|e| (e.status, e.blocked_by.clone().unwrap()))
        .collect();
    suppressed.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        suppressed,
        [
            (EventStatus::Blocked, "source_muted".to_owned()),
            (EventStatus::Blocked, "source_read_only".to_owned())
        ]
    );

    let mut fired = Vec::new();
    for _ in 0..3 {
        fired.push(recv(&mut rx).await.id);
    }
    fired.sort();
    let mut stored: Vec<_> = tasks.iter().map(|t| t.id.clone()).collect();
    stored.sort();
    assert_eq!(fired, stored, "ON_TASK_CREATED once per task");
}

/// C-110: `addressed_to` is stored, ignored by transport delivery, and
/// solicits exactly the named bound intelligence channels; `[]` asks none,
/// null asks all; it never hides what visibility shows.
#[tokio::test]
async fn c110_addressing_with_two_ais() {
    let ws = RecordingChannel::websocket("ws");
    let viewer = RecordingChannel::websocket("viewer");
    let ai1 = RecordingChannel::ai("ai1");
    let ai2 = RecordingChannel::ai("ai2");
    let kit = kit_with(&[&ws, &viewer, &ai1, &ai2]);
    room_with(&kit, "r", &["ws", "viewer", "ai1", "ai2"]).await;

    let cases: Vec<(&str, Option<Vec<&str>>, bool, bool)> = vec![
        ("to-all", None, true, true),
        ("to-ai1", Some(vec!["ai1"]), true, false),
        ("to-none", Some(vec![]), false, false),
        ("to-ghost", Some(vec!["ghost"]), false, false),
        ("to-ai2-ghost", Some(vec!["ai2", "ghost"]), false, true),
    ];
    for (text, to, want1, want2) in cases {
        let mut req = SendEvent::text("r", "ws", text);
        req.addressed_to = to
            .clone()
            .map(|v| v.into_iter().map(ChannelId::from).collect());
        let ev = kit.send_event(req).await.unwrap().event.unwrap();
        let stored = kit.get_event(&"r".into(), &ev.id).await.unwrap();
        assert_eq!(
            stored.addressed_to,
            to.map(|v| v.into_iter().map(ChannelId::from).collect::<Vec<_>>())
        );
        let seen = |ai: &RecordingChannel| ai.seen_message_texts().contains(&text.to_owned());
        assert_eq!(seen(&ai1), want1, "{text} ai1");
        assert_eq!(seen(&ai2), want2, "{text} ai2");
        assert!(
            viewer.delivered_texts().contains(&text.to_owned()),
            "{text}"
        );
    }
    // ai2's own view of the room still shows what was addressed to ai1.
    let view = kit
        .timeline(
            &"r".into(),
            TimelineQuery {
                visible_to: Some("ai2".into()),
                ..TimelineQuery::default()
            },
        )
        .await
        .unwrap();
    assert!(view.iter().any(|e| e.content.as_text() == Some("to-ai1")));
}

/// A writer that appends to a shared buffer (log capture).
#[derive(Clone, Default)]
struct Capture(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// C-111: the engine logs structured events under named targets, with
/// room_id, event_id, channel_id and chain_depth as fields.
#[tokio::test]
async fn c111_logs_are_structured_with_context_fields() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ws = RecordingChannel::websocket("ws");
    let other = RecordingChannel::websocket("other");
    let kit = kit_with(&[&ws, &other]);
    room_with(&kit, "room-log", &["ws", "other"]).await;
    let ev = send(&kit, "room-log", "ws", "logged").await.event.unwrap();

    let text = String::from_utf8(capture.0.lock().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let committed = lines
        .iter()
        .find(|l| {
            l["fields"]["message"] == "event committed" && l["fields"]["event_id"] == ev.id.as_str()
        })
        .unwrap_or_else(|| panic!("no commit log in {text}"));
    assert_eq!(committed["target"], "roomkit.core.framework");
    assert_eq!(committed["level"], "INFO");
    assert_eq!(committed["fields"]["room_id"], "room-log");
    assert_eq!(committed["fields"]["channel_id"], "ws");
    assert!(committed["fields"]["chain_depth"].is_number());
    // The delivery trace names the target channel and its latency.
    assert!(lines.iter().any(|l| {
        l["fields"]["event_id"] == ev.id.as_str()
            && l["fields"]["channel_id"] == "other"
            && l["fields"].get("latency_ms").is_some()
    }));
    // Engine logs use named loggers of the roomkit.* hierarchy, never the
    // module path.
    assert!(
        lines.iter().all(|l| !l["target"]
            .as_str()
            .unwrap_or("")
            .starts_with("roomkit_core")),
        "{text}"
    );
}

/// C-112: the core crate depends on no web framework, HTTP stack or
/// database driver.
#[test]
fn c112_core_has_no_web_framework_dependency() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section.contains("dependencies")
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            deps.push((section.clone(), name.trim().to_owned()));
        }
    }
    assert!(deps.iter().any(|(_, n)| n == "tokio"), "parsed: {deps:?}");
    for forbidden in [
        "axum",
        "hyper",
        "sqlx",
        "reqwest",
        "actix-web",
        "warp",
        "rocket",
        "tower-http",
        "rusqlite",
        "tokio-postgres",
        "tungstenite",
    ] {
        assert!(
            !deps
                .iter()
                .any(|(_, n)| n == forbidden || n.starts_with(&format!("{forbidden}-"))),
            "core depends on {forbidden}"
        );
    }
}

/// A channel that rejects every inbound payload.
struct Rejecting {
    id: ChannelId,
}

#[async_trait]
impl Channel for Rejecting {
    fn id(&self) -> &ChannelId {
        &self.id
    }
    fn channel_type(&self) -> ChannelType {
        ChannelType::Webhook
    }
    fn capabilities(&self) -> ChannelCapabilities {
        ChannelCapabilities::text_only()
    }
    async fn handle_inbound(
        &self,
        _message: &InboundMessage,
        _context: &RoomContext,
    ) -> Result<RoomEvent, ChannelError> {
        Err(ChannelError::InvalidInbound("signature missing".into()))
    }
}

/// C-113: invalid input is rejected with an error and stores nothing:
/// malformed JSON, unknown content fields, too-deep content, unknown
/// channels and rooms, a payload the channel rejects, missing content.
#[tokio::test]
async fn c113_invalid_input_rejected_nothing_stored() {
    for bad in [
        r#"{"channel_id":"ws","sender_id":"u","content":{"type":"text","text":"x","extra":1}}"#,
        r#"{"channel_id":"ws","sender_id":"u","content":{"type":"sticker","id":"x"}}"#,
        r#"{"channel_id":"ws","sender_id":"u"}"#,
        r#"{"channel_id":"ws","sender_id":"u","content":{"type":"text"}}"#,
        r#"{"channel_id":"ws","sender_id":"u","content":{"type":"text","text":"x"},"timestamp":"yesterday"}"#,
        r#"{"channel_id":"ws","sender_id":"u","content":{"type":"text","text":"x"}"#,
    ] {
        assert!(
            serde_json::from_str::<InboundMessage>(bad).is_err(),
            "accepted {bad}"
        );
    }

    let ws = RecordingChannel::websocket("ws");
    let kit = RoomKit::builder()
        .channel(ws.arc())
        .channel(Arc::new(Rejecting { id: "hook".into() }))
        .build()
        .unwrap();
    room_with(&kit, "r", &["ws", "hook"]).await;
    let before = kit.get_room(&"r".into()).await.unwrap().event_count;

    let err = kit
        .process_inbound(InboundMessage::text("nope", "u", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, RoomKitError::ChannelNotRegistered(_)));
    let err = kit
        .process_inbound(InboundMessage::text("ws", "u", "x").in_room("missing"))
        .await
        .unwrap_err();
    assert!(matches!(err, RoomKitError::RoomNotFound(_)));
    let err = kit
        .process_inbound(InboundMessage::text("hook", "u", "x").in_room("r"))
        .await
        .unwrap_err();
    assert!(matches!(err, RoomKitError::Channel { .. }), "{err:?}");
    let mut deep = InboundMessage::text("ws", "u", "").in_room("r");
    deep.content = nested(6);
    assert!(matches!(
        kit.process_inbound(deep).await.unwrap_err(),
        RoomKitError::Invalid(_)
    ));
    let mut empty = SendEvent::text("r", "ws", "");
    empty.content = None;
    assert!(matches!(
        kit.send_event(empty).await.unwrap_err(),
        RoomKitError::Invalid(_)
    ));

    assert_eq!(kit.get_room(&"r".into()).await.unwrap().event_count, before);
    assert_eq!(
        kit.list_rooms(&RoomQuery::default()).await.unwrap().len(),
        1
    );
    assert!(
        kit.list_participants(&"r".into()).await.unwrap().is_empty(),
        "no participant record for a rejected payload"
    );
}
