//! The SQLite dialect of the store: SQL text and row decoding. The transactions are
//! written once in [`super::tx`]; this file says how SQLite spells their steps ([`Lite`])
//! and holds the single-statement reads and writes.
//!
//! UUIDs are canonical text, id lists and metadata JSON text, timestamps fixed-width UTC
//! text ([`ts`]) so that text order is time order. Every writing transaction starts with
//! `BEGIN IMMEDIATE`, taking the write lock before the first read: the previous values it
//! reads are the ones it replaces, and no transaction fails upgrading a read lock.

use super::outbox::{self, AlertCounts, AlertEvent, AlertState, DeliveryOutcome, NewAlertEvent};
use super::tx::{Dialect, Tx};
use super::types::{
    parse_action, parse_category, parse_processor, parse_strategy, to_u32, to_u8, total_to_u64, CategoryRow,
    HistoryEntry, LatencyRow, MetricsBucket, MetricsDelta, NewHistory, NewPolicyVersion, PolicyVersionRow,
    StoredConfig, WindowRow,
};
use super::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use rollout_policy::{Config, RepositoryStats};
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::Row;
use uuid::Uuid;

const CONFIG_COLUMNS: &str = "id, feature_name, rollout_percentage, is_active, target_repositories, \
    excluded_repositories, rollout_strategy, max_error_rate, monitoring_window_hours, auto_rollback_enabled, \
    emergency_stop, min_jobs_for_rollback, metadata, state_changed_at, created_at, updated_at, config_version, rolled_back";

const HISTORY_COLUMNS: &str =
    "id, seq, rollout_config_id, action, previous_percentage, new_percentage, reason, triggered_by, metadata, created_at";

/// A timestamp as stored: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub(super) fn ts(t: DateTime<Utc>) -> String {
    // `%Y-%m-%dT%H:%M:%S%.6fZ` without parsing a format string per call
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(column: &'static str, s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt { column, message: format!("`{s}` is not a timestamp: {e}") })
}

fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(|e| StoreError::Corrupt { column, message: e.to_string() })
}

fn get_ts(row: &SqliteRow, column: &'static str) -> StoreResult<DateTime<Utc>> {
    parse_ts(column, &get::<String>(row, column)?)
}

fn get_opt_ts(row: &SqliteRow, column: &'static str) -> StoreResult<Option<DateTime<Utc>>> {
    get::<Option<String>>(row, column)?.map(|s| parse_ts(column, &s)).transpose()
}

fn get_uuid(row: &SqliteRow, column: &'static str) -> StoreResult<Uuid> {
    let s: String = get(row, column)?;
    Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt { column, message: format!("`{s}`: {e}") })
}

fn get_opt_uuid(row: &SqliteRow, column: &'static str) -> StoreResult<Option<Uuid>> {
    match get::<Option<String>>(row, column)? {
        Some(s) => {
            Uuid::parse_str(&s).map(Some).map_err(|e| StoreError::Corrupt { column, message: format!("`{s}`: {e}") })
        }
        None => Ok(None),
    }
}

fn get_json<T: serde::de::DeserializeOwned>(row: &SqliteRow, column: &'static str) -> StoreResult<T> {
    let s: String = get(row, column)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Corrupt { column, message: e.to_string() })
}

fn config_from_row(row: &SqliteRow) -> StoreResult<StoredConfig> {
    let config = Config {
        feature_name: get(row, "feature_name")?,
        rollout_percentage: to_u8("rollout_percentage", get(row, "rollout_percentage")?)?,
        is_active: get(row, "is_active")?,
        target_repositories: get_json(row, "target_repositories")?,
        excluded_repositories: get_json(row, "excluded_repositories")?,
        rollout_strategy: parse_strategy(&get::<String>(row, "rollout_strategy")?)?,
        max_error_rate: get(row, "max_error_rate")?,
        monitoring_window_hours: to_u32("monitoring_window_hours", get(row, "monitoring_window_hours")?)?,
        auto_rollback_enabled: get(row, "auto_rollback_enabled")?,
        emergency_stop: get(row, "emergency_stop")?,
        min_jobs_for_rollback: to_u32("min_jobs_for_rollback", get(row, "min_jobs_for_rollback")?)?,
    };
    Ok(StoredConfig {
        id: get_uuid(row, "id")?,
        config,
        metadata: get_json(row, "metadata")?,
        state_changed_at: get_ts(row, "state_changed_at")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        version: get(row, "config_version")?,
        rolled_back: get(row, "rolled_back")?,
    })
}

