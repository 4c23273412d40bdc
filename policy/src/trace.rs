//! Explanations: the checks the rules make on the way to a decision, recorded by the same
//! code that decides.
//!
//! Every rule of SPEC §2 is written once, generic over a [`Tracer`]: each condition is
//! asked through [`Tracer::check`], which returns whether it held. The decision functions
//! ([`crate::Evaluator::is_eligible`], [`crate::Evaluator::route`], [`crate::categorize()`],
//! [`crate::evaluate_health()`]) run that code with [`NoTrace`], whose `check` is an
//! always-inlined identity on `held`: the description and the `values` closure are dropped
//! unused, so the decision compiles to the same work as a plain `if`. The traced variants
//! (`*_traced`) run the very same code with a [`Trace`], which records every check as a
//! [`Check`].
//!
//! Reading a trace: the checks are in evaluation order; within a [`Section`], **the last
//! check that held decided**. The reference rules stop at the first check that holds, so
//! there the first held check is also the last; a policy that overrides a reference
//! decision appends its own check after the reference's, and that check then decides.
//!
//! ```
//! use rollout_policy::{Config, Evaluator, Repository, Section, Strategy, Trace};
//!
//! let config = Config { is_active: true, rollout_percentage: 0, rollout_strategy: Strategy::Percentage, ..Config::default() };
//! let evaluator = Evaluator::new(config)?;
//! let repo = Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", None);
//! let mut trace = Trace::new();
//! let decision = evaluator.is_eligible_traced(&repo, &mut trace);
//! assert_eq!(decision, evaluator.is_eligible(&repo));
//! let decided = trace.decided(Section::Eligibility).map(|c| c.rule.as_str());
//! assert_eq!(decided, Some("outside_percentage"));
//! # Ok::<(), rollout_policy::ConfigError>(())
//! ```

use crate::{Categorization, Eligibility, Health, RouteDecision};
use std::fmt;

named_enum!(
    /// The part of the rules a [`Check`] belongs to; each section decides one part of a
    /// decision.
    Section, "section" {
        /// Eligibility (SPEC §2.2): decides `eligible` and `reason`.
        Eligibility = "eligibility",
        /// Routing (SPEC §2.3): decides `processor` and `rule`.
        Routing = "routing",
        /// Categorisation (SPEC §2.4): decides the category.
        Categorization = "categorization",
        /// The health level (SPEC §2.5).
        HealthLevel = "health_level",
        /// The health action (SPEC §2.5).
        HealthAction = "health_action",
    }
);

/// One check made on the way to a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Check {
    /// The section it belongs to.
    pub section: Section,
    /// What the check decides when it holds, snake_case: an eligibility reason
    /// (`emergency_stop`, `in_percentage`, …), a route rule (`recent_data`,
    /// `scheduled_bulk`, …), a category, a health level (`critical`) or a health action
    /// (`rollback`, `none`). A policy's own checks may use names of their own.
    pub rule: String,
    /// The condition, in words.
    pub condition: String,
    /// The values compared, in words (`bucket 37 < rollout_percentage 25: no`).
    pub values: String,
    /// Whether the condition held.
    pub held: bool,
}

/// Receives the checks of the rules as they are made.
///
/// The rules call [`Tracer::check`] once per condition, in evaluation order, and branch on
/// what it returns, so an implementation must return `held` unchanged.
pub trait Tracer {
    /// One check of `section`: `rule` is what it decides when it holds, `condition` the
    /// condition in words, `values` builds the description of the values compared (only
    /// called by a tracer that records it), `held` whether the condition held. Returns
    /// `held`.
    fn check(
        &mut self,
        section: Section,
        rule: &'static str,
        condition: &'static str,
        values: impl FnOnce() -> String,
        held: bool,
    ) -> bool;
}

/// The tracer of the decision path: records nothing and costs nothing.
///
/// A zero-sized type whose [`Tracer::check`] is an always-inlined `held`: the `values`
/// closure is never called, so no string is built and no allocation made, and the rules
/// compile to the same branches as without a tracer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoTrace;

impl Tracer for NoTrace {
    #[inline(always)]
    fn check(
        &mut self,
        _section: Section,
        _rule: &'static str,
        _condition: &'static str,
        _values: impl FnOnce() -> String,
        held: bool,
    ) -> bool {
        held
    }
}

/// A recording tracer: every check, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Trace {
    /// The checks, in evaluation order.
    pub checks: Vec<Check>,
}

impl Tracer for Trace {
    fn check(
        &mut self,
        section: Section,
        rule: &'static str,
        condition: &'static str,
        values: impl FnOnce() -> String,
        held: bool,
    ) -> bool {
        self.push(section, rule, condition, values(), held);
        held
    }
}

/// The condition of the single check [`Trace::record_eligibility`] and its siblings record
/// for a policy that decides without tracing.
pub const UNTRACED: &str = "decided by this policy (it records no explanation)";

impl Trace {
    /// An empty trace.
    pub fn new() -> Trace {
        Trace::default()
    }

