//! Alerts that reach someone: the notifier that delivers the outbox
//! ([`crate::store::outbox`]) to webhooks.
//!
//! Every event is written in the transaction of its change; this module only moves them.
//! Each round it leases the due events ([`Store::claim_alert_events`]), posts each one to
//! every configured webhook that has not accepted it yet — a JSON body with the event's
//! `idempotency_key`, `kind`, `level`, `feature`, `summary`, `details`, and a Slack-compatible
//! `text` — and records the outcome: delivered when every webhook answered 2xx; otherwise
//! pending again after an exponential backoff (`base × 2^(attempts−1)`, at most
//! [`NotifierOptions::max_backoff`]), and dead (the dead letter, `rollout alerts list --state
//! dead`, requeued by `rollout alerts retry KEY`) after [`NotifierOptions::max_attempts`].
//! Delivery is at least once: a crash after a webhook accepted an event and before the
//! outcome is written posts it again once the lease ends, with the same key — receivers
//! deduplicate by it (the `Idempotency-Key` header carries it too). Events are posted
//! concurrently, so a receiver may see them out of order: `seq` and `created_at` give the
//! order.
//!
//! ```no_run
//! # async fn demo(store: rollout::store::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use rollout::service::alerts::{Notifier, NotifierOptions};
//! let options = NotifierOptions { webhooks: vec!["https://hooks.example.com/rollout".into()], ..Default::default() };
//! let notifier = Notifier::new(store, options)?;
//! let report = notifier.run_once().await?;
//! println!("{} delivered, {} to retry, {} dead", report.delivered, report.retrying, report.dead);
//! # Ok(()) }
//! ```

use crate::store::{AlertEvent, AlertState, DeliveryOutcome, Store, StoreResult};
use chrono::{TimeDelta, Utc};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How the notifier delivers.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierOptions {
    /// Webhook URLs (`http` or `https`); every event goes to each.
    pub webhooks: Vec<String>,
    /// How often due events are looked for (default 1 s).
    pub poll_interval: Duration,
    /// The wait after a first failed attempt, doubled after each further one (default 1 s).
    pub base_backoff: Duration,
    /// The longest wait between attempts (default 5 min).
    pub max_backoff: Duration,
    /// Attempts after which an event is dead (default 10: about 8.5 minutes of retries).
    pub max_attempts: u32,
    /// Time allowed for one webhook to answer (default 10 s).
    pub request_timeout: Duration,
    /// Most events leased per round (default 100).
    pub batch: u32,
}

impl Default for NotifierOptions {
    fn default() -> Self {
        NotifierOptions {
            webhooks: Vec::new(),
            poll_interval: Duration::from_secs(1),
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_attempts: crate::store::outbox::DEFAULT_MAX_ATTEMPTS,
            request_timeout: Duration::from_secs(10),
            batch: 100,
        }
    }
}

/// A webhook URL the notifier cannot use.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// Not an `http` or `https` URL.
    #[error("invalid alert webhook `{url}`: {message} (allowed: an http:// or https:// URL)")]
    InvalidWebhook {
        /// The URL, without its path (which may hold a secret).
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the webhook client: {0}")]
    Client(String),
}

/// One webhook: its URL, the digest stored in `delivered_targets`, and a name safe to print.
#[derive(Debug, Clone)]
struct Target {
    url: reqwest::Url,
    digest: String,
    shown: String,
}

/// The URL's scheme and host, never its path or query (Slack-style webhooks carry their
/// secret there).
pub fn redact_webhook(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// Parse `ROLLOUT_ALERT_WEBHOOKS`: comma-separated URLs, blanks ignored.
pub fn webhooks_from_env(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn targets(webhooks: &[String]) -> Result<Vec<Target>, NotifierError> {
    let mut targets = Vec::new();
    for raw in webhooks {
        let url = reqwest::Url::parse(raw)
            .map_err(|e| NotifierError::InvalidWebhook { url: redact_webhook(raw), message: e.to_string() })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(NotifierError::InvalidWebhook {
                url: redact_webhook(raw),
                message: format!("scheme `{}` without a host", url.scheme()),
            });
        }
        let digest = hex::encode(&Sha256::digest(raw.as_bytes())[..8]);
        targets.push(Target { shown: redact_webhook(raw), url, digest });
    }
    Ok(targets)
}

/// Check that every URL is an `http` or `https` URL with a host.
pub fn check_webhooks(webhooks: &[String]) -> Result<(), NotifierError> {
    targets(webhooks).map(drop)
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Events leased.
    pub claimed: usize,
    /// Events every webhook has now accepted.
    pub delivered: usize,
    /// Events to try again later.
    pub retrying: usize,
    /// Events that became dead.
    pub dead: usize,
}

/// Delivers the outbox to webhooks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    store: Store,
    client: reqwest::Client,
    targets: Arc<[Target]>,
    options: NotifierOptions,
}

