//! Call analytics in `roomkit serve`: the `[analytics]` section of the
//! config file (Roark export and local call reports), validated into
//! [`AnalyticsSettings`], and the running service: built and recovered at
//! start, following every room as a call, making every voice session a
//! call of its own (a tap on each voice channel), flushed and drained at
//! shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roomkit_analytics::protocol::{BASE_URL_ENV, KILL_SWITCH_ENV, kill_switch_value_disables};
use roomkit_analytics::{
    AnalyticsConfig, ApiKey, CallAnalytics, CallOwnership, Exporter, LocalReportExporter,
    RoarkConfig, RoarkExporter, RoomCallPolicy, SpoolLock,
};
use roomkit_core::RoomKit;
use roomkit_store_sql::CallLeases;
use serde::Deserialize;

use crate::config::Env;

const TARGET: &str = "roomkit.analytics";

/// Default spool directory (relative to the working directory).
pub const DEFAULT_SPOOL_DIR: &str = "call-spool";
/// Default directory of local call reports.
pub const DEFAULT_REPORTS_DIR: &str = "call-reports";
/// Default bound of the export drain at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// Default lease time of a call's owner on a shared PostgreSQL store.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Agent id of calls when no Roark section names one.
pub const DEFAULT_AGENT_ID: &str = "roomkit";

/// `[analytics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSection {
    /// Where calls are spooled while they are exported.
    spool_dir: Option<String>,
    /// Longest wait for exports at shutdown, in milliseconds.
    shutdown_grace_ms: Option<i64>,
    /// A call with no message for this long ends; 0 never.
    idle_timeout_ms: Option<i64>,
    /// How long a process's ownership of a call outlives it (PostgreSQL).
    lease_ms: Option<i64>,
    /// `[analytics.roark]`.
    roark: Option<RoarkSection>,
    /// `[analytics.reports]`.
    reports: Option<ReportsSection>,
}

/// `[analytics.roark]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoarkSection {
    api_key_env: String,
    agent_id: String,
    base_url: Option<String>,
    agent_name: Option<String>,
    agent_prompt: Option<String>,
    is_test: Option<bool>,
    enabled: Option<bool>,
}

/// `[analytics.reports]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsSection {
    dir: Option<String>,
    enabled: Option<bool>,
}

/// The Roark export, validated, with its key read.
#[derive(Debug, Clone)]
pub struct RoarkSettings {
    /// The API key (prints redacted).
    pub api_key: ApiKey,
    /// The API root: `ROARK_BASE_URL`, else `base_url`, else Roark's.
    pub base_url: String,
}

/// Call analytics of the server, as validated.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Bound of the export drain at shutdown.
    pub shutdown_grace: Duration,
    /// Roark export, when configured and not switched off.
    pub roark: Option<RoarkSettings>,
    /// Directory of local call reports (and of the `/calls` page), when on.
    pub reports_dir: Option<PathBuf>,
    /// How rooms become calls.
    pub policy: RoomCallPolicy,
    /// Lease time of a call's owner among processes sharing a PostgreSQL
    /// store.
    pub lease_time: Duration,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            roark: None,
            reports_dir: None,
            policy: RoomCallPolicy::new(DEFAULT_AGENT_ID),
            lease_time: Duration::from_millis(DEFAULT_LEASE_MS),
        }
    }
}

impl AnalyticsSettings {
    /// Whether any exporter is on.
    pub fn is_enabled(&self) -> bool {
        self.roark.is_some() || self.reports_dir.is_some()
    }
}

