//! `rollout policy test --policy FILE PATH…`: run case files; ends with `N passed, M failed`.

use super::load_policy;
use crate::cases;
use crate::cli::context::Ctx;
use crate::cli::{CliResult, Exit};
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
    if ctx.json {
        let failures: Vec<serde_json::Value> = report
            .failures
            .iter()
            .map(|f| serde_json::json!({"file": f.file, "case": f.case, "problems": f.problems}))
            .collect();
        outln!(
            "{}",
            serde_json::json!({"passed": report.passed, "failed": report.failures.len(), "failures": failures, "unreadable": report.unreadable})
        );
    } else {
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
