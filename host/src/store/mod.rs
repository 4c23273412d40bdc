//! The database: one API over Postgres (production) and SQLite (the embedded default).
//!
//! [`Store`] is an enum over the two backends; [`Store::connect`] picks one by the URL's
//! scheme (`postgres://`/`postgresql://` or `sqlite:`), [`Store::migrate`] applies the
//! embedded migrations ([`PG_MIGRATOR`], [`SQLITE_MIGRATOR`], from `migrations/`).
//!
//! What the store guarantees (SPEC §3):
//! - every configuration change ([`Store::apply_change`]) and its `rollout_history` row commit
//!   in one transaction, with the previous values read under the row lock, so the history
//!   always carries the true previous and new values; Postgres also sends
//!   `pg_notify('rollout_changes', feature_name)` inside that transaction, so listeners learn
//!   of the change exactly when it is visible;
//! - whitelist and exclusion edits are set operations inside one `UPDATE` (no lost edits);
//! - metrics go through one atomic multi-row upsert into unique buckets
//!   ([`Store::upsert_metrics`]; group commit lives in [`recorder`]);
//! - the auto-rollback is a conditional update (`rollout_percentage > 0 AND NOT
//!   emergency_stop`), so two hosts deciding at once write exactly one `rollback` row.
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

mod pg;
pub mod recorder;
mod sqlite;
pub mod testing;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rollout_policy::{Category, Config, ConfigError, Processor, RepoId, RepositoryStats, Strategy};
use serde::Serialize;
use std::str::FromStr;
use std::sync::Arc;
use uuid::Uuid;

/// The embedded Postgres migrations (`migrations/postgres`).
pub static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The embedded SQLite migrations (`migrations/sqlite`).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The database URL used when none is given.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://rollout.db";

/// The channel of the Postgres notifications sent inside every change transaction; the
/// payload is the feature name.
pub const CHANGE_CHANNEL: &str = "rollout_changes";

/// Longest `last_error_message` kept (longer messages are cut at a character boundary).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 1000;

