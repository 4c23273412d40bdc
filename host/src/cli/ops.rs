//! Operator commands working straight on the database (SPEC §6): `migrate`, `status`,
//! `stats`, `history`, `set-percentage`, `emergency-stop`, `resume`, `whitelist`,
//! `exclude`, `categorize`, `check-health`, `route`, `record`, `demo seed`, and the
//! database half of `rollout policy` ([`store_policy`]: `upload`, `list`, `activate`,
//! `revert`).
//!
//! Every command prints a table for people, or with `--json` one JSON document with stable
//! keys for scripts. Exit status: 0 success, 1 a failed check (unhealthy `check-health`, a
//! policy refused by validation, a declined confirmation), 2 bad usage or input (the
//! message names the argument), 3 the database or the policy could not be reached (the
//! message names the URL, password removed).
//!
//! Commands that decide (route, stats, categorize, check-health, status, demo) run the
//! policy the servers run: the version active in `policy_versions`, else the bundled
//! reference policy, loaded by the wasmtime runtime. `HYBRID_*` variables set in the
//! command's own environment apply as they do for a server start (SPEC §4): shown by
//! `status`, used by decisions, and recorded as an `env_override` history row.

/// `print!` that ignores a closed stdout (`rollout history | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` that ignores a closed stdout.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod store_policy;
pub mod table;

pub use store_policy::PolicyStoreCommand;

use super::{CliError, CliResult, Exit};
use crate::engine::{Decide, NativePolicy, PolicyVersion};
use crate::env::EnvOverrides;
use crate::manager::{
    EffectiveConfig, HealthReport, Manager, ManagerError, OutcomeInput, ProcessorStats, Sourced, ValueSource,
};
use crate::runtime::{sha256_hex, Runtime, RuntimeOptions, BUNDLED_POLICY};
use crate::store::{redact_url, HistoryEntry, Store, StoreError};
use anyhow::{anyhow, Context};
use clap::{ArgGroup, Args, Subcommand};
use rollout_policy::{Processor, RepositoryStats};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::str::FromStr;
use std::sync::Arc;
use table::{pairs, Table};

/// The operator commands (flattened into [`super::Command`]).
#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Apply the database migrations (idempotent) and make sure the feature is configured.
    Migrate,
    /// The configuration in force (environment overrides marked), the policy, and health.
    Status,
    /// The rollout's statistics over the monitoring window.
    Stats,
    /// The audit history, newest first.
    History {
        /// Rows to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Set the rollout percentage (0..=100).
    SetPercentage {
        /// The new percentage.
        #[arg(value_name = "N", allow_hyphen_values = true)]
        percentage: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: String,
    },
    /// Stop the rollout for every repository (asks to confirm unless --yes).
    EmergencyStop {
        /// Why (kept in the history).
        #[arg(long)]
        reason: String,
        /// Do not ask; required when standard input is not a terminal.
        #[arg(long)]
        yes: bool,
    },
    /// Lift the emergency stop.
    Resume {
        /// Why (kept in the history).
        #[arg(long)]
        reason: String,
    },
    /// Edit the whitelist (`target_repositories`): ids are UUIDs or owner/name.
    #[command(subcommand)]
    Whitelist(ListEdit),
    /// Edit the exclusions (`excluded_repositories`): ids are UUIDs or owner/name.
    #[command(subcommand)]
    Exclude(ListEdit),
    /// Categorise one repository, or every repository of `repositories` with --all.
    Categorize(CategorizeArgs),
    /// Evaluate health over the window; with --apply, roll back when the policy says so.
    /// Exit 1 when the level is warning or critical.
    CheckHealth {
        /// Carry out the rollback the policy asks for.
        #[arg(long)]
        apply: bool,
    },
    /// Where a job of a repository would run, and why (writes nothing).
    Route {
        /// The repository (UUID or owner/name).
        id: String,
        /// The job as JSON (or @FILE): job_type, time_range_days, pr_numbers,
        /// trigger_source, max_items.
        #[arg(long, default_value = "{}")]
        job: String,
    },
    /// Record a job outcome (returns once it is durable).
    Record(RecordArgs),
    /// Demo data for trying the tools (`make run` seeds it).
    #[command(subcommand)]
    Demo(DemoCommand),
}

