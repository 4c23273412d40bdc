//! Routing (SPEC §2.3).

use crate::trace::{eligible_text, opt};
use crate::{Eligibility, Job, Processor, RouteDecision, RouteRule, Section, Tracer, TriggerSource};

/// Most items a "small" batch may have.
const SMALL_BATCH: u32 = 50;
/// Most pull requests a "small" PR batch may have.
const SMALL_PR_BATCH: usize = 10;

/// Where `job` runs, given the repository's eligibility; the first matching rule wins. The
/// one implementation of SPEC §2.3, generic over the tracer: one check per line (the
/// not-eligible line first), in order, up to the first that holds.
pub fn route_with<T: Tracer>(eligibility: Eligibility, job: &Job, t: &mut T) -> RouteDecision {
    let Eligibility { eligible, reason, .. } = eligibility;
    let (processor, rule) = if t.check(
        Section::Routing,
        RouteRule::NotEligible.as_str(),
        "the repository is not eligible",
        || format!("{}, reason {reason}", eligible_text(eligible)),
        !eligible,
    ) {
        (Processor::Inngest, RouteRule::NotEligible)
    } else {
        choose(job, t)
    };
    RouteDecision { processor, rule, eligibility }
}

/// Lines 1 to 7 of SPEC §2.3, for an eligible repository.
fn choose<T: Tracer>(job: &Job, t: &mut T) -> (Processor, RouteRule) {
    use Processor::{GithubActions, Inngest};
    use RouteRule as R;
    const S: Section = Section::Routing;
    let prs = job.pr_numbers.len();
    let days = || format!("time_range_days = {}", opt(job.time_range_days));
    if t.check(
        S,
        R::RecentData.as_str(),
        "time_range_days present and ≤ 1",
        days,
        matches!(job.time_range_days, Some(d) if d <= 1),
    ) {
        return (Inngest, R::RecentData);
    }
    if t.check(
        S,
        R::SmallPrBatch.as_str(),
        "pr_numbers has 1..=10 entries",
        || format!("pr_numbers has {prs} entries"),
        (1..=SMALL_PR_BATCH).contains(&prs),
    ) {
        return (Inngest, R::SmallPrBatch);
    }
    if t.check(
        S,
        R::ManualSmallBatch.as_str(),
        "trigger_source manual and (max_items absent or ≤ 50)",
        || format!("trigger_source = {}, max_items = {}", opt(job.trigger_source), opt(job.max_items)),
        job.trigger_source == Some(TriggerSource::Manual) && job.max_items.is_none_or(|m| m <= SMALL_BATCH),
    ) {
        return (Inngest, R::ManualSmallBatch);
    }
    if t.check(
        S,
        R::HistoricalRange.as_str(),
        "time_range_days present and > 1",
        days,
        job.time_range_days.is_some_and(|d| d > 1),
    ) {
        return (GithubActions, R::HistoricalRange);
    }
    if t.check(
        S,
        R::LargeBatch.as_str(),
        "max_items present and > 50",
        || format!("max_items = {}", opt(job.max_items)),
        job.max_items.is_some_and(|m| m > SMALL_BATCH),
    ) {
        return (GithubActions, R::LargeBatch);
    }
    if t.check(
        S,
        R::ScheduledBulk.as_str(),
        "trigger_source scheduled",
        || format!("trigger_source = {}", opt(job.trigger_source)),
        job.trigger_source == Some(TriggerSource::Scheduled),
    ) {
        return (GithubActions, R::ScheduledBulk);
    }
    t.check(S, R::Default.as_str(), "otherwise (no other line held)", String::new, true);
    (Inngest, R::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EligibilityReason;

    const YES: Eligibility = Eligibility { eligible: true, reason: EligibilityReason::InPercentage, bucket: 1 };

    fn route(eligibility: Eligibility, job: &Job) -> RouteDecision {
        route_with(eligibility, job, &mut crate::NoTrace)
    }

    fn rule(job: Job) -> (Processor, RouteRule) {
        let d = route(YES, &job);
        (d.processor, d.rule)
    }

    #[test]
    fn zero_is_a_value_and_empty_prs_are_absent() {
        let j = Job { time_range_days: Some(0), ..Job::default() };
        assert_eq!(rule(j), (Processor::Inngest, RouteRule::RecentData));
        let j = Job { max_items: Some(0), trigger_source: Some(TriggerSource::Manual), ..Job::default() };
        assert_eq!(rule(j), (Processor::Inngest, RouteRule::ManualSmallBatch));
        let j = Job { pr_numbers: vec![], trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
        assert_eq!(rule(j), (Processor::GithubActions, RouteRule::ScheduledBulk));
    }

    #[test]
    fn order_of_rules() {
        let j = Job { time_range_days: Some(30), pr_numbers: vec![1; 10], ..Job::default() };
        assert_eq!(rule(j), (Processor::Inngest, RouteRule::SmallPrBatch));
        let j = Job { time_range_days: Some(30), pr_numbers: vec![1; 11], ..Job::default() };
        assert_eq!(rule(j), (Processor::GithubActions, RouteRule::HistoricalRange));
        let j = Job { trigger_source: Some(TriggerSource::Manual), max_items: Some(51), ..Job::default() };
        assert_eq!(rule(j), (Processor::GithubActions, RouteRule::LargeBatch));
        assert_eq!(rule(Job::default()), (Processor::Inngest, RouteRule::Default));
    }

    #[test]
    fn not_eligible_goes_to_inngest() {
        let no = Eligibility { eligible: false, ..YES };
        let d = route(no, &Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() });
        assert_eq!((d.processor, d.rule), (Processor::Inngest, RouteRule::NotEligible));
    }
}
