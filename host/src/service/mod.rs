//! The service layer: what a rollout process does, once, for every edge.
//!
//! The HTTP API ([`crate::http`]) and the CLI ([`crate::cli`]) parse their input into the
//! types of [`crate::input`], call a [`Service`], and render what it returns; neither
//! decides anything itself. The service owns:
//!
//! - the **features** being served ([`Feature`]: a [`Manager`] with its decision counters,
//!   outcome buffer and last health check), opened on demand;
//! - **decisions** ([`Feature::route`], …), counted, with newly seen repositories queued for
//!   background categorisation off the request's path;
//! - **operator operations** ([`operations`]: percentage, stop, resume, list edits,
//!   auto-rollback, health checks) — one implementation, so both edges agree on every rule
//!   (a repeated stop writes nothing, a change hidden by an override says so, …);
//! - **outcomes** ([`outcomes`]): durable when the database takes them, buffered while it
//!   is unreachable, flushed when it returns;
//! - the **database's health** ([`DbHealth`]) and the one rule saying whether an error means
//!   "unreachable";
//! - the **policy lifecycle** ([`policies`]): which policy a process starts with, upload,
//!   validate, activate, revert, reconcile with the database;
//! - the **policy candidate** ([`candidate`]): shadow evaluation, a canary share judged by
//!   a guard ([`guard`]), scheduled steps, promotion;
//! - the **background loops** ([`background`]) of a server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rollout::input::values::{Actor, Percentage, Reason};
//! use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
//! use rollout::service::{operations::Operation, Service, ServiceOptions};
//! use rollout::store::Store;
//!
//! let store = Store::connect("sqlite://rollout.db").await?;
//! store.migrate().await?;
//! let runtime = Runtime::new(RuntimeOptions::default())?;
//! runtime.load_bytes(BUNDLED_POLICY, "bundled")?;
//! let service = Service::open(store, runtime, ServiceOptions::default()).await?;
//! let op = Operation::SetPercentage(Percentage::new(10)?);
//! let done = service
//!     .apply("hybrid_progressive_capture", op, Some(Reason::new("first step")?), &Actor::new("alice")?)
//!     .await?;
//! assert!(done.applied);
//! # Ok(()) }
//! ```

pub mod alerts;
pub mod background;
mod backlog;
pub mod candidate;
mod db;
pub mod decision_log;
mod feature;
pub mod guard;
pub mod metrics;
pub mod operations;
pub mod outcomes;
pub mod policies;

pub use db::{is_unreachable, DbHealth, DbStatus, DATABASE_UNREACHABLE};
pub use feature::{Feature, Logged};
pub use policies::StartupPolicy;

