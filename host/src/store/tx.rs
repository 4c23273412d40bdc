//! The writing transactions of the store, written once over a [`Dialect`].
//!
//! Each function here is the whole orchestration of one guarantee — begin (SQLite `BEGIN
//! IMMEDIATE`, so the write lock is taken before the first read), read under the lock
//! (Postgres `SELECT … FOR UPDATE`), decide in Rust, write, audit, notify, commit — and the
//! dialects ([`super::pg`], [`super::sqlite`]) only say how each step is spelled in SQL.

use super::change::{change_metadata, plan, ChangeOutcome, ChangeRequest};
use super::outbox::{event_for_history, NewAlertEvent};
use super::types::{merge_deltas, HistoryAction, HistoryEntry, MetricsBatch, MetricsDelta, NewHistory, StoredConfig};
use super::{StoreError, StoreResult};
use chrono::{DateTime, SubsecRound, Utc};
use std::collections::HashSet;
use uuid::Uuid;

/// An open transaction of a dialect.
pub(super) type Tx<D> = sqlx::Transaction<'static, <D as Dialect>::Db>;

/// How one database spells the steps of the store's transactions.
pub(super) trait Dialect: Sized {
    /// The sqlx database.
    type Db: sqlx::Database;

    /// Start a writing transaction.
    async fn begin(&self) -> Result<Tx<Self>, sqlx::Error>;

    /// The configuration of `feature`; `lock`: held until the transaction ends.
    async fn read_config(&self, tx: &mut Tx<Self>, feature: &str, lock: bool) -> StoreResult<Option<StoredConfig>>;

    /// Insert the configuration of `feature` with the defaults unless it exists; whether it
    /// was inserted.
    async fn create_config(&self, tx: &mut Tx<Self>, feature: &str, now: DateTime<Utc>) -> StoreResult<bool>;

    /// Write every column of `after` over the row, if its version is still
    /// `before_version`; the row as written.
    async fn write_config(
        &self,
        tx: &mut Tx<Self>,
        before_version: i64,
        after: &StoredConfig,
    ) -> StoreResult<Option<StoredConfig>>;

