//! The seam between the rules and everything that uses them.
//!
//! [`Policy`] is the one trait that means "a policy" in this crate: the manager and the
//! server decide through it, the case runner evaluates case files through it, and the
//! authoring tools (simulate, diff, bench, explain) ask it. Every method answers data or a
//! [`CallError`] saying why the policy gave no answer; callers that must always answer
//! (routing a job) fall back with [`fallback_route`] / [`fallback_eligibility`] (SPEC §2.3),
//! callers that test a policy (case files) report the error.
//!
//! Implementations:
//! - [`crate::runtime::Runtime`]: the serving component of a process, hot-swapped, pooled,
//!   with probation and counters;
//! - [`crate::runtime::Sandbox`]: one component as it is, for offline tools (no safety
//!   contract, no probation);
//! - [`NativePolicy`]: the reference rules linked natively, for tests and baselines.

use rollout_policy::{
    Categorization, Check, Config, ConfigError, Eligibility, Evaluator, Health, Job, ProcessorWindow, Repository,
    RepositoryStats, RouteDecision, Trace,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

static NEXT_CONFIG_VERSION: AtomicU64 = AtomicU64::new(1);

/// A configuration as one immutable snapshot with a process-unique version.
///
/// Every change to a rollout's configuration makes a new snapshot; a policy keys whatever
/// it prepares from the configuration (the guest's evaluator resource, a native
/// [`Evaluator`]) by [`ConfigSnapshot::version`], so it rebuilds only when the
/// configuration changed.
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

/// A logged decision shares its policy version's sha256 ([`crate::store::PackedDecision`]).
impl crate::store::PolicySha for PolicyVersion {
    fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl std::fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// Why a policy gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No policy is loaded.
    #[error("no policy is loaded")]
    NoPolicy,
    /// The guest trapped or the call could not be made.
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The call ran past its epoch deadline.
    #[error("policy ran past its deadline of {0} ms")]
    Timeout(u64),
    /// The guest tried to grow its memory past the cap.
    #[error("policy ran out of memory (cap {0} bytes)")]
    MemoryExhausted(usize),
    /// No instance could be made.
    #[error("cannot instantiate the policy: {0}")]
    Instantiate(String),
    /// The policy refused the configuration.
    #[error("policy refused the configuration: {0}")]
    Config(ConfigError),
    /// The call returned, but its answer cannot be used: a batch of the wrong length, or a
    /// batch the policy refused as malformed (the host encoded it, so a policy bug).
    #[error("policy gave an unusable answer: {0}")]
    BadAnswer(String),
    /// An earlier call trapped; the instance cannot be entered again.
    #[error("policy instance is unusable after an earlier trap")]
    Poisoned,
    /// The policy does not export what the call needs (a component built before the
    /// contract had it, e.g. `explain`).
    #[error("{0}")]
    Unsupported(String),
}

impl CallError {
    pub(crate) fn trap(e: wasmtime::Error) -> CallError {
        CallError::Trap(format!("{e:#}"))
    }

    /// Whether the policy itself failed (trap, timeout, memory, instantiation), as opposed
    /// to refusing a configuration or lacking a function.
    pub fn is_failure(&self) -> bool {
        !matches!(self, CallError::Config(_) | CallError::Unsupported(_) | CallError::NoPolicy)
    }
}

/// The result of a policy call.
pub type CallResult<T> = Result<T, CallError>;

/// One question to a policy, with every input explicit (what a case file asks, and what
/// [`Policy::explain`] explains).
#[derive(Debug, Clone)]
pub enum Query {
    /// `is_eligible(config, repository)`.
    IsEligible(Config, Repository),
    /// `route(config, repository, job)`.
    Route(Config, Repository, Job),
    /// `categorize(stats)`.
    Categorize(RepositoryStats),
    /// `evaluate_health(config, windows)`.
    EvaluateHealth(Config, Vec<ProcessorWindow>),
}

/// A policy's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// An eligibility decision.
    Eligibility(Eligibility),
    /// A routing decision.
    Route(RouteDecision),
    /// A categorisation.
    Categorization(Categorization),
    /// A health evaluation.
    Health(Health),
}

/// A decision and the checks the policy made to reach it, in evaluation order; within a
/// section, the last check that held decided (the `explain` interface of the WIT package).
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The decision: exactly what the policy's decision functions answer for the query.
    pub decision: Decision,
    /// The checks.
    pub checks: Vec<Check>,
}

