//! The Postgres dialect of the store: SQL text and row decoding. The transactions are
//! written once in [`super::tx`]; this file says how Postgres spells their steps
//! ([`Pg`]) and holds the single-statement reads and writes.

use super::outbox::{self, AlertCounts, AlertEvent, AlertState, DeliveryOutcome, NewAlertEvent};
use super::tx::{Dialect, Tx};
use super::types::{
    parse_action, parse_category, parse_processor, parse_strategy, to_u32, to_u64, to_u8, CategoryRow, HistoryEntry,
    LatencyRow, MetricsBucket, MetricsDelta, NewHistory, NewPolicyVersion, PolicyVersionRow, StoredConfig, WindowRow,
};
use super::{StoreError, StoreResult, CHANGE_CHANNEL};
use chrono::{DateTime, Utc};
use rollout_policy::{Config, RepositoryStats};
use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::Row;
use uuid::Uuid;

const CONFIG_COLUMNS: &str = "id, feature_name, rollout_percentage, is_active, target_repositories, \
    excluded_repositories, rollout_strategy, max_error_rate::float8 AS max_error_rate, monitoring_window_hours, \
    auto_rollback_enabled, emergency_stop, min_jobs_for_rollback, metadata, state_changed_at, created_at, updated_at, \
    config_version, rolled_back";

const HISTORY_COLUMNS: &str =
    "id, seq, rollout_config_id, action, previous_percentage, new_percentage, reason, triggered_by, metadata, created_at";

/// The largest value of a BIGINT column: sums saturate there.
const MAX_BIGINT: &str = "9223372036854775807";

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

fn get<'r, T>(row: &'r PgRow, column: &'static str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(|e| StoreError::Corrupt { column, message: e.to_string() })
}