use crate::engine::Policy;
use crate::env::EnvOverrides;
use crate::input::InputError;
use crate::manager::{Manager, ManagerError, OpenOptions};
use crate::runtime::Runtime;
use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How the service behaves; [`ServiceOptions::default`] is what `rollout serve` uses.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The feature opened at start (and shown by the status page by default).
    pub default_feature: String,
    /// The environment overrides applied to every feature (SPEC §4).
    pub overrides: EnvOverrides,
    /// Write the `env_override` history row when a feature opens with overrides in force
    /// (a server does; a CLI command does not).
    pub audit_overrides: bool,
    /// Open every feature the database has at start (a server), or only the default one
    /// (a CLI command).
    pub open_all: bool,
    /// Follow the stored policy candidate from the start (load and compile it: a server,
    /// and a CLI command that decides), or only once a candidate command asks (a CLI
    /// command that decides nothing need not compile it).
    pub follow_candidate: bool,
    /// Most items in one batch (route batch, outcome batch, id lists; default 10,000).
    pub max_batch: usize,
    /// Most outcomes buffered per feature while the database is unreachable (default 100,000).
    pub outcome_buffer: usize,
    /// Most bytes of outcomes buffered per feature while the database is unreachable
    /// (default 64 MiB; each outcome counts its size in memory, its error message included).
    pub outcome_buffer_bytes: usize,
    /// How often the health check runs without outcomes to trigger it (default 30 s).
    pub health_interval: Duration,
    /// How often the configuration and the active policy are re-read (default 5 s).
    pub reload_interval: Duration,
    /// The policy this process started with when it did not come from the database (kept so
    /// a revert can go back to it).
    pub startup_policy: Option<StartupPolicy>,
    /// Alert delivery: the webhooks (none: events are kept in the outbox for the CLI and
    /// for an instance that has webhooks) and the retry schedule.
    pub alerts: alerts::NotifierOptions,
    /// The decision log's queue, batches, retention and masking key.
    pub decision_log: decision_log::DecisionLogOptions,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            default_feature: rollout_policy::DEFAULT_FEATURE.to_owned(),
            overrides: EnvOverrides::default(),
            audit_overrides: true,
            open_all: true,
            follow_candidate: true,
            max_batch: 10_000,
            outcome_buffer: 100_000,
            outcome_buffer_bytes: 64 << 20,
            health_interval: Duration::from_secs(30),
            reload_interval: Duration::from_secs(5),
            startup_policy: None,
            alerts: alerts::NotifierOptions::default(),
            decision_log: decision_log::DecisionLogOptions::default(),
        }
    }
}

/// What a service call can fail with. [`ServiceError::kind`] is what the edges map to an
/// HTTP status or an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Input outside what is allowed, naming the field.
    #[error("{message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// Something the request names does not exist.
    #[error("{message}")]
    NotFound {
        /// The field naming it.
        field: String,
        /// What was not found.
        message: String,
    },
    /// The policy could not categorise a repository.
    #[error("the policy could not categorize repository `{0}`; retry later")]
    PolicyUnavailable(String),
    /// A policy component was refused by validation; nothing changed.
    #[error("{0}")]
    PolicyRejected(String),
    /// A policy component is larger than allowed.
    #[error("the policy is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request conflicts with the state (e.g. no previous policy version to revert to).
    #[error("{0}")]
    Conflict(String),
    /// The database is unreachable, a buffer is full, or the service is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// Something unexpected.
    #[error("{0}")]
    Internal(String),
}

/// What kind of failure a [`ServiceError`] is: the edges map it to an HTTP status and an
/// exit code, in one place each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input (HTTP 400, exit 2).
    Invalid {
        /// The field at fault.
        field: String,
    },
    /// Something named does not exist (HTTP 404, exit 2).
    NotFound {
        /// The field naming it.
        field: String,
    },
    /// Conflicts with the state (HTTP 409, exit 2).
    Conflict,
    /// A policy refused by validation (HTTP 422, exit 1).
    Rejected,
    /// Too large (HTTP 413, exit 2).
    TooLarge,
    /// Unreachable or busy; retry later (HTTP 503, exit 3).
    Unavailable,
    /// Unexpected (HTTP 500, exit 3).
    Internal,
}

