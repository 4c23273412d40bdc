//! The sync endpoint (issue 13) across two `rollout serve` processes on one Postgres
//! database: a client subscribed to B's event stream receives a new snapshot when a
//! percentage change or a policy activation is made through A (NOTIFY; the periodic re-read
//! is 60 s and the waits give up after 30 s, so it cannot be what delivers them); the
//! snapshot's ETag answers 304 until something changes; the component endpoint serves the
//! bytes whose sha256 the snapshot names.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::e2e_support;

use e2e_support::{client, get, postgres_base, send, Server};
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use serde_json::{json, Value};
use std::time::Duration;

const F: &str = "hybrid_progressive_capture";

/// A server-sent-event stream, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(c: &reqwest::Client, url: &str) -> Events {
        let response = c.get(url).timeout(Duration::from_secs(3600)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let kind = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Events { response, buffer: String::new() }
    }

    /// The next `snapshot` event's data, or `None` after `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.lines().any(|l| l == "event: snapshot") {
                    let data: String = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                        .collect();
                    return Some(serde_json::from_str(&data).unwrap());
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?.unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_of_one_instance_follows_changes_made_through_another() {
    let test = "a_subscriber_of_one_instance_follows_changes_made_through_another";
    let Some(base) = postgres_base(test) else { return };
    let Some(example) = e2e_support::example_policy(test) else { return };
    let db = TestDatabase::postgres(&base).await.expect("a fresh Postgres database");
    let args = ["--reload-interval", "60", "--health-interval", "3600"];
    let a = Server::start(&db.url, &args, &[]);
    let b = Server::start(&db.url, &args, &[]);
    let c = client();

    let mut events = Events::open(&c, &b.url(&format!("/v1/sync/{F}/events"))).await;
    let first = events.next(Duration::from_secs(30)).await.expect("a snapshot at once");
    let version = first["config_version"].as_i64().unwrap();
    assert_eq!(first["feature"], F);
    assert_eq!(first["config"]["rollout_percentage"], 0, "{first}");
    let serving = first["policy"]["sha256"].as_str().unwrap().to_owned();

    // the snapshot endpoint agrees, and its ETag answers 304
    let resp = c.get(b.url(&format!("/v1/sync/{F}"))).send().await.unwrap();
    let etag = resp.headers().get("etag").unwrap().to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!((body["config_version"].as_i64(), body["etag"].as_str()), (Some(version), Some(etag.as_str())));
    let again = c.get(b.url(&format!("/v1/sync/{F}"))).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 304);

    // a percentage change through A arrives on B's stream
    let (s, v) = send(
        &c,
        Method::PUT,
        &a.url(&format!("/v1/features/{F}/percentage")),
        Some(json!({"percentage": 25, "reason": "step"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let next = events.next(Duration::from_secs(30)).await.expect("B pushed the change made through A");
    assert_eq!(next["config_version"].as_i64(), Some(version + 1), "{next}");
    assert_eq!(next["config"]["rollout_percentage"], 25);
    let changed = c.get(b.url(&format!("/v1/sync/{F}"))).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(changed.status().as_u16(), 200, "the old ETag no longer matches");

    // a policy activated through A arrives on B's stream, and B serves its bytes
    let resp = c
        .post(a.url("/v1/policies"))
        .bearer_auth(e2e_support::TOKEN)
        .header("content-type", "application/wasm")
        .body(example.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let sha = resp.json::<Value>().await.unwrap()["policy"]["sha256"].as_str().unwrap().to_owned();
    assert_ne!(sha, serving);
    let mut activated = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut activation_sent = false;
    while tokio::time::Instant::now() < deadline {
        if !activation_sent {
            let (s, v) =
                send(&c, Method::POST, &a.url(&format!("/v1/policies/{sha}/activate")), Some(json!({"reason": "try"})))
                    .await;
            assert_eq!(s, 200, "{v}");
            activation_sent = true;
        }
        match events.next(Duration::from_secs(5)).await {
            Some(s) if s["policy"]["sha256"] == sha.as_str() => {
                activated = Some(s);
                break;
            }
            _ => {}
        }
    }
    let activated = activated.expect("B pushed the policy activated through A");
    let path = activated["policy"]["component"].as_str().unwrap();
    let bytes = c.get(b.url(path)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(rollout::runtime::sha256_hex(&bytes), sha, "the component's bytes are the ones named");
    let (status, v) = get(&c, &b.url(&format!("/v1/policies/{}/component", "0".repeat(64)))).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = get(&c, &b.url("/v1/policies/xyz/component")).await;
    assert_eq!((status, v["error"]["field"].as_str()), (400, Some("sha256")), "{v}");
}
