//! A demo data set for `make run` and the operations guide: repositories in every category,
//! a first ramp step with a cost configuration and a whitelisted repository, and twelve
//! hours of job outcomes routed by the policy.
//!
//! [`seed`] is idempotent: repositories are upserted by `owner/name` and re-categorised,
//! while the configuration changes and the outcomes are made only on the first run (when
//! the rollout has no outcomes yet), so running it again changes no counts and writes no
//! history.
//!
//! Not public API: `rollout demo seed` is its one caller.

use crate::input::values::{ErrorMessage, ProcessingTimeMs, RepositoryRef};
use crate::manager::{Manager, ManagerResult, OutcomeInput};
use crate::store::recorder::{aggregate, Outcome};
use crate::store::{Change, ChangeRequest, ConfigPatch, StoreError};
use chrono::{DateTime, TimeDelta, Utc};
use rollout_policy::{EligibilityReason, Job, Processor, RepositoryStats, TriggerSource};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// `triggered_by` of the changes the seeder makes.
pub const DEMO_TRIGGER: &str = "demo_seed";

/// The owners of the demo repositories (`acme/demo-000`, `globex/demo-001`, …).
pub const DEMO_OWNERS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];

/// Hours of outcomes the seeder writes, ending now.
pub const DEMO_HOURS: i64 = 12;

/// What to seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// Repositories to create (`repositories` rows), spread over every category.
    pub repositories: u32,
    /// Job outcomes to record over the last [`DEMO_HOURS`] hours (first run only).
    pub outcomes: u32,
    /// The percentage of the first ramp step (set only when the rollout is at 0 %).
    pub percentage: u8,
}

impl Default for DemoOptions {
    /// 300 repositories, 1,200 outcomes, 25 %.
    fn default() -> Self {
        DemoOptions { repositories: 300, outcomes: 1200, percentage: 25 }
    }
}

/// What [`seed`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoSummary {
    /// Demo repositories present (created or updated).
    pub repositories: u64,
    /// Repositories categorised by the policy, per category.
    pub by_category: BTreeMap<String, u64>,
    /// Outcomes recorded by this run (0 when the rollout already had outcomes).
    pub outcomes_recorded: u64,
    /// Of those, failures.
    pub errors_recorded: u64,
    /// Whether this run set the first ramp step.
    pub percentage_set: bool,
    /// The percentage now in the database.
    pub percentage: u8,
    /// A demo repository (`owner/name`) the rollout admits by percentage — the one the
    /// `make run` examples route — or the first one when none is admitted.
    pub example_repository: Option<String>,
    /// Its id.
    pub example_repository_id: Option<Uuid>,
}

/// The demo's generator: every seed writes the same data.
use crate::rng::SplitMix as Mix;

/// The activity numbers of demo repository `i`: 20 % test, 30 % small, 20 % medium,
/// 20 % large, 10 % enterprise (SPEC §2.4 bands).
pub fn demo_stats(i: u32) -> RepositoryStats {
    let mut r = Mix(u64::from(i) ^ 0x5EED);
    let (stars, contributors, prs) = match i % 10 {
        0 | 1 => (0, r.range(1, 2), r.range(0, 10)),
        2..=4 => (r.range(1, 50), r.range(1, 10), r.range(5, 100)),
        5 | 6 => (r.range(51, 500), r.range(5, 50), r.range(101, 1000)),
        7 | 8 => (r.range(501, 5000), r.range(20, 200), r.range(1001, 10_000)),
        _ => (r.range(5001, 90_000), r.range(201, 2000), r.range(10_001, 80_000)),
    };
    RepositoryStats { star_count: stars, contributor_count: contributors, pr_count: prs }
}

/// The `owner/name` of demo repository `i`.
pub fn demo_name(i: u32) -> (&'static str, String) {
    (DEMO_OWNERS[i as usize % DEMO_OWNERS.len()], format!("demo-{i:03}"))
}

fn demo_job(k: u32) -> Job {
    match k % 6 {
        0 => Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() },
        1 => Job { trigger_source: Some(TriggerSource::Manual), max_items: Some(20), ..Job::default() },
        2 => Job { time_range_days: Some(30), ..Job::default() },
        3 => Job { pr_numbers: vec![u64::from(k % 900) + 1, u64::from(k % 900) + 2], ..Job::default() },
        4 => Job { max_items: Some(500), trigger_source: Some(TriggerSource::Automatic), ..Job::default() },
        _ => Job { time_range_days: Some(1), ..Job::default() },
    }
}

const DEMO_ERRORS: [&str; 5] = [
    "GitHub API rate limit exceeded (403)",
    "network timeout after 30s",
    "GraphQL: Could not resolve to a Repository (not found)",
    "database connection refused",
    "workflow run cancelled",
];