/// Something the store could not do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database url `{0}`: expected postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl(String),
    /// The database could not be reached.
    #[error("cannot connect to `{url}`: {source}")]
    Connect {
        /// The URL, password removed.
        url: String,
        /// The driver's error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// The migrations could not be applied.
    #[error("cannot apply the migrations: {0}")]
    Migrate(#[source] Arc<sqlx::migrate::MigrateError>),
    /// A statement failed.
    #[error("{context}: {source}")]
    Database {
        /// What was being done, naming its input.
        context: String,
        /// The driver's error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// No configuration has this feature name.
    #[error("unknown feature `{0}`: no row in rollout_configuration has this feature_name")]
    UnknownFeature(String),
    /// An id that is neither a UUID nor `owner/name`.
    #[error("invalid repository id `{0}`: expected a UUID or owner/name")]
    InvalidRepositoryId(String),
    /// An `owner/name` (or UUID) that no row of `repositories` has.
    #[error("unknown repository `{0}`: not in the repositories table")]
    UnknownRepository(String),
    /// A value read back that the program cannot represent.
    #[error("unexpected value in column `{column}`: {message}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A configuration value the rules refuse.
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// No stored policy has this digest.
    #[error("unknown policy `{0}`: no stored policy version has this sha256")]
    UnknownPolicy(String),
    /// The metrics recorder's flusher is gone (the runtime is shutting down).
    #[error("the metrics recorder has stopped")]
    RecorderClosed,
}

impl StoreError {
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Database { context, source: Arc::new(source) }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest number of pooled connections (default 10; SQLite serialises writers anyway).
    pub max_connections: u32,
    /// How long a SQLite writer waits for the lock (default 10 s).
    pub busy_timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { max_connections: 10, busy_timeout: std::time::Duration::from_secs(10) }
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

impl Store {
    /// Connect to `url` with the default [`StoreOptions`].
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// Connect to `url`: `postgres://…`/`postgresql://…` or `sqlite:…` (a SQLite file is
    /// created when missing and put in WAL mode with a busy timeout).
    pub async fn connect_with(url: &str, options: &StoreOptions) -> StoreResult<Store> {
        let connect_err = |source: sqlx::Error| StoreError::Connect { url: redact_url(url), source: Arc::new(source) };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = sqlx::postgres::PgConnectOptions::from_str(url).map_err(connect_err)?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(options.max_connections)
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
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Store::Sqlite(pool))
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
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
    pub async fn migrate(&self) -> StoreResult<()> {
        let result = match self {
            Store::Postgres(pool) => PG_MIGRATOR.run(pool).await,
            Store::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
        };
        result.map_err(|e| StoreError::Migrate(Arc::new(e)))
    }

    /// Close the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Store::Postgres(pool) => pool.close().await,
            Store::Sqlite(pool) => pool.close().await,
        }
    }

    /// The configuration of `feature`.
    pub async fn get_config(&self, feature: &str) -> StoreResult<StoredConfig> {
        match self {
            Store::Postgres(pool) => pg::get_config(pool, feature).await,
            Store::Sqlite(pool) => sqlite::get_config(pool, feature).await,
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
            Store::Postgres(pool) => pg::ensure_config(pool, feature, triggered_by).await,
            Store::Sqlite(pool) => sqlite::ensure_config(pool, feature, triggered_by).await,
        }
    }

    /// Apply one configuration change and write its history row, in one transaction.
    ///
    /// Returns `applied: false` (and writes nothing) only for [`Change::Rollback`] when the
    /// rollout is already at 0 % or stopped.
    pub async fn apply_change(&self, feature: &str, request: &ChangeRequest) -> StoreResult<ChangeOutcome> {
        if let Change::Update(patch) = &request.change {
            patch.validate()?;
        }
        if let Change::SetPercentage(p) = request.change {
            if p > 100 {
                return Err(StoreError::InvalidConfig(ConfigError {
                    field: "rollout_percentage".into(),
                    message: format!("`{p}` is out of range: allowed 0..=100"),
                }));
            }
        }
        match self {
            Store::Postgres(pool) => pg::apply_change(pool, feature, request).await,
            Store::Sqlite(pool) => sqlite::apply_change(pool, feature, request).await,
        }
    }

    /// Append a history row that goes with no configuration change (`env_override`,
    /// `policy_activated`, `policy_reverted`); `feature` `None` for a row of no feature.
    pub async fn append_history(&self, feature: Option<&str>, entry: &NewHistory) -> StoreResult<HistoryEntry> {
        match self {
            Store::Postgres(pool) => pg::append_history(pool, feature, entry).await,
            Store::Sqlite(pool) => sqlite::append_history(pool, feature, entry).await,
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

    /// Every categorisation.
    pub async fn list_categories(&self) -> StoreResult<Vec<CategoryRow>> {
        match self {
            Store::Postgres(pool) => pg::list_categories(pool).await,
            Store::Sqlite(pool) => sqlite::list_categories(pool).await,
        }
    }

    /// Add outcome counts to their buckets with one atomic upsert (one statement on
    /// Postgres, one transaction on SQLite). Deltas with the same key must have been merged
    /// ([`recorder::aggregate`] does it).
    pub async fn upsert_metrics(&self, deltas: &[MetricsDelta]) -> StoreResult<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        match self {
            Store::Postgres(pool) => pg::upsert_metrics(pool, deltas).await,
            Store::Sqlite(pool) => sqlite::upsert_metrics(pool, deltas).await,
        }
    }

    /// Metrics of one configuration summed per processor and bucket start, over the buckets
    /// that end after `ends_after` and start at or after `starts_at_or_after`.
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
        match self {
            Store::Postgres(pool) => pg::activate_policy_version(pool, sha256, revert, reason, triggered_by).await,
            Store::Sqlite(pool) => sqlite::activate_policy_version(pool, sha256, revert, reason, triggered_by).await,
        }
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

/// A configuration row: the rules' [`Config`] plus what the database keeps beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredConfig {
    /// `rollout_configuration.id`.
    pub id: Uuid,
    /// The columns the rules read.
    pub config: Config,
    /// `metadata` (JSON object; `cost_per_job` is read by the stats).
    pub metadata: serde_json::Value,
    /// Last change of the percentage, the strategy or the stop (health window start).
    pub state_changed_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update time.
    pub updated_at: DateTime<Utc>,
}

impl StoredConfig {
    /// The configuration as a JSON object of its columns (for history rows and views).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.config;
        serde_json::json!({
            "feature_name": c.feature_name,
            "rollout_percentage": c.rollout_percentage,
            "is_active": c.is_active,
            "target_repositories": c.target_repositories,
            "excluded_repositories": c.excluded_repositories,
            "rollout_strategy": c.rollout_strategy.as_str(),
            "max_error_rate": c.max_error_rate,
            "monitoring_window_hours": c.monitoring_window_hours,
            "auto_rollback_enabled": c.auto_rollback_enabled,
            "emergency_stop": c.emergency_stop,
            "min_jobs_for_rollback": c.min_jobs_for_rollback,
            "metadata": self.metadata,
        })
    }
}

/// The actions of `rollout_history` (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryAction {
    /// A configuration was created.
    Created,
    /// Fields other than the ones below changed (percentage, strategy, auto-rollback, …).
    Updated,
    /// The health check set the percentage to 0.
    Rollback,
    /// The emergency stop was switched on.
    EmergencyStop,
    /// The emergency stop was switched off.
    Resume,
    /// Ids were added to `target_repositories`.
    WhitelistAdd,
    /// Ids were removed from `target_repositories`.
    WhitelistRemove,
    /// Ids were added to `excluded_repositories`.
    ExcludeAdd,
    /// Ids were removed from `excluded_repositories`.
    ExcludeRemove,
    /// Environment overrides were in force at a start.
    EnvOverride,
    /// A policy version was activated.
    PolicyActivated,
    /// The previous policy version was restored.
    PolicyReverted,
}

