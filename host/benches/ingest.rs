//! Outcome ingestion into Postgres: group commit against one transaction per outcome, at the
//! same concurrency.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p rollout --bench ingest`
//!
//! Creates a fresh database, then runs two sides for a fixed time each. Both sides have the
//! same load: 16 concurrent recorders, each keeping 256 outcomes in flight (4,096 in all), each
//! outcome its own submission under its own idempotency key, awaited on its own, and counted
//! only once acknowledged; both share one pool of 20 connections.
//! 1. naive (`SUMMARY pg_naive_outcomes_per_s`) — every outcome is written on its own with
//!    [`Store::upsert_metrics`]: one transaction per outcome (its key recorded, its bucket
//!    upserted, committed), up to 20 at once (one per connection);
//! 2. group commit (`SUMMARY pg_outcomes_per_s`, the headline) — every outcome goes through
//!    one [`MetricsRecorder`] ([`MetricsRecorder::record`]), whose flusher writes whatever is
//!    queued as one transaction: every key in one statement, the buckets merged in memory and
//!    upserted in one statement.
//!
//! `SUMMARY pg_ingest_ratio` is the headline divided by the naive rate of the same run.
//!
//! Outcomes spread over 500 repositories × 2 processors (1,000 bucket keys), 5 % errors.
//! Every acknowledged outcome is durable (committed with `synchronous_commit` as the server
//! has it, `on` by default, before it is acknowledged). After each side the database's sums
//! (jobs, successes, errors, timed jobs, processing time) are compared with what was
//! acknowledged; a difference, or any failed write, ends the bench with exit status 1 and no
//! `SUMMARY` lines.

use chrono::Utc;
use rollout::store::recorder::{aggregate, MetricsRecorder, Outcome};
use rollout::store::testing::TestDatabase;
use rollout::store::{Store, StoreOptions, StoreResult};
use rollout_policy::Processor;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

/// Sums over outcomes: what was acknowledged, or what the database holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sums {
    jobs: i64,
    successes: i64,
    errors: i64,
    timed_jobs: i64,
    processing_ms: i64,
}

/// The sums of acknowledged outcomes, shared by the recorders of one side.
#[derive(Default)]
struct Tally {
    jobs: AtomicI64,
    successes: AtomicI64,
    timed_jobs: AtomicI64,
    processing_ms: AtomicI64,
}