fn history_from_row(row: &SqliteRow) -> StoreResult<HistoryEntry> {
    Ok(HistoryEntry {
        id: get_uuid(row, "id")?,
        seq: get(row, "seq")?,
        rollout_config_id: get_opt_uuid(row, "rollout_config_id")?,
        action: parse_action(&get::<String>(row, "action")?)?,
        previous_percentage: get(row, "previous_percentage")?,
        new_percentage: get(row, "new_percentage")?,
        reason: get(row, "reason")?,
        triggered_by: get(row, "triggered_by")?,
        metadata: get_json(row, "metadata")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub(super) async fn get_config(pool: &SqlitePool, feature: &str) -> StoreResult<StoredConfig> {
    let sql = format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration WHERE feature_name = ?1");
    let row = sqlx::query(&sql)
        .bind(feature)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(format!("read the configuration of `{feature}`")))?;
    match row {
        Some(row) => config_from_row(&row),
        None => Err(StoreError::UnknownFeature(feature.to_owned())),
    }
}

pub(super) async fn list_configs(pool: &SqlitePool) -> StoreResult<Vec<StoredConfig>> {
    let sql = format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration ORDER BY feature_name");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(StoreError::db("list the configurations"))?;
    rows.iter().map(config_from_row).collect()
}

fn new_uuid() -> String {
    Uuid::new_v4().to_string()
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// The SQLite steps of the store's transactions.
pub(super) struct Lite<'a>(pub(super) &'a SqlitePool);

impl Dialect for Lite<'_> {
    type Db = Sqlite;

    async fn begin(&self) -> Result<Tx<Self>, sqlx::Error> {
        self.0.begin_with("BEGIN IMMEDIATE").await
    }

    /// `BEGIN IMMEDIATE` holds the database's write lock already: `lock` changes nothing.
    async fn read_config(&self, tx: &mut Tx<Self>, feature: &str, _lock: bool) -> StoreResult<Option<StoredConfig>> {
        let sql = format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration WHERE feature_name = ?1");
        let row = sqlx::query(&sql)
            .bind(feature)
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::db(format!("read the configuration of `{feature}`")))?;
        row.as_ref().map(config_from_row).transpose()
    }

    async fn create_config(&self, tx: &mut Tx<Self>, feature: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO rollout_configuration (id, feature_name, is_active, state_changed_at, created_at, updated_at) \
             VALUES (?1, ?2, 1, ?3, ?3, ?3) ON CONFLICT (feature_name) DO NOTHING RETURNING id",
        )
        .bind(new_uuid())
        .bind(feature)
        .bind(ts(now))
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::db(format!("create the configuration of `{feature}`")))?;
        Ok(inserted.is_some())
    }

    async fn write_config(
        &self,
        tx: &mut Tx<Self>,
        before_version: i64,
        after: &StoredConfig,
    ) -> StoreResult<Option<StoredConfig>> {
        let sql = format!(
            "UPDATE rollout_configuration SET rollout_percentage = ?2, is_active = ?3, target_repositories = ?4, \
             excluded_repositories = ?5, rollout_strategy = ?6, max_error_rate = ?7, monitoring_window_hours = ?8, \
             auto_rollback_enabled = ?9, emergency_stop = ?10, min_jobs_for_rollback = ?11, metadata = ?12, \
             state_changed_at = ?13, updated_at = ?14, config_version = ?15, rolled_back = ?17 WHERE id = ?1 AND config_version = ?16 \
             RETURNING {CONFIG_COLUMNS}"
        );
        let c = &after.config;
        let row = sqlx::query(&sql)
            .bind(after.id.to_string())
            .bind(i64::from(c.rollout_percentage))
            .bind(c.is_active)
            .bind(json_text(&c.target_repositories))
            .bind(json_text(&c.excluded_repositories))
            .bind(c.rollout_strategy.as_str())
            .bind(c.max_error_rate)
            .bind(i64::from(c.monitoring_window_hours))
            .bind(c.auto_rollback_enabled)
            .bind(c.emergency_stop)
            .bind(i64::from(c.min_jobs_for_rollback))
            .bind(json_text(&after.metadata))
            .bind(ts(after.state_changed_at))
            .bind(ts(after.updated_at))
            .bind(after.version)
            .bind(before_version)
            .bind(after.rolled_back)
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::db(format!("write the configuration of `{}`", c.feature_name)))?;
        row.as_ref().map(config_from_row).transpose()
    }

    async fn insert_history(
        &self,
        tx: &mut Tx<Self>,
        config_id: Option<Uuid>,
        feature: &str,
        entry: &NewHistory,
        now: DateTime<Utc>,
    ) -> StoreResult<HistoryEntry> {
        let sql = format!(
            "INSERT INTO rollout_history (id, rollout_config_id, action, previous_percentage, new_percentage, reason, \
             triggered_by, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING {HISTORY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(new_uuid())
            .bind(config_id.map(|u| u.to_string()))
            .bind(entry.action.as_str())
            .bind(entry.previous_percentage)
            .bind(entry.new_percentage)
            .bind(entry.reason.as_deref())
            .bind(&entry.triggered_by)
            .bind(entry.metadata.to_string())
            .bind(ts(now))
            .fetch_one(&mut **tx)
            .await
            .map_err(StoreError::db(format!("write the `{}` history row of `{feature}`", entry.action.as_str())))?;
        history_from_row(&row)
    }

    /// SQLite has no notifications: instances of one file re-read on their own.
    async fn notify(&self, _tx: &mut Tx<Self>, _payload: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn insert_config_version(
        &self,
        tx: &mut Tx<Self>,
        after: &StoredConfig,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        super::config_versions::sqlite::insert(tx, after, now).await
    }

    async fn insert_event(&self, tx: &mut Tx<Self>, event: &NewAlertEvent, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(&outbox::sql::lite(outbox::sql::INSERT))
            .bind(event.idempotency_key.to_string())
            .bind(&event.kind)
            .bind(event.level.as_str())
            .bind(event.feature.as_deref())
            .bind(&event.summary)
            .bind(event.details.to_string())
            .bind(ts(now))
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("write the `{}` alert event", event.kind)))?;
        Ok(())
    }

    /// `BEGIN IMMEDIATE` holds the write lock already.
    async fn health_level(&self, tx: &mut Tx<Self>, feature: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query(&outbox::sql::lite(outbox::sql::HEALTH_LEVEL))
            .bind(feature)
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::db(format!("read the health level of `{feature}`")))?;
        row.map(|r| get::<String>(&r, "level")).transpose()
    }

    async fn set_health_level(
        &self,
        tx: &mut Tx<Self>,
        feature: &str,
        previous: Option<&str>,
        level: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (insert, update) =
            (outbox::sql::lite(outbox::sql::INSERT_HEALTH_LEVEL), outbox::sql::lite(outbox::sql::UPDATE_HEALTH_LEVEL));
        let query = match previous {
            None => sqlx::query(&insert).bind(feature).bind(level).bind(ts(now)),
            Some(p) => sqlx::query(&update).bind(feature).bind(level).bind(p).bind(ts(now)),
        };
        let done = query
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("record the health level of `{feature}`")))?;
        Ok(done.rows_affected() == 1)
    }

    /// `BEGIN IMMEDIATE` serialises writers already.
    async fn lock_policies(&self, _tx: &mut Tx<Self>) -> StoreResult<()> {
        Ok(())
    }

    async fn policy_state(&self, tx: &mut Tx<Self>, sha256: &str) -> StoreResult<(bool, Option<String>)> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM policy_versions WHERE sha256 = ?1) AS known, \
             (SELECT sha256 FROM policy_versions WHERE active = 1) AS active",
        )
        .bind(sha256)
        .fetch_one(&mut **tx)
        .await
        .map_err(StoreError::db(format!("read the state of policy `{sha256}`")))?;
        Ok((get(&row, "known")?, get(&row, "active")?))
    }

    async fn set_active_policy(&self, tx: &mut Tx<Self>, sha256: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let ctx = format!("activate policy `{sha256}`");
        sqlx::query("UPDATE policy_versions SET active = 0 WHERE active = 1 AND sha256 <> ?1")
            .bind(sha256)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(&ctx))?;
        sqlx::query("UPDATE policy_versions SET active = 1, activated_at = ?2 WHERE sha256 = ?1")
            .bind(sha256)
            .bind(ts(now))
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(&ctx))?;
        Ok(())
    }

    async fn claim_batches(&self, tx: &mut Tx<Self>, ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        // `WHERE true` tells the parser the ON CONFLICT belongs to the INSERT
        let rows = sqlx::query(
            "INSERT INTO rollout_applied_batches (batch_id, applied_at) SELECT value, ?2 FROM json_each(?1) \
             WHERE true ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
        )
        .bind(json_text(&ids))
        .bind(ts(now))
        .fetch_all(&mut **tx)
        .await
        .map_err(StoreError::db(format!("record {} outcome batch keys", ids.len())))?;
        rows.iter().map(|r| get_uuid(r, "batch_id")).collect()
    }

    /// One statement per bucket inside the transaction (one fsync for the group); integer
    /// overflow makes SQLite arithmetic a float, so the sum is capped with `min`.
    async fn add_metrics(&self, tx: &mut Tx<Self>, deltas: &[MetricsDelta], now: DateTime<Utc>) -> StoreResult<()> {
        let now = ts(now);
        for d in deltas {
            let done = sqlx::query(
                "INSERT INTO rollout_metrics (id, rollout_config_id, repository_id, processor_type, success_count, \
                 error_count, total_jobs, total_processing_time_ms, timed_jobs, last_error_message, last_error_at, \
                 metrics_window_start, metrics_window_end, created_at, updated_at) \
                 SELECT ?1, c.id, ?3, ?4, ?5, ?6, ?5 + ?6, ?7, ?8, ?9, ?10, \
                 CASE WHEN c.state_changed_at > ?11 AND c.state_changed_at <= ?12 THEN c.state_changed_at ELSE ?11 END, \
                 ?13, ?14, ?14 FROM rollout_configuration c WHERE c.id = ?2 \
                 ON CONFLICT (rollout_config_id, repository_id, processor_type, metrics_window_start) DO UPDATE SET \
                 success_count = success_count + excluded.success_count, \
                 error_count = error_count + excluded.error_count, \
                 total_jobs = total_jobs + excluded.total_jobs, \
                 total_processing_time_ms = min(total_processing_time_ms + excluded.total_processing_time_ms, \
                 9223372036854775807), \
                 timed_jobs = timed_jobs + excluded.timed_jobs, \
                 last_error_message = CASE WHEN excluded.last_error_at IS NOT NULL AND (last_error_at IS NULL OR \
                 excluded.last_error_at >= last_error_at) THEN excluded.last_error_message ELSE last_error_message END, \
                 last_error_at = CASE WHEN excluded.last_error_at IS NOT NULL AND (last_error_at IS NULL OR \
                 excluded.last_error_at >= last_error_at) THEN excluded.last_error_at ELSE last_error_at END, \
                 updated_at = excluded.updated_at",
            )
            .bind(new_uuid())
            .bind(d.config_id.to_string())
            .bind(d.repository_id.to_string())
            .bind(d.processor.as_str())
            .bind(d.success_count)
            .bind(d.error_count)
            .bind(d.processing_time_ms)
            .bind(d.timed_jobs)
            .bind(d.last_error_message.as_deref())
            .bind(d.last_error_at.map(ts))
            .bind(ts(d.hour_start))
            .bind(ts(d.at))
            .bind(ts(d.hour_start + chrono::TimeDelta::hours(1)))
            .bind(&now)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("record {} metric buckets", deltas.len())))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Corrupt {
                    column: "rollout_config_id",
                    message: format!("configuration `{}` does not exist (deleted while recording?)", d.config_id),
                });
            }
        }
        Ok(())
    }

    /// One statement for the group (SQLite applies the upsert row by row, so a key may come
    /// twice); counts are capped at the INTEGER maximum with `min`.
    async fn add_latency(&self, tx: &mut Tx<Self>, deltas: &[MetricsDelta]) -> StoreResult<()> {
        let rows: Vec<(String, &str, String, String, String, u16, i64)> = deltas
            .iter()
            .flat_map(|d| {
                let (hour, at, end) = (ts(d.hour_start), ts(d.at), ts(d.hour_start + chrono::TimeDelta::hours(1)));
                d.latency_buckets.iter().map(move |&(b, c)| {
                    (d.config_id.to_string(), d.processor.as_str(), hour.clone(), at.clone(), end.clone(), b, c)
                })
            })
            .collect();
        sqlx::query(
            "INSERT INTO rollout_latency_buckets (rollout_config_id, processor_type, metrics_window_start, \
             metrics_window_end, bucket, job_count) \
             SELECT c.id, json_extract(j.value, '$[1]'), CASE WHEN c.state_changed_at > json_extract(j.value, '$[2]') \
             AND c.state_changed_at <= json_extract(j.value, '$[3]') THEN c.state_changed_at ELSE json_extract(j.value, '$[2]') END, \
             json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'), json_extract(j.value, '$[6]') \
             FROM json_each(?1) AS j JOIN rollout_configuration c ON c.id = json_extract(j.value, '$[0]') WHERE true \
             ON CONFLICT (rollout_config_id, processor_type, metrics_window_start, bucket) DO UPDATE SET \
             job_count = min(job_count + excluded.job_count, 9223372036854775807)",
        )
        .bind(json_text(&rows))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db(format!("record {} processing-time bucket counts", rows.len())))?;
        Ok(())
    }

    /// A busy database is waited for (the busy timeout), not raced.
    fn lost_race(&self, _error: &StoreError) -> bool {
        false
    }
}