impl HistoryAction {
    /// Every action.
    pub const ALL: &'static [HistoryAction] = &[
        HistoryAction::Created,
        HistoryAction::Updated,
        HistoryAction::Rollback,
        HistoryAction::EmergencyStop,
        HistoryAction::Resume,
        HistoryAction::WhitelistAdd,
        HistoryAction::WhitelistRemove,
        HistoryAction::ExcludeAdd,
        HistoryAction::ExcludeRemove,
        HistoryAction::EnvOverride,
        HistoryAction::PolicyActivated,
        HistoryAction::PolicyReverted,
    ];

    /// The name stored in `rollout_history.action`.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryAction::Created => "created",
            HistoryAction::Updated => "updated",
            HistoryAction::Rollback => "rollback",
            HistoryAction::EmergencyStop => "emergency_stop",
            HistoryAction::Resume => "resume",
            HistoryAction::WhitelistAdd => "whitelist_add",
            HistoryAction::WhitelistRemove => "whitelist_remove",
            HistoryAction::ExcludeAdd => "exclude_add",
            HistoryAction::ExcludeRemove => "exclude_remove",
            HistoryAction::EnvOverride => "env_override",
            HistoryAction::PolicyActivated => "policy_activated",
            HistoryAction::PolicyReverted => "policy_reverted",
        }
    }

    /// Parse a stored action name.
    pub fn parse(s: &str) -> Option<HistoryAction> {
        HistoryAction::ALL.iter().copied().find(|a| a.as_str() == s)
    }
}

