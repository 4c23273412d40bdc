//! `rollout policy …`: offline authoring tools (test, eval, simulate, diff, bench) and the
//! policy versions in the database (upload, list, activate, revert: `ops::store_policy`).
//! The logic lives in [`crate::cases`] and [`crate::authoring`]; this file parses
//! arguments, prints and maps failures to exit statuses.

use super::{CliError, CliResult, Exit};
use crate::authoring::{self, bench, diff, simulate, Component, OfflinePolicy};
use crate::cases::{self, Backend, WasmBackend};
use crate::runtime::{new_engine, CallError, CompiledPolicy};
use anyhow::{anyhow, Context};
use clap::Subcommand;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Policy versions in the database: upload, list, activate, revert.
    #[command(flatten)]
    Store(super::ops::PolicyStoreCommand),
    /// Run case files against a policy component; ends with `N passed, M failed`.
    Test {
        /// The policy component (`.wasm`).
        #[arg(long)]
        policy: PathBuf,
        /// Case files and directories (every `*.json` beneath, except `index.json`).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the decision of each case in a file (`-` for standard input) as JSON.
    Eval {
        /// The policy component (`.wasm`).
        #[arg(long)]
        policy: PathBuf,
        /// A case file, a single case object, or `-`.
        #[arg(long)]
        case: PathBuf,
    },
    /// Ramp a configuration through percentages over a set of repositories; fails (exit 1)
    /// when a repository drops out while ramping.
    Simulate {
        /// The policy component (`.wasm`).
        #[arg(long)]
        policy: PathBuf,
        /// Repositories: CSV with a header (`id`, and `category` or `star_count`,
        /// `contributor_count`, `pr_count`) or a JSON array of objects with those fields.
        #[arg(long)]
        repos: PathBuf,
        /// The steps of the ramp, increasing.
        #[arg(long, default_value = "0,10,25,50,75,100")]
        percentages: String,
        /// The strategy: percentage, whitelist or repository_size (default: the one of
        /// `--config`, else percentage).
        #[arg(long)]
        strategy: Option<String>,
        /// The base configuration as JSON (or `@FILE`), as in case files: targets,
        /// exclusions, … Its percentage is replaced at each step.
        #[arg(long)]
        config: Option<String>,
    },
    /// Evaluate two policy versions on case files or JSON-lines corpora and group the
    /// decisions that change; exit 1 when more than `--max-changed` change.
    Diff {
        /// The version serving now (`.wasm`).
        #[arg(long)]
        from: PathBuf,
        /// The candidate version (`.wasm`).
        #[arg(long)]
        to: PathBuf,
        /// Case files, directories, or JSON-lines files of recorded requests (one case
        /// object per line). `expect` is ignored.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Most changed decisions allowed; above it the exit status is 1.
        #[arg(long)]
        max_changed: Option<usize>,
        /// Examples shown per group.
        #[arg(long, default_value_t = 3)]
        examples: usize,
    },
    /// Decisions per second of a component on generated input, one call per decision and
    /// batched, with the native reference rules as a baseline.
    Bench {
        /// The policy component (`.wasm`).
        #[arg(long)]
        policy: PathBuf,
        /// Decisions timed per measurement.
        #[arg(long, default_value_t = 100_000)]
        decisions: usize,
        /// Requests per batch call.
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
}

/// Compile the component at `path`, mapping failures to exit status 3.
pub(crate) fn load_policy(path: &Path) -> Result<CompiledPolicy, CliError> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read policy `{}`", path.display()))
        .map_err(CliError::unavailable)?;
    let engine = new_engine().map_err(CliError::unavailable)?;
    CompiledPolicy::compile(&engine, &bytes, &path.display().to_string()).map_err(CliError::unavailable)
}

/// Read a `--config` argument (JSON text, or `@FILE`) as a case file's `config`: omitted
/// fields take the seed's defaults, `is_active` defaults to true, and `feature_name`
/// defaults to `feature`.
pub(crate) fn config_arg(arg: Option<&str>, feature: &str) -> Result<rollout_policy::Config, CliError> {
    let text = match arg {
        None => "{}".to_owned(),
        Some(a) => match a.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read `--config` file `{file}`"))
                .map_err(CliError::usage)?,
            None => a.to_owned(),
        },
    };
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| "`--config` is not valid JSON".to_owned())
        .map_err(CliError::usage)?;
    if let Some(obj) = v.as_object_mut() {
        obj.entry("feature_name").or_insert_with(|| feature.into());
    }
    cases::config_from_json(Some(&v), true).map_err(|e| CliError::usage(anyhow!("`--config`: {e}")))
}

