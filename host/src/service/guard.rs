//! The canary guard's statistics: is the canary cohort worse than the control cohort?
//!
//! A new policy version (the **canary**) serves a share of repositories; the rest (the
//! **control**) keep the current version. At every health check the caller passes the
//! cumulative counts of both cohorts ([`Cohort`]) to [`judge`], which judges two metrics:
//!
//! - the **fallback rate** (decisions where the policy gave no answer): the canary is worse
//!   when the lower confidence bound of `p_canary − p_control` exceeds
//!   [`GuardLimits::max_fallback_rate`];
//! - the **outcome error rate** (failed outcomes / outcomes): worse when the lower bound of
//!   `err_canary − err_control` exceeds [`GuardLimits::max_error_rate_delta`].
//!
//! # Method: alpha spending over the checks, Newcombe intervals at each check
//!
//! The guard looks at the same, growing data hundreds of times, so a fixed-level test at
//! every look would raise false alarms far more often than its level ("peeking"). Check `k`
//! (1-based) therefore spends `alpha_k = alpha · 6 / (π² k²)` ([`spent_alpha`]), split evenly
//! between the two metrics, and `Σ_k alpha_k = alpha · (6/π²) · Σ 1/k² = alpha`. By the union
//! bound, `P(any metric at any check k declares "worse" | no true difference) ≤ Σ_k alpha_k
//! = alpha` — whatever the dependence between checks and however many checks a run makes.
//! At check `k` each metric's one-sided `1 − alpha_k / 2` bound for a difference of two
//! proportions is Newcombe's hybrid score interval with continuity-corrected Wilson bounds
//! (Newcombe 1998, method 11; [`interval_difference`]), whose single-proportion bounds are
//! widened, for observed rates up to 25 %, to the exact Poisson bounds: measured, plain
//! Newcombe's one-sided error was up to 1.7× nominal with ~10 canary events, the Poisson
//! widening brings it under nominal. `0` events do not explode (one canary fallback against
//! `0 / 20,000` is judged by bounds, not a ratio). The critical value is the inverse normal
//! CDF computed here (Acklam's algorithm, relative error < 1.2·10⁻⁹). Judging starts once
//! both cohorts have [`MIN_DECISIONS`] decisions (the error rate: [`MIN_OUTCOMES`] outcomes).
//!
//! **Measured A/A false-alarm rate** (the tests of this module, identical true rates in both
//! cohorts, limits `0` / `0`, `alpha = 0.05`, 1,000 simulated runs of 50 cumulative checks,
//! canary 10 % of 20,000 decisions and 2,000 outcomes per check, fallback 0.5 %, errors 5 %):
//! **26 of 1,000 runs** (2.6 %) ever raised "worse"; other A/A shapes of the tests (300 runs
//! each: rare events in a 1 % canary, 0.0 %; 20 % / 30 % rates over 200 checks, 2.0 %;
//! barely-above-minimum counts over 100 checks, 1.3 %). Most false alarms fall on the first
//! checks, which spend most of the alpha. Power: a canary that falls back on 1 % of its
//! decisions against a clean control is declared worse at the first check that has 1,000
//! canary decisions (checks 1–5 asserted; simulated 1,000/1,000 runs at check 1).
//!
//! # What the caller must know
//!
//! - `check` restarts at 1 when the canary step changes (new percentage or new version, with
//!   fresh counts); the false-alarm bound `alpha` holds **per step**. For a bound over a whole
//!   rollout of `s` steps, pass `alpha / s` (or keep counting checks across steps).
//! - The counts must be cumulative since the step began, and the check index must grow by
//!   one per look — calling [`judge`] twice with the same index spends its alpha twice.
//! - The binomial model assumes decisions (and outcomes) are independent. Fallbacks or
//!   failures clustered in a few large repositories inflate the variance, and with limits of
//!   exactly `0` a real but policy-unrelated difference between the cohorts' repositories is
//!   reported as "worse": a small positive limit absorbs that.

use serde::Serialize;
use std::fmt;

/// The default overall false-alarm probability of a canary step.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// Decisions each cohort needs before either metric is judged.
pub const MIN_DECISIONS: u64 = 100;

/// Outcomes each cohort needs before the error rate is judged.
pub const MIN_OUTCOMES: u64 = 30;

/// The smallest one-sided alpha an interval is computed at (a huge check index would
/// otherwise underflow to `0` and an infinite critical value).
const MIN_ALPHA: f64 = 1e-300;

