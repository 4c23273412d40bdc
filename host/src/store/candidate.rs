//! Policy candidate events (`policy_candidate_events`): every step of a policy version's
//! shadow evaluation or canary — started, stepped, reverted by the guard, promoted,
//! stopped — as an append-only log whose newest row is the current state.
//!
//! The store keeps the state as opaque JSON (the service layer's
//! `service::candidate::CandidateState` gives it meaning). [`Store::append_candidate_event`]
//! is a compare-and-set on the newest `seq`, in one transaction that locks the table
//! (Postgres) or the database (SQLite `BEGIN IMMEDIATE`), and notifies
//! [`super::CHANGE_CHANNEL`] so every instance re-reads it.

use super::{Store, StoreError, StoreResult, CHANGE_CHANNEL};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

/// What a candidate event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateAction {
    /// Shadow evaluation started (or its sample rate changed).
    ShadowStarted,
    /// A canary started (or its share or limits were set by an operator).
    CanaryStarted,
    /// A scheduled canary moved to its next share.
    CanaryStep,
    /// The guard (or an operator) set the canary back to 0: the candidate serves nothing.
    CanaryReverted,
    /// The candidate became the active version.
    Promoted,
    /// An operator ended the shadow or canary.
    Stopped,
}

impl CandidateAction {
    /// Every action.
    pub const ALL: &'static [CandidateAction] = &[
        CandidateAction::ShadowStarted,
        CandidateAction::CanaryStarted,
        CandidateAction::CanaryStep,
        CandidateAction::CanaryReverted,
        CandidateAction::Promoted,
        CandidateAction::Stopped,
    ];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateAction::ShadowStarted => "shadow_started",
            CandidateAction::CanaryStarted => "canary_started",
            CandidateAction::CanaryStep => "canary_step",
            CandidateAction::CanaryReverted => "canary_reverted",
            CandidateAction::Promoted => "promoted",
            CandidateAction::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> StoreResult<CandidateAction> {
        CandidateAction::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt { column: "action", message: format!("unknown candidate action `{s}`") })
    }
}

/// A stored candidate event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateEvent {
    /// Insertion order.
    pub seq: i64,
    /// The candidate version.
    pub sha256: String,
    /// What happened.
    pub action: CandidateAction,
    /// The candidate after this event; `None`: there is none.
    pub state: Option<serde_json::Value>,
    /// Why, when given.
    pub reason: Option<String>,
    /// Who (an operator, `guard`, `schedule`).
    pub triggered_by: String,
    /// Details (the guard's judgement, the counts).
    pub metadata: serde_json::Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A candidate event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCandidateEvent {
    /// The candidate version.
    pub sha256: String,
    /// What happened.
    pub action: CandidateAction,
    /// The candidate after this event; `None`: there is none.
    pub state: Option<serde_json::Value>,
    /// Why.
    pub reason: Option<String>,
    /// Who.
    pub triggered_by: String,
    /// Details.
    pub metadata: serde_json::Value,
}

const COLUMNS_PG: &str =
    "seq, sha256, action, state::text AS state, reason, triggered_by, metadata::text AS metadata, created_at";
const COLUMNS_LITE: &str = "seq, sha256, action, state, reason, triggered_by, metadata, created_at";

fn json_column(column: &'static str, text: Option<String>) -> StoreResult<Option<serde_json::Value>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt { column, message: e.to_string() }))
        .transpose()
}

fn corrupt(column: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Corrupt { column, message: e.to_string() }
}

fn from_pg(row: &sqlx::postgres::PgRow) -> StoreResult<CandidateEvent> {
    Ok(CandidateEvent {
        seq: row.try_get("seq").map_err(corrupt("seq"))?,
        sha256: row.try_get::<String, _>("sha256").map_err(corrupt("sha256"))?.trim().to_owned(),
        action: CandidateAction::parse(&row.try_get::<String, _>("action").map_err(corrupt("action"))?)?,
        state: json_column("state", row.try_get("state").map_err(corrupt("state"))?)?,
        reason: row.try_get("reason").map_err(corrupt("reason"))?,
        triggered_by: row.try_get("triggered_by").map_err(corrupt("triggered_by"))?,
        metadata: json_column("metadata", row.try_get("metadata").map_err(corrupt("metadata"))?)?.unwrap_or_default(),
        created_at: row.try_get("created_at").map_err(corrupt("created_at"))?,
    })
}

fn from_lite(row: &sqlx::sqlite::SqliteRow) -> StoreResult<CandidateEvent> {
    let created: String = row.try_get("created_at").map_err(corrupt("created_at"))?;
    let created_at = DateTime::parse_from_rfc3339(&created).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        StoreError::Corrupt { column: "created_at", message: format!("`{created}` is not a timestamp: {e}") }
    })?;
    Ok(CandidateEvent {
        seq: row.try_get("seq").map_err(corrupt("seq"))?,
        sha256: row.try_get("sha256").map_err(corrupt("sha256"))?,
        action: CandidateAction::parse(&row.try_get::<String, _>("action").map_err(corrupt("action"))?)?,
        state: json_column("state", row.try_get("state").map_err(corrupt("state"))?)?,
        reason: row.try_get("reason").map_err(corrupt("reason"))?,
        triggered_by: row.try_get("triggered_by").map_err(corrupt("triggered_by"))?,
        metadata: json_column("metadata", row.try_get("metadata").map_err(corrupt("metadata"))?)?.unwrap_or_default(),
        created_at,
    })
}

