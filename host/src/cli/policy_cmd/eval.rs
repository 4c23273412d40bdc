//! `rollout policy eval --policy FILE --case FILE|-`: the decision of each case as JSON.

use super::load_policy;
use crate::cases;
use crate::cli::{CliError, CliResult, Exit};
use std::path::PathBuf;

/// Options of `rollout policy eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (`.wasm`).
    #[arg(long)]
    pub policy: PathBuf,
    /// A case file, a single case object, or `-`.
    #[arg(long)]
    pub case: PathBuf,
}

/// Run `rollout policy eval`.
pub fn run(args: Args) -> CliResult {
    let policy = load_policy(&args.policy)?;
    let cases = cases::read_file(&args.case, false).map_err(CliError::usage)?;
    let single = cases.len() == 1;
    let mut exit = Exit::Ok;
    for case in cases {
        let case = case.map_err(CliError::usage)?;
        let decision = match cases::evaluate(&case, &policy) {
            Ok(d) => serde_json::Value::Object(d),
            Err(e) => {
                exit = Exit::Usage;
                serde_json::json!({"error": {"message": e.message}})
            }
        };
        if single {
            outln!("{}", serde_json::to_string_pretty(&decision).unwrap_or_default());
        } else {
            outln!("{}", serde_json::json!({"name": case.name, "decision": decision}));
        }
    }
    Ok(exit)
}
