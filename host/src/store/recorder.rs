//! Group commit of job outcomes.
//!
//! Callers of [`MetricsRecorder::record`] enqueue their outcome and wait. A flusher task
//! takes everything queued (up to [`RecorderOptions::max_batch_outcomes`]), merges it by
//! bucket key in memory ([`aggregate`]) and writes it with one multi-row upsert
//! ([`Store::upsert_metrics_batches`]); while a batch commits, the next one gathers. Every caller
//! of a batch returns only after that batch committed — an `Ok` means the outcome is
//! durable — and every caller of a failed batch gets the error.
//!
//! Every submission carries an idempotency key ([`MetricsRecorder::record_batch`]): a
//! caller that retries after an error (the connection may have dropped after the commit)
//! passes the same key, and the store counts the submission once. When the database
//! refuses a group for its content (a permanent failure), the flusher writes each
//! submission of the group on its own, so one bad outcome fails only its own submission
//! ([`StoreError::MetricsRefused`]).

use super::{
    hour_start, merge_deltas, MetricsBatch, MetricsDelta, Store, StoreError, StoreResult, MAX_ERROR_MESSAGE_CHARS,
};
use chrono::{DateTime, Utc};
use rollout_policy::Processor;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

/// One job outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The configuration (`rollout_configuration.id`) the job ran under.
    pub config_id: Uuid,
    /// The repository (need not exist in `repositories`).
    pub repository_id: Uuid,
    /// Where the job ran.
    pub processor: Processor,
    /// Whether it succeeded.
    pub success: bool,
    /// How long it took, when known (milliseconds).
    pub processing_time_ms: Option<u64>,
    /// The error, for a failure (kept as the bucket's `last_error_message`, cut to
    /// [`MAX_ERROR_MESSAGE_CHARS`] characters).
    pub error_message: Option<String>,
    /// When it finished (picks the hour bucket).
    pub at: DateTime<Utc>,
}

/// Merge outcomes into one delta per bucket key (configuration, repository, processor,
/// hour), keeping the latest error message; counts saturate.
pub fn aggregate<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Vec<MetricsDelta> {
    let mut outcomes = outcomes.into_iter().peekable();
    let Some(first) = outcomes.next() else { return Vec::new() };
    if outcomes.peek().is_none() {
        // one outcome, the common submission: nothing to merge
        return vec![delta_of(first)];
    }
    merge_deltas(std::iter::once(first).chain(outcomes).map(delta_of))
}

/// The delta of one outcome.
fn delta_of(o: &Outcome) -> MetricsDelta {
    MetricsDelta {
        config_id: o.config_id,
        repository_id: o.repository_id,
        processor: o.processor,
        hour_start: hour_start(o.at),
        at: o.at,
        success_count: i64::from(o.success),
        error_count: i64::from(!o.success),
        processing_time_ms: o.processing_time_ms.map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
        timed_jobs: i64::from(o.processing_time_ms.is_some()),
        latency_buckets: o.processing_time_ms.map(|ms| vec![(super::latency::bucket_of(ms), 1)]).unwrap_or_default(),
        last_error_message: if o.success { None } else { o.error_message.as_deref().map(cut_message) },
        last_error_at: (!o.success).then_some(o.at),
    }
}

fn cut_message(m: &str) -> String {
    match m.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        Some((i, _)) => m.get(..i).unwrap_or(m).to_owned(),
        None => m.to_owned(),
    }
}

/// Tuning of the flusher.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Most outcomes merged into one write (default 20,000).
    pub max_batch_outcomes: usize,
    /// Batches written at once (default: 2 on Postgres, 1 on SQLite, whose writers
    /// serialise anyway).
    ///
    /// Concurrent batches of one feature mostly touch the same buckets, so on Postgres their
    /// upserts wait for each other's row locks until commit: two in flight let one batch
    /// record its keys while the other upserts and commits, and keep each batch large (the
    /// bucket upsert costs per bucket, not per outcome). Four in flight made the batches
    /// half as large and ingestion about a fifth slower (`cargo bench --bench ingest`).
    pub max_in_flight: usize,
}

