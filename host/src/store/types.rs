//! The rows the store reads and writes, and the conversions of their column values.

use super::{StoreError, StoreResult};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rollout_policy::{Category, Config, Processor, RepositoryStats, Strategy};
use serde::Serialize;
use uuid::Uuid;

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
    /// Last update time (on Postgres the start of the writing transaction: do not order
    /// rows by it, use [`StoredConfig::version`]).
    pub updated_at: DateTime<Utc>,
    /// `config_version`: 1 when created, bumped by exactly 1 by every applied change (and by
    /// every other `UPDATE` of the row, through a trigger). Of two reads of one
    /// configuration, the one with the larger version is the newer.
    pub version: i64,
    /// `rolled_back`: an automatic rollback is in force (set by [`Change::Rollback`], cleared
    /// by the next [`Change::SetPercentage`]); while set, an environment override of the
    /// percentage does not apply (SPEC §4: safety beats an override).
    ///
    /// [`Change::Rollback`]: super::Change::Rollback
    /// [`Change::SetPercentage`]: super::Change::SetPercentage
    pub rolled_back: bool,
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

    /// The inverse of [`StoredConfig::to_json`] for a whole row: the object `to_json` gives
    /// plus the columns it leaves out — `id`, `config_version`, `rolled_back`,
    /// `state_changed_at`, `created_at`, `updated_at` (RFC 3339) — as
    /// [`super::config_versions::snapshot_json`] writes them and `rollout_config_versions.config`
    /// holds them. A missing or mistyped key is an error naming the key.
    pub fn from_json(value: &serde_json::Value) -> StoreResult<StoredConfig> {
        fn field<'v>(value: &'v serde_json::Value, key: &str) -> StoreResult<&'v serde_json::Value> {
            value.get(key).ok_or_else(|| corrupt_key(key, "is missing"))
        }
        fn corrupt_key(key: &str, problem: &str) -> StoreError {
            StoreError::Corrupt { column: "config", message: format!("snapshot key `{key}` {problem}") }
        }
        fn int(value: &serde_json::Value, key: &str) -> StoreResult<i64> {
            field(value, key)?.as_i64().ok_or_else(|| corrupt_key(key, "is not an integer"))
        }
        fn boolean(value: &serde_json::Value, key: &str) -> StoreResult<bool> {
            field(value, key)?.as_bool().ok_or_else(|| corrupt_key(key, "is not a boolean"))
        }
        fn text<'v>(value: &'v serde_json::Value, key: &str) -> StoreResult<&'v str> {
            field(value, key)?.as_str().ok_or_else(|| corrupt_key(key, "is not a string"))
        }
        fn ids(value: &serde_json::Value, key: &str) -> StoreResult<Vec<String>> {
            serde_json::from_value(field(value, key)?.clone())
                .map_err(|e| corrupt_key(key, &format!("is not a list of strings: {e}")))
        }
        fn time(value: &serde_json::Value, key: &str) -> StoreResult<DateTime<Utc>> {
            let s = text(value, key)?;
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| corrupt_key(key, &format!("`{s}` is not an RFC 3339 time: {e}")))
        }
        let range = |key: &str, v: i64| corrupt_key(key, &format!("`{v}` is out of range"));
        let percentage = int(value, "rollout_percentage")?;
        let window = int(value, "monitoring_window_hours")?;
        let min_jobs = int(value, "min_jobs_for_rollback")?;
        let id = text(value, "id")?;
        let config = Config {
            feature_name: text(value, "feature_name")?.to_owned(),
            rollout_percentage: u8::try_from(percentage).map_err(|_| range("rollout_percentage", percentage))?,
            is_active: boolean(value, "is_active")?,
            target_repositories: ids(value, "target_repositories")?,
            excluded_repositories: ids(value, "excluded_repositories")?,
            rollout_strategy: Strategy::parse(text(value, "rollout_strategy")?)
                .map_err(|e| corrupt_key("rollout_strategy", &e.to_string()))?,
            max_error_rate: field(value, "max_error_rate")?
                .as_f64()
                .ok_or_else(|| corrupt_key("max_error_rate", "is not a number"))?,
            monitoring_window_hours: u32::try_from(window).map_err(|_| range("monitoring_window_hours", window))?,
            auto_rollback_enabled: boolean(value, "auto_rollback_enabled")?,
            emergency_stop: boolean(value, "emergency_stop")?,
            min_jobs_for_rollback: u32::try_from(min_jobs).map_err(|_| range("min_jobs_for_rollback", min_jobs))?,
        };
        Ok(StoredConfig {
            id: Uuid::parse_str(id).map_err(|e| corrupt_key("id", &format!("`{id}` is not a UUID: {e}")))?,
            config,
            metadata: field(value, "metadata")?.clone(),
            state_changed_at: time(value, "state_changed_at")?,
            created_at: time(value, "created_at")?,
            updated_at: time(value, "updated_at")?,
            version: int(value, "config_version")?,
            rolled_back: boolean(value, "rolled_back")?,
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

/// A history row to append with [`Store::append_history`](super::Store::append_history).
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
    /// Those jobs per processing-time bucket ([`super::latency`]): `(bucket, jobs)`,
    /// ascending by bucket, no bucket twice, no zero count (empty without timed jobs).
    pub latency_buckets: Vec<(u16, i64)>,
    /// The latest error message, if any error.
    pub last_error_message: Option<String>,
    /// When the latest error happened.
    pub last_error_at: Option<DateTime<Utc>>,
}

impl MetricsDelta {
    /// The bucket key: configuration, repository, processor, hour.
    pub fn key(&self) -> (Uuid, Uuid, Processor, DateTime<Utc>) {
        (self.config_id, self.repository_id, self.processor, self.hour_start)
    }

    /// Add `other` (same key) to this delta: counts saturate, the latest time and the
    /// latest error win.
    pub fn absorb(&mut self, other: &MetricsDelta) {
        self.at = self.at.max(other.at);
        self.success_count = self.success_count.saturating_add(other.success_count);
        self.error_count = self.error_count.saturating_add(other.error_count);
        self.processing_time_ms = self.processing_time_ms.saturating_add(other.processing_time_ms);
        self.timed_jobs = self.timed_jobs.saturating_add(other.timed_jobs);
        merge_latency_buckets(&mut self.latency_buckets, &other.latency_buckets);
        if let Some(at) = other.last_error_at {
            self.note_error(at, other.last_error_message.as_deref());
        }
    }

    /// Keep `message` as the latest error unless a later one is kept already.
    pub(crate) fn note_error(&mut self, at: DateTime<Utc>, message: Option<&str>) {
        if self.last_error_at.is_none_or(|t| at >= t) {
            self.last_error_at = Some(at);
            self.last_error_message = message.map(str::to_owned);
        }
    }
}

/// Add the sparse bucket counts `other` to `into` (both ascending by bucket); counts
/// saturate.
fn merge_latency_buckets(into: &mut Vec<(u16, i64)>, other: &[(u16, i64)]) {
    if other.is_empty() {
        return;
    }
    if into.is_empty() {
        into.extend_from_slice(other);
        return;
    }
    let mut out = Vec::with_capacity(into.len() + other.len());
    let (mut a, mut b) = (into.iter().peekable(), other.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(&&(ba, ca)), Some(&&(bb, cb))) => {
                if ba == bb {
                    out.push((ba, ca.saturating_add(cb)));
                    a.next();
                    b.next();
                } else if ba < bb {
                    out.push((ba, ca));
                    a.next();
                } else {
                    out.push((bb, cb));
                    b.next();
                }
            }
            (Some(&&x), None) => {
                out.push(x);
                a.next();
            }
            (None, Some(&&y)) => {
                out.push(y);
                b.next();
            }
            (None, None) => break,
        }
    }
    *into = out;
}

