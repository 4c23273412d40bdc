//! Bounds on every request, so one client cannot hold the server: a limit on requests in
//! flight (beyond it: 503 with `Retry-After`, at once — nobody queues) and a deadline on
//! each request, body read included (beyond it: 408). A trickling body therefore ends at
//! the deadline, and a graceful shutdown never waits longer than that for it.

use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The bounds; [`RequestLimits::default`] is what `rollout serve` uses unless told otherwise
/// (`--max-in-flight`, `--request-timeout-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Requests handled at once (default 1,024).
    pub max_in_flight: usize,
    /// Longest a request may take, from its first byte to its answer, reading its body
    /// included (default 30 s).
    pub request_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits { max_in_flight: 1024, request_timeout: Duration::from_secs(30) }
    }
}

/// The state of the bounds: the permits of requests in flight.
#[derive(Debug)]
pub(crate) struct Gate {
    permits: Arc<Semaphore>,
    limits: RequestLimits,
}

impl Gate {
    pub(crate) fn new(limits: RequestLimits) -> Gate {
        Gate { permits: Arc::new(Semaphore::new(limits.max_in_flight.max(1))), limits }
    }
}

/// The middleware: refuse beyond the limit, end at the deadline.
pub(crate) async fn bound(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let gate = state.gate();
    let Ok(_permit) = gate.permits.clone().try_acquire_owned() else {
        state.service().metrics().request_refused();
        return ApiError::Unavailable(format!(
            "the server is handling {} requests, its limit; retry in a moment",
            gate.limits.max_in_flight
        ))
        .into_response();
    };
    match tokio::time::timeout(gate.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.service().metrics().request_timed_out();
            ApiError::Timeout(gate.limits.request_timeout).into_response()
        }
    }
}