fn config_from_row(row: &PgRow) -> StoreResult<StoredConfig> {
    let config = Config {
        feature_name: get(row, "feature_name")?,
        rollout_percentage: to_u8("rollout_percentage", i64::from(get::<i32>(row, "rollout_percentage")?))?,
        is_active: get(row, "is_active")?,
        target_repositories: get(row, "target_repositories")?,
        excluded_repositories: get(row, "excluded_repositories")?,
        rollout_strategy: parse_strategy(&get::<String>(row, "rollout_strategy")?)?,
        max_error_rate: get(row, "max_error_rate")?,
        monitoring_window_hours: to_u32(
            "monitoring_window_hours",
            i64::from(get::<i32>(row, "monitoring_window_hours")?),
        )?,
        auto_rollback_enabled: get(row, "auto_rollback_enabled")?,
        emergency_stop: get(row, "emergency_stop")?,
        min_jobs_for_rollback: to_u32("min_jobs_for_rollback", i64::from(get::<i32>(row, "min_jobs_for_rollback")?))?,
    };
    Ok(StoredConfig {
        id: get(row, "id")?,
        config,
        metadata: get(row, "metadata")?,
        state_changed_at: get(row, "state_changed_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        version: get(row, "config_version")?,
        rolled_back: get(row, "rolled_back")?,
    })
}

fn history_from_row(row: &PgRow) -> StoreResult<HistoryEntry> {
    Ok(HistoryEntry {
        id: get(row, "id")?,
        seq: get(row, "seq")?,
        rollout_config_id: get(row, "rollout_config_id")?,
        action: parse_action(&get::<String>(row, "action")?)?,
        previous_percentage: get(row, "previous_percentage")?,
        new_percentage: get(row, "new_percentage")?,
        reason: get(row, "reason")?,
        triggered_by: get(row, "triggered_by")?,
        metadata: get(row, "metadata")?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) async fn get_config(pool: &PgPool, feature: &str) -> StoreResult<StoredConfig> {
    let sql = format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration WHERE feature_name = $1");
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

pub(super) async fn list_configs(pool: &PgPool) -> StoreResult<Vec<StoredConfig>> {
    let sql = format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration ORDER BY feature_name");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(StoreError::db("list the configurations"))?;
    rows.iter().map(config_from_row).collect()
}

/// The Postgres steps of the store's transactions.
pub(super) struct Pg<'a>(pub(super) &'a PgPool);

impl Dialect for Pg<'_> {
    type Db = Postgres;

    async fn begin(&self) -> Result<Tx<Self>, sqlx::Error> {
        self.0.begin().await
    }

    async fn read_config(&self, tx: &mut Tx<Self>, feature: &str, lock: bool) -> StoreResult<Option<StoredConfig>> {
        let (sql, what) = if lock {
            // `NO KEY`: a change never touches the key, so it must not block the outcomes'
            // inserts, whose foreign key takes `FOR KEY SHARE` on this row
            (
                format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration WHERE feature_name = $1 FOR NO KEY UPDATE"),
                "lock",
            )
        } else {
            (format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration WHERE feature_name = $1"), "read")
        };
        let row = sqlx::query(&sql)
            .bind(feature)
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::db(format!("{what} the configuration of `{feature}`")))?;
        row.as_ref().map(config_from_row).transpose()
    }

    async fn create_config(&self, tx: &mut Tx<Self>, feature: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO rollout_configuration (feature_name, is_active, state_changed_at, created_at, updated_at) \
             VALUES ($1, true, $2, $2, $2) ON CONFLICT (feature_name) DO NOTHING RETURNING id",
        )
        .bind(feature)
        .bind(now)
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
            "UPDATE rollout_configuration SET rollout_percentage = $2, is_active = $3, target_repositories = $4, \
             excluded_repositories = $5, rollout_strategy = $6, max_error_rate = $7::float8::numeric, \
             monitoring_window_hours = $8, auto_rollback_enabled = $9, emergency_stop = $10, \
             min_jobs_for_rollback = $11, metadata = $12, state_changed_at = $13, updated_at = $14, \
             config_version = $15, rolled_back = $17 WHERE id = $1 AND config_version = $16 RETURNING {CONFIG_COLUMNS}"
        );
        let c = &after.config;
        let row = sqlx::query(&sql)
            .bind(after.id)
            .bind(i32::from(c.rollout_percentage))
            .bind(c.is_active)
            .bind(&c.target_repositories)
            .bind(&c.excluded_repositories)
            .bind(c.rollout_strategy.as_str())
            .bind(c.max_error_rate)
            .bind(clamp_i32(c.monitoring_window_hours))
            .bind(c.auto_rollback_enabled)
            .bind(c.emergency_stop)
            .bind(clamp_i32(c.min_jobs_for_rollback))
            .bind(&after.metadata)
            .bind(after.state_changed_at)
            .bind(after.updated_at)
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
            "INSERT INTO rollout_history (rollout_config_id, action, previous_percentage, new_percentage, reason, \
             triggered_by, metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {HISTORY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(config_id)
            .bind(entry.action.as_str())
            .bind(entry.previous_percentage)
            .bind(entry.new_percentage)
            .bind(entry.reason.as_deref())
            .bind(&entry.triggered_by)
            .bind(&entry.metadata)
            .bind(now)
            .fetch_one(&mut **tx)
            .await
            .map_err(StoreError::db(format!("write the `{}` history row of `{feature}`", entry.action.as_str())))?;
        history_from_row(&row)
    }

    async fn notify(&self, tx: &mut Tx<Self>, payload: &str) -> StoreResult<()> {
        sqlx::query(NOTIFY)
            .bind(CHANGE_CHANNEL)
            .bind(payload)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("notify `{CHANGE_CHANNEL}` of `{payload}`")))?;
        Ok(())
    }

    async fn insert_config_version(
        &self,
        tx: &mut Tx<Self>,
        after: &StoredConfig,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        super::config_versions::pg::insert(tx, after, now).await
    }

    async fn insert_event(&self, tx: &mut Tx<Self>, event: &NewAlertEvent, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(outbox::sql::INSERT)
            .bind(event.idempotency_key)
            .bind(&event.kind)
            .bind(event.level.as_str())
            .bind(event.feature.as_deref())
            .bind(&event.summary)
            .bind(&event.details)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("write the `{}` alert event", event.kind)))?;
        Ok(())
    }

    async fn health_level(&self, tx: &mut Tx<Self>, feature: &str) -> StoreResult<Option<String>> {
        let sql = format!("{} FOR UPDATE", outbox::sql::HEALTH_LEVEL);
        let row = sqlx::query(&sql)
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
        let query = match previous {
            None => sqlx::query(outbox::sql::INSERT_HEALTH_LEVEL).bind(feature).bind(level).bind(now),
            Some(p) => sqlx::query(outbox::sql::UPDATE_HEALTH_LEVEL).bind(feature).bind(level).bind(p).bind(now),
        };
        let done = query
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("record the health level of `{feature}`")))?;
        Ok(done.rows_affected() == 1)
    }

    async fn lock_policies(&self, tx: &mut Tx<Self>) -> StoreResult<()> {
        sqlx::query("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db("lock the policy versions"))?;
        Ok(())
    }

    async fn policy_state(&self, tx: &mut Tx<Self>, sha256: &str) -> StoreResult<(bool, Option<String>)> {
        let row = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM policy_versions WHERE sha256 = $1) AS known, \
             (SELECT sha256 FROM policy_versions WHERE active) AS active",
        )
        .bind(sha256)
        .fetch_one(&mut **tx)
        .await
        .map_err(StoreError::db(format!("read the state of policy `{sha256}`")))?;
        let active: Option<String> = get(&row, "active")?;
        Ok((get(&row, "known")?, active.map(|s| s.trim().to_owned())))
    }

    async fn set_active_policy(&self, tx: &mut Tx<Self>, sha256: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let ctx = format!("activate policy `{sha256}`");
        // two statements: the one-active index is checked row by row
        sqlx::query("UPDATE policy_versions SET active = false WHERE active AND sha256 <> $1")
            .bind(sha256)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(&ctx))?;
        sqlx::query("UPDATE policy_versions SET active = true, activated_at = $2 WHERE sha256 = $1")
            .bind(sha256)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(&ctx))?;
        Ok(())
    }

    /// Keys are nearly always new, so they are first written with a plain `INSERT` (about
    /// half the work of an `INSERT … ON CONFLICT` per key, which is what outcome ingestion
    /// spends most on) under a savepoint; a key recorded before (a retry, or a copy committed
    /// meanwhile) makes it fail with a unique violation, and then, back at the savepoint, the
    /// keys are claimed with `INSERT … ON CONFLICT DO NOTHING` instead. `ids` are distinct and
    /// sorted (one lock order for every transaction).
    async fn claim_batches(&self, tx: &mut Tx<Self>, ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        let ctx = || format!("record {} outcome batch keys", ids.len());
        sqlx::query("SAVEPOINT rollout_claim").execute(&mut **tx).await.map_err(StoreError::db(ctx()))?;
        let plain = sqlx::query(
            "INSERT INTO rollout_applied_batches (batch_id, applied_at) SELECT b, $2 FROM unnest($1::uuid[]) AS u(b)",
        )
        .bind(ids)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::db(ctx()));
        match plain {
            // the savepoint is left open: it ends with the transaction
            Ok(done) if done.rows_affected() == ids.len() as u64 => return Ok(ids.to_vec()),
            Ok(done) => {
                return Err(StoreError::Corrupt {
                    column: "batch_id",
                    message: format!("{} of {} outcome batch keys were recorded", done.rows_affected(), ids.len()),
                })
            }
            Err(e) if e.database_code().as_deref() == Some(UNIQUE_VIOLATION) => {
                sqlx::query("ROLLBACK TO SAVEPOINT rollout_claim")
                    .execute(&mut **tx)
                    .await
                    .map_err(StoreError::db(ctx()))?;
            }
            Err(e) => return Err(e),
        }
        let rows = sqlx::query(
            "INSERT INTO rollout_applied_batches (batch_id, applied_at) \
             SELECT b, $2 FROM unnest($1::uuid[]) WITH ORDINALITY AS u(b, n) ORDER BY n \
             ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id",
        )
        .bind(ids)
        .bind(now)
        .fetch_all(&mut **tx)
        .await
        .map_err(StoreError::db(format!("record {} outcome batch keys", ids.len())))?;
        rows.iter().map(|r| get(r, "batch_id")).collect()
    }

    /// One statement for the whole group: sums saturate at the BIGINT maximum.
    async fn add_metrics(&self, tx: &mut Tx<Self>, deltas: &[MetricsDelta], now: DateTime<Utc>) -> StoreResult<()> {
        let cfg: Vec<Uuid> = deltas.iter().map(|d| d.config_id).collect();
        let repo: Vec<Uuid> = deltas.iter().map(|d| d.repository_id).collect();
        let processor: Vec<&str> = deltas.iter().map(|d| d.processor.as_str()).collect();
        let ok: Vec<i64> = deltas.iter().map(|d| d.success_count).collect();
        let err: Vec<i64> = deltas.iter().map(|d| d.error_count).collect();
        let tsum: Vec<i64> = deltas.iter().map(|d| d.processing_time_ms).collect();
        let tcnt: Vec<i64> = deltas.iter().map(|d| d.timed_jobs).collect();
        let msg: Vec<Option<&str>> = deltas.iter().map(|d| d.last_error_message.as_deref()).collect();
        let msg_at: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|d| d.last_error_at).collect();
        let hour: Vec<DateTime<Utc>> = deltas.iter().map(|d| d.hour_start).collect();
        let at: Vec<DateTime<Utc>> = deltas.iter().map(|d| d.at).collect();
        let sql = format!(
            "INSERT INTO rollout_metrics AS m (rollout_config_id, repository_id, processor_type, success_count, \
             error_count, total_jobs, total_processing_time_ms, timed_jobs, last_error_message, last_error_at, \
             metrics_window_start, metrics_window_end, created_at, updated_at) \
             SELECT u.cfg, u.repo, u.proc, u.ok, u.err, u.ok + u.err, u.tsum, u.tcnt, u.msg, u.msg_at, \
             CASE WHEN c.state_changed_at > u.hour AND c.state_changed_at <= u.at THEN c.state_changed_at \
             ELSE u.hour END, u.hour + interval '1 hour', $12, $12 \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], \
             $8::text[], $9::timestamptz[], $10::timestamptz[], $11::timestamptz[]) WITH ORDINALITY \
             AS u(cfg, repo, proc, ok, err, tsum, tcnt, msg, msg_at, hour, at, n) \
             JOIN rollout_configuration c ON c.id = u.cfg ORDER BY u.n \
             ON CONFLICT (rollout_config_id, repository_id, processor_type, metrics_window_start) DO UPDATE SET \
             success_count = m.success_count + EXCLUDED.success_count, \
             error_count = m.error_count + EXCLUDED.error_count, \
             total_jobs = m.total_jobs + EXCLUDED.total_jobs, \
             total_processing_time_ms = LEAST(m.total_processing_time_ms::numeric \
             + EXCLUDED.total_processing_time_ms, {MAX_BIGINT})::int8, \
             timed_jobs = m.timed_jobs + EXCLUDED.timed_jobs, \
             last_error_message = CASE WHEN EXCLUDED.last_error_at IS NOT NULL AND (m.last_error_at IS NULL OR \
             EXCLUDED.last_error_at >= m.last_error_at) THEN EXCLUDED.last_error_message \
             ELSE m.last_error_message END, \
             last_error_at = GREATEST(m.last_error_at, EXCLUDED.last_error_at), updated_at = EXCLUDED.updated_at"
        );
        let done = sqlx::query(&sql)
            .bind(&cfg)
            .bind(&repo)
            .bind(&processor)
            .bind(&ok)
            .bind(&err)
            .bind(&tsum)
            .bind(&tcnt)
            .bind(&msg)
            .bind(&msg_at)
            .bind(&hour)
            .bind(&at)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("record {} metric buckets", deltas.len())))?;
        if done.rows_affected() != deltas.len() as u64 {
            return Err(StoreError::Corrupt {
                column: "rollout_config_id",
                message: format!(
                    "{} of {} metric rows name no configuration (deleted while recording?)",
                    deltas.len() as u64 - done.rows_affected(),
                    deltas.len()
                ),
            });
        }
        Ok(())
    }

    /// One statement: the deltas' buckets summed per key in SQL (a key appears once in the
    /// statement), upserted in key order; counts saturate at the BIGINT maximum.
    async fn add_latency(&self, tx: &mut Tx<Self>, deltas: &[MetricsDelta]) -> StoreResult<()> {
        let n: usize = deltas.iter().map(|d| d.latency_buckets.len()).sum();
        let (mut cfg, mut processor, mut hour, mut at, mut bucket, mut count) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for d in deltas {
            for &(b, c) in &d.latency_buckets {
                cfg.push(d.config_id);
                processor.push(d.processor.as_str());
                hour.push(d.hour_start);
                at.push(d.at);
                bucket.push(i16::try_from(b).unwrap_or(i16::MAX));
                count.push(c);
            }
        }
        let sql = format!(
            "INSERT INTO rollout_latency_buckets AS l (rollout_config_id, processor_type, metrics_window_start, \
             metrics_window_end, bucket, job_count) \
             SELECT u.cfg, u.proc, CASE WHEN c.state_changed_at > u.hour AND c.state_changed_at <= u.at \
             THEN c.state_changed_at ELSE u.hour END AS ws, u.hour + interval '1 hour' AS we, u.bucket, \
             LEAST(sum(u.cnt), {MAX_BIGINT})::int8 \
             FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::int2[], $6::int8[]) \
             AS u(cfg, proc, hour, at, bucket, cnt) JOIN rollout_configuration c ON c.id = u.cfg \
             GROUP BY u.cfg, u.proc, ws, we, u.bucket ORDER BY u.cfg, u.proc, ws, u.bucket \
             ON CONFLICT (rollout_config_id, processor_type, metrics_window_start, bucket) DO UPDATE SET \
             job_count = LEAST(l.job_count::numeric + EXCLUDED.job_count, {MAX_BIGINT})::int8"
        );
        sqlx::query(&sql)
            .bind(&cfg)
            .bind(&processor)
            .bind(&hour)
            .bind(&at)
            .bind(&bucket)
            .bind(&count)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::db(format!("record {n} processing-time bucket counts")))?;
        Ok(())
    }

    fn lost_race(&self, error: &StoreError) -> bool {
        matches!(error.database_code().as_deref(), Some("40P01" | "40001"))
    }
}

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// Send `payload` on [`CHANGE_CHANNEL`] outside any change.
pub(super) async fn notify(pool: &PgPool, payload: &str) -> StoreResult<()> {
    sqlx::query(NOTIFY)
        .bind(CHANGE_CHANNEL)
        .bind(payload)
        .execute(pool)
        .await
        .map_err(StoreError::db(format!("notify `{CHANGE_CHANNEL}` of `{payload}`")))?;
    Ok(())
}

