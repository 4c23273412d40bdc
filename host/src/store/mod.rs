//! The database: one API over Postgres (production) and SQLite (the embedded default).
//!
//! [`Store`] is an enum over the two backends; [`Store::connect_with`] picks one by the URL's
//! scheme (`postgres://`/`postgresql://` or `sqlite:`) and is the one place connections are
//! set up ([`StoreOptions`]: pool size and every timeout); [`Store::migrate`] applies the
//! embedded migrations ([`PG_MIGRATOR`], [`SQLITE_MIGRATOR`], from `migrations/`). No other
//! module of the host talks to sqlx: notifications ([`Store::notify`], [`Store::listen`]),
//! the migration check ([`Store::is_migrated`]) and the classification of failures
//! ([`StoreError::kind`]) live here too.
//!
//! What the store guarantees (SPEC §3):
//! - every configuration change ([`Store::apply_change`]) and its `rollout_history` row commit
//!   in one transaction, with the previous values read under the row lock, so the history
//!   always carries the true previous and new values; Postgres also sends
//!   `pg_notify('rollout_changes', feature_name)` inside that transaction, so listeners learn
//!   of the change exactly when it is visible;
//! - what a change means is one pure function ([`plan`]) of the row read under the lock,
//!   the same for both databases: whitelist and exclusion edits are set operations on that
//!   row (no lost edits), and a change that changes no column writes nothing (no history
//!   row, `applied: false`);
//! - every applied change bumps [`StoredConfig::version`] by exactly 1 in its transaction, so
//!   readers order configurations by version, never by clock;
//! - the auto-rollback is a compare-and-set on the judged window ([`Change::Rollback`]): it
//!   applies only while the row's `state_changed_at` is the one the health check read, the
//!   rollout is above 0 % and not stopped, so two hosts deciding at once write exactly one
//!   `rollback` row and a ramp committed meanwhile is never undone;
//! - metrics go through one atomic multi-row upsert into unique buckets, exactly once per
//!   submission key ([`Store::upsert_metrics_batches`]; group commit lives in [`recorder`]);
//!   sums saturate instead of overflowing; the processing-time histogram counts
//!   (`rollout_latency_buckets`, buckets of [`latency`]) are upserted in the same
//!   transaction, read back by [`Store::latency_window`];
//! - on Postgres no statement waits forever: lock and statement timeouts
//!   ([`StoreOptions`]) turn a held row into an [`ErrorKind::Unreachable`] error.
//!
//! The rules themselves (eligibility, routing, categorisation, health) never live in the
//! database; the manager ([`crate::manager`]) asks the policy through [`crate::engine::Decide`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), rollout::store::StoreError> {
//! use rollout::store::Store;
//! let store = Store::connect("sqlite://rollout.db").await?;
//! store.migrate().await?;
//! let config = store.get_config("hybrid_progressive_capture").await?;
//! println!("{}%", config.config.rollout_percentage);
//! # Ok(()) }
//! ```

pub mod backlog;
pub mod candidate;
mod change;
pub mod config_versions;
pub mod decision_log;
mod error;
pub mod latency;
mod listen;
pub mod outbox;
mod pg;
pub mod recorder;
mod sqlite;
pub mod testing;
mod tx;
mod types;

pub use backlog::BacklogReport;
pub use candidate::{CandidateAction, CandidateEvent, NewCandidateEvent};
pub use change::{plan, Change, ChangeOutcome, ChangeRequest, ConfigPatch, Planned, Skipped};
pub use decision_log::{
    first_id_at, id_ms, DecisionFields, DecisionFilter, DecisionKind, DecisionOutcome, DecisionRecord,
    DecisionVersionOutcomes, PackedDecision, PolicySha,
};
pub use error::{ErrorKind, StoreError, StoreResult};
pub use listen::ChangeListener;
pub use outbox::{AlertCounts, AlertEvent, AlertLevel, AlertState, DeliveryOutcome, NewAlertEvent};
pub use types::{
    hour_start, merge_deltas, revert_target, CategoryRow, HistoryAction, HistoryEntry, LatencyRow, MetricsBatch,
    MetricsBucket, MetricsDelta, NewHistory, NewPolicyVersion, PolicyVersionRow, StoredConfig, WindowRow,
};

