//! `rollout explain`: the checks a policy made on the way to a decision, in words, with the
//! one that decided.
//!
//! The checks come from the policy itself ([`Policy::explain`]: the component's
//! `rollout:policy/explain` interface, whose reference implementation runs the very code
//! that decides, generic over a tracer), so an explanation is right for any policy — the
//! reference, an example with rules of its own, a new version under review. This module
//! only presents them: grouped by section, the deciding check (within a section, the last
//! one that held) marked.

use crate::cases;
use crate::engine::{CallError, Decision, Policy, Query};
use rollout_policy::Check;
use serde::Serialize;
use serde_json::{Map, Value};

/// One check as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// `eligibility`, `routing`, `categorization`, `health_level` or `health_action`.
    pub section: &'static str,
    /// What the check decides when it holds (a reason, a rule, a category, a level, an
    /// action, or a name of the policy's own).
    pub rule: String,
    /// The condition, in words.
    pub condition: String,
    /// The values compared.
    pub values: String,
    /// Whether the condition held.
    pub held: bool,
    /// Whether this check decided its section (the last one that held).
    pub decided: bool,
}

/// An explanation: the query's op, the checks, and the decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// `is_eligible`, `route`, `categorize` or `evaluate_health`.
    pub op: &'static str,
    /// The checks, in evaluation order.
    pub lines: Vec<Line>,
    /// The decision, as the output fields of a case file.
    pub decision: Map<String, Value>,
}

/// The checks of `checks` with the deciding one of each section marked.
pub fn lines(checks: &[Check]) -> Vec<Line> {
    checks
        .iter()
        .enumerate()
        .map(|(i, c)| Line {
            section: c.section.as_str(),
            rule: c.rule.clone(),
            condition: c.condition.clone(),
            values: c.values.clone(),
            held: c.held,
            decided: c.held && !checks.iter().skip(i + 1).any(|later| later.section == c.section && later.held),
        })
        .collect()
}

fn op_of(query: &Query) -> &'static str {
    match query {
        Query::IsEligible(..) => "is_eligible",
        Query::Route(..) => "route",
        Query::Categorize(..) => "categorize",
        Query::EvaluateHealth(..) => "evaluate_health",
    }
}

/// The decision as the output fields of a case file.
pub fn decision_json(d: &Decision) -> Map<String, Value> {
    match d {
        Decision::Eligibility(e) => cases::eligibility_to_json(e),
        Decision::Route(r) => cases::route_json(r),
        Decision::Categorization(c) => cases::categorization_json(c),
        Decision::Health(h) => cases::health_json(h),
    }
}

/// Ask `policy` to explain its decision for `query`.
pub fn explain(query: &Query, policy: &dyn Policy) -> Result<Explanation, CallError> {
    let e = policy.explain(query)?;
    Ok(Explanation { op: op_of(query), lines: lines(&e.checks), decision: decision_json(&e.decision) })
}

/// A decision in words.
pub fn summary(op: &str, d: &Map<String, Value>) -> String {
    let f = |k: &str| match d.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".into(),
    };
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

/// The explanation for people: each section's checks, the deciding one marked `▶`.
pub fn render_text(e: &Explanation, policy: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut section = "";
    for l in &e.lines {
        if l.section != section {
            section = l.section;
            let _ = writeln!(out, "{section} (in order; the last check that holds decides)");
        }
        let mark = if l.decided { "▶" } else { " " };
        let verdict = match (l.held, l.decided) {
            (true, true) => format!("holds → {}", l.rule),
            (true, false) => format!("holds ({}), overridden by a later check", l.rule),
            (false, _) => "does not hold".to_owned(),
        };
        let values = if l.values.is_empty() { String::new() } else { format!(" [{}]", l.values) };
        let _ = writeln!(out, "  {mark} {}{values}: {verdict}", l.condition);
    }
    let _ = writeln!(out, "\ndecision: {} ({policy})", summary(e.op, &e.decision));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NativePolicy;
    use rollout_policy as p;

    fn decided(e: &Explanation) -> Vec<(&'static str, String)> {
        e.lines.iter().filter(|l| l.decided).map(|l| (l.section, l.rule.clone())).collect()
    }

    #[test]
    fn the_reference_explains_with_the_line_that_decided() {
        let c = p::Config { is_active: false, rollout_percentage: 100, ..p::Config::default() };
        let e = explain(&Query::IsEligible(c, p::Repository::parse("x", None)), &NativePolicy::new()).unwrap();
        assert_eq!(decided(&e), vec![("eligibility", "inactive".to_owned())]);
        assert_eq!(e.decision["reason"], "inactive");
        let text = render_text(&e, "reference");
        assert!(text.contains("▶"), "{text}");
        assert!(text.contains("decision: not eligible, reason inactive"), "{text}");
    }

    #[test]
    fn a_later_check_that_holds_overrides_an_earlier_one() {
        let check = |rule: &str, held| Check {
            section: p::Section::Routing,
            rule: rule.into(),
            condition: rule.into(),
            values: String::new(),
            held,
        };
        let ls = lines(&[check("recent_data", true), check("mine", false), check("scheduled_bulk", true)]);
        assert_eq!(ls.iter().map(|l| l.decided).collect::<Vec<_>>(), vec![false, false, true]);
    }
}
