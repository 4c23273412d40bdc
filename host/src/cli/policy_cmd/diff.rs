//! `rollout policy diff --from A --to B INPUT…`: evaluate two versions on the same inputs
//! and group the decisions that change; exit 1 above `--max-changed`.

use super::load_policy;
use crate::authoring::diff;
use crate::cli::context::Ctx;
use crate::cli::{CliError, CliResult, Exit};
use crate::engine::Policy;
use crate::runtime::Sandbox;
use anyhow::anyhow;
use std::path::PathBuf;

/// Options of `rollout policy diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The version serving now (`.wasm`).
    #[arg(long)]
    pub from: PathBuf,
    /// The candidate version (`.wasm`).
    #[arg(long)]
    pub to: PathBuf,
    /// Case files, directories, or JSON-lines files of recorded requests (one case object
    /// per line). `expect` is ignored.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Most changed decisions allowed; above it the exit status is 1.
    #[arg(long)]
    pub max_changed: Option<usize>,
    /// Examples shown per group.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
}

/// Run `rollout policy diff`.
pub fn run(args: Args, ctx: &Ctx) -> CliResult {
    let json = ctx.json;
    let (from, to, inputs, max_changed, examples) =
        (&args.from, &args.to, &args.inputs, args.max_changed, args.examples);
    let corpus = diff::read_corpus(inputs).map_err(CliError::usage)?;
    for (source, message) in &corpus.unreadable {
        eprintln!("skipped {source}: {message}");
    }
    if corpus.entries.is_empty() {
        return Err(CliError::usage(anyhow!(
            "no cases to compare in {}",
            inputs.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
        )));
    }
    let (a, b) = (load_policy(from)?, load_policy(to)?);
    let describe = |s: &Sandbox| s.version().map_or_else(String::new, |v| format!("{v} (sha256 {})", v.sha256));
    let (da, db) = (describe(&a), describe(&b));
    let report = diff::diff(&corpus, &a, &b, examples);
    let over = max_changed.is_some_and(|m| report.changed > m);
    if json {
        let out = serde_json::json!({
            "from": da, "to": db,
            "compared": report.compared, "changed": report.changed, "invalid": report.invalid,
            "skipped": corpus.unreadable.len(),
            "max_changed": max_changed, "over_threshold": over,
            "groups": report.groups,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        out!("{}", diff::render_text(&report, &da, &db));
        if let Some(m) = max_changed {
            if over {
                outln!("\nFAIL: {} decisions changed, more than --max-changed {m}", report.changed);
            } else {
                outln!("\nok: {} decisions changed, within --max-changed {m}", report.changed);
            }
        }
    }
    Ok(if over { Exit::Failed } else { Exit::Ok })
}