/// `whitelist` and `exclude` subcommands.
#[derive(Debug, Subcommand)]
pub enum ListEdit {
    /// Add repositories.
    Add {
        /// UUIDs or owner/name.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove repositories.
    Remove {
        /// UUIDs or owner/name.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `categorize [ID | --all]`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "all"])))]
pub struct CategorizeArgs {
    /// The repository (UUID or owner/name).
    pub id: Option<String>,
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

/// `record ID --processor P (--success | --error MSG) [--time-ms N]`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("result").required(true).args(["success", "error"])))]
pub struct RecordArgs {
    /// The repository (UUID or owner/name).
    pub id: String,
    /// Where the job ran: inngest or github_actions.
    #[arg(long)]
    pub processor: String,
    /// The job succeeded.
    #[arg(long)]
    pub success: bool,
    /// The job failed with this message.
    #[arg(long, value_name = "MSG")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    #[arg(long, value_name = "N")]
    pub time_ms: Option<u64>,
}

/// `demo` subcommands.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Seed demo repositories, categories, a first ramp step and outcomes (idempotent).
    Seed {
        /// Repositories to create.
        #[arg(long, default_value_t = 300)]
        repositories: u32,
        /// Outcomes to record (first run only).
        #[arg(long, default_value_t = 1200)]
        outcomes: u32,
        /// The first ramp step, set only when the rollout is at 0 %.
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u8).range(0..=100))]
        percentage: u8,
    },
}

/// Where and how a command runs: the global options.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) url: String,
    pub(crate) feature: String,
    pub(crate) json: bool,
}

impl Ctx {
    pub(crate) fn redacted(&self) -> String {
        redact_url(&self.url)
    }
}

/// Run an operator command.
pub fn run(cmd: OpsCommand, database_url: &str, feature: &str, json: bool) -> CliResult {
    let ctx = Ctx { url: database_url.to_owned(), feature: feature.to_owned(), json };
    block_on(async move {
        match cmd {
            OpsCommand::Migrate => migrate(&ctx).await,
            OpsCommand::Status => status(&ctx).await,
            OpsCommand::Stats => stats(&ctx).await,
            OpsCommand::History { limit } => history(&ctx, limit).await,
            OpsCommand::SetPercentage { percentage, reason } => set_percentage(&ctx, &percentage, &reason).await,
            OpsCommand::EmergencyStop { reason, yes } => emergency_stop(&ctx, &reason, yes).await,
            OpsCommand::Resume { reason } => resume(&ctx, &reason).await,
            OpsCommand::Whitelist(edit) => list_edit(&ctx, ListKind::Whitelist, edit).await,
            OpsCommand::Exclude(edit) => list_edit(&ctx, ListKind::Exclude, edit).await,
            OpsCommand::Categorize(args) => categorize(&ctx, args).await,
            OpsCommand::CheckHealth { apply } => check_health(&ctx, apply).await,
            OpsCommand::Route { id, job } => route(&ctx, &id, &job).await,
            OpsCommand::Record(args) => record(&ctx, args).await,
            OpsCommand::Demo(DemoCommand::Seed { repositories, outcomes, percentage }) => {
                demo_seed(&ctx, crate::demo::DemoOptions { repositories, outcomes, percentage }).await
            }
        }
    })
}

/// Run a future on a fresh tokio runtime (the CLI is synchronous at its edge).
pub(crate) fn block_on<F: std::future::Future<Output = CliResult>>(future: F) -> CliResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::unavailable)?;
    runtime.block_on(future)
}

// ---------------------------------------------------------------------------------------
// errors

/// The exit status of a store error: bad input is 2, anything else 3.
pub(crate) fn store_exit(e: &StoreError) -> Exit {
    match e {
        StoreError::UnsupportedUrl(_)
        | StoreError::UnknownFeature(_)
        | StoreError::InvalidRepositoryId(_)
        | StoreError::UnknownRepository(_)
        | StoreError::InvalidConfig(_)
        | StoreError::UnknownPolicy(_) => Exit::Usage,
        StoreError::Connect { .. }
        | StoreError::Migrate(_)
        | StoreError::Database { .. }
        | StoreError::Corrupt { .. }
        | StoreError::RecorderClosed => Exit::Unavailable,
    }
}

/// The exit status of a manager error.
pub(crate) fn manager_exit(e: &ManagerError) -> Exit {
    match e {
        ManagerError::Store(s) => store_exit(s),
        ManagerError::PolicyUnavailable(_) => Exit::Unavailable,
        ManagerError::NoStats(_) | ManagerError::InvalidPercentage(_) | ManagerError::NoIds => Exit::Usage,
    }
}

/// A store error with context, mapped to its exit status.
pub(crate) fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> CliError {
    let context = context.into();
    move |e| CliError { exit: store_exit(&e), error: anyhow::Error::new(e).context(context) }
}

/// A manager error with context, mapped to its exit status.
pub(crate) fn manager_err(context: impl Into<String>) -> impl FnOnce(ManagerError) -> CliError {
    let context = context.into();
    move |e| CliError { exit: manager_exit(&e), error: anyhow::Error::new(e).context(context) }
}

fn usage(message: impl std::fmt::Display) -> CliError {
    CliError::usage(anyhow!("{message}"))
}

fn failed(message: impl std::fmt::Display) -> CliError {
    CliError { exit: Exit::Failed, error: anyhow!("{message}") }
}

/// A `--reason` that is not blank.
fn reason_arg(reason: &str) -> Result<&str, CliError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(usage("invalid `--reason`: must not be empty"));
    }
    Ok(r)
}

