//! Alerts that reach someone (issue 12): the outbox written with each change, one event per
//! health-level transition, and the notifier's at-least-once delivery — retries with backoff,
//! one acceptance per idempotency key even with two instances delivering, events that
//! survive a restart or a crash mid-delivery, and the dead letter. Every test runs on SQLite
//! and on Postgres.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{TimeDelta, Utc};
use rollout::service::alerts::{Notifier, NotifierOptions};
use rollout::store::testing::TestDatabase;
use rollout::store::{AlertLevel, AlertState, Change, ChangeRequest, HistoryAction, NewAlertEvent, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const FEATURE: &str = "alerts_feature";

both_backends!(
    every_committed_change_writes_one_event_keyed_by_its_history_row,
    one_event_per_health_level_transition_however_many_instances_record_it,
    a_receiver_that_fails_twice_then_succeeds_accepts_each_event_exactly_once,
    events_survive_a_restart_and_a_crash_mid_delivery,
    a_webhook_that_always_refuses_dead_letters_the_event_until_retried,
);

fn req(change: Change) -> ChangeRequest {
    ChangeRequest::new(change, Some("test".into()), "tester")
}

async fn all_events(store: &Store) -> Vec<rollout::store::AlertEvent> {
    let mut events = store.list_alert_events(None, 1000).await.unwrap();
    events.reverse();
    events
}

async fn every_committed_change_writes_one_event_keyed_by_its_history_row(db: &TestDatabase) {
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    store.apply_change(FEATURE, &req(Change::SetPercentage(25))).await.unwrap();
    // a change that changes nothing writes no history row and no event
    let same = store.apply_change(FEATURE, &req(Change::SetPercentage(25))).await.unwrap();
    assert!(!same.applied);
    // a change whose transaction fails (triggered_by too long) writes neither
    let failed = ChangeRequest::new(Change::SetPercentage(40), None, "x".repeat(200));
    store.apply_change(FEATURE, &failed).await.unwrap_err();
    let rollback = Change::Rollback {
        judged_since: store.get_config(FEATURE).await.unwrap().state_changed_at,
        judged_percentage: 25,
    };
    store.apply_change(FEATURE, &req(rollback)).await.unwrap();

    let history = store.history(FEATURE, 100).await.unwrap();
    let events = all_events(store).await;
    assert_eq!(events.len(), history.len(), "one event per history row: {events:#?}");
    let keys: HashSet<Uuid> = events.iter().map(|e| e.idempotency_key).collect();
    let ids: HashSet<Uuid> = history.iter().map(|h| h.id).collect();
    assert_eq!(keys, ids, "the event's key is its history row's id");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["created", "updated", "rollback"]);
    assert_eq!(events[1].level, AlertLevel::Info);
    assert_eq!(events[1].summary, "`alerts_feature`: updated (0% → 25%) by tester: test");
    assert_eq!(events[2].level, AlertLevel::Critical, "a rollback is critical");
    assert!(events.iter().all(|e| e.state == AlertState::Pending && e.attempts == 0));
    let rollback_row = history.iter().find(|h| h.action == HistoryAction::Rollback).unwrap();
    assert_eq!(events[2].details["history_id"], serde_json::json!(rollback_row.id));
}

fn health(level: AlertLevel, previous: Option<&str>) -> NewAlertEvent {
    NewAlertEvent {
        idempotency_key: Uuid::new_v4(),
        kind: "health".into(),
        level,
        feature: Some(FEATURE.into()),
        summary: format!("from {previous:?}"),
        details: serde_json::json!({ "previous": previous }),
    }
}

