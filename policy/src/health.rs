//! Health evaluation (SPEC §2.5).

use crate::trace::yes;
use crate::{Config, Health, HealthAction, HealthLevel, NoTrace, ProcessorWindow, Section, Trace, Tracer};

/// Error rate above which the level is `critical`.
const CRITICAL_RATE: f64 = 10.0;
/// Error rate above which the level is `warning`.
const WARNING_RATE: f64 = 2.5;

/// Health of the rollout over the evaluation window the host computed.
///
/// `rollback` is decided only when auto-rollback is on, the rollout is above 0 % and not
/// stopped, the window holds at least `min_jobs_for_rollback` jobs (the original wanted
/// more than 10 where the design says 10) and the error rate exceeds `max_error_rate`.
pub fn evaluate_health(config: &Config, windows: &[ProcessorWindow]) -> Health {
    evaluate_health_with(config, windows, &mut NoTrace)
}

/// [`evaluate_health()`], recording its checks (sections [`Section::HealthLevel`], then
/// [`Section::HealthAction`]) in `trace`.
pub fn evaluate_health_traced(config: &Config, windows: &[ProcessorWindow], trace: &mut Trace) -> Health {
    evaluate_health_with(config, windows, trace)
}

/// The one implementation of SPEC §2.5, generic over the tracer: the level's checks, then
/// the action's, each chain up to the first check that holds.
pub fn evaluate_health_with<T: Tracer>(config: &Config, windows: &[ProcessorWindow], t: &mut T) -> Health {
    let errors = windows.iter().fold(0u64, |a, w| a.saturating_add(w.error_count));
    let total = windows.iter().fold(0u64, |a, w| a.saturating_add(w.total_jobs));
    let error_rate = if total == 0 { 0.0 } else { 100.0 * errors as f64 / total as f64 };
    // `error_rate 12.50 (100 × 25 / 200) > 10.00: yes`
    let rate_above = |name: &str, limit: f64| {
        let rate = if total == 0 { "no jobs".to_owned() } else { format!("100 × {errors} / {total}") };
        format!("error_rate {} ({rate}) > {name}{}: {}", percent(error_rate), percent(limit), yes(error_rate > limit))
    };

    const L: Section = Section::HealthLevel;
    let level = if t.check(
        L,
        HealthLevel::Critical.as_str(),
        "error_rate > 10",
        || rate_above("", CRITICAL_RATE),
        error_rate > CRITICAL_RATE,
    ) {
        HealthLevel::Critical
    } else if t.check(
        L,
        HealthLevel::Warning.as_str(),
        "error_rate > 2.5",
        || rate_above("", WARNING_RATE),
        error_rate > WARNING_RATE,
    ) {
        HealthLevel::Warning
    } else {
        t.check(L, HealthLevel::Ok.as_str(), "otherwise (error_rate ≤ 2.5)", || rate_above("", WARNING_RATE), true);
        HealthLevel::Ok
    };

    const A: Section = Section::HealthAction;
    const NONE: &str = HealthAction::None.as_str();
    let c = config;
    let max = c.max_error_rate;
    let (action, reason) = if t.check(
        A,
        NONE,
        "auto-rollback is disabled",
        || format!("auto_rollback_enabled = {}", c.auto_rollback_enabled),
        !c.auto_rollback_enabled,
    ) {
        (HealthAction::None, "auto-rollback is disabled".to_owned())
    } else if t.check(
        A,
        NONE,
        "the emergency stop is on",
        || format!("emergency_stop = {}", c.emergency_stop),
        c.emergency_stop,
    ) {
        (HealthAction::None, "the emergency stop is on; nothing to roll back".to_owned())
    } else if t.check(
        A,
        NONE,
        "the rollout is already at 0%",
        || format!("rollout_percentage = {}", c.rollout_percentage),
        c.rollout_percentage == 0,
    ) {
        (HealthAction::None, "the rollout is already at 0%".to_owned())
    } else if t.check(
        A,
        NONE,
        "fewer jobs in the window than min_jobs_for_rollback",
        || {
            let min = c.min_jobs_for_rollback;
            format!("total jobs {total} < min_jobs_for_rollback {min}: {}", yes(total < u64::from(min)))
        },
        total < u64::from(c.min_jobs_for_rollback),
    ) {
        (
            HealthAction::None,
            format!("{total} jobs in the window, fewer than the {} needed to judge", c.min_jobs_for_rollback),
        )
    } else if t.check(
        A,
        HealthAction::Rollback.as_str(),
        "error_rate > max_error_rate",
        || rate_above("max_error_rate ", max),
        error_rate > max,
    ) {
        (
            HealthAction::Rollback,
            format!("error rate {}% over {total} jobs exceeds the maximum {}%", percent(error_rate), percent(max)),
        )
    }
    // SPEC §2.5 as amended: the seed's "critical: immediate rollback", even when
    // max_error_rate is set above 10 %
    else if t.check(
        A,
        HealthAction::Rollback.as_str(),
        "the level is critical (error_rate > 10)",
        || rate_above("", CRITICAL_RATE),
        level == HealthLevel::Critical,
    ) {
        (
            HealthAction::Rollback,
            format!(
                "error rate {}% over {total} jobs is critical (above {}%): immediate rollback, whatever the maximum {}%",
                percent(error_rate),
                percent(CRITICAL_RATE),
                percent(max)
            ),
        )
    } else {
        t.check(A, NONE, "otherwise (error_rate ≤ max_error_rate)", || rate_above("max_error_rate ", max), true);
        (
            HealthAction::None,
            format!("error rate {}% over {total} jobs is within the maximum {}%", percent(error_rate), percent(max)),
        )
    };
    Health { level, action, error_rate, total_jobs: total, reason }
}

