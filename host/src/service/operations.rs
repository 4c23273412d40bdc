//! Operator operations: every change an operator (or a script) makes to a rollout, and the
//! health check, written once for the HTTP API and the CLI.
//!
//! The rules both edges share, because they live here and nowhere else:
//! - an operation needs the database; while it is unreachable the answer is "unavailable";
//! - the emergency stop and resume need a reason;
//! - list edits take 1 to `max_batch` ids (UUIDs or `owner/name`, resolved through
//!   `repositories`, deduplicated);
//! - a change that changes nothing (a repeated stop, a percentage set to its value) writes
//!   no history row and answers `applied: false`;
//! - when an environment override hides what the database now holds, the answer says so
//!   ([`OperationOutcome::overridden_by_environment`]).

use super::{Feature, Service, ServiceError, ServiceResult};
use crate::input::values::{Actor, Percentage, Reason, RepositoryRef};
use crate::manager::{EffectiveConfig, HealthReport};
use crate::store::{Change, ChangeOutcome, ChangeRequest, HistoryEntry};
use rollout_policy::Processor;
use serde::Serialize;
use std::sync::Arc;

/// A change an operator makes to a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Set the percentage (history `updated`).
    SetPercentage(Percentage),
    /// Switch the emergency stop on (history `emergency_stop`; the percentage is kept).
    EmergencyStop,
    /// Switch the emergency stop off (history `resume`).
    Resume,
    /// Switch auto-rollback on or off (history `updated`).
    SetAutoRollback(bool),
    /// Add repositories to the whitelist (history `whitelist_add`).
    WhitelistAdd(Vec<RepositoryRef>),
    /// Remove repositories from the whitelist (history `whitelist_remove`).
    WhitelistRemove(Vec<RepositoryRef>),
    /// Exclude repositories (history `exclude_add`).
    ExcludeAdd(Vec<RepositoryRef>),
    /// Lift exclusions (history `exclude_remove`).
    ExcludeRemove(Vec<RepositoryRef>),
    /// Set the decision log's settings (`metadata.decision_log`; history `updated`): the
    /// sample rate (0 to 1) and whether repository ids are masked; `None` keeps a setting.
    SetDecisionLog {
        /// The share of decisions logged.
        sample_rate: Option<f64>,
        /// Whether repository ids are masked.
        mask_repository_id: Option<bool>,
    },
}

impl Operation {
    /// Whether the operation must say why.
    pub fn needs_reason(&self) -> bool {
        matches!(self, Operation::EmergencyStop | Operation::Resume)
    }

    fn ids(&self) -> Option<&[RepositoryRef]> {
        match self {
            Operation::WhitelistAdd(ids)
            | Operation::WhitelistRemove(ids)
            | Operation::ExcludeAdd(ids)
            | Operation::ExcludeRemove(ids) => Some(ids),
            _ => None,
        }
    }
}

/// What an operation did.
#[derive(Debug, Clone, Serialize)]
pub struct OperationOutcome {
    /// Whether the configuration changed (a change that changes nothing writes nothing).
    pub applied: bool,
    /// The configuration in force now, environment overrides marked.
    pub config: EffectiveConfig,
    /// The history row written.
    pub history: Option<HistoryEntry>,
    /// Fields the database now holds but an environment override hides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overridden_by_environment: Vec<&'static str>,
}

