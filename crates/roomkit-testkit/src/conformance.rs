//! The store conformance suite (RFC §14): named checks every `Store` must
//! pass, run against a fresh store per check.
//!
//! ```ignore
//! let report = roomkit_testkit::conformance::run(|| async {
//!     Arc::new(MemoryStore::new()) as Arc<dyn Store>
//! }).await;
//! report.assert_all_passed();
//! ```
//!
//! Every check builds its own rooms, so a backend only needs to hand out a
//! store that starts empty. Timestamps carry nanoseconds, so a backend that
//! loses precision on the way through fails the round-trip checks.

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use roomkit_core::StoreError;
use roomkit_core::model::{
    Access, ChannelBinding, ChannelCapabilities, ChannelCategory, ChannelDirection, ChannelId,
    ChannelType, DeliveryResult, DeliveryResults, EventContent, EventId, EventSource, EventStatus,
    IdentificationStatus, Identity, IdentityId, Map, Observation, Participant, ParticipantId,
    ParticipantRole, ParticipantStatus, Room, RoomEvent, RoomId, RoomStatus, Task, TaskId,
    TaskStatus, Visibility,
};
use roomkit_core::store::{
    EventPatch, EventQuery, Reader, RoomPatch, RoomQuery, Store, StoreResult, TargetUpdate,
    TaskQuery,
};

/// Outcome of one check.
pub type CheckResult = Result<(), String>;

/// What a conformance run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Each check by name with its outcome, in run order.
    pub results: Vec<(&'static str, CheckResult)>,
}

impl Report {
    /// Names of the checks that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| *n)
            .collect()
    }

    /// The checks that failed, with why.
    pub fn failed(&self) -> Vec<(&'static str, String)> {
        self.results
            .iter()
            .filter_map(|(n, r)| r.as_ref().err().map(|e| (*n, e.clone())))
            .collect()
    }

    /// Panics with every failure listed when any check failed.
    ///
    /// # Panics
    /// When a check failed.
    pub fn assert_all_passed(&self) {
        let failed = self.failed();
        assert!(
            failed.is_empty(),
            "{} of {} store conformance checks failed:\n{}",
            failed.len(),
            self.results.len(),
            failed
                .iter()
                .map(|(n, e)| format!("  {n}: {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// The names of all checks, in the order [`run`] runs them.
pub const CHECKS: &[&str] = &[
    "room_round_trip",
    "room_create_conflict",
    "room_update_patch",
    "room_list_filters_and_paging",
    "room_find_latest",
    "room_list_timed",
    "room_delete_cascade",
    "event_commit_moves_counters",
    "event_round_trip_exact",
    "event_index_conflict",
    "event_duplicate_key",
    "event_duplicate_id",
    "event_missing_room",
    "event_target_update_atomic",
    "event_list_ranges",
    "event_list_reader_filter",
    "event_update",
    "event_hard_delete",
    "bindings",
    "participants",
    "identities_org_scoped",
    "tasks",
    "observations",
    "ownership",
    "concurrent_writers_gap_free",
    "counters_match_timeline",
];

/// Runs every check, each against a store `factory` makes fresh.
pub async fn run<F, Fut>(factory: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let mut report = Report::default();
    for name in CHECKS {
        let store = factory().await;
        let outcome = run_one(name, store).await;
        report.results.push((name, outcome));
    }
    report
}

/// Runs one named check against `store`.
pub async fn run_one(name: &str, s: Arc<dyn Store>) -> CheckResult {
    match name {
        "room_round_trip" => room_round_trip(s).await,
        "room_create_conflict" => room_create_conflict(s).await,
        "room_update_patch" => room_update_patch(s).await,
        "room_list_filters_and_paging" => room_list_filters_and_paging(s).await,
        "room_find_latest" => room_find_latest(s).await,
        "room_list_timed" => room_list_timed(s).await,
        "room_delete_cascade" => room_delete_cascade(s).await,
        "event_commit_moves_counters" => event_commit_moves_counters(s).await,
        "event_round_trip_exact" => event_round_trip_exact(s).await,
        "event_index_conflict" => event_index_conflict(s).await,
        "event_duplicate_key" => event_duplicate_key(s).await,
        "event_duplicate_id" => event_duplicate_id(s).await,
        "event_missing_room" => event_missing_room(s).await,
        "event_target_update_atomic" => event_target_update_atomic(s).await,
        "event_list_ranges" => event_list_ranges(s).await,
        "event_list_reader_filter" => event_list_reader_filter(s).await,
        "event_update" => event_update(s).await,
        "event_hard_delete" => event_hard_delete(s).await,
        "bindings" => bindings(s).await,
        "participants" => participants(s).await,
        "identities_org_scoped" => identities_org_scoped(s).await,
        "tasks" => tasks(s).await,
        "observations" => observations(s).await,
        "ownership" => ownership(s).await,
        "concurrent_writers_gap_free" => concurrent_writers_gap_free(s).await,
        "counters_match_timeline" => counters_match_timeline(s).await,
        other => Err(format!("no check named {other:?}")),
    }
}

// ---------------------------------------------------------------- helpers

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr, $what:expr) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err(format!("{}: got {:?}, expected {:?}", $what, l, r));
        }
    }};
}

/// Adds what a check was doing to a store error.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T> Ctx<T> for StoreResult<T> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: unexpected error {e}"))
    }
}

/// A timestamp with sub-millisecond digits, `n` steps after a fixed base.
pub fn ts(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(1_700_000_000_000_000_000 + n * 1_000_123_457)
}

/// A new active room.
pub fn room(id: &str, n: i64) -> Room {
    Room::new(RoomId::from(id), ts(n))
}

/// A DELIVERED text event from `channel` with the given index.
pub fn event(room: &str, index: u64, channel: &str) -> RoomEvent {
    let mut e = RoomEvent::text(
        EventSource::channel(
            ChannelId::from(channel),
            ChannelType::Websocket,
            ChannelDirection::Inbound,
        ),
        format!("message {index} in {room}"),
    );
    e.id = EventId::from(format!("{room}-e{index}-{channel}"));
    e.room_id = RoomId::from(room);
    e.index = index;
    e.status = EventStatus::Delivered;
    e.created_at = ts(100 + index as i64);
    e
}

/// A binding of `channel` to `room`.
pub fn binding(room: &str, channel: &str, category: ChannelCategory) -> ChannelBinding {
    ChannelBinding {
        channel_id: ChannelId::from(channel),
        room_id: RoomId::from(room),
        channel_type: if category == ChannelCategory::Intelligence {
            ChannelType::Ai
        } else {
            ChannelType::Websocket
        },
        category,
        direction: ChannelDirection::Bidirectional,
        access: Access::ReadWrite,
        muted: false,
        output_muted: false,
        visibility: Visibility::All,
        participant_id: None,
        last_read_index: None,
        attached_at: ts(7),
        capabilities: ChannelCapabilities::text_only(),
        rate_limit: None,
        retry_policy: None,
        metadata: Map::new(),
    }
}

/// A participant of `room` seen at `address` over SMS.
pub fn participant(room: &str, id: &str, address: &str) -> Participant {
    Participant {
        id: ParticipantId::from(id),
        room_id: RoomId::from(room),
        channel_id: ChannelId::from("sms"),
        display_name: Some(format!("Person {id}")),
        role: ParticipantRole::Member,
        status: ParticipantStatus::Active,
        identification: IdentificationStatus::Unknown,
        identity_id: None,
        candidates: None,
        connected_via: vec![ChannelId::from("sms")],
        external_id: None,
        resolved_at: None,
        resolved_by: None,
        joined_at: ts(9),
        metadata: Map::new(),
        address: Some(address.to_owned()),
        channel_type: Some(ChannelType::Sms),
    }
}

