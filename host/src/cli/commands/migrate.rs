//! `rollout migrate`: apply the migrations (idempotent). It creates no feature but the
//! seed's own (`hybrid_progressive_capture`, written by the migration); others are created
//! with `rollout feature create`.

use crate::cli::context::{connect, Ctx};
use crate::cli::output::{name_of, print_json};
use crate::cli::{CliError, CliResult, Exit};
use crate::service::ServiceError;

/// Run `rollout migrate`.
pub async fn run(ctx: &Ctx) -> CliResult {
    let store = connect(ctx, true).await?;
    let shown = ctx.redacted();
    store.migrate().await.map_err(|e| CliError::service(format!("cannot migrate `{shown}`"))(ServiceError::from(e)))?;
    let configs = store
        .list_configs()
        .await
        .map_err(|e| CliError::service(format!("cannot read the features of `{shown}`"))(e.into()))?;
    let feature = configs.iter().find(|c| c.config.feature_name == ctx.feature);
    if ctx.json {
        print_json(&serde_json::json!({
            "database": shown,
            "backend": store.backend(),
            "migrated": true,
            "features": configs.iter().map(|c| c.config.feature_name.clone()).collect::<Vec<_>>(),
            "feature": ctx.feature,
            "rollout_percentage": feature.map(|c| c.config.rollout_percentage),
        }))?;
    } else {
        match feature {
            Some(c) => outln!(
                "migrated {shown} ({}); rollout `{}` is at {} %",
                name_of(&store.backend()),
                ctx.feature,
                c.config.rollout_percentage
            ),
            None => outln!(
                "migrated {shown} ({}); feature `{}` does not exist: create it with `rollout feature create {}`",
                name_of(&store.backend()),
                ctx.feature,
                ctx.feature
            ),
        }
    }
    store.close().await;
    Ok(Exit::Ok)
}
