//! The reference policy's component: the shared export glue ([`crate::guest`]) over the
//! reference rules, with their real traces for `explain`. Compiled only for wasm (feature
//! `component`).

use crate::guest::{export_policy, Export, Policy};

/// The reference policy.
pub struct Reference;

impl Policy for Reference {
    type Evaluator = crate::Evaluator;

    fn info() -> (&'static str, &'static str) {
        (crate::POLICY_NAME, crate::POLICY_VERSION)
    }

    fn categorize_traced(stats: &crate::RepositoryStats, trace: &mut crate::Trace) -> crate::Categorization {
        crate::categorize_traced(stats, trace)
    }

    fn evaluate_health_traced(
        config: &crate::Config,
        windows: &[crate::ProcessorWindow],
        trace: &mut crate::Trace,
    ) -> crate::Health {
        crate::evaluate_health_traced(config, windows, trace)
    }
}

type Component = Export<Reference>;

export_policy!(Component with_types_in crate::guest);
