//! The rollout manager: the state and the rules-facing operations of one feature, over a
//! [`Store`] and a [`Policy`].
//!
//! - **Decisions** ([`decisions`]) read only memory: the configuration snapshot (database
//!   values with the environment overrides applied) and the categories are cached; a
//!   decision makes no database round trip and writes nothing. [`Manager::reload`] re-reads
//!   both.
//! - **Changes** ([`Manager::change`]) commit together with their history row
//!   ([`Store::apply_change`]) and refresh the cache.
//! - **Outcomes** ([`outcomes`]) go through group commit ([`crate::store::recorder`]): `Ok`
//!   means durable.
//! - **Health** ([`health`]) asks the policy over the SPEC §2.5 window and rolls back with a
//!   conditional update: it fires once, whoever asks.
//! - **Stats** ([`stats`]) count eligibility with the same policy and snapshot as routing;
//!   processing-time percentiles come from exact-merge histograms ([`latency`]).
//!
//! The service layer ([`crate::service`]) keeps one manager per feature and is what the
//! HTTP API and the CLI call; the manager is the layer below it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rollout::engine::NativePolicy;
//! use rollout::env::EnvOverrides;
//! use rollout::manager::{Manager, OpenOptions};
//! use rollout::store::Store;
//! use std::sync::Arc;
//!
//! let store = Store::connect("sqlite://rollout.db").await?;
//! store.migrate().await?;
//! let manager = Manager::open(store, Arc::new(NativePolicy::new()), "hybrid_progressive_capture", OpenOptions::default()).await?;
//! let decision = manager.route("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", &Default::default());
//! println!("{}", decision.processor);
//! # Ok(()) }
//! ```

mod config;
pub mod decisions;
pub mod health;
pub mod latency;
pub mod outcomes;
pub mod participation;
pub mod signals;
pub mod stats;

pub use config::{EffectiveConfig, Sourced, ValueSource};
pub use decisions::{CategorizeSummary, Traced};
pub use health::{HealthReport, ProcessorStats};
pub use latency::LatencyHistogram;
pub use outcomes::{OutcomeInput, Submission};
pub use participation::Participation;
pub use stats::RolloutStats;

use crate::engine::{ConfigSnapshot, Policy};
use crate::env::EnvOverrides;
use crate::store::recorder::MetricsRecorder;
use crate::store::{
    ChangeOutcome, ChangeRequest, HistoryAction, HistoryEntry, NewHistory, Store, StoreError, StoredConfig,
};
use arc_swap::ArcSwap;
use rollout_policy::{Category, RepoId};
use std::collections::HashMap;
use std::sync::Arc;

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
    #[error("the policy could not categorize repository `{0}`: {1}")]
    PolicyUnavailable(String, crate::engine::CallError),
    /// Categorisation needs numbers that are neither given nor in `repositories`.
    #[error("repository `{0}` has no row in repositories and no stats were given")]
    NoStats(String),
}

/// Result of manager operations.
pub type ManagerResult<T> = Result<T, ManagerError>;

/// How a manager opens.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The environment overrides in force (SPEC §4).
    pub overrides: EnvOverrides,
    /// Write the `env_override` history row when overrides are in force. A serving process
    /// does (once per start); a short-lived CLI command does not — one row per command
    /// would bury the history in noise.
    pub audit_overrides: bool,
    /// Create the configuration (with a `created` history row) when it is absent, instead
    /// of failing with [`StoreError::UnknownFeature`].
    pub create: bool,
}

pub(crate) struct State {
    pub(crate) stored: StoredConfig,
    pub(crate) snapshot: Arc<ConfigSnapshot>,
}

/// The rollout manager of one feature. Share it behind an `Arc`.
pub struct Manager {
    store: Store,
    policy: Arc<dyn Policy>,
    feature: String,
    overrides: EnvOverrides,
    state: ArcSwap<State>,
    categories: ArcSwap<HashMap<RepoId, Category>>,
    /// Bumped whenever `categories` changes (what cached participation is checked against).
    categories_version: std::sync::atomic::AtomicU64,
    recorder: MetricsRecorder,
    /// The baseline p95 per processor, read once per (configuration, last change, window).
    baseline: std::sync::Mutex<Option<BaselineCache>>,
    /// The stored version of the configuration installed last, for subscribers
    /// ([`Manager::watch_config`]).
    config_changes: tokio::sync::watch::Sender<i64>,
}

