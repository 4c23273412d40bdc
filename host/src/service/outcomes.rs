//! Outcomes: durable when the database takes them, buffered while it is unreachable and
//! written when it returns.
//!
//! - An outcome keeps the time it was accepted ([`Submission`]): written late, it still
//!   counts in the hour and the health window it belongs to, never in the window of a ramp
//!   made after it.
//! - The buffer is bounded by outcomes and by bytes ([`ServiceOptions::outcome_buffer`],
//!   [`ServiceOptions::outcome_buffer_bytes`]); beyond either, the request is answered
//!   "unavailable" (503 with `Retry-After`) and counted — never an unbounded memory.
//!
//! [`ServiceOptions::outcome_buffer`]: super::ServiceOptions::outcome_buffer
//! [`ServiceOptions::outcome_buffer_bytes`]: super::ServiceOptions::outcome_buffer_bytes

use super::db::is_unreachable;
use super::{Feature, Service, ServiceError, ServiceResult};
use crate::manager::{ManagerError, OutcomeInput, Submission};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Submissions of one feature waiting for the database.
#[derive(Debug, Default)]
pub(crate) struct OutcomeBuffer {
    queue: Mutex<Queue>,
    /// Outcomes taken from the queue and being written now (still counted as buffered, so
    /// the status never shows them as gone early).
    flushing: AtomicUsize,
}

#[derive(Debug, Default)]
struct Queue {
    submissions: VecDeque<Submission>,
    outcomes: usize,
    bytes: usize,
}

impl Queue {
    fn push_back(&mut self, s: Submission) {
        self.outcomes += s.outcomes.len();
        self.bytes += s.weight();
        self.submissions.push_back(s);
    }

    fn push_front(&mut self, s: Submission) {
        self.outcomes += s.outcomes.len();
        self.bytes += s.weight();
        self.submissions.push_front(s);
    }

    fn pop_front(&mut self) -> Option<Submission> {
        let s = self.submissions.pop_front()?;
        self.outcomes -= s.outcomes.len();
        self.bytes -= s.weight();
        Some(s)
    }
}

impl OutcomeBuffer {
    /// Outcomes waiting (queued or being written).
    pub(crate) fn len(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.outcomes) + self.flushing.load(Ordering::Relaxed)
    }

    /// Bytes the queued outcomes hold.
    pub(crate) fn bytes(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.bytes)
    }
}

/// What recording did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Committed: durable.
    Durable(usize),
    /// The database is unreachable: kept in this process's buffer, written when it is back.
    Buffered(usize),
}

