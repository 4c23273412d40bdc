//! What the host gathers for the policy's `monitoring` call (contract 0.1.1): queue backlog
//! reports and processing-time percentiles per processor, and the operator's limits. The
//! host only gathers; the policy judges ([`rollout_policy::evaluate_health_signals`]).
//!
//! - **backlog**: the reports of the evaluation window, oldest first (their depths) and the
//!   last one's oldest-item age;
//! - **p95**: from the processing-time histograms of the window;
//! - **baseline p95**: from the histograms of the same length of time just before the last
//!   change of percentage, strategy or stop (the buckets from `changed − window` on, minus
//!   those from `changed` on — no histogram row straddles a change, each window starts at
//!   it); read once per change and kept;
//! - **limits**: the feature's `metadata.health_limits` object, over [`default_limits`].

use super::latency::LatencyHistogram;
use crate::store::{BacklogReport, LatencyRow, Store, StoreResult};
use chrono::{DateTime, TimeDelta, Utc};
use rollout_policy::{HealthLimits, Processor, ProcessorSignals};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// The limits in force when `metadata.health_limits` leaves one out: a backlog item older
/// than 15 minutes and a p95 above twice its baseline are warnings; no critical limit and
/// no absolute p95 limit (they depend on the workload: set them per feature).
pub fn default_limits() -> HealthLimits {
    HealthLimits {
        backlog_warning_age_seconds: Some(900.0),
        backlog_critical_age_seconds: None,
        backlog_critical_depth: None,
        p95_limit_ms: None,
        p95_baseline_factor: Some(2.0),
    }
}

/// The limits of a feature's metadata: `health_limits` fields override [`default_limits`]
/// (`null` turns a rule off); a value that is not a non-negative number is ignored and
/// named in the returned notes.
pub fn limits_from_metadata(metadata: &serde_json::Value) -> (HealthLimits, Vec<String>) {
    let mut limits = default_limits();
    let mut notes = Vec::new();
    let Some(object) = metadata.get("health_limits") else { return (limits, notes) };
    let Some(object) = object.as_object() else {
        notes.push("metadata.health_limits is not an object: ignored".to_owned());
        return (limits, notes);
    };
    let mut number = |key: &str, slot: &mut Option<f64>| match object.get(key) {
        None => {}
        Some(serde_json::Value::Null) => *slot = None,
        Some(v) => match v.as_f64().filter(|x| x.is_finite() && *x >= 0.0) {
            Some(x) => *slot = Some(x),
            None => notes.push(format!("metadata.health_limits.{key} = {v} is not a non-negative number: ignored")),
        },
    };
    number("backlog_warning_age_seconds", &mut limits.backlog_warning_age_seconds);
    number("backlog_critical_age_seconds", &mut limits.backlog_critical_age_seconds);
    number("p95_limit_ms", &mut limits.p95_limit_ms);
    number("p95_baseline_factor", &mut limits.p95_baseline_factor);
    let mut depth = limits.backlog_critical_depth.map(|d| d as f64);
    number("backlog_critical_depth", &mut depth);
    limits.backlog_critical_depth = depth.map(|d| d as u64);
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "backlog_warning_age_seconds"
                | "backlog_critical_age_seconds"
                | "backlog_critical_depth"
                | "p95_limit_ms"
                | "p95_baseline_factor"
        ) {
            notes.push(format!(
                "metadata.health_limits.{key} is not a limit: ignored (allowed: backlog_warning_age_seconds, \
                 backlog_critical_age_seconds, backlog_critical_depth, p95_limit_ms, p95_baseline_factor)"
            ));
        }
    }
    (limits, notes)
}

/// A processor's backlog over the window, as shown in the health report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacklogSummary {
    /// Reports in the window.
    pub reports: usize,
    /// Depth at the last report.
    pub depth: u64,
    /// Age (s) of the oldest waiting item at the last report.
    pub oldest_age_seconds: f64,
    /// Whether the depth grew across the window ([`rollout_policy::backlog_growing`]).
    pub growing: bool,
}

/// The backlog summaries of `reports` (oldest first), per processor name.
pub fn backlog_summaries(reports: &[BacklogReport]) -> BTreeMap<String, BacklogSummary> {
    let mut out = BTreeMap::new();
    for p in Processor::ALL {
        let depths: Vec<u64> = reports.iter().filter(|r| r.processor == *p).map(|r| r.depth).collect();
        let Some(last) = reports.iter().rev().find(|r| r.processor == *p) else { continue };
        out.insert(
            p.as_str().to_owned(),
            BacklogSummary {
                reports: depths.len(),
                depth: last.depth,
                oldest_age_seconds: last.oldest_age_seconds,
                growing: rollout_policy::backlog_growing(&depths),
            },
        );
    }
    out
}

