//! The packed single decision (WIT interface `packed`): one repository and one job as core
//! scalars, one decision as a `u32`, so a single call enters the guest once with nothing
//! in guest memory.
//!
//! The same codes as the batch columns ([`crate::columns`]). The guest glue decodes a
//! [`PackedQuery`] and encodes the answer with [`encode_route`] / [`encode_eligibility`];
//! the host encodes the query and checks the answer once with [`decode_route`] /
//! [`decode_eligibility`] — an answer with a bit outside its layout, a code outside its
//! enum, or [`REFUSED`] set is an error, never a guess.
//!
//! ```
//! use rollout_policy::packed::{decode_route, encode_route, PackedQuery};
//! use rollout_policy::{Config, Evaluator, Job, Repository, Strategy, TriggerSource};
//!
//! let e = Evaluator::new(Config { rollout_percentage: 100, is_active: true, rollout_strategy: Strategy::Percentage, ..Config::default() })?;
//! let repo = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", None);
//! let job = Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
//! let q = PackedQuery::encode(&repo, &job).expect("a UUID id and a job without lists packs");
//! let (r, j) = q.decode().expect("a packed query decodes");
//! assert_eq!((&r, &j), (&repo, &job));
//! assert_eq!(decode_route(encode_route(&e.route(&r, &j))), Ok(e.route(&repo, &job)));
//! # Ok::<(), rollout_policy::ConfigError>(())
//! ```

use crate::columns::{
    category_code, category_of, code, decode_option, encode_option, error, of_code, trigger_code, trigger_of,
};
use crate::{BatchError, Eligibility, EligibilityReason, Job, Processor, RepoId, Repository, RouteDecision, RouteRule};

/// Bit 31 of an answer: the guest refused the call (an unknown handle or an invalid code).
pub const REFUSED: u32 = 1 << 31;

const REASON_SHIFT: u32 = 8;
const ELIGIBLE: u32 = 1 << 12;
const RULE_SHIFT: u32 = 16;
const GITHUB_ACTIONS: u32 = 1 << 20;
/// Bits an eligibility answer may set: bucket, reason, eligible.
const ELIGIBILITY_BITS: u32 = 0x1fff;
/// Bits a route answer may set: the eligibility's, rule, processor.
const ROUTE_BITS: u32 = ELIGIBILITY_BITS | (0xf << RULE_SHIFT) | GITHUB_ACTIONS;

/// One repository (UUID id) and one job (no job type, no PR numbers) as the scalars of the
/// WIT `packed.route` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedQuery {
    /// The UUID's high 64 bits.
    pub hi: u64,
    /// The UUID's low 64 bits.
    pub lo: u64,
    /// Category code: 0 none, 1 … 5 `test` … `enterprise`.
    pub category: u8,
    /// Trigger-source code: 0 none, 1 … 3 `manual`, `scheduled`, `automatic`.
    pub trigger_source: u8,
    /// `time_range_days` as an option code ([`encode_option`]).
    pub time_range_days: u64,
    /// `max_items` as an option code.
    pub max_items: u64,
}

impl PackedQuery {
    /// The packed form of `repository` and `job`; `None` when they do not fit it (a text
    /// id, a job type, PR numbers): those take the typed call.
    #[inline]
    pub fn encode(repository: &Repository, job: &Job) -> Option<PackedQuery> {
        let RepoId::Uuid(id) = repository.id else { return None };
        if job.job_type.is_some() || !job.pr_numbers.is_empty() {
            return None;
        }
        Some(PackedQuery {
            hi: (id >> 64) as u64,
            lo: id as u64,
            category: category_code(repository.category),
            trigger_source: trigger_code(job.trigger_source),
            time_range_days: encode_option(job.time_range_days),
            max_items: encode_option(job.max_items),
        })
    }