/// A policy: the decision functions of the `rollout:policy` world as data.
///
/// Implementations never panic. `&self` everywhere: an implementation that needs mutable
/// state (a component instance) keeps it behind its own lock or pool, so one policy serves
/// many threads.
pub trait Policy: Send + Sync {
    /// The policy answering now; `None` when none is loaded.
    fn version(&self) -> Option<PolicyVersion>;
    /// [`Policy::version`] as a shared handle: what a logged decision names, taken per
    /// decision without copying the version's strings (a policy that keeps its version in
    /// an `Arc` hands out a clone of it).
    fn version_shared(&self) -> Option<Arc<PolicyVersion>> {
        self.version().map(Arc::new)
    }
    /// Eligibility of one repository.
    fn is_eligible(&self, config: &Arc<ConfigSnapshot>, repository: &Repository) -> CallResult<Eligibility>;
    /// Eligibility of many repositories, in order.
    fn is_eligible_batch(
        &self,
        config: &Arc<ConfigSnapshot>,
        repositories: &[Repository],
    ) -> CallResult<Vec<Eligibility>>;
    /// Eligibility of many repositories for a read (statistics, the status page): the same
    /// answers as [`Policy::is_eligible_batch`], but a read never counts against a new
    /// version's probation (a page refresh must not revert a good policy).
    fn is_eligible_batch_for_read(
        &self,
        config: &Arc<ConfigSnapshot>,
        repositories: &[Repository],
    ) -> CallResult<Vec<Eligibility>> {
        self.is_eligible_batch(config, repositories)
    }
    /// Where a job runs.
    fn route(&self, config: &Arc<ConfigSnapshot>, repository: &Repository, job: &Job) -> CallResult<RouteDecision>;
    /// Where many jobs run, in order.
    fn route_batch(
        &self,
        config: &Arc<ConfigSnapshot>,
        requests: &[(Repository, Job)],
    ) -> CallResult<Vec<RouteDecision>>;
    /// The category of a repository.
    fn categorize(&self, stats: &RepositoryStats) -> CallResult<Categorization>;
    /// Health over the evaluation window.
    fn evaluate_health(&self, config: &Config, windows: &[ProcessorWindow]) -> CallResult<Health>;
    /// Whether [`Policy::evaluate_health_signals`] judges the signals (the policy speaks
    /// contract 0.1.1), rather than the error rate alone.
    fn judges_signals(&self) -> bool {
        false
    }
    /// Health from every indicator: errors, queue backlog and processing time (WIT
    /// `monitoring`, contract 0.1.1). By default (a policy that does not know the signals)
    /// [`Policy::evaluate_health`] alone.
    fn evaluate_health_signals(
        &self,
        config: &Config,
        windows: &[ProcessorWindow],
        signals: &[rollout_policy::ProcessorSignals],
        limits: &rollout_policy::HealthLimits,
    ) -> CallResult<Health> {
        let _ = (signals, limits);
        self.evaluate_health(config, windows)
    }
    /// The decision for `query` with the checks that reached it, from the policy's own
    /// code. [`CallError::Unsupported`] for a policy that cannot explain (a component built
    /// before the contract had the `explain` interface).
    fn explain(&self, query: &Query) -> CallResult<Explanation> {
        let _ = query;
        Err(CallError::Unsupported(
            "this policy cannot explain its decisions (it does not export `rollout:policy/explain`)".into(),
        ))
    }
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

/// The reference rules linked natively, without WebAssembly. Keeps the evaluator of the
/// configuration seen last, like a component instance keeps its evaluator resources.
#[derive(Debug, Default)]
pub struct NativePolicy {
    last: Mutex<Option<(u64, Arc<Evaluator>)>>,
}

impl NativePolicy {
    /// The reference rules.
    pub fn new() -> NativePolicy {
        NativePolicy::default()
    }

    fn evaluator(&self, config: &ConfigSnapshot) -> CallResult<Arc<Evaluator>> {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((v, e)) = last.as_ref() {
            if *v == config.version() {
                return Ok(e.clone());
            }
        }
        let e = Arc::new(Evaluator::new(config.config().clone()).map_err(CallError::Config)?);
        *last = Some((config.version(), e.clone()));
        Ok(e)
    }
}

impl Policy for NativePolicy {
    fn version(&self) -> Option<PolicyVersion> {
        Some(PolicyVersion {
            name: rollout_policy::POLICY_NAME.to_owned(),
            version: rollout_policy::POLICY_VERSION.to_owned(),
            sha256: "native".to_owned(),
        })
    }

    fn is_eligible(&self, config: &Arc<ConfigSnapshot>, repository: &Repository) -> CallResult<Eligibility> {
        Ok(self.evaluator(config)?.is_eligible(repository))
    }

    fn is_eligible_batch(
        &self,
        config: &Arc<ConfigSnapshot>,
        repositories: &[Repository],
    ) -> CallResult<Vec<Eligibility>> {
        let e = self.evaluator(config)?;
        Ok(repositories.iter().map(|r| e.is_eligible(r)).collect())
    }

    fn route(&self, config: &Arc<ConfigSnapshot>, repository: &Repository, job: &Job) -> CallResult<RouteDecision> {
        Ok(self.evaluator(config)?.route(repository, job))
    }

    fn route_batch(
        &self,
        config: &Arc<ConfigSnapshot>,
        requests: &[(Repository, Job)],
    ) -> CallResult<Vec<RouteDecision>> {
        let e = self.evaluator(config)?;
        Ok(requests.iter().map(|(r, j)| e.route(r, j)).collect())
    }

    fn categorize(&self, stats: &RepositoryStats) -> CallResult<Categorization> {
        Ok(rollout_policy::categorize(stats))
    }

    fn evaluate_health(&self, config: &Config, windows: &[ProcessorWindow]) -> CallResult<Health> {
        Ok(rollout_policy::evaluate_health(config, windows))
    }

    fn judges_signals(&self) -> bool {
        true
    }

    fn evaluate_health_signals(
        &self,
        config: &Config,
        windows: &[ProcessorWindow],
        signals: &[rollout_policy::ProcessorSignals],
        limits: &rollout_policy::HealthLimits,
    ) -> CallResult<Health> {
        Ok(rollout_policy::evaluate_health_signals(config, windows, signals, limits))
    }

    fn explain(&self, query: &Query) -> CallResult<Explanation> {
        let mut trace = Trace::new();
        let evaluator = |c: &Config| Evaluator::new(c.clone()).map_err(CallError::Config);
        let decision = match query {
            Query::IsEligible(c, r) => Decision::Eligibility(evaluator(c)?.is_eligible_traced(r, &mut trace)),
            Query::Route(c, r, j) => Decision::Route(evaluator(c)?.route_traced(r, j, &mut trace)),
            Query::Categorize(s) => Decision::Categorization(rollout_policy::categorize_traced(s, &mut trace)),
            Query::EvaluateHealth(c, w) => Decision::Health(rollout_policy::evaluate_health_traced(c, w, &mut trace)),
        };
        Ok(Explanation { decision, checks: trace.checks })
    }
}
