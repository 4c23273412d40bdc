//! HTTP robustness: proptest-generated methods, paths, headers and bodies against every
//! route of [`rollout::http::app`] (through `oneshot`, on SQLite and on Postgres). Whatever
//! arrives, the server answers without a panic, never with a 5xx while the database is up
//! (a 5xx is only for a declared outage), and every 4xx is a JSON error whose `field`
//! names the part of the request at fault and whose `message` says what is wrong.
//!
//! The generators are not tuned to today's validation: bodies are arbitrary JSON (with the
//! API's field names, values at the edges of every type, NUL and non-ASCII text, deep
//! nesting) or arbitrary bytes, paths mix every route template with arbitrary
//! percent-encoded segments and query strings, and headers are arbitrary bytes too.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use axum::Router;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rollout::http::{app, AppState, HttpOptions};
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout::service::{Service, ServiceOptions, StartupPolicy};
use rollout::store::testing::TestDatabase;
use serde_json::{Map, Number, Value};
use std::sync::Arc;
use tower::ServiceExt;

const TOKEN: &str = "robustness-token-0123456789";
const F: &str = "hybrid_progressive_capture";
const REPO: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

/// Requests per database. Each is one `oneshot` (a few milliseconds).
const CASES: u32 = 1000;

/// Every route of `app()`, `{f}` for the feature and `{sha}` for a policy digest.
const TEMPLATES: [&str; 27] = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/features",
    "/v1/features/{f}",
    "/v1/features/{f}/stats",
    "/v1/features/{f}/history",
    "/v1/features/{f}/eligibility",
    "/v1/features/{f}/route",
    "/v1/features/{f}/route/batch",
    "/v1/features/{f}/outcomes",
    "/v1/features/{f}/percentage",
    "/v1/features/{f}/emergency-stop",
    "/v1/features/{f}/resume",
    "/v1/features/{f}/whitelist/add",
    "/v1/features/{f}/whitelist/remove",
    "/v1/features/{f}/exclusions/add",
    "/v1/features/{f}/exclusions/remove",
    "/v1/features/{f}/auto-rollback",
    "/v1/features/{f}/check-health",
    "/v1/features/{f}/backlog",
    "/v1/alerts",
    "/v1/policies",
    "/v1/policies/revert",
    "/v1/policies/{sha}/activate",
    "/v1/{f}",
];

/// Field names of the API's bodies, so generated objects reach past "unknown field".
const KEYS: [&str; 27] = [
    "depth",
    "oldest_age_seconds",
    "processor",
    "repository_id",
    "repository_ids",
    "category",
    "job",
    "requests",
    "trigger_source",
    "time_range_days",
    "pr_numbers",
    "max_items",
    "job_type",
    "outcomes",
    "processor_type",
    "success",
    "processing_time_ms",
    "error_message",
    "percentage",
    "reason",
    "enabled",
    "name",
    "feature_name",
    "job_id",
    "max_error_rate",
    "strategy",
    "colour",
];

/// Text at the edges: valid values of the API next to NUL, control and non-ASCII text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(REPO.to_owned()),
        Just(F.to_owned()),
        Just("octo/repo".to_owned()),
        prop::sample::select(vec!["inngest", "github_actions", "scheduled", "manual", "automatic", "small", "test"])
            .prop_map(str::to_owned),
        Just("a\u{0}b".to_owned()),
        Just(String::new()),
        Just("x".repeat(5000)),
        ".{0,40}",
        "[a-z0-9_/\\-]{1,30}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..200).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        Just(Value::from(1e300)),
        Just(Value::from(-0.5)),
    ]
}

/// Arbitrary JSON, objects keyed mostly by the API's own field names.
fn json() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String)];
    leaf.prop_recursive(5, 64, 8, |inner| {
        let key = prop_oneof![4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned), 1 => ".{0,12}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body: JSON (mostly an object), arbitrary bytes, a deep nesting, or nothing.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => json().prop_map(|v| v.to_string().into_bytes()),
        2 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (1usize..5000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
        1 => Just(Vec::new()),
    ]
}

/// A path segment: the real name, a plausible one, or arbitrary percent-encoded bytes.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(F.to_owned()),
        1 => "[a-z_]{1,20}",
        1 => Just("a".repeat(64)),
        1 => "[0-9a-f]{64}",
        2 => prop::collection::vec(any::<u8>(), 0..120).prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
        1 => Just("%00".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let query = prop_oneof![
        3 => Just(String::new()),
        1 => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| format!("?limit={}", b.iter().map(|x| format!("%{x:02X}")).collect::<String>())),
        1 => "[a-z]{1,6}=[0-9a-z\\-]{0,25}".prop_map(|q| format!("?{q}")),
    ];
    (prop::sample::select(TEMPLATES.to_vec()), segment(), segment(), query)
        .prop_map(|(t, f, sha, q)| format!("{}{q}", t.replace("{f}", &f).replace("{sha}", &sha)))
}