    // Not generic and not inlined: one copy for every check of every rule, where inlining
    // it into each call site would grow the component for no speed that matters.
    #[inline(never)]
    fn push(&mut self, section: Section, rule: &str, condition: &str, values: String, held: bool) {
        self.checks.push(Check { section, rule: rule.to_owned(), condition: condition.to_owned(), values, held });
    }

    /// The checks of `section`, in order.
    pub fn section(&self, section: Section) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(move |c| c.section == section)
    }

    /// The check that decided `section`: the last one of the section that held.
    pub fn decided(&self, section: Section) -> Option<&Check> {
        self.checks.iter().rev().find(|c| c.section == section && c.held)
    }

    /// Record an eligibility decision made without tracing: one held check of
    /// [`Section::Eligibility`] whose rule is the decision's reason.
    pub fn record_eligibility(&mut self, decision: &Eligibility, condition: &'static str) {
        let d = *decision;
        self.check(
            Section::Eligibility,
            d.reason.as_str(),
            condition,
            || format!("{}, reason {}, bucket {}", eligible_text(d.eligible), d.reason, d.bucket),
            true,
        );
    }

    /// Record a routing decision made without tracing: its eligibility (as
    /// [`Trace::record_eligibility`]), then one held check of [`Section::Routing`] whose rule
    /// is the decision's rule.
    pub fn record_route(&mut self, decision: &RouteDecision, condition: &'static str) {
        let d = *decision;
        self.record_eligibility(&d.eligibility, condition);
        self.check(Section::Routing, d.rule.as_str(), condition, || format!("{}, rule {}", d.processor, d.rule), true);
    }

    /// Record a categorisation made without tracing: one held check of
    /// [`Section::Categorization`] whose rule is the category.
    pub fn record_categorization(&mut self, decision: &Categorization, condition: &'static str) {
        let d = *decision;
        self.check(
            Section::Categorization,
            d.category.as_str(),
            condition,
            || format!("{} (priority {}, activity score {})", d.category, d.priority_level, d.monthly_activity_score),
            true,
        );
    }

    /// Record a health evaluation made without tracing: one held check of
    /// [`Section::HealthLevel`] naming the level, one of [`Section::HealthAction`] naming the
    /// action (its values are the evaluation's reason).
    pub fn record_health(&mut self, decision: &Health, condition: &'static str) {
        let (level, action) = (decision.level, decision.action);
        self.check(
            Section::HealthLevel,
            level.as_str(),
            condition,
            || format!("{} jobs, error_rate {}", decision.total_jobs, crate::health::percent(decision.error_rate)),
            true,
        );
        self.check(Section::HealthAction, action.as_str(), condition, || decision.reason.clone(), true);
    }
}

impl fmt::Display for Check {
    /// `section rule: condition [values]: holds` (or `does not hold`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.section, self.rule, self.condition)?;
        if !self.values.is_empty() {
            write!(f, " [{}]", self.values)?;
        }
        f.write_str(if self.held { ": holds" } else { ": does not hold" })
    }
}

/// `yes` or `no`, for the values of a comparison.
pub(crate) fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// An optional value in words: the value, or `absent`.
pub(crate) fn opt<T: fmt::Display>(v: Option<T>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "absent".to_owned(),
    }
}

/// `eligible` or `not eligible`.
pub(crate) fn eligible_text(eligible: bool) -> &'static str {
    if eligible {
        "eligible"
    } else {
        "not eligible"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_trace_never_builds_the_values() {
        let mut t = NoTrace;
        assert!(t.check(Section::Routing, "r", "c", || panic!("NoTrace called the values closure"), true));
        assert!(!t.check(Section::Eligibility, "r", "c", || panic!("NoTrace called the values closure"), false));
        assert_eq!(std::mem::size_of::<NoTrace>(), 0);
    }

    #[test]
    fn trace_records_in_order_and_returns_held() {
        let mut t = Trace::new();
        assert!(!t.check(Section::Routing, "a", "first", || "1".into(), false));
        assert!(t.check(Section::Routing, "b", "second", || "2".into(), true));
        assert!(t.check(Section::Routing, "c", "override", || "3".into(), true));
        let rules: Vec<&str> = t.checks.iter().map(|c| c.rule.as_str()).collect();
        assert_eq!(rules, ["a", "b", "c"]);
        assert_eq!(t.decided(Section::Routing).map(|c| c.rule.as_str()), Some("c"), "the last held check decides");
        assert_eq!(t.decided(Section::Eligibility), None);
        assert_eq!(t.section(Section::Routing).count(), 3);
    }

    #[test]
    fn check_displays_in_words() {
        let c = Check {
            section: Section::Eligibility,
            rule: "in_percentage".into(),
            condition: "bucket < rollout_percentage".into(),
            values: "bucket 37 < rollout_percentage 25: no".into(),
            held: false,
        };
        assert_eq!(
            c.to_string(),
            "eligibility in_percentage: bucket < rollout_percentage [bucket 37 < rollout_percentage 25: no]: does not hold"
        );
    }

    #[test]
    fn section_names() {
        let names: Vec<&str> = Section::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["eligibility", "routing", "categorization", "health_level", "health_action"]);
        assert_eq!(Section::parse("health_action"), Ok(Section::HealthAction));
    }
}
