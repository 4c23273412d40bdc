//! Outcome ingestion into Postgres: group commit vs one statement per outcome.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p rollout --bench ingest`
//!
//! Creates a fresh database, then runs, each for a fixed time, with 16 concurrent recorders:
//! 1. naive — each recorder writes each outcome with its own upsert statement (autocommit);
//! 2. group commit, one outcome in flight per recorder ([`MetricsRecorder::record`]);
//! 3. group commit, 256 outcomes in flight per recorder (each still awaited individually).
//!
//! Outcomes spread over 500 repositories × 2 processors (1,000 bucket keys), 5 % errors.
//!
//! Every acknowledged outcome is durable (committed with `synchronous_commit` as the server
//! has it). At the end the database totals are checked against the acknowledged counts.
//! The last lines are `SUMMARY pg_outcomes_per_s: N` (run 3) and
//! `SUMMARY pg_naive_outcomes_per_s: N` (run 1).

use chrono::Utc;
use rollout::store::recorder::{aggregate, MetricsRecorder, Outcome};
use rollout::store::testing::TestDatabase;
use rollout::store::{Store, StoreOptions};
use rollout_policy::Processor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const RECORDERS: usize = 16;
const IN_FLIGHT: usize = 256;
const REPOSITORIES: u128 = 500;
const RUN: Duration = Duration::from_secs(8);

fn outcome(config_id: Uuid, n: u64) -> Outcome {
    Outcome {
        config_id,
        repository_id: Uuid::from_u128(1 + u128::from(n) % REPOSITORIES),
        processor: if n.is_multiple_of(3) { Processor::GithubActions } else { Processor::Inngest },
        success: !n.is_multiple_of(20),
        processing_time_ms: Some(n % 5000),
        error_message: n.is_multiple_of(20).then(|| "API rate limit exceeded".to_owned()),
        at: Utc::now(),
    }
}

async fn naive(store: &Store, config_id: Uuid) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..RECORDERS as u64 {
        let (store, done, stop) = (store.clone(), done.clone(), stop.clone());
        tasks.spawn(async move {
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                let o = outcome(config_id, n);
                store.upsert_metrics(&aggregate([&o])).await.map_err(|e| e.to_string())?;
                done.fetch_add(1, Ordering::Relaxed);
                n += RECORDERS as u64;
            }
            Ok::<(), String>(())
        });
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) | Err(e) = r.map_err(|e| e.to_string()) {
            eprintln!("naive recorder failed: {e}");
        }
    }
    done.load(Ordering::Relaxed)
}

async fn grouped(recorder: &MetricsRecorder, config_id: Uuid, in_flight: usize) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..RECORDERS as u64 {
        let (recorder, done, stop) = (recorder.clone(), done.clone(), stop.clone());
        tasks.spawn(async move {
            let mut pending = tokio::task::JoinSet::new();
            let mut n = r;
            while !stop.load(Ordering::Relaxed) {
                while pending.len() < in_flight {
                    let recorder = recorder.clone();
                    let o = outcome(config_id, n);
                    n += RECORDERS as u64;
                    pending.spawn(async move { recorder.record(o).await });
                }
                match pending.join_next().await {
                    Some(Ok(Ok(()))) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Err(e))) => return Err(e.to_string()),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => {}
                }
            }
            while let Some(r) = pending.join_next().await {
                if matches!(r, Ok(Ok(()))) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), String>(())
        });
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) | Err(e) = r.map_err(|e| e.to_string()) {
            eprintln!("recorder failed: {e}");
        }
    }
    done.load(Ordering::Relaxed)
}

async fn total_jobs(store: &Store) -> i64 {
    match store {
        Store::Postgres(pool) => {
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(sum(total_jobs), 0)::int8 FROM rollout_metrics")
                .fetch_one(pool)
                .await
                .unwrap_or(-1)
        }
        Store::Sqlite(_) => -1,
    }
}

fn per_s(n: u64, secs: f64) -> u64 {
    (n as f64 / secs).round() as u64
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if !url.starts_with("postgres") {
        eprintln!("SKIPPED ingest bench: DATABASE_URL must name a Postgres database");
        return;
    }
    let options = StoreOptions { max_connections: RECORDERS as u32 + 4, ..StoreOptions::default() };
    let db = match TestDatabase::postgres_with(&url, &options).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("SKIPPED ingest bench: {e}");
            return;
        }
    };
    let store = db.store.clone();
    let config_id = match store.get_config("hybrid_progressive_capture").await {
        Ok(c) => c.id,
        Err(e) => {
            eprintln!("ingest bench: {e}");
            db.cleanup().await;
            std::process::exit(1);
        }
    };
    let secs = RUN.as_secs_f64();
    println!("outcome ingestion into Postgres, {RECORDERS} concurrent recorders, {} s per run", RUN.as_secs());

    let t = Instant::now();
    let naive_n = naive(&store, config_id).await;
    let naive_rate = per_s(naive_n, t.elapsed().as_secs_f64().max(secs));
    println!("  one statement per outcome:              {naive_n:>9} outcomes  {naive_rate:>8} outcomes/s");

    let recorder = MetricsRecorder::spawn(store.clone());
    let t = Instant::now();
    let single_n = grouped(&recorder, config_id, 1).await;
    let single_rate = per_s(single_n, t.elapsed().as_secs_f64().max(secs));
    println!("  group commit, 1 in flight per recorder: {single_n:>9} outcomes  {single_rate:>8} outcomes/s");

    let t = Instant::now();
    let many_n = grouped(&recorder, config_id, IN_FLIGHT).await;
    let many_rate = per_s(many_n, t.elapsed().as_secs_f64().max(secs));
    println!("  group commit, {IN_FLIGHT} in flight per recorder: {many_n:>8} outcomes  {many_rate:>8} outcomes/s");

    let stored = total_jobs(&store).await;
    let acknowledged = naive_n + single_n + many_n;
    println!(
        "  stored jobs {stored}, acknowledged {acknowledged}: {}",
        if stored == acknowledged as i64 { "equal" } else { "MISMATCH" }
    );
    if naive_rate > 0 {
        println!(
            "  ratio group commit / naive: {:.1}x (1 in flight: {:.1}x)",
            many_rate as f64 / naive_rate as f64,
            single_rate as f64 / naive_rate as f64
        );
    }
    db.cleanup().await;
    println!("SUMMARY pg_outcomes_per_s: {many_rate}");
    println!("SUMMARY pg_naive_outcomes_per_s: {naive_rate}");
    if stored != acknowledged as i64 {
        std::process::exit(1);
    }
}
