//! `rollout policy revert [--reason R]`: make the previously active version active again —
//! the service's rule, the same as `POST /v1/policies/revert`.

use super::{reason, DatabaseArg};
use crate::cli::context::{actor, open, Ctx, Needs};
use crate::cli::output::{print_json, short};
use crate::cli::{CliError, CliResult, Exit};

/// Options of `rollout policy revert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Run `rollout policy revert`.
pub async fn run(args: Args, ctx: &Ctx) -> CliResult {
    let reason = reason(args.reason.as_deref())?;
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let done = service.revert_policy(reason, &actor()?).await.map_err(CliError::service("cannot revert the policy"))?;
    if ctx.json {
        print_json(&done)?;
    } else {
        outln!(
            "reverted to {} {} (sha256 {}); previously {}",
            done.serving.name,
            done.serving.version,
            short(&done.serving.sha256),
            done.previous_sha256.as_deref().map_or("none", short)
        );
    }
    Ok(Exit::Ok)
}