/// Cumulative counts of one cohort since the canary step began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cohort {
    /// Decisions made for the cohort's repositories.
    pub decisions: u64,
    /// Decisions where the policy gave no answer (a subset of `decisions`).
    pub fallbacks: u64,
    /// Outcomes reported for the cohort's decisions.
    pub outcomes: u64,
    /// Outcomes that were failures (a subset of `outcomes`).
    pub failures: u64,
}

impl Cohort {
    /// The observed fallback rate, `0` without decisions.
    pub fn fallback_rate(&self) -> f64 {
        rate(self.fallbacks, self.decisions)
    }

    /// The observed error rate of outcomes, `0` without outcomes.
    pub fn error_rate(&self) -> f64 {
        rate(self.failures, self.outcomes)
    }
}

/// How much worse the canary may be, and the false-alarm probability of a step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GuardLimits {
    /// The largest tolerated increase of the fallback rate, `p_canary − p_control`, in
    /// `[0, 1]` (`0.0`: any demonstrable increase is "worse").
    pub max_fallback_rate: f64,
    /// The largest tolerated increase of the outcome error rate, `err_canary − err_control`,
    /// in `[0, 1]`.
    pub max_error_rate_delta: f64,
    /// The probability, over all checks of a step, of declaring "worse" when the canary is
    /// not (limits `0`, identical true rates); in `(0, 1)`.
    pub alpha: f64,
}

impl Default for GuardLimits {
    /// Any demonstrable fallback increase, error rate up to 1 point worse, `alpha` 0.05.
    fn default() -> Self {
        Self { max_fallback_rate: 0.0, max_error_rate_delta: 0.01, alpha: DEFAULT_ALPHA }
    }
}

impl GuardLimits {
    /// Checks the limits: both bounds finite and in `[0, 1]`, `alpha` in `(0, 1)`.
    ///
    /// # Errors
    ///
    /// A lowercase message naming the first invalid field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in
            [("max_fallback_rate", self.max_fallback_rate), ("max_error_rate_delta", self.max_error_rate_delta)]
        {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must be between 0 and 1, got {value}"));
            }
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("alpha must be between 0 and 1 (exclusive), got {}", self.alpha));
        }
        Ok(())
    }
}

/// A metric the guard judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The share of decisions where the policy gave no answer.
    FallbackRate,
    /// The share of outcomes that were failures.
    ErrorRate,
}

