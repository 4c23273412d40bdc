//! `rollout emergency-stop --reason R [--yes]`: stop the rollout for every repository.

use crate::cli::context::{apply, Ctx};
use crate::cli::output::history_note;
use crate::cli::{CliError, CliResult};
use crate::input::values::Reason;
use crate::service::operations::Operation;
use anyhow::{anyhow, Context};
use std::io::{BufRead, IsTerminal, Write};

/// Options of `rollout emergency-stop`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Reason,
    /// Do not ask; required when standard input is not a terminal.
    #[arg(long)]
    pub yes: bool,
}

/// Ask on the terminal; `Ok(true)` when the answer is yes.
fn confirm(question: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("cannot read the confirmation").map_err(CliError::usage)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Run `rollout emergency-stop`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(anyhow!(
                "refusing to stop the rollout `{}` without confirmation: standard input is not a terminal; pass --yes",
                ctx.feature
            )));
        }
        let question = format!(
            "Stop the rollout `{}` in {} now? Every repository goes back to inngest.",
            ctx.feature,
            ctx.redacted()
        );
        if !confirm(&question)? {
            return Err(CliError::failed(anyhow!("emergency stop not confirmed; nothing changed")));
        }
    }
    let feature = ctx.feature.clone();
    apply(ctx, Operation::EmergencyStop, Some(args.reason), |o| {
        if o.applied {
            format!(
                "emergency stop of `{feature}` is on; the percentage stays {} % for `rollout resume` ({})",
                o.config.rollout_percentage.database_value,
                history_note(o)
            )
        } else {
            format!("the emergency stop of `{feature}` is already on; nothing changed")
        }
    })
    .await
}
