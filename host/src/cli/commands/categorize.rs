//! `rollout categorize [ID | --all]`: categorise with the policy and store the category.

use crate::cli::context::{open, Ctx, Needs};
use crate::cli::output::{print_json, yes_no};
use crate::cli::table::{pairs, Table};
use crate::cli::{CliError, CliResult, Exit};
use crate::input::values::RepositoryRef;
use anyhow::anyhow;
use clap::ArgGroup;
use rollout_policy::RepositoryStats;
use std::io::IsTerminal;

/// `categorize [ID | --all]`.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "all"])))]
pub struct Args {
    /// The repository (UUID or owner/name).
    pub id: Option<RepositoryRef>,
    /// Every repository of the `repositories` table.
    #[arg(long)]
    pub all: bool,
    /// Stars (with --contributors and --prs: numbers to use instead of the table's).
    #[arg(long, requires_all = ["contributors", "prs"], conflicts_with = "all")]
    pub stars: Option<u32>,
    /// Contributors.
    #[arg(long, requires_all = ["stars", "prs"], conflicts_with = "all")]
    pub contributors: Option<u32>,
    /// Pull requests.
    #[arg(long, requires_all = ["stars", "contributors"], conflicts_with = "all")]
    pub prs: Option<u32>,
}

/// Run `rollout categorize`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let (service, _) = open(ctx, Needs::Policy).await?;
    let feature = service.feature(&ctx.feature).await.map_err(CliError::service("cannot open the rollout"))?;
    if args.all {
        let summary = feature
            .manager
            .categorize_all(std::io::stderr().is_terminal())
            .await
            .map_err(|e| CliError::service("cannot categorise the repositories")(e.into()))?;
        if ctx.json {
            print_json(&summary)?;
        } else {
            outln!("categorised {} of {} repositories", summary.categorized, summary.total);
            let mut t = Table::new(["category", "repositories"]).right(1);
            for (c, n) in &summary.by_category {
                t.row([c.clone(), n.to_string()]);
            }
            out!("{}", t.render());
        }
        if let Some(first) = summary.failed.first() {
            return Err(CliError::unavailable(anyhow!(
                "the policy could not categorise {} repositories (first `{first}`)",
                summary.failed.len()
            )));
        }
        return Ok(Exit::Ok);
    }
    let Some(id) = args.id else { return Err(CliError::usage(anyhow!("give a repository id or --all"))) };
    let stats = match (args.stars, args.contributors, args.prs) {
        (Some(star_count), Some(contributor_count), Some(pr_count)) => {
            Some(RepositoryStats { star_count, contributor_count, pr_count })
        }
        _ => None,
    };
    let c = feature
        .manager
        .categorize_repository(id.as_str(), stats)
        .await
        .map_err(|e| CliError::service(format!("cannot categorise repository `{id}`"))(e.into()))?;
    if ctx.json {
        let mut doc = crate::cases::categorization_json(&c);
        doc.insert("repository_id".into(), id.as_str().into());
        print_json(&doc)?;
    } else {
        out!(
            "{}",
            pairs(&[
                ("repository", id.to_string()),
                ("category", c.category.as_str().to_owned()),
                ("priority", c.priority_level.to_string()),
                ("test repository", yes_no(c.is_test_repository).to_owned()),
                ("activity score", c.monthly_activity_score.to_string()),
            ])
        );
    }
    Ok(Exit::Ok)
}