fn identity(id: &str, org: Option<&str>, sms: &[&str]) -> Identity {
    let mut addresses = std::collections::BTreeMap::new();
    addresses.insert(
        ChannelType::Sms,
        sms.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>(),
    );
    Identity {
        id: IdentityId::from(id),
        organization_id: org.map(str::to_owned),
        display_name: Some(id.to_uppercase()),
        channel_addresses: addresses,
        external_id: None,
        metadata: Map::new(),
    }
}

fn task(room: &str, id: &str, status: TaskStatus) -> Task {
    let mut t = Task::new("follow_up").with_title(format!("task {id}"));
    t.id = TaskId::from(id);
    t.room_id = RoomId::from(room);
    t.status = status;
    t.created_at = ts(11);
    t
}

fn meta(pairs: &[(&str, serde_json::Value)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn indexes(events: &[Arc<RoomEvent>]) -> Vec<u64> {
    events.iter().map(|e| e.index).collect()
}

fn ids(rooms: &[Room]) -> Vec<String> {
    rooms.iter().map(|r| r.id.to_string()).collect()
}

async fn seed(s: &Arc<dyn Store>, room_id: &str, n: u64) -> Result<(), String> {
    s.create_room(room(room_id, 1)).await.ctx("create_room")?;
    for i in 0..n {
        s.add_event(event(room_id, i, "ws"), None)
            .await
            .ctx("add_event")?;
    }
    Ok(())
}

async fn counters(s: &Arc<dyn Store>, room_id: &str) -> Result<(u64, Option<u64>), String> {
    let r = s
        .get_room(&RoomId::from(room_id))
        .await
        .ctx("get_room")?
        .ok_or_else(|| format!("room {room_id} vanished"))?;
    Ok((r.event_count, r.latest_index))
}

// ---------------------------------------------------------------- rooms

async fn room_round_trip(s: Arc<dyn Store>) -> CheckResult {
    let mut r = room("r1", 1);
    r.organization_id = Some("org-a".into());
    r.metadata = meta(&[("topic", "billing".into()), ("n", 3.into())]);
    r.timers.inactive_after_seconds = Some(60);
    r.closed_at = Some(ts(2));
    let created = s.create_room(r.clone()).await.ctx("create_room")?;
    ensure_eq!(created, r, "create_room returns the room");
    let got = s.get_room(&r.id).await.ctx("get_room")?;
    ensure_eq!(got, Some(r), "get_room returns what was stored");
    let missing = s.get_room(&RoomId::from("nope")).await.ctx("get_room")?;
    ensure!(missing.is_none(), "an unknown room reads as None");
    Ok(())
}

async fn room_create_conflict(s: Arc<dyn Store>) -> CheckResult {
    s.create_room(room("r1", 1)).await.ctx("create_room")?;
    match s.create_room(room("r1", 2)).await {
        Err(StoreError::Conflict { .. }) => {}
        other => {
            return Err(format!(
                "second create_room: expected Conflict, got {other:?}"
            ));
        }
    }
    let got = s.get_room(&RoomId::from("r1")).await.ctx("get_room")?;
    ensure_eq!(
        got.map(|r| r.created_at),
        Some(ts(1)),
        "the first room is kept"
    );
    Ok(())
}

async fn room_update_patch(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r1", 2).await?;
    let id = RoomId::from("r1");
    s.update_room(
        &id,
        &RoomPatch {
            metadata: Some(meta(&[("a", 1.into()), ("b", 2.into())])),
            ..RoomPatch::default()
        },
    )
    .await
    .ctx("update_room metadata")?;
    let patched = s
        .update_room(
            &id,
            &RoomPatch {
                status: Some(RoomStatus::Paused),
                merge_metadata: Some(meta(&[("a", serde_json::Value::Null), ("c", 3.into())])),
                inactive_after_seconds: Some(Some(30)),
                paused_at: Some(Some(ts(50))),
                updated_at: Some(ts(51)),
                ..RoomPatch::default()
            },
        )
        .await
        .ctx("update_room")?;
    ensure_eq!(patched.status, RoomStatus::Paused, "status");
    ensure_eq!(
        patched.metadata,
        meta(&[("b", 2.into()), ("c", 3.into())]),
        "merged metadata (null removes)"
    );
    ensure_eq!(patched.timers.inactive_after_seconds, Some(30), "timer");
    ensure_eq!(patched.timers.paused_at, Some(ts(50)), "paused_at");
    ensure_eq!(patched.updated_at, ts(51), "updated_at");
    ensure_eq!(patched.event_count, 2, "a patch leaves event_count alone");
    ensure_eq!(
        patched.latest_index,
        Some(1),
        "a patch leaves latest_index alone"
    );
    let reread = s.get_room(&id).await.ctx("get_room")?;
    ensure_eq!(reread, Some(patched), "the patch is stored");
    match s
        .update_room(&RoomId::from("nope"), &RoomPatch::default())
        .await
    {
        Err(StoreError::NotFound { .. }) => Ok(()),
        other => Err(format!(
            "update of an unknown room: expected NotFound, got {other:?}"
        )),
    }
}

async fn room_list_filters_and_paging(s: Arc<dyn Store>) -> CheckResult {
    // Created out of id order, so the listing order must come from the ids.
    for (id, org, n) in [
        ("r3", "a", 1),
        ("r1", "a", 2),
        ("r5", "b", 3),
        ("r2", "b", 4),
        ("r4", "a", 5),
    ] {
        let mut r = room(id, n);
        r.organization_id = Some(org.into());
        s.create_room(r).await.ctx("create_room")?;
    }
    s.update_room(
        &RoomId::from("r4"),
        &RoomPatch {
            status: Some(RoomStatus::Closed),
            ..RoomPatch::default()
        },
    )
    .await
    .ctx("update_room")?;
    let all = s
        .list_rooms(&RoomQuery::default())
        .await
        .ctx("list_rooms")?;
    ensure_eq!(
        ids(&all),
        ["r1", "r2", "r3", "r4", "r5"],
        "all rooms in id order"
    );
    let org_a = s
        .list_rooms(&RoomQuery {
            organization_id: Some("a".into()),
            ..RoomQuery::default()
        })
        .await
        .ctx("list_rooms org")?;
    ensure_eq!(ids(&org_a), ["r1", "r3", "r4"], "rooms of org a");
    let active_a = s
        .list_rooms(&RoomQuery {
            organization_id: Some("a".into()),
            status: Some(RoomStatus::Active),
            ..RoomQuery::default()
        })
        .await
        .ctx("list_rooms org+status")?;
    ensure_eq!(ids(&active_a), ["r1", "r3"], "active rooms of org a");
    let page = s
        .list_rooms(&RoomQuery {
            after: Some(RoomId::from("r2")),
            limit: Some(2),
            ..RoomQuery::default()
        })
        .await
        .ctx("list_rooms page")?;
    ensure_eq!(ids(&page), ["r3", "r4"], "page after r2, limit 2");
    let first_b = s
        .find_room(&RoomQuery {
            organization_id: Some("b".into()),
            ..RoomQuery::default()
        })
        .await
        .ctx("find_room")?;
    ensure_eq!(
        first_b.map(|r| r.id.to_string()),
        Some("r2".to_owned()),
        "find_room"
    );
    let none = s
        .find_room(&RoomQuery {
            organization_id: Some("zzz".into()),
            ..RoomQuery::default()
        })
        .await
        .ctx("find_room none")?;
    ensure!(none.is_none(), "find_room without a match is None");
    Ok(())
}

async fn room_find_latest(s: Arc<dyn Store>) -> CheckResult {
    for (id, n) in [("a", 5), ("b", 9), ("c", 9), ("d", 1)] {
        let mut r = room(id, n);
        r.organization_id = Some(if id == "c" { "other" } else { "org" }.into());
        s.create_room(r).await.ctx("create_room")?;
    }
    let latest = s
        .find_latest_room(&RoomQuery::default())
        .await
        .ctx("find_latest_room")?;
    ensure_eq!(
        latest.map(|r| r.id.to_string()),
        Some("c".to_owned()),
        "newest room, ties broken by the larger id"
    );
    let latest_org = s
        .find_latest_room(&RoomQuery {
            organization_id: Some("org".into()),
            ..RoomQuery::default()
        })
        .await
        .ctx("find_latest_room org")?;
    ensure_eq!(
        latest_org.map(|r| r.id.to_string()),
        Some("b".to_owned()),
        "newest room of org"
    );
    Ok(())
}

async fn room_list_timed(s: Arc<dyn Store>) -> CheckResult {
    let mut timed = room("t1", 1);
    timed.timers.inactive_after_seconds = Some(10);
    let mut paused = room("t2", 1);
    paused.timers.closed_after_seconds = Some(10);
    paused.status = RoomStatus::Paused;
    let mut closed = room("t3", 1);
    closed.timers.inactive_after_seconds = Some(10);
    closed.status = RoomStatus::Closed;
    for r in [timed, paused, closed, room("plain", 1)] {
        s.create_room(r).await.ctx("create_room")?;
    }
    let mut got = ids(&s.list_timed_rooms().await.ctx("list_timed_rooms")?);
    got.sort();
    ensure_eq!(got, ["t1", "t2"], "timed ACTIVE and PAUSED rooms");
    // Configuring a timer later makes a room timed.
    s.update_room(
        &RoomId::from("plain"),
        &RoomPatch {
            inactive_after_seconds: Some(Some(5)),
            ..RoomPatch::default()
        },
    )
    .await
    .ctx("update_room")?;
    let n = s.list_timed_rooms().await.ctx("list_timed_rooms")?.len();
    ensure_eq!(n, 3, "timed rooms after configuring one");
    Ok(())
}

async fn room_delete_cascade(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "gone", 0).await?;
    seed(&s, "kept", 1).await?;
    let id = RoomId::from("gone");
    let mut keyed = event("gone", 0, "ws");
    keyed.idempotency_key = Some("k1".into());
    s.add_event(keyed.clone(), None).await.ctx("add_event")?;
    s.add_event(event("gone", 1, "ws"), None)
        .await
        .ctx("add_event")?;
    s.create_binding(binding("gone", "ws", ChannelCategory::Transport))
        .await
        .ctx("create_binding")?;
    s.create_participant(participant("gone", "p1", "+1555"))
        .await
        .ctx("create_participant")?;
    s.create_task(task("gone", "t-gone", TaskStatus::Pending))
        .await
        .ctx("create_task")?;
    let mut obs = Observation::new("sentiment", meta(&[("score", 1.into())]));
    obs.room_id = id.clone();
    s.create_observation(obs).await.ctx("create_observation")?;

    ensure!(
        s.delete_room(&id).await.ctx("delete_room")?,
        "delete_room reports the room existed"
    );
    ensure!(
        s.get_room(&id).await.ctx("get_room")?.is_none(),
        "room is gone"
    );
    ensure!(
        s.get_event(&keyed.id).await.ctx("get_event")?.is_none(),
        "its events are gone"
    );
    ensure!(
        s.find_event_by_idempotency_key(&id, "k1")
            .await
            .ctx("find_event_by_idempotency_key")?
            .is_none(),
        "its idempotency keys are gone"
    );
    ensure!(
        s.list_bindings(&id).await.ctx("list_bindings")?.is_empty(),
        "its bindings are gone"
    );
    ensure!(
        s.list_participants(&id)
            .await
            .ctx("list_participants")?
            .is_empty(),
        "its participants are gone"
    );
    ensure!(
        s.get_task(&TaskId::from("t-gone"))
            .await
            .ctx("get_task")?
            .is_none(),
        "its tasks are gone"
    );
    ensure!(
        s.list_observations(&id)
            .await
            .ctx("list_observations")?
            .is_empty(),
        "its observations are gone"
    );
    ensure!(
        s.rooms_with_binding(&ChannelId::from("ws"))
            .await
            .ctx("rooms_with_binding")?
            .is_empty(),
        "no binding index entry survives"
    );
    ensure!(
        !s.delete_room(&id).await.ctx("delete_room again")?,
        "second delete reports false"
    );
    ensure_eq!(
        counters(&s, "kept").await?,
        (1, Some(0)),
        "other rooms are untouched"
    );

    // The id can be used again, from a clean slate.
    s.create_room(room("gone", 3)).await.ctx("re-create room")?;
    ensure_eq!(
        counters(&s, "gone").await?,
        (0, None),
        "a re-created room starts empty"
    );
    let mut again = event("gone", 0, "ws");
    again.id = EventId::from("gone-again");
    again.idempotency_key = Some("k1".into());
    s.add_event(again, None)
        .await
        .ctx("add_event into the re-created room")?;
    Ok(())
}

// ---------------------------------------------------------------- events

async fn event_commit_moves_counters(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    ensure_eq!(counters(&s, "r").await?, (0, None), "empty room");
    s.add_event(event("r", 0, "ws"), None).await.ctx("add 0")?;
    ensure_eq!(counters(&s, "r").await?, (1, Some(0)), "after one event");
    let r = s.get_room(&RoomId::from("r")).await.ctx("get_room")?;
    ensure_eq!(
        r.and_then(|r| r.timers.last_activity_at),
        Some(ts(100)),
        "a DELIVERED event sets last_activity_at"
    );
    let mut blocked = event("r", 1, "ws");
    blocked.status = EventStatus::Blocked;
    blocked.blocked_by = Some("hook".into());
    s.add_event(blocked, None).await.ctx("add blocked")?;
    let r = s.get_room(&RoomId::from("r")).await.ctx("get_room")?;
    let r = r.ok_or("room vanished")?;
    ensure_eq!(
        (r.event_count, r.latest_index),
        (2, Some(1)),
        "a BLOCKED event takes an index too"
    );
    ensure_eq!(
        r.timers.last_activity_at,
        Some(ts(100)),
        "a BLOCKED event leaves last_activity_at alone"
    );
    let stored = s.add_event(event("r", 2, "ws"), None).await.ctx("add 2")?;
    ensure_eq!(stored.index, 2, "returned event keeps its index");
    ensure_eq!(counters(&s, "r").await?, (3, Some(2)), "after three events");
    Ok(())
}

async fn event_round_trip_exact(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    let mut e = event("r", 0, "ws");
    e.visibility = Visibility::Channels(vec![ChannelId::from("a"), ChannelId::from("b")]);
    e.addressed_to = Some(vec![ChannelId::from("ai")]);
    e.chain_depth = 2;
    e.parent_event_id = Some(EventId::from("parent"));
    e.correlation_id = Some("corr".into());
    e.idempotency_key = Some("key-0".into());
    e.metadata = meta(&[("nested", serde_json::json!({"a": [1, 2, {"b": null}]}))]);
    e.channel_data = meta(&[("thread", "t-9".into())]);
    e.source.raw_payload = meta(&[("raw", "payload".into())]);
    e.source.participant_id = Some(ParticipantId::from("p1"));
    let mut results = DeliveryResults::new();
    results.insert(
        ChannelId::from("sms"),
        DeliveryResult::sent(ChannelId::from("sms"), Some("SM1".into())),
    );
    e.delivery_results = results;
    let returned = s.add_event(e.clone(), None).await.ctx("add_event")?;
    ensure_eq!(*returned, e, "add_event returns the event");
    let got = s.get_event(&e.id).await.ctx("get_event")?;
    ensure_eq!(
        got.as_deref(),
        Some(&e),
        "get_event returns exactly what was stored"
    );
    let by_key = s
        .find_event_by_idempotency_key(&e.room_id, "key-0")
        .await
        .ctx("find_event_by_idempotency_key")?;
    ensure_eq!(by_key.as_deref(), Some(&e), "lookup by idempotency key");
    let listed = s
        .list_events(&e.room_id, &EventQuery::default())
        .await
        .ctx("list_events")?;
    ensure_eq!(
        listed.first().map(|x| &**x),
        Some(&e),
        "list_events returns it"
    );
    ensure!(
        s.get_event(&EventId::from("missing"))
            .await
            .ctx("get_event")?
            .is_none(),
        "unknown event reads as None"
    );
    Ok(())
}

async fn event_index_conflict(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    match s.add_event(event("r", 1, "ws"), None).await {
        Err(StoreError::IndexConflict {
            index: 1,
            expected: 0,
            ..
        }) => {}
        other => {
            return Err(format!(
                "index 1 into an empty room: expected IndexConflict(expected 0), got {other:?}"
            ));
        }
    }
    s.add_event(event("r", 0, "ws"), None).await.ctx("add 0")?;
    let mut dup = event("r", 0, "other");
    dup.id = EventId::from("dup-index");
    match s.add_event(dup.clone(), None).await {
        Err(StoreError::IndexConflict {
            index: 0,
            expected: 1,
            ..
        }) => {}
        other => {
            return Err(format!(
                "index 0 again: expected IndexConflict(expected 1), got {other:?}"
            ));
        }
    }
    ensure!(
        s.get_event(&dup.id).await.ctx("get_event")?.is_none(),
        "refused event not stored"
    );
    ensure_eq!(
        counters(&s, "r").await?,
        (1, Some(0)),
        "counters unchanged by refusals"
    );
    Ok(())
}

async fn event_duplicate_key(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    seed(&s, "r2", 0).await?;
    let mut first = event("r", 0, "ws");
    first.idempotency_key = Some("k".into());
    s.add_event(first.clone(), None).await.ctx("add first")?;
    let mut second = event("r", 1, "ws");
    second.idempotency_key = Some("k".into());
    match s.add_event(second.clone(), None).await {
        Err(StoreError::DuplicateKey { key, .. }) if key == "k" => {}
        other => return Err(format!("reused key: expected DuplicateKey, got {other:?}")),
    }
    ensure!(
        s.get_event(&second.id).await.ctx("get_event")?.is_none(),
        "duplicate not stored"
    );
    ensure_eq!(
        counters(&s, "r").await?,
        (1, Some(0)),
        "counters unchanged by a duplicate"
    );
    let found = s
        .find_event_by_idempotency_key(&RoomId::from("r"), "k")
        .await
        .ctx("find_event_by_idempotency_key")?;
    ensure_eq!(
        found.map(|e| e.id.clone()),
        Some(first.id.clone()),
        "the key finds the original"
    );
    // Keys are scoped per room.
    let mut other_room = event("r2", 0, "ws");
    other_room.idempotency_key = Some("k".into());
    s.add_event(other_room, None)
        .await
        .ctx("same key in another room")?;
    // Events without a key never collide.
    s.add_event(event("r", 1, "ws"), None).await.ctx("no key")?;
    s.add_event(event("r", 2, "ws"), None)
        .await
        .ctx("no key again")?;
    Ok(())
}

async fn event_duplicate_id(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 1).await?;
    let mut again = event("r", 1, "x");
    again.id = event("r", 0, "ws").id;
    match s.add_event(again, None).await {
        Err(StoreError::Conflict { .. }) => {}
        other => return Err(format!("reused event id: expected Conflict, got {other:?}")),
    }
    ensure_eq!(counters(&s, "r").await?, (1, Some(0)), "counters unchanged");
    Ok(())
}

