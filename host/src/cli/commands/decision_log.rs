//! `rollout decision-log [--sample-rate R] [--mask-repository-id on|off] [--reason R]`: how
//! many of a feature's served decisions are logged, and whether repository ids are masked
//! (an audited configuration change that every instance follows); with no option, the
//! settings in force.

use super::auto_rollback::Switch;
use crate::cli::context::{apply, open, Ctx, Needs};
use crate::cli::output::history_note;
use crate::cli::{CliError, CliResult, Exit};
use crate::input::values::Reason;
use crate::service::decision_log::{check_sample_rate, LogSettings};
use crate::service::operations::Operation;
use anyhow::anyhow;

/// Options of `rollout decision-log`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The share of decisions logged, from 0 (none, the default) to 1 (every one).
    #[arg(long, value_name = "RATE", allow_negative_numbers = true)]
    pub sample_rate: Option<f64>,
    /// Replace repository ids by a keyed hash (`ROLLOUT_DECISION_LOG_KEY` on each server).
    #[arg(long, value_name = "on|off")]
    pub mask_repository_id: Option<Switch>,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<Reason>,
}

fn describe(s: &LogSettings) -> String {
    format!(
        "sample rate {} ({}), repository ids {}",
        s.sample_rate,
        if s.sample_rate == 0.0 {
            "nothing logged".to_owned()
        } else {
            format!("{:.4} % logged", s.sample_rate * 100.0)
        },
        if s.mask_repository_id { "masked" } else { "kept" }
    )
}

/// Run `rollout decision-log`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let feature = ctx.feature.clone();
    if args.sample_rate.is_none() && args.mask_repository_id.is_none() {
        let (service, _) = open(ctx, Needs::NoPolicy).await?;
        let f = service.feature(&feature).await.map_err(CliError::service("cannot open the rollout"))?;
        let settings = LogSettings::from_metadata(&f.manager.stored_config().metadata);
        println!("decision log of `{feature}`: {}", describe(&settings));
        return Ok(Exit::Ok);
    }
    if let Some(rate) = args.sample_rate {
        check_sample_rate(rate).map_err(|m| CliError::usage(anyhow!("invalid `--sample-rate`: {m}")))?;
    }
    let operation = Operation::SetDecisionLog {
        sample_rate: args.sample_rate,
        mask_repository_id: args.mask_repository_id.map(|s| matches!(s, Switch::On)),
    };
    apply(ctx, operation, args.reason, |o| {
        let settings = LogSettings::from_metadata(&o.config.metadata);
        format!("decision log of `{feature}`: {} ({})", describe(&settings), history_note(o))
    })
    .await
}
