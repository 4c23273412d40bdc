//! The statistics of a rollout (SPEC §3): [`RolloutStats`], and the pieces that are plain
//! computation: error kinds, the hourly error-rate trend and its direction, and the cost
//! estimate.

use super::health::{processor_stats, rate, ProcessorStats};
use super::Participation;
use super::{Manager, ManagerResult};
use crate::engine::PolicyVersion;
use chrono::{DateTime, TimeDelta, Utc};

use serde::Serialize;
use std::collections::BTreeMap;

/// What kind of failure an error message describes (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Rate limits and quotas.
    RateLimit,
    /// Timeouts, resets, unreachable hosts, gateway errors.
    Network,
    /// Missing or refused credentials.
    Auth,
    /// Missing resources.
    NotFound,
    /// Database failures.
    Database,
    /// Bad input.
    Validation,
    /// Anything else (and errors without a message).
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::RateLimit,
        ErrorKind::Network,
        ErrorKind::Auth,
        ErrorKind::NotFound,
        ErrorKind::Database,
        ErrorKind::Validation,
        ErrorKind::Other,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimit => "rate_limit",
            ErrorKind::Network => "network",
            ErrorKind::Auth => "auth",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Database => "database",
            ErrorKind::Validation => "validation",
            ErrorKind::Other => "other",
        }
    }
}

/// Classify an error message by keywords (case-insensitive; the first matching kind in the
/// order rate_limit, auth, not_found, database, network, validation wins).
pub fn classify_error(message: Option<&str>) -> ErrorKind {
    let Some(message) = message else { return ErrorKind::Other };
    let m = message.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if has(&["rate limit", "rate-limit", "ratelimit", "too many requests", "429", "quota exceeded", "throttl"]) {
        ErrorKind::RateLimit
    } else if has(&[
        "unauthorized",
        "unauthorised",
        "authentication",
        "bad credentials",
        "forbidden",
        "permission denied",
        "invalid token",
        "token expired",
        "401",
        "403",
    ]) {
        ErrorKind::Auth
    } else if has(&["not found", "404", "no such", "does not exist"]) {
        ErrorKind::NotFound
    } else if has(&["database", "postgres", "sqlite", "sql", "deadlock", "constraint", "duplicate key"]) {
        ErrorKind::Database
    } else if has(&[
        "timeout",
        "timed out",
        "network",
        "econnreset",
        "econnrefused",
        "connection",
        "socket",
        "dns",
        "unreachable",
        "502",
        "503",
        "504",
        "fetch failed",
    ]) {
        ErrorKind::Network
    } else if has(&["invalid", "validation", "malformed", "required", "422", "400", "parse"]) {
        ErrorKind::Validation
    } else {
        ErrorKind::Other
    }
}

/// Errors summed per kind, every kind present.
pub fn errors_by_kind(messages: &[(Option<String>, u64)]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = ErrorKind::ALL.iter().map(|k| (k.as_str().to_owned(), 0)).collect();
    for (message, count) in messages {
        *out.entry(classify_error(message.as_deref()).as_str().to_owned()).or_default() += count;
    }
    out
}

/// One hour of the trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// Start of the hour (UTC).
    pub hour: DateTime<Utc>,
    /// Jobs.
    pub jobs: u64,
    /// Errors.
    pub errors: u64,
    /// `100 × errors / jobs`.
    pub error_rate: f64,
}

/// Where the error rate is heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendDirection {
    /// The later half's rate is more than 5 % (relative) above the earlier half's.
    Up,
    /// More than 5 % below.
    Down,
    /// Within ±5 %, or too few hours to tell.
    Flat,
}

/// The hourly error-rate trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorTrend {
    /// Hours with jobs, oldest first.
    pub points: Vec<TrendPoint>,
    /// The direction.
    pub direction: TrendDirection,
}

/// Relative change beyond which a trend is not flat.
const FLAT_BAND: f64 = 0.05;