impl ServiceError {
    /// A 400-kind error naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
        ServiceError::Invalid { field: field.into(), message: message.into() }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Store(e) => store_kind(e),
            ServiceError::Invalid { field, .. } => ErrorKind::Invalid { field: field.clone() },
            ServiceError::NotFound { field, .. } => ErrorKind::NotFound { field: field.clone() },
            ServiceError::PolicyUnavailable(_) | ServiceError::Unavailable(_) => ErrorKind::Unavailable,
            ServiceError::PolicyRejected(_) => ErrorKind::Rejected,
            ServiceError::TooLarge { .. } => ErrorKind::TooLarge,
            ServiceError::Conflict(_) => ErrorKind::Conflict,
            ServiceError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message for a client: database internals stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            ServiceError::Store(e) => match store_kind(e) {
                ErrorKind::Unavailable => DATABASE_UNREACHABLE.to_owned(),
                ErrorKind::Internal => match e {
                    StoreError::Database { context, .. } => {
                        format!("the database refused to {context}; see the server log")
                    }
                    _ => "the database returned an unexpected value; see the server log".to_owned(),
                },
                ErrorKind::Conflict => match (e, e.kind()) {
                    (StoreError::Database { context, .. }, crate::store::ErrorKind::Conflict { constraint }) => {
                        format!("the change conflicts with `{constraint}`: {context} was refused")
                    }
                    (other, _) => other.to_string(),
                },
                ErrorKind::Invalid { .. } => match e {
                    StoreError::Database { context, .. } => {
                        format!("the database refused the input: {context} failed; check the values given")
                    }
                    StoreError::MetricsRefused { .. } => {
                        "the database refused these outcomes for their content; nothing of them was kept (other \
                         clients' outcomes are not affected)"
                            .to_owned()
                    }
                    other => store_message(other),
                },
                _ => store_message(e),
            },
            other => other.to_string(),
        }
    }
}

/// The kind of a store error: the store's classification ([`StoreError::kind`]) with the
/// field the store's own refusals are about.
fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::UnknownFeature(_) => return ErrorKind::NotFound { field: "feature".into() },
        StoreError::UnknownRepository(_) => return ErrorKind::NotFound { field: "repository_ids".into() },
        StoreError::UnknownPolicy(_) => return ErrorKind::NotFound { field: "sha256".into() },
        StoreError::InvalidRepositoryId(_) => return ErrorKind::Invalid { field: "repository_ids".into() },
        StoreError::InvalidConfig(c) => return ErrorKind::Invalid { field: c.field.clone() },
        StoreError::MetricsRefused { source, .. } if !source.kind().is_transient() => {
            return ErrorKind::Invalid { field: "outcomes".into() }
        }
        _ => {}
    }
    match e.kind() {
        crate::store::ErrorKind::Unreachable => ErrorKind::Unavailable,
        crate::store::ErrorKind::Input { field } => ErrorKind::Invalid { field: field.unwrap_or_default() },
        crate::store::ErrorKind::Conflict { .. } => ErrorKind::Conflict,
        crate::store::ErrorKind::Internal => ErrorKind::Internal,
    }
}

fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::UnknownFeature(f) => {
            format!("unknown feature `{f}`: no rollout configuration has this feature name")
        }
        StoreError::UnknownRepository(id) => {
            format!("unknown repository `{id}`: no row of repositories has this owner/name")
        }
        StoreError::InvalidRepositoryId(id) => format!("invalid repository id `{id}`: expected a UUID or owner/name"),
        other => other.to_string(),
    }
}

impl From<ManagerError> for ServiceError {
    fn from(e: ManagerError) -> ServiceError {
        match e {
            ManagerError::Store(s) => ServiceError::Store(s),
            ManagerError::PolicyUnavailable(id, _) => ServiceError::PolicyUnavailable(id),
            ManagerError::NoStats(id) => ServiceError::NotFound {
                field: "repository_id".into(),
                message: format!("repository `{id}` has no row in repositories and no stats were given"),
            },
        }
    }
}

impl From<InputError> for ServiceError {
    fn from(e: InputError) -> ServiceError {
        ServiceError::Invalid { field: e.field, message: e.message }
    }
}