/// The signals of every processor with anything to say.
pub fn processor_signals(
    reports: &[BacklogReport],
    p95: &BTreeMap<String, Option<f64>>,
    baseline: &HashMap<Processor, f64>,
) -> Vec<ProcessorSignals> {
    Processor::ALL
        .iter()
        .map(|p| ProcessorSignals {
            processor: *p,
            backlog_depths: reports.iter().filter(|r| r.processor == *p).map(|r| r.depth).collect(),
            backlog_oldest_age_seconds: reports.iter().rev().find(|r| r.processor == *p).map(|r| r.oldest_age_seconds),
            p95_processing_time_ms: p95.get(p.as_str()).copied().flatten(),
            baseline_p95_processing_time_ms: baseline.get(p).copied(),
        })
        .filter(|s| {
            !s.backlog_depths.is_empty()
                || s.p95_processing_time_ms.is_some()
                || s.baseline_p95_processing_time_ms.is_some()
        })
        .collect()
}

/// The p95 per processor over the `hours` before `changed` (see the module documentation).
pub async fn baseline_p95(
    store: &Store,
    config_id: Uuid,
    changed: DateTime<Utc>,
    hours: u32,
) -> StoreResult<HashMap<Processor, f64>> {
    let from = changed - TimeDelta::hours(i64::from(hours.max(1)));
    let since_from = store.latency_window(config_id, from, from).await?;
    let since_changed = store.latency_window(config_id, changed, changed).await?;
    let mut counts: HashMap<(Processor, u16), u64> = HashMap::new();
    for r in &since_from {
        *counts.entry((r.processor, r.bucket)).or_default() += r.count;
    }
    for r in &since_changed {
        if let Some(c) = counts.get_mut(&(r.processor, r.bucket)) {
            *c = c.saturating_sub(r.count);
        }
    }
    let rows: Vec<LatencyRow> = counts
        .into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|((processor, bucket), count)| LatencyRow { processor, bucket, count })
        .collect();
    let mut out = HashMap::new();
    for p in Processor::ALL {
        if let Some(v) = LatencyHistogram::from_rows(rows.iter().filter(|r| r.processor == *p)).quantile(0.95) {
            out.insert(*p, v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_metadata_over_the_defaults() {
        let (l, notes) = limits_from_metadata(&serde_json::json!({}));
        assert_eq!(l, default_limits());
        assert!(notes.is_empty());
        let (l, notes) = limits_from_metadata(&serde_json::json!({"health_limits": {
            "backlog_critical_depth": 5000, "p95_limit_ms": 2500.5, "p95_baseline_factor": null,
            "backlog_warning_age_seconds": -1, "colour": "red"
        }}));
        assert_eq!(l.backlog_critical_depth, Some(5000));
        assert_eq!(l.p95_limit_ms, Some(2500.5));
        assert_eq!(l.p95_baseline_factor, None, "null turns the rule off");
        assert_eq!(l.backlog_warning_age_seconds, Some(900.0), "a negative value is ignored");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("backlog_warning_age_seconds = -1"), "{notes:?}");
        assert!(notes[1].contains("colour is not a limit"), "{notes:?}");
    }

    #[test]
    fn summaries_and_signals_per_processor() {
        let at = |s: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0).unwrap_or_default();
        let r = |p, depth, s| BacklogReport { processor: p, depth, oldest_age_seconds: s as f64, reported_at: at(s) };
        let reports = vec![
            r(Processor::Inngest, 5, 0),
            r(Processor::GithubActions, 1, 1),
            r(Processor::Inngest, 9, 2),
            r(Processor::Inngest, 12, 3),
        ];
        let s = backlog_summaries(&reports);
        assert_eq!(s["inngest"], BacklogSummary { reports: 3, depth: 12, oldest_age_seconds: 3.0, growing: true });
        assert!(!s["github_actions"].growing);
        let p95 = BTreeMap::from([("inngest".to_owned(), Some(40.0)), ("github_actions".to_owned(), None)]);
        let signals = processor_signals(&reports, &p95, &HashMap::from([(Processor::Inngest, 20.0)]));
        assert_eq!(signals.len(), 2);
        assert_eq!(signals[0].backlog_depths, vec![5, 9, 12]);
        assert_eq!(signals[0].baseline_p95_processing_time_ms, Some(20.0));
        assert_eq!(signals[1].backlog_oldest_age_seconds, Some(1.0));
    }
}
