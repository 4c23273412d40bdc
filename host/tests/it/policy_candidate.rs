//! Rolling out the policy itself (issue 15): shadow evaluation, a canary share judged by the
//! guard, scheduled steps and promotion, two instances agreeing on the cohort — through the
//! real app, on both databases, with purpose-built candidates (`make fixtures`:
//! `hostile-shadow-diff` changes one routing rule, `hostile-trap-1pct` traps on 1 % of
//! repositories under a feature whose name holds `trap-1pct`).
//!
//! Every expected decision is computed independently: the native reference rules on the
//! stored configuration, the cohort by [`in_cohort`], the traps by the fixture's own
//! predicate.

use crate::runtime_support::{fixture, variant};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use rollout::engine::{ConfigSnapshot, NativePolicy, Policy};
use rollout::env::EnvOverrides;
use rollout::http::{app, AppState, HttpOptions};
use rollout::input::values::Actor;
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout::service::candidate::{in_cohort, GuardAction};
use rollout::service::{Service, ServiceOptions};
use rollout::store::testing::TestDatabase;
use rollout::store::CandidateAction;
use rollout_policy::{Job, RepoId, Repository, RouteRule};
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;

const FEATURE: &str = "hybrid_progressive_capture";
const TOKEN: &str = "candidate-token-0123456";

both_backends!(
    a_shadow_shows_exactly_the_rule_pair_the_candidate_changes,
    a_canary_that_traps_on_one_percent_is_reverted_within_one_health_check,
    a_trapping_shadow_changes_nothing_for_callers,
    an_equal_candidate_is_promoted_through_every_step,
    two_instances_agree_on_every_cohort_assignment,
    bad_candidate_requests_name_the_field,
);

async fn open(db: &TestDatabase) -> (Router, Service) {
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    let service = Service::open(db.store.clone(), runtime, ServiceOptions::default()).await.unwrap();
    let http = HttpOptions { token: Some(TOKEN.to_owned()), ..HttpOptions::default() };
    (app(AppState::new(service.clone(), http)), service)
}

async fn send(router: &Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.unwrap();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

async fn ok(router: &Router, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, v) = send(router, method, path, body).await;
    assert_eq!(status, StatusCode::OK, "{method} {path}: {v}");
    v
}

async fn upload(service: &Service, bytes: Vec<u8>) -> String {
    let actor = Actor::new("test").unwrap();
    service.upload_policy(bytes, "test", None, &actor).await.unwrap().policy.sha256
}

/// A deterministic repository id.
fn repo(n: u64) -> String {
    let x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995;
    format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", x >> 32, (x >> 16) & 0xffff, x & 0xfff, n & 0xfff, n)
}

/// The reference decision for `id` under the stored configuration of `feature`.
async fn reference(service: &Service, feature: &str, id: &str, job: &Job) -> rollout_policy::RouteDecision {
    let stored = service.store().get_config(feature).await.unwrap();
    let snapshot = ConfigSnapshot::new(EnvOverrides::default().apply_to(&stored));
    NativePolicy::new().route(&snapshot, &Repository { id: RepoId::parse(id), category: None }, job).unwrap()
}

/// Route `ids` with `job` through the batch endpoint, 1,000 at a time.
async fn route_all(router: &Router, feature: &str, ids: &[String], job: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for chunk in ids.chunks(1000) {
        let requests: Vec<Value> = chunk.iter().map(|id| json!({"repository_id": id, "job": job})).collect();
        let v = ok(router, "POST", &format!("/v1/features/{feature}/route/batch"), Some(json!({"requests": requests})))
            .await;
        out.extend(v["decisions"].as_array().unwrap().iter().cloned());
    }
    out
}

async fn shadow_status(router: &Router) -> Value {
    ok(router, "GET", "/v1/policies/shadow", None).await
}

