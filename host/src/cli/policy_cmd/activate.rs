//! `rollout policy activate SHA [--reason R]`: validate a stored version and make it the
//! active one (a sha256 or a unique prefix of at least 6 hex digits).

use super::{reason, DatabaseArg};
use crate::cli::context::{actor, open, Ctx, Needs};
use crate::cli::output::{print_json, short};
use crate::cli::{CliError, CliResult, Exit};

/// Options of `rollout policy activate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The version's sha256, or a unique prefix of at least 6 hex digits.
    pub sha256: String,
    /// Why (kept in the history).
    #[arg(long)]
    pub reason: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Run `rollout policy activate`.
pub async fn run(args: Args, ctx: &Ctx) -> CliResult {
    let reason = reason(args.reason.as_deref())?;
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let sha = service.resolve_policy(&args.sha256).await.map_err(CliError::service("cannot find the policy"))?;
    let done = service
        .activate_policy(&sha, reason, &actor()?)
        .await
        .map_err(CliError::service(format!("policy `{sha}` refused")))?;
    if ctx.json {
        print_json(&done)?;
    } else {
        outln!(
            "activated {} {} (sha256 {}); previously {}",
            done.serving.name,
            done.serving.version,
            short(sha.as_str()),
            done.previous_sha256.as_deref().map_or("the bundled policy", short)
        );
    }
    Ok(Exit::Ok)
}
