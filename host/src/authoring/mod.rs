//! Policy authoring tools: what an author runs offline before a new policy version serves.
//!
//! - [`simulate`]: ramp a configuration through percentages over a set of repositories and
//!   check that raising the percentage only ever adds repositories;
//! - [`diff`]: evaluate two policy versions on the same case files or recorded requests and
//!   group the decisions that change;
//! - [`mod@bench`]: decisions per second of a component, one call per decision and batched;
//! - [`explain`]: the chain of checks of SPEC §2 in words, with the line that decided.
//!
//! The CLI (`rollout policy simulate|diff|bench`, `rollout explain`) is a thin shell over
//! these modules. Every tool asks its policy through [`OfflinePolicy`], implemented by a
//! component instance ([`PolicyInstance`]) and by the reference rules linked natively
//! ([`NativeReference`]), so the logic is tested without WebAssembly too.

pub mod bench;
pub mod diff;
pub mod explain;
pub mod simulate;

use crate::engine::ConfigSnapshot;
use crate::runtime::{CallError, CompiledPolicy, PolicyInstance};
use rollout_policy as p;

/// A policy the offline tools can ask: the decision functions of the `rollout:policy`
/// world, one call or a batch at a time.
pub trait OfflinePolicy {
    /// `name version` of the policy, for reports.
    fn describe(&self) -> String;
    /// The category of a repository.
    fn categorize(&mut self, stats: &p::RepositoryStats) -> Result<p::Categorization, CallError>;
    /// Eligibility of one repository.
    fn is_eligible(&mut self, config: &ConfigSnapshot, repo: &p::Repository) -> Result<p::Eligibility, CallError>;
    /// Eligibility of many repositories, in order.
    fn is_eligible_batch(
        &mut self,
        config: &ConfigSnapshot,
        repos: &[p::Repository],
    ) -> Result<Vec<p::Eligibility>, CallError>;
    /// Where a job runs.
    fn route(
        &mut self,
        config: &ConfigSnapshot,
        repo: &p::Repository,
        job: &p::Job,
    ) -> Result<p::RouteDecision, CallError>;
    /// Where many jobs run, in order.
    fn route_batch(
        &mut self,
        config: &ConfigSnapshot,
        requests: &[(p::Repository, p::Job)],
    ) -> Result<Vec<p::RouteDecision>, CallError>;
}

/// A component instance with the name and version its `info()` reported.
pub struct Component {
    instance: PolicyInstance,
    describe: String,
}

impl Component {
    /// A fresh instance of `compiled` with the default limits.
    pub fn new(compiled: &CompiledPolicy) -> Result<Component, CallError> {
        let instance = compiled.instantiate(&crate::runtime::Limits::default())?;
        Ok(Component { instance, describe: format!("{} {}", compiled.name(), compiled.version()) })
    }
}

impl OfflinePolicy for Component {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn categorize(&mut self, stats: &p::RepositoryStats) -> Result<p::Categorization, CallError> {
        self.instance.categorize(stats)
    }

    fn is_eligible(&mut self, config: &ConfigSnapshot, repo: &p::Repository) -> Result<p::Eligibility, CallError> {
        self.instance.is_eligible(config, repo)
    }

    fn is_eligible_batch(
        &mut self,
        config: &ConfigSnapshot,
        repos: &[p::Repository],
    ) -> Result<Vec<p::Eligibility>, CallError> {
        self.instance.is_eligible_batch(config, repos)
    }

    fn route(
        &mut self,
        config: &ConfigSnapshot,
        repo: &p::Repository,
        job: &p::Job,
    ) -> Result<p::RouteDecision, CallError> {
        self.instance.route(config, repo, job)
    }

    fn route_batch(
        &mut self,
        config: &ConfigSnapshot,
        requests: &[(p::Repository, p::Job)],
    ) -> Result<Vec<p::RouteDecision>, CallError> {
        self.instance.route_batch(config, requests)
    }
}

/// The reference rules linked natively (no WebAssembly): a baseline for [`mod@bench`] and the
/// subject of the tools' own tests.
#[derive(Debug, Default)]
pub struct NativeReference {
    /// The evaluator for the configuration seen last, keyed by its snapshot version.
    evaluator: Option<(u64, p::Evaluator)>,
}

impl NativeReference {
    fn evaluator(&mut self, config: &ConfigSnapshot) -> Result<&p::Evaluator, CallError> {
        let fresh = !matches!(&self.evaluator, Some((v, _)) if *v == config.version());
        if fresh {
            let e = p::Evaluator::new(config.config().clone()).map_err(CallError::Config)?;
            self.evaluator = Some((config.version(), e));
        }
        match &self.evaluator {
            Some((_, e)) => Ok(e),
            None => Err(CallError::Trap("no evaluator".into())),
        }
    }
}

impl OfflinePolicy for NativeReference {
    fn describe(&self) -> String {
        format!("{} {} (native)", p::POLICY_NAME, p::POLICY_VERSION)
    }

    fn categorize(&mut self, stats: &p::RepositoryStats) -> Result<p::Categorization, CallError> {
        Ok(p::categorize(stats))
    }

    fn is_eligible(&mut self, config: &ConfigSnapshot, repo: &p::Repository) -> Result<p::Eligibility, CallError> {
        Ok(self.evaluator(config)?.is_eligible(repo))
    }

    fn is_eligible_batch(
        &mut self,
        config: &ConfigSnapshot,
        repos: &[p::Repository],
    ) -> Result<Vec<p::Eligibility>, CallError> {
        let e = self.evaluator(config)?;
        Ok(repos.iter().map(|r| e.is_eligible(r)).collect())
    }

    fn route(
        &mut self,
        config: &ConfigSnapshot,
        repo: &p::Repository,
        job: &p::Job,
    ) -> Result<p::RouteDecision, CallError> {
        Ok(self.evaluator(config)?.route(repo, job))
    }

    fn route_batch(
        &mut self,
        config: &ConfigSnapshot,
        requests: &[(p::Repository, p::Job)],
    ) -> Result<Vec<p::RouteDecision>, CallError> {
        let e = self.evaluator(config)?;
        Ok(requests.iter().map(|(r, j)| e.route(r, j)).collect())
    }
}
