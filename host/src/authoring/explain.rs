//! `rollout explain`: the chain of checks of SPEC §2 in words, with the values compared and
//! the line that decided, next to the policy's actual decision.
//!
//! The chain is the reference rules written out line by line ([`eligibility_chain`],
//! [`routing_chain`], [`categorize_chain`], [`health_chain`]); its conclusion is tested to
//! equal the reference rules on the shared vectors. A policy with other rules (an example,
//! a new version) may decide differently: [`Explanation::agrees`] says so, and the text
//! names both decisions.

use super::diff;
use crate::cases::{self, Backend, Inputs, Op, Outcome};
use rollout_policy as p;
use serde_json::{Map, Value};

/// One line of a chain of checks.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Line {
    /// `eligibility`, `routing`, `categorize`, `health level` or `health action`.
    pub section: &'static str,
    /// The line's number in SPEC §2 (`-` for the not-eligible line of routing).
    pub number: String,
    /// The condition, in words.
    pub condition: String,
    /// The values compared.
    pub values: String,
    /// Whether the condition held (the line decided).
    pub decided: bool,
    /// What the line decides when it holds.
    pub outcome: String,
}

struct Chain {
    section: &'static str,
    lines: Vec<Line>,
    done: bool,
}

impl Chain {
    fn new(section: &'static str) -> Chain {
        Chain { section, lines: Vec::new(), done: false }
    }

    /// Consider a line unless an earlier one decided; returns whether this one decided.
    fn line(&mut self, number: &str, condition: &str, values: String, holds: bool, outcome: String) -> bool {
        if self.done {
            return false;
        }
        self.lines.push(Line {
            section: self.section,
            number: number.to_owned(),
            condition: condition.to_owned(),
            values,
            decided: holds,
            outcome,
        });
        self.done = holds;
        holds
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "absent".to_owned(), |v| v.to_string())
}

fn elig(eligible: bool, reason: p::EligibilityReason) -> String {
    format!("{}, reason {reason}", if eligible { "eligible" } else { "not eligible" })
}

/// SPEC §2.2 line by line for `repository` under `config`.
pub fn eligibility_chain(config: &p::Config, repository: &p::Repository) -> (Vec<Line>, p::Eligibility) {
    use p::EligibilityReason as R;
    let c = config;
    let bucket = p::bucket(&c.feature_name, &repository.id);
    let excluded = p::IdSet::from_strings(&c.excluded_repositories).contains(&repository.id);
    let targeted = p::IdSet::from_strings(&c.target_repositories).contains(&repository.id);
    let strategy = c.rollout_strategy;
    let pct = c.rollout_percentage;
    let mut ch = Chain::new("eligibility");
    let mut decision = (false, R::NotTargeted);
    let mut decide = |d: (bool, R)| decision = d;
    if ch.line(
        "1",
        "the emergency stop is on",
        format!("emergency_stop = {}", c.emergency_stop),
        c.emergency_stop,
        elig(false, R::EmergencyStop),
    ) {
        decide((false, R::EmergencyStop));
    } else if ch.line(
        "2",
        "the rollout is not active",
        format!("is_active = {}", c.is_active),
        !c.is_active,
        elig(false, R::Inactive),
    ) {
        decide((false, R::Inactive));
    } else if ch.line(
        "3",
        "the id is in excluded_repositories",
        format!(
            "`{}` {} among {} excluded ids",
            repository.id,
            if excluded { "is" } else { "is not" },
            c.excluded_repositories.len()
        ),
        excluded,
        elig(false, R::Excluded),
    ) {
        decide((false, R::Excluded));
    } else if ch.line(
        "4",
        "the id is in target_repositories",
        format!(
            "`{}` {} among {} target ids",
            repository.id,
            if targeted { "is" } else { "is not" },
            c.target_repositories.len()
        ),
        targeted,
        elig(true, R::Targeted),
    ) {
        decide((true, R::Targeted));
    } else if ch.line(
        "5",
        "the strategy is whitelist",
        format!("rollout_strategy = {strategy}"),
        strategy == p::Strategy::Whitelist,
        elig(false, R::NotTargeted),
    ) {
        decide((false, R::NotTargeted));
    } else {
        let inside = bucket < pct;
        let (values, outcome) = if strategy == p::Strategy::Percentage {
            (
                format!("bucket {bucket} < rollout_percentage {pct}: {}", yes(inside)),
                if inside { elig(true, R::InPercentage) } else { elig(false, R::OutsidePercentage) },
            )
        } else {
            (format!("rollout_strategy = {strategy}"), "in_percentage / outside_percentage".to_owned())
        };
        if ch.line(
            "6",
            "the strategy is percentage: in iff bucket < rollout_percentage",
            values,
            strategy == p::Strategy::Percentage,
            outcome,
        ) {
            decide(if inside { (true, R::InPercentage) } else { (false, R::OutsidePercentage) });
        } else if ch.line(
            "7",
            "the strategy is repository_size and the category is unknown",
            format!("category = {}", opt(repository.category)),
            repository.category.is_none(),
            elig(false, R::Uncategorized),
        ) {
            decide((false, R::Uncategorized));
        } else if let Some(cat) = repository.category {
            let t = cat.threshold();
            let reached = pct >= t;
            ch.line(
                "8",
                "the strategy is repository_size: in iff rollout_percentage ≥ threshold(category)",
                format!("rollout_percentage {pct} ≥ threshold({cat}) {t}: {}", yes(reached)),
                true,
                if reached { elig(true, R::CategoryIncluded) } else { elig(false, R::CategoryExcluded) },
            );
            decide(if reached { (true, R::CategoryIncluded) } else { (false, R::CategoryExcluded) });
        }
    }
    let (eligible, reason) = decision;
    (ch.lines, p::Eligibility { eligible, reason, bucket })
}

