//! The policy candidate over HTTP: shadow, canary, promote, stop, and the results
//! ([`crate::service::candidate`]).

use super::error::ApiResult;
use super::requests::{Body, OptionalBody, OptionalReasonBody};
use super::{AppState, ShaPath, Writer};
use crate::input::values::Reason;
use crate::service::candidate::{parse_interval, CanaryRequest, CandidateStatus};
use crate::service::policies::Activated;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

/// `{sample_rate, reason?}` of a shadow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowBody {
    /// Share of decisions the candidate also evaluates, 0–1.
    pub sample_rate: f64,
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
}

/// An interval as seconds or as text (`10m`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IntervalValue {
    /// Seconds.
    Seconds(u64),
    /// `30s`, `10m`, `1h`, `1d`.
    Text(String),
}

/// `{percentage, max_fallback_rate?, max_error_rate_delta?, steps?, interval?, reason?}` of a
/// canary.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryBody {
    /// Share of repositories the candidate serves, percent (0–100).
    pub percentage: f64,
    /// Largest tolerated excess of the canary's fallback rate over the control's (default 0).
    #[serde(default)]
    pub max_fallback_rate: f64,
    /// Largest tolerated excess of the canary's outcome error rate (default 0.02).
    #[serde(default = "default_error_delta")]
    pub max_error_rate_delta: f64,
    /// Shares to step through after `percentage`.
    #[serde(default)]
    pub steps: Vec<f64>,
    /// How long each share is held before the next (`10m` or seconds).
    #[serde(default)]
    pub interval: Option<IntervalValue>,
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
}

fn default_error_delta() -> f64 {
    0.02
}

/// The candidate's status with its stored history.
#[derive(Debug, Serialize)]
pub struct CandidateView {
    /// The candidate as this instance follows it.
    #[serde(flatten)]
    pub status: CandidateStatus,
    /// The newest stored events (newest first).
    pub history: Vec<crate::store::CandidateEvent>,
}

async fn view(state: &AppState) -> ApiResult<Json<CandidateView>> {
    let service = state.service();
    // the counts are this process's: shown even when the database cannot give the history
    let history = match service.candidate_history(20).await {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!("cannot read the policy candidate's history: {e}");
            Vec::new()
        }
    };
    Ok(Json(CandidateView { status: service.candidate_status(), history }))
}

/// `POST /v1/policies/{sha256}/shadow` `{sample_rate, reason?}`: the stored version (a
/// digest or a unique prefix) decides beside the serving one on a sample of live decisions.
pub async fn shadow(
    writer: Writer,
    State(state): State<AppState>,
    ShaPath(sha): ShaPath,
    Body(body): Body<ShadowBody>,
) -> ApiResult<Json<CandidateView>> {
    let service = state.service();
    let sha256 = service.resolve_policy(&sha).await?;
    service.start_shadow(&sha256, body.sample_rate, body.reason, &writer.actor).await?;
    view(&state).await
}

/// `POST /v1/policies/{sha256}/canary` `{percentage, max_fallback_rate?,
/// max_error_rate_delta?, steps?, interval?, reason?}`: the stored version serves a sticky
/// share of repositories, judged by the guard at every health check.
pub async fn canary(
    writer: Writer,
    State(state): State<AppState>,
    ShaPath(sha): ShaPath,
    Body(body): Body<CanaryBody>,
) -> ApiResult<Json<CandidateView>> {
    let interval_seconds = match body.interval {
        None => 0,
        Some(IntervalValue::Seconds(s)) => s,
        Some(IntervalValue::Text(t)) => parse_interval(&t)?,
    };
    let request = CanaryRequest {
        percentage: body.percentage,
        max_fallback_rate: body.max_fallback_rate,
        max_error_rate_delta: body.max_error_rate_delta,
        steps: body.steps,
        interval_seconds,
    };
    let service = state.service();
    let sha256 = service.resolve_policy(&sha).await?;
    service.start_canary(&sha256, request, body.reason, &writer.actor).await?;
    view(&state).await
}

/// `POST /v1/policies/{sha256}/promote` `{reason?}`: the candidate becomes the active version
/// (audited as `policy_activated`), and the candidate ends.
pub async fn promote(
    writer: Writer,
    State(state): State<AppState>,
    ShaPath(sha): ShaPath,
    OptionalBody(body): OptionalBody<OptionalReasonBody>,
) -> ApiResult<Json<Activated>> {
    let service = state.service();
    let sha256 = service.resolve_policy(&sha).await?;
    Ok(Json(service.promote_candidate(&sha256, body.reason, &writer.actor).await?))
}

/// `POST /v1/policies/candidate/stop` `{reason?}`: end the shadow or canary.
pub async fn stop(
    writer: Writer,
    State(state): State<AppState>,
    OptionalBody(body): OptionalBody<OptionalReasonBody>,
) -> ApiResult<Json<CandidateView>> {
    state.service().stop_candidate(body.reason, &writer.actor).await?;
    view(&state).await
}

/// `GET /v1/policies/shadow` (also `/v1/policies/candidate`): the candidate this instance
/// follows, its shadow results and canary counts, the guard's last judgement, and the stored
/// history.
pub async fn status(State(state): State<AppState>) -> ApiResult<Json<CandidateView>> {
    view(&state).await
}