/// A header value: a likely one or arbitrary bytes a client could send.
fn header_bytes(likely: Vec<&'static str>) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        2 => Just(None),
        6 => prop::sample::select(likely).prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => prop::collection::vec(any::<u8>(), 0..60).prop_map(Some),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    method: Method,
    path: String,
    authorization: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    actor: Option<Vec<u8>>,
    body: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    let method = prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ]);
    let authorization = header_bytes(vec![
        "Bearer robustness-token-0123456789",
        "Bearer robustness-token-0123456789",
        "Bearer robustness-token-0123456789",
        "Bearer wrong",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
    ]);
    let content_type =
        header_bytes(vec!["application/json", "application/json; charset=utf-8", "application/wasm", "text/plain"]);
    let actor = header_bytes(vec!["alice", "ci:deploy"]);
    (method, path(), authorization, content_type, actor, body()).prop_map(
        |(method, path, authorization, content_type, actor, body)| Case {
            method,
            path,
            authorization,
            content_type,
            actor,
            body,
        },
    )
}

fn request(case: &Case) -> Option<Request<Body>> {
    let mut builder = Request::builder().method(case.method.clone()).uri(&case.path);
    for (name, value) in [
        (header::AUTHORIZATION.as_str(), &case.authorization),
        (header::CONTENT_TYPE.as_str(), &case.content_type),
        ("x-rollout-actor", &case.actor),
    ] {
        if let Some(bytes) = value {
            // A value no HTTP client could put on the wire (CR, LF, NUL) is not a request.
            builder = builder.header(name, HeaderValue::from_bytes(bytes).ok()?);
        }
    }
    builder.body(Body::from(case.body.clone())).ok()
}

/// One request: no panic (a panic in a handler fails the test), no 5xx, every 4xx a JSON
/// error naming a field.
async fn check(router: &Router, case: &Case) -> Result<(), TestCaseError> {
    let Some(req) = request(case) else { return Ok(()) };
    let resp = router.clone().oneshot(req).await.expect("the router is infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.expect("the body is readable");
    let text = String::from_utf8_lossy(&bytes);
    let shown = || format!("{} {} -> {status}: {}", case.method, case.path, text.chars().take(400).collect::<String>());
    prop_assert!(!status.is_server_error(), "a 5xx with the database up: {}", shown());
    if status.is_client_error() && case.method != Method::HEAD {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("a 4xx that is not JSON ({e}): {}", shown())))?;
        let field = v["error"]["field"].as_str().unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        prop_assert!(!field.is_empty(), "a 4xx that names no field: {}", shown());
        prop_assert!(!message.is_empty(), "a 4xx without a message: {}", shown());
    }
    Ok(())
}

async fn hammer(db: TestDatabase) {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    let options = ServiceOptions {
        startup_policy: Some(StartupPolicy { source: "bundled".into(), bytes: Arc::new(BUNDLED_POLICY.to_vec()) }),
        ..ServiceOptions::default()
    };
    let service = Service::open(db.store.clone(), runtime, options).await.unwrap();
    let http = HttpOptions { token: Some(TOKEN.to_owned()), ..HttpOptions::default() };
    let router = app(AppState::new(service, http));
    let handle = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config { cases: CASES, failure_persistence: None, ..Config::default() });
        runner.run(&case(), |c| handle.block_on(check(&router, &c))).map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    db.cleanup().await;
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_on_sqlite_never_5xx_and_every_4xx_names_a_field() {
    hammer(TestDatabase::sqlite().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_requests_on_postgres_never_5xx_and_every_4xx_names_a_field() {
    let Some(base) = crate::support::pg_url("arbitrary_requests_on_postgres_never_5xx_and_every_4xx_names_a_field")
    else {
        return;
    };
    hammer(TestDatabase::postgres(&base).await.unwrap()).await;
}