/// A problem with `[analytics]`: the key (under `analytics.`, or an
/// environment variable) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key, e.g. `analytics.roark.api_key_env`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn problem(key: &str, problem: impl Into<String>) -> Problem {
    Problem {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

fn non_empty(key: &str, v: Option<String>) -> Result<Option<String>, Problem> {
    match v {
        Some(s) if s.trim().is_empty() => Err(problem(key, "must not be empty")),
        other => Ok(other),
    }
}

/// Validates `[analytics]`. Reads the Roark key from the variable named by
/// `api_key_env` now, once; `ROARK_BASE_URL` overrides `base_url`; the kill
/// switch `ROARK_OBSERVABILITY_ENABLED=false` (or `0`, `no`, `off`) turns the
/// Roark export off, with a warning, and then no key is needed.
///
/// # Errors
/// A [`Problem`] naming the key.
pub fn validate(
    section: Option<AnalyticsSection>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<AnalyticsSettings, Problem> {
    let mut out = AnalyticsSettings::default();
    let Some(a) = section else {
        return Ok(out);
    };
    if let Some(dir) = non_empty("analytics.spool_dir", a.spool_dir)? {
        out.spool_dir = PathBuf::from(dir);
    }
    match a.shutdown_grace_ms {
        None => {}
        Some(n) if n > 0 => out.shutdown_grace = Duration::from_millis(n as u64),
        Some(n) => {
            return Err(problem(
                "analytics.shutdown_grace_ms",
                format!("must be a positive number of milliseconds, got {n}"),
            ));
        }
    }
    match a.lease_ms {
        None => {}
        Some(n) if n > 0 => out.lease_time = Duration::from_millis(n as u64),
        Some(n) => {
            return Err(problem(
                "analytics.lease_ms",
                format!("must be a positive number of milliseconds, got {n}"),
            ));
        }
    }
    let idle_timeout = match a.idle_timeout_ms {
        None => Some(roomkit_analytics::DEFAULT_IDLE_TIMEOUT),
        Some(0) => None,
        Some(n) if n > 0 => Some(Duration::from_millis(n as u64)),
        Some(n) => {
            return Err(problem(
                "analytics.idle_timeout_ms",
                format!("must be a number of milliseconds (0 for never), got {n}"),
            ));
        }
    };
    if let Some(r) = a.reports
        && r.enabled != Some(false)
    {
        let dir = non_empty("analytics.reports.dir", r.dir)?;
        out.reports_dir = Some(PathBuf::from(
            dir.unwrap_or_else(|| DEFAULT_REPORTS_DIR.into()),
        ));
    }
    if let Some(r) = a.roark {
        if r.api_key_env.trim().is_empty() {
            return Err(problem(
                "analytics.roark.api_key_env",
                "must name an environment variable",
            ));
        }
        if r.agent_id.trim().is_empty() {
            return Err(problem("analytics.roark.agent_id", "must not be empty"));
        }
        out.policy = RoomCallPolicy {
            agent_name: non_empty("analytics.roark.agent_name", r.agent_name)?,
            agent_prompt: non_empty("analytics.roark.agent_prompt", r.agent_prompt)?,
            is_test: r.is_test.unwrap_or(false),
            ..RoomCallPolicy::new(r.agent_id.clone())
        };
        let (key, base_url) = match (env.var(BASE_URL_ENV), r.base_url) {
            (Some(u), _) => (BASE_URL_ENV, u),
            (None, Some(u)) => ("analytics.roark.base_url", u),
            (None, None) => (
                "analytics.roark.base_url",
                RoarkConfig::resolve_base_url(None, &|_| None),
            ),
        };
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(problem(
                key,
                format!("{base_url:?} must start with http:// or https://"),
            ));
        }
        let killed = env
            .var(KILL_SWITCH_ENV)
            .is_some_and(|v| kill_switch_value_disables(&v));
        if r.enabled == Some(false) {
            warnings
                .push("analytics.roark.enabled is false: calls are not exported to Roark".into());
        } else if killed {
            warnings.push(format!(
                "Roark export disabled via {KILL_SWITCH_ENV}: calls are not exported to Roark"
            ));
        } else {
            let Some(k) = env.var(&r.api_key_env) else {
                return Err(problem(
                    "analytics.roark.api_key_env",
                    format!(
                        "{} is not set (set it, or {KILL_SWITCH_ENV}=false to run without the export)",
                        r.api_key_env
                    ),
                ));
            };
            out.roark = Some(RoarkSettings {
                api_key: ApiKey::new(k),
                base_url,
            });
        }
    }
    out.policy.idle_timeout = idle_timeout;
    Ok(out)
}

/// Call analytics running in the server.
#[derive(Debug)]
pub struct Running {
    analytics: CallAnalytics,
    voice_tap: Arc<VoiceCalls>,
    grace: Duration,
    /// Held while the server runs: one process per spool directory.
    _lock: SpoolLock,
    /// Renews this process's call leases (shared PostgreSQL store).
    renewer: Option<tokio::task::JoinHandle<()>>,
}

/// Call ownership by leases in the shared PostgreSQL store.
struct Leases(CallLeases);

#[async_trait::async_trait]
impl CallOwnership for Leases {
    async fn claim(&self, room_id: &roomkit_core::model::RoomId) -> bool {
        match self.0.claim(room_id.as_str()).await {
            Ok(ours) => ours,
            Err(e) => {
                tracing::warn!(target: TARGET, room_id = %room_id, error = %e, "cannot claim the call's lease; not observing it");
                false
            }
        }
    }
}

/// Builds the exporters, locks the spool directory (a second process on
/// the same spool is refused with [`roomkit_analytics::AnalyticsError::SpoolLocked`]),
/// builds the service, finishes the exports an earlier
/// run left in the spool (in the background), and follows every room of
/// `kit` as a call. `None` when no exporter is configured.
///
/// # Errors
/// An exporter or the spool directory that cannot be set up.
pub async fn start(
    settings: &AnalyticsSettings,
    kit: &RoomKit,
    leases: Option<CallLeases>,
) -> anyhow::Result<Option<Running>> {
    if !settings.is_enabled() {
        return Ok(None);
    }
    let mut exporters: Vec<Arc<dyn Exporter>> = Vec::new();
    if let Some(r) = &settings.roark {
        let exp = RoarkExporter::new(RoarkConfig::new(r.api_key.clone(), r.base_url.clone()))?;
        tracing::info!(target: TARGET, base_url = %r.base_url, agent_id = %settings.policy.agent_id, "Roark export on");
        exporters.push(Arc::new(exp));
    }
    if let Some(dir) = &settings.reports_dir {
        tracing::info!(target: TARGET, dir = %dir.display(), "local call reports on");
        exporters.push(Arc::new(LocalReportExporter::new(dir.clone())));
    }
    if exporters.is_empty() {
        return Ok(None);
    }
    // Before anything is recovered: a second process on this spool would
    // end and export the calls the running one is still writing.
    let lock = SpoolLock::acquire(&settings.spool_dir)?;
    let analytics = CallAnalytics::new(AnalyticsConfig::new(&settings.spool_dir), exporters)?;
    let report = analytics.recover().await?;
    if report.resumed > 0 || report.quarantined > 0 {
        tracing::info!(target: TARGET, resumed = report.resumed, unfinished = report.unfinished, quarantined = report.quarantined, "finishing exports left by an earlier run");
    }
    let renewer = match leases {
        None => {
            analytics.observe_rooms(kit, settings.policy.clone());
            None
        }
        Some(leases) => {
            tracing::info!(target: TARGET, owner = %leases.owner(), lease_ms = leases.ttl().as_millis() as u64, "calls are owned by leases in the shared store");
            let renew = leases.clone();
            let period = (leases.ttl() / 3).max(Duration::from_millis(50));
            let renewer = tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Err(e) = renew.renew().await {
                        tracing::warn!(target: TARGET, error = %e, "cannot renew the call leases");
                    }
                }
            });
            analytics.observe_rooms_owned(kit, settings.policy.clone(), Arc::new(Leases(leases)));
            Some(renewer)
        }
    };
    let voice_tap = Arc::new(VoiceCalls {
        analytics: analytics.clone(),
        policy: RoomCallPolicy {
            capture_audio: true,
            ..settings.policy.clone()
        },
        kit: kit.clone(),
        main: tokio::runtime::Handle::current(),
    });
    Ok(Some(Running {
        analytics,
        voice_tap,
        grace: settings.shutdown_grace,
        _lock: lock,
        renewer,
    }))
}

