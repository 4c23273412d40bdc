//! The store conformance suite: every test body is written once and runs against SQLite
//! (a temporary file) and Postgres (a fresh database on the server of `DATABASE_URL`).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p rollout --test store_conformance`
//! Without `DATABASE_URL` the Postgres half prints `SKIPPED` — or fails when `CI=true`.

use chrono::{TimeDelta, Utc};
use rollout::store::recorder::{aggregate, MetricsRecorder, Outcome};
use rollout::store::testing::TestDatabase;
use rollout::store::{Backend, Change, ChangeRequest, ConfigPatch, HistoryAction, Store, StoreError, StoreOptions};
use rollout_policy::{Processor, RepositoryStats, Strategy};
use std::collections::HashSet;
use uuid::Uuid;

const FEATURE: &str = "hybrid_progressive_capture";

/// The Postgres URL for tests; `None` (with a loud line) when unset outside CI.
fn pg_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but DATABASE_URL does not name a Postgres database: the Postgres half of `{test}` cannot run"
            );
            // written to the stream itself, past the test harness's capture, so it shows
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED {test} on postgres (set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test)\n")
                    .as_bytes(),
            );
            None
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let db = rollout::store::testing::TestDatabase::sqlite().await.unwrap();
                super::$name(&db).await;
                db.cleanup().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(url) = super::pg_url(stringify!($name)) else { return };
                let options = rollout::store::StoreOptions { max_connections: 20, ..Default::default() };
                let db = rollout::store::testing::TestDatabase::postgres_with(&url, &options).await.unwrap();
                super::$name(&db).await;
                db.cleanup().await;
            }
        }
    )*};
}

conformance!(
    seed_row_is_idempotent_and_feature_unique,
    strategy_has_a_check,
    every_change_writes_history_with_true_values,
    failed_history_write_rolls_back_the_change,
    concurrent_whitelist_edits_are_all_kept,
    concurrent_exclusion_edits_are_all_kept,
    ids_are_validated_and_owner_name_resolved,
    ensure_config_creates_once,
    group_commit_16_by_2000_is_exact,
    naive_concurrent_upserts_lose_nothing,
    outcomes_for_unknown_repositories_are_recorded,
    state_change_starts_a_new_bucket,
    rollback_is_conditional,
    categories_and_repositories_round_trip,
    policy_versions_activate_and_revert,
    updated_at_is_maintained,
);

fn seed_sql(store: &Store) -> String {
    let text = match store.backend() {
        Backend::Postgres => include_str!("../../migrations/postgres/20250710010000_rollout_infrastructure.sql"),
        Backend::Sqlite => include_str!("../../migrations/sqlite/20250710010000_rollout_infrastructure.sql"),
    };
    let start = text.find("-- The seed row").unwrap();
    text[start..].to_owned()
}

async fn exec(store: &Store, sql: &str) -> Result<u64, sqlx::Error> {
    match store {
        Store::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|r| r.rows_affected()),
        Store::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|r| r.rows_affected()),
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn history_count(store: &Store) -> i64 {
    count(store, "SELECT count(*) FROM rollout_history").await
}

/// Bug 5: a second run of the seed made a second configuration.
async fn seed_row_is_idempotent_and_feature_unique(db: &TestDatabase) {
    let store = &db.store;
    store.migrate().await.unwrap();
    exec(store, &seed_sql(store)).await.unwrap();
    exec(store, &seed_sql(store)).await.unwrap();
    assert_eq!(count(store, "SELECT count(*) FROM rollout_configuration").await, 1);
    assert_eq!(count(store, "SELECT count(*) FROM rollout_history WHERE action = 'created'").await, 1);
    let dup =
        exec(store, "INSERT INTO rollout_configuration (feature_name) VALUES ('hybrid_progressive_capture')").await;
    assert!(dup.is_err(), "a second row with the same feature_name must be refused");
    let config = store.get_config(FEATURE).await.unwrap();
    assert_eq!(config.config.rollout_percentage, 0);
    assert!(config.config.is_active);
    assert_eq!(config.config.rollout_strategy, Strategy::Percentage);
    assert_eq!(config.config.min_jobs_for_rollback, 10);
    assert_eq!(config.config.max_error_rate, 5.0);
    assert!(matches!(store.get_config("nope").await, Err(StoreError::UnknownFeature(f)) if f == "nope"));
}