impl Notifier {
    /// A notifier of `store` to `options.webhooks` (each checked: [`check_webhooks`]).
    pub fn new(store: Store, options: NotifierOptions) -> Result<Notifier, NotifierError> {
        let targets = targets(&options.webhooks)?;
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .user_agent(concat!("rollout/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifierError::Client(e.to_string()))?;
        Ok(Notifier { store, client, targets: targets.into(), options })
    }

    /// Whether any webhook is configured.
    pub fn has_webhooks(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The configured webhooks, redacted.
    pub fn webhooks(&self) -> Vec<String> {
        self.targets.iter().map(|t| t.shown.clone()).collect()
    }

    /// Lease the due events, post each to the webhooks that have not accepted it, and record
    /// every outcome. With no webhook, nothing is leased.
    pub async fn run_once(&self) -> StoreResult<RoundReport> {
        let mut report = RoundReport::default();
        if self.targets.is_empty() {
            return Ok(report);
        }
        let now = Utc::now();
        // the lease outlives every request of the round, so no other instance posts these
        let lease = self.options.request_timeout * (u32::try_from(self.targets.len()).unwrap_or(u32::MAX)) * 2
            + Duration::from_secs(30);
        let lease_until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::minutes(10));
        let events = self.store.claim_alert_events(now, lease_until, self.options.batch).await?;
        report.claimed = events.len();
        let mut tasks = tokio::task::JoinSet::new();
        for event in events {
            let this = self.clone();
            tasks.spawn(async move {
                let outcome = this.attempt(&event).await;
                let recorded = this.store.finish_alert_event(event.seq, &outcome).await;
                (outcome.state, recorded)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((state, recorded)) = joined else { continue };
            recorded?;
            match state {
                AlertState::Delivered => report.delivered += 1,
                AlertState::Pending => report.retrying += 1,
                AlertState::Dead => report.dead += 1,
            }
        }
        Ok(report)
    }

    /// Post `event` to every webhook that has not accepted it; the outcome to record with
    /// [`Store::finish_alert_event`] (nothing is recorded here).
    pub async fn attempt(&self, event: &AlertEvent) -> DeliveryOutcome {
        let body = webhook_body(event);
        let mut delivered = event.delivered_targets.clone();
        let mut errors = Vec::new();
        for target in self.targets.iter().filter(|t| !event.delivered_targets.contains(&t.digest)) {
            let sent = self
                .client
                .post(target.url.clone())
                .header("idempotency-key", event.idempotency_key.to_string())
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => delivered.push(target.digest.clone()),
                Ok(r) => errors.push(format!("{} answered {}", target.shown, r.status())),
                // without the URL: reqwest's message names it, path and secret included
                Err(e) => errors.push(format!("{}: {}", target.shown, e.without_url())),
            }
        }
        let attempts = event.attempts.saturating_add(1);
        let now = Utc::now();
        if errors.is_empty() {
            return DeliveryOutcome {
                state: AlertState::Delivered,
                attempts,
                next_attempt_at: now,
                delivered_targets: delivered,
                last_error: None,
                delivered_at: Some(now),
            };
        }
        let state = if attempts >= self.options.max_attempts { AlertState::Dead } else { AlertState::Pending };
        DeliveryOutcome {
            state,
            attempts,
            next_attempt_at: now + TimeDelta::from_std(self.backoff(attempts)).unwrap_or(TimeDelta::minutes(5)),
            delivered_targets: delivered,
            last_error: Some(errors.join("; ")),
            delivered_at: None,
        }
    }

    /// The wait after the `attempts`-th failed attempt.
    fn backoff(&self, attempts: u32) -> Duration {
        backoff(self.options.base_backoff, self.options.max_backoff, attempts)
    }

    /// Deliver until `stop` turns true: a round every poll interval (at once again after a
    /// full batch).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let full = match self.run_once().await {
                Ok(r) => {
                    if r.retrying + r.dead > 0 {
                        tracing::warn!(retrying = r.retrying, dead = r.dead, "alert webhooks refused events");
                    }
                    r.claimed >= self.options.batch as usize
                }
                Err(e) => {
                    tracing::debug!("alert delivery round failed: {e}");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// `base × 2^(attempts − 1)`, at most `max`.
fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// The JSON posted for `event`: the generic fields, and `text` for Slack-compatible
/// receivers (Slack, Mattermost, Rocket.Chat incoming webhooks show it).
pub fn webhook_body(event: &AlertEvent) -> serde_json::Value {
    let icon = match event.level {
        crate::store::AlertLevel::Critical => ":rotating_light:",
        crate::store::AlertLevel::Warning => ":warning:",
        crate::store::AlertLevel::Info => ":information_source:",
    };
    serde_json::json!({
        "idempotency_key": event.idempotency_key,
        "seq": event.seq,
        "kind": event.kind,
        "level": event.level,
        "feature": event.feature,
        "summary": event.summary,
        "details": event.details,
        "created_at": event.created_at,
        "text": format!("{icon} [{}] {}", event.level.as_str().to_uppercase(), event.summary),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_are_checked_and_never_shown_with_their_path() {
        assert_eq!(redact_webhook("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(
            webhooks_from_env(" http://a/x , ,https://b/y"),
            vec!["http://a/x".to_owned(), "https://b/y".to_owned()]
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=8).map(|a| backoff(base, max, a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(base, max, u32::MAX).as_secs(), 60);
        assert_eq!(backoff(base, max, 0).as_secs(), 1);
    }

    #[test]
    fn a_webhook_must_be_http_with_a_host() {
        assert!(check_webhooks(&["https://hooks.example.com/x".into(), "http://127.0.0.1:9/y".into()]).is_ok());
        for bad in ["ftp://x/y", "not a url", "file:///etc/passwd"] {
            let err = check_webhooks(&[bad.to_owned()]).expect_err(bad).to_string();
            assert!(err.contains("allowed: an http:// or https:// URL"), "{err}");
        }
    }
}
