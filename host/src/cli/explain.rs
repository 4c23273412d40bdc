//! `rollout explain`: the chain of checks of SPEC §2 in words for one case, with the line
//! that decided and the policy's actual decision ([`crate::authoring::explain`]).

use super::policy::{config_arg, load_policy};
use super::{CliError, CliResult, Exit};
use crate::authoring::explain;
use crate::cases::{self, Backend, Inputs, NativeBackend, WasmBackend};
use anyhow::anyhow;
use std::path::PathBuf;

/// `rollout explain (--case FILE | --repo ID [--category C] [--job JSON] [--config JSON]) [--policy FILE]`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
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
pub fn run(args: ExplainArgs, feature: &str, json: bool) -> CliResult {
    let (mut backend, describe): (Box<dyn Backend>, String) = match &args.policy {
        Some(path) => {
            let compiled = load_policy(path)?;
            let d = format!("{} {}", compiled.name(), compiled.version());
            (Box::new(WasmBackend::new(compiled)), d)
        }
        None => (
            Box::new(NativeBackend),
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
        let e = explain::explain(inputs, backend.as_mut());
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
