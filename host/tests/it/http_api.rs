//! The HTTP API driven through `tower::ServiceExt::oneshot` (no socket), on SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use rollout::http::{app, AppState, HttpOptions};
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout::service::background::Background;
use rollout::service::{Service, ServiceOptions, StartupPolicy};
use rollout::store::testing::TestDatabase;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const TOKEN: &str = "s3cret-token";
const F: &str = "hybrid_progressive_capture";
const REPO: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

struct Fixture {
    state: Service,
    router: Router,
    db: TestDatabase,
}

async fn fixture_with(
    token: Option<&str>,
    load_policy: bool,
    tweak: impl FnOnce(&mut ServiceOptions, &mut HttpOptions),
) -> Fixture {
    let db = TestDatabase::sqlite().await.unwrap();
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    if load_policy {
        runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    }
    let mut options = ServiceOptions {
        startup_policy: Some(StartupPolicy { source: "bundled".into(), bytes: Arc::new(BUNDLED_POLICY.to_vec()) }),
        ..ServiceOptions::default()
    };
    let mut http = HttpOptions { token: token.map(str::to_owned), ..HttpOptions::default() };
    tweak(&mut options, &mut http);
    let service = Service::open(db.store.clone(), runtime, options).await.unwrap();
    Fixture { router: app(AppState::new(service.clone(), http)), state: service, db }
}

async fn fixture() -> Fixture {
    fixture_with(Some(TOKEN), true, |_, _| {}).await
}

async fn call_raw(router: &Router, req: Request<Body>) -> (StatusCode, String, Option<String>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned(), ctype)
}

