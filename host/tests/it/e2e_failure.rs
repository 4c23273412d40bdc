//! Failure behaviour of `rollout serve`: Postgres cut off behind a TCP proxy (decisions go
//! on from the cache, the status shows staleness, outcomes are buffered and flushed on
//! reconnect, operations answer 503), and SIGTERM (stop accepting, flush, exit 0, nothing
//! acknowledged lost).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use e2e_support::{client, get, poll, postgres_addr, postgres_base, send, via, Proxy, Server};
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use rollout::store::Store;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const F: &str = "hybrid_progressive_capture";
const REPO: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

fn feature(server: &Server, rest: &str) -> String {
    server.url(&format!("/v1/features/{F}{rest}"))
}

async fn jobs_in_database(store: &Store) -> i64 {
    let config = store.get_config(F).await.unwrap();
    store.list_buckets(config.id).await.unwrap().iter().map(|b| b.total_jobs).sum()
}

fn outcome(success: bool) -> Value {
    json!({"repository_id": REPO, "processor_type": "inngest", "success": success, "processing_time_ms": 5})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_keeps_decisions_buffers_outcomes_and_refuses_operations() {
    let Some(base) = postgres_base("postgres_outage_keeps_decisions_buffers_outcomes_and_refuses_operations") else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.expect("a fresh Postgres database");
    let proxy = Proxy::start(postgres_addr(&db.url)).await;
    let server =
        Server::start(&via(&db.url, proxy.addr), &["--reload-interval", "1", "--health-interval", "3600"], &[]);
    let c = client();
    let (s, v) =
        send(&c, Method::PUT, &feature(&server, "/percentage"), Some(json!({"percentage": 100, "reason": "all"})))
            .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(&c, Method::POST, &feature(&server, "/outcomes"), Some(outcome(true))).await;
    assert_eq!((s, v["durable"].as_bool()), (200, Some(true)), "{v}");

    proxy.cut();

    // decisions continue from the cached configuration and policy
    for _ in 0..20 {
        let (s, v) = send(&c, Method::POST, &feature(&server, "/route"), Some(json!({"repository_id": REPO}))).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["eligible"].as_bool(), v["reason"].as_str()), (Some(true), Some("in_percentage")), "{v}");
    }
    // outcomes are buffered and acknowledged as not yet durable
    let mut buffered = 0;
    for i in 0..5 {
        let (s, v) = send(&c, Method::POST, &feature(&server, "/outcomes"), Some(outcome(i % 2 == 0))).await;
        assert_eq!((s, v["durable"].as_bool()), (202, Some(false)), "{v}");
        buffered += v["buffered"].as_u64().unwrap();
    }
    let batch: Vec<Value> = (0..10).map(|_| outcome(true)).collect();
    let (s, v) = send(&c, Method::POST, &feature(&server, "/outcomes"), Some(json!({"outcomes": batch}))).await;
    assert_eq!(s, 202, "{v}");
    buffered += v["buffered"].as_u64().unwrap();
    assert_eq!(buffered, 15);
    // operations answer 503 with a clear message
    let (s, v) = send(&c, Method::PUT, &feature(&server, "/percentage"), Some(json!({"percentage": 5}))).await;
    assert_eq!(s, 503, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("database is unreachable"), "{message}");
    let (s, _) = send(&c, Method::POST, &feature(&server, "/emergency-stop"), Some(json!({"reason": "x"}))).await;
    assert_eq!(s, 503);
    // the status says how stale the cache is
    let (s, v) = get(&c, &feature(&server, "")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["database"]["reachable"], false, "{v}");
    assert!(v["database"]["unreachable_since"].is_string(), "{v}");
    assert_eq!(v["config_freshness"]["stale"], true);
    assert!(v["config_freshness"]["age_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["outcomes_buffered"], 15);
    assert_eq!(v["config"]["rollout_percentage"]["value"], 100);
    let (s, _) = get(&c, &server.url("/readyz")).await;
    assert_eq!(s, 200, "still ready: decisions are served");
    let (_, page) = get(&c, &server.url("/")).await;
    assert!(page.as_str().unwrap().contains("id=\"stale\""), "the page shows the outage");
    assert_eq!(jobs_in_database(&db.store).await, 1, "nothing buffered reached the database yet");

    // back: the buffer is flushed, operations work again
    proxy.restore();
    let flushed = poll(Duration::from_secs(15), || async {
        let (_, v) = get(&c, &feature(&server, "")).await;
        (v["database"]["reachable"] == true && v["outcomes_buffered"] == 0).then_some(())
    })
    .await;
    assert!(flushed.is_some(), "the buffer was not flushed after the database came back");
    assert_eq!(jobs_in_database(&db.store).await, 16);
    let (s, v) = send(&c, Method::PUT, &feature(&server, "/percentage"), Some(json!({"percentage": 5}))).await;
    assert_eq!(s, 200, "{v}");
    drop(server);
    db.cleanup().await;
}

/// Counts of an outcome load: outcomes sent, and outcomes the server acknowledged as
/// durable (`200 {"durable": true}`).
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    acked: AtomicU64,
}

