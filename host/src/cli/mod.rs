//! The `rollout` command line (SPEC §6): a thin edge over the [`crate::service`] layer and
//! the offline tools ([`crate::cases`], [`crate::authoring`]).
//!
//! Each command is one file: it parses its arguments into the types of [`crate::input`],
//! calls the service (the same calls the HTTP API makes, so both edges follow one set of
//! rules), and prints a table for people or, with `--json`, one JSON document for scripts.
//!
//! Exit status: 0 success, 1 a failed check or test, 2 bad usage or input, 3 the database
//! or policy could not be reached.

#[macro_use]
mod output;
mod commands;
mod context;
mod policy_cmd;
mod table;

use crate::service::{ErrorKind, ServiceError};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit statuses of the CLI (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// A check or test failed.
    Failed = 1,
    /// Bad usage or input.
    Usage = 2,
    /// The database or the policy could not be reached.
    Unavailable = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// An error at the CLI's edge: the message and the exit status it maps to.
#[derive(Debug)]
pub struct CliError {
    /// The exit status.
    pub exit: Exit,
    /// The error with its context chain.
    pub error: anyhow::Error,
}

impl CliError {
    /// Bad usage or input (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> CliError {
        CliError { exit: Exit::Usage, error: error.into() }
    }

    /// Database or policy unreachable (exit 3).
    pub fn unavailable(error: impl Into<anyhow::Error>) -> CliError {
        CliError { exit: Exit::Unavailable, error: error.into() }
    }

    /// A failed check (exit 1).
    pub fn failed(error: impl Into<anyhow::Error>) -> CliError {
        CliError { exit: Exit::Failed, error: error.into() }
    }

    /// A service error with `context`, mapped to its exit status by its kind (the one
    /// mapping of every command).
    pub fn service(context: impl Into<String>) -> impl FnOnce(ServiceError) -> CliError {
        let context = context.into();
        move |e| {
            let exit = match e.kind() {
                ErrorKind::Invalid { .. } | ErrorKind::NotFound { .. } | ErrorKind::Conflict | ErrorKind::TooLarge => {
                    Exit::Usage
                }
                ErrorKind::Rejected => Exit::Failed,
                ErrorKind::Unavailable | ErrorKind::Internal => Exit::Unavailable,
            };
            CliError { exit, error: anyhow::Error::new(e).context(context) }
        }
    }
}

/// The result of a command: its exit status, or an error.
pub type CliResult = Result<Exit, CliError>;