/// Longest wait for a room's metadata when a voice call starts; after it
/// the call uses the configured defaults.
const ROOM_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The tap that makes every voice session a call: registered on each voice
/// channel, it starts the session's call (under the same policy as text
/// rooms, so room metadata can opt out or rename the agent) and hands the
/// session the call's recording sink. The session's transcript and turn
/// metrics events fill the call and its end ends it (see
/// [`CallAnalytics::start_voice_call`]).
pub struct VoiceCalls {
    analytics: CallAnalytics,
    policy: RoomCallPolicy,
    kit: RoomKit,
    main: tokio::runtime::Handle,
}

impl std::fmt::Debug for VoiceCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceCalls")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The call id of a voice session: its session id, with any character the
/// spool does not take replaced by `-` and cut to 128 characters; `None`
/// (a random id) when nothing usable is left.
pub fn voice_call_id(session_id: &str) -> Option<String> {
    let id: String = session_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    let id = id.trim_start_matches('.').to_owned();
    roomkit_analytics::spool::validate_call_id(&id)
        .is_ok()
        .then_some(id)
}

impl VoiceCalls {
    /// The room's metadata, read on the server's runtime; empty when it
    /// cannot be read in time (the call then uses the defaults).
    fn room_metadata(&self, room_id: &roomkit_core::model::RoomId) -> roomkit_core::model::Map {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (kit, room) = (self.kit.clone(), room_id.clone());
        self.main.spawn(async move {
            let _ = tx.send(kit.get_room(&room).await);
        });
        // The session's own thread waits, once, before its audio flows.
        match rx.recv_timeout(ROOM_LOOKUP_TIMEOUT) {
            Ok(Ok(room)) => room.metadata,
            Ok(Err(e)) => {
                tracing::warn!(target: TARGET, room_id = %room_id, error = %e, "cannot read the room; its voice call uses the defaults");
                roomkit_core::model::Map::new()
            }
            Err(_) => {
                tracing::warn!(target: TARGET, room_id = %room_id, "the room could not be read in time; its voice call uses the defaults");
                roomkit_core::model::Map::new()
            }
        }
    }
}