/// One row of `rollout_history`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Row id.
    pub id: Uuid,
    /// Insertion order (larger is newer).
    pub seq: i64,
    /// The configuration it belongs to (`None` for rows of no feature).
    pub rollout_config_id: Option<Uuid>,
    /// What happened.
    pub action: HistoryAction,
    /// Percentage before.
    pub previous_percentage: Option<i32>,
    /// Percentage after.
    pub new_percentage: Option<i32>,
    /// Why, in the operator's words.
    pub reason: Option<String>,
    /// Who or what (`manual`, `auto_rollback`, `environment`, a user name, …).
    pub triggered_by: Option<String>,
    /// Details: `previous`/`new` values of every changed column, `requested` ids, ….
    pub metadata: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A history row to append with [`Store::append_history`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewHistory {
    /// What happened.
    pub action: HistoryAction,
    /// Percentage before.
    pub previous_percentage: Option<i32>,
    /// Percentage after.
    pub new_percentage: Option<i32>,
    /// Why.
    pub reason: Option<String>,
    /// Who or what (at most 100 characters; longer fails the write).
    pub triggered_by: String,
    /// Details.
    pub metadata: serde_json::Value,
}

/// Fields of a configuration to change together (`None` leaves a field as it is); history
/// action `updated`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigPatch {
    /// `is_active`.
    pub is_active: Option<bool>,
    /// `rollout_strategy` (a change restarts the health window).
    pub rollout_strategy: Option<Strategy>,
    /// `max_error_rate`, 0..=100.
    pub max_error_rate: Option<f64>,
    /// `monitoring_window_hours`, at least 1.
    pub monitoring_window_hours: Option<u32>,
    /// `min_jobs_for_rollback`.
    pub min_jobs_for_rollback: Option<u32>,
    /// `metadata`, replaced whole (must be a JSON object).
    pub metadata: Option<serde_json::Value>,
}

impl ConfigPatch {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(rate) = self.max_error_rate {
            if !rate.is_finite() || !(0.0..=100.0).contains(&rate) {
                return Err(ConfigError {
                    field: "max_error_rate".into(),
                    message: format!("`{rate}` is out of range: allowed a number from 0 to 100"),
                });
            }
        }
        if self.monitoring_window_hours == Some(0) {
            return Err(ConfigError {
                field: "monitoring_window_hours".into(),
                message: "`0` is out of range: allowed 1 or more".into(),
            });
        }
        if self.monitoring_window_hours.is_some_and(|h| h > i32::MAX as u32)
            || self.min_jobs_for_rollback.is_some_and(|h| h > i32::MAX as u32)
        {
            return Err(ConfigError { field: "monitoring_window_hours".into(), message: "too large".into() });
        }
        if let Some(m) = &self.metadata {
            if !m.is_object() {
                return Err(ConfigError { field: "metadata".into(), message: "must be a JSON object".into() });
            }
        }
        Ok(())
    }
}

/// A configuration change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Set `rollout_percentage` (0..=100); history `updated`.
    SetPercentage(u8),
    /// Switch the emergency stop on; history `emergency_stop` (the percentage is kept).
    EmergencyStop,
    /// Switch the emergency stop off; history `resume`.
    Resume,
    /// Switch auto-rollback on or off; history `updated`.
    SetAutoRollback(bool),
    /// Change other fields; history `updated`.
    Update(ConfigPatch),
    /// Add ids (canonical UUIDs) to `target_repositories`; history `whitelist_add`.
    WhitelistAdd(Vec<Uuid>),
    /// Remove ids from `target_repositories`; history `whitelist_remove`.
    WhitelistRemove(Vec<Uuid>),
    /// Add ids to `excluded_repositories`; history `exclude_add`.
    ExcludeAdd(Vec<Uuid>),
    /// Remove ids from `excluded_repositories`; history `exclude_remove`.
    ExcludeRemove(Vec<Uuid>),
    /// Percentage → 0 only if above 0 and not stopped; history `rollback`.
    Rollback,
}

impl Change {
    /// The history action written for this change.
    pub fn action(&self) -> HistoryAction {
        match self {
            Change::SetPercentage(_) | Change::SetAutoRollback(_) | Change::Update(_) => HistoryAction::Updated,
            Change::EmergencyStop => HistoryAction::EmergencyStop,
            Change::Resume => HistoryAction::Resume,
            Change::WhitelistAdd(_) => HistoryAction::WhitelistAdd,
            Change::WhitelistRemove(_) => HistoryAction::WhitelistRemove,
            Change::ExcludeAdd(_) => HistoryAction::ExcludeAdd,
            Change::ExcludeRemove(_) => HistoryAction::ExcludeRemove,
            Change::Rollback => HistoryAction::Rollback,
        }
    }

    fn requested_ids(&self) -> Option<&[Uuid]> {
        match self {
            Change::WhitelistAdd(ids)
            | Change::WhitelistRemove(ids)
            | Change::ExcludeAdd(ids)
            | Change::ExcludeRemove(ids) => Some(ids),
            _ => None,
        }
    }
}