/// Whether the rollout tables exist, and the versions of the migrations applied.
pub(super) async fn migration_state(pool: &SqlitePool) -> StoreResult<(bool, Vec<i64>)> {
    let ctx = "look for the rollout tables";
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('rollout_configuration', '_sqlx_migrations')",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(ctx))?;
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Ok((tables.iter().any(|t| t == "rollout_configuration"), Vec::new()));
    }
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(ctx))?;
    Ok((tables.iter().any(|t| t == "rollout_configuration"), versions))
}

/// Forget outcome batch keys applied before `before`.
pub(super) async fn prune_applied_batches(pool: &SqlitePool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM rollout_applied_batches WHERE applied_at < ?1")
        .bind(ts(before))
        .execute(pool)
        .await
        .map_err(StoreError::db("forget the outcome batch keys past their retention"))?;
    Ok(done.rows_affected())
}

pub(super) async fn config_id(pool: &SqlitePool, feature: &str) -> StoreResult<Uuid> {
    let row = sqlx::query("SELECT id FROM rollout_configuration WHERE feature_name = ?1")
        .bind(feature)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(format!("look up feature `{feature}`")))?;
    match row {
        Some(row) => get_uuid(&row, "id"),
        None => Err(StoreError::UnknownFeature(feature.to_owned())),
    }
}

