//! `rollout policy bench --policy FILE`: decisions per second on generated input, one call
//! per decision and batched, with the native reference rules as a baseline.

use super::{call_failed, load_policy};
use crate::authoring::bench;
use crate::cli::context::Ctx;
use crate::cli::{CliError, CliResult, Exit};
use crate::engine::{NativePolicy, Policy};
use anyhow::anyhow;
use std::path::PathBuf;

/// Options of `rollout policy bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (`.wasm`).
    #[arg(long)]
    pub policy: PathBuf,
    /// Decisions timed per measurement.
    #[arg(long, default_value_t = 100_000)]
    pub decisions: usize,
    /// Requests per batch call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
}

/// Run `rollout policy bench`.
pub fn run(args: Args, ctx: &Ctx) -> CliResult {
    let (feature, json, decisions, batch) = (ctx.feature.as_str(), ctx.json, args.decisions, args.batch);
    if decisions == 0 || batch == 0 {
        return Err(CliError::usage(anyhow!("`--decisions` and `--batch` must be at least 1")));
    }
    let sandbox = load_policy(&args.policy)?;
    let version = sandbox.version();
    let options = bench::BenchOptions { decisions, batch };
    let mut measurements = bench::bench(&sandbox, feature, options).map_err(|e| call_failed(e.clone(), Some(&e)))?;
    let native = bench::bench(&NativePolicy::new(), feature, options).map_err(|e| call_failed(e.clone(), Some(&e)))?;
    if let Some(mut m) = native.into_iter().next() {
        m.name = "route, native reference rules (baseline)".into();
        measurements.push(m);
    }
    let describe = format!(
        "{} (sha256 {}), {decisions} decisions per measurement",
        version.as_ref().map_or_else(String::new, ToString::to_string),
        version.as_ref().map_or("", |v| v.sha256.as_str())
    );
    if json {
        let out = serde_json::json!({
            "policy": version,
            "decisions": decisions, "batch": batch, "measurements": measurements,
        });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        out!("{}", bench::render_text(&describe, &measurements));
    }
    Ok(Exit::Ok)
}
