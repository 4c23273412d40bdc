//! `rollout policy upload|list|activate|revert`: policy versions in the database
//! (`policy_versions`), the ones every `rollout serve` on that database runs.
//!
//! Uploading and activating run the runtime's full validation (compile, world, `info()`,
//! safety contract) first; a refused component changes nothing and exits 1. Activation and
//! revert are audited (`policy_activated`, `policy_reverted` history rows); servers pick
//! the change up from the database (on Postgres at once through `NOTIFY`).

use super::table::Table;
use super::{block_on, connect, new_runtime, print_json, short, store_err, triggered_by, Ctx};
use crate::cli::{CliError, CliResult, Exit};
use crate::store::{NewPolicyVersion, PolicyVersionRow, Store};
use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// The global `--database-url`, read inside `rollout policy …` subcommands.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArg {
    /// The database URL (the global `--database-url`).
    #[arg(from_global)]
    pub database_url: String,
}

/// Policy versions in the database.
#[derive(Debug, Subcommand)]
pub enum PolicyStoreCommand {
    /// Validate a policy component and store it in policy_versions (exit 1 when refused).
    Upload {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Notes kept with the version.
        #[arg(long)]
        notes: Option<String>,
        /// Activate it right away.
        #[arg(long)]
        activate: bool,
        /// Why (kept in the history when activating).
        #[arg(long)]
        reason: Option<String>,
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// The stored policy versions, newest first.
    List {
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Validate a stored version and make it the active one (a sha256 or a unique prefix).
    Activate {
        /// The version's sha256, or a unique prefix of at least 6 hex digits.
        sha256: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Undo the last activation: make the version active before it active again.
    Revert {
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
        /// The database.
        #[command(flatten)]
        db: DatabaseArg,
    },
}

/// Run a policy-versions subcommand; `feature` and `json` are the global options.
pub fn run(cmd: PolicyStoreCommand, feature: &str, json: bool) -> CliResult {
    let url = match &cmd {
        PolicyStoreCommand::Upload { db, .. }
        | PolicyStoreCommand::List { db }
        | PolicyStoreCommand::Activate { db, .. }
        | PolicyStoreCommand::Revert { db, .. } => db.database_url.clone(),
    };
    let ctx = Ctx { url, feature: feature.to_owned(), json };
    block_on(async move {
        match cmd {
            PolicyStoreCommand::Upload { file, notes, activate, reason, .. } => {
                upload(&ctx, &file, notes, activate, reason.as_deref()).await
            }
            PolicyStoreCommand::List { .. } => list(&ctx).await,
            PolicyStoreCommand::Activate { sha256, reason, .. } => activate_cmd(&ctx, &sha256, reason.as_deref()).await,
            PolicyStoreCommand::Revert { reason, .. } => revert(&ctx, reason.as_deref()).await,
        }
    })
}

fn refused(e: impl Into<anyhow::Error>) -> CliError {
    CliError { exit: Exit::Failed, error: e.into() }
}

fn reason_of(reason: Option<&str>) -> Result<Option<&str>, CliError> {
    match reason.map(str::trim) {
        Some("") => Err(CliError::usage(anyhow!("invalid `--reason`: must not be empty"))),
        other => Ok(other),
    }
}

async fn upload(
    ctx: &Ctx,
    file: &std::path::Path,
    notes: Option<String>,
    activate: bool,
    reason: Option<&str>,
) -> CliResult {
    let reason = reason_of(reason)?;
    let bytes = std::fs::read(file)
        .with_context(|| format!("cannot read policy `{}`", file.display()))
        .map_err(CliError::usage)?;
    let store = connect(ctx, false).await?;
    let runtime = new_runtime()?;
    let source = file.display().to_string();
    let version = runtime
        .validate_bytes(&bytes, &source)
        .with_context(|| format!("policy `{source}` refused"))
        .map_err(refused)?;
    let row = store
        .put_policy_version(&NewPolicyVersion {
            sha256: version.sha256.clone(),
            bytes,
            name: Some(version.name.clone()),
            semver: version.version.clone(),
            notes,
            uploaded_by: Some(triggered_by()),
        })
        .await
        .map_err(store_err(format!("cannot store policy `{source}` in `{}`", ctx.redacted())))?;
    let previous = if activate {
        Some(
            store
                .activate_policy_version(&row.sha256, false, reason, &triggered_by())
                .await
                .map_err(store_err(format!("cannot activate policy `{}`", row.sha256)))?,
        )
    } else {
        None
    };
    if ctx.json {
        print_json(&serde_json::json!({
            "uploaded": row,
            "activated": activate,
            "previous_sha256": previous.flatten(),
        }))?;
    } else {
        outln!("uploaded {} {} (sha256 {}, {} bytes)", version.name, version.version, row.sha256, row.size);
        if activate {
            outln!("activated it; previously {}", previous.flatten().as_deref().map_or("the bundled policy", short));
        } else {
            outln!("activate it with: rollout policy activate {}", short(&row.sha256));
        }
    }
    Ok(Exit::Ok)
}

async fn list(ctx: &Ctx) -> CliResult {
    let store = connect(ctx, false).await?;
    let rows = versions(&store, ctx).await?;
    if ctx.json {
        let active = rows.iter().find(|r| r.active).map(|r| r.sha256.clone());
        print_json(&serde_json::json!({
            "versions": rows,
            "active_sha256": active,
            "bundled": super::bundled_info(),
        }))?;
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        let b = super::bundled_info();
        outln!(
            "no stored policy versions; servers run the bundled {} {} (sha256 {})",
            b.name,
            b.version,
            short(&b.sha256)
        );
        return Ok(Exit::Ok);
    }
    let mut t = Table::new(["", "sha256", "name", "version", "size", "uploaded", "by", "activated"]).right(4);
    for r in &rows {
        t.row([
            if r.active { "*" } else { "" }.to_owned(),
            short(&r.sha256).to_owned(),
            r.name.clone().unwrap_or_default(),
            r.semver.clone(),
            r.size.to_string(),
            r.uploaded_at.format("%Y-%m-%d %H:%M").to_string(),
            r.uploaded_by.clone().unwrap_or_default(),
            r.activated_at.map_or(String::new(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
        ]);
    }
    out!("{}", t.render());
    if !rows.iter().any(|r| r.active) {
        outln!("(none active: servers run the bundled reference policy)");
    }
    Ok(Exit::Ok)
}

async fn versions(store: &Store, ctx: &Ctx) -> Result<Vec<PolicyVersionRow>, CliError> {
    store
        .list_policy_versions()
        .await
        .map_err(store_err(format!("cannot read the policy versions of `{}`", ctx.redacted())))
}

/// A full sha256 from a digest or a unique prefix of at least 6 hex digits.
async fn resolve(store: &Store, ctx: &Ctx, given: &str) -> Result<String, CliError> {
    let g = given.trim().to_ascii_lowercase();
    if g.len() < 6 || g.len() > 64 || !g.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CliError::usage(anyhow!(
            "invalid policy digest `{given}`: expected a sha256 or a prefix of at least 6 hex digits"
        )));
    }
    let matches: Vec<String> =
        versions(store, ctx).await?.into_iter().map(|r| r.sha256).filter(|s| s.starts_with(&g)).collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CliError::usage(anyhow!(
            "unknown policy `{given}`: no stored version has this sha256 (see `rollout policy list`)"
        ))),
        _ => {
            Err(CliError::usage(anyhow!("ambiguous policy `{given}`: {} stored versions start with it", matches.len())))
        }
    }
}

/// Validate the stored bytes of `sha256` with the runtime, then activate.
async fn validate_and_activate(
    store: &Store,
    ctx: &Ctx,
    sha256: &str,
    revert: bool,
    reason: Option<&str>,
) -> Result<(Option<String>, crate::engine::PolicyVersion), CliError> {
    let bytes = store
        .policy_bytes(sha256)
        .await
        .map_err(store_err(format!("cannot read policy `{sha256}`")))?
        .ok_or_else(|| CliError::usage(anyhow!("unknown policy `{sha256}`: no stored version has this sha256")))?;
    let runtime = new_runtime()?;
    let version = runtime
        .validate_bytes(&bytes, &format!("policy_versions:{sha256}"))
        .with_context(|| format!("policy `{sha256}` refused"))
        .map_err(refused)?;
    let previous = store
        .activate_policy_version(sha256, revert, reason, &triggered_by())
        .await
        .map_err(store_err(format!("cannot activate policy `{sha256}` in `{}`", ctx.redacted())))?;
    Ok((previous, version))
}

async fn activate_cmd(ctx: &Ctx, given: &str, reason: Option<&str>) -> CliResult {
    let reason = reason_of(reason)?;
    let store = connect(ctx, false).await?;
    let sha256 = resolve(&store, ctx, given).await?;
    let (previous, version) = validate_and_activate(&store, ctx, &sha256, false, reason).await?;
    if ctx.json {
        print_json(&serde_json::json!({
            "activated": {"sha256": sha256, "name": version.name, "version": version.version},
            "previous_sha256": previous,
        }))?;
    } else {
        outln!(
            "activated {} {} (sha256 {}); previously {}",
            version.name,
            version.version,
            short(&sha256),
            previous.as_deref().map_or("the bundled policy", short)
        );
    }
    Ok(Exit::Ok)
}

async fn revert(ctx: &Ctx, reason: Option<&str>) -> CliResult {
    let reason = reason_of(reason)?;
    let store = connect(ctx, false).await?;
    // The servers' rule (`POST /v1/policies/revert`): the most recently activated version
    // that is not active; when none was, the bundled reference policy servers run without a
    // stored version (stored now, so that it can be activated like any other).
    let rows = store
        .list_policy_versions()
        .await
        .map_err(store_err(format!("cannot list the policy versions in `{}`", ctx.redacted())))?;
    let (active, target) = crate::store::revert_target(&rows);
    let (active, mut target) = (active.map(str::to_owned), target.map(str::to_owned));
    if target.is_none() {
        let bundled = crate::runtime::sha256_hex(crate::runtime::BUNDLED_POLICY);
        if active.as_deref().is_some_and(|a| a != bundled) {
            let version = new_runtime()?
                .validate_bytes(crate::runtime::BUNDLED_POLICY, "bundled")
                .context("the bundled policy refused")
                .map_err(refused)?;
            store
                .put_policy_version(&NewPolicyVersion {
                    sha256: bundled.clone(),
                    bytes: crate::runtime::BUNDLED_POLICY.to_vec(),
                    name: Some(version.name),
                    semver: version.version,
                    notes: Some("the bundled reference policy (stored by `rollout policy revert`)".to_owned()),
                    uploaded_by: Some(triggered_by()),
                })
                .await
                .map_err(store_err(format!("cannot store the bundled policy in `{}`", ctx.redacted())))?;
            target = Some(bundled);
        }
    }
    let Some(target) = target else {
        return Err(CliError::usage(anyhow!(
            "no previous policy version to revert to: no other version was ever activated, and the active one is \
             the bundled policy"
        )));
    };
    let (previous, version) = validate_and_activate(&store, ctx, &target, true, reason).await?;
    if ctx.json {
        print_json(&serde_json::json!({
            "reverted_to": {"sha256": target, "name": version.name, "version": version.version},
            "previous_sha256": previous,
        }))?;
    } else {
        outln!(
            "reverted to {} {} (sha256 {}); previously {}",
            version.name,
            version.version,
            short(&target),
            previous.as_deref().map_or("none", short)
        );
    }
    Ok(Exit::Ok)
}
