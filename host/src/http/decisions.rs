//! Decisions: eligibility, route, route batch. Memory only — no database round trip.

use super::error::ApiResult;
use super::requests::{check_count, decode, read_body, EligibilityBody, RouteBatchBody, RouteBody};
use super::{AppState, FeaturePath};
use crate::engine::PolicyVersion;
use crate::service::Logged;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::Json;
use rollout_policy::{Eligibility, RouteDecision};
use serde::Serialize;
use uuid::Uuid;

/// The answer to an eligibility request.
#[derive(Debug, Serialize)]
pub struct EligibilityView {
    /// Whether the repository takes part.
    pub eligible: bool,
    /// The rule that decided (SPEC §2.2).
    pub reason: &'static str,
    /// The repository's bucket.
    pub bucket: u8,
    /// The policy that decided (`null` when none is loaded).
    pub policy_version: Option<PolicyVersion>,
    /// The decision's id (UUIDv7): pass it with the job's outcome; `GET /v1/decisions/{id}`
    /// finds it when it was logged.
    pub decision_id: Uuid,
}

impl EligibilityView {
    fn new(e: &Logged<Eligibility>, policy_version: Option<PolicyVersion>) -> EligibilityView {
        let d = &e.decision;
        EligibilityView {
            eligible: d.eligible,
            reason: d.reason.as_str(),
            bucket: d.bucket,
            policy_version,
            decision_id: e.id,
        }
    }
}

/// The answer to a route request.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// Where the job runs.
    pub processor: &'static str,
    /// The routing rule (SPEC §2.3).
    pub rule: &'static str,
    /// Whether the repository takes part.
    pub eligible: bool,
    /// The eligibility rule.
    pub reason: &'static str,
    /// The repository's bucket.
    pub bucket: u8,
    /// The policy that decided (`null` when none is loaded).
    pub policy_version: Option<PolicyVersion>,
    /// The decision's id (UUIDv7): pass it with the job's outcome; `GET /v1/decisions/{id}`
    /// finds it when it was logged.
    pub decision_id: Uuid,
}

impl RouteView {
    fn new(logged: &Logged<RouteDecision>, policy_version: Option<PolicyVersion>) -> RouteView {
        let d = &logged.decision;
        RouteView {
            processor: d.processor.as_str(),
            rule: d.rule.as_str(),
            eligible: d.eligibility.eligible,
            reason: d.eligibility.reason.as_str(),
            bucket: d.eligibility.bucket,
            policy_version,
            decision_id: logged.id,
        }
    }
}

/// The answer to a route batch.
#[derive(Debug, Serialize)]
pub struct BatchView {
    /// One decision per request, in order.
    pub decisions: Vec<RouteView>,
}

/// The decision id header of a single decision's response.
pub const DECISION_ID_HEADER: &str = "x-decision-id";

/// The response's `x-decision-id` header.
fn id_header(id: Uuid) -> [(HeaderName, HeaderValue); 1] {
    let value = HeaderValue::from_str(&id.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""));
    [(HeaderName::from_static(DECISION_ID_HEADER), value)]
}

/// `POST /v1/features/{feature}/eligibility` `{repository_id}`.
pub async fn eligibility(
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    RawBody(bytes): RawBody,
) -> ApiResult<([(HeaderName, HeaderValue); 1], Json<EligibilityView>)> {
    let service = state.service();
    let feature = service.feature(&name).await?;
    let body: EligibilityBody = decode(&bytes)?;
    let repo = service.repository_for(&feature, body.repository_id, None);
    let decision = service.is_eligible_logged(&feature, &repo);
    Ok((
        id_header(decision.id),
        Json(EligibilityView::new(&decision, decision.canary.clone().or_else(|| service.runtime().policy_version()))),
    ))
}

/// `POST /v1/features/{feature}/route` `{repository_id, job}`.
pub async fn route(
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    RawBody(bytes): RawBody,
) -> ApiResult<([(HeaderName, HeaderValue); 1], Json<RouteView>)> {
    let service = state.service();
    let feature = service.feature(&name).await?;
    let (id, job) = decode::<RouteBody>(&bytes)?.into_parts();
    let repo = service.repository_for(&feature, id, None);
    let decision = service.route_logged(&feature, &repo, &job);
    Ok((
        id_header(decision.id),
        Json(RouteView::new(&decision, decision.canary.clone().or_else(|| service.runtime().policy_version()))),
    ))
}

/// `POST /v1/features/{feature}/route/batch` `{requests: [{repository_id, job}]}`.
pub async fn route_batch(
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<BatchView>> {
    let service = state.service();
    let feature = service.feature(&name).await?;
    let body: RouteBatchBody = decode(&bytes)?;
    check_count("requests", body.requests.0.len(), service.options().max_batch)?;
    let requests = body.requests.0.into_iter().map(RouteBody::into_parts).collect();
    let decisions = service.route_batch_logged(&feature, requests);
    let version = service.runtime().policy_version();
    Ok(Json(BatchView {
        decisions: decisions.iter().map(|d| RouteView::new(d, d.canary.clone().or_else(|| version.clone()))).collect(),
    }))
}

/// A request body, unparsed: decisions parse it after the feature is known (an unknown
/// feature is a 404 whatever the body).
#[derive(Debug)]
pub struct RawBody(pub axum::body::Bytes);

impl axum::extract::FromRequest<AppState> for RawBody {
    type Rejection = super::ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_body(req, state).await.map(RawBody)
    }
}
