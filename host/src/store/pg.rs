//! The Postgres implementation of [`super::Store`].

use super::{
    change_metadata, parse_action, parse_category, parse_processor, parse_strategy, to_u32, to_u64, to_u8, CategoryRow,
    Change, ChangeOutcome, ChangeRequest, HistoryAction, HistoryEntry, MetricsBucket, MetricsDelta, NewHistory,
    NewPolicyVersion, PolicyVersionRow, StoreError, StoreResult, StoredConfig, WindowRow, CHANGE_CHANNEL,
};
use chrono::{DateTime, Utc};
use rollout_policy::{Config, RepositoryStats};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

const CONFIG_COLUMNS: &str = "id, feature_name, rollout_percentage, is_active, target_repositories, \
    excluded_repositories, rollout_strategy, max_error_rate::float8 AS max_error_rate, monitoring_window_hours, \
    auto_rollback_enabled, emergency_stop, min_jobs_for_rollback, metadata, state_changed_at, created_at, updated_at";

const HISTORY_COLUMNS: &str =
    "id, seq, rollout_config_id, action, previous_percentage, new_percentage, reason, triggered_by, metadata, created_at";

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

async fn insert_history(
    conn: &mut PgConnection,
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
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::db(format!("write the `{}` history row of `{feature}`", entry.action.as_str())))?;
    history_from_row(&row)
}

async fn notify(conn: &mut PgConnection, payload: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANGE_CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db(format!("notify `{CHANGE_CHANNEL}`")))?;
    Ok(())
}

pub(super) async fn ensure_config(pool: &PgPool, feature: &str, triggered_by: &str) -> StoreResult<StoredConfig> {
    let ctx = format!("create the configuration of `{feature}`");
    let mut tx = pool.begin().await.map_err(StoreError::db(ctx.clone()))?;
    let now = Utc::now();
    let inserted = sqlx::query(
        "INSERT INTO rollout_configuration (feature_name, is_active, state_changed_at) VALUES ($1, true, $2) \
         ON CONFLICT (feature_name) DO NOTHING RETURNING id",
    )
    .bind(feature)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::db(ctx.clone()))?;
    let sql = format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration WHERE feature_name = $1");
    let row = sqlx::query(&sql).bind(feature).fetch_one(&mut *tx).await.map_err(StoreError::db(ctx.clone()))?;
    let config = config_from_row(&row)?;
    if inserted.is_some() {
        let entry = NewHistory {
            action: HistoryAction::Created,
            previous_percentage: None,
            new_percentage: Some(i32::from(config.config.rollout_percentage)),
            reason: Some("configuration created".into()),
            triggered_by: triggered_by.to_owned(),
            metadata: serde_json::json!({ "new": config.to_json() }),
        };
        insert_history(&mut tx, Some(config.id), feature, &entry, now).await?;
        notify(&mut tx, feature).await?;
    }
    tx.commit().await.map_err(StoreError::db(ctx))?;
    Ok(config)
}

