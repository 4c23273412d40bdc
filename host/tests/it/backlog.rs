//! Queue backlog reports (issue 12): the time series on both databases (order, window,
//! unknown feature, concurrent reports, pruning), `PUT /v1/features/{feature}/backlog`
//! through the real app with the `/metrics` gauges, and `rollout backlog report|show`.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use chrono::{TimeDelta, Utc};
use rollout::http::{app, AppState, HttpOptions};
use rollout::runtime::{Runtime, RuntimeOptions};
use rollout::service::{Service, ServiceOptions};
use rollout::store::testing::TestDatabase;
use rollout::store::{BacklogReport, Store, StoreError};
use rollout_policy::Processor;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use tower::ServiceExt;

const FEATURE: &str = "backlog_feature";
const SEED: &str = "hybrid_progressive_capture";
const TOKEN: &str = "backlog-token";

both_backends!(
    reports_round_trip_in_order_and_the_window_starts_at_since,
    a_report_for_an_unknown_feature_is_refused_and_stores_nothing,
    concurrent_reports_are_all_kept,
    prune_deletes_only_the_reports_made_before,
    the_cli_reports_then_shows_the_backlog,
);

async fn config_id(store: &Store, feature: &str) -> uuid::Uuid {
    store.get_config(feature).await.unwrap().id
}

/// Wait until the clock has moved past the last report (timestamps are microseconds).
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn reports_round_trip_in_order_and_the_window_starts_at_since(db: &TestDatabase) {
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    let start = Utc::now() - TimeDelta::seconds(1);
    let first = store.report_backlog(FEATURE, Processor::Inngest, 3, 1.5).await.unwrap();
    assert_eq!(
        (first.processor, first.depth, first.oldest_age_seconds),
        (Processor::Inngest, 3, 1.5),
        "the stored report is returned"
    );
    tick().await;
    let middle = Utc::now();
    tick().await;
    let second = store.report_backlog(FEATURE, Processor::GithubActions, 0, 0.0).await.unwrap();
    let third = store.report_backlog(FEATURE, Processor::Inngest, i64::MAX as u64, 86_400.25).await.unwrap();
    assert!(first.reported_at < second.reported_at && second.reported_at <= third.reported_at);

    let id = config_id(store, FEATURE).await;
    let all = store.backlog_window(id, start).await.unwrap();
    assert_eq!(all, vec![first.clone(), second.clone(), third.clone()], "every report, oldest first, as returned");
    let since_middle = store.backlog_window(id, middle).await.unwrap();
    assert_eq!(since_middle, vec![second.clone(), third.clone()], "reports before `since` are left out");
    let at_second = store.backlog_window(id, second.reported_at).await.unwrap();
    assert_eq!(at_second.first(), Some(&second), "a report made exactly at `since` is in the window");
    let later = store.backlog_window(id, Utc::now() + TimeDelta::seconds(1)).await.unwrap();
    assert!(later.is_empty());

    // another feature's reports are not in this window
    store.report_backlog(SEED, Processor::Inngest, 99, 9.0).await.unwrap();
    assert_eq!(store.backlog_window(id, start).await.unwrap().len(), 3);
    let seed = store.backlog_window(config_id(store, SEED).await, start).await.unwrap();
    assert_eq!(seed.iter().map(|r| r.depth).collect::<Vec<_>>(), [99]);

    // the report serialises with the processor's snake_case name
    let v = serde_json::to_value(&second).unwrap();
    assert_eq!(v["processor"], "github_actions");
    assert_eq!(v["depth"], 0);
}

async fn a_report_for_an_unknown_feature_is_refused_and_stores_nothing(db: &TestDatabase) {
    let store = &db.store;
    let e = store.report_backlog("no_such_feature", Processor::Inngest, 1, 0.0).await.unwrap_err();
    assert!(matches!(&e, StoreError::UnknownFeature(f) if f == "no_such_feature"), "{e:?}");
    assert!(e.to_string().contains("no_such_feature"), "{e}");
    // a negative age is refused by the database (the service refuses it first)
    store.ensure_config(FEATURE, "tester").await.unwrap();
    store.report_backlog(FEATURE, Processor::Inngest, 1, -1.0).await.unwrap_err();
    let id = config_id(store, FEATURE).await;
    assert!(store.backlog_window(id, Utc::now() - TimeDelta::hours(1)).await.unwrap().is_empty());
}

