//! Writes on a feature: outcomes and the audited operations.

use super::error::{ApiError, ApiResult};
use super::input::{self, JsonObject, MaybeJsonObject};
use super::{AppState, Feature, Writer};
use crate::manager::{EffectiveConfig, HealthReport, Manager, ManagerError, ManagerResult, OutcomeInput};
use crate::store::{ChangeOutcome, HistoryEntry};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// What an operation did.
#[derive(Debug, serde::Serialize)]
pub struct ChangeView {
    /// Whether the configuration changed (a rollback at 0 % changes nothing).
    pub applied: bool,
    /// The configuration in force now, environment overrides marked.
    pub config: EffectiveConfig,
    /// The history row written.
    pub history: Option<HistoryEntry>,
    /// Fields the database now holds but an environment override hides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overridden_by_environment: Vec<&'static str>,
}

impl ChangeView {
    fn new(outcome: &ChangeOutcome, manager: &Manager) -> ChangeView {
        let config = manager.effective_config();
        let changed: Vec<String> = outcome
            .history
            .as_ref()
            .and_then(|h| h.metadata.get("new"))
            .and_then(|n| n.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let overridden_by_environment =
            config.env_overrides.iter().filter(|o| changed.iter().any(|c| c == o.field)).map(|o| o.field).collect();
        ChangeView { applied: outcome.applied, config, history: outcome.history.clone(), overridden_by_environment }
    }
}

fn outcome(obj: &Map<String, Value>, prefix: &str) -> ApiResult<OutcomeInput> {
    input::only(obj, prefix, &["repository_id", "processor_type", "success", "processing_time_ms", "error_message"])?;
    let field = input::path(prefix, "repository_id");
    let repository_id = input::repository_ref(input::string(obj, prefix, "repository_id")?, &field)?;
    let processor = input::processor(obj, prefix)?;
    let success = input::boolean(obj, prefix, "success")?;
    let processing_time_ms = input::opt_uint(obj, prefix, "processing_time_ms", i64::MAX as u64)?;
    let error_message = input::opt_string(obj, prefix, "error_message")?.map(str::to_owned);
    if error_message.as_ref().is_some_and(|m| m.chars().count() > input::MAX_ERROR_MESSAGE_CHARS) {
        return Err(ApiError::invalid(
            input::path(prefix, "error_message"),
            format!("`error_message` is longer than {} characters", input::MAX_ERROR_MESSAGE_CHARS),
        ));
    }
    Ok(OutcomeInput { repository_id, processor, success, processing_time_ms, error_message })
}

/// `POST /v1/features/{feature}/outcomes`: one outcome, or `{outcomes: [...]}`.
///
/// 200 `{"recorded": n, "durable": true}` once committed; 202 `{"durable": false, "buffered":
/// n}` when the database is unreachable and the outcomes wait in the buffer.
pub async fn outcomes(
    _writer: Writer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Response> {
    let feature = state.feature(&name).await?;
    let inputs = if body.contains_key("outcomes") {
        input::only(&body, "", &["outcomes"])?;
        let items = input::list(&body, "outcomes", state.inner.options.max_batch)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            let (obj, prefix) = input::item(v, "outcomes", i)?;
            out.push(outcome(obj, &prefix)?);
        }
        out
    } else {
        vec![outcome(&body, "")?]
    };
    let n = inputs.len();
    if state.record_outcomes(&feature, inputs).await? {
        Ok(Json(json!({ "recorded": n, "durable": true })).into_response())
    } else {
        let body = json!({
            "recorded": 0,
            "buffered": n,
            "durable": false,
            "message": "the database is unreachable: the outcomes are buffered in this process and written when it is back",
        });
        Ok((StatusCode::ACCEPTED, Json(body)).into_response())
    }
}

async fn change(
    state: &AppState,
    feature: &Arc<Feature>,
    result: impl std::future::Future<Output = ManagerResult<ChangeOutcome>>,
) -> ApiResult<Json<Value>> {
    let result = result.await;
    state.inner.db.observe(&result);
    let outcome = result?;
    feature.mark_loaded();
    let view = ChangeView::new(&outcome, &feature.manager);
    Ok(Json(serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?))
}

async fn open_for_write(state: &AppState, name: &str) -> ApiResult<Arc<Feature>> {
    state.require_db()?;
    state.feature(name).await
}

/// `PUT /v1/features/{feature}/percentage` `{percentage, reason?}`.
pub async fn percentage(
    writer: Writer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let feature = open_for_write(&state, &name).await?;
    input::only(&body, "", &["percentage", "reason"])?;
    let p = match body.get("percentage") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid("percentage", "`percentage` is required: an integer from 0 to 100"))
        }
        Some(v) => input::uint_value(v, "percentage", 100)?,
    };
    let reason = input::reason(&body, false)?;
    change(&state, &feature, feature.manager.set_percentage(p as u32, reason.as_deref(), &writer.actor)).await
}

/// `POST /v1/features/{feature}/emergency-stop` `{reason}`.
pub async fn emergency_stop(
    writer: Writer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let feature = open_for_write(&state, &name).await?;
    input::only(&body, "", &["reason"])?;
    let reason = input::reason(&body, true)?.unwrap_or_default();
    change(&state, &feature, feature.manager.emergency_stop(&reason, &writer.actor)).await
}

/// `POST /v1/features/{feature}/resume` `{reason}`.
pub async fn resume(
    writer: Writer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let feature = open_for_write(&state, &name).await?;
    input::only(&body, "", &["reason"])?;
    let reason = input::reason(&body, true)?.unwrap_or_default();
    change(&state, &feature, feature.manager.resume(&reason, &writer.actor)).await
}