async fn event_missing_room(s: Arc<dyn Store>) -> CheckResult {
    match s.add_event(event("nowhere", 0, "ws"), None).await {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "event into an unknown room: expected NotFound, got {other:?}"
            ));
        }
    }
    match s
        .list_events(&RoomId::from("nowhere"), &EventQuery::default())
        .await
    {
        Err(StoreError::NotFound { .. }) => Ok(()),
        other => Err(format!(
            "timeline of an unknown room: expected NotFound, got {other:?}"
        )),
    }
}

async fn event_target_update_atomic(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 1).await?;
    seed(&s, "elsewhere", 1).await?;
    let target = event("r", 0, "ws").id;
    let patch = EventPatch {
        merge_metadata: Some(meta(&[("edited", true.into())])),
        content: Some(EventContent::text("edited text")),
        ..EventPatch::default()
    };
    s.add_event(
        event("r", 1, "ws"),
        Some(TargetUpdate {
            event_id: target.clone(),
            patch: patch.clone(),
        }),
    )
    .await
    .ctx("add with target")?;
    let t = s
        .get_event(&target)
        .await
        .ctx("get target")?
        .ok_or("target vanished")?;
    ensure_eq!(
        t.metadata.get("edited"),
        Some(&serde_json::Value::Bool(true)),
        "target patched"
    );
    ensure_eq!(
        t.content,
        EventContent::text("edited text"),
        "target content replaced"
    );

    // A missing target refuses the whole commit.
    let lost = event("r", 2, "ws");
    match s
        .add_event(
            lost.clone(),
            Some(TargetUpdate {
                event_id: EventId::from("missing"),
                patch: patch.clone(),
            }),
        )
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => return Err(format!("missing target: expected NotFound, got {other:?}")),
    }
    ensure!(
        s.get_event(&lost.id).await.ctx("get_event")?.is_none(),
        "nothing stored for a missing target"
    );
    ensure_eq!(
        counters(&s, "r").await?,
        (2, Some(1)),
        "counters unchanged for a missing target"
    );

    // A target in another room is not a target of this room.
    match s
        .add_event(
            lost.clone(),
            Some(TargetUpdate {
                event_id: event("elsewhere", 0, "ws").id,
                patch: patch.clone(),
            }),
        )
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "target in another room: expected NotFound, got {other:?}"
            ));
        }
    }

    // A refused index leaves the target untouched.
    let second_target = event("r", 1, "ws").id;
    match s
        .add_event(
            event("r", 7, "ws"),
            Some(TargetUpdate {
                event_id: second_target.clone(),
                patch,
            }),
        )
        .await
    {
        Err(StoreError::IndexConflict { .. }) => {}
        other => {
            return Err(format!(
                "bad index with target: expected IndexConflict, got {other:?}"
            ));
        }
    }
    let t2 = s
        .get_event(&second_target)
        .await
        .ctx("get_event")?
        .ok_or("event vanished")?;
    ensure!(
        t2.metadata.get("edited").is_none(),
        "a refused commit does not patch its target"
    );
    Ok(())
}

