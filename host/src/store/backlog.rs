//! Queue backlog reports (`rollout_backlog_reports`): how many items wait in a processor's
//! queue and how long the oldest has waited, as reported by the processors (or the code
//! that feeds them), kept as a short time series.
//!
//! A report is one row written by a single `INSERT … SELECT` that resolves the feature's
//! configuration id in the same statement (an unknown feature inserts nothing and is
//! [`StoreError::UnknownFeature`]). [`Store::backlog_window`] reads the reports of one
//! configuration since a time, oldest first (ties in the order they were stored);
//! [`Store::prune_backlog`] deletes old ones (a serving instance keeps
//! [`BACKLOG_RETENTION`]).

use super::types::{parse_processor, to_u64};
use super::{tx, Store, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use rollout_policy::Processor;
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

/// How long a serving instance keeps backlog reports (older ones are pruned).
pub const BACKLOG_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// The time before which a serving instance prunes reports: now minus [`BACKLOG_RETENTION`].
pub fn retention_cutoff() -> DateTime<Utc> {
    Utc::now() - BACKLOG_RETENTION
}

/// One backlog report of a processor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacklogReport {
    /// The processor whose queue it is.
    pub processor: Processor,
    /// Items waiting.
    pub depth: u64,
    /// How long the oldest waiting item has waited, in seconds (0 when none waits).
    pub oldest_age_seconds: f64,
    /// When the report was stored.
    pub reported_at: DateTime<Utc>,
}

/// The SQL of the backlog reports, in both dialects (`$n` placeholders, spelled `?n` for
/// SQLite by [`lite`]).
mod sql {
    /// Append a report for feature $1: processor $2, depth $3, age $4, at $5; returns the row.
    pub const INSERT: &str = "INSERT INTO rollout_backlog_reports \
        (rollout_config_id, processor_type, depth, oldest_age_seconds, reported_at) \
        SELECT id, $2, $3, $4, $5 FROM rollout_configuration WHERE feature_name = $1 \
        RETURNING processor_type, depth, oldest_age_seconds, reported_at";

    /// The reports of configuration $1 made at or after $2, oldest first.
    pub const WINDOW: &str = "SELECT processor_type, depth, oldest_age_seconds, reported_at \
        FROM rollout_backlog_reports WHERE rollout_config_id = $1 AND reported_at >= $2 ORDER BY reported_at, seq";

    /// Delete the reports made before $1.
    pub const PRUNE: &str = "DELETE FROM rollout_backlog_reports WHERE reported_at < $1";

    /// The statement with SQLite's numbered placeholders.
    pub fn lite(sql: &str) -> String {
        sql.replace('$', "?")
    }
}

/// The depth as stored (a BIGINT), or an error naming it.
fn depth_column(depth: u64) -> StoreResult<i64> {
    i64::try_from(depth).map_err(|_| {
        StoreError::InvalidConfig(rollout_policy::ConfigError {
            field: "depth".into(),
            message: format!("`{depth}` is out of range: expected an integer from 0 to {}", i64::MAX),
        })
    })
}

fn decode_pg(row: &sqlx::postgres::PgRow) -> StoreResult<BacklogReport> {
    let get_err = |column: &'static str| move |e: sqlx::Error| StoreError::Corrupt { column, message: e.to_string() };
    Ok(BacklogReport {
        processor: parse_processor(&row.try_get::<String, _>("processor_type").map_err(get_err("processor_type"))?)?,
        depth: to_u64("depth", row.try_get("depth").map_err(get_err("depth"))?)?,
        oldest_age_seconds: row.try_get("oldest_age_seconds").map_err(get_err("oldest_age_seconds"))?,
        reported_at: row.try_get("reported_at").map_err(get_err("reported_at"))?,
    })
}