fn ids_text(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

pub(super) async fn apply_change(pool: &PgPool, feature: &str, request: &ChangeRequest) -> StoreResult<ChangeOutcome> {
    let action = request.change.action();
    let ctx = format!("apply `{}` to `{feature}`", action.as_str());
    let mut tx = pool.begin().await.map_err(StoreError::db(ctx.clone()))?;
    let sql = format!("SELECT {CONFIG_COLUMNS} FROM rollout_configuration WHERE feature_name = $1 FOR UPDATE");
    let before =
        match sqlx::query(&sql).bind(feature).fetch_optional(&mut *tx).await.map_err(StoreError::db(ctx.clone()))? {
            Some(row) => config_from_row(&row)?,
            None => return Err(StoreError::UnknownFeature(feature.to_owned())),
        };
    let now = Utc::now();
    let set_add = |col: &str| {
        format!(
            "UPDATE rollout_configuration SET {col} = ARRAY(SELECT x FROM unnest({col} || $2::text[]) WITH ORDINALITY \
             AS t(x, n) GROUP BY x ORDER BY min(n)), updated_at = $3 WHERE id = $1 RETURNING {CONFIG_COLUMNS}"
        )
    };
    let set_remove = |col: &str| {
        format!(
            "UPDATE rollout_configuration SET {col} = ARRAY(SELECT x FROM unnest({col}) WITH ORDINALITY AS t(x, n) \
             WHERE lower(x) <> ALL($2::text[]) ORDER BY n), updated_at = $3 WHERE id = $1 RETURNING {CONFIG_COLUMNS}"
        )
    };
    let returning = format!("RETURNING {CONFIG_COLUMNS}");
    let row = match &request.change {
        Change::SetPercentage(p) => {
            let sql = format!(
                "UPDATE rollout_configuration SET rollout_percentage = $2, state_changed_at = CASE WHEN \
                 rollout_percentage <> $2 THEN $3 ELSE state_changed_at END, updated_at = $3 WHERE id = $1 {returning}"
            );
            sqlx::query(&sql).bind(before.id).bind(i32::from(*p)).bind(now).fetch_optional(&mut *tx).await
        }
        Change::EmergencyStop | Change::Resume => {
            let stop = matches!(request.change, Change::EmergencyStop);
            let sql = format!(
                "UPDATE rollout_configuration SET emergency_stop = $2, state_changed_at = CASE WHEN \
                 emergency_stop <> $2 THEN $3 ELSE state_changed_at END, updated_at = $3 WHERE id = $1 {returning}"
            );
            sqlx::query(&sql).bind(before.id).bind(stop).bind(now).fetch_optional(&mut *tx).await
        }
        Change::SetAutoRollback(on) => {
            let sql = format!(
                "UPDATE rollout_configuration SET auto_rollback_enabled = $2, updated_at = $3 WHERE id = $1 {returning}"
            );
            sqlx::query(&sql).bind(before.id).bind(*on).bind(now).fetch_optional(&mut *tx).await
        }
        Change::Update(patch) => {
            let sql = format!(
                "UPDATE rollout_configuration SET is_active = COALESCE($2, is_active), \
                 state_changed_at = CASE WHEN $3::text IS NOT NULL AND $3::text <> rollout_strategy THEN $8 \
                 ELSE state_changed_at END, \
                 rollout_strategy = COALESCE($3::text, rollout_strategy), \
                 max_error_rate = COALESCE($4::float8::numeric, max_error_rate), \
                 monitoring_window_hours = COALESCE($5, monitoring_window_hours), \
                 min_jobs_for_rollback = COALESCE($6, min_jobs_for_rollback), \
                 metadata = COALESCE($7, metadata), updated_at = $8 WHERE id = $1 {returning}"
            );
            sqlx::query(&sql)
                .bind(before.id)
                .bind(patch.is_active)
                .bind(patch.rollout_strategy.map(|s| s.as_str()))
                .bind(patch.max_error_rate)
                .bind(patch.monitoring_window_hours.map(|v| v as i32))
                .bind(patch.min_jobs_for_rollback.map(|v| v as i32))
                .bind(patch.metadata.as_ref())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
        }
        Change::WhitelistAdd(ids) => {
            sqlx::query(&set_add("target_repositories"))
                .bind(before.id)
                .bind(ids_text(ids))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
        }
        Change::ExcludeAdd(ids) => {
            sqlx::query(&set_add("excluded_repositories"))
                .bind(before.id)
                .bind(ids_text(ids))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
        }
        Change::WhitelistRemove(ids) => {
            sqlx::query(&set_remove("target_repositories"))
                .bind(before.id)
                .bind(ids_text(ids))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
        }
        Change::ExcludeRemove(ids) => {
            sqlx::query(&set_remove("excluded_repositories"))
                .bind(before.id)
                .bind(ids_text(ids))
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
        }
        Change::Rollback => {
            let sql = format!(
                "UPDATE rollout_configuration SET rollout_percentage = 0, state_changed_at = $2, updated_at = $2 \
                 WHERE id = $1 AND rollout_percentage > 0 AND NOT emergency_stop {returning}"
            );
            sqlx::query(&sql).bind(before.id).bind(now).fetch_optional(&mut *tx).await
        }
    }
    .map_err(StoreError::db(ctx.clone()))?;
    let Some(row) = row else {
        tx.commit().await.map_err(StoreError::db(ctx))?;
        return Ok(ChangeOutcome { applied: false, after: before.clone(), before, history: None });
    };
    let after = config_from_row(&row)?;
    let entry = NewHistory {
        action,
        previous_percentage: Some(i32::from(before.config.rollout_percentage)),
        new_percentage: Some(i32::from(after.config.rollout_percentage)),
        reason: request.reason.clone(),
        triggered_by: request.triggered_by.clone(),
        metadata: change_metadata(request, &before, &after),
    };
    let history = insert_history(&mut tx, Some(before.id), feature, &entry, now).await?;
    notify(&mut tx, feature).await?;
    tx.commit().await.map_err(StoreError::db(ctx))?;
    Ok(ChangeOutcome { applied: true, before, after, history: Some(history) })
}

async fn config_id(pool: &PgPool, feature: &str) -> StoreResult<Uuid> {
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

pub(super) async fn append_history(
    pool: &PgPool,
    feature: Option<&str>,
    entry: &NewHistory,
) -> StoreResult<HistoryEntry> {
    let id = match feature {
        Some(f) => Some(config_id(pool, f).await?),
        None => None,
    };
    let ctx = format!("write the `{}` history row", entry.action.as_str());
    let mut tx = pool.begin().await.map_err(StoreError::db(ctx.clone()))?;
    let row = insert_history(&mut tx, id, feature.unwrap_or(""), entry, Utc::now()).await?;
    notify(&mut tx, feature.unwrap_or("")).await?;
    tx.commit().await.map_err(StoreError::db(ctx))?;
    Ok(row)
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

pub(super) async fn list_categories(pool: &PgPool) -> StoreResult<Vec<CategoryRow>> {
    let rows = sqlx::query(
        "SELECT repository_id, category, priority_level, is_test_repository, star_count, contributor_count, pr_count, \
         monthly_activity_score FROM repository_categories",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::db("list the categorisations"))?;
    rows.iter()
        .map(|r| {
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
                monthly_activity_score: to_u8(
                    "monthly_activity_score",
                    i64::from(get::<i32>(r, "monthly_activity_score")?),
                )?,
            })
        })
        .collect()
}

/// The group-commit upsert: one statement for the whole batch, rows in key order (so two
/// batches running at once lock their rows in the same order), retried on deadlock.
pub(super) async fn upsert_metrics(pool: &PgPool, deltas: &[MetricsDelta]) -> StoreResult<()> {
    let mut sorted: Vec<&MetricsDelta> = deltas.iter().collect();
    sorted.sort_by(|a, b| {
        (a.config_id, a.repository_id, a.processor.as_str(), a.hour_start).cmp(&(
            b.config_id,
            b.repository_id,
            b.processor.as_str(),
            b.hour_start,
        ))
    });
    let cfg: Vec<Uuid> = sorted.iter().map(|d| d.config_id).collect();
    let repo: Vec<Uuid> = sorted.iter().map(|d| d.repository_id).collect();
    let processor: Vec<&str> = sorted.iter().map(|d| d.processor.as_str()).collect();
    let ok: Vec<i64> = sorted.iter().map(|d| d.success_count).collect();
    let err: Vec<i64> = sorted.iter().map(|d| d.error_count).collect();
    let tsum: Vec<i64> = sorted.iter().map(|d| d.processing_time_ms).collect();
    let tcnt: Vec<i64> = sorted.iter().map(|d| d.timed_jobs).collect();
    let msg: Vec<Option<&str>> = sorted.iter().map(|d| d.last_error_message.as_deref()).collect();
    let msg_at: Vec<Option<DateTime<Utc>>> = sorted.iter().map(|d| d.last_error_at).collect();
    let hour: Vec<DateTime<Utc>> = sorted.iter().map(|d| d.hour_start).collect();
    let at: Vec<DateTime<Utc>> = sorted.iter().map(|d| d.at).collect();
    let sql = "INSERT INTO rollout_metrics AS m (rollout_config_id, repository_id, processor_type, success_count, \
        error_count, total_jobs, total_processing_time_ms, timed_jobs, last_error_message, last_error_at, \
        metrics_window_start, metrics_window_end, updated_at) \
        SELECT u.cfg, u.repo, u.proc, u.ok, u.err, u.ok + u.err, u.tsum, u.tcnt, u.msg, u.msg_at, \
        CASE WHEN c.state_changed_at > u.hour AND c.state_changed_at <= u.at THEN c.state_changed_at ELSE u.hour END, \
        u.hour + interval '1 hour', now() \
        FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::text[], \
        $9::timestamptz[], $10::timestamptz[], $11::timestamptz[]) WITH ORDINALITY \
        AS u(cfg, repo, proc, ok, err, tsum, tcnt, msg, msg_at, hour, at, n) \
        JOIN rollout_configuration c ON c.id = u.cfg ORDER BY u.n \
        ON CONFLICT (rollout_config_id, repository_id, processor_type, metrics_window_start) DO UPDATE SET \
        success_count = m.success_count + EXCLUDED.success_count, \
        error_count = m.error_count + EXCLUDED.error_count, \
        total_jobs = m.total_jobs + EXCLUDED.total_jobs, \
        total_processing_time_ms = m.total_processing_time_ms + EXCLUDED.total_processing_time_ms, \
        timed_jobs = m.timed_jobs + EXCLUDED.timed_jobs, \
        last_error_message = CASE WHEN EXCLUDED.last_error_at IS NOT NULL AND (m.last_error_at IS NULL OR \
        EXCLUDED.last_error_at >= m.last_error_at) THEN EXCLUDED.last_error_message ELSE m.last_error_message END, \
        last_error_at = GREATEST(m.last_error_at, EXCLUDED.last_error_at), updated_at = now()";
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = sqlx::query(sql)
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
            .execute(pool)
            .await;
        match result {
            Ok(done) if done.rows_affected() == sorted.len() as u64 => return Ok(()),
            Ok(done) => {
                return Err(StoreError::Corrupt {
                    column: "rollout_config_id",
                    message: format!(
                        "{} of {} metric rows name no configuration (deleted while recording?)",
                        sorted.len() as u64 - done.rows_affected(),
                        sorted.len()
                    ),
                })
            }
            Err(sqlx::Error::Database(e))
                if attempt < 5 && matches!(e.code().as_deref(), Some("40P01") | Some("40001")) =>
            {
                continue
            }
            Err(e) => return Err(StoreError::db(format!("record {} metric buckets", sorted.len()))(e)),
        }
    }
}

