//! The rollout manager: every operation of the seed's `HybridRolloutManager`, for one
//! feature, over a [`Store`] and a policy ([`Decide`]).
//!
//! - **Decisions** ([`Manager::is_eligible`], [`Manager::route`], [`Manager::route_batch`])
//!   read only memory: the configuration snapshot (database values with the environment
//!   overrides applied) and the categories are cached; a decision makes no database round
//!   trip and writes nothing. [`Manager::reload`] re-reads both (call it when Postgres
//!   notifies [`crate::store::CHANGE_CHANNEL`] with this feature's name, or periodically).
//! - **Changes** (percentage, stop, resume, auto-rollback, whitelist and exclusion edits)
//!   commit together with their history row ([`Store::apply_change`]) and refresh the cache.
//! - **Outcomes** ([`Manager::record_metrics`]) go through group commit
//!   ([`crate::store::recorder`]): `Ok` means durable.
//! - **Health** ([`Manager::check_and_trigger_auto_rollback`]) asks the policy over the
//!   SPEC §2.5 window and rolls back with a conditional update: it fires once, whoever asks.
//! - **Stats** ([`Manager::get_rollout_stats`]) count eligibility with the same policy and
//!   snapshot as routing.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rollout::engine::NativePolicy;
//! use rollout::env::EnvOverrides;
//! use rollout::manager::Manager;
//! use rollout::store::Store;
//! use std::sync::Arc;
//!
//! let store = Store::connect("sqlite://rollout.db").await?;
//! store.migrate().await?;
//! let manager = Manager::open(store, Arc::new(NativePolicy), "hybrid_progressive_capture", EnvOverrides::from_env()?).await?;
//! manager.set_percentage(10, Some("first step"), "alice").await?;
//! let decision = manager.route("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", &Default::default());
//! println!("{}", decision.processor);
//! # Ok(()) }
//! ```

pub mod stats;

use crate::engine::{ConfigSnapshot, Decide, PolicyVersion};
use crate::env::{ActiveOverride, EnvOverrides};
use crate::store::recorder::{MetricsRecorder, Outcome};
use crate::store::{
    Change, ChangeOutcome, ChangeRequest, ConfigPatch, HistoryAction, HistoryEntry, NewHistory, Store, StoreError,
    StoredConfig, WindowRow,
};
use arc_swap::ArcSwap;
use chrono::{DateTime, TimeDelta, Utc};
use rollout_policy::{
    Categorization, Category, Eligibility, HealthAction, Job, Processor, ProcessorWindow, RepoId, Repository,
    RepositoryStats, RouteDecision,
};
use serde::Serialize;
use stats::{cost_estimate, errors_by_kind, trend_direction, CostEstimate, ErrorTrend, TrendPoint};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// `triggered_by` of the rollbacks the health check makes.
pub const AUTO_ROLLBACK_TRIGGER: &str = "auto_rollback";

/// `triggered_by` of the `env_override` history rows.
pub const ENV_TRIGGER: &str = "environment";

/// Something the manager could not do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManagerError {
    /// The database failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The policy gave no answer (trap, timeout, none loaded).
    #[error("the policy could not categorize repository `{0}`")]
    PolicyUnavailable(String),
    /// Categorisation needs numbers that are neither given nor in `repositories`.
    #[error("repository `{0}` has no row in repositories and no stats were given")]
    NoStats(String),
    /// A percentage outside 0..=100.
    #[error("invalid percentage `{0}`: allowed 0..=100")]
    InvalidPercentage(u32),
    /// An edit without ids.
    #[error("no repository ids given")]
    NoIds,
}

/// Result of manager operations.
pub type ManagerResult<T> = Result<T, ManagerError>;

struct State {
    stored: StoredConfig,
    snapshot: Arc<ConfigSnapshot>,
}

/// The rollout manager of one feature. Share it behind an `Arc`; open it once per process
/// and feature (each open writes the `env_override` row when overrides are in force).
pub struct Manager {
    store: Store,
    policy: Arc<dyn Decide>,
    feature: String,
    overrides: EnvOverrides,
    state: ArcSwap<State>,
    categories: ArcSwap<HashMap<RepoId, Category>>,
    recorder: MetricsRecorder,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("feature", &self.feature)
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// The database.
    Database,
    /// An environment override (SPEC §4).
    Environment,
}

