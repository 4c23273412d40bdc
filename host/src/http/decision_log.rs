//! The decision log over HTTP: its settings per feature (`PUT /v1/features/{f}/decision-log`,
//! an audited configuration change) and reading it (`GET /v1/decisions`, `GET
//! /v1/decisions/{id}`), newest first with cursor pagination.

use super::error::{ApiError, ApiResult};
use super::requests::Body;
use super::{AppState, FeaturePath, Writer};
use crate::input::values::Reason;
use crate::service::operations::{Operation, OperationOutcome};
use crate::service::ServiceError;
use crate::store::{DecisionFilter, DecisionRecord};
use axum::extract::{Path, RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most decisions one request returns.
pub const DECISIONS_MAX: u32 = 1000;

/// Decisions one request returns by default.
pub const DECISIONS_DEFAULT: u32 = 100;

/// `{sample_rate?, mask_repository_id?, reason?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionLogBody {
    /// The share of decisions logged, 0 to 1.
    #[serde(default)]
    pub sample_rate: Option<f64>,
    /// Whether repository ids are masked (a keyed hash under `ROLLOUT_DECISION_LOG_KEY`).
    #[serde(default)]
    pub mask_repository_id: Option<bool>,
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
}

/// `PUT /v1/features/{feature}/decision-log` `{sample_rate?, mask_repository_id?, reason?}`.
pub async fn settings(
    writer: Writer,
    State(state): State<AppState>,
    FeaturePath(name): FeaturePath,
    Body(body): Body<DecisionLogBody>,
) -> ApiResult<Json<OperationOutcome>> {
    let operation =
        Operation::SetDecisionLog { sample_rate: body.sample_rate, mask_repository_id: body.mask_repository_id };
    Ok(Json(state.service().apply(&name, operation, body.reason, &writer.actor).await?))
}

/// The parameters of `GET /v1/decisions`, parsed; a 400 names any unknown parameter or bad
/// value.
pub fn parse_query(raw: Option<&str>) -> ApiResult<DecisionFilter> {
    let mut filter = DecisionFilter { limit: DECISIONS_DEFAULT, ..DecisionFilter::default() };
    let bad = |field: &str, value: &str, allowed: &str| {
        ApiError::invalid(field, format!("`{}` is not allowed: expected {allowed}", crate::input::clip(value)))
    };
    let time = |field: &str, value: &str| -> ApiResult<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(value)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| bad(field, value, "an RFC 3339 time such as 2026-12-03T14:02:00Z"))
    };
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        let value = value.as_str();
        let text = |field: &str| -> ApiResult<Option<String>> {
            if value.is_empty() || value.len() > 200 {
                return Err(bad(field, value, "a non-empty value of at most 200 bytes"));
            }
            Ok(Some(value.to_owned()))
        };
        match key {
            "feature" => filter.feature = text("feature")?,
            "repository_id" => filter.repository_id = text("repository_id")?,
            "rule" => filter.rule = text("rule")?,
            "since" => filter.since = Some(time("since", value)?),
            "until" => filter.until = Some(time("until", value)?),
            "cursor" => {
                filter.before = Some(
                    Uuid::parse_str(value).map_err(|_| bad("cursor", value, "the next_cursor of a previous page"))?,
                )
            }
            "limit" => {
                filter.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=DECISIONS_MAX).contains(n))
                    .ok_or_else(|| bad("limit", value, &format!("an integer from 1 to {DECISIONS_MAX}")))?
            }
            other => {
                return Err(ApiError::invalid(
                    other.to_owned(),
                    format!(
                        "unknown query parameter `{}`: allowed are feature, repository_id, since, until, rule, limit, \
                         cursor",
                        crate::input::clip(other)
                    ),
                ))
            }
        }
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if until <= since {
            return Err(ApiError::invalid("until", "`until` must be after `since`"));
        }
    }
    Ok(filter)
}

/// `%XX` and `+` decoded (a query value such as `2026-12-03T14:02:00%2B01:00`).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A page of decisions.
#[derive(Debug, Serialize)]
pub struct DecisionPage {
    /// The decisions, newest first.
    pub decisions: Vec<DecisionRecord>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<Uuid>,
}

/// `GET /v1/decisions?feature=&repository_id=&since=&until=&rule=&limit=&cursor=`.
pub async fn list(State(state): State<AppState>, RawQuery(query): RawQuery) -> ApiResult<Json<DecisionPage>> {
    let filter = parse_query(query.as_deref())?;
    let service = state.service();
    service.db().require()?;
    let decisions = service.store().decisions(&filter).await.map_err(ServiceError::Store)?;
    let next_cursor =
        if decisions.len() as u64 == u64::from(filter.limit) { decisions.last().map(|d| d.id) } else { None };
    Ok(Json(DecisionPage { decisions, next_cursor }))
}

/// `GET /v1/decisions/{id}`.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<DecisionRecord>> {
    let id = Uuid::parse_str(id.trim()).map_err(|_| {
        ApiError::invalid("id", format!("`{}` is not a decision id: expected a UUID", crate::input::clip(&id)))
    })?;
    let service = state.service();
    service.db().require()?;
    match service.store().decision(id).await.map_err(ServiceError::Store)? {
        Some(record) => Ok(Json(record)),
        None => Err(ServiceError::NotFound {
            field: "id".into(),
            message: format!(
                "decision {id} is not in the log: it was not sampled (see the feature's decision-log sample rate), was \
                 dropped, or is past retention"
            ),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_parameters_name_themselves() {
        let f = parse_query(Some(
            "feature=f&repository_id=r&rule=whitelisted&since=2026-12-03T14%3A02%3A00%2B01%3A00&limit=5&cursor=0190d5f0-0000-7000-8000-000000000001",
        ))
        .expect("parses");
        assert_eq!(f.feature.as_deref(), Some("f"));
        assert_eq!(f.rule.as_deref(), Some("whitelisted"));
        assert_eq!(f.since.map(|t| t.to_rfc3339()), Some("2026-12-03T13:02:00+00:00".to_owned()));
        assert_eq!(f.limit, 5);
        assert!(f.before.is_some());
        assert_eq!(parse_query(None).map(|f| f.limit).ok(), Some(DECISIONS_DEFAULT));
        for (q, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("since=yesterday", "since"),
            ("until=2026-13-01T00:00:00Z", "until"),
            ("cursor=12", "cursor"),
            ("feature=", "feature"),
            ("colour=red", "colour"),
            ("since=2026-12-03T00:00:00Z&until=2026-12-02T00:00:00Z", "until"),
        ] {
            let e = parse_query(Some(q)).expect_err(q);
            assert_eq!(e.field(), Some(field), "{q}");
        }
    }
}