/// Who the history says made a change: `cli:$USER`.
pub(crate) fn triggered_by() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default();
    let user: String = user.chars().filter(|c| !c.is_control()).take(80).collect();
    if user.is_empty() {
        "cli".to_owned()
    } else {
        format!("cli:{user}")
    }
}

// ---------------------------------------------------------------------------------------
// connecting

/// The file of a `sqlite:` URL (`None` for in-memory databases and other schemes).
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// How long the CLI waits for a Postgres connection.
pub const PG_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connect; unless `create`, insist the database exists and is migrated.
pub(crate) async fn connect(ctx: &Ctx, create: bool) -> Result<Store, CliError> {
    let shown = ctx.redacted();
    if !create {
        if let Some(path) = sqlite_path(&ctx.url) {
            if !path.exists() {
                return Err(CliError::unavailable(anyhow!(
                    "database `{shown}` does not exist: run `rollout migrate` to create it, or pass --database-url"
                )));
            }
        }
    }
    let store = if ctx.url.starts_with("postgres://") || ctx.url.starts_with("postgresql://") {
        // a short acquire timeout: an unreachable server answers in seconds, not in 30
        let opts = sqlx::postgres::PgConnectOptions::from_str(&ctx.url)
            .with_context(|| format!("invalid database url `{shown}`"))
            .map_err(CliError::usage)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(PG_CONNECT_TIMEOUT)
            .connect_with(opts)
            .await
            // the driver's message only: its source chain repeats it
            .map_err(|e| CliError::unavailable(anyhow!("cannot connect to the database `{shown}`: {e}")))?;
        Store::Postgres(pool)
    } else {
        Store::connect(&ctx.url).await.map_err(store_err(format!("cannot open the database `{shown}`")))?
    };
    if !create && !is_migrated(&store).await.map_err(store_err(format!("cannot read the database `{shown}`")))? {
        return Err(CliError::unavailable(anyhow!(
            "database `{shown}` has no rollout tables: run `rollout migrate` first"
        )));
    }
    Ok(store)
}

async fn is_migrated(store: &Store) -> Result<bool, StoreError> {
    let ctx = "look for the rollout_configuration table";
    match store {
        Store::Sqlite(pool) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rollout_configuration'",
            )
            .fetch_one(pool)
            .await
            .map_err(StoreError::db(ctx))?;
            Ok(n > 0)
        }
        Store::Postgres(pool) => sqlx::query_scalar("SELECT to_regclass('rollout_configuration') IS NOT NULL")
            .fetch_one(pool)
            .await
            .map_err(StoreError::db(ctx)),
    }
}

fn overrides() -> Result<EnvOverrides, CliError> {
    EnvOverrides::from_env().context("invalid environment override").map_err(CliError::usage)
}

/// Where the policy the CLI runs came from.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PolicyInfo {
    /// The policy's name.
    pub(crate) name: String,
    /// Its version.
    pub(crate) version: String,
    /// Lowercase hex sha256 of the component.
    pub(crate) sha256: String,
    /// `policy_versions` (the active stored version) or `bundled`.
    pub(crate) source: &'static str,
}

impl PolicyInfo {
    fn from_version(v: &PolicyVersion, source: &'static str) -> PolicyInfo {
        PolicyInfo { name: v.name.clone(), version: v.version.clone(), sha256: v.sha256.clone(), source }
    }

    fn line(&self) -> String {
        let source =
            if self.source == "bundled" { "bundled reference, none activated" } else { "active in policy_versions" };
        format!("{} {} (sha256 {}, {source})", self.name, self.version, short(&self.sha256))
    }
}

/// Running time a guest call of the CLI may take. The CLI answers one operator at a
/// time, so it gives calls (and the safety check of a load) far more room than a server's
/// 10 ms: a busy machine must not make `rollout status` fail. A server checks a version
/// again with its own limits when it loads it.
pub const CLI_CALL_LIMIT_MS: u64 = 1000;

/// A runtime for one-off checks and decisions: one instance, no automatic revert,
/// [`CLI_CALL_LIMIT_MS`] per call.
pub(crate) fn new_runtime() -> Result<Runtime, CliError> {
    let limits = crate::runtime::Limits { epoch_ticks: CLI_CALL_LIMIT_MS, ..crate::runtime::Limits::default() };
    let options = RuntimeOptions { limits, pool_size: 1, auto_revert_window: 0, ..RuntimeOptions::default() };
    Runtime::new(options).context("cannot start the policy runtime").map_err(CliError::unavailable)
}