pub(super) async fn metrics_window(
    pool: &PgPool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<WindowRow>> {
    let rows = sqlx::query(
        "SELECT processor_type, metrics_window_start, sum(success_count)::int8 AS ok, sum(error_count)::int8 AS err, \
         sum(total_jobs)::int8 AS total, sum(total_processing_time_ms)::int8 AS tsum, sum(timed_jobs)::int8 AS tcnt \
         FROM rollout_metrics WHERE rollout_config_id = $1 AND metrics_window_end > $2 AND metrics_window_start >= $3 \
         GROUP BY processor_type, metrics_window_start ORDER BY metrics_window_start, processor_type",
    )
    .bind(config_id)
    .bind(ends_after)
    .bind(starts_at_or_after)
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(format!("read the metrics of configuration `{config_id}`")))?;
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

pub(super) async fn error_messages(
    pool: &PgPool,
    config_id: Uuid,
    ends_after: DateTime<Utc>,
    starts_at_or_after: DateTime<Utc>,
) -> StoreResult<Vec<(Option<String>, u64)>> {
    let rows = sqlx::query(
        "SELECT last_error_message, sum(error_count)::int8 AS errors FROM rollout_metrics \
         WHERE rollout_config_id = $1 AND metrics_window_end > $2 AND metrics_window_start >= $3 AND error_count > 0 \
         GROUP BY last_error_message",
    )
    .bind(config_id)
    .bind(ends_after)
    .bind(starts_at_or_after)
    .fetch_all(pool)
    .await
    .map_err(StoreError::db(format!("read the errors of configuration `{config_id}`")))?;
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

pub(super) async fn activate_policy_version(
    pool: &PgPool,
    sha256: &str,
    revert: bool,
    reason: Option<&str>,
    triggered_by: &str,
) -> StoreResult<Option<String>> {
    let ctx = format!("activate policy `{sha256}`");
    let mut tx = pool.begin().await.map_err(StoreError::db(ctx.clone()))?;
    // one activation at a time
    sqlx::query("LOCK TABLE policy_versions IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(ctx.clone()))?;
    let exists = sqlx::query("SELECT 1 FROM policy_versions WHERE sha256 = $1")
        .bind(sha256)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(ctx.clone()))?;
    if exists.is_none() {
        return Err(StoreError::UnknownPolicy(sha256.to_owned()));
    }
    let previous: Option<String> = sqlx::query("SELECT sha256 FROM policy_versions WHERE active")
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(ctx.clone()))?
        .map(|r| get::<String>(&r, "sha256").map(|s| s.trim().to_owned()))
        .transpose()?;
    sqlx::query("UPDATE policy_versions SET active = false WHERE active AND sha256 <> $1")
        .bind(sha256)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(ctx.clone()))?;
    sqlx::query("UPDATE policy_versions SET active = true, activated_at = now() WHERE sha256 = $1")
        .bind(sha256)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(ctx.clone()))?;
    let entry = NewHistory {
        action: if revert { HistoryAction::PolicyReverted } else { HistoryAction::PolicyActivated },
        previous_percentage: None,
        new_percentage: None,
        reason: reason.map(str::to_owned),
        triggered_by: triggered_by.to_owned(),
        metadata: serde_json::json!({ "previous": { "policy_sha256": previous }, "new": { "policy_sha256": sha256 } }),
    };
    insert_history(&mut tx, None, "", &entry, Utc::now()).await?;
    notify(&mut tx, "").await?;
    tx.commit().await.map_err(StoreError::db(ctx))?;
    Ok(previous)
}