fn ids(state: &AppState, body: &Map<String, Value>) -> ApiResult<(Vec<String>, Option<String>)> {
    input::only(body, "", &["repository_ids", "reason"])?;
    let items = input::list(body, "repository_ids", state.inner.options.max_batch)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let field = format!("repository_ids[{i}]");
        match v {
            Value::String(s) => out.push(input::repository_ref(s, &field)?),
            other => {
                return Err(ApiError::invalid(
                    field,
                    format!("the id is {}: expected a UUID or owner/name string", input::kind(other)),
                ))
            }
        }
    }
    Ok((out, input::reason(body, false)?))
}

/// Which list edit.
#[derive(Clone, Copy)]
enum Edit {
    WhitelistAdd,
    WhitelistRemove,
    ExcludeAdd,
    ExcludeRemove,
}

async fn edit(
    state: AppState,
    writer: Writer,
    name: String,
    body: Map<String, Value>,
    edit: Edit,
) -> ApiResult<Json<Value>> {
    let feature = open_for_write(&state, &name).await?;
    let (ids, reason) = ids(&state, &body)?;
    let m = &feature.manager;
    let (r, a) = (reason.as_deref(), writer.actor.as_str());
    match edit {
        Edit::WhitelistAdd => change(&state, &feature, m.whitelist_add(&ids, r, a)).await,
        Edit::WhitelistRemove => change(&state, &feature, m.whitelist_remove(&ids, r, a)).await,
        Edit::ExcludeAdd => change(&state, &feature, m.exclude_add(&ids, r, a)).await,
        Edit::ExcludeRemove => change(&state, &feature, m.exclude_remove(&ids, r, a)).await,
    }
}

/// `POST /v1/features/{feature}/whitelist/add` `{repository_ids, reason?}`.
pub async fn whitelist_add(
    w: Writer,
    State(s): State<AppState>,
    Path(n): Path<String>,
    JsonObject(b): JsonObject,
) -> ApiResult<Json<Value>> {
    edit(s, w, n, b, Edit::WhitelistAdd).await
}

/// `POST /v1/features/{feature}/whitelist/remove` `{repository_ids, reason?}`.
pub async fn whitelist_remove(
    w: Writer,
    State(s): State<AppState>,
    Path(n): Path<String>,
    JsonObject(b): JsonObject,
) -> ApiResult<Json<Value>> {
    edit(s, w, n, b, Edit::WhitelistRemove).await
}

/// `POST /v1/features/{feature}/exclusions/add` `{repository_ids, reason?}`.
pub async fn exclusions_add(
    w: Writer,
    State(s): State<AppState>,
    Path(n): Path<String>,
    JsonObject(b): JsonObject,
) -> ApiResult<Json<Value>> {
    edit(s, w, n, b, Edit::ExcludeAdd).await
}

/// `POST /v1/features/{feature}/exclusions/remove` `{repository_ids, reason?}`.
pub async fn exclusions_remove(
    w: Writer,
    State(s): State<AppState>,
    Path(n): Path<String>,
    JsonObject(b): JsonObject,
) -> ApiResult<Json<Value>> {
    edit(s, w, n, b, Edit::ExcludeRemove).await
}

/// `PUT /v1/features/{feature}/auto-rollback` `{enabled, reason?}`.
pub async fn auto_rollback(
    writer: Writer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let feature = open_for_write(&state, &name).await?;
    input::only(&body, "", &["enabled", "reason"])?;
    let enabled = input::boolean(&body, "", "enabled")?;
    let reason = input::reason(&body, false)?;
    change(&state, &feature, feature.manager.set_auto_rollback(enabled, reason.as_deref(), &writer.actor)).await
}

/// Run the health check of `feature` now (and roll back when the policy says so, unless
/// `apply` is false); records the result for the status and the metrics.
pub(crate) async fn run_health_check(
    state: &AppState,
    feature: &Arc<Feature>,
    apply: bool,
) -> Result<HealthReport, ManagerError> {
    let result = if apply {
        feature.manager.check_and_trigger_auto_rollback().await
    } else {
        feature.manager.check_health().await
    };
    state.inner.db.observe(&result);
    state.inner.metrics.health_checked();
    let report = result?;
    feature.mark_loaded();
    let per_processor: Vec<(rollout_policy::Processor, f64)> = rollout_policy::Processor::ALL
        .iter()
        .filter_map(|p| report.processors.get(p.as_str()).map(|s| (*p, s.error_rate)))
        .collect();
    feature.counters.health(report.error_rate, &per_processor);
    if report.rolled_back {
        feature.counters.rollback();
        tracing::warn!(feature = feature.name(), error_rate = report.error_rate, "rolled back: {}", report.reason);
    }
    feature.set_health(&report);
    Ok(report)
}

/// `POST /v1/features/{feature}/check-health` `{apply?}` (default `apply: true`): the health
/// over the window and any action taken.
pub async fn check_health(
    _writer: Writer,
    State(state): State<AppState>,
    Path(name): Path<String>,
    MaybeJsonObject(body): MaybeJsonObject,
) -> ApiResult<Json<HealthReport>> {
    let feature = open_for_write(&state, &name).await?;
    let apply = match &body {
        Some(b) => {
            input::only(b, "", &["apply"])?;
            match b.get("apply") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(x)) => *x,
                Some(other) => {
                    return Err(ApiError::invalid(
                        "apply",
                        format!("`apply` is {}: expected true or false", input::kind(other)),
                    ))
                }
            }
        }
        None => true,
    };
    Ok(Json(run_health_check(&state, &feature, apply).await?))
}