async fn event_list_ranges(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 10).await?;
    let id = RoomId::from("r");
    let cases: Vec<(EventQuery, Vec<u64>)> = vec![
        (EventQuery::default(), (0..10).collect()),
        (
            EventQuery {
                after_index: Some(6),
                ..Default::default()
            },
            vec![7, 8, 9],
        ),
        (
            EventQuery {
                before_index: Some(3),
                ..Default::default()
            },
            vec![0, 1, 2],
        ),
        (
            EventQuery {
                after_index: Some(2),
                before_index: Some(6),
                ..Default::default()
            },
            vec![3, 4, 5],
        ),
        (
            EventQuery {
                limit: Some(4),
                ..Default::default()
            },
            vec![0, 1, 2, 3],
        ),
        (
            EventQuery {
                after_index: Some(4),
                limit: Some(2),
                ..Default::default()
            },
            vec![5, 6],
        ),
        (
            EventQuery {
                last: Some(3),
                ..Default::default()
            },
            vec![7, 8, 9],
        ),
        (
            EventQuery {
                last: Some(3),
                before_index: Some(5),
                ..Default::default()
            },
            vec![2, 3, 4],
        ),
        (
            EventQuery {
                last: Some(4),
                limit: Some(2),
                ..Default::default()
            },
            vec![6, 7],
        ),
        (
            EventQuery {
                last: Some(50),
                ..Default::default()
            },
            (0..10).collect(),
        ),
        (
            EventQuery {
                after_index: Some(9),
                ..Default::default()
            },
            vec![],
        ),
        (
            EventQuery {
                after_index: Some(100),
                ..Default::default()
            },
            vec![],
        ),
        (
            EventQuery {
                after_index: Some(5),
                before_index: Some(5),
                ..Default::default()
            },
            vec![],
        ),
        (
            EventQuery {
                limit: Some(0),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (q, want) in cases {
        let got = indexes(&s.list_events(&id, &q).await.ctx("list_events")?);
        ensure_eq!(got, want, format!("list_events {q:?}"));
    }
    Ok(())
}

async fn event_list_reader_filter(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    let id = RoomId::from("r");
    let mut specs: Vec<(&str, Visibility, EventStatus)> = vec![
        ("other", Visibility::All, EventStatus::Delivered), // 0 all
        ("other", Visibility::None, EventStatus::Delivered), // 1 none
        ("other", Visibility::Transport, EventStatus::Delivered), // 2 transport
        ("other", Visibility::Intelligence, EventStatus::Delivered), // 3 intelligence
        (
            "other",
            Visibility::Channels(vec![ChannelId::from("me"), ChannelId::from("x")]),
            EventStatus::Delivered,
        ), // 4 names me
        (
            "other",
            Visibility::Channels(vec![ChannelId::from("mex"), ChannelId::from("m")]),
            EventStatus::Delivered,
        ), // 5 similar names only
        ("other", Visibility::All, EventStatus::Blocked),   // 6 blocked, other
        ("me", Visibility::None, EventStatus::Blocked),     // 7 own, blocked, none
        ("me", Visibility::All, EventStatus::Delivered),    // 8 own
    ];
    for (i, (channel, vis, status)) in specs.drain(..).enumerate() {
        let mut e = event("r", i as u64, channel);
        e.visibility = vis;
        e.status = status;
        s.add_event(e, None).await.ctx("add_event")?;
    }
    let as_reader = |category| EventQuery {
        reader: Some(Reader {
            channel_id: ChannelId::from("me"),
            category,
        }),
        ..EventQuery::default()
    };
    let transport = indexes(
        &s.list_events(&id, &as_reader(ChannelCategory::Transport))
            .await
            .ctx("list_events transport")?,
    );
    ensure_eq!(
        transport,
        vec![0, 2, 4, 7, 8],
        "visible to transport reader 'me'"
    );
    let intelligence = indexes(
        &s.list_events(&id, &as_reader(ChannelCategory::Intelligence))
            .await
            .ctx("list_events intelligence")?,
    );
    ensure_eq!(
        intelligence,
        vec![0, 3, 4, 7, 8],
        "visible to intelligence reader 'me'"
    );
    let last_two = indexes(
        &s.list_events(
            &id,
            &EventQuery {
                last: Some(3),
                before_index: Some(7),
                ..as_reader(ChannelCategory::Transport)
            },
        )
        .await
        .ctx("list_events last")?,
    );
    ensure_eq!(last_two, vec![0, 2, 4], "last n counts only visible events");
    let limited = indexes(
        &s.list_events(
            &id,
            &EventQuery {
                after_index: Some(0),
                limit: Some(2),
                ..as_reader(ChannelCategory::Transport)
            },
        )
        .await
        .ctx("list_events limit")?,
    );
    ensure_eq!(limited, vec![2, 4], "limit counts only visible events");
    // The oracle: the filter must agree with Reader::may_see.
    let all = s
        .list_events(&id, &EventQuery::default())
        .await
        .ctx("list_events")?;
    for category in [ChannelCategory::Transport, ChannelCategory::Intelligence] {
        let reader = Reader {
            channel_id: ChannelId::from("me"),
            category,
        };
        let want: Vec<u64> = all
            .iter()
            .filter(|e| reader.may_see(e))
            .map(|e| e.index)
            .collect();
        let got = indexes(
            &s.list_events(&id, &as_reader(category))
                .await
                .ctx("list_events")?,
        );
        ensure_eq!(
            got,
            want,
            format!("filter agrees with Reader::may_see for {category:?}")
        );
    }
    Ok(())
}

async fn event_update(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 2).await?;
    let id = event("r", 0, "ws").id;
    let mut dr = DeliveryResults::new();
    dr.insert(
        ChannelId::from("sms"),
        DeliveryResult::sent(ChannelId::from("sms"), None),
    );
    let updated = s
        .update_event(
            &id,
            &EventPatch {
                merge_metadata: Some(meta(&[("seen", 1.into())])),
                delivery_results: Some(dr.clone()),
                ..EventPatch::default()
            },
        )
        .await
        .ctx("update_event")?;
    ensure_eq!(
        updated.metadata.get("seen"),
        Some(&serde_json::Value::from(1)),
        "metadata merged"
    );
    ensure_eq!(updated.delivery_results, dr, "delivery results merged");
    let reread = s.get_event(&id).await.ctx("get_event")?;
    ensure_eq!(reread.as_deref(), Some(&*updated), "update is stored");
    ensure_eq!(updated.index, 0, "index unchanged");
    ensure_eq!(
        counters(&s, "r").await?,
        (2, Some(1)),
        "counters unchanged by an update"
    );
    // Replacing the source changes whose own event it is.
    let mut src = updated.source.clone();
    src.channel_id = ChannelId::from("me");
    let mut hidden = event("r", 2, "ws");
    hidden.visibility = Visibility::None;
    s.add_event(hidden.clone(), None).await.ctx("add hidden")?;
    s.update_event(
        &hidden.id,
        &EventPatch {
            source: Some(src),
            ..EventPatch::default()
        },
    )
    .await
    .ctx("update source")?;
    let mine = s
        .list_events(
            &RoomId::from("r"),
            &EventQuery {
                reader: Some(Reader {
                    channel_id: ChannelId::from("me"),
                    category: ChannelCategory::Transport,
                }),
                after_index: Some(1),
                ..EventQuery::default()
            },
        )
        .await
        .ctx("list_events")?;
    ensure_eq!(
        indexes(&mine),
        vec![2],
        "the new source sees its own hidden event"
    );
    match s
        .update_event(&EventId::from("missing"), &EventPatch::default())
        .await
    {
        Err(StoreError::NotFound { .. }) => Ok(()),
        other => Err(format!(
            "update of an unknown event: expected NotFound, got {other:?}"
        )),
    }
}

async fn event_hard_delete(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    seed(&s, "other", 1).await?;
    let mut keyed = event("r", 0, "ws");
    keyed.idempotency_key = Some("k".into());
    s.add_event(keyed.clone(), None).await.ctx("add")?;
    s.add_event(event("r", 1, "ws"), None).await.ctx("add")?;
    s.add_event(event("r", 2, "ws"), None).await.ctx("add")?;
    let foreign = event("other", 0, "ws").id;
    let deleted = s
        .delete_events(
            &RoomId::from("r"),
            &[
                keyed.id.clone(),
                EventId::from("missing"),
                foreign.clone(),
                event("r", 2, "ws").id,
            ],
        )
        .await
        .ctx("delete_events")?;
    ensure_eq!(
        deleted,
        vec![keyed.id.clone(), event("r", 2, "ws").id],
        "ids that existed in the room"
    );
    ensure!(
        s.get_event(&keyed.id).await.ctx("get_event")?.is_none(),
        "deleted event gone"
    );
    ensure!(
        s.get_event(&foreign).await.ctx("get_event")?.is_some(),
        "another room's event survives"
    );
    let left = indexes(
        &s.list_events(&RoomId::from("r"), &EventQuery::default())
            .await
            .ctx("list_events")?,
    );
    ensure_eq!(left, vec![1], "timeline skips deleted events");
    ensure_eq!(
        counters(&s, "r").await?,
        (3, Some(2)),
        "indexes are never reused"
    );
    ensure!(
        s.find_event_by_idempotency_key(&RoomId::from("r"), "k")
            .await
            .ctx("find")?
            .is_none(),
        "a deleted event's key no longer finds it"
    );
    s.add_event(event("r", 3, "ws"), None)
        .await
        .ctx("next index after deletes")?;
    Ok(())
}

// ---------------------------------------------------------------- bindings, participants

async fn bindings(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r2", 0).await?;
    seed(&s, "r1", 0).await?;
    let id = RoomId::from("r1");
    // Attach order differs from id order.
    s.create_binding(binding("r1", "zeta", ChannelCategory::Transport))
        .await
        .ctx("create")?;
    s.create_binding(binding("r1", "alpha", ChannelCategory::Intelligence))
        .await
        .ctx("create")?;
    s.create_binding(binding("r2", "zeta", ChannelCategory::Transport))
        .await
        .ctx("create")?;
    match s
        .create_binding(binding("r1", "zeta", ChannelCategory::Transport))
        .await
    {
        Err(StoreError::Conflict { .. }) => {}
        other => return Err(format!("second binding: expected Conflict, got {other:?}")),
    }
    match s
        .create_binding(binding("nope", "zeta", ChannelCategory::Transport))
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "binding to unknown room: expected NotFound, got {other:?}"
            ));
        }
    }
    let listed: Vec<String> = s
        .list_bindings(&id)
        .await
        .ctx("list_bindings")?
        .iter()
        .map(|b| b.channel_id.to_string())
        .collect();
    ensure_eq!(listed, ["zeta", "alpha"], "bindings in attach order");
    let mut b = s
        .get_binding(&id, &ChannelId::from("alpha"))
        .await
        .ctx("get_binding")?
        .ok_or("binding missing")?;
    ensure_eq!(
        b,
        binding("r1", "alpha", ChannelCategory::Intelligence),
        "binding round trip"
    );
    b.muted = true;
    b.access = Access::ReadOnly;
    b.visibility = Visibility::Intelligence;
    b.last_read_index = Some(4);
    s.update_binding(b.clone()).await.ctx("update_binding")?;
    let again = s
        .get_binding(&id, &ChannelId::from("alpha"))
        .await
        .ctx("get_binding")?;
    ensure_eq!(again, Some(b), "update stored");
    let listed: Vec<String> = s
        .list_bindings(&id)
        .await
        .ctx("list_bindings")?
        .iter()
        .map(|b| b.channel_id.to_string())
        .collect();
    ensure_eq!(listed, ["zeta", "alpha"], "an update keeps attach order");
    match s
        .update_binding(binding("r1", "ghost", ChannelCategory::Transport))
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "update of unknown binding: expected NotFound, got {other:?}"
            ));
        }
    }
    let rooms = s
        .rooms_with_binding(&ChannelId::from("zeta"))
        .await
        .ctx("rooms_with_binding")?;
    ensure_eq!(
        ids(&rooms),
        ["r1", "r2"],
        "rooms with a binding, in id order"
    );
    ensure!(
        s.delete_binding(&id, &ChannelId::from("zeta"))
            .await
            .ctx("delete")?,
        "delete reports true"
    );
    ensure!(
        !s.delete_binding(&id, &ChannelId::from("zeta"))
            .await
            .ctx("delete")?,
        "second delete false"
    );
    ensure!(
        s.get_binding(&id, &ChannelId::from("zeta"))
            .await
            .ctx("get")?
            .is_none(),
        "deleted binding gone"
    );
    let rooms = s
        .rooms_with_binding(&ChannelId::from("zeta"))
        .await
        .ctx("rooms_with_binding")?;
    ensure_eq!(ids(&rooms), ["r2"], "rooms with a binding after a detach");
    Ok(())
}