/// The policy the servers run: the active stored version, else the bundled one.
pub(crate) async fn load_policy(store: &Store, shown: &str) -> Result<(Runtime, PolicyInfo), CliError> {
    let runtime = new_runtime()?;
    let versions = store
        .list_policy_versions()
        .await
        .map_err(store_err(format!("cannot read the policy versions of `{shown}`")))?;
    if let Some(active) = versions.into_iter().find(|v| v.active) {
        let bytes = store
            .policy_bytes(&active.sha256)
            .await
            .map_err(store_err(format!("cannot read policy `{}` from `{shown}`", active.sha256)))?
            .ok_or_else(|| CliError::unavailable(anyhow!("policy `{}` vanished from `{shown}`", active.sha256)))?;
        let report = runtime
            .load_bytes(&bytes, &format!("policy_versions:{}", active.sha256))
            .with_context(|| format!("cannot load the active policy `{}`", active.sha256))
            .map_err(CliError::unavailable)?;
        return Ok((runtime, PolicyInfo::from_version(&report.version, "policy_versions")));
    }
    let report = runtime
        .load_bytes(BUNDLED_POLICY, "bundled")
        .context("cannot load the bundled reference policy")
        .map_err(CliError::unavailable)?;
    Ok((runtime, PolicyInfo::from_version(&report.version, "bundled")))
}

/// The manager of the feature, running the servers' policy.
async fn open(ctx: &Ctx) -> Result<(Manager, PolicyInfo), CliError> {
    let overrides = overrides()?;
    let store = connect(ctx, false).await?;
    let (runtime, info) = load_policy(&store, &ctx.redacted()).await?;
    let manager = Manager::open_quietly(store, Arc::new(runtime), &ctx.feature, overrides)
        .await
        .map_err(manager_err(format!("cannot open the rollout `{}` in `{}`", ctx.feature, ctx.redacted())))?;
    Ok((manager, info))
}

/// The manager of the feature for changes, which need no policy decisions.
async fn open_for_changes(ctx: &Ctx) -> Result<Manager, CliError> {
    let overrides = overrides()?;
    let store = connect(ctx, false).await?;
    let policy: Arc<dyn Decide> = Arc::new(NativePolicy);
    Manager::open_quietly(store, policy, &ctx.feature, overrides).await.map_err(manager_err(format!(
        "cannot open the rollout `{}` in `{}`",
        ctx.feature,
        ctx.redacted()
    )))
}

// ---------------------------------------------------------------------------------------
// printing

/// Print `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .context("cannot encode the output as JSON")
        .map_err(CliError::unavailable)?;
    outln!("{text}");
    Ok(())
}

/// The first 12 hex digits of a digest.
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn pct(v: f64) -> String {
    format!("{v:.2} %")
}

fn sourced<T: PartialEq + std::fmt::Display>(s: &Sourced<T>, show: impl Fn(&T) -> String) -> String {
    match s.source {
        ValueSource::Database => show(&s.value),
        ValueSource::Environment => format!("{}  (environment; database {})", show(&s.value), show(&s.database_value)),
    }
}