/// An effective value with its source and the database's own value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    /// The value in force.
    pub value: T,
    /// Where it comes from.
    pub source: ValueSource,
    /// The database's value (equal to `value` unless overridden).
    pub database_value: T,
}

impl<T: Clone + PartialEq> Sourced<T> {
    fn new(database_value: T, overridden: Option<T>) -> Sourced<T> {
        match overridden {
            Some(value) => Sourced { value, source: ValueSource::Environment, database_value },
            None => Sourced { value: database_value.clone(), source: ValueSource::Database, database_value },
        }
    }
}

/// The configuration in force: database values with environment overrides marked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveConfig {
    /// `rollout_configuration.id`.
    pub id: Uuid,
    /// The feature.
    pub feature_name: String,
    /// The percentage.
    pub rollout_percentage: Sourced<u8>,
    /// Whether the rollout is active.
    pub is_active: bool,
    /// The whitelist.
    pub target_repositories: Vec<String>,
    /// The exclusions.
    pub excluded_repositories: Vec<String>,
    /// The strategy.
    pub rollout_strategy: Sourced<String>,
    /// The error rate (percent) above which to roll back.
    pub max_error_rate: Sourced<f64>,
    /// The health window.
    pub monitoring_window_hours: u32,
    /// Auto-rollback.
    pub auto_rollback_enabled: Sourced<bool>,
    /// The emergency stop.
    pub emergency_stop: Sourced<bool>,
    /// Fewest jobs before a rollback.
    pub min_jobs_for_rollback: u32,
    /// The metadata (`cost_per_job`, …).
    pub metadata: serde_json::Value,
    /// Last change of percentage, strategy or stop.
    pub state_changed_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
    /// The version of the snapshot decisions use now.
    pub config_version: u64,
    /// The overrides in force.
    pub env_overrides: Vec<ActiveOverride>,
}

/// A job outcome as callers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeInput {
    /// A UUID (or `owner/name`, resolved through `repositories`).
    pub repository_id: String,
    /// Where the job ran.
    pub processor: Processor,
    /// Whether it succeeded.
    pub success: bool,
    /// Processing time in milliseconds, when known.
    pub processing_time_ms: Option<u64>,
    /// The error message of a failure.
    pub error_message: Option<String>,
}

/// Job counts of one processor in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorStats {
    /// Jobs.
    pub total_jobs: u64,
    /// Successes.
    pub success_count: u64,
    /// Errors.
    pub error_count: u64,
    /// `100 × errors / jobs` (0 without jobs).
    pub error_rate: f64,
    /// Exact mean processing time (ms) over the jobs that reported one.
    pub average_processing_time_ms: Option<f64>,
}

/// A health evaluation and what was done about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The feature.
    pub feature_name: String,
    /// `ok`, `warning` or `critical` (`unknown` when the policy gave no answer).
    pub level: String,
    /// `none` or `rollback` (`none` when the policy gave no answer).
    pub action: String,
    /// `100 × errors / jobs` in the window.
    pub error_rate: f64,
    /// Jobs in the window.
    pub total_jobs: u64,
    /// Why, in words.
    pub reason: String,
    /// Whether the policy answered.
    pub policy_answered: bool,
    /// Start of the evaluation window: the later of now − window hours and the last change
    /// of percentage, strategy or stop.
    pub window_start: DateTime<Utc>,
    /// The configured window.
    pub window_hours: u32,
    /// Per-processor counts in the window.
    pub processors: BTreeMap<String, ProcessorStats>,
    /// Whether this check rolled the rollout back.
    pub rolled_back: bool,
    /// The `rollback` history row this check wrote.
    pub rollback: Option<HistoryEntry>,
}

