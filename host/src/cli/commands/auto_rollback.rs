//! `rollout auto-rollback on|off [--reason R]`: let the health check roll back by itself, or
//! not.

use crate::cli::context::{apply, Ctx};
use crate::cli::output::{history_note, on_off};
use crate::cli::CliResult;
use crate::input::values::Reason;
use crate::service::operations::Operation;

/// `on` or `off`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Switch {
    /// The health check may roll back.
    On,
    /// The health check only reports.
    Off,
}

/// Options of `rollout auto-rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `on` or `off`.
    pub switch: Switch,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<Reason>,
}

/// Run `rollout auto-rollback`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let on = matches!(args.switch, Switch::On);
    let feature = ctx.feature.clone();
    apply(ctx, Operation::SetAutoRollback(on), args.reason, |o| {
        format!(
            "auto-rollback of `{feature}` is {} ({})",
            on_off(o.config.auto_rollback_enabled.value),
            history_note(o)
        )
    })
    .await
}
