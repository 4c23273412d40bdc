//! The sync endpoint for in-process clients (issue 13): what a client needs to decide
//! locally with the same component — the configuration its decisions use (database values
//! with this server's environment overrides applied, with its stored version) and the serving
//! policy (sha256, name, version, contract; the bytes on request) — as a snapshot with an
//! `ETag`, and a server-sent-event stream that pushes the next snapshot when either changes.
//!
//! - `GET /v1/sync/{feature}`: the snapshot; `If-None-Match` with its ETag answers 304. Its
//!   `config` is the whole row as the configuration versions keep it
//!   ([`crate::store::config_versions::snapshot_json`], read back by
//!   [`crate::store::StoredConfig::from_json`]) with the overrides already applied.
//! - `GET /v1/sync/{feature}/events`: `text/event-stream`; a `snapshot` event at once, then
//!   one after every change of the configuration (made here, or read from the database after
//!   another instance made it: NOTIFY on Postgres, the reload interval otherwise) or of the
//!   serving policy; an idle stream costs one task and two watch receivers, with a comment
//!   every 15 s to keep proxies from closing it. Each event's `id` is the snapshot's ETag.
//! - `GET /v1/policies/{sha256}/component`: the component's bytes (`application/wasm`).

use super::error::{ApiError, ApiResult};
use super::{AppState, FeaturePath};
use crate::service::{Feature, Service, ServiceError};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// The snapshot of `feature` now, and its ETag.
pub fn snapshot(service: &Service, feature: &Feature) -> (Value, String) {
    let state = feature.manager.state();
    let mut effective = state.stored.clone();
    effective.config = state.snapshot.config().clone();
    let version = state.stored.version;
    drop(state);
    let policy = service.runtime().policy_version();
    let sha = policy.as_ref().map_or("none", |p| p.sha256.as_str()).to_owned();
    let etag = format!("\"{version}-{}\"", sha.get(..16).unwrap_or(&sha));
    let body = json!({
        "feature": feature.name(),
        "config_version": version,
        "config": crate::store::config_versions::snapshot_json(&effective),
        "policy": policy.map(|p| json!({
            "sha256": p.sha256,
            "name": p.name,
            "version": p.version,
            "contract": service.runtime().serving_contract(),
            "component": format!("/v1/policies/{}/component", p.sha256),
        })),
        "etag": etag,
    });
    (body, etag)
}

/// `GET /v1/sync/{feature}`.
pub async fn get(
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let service = state.service();
    let feature = service.feature(&name).await?;
    let (body, etag) = snapshot(service, &feature);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], axum::Json(body)).into_response())
}

fn event(service: &Service, feature: &Feature) -> Event {
    let (body, etag) = snapshot(service, feature);
    Event::default().event("snapshot").id(etag).data(body.to_string())
}

/// `GET /v1/sync/{feature}/events`.
pub async fn events(State(state): State<AppState>, FeaturePath(name): FeaturePath) -> ApiResult<Response> {
    let service = state.service().clone();
    let feature: Arc<Feature> = service.feature(&name).await?;
    service.note_policy();
    let mut config = feature.manager.watch_config();
    let mut policy = service.watch_policy();
    config.mark_unchanged();
    policy.mark_unchanged();
    let first = event(&service, &feature);
    let stream = futures_util::stream::unfold(
        (Some(first), service, feature, config, policy),
        |(pending, service, feature, mut config, mut policy)| async move {
            if let Some(e) = pending {
                return Some((Ok::<Event, Infallible>(e), (None, service, feature, config, policy)));
            }
            tokio::select! {
                r = config.changed() => r.ok()?,
                r = policy.changed() => r.ok()?,
            }
            config.mark_unchanged();
            policy.mark_unchanged();
            let e = event(&service, &feature);
            Some((Ok(e), (None, service, feature, config, policy)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// `GET /v1/policies/{sha256}/component`.
pub async fn component(State(state): State<AppState>, Path(sha): Path<String>) -> ApiResult<Response> {
    let sha = sha.trim().to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid("sha256", "expected the 64 hex digits of a policy's sha256"));
    }
    let service = state.service();
    let bytes = if crate::runtime::sha256_hex(crate::runtime::BUNDLED_POLICY) == sha {
        Some(crate::runtime::BUNDLED_POLICY.to_vec())
    } else {
        service.store().policy_bytes(&sha).await.map_err(ServiceError::Store)?
    };
    match bytes {
        Some(b) => Ok(([(header::CONTENT_TYPE, "application/wasm")], b).into_response()),
        None => Err(ServiceError::NotFound {
            field: "sha256".into(),
            message: format!("no policy with sha256 {sha} was uploaded (rollout policy list shows them)"),
        }
        .into()),
    }
}