async fn participants(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r2", 0).await?;
    seed(&s, "r1", 0).await?;
    let id = RoomId::from("r1");
    s.create_participant(participant("r1", "p9", "+1"))
        .await
        .ctx("create")?;
    s.create_participant(participant("r1", "p1", "+2"))
        .await
        .ctx("create")?;
    s.create_participant(participant("r2", "p9", "+1"))
        .await
        .ctx("same id, other room")?;
    match s.create_participant(participant("r1", "p9", "+3")).await {
        Err(StoreError::Conflict { .. }) => {}
        other => {
            return Err(format!(
                "second participant: expected Conflict, got {other:?}"
            ));
        }
    }
    match s.create_participant(participant("nope", "p1", "+3")).await {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "participant of unknown room: expected NotFound, got {other:?}"
            ));
        }
    }
    let order: Vec<String> = s
        .list_participants(&id)
        .await
        .ctx("list_participants")?
        .iter()
        .map(|p| p.id.to_string())
        .collect();
    ensure_eq!(order, ["p9", "p1"], "participants in join order");
    let p = s
        .get_participant(&id, &ParticipantId::from("p1"))
        .await
        .ctx("get")?;
    ensure_eq!(
        p,
        Some(participant("r1", "p1", "+2")),
        "participant round trip"
    );
    let found = s
        .find_participant_by_address(&id, &ChannelType::Sms, "+2")
        .await
        .ctx("find_participant_by_address")?;
    ensure_eq!(
        found.map(|p| p.id.to_string()),
        Some("p1".to_owned()),
        "found by address"
    );
    let none = s
        .find_participant_by_address(&id, &ChannelType::Email, "+2")
        .await
        .ctx("find_participant_by_address")?;
    ensure!(none.is_none(), "address matches only with its channel type");
    let rooms = s
        .rooms_with_participant_address(&ChannelType::Sms, "+1")
        .await
        .ctx("rooms_with_participant_address")?;
    ensure_eq!(
        ids(&rooms),
        ["r1", "r2"],
        "rooms with an address, in id order"
    );

    let mut changed = participant("r1", "p1", "+5");
    changed.identification = IdentificationStatus::Identified;
    changed.identity_id = Some(IdentityId::from("id-1"));
    changed.resolved_at = Some(ts(30));
    s.update_participant(changed.clone())
        .await
        .ctx("update_participant")?;
    let again = s
        .get_participant(&id, &ParticipantId::from("p1"))
        .await
        .ctx("get")?;
    ensure_eq!(again, Some(changed), "update stored");
    let old = s
        .find_participant_by_address(&id, &ChannelType::Sms, "+2")
        .await
        .ctx("find")?;
    ensure!(
        old.is_none(),
        "the old address no longer matches after an update"
    );
    let new = s
        .find_participant_by_address(&id, &ChannelType::Sms, "+5")
        .await
        .ctx("find")?;
    ensure!(new.is_some(), "the new address matches after an update");
    match s.update_participant(participant("r1", "ghost", "+0")).await {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "update of unknown participant: expected NotFound, got {other:?}"
            ));
        }
    }
    ensure!(
        s.delete_participant(&id, &ParticipantId::from("p9"))
            .await
            .ctx("delete")?,
        "delete true"
    );
    ensure!(
        !s.delete_participant(&id, &ParticipantId::from("p9"))
            .await
            .ctx("delete")?,
        "delete again false"
    );
    let rooms = s
        .rooms_with_participant_address(&ChannelType::Sms, "+1")
        .await
        .ctx("rooms")?;
    ensure_eq!(ids(&rooms), ["r2"], "rooms with an address after a removal");
    Ok(())
}

