//! The decision log (`rollout_decisions`): decisions served over HTTP, as the policy received
//! and answered them, so any one can be found, explained and replayed (issue 14).
//!
//! A row is written by the service's background writer ([`crate::service::decision_log`]) in
//! batches, never on a decision's path; rows are immutable (the service role may insert and
//! delete, never update). Decision ids are UUIDv7, so their order is their time order and a
//! page of newest-first results continues after the last id it showed ([`DecisionFilter::before`]).
//!
//! Outcomes that name the decision they followed (`POST …/outcomes` with `decision_id`) are
//! kept in `rollout_decision_outcomes` ([`Store::link_outcomes`]); statistics join them with
//! the log to split outcomes by the policy and configuration that decided
//! ([`Store::outcomes_by_decision_version`]).

use super::{Store, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Which decision function answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// `is-eligible`.
    Eligibility,
    /// `route`.
    Route,
}

impl DecisionKind {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Eligibility => "eligibility",
            DecisionKind::Route => "route",
        }
    }

    /// The kind of a column value.
    pub fn parse(text: &str) -> Option<DecisionKind> {
        match text {
            "eligibility" => Some(DecisionKind::Eligibility),
            "route" => Some(DecisionKind::Route),
            _ => None,
        }
    }
}

/// One logged decision: its input as the policy received it, its result, and what made it.
/// It is also the line format of `rollout decisions export` (JSON Lines), so a replay reads
/// a database and an export alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The decision id (UUIDv7), returned to the caller in the response and `x-decision-id`.
    pub id: Uuid,
    /// When it was decided.
    pub time: DateTime<Utc>,
    /// The feature.
    pub feature: String,
    /// Which decision function answered.
    pub kind: DecisionKind,
    /// The stored `config_version` the decision's configuration snapshot was made from.
    pub config_version: i64,
    /// The environment overrides in force on the deciding process (the JSON of
    /// [`crate::env::EnvOverrides`]); `None` when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<serde_json::Value>,
    /// Lowercase hex sha256 of the component that decided (`native` for the native rules,
    /// `none` when no policy was loaded).
    pub policy_sha256: String,
    /// The repository id as the policy received it (canonical text), or, when masked,
    /// `hmac-sha256:<hex>` of it under the operator's key.
    pub repository_id: String,
    /// Whether `repository_id` is masked (a masked decision cannot be replayed: its bucket
    /// depends on the id).
    pub masked: bool,
    /// The repository's category as the policy received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The job as the policy received it (route decisions; the JSON of the request's `job`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<serde_json::Value>,
    /// Where the job runs (route decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    /// The routing rule (route decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Whether the repository takes part.
    pub eligible: bool,
    /// The eligibility rule.
    pub reason: String,
    /// The repository's bucket.
    pub bucket: u8,
    /// Why the policy gave no answer and the fallback decided (`None` when the policy
    /// answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// How long the decision took in the policy, in microseconds.
    pub duration_us: i64,
}

/// Which decisions to read, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecisionFilter {
    /// Of this feature only.
    pub feature: Option<String>,
    /// Of this repository id only (as logged: canonical text, or the masked form).
    pub repository_id: Option<String>,
    /// Decided at or after.
    pub since: Option<DateTime<Utc>>,
    /// Decided before.
    pub until: Option<DateTime<Utc>>,
    /// With this routing rule, or (eligibility decisions) this eligibility reason.
    pub rule: Option<String>,
    /// Ids strictly less than this one (the cursor: the last id of the previous page).
    pub before: Option<Uuid>,
    /// Ids strictly greater than this one (oldest-first reading, for replay and export).
    pub after: Option<Uuid>,
    /// At most this many rows.
    pub limit: u32,
}

/// Outcomes of decisions made by one (policy, configuration version) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionVersionOutcomes {
    /// The policy that decided.
    pub policy_sha256: String,
    /// The configuration version it decided under.
    pub config_version: i64,
    /// Outcomes reported as successes.
    pub successes: u64,
    /// Outcomes reported as failures.
    pub failures: u64,
}

/// An outcome naming the decision it followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionOutcome {
    /// The decision id the caller passed.
    pub decision_id: Uuid,
    /// The feature the outcome was recorded for.
    pub feature: String,
    /// Whether the job succeeded.
    pub success: bool,
    /// When the outcome was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl Store {
    /// Insert a batch of decisions in one statement (or one transaction); an id already
    /// logged is ignored. How many rows were new.
    pub async fn insert_decisions(&self, records: &[DecisionRecord]) -> StoreResult<u64> {
        let _ = records;
        Err(StoreError::Corrupt { column: "rollout_decisions", message: "not built yet".into() })
    }

    /// The decision `id`, if logged.
    pub async fn decision(&self, id: Uuid) -> StoreResult<Option<DecisionRecord>> {
        let _ = id;
        Err(StoreError::Corrupt { column: "rollout_decisions", message: "not built yet".into() })
    }

    /// Decisions matching `filter`: newest first, or oldest first when `filter.after` is set.
    pub async fn decisions(&self, filter: &DecisionFilter) -> StoreResult<Vec<DecisionRecord>> {
        let _ = filter;
        Err(StoreError::Corrupt { column: "rollout_decisions", message: "not built yet".into() })
    }

    /// Delete decisions decided before `before`, then the oldest beyond the newest
    /// `keep_rows`; how many were deleted.
    pub async fn prune_decisions(&self, before: DateTime<Utc>, keep_rows: u64) -> StoreResult<u64> {
        let _ = (before, keep_rows);
        Err(StoreError::Corrupt { column: "rollout_decisions", message: "not built yet".into() })
    }

    /// Record outcomes that name their decision (a repeated (decision, recorded_at, success)
    /// is kept once).
    pub async fn link_outcomes(&self, outcomes: &[DecisionOutcome]) -> StoreResult<()> {
        let _ = outcomes;
        Err(StoreError::Corrupt { column: "rollout_decision_outcomes", message: "not built yet".into() })
    }

    /// Outcomes of `feature` recorded since `since` whose decision is logged, per (policy,
    /// configuration version) that made the decision, newest configuration first.
    pub async fn outcomes_by_decision_version(
        &self,
        feature: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DecisionVersionOutcomes>> {
        let _ = (feature, since);
        Err(StoreError::Corrupt { column: "rollout_decision_outcomes", message: "not built yet".into() })
    }
}
