//! `rollout backlog report|show`: queue backlog reports ([`crate::store::backlog`]) from the
//! command line — report a processor's queue depth and the age of its oldest item (the same
//! call as `PUT /v1/features/{feature}/backlog`), and show the reports of the last hours.

use crate::cli::context::{connect, open, Ctx, Needs};
use crate::cli::output::print_json;
use crate::cli::table::Table;
use crate::cli::{CliError, CliResult, Exit};
use crate::store::BacklogReport;
use clap::Subcommand;
use rollout_policy::Processor;

/// `backlog` subcommands.
#[derive(Debug, Subcommand)]
pub enum BacklogCommand {
    /// Report the backlog of a processor's queue for --feature.
    Report {
        /// Whose queue: inngest or github_actions.
        #[arg(long, value_parser = parse_processor)]
        processor: Processor,
        /// Items waiting (an integer from 0).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        depth: u64,
        /// How long the oldest waiting item has waited, in seconds (0 to 10 years).
        #[arg(long, value_name = "S", default_value_t = 0.0, allow_hyphen_values = true)]
        oldest_age_seconds: f64,
    },
    /// The backlog reports of --feature over the last hours, per processor, oldest first.
    Show {
        /// How many hours back (1 to 168; reports are kept 7 days).
        #[arg(long, value_name = "H", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=168))]
        hours: u32,
    },
}

fn parse_processor(s: &str) -> Result<Processor, String> {
    Processor::parse(s.trim()).map_err(|e| e.to_string())
}

/// Run a `backlog` subcommand.
pub async fn run(ctx: &Ctx, cmd: BacklogCommand) -> CliResult {
    match cmd {
        BacklogCommand::Report { processor, depth, oldest_age_seconds } => {
            report(ctx, processor, depth, oldest_age_seconds).await
        }
        BacklogCommand::Show { hours } => show(ctx, hours).await,
    }
}

async fn report(ctx: &Ctx, processor: Processor, depth: u64, oldest_age_seconds: f64) -> CliResult {
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let stored = service
        .report_backlog(&ctx.feature, processor, depth, oldest_age_seconds)
        .await
        .map_err(CliError::service(format!("cannot report the backlog of `{}`", ctx.feature)))?;
    if ctx.json {
        print_json(&stored)?;
    } else {
        outln!(
            "reported the {} backlog of `{}`: {} waiting, the oldest for {} s",
            stored.processor.as_str(),
            ctx.feature,
            stored.depth,
            stored.oldest_age_seconds
        );
    }
    Ok(Exit::Ok)
}

fn processor_table(reports: &[&BacklogReport]) -> String {
    let mut t = Table::new(["reported", "depth", "oldest age (s)"]).right(1).right(2);
    for r in reports {
        t.row([
            r.reported_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            r.depth.to_string(),
            format!("{:.1}", r.oldest_age_seconds),
        ]);
    }
    t.render()
}

async fn show(ctx: &Ctx, hours: u32) -> CliResult {
    let store = connect(ctx, false).await?;
    let config = store
        .get_config(&ctx.feature)
        .await
        .map_err(|e| CliError::service(format!("cannot read the rollout `{}`", ctx.feature))(e.into()))?;
    let since = chrono::Utc::now() - chrono::TimeDelta::hours(i64::from(hours));
    let reports = store
        .backlog_window(config.id, since)
        .await
        .map_err(|e| CliError::service(format!("cannot read the backlog reports of `{}`", ctx.feature))(e.into()))?;
    if ctx.json {
        print_json(&serde_json::json!({
            "feature": ctx.feature,
            "hours": hours,
            "since": since,
            "reports": reports,
        }))?;
        return Ok(Exit::Ok);
    }
    if reports.is_empty() {
        outln!("no backlog reports for `{}` in the last {hours} h", ctx.feature);
        return Ok(Exit::Ok);
    }
    for processor in Processor::ALL {
        let mine: Vec<&BacklogReport> = reports.iter().filter(|r| r.processor == *processor).collect();
        if mine.is_empty() {
            continue;
        }
        let noun = if mine.len() == 1 { "report" } else { "reports" };
        outln!("{} ({} {noun} in the last {hours} h):", processor.as_str(), mine.len());
        out!("{}", processor_table(&mine));
    }
    Ok(Exit::Ok)
}