async fn identities_org_scoped(s: Arc<dyn Store>) -> CheckResult {
    let a = identity("id-a", Some("org-a"), &["+1"]);
    let b = identity("id-b", Some("org-b"), &["+1"]);
    let none = identity("id-none", None, &["+1", "+9"]);
    for i in [&a, &b, &none] {
        let stored = s.store_identity((*i).clone()).await.ctx("store_identity")?;
        ensure_eq!(&stored, i, "store_identity returns the identity");
    }
    ensure_eq!(
        s.get_identity(&a.id).await.ctx("get_identity")?,
        Some(a.clone()),
        "round trip"
    );
    let sms = ChannelType::Sms;
    let in_a = s
        .resolve_by_address(&sms, "+1", Some("org-a"))
        .await
        .ctx("resolve")?;
    ensure_eq!(
        in_a.map(|i| i.id.to_string()),
        Some("id-a".to_owned()),
        "org a sees its own"
    );
    let in_b = s
        .resolve_by_address(&sms, "+1", Some("org-b"))
        .await
        .ctx("resolve")?;
    ensure_eq!(
        in_b.map(|i| i.id.to_string()),
        Some("id-b".to_owned()),
        "org b sees its own"
    );
    let unscoped = s
        .resolve_by_address(&sms, "+1", None)
        .await
        .ctx("resolve")?;
    ensure_eq!(
        unscoped.map(|i| i.id.to_string()),
        Some("id-none".to_owned()),
        "no org sees unscoped only"
    );
    let other = s
        .resolve_by_address(&sms, "+1", Some("org-c"))
        .await
        .ctx("resolve")?;
    ensure!(other.is_none(), "another tenant sees nothing");
    let wrong_type = s
        .resolve_by_address(&ChannelType::Email, "+1", Some("org-a"))
        .await
        .ctx("resolve")?;
    ensure!(wrong_type.is_none(), "addresses are per channel type");
    // Ties resolve by id.
    s.store_identity(identity("id-a0", Some("org-a"), &["+1"]))
        .await
        .ctx("store_identity")?;
    let tie = s
        .resolve_by_address(&sms, "+1", Some("org-a"))
        .await
        .ctx("resolve")?;
    ensure_eq!(
        tie.map(|i| i.id.to_string()),
        Some("id-a".to_owned()),
        "ties resolve to the smallest id"
    );
    // Replacing an identity replaces its addresses.
    s.store_identity(identity("id-none", None, &["+7"]))
        .await
        .ctx("replace identity")?;
    let gone = s
        .resolve_by_address(&sms, "+9", None)
        .await
        .ctx("resolve")?;
    ensure!(
        gone.is_none(),
        "a replaced identity's old address no longer resolves"
    );
    let new = s
        .resolve_by_address(&sms, "+7", None)
        .await
        .ctx("resolve")?;
    ensure_eq!(
        new.map(|i| i.id.to_string()),
        Some("id-none".to_owned()),
        "its new address resolves"
    );
    ensure!(
        s.get_identity(&IdentityId::from("x"))
            .await
            .ctx("get")?
            .is_none(),
        "unknown identity None"
    );
    Ok(())
}

