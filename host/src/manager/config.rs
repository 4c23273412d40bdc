//! The configuration in force: the database's values with environment overrides marked.

use super::Manager;
use crate::env::ActiveOverride;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// The database.
    Database,
    /// An environment override (SPEC §4).
    Environment,
}

/// An effective value with its source and the database's own value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    /// The value in force.
    pub value: T,
    /// Where it comes from.
    pub source: ValueSource,
    /// The database's value (equal to `value` unless overridden).
    pub database_value: T,
}

impl<T: Clone + PartialEq> Sourced<T> {
    fn new(database_value: T, overridden: Option<T>) -> Sourced<T> {
        match overridden {
            Some(value) => Sourced { value, source: ValueSource::Environment, database_value },
            None => Sourced { value: database_value.clone(), source: ValueSource::Database, database_value },
        }
    }
}

/// The configuration in force: database values with environment overrides marked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectiveConfig {
    /// `rollout_configuration.id`.
    pub id: Uuid,
    /// The feature.
    pub feature_name: String,
    /// The percentage.
    pub rollout_percentage: Sourced<u8>,
    /// Whether the rollout is active.
    pub is_active: bool,
    /// The whitelist.
    pub target_repositories: Vec<String>,
    /// The exclusions.
    pub excluded_repositories: Vec<String>,
    /// The strategy.
    pub rollout_strategy: Sourced<String>,
    /// The error rate (percent) above which to roll back.
    pub max_error_rate: Sourced<f64>,
    /// The health window.
    pub monitoring_window_hours: u32,
    /// Auto-rollback.
    pub auto_rollback_enabled: Sourced<bool>,
    /// The emergency stop.
    pub emergency_stop: Sourced<bool>,
    /// Fewest jobs before a rollback.
    pub min_jobs_for_rollback: u32,
    /// The metadata (`cost_per_job`, …).
    pub metadata: serde_json::Value,
    /// Last change of percentage, strategy or stop.
    pub state_changed_at: DateTime<Utc>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
    /// The version of the snapshot decisions use now.
    pub config_version: u64,
    /// The overrides set in the environment (a percentage override is held off while
    /// `rolled_back`).
    pub env_overrides: Vec<ActiveOverride>,
    /// An automatic rollback is in force: the percentage stays 0 — whatever
    /// `HYBRID_ROLLOUT_PERCENTAGE` says — until an operator sets one (SPEC §4).
    pub rolled_back: bool,
}

impl Manager {
    /// The configuration in force, overrides marked as coming from the environment.
    pub fn effective_config(&self) -> EffectiveConfig {
        let state = self.state();
        let (s, o) = (&state.stored, self.overrides());
        let c = &s.config;
        EffectiveConfig {
            id: s.id,
            feature_name: c.feature_name.clone(),
            // a rollback in force holds the override off (SPEC §4)
            rollout_percentage: Sourced::new(c.rollout_percentage, o.rollout_percentage.filter(|_| !s.rolled_back)),
            is_active: c.is_active,
            target_repositories: c.target_repositories.clone(),
            excluded_repositories: c.excluded_repositories.clone(),
            rollout_strategy: Sourced::new(
                c.rollout_strategy.as_str().to_owned(),
                o.rollout_strategy.map(|s| s.as_str().to_owned()),
            ),
            max_error_rate: Sourced::new(c.max_error_rate, o.max_error_rate),
            monitoring_window_hours: c.monitoring_window_hours,
            auto_rollback_enabled: Sourced::new(c.auto_rollback_enabled, o.auto_rollback_enabled),
            emergency_stop: Sourced::new(c.emergency_stop, o.emergency_stop),
            min_jobs_for_rollback: c.min_jobs_for_rollback,
            metadata: s.metadata.clone(),
            state_changed_at: s.state_changed_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
            config_version: state.snapshot.version(),
            env_overrides: o.active(),
            rolled_back: s.rolled_back,
        }
    }
}
