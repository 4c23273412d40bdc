//! Reproductions of the defects of issue 10 ("faults, races and hostile input"), one test
//! (or a few) per defect, named after it. Each was written before its fix and failed on the
//! build before it (`ROLLOUT_BIN=/path/to/old/rollout` runs the process-level ones against
//! another build); the note of the change that fixed it says how it failed.

use crate::e2e_support::{self, client, send, Server, TOKEN, UNSET};
use crate::support::rollout_bin;
use reqwest::Method;
use rollout::store::testing::TestDatabase;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const F: &str = "hybrid_progressive_capture";

/// Run the binary to completion (at most `within`; a process still running then is killed
/// and reported as `None`).
fn run_to_exit(args: &[&str], envs: &[(&str, &str)], within: Duration) -> Option<(i32, String)> {
    let mut cmd = Command::new(rollout_bin());
    cmd.args(args).env_remove("DATABASE_URL").env("USER", "tester").stdin(Stdio::null());
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    for v in rollout::env::VARIABLES {
        cmd.env_remove(v);
    }
    for (k, v) in envs {
        if *v == UNSET {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let mut child = cmd.spawn().expect("spawn rollout");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            return Some((status.code().unwrap_or(-1), text));
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Defect 13: the token was compared untrimmed against a trimmed header, so a token read
/// from a file (ending in `\n`) locked out every write, the emergency stop included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_file_ending_in_a_newline_still_authorises_writes() {
    let db = TestDatabase::sqlite().await.unwrap();
    let with_newline = format!("{TOKEN}\n");
    let server = Server::start(&db.url, &[], &[("ROLLOUT_SERVICE_TOKEN", &with_newline)]);
    let url = server.url(&format!("/v1/features/{F}/emergency-stop"));
    let (status, v) = send(&client(), Method::POST, &url, Some(json!({"reason": "incident"}))).await;
    assert_eq!(status, 200, "the operator's stop was refused: {v}");
    drop(server);
    db.cleanup().await;
}

/// Defect 13: an empty or too short token must stop the start, telling the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_short_service_token_stops_the_start_with_exit_2() {
    let db = TestDatabase::sqlite().await.unwrap();
    let args = ["--database-url", db.url.as_str(), "serve", "--listen", "127.0.0.1:0"];
    for (token, needle) in [("", "empty"), ("   \n", "empty"), ("short", "at least 16")] {
        let done = run_to_exit(&args, &[("ROLLOUT_SERVICE_TOKEN", token)], Duration::from_secs(60));
        let (code, text) = done.unwrap_or_else(|| panic!("token {token:?}: the server started instead of refusing"));
        assert_eq!(code, 2, "token {token:?}: {text}");
        assert!(text.contains("ROLLOUT_SERVICE_TOKEN") && text.contains(needle), "token {token:?}: {text}");
    }
    db.cleanup().await;
}

/// Defect 14: `rollout --feature <typo> emergency-stop --yes` exited 0, stopped a new
/// feature named by the typo, and left the real rollout running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_feature_is_refused_naming_the_known_features_and_creates_nothing() {
    let db = TestDatabase::sqlite().await.unwrap();
    let url = db.url.as_str();
    let typo = "hybrid_progresive_capture";
    let within = Duration::from_secs(120);
    for args in [
        vec!["--feature", typo, "emergency-stop", "--reason", "incident", "--yes"],
        vec!["--feature", typo, "set-percentage", "10", "--reason", "ramp"],
        vec!["--feature", typo, "status"],
        vec!["--feature", typo, "history"],
    ] {
        let mut all = vec!["--database-url", url];
        all.extend(&args);
        let (code, text) = run_to_exit(&all, &[], within).expect("the command finishes");
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(&format!("unknown feature `{typo}`")), "{args:?}: {text}");
        assert!(text.contains(&format!("`{F}`")), "the known features are named: {text}");
        assert!(text.contains("rollout feature create"), "how to create one is said: {text}");
    }
    let configs = db.store.list_configs().await.unwrap();
    assert_eq!(configs.len(), 1, "nothing was created: {configs:?}");
    assert!(!configs[0].config.emergency_stop);

    // creating is explicit, once
    let (code, text) = run_to_exit(&["--database-url", url, "feature", "create", "checkout"], &[], within).unwrap();
    assert_eq!(code, 0, "{text}");
    let (code, text) = run_to_exit(&["--database-url", url, "feature", "create", "checkout"], &[], within).unwrap();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("exists already"), "{text}");
    assert_eq!(db.store.list_configs().await.unwrap().len(), 2);
    db.cleanup().await;
}