fn name_of(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn processors_table(processors: &BTreeMap<String, ProcessorStats>) -> String {
    let mut t = Table::new(["processor", "jobs", "successes", "errors", "error rate", "mean time"])
        .right(1)
        .right(2)
        .right(3)
        .right(4)
        .right(5);
    for (name, p) in processors {
        t.row([
            name.clone(),
            p.total_jobs.to_string(),
            p.success_count.to_string(),
            p.error_count.to_string(),
            pct(p.error_rate),
            p.average_processing_time_ms.map_or("-".to_owned(), |ms| format!("{ms:.0} ms")),
        ]);
    }
    t.render()
}

fn percentage_change(h: &HistoryEntry) -> String {
    match (h.previous_percentage, h.new_percentage) {
        (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
        (Some(a), Some(_)) => a.to_string(),
        (None, Some(b)) => format!("→ {b}"),
        (Some(a), None) => format!("{a} →"),
        (None, None) => "-".to_owned(),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() > max {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

fn history_table(rows: &[HistoryEntry]) -> String {
    let mut t = Table::new(["#", "time", "action", "percentage", "by", "reason"]).right(0);
    for h in rows {
        t.row([
            h.seq.to_string(),
            time(&h.created_at),
            h.action.as_str().to_owned(),
            percentage_change(h),
            h.triggered_by.clone().unwrap_or_default(),
            one_line(h.reason.as_deref().unwrap_or(""), 60),
        ]);
    }
    t.render()
}

fn health_line(h: &HealthReport) -> String {
    format!(
        "{}, action {} — {} over {} jobs since {} ({})",
        h.level,
        h.action,
        pct(h.error_rate),
        h.total_jobs,
        time(&h.window_start),
        h.reason
    )
}

// ---------------------------------------------------------------------------------------
// commands

async fn migrate(ctx: &Ctx) -> CliResult {
    let store = connect(ctx, true).await?;
    let shown = ctx.redacted();
    store.migrate().await.map_err(store_err(format!("cannot migrate `{shown}`")))?;
    let config = store
        .ensure_config(&ctx.feature, &triggered_by())
        .await
        .map_err(store_err(format!("cannot configure the rollout `{}` in `{shown}`", ctx.feature)))?;
    if ctx.json {
        print_json(&serde_json::json!({
            "database": shown,
            "backend": store.backend(),
            "migrated": true,
            "feature": ctx.feature,
            "rollout_percentage": config.config.rollout_percentage,
        }))?;
    } else {
        outln!(
            "migrated {shown} ({}); rollout `{}` is at {} %",
            name_of(&store.backend()),
            ctx.feature,
            config.config.rollout_percentage
        );
    }
    store.close().await;
    Ok(Exit::Ok)
}

/// The status document of `rollout status --json`.
#[derive(Debug, Serialize)]
struct StatusDoc<'a> {
    feature: &'a str,
    database: serde_json::Value,
    config: &'a EffectiveConfig,
    policy: &'a PolicyInfo,
    health: &'a HealthReport,
}

async fn status(ctx: &Ctx) -> CliResult {
    let (manager, policy) = open(ctx).await?;
    let health = manager.check_health().await.map_err(manager_err("cannot evaluate health"))?;
    let config = manager.effective_config();
    if ctx.json {
        print_json(&StatusDoc {
            feature: &ctx.feature,
            database: serde_json::json!({"url": ctx.redacted(), "backend": manager.store().backend()}),
            config: &config,
            policy: &policy,
            health: &health,
        })?;
        return Ok(Exit::Ok);
    }
    let rows = vec![
        ("feature", config.feature_name.clone()),
        ("database", format!("{} ({})", ctx.redacted(), name_of(&manager.store().backend()))),
        ("percentage", sourced(&config.rollout_percentage, |p| format!("{p} %"))),
        ("strategy", sourced(&config.rollout_strategy, Clone::clone)),
        ("emergency stop", sourced(&config.emergency_stop, |b| on_off(*b).to_owned())),
        ("active", yes_no(config.is_active).to_owned()),
        ("auto-rollback", sourced(&config.auto_rollback_enabled, |b| on_off(*b).to_owned())),
        ("max error rate", sourced(&config.max_error_rate, |r| pct(*r))),
        (
            "health window",
            format!(
                "{} h, at least {} jobs to roll back",
                config.monitoring_window_hours, config.min_jobs_for_rollback
            ),
        ),
        ("whitelist", list_summary(&config.target_repositories)),
        ("exclusions", list_summary(&config.excluded_repositories)),
        ("policy", policy.line()),
        ("health", health_line(&health)),
        ("state changed", time(&config.state_changed_at)),
        ("updated", time(&config.updated_at)),
    ];
    out!("{}", pairs(&rows));
    if !config.env_overrides.is_empty() {
        outln!();
        let mut t = Table::new(["environment override", "field", "value"]);
        for o in &config.env_overrides {
            t.row([o.variable.to_owned(), o.field.to_owned(), o.value.clone()]);
        }
        out!("{}", t.render());
    }
    Ok(Exit::Ok)
}

fn list_summary(ids: &[String]) -> String {
    match ids.len() {
        0 => "none".to_owned(),
        1..=3 => ids.join(", "),
        n => format!("{n} repositories ({}, …)", ids[..2].join(", ")),
    }
}

async fn stats(ctx: &Ctx) -> CliResult {
    let (manager, policy) = open(ctx).await?;
    let s = manager.get_rollout_stats().await.map_err(manager_err("cannot compute the statistics"))?;
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

async fn history(ctx: &Ctx, limit: u32) -> CliResult {
    let store = connect(ctx, false).await?;
    let shown = ctx.redacted();
    // the feature must exist; a typo in --feature must not read as an empty history
    store
        .get_config(&ctx.feature)
        .await
        .map_err(store_err(format!("cannot read the rollout `{}` in `{shown}`", ctx.feature)))?;
    let rows =
        store.history(&ctx.feature, limit).await.map_err(store_err(format!("cannot read the history of `{shown}`")))?;
    if ctx.json {
        print_json(&rows)?;
    } else if rows.is_empty() {
        outln!("no history for `{}`", ctx.feature);
    } else {
        out!("{}", history_table(&rows));
    }
    Ok(Exit::Ok)
}

/// Parse a percentage argument (the message names the input and the allowed values).
pub fn parse_percentage(s: &str) -> Result<u8, CliError> {
    s.trim()
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| usage(format!("invalid percentage `{s}`: allowed 0..=100")))
}

fn warn_override(variable: &str, active: bool) {
    if active {
        eprintln!(
            "warning: {variable} is set in this environment and overrides the database value in processes started with it"
        );
    }
}

fn change_json(outcome: &crate::store::ChangeOutcome, extra: serde_json::Value) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "applied": outcome.applied,
        "previous": outcome.before.to_json(),
        "new": outcome.after.to_json(),
        "history": outcome.history,
    });
    if let (Some(d), serde_json::Value::Object(extra)) = (doc.as_object_mut(), extra) {
        d.extend(extra);
    }
    doc
}

fn history_note(outcome: &crate::store::ChangeOutcome) -> String {
    outcome.history.as_ref().map_or_else(|| "no history row".to_owned(), |h| format!("history #{}", h.seq))
}

async fn set_percentage(ctx: &Ctx, percentage: &str, reason: &str) -> CliResult {
    let p = parse_percentage(percentage)?;
    let reason = reason_arg(reason)?;
    let manager = open_for_changes(ctx).await?;
    let outcome = manager
        .set_percentage(u32::from(p), Some(reason), &triggered_by())
        .await
        .map_err(manager_err(format!("cannot set the percentage of `{}`", ctx.feature)))?;
    warn_override(crate::env::ROLLOUT_PERCENTAGE, manager.overrides().rollout_percentage.is_some());
    if ctx.json {
        print_json(&change_json(&outcome, serde_json::json!({"rollout_percentage": p})))?;
    } else {
        outln!(
            "percentage of `{}`: {} % → {} % ({})",
            ctx.feature,
            outcome.before.config.rollout_percentage,
            outcome.after.config.rollout_percentage,
            history_note(&outcome)
        );
    }
    Ok(Exit::Ok)
}

/// Ask on the terminal; `Ok(true)` when the answer is yes.
fn confirm(question: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{question} [y/N] ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("cannot read the confirmation").map_err(CliError::usage)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

async fn emergency_stop(ctx: &Ctx, reason: &str, yes: bool) -> CliResult {
    let reason = reason_arg(reason)?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(usage(format!(
                "refusing to stop the rollout `{}` without confirmation: standard input is not a terminal; pass --yes",
                ctx.feature
            )));
        }
        let question = format!(
            "Stop the rollout `{}` in {} now? Every repository goes back to inngest.",
            ctx.feature,
            ctx.redacted()
        );
        if !confirm(&question)? {
            return Err(failed("emergency stop not confirmed; nothing changed"));
        }
    }
    let manager = open_for_changes(ctx).await?;
    if manager.stored_config().config.emergency_stop {
        return unchanged(ctx, "the emergency stop of `{}` is already on; nothing changed", true);
    }
    let outcome = manager
        .emergency_stop(reason, &triggered_by())
        .await
        .map_err(manager_err(format!("cannot stop the rollout `{}`", ctx.feature)))?;
    if ctx.json {
        print_json(&change_json(&outcome, serde_json::json!({"emergency_stop": true})))?;
    } else {
        outln!(
            "emergency stop of `{}` is on; the percentage stays {} % for `rollout resume` ({})",
            ctx.feature,
            outcome.after.config.rollout_percentage,
            history_note(&outcome)
        );
    }
    Ok(Exit::Ok)
}