impl Metric {
    /// The metric's name as serialized: `fallback_rate` or `error_rate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::FallbackRate => "fallback_rate",
            Metric::ErrorRate => "error_rate",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one health check concluded about the canary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Judgement {
    /// Not enough data yet in one cohort (or counts or limits that cannot be judged).
    Waiting {
        /// Why, in lowercase words.
        reason: String,
    },
    /// No evidence the canary is worse.
    Satisfied {
        /// The lower confidence bound of `p_canary − p_control` for fallbacks.
        fallback_diff_lower: f64,
        /// The upper confidence bound of `p_canary − p_control` for fallbacks.
        fallback_diff_upper: f64,
        /// The lower bound of `err_canary − err_control`; `None` while the error rate is
        /// not judged yet.
        error_diff_lower: Option<f64>,
        /// The upper bound of `err_canary − err_control`; `None` while the error rate is
        /// not judged yet.
        error_diff_upper: Option<f64>,
        /// Why the error rate is not judged yet, when it is not.
        error_reason: Option<String>,
        /// The one-sided alpha each metric's bound used at this check: half of
        /// [`spent_alpha`] (two metrics share it).
        alpha_spent: f64,
    },
    /// The canary is worse: which metric, the interval, the counts.
    Worse {
        /// The metric that is worse (the fallback rate when both are).
        metric: Metric,
        /// The lower confidence bound of the difference, canary minus control.
        lower_bound: f64,
        /// The limit it exceeds.
        limit: f64,
        /// The one-sided alpha each metric's bound used at this check: half of
        /// [`spent_alpha`] (two metrics share it).
        alpha_spent: f64,
        /// The rates, counts and bounds, in lowercase words.
        detail: String,
    },
}

impl Judgement {
    /// Whether the canary was found worse.
    pub fn is_worse(&self) -> bool {
        matches!(self, Judgement::Worse { .. })
    }
}

/// The one-sided alpha check `check` (1-based) spends: `alpha · 6 / (π² check²)`.
///
/// The sum over all checks is `alpha`. `check = 0` is treated as `1`; an `alpha` outside
/// `(0, 1)` (or NaN) gives `0`.
pub fn spent_alpha(alpha: f64, check: u64) -> f64 {
    if !(alpha > 0.0 && alpha < 1.0) {
        return 0.0;
    }
    let k = check.max(1) as f64;
    alpha * 6.0 / (std::f64::consts::PI * std::f64::consts::PI * k * k)
}

/// The one-sided `1 − alpha_one_sided` confidence bounds `(lower, upper)` of `p_a − p_b`,
/// where `p_a = a_events / a_n` and `p_b = b_events / b_n`.
///
/// Newcombe's hybrid score interval with continuity-corrected Wilson bounds (method 11 of
/// Newcombe 1998): `lower = d − √((p_a − l_a)² + (u_b − p_b)²)` and
/// `upper = d + √((u_a − p_a)² + (p_b − l_b)²)`, with `d = p_a − p_b` and `l`, `u` the Wilson
/// bounds at `z = Φ⁻¹(1 − alpha_one_sided)`, widened to the exact Poisson bounds when the
/// observed proportion is at most 0.25 (rare events, where Wilson's one-sided error exceeds
/// nominal). Each bound holds with probability at least about
/// `1 − alpha_one_sided`; `alpha_one_sided = 0.025` gives the usual two-sided 95 % interval.
///
/// Never panics: events are clamped to `n`, a cohort with `n = 0` counts as knowing nothing
/// (`p` anywhere in `[0, 1]`), and `alpha_one_sided` is clamped to `[1e-300, 0.5]` (NaN is
/// taken as `0.5`). The bounds are within `[−1, 1]`.
pub fn interval_difference(a_events: u64, a_n: u64, b_events: u64, b_n: u64, alpha_one_sided: f64) -> (f64, f64) {
    let z = critical_value(alpha_one_sided);
    let (pa, la, ua) = wilson_cc(a_events, a_n, z);
    let (pb, lb, ub) = wilson_cc(b_events, b_n, z);
    let d = pa - pb;
    let lower = d - (pa - la).hypot(ub - pb);
    let upper = d + (ua - pa).hypot(pb - lb);
    (lower.clamp(-1.0, 1.0), upper.clamp(-1.0, 1.0))
}

/// Judges the canary against the control at health check `check` (1-based index within the
/// current canary step; the caller restarts it at 1 when the step changes, with fresh
/// cumulative counts — see the module documentation).
///
/// [`Judgement::Waiting`] while either cohort has fewer than [`MIN_DECISIONS`] decisions,
/// when counts are inconsistent (more fallbacks than decisions, more failures than outcomes)
/// or when the limits are invalid ([`GuardLimits::validate`]). Otherwise the fallback rate is
/// judged, then — once both cohorts have [`MIN_OUTCOMES`] outcomes — the error rate, each at
/// the one-sided level [`spent_alpha`]`(limits.alpha, check) / 2`; the first metric whose lower
/// bound exceeds its limit makes the canary [`Judgement::Worse`].
pub fn judge(canary: &Cohort, control: &Cohort, limits: &GuardLimits, check: u64) -> Judgement {
    if let Err(e) = limits.validate() {
        return Judgement::Waiting { reason: format!("invalid guard limits: {e}") };
    }
    for (name, c) in [("canary", canary), ("control", control)] {
        if c.fallbacks > c.decisions {
            return Judgement::Waiting {
                reason: format!("inconsistent {name} counts: {} fallbacks in {} decisions", c.fallbacks, c.decisions),
            };
        }
        if c.failures > c.outcomes {
            return Judgement::Waiting {
                reason: format!("inconsistent {name} counts: {} failures in {} outcomes", c.failures, c.outcomes),
            };
        }
        if c.decisions < MIN_DECISIONS {
            return Judgement::Waiting {
                reason: format!("{name} has {} decisions, {MIN_DECISIONS} needed", c.decisions),
            };
        }
    }

    // Two metrics are judged at every check: each gets half of the check's alpha.
    let alpha_k = spent_alpha(limits.alpha, check) / 2.0;
    let (fb_lower, fb_upper) =
        interval_difference(canary.fallbacks, canary.decisions, control.fallbacks, control.decisions, alpha_k);
    if fb_lower > limits.max_fallback_rate {
        return worse(
            Metric::FallbackRate,
            (canary.fallbacks, canary.decisions),
            (control.fallbacks, control.decisions),
            (fb_lower, fb_upper),
            limits.max_fallback_rate,
            alpha_k,
            check,
        );
    }

    let mut error_reason = None;
    let mut error_bounds = None;
    if canary.outcomes < MIN_OUTCOMES || control.outcomes < MIN_OUTCOMES {
        error_reason = Some(format!(
            "error rate not judged yet: canary has {} outcomes, control {}, {MIN_OUTCOMES} needed in each",
            canary.outcomes, control.outcomes
        ));
    } else {
        let (lower, upper) =
            interval_difference(canary.failures, canary.outcomes, control.failures, control.outcomes, alpha_k);
        if lower > limits.max_error_rate_delta {
            return worse(
                Metric::ErrorRate,
                (canary.failures, canary.outcomes),
                (control.failures, control.outcomes),
                (lower, upper),
                limits.max_error_rate_delta,
                alpha_k,
                check,
            );
        }
        error_bounds = Some((lower, upper));
    }

    Judgement::Satisfied {
        fallback_diff_lower: fb_lower,
        fallback_diff_upper: fb_upper,
        error_diff_lower: error_bounds.map(|b| b.0),
        error_diff_upper: error_bounds.map(|b| b.1),
        error_reason,
        alpha_spent: alpha_k,
    }
}

/// The [`Judgement::Worse`] of `metric`, with its detail line.
fn worse(
    metric: Metric,
    canary: (u64, u64),
    control: (u64, u64),
    bounds: (f64, f64),
    limit: f64,
    alpha_k: f64,
    check: u64,
) -> Judgement {
    let what = match metric {
        Metric::FallbackRate => "fallback rate",
        Metric::ErrorRate => "error rate",
    };
    let detail = format!(
        "canary {what} {:.3} % ({}/{}) vs control {:.3} % ({}/{}): the difference is between {:.3} and {:.3} points, \
         above the limit of {:.3} points (check {}, one-sided alpha {:.2e})",
        100.0 * rate(canary.0, canary.1),
        canary.0,
        canary.1,
        100.0 * rate(control.0, control.1),
        control.0,
        control.1,
        100.0 * bounds.0,
        100.0 * bounds.1,
        100.0 * limit,
        check.max(1),
        alpha_k,
    );
    Judgement::Worse { metric, lower_bound: bounds.0, limit, alpha_spent: alpha_k, detail }
}

/// `events / n`, `0` when `n = 0`, at most `1`.
fn rate(events: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        (events.min(n) as f64 / n as f64).min(1.0)
    }
}

