//! `rollout alerts list|test|retry`: the alert outbox ([`crate::store::outbox`]) from the
//! command line — what was sent, what is waiting, what is dead-lettered — and a test event
//! to check a webhook end to end.

use crate::cli::context::{connect, Ctx};
use crate::cli::output::print_json;
use crate::cli::table::Table;
use crate::cli::{CliError, CliResult, Exit};
use crate::service::alerts::{redact_webhook, webhooks_from_env, Notifier, NotifierOptions};
use crate::store::{AlertEvent, AlertLevel, AlertState, NewAlertEvent};
use anyhow::anyhow;
use clap::Subcommand;
use uuid::Uuid;

/// `alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// The newest alert events with their delivery state.
    List {
        /// Only events in this state.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        /// Events to show.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Write a test event (kind `test`, level info) to the outbox and post it now to each
    /// --webhook (else to `ROLLOUT_ALERT_WEBHOOKS`); exit 1 when one refuses it. Without any
    /// webhook, a `rollout serve --alert-webhook` instance delivers it.
    Test {
        /// Webhook URL to post to (repeatable).
        #[arg(long = "webhook", value_name = "URL")]
        webhooks: Vec<String>,
    },
    /// Requeue a dead-lettered event for delivery now (its attempts reset).
    Retry {
        /// The event's idempotency key.
        key: Uuid,
    },
}

/// Run an `alerts` subcommand.
pub async fn run(ctx: &Ctx, cmd: AlertsCommand) -> CliResult {
    match cmd {
        AlertsCommand::List { state, limit } => list(ctx, state.as_deref().and_then(AlertState::parse), limit).await,
        AlertsCommand::Test { webhooks } => test(ctx, webhooks).await,
        AlertsCommand::Retry { key } => retry(ctx, key).await,
    }
}

fn events_table(events: &[AlertEvent]) -> String {
    let mut t = Table::new(["created", "level", "kind", "feature", "state", "attempts", "key", "summary"]).right(5);
    for e in events {
        let mut summary = e.summary.clone();
        if let Some(err) = &e.last_error {
            summary.push_str(&format!(" [last error: {err}]"));
        }
        t.row([
            e.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            e.level.as_str().to_owned(),
            e.kind.clone(),
            e.feature.clone().unwrap_or_else(|| "-".into()),
            e.state.as_str().to_owned(),
            e.attempts.to_string(),
            e.idempotency_key.to_string(),
            summary,
        ]);
    }
    t.render()
}

async fn list(ctx: &Ctx, state: Option<AlertState>, limit: u32) -> CliResult {
    let store = connect(ctx, false).await?;
    let events = store
        .list_alert_events(state, limit)
        .await
        .map_err(|e| CliError::service("cannot read the alert events")(e.into()))?;
    let counts =
        store.alert_counts().await.map_err(|e| CliError::service("cannot count the alert events")(e.into()))?;
    if ctx.json {
        print_json(&serde_json::json!({ "counts": counts, "events": events }))?;
    } else {
        outln!("{} pending, {} delivered, {} dead", counts.pending, counts.delivered, counts.dead);
        if !events.is_empty() {
            out!("{}", events_table(&events));
        }
    }
    Ok(Exit::Ok)
}

async fn test(ctx: &Ctx, mut webhooks: Vec<String>) -> CliResult {
    if webhooks.is_empty() {
        webhooks = webhooks_from_env(&std::env::var(super::serve::WEBHOOKS_VARIABLE).unwrap_or_default());
    }
    let store = connect(ctx, false).await?;
    let notifier = Notifier::new(store.clone(), NotifierOptions { webhooks: webhooks.clone(), ..Default::default() })
        .map_err(|e| CliError::usage(anyhow::Error::new(e)))?;
    let key = Uuid::new_v4();
    let event = NewAlertEvent {
        idempotency_key: key,
        kind: "test".into(),
        level: AlertLevel::Info,
        feature: None,
        summary: "test event from `rollout alerts test`".into(),
        details: serde_json::json!({ "webhooks": webhooks.iter().map(|w| redact_webhook(w)).collect::<Vec<_>>() }),
    };
    store.insert_alert_event(&event).await.map_err(|e| CliError::service("cannot write the test event")(e.into()))?;
    if !notifier.has_webhooks() {
        if ctx.json {
            print_json(&serde_json::json!({ "idempotency_key": key, "state": "pending", "webhooks": [] }))?;
        } else {
            outln!(
                "wrote test event {key} to the outbox; no webhook given (--webhook, {}): \
                 a `rollout serve --alert-webhook URL` instance delivers it",
                super::serve::WEBHOOKS_VARIABLE
            );
        }
        return Ok(Exit::Ok);
    }
    let stored = store
        .list_alert_events(None, 1000)
        .await
        .map_err(|e| CliError::service("cannot read the test event")(e.into()))?
        .into_iter()
        .find(|e| e.idempotency_key == key)
        .ok_or_else(|| CliError::unavailable(anyhow!("the test event {key} was not found after writing it")))?;
    let outcome = notifier.attempt(&stored).await;
    store
        .finish_alert_event(stored.seq, &outcome)
        .await
        .map_err(|e| CliError::service("cannot record the test delivery")(e.into()))?;
    let ok = outcome.state == AlertState::Delivered;
    if ctx.json {
        print_json(&serde_json::json!({
            "idempotency_key": key,
            "state": outcome.state,
            "webhooks": notifier.webhooks(),
            "error": outcome.last_error,
        }))?;
    } else if ok {
        outln!("delivered test event {key} to {}", notifier.webhooks().join(", "));
    } else {
        outln!(
            "test event {key} was refused: {}; it stays pending for a serving instance to retry",
            outcome.last_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

async fn retry(ctx: &Ctx, key: Uuid) -> CliResult {
    let store = connect(ctx, false).await?;
    let requeued = store
        .retry_alert_event(key)
        .await
        .map_err(|e| CliError::service(format!("cannot requeue alert event `{key}`"))(e.into()))?;
    if !requeued {
        return Err(CliError::usage(anyhow!(
            "alert event `{key}` is not dead-lettered (see `rollout alerts list --state dead`)"
        )));
    }
    if ctx.json {
        print_json(&serde_json::json!({ "idempotency_key": key, "state": "pending" }))?;
    } else {
        outln!("requeued alert event {key}: a serving instance delivers it now");
    }
    Ok(Exit::Ok)
}