/// A change with its audit data.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRequest {
    /// The change.
    pub change: Change,
    /// Why.
    pub reason: Option<String>,
    /// Who or what (at most 100 characters; longer fails the transaction).
    pub triggered_by: String,
    /// Extra details merged into the history row's metadata (e.g. the health evaluation
    /// behind a rollback).
    pub details: Option<serde_json::Value>,
}

impl ChangeRequest {
    /// A change by `triggered_by` for `reason`.
    pub fn new(change: Change, reason: Option<String>, triggered_by: impl Into<String>) -> ChangeRequest {
        ChangeRequest { change, reason, triggered_by: triggered_by.into(), details: None }
    }
}

/// What [`Store::apply_change`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeOutcome {
    /// Whether the change was made (false only for a rollback that had nothing to do).
    pub applied: bool,
    /// The configuration before, as read under the row lock.
    pub before: StoredConfig,
    /// The configuration after (equal to `before` when not applied).
    pub after: StoredConfig,
    /// The history row written (`None` when not applied).
    pub history: Option<HistoryEntry>,
}

/// The history metadata of a change: `previous`/`new` of every column that differs, the
/// requested ids, and the caller's details.
pub(crate) fn change_metadata(
    request: &ChangeRequest,
    before: &StoredConfig,
    after: &StoredConfig,
) -> serde_json::Value {
    let (b, a) = (before.to_json(), after.to_json());
    let mut previous = serde_json::Map::new();
    let mut new = serde_json::Map::new();
    if let (Some(b), Some(a)) = (b.as_object(), a.as_object()) {
        for (key, bv) in b {
            let av = a.get(key).cloned().unwrap_or(serde_json::Value::Null);
            if *bv != av {
                previous.insert(key.clone(), bv.clone());
                new.insert(key.clone(), av);
            }
        }
    }
    let mut meta = serde_json::Map::new();
    meta.insert("previous".into(), serde_json::Value::Object(previous));
    meta.insert("new".into(), serde_json::Value::Object(new));
    if let Some(ids) = request.change.requested_ids() {
        meta.insert("requested".into(), ids.iter().map(|u| serde_json::Value::String(u.to_string())).collect());
    }
    if let Some(serde_json::Value::Object(details)) = &request.details {
        for (k, v) in details {
            meta.insert(k.clone(), v.clone());
        }
    } else if let Some(details) = &request.details {
        meta.insert("details".into(), details.clone());
    }
    serde_json::Value::Object(meta)
}

/// A categorisation row of `repository_categories`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryRow {
    /// The repository.
    pub repository_id: Uuid,
    /// Its category.
    pub category: Category,
    /// The category's priority.
    pub priority_level: u8,
    /// Whether the category is `test`.
    pub is_test_repository: bool,
    /// The numbers it was computed from.
    pub stats: RepositoryStats,
    /// The activity score.
    pub monthly_activity_score: u8,
}

/// Counts to add to one metrics bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsDelta {
    /// The configuration.
    pub config_id: Uuid,
    /// The repository.
    pub repository_id: Uuid,
    /// The processor.
    pub processor: Processor,
    /// Start of the hour the outcomes fall in.
    pub hour_start: DateTime<Utc>,
    /// Time of the latest outcome in the delta (a state change between the hour start and
    /// this time starts a new bucket at the change).
    pub at: DateTime<Utc>,
    /// Successes to add.
    pub success_count: i64,
    /// Errors to add.
    pub error_count: i64,
    /// Processing time (ms) to add.
    pub processing_time_ms: i64,
    /// Jobs that reported a processing time.
    pub timed_jobs: i64,
    /// The latest error message, if any error.
    pub last_error_message: Option<String>,
    /// When the latest error happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// One outcome bucket of `rollout_metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsBucket {
    /// The configuration.
    pub config_id: Uuid,
    /// The repository.
    pub repository_id: Uuid,
    /// The processor.
    #[serde(serialize_with = "ser_processor")]
    pub processor: Processor,
    /// Successes.
    pub success_count: i64,
    /// Errors.
    pub error_count: i64,
    /// Jobs.
    pub total_jobs: i64,
    /// Sum of processing times (ms).
    pub total_processing_time_ms: i64,
    /// Jobs that reported a processing time.
    pub timed_jobs: i64,
    /// The stored mean (`total_processing_time_ms / timed_jobs`, 2 decimals).
    pub average_processing_time: Option<f64>,
    /// Latest error message.
    pub last_error_message: Option<String>,
    /// Latest error time.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Bucket start.
    pub window_start: DateTime<Utc>,
    /// Bucket end.
    pub window_end: DateTime<Utc>,
}

