//! `rollout explain`: the checks the policy made for one case, in words, with the one that
//! decided ([`crate::authoring::explain`]); they come from the policy's own code, so the
//! explanation is right for any policy. A component built before the contract had the
//! `explain` interface cannot explain (exit 3, saying so).

use crate::authoring::explain;
use crate::cases::{self, Inputs};
use crate::cli::context::Ctx;
use crate::cli::policy_cmd::{config_arg, load_policy};
use crate::cli::{CliError, CliResult, Exit};
use crate::engine::{NativePolicy, Policy};
use anyhow::anyhow;
use std::path::PathBuf;

/// `rollout explain (--case FILE | --repo ID [--category C] [--job JSON] [--config JSON]) [--policy FILE]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (`.wasm`); without it, the reference rules linked natively.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// A case file or a single case object (`-` for standard input); every case is explained.
    #[arg(long, conflicts_with_all = ["repo", "category", "job", "config"])]
    pub case: Option<PathBuf>,
    /// Only the cases whose name contains this text (with `--case`).
    #[arg(long, requires = "case")]
    pub name: Option<String>,
    /// The repository id (instead of `--case`).
    #[arg(long, required_unless_present = "case")]
    pub repo: Option<String>,
    /// The repository's category.
    #[arg(long)]
    pub category: Option<String>,
    /// The job as JSON, as in case files; with it the routing chain is explained too.
    #[arg(long)]
    pub job: Option<String>,
    /// The configuration as JSON (or `@FILE`), as in case files (omitted fields: the seed's
    /// defaults, `is_active` true).
    #[arg(long)]
    pub config: Option<String>,
}

/// Run `rollout explain`; `feature` is the global `--feature`.
pub fn run(args: Args, ctx: &Ctx) -> CliResult {
    let (feature, json) = (ctx.feature.as_str(), ctx.json);
    let (policy, describe): (Box<dyn Policy>, String) = match &args.policy {
        Some(path) => {
            let sandbox = load_policy(path)?;
            let d = sandbox.version().map_or_else(String::new, |v| v.to_string());
            (Box::new(sandbox), d)
        }
        None => (
            Box::new(NativePolicy::new()),
            format!("{} {} (native)", rollout_policy::POLICY_NAME, rollout_policy::POLICY_VERSION),
        ),
    };
    let mut todo: Vec<(String, Inputs)> = Vec::new();
    if let Some(path) = &args.case {
        for case in cases::read_file(path, false).map_err(CliError::usage)? {
            let case = case.map_err(CliError::usage)?;
            if args.name.as_deref().is_some_and(|n| !case.name.contains(n)) {
                continue;
            }
            let inputs = case.inputs().map_err(|e| CliError::usage(anyhow!("case `{}`: {e}", case.name)))?;
            todo.push((case.name, inputs));
        }
        if todo.is_empty() {
            return Err(CliError::usage(anyhow!("no case in `{}` to explain", path.display())));
        }
    } else {
        let id = args.repo.as_deref().ok_or_else(|| CliError::usage(anyhow!("give `--case FILE` or `--repo ID`")))?;
        let category = match &args.category {
            None => None,
            Some(c) => {
                Some(rollout_policy::Category::parse(c).map_err(|e| CliError::usage(anyhow!("`--category`: {e}")))?)
            }
        };
        let config = config_arg(args.config.as_deref(), feature)?;
        let repo = rollout_policy::Repository::parse(id, category);
        let inputs = match &args.job {
            None => Inputs::IsEligible(config, repo),
            Some(text) => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| CliError::usage(anyhow!("`--job` is not valid JSON: {e}")))?;
                Inputs::Route(config, repo, cases::job_from_json(Some(&v)).map_err(CliError::usage)?)
            }
        };
        todo.push((format!("repository {id}"), inputs));
    }
    let single = todo.len() == 1;
    for (i, (name, inputs)) in todo.iter().enumerate() {
        let e = explain::explain(inputs, policy.as_ref()).map_err(|e| match e {
            crate::engine::CallError::Config(_) => CliError::usage(anyhow!("case `{name}`: {e}")),
            other => CliError::unavailable(anyhow!("case `{name}`: {other}")),
        })?;
        if json {
            let v = serde_json::json!({"name": name, "policy_name": describe, "explanation": e});
            if single {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{v}");
            }
        } else {
            if i > 0 {
                println!();
            }
            println!("== {name} ({})", e.op);
            print!("{}", explain::render_text(&e, &describe));
        }
    }
    Ok(Exit::Ok)
}