impl roomkit_voice::CallTap for VoiceCalls {
    fn call_started(
        &self,
        session_id: &str,
        room_id: &roomkit_core::model::RoomId,
        info: &roomkit_voice::CallInfo,
    ) -> Option<Arc<dyn roomkit_audio::RecordingSink>> {
        let metadata = self.room_metadata(room_id);
        let Some(mut start) = self.policy.start_for(room_id, &metadata) else {
            tracing::debug!(target: TARGET, session_id, room_id = %room_id, "room opted out of call analytics; voice call not observed");
            return None;
        };
        start.call_id = voice_call_id(session_id);
        start
            .metadata
            .entry("voice_session_id")
            .or_insert_with(|| session_id.into());
        start
            .metadata
            .entry("transport")
            .or_insert_with(|| info.transport.clone().into());
        let capture = start.capture_audio;
        let sink = self.analytics.start_voice_call(session_id, start)?;
        // A room that turned audio capture off gets its call without the
        // recording.
        capture.then(|| Arc::new(sink) as Arc<dyn roomkit_audio::RecordingSink>)
    }
}

impl Running {
    /// The tap to register on every voice channel
    /// (`VoiceChannel::add_call_tap`).
    pub fn voice_tap(&self) -> Arc<dyn roomkit_voice::CallTap> {
        self.voice_tap.clone()
    }