async fn concurrent_reports_are_all_kept(db: &TestDatabase) {
    db.store.ensure_config(FEATURE, "tester").await.unwrap();
    let start = Utc::now() - TimeDelta::seconds(1);
    let mut tasks = tokio::task::JoinSet::new();
    for instance in 0..4u64 {
        let store = Store::connect(&db.url).await.unwrap();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for i in 0..10u64 {
                let processor = if i % 2 == 0 { Processor::Inngest } else { Processor::GithubActions };
                mine.push(store.report_backlog(FEATURE, processor, instance * 100 + i, i as f64).await.unwrap());
            }
            store.close().await;
            mine
        });
    }
    let mut made: Vec<BacklogReport> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        made.extend(done.unwrap());
    }
    let window = db.store.backlog_window(config_id(&db.store, FEATURE).await, start).await.unwrap();
    assert_eq!(window.len(), 40, "every report is kept");
    let mut depths: Vec<u64> = window.iter().map(|r| r.depth).collect();
    depths.sort_unstable();
    let mut expected: Vec<u64> = made.iter().map(|r| r.depth).collect();
    expected.sort_unstable();
    assert_eq!(depths, expected);
    assert!(window.windows(2).all(|w| w[0].reported_at <= w[1].reported_at), "oldest first");
}

async fn prune_deletes_only_the_reports_made_before(db: &TestDatabase) {
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    let start = Utc::now() - TimeDelta::seconds(1);
    let old = store.report_backlog(FEATURE, Processor::Inngest, 5, 1.0).await.unwrap();
    store.report_backlog(SEED, Processor::GithubActions, 6, 2.0).await.unwrap();
    tick().await;
    let cut = Utc::now();
    tick().await;
    let kept = store.report_backlog(FEATURE, Processor::Inngest, 7, 3.0).await.unwrap();
    assert_eq!(store.prune_backlog(start).await.unwrap(), 0, "nothing is older than the first report");
    assert_eq!(store.prune_backlog(cut).await.unwrap(), 2, "both features' old reports go");
    let id = config_id(store, FEATURE).await;
    assert_eq!(store.backlog_window(id, start).await.unwrap(), vec![kept]);
    assert!(old.reported_at < cut);
    assert_eq!(store.prune_backlog(cut).await.unwrap(), 0, "pruning again deletes nothing");
    assert!(store.backlog_window(config_id(store, SEED).await, start).await.unwrap().is_empty());
}

/// `rollout --database-url URL ARGS`, insisting on `code`; stdout and stderr.
fn rollout(url: &str, args: &[&str], code: i32) -> (String, String) {
    let out = Command::new(crate::support::rollout_bin())
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("DATABASE_URL")
        .env("USER", "tester")
        .stdin(Stdio::null())
        .output()
        .expect("run rollout");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(out.status.code(), Some(code), "`rollout {}`:\n{stdout}{stderr}", args.join(" "));
    (stdout, stderr)
}