impl RecorderOptions {
    /// The defaults for `store`.
    pub fn for_store(store: &Store) -> RecorderOptions {
        RecorderOptions {
            max_batch_outcomes: 20_000,
            max_in_flight: match store {
                Store::Postgres(_) => 2,
                Store::Sqlite(_) => 1,
            },
        }
    }
}

struct Submission {
    batch_id: Uuid,
    outcomes: Vec<Outcome>,
    done: oneshot::Sender<StoreResult<()>>,
}

/// The group-commit front of [`Store::upsert_metrics`]. Cheap to clone; the flusher stops
/// when the last clone is dropped (after finishing what was queued).
#[derive(Clone)]
pub struct MetricsRecorder {
    queue: mpsc::UnboundedSender<Submission>,
}

impl std::fmt::Debug for MetricsRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRecorder").finish_non_exhaustive()
    }
}

impl MetricsRecorder {
    /// Start a flusher on the current tokio runtime with the defaults for `store`.
    pub fn spawn(store: Store) -> MetricsRecorder {
        let options = RecorderOptions::for_store(&store);
        MetricsRecorder::spawn_with(store, options)
    }

    /// Start a flusher on the current tokio runtime.
    pub fn spawn_with(store: Store, options: RecorderOptions) -> MetricsRecorder {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(flusher(store, options, rx));
        MetricsRecorder { queue }
    }

    /// Record one outcome; returns once it is committed.
    pub async fn record(&self, outcome: Outcome) -> StoreResult<()> {
        self.record_many(vec![outcome]).await
    }

    /// Record several outcomes under a fresh key; returns once all are committed (they
    /// commit together). A caller that may retry uses [`MetricsRecorder::record_batch`].
    pub async fn record_many(&self, outcomes: Vec<Outcome>) -> StoreResult<()> {
        self.record_batch(Uuid::new_v4(), outcomes).await
    }

    /// Record several outcomes as one submission with the idempotency key `batch_id` (made
    /// once per request, e.g. `Uuid::new_v4()`, and passed again on every retry of it);
    /// returns once all are committed. However often a submission is recorded under one
    /// key — a retry after a lost reply, two copies in flight at once — it counts once (for
    /// [`super::APPLIED_BATCH_RETENTION`]).
    ///
    /// Errors: [`ErrorKind::Unreachable`](super::ErrorKind::Unreachable) — retry with the
    /// same key; [`StoreError::MetricsRefused`] — the database refused this submission's
    /// content (nothing of it was kept): retrying it as it is fails again, split it to find
    /// the bad outcome.
    pub async fn record_batch(&self, batch_id: Uuid, outcomes: Vec<Outcome>) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.queue.send(Submission { batch_id, outcomes, done }).map_err(|_| StoreError::RecorderClosed)?;
        wait.await.map_err(|_| StoreError::RecorderClosed)?
    }
}

