//! `rollout policy test --policy FILE PATH…`: run case files; starts with the contract
//! version the component speaks (`rollout:policy@0.1.1`, from the interfaces it exports),
//! ends with `N passed, M failed`.

use super::load_policy;
use crate::cases;
use crate::cli::context::Ctx;
use crate::cli::{CliResult, Exit};
use crate::engine::Policy as _;
use std::path::PathBuf;

/// Options of `rollout policy test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (`.wasm`).
    #[arg(long)]
    pub policy: PathBuf,
    /// Case files and directories (every `*.json` beneath, except `index.json`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Run `rollout policy test`.
pub fn run(args: Args, ctx: &Ctx) -> CliResult {
    let policy = load_policy(&args.policy)?;
    let report = cases::run(&args.paths, &policy);
    let (contract, interfaces) = (policy.contract(), policy.interfaces());
    if ctx.json {
        let failures: Vec<serde_json::Value> = report
            .failures
            .iter()
            .map(|f| serde_json::json!({"file": f.file, "case": f.case, "problems": f.problems}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"contract": contract, "interfaces": interfaces, "passed": report.passed, "failed": report.failures.len(), "failures": failures, "unreadable": report.unreadable})
        );
    } else {
        let info = policy.version().map(|v| v.to_string()).unwrap_or_default();
        outln!("policy {info} speaks contract rollout:policy@{contract} ({})", interfaces.join(", "));
        for f in &report.failures {
            outln!("FAIL {} :: {}", f.file.display(), f.case);
            for p in &f.problems {
                outln!("    {p}");
            }
        }
        for u in &report.unreadable {
            outln!("ERROR {u}");
        }
    }
    outln!("{} passed, {} failed", report.passed, report.failures.len() + report.unreadable.len());
    Ok(if report.ok() { Exit::Ok } else { Exit::Failed })
}
