//! `rollout serve [--listen ADDR] [--policy FILE] [--watch]`: the HTTP API ([`crate::http`]).
//!
//! Start: read the environment overrides (an invalid one stops the start, exit 2) and
//! `ROLLOUT_SERVICE_TOKEN` (unset: writes answer 403); connect (Postgres with a short
//! acquire timeout so an outage answers quickly) and migrate; load the policy — `--policy
//! FILE`, else the version active in `policy_versions`, else the bundled reference policy;
//! open the features; listen and print `rollout serve: listening on http://ADDR`.
//!
//! SIGTERM or Ctrl-C: stop accepting, finish the requests in flight (an outcome is answered
//! only once durable), stop the background work, write buffered outcomes (trying for
//! `--shutdown-flush-secs`), close the database, exit 0 (3 when buffered outcomes could not
//! be written).

use super::{CliError, CliResult, Exit};
use crate::env::EnvOverrides;
use crate::http::{self, AppState, Background, ServiceOptions, StartupPolicy};
use crate::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use crate::store::{redact_url, Store};
use anyhow::{anyhow, Context};
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable holding the service token.
pub const TOKEN_VARIABLE: &str = "ROLLOUT_SERVICE_TOKEN";

/// Options of `rollout serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the line printed at start names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Serve this policy component instead of the active stored version (default: the active
    /// stored version, else the bundled reference policy).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Reload --policy whenever the file changes (checked, then swapped while serving).
    #[arg(long, requires = "policy")]
    pub watch: bool,
    /// Seconds between health checks when no outcomes arrive.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub health_interval: u64,
    /// Seconds between re-reads of the configuration and the active policy (covers missed
    /// notifications; the only way changes arrive on SQLite).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub reload_interval: u64,
    /// Most outcomes buffered per feature while the database is unreachable.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub outcome_buffer: usize,
    /// Seconds to keep trying to write buffered outcomes at shutdown.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub shutdown_flush_secs: u64,
    /// Directory where compiled policies are cached (a restart skips compiling).
    #[arg(long, value_name = "DIR")]
    pub policy_cache: Option<PathBuf>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Run `rollout serve`.
pub fn run(args: ServeArgs, database_url: &str, feature: &str) -> CliResult {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::unavailable)?;
    runtime.block_on(serve(args, database_url.to_owned(), feature.to_owned()))
}

/// Connect: Postgres with a 3 s acquire timeout (an outage answers in seconds, not the
/// driver's default 30), SQLite as the store does it.
async fn connect(url: &str) -> Result<Store, CliError> {
    let shown = redact_url(url);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid database url `{shown}`"))
            .map_err(CliError::usage)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot connect to the database `{shown}`"))
            .map_err(CliError::unavailable)?;
        Ok(Store::Postgres(pool))
    } else {
        Store::connect(url)
            .await
            .with_context(|| format!("cannot open the database `{shown}`"))
            .map_err(CliError::unavailable)
    }
}

