//! `rollout route ID [--job JSON]`: where a job of a repository would run, and why (writes
//! nothing).

use crate::cli::context::{open, Ctx, Needs, PolicyInfo};
use crate::cli::output::{print_json, yes_no};
use crate::cli::table::pairs;
use crate::cli::{CliError, CliResult, Exit};
use crate::input::values::{RepositoryRef, RepositoryUuid};
use crate::input::{from_json, JobInput};
use anyhow::{anyhow, Context};

/// Options of `rollout route`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository (UUID or owner/name).
    pub id: RepositoryRef,
    /// The job as JSON (or @FILE): job_type, time_range_days, pr_numbers, trigger_source,
    /// max_items.
    #[arg(long, default_value = "{}")]
    pub job: String,
}

/// The text of a JSON argument: the value, or the contents of `@FILE`.
pub(crate) fn json_arg(name: &str, arg: &str) -> Result<String, CliError> {
    match arg.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read `{name}` file `{file}`"))
            .map_err(CliError::usage),
        None => Ok(arg.to_owned()),
    }
}

/// Run `rollout route`.
pub async fn run(ctx: &Ctx, args: Args) -> CliResult {
    let job = from_json::<JobInput>(json_arg("--job", &args.job)?.as_bytes())
        .map_err(|e| CliError::usage(anyhow!("invalid `--job`: {}{e}", field_prefix(&e.field))))?
        .into_job();
    let (service, policy) = open(ctx, Needs::Policy).await?;
    let policy = policy.unwrap_or_else(PolicyInfo::bundled);
    let uuid = service
        .store()
        .resolve_repository_id(args.id.as_str())
        .await
        .map_err(|e| CliError::service(format!("cannot resolve repository `{}`", args.id))(e.into()))?;
    let id = RepositoryUuid::new(&uuid.to_string()).map_err(|m| CliError::usage(anyhow!(m)))?;
    let feature = service.feature(&ctx.feature).await.map_err(CliError::service("cannot open the rollout"))?;
    let decision = service.route(&feature, id, &job);
    if ctx.json {
        let mut doc = crate::cases::route_json(&decision);
        doc.insert("repository_id".into(), id.to_string().into());
        doc.insert("policy_version".into(), serde_json::to_value(&policy).unwrap_or_default());
        print_json(&doc)?;
    } else {
        let e = &decision.eligibility;
        out!(
            "{}",
            pairs(&[
                ("repository", id.to_string()),
                ("processor", decision.processor.as_str().to_owned()),
                ("rule", decision.rule.as_str().to_owned()),
                ("eligible", format!("{} ({}, bucket {})", yes_no(e.eligible), e.reason.as_str(), e.bucket)),
                ("policy", policy.line()),
            ])
        );
    }
    Ok(if decision.rule == rollout_policy::RouteRule::PolicyError { Exit::Unavailable } else { Exit::Ok })
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("`{field}`: ")
    }
}
