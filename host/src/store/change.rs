//! Configuration changes and what they do, written once for both databases.
//!
//! [`plan`] is the whole meaning of a [`Change`]: given the row as read under the lock, it
//! returns the row to write — every column — or why nothing is to be written. The
//! transaction around it (lock, plan, write, history row, notification, commit) is
//! [`super::tx::apply_change`]; the dialects only hold SQL text.

use super::types::{HistoryAction, HistoryEntry, StoredConfig};
use chrono::{DateTime, Utc};
use rollout_policy::{ConfigError, RepoId, Strategy};
use serde::Serialize;
use std::collections::HashSet;
use uuid::Uuid;

/// Fields of a configuration to change together (`None` leaves a field as it is); history
/// action `updated`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigPatch {
    /// `is_active`.
    pub is_active: Option<bool>,
    /// `rollout_strategy` (a change restarts the health window).
    pub rollout_strategy: Option<Strategy>,
    /// `max_error_rate`, 0..=100 (kept to 2 decimals).
    pub max_error_rate: Option<f64>,
    /// `monitoring_window_hours`, at least 1.
    pub monitoring_window_hours: Option<u32>,
    /// `min_jobs_for_rollback`.
    pub min_jobs_for_rollback: Option<u32>,
    /// `metadata`, replaced whole (must be a JSON object).
    pub metadata: Option<serde_json::Value>,
}

impl ConfigPatch {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(rate) = self.max_error_rate {
            if !rate.is_finite() || !(0.0..=100.0).contains(&rate) {
                return Err(ConfigError {
                    field: "max_error_rate".into(),
                    message: format!("`{rate}` is out of range: allowed a number from 0 to 100"),
                });
            }
        }
        if self.monitoring_window_hours == Some(0) {
            return Err(ConfigError {
                field: "monitoring_window_hours".into(),
                message: "`0` is out of range: allowed 1 or more".into(),
            });
        }
        for (field, value) in [
            ("monitoring_window_hours", self.monitoring_window_hours),
            ("min_jobs_for_rollback", self.min_jobs_for_rollback),
        ] {
            if let Some(v) = value.filter(|v| *v > i32::MAX as u32) {
                return Err(ConfigError {
                    field: field.into(),
                    message: format!("`{v}` is out of range: allowed at most {}", i32::MAX),
                });
            }
        }
        if let Some(m) = &self.metadata {
            if !m.is_object() {
                return Err(ConfigError { field: "metadata".into(), message: "must be a JSON object".into() });
            }
        }
        Ok(())
    }

    fn apply(&self, row: &mut StoredConfig) {
        let c = &mut row.config;
        if let Some(v) = self.is_active {
            c.is_active = v;
        }
        if let Some(v) = self.rollout_strategy {
            c.rollout_strategy = v;
        }
        if let Some(v) = self.max_error_rate {
            // the column keeps 2 decimals (Postgres DECIMAL(5,2))
            c.max_error_rate = (v * 100.0).round() / 100.0;
        }
        if let Some(v) = self.monitoring_window_hours {
            c.monitoring_window_hours = v;
        }
        if let Some(v) = self.min_jobs_for_rollback {
            c.min_jobs_for_rollback = v;
        }
        if let Some(v) = &self.metadata {
            row.metadata = v.clone();
        }
    }
}

