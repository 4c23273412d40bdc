//! `rollout feature create NAME` and `rollout feature list`: features are created
//! explicitly, never by using a name (a mistyped `--feature` is an error naming the known
//! features).

use crate::cli::context::{actor, connect, Ctx};
use crate::cli::output::{on_off, print_json};
use crate::cli::table::Table;
use crate::cli::{CliError, CliResult, Exit};
use crate::input::values::FeatureName;
use clap::Subcommand;

/// `feature` subcommands.
#[derive(Debug, Subcommand)]
pub enum FeatureCommand {
    /// Create a feature's configuration (0 %, active, percentage strategy), audited as `created`.
    Create {
        /// The feature's name (1 to 100 characters).
        name: FeatureName,
    },
    /// The features the database has.
    List,
}

/// Run a `feature` subcommand.
pub async fn run(ctx: &Ctx, cmd: FeatureCommand) -> CliResult {
    match cmd {
        FeatureCommand::Create { name } => create(ctx, name).await,
        FeatureCommand::List => list(ctx).await,
    }
}

async fn create(ctx: &Ctx, name: FeatureName) -> CliResult {
    let store = connect(ctx, false).await?;
    let config = crate::service::create_feature(&store, &name, &actor()?)
        .await
        .map_err(CliError::service(format!("cannot create feature `{name}`")))?;
    if ctx.json {
        print_json(&serde_json::json!({
            "feature_name": config.config.feature_name,
            "created": true,
            "config": config.to_json(),
        }))?;
    } else {
        outln!(
            "created feature `{name}` at {} % ({})",
            config.config.rollout_percentage,
            config.config.rollout_strategy
        );
    }
    Ok(Exit::Ok)
}

async fn list(ctx: &Ctx) -> CliResult {
    let store = connect(ctx, false).await?;
    let configs = store
        .list_configs()
        .await
        .map_err(|e| CliError::service(format!("cannot read the features of `{}`", ctx.redacted()))(e.into()))?;
    if ctx.json {
        let rows: Vec<serde_json::Value> = configs.iter().map(|c| c.to_json()).collect();
        print_json(&rows)?;
        return Ok(Exit::Ok);
    }
    let mut t = Table::new(["feature", "percentage", "strategy", "stop", "active"]).right(1);
    for c in &configs {
        t.row([
            c.config.feature_name.clone(),
            format!("{} %", c.config.rollout_percentage),
            c.config.rollout_strategy.as_str().to_owned(),
            on_off(c.config.emergency_stop).to_owned(),
            on_off(c.config.is_active).to_owned(),
        ]);
    }
    out!("{}", t.render());
    Ok(Exit::Ok)
}