impl Store {
    /// The newest `limit` candidate events, newest first (the first is the current state).
    pub async fn candidate_events(&self, limit: u32) -> StoreResult<Vec<CandidateEvent>> {
        let ctx = "read the policy candidate events";
        match self {
            Store::Postgres(pool) => {
                let sql = format!("SELECT {COLUMNS_PG} FROM policy_candidate_events ORDER BY seq DESC LIMIT $1");
                let rows =
                    sqlx::query(&sql).bind(i64::from(limit)).fetch_all(pool).await.map_err(StoreError::db(ctx))?;
                rows.iter().map(from_pg).collect()
            }
            Store::Sqlite(pool) => {
                let sql = format!("SELECT {COLUMNS_LITE} FROM policy_candidate_events ORDER BY seq DESC LIMIT ?1");
                let rows =
                    sqlx::query(&sql).bind(i64::from(limit)).fetch_all(pool).await.map_err(StoreError::db(ctx))?;
                rows.iter().map(from_lite).collect()
            }
        }
    }

    /// The newest candidate event (the current state); `None` when there was never one.
    pub async fn current_candidate(&self) -> StoreResult<Option<CandidateEvent>> {
        Ok(self.candidate_events(1).await?.into_iter().next())
    }

    /// Append `event` if the newest event's `seq` is still `expected` (`None`: there is no
    /// event yet); `Ok(None)` when it is not — another write came first — and nothing was
    /// written. Notifies every instance on Postgres. The candidate's version must be a stored
    /// policy version ([`StoreError::UnknownPolicy`] otherwise).
    pub async fn append_candidate_event(
        &self,
        expected: Option<i64>,
        event: &NewCandidateEvent,
    ) -> StoreResult<Option<CandidateEvent>> {
        let ctx = format!("record the policy candidate event `{}` of `{}`", event.action.as_str(), event.sha256);
        let state = event.state.as_ref().map(serde_json::Value::to_string);
        let metadata = event.metadata.to_string();
        match self {
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(StoreError::db(&ctx))?;
                sqlx::query("LOCK TABLE policy_candidate_events IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db(&ctx))?;
                let row = sqlx::query(
                    "SELECT (SELECT max(seq) FROM policy_candidate_events) AS newest, \
                     EXISTS (SELECT 1 FROM policy_versions WHERE sha256 = $1) AS known",
                )
                .bind(&event.sha256)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db(&ctx))?;
                let newest: Option<i64> = row.try_get("newest").map_err(corrupt("seq"))?;
                let known: bool = row.try_get("known").map_err(corrupt("sha256"))?;
                if !known {
                    return Err(StoreError::UnknownPolicy(event.sha256.clone()));
                }
                if newest != expected {
                    return Ok(None);
                }
                let sql = format!(
                    "INSERT INTO policy_candidate_events (sha256, action, state, reason, triggered_by, metadata) \
                     VALUES ($1, $2, CAST($3 AS JSONB), $4, $5, CAST($6 AS JSONB)) RETURNING {COLUMNS_PG}"
                );
                let row = sqlx::query(&sql)
                    .bind(&event.sha256)
                    .bind(event.action.as_str())
                    .bind(state)
                    .bind(&event.reason)
                    .bind(&event.triggered_by)
                    .bind(metadata)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::db(&ctx))?;
                let written = from_pg(&row)?;
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(CHANGE_CHANNEL)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::db(&ctx))?;
                tx.commit().await.map_err(StoreError::db(&ctx))?;
                Ok(Some(written))
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::db(&ctx))?;
                let row = sqlx::query(
                    "SELECT (SELECT max(seq) FROM policy_candidate_events) AS newest, \
                     EXISTS (SELECT 1 FROM policy_versions WHERE sha256 = ?1) AS known",
                )
                .bind(&event.sha256)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::db(&ctx))?;
                let newest: Option<i64> = row.try_get("newest").map_err(corrupt("seq"))?;
                let known: bool = row.try_get("known").map_err(corrupt("sha256"))?;
                if !known {
                    return Err(StoreError::UnknownPolicy(event.sha256.clone()));
                }
                if newest != expected {
                    return Ok(None);
                }
                let sql = format!(
                    "INSERT INTO policy_candidate_events \
                     (sha256, action, state, reason, triggered_by, metadata, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING {COLUMNS_LITE}"
                );
                let row = sqlx::query(&sql)
                    .bind(&event.sha256)
                    .bind(event.action.as_str())
                    .bind(state)
                    .bind(&event.reason)
                    .bind(&event.triggered_by)
                    .bind(metadata)
                    .bind(super::sqlite::ts(Utc::now()))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::db(&ctx))?;
                let written = from_lite(&row)?;
                tx.commit().await.map_err(StoreError::db(&ctx))?;
                Ok(Some(written))
            }
        }
    }
}
