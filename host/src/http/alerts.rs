//! `GET /v1/alerts?state=&limit=`: the alert outbox ([`crate::store::outbox`]), newest first,
//! with the counts per delivery state.

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::service::ServiceError;
use crate::store::AlertState;
use axum::extract::{RawQuery, State};
use axum::Json;
use serde_json::json;

/// Most events one request returns.
pub const ALERTS_MAX: u32 = 1000;

/// `state` (pending, delivered, dead) and `limit` (1 to [`ALERTS_MAX`], default 50) from a
/// query string; a 400 naming any other parameter or a bad value.
fn parse(raw: Option<&str>) -> ApiResult<(Option<AlertState>, u32)> {
    let (mut state, mut limit) = (None, 50);
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "state" => {
                state = Some(AlertState::parse(value).ok_or_else(|| {
                    ApiError::invalid(
                        "state",
                        format!("`{}` is not allowed: expected pending, delivered or dead", crate::input::clip(value)),
                    )
                })?)
            }
            "limit" => {
                limit = value.parse::<u32>().ok().filter(|n| (1..=ALERTS_MAX).contains(n)).ok_or_else(|| {
                    ApiError::invalid(
                        "limit",
                        format!(
                            "`{}` is not allowed: expected an integer from 1 to {ALERTS_MAX}",
                            crate::input::clip(value)
                        ),
                    )
                })?
            }
            other => {
                return Err(ApiError::invalid(
                    other.to_owned(),
                    format!("unknown query parameter `{}`: allowed are state, limit", crate::input::clip(other)),
                ))
            }
        }
    }
    Ok((state, limit))
}

/// `GET /v1/alerts?state=&limit=`.
pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> ApiResult<Json<serde_json::Value>> {
    let (filter, limit) = parse(query.as_deref())?;
    let store = state.service().store();
    let events = store.list_alert_events(filter, limit).await.map_err(ServiceError::Store)?;
    let counts = store.alert_counts().await.map_err(ServiceError::Store)?;
    Ok(Json(json!({ "counts": counts, "events": events })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_name_themselves() {
        assert_eq!(parse(None).ok(), Some((None, 50)));
        assert_eq!(parse(Some("state=dead&limit=5")).ok(), Some((Some(AlertState::Dead), 5)));
        for (q, field) in
            [("state=lost", "state"), ("limit=0", "limit"), ("limit=1001", "limit"), ("color=red", "color")]
        {
            let e = parse(Some(q)).expect_err(q);
            assert_eq!(e.field(), Some(field), "{q}");
        }
    }
}
