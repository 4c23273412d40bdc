//! `rollout demo seed`: demo data for trying the tools (`make run` seeds it).

use crate::cli::context::{open, Ctx, Needs, PolicyInfo};
use crate::cli::output::print_json;
use crate::cli::{CliError, CliResult, Exit};
use clap::Subcommand;

/// `demo` subcommands.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Seed demo repositories, categories, a first ramp step and outcomes (idempotent).
    Seed {
        /// Repositories to create.
        #[arg(long, default_value_t = 300)]
        repositories: u32,
        /// Outcomes to record (first run only).
        #[arg(long, default_value_t = 1200)]
        outcomes: u32,
        /// The first ramp step, set only when the rollout is at 0 %.
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u8).range(0..=100))]
        percentage: u8,
    },
}

/// Run `rollout demo seed`.
pub async fn run(ctx: &Ctx, cmd: DemoCommand) -> CliResult {
    let DemoCommand::Seed { repositories, outcomes, percentage } = cmd;
    let options = crate::demo::DemoOptions { repositories, outcomes, percentage };
    let (service, policy) = open(ctx, Needs::Policy).await?;
    let policy = policy.unwrap_or_else(PolicyInfo::bundled);
    let feature = service.feature(&ctx.feature).await.map_err(CliError::service("cannot open the rollout"))?;
    let summary = crate::demo::seed(&feature.manager, &options)
        .await
        .map_err(|e| CliError::service("cannot seed the demo")(e.into()))?;
    if ctx.json {
        print_json(&summary)?;
    } else {
        let categories: Vec<String> = summary.by_category.iter().map(|(c, n)| format!("{c} {n}")).collect();
        outln!(
            "demo: {} repositories ({}); rollout at {} %{}; {} outcomes recorded{} (policy {})",
            summary.repositories,
            categories.join(", "),
            summary.percentage,
            if summary.percentage_set { " (set now)" } else { "" },
            summary.outcomes_recorded,
            if summary.outcomes_recorded == 0 { " (already seeded)" } else { "" },
            policy.line()
        );
        if let (Some(name), Some(id)) = (&summary.example_repository, &summary.example_repository_id) {
            outln!("example repository: {name} {id}");
        }
    }
    Ok(Exit::Ok)
}
