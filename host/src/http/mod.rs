//! The HTTP API of `rollout serve` (SPEC §6).
//!
//! [`app`] builds the [`axum::Router`] over an [`AppState`]; it is a plain function, so tests
//! drive it with `tower::ServiceExt::oneshot` and no socket. [`serve`] runs it on a listener
//! with graceful shutdown; [`background::Background`] runs the work beside the requests
//! (health checks, change notifications, periodic re-reads, outcome buffer flushes,
//! categorisation of newly seen repositories).
//!
//! - **Decisions** (`eligibility`, `route`, `route/batch`) read only memory: the manager's
//!   cached configuration snapshot and categories, and the runtime's serving policy. They go
//!   on while the database is unreachable.
//! - **Writes** (operations, outcomes, policies) need `Authorization: Bearer
//!   $ROLLOUT_SERVICE_TOKEN`, compared in constant time; with no token configured they
//!   answer 403 saying how to enable them. Reads are public.
//! - **Outcomes** are acknowledged with `"durable": true` once committed; while the
//!   database is unreachable they are buffered (up to [`ServiceOptions::outcome_buffer`])
//!   and acknowledged with 202 and `"durable": false`, and flushed on reconnect.
//! - **Errors** are `{"error": {"field"?, "message"}}` ([`ApiError`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rollout::http::{app, AppState, ServiceOptions};
//! use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
//! use rollout::store::Store;
//!
//! let store = Store::connect("sqlite://rollout.db").await?;
//! store.migrate().await?;
//! let runtime = Runtime::new(RuntimeOptions::default())?;
//! runtime.load_bytes(BUNDLED_POLICY, "bundled")?;
//! let state = AppState::new(store, runtime, ServiceOptions::default()).await?;
//! let router = app(state);
//! # let _ = router; Ok(()) }
//! ```

pub mod background;
mod decisions;
pub mod error;
pub mod input;
pub mod metrics;
mod operations;
mod page;
mod policies;
mod reads;

pub use background::Background;
pub use error::{ApiError, ApiResult};

use crate::engine::Decide;
use crate::env::EnvOverrides;
use crate::manager::{HealthReport, Manager, ManagerError, OutcomeInput};
use crate::runtime::Runtime;
use crate::store::Store;
use arc_swap::ArcSwap;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// How the service behaves; [`ServiceOptions::default`] is what `rollout serve` uses.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The feature opened at start (and shown by the status page by default).
    pub default_feature: String,
    /// The service token writes must present; `None` disables writes (403).
    pub token: Option<String>,
    /// The environment overrides applied to every feature (SPEC §4).
    pub overrides: EnvOverrides,
    /// Largest JSON body, in bytes (default 1 MiB).
    pub json_body_limit: usize,
    /// Largest policy upload, in bytes (default 8 MiB).
    pub policy_body_limit: usize,
    /// Most items in one batch (route batch, outcome batch, id lists; default 10,000).
    pub max_batch: usize,
    /// Most outcomes buffered per feature while the database is unreachable (default 100,000).
    pub outcome_buffer: usize,
    /// How often the health check runs without outcomes to trigger it (default 30 s).
    pub health_interval: Duration,
    /// How often the configuration and the active policy are re-read (default 5 s).
    pub reload_interval: Duration,
    /// The policy this process started with when it did not come from the database (kept so
    /// a revert can go back to it).
    pub startup_policy: Option<StartupPolicy>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            default_feature: rollout_policy::DEFAULT_FEATURE.to_owned(),
            token: None,
            overrides: EnvOverrides::default(),
            json_body_limit: 1 << 20,
            policy_body_limit: 8 << 20,
            max_batch: 10_000,
            outcome_buffer: 100_000,
            health_interval: Duration::from_secs(30),
            reload_interval: Duration::from_secs(5),
            startup_policy: None,
        }
    }
}

/// The bytes of the policy a process started with.
#[derive(Clone)]
pub struct StartupPolicy {
    /// Where they came from (`bundled`, a file path).
    pub source: String,
    /// The component bytes.
    pub bytes: Arc<Vec<u8>>,
}

impl std::fmt::Debug for StartupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartupPolicy").field("source", &self.source).field("size", &self.bytes.len()).finish()
    }
}