/// `z = Φ⁻¹(1 − alpha)` for a one-sided `alpha`, clamped to `[MIN_ALPHA, 0.5]` (NaN: `0.5`).
fn critical_value(alpha: f64) -> f64 {
    let alpha = if alpha.is_nan() { 0.5 } else { alpha.clamp(MIN_ALPHA, 0.5) };
    // Φ⁻¹(1 − a) = −Φ⁻¹(a): computed from the small tail, without cancellation.
    (-inverse_normal_cdf(alpha)).max(0.0)
}

/// `(p, lower, upper)`: the observed proportion and its continuity-corrected Wilson bounds
/// at critical value `z` (Newcombe 1998, method 4). `n = 0` gives `(0, 0, 1)`.
fn wilson_cc(events: u64, n: u64, z: f64) -> (f64, f64, f64) {
    if n == 0 {
        return (0.0, 0.0, 1.0);
    }
    let x = events.min(n);
    let nf = n as f64;
    let p = x as f64 / nf;
    let q = 1.0 - p;
    let z2 = z * z;
    let denom = 2.0 * (nf + z2);
    let lower = if x == 0 {
        0.0
    } else {
        let root = (z2 - 2.0 - 1.0 / nf + 4.0 * p * (nf * q + 1.0)).max(0.0).sqrt();
        (2.0 * nf * p + z2 - 1.0 - z * root) / denom
    };
    let upper = if x == n {
        1.0
    } else {
        let root = (z2 + 2.0 - 1.0 / nf + 4.0 * p * (nf * q - 1.0)).max(0.0).sqrt();
        (2.0 * nf * p + z2 + 1.0 + z * root) / denom
    };
    let (mut lower, mut upper) = (lower, upper);
    if p <= RARE {
        // Rare events: the Wilson bounds' skew is not enough (their one-sided error is up
        // to twice nominal for a handful of events); widen to the exact Poisson bounds.
        let (poisson_lower, poisson_upper) = poisson_bounds(x, z);
        lower = lower.min(poisson_lower / nf);
        upper = upper.max(poisson_upper / nf);
    }
    (p, lower.clamp(0.0, p), upper.clamp(p, 1.0))
}

/// Up to this observed proportion, [`wilson_cc`] also takes the Poisson bounds (which are
/// then at most about 15 % wider than the binomial ones, `1 / √(1 − p)`).
const RARE: f64 = 0.25;

/// The exact one-sided Poisson bounds `(lower, upper)` of the mean of `x` events at critical
/// value `z`, through the Wilson–Hilferty approximation of the chi-square quantiles
/// (`χ²(2x) / 2` and `χ²(2x + 2) / 2`; relative error well under 1 % for `x ≥ 1`).
fn poisson_bounds(x: u64, z: f64) -> (f64, f64) {
    let xf = x as f64;
    let lower = if x == 0 { 0.0 } else { xf * (1.0 - 1.0 / (9.0 * xf) - z / (3.0 * xf.sqrt())).max(0.0).powi(3) };
    let x1 = xf + 1.0;
    let upper = x1 * (1.0 - 1.0 / (9.0 * x1) + z / (3.0 * x1.sqrt())).powi(3);
    (lower, upper)
}

