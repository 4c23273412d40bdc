//! `rollout replay`: re-evaluate logged decisions ([`crate::authoring::replay`]).
//!
//! Without `--policy`/`--sha`, a determinism check: each decision under the policy and
//! configuration version it was logged with; any difference exits 1 with the first ten
//! shown. With `--policy FILE` or `--sha SHA` (a component stored in the database), a
//! what-if: the changes grouped by rule and by category. `--from FILE` replays an export
//! (`rollout decisions export`) with no database; its determinism check finds components by
//! sha256 in `--policy-dir DIR` (the native rules and the bundled component are built in).

use super::decisions::{feature_given, parse_total, progress_bar, Filters};
use crate::authoring::replay::{
    builtin_policy, compile_policy, policies_in_dir, render_text, replay_export, replay_store, Replay,
};
use crate::cli::context::{connect, Ctx};
use crate::cli::output::{print_json, short};
use crate::cli::{CliError, CliResult, Exit};
use crate::engine::Policy;
use crate::runtime::sha256_hex;
use anyhow::{anyhow, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `rollout replay [filters] [--policy FILE | --sha SHA] [--from FILE] [--policy-dir DIR] [--limit N]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The filters (and the global --feature, when given).
    #[command(flatten)]
    pub filters: Filters,
    /// What-if: re-evaluate with this component (`.wasm`) instead of each decision's own.
    #[arg(long, conflicts_with = "sha")]
    pub policy: Option<PathBuf>,
    /// What-if: re-evaluate with the component of this sha256 stored in the database
    /// (`native`: the reference rules).
    #[arg(long, conflicts_with = "from")]
    pub sha: Option<String>,
    /// Replay this export (`rollout decisions export`) instead of the database.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With --from: the components (`*.wasm`) a determinism check may need, by sha256.
    #[arg(long, requires = "from", conflicts_with_all = ["policy", "sha"])]
    pub policy_dir: Option<PathBuf>,
    /// At most this many decisions, oldest first.
    #[arg(long, value_parser = parse_total)]
    pub limit: Option<u64>,
}

fn valid_sha(sha: &str) -> Result<(), CliError> {
    let hex = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex || sha == "native" {
        Ok(())
    } else {
        Err(CliError::usage(anyhow!(
            "`--sha` `{sha}` is not a policy digest: allowed 64 lowercase hex digits or `native`"
        )))
    }
}

fn policy_file(path: &Path) -> Result<(String, Arc<dyn Policy>), CliError> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read policy `{}`", path.display()))
        .map_err(CliError::usage)?;
    let policy = compile_policy(&bytes, &path.display().to_string())
        .map_err(|e| CliError::usage(anyhow!("`--policy` `{}`: {e}", path.display())))?;
    let version = policy.version().map_or_else(String::new, |v| format!("{v}, "));
    Ok((format!("{} ({version}sha256 {})", path.display(), short(&sha256_hex(&bytes))), policy))
}

/// Run `rollout replay`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    if let Some(sha) = &args.sha {
        valid_sha(sha)?;
    }
    let mut filter = args.filters.to_filter(ctx)?;
    let mut replay = match &args.policy {
        Some(path) => {
            let (name, policy) = policy_file(path)?;
            Replay::what_if(name, policy)
        }
        None => Replay::determinism(),
    };
    let bar = progress_bar("replayed");
    if let Some(from) = &args.from {
        let library: HashMap<String, Vec<u8>> = match &args.policy_dir {
            Some(dir) => policies_in_dir(dir).context("`--policy-dir`").map_err(CliError::usage)?,
            None => HashMap::new(),
        };
        let file = std::fs::File::open(from)
            .with_context(|| format!("cannot read `{}`", from.display()))
            .map_err(CliError::usage)?;
        filter.limit = 0;
        replay_export(std::io::BufReader::new(file), from, &library, Some(&filter), args.limit, &mut replay, |n| {
            bar.inc(n)
        })
        .with_context(|| format!("cannot replay `{}`", from.display()))
        .map_err(CliError::usage)?;
    } else {
        let store = connect(ctx, false).await?;
        if let Some(sha) = &args.sha {
            let policy = match builtin_policy(sha) {
                Some(p) => p,
                None => {
                    let bytes = store
                        .policy_bytes(sha)
                        .await
                        .with_context(|| format!("cannot read policy `{sha}`"))
                        .map_err(CliError::unavailable)?
                        .ok_or_else(|| CliError::usage(anyhow!("`--sha`: no stored policy has sha256 `{sha}`")))?;
                    compile_policy(&bytes, &format!("policy {}", short(sha)))
                }
            }
            .map_err(|e| CliError::unavailable(anyhow!("`--sha`: {e}")))?;
            let version = policy.version().map_or_else(String::new, |v| format!("{v}, "));
            replay = Replay::what_if(format!("stored policy ({version}sha256 {})", short(sha)), policy);
        }
        replay_store(&store, &filter, args.limit, &mut replay, |n| bar.inc(n))
            .await
            .with_context(|| format!("cannot replay the decision log of `{}`", ctx.redacted()))
            .map_err(CliError::unavailable)?;
    }
    bar.finish_and_clear();
    let report = replay.report();
    if ctx.json {
        print_json(&report)?;
    } else {
        if report.read == 0 {
            let scope = if feature_given() { format!(" of `{}`", ctx.feature) } else { String::new() };
            outln!("no logged decisions{scope} match");
        }
        out!("{}", render_text(&report));
    }
    Ok(if report.failed() { Exit::Failed } else { Exit::Ok })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sha_is_hex_or_native() {
        assert!(valid_sha(&"ab".repeat(32)).is_ok());
        assert!(valid_sha("native").is_ok());
        let e = valid_sha("ABC").unwrap_err();
        assert_eq!(e.exit, Exit::Usage);
        assert!(format!("{:#}", e.error).contains("--sha"));
    }
}
