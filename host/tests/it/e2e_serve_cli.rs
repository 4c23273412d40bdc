//! `rollout serve` as a process: start-up refusals, environment overrides, writes without a
//! token, and `--policy FILE --watch`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use e2e_support::{client, get, poll, send, Server};
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const REPO: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

#[tokio::test]
async fn an_invalid_environment_override_stops_the_start_with_exit_2() {
    let db = TestDatabase::sqlite().await.unwrap();
    let out = Command::new(crate::support::rollout_bin())
        .args(["--database-url", &db.url, "serve", "--listen", "127.0.0.1:0"])
        .env("HYBRID_ROLLOUT_PERCENTAGE", "150")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HYBRID_ROLLOUT_PERCENTAGE") && stderr.contains("0 to 100"), "{stderr}");

    let out = Command::new(crate::support::rollout_bin())
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/none", "serve", "--listen", "127.0.0.1:0"])
        .env_remove("HYBRID_ROLLOUT_PERCENTAGE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the database `postgres://nobody@127.0.0.1:1/none`"), "{stderr}");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_are_marked_and_written_once_and_writes_without_a_token_are_refused() {
    let db = TestDatabase::sqlite().await.unwrap();
    let server = Server::start(
        &db.url,
        &[],
        &[("ROLLOUT_SERVICE_TOKEN", e2e_support::UNSET), ("HYBRID_ROLLOUT_PERCENTAGE", "100")],
    );
    assert!(server.logs().contains("writes disabled"), "{}", server.logs());
    let c = client();
    let f = |rest: &str| server.url(&format!("/v1/features/hybrid_progressive_capture{rest}"));
    let (_, v) = get(&c, &f("")).await;
    assert_eq!(v["config"]["rollout_percentage"], json!({"value": 100, "source": "environment", "database_value": 0}));
    assert_eq!(v["config"]["env_overrides"][0]["variable"], "HYBRID_ROLLOUT_PERCENTAGE");
    let (_, v) = send(&c, Method::POST, &f("/eligibility"), Some(json!({"repository_id": REPO}))).await;
    assert_eq!(v["reason"], "in_percentage", "the override decides: {v}");
    let (_, v) = get(&c, &f("/history")).await;
    let overrides = v["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "env_override").count();
    assert_eq!(overrides, 1);
    let (s, v) = send(&c, Method::PUT, &f("/percentage"), Some(json!({"percentage": 5}))).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("set ROLLOUT_SERVICE_TOKEN"), "{v}");
    drop(server);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_policy_file_is_swapped_while_serving() {
    let Some(example) = e2e_support::example_policy("a_watched_policy_file_is_swapped_while_serving") else { return };
    let db = TestDatabase::sqlite().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.wasm");
    std::fs::write(&file, rollout::runtime::BUNDLED_POLICY).unwrap();
    let server = Server::start(&db.url, &["--policy", file.to_str().unwrap(), "--watch"], &[]);
    let c = client();
    let url = server.url("/v1/features/hybrid_progressive_capture/route");
    let (_, v) = send(&c, Method::POST, &url, Some(json!({"repository_id": REPO}))).await;
    assert_eq!(v["policy_version"]["name"], "rollout-reference");
    let tmp = dir.path().join("policy.wasm.new");
    std::fs::write(&tmp, &example).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let swapped = poll(Duration::from_secs(20), || async {
        let (_, v) = send(&c, Method::POST, &url, Some(json!({"repository_id": REPO}))).await;
        (v["policy_version"]["name"] == "size-aware-example").then_some(())
    })
    .await;
    assert!(swapped.is_some(), "the watched file was not loaded");
    // garbage in the file is refused; the last good version keeps serving
    std::fs::write(&tmp, b"not a component").unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let refused = poll(Duration::from_secs(20), || async {
        let (_, v) = get(&c, &server.url("/v1/features/hybrid_progressive_capture")).await;
        v["policy"]["runtime"]["last_error"].is_object().then_some(())
    })
    .await;
    assert!(refused.is_some(), "the refusal is not in the status");
    let (_, v) = send(&c, Method::POST, &url, Some(json!({"repository_id": REPO}))).await;
    assert_eq!(v["policy_version"]["name"], "size-aware-example");
    // Every swap is audited: the watched one as `policy_activated` by `watch`; the refusal
    // swapped nothing and adds no row.
    let (_, h) = get(&c, &server.url("/v1/features/hybrid_progressive_capture/history")).await;
    let watched: Vec<_> = h["entries"].as_array().unwrap().iter().filter(|e| e["triggered_by"] == "watch").collect();
    assert_eq!(watched.len(), 1, "{h}");
    assert_eq!(watched[0]["action"], "policy_activated");
    assert!(watched[0]["reason"].as_str().unwrap().contains("policy.wasm"), "{h}");
    assert_eq!(watched[0]["metadata"]["activated"]["name"], "size-aware-example");
    assert_eq!(watched[0]["metadata"]["previous"]["name"], "rollout-reference");
    drop(server);
    db.cleanup().await;
}
