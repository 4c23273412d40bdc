//! Work beside the requests.
//!
//! - **health**: each feature's health check runs every [`ServiceOptions::health_interval`]
//!   and right after outcomes are committed (woken by the outcome handler, at most every
//!   100 ms), so a rollback lands well within a second of the outcome that crosses the
//!   threshold;
//! - **notifications** (Postgres): a `LISTEN` on [`CHANGE_CHANNEL`]; a feature's name reloads
//!   that feature, an empty payload (policy activations) reconciles the policy and reloads
//!   everything; after every (re)connection everything is re-read, covering what was missed;
//! - **re-read**: every [`ServiceOptions::reload_interval`] (every second while the database
//!   is unreachable, doubling as the reconnection probe) the configurations and the active
//!   policy are re-read, and buffered outcomes are flushed;
//! - **participation**: each feature's participation (eligible repositories, by category)
//!   is recounted whenever it no longer describes the configuration, categories and policy
//!   in force, so reads of the statistics and the status page never scan;
//! - **alerts**: the outbox is delivered to the configured webhooks ([`super::alerts`]),
//!   its counts go to `/metrics`, and events older than [`ALERT_RETENTION`] are deleted;
//! - **categorisation**: repositories seen in decisions without a category are categorised
//!   from their `repositories` row, once each (the memory of what was tried is cleared every
//!   ten minutes).
//!
//! [`ServiceOptions::health_interval`]: super::ServiceOptions::health_interval
//! [`ServiceOptions::reload_interval`]: super::ServiceOptions::reload_interval

use super::{policies, Feature, Service, ServiceError};
use crate::input::values::RepositoryUuid;
use crate::store::{Store, CHANGE_CHANNEL};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A repository seen without a category, and the feature that saw it.
type Uncategorized = (Arc<Feature>, String);

/// Newly seen repositories waiting for background categorisation: a bounded channel and the
/// set of ids queued recently (forgotten every ten minutes), so the hot path never waits and
/// never queues an id twice.
pub(crate) struct CategorizeQueue {
    tx: mpsc::Sender<Uncategorized>,
    rx: Mutex<Option<mpsc::Receiver<Uncategorized>>>,
    queued: Mutex<(HashSet<u128>, Instant)>,
}

impl CategorizeQueue {
    pub(crate) fn new() -> CategorizeQueue {
        let (tx, rx) = mpsc::channel(4096);
        CategorizeQueue { tx, rx: Mutex::new(Some(rx)), queued: Mutex::new((HashSet::new(), Instant::now())) }
    }

    /// Queue `id` of `feature` unless it was queued recently; never blocks (when the set is
    /// busy or the channel full, a later decision queues it).
    pub(crate) fn offer(&self, feature: &Arc<Feature>, id: RepositoryUuid) {
        let v = id.get().as_u128();
        let Ok(mut queued) = self.queued.try_lock() else { return };
        if queued.1.elapsed() > Duration::from_secs(600) || queued.0.len() > 100_000 {
            queued.0.clear();
            queued.1 = Instant::now();
        }
        if queued.0.insert(v) {
            drop(queued);
            let _ = self.tx.try_send((feature.clone(), id.to_string()));
        }
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<Uncategorized>> {
        self.rx.lock().ok().and_then(|mut r| r.take())
    }
}

/// The background tasks of a service; stop them with [`Background::shutdown`].
#[derive(Debug)]
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Start the background tasks of `service` on the current tokio runtime.
    pub fn spawn(service: &Service) -> Background {
        let (stop, rx) = watch::channel(false);
        for feature in service.features() {
            service.recount(&feature);
        }
        let mut tasks = vec![
            tokio::spawn(health_loop(service.clone(), rx.clone())),
            tokio::spawn(reload_loop(service.clone(), rx.clone())),
            tokio::spawn(categorize_loop(service.clone(), rx.clone())),
            tokio::spawn(audit_loop(service.clone(), rx.clone())),
            tokio::spawn(alerts_loop(service.clone(), rx.clone())),
            tokio::spawn(decision_log_loop(service.clone(), rx.clone())),
            tokio::spawn(guard_loop(service.clone(), rx.clone())),
        ];
        if matches!(service.store(), Store::Postgres(_)) {
            tasks.push(tokio::spawn(listen_loop(service.clone(), rx)));
        }
        Background { stop, tasks }
    }