async fn strategy_has_a_check(db: &TestDatabase) {
    let err = exec(&db.store, "UPDATE rollout_configuration SET rollout_strategy = 'random'").await;
    assert!(err.is_err(), "an unknown strategy must be refused by the database");
    let err = exec(&db.store, "UPDATE rollout_configuration SET rollout_percentage = 101").await;
    assert!(err.is_err(), "a percentage above 100 must be refused by the database");
    let err = exec(&db.store, "INSERT INTO rollout_history (action) VALUES ('made_up')").await;
    assert!(err.is_err(), "an unknown history action must be refused by the database");
}

fn req(change: Change) -> ChangeRequest {
    ChangeRequest::new(change, Some("test".into()), "tester")
}

/// Bug 8: the stop logged a percentage it never set; resume wrote no history.
async fn every_change_writes_history_with_true_values(db: &TestDatabase) {
    let store = &db.store;
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let steps: Vec<(Change, HistoryAction, i32, i32)> = vec![
        (Change::SetPercentage(25), HistoryAction::Updated, 0, 25),
        (Change::EmergencyStop, HistoryAction::EmergencyStop, 25, 25),
        (Change::Resume, HistoryAction::Resume, 25, 25),
        (Change::SetAutoRollback(false), HistoryAction::Updated, 25, 25),
        (Change::WhitelistAdd(vec![a, b]), HistoryAction::WhitelistAdd, 25, 25),
        (Change::WhitelistRemove(vec![a]), HistoryAction::WhitelistRemove, 25, 25),
        (Change::ExcludeAdd(vec![a]), HistoryAction::ExcludeAdd, 25, 25),
        (Change::ExcludeRemove(vec![a]), HistoryAction::ExcludeRemove, 25, 25),
        (
            Change::Update(ConfigPatch { rollout_strategy: Some(Strategy::RepositorySize), ..Default::default() }),
            HistoryAction::Updated,
            25,
            25,
        ),
        (Change::SetPercentage(50), HistoryAction::Updated, 25, 50),
    ];
    for (change, action, prev, new) in steps {
        let out = store.apply_change(FEATURE, &req(change.clone())).await.unwrap();
        assert!(out.applied, "{change:?}");
        let h = out.history.unwrap();
        assert_eq!(h.action, action, "{change:?}");
        assert_eq!((h.previous_percentage, h.new_percentage), (Some(prev), Some(new)), "{change:?}");
        assert_eq!(h.triggered_by.as_deref(), Some("tester"));
        let newest = store.history(FEATURE, 1).await.unwrap();
        assert_eq!(newest[0].id, h.id, "history is newest first");
    }
    let history = store.history(FEATURE, 100).await.unwrap();
    let stop = history.iter().find(|h| h.action == HistoryAction::EmergencyStop).unwrap();
    assert_eq!(stop.metadata["previous"]["emergency_stop"], false);
    assert_eq!(stop.metadata["new"]["emergency_stop"], true);
    assert!(stop.metadata["new"].get("rollout_percentage").is_none(), "the stop does not change the percentage");
    let resume = history.iter().find(|h| h.action == HistoryAction::Resume).unwrap();
    assert_eq!(resume.metadata["new"]["emergency_stop"], false);
    let config = store.get_config(FEATURE).await.unwrap().config;
    assert_eq!(config.target_repositories, vec![b.to_string()]);
    assert!(config.excluded_repositories.is_empty());
    assert!(!config.auto_rollback_enabled && !config.emergency_stop);
    assert_eq!(config.rollout_strategy, Strategy::RepositorySize);
    assert_eq!(config.rollout_percentage, 50);
    let add = history.iter().find(|h| h.action == HistoryAction::WhitelistAdd).unwrap();
    assert_eq!(add.metadata["requested"], serde_json::json!([a.to_string(), b.to_string()]));
    assert_eq!(add.metadata["new"]["target_repositories"], serde_json::json!([a.to_string(), b.to_string()]));
    // the seed row plus ten changes
    assert_eq!(history.len(), 11);
}

/// Bug 8: a failed history write was ignored while the change stayed.
async fn failed_history_write_rolls_back_the_change(db: &TestDatabase) {
    let store = &db.store;
    let before = history_count(store).await;
    let request = ChangeRequest::new(Change::SetPercentage(40), None, "x".repeat(200));
    let err = store.apply_change(FEATURE, &request).await.unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }), "{err}");
    assert!(err.to_string().contains(FEATURE), "the error names the feature: {err}");
    assert_eq!(store.get_config(FEATURE).await.unwrap().config.rollout_percentage, 0);
    assert_eq!(history_count(store).await, before);
}

