//! `rollout explain`: the checks the policy made for one case, in words, with the one that
//! decided ([`crate::authoring::explain`]); they come from the policy's own code, so the
//! explanation is right for any policy. A component built before the contract had the
//! `explain` interface cannot explain (exit 3, saying so).
//!
//! `--decision ID` explains a logged decision (the decision log, issue 14): its input and
//! configuration rebuilt as it was decided ([`crate::authoring::replay::query_of`]: the
//! configuration version it names, with the environment overrides it logged), explained by
//! the policy it was made under (or `--policy`), and says whether the replayed decision
//! equals the logged one (exit 1 when it does not, under the decision's own policy).

use crate::authoring::explain;
use crate::cases::{self, Inputs};
use crate::cli::context::Ctx;
use crate::cli::policy_cmd::{config_arg, load_policy};
use crate::cli::{CliError, CliResult, Exit};
use crate::engine::{NativePolicy, Policy};
use anyhow::anyhow;
use std::path::PathBuf;

/// `rollout explain (--case FILE | --repo ID [--category C] [--job JSON] [--config JSON] | --decision ID) [--policy FILE]`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy component (`.wasm`); without it, the reference rules linked natively.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// A case file or a single case object (`-` for standard input); every case is explained.
    #[arg(long, conflicts_with_all = ["repo", "category", "job", "config"])]
    pub case: Option<PathBuf>,
    /// Only the cases whose name contains this text (with `--case`).
    #[arg(long, requires = "case")]
    pub name: Option<String>,
    /// The repository id (instead of `--case`).
    #[arg(long, required_unless_present_any = ["case", "decision"])]
    pub repo: Option<String>,
    /// The repository's category.
    #[arg(long)]
    pub category: Option<String>,
    /// The job as JSON, as in case files; with it the routing chain is explained too.
    #[arg(long)]
    pub job: Option<String>,
    /// The configuration as JSON (or `@FILE`), as in case files (omitted fields: the seed's
    /// defaults, `is_active` true).
    #[arg(long)]
    pub config: Option<String>,
    /// A logged decision id: explained with the input, configuration and policy it was
    /// decided with (from the database).
    #[arg(long, value_parser = super::decisions::parse_id, conflicts_with_all = ["case", "name", "repo", "category", "job", "config"])]
    pub decision: Option<uuid::Uuid>,
}

/// Run `rollout explain`; `feature` is the global `--feature`.
pub fn run(args: Args, ctx: &Ctx) -> CliResult {
    if let Some(id) = args.decision {
        return crate::cli::context::block_on(explain_decision(id, args.policy.as_deref(), ctx));
    }
    let (feature, json) = (ctx.feature.as_str(), ctx.json);
    let (policy, describe): (Box<dyn Policy>, String) = match &args.policy {
        Some(path) => {
            let sandbox = load_policy(path)?;
            let d = sandbox.version().map_or_else(String::new, |v| v.to_string());
            (Box::new(sandbox), d)
        }
        None => (
            Box::new(NativePolicy::new()),
            format!("{} {} (native)", rollout_policy::POLICY_NAME, rollout_policy::POLICY_VERSION),
        ),
    };
    let mut todo: Vec<(String, Inputs)> = Vec::new();
    if let Some(path) = &args.case {
        for case in cases::read_file(path, false).map_err(CliError::usage)? {
            let case = case.map_err(CliError::usage)?;
            if args.name.as_deref().is_some_and(|n| !case.name.contains(n)) {
                continue;
            }
            let inputs = case.inputs().map_err(|e| CliError::usage(anyhow!("case `{}`: {e}", case.name)))?;
            todo.push((case.name, inputs));
        }
        if todo.is_empty() {
            return Err(CliError::usage(anyhow!("no case in `{}` to explain", path.display())));
        }
    } else {
        let id = args.repo.as_deref().ok_or_else(|| CliError::usage(anyhow!("give `--case FILE` or `--repo ID`")))?;
        let category = match &args.category {
            None => None,
            Some(c) => {
                Some(rollout_policy::Category::parse(c).map_err(|e| CliError::usage(anyhow!("`--category`: {e}")))?)
            }
        };
        let config = config_arg(args.config.as_deref(), feature)?;
        let repo = rollout_policy::Repository::parse(id, category);
        let inputs = match &args.job {
            None => Inputs::IsEligible(config, repo),
            Some(text) => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| CliError::usage(anyhow!("`--job` is not valid JSON: {e}")))?;
                Inputs::Route(config, repo, cases::job_from_json(Some(&v)).map_err(CliError::usage)?)
            }
        };
        todo.push((format!("repository {id}"), inputs));
    }
    let single = todo.len() == 1;
    for (i, (name, inputs)) in todo.iter().enumerate() {
        let e = explain::explain(inputs, policy.as_ref()).map_err(|e| match e {
            crate::engine::CallError::Config(_) => CliError::usage(anyhow!("case `{name}`: {e}")),
            other => CliError::unavailable(anyhow!("case `{name}`: {other}")),
        })?;
        if json {
            let v = serde_json::json!({"name": name, "policy_name": describe, "explanation": e});
            if single {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!("{v}");
            }
        } else {
            if i > 0 {
                println!();
            }
            println!("== {name} ({})", e.op);
            print!("{}", explain::render_text(&e, &describe));
        }
    }
    Ok(Exit::Ok)
}