fn to(processor: p::Processor, rule: p::RouteRule) -> String {
    format!("{processor}, rule {rule}")
}

/// SPEC §2.3 line by line for `job`, given the repository's eligibility.
pub fn routing_chain(eligibility: p::Eligibility, job: &p::Job) -> (Vec<Line>, p::RouteDecision) {
    use p::Processor::{GithubActions as GA, Inngest as IN};
    use p::RouteRule as R;
    let mut ch = Chain::new("routing");
    let days = job.time_range_days;
    let prs = job.pr_numbers.len();
    let trigger = job.trigger_source;
    let items = job.max_items;
    let manual = trigger == Some(p::TriggerSource::Manual);
    let scheduled = trigger == Some(p::TriggerSource::Scheduled);
    let candidates: [(&str, &str, String, bool, p::Processor, R); 8] = [
        (
            "-",
            "the repository is not eligible",
            format!("eligible = {}", eligibility.eligible),
            !eligibility.eligible,
            IN,
            R::NotEligible,
        ),
        (
            "1",
            "time_range_days present and ≤ 1",
            format!("time_range_days = {}", opt(days)),
            days.is_some_and(|d| d <= 1),
            IN,
            R::RecentData,
        ),
        (
            "2",
            "pr_numbers has 1..=10 entries",
            format!("pr_numbers has {prs} entries"),
            (1..=10).contains(&prs),
            IN,
            R::SmallPrBatch,
        ),
        (
            "3",
            "trigger manual and (max_items absent or ≤ 50)",
            format!("trigger_source = {}, max_items = {}", opt(trigger), opt(items)),
            manual && items.is_none_or(|m| m <= 50),
            IN,
            R::ManualSmallBatch,
        ),
        (
            "4",
            "time_range_days present and > 1",
            format!("time_range_days = {}", opt(days)),
            days.is_some_and(|d| d > 1),
            GA,
            R::HistoricalRange,
        ),
        (
            "5",
            "max_items present and > 50",
            format!("max_items = {}", opt(items)),
            items.is_some_and(|m| m > 50),
            GA,
            R::LargeBatch,
        ),
        ("6", "trigger scheduled", format!("trigger_source = {}", opt(trigger)), scheduled, GA, R::ScheduledBulk),
        ("7", "otherwise", String::new(), true, IN, R::Default),
    ];
    let mut decision = (IN, R::Default);
    for (number, condition, values, holds, processor, rule) in candidates {
        if ch.line(number, condition, values, holds, to(processor, rule)) {
            decision = (processor, rule);
            break;
        }
    }
    (ch.lines, p::RouteDecision { processor: decision.0, rule: decision.1, eligibility })
}

/// SPEC §2.4 line by line.
pub fn categorize_chain(stats: &p::RepositoryStats) -> (Vec<Line>, p::Category) {
    let (s, c, pr) = (stats.star_count, stats.contributor_count, stats.pr_count);
    let values = format!("stars {s}, contributors {c}, PRs {pr}");
    let rows: [(p::Category, &str, bool); 5] = [
        (p::Category::Test, "stars = 0, contributors ≤ 2, PRs ≤ 10", s == 0 && c <= 2 && pr <= 10),
        (p::Category::Small, "stars ≤ 50, contributors ≤ 10, PRs ≤ 100", s <= 50 && c <= 10 && pr <= 100),
        (p::Category::Medium, "stars ≤ 500, contributors ≤ 50, PRs ≤ 1000", s <= 500 && c <= 50 && pr <= 1000),
        (p::Category::Large, "stars ≤ 5000, contributors ≤ 200, PRs ≤ 10000", s <= 5000 && c <= 200 && pr <= 10000),
        (p::Category::Enterprise, "otherwise", true),
    ];
    let mut ch = Chain::new("categorize");
    let mut category = p::Category::Enterprise;
    for (i, (cat, condition, holds)) in rows.into_iter().enumerate() {
        if ch.line(
            &(i + 1).to_string(),
            condition,
            values.clone(),
            holds,
            format!("{cat} (priority {})", cat.priority_level()),
        ) {
            category = cat;
            break;
        }
    }
    (ch.lines, category)
}

