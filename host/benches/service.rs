//! The service's reaction times, wall clock with the database's I/O included (Postgres):
//!
//! - `rollback_reaction_ms`: from the acknowledgement of the outcome that crosses the
//!   rollback threshold (`Service::record_outcomes` returning) to the decisions of that
//!   process being made at 0 % (its configuration snapshot). The health interval is an
//!   hour, so only the outcome's own wake-up can do it. Median of 9 rollouts.
//! - `propagation_ms`: from a percentage change acknowledged by instance A to instance B (its
//!   own pool, its own background tasks, the same database) deciding with it — delivered by
//!   LISTEN/NOTIFY, the periodic re-read being an hour. Median of 21 changes.
//! - `stats_1m_repos_ms`: counting participation (eligible ÷ categorised repositories, every
//!   repository through the policy in chunks) over 1,000,000 categorised repositories: what
//!   the background recount costs after a change, read from the database included. Median of
//!   3. (`stats_1m_read_ms`: a read of the statistics once counted — what `/stats` and the
//!   page cost a caller.)
//! - `outbox_events_per_s`: alert events delivered per second by one notifier
//!   (`service::alerts`) from the Postgres outbox to a local webhook that answers 200 at
//!   once — lease, post, record per event, wall clock from the first round to the last
//!   event marked delivered. 5,000 events, median of 3 runs.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p rollout --bench service`
//! (the default URL); a fresh database is created and dropped. Ends with `SUMMARY` lines.

use rollout::input::values::{Actor, Percentage, ProcessingTimeMs, RepositoryRef};
use rollout::manager::OutcomeInput;
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout::service::background::Background;
use rollout::service::operations::Operation;
use rollout::service::{Service, ServiceOptions};
use rollout::store::testing::TestDatabase;
use rollout::store::Store;
use rollout_policy::Processor;
use std::time::{Duration, Instant};

const FEATURE: &str = "hybrid_progressive_capture";
const REPO: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn service(db_url: &str) -> (Service, Background) {
    let store = Store::connect(db_url).await.expect("connect");
    let runtime = Runtime::new(RuntimeOptions::default()).expect("runtime");
    runtime.load_bytes(BUNDLED_POLICY, "bundled").expect("bundled policy");
    let options = ServiceOptions {
        health_interval: Duration::from_secs(3600),
        reload_interval: Duration::from_secs(3600),
        ..ServiceOptions::default()
    };
    let service = Service::open(store, runtime, options).await.expect("open the service");
    let background = Background::spawn(&service);
    (service, background)
}

fn percentage_of(service: &Service) -> u8 {
    service
        .features()
        .iter()
        .find(|f| f.name() == FEATURE)
        .map_or(255, |f| f.manager.snapshot().config().rollout_percentage)
}

