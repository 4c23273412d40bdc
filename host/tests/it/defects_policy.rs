//! Defect 6: instances could serve different policies forever. A probation revert happened
//! in memory only (the database still named the failing version, so other instances and
//! restarts kept serving it); reconciliation compared the last digest *seen*, not the one
//! *served*, and an activation marked its digest seen before loading it. Now the served
//! digest is what reconciliation compares with the database's, activations and
//! reconciliations of a process take turns, and an automatic revert is recorded in the
//! database (a compare-and-set: one row, whichever instance reverts first) so every
//! instance converges.

use crate::e2e_support::{self, client, get, poll, send, Server};
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use serde_json::json;
use std::time::Duration;

const F: &str = "hybrid_progressive_capture";

async fn upload(c: &reqwest::Client, server: &Server, bytes: &[u8]) -> String {
    let resp = c
        .post(server.url("/v1/policies"))
        .bearer_auth(e2e_support::TOKEN)
        .header("content-type", "application/wasm")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["policy"]["sha256"].as_str().unwrap().to_owned()
}

async fn serving(c: &reqwest::Client, server: &Server) -> String {
    get(c, &server.url("/v1/policies")).await.1["serving"]["sha256"].as_str().unwrap_or("").to_owned()
}

async fn active(c: &reqwest::Client, server: &Server) -> String {
    let (_, v) = get(c, &server.url("/v1/policies")).await;
    v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["active"] == true)
        .map_or(String::new(), |r| r["sha256"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_activations_on_two_instances_end_with_every_instance_serving_the_active_version() {
    let Some(base) = crate::support::pg_url(
        "concurrent_activations_on_two_instances_end_with_every_instance_serving_the_active_version",
    ) else {
        return;
    };
    let Some(example) = e2e_support::example_policy("concurrent_activations") else { return };
    let db = TestDatabase::postgres(&base).await.unwrap();
    // 10 pairs, all at once: each instance's activations race each other and the other
    // instance's notifications. Each activation checks a fresh safety sample (a fraction
    // of a second in a debug build) one after another, so on a loaded 2-core machine the
    // last of them waits long. Two clean-clone CI runs failed here: first on the client's
    // 30 s timeout, then (client at 5 minutes) on the *server's* own 30 s request deadline
    // (`--request-timeout-ms`, a 408). Both now wait up to 5 minutes: this test is about
    // where the race ends, not how fast a debug build validates.
    let args = ["--reload-interval", "1", "--health-interval", "3600", "--request-timeout-ms", "300000"];
    let (a, b) = (Server::start(&db.url, &args, &[]), Server::start(&db.url, &args, &[]));
    let c = client();
    let reference = upload(&c, &a, rollout::runtime::BUNDLED_POLICY).await;
    let other = upload(&c, &a, &example).await;
    let c = reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build().expect("client");
    let mut requests = Vec::new();
    for round in 0..10 {
        let (x, y) = if round % 2 == 0 { (&reference, &other) } else { (&other, &reference) };
        for (server, sha) in [(&a, x), (&b, y)] {
            let (c, url) = (c.clone(), server.url(&format!("/v1/policies/{sha}/activate")));
            requests.push(tokio::spawn(async move { send(&c, Method::POST, &url, Some(json!({}))).await }));
        }
    }
    for (i, r) in requests.into_iter().enumerate() {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, 200, "activation {i}: {body}");
    }
    let agreed = poll(Duration::from_secs(30), || async {
        let want = active(&c, &a).await;
        let (sa, sb) = (serving(&c, &a).await, serving(&c, &b).await);
        (sa == want && sb == want).then_some(want)
    })
    .await;
    assert!(agreed.is_some(), "an instance serves another version than the active one");
    drop((a, b));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_automatic_revert_is_recorded_so_every_instance_converges() {
    let Some(base) = crate::support::pg_url("an_automatic_revert_is_recorded_so_every_instance_converges") else {
        return;
    };
    let hostile = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm/hostile-triggers.wasm"))
        .expect("run `make fixtures`");
    let db = TestDatabase::postgres(&base).await.unwrap();
    db.store.ensure_config("hostile:trap", "test").await.unwrap();
    let args = ["--reload-interval", "1", "--health-interval", "3600"];
    let (a, b) = (Server::start(&db.url, &args, &[]), Server::start(&db.url, &args, &[]));
    let c = client();
    let reference = upload(&c, &a, rollout::runtime::BUNDLED_POLICY).await;
    let (s, v) = send(&c, Method::POST, &a.url(&format!("/v1/policies/{reference}/activate")), Some(json!({}))).await;
    assert_eq!(s, 200, "{v}");
    let failing = upload(&c, &a, &hostile).await;
    let (s, v) = send(&c, Method::POST, &a.url(&format!("/v1/policies/{failing}/activate")), Some(json!({}))).await;
    assert_eq!(s, 200, "{v}");
    let both = poll(Duration::from_secs(30), || async {
        (serving(&c, &a).await == failing && serving(&c, &b).await == failing).then_some(())
    })
    .await;
    assert!(both.is_some(), "both instances serve the new version");
    // A's calls keep failing: its probation reverts it
    let trap = a.url("/v1/features/hostile:trap/route");
    for _ in 0..1500 {
        let (s, _) = send(&c, Method::POST, &trap, Some(json!({"repository_id": e2e_support::REPO}))).await;
        assert_eq!(s, 200);
        if serving(&c, &a).await == reference {
            break;
        }
    }
    assert_eq!(serving(&c, &a).await, reference, "A's probation reverted the failing version");
    // the database records it, once, and B (which never failed) follows
    let converged = poll(Duration::from_secs(30), || async {
        (active(&c, &a).await == reference && serving(&c, &b).await == reference).then_some(())
    })
    .await;
    assert!(converged.is_some(), "B still serves the version A reverted (the database still names it)");
    let (_, v) = get(&c, &a.url(&format!("/v1/features/{F}/history"))).await;
    let reverted = v["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "policy_reverted").count();
    assert_eq!(reverted, 1, "{v}");
    drop((a, b));
    db.cleanup().await;
}

/// Reconciliation compares what this process *serves* with the database's active version.
/// Before, it compared the digest it last *saw*: once a process served something else than
/// the active version it had seen (a load that lost a race with another activation, a
/// revert in memory), no re-read ever corrected it.
async fn reconciliation_restores_the_active_version_on(db: TestDatabase) {
    use rollout::input::values::{Actor, Sha256};
    use rollout::runtime::{sha256_hex, Runtime, RuntimeOptions, BUNDLED_POLICY};
    use rollout::service::{Service, ServiceOptions};
    let Some(example) = e2e_support::example_policy("reconciliation_restores_the_active_version") else { return };
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    let service = Service::open(db.store.clone(), runtime.clone(), ServiceOptions::default()).await.unwrap();
    let actor = Actor::new("test").unwrap();
    let uploaded = service.upload_policy(example.clone(), "test", None, &actor).await.unwrap();
    let sha = Sha256::new(&uploaded.policy.sha256).unwrap();
    service.activate_policy(&sha, None, &actor).await.unwrap();
    assert_eq!(runtime.policy_version().unwrap().sha256, sha.as_str());
    // this process ends up serving another version than the active one
    runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    assert_eq!(runtime.policy_version().unwrap().sha256, sha256_hex(BUNDLED_POLICY));
    service.reconcile_policy().await;
    assert_eq!(
        runtime.policy_version().unwrap().sha256,
        sha.as_str(),
        "the re-read left this process serving another version than the database's active one"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn reconciliation_restores_the_active_version_sqlite() {
    reconciliation_restores_the_active_version_on(TestDatabase::sqlite().await.unwrap()).await;
}

#[tokio::test]
async fn reconciliation_restores_the_active_version_postgres() {
    let Some(base) = crate::support::pg_url("reconciliation_restores_the_active_version_postgres") else { return };
    reconciliation_restores_the_active_version_on(TestDatabase::postgres(&base).await.unwrap()).await;
}
