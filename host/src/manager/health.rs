//! Health over the SPEC §2.5 window, and the automatic rollback.

use super::latency::LatencyHistogram;
use super::{Manager, ManagerResult, AUTO_ROLLBACK_TRIGGER};
use crate::store::{Change, ChangeRequest, HistoryEntry, LatencyRow, WindowRow};
use chrono::{DateTime, TimeDelta, Utc};
use rollout_policy::{HealthAction, HealthLevel, Processor, ProcessorWindow};
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// Job counts of one processor in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorStats {
    /// Jobs.
    pub total_jobs: u64,
    /// Successes.
    pub success_count: u64,
    /// Errors.
    pub error_count: u64,
    /// `100 × errors / jobs` (0 without jobs).
    pub error_rate: f64,
    /// Exact mean processing time (ms) over the jobs that reported one.
    pub average_processing_time_ms: Option<f64>,
    /// Median processing time (ms) over the jobs that reported one: the midpoint of the
    /// histogram bucket holding it ([`super::latency`]; exact below 32 ms, within about 3 %
    /// above); `None` without a timed job.
    pub p50_processing_time_ms: Option<f64>,
    /// 95th percentile processing time (ms), as [`ProcessorStats::p50_processing_time_ms`].
    pub p95_processing_time_ms: Option<f64>,
    /// 99th percentile processing time (ms), as [`ProcessorStats::p50_processing_time_ms`].
    pub p99_processing_time_ms: Option<f64>,
}

/// A health evaluation and what was done about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The feature.
    pub feature_name: String,
    /// `ok`, `warning` or `critical`; `None` (shown as `unknown`) when the policy gave no
    /// answer.
    #[serde(serialize_with = "level_or_unknown")]
    pub level: Option<HealthLevel>,
    /// `none` or `rollback` (`none` when the policy gave no answer).
    pub action: HealthAction,
    /// `100 × errors / jobs` in the window.
    pub error_rate: f64,
    /// Jobs in the window.
    pub total_jobs: u64,
    /// Why, in words.
    pub reason: String,
    /// Whether the policy answered.
    pub policy_answered: bool,
    /// Start of the evaluation window: the later of now − window hours and the last change
    /// of percentage, strategy or stop.
    pub window_start: DateTime<Utc>,
    /// The configured window.
    pub window_hours: u32,
    /// Per-processor counts in the window.
    pub processors: BTreeMap<String, ProcessorStats>,
    /// Whether this check rolled the rollout back.
    pub rolled_back: bool,
    /// The `rollback` history row this check wrote.
    pub rollback: Option<HistoryEntry>,
    /// Queue backlog per processor over the window (processors that reported).
    pub backlog: BTreeMap<String, super::signals::BacklogSummary>,
    /// Each processor's p95 processing time before the last change (ms), when known.
    pub baseline_p95_processing_time_ms: BTreeMap<String, f64>,
    /// The limits the signals were judged against (`metadata.health_limits` over the
    /// defaults).
    pub limits: HealthLimitsView,
    /// Whether the policy judged the signals (a component of contract 0.1.1 or later; an
    /// older one judges the error rate only).
    pub signals_judged: bool,
    /// Problems with `metadata.health_limits` (values ignored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// [`rollout_policy::HealthLimits`] for the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HealthLimitsView {
    /// Oldest backlog item older than this (s) → warning.
    pub backlog_warning_age_seconds: Option<f64>,
    /// Oldest backlog item older than this (s) → critical.
    pub backlog_critical_age_seconds: Option<f64>,
    /// Backlog deeper than this → critical.
    pub backlog_critical_depth: Option<u64>,
    /// p95 above this (ms) → warning.
    pub p95_limit_ms: Option<f64>,
    /// p95 above this many times its baseline → warning.
    pub p95_baseline_factor: Option<f64>,
}