/// Whether the database answers, as last observed.
#[derive(Debug)]
pub struct DbHealth {
    up: AtomicBool,
    last_ok_ms: AtomicI64,
    down_since_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// The database's state for the status.
#[derive(Debug, Clone, Serialize)]
pub struct DbStatus {
    /// `postgres` or `sqlite`.
    pub backend: crate::store::Backend,
    /// Whether the database answered the last time it was asked.
    pub reachable: bool,
    /// When it last answered.
    pub last_contact_at: Option<DateTime<Utc>>,
    /// Seconds since it last answered.
    pub seconds_since_contact: Option<f64>,
    /// Since when it has not answered.
    pub unreachable_since: Option<DateTime<Utc>>,
    /// The last error seen while it was unreachable.
    pub last_error: Option<String>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

impl DbHealth {
    fn new() -> DbHealth {
        DbHealth {
            up: AtomicBool::new(true),
            last_ok_ms: AtomicI64::new(now_ms()),
            down_since_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Note that the database answered.
    pub fn ok(&self) {
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!("the database is reachable again");
            self.down_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Note that the database could not be reached.
    pub fn failed(&self, error: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.to_owned());
        }
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!("the database is unreachable: {error}");
            self.down_since_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Note the result of a store call: success means up, an unreachable error means down.
    pub fn observe<T>(&self, result: &Result<T, ManagerError>) {
        match result {
            Ok(_) => self.ok(),
            Err(ManagerError::Store(e)) if error::is_unreachable(e) => self.failed(&e.to_string()),
            Err(_) => self.ok(),
        }
    }

    /// Whether the database was unreachable the last time it was asked.
    pub fn is_down(&self) -> bool {
        !self.up.load(Ordering::Relaxed)
    }

    fn status(&self, backend: crate::store::Backend) -> DbStatus {
        let last_ok = self.last_ok_ms.load(Ordering::Relaxed);
        let reachable = !self.is_down();
        DbStatus {
            backend,
            reachable,
            last_contact_at: from_ms(last_ok),
            seconds_since_contact: (last_ok > 0).then(|| (now_ms() - last_ok).max(0) as f64 / 1000.0),
            unreachable_since: if reachable { None } else { from_ms(self.down_since_ms.load(Ordering::Relaxed)) },
            last_error: if reachable { None } else { self.last_error.lock().ok().and_then(|e| e.clone()) },
        }
    }
}

/// One feature being served: its manager and what the service keeps beside it.
pub struct Feature {
    /// The manager.
    pub manager: Manager,
    /// Its decision counters.
    pub counters: Arc<metrics::DecisionCounters>,
    /// Outcomes waiting for the database.
    buffer: Mutex<VecDeque<OutcomeInput>>,
    /// Outcomes taken from the buffer and being written now.
    flushing: std::sync::atomic::AtomicUsize,
    /// When the configuration was last read from (or written to) the database, unix ms.
    loaded_at_ms: AtomicI64,
    /// Set when outcomes were recorded since the last health check.
    health_due: AtomicBool,
    /// The last health check.
    last_health: Mutex<Option<HealthReport>>,
}

impl std::fmt::Debug for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feature").field("feature", &self.manager.feature()).finish_non_exhaustive()
    }
}

impl Feature {
    /// The feature's name.
    pub fn name(&self) -> &str {
        self.manager.feature()
    }

    /// Outcomes waiting for the database.
    pub fn buffered(&self) -> usize {
        self.buffer.lock().map_or(0, |b| b.len()) + self.flushing.load(Ordering::Relaxed)
    }

    /// Note that the configuration was just read from the database.
    pub fn mark_loaded(&self) {
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When the configuration was last read from the database.
    pub fn loaded_at(&self) -> Option<DateTime<Utc>> {
        from_ms(self.loaded_at_ms.load(Ordering::Relaxed))
    }

    /// Seconds since the configuration was last read from the database.
    pub fn config_age_seconds(&self) -> f64 {
        (now_ms() - self.loaded_at_ms.load(Ordering::Relaxed)).max(0) as f64 / 1000.0
    }

    /// The last health check this process ran.
    pub fn last_health(&self) -> Option<HealthReport> {
        self.last_health.lock().ok().and_then(|h| h.clone())
    }

    fn set_health(&self, report: &HealthReport) {
        if let Ok(mut h) = self.last_health.lock() {
            *h = Some(report.clone());
        }
    }
}

/// A repository seen without a category, and the feature that saw it.
type Uncategorized = (Arc<Feature>, String);

pub(crate) struct Shared {
    store: Store,
    runtime: Runtime,
    policy: Arc<dyn Decide>,
    options: ServiceOptions,
    token_digest: Option<[u8; 32]>,
    features: ArcSwap<HashMap<String, Arc<Feature>>>,
    open_lock: tokio::sync::Mutex<()>,
    metrics: metrics::Metrics,
    db: DbHealth,
    started_at: DateTime<Utc>,
    shutting_down: AtomicBool,
    /// Wakes the health loop (outcomes were recorded).
    health_kick: Notify,
    /// Newly seen repositories, for background categorisation.
    uncategorized: mpsc::Sender<Uncategorized>,
    uncategorized_rx: Mutex<Option<mpsc::Receiver<Uncategorized>>>,
    /// Repositories queued for categorisation recently (forgotten every ten minutes).
    queued: Mutex<(std::collections::HashSet<u128>, Instant)>,
    /// The active policy digest in the database as last reconciled.
    seen_policy: Mutex<Option<String>>,
    /// Stored policy versions this process compiled and validated (or refused), by digest.
    prepared: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<bool>>>>,
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("default_feature", &self.inner.options.default_feature).finish_non_exhaustive()
    }
}

/// Valid feature names: 1..=100 characters.
fn check_feature_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("feature", "a feature name has 1 to 100 characters"));
    }
    Ok(())
}