/// Seed the demo into the manager's database (see the module documentation).
pub async fn seed(manager: &Manager, options: &DemoOptions) -> ManagerResult<DemoSummary> {
    let store = manager.store();
    let mut ids: Vec<Uuid> = Vec::with_capacity(options.repositories as usize);
    for i in 0..options.repositories {
        let (owner, name) = demo_name(i);
        ids.push(store.upsert_repository(owner, &name, &demo_stats(i)).await?);
    }
    let categorized = manager.categorize_all(false).await?;

    let config = manager.stored_config();
    let first_run = store.list_buckets(config.id).await?.is_empty();
    let mut summary = DemoSummary {
        repositories: ids.len() as u64,
        by_category: categorized.by_category,
        outcomes_recorded: 0,
        errors_recorded: 0,
        percentage_set: false,
        percentage: config.config.rollout_percentage,
        example_repository: None,
        example_repository_id: None,
    };
    if first_run && !ids.is_empty() {
        first_seed(manager, options, &ids, &mut summary).await?;
    }
    let example = ids
        .iter()
        .position(|id| manager.is_eligible(&id.to_string()).reason == EligibilityReason::InPercentage)
        .or_else(|| (!ids.is_empty()).then_some(0));
    if let Some(i) = example {
        let (owner, name) = demo_name(i as u32);
        summary.example_repository = Some(format!("{owner}/{name}"));
        summary.example_repository_id = Some(ids[i]);
    }
    Ok(summary)
}

/// One configuration change of the demo, audited as made by [`DEMO_TRIGGER`].
async fn change(manager: &Manager, change: Change, reason: &str) -> ManagerResult<()> {
    manager.change(&ChangeRequest::new(change, Some(reason.to_owned()), DEMO_TRIGGER)).await.map(|_| ())
}

/// The configuration changes and outcomes of the first run.
async fn first_seed(
    manager: &Manager,
    options: &DemoOptions,
    ids: &[Uuid],
    summary: &mut DemoSummary,
) -> ManagerResult<()> {
    let store = manager.store();
    let config = manager.stored_config();

    if config.metadata.get("cost_per_job").is_none() {
        let mut metadata = match &config.metadata {
            serde_json::Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        metadata.insert("cost_per_job".into(), serde_json::json!({"inngest": 0.0004, "github_actions": 0.0001}));
        let patch = ConfigPatch { metadata: Some(serde_json::Value::Object(metadata)), ..ConfigPatch::default() };
        change(manager, Change::Update(patch), "demo: per-job costs for the cost estimate").await?;
    }
    if config.config.target_repositories.is_empty() {
        let (owner, name) = demo_name(1);
        let id = store.resolve_repository_id(&format!("{owner}/{name}")).await?;
        change(manager, Change::WhitelistAdd(vec![id]), "demo: an early adopter").await?;
    }
    if config.config.rollout_percentage == 0 && options.percentage > 0 {
        change(manager, Change::SetPercentage(options.percentage), "demo: first ramp step").await?;
        summary.percentage_set = true;
        summary.percentage = options.percentage;
    }

    // Outcomes: 4 in 5 spread over the previous hours (written straight into their hour
    // buckets), the rest now through the recorder, so health has a window after the ramp.
    let now = Utc::now();
    let config_id = manager.stored_config().id;
    let mut past: Vec<Outcome> = Vec::new();
    let mut current: Vec<OutcomeInput> = Vec::new();
    let mut r = Mix(0xD3E0);
    for k in 0..options.outcomes {
        let id = ids[(k as usize * 7 + k as usize / 3) % ids.len()];
        let decision = manager.route(&id.to_string(), &demo_job(k));
        let hours_ago = if k % 5 == 4 { 0 } else { 1 + i64::from(k % (DEMO_HOURS as u32 - 1)) };
        // an error rate falling from about 4 % twelve hours ago to about 1 % now
        let error_permille = 10 + 3 * u64::try_from(hours_ago).unwrap_or(0);
        let success = r.next() % 1000 >= error_permille;
        let time_ms = match decision.processor {
            Processor::Inngest => u64::from(r.range(150, 2500)),
            Processor::GithubActions => u64::from(r.range(20_000, 180_000)),
        };
        let error_message = (!success).then(|| DEMO_ERRORS[k as usize % DEMO_ERRORS.len()].to_owned());
        summary.outcomes_recorded += 1;
        summary.errors_recorded += u64::from(!success);
        if hours_ago == 0 {
            current.push(OutcomeInput {
                repository: RepositoryRef::new(&id.to_string()).map_err(StoreError::InvalidRepositoryId)?,
                processor: decision.processor,
                success,
                processing_time_ms: ProcessingTimeMs::new(time_ms).ok(),
                error_message: error_message.as_deref().and_then(|m| ErrorMessage::new(m).ok()),
                decision_id: None,
            });
        } else {
            let at: DateTime<Utc> = now - TimeDelta::hours(hours_ago) - TimeDelta::seconds(i64::from(r.range(0, 3000)));
            past.push(Outcome {
                config_id,
                repository_id: id,
                processor: decision.processor,
                success,
                processing_time_ms: Some(time_ms),
                error_message,
                at,
            });
        }
    }
    store.upsert_metrics(&aggregate(&past)).await?;
    manager.record_outcomes(current).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_repositories_cover_every_category() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..20 {
            seen.insert(rollout_policy::categorize(&demo_stats(i)).category.as_str());
        }
        assert_eq!(seen.len(), 5, "{seen:?}");
    }

    #[test]
    fn demo_data_is_deterministic() {
        assert_eq!(demo_stats(17), demo_stats(17));
        assert_eq!(demo_name(7), ("globex", "demo-007".to_owned()));
    }
}
