//! Health from every indicator (issue 12): queue backlog and processing time judged by the
//! policy's `monitoring` interface (WIT contract 0.1.1), through the real HTTP app; a
//! component built against contract 0.1.0 still loads and serves beside a 0.1.1 one (judging
//! errors only); and `rollout policy test` says which contract a component speaks.

use crate::support::rollout_bin;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use rollout::engine::{NativePolicy, Policy};
use rollout::http::{app, AppState, HttpOptions};
use rollout::runtime::{Limits, Runtime, RuntimeOptions, Sandbox, BUNDLED_POLICY};
use rollout::service::{Service, ServiceOptions};
use rollout::store::testing::TestDatabase;
use serde_json::{json, Value};
use std::process::Command;
use tower::ServiceExt;

const F: &str = "hybrid_progressive_capture";
const TOKEN: &str = "signals-token";
const REPO: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

/// The reference policy as built against contract 0.1.0 (tests/fixtures/README.md).
fn old_component() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/rollout_policy-0.1.0.wasm"))
        .expect("the 0.1.0 fixture")
}

async fn open(db: &TestDatabase, component: &[u8]) -> (Router, Service) {
    let runtime = Runtime::new(RuntimeOptions { pool_size: 2, ..RuntimeOptions::default() }).unwrap();
    runtime.load_bytes(component, "test").unwrap();
    let service = Service::open(db.store.clone(), runtime, ServiceOptions::default()).await.unwrap();
    let http = HttpOptions { token: Some(TOKEN.to_owned()), ..HttpOptions::default() };
    (app(AppState::new(service.clone(), http)), service)
}

