//! `rollout history [--limit N]`: the audit history, newest first.

use crate::cli::context::{open, Ctx, Needs};
use crate::cli::output::{history_table, print_json};
use crate::cli::{CliError, CliResult, Exit};

/// Options of `rollout history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// Run `rollout history`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let rows = service
        .history(&ctx.feature, args.limit)
        .await
        .map_err(CliError::service(format!("cannot read the history of `{}`", ctx.feature)))?;
    if ctx.json {
        print_json(&rows)?;
    } else if rows.is_empty() {
        outln!("no history for `{}`", ctx.feature);
    } else {
        out!("{}", history_table(&rows));
    }
    Ok(Exit::Ok)
}
