//! The HTTP API of `rollout serve` (SPEC §6): a thin edge over the [`Service`].
//!
//! Handlers decode the request into typed bodies ([`requests`]), call the service, and
//! render what it returns; the rules (which change writes what, when an outcome is
//! durable, which policy a revert picks) live in [`crate::service`], shared with the CLI.
//! [`app`] builds the [`axum::Router`] over an [`AppState`]; it is a plain function, so tests
//! drive it with `tower::ServiceExt::oneshot` and no socket. [`serve`] runs it on a listener
//! with graceful shutdown.
//!
//! - **Decisions** (`eligibility`, `route`, `route/batch`) read only memory and go on while
//!   the database is unreachable.
//! - **Writes** (operations, outcomes, policies) need `Authorization: Bearer
//!   $ROLLOUT_SERVICE_TOKEN`, compared in constant time; with no token configured they
//!   answer 403 saying how to enable them. Reads are public.
//! - **Outcomes** are acknowledged with `"durable": true` once committed; while the
//!   database is unreachable they are buffered and acknowledged with 202 and
//!   `"durable": false`.
//! - **Errors** are `{"error": {"field"?, "message"}}` ([`ApiError`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rollout::http::{app, AppState, HttpOptions};
//! use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
//! use rollout::service::{Service, ServiceOptions};
//! use rollout::store::Store;
//!
//! let store = Store::connect("sqlite://rollout.db").await?;
//! store.migrate().await?;
//! let runtime = Runtime::new(RuntimeOptions::default())?;
//! runtime.load_bytes(BUNDLED_POLICY, "bundled")?;
//! let service = Service::open(store, runtime, ServiceOptions::default()).await?;
//! let router = app(AppState::new(service, HttpOptions::default()));
//! # let _ = router; Ok(()) }
//! ```

mod alerts;
mod backlog;
mod candidate;
mod decision_log;
mod decisions;
pub mod error;
pub mod limits;
pub mod ofrep;
mod operations;
mod page;
mod policies;
mod reads;
pub mod requests;
pub mod sync;

pub use error::{ApiError, ApiResult};

use crate::input::values::Actor;
use crate::service::Service;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;

/// How the HTTP edge behaves; [`HttpOptions::default`] is what `rollout serve` uses.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The service token writes must present; `None` disables writes (403).
    pub token: Option<String>,
    /// Largest JSON body, in bytes (default 1 MiB).
    pub json_body_limit: usize,
    /// Largest policy upload, in bytes (default 8 MiB).
    pub policy_body_limit: usize,
    /// Requests in flight and the deadline of each.
    pub limits: limits::RequestLimits,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            token: None,
            json_body_limit: 1 << 20,
            policy_body_limit: 8 << 20,
            limits: limits::RequestLimits::default(),
        }
    }
}

/// Shortest service token `rollout serve` accepts.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The service token from its configured text (`ROLLOUT_SERVICE_TOKEN`): surrounding
/// whitespace removed once, here (a token written to a file and read back ends in a
/// newline); `None` when unset (writes disabled). Set but empty, or shorter than
/// [`MIN_TOKEN_CHARS`], is an error the operator must fix before the server starts: a
/// server that cannot authorise its operators' writes — an emergency stop included — must
/// not run.
pub fn service_token(raw: Option<&str>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let token = raw.trim();
    if token.is_empty() {
        return Err("ROLLOUT_SERVICE_TOKEN is set but empty: set a token of at least 16 characters, or unset it to \
                    disable writes"
            .into());
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "ROLLOUT_SERVICE_TOKEN has {} characters: a service token has at least {MIN_TOKEN_CHARS} (for example \
             `head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)",
            token.chars().count()
        ));
    }
    if token.chars().any(char::is_control) {
        return Err("ROLLOUT_SERVICE_TOKEN contains a control character: allowed are printable characters".into());
    }
    Ok(Some(token.to_owned()))
}

struct Shared {
    service: Service,
    options: HttpOptions,
    token_digest: Option<[u8; 32]>,
    gate: limits::Gate,
}

/// What the handlers share: the service and the edge's options. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("service", &self.inner.service).finish_non_exhaustive()
    }
}

impl AppState {
    /// The HTTP edge over `service`. The token is compared as [`service_token`] normalises
    /// it (surrounding whitespace removed), like the presented one.
    pub fn new(service: Service, options: HttpOptions) -> AppState {
        let token_digest = options
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Sha256::digest(t.as_bytes()).into());
        let gate = limits::Gate::new(options.limits);
        AppState { inner: Arc::new(Shared { service, options, token_digest, gate }) }
    }

    /// The service.
    pub fn service(&self) -> &Service {
        &self.inner.service
    }

    /// The options.
    pub fn options(&self) -> &HttpOptions {
        &self.inner.options
    }

    pub(crate) fn gate(&self) -> &limits::Gate {
        &self.inner.gate
    }

    pub(crate) fn body_limit_for(&self, path: &str) -> usize {
        if path == "/v1/policies" {
            self.inner.options.policy_body_limit
        } else {
            self.inner.options.json_body_limit
        }
    }

    /// Check the `Authorization` header of a write.
    pub(crate) fn authorize(&self, parts: &Parts) -> ApiResult<()> {
        use subtle::ConstantTimeEq;
        let Some(expected) = &self.inner.token_digest else {
            return Err(ApiError::WritesDisabled);
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized(
                "this is a write: send `Authorization: Bearer <token>` with the ROLLOUT_SERVICE_TOKEN of the server"
                    .into(),
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("the `Authorization` header must be `Bearer <token>`".into()))?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("the bearer token is not the service token".into()))
        }
    }
}

