//! `rollout record ID --processor P (--success | --error MSG) [--time-ms N]`: record a job
//! outcome (returns once it is durable).

use crate::cli::context::{open, Ctx, Needs};
use crate::cli::output::print_json;
use crate::cli::{CliError, CliResult, Exit};
use crate::input::values::{ErrorMessage, ProcessingTimeMs, RepositoryRef};
use crate::manager::OutcomeInput;
use crate::service::outcomes::Recorded;
use anyhow::anyhow;
use clap::ArgGroup;
use rollout_policy::Processor;

/// `record ID --processor P (--success | --error MSG) [--time-ms N]`.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("result").required(true).args(["success", "error"])))]
pub struct Args {
    /// The repository (UUID or owner/name).
    pub id: RepositoryRef,
    /// Where the job ran: inngest or github_actions.
    #[arg(long, value_parser = parse_processor)]
    pub processor: Processor,
    /// The job succeeded.
    #[arg(long)]
    pub success: bool,
    /// The job failed with this message.
    #[arg(long, value_name = "MSG")]
    pub error: Option<ErrorMessage>,
    /// How long it took, in milliseconds (at most 7 days).
    #[arg(long, value_name = "N")]
    pub time_ms: Option<ProcessingTimeMs>,
}

fn parse_processor(s: &str) -> Result<Processor, String> {
    Processor::parse(s.trim()).map_err(|e| e.to_string())
}

/// Run `rollout record`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    if args.error.as_ref().is_some_and(|m| m.as_str().trim().is_empty()) {
        return Err(CliError::usage(anyhow!("invalid `--error`: the message must not be empty")));
    }
    let success = args.success && args.error.is_none();
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let feature = service.feature(&ctx.feature).await.map_err(CliError::service("cannot open the rollout"))?;
    let input = OutcomeInput {
        repository: args.id.clone(),
        processor: args.processor,
        success,
        processing_time_ms: args.time_ms,
        error_message: args.error.clone(),
        decision_id: None,
    };
    let recorded = service
        .record_outcomes(&feature, vec![input])
        .await
        .map_err(CliError::service(format!("cannot record the outcome for `{}`", args.id)))?;
    if let Recorded::Buffered(_) = recorded {
        return Err(CliError::unavailable(anyhow!("the database is unreachable: the outcome was not recorded")));
    }
    if ctx.json {
        print_json(&serde_json::json!({
            "recorded": true,
            "repository_id": args.id,
            "processor_type": args.processor.as_str(),
            "success": success,
            "processing_time_ms": args.time_ms,
            "error_message": args.error,
        }))?;
    } else {
        let outcome = if success {
            "a success".to_owned()
        } else {
            format!("an error ({})", args.error.as_ref().map_or("", ErrorMessage::as_str))
        };
        let time = args.time_ms.map_or(String::new(), |ms| format!(" in {ms} ms"));
        outln!("recorded {outcome} on {} for `{}`{time}", args.processor.as_str(), args.id);
    }
    Ok(Exit::Ok)
}