impl From<rollout_policy::HealthLimits> for HealthLimitsView {
    fn from(l: rollout_policy::HealthLimits) -> Self {
        HealthLimitsView {
            backlog_warning_age_seconds: l.backlog_warning_age_seconds,
            backlog_critical_age_seconds: l.backlog_critical_age_seconds,
            backlog_critical_depth: l.backlog_critical_depth,
            p95_limit_ms: l.p95_limit_ms,
            p95_baseline_factor: l.p95_baseline_factor,
        }
    }
}

impl HealthReport {
    /// Whether the level calls for attention (`warning` or `critical`).
    pub fn is_unhealthy(&self) -> bool {
        matches!(self.level, Some(HealthLevel::Warning | HealthLevel::Critical))
    }
}

fn level_or_unknown<S: Serializer>(level: &Option<HealthLevel>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(level.map_or("unknown", HealthLevel::as_str))
}

/// `100 × part / total`, 0 when `total` is 0.
pub(crate) fn rate(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * part as f64 / total as f64
    }
}

/// Per-processor counts (every processor present) from metric rows, with percentiles from
/// the processing-time bucket rows of the same window.
pub(crate) fn processor_stats(windows: &[WindowRow], latency: &[LatencyRow]) -> BTreeMap<String, ProcessorStats> {
    let mut out = BTreeMap::new();
    for p in Processor::ALL {
        let histogram = LatencyHistogram::from_rows(latency.iter().filter(|r| r.processor == *p));
        let (mut ok, mut err, mut total, mut tsum, mut tcnt) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for w in windows.iter().filter(|w| w.processor == *p) {
            ok = ok.saturating_add(w.success_count);
            err = err.saturating_add(w.error_count);
            total = total.saturating_add(w.total_jobs);
            tsum = tsum.saturating_add(w.total_processing_time_ms);
            tcnt = tcnt.saturating_add(w.timed_jobs);
        }
        out.insert(
            p.as_str().to_owned(),
            ProcessorStats {
                total_jobs: total,
                success_count: ok,
                error_count: err,
                error_rate: rate(err, total),
                average_processing_time_ms: (tcnt > 0).then(|| tsum as f64 / tcnt as f64),
                p50_processing_time_ms: histogram.quantile(0.50),
                p95_processing_time_ms: histogram.quantile(0.95),
                p99_processing_time_ms: histogram.quantile(0.99),
            },
        );
    }
    out
}

impl Manager {
    /// Health over the SPEC §2.5 window, with nothing done about it (re-reads the
    /// configuration first).
    pub async fn check_health(&self) -> ManagerResult<HealthReport> {
        self.reload_config().await?;
        self.evaluate().await
    }

