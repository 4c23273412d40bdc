//! The component export: the shared glue of `rollout_policy::guest` over this policy. The
//! reference's evaluator decides eligibility; [`crate::route`] decides routing; `info`
//! names this policy. Compiled only for wasm.

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
}

type Component = Export<SizeAware>;

export_policy!(Component);
