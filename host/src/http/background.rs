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
//! - **categorisation**: repositories seen in decisions without a category are categorised
//!   from their `repositories` row, once each (the memory of what was tried is cleared every
//!   ten minutes).
//!
//! [`ServiceOptions::health_interval`]: super::ServiceOptions::health_interval
//! [`ServiceOptions::reload_interval`]: super::ServiceOptions::reload_interval

use super::operations::run_health_check;
use super::policies;
use super::AppState;
use crate::manager::ManagerError;
use crate::store::{Store, CHANGE_CHANNEL};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The background tasks of a service; stop them with [`Background::shutdown`].
#[derive(Debug)]
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Start the background tasks of `state` on the current tokio runtime.
    pub fn spawn(state: &AppState) -> Background {
        let (stop, rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(health_loop(state.clone(), rx.clone())),
            tokio::spawn(reload_loop(state.clone(), rx.clone())),
            tokio::spawn(categorize_loop(state.clone(), rx.clone())),
            tokio::spawn(audit_loop(state.clone(), rx.clone())),
        ];
        if matches!(state.store(), Store::Postgres(_)) {
            tasks.push(tokio::spawn(listen_loop(state.clone(), rx)));
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

async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Write the runtime's own decisions to the audit trail: an automatic revert of a new policy
/// version that fell back too often in its first calls becomes a `policy_reverted` history
/// row, and a version the `--watch` file watcher swapped in a `policy_activated` row
/// triggered by `watch` (activations and reverts through the API are audited where they are
/// requested).
async fn audit_loop(state: AppState, mut stop: watch::Receiver<bool>) {
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
        if let Some(entry) = watch_audit(&event) {
            if let Err(e) = state.store().append_history(None, &entry).await {
                tracing::error!(error = %e, "cannot audit the watched policy swap");
            }
        }
        if let crate::runtime::RuntimeEvent::ProbationFailed { version, calls, failed_calls, reverted_to, .. } = event {
            let entry = crate::store::NewHistory {
                action: crate::store::HistoryAction::PolicyReverted,
                previous_percentage: None,
                new_percentage: None,
                reason: Some(format!(
                    "policy {} {} fell back on {failed_calls} of its first {calls} calls: reverted automatically",
                    version.name, version.version
                )),
                triggered_by: "auto_revert".to_owned(),
                metadata: serde_json::json!({"failed": version, "reverted_to": reverted_to, "calls": calls, "failed_calls": failed_calls}),
            };
            if let Err(e) = state.store().append_history(None, &entry).await {
                tracing::error!(error = %e, "cannot audit the automatic policy revert");
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

async fn health_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let interval = state.options().health_interval;
    let mut last_run: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = state.inner.health_kick.notified() => {}
            () = tokio::time::sleep(interval.min(Duration::from_secs(1))) => {}
        }
        if state.db().is_down() {
            continue;
        }
        for feature in state.features() {
            let due_by_outcomes = feature.health_due.swap(false, Ordering::Relaxed);
            let due_by_time = last_run.get(feature.name()).is_none_or(|t| t.elapsed() >= interval);
            if !(due_by_outcomes || due_by_time) {
                continue;
            }
            last_run.insert(feature.name().to_owned(), Instant::now());
            if let Err(e) = run_health_check(&state, &feature, true).await {
                tracing::warn!(feature = feature.name(), "health check failed: {e}");
            }
        }
        // coalesce bursts of outcomes: at most ten checks a second
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Re-read every feature's configuration and categories, and the active policy.
pub async fn reload_all(state: &AppState) {
    for feature in state.features() {
        reload_feature(state, &feature).await;
    }
    reconcile_policy(state).await;
}

async fn reload_feature(state: &AppState, feature: &super::Feature) {
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

/// Serve the database's active policy when it changed since it was last seen.
pub async fn reconcile_policy(state: &AppState) {
    let rows = state.store().list_policy_versions().await.map_err(ManagerError::from);
    state.db().observe(&rows);
    let Ok(rows) = rows else { return };
    let active = rows.iter().find(|r| r.active).map(|r| r.sha256.clone());
    let changed = match state.inner.seen_policy.lock() {
        Ok(mut seen) if *seen != active => {
            seen.clone_from(&active);
            true
        }
        _ => false,
    };
    let Some(sha) = active.filter(|_| changed) else {
        // prepare the newest stored versions not prepared yet, so activating them is quick
        for row in rows.iter().filter(|r| !r.active).take(PREPARE_NEWEST) {
            if policies::prepared(state, &row.sha256).is_none() {
                let (state, sha) = (state.clone(), row.sha256.clone());
                tokio::spawn(async move { policies::prepare(&state, &sha).await });
            }
        }
        return;
    };
    if state.runtime().policy_version().is_some_and(|v| v.sha256 == sha) {
        return;
    }
    // wait for a preparation already under way instead of compiling twice
    let _ = policies::prepare(state, &sha).await;
    let bytes = state.store().policy_bytes(&sha).await.map_err(ManagerError::from);
    state.db().observe(&bytes);
    match bytes {
        Ok(Some(bytes)) => match policies::load(state, Arc::new(bytes), format!("database {sha}")).await {
            Ok(report) => tracing::info!(
                "now serving policy `{}` {} ({sha}) activated in the database",
                report.version.name,
                report.version.version
            ),
            Err(e) => tracing::error!("policy `{sha}` is active in the database but was refused here: {e}"),
        },
        Ok(None) => tracing::error!("policy `{sha}` is active in the database but has no bytes"),
        Err(e) => {
            tracing::warn!("cannot read policy `{sha}`: {e}");
            // try again at the next re-read
            if let Ok(mut seen) = state.inner.seen_policy.lock() {
                *seen = None;
            }
        }
    }
}

/// Stored versions prepared ahead of activation at each re-read.
const PREPARE_NEWEST: usize = 3;

async fn reload_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        let interval = if state.db().is_down() { Duration::from_secs(1) } else { state.options().reload_interval };
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
        reload_all(&state).await;
        if !state.db().is_down() && state.features().iter().any(|f| f.buffered() > 0) {
            let waiting = state.flush_buffers().await;
            if waiting > 0 {
                tracing::warn!(waiting, "outcomes still buffered");
            }
        }
    }
}

async fn listen_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let Store::Postgres(pool) = state.store().clone() else { return };
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(CHANGE_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = stopped(&mut stop) => return,
            r = connected => match r {
                Ok(l) => l,
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
                r = listener.try_recv() => r,
            };
            match received {
                Ok(Some(notification)) => {
                    state.metrics().notified();
                    let payload = notification.payload().to_owned();
                    if payload.is_empty() {
                        reload_all(&state).await;
                    } else if let Some(sha) = payload.strip_prefix(policies::UPLOADED_PREFIX) {
                        // compile and validate it now, beside the requests
                        let (state, sha) = (state.clone(), sha.to_owned());
                        tokio::spawn(async move {
                            let r = policies::prepare(&state, &sha).await;
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

async fn categorize_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let Some(mut rx) = state.inner.uncategorized_rx.lock().ok().and_then(|mut r| r.take()) else { return };
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
        let result = feature.manager.categorize_repository(&id, None).await;
        state.db().observe(&result);
        match result {
            Ok(c) => tracing::debug!(repository = %id, category = %c.category, "categorised a newly seen repository"),
            Err(ManagerError::NoStats(_)) => {}
            Err(e) => tracing::debug!(repository = %id, "cannot categorise: {e}"),
        }
    }
}
