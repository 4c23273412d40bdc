//! `rollout policy simulate`: ramp a configuration through percentages over a set of
//! repositories; exit 1 when a repository drops out while ramping.

use super::{call_failed, config_arg, load_policy};
use crate::authoring::simulate;
use crate::cli::context::Ctx;
use crate::cli::{CliError, CliResult, Exit};
use crate::engine::Policy;
use anyhow::anyhow;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Options of `rollout policy simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (`.wasm`).
    #[arg(long)]
    pub policy: PathBuf,
    /// Repositories: CSV with a header (`id`, and `category` or `star_count`,
    /// `contributor_count`, `pr_count`) or a JSON array of objects with those fields.
    #[arg(long)]
    pub repos: PathBuf,
    /// The steps of the ramp, increasing.
    #[arg(long, default_value = "0,10,25,50,75,100")]
    pub percentages: String,
    /// The strategy: percentage, whitelist or repository_size (default: the one of
    /// `--config`, else percentage).
    #[arg(long)]
    pub strategy: Option<String>,
    /// The base configuration as JSON (or `@FILE`), as in case files: targets,
    /// exclusions, … Its percentage is replaced at each step.
    #[arg(long)]
    pub config: Option<String>,
}

/// Run `rollout policy simulate`.
pub fn run(args: Args, ctx: &Ctx) -> CliResult {
    let (feature, json) = (ctx.feature.as_str(), ctx.json);
    let (policy, repos, percentages) = (&args.policy, &args.repos, args.percentages.as_str());
    let (strategy, config) = (args.strategy.as_deref(), args.config.as_deref());
    let percentages = simulate::parse_percentages(percentages).map_err(CliError::usage)?;
    let mut base = config_arg(config, feature)?;
    if let Some(s) = strategy {
        base.rollout_strategy =
            rollout_policy::Strategy::parse(s).map_err(|e| CliError::usage(anyhow!("`--strategy`: {e}")))?;
    }
    let repos = simulate::read_repos(repos).map_err(CliError::usage)?;
    let sandbox = load_policy(policy)?;
    let version = sandbox.version();
    let work = (repos.len() * percentages.len() + repos.iter().filter(|r| r.stats.is_some()).count()) as u64;
    let bar = (std::io::stderr().is_terminal() && work >= 50_000).then(|| {
        let bar = indicatif::ProgressBar::new(work);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} decisions ({per_sec}, {eta} left)")
        {
            bar.set_style(style);
        }
        bar
    });
    let result = simulate::simulate(&sandbox, &base, &repos, &percentages, &mut |n| {
        if let Some(b) = &bar {
            b.inc(n);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let sim = result.map_err(|e| {
        let call = match &e {
            simulate::SimulateError::Call { error, .. } => Some(error.clone()),
            simulate::SimulateError::BatchLength { .. } => None,
        };
        call_failed(e, call.as_ref())
    })?;
    if json {
        let dropouts: Vec<serde_json::Value> =
            sim.dropouts().into_iter().map(|(pct, id)| serde_json::json!({"id": id, "percentage": pct})).collect();
        let out = serde_json::json!({
            "policy": version,
            "feature": base.feature_name,
            "strategy": base.rollout_strategy.as_str(),
            "repositories": sim.repositories,
            "categorized_by_policy": sim.categorized_by_policy,
            "steps": sim.steps,
            "monotonic": sim.monotonic(),
            "dropouts": dropouts,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        outln!(
            "policy {}, feature {}, strategy {}: {} repositories ({} categorised by the policy from their stats)",
            version.as_ref().map_or_else(String::new, ToString::to_string),
            base.feature_name,
            base.rollout_strategy,
            sim.repositories,
            sim.categorized_by_policy
        );
        out!("{}", simulate::render_text(&sim));
    }
    Ok(if sim.monotonic() { Exit::Ok } else { Exit::Failed })
}