/// Bug 7: whitelist edits rewrote the whole array after a read.
async fn concurrent_whitelist_edits_are_all_kept(db: &TestDatabase) {
    concurrent_set_edits(&db.store, true).await;
}

async fn concurrent_exclusion_edits_are_all_kept(db: &TestDatabase) {
    concurrent_set_edits(&db.store, false).await;
}

async fn concurrent_set_edits(store: &Store, whitelist: bool) {
    let ids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let store = store.clone();
        tasks.spawn(async move {
            let change = if whitelist { Change::WhitelistAdd(vec![id]) } else { Change::ExcludeAdd(vec![id]) };
            store.apply_change(FEATURE, &req(change)).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let config = store.get_config(FEATURE).await.unwrap().config;
    let list = if whitelist { config.target_repositories } else { config.excluded_repositories };
    let got: HashSet<String> = list.iter().cloned().collect();
    let want: HashSet<String> = ids.iter().map(Uuid::to_string).collect();
    assert_eq!(got, want);
    assert_eq!(list.len(), 8, "no duplicates");
    let action = if whitelist { "whitelist_add" } else { "exclude_add" };
    assert_eq!(count(store, &format!("SELECT count(*) FROM rollout_history WHERE action = '{action}'")).await, 8);
    // and 8 concurrent removals leave nothing
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let store = store.clone();
        tasks.spawn(async move {
            let change = if whitelist { Change::WhitelistRemove(vec![id]) } else { Change::ExcludeRemove(vec![id]) };
            store.apply_change(FEATURE, &req(change)).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let config = store.get_config(FEATURE).await.unwrap().config;
    assert!(config.target_repositories.is_empty() && config.excluded_repositories.is_empty());
}

/// Bug 7: ids were not validated.
async fn ids_are_validated_and_owner_name_resolved(db: &TestDatabase) {
    let store = &db.store;
    let id = store.upsert_repository("Acme", "Widgets", &RepositoryStats::default()).await.unwrap();
    assert_eq!(store.resolve_repository_id("acme/widgets").await.unwrap(), id);
    let upper = id.to_string().to_uppercase();
    assert_eq!(store.resolve_repository_id(&upper).await.unwrap(), id);
    let err = store.resolve_repository_id("not an id").await.unwrap_err();
    assert!(matches!(&err, StoreError::InvalidRepositoryId(s) if s == "not an id"), "{err}");
    assert!(err.to_string().contains("`not an id`"));
    let err = store.resolve_repository_id("ghost/repo").await.unwrap_err();
    assert!(matches!(&err, StoreError::UnknownRepository(s) if s == "ghost/repo"), "{err}");
    let ids =
        store.resolve_repository_ids(&["acme/widgets".into(), id.to_string(), "ACME/WIDGETS".into()]).await.unwrap();
    assert_eq!(ids, vec![id]);
}

async fn ensure_config_creates_once(db: &TestDatabase) {
    let store = &db.store;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.spawn(async move { store.ensure_config("other_feature", "test").await.unwrap().id });
    }
    let mut ids = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        ids.insert(r.unwrap());
    }
    assert_eq!(ids.len(), 1);
    let history = store.history("other_feature", 10).await.unwrap();
    assert_eq!(history.iter().filter(|h| h.action == HistoryAction::Created).count(), 1);
    assert_eq!(store.list_configs().await.unwrap().len(), 2);
}

fn outcome(config_id: Uuid, repo: Uuid, processor: Processor, success: bool, ms: Option<u64>) -> Outcome {
    Outcome {
        config_id,
        repository_id: repo,
        processor,
        success,
        processing_time_ms: ms,
        error_message: (!success).then(|| "network timeout".to_owned()),
        at: Utc::now(),
    }
}

/// Bug 6: read-modify-write metrics lost increments, duplicated buckets, and the mean was 0.
async fn group_commit_16_by_2000_is_exact(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let repos: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let recorder = MetricsRecorder::spawn(store.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16u64 {
        let recorder = recorder.clone();
        let repos = repos.clone();
        tasks.spawn(async move {
            for i in 0..2000u64 {
                let n = task * 2000 + i;
                let repo = repos[(n % 5) as usize];
                let processor = if n % 2 == 0 { Processor::Inngest } else { Processor::GithubActions };
                let ms = (n % 3 != 0).then_some(n % 1000);
                recorder.record(outcome(config_id, repo, processor, n % 7 != 0, ms)).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // what each bucket key must hold
    let (mut total, mut errors, mut tsum, mut tcnt) = (0i64, 0i64, 0i64, 0i64);
    for n in 0..32_000u64 {
        total += 1;
        errors += i64::from(n % 7 == 0);
        if n % 3 != 0 {
            tsum += (n % 1000) as i64;
            tcnt += 1;
        }
    }
    let buckets = store.list_buckets(config_id).await.unwrap();
    let keys: HashSet<_> = buckets.iter().map(|b| (b.repository_id, b.processor, b.window_start)).collect();
    assert_eq!(keys.len(), buckets.len(), "no duplicate buckets");
    let hours: HashSet<_> = buckets.iter().map(|b| b.window_start).collect();
    assert_eq!(buckets.len(), 10 * hours.len(), "one bucket per repository, processor and hour");
    assert_eq!(buckets.iter().map(|b| b.total_jobs).sum::<i64>(), total);
    assert_eq!(buckets.iter().map(|b| b.error_count).sum::<i64>(), errors);
    assert_eq!(buckets.iter().map(|b| b.success_count).sum::<i64>(), total - errors);
    assert_eq!(buckets.iter().map(|b| b.total_processing_time_ms).sum::<i64>(), tsum);
    assert_eq!(buckets.iter().map(|b| b.timed_jobs).sum::<i64>(), tcnt);
    for b in &buckets {
        let mean = b.total_processing_time_ms as f64 / b.timed_jobs as f64;
        let stored = b.average_processing_time.unwrap();
        assert!((stored - (mean * 100.0).round() / 100.0).abs() < 0.006, "stored mean {stored} vs exact {mean}");
        assert!(stored > 0.0, "the mean is not 0");
        assert_eq!(b.last_error_message.as_deref(), Some("network timeout"));
        assert!(b.last_error_at.is_some());
    }
}

/// One statement per outcome from 16 concurrent writers: the upsert alone loses nothing.
async fn naive_concurrent_upserts_lose_nothing(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let repo = Uuid::new_v4();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..50u64 {
                let o = outcome(config_id, repo, Processor::Inngest, i % 5 != 0, Some(10));
                store.upsert_metrics(&aggregate([&o])).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let buckets = store.list_buckets(config_id).await.unwrap();
    assert_eq!(buckets.iter().map(|b| b.total_jobs).sum::<i64>(), 800);
    assert_eq!(buckets.iter().map(|b| b.error_count).sum::<i64>(), 160);
    assert!(buckets.iter().all(|b| b.average_processing_time == Some(10.0)));
}

async fn outcomes_for_unknown_repositories_are_recorded(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let recorder = MetricsRecorder::spawn(store.clone());
    recorder.record(outcome(config_id, Uuid::new_v4(), Processor::GithubActions, false, None)).await.unwrap();
    let buckets = store.list_buckets(config_id).await.unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].average_processing_time, None);
    // an outcome for a configuration that does not exist fails the caller
    let err = recorder.record(outcome(Uuid::new_v4(), Uuid::new_v4(), Processor::Inngest, true, None)).await;
    assert!(err.is_err());
}

/// A change of percentage inside an hour starts a new bucket at the change, so the health
/// window can begin exactly there.
async fn state_change_starts_a_new_bucket(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let repo = Uuid::new_v4();
    let mut o = outcome(config_id, repo, Processor::Inngest, false, None);
    o.at = Utc::now() - TimeDelta::milliseconds(5);
    store.upsert_metrics(&aggregate([&o])).await.unwrap();
    let change = store.apply_change(FEATURE, &req(Change::SetPercentage(10))).await.unwrap();
    let changed_at = change.after.state_changed_at;
    assert!(changed_at > change.before.state_changed_at);
    let mut o2 = outcome(config_id, repo, Processor::Inngest, true, None);
    o2.at = changed_at + TimeDelta::milliseconds(1);
    store.upsert_metrics(&aggregate([&o2])).await.unwrap();
    let buckets = store.list_buckets(config_id).await.unwrap();
    let after: Vec<_> = buckets.iter().filter(|b| b.window_start >= changed_at).collect();
    assert_eq!(after.len(), 1, "{buckets:?}");
    assert_eq!((after[0].success_count, after[0].error_count), (1, 0));
    let window = store.metrics_window(config_id, Utc::now() - TimeDelta::hours(24), changed_at).await.unwrap();
    assert_eq!(window.iter().map(|w| w.total_jobs).sum::<u64>(), 1);
    assert_eq!(window.iter().map(|w| w.error_count).sum::<u64>(), 0);
    let all = store
        .metrics_window(config_id, Utc::now() - TimeDelta::hours(24), changed_at - TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!(all.iter().map(|w| w.total_jobs).sum::<u64>(), 2);
    let errors = store
        .error_messages(config_id, Utc::now() - TimeDelta::hours(24), changed_at - TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!(errors, vec![(Some("network timeout".to_owned()), 1)]);
}

/// Bug 9: the rollback re-fired on every check.
async fn rollback_is_conditional(db: &TestDatabase) {
    let store = &db.store;
    let out = store.apply_change(FEATURE, &req(Change::Rollback)).await.unwrap();
    assert!(!out.applied && out.history.is_none(), "nothing to roll back at 0%");
    store.apply_change(FEATURE, &req(Change::SetPercentage(30))).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.spawn(async move { store.apply_change(FEATURE, &req(Change::Rollback)).await.unwrap().applied });
    }
    let mut applied = 0;
    while let Some(r) = tasks.join_next().await {
        applied += usize::from(r.unwrap());
    }
    assert_eq!(applied, 1);
    assert_eq!(count(store, "SELECT count(*) FROM rollout_history WHERE action = 'rollback'").await, 1);
    let h = store.history(FEATURE, 1).await.unwrap().remove(0);
    assert_eq!((h.action, h.previous_percentage, h.new_percentage), (HistoryAction::Rollback, Some(30), Some(0)));
    // a stopped rollout is not rolled back either
    store.apply_change(FEATURE, &req(Change::SetPercentage(30))).await.unwrap();
    store.apply_change(FEATURE, &req(Change::EmergencyStop)).await.unwrap();
    assert!(!store.apply_change(FEATURE, &req(Change::Rollback)).await.unwrap().applied);
}

async fn categories_and_repositories_round_trip(db: &TestDatabase) {
    let store = &db.store;
    let stats = RepositoryStats { star_count: 40, contributor_count: 3, pr_count: 90 };
    let id = store.upsert_repository("o", "r", &stats).await.unwrap();
    assert_eq!(store.repository_stats(id).await.unwrap(), Some(stats));
    assert_eq!(store.repository_stats(Uuid::new_v4()).await.unwrap(), None);
    let c = rollout_policy::categorize(&stats);
    let row = rollout::store::CategoryRow {
        repository_id: id,
        category: c.category,
        priority_level: c.priority_level,
        is_test_repository: c.is_test_repository,
        stats,
        monthly_activity_score: c.monthly_activity_score,
    };
    let orphan = rollout::store::CategoryRow { repository_id: Uuid::new_v4(), ..row };
    store.upsert_categories(&[row, orphan]).await.unwrap();
    store.upsert_categories(&[row]).await.unwrap();
    let mut got = store.list_categories().await.unwrap();
    got.sort_by_key(|r| r.repository_id != id);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], row);
    let ids: HashSet<Uuid> = store.list_repository_ids().await.unwrap().into_iter().collect();
    assert_eq!(ids, HashSet::from([id, orphan.repository_id]));
    assert_eq!(store.list_repository_stats().await.unwrap(), vec![(id, stats)]);
}

async fn policy_versions_activate_and_revert(db: &TestDatabase) {
    let store = &db.store;
    let v = |n: u8| rollout::store::NewPolicyVersion {
        bytes: vec![n; 10],
        sha256: format!("{:064x}", n),
        name: Some("p".into()),
        semver: format!("0.{n}.0"),
        notes: None,
        uploaded_by: Some("me".into()),
    };
    store.put_policy_version(&v(1)).await.unwrap();
    let row = store.put_policy_version(&v(2)).await.unwrap();
    assert_eq!((row.size, row.active), (10, false));
    assert_eq!(store.activate_policy_version(&v(1).sha256, false, None, "me").await.unwrap(), None);
    assert_eq!(store.activate_policy_version(&v(2).sha256, false, None, "me").await.unwrap(), Some(v(1).sha256));
    assert_eq!(store.activate_policy_version(&v(1).sha256, true, Some("bad"), "me").await.unwrap(), Some(v(2).sha256));
    let active: Vec<_> = store.list_policy_versions().await.unwrap().into_iter().filter(|p| p.active).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].sha256, v(1).sha256);
    assert_eq!(store.policy_bytes(&v(2).sha256).await.unwrap(), Some(vec![2; 10]));
    let err = store.activate_policy_version(&format!("{:064x}", 9), false, None, "me").await.unwrap_err();
    assert!(matches!(err, StoreError::UnknownPolicy(_)));
    let history = store.history(FEATURE, 10).await.unwrap();
    assert_eq!(history[0].action, HistoryAction::PolicyReverted);
    assert_eq!(history[1].action, HistoryAction::PolicyActivated);
}

async fn updated_at_is_maintained(db: &TestDatabase) {
    let store = &db.store;
    let before = store.get_config(FEATURE).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    exec(store, "UPDATE rollout_configuration SET monitoring_window_hours = 12").await.unwrap();
    let after = store.get_config(FEATURE).await.unwrap();
    assert!(after.updated_at > before.updated_at, "{:?} vs {:?}", after.updated_at, before.updated_at);
    assert_eq!(after.created_at, before.created_at);
}

#[tokio::test]
async fn unsupported_url_is_named() {
    let err = Store::connect("mysql://u:secret@h/db").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)));
    assert!(err.to_string().contains("mysql://u:***@h/db"), "{err}");
    assert!(!err.to_string().contains("secret"));
    let _ = StoreOptions::default();
}