/// SPEC §2.5 line by line: the level, then the action.
pub fn health_chain(
    config: &p::Config,
    windows: &[p::ProcessorWindow],
) -> (Vec<Line>, p::HealthLevel, p::HealthAction) {
    let errors = windows.iter().fold(0u64, |a, w| a.saturating_add(w.error_count));
    let total = windows.iter().fold(0u64, |a, w| a.saturating_add(w.total_jobs));
    let rate = if total == 0 { 0.0 } else { 100.0 * errors as f64 / total as f64 };
    let rate_text = format!("error_rate = 100 × {errors} / {total} = {rate:.4}");
    let mut level_ch = Chain::new("health level");
    let level = if level_ch.line("1", "error_rate > 10", rate_text.clone(), rate > 10.0, "critical".into()) {
        p::HealthLevel::Critical
    } else if level_ch.line("2", "error_rate > 2.5", rate_text.clone(), rate > 2.5, "warning".into()) {
        p::HealthLevel::Warning
    } else {
        level_ch.line("3", "otherwise", String::new(), true, "ok".into());
        p::HealthLevel::Ok
    };
    let c = config;
    let mut act = Chain::new("health action");
    let none = || "none".to_owned();
    let action = if act.line(
        "1",
        "auto-rollback is disabled",
        format!("auto_rollback_enabled = {}", c.auto_rollback_enabled),
        !c.auto_rollback_enabled,
        none(),
    ) || act.line(
        "2",
        "the emergency stop is on",
        format!("emergency_stop = {}", c.emergency_stop),
        c.emergency_stop,
        none(),
    ) || act.line(
        "3",
        "the rollout is at 0 %",
        format!("rollout_percentage = {}", c.rollout_percentage),
        c.rollout_percentage == 0,
        none(),
    ) || act.line(
        "4",
        "fewer jobs than min_jobs_for_rollback",
        format!("{total} jobs < {}: {}", c.min_jobs_for_rollback, yes(total < u64::from(c.min_jobs_for_rollback))),
        total < u64::from(c.min_jobs_for_rollback),
        none(),
    ) {
        p::HealthAction::None
    } else if act.line(
        "5",
        "error_rate > max_error_rate",
        format!("{rate:.4} > {}: {}", c.max_error_rate, yes(rate > c.max_error_rate)),
        rate > c.max_error_rate,
        "rollback".into(),
    ) {
        p::HealthAction::Rollback
    } else {
        act.line("6", "otherwise", String::new(), true, none());
        p::HealthAction::None
    };
    let mut lines = level_ch.lines;
    lines.extend(act.lines);
    (lines, level, action)
}

/// An explanation: the chain, what it concludes, and what the policy decided.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    /// The op explained.
    pub op: &'static str,
    /// Every line considered, in order, up to the deciding one of each chain.
    pub lines: Vec<Line>,
    /// The reference chain's decision (the fields of the op's output).
    pub reference: Map<String, Value>,
    /// The policy's actual decision, or its error.
    pub policy: Value,
    /// Whether the policy's decision equals the reference chain's.
    pub agrees: bool,
}

/// Explain `inputs`: the reference chain, and the decision of `policy`.
pub fn explain(inputs: &Inputs, policy: &mut dyn Backend) -> Explanation {
    let (op, lines, reference) = match inputs {
        Inputs::IsEligible(c, r) => {
            let (lines, e) = eligibility_chain(c, r);
            (Op::IsEligible, lines, cases::eligibility_to_json(&e))
        }
        Inputs::Route(c, r, j) => {
            let (mut lines, e) = eligibility_chain(c, r);
            let (more, d) = routing_chain(e, j);
            lines.extend(more);
            (Op::Route, lines, cases::route_json(&d))
        }
        Inputs::Categorize(s) => {
            let (lines, _) = categorize_chain(s);
            (Op::Categorize, lines, cases::categorization_json(&p::categorize(s)))
        }
        Inputs::EvaluateHealth(c, w) => {
            let (lines, _, _) = health_chain(c, w);
            (Op::EvaluateHealth, lines, cases::health_json(&p::evaluate_health(c, w)))
        }
    };
    let actual: Outcome = policy.evaluate(inputs);
    let agrees = diff::same(&Ok(reference.clone()), &actual);
    let policy = match actual {
        Ok(d) => Value::Object(d),
        Err(e) => serde_json::json!({"error": e.message}),
    };
    Explanation { op: diff::op_name(op), lines, reference, policy, agrees }
}

