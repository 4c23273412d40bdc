//! Request bodies as types: decoded once with `deny_unknown_fields`, values validated by
//! their types ([`crate::input::values`]), errors naming the field by its path.

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::input::values::{
    boolean, opt_boolean, ErrorMessage, Percentage, ProcessingTimeMs, Reason, RepositoryRef, RepositoryUuid,
};
use crate::input::{from_json, Capped, InputError, JobInput};
use crate::manager::OutcomeInput;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use rollout_policy::{Job, Processor};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// A JSON object body decoded into `T`.
#[derive(Debug)]
pub struct Body<T>(pub T);

/// A JSON object body decoded into `T`, or `T::default()` when the body is empty.
#[derive(Debug)]
pub struct OptionalBody<T>(pub T);

/// Read the whole body, mapping a body over the limit to 413.
pub async fn read_body(req: Request, state: &AppState) -> ApiResult<Bytes> {
    let limit = state.body_limit_for(req.uri().path());
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            ApiError::Malformed(format!("cannot read the request body: {}", rejection.body_text()))
        }
    })
}

/// Decode a body that must be a JSON object.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::Malformed("the request body is empty: expected a JSON object".into())),
        Some(b'{') => {}
        Some(_) => {
            let what = match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(v) => kind(&v),
                Err(_) => "not valid JSON",
            };
            return Err(ApiError::Malformed(format!("the request body is {what}: expected a JSON object")));
        }
    }
    from_json(bytes).map_err(input_error)
}

/// An input error as the API answers it: a whole-body error is malformed, anything else
/// names its field.
pub fn input_error(e: InputError) -> ApiError {
    if e.field.is_empty() {
        let message = e.message.replace("the input is", "the request body is");
        ApiError::Malformed(message)
    } else {
        ApiError::Invalid { field: e.field, message: e.message }
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        decode(&bytes).map(Body)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        decode(&bytes).map(OptionalBody)
    }
}

/// `{repository_id}` of an eligibility request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EligibilityBody {
    /// The repository's UUID.
    pub repository_id: RepositoryUuid,
}

/// `{repository_id, job?}` of a route request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteBody {
    /// The repository's UUID.
    pub repository_id: RepositoryUuid,
    /// The job (absent: an empty job).
    #[serde(default)]
    pub job: Option<JobInput>,
}

impl RouteBody {
    /// The repository and the job.
    pub fn into_parts(self) -> (RepositoryUuid, Job) {
        (self.repository_id, self.job.map(JobInput::into_job).unwrap_or_default())
    }
}

/// `{requests: [{repository_id, job?}]}` of a route batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteBatchBody {
    /// The requests, in order (decoding stops past the cap).
    pub requests: Capped<RouteBody>,
}

/// `{percentage, reason?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentageBody {
    /// The new percentage.
    pub percentage: Percentage,
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
}

/// `{reason}` (required: the emergency stop and resume).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why.
    pub reason: Reason,
}

/// `{reason?}` (policy activation and revert; the body may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionalReasonBody {
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
}

/// `{repository_ids, reason?}` of a list edit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdsBody {
    /// UUIDs or `owner/name`.
    pub repository_ids: Capped<RepositoryRef>,
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
}

/// `{enabled, reason?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRollbackBody {
    /// Whether auto-rollback is on.
    #[serde(deserialize_with = "boolean")]
    pub enabled: bool,
    /// Why.
    #[serde(default)]
    pub reason: Option<Reason>,
}

/// `{apply?}` of a health check (default: apply).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckHealthBody {
    /// Roll back when the policy says so (default true).
    #[serde(default, deserialize_with = "opt_boolean")]
    pub apply: Option<bool>,
}

/// One outcome as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBody {
    /// A UUID or `owner/name`.
    pub repository_id: RepositoryRef,
    /// `inngest` or `github_actions`.
    pub processor_type: Processor,
    /// Whether the job succeeded.
    #[serde(deserialize_with = "boolean")]
    pub success: bool,
    /// Milliseconds, at most 7 days.
    #[serde(default)]
    pub processing_time_ms: Option<ProcessingTimeMs>,
    /// The error of a failure.
    #[serde(default)]
    pub error_message: Option<ErrorMessage>,
    /// The `decision_id` of the decision the job followed.
    #[serde(default)]
    pub decision_id: Option<uuid::Uuid>,
}

impl From<OutcomeBody> for OutcomeInput {
    fn from(o: OutcomeBody) -> OutcomeInput {
        OutcomeInput {
            repository: o.repository_id,
            processor: o.processor_type,
            success: o.success,
            processing_time_ms: o.processing_time_ms,
            error_message: o.error_message,
            decision_id: o.decision_id,
        }
    }
}

/// One outcome, or `{outcomes: [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomesBody {
    /// Several outcomes.
    #[serde(default)]
    outcomes: Option<Capped<OutcomeBody>>,
    #[serde(default)]
    repository_id: Option<RepositoryRef>,
    #[serde(default)]
    processor_type: Option<Processor>,
    #[serde(default, deserialize_with = "opt_boolean")]
    success: Option<bool>,
    #[serde(default)]
    processing_time_ms: Option<ProcessingTimeMs>,
    #[serde(default)]
    error_message: Option<ErrorMessage>,
    #[serde(default)]
    decision_id: Option<uuid::Uuid>,
}

impl OutcomesBody {
    /// The outcomes, in order; at most `max`.
    pub fn into_outcomes(self, max: usize) -> ApiResult<Vec<OutcomeInput>> {
        if let Some(Capped(list)) = self.outcomes {
            let single = [
                ("repository_id", self.repository_id.is_some()),
                ("processor_type", self.processor_type.is_some()),
                ("success", self.success.is_some()),
                ("processing_time_ms", self.processing_time_ms.is_some()),
                ("error_message", self.error_message.is_some()),
                ("decision_id", self.decision_id.is_some()),
            ];
            if let Some((name, _)) = single.iter().find(|(_, present)| *present) {
                return Err(ApiError::invalid(
                    *name,
                    format!("unknown field `{name}`: beside `outcomes`, allowed fields are none"),
                ));
            }
            check_count("outcomes", list.len(), max)?;
            return Ok(list.into_iter().map(OutcomeInput::from).collect());
        }
        let repository = self
            .repository_id
            .ok_or_else(|| ApiError::invalid("repository_id", "`repository_id` is required: a UUID or owner/name"))?;
        let processor = self.processor_type.ok_or_else(|| {
            ApiError::invalid("processor_type", "`processor_type` is required: inngest or github_actions")
        })?;
        let success =
            self.success.ok_or_else(|| ApiError::invalid("success", "`success` is required: true or false"))?;
        Ok(vec![OutcomeInput {
            repository,
            processor,
            success,
            processing_time_ms: self.processing_time_ms,
            error_message: self.error_message,
            decision_id: self.decision_id,
        }])
    }
}

/// A list of `n` items is 1 to `max` long.
pub fn check_count(field: &str, n: usize, max: usize) -> ApiResult<()> {
    if n == 0 {
        return Err(ApiError::invalid(field, format!("`{field}` is empty: give at least one item")));
    }
    if n > max {
        return Err(ApiError::invalid(field, format!("`{field}` has {n} items: allowed at most {max}")));
    }
    Ok(())
}

/// `{feature_name}` of a feature to create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFeatureBody {
    /// The feature's name (1 to 100 characters).
    pub feature_name: crate::input::values::FeatureName,
}
