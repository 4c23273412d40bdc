//! Public reads: liveness, readiness, metrics, status, stats, history.

use super::error::{ApiError, ApiResult};
use super::{AppState, FeaturePath};
use crate::engine::PolicyVersion;
use crate::manager::{EffectiveConfig, HealthReport, RolloutStats};
use crate::runtime::RuntimeStatus;
use crate::service::metrics::{FeatureHealth, RenderInputs, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::service::DbStatus;
use crate::store::HistoryEntry;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;

/// Default and largest `limit` of the history.
pub const HISTORY_DEFAULT: u32 = 50;
/// Largest `limit` of the history.
pub const HISTORY_MAX: u32 = 1000;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once a policy and the configuration are loaded, 503 before (and while
/// shutting down).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let service = state.service();
    let policy = service.runtime().policy_version();
    let ready = service.is_ready();
    let body = json!({
        "ready": ready,
        "policy_loaded": policy.is_some(),
        "config_loaded": service.default_feature_loaded(),
        "shutting_down": service.is_shutting_down(),
        "database_reachable": !service.db().is_down(),
        "policy_version": policy,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the OpenMetrics text format (`prometheus-client`), with the health level
/// and processing-time gauges of each feature's last health check.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let service = state.service();
    let runtime = service.runtime().status();
    let features = service.features();
    let age = features.iter().map(|f| f.config_age_seconds()).fold(0.0, f64::max);
    let health = features
        .iter()
        .map(|f| (f.name().to_owned(), f.last_health().as_ref().map(FeatureHealth::from).unwrap_or_default()))
        .collect();
    let inputs = RenderInputs {
        policy: service.runtime().policy_version(),
        swaps: runtime.swaps,
        auto_reverts: runtime.auto_reverts,
        fallbacks_without_policy: runtime.fallbacks_without_policy,
        database_up: !service.db().is_down(),
        config_age_seconds: age,
        ready: service.is_ready(),
        health,
        decision_log: service.decision_log().figures(),
        candidate: Some(service.candidate_status()),
    };
    let text = service.metrics().render(&inputs);
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// `GET /v1/features`: the features this process serves.
pub async fn list_features(State(state): State<AppState>) -> Json<serde_json::Value> {
    let features: Vec<serde_json::Value> = state
        .service()
        .features()
        .iter()
        .map(|f| {
            let c = f.manager.snapshot();
            json!({
                "feature_name": f.name(),
                "rollout_percentage": c.config().rollout_percentage,
                "emergency_stop": c.config().emergency_stop,
                "rollout_strategy": c.config().rollout_strategy.as_str(),
            })
        })
        .collect();
    Json(json!({ "features": features }))
}

/// The policy part of the status.
#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    /// The version serving decisions now.
    pub serving: Option<PolicyVersion>,
    /// The runtime's status: versions, counts, last error, probation.
    pub runtime: RuntimeStatus,
}

/// The configuration's freshness.
#[derive(Debug, Serialize)]
pub struct Freshness {
    /// When the configuration was last read from the database.
    pub loaded_at: Option<DateTime<Utc>>,
    /// Seconds since then (how stale the cached configuration may be).
    pub age_seconds: f64,
    /// Whether decisions are being served from a cache the database cannot refresh.
    pub stale: bool,
}

/// `GET /v1/features/{feature}`.
#[derive(Debug, Serialize)]
pub struct FeatureStatus {
    /// The feature.
    pub feature_name: String,
    /// The configuration in force, environment overrides marked.
    pub config: EffectiveConfig,
    /// The policy.
    pub policy: PolicyStatus,
    /// The last health check of this process (`null` before the first).
    pub health: Option<HealthReport>,
    /// Whether the service is ready.
    pub ready: bool,
    /// The database.
    pub database: DbStatus,
    /// How fresh the cached configuration is.
    pub config_freshness: Freshness,
    /// Outcomes waiting for the database.
    pub outcomes_buffered: usize,
    /// Buffered outcomes the database refused for their content and that were set aside
    /// (the most recent; `rollout_outcomes_dead_lettered_total` counts them all).
    pub dead_letters: Vec<crate::service::outcomes::DeadLetter>,
    /// When this process started.
    pub started_at: DateTime<Utc>,
}

/// `GET /v1/features/{feature}`: effective config (overrides marked), policy version, health,
/// readiness, database reachability and staleness.
pub async fn feature_status(
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
) -> ApiResult<Json<FeatureStatus>> {
    let service = state.service();
    let feature = service.feature(&name).await?;
    let database = service.db().status();
    Ok(Json(FeatureStatus {
        feature_name: feature.name().to_owned(),
        config: feature.manager.effective_config(),
        policy: PolicyStatus { serving: service.runtime().policy_version(), runtime: service.runtime().status() },
        health: feature.last_health(),
        ready: service.is_ready(),
        config_freshness: Freshness {
            loaded_at: feature.loaded_at(),
            age_seconds: feature.config_age_seconds(),
            stale: !database.reachable,
        },
        database,
        outcomes_buffered: feature.buffered(),
        dead_letters: feature.dead_letters(),
        started_at: service.started_at(),
    }))
}

/// `GET /v1/features/{feature}/stats`.
pub async fn stats(State(state): State<AppState>, FeaturePath(name): FeaturePath) -> ApiResult<Json<RolloutStats>> {
    Ok(Json(state.service().stats(&name).await?))
}

/// The `limit` query parameter: 1..=[`HISTORY_MAX`], default [`HISTORY_DEFAULT`].
pub fn parse_limit(raw: Option<&str>) -> ApiResult<u32> {
    let query: HashMap<String, String> = raw
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    for key in query.keys() {
        if key != "limit" {
            return Err(ApiError::invalid(key.clone(), format!("unknown query parameter `{key}`: allowed is limit")));
        }
    }
    match query.get("limit") {
        None => Ok(HISTORY_DEFAULT),
        Some(v) => v.trim().parse::<u32>().ok().filter(|n| (1..=HISTORY_MAX).contains(n)).ok_or_else(|| {
            ApiError::invalid(
                "limit",
                format!("`{}` is not allowed: expected an integer from 1 to {HISTORY_MAX}", crate::input::clip(v)),
            )
        }),
    }
}

/// `GET /v1/features/{feature}/history?limit=N`: newest first.
pub async fn history(
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = parse_limit(query.as_deref())?;
    let entries: Vec<HistoryEntry> = state.service().history(&name, limit).await?;
    Ok(Json(json!({ "feature_name": name, "limit": limit, "entries": entries })))
}
