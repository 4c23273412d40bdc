//! Job outcomes: validated by type, resolved to repository ids, written by group commit.

use super::{Manager, ManagerResult};
use crate::input::values::{ErrorMessage, ProcessingTimeMs, RepositoryRef};
use crate::store::recorder::Outcome;
use chrono::{DateTime, Utc};
use rollout_policy::Processor;
use uuid::Uuid;

/// A job outcome as callers report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeInput {
    /// A UUID, or `owner/name` resolved through `repositories`.
    pub repository: RepositoryRef,
    /// Where the job ran.
    pub processor: Processor,
    /// Whether it succeeded.
    pub success: bool,
    /// Processing time, when known.
    pub processing_time_ms: Option<ProcessingTimeMs>,
    /// The error message of a failure (ignored for a success).
    pub error_message: Option<ErrorMessage>,
    /// The decision this outcome followed (the `decision_id` a decision returned), so
    /// statistics can attribute it to the policy and configuration that decided.
    pub decision_id: Option<Uuid>,
}

impl OutcomeInput {
    /// Bytes this outcome holds in memory (for bounding buffers).
    pub fn weight(&self) -> usize {
        std::mem::size_of::<OutcomeInput>()
            + self.repository.as_str().len()
            + self.error_message.as_ref().map_or(0, |m| m.as_str().len())
    }
}

/// Outcomes accepted together (one request): they are counted at the time they were
/// accepted — in that hour's bucket and that health window — however late they are
/// written (an outage buffer flushes them later), and exactly once: the submission's `id`
/// is its idempotency key, so writing it again after a lost reply changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The idempotency key (made once, at acceptance; kept through every retry).
    pub id: Uuid,
    /// When the service accepted them.
    pub accepted_at: DateTime<Utc>,
    /// The outcomes, in order.
    pub outcomes: Vec<OutcomeInput>,
}

impl Submission {
    /// Outcomes accepted now, with a fresh key.
    pub fn now(outcomes: Vec<OutcomeInput>) -> Submission {
        Submission { id: Uuid::new_v4(), accepted_at: Utc::now(), outcomes }
    }

    /// The two halves of a submission the database refused, to find the outcome at fault.
    /// Their keys derive from this one (sha256 of key and half), so a half written, then
    /// retried after a lost reply, still counts once; `None` for a single outcome.
    pub fn halves(&self) -> Option<(Submission, Submission)> {
        if self.outcomes.len() < 2 {
            return None;
        }
        let mid = self.outcomes.len() / 2;
        let key = |half: u8| {
            use sha2::Digest;
            let digest = sha2::Sha256::new().chain_update(self.id.as_bytes()).chain_update([half]).finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
            Uuid::from_bytes(bytes)
        };
        let part = |half: u8, outcomes: &[OutcomeInput]| Submission {
            id: key(half),
            accepted_at: self.accepted_at,
            outcomes: outcomes.to_vec(),
        };
        let (a, b) = self.outcomes.split_at(mid);
        Some((part(0, a), part(1, b)))
    }

    /// Bytes the submission holds in memory (for bounding buffers).
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Submission>() + self.outcomes.iter().map(OutcomeInput::weight).sum::<usize>()
    }
}

impl Manager {
    async fn to_outcome(&self, input: OutcomeInput, config_id: Uuid, at: DateTime<Utc>) -> ManagerResult<Outcome> {
        let repository_id = self.store.resolve_repository_id(input.repository.as_str()).await?;
        Ok(Outcome {
            config_id,
            repository_id,
            processor: input.processor,
            success: input.success,
            processing_time_ms: input.processing_time_ms.map(ProcessingTimeMs::get),
            error_message: if input.success { None } else { input.error_message.map(ErrorMessage::into_string) },
            at,
        })
    }

    /// Record one job outcome accepted now; returns once it is durable (group commit).
    pub async fn record_outcome(&self, input: OutcomeInput) -> ManagerResult<()> {
        self.record(&Submission::now(vec![input])).await
    }

    /// Record several outcomes accepted now; all are resolved first, then committed together.
    pub async fn record_outcomes(&self, inputs: Vec<OutcomeInput>) -> ManagerResult<()> {
        self.record(&Submission::now(inputs)).await
    }

    /// Record a submission at the time it was accepted; returns once it is durable.
    pub async fn record(&self, submission: &Submission) -> ManagerResult<()> {
        let config_id = self.state().stored.id;
        // The links first: a submission retried after a failure links again harmlessly
        // (same key), so every outcome that becomes durable has its link.
        let links: Vec<crate::store::DecisionOutcome> = submission
            .outcomes
            .iter()
            .filter_map(|o| {
                o.decision_id.map(|decision_id| crate::store::DecisionOutcome {
                    decision_id,
                    feature: self.feature.clone(),
                    success: o.success,
                    recorded_at: submission.accepted_at,
                })
            })
            .collect();
        if !links.is_empty() {
            self.store.link_outcomes(&links).await?;
        }
        let mut outcomes = Vec::with_capacity(submission.outcomes.len());
        for input in &submission.outcomes {
            outcomes.push(self.to_outcome(input.clone(), config_id, submission.accepted_at).await?);
        }
        Ok(self.recorder.record_batch(submission.id, outcomes).await?)
    }
}
