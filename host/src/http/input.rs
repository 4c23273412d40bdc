//! Request bodies: a JSON object extractor with JSON errors, and field readers whose
//! errors name the field and the allowed values.

use super::error::{ApiError, ApiResult};
use super::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use rollout_policy::{Job, Processor, RepoId, TriggerSource};
use serde_json::{Map, Value};

/// Longest `reason` accepted, in characters.
pub const MAX_REASON_CHARS: usize = 1000;
/// Longest `error_message` accepted, in characters (longer ones are refused, not cut).
pub const MAX_ERROR_MESSAGE_CHARS: usize = 10_000;
/// Most PR numbers in one job.
pub const MAX_PR_NUMBERS: usize = 10_000;

/// A request body that is a JSON object.
#[derive(Debug)]
pub struct JsonObject(pub Map<String, Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        object(&bytes).map(JsonObject)
    }
}

/// Parse a body that must be a JSON object.
pub fn object(bytes: &[u8]) -> ApiResult<Map<String, Value>> {
    if bytes.is_empty() {
        return Err(ApiError::Malformed("the request body is empty: expected a JSON object".into()));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::Malformed(format!("the request body is {}: expected a JSON object", kind(&other)))),
        Err(e) => Err(ApiError::Malformed(format!("the request body is not valid JSON: {e}"))),
    }
}

/// A request body, unparsed (for handlers with a typed fast path).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_body(req, state).await.map(RawBody)
    }
}

/// A job as the fast path reads it (borrowed, unknown fields refused).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastJob<'a> {
    #[serde(borrow, default)]
    job_type: Option<&'a str>,
    #[serde(default)]
    time_range_days: Option<u32>,
    #[serde(default)]
    pr_numbers: Option<Vec<u64>>,
    #[serde(borrow, default)]
    trigger_source: Option<&'a str>,
    #[serde(default)]
    max_items: Option<u32>,
}

/// A decision request as the fast path reads it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastDecision<'a> {
    #[serde(borrow)]
    repository_id: &'a str,
    #[serde(borrow, default)]
    job: Option<FastJob<'a>>,
}

impl FastDecision<'_> {
    /// The canonical repository id and the job, when both are valid; `None` sends the
    /// request to the field-by-field checks, which name what is wrong.
    pub fn accept(&self, with_job: bool) -> Option<(String, Job)> {
        let RepoId::Uuid(v) = RepoId::parse(self.repository_id.trim()) else { return None };
        let job = match &self.job {
            None => Job::default(),
            Some(_) if !with_job => return None,
            Some(j) => {
                let trigger_source = match j.trigger_source {
                    None => None,
                    Some(t) => Some(TriggerSource::parse(t).ok()?),
                };
                let pr_numbers = j.pr_numbers.clone().unwrap_or_default();
                if pr_numbers.len() > MAX_PR_NUMBERS {
                    return None;
                }
                Job {
                    job_type: j.job_type.map(str::to_owned),
                    time_range_days: j.time_range_days,
                    pr_numbers,
                    trigger_source,
                    max_items: j.max_items,
                }
            }
        };
        Some((uuid::Uuid::from_u128(v).to_string(), job))
    }
}

/// A request body that is a JSON object, or empty.
#[derive(Debug)]
pub struct MaybeJsonObject(pub Option<Map<String, Value>>);

impl FromRequest<AppState> for MaybeJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(MaybeJsonObject(None));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(MaybeJsonObject(Some(map))),
            Ok(other) => {
                Err(ApiError::Malformed(format!("the request body is {}: expected a JSON object", kind(&other))))
            }
            Err(e) => Err(ApiError::Malformed(format!("the request body is not valid JSON: {e}"))),
        }
    }
}

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

/// The JSON kind of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `prefix.name`, or `name` when there is no prefix.
pub fn path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Refuse fields not in `allowed`.
pub fn only(obj: &Map<String, Value>, prefix: &str, allowed: &[&str]) -> ApiResult<()> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                path(prefix, key),
                format!("unknown field `{key}`: allowed fields are {}", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// A required string field.
pub fn string<'a>(obj: &'a Map<String, Value>, prefix: &str, name: &str) -> ApiResult<&'a str> {
    match present(obj, name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => {
            Err(ApiError::invalid(path(prefix, name), format!("`{name}` is {}: expected a string", kind(other))))
        }
        None => Err(ApiError::invalid(path(prefix, name), format!("`{name}` is required"))),
    }
}