/// Defect 14, over HTTP: decisions and writes on an unknown feature are 404s naming the
/// known features; `POST /v1/features` creates one (409 when it exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_are_created_explicitly_over_http() {
    let db = TestDatabase::sqlite().await.unwrap();
    let server = Server::start(&db.url, &[], &[]);
    let c = client();
    let (s, v) = send(
        &c,
        Method::POST,
        &server.url("/v1/features/checkout/route"),
        Some(json!({"repository_id": e2e_support::REPO})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["error"]["field"], "feature");
    assert!(v["error"]["message"].as_str().unwrap().contains(&format!("`{F}`")), "{v}");
    let (s, v) = send(&c, Method::POST, &server.url("/v1/features"), Some(json!({"feature_name": "checkout"}))).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["config"]["rollout_percentage"]["value"], 0);
    let (s, _) = send(&c, Method::POST, &server.url("/v1/features"), Some(json!({"feature_name": "checkout"}))).await;
    assert_eq!(s, 409);
    let (s, v) = send(
        &c,
        Method::POST,
        &server.url("/v1/features/checkout/route"),
        Some(json!({"repository_id": e2e_support::REPO})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["reason"], "outside_percentage");
    drop(server);
    db.cleanup().await;
}

/// Defect 4: buffered outcomes were stamped with the time they were flushed, so errors
/// buffered during an outage landed in the window of a ramp made after it and rolled that
/// ramp back. Instance A loses its database, buffers 20 errors; meanwhile instance B rolls
/// the rollout back and ramps to 10 %; A's database returns and it flushes: the errors
/// belong to the time before the ramp, so the 10 % stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_buffered_in_an_outage_keep_the_time_they_were_accepted() {
    use crate::e2e_support::{get, poll, postgres_addr, via, Proxy};
    let Some(base) = crate::support::pg_url("outcomes_buffered_in_an_outage_keep_the_time_they_were_accepted") else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.unwrap();
    let proxy = Proxy::start(postgres_addr(&db.url)).await;
    let fast = ["--reload-interval", "1", "--health-interval", "1"];
    let a = Server::start(&via(&db.url, proxy.addr), &fast, &[]);
    let b = Server::start(&db.url, &fast, &[]);
    let c = client();
    let f = |s: &Server, rest: &str| s.url(&format!("/v1/features/{F}{rest}"));
    let (s, v) = send(&c, Method::PUT, &f(&b, "/percentage"), Some(json!({"percentage": 50, "reason": "ramp"}))).await;
    assert_eq!(s, 200, "{v}");

    proxy.cut();
    let error = json!({"repository_id": e2e_support::REPO, "processor_type": "github_actions", "success": false,
        "error_message": "boom", "processing_time_ms": 5});
    for _ in 0..20 {
        let (s, v) = send(&c, Method::POST, &f(&a, "/outcomes"), Some(error.clone())).await;
        assert_eq!((s, v["durable"].as_bool()), (202, Some(false)), "{v}");
    }
    // the operator rolls back and ramps again, on the instance that can reach the database
    tokio::time::sleep(Duration::from_millis(50)).await;
    for (pct, why) in [(0, "errors"), (10, "try again")] {
        let body = json!({"percentage": pct, "reason": why});
        let (s, v) = send(&c, Method::PUT, &f(&b, "/percentage"), Some(body)).await;
        assert_eq!(s, 200, "{v}");
    }
    proxy.restore();
    let flushed = poll(Duration::from_secs(60), || async {
        let (_, v) = get(&c, &f(&a, "")).await;
        (v["outcomes_buffered"] == 0 && v["database"]["reachable"] == true).then_some(())
    })
    .await;
    assert!(flushed.is_some(), "A never flushed its buffer");
    // several health checks on both instances have run (every second); force one more each
    for s in [&a, &b] {
        let (status, v) = send(&c, Method::POST, &f(s, "/check-health"), Some(json!({}))).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["rolled_back"], false, "the ramp was judged on errors from before it: {v}");
        assert_eq!(v["total_jobs"], 0, "the errors belong before the ramp's window: {v}");
    }
    let (_, v) = get(&c, &f(&b, "")).await;
    assert_eq!(v["config"]["rollout_percentage"]["value"], 10, "{v}");
    drop((a, b));
    db.cleanup().await;
}