/// A configuration change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Set `rollout_percentage` (0..=100); history `updated`.
    SetPercentage(u8),
    /// Switch the emergency stop on; history `emergency_stop` (the percentage is kept).
    EmergencyStop,
    /// Switch the emergency stop off; history `resume`.
    Resume,
    /// Switch auto-rollback on or off; history `updated`.
    SetAutoRollback(bool),
    /// Change other fields; history `updated`.
    Update(ConfigPatch),
    /// Set `fields` in the object `metadata[key]` (created when absent; a non-object value
    /// there is replaced), other keys of `metadata` and of the object kept — a merge made
    /// under the row lock, so concurrent changes of other keys are never lost; history
    /// `updated`.
    MergeMetadata {
        /// The metadata key (e.g. `decision_log`).
        key: String,
        /// The fields to set in it.
        fields: serde_json::Map<String, serde_json::Value>,
    },
    /// Add ids (canonical UUIDs) to `target_repositories`; history `whitelist_add`.
    WhitelistAdd(Vec<Uuid>),
    /// Remove ids from `target_repositories`; history `whitelist_remove`.
    WhitelistRemove(Vec<Uuid>),
    /// Add ids to `excluded_repositories`; history `exclude_add`.
    ExcludeAdd(Vec<Uuid>),
    /// Remove ids from `excluded_repositories`; history `exclude_remove`.
    ExcludeRemove(Vec<Uuid>),
    /// Percentage → 0 and `rolled_back` set, a compare-and-set on the window that was
    /// judged (SPEC §2.5): only if the row's `state_changed_at` is still `judged_since`, the
    /// stop is off and the rollout is not at 0 % in effect already (rolled back, or at 0 %
    /// with no override above it); history `rollback`. Under an environment override of the
    /// percentage the column may already be 0: the rollback still applies, and `rolled_back`
    /// holds the override off (SPEC §4).
    Rollback {
        /// The `state_changed_at` of the configuration whose health window was evaluated.
        judged_since: DateTime<Utc>,
        /// The percentage in effect when it was judged (the column's, or an environment
        /// override's).
        judged_percentage: u8,
    },
}

impl Change {
    /// The history action written for this change.
    pub fn action(&self) -> HistoryAction {
        match self {
            Change::SetPercentage(_)
            | Change::SetAutoRollback(_)
            | Change::Update(_)
            | Change::MergeMetadata { .. } => HistoryAction::Updated,
            Change::EmergencyStop => HistoryAction::EmergencyStop,
            Change::Resume => HistoryAction::Resume,
            Change::WhitelistAdd(_) => HistoryAction::WhitelistAdd,
            Change::WhitelistRemove(_) => HistoryAction::WhitelistRemove,
            Change::ExcludeAdd(_) => HistoryAction::ExcludeAdd,
            Change::ExcludeRemove(_) => HistoryAction::ExcludeRemove,
            Change::Rollback { .. } => HistoryAction::Rollback,
        }
    }

    /// Refuse values the columns cannot take (before any transaction starts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Change::SetPercentage(p) if *p > 100 => Err(ConfigError {
                field: "rollout_percentage".into(),
                message: format!("`{p}` is out of range: allowed 0..=100"),
            }),
            Change::Update(patch) => patch.validate(),
            _ => Ok(()),
        }
    }

    fn requested_ids(&self) -> Option<&[Uuid]> {
        match self {
            Change::WhitelistAdd(ids)
            | Change::WhitelistRemove(ids)
            | Change::ExcludeAdd(ids)
            | Change::ExcludeRemove(ids) => Some(ids),
            _ => None,
        }
    }
}

/// A change with its audit data.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRequest {
    /// The change.
    pub change: Change,
    /// Why.
    pub reason: Option<String>,
    /// Who or what (at most 100 characters; longer fails the transaction).
    pub triggered_by: String,
    /// Extra details merged into the history row's metadata (e.g. the health evaluation
    /// behind a rollback).
    pub details: Option<serde_json::Value>,
}

impl ChangeRequest {
    /// A change by `triggered_by` for `reason`.
    pub fn new(change: Change, reason: Option<String>, triggered_by: impl Into<String>) -> ChangeRequest {
        ChangeRequest { change, reason, triggered_by: triggered_by.into(), details: None }
    }
}

/// Why a change was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skipped {
    /// The change would leave every column as it is (a repeated stop, a percentage set to
    /// its value, ids already listed or not listed, …).
    Unchanged,
    /// A rollback of a rollout at 0 %.
    AlreadyAtZero,
    /// A rollback of a stopped rollout.
    Stopped,
    /// A rollback whose judged window is gone: the percentage, strategy or stop changed
    /// after the health check read the configuration.
    WindowChanged,
}