/// Metrics summed per processor and bucket start ([`Store::metrics_window`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowRow {
    /// The processor.
    pub processor: Processor,
    /// The bucket start.
    pub window_start: DateTime<Utc>,
    /// Successes.
    pub success_count: u64,
    /// Errors.
    pub error_count: u64,
    /// Jobs.
    pub total_jobs: u64,
    /// Sum of processing times (ms).
    pub total_processing_time_ms: u64,
    /// Jobs with a processing time.
    pub timed_jobs: u64,
}

/// A policy component to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPolicyVersion {
    /// The component bytes.
    pub bytes: Vec<u8>,
    /// Lowercase hex sha256 of the bytes.
    pub sha256: String,
    /// The policy's name.
    pub name: Option<String>,
    /// Its semantic version.
    pub semver: String,
    /// Notes.
    pub notes: Option<String>,
    /// Who uploaded it.
    pub uploaded_by: Option<String>,
}

/// A stored policy version (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersionRow {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// The policy's name.
    pub name: Option<String>,
    /// Its semantic version.
    pub semver: String,
    /// Notes.
    pub notes: Option<String>,
    /// Who uploaded it.
    pub uploaded_by: Option<String>,
    /// When.
    pub uploaded_at: DateTime<Utc>,
    /// Whether it is the active policy.
    pub active: bool,
    /// When it was last activated.
    pub activated_at: Option<DateTime<Utc>>,
    /// Size in bytes.
    pub size: i64,
}

/// The active version's sha256 among `rows`, and the version a revert goes back to: the most
/// recently activated one that is not active (shared by `POST /v1/policies/revert` and
/// `rollout policy revert`).
pub fn revert_target(rows: &[PolicyVersionRow]) -> (Option<&str>, Option<&str>) {
    let active = rows.iter().find(|r| r.active).map(|r| r.sha256.as_str());
    let target = rows
        .iter()
        .filter(|r| !r.active && r.activated_at.is_some())
        .max_by_key(|r| r.activated_at)
        .map(|r| r.sha256.as_str());
    (active, target)
}

fn ser_processor<S: serde::Serializer>(p: &Processor, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

/// Start of the UTC hour of `t`.
pub fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

pub(crate) fn parse_strategy(s: &str) -> StoreResult<Strategy> {
    Strategy::parse(s).map_err(|e| StoreError::Corrupt { column: "rollout_strategy", message: e.to_string() })
}

pub(crate) fn parse_category(s: &str) -> StoreResult<Category> {
    Category::parse(s).map_err(|e| StoreError::Corrupt { column: "category", message: e.to_string() })
}

pub(crate) fn parse_processor(s: &str) -> StoreResult<Processor> {
    Processor::parse(s).map_err(|e| StoreError::Corrupt { column: "processor_type", message: e.to_string() })
}

pub(crate) fn parse_action(s: &str) -> StoreResult<HistoryAction> {
    HistoryAction::parse(s)
        .ok_or_else(|| StoreError::Corrupt { column: "action", message: format!("unknown action `{s}`") })
}

pub(crate) fn to_u8(column: &'static str, v: i64) -> StoreResult<u8> {
    u8::try_from(v).map_err(|_| StoreError::Corrupt { column, message: format!("`{v}` is out of range") })
}

pub(crate) fn to_u32(column: &'static str, v: i64) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt { column, message: format!("`{v}` is out of range") })
}

pub(crate) fn to_u64(column: &'static str, v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt { column, message: format!("`{v}` is out of range") })
}
