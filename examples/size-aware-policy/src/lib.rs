//! An example rollout policy: **size-aware routing**.
//!
//! The reference policy (SPEC §2.3) keeps a job on Inngest when it covers at most one day
//! of data (`recent_data`) or a handful of pull requests (`small_pr_batch`), even when a
//! scheduler started it. For large and enterprise repositories such a scheduled job is still
//! bulk work, so this policy sends it to GitHub Actions with rule `scheduled_bulk`.
//!
//! Everything else is the reference policy, reused as a library: eligibility, bucketing,
//! categorisation and health are unchanged, so the policy meets the safety contract of a
//! hot swap (eligibility never changes, only routing does). The one difference is in
//! [`route`]; `component.rs` is the wit-bindgen glue that exports the `rollout:policy`
//! world (with `explain`), compiled only for wasm (`make examples`).
//!
//! The rule is written once, generic over a [`Tracer`] ([`route_with`]), like the reference
//! rules it builds on: [`route`] decides, [`route_traced`] explains the same decision — the
//! reference's chain of checks, then this policy's own check, which decides when it holds.
//!
//! ```
//! use rollout_policy::{Category, Config, Evaluator, Job, Processor, Repository, RouteRule, Strategy, TriggerSource};
//!
//! let config = Config { rollout_percentage: 100, is_active: true, rollout_strategy: Strategy::Percentage, ..Config::default() };
//! let evaluator = Evaluator::new(config)?;
//! let large = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", Some(Category::Large));
//! let nightly = Job { time_range_days: Some(1), trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
//! // The reference keeps one day of data on Inngest …
//! assert_eq!(evaluator.route(&large, &nightly).rule, RouteRule::RecentData);
//! // … this policy sends a large repository's scheduled job to GitHub Actions.
//! let d = size_aware_policy::route(&evaluator, &large, &nightly);
//! assert_eq!((d.processor, d.rule), (Processor::GithubActions, RouteRule::ScheduledBulk));
//! // … and its explanation says which check decided.
//! let mut trace = rollout_policy::Trace::new();
//! assert_eq!(size_aware_policy::route_traced(&evaluator, &large, &nightly, &mut trace), d);
//! let decided = trace.decided(rollout_policy::Section::Routing).map(|c| c.condition.as_str());
//! assert_eq!(decided, Some(size_aware_policy::OVERRIDE));
//! # Ok::<(), rollout_policy::ConfigError>(())
//! ```
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use rollout_policy::{
    Category, Evaluator, Job, NoTrace, Processor, Repository, RouteDecision, RouteRule, Section, Trace, Tracer,
    TriggerSource,
};

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code, reason = "wit-bindgen's generated export glue")]
mod component;

/// Name reported by this policy's `info()`.
pub const POLICY_NAME: &str = "size-aware-example";
/// Version reported by this policy's `info()`.
pub const POLICY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether `category` is one this policy treats as big: `large` or `enterprise`.
pub fn is_big(category: Option<Category>) -> bool {
    matches!(category, Some(Category::Large | Category::Enterprise))
}

/// The condition of this policy's own routing check, as its explanation shows it.
pub const OVERRIDE: &str = "size-aware: a scheduled job of an eligible large or enterprise repository \
                            the reference keeps on inngest goes to github_actions";

/// Where `job` for `repository` runs: the reference decision, except that a scheduled job
/// of an eligible large or enterprise repository that the reference keeps on Inngest
/// (`recent_data`, `small_pr_batch`) goes to GitHub Actions with rule `scheduled_bulk`.
///
/// Eligibility is the reference's, untouched; the override only ever applies to eligible
/// repositories.
#[inline]
pub fn route(evaluator: &Evaluator, repository: &Repository, job: &Job) -> RouteDecision {
    route_with(evaluator, repository, job, &mut NoTrace)
}

/// [`route`], recording its checks in `trace`: the reference's chain (eligibility, then
/// routing), then this policy's own check (rule `scheduled_bulk`, condition [`OVERRIDE`]),
/// which decides when it holds and shows that it was considered when it does not.
pub fn route_traced(evaluator: &Evaluator, repository: &Repository, job: &Job, trace: &mut Trace) -> RouteDecision {
    route_with(evaluator, repository, job, trace)
}