async fn call(
    router: &Router,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let (status, text, _) = call_raw(router, req).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

async fn get(router: &Router, path: &str) -> (StatusCode, Value) {
    call(router, "GET", path, None, None).await
}

async fn write(router: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call(router, method, path, Some(body), Some(TOKEN)).await
}

fn path(rest: &str) -> String {
    format!("/v1/features/{F}{rest}")
}

#[tokio::test]
async fn decisions_carry_reason_rule_bucket_and_policy_version() {
    let fx = fixture().await;
    let r = &fx.router;
    let (s, v) = write(r, "PUT", &path("/percentage"), json!({"percentage": 100, "reason": "all in"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = call(r, "POST", &path("/eligibility"), Some(json!({"repository_id": REPO})), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["eligible"], true);
    assert_eq!(v["reason"], "in_percentage");
    assert_eq!(v["bucket"], 59);
    assert_eq!(v["policy_version"]["name"], "rollout-reference");
    assert_eq!(v["policy_version"]["sha256"].as_str().unwrap().len(), 64);

    let body = json!({"repository_id": REPO, "job": {"trigger_source": "scheduled"}});
    let (s, v) = call(r, "POST", &path("/route"), Some(body), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["processor"].as_str(), v["rule"].as_str()), (Some("github_actions"), Some("scheduled_bulk")));
    assert_eq!(
        (v["eligible"].as_bool(), v["reason"].as_str(), v["bucket"].as_u64()),
        (Some(true), Some("in_percentage"), Some(59))
    );
    assert_eq!(v["policy_version"]["name"], "rollout-reference");

    let batch = json!({"requests": [
        {"repository_id": REPO, "job": {"time_range_days": 0}},
        {"repository_id": REPO, "job": {"max_items": 51}},
        {"repository_id": REPO},
    ]});
    let (s, v) = call(r, "POST", &path("/route/batch"), Some(batch), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rules: Vec<&str> = v["decisions"].as_array().unwrap().iter().map(|d| d["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["recent_data", "large_batch", "default"]);
    assert!(v["decisions"][0]["policy_version"]["sha256"].is_string());

    // 0 %: outside, routed to inngest as not eligible
    write(r, "PUT", &path("/percentage"), json!({"percentage": 0})).await;
    let (_, v) = call(r, "POST", &path("/route"), Some(json!({"repository_id": REPO})), None).await;
    assert_eq!(
        (v["processor"].as_str(), v["rule"].as_str(), v["reason"].as_str()),
        (Some("inngest"), Some("not_eligible"), Some("outside_percentage"))
    );
    fx.db.cleanup().await;
}

#[tokio::test]
async fn bad_inputs_answer_4xx_naming_the_field_and_the_allowed_values() {
    let fx = fixture().await;
    let r = &fx.router;
    type Case<'a> = (&'a str, String, Value, StatusCode, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "PUT",
            path("/percentage"),
            json!({"percentage": 101}),
            StatusCode::BAD_REQUEST,
            Some("percentage"),
            "0 to 100",
        ),
        (
            "PUT",
            path("/percentage"),
            json!({"percentage": -1}),
            StatusCode::BAD_REQUEST,
            Some("percentage"),
            "0 to 100",
        ),
        (
            "PUT",
            path("/percentage"),
            json!({"percentage": "50"}),
            StatusCode::BAD_REQUEST,
            Some("percentage"),
            "integer",
        ),
        ("PUT", path("/percentage"), json!({}), StatusCode::BAD_REQUEST, Some("percentage"), "required"),
        (
            "PUT",
            path("/percentage"),
            json!({"percentage": 5, "colour": 1}),
            StatusCode::BAD_REQUEST,
            Some("colour"),
            "allowed fields are percentage, reason",
        ),
        (
            "POST",
            path("/route"),
            json!({"repository_id": REPO, "job": {"trigger_source": "cron"}}),
            StatusCode::BAD_REQUEST,
            Some("job.trigger_source"),
            "manual, scheduled, automatic",
        ),
        (
            "POST",
            path("/route"),
            json!({"repository_id": "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c1x"}),
            StatusCode::BAD_REQUEST,
            Some("repository_id"),
            "not a UUID",
        ),
        ("POST", path("/route"), json!({"job": {}}), StatusCode::BAD_REQUEST, Some("repository_id"), "required"),
        (
            "POST",
            path("/route"),
            json!({"repository_id": REPO, "job": {"time_range_days": 1.5}}),
            StatusCode::BAD_REQUEST,
            Some("job.time_range_days"),
            "integer",
        ),
        (
            "POST",
            path("/route/batch"),
            json!({"requests": []}),
            StatusCode::BAD_REQUEST,
            Some("requests"),
            "at least one",
        ),
        (
            "POST",
            path("/route/batch"),
            json!({"requests": [{"repository_id": REPO}, {"repository_id": "nope"}]}),
            StatusCode::BAD_REQUEST,
            Some("requests[1].repository_id"),
            "not a UUID",
        ),
        (
            "POST",
            path("/outcomes"),
            json!({"repository_id": REPO, "processor_type": "lambda", "success": true}),
            StatusCode::BAD_REQUEST,
            Some("processor_type"),
            "inngest, github_actions",
        ),
        (
            "POST",
            path("/outcomes"),
            json!({"repository_id": REPO, "processor_type": "inngest"}),
            StatusCode::BAD_REQUEST,
            Some("success"),
            "true or false",
        ),
        (
            "POST",
            path("/outcomes"),
            json!({"outcomes": [{"repository_id": "not an id", "processor_type": "inngest", "success": true}]}),
            StatusCode::BAD_REQUEST,
            Some("outcomes[0].repository_id"),
            "UUID or owner/name",
        ),
        ("POST", path("/emergency-stop"), json!({}), StatusCode::BAD_REQUEST, Some("reason"), "required"),
        (
            "POST",
            path("/whitelist/add"),
            json!({"repository_ids": ["zzz"]}),
            StatusCode::BAD_REQUEST,
            Some("repository_ids[0]"),
            "UUID or owner/name",
        ),
        (
            "POST",
            path("/whitelist/add"),
            json!({"repository_ids": ["octo/missing"]}),
            StatusCode::NOT_FOUND,
            Some("repository_ids"),
            "octo/missing",
        ),
        (
            "PUT",
            path("/auto-rollback"),
            json!({"enabled": "yes"}),
            StatusCode::BAD_REQUEST,
            Some("enabled"),
            "true or false",
        ),
        (
            "POST",
            "/v1/policies/xyz/activate".into(),
            json!({}),
            StatusCode::BAD_REQUEST,
            Some("sha256"),
            "64 hexadecimal",
        ),
        (
            "POST",
            format!("/v1/policies/{}/activate", "a".repeat(64)),
            json!({}),
            StatusCode::NOT_FOUND,
            Some("sha256"),
            "unknown policy",
        ),
        (
            "POST",
            "/v1/features/nope/route".into(),
            json!({"repository_id": REPO}),
            StatusCode::NOT_FOUND,
            Some("feature"),
            "unknown feature `nope`",
        ),
    ];
    for (method, p, body, status, field, needle) in cases {
        let (s, v) = write(r, method, &p, body.clone()).await;
        assert_eq!(s, status, "{method} {p} {body}: {v}");
        assert_eq!(v["error"]["field"].as_str(), field, "{method} {p} {body}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{method} {p} {body}: `{message}` lacks `{needle}`");
    }

    // not JSON, not an object, unknown query parameter, bad limit
    let req = Request::builder().method("POST").uri(path("/route")).body(Body::from("{nope")).unwrap();
    let (s, text, ctype) = call_raw(r, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(ctype.as_deref(), Some("application/json"));
    assert!(text.contains("not valid JSON"), "{text}");
    let (s, v) = call(r, "POST", &path("/route"), Some(json!([1])), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("expected a JSON object"));
    let (s, v) = get(r, &path("/history?limit=0")).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("limit")));
    let (s, v) = get(r, &path("/history?lmit=3")).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("lmit")));

    // routes and methods that do not exist answer JSON too
    let (s, v) = get(r, "/v1/nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/nothing"));
    let (s, v) = call(r, "DELETE", &path("/route"), None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"]["message"].is_string());
    fx.db.cleanup().await;
}

#[tokio::test]
async fn bodies_over_the_limit_answer_413() {
    let fx = fixture_with(Some(TOKEN), true, |_, h| h.json_body_limit = 1024).await;
    let big = json!({"requests": (0..200).map(|_| json!({"repository_id": REPO})).collect::<Vec<_>>()});
    let (s, v) = call(&fx.router, "POST", &path("/route/batch"), Some(big), None).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("1024"), "{v}");
    fx.db.cleanup().await;
}