async fn flusher(store: Store, options: RecorderOptions, mut rx: mpsc::UnboundedReceiver<Submission>) {
    let slots = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    while let Some(first) = rx.recv().await {
        // wait for a free slot first: whatever arrives meanwhile joins this batch
        let Ok(permit) = slots.clone().acquire_owned().await else { break };
        let mut count = first.outcomes.len();
        let mut batch = vec![first];
        while count < options.max_batch_outcomes {
            match rx.try_recv() {
                Ok(s) => {
                    count += s.outcomes.len();
                    batch.push(s);
                }
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            let batches: Vec<MetricsBatch> =
                batch.iter().map(|s| MetricsBatch { batch_id: s.batch_id, deltas: aggregate(&s.outcomes) }).collect();
            let result = store.upsert_metrics_batches(&batches).await.map(|_| ());
            match result {
                // refused for its content: find whose, writing each submission alone
                Err(e) if !e.kind().is_transient() && batches.len() > 1 => {
                    for (s, b) in batch.into_iter().zip(&batches) {
                        let alone = store.upsert_metrics_batches(std::slice::from_ref(b)).await.map(|_| ());
                        // a caller that stopped waiting is no error
                        let _ = s.done.send(alone);
                    }
                }
                result => {
                    for s in batch {
                        let _ = s.done.send(result.clone());
                    }
                }
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(repo: u128, success: bool, ms: Option<u64>, at: &str) -> Outcome {
        Outcome {
            config_id: Uuid::from_u128(1),
            repository_id: Uuid::from_u128(repo),
            processor: Processor::Inngest,
            success,
            processing_time_ms: ms,
            error_message: (!success).then(|| format!("error at {at}")),
            at: DateTime::parse_from_rfc3339(at).map(|t| t.with_timezone(&Utc)).unwrap(),
        }
    }

    #[test]
    fn merges_by_key_and_hour_keeping_the_latest_error() {
        let outcomes = vec![
            outcome(1, true, Some(10), "2025-01-01T10:05:00Z"),
            outcome(1, false, Some(20), "2025-01-01T10:50:00Z"),
            outcome(1, false, None, "2025-01-01T10:20:00Z"),
            outcome(1, true, None, "2025-01-01T11:00:00Z"),
            outcome(2, true, Some(5), "2025-01-01T10:06:00Z"),
        ];
        let mut deltas = aggregate(&outcomes);
        deltas.sort_by_key(|d| (d.repository_id, d.hour_start));
        assert_eq!(deltas.len(), 3);
        let d = &deltas[0];
        assert_eq!((d.success_count, d.error_count, d.processing_time_ms, d.timed_jobs), (1, 2, 30, 2));
        assert_eq!(d.latency_buckets, vec![(10, 1), (20, 1)], "one job each at 10 ms and 20 ms");
        assert_eq!(d.last_error_message.as_deref(), Some("error at 2025-01-01T10:50:00Z"));
        assert_eq!(d.at.to_rfc3339(), "2025-01-01T10:50:00+00:00");
        assert_eq!(deltas[1].hour_start.to_rfc3339(), "2025-01-01T11:00:00+00:00");
        assert_eq!(deltas[2].repository_id, Uuid::from_u128(2));
    }

    #[test]
    fn processing_times_saturate() {
        let huge = outcome(1, true, Some(u64::MAX), "2025-01-01T10:05:00Z");
        let big = outcome(1, true, Some(i64::MAX as u64), "2025-01-01T10:06:00Z");
        let deltas = aggregate([&huge, &big, &big]);
        assert_eq!(deltas.len(), 1);
        assert_eq!((deltas[0].processing_time_ms, deltas[0].timed_jobs, deltas[0].success_count), (i64::MAX, 3, 3));
        assert_eq!(deltas[0].latency_buckets, vec![(super::super::latency::OVERFLOW_BUCKET, 3)]);
    }

    #[test]
    fn latency_buckets_merge_in_order_and_untimed_jobs_add_none() {
        let outcomes = vec![
            outcome(1, true, Some(40), "2025-01-01T10:01:00Z"),
            outcome(1, true, Some(5), "2025-01-01T10:02:00Z"),
            outcome(1, true, None, "2025-01-01T10:03:00Z"),
            outcome(1, true, Some(41), "2025-01-01T10:04:00Z"),
            outcome(1, true, Some(1000), "2025-01-01T10:05:00Z"),
            outcome(1, true, Some(5), "2025-01-01T10:06:00Z"),
        ];
        let deltas = aggregate(&outcomes);
        assert_eq!(deltas.len(), 1);
        let b = super::super::latency::bucket_of;
        assert_eq!(deltas[0].latency_buckets, vec![(5, 2), (b(40), 2), (b(1000), 1)]);
        assert_eq!(deltas[0].latency_buckets.iter().map(|(_, c)| c).sum::<i64>(), deltas[0].timed_jobs);
        let untimed = aggregate([&outcome(2, false, None, "2025-01-01T10:05:00Z")]);
        assert!(untimed[0].latency_buckets.is_empty());
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE_CHARS + 5);
        assert_eq!(cut_message(&long).chars().count(), MAX_ERROR_MESSAGE_CHARS);
        assert_eq!(cut_message("short"), "short");
    }
}
