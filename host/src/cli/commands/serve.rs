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

use crate::cli::context::Ctx;
use crate::cli::{CliError, CliResult, Exit};
use crate::env::EnvOverrides;
use crate::http::{self, AppState, HttpOptions};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::service::background::Background;
use crate::service::policies::start_policy;
use crate::service::{Service, ServiceOptions};
use crate::store::{redact_url, Store, StoreOptions};
use anyhow::{anyhow, Context};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The environment variable holding the service token.
pub const TOKEN_VARIABLE: &str = "ROLLOUT_SERVICE_TOKEN";

/// Options of `rollout serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
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
    /// Most bytes of outcomes buffered per feature while the database is unreachable
    /// (beyond it, outcomes are answered 503 with Retry-After and counted).
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub outcome_buffer_bytes: usize,
    /// Seconds to keep trying to write buffered outcomes at shutdown.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub shutdown_flush_secs: u64,
    /// Requests handled at once; beyond it a request is answered 503 with `Retry-After` at
    /// once.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_in_flight: usize,
    /// Longest a request may take, reading its body included; beyond it the answer is 408
    /// (a client trickling its body cannot hold a connection, or a shutdown, for longer).
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub request_timeout_ms: u64,
    /// Directory where compiled policies are cached (a restart skips compiling). Created
    /// private (0700); refused when another user owns it or can write to it; every file in it
    /// is authenticated with a key kept there (0600), and one that fails is recompiled.
    #[arg(long, value_name = "DIR")]
    pub policy_cache: Option<PathBuf>,
    /// Post every alert event (configuration and policy changes, health level changes,
    /// rollbacks) to this webhook URL; repeatable. Added to `ROLLOUT_ALERT_WEBHOOKS`
    /// (comma-separated).
    #[arg(long = "alert-webhook", value_name = "URL")]
    pub alert_webhooks: Vec<String>,
    /// Milliseconds to wait after an alert webhook's first refusal (doubled after each
    /// further one, at most 5 minutes).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub alert_retry_base_ms: u64,
    /// Delivery attempts after which an alert event is dead-lettered (`rollout alerts list
    /// --state dead`; `rollout alerts retry KEY` requeues it).
    #[arg(long, default_value_t = crate::store::outbox::DEFAULT_MAX_ATTEMPTS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub alert_max_attempts: u32,
    /// Decision log entries waiting for the database at most (beyond it an entry is
    /// dropped and counted in `rollout_decision_log_dropped_total`, never waited for).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub decision_log_queue: usize,
    /// Hours a logged decision is kept.
    #[arg(long, default_value_t = 168, value_name = "HOURS",
          value_parser = clap::value_parser!(u64).range(1..=87_600))]
    pub decision_log_retention_hours: u64,
    /// Logged decisions kept at most (the oldest deleted first).
    #[arg(long, default_value_t = 10_000_000, value_name = "N")]
    pub decision_log_max_rows: u64,
}

/// The decision log's options from `args` and `ROLLOUT_DECISION_LOG_KEY` (the masking key,
/// at least 16 bytes; a bad key stops the start).
fn decision_log_options(args: &Args) -> Result<crate::service::decision_log::DecisionLogOptions, CliError> {
    use crate::service::decision_log::{mask_key, DecisionLogOptions, MASK_KEY_VARIABLE};
    let mask_key =
        mask_key(std::env::var(MASK_KEY_VARIABLE).ok().as_deref()).map_err(|m| CliError::usage(anyhow!("{m}")))?;
    Ok(DecisionLogOptions {
        queue_entries: args.decision_log_queue.max(1),
        retention: Duration::from_secs(args.decision_log_retention_hours.saturating_mul(3600)),
        max_rows: args.decision_log_max_rows,
        mask_key,
        ..DecisionLogOptions::default()
    })
}

/// The environment variable listing alert webhooks (comma-separated).
pub const WEBHOOKS_VARIABLE: &str = "ROLLOUT_ALERT_WEBHOOKS";

/// The alert delivery options of `args` and the environment, checked (a bad URL stops the
/// start, naming it without its secret path).
fn alert_options(args: &Args) -> Result<crate::service::alerts::NotifierOptions, CliError> {
    use crate::service::alerts::{check_webhooks, webhooks_from_env, NotifierOptions};
    let webhooks =
        merge_webhooks(webhooks_from_env(&std::env::var(WEBHOOKS_VARIABLE).unwrap_or_default()), &args.alert_webhooks);
    let options = NotifierOptions {
        webhooks,
        base_backoff: Duration::from_millis(args.alert_retry_base_ms.max(1)),
        max_attempts: args.alert_max_attempts,
        ..NotifierOptions::default()
    };
    // the URLs are checked now, not when the first event is due
    check_webhooks(&options.webhooks).map_err(|e| CliError::usage(anyhow::Error::new(e)))?;
    Ok(options)
}