/// The one implementation of this policy's routing, generic over the tracer: [`route`]
/// and [`route_traced`] both run it.
pub fn route_with<T: Tracer>(evaluator: &Evaluator, repository: &Repository, job: &Job, t: &mut T) -> RouteDecision {
    let reference = evaluator.route_with(repository, job, t);
    let scheduled = job.trigger_source == Some(TriggerSource::Scheduled);
    let applies = reference.eligibility.eligible
        && scheduled
        && is_big(repository.category)
        && reference.processor == Processor::Inngest;
    let values = || {
        let category = repository.category.map_or("absent", Category::as_str);
        let trigger = job.trigger_source.map_or("absent", TriggerSource::as_str);
        let eligible = if reference.eligibility.eligible { "eligible" } else { "not eligible" };
        format!(
            "category {category}, trigger_source {trigger}, {eligible}; the reference chose {} by rule {}",
            reference.processor, reference.rule
        )
    };
    if t.check(Section::Routing, RouteRule::ScheduledBulk.as_str(), OVERRIDE, values, applies) {
        return RouteDecision { processor: Processor::GithubActions, rule: RouteRule::ScheduledBulk, ..reference };
    }
    reference
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_policy::{Config, Strategy};

    const ID: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

    fn evaluator(pct: u8) -> Evaluator {
        let config = Config {
            rollout_percentage: pct,
            is_active: true,
            rollout_strategy: Strategy::Percentage,
            ..Config::default()
        };
        match Evaluator::new(config) {
            Ok(e) => e,
            Err(e) => panic!("config refused: {e}"),
        }
    }

    fn jobs() -> Vec<Job> {
        let mut out = Vec::new();
        for trigger in
            [None, Some(TriggerSource::Manual), Some(TriggerSource::Scheduled), Some(TriggerSource::Automatic)]
        {
            for days in [None, Some(0), Some(1), Some(2), Some(30)] {
                for prs in [0usize, 1, 10, 11] {
                    for items in [None, Some(0), Some(50), Some(51)] {
                        out.push(Job {
                            trigger_source: trigger,
                            time_range_days: days,
                            pr_numbers: (1..=prs as u64).collect(),
                            max_items: items,
                            job_type: None,
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn differs_from_the_reference_exactly_where_intended() {
        let mut changed = 0;
        for pct in [0u8, 100] {
            let ev = evaluator(pct);
            for category in [
                None,
                Some(Category::Test),
                Some(Category::Small),
                Some(Category::Medium),
                Some(Category::Large),
                Some(Category::Enterprise),
            ] {
                let repo = Repository::parse(ID, category);
                for job in jobs() {
                    let (reference, ours) = (ev.route(&repo, &job), route(&ev, &repo, &job));
                    assert_eq!(reference.eligibility, ours.eligibility, "eligibility never changes");
                    let intended = pct == 100
                        && is_big(category)
                        && job.trigger_source == Some(TriggerSource::Scheduled)
                        && matches!(reference.rule, RouteRule::RecentData | RouteRule::SmallPrBatch);
                    if intended {
                        changed += 1;
                        assert_eq!((ours.processor, ours.rule), (Processor::GithubActions, RouteRule::ScheduledBulk));
                    } else {
                        assert_eq!(reference, ours, "{category:?} {job:?}");
                    }
                }
            }
        }
        assert!(changed > 0);
    }

    fn routing(trace: &Trace) -> Vec<(&str, &str, bool)> {
        trace.section(Section::Routing).map(|c| (c.rule.as_str(), c.condition.as_str(), c.held)).collect()
    }

    #[test]
    fn explains_the_override_after_the_reference_chain() {
        let ev = evaluator(100);
        let large = Repository::parse(ID, Some(Category::Large));
        let nightly =
            Job { time_range_days: Some(1), trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
        let mut trace = Trace::new();
        let d = route_traced(&ev, &large, &nightly, &mut trace);
        assert_eq!(d, route(&ev, &large, &nightly));
        assert_eq!((d.processor, d.rule), (Processor::GithubActions, RouteRule::ScheduledBulk));
        // The reference's chain: not eligible? no; recent data? yes (it stops there); then ours.
        let checks = routing(&trace);
        assert_eq!(
            checks,
            [
                ("not_eligible", "the repository is not eligible", false),
                ("recent_data", "time_range_days present and ≤ 1", true),
                ("scheduled_bulk", OVERRIDE, true),
            ]
        );
        let decided = trace.decided(Section::Routing);
        assert_eq!(decided.map(|c| c.condition.as_str()), Some(OVERRIDE), "our check is the last that held");
        let values = decided.map(|c| c.values.as_str()).unwrap_or_default();
        assert_eq!(
            values,
            "category large, trigger_source scheduled, eligible; the reference chose inngest by rule recent_data"
        );
        // Eligibility is the reference's own chain, untouched.
        assert_eq!(trace.decided(Section::Eligibility).map(|c| c.rule.as_str()), Some("in_percentage"));
    }

    #[test]
    fn explains_that_the_override_was_considered_when_it_does_not_apply() {
        let ev = evaluator(100);
        let small = Repository::parse(ID, Some(Category::Small));
        let nightly =
            Job { time_range_days: Some(1), trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
        let mut trace = Trace::new();
        let d = route_traced(&ev, &small, &nightly, &mut trace);
        assert_eq!((d.processor, d.rule), (Processor::Inngest, RouteRule::RecentData));
        let checks = routing(&trace);
        assert_eq!(checks.last(), Some(&("scheduled_bulk", OVERRIDE, false)));
        assert_eq!(trace.decided(Section::Routing).map(|c| c.rule.as_str()), Some("recent_data"));
    }

    #[test]
    fn traced_and_untraced_decide_alike_and_the_last_held_check_names_the_rule() {
        for pct in [0u8, 100] {
            let ev = evaluator(pct);
            for category in std::iter::once(None).chain(Category::ALL.iter().copied().map(Some)) {
                let repo = Repository::parse(ID, category);
                for job in jobs() {
                    let mut trace = Trace::new();
                    let traced = route_traced(&ev, &repo, &job, &mut trace);
                    assert_eq!(traced, route(&ev, &repo, &job), "{category:?} {job:?}");
                    let rule = trace.decided(Section::Routing).map(|c| c.rule.as_str());
                    assert_eq!(rule, Some(traced.rule.as_str()), "{category:?} {job:?}");
                    let reason = trace.decided(Section::Eligibility).map(|c| c.rule.as_str());
                    assert_eq!(reason, Some(traced.eligibility.reason.as_str()));
                    // Our check comes last, whether it held or not.
                    let last = trace.checks.last().map(|c| c.condition.as_str());
                    assert_eq!(last, Some(OVERRIDE));
                }
            }
        }
    }
}