async fn one_event_per_health_level_transition_however_many_instances_record_it(db: &TestDatabase) {
    // a first `ok` is no event
    assert!(db.store.record_health_level(FEATURE, "ok", |p| health(AlertLevel::Info, p)).await.unwrap());
    assert!(all_events(&db.store).await.is_empty());
    // eight instances see the same warning at once: one transition, one event
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = Store::connect(&db.url).await.unwrap();
        tasks.spawn(async move {
            let changed = store.record_health_level(FEATURE, "warning", |p| health(AlertLevel::Warning, p)).await;
            store.close().await;
            changed.unwrap()
        });
    }
    let mut changed = 0;
    while let Some(r) = tasks.join_next().await {
        changed += usize::from(r.unwrap());
    }
    assert_eq!(changed, 1, "exactly one instance recorded the transition");
    let events = all_events(&db.store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].details["previous"], "ok", "the event knows the level it left");
    // the same level again: nothing
    assert!(!db.store.record_health_level(FEATURE, "warning", |p| health(AlertLevel::Warning, p)).await.unwrap());
    // critical, then recovery: one event each
    db.store.record_health_level(FEATURE, "critical", |p| health(AlertLevel::Critical, p)).await.unwrap();
    db.store.record_health_level(FEATURE, "ok", |p| health(AlertLevel::Info, p)).await.unwrap();
    let levels: Vec<AlertLevel> = all_events(&db.store).await.iter().map(|e| e.level).collect();
    assert_eq!(levels, [AlertLevel::Warning, AlertLevel::Critical, AlertLevel::Info]);
}