/// Defect 11: the outage buffer was bounded by count only (100,000 outcomes with
/// 10,000-character messages is about 4 GB per feature). Now a byte bound answers 503 with
/// `Retry-After` once reached, counts what it refused, and messages are cut to what the
/// store keeps when they are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outage_buffer_is_bounded_in_bytes_and_answers_503_beyond_it() {
    use crate::e2e_support::{postgres_addr, via, Proxy};
    let Some(base) = crate::support::pg_url("the_outage_buffer_is_bounded_in_bytes_and_answers_503_beyond_it") else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.unwrap();
    let proxy = Proxy::start(postgres_addr(&db.url)).await;
    let server = Server::start(&via(&db.url, proxy.addr), &["--outcome-buffer-bytes", "1048576"], &[]);
    let c = client();
    let url = server.url(&format!("/v1/features/{F}/outcomes"));
    proxy.cut();
    let long = "x".repeat(10_000);
    let outcome = json!({"repository_id": e2e_support::REPO, "processor_type": "inngest", "success": false,
        "error_message": long});
    let mut buffered = 0u64;
    let mut refused = None;
    for i in 0..5_000 {
        let resp = c.post(&url).bearer_auth(TOKEN).json(&outcome).send().await.unwrap();
        let status = resp.status().as_u16();
        if status == 503 {
            assert!(resp.headers().get("retry-after").is_some(), "503 without Retry-After");
            let v: serde_json::Value = resp.json().await.unwrap();
            refused = Some((i, v));
            break;
        }
        assert_eq!(status, 202);
        buffered += 1;
    }
    let (at, v) = refused.expect("5,000 outcomes of 10,000 characters fit in a 1 MiB buffer: no byte bound");
    assert!(v["error"]["message"].as_str().unwrap().contains("buffer is full"), "{v}");
    // messages were cut to the 1,000 characters the store keeps, so ~1 KiB each fits
    assert!(buffered > 500 && buffered < 1100, "{buffered} outcomes buffered before the refusal at {at}");
    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("rollout_outcomes_refused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    proxy.restore();
    drop(server);
    db.cleanup().await;
}

/// Defect 12: the server had no request deadline, so a client trickling its body held a
/// connection — and a graceful shutdown (SIGTERM waits for requests in flight) — forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_ends_at_the_deadline_and_cannot_hold_a_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = TestDatabase::sqlite().await.unwrap();
    let mut server = Server::start(&db.url, &["--request-timeout-ms", "1500"], &[]);
    let addr = server.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/features/{F}/route HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"repo"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // the body never comes; the answer does, at the deadline
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut answer)).await;
    let n = read.expect("no answer within 60 s: the trickling request is held forever").unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // a second trickler, then SIGTERM: the server still stops
    let mut second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    second.write_all(head.as_bytes()).await.unwrap();
    server.sigterm();
    let status = server.wait(Duration::from_secs(60));
    assert!(status.success(), "the server did not stop cleanly: {}", server.logs());
    db.cleanup().await;
}