    /// The packed form of a repository alone (for `packed.is-eligible`): `(hi, lo,
    /// category)`, or `None` for a text id.
    #[inline]
    pub fn encode_repository(repository: &Repository) -> Option<(u64, u64, u8)> {
        let RepoId::Uuid(id) = repository.id else { return None };
        Some(((id >> 64) as u64, id as u64, category_code(repository.category)))
    }

    /// The repository of `(hi, lo, category)`; `None` for an invalid category code.
    #[inline]
    pub fn decode_repository(hi: u64, lo: u64, category: u8) -> Option<Repository> {
        Some(Repository { id: RepoId::Uuid((u128::from(hi) << 64) | u128::from(lo)), category: category_of(category)? })
    }

    /// The repository and job this encodes; `None` when a code is invalid.
    #[inline]
    pub fn decode(&self) -> Option<(Repository, Job)> {
        let repository = Self::decode_repository(self.hi, self.lo, self.category)?;
        let job = Job {
            job_type: None,
            time_range_days: decode_option(self.time_range_days)?,
            pr_numbers: Vec::new(),
            trigger_source: trigger_of(self.trigger_source)?,
            max_items: decode_option(self.max_items)?,
        };
        Some((repository, job))
    }
}

/// An eligibility as an answer: bits 0–7 bucket, 8–11 reason, 12 eligible.
///
/// `policy_error` is no WIT case: a policy that returns it is answered as the typed call
/// answers it (the guest glue's conversion), reason `not-targeted` here and rule `default`
/// in [`encode_route`], so the two paths agree on every decision.
#[inline]
pub fn encode_eligibility(e: &Eligibility) -> u32 {
    let reason = if e.reason == EligibilityReason::PolicyError { EligibilityReason::NotTargeted } else { e.reason };
    u32::from(e.bucket)
        | (u32::from(code(EligibilityReason::ALL, &reason)) << REASON_SHIFT)
        | if e.eligible { ELIGIBLE } else { 0 }
}

/// A routing decision as an answer: the eligibility's bits, 16–19 rule, 20 processor.
#[inline]
pub fn encode_route(d: &RouteDecision) -> u32 {
    let rule = if d.rule == RouteRule::PolicyError { RouteRule::Default } else { d.rule };
    encode_eligibility(&d.eligibility)
        | (u32::from(code(RouteRule::ALL, &rule)) << RULE_SHIFT)
        | if d.processor == Processor::GithubActions { GITHUB_ACTIONS } else { 0 }
}

fn check(answer: u32, allowed: u32) -> Result<(), BatchError> {
    if answer & REFUSED != 0 {
        return Err(error("answer", format!("{answer:#010x}: the policy refused the call (bit 31)")));
    }
    if answer & !allowed != 0 {
        return Err(error("answer", format!("{answer:#010x}: sets bits outside the layout (allowed {allowed:#010x})")));
    }
    Ok(())
}

fn eligibility_of(answer: u32) -> Result<Eligibility, BatchError> {
    let reason = ((answer >> REASON_SHIFT) & 0xf) as u8;
    let reason = of_code(EligibilityReason::ALL, 1, reason).ok_or_else(|| {
        error("answer", format!("{answer:#010x}: reason code {reason}: allowed an eligibility-reason case, 0 to 9"))
    })?;
    Ok(Eligibility { eligible: answer & ELIGIBLE != 0, reason, bucket: (answer & 0xff) as u8 })
}

/// The eligibility an answer of `packed.is-eligible` encodes, checked.
#[inline]
pub fn decode_eligibility(answer: u32) -> Result<Eligibility, BatchError> {
    check(answer, ELIGIBILITY_BITS)?;
    eligibility_of(answer)
}