/// Result of service calls.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// Create the configuration of `name` with the seed's safe defaults (0 %, active,
/// percentage strategy) and a `created` history row: the one way a feature comes to exist
/// (`rollout feature create`, `POST /v1/features`). Conflict when it exists already.
pub async fn create_feature(
    store: &Store,
    name: &crate::input::values::FeatureName,
    actor: &crate::input::values::Actor,
) -> ServiceResult<crate::store::StoredConfig> {
    let configs = store.list_configs().await?;
    if configs.iter().any(|c| c.config.feature_name == name.as_str()) {
        return Err(ServiceError::Conflict(format!("feature `{name}` exists already")));
    }
    Ok(store.ensure_config(name.as_str(), actor.as_str()).await?)
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) runtime: Runtime,
    pub(crate) policy: Arc<dyn Policy>,
    pub(crate) options: ServiceOptions,
    pub(crate) features: ArcSwap<HashMap<String, Arc<Feature>>>,
    open_lock: tokio::sync::Mutex<()>,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) db: DbHealth,
    pub(crate) started_at: DateTime<Utc>,
    shutting_down: AtomicBool,
    /// Wakes the health loop (outcomes were recorded).
    pub(crate) health_kick: Notify,
    pub(crate) categorize: background::CategorizeQueue,
    pub(crate) policies: policies::PolicyState,
    pub(crate) decision_log: decision_log::DecisionLog,
    /// The policy candidate followed (shadow or canary) and its shadow worker.
    pub(crate) candidates: candidate::Candidates,
    /// The sha256 of the policy serving, for subscribers ([`Service::watch_policy`]).
    policy_changes: tokio::sync::watch::Sender<Option<String>>,
}

/// A rollout process's services. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("default_feature", &self.inner.options.default_feature).finish_non_exhaustive()
    }
}

impl Service {
    /// The service over `store` and `runtime`: opens the default feature and, with
    /// [`ServiceOptions::open_all`], every feature the database has. Nothing is created: an
    /// unknown default feature is an error naming the known ones (a mistyped `--feature`
    /// must not start a new rollout); [`Service::create_feature`] creates one.
    pub async fn open(store: Store, runtime: Runtime, options: ServiceOptions) -> ServiceResult<Service> {
        let policy: Arc<dyn Policy> = Arc::new(runtime.clone());
        let serving = runtime.policy_version().map(|v| v.sha256);
        let service = Service {
            inner: Arc::new(Inner {
                db: DbHealth::new(store.backend()),
                store,
                runtime,
                policy,
                features: ArcSwap::from_pointee(HashMap::new()),
                open_lock: tokio::sync::Mutex::new(()),
                metrics: metrics::Metrics::default(),
                started_at: Utc::now(),
                shutting_down: AtomicBool::new(false),
                health_kick: Notify::new(),
                categorize: background::CategorizeQueue::new(),
                policies: policies::PolicyState::default(),
                decision_log: decision_log::DecisionLog::new(options.decision_log.clone()),
                candidates: candidate::Candidates::new(),
                policy_changes: tokio::sync::watch::channel(serving).0,
                options,
            }),
        };
        let default = service.inner.options.default_feature.clone();
        crate::input::values::FeatureName::new(&default).map_err(|m| ServiceError::invalid("feature", m))?;
        if let Err(e) = service.open_feature(&default, false).await {
            return Err(service.explain_unknown(e).await);
        }
        if service.inner.options.open_all {
            for stored in service.inner.store.list_configs().await? {
                let name = stored.config.feature_name;
                if name != default {
                    service.open_feature(&name, false).await?;
                }
            }
        }
        if service.inner.options.follow_candidate {
            service.reconcile_candidate().await;
        }
        Ok(service)
    }

    async fn open_feature(&self, name: &str, create: bool) -> ServiceResult<Arc<Feature>> {
        let _guard = self.inner.open_lock.lock().await;
        if let Some(f) = self.inner.features.load().get(name) {
            return Ok(f.clone());
        }
        let options = OpenOptions {
            overrides: self.inner.options.overrides.clone(),
            audit_overrides: self.inner.options.audit_overrides,
            create,
        };
        let manager = Manager::open(self.inner.store.clone(), self.inner.policy.clone(), name, options).await?;
        let feature = Arc::new(Feature::new(manager, self.inner.metrics.feature(name)));
        let mut map = HashMap::clone(&self.inner.features.load());
        map.insert(name.to_owned(), feature.clone());
        self.inner.features.store(Arc::new(map));
        Ok(feature)
    }

