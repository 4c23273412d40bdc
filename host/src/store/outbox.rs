//! The alert outbox: events written in the transaction of the change they describe, and the
//! delivery state a notifier keeps on them (`rollout_alert_events`).
//!
//! An event exists if and only if its change committed: [`super::tx`] writes one with every
//! history row ([`event_for_history`]) and with every change of a feature's health level
//! ([`super::Store::record_health_level`]). Delivery is at least once: a notifier
//! [claims](super::Store::claim_alert_events) due events under a lease, posts them, and
//! [records](super::Store::finish_alert_event) the outcome — `delivered`, `pending` again with
//! a later attempt, or `dead` (the dead letter, kept for the CLI until retried or pruned).
//! Receivers deduplicate by [`AlertEvent::idempotency_key`], which never changes across
//! retries, restarts or instances.

use super::types::{HistoryAction, HistoryEntry};
use super::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// How much an event calls for attention (the seed's three alert levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// A change worth knowing about: percentage, configuration, policy.
    Info,
    /// The error rate is above 2.5 % (or a degradation rule fired): look soon.
    Warning,
    /// The error rate is above 10 %, or a rollback happened: look now.
    Critical,
}

impl AlertLevel {
    /// Every level, least urgent first.
    pub const ALL: &'static [AlertLevel] = &[AlertLevel::Info, AlertLevel::Warning, AlertLevel::Critical];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Info => "info",
            AlertLevel::Warning => "warning",
            AlertLevel::Critical => "critical",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<AlertLevel> {
        AlertLevel::ALL.iter().copied().find(|l| l.as_str() == s)
    }
}

/// Where an event is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Not yet accepted by every webhook; due at `next_attempt_at`.
    Pending,
    /// Accepted by every webhook.
    Delivered,
    /// Refused until the last attempt: the dead letter (`rollout alerts retry` requeues it).
    Dead,
}

impl AlertState {
    /// Every state.
    pub const ALL: &'static [AlertState] = &[AlertState::Pending, AlertState::Delivered, AlertState::Dead];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Delivered => "delivered",
            AlertState::Dead => "dead",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<AlertState> {
        AlertState::ALL.iter().copied().find(|l| l.as_str() == s)
    }
}

/// An event to write ([`super::Store::insert_alert_event`], or in a change's transaction).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewAlertEvent {
    /// The key receivers deduplicate by (a history row's id for the events of history rows).
    pub idempotency_key: Uuid,
    /// What happened: a history action (`updated`, `rollback`, `policy_activated`, …),
    /// `health` for a change of health level, `test` for `rollout alerts test`.
    pub kind: String,
    /// How urgent.
    pub level: AlertLevel,
    /// The feature (`None` for events of no feature, such as policy activations).
    pub feature: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Everything else, as JSON (the history row's metadata, the health report, …).
    pub details: serde_json::Value,
}

