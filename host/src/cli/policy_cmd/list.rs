//! `rollout policy list`: the stored policy versions, newest first.

use super::DatabaseArg;
use crate::cli::context::{open, Ctx, Needs, PolicyInfo};
use crate::cli::output::{print_json, short};
use crate::cli::table::Table;
use crate::cli::{CliError, CliResult, Exit};

/// Options of `rollout policy list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database.
    #[command(flatten)]
    pub db: DatabaseArg,
}

/// Run `rollout policy list`.
pub async fn run(ctx: &Ctx) -> CliResult {
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let listing = service
        .list_policies()
        .await
        .map_err(CliError::service(format!("cannot read the policy versions of `{}`", ctx.redacted())))?;
    let rows: Vec<_> = listing.versions.iter().map(|v| &v.row).collect();
    if ctx.json {
        let active = rows.iter().find(|r| r.active).map(|r| r.sha256.clone());
        print_json(&serde_json::json!({
            "versions": rows,
            "active_sha256": active,
            "bundled": PolicyInfo::bundled(),
        }))?;
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        let b = PolicyInfo::bundled();
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
