//! `rollout decisions list|show|export`: the decision log (issue 14).
//!
//! - `list [filters] [--limit N] [--cursor ID]`: newest first, a table (or `--json`: the
//!   records and the cursor of the next page);
//! - `show ID`: one decision, every field;
//! - `export [filters] [--limit N] [--out FILE|-]`: JSON Lines, oldest first, in the format
//!   [`crate::authoring::replay`] documents (a header, each configuration snapshot before the
//!   first decision that needs it, the decisions), for `rollout replay --from FILE`.
//!
//! Filters: `--feature F` (only when given: without it every feature), `--repository ID`,
//! `--since T`, `--until T` (RFC 3339, a date, or a time ago such as `30m`, `24h`, `7d`),
//! `--rule R` (a routing rule, or an eligibility reason).

use crate::authoring::replay::{export_store, ExportWriter};
use crate::cli::context::{connect, Ctx};
use crate::cli::output::{print_json, short};
use crate::cli::table::{pairs, Table};
use crate::cli::{CliError, CliResult, Exit};
use crate::store::{DecisionFilter, DecisionRecord};
use anyhow::{anyhow, Context};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use std::io::IsTerminal;
use std::path::PathBuf;
use uuid::Uuid;

/// The allowed forms of a time argument.
const TIME_FORMS: &str = "an RFC 3339 time (2026-01-31T14:02:00Z), a date (2026-01-31), or a time ago \
    (30s, 15m, 24h, 7d)";

/// Parse a `--since`/`--until` value: RFC 3339, a date (midnight UTC), or a duration ago.
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(t) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Some(midnight) = NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)) {
        return Ok(midnight.and_utc());
    }
    let ago = t.char_indices().last().and_then(|(i, unit)| {
        let n: u64 = t.get(..i)?.parse().ok()?;
        let seconds = i64::try_from(crate::input::values::unit_seconds(n, unit)?).ok()?;
        Utc::now().checked_sub_signed(chrono::TimeDelta::try_seconds(seconds)?)
    });
    ago.ok_or_else(|| format!("`{text}` is not a time: allowed {TIME_FORMS}"))
}

/// Parse a decision id.
pub(crate) fn parse_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text.trim()).map_err(|_| format!("`{text}` is not a decision id: expected a UUID"))
}

fn parse_limit(text: &str) -> Result<u32, String> {
    text.trim().parse::<u32>().ok().filter(|n| (1..=crate::authoring::replay::PAGE).contains(n)).ok_or_else(|| {
        format!("`{text}` is not a limit: allowed an integer from 1 to {}", crate::authoring::replay::PAGE)
    })
}

/// Parse a `--limit` of decisions read in all (at least 1).
pub(crate) fn parse_total(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("`{text}` is not a number of decisions: allowed an integer of at least 1"))
}

/// Whether the global `--feature` was given on the command line (it has a default, which a
/// filter must not apply silently).
pub(crate) fn feature_given() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--feature" || a.to_string_lossy().starts_with("--feature="))
}

/// The filters the log commands share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filters {
    /// Of this repository (as logged: its canonical id, or the masked form).
    #[arg(long)]
    pub repository: Option<String>,
    /// Decided at or after this time (RFC 3339, a date, or a time ago: 30m, 24h, 7d).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Decided before this time (same forms as --since).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// With this routing rule, or (eligibility decisions) this eligibility reason.
    #[arg(long)]
    pub rule: Option<String>,
}

impl Filters {
    /// The store's filter: these plus the global `--feature` when it was given.
    pub(crate) fn to_filter(&self, ctx: &Ctx) -> Result<DecisionFilter, CliError> {
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if s >= u {
                return Err(CliError::usage(anyhow!(
                    "`--since` ({}) must be before `--until` ({})",
                    rfc3339(&s),
                    rfc3339(&u)
                )));
            }
        }
        Ok(DecisionFilter {
            feature: feature_given().then(|| ctx.feature.clone()),
            repository_id: self.repository.clone(),
            since: self.since,
            until: self.until,
            rule: self.rule.clone(),
            before: None,
            after: None,
            limit: 0,
        })
    }
}

