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
//! world, compiled only for wasm (`make examples`).
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
//! # Ok::<(), rollout_policy::ConfigError>(())
//! ```
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use rollout_policy::{Category, Evaluator, Job, Processor, Repository, RouteDecision, RouteRule, TriggerSource};

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

/// Where `job` for `repository` runs: the reference decision, except that a scheduled job
/// of an eligible large or enterprise repository that the reference keeps on Inngest
/// (`recent_data`, `small_pr_batch`) goes to GitHub Actions with rule `scheduled_bulk`.
///
/// Eligibility is the reference's, untouched; the override only ever applies to eligible
/// repositories.
pub fn route(evaluator: &Evaluator, repository: &Repository, job: &Job) -> RouteDecision {
    let reference = evaluator.route(repository, job);
    let scheduled = job.trigger_source == Some(TriggerSource::Scheduled);
    if reference.eligibility.eligible
        && scheduled
        && is_big(repository.category)
        && reference.processor == Processor::Inngest
    {
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
}