/// A webhook receiver: answers 500 to the first `fail_first` posts of each key (every post
/// when `None`), then 200, and remembers what it accepted.
#[derive(Clone, Default)]
struct Receiver {
    fail_first: Option<usize>,
    attempts: Arc<Mutex<HashMap<String, usize>>>,
    accepted: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, Json(body): Json<serde_json::Value>) -> StatusCode {
    let key = body["idempotency_key"].as_str().unwrap_or_default().to_owned();
    assert_eq!(headers.get("idempotency-key").and_then(|v| v.to_str().ok()), Some(key.as_str()));
    let n = {
        let mut a = r.attempts.lock().unwrap();
        let n = a.entry(key).or_default();
        *n += 1;
        *n
    };
    match r.fail_first {
        Some(f) if n > f => {
            r.accepted.lock().unwrap().push(body);
            StatusCode::OK
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn start_receiver(fail_first: Option<usize>) -> (Receiver, String) {
    let receiver = Receiver { fail_first, ..Receiver::default() };
    let app = Router::new().route("/hook/secret-token", post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, format!("http://{addr}/hook/secret-token"))
}

fn options(url: &str, max_attempts: u32) -> NotifierOptions {
    NotifierOptions {
        webhooks: vec![url.to_owned()],
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_attempts,
        ..NotifierOptions::default()
    }
}

/// Run rounds of `notifiers` (concurrently) until `done` holds; generous limit.
async fn drive(store: &Store, notifiers: &[Notifier], done: impl Fn(rollout::store::AlertCounts) -> bool) {
    for _ in 0..1500 {
        let rounds: Vec<_> = notifiers
            .iter()
            .map(|n| {
                let n = n.clone();
                async move { n.run_once().await }
            })
            .collect();
        for r in join_all(rounds).await {
            r.unwrap();
        }
        if done(store.alert_counts().await.unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox did not settle: {:?}", store.alert_counts().await.unwrap());
}

/// Await every future, concurrently.
async fn join_all<F>(futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn a_receiver_that_fails_twice_then_succeeds_accepts_each_event_exactly_once(db: &TestDatabase) {
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    for p in [5, 10, 25, 50] {
        store.apply_change(FEATURE, &req(Change::SetPercentage(p))).await.unwrap();
    }
    let expected: HashSet<String> =
        store.history(FEATURE, 100).await.unwrap().iter().map(|h| h.id.to_string()).collect();
    assert_eq!(expected.len(), 5);
    let (receiver, url) = start_receiver(Some(2)).await;
    // two instances deliver the same outbox at the same time
    let second = Store::connect(&db.url).await.unwrap();
    let notifiers =
        [Notifier::new(store.clone(), options(&url, 10)).unwrap(), Notifier::new(second, options(&url, 10)).unwrap()];
    drive(store, &notifiers, |c| c.delivered == 5).await;

    let accepted = receiver.accepted.lock().unwrap().clone();
    let keys: Vec<String> = accepted.iter().map(|b| b["idempotency_key"].as_str().unwrap().to_owned()).collect();
    assert_eq!(keys.len(), 5, "each event accepted once: {keys:?}");
    assert_eq!(keys.iter().cloned().collect::<HashSet<_>>(), expected);
    let attempts = receiver.attempts.lock().unwrap().clone();
    assert!(attempts.values().all(|n| *n == 3), "two refusals then one acceptance per key: {attempts:?}");
    for body in &accepted {
        assert_eq!(body["feature"], FEATURE);
        assert_eq!(body["level"], "info");
        assert!(body["text"].as_str().unwrap().starts_with(":information_source: [INFO] `alerts_feature`"), "{body}");
    }
    for e in all_events(store).await {
        assert_eq!(e.state, AlertState::Delivered);
        assert_eq!(e.attempts, 3);
        assert_eq!(e.delivered_targets.len(), 1);
        assert!(!e.delivered_targets[0].contains("secret"), "the outbox keeps a digest, never the URL");
    }
}

async fn events_survive_a_restart_and_a_crash_mid_delivery(db: &TestDatabase) {
    {
        // an instance writes events and stops before delivering any
        let first = Store::connect(&db.url).await.unwrap();
        first.ensure_config(FEATURE, "tester").await.unwrap();
        first.apply_change(FEATURE, &req(Change::SetPercentage(30))).await.unwrap();
        // and another crashes after leasing the events for a second, mid-delivery
        let now = Utc::now();
        let leased = first.claim_alert_events(now, now + TimeDelta::seconds(1), 100).await.unwrap();
        assert_eq!(leased.len(), 2);
        first.close().await;
    }
    let restarted = Store::connect(&db.url).await.unwrap();
    let (receiver, url) = start_receiver(Some(0)).await;
    let notifier = Notifier::new(restarted.clone(), options(&url, 10)).unwrap();
    // still leased: nothing is posted twice at the same time
    let report = notifier.run_once().await.unwrap();
    assert_eq!(report.claimed, 0, "a leased event is not claimed before its lease ends");
    drive(&restarted, &[notifier], |c| c.delivered == 2).await;
    let kinds: Vec<String> =
        receiver.accepted.lock().unwrap().iter().map(|b| b["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&"created".to_owned()) && kinds.contains(&"updated".to_owned()), "{kinds:?}");
    restarted.close().await;
}

async fn a_webhook_that_always_refuses_dead_letters_the_event_until_retried(db: &TestDatabase) {
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    let (receiver, url) = start_receiver(None).await;
    let notifier = Notifier::new(store.clone(), options(&url, 3)).unwrap();
    drive(store, std::slice::from_ref(&notifier), |c| c.dead == 1).await;
    let dead = store.list_alert_events(Some(AlertState::Dead), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    let error = dead[0].last_error.clone().unwrap();
    assert!(error.contains("500"), "{error}");
    assert!(!error.contains("secret-token"), "errors never show the webhook's path: {error}");
    assert_eq!(receiver.attempts.lock().unwrap().values().sum::<usize>(), 3);
    // a dead event is not retried by itself
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(notifier.run_once().await.unwrap().claimed, 0);
    // requeued: retried from zero attempts
    assert!(store.retry_alert_event(dead[0].idempotency_key).await.unwrap());
    assert!(!store.retry_alert_event(dead[0].idempotency_key).await.unwrap(), "only a dead event is requeued");
    let pending = store.list_alert_events(Some(AlertState::Pending), 10).await.unwrap();
    assert_eq!((pending.len(), pending[0].attempts), (1, 0));
}