/// `rollout decisions …`.
#[derive(Debug, clap::Subcommand)]
pub enum DecisionsCommand {
    /// Logged decisions, newest first (filters: the global --feature, --repository, --since,
    /// --until, --rule).
    List {
        /// The filters.
        #[command(flatten)]
        filters: Filters,
        /// Decisions to show (1 to 10000).
        #[arg(long, default_value = "50", value_parser = parse_limit)]
        limit: u32,
        /// Continue after this decision id (the `next_cursor` of the previous page).
        #[arg(long, value_parser = parse_id)]
        cursor: Option<Uuid>,
    },
    /// One logged decision, every field.
    Show {
        /// The decision id.
        #[arg(value_parser = parse_id)]
        id: Uuid,
    },
    /// Write logged decisions as JSON Lines, oldest first, with the configuration snapshots
    /// they need (for `rollout replay --from FILE`).
    Export {
        /// The filters.
        #[command(flatten)]
        filters: Filters,
        /// At most this many decisions.
        #[arg(long, value_parser = parse_total)]
        limit: Option<u64>,
        /// The file to write (`-`: standard output).
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
}

/// Run `rollout decisions …`.
pub async fn run(ctx: &Ctx, cmd: DecisionsCommand) -> CliResult {
    match cmd {
        DecisionsCommand::List { filters, limit, cursor } => list(ctx, &filters, limit, cursor).await,
        DecisionsCommand::Show { id } => show(ctx, id).await,
        DecisionsCommand::Export { filters, limit, out } => export(ctx, &filters, limit, out).await,
    }
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn store_error(context: String) -> impl FnOnce(crate::store::StoreError) -> CliError {
    move |e| CliError::unavailable(anyhow::Error::new(e).context(context))
}

/// `rule` of a route decision, `reason` of an eligibility decision.
fn rule_or_reason(r: &DecisionRecord) -> String {
    r.rule.clone().unwrap_or_else(|| r.reason.clone())
}

async fn list(ctx: &Ctx, filters: &Filters, limit: u32, cursor: Option<Uuid>) -> CliResult {
    let mut filter = filters.to_filter(ctx)?;
    filter.before = cursor;
    filter.limit = limit;
    let store = connect(ctx, false).await?;
    let rows = store
        .decisions(&filter)
        .await
        .map_err(store_error(format!("cannot read the decision log of `{}`", ctx.redacted())))?;
    let next = (rows.len() == limit as usize).then(|| rows.last().map(|r| r.id)).flatten();
    if ctx.json {
        print_json(&serde_json::json!({"decisions": rows, "next_cursor": next}))?;
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        outln!("no logged decisions match");
        return Ok(Exit::Ok);
    }
    let mut t = Table::new([
        "id",
        "time",
        "feature",
        "kind",
        "repository",
        "decision",
        "rule/reason",
        "bucket",
        "config",
        "policy",
    ])
    .right(7)
    .right(8);
    for r in &rows {
        let decision = match (&r.fallback, &r.processor) {
            (Some(_), _) => "fallback".to_owned(),
            (None, Some(p)) => p.clone(),
            (None, None) => if r.eligible { "eligible" } else { "not eligible" }.to_owned(),
        };
        t.row([
            r.id.to_string(),
            rfc3339(&r.time),
            r.feature.clone(),
            r.kind.as_str().to_owned(),
            r.repository_id.clone(),
            decision,
            rule_or_reason(r),
            r.bucket.to_string(),
            r.config_version.to_string(),
            short(&r.policy_sha256).to_owned(),
        ]);
    }
    out!("{}", t.render());
    if let Some(next) = next {
        outln!("more: --cursor {next}");
    }
    Ok(Exit::Ok)
}

async fn show(ctx: &Ctx, id: Uuid) -> CliResult {
    let store = connect(ctx, false).await?;
    let record = store
        .decision(id)
        .await
        .map_err(store_error(format!("cannot read decision `{id}`")))?
        .ok_or_else(|| CliError::usage(anyhow!("no logged decision has id `{id}`")))?;
    if ctx.json {
        print_json(&record)?;
        return Ok(Exit::Ok);
    }
    let r = &record;
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let mut rows = vec![
        ("id", r.id.to_string()),
        ("time", rfc3339(&r.time)),
        ("feature", r.feature.clone()),
        ("kind", r.kind.as_str().to_owned()),
        ("repository", format!("{}{}", r.repository_id, if r.masked { " (masked)" } else { "" })),
        ("category", text(&r.category)),
    ];
    if let Some(job) = &r.job {
        rows.push(("job", job.to_string()));
    }
    if r.processor.is_some() || r.rule.is_some() {
        rows.push(("processor", text(&r.processor)));
        rows.push(("rule", text(&r.rule)));
    }
    rows.extend([
        ("eligible", crate::cli::output::yes_no(r.eligible).to_owned()),
        ("reason", r.reason.clone()),
        ("bucket", r.bucket.to_string()),
        ("fallback", text(&r.fallback)),
        ("config version", r.config_version.to_string()),
        ("overrides", r.overrides.as_ref().map_or_else(|| "none".to_owned(), |o| o.to_string())),
        ("policy", r.policy_sha256.clone()),
        ("duration", format!("{} µs", r.duration_us)),
    ]);
    out!("{}", pairs(&rows));
    Ok(Exit::Ok)
}

/// A progress bar on stderr when it is a terminal (hidden otherwise), counting decisions.
pub(crate) fn progress_bar(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) =
        indicatif::ProgressStyle::with_template(&format!("{{spinner}} {{pos}} decisions {what} ({{per_sec}})"))
    {
        bar.set_style(style);
    }
    bar
}

async fn export(ctx: &Ctx, filters: &Filters, limit: Option<u64>, out: PathBuf) -> CliResult {
    let filter = filters.to_filter(ctx)?;
    let store = connect(ctx, false).await?;
    let to_stdout = out.as_os_str() == "-";
    let sink: Box<dyn std::io::Write> = if to_stdout {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let file = std::fs::File::create(&out)
            .with_context(|| format!("cannot create `{}`", out.display()))
            .map_err(CliError::usage)?;
        Box::new(std::io::BufWriter::new(file))
    };
    let shown = if to_stdout { PathBuf::from("standard output") } else { out.clone() };
    let mut writer = ExportWriter::new(sink)
        .with_context(|| format!("cannot write `{}`", shown.display()))
        .map_err(CliError::unavailable)?;
    let bar = progress_bar("exported");
    export_store(&store, &filter, limit, &mut writer, &shown, |n| bar.inc(n))
        .await
        .context("cannot export the decision log")
        .map_err(CliError::unavailable)?;
    bar.finish_and_clear();
    let (decisions, configs) = (writer.decisions, writer.configs);
    writer.finish().with_context(|| format!("cannot write `{}`", shown.display())).map_err(CliError::unavailable)?;
    if !to_stdout {
        eprintln!("exported {decisions} decisions and {configs} configuration versions to `{}`", out.display());
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_dates_or_ago() {
        assert_eq!(rfc3339(&parse_time("2026-01-31T14:02:00Z").unwrap()), "2026-01-31T14:02:00.000Z");
        assert_eq!(rfc3339(&parse_time("2026-01-31").unwrap()), "2026-01-31T00:00:00.000Z");
        let ago = Utc::now() - parse_time("2h").unwrap();
        assert!((ago.num_seconds() - 7200).abs() < 5, "{ago}");
        for bad in ["yesterday", "5w", "-3h", "", "2026-13-01"] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains("RFC 3339") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn limits_and_ids_name_what_is_allowed() {
        assert_eq!(parse_limit("10"), Ok(10));
        assert!(parse_limit("0").unwrap_err().contains("1 to 10000"));
        assert!(parse_limit("10001").is_err());
        assert!(parse_id("x").unwrap_err().contains("UUID"));
    }
}