/// Poll (every 200 µs, at most 60 s) until `done`; the time it took, in milliseconds.
async fn until(start: Instant, done: impl Fn() -> bool) -> f64 {
    while !done() {
        if start.elapsed() > Duration::from_secs(60) {
            panic!("service bench: gave up after 60 s");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    start.elapsed().as_secs_f64() * 1e3
}

async fn set(service: &Service, pct: u8, actor: &Actor) {
    let op = Operation::SetPercentage(Percentage::new(u64::from(pct)).expect("percentage"));
    service.apply(FEATURE, op, None, actor).await.expect("set the percentage");
}

fn error_outcome() -> OutcomeInput {
    OutcomeInput {
        repository: RepositoryRef::new(REPO).expect("id"),
        processor: Processor::GithubActions,
        success: false,
        processing_time_ms: Some(ProcessingTimeMs::new(5).expect("ms")),
        error_message: None,
        decision_id: None,
    }
}

async fn rollback_reaction(db_url: &str, actor: &Actor) -> f64 {
    let (a, background) = service(db_url).await;
    let feature = a.feature(FEATURE).await.expect("feature");
    let mut samples = Vec::new();
    for _ in 0..9 {
        // a fresh ramp starts a fresh window: 9 errors (below the 10 jobs needed), then the 10th
        set(&a, 50, actor).await;
        a.record_outcomes(&feature, vec![error_outcome(); 9]).await.expect("record");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(percentage_of(&a), 50, "rolled back before the threshold");
        a.record_outcomes(&feature, vec![error_outcome()]).await.expect("record");
        let acknowledged = Instant::now();
        samples.push(until(acknowledged, || percentage_of(&a) == 0).await);
    }
    background.shutdown().await;
    median(samples)
}

async fn propagation(db_url: &str, actor: &Actor) -> f64 {
    let (a, background_a) = service(db_url).await;
    let (b, background_b) = service(db_url).await;
    // B is listening once it has seen one change
    set(&a, 1, actor).await;
    until(Instant::now(), || percentage_of(&b) == 1).await;
    let mut samples = Vec::new();
    for i in 0..21u8 {
        let pct = 2 + i;
        set(&a, pct, actor).await;
        let acknowledged = Instant::now();
        samples.push(until(acknowledged, || percentage_of(&b) == pct).await);
    }
    background_a.shutdown().await;
    background_b.shutdown().await;
    median(samples)
}

async fn stats_1m(db: &TestDatabase, actor: &Actor) -> (f64, f64) {
    let Store::Postgres(pool) = &db.store else { unreachable!("a postgres database") };
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await.expect("timeout");
    sqlx::query(
        "INSERT INTO repository_categories (repository_id, category, priority_level, is_test_repository, star_count, \
         contributor_count, pr_count, monthly_activity_score) \
         SELECT gen_random_uuid(), (ARRAY['test','small','medium','large','enterprise'])[1 + i % 5], 50, i % 5 = 0, \
         1, 1, 1, 1 FROM generate_series(1, 1000000) AS i",
    )
    .execute(&mut *tx)
    .await
    .expect("insert 1,000,000 categorised repositories");
    tx.commit().await.expect("commit");
    let (s, background) = service(&db.url).await;
    set(&s, 30, actor).await;
    let mut counts = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let p = s.count_participation(FEATURE).await.expect("count participation");
        counts.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(p.categorized_repositories, 1_000_000);
    }
    let mut reads = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        let stats = s.stats(FEATURE).await.expect("stats");
        reads.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(stats.categorized_repositories, 1_000_000);
    }
    background.shutdown().await;
    (median(counts), median(reads))
}

/// Events per second one notifier delivers to a local webhook (see the module docs).
async fn outbox(url: &str) -> f64 {
    use rollout::service::alerts::{Notifier, NotifierOptions};
    use rollout::store::{AlertLevel, NewAlertEvent};
    const EVENTS: u64 = 5000;
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    let mut rates = Vec::new();
    for _ in 0..3 {
        let db = TestDatabase::postgres(url).await.expect("a database");
        for i in 0..EVENTS {
            let event = NewAlertEvent {
                idempotency_key: uuid::Uuid::new_v4(),
                kind: "updated".into(),
                level: AlertLevel::Info,
                feature: Some(FEATURE.into()),
                summary: format!("bench event {i}"),
                details: serde_json::json!({"i": i}),
            };
            db.store.insert_alert_event(&event).await.expect("write an event");
        }
        let options = NotifierOptions { webhooks: vec![format!("http://{addr}/hook")], ..NotifierOptions::default() };
        let notifier = Notifier::new(db.store.clone(), options).expect("notifier");
        let t = Instant::now();
        let mut delivered = 0;
        while delivered < EVENTS as usize {
            delivered += notifier.run_once().await.expect("a round").delivered;
        }
        rates.push(EVENTS as f64 / t.elapsed().as_secs_f64());
        db.cleanup().await;
    }
    median(rates)
}