    /// Stop every task and wait for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The decision log's writer ([`super::decision_log::DecisionLog::run`]).
async fn decision_log_loop(service: Service, stop: watch::Receiver<bool>) {
    let store = match service.store().decision_log_writer().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("decision log: {e}; writing through the shared pool");
            service.store().clone()
        }
    };
    service.decision_log().run(store, stop).await;
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Write the runtime's own decisions to the database: an automatic revert of a new policy
/// version that fell back too often in its first calls is recorded
/// ([`Service::record_probation_failure`]: the version reverted to becomes the active one, so
/// every instance converges), and a version the `--watch` file watcher swapped in a `policy_activated` row
/// triggered by `watch` (activations and reverts through the API are audited where they are
/// requested).
async fn audit_loop(state: Service, mut stop: watch::Receiver<bool>) {
    let events = state.runtime().subscribe();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // The runtime's events arrive on a std channel; a thread forwards them until either end closes.
    std::thread::spawn(move || {
        while let Ok(event) = events.recv() {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    loop {
        let event = tokio::select! {
            e = rx.recv() => e,
            _ = stop.changed() => None,
        };
        let Some(event) = event else { return };
        state.note_policy();
        if let Some(entry) = watch_audit(&event) {
            if let Err(e) = state.store().append_history(None, &entry).await {
                tracing::error!(error = %e, "cannot audit the watched policy swap");
            }
        }
        if let crate::runtime::RuntimeEvent::ProbationFailed { version, calls, failed_calls, reverted_to, .. } = event {
            if let Err(e) = state.record_probation_failure(&version, reverted_to.as_ref(), calls, failed_calls).await {
                tracing::error!(error = %e, "cannot record the automatic policy revert");
            }
        }
    }
}

/// The history row of a swap the `--watch` file watcher made, if `event` is one.
fn watch_audit(event: &crate::runtime::RuntimeEvent) -> Option<crate::store::NewHistory> {
    let crate::runtime::RuntimeEvent::Activated { version, previous, source, .. } = event else { return None };
    let path = source.strip_prefix(crate::runtime::WATCH_SOURCE_PREFIX)?;
    Some(crate::store::NewHistory {
        action: crate::store::HistoryAction::PolicyActivated,
        previous_percentage: None,
        new_percentage: None,
        reason: Some(format!("policy file `{path}` changed: {} {} serving", version.name, version.version)),
        triggered_by: "watch".to_owned(),
        metadata: serde_json::json!({"activated": version, "previous": previous, "source": source}),
    })
}

/// How long alert events are kept, whatever their state.
pub const ALERT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Deliver alert events (when webhooks are configured), publish the outbox's counts every
/// 10 s and prune old events every [`crate::store::PRUNE_EVERY`].
async fn alerts_loop(state: Service, mut stop: watch::Receiver<bool>) {
    let notifier = match super::alerts::Notifier::new(state.store().clone(), state.options().alerts.clone()) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("alerts are not delivered: {e}");
            return;
        }
    };
    let delivering = notifier.has_webhooks().then(|| tokio::spawn(notifier.run(stop.clone())));
    let mut pruned: Option<Instant> = None;
    loop {
        if !state.db().is_down() {
            match state.store().alert_counts().await {
                Ok(c) => state.metrics().set_alert_outbox(c.pending, c.dead),
                Err(e) => tracing::debug!("cannot count alert events: {e}"),
            }
            if pruned.is_none_or(|t| t.elapsed() >= crate::store::PRUNE_EVERY) {
                let before = chrono::Utc::now() - chrono::TimeDelta::from_std(ALERT_RETENTION).unwrap_or_default();
                match state.store().prune_alert_events(before).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned alert events older than 30 days"),
                    Ok(_) => {}
                    Err(e) => tracing::debug!("cannot prune alert events: {e}"),
                }
                if let Err(e) = state.store().prune_backlog(crate::store::backlog::retention_cutoff()).await {
                    tracing::debug!("cannot prune backlog reports: {e}");
                }
                pruned = Some(Instant::now());
            }
        }
        tokio::select! {
            () = stopped(&mut stop) => break,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
    if let Some(task) = delivering {
        let _ = task.await;
    }
}

/// The canary guard: one round ([`Service::check_candidate`]) every health interval.
async fn guard_loop(state: Service, mut stop: watch::Receiver<bool>) {
    let interval = state.options().health_interval;
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
        if state.db().is_down() {
            continue;
        }
        match state.check_candidate().await {
            Ok(super::candidate::GuardAction::None | super::candidate::GuardAction::Held { .. }) => {}
            Ok(action) => tracing::info!(?action, "policy canary guard"),
            Err(e) => tracing::warn!("policy canary guard failed: {e}"),
        }
    }
}

async fn health_loop(state: Service, mut stop: watch::Receiver<bool>) {
    let interval = state.options().health_interval;
    let mut last_run: HashMap<String, Instant> = HashMap::new();
    // each feature's check runs on its own task: one that waits (a row lock held elsewhere,
    // a slow statement — both bounded by the store's timeouts) delays no other feature
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            () = state.inner.health_kick.notified() => {}
            () = tokio::time::sleep(interval.min(Duration::from_secs(1))) => {}
        }
        running.retain(|_, task| !task.is_finished());
        if state.db().is_down() {
            continue;
        }
        for feature in state.features() {
            if running.contains_key(feature.name()) {
                continue;
            }
            let due_by_outcomes = feature.health_due.swap(false, Ordering::Relaxed);
            let due_by_time = last_run.get(feature.name()).is_none_or(|t| t.elapsed() >= interval);
            if !(due_by_outcomes || due_by_time) {
                continue;
            }
            last_run.insert(feature.name().to_owned(), Instant::now());
            let state = state.clone();
            let name = feature.name().to_owned();
            running.insert(
                name,
                tokio::spawn(async move {
                    if let Err(e) = state.run_health_check(&feature, true).await {
                        tracing::warn!(feature = feature.name(), "health check failed: {e}");
                    }
                }),
            );
        }
        // coalesce bursts of outcomes: at most ten checks a second
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, task) in running {
        let _ = task.await;
    }
}