/// Whether the rollout tables exist, and the versions of the migrations applied.
pub(super) async fn migration_state(pool: &PgPool) -> StoreResult<(bool, Vec<i64>)> {
    let ctx = "look for the rollout tables";
    let row = sqlx::query(
        "SELECT to_regclass('rollout_configuration') IS NOT NULL AS tables, \
         to_regclass('_sqlx_migrations') IS NOT NULL AS ledger",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::db(ctx))?;
    let (tables, ledger): (bool, bool) = (get(&row, "tables")?, get(&row, "ledger")?);
    if !ledger {
        return Ok((tables, Vec::new()));
    }
    let versions = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(ctx))?;
    Ok((tables, versions))
}

/// Forget outcome batch keys applied before `before`.
pub(super) async fn prune_applied_batches(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM rollout_applied_batches WHERE applied_at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map_err(StoreError::db("forget the outcome batch keys past their retention"))?;
    Ok(done.rows_affected())
}

pub(super) async fn config_id(pool: &PgPool, feature: &str) -> StoreResult<Uuid> {
    let row = sqlx::query("SELECT id FROM rollout_configuration WHERE feature_name = $1")
        .bind(feature)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(format!("look up feature `{feature}`")))?;
    match row {
        Some(row) => get(&row, "id"),
        None => Err(StoreError::UnknownFeature(feature.to_owned())),
    }
}