pub(super) async fn history(pool: &SqlitePool, feature: &str, limit: u32) -> StoreResult<Vec<HistoryEntry>> {
    let id = config_id(pool, feature).await?;
    let sql = format!(
        "SELECT {HISTORY_COLUMNS} FROM rollout_history WHERE rollout_config_id = ?1 OR rollout_config_id IS NULL \
         ORDER BY seq DESC LIMIT ?2"
    );
    let rows = sqlx::query(&sql)
        .bind(id.to_string())
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(format!("read the history of `{feature}`")))?;
    rows.iter().map(history_from_row).collect()
}

pub(super) async fn find_repository(pool: &SqlitePool, owner: &str, name: &str) -> StoreResult<Option<Uuid>> {
    let row = sqlx::query("SELECT id FROM repositories WHERE lower(owner) = lower(?1) AND lower(name) = lower(?2)")
        .bind(owner)
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(format!("look up repository `{owner}/{name}`")))?;
    row.map(|r| get_uuid(&r, "id")).transpose()
}

pub(super) async fn upsert_repository(
    pool: &SqlitePool,
    owner: &str,
    name: &str,
    stats: &RepositoryStats,
) -> StoreResult<Uuid> {
    let row = sqlx::query(
        "INSERT INTO repositories (id, owner, name, stargazers_count, contributor_count, pull_request_count) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (lower(owner), lower(name)) DO UPDATE SET \
         stargazers_count = excluded.stargazers_count, contributor_count = excluded.contributor_count, \
         pull_request_count = excluded.pull_request_count RETURNING id",
    )
    .bind(new_uuid())
    .bind(owner)
    .bind(name)
    .bind(i64::from(stats.star_count))
    .bind(i64::from(stats.contributor_count))
    .bind(i64::from(stats.pr_count))
    .fetch_one(pool)
    .await
    .map_err(StoreError::db(format!("write repository `{owner}/{name}`")))?;
    get_uuid(&row, "id")
}

