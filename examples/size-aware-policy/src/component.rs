//! The component export: the shared glue of `rollout_policy::guest` over this policy. The
//! reference's evaluator decides eligibility; [`crate::route`] decides routing; `info`
//! names this policy. The traced methods give `explain` the real chains: the reference's,
//! and [`crate::route_traced`] for routing. Compiled only for wasm.

use rollout_policy::guest::{export_policy, Evaluate, Export, Policy};
use rollout_policy::{self as p, ConfigError};

/// This policy.
pub struct SizeAware;

/// The evaluator: the reference's, with this crate's routing.
pub struct SizeAwareEvaluator(p::Evaluator);

impl Policy for SizeAware {
    type Evaluator = SizeAwareEvaluator;

    fn info() -> (&'static str, &'static str) {
        (crate::POLICY_NAME, crate::POLICY_VERSION)
    }

    // Categorisation and health are the reference's (the default `categorize` and
    // `evaluate_health`), so their explanations are the reference's traces.
    fn categorize_traced(stats: &p::RepositoryStats, trace: &mut p::Trace) -> p::Categorization {
        p::categorize_traced(stats, trace)
    }

    fn evaluate_health_traced(config: &p::Config, windows: &[p::ProcessorWindow], trace: &mut p::Trace) -> p::Health {
        p::evaluate_health_traced(config, windows, trace)
    }
}

impl Evaluate for SizeAwareEvaluator {
    fn create(config: p::Config) -> Result<Self, ConfigError> {
        p::Evaluator::new(config).map(SizeAwareEvaluator)
    }

    fn is_eligible(&self, repository: &p::Repository) -> p::Eligibility {
        self.0.is_eligible(repository)
    }

    fn route(&self, repository: &p::Repository, job: &p::Job) -> p::RouteDecision {
        crate::route(&self.0, repository, job)
    }

    fn is_eligible_traced(&self, repository: &p::Repository, trace: &mut p::Trace) -> p::Eligibility {
        self.0.is_eligible_traced(repository, trace)
    }

    fn route_traced(&self, repository: &p::Repository, job: &p::Job, trace: &mut p::Trace) -> p::RouteDecision {
        crate::route_traced(&self.0, repository, job, trace)
    }
}

type Component = Export<SizeAware>;

export_policy!(Component);