pub(super) async fn history(pool: &PgPool, feature: &str, limit: u32) -> StoreResult<Vec<HistoryEntry>> {
    let id = config_id(pool, feature).await?;
    let sql = format!(
        "SELECT {HISTORY_COLUMNS} FROM rollout_history WHERE rollout_config_id = $1 OR rollout_config_id IS NULL \
         ORDER BY seq DESC LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(format!("read the history of `{feature}`")))?;
    rows.iter().map(history_from_row).collect()
}

pub(super) async fn find_repository(pool: &PgPool, owner: &str, name: &str) -> StoreResult<Option<Uuid>> {
    let row = sqlx::query("SELECT id FROM repositories WHERE lower(owner) = lower($1) AND lower(name) = lower($2)")
        .bind(owner)
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(format!("look up repository `{owner}/{name}`")))?;
    row.map(|r| get(&r, "id")).transpose()
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

pub(super) async fn upsert_repository(
    pool: &PgPool,
    owner: &str,
    name: &str,
    stats: &RepositoryStats,
) -> StoreResult<Uuid> {
    let row = sqlx::query(
        "INSERT INTO repositories (owner, name, stargazers_count, contributor_count, pull_request_count) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (lower(owner), lower(name)) DO UPDATE SET \
         stargazers_count = EXCLUDED.stargazers_count, contributor_count = EXCLUDED.contributor_count, \
         pull_request_count = EXCLUDED.pull_request_count RETURNING id",
    )
    .bind(owner)
    .bind(name)
    .bind(clamp_i32(stats.star_count))
    .bind(clamp_i32(stats.contributor_count))
    .bind(clamp_i32(stats.pr_count))
    .fetch_one(pool)
    .await
    .map_err(StoreError::db(format!("write repository `{owner}/{name}`")))?;
    get(&row, "id")
}

fn stats_from_row(row: &PgRow) -> StoreResult<RepositoryStats> {
    Ok(RepositoryStats {
        star_count: to_u32("stargazers_count", i64::from(get::<i32>(row, "stargazers_count")?))?,
        contributor_count: to_u32("contributor_count", i64::from(get::<i32>(row, "contributor_count")?))?,
        pr_count: to_u32("pull_request_count", i64::from(get::<i32>(row, "pull_request_count")?))?,
    })
}

pub(super) async fn repository_stats(pool: &PgPool, id: Uuid) -> StoreResult<Option<RepositoryStats>> {
    let row =
        sqlx::query("SELECT stargazers_count, contributor_count, pull_request_count FROM repositories WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::db(format!("read repository `{id}`")))?;
    row.map(|r| stats_from_row(&r)).transpose()
}

pub(super) async fn list_repository_stats(pool: &PgPool) -> StoreResult<Vec<(Uuid, RepositoryStats)>> {
    let rows =
        sqlx::query("SELECT id, stargazers_count, contributor_count, pull_request_count FROM repositories ORDER BY id")
            .fetch_all(pool)
            .await
            .map_err(StoreError::db("list the repositories"))?;
    rows.iter().map(|r| Ok((get(r, "id")?, stats_from_row(r)?))).collect()
}

pub(super) async fn list_repository_ids(pool: &PgPool) -> StoreResult<Vec<Uuid>> {
    let rows = sqlx::query("SELECT id FROM repositories UNION SELECT repository_id FROM repository_categories")
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("list the repository ids"))?;
    rows.iter().map(|r| get(r, "id")).collect()
}

pub(super) async fn upsert_categories(pool: &PgPool, rows: &[CategoryRow]) -> StoreResult<()> {
    // one row per repository: the last wins
    let mut by_id = std::collections::BTreeMap::new();
    for row in rows {
        by_id.insert(row.repository_id, *row);
    }
    let rows: Vec<CategoryRow> = by_id.into_values().collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.repository_id).collect();
    let categories: Vec<&str> = rows.iter().map(|r| r.category.as_str()).collect();
    let priorities: Vec<i32> = rows.iter().map(|r| i32::from(r.priority_level)).collect();
    let tests: Vec<bool> = rows.iter().map(|r| r.is_test_repository).collect();
    let stars: Vec<i32> = rows.iter().map(|r| clamp_i32(r.stats.star_count)).collect();
    let contributors: Vec<i32> = rows.iter().map(|r| clamp_i32(r.stats.contributor_count)).collect();
    let prs: Vec<i32> = rows.iter().map(|r| clamp_i32(r.stats.pr_count)).collect();
    let scores: Vec<i32> = rows.iter().map(|r| i32::from(r.monthly_activity_score)).collect();
    sqlx::query(
        "INSERT INTO repository_categories (repository_id, category, priority_level, is_test_repository, star_count, \
         contributor_count, pr_count, monthly_activity_score, last_categorized_at) \
         SELECT u.*, now() FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::bool[], $5::int4[], $6::int4[], \
         $7::int4[], $8::int4[]) AS u \
         ON CONFLICT (repository_id) DO UPDATE SET category = EXCLUDED.category, \
         priority_level = EXCLUDED.priority_level, is_test_repository = EXCLUDED.is_test_repository, \
         star_count = EXCLUDED.star_count, contributor_count = EXCLUDED.contributor_count, pr_count = EXCLUDED.pr_count, \
         monthly_activity_score = EXCLUDED.monthly_activity_score, last_categorized_at = EXCLUDED.last_categorized_at",
    )
    .bind(ids)
    .bind(categories)
    .bind(priorities)
    .bind(tests)
    .bind(stars)
    .bind(contributors)
    .bind(prs)
    .bind(scores)
    .execute(pool)
    .await
    .map_err(StoreError::db(format!("write {} categorisations", rows.len())))?;
    Ok(())
}