/// Defect 17: input the database refuses (a NUL byte in text, a feature name longer than
/// its column) was a 500 / exit 3; it is refused before it reaches the database, as a 400 /
/// exit 2 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_the_database_would_refuse_is_a_400_or_exit_2_naming_the_field() {
    let Some(base) = crate::support::pg_url("input_the_database_would_refuse_is_a_400_or_exit_2_naming_the_field")
    else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.unwrap();
    let long = "f".repeat(101);
    let (code, text) = run_to_exit(
        &["--database-url", &db.url, "--feature", &long, "set-percentage", "5", "--reason", "ramp"],
        &[],
        Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("feature") && text.contains("1 to 100 characters"), "{text}");

    let server = Server::start(&db.url, &[], &[]);
    let c = client();
    let f = |rest: &str| server.url(&format!("/v1/features/{F}{rest}"));
    let cases = [
        (Method::PUT, f("/percentage"), json!({"percentage": 5, "reason": "a\u{0}b"}), "reason"),
        (Method::POST, f("/emergency-stop"), json!({"reason": "\u{0}"}), "reason"),
        (
            Method::POST,
            f("/outcomes"),
            json!({"repository_id": e2e_support::REPO, "processor_type": "inngest", "success": false, "error_message": "nul\u{0}"}),
            "error_message",
        ),
        (
            Method::POST,
            server.url(&format!("/v1/features/{long}/route")),
            json!({"repository_id": e2e_support::REPO}),
            "feature",
        ),
    ];
    for (method, url, body, field) in cases {
        let (s, v) = send(&c, method.clone(), &url, Some(body.clone())).await;
        assert_eq!(s, 400, "{method} {url} {body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    // nothing was written, and the database still takes good input
    let (s, v) = send(&c, Method::PUT, &f("/percentage"), Some(json!({"percentage": 5, "reason": "ok"}))).await;
    assert_eq!(s, 200, "{v}");
    drop(server);
    db.cleanup().await;
}

/// Defect 9: `/stats` and the status page passed every repository to the policy in one
/// call; at a million repositories that call broke its time and memory bounds, every
/// decision in it fell back (eligible 0), a trap was counted, and page refreshes could
/// revert a good new policy during its probation. Now participation is counted in chunks,
/// in the background, cached; reads never scan and never count against probation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_over_a_million_repositories_are_counted_in_chunks_off_the_request_path() {
    use crate::e2e_support::{get, poll};
    use rollout::store::Store;
    let Some(base) =
        crate::support::pg_url("stats_over_a_million_repositories_are_counted_in_chunks_off_the_request_path")
    else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.unwrap();
    let Store::Postgres(pool) = &db.store else { unreachable!("a postgres test database") };
    // a bulk load: without the store's statement timeout
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await.unwrap();
    sqlx::query(
        "INSERT INTO repository_categories (repository_id, category, priority_level, is_test_repository, star_count, \
         contributor_count, pr_count, monthly_activity_score) \
         SELECT gen_random_uuid(), (ARRAY['test','small','medium','large','enterprise'])[1 + i % 5], 50, i % 5 = 0, \
         1, 1, 1, 1 FROM generate_series(1, 1000000) AS i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    // read back in the same unbounded transaction (a million rows can outlast the store's
    // statement timeout on a loaded machine)
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT repository_id FROM repository_categories").fetch_all(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ids.len(), 1_000_000);
    let expected =
        ids.iter().filter(|u| rollout_policy::bucket(F, &rollout_policy::RepoId::Uuid(u.as_u128())) < 30).count()
            as u64;

    let server = Server::start(&db.url, &["--reload-interval", "1"], &[]);
    let c = client();
    let f = |rest: &str| server.url(&format!("/v1/features/{F}{rest}"));
    let (s, v) = send(&c, Method::PUT, &f("/percentage"), Some(json!({"percentage": 30, "reason": "ramp"}))).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = get(&c, &f("/stats")).await;
    assert_eq!(s, 200, "{v}");
    let counted = poll(Duration::from_secs(300), || async {
        let (_, v) = get(&c, &f("/stats")).await;
        // (a build without the field counted synchronously: take its answer as it is)
        let done = v["participation_current"] == true
            || (v["participation_current"].is_null() && v["categorized_repositories"] == 1_000_000);
        done.then_some(v)
    })
    .await
    .expect("participation was never counted");
    assert_eq!(counted["categorized_repositories"], 1_000_000);
    assert_eq!(counted["eligible_repositories"], expected, "{counted}");
    // the page reads the same count
    let page = c.get(server.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("<th>{expected}</th>")), "the page shows the eligible count");
    // no decision fell back, no trap: every chunk stayed inside the call's bounds
    let (_, v) = get(&c, &f("")).await;
    let counts = &v["policy"]["runtime"]["active"];
    assert_eq!((counts["traps"].as_u64(), counts["fallbacks"].as_u64()), (Some(0), Some(0)), "{v}");
    drop(server);
    db.cleanup().await;
}