async fn resume(ctx: &Ctx, reason: &str) -> CliResult {
    let reason = reason_arg(reason)?;
    let manager = open_for_changes(ctx).await?;
    if !manager.stored_config().config.emergency_stop {
        warn_override(crate::env::EMERGENCY_STOP, manager.overrides().emergency_stop == Some(true));
        return unchanged(ctx, "the emergency stop of `{}` is not on; nothing to resume", false);
    }
    let outcome = manager
        .resume(reason, &triggered_by())
        .await
        .map_err(manager_err(format!("cannot resume the rollout `{}`", ctx.feature)))?;
    warn_override(crate::env::EMERGENCY_STOP, manager.overrides().emergency_stop == Some(true));
    if ctx.json {
        print_json(&change_json(&outcome, serde_json::json!({"emergency_stop": false})))?;
    } else {
        outln!(
            "emergency stop of `{}` is off; rolling out to {} % ({})",
            ctx.feature,
            outcome.after.config.rollout_percentage,
            history_note(&outcome)
        );
    }
    Ok(Exit::Ok)
}

/// A stop or resume with nothing to do: no change, no history row.
fn unchanged(ctx: &Ctx, message: &str, emergency_stop: bool) -> CliResult {
    if ctx.json {
        print_json(&serde_json::json!({"applied": false, "emergency_stop": emergency_stop, "history": null}))?;
    } else {
        outln!("{}", message.replace("{}", &ctx.feature));
    }
    Ok(Exit::Ok)
}

#[derive(Debug, Clone, Copy)]
enum ListKind {
    Whitelist,
    Exclude,
}