/// A percentage with two decimals (`12.50`), formatted with integer arithmetic: float
/// formatting would add tens of kilobytes to the component for two reason strings.
pub(crate) fn percent(x: f64) -> String {
    // Rates are in 0..=100 (validated for the maximum, a ratio for the rate); clamp anyway.
    let hundredths = (x.clamp(0.0, 1.0e12) * 100.0).round() as u64;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Processor;

    fn window(errors: u64, total: u64) -> ProcessorWindow {
        ProcessorWindow {
            processor: Processor::GithubActions,
            success_count: total - errors,
            error_count: errors,
            total_jobs: total,
            average_processing_time: None,
        }
    }

    fn live() -> Config {
        Config { is_active: true, rollout_percentage: 25, ..Config::default() }
    }

    #[test]
    fn exactly_min_jobs_is_enough() {
        // The original required more than 10 (SPEC §7.9).
        let h = evaluate_health(&live(), &[window(1, 10)]);
        assert_eq!(h.action, HealthAction::Rollback);
        assert_eq!(h.level, HealthLevel::Warning);
        assert!((h.error_rate - 10.0).abs() < 1e-9);
        let h = evaluate_health(&live(), &[window(9, 9)]);
        assert_eq!(h.action, HealthAction::None);
    }

    #[test]
    fn already_at_zero_does_not_fire_again() {
        let c = Config { rollout_percentage: 0, ..live() };
        assert_eq!(evaluate_health(&c, &[window(50, 100)]).action, HealthAction::None);
    }

    #[test]
    fn no_jobs_is_rate_zero() {
        let h = evaluate_health(&live(), &[]);
        assert_eq!(h.error_rate, 0.0);
        assert_eq!(h.level, HealthLevel::Ok);
    }

    #[test]
    fn percent_formats_two_decimals() {
        assert_eq!(percent(12.5), "12.50");
        assert_eq!(percent(0.0), "0.00");
        assert_eq!(percent(100.0 / 3.0), "33.33");
        assert_eq!(percent(2.005), "2.01");
    }

    /// SPEC §2.5 as amended: the seed's "critical: immediate rollback" — the reference kept
    /// a 15 % error rate running when `max_error_rate` was 20.
    #[test]
    fn critical_rolls_back_even_above_a_custom_max() {
        let c = Config { max_error_rate: 20.0, ..live() };
        let h = evaluate_health(&c, &[window(15, 100)]);
        assert_eq!((h.level, h.action), (HealthLevel::Critical, HealthAction::Rollback), "{}", h.reason);
        assert!(h.reason.contains("critical"), "{}", h.reason);
        let h = evaluate_health(&c, &[window(10, 100)]);
        assert_eq!((h.level, h.action), (HealthLevel::Warning, HealthAction::None));
        // the other conditions still hold it back
        let few = Config { min_jobs_for_rollback: 200, ..c.clone() };
        assert_eq!(evaluate_health(&few, &[window(15, 100)]).action, HealthAction::None);
        let off = Config { auto_rollback_enabled: false, ..c };
        assert_eq!(evaluate_health(&off, &[window(15, 100)]).action, HealthAction::None);
    }

    #[test]
    fn levels() {
        assert_eq!(evaluate_health(&live(), &[window(25, 1000)]).level, HealthLevel::Ok);
        assert_eq!(evaluate_health(&live(), &[window(26, 1000)]).level, HealthLevel::Warning);
        assert_eq!(evaluate_health(&live(), &[window(101, 1000)]).level, HealthLevel::Critical);
    }
}
