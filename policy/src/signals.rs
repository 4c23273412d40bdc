//! Health from every indicator (WIT `monitoring`, contract 0.1.1): the error rate of
//! [`evaluate_health`](crate::evaluate_health), with its level raised by queue backlog and
//! processing time.
//!
//! The rules, in order, per processor (the first that holds for any processor sets the
//! signal level; the health level is the higher of it and the error rate's):
//! - **critical**: the depth at the last report is above `backlog_critical_depth`, or the
//!   oldest item is older than `backlog_critical_age_seconds`;
//! - **warning**: the backlog grew across the window (at least [`GROWING_MIN_REPORTS`]
//!   reports, never shrinking from one to the next, the last above the first); the oldest
//!   item is older than `backlog_warning_age_seconds`; the p95 processing time is above
//!   `p95_limit_ms`; or it is above `p95_baseline_factor` × the processor's p95 before the
//!   last change.
//!
//! The action is the error rate's: signals alert people, only errors roll back (a queue can
//! back up for reasons the rollout did not cause; an error rate is the rollout's own).

use crate::{evaluate_health, Config, Health, HealthLevel, HealthLimits, ProcessorSignals, ProcessorWindow};

/// Reports needed before a backlog counts as growing.
pub const GROWING_MIN_REPORTS: usize = 3;

/// Whether `depths` (oldest first) grew across the window: enough reports, never shrinking,
/// ending higher than they started.
pub fn backlog_growing(depths: &[u64]) -> bool {
    depths.len() >= GROWING_MIN_REPORTS
        && depths.windows(2).all(|w| matches!(w, [a, b] if b >= a))
        && depths.last() > depths.first()
}

/// Whole units for the reasons (integer formatting keeps float formatting out of the
/// component).
fn whole(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.round() as u64
    } else {
        0
    }
}

/// The level the signals of one processor call for, and why.
fn judge(s: &ProcessorSignals, limits: &HealthLimits) -> Option<(HealthLevel, String)> {
    let name = s.processor.as_str();
    let depth = s.backlog_depths.last().copied();
    let age = s.backlog_oldest_age_seconds.filter(|a| a.is_finite());
    if let (Some(d), Some(max)) = (depth, limits.backlog_critical_depth) {
        if d > max {
            return Some((HealthLevel::Critical, format!("{name} backlog of {d} is above the critical depth {max}")));
        }
    }
    if let (Some(a), Some(max)) = (age, limits.backlog_critical_age_seconds) {
        if a > max {
            return Some((
                HealthLevel::Critical,
                format!("{name}'s oldest waiting item is {} s old, above the critical {} s", whole(a), whole(max)),
            ));
        }
    }
    if let (true, Some(first), Some(last)) =
        (backlog_growing(&s.backlog_depths), s.backlog_depths.first(), s.backlog_depths.last())
    {
        return Some((
            HealthLevel::Warning,
            format!("{name} backlog grew across the window ({first} → {last} over {} reports)", s.backlog_depths.len()),
        ));
    }
    if let (Some(a), Some(max)) = (age, limits.backlog_warning_age_seconds) {
        if a > max {
            return Some((
                HealthLevel::Warning,
                format!("{name}'s oldest waiting item is {} s old, above {} s", whole(a), whole(max)),
            ));
        }
    }
    let p95 = s.p95_processing_time_ms.filter(|p| p.is_finite());
    if let (Some(p), Some(max)) = (p95, limits.p95_limit_ms) {
        if p > max {
            return Some((
                HealthLevel::Warning,
                format!("{name} p95 {} ms is above the limit {} ms", whole(p), whole(max)),
            ));
        }
    }
    let baseline = s.baseline_p95_processing_time_ms.filter(|b| b.is_finite() && *b > 0.0);
    if let (Some(p), Some(b), Some(k)) = (p95, baseline, limits.p95_baseline_factor.filter(|k| k.is_finite())) {
        if p > k * b {
            return Some((
                HealthLevel::Warning,
                format!(
                    "{name} p95 {} ms is above {}.{:02} × its baseline {} ms before the last change",
                    whole(p),
                    whole(k * 100.0) / 100,
                    whole(k * 100.0) % 100,
                    whole(b)
                ),
            ));
        }
    }
    None
}

fn rank(l: HealthLevel) -> u8 {
    match l {
        HealthLevel::Ok => 0,
        HealthLevel::Warning => 1,
        HealthLevel::Critical => 2,
    }
}

/// Health from the error rate and the signals (see the module documentation):
/// [`raise_by_signals`] over [`evaluate_health`].
pub fn evaluate_health_signals(
    config: &Config,
    windows: &[ProcessorWindow],
    signals: &[ProcessorSignals],
    limits: &HealthLimits,
) -> Health {
    raise_by_signals(evaluate_health(config, windows), signals, limits)
}