    /// Ends every open call (`shutdown`) and waits for the exports, at most
    /// the grace period; what is left stays in the spool for the next start.
    pub async fn shutdown(self) {
        tracing::info!(target: TARGET, grace_ms = self.grace.as_millis() as u64, "flushing call analytics");
        self.analytics.shutdown(self.grace).await;
        if let Some(r) = &self.renewer {
            r.abort();
        }
        let s = self.analytics.stats();
        tracing::info!(target: TARGET, calls = s.calls_started, flushed = s.calls_flushed, exported = s.exports_completed, parked = s.exports_parked, dropped_records = s.records_dropped, "call analytics stopped");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use super::*;
    use crate::config::{ConfigError, Overrides, Settings, load};

    struct FakeEnv(HashMap<&'static str, &'static str>);

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn env(pairs: &[(&'static str, &'static str)]) -> FakeEnv {
        FakeEnv(pairs.iter().copied().collect())
    }

    fn load_text(text: &str, env: &dyn Env) -> Result<Settings, ConfigError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "roomkit-analytics-config-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("roomkit.toml");
        std::fs::write(&path, text).unwrap();
        let r = load(Some(&path), &Overrides::default(), env);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    const ROARK: &str = "[analytics.roark]\napi_key_env = \"RK\"\nagent_id = \"support-bot\"\n";

    #[test]
    fn off_without_a_section() {
        let s = load(None, &Overrides::default(), &env(&[])).unwrap();
        assert!(!s.analytics.is_enabled());
        assert!(s.analytics.roark.is_none());
        assert!(s.analytics.reports_dir.is_none());
    }

    #[test]
    fn roark_section_is_read_with_its_key_and_defaults() {
        let s = load_text(ROARK, &env(&[("RK", "rk_live_1")])).unwrap();
        let r = s.analytics.roark.as_ref().unwrap();
        assert_eq!(r.api_key.expose(), "rk_live_1");
        assert_eq!(r.base_url, "https://api.roark.ai");
        assert_eq!(s.analytics.policy.agent_id, "support-bot");
        assert!(!s.analytics.policy.is_test);
        assert_eq!(s.analytics.spool_dir, PathBuf::from(DEFAULT_SPOOL_DIR));
        assert!(
            s.analytics.reports_dir.is_none(),
            "reports are off by default"
        );
        assert!(
            !format!("{s:?}").contains("rk_live_1"),
            "the key prints redacted"
        );

        let full = format!(
            "[analytics]\nspool_dir = \"spool\"\nshutdown_grace_ms = 500\n{ROARK}base_url = \"http://127.0.0.1:9/\"\nagent_name = \"Support\"\nagent_prompt = \"Be kind.\"\nis_test = true\n[analytics.reports]\n"
        );
        let s = load_text(&full, &env(&[("RK", "k")])).unwrap();
        let a = &s.analytics;
        assert_eq!(a.roark.as_ref().unwrap().base_url, "http://127.0.0.1:9");
        assert_eq!(a.policy.agent_name.as_deref(), Some("Support"));
        assert_eq!(a.policy.agent_prompt.as_deref(), Some("Be kind."));
        assert!(a.policy.is_test);
        assert_eq!(a.spool_dir, PathBuf::from("spool"));
        assert_eq!(a.shutdown_grace, Duration::from_millis(500));
        assert_eq!(
            a.policy.idle_timeout,
            Some(roomkit_analytics::DEFAULT_IDLE_TIMEOUT)
        );
        assert_eq!(a.reports_dir, Some(PathBuf::from(DEFAULT_REPORTS_DIR)));
    }

    #[test]
    fn the_base_url_variable_wins() {
        let text = format!("{ROARK}base_url = \"https://file.example\"\n");
        let s = load_text(
            &text,
            &env(&[("RK", "k"), ("ROARK_BASE_URL", "http://127.0.0.1:7")]),
        )
        .unwrap();
        assert_eq!(s.analytics.roark.unwrap().base_url, "http://127.0.0.1:7");
        let e = load_text(&text, &env(&[("RK", "k"), ("ROARK_BASE_URL", "ftp://x")])).unwrap_err();
        assert_eq!(e.key, "ROARK_BASE_URL");
        assert!(e.file.is_none(), "a variable is not in the file");
    }

    #[test]
    fn an_unset_key_is_an_error_unless_the_kill_switch_is_engaged() {
        let e = load_text(ROARK, &env(&[])).unwrap_err();
        assert_eq!(e.key, "analytics.roark.api_key_env");
        assert!(e.problem.contains("RK is not set"), "{e}");
        assert!(e.to_string().contains("roomkit.toml"), "{e}");
        for off in ["false", "OFF", "0", "no"] {
            let s = load_text(ROARK, &env(&[("ROARK_OBSERVABILITY_ENABLED", off)])).unwrap();
            assert!(s.analytics.roark.is_none(), "{off}");
            assert!(
                s.warnings
                    .iter()
                    .any(|w| w.contains("ROARK_OBSERVABILITY_ENABLED")),
                "{:?}",
                s.warnings
            );
        }
        let s = load_text(
            ROARK,
            &env(&[("RK", "k"), ("ROARK_OBSERVABILITY_ENABLED", "true")]),
        )
        .unwrap();
        assert!(s.analytics.roark.is_some());
        let off = format!("{ROARK}enabled = false\n");
        let s = load_text(&off, &env(&[])).unwrap();
        assert!(s.analytics.roark.is_none());
    }

    #[test]
    fn bad_values_and_unknown_keys_name_their_key() {
        let cases = [
            (
                "[analytics.roark]\napi_key_env = \"RK\"\n",
                "analytics.roark",
            ),
            (
                "[analytics.roark]\napi_key_env = \"\"\nagent_id = \"a\"\n",
                "analytics.roark.api_key_env",
            ),
            (
                "[analytics.roark]\napi_key_env = \"RK\"\nagent_id = \" \"\n",
                "analytics.roark.agent_id",
            ),
            (
                "[analytics.roark]\napi_key_env = \"RK\"\nagent_id = \"a\"\nbase_url = \"api.roark.ai\"\n",
                "analytics.roark.base_url",
            ),
            (
                "[analytics.roark]\napi_key_env = \"RK\"\nagent_id = \"a\"\ncolour = 1\n",
                "analytics.roark.colour",
            ),
            (
                "[analytics]\nshutdown_grace_ms = 0\n",
                "analytics.shutdown_grace_ms",
            ),
            (
                "[analytics]\nidle_timeout_ms = -1\n",
                "analytics.idle_timeout_ms",
            ),
            ("[analytics]\nlease_ms = 0\n", "analytics.lease_ms"),
            ("[analytics]\nspool_dir = \"\"\n", "analytics.spool_dir"),
            ("[analytics.reports]\ndir = \"\"\n", "analytics.reports.dir"),
            (
                "[analytics.reports]\nformat = \"pdf\"\n",
                "analytics.reports.format",
            ),
            ("[analytics]\nexporter = \"x\"\n", "analytics.exporter"),
        ];
        for (text, key) in cases {
            let e = load_text(text, &env(&[("RK", "k")])).unwrap_err();
            assert!(e.key.starts_with(key), "{text}: {e}");
        }
    }

    #[test]
    fn a_voice_calls_id_is_its_session_id_made_spool_safe() {
        assert_eq!(voice_call_id("vs-MZ0001-0").as_deref(), Some("vs-MZ0001-0"));
        assert_eq!(
            voice_call_id("vs-a/b c:d-1").as_deref(),
            Some("vs-a-b-c-d-1")
        );
        assert_eq!(voice_call_id("..vs").as_deref(), Some("vs"));
        assert_eq!(voice_call_id(&"x".repeat(300)).map(|s| s.len()), Some(128));
        assert_eq!(voice_call_id(""), None);
        assert_eq!(voice_call_id("..."), None);
    }

    #[test]
    fn reports_alone_use_the_default_agent() {
        let s = load_text("[analytics.reports]\ndir = \"r\"\n", &env(&[])).unwrap();
        assert_eq!(s.analytics.reports_dir, Some(PathBuf::from("r")));
        assert_eq!(s.analytics.policy.agent_id, DEFAULT_AGENT_ID);
        let s = load_text("[analytics.reports]\nenabled = false\n", &env(&[])).unwrap();
        assert!(!s.analytics.is_enabled());
        let s = load_text(
            "[analytics]\nidle_timeout_ms = 0\n[analytics.reports]\n",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(s.analytics.policy.idle_timeout, None, "0 is never");
        let s = load_text(
            "[analytics]\nidle_timeout_ms = 60000\n[analytics.reports]\n",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(
            s.analytics.policy.idle_timeout,
            Some(Duration::from_secs(60))
        );
    }
}
