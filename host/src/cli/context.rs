//! Where and how a command runs: the global options, the connection, the service.

use super::{CliError, CliResult};
use crate::engine::PolicyVersion;
use crate::env::EnvOverrides;
use crate::input::values::Actor;
use crate::runtime::{sha256_hex, Runtime, RuntimeOptions, BUNDLED_POLICY};
use crate::service::policies::{start_policy, PolicyOrigin};
use crate::service::{Service, ServiceOptions};
use crate::store::{redact_url, Store, StoreOptions};
use anyhow::{anyhow, Context};
use serde::Serialize;

/// The global options of a command.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) url: String,
    pub(crate) feature: String,
    pub(crate) json: bool,
}

impl Ctx {
    /// The database URL without its password.
    pub(crate) fn redacted(&self) -> String {
        redact_url(&self.url)
    }
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

/// Who the history says made a change: `cli:$USER` (`cli` when the user is unknown).
pub(crate) fn actor() -> Result<Actor, CliError> {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_default();
    let user: String = user.chars().filter(|c| !c.is_control()).take(80).collect();
    let name = if user.trim().is_empty() { "cli".to_owned() } else { format!("cli:{user}") };
    Actor::new(&name).or_else(|_| Actor::new("cli")).map_err(|m| CliError::usage(anyhow!("invalid user name: {m}")))
}

/// The file of a `sqlite:` URL (`None` for in-memory databases and other schemes).
pub(crate) fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Connect with the CLI's connection settings; unless `create`, insist the database exists
/// and is migrated.
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
    let options = StoreOptions { max_connections: 4, ..StoreOptions::default() };
    let store = Store::connect_with(&ctx.url, &options).await.map_err(|e| {
        let exit = if matches!(e, crate::store::StoreError::UnsupportedUrl(_)) {
            super::Exit::Usage
        } else {
            super::Exit::Unavailable
        };
        CliError { exit, error: anyhow::Error::new(e).context(format!("cannot open the database `{shown}`")) }
    })?;
    if !create {
        let migrated = store
            .is_migrated()
            .await
            .with_context(|| format!("cannot read the database `{shown}`"))
            .map_err(CliError::unavailable)?;
        if !migrated {
            return Err(CliError::unavailable(anyhow!(
                "database `{shown}` has no rollout tables: run `rollout migrate` first"
            )));
        }
    }
    Ok(store)
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
    fn new(v: &PolicyVersion, origin: PolicyOrigin) -> PolicyInfo {
        let source = match origin {
            PolicyOrigin::Database => "policy_versions",
            PolicyOrigin::Bundled | PolicyOrigin::File => "bundled",
        };
        PolicyInfo { name: v.name.clone(), version: v.version.clone(), sha256: v.sha256.clone(), source }
    }

    /// The bundled policy's name, version and digest, without compiling it.
    pub(crate) fn bundled() -> PolicyInfo {
        PolicyInfo {
            name: rollout_policy::POLICY_NAME.to_owned(),
            version: rollout_policy::POLICY_VERSION.to_owned(),
            sha256: sha256_hex(BUNDLED_POLICY),
            source: "bundled",
        }
    }

    /// The policy in one line for people.
    pub(crate) fn line(&self) -> String {
        let source =
            if self.source == "bundled" { "bundled reference, none activated" } else { "active in policy_versions" };
        format!("{} {} (sha256 {}, {source})", self.name, self.version, super::output::short(&self.sha256))
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

/// What a command needs from the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// Decisions: the policy the servers run is loaded.
    Policy,
    /// Changes and reads only: no policy is loaded (nothing decides).
    NoPolicy,
}

/// The service of the feature for one command: the environment overrides read (an invalid
/// one is bad usage), the database connected and migrated, the servers' policy loaded when
/// the command decides. The command's overrides shape what it prints and decides; it writes
/// no `env_override` row (one per command would bury the history).
pub(crate) async fn open(ctx: &Ctx, needs: Needs) -> Result<(Service, Option<PolicyInfo>), CliError> {
    let overrides = EnvOverrides::from_env().context("invalid environment override").map_err(CliError::usage)?;
    let store = connect(ctx, false).await?;
    let runtime = new_runtime()?;
    let info = match needs {
        Needs::NoPolicy => None,
        Needs::Policy => {
            let started = start_policy(&store, &runtime, None)
                .await
                .map_err(CliError::service(format!("cannot load the policy of `{}`", ctx.redacted())))?;
            Some(PolicyInfo::new(&started.serving, started.origin))
        }
    };
    let options = ServiceOptions {
        default_feature: ctx.feature.clone(),
        overrides,
        audit_overrides: false,
        open_all: false,
        // a command that decides is decided by the candidate for its cohort, as a server is
        follow_candidate: matches!(needs, Needs::Policy),
        ..ServiceOptions::default()
    };
    let service = Service::open(store, runtime, options).await.map_err(CliError::service(format!(
        "cannot open the rollout `{}` in `{}`",
        ctx.feature,
        ctx.redacted()
    )))?;
    Ok((service, info))
}

/// Apply an operator operation through the service (the same call the HTTP API makes) and
/// print its outcome: with `--json` the same document the HTTP API answers; otherwise
/// `describe`'s line. An environment override hiding the change is warned about on stderr.
pub(crate) async fn apply(
    ctx: &Ctx,
    operation: crate::service::operations::Operation,
    reason: Option<crate::input::values::Reason>,
    describe: impl FnOnce(&crate::service::operations::OperationOutcome) -> String,
) -> CliResult {
    let (service, _) = open(ctx, Needs::NoPolicy).await?;
    let outcome = service
        .apply(&ctx.feature, operation, reason, &actor()?)
        .await
        .map_err(CliError::service(format!("cannot change the rollout `{}`", ctx.feature)))?;
    super::output::warn_overridden(&outcome);
    if ctx.json {
        super::output::print_json(&outcome)?;
    } else {
        outln!("{}", describe(&outcome));
    }
    Ok(super::Exit::Ok)
}