impl Tally {
    fn add(&self, success: bool, ms: Option<u64>) {
        self.jobs.fetch_add(1, Ordering::Relaxed);
        self.successes.fetch_add(i64::from(success), Ordering::Relaxed);
        if let Some(ms) = ms {
            self.timed_jobs.fetch_add(1, Ordering::Relaxed);
            self.processing_ms.fetch_add(i64::try_from(ms).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }

    fn sums(&self) -> Sums {
        let jobs = self.jobs.load(Ordering::Relaxed);
        let successes = self.successes.load(Ordering::Relaxed);
        Sums {
            jobs,
            successes,
            errors: jobs - successes,
            timed_jobs: self.timed_jobs.load(Ordering::Relaxed),
            processing_ms: self.processing_ms.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Add for Sums {
    type Output = Sums;
    fn add(self, o: Sums) -> Sums {
        Sums {
            jobs: self.jobs + o.jobs,
            successes: self.successes + o.successes,
            errors: self.errors + o.errors,
            timed_jobs: self.timed_jobs + o.timed_jobs,
            processing_ms: self.processing_ms + o.processing_ms,
        }
    }
}

/// Run [`RECORDERS`] recorders for [`RUN`], each keeping [`IN_FLIGHT`] calls of `write` (one
/// outcome each) in flight; the sums of the acknowledged outcomes, the seconds it took (until
/// the last call in flight returned), and the first error, if any.
async fn drive<W, F>(config_id: Uuid, write: W) -> (Sums, f64, Option<String>)
where
    W: Fn(Outcome) -> F + Clone + Send + 'static,
    F: Future<Output = StoreResult<()>> + Send + 'static,
{
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut recorders = tokio::task::JoinSet::new();
    for r in 0..RECORDERS as u64 {
        let (write, tally, stop) = (write.clone(), tally.clone(), stop.clone());
        recorders.spawn(async move {
            let mut pending = tokio::task::JoinSet::new();
            let mut n = r;
            let mut failure = None;
            loop {
                while !stop.load(Ordering::Relaxed) && pending.len() < IN_FLIGHT {
                    let o = outcome(config_id, n);
                    n += RECORDERS as u64;
                    let (success, ms) = (o.success, o.processing_time_ms);
                    let written = write(o);
                    pending.spawn(async move { written.await.map(|()| (success, ms)) });
                }
                match pending.join_next().await {
                    Some(Ok(Ok((success, ms)))) => tally.add(success, ms),
                    Some(Ok(Err(e))) => {
                        failure.get_or_insert(e.to_string());
                    }
                    Some(Err(e)) => {
                        failure.get_or_insert(e.to_string());
                    }
                    None => return failure,
                }
            }
        });
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let mut failure = None;
    while let Some(r) = recorders.join_next().await {
        match r {
            Ok(None) => {}
            Ok(Some(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
            }
        }
    }
    (tally.sums(), started.elapsed().as_secs_f64(), failure)
}

async fn stored_sums(store: &Store) -> Result<Sums, String> {
    let Store::Postgres(pool) = store else { return Err("the ingest bench needs Postgres".to_owned()) };
    let row: (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT COALESCE(sum(total_jobs), 0)::int8, COALESCE(sum(success_count), 0)::int8, \
         COALESCE(sum(error_count), 0)::int8, COALESCE(sum(timed_jobs), 0)::int8, \
         COALESCE(sum(total_processing_time_ms), 0)::int8 FROM rollout_metrics",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| format!("cannot read the stored sums: {e}"))?;
    Ok(Sums { jobs: row.0, successes: row.1, errors: row.2, timed_jobs: row.3, processing_ms: row.4 })
}

/// Check that the database holds exactly `expected`; the error says what differs.
async fn check_exact(store: &Store, side: &str, expected: Sums) -> Result<(), String> {
    let stored = stored_sums(store).await?;
    if stored == expected {
        println!("  after `{side}`: stored sums equal the acknowledged ones ({} jobs)", stored.jobs);
        Ok(())
    } else {
        Err(format!("after `{side}`: stored {stored:?} but acknowledged {expected:?}"))
    }
}

fn per_s(n: i64, secs: f64) -> u64 {
    (n as f64 / secs.max(RUN.as_secs_f64())).round() as u64
}

async fn run(store: &Store, config_id: Uuid) -> Result<(u64, u64), String> {
    println!(
        "outcome ingestion into Postgres: {RECORDERS} recorders x {IN_FLIGHT} outcomes in flight on both sides, \
         {} s per side",
        RUN.as_secs()
    );

    let naive_store = store.clone();
    let (naive, naive_rate) = side(store, config_id, "naive, one transaction per outcome", Sums::default(), move |o| {
        let store = naive_store.clone();
        async move { store.upsert_metrics(&aggregate([&o])).await }
    })
    .await?;
    let recorder = MetricsRecorder::spawn(store.clone());
    let (_, grouped_rate) = side(store, config_id, "group commit", naive, move |o| {
        let recorder = recorder.clone();
        async move { recorder.record(o).await }
    })
    .await?;
    Ok((grouped_rate, naive_rate))
}

/// One side of the bench: [`drive`] `write`, print its rate, and check that the database then
/// holds exactly `before` plus what this side acknowledged; those sums and the rate.
async fn side<W, F>(store: &Store, config_id: Uuid, label: &str, before: Sums, write: W) -> Result<(Sums, u64), String>
where
    W: Fn(Outcome) -> F + Clone + Send + 'static,
    F: Future<Output = StoreResult<()>> + Send + 'static,
{
    let (acknowledged, secs, failure) = drive(config_id, write).await;
    if let Some(e) = failure {
        return Err(format!("a write of the side `{label}` failed: {e}"));
    }
    let rate = per_s(acknowledged.jobs, secs);
    println!("  {label:<36} {:>9} outcomes in {secs:.1} s  {rate:>8} outcomes/s", acknowledged.jobs);
    let total = before + acknowledged;
    check_exact(store, label, total).await?;
    Ok((total, rate))
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if !url.starts_with("postgres") {
        eprintln!("SKIPPED ingest bench: DATABASE_URL must name a Postgres database");
        return;
    }
    // 4,096 naive writes queue for 20 connections: let them wait as long as they must
    let options = StoreOptions {
        max_connections: RECORDERS as u32 + 4,
        acquire_timeout: Duration::from_secs(120),
        ..StoreOptions::default()
    };
    let db = match TestDatabase::postgres_with(&url, &options).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("SKIPPED ingest bench: {e}");
            return;
        }
    };
    let store = db.store.clone();
    let result = match store.get_config("hybrid_progressive_capture").await {
        Ok(c) => run(&store, c.id).await,
        Err(e) => Err(e.to_string()),
    };
    db.cleanup().await;
    match result {
        Ok((headline, naive)) => {
            println!("SUMMARY pg_outcomes_per_s: {headline}");
            println!("SUMMARY pg_naive_outcomes_per_s: {naive}");
            let ratio = if naive > 0 { headline as f64 / naive as f64 } else { f64::INFINITY };
            println!("SUMMARY pg_ingest_ratio: {ratio:.1}");
        }
        Err(e) => {
            eprintln!("INGEST BENCH FAILED: {e}");
            std::process::exit(1);
        }
    }
}