impl Service {
    /// Record outcomes of `feature`, accepted now: durable when the database takes them,
    /// buffered while it is unreachable.
    pub async fn record_outcomes(&self, feature: &Arc<Feature>, inputs: Vec<OutcomeInput>) -> ServiceResult<Recorded> {
        self.attribute_outcomes(&inputs);
        let submission = Submission::now(inputs);
        let n = submission.outcomes.len();
        if !self.inner.db.is_down() {
            let result = feature.manager.record(&submission).await;
            self.inner.db.observe(&result);
            match result {
                Ok(()) => {
                    self.outcomes_committed(feature);
                    return Ok(Recorded::Durable(n));
                }
                Err(ManagerError::Store(e)) if is_unreachable(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.buffer(feature, submission)?;
        Ok(Recorded::Buffered(n))
    }

    fn outcomes_committed(&self, feature: &Feature) {
        feature.health_due.store(true, Ordering::Relaxed);
        self.inner.health_kick.notify_one();
    }

    fn buffer(&self, feature: &Feature, submission: Submission) -> ServiceResult<()> {
        let (limit, byte_limit) = (self.inner.options.outcome_buffer, self.inner.options.outcome_buffer_bytes);
        let mut queue =
            feature.buffer.queue.lock().map_err(|_| ServiceError::Internal("the outcome buffer is unusable".into()))?;
        if queue.outcomes + submission.outcomes.len() > limit || queue.bytes + submission.weight() > byte_limit {
            self.inner.metrics.outcomes_refused(submission.outcomes.len());
            return Err(ServiceError::Unavailable(format!(
                "the database is unreachable and the outcome buffer is full ({} outcomes, {} of {byte_limit} bytes \
                 waiting; at most {limit} outcomes); retry later",
                queue.outcomes, queue.bytes
            )));
        }
        queue.push_back(submission);
        feature.counters.set_buffered(queue.outcomes, queue.bytes);
        Ok(())
    }

    /// Write buffered outcomes of every feature; returns how many are still waiting.
    pub async fn flush_buffers(&self) -> usize {
        let mut waiting = 0;
        for feature in self.features() {
            waiting += self.flush_feature(&feature).await;
        }
        waiting
    }

    /// Take submissions from the head of the queue, up to `max_batch` outcomes (at least one
    /// submission), counting them as being written.
    fn take(&self, feature: &Feature) -> Vec<Submission> {
        let max = self.inner.options.max_batch;
        let Ok(mut queue) = feature.buffer.queue.lock() else { return Vec::new() };
        let mut taken = Vec::new();
        let mut n = 0;
        while let Some(front) = queue.submissions.front() {
            if !taken.is_empty() && n + front.outcomes.len() > max {
                break;
            }
            n += front.outcomes.len();
            if let Some(s) = queue.pop_front() {
                taken.push(s);
            }
        }
        feature.buffer.flushing.store(n, Ordering::Relaxed);
        taken
    }

    fn requeue(&self, feature: &Feature, submissions: Vec<Submission>) -> usize {
        if let Ok(mut queue) = feature.buffer.queue.lock() {
            for s in submissions.into_iter().rev() {
                queue.push_front(s);
            }
            feature.buffer.flushing.store(0, Ordering::Relaxed);
            feature.counters.set_buffered(queue.outcomes, queue.bytes);
            return queue.outcomes;
        }
        feature.buffer.len()
    }

    async fn flush_feature(&self, feature: &Arc<Feature>) -> usize {
        loop {
            let mut work: VecDeque<Submission> = self.take(feature).into();
            if work.is_empty() {
                return 0;
            }
            while let Some(submission) = work.pop_front() {
                let result = feature.manager.record(&submission).await;
                self.inner.db.observe(&result);
                match result {
                    Ok(()) => {
                        tracing::info!(
                            feature = feature.name(),
                            outcomes = submission.outcomes.len(),
                            "flushed buffered outcomes"
                        );
                        self.outcomes_committed(feature);
                    }
                    Err(ManagerError::Store(e)) if is_unreachable(&e) => {
                        // not written now, nor will the rest be: keep them all, in order
                        tracing::debug!(feature = feature.name(), "cannot flush buffered outcomes yet: {e}");
                        work.push_front(submission);
                        return self.requeue(feature, work.into());
                    }
                    Err(e) => match submission.halves() {
                        // refused for its content: isolate the outcome at fault, write the rest
                        Some((a, b)) => {
                            work.push_front(b);
                            work.push_front(a);
                        }
                        None => self.dead_letter(feature, submission, &e.to_string()),
                    },
                }
            }
            feature.buffer.flushing.store(0, Ordering::Relaxed);
            feature.counters.set_buffered(feature.buffer.len(), feature.buffer.bytes());
        }
    }

    /// An outcome the database refused for its content: kept aside (bounded), logged and
    /// counted, so the buffer behind it drains.
    fn dead_letter(&self, feature: &Feature, submission: Submission, error: &str) {
        for outcome in &submission.outcomes {
            tracing::error!(
                feature = feature.name(),
                repository = %outcome.repository,
                processor = %outcome.processor,
                accepted_at = %submission.accepted_at,
                "a buffered outcome was refused by the database and set aside: {error}"
            );
        }
        feature.counters.dead_lettered(submission.outcomes.len());
        feature.push_dead_letter(DeadLetter {
            accepted_at: submission.accepted_at,
            outcomes: submission.outcomes.len(),
            repository: submission.outcomes.first().map(|o| o.repository.to_string()).unwrap_or_default(),
            error: error.to_owned(),
        });
    }
}

/// A buffered outcome the database refused for its content, set aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// When it was accepted.
    pub accepted_at: chrono::DateTime<chrono::Utc>,
    /// How many outcomes (one, after splitting).
    pub outcomes: usize,
    /// Its repository.
    pub repository: String,
    /// The database's refusal.
    pub error: String,
}