fn stats_from_row(row: &SqliteRow) -> StoreResult<RepositoryStats> {
    Ok(RepositoryStats {
        star_count: to_u32("stargazers_count", get(row, "stargazers_count")?)?,
        contributor_count: to_u32("contributor_count", get(row, "contributor_count")?)?,
        pr_count: to_u32("pull_request_count", get(row, "pull_request_count")?)?,
    })
}

pub(super) async fn repository_stats(pool: &SqlitePool, id: Uuid) -> StoreResult<Option<RepositoryStats>> {
    let row =
        sqlx::query("SELECT stargazers_count, contributor_count, pull_request_count FROM repositories WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(pool)
            .await
            .map_err(StoreError::db(format!("read repository `{id}`")))?;
    row.map(|r| stats_from_row(&r)).transpose()
}

pub(super) async fn list_repository_stats(pool: &SqlitePool) -> StoreResult<Vec<(Uuid, RepositoryStats)>> {
    let rows =
        sqlx::query("SELECT id, stargazers_count, contributor_count, pull_request_count FROM repositories ORDER BY id")
            .fetch_all(pool)
            .await
            .map_err(StoreError::db("list the repositories"))?;
    rows.iter().map(|r| Ok((get_uuid(r, "id")?, stats_from_row(r)?))).collect()
}

pub(super) async fn list_repository_ids(pool: &SqlitePool) -> StoreResult<Vec<Uuid>> {
    let rows = sqlx::query("SELECT id FROM repositories UNION SELECT repository_id FROM repository_categories")
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("list the repository ids"))?;
    rows.iter().map(|r| get_uuid(r, "id")).collect()
}