async fn a_shadow_shows_exactly_the_rule_pair_the_candidate_changes(db: &TestDatabase) {
    let (router, service) = open(db).await;
    ok(&router, "PUT", &format!("/v1/features/{FEATURE}/percentage"), Some(json!({"percentage": 100}))).await;
    let serving = service.runtime().policy_version().unwrap().sha256;
    let candidate = upload(&service, fixture("shadow-diff")).await;
    let v =
        ok(&router, "POST", &format!("/v1/policies/{}/shadow", &candidate[..10]), Some(json!({"sample_rate": 1.0})))
            .await;
    assert_eq!(v["state"]["mode"], "shadow", "{v}");
    assert_eq!(v["state"]["sha256"], candidate.as_str());
    assert_eq!(v["history"][0]["action"], "shadow_started");

    // 5-day jobs: the candidate's one change (recent_data up to 7 days) applies; 30-day
    // jobs: it does not
    let ids: Vec<String> = (0..150).map(repo).collect();
    let changed = route_all(&router, FEATURE, &ids, &json!({"time_range_days": 5})).await;
    let same = route_all(&router, FEATURE, &ids, &json!({"time_range_days": 30})).await;
    for (id, (c, s)) in ids.iter().zip(changed.iter().zip(&same)) {
        // a shadow never serves: every answer is the serving version's, as the reference
        let job5 = Job { time_range_days: Some(5), ..Job::default() };
        let want = reference(&service, FEATURE, id, &job5).await;
        assert_eq!(c["rule"], want.rule.as_str(), "{id}: {c}");
        assert_eq!(c["processor"], want.processor.as_str(), "{id}: {c}");
        assert_eq!(c["policy_version"]["sha256"], serving.as_str());
        assert_eq!(s["policy_version"]["sha256"], serving.as_str());
    }
    assert!(changed.iter().all(|c| c["rule"] == RouteRule::HistoricalRange.as_str()), "the reference's 5-day rule");

    let mut status = Value::Null;
    for _ in 0..600 {
        status = shadow_status(&router).await;
        if status["shadow"][FEATURE]["evaluated"].as_u64() == Some(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let f = &status["shadow"][FEATURE];
    assert_eq!(f["evaluated"], 300, "{status}");
    assert_eq!(f["matched"], 150, "{status}");
    assert_eq!(f["mismatched"], 150, "{status}");
    assert_eq!(f["candidate_errors"], 0, "{status}");
    assert_eq!(f["rule_pairs"], json!({"historical_range → recent_data": 150}), "{status}");
    assert_eq!(f["reason_pairs"], json!({}), "eligibility is unchanged: {status}");
    assert_eq!(status["shadow_dropped"], 0);
    let m = &status["mismatches"].as_array().unwrap()[0];
    assert_eq!(m["served"]["rule"], "historical_range", "{m}");
    assert_eq!(m["candidate"]["rule"], "recent_data", "{m}");
    assert_eq!(m["job"]["time_range_days"], 5, "{m}");

    // the metrics name the pair too
    let metrics = send(&router, "GET", "/metrics", None).await.1;
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains(&format!("rollout_policy_shadow_total{{feature=\"{FEATURE}\",result=\"mismatch\"}} 150")),
        "{text}"
    );

    // stopping ends it on this instance; the history keeps both events
    let v = ok(&router, "POST", "/v1/policies/candidate/stop", Some(json!({"reason": "seen enough"}))).await;
    assert!(v["state"].is_null(), "{v}");
    let actions: Vec<&str> = v["history"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["stopped", "shadow_started"]);
}

async fn a_canary_that_traps_on_one_percent_is_reverted_within_one_health_check(db: &TestDatabase) {
    let (router, service) = open(db).await;
    let feature = "canary-trap-1pct";
    let (status, v) = send(&router, "POST", "/v1/features", Some(json!({"feature_name": feature}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    ok(&router, "PUT", &format!("/v1/features/{feature}/percentage"), Some(json!({"percentage": 100}))).await;
    let serving = service.runtime().policy_version().unwrap().sha256;
    let candidate = upload(&service, fixture("trap-1pct")).await;
    let body = json!({"percentage": 50, "max_fallback_rate": 0.0, "max_error_rate_delta": 0.05});
    let v = ok(&router, "POST", &format!("/v1/policies/{candidate}/canary"), Some(body)).await;
    assert_eq!(v["state"]["percentage"], 50.0, "{v}");

    let ids: Vec<String> = (0..4000).map(repo).collect();
    let decisions = route_all(&router, feature, &ids, &json!({})).await;
    let (mut cohort, mut traps) = (0, 0);
    for (id, d) in ids.iter().zip(&decisions) {
        let want = reference(&service, feature, id, &Job::default()).await;
        if in_cohort(&candidate, &RepoId::parse(id), 50.0) {
            cohort += 1;
            assert_eq!(d["policy_version"]["sha256"], candidate.as_str(), "{id} is in the cohort: {d}");
            if rollout_hostile::trap_1pct(id) {
                traps += 1;
                assert_eq!(d["rule"], "policy_error", "{id} traps in the candidate: {d}");
            } else {
                assert_eq!(d["rule"], want.rule.as_str(), "{id}: {d}");
            }
        } else {
            // the control cohort's decisions are the serving version's, untouched
            assert_eq!(d["policy_version"]["sha256"], serving.as_str(), "{id} is in the control: {d}");
            assert_eq!(d["rule"], want.rule.as_str(), "{id}: {d}");
            assert_eq!(d["processor"], want.processor.as_str(), "{id}: {d}");
        }
    }
    assert!((1800..2200).contains(&cohort), "{cohort} of 4000 in a 50 % cohort");
    assert!(traps >= 10, "only {traps} trapping ids in the cohort: the test needs some");

    // the first health check reverts it
    let action = service.check_candidate().await.unwrap();
    assert!(matches!(action, GuardAction::Reverted { .. }), "{action:?}");
    let v = shadow_status(&router).await;
    assert_eq!(v["state"]["percentage"], 0.0, "{v}");
    assert_eq!(v["history"][0]["action"], "canary_reverted", "{v}");
    assert_eq!(v["history"][0]["triggered_by"], "guard", "{v}");
    assert_eq!(v["history"][0]["metadata"]["judgement"]["metric"], "fallback_rate", "{v}");
    let events = service.store().candidate_events(10).await.unwrap();
    assert_eq!(events[0].action, CandidateAction::CanaryReverted);

    // from now on every repository is served by the serving version
    let after = route_all(&router, feature, &ids[..500], &json!({})).await;
    assert!(after.iter().all(|d| d["policy_version"]["sha256"] == serving.as_str()));
    assert!(after.iter().all(|d| d["rule"] != "policy_error"));
}

async fn a_trapping_shadow_changes_nothing_for_callers(db: &TestDatabase) {
    let (router, service) = open(db).await;
    let feature = "shadow-trap-1pct";
    let (status, v) = send(&router, "POST", "/v1/features", Some(json!({"feature_name": feature}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    ok(&router, "PUT", &format!("/v1/features/{feature}/percentage"), Some(json!({"percentage": 100}))).await;
    let serving = service.runtime().policy_version().unwrap().sha256;
    let candidate = upload(&service, fixture("trap-1pct")).await;
    ok(&router, "POST", &format!("/v1/policies/{candidate}/shadow"), Some(json!({"sample_rate": 1.0}))).await;
    let ids: Vec<String> = (0..3000).map(repo).collect();
    let traps = ids.iter().filter(|id| rollout_hostile::trap_1pct(id)).count();
    assert!(traps >= 10, "only {traps} trapping ids: the test needs some");
    let decisions = route_all(&router, feature, &ids, &json!({})).await;
    for (id, d) in ids.iter().zip(&decisions) {
        let want = reference(&service, feature, id, &Job::default()).await;
        assert_eq!(d["rule"], want.rule.as_str(), "{id}: {d}");
        assert_eq!(d["policy_version"]["sha256"], serving.as_str(), "{id}: {d}");
    }
    let mut status = Value::Null;
    for _ in 0..600 {
        status = shadow_status(&router).await;
        if status["shadow"][feature]["evaluated"].as_u64() == Some(3000) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let f = &status["shadow"][feature];
    assert_eq!(f["evaluated"], 3000, "{status}");
    assert_eq!(f["candidate_errors"].as_u64(), Some(traps as u64), "{status}");
    assert_eq!(f["matched"].as_u64(), Some(3000 - traps as u64), "{status}");
    assert_eq!(f["mismatched"], 0, "{status}");
    let m = status["mismatches"].as_array().unwrap().last().unwrap().clone();
    assert!(m["candidate"].is_null() && m["candidate_error"].as_str().unwrap().contains("trap"), "{m}");
}

async fn an_equal_candidate_is_promoted_through_every_step(db: &TestDatabase) {
    let (router, service) = open(db).await;
    ok(&router, "PUT", &format!("/v1/features/{FEATURE}/percentage"), Some(json!({"percentage": 30}))).await;
    let candidate = upload(&service, variant(BUNDLED_POLICY, "equal-candidate")).await;
    let body = json!({"percentage": 10, "steps": [25, 50, 100], "interval": 1, "max_fallback_rate": 0.0});
    ok(&router, "POST", &format!("/v1/policies/{candidate}/canary"), Some(body)).await;
    let ids: Vec<String> = (0..3000).map(repo).collect();
    let mut shares = Vec::new();
    for round in 0..12 {
        route_all(&router, FEATURE, &ids, &json!({"time_range_days": 3})).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        match service.check_candidate().await.unwrap() {
            GuardAction::Stepped { percentage } => shares.push(percentage),
            GuardAction::Promoted => {
                shares.push(-1.0);
                break;
            }
            GuardAction::Held { .. } => {}
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(shares, [25.0, 50.0, 100.0, -1.0], "the steps taken, then promoted");
    assert_eq!(service.runtime().policy_version().unwrap().sha256, candidate, "the candidate serves");
    let listed = service.list_policies().await.unwrap();
    assert!(listed.versions.iter().any(|v| v.row.sha256 == candidate && v.row.active));
    let actions: Vec<CandidateAction> =
        service.store().candidate_events(10).await.unwrap().into_iter().rev().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            CandidateAction::CanaryStarted,
            CandidateAction::CanaryStep,
            CandidateAction::CanaryStep,
            CandidateAction::CanaryStep,
            CandidateAction::Promoted
        ]
    );
    assert!(service.candidate_status().state.is_none(), "the candidate ended");
}

async fn two_instances_agree_on_every_cohort_assignment(db: &TestDatabase) {
    let (a_router, a) = open(db).await;
    let (b_router, b) = open(db).await;
    let serving = a.runtime().policy_version().unwrap().sha256;
    let candidate = upload(&a, variant(BUNDLED_POLICY, "cohort")).await;
    ok(&a_router, "POST", &format!("/v1/policies/{candidate}/canary"), Some(json!({"percentage": 10}))).await;
    b.reconcile_candidate().await;
    assert_eq!(b.candidate_status().state.unwrap().sha256, candidate);
    let ids: Vec<String> = (0..2000).map(repo).collect();
    let on_a = route_all(&a_router, FEATURE, &ids, &json!({})).await;
    let on_b = route_all(&b_router, FEATURE, &ids, &json!({})).await;
    let mut inside = 0;
    for (id, (x, y)) in ids.iter().zip(on_a.iter().zip(&on_b)) {
        let want = if in_cohort(&candidate, &RepoId::parse(id), 10.0) { &candidate } else { &serving };
        inside += usize::from(want == &candidate);
        assert_eq!(x["policy_version"]["sha256"], want.as_str(), "{id} on a");
        assert_eq!(y["policy_version"]["sha256"], want.as_str(), "{id} on b");
    }
    assert!((140..260).contains(&inside), "{inside} of 2000 in a 10 % cohort");
    // a larger share keeps every member (stickiness), on both
    ok(&b_router, "POST", &format!("/v1/policies/{candidate}/canary"), Some(json!({"percentage": 30}))).await;
    a.reconcile_candidate().await;
    let grown = route_all(&a_router, FEATURE, &ids, &json!({})).await;
    for (id, (before, after)) in ids.iter().zip(on_a.iter().zip(&grown)) {
        if before["policy_version"]["sha256"] == candidate.as_str() {
            assert_eq!(after["policy_version"]["sha256"], candidate.as_str(), "{id} left the cohort at 30 %");
        }
    }
}

async fn bad_candidate_requests_name_the_field(db: &TestDatabase) {
    let (router, service) = open(db).await;
    let serving = upload(&service, BUNDLED_POLICY.to_vec()).await;
    assert_eq!(service.runtime().policy_version().unwrap().sha256, serving);
    let candidate = upload(&service, variant(BUNDLED_POLICY, "bad-requests")).await;
    let field = |v: &Value| v["error"]["field"].as_str().unwrap_or_default().to_owned();
    let cases = [
        (format!("/v1/policies/{candidate}/shadow"), json!({"sample_rate": 1.5}), 400, "sample_rate"),
        (format!("/v1/policies/{candidate}/canary"), json!({"percentage": 150}), 400, "percentage"),
        (
            format!("/v1/policies/{candidate}/canary"),
            json!({"percentage": 5, "max_fallback_rate": -1}),
            400,
            "max_fallback_rate",
        ),
        (
            format!("/v1/policies/{candidate}/canary"),
            json!({"percentage": 5, "steps": [25, 10], "interval": "1m"}),
            400,
            "steps",
        ),
        (format!("/v1/policies/{candidate}/canary"), json!({"percentage": 5, "steps": [25]}), 400, "interval"),
        (
            format!("/v1/policies/{candidate}/canary"),
            json!({"percentage": 5, "steps": [25], "interval": "soon"}),
            400,
            "interval",
        ),
        (format!("/v1/policies/{candidate}/canary"), json!({"percentage": 5, "share": 3}), 400, "share"),
        ("/v1/policies/abcdef0123/shadow".to_owned(), json!({"sample_rate": 0.1}), 404, "sha256"),
        (format!("/v1/policies/{serving}/shadow"), json!({"sample_rate": 0.1}), 409, ""),
        (format!("/v1/policies/{candidate}/promote"), json!({}), 409, ""),
        ("/v1/policies/candidate/stop".to_owned(), json!({}), 409, ""),
    ];
    for (path, body, status, want) in cases {
        let (got, v) = send(&router, "POST", &path, Some(body.clone())).await;
        assert_eq!(got.as_u16(), status, "{path} {body}: {v}");
        if !want.is_empty() {
            assert_eq!(field(&v), want, "{path} {body}: {v}");
        }
    }
    // nothing was stored by the refusals
    assert!(service.store().candidate_events(10).await.unwrap().is_empty());
}
