//! Configuration versions as data (`rollout_config_versions`): every configuration a feature
//! ever had, kept as an immutable snapshot addressed by (configuration id, `config_version`).
//!
//! A snapshot exists if and only if its version committed: [`super::tx`] writes one in the
//! transaction of every write of the row — the creation ([`super::Store::ensure_config`]) and
//! every applied change ([`super::Store::apply_change`]) — beside its history row, so a
//! decision that names the `config_version` it saw can be reproduced under exactly that
//! configuration ([`super::Store::config_at_version`]). The migration backfills one snapshot
//! of the current row of every configuration that existed before it.
//!
//! A snapshot is the whole row as JSON ([`snapshot_json`]), decoded by
//! [`StoredConfig::from_json`]. The SQL of both dialects is here; the dialects' steps
//! ([`super::pg`], [`super::sqlite`]) delegate to [`pg`] and [`sqlite`].

use super::types::StoredConfig;
use super::{StoreError, StoreResult};
use chrono::{DateTime, SecondsFormat, Utc};

/// The snapshot of `config`: [`StoredConfig::to_json`] plus the columns it leaves out (`id`,
/// `config_version`, `rolled_back`, and the three times in RFC 3339 with microseconds), so
/// that [`StoredConfig::from_json`] gives `config` back exactly.
pub fn snapshot_json(config: &StoredConfig) -> serde_json::Value {
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut value = config.to_json();
    if let Some(object) = value.as_object_mut() {
        object.insert("id".into(), config.id.to_string().into());
        object.insert("config_version".into(), config.version.into());
        object.insert("rolled_back".into(), config.rolled_back.into());
        object.insert("state_changed_at".into(), time(config.state_changed_at).into());
        object.insert("created_at".into(), time(config.created_at).into());
        object.insert("updated_at".into(), time(config.updated_at).into());
    }
    value
}

/// The SQL, with `$n` placeholders (spelled `?n` for SQLite by [`sql::lite`]).
mod sql {
    /// The statement with SQLite's numbered placeholders.
    pub fn lite(sql: &str) -> String {
        sql.replace('$', "?")
    }

    /// Keep snapshot $3 of version $2 of configuration $1, written at $4; a version already
    /// kept is left as it is (snapshots are immutable).
    pub const INSERT: &str = "INSERT INTO rollout_config_versions (rollout_config_id, config_version, config, \
        created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (rollout_config_id, config_version) DO NOTHING";

    /// The configuration id of feature $1 and the snapshot of its version $2 (`NULL` when not
    /// kept); no row when the feature is unknown.
    pub const AT_VERSION: &str = "SELECT c.id, v.config FROM rollout_configuration c \
        LEFT JOIN rollout_config_versions v ON v.rollout_config_id = c.id AND v.config_version = $2 \
        WHERE c.feature_name = $1";

    /// Whether feature $1 exists.
    pub const EXISTS: &str = "SELECT 1 FROM rollout_configuration WHERE feature_name = $1";

    /// The newest $2 versions kept of feature $1 and when each was written.
    pub const LIST: &str = "SELECT v.config_version, v.created_at FROM rollout_config_versions v \
        JOIN rollout_configuration c ON c.id = v.rollout_config_id WHERE c.feature_name = $1 \
        ORDER BY v.config_version DESC LIMIT $2";
}

fn insert_context(after: &StoredConfig) -> String {
    format!("keep version {} of the configuration of `{}`", after.version, after.config.feature_name)
}

fn at_version_context(feature: &str, version: i64) -> String {
    format!("read version {version} of the configuration of `{feature}`")
}

fn list_context(feature: &str) -> String {
    format!("list the configuration versions of `{feature}`")
}

fn corrupt(column: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { column, message: e.to_string() }
}

/// The Postgres statements.
pub(super) mod pg {
    use super::*;
    use sqlx::postgres::{PgConnection, PgPool};
    use sqlx::Row;

    /// Keep the snapshot of `after` (the row as just written), in the writing transaction.
    pub(in crate::store) async fn insert(
        conn: &mut PgConnection,
        after: &StoredConfig,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(sql::INSERT)
            .bind(after.id)
            .bind(after.version)
            .bind(snapshot_json(after))
            .bind(now)
            .execute(conn)
            .await
            .map_err(StoreError::db(insert_context(after)))?;
        Ok(())
    }

    /// The configuration of `feature` at `version`, if kept.
    pub(in crate::store) async fn at_version(
        pool: &PgPool,
        feature: &str,
        version: i64,
    ) -> StoreResult<Option<StoredConfig>> {
        let row = sqlx::query(sql::AT_VERSION)
            .bind(feature)
            .bind(version)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::db(at_version_context(feature, version)))?
            .ok_or_else(|| StoreError::UnknownFeature(feature.to_owned()))?;
        let config: Option<serde_json::Value> = row.try_get("config").map_err(|e| corrupt("config", e))?;
        config.as_ref().map(StoredConfig::from_json).transpose()
    }

    /// The newest `limit` versions kept of `feature`, newest first.
    pub(in crate::store) async fn list(
        pool: &PgPool,
        feature: &str,
        limit: u32,
    ) -> StoreResult<Vec<(i64, DateTime<Utc>)>> {
        let ctx = list_context(feature);
        let rows = sqlx::query(sql::LIST)
            .bind(feature)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::db(&ctx))?;
        if rows.is_empty() {
            let known =
                sqlx::query(sql::EXISTS).bind(feature).fetch_optional(pool).await.map_err(StoreError::db(&ctx))?;
            if known.is_none() {
                return Err(StoreError::UnknownFeature(feature.to_owned()));
            }
        }
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("config_version").map_err(|e| corrupt("config_version", e))?,
                    row.try_get("created_at").map_err(|e| corrupt("created_at", e))?,
                ))
            })
            .collect()
    }
}

