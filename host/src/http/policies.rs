//! Policy versions: upload, list, activate, revert.
//!
//! The database is the source of truth across instances: an activation is validated by this
//! process's runtime, recorded (`policy_versions.active` and a `policy_activated` history row
//! in one transaction, which notifies every instance), and then served here; the other
//! instances load it when notified ([`super::background`]).

use super::error::{ApiError, ApiResult};
use super::input::{self, MaybeJsonObject};
use super::{AppState, Writer};
use crate::engine::PolicyVersion;
use crate::runtime::{sha256_hex, SwapError, SwapReport};
use crate::store::{NewPolicyVersion, PolicyVersionRow};
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

fn swap_error(e: SwapError) -> ApiError {
    match e {
        SwapError::TooLarge { limit, .. } => ApiError::TooLarge { limit },
        other => ApiError::PolicyRejected(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(format!("the policy task failed: {e}")))
}

/// Check `bytes` with the runtime without activating them.
pub(crate) async fn validate(
    state: &AppState,
    bytes: std::sync::Arc<Vec<u8>>,
    source: String,
) -> ApiResult<PolicyVersion> {
    let runtime = state.inner.runtime.clone();
    blocking(move || runtime.validate_bytes(&bytes, &source)).await?.map_err(swap_error)
}

/// Make `bytes` serve in this process.
pub(crate) async fn load(
    state: &AppState,
    bytes: std::sync::Arc<Vec<u8>>,
    source: String,
) -> Result<SwapReport, SwapError> {
    let runtime = state.inner.runtime.clone();
    match tokio::task::spawn_blocking(move || runtime.load_bytes(&bytes, &source)).await {
        Ok(r) => r,
        Err(e) => Err(SwapError::Read { path: "policy task".into(), message: e.to_string() }),
    }
}

fn cell(state: &AppState, sha256: &str) -> std::sync::Arc<tokio::sync::OnceCell<bool>> {
    match state.inner.prepared.lock() {
        Ok(mut map) => map.entry(sha256.to_owned()).or_default().clone(),
        Err(_) => std::sync::Arc::default(),
    }
}

/// Whether this process has compiled and validated the stored version `sha256` (`None`:
/// not tried yet).
pub(crate) fn prepared(state: &AppState, sha256: &str) -> Option<bool> {
    state.inner.prepared.lock().ok().and_then(|m| m.get(sha256).and_then(|c| c.get().copied()))
}

/// Compile and validate the stored version `sha256` once in this process (concurrent callers
/// wait for the same work), so activating it later is a quick swap. `Ok(false)`: refused.
pub(crate) async fn prepare(state: &AppState, sha256: &str) -> Result<bool, crate::store::StoreError> {
    let cell = cell(state, sha256);
    let result = cell
        .get_or_try_init(|| async {
            let bytes = state.inner.store.policy_bytes(sha256).await?;
            let Some(bytes) = bytes else { return Ok(false) };
            match validate(state, std::sync::Arc::new(bytes), format!("database {sha256}")).await {
                Ok(_) => Ok(true),
                Err(e) => {
                    tracing::error!("stored policy `{sha256}` is refused here: {e}");
                    Ok(false)
                }
            }
        })
        .await;
    result.copied()
}

/// `GET /v1/policies`: the stored versions (newest first, each with whether this process has
/// it compiled and validated) and the one serving here.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    state.require_db()?;
    let result = state.inner.store.list_policy_versions().await.map_err(crate::manager::ManagerError::from);
    state.inner.db.observe(&result);
    let versions: Vec<PolicyVersionRow> = result?;
    let versions: Vec<serde_json::Value> = versions
        .iter()
        .map(|v| {
            let mut j = serde_json::to_value(v).unwrap_or_default();
            if let Some(o) = j.as_object_mut() {
                o.insert("prepared_here".into(), json!(prepared(&state, &v.sha256)));
            }
            j
        })
        .collect();
    Ok(Json(json!({ "serving": state.inner.runtime.policy_version(), "versions": versions })))
}

/// The notification payload announcing an upload.
pub(crate) const UPLOADED_PREFIX: &str = "policy_uploaded:";

/// Tell the other instances (Postgres) that `sha256` was uploaded, so they prepare it.
async fn announce_upload(state: &AppState, sha256: &str) {
    if let crate::store::Store::Postgres(pool) = &state.inner.store {
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::store::CHANGE_CHANNEL)
            .bind(format!("{UPLOADED_PREFIX}{sha256}"))
            .execute(pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!("cannot announce the upload of `{sha256}`: {e}");
        }
    }
}

