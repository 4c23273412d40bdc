//! `PUT /v1/features/{feature}/backlog` `{processor, depth, oldest_age_seconds?}`: a queue
//! backlog report ([`crate::store::backlog`]), stored by the service and answered with the
//! stored report.

use super::error::ApiResult;
use super::requests::Body;
use super::{AppState, FeaturePath, Writer};
use crate::store::BacklogReport;
use axum::extract::State;
use axum::Json;
use rollout_policy::Processor;
use serde::Deserialize;

/// The body of a backlog report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacklogBody {
    /// Whose queue: `inngest` or `github_actions`.
    pub processor: Processor,
    /// Items waiting (an integer from 0).
    pub depth: u64,
    /// How long the oldest waiting item has waited, in seconds (default 0).
    #[serde(default)]
    pub oldest_age_seconds: f64,
}

/// `PUT /v1/features/{feature}/backlog`: 200 with the stored report.
pub async fn report(
    _writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<BacklogBody>,
) -> ApiResult<Json<BacklogReport>> {
    let service = state.service();
    Ok(Json(service.report_backlog(&name, body.processor, body.depth, body.oldest_age_seconds).await?))
}