use chrono::{DateTime, Utc};
use rollout_policy::{ConfigError, RepoId, RepositoryStats};
use serde::Serialize;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The embedded Postgres migrations (`migrations/postgres`).
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The embedded SQLite migrations (`migrations/sqlite`).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The database URL used when none is given.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://rollout.db";

/// The channel of the Postgres notifications sent inside every change transaction; the
/// payload is the feature name (empty for changes of no feature, such as a policy
/// activation; other payloads go through [`Store::notify`]).
pub const CHANGE_CHANNEL: &str = "rollout_changes";

/// Longest `last_error_message` kept (longer messages are cut at a character boundary).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1000;

/// How long the key of an applied outcome batch is kept: a retry later than this counts
/// the batch again. Keys older than this are deleted opportunistically by the metrics
/// writes (at most every [`PRUNE_EVERY`]) or by [`Store::prune_applied_batches`].
pub const APPLIED_BATCH_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How often the metrics writes of one process delete expired batch keys.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The one connection setup of the host: pool size and timeouts, used by every caller
/// (server, CLI, tests) through [`Store::connect_with`].
///
/// Defaults: 10 connections; acquiring a connection waits at most 5 s (so an unreachable
/// server answers in seconds: the CLI may shorten it, the server may raise the pool size);
/// on Postgres every statement is cancelled after 10 s (`statement_timeout`) and every lock
/// wait after 3 s (`lock_timeout`), both reported as [`ErrorKind::Unreachable`]; SQLite
/// writers wait up to 10 s for the write lock (`busy_timeout`). A zero timeout means none
/// (migrations always run without the statement and lock timeouts).
///
/// ```
/// use rollout::store::StoreOptions;
/// use std::time::Duration;
/// // the CLI: a small pool
/// let cli = StoreOptions { max_connections: 4, ..StoreOptions::default() };
/// // the server: a larger pool, an outage noticed within 3 s
/// let server = StoreOptions { max_connections: 16, acquire_timeout: Duration::from_secs(3), ..StoreOptions::default() };
/// assert_eq!(cli.lock_timeout, server.lock_timeout);
/// ```
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest number of pooled connections (default 10; SQLite serialises writers anyway).
    pub max_connections: u32,
    /// How long a SQLite writer waits for the lock (default 10 s).
    pub busy_timeout: Duration,
    /// How long taking a connection from the pool (connecting if needed) may wait, both
    /// databases (default 5 s).
    pub acquire_timeout: Duration,
    /// Postgres `statement_timeout` of every connection (default 10 s).
    pub statement_timeout: Duration,
    /// Postgres `lock_timeout` of every connection (default 3 s): a row held by another
    /// transaction fails the waiting statement after this long instead of hanging.
    pub lock_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            busy_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(3),
        }
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// The database: a pool of Postgres or SQLite connections. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
    /// SQLite (WAL journal, busy timeout, foreign keys on, created when missing).
    Sqlite(sqlx::SqlitePool),
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Split `owner/name` (both non-empty, no further `/`).
pub fn split_owner_name(id: &str) -> Option<(&str, &str)> {
    let (owner, name) = id.split_once('/')?;
    if owner.is_empty() || name.is_empty() || name.contains('/') || owner.contains(char::is_whitespace) {
        return None;
    }
    Some((owner, name))
}

/// Milliseconds as Postgres wants a timeout setting.
fn pg_millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// When this process last deleted expired batch keys (Unix seconds).
static LAST_PRUNE: AtomicI64 = AtomicI64::new(0);