/// What [`Store::apply_change`](super::Store::apply_change) did.
///
/// One rule for every change: a change that would change no column writes nothing — no
/// row update, no history row, no notification — and returns `applied: false` with the
/// reason in `skipped`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeOutcome {
    /// Whether the change was made.
    pub applied: bool,
    /// The configuration before, as read under the row lock.
    pub before: StoredConfig,
    /// The configuration after, as written (equal to `before` when not applied).
    pub after: StoredConfig,
    /// The history row written (`None` when not applied).
    pub history: Option<HistoryEntry>,
    /// Why it was not applied (`None` when applied).
    pub skipped: Option<Skipped>,
}

/// What a change does to a row ([`plan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The whole row to write; `None` when nothing is to be written.
    pub after: Option<StoredConfig>,
    /// Why nothing is to be written (`None` when `after` is `Some`).
    pub skipped: Option<Skipped>,
}

impl Planned {
    fn skip(why: Skipped) -> Planned {
        Planned { after: None, skipped: Some(why) }
    }
}

/// The meaning of `change` applied at `now` to `before` (the row as read under the lock):
/// the row to write, or why nothing is to be written.
///
/// - id lists are sets kept in order: an add appends the ids not listed yet, a remove
///   drops the listed ones; both compare canonical ids case-insensitively (a list that held
///   duplicates is deduplicated, first occurrence kept);
/// - a rollback applies only to the judged window, above 0 % in effect, not stopped
///   ([`Change::Rollback`]); it sets `rolled_back`, which the next percentage change clears;
/// - a change that leaves every column (the rules' configuration and `metadata`) as it is
///   writes nothing ([`Skipped::Unchanged`]);
/// - `state_changed_at` becomes `now` only when the percentage, the strategy, the stop or
///   `rolled_back` actually change; `updated_at` becomes `now`; `version` grows by exactly 1.
pub fn plan(change: &Change, before: &StoredConfig, now: DateTime<Utc>) -> Planned {
    let mut after = before.clone();
    match change {
        Change::SetPercentage(p) => {
            // an operator's percentage ends a rollback's hold on an override
            after.config.rollout_percentage = *p;
            after.rolled_back = false;
        }
        Change::EmergencyStop => after.config.emergency_stop = true,
        Change::Resume => after.config.emergency_stop = false,
        Change::SetAutoRollback(on) => after.config.auto_rollback_enabled = *on,
        Change::Update(patch) => patch.apply(&mut after),
        Change::MergeMetadata { key, fields } => merge_metadata(&mut after.metadata, key, fields),
        Change::WhitelistAdd(ids) => add_ids(&mut after.config.target_repositories, ids),
        Change::WhitelistRemove(ids) => remove_ids(&mut after.config.target_repositories, ids),
        Change::ExcludeAdd(ids) => add_ids(&mut after.config.excluded_repositories, ids),
        Change::ExcludeRemove(ids) => remove_ids(&mut after.config.excluded_repositories, ids),
        Change::Rollback { judged_since, judged_percentage } => {
            if before.rolled_back || (before.config.rollout_percentage == 0 && *judged_percentage == 0) {
                return Planned::skip(Skipped::AlreadyAtZero);
            }
            if before.config.emergency_stop {
                return Planned::skip(Skipped::Stopped);
            }
            if before.state_changed_at != *judged_since {
                return Planned::skip(Skipped::WindowChanged);
            }
            after.config.rollout_percentage = 0;
            after.rolled_back = true;
        }
    }
    if after.config == before.config && after.metadata == before.metadata && after.rolled_back == before.rolled_back {
        return Planned::skip(Skipped::Unchanged);
    }
    let (b, a) = (&before.config, &after.config);
    if a.rollout_percentage != b.rollout_percentage
        || a.rollout_strategy != b.rollout_strategy
        || a.emergency_stop != b.emergency_stop
        || after.rolled_back != before.rolled_back
    {
        after.state_changed_at = now;
    }
    after.updated_at = now;
    after.version = before.version.saturating_add(1);
    Planned { after: Some(after), skipped: None }
}