impl OperationOutcome {
    fn new(outcome: &ChangeOutcome, feature: &Feature) -> OperationOutcome {
        let config = feature.manager.effective_config();
        let changed: Vec<String> = outcome
            .history
            .as_ref()
            .and_then(|h| h.metadata.get("new"))
            .and_then(|n| n.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let overridden_by_environment =
            config.env_overrides.iter().filter(|o| changed.iter().any(|c| c == o.field)).map(|o| o.field).collect();
        OperationOutcome {
            applied: outcome.applied,
            config,
            history: outcome.history.clone(),
            overridden_by_environment,
        }
    }
}

impl Service {
    /// Apply `operation` to `feature`, audited with `reason` and `actor`.
    pub async fn apply(
        &self,
        feature: &str,
        operation: Operation,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<OperationOutcome> {
        self.inner.db.require()?;
        let feature = self.feature(feature).await?;
        if operation.needs_reason() && reason.is_none() {
            return Err(ServiceError::invalid("reason", "`reason` is required: say why, in words"));
        }
        let change = match operation.ids() {
            Some(ids) => {
                let max = self.inner.options.max_batch;
                if ids.is_empty() || ids.len() > max {
                    return Err(ServiceError::invalid(
                        "repository_ids",
                        format!("{} repository ids given: allowed 1 to {max} UUIDs or owner/name", ids.len()),
                    ));
                }
                let texts: Vec<String> = ids.iter().map(|r| r.as_str().to_owned()).collect();
                let uuids = self.observed(self.inner.store.resolve_repository_ids(&texts)).await?;
                match operation {
                    Operation::WhitelistAdd(_) => Change::WhitelistAdd(uuids),
                    Operation::WhitelistRemove(_) => Change::WhitelistRemove(uuids),
                    Operation::ExcludeAdd(_) => Change::ExcludeAdd(uuids),
                    _ => Change::ExcludeRemove(uuids),
                }
            }
            None => match operation {
                Operation::SetPercentage(p) => Change::SetPercentage(p.get()),
                Operation::EmergencyStop => Change::EmergencyStop,
                Operation::Resume => Change::Resume,
                Operation::SetAutoRollback(on) => Change::SetAutoRollback(on),
                Operation::SetDecisionLog { sample_rate, mask_repository_id } => {
                    let mut fields = serde_json::Map::new();
                    if let Some(rate) = sample_rate {
                        let rate = super::decision_log::check_sample_rate(rate)
                            .map_err(|m| ServiceError::invalid("sample_rate", m))?;
                        fields.insert("sample_rate".into(), rate.into());
                    }
                    if let Some(mask) = mask_repository_id {
                        fields.insert("mask_repository_id".into(), mask.into());
                    }
                    if fields.is_empty() {
                        return Err(ServiceError::invalid(
                            "sample_rate",
                            "nothing to set: give sample_rate (0 to 1) or mask_repository_id (true or false)",
                        ));
                    }
                    Change::MergeMetadata { key: super::decision_log::METADATA_KEY.to_owned(), fields }
                }
                _ => return Err(ServiceError::Internal("a list edit without ids".into())),
            },
        };
        let request = ChangeRequest::new(change, reason.map(Reason::into_string), actor.as_str());
        let outcome = self.observed(feature.manager.change(&request)).await?;
        feature.mark_loaded();
        Ok(OperationOutcome::new(&outcome, &feature))
    }

    /// Evaluate the health of `feature` now and, when `apply` and the policy says so, roll
    /// back; the result is kept for the status and the metrics.
    pub async fn check_health(&self, feature: &str, apply: bool) -> ServiceResult<HealthReport> {
        self.inner.db.require()?;
        let feature = self.feature(feature).await?;
        self.run_health_check(&feature, apply).await
    }

    /// [`Service::check_health`] on an open feature (the health loop calls it).
    pub(crate) async fn run_health_check(&self, feature: &Arc<Feature>, apply: bool) -> ServiceResult<HealthReport> {
        let result = if apply {
            feature.manager.check_and_trigger_auto_rollback().await
        } else {
            feature.manager.check_health().await
        };
        self.inner.db.observe(&result);
        self.inner.metrics.health_checked();
        let report = result?;
        feature.mark_loaded();
        let per_processor: Vec<(Processor, f64)> = Processor::ALL
            .iter()
            .filter_map(|p| report.processors.get(p.as_str()).map(|s| (*p, s.error_rate)))
            .collect();
        feature.counters.health(report.error_rate, &per_processor);
        if report.rolled_back {
            feature.counters.rollback();
            tracing::warn!(feature = feature.name(), error_rate = report.error_rate, "rolled back: {}", report.reason);
        }
        feature.set_health(&report);
        self.record_health_level(feature, &report).await;
        Ok(report)
    }

    /// Record the level of `report` when it differs from the one this process last recorded:
    /// a change of level is an alert event (warning, critical, or info on recovery), written
    /// with the level in one transaction; of several instances, the one whose compare-and-set
    /// wins writes it. A failure is logged and retried at the next check.
    async fn record_health_level(&self, feature: &Arc<Feature>, report: &HealthReport) {
        let Some(level) = report.level else { return };
        let name = level.as_str();
        if feature.recorded_level.lock().ok().and_then(|l| *l) == Some(name) {
            return;
        }
        let event = |previous: Option<&str>| health_event(report, previous);
        match self.inner.store.record_health_level(feature.name(), name, event).await {
            Ok(_) => {
                if let Ok(mut l) = feature.recorded_level.lock() {
                    *l = Some(name);
                }
            }
            Err(e) => tracing::warn!(feature = feature.name(), "cannot record the health level: {e}"),
        }
    }
}

/// The alert event of a change of health level to the level of `report`.
pub(crate) fn health_event(report: &HealthReport, previous: Option<&str>) -> crate::store::NewAlertEvent {
    use rollout_policy::HealthLevel;
    let level = report.level.unwrap_or(HealthLevel::Ok);
    let alert = match level {
        HealthLevel::Ok => crate::store::AlertLevel::Info,
        HealthLevel::Warning => crate::store::AlertLevel::Warning,
        HealthLevel::Critical => crate::store::AlertLevel::Critical,
    };
    let from = previous.unwrap_or("unknown");
    let summary = if level == HealthLevel::Ok {
        format!("`{}` is healthy again (was {from}): {}", report.feature_name, report.reason)
    } else {
        format!("`{}` health {from} → {}: {}", report.feature_name, level.as_str(), report.reason)
    };
    crate::store::NewAlertEvent {
        idempotency_key: uuid::Uuid::new_v4(),
        kind: "health".to_owned(),
        level: alert,
        feature: Some(report.feature_name.clone()),
        summary,
        details: serde_json::json!({
            "previous_level": previous,
            "level": level.as_str(),
            "error_rate": report.error_rate,
            "total_jobs": report.total_jobs,
            "window_start": report.window_start,
            "reason": report.reason,
            "processors": report.processors,
        }),
    }
}