/// The routing decision an answer of `packed.route` encodes, checked.
#[inline]
pub fn decode_route(answer: u32) -> Result<RouteDecision, BatchError> {
    check(answer, ROUTE_BITS)?;
    let rule = ((answer >> RULE_SHIFT) & 0xf) as u8;
    let rule = of_code(RouteRule::ALL, 1, rule).ok_or_else(|| {
        error("answer", format!("{answer:#010x}: rule code {rule}: allowed a route-rule case, 0 to 7"))
    })?;
    let processor = if answer & GITHUB_ACTIONS != 0 { Processor::GithubActions } else { Processor::Inngest };
    Ok(RouteDecision { processor, rule, eligibility: eligibility_of(answer)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Category, TriggerSource};
    use proptest::prelude::*;

    fn decision() -> impl Strategy<Value = RouteDecision> {
        (
            prop::sample::select(Processor::ALL),
            prop::sample::select(&RouteRule::ALL[..RouteRule::ALL.len() - 1]),
            any::<bool>(),
            prop::sample::select(&EligibilityReason::ALL[..EligibilityReason::ALL.len() - 1]),
            any::<u8>(),
        )
            .prop_map(|(processor, rule, eligible, reason, bucket)| RouteDecision {
                processor,
                rule,
                eligibility: Eligibility { eligible, reason, bucket },
            })
    }

    proptest! {
        #[test]
        fn every_decision_round_trips(d in decision()) {
            prop_assert_eq!(decode_route(encode_route(&d)), Ok(d));
            prop_assert_eq!(decode_eligibility(encode_eligibility(&d.eligibility)), Ok(d.eligibility));
        }

        #[test]
        fn every_packable_query_round_trips(
            id in any::<u128>(),
            category in prop::option::of(prop::sample::select(Category::ALL)),
            trigger_source in prop::option::of(prop::sample::select(TriggerSource::ALL)),
            time_range_days in prop::option::of(any::<u32>()),
            max_items in prop::option::of(any::<u32>()),
        ) {
            let repo = Repository { id: RepoId::Uuid(id), category };
            let job = Job { trigger_source, time_range_days, max_items, ..Job::default() };
            let q = PackedQuery::encode(&repo, &job);
            prop_assert!(q.is_some());
            prop_assert_eq!(q.and_then(|q| q.decode()), Some((repo, job)));
        }

        /// Every answer decodes to the decision it encodes, or is refused: never a guess.
        #[test]
        fn any_answer_decodes_only_to_its_own_encoding(answer in any::<u32>()) {
            if let Ok(d) = decode_route(answer) {
                prop_assert_eq!(encode_route(&d), answer);
            }
            if let Ok(e) = decode_eligibility(answer) {
                prop_assert_eq!(encode_eligibility(&e), answer);
            }
        }
    }

    #[test]
    fn what_does_not_fit_takes_the_typed_call() {
        let uuid = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", None);
        let text = Repository::parse("acme/widgets", None);
        assert!(PackedQuery::encode(&uuid, &Job::default()).is_some());
        assert!(PackedQuery::encode(&text, &Job::default()).is_none());
        let typed = Job { job_type: Some("sync".into()), ..Job::default() };
        assert!(PackedQuery::encode(&uuid, &typed).is_none());
        let prs = Job { pr_numbers: vec![1], ..Job::default() };
        assert!(PackedQuery::encode(&uuid, &prs).is_none());
    }

    #[test]
    fn refused_and_invalid_answers_are_errors_naming_the_answer() {
        for bad in [REFUSED, 1 << 13, 0xa << REASON_SHIFT, 0xf << RULE_SHIFT, 1 << 25] {
            let e = decode_route(bad).expect_err("an invalid answer");
            assert_eq!(e.field, "answer", "{bad:#x}");
        }
        assert!(decode_eligibility(GITHUB_ACTIONS).is_err(), "route bits in an eligibility answer");
        assert!(VALID.decode().is_some());
        let q = PackedQuery { category: 6, ..VALID };
        assert_eq!(q.decode(), None);
        let q = PackedQuery { trigger_source: 4, ..VALID };
        assert_eq!(q.decode(), None);
        let q = PackedQuery { max_items: 2 << 32, ..VALID };
        assert_eq!(q.decode(), None);
    }

    const VALID: PackedQuery =
        PackedQuery { hi: 1, lo: 2, category: 0, trigger_source: 0, time_range_days: 0, max_items: 0 };
}
