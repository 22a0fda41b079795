//! Cross-process fan-out over PostgreSQL LISTEN/NOTIFY.
//!
//! Every commit of the PostgreSQL store queues `pg_notify(events, {o, e})`
//! in its own transaction: PostgreSQL delivers it only if the transaction
//! commits, and in commit order. A process's fan-out task listens, skips its
//! own origin, fetches each announced event by id (payloads stay far below
//! the 8000-byte limit) and republishes it to the local timeline
//! subscribers. Framework events go the other way too: the task forwards
//! this process's framework events, inline when small and through the
//! `fanout_outbox` table when not, and republishes those of other processes.
//!
//! Notifications are not stored: while the listening connection is down
//! (it reconnects by itself), live subscribers miss what other processes
//! commit; the timeline in the database is complete regardless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roomkit_core::RoomKit;
use roomkit_core::store::Store;
use roomkit_model::{EventId, FrameworkEvent, RoomEvent};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::SqlStoreError;
use crate::store::PostgresStore;

/// Payloads at or above this size are not sent inline (PostgreSQL refuses
/// 8000 bytes and more).
pub(crate) const MAX_PAYLOAD: usize = 7900;

/// How many not-yet-seen echoes of republished framework events are
/// remembered before the oldest are forgotten.
const ECHO_LIMIT: usize = 4096;

/// The notification channels of one schema.
#[derive(Debug, Clone)]
pub(crate) struct Channels {
    pub events: Arc<str>,
    pub framework: Arc<str>,
}