async fn list_edit(ctx: &Ctx, kind: ListKind, edit: ListEdit) -> CliResult {
    let (add, ids, reason) = match edit {
        ListEdit::Add { ids, reason } => (true, ids, reason),
        ListEdit::Remove { ids, reason } => (false, ids, reason),
    };
    let reason = reason.as_deref().map(reason_arg).transpose()?;
    let manager = open_for_changes(ctx).await?;
    let by = triggered_by();
    let (what, verb) = match (kind, add) {
        (ListKind::Whitelist, true) => ("whitelist", "add to"),
        (ListKind::Whitelist, false) => ("whitelist", "remove from"),
        (ListKind::Exclude, true) => ("exclusions", "add to"),
        (ListKind::Exclude, false) => ("exclusions", "remove from"),
    };
    let result = match (kind, add) {
        (ListKind::Whitelist, true) => manager.whitelist_add(&ids, reason, &by).await,
        (ListKind::Whitelist, false) => manager.whitelist_remove(&ids, reason, &by).await,
        (ListKind::Exclude, true) => manager.exclude_add(&ids, reason, &by).await,
        (ListKind::Exclude, false) => manager.exclude_remove(&ids, reason, &by).await,
    };
    let outcome = result.map_err(manager_err(format!("cannot {verb} the {what} of `{}`", ctx.feature)))?;
    let list = |c: &crate::store::StoredConfig| match kind {
        ListKind::Whitelist => c.config.target_repositories.clone(),
        ListKind::Exclude => c.config.excluded_repositories.clone(),
    };
    let (before, after) = (list(&outcome.before), list(&outcome.after));
    let key = match kind {
        ListKind::Whitelist => "target_repositories",
        ListKind::Exclude => "excluded_repositories",
    };
    if ctx.json {
        print_json(&change_json(&outcome, serde_json::json!({ key: after })))?;
    } else {
        let changed = after.len().abs_diff(before.len());
        outln!(
            "{what} of `{}`: {} {} ({} now; {})",
            ctx.feature,
            if add { "added" } else { "removed" },
            changed,
            after.len(),
            history_note(&outcome)
        );
        for id in &after {
            outln!("  {id}");
        }
    }
    Ok(Exit::Ok)
}

async fn categorize(ctx: &Ctx, args: CategorizeArgs) -> CliResult {
    let (manager, _policy) = open(ctx).await?;
    if args.all {
        let summary = manager
            .categorize_all_with_progress(std::io::stderr().is_terminal())
            .await
            .map_err(manager_err("cannot categorise the repositories"))?;
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
        if !summary.failed.is_empty() {
            return Err(CliError::unavailable(anyhow!(
                "the policy could not categorise {} repositories (first `{}`)",
                summary.failed.len(),
                summary.failed[0]
            )));
        }
        return Ok(Exit::Ok);
    }
    let Some(id) = args.id else { return Err(usage("give a repository id or --all")) };
    let stats = match (args.stars, args.contributors, args.prs) {
        (Some(star_count), Some(contributor_count), Some(pr_count)) => {
            Some(RepositoryStats { star_count, contributor_count, pr_count })
        }
        _ => None,
    };
    let c = manager
        .categorize_repository(&id, stats)
        .await
        .map_err(manager_err(format!("cannot categorise repository `{id}`")))?;
    if ctx.json {
        let mut doc = crate::cases::categorization_json(&c);
        doc.insert("repository_id".into(), id.clone().into());
        print_json(&doc)?;
    } else {
        out!(
            "{}",
            pairs(&[
                ("repository", id.clone()),
                ("category", c.category.as_str().to_owned()),
                ("priority", c.priority_level.to_string()),
                ("test repository", yes_no(c.is_test_repository).to_owned()),
                ("activity score", c.monthly_activity_score.to_string()),
            ])
        );
    }
    Ok(Exit::Ok)
}

async fn check_health(ctx: &Ctx, apply: bool) -> CliResult {
    let (manager, _policy) = open(ctx).await?;
    let report = if apply { manager.check_and_trigger_auto_rollback().await } else { manager.check_health().await }
        .map_err(manager_err(format!("cannot check the health of `{}`", ctx.feature)))?;
    if ctx.json {
        print_json(&report)?;
    } else {
        let action = if report.rolled_back {
            format!(
                "{} — rolled back to 0 % (history #{})",
                report.action,
                report.rollback.as_ref().map_or(0, |h| h.seq)
            )
        } else if report.action == "rollback" && !apply {
            "rollback (not applied; run with --apply)".to_owned()
        } else {
            report.action.clone()
        };
        out!(
            "{}",
            pairs(&[
                ("feature", report.feature_name.clone()),
                ("level", report.level.clone()),
                ("action", action),
                ("error rate", format!("{} over {} jobs", pct(report.error_rate), report.total_jobs)),
                ("window", format!("since {} ({} h at most)", time(&report.window_start), report.window_hours)),
                ("reason", report.reason.clone()),
            ])
        );
        outln!();
        out!("{}", processors_table(&report.processors));
    }
    Ok(match report.level.as_str() {
        "ok" => Exit::Ok,
        "unknown" => Exit::Unavailable,
        _ => Exit::Failed,
    })
}

fn read_json_arg(name: &str, arg: &str) -> Result<serde_json::Value, CliError> {
    let text = match arg.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read `{name}` file `{file}`"))
            .map_err(CliError::usage)?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| usage(format!("invalid `{name}`: not JSON ({e})")))
}

