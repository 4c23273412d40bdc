//! Routing (SPEC §2.3).

use crate::{Eligibility, Job, Processor, RouteDecision, RouteRule, TriggerSource};

/// Most items a "small" batch may have.
const SMALL_BATCH: u32 = 50;
/// Most pull requests a "small" PR batch may have.
const SMALL_PR_BATCH: usize = 10;

/// Where `job` runs, given the repository's eligibility; the first matching rule wins.
pub fn route(eligibility: Eligibility, job: &Job) -> RouteDecision {
    let (processor, rule) =
        if !eligibility.eligible { (Processor::Inngest, RouteRule::NotEligible) } else { choose(job) };
    RouteDecision { processor, rule, eligibility }
}

fn choose(job: &Job) -> (Processor, RouteRule) {
    let prs = job.pr_numbers.len();
    match job.time_range_days {
        Some(days) if days <= 1 => return (Processor::Inngest, RouteRule::RecentData),
        _ => {}
    }
    if (1..=SMALL_PR_BATCH).contains(&prs) {
        return (Processor::Inngest, RouteRule::SmallPrBatch);
    }
    if job.trigger_source == Some(TriggerSource::Manual) && job.max_items.is_none_or(|m| m <= SMALL_BATCH) {
        return (Processor::Inngest, RouteRule::ManualSmallBatch);
    }
    if job.time_range_days.is_some_and(|d| d > 1) {
        return (Processor::GithubActions, RouteRule::HistoricalRange);
    }
    if job.max_items.is_some_and(|m| m > SMALL_BATCH) {
        return (Processor::GithubActions, RouteRule::LargeBatch);
    }
    if job.trigger_source == Some(TriggerSource::Scheduled) {
        return (Processor::GithubActions, RouteRule::ScheduledBulk);
    }
    (Processor::Inngest, RouteRule::Default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EligibilityReason;

    const YES: Eligibility = Eligibility { eligible: true, reason: EligibilityReason::InPercentage, bucket: 1 };

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