async fn tasks(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    let id = RoomId::from("r");
    s.create_task(task("r", "t-z", TaskStatus::Pending))
        .await
        .ctx("create_task")?;
    s.create_task(task("r", "t-a", TaskStatus::Completed))
        .await
        .ctx("create_task")?;
    s.create_task(task("r", "t-m", TaskStatus::Pending))
        .await
        .ctx("create_task")?;
    match s
        .create_task(task("nope", "t-x", TaskStatus::Pending))
        .await
    {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "task of unknown room: expected NotFound, got {other:?}"
            ));
        }
    }
    let all: Vec<String> = s
        .list_tasks(&id, &TaskQuery::default())
        .await
        .ctx("list_tasks")?
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    ensure_eq!(all, ["t-z", "t-a", "t-m"], "tasks in creation order");
    let pending: Vec<String> = s
        .list_tasks(
            &id,
            &TaskQuery {
                status: Some(TaskStatus::Pending),
            },
        )
        .await
        .ctx("list_tasks")?
        .iter()
        .map(|t| t.id.to_string())
        .collect();
    ensure_eq!(pending, ["t-z", "t-m"], "status filter");
    ensure_eq!(
        s.get_task(&TaskId::from("t-a")).await.ctx("get_task")?,
        Some(task("r", "t-a", TaskStatus::Completed)),
        "task round trip"
    );
    let mut t = task("r", "t-z", TaskStatus::InProgress);
    t.assigned_to = Some("agent-7".into());
    s.update_task(t.clone()).await.ctx("update_task")?;
    ensure_eq!(
        s.get_task(&t.id).await.ctx("get_task")?,
        Some(t),
        "update stored"
    );
    let pending = s
        .list_tasks(
            &id,
            &TaskQuery {
                status: Some(TaskStatus::Pending),
            },
        )
        .await
        .ctx("list_tasks")?
        .len();
    ensure_eq!(pending, 1, "filter follows the updated status");
    match s.update_task(task("r", "ghost", TaskStatus::Pending)).await {
        Err(StoreError::NotFound { .. }) => {}
        other => {
            return Err(format!(
                "update of unknown task: expected NotFound, got {other:?}"
            ));
        }
    }
    ensure!(
        s.list_tasks(&RoomId::from("nope"), &TaskQuery::default())
            .await
            .ctx("list")?
            .is_empty(),
        "unknown room has no tasks"
    );
    Ok(())
}