    async fn evaluate(&self) -> ManagerResult<HealthReport> {
        let state = self.state.load_full();
        let config = state.snapshot.config();
        let now = Utc::now();
        let hours = i64::from(config.monitoring_window_hours.max(1));
        let since = now - TimeDelta::hours(hours);
        let changed = state.stored.state_changed_at;
        let rows = self.store.metrics_window(state.stored.id, since, changed).await?;
        let latency = self.store.latency_window(state.stored.id, since, changed).await?;
        let processors = processor_stats(&rows, &latency);
        let windows: Vec<ProcessorWindow> = Processor::ALL
            .iter()
            .filter_map(|p| {
                let s = processors.get(p.as_str())?;
                (s.total_jobs > 0).then_some(ProcessorWindow {
                    processor: *p,
                    success_count: s.success_count,
                    error_count: s.error_count,
                    total_jobs: s.total_jobs,
                    average_processing_time: s.average_processing_time_ms,
                })
            })
            .collect();
        let total_jobs = windows.iter().fold(0u64, |a, w| a.saturating_add(w.total_jobs));
        let errors = windows.iter().fold(0u64, |a, w| a.saturating_add(w.error_count));
        let window_start = since.max(changed);
        let reports = self.store.backlog_window(state.stored.id, window_start).await?;
        let baseline = self.baseline_p95(state.stored.id, changed, config.monitoring_window_hours).await?;
        let (limits, notes) = super::signals::limits_from_metadata(&state.stored.metadata);
        let p95: BTreeMap<String, Option<f64>> =
            processors.iter().map(|(k, v)| (k.clone(), v.p95_processing_time_ms)).collect();
        let signals = super::signals::processor_signals(&reports, &p95, &baseline);
        let health = self.policy.evaluate_health_signals(config, &windows, &signals, &limits).ok();
        let signals_judged = self.policy.judges_signals();
        Ok(HealthReport {
            feature_name: self.feature.clone(),
            level: health.as_ref().map(|h| h.level),
            action: health.as_ref().map_or(HealthAction::None, |h| h.action),
            error_rate: health.as_ref().map_or(rate(errors, total_jobs), |h| h.error_rate),
            total_jobs: health.as_ref().map_or(total_jobs, |h| h.total_jobs),
            reason: health
                .as_ref()
                .map_or("the policy gave no answer; no action taken".to_owned(), |h| h.reason.clone()),
            policy_answered: health.is_some(),
            window_start,
            window_hours: config.monitoring_window_hours,
            processors,
            rolled_back: false,
            rollback: None,
            backlog: super::signals::backlog_summaries(&reports),
            baseline_p95_processing_time_ms: baseline.iter().map(|(p, v)| (p.as_str().to_owned(), *v)).collect(),
            limits: limits.into(),
            signals_judged,
            notes,
        })
    }

    /// The baseline p95 per processor before the change at `changed`, read once per change.
    async fn baseline_p95(
        &self,
        config_id: uuid::Uuid,
        changed: DateTime<Utc>,
        hours: u32,
    ) -> ManagerResult<std::collections::HashMap<Processor, f64>> {
        let key = (config_id, changed, hours);
        if let Ok(cache) = self.baseline.lock() {
            if let Some((k, v)) = cache.as_ref() {
                if *k == key {
                    return Ok(v.clone());
                }
            }
        }
        let fresh = super::signals::baseline_p95(&self.store, config_id, changed, hours).await?;
        if let Ok(mut cache) = self.baseline.lock() {
            *cache = Some((key, fresh.clone()));
        }
        Ok(fresh)
    }

    /// Evaluate health and, when the policy says `rollback`, set the percentage to 0 with a
    /// `rollback` history row (triggered by [`AUTO_ROLLBACK_TRIGGER`]) — only if the rollout
    /// is still the one judged (compare-and-set on the window's start: a ramp committed
    /// meanwhile is not rolled back on errors from before it), above 0 % and not stopped, so
    /// concurrent checks roll back once (SPEC §2.5).
    pub async fn check_and_trigger_auto_rollback(&self) -> ManagerResult<HealthReport> {
        self.reload_config().await?;
        // the window judged: read before the evaluation, so a change in between makes the
        // compare-and-set fail rather than roll back a change that was never judged
        let (judged_since, judged_percentage) = {
            let state = self.state.load();
            (state.stored.state_changed_at, state.snapshot.config().rollout_percentage)
        };
        let mut report = self.evaluate().await?;
        if report.action == HealthAction::Rollback {
            let mut request = ChangeRequest::new(
                Change::Rollback { judged_since, judged_percentage },
                Some(report.reason.clone()),
                AUTO_ROLLBACK_TRIGGER,
            );
            request.details = Some(serde_json::json!({
                "health": {
                    "level": report.level.map_or("unknown", HealthLevel::as_str),
                    "error_rate": report.error_rate,
                    "total_jobs": report.total_jobs,
                    "window_start": report.window_start,
                }
            }));
            let outcome = self.change(&request).await?;
            report.rolled_back = outcome.applied;
            report.rollback = outcome.history;
        }
        Ok(report)
    }
}