fn merge_metadata(metadata: &mut serde_json::Value, key: &str, fields: &serde_json::Map<String, serde_json::Value>) {
    if !metadata.is_object() {
        *metadata = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(root) = metadata.as_object_mut() {
        let entry = root.entry(key.to_owned()).or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
        if !entry.is_object() {
            *entry = serde_json::Value::Object(serde_json::Map::new());
        }
        if let Some(object) = entry.as_object_mut() {
            for (k, v) in fields {
                object.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The set key of a listed id: the canonical UUID text, or the lowercase text of another id.
fn id_key(id: &str) -> String {
    match RepoId::parse(id.trim()) {
        RepoId::Uuid(v) => Uuid::from_u128(v).to_string(),
        _ => id.to_lowercase(),
    }
}

fn add_ids(list: &mut Vec<String>, ids: &[Uuid]) {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len() + ids.len());
    for id in list.drain(..).chain(ids.iter().map(Uuid::to_string)) {
        if seen.insert(id_key(&id)) {
            out.push(id);
        }
    }
    *list = out;
}

fn remove_ids(list: &mut Vec<String>, ids: &[Uuid]) {
    let drop: HashSet<String> = ids.iter().map(Uuid::to_string).collect();
    list.retain(|id| !drop.contains(&id_key(id)));
}

/// The history metadata of a change: `previous`/`new` of every column that differs, the
/// requested ids, and the caller's details.
pub(crate) fn change_metadata(
    request: &ChangeRequest,
    before: &StoredConfig,
    after: &StoredConfig,
) -> serde_json::Value {
    let (b, a) = (before.to_json(), after.to_json());
    let mut previous = serde_json::Map::new();
    let mut new = serde_json::Map::new();
    if let (Some(b), Some(a)) = (b.as_object(), a.as_object()) {
        for (key, bv) in b {
            let av = a.get(key).cloned().unwrap_or(serde_json::Value::Null);
            if *bv != av {
                previous.insert(key.clone(), bv.clone());
                new.insert(key.clone(), av);
            }
        }
    }
    let mut meta = serde_json::Map::new();
    meta.insert("previous".into(), serde_json::Value::Object(previous));
    meta.insert("new".into(), serde_json::Value::Object(new));
    if let Some(ids) = request.change.requested_ids() {
        meta.insert("requested".into(), ids.iter().map(|u| serde_json::Value::String(u.to_string())).collect());
    }
    if let Some(serde_json::Value::Object(details)) = &request.details {
        for (k, v) in details {
            meta.insert(k.clone(), v.clone());
        }
    } else if let Some(details) = &request.details {
        meta.insert("details".into(), details.clone());
    }
    serde_json::Value::Object(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use rollout_policy::Config;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    fn row() -> StoredConfig {
        StoredConfig {
            id: Uuid::from_u128(7),
            config: Config { rollout_percentage: 30, is_active: true, ..Config::default() },
            metadata: serde_json::json!({}),
            state_changed_at: t(0),
            created_at: t(0),
            updated_at: t(10),
            version: 4,
            rolled_back: false,
        }
    }

    fn applied(change: Change, before: &StoredConfig) -> StoredConfig {
        let planned = plan(&change, before, t(100));
        assert_eq!(planned.skipped, None, "{change:?}");
        planned.after.unwrap()
    }

    fn skipped(change: Change, before: &StoredConfig) -> Skipped {
        let planned = plan(&change, before, t(100));
        assert_eq!(planned.after, None, "{change:?}");
        planned.skipped.unwrap()
    }

    #[test]
    fn state_changed_at_moves_only_with_percentage_strategy_or_stop() {
        let before = row();
        for change in [
            Change::SetPercentage(40),
            Change::EmergencyStop,
            Change::Update(ConfigPatch { rollout_strategy: Some(Strategy::Whitelist), ..Default::default() }),
        ] {
            let after = applied(change.clone(), &before);
            assert_eq!(after.state_changed_at, t(100), "{change:?}");
        }
        for change in [
            Change::SetAutoRollback(false),
            Change::WhitelistAdd(vec![Uuid::from_u128(1)]),
            Change::Update(ConfigPatch { max_error_rate: Some(7.0), is_active: Some(false), ..Default::default() }),
        ] {
            let after = applied(change.clone(), &before);
            assert_eq!(after.state_changed_at, t(0), "{change:?}");
            assert_eq!(after.updated_at, t(100), "{change:?}");
        }
    }

    #[test]
    fn every_applied_change_bumps_the_version_by_one() {
        let after = applied(Change::SetPercentage(31), &row());
        assert_eq!(after.version, 5);
        assert_eq!(applied(Change::SetPercentage(32), &after).version, 6);
    }

    #[test]
    fn a_change_of_nothing_is_skipped() {
        let before = row();
        assert_eq!(skipped(Change::SetPercentage(30), &before), Skipped::Unchanged);
        assert_eq!(skipped(Change::Resume, &before), Skipped::Unchanged);
        assert_eq!(skipped(Change::SetAutoRollback(true), &before), Skipped::Unchanged);
        assert_eq!(skipped(Change::Update(ConfigPatch::default()), &before), Skipped::Unchanged);
        let merge = |v: serde_json::Value| Change::MergeMetadata {
            key: "decision_log".into(),
            fields: v.as_object().cloned().unwrap_or_default(),
        };
        let mut logged = before.clone();
        logged.metadata = serde_json::json!({"owner": "team-a", "decision_log": {"sample_rate": 0.1}});
        assert_eq!(skipped(merge(serde_json::json!({"sample_rate": 0.1})), &logged), Skipped::Unchanged);
        let after = applied(merge(serde_json::json!({"mask_repository_id": true})), &logged);
        assert_eq!(
            after.metadata,
            serde_json::json!({"owner": "team-a", "decision_log": {"sample_rate": 0.1, "mask_repository_id": true}}),
            "a merge keeps the other keys"
        );
        assert_eq!(skipped(Change::WhitelistRemove(vec![Uuid::from_u128(1)]), &before), Skipped::Unchanged);
        let stopped = applied(Change::EmergencyStop, &before);
        assert_eq!(skipped(Change::EmergencyStop, &stopped), Skipped::Unchanged, "a repeated stop writes nothing");
        // 5.004 is kept as 5.00, which it is already
        let rate = ConfigPatch { max_error_rate: Some(5.004), ..Default::default() };
        assert_eq!(skipped(Change::Update(rate), &before), Skipped::Unchanged);
    }

    #[test]
    fn id_lists_are_ordered_sets_of_canonical_ids() {
        let (a, b, c) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb), Uuid::from_u128(0xc));
        let mut before = row();
        before.config.target_repositories = vec![b.to_string().to_uppercase(), a.to_string(), a.to_string()];
        let after = applied(Change::WhitelistAdd(vec![c, b, c]), &before);
        assert_eq!(
            after.config.target_repositories,
            vec![b.to_string().to_uppercase(), a.to_string(), c.to_string()],
            "order kept, duplicates (any case) dropped"
        );
        assert_eq!(skipped(Change::WhitelistAdd(vec![a, b]), &after), Skipped::Unchanged);
        let after = applied(Change::WhitelistRemove(vec![b, Uuid::from_u128(0xd)]), &after);
        assert_eq!(after.config.target_repositories, vec![a.to_string(), c.to_string()]);
        let after = applied(Change::ExcludeAdd(vec![a]), &after);
        assert_eq!(after.config.excluded_repositories, vec![a.to_string()]);
        let after = applied(Change::ExcludeRemove(vec![a]), &after);
        assert!(after.config.excluded_repositories.is_empty());
    }

    #[test]
    /// Defect 5: under `HYBRID_ROLLOUT_PERCENTAGE` the column may be 0 while the rollout runs
    /// at the override; the rollback must still take effect (and hold the override off)
    /// until an operator sets a percentage.
    fn a_rollback_under_an_override_holds_until_an_operator_sets_a_percentage() {
        let at_zero = StoredConfig { config: Config { rollout_percentage: 0, ..row().config }, ..row() };
        assert_eq!(
            skipped(Change::Rollback { judged_since: t(0), judged_percentage: 0 }, &at_zero),
            Skipped::AlreadyAtZero,
            "nothing to roll back at 0 % without an override"
        );
        let rolled = applied(Change::Rollback { judged_since: t(0), judged_percentage: 100 }, &at_zero);
        assert!(rolled.rolled_back);
        assert_eq!((rolled.config.rollout_percentage, rolled.state_changed_at), (0, t(100)));
        assert_eq!(
            skipped(Change::Rollback { judged_since: t(100), judged_percentage: 100 }, &rolled),
            Skipped::AlreadyAtZero,
            "a rollback in force is not made again"
        );
        let reset = applied(Change::SetPercentage(0), &rolled);
        assert!(!reset.rolled_back, "an operator's percentage, even the same one, ends the hold");
        let ramped = applied(Change::SetPercentage(10), &rolled);
        assert!(!ramped.rolled_back);
    }

    #[test]
    fn rollback_is_a_compare_and_set_on_the_judged_window() {
        let before = row();
        let after = applied(Change::Rollback { judged_since: t(0), judged_percentage: 30 }, &before);
        assert_eq!((after.config.rollout_percentage, after.state_changed_at), (0, t(100)));
        let ramped = applied(Change::SetPercentage(50), &before);
        assert_eq!(
            skipped(Change::Rollback { judged_since: t(0), judged_percentage: 30 }, &ramped),
            Skipped::WindowChanged
        );
        assert_eq!(
            skipped(Change::Rollback { judged_since: t(100), judged_percentage: 30 }, &after),
            Skipped::AlreadyAtZero
        );
        let stopped = applied(Change::EmergencyStop, &before);
        assert_eq!(
            skipped(Change::Rollback { judged_since: t(100), judged_percentage: 30 }, &stopped),
            Skipped::Stopped
        );
        let late = before.state_changed_at + TimeDelta::microseconds(1);
        assert_eq!(
            skipped(Change::Rollback { judged_since: late, judged_percentage: 30 }, &before),
            Skipped::WindowChanged
        );
    }

    #[test]
    fn patches_replace_their_fields() {
        let patch = ConfigPatch {
            is_active: Some(false),
            rollout_strategy: Some(Strategy::RepositorySize),
            max_error_rate: Some(2.346),
            monitoring_window_hours: Some(6),
            min_jobs_for_rollback: Some(3),
            metadata: Some(serde_json::json!({"cost_per_job": {"inngest": 0.1}})),
        };
        let after = applied(Change::Update(patch), &row());
        let c = &after.config;
        assert!(!c.is_active);
        assert_eq!(c.rollout_strategy, Strategy::RepositorySize);
        assert_eq!(c.max_error_rate, 2.35);
        assert_eq!((c.monitoring_window_hours, c.min_jobs_for_rollback), (6, 3));
        assert_eq!(after.metadata["cost_per_job"]["inngest"], 0.1);
    }

    #[test]
    fn invalid_values_are_refused_naming_the_field() {
        let e = Change::SetPercentage(101).validate().unwrap_err();
        assert_eq!(e.field, "rollout_percentage");
        let big = ConfigPatch { min_jobs_for_rollback: Some(u32::MAX), ..Default::default() };
        assert_eq!(Change::Update(big).validate().unwrap_err().field, "min_jobs_for_rollback");
        let meta = ConfigPatch { metadata: Some(serde_json::json!([1])), ..Default::default() };
        assert_eq!(Change::Update(meta).validate().unwrap_err().field, "metadata");
    }
}
