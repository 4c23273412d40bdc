//! `rollout resume --reason R`: lift the emergency stop.

use crate::cli::context::{apply, Ctx};
use crate::cli::output::history_note;
use crate::cli::CliResult;
use crate::input::values::Reason;
use crate::service::operations::Operation;

/// Options of `rollout resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Reason,
}

/// Run `rollout resume`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let feature = ctx.feature.clone();
    apply(ctx, Operation::Resume, Some(args.reason), |o| {
        if o.applied {
            format!(
                "emergency stop of `{feature}` is off; rolling out to {} % ({})",
                o.config.rollout_percentage.database_value,
                history_note(o)
            )
        } else {
            format!("the emergency stop of `{feature}` is not on; nothing to resume")
        }
    })
    .await
}