/// The statistics of a rollout (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutStats {
    /// The feature.
    pub feature_name: String,
    /// When computed.
    pub generated_at: DateTime<Utc>,
    /// The policy that counted eligibility.
    pub policy_version: Option<PolicyVersion>,
    /// The configuration snapshot used (the one routing uses).
    pub config_version: u64,
    /// Effective percentage.
    pub rollout_percentage: u8,
    /// Effective strategy.
    pub rollout_strategy: String,
    /// Effective stop.
    pub emergency_stop: bool,
    /// Whether active.
    pub is_active: bool,
    /// Known repositories (`repositories` ∪ categorised).
    pub total_repositories: u64,
    /// Categorised repositories.
    pub categorized_repositories: u64,
    /// Known repositories the policy finds eligible.
    pub eligible_repositories: u64,
    /// Categorised repositories the policy finds eligible.
    pub eligible_categorized_repositories: u64,
    /// `100 × eligible categorised ÷ categorised` (0 when none is categorised).
    pub participation_rate: f64,
    /// Categorised repositories per category (every category present).
    pub categories: BTreeMap<String, u64>,
    /// The stats window in hours (`monitoring_window_hours`).
    pub window_hours: u32,
    /// Start of the stats window (now − window hours, hour buckets overlapping it counted).
    pub window_start: DateTime<Utc>,
    /// Jobs in the window.
    pub total_jobs: u64,
    /// Successes in the window.
    pub success_count: u64,
    /// Errors in the window.
    pub error_count: u64,
    /// `100 × errors / jobs`.
    pub error_rate: f64,
    /// `100 × successes / jobs`.
    pub success_rate: f64,
    /// Jobs per processor (every processor present).
    pub processor_distribution: BTreeMap<String, u64>,
    /// Counts, error rate and mean time per processor (every processor present).
    pub processors: BTreeMap<String, ProcessorStats>,
    /// Errors grouped by the kind of each bucket's `last_error_message` (every kind present).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Hourly error rate and its direction.
    pub error_trend: ErrorTrend,
    /// Cost estimate; absent when `metadata.cost_per_job` is not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostEstimate>,
}

/// What categorize-all did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategorizeSummary {
    /// Repositories read from `repositories`.
    pub total: u64,
    /// Categorised and stored.
    pub categorized: u64,
    /// Per category.
    pub by_category: BTreeMap<String, u64>,
    /// Repositories the policy could not categorise.
    pub failed: Vec<Uuid>,
}

fn processor_stats(windows: &[WindowRow]) -> BTreeMap<String, ProcessorStats> {
    let mut out = BTreeMap::new();
    for p in Processor::ALL {
        let rows = windows.iter().filter(|w| w.processor == *p);
        let (mut ok, mut err, mut total, mut tsum, mut tcnt) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for w in rows {
            ok += w.success_count;
            err += w.error_count;
            total += w.total_jobs;
            tsum += w.total_processing_time_ms;
            tcnt += w.timed_jobs;
        }
        out.insert(
            p.as_str().to_owned(),
            ProcessorStats {
                total_jobs: total,
                success_count: ok,
                error_count: err,
                error_rate: rate(err, total),
                average_processing_time_ms: (tcnt > 0).then(|| tsum as f64 / tcnt as f64),
            },
        );
    }
    out
}

