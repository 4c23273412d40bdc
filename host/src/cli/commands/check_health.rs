//! `rollout check-health [--apply]`: health over the window; exit 1 when the level is
//! warning or critical.

use crate::cli::context::{open, Ctx, Needs};
use crate::cli::output::{level_name, pct, print_json, processors_table, time};
use crate::cli::table::pairs;
use crate::cli::{CliError, CliResult, Exit};
use rollout_policy::{HealthAction, HealthLevel};

/// Options of `rollout check-health`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Carry out the rollback the policy asks for.
    #[arg(long)]
    pub apply: bool,
}

/// Run `rollout check-health`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let (service, _) = open(ctx, Needs::Policy).await?;
    let report = service
        .check_health(&ctx.feature, args.apply)
        .await
        .map_err(CliError::service(format!("cannot check the health of `{}`", ctx.feature)))?;
    if ctx.json {
        print_json(&report)?;
    } else {
        let action = if report.rolled_back {
            format!(
                "{} — rolled back to 0 % (history #{})",
                report.action,
                report.rollback.as_ref().map_or(0, |h| h.seq)
            )
        } else if report.action == HealthAction::Rollback && !args.apply {
            "rollback (not applied; run with --apply)".to_owned()
        } else {
            report.action.to_string()
        };
        out!(
            "{}",
            pairs(&[
                ("feature", report.feature_name.clone()),
                ("level", level_name(&report).to_owned()),
                ("action", action),
                ("error rate", format!("{} over {} jobs", pct(report.error_rate), report.total_jobs)),
                ("window", format!("since {} ({} h at most)", time(&report.window_start), report.window_hours)),
                ("reason", report.reason.clone()),
            ])
        );
        outln!();
        out!("{}", processors_table(&report.processors));
    }
    Ok(match report.level {
        Some(HealthLevel::Ok) => Exit::Ok,
        None => Exit::Unavailable,
        Some(HealthLevel::Warning | HealthLevel::Critical) => Exit::Failed,
    })
}
