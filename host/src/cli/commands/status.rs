//! `rollout status`: the configuration in force (environment overrides marked), the policy,
//! and health.

use crate::cli::context::{open, Ctx, Needs, PolicyInfo};
use crate::cli::output::{health_line, list_summary, name_of, on_off, pct, print_json, sourced, time, yes_no};
use crate::cli::table::{pairs, Table};
use crate::cli::{CliError, CliResult, Exit};
use crate::manager::{EffectiveConfig, HealthReport};
use serde::Serialize;

/// The status document of `rollout status --json`.
#[derive(Debug, Serialize)]
struct StatusDoc<'a> {
    feature: &'a str,
    database: serde_json::Value,
    config: &'a EffectiveConfig,
    policy: &'a PolicyInfo,
    health: &'a HealthReport,
}

/// Run `rollout status`.
pub async fn run(ctx: &Ctx) -> CliResult {
    let (service, policy) = open(ctx, Needs::Policy).await?;
    let policy = policy.unwrap_or_else(PolicyInfo::bundled);
    let health =
        service.check_health(&ctx.feature, false).await.map_err(CliError::service("cannot evaluate health"))?;
    let feature = service.feature(&ctx.feature).await.map_err(CliError::service("cannot open the rollout"))?;
    let config = feature.manager.effective_config();
    let backend = service.store().backend();
    if ctx.json {
        print_json(&StatusDoc {
            feature: &ctx.feature,
            database: serde_json::json!({"url": ctx.redacted(), "backend": backend}),
            config: &config,
            policy: &policy,
            health: &health,
        })?;
        return Ok(Exit::Ok);
    }
    let rows = vec![
        ("feature", config.feature_name.clone()),
        ("database", format!("{} ({})", ctx.redacted(), name_of(&backend))),
        (
            "percentage",
            if config.rolled_back {
                format!(
                    "{} % (rolled back automatically: held at 0 % until an operator sets a percentage)",
                    config.rollout_percentage.value
                )
            } else {
                sourced(&config.rollout_percentage, |p| format!("{p} %"))
            },
        ),
        ("strategy", sourced(&config.rollout_strategy, Clone::clone)),
        ("emergency stop", sourced(&config.emergency_stop, |b| on_off(*b).to_owned())),
        ("active", yes_no(config.is_active).to_owned()),
        ("auto-rollback", sourced(&config.auto_rollback_enabled, |b| on_off(*b).to_owned())),
        ("max error rate", sourced(&config.max_error_rate, |r| pct(*r))),
        (
            "health window",
            format!(
                "{} h, at least {} jobs to roll back",
                config.monitoring_window_hours, config.min_jobs_for_rollback
            ),
        ),
        ("whitelist", list_summary(&config.target_repositories)),
        ("exclusions", list_summary(&config.excluded_repositories)),
        ("policy", policy.line()),
        ("health", health_line(&health)),
        ("state changed", time(&config.state_changed_at)),
        ("updated", time(&config.updated_at)),
    ];
    out!("{}", pairs(&rows));
    if !config.env_overrides.is_empty() {
        outln!();
        let mut t = Table::new(["environment override", "field", "value"]);
        for o in &config.env_overrides {
            t.row([o.variable.to_owned(), o.field.to_owned(), o.value.clone()]);
        }
        out!("{}", t.render());
    }
    Ok(Exit::Ok)
}