async fn observations(s: Arc<dyn Store>) -> CheckResult {
    seed(&s, "r", 0).await?;
    let id = RoomId::from("r");
    let mut made = Vec::new();
    for (i, kind) in ["sentiment", "compliance", "sentiment"].iter().enumerate() {
        let mut o = Observation::new(*kind, meta(&[("i", i.into())]));
        o.id = roomkit_core::model::ObservationId::from(format!("o{}", 3 - i));
        o.room_id = id.clone();
        o.source_channel_id = Some(ChannelId::from("ai"));
        o.created_at = ts(20 + i as i64);
        made.push(s.create_observation(o).await.ctx("create_observation")?);
    }
    let listed = s.list_observations(&id).await.ctx("list_observations")?;
    ensure_eq!(listed, made, "observations round trip in creation order");
    let mut lost = Observation::new("x", Map::new());
    lost.room_id = RoomId::from("nope");
    match s.create_observation(lost).await {
        Err(StoreError::NotFound { .. }) => Ok(()),
        other => Err(format!(
            "observation of unknown room: expected NotFound, got {other:?}"
        )),
    }
}

// ---------------------------------------------------------------- ownership, ordering, concurrency

async fn ownership(s: Arc<dyn Store>) -> CheckResult {
    // Values handed to a write are the store's from then on: changing the
    // caller's copy afterwards changes nothing stored.
    let mut r = room("r", 1);
    s.create_room(r.clone()).await.ctx("create_room")?;
    r.metadata.insert("mutated".into(), true.into());
    let mut e = event("r", 0, "ws");
    s.add_event(e.clone(), None).await.ctx("add_event")?;
    e.content = EventContent::text("changed after the write");
    let mut b = binding("r", "ws", ChannelCategory::Transport);
    s.create_binding(b.clone()).await.ctx("create_binding")?;
    b.muted = true;
    let mut p = participant("r", "p", "+1");
    s.create_participant(p.clone())
        .await
        .ctx("create_participant")?;
    p.display_name = None;

    // Values a read returns belong to the caller: changing them changes
    // nothing stored.
    let mut got_room = s
        .get_room(&r.id)
        .await
        .ctx("get_room")?
        .ok_or("room missing")?;
    ensure!(
        got_room.metadata.is_empty(),
        "room unaffected by the caller's copy"
    );
    got_room.status = RoomStatus::Archived;
    let mut got_b = s
        .get_binding(&b.room_id, &b.channel_id)
        .await
        .ctx("get_binding")?
        .ok_or("binding missing")?;
    ensure!(!got_b.muted, "binding unaffected by the caller's copy");
    got_b.access = Access::None;
    let mut got_p = s
        .get_participant(&p.room_id, &p.id)
        .await
        .ctx("get_participant")?
        .ok_or("participant missing")?;
    ensure!(
        got_p.display_name.is_some(),
        "participant unaffected by the caller's copy"
    );
    got_p.role = ParticipantRole::Owner;
    let stored_e = s
        .get_event(&e.id)
        .await
        .ctx("get_event")?
        .ok_or("event missing")?;
    ensure!(
        stored_e.content != e.content,
        "event unaffected by the caller's copy"
    );
    // Events are shared snapshots: a caller that wants a change clones.
    let mut copy = (*stored_e).clone();
    copy.metadata.insert("local".into(), 1.into());

    ensure_eq!(
        s.get_room(&r.id).await.ctx("get_room")?.map(|x| x.status),
        Some(RoomStatus::Active),
        "returned room is the caller's"
    );
    ensure_eq!(
        s.get_binding(&b.room_id, &b.channel_id)
            .await
            .ctx("get_binding")?
            .map(|x| x.access),
        Some(Access::ReadWrite),
        "returned binding is the caller's"
    );
    ensure_eq!(
        s.get_participant(&p.room_id, &p.id)
            .await
            .ctx("get_participant")?
            .map(|x| x.role),
        Some(ParticipantRole::Member),
        "returned participant is the caller's"
    );
    let again = s
        .get_event(&e.id)
        .await
        .ctx("get_event")?
        .ok_or("event missing")?;
    ensure!(
        again.metadata.get("local").is_none(),
        "a clone of a returned event is the caller's"
    );
    Ok(())
}

async fn concurrent_writers_gap_free(s: Arc<dyn Store>) -> CheckResult {
    const WRITERS: usize = 8;
    const EACH: usize = 25;
    seed(&s, "hot", 0).await?;
    let room_id = RoomId::from("hot");
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        let room_id = room_id.clone();
        // Writers race without a room lock: storage-layer atomicity alone
        // must hand out every index exactly once.
        handles.push(tokio::spawn(async move {
            let mut written = 0usize;
            let mut attempts = 0usize;
            while written < EACH {
                attempts += 1;
                if attempts > EACH * 10_000 {
                    return Err(format!("writer {w} made no progress"));
                }
                let next = match s.get_room(&room_id).await {
                    Ok(Some(r)) => r.event_count,
                    Ok(None) => return Err("room vanished".to_owned()),
                    Err(e) => return Err(format!("get_room: {e}")),
                };
                let mut e = event("hot", next, "ws");
                e.id = EventId::from(format!("w{w}-{written}"));
                e.idempotency_key = Some(format!("key-w{w}-{written}"));
                match s.add_event(e, None).await {
                    Ok(_) => written += 1,
                    Err(StoreError::IndexConflict { .. }) => tokio::task::yield_now().await,
                    Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                    Err(e) => return Err(format!("writer {w}: {e}")),
                }
            }
            Ok(())
        }));
    }
    for h in handles {
        match h.await {
            Ok(r) => r?,
            Err(e) => return Err(format!("writer task failed: {e}")),
        }
    }
    let total = (WRITERS * EACH) as u64;
    let events = s
        .list_events(&room_id, &EventQuery::default())
        .await
        .ctx("list_events")?;
    ensure_eq!(
        indexes(&events),
        (0..total).collect::<Vec<_>>(),
        "indexes 0..n, each once"
    );
    let mut seen: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    seen.sort();
    seen.dedup();
    ensure_eq!(seen.len() as u64, total, "every write stored exactly once");
    ensure_eq!(
        counters(&s, "hot").await?,
        (total, Some(total - 1)),
        "counters match the timeline"
    );
    Ok(())
}

async fn counters_match_timeline(s: Arc<dyn Store>) -> CheckResult {
    // A mix of accepted and refused commits across rooms: afterwards every
    // room's counters describe exactly its stored timeline.
    for r in ["a", "b", "c"] {
        seed(&s, r, 0).await?;
    }
    let mut expected = std::collections::BTreeMap::new();
    for step in 0u64..60 {
        let r = ["a", "b", "c"][(step % 3) as usize];
        let count: &mut u64 = expected.entry(r).or_insert(0);
        let mut e = event(r, *count, "ws");
        e.id = EventId::from(format!("mix-{step}"));
        if step % 7 == 0 {
            e.status = EventStatus::Blocked;
        }
        if step % 5 == 0 {
            // A refused write in between (stale index).
            let mut stale = e.clone();
            stale.id = EventId::from(format!("stale-{step}"));
            stale.index = count.saturating_sub(1) + u64::from(*count == 0) * 5;
            if s.add_event(stale, None).await.is_ok() {
                return Err(format!("a stale index was accepted at step {step}"));
            }
        }
        s.add_event(e, None).await.ctx("add_event")?;
        *count += 1;
    }
    for (r, n) in expected {
        let timeline = s
            .list_events(&RoomId::from(r), &EventQuery::default())
            .await
            .ctx("list_events")?;
        ensure_eq!(
            indexes(&timeline),
            (0..n).collect::<Vec<_>>(),
            format!("room {r} timeline")
        );
        ensure_eq!(
            counters(&s, r).await?,
            (n, Some(n - 1)),
            format!("room {r} counters")
        );
    }
    Ok(())
}