/// Row level security (Postgres only): every table has it on; a non-service role reads and
/// cannot write — neither for lack of privileges (`rollout_reader`) nor, given privileges,
/// past the policies (a probe role granted INSERT/UPDATE but not `rollout_service`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_reads_for_everyone_writes_for_the_service_role() {
    let Some(url) = pg_url("row_level_security") else { return };
    let db = TestDatabase::postgres(&url).await.unwrap();
    let Store::Postgres(pool) = &db.store else { panic!("postgres expected") };
    let tables = [
        "rollout_configuration",
        "repository_categories",
        "rollout_metrics",
        "rollout_history",
        "policy_versions",
        "repositories",
    ];
    for t in tables {
        let on: bool = sqlx::query_scalar("SELECT relrowsecurity FROM pg_class WHERE relname = $1 AND relkind = 'r'")
            .bind(t)
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(on, "row level security is off on {t}");
    }

    // rollout_reader: reads, cannot insert or update
    for t in tables {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL ROLE rollout_reader").execute(&mut *tx).await.unwrap();
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *tx).await.unwrap();
        if t == "rollout_configuration" {
            assert_eq!(n, 1, "the reader sees the seed row");
        }
        tx.rollback().await.unwrap();
    }
    let writes = [
        "INSERT INTO rollout_history (action) VALUES ('updated')",
        "UPDATE rollout_configuration SET rollout_percentage = 50",
        "INSERT INTO rollout_metrics (rollout_config_id, repository_id, processor_type, metrics_window_start, metrics_window_end) \
         SELECT id, gen_random_uuid(), 'inngest', now(), now() + interval '1 hour' FROM rollout_configuration",
        "DELETE FROM rollout_history",
    ];
    for sql in writes {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SET LOCAL ROLE rollout_reader").execute(&mut *tx).await.unwrap();
        let err = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
        tx.rollback().await.unwrap();
    }

    // rollout_service: writes
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE rollout_service").execute(&mut *tx).await.unwrap();
    let done = sqlx::query("UPDATE rollout_configuration SET rollout_percentage = 50").execute(&mut *tx).await.unwrap();
    assert_eq!(done.rows_affected(), 1);
    sqlx::query("INSERT INTO rollout_history (action) VALUES ('updated')").execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();

    // a role with privileges but outside rollout_service is stopped by the policies
    let probe = format!("rollout_probe_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {probe} NOLOGIN")).execute(pool).await.unwrap();
    sqlx::query(&format!("GRANT INSERT, UPDATE ON rollout_configuration, rollout_history TO {probe}"))
        .execute(pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(&format!("SET LOCAL ROLE {probe}")).execute(&mut *tx).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rollout_configuration").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(n, 1, "everyone reads");
    let done = sqlx::query("UPDATE rollout_configuration SET rollout_percentage = 50").execute(&mut *tx).await.unwrap();
    assert_eq!(done.rows_affected(), 0, "no policy lets this role update a row");
    let err =
        sqlx::query("INSERT INTO rollout_history (action) VALUES ('updated')").execute(&mut *tx).await.unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.unwrap();
    sqlx::query(&format!("REVOKE ALL ON rollout_configuration, rollout_history FROM {probe}"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {probe}")).execute(pool).await.unwrap();
    assert_eq!(db.store.get_config(FEATURE).await.unwrap().config.rollout_percentage, 0);
    db.cleanup().await;
}
