//! OpenFeature Remote Evaluation Protocol (OFREP, <https://github.com/open-feature/protocol>,
//! `service/openapi.yaml`): `rollout serve` as an OpenFeature backend for any OFREP provider.
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}` `{"context": {...}}` evaluates one flag;
//!   `POST /ofrep/v1/evaluate/flags` evaluates every flag for one context, with an `ETag`
//!   (`If-None-Match` answers 304 when nothing changed for that context).
//! - **Flags.** Each feature `F` is two flags: `F` (boolean: the repository is eligible) and
//!   `F/processor` (string: where the job runs, `inngest` or `github_actions`).
//! - **Context.** `targetingKey` is the repository id (a UUID); `category` (`small`,
//!   `medium`, `large`) is used instead of the cached category when given; the job's fields
//!   (`job_type`, `time_range_days`, `pr_numbers`, `trigger_source`, `max_items`) are read
//!   from the context as `/route` reads `job`. Other attributes are ignored (OpenFeature
//!   contexts carry many).
//! - **Reasons.** emergency stop, inactive → `DISABLED`; in/outside the percentage →
//!   `SPLIT`; targeted, excluded, not targeted and the size strategy's category rules →
//!   `TARGETING_MATCH`; an eligible job placed by a routing rule → `TARGETING_MATCH`, by no
//!   rule → `DEFAULT`. `flagMetadata` (`metadata`) carries our reason code, rule, bucket,
//!   policy sha256, configuration version and, for single evaluations, the decision id.
//! - **The fallback** (the policy gave no answer) is an evaluation failure with
//!   `errorCode: GENERAL`: the client's code default is used, which should be `false` and
//!   `"inngest"` — the fallback SPEC §2.3 itself gives.
//! - **Errors** have OFREP's shapes: 404 `FLAG_NOT_FOUND`; 400 `PARSE_ERROR` (not JSON),
//!   `TARGETING_KEY_MISSING`, `INVALID_CONTEXT` (a context value outside what is allowed,
//!   named in `errorDetails`).
//!
//! Single evaluations are decisions like `/route`: counted, with a decision id, logged when
//! sampled. Bulk evaluations are counted but carry no decision id (their ETag must depend only
//! on the answers).

use super::AppState;
use crate::input::values::RepositoryUuid;
use crate::input::JobInput;
use crate::service::{Feature, Service};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rollout_policy::{Category, EligibilityReason, Job, RouteRule};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The suffix of a feature's routing flag.
pub const PROCESSOR_SUFFIX: &str = "/processor";

/// The job's fields in a context.
pub const JOB_FIELDS: [&str; 5] = ["job_type", "time_range_days", "pr_numbers", "trigger_source", "max_items"];

/// The category and the job an evaluation context's attributes ask about (`category`; the
/// job's fields as `/route` reads `job`; other attributes ignored) — the one reading of a
/// context, shared by the OFREP endpoint and the in-process provider. The error names the
/// attribute and what is allowed.
pub fn context_inputs(attributes: &Map<String, Value>) -> Result<(Option<Category>, Job), String> {
    let category = match attributes.get("category") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(Category::parse(c).map_err(|_| {
            format!("category: `{}` is not a category: allowed values are small, medium, large", crate::input::clip(c))
        })?),
        Some(_) => return Err("category: must be a string (small, medium, large)".into()),
    };
    let job: Map<String, Value> = attributes
        .iter()
        .filter(|(k, _)| JOB_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let job: JobInput = serde_json::from_value(Value::Object(job)).map_err(|e| format!("job attributes: {e}"))?;
    Ok((category, job.into_job()))
}

/// An OFREP error: its status and body.
#[derive(Debug, Clone, PartialEq)]
pub struct OfrepError {
    status: StatusCode,
    code: &'static str,
    details: String,
}

impl OfrepError {
    fn new(status: StatusCode, code: &'static str, details: impl Into<String>) -> OfrepError {
        OfrepError { status, code, details: details.into() }
    }

    fn body(&self, key: Option<&str>) -> Value {
        let mut o = Map::new();
        if let Some(k) = key {
            o.insert("key".into(), k.into());
        }
        o.insert("errorCode".into(), self.code.into());
        o.insert("errorDetails".into(), self.details.clone().into());
        Value::Object(o)
    }
}

/// What a context asks: the repository as the policy sees it and the job.
struct Asked {
    id: RepositoryUuid,
    category: Option<Category>,
    job: Job,
}

/// Read the body `{"context": {...}}`.
fn read_context(bytes: &[u8]) -> Result<Asked, OfrepError> {
    let bad = |code, details: String| OfrepError::new(StatusCode::BAD_REQUEST, code, details);
    let body: Value =
        serde_json::from_slice(bytes).map_err(|e| bad("PARSE_ERROR", format!("the request body is not JSON: {e}")))?;
    let context = match body.get("context") {
        Some(Value::Object(c)) => c,
        Some(_) => return Err(bad("INVALID_CONTEXT", "`context` must be an object".into())),
        None => {
            return Err(bad("TARGETING_KEY_MISSING", "`context.targetingKey` is required: the repository id".into()))
        }
    };
    let key = match context.get("targetingKey") {
        Some(Value::String(k)) => k,
        Some(_) => return Err(bad("INVALID_CONTEXT", "`targetingKey` must be a string: the repository id".into())),
        None => return Err(bad("TARGETING_KEY_MISSING", "`targetingKey` is required: the repository id".into())),
    };
    let id = RepositoryUuid::new(key).map_err(|m| bad("INVALID_CONTEXT", format!("targetingKey: {m}")))?;
    let (category, job) = context_inputs(context).map_err(|m| bad("INVALID_CONTEXT", m))?;
    Ok(Asked { id, category, job })
}

/// The OpenFeature reason of an eligibility reason.
pub fn openfeature_reason(reason: EligibilityReason) -> &'static str {
    match reason {
        EligibilityReason::EmergencyStop | EligibilityReason::Inactive => "DISABLED",
        EligibilityReason::InPercentage | EligibilityReason::OutsidePercentage => "SPLIT",
        EligibilityReason::PolicyError => "ERROR",
        _ => "TARGETING_MATCH",
    }
}

/// The OpenFeature reason of a routing rule (an eligible repository).
pub fn openfeature_rule_reason(rule: RouteRule) -> &'static str {
    match rule {
        RouteRule::Default => "DEFAULT",
        RouteRule::PolicyError => "ERROR",
        _ => "TARGETING_MATCH",
    }
}

/// Which flag a key names.
enum Flag {
    Eligible(Arc<Feature>),
    Processor(Arc<Feature>),
}

async fn flag(service: &Service, key: &str) -> Result<Flag, OfrepError> {
    let not_found = || {
        OfrepError::new(
            StatusCode::NOT_FOUND,
            "FLAG_NOT_FOUND",
            format!(
                "flag `{}` was not found: flags are a feature's name (boolean) and `<feature>{PROCESSOR_SUFFIX}` (string)",
                crate::input::clip(key)
            ),
        )
    };
    let (name, processor) = match key.strip_suffix(PROCESSOR_SUFFIX) {
        Some(name) => (name, true),
        None => (key, false),
    };
    if crate::input::values::FeatureName::new(name).is_err() {
        return Err(not_found());
    }
    let feature = service.feature(name).await.map_err(|_| not_found())?;
    Ok(if processor { Flag::Processor(feature) } else { Flag::Eligible(feature) })
}

/// The common metadata of an evaluation.
fn metadata(
    service: &Service,
    feature: &Feature,
    reason: EligibilityReason,
    rule: Option<RouteRule>,
    bucket: u8,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("reason_code".into(), reason.as_str().into());
    if let Some(r) = rule {
        m.insert("rule".into(), r.as_str().into());
    }
    m.insert("bucket".into(), bucket.into());
    if let Some(v) = service.runtime().policy_version() {
        m.insert("policy_sha256".into(), v.sha256.into());
    }
    m.insert("config_version".into(), feature.manager.state().stored.version.into());
    m
}

/// One evaluation as OFREP's success or failure object; `decision_id` for single
/// evaluations.
fn evaluate(service: &Service, flag: &Flag, key: &str, asked: &Asked, with_id: bool) -> Value {
    let (value, variant, reason, mut meta, fallback, id) = match flag {
        Flag::Eligible(feature) => {
            let repo = service.repository_for(feature, asked.id, asked.category);
            let d = service.is_eligible_logged(feature, &repo);
            let e = d.decision;
            let meta = metadata(service, feature, e.reason, None, e.bucket);
            let variant = if e.eligible { "eligible" } else { "not_eligible" };
            let fallback = e.reason == EligibilityReason::PolicyError;
            (Value::Bool(e.eligible), variant, openfeature_reason(e.reason), meta, fallback, d.id)
        }
        Flag::Processor(feature) => {
            let repo = service.repository_for(feature, asked.id, asked.category);
            let d = service.route_logged(feature, &repo, &asked.job);
            let r = d.decision;
            let meta = metadata(service, feature, r.eligibility.reason, Some(r.rule), r.eligibility.bucket);
            let reason = if r.eligibility.eligible {
                openfeature_rule_reason(r.rule)
            } else {
                openfeature_reason(r.eligibility.reason)
            };
            let fallback = r.rule == RouteRule::PolicyError;
            (Value::from(r.processor.as_str()), r.processor.as_str(), reason, meta, fallback, d.id)
        }
    };
    if with_id {
        meta.insert("decision_id".into(), id.to_string().into());
    }
    if fallback {
        return json!({
            "key": key,
            "errorCode": "GENERAL",
            "errorDetails": "the policy gave no answer (it trapped, ran past its deadline, or none is loaded): use the code default",
            "metadata": meta,
        });
    }
    json!({ "key": key, "value": value, "reason": reason, "variant": variant, "metadata": meta })
}

fn error_response(e: &OfrepError, key: Option<&str>) -> Response {
    (e.status, Json(e.body(key))).into_response()
}

/// `POST /ofrep/v1/evaluate/flags/{key}` `{"context": {...}}`.
pub async fn evaluate_flag(State(state): State<AppState>, Path(key): Path<String>, body: Bytes) -> Response {
    let service = state.service();
    let flag = match flag(service, &key).await {
        Ok(f) => f,
        Err(e) => return error_response(&e, Some(&key)),
    };
    let asked = match read_context(&body) {
        Ok(a) => a,
        Err(e) => return error_response(&e, Some(&key)),
    };
    let value = evaluate(service, &flag, &key, &asked, true);
    let id = value.pointer("/metadata/decision_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut response = Json(value).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(super::decisions::DECISION_ID_HEADER, v);
    }
    response
}

/// `POST /ofrep/v1/evaluate/flags` `{"context": {...}}`: every flag of every feature served,
/// with an `ETag` of the answers (304 when `If-None-Match` carries it).
pub async fn evaluate_all(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let service = state.service();
    let asked = match read_context(&body) {
        Ok(a) => a,
        Err(e) => return error_response(&e, None),
    };
    let mut features = service.features();
    features.sort_by(|a, b| a.name().cmp(b.name()));
    let mut flags = Vec::with_capacity(features.len() * 2);
    for feature in features {
        let name = feature.name().to_owned();
        let processor = format!("{name}{PROCESSOR_SUFFIX}");
        flags.push(evaluate(service, &Flag::Eligible(feature.clone()), &name, &asked, false));
        flags.push(evaluate(service, &Flag::Processor(feature), &processor, &asked, false));
    }
    let body = json!({ "flags": flags });
    let text = body.to_string();
    let etag = format!("\"{}\"", hex(&Sha256::digest(text.as_bytes())[..16]));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (StatusCode::OK, [(header::ETAG, etag), (header::CONTENT_TYPE, "application/json".to_owned())], text)
        .into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_read_and_bad_ones_name_the_attribute() {
        let ok = read_context(
            br#"{"context": {"targetingKey": "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", "category": "large", "max_items": 80, "email": "x@y"}}"#,
        )
        .map_err(|e| e.details)
        .expect("reads");
        assert_eq!(ok.category, Some(Category::Large));
        assert_eq!(ok.job.max_items, Some(80));
        let cases: [(&[u8], &str, &str); 6] = [
            (b"nope", "PARSE_ERROR", "not JSON"),
            (br#"{}"#, "TARGETING_KEY_MISSING", "targetingKey"),
            (br#"{"context": {"targetingKey": "x"}}"#, "INVALID_CONTEXT", "targetingKey"),
            (br#"{"context": {"targetingKey": 3}}"#, "INVALID_CONTEXT", "targetingKey"),
            (
                br#"{"context": {"targetingKey": "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", "category": "huge"}}"#,
                "INVALID_CONTEXT",
                "category",
            ),
            (
                br#"{"context": {"targetingKey": "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", "trigger_source": "cron"}}"#,
                "INVALID_CONTEXT",
                "trigger source",
            ),
        ];
        for (body, code, mention) in cases {
            let e = read_context(body).err().unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(body)));
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, code), "{}", String::from_utf8_lossy(body));
            assert!(e.details.contains(mention), "{}: {}", String::from_utf8_lossy(body), e.details);
        }
    }

    #[test]
    fn every_reason_maps_to_the_openfeature_vocabulary() {
        for r in EligibilityReason::ALL {
            let of = openfeature_reason(*r);
            assert!(["DISABLED", "SPLIT", "TARGETING_MATCH", "ERROR"].contains(&of), "{r:?} → {of}");
        }
        assert_eq!(openfeature_reason(EligibilityReason::EmergencyStop), "DISABLED");
        assert_eq!(openfeature_reason(EligibilityReason::OutsidePercentage), "SPLIT");
        assert_eq!(openfeature_reason(EligibilityReason::Targeted), "TARGETING_MATCH");
        assert_eq!(openfeature_rule_reason(RouteRule::Default), "DEFAULT");
        assert_eq!(openfeature_rule_reason(RouteRule::ScheduledBulk), "TARGETING_MATCH");
    }
}