/// `rollout explain --decision ID [--policy FILE]`.
async fn explain_decision(id: uuid::Uuid, policy_file: Option<&std::path::Path>, ctx: &Ctx) -> CliResult {
    use crate::authoring::replay::{self, Answer, Unreplayable};
    use crate::store::DecisionKind;
    let store = crate::cli::context::connect(ctx, false).await?;
    let record = store
        .decision(id)
        .await
        .map_err(|e| CliError::unavailable(anyhow::Error::new(e).context(format!("cannot read decision `{id}`"))))?
        .ok_or_else(|| CliError::usage(anyhow!("no logged decision has id `{id}`")))?;
    let stored = store
        .config_at_version(&record.feature, record.config_version)
        .await
        .or_else(|e| match e {
            crate::store::StoreError::UnknownFeature(_) => Ok(None),
            e => Err(e),
        })
        .map_err(|e| {
            CliError::unavailable(
                anyhow::Error::new(e).context(format!("cannot read the configuration of `{}`", record.feature)),
            )
        })?
        .ok_or_else(|| {
            CliError::usage(anyhow!(
                "decision `{id}`: configuration version {} of `{}` is not kept",
                record.config_version,
                record.feature
            ))
        })?;
    let query = replay::query_of(&record, &stored).map_err(|e| match e {
        Unreplayable::Masked => CliError::usage(anyhow!(
            "decision `{id}` cannot be explained: its repository id is masked (a keyed hash), and its bucket depends on the id"
        )),
        Unreplayable::Skip(why) => CliError::usage(anyhow!("decision `{id}` cannot be explained: {why}")),
    })?;
    let own = policy_file.is_none();
    let policy: std::sync::Arc<dyn Policy> = match policy_file {
        Some(path) => std::sync::Arc::new(load_policy(path)?),
        None => {
            let sha = record.policy_sha256.as_str();
            if sha == "none" {
                return Err(CliError::usage(anyhow!(
                    "decision `{id}` was made with no policy loaded (the fallback decided): give `--policy FILE` to explain it with one"
                )));
            }
            match replay::builtin_policy(sha) {
                Some(p) => p,
                None => match store.policy_bytes(sha).await.map_err(|e| {
                    CliError::unavailable(anyhow::Error::new(e).context(format!("cannot read policy `{sha}`")))
                })? {
                    Some(bytes) => {
                        replay::compile_policy(&bytes, &format!("policy {}", crate::cli::output::short(sha)))
                    }
                    None => Err(format!("policy sha256 `{sha}` is not in the database")),
                },
            }
            .map_err(|e| CliError::unavailable(anyhow!("decision `{id}`: {e}")))?
        }
    };
    let describe = policy.version().map_or_else(
        || record.policy_sha256.clone(),
        |v| format!("{v}, sha256 {}", crate::cli::output::short(&v.sha256)),
    );
    let e = policy.explain(&query).map_err(|e| match e {
        crate::engine::CallError::Config(_) => CliError::usage(anyhow!("decision `{id}`: {e}")),
        other => CliError::unavailable(anyhow!("decision `{id}`: {other}")),
    })?;
    let answer = match &e.decision {
        crate::engine::Decision::Route(r) => Answer::route(r),
        crate::engine::Decision::Eligibility(el) => Answer::eligibility(el),
        _ => {
            return Err(CliError::unavailable(anyhow!("decision `{id}`: the policy answered another kind of decision")))
        }
    };
    let differences = replay::compare(&record, &answer);
    let op = match record.kind {
        DecisionKind::Route => "route",
        DecisionKind::Eligibility => "is_eligible",
    };
    let explanation =
        explain::Explanation { op, lines: explain::lines(&e.checks), decision: explain::decision_json(&e.decision) };
    let verdict = if record.fallback.is_some() {
        format!(
            "the logged decision was the fallback ({}); replayed, the policy decides the above",
            record.fallback.as_deref().unwrap_or_default()
        )
    } else if differences.is_empty() {
        "the replayed decision equals the logged one".to_owned()
    } else {
        let fields: Vec<String> =
            differences.iter().map(|d| format!("{}: logged {}, replayed {}", d.field, d.logged, d.replayed)).collect();
        format!("the replayed decision differs from the logged one ({})", fields.join("; "))
    };
    if ctx.json {
        let v = serde_json::json!({
            "decision_id": id,
            "policy_name": describe,
            "own_policy": own,
            "explanation": explanation,
            "logged": record,
            "identical": differences.is_empty(),
            "differences": differences,
        });
        crate::cli::output::print_json(&v)?;
    } else {
        let when = record.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        outln!(
            "== decision {id} ({op}, {when}, feature `{}`, configuration version {}{})",
            record.feature,
            record.config_version,
            if record.overrides.is_some() { " with environment overrides" } else { "" }
        );
        out!("{}", explain::render_text(&explanation, &describe));
        outln!("{verdict}");
    }
    let failed = own && record.fallback.is_none() && !differences.is_empty();
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}