/// Whether a metrics write should delete expired batch keys now (one caller per period).
fn prune_due(now: DateTime<Utc>) -> bool {
    let now = now.timestamp();
    let last = LAST_PRUNE.load(Ordering::Relaxed);
    now - last >= PRUNE_EVERY.as_secs() as i64
        && LAST_PRUNE.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// Rows per statement when [`Store::list_categories`] reads every categorisation.
const CATEGORY_CHUNK: i64 = 50_000;

impl Store {
    /// Connect to `url` with the default [`StoreOptions`].
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// Connect to `url`: `postgres://…`/`postgresql://…` or `sqlite:…` (a SQLite file is
    /// created when missing and put in WAL mode with a busy timeout), with `options`.
    ///
    /// Fails with [`StoreError::UnsupportedUrl`] for another scheme, and with
    /// [`StoreError::Connect`] when the URL cannot be parsed ([`ErrorKind::Input`], field
    /// `database_url`) or no connection could be made within the acquire timeout
    /// ([`ErrorKind::Unreachable`]).
    pub async fn connect_with(url: &str, options: &StoreOptions) -> StoreResult<Store> {
        let connect_err = |source: sqlx::Error| StoreError::Connect { url: redact_url(url), source: Arc::new(source) };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = sqlx::postgres::PgConnectOptions::from_str(url).map_err(connect_err)?.options([
                ("statement_timeout", pg_millis(options.statement_timeout)),
                ("lock_timeout", pg_millis(options.lock_timeout)),
            ]);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Store::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(options.busy_timeout)
                .foreign_keys(true);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Store::Sqlite(pool))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// The store the decision log's background writer uses
    /// ([`crate::service::decision_log`]): on Postgres this one; on SQLite a pool of its own,
    /// one connection to the same file, tuned for a stream of batched appends:
    ///
    /// - `synchronous = NORMAL`: a batch's commit does not wait for an fsync (the WAL is
    ///   synced at each checkpoint, and by any later commit of the main pool, whose
    ///   connections keep `FULL`, so a configuration change is as durable as before). A power
    ///   loss can lose the last batches of the log, never corrupt the database;
    /// - `temp_store = MEMORY`: a multi-row insert's statement journal stays in memory rather
    ///   than in a temporary file;
    /// - `cache_size` of 32 MiB (grown only as pages are used): the indexes' pages stay
    ///   cached instead of being read back and spilled mid-transaction.
    ///
    /// Measured (release, 32 connections of route load, every decision logged): the writer's
    /// thread took 44 % of the server's CPU samples through the shared pool's connections,
    /// mostly WAL checkpoints, cache spills, a file statement journal and page re-reads.
    pub async fn decision_log_writer(&self) -> StoreResult<Store> {
        match self {
            Store::Postgres(_) => Ok(self.clone()),
            Store::Sqlite(pool) => {
                let opts = (*pool.connect_options())
                    .clone()
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .pragma("temp_store", "memory")
                    .pragma("cache_size", "-32768");
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(opts)
                    .await
                    .map_err(StoreError::db("open the decision log's connection"))?;
                Ok(Store::Sqlite(pool))
            }
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Postgres(_) => Backend::Postgres,
            Store::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Apply the embedded migrations (idempotent; concurrent callers serialise on a lock).
    /// On Postgres they run without the statement and lock timeouts: a migration may
    /// rewrite a table, and waits for another host's migration.
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrate_err = |e| StoreError::Migrate(Arc::new(e));
        match self {
            Store::Postgres(pool) => {
                let mut conn = pool.acquire().await.map_err(StoreError::db("connect to migrate"))?;
                sqlx::raw_sql("SET statement_timeout = 0; SET lock_timeout = 0")
                    .execute(&mut *conn)
                    .await
                    .map_err(StoreError::db("lift the timeouts to migrate"))?;
                let result = PG_MIGRATOR.run(&mut *conn).await.map_err(migrate_err);
                // back to the connection's settings before it returns to the pool
                let reset = sqlx::raw_sql("RESET statement_timeout; RESET lock_timeout").execute(&mut *conn).await;
                if reset.is_err() {
                    conn.detach();
                }
                result
            }
            Store::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await.map_err(migrate_err),
        }
    }

    /// Whether the database holds the rollout tables with every embedded migration applied
    /// (`false`: run [`Store::migrate`], e.g. `rollout migrate`).
    pub async fn is_migrated(&self) -> StoreResult<bool> {
        let (tables, applied, migrator) = match self {
            Store::Postgres(pool) => {
                let (t, a) = pg::migration_state(pool).await?;
                (t, a, &PG_MIGRATOR)
            }
            Store::Sqlite(pool) => {
                let (t, a) = sqlite::migration_state(pool).await?;
                (t, a, &SQLITE_MIGRATOR)
            }
        };
        Ok(tables
            && migrator.iter().filter(|m| !m.migration_type.is_down_migration()).all(|m| applied.contains(&m.version)))
    }

    /// Close the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Store::Postgres(pool) => pool.close().await,
            Store::Sqlite(pool) => pool.close().await,
        }
    }

    /// Send `payload` to the listeners of [`CHANGE_CHANNEL`] ([`Store::listen`]) on
    /// Postgres, e.g. `policy_uploaded:<sha256>`; nothing on SQLite, which has no
    /// notifications. Changes made through the store notify by themselves.
    pub async fn notify(&self, payload: &str) -> StoreResult<()> {
        match self {
            Store::Postgres(pool) => pg::notify(pool, payload).await,
            Store::Sqlite(_) => Ok(()),
        }
    }

    /// Listen on [`CHANGE_CHANNEL`]: a [`ChangeListener`] with its own connection on
    /// Postgres, `None` on SQLite (poll instead). Fails when no connection can be made.
    pub async fn listen(&self) -> StoreResult<Option<ChangeListener>> {
        match self {
            Store::Postgres(pool) => ChangeListener::connect(pool).await.map(Some),
            Store::Sqlite(_) => Ok(None),
        }
    }

    /// The configuration of `feature`.
    pub async fn get_config(&self, feature: &str) -> StoreResult<StoredConfig> {
        match self {
            Store::Postgres(pool) => pg::get_config(pool, feature).await,
            Store::Sqlite(pool) => sqlite::get_config(pool, feature).await,
        }
    }

    /// The configuration `feature` had at `version` (its `config_version`), decoded from the
    /// immutable snapshot written in the transaction that made it: `None` when no such
    /// version was kept (never reached, or a change that rolled back). Unknown `feature`:
    /// [`StoreError::UnknownFeature`].
    pub async fn config_at_version(&self, feature: &str, version: i64) -> StoreResult<Option<StoredConfig>> {
        match self {
            Store::Postgres(pool) => config_versions::pg::at_version(pool, feature, version).await,
            Store::Sqlite(pool) => config_versions::sqlite::at_version(pool, feature, version).await,
        }
    }

    /// The newest `limit` configuration versions kept of `feature` and when each was written,
    /// newest first. Unknown `feature`: [`StoreError::UnknownFeature`].
    pub async fn config_versions(&self, feature: &str, limit: u32) -> StoreResult<Vec<(i64, DateTime<Utc>)>> {
        match self {
            Store::Postgres(pool) => config_versions::pg::list(pool, feature, limit).await,
            Store::Sqlite(pool) => config_versions::sqlite::list(pool, feature, limit).await,
        }
    }

    /// Every configuration, by feature name.
    pub async fn list_configs(&self) -> StoreResult<Vec<StoredConfig>> {
        match self {
            Store::Postgres(pool) => pg::list_configs(pool).await,
            Store::Sqlite(pool) => sqlite::list_configs(pool).await,
        }
    }

    /// The configuration of `feature`, created with the seed's safe defaults (0 %, active,
    /// percentage strategy) and a `created` history row when absent. Idempotent under
    /// concurrency: exactly one caller creates it.
    pub async fn ensure_config(&self, feature: &str, triggered_by: &str) -> StoreResult<StoredConfig> {
        if feature.is_empty() {
            return Err(StoreError::InvalidConfig(ConfigError {
                field: "feature_name".into(),
                message: "must not be empty".into(),
            }));
        }
        match self {
            Store::Postgres(pool) => tx::ensure_config(&pg::Pg(pool), feature, triggered_by).await,
            Store::Sqlite(pool) => tx::ensure_config(&sqlite::Lite(pool), feature, triggered_by).await,
        }
    }

    /// Apply one configuration change and write its history row, in one transaction: the
    /// row is locked and read, [`plan`] decides the whole new row, which is written with a
    /// history row and a notification. A change that would change no column (including a
    /// rollback whose judged window is gone, or at 0 %, or stopped) writes nothing and
    /// returns `applied: false` with the reason ([`ChangeOutcome::skipped`]).
    pub async fn apply_change(&self, feature: &str, request: &ChangeRequest) -> StoreResult<ChangeOutcome> {
        request.change.validate()?;
        match self {
            Store::Postgres(pool) => tx::apply_change(&pg::Pg(pool), feature, request).await,
            Store::Sqlite(pool) => tx::apply_change(&sqlite::Lite(pool), feature, request).await,
        }
    }

    /// Append a history row that goes with no configuration change (`env_override`,
    /// `policy_activated`, `policy_reverted`); `feature` `None` for a row of no feature.
    pub async fn append_history(&self, feature: Option<&str>, entry: &NewHistory) -> StoreResult<HistoryEntry> {
        let name = feature.unwrap_or("");
        match self {
            Store::Postgres(pool) => {
                let id = match feature {
                    Some(f) => Some(pg::config_id(pool, f).await?),
                    None => None,
                };
                tx::append_history(&pg::Pg(pool), id, name, entry).await
            }
            Store::Sqlite(pool) => {
                let id = match feature {
                    Some(f) => Some(sqlite::config_id(pool, f).await?),
                    None => None,
                };
                tx::append_history(&sqlite::Lite(pool), id, name, entry).await
            }
        }
    }

    /// Record `level` (`ok`, `warning`, `critical`) as the health level of `feature`; when it
    /// is a change, the event `event(previous level)` is written in the same transaction (a
    /// first `ok` writes none). Of instances recording the same transition, one writes the
    /// event. Whether the recorded level changed.
    pub async fn record_health_level(
        &self,
        feature: &str,
        level: &str,
        event: impl FnOnce(Option<&str>) -> NewAlertEvent,
    ) -> StoreResult<bool> {
        match self {
            Store::Postgres(pool) => tx::record_health_level(&pg::Pg(pool), feature, level, event).await,
            Store::Sqlite(pool) => tx::record_health_level(&sqlite::Lite(pool), feature, level, event).await,
        }
    }

    /// Write an alert event of no change (`rollout alerts test`); a repeated key is ignored.
    pub async fn insert_alert_event(&self, event: &NewAlertEvent) -> StoreResult<()> {
        match self {
            Store::Postgres(pool) => pg::insert_alert_event(pool, event, tx::now()).await,
            Store::Sqlite(pool) => sqlite::insert_alert_event(pool, event, tx::now()).await,
        }
    }

    /// Lease up to `limit` pending events due at `now` until `lease_until`, oldest first:
    /// no other claim returns them before the lease ends or [`Store::finish_alert_event`].
    pub async fn claim_alert_events(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<AlertEvent>> {
        match self {
            Store::Postgres(pool) => pg::claim_alert_events(pool, now, lease_until, limit).await,
            Store::Sqlite(pool) => sqlite::claim_alert_events(pool, now, lease_until, limit).await,
        }
    }

    /// Record the outcome of a delivery attempt of event `seq` and release its lease.
    pub async fn finish_alert_event(&self, seq: i64, outcome: &DeliveryOutcome) -> StoreResult<()> {
        match self {
            Store::Postgres(pool) => pg::finish_alert_event(pool, seq, outcome).await,
            Store::Sqlite(pool) => sqlite::finish_alert_event(pool, seq, outcome).await,
        }
    }

    /// The newest `limit` events, of one state or all.
    pub async fn list_alert_events(&self, state: Option<AlertState>, limit: u32) -> StoreResult<Vec<AlertEvent>> {
        match self {
            Store::Postgres(pool) => pg::list_alert_events(pool, state, limit).await,
            Store::Sqlite(pool) => sqlite::list_alert_events(pool, state, limit).await,
        }
    }

    /// Events per delivery state.
    pub async fn alert_counts(&self) -> StoreResult<AlertCounts> {
        match self {
            Store::Postgres(pool) => pg::alert_counts(pool).await,
            Store::Sqlite(pool) => sqlite::alert_counts(pool).await,
        }
    }

    /// Requeue the dead event `key` for an attempt now, its attempts reset; whether it was
    /// dead.
    pub async fn retry_alert_event(&self, key: Uuid) -> StoreResult<bool> {
        match self {
            Store::Postgres(pool) => pg::retry_alert_event(pool, key, tx::now()).await,
            Store::Sqlite(pool) => sqlite::retry_alert_event(pool, key, tx::now()).await,
        }
    }

    /// Delete events created before `before`, whatever their state; how many.
    pub async fn prune_alert_events(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        match self {
            Store::Postgres(pool) => pg::prune_alert_events(pool, before).await,
            Store::Sqlite(pool) => sqlite::prune_alert_events(pool, before).await,
        }
    }

    /// The history of `feature`, newest first, at most `limit` rows (rows of no feature,
    /// such as policy activations, included).
    pub async fn history(&self, feature: &str, limit: u32) -> StoreResult<Vec<HistoryEntry>> {
        match self {
            Store::Postgres(pool) => pg::history(pool, feature, limit).await,
            Store::Sqlite(pool) => sqlite::history(pool, feature, limit).await,
        }
    }

    /// Turn an id given by a person into a repository id: a UUID (any accepted form) is
    /// canonicalised; `owner/name` is looked up in `repositories` (case-insensitively).
    pub async fn resolve_repository_id(&self, id: &str) -> StoreResult<Uuid> {
        if let RepoId::Uuid(v) = RepoId::parse(id.trim()) {
            return Ok(Uuid::from_u128(v));
        }
        let Some((owner, name)) = split_owner_name(id.trim()) else {
            return Err(StoreError::InvalidRepositoryId(id.to_owned()));
        };
        let found = match self {
            Store::Postgres(pool) => pg::find_repository(pool, owner, name).await?,
            Store::Sqlite(pool) => sqlite::find_repository(pool, owner, name).await?,
        };
        found.ok_or_else(|| StoreError::UnknownRepository(id.to_owned()))
    }

    /// Resolve many ids ([`Store::resolve_repository_id`]), in order, failing on the first
    /// bad one; the result is deduplicated, first occurrence kept.
    pub async fn resolve_repository_ids(&self, ids: &[String]) -> StoreResult<Vec<Uuid>> {
        let mut out: Vec<Uuid> = Vec::with_capacity(ids.len());
        for id in ids {
            let uuid = self.resolve_repository_id(id).await?;
            if !out.contains(&uuid) {
                out.push(uuid);
            }
        }
        Ok(out)
    }

    /// Insert or update a row of `repositories` (by `owner/name`, case-insensitive) and
    /// return its id.
    pub async fn upsert_repository(&self, owner: &str, name: &str, stats: &RepositoryStats) -> StoreResult<Uuid> {
        match self {
            Store::Postgres(pool) => pg::upsert_repository(pool, owner, name, stats).await,
            Store::Sqlite(pool) => sqlite::upsert_repository(pool, owner, name, stats).await,
        }
    }

    /// The activity numbers of one repository from `repositories`; `None` when absent.
    pub async fn repository_stats(&self, id: Uuid) -> StoreResult<Option<RepositoryStats>> {
        match self {
            Store::Postgres(pool) => pg::repository_stats(pool, id).await,
            Store::Sqlite(pool) => sqlite::repository_stats(pool, id).await,
        }
    }

    /// Every repository of `repositories` with its activity numbers, by id.
    pub async fn list_repository_stats(&self) -> StoreResult<Vec<(Uuid, RepositoryStats)>> {
        match self {
            Store::Postgres(pool) => pg::list_repository_stats(pool).await,
            Store::Sqlite(pool) => sqlite::list_repository_stats(pool).await,
        }
    }

    /// Every known repository id (`repositories` ∪ `repository_categories`).
    pub async fn list_repository_ids(&self) -> StoreResult<Vec<Uuid>> {
        match self {
            Store::Postgres(pool) => pg::list_repository_ids(pool).await,
            Store::Sqlite(pool) => sqlite::list_repository_ids(pool).await,
        }
    }

    /// Insert or update categorisations (one transaction for the whole slice).
    pub async fn upsert_categories(&self, rows: &[CategoryRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Store::Postgres(pool) => pg::upsert_categories(pool, rows).await,
            Store::Sqlite(pool) => sqlite::upsert_categories(pool, rows).await,
        }
    }

    /// Every categorisation, read in pages of [`CATEGORY_CHUNK`] rows in `repository_id`
    /// order: each statement stays far inside the statement timeout however many
    /// repositories there are (a single `SELECT` of a million rows took over 10 s on a
    /// loaded machine, and the server could not start).
    pub async fn list_categories(&self) -> StoreResult<Vec<CategoryRow>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = match self {
                Store::Postgres(pool) => pg::categories_page(pool, after, CATEGORY_CHUNK).await?,
                Store::Sqlite(pool) => sqlite::categories_page(pool, after, CATEGORY_CHUNK).await?,
            };
            let full = page.len() as i64 == CATEGORY_CHUNK;
            after = page.last().map(|r| r.repository_id);
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// Add outcome counts to their buckets as one submission under a fresh key
    /// ([`Store::upsert_metrics_batches`]; a caller that may retry should make the key
    /// itself). Deltas with the same key are merged.
    pub async fn upsert_metrics(&self, deltas: &[MetricsDelta]) -> StoreResult<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        let batch = MetricsBatch { batch_id: Uuid::new_v4(), deltas: deltas.to_vec() };
        self.upsert_metrics_batches(std::slice::from_ref(&batch)).await.map(|_| ())
    }

    /// Add the outcome counts of several submissions to their buckets, exactly once per
    /// [`MetricsBatch::batch_id`]: in one transaction, the keys not recorded yet in
    /// `rollout_applied_batches` are recorded and only their submissions are added (merged
    /// per bucket, one upsert in bucket order; the first submission of a key repeated in
    /// `batches` counts). A submission retried after its reply was lost — same key — is
    /// skipped; the same content under another key counts again. Returns the keys applied
    /// now, in order (the others had been applied before).
    ///
    /// Sums saturate at `i64::MAX` instead of overflowing. A write the database refuses
    /// for its content fails with [`StoreError::MetricsRefused`] naming the keys of the
    /// write; nothing of it is kept. Keys older than [`APPLIED_BATCH_RETENTION`] are deleted
    /// now and then.
    pub async fn upsert_metrics_batches(&self, batches: &[MetricsBatch]) -> StoreResult<Vec<Uuid>> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let result = match self {
            Store::Postgres(pool) => tx::record_batches(&pg::Pg(pool), batches).await,
            Store::Sqlite(pool) => tx::record_batches(&sqlite::Lite(pool), batches).await,
        };
        let applied = result.map_err(|e| match e.kind() {
            ErrorKind::Input { .. } => {
                let mut batch_ids: Vec<Uuid> = Vec::with_capacity(batches.len());
                for b in batches {
                    if !batch_ids.contains(&b.batch_id) {
                        batch_ids.push(b.batch_id);
                    }
                }
                StoreError::MetricsRefused { batch_ids, source: Box::new(e) }
            }
            _ => e,
        })?;
        let now = Utc::now();
        if prune_due(now) {
            let before =
                now - chrono::TimeDelta::from_std(APPLIED_BATCH_RETENTION).unwrap_or(chrono::TimeDelta::days(1));
            if let Err(e) = self.prune_applied_batches(before).await {
                tracing::debug!("cannot forget old outcome batch keys: {e}");
            }
        }
        Ok(applied)
    }

    /// Delete the keys of outcome batches applied before `before` (a retry of such a
    /// batch would count again); how many were deleted.
    pub async fn prune_applied_batches(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        match self {
            Store::Postgres(pool) => pg::prune_applied_batches(pool, before).await,
            Store::Sqlite(pool) => sqlite::prune_applied_batches(pool, before).await,
        }
    }

    /// Metrics of one configuration summed per processor and bucket start, over the buckets
    /// that end after `ends_after` and start at or after `starts_at_or_after`. Sums saturate
    /// at `i64::MAX` (on SQLite they are exact below 2^53).
    pub async fn metrics_window(
        &self,
        config_id: Uuid,
        ends_after: DateTime<Utc>,
        starts_at_or_after: DateTime<Utc>,
    ) -> StoreResult<Vec<WindowRow>> {
        match self {
            Store::Postgres(pool) => pg::metrics_window(pool, config_id, ends_after, starts_at_or_after).await,
            Store::Sqlite(pool) => sqlite::metrics_window(pool, config_id, ends_after, starts_at_or_after).await,
        }
    }

    /// Timed jobs per processor and processing-time bucket ([`latency`]), over the same
    /// window as [`Store::metrics_window`] (the histogram rows are keyed by the same window
    /// starts as the metrics buckets). Counts saturate at `i64::MAX` (on SQLite they are
    /// exact below 2^53). Only buckets with jobs are returned.
    pub async fn latency_window(
        &self,
        config_id: Uuid,
        ends_after: DateTime<Utc>,
        starts_at_or_after: DateTime<Utc>,
    ) -> StoreResult<Vec<LatencyRow>> {
        match self {
            Store::Postgres(pool) => pg::latency_window(pool, config_id, ends_after, starts_at_or_after).await,
            Store::Sqlite(pool) => sqlite::latency_window(pool, config_id, ends_after, starts_at_or_after).await,
        }
    }

    /// Error counts grouped by each bucket's `last_error_message`, over the same window as
    /// [`Store::metrics_window`].
    pub async fn error_messages(
        &self,
        config_id: Uuid,
        ends_after: DateTime<Utc>,
        starts_at_or_after: DateTime<Utc>,
    ) -> StoreResult<Vec<(Option<String>, u64)>> {
        match self {
            Store::Postgres(pool) => pg::error_messages(pool, config_id, ends_after, starts_at_or_after).await,
            Store::Sqlite(pool) => sqlite::error_messages(pool, config_id, ends_after, starts_at_or_after).await,
        }
    }

    /// Every metrics bucket of one configuration (for inspection and tests), oldest first.
    pub async fn list_buckets(&self, config_id: Uuid) -> StoreResult<Vec<MetricsBucket>> {
        match self {
            Store::Postgres(pool) => pg::list_buckets(pool, config_id).await,
            Store::Sqlite(pool) => sqlite::list_buckets(pool, config_id).await,
        }
    }

    /// Store a policy component (idempotent by digest); returns its listing.
    pub async fn put_policy_version(&self, version: &NewPolicyVersion) -> StoreResult<PolicyVersionRow> {
        match self {
            Store::Postgres(pool) => pg::put_policy_version(pool, version).await,
            Store::Sqlite(pool) => sqlite::put_policy_version(pool, version).await,
        }
    }

    /// Every stored policy version (without bytes), newest first.
    pub async fn list_policy_versions(&self) -> StoreResult<Vec<PolicyVersionRow>> {
        match self {
            Store::Postgres(pool) => pg::list_policy_versions(pool).await,
            Store::Sqlite(pool) => sqlite::list_policy_versions(pool).await,
        }
    }

    /// The bytes of the stored policy with this digest; `None` when absent.
    pub async fn policy_bytes(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        match self {
            Store::Postgres(pool) => pg::policy_bytes(pool, sha256).await,
            Store::Sqlite(pool) => sqlite::policy_bytes(pool, sha256).await,
        }
    }

    /// Make the stored policy with this digest the active one (every other inactive) and
    /// append a history row of no feature — `policy_activated`, or `policy_reverted` when
    /// `revert` — with the previous and new digests in its metadata, in one transaction.
    /// Returns the previously active digest.
    pub async fn activate_policy_version(
        &self,
        sha256: &str,
        revert: bool,
        reason: Option<&str>,
        triggered_by: &str,
    ) -> StoreResult<Option<String>> {
        let done = self.activate_policy_version_inner(sha256, None, revert, reason, triggered_by, None).await?;
        Ok(done.flatten())
    }

    /// [`Store::activate_policy_version`] as a compare-and-set: only if the active version
    /// is still `expected_active` (`None`: none is active). `Ok(None)` when it is not —
    /// another activation came first — and nothing was changed or written; otherwise the
    /// previously active digest. What an automatic revert uses, so that of several
    /// instances reverting the same failing version, exactly one records it. The fields of
    /// `details` (an object) join the history row's metadata.
    pub async fn activate_policy_version_if(
        &self,
        sha256: &str,
        expected_active: Option<&str>,
        revert: bool,
        reason: Option<&str>,
        triggered_by: &str,
        details: &serde_json::Value,
    ) -> StoreResult<Option<Option<String>>> {
        self.activate_policy_version_inner(sha256, Some(expected_active), revert, reason, triggered_by, Some(details))
            .await
    }

    #[allow(clippy::too_many_arguments)] // one statement's parameters, passed straight through
    async fn activate_policy_version_inner(
        &self,
        sha256: &str,
        expected_active: Option<Option<&str>>,
        revert: bool,
        reason: Option<&str>,
        triggered_by: &str,
        details: Option<&serde_json::Value>,
    ) -> StoreResult<Option<Option<String>>> {
        match self {
            Store::Postgres(pool) => {
                let d = pg::Pg(pool);
                tx::activate_policy_version(&d, sha256, expected_active, revert, reason, triggered_by, details).await
            }
            Store::Sqlite(pool) => {
                let d = sqlite::Lite(pool);
                tx::activate_policy_version(&d, sha256, expected_active, revert, reason, triggered_by, details).await
            }
        }
    }
}