/// `rollout [--database-url URL] [--feature NAME] [--json] COMMAND`.
#[derive(Debug, Parser)]
#[command(name = "rollout", version, about = "Progressive rollouts decided by a sandboxed WebAssembly policy")]
pub struct Cli {
    /// Database URL (Postgres or SQLite).
    #[arg(long, global = true, env = "DATABASE_URL", default_value = "sqlite://rollout.db")]
    pub database_url: String,
    /// The feature being rolled out.
    #[arg(long, global = true, default_value = rollout_policy::DEFAULT_FEATURE)]
    pub feature: String,
    /// Print JSON for scripts instead of tables for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Policies: test, eval, simulate, diff, bench offline; upload, list, activate, revert in the database.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// The chain of checks the policy made for one case, with the one that decided.
    Explain(commands::explain::Args),
    /// Apply the database migrations (idempotent).
    Migrate,
    /// Features: create one explicitly, list them.
    #[command(subcommand)]
    Feature(commands::feature::FeatureCommand),
    /// The configuration in force (environment overrides marked), the policy, and health.
    Status,
    /// The rollout's statistics over the monitoring window.
    Stats,
    /// The audit history, newest first.
    History(commands::history::Args),
    /// Set the rollout percentage (0..=100).
    SetPercentage(commands::set_percentage::Args),
    /// Stop the rollout for every repository (asks to confirm unless --yes).
    EmergencyStop(commands::emergency_stop::Args),
    /// Lift the emergency stop.
    Resume(commands::resume::Args),
    /// Edit the whitelist (`target_repositories`): ids are UUIDs or owner/name.
    #[command(subcommand)]
    Whitelist(commands::lists::ListEdit),
    /// Edit the exclusions (`excluded_repositories`): ids are UUIDs or owner/name.
    #[command(subcommand)]
    Exclude(commands::lists::ListEdit),
    /// Let the health check roll back by itself (`on`) or only report (`off`).
    AutoRollback(commands::auto_rollback::Args),
    /// Categorise one repository, or every repository of `repositories` with --all.
    Categorize(commands::categorize::Args),
    /// Evaluate health over the window; with --apply, roll back when the policy says so.
    /// Exit 1 when the level is warning or critical.
    CheckHealth(commands::check_health::Args),
    /// Where a job of a repository would run, and why (writes nothing).
    Route(commands::route::Args),
    /// Record a job outcome (returns once it is durable).
    Record(commands::record::Args),
    /// Alert events: list them with their delivery state, send a test event, requeue a
    /// dead-lettered one.
    #[command(subcommand)]
    Alerts(commands::alerts::AlertsCommand),
    /// Queue backlog: report a processor's queue depth and oldest item's age, show the
    /// reports of the last hours.
    #[command(subcommand)]
    Backlog(commands::backlog::BacklogCommand),
    /// How many served decisions are logged (--sample-rate 0 to 1) and whether repository
    /// ids are masked; with no option, the settings in force. Audited.
    DecisionLog(commands::decision_log::Args),
    /// The decision log: list logged decisions, show one, export them as JSON Lines.
    #[command(subcommand)]
    Decisions(commands::decisions::DecisionsCommand),
    /// Re-evaluate logged decisions: under their own policy and configuration (a
    /// determinism check, exit 1 on a difference), or under --policy/--sha (a what-if).
    Replay(commands::replay::Args),
    /// Demo data for trying the tools (`make run` seeds it).
    #[command(subcommand)]
    Demo(commands::demo::DemoCommand),
    /// Serve the HTTP API, the status page and /metrics.
    Serve(commands::serve::Args),
}

/// Parse the command line, run the command, print errors, and give the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {:#}", e.error);
            e.exit.into()
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> CliResult {
    let ctx = context::Ctx { url: cli.database_url, feature: cli.feature, json: cli.json };
    use commands as c;
    match cli.command {
        Command::Policy(cmd) => policy_cmd::run(cmd, &ctx),
        Command::Explain(args) => c::explain::run(args, &ctx),
        Command::Serve(args) => c::serve::run(args, &ctx),
        Command::Migrate => context::block_on(c::migrate::run(&ctx)),
        Command::Feature(cmd) => context::block_on(c::feature::run(&ctx, cmd)),
        Command::Status => context::block_on(c::status::run(&ctx)),
        Command::Stats => context::block_on(c::stats::run(&ctx)),
        Command::History(args) => context::block_on(c::history::run(&ctx, args)),
        Command::SetPercentage(args) => context::block_on(c::set_percentage::run(&ctx, args)),
        Command::EmergencyStop(args) => context::block_on(c::emergency_stop::run(&ctx, args)),
        Command::Resume(args) => context::block_on(c::resume::run(&ctx, args)),
        Command::Whitelist(edit) => context::block_on(c::lists::run(&ctx, c::lists::ListKind::Whitelist, edit)),
        Command::Exclude(edit) => context::block_on(c::lists::run(&ctx, c::lists::ListKind::Exclude, edit)),
        Command::AutoRollback(args) => context::block_on(c::auto_rollback::run(&ctx, args)),
        Command::Categorize(args) => context::block_on(c::categorize::run(&ctx, args)),
        Command::CheckHealth(args) => context::block_on(c::check_health::run(&ctx, args)),
        Command::Route(args) => context::block_on(c::route::run(&ctx, args)),
        Command::Record(args) => context::block_on(c::record::run(&ctx, args)),
        Command::Demo(cmd) => context::block_on(c::demo::run(&ctx, cmd)),
        Command::DecisionLog(args) => context::block_on(c::decision_log::run(&ctx, args)),
        Command::Decisions(cmd) => context::block_on(c::decisions::run(&ctx, cmd)),
        Command::Replay(args) => context::block_on(c::replay::run(&ctx, args)),
        Command::Alerts(cmd) => context::block_on(c::alerts::run(&ctx, cmd)),
        Command::Backlog(cmd) => context::block_on(c::backlog::run(&ctx, cmd)),
    }
}
