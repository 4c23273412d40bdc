//! `rollout stats`: the rollout's statistics over the monitoring window.

use crate::cli::context::{open, Ctx, Needs, PolicyInfo};
use crate::cli::output::{name_of, on_off, pct, print_json, processors_table, time};
use crate::cli::table::{pairs, Table};
use crate::cli::{CliError, CliResult, Exit};

/// Run `rollout stats`.
pub async fn run(ctx: &Ctx) -> CliResult {
    let (service, policy) = open(ctx, Needs::Policy).await?;
    let policy = policy.unwrap_or_else(PolicyInfo::bundled);
    // a one-off command counts participation now (a server counts it in the background)
    service.count_participation(&ctx.feature).await.map_err(CliError::service("cannot count participation"))?;
    let s = service.stats(&ctx.feature).await.map_err(CliError::service("cannot compute the statistics"))?;
    if ctx.json {
        print_json(&s)?;
        return Ok(Exit::Ok);
    }
    let rows = vec![
        ("feature", s.feature_name.clone()),
        (
            "rollout",
            format!(
                "{} % by {}, stop {}, {}",
                s.rollout_percentage,
                s.rollout_strategy,
                on_off(s.emergency_stop),
                if s.is_active { "active" } else { "inactive" }
            ),
        ),
        ("policy", policy.line()),
        (
            "repositories",
            format!(
                "{} known, {} categorised, {} eligible ({} categorised)",
                s.total_repositories,
                s.categorized_repositories,
                s.eligible_repositories,
                s.eligible_categorized_repositories
            ),
        ),
        ("participation", pct(s.participation_rate)),
        ("window", format!("{} h since {}", s.window_hours, time(&s.window_start))),
        (
            "jobs",
            format!(
                "{} ({} successes, {} errors; error rate {})",
                s.total_jobs,
                s.success_count,
                s.error_count,
                pct(s.error_rate)
            ),
        ),
        ("error trend", format!("{} over {} hours", name_of(&s.error_trend.direction), s.error_trend.points.len())),
    ];
    out!("{}", pairs(&rows));
    if let Some(cost) = &s.cost {
        let saving = cost.savings_percent.map_or(String::new(), |p| format!(" ({p:.1} %)"));
        outln!(
            "cost:           {:.4} in the window; all on inngest {:.4}; saving {:.4}{saving}",
            cost.window_cost,
            cost.all_inngest_cost,
            cost.savings
        );
    }
    outln!();
    out!("{}", processors_table(&s.processors));
    outln!();
    let mut t = Table::new(["category", "repositories"]).right(1);
    for (c, n) in &s.categories {
        t.row([c.clone(), n.to_string()]);
    }
    out!("{}", t.render());
    if s.error_count > 0 {
        outln!();
        let mut t = Table::new(["error kind", "errors"]).right(1);
        for (k, n) in s.errors_by_kind.iter().filter(|(_, n)| **n > 0) {
            t.row([k.clone(), n.to_string()]);
        }
        out!("{}", t.render());
    }
    Ok(Exit::Ok)
}