pub(super) async fn upsert_categories(pool: &SqlitePool, rows: &[CategoryRow]) -> StoreResult<()> {
    let ctx = format!("write {} categorisations", rows.len());
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::db(ctx.clone()))?;
    let now = ts(Utc::now());
    for r in rows {
        sqlx::query(
            "INSERT INTO repository_categories (id, repository_id, category, priority_level, is_test_repository, \
             star_count, contributor_count, pr_count, monthly_activity_score, last_categorized_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10) ON CONFLICT (repository_id) DO UPDATE SET \
             category = excluded.category, priority_level = excluded.priority_level, \
             is_test_repository = excluded.is_test_repository, star_count = excluded.star_count, \
             contributor_count = excluded.contributor_count, pr_count = excluded.pr_count, \
             monthly_activity_score = excluded.monthly_activity_score, \
             last_categorized_at = excluded.last_categorized_at, updated_at = excluded.updated_at",
        )
        .bind(new_uuid())
        .bind(r.repository_id.to_string())
        .bind(r.category.as_str())
        .bind(i64::from(r.priority_level))
        .bind(r.is_test_repository)
        .bind(i64::from(r.stats.star_count))
        .bind(i64::from(r.stats.contributor_count))
        .bind(i64::from(r.stats.pr_count))
        .bind(i64::from(r.monthly_activity_score))
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!("write the categorisation of `{}`", r.repository_id)))?;
    }
    tx.commit().await.map_err(StoreError::db(ctx))?;
    Ok(())
}

/// One page of categorisations in `repository_id` order: the first `limit`, or the
/// first `limit` after `after` (keyset pagination on the unique index; see
/// [`super::Store::list_categories`]).
pub(super) async fn categories_page(
    pool: &SqlitePool,
    after: Option<Uuid>,
    limit: i64,
) -> StoreResult<Vec<CategoryRow>> {
    const COLUMNS: &str = "SELECT repository_id, category, priority_level, is_test_repository, star_count, \
                           contributor_count, pr_count, monthly_activity_score FROM repository_categories";
    let sql = match after {
        None => format!("{COLUMNS} ORDER BY repository_id LIMIT ?"),
        Some(_) => format!("{COLUMNS} WHERE repository_id > ? ORDER BY repository_id LIMIT ?"),
    };
    let query = match after {
        None => sqlx::query(&sql),
        Some(cursor) => sqlx::query(&sql).bind(cursor.to_string()),
    }
    .bind(limit);
    let rows = query.fetch_all(pool).await.map_err(StoreError::db("list the categorisations"))?;
    rows.iter().map(category_row).collect()
}

fn category_row(r: &SqliteRow) -> StoreResult<CategoryRow> {
    Ok(CategoryRow {
        repository_id: get_uuid(r, "repository_id")?,
        category: parse_category(&get::<String>(r, "category")?)?,
        priority_level: to_u8("priority_level", get(r, "priority_level")?)?,
        is_test_repository: get(r, "is_test_repository")?,
        stats: RepositoryStats {
            star_count: to_u32("star_count", get(r, "star_count")?)?,
            contributor_count: to_u32("contributor_count", get(r, "contributor_count")?)?,
            pr_count: to_u32("pr_count", get(r, "pr_count")?)?,
        },
        monthly_activity_score: to_u8("monthly_activity_score", get(r, "monthly_activity_score")?)?,
    })
}

/// The rows of `sql` over the metrics window of one configuration (`?1` the configuration,
/// `?2` buckets ending after, `?3` starting at or after); `what` names the read in errors.
async fn window_rows(
    pool: &SqlitePool,
    sql: &str,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
    what: &str,
) -> StoreResult<Vec<SqliteRow>> {
    sqlx::query(sql)
        .bind(config_id.to_string())
        .bind(ts(ends_after))
        .bind(ts(starts_at_or_after))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(format!("read the {what} of configuration `{config_id}`")))
}