/// `health` (an error-rate judgement) with its level raised by the signals' rules and their
/// reasons appended; the action is left as it is. A policy with its own error rule builds
/// on this, so its signals behave like the reference's.
pub fn raise_by_signals(mut health: Health, signals: &[ProcessorSignals], limits: &HealthLimits) -> Health {
    let judged: Vec<(HealthLevel, String)> = signals.iter().filter_map(|s| judge(s, limits)).collect();
    let Some(top) = judged.iter().map(|(l, _)| *l).max_by_key(|l| rank(*l)) else { return health };
    if rank(top) > rank(health.level) {
        health.level = top;
    }
    for (_, why) in judged {
        health.reason.push_str("; ");
        health.reason.push_str(&why);
    }
    health
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HealthAction, Processor};

    fn sig(depths: Vec<u64>, age: Option<f64>, p95: Option<f64>, baseline: Option<f64>) -> ProcessorSignals {
        ProcessorSignals {
            processor: Processor::GithubActions,
            backlog_depths: depths,
            backlog_oldest_age_seconds: age,
            p95_processing_time_ms: p95,
            baseline_p95_processing_time_ms: baseline,
        }
    }

    fn live() -> Config {
        Config { is_active: true, rollout_percentage: 25, ..Config::default() }
    }

    fn level(s: ProcessorSignals, limits: HealthLimits) -> HealthLevel {
        evaluate_health_signals(&live(), &[], &[s], &limits).level
    }

    #[test]
    fn growing_needs_three_reports_never_shrinking_ending_higher() {
        assert!(backlog_growing(&[1, 2, 3]));
        assert!(backlog_growing(&[5, 5, 6]));
        assert!(!backlog_growing(&[1, 2]), "two reports are not a trend");
        assert!(!backlog_growing(&[5, 5, 5]), "flat is not growing");
        assert!(!backlog_growing(&[1, 3, 2, 4]), "a drop in between is not growing");
        assert!(!backlog_growing(&[]));
    }

    #[test]
    fn each_rule_raises_the_level_it_names() {
        let none = HealthLimits::default();
        assert_eq!(level(sig(vec![10, 20, 30], None, None, None), none), HealthLevel::Warning);
        assert_eq!(level(sig(vec![30, 20, 10], None, None, None), none), HealthLevel::Ok);
        let limits = HealthLimits {
            backlog_warning_age_seconds: Some(600.0),
            backlog_critical_age_seconds: Some(3600.0),
            backlog_critical_depth: Some(1000),
            p95_limit_ms: Some(5000.0),
            p95_baseline_factor: Some(2.0),
        };
        assert_eq!(level(sig(vec![1001], None, None, None), limits), HealthLevel::Critical);
        assert_eq!(level(sig(vec![1000], None, None, None), limits), HealthLevel::Ok, "at the limit is fine");
        assert_eq!(level(sig(vec![], Some(3601.0), None, None), limits), HealthLevel::Critical);
        assert_eq!(level(sig(vec![], Some(601.0), None, None), limits), HealthLevel::Warning);
        assert_eq!(level(sig(vec![], Some(600.0), None, None), limits), HealthLevel::Ok);
        assert_eq!(level(sig(vec![], None, Some(5001.0), None), limits), HealthLevel::Warning);
        assert_eq!(level(sig(vec![], None, Some(401.0), Some(200.0)), limits), HealthLevel::Warning);
        assert_eq!(level(sig(vec![], None, Some(400.0), Some(200.0)), limits), HealthLevel::Ok);
        // a zero, negative or non-finite baseline turns the baseline rule off
        assert_eq!(level(sig(vec![], None, Some(400.0), Some(0.0)), limits), HealthLevel::Ok);
        assert_eq!(level(sig(vec![], None, Some(f64::NAN), Some(1.0)), limits), HealthLevel::Ok);
        // no limit, no rule (growth is judged without limits)
        assert_eq!(level(sig(vec![99_999], Some(1e9), Some(1e9), Some(1.0)), none), HealthLevel::Ok);
    }

    #[test]
    fn signals_alert_but_only_errors_roll_back() {
        let limits = HealthLimits { backlog_critical_depth: Some(10), ..HealthLimits::default() };
        let ok_errors = ProcessorWindow {
            processor: Processor::GithubActions,
            success_count: 100,
            error_count: 0,
            total_jobs: 100,
            average_processing_time: None,
        };
        let h = evaluate_health_signals(&live(), &[ok_errors], &[sig(vec![50], None, None, None)], &limits);
        assert_eq!((h.level, h.action), (HealthLevel::Critical, HealthAction::None));
        assert!(h.reason.ends_with("; github_actions backlog of 50 is above the critical depth 10"), "{}", h.reason);
        // the error rate's level stands when the signals are quieter
        let bad = ProcessorWindow { success_count: 80, error_count: 20, ..ok_errors };
        let h = evaluate_health_signals(&live(), &[bad], &[sig(vec![1, 2, 3], None, None, None)], &limits);
        assert_eq!((h.level, h.action), (HealthLevel::Critical, HealthAction::Rollback));
        // without signals it is exactly evaluate_health
        assert_eq!(evaluate_health_signals(&live(), &[bad], &[], &limits), evaluate_health(&live(), &[bad]));
    }
}
