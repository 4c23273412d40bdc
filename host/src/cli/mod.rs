//! The `rollout` command line (SPEC §6).
//!
//! Exit status: 0 success, 1 a failed check or test, 2 bad usage or input, 3 the database
//! or policy could not be reached.

mod explain;
mod ops;
mod policy;
mod serve;

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
    Policy(policy::PolicyCommand),
    /// The chain of checks of SPEC §2 in words for one case, with the line that decided.
    Explain(explain::ExplainArgs),
    /// Operator commands on the database: migrate, status, stats, history, set-percentage, …
    #[command(flatten)]
    Ops(ops::OpsCommand),
    /// Serve the HTTP API, the status page and /metrics.
    Serve(serve::ServeArgs),
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
    match cli.command {
        Command::Policy(cmd) => policy::run(cmd, &cli.feature, cli.json),
        Command::Explain(args) => explain::run(args, &cli.feature, cli.json),
        Command::Ops(cmd) => ops::run(cmd, &cli.database_url, &cli.feature, cli.json),
        Command::Serve(args) => serve::run(args, &cli.database_url, &cli.feature),
    }
}
