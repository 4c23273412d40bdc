//! Decisions: eligibility, route, route batch. Memory only — no database round trip.

use super::error::ApiResult;
use super::input::{self, FastDecision, RawBody};
use super::{AppState, Feature};
use crate::engine::PolicyVersion;
use axum::extract::{Path, State};
use axum::Json;
use rollout_policy::{Eligibility, Job, Repository, RouteDecision};
use serde::Serialize;
use std::sync::Arc;

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
}

impl EligibilityView {
    fn new(e: &Eligibility, policy_version: Option<PolicyVersion>) -> EligibilityView {
        EligibilityView { eligible: e.eligible, reason: e.reason.as_str(), bucket: e.bucket, policy_version }
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
}

impl RouteView {
    fn new(d: &RouteDecision, policy_version: Option<PolicyVersion>) -> RouteView {
        RouteView {
            processor: d.processor.as_str(),
            rule: d.rule.as_str(),
            eligible: d.eligibility.eligible,
            reason: d.eligibility.reason.as_str(),
            bucket: d.eligibility.bucket,
            policy_version,
        }
    }
}

/// The answer to a route batch.
#[derive(Debug, Serialize)]
pub struct BatchView {
    /// One decision per request, in order.
    pub decisions: Vec<RouteView>,
}

fn repository(state: &AppState, feature: &Arc<Feature>, id: &str) -> Repository {
    let repo = feature.manager.repository(id);
    if repo.category.is_none() {
        state.note_uncategorized(feature, &repo.id);
    }
    repo
}

/// The repository id and job of a decision request: the typed fast path, else the
/// field-by-field checks whose errors name the field.
fn decision_input(bytes: &[u8], with_job: bool) -> ApiResult<(String, Job)> {
    if let Ok(fast) = serde_json::from_slice::<FastDecision<'_>>(bytes) {
        if let Some(accepted) = fast.accept(with_job) {
            return Ok(accepted);
        }
    }
    let body = input::object(bytes)?;
    if with_job {
        input::only(&body, "", &["repository_id", "job"])?;
        Ok((input::repository_uuid(&body, "")?, input::job(&body, "")?))
    } else {
        input::only(&body, "", &["repository_id"])?;
        Ok((input::repository_uuid(&body, "")?, Job::default()))
    }
}

/// `POST /v1/features/{feature}/eligibility` `{repository_id}`.
pub async fn eligibility(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<EligibilityView>> {
    let feature = state.feature(&name).await?;
    let (id, _) = decision_input(&bytes, false)?;
    let repo = repository(&state, &feature, &id);
    let policy = &state.inner.policy;
    let decision = policy.is_eligible(&feature.manager.snapshot(), &repo);
    feature.counters.eligibility(&decision);
    Ok(Json(EligibilityView::new(&decision, policy.policy_version())))
}

/// `POST /v1/features/{feature}/route` `{repository_id, job}`.
pub async fn route(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawBody(bytes): RawBody,
) -> ApiResult<Json<RouteView>> {
    let feature = state.feature(&name).await?;
    let (id, job) = decision_input(&bytes, true)?;
    let repo = repository(&state, &feature, &id);
    let policy = &state.inner.policy;
    let decision = policy.route(&feature.manager.snapshot(), &repo, &job);
    feature.counters.route(&decision);
    Ok(Json(RouteView::new(&decision, policy.policy_version())))
}

/// `POST /v1/features/{feature}/route/batch` `{requests: [{repository_id, job}]}`.
pub async fn route_batch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    input::JsonObject(body): input::JsonObject,
) -> ApiResult<Json<BatchView>> {
    let feature = state.feature(&name).await?;
    input::only(&body, "", &["requests"])?;
    let items = input::list(&body, "requests", state.inner.options.max_batch)?;
    let mut requests: Vec<(Repository, Job)> = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let (obj, prefix) = input::item(v, "requests", i)?;
        input::only(obj, &prefix, &["repository_id", "job"])?;
        let id = input::repository_uuid(obj, &prefix)?;
        let job = input::job(obj, &prefix)?;
        requests.push((repository(&state, &feature, &id), job));
    }
    let policy = &state.inner.policy;
    let decisions = policy.route_batch(&feature.manager.snapshot(), &requests);
    let version = policy.policy_version();
    let decisions = decisions
        .iter()
        .map(|d| {
            feature.counters.route(d);
            RouteView::new(d, version.clone())
        })
        .collect();
    Ok(Json(BatchView { decisions }))
}