/// The direction of `points` (hours with jobs, oldest first): the error rate of the later
/// half of the hours against the earlier half (the middle hour of an odd count left out).
pub fn trend_direction(points: &[TrendPoint]) -> TrendDirection {
    let points: Vec<&TrendPoint> = points.iter().filter(|p| p.jobs > 0).collect();
    let half = points.len() / 2;
    if half == 0 {
        return TrendDirection::Flat;
    }
    let rate = |ps: &[&TrendPoint]| {
        let jobs: u64 = ps.iter().map(|p| p.jobs).sum();
        let errors: u64 = ps.iter().map(|p| p.errors).sum();
        if jobs == 0 {
            0.0
        } else {
            errors as f64 / jobs as f64
        }
    };
    let early = rate(points.get(..half).unwrap_or(&[]));
    let late = rate(points.get(points.len() - half..).unwrap_or(&[]));
    if early == 0.0 {
        return if late == 0.0 { TrendDirection::Flat } else { TrendDirection::Up };
    }
    let change = (late - early) / early;
    if change > FLAT_BAND {
        TrendDirection::Up
    } else if change < -FLAT_BAND {
        TrendDirection::Down
    } else {
        TrendDirection::Flat
    }
}

/// Cost of the window's jobs from `metadata.cost_per_job`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostEstimate {
    /// Cost of one job per processor (a processor without a price costs 0).
    pub cost_per_job: BTreeMap<String, f64>,
    /// What the window's jobs cost where they ran.
    pub window_cost: f64,
    /// What they would have cost all on inngest.
    pub all_inngest_cost: f64,
    /// `all_inngest_cost − window_cost`.
    pub savings: f64,
    /// Savings as a percentage of `all_inngest_cost` (`None` when that is 0).
    pub savings_percent: Option<f64>,
}

/// The estimate for `jobs_per_processor`; `None` when `metadata` has no `cost_per_job`
/// object with at least one number.
pub fn cost_estimate(metadata: &serde_json::Value, jobs_per_processor: &BTreeMap<String, u64>) -> Option<CostEstimate> {
    let costs = metadata.get("cost_per_job")?.as_object()?;
    let cost_per_job: BTreeMap<String, f64> =
        costs.iter().filter_map(|(k, v)| v.as_f64().filter(|c| c.is_finite()).map(|c| (k.clone(), c))).collect();
    if cost_per_job.is_empty() {
        return None;
    }
    let price = |p: &str| cost_per_job.get(p).copied().unwrap_or(0.0);
    let window_cost: f64 = jobs_per_processor.iter().map(|(p, n)| price(p) * *n as f64).sum();
    let total: u64 = jobs_per_processor.values().sum();
    let all_inngest_cost = price("inngest") * total as f64;
    let savings = all_inngest_cost - window_cost;
    let savings_percent = (all_inngest_cost > 0.0).then(|| 100.0 * savings / all_inngest_cost);
    Some(CostEstimate { cost_per_job, window_cost, all_inngest_cost, savings, savings_percent })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind() {
        for (msg, kind) in [
            ("API rate limit exceeded", ErrorKind::RateLimit),
            ("HTTP 429 Too Many Requests", ErrorKind::RateLimit),
            ("ETIMEDOUT: request timed out", ErrorKind::Network),
            ("ECONNRESET", ErrorKind::Network),
            ("Bad credentials (401)", ErrorKind::Auth),
            ("403 Forbidden", ErrorKind::Auth),
            ("Repository not found", ErrorKind::NotFound),
            ("duplicate key value violates unique constraint", ErrorKind::Database),
            ("invalid input: pr_numbers required", ErrorKind::Validation),
            ("something odd", ErrorKind::Other),
        ] {
            assert_eq!(classify_error(Some(msg)), kind, "{msg}");
        }
        assert_eq!(classify_error(None), ErrorKind::Other);
    }

    #[test]
    fn errors_by_kind_lists_every_kind() {
        let m = errors_by_kind(&[(Some("timeout".into()), 3), (None, 2), (Some("429".into()), 1)]);
        assert_eq!(m.len(), 7);
        assert_eq!((m["network"], m["other"], m["rate_limit"], m["auth"]), (3, 2, 1, 0));
    }

    fn point(h: i64, jobs: u64, errors: u64) -> TrendPoint {
        TrendPoint {
            hour: DateTime::<Utc>::from_timestamp(h * 3600, 0).unwrap(),
            jobs,
            errors,
            error_rate: 100.0 * errors as f64 / jobs as f64,
        }
    }

    #[test]
    fn direction_compares_halves_with_a_five_percent_band() {
        assert_eq!(trend_direction(&[point(0, 100, 1), point(1, 100, 5)]), TrendDirection::Up);
        assert_eq!(trend_direction(&[point(0, 100, 10), point(1, 100, 2)]), TrendDirection::Down);
        assert_eq!(trend_direction(&[point(0, 1000, 100), point(1, 1000, 104)]), TrendDirection::Flat);
        assert_eq!(trend_direction(&[point(0, 1000, 100), point(1, 1000, 106)]), TrendDirection::Up);
        assert_eq!(trend_direction(&[point(0, 100, 0), point(1, 100, 0)]), TrendDirection::Flat);
        assert_eq!(trend_direction(&[point(0, 100, 0), point(1, 100, 1)]), TrendDirection::Up);
        assert_eq!(trend_direction(&[point(0, 100, 50)]), TrendDirection::Flat);
        // the middle hour of three is left out
        assert_eq!(trend_direction(&[point(0, 100, 5), point(1, 100, 90), point(2, 100, 5)]), TrendDirection::Flat);
    }

    #[test]
    fn cost_needs_configured_prices() {
        let jobs = BTreeMap::from([("inngest".to_owned(), 100u64), ("github_actions".to_owned(), 300u64)]);
        assert_eq!(cost_estimate(&serde_json::json!({}), &jobs), None);
        assert_eq!(cost_estimate(&serde_json::json!({"cost_per_job": {}}), &jobs), None);
        let meta = serde_json::json!({"cost_per_job": {"inngest": 0.0004, "github_actions": 0.0001}});
        let c = cost_estimate(&meta, &jobs).unwrap();
        assert!((c.window_cost - (100.0 * 0.0004 + 300.0 * 0.0001)).abs() < 1e-12);
        assert!((c.all_inngest_cost - 400.0 * 0.0004).abs() < 1e-12);
        assert!((c.savings - (0.16 - 0.07)).abs() < 1e-12);
        assert!((c.savings_percent.unwrap() - 56.25).abs() < 1e-9);
    }
}