fn rate(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

impl Manager {
    /// Open the manager of `feature`: create its configuration when absent (a `created`
    /// history row), write one `env_override` history row when `overrides` are in force,
    /// load the configuration and the categories, and start the metrics flusher (on the
    /// current tokio runtime).
    pub async fn open(
        store: Store,
        policy: Arc<dyn Decide>,
        feature: &str,
        overrides: EnvOverrides,
    ) -> ManagerResult<Manager> {
        Manager::open_with(store, policy, feature, overrides, true).await
    }

    /// [`Manager::open`] without the `env_override` history row: for short-lived processes
    /// (each operator CLI command) whose overrides shape only what they print. The row
    /// records that a serving process runs with overrides; one per CLI command would bury
    /// the history in noise.
    pub async fn open_quietly(
        store: Store,
        policy: Arc<dyn Decide>,
        feature: &str,
        overrides: EnvOverrides,
    ) -> ManagerResult<Manager> {
        Manager::open_with(store, policy, feature, overrides, false).await
    }

    async fn open_with(
        store: Store,
        policy: Arc<dyn Decide>,
        feature: &str,
        overrides: EnvOverrides,
        audit_overrides: bool,
    ) -> ManagerResult<Manager> {
        let stored = store.ensure_config(feature, "manager").await?;
        if audit_overrides && !overrides.is_empty() {
            let effective = overrides.apply(&stored.config);
            let active = overrides.active();
            let mut previous = serde_json::Map::new();
            let mut new = serde_json::Map::new();
            let (db, env) = (stored.to_json(), {
                let mut s = stored.clone();
                s.config = effective.clone();
                s.to_json()
            });
            for o in &active {
                previous.insert(o.field.to_owned(), db.get(o.field).cloned().unwrap_or_default());
                new.insert(o.field.to_owned(), env.get(o.field).cloned().unwrap_or_default());
            }
            let variables: serde_json::Map<String, serde_json::Value> =
                active.iter().map(|o| (o.variable.to_owned(), serde_json::Value::String(o.value.clone()))).collect();
            let entry = NewHistory {
                action: HistoryAction::EnvOverride,
                previous_percentage: Some(i32::from(stored.config.rollout_percentage)),
                new_percentage: Some(i32::from(effective.rollout_percentage)),
                reason: Some(format!(
                    "environment overrides in force: {}",
                    active.iter().map(|o| format!("{}={}", o.variable, o.value)).collect::<Vec<_>>().join(", ")
                )),
                triggered_by: ENV_TRIGGER.to_owned(),
                metadata: serde_json::json!({
                    "variables": variables,
                    "previous": previous,
                    "new": new,
                    "pid": std::process::id(),
                }),
            };
            store.append_history(Some(feature), &entry).await?;
        }
        let categories = load_categories(&store).await?;
        let snapshot = ConfigSnapshot::new(overrides.apply(&stored.config));
        let recorder = MetricsRecorder::spawn(store.clone());
        Ok(Manager {
            store,
            policy,
            feature: feature.to_owned(),
            overrides,
            state: ArcSwap::from_pointee(State { stored, snapshot }),
            categories: ArcSwap::from_pointee(categories),
            recorder,
        })
    }

    /// The feature.
    pub fn feature(&self) -> &str {
        &self.feature
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<dyn Decide> {
        &self.policy
    }

    /// The environment overrides in force.
    pub fn overrides(&self) -> &EnvOverrides {
        &self.overrides
    }

    /// The snapshot decisions use now (database values with overrides applied).
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.state.load().snapshot.clone()
    }

    /// The configuration as stored (no overrides), as last read.
    pub fn stored_config(&self) -> StoredConfig {
        self.state.load().stored.clone()
    }

    /// The configuration in force, overrides marked as coming from the environment.
    pub fn effective_config(&self) -> EffectiveConfig {
        let state = self.state.load();
        let (s, o) = (&state.stored, &self.overrides);
        let c = &s.config;
        EffectiveConfig {
            id: s.id,
            feature_name: c.feature_name.clone(),
            rollout_percentage: Sourced::new(c.rollout_percentage, o.rollout_percentage),
            is_active: c.is_active,
            target_repositories: c.target_repositories.clone(),
            excluded_repositories: c.excluded_repositories.clone(),
            rollout_strategy: Sourced::new(
                c.rollout_strategy.as_str().to_owned(),
                o.rollout_strategy.map(|s| s.as_str().to_owned()),
            ),
            max_error_rate: Sourced::new(c.max_error_rate, o.max_error_rate),
            monitoring_window_hours: c.monitoring_window_hours,
            auto_rollback_enabled: Sourced::new(c.auto_rollback_enabled, o.auto_rollback_enabled),
            emergency_stop: Sourced::new(c.emergency_stop, o.emergency_stop),
            min_jobs_for_rollback: c.min_jobs_for_rollback,
            metadata: s.metadata.clone(),
            state_changed_at: s.state_changed_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
            config_version: state.snapshot.version(),
            env_overrides: o.active(),
        }
    }

    fn install(&self, stored: StoredConfig) {
        let snapshot = ConfigSnapshot::new(self.overrides.apply(&stored.config));
        self.state.store(Arc::new(State { stored, snapshot }));
    }

    /// Install a configuration read from the database unless a newer one is installed
    /// already: a re-read that started before a change committed must not undo it.
    fn install_read(&self, stored: StoredConfig) {
        if stored.updated_at >= self.state.load().stored.updated_at {
            self.install(stored);
        }
    }

    /// Re-read the configuration and the categories (a new snapshot version).
    pub async fn reload(&self) -> ManagerResult<()> {
        let stored = self.store.get_config(&self.feature).await?;
        let categories = load_categories(&self.store).await?;
        self.categories.store(Arc::new(categories));
        self.install_read(stored);
        Ok(())
    }

    async fn reload_config(&self) -> ManagerResult<()> {
        let stored = self.store.get_config(&self.feature).await?;
        self.install_read(stored);
        Ok(())
    }

    /// The repository as the policy sees it: the id canonicalised, the cached category.
    pub fn repository(&self, repository_id: &str) -> Repository {
        let id = RepoId::parse(repository_id.trim());
        let category = self.categories.load().get(&id).copied();
        Repository { id, category }
    }

    /// Eligibility of one repository (memory only; never writes).
    pub fn is_eligible(&self, repository_id: &str) -> Eligibility {
        self.policy.is_eligible(&self.snapshot(), &self.repository(repository_id))
    }

    /// Eligibility of many repositories, in order, with one snapshot.
    pub fn is_eligible_batch(&self, repository_ids: &[String]) -> Vec<Eligibility> {
        let repos: Vec<Repository> = repository_ids.iter().map(|id| self.repository(id)).collect();
        self.policy.is_eligible_batch(&self.snapshot(), &repos)
    }

    /// Where a job runs (memory only; never writes).
    pub fn route(&self, repository_id: &str, job: &Job) -> RouteDecision {
        self.policy.route(&self.snapshot(), &self.repository(repository_id), job)
    }

    /// Where many jobs run, in order, with one snapshot.
    pub fn route_batch(&self, requests: &[(String, Job)]) -> Vec<RouteDecision> {
        let requests: Vec<(Repository, Job)> =
            requests.iter().map(|(id, job)| (self.repository(id), job.clone())).collect();
        self.policy.route_batch(&self.snapshot(), &requests)
    }

    /// Categorise one repository (a UUID or `owner/name`) with the policy and store it; the
    /// numbers come from `stats`, else from `repositories`.
    pub async fn categorize_repository(
        &self,
        repository_id: &str,
        stats: Option<RepositoryStats>,
    ) -> ManagerResult<Categorization> {
        let id = self.store.resolve_repository_id(repository_id).await?;
        let stats = match stats {
            Some(s) => s,
            None => {
                self.store.repository_stats(id).await?.ok_or_else(|| ManagerError::NoStats(repository_id.to_owned()))?
            }
        };
        let c =
            self.policy.categorize(&stats).ok_or_else(|| ManagerError::PolicyUnavailable(repository_id.to_owned()))?;
        self.store.upsert_categories(&[category_row(id, stats, &c)]).await?;
        let mut map = HashMap::clone(&self.categories.load());
        map.insert(RepoId::Uuid(id.as_u128()), c.category);
        self.categories.store(Arc::new(map));
        Ok(c)
    }

    /// Categorise every repository of `repositories`, with a progress bar on stderr when it
    /// is a terminal.
    pub async fn categorize_all(&self) -> ManagerResult<CategorizeSummary> {
        use std::io::IsTerminal;
        self.categorize_all_with_progress(std::io::stderr().is_terminal()).await
    }

    /// Categorise every repository of `repositories`, storing in batches of 500; `progress`
    /// shows a progress bar on stderr.
    pub async fn categorize_all_with_progress(&self, progress: bool) -> ManagerResult<CategorizeSummary> {
        let repos = self.store.list_repository_stats().await?;
        let bar = if progress {
            let bar = indicatif::ProgressBar::new(repos.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} categorised ({eta} left)")
            {
                bar.set_style(style);
            }
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut summary = CategorizeSummary {
            total: repos.len() as u64,
            categorized: 0,
            by_category: Category::ALL.iter().map(|c| (c.as_str().to_owned(), 0)).collect(),
            failed: Vec::new(),
        };
        for chunk in repos.chunks(500) {
            let mut rows = Vec::with_capacity(chunk.len());
            for (id, stats) in chunk {
                match self.policy.categorize(stats) {
                    Some(c) => {
                        *summary.by_category.entry(c.category.as_str().to_owned()).or_default() += 1;
                        rows.push(category_row(*id, *stats, &c));
                    }
                    None => summary.failed.push(*id),
                }
            }
            self.store.upsert_categories(&rows).await?;
            summary.categorized += rows.len() as u64;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        self.categories.store(Arc::new(load_categories(&self.store).await?));
        Ok(summary)
    }

    async fn change(&self, change: Change, reason: Option<&str>, triggered_by: &str) -> ManagerResult<ChangeOutcome> {
        let request = ChangeRequest::new(change, reason.map(str::to_owned), triggered_by);
        let outcome = self.store.apply_change(&self.feature, &request).await?;
        self.install(outcome.after.clone());
        Ok(outcome)
    }

    /// Set the percentage (history `updated`, previous and new percentage).
    pub async fn set_percentage(
        &self,
        percentage: u32,
        reason: Option<&str>,
        triggered_by: &str,
    ) -> ManagerResult<ChangeOutcome> {
        let p =
            u8::try_from(percentage).ok().filter(|p| *p <= 100).ok_or(ManagerError::InvalidPercentage(percentage))?;
        self.change(Change::SetPercentage(p), reason, triggered_by).await
    }

    /// Switch the emergency stop on (history `emergency_stop`; the percentage is kept).
    pub async fn emergency_stop(&self, reason: &str, triggered_by: &str) -> ManagerResult<ChangeOutcome> {
        self.change(Change::EmergencyStop, Some(reason), triggered_by).await
    }

    /// Switch the emergency stop off (history `resume`).
    pub async fn resume(&self, reason: &str, triggered_by: &str) -> ManagerResult<ChangeOutcome> {
        self.change(Change::Resume, Some(reason), triggered_by).await
    }

    /// Switch auto-rollback on or off (history `updated`).
    pub async fn set_auto_rollback(
        &self,
        enabled: bool,
        reason: Option<&str>,
        triggered_by: &str,
    ) -> ManagerResult<ChangeOutcome> {
        self.change(Change::SetAutoRollback(enabled), reason, triggered_by).await
    }

    /// Change other fields (strategy, activity, thresholds, metadata; history `updated`).
    pub async fn update(
        &self,
        patch: ConfigPatch,
        reason: Option<&str>,
        triggered_by: &str,
    ) -> ManagerResult<ChangeOutcome> {
        self.change(Change::Update(patch), reason, triggered_by).await
    }

    async fn ids(&self, ids: &[String]) -> ManagerResult<Vec<Uuid>> {
        if ids.is_empty() {
            return Err(ManagerError::NoIds);
        }
        Ok(self.store.resolve_repository_ids(ids).await?)
    }

    /// Add repositories (UUIDs or `owner/name`) to the whitelist (history `whitelist_add`).
    pub async fn whitelist_add(
        &self,
        ids: &[String],
        reason: Option<&str>,
        triggered_by: &str,
    ) -> ManagerResult<ChangeOutcome> {
        let ids = self.ids(ids).await?;
        self.change(Change::WhitelistAdd(ids), reason, triggered_by).await
    }

    /// Remove repositories from the whitelist (history `whitelist_remove`).
    pub async fn whitelist_remove(
        &self,
        ids: &[String],
        reason: Option<&str>,
        triggered_by: &str,
    ) -> ManagerResult<ChangeOutcome> {
        let ids = self.ids(ids).await?;
        self.change(Change::WhitelistRemove(ids), reason, triggered_by).await
    }

    /// Exclude repositories (history `exclude_add`).
    pub async fn exclude_add(
        &self,
        ids: &[String],
        reason: Option<&str>,
        triggered_by: &str,
    ) -> ManagerResult<ChangeOutcome> {
        let ids = self.ids(ids).await?;
        self.change(Change::ExcludeAdd(ids), reason, triggered_by).await
    }

    /// Lift exclusions (history `exclude_remove`).
    pub async fn exclude_remove(
        &self,
        ids: &[String],
        reason: Option<&str>,
        triggered_by: &str,
    ) -> ManagerResult<ChangeOutcome> {
        let ids = self.ids(ids).await?;
        self.change(Change::ExcludeRemove(ids), reason, triggered_by).await
    }

    /// The history of the feature, newest first.
    pub async fn history(&self, limit: u32) -> ManagerResult<Vec<HistoryEntry>> {
        Ok(self.store.history(&self.feature, limit).await?)
    }

    async fn to_outcome(&self, input: OutcomeInput, config_id: Uuid, at: DateTime<Utc>) -> ManagerResult<Outcome> {
        let repository_id = self.store.resolve_repository_id(&input.repository_id).await?;
        Ok(Outcome {
            config_id,
            repository_id,
            processor: input.processor,
            success: input.success,
            processing_time_ms: input.processing_time_ms,
            error_message: if input.success { None } else { input.error_message },
            at,
        })
    }

    /// Record one job outcome; returns once it is durable (group commit).
    pub async fn record_metrics(&self, input: OutcomeInput) -> ManagerResult<()> {
        let config_id = self.state.load().stored.id;
        let outcome = self.to_outcome(input, config_id, Utc::now()).await?;
        Ok(self.recorder.record(outcome).await?)
    }

    /// Record several outcomes; all are validated first, then committed together.
    pub async fn record_metrics_batch(&self, inputs: Vec<OutcomeInput>) -> ManagerResult<()> {
        let config_id = self.state.load().stored.id;
        let now = Utc::now();
        let mut outcomes = Vec::with_capacity(inputs.len());
        for input in inputs {
            outcomes.push(self.to_outcome(input, config_id, now).await?);
        }
        Ok(self.recorder.record_many(outcomes).await?)
    }

    /// Health over the SPEC §2.5 window, with nothing done about it (re-reads the
    /// configuration first).
    pub async fn check_health(&self) -> ManagerResult<HealthReport> {
        self.reload_config().await?;
        self.evaluate().await
    }

    async fn evaluate(&self) -> ManagerResult<HealthReport> {
        let state = self.state.load_full();
        let config = state.snapshot.config();
        let now = Utc::now();
        let hours = i64::from(config.monitoring_window_hours.max(1));
        let since = now - TimeDelta::hours(hours);
        let changed = state.stored.state_changed_at;
        let rows = self.store.metrics_window(state.stored.id, since, changed).await?;
        let processors = processor_stats(&rows);
        let windows: Vec<ProcessorWindow> = Processor::ALL
            .iter()
            .filter_map(|p| {
                let s = processors.get(p.as_str())?;
                (s.total_jobs > 0).then_some(ProcessorWindow {
                    processor: *p,
                    success_count: s.success_count,
                    error_count: s.error_count,
                    total_jobs: s.total_jobs,
                    average_processing_time: s.average_processing_time_ms,
                })
            })
            .collect();
        let total_jobs: u64 = windows.iter().map(|w| w.total_jobs).sum();
        let errors: u64 = windows.iter().map(|w| w.error_count).sum();
        let health = self.policy.evaluate_health(config, &windows);
        Ok(HealthReport {
            feature_name: self.feature.clone(),
            level: health.as_ref().map_or("unknown".to_owned(), |h| h.level.as_str().to_owned()),
            action: health.as_ref().map_or("none".to_owned(), |h| h.action.as_str().to_owned()),
            error_rate: health.as_ref().map_or(rate(errors, total_jobs), |h| h.error_rate),
            total_jobs: health.as_ref().map_or(total_jobs, |h| h.total_jobs),
            reason: health
                .as_ref()
                .map_or("the policy gave no answer; no action taken".to_owned(), |h| h.reason.clone()),
            policy_answered: health.is_some(),
            window_start: since.max(changed),
            window_hours: config.monitoring_window_hours,
            processors,
            rolled_back: false,
            rollback: None,
        })
    }

    /// Evaluate health and, when the policy says `rollback`, set the percentage to 0 with a
    /// `rollback` history row (triggered by [`AUTO_ROLLBACK_TRIGGER`]) — only if the rollout
    /// is still above 0 % and not stopped, so concurrent checks roll back once.
    pub async fn check_and_trigger_auto_rollback(&self) -> ManagerResult<HealthReport> {
        self.reload_config().await?;
        let mut report = self.evaluate().await?;
        if report.action == HealthAction::Rollback.as_str() {
            let mut request = ChangeRequest::new(Change::Rollback, Some(report.reason.clone()), AUTO_ROLLBACK_TRIGGER);
            request.details = Some(serde_json::json!({
                "health": {
                    "level": report.level,
                    "error_rate": report.error_rate,
                    "total_jobs": report.total_jobs,
                    "window_start": report.window_start,
                }
            }));
            let outcome = self.store.apply_change(&self.feature, &request).await?;
            self.install(outcome.after.clone());
            report.rolled_back = outcome.applied;
            report.rollback = outcome.history;
        }
        Ok(report)
    }

    /// The statistics of the rollout over the monitoring window.
    pub async fn get_rollout_stats(&self) -> ManagerResult<RolloutStats> {
        let state = self.state.load_full();
        let categories = self.categories.load_full();
        let config = state.snapshot.config();
        let now = Utc::now();
        let hours = config.monitoring_window_hours.max(1);
        let since = now - TimeDelta::hours(i64::from(hours));

        // eligibility: the same policy and snapshot as routing
        let mut ids: Vec<RepoId> =
            self.store.list_repository_ids().await?.into_iter().map(|u| RepoId::Uuid(u.as_u128())).collect();
        for id in categories.keys() {
            if !matches!(id, RepoId::Uuid(_)) {
                ids.push(id.clone());
            }
        }
        let repos: Vec<Repository> =
            ids.into_iter().map(|id| Repository { category: categories.get(&id).copied(), id }).collect();
        let decisions = self.policy.is_eligible_batch(&state.snapshot, &repos);
        let eligible = decisions.iter().filter(|d| d.eligible).count() as u64;
        let eligible_categorized =
            repos.iter().zip(&decisions).filter(|(r, d)| d.eligible && r.category.is_some()).count() as u64;
        let mut by_category: BTreeMap<String, u64> = Category::ALL.iter().map(|c| (c.as_str().to_owned(), 0)).collect();
        for c in categories.values() {
            *by_category.entry(c.as_str().to_owned()).or_default() += 1;
        }
        let categorized = categories.len() as u64;

        let rows = self.store.metrics_window(state.stored.id, since, DateTime::<Utc>::UNIX_EPOCH).await?;
        let processors = processor_stats(&rows);
        let total_jobs: u64 = processors.values().map(|p| p.total_jobs).sum();
        let success_count: u64 = processors.values().map(|p| p.success_count).sum();
        let error_count: u64 = processors.values().map(|p| p.error_count).sum();
        let distribution: BTreeMap<String, u64> = processors.iter().map(|(k, v)| (k.clone(), v.total_jobs)).collect();

        let mut hourly: BTreeMap<DateTime<Utc>, (u64, u64)> = BTreeMap::new();
        for r in &rows {
            let e = hourly.entry(crate::store::hour_start(r.window_start)).or_default();
            e.0 += r.total_jobs;
            e.1 += r.error_count;
        }
        let points: Vec<TrendPoint> = hourly
            .into_iter()
            .filter(|(_, (jobs, _))| *jobs > 0)
            .map(|(hour, (jobs, errors))| TrendPoint { hour, jobs, errors, error_rate: rate(errors, jobs) })
            .collect();
        let direction = trend_direction(&points);
        let messages = self.store.error_messages(state.stored.id, since, DateTime::<Utc>::UNIX_EPOCH).await?;

        Ok(RolloutStats {
            feature_name: self.feature.clone(),
            generated_at: now,
            policy_version: self.policy.policy_version(),
            config_version: state.snapshot.version(),
            rollout_percentage: config.rollout_percentage,
            rollout_strategy: config.rollout_strategy.as_str().to_owned(),
            emergency_stop: config.emergency_stop,
            is_active: config.is_active,
            total_repositories: repos.len() as u64,
            categorized_repositories: categorized,
            eligible_repositories: eligible,
            eligible_categorized_repositories: eligible_categorized,
            participation_rate: rate(eligible_categorized, categorized),
            categories: by_category,
            window_hours: hours,
            window_start: since,
            total_jobs,
            success_count,
            error_count,
            error_rate: rate(error_count, total_jobs),
            success_rate: rate(success_count, total_jobs),
            cost: cost_estimate(&state.stored.metadata, &distribution),
            processor_distribution: distribution,
            processors,
            errors_by_kind: errors_by_kind(&messages),
            error_trend: ErrorTrend { points, direction },
        })
    }
}

fn category_row(id: Uuid, stats: RepositoryStats, c: &Categorization) -> crate::store::CategoryRow {
    crate::store::CategoryRow {
        repository_id: id,
        category: c.category,
        priority_level: c.priority_level,
        is_test_repository: c.is_test_repository,
        stats,
        monthly_activity_score: c.monthly_activity_score,
    }
}

async fn load_categories(store: &Store) -> ManagerResult<HashMap<RepoId, Category>> {
    Ok(store
        .list_categories()
        .await?
        .into_iter()
        .map(|r| (RepoId::Uuid(r.repository_id.as_u128()), r.category))
        .collect())
}
