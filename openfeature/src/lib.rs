//! An [OpenFeature](https://openfeature.dev) provider (crate `open-feature` 0.3) that decides
//! **in-process** with the rollout policy component, fed by a `rollout serve`'s sync endpoint
//! and kept in step with it: the server is the control plane, every client decides locally
//! with the same component and follows changes as they happen.
//!
//! - **Flags** are those of the server's OFREP endpoint: a feature `F` is the boolean flag `F`
//!   (the repository takes part) and the string flag `F/processor` (where the job runs). The
//!   targeting key is the repository id; `category` and the job's fields (`job_type`,
//!   `time_range_days`, `pr_numbers`, `trigger_source`, `max_items`) are context attributes.
//!   Reasons and flag metadata are the OFREP endpoint's ([`rollout::http::ofrep`]).
//! - **Sync.** [`RolloutProvider::connect`] reads `GET /v1/sync/{feature}` (the configuration
//!   decisions use and the serving policy), loads the component (`GET
//!   /v1/policies/{sha}/component` when it is not the one built in), then follows `GET
//!   /v1/sync/{feature}/events`: each snapshot it pushes replaces the configuration, and a new
//!   policy sha is fetched, validated by the embedded runtime and swapped in without a
//!   restart. A component the runtime refuses leaves the last good one deciding
//!   ([`SyncStatus::last_error`] says why) — with the snapshot's configuration all the same,
//!   so an emergency stop or a percentage change is never held back by a policy.
//! - **Status.** `Ready` while the stream is up; `STALE` while the server is unreachable —
//!   still deciding with the last good snapshot — and reconnecting every second (up to 5 s
//!   between tries), or while the server's policy is one the runtime refused; `Ready` again
//!   once a snapshot is applied whole.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use open_feature::{EvaluationContext, OpenFeature};
//! use rollout_openfeature::RolloutProvider;
//!
//! let provider = RolloutProvider::connect("http://127.0.0.1:8080", "hybrid_progressive_capture").await?;
//! let mut api = OpenFeature::singleton_mut().await;
//! api.set_provider(provider).await;
//! let client = api.create_client();
//! let context = EvaluationContext::default()
//!     .with_targeting_key("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11")
//!     .with_custom_field("max_items", 80);
//! let processor = client
//!     .get_string_value("hybrid_progressive_capture/processor", Some(&context), None)
//!     .await
//!     .unwrap_or_else(|_| "inngest".to_owned());
//! # let _ = processor; Ok(()) }
//! ```

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use open_feature::provider::{FeatureProvider, ProviderMetadata, ProviderStatus, ResolutionDetails};
use open_feature::{
    EvaluationContext, EvaluationContextFieldValue, EvaluationError, EvaluationErrorCode, EvaluationReason,
    EvaluationResult, FlagMetadata, StructValue,
};
use rollout::engine::{ConfigSnapshot, Policy};
use rollout::env::EnvOverrides;
use rollout::http::ofrep::{context_inputs, openfeature_reason, openfeature_rule_reason, JOB_FIELDS, PROCESSOR_SUFFIX};
use rollout::input::values::RepositoryUuid;
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout::store::StoredConfig;
use rollout_policy::{EligibilityReason, Job, Repository, RouteRule};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The server did not answer, or answered with an error.
    #[error("cannot read `{url}`: {message}")]
    Http {
        /// What was read.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// The snapshot is not what a rollout server sends.
    #[error("the snapshot of `{feature}` is not understood: {message}")]
    Snapshot {
        /// The feature.
        feature: String,
        /// What is wrong.
        message: String,
    },
    /// The embedded runtime refused the policy component.
    #[error("the policy component {sha256} was refused: {message}")]
    Policy {
        /// The component's sha256.
        sha256: String,
        /// Why.
        message: String,
    },
}

/// What the provider decides with: one configuration snapshot and its stored version.
struct Synced {
    config: Arc<ConfigSnapshot>,
    version: i64,
}

const READY: u8 = 0;
const STALE: u8 = 1;

/// The provider's view of its sync with the server.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncStatus {
    /// Whether the event stream is up (`false`: stale, serving the last good snapshot).
    pub connected: bool,
    /// The stored version of the configuration in use.
    pub config_version: i64,
    /// The sha256 of the component in use.
    pub policy_sha256: Option<String>,
    /// Snapshots applied since the start.
    pub snapshots_applied: u64,
    /// The last failure (a refused component, an unreachable server), if any.
    pub last_error: Option<String>,
}