/// Eight connections posting batches of five outcomes to `url` until the server goes away.
fn outcome_load(c: &reqwest::Client, url: &str, load: &Arc<Load>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|_| {
            let (c, url, load) = (c.clone(), url.to_owned(), load.clone());
            tokio::spawn(async move {
                loop {
                    let batch: Vec<Value> = (0..5).map(|i| outcome(i != 0)).collect();
                    load.sent.fetch_add(5, Ordering::SeqCst);
                    let resp =
                        c.post(&url).bearer_auth(e2e_support::TOKEN).json(&json!({"outcomes": batch})).send().await;
                    match resp {
                        Ok(r) if r.status().as_u16() == 200 => {
                            let v: Value = r.json().await.unwrap_or_default();
                            if v["durable"] == true {
                                load.acked.fetch_add(v["recorded"].as_u64().unwrap_or(0), Ordering::SeqCst);
                            }
                        }
                        Ok(r) if r.status().as_u16() == 503 => {}
                        Ok(r) => panic!("unexpected answer {}", r.status()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

/// SIGTERM while outcomes arrive from several connections: the server stops accepting,
/// finishes what is in flight, exits 0, and every acknowledged outcome is in the database.
async fn sigterm_loses_nothing_acknowledged(database_url: &str, store: &Store) {
    let mut server = Server::start(database_url, &["--health-interval", "3600"], &[]);
    let c = client();
    let load = Arc::new(Load::default());
    let tasks = outcome_load(&c, &feature(&server, "/outcomes"), &load);
    let progressed =
        poll(Duration::from_secs(30), || async { (load.acked.load(Ordering::SeqCst) >= 200).then_some(()) }).await;
    assert!(progressed.is_some(), "no outcomes were recorded");
    server.sigterm();
    let status = server.wait(Duration::from_secs(60));
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    assert!(status.success(), "exit status {status:?}; output:\n{}", server.logs());
    assert!(server.logs().contains("rollout serve: stopped"), "{}", server.logs());
    let acked = load.acked.load(Ordering::SeqCst) as i64;
    let in_db = jobs_in_database(store).await;
    assert!(in_db >= acked, "{acked} outcomes were acknowledged but only {in_db} are in the database");
    assert!(in_db <= load.sent.load(Ordering::SeqCst) as i64);
    // the server is gone: nothing accepts connections any more
    assert!(c.get(server.url("/healthz")).send().await.is_err());
}

/// SIGKILL under outcome load on Postgres (nothing flushed, transactions cut mid-flight):
/// every outcome acknowledged as durable is in the buckets, nothing is counted twice, and
/// a server restarted on the same database serves and records again. (Outcomes answered
/// `202 {"durable": false}` — buffered during an outage — live in the process and die with
/// it; the answer says so, and there is no outage here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_outcome_load_on_postgres_loses_nothing_acknowledged() {
    let Some(base) = postgres_base("sigkill_under_outcome_load_on_postgres_loses_nothing_acknowledged") else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.expect("a fresh Postgres database");
    let c = client();
    let mut acked_total = 0;
    let mut sent_total = 0;
    // Two rounds: the second kills a server that started on what the first kill left.
    for round in 0..2 {
        let mut server = Server::start(&db.url, &["--health-interval", "3600"], &[]);
        let load = Arc::new(Load::default());
        let tasks = outcome_load(&c, &feature(&server, "/outcomes"), &load);
        let target = 300 * (round + 1);
        let progressed =
            poll(Duration::from_secs(60), || async { (load.acked.load(Ordering::SeqCst) >= target).then_some(()) })
                .await;
        assert!(progressed.is_some(), "round {round}: no outcomes were recorded\n{}", server.logs());
        server.sigkill();
        let status = server.wait(Duration::from_secs(30));
        assert!(!status.success(), "SIGKILL ends the process abnormally: {status:?}");
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(30), t).await.expect("the load stops").expect("no panic");
        }
        acked_total += load.acked.load(Ordering::SeqCst) as i64;
        sent_total += load.sent.load(Ordering::SeqCst) as i64;
        let in_db = jobs_in_database(&db.store).await;
        assert!(in_db >= acked_total, "round {round}: {acked_total} acknowledged as durable, {in_db} in the buckets");
        assert!(in_db <= sent_total, "round {round}: {in_db} in the buckets but only {sent_total} sent");
    }
    // A server on what the kills left starts, decides and records.
    let server = Server::start(&db.url, &["--health-interval", "3600"], &[]);
    let before = jobs_in_database(&db.store).await;
    let (s, v) =
        send(&c, Method::POST, &feature(&server, "/outcomes"), Some(json!({"outcomes": [outcome(true)]}))).await;
    assert_eq!((s, &v["durable"]), (200, &json!(true)), "{v}");
    assert_eq!(jobs_in_database(&db.store).await, before + 1);
    let (s, v) = send(&c, Method::POST, &feature(&server, "/route"), Some(json!({"repository_id": REPO}))).await;
    assert_eq!(s, 200, "{v}");
    drop(server);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_sqlite_exits_zero_and_loses_nothing_acknowledged() {
    let db = TestDatabase::sqlite().await.unwrap();
    sigterm_loses_nothing_acknowledged(&db.url, &db.store).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_postgres_exits_zero_and_loses_nothing_acknowledged() {
    let Some(base) = postgres_base("sigterm_on_postgres_exits_zero_and_loses_nothing_acknowledged") else { return };
    let db = TestDatabase::postgres(&base).await.expect("a fresh Postgres database");
    sigterm_loses_nothing_acknowledged(&db.url, &db.store).await;
    db.cleanup().await;
}