/// A decision in words.
pub fn summary(op: &str, d: &Value) -> String {
    let f = |k: &str| match d.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".into(),
    };
    if d.get("error").is_some() {
        return format!("error: {}", f("error"));
    }
    let eligible = if d.get("eligible") == Some(&Value::Bool(true)) { "eligible" } else { "not eligible" };
    match op {
        "route" => format!(
            "{}, rule {} ({eligible}, reason {}, bucket {})",
            f("processor"),
            f("rule"),
            f("reason"),
            f("bucket")
        ),
        "is_eligible" => format!("{eligible}, reason {} (bucket {})", f("reason"), f("bucket")),
        "categorize" => format!(
            "{} (priority {}, activity score {})",
            f("category"),
            f("priority_level"),
            f("monthly_activity_score")
        ),
        _ => format!("{}, action {} (error rate {}, {})", f("level"), f("action"), f("error_rate"), f("reason")),
    }
}

/// The explanation for people: each section's lines, the deciding one marked `▶`.
pub fn render_text(e: &Explanation, policy: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut section = "";
    for l in &e.lines {
        if l.section != section {
            section = l.section;
            let spec = match section {
                "eligibility" => "SPEC §2.2",
                "routing" => "SPEC §2.3",
                "categorize" => "SPEC §2.4",
                _ => "SPEC §2.5",
            };
            let _ = writeln!(out, "{section} ({spec}; the first line that holds decides)");
        }
        let mark = if l.decided { "▶" } else { " " };
        let verdict = if l.decided { format!("holds → {}", l.outcome) } else { "does not hold".to_owned() };
        let values = if l.values.is_empty() { String::new() } else { format!(" [{}]", l.values) };
        let _ = writeln!(out, "  {mark} {:>2}  {}{values}: {verdict}", l.number, l.condition);
    }
    let reference = Value::Object(e.reference.clone());
    let _ = writeln!(out, "\nreference chain: {}", summary(e.op, &reference));
    let _ = writeln!(out, "policy decided:  {} ({policy})", summary(e.op, &e.policy));
    if e.agrees {
        let _ = writeln!(out, "the policy agrees with the reference chain");
    } else {
        let _ = writeln!(
            out,
            "NOTE: the policy's decision differs from the reference chain of SPEC §2: its own rules decided"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(lines: &[Line]) -> Vec<(&'static str, String)> {
        lines.iter().filter(|l| l.decided).map(|l| (l.section, l.number.clone())).collect()
    }

    #[test]
    fn eligibility_stops_at_the_first_line_that_holds() {
        let c = p::Config { is_active: false, rollout_percentage: 100, ..p::Config::default() };
        let (lines, e) = eligibility_chain(&c, &p::Repository::parse("x", None));
        assert_eq!(lines.len(), 2);
        assert_eq!(decided(&lines), vec![("eligibility", "2".to_owned())]);
        assert_eq!(e.reason, p::EligibilityReason::Inactive);
    }

    #[test]
    fn routing_names_the_values_compared() {
        let yes = p::Eligibility { eligible: true, reason: p::EligibilityReason::Targeted, bucket: 3 };
        let job = p::Job { time_range_days: Some(30), max_items: Some(51), ..p::Job::default() };
        let (lines, d) = routing_chain(yes, &job);
        assert_eq!(d.rule, p::RouteRule::HistoricalRange);
        let last = lines.last().map(|l| (l.number.as_str(), l.values.as_str()));
        assert_eq!(last, Some(("4", "time_range_days = 30")));
        assert_eq!(decided(&lines).len(), 1);
    }

    #[test]
    fn health_has_a_level_and_an_action_line() {
        let c = p::Config { rollout_percentage: 10, is_active: true, ..p::Config::default() };
        let w = [p::ProcessorWindow {
            processor: p::Processor::Inngest,
            success_count: 80,
            error_count: 20,
            total_jobs: 100,
            average_processing_time: None,
        }];
        let (lines, level, action) = health_chain(&c, &w);
        assert_eq!((level, action), (p::HealthLevel::Critical, p::HealthAction::Rollback));
        assert_eq!(decided(&lines), vec![("health level", "1".to_owned()), ("health action", "5".to_owned())]);
    }
}