struct Inner {
    base_url: String,
    feature: String,
    http: reqwest::Client,
    runtime: Runtime,
    synced: ArcSwapOption<Synced>,
    state: AtomicU8,
    applied: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The in-process provider; see the crate documentation.
pub struct RolloutProvider {
    inner: Arc<Inner>,
    metadata: ProviderMetadata,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RolloutProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutProvider").field("feature", &self.inner.feature).finish_non_exhaustive()
    }
}

impl Drop for RolloutProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Inner {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn fail(&self, message: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(message);
        }
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, ProviderError> {
        let url = self.url(path);
        let http = |message: String| ProviderError::Http { url: url.clone(), message };
        let resp = self.http.get(&url).send().await.map_err(|e| http(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            return Err(http(format!("{status}: {body}")));
        }
        Ok(resp)
    }

    /// Apply one snapshot: the configuration always — an emergency stop or a percentage
    /// change must reach the client whatever happens to the policy — and the policy when its
    /// sha changed (fetched, validated and swapped in; a refused one leaves the last good
    /// one deciding, and the error is returned after the configuration was applied).
    async fn apply(&self, snapshot: &Value) -> Result<(), ProviderError> {
        let bad = |message: String| ProviderError::Snapshot { feature: self.feature.clone(), message };
        let version =
            snapshot.get("config_version").and_then(Value::as_i64).ok_or_else(|| bad("no config_version".into()))?;
        let config = snapshot.get("config").ok_or_else(|| bad("no config".into()))?;
        let stored = StoredConfig::from_json(config).map_err(|e| bad(e.to_string()))?;
        let policy = match snapshot.pointer("/policy/sha256").and_then(Value::as_str) {
            Some(sha) if self.runtime.policy_version().map(|v| v.sha256).as_deref() != Some(sha) => {
                self.load_policy(sha).await
            }
            _ => Ok(()),
        };
        // the server applied its overrides already
        let config = ConfigSnapshot::new(EnvOverrides::default().apply_to(&stored));
        self.synced.store(Some(Arc::new(Synced { config, version })));
        self.applied.fetch_add(1, Ordering::Relaxed);
        policy
    }

    /// Fetch the component `sha` and swap it in (compiled off the async threads).
    async fn load_policy(&self, sha: &str) -> Result<(), ProviderError> {
        let path = format!("/v1/policies/{sha}/component");
        let bytes = self
            .get(&path)
            .await?
            .bytes()
            .await
            .map_err(|e| ProviderError::Http { url: self.url(&path), message: e.to_string() })?;
        let runtime = self.runtime.clone();
        let source = format!("sync {}", self.base_url);
        let refused = |message: String| ProviderError::Policy { sha256: sha.to_owned(), message };
        match tokio::task::spawn_blocking(move || runtime.load_bytes(&bytes, &source)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(refused(e.to_string())),
            Err(e) => Err(refused(e.to_string())),
        }
    }

    /// Follow the event stream until it ends; `Ok` when it ended cleanly.
    async fn follow(&self) -> Result<(), ProviderError> {
        let path = format!("/v1/sync/{}/events", self.feature);
        let mut resp = self.get(&path).await?;
        let mut buffer = String::new();
        loop {
            let chunk =
                resp.chunk().await.map_err(|e| ProviderError::Http { url: self.url(&path), message: e.to_string() })?;
            let Some(chunk) = chunk else { return Ok(()) };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if !block.lines().any(|l| l == "event: snapshot") {
                    continue;
                }
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                    .collect();
                let snapshot: Value = serde_json::from_str(&data)
                    .map_err(|e| ProviderError::Snapshot { feature: self.feature.clone(), message: e.to_string() })?;
                match self.apply(&snapshot).await {
                    Ok(()) => self.state.store(READY, Ordering::Relaxed),
                    // a refused component: the last good one keeps deciding (with the new
                    // configuration), out of step with the server, so STALE; the stream goes on
                    Err(e) => {
                        tracing::warn!("rollout provider: {e}");
                        self.state.store(STALE, Ordering::Relaxed);
                        self.fail(e.to_string());
                    }
                }
            }
        }
    }

    /// Follow the stream forever, reconnecting after 1 s, then up to 5 s, stale meanwhile.
    async fn run(self: Arc<Self>) {
        let mut wait = Duration::from_secs(1);
        loop {
            let result = self.follow().await;
            self.state.store(STALE, Ordering::Relaxed);
            match result {
                Ok(()) => self.fail("the sync stream ended".into()),
                Err(e) => self.fail(e.to_string()),
            }
            tokio::time::sleep(wait).await;
            wait = if self.applied.load(Ordering::Relaxed) > 0 { (wait * 2).min(Duration::from_secs(5)) } else { wait };
            if self.state.load(Ordering::Relaxed) == READY {
                wait = Duration::from_secs(1);
            }
        }
    }
}