/// The outcomes of one submission, under the idempotency key its caller made for it
/// ([`Store::upsert_metrics_batches`](super::Store::upsert_metrics_batches)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsBatch {
    /// The key: made once per submission and reused when the submission is retried.
    pub batch_id: Uuid,
    /// The submission's outcomes, merged per bucket ([`super::recorder::aggregate`]).
    pub deltas: Vec<MetricsDelta>,
}

/// Merge deltas with the same key ([`MetricsDelta::absorb`]); the first occurrence of a key
/// keeps its place.
pub fn merge_deltas(deltas: impl IntoIterator<Item = MetricsDelta>) -> Vec<MetricsDelta> {
    let mut index: std::collections::HashMap<(Uuid, Uuid, Processor, DateTime<Utc>), usize> =
        std::collections::HashMap::new();
    let mut out: Vec<MetricsDelta> = Vec::new();
    for d in deltas {
        match index.get(&d.key()) {
            Some(&i) => out[i].absorb(&d),
            None => {
                index.insert(d.key(), out.len());
                out.push(d);
            }
        }
    }
    out
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

/// Metrics summed per processor and bucket start ([`Store::metrics_window`](super::Store::metrics_window)).
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

/// Timed jobs of one processor in one processing-time bucket, summed over a window
/// ([`Store::latency_window`](super::Store::latency_window)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyRow {
    /// The processor.
    pub processor: Processor,
    /// The bucket ([`super::latency`]).
    pub bucket: u16,
    /// Jobs whose processing time fell in the bucket.
    pub count: u64,
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

/// A sum read back as a float (SQLite `total()`, which cannot overflow), as a count:
/// saturating at `i64::MAX` like the Postgres sums (exact below 2^53).
pub(crate) fn total_to_u64(column: &'static str, v: f64) -> StoreResult<u64> {
    if v.is_nan() || v < 0.0 {
        return Err(StoreError::Corrupt { column, message: format!("`{v}` is out of range") });
    }
    // `as` saturates; i64::MAX as f64 rounds up to 2^63
    Ok(if v >= i64::MAX as f64 { i64::MAX as u64 } else { v as u64 })
}