/// An optional string field.
pub fn opt_string<'a>(obj: &'a Map<String, Value>, prefix: &str, name: &str) -> ApiResult<Option<&'a str>> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => {
            Err(ApiError::invalid(path(prefix, name), format!("`{name}` is {}: expected a string", kind(other))))
        }
    }
}

/// A required boolean field.
pub fn boolean(obj: &Map<String, Value>, prefix: &str, name: &str) -> ApiResult<bool> {
    match present(obj, name) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => {
            Err(ApiError::invalid(path(prefix, name), format!("`{name}` is {}: expected true or false", kind(other))))
        }
        None => Err(ApiError::invalid(path(prefix, name), format!("`{name}` is required: true or false"))),
    }
}

/// An optional non-negative integer field no larger than `max`.
pub fn opt_uint(obj: &Map<String, Value>, prefix: &str, name: &str, max: u64) -> ApiResult<Option<u64>> {
    match present(obj, name) {
        None => Ok(None),
        Some(v) => uint_value(v, &path(prefix, name), max).map(Some),
    }
}

/// A non-negative integer no larger than `max`.
pub fn uint_value(v: &Value, field: &str, max: u64) -> ApiResult<u64> {
    let bad = || ApiError::invalid(field, format!("`{v}` is not allowed: expected an integer from 0 to {max}"));
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(x) if x <= max => Ok(x),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The optional `reason` of an operation (required when `required`): a non-empty string of
/// at most [`MAX_REASON_CHARS`] characters.
pub fn reason(obj: &Map<String, Value>, required: bool) -> ApiResult<Option<String>> {
    let r = if required { Some(string(obj, "", "reason")?) } else { opt_string(obj, "", "reason")? };
    match r {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Err(ApiError::invalid("reason", "`reason` is empty: say why, in words")),
        Some(s) if s.chars().count() > MAX_REASON_CHARS => {
            Err(ApiError::invalid("reason", format!("`reason` is longer than {MAX_REASON_CHARS} characters")))
        }
        Some(s) => Ok(Some(s.trim().to_owned())),
    }
}

/// A repository id for a decision: a UUID (hyphenated in any case, braced, or 32 hex digits).
/// Returns the canonical lowercase hyphenated text.
pub fn repository_uuid(obj: &Map<String, Value>, prefix: &str) -> ApiResult<String> {
    let field = path(prefix, "repository_id");
    let s = string(obj, prefix, "repository_id")?;
    match RepoId::parse(s.trim()) {
        RepoId::Uuid(v) => Ok(uuid::Uuid::from_u128(v).to_string()),
        RepoId::Text(_) => Err(ApiError::invalid(
            field,
            format!(
                "`{}` is not a UUID: expected the repository's id, e.g. 6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11",
                clip(s)
            ),
        )),
    }
}

/// A repository id for an outcome or an edit: a UUID or `owner/name`.
pub fn repository_ref(s: &str, field: &str) -> ApiResult<String> {
    let t = s.trim();
    match RepoId::parse(t) {
        RepoId::Uuid(v) => Ok(uuid::Uuid::from_u128(v).to_string()),
        RepoId::Text(_) if crate::store::split_owner_name(t).is_some() && t.len() <= 300 => Ok(t.to_owned()),
        RepoId::Text(_) => Err(ApiError::invalid(
            field,
            format!("`{}` is not a repository id: expected a UUID or owner/name", clip(s)),
        )),
    }
}

/// At most 80 characters of user input, for messages.
pub fn clip(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_owned(),
    }
}

/// The `job` of a route request (absent means an empty job).
pub fn job(obj: &Map<String, Value>, prefix: &str) -> ApiResult<Job> {
    let field = path(prefix, "job");
    let j = match present(obj, "job") {
        None => return Ok(Job::default()),
        Some(Value::Object(j)) => j,
        Some(other) => return Err(ApiError::invalid(field, format!("`job` is {}: expected an object", kind(other)))),
    };
    only(j, &field, &["job_type", "time_range_days", "pr_numbers", "trigger_source", "max_items"])?;
    let job_type = opt_string(j, &field, "job_type")?.map(str::to_owned);
    let time_range_days = opt_uint(j, &field, "time_range_days", u64::from(u32::MAX))?.map(|v| v as u32);
    let max_items = opt_uint(j, &field, "max_items", u64::from(u32::MAX))?.map(|v| v as u32);
    let trigger_source = match opt_string(j, &field, "trigger_source")? {
        None => None,
        Some(s) => Some(TriggerSource::parse(s).map_err(|_| {
            ApiError::invalid(
                path(&field, "trigger_source"),
                format!("unknown trigger source `{}`: allowed values are manual, scheduled, automatic", clip(s)),
            )
        })?),
    };
    let pr_field = path(&field, "pr_numbers");
    let pr_numbers = match present(j, "pr_numbers") {
        None => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_PR_NUMBERS {
                return Err(ApiError::invalid(pr_field, format!("more than {MAX_PR_NUMBERS} PR numbers")));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                out.push(uint_value(v, &format!("{pr_field}[{i}]"), u64::MAX)?);
            }
            out
        }
        Some(other) => {
            return Err(ApiError::invalid(
                pr_field,
                format!("`pr_numbers` is {}: expected a list of PR numbers", kind(other)),
            ))
        }
    };
    Ok(Job { job_type, time_range_days, pr_numbers, trigger_source, max_items })
}

