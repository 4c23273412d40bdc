//! Policy versions: upload, list, activate, revert — the service's policy lifecycle
//! ([`crate::service::policies`]) over HTTP.

use super::error::{ApiError, ApiResult};
use super::requests::{OptionalBody, OptionalReasonBody};
use super::{AppState, ShaPath, Writer};
use crate::input::clip;
use crate::input::values::Sha256;
use crate::service::policies::{Activated, PolicyListing};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// `GET /v1/policies`: the stored versions (newest first, each with whether this process has
/// it compiled and validated) and the one serving here.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<PolicyListing>> {
    Ok(Json(state.service().list_policies().await?))
}

/// `POST /v1/policies` with an `application/wasm` body: validated by the runtime, then stored
/// (not activated). Optional `X-Policy-Notes` header.
pub async fn upload(writer: Writer, State(state): State<AppState>, request: Request) -> ApiResult<Response> {
    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.trim().starts_with("application/wasm") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a policy upload needs `Content-Type: application/wasm` (got `{}`)",
            clip(content_type)
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
    let limit = state.options().policy_body_limit;
    let bytes = Bytes::from_request(request, &state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            ApiError::Malformed(format!("cannot read the policy: {}", r.body_text()))
        }
    })?;
    let uploaded = state.service().upload_policy(bytes.to_vec(), "upload", notes, &writer.actor).await?;
    Ok((StatusCode::CREATED, Json(uploaded)).into_response())
}

/// `POST /v1/policies/{sha256}/activate` `{reason?}`: validate, record (audited as
/// `policy_activated`), serve.
pub async fn activate(
    writer: Writer,
    State(state): State<AppState>,
    ShaPath(sha): ShaPath,
    OptionalBody(body): OptionalBody<OptionalReasonBody>,
) -> ApiResult<Json<Activated>> {
    let sha256 = Sha256::new(&sha).map_err(|m| ApiError::invalid("sha256", m))?;
    Ok(Json(state.service().activate_policy(&sha256, body.reason, &writer.actor).await?))
}

/// `POST /v1/policies/revert` `{reason?}`: make the previously active version serve again
/// (audited as `policy_reverted`; the rule is [`crate::service::Service::revert_policy`]'s).
pub async fn revert(
    writer: Writer,
    State(state): State<AppState>,
    OptionalBody(body): OptionalBody<OptionalReasonBody>,
) -> ApiResult<Json<Activated>> {
    Ok(Json(state.service().revert_policy(body.reason, &writer.actor).await?))
}