/// The webhooks of the environment then those of the flags, each once (first occurrence
/// kept): a URL given twice, adjacent or not, is posted to once.
fn merge_webhooks(mut webhooks: Vec<String>, flags: &[String]) -> Vec<String> {
    webhooks.extend(flags.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    webhooks.retain(|w| seen.insert(w.clone()));
    webhooks
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Run `rollout serve`.
pub fn run(args: Args, ctx: &Ctx) -> CliResult {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(CliError::unavailable)?;
    runtime.block_on(serve(args, ctx.url.clone(), ctx.feature.clone()))
}

/// Connect with the store's one connection setup (acquire, statement and lock timeouts:
/// an outage answers in seconds, a held row lock fails a statement instead of stalling it).
async fn connect(url: &str) -> Result<Store, CliError> {
    let shown = redact_url(url);
    let options = StoreOptions { max_connections: 16, ..StoreOptions::default() };
    Store::connect_with(url, &options).await.map_err(|e| {
        let exit = if e.kind().is_transient() { crate::cli::Exit::Unavailable } else { crate::cli::Exit::Usage };
        CliError { exit, error: anyhow::Error::new(e).context(format!("cannot open the database `{shown}`")) }
    })
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

async fn serve(args: Args, url: String, feature: String) -> CliResult {
    let overrides = EnvOverrides::from_env().context("invalid environment override").map_err(CliError::usage)?;
    let token = http::service_token(std::env::var(TOKEN_VARIABLE).ok().as_deref())
        .map_err(|m| CliError::usage(anyhow!("{m}")))?;
    let alerts = alert_options(&args)?;
    let decision_log = decision_log_options(&args)?;
    let store = connect(&url).await?;
    store.migrate().await.context("cannot apply the migrations").map_err(CliError::unavailable)?;

    let options = RuntimeOptions { cache_dir: args.policy_cache.clone(), ..RuntimeOptions::default() };
    let policy_limit = options.max_upload_bytes;
    let runtime = Runtime::new(options).context("cannot start the policy runtime").map_err(CliError::unavailable)?;
    let started = start_policy(&store, &runtime, args.policy.as_deref())
        .await
        .map_err(CliError::service("cannot load the policy"))?;

    let options = ServiceOptions {
        default_feature: feature.clone(),
        overrides,
        outcome_buffer: args.outcome_buffer,
        outcome_buffer_bytes: args.outcome_buffer_bytes,
        health_interval: Duration::from_secs(args.health_interval.max(1)),
        reload_interval: Duration::from_secs(args.reload_interval.max(1)),
        startup_policy: Some(started.fallback.clone()),
        alerts,
        decision_log,
        ..ServiceOptions::default()
    };
    let service = Service::open(store.clone(), runtime.clone(), options)
        .await
        .map_err(CliError::service(format!("cannot open the rollout `{feature}`")))?;
    service.started_with(&started);
    let state = AppState::new(
        service.clone(),
        HttpOptions {
            token: token.clone(),
            policy_body_limit: policy_limit,
            limits: http::limits::RequestLimits {
                max_in_flight: args.max_in_flight.max(1),
                request_timeout: Duration::from_millis(args.request_timeout_ms.max(1)),
            },
            ..HttpOptions::default()
        },
    );

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))
        .map_err(CliError::usage)?;
    let addr = listener.local_addr().context("cannot read the listening address").map_err(CliError::usage)?;
    let _watch = match (&args.policy, args.watch) {
        (Some(path), true) => Some(runtime.watch(path.clone())),
        _ => None,
    };
    let background = Background::spawn(&service);
    let hooks = service.options().alerts.webhooks.iter().map(|w| crate::service::alerts::redact_webhook(w));
    let hooks: Vec<String> = hooks.collect();
    if hooks.is_empty() {
        tracing::info!("no alert webhook (--alert-webhook, {WEBHOOKS_VARIABLE}): events stay in the outbox");
    } else {
        tracing::info!("alert events are posted to {}", hooks.join(", "));
    }
    if token.is_none() {
        tracing::warn!("{TOKEN_VARIABLE} is not set: writes (operations, outcomes, policies) answer 403");
    }
    let policy = started.serving;
    println!(
        "rollout serve: listening on http://{addr} (feature `{feature}`, policy {} {} {}, database {}, writes {})",
        policy.name,
        policy.version,
        policy.sha256.get(..12).unwrap_or(""),
        redact_url(&url),
        if token.is_some() { "enabled" } else { "disabled" },
    );
    let _ = std::io::stdout().flush();

    let stopping = service.clone();
    let shutdown = async move {
        signal().await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        stopping.begin_shutdown();
    };
    http::serve(listener, http::app(state), shutdown)
        .await
        .context("the server failed")
        .map_err(CliError::unavailable)?;
    background.shutdown().await;

    let deadline = Instant::now() + Duration::from_secs(args.shutdown_flush_secs);
    let mut waiting = service.flush_buffers().await;
    while waiting > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        waiting = service.flush_buffers().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: `Vec::dedup` removed only adjacent repeats, so a URL in both the environment
    /// and a flag, with another between them, was posted to twice.
    #[test]
    fn a_webhook_given_twice_is_kept_once() {
        let env = vec!["https://a.example/h".to_owned(), "https://b.example/h".to_owned()];
        let flags =
            vec!["https://a.example/h".to_owned(), "https://c.example/h".to_owned(), "https://b.example/h".to_owned()];
        assert_eq!(
            merge_webhooks(env, &flags),
            vec!["https://a.example/h", "https://b.example/h", "https://c.example/h"]
        );
    }
}