    /// Keep the snapshot of `after`, the row as just written, as its `config_version`
    /// ([`super::config_versions`]); a version already kept is left as it is.
    async fn insert_config_version(
        &self,
        tx: &mut Tx<Self>,
        after: &StoredConfig,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// Append a history row (`feature` names it in errors).
    async fn insert_history(
        &self,
        tx: &mut Tx<Self>,
        config_id: Option<Uuid>,
        feature: &str,
        entry: &NewHistory,
        now: DateTime<Utc>,
    ) -> StoreResult<HistoryEntry>;

    /// Append an alert event to the outbox (a repeated idempotency key is ignored).
    async fn insert_event(&self, tx: &mut Tx<Self>, event: &NewAlertEvent, now: DateTime<Utc>) -> StoreResult<()>;

    /// The health level recorded for `feature` (Postgres: the row locked until the end).
    async fn health_level(&self, tx: &mut Tx<Self>, feature: &str) -> StoreResult<Option<String>>;

    /// Record `level` for `feature` if the recorded level is still `previous` (`None`: none
    /// recorded); whether it was recorded.
    async fn set_health_level(
        &self,
        tx: &mut Tx<Self>,
        feature: &str,
        previous: Option<&str>,
        level: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Announce a change to listeners when the transaction commits (no-op where the
    /// database has no notifications).
    async fn notify(&self, tx: &mut Tx<Self>, payload: &str) -> StoreResult<()>;

    /// Serialise policy activations for the rest of the transaction.
    async fn lock_policies(&self, tx: &mut Tx<Self>) -> StoreResult<()>;

    /// Whether a policy with `sha256` is stored, and the active policy's digest.
    async fn policy_state(&self, tx: &mut Tx<Self>, sha256: &str) -> StoreResult<(bool, Option<String>)>;

    /// Make `sha256` the only active policy, activated at `now`.
    async fn set_active_policy(&self, tx: &mut Tx<Self>, sha256: &str, now: DateTime<Utc>) -> StoreResult<()>;

    /// Record the batch keys `ids` as applied at `now`; the ones that were not recorded yet.
    async fn claim_batches(&self, tx: &mut Tx<Self>, ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<Vec<Uuid>>;

    /// Add deltas (one per bucket key) to their buckets.
    async fn add_metrics(&self, tx: &mut Tx<Self>, deltas: &[MetricsDelta], now: DateTime<Utc>) -> StoreResult<()>;

    /// Add the processing-time bucket counts of deltas (one per bucket key) to
    /// `rollout_latency_buckets`, summed per configuration, processor, window and bucket.
    async fn add_latency(&self, tx: &mut Tx<Self>, deltas: &[MetricsDelta]) -> StoreResult<()>;

    /// Whether a failed transaction lost a race and may simply run again (a deadlock).
    fn lost_race(&self, error: &StoreError) -> bool;
}

/// The current time at the databases' precision (microseconds), so that what a
/// transaction returns equals what a later read returns.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

async fn commit<D: Dialect>(tx: Tx<D>, context: &str) -> StoreResult<()> {
    tx.commit().await.map_err(StoreError::db(context))
}

/// Append a history row and its alert event ([`event_for_history`]) in `tx`: every audited
/// change is an event, committed or rolled back with it.
async fn write_history<D: Dialect>(
    d: &D,
    tx: &mut Tx<D>,
    config_id: Option<Uuid>,
    feature: &str,
    entry: &NewHistory,
    now: DateTime<Utc>,
) -> StoreResult<HistoryEntry> {
    let row = d.insert_history(tx, config_id, feature, entry, now).await?;
    d.insert_event(tx, &event_for_history(feature, &row), now).await?;
    Ok(row)
}

/// Record `level` as the health level of `feature`; when it differs from the recorded one,
/// write the event `event(previous)` builds in the same transaction (a first level of `ok` is
/// recorded without one). Instances judging the same window race on a compare-and-set, so
/// one transition is one event. Whether the level changed.
pub(super) async fn record_health_level<D: Dialect>(
    d: &D,
    feature: &str,
    level: &str,
    event: impl FnOnce(Option<&str>) -> NewAlertEvent,
) -> StoreResult<bool> {
    let ctx = format!("record the health level of `{feature}`");
    let mut tx = d.begin().await.map_err(StoreError::db(&ctx))?;
    let previous = d.health_level(&mut tx, feature).await?;
    if previous.as_deref() == Some(level) {
        commit::<D>(tx, &ctx).await?;
        return Ok(false);
    }
    let now = now();
    let changed = d.set_health_level(&mut tx, feature, previous.as_deref(), level, now).await?;
    if changed && !(previous.is_none() && level == "ok") {
        d.insert_event(&mut tx, &event(previous.as_deref()), now).await?;
    }
    commit::<D>(tx, &ctx).await?;
    Ok(changed)
}

/// The configuration of `feature`, created with a `created` history row when absent.
pub(super) async fn ensure_config<D: Dialect>(d: &D, feature: &str, triggered_by: &str) -> StoreResult<StoredConfig> {
    let ctx = format!("create the configuration of `{feature}`");
    let mut tx = d.begin().await.map_err(StoreError::db(&ctx))?;
    let now = now();
    let inserted = d.create_config(&mut tx, feature, now).await?;
    let config =
        d.read_config(&mut tx, feature, false).await?.ok_or_else(|| StoreError::UnknownFeature(feature.to_owned()))?;
    if inserted {
        d.insert_config_version(&mut tx, &config, now).await?;
        let entry = NewHistory {
            action: HistoryAction::Created,
            previous_percentage: None,
            new_percentage: Some(i32::from(config.config.rollout_percentage)),
            reason: Some("configuration created".into()),
            triggered_by: triggered_by.to_owned(),
            metadata: serde_json::json!({ "new": config.to_json() }),
        };
        write_history(d, &mut tx, Some(config.id), feature, &entry, now).await?;
        d.notify(&mut tx, feature).await?;
    }
    commit::<D>(tx, &ctx).await?;
    Ok(config)
}

/// Lock the row, [`plan`] the change, write the whole row and its history row, notify,
/// commit; nothing is written when the plan is to skip.
pub(super) async fn apply_change<D: Dialect>(
    d: &D,
    feature: &str,
    request: &ChangeRequest,
) -> StoreResult<ChangeOutcome> {
    let action = request.change.action();
    let ctx = format!("apply `{}` to `{feature}`", action.as_str());
    let mut tx = d.begin().await.map_err(StoreError::db(&ctx))?;
    let before =
        d.read_config(&mut tx, feature, true).await?.ok_or_else(|| StoreError::UnknownFeature(feature.to_owned()))?;
    let now = now();
    let planned = plan(&request.change, &before, now);
    let Some(planned_after) = planned.after else {
        // nothing written: ending the transaction releases the lock
        commit::<D>(tx, &ctx).await?;
        return Ok(ChangeOutcome {
            applied: false,
            after: before.clone(),
            before,
            history: None,
            skipped: planned.skipped,
        });
    };
    let after = d.write_config(&mut tx, before.version, &planned_after).await?.ok_or_else(|| StoreError::Corrupt {
        column: "config_version",
        message: format!("the configuration of `{feature}` changed while locked"),
    })?;
    d.insert_config_version(&mut tx, &after, now).await?;
    let entry = NewHistory {
        action,
        previous_percentage: Some(i32::from(before.config.rollout_percentage)),
        new_percentage: Some(i32::from(after.config.rollout_percentage)),
        reason: request.reason.clone(),
        triggered_by: request.triggered_by.clone(),
        metadata: change_metadata(request, &before, &after),
    };
    let history = write_history(d, &mut tx, Some(before.id), feature, &entry, now).await?;
    d.notify(&mut tx, feature).await?;
    commit::<D>(tx, &ctx).await?;
    Ok(ChangeOutcome { applied: true, before, after, history: Some(history), skipped: None })
}

/// Append a history row (of `config_id`'s feature `feature`, or of none) and notify.
pub(super) async fn append_history<D: Dialect>(
    d: &D,
    config_id: Option<Uuid>,
    feature: &str,
    entry: &NewHistory,
) -> StoreResult<HistoryEntry> {
    let ctx = format!("write the `{}` history row", entry.action.as_str());
    let mut tx = d.begin().await.map_err(StoreError::db(&ctx))?;
    let row = write_history(d, &mut tx, config_id, feature, entry, now()).await?;
    d.notify(&mut tx, feature).await?;
    commit::<D>(tx, &ctx).await?;
    Ok(row)
}

/// Make `sha256` the active policy with its history row; the previously active digest.
/// With `expected_active`, a compare-and-set: `Ok(None)` when another version is active.
#[allow(clippy::too_many_arguments)] // one statement's parameters, passed straight through
pub(super) async fn activate_policy_version<D: Dialect>(
    d: &D,
    sha256: &str,
    expected_active: Option<Option<&str>>,
    revert: bool,
    reason: Option<&str>,
    triggered_by: &str,
    details: Option<&serde_json::Value>,
) -> StoreResult<Option<Option<String>>> {
    let ctx = format!("activate policy `{sha256}`");
    let mut tx = d.begin().await.map_err(StoreError::db(&ctx))?;
    d.lock_policies(&mut tx).await?;
    let (known, previous) = d.policy_state(&mut tx, sha256).await?;
    if !known {
        return Err(StoreError::UnknownPolicy(sha256.to_owned()));
    }
    if expected_active.is_some_and(|expected| expected != previous.as_deref()) {
        // compare-and-set: another activation came first; nothing changes
        commit::<D>(tx, &ctx).await?;
        return Ok(None);
    }
    let now = now();
    d.set_active_policy(&mut tx, sha256, now).await?;
    let mut metadata =
        serde_json::json!({ "previous": { "policy_sha256": previous }, "new": { "policy_sha256": sha256 } });
    if let (Some(serde_json::Value::Object(extra)), Some(object)) = (details, metadata.as_object_mut()) {
        object.extend(extra.clone());
    }
    let entry = NewHistory {
        action: if revert { HistoryAction::PolicyReverted } else { HistoryAction::PolicyActivated },
        previous_percentage: None,
        new_percentage: None,
        reason: reason.map(str::to_owned),
        triggered_by: triggered_by.to_owned(),
        metadata,
    };
    write_history(d, &mut tx, None, "", &entry, now).await?;
    d.notify(&mut tx, "").await?;
    commit::<D>(tx, &ctx).await?;
    Ok(Some(previous))
}

/// Apply the batches whose keys are not recorded yet, recording their keys, in one
/// transaction (run again when it lost a deadlock); the keys applied now, in order.
pub(super) async fn record_batches<D: Dialect>(d: &D, batches: &[MetricsBatch]) -> StoreResult<Vec<Uuid>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match record_batches_once(d, batches).await {
            Err(e) if attempt < 5 && d.lost_race(&e) => continue,
            result => return result,
        }
    }
}

async fn record_batches_once<D: Dialect>(d: &D, batches: &[MetricsBatch]) -> StoreResult<Vec<Uuid>> {
    let mut ids: Vec<Uuid> = batches.iter().map(|b| b.batch_id).collect();
    // one lock order for every transaction
    ids.sort_unstable();
    ids.dedup();
    let ctx = format!("record {} outcome batches", ids.len());
    let mut tx = d.begin().await.map_err(StoreError::db(&ctx))?;
    let now = now();
    let mut fresh: HashSet<Uuid> = d.claim_batches(&mut tx, &ids, now).await?.into_iter().collect();
    let mut applied = Vec::new();
    let mut deltas: Vec<&MetricsDelta> = Vec::new();
    for b in batches {
        // the first submission of a key counts; a repeat in the same group is its retry
        if fresh.remove(&b.batch_id) {
            applied.push(b.batch_id);
            deltas.extend(&b.deltas);
        }
    }
    let mut merged = merge_deltas(deltas.into_iter().cloned());
    if !merged.is_empty() {
        // rows in key order, so two transactions lock buckets in the same order
        merged.sort_by(|a, b| {
            (a.config_id, a.repository_id, a.processor.as_str(), a.hour_start).cmp(&(
                b.config_id,
                b.repository_id,
                b.processor.as_str(),
                b.hour_start,
            ))
        });
        d.add_metrics(&mut tx, &merged, now).await?;
        // after the metrics rows, in key order: one lock order for every transaction
        if merged.iter().any(|m| !m.latency_buckets.is_empty()) {
            d.add_latency(&mut tx, &merged).await?;
        }
    }
    commit::<D>(tx, &ctx).await?;
    Ok(applied)
}
