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
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// The body of a backlog report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacklogBody {
    /// Whose queue: `inngest` or `github_actions`.
    pub processor: Processor,
    /// Items waiting (an integer from 0 to `i64::MAX`).
    #[serde(deserialize_with = "depth")]
    pub depth: u64,
    /// How long the oldest waiting item has waited, in seconds (default 0).
    #[serde(default, deserialize_with = "seconds")]
    pub oldest_age_seconds: f64,
}

/// `depth`: an integer from 0 to `i64::MAX`, or an error naming it and the allowed values.
fn depth<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    v.as_u64().filter(|n| i64::try_from(*n).is_ok()).ok_or_else(|| {
        let given = crate::input::clip(&v.to_string());
        D::Error::custom(format!("`depth` {given} is not allowed: expected an integer from 0 to {}", i64::MAX))
    })
}

/// `oldest_age_seconds`: a number (its range is the service's to check), or an error naming it.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    v.as_f64().ok_or_else(|| {
        let given = crate::input::clip(&v.to_string());
        D::Error::custom(format!("`oldest_age_seconds` {given} is not allowed: expected a number of seconds from 0"))
    })
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