/// Defect 2: one buffered outcome the database refuses (here: a trigger refusing one
/// repository, as a NUL byte or an out-of-range number used to) went back to the head of
/// the outage buffer on every flush, so nothing behind it was ever written, and live
/// callers sharing its group commit got 500s. Now it is isolated (the batch split until
/// the outcome at fault is alone), set aside as a dead letter and counted; a live caller's
/// bad outcome fails only its own request; text with NUL bytes is refused at the door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_outcome_is_set_aside_and_never_fails_anyone_else() {
    use crate::e2e_support::{get, poll, postgres_addr, via, Proxy};
    use rollout::store::Store;
    let Some(base) = crate::support::pg_url("an_unwritable_outcome_is_set_aside_and_never_fails_anyone_else") else {
        return;
    };
    const BAD: &str = "0badbad0-0000-4000-8000-00000000bad0";
    let db = TestDatabase::postgres(&base).await.unwrap();
    let Store::Postgres(pool) = &db.store else { unreachable!("a postgres test database") };
    for sql in [
        format!(
            "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.repository_id = '{BAD}' THEN RAISE EXCEPTION 'refused repository' USING ERRCODE = '22023'; END IF; \
             RETURN NEW; END $$"
        ),
        "CREATE TRIGGER refuse_bad BEFORE INSERT OR UPDATE ON rollout_metrics FOR EACH ROW EXECUTE FUNCTION refuse_bad()"
            .to_owned(),
    ] {
        sqlx::query(&sql).execute(pool).await.unwrap();
    }
    let proxy = Proxy::start(postgres_addr(&db.url)).await;
    let server = Server::start(&via(&db.url, proxy.addr), &["--reload-interval", "1"], &[]);
    let c = client();
    let f = |rest: &str| server.url(&format!("/v1/features/{F}{rest}"));
    let outcome = |repo: &str| json!({"repository_id": repo, "processor_type": "inngest", "success": true});

    proxy.cut();
    for repo in [e2e_support::REPO, BAD, e2e_support::REPO] {
        let batch: Vec<_> = (0..5).map(|_| outcome(repo)).collect();
        let (s, v) = send(&c, Method::POST, &f("/outcomes"), Some(json!({"outcomes": batch}))).await;
        assert_eq!(s, 202, "{v}");
    }
    // text the database cannot keep is refused before it is buffered
    let nul = json!({"repository_id": e2e_support::REPO, "processor_type": "inngest", "success": false, "error_message": "a\u{0}b"});
    let (s, v) = send(&c, Method::POST, &f("/outcomes"), Some(nul)).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("error_message")), "{v}");
    proxy.restore();
    let drained = poll(Duration::from_secs(60), || async {
        let (_, v) = get(&c, &f("")).await;
        (v["outcomes_buffered"] == 0 && v["database"]["reachable"] == true).then_some(v)
    })
    .await
    .expect("the buffer never drained: the refused outcome blocks it");
    let letters = drained["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 5, "each of the 5 refused outcomes was isolated: {drained}");
    assert!(letters.iter().all(|l| l["repository"] == BAD), "{drained}");
    let config = db.store.get_config(F).await.unwrap();
    let jobs: i64 = db.store.list_buckets(config.id).await.unwrap().iter().map(|b| b.total_jobs).sum();
    assert_eq!(jobs, 10, "the good outcomes behind the refused one were written");

    // live: the bad caller alone fails; callers sharing its group commit succeed
    let mut calls = Vec::new();
    for i in 0..20 {
        let (c, url) = (c.clone(), f("/outcomes"));
        let body = outcome(if i == 7 { BAD } else { e2e_support::REPO });
        calls.push(tokio::spawn(async move { send(&c, Method::POST, &url, Some(body)).await }));
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap().0);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 19, "{statuses:?}");
    assert_eq!(statuses[7], 400, "{statuses:?}");
    let metrics = c.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("rollout_outcomes_dead_lettered_total{{feature=\"{F}\"}} 5")), "{metrics}");
    drop(server);
    db.cleanup().await;
}