/// `replay_decisions_per_s`: decisions a determinism replay (`rollout replay`, through
/// `rollout::authoring::replay`) re-evaluates per second, read from Postgres included: 200,000
/// route decisions of one feature, one configuration version and the bundled policy's digest,
/// made here by the native reference rules and inserted first. The component is compiled
/// once before the clock starts (a replay compiles each digest once); median of 3 runs.
async fn replay_decisions_per_s(url: &str) -> f64 {
    use rollout::authoring::replay::{builtin_policy, replay_store, Replay};
    use rollout::store::{DecisionFilter, DecisionKind, DecisionRecord};
    const DECISIONS: usize = 200_000;
    let db = TestDatabase::postgres(url).await.expect("a database");
    let change = rollout::store::ChangeRequest::new(rollout::store::Change::SetPercentage(50), None, "bench");
    let stored = db.store.apply_change(FEATURE, &change).await.expect("set 50 %").after;
    let evaluator = rollout_policy::Evaluator::new(stored.config.clone()).expect("the configuration");
    let sha = rollout::runtime::sha256_hex(BUNDLED_POLICY);
    let categories = ["test", "small", "medium", "large", "enterprise"];
    let triggers = ["manual", "scheduled", "automatic"];
    let mut batch = Vec::with_capacity(2000);
    for i in 0..DECISIONS {
        let id = uuid::Uuid::from_u128(0x9e37_79b9_7f4a_7c15_u128.wrapping_mul(i as u128 + 1)).to_string();
        let category = categories[i % categories.len()];
        let (days, trigger) = ([1, 7, 30][i % 3], triggers[i % 4 % 3]);
        let job = serde_json::json!({"time_range_days": days, "trigger_source": trigger});
        let repository = rollout_policy::Repository::parse(&id, rollout_policy::Category::parse(category).ok());
        let rules_job = rollout::cases::job_from_json(Some(&job)).expect("a job");
        let d = evaluator.route(&repository, &rules_job);
        batch.push(DecisionRecord {
            id: uuid::Uuid::now_v7(),
            time: chrono::Utc::now(),
            feature: FEATURE.to_owned(),
            kind: DecisionKind::Route,
            config_version: stored.version,
            overrides: None,
            policy_sha256: sha.clone(),
            repository_id: id,
            masked: false,
            category: Some(category.to_owned()),
            job: Some(job),
            processor: Some(d.processor.as_str().to_owned()),
            rule: Some(d.rule.as_str().to_owned()),
            eligible: d.eligibility.eligible,
            reason: d.eligibility.reason.as_str().to_owned(),
            bucket: d.eligibility.bucket,
            fallback: None,
            duration_us: 3,
        });
        if batch.len() == 2000 || i + 1 == DECISIONS {
            db.store.insert_decisions(&batch).await.expect("log decisions");
            batch.clear();
        }
    }
    let filter = DecisionFilter { feature: Some(FEATURE.to_owned()), ..DecisionFilter::default() };
    let policy = builtin_policy(&sha).expect("the bundled digest").expect("the bundled policy compiles");
    let mut rates = Vec::new();
    for _ in 0..3 {
        let mut replay = Replay::determinism();
        replay.add_policy(&sha, Ok(policy.clone()));
        let t = Instant::now();
        replay_store(&db.store, &filter, None, &mut replay, |_| {}).await.expect("replay");
        let seconds = t.elapsed().as_secs_f64();
        let report = replay.report();
        assert_eq!((report.read, report.identical), (DECISIONS as u64, DECISIONS as u64), "{report:?}");
        rates.push(DECISIONS as f64 / seconds);
    }
    db.cleanup().await;
    median(rates)
}

/// CPU seconds this process has used (user and system; `/proc/self/stat`, in clock ticks of
/// 10 ms: the figure below spends seconds, so a tick is under 1 %).
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // the fields after the command (which may hold spaces) start after its ')'
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command
    (ticks(11) + ticks(12)) / 100.0
}