async fn the_cli_reports_then_shows_the_backlog(db: &TestDatabase) {
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let (out, _) = rollout(&url, &["--json", "backlog", "report", "--processor", "inngest", "--depth", "12"], 0);
        let reported: Value = serde_json::from_str(&out).unwrap();
        assert_eq!((reported["processor"].as_str(), reported["depth"].as_u64()), (Some("inngest"), Some(12)));
        assert_eq!(reported["oldest_age_seconds"].as_f64(), Some(0.0), "the age defaults to 0");
        let args =
            ["backlog", "report", "--processor", "github_actions", "--depth", "30", "--oldest-age-seconds", "90.5"];
        let (out, _) = rollout(&url, &args, 0);
        assert!(out.contains("github_actions") && out.contains("30"), "{out}");

        let (out, _) = rollout(&url, &["--json", "backlog", "show"], 0);
        let shown: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(shown["feature"], SEED);
        assert_eq!(shown["hours"], 1, "the last hour by default");
        let reports = shown["reports"].as_array().unwrap();
        let got: Vec<(&str, u64, f64)> = reports
            .iter()
            .map(|r| {
                (
                    r["processor"].as_str().unwrap(),
                    r["depth"].as_u64().unwrap(),
                    r["oldest_age_seconds"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, [("inngest", 12, 0.0), ("github_actions", 30, 90.5)], "oldest first");

        let (out, _) = rollout(&url, &["backlog", "show", "--hours", "24"], 0);
        assert!(
            out.contains("inngest (1 report in the last 24 h)") && out.contains("github_actions (1 report"),
            "{out}"
        );
        assert!(out.contains("90.5"), "{out}");

        // bad input exits 2 naming it
        let (_, err) = rollout(&url, &["backlog", "report", "--processor", "jenkins", "--depth", "1"], 2);
        assert!(err.contains("--processor") && err.contains("inngest"), "{err}");
        let (_, err) = rollout(&url, &["backlog", "report", "--processor", "inngest", "--depth", "-1"], 2);
        assert!(err.contains("--depth"), "{err}");
        let args = ["backlog", "report", "--processor", "inngest", "--depth", "1", "--oldest-age-seconds", "-3"];
        let (_, err) = rollout(&url, &args, 2);
        assert!(err.contains("oldest_age_seconds"), "{err}");
        let (_, err) =
            rollout(&url, &["--feature", "nope", "backlog", "report", "--processor", "inngest", "--depth", "1"], 2);
        assert!(err.contains("unknown feature `nope`"), "{err}");
    })
    .await
    .unwrap();
}

async fn fixture() -> (Router, Service, TestDatabase) {
    let db = TestDatabase::sqlite().await.unwrap();
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    let service = Service::open(db.store.clone(), runtime, ServiceOptions::default()).await.unwrap();
    let http = HttpOptions { token: Some(TOKEN.to_owned()), ..HttpOptions::default() };
    (app(AppState::new(service.clone(), http)), service, db)
}

async fn send(router: &Router, method: &str, path: &str, body: Option<Value>, token: bool) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    if token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn put_backlog(router: &Router, feature: &str, body: Value) -> (StatusCode, Value) {
    let (status, text) = send(router, "PUT", &format!("/v1/features/{feature}/backlog"), Some(body), true).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The sample of `name` for `processor` of the seed feature in an OpenMetrics text.
fn sample(metrics: &str, name: &str, processor: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains(&format!("processor=\"{processor}\""))
                && l.contains(&format!("feature=\"{SEED}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_owned)
}

#[tokio::test]
async fn put_backlog_stores_the_report_and_sets_the_gauges() {
    let (router, service, db) = fixture().await;
    let (s, v) =
        put_backlog(&router, SEED, json!({"processor": "github_actions", "depth": 42, "oldest_age_seconds": 12.5}))
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["processor"].as_str(), v["depth"].as_u64()), (Some("github_actions"), Some(42)));
    assert_eq!(v["oldest_age_seconds"].as_f64(), Some(12.5));
    let (s, v) = put_backlog(&router, SEED, json!({"processor": "inngest", "depth": 7})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["oldest_age_seconds"].as_f64(), Some(0.0), "the age defaults to 0");

    let id = db.store.get_config(SEED).await.unwrap().id;
    let stored = db.store.backlog_window(id, Utc::now() - TimeDelta::hours(1)).await.unwrap();
    let got: Vec<(Processor, u64)> = stored.iter().map(|r| (r.processor, r.depth)).collect();
    assert_eq!(got, [(Processor::GithubActions, 42), (Processor::Inngest, 7)]);

    let (s, metrics) = send(&router, "GET", "/metrics", None, false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(metrics.contains("rollout_queue_backlog_depth"), "{metrics}");
    assert_eq!(sample(&metrics, "rollout_queue_backlog_depth", "github_actions").as_deref(), Some("42"), "{metrics}");
    assert_eq!(sample(&metrics, "rollout_queue_backlog_depth", "inngest").as_deref(), Some("7"), "{metrics}");
    let age = sample(&metrics, "rollout_queue_backlog_oldest_age_seconds", "github_actions").unwrap();
    assert_eq!(age.parse::<f64>().unwrap(), 12.5, "{metrics}");
    drop(service);
    db.cleanup().await;
}

#[tokio::test]
async fn put_backlog_refuses_bad_input_naming_the_field() {
    let (router, _service, db) = fixture().await;
    let cases = [
        (json!({"processor": "inngest", "depth": -1}), StatusCode::BAD_REQUEST, "depth"),
        (json!({"processor": "inngest", "depth": 1.5}), StatusCode::BAD_REQUEST, "depth"),
        (json!({"processor": "jenkins", "depth": 1}), StatusCode::BAD_REQUEST, "processor"),
        (json!({"processor": "inngest"}), StatusCode::BAD_REQUEST, "depth"),
        (json!({"processor": "inngest", "depth": 1, "colour": "red"}), StatusCode::BAD_REQUEST, "colour"),
        (
            json!({"processor": "inngest", "depth": 1, "oldest_age_seconds": -2}),
            StatusCode::BAD_REQUEST,
            "oldest_age_seconds",
        ),
        (json!({"processor": "inngest", "depth": u64::MAX}), StatusCode::BAD_REQUEST, "depth"),
    ];
    for (body, status, field) in cases {
        let (s, v) = put_backlog(&router, SEED, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert_eq!(v["error"]["field"].as_str(), Some(field), "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: the message names `{field}`: {message}");
    }
    let (_, v) = put_backlog(&router, SEED, json!({"processor": "jenkins", "depth": 1})).await;
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("inngest") && message.contains("github_actions"), "the allowed values: {message}");

    let (s, v) = put_backlog(&router, "nope", json!({"processor": "inngest", "depth": 1})).await;
    assert_eq!((s, v["error"]["field"].as_str()), (StatusCode::NOT_FOUND, Some("feature")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("unknown feature `nope`"), "{v}");

    // a write: without the token it is refused and nothing is stored
    let body = json!({"processor": "inngest", "depth": 1});
    let (s, _) = send(&router, "PUT", &format!("/v1/features/{SEED}/backlog"), Some(body), false).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let id = db.store.get_config(SEED).await.unwrap().id;
    assert!(db.store.backlog_window(id, Utc::now() - TimeDelta::hours(1)).await.unwrap().is_empty());
    db.cleanup().await;
}
