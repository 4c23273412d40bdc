//! The two edges agree: every operator operation runs through the HTTP API (on one fresh
//! database) and through the `rollout` binary (on another fresh database of the same kind),
//! in the same order, and each step must give the same result document and write the same
//! history rows — a repeated emergency stop included (nothing written, `applied: false`).
//!
//! Both edges call the one service layer, so this is what keeps a rule from living twice.
//! Runs on SQLite and Postgres (`DATABASE_URL`; SKIPPED without it, a failure under CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use rollout::http::{app, AppState, HttpOptions};
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout::service::{Service, ServiceOptions, StartupPolicy};
use rollout::store::recorder::{aggregate, Outcome};
use rollout::store::testing::TestDatabase;
use rollout::store::Store;
use rollout_policy::{Processor, RepositoryStats};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::Arc;
use tower::ServiceExt;

const F: &str = "hybrid_progressive_capture";
const TOKEN: &str = "edges-token";
const ACTOR: &str = "cli:tester";
const UUID_A: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";
const UUID_B: &str = "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";

/// One operation, as each edge spells it.
struct Step {
    name: &'static str,
    /// HTTP method, path, JSON body (`None`: raw policy bytes for an upload).
    http: (&'static str, String, Option<Value>),
    /// CLI arguments (after `--json`).
    cli: Vec<String>,
    /// Exit status the CLI gives for it.
    exit: i32,
}

fn step(name: &'static str, method: &'static str, path: &str, body: Value, cli: &[&str]) -> Step {
    Step {
        name,
        http: (method, path.to_owned(), Some(body)),
        cli: cli.iter().map(|s| (*s).to_owned()).collect(),
        exit: 0,
    }
}

fn feature(rest: &str) -> String {
    format!("/v1/features/{F}{rest}")
}

fn steps(example: &std::path::Path, sha: &str) -> Vec<Step> {
    let example = example.to_str().unwrap();
    vec![
        step(
            "percentage",
            "PUT",
            &feature("/percentage"),
            json!({"percentage": 25, "reason": "first step"}),
            &["set-percentage", "25", "--reason", "first step"],
        ),
        step(
            "same percentage",
            "PUT",
            &feature("/percentage"),
            json!({"percentage": 25, "reason": "again"}),
            &["set-percentage", "25", "--reason", "again"],
        ),
        step(
            "stop",
            "POST",
            &feature("/emergency-stop"),
            json!({"reason": "incident 42"}),
            &["emergency-stop", "--reason", "incident 42", "--yes"],
        ),
        step(
            "repeated stop",
            "POST",
            &feature("/emergency-stop"),
            json!({"reason": "still on fire"}),
            &["emergency-stop", "--reason", "still on fire", "--yes"],
        ),
        step("resume", "POST", &feature("/resume"), json!({"reason": "fixed"}), &["resume", "--reason", "fixed"]),
        step(
            "repeated resume",
            "POST",
            &feature("/resume"),
            json!({"reason": "fixed again"}),
            &["resume", "--reason", "fixed again"],
        ),
        step(
            "whitelist add",
            "POST",
            &feature("/whitelist/add"),
            json!({"repository_ids": [UUID_A, "Acme/Rocket"], "reason": "pilot"}),
            &["whitelist", "add", UUID_A, "Acme/Rocket", "--reason", "pilot"],
        ),
        step(
            "whitelist remove",
            "POST",
            &feature("/whitelist/remove"),
            json!({"repository_ids": [UUID_A]}),
            &["whitelist", "remove", UUID_A],
        ),
        step(
            "exclude add",
            "POST",
            &feature("/exclusions/add"),
            json!({"repository_ids": [UUID_B]}),
            &["exclude", "add", UUID_B],
        ),
        step(
            "exclude remove",
            "POST",
            &feature("/exclusions/remove"),
            json!({"repository_ids": [UUID_B]}),
            &["exclude", "remove", UUID_B],
        ),
        step(
            "auto-rollback off",
            "PUT",
            &feature("/auto-rollback"),
            json!({"enabled": false, "reason": "maint"}),
            &["auto-rollback", "off", "--reason", "maint"],
        ),
        step("auto-rollback on", "PUT", &feature("/auto-rollback"), json!({"enabled": true}), &["auto-rollback", "on"]),
        Step {
            exit: 1,
            ..step("check health", "POST", &feature("/check-health"), json!({}), &["check-health", "--apply"])
        },
        Step {
            name: "policy upload",
            http: ("POST", "/v1/policies".into(), None),
            cli: vec!["policy".into(), "upload".into(), example.into()],
            exit: 0,
        },
        step(
            "policy activate",
            "POST",
            &format!("/v1/policies/{sha}/activate"),
            json!({"reason": "try it"}),
            &["policy", "activate", sha, "--reason", "try it"],
        ),
        step(
            "policy revert",
            "POST",
            "/v1/policies/revert",
            json!({"reason": "back"}),
            &["policy", "revert", "--reason", "back"],
        ),
    ]
}

/// What varies between two runs of the same thing: ids, times, versions of snapshots,
/// measured durations. Everything else must be equal.
fn normalize(v: &Value) -> Value {
    const VOLATILE: &[&str] = &[
        "id",
        "seq",
        "rollout_config_id",
        "created_at",
        "updated_at",
        "state_changed_at",
        "config_version",
        "elapsed_ms",
        "uploaded_at",
        "activated_at",
        "window_start",
        "pid",
        "prepared_here",
    ];
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !VOLATILE.contains(&k.as_str())).map(|(k, v)| (k.clone(), normalize(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

/// Both databases start alike: a known repository (its id, random, is returned so the
/// comparison can name it alike).
async fn seed(store: &Store) -> String {
    store.upsert_repository("acme", "rocket", &RepositoryStats::default()).await.unwrap().to_string()
}

async fn seed_errors(store: &Store) {
    let config = store.get_config(F).await.unwrap();
    let outcomes: Vec<Outcome> = (0..20)
        .map(|i| Outcome {
            config_id: config.id,
            repository_id: uuid::Uuid::from_u128(i),
            processor: Processor::GithubActions,
            success: false,
            processing_time_ms: Some(10),
            error_message: Some("boom".into()),
            at: chrono::Utc::now(),
        })
        .collect();
    store.upsert_metrics(&aggregate(&outcomes)).await.unwrap();
}

async fn history(store: &Store) -> Vec<Value> {
    store.history(F, 1000).await.unwrap().iter().map(|h| normalize(&serde_json::to_value(h).unwrap())).collect()
}

async fn http_call(router: &Router, method: &str, path: &str, body: Option<Value>, wasm: &[u8]) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("x-rollout-actor", ACTOR);
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.header(header::CONTENT_TYPE, "application/wasm").body(Body::from(wasm.to_vec())),
    }
    .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {v}");
    v
}

fn cli_call(url: &str, args: &[String], exit: i32) -> Value {
    let out = Command::new(crate::support::rollout_bin())
        .arg("--database-url")
        .arg(url)
        .arg("--json")
        .args(args)
        .env_remove("DATABASE_URL")
        .env("USER", "tester")
        .envs(rollout::env::VARIABLES.iter().map(|v| (*v, "")))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(exit),
        "rollout {}: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("rollout {} printed no JSON ({e}): {stdout}", args.join(" ")))
}

async fn edges_agree(http_db: &TestDatabase, cli_db: &TestDatabase) {
    let example = e2e_support::example_policy("edges_agree").expect("the example policy (make examples)");
    let dir = tempfile::tempdir().unwrap();
    let example_path = dir.path().join("size_aware_policy.wasm");
    std::fs::write(&example_path, &example).unwrap();
    let sha = rollout::runtime::sha256_hex(&example);

    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    let options = ServiceOptions {
        startup_policy: Some(StartupPolicy { source: "bundled".into(), bytes: Arc::new(BUNDLED_POLICY.to_vec()) }),
        ..ServiceOptions::default()
    };
    let service = Service::open(http_db.store.clone(), runtime, options).await.unwrap();
    let router = app(AppState::new(service, HttpOptions { token: Some(TOKEN.into()), ..HttpOptions::default() }));
    let rocket = (seed(&http_db.store).await, seed(&cli_db.store).await);
    // the CLI database's id of acme/rocket reads as the HTTP database's
    let same_ids = |v: Value| -> Value { serde_json::from_str(&v.to_string().replace(&rocket.1, &rocket.0)).unwrap() };

    let mut rows = (history(&http_db.store).await.len(), history(&cli_db.store).await.len());
    for s in steps(&example_path, &sha) {
        if s.name == "check health" {
            seed_errors(&http_db.store).await;
            seed_errors(&cli_db.store).await;
        }
        let (method, path, body) = &s.http;
        let via_http = normalize(&http_call(&router, method, path, body.clone(), &example).await);
        let via_cli = same_ids(normalize(&cli_call(&cli_db.url, &s.cli, s.exit)));
        assert_eq!(via_http, via_cli, "`{}`: the edges answer differently", s.name);

        let (h, c) = (history(&http_db.store).await, history(&cli_db.store).await);
        let c: Vec<Value> = c.into_iter().map(&same_ids).collect();
        let new_h: Vec<Value> = h[..h.len() - rows.0].to_vec();
        let new_c: Vec<Value> = c[..c.len() - rows.1].to_vec();
        assert_eq!(new_h, new_c, "`{}`: the edges wrote different history", s.name);
        match s.name {
            "same percentage" | "repeated stop" | "repeated resume" => {
                assert!(new_h.is_empty(), "`{}` changed nothing and must write nothing: {new_h:?}", s.name);
                assert_eq!(via_http["applied"], false, "`{}`", s.name);
            }
            "check health" => {
                assert_eq!(via_http["rolled_back"], true, "{via_http}");
                assert_eq!(new_h.len(), 1, "one rollback row");
            }
            "policy upload" => assert!(new_h.is_empty(), "an upload is not an activation"),
            _ => assert_eq!(new_h.len(), 1, "`{}` writes one history row: {new_h:?}", s.name),
        }
        rows = (h.len(), c.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_and_the_cli_agree_on_every_operation_sqlite() {
    let (a, b) = (TestDatabase::sqlite().await.unwrap(), TestDatabase::sqlite().await.unwrap());
    edges_agree(&a, &b).await;
    a.cleanup().await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_and_the_cli_agree_on_every_operation_postgres() {
    let Some(base) = e2e_support::postgres_base("the_http_api_and_the_cli_agree_on_every_operation_postgres") else {
        return;
    };
    let (a, b) = (TestDatabase::postgres(&base).await.unwrap(), TestDatabase::postgres(&base).await.unwrap());
    edges_agree(&a, &b).await;
    a.cleanup().await;
    b.cleanup().await;
}