/// Load the starting policy; returns what a revert may go back to and the database's
/// active digest.
async fn load_policy(
    runtime: &Runtime,
    store: &Store,
    file: Option<&PathBuf>,
) -> Result<(Option<StartupPolicy>, Option<String>), CliError> {
    let versions =
        store.list_policy_versions().await.context("cannot read the policy versions").map_err(CliError::unavailable)?;
    let active = versions.into_iter().find(|v| v.active).map(|v| v.sha256);
    let bundled = || StartupPolicy { source: "bundled".into(), bytes: Arc::new(BUNDLED_POLICY.to_vec()) };
    let load = |bytes: Arc<Vec<u8>>, source: String| {
        let runtime = runtime.clone();
        async move {
            tokio::task::spawn_blocking(move || runtime.load_bytes(&bytes, &source))
                .await
                .map_err(|e| anyhow!("the policy task failed: {e}"))?
                .map_err(anyhow::Error::from)
        }
    };
    if let Some(path) = file {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read policy `{}`", path.display()))
            .map_err(CliError::usage)?;
        let bytes = Arc::new(bytes);
        let source = path.display().to_string();
        load(bytes.clone(), source.clone())
            .await
            .with_context(|| format!("policy `{}` was refused", path.display()))
            .map_err(CliError::usage)?;
        return Ok((Some(StartupPolicy { source, bytes }), active));
    }
    if let Some(sha) = &active {
        let stored =
            store.policy_bytes(sha).await.context("cannot read the active policy").map_err(CliError::unavailable)?;
        match stored {
            Some(bytes) => match load(Arc::new(bytes), format!("database {sha}")).await {
                Ok(_) => return Ok((Some(bundled()), active)),
                Err(e) => tracing::error!("the active policy `{sha}` was refused, serving the bundled policy: {e:#}"),
            },
            None => tracing::error!("the active policy `{sha}` has no bytes, serving the bundled policy"),
        }
    }
    load(Arc::new(BUNDLED_POLICY.to_vec()), "bundled".into())
        .await
        .context("cannot load the bundled reference policy")
        .map_err(CliError::unavailable)?;
    Ok((Some(bundled()), active))
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: ServeArgs, url: String, feature: String) -> CliResult {
    let overrides = EnvOverrides::from_env().context("invalid environment override").map_err(CliError::usage)?;
    let token = std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.trim().is_empty());
    let store = connect(&url).await?;
    store.migrate().await.context("cannot apply the migrations").map_err(CliError::unavailable)?;

    let options = RuntimeOptions { cache_dir: args.policy_cache.clone(), ..RuntimeOptions::default() };
    let policy_limit = options.max_upload_bytes;
    let runtime = Runtime::new(options).context("cannot start the policy runtime").map_err(CliError::unavailable)?;
    let (startup_policy, seen) = load_policy(&runtime, &store, args.policy.as_ref()).await?;

    let service = ServiceOptions {
        default_feature: feature.clone(),
        token: token.clone(),
        overrides,
        policy_body_limit: policy_limit,
        outcome_buffer: args.outcome_buffer,
        health_interval: Duration::from_secs(args.health_interval.max(1)),
        reload_interval: Duration::from_secs(args.reload_interval.max(1)),
        startup_policy,
        ..ServiceOptions::default()
    };
    let state = AppState::new(store.clone(), runtime.clone(), service)
        .await
        .with_context(|| format!("cannot open the rollout `{feature}`"))
        .map_err(CliError::unavailable)?;
    state.set_seen_policy(seen);

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))
        .map_err(CliError::usage)?;
    let addr = listener.local_addr().context("cannot read the listening address").map_err(CliError::usage)?;
    let _watch = match (&args.policy, args.watch) {
        (Some(path), true) => Some(runtime.watch(path.clone())),
        _ => None,
    };
    let background = Background::spawn(&state);
    let policy = crate::engine::Decide::policy_version(&runtime);
    if token.is_none() {
        tracing::warn!("{TOKEN_VARIABLE} is not set: writes (operations, outcomes, policies) answer 403");
    }
    println!(
        "rollout serve: listening on http://{addr} (feature `{feature}`, policy {}, database {}, writes {})",
        policy.map_or_else(
            || "none".to_owned(),
            |p| format!("{} {} {}", p.name, p.version, p.sha256.get(..12).unwrap_or(""))
        ),
        redact_url(&url),
        if token.is_some() { "enabled" } else { "disabled" },
    );
    let _ = std::io::stdout().flush();

    let stopping = state.clone();
    let shutdown = async move {
        signal().await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        stopping.begin_shutdown();
    };
    http::serve(listener, http::app(state.clone()), shutdown)
        .await
        .context("the server failed")
        .map_err(CliError::unavailable)?;
    background.shutdown().await;

    let deadline = Instant::now() + Duration::from_secs(args.shutdown_flush_secs);
    let mut waiting = state.flush_buffers().await;
    while waiting > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        waiting = state.flush_buffers().await;
    }
    store.close().await;
    if waiting > 0 {
        return Err(CliError::unavailable(anyhow!(
            "{waiting} buffered outcomes could not be written: the database stayed unreachable"
        )));
    }
    println!("rollout serve: stopped");
    let _ = std::io::stdout().flush();
    Ok(Exit::Ok)
}
