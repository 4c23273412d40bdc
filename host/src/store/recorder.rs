//! Group commit of job outcomes.
//!
//! Callers of [`MetricsRecorder::record`] enqueue their outcome and wait. A flusher task
//! takes everything queued (up to [`RecorderOptions::max_batch_outcomes`]), merges it by
//! bucket key in memory ([`aggregate`]) and writes it with one multi-row upsert
//! ([`Store::upsert_metrics`]); while a batch commits, the next one gathers. Every caller
//! of a batch returns only after that batch committed — an `Ok` means the outcome is
//! durable — and every caller of a failed batch gets the error.

use super::{hour_start, MetricsDelta, Store, StoreError, StoreResult, MAX_ERROR_MESSAGE_CHARS};
use chrono::{DateTime, Utc};
use rollout_policy::Processor;
use std::collections::HashMap;
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
/// hour), keeping the latest error message.
pub fn aggregate<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Vec<MetricsDelta> {
    let mut map: HashMap<(Uuid, Uuid, Processor, DateTime<Utc>), MetricsDelta> = HashMap::new();
    for o in outcomes {
        let hour = hour_start(o.at);
        let d = map.entry((o.config_id, o.repository_id, o.processor, hour)).or_insert_with(|| MetricsDelta {
            config_id: o.config_id,
            repository_id: o.repository_id,
            processor: o.processor,
            hour_start: hour,
            at: o.at,
            success_count: 0,
            error_count: 0,
            processing_time_ms: 0,
            timed_jobs: 0,
            last_error_message: None,
            last_error_at: None,
        });
        if o.at > d.at {
            d.at = o.at;
        }
        if o.success {
            d.success_count += 1;
        } else {
            d.error_count += 1;
            if d.last_error_at.is_none_or(|t| o.at >= t) {
                d.last_error_at = Some(o.at);
                d.last_error_message = o.error_message.as_deref().map(cut_message);
            }
        }
        if let Some(ms) = o.processing_time_ms {
            d.processing_time_ms = d.processing_time_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
            d.timed_jobs += 1;
        }
    }
    map.into_values().collect()
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
    /// Batches written at once (default: 4 on Postgres, 1 on SQLite, whose writers
    /// serialise anyway).
    pub max_in_flight: usize,
}

impl RecorderOptions {
    /// The defaults for `store`.
    pub fn for_store(store: &Store) -> RecorderOptions {
        RecorderOptions {
            max_batch_outcomes: 20_000,
            max_in_flight: match store {
                Store::Postgres(_) => 4,
                Store::Sqlite(_) => 1,
            },
        }
    }
}

struct Submission {
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

    /// Record several outcomes; returns once all are committed (they commit together).
    pub async fn record_many(&self, outcomes: Vec<Outcome>) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.queue.send(Submission { outcomes, done }).map_err(|_| StoreError::RecorderClosed)?;
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
            let deltas = aggregate(batch.iter().flat_map(|s| s.outcomes.iter()));
            let result = store.upsert_metrics(&deltas).await;
            drop(permit);
            for s in batch {
                // a caller that stopped waiting is no error
                let _ = s.done.send(result.clone());
            }
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
        assert_eq!(d.last_error_message.as_deref(), Some("error at 2025-01-01T10:50:00Z"));
        assert_eq!(d.at.to_rfc3339(), "2025-01-01T10:50:00+00:00");
        assert_eq!(deltas[1].hour_start.to_rfc3339(), "2025-01-01T11:00:00+00:00");
        assert_eq!(deltas[2].repository_id, Uuid::from_u128(2));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE_CHARS + 5);
        assert_eq!(cut_message(&long).chars().count(), MAX_ERROR_MESSAGE_CHARS);
        assert_eq!(cut_message("short"), "short");
    }
}