/// A stored event with its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// Insertion order.
    pub seq: i64,
    /// The key receivers deduplicate by.
    pub idempotency_key: Uuid,
    /// What happened.
    pub kind: String,
    /// How urgent.
    pub level: AlertLevel,
    /// The feature.
    pub feature: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Everything else.
    pub details: serde_json::Value,
    /// When the change committed.
    pub created_at: DateTime<Utc>,
    /// Delivery state.
    pub state: AlertState,
    /// Delivery attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending events).
    pub next_attempt_at: DateTime<Utc>,
    /// Digests of the webhooks that accepted it.
    pub delivered_targets: Vec<String>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the last webhook accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The outcome of one delivery attempt ([`super::Store::finish_alert_event`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryOutcome {
    /// The new state.
    pub state: AlertState,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When to try again (pending).
    pub next_attempt_at: DateTime<Utc>,
    /// Digests of every webhook that has accepted it so far.
    pub delivered_targets: Vec<String>,
    /// Why this attempt failed, if it did.
    pub last_error: Option<String>,
    /// When it was delivered (delivered).
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Counts of events per state ([`super::Store::alert_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertCounts {
    /// Pending events.
    pub pending: u64,
    /// Delivered events.
    pub delivered: u64,
    /// Dead-lettered events.
    pub dead: u64,
}

impl AlertCounts {
    /// Set the count of the state stored as `state` (unknown states are ignored).
    pub(super) fn set(&mut self, state: &str, n: i64) {
        let n = u64::try_from(n).unwrap_or(0);
        match AlertState::parse(state) {
            Some(AlertState::Pending) => self.pending = n,
            Some(AlertState::Delivered) => self.delivered = n,
            Some(AlertState::Dead) => self.dead = n,
            None => {}
        }
    }
}

/// The level of the event of a history row: a rollback is critical, every other change
/// (percentage, configuration, stop, policy) is info.
pub fn history_level(action: HistoryAction) -> AlertLevel {
    match action {
        HistoryAction::Rollback => AlertLevel::Critical,
        _ => AlertLevel::Info,
    }
}

/// The event of a history row just written for `feature` (`""` for none).
pub fn event_for_history(feature: &str, row: &HistoryEntry) -> NewAlertEvent {
    let who = row.triggered_by.as_deref().unwrap_or("unknown");
    let target = if feature.is_empty() { "the policy".to_owned() } else { format!("`{feature}`") };
    let mut summary = match (row.action, row.previous_percentage, row.new_percentage) {
        (HistoryAction::Rollback, Some(p), _) => format!("{target} rolled back from {p}% to 0%"),
        (_, Some(p), Some(n)) if p != n => format!("{target}: {} ({p}% → {n}%)", row.action.as_str()),
        _ => format!("{target}: {}", row.action.as_str()),
    };
    summary.push_str(&format!(" by {who}"));
    if let Some(reason) = row.reason.as_deref().filter(|r| !r.is_empty()) {
        summary.push_str(": ");
        summary.push_str(reason);
    }
    NewAlertEvent {
        idempotency_key: row.id,
        kind: row.action.as_str().to_owned(),
        level: history_level(row.action),
        feature: (!feature.is_empty()).then(|| feature.to_owned()),
        summary,
        details: serde_json::json!({
            "history_id": row.id,
            "previous_percentage": row.previous_percentage,
            "new_percentage": row.new_percentage,
            "reason": row.reason,
            "triggered_by": row.triggered_by,
            "metadata": row.metadata,
        }),
    }
}

/// The SQL of the outbox, in both dialects: `$n` placeholders, spelled `?n` for SQLite by
/// [`sql::lite`] (SQLite numbers `$name` parameters by first appearance, not by name).
pub(super) mod sql {
    /// The statement with SQLite's numbered placeholders.
    pub fn lite(sql: &str) -> String {
        sql.replace('$', "?")
    }

    /// The columns of an event, in [`super::AlertEvent`] order.
    pub const COLUMNS: &str = "seq, idempotency_key, kind, level, feature_name, summary, details, created_at, state, \
        attempts, next_attempt_at, delivered_targets, last_error, delivered_at";

    /// Insert an event ($1 key … $7 created_at = next_attempt_at).
    pub const INSERT: &str = "INSERT INTO rollout_alert_events (idempotency_key, kind, level, feature_name, summary, \
        details, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
        ON CONFLICT (idempotency_key) DO NOTHING";

    /// The level recorded for feature $1.
    pub const HEALTH_LEVEL: &str = "SELECT level FROM rollout_health_levels WHERE feature_name = $1";

    /// Record level $2 for feature $1 where none is recorded ($3 now).
    pub const INSERT_HEALTH_LEVEL: &str = "INSERT INTO rollout_health_levels (feature_name, level, changed_at) \
        VALUES ($1, $2, $3) ON CONFLICT (feature_name) DO NOTHING";

    /// Replace level $3 of feature $1 with $2 ($4 now): a compare-and-set.
    pub const UPDATE_HEALTH_LEVEL: &str =
        "UPDATE rollout_health_levels SET level = $2, changed_at = $4 WHERE feature_name = $1 AND level = $3";

    /// Record an attempt's outcome for event $1 (claim released).
    pub const FINISH: &str = "UPDATE rollout_alert_events SET state = $2, attempts = $3, next_attempt_at = $4, \
        delivered_targets = $5, last_error = $6, delivered_at = $7, claimed_until = NULL WHERE seq = $1";

    /// Requeue the dead event with key $1 for an attempt now ($2), with its attempts reset.
    pub const RETRY: &str = "UPDATE rollout_alert_events SET state = 'pending', attempts = 0, next_attempt_at = $2, \
        claimed_until = NULL WHERE idempotency_key = $1 AND state = 'dead'";

    /// Lease up to $3 due events ($1 now) until $2; `{lock}` is `FOR UPDATE SKIP LOCKED` on
    /// Postgres, nothing on SQLite (whose writers are serialised).
    pub fn claim(lock: &str) -> String {
        format!(
            "UPDATE rollout_alert_events SET claimed_until = $2 WHERE seq IN (SELECT seq FROM rollout_alert_events \
             WHERE state = 'pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until <= $1) \
             ORDER BY seq LIMIT $3 {lock}) RETURNING {COLUMNS}"
        )
    }

    /// The newest $1 events; with `by_state`, only those in state $2.
    pub fn list(by_state: bool) -> String {
        let filter = if by_state { "WHERE state = $2 " } else { "" };
        format!("SELECT {COLUMNS} FROM rollout_alert_events {filter}ORDER BY seq DESC LIMIT $1")
    }

    /// Events per state.
    pub const COUNTS: &str = "SELECT state, COUNT(*) AS n FROM rollout_alert_events GROUP BY state";

    /// Delete events created before $1.
    pub const PRUNE: &str = "DELETE FROM rollout_alert_events WHERE created_at < $1";
}

/// The attempts after which an event is dead by default.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

/// An error for a row that does not decode.
pub(super) fn corrupt(column: &'static str, value: &str) -> StoreError {
    StoreError::Corrupt { column, message: format!("`{value}` is not a known value") }
}

/// Parse the stored level and state of an event.
pub(super) fn parse_level_state(level: &str, state: &str) -> StoreResult<(AlertLevel, AlertState)> {
    Ok((
        AlertLevel::parse(level).ok_or_else(|| corrupt("level", level))?,
        AlertState::parse(state).ok_or_else(|| corrupt("state", state))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(action: HistoryAction, prev: Option<i32>, new: Option<i32>) -> HistoryEntry {
        HistoryEntry {
            id: Uuid::new_v4(),
            seq: 1,
            rollout_config_id: None,
            action,
            previous_percentage: prev,
            new_percentage: new,
            reason: Some("ramp".into()),
            triggered_by: Some("alice".into()),
            metadata: serde_json::json!({}),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn a_rollback_is_critical_and_other_changes_are_info() {
        let r = row(HistoryAction::Rollback, Some(40), Some(0));
        let e = event_for_history("f", &r);
        assert_eq!(e.level, AlertLevel::Critical);
        assert_eq!(e.idempotency_key, r.id);
        assert_eq!(e.summary, "`f` rolled back from 40% to 0% by alice: ramp");
        let u = event_for_history("f", &row(HistoryAction::Updated, Some(10), Some(25)));
        assert_eq!(u.level, AlertLevel::Info);
        assert_eq!(u.summary, "`f`: updated (10% → 25%) by alice: ramp");
        let p = event_for_history("", &row(HistoryAction::PolicyActivated, None, None));
        assert_eq!(p.feature, None);
        assert_eq!(p.summary, "the policy: policy_activated by alice: ramp");
    }

    #[test]
    fn names_round_trip() {
        for l in AlertLevel::ALL {
            assert_eq!(AlertLevel::parse(l.as_str()), Some(*l));
        }
        for s in AlertState::ALL {
            assert_eq!(AlertState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(AlertLevel::parse("fatal"), None);
    }
}
