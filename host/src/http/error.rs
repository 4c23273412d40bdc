//! The one error type of the HTTP API and its JSON answer `{"error": {"field"?, "message"}}`.

use crate::manager::ManagerError;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Everything a request can fail with. Each variant maps to one status code; database
/// internals never reach the client (they are logged).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or has a value outside what is allowed (400).
    #[error("{message}")]
    Invalid {
        /// The field at fault (`repository_id`, `job.trigger_source`, `requests[3].job`, …).
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The body is not JSON, or not a JSON object (400).
    #[error("{0}")]
    Malformed(String),
    /// The `Authorization` header is missing or wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Writes are disabled because no service token is configured (403).
    #[error(
        "writes are disabled: no service token is configured; set ROLLOUT_SERVICE_TOKEN in the environment of \
         `rollout serve` and restart it, then send `Authorization: Bearer <token>`"
    )]
    WritesDisabled,
    /// Something named in the request does not exist (404).
    #[error("{message}")]
    NotFound {
        /// The field or path parameter naming it.
        field: Option<String>,
        /// What was not found.
        message: String,
    },
    /// A unique constraint refused the write (409), named by constraint.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than allowed (413).
    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body has the wrong content type (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A policy failed the runtime's validation (422).
    #[error("{0}")]
    PolicyRejected(String),
    /// The database cannot be reached, or the service is shutting down (503).
    #[error("{0}")]
    Unavailable(String),
    /// Something unexpected; details are in the server's log (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid { field: field.into(), message: message.into() }
    }

    /// The status code of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::WritesDisabled => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PolicyRejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } => Some(field),
            ApiError::NotFound { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::Map::new();
        if let Some(field) = self.field() {
            error.insert("field".into(), field.into());
        }
        error.insert("message".into(), self.to_string().into());
        serde_json::json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "{self}");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Whether `error` means the database could not be reached (as opposed to a refusal).
pub fn is_unreachable(error: &StoreError) -> bool {
    match error {
        StoreError::Connect { .. } | StoreError::RecorderClosed => true,
        StoreError::Database { source, .. } => matches!(
            **source,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        ),
        _ => false,
    }
}

/// The message of a 503 for an unreachable database.
pub const DATABASE_UNREACHABLE: &str =
    "the database is unreachable: decisions continue from the cached configuration, outcomes are buffered, \
     and operations are refused until it is back; retry later";

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        if is_unreachable(&error) {
            tracing::warn!("database unreachable: {error}");
            return ApiError::Unavailable(DATABASE_UNREACHABLE.to_owned());
        }
        match error {
            StoreError::UnknownFeature(f) => ApiError::NotFound {
                field: Some("feature".into()),
                message: format!("unknown feature `{f}`: no rollout configuration has this feature name"),
            },
            StoreError::InvalidRepositoryId(id) => ApiError::invalid(
                "repository_ids",
                format!("invalid repository id `{id}`: expected a UUID or owner/name"),
            ),
            StoreError::UnknownRepository(id) => ApiError::NotFound {
                field: Some("repository_ids".into()),
                message: format!("unknown repository `{id}`: no row of repositories has this owner/name"),
            },
            StoreError::InvalidConfig(e) => ApiError::invalid(e.field.clone(), e.to_string()),
            StoreError::UnknownPolicy(sha) => ApiError::NotFound {
                field: Some("sha256".into()),
                message: format!("unknown policy `{sha}`: no stored policy version has this sha256"),
            },
            StoreError::Database { context, source } => {
                if let Some(constraint) = source.as_database_error().and_then(|d| d.constraint()) {
                    return ApiError::Conflict(format!(
                        "the change conflicts with `{constraint}`: {context} was refused"
                    ));
                }
                tracing::error!("database error: {context}: {source}");
                ApiError::Internal(format!("the database refused to {context}; see the server log"))
            }
            other => {
                tracing::error!("store error: {other}");
                ApiError::Internal("the database returned an unexpected value; see the server log".into())
            }
        }
    }
}

impl From<ManagerError> for ApiError {
    fn from(error: ManagerError) -> ApiError {
        match error {
            ManagerError::Store(e) => e.into(),
            ManagerError::PolicyUnavailable(id) => {
                ApiError::Unavailable(format!("the policy could not categorize repository `{id}`; retry later"))
            }
            ManagerError::NoStats(id) => ApiError::NotFound {
                field: Some("repository_id".into()),
                message: format!("repository `{id}` has no row in repositories and no stats were given"),
            },
            ManagerError::InvalidPercentage(p) => {
                ApiError::invalid("percentage", format!("`{p}` is out of range: allowed an integer from 0 to 100"))
            }
            ManagerError::NoIds => ApiError::invalid(
                "repository_ids",
                "no repository ids given: allowed a non-empty list of UUIDs or owner/name",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_the_field() {
        let e = ApiError::invalid("percentage", "`101` is out of range");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["field"], "percentage");
        assert_eq!(e.body()["error"]["message"], "`101` is out of range");
    }

    #[test]
    fn database_details_do_not_leak() {
        let e: ApiError = StoreError::Database {
            context: "update feature `x`".into(),
            source: std::sync::Arc::new(sqlx::Error::RowNotFound),
        }
        .into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.to_string().contains("RowNotFound") && !e.to_string().contains("no rows"), "{e}");
    }

    #[test]
    fn unreachable_database_is_503() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e: ApiError =
            StoreError::Database { context: "x".into(), source: std::sync::Arc::new(sqlx::Error::Io(io)) }.into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("unreachable"));
    }
}