/// A processor name.
pub fn processor(obj: &Map<String, Value>, prefix: &str) -> ApiResult<Processor> {
    let s = string(obj, prefix, "processor_type")?;
    Processor::parse(s).map_err(|_| {
        ApiError::invalid(
            path(prefix, "processor_type"),
            format!("unknown processor `{}`: allowed values are inngest, github_actions", clip(s)),
        )
    })
}

/// A required list field of at most `max` items.
pub fn list<'a>(obj: &'a Map<String, Value>, name: &str, max: usize) -> ApiResult<&'a Vec<Value>> {
    match present(obj, name) {
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::invalid(name, format!("`{name}` is empty: give at least one item")))
        }
        Some(Value::Array(items)) if items.len() > max => {
            Err(ApiError::invalid(name, format!("`{name}` has {} items: allowed at most {max}", items.len())))
        }
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(ApiError::invalid(name, format!("`{name}` is {}: expected a list", kind(other)))),
        None => Err(ApiError::invalid(name, format!("`{name}` is required"))),
    }
}

/// Item `i` of a list as an object.
pub fn item<'a>(v: &'a Value, name: &str, i: usize) -> ApiResult<(&'a Map<String, Value>, String)> {
    let field = format!("{name}[{i}]");
    match v {
        Value::Object(o) => Ok((o, field)),
        other => Err(ApiError::invalid(field.clone(), format!("`{field}` is {}: expected an object", kind(other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn jobs_parse_and_name_bad_fields() {
        let j = job(&obj(json!({"job": {"time_range_days": 0, "pr_numbers": [1, 2], "trigger_source": "manual"}})), "")
            .unwrap();
        assert_eq!(j.time_range_days, Some(0));
        assert_eq!(j.pr_numbers, vec![1, 2]);
        assert_eq!(j.trigger_source, Some(TriggerSource::Manual));

        let e = job(&obj(json!({"job": {"trigger_source": "cron"}})), "requests[2]").unwrap_err();
        assert_eq!(e.body()["error"]["field"], "requests[2].job.trigger_source");
        assert!(e.to_string().contains("manual, scheduled, automatic"), "{e}");

        let e = job(&obj(json!({"job": {"max_items": -1}})), "").unwrap_err();
        assert_eq!(e.body()["error"]["field"], "job.max_items");
        let e = job(&obj(json!({"job": {"pr_numbers": [1, "x"]}})), "").unwrap_err();
        assert_eq!(e.body()["error"]["field"], "job.pr_numbers[1]");
        let e = job(&obj(json!({"job": {"colour": "red"}})), "").unwrap_err();
        assert_eq!(e.body()["error"]["field"], "job.colour");
    }

    #[test]
    fn repository_ids_must_be_uuids_for_decisions() {
        let ok = repository_uuid(&obj(json!({"repository_id": "6F1C9A3E-0C4B-4F5E-9D41-2B7A8E6F0C11"})), "").unwrap();
        assert_eq!(ok, "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11");
        let e = repository_uuid(&obj(json!({"repository_id": "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c1"})), "").unwrap_err();
        assert_eq!(e.body()["error"]["field"], "repository_id");
        assert!(e.to_string().contains("not a UUID"));
        assert!(repository_uuid(&obj(json!({})), "").is_err());
        assert!(repository_ref("octo/cat", "x").is_ok());
        assert!(repository_ref("not an id", "x").is_err());
    }

    #[test]
    fn reasons_are_checked() {
        assert_eq!(reason(&obj(json!({})), false).unwrap(), None);
        assert!(reason(&obj(json!({})), true).is_err());
        assert!(reason(&obj(json!({"reason": "  "})), false).is_err());
        assert_eq!(reason(&obj(json!({"reason": " why "})), true).unwrap().as_deref(), Some("why"));
    }
}