/// Re-read every feature's configuration and categories, and the active policy.
pub async fn reload_all(state: &Service) {
    for feature in state.features() {
        reload_feature(state, &feature).await;
    }
    state.reconcile_policy().await;
    state.reconcile_candidate().await;
}

async fn reload_feature(state: &Service, feature: &Feature) {
    let result = feature.manager.reload().await;
    state.db().observe(&result);
    match result {
        Ok(()) => {
            feature.mark_loaded();
            state.metrics().config_reloaded();
        }
        Err(e) => tracing::debug!(feature = feature.name(), "reload failed: {e}"),
    }
}

async fn reload_loop(state: Service, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = if state.db().is_down() { Duration::from_secs(1) } else { state.options().reload_interval };
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
        reload_all(&state).await;
        // participation is recounted in the background whenever it is not current
        for feature in state.features() {
            let _ = state.participation(&feature);
        }
        if !state.db().is_down() && state.features().iter().any(|f| f.buffered() > 0) {
            let waiting = state.flush_buffers().await;
            if waiting > 0 {
                tracing::warn!(waiting, "outcomes still buffered");
            }
        }
    }
}

async fn listen_loop(state: Service, mut stop: watch::Receiver<bool>) {
    loop {
        let mut listener = tokio::select! {
            () = stopped(&mut stop) => return,
            r = state.store().listen() => match r {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("cannot listen for changes: {e}");
                    tokio::select! {
                        () = stopped(&mut stop) => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        tracing::debug!("listening on `{CHANGE_CHANNEL}`");
        // whatever changed while we were not listening
        reload_all(&state).await;
        loop {
            let received = tokio::select! {
                () = stopped(&mut stop) => return,
                r = listener.recv() => r,
            };
            match received {
                Ok(Some(payload)) => {
                    state.metrics().notified();
                    if payload.is_empty() {
                        reload_all(&state).await;
                    } else if let Some(sha) = payload.strip_prefix(policies::UPLOADED_PREFIX) {
                        // compile and validate it now, beside the requests
                        let (state, sha) = (state.clone(), sha.to_owned());
                        tokio::spawn(async move {
                            let r = state.prepare(&sha).await;
                            tracing::info!("prepared uploaded policy `{sha}`: {r:?}");
                        });
                    } else if let Some(feature) = state.inner.features.load().get(&payload).cloned() {
                        reload_feature(&state, &feature).await;
                    }
                }
                Ok(None) => {
                    tracing::warn!("lost the notification connection; reconnecting");
                    break;
                }
                Err(e) => {
                    tracing::warn!("notification connection failed: {e}; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn categorize_loop(state: Service, mut stop: watch::Receiver<bool>) {
    let Some(mut rx) = state.inner.categorize.take_receiver() else { return };
    let mut tried: HashSet<String> = HashSet::new();
    let mut cleared = Instant::now();
    loop {
        let (feature, id) = tokio::select! {
            () = stopped(&mut stop) => return,
            item = rx.recv() => match item { Some(i) => i, None => return },
        };
        if cleared.elapsed() > Duration::from_secs(600) || tried.len() > 100_000 {
            tried.clear();
            cleared = Instant::now();
        }
        if state.db().is_down() || tried.contains(&id) {
            continue;
        }
        if feature.manager.repository(&id).category.is_some() {
            continue;
        }
        tried.insert(id.clone());
        let result = state.observed(feature.manager.categorize_repository(&id, None)).await;
        match result {
            Ok(c) => tracing::debug!(repository = %id, category = %c.category, "categorised a newly seen repository"),
            Err(ServiceError::NotFound { .. }) => {}
            Err(e) => tracing::debug!(repository = %id, "cannot categorise: {e}"),
        }
    }
}