impl AppState {
    /// The state over `store` and `runtime`; opens the default feature (creating its
    /// configuration when absent) and every feature the database already has.
    pub async fn new(store: Store, runtime: Runtime, options: ServiceOptions) -> Result<AppState, ManagerError> {
        let (tx, rx) = mpsc::channel(4096);
        let token_digest =
            options.token.as_deref().filter(|t| !t.is_empty()).map(|t| Sha256::digest(t.as_bytes()).into());
        let policy: Arc<dyn Decide> = Arc::new(runtime.clone());
        let state = AppState {
            inner: Arc::new(Shared {
                store,
                runtime,
                policy,
                options,
                token_digest,
                features: ArcSwap::from_pointee(HashMap::new()),
                open_lock: tokio::sync::Mutex::new(()),
                metrics: metrics::Metrics::default(),
                db: DbHealth::new(),
                started_at: Utc::now(),
                shutting_down: AtomicBool::new(false),
                health_kick: Notify::new(),
                uncategorized: tx,
                uncategorized_rx: Mutex::new(Some(rx)),
                queued: Mutex::new((std::collections::HashSet::new(), Instant::now())),
                seen_policy: Mutex::new(None),
                prepared: Mutex::new(HashMap::new()),
            }),
        };
        let default = state.inner.options.default_feature.clone();
        state.open(&default).await?;
        for stored in state.inner.store.list_configs().await? {
            let name = stored.config.feature_name;
            if name != default {
                state.open(&name).await?;
            }
        }
        Ok(state)
    }

    async fn open(&self, name: &str) -> Result<Arc<Feature>, ManagerError> {
        let _guard = self.inner.open_lock.lock().await;
        if let Some(f) = self.inner.features.load().get(name) {
            return Ok(f.clone());
        }
        let manager = Manager::open(
            self.inner.store.clone(),
            self.inner.policy.clone(),
            name,
            self.inner.options.overrides.clone(),
        )
        .await?;
        let feature = Arc::new(Feature {
            manager,
            counters: self.inner.metrics.feature(name),
            buffer: Mutex::new(VecDeque::new()),
            flushing: std::sync::atomic::AtomicUsize::new(0),
            loaded_at_ms: AtomicI64::new(now_ms()),
            health_due: AtomicBool::new(false),
            last_health: Mutex::new(None),
        });
        let mut map = HashMap::clone(&self.inner.features.load());
        map.insert(name.to_owned(), feature.clone());
        self.inner.features.store(Arc::new(map));
        Ok(feature)
    }

    /// The feature `name`: from memory, or opened when its configuration exists (404 when
    /// it does not; reads never create a configuration).
    pub async fn feature(&self, name: &str) -> ApiResult<Arc<Feature>> {
        if let Some(f) = self.inner.features.load().get(name) {
            return Ok(f.clone());
        }
        check_feature_name(name)?;
        self.require_db()?;
        let found = self.inner.store.get_config(name).await.map_err(ManagerError::from);
        self.inner.db.observe(&found);
        found?;
        let opened = self.open(name).await;
        self.inner.db.observe(&opened);
        Ok(opened?)
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

    /// The metrics registry.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// What is known about the database.
    pub fn db(&self) -> &DbHealth {
        &self.inner.db
    }

    /// Whether a policy is loaded, the default feature's configuration is loaded, and the
    /// service is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.inner.runtime.policy_version().is_some()
            && self.inner.features.load().contains_key(&self.inner.options.default_feature)
            && !self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// Record the active policy digest of the database as already served (or deliberately
    /// not served, with `--policy FILE`): only a later change of it is loaded.
    pub fn set_seen_policy(&self, sha256: Option<String>) {
        if let Ok(mut seen) = self.inner.seen_policy.lock() {
            *seen = sha256;
        }
    }

    /// Refuse new writes from now on (SIGTERM).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
    }