/// The statistics of a rollout (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutStats {
    /// The feature.
    pub feature_name: String,
    /// When computed.
    pub generated_at: DateTime<Utc>,
    /// The policy that counted eligibility.
    pub policy_version: Option<PolicyVersion>,
    /// The configuration snapshot used (the one routing uses).
    pub config_version: u64,
    /// Effective percentage.
    pub rollout_percentage: u8,
    /// Effective strategy.
    pub rollout_strategy: String,
    /// Effective stop.
    pub emergency_stop: bool,
    /// Whether active.
    pub is_active: bool,
    /// Known repositories (`repositories` ∪ categorised).
    pub total_repositories: u64,
    /// Categorised repositories.
    pub categorized_repositories: u64,
    /// Known repositories the policy finds eligible.
    pub eligible_repositories: u64,
    /// Categorised repositories the policy finds eligible.
    pub eligible_categorized_repositories: u64,
    /// `100 × eligible categorised ÷ categorised` (0 when none is categorised).
    pub participation_rate: f64,
    /// Categorised repositories per category (every category present).
    pub categories: BTreeMap<String, u64>,
    /// When the participation figures (repositories, eligible, participation rate,
    /// categories) were counted; `null` when they have not been yet (all zero).
    pub participation_computed_at: Option<DateTime<Utc>>,
    /// Whether they describe the configuration, categories and policy in force now (false:
    /// a recount is under way; a server recounts in the background).
    pub participation_current: bool,
    /// The stats window in hours (`monitoring_window_hours`).
    pub window_hours: u32,
    /// Start of the stats window (now − window hours, hour buckets overlapping it counted).
    pub window_start: DateTime<Utc>,
    /// Jobs in the window.
    pub total_jobs: u64,
    /// Successes in the window.
    pub success_count: u64,
    /// Errors in the window.
    pub error_count: u64,
    /// `100 × errors / jobs`.
    pub error_rate: f64,
    /// `100 × successes / jobs`.
    pub success_rate: f64,
    /// Jobs per processor (every processor present).
    pub processor_distribution: BTreeMap<String, u64>,
    /// Counts, error rate, mean time and p50/p95/p99 processing time per processor (every
    /// processor present).
    pub processors: BTreeMap<String, ProcessorStats>,
    /// Errors grouped by the kind of each bucket's `last_error_message` (every kind present).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Hourly error rate and its direction.
    pub error_trend: ErrorTrend,
    /// Cost estimate; absent when `metadata.cost_per_job` is not configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostEstimate>,
    /// Outcomes in the window that named their decision (`decision_id`) and whose decision
    /// is in the decision log, per (policy sha256, configuration version) that decided,
    /// newest configuration first: how each policy version and configuration performed.
    pub outcomes_by_decision: Vec<crate::store::DecisionVersionOutcomes>,
}

