//! Writes on a feature: outcomes and the audited operations, each a call to the service.

use super::error::ApiResult;
use super::requests::{
    AutoRollbackBody, Body, CheckHealthBody, IdsBody, OptionalBody, OutcomesBody, PercentageBody, ReasonBody,
};
use super::{AppState, FeaturePath, Writer};
use crate::manager::HealthReport;
use crate::service::operations::{Operation, OperationOutcome};
use crate::service::outcomes::Recorded;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// `POST /v1/features/{feature}/outcomes`: one outcome, or `{outcomes: [...]}`.
///
/// 200 `{"recorded": n, "durable": true}` once committed; 202 `{"durable": false, "buffered":
/// n}` when the database is unreachable and the outcomes wait in the buffer.
pub async fn outcomes(
    _writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<OutcomesBody>,
) -> ApiResult<Response> {
    let service = state.service();
    let feature = service.feature(&name).await?;
    let inputs = body.into_outcomes(service.options().max_batch)?;
    Ok(match service.record_outcomes(&feature, inputs).await? {
        Recorded::Durable(n) => Json(json!({ "recorded": n, "durable": true })).into_response(),
        Recorded::Buffered(n) => {
            let body = json!({
                "recorded": 0,
                "buffered": n,
                "durable": false,
                "message": "the database is unreachable: the outcomes are buffered in this process and written when it is back",
            });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
    })
}

async fn apply(
    state: &AppState,
    name: &str,
    writer: &Writer,
    operation: Operation,
    reason: Option<crate::input::values::Reason>,
) -> ApiResult<Json<OperationOutcome>> {
    Ok(Json(state.service().apply(name, operation, reason, &writer.actor).await?))
}

/// `PUT /v1/features/{feature}/percentage` `{percentage, reason?}`.
pub async fn percentage(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<PercentageBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::SetPercentage(body.percentage), body.reason).await
}

/// `POST /v1/features/{feature}/emergency-stop` `{reason}`.
pub async fn emergency_stop(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<ReasonBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::EmergencyStop, Some(body.reason)).await
}

/// `POST /v1/features/{feature}/resume` `{reason}`.
pub async fn resume(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<ReasonBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::Resume, Some(body.reason)).await
}

/// `POST /v1/features/{feature}/whitelist/add` `{repository_ids, reason?}`.
pub async fn whitelist_add(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<IdsBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::WhitelistAdd(body.repository_ids.0), body.reason).await
}

/// `POST /v1/features/{feature}/whitelist/remove` `{repository_ids, reason?}`.
pub async fn whitelist_remove(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<IdsBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::WhitelistRemove(body.repository_ids.0), body.reason).await
}

/// `POST /v1/features/{feature}/exclusions/add` `{repository_ids, reason?}`.
pub async fn exclusions_add(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<IdsBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::ExcludeAdd(body.repository_ids.0), body.reason).await
}

/// `POST /v1/features/{feature}/exclusions/remove` `{repository_ids, reason?}`.
pub async fn exclusions_remove(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<IdsBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::ExcludeRemove(body.repository_ids.0), body.reason).await
}

/// `PUT /v1/features/{feature}/auto-rollback` `{enabled, reason?}`.
pub async fn auto_rollback(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<AutoRollbackBody>,
) -> ApiResult<Json<OperationOutcome>> {
    apply(&state, &name, &writer, Operation::SetAutoRollback(body.enabled), body.reason).await
}

/// `POST /v1/features/{feature}/check-health` `{apply?}` (default `apply: true`): the health
/// over the window and any action taken.
pub async fn check_health(
    _writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    OptionalBody(body): OptionalBody<CheckHealthBody>,
) -> ApiResult<Json<HealthReport>> {
    Ok(Json(state.service().check_health(&name, body.apply.unwrap_or(true)).await?))
}

/// `POST /v1/features` `{feature_name}`: create a feature (0 %, active, percentage
/// strategy; audited as `created`). 201 with its configuration; 409 when it exists.
pub async fn create_feature(
    writer: Writer,
    State(state): State<AppState>,
    Body(body): Body<super::requests::CreateFeatureBody>,
) -> ApiResult<Response> {
    let config = state.service().create_feature(&body.feature_name, &writer.actor).await?;
    Ok((StatusCode::CREATED, Json(json!({ "created": true, "config": config }))).into_response())
}
