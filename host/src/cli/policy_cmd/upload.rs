//! `rollout policy upload FILE [--notes N] [--activate [--reason R]]`: validate and store a
//! component (exit 1 when refused). `--json` prints what `POST /v1/policies` answers (and,
//! with `--activate`, what the activation answers, under `activation`).

use super::{reason, DatabaseArg};
use crate::cli::context::{actor, open, Ctx, Needs};
use crate::cli::output::{print_json, short};
use crate::cli::{CliError, CliResult, Exit};
use crate::input::values::Sha256;
use anyhow::{anyhow, Context};
use std::path::PathBuf;

/// Options of `rollout policy upload`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// Notes kept with the version.
    #[arg(long)]
    pub notes: Option<String>,
    /// Activate it right away.
    #[arg(long)]
    pub activate: bool,
    /// Why (kept in the history when activating).
    #[arg(long)]
    pub reason: Option<String>,
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Run `rollout policy upload`.
pub async fn run(args: Args, ctx: &Ctx) -> CliResult {
    let reason = reason(args.reason.as_deref())?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read policy `{}`", args.file.display()))
        .map_err(CliError::usage)?;
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let actor = actor()?;
    let source = args.file.display().to_string();
    let uploaded = service
        .upload_policy(bytes, &source, args.notes, &actor)
        .await
        .map_err(CliError::service(format!("policy `{source}` refused")))?;
    let row = &uploaded.policy;
    let activation = if args.activate {
        let sha = Sha256::new(&row.sha256).map_err(|m| CliError::unavailable(anyhow!(m)))?;
        Some(
            service
                .activate_policy(&sha, reason, &actor)
                .await
                .map_err(CliError::service(format!("cannot activate policy `{}`", row.sha256)))?,
        )
    } else {
        None
    };
    if ctx.json {
        let mut doc = serde_json::to_value(&uploaded).map_err(|e| CliError::unavailable(anyhow!(e)))?;
        if let (Some(a), Some(obj)) = (&activation, doc.as_object_mut()) {
            obj.insert("activation".into(), serde_json::to_value(a).map_err(|e| CliError::unavailable(anyhow!(e)))?);
        }
        print_json(&doc)?;
    } else {
        outln!(
            "uploaded {} {} (sha256 {}, {} bytes)",
            row.name.as_deref().unwrap_or(""),
            row.semver,
            row.sha256,
            row.size
        );
        match &activation {
            Some(a) => {
                outln!("activated it; previously {}", a.previous_sha256.as_deref().map_or("the bundled policy", short))
            }
            None => outln!("activate it with: rollout policy activate {}", short(&row.sha256)),
        }
    }
    Ok(Exit::Ok)
}