/// `Φ⁻¹(p)`, the standard normal quantile, by Acklam's rational approximations (relative
/// error below 1.15·10⁻⁹). `p` outside `(0, 1)` gives ±infinity; NaN gives NaN.
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 6] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
        1.0,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 5] =
        [7.784_695_709_041_462e-3, 3.224_671_290_700_398e-1, 2.445_134_137_142_996, 3.754_408_661_907_416, 1.0];
    const P_LOW: f64 = 0.024_25;

    fn horner(coefficients: &[f64], x: f64) -> f64 {
        coefficients.iter().fold(0.0, |acc, &c| acc * x + c)
    }

    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < P_LOW {
        let q = (-2.0 * p.ln()).sqrt();
        horner(&C, q) / horner(&D, q)
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        horner(&A, r) * q / horner(&B, r)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -horner(&C, q) / horner(&D, q)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;

    /// splitmix64: a small deterministic generator for the simulations.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// An exact binomial draw by inversion (sequential search of the CDF), O(n·p).
        fn binomial(&mut self, n: u64, p: f64) -> u64 {
            if n == 0 || p <= 0.0 {
                return 0;
            }
            if p >= 1.0 {
                return n;
            }
            if p > 0.5 {
                return n - self.binomial(n, 1.0 - p);
            }
            let mean = n as f64 * p;
            assert!(mean < 600.0, "binomial inversion is meant for small means, got {mean}");
            let u = self.uniform();
            let ratio = p / (1.0 - p);
            let mut pk = (1.0 - p).powf(n as f64);
            let mut cdf = pk;
            let mut k = 0u64;
            while u > cdf && k < n {
                pk *= (n - k) as f64 / (k + 1) as f64 * ratio;
                k += 1;
                cdf += pk;
                if k as f64 > mean && pk < 1e-300 {
                    break;
                }
            }
            k
        }
    }

    /// One A/A (or A/B) scenario: per-check volumes and true rates.
    struct Scenario {
        decisions_per_check: u64,
        outcomes_per_check: u64,
        canary_share: f64,
        canary_fallback: f64,
        control_fallback: f64,
        canary_error: f64,
        control_error: f64,
        checks: u64,
    }

    /// Simulates `runs` runs; returns (runs with any Worse, first worse check per alarmed run).
    fn simulate(s: &Scenario, limits: &GuardLimits, runs: u64, seed: u64) -> (u64, Vec<u64>) {
        let mut rng = Rng(seed);
        let canary_decisions = (s.decisions_per_check as f64 * s.canary_share).round() as u64;
        let control_decisions = s.decisions_per_check - canary_decisions;
        let canary_outcomes = (s.outcomes_per_check as f64 * s.canary_share).round() as u64;
        let control_outcomes = s.outcomes_per_check - canary_outcomes;
        let mut alarms = 0;
        let mut first = Vec::new();
        for _ in 0..runs {
            let mut canary = Cohort::default();
            let mut control = Cohort::default();
            for check in 1..=s.checks {
                canary.decisions += canary_decisions;
                canary.fallbacks += rng.binomial(canary_decisions, s.canary_fallback);
                canary.outcomes += canary_outcomes;
                canary.failures += rng.binomial(canary_outcomes, s.canary_error);
                control.decisions += control_decisions;
                control.fallbacks += rng.binomial(control_decisions, s.control_fallback);
                control.outcomes += control_outcomes;
                control.failures += rng.binomial(control_outcomes, s.control_error);
                if judge(&canary, &control, limits, check).is_worse() {
                    alarms += 1;
                    first.push(check);
                    break;
                }
            }
        }
        (alarms, first)
    }

    const ZERO_LIMITS: GuardLimits = GuardLimits { max_fallback_rate: 0.0, max_error_rate_delta: 0.0, alpha: 0.05 };

    #[test]
    fn a_a_false_alarm_rate_is_below_alpha() {
        // The scenario of the module documentation: 1,000 runs of 50 checks.
        let main = Scenario {
            decisions_per_check: 20_000,
            outcomes_per_check: 2_000,
            canary_share: 0.10,
            canary_fallback: 0.005,
            control_fallback: 0.005,
            canary_error: 0.05,
            control_error: 0.05,
            checks: 50,
        };
        let runs = 1_000;
        let (alarms, _) = simulate(&main, &ZERO_LIMITS, runs, 0x5EED_0001);
        let rate = alarms as f64 / runs as f64;
        eprintln!("a/a false alarms (fallback 0.5 %, errors 5 %, 10 % canary, 50 checks): {alarms}/{runs} = {rate:.4}");
        assert!(rate <= ZERO_LIMITS.alpha, "false-alarm rate {rate} above alpha");

        // Other A/A shapes: rare events, a small canary, many checks, high rates.
        let others = [
            // Rare fallbacks and a 1 % canary: 0-vs-few counts.
            Scenario {
                decisions_per_check: 20_000,
                outcomes_per_check: 2_000,
                canary_share: 0.01,
                canary_fallback: 0.001,
                control_fallback: 0.001,
                canary_error: 0.02,
                control_error: 0.02,
                checks: 50,
            },
            // Half the traffic, frequent events, 200 checks.
            Scenario {
                decisions_per_check: 1_000,
                outcomes_per_check: 200,
                canary_share: 0.5,
                canary_fallback: 0.2,
                control_fallback: 0.2,
                canary_error: 0.3,
                control_error: 0.3,
                checks: 200,
            },
            // Just above the minimum counts at the first check.
            Scenario {
                decisions_per_check: 2_000,
                outcomes_per_check: 600,
                canary_share: 0.05,
                canary_fallback: 0.01,
                control_fallback: 0.01,
                canary_error: 0.1,
                control_error: 0.1,
                checks: 100,
            },
        ];
        for (i, s) in others.iter().enumerate() {
            let runs = 300;
            let (alarms, _) = simulate(s, &ZERO_LIMITS, runs, 0x5EED_0100 + i as u64);
            let rate = alarms as f64 / runs as f64;
            eprintln!("a/a scenario {i}: {alarms}/{runs} = {rate:.4}");
            assert!(rate <= ZERO_LIMITS.alpha, "scenario {i}: false-alarm rate {rate} above alpha");
        }
    }

    #[test]
    fn a_one_percent_trap_is_caught_at_the_first_check() {
        let limits = GuardLimits { max_fallback_rate: 0.0, max_error_rate_delta: 0.0, alpha: 0.05 };
        let control = Cohort { decisions: 20_000, fallbacks: 0, outcomes: 2_000, failures: 100 };
        for decisions in [1_000u64, 2_000, 3_000, 5_000] {
            let canary = Cohort { decisions, fallbacks: decisions / 100, outcomes: 200, failures: 10 };
            for check in 1..=5 {
                let j = judge(&canary, &control, &limits, check);
                match &j {
                    Judgement::Worse { metric, lower_bound, .. } => {
                        assert_eq!(*metric, Metric::FallbackRate);
                        assert!(*lower_bound > 0.0);
                    }
                    other => panic!("{decisions} decisions, check {check}: {other:?}"),
                }
                if decisions == 1_000 && check == 5 {
                    eprintln!("1 % trap, 1,000 canary decisions, check 5: {j:?}");
                }
            }
        }
        // Simulated: a 1 % trap in a 10 % canary of 20,000 decisions per check (2,000 canary
        // decisions per check), control at 0.1 %: caught at the first check in almost every run.
        let trap = Scenario {
            decisions_per_check: 20_000,
            outcomes_per_check: 2_000,
            canary_share: 0.10,
            canary_fallback: 0.011,
            control_fallback: 0.001,
            canary_error: 0.05,
            control_error: 0.05,
            checks: 5,
        };
        let runs = 1_000;
        let (alarms, first) = simulate(&trap, &ZERO_LIMITS, runs, 0x7EA9);
        let at_first = first.iter().filter(|&&c| c == 1).count();
        eprintln!("1 % trap (2,000 canary decisions per check): caught in {alarms}/{runs} runs, {at_first} at check 1");
        assert!(at_first as f64 >= 0.95 * runs as f64);
        assert_eq!(alarms, runs);
    }

    #[test]
    fn a_worse_error_rate_is_caught() {
        // 10 % vs 5 % failures, 200 canary outcomes per check.
        let s = Scenario {
            decisions_per_check: 20_000,
            outcomes_per_check: 2_000,
            canary_share: 0.10,
            canary_fallback: 0.005,
            control_fallback: 0.005,
            canary_error: 0.10,
            control_error: 0.05,
            checks: 20,
        };
        let runs = 300;
        let (alarms, mut first) = simulate(&s, &ZERO_LIMITS, runs, 0xE770);
        first.sort_unstable();
        let median = first.get(first.len() / 2).copied().unwrap_or(0);
        eprintln!("error rate 10 % vs 5 %: caught in {alarms}/{runs} runs within 20 checks, median check {median}");
        assert!(alarms as f64 >= 0.95 * runs as f64);
        let canary = Cohort { decisions: 2_000, fallbacks: 10, outcomes: 400, failures: 60 };
        let control = Cohort { decisions: 18_000, fallbacks: 90, outcomes: 3_600, failures: 180 };
        match judge(&canary, &control, &ZERO_LIMITS, 2) {
            Judgement::Worse { metric: Metric::ErrorRate, lower_bound, limit, detail, .. } => {
                assert!(lower_bound > limit);
                assert!(
                    detail.starts_with("canary error rate 15.000 % (60/400) vs control 5.000 % (180/3600)"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equal_counts_are_satisfied() {
        let c = Cohort { decisions: 10_000, fallbacks: 50, outcomes: 1_000, failures: 50 };
        for check in [1, 2, 10, 1_000, u64::MAX] {
            match judge(&c, &c, &ZERO_LIMITS, check) {
                Judgement::Satisfied {
                    fallback_diff_lower,
                    fallback_diff_upper,
                    error_diff_lower,
                    error_diff_upper,
                    error_reason,
                    alpha_spent,
                } => {
                    assert!(fallback_diff_lower < 0.0 && fallback_diff_upper > 0.0);
                    assert!(error_diff_lower.unwrap() < 0.0 && error_diff_upper.unwrap() > 0.0);
                    assert_eq!(error_reason, None);
                    assert!(alpha_spent > 0.0 && alpha_spent <= 0.05);
                }
                other => panic!("check {check}: {other:?}"),
            }
        }
        // Error rate not judged yet: satisfied, with a reason.
        let few = Cohort { decisions: 10_000, fallbacks: 50, outcomes: 29, failures: 29 };
        let j = judge(&few, &c, &ZERO_LIMITS, 1);
        assert!(
            matches!(&j, Judgement::Satisfied { error_diff_upper: None, error_reason: Some(r), .. } if r.contains("29 outcomes")),
            "{j:?}"
        );
    }

    #[test]
    fn tiny_and_degenerate_inputs_wait_without_panicking() {
        let big = Cohort { decisions: 20_000, fallbacks: 0, outcomes: 2_000, failures: 0 };
        let tiny = Cohort { decisions: 99, fallbacks: 99, outcomes: 99, failures: 99 };
        assert!(
            matches!(judge(&tiny, &big, &ZERO_LIMITS, 1), Judgement::Waiting { reason } if reason.contains("canary has 99 decisions"))
        );
        assert!(
            matches!(judge(&big, &tiny, &ZERO_LIMITS, 1), Judgement::Waiting { reason } if reason.contains("control"))
        );
        let zero = Cohort::default();
        assert!(matches!(judge(&zero, &zero, &ZERO_LIMITS, 0), Judgement::Waiting { .. }));
        let inconsistent = Cohort { decisions: 200, fallbacks: 201, outcomes: 0, failures: 0 };
        assert!(
            matches!(judge(&inconsistent, &big, &ZERO_LIMITS, 1), Judgement::Waiting { reason } if reason.contains("inconsistent canary"))
        );
        let inconsistent = Cohort { decisions: 200, fallbacks: 0, outcomes: 5, failures: 6 };
        assert!(
            matches!(judge(&big, &inconsistent, &ZERO_LIMITS, 1), Judgement::Waiting { reason } if reason.contains("inconsistent control"))
        );
        for bad in [
            GuardLimits { max_fallback_rate: f64::NAN, ..ZERO_LIMITS },
            GuardLimits { max_error_rate_delta: f64::INFINITY, ..ZERO_LIMITS },
            GuardLimits { max_fallback_rate: -0.1, ..ZERO_LIMITS },
            GuardLimits { alpha: f64::NAN, ..ZERO_LIMITS },
            GuardLimits { alpha: 0.0, ..ZERO_LIMITS },
            GuardLimits { alpha: 1.0, ..ZERO_LIMITS },
        ] {
            assert!(bad.validate().is_err());
            assert!(
                matches!(judge(&big, &big, &bad, 1), Judgement::Waiting { reason } if reason.starts_with("invalid guard limits"))
            );
        }
        assert_eq!(GuardLimits::default().validate(), Ok(()));
        // Extreme counts and checks: finite bounds within [-1, 1].
        let huge = Cohort { decisions: u64::MAX, fallbacks: u64::MAX / 3, outcomes: u64::MAX, failures: 1 };
        for check in [0, 1, u64::MAX] {
            let j = judge(&huge, &big, &ZERO_LIMITS, check);
            let s = format!("{j:?}");
            assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        }
        for alpha in [f64::NAN, -1.0, 0.0, 1e-320, 0.3, 0.5, 0.9, 2.0] {
            for (a, n, b, m) in [(0, 0, 0, 0), (5, 3, 0, 0), (0, 1, 1, 1), (u64::MAX, u64::MAX, 0, 1), (1, 10, 9, 10)] {
                let (lo, hi) = interval_difference(a, n, b, m, alpha);
                assert!(lo.is_finite() && hi.is_finite(), "{a}/{n} - {b}/{m} at {alpha}: {lo} {hi}");
                assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi) && lo <= hi);
            }
        }
        assert_eq!(spent_alpha(f64::NAN, 1), 0.0);
        assert_eq!(spent_alpha(0.05, 0), spent_alpha(0.05, 1));
    }

    #[test]
    fn interval_difference_matches_newcombe_1998() {
        // Newcombe (1998), "Interval estimation for the difference between independent
        // proportions", table II, method 11 (two-sided 95 %: one-sided 0.025 per side).
        for ((a, n, b, m), (lo, hi)) in [((56, 70, 48, 80), (0.0428, 0.3422)), ((9, 10, 3, 10), (0.1013, 0.8387))] {
            let (l, h) = interval_difference(a, n, b, m, 0.025);
            assert!((l - lo).abs() < 5e-5 && (h - hi).abs() < 5e-5, "{a}/{n} - {b}/{m}: ({l:.4}, {h:.4})");
        }
        // Rare events (p ≤ 0.25) are widened by the Poisson bounds: wider than method 11's
        // (−0.2005, 0.3445) for 0/10 − 0/20 and (−0.3445, 0.3445) for 0/10 − 0/10.
        for ((a, n, b, m), (lo, hi)) in [((0, 10, 0, 20), (-0.2005, 0.3445)), ((0, 10, 0, 10), (-0.3445, 0.3445))] {
            let (l, h) = interval_difference(a, n, b, m, 0.025);
            assert!(l <= lo + 5e-5 && h >= hi - 5e-5 && l > -0.4 && h < 0.4, "{a}/{n} - {b}/{m}: ({l:.4}, {h:.4})");
        }
        // Hand-computed: 10/1000 vs 0/20000 at the first check's alpha for one metric,
        // 0.05 · 6/π² / 2 = 0.0152 (z = 2.1649): lower bound of 10/1000 = min(Wilson-cc
        // 0.004779, Poisson 0.004402) = 0.004402; upper bound of 0/20000 = max(Wilson-cc
        // 0.000282, Poisson 0.000209) = 0.000282; lower = 0.01 − √(0.005598² + 0.000282²)
        // = 0.004395.
        let (l, _) = interval_difference(10, 1_000, 0, 20_000, spent_alpha(0.05, 1) / 2.0);
        assert!((l - 0.004_395).abs() < 1e-5, "{l}");
    }

    #[test]
    fn inverse_normal_cdf_is_accurate() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.025, -1.959_963_984_540_054),
            (0.95, 1.644_853_626_951_472_2),
            (1e-6, -4.753_424_308_822_899),
            (1e-12, -7.034_483_825_301_132),
        ] {
            let got = inverse_normal_cdf(p);
            assert!((got - z).abs() <= 1e-8 * z.abs().max(1.0), "Φ⁻¹({p}) = {got}, want {z}");
        }
        assert_eq!(critical_value(0.5), 0.0);
        assert!((critical_value(spent_alpha(0.05, 1)) - 1.875_000_097).abs() < 1e-6);
        assert!(critical_value(0.0).is_finite());
    }

    #[test]
    fn judgement_serializes_with_a_state_tag() {
        assert_eq!(Metric::FallbackRate.as_str(), "fallback_rate");
        assert_eq!(Metric::ErrorRate.to_string(), "error_rate");
        let canary = Cohort { decisions: 1_000, fallbacks: 10, outcomes: 0, failures: 0 };
        let control = Cohort { decisions: 20_000, fallbacks: 0, outcomes: 0, failures: 0 };
        let worse = serde_json::to_value(judge(&canary, &control, &ZERO_LIMITS, 1)).unwrap();
        assert_eq!(worse["state"], "worse");
        assert_eq!(worse["metric"], "fallback_rate");
        let waiting = serde_json::to_value(judge(&Cohort::default(), &control, &ZERO_LIMITS, 1)).unwrap();
        assert_eq!(waiting["state"], "waiting");
        let satisfied = serde_json::to_value(judge(&control, &control, &ZERO_LIMITS, 1)).unwrap();
        assert_eq!(satisfied["state"], "satisfied");
        assert!(satisfied["error_diff_upper"].is_null());
    }
}