fn decode_lite(row: &sqlx::sqlite::SqliteRow) -> StoreResult<BacklogReport> {
    let get_err = |column: &'static str| move |e: sqlx::Error| StoreError::Corrupt { column, message: e.to_string() };
    let at: String = row.try_get("reported_at").map_err(get_err("reported_at"))?;
    let reported_at = DateTime::parse_from_rfc3339(&at).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        StoreError::Corrupt { column: "reported_at", message: format!("`{at}` is not a timestamp: {e}") }
    })?;
    Ok(BacklogReport {
        processor: parse_processor(&row.try_get::<String, _>("processor_type").map_err(get_err("processor_type"))?)?,
        depth: to_u64("depth", row.try_get("depth").map_err(get_err("depth"))?)?,
        oldest_age_seconds: row.try_get("oldest_age_seconds").map_err(get_err("oldest_age_seconds"))?,
        reported_at,
    })
}

impl Store {
    /// Append a report for `feature` (unknown feature: [`StoreError::UnknownFeature`]): one
    /// `INSERT … SELECT`, stamped now. The database refuses a negative or non-finite age.
    pub async fn report_backlog(
        &self,
        feature: &str,
        processor: Processor,
        depth: u64,
        oldest_age_seconds: f64,
    ) -> StoreResult<BacklogReport> {
        let depth = depth_column(depth)?;
        let now = tx::now();
        let context = || format!("store the backlog report of `{feature}`");
        let row = match self {
            Store::Postgres(pool) => sqlx::query(sql::INSERT)
                .bind(feature)
                .bind(processor.as_str())
                .bind(depth)
                .bind(oldest_age_seconds)
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::db(context()))?
                .map(|r| decode_pg(&r))
                .transpose()?,
            Store::Sqlite(pool) => sqlx::query(&sql::lite(sql::INSERT))
                .bind(feature)
                .bind(processor.as_str())
                .bind(depth)
                .bind(oldest_age_seconds)
                .bind(super::sqlite::ts(now))
                .fetch_optional(pool)
                .await
                .map_err(StoreError::db(context()))?
                .map(|r| decode_lite(&r))
                .transpose()?,
        };
        row.ok_or_else(|| StoreError::UnknownFeature(feature.to_owned()))
    }

    /// Reports of configuration `config_id` made at or after `since`, oldest first.
    pub async fn backlog_window(&self, config_id: Uuid, since: DateTime<Utc>) -> StoreResult<Vec<BacklogReport>> {
        let context = || format!("read the backlog reports of configuration `{config_id}`");
        match self {
            Store::Postgres(pool) => sqlx::query(sql::WINDOW)
                .bind(config_id)
                .bind(since)
                .fetch_all(pool)
                .await
                .map_err(StoreError::db(context()))?
                .iter()
                .map(decode_pg)
                .collect(),
            Store::Sqlite(pool) => sqlx::query(&sql::lite(sql::WINDOW))
                .bind(config_id.to_string())
                .bind(super::sqlite::ts(since))
                .fetch_all(pool)
                .await
                .map_err(StoreError::db(context()))?
                .iter()
                .map(decode_lite)
                .collect(),
        }
    }

    /// Delete reports made before `before`; how many.
    pub async fn prune_backlog(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let done = match self {
            Store::Postgres(pool) => {
                sqlx::query(sql::PRUNE).bind(before).execute(pool).await.map(|d| d.rows_affected())
            }
            Store::Sqlite(pool) => sqlx::query(&sql::lite(sql::PRUNE))
                .bind(super::sqlite::ts(before))
                .execute(pool)
                .await
                .map(|d| d.rows_affected()),
        };
        done.map_err(StoreError::db("prune old backlog reports"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insert_resolves_the_feature_in_the_same_statement() {
        assert!(sql::INSERT.starts_with("INSERT INTO rollout_backlog_reports"));
        assert!(sql::INSERT.contains("SELECT id, $2, $3, $4, $5 FROM rollout_configuration WHERE feature_name = $1"));
        assert!(!sql::lite(sql::WINDOW).contains('$'));
    }

    #[test]
    fn a_depth_beyond_bigint_is_refused_naming_it() {
        assert_eq!(depth_column(7).ok(), Some(7));
        let e = depth_column(u64::MAX).unwrap_err();
        assert!(e.to_string().contains("depth"), "{e}");
    }
}