impl RolloutProvider {
    /// Read the snapshot of `feature` from the rollout server at `base_url`, load its policy,
    /// and start following its changes (on the current tokio runtime).
    pub async fn connect(base_url: &str, feature: &str) -> Result<RolloutProvider, ProviderError> {
        let runtime = Runtime::new(RuntimeOptions::default())
            .map_err(|e| ProviderError::Policy { sha256: "bundled".into(), message: e.to_string() })?;
        runtime
            .load_bytes(BUNDLED_POLICY, "bundled")
            .map_err(|e| ProviderError::Policy { sha256: "bundled".into(), message: e.to_string() })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ProviderError::Http { url: base_url.to_owned(), message: e.to_string() })?;
        let inner = Arc::new(Inner {
            base_url: base_url.trim_end_matches('/').to_owned(),
            feature: feature.to_owned(),
            http,
            runtime,
            synced: ArcSwapOption::empty(),
            state: AtomicU8::new(READY),
            applied: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        let snapshot: Value = inner
            .get(&format!("/v1/sync/{feature}"))
            .await?
            .json()
            .await
            .map_err(|e| ProviderError::Snapshot { feature: feature.to_owned(), message: e.to_string() })?;
        inner.apply(&snapshot).await?;
        let task = tokio::spawn(inner.clone().run());
        Ok(RolloutProvider { inner, metadata: ProviderMetadata::new("rollout in-process"), task })
    }

    /// The sync's state now.
    pub fn sync_status(&self) -> SyncStatus {
        SyncStatus {
            connected: self.inner.state.load(Ordering::Relaxed) == READY,
            config_version: self.inner.synced.load().as_ref().map_or(0, |s| s.version),
            policy_sha256: self.inner.runtime.policy_version().map(|v| v.sha256),
            snapshots_applied: self.inner.applied.load(Ordering::Relaxed),
            last_error: self.inner.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Whether a flag key is the routing flag (`F/processor`) or the eligibility flag (`F`);
    /// `FLAG_NOT_FOUND` for any other.
    fn flag(&self, key: &str) -> EvaluationResult<bool> {
        match key.strip_suffix(PROCESSOR_SUFFIX) {
            Some(name) if name == self.inner.feature => Ok(true),
            None if key == self.inner.feature => Ok(false),
            _ => Err(error(
                EvaluationErrorCode::FlagNotFound,
                format!(
                    "flag `{key}` was not found: this provider serves `{0}` and `{0}{PROCESSOR_SUFFIX}`",
                    self.inner.feature
                ),
            )),
        }
    }

    fn synced(&self) -> EvaluationResult<Arc<Synced>> {
        self.inner.synced.load_full().ok_or_else(|| error(EvaluationErrorCode::ProviderNotReady, "no snapshot yet"))
    }

    fn metadata_of(
        &self,
        synced: &Synced,
        reason: EligibilityReason,
        rule: Option<RouteRule>,
        bucket: u8,
    ) -> FlagMetadata {
        let mut m = FlagMetadata::default()
            .with_value("reason_code", reason.as_str())
            .with_value("bucket", i64::from(bucket))
            .with_value("config_version", synced.version);
        if let Some(r) = rule {
            m = m.with_value("rule", r.as_str());
        }
        if let Some(v) = self.inner.runtime.policy_version() {
            m = m.with_value("policy_sha256", v.sha256);
        }
        m
    }
}

fn error(code: EvaluationErrorCode, message: impl Into<String>) -> EvaluationError {
    EvaluationError { code, message: Some(message.into()) }
}

fn reason(text: &str) -> EvaluationReason {
    match text {
        "DISABLED" => EvaluationReason::Disabled,
        "SPLIT" => EvaluationReason::Split,
        "DEFAULT" => EvaluationReason::Default,
        "TARGETING_MATCH" => EvaluationReason::TargetingMatch,
        other => EvaluationReason::Other(other.to_owned()),
    }
}

/// A context attribute as JSON (what the job decoder reads).
fn json_of(value: &EvaluationContextFieldValue) -> Option<Value> {
    Some(match value {
        EvaluationContextFieldValue::Bool(b) => Value::Bool(*b),
        EvaluationContextFieldValue::Int(i) => Value::from(*i),
        EvaluationContextFieldValue::Float(f) => Value::from(*f),
        EvaluationContextFieldValue::String(s) => Value::String(s.clone()),
        EvaluationContextFieldValue::Struct(any) => {
            let numbers = any.downcast_ref::<Vec<u64>>()?;
            Value::from(numbers.clone())
        }
        EvaluationContextFieldValue::DateTime(_) => return None,
    })
}

/// The repository and job a context asks about.
fn asked(context: &EvaluationContext) -> EvaluationResult<(Repository, Job)> {
    let key = context
        .targeting_key
        .as_deref()
        .ok_or_else(|| error(EvaluationErrorCode::TargetingKeyMissing, "the targeting key is the repository id"))?;
    let id = RepositoryUuid::new(key)
        .map_err(|m| error(EvaluationErrorCode::InvalidContext, format!("targetingKey: {m}")))?;
    let mut attributes = serde_json::Map::new();
    for field in JOB_FIELDS.iter().copied().chain(["category"]) {
        if let Some(v) = context.custom_fields.get(field) {
            let v = json_of(v).ok_or_else(|| {
                error(EvaluationErrorCode::InvalidContext, format!("{field}: not a value the rules take"))
            })?;
            attributes.insert(field.to_owned(), v);
        }
    }
    let (category, job) = context_inputs(&attributes).map_err(|m| error(EvaluationErrorCode::InvalidContext, m))?;
    Ok((Repository { id: id.repo_id(), category }, job))
}

const FALLBACK: &str =
    "the policy gave no answer (it trapped, ran past its deadline, or none is loaded): use the code default";

#[async_trait]
impl FeatureProvider for RolloutProvider {
    fn metadata(&self) -> &ProviderMetadata {
        &self.metadata
    }

    fn status(&self) -> ProviderStatus {
        match self.inner.state.load(Ordering::Relaxed) {
            READY => ProviderStatus::Ready,
            _ => ProviderStatus::STALE,
        }
    }

    async fn resolve_bool_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<bool>> {
        if self.flag(flag_key)? {
            return Err(error(EvaluationErrorCode::TypeMismatch, format!("`{flag_key}` is a string flag")));
        }
        let (repo, _) = asked(context)?;
        let synced = self.synced()?;
        let e = self
            .inner
            .runtime
            .is_eligible(&synced.config, &repo)
            .map_err(|_| error(EvaluationErrorCode::General(FALLBACK.into()), FALLBACK))?;
        Ok(ResolutionDetails {
            value: e.eligible,
            variant: Some(if e.eligible { "eligible" } else { "not_eligible" }.to_owned()),
            reason: Some(reason(openfeature_reason(e.reason))),
            flag_metadata: Some(self.metadata_of(&synced, e.reason, None, e.bucket)),
        })
    }

    async fn resolve_string_value(
        &self,
        flag_key: &str,
        context: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<String>> {
        if !self.flag(flag_key)? {
            return Err(error(EvaluationErrorCode::TypeMismatch, format!("`{flag_key}` is a boolean flag")));
        }
        let (repo, job) = asked(context)?;
        let synced = self.synced()?;
        let r = self
            .inner
            .runtime
            .route(&synced.config, &repo, &job)
            .map_err(|_| error(EvaluationErrorCode::General(FALLBACK.into()), FALLBACK))?;
        let why = if r.eligibility.eligible {
            openfeature_rule_reason(r.rule)
        } else {
            openfeature_reason(r.eligibility.reason)
        };
        Ok(ResolutionDetails {
            value: r.processor.as_str().to_owned(),
            variant: Some(r.processor.as_str().to_owned()),
            reason: Some(reason(why)),
            flag_metadata: Some(self.metadata_of(&synced, r.eligibility.reason, Some(r.rule), r.eligibility.bucket)),
        })
    }

    async fn resolve_int_value(
        &self,
        flag_key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<i64>> {
        let _ = self.flag(flag_key)?;
        Err(error(EvaluationErrorCode::TypeMismatch, format!("`{flag_key}` is not an integer flag")))
    }

    async fn resolve_float_value(
        &self,
        flag_key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<f64>> {
        let _ = self.flag(flag_key)?;
        Err(error(EvaluationErrorCode::TypeMismatch, format!("`{flag_key}` is not a number flag")))
    }

    async fn resolve_struct_value(
        &self,
        flag_key: &str,
        _: &EvaluationContext,
    ) -> EvaluationResult<ResolutionDetails<StructValue>> {
        let _ = self.flag(flag_key)?;
        Err(error(EvaluationErrorCode::TypeMismatch, format!("`{flag_key}` is not an object flag")))
    }
}