impl Channels {
    pub(crate) fn new(schema: Option<&str>) -> Self {
        let suffix = schema.map(|s| format!("_{s}")).unwrap_or_default();
        Self {
            events: Arc::from(format!("roomkit_events{suffix}")),
            framework: Arc::from(format!("roomkit_framework{suffix}")),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct EventNote {
    /// Origin: the store instance that committed.
    o: String,
    /// Event id.
    e: EventId,
}

#[derive(Serialize, Deserialize)]
struct FrameworkNote {
    o: String,
    /// The framework event, when it fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<serde_json::Value>,
    /// Otherwise the `fanout_outbox` row that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<i64>,
}

/// The notification announcing a committed event.
pub(crate) fn event_payload(origin: &str, event: &RoomEvent) -> String {
    serde_json::to_string(&EventNote {
        o: origin.to_owned(),
        e: event.id.clone(),
    })
    .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Starting,
    Listening,
    Failed(String),
    Inactive,
}

/// The running fan-out of one engine. Dropping the handle leaves it running
/// for the life of the runtime; [`FanoutHandle::stop`] ends it.
#[must_use = "keep the handle to wait for readiness or to stop the fan-out"]
pub struct FanoutHandle {
    state: watch::Receiver<State>,
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FanoutHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutHandle")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl FanoutHandle {
    pub(crate) fn inactive() -> Self {
        let (_tx, state) = watch::channel(State::Inactive);
        Self {
            state,
            token: CancellationToken::new(),
            task: None,
        }
    }

    /// True when this backend has nothing to fan out (SQLite).
    pub fn is_inactive(&self) -> bool {
        *self.state.borrow() == State::Inactive
    }

    /// Waits until the fan-out listens, so that everything other processes
    /// commit from now on reaches this engine's subscribers.
    ///
    /// # Errors
    /// [`SqlStoreError::Fanout`] when the listening connection could not be
    /// set up; the fan-out has then ended.
    pub async fn ready(&mut self) -> Result<(), SqlStoreError> {
        loop {
            match &*self.state.borrow_and_update() {
                State::Listening | State::Inactive => return Ok(()),
                State::Failed(e) => return Err(SqlStoreError::Fanout(e.clone())),
                State::Starting => {}
            }
            if self.state.changed().await.is_err() {
                return Err(SqlStoreError::Fanout("the fan-out task ended".into()));
            }
        }
    }

    /// Stops listening and forwarding, and waits for the task to end.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(target: "roomkit.store.sql.fanout", error = %e, "fan-out task ended abnormally");
        }
    }
}

pub(crate) fn start(store: Arc<PostgresStore>, channels: Channels, kit: RoomKit) -> FanoutHandle {
    let (state_tx, state) = watch::channel(State::Starting);
    let token = CancellationToken::new();
    let local = kit.subscribe();
    let task = tokio::spawn(run(store, channels, kit, local, state_tx, token.clone()));
    FanoutHandle {
        state,
        token,
        task: Some(task),
    }
}

/// Reads notifications on its own task (so no read is ever cut short by a
/// `select!`) and passes them on.
async fn listen(
    mut listener: PgListener,
    tx: mpsc::Sender<(String, String)>,
    token: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = token.cancelled() => return,
            n = listener.try_recv() => n,
        };
        match next {
            Ok(Some(n)) => {
                if tx
                    .send((n.channel().to_owned(), n.payload().to_owned()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) => {
                tracing::warn!(target: "roomkit.store.sql.fanout", "fan-out connection lost; reconnecting (events committed meanwhile by other processes are not delivered live)");
            }
            Err(e) => {
                tracing::warn!(target: "roomkit.store.sql.fanout", error = %e, "fan-out listen failed; retrying");
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn run(
    store: Arc<PostgresStore>,
    channels: Channels,
    kit: RoomKit,
    mut local: broadcast::Receiver<Arc<FrameworkEvent>>,
    state: watch::Sender<State>,
    token: CancellationToken,
) {
    let listener = match PgListener::connect_with(&store.pool).await {
        Ok(mut l) => match l
            .listen_all([&*channels.events, &*channels.framework])
            .await
        {
            Ok(()) => l,
            Err(e) => {
                let _ = state.send(State::Failed(e.to_string()));
                return;
            }
        },
        Err(e) => {
            let _ = state.send(State::Failed(e.to_string()));
            return;
        }
    };
    let (note_tx, mut notes) = mpsc::channel(1024);
    let reader = tokio::spawn(listen(listener, note_tx, token.clone()));
    let _ = state.send(State::Listening);
    tracing::info!(target: "roomkit.store.sql.fanout", channel = %channels.events, "fan-out listening");

    let mut fan = Fan {
        store,
        channels,
        kit,
        echoes: HashMap::new(),
        echo_count: 0,
        outbox_writes: 0,
    };
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            note = notes.recv() => match note {
                Some((channel, payload)) => fan.remote(&channel, &payload).await,
                None => break,
            },
            ev = local.recv() => match ev {
                Ok(ev) => fan.forward(&ev).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(target: "roomkit.store.sql.fanout", skipped = n, "fan-out fell behind local framework events; some were not forwarded");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    token.cancel();
    let _ = reader.await;
}

struct Fan {
    store: Arc<PostgresStore>,
    channels: Channels,
    kit: RoomKit,
    /// Framework events this task republished, by their JSON form: when
    /// they come back through the local subscription they are not sent out
    /// again.
    echoes: HashMap<String, usize>,
    echo_count: usize,
    outbox_writes: u64,
}

impl Fan {
    async fn remote(&mut self, channel: &str, payload: &str) {
        if channel == &*self.channels.events {
            let Ok(note) = serde_json::from_str::<EventNote>(payload) else {
                tracing::debug!(target: "roomkit.store.sql.fanout", "ignoring a malformed event notification");
                return;
            };
            if note.o == *self.store.origin {
                return;
            }
            match self.store.get_event(&note.e).await {
                Ok(Some(event)) => self.kit.publish_remote_event(event),
                // Deleted again before we looked: nothing to show.
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(target: "roomkit.store.sql.fanout", event_id = %note.e, error = %e, "cannot fetch an announced event");
                }
            }
        } else if channel == &*self.channels.framework {
            let Ok(note) = serde_json::from_str::<FrameworkNote>(payload) else {
                tracing::debug!(target: "roomkit.store.sql.fanout", "ignoring a malformed framework notification");
                return;
            };
            if note.o == *self.store.origin {
                return;
            }
            let value = match (note.f, note.x) {
                (Some(v), _) => v,
                (None, Some(id)) => match self.fetch_outbox(id).await {
                    Some(v) => v,
                    None => return,
                },
                (None, None) => return,
            };
            let Ok(event) = serde_json::from_value::<FrameworkEvent>(value) else {
                // A kind this version does not know (a newer peer).
                tracing::debug!(target: "roomkit.store.sql.fanout", "ignoring an unknown framework event");
                return;
            };
            if let Ok(key) = serde_json::to_string(&event) {
                self.remember_echo(key);
            }
            self.kit.publish_remote_framework_event(event);
        }
    }

    async fn fetch_outbox(&self, id: i64) -> Option<serde_json::Value> {
        let row = sqlx::query_as::<_, (String,)>("SELECT payload FROM fanout_outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await;
        match row {
            Ok(Some((p,))) => serde_json::from_str(&p).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(target: "roomkit.store.sql.fanout", error = %e, "cannot fetch a framework event");
                None
            }
        }
    }

    fn remember_echo(&mut self, key: String) {
        if self.echo_count >= ECHO_LIMIT {
            self.echoes.clear();
            self.echo_count = 0;
        }
        *self.echoes.entry(key).or_default() += 1;
        self.echo_count += 1;
    }

    /// True (and forgotten) when `key` is an event this task republished.
    fn take_echo(&mut self, key: &str) -> bool {
        let Some(n) = self.echoes.get_mut(key) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.echoes.remove(key);
        }
        self.echo_count = self.echo_count.saturating_sub(1);
        true
    }

    async fn forward(&mut self, event: &FrameworkEvent) {
        // The channel registry is per process: each registers its own.
        if matches!(
            event,
            FrameworkEvent::ChannelRegistered { .. } | FrameworkEvent::ChannelUnregistered { .. }
        ) {
            return;
        }
        let Ok(key) = serde_json::to_string(event) else {
            return;
        };
        if self.take_echo(&key) {
            return;
        }
        let origin = self.store.origin.to_string();
        let inline = serde_json::to_value(event).ok().and_then(|v| {
            serde_json::to_string(&FrameworkNote {
                o: origin.clone(),
                f: Some(v),
                x: None,
            })
            .ok()
        });
        let payload = match inline {
            Some(p) if p.len() < MAX_PAYLOAD => p,
            _ => match self.park(&origin, &key).await {
                Some(p) => p,
                None => return,
            },
        };
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&*self.channels.framework)
            .bind(payload)
            .execute(&self.store.pool)
            .await
        {
            tracing::warn!(target: "roomkit.store.sql.fanout", error = %e, "cannot forward a framework event");
        }
    }

    /// Stores a large framework event in the outbox; returns the note that
    /// points at it.
    async fn park(&mut self, origin: &str, json: &str) -> Option<String> {
        self.outbox_writes += 1;
        if self.outbox_writes % 100 == 1
            && let Err(e) = sqlx::query(
                "DELETE FROM fanout_outbox WHERE created_at < now() - interval '1 hour'",
            )
            .execute(&self.store.pool)
            .await
        {
            tracing::debug!(target: "roomkit.store.sql.fanout", error = %e, "outbox sweep failed");
        }
        let id = sqlx::query_as::<_, (i64,)>(
            "INSERT INTO fanout_outbox (origin, payload) VALUES ($1, $2) RETURNING id",
        )
        .bind(origin)
        .bind(json)
        .fetch_one(&self.store.pool)
        .await;
        match id {
            Ok((id,)) => serde_json::to_string(&FrameworkNote {
                o: origin.to_owned(),
                f: None,
                x: Some(id),
            })
            .ok(),
            Err(e) => {
                tracing::warn!(target: "roomkit.store.sql.fanout", error = %e, "cannot park a large framework event");
                None
            }
        }
    }
}
