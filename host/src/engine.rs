//! The seam between the rules and everything that uses them.
//!
//! [`Decide`] is what the manager, the HTTP server and the CLI need from a policy:
//! decisions as data, never an error to handle. Two implementations exist: [`NativePolicy`]
//! (the reference rules linked natively; for tests and for comparing against the
//! component) and the wasmtime runtime ([`crate::runtime`]), which serves production and
//! falls back to `policy_error` decisions when the component cannot answer.

use rollout_policy::{
    Categorization, Config, Eligibility, Evaluator, Health, Job, ProcessorWindow, Repository, RepositoryStats,
    RouteDecision,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_CONFIG_VERSION: AtomicU64 = AtomicU64::new(1);

/// A configuration as one immutable snapshot with a process-unique version.
///
/// Every change to a rollout's configuration makes a new snapshot; a policy runtime keys
/// whatever it prepares from the configuration (the guest's evaluator resource) by
/// [`ConfigSnapshot::version`], so it rebuilds only when the configuration changed.
#[derive(Debug, Clone)]
pub struct ConfigSnapshot {
    version: u64,
    config: Config,
}

impl ConfigSnapshot {
    /// Wrap `config` with a fresh version number.
    pub fn new(config: Config) -> Arc<ConfigSnapshot> {
        Arc::new(ConfigSnapshot { version: NEXT_CONFIG_VERSION.fetch_add(1, Ordering::Relaxed), config })
    }

    /// The process-unique version of this snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Name, version and digest of the policy that made a decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyVersion {
    /// The policy's own name (`info().name`).
    pub name: String,
    /// Its semantic version (`info().version`).
    pub version: String,
    /// Lowercase hex sha256 of the component bytes (`native` for [`NativePolicy`]).
    pub sha256: String,
}

/// What callers need from a policy: total functions, decisions as data.
///
/// Implementations never panic and never return an error: when a decision cannot be had
/// (a trap, a timeout, no policy loaded), routing answers `inngest` with rule
/// `policy_error` and eligibility answers not eligible with reason `policy_error`.
pub trait Decide: Send + Sync {
    /// Eligibility of one repository.
    fn is_eligible(&self, config: &Arc<ConfigSnapshot>, repository: &Repository) -> Eligibility;
    /// Eligibility of many repositories, in order.
    fn is_eligible_batch(&self, config: &Arc<ConfigSnapshot>, repositories: &[Repository]) -> Vec<Eligibility>;
    /// Where a job runs.
    fn route(&self, config: &Arc<ConfigSnapshot>, repository: &Repository, job: &Job) -> RouteDecision;
    /// Where many jobs run, in order.
    fn route_batch(&self, config: &Arc<ConfigSnapshot>, requests: &[(Repository, Job)]) -> Vec<RouteDecision>;
    /// The category of a repository; `None` when the policy could not answer.
    fn categorize(&self, stats: &RepositoryStats) -> Option<Categorization>;
    /// Health over the window; `None` when the policy could not answer (the caller then
    /// takes no action).
    fn evaluate_health(&self, config: &Config, windows: &[ProcessorWindow]) -> Option<Health>;
    /// The policy serving now; `None` when none is loaded.
    fn policy_version(&self) -> Option<PolicyVersion>;
}

/// The fallback eligibility when no policy could decide.
pub fn fallback_eligibility() -> Eligibility {
    Eligibility { eligible: false, reason: rollout_policy::EligibilityReason::PolicyError, bucket: 0 }
}

/// The fallback routing decision when no policy could decide (SPEC §2.3).
pub fn fallback_route() -> RouteDecision {
    RouteDecision {
        processor: rollout_policy::Processor::Inngest,
        rule: rollout_policy::RouteRule::PolicyError,
        eligibility: fallback_eligibility(),
    }
}

/// The reference rules linked natively, without WebAssembly.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativePolicy;

impl NativePolicy {
    fn evaluator(config: &ConfigSnapshot) -> Option<Evaluator> {
        Evaluator::new(config.config().clone()).ok()
    }
}

impl Decide for NativePolicy {
    fn is_eligible(&self, config: &Arc<ConfigSnapshot>, repository: &Repository) -> Eligibility {
        Self::evaluator(config).map_or_else(fallback_eligibility, |e| e.is_eligible(repository))
    }

    fn is_eligible_batch(&self, config: &Arc<ConfigSnapshot>, repositories: &[Repository]) -> Vec<Eligibility> {
        match Self::evaluator(config) {
            Some(e) => repositories.iter().map(|r| e.is_eligible(r)).collect(),
            None => repositories.iter().map(|_| fallback_eligibility()).collect(),
        }
    }

    fn route(&self, config: &Arc<ConfigSnapshot>, repository: &Repository, job: &Job) -> RouteDecision {
        Self::evaluator(config).map_or_else(fallback_route, |e| e.route(repository, job))
    }

    fn route_batch(&self, config: &Arc<ConfigSnapshot>, requests: &[(Repository, Job)]) -> Vec<RouteDecision> {
        match Self::evaluator(config) {
            Some(e) => requests.iter().map(|(r, j)| e.route(r, j)).collect(),
            None => requests.iter().map(|_| fallback_route()).collect(),
        }
    }

    fn categorize(&self, stats: &RepositoryStats) -> Option<Categorization> {
        Some(rollout_policy::categorize(stats))
    }

    fn evaluate_health(&self, config: &Config, windows: &[ProcessorWindow]) -> Option<Health> {
        Some(rollout_policy::evaluate_health(config, windows))
    }

    fn policy_version(&self) -> Option<PolicyVersion> {
        Some(PolicyVersion {
            name: rollout_policy::POLICY_NAME.to_owned(),
            version: rollout_policy::POLICY_VERSION.to_owned(),
            sha256: "native".to_owned(),
        })
    }
}
