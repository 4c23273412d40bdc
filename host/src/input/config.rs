//! A configuration as JSON gives it (case files, `--config` of the authoring tools): the
//! columns of `rollout_configuration` plus `min_jobs_for_rollback`, every field optional.

use super::values::{ErrorRate, MinJobs, Percentage, WindowHours};
use rollout_policy::{Config, Strategy};
use serde::Deserialize;

/// A configuration with every field optional; [`ConfigInput::into_config`] fills the
/// seed's defaults. The bookkeeping columns (`id`, `metadata`, `created_at`, `updated_at`)
/// are accepted and ignored, so a row exported from the database is a valid input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    /// The feature (part of the hash input).
    #[serde(default)]
    pub feature_name: Option<String>,
    /// 0..=100.
    #[serde(default)]
    pub rollout_percentage: Option<Percentage>,
    /// Whether the rollout is active.
    #[serde(default, deserialize_with = "super::values::opt_boolean")]
    pub is_active: Option<bool>,
    /// The whitelist, as id text.
    #[serde(default)]
    pub target_repositories: Option<Vec<String>>,
    /// The exclusions, as id text.
    #[serde(default)]
    pub excluded_repositories: Option<Vec<String>>,
    /// `percentage`, `whitelist` or `repository_size`.
    #[serde(default)]
    pub rollout_strategy: Option<Strategy>,
    /// Error rate (percent) above which to roll back.
    #[serde(default)]
    pub max_error_rate: Option<ErrorRate>,
    /// The health window in hours.
    #[serde(default)]
    pub monitoring_window_hours: Option<WindowHours>,
    /// Whether the health check may roll back by itself.
    #[serde(default, deserialize_with = "super::values::opt_boolean")]
    pub auto_rollback_enabled: Option<bool>,
    /// The emergency stop.
    #[serde(default, deserialize_with = "super::values::opt_boolean")]
    pub emergency_stop: Option<bool>,
    /// Fewest jobs before a rollback may be decided.
    #[serde(default)]
    pub min_jobs_for_rollback: Option<MinJobs>,
    /// Ignored (a database column).
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    /// Ignored (a database column).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Ignored (a database column).
    #[serde(default)]
    pub created_at: Option<serde_json::Value>,
    /// Ignored (a database column).
    #[serde(default)]
    pub updated_at: Option<serde_json::Value>,
}

impl ConfigInput {
    /// The configuration: omitted fields take the seed's defaults, except `is_active`,
    /// which defaults to `is_active_default` (true in case files, SPEC §5).
    pub fn into_config(self, is_active_default: bool) -> Config {
        let d = Config::default();
        Config {
            feature_name: self.feature_name.unwrap_or(d.feature_name),
            rollout_percentage: self.rollout_percentage.map_or(d.rollout_percentage, Percentage::get),
            is_active: self.is_active.unwrap_or(is_active_default),
            target_repositories: self.target_repositories.unwrap_or_default(),
            excluded_repositories: self.excluded_repositories.unwrap_or_default(),
            rollout_strategy: self.rollout_strategy.unwrap_or(d.rollout_strategy),
            max_error_rate: self.max_error_rate.map_or(d.max_error_rate, ErrorRate::get),
            monitoring_window_hours: self.monitoring_window_hours.map_or(d.monitoring_window_hours, WindowHours::get),
            auto_rollback_enabled: self.auto_rollback_enabled.unwrap_or(d.auto_rollback_enabled),
            emergency_stop: self.emergency_stop.unwrap_or(d.emergency_stop),
            min_jobs_for_rollback: self.min_jobs_for_rollback.map_or(d.min_jobs_for_rollback, MinJobs::get),
        }
    }
}
