//! `rollout set-percentage N --reason R`.

use crate::cli::context::{apply, Ctx};
use crate::cli::output::history_note;
use crate::cli::CliResult;
use crate::input::values::{Percentage, Reason};
use crate::service::operations::Operation;

/// Options of `rollout set-percentage`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The new percentage, 0 to 100.
    #[arg(value_name = "N", allow_hyphen_values = true)]
    pub percentage: Percentage,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Reason,
}

/// Run `rollout set-percentage`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let feature = ctx.feature.clone();
    apply(ctx, Operation::SetPercentage(args.percentage), Some(args.reason), |o| {
        format!("percentage of `{feature}`: {} % ({})", o.config.rollout_percentage.database_value, history_note(o))
    })
    .await
}