async fn call(router: &Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn path(rest: &str) -> String {
    format!("/v1/features/{F}{rest}")
}

async fn check(router: &Router) -> Value {
    let (s, v) = call(router, "POST", &path("/check-health"), Some(json!({"apply": false}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn health_events(router: &Router) -> Vec<Value> {
    let (s, v) = call(router, "GET", "/v1/alerts?limit=100", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "health").cloned().collect()
}

async fn grow_backlog(router: &Router) {
    for depth in [10, 40, 90] {
        let (s, v) =
            call(router, "PUT", &path("/backlog"), Some(json!({"processor": "github_actions", "depth": depth}))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_that_grows_for_the_window_raises_a_warning_and_one_event() {
    let db = TestDatabase::sqlite().await.unwrap();
    let (router, _service) = open(&db, BUNDLED_POLICY).await;
    let (s, v) = call(&router, "PUT", &path("/percentage"), Some(json!({"percentage": 25, "reason": "ramp"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let before = check(&router).await;
    assert_eq!(before["level"], "ok", "{before}");
    assert_eq!(before["signals_judged"], true, "{before}");

    grow_backlog(&router).await;
    let report = check(&router).await;
    assert_eq!(report["level"], "warning", "{report}");
    assert_eq!(report["action"], "none", "signals alert, only errors roll back: {report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("github_actions backlog grew across the window (10 → 90 over 3 reports)"), "{reason}");
    assert_eq!(report["backlog"]["github_actions"]["growing"], true, "{report}");
    assert_eq!(report["backlog"]["github_actions"]["depth"], 90, "{report}");

    let events = health_events(&router).await;
    assert_eq!(events.len(), 1, "one transition, one event: {events:#?}");
    assert_eq!(events[0]["level"], "warning");
    assert!(events[0]["summary"].as_str().unwrap().contains("backlog grew"), "{:#?}", events[0]);
    // the same level at the next check: no second event
    check(&router).await;
    assert_eq!(health_events(&router).await.len(), 1);
    // a shrinking report ends the growth: healthy again, one info event
    let (s, _) =
        call(&router, "PUT", &path("/backlog"), Some(json!({"processor": "github_actions", "depth": 5}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(check(&router).await["level"], "ok");
    let events = health_events(&router).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["level"], "info", "newest first: the recovery");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p95_above_twice_its_baseline_before_the_change_is_a_warning() {
    let db = TestDatabase::sqlite().await.unwrap();
    let (router, _service) = open(&db, BUNDLED_POLICY).await;
    let outcomes = |ms: u64| -> Value {
        json!({"outcomes": (0..40).map(|_| json!({"repository_id": REPO, "processor_type": "inngest", "success": true, "processing_time_ms": ms})).collect::<Vec<_>>()})
    };
    let (s, v) = call(&router, "POST", &path("/outcomes"), Some(outcomes(100))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // the change that starts a new window; what came before is the baseline
    let (s, _) = call(&router, "PUT", &path("/percentage"), Some(json!({"percentage": 50, "reason": "ramp"}))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&router, "POST", &path("/outcomes"), Some(outcomes(180))).await;
    assert_eq!(s, StatusCode::OK);
    let report = check(&router).await;
    assert_eq!(report["level"], "ok", "180 ms is under 2 × 100 ms: {report}");
    let baseline = report["baseline_p95_processing_time_ms"]["inngest"].as_f64().unwrap();
    assert!((94.0..=107.0).contains(&baseline), "100 ms within one bucket: {report}");
    let (s, _) = call(&router, "POST", &path("/outcomes"), Some(outcomes(900))).await;
    assert_eq!(s, StatusCode::OK);
    let report = check(&router).await;
    assert_eq!(report["level"], "warning", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("inngest p95") && reason.contains("2.00 × its baseline"), "{reason}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_contract_0_1_0_still_serves_beside_a_0_1_1_one() {
    let old = old_component();
    let legacy = Sandbox::compile(&old, "0.1.0 fixture", Limits::default()).unwrap();
    let current = Sandbox::compile(BUNDLED_POLICY, "bundled", Limits::default()).unwrap();
    assert_eq!((legacy.contract(), legacy.interfaces()), ("0.1.0", vec!["rules", "explain", "packed"]));
    assert_eq!((current.contract(), current.interfaces()), ("0.1.1", vec!["rules", "explain", "packed", "monitoring"]));
    assert!(!legacy.judges_signals() && current.judges_signals());
    // both decide routes as the native rules do
    let native = NativePolicy::new();
    let cfg = crate::runtime_support::config(40);
    for i in 0..300 {
        let (r, j) = (crate::runtime_support::repo(i), crate::runtime_support::job(i));
        let expected = native.route(&cfg, &r, &j).unwrap();
        assert_eq!(legacy.route(&cfg, &r, &j).unwrap(), expected, "request {i}");
        assert_eq!(current.route(&cfg, &r, &j).unwrap(), expected, "request {i}");
    }
    // the old one judges errors only; the new one the signals too
    let growing = rollout_policy::ProcessorSignals {
        processor: rollout_policy::Processor::Inngest,
        backlog_depths: vec![1, 2, 3],
        backlog_oldest_age_seconds: None,
        p95_processing_time_ms: None,
        baseline_p95_processing_time_ms: None,
    };
    let limits = rollout_policy::HealthLimits::default();
    let config = cfg.config();
    let old_health = legacy.evaluate_health_signals(config, &[], std::slice::from_ref(&growing), &limits).unwrap();
    let new_health = current.evaluate_health_signals(config, &[], std::slice::from_ref(&growing), &limits).unwrap();
    assert_eq!(old_health.level, rollout_policy::HealthLevel::Ok);
    assert_eq!(new_health.level, rollout_policy::HealthLevel::Warning);

    // and through a whole service on one database: the old serving instance reports that it
    // did not judge the signals
    let db = TestDatabase::sqlite().await.unwrap();
    let (old_router, _a) = open(&db, &old).await;
    let (new_router, _b) = open(&db, BUNDLED_POLICY).await;
    let (s, _) =
        call(&old_router, "PUT", &path("/percentage"), Some(json!({"percentage": 25, "reason": "ramp"}))).await;
    assert_eq!(s, StatusCode::OK);
    grow_backlog(&old_router).await;
    let (s, v) = call(&old_router, "POST", &path("/route"), Some(json!({"repository_id": REPO}))).await;
    assert_eq!(s, StatusCode::OK, "the old component serves: {v}");
    let old_report = check(&old_router).await;
    assert_eq!((old_report["level"].as_str(), old_report["signals_judged"].as_bool()), (Some("ok"), Some(false)));
    let new_report = check(&new_router).await;
    assert_eq!((new_report["level"].as_str(), new_report["signals_judged"].as_bool()), (Some("warning"), Some(true)));
    db.cleanup().await;
}

#[test]
fn policy_test_says_which_contract_a_component_speaks() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.wasm");
    std::fs::write(&old, old_component()).unwrap();
    let cases = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/05-categorize.json");
    for (policy, contract, interfaces) in [
        (old.to_str().unwrap().to_owned(), "0.1.0", json!(["rules", "explain", "packed"])),
        (
            concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm/rollout_policy.wasm").to_owned(),
            "0.1.1",
            json!(["rules", "explain", "packed", "monitoring"]),
        ),
    ] {
        let out = Command::new(rollout_bin())
            .args(["--json", "policy", "test", "--policy", &policy, cases])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let first: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        assert_eq!(first["contract"], contract, "{stdout}");
        assert_eq!(first["interfaces"], interfaces, "{stdout}");
        assert!(out.status.success(), "categorisation did not change between the contracts: {stdout}");
        let out = Command::new(rollout_bin()).args(["policy", "test", "--policy", &policy, cases]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.lines().next().unwrap().contains(&format!("speaks contract rollout:policy@{contract}")),
            "{stdout}"
        );
    }
}