/// `POST /v1/policies` with an `application/wasm` body: validated by the runtime, then stored
/// (not activated). Optional `X-Policy-Notes` header.
pub async fn upload(writer: Writer, State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.trim().starts_with("application/wasm") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a policy upload needs `Content-Type: application/wasm` (got `{}`)",
            input::clip(content_type)
        )));
    }
    let notes = match request.headers().get("x-policy-notes") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::invalid("x-policy-notes", "the header must be text"))?
                .chars()
                .take(1000)
                .collect::<String>(),
        ),
    };
    let limit = state.inner.options.policy_body_limit;
    let bytes = Bytes::from_request(request, &state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            ApiError::Malformed(format!("cannot read the policy: {}", r.body_text()))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::invalid("body", "the policy is empty: send the component's bytes"));
    }
    state.require_db()?;
    let bytes = std::sync::Arc::new(bytes.to_vec());
    let sha256 = sha256_hex(&bytes);
    let version = validate(&state, bytes.clone(), format!("upload {sha256}")).await?;
    let new = NewPolicyVersion {
        bytes: bytes.to_vec(),
        sha256,
        name: Some(version.name.clone()),
        semver: version.version.clone(),
        notes,
        uploaded_by: Some(writer.actor),
    };
    let result = state.inner.store.put_policy_version(&new).await.map_err(crate::manager::ManagerError::from);
    state.inner.db.observe(&result);
    let row = result?;
    let _ = cell(&state, &row.sha256).set(true);
    announce_upload(&state, &row.sha256).await;
    Ok((StatusCode::CREATED, Json(json!({ "policy": row, "validated": true }))).into_response())
}

fn check_sha(sha: &str) -> ApiResult<String> {
    let s = sha.trim().to_ascii_lowercase();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(ApiError::invalid(
            "sha256",
            format!("`{}` is not a sha256: expected 64 hexadecimal digits", input::clip(sha)),
        ))
    }
}

fn reason_of(body: &Option<serde_json::Map<String, serde_json::Value>>) -> ApiResult<Option<String>> {
    match body {
        None => Ok(None),
        Some(b) => {
            input::only(b, "", &["reason"])?;
            input::reason(b, false)
        }
    }
}

async fn activate_stored(
    state: &AppState,
    sha256: &str,
    revert: bool,
    reason: Option<String>,
    actor: &str,
) -> ApiResult<Json<serde_json::Value>> {
    let store = &state.inner.store;
    let bytes = store.policy_bytes(sha256).await.map_err(crate::manager::ManagerError::from);
    state.inner.db.observe(&bytes);
    let bytes = bytes?.ok_or_else(|| ApiError::NotFound {
        field: Some("sha256".into()),
        message: format!("unknown policy `{sha256}`: no stored policy version has this sha256"),
    })?;
    let bytes = std::sync::Arc::new(bytes);
    let source = format!("database {sha256}");
    // validate first: a refusal leaves both the database and the serving version unchanged
    validate(state, bytes.clone(), source.clone()).await?;
    let _ = cell(state, sha256).set(true);
    let result = store
        .activate_policy_version(sha256, revert, reason.as_deref(), actor)
        .await
        .map_err(crate::manager::ManagerError::from);
    state.inner.db.observe(&result);
    let previous = result?;
    if let Ok(mut seen) = state.inner.seen_policy.lock() {
        *seen = Some(sha256.to_owned());
    }
    let report = load(state, bytes, source).await.map_err(|e| {
        tracing::error!("policy `{sha256}` is active in the database but could not be loaded here: {e}");
        ApiError::Internal(format!("policy `{sha256}` was recorded as active but could not be loaded: {e}"))
    })?;
    Ok(Json(json!({
        "action": if revert { "policy_reverted" } else { "policy_activated" },
        "serving": report.version,
        "previous_sha256": previous,
        "elapsed_ms": report.elapsed_ms,
    })))
}

/// `POST /v1/policies/{sha256}/activate` `{reason?}`: validate, record (audited as
/// `policy_activated`), serve.
pub async fn activate(
    writer: Writer,
    State(state): State<AppState>,
    Path(sha): Path<String>,
    MaybeJsonObject(body): MaybeJsonObject,
) -> ApiResult<Json<serde_json::Value>> {
    let sha256 = check_sha(&sha)?;
    let reason = reason_of(&body)?;
    state.require_db()?;
    activate_stored(&state, &sha256, false, reason, &writer.actor).await
}

/// `POST /v1/policies/revert` `{reason?}`: make the previously active version serve again
/// (audited as `policy_reverted`). The previous version is the most recently activated one
/// that is not active; when none was ever activated, the policy this process started with.
pub async fn revert(
    writer: Writer,
    State(state): State<AppState>,
    MaybeJsonObject(body): MaybeJsonObject,
) -> ApiResult<Json<serde_json::Value>> {
    let reason = reason_of(&body)?;
    state.require_db()?;
    let store = &state.inner.store;
    let rows = store.list_policy_versions().await.map_err(crate::manager::ManagerError::from);
    state.inner.db.observe(&rows);
    let rows = rows?;
    let (active, target) = crate::store::revert_target(&rows);
    let (active, mut target) = (active.map(str::to_owned), target.map(str::to_owned));
    if target.is_none() {
        if let Some(startup) = &state.inner.options.startup_policy {
            let sha = sha256_hex(&startup.bytes);
            if active.as_deref().is_some_and(|a| a != sha) {
                let version = validate(&state, startup.bytes.clone(), startup.source.clone()).await?;
                let new = NewPolicyVersion {
                    bytes: startup.bytes.to_vec(),
                    sha256: sha.clone(),
                    name: Some(version.name),
                    semver: version.version,
                    notes: Some(format!("the policy `rollout serve` started with ({})", startup.source)),
                    uploaded_by: Some(writer.actor.clone()),
                };
                store.put_policy_version(&new).await.map_err(crate::manager::ManagerError::from)?;
                target = Some(sha);
            }
        }
    }
    let Some(target) = target else {
        return Err(ApiError::Conflict("no previous policy version to revert to".into()));
    };
    activate_stored(&state, &target, true, reason, &writer.actor).await
}