impl Manager {
    /// The statistics of the rollout over the monitoring window, participation counted now.
    pub async fn get_rollout_stats(&self) -> ManagerResult<RolloutStats> {
        let participation = self.compute_participation().await?;
        self.rollout_stats_with(&participation).await
    }

    /// The statistics of the rollout over the monitoring window with `participation`
    /// counted earlier (a server keeps it cached and recounts it in the background; the
    /// statistics say when it was counted and whether it is current).
    pub async fn rollout_stats_with(&self, participation: &Participation) -> ManagerResult<RolloutStats> {
        let state = self.state.load_full();
        let config = state.snapshot.config();
        let now = Utc::now();
        let hours = config.monitoring_window_hours.max(1);
        let since = now - TimeDelta::hours(i64::from(hours));

        let rows = self.store.metrics_window(state.stored.id, since, DateTime::<Utc>::UNIX_EPOCH).await?;
        let latency = self.store.latency_window(state.stored.id, since, DateTime::<Utc>::UNIX_EPOCH).await?;
        let processors = processor_stats(&rows, &latency);
        let total_jobs: u64 = processors.values().map(|p| p.total_jobs).sum();
        let success_count: u64 = processors.values().map(|p| p.success_count).sum();
        let error_count: u64 = processors.values().map(|p| p.error_count).sum();
        let distribution: BTreeMap<String, u64> = processors.iter().map(|(k, v)| (k.clone(), v.total_jobs)).collect();

        let mut hourly: BTreeMap<DateTime<Utc>, (u64, u64)> = BTreeMap::new();
        for r in &rows {
            let e = hourly.entry(crate::store::hour_start(r.window_start)).or_default();
            e.0 += r.total_jobs;
            e.1 += r.error_count;
        }
        let points: Vec<TrendPoint> = hourly
            .into_iter()
            .filter(|(_, (jobs, _))| *jobs > 0)
            .map(|(hour, (jobs, errors))| TrendPoint { hour, jobs, errors, error_rate: rate(errors, jobs) })
            .collect();
        let direction = trend_direction(&points);
        let messages = self.store.error_messages(state.stored.id, since, DateTime::<Utc>::UNIX_EPOCH).await?;
        let outcomes_by_decision = self.store.outcomes_by_decision_version(&self.feature, since).await?;

        Ok(RolloutStats {
            feature_name: self.feature.clone(),
            generated_at: now,
            policy_version: self.policy.version(),
            config_version: state.snapshot.version(),
            rollout_percentage: config.rollout_percentage,
            rollout_strategy: config.rollout_strategy.as_str().to_owned(),
            emergency_stop: config.emergency_stop,
            is_active: config.is_active,
            total_repositories: participation.total_repositories,
            categorized_repositories: participation.categorized_repositories,
            eligible_repositories: participation.eligible_repositories,
            eligible_categorized_repositories: participation.eligible_categorized_repositories,
            participation_rate: rate(
                participation.eligible_categorized_repositories,
                participation.categorized_repositories,
            ),
            categories: participation.categories.clone(),
            participation_computed_at: (participation.computed_at > DateTime::<Utc>::UNIX_EPOCH)
                .then_some(participation.computed_at),
            participation_current: participation.is_current(self),
            window_hours: hours,
            window_start: since,
            total_jobs,
            success_count,
            error_count,
            error_rate: rate(error_count, total_jobs),
            success_rate: rate(success_count, total_jobs),
            cost: cost_estimate(&state.stored.metadata, &distribution),
            processor_distribution: distribution,
            processors,
            errors_by_kind: errors_by_kind(&messages),
            outcomes_by_decision,
            error_trend: ErrorTrend { points, direction },
        })
    }
}