#[tokio::test]
async fn writes_need_the_service_token_and_reads_are_public() {
    let fx = fixture().await;
    let r = &fx.router;
    let body = json!({"percentage": 10});
    let (s, v) = call(r, "PUT", &path("/percentage"), Some(body.clone()), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = call(r, "PUT", &path("/percentage"), Some(body.clone()), Some("wrong-token")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(r, "PUT", &path("/percentage"), Some(body.clone()), Some(&format!("{TOKEN}x"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let outcome = json!({"repository_id": REPO, "processor_type": "inngest", "success": true});
    assert_eq!(call(r, "POST", &path("/outcomes"), Some(outcome), None).await.0, StatusCode::UNAUTHORIZED);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/policies")
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(Body::from(BUNDLED_POLICY))
        .unwrap();
    assert_eq!(call_raw(r, req).await.0, StatusCode::UNAUTHORIZED);
    // nothing changed
    let (_, v) = get(r, &path("")).await;
    assert_eq!(v["config"]["rollout_percentage"]["value"], 0);
    // reads need no token
    for p in [path(""), path("/stats"), path("/history"), "/v1/policies".into(), "/healthz".into(), "/readyz".into()] {
        assert_eq!(get(r, &p).await.0, StatusCode::OK, "{p}");
    }
    assert_eq!(call_raw(r, Request::get("/metrics").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    assert_eq!(call_raw(r, Request::get("/").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    fx.db.cleanup().await;

    // no token configured: writes are disabled, and the answer says how to enable them
    let fx = fixture_with(None, true, |_, _| {}).await;
    let (s, v) = call(&fx.router, "PUT", &path("/percentage"), Some(body), Some("anything")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(v["error"]["message"].as_str().unwrap().contains("ROLLOUT_SERVICE_TOKEN"), "{v}");
    fx.db.cleanup().await;
}

#[tokio::test]
async fn every_operation_is_audited_once_with_its_reason() {
    let fx = fixture().await;
    let r = &fx.router;
    let other = "0b7e8a3c-1d2e-4f5a-8b9c-0d1e2f3a4b5c";
    let ops: Vec<(&str, &str, Value, &str)> = vec![
        ("PUT", "/percentage", json!({"percentage": 25, "reason": "r1"}), "updated"),
        ("POST", "/emergency-stop", json!({"reason": "r2"}), "emergency_stop"),
        ("POST", "/resume", json!({"reason": "r3"}), "resume"),
        ("POST", "/whitelist/add", json!({"repository_ids": [REPO, other], "reason": "r4"}), "whitelist_add"),
        ("POST", "/whitelist/remove", json!({"repository_ids": [other], "reason": "r5"}), "whitelist_remove"),
        ("POST", "/exclusions/add", json!({"repository_ids": [other], "reason": "r6"}), "exclude_add"),
        ("POST", "/exclusions/remove", json!({"repository_ids": [other], "reason": "r7"}), "exclude_remove"),
        ("PUT", "/auto-rollback", json!({"enabled": false, "reason": "r8"}), "updated"),
    ];
    for (method, p, body, action) in &ops {
        let (s, v) = write(r, method, &path(p), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{p}: {v}");
        assert_eq!(v["applied"], true, "{p}: {v}");
        assert_eq!(v["history"]["action"], *action, "{p}: {v}");
    }
    let (_, v) = get(r, &path("/history?limit=100")).await;
    let entries = v["entries"].as_array().unwrap();
    let ours: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["triggered_by"] == "http")
        .map(|e| (e["action"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    let expected: Vec<(&str, String)> =
        ops.iter().enumerate().rev().map(|(i, (_, _, _, a))| (*a, format!("r{}", i + 1))).collect();
    assert_eq!(ours.len(), expected.len(), "exactly one row per operation, newest first: {ours:?}");
    for ((a, r), (ea, er)) in ours.iter().zip(&expected) {
        assert_eq!((*a, *r), (*ea, er.as_str()));
    }
    let (_, v) = get(r, &path("/history?limit=2")).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(v["entries"][0]["reason"], "r8");

    // the effective configuration shows it all
    let (_, v) = get(r, &path("")).await;
    assert_eq!(v["config"]["rollout_percentage"]["value"], 25);
    assert_eq!(v["config"]["auto_rollback_enabled"]["value"], false);
    assert_eq!(v["config"]["target_repositories"], json!([REPO]));
    assert_eq!(v["config"]["excluded_repositories"], json!([]));
    // the whitelisted repository is eligible whatever its bucket
    let (_, v) = call(r, "POST", &path("/eligibility"), Some(json!({"repository_id": REPO})), None).await;
    assert_eq!(v["reason"], "targeted");
    fx.db.cleanup().await;
}

#[tokio::test]
async fn acknowledged_outcomes_are_durable() {
    let fx = fixture().await;
    let r = &fx.router;
    let (s, v) = write(
        r,
        "POST",
        &path("/outcomes"),
        json!({"repository_id": REPO, "processor_type": "inngest", "success": true, "processing_time_ms": 40}),
    )
    .await;
    assert_eq!((s, v["durable"].as_bool(), v["recorded"].as_u64()), (StatusCode::OK, Some(true), Some(1)), "{v}");
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"repository_id": REPO, "processor_type": "github_actions", "success": i % 2 == 0, "error_message": "rate limit"}))
        .collect();
    let (s, v) = write(r, "POST", &path("/outcomes"), json!({"outcomes": batch})).await;
    assert_eq!((s, v["recorded"].as_u64()), (StatusCode::OK, Some(5)), "{v}");

    let config_id = fx.state.features()[0].manager.stored_config().id;
    let buckets = fx.db.store.list_buckets(config_id).await.unwrap();
    let total: i64 = buckets.iter().map(|b| b.total_jobs).sum();
    let errors: i64 = buckets.iter().map(|b| b.error_count).sum();
    assert_eq!((total, errors), (6, 2));
    let (_, v) = get(r, &path("/stats")).await;
    assert_eq!(v["total_jobs"], 6, "{v}");
    fx.db.cleanup().await;
}

#[tokio::test]
/// The health check follows the outcome that crosses the threshold (the interval is an hour
/// here, so only the outcome can have woken it). How fast is measured by `make bench`
/// (`rollback_reaction_ms`), not asserted here: a loaded machine must not fail this test.
async fn a_rollback_follows_the_outcome_that_crosses_the_threshold() {
    let fx = fixture_with(Some(TOKEN), true, |o, _| o.health_interval = Duration::from_secs(3600)).await;
    let background = Background::spawn(&fx.state);
    let r = &fx.router;
    write(r, "PUT", &path("/percentage"), json!({"percentage": 50, "reason": "ramp"})).await;
    // 9 errors: below min_jobs_for_rollback (10), no rollback
    let errors: Vec<Value> =
        (0..9).map(|_| json!({"repository_id": REPO, "processor_type": "github_actions", "success": false, "error_message": "boom"})).collect();
    let (s, _) = write(r, "POST", &path("/outcomes"), json!({"outcomes": errors})).await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = get(r, &path("")).await;
    assert_eq!(v["config"]["rollout_percentage"]["value"], 50, "no rollback before 10 jobs");

    // the tenth crosses it
    let (s, _) = write(
        r,
        "POST",
        &path("/outcomes"),
        json!({"repository_id": REPO, "processor_type": "github_actions", "success": false}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let rolled = e2e_support::poll(Duration::from_secs(30), || async {
        let (_, v) = get(r, &path("")).await;
        (v["config"]["rollout_percentage"]["value"] == 0).then_some(())
    })
    .await;
    assert!(rolled.is_some(), "the crossing outcome did not wake a health check (no rollback within 30 s)");
    let (_, v) = get(r, &path("/history?limit=10")).await;
    let rollbacks: Vec<&Value> =
        v["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "rollback").collect();
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(rollbacks[0]["previous_percentage"], 50);
    assert_eq!(rollbacks[0]["triggered_by"], "auto_rollback");
    let (_, text, _) = call_raw(r, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(text.contains(&format!("rollout_rollbacks_total{{feature=\"{F}\"}} 1")), "{text}");
    assert!(text.contains(&format!("rollout_error_rate_percent{{feature=\"{F}\"}} 100.0\n")), "{text}");
    background.shutdown().await;
    fx.db.cleanup().await;
}

#[tokio::test]
async fn check_health_reports_and_acts() {
    let fx = fixture().await;
    let r = &fx.router;
    write(r, "PUT", &path("/percentage"), json!({"percentage": 30})).await;
    let errors: Vec<Value> =
        (0..12).map(|i| json!({"repository_id": REPO, "processor_type": "inngest", "success": i < 2})).collect();
    write(r, "POST", &path("/outcomes"), json!({"outcomes": errors})).await;
    let (s, v) = write(r, "POST", &path("/check-health"), json!({"apply": false})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["action"].as_str(), v["rolled_back"].as_bool()), (Some("rollback"), Some(false)));
    assert_eq!(get(r, &path("")).await.1["config"]["rollout_percentage"]["value"], 30);
    // the check's level is a gauge, in OpenMetrics
    let (_, text, ctype) = call_raw(r, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(ctype.as_deref(), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert!(text.contains(&format!("rollout_health_level{{feature=\"{F}\"}} 2\n")), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (_, v) = call(r, "POST", &path("/check-health"), None, Some(TOKEN)).await;
    assert_eq!(v["rolled_back"], true, "{v}");
    assert_eq!(get(r, &path("")).await.1["config"]["rollout_percentage"]["value"], 0);
    // idempotent: a second check finds nothing to do
    let (_, v) = call(r, "POST", &path("/check-health"), None, Some(TOKEN)).await;
    assert_eq!(v["rolled_back"], false, "{v}");
    fx.db.cleanup().await;
}

async fn upload(router: &Router, bytes: &[u8], ctype: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/policies")
        .header(header::CONTENT_TYPE, ctype)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(bytes.to_vec()))
        .unwrap();
    let (s, text, _) = call_raw(router, req).await;
    (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn policies_are_uploaded_validated_activated_and_reverted_with_audit() {
    let Some(example) =
        e2e_support::example_policy("policies_are_uploaded_validated_activated_and_reverted_with_audit")
    else {
        return;
    };
    let fx = fixture().await;
    let r = &fx.router;
    let (s, v) = upload(r, &example, "application/json").await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("application/wasm"));
    let (s, v) = upload(r, b"\0asm garbage", "application/wasm").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(get(r, "/v1/policies").await.1["versions"], json!([]), "a refused upload stores nothing");

    let (s, v) = upload(r, &example, "application/wasm").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let sha = v["policy"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(v["policy"]["name"], "size-aware-example");
    assert_eq!(v["policy"]["active"], false);
    let (_, v) = get(r, "/v1/policies").await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    assert_eq!(v["serving"]["name"], "rollout-reference", "upload does not activate");

    let (s, v) =
        call(r, "POST", &format!("/v1/policies/{sha}/activate"), Some(json!({"reason": "try it"})), Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["serving"]["sha256"], sha.as_str());
    let (_, v) = call(r, "POST", &path("/route"), Some(json!({"repository_id": REPO})), None).await;
    assert_eq!(v["policy_version"]["name"], "size-aware-example");

    let (s, v) = call(r, "POST", "/v1/policies/revert", None, Some(TOKEN)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["serving"]["name"], "rollout-reference");
    let (_, v) = call(r, "POST", &path("/route"), Some(json!({"repository_id": REPO})), None).await;
    assert_eq!(v["policy_version"]["name"], "rollout-reference");

    let (_, v) = get(r, &path("/history?limit=20")).await;
    let actions: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "policy_activated").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "policy_reverted").count(), 1, "{actions:?}");
    let activated = v["entries"].as_array().unwrap().iter().find(|e| e["action"] == "policy_activated").unwrap();
    assert_eq!(activated["reason"], "try it");
    assert_eq!(activated["metadata"]["new"]["policy_sha256"], sha.as_str());
    let (_, text, _) = call_raw(r, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(text.contains("rollout_policy_info{name=\"rollout-reference\""), "{text}");
    assert!(text.contains("rollout_policy_swaps_total 3"), "{text}");
    fx.db.cleanup().await;
}

#[tokio::test]
async fn not_ready_until_a_policy_is_loaded_and_decisions_fall_back() {
    let fx = fixture_with(Some(TOKEN), false, |_, _| {}).await;
    let r = &fx.router;
    let (s, v) = get(r, "/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["policy_loaded"], false);
    assert_eq!(get(r, "/healthz").await.0, StatusCode::OK);
    let (s, v) = call(r, "POST", &path("/route"), Some(json!({"repository_id": REPO})), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["processor"].as_str(), v["rule"].as_str(), v["policy_version"].is_null()),
        (Some("inngest"), Some("policy_error"), true)
    );
    let (_, text, _) = call_raw(r, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(text.contains(&format!("rollout_fallback_decisions_total{{feature=\"{F}\"}} 1")), "{text}");
    assert!(text.contains("rollout_ready 0"));
    fx.state.runtime().load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    assert_eq!(get(r, "/readyz").await.0, StatusCode::OK);
    fx.db.cleanup().await;
}

#[tokio::test]
async fn status_marks_environment_overrides_and_the_page_shows_the_configuration() {
    let overrides =
        rollout::env::EnvOverrides::from_lookup(|k| (k == "HYBRID_MAX_ERROR_RATE").then(|| "7.5".to_owned())).unwrap();
    let fx = fixture_with(Some(TOKEN), true, |o, _| o.overrides = overrides).await;
    let r = &fx.router;
    write(r, "PUT", &path("/percentage"), json!({"percentage": 35, "reason": "page test"})).await;
    let (_, v) = get(r, &path("")).await;
    assert_eq!(v["config"]["max_error_rate"], json!({"value": 7.5, "source": "environment", "database_value": 5.0}));
    assert_eq!(v["config"]["rollout_percentage"]["source"], "database");
    assert_eq!(v["policy"]["serving"]["name"], "rollout-reference");
    assert_eq!(v["database"]["reachable"], true);
    assert_eq!(v["ready"], true);
    assert!(v["config_freshness"]["age_seconds"].as_f64().unwrap() < 60.0);

    // what a server's background does at start and after changes (the page never counts)
    let counted = fx.state.count_participation(F).await.unwrap();
    let (s, html, ctype) = call_raw(r, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.unwrap().starts_with("text/html"));
    assert!(html.contains("id=\"rollout-percentage\" data-value=\"35\""), "{html}");
    assert!(html.contains(&format!("<th>{}</th>", counted.eligible_categorized_repositories)), "{html}");
    assert!(html.contains("HYBRID_MAX_ERROR_RATE"), "override shown");
    assert!(html.contains("<svg id=\"error-chart\""));
    assert!(html.contains("id=\"categories\""));
    assert!(html.contains("page test"), "recent history shown");
    assert!(html.contains("rollout-reference"));
    fx.db.cleanup().await;
}

#[tokio::test]
async fn newly_seen_repositories_are_categorised_in_the_background() {
    let fx = fixture().await;
    let background = Background::spawn(&fx.state);
    let r = &fx.router;
    let stats = rollout_policy::RepositoryStats { star_count: 0, contributor_count: 1, pr_count: 3 };
    let id = fx.db.store.upsert_repository("octo", "tiny", &stats).await.unwrap().to_string();
    let manager = &fx.state.features()[0].manager;
    let patch = rollout::store::ConfigPatch {
        rollout_strategy: Some(rollout_policy::Strategy::RepositorySize),
        ..Default::default()
    };
    let change =
        rollout::store::ChangeRequest::new(rollout::store::Change::Update(patch), Some("by size".into()), "test");
    manager.change(&change).await.unwrap();
    write(r, "PUT", &path("/percentage"), json!({"percentage": 10})).await;

    let (_, v) = call(r, "POST", &path("/route"), Some(json!({"repository_id": id})), None).await;
    assert_eq!(v["reason"], "uncategorized", "{v}");
    let categorised = e2e_support::poll(Duration::from_secs(5), || async {
        let (_, v) = call(r, "POST", &path("/eligibility"), Some(json!({"repository_id": id})), None).await;
        (v["reason"] == "category_included").then_some(())
    })
    .await;
    assert!(categorised.is_some(), "the test repository was not categorised in the background");
    let rows = fx.db.store.list_categories().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].category, rollout_policy::Category::Test);
    background.shutdown().await;
    fx.db.cleanup().await;
}

#[tokio::test]
async fn an_automatic_policy_revert_is_audited_once() {
    // A version that falls back on more than half of its first 20 calls is reverted by the
    // runtime on its own; the server's audit loop turns that into one `policy_reverted` row.
    let db = TestDatabase::sqlite().await.unwrap();
    let runtime = Runtime::new(RuntimeOptions {
        auto_revert_window: 20,
        auto_revert_threshold: 0.5,
        ..RuntimeOptions::default()
    })
    .unwrap();
    runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    let state = Service::open(db.store.clone(), runtime.clone(), ServiceOptions::default()).await.unwrap();
    let http = HttpOptions { token: Some(TOKEN.into()), ..HttpOptions::default() };
    let router = app(AppState::new(state.clone(), http));
    let background = Background::spawn(&state);
    // The hostile fixture traps whenever the feature is named `hostile:trap`.
    let trap = "hostile:trap";
    db.store.ensure_config(trap, "test").await.unwrap();
    let hostile = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm/hostile-triggers.wasm"))
        .expect("run `make fixtures`");
    runtime.load_bytes(&hostile, "test").unwrap();
    assert_eq!(runtime.policy_version().unwrap().name, "hostile-triggers");
    let mut calls = 0;
    while runtime.policy_version().unwrap().name == "hostile-triggers" && calls < 40 {
        let (s, v) =
            call(&router, "POST", &format!("/v1/features/{trap}/route"), Some(json!({"repository_id": REPO})), None)
                .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if calls == 0 {
            assert_eq!(v["rule"], "policy_error", "{v}");
        }
        calls += 1;
    }
    assert_eq!(runtime.policy_version().unwrap().name, "rollout-reference", "not reverted after {calls} calls");
    let reverted = e2e_support::poll(Duration::from_secs(30), || async {
        let (_, v) = get(&router, &path("/history")).await;
        let rows: Vec<Value> =
            v["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "policy_reverted").cloned().collect();
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("no policy_reverted row within 30 s");
    // Give a duplicate the chance to appear before asserting there is none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, v) = get(&router, &path("/history")).await;
    let rows: Vec<&Value> =
        v["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "policy_reverted").collect();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(reverted[0]["triggered_by"], "auto_revert");
    assert_eq!(reverted[0]["metadata"]["failed"]["name"], "hostile-triggers");
    assert_eq!(reverted[0]["metadata"]["reverted_to"]["name"], "rollout-reference");
    assert!(reverted[0]["reason"].as_str().unwrap().contains("reverted automatically"), "{}", reverted[0]);
    background.shutdown().await;
    db.cleanup().await;
}