/// One page of categorisations in `repository_id` order: the first `limit`, or the
/// first `limit` after `after` (keyset pagination on the unique index; see
/// [`super::Store::list_categories`]).
pub(super) async fn categories_page(pool: &PgPool, after: Option<Uuid>, limit: i64) -> StoreResult<Vec<CategoryRow>> {
    const COLUMNS: &str = "SELECT repository_id, category, priority_level, is_test_repository, star_count, \
                           contributor_count, pr_count, monthly_activity_score FROM repository_categories";
    let sql = match after {
        None => format!("{COLUMNS} ORDER BY repository_id LIMIT $1"),
        Some(_) => format!("{COLUMNS} WHERE repository_id > $1 ORDER BY repository_id LIMIT $2"),
    };
    let query = match after {
        None => sqlx::query(&sql),
        Some(cursor) => sqlx::query(&sql).bind(cursor),
    }
    .bind(limit);
    let rows = query.fetch_all(pool).await.map_err(StoreError::db("list the categorisations"))?;
    rows.iter().map(category_row).collect()
}

fn category_row(r: &PgRow) -> StoreResult<CategoryRow> {
    Ok(CategoryRow {
        repository_id: get(r, "repository_id")?,
        category: parse_category(&get::<String>(r, "category")?)?,
        priority_level: to_u8("priority_level", i64::from(get::<i32>(r, "priority_level")?))?,
        is_test_repository: get(r, "is_test_repository")?,
        stats: RepositoryStats {
            star_count: to_u32("star_count", i64::from(get::<i32>(r, "star_count")?))?,
            contributor_count: to_u32("contributor_count", i64::from(get::<i32>(r, "contributor_count")?))?,
            pr_count: to_u32("pr_count", i64::from(get::<i32>(r, "pr_count")?))?,
        },
        monthly_activity_score: to_u8("monthly_activity_score", i64::from(get::<i32>(r, "monthly_activity_score")?))?,
    })
}

