//! The reference policy's component: the shared export glue ([`crate::guest`]) over the
//! reference rules. Compiled only for wasm (feature `component`).

use crate::guest::{export_policy, Export, Policy};

/// The reference policy.
pub struct Reference;

impl Policy for Reference {
    type Evaluator = crate::Evaluator;

    fn info() -> (&'static str, &'static str) {
        (crate::POLICY_NAME, crate::POLICY_VERSION)
    }
}

type Component = Export<Reference>;

export_policy!(Component with_types_in crate::guest);