    /// 503 when the database is known to be unreachable.
    pub(crate) fn require_db(&self) -> ApiResult<()> {
        if self.inner.db.is_down() {
            let status = self.inner.db.status(self.inner.store.backend());
            let since = status.unreachable_since.map_or_else(String::new, |t| format!(" since {}", t.to_rfc3339()));
            return Err(ApiError::Unavailable(format!("{}{since}", error::DATABASE_UNREACHABLE)));
        }
        Ok(())
    }

    pub(crate) fn body_limit_for(&self, path: &str) -> usize {
        if path == "/v1/policies" {
            self.inner.options.policy_body_limit
        } else {
            self.inner.options.json_body_limit
        }
    }

    /// Record outcomes: durable when the database takes them, buffered while it is
    /// unreachable. Returns whether they are durable.
    pub(crate) async fn record_outcomes(&self, feature: &Arc<Feature>, inputs: Vec<OutcomeInput>) -> ApiResult<bool> {
        if !self.inner.db.is_down() {
            let result = feature.manager.record_metrics_batch(inputs.clone()).await;
            self.inner.db.observe(&result);
            match result {
                Ok(()) => {
                    feature.health_due.store(true, Ordering::Relaxed);
                    self.inner.health_kick.notify_one();
                    return Ok(true);
                }
                Err(ManagerError::Store(e)) if error::is_unreachable(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.buffer_outcomes(feature, inputs)?;
        Ok(false)
    }

    fn buffer_outcomes(&self, feature: &Feature, inputs: Vec<OutcomeInput>) -> ApiResult<()> {
        let limit = self.inner.options.outcome_buffer;
        let mut buffer =
            feature.buffer.lock().map_err(|_| ApiError::Internal("the outcome buffer is unusable".into()))?;
        if buffer.len() + inputs.len() > limit {
            return Err(ApiError::Unavailable(format!(
                "the database is unreachable and the outcome buffer is full ({} of {limit} outcomes waiting); retry later",
                buffer.len()
            )));
        }
        buffer.extend(inputs);
        feature.counters.set_buffered(buffer.len());
        Ok(())
    }

    /// Write buffered outcomes of every feature; returns how many are still waiting.
    pub async fn flush_buffers(&self) -> usize {
        let mut waiting = 0;
        for feature in self.features() {
            waiting += self.flush_feature(&feature).await;
        }
        waiting
    }

    async fn flush_feature(&self, feature: &Arc<Feature>) -> usize {
        /// Only these errors drop an outcome: retrying cannot make them succeed.
        fn refused(e: &ManagerError) -> bool {
            matches!(
                e,
                ManagerError::Store(
                    crate::store::StoreError::InvalidRepositoryId(_) | crate::store::StoreError::UnknownRepository(_)
                )
            )
        }
        let requeue = |outcomes: Vec<OutcomeInput>| {
            if let Ok(mut b) = feature.buffer.lock() {
                for o in outcomes.into_iter().rev() {
                    b.push_front(o);
                }
            }
            feature.flushing.store(0, Ordering::Relaxed);
            feature.counters.set_buffered(feature.buffered());
            feature.buffered()
        };
        loop {
            // counted as buffered until committed, so the status never shows them as gone early
            let chunk: Vec<OutcomeInput> = match feature.buffer.lock() {
                Ok(mut b) if !b.is_empty() => {
                    let n = b.len().min(self.inner.options.max_batch);
                    feature.flushing.store(n, Ordering::Relaxed);
                    b.drain(..n).collect()
                }
                _ => return 0,
            };
            let result = feature.manager.record_metrics_batch(chunk.clone()).await;
            self.inner.db.observe(&result);
            match result {
                Ok(()) => {
                    tracing::info!(feature = feature.name(), outcomes = chunk.len(), "flushed buffered outcomes");
                    feature.health_due.store(true, Ordering::Relaxed);
                    self.inner.health_kick.notify_one();
                }
                Err(e) if refused(&e) => {
                    // one bad outcome (an owner/name that does not resolve): keep the others
                    let mut again = Vec::new();
                    for o in chunk {
                        let id = o.repository_id.clone();
                        let one = feature.manager.record_metrics(o.clone()).await;
                        self.inner.db.observe(&one);
                        match one {
                            Ok(()) => {}
                            Err(e) if refused(&e) => {
                                tracing::error!(feature = feature.name(), repository = %id, "dropped a buffered outcome: {e}");
                            }
                            Err(_) => again.push(o),
                        }
                    }
                    if !again.is_empty() {
                        return requeue(again);
                    }
                }
                Err(e) => {
                    tracing::debug!(feature = feature.name(), "cannot flush buffered outcomes yet: {e}");
                    return requeue(chunk);
                }
            }
            feature.flushing.store(0, Ordering::Relaxed);
            feature.counters.set_buffered(feature.buffered());
        }
    }

    /// Queue a repository with no category for background categorisation.
    pub(crate) fn note_uncategorized(&self, feature: &Arc<Feature>, id: &rollout_policy::RepoId) {
        let rollout_policy::RepoId::Uuid(v) = id else { return };
        // the hot path never waits: when the set is busy, the next decision queues it
        let Ok(mut queued) = self.inner.queued.try_lock() else { return };
        if queued.1.elapsed() > Duration::from_secs(600) || queued.0.len() > 100_000 {
            queued.0.clear();
            queued.1 = Instant::now();
        }
        if queued.0.insert(*v) {
            drop(queued);
            let _ = self.inner.uncategorized.try_send((feature.clone(), uuid::Uuid::from_u128(*v).to_string()));
        }
    }

    /// Check the `Authorization` header of a write.
    pub(crate) fn authorize(&self, parts: &Parts) -> ApiResult<()> {
        use subtle::ConstantTimeEq;
        let Some(expected) = &self.inner.token_digest else {
            return Err(ApiError::WritesDisabled);
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "this is a write: send `Authorization: Bearer <token>` with the ROLLOUT_SERVICE_TOKEN of the server"
                    .into(),
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("the `Authorization` header must be `Bearer <token>`".into()))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("the bearer token is not the service token".into()))
        }
    }
}

/// A write's caller: checked against the service token; names who did it for the audit
/// (`X-Rollout-Actor`, else `http`).
#[derive(Debug, Clone)]
pub struct Writer {
    /// `triggered_by` of the history rows this write makes.
    pub actor: String,
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.authorize(parts)?;
        if state.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(ApiError::Unavailable("the server is shutting down; retry on another instance".into()));
        }
        let actor = match parts.headers.get("x-rollout-actor") {
            None => "http".to_owned(),
            Some(v) => {
                let s = v.to_str().map_err(|_| ApiError::invalid("x-rollout-actor", "the header must be text"))?.trim();
                if s.is_empty() || s.chars().count() > 100 {
                    return Err(ApiError::invalid("x-rollout-actor", "the header must have 1 to 100 characters"));
                }
                s.to_owned()
            }
        };
        Ok(Writer { actor })
    }
}