/// Declares a path-parameter extractor: the parameter as text, or a 400 naming it (axum's
/// own rejection, for a parameter that is not UTF-8 once percent-decoded, is plain text).
macro_rules! path_param {
    ($(#[$meta:meta])* $name:ident, $field:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        pub struct $name(pub String);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
                match axum::extract::Path::<String>::from_request_parts(parts, state).await {
                    Ok(axum::extract::Path(value)) => Ok($name(value)),
                    Err(rejection) => Err(ApiError::invalid(
                        $field,
                        format!("the path parameter `{}` cannot be read: {}", $field, rejection.body_text()),
                    )),
                }
            }
        }
    };
}

path_param!(
    /// The `{feature}` of a feature's routes.
    FeaturePath,
    "feature"
);
path_param!(
    /// The `{sha256}` of a policy version's routes.
    ShaPath,
    "sha256"
);

/// A write's caller: checked against the service token; names who did it for the audit
/// (`X-Rollout-Actor`, else `http`).
#[derive(Debug, Clone)]
pub struct Writer {
    /// `triggered_by` of the history rows this write makes.
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        state.authorize(parts)?;
        if state.service().is_shutting_down() {
            return Err(ApiError::Unavailable("the server is shutting down; retry on another instance".into()));
        }
        let actor = match parts.headers.get("x-rollout-actor") {
            None => Actor::new("http"),
            Some(v) => {
                let s = v.to_str().map_err(|_| ApiError::invalid("x-rollout-actor", "the header must be text"))?;
                Actor::new(s)
            }
        }
        .map_err(|m| ApiError::invalid("x-rollout-actor", m))?;
        Ok(Writer { actor })
    }
}

async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.service().metrics().observe_request(method.as_str(), route, start.elapsed());
    response
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound { field: None, message: format!("no route for {method} {}", uri.path()) }
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    let message = format!("method {method} is not allowed on {}", uri.path());
    let body = serde_json::json!({"error": {"field": "method", "message": message}});
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// The router of SPEC §6 over `state`.
pub fn app(state: AppState) -> Router {
    let policy_limit = state.inner.options.policy_body_limit;
    let json_limit = state.inner.options.json_body_limit;
    let features = Router::new()
        .route("/", get(reads::feature_status))
        .route("/stats", get(reads::stats))
        .route("/history", get(reads::history))
        .route("/eligibility", post(decisions::eligibility))
        .route("/route", post(decisions::route))
        .route("/route/batch", post(decisions::route_batch))
        .route("/outcomes", post(operations::outcomes))
        .route("/percentage", put(operations::percentage))
        .route("/backlog", put(backlog::report))
        .route("/decision-log", put(decision_log::settings))
        .route("/emergency-stop", post(operations::emergency_stop))
        .route("/resume", post(operations::resume))
        .route("/whitelist/add", post(operations::whitelist_add))
        .route("/whitelist/remove", post(operations::whitelist_remove))
        .route("/exclusions/add", post(operations::exclusions_add))
        .route("/exclusions/remove", post(operations::exclusions_remove))
        .route("/auto-rollback", put(operations::auto_rollback))
        .route("/check-health", post(operations::check_health));
    let policies = Router::new()
        .route("/", get(policies::list).post(policies::upload).layer(DefaultBodyLimit::max(policy_limit)))
        .route("/revert", post(policies::revert))
        .route("/shadow", get(candidate::status))
        .route("/candidate", get(candidate::status))
        .route("/candidate/stop", post(candidate::stop))
        .route("/{sha256}/activate", post(policies::activate))
        .route("/{sha256}/shadow", post(candidate::shadow))
        .route("/{sha256}/canary", post(candidate::canary))
        .route("/{sha256}/promote", post(candidate::promote))
        .route("/{sha256}/component", get(sync::component));
    Router::new()
        .route("/", get(page::status_page))
        .route("/healthz", get(reads::healthz))
        .route("/readyz", get(reads::readyz))
        .route("/metrics", get(reads::metrics))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/decisions", get(decision_log::list))
        .route("/v1/decisions/{id}", get(decision_log::get))
        .route("/v1/sync/{feature}", get(sync::get))
        .route("/v1/sync/{feature}/events", get(sync::events))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{*key}", post(ofrep::evaluate_flag))
        .route("/v1/features", get(reads::list_features).post(operations::create_feature))
        .nest("/v1/features/{feature}", features)
        .nest("/v1/policies", policies)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::bound))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves: then stop accepting connections
/// and finish the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // small JSON answers go out at once (no Nagle delay behind a delayed ACK)
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // Every route is turned into its final service once, here. Served as a plain `Router`,
    // axum does it again for every accepted connection (`Router: Service<IncomingStream>`
    // calls `with_state`, rebuilding the route table): measured with heaptrack, 19.7 KB and
    // ~80 allocations per connection, which 10,000 idle sync subscribers held for as long as
    // they stayed connected. Cloning the finished router per connection is an `Arc` clone.
    let router = router.with_state(());
    axum::serve(listener, router.into_make_service()).with_graceful_shutdown(shutdown).await
}