/// A policy call failure: a refused configuration is bad input (2), anything else means
/// the policy could not answer (3).
pub(crate) fn call_failed(e: impl Into<anyhow::Error>, call: Option<&CallError>) -> CliError {
    match call {
        Some(CallError::Config(_)) => CliError::usage(e),
        _ => CliError::unavailable(e),
    }
}

/// Run a policy subcommand; `feature` is the global `--feature`.
pub fn run(cmd: PolicyCommand, feature: &str, json: bool) -> CliResult {
    match cmd {
        PolicyCommand::Test { policy, paths } => test(&policy, &paths, json),
        PolicyCommand::Eval { policy, case } => eval(&policy, &case),
        PolicyCommand::Simulate { policy, repos, percentages, strategy, config } => {
            simulate_cmd(&policy, &repos, &percentages, strategy.as_deref(), config.as_deref(), feature, json)
        }
        PolicyCommand::Diff { from, to, inputs, max_changed, examples } => {
            diff_cmd(&from, &to, &inputs, max_changed, examples, json)
        }
        PolicyCommand::Bench { policy, decisions, batch } => bench_cmd(&policy, feature, decisions, batch, json),
        PolicyCommand::Store(cmd) => super::ops::store_policy::run(cmd, feature, json),
    }
}

fn simulate_cmd(
    policy: &Path,
    repos: &Path,
    percentages: &str,
    strategy: Option<&str>,
    config: Option<&str>,
    feature: &str,
    json: bool,
) -> CliResult {
    let percentages = simulate::parse_percentages(percentages).map_err(CliError::usage)?;
    let mut base = config_arg(config, feature)?;
    if let Some(s) = strategy {
        base.rollout_strategy =
            rollout_policy::Strategy::parse(s).map_err(|e| CliError::usage(anyhow!("`--strategy`: {e}")))?;
    }
    let repos = simulate::read_repos(repos).map_err(CliError::usage)?;
    let compiled = load_policy(policy)?;
    let mut component = Component::new(&compiled).map_err(CliError::unavailable)?;
    let work = (repos.len() * percentages.len() + repos.iter().filter(|r| r.stats.is_some()).count()) as u64;
    let bar = (std::io::stderr().is_terminal() && work >= 50_000).then(|| {
        let bar = indicatif::ProgressBar::new(work);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} decisions ({per_sec}, {eta} left)")
        {
            bar.set_style(style);
        }
        bar
    });
    let result = simulate::simulate(&mut component, &base, &repos, &percentages, &mut |n| {
        if let Some(b) = &bar {
            b.inc(n);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let sim = result.map_err(|e| {
        let call = match &e {
            simulate::SimulateError::Call { error, .. } => Some(error.clone()),
            simulate::SimulateError::BatchLength { .. } => None,
        };
        call_failed(e, call.as_ref())
    })?;
    if json {
        let dropouts: Vec<serde_json::Value> =
            sim.dropouts().into_iter().map(|(pct, id)| serde_json::json!({"id": id, "percentage": pct})).collect();
        let out = serde_json::json!({
            "policy": {"name": compiled.name(), "version": compiled.version(), "sha256": compiled.sha256()},
            "feature": base.feature_name,
            "strategy": base.rollout_strategy.as_str(),
            "repositories": sim.repositories,
            "categorized_by_policy": sim.categorized_by_policy,
            "steps": sim.steps,
            "monotonic": sim.monotonic(),
            "dropouts": dropouts,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!(
            "policy {}, feature {}, strategy {}: {} repositories ({} categorised by the policy from their stats)",
            component.describe(),
            base.feature_name,
            base.rollout_strategy,
            sim.repositories,
            sim.categorized_by_policy
        );
        print!("{}", simulate::render_text(&sim));
    }
    Ok(if sim.monotonic() { Exit::Ok } else { Exit::Failed })
}

fn diff_cmd(
    from: &Path,
    to: &Path,
    inputs: &[PathBuf],
    max_changed: Option<usize>,
    examples: usize,
    json: bool,
) -> CliResult {
    let corpus = diff::read_corpus(inputs).map_err(CliError::usage)?;
    for (source, message) in &corpus.unreadable {
        eprintln!("skipped {source}: {message}");
    }
    if corpus.entries.is_empty() {
        return Err(CliError::usage(anyhow!(
            "no cases to compare in {}",
            inputs.iter().map(|p| format!("`{}`", p.display())).collect::<Vec<_>>().join(", ")
        )));
    }
    let (a, b) = (load_policy(from)?, load_policy(to)?);
    let describe = |c: &CompiledPolicy| format!("{} {} (sha256 {})", c.name(), c.version(), c.sha256());
    let (da, db) = (describe(&a), describe(&b));
    let report = diff::diff(&corpus, &mut WasmBackend::new(a), &mut WasmBackend::new(b), examples);
    let over = max_changed.is_some_and(|m| report.changed > m);
    if json {
        let out = serde_json::json!({
            "from": da, "to": db,
            "compared": report.compared, "changed": report.changed, "invalid": report.invalid,
            "skipped": corpus.unreadable.len(),
            "max_changed": max_changed, "over_threshold": over,
            "groups": report.groups,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", diff::render_text(&report, &da, &db));
        if let Some(m) = max_changed {
            if over {
                println!(
                    "
FAIL: {} decisions changed, more than --max-changed {m}",
                    report.changed
                );
            } else {
                println!(
                    "
ok: {} decisions changed, within --max-changed {m}",
                    report.changed
                );
            }
        }
    }
    Ok(if over { Exit::Failed } else { Exit::Ok })
}

fn bench_cmd(policy: &Path, feature: &str, decisions: usize, batch: usize, json: bool) -> CliResult {
    if decisions == 0 || batch == 0 {
        return Err(CliError::usage(anyhow!("`--decisions` and `--batch` must be at least 1")));
    }
    let compiled = load_policy(policy)?;
    let mut component = Component::new(&compiled).map_err(CliError::unavailable)?;
    let options = bench::BenchOptions { decisions, batch };
    let mut measurements =
        bench::bench(&mut component, feature, options).map_err(|e| call_failed(e.clone(), Some(&e)))?;
    let native = bench::bench(&mut authoring::NativeReference::default(), feature, options)
        .map_err(|e| call_failed(e.clone(), Some(&e)))?;
    if let Some(mut m) = native.into_iter().next() {
        m.name = "route, native reference rules (baseline)".into();
        measurements.push(m);
    }
    let describe = format!(
        "{} {} (sha256 {}), {decisions} decisions per measurement",
        compiled.name(),
        compiled.version(),
        compiled.sha256()
    );
    if json {
        let out = serde_json::json!({
            "policy": {"name": compiled.name(), "version": compiled.version(), "sha256": compiled.sha256()},
            "decisions": decisions, "batch": batch, "measurements": measurements,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", bench::render_text(&describe, &measurements));
    }
    Ok(Exit::Ok)
}

fn test(policy: &Path, paths: &[PathBuf], json: bool) -> CliResult {
    let compiled = load_policy(policy)?;
    let mut backend = WasmBackend::new(compiled);
    let report = cases::run(paths, &mut backend);
    if json {
        let failures: Vec<serde_json::Value> = report
            .failures
            .iter()
            .map(|f| serde_json::json!({"file": f.file, "case": f.case, "problems": f.problems}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"passed": report.passed, "failed": report.failures.len(), "failures": failures, "unreadable": report.unreadable})
        );
    } else {
        for f in &report.failures {
            println!("FAIL {} :: {}", f.file.display(), f.case);
            for p in &f.problems {
                println!("    {p}");
            }
        }
        for u in &report.unreadable {
            println!("ERROR {u}");
        }
    }
    println!("{} passed, {} failed", report.passed, report.failures.len() + report.unreadable.len());
    Ok(if report.ok() { Exit::Ok } else { Exit::Failed })
}

fn eval(policy: &Path, case: &Path) -> CliResult {
    let compiled = load_policy(policy)?;
    let mut backend = WasmBackend::new(compiled);
    let cases = cases::read_file(case, false).map_err(CliError::usage)?;
    let single = cases.len() == 1;
    let mut exit = Exit::Ok;
    for case in cases {
        let case = case.map_err(CliError::usage)?;
        let out = match case.inputs() {
            Ok(inputs) => backend.evaluate(&inputs),
            Err(e) => Err(e),
        };
        let decision = match out {
            Ok(d) => serde_json::Value::Object(d),
            Err(e) => {
                exit = Exit::Usage;
                serde_json::json!({"error": {"message": e.message}})
            }
        };
        if single {
            println!("{}", serde_json::to_string_pretty(&decision).unwrap_or_default());
        } else {
            println!("{}", serde_json::json!({"name": case.name, "decision": decision}));
        }
    }
    Ok(exit)
}