    /// The feature `name`: from memory, or opened when its configuration exists (not found,
    /// naming the known features, when it does not; nothing creates a configuration by
    /// using it).
    pub async fn feature(&self, name: &str) -> ServiceResult<Arc<Feature>> {
        if let Some(f) = self.inner.features.load().get(name) {
            return Ok(f.clone());
        }
        crate::input::values::FeatureName::new(name).map_err(|m| ServiceError::invalid("feature", m))?;
        self.inner.db.require()?;
        let opened = self.open_feature(name, false).await;
        self.inner.db.observe(&opened);
        match opened {
            Ok(f) => Ok(f),
            Err(e) => Err(self.explain_unknown(e).await),
        }
    }

    /// An unknown feature, said with the features that exist and how to create it.
    async fn explain_unknown(&self, e: ServiceError) -> ServiceError {
        let ServiceError::Store(StoreError::UnknownFeature(name)) = &e else { return e };
        let known = match self.inner.store.list_configs().await {
            Ok(configs) => configs.into_iter().map(|c| format!("`{}`", c.config.feature_name)).collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
        ServiceError::NotFound {
            field: "feature".into(),
            message: format!(
                "unknown feature `{name}`: no rollout configuration has this feature name (known features: {known}); \
                 create it with `rollout feature create {name}` or `POST /v1/features`"
            ),
        }
    }

    /// Create the configuration of `name` ([`create_feature`]) and serve it.
    pub async fn create_feature(
        &self,
        name: &crate::input::values::FeatureName,
        actor: &crate::input::values::Actor,
    ) -> ServiceResult<crate::manager::EffectiveConfig> {
        self.inner.db.require()?;
        self.observed(create_feature(&self.inner.store, name, actor)).await?;
        let feature = self.feature(name.as_str()).await?;
        Ok(feature.manager.effective_config())
    }

    /// Every feature being served, by name.
    pub fn features(&self) -> Vec<Arc<Feature>> {
        let mut v: Vec<Arc<Feature>> = self.inner.features.load().values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The policy runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The options.
    pub fn options(&self) -> &ServiceOptions {
        &self.inner.options
    }

    /// A receiver that sees the sha256 of the policy serving whenever it changes (a server
    /// follows the runtime's swaps in its background tasks, [`Service::note_policy`]).
    pub fn watch_policy(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.policy_changes.subscribe()
    }

    /// Publish the policy serving now to [`Service::watch_policy`]'s receivers, if it
    /// changed.
    pub fn note_policy(&self) {
        let now = self.inner.runtime.policy_version().map(|v| v.sha256);
        self.inner.policy_changes.send_if_modified(|v| {
            if *v == now {
                false
            } else {
                *v = now;
                true
            }
        });
    }

    /// The decision log's queue and counters.
    pub fn decision_log(&self) -> &decision_log::DecisionLog {
        &self.inner.decision_log
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// What is known about the database.
    pub fn db(&self) -> &DbHealth {
        &self.inner.db
    }

    /// When this process started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.inner.started_at
    }

    /// Whether a policy is loaded, the default feature's configuration is loaded, and the
    /// service is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.inner.runtime.policy_version().is_some()
            && self.inner.features.load().contains_key(&self.inner.options.default_feature)
            && !self.is_shutting_down()
    }

    /// Whether the default feature's configuration is loaded.
    pub fn default_feature_loaded(&self) -> bool {
        self.inner.features.load().contains_key(&self.inner.options.default_feature)
    }

    /// Refuse new writes from now on (SIGTERM).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Whether [`Service::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// Run a store call, noting whether the database answered.
    pub(crate) async fn observed<T, E>(&self, call: impl std::future::Future<Output = Result<T, E>>) -> ServiceResult<T>
    where
        E: db::AsStoreError + Into<ServiceError>,
    {
        let result = call.await;
        self.inner.db.observe(&result);
        result.map_err(Into::into)
    }
}