/// The SQLite statements (JSON and times as text, like the other tables).
pub(super) mod sqlite {
    use super::*;
    use sqlx::sqlite::{SqliteConnection, SqlitePool};
    use sqlx::Row;

    use crate::store::sqlite::ts;

    /// Keep the snapshot of `after` (the row as just written), in the writing transaction.
    pub(in crate::store) async fn insert(
        conn: &mut SqliteConnection,
        after: &StoredConfig,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(&sql::lite(sql::INSERT))
            .bind(after.id.to_string())
            .bind(after.version)
            .bind(snapshot_json(after).to_string())
            .bind(ts(now))
            .execute(conn)
            .await
            .map_err(StoreError::db(insert_context(after)))?;
        Ok(())
    }

    /// The configuration of `feature` at `version`, if kept.
    pub(in crate::store) async fn at_version(
        pool: &SqlitePool,
        feature: &str,
        version: i64,
    ) -> StoreResult<Option<StoredConfig>> {
        let row = sqlx::query(&sql::lite(sql::AT_VERSION))
            .bind(feature)
            .bind(version)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::db(at_version_context(feature, version)))?
            .ok_or_else(|| StoreError::UnknownFeature(feature.to_owned()))?;
        let config: Option<String> = row.try_get("config").map_err(|e| corrupt("config", e))?;
        match config {
            None => Ok(None),
            Some(text) => {
                let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| corrupt("config", e))?;
                StoredConfig::from_json(&value).map(Some)
            }
        }
    }

    /// The newest `limit` versions kept of `feature`, newest first.
    pub(in crate::store) async fn list(
        pool: &SqlitePool,
        feature: &str,
        limit: u32,
    ) -> StoreResult<Vec<(i64, DateTime<Utc>)>> {
        let ctx = list_context(feature);
        let rows = sqlx::query(&sql::lite(sql::LIST))
            .bind(feature)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(StoreError::db(&ctx))?;
        if rows.is_empty() {
            let known = sqlx::query(&sql::lite(sql::EXISTS))
                .bind(feature)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::db(&ctx))?;
            if known.is_none() {
                return Err(StoreError::UnknownFeature(feature.to_owned()));
            }
        }
        rows.iter()
            .map(|row| {
                let created: String = row.try_get("created_at").map_err(|e| corrupt("created_at", e))?;
                let created = DateTime::parse_from_rfc3339(&created)
                    .map_err(|e| corrupt("created_at", format!("`{created}`: {e}")))?
                    .with_timezone(&Utc);
                Ok((row.try_get("config_version").map_err(|e| corrupt("config_version", e))?, created))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_policy::{Config, Strategy};
    use uuid::Uuid;

    fn sample() -> StoredConfig {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).expect("time");
        StoredConfig {
            id: Uuid::new_v4(),
            config: Config {
                feature_name: "f".into(),
                rollout_percentage: 37,
                is_active: true,
                target_repositories: vec!["a".into(), "b".into()],
                excluded_repositories: vec!["c".into()],
                rollout_strategy: Strategy::parse("whitelist").expect("strategy"),
                max_error_rate: 2.75,
                monitoring_window_hours: 6,
                auto_rollback_enabled: false,
                emergency_stop: true,
                min_jobs_for_rollback: 3,
            },
            metadata: serde_json::json!({ "cost_per_job": { "inngest": 0.25 }, "note": "x" }),
            state_changed_at: t("2025-12-03T01:02:03.123456Z"),
            created_at: t("2025-12-01T00:00:00Z"),
            updated_at: t("2025-12-03T01:02:03.654321Z"),
            version: 42,
            rolled_back: true,
        }
    }

    #[test]
    fn a_snapshot_decodes_to_the_configuration_it_was_taken_of() {
        let config = sample();
        let json = snapshot_json(&config);
        assert_eq!(StoredConfig::from_json(&json).expect("decode"), config);
        // and through the text a database keeps
        let text = json.to_string();
        let back: serde_json::Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(StoredConfig::from_json(&back).expect("decode"), config);
        // every key of `to_json` is in the snapshot, unchanged
        let plain = config.to_json();
        for (key, value) in plain.as_object().expect("object") {
            assert_eq!(json.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn a_missing_or_mistyped_key_is_named() {
        let mut json = snapshot_json(&sample());
        json.as_object_mut().expect("object").remove("config_version");
        let e = StoredConfig::from_json(&json).expect_err("missing").to_string();
        assert!(e.contains("config_version"), "{e}");
        let mut json = snapshot_json(&sample());
        json["is_active"] = serde_json::json!(1);
        let e = StoredConfig::from_json(&json).expect_err("mistyped").to_string();
        assert!(e.contains("is_active"), "{e}");
        // a time with an offset (Postgres' JSON spelling) is read as the same instant
        let mut json = snapshot_json(&sample());
        json["created_at"] = serde_json::json!("2025-12-01T01:00:00+01:00");
        assert_eq!(StoredConfig::from_json(&json).expect("offset").created_at, sample().created_at);
    }
}
