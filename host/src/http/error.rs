//! The one error type of the HTTP API and its JSON answer `{"error": {"field"?, "message"}}`.
//!
//! Every 4xx names the part of the request at fault in `field`: a JSON path of the body
//! (`percentage`, `requests[3].job`), a path parameter (`feature`, `sha256`), a header
//! (`authorization`, `content-type`, `x-rollout-actor`), or `body`, `path`, `method` for the
//! request as a whole. A 5xx has no `field`: the request was not at fault.

use crate::service::{ErrorKind, ServiceError};
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
    /// The request took longer than its deadline (408).
    #[error("the request took longer than its deadline of {} ms; send it again, whole", .0.as_millis())]
    Timeout(std::time::Duration),
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
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The part of the request at fault; `None` for a 5xx.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } => Some(field),
            ApiError::NotFound { field, .. } => Some(field.as_deref().unwrap_or("path")),
            ApiError::Malformed(_)
            | ApiError::Conflict(_)
            | ApiError::TooLarge { .. }
            | ApiError::PolicyRejected(_)
            | ApiError::Timeout(_) => Some("body"),
            ApiError::Unauthorized(_) | ApiError::WritesDisabled => Some("authorization"),
            ApiError::UnsupportedMediaType(_) => Some("content-type"),
            ApiError::Unavailable(_) | ApiError::Internal(_) => None,
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

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        let message = error.public_message();
        match error.kind() {
            ErrorKind::Invalid { field } => ApiError::Invalid { field, message },
            ErrorKind::NotFound { field } => ApiError::NotFound { field: Some(field), message },
            ErrorKind::Conflict => ApiError::Conflict(message),
            ErrorKind::Rejected => ApiError::PolicyRejected(message),
            ErrorKind::TooLarge => match error {
                ServiceError::TooLarge { limit } => ApiError::TooLarge { limit },
                _ => ApiError::Internal(message),
            },
            ErrorKind::Unavailable => {
                tracing::warn!("unavailable: {error}");
                ApiError::Unavailable(message)
            }
            ErrorKind::Internal => {
                tracing::error!("{error}");
                ApiError::Internal(message)
            }
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
        let corrupt = crate::store::StoreError::Corrupt { column: "secret_column", message: "row 42 is odd".into() };
        let e: ApiError = ServiceError::Store(corrupt).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.to_string().contains("secret_column") && !e.to_string().contains("row 42"), "{e}");
    }

    #[test]
    fn unreachable_database_is_503() {
        let e: ApiError = ServiceError::Store(crate::store::StoreError::RecorderClosed).into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(e.to_string().contains("unreachable"));
    }
}