/// The window's sums with `total()`, which is a float and cannot overflow (`sum()` fails
/// with "integer overflow"): exact below 2^53, saturating at `i64::MAX` like Postgres.
pub(super) async fn metrics_window(
    pool: &SqlitePool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<WindowRow>> {
    let sql = "SELECT processor_type, metrics_window_start, total(success_count) AS ok, total(error_count) AS err, \
        total(total_jobs) AS total, total(total_processing_time_ms) AS tsum, total(timed_jobs) AS tcnt \
        FROM rollout_metrics WHERE rollout_config_id = ?1 AND metrics_window_end > ?2 AND metrics_window_start >= ?3 \
        GROUP BY processor_type, metrics_window_start ORDER BY metrics_window_start, processor_type";
    let rows = window_rows(pool, sql, config_id, ends_after, starts_at_or_after, "metrics").await?;
    rows.iter()
        .map(|r| {
            Ok(WindowRow {
                processor: parse_processor(&get::<String>(r, "processor_type")?)?,
                window_start: get_ts(r, "metrics_window_start")?,
                success_count: total_to_u64("success_count", get(r, "ok")?)?,
                error_count: total_to_u64("error_count", get(r, "err")?)?,
                total_jobs: total_to_u64("total_jobs", get(r, "total")?)?,
                total_processing_time_ms: total_to_u64("total_processing_time_ms", get(r, "tsum")?)?,
                timed_jobs: total_to_u64("timed_jobs", get(r, "tcnt")?)?,
            })
        })
        .collect()
}

/// Sums with `total()` (see [`metrics_window`]).
pub(super) async fn latency_window(
    pool: &SqlitePool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<LatencyRow>> {
    let sql = "SELECT processor_type, bucket, total(job_count) AS jobs FROM rollout_latency_buckets \
        WHERE rollout_config_id = ?1 AND metrics_window_end > ?2 AND metrics_window_start >= ?3 \
        GROUP BY processor_type, bucket ORDER BY processor_type, bucket";
    let rows = window_rows(pool, sql, config_id, ends_after, starts_at_or_after, "processing-time buckets").await?;
    rows.iter()
        .map(|r| {
            let bucket: i64 = get(r, "bucket")?;
            Ok(LatencyRow {
                processor: parse_processor(&get::<String>(r, "processor_type")?)?,
                bucket: u16::try_from(bucket)
                    .map_err(|_| StoreError::Corrupt { column: "bucket", message: format!("bucket {bucket}") })?,
                count: total_to_u64("job_count", get(r, "jobs")?)?,
            })
        })
        .collect()
}

pub(super) async fn error_messages(
    pool: &SqlitePool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<(Option<String>, u64)>> {
    let sql = "SELECT last_error_message, total(error_count) AS errors FROM rollout_metrics \
        WHERE rollout_config_id = ?1 AND metrics_window_end > ?2 AND metrics_window_start >= ?3 AND error_count > 0 \
        GROUP BY last_error_message";
    let rows = window_rows(pool, sql, config_id, ends_after, starts_at_or_after, "errors").await?;
    rows.iter().map(|r| Ok((get(r, "last_error_message")?, total_to_u64("error_count", get(r, "errors")?)?))).collect()
}

pub(super) async fn list_buckets(pool: &SqlitePool, config_id: Uuid) -> StoreResult<Vec<MetricsBucket>> {
    let rows = sqlx::query(
        "SELECT rollout_config_id, repository_id, processor_type, success_count, error_count, total_jobs, \
         total_processing_time_ms, timed_jobs, CAST(average_processing_time AS REAL) AS average_processing_time, \
         last_error_message, last_error_at, \
         metrics_window_start, metrics_window_end FROM rollout_metrics WHERE rollout_config_id = ?1 \
         ORDER BY metrics_window_start, repository_id, processor_type",
    )
    .bind(config_id.to_string())
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(format!("list the metric buckets of configuration `{config_id}`")))?;
    rows.iter()
        .map(|r| {
            Ok(MetricsBucket {
                config_id: get_uuid(r, "rollout_config_id")?,
                repository_id: get_uuid(r, "repository_id")?,
                processor: parse_processor(&get::<String>(r, "processor_type")?)?,
                success_count: get(r, "success_count")?,
                error_count: get(r, "error_count")?,
                total_jobs: get(r, "total_jobs")?,
                total_processing_time_ms: get(r, "total_processing_time_ms")?,
                timed_jobs: get(r, "timed_jobs")?,
                average_processing_time: get(r, "average_processing_time")?,
                last_error_message: get(r, "last_error_message")?,
                last_error_at: get_opt_ts(r, "last_error_at")?,
                window_start: get_ts(r, "metrics_window_start")?,
                window_end: get_ts(r, "metrics_window_end")?,
            })
        })
        .collect()
}

const POLICY_COLUMNS: &str =
    "sha256, name, semver, notes, uploaded_by, uploaded_at, active, activated_at, length(bytes) AS size";

fn policy_from_row(r: &SqliteRow) -> StoreResult<PolicyVersionRow> {
    Ok(PolicyVersionRow {
        sha256: get(r, "sha256")?,
        name: get(r, "name")?,
        semver: get(r, "semver")?,
        notes: get(r, "notes")?,
        uploaded_by: get(r, "uploaded_by")?,
        uploaded_at: get_ts(r, "uploaded_at")?,
        active: get(r, "active")?,
        activated_at: get_opt_ts(r, "activated_at")?,
        size: get(r, "size")?,
    })
}

pub(super) async fn put_policy_version(pool: &SqlitePool, v: &NewPolicyVersion) -> StoreResult<PolicyVersionRow> {
    let ctx = format!("store policy `{}`", v.sha256);
    sqlx::query(
        "INSERT INTO policy_versions (sha256, bytes, name, semver, notes, uploaded_by, uploaded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&v.sha256)
    .bind(&v.bytes)
    .bind(v.name.as_deref())
    .bind(&v.semver)
    .bind(v.notes.as_deref())
    .bind(v.uploaded_by.as_deref())
    .bind(ts(Utc::now()))
    .execute(pool)
    .await
    .map_err(StoreError::db(ctx.clone()))?;
    let sql = format!("SELECT {POLICY_COLUMNS} FROM policy_versions WHERE sha256 = ?1");
    let row = sqlx::query(&sql).bind(&v.sha256).fetch_one(pool).await.map_err(StoreError::db(ctx))?;
    policy_from_row(&row)
}

pub(super) async fn list_policy_versions(pool: &SqlitePool) -> StoreResult<Vec<PolicyVersionRow>> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY uploaded_at DESC, sha256");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(StoreError::db("list the policy versions"))?;
    rows.iter().map(policy_from_row).collect()
}

pub(super) async fn policy_bytes(pool: &SqlitePool, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
    let row = sqlx::query("SELECT bytes FROM policy_versions WHERE sha256 = ?1")
        .bind(sha256)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(format!("read policy `{sha256}`")))?;
    row.map(|r| get(&r, "bytes")).transpose()
}

fn event_from_row(row: &SqliteRow) -> StoreResult<AlertEvent> {
    let (level, state) = outbox::parse_level_state(&get::<String>(row, "level")?, &get::<String>(row, "state")?)?;
    Ok(AlertEvent {
        seq: get(row, "seq")?,
        idempotency_key: get_uuid(row, "idempotency_key")?,
        kind: get(row, "kind")?,
        level,
        feature: get(row, "feature_name")?,
        summary: get(row, "summary")?,
        details: get_json(row, "details")?,
        created_at: get_ts(row, "created_at")?,
        state,
        attempts: to_u32("attempts", get(row, "attempts")?)?,
        next_attempt_at: get_ts(row, "next_attempt_at")?,
        delivered_targets: get_json(row, "delivered_targets")?,
        last_error: get(row, "last_error")?,
        delivered_at: get_opt_ts(row, "delivered_at")?,
    })
}

pub(super) async fn insert_alert_event(
    pool: &SqlitePool,
    event: &NewAlertEvent,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let lite = Lite(pool);
    let mut tx = lite.begin().await.map_err(StoreError::db("write an alert event"))?;
    lite.insert_event(&mut tx, event, now).await?;
    tx.commit().await.map_err(StoreError::db("write an alert event"))
}

pub(super) async fn claim_alert_events(
    pool: &SqlitePool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<AlertEvent>> {
    let rows = sqlx::query(&outbox::sql::lite(&outbox::sql::claim("")))
        .bind(ts(now))
        .bind(ts(lease_until))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("claim due alert events"))?;
    let mut events = rows.iter().map(event_from_row).collect::<StoreResult<Vec<_>>>()?;
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

pub(super) async fn finish_alert_event(pool: &SqlitePool, seq: i64, outcome: &DeliveryOutcome) -> StoreResult<()> {
    sqlx::query(&outbox::sql::lite(outbox::sql::FINISH))
        .bind(seq)
        .bind(outcome.state.as_str())
        .bind(i64::from(outcome.attempts))
        .bind(ts(outcome.next_attempt_at))
        .bind(json_text(&outcome.delivered_targets))
        .bind(outcome.last_error.as_deref())
        .bind(outcome.delivered_at.map(ts))
        .execute(pool)
        .await
        .map_err(StoreError::db(format!("record the delivery of alert event {seq}")))?;
    Ok(())
}

pub(super) async fn list_alert_events(
    pool: &SqlitePool,
    state: Option<AlertState>,
    limit: u32,
) -> StoreResult<Vec<AlertEvent>> {
    let sql = outbox::sql::lite(&outbox::sql::list(state.is_some()));
    let mut query = sqlx::query(&sql).bind(i64::from(limit));
    if let Some(s) = state {
        query = query.bind(s.as_str());
    }
    let rows = query.fetch_all(pool).await.map_err(StoreError::db("list the alert events"))?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn alert_counts(pool: &SqlitePool) -> StoreResult<AlertCounts> {
    let rows = sqlx::query(outbox::sql::COUNTS).fetch_all(pool).await.map_err(StoreError::db("count alert events"))?;
    let mut counts = AlertCounts::default();
    for r in &rows {
        counts.set(&get::<String>(r, "state")?, get::<i64>(r, "n")?);
    }
    Ok(counts)
}

pub(super) async fn retry_alert_event(pool: &SqlitePool, key: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
    let done = sqlx::query(&outbox::sql::lite(outbox::sql::RETRY))
        .bind(key.to_string())
        .bind(ts(now))
        .execute(pool)
        .await
        .map_err(StoreError::db(format!("requeue alert event `{key}`")))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn prune_alert_events(pool: &SqlitePool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query(&outbox::sql::lite(outbox::sql::PRUNE))
        .bind(ts(before))
        .execute(pool)
        .await
        .map_err(StoreError::db("prune old alert events"))?;
    Ok(done.rows_affected())
}