/// `decision_log_write_us`: CPU microseconds the decision log's writer spends per decision
/// (the whole process: encoding the segments, sqlx, SQLite and its WAL) writing 400,000
/// route decisions to a SQLite file through the writer's own connection
/// (`Store::decision_log_writer`), in the service's batches of 10,000; median of 3 runs, each
/// on a fresh database. The goal for everything logging costs is 5 µs a decision
/// (`http_route_logged_ratio` ≥ 0.85 at ~30 µs a decision).
async fn decision_log_write_us() -> f64 {
    use rollout::store::{DecisionKind, DecisionRecord};
    const DECISIONS: usize = 400_000;
    const BATCH: usize = 10_000;
    const DAYS: [u32; 3] = [1, 7, 30];
    let mut runs = Vec::new();
    for _ in 0..3 {
        let db = TestDatabase::sqlite().await.expect("a SQLite database");
        let writer = db.store.decision_log_writer().await.expect("the writer's connection");
        let batches: Vec<Vec<DecisionRecord>> = (0..DECISIONS / BATCH)
            .map(|b| {
                (0..BATCH)
                    .map(|i| {
                        let n = b * BATCH + i;
                        DecisionRecord {
                            id: uuid::Uuid::now_v7(),
                            time: chrono::Utc::now(),
                            feature: FEATURE.to_owned(),
                            kind: DecisionKind::Route,
                            config_version: 7,
                            overrides: None,
                            policy_sha256: "ab".repeat(32),
                            repository_id: uuid::Uuid::from_u128(
                                0x9e37_79b9_7f4a_7c15_u128.wrapping_mul(n as u128 + 1),
                            )
                            .to_string(),
                            masked: false,
                            category: Some(["small", "large"][n % 2].to_owned()),
                            job: Some(
                                serde_json::json!({"time_range_days": DAYS[n % 3], "trigger_source": "scheduled"}),
                            ),
                            processor: Some("inngest".to_owned()),
                            rule: Some("percentage_rollout".to_owned()),
                            eligible: true,
                            reason: "percentage".to_owned(),
                            bucket: (n % 100) as u8,
                            fallback: None,
                            duration_us: 4,
                        }
                    })
                    .collect()
            })
            .collect();
        let before = process_cpu_seconds();
        for batch in &batches {
            writer.insert_decisions(batch).await.expect("log a batch");
        }
        let spent = process_cpu_seconds() - before;
        runs.push(spent * 1e6 / DECISIONS as f64);
        drop(writer);
        db.cleanup().await;
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "  decision log writer, SQLite:          {:>9.2} µs CPU per decision (runs {})",
        runs[1],
        runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" / ")
    );
    runs[1]
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if !url.starts_with("postgres") {
        eprintln!("SKIPPED service bench: DATABASE_URL must name a Postgres database");
        return;
    }
    // SERVICE_BENCH_ONLY=replay (or log) runs that figure alone (for profiling it)
    if std::env::var("SERVICE_BENCH_ONLY").is_ok_and(|only| only == "replay") {
        println!("SUMMARY replay_decisions_per_s: {:.0}", replay_decisions_per_s(&url).await);
        return;
    }
    if std::env::var("SERVICE_BENCH_ONLY").is_ok_and(|only| only == "log") {
        println!("SUMMARY decision_log_write_us: {:.2}", decision_log_write_us().await);
        return;
    }
    let actor = Actor::new("bench").expect("actor");
    println!("service reaction times on Postgres (wall clock, I/O included; medians)");
    let db = match TestDatabase::postgres(&url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("SKIPPED service bench: {e}");
            return;
        }
    };
    let reaction = rollback_reaction(&db.url, &actor).await;
    println!("  rollback after the crossing outcome:   {reaction:>9.1} ms");
    let propagation = propagation(&db.url, &actor).await;
    println!("  a change reaching another instance:    {propagation:>9.1} ms");
    db.cleanup().await;
    let db = TestDatabase::postgres(&url).await.expect("a second database");
    let (count, read) = stats_1m(&db, &actor).await;
    println!("  participation over 1,000,000 repos:    {count:>9.1} ms (recount) / {read:.2} ms (read)");
    db.cleanup().await;
    let outbox = outbox(&url).await;
    println!("  alert events delivered by one notifier: {outbox:>8.0} /s");
    println!("SUMMARY rollback_reaction_ms: {reaction:.1}");
    println!("SUMMARY propagation_ms: {propagation:.1}");
    println!("SUMMARY stats_1m_repos_ms: {count:.0}");
    println!("SUMMARY stats_1m_read_ms: {read:.2}");
    println!("SUMMARY outbox_events_per_s: {outbox:.0}");
    println!("SUMMARY replay_decisions_per_s: {:.0}", replay_decisions_per_s(&url).await);
    println!("SUMMARY decision_log_write_us: {:.2}", decision_log_write_us().await);
}