async fn route(ctx: &Ctx, id: &str, job: &str) -> CliResult {
    let job_value = read_json_arg("--job", job)?;
    let job = crate::cases::job_from_json(Some(&job_value)).map_err(|e| usage(format!("invalid `--job`: {e}")))?;
    let (manager, policy) = open(ctx).await?;
    // an owner/name is looked up; a UUID (or any other id text) is used as given
    let repository_id = if crate::store::split_owner_name(id.trim()).is_some() {
        manager
            .store()
            .resolve_repository_id(id)
            .await
            .map_err(store_err(format!("cannot resolve repository `{id}`")))?
            .to_string()
    } else {
        id.trim().to_owned()
    };
    let decision = manager.route(&repository_id, &job);
    if ctx.json {
        let mut doc = crate::cases::route_json(&decision);
        doc.insert("repository_id".into(), repository_id.clone().into());
        doc.insert("policy_version".into(), serde_json::to_value(&policy).unwrap_or_default());
        print_json(&doc)?;
    } else {
        let e = &decision.eligibility;
        out!(
            "{}",
            pairs(&[
                ("repository", repository_id.clone()),
                ("processor", decision.processor.as_str().to_owned()),
                ("rule", decision.rule.as_str().to_owned()),
                ("eligible", format!("{} ({}, bucket {})", yes_no(e.eligible), e.reason.as_str(), e.bucket)),
                ("policy", policy.line()),
            ])
        );
    }
    Ok(if decision.rule == rollout_policy::RouteRule::PolicyError { Exit::Unavailable } else { Exit::Ok })
}

async fn record(ctx: &Ctx, args: RecordArgs) -> CliResult {
    let processor =
        Processor::parse(args.processor.trim()).map_err(|e| usage(format!("invalid `--processor`: {e}")))?;
    let error_message = match args.error {
        Some(m) if m.trim().is_empty() => return Err(usage("invalid `--error`: the message must not be empty")),
        other => other,
    };
    let success = args.success && error_message.is_none();
    let manager = open_for_changes(ctx).await?;
    let input = OutcomeInput {
        repository_id: args.id.clone(),
        processor,
        success,
        processing_time_ms: args.time_ms,
        error_message: error_message.clone(),
    };
    manager.record_metrics(input).await.map_err(manager_err(format!("cannot record the outcome for `{}`", args.id)))?;
    if ctx.json {
        print_json(&serde_json::json!({
            "recorded": true,
            "repository_id": args.id,
            "processor_type": processor.as_str(),
            "success": success,
            "processing_time_ms": args.time_ms,
            "error_message": error_message,
        }))?;
    } else {
        let outcome =
            if success { "a success".to_owned() } else { format!("an error ({})", error_message.unwrap_or_default()) };
        let time = args.time_ms.map_or(String::new(), |ms| format!(" in {ms} ms"));
        outln!("recorded {outcome} on {} for `{}`{time}", processor.as_str(), args.id);
    }
    Ok(Exit::Ok)
}

async fn demo_seed(ctx: &Ctx, options: crate::demo::DemoOptions) -> CliResult {
    let (manager, policy) = open(ctx).await?;
    let summary = crate::demo::seed(&manager, &options).await.map_err(manager_err("cannot seed the demo"))?;
    if ctx.json {
        print_json(&summary)?;
    } else {
        let categories: Vec<String> = summary.by_category.iter().map(|(c, n)| format!("{c} {n}")).collect();
        outln!(
            "demo: {} repositories ({}); rollout at {} %{}; {} outcomes recorded{} (policy {})",
            summary.repositories,
            categories.join(", "),
            summary.percentage,
            if summary.percentage_set { " (set now)" } else { "" },
            summary.outcomes_recorded,
            if summary.outcomes_recorded == 0 { " (already seeded)" } else { "" },
            policy.line()
        );
        if let (Some(name), Some(id)) = (&summary.example_repository, &summary.example_repository_id) {
            outln!("example repository: {name} {id}");
        }
    }
    Ok(Exit::Ok)
}

/// The sha256 and info of the bundled policy, without compiling it.
pub(crate) fn bundled_info() -> PolicyInfo {
    PolicyInfo {
        name: rollout_policy::POLICY_NAME.to_owned(),
        version: rollout_policy::POLICY_VERSION.to_owned(),
        sha256: sha256_hex(BUNDLED_POLICY),
        source: "bundled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://rollout.db"), Some("rollout.db".into()));
        assert_eq!(sqlite_path("sqlite:///tmp/x.db?mode=rwc"), Some("/tmp/x.db".into()));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
    }

    #[test]
    fn percentages_are_checked() {
        assert_eq!(parse_percentage("25").ok(), Some(25));
        let e = parse_percentage("101").err().map(|e| (e.exit, e.error.to_string()));
        assert_eq!(e, Some((Exit::Usage, "invalid percentage `101`: allowed 0..=100".to_owned())));
        assert!(parse_percentage("-1").is_err());
    }
}