/// The baseline p95 per processor of one (configuration, last change, window hours).
type BaselineCache = ((uuid::Uuid, chrono::DateTime<chrono::Utc>, u32), HashMap<rollout_policy::Processor, f64>);

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("feature", &self.feature)
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// Open the manager of `feature`: read (or, with [`OpenOptions::create`], create) its
    /// configuration, write one `env_override` history row when asked and overrides are in
    /// force, load the categories, and start the metrics flusher (on the current tokio
    /// runtime).
    pub async fn open(
        store: Store,
        policy: Arc<dyn Policy>,
        feature: &str,
        options: OpenOptions,
    ) -> ManagerResult<Manager> {
        let stored = if options.create {
            store.ensure_config(feature, "manager").await?
        } else {
            store.get_config(feature).await?
        };
        let overrides = options.overrides;
        if options.audit_overrides && !overrides.is_empty() {
            store.append_history(Some(feature), &override_entry(&overrides, &stored)).await?;
        }
        let categories = load_categories(&store).await?;
        let snapshot = ConfigSnapshot::new(overrides.apply_to(&stored));
        let recorder = MetricsRecorder::spawn(store.clone());
        let (config_changes, _) = tokio::sync::watch::channel(stored.version);
        Ok(Manager {
            config_changes,
            store,
            policy,
            feature: feature.to_owned(),
            overrides,
            state: ArcSwap::from_pointee(State { stored, snapshot }),
            categories: ArcSwap::from_pointee(categories),
            categories_version: std::sync::atomic::AtomicU64::new(1),
            baseline: std::sync::Mutex::new(None),
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
    pub fn policy(&self) -> &Arc<dyn Policy> {
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

    pub(crate) fn state(&self) -> arc_swap::Guard<Arc<State>> {
        self.state.load()
    }

    fn install(&self, stored: StoredConfig) {
        let snapshot = ConfigSnapshot::new(self.overrides.apply_to(&stored));
        let version = stored.version;
        self.state.store(Arc::new(State { stored, snapshot }));
        self.config_changes.send_if_modified(|v| std::mem::replace(v, version) != version);
    }

    /// A receiver that sees the stored version of every configuration installed from now
    /// on (a change here, or one read from the database after another instance made it).
    pub fn watch_config(&self) -> tokio::sync::watch::Receiver<i64> {
        self.config_changes.subscribe()
    }

    /// Install a configuration read from the database unless a newer one is installed
    /// already: a re-read that started before a change committed must not undo it.
    fn install_read(&self, stored: StoredConfig) {
        if stored.version >= self.state.load().stored.version {
            self.install(stored);
        }
    }

    /// Re-read the configuration and the categories (a new snapshot version).
    pub async fn reload(&self) -> ManagerResult<()> {
        let stored = self.store.get_config(&self.feature).await?;
        let categories = load_categories(&self.store).await?;
        self.set_categories(categories);
        self.install_read(stored);
        Ok(())
    }

    /// Re-read the configuration only.
    pub async fn reload_config(&self) -> ManagerResult<()> {
        let stored = self.store.get_config(&self.feature).await?;
        self.install_read(stored);
        Ok(())
    }

    /// Install the categories (a new categories version when they differ).
    pub(crate) fn set_categories(&self, categories: HashMap<RepoId, Category>) {
        if **self.categories.load() != categories {
            self.categories.store(Arc::new(categories));
            self.categories_version.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The version of the categories decisions use now.
    pub fn categories_version(&self) -> u64 {
        self.categories_version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Apply one configuration change with its history row (one transaction) and install
    /// the configuration after it.
    pub async fn change(&self, request: &ChangeRequest) -> ManagerResult<ChangeOutcome> {
        let outcome = self.store.apply_change(&self.feature, request).await?;
        self.install(outcome.after.clone());
        Ok(outcome)
    }

    /// The history of the feature, newest first.
    pub async fn history(&self, limit: u32) -> ManagerResult<Vec<HistoryEntry>> {
        Ok(self.store.history(&self.feature, limit).await?)
    }
}

/// The `env_override` history row: every override in force, with the database's value and
/// the environment's.
fn override_entry(overrides: &EnvOverrides, stored: &StoredConfig) -> NewHistory {
    let effective = overrides.apply_to(stored);
    let active = overrides.active();
    let db = stored.to_json();
    let env = {
        let mut s = stored.clone();
        s.config = effective.clone();
        s.to_json()
    };
    let mut previous = serde_json::Map::new();
    let mut new = serde_json::Map::new();
    for o in &active {
        previous.insert(o.field.to_owned(), db.get(o.field).cloned().unwrap_or_default());
        new.insert(o.field.to_owned(), env.get(o.field).cloned().unwrap_or_default());
    }
    let variables: serde_json::Map<String, serde_json::Value> =
        active.iter().map(|o| (o.variable.to_owned(), serde_json::Value::String(o.value.clone()))).collect();
    NewHistory {
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
