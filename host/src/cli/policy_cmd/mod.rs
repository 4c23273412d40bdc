//! `rollout policy …`: the offline authoring tools (test, eval, simulate, diff, bench), one
//! file each, and the policy versions in the database (upload, list, activate, revert: the
//! service's policy lifecycle, the same calls as `/v1/policies`).

mod activate;
mod bench;
mod candidate;
mod diff;
mod eval;
mod list;
mod revert;
mod simulate;
mod test;
mod upload;

use super::context::Ctx;
use super::{CliError, CliResult};
use crate::engine::CallError;
use crate::runtime::{Limits, Sandbox};
use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use std::path::Path;

/// The global `--database-url`, read inside `rollout policy …` subcommands.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArg {
    /// The database URL (the global `--database-url`).
    #[arg(from_global)]
    pub database_url: String,
}

/// Policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run case files against a policy component; ends with `N passed, M failed`.
    Test(test::Args),
    /// Print the decision of each case in a file (`-` for standard input) as JSON.
    Eval(eval::Args),
    /// Ramp a configuration through percentages over a set of repositories; fails (exit 1)
    /// when a repository drops out while ramping.
    Simulate(simulate::Args),
    /// Evaluate two policy versions on case files or JSON-lines corpora and group the
    /// decisions that change; exit 1 when more than `--max-changed` change.
    Diff(diff::Args),
    /// Decisions per second of a component on generated input, one call per decision and
    /// batched, with the native reference rules as a baseline.
    Bench(bench::Args),
    /// Validate a policy component and store it in policy_versions (exit 1 when refused).
    Upload(upload::Args),
    /// The stored policy versions, newest first.
    List(list::Args),
    /// Validate a stored version and make it the active one (a sha256 or a unique prefix).
    Activate(activate::Args),
    /// Undo the last activation: make the version active before it active again.
    Revert(revert::Args),
    /// Evaluate a stored version beside the serving one on a sample of live decisions,
    /// without serving it (`--sample 0.1`).
    Shadow(candidate::ShadowArgs),
    /// Let a stored version serve a sticky share of repositories, judged by the canary
    /// guard; `--steps 1,5,25,100 --interval 10m` steps it up and promotes it.
    Canary(candidate::CanaryArgs),
    /// Make the current candidate the active version and end the candidate.
    Promote(candidate::PromoteArgs),
    /// The policy candidate: its stored state and history, or a server's live counts
    /// (`--server http://host:port`).
    Candidate(candidate::StatusArgs),
    /// End the shadow or canary.
    StopCandidate(candidate::StopArgs),
}

/// Run a policy subcommand.
pub fn run(cmd: PolicyCommand, ctx: &Ctx) -> CliResult {
    let with_url = |db: &DatabaseArg| Ctx { url: db.database_url.clone(), ..ctx.clone() };
    match cmd {
        PolicyCommand::Test(args) => test::run(args, ctx),
        PolicyCommand::Eval(args) => eval::run(args),
        PolicyCommand::Simulate(args) => simulate::run(args, ctx),
        PolicyCommand::Diff(args) => diff::run(args, ctx),
        PolicyCommand::Bench(args) => bench::run(args, ctx),
        PolicyCommand::Upload(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(upload::run(args, &ctx))
        }
        PolicyCommand::List(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(list::run(&ctx))
        }
        PolicyCommand::Activate(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(activate::run(args, &ctx))
        }
        PolicyCommand::Revert(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(revert::run(args, &ctx))
        }
        PolicyCommand::Shadow(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(candidate::shadow(args, &ctx))
        }
        PolicyCommand::Canary(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(candidate::canary(args, &ctx))
        }
        PolicyCommand::Promote(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(candidate::promote(args, &ctx))
        }
        PolicyCommand::Candidate(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(candidate::status(args, &ctx))
        }
        PolicyCommand::StopCandidate(args) => {
            let ctx = with_url(&args.db);
            super::context::block_on(candidate::stop(args, &ctx))
        }
    }
}

/// The component at `path` in a sandbox (no safety contract: authors test what they wrote),
/// mapping failures to exit status 3.
pub(crate) fn load_policy(path: &Path) -> Result<Sandbox, CliError> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read policy `{}`", path.display()))
        .map_err(CliError::unavailable)?;
    Sandbox::compile(&bytes, &path.display().to_string(), Limits::default()).map_err(CliError::unavailable)
}

/// Read a `--config` argument (JSON text, or `@FILE`) as a case file's `config`: omitted
/// fields take the seed's defaults, `is_active` defaults to true, and `feature_name`
/// defaults to `feature`.
pub(crate) fn config_arg(arg: Option<&str>, feature: &str) -> Result<rollout_policy::Config, CliError> {
    let text = match arg {
        None => "{}".to_owned(),
        Some(a) => super::commands::route::json_arg("--config", a)?,
    };
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| "`--config` is not valid JSON".to_owned())
        .map_err(CliError::usage)?;
    if let Some(obj) = v.as_object_mut() {
        obj.entry("feature_name").or_insert_with(|| feature.into());
    }
    crate::cases::config_from_json(Some(&v), true).map_err(|e| CliError::usage(anyhow!("`--config`: {e}")))
}

/// A policy call that failed: a refused configuration is bad input (2), anything else the
/// policy's failure (3).
pub(crate) fn call_failed(e: impl Into<anyhow::Error>, call: Option<&CallError>) -> CliError {
    match call {
        Some(CallError::Config(_)) => CliError::usage(e),
        _ => CliError::unavailable(e),
    }
}

/// A `--reason` that, when given, is not blank.
pub(crate) fn reason(r: Option<&str>) -> Result<Option<crate::input::values::Reason>, CliError> {
    r.map(|r| crate::input::values::Reason::new(r).map_err(|m| CliError::usage(anyhow!("invalid `--reason`: {m}"))))
        .transpose()
}