/// The rows of `sql` over the metrics window of one configuration (`$1` the configuration,
/// `$2` buckets ending after, `$3` starting at or after); `what` names the read in errors.
async fn window_rows(
    pool: &PgPool,
    sql: &str,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
    what: &str,
) -> StoreResult<Vec<PgRow>> {
    sqlx::query(sql)
        .bind(config_id)
        .bind(ends_after)
        .bind(starts_at_or_after)
        .fetch_all(pool)
        .await
        .map_err(StoreError::db(format!("read the {what} of configuration `{config_id}`")))
}

pub(super) async fn metrics_window(
    pool: &PgPool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<WindowRow>> {
    // sum(bigint) is numeric: it cannot overflow; the result saturates at the BIGINT maximum
    let sql = format!(
        "SELECT processor_type, metrics_window_start, LEAST(sum(success_count), {MAX_BIGINT})::int8 AS ok, \
         LEAST(sum(error_count), {MAX_BIGINT})::int8 AS err, LEAST(sum(total_jobs), {MAX_BIGINT})::int8 AS total, \
         LEAST(sum(total_processing_time_ms), {MAX_BIGINT})::int8 AS tsum, \
         LEAST(sum(timed_jobs), {MAX_BIGINT})::int8 AS tcnt \
         FROM rollout_metrics WHERE rollout_config_id = $1 AND metrics_window_end > $2 AND metrics_window_start >= $3 \
         GROUP BY processor_type, metrics_window_start ORDER BY metrics_window_start, processor_type"
    );
    let rows = window_rows(pool, &sql, config_id, ends_after, starts_at_or_after, "metrics").await?;
    rows.iter()
        .map(|r| {
            Ok(WindowRow {
                processor: parse_processor(&get::<String>(r, "processor_type")?)?,
                window_start: get(r, "metrics_window_start")?,
                success_count: to_u64("success_count", get(r, "ok")?)?,
                error_count: to_u64("error_count", get(r, "err")?)?,
                total_jobs: to_u64("total_jobs", get(r, "total")?)?,
                total_processing_time_ms: to_u64("total_processing_time_ms", get(r, "tsum")?)?,
                timed_jobs: to_u64("timed_jobs", get(r, "tcnt")?)?,
            })
        })
        .collect()
}

pub(super) async fn latency_window(
    pool: &PgPool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<LatencyRow>> {
    let sql = format!(
        "SELECT processor_type, bucket, LEAST(sum(job_count), {MAX_BIGINT})::int8 AS jobs FROM rollout_latency_buckets \
         WHERE rollout_config_id = $1 AND metrics_window_end > $2 AND metrics_window_start >= $3 \
         GROUP BY processor_type, bucket ORDER BY processor_type, bucket"
    );
    let rows = window_rows(pool, &sql, config_id, ends_after, starts_at_or_after, "processing-time buckets").await?;
    rows.iter()
        .map(|r| {
            let bucket: i16 = get(r, "bucket")?;
            Ok(LatencyRow {
                processor: parse_processor(&get::<String>(r, "processor_type")?)?,
                bucket: u16::try_from(bucket)
                    .map_err(|_| StoreError::Corrupt { column: "bucket", message: format!("bucket {bucket}") })?,
                count: to_u64("job_count", get(r, "jobs")?)?,
            })
        })
        .collect()
}

pub(super) async fn error_messages(
    pool: &PgPool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<(Option<String>, u64)>> {
    let sql = format!(
        "SELECT last_error_message, LEAST(sum(error_count), {MAX_BIGINT})::int8 AS errors FROM rollout_metrics \
         WHERE rollout_config_id = $1 AND metrics_window_end > $2 AND metrics_window_start >= $3 AND error_count > 0 \
         GROUP BY last_error_message"
    );
    let rows = window_rows(pool, &sql, config_id, ends_after, starts_at_or_after, "errors").await?;
    rows.iter().map(|r| Ok((get(r, "last_error_message")?, to_u64("error_count", get(r, "errors")?)?))).collect()
}

pub(super) async fn list_buckets(pool: &PgPool, config_id: Uuid) -> StoreResult<Vec<MetricsBucket>> {
    let rows = sqlx::query(
        "SELECT rollout_config_id, repository_id, processor_type, success_count, error_count, total_jobs, \
         total_processing_time_ms, timed_jobs, average_processing_time::float8 AS average_processing_time, \
         last_error_message, last_error_at, metrics_window_start, metrics_window_end FROM rollout_metrics \
         WHERE rollout_config_id = $1 ORDER BY metrics_window_start, repository_id, processor_type",
    )
    .bind(config_id)
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(format!("list the metric buckets of configuration `{config_id}`")))?;
    rows.iter()
        .map(|r| {
            Ok(MetricsBucket {
                config_id: get(r, "rollout_config_id")?,
                repository_id: get(r, "repository_id")?,
                processor: parse_processor(&get::<String>(r, "processor_type")?)?,
                success_count: get(r, "success_count")?,
                error_count: get(r, "error_count")?,
                total_jobs: get(r, "total_jobs")?,
                total_processing_time_ms: get(r, "total_processing_time_ms")?,
                timed_jobs: get(r, "timed_jobs")?,
                average_processing_time: get(r, "average_processing_time")?,
                last_error_message: get(r, "last_error_message")?,
                last_error_at: get(r, "last_error_at")?,
                window_start: get(r, "metrics_window_start")?,
                window_end: get(r, "metrics_window_end")?,
            })
        })
        .collect()
}

const POLICY_COLUMNS: &str =
    "sha256, name, semver, notes, uploaded_by, uploaded_at, active, activated_at, octet_length(bytes)::int8 AS size";

fn policy_from_row(r: &PgRow) -> StoreResult<PolicyVersionRow> {
    Ok(PolicyVersionRow {
        sha256: get::<String>(r, "sha256")?.trim().to_owned(),
        name: get(r, "name")?,
        semver: get(r, "semver")?,
        notes: get(r, "notes")?,
        uploaded_by: get(r, "uploaded_by")?,
        uploaded_at: get(r, "uploaded_at")?,
        active: get(r, "active")?,
        activated_at: get(r, "activated_at")?,
        size: get(r, "size")?,
    })
}

pub(super) async fn put_policy_version(pool: &PgPool, v: &NewPolicyVersion) -> StoreResult<PolicyVersionRow> {
    let ctx = format!("store policy `{}`", v.sha256);
    sqlx::query(
        "INSERT INTO policy_versions (sha256, bytes, name, semver, notes, uploaded_by) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&v.sha256)
    .bind(&v.bytes)
    .bind(v.name.as_deref())
    .bind(&v.semver)
    .bind(v.notes.as_deref())
    .bind(v.uploaded_by.as_deref())
    .execute(pool)
    .await
    .map_err(StoreError::db(ctx.clone()))?;
    let sql = format!("SELECT {POLICY_COLUMNS} FROM policy_versions WHERE sha256 = $1");
    let row = sqlx::query(&sql).bind(&v.sha256).fetch_one(pool).await.map_err(StoreError::db(ctx))?;
    policy_from_row(&row)
}

pub(super) async fn list_policy_versions(pool: &PgPool) -> StoreResult<Vec<PolicyVersionRow>> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM policy_versions ORDER BY uploaded_at DESC, sha256");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(StoreError::db("list the policy versions"))?;
    rows.iter().map(policy_from_row).collect()
}

pub(super) async fn policy_bytes(pool: &PgPool, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
    let row = sqlx::query("SELECT bytes FROM policy_versions WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::db(format!("read policy `{sha256}`")))?;
    row.map(|r| get(&r, "bytes")).transpose()
}

fn event_from_row(row: &PgRow) -> StoreResult<AlertEvent> {
    let (level, state) = outbox::parse_level_state(&get::<String>(row, "level")?, &get::<String>(row, "state")?)?;
    Ok(AlertEvent {
        seq: get(row, "seq")?,
        idempotency_key: get(row, "idempotency_key")?,
        kind: get(row, "kind")?,
        level,
        feature: get(row, "feature_name")?,
        summary: get(row, "summary")?,
        details: get(row, "details")?,
        created_at: get(row, "created_at")?,
        state,
        attempts: to_u32("attempts", i64::from(get::<i32>(row, "attempts")?))?,
        next_attempt_at: get(row, "next_attempt_at")?,
        delivered_targets: serde_json::from_value(get(row, "delivered_targets")?)
            .map_err(|e| StoreError::Corrupt { column: "delivered_targets", message: e.to_string() })?,
        last_error: get(row, "last_error")?,
        delivered_at: get(row, "delivered_at")?,
    })
}

pub(super) async fn insert_alert_event(pool: &PgPool, event: &NewAlertEvent, now: DateTime<Utc>) -> StoreResult<()> {
    let mut tx = pool.begin().await.map_err(StoreError::db("write an alert event"))?;
    Pg(pool).insert_event(&mut tx, event, now).await?;
    tx.commit().await.map_err(StoreError::db("write an alert event"))
}

pub(super) async fn claim_alert_events(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> StoreResult<Vec<AlertEvent>> {
    let rows = sqlx::query(&outbox::sql::claim("FOR UPDATE SKIP LOCKED"))
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::db("claim due alert events"))?;
    let mut events = rows.iter().map(event_from_row).collect::<StoreResult<Vec<_>>>()?;
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

pub(super) async fn finish_alert_event(pool: &PgPool, seq: i64, outcome: &DeliveryOutcome) -> StoreResult<()> {
    sqlx::query(outbox::sql::FINISH)
        .bind(seq)
        .bind(outcome.state.as_str())
        .bind(i32::try_from(outcome.attempts).unwrap_or(i32::MAX))
        .bind(outcome.next_attempt_at)
        .bind(serde_json::json!(outcome.delivered_targets))
        .bind(outcome.last_error.as_deref())
        .bind(outcome.delivered_at)
        .execute(pool)
        .await
        .map_err(StoreError::db(format!("record the delivery of alert event {seq}")))?;
    Ok(())
}

pub(super) async fn list_alert_events(
    pool: &PgPool,
    state: Option<AlertState>,
    limit: u32,
) -> StoreResult<Vec<AlertEvent>> {
    let sql = outbox::sql::list(state.is_some());
    let mut query = sqlx::query(&sql).bind(i64::from(limit));
    if let Some(s) = state {
        query = query.bind(s.as_str());
    }
    let rows = query.fetch_all(pool).await.map_err(StoreError::db("list the alert events"))?;
    rows.iter().map(event_from_row).collect()
}

pub(super) async fn alert_counts(pool: &PgPool) -> StoreResult<AlertCounts> {
    let rows = sqlx::query(outbox::sql::COUNTS).fetch_all(pool).await.map_err(StoreError::db("count alert events"))?;
    let mut counts = AlertCounts::default();
    for r in &rows {
        counts.set(&get::<String>(r, "state")?, get::<i64>(r, "n")?);
    }
    Ok(counts)
}

pub(super) async fn retry_alert_event(pool: &PgPool, key: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
    let done = sqlx::query(outbox::sql::RETRY)
        .bind(key)
        .bind(now)
        .execute(pool)
        .await
        .map_err(StoreError::db(format!("requeue alert event `{key}`")))?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn prune_alert_events(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query(outbox::sql::PRUNE)
        .bind(before)
        .execute(pool)
        .await
        .map_err(StoreError::db("prune old alert events"))?;
    Ok(done.rows_affected())
}
