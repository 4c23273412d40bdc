//! Two `rollout serve` processes on one fresh Postgres database: changes through one are
//! served by the other (LISTEN/NOTIFY; the periodic re-read is set to 60 s and the polls give
//! up after 30 s, so it cannot be what delivers them), and each change has exactly one
//! history row. How fast is measured by `make bench` (`propagation_ms`), not asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use e2e_support::{client, get, poll, postgres_base, send, Server};
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use serde_json::{json, Value};
use std::time::Duration;

const F: &str = "hybrid_progressive_capture";
/// Bucket 59: in at 60 %, out at 25 %.
const REPO_59: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

fn feature(server: &Server, rest: &str) -> String {
    server.url(&format!("/v1/features/{F}{rest}"))
}

/// A repository id whose bucket is below 25 (found through the server's own answers).
async fn repo_below_25(c: &reqwest::Client, server: &Server) -> String {
    for i in 0..1000u128 {
        let id = uuid::Uuid::from_u128(0x1234_5678_0000_4000_8000_0000_0000_0000 + i).to_string();
        let (_, v) = send(c, Method::POST, &feature(server, "/eligibility"), Some(json!({"repository_id": id}))).await;
        if v["bucket"].as_u64().unwrap() < 25 {
            return id;
        }
    }
    panic!("no repository with a bucket below 25 in 1000 tries");
}

async fn percentage(c: &reqwest::Client, server: &Server) -> u64 {
    get(c, &feature(server, "")).await.1["config"]["rollout_percentage"]["value"].as_u64().unwrap()
}

fn count(entries: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    entries.iter().filter(|e| pred(e)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_serve_each_others_changes() {
    let Some(base) = postgres_base("two_instances_on_one_database_serve_each_others_changes") else { return };
    let Some(example) = e2e_support::example_policy("two_instances_on_one_database_serve_each_others_changes") else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.expect("a fresh Postgres database");
    let args = ["--reload-interval", "60", "--health-interval", "3600"];
    let a = Server::start(&db.url, &args, &[]);
    let b = Server::start(&db.url, &args, &[]);
    let c = client();
    let low = repo_below_25(&c, &b).await;
    let (_, v) = send(&c, Method::POST, &feature(&b, "/eligibility"), Some(json!({"repository_id": low}))).await;
    assert_eq!(v["eligible"], false, "0 % at start: {v}");

    // 25 % through A is served by B (how fast: `propagation_ms` in `make bench`)
    let (s, v) =
        send(&c, Method::PUT, &feature(&a, "/percentage"), Some(json!({"percentage": 25, "reason": "step 1"}))).await;
    assert_eq!(s, 200, "{v}");
    let served = poll(Duration::from_secs(30), || async {
        let (_, v) = send(&c, Method::POST, &feature(&b, "/eligibility"), Some(json!({"repository_id": low}))).await;
        (v["eligible"] == true && v["reason"] == "in_percentage").then_some(())
    })
    .await;
    assert!(served.is_some(), "B did not serve A's 25 %");
    assert_eq!(percentage(&c, &b).await, 25);
    let (_, v) = send(&c, Method::POST, &feature(&b, "/eligibility"), Some(json!({"repository_id": REPO_59}))).await;
    assert_eq!(v["eligible"], false, "bucket 59 stays out at 25 %");

    // a policy uploaded and activated through B is served by A
    let resp = c
        .post(b.url("/v1/policies"))
        .bearer_auth(e2e_support::TOKEN)
        .header("content-type", "application/wasm")
        .body(example)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let sha = resp.json::<Value>().await.unwrap()["policy"]["sha256"].as_str().unwrap().to_owned();
    // the upload is announced: A compiles and validates it beside its requests
    let prepared = poll(Duration::from_secs(30), || async {
        let (_, v) = get(&c, &a.url("/v1/policies")).await;
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["sha256"] == sha.as_str() && p["prepared_here"] == true)
            .then_some(())
    })
    .await;
    assert!(prepared.is_some(), "A did not prepare the uploaded policy");
    let (s, v) =
        send(&c, Method::POST, &b.url(&format!("/v1/policies/{sha}/activate")), Some(json!({"reason": "try"}))).await;
    assert_eq!(s, 200, "{v}");
    let served = poll(Duration::from_secs(30), || async {
        let (_, v) = send(&c, Method::POST, &feature(&a, "/route"), Some(json!({"repository_id": low}))).await;
        (v["policy_version"]["sha256"] == sha.as_str()).then_some(())
    })
    .await;
    assert!(served.is_some(), "A did not serve the policy activated through B");

    // a rollback triggered on A (its health check after the outcomes) shows on B
    let outcomes: Vec<Value> =
        (0..10).map(|_| json!({"repository_id": low, "processor_type": "github_actions", "success": false, "error_message": "network timeout"})).collect();
    let (s, v) = send(&c, Method::POST, &feature(&a, "/outcomes"), Some(json!({"outcomes": outcomes}))).await;
    assert_eq!((s, v["durable"].as_bool()), (200, Some(true)), "{v}");
    let rolled = poll(Duration::from_secs(30), || async { (percentage(&c, &b).await == 0).then_some(()) }).await;
    assert!(rolled.is_some(), "B did not show A's rollback");
    assert_eq!(percentage(&c, &a).await, 0);

    // exactly one history row each, whichever instance is asked
    tokio::time::sleep(Duration::from_millis(300)).await;
    for server in [&a, &b] {
        let (_, v) = get(&c, &feature(server, "/history?limit=100")).await;
        let entries = v["entries"].as_array().unwrap();
        assert_eq!(count(entries, |e| e["action"] == "updated" && e["new_percentage"] == 25), 1, "{entries:?}");
        assert_eq!(
            count(entries, |e| e["action"] == "policy_activated"
                && e["metadata"]["new"]["policy_sha256"] == sha.as_str()),
            1,
            "{entries:?}"
        );
        assert_eq!(count(entries, |e| e["action"] == "rollback"), 1, "{entries:?}");
        assert_eq!(count(entries, |e| e["action"] == "created"), 1, "{entries:?}");
    }
    let (_, text) = get(&c, &b.url("/metrics")).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("rollout_change_notifications_total"), "{text}");
    drop((a, b));
    db.cleanup().await;
}