/// Defect 7: when the connection dropped after Postgres committed a group-commit batch but
/// before the reply arrived, the batch was buffered and written again once the database
/// returned: counted twice. Now every submission carries an idempotency key checked in the
/// same transaction, so the retry after an ambiguous commit counts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_commit_is_counted_exactly_once() {
    use crate::e2e_support::{get, poll, postgres_addr, via, CommitCutter};
    let Some(base) = crate::support::pg_url("an_ambiguous_commit_is_counted_exactly_once") else { return };
    let db = TestDatabase::postgres(&base).await.unwrap();
    let cutter = CommitCutter::start(postgres_addr(&db.url)).await;
    let url = format!("{}?sslmode=disable", via(&db.url, cutter.addr));
    let server = Server::start(&url, &["--reload-interval", "1", "--health-interval", "3600"], &[]);
    let c = client();
    let f = |rest: &str| server.url(&format!("/v1/features/{F}{rest}"));
    let outcome = json!({"repository_id": e2e_support::REPO, "processor_type": "inngest", "success": true});
    let (s, v) = send(&c, Method::POST, &f("/outcomes"), Some(outcome.clone())).await;
    assert_eq!((s, v["durable"].as_bool()), (200, Some(true)), "{v}");
    // the server's first health check records the feature's level in a transaction of its
    // own; wait for it, so the one commit the cutter cuts is the outcome batch's
    let rollout::store::Store::Postgres(pool) = &db.store else { panic!("postgres expected") };
    let recorded = poll(Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rollout_health_levels").fetch_one(pool).await.ok()?;
        (n > 0).then_some(())
    })
    .await;
    assert!(recorded.is_some(), "the first health check never recorded a level");

    cutter.arm();
    let batch: Vec<_> = (0..50).map(|_| outcome.clone()).collect();
    let (s, v) = send(&c, Method::POST, &f("/outcomes"), Some(json!({"outcomes": batch}))).await;
    assert_eq!(cutter.cuts(), 1, "the reply of the commit was lost: {v}");
    assert_eq!((s, v["durable"].as_bool()), (202, Some(false)), "not acknowledged as durable: {v}");
    let settled = poll(Duration::from_secs(60), || async {
        let (_, v) = get(&c, &f("")).await;
        (v["outcomes_buffered"] == 0 && v["database"]["reachable"] == true).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the buffer never drained");
    let config = db.store.get_config(F).await.unwrap();
    let jobs: i64 = db.store.list_buckets(config.id).await.unwrap().iter().map(|b| b.total_jobs).sum();
    assert_eq!(jobs, 51, "the committed batch was written again when retried");
    drop(server);
    db.cleanup().await;
}

/// Defect 5: under `HYBRID_ROLLOUT_PERCENTAGE` an automatic rollback did nothing — health
/// was judged on the override, the rollback wrote only a row (or nothing, with the column
/// at 0), routing stayed at the override and every later check asked for a rollback again.
/// Now safety beats the override (SPEC §4): after the rollback the effective percentage is
/// 0 on every instance, shown as such, until an operator sets a percentage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_holds_the_percentage_at_zero_over_an_environment_override() {
    use crate::e2e_support::{get, poll};
    let Some(base) = crate::support::pg_url("a_rollback_holds_the_percentage_at_zero_over_an_environment_override")
    else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.unwrap();
    let args = ["--reload-interval", "1", "--health-interval", "3600"];
    let env = [("HYBRID_ROLLOUT_PERCENTAGE", "100")];
    let (a, b) = (Server::start(&db.url, &args, &env), Server::start(&db.url, &args, &env));
    let c = client();
    let f = |s: &Server, rest: &str| s.url(&format!("/v1/features/{F}{rest}"));
    let eligible = |s: &Server| {
        let (c, url) = (c.clone(), f(s, "/eligibility"));
        async move {
            let (status, v) = send(&c, Method::POST, &url, Some(json!({"repository_id": e2e_support::REPO}))).await;
            assert_eq!(status, 200, "{v}");
            v["eligible"].as_bool().unwrap()
        }
    };
    let (_, v) = get(&c, &f(&a, "")).await;
    assert_eq!(v["config"]["rollout_percentage"]["value"], 100, "{v}");
    assert!(eligible(&a).await && eligible(&b).await, "the override puts everyone in");
    let error = json!({"repository_id": e2e_support::REPO, "processor_type": "inngest", "success": false,
        "error_message": "boom", "processing_time_ms": 5});
    let (s, v) = send(&c, Method::POST, &f(&a, "/outcomes"), Some(json!({"outcomes": vec![error; 20]}))).await;
    assert_eq!((s, &v["durable"]), (200, &json!(true)), "{v}");
    // the health check the outcomes wake (or this one) rolls back
    let (s, v) = send(&c, Method::POST, &f(&a, "/check-health"), Some(json!({}))).await;
    assert_eq!(s, 200, "{v}");
    // every instance now decides at 0 %, and shows why
    for server in [&a, &b] {
        let held = poll(Duration::from_secs(30), || async {
            let (_, v) = get(&c, &f(server, "")).await;
            (v["config"]["rollout_percentage"]["value"] == 0 && v["config"]["rolled_back"] == true).then_some(())
        })
        .await;
        assert!(held.is_some(), "an instance still runs at the override after the rollback");
        assert!(!eligible(server).await);
    }
    // judged again, nothing is left to roll back: one rollback row, not one per check
    for server in [&a, &b, &a] {
        let (s, v) = send(&c, Method::POST, &f(server, "/check-health"), Some(json!({}))).await;
        assert_eq!((s, &v["action"], &v["rolled_back"]), (200, &json!("none"), &json!(false)), "{v}");
    }
    let (_, v) = get(&c, &f(&a, "/history")).await;
    let rollbacks = v["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "rollback").count();
    assert_eq!(rollbacks, 1, "{v}");
    let page = c.get(a.url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("rolled back automatically"), "the status page does not say so");
    let (code, out) = run_to_exit(
        &["--database-url", &db.url, "--feature", F, "status"],
        &[("HYBRID_ROLLOUT_PERCENTAGE", "100")],
        Duration::from_secs(60),
    )
    .expect("rollout status ran");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rolled back automatically"), "{out}");
    // an operator's percentage ends the hold: the override applies again
    let (s, v) = send(&c, Method::PUT, &f(&b, "/percentage"), Some(json!({"percentage": 5, "reason": "fixed"}))).await;
    assert_eq!(s, 200, "{v}");
    let released = poll(Duration::from_secs(30), || async {
        let (_, v) = get(&c, &f(&a, "")).await;
        (v["config"]["rollout_percentage"]["value"] == 100 && v["config"]["rolled_back"] == false).then_some(())
    })
    .await;
    assert!(released.is_some(), "the operator's percentage did not end the hold");
    assert!(eligible(&a).await);
    drop((a, b));
    db.cleanup().await;
}

/// Defect 10: no `statement_timeout` / `lock_timeout`, and one feature after the other —
/// a session holding a lock on one configuration row stalled the health loop for every
/// feature. An external session holds `FOR UPDATE` on feature `aaa_locked`'s row (checked
/// first) for the whole test; feature `zzz_free`'s failing rollout is still rolled back,
/// and once the lock is gone the locked feature's is too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_on_one_feature_does_not_stall_another_features_health_check() {
    use crate::e2e_support::{get, poll};
    use sqlx::Connection;
    let Some(base) = crate::support::pg_url("a_lock_held_on_one_feature_does_not_stall_another_features_health_check")
    else {
        return;
    };
    let db = TestDatabase::postgres(&base).await.unwrap();
    let (locked, free) = ("aaa_locked", "zzz_free");
    for name in [locked, free] {
        db.store.ensure_config(name, "test").await.unwrap();
    }
    let server = Server::start(&db.url, &["--reload-interval", "1", "--health-interval", "1"], &[]);
    let c = client();
    let f = |feature: &str, rest: &str| server.url(&format!("/v1/features/{feature}{rest}"));
    let error = json!({"repository_id": e2e_support::REPO, "processor_type": "inngest", "success": false,
        "error_message": "boom", "processing_time_ms": 5});
    for name in [locked, free] {
        let (s, v) = send(&c, Method::PUT, &f(name, "/percentage"), Some(json!({"percentage": 50}))).await;
        assert_eq!(s, 200, "{v}");
    }
    // `FOR NO KEY UPDATE`: what an operator's `UPDATE` of the row holds until it commits. It
    // blocks every change of the row (and so the rollback) but not the outcomes' inserts,
    // whose foreign key only needs `FOR KEY SHARE` (`FOR UPDATE` would block those too: they
    // are buffered then, and written once the lock is gone).
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM rollout_configuration WHERE feature_name = $1 FOR NO KEY UPDATE")
        .bind(locked)
        .execute(&mut holder)
        .await
        .unwrap();
    for name in [locked, free] {
        let (s, v) =
            send(&c, Method::POST, &f(name, "/outcomes"), Some(json!({"outcomes": vec![error.clone(); 20]}))).await;
        assert_eq!(s, 200, "{v}");
    }
    let free_rolled_back = poll(Duration::from_secs(30), || async {
        let (_, v) = get(&c, &f(free, "")).await;
        (v["config"]["rollout_percentage"]["value"] == 0).then_some(())
    })
    .await;
    assert!(free_rolled_back.is_some(), "the lock on `{locked}` stalled the health check of `{free}`");
    let (_, v) = get(&c, &f(locked, "")).await;
    assert_eq!(v["config"]["rollout_percentage"]["value"], 50, "the lock held: {v}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let locked_rolled_back = poll(Duration::from_secs(30), || async {
        let (_, v) = get(&c, &f(locked, "")).await;
        (v["config"]["rollout_percentage"]["value"] == 0).then_some(())
    })
    .await;
    assert!(locked_rolled_back.is_some(), "`{locked}` was not checked again once the lock was gone");
    drop(server);
    db.cleanup().await;
}