async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.inner.metrics.observe_request(method.as_str(), route, start.elapsed());
    response
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound { field: None, message: format!("no route for {method} {}", uri.path()) }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    let body = serde_json::json!({"error": {"message": format!("method {method} is not allowed on {}", uri.path())}});
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// The router of SPEC §6 over `state`.
pub fn app(state: AppState) -> Router {
    let policy_limit = state.inner.options.policy_body_limit;
    let json_limit = state.inner.options.json_body_limit;
    let features = Router::new()
        .route("/", get(reads::feature_status))
        .route("/stats", get(reads::stats))
        .route("/history", get(reads::history))
        .route("/eligibility", post(decisions::eligibility))
        .route("/route", post(decisions::route))
        .route("/route/batch", post(decisions::route_batch))
        .route("/outcomes", post(operations::outcomes))
        .route("/percentage", put(operations::percentage))
        .route("/emergency-stop", post(operations::emergency_stop))
        .route("/resume", post(operations::resume))
        .route("/whitelist/add", post(operations::whitelist_add))
        .route("/whitelist/remove", post(operations::whitelist_remove))
        .route("/exclusions/add", post(operations::exclusions_add))
        .route("/exclusions/remove", post(operations::exclusions_remove))
        .route("/auto-rollback", put(operations::auto_rollback))
        .route("/check-health", post(operations::check_health));
    let policies = Router::new()
        .route("/", get(policies::list).post(policies::upload).layer(DefaultBodyLimit::max(policy_limit)))
        .route("/revert", post(policies::revert))
        .route("/{sha256}/activate", post(policies::activate));
    Router::new()
        .route("/", get(page::status_page))
        .route("/healthz", get(reads::healthz))
        .route("/readyz", get(reads::readyz))
        .route("/metrics", get(reads::metrics))
        .route("/v1/features", get(reads::list_features))
        .nest("/v1/features/{feature}", features)
        .nest("/v1/policies", policies)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves: then stop accepting connections
/// and finish the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // small JSON answers go out at once (no Nagle delay behind a delayed ACK)
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
