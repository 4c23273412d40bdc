//! The store conformance suite: every test body is written once and runs against SQLite
//! (a temporary file) and Postgres (a fresh database on the server of `DATABASE_URL`).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p rollout --test store_conformance`
//! Without `DATABASE_URL` the Postgres half prints `SKIPPED` — or fails when `CI=true`.

use chrono::{TimeDelta, Utc};
use rollout::manager::latency::{bucket_of, LatencyHistogram};
use rollout::store::recorder::{aggregate, MetricsRecorder, Outcome};
use rollout::store::testing::TestDatabase;
use rollout::store::{
    Backend, Change, ChangeRequest, ConfigPatch, ErrorKind, HistoryAction, MetricsBatch, Skipped, Store, StoreError,
    StoreOptions,
};
use rollout_policy::{Processor, RepositoryStats, Strategy};
use std::collections::HashSet;
use uuid::Uuid;

const FEATURE: &str = "hybrid_progressive_capture";

/// The Postgres URL for tests; `None` (with a loud line) when unset outside CI.
use crate::support::pg_url;

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
    categorisations_beyond_one_read_chunk_are_all_listed,
    policy_versions_activate_and_revert,
    updated_at_is_maintained,
    rollback_is_compare_and_set_on_the_judged_window,
    a_change_of_nothing_writes_nothing,
    sums_saturate_instead_of_overflowing,
    a_retried_submission_is_counted_once,
    input_errors_are_classified_as_input,
    listen_notify_and_migration_check,
    latency_buckets_give_the_expected_percentiles,
    concurrent_recorders_lose_no_latency_increments,
);

fn seed_sql(store: &Store) -> String {
    let text = match store.backend() {
        Backend::Postgres => include_str!("../../../migrations/postgres/20250710010000_rollout_infrastructure.sql"),
        Backend::Sqlite => include_str!("../../../migrations/sqlite/20250710010000_rollout_infrastructure.sql"),
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
        assert_eq!(out.after.version, out.before.version + 1, "{change:?}: one change, one version");
        assert_eq!(store.get_config(FEATURE).await.unwrap(), out.after, "{change:?}: the row as written");
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
    assert!(matches!(err.kind(), ErrorKind::Input { .. }), "a triggered_by too long is the input's fault: {err}");
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
    let judged_since = store.get_config(FEATURE).await.unwrap().state_changed_at;
    let out = store.apply_change(FEATURE, &req(Change::Rollback { judged_since, judged_percentage: 0 })).await.unwrap();
    assert!(!out.applied && out.history.is_none(), "nothing to roll back at 0%");
    assert_eq!(out.skipped, Some(Skipped::AlreadyAtZero));
    let judged_since =
        store.apply_change(FEATURE, &req(Change::SetPercentage(30))).await.unwrap().after.state_changed_at;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            let rollback = Change::Rollback { judged_since, judged_percentage: 30 };
            store.apply_change(FEATURE, &req(rollback)).await.unwrap().applied
        });
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
    let judged_since = store.apply_change(FEATURE, &req(Change::EmergencyStop)).await.unwrap().after.state_changed_at;
    let out =
        store.apply_change(FEATURE, &req(Change::Rollback { judged_since, judged_percentage: 30 })).await.unwrap();
    assert!(!out.applied);
    assert_eq!(out.skipped, Some(Skipped::Stopped));
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

/// `list_categories` reads in keyset chunks of 50,000 (a single `SELECT` of a million rows
/// ran past the statement timeout at startup): more rows than two chunks, all listed once,
/// including the chunk boundaries.
async fn categorisations_beyond_one_read_chunk_are_all_listed(db: &TestDatabase) {
    let store = &db.store;
    let stats = RepositoryStats { star_count: 5, contributor_count: 1, pr_count: 2 };
    let c = rollout_policy::categorize(&stats);
    let rows: Vec<rollout::store::CategoryRow> = (0..100_001u128)
        .map(|i| rollout::store::CategoryRow {
            repository_id: Uuid::from_u128(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)),
            category: c.category,
            priority_level: c.priority_level,
            is_test_repository: c.is_test_repository,
            stats,
            monthly_activity_score: c.monthly_activity_score,
        })
        .collect();
    for chunk in rows.chunks(10_000) {
        store.upsert_categories(chunk).await.unwrap();
    }
    let got = store.list_categories().await.unwrap();
    assert_eq!(got.len(), rows.len());
    let ids: HashSet<Uuid> = got.iter().map(|r| r.repository_id).collect();
    assert_eq!(ids, rows.iter().map(|r| r.repository_id).collect::<HashSet<Uuid>>());
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
    assert_eq!(after.version, before.version + 1, "an update outside the store bumps the version once");
    exec(store, "UPDATE rollout_configuration SET metadata = '{\"k\": 1}', updated_at = '2030-01-01T00:00:00.000000Z'")
        .await
        .unwrap();
    let set = store.get_config(FEATURE).await.unwrap();
    assert_eq!(set.version, before.version + 2, "also when the statement sets updated_at itself");
    if store.backend() == Backend::Sqlite {
        // (the Postgres trigger always stamps the transaction's start)
        assert_eq!(set.updated_at.to_rfc3339(), "2030-01-01T00:00:00+00:00", "a stamp the statement set is kept");
    }
}

#[tokio::test]
async fn unsupported_url_is_named() {
    let err = Store::connect("mysql://u:secret@h/db").await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl(_)));
    assert!(err.to_string().contains("mysql://u:***@h/db"), "{err}");
    assert!(!err.to_string().contains("secret"));
    assert_eq!(err.kind(), ErrorKind::Input { field: Some("database_url".into()) });
}

/// The connection errors callers map to exit statuses and HTTP answers.
#[tokio::test]
async fn connect_errors_are_classified() {
    let err = Store::connect("postgres://u@localhost:notaport/db").await.unwrap_err();
    assert!(matches!(err, StoreError::Connect { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Input { field: Some("database_url".into()) }, "{err}");
    // nothing listens on port 1: refused at once, or given up after the acquire timeout
    let options = StoreOptions { acquire_timeout: std::time::Duration::from_secs(2), ..StoreOptions::default() };
    let err = Store::connect_with("postgres://u@127.0.0.1:1/db", &options).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}

/// Row level security (Postgres only): every table has it on; a non-service role reads and
/// cannot write — neither for lack of privileges (`rollout_reader`) nor, given privileges,
/// past the policies (a probe role granted INSERT/UPDATE but not `rollout_service`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_reads_for_everyone_writes_for_the_service_role() {
    let Some(url) = pg_url("row_level_security") else { return };
    let db = TestDatabase::postgres(&url).await.unwrap();
    let Store::Postgres(pool) = &db.store else { panic!("postgres expected") };
    // every table of the schema, so a table added later without the policies fails here
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() >= 7 && tables.iter().any(|t| t == "rollout_alert_events"), "{tables:?}");
    for t in &tables {
        let on: bool = sqlx::query_scalar("SELECT relrowsecurity FROM pg_class WHERE relname = $1 AND relkind = 'r'")
            .bind(t)
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(on, "row level security is off on {t}");
    }

    // rollout_reader: reads, cannot insert or update
    for t in &tables {
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

/// SPEC §2.5: the rollback applies only to the configuration whose window was judged; a
/// ramp that committed between the evaluation and the rollback stays.
async fn rollback_is_compare_and_set_on_the_judged_window(db: &TestDatabase) {
    let store = &db.store;
    store.apply_change(FEATURE, &req(Change::SetPercentage(30))).await.unwrap();
    // the health check reads the configuration and judges its window ...
    let judged = store.get_config(FEATURE).await.unwrap();
    // ... meanwhile an operator ramps up
    store.apply_change(FEATURE, &req(Change::SetPercentage(50))).await.unwrap();
    let rollback = Change::Rollback { judged_since: judged.state_changed_at, judged_percentage: 30 };
    let out = store.apply_change(FEATURE, &req(rollback)).await.unwrap();
    assert!(!out.applied, "the rollback judged a window that is gone");
    assert_eq!(out.skipped, Some(Skipped::WindowChanged));
    assert!(out.history.is_none());
    assert_eq!(store.get_config(FEATURE).await.unwrap().config.rollout_percentage, 50, "the ramp stays");
    assert_eq!(count(store, "SELECT count(*) FROM rollout_history WHERE action = 'rollback'").await, 0);
    // judged on the ramp's own window, it applies
    let judged = store.get_config(FEATURE).await.unwrap();
    let rollback = Change::Rollback { judged_since: judged.state_changed_at, judged_percentage: 50 };
    let out = store.apply_change(FEATURE, &req(rollback)).await.unwrap();
    assert!(out.applied);
    assert_eq!(out.after.config.rollout_percentage, 0);
    // the rollback's hold is stored, and an operator's percentage ends it
    assert!(store.get_config(FEATURE).await.unwrap().rolled_back);
    let set = store.apply_change(FEATURE, &req(Change::SetPercentage(0))).await.unwrap();
    assert!(set.applied && !set.after.rolled_back, "{set:?}");
    assert!(!store.get_config(FEATURE).await.unwrap().rolled_back);
    assert_eq!(count(store, "SELECT count(*) FROM rollout_history WHERE action = 'rollback'").await, 1);
}

/// Processing times up to i64::MAX ms: neither the bucket's sum, nor Postgres' generated
/// mean, nor the window's sum may overflow (one bad value would fail a whole group commit).
async fn sums_saturate_instead_of_overflowing(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let (repo, other) = (Uuid::new_v4(), Uuid::new_v4());
    let recorder = MetricsRecorder::spawn(store.clone());
    let huge = i64::MAX as u64;
    // one at a time: the second adds to the first's bucket in the database
    recorder.record(outcome(config_id, repo, Processor::Inngest, true, Some(huge))).await.unwrap();
    recorder.record(outcome(config_id, repo, Processor::Inngest, true, Some(huge))).await.unwrap();
    recorder.record(outcome(config_id, other, Processor::Inngest, true, Some(100_000_000))).await.unwrap();
    let since = Utc::now() - TimeDelta::hours(2);
    let window = store.metrics_window(config_id, since, since).await.unwrap();
    assert_eq!(window.iter().map(|w| w.total_jobs).sum::<u64>(), 3);
    assert_eq!(window.iter().map(|w| w.timed_jobs).sum::<u64>(), 3);
    let tsum: u64 = window.iter().map(|w| w.total_processing_time_ms).sum();
    assert_eq!(tsum, i64::MAX as u64, "saturated, not wrapped");
    let buckets = store.list_buckets(config_id).await.unwrap();
    let b = buckets.iter().find(|b| b.repository_id == repo).unwrap();
    assert_eq!(b.total_processing_time_ms, i64::MAX);
    assert!(b.average_processing_time.unwrap() > 4.0e18, "{:?}", b.average_processing_time);
    let b = buckets.iter().find(|b| b.repository_id == other).unwrap();
    assert_eq!(b.average_processing_time, Some(100_000_000.0));
}

/// The outcome batch whose reply was lost is retried under the same key: counted once.
async fn a_retried_submission_is_counted_once(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let repo = Uuid::new_v4();
    let recorder = MetricsRecorder::spawn(store.clone());
    let batch: Vec<Outcome> = (0..3).map(|i| outcome(config_id, repo, Processor::Inngest, i != 0, Some(5))).collect();
    let key = Uuid::new_v4();
    recorder.record_batch(key, batch.clone()).await.unwrap();
    // the retry of the same request
    recorder.record_batch(key, batch.clone()).await.unwrap();
    let total: i64 = store.list_buckets(config_id).await.unwrap().iter().map(|b| b.total_jobs).sum();
    assert_eq!(total, 3, "the retried submission is counted once");
    // another submission with the same content is another batch
    recorder.record_batch(Uuid::new_v4(), batch.clone()).await.unwrap();
    let total: i64 = store.list_buckets(config_id).await.unwrap().iter().map(|b| b.total_jobs).sum();
    assert_eq!(total, 6);
    // at the store: one key twice in one group, and a group with an applied key
    let b = MetricsBatch { batch_id: Uuid::new_v4(), deltas: aggregate(&batch) };
    let fresh = MetricsBatch { batch_id: Uuid::new_v4(), deltas: aggregate(&batch) };
    assert_eq!(store.upsert_metrics_batches(&[b.clone(), b.clone()]).await.unwrap(), vec![b.batch_id]);
    assert_eq!(store.upsert_metrics_batches(&[b.clone(), fresh.clone()]).await.unwrap(), vec![fresh.batch_id]);
    let total: i64 = store.list_buckets(config_id).await.unwrap().iter().map(|b| b.total_jobs).sum();
    assert_eq!(total, 12);
    // keys are kept for the retention period only
    assert_eq!(store.prune_applied_batches(Utc::now() - TimeDelta::hours(1)).await.unwrap(), 0);
    let pruned = store.prune_applied_batches(Utc::now() + TimeDelta::seconds(1)).await.unwrap();
    assert_eq!(pruned, 4, "the four keys applied above");
    assert_eq!(store.upsert_metrics_batches(std::slice::from_ref(&b)).await.unwrap(), vec![b.batch_id], "forgotten");
}

/// Errors caused by the input are `ErrorKind::Input` (a 4xx / exit 2), not "unreachable".
async fn input_errors_are_classified_as_input(db: &TestDatabase) {
    let store = &db.store;
    let long = "f".repeat(101);
    let err = store.ensure_config(&long, "test").await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Input { .. }), "101-character feature name: {err} → {:?}", err.kind());
    let nul = ChangeRequest::new(Change::SetPercentage(10), Some("a\0b".into()), "tester");
    let result = store.apply_change(FEATURE, &nul).await;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let mut bad = outcome(config_id, Uuid::new_v4(), Processor::Inngest, false, None);
    bad.error_message = Some("a\0b".into());
    let good = outcome(config_id, Uuid::new_v4(), Processor::Inngest, true, None);
    let recorder = MetricsRecorder::spawn(store.clone());
    let bad_key = Uuid::new_v4();
    // submitted together: whether or not they share a group commit, only the bad one fails
    let (recorded, good_recorded) =
        tokio::join!(recorder.record_batch(bad_key, vec![bad]), recorder.record(good.clone()));
    good_recorded.unwrap();
    assert!(store.list_buckets(config_id).await.unwrap().iter().any(|b| b.repository_id == good.repository_id));
    match store.backend() {
        Backend::Postgres => {
            let err = result.unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Input { .. }), "NUL in a reason: {err} → {:?}", err.kind());
            assert_eq!(store.get_config(FEATURE).await.unwrap().config.rollout_percentage, 0);
            let err = recorded.unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Input { .. }), "NUL in an error message: {err} → {:?}", err.kind());
            assert!(
                matches!(&err, StoreError::MetricsRefused { batch_ids, .. } if batch_ids == &vec![bad_key]),
                "the refusal names the submission: {err}"
            );
            assert_eq!(store.list_buckets(config_id).await.unwrap().len(), 1, "nothing of the bad batch was kept");
        }
        Backend::Sqlite => {
            // SQLite keeps text with a NUL byte as given
            assert!(result.unwrap().applied);
            assert_eq!(store.history(FEATURE, 1).await.unwrap()[0].reason.as_deref(), Some("a\0b"));
            recorded.unwrap();
            let b = store.list_buckets(config_id).await.unwrap();
            assert!(b.iter().any(|b| b.last_error_message.as_deref() == Some("a\0b")));
        }
    }
}

/// A change waiting on another's row lock: its transaction started first, so Postgres'
/// `now()` stamps it older although it commits later; a reader ordering by `updated_at`
/// refuses the newer row, ordering by `config_version` installs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_version_orders_changes_that_waited_on_the_row_lock() {
    use sqlx::Connection;
    let Some(url) = pg_url("config_version_orders_changes_that_waited_on_the_row_lock") else { return };
    let db = TestDatabase::postgres(&url).await.unwrap();
    let manager = rollout::manager::Manager::open(
        db.store.clone(),
        std::sync::Arc::new(rollout::engine::NativePolicy::new()),
        FEATURE,
        rollout::manager::OpenOptions::default(),
    )
    .await
    .unwrap();
    let lock = "SELECT id FROM rollout_configuration WHERE feature_name = $1 FOR UPDATE";
    // B starts its transaction first ...
    let mut b = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut b).await.unwrap();
    let b_start: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&mut b).await.unwrap();
    // ... A takes the row lock and changes the row
    let mut a = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut a).await.unwrap();
    sqlx::query(lock).bind(FEATURE).execute(&mut a).await.unwrap();
    let (a_stamp, a_version): (chrono::DateTime<Utc>, i64) = sqlx::query_as(
        "UPDATE rollout_configuration SET rollout_percentage = 20 WHERE feature_name = $1 \
         RETURNING updated_at, config_version",
    )
    .bind(FEATURE)
    .fetch_one(&mut a)
    .await
    .unwrap();
    assert!(a_stamp > b_start);
    // B asks for the lock and waits; once it has it, it waits for `go` before writing
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let b_task = tokio::spawn(async move {
        sqlx::query(lock).bind(FEATURE).execute(&mut b).await.unwrap();
        locked_tx.send(()).unwrap();
        go_rx.await.unwrap();
        sqlx::query("UPDATE rollout_configuration SET rollout_percentage = 30 WHERE feature_name = $1")
            .bind(FEATURE)
            .execute(&mut b)
            .await
            .unwrap();
        sqlx::query("COMMIT").execute(&mut b).await.unwrap();
    });
    wait_for_lock_waiter(&db.store).await;
    sqlx::query("COMMIT").execute(&mut a).await.unwrap();
    locked_rx.await.unwrap();
    // a reader sees A's row
    manager.reload().await.unwrap();
    assert_eq!(manager.effective_config().rollout_percentage.value, 20);
    go_tx.send(()).unwrap();
    b_task.await.unwrap();
    let b_row = db.store.get_config(FEATURE).await.unwrap();
    assert_eq!(b_row.config.rollout_percentage, 30);
    assert!(b_row.updated_at < a_stamp, "the newer row carries the older stamp: ordering by updated_at is wrong");
    assert_eq!(b_row.version, a_version + 1, "the version orders the rows");
    manager.reload().await.unwrap();
    assert_eq!(manager.effective_config().rollout_percentage.value, 30, "the reader installs the newer row");
    db.cleanup().await;
}

/// Poll until some session waits for a lock.
async fn wait_for_lock_waiter(store: &Store) {
    let Store::Postgres(pool) = store else { panic!("postgres expected") };
    for _ in 0..600 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no session ever waited for the lock");
}

/// A row held by another session: the change fails after the lock timeout (no hang), as
/// "unreachable" (retry later), and changes to other features go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_row_times_out_instead_of_hanging() {
    use sqlx::Connection;
    let Some(url) = pg_url("a_locked_row_times_out_instead_of_hanging") else { return };
    let db = TestDatabase::postgres(&url).await.unwrap();
    let store = &db.store;
    store.ensure_config("other_feature", "test").await.unwrap();
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT id FROM rollout_configuration WHERE feature_name = $1 FOR UPDATE")
        .bind(FEATURE)
        .execute(&mut holder)
        .await
        .unwrap();
    let blocked = {
        let store = store.clone();
        tokio::spawn(async move { store.apply_change(FEATURE, &req(Change::SetPercentage(10))).await })
    };
    wait_for_lock_waiter(store).await;
    // another feature is not held up meanwhile
    let other = store.apply_change("other_feature", &req(Change::SetPercentage(10))).await.unwrap();
    assert!(other.applied);
    // generous: only a hang reaches this bound
    let result = tokio::time::timeout(std::time::Duration::from_secs(60), blocked)
        .await
        .expect("the change waited on the row lock without a timeout")
        .unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert_eq!(err.database_code().as_deref(), Some("55P03"), "the lock timeout: {err}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    assert!(store.apply_change(FEATURE, &req(Change::SetPercentage(10))).await.unwrap().applied);
    db.cleanup().await;
}

/// One rule for no-ops at every edge: a change that changes no column writes no history
/// row and reports `applied: false` (a repeated emergency stop wrote a row over HTTP).
async fn a_change_of_nothing_writes_nothing(db: &TestDatabase) {
    let store = &db.store;
    let a = Uuid::new_v4();
    store.apply_change(FEATURE, &req(Change::SetPercentage(20))).await.unwrap();
    store.apply_change(FEATURE, &req(Change::EmergencyStop)).await.unwrap();
    store.apply_change(FEATURE, &req(Change::WhitelistAdd(vec![a]))).await.unwrap();
    let rows = history_count(store).await;
    let before = store.get_config(FEATURE).await.unwrap();
    for change in [
        Change::EmergencyStop,
        Change::SetPercentage(20),
        Change::WhitelistAdd(vec![a]),
        Change::WhitelistRemove(vec![Uuid::new_v4()]),
        Change::ExcludeRemove(vec![a]),
        Change::SetAutoRollback(true),
        Change::Update(ConfigPatch { max_error_rate: Some(5.0), ..Default::default() }),
    ] {
        let out = store.apply_change(FEATURE, &req(change.clone())).await.unwrap();
        assert!(!out.applied, "{change:?} changes nothing");
        assert!(out.history.is_none(), "{change:?}");
        assert_eq!(out.after, out.before, "{change:?}");
        assert_eq!(out.skipped, Some(Skipped::Unchanged), "{change:?}");
    }
    assert_eq!(history_count(store).await, rows, "no history row for a change of nothing");
    assert_eq!(store.get_config(FEATURE).await.unwrap(), before, "the row is untouched");
}

/// What the rest of the host needs of the database besides the tables: notifications and
/// the migration check (no other module imports sqlx).
async fn listen_notify_and_migration_check(db: &TestDatabase) {
    let store = &db.store;
    assert!(store.is_migrated().await.unwrap());
    let empty = match store.backend() {
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!("rollout-empty-{}.db", Uuid::new_v4().simple()));
            let empty = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap();
            let migrated = empty.is_migrated().await.unwrap();
            empty.close().await;
            let _ = std::fs::remove_file(&path);
            migrated
        }
        Backend::Postgres => {
            // a database whose newest migration is missing is not migrated
            exec(store, "UPDATE _sqlx_migrations SET success = false WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
                .await
                .unwrap();
            let migrated = store.is_migrated().await.unwrap();
            exec(store, "UPDATE _sqlx_migrations SET success = true").await.unwrap();
            migrated
        }
    };
    assert!(!empty, "a database without the newest migration is not migrated");
    let Some(mut listener) = store.listen().await.unwrap() else {
        assert_eq!(store.backend(), Backend::Sqlite, "only SQLite has no notifications");
        store.notify("policy_uploaded:x").await.unwrap();
        return;
    };
    store.notify("policy_uploaded:abc").await.unwrap();
    assert_eq!(listener.recv().await.unwrap().as_deref(), Some("policy_uploaded:abc"));
    store.apply_change(FEATURE, &req(Change::SetPercentage(5))).await.unwrap();
    assert_eq!(listener.recv().await.unwrap().as_deref(), Some(FEATURE));
    // a change of nothing is not announced either: the next notification is the next change
    store.apply_change(FEATURE, &req(Change::SetPercentage(5))).await.unwrap();
    store.notify("after").await.unwrap();
    assert_eq!(listener.recv().await.unwrap().as_deref(), Some("after"));
}

/// Postgres records a group's batch keys with a plain `INSERT` and claims them one by one
/// (`ON CONFLICT DO NOTHING`) only when a key is recorded already. A key that another
/// transaction (a copy of the submission in flight at once) recorded while the group waited
/// on it: committed, the copy is skipped and the rest of the group counts — the group is
/// neither refused for a unique violation nor counted twice; rolled back, the key is the
/// group's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_recorded_by_a_concurrent_copy_is_claimed_once() {
    use sqlx::Connection;
    let Some(url) = pg_url("a_key_recorded_by_a_concurrent_copy_is_claimed_once") else { return };
    let db = TestDatabase::postgres(&url).await.unwrap();
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let repo = Uuid::new_v4();
    let deltas = aggregate(&[outcome(config_id, repo, Processor::Inngest, true, Some(5))]);
    let mut expected_jobs = 0;
    for copy_commits in [true, false] {
        let copy = MetricsBatch { batch_id: Uuid::new_v4(), deltas: deltas.clone() };
        let fresh = MetricsBatch { batch_id: Uuid::new_v4(), deltas: deltas.clone() };
        // the copy has recorded its key and not committed yet
        let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
        sqlx::query("INSERT INTO rollout_applied_batches (batch_id) VALUES ($1)")
            .bind(copy.batch_id)
            .execute(&mut holder)
            .await
            .unwrap();
        let writer = tokio::spawn({
            let (store, group) = (store.clone(), vec![copy.clone(), fresh.clone()]);
            async move { store.upsert_metrics_batches(&group).await }
        });
        // until the group waits on the copy's key (had it not started yet, it would find the
        // key committed or gone: the same outcome)
        for _ in 0..200 {
            let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted")
                .fetch_one(&mut holder)
                .await
                .unwrap();
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let end = if copy_commits { "COMMIT" } else { "ROLLBACK" };
        sqlx::query(end).execute(&mut holder).await.unwrap();
        let applied = writer.await.unwrap().unwrap();
        if copy_commits {
            assert_eq!(applied, vec![fresh.batch_id], "the committed copy's key is skipped");
            expected_jobs += 1;
        } else {
            assert_eq!(applied, vec![copy.batch_id, fresh.batch_id], "the rolled-back copy's key is the group's");
            expected_jobs += 2;
        }
        let total: i64 = store.list_buckets(config_id).await.unwrap().iter().map(|b| b.total_jobs).sum();
        assert_eq!(total, expected_jobs, "copy committed: {copy_commits}");
    }
    db.cleanup().await;
}

/// Sum of `job_count` over the whole latency table.
async fn latency_jobs(store: &Store) -> i64 {
    count(store, "SELECT CAST(COALESCE(SUM(job_count), 0) AS BIGINT) FROM rollout_latency_buckets").await
}

/// The histogram of one processor over the last day, read back from the store.
async fn stored_histogram(store: &Store, config_id: Uuid, processor: Processor) -> LatencyHistogram {
    let rows = store.latency_window(config_id, Utc::now() - TimeDelta::hours(24), chrono::DateTime::UNIX_EPOCH).await;
    LatencyHistogram::from_rows(rows.unwrap().iter().filter(|r| r.processor == processor))
}

/// Issue 12: outcomes with known times, through the real group-commit recorder, give the
/// expected percentile buckets; untimed outcomes add nothing; a retried submission counts
/// once in the histogram too (it is written in the transaction that records its key).
async fn latency_buckets_give_the_expected_percentiles(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let recorder = MetricsRecorder::spawn(store.clone());
    let repos: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    // inngest: 1..=100 ms, spread over three repositories (one histogram row per bucket)
    let mut batch = Vec::new();
    for ms in 1..=100u64 {
        batch.push(outcome(config_id, repos[(ms % 3) as usize], Processor::Inngest, ms % 10 != 0, Some(ms)));
    }
    // github_actions: 90 × 10 ms, 9 × 1000 ms, 1 × 10 min; and 20 jobs without a time
    for i in 0..100u64 {
        let ms = match i {
            0..=89 => 10,
            90..=98 => 1000,
            _ => 600_000,
        };
        batch.push(outcome(config_id, repos[(i % 3) as usize], Processor::GithubActions, true, Some(ms)));
    }
    for i in 0..20u64 {
        batch.push(outcome(config_id, repos[(i % 3) as usize], Processor::GithubActions, i % 2 == 0, None));
    }
    let key = Uuid::new_v4();
    recorder.record_batch(key, batch.clone()).await.unwrap();
    // the same submission again (a retry after a lost reply): nothing more
    recorder.record_batch(key, batch).await.unwrap();
    assert_eq!(latency_jobs(store).await, 200, "200 timed jobs, once each; untimed ones add nothing");

    let inngest = stored_histogram(store, config_id, Processor::Inngest).await;
    assert_eq!(inngest.count(), 100);
    assert_eq!(inngest.quantile_bucket(0.50), Some(bucket_of(50)));
    assert_eq!(inngest.quantile_bucket(0.95), Some(bucket_of(95)));
    assert_eq!(inngest.quantile_bucket(0.99), Some(bucket_of(99)));
    assert_eq!(inngest.quantile(0.50), Some(50.5), "50 ms lies in the 50-51 ms bucket");
    let gha = stored_histogram(store, config_id, Processor::GithubActions).await;
    assert_eq!(gha.count(), 100);
    assert_eq!(gha.quantile(0.50), Some(10.0), "exact below 32 ms");
    assert_eq!(gha.quantile_bucket(0.95), Some(bucket_of(1000)));
    assert_eq!(gha.quantile_bucket(0.99), Some(bucket_of(1000)));
    assert_eq!(gha.quantile_bucket(1.0), Some(bucket_of(600_000)));
    let p95 = gha.quantile(0.95).unwrap();
    assert!((p95 - 1000.0).abs() <= 1000.0 / 32.0, "p95 {p95} within a half bucket of 1000 ms");

    // the metrics of the same outcomes agree: as many timed jobs as histogram counts
    let timed: i64 = store.list_buckets(config_id).await.unwrap().iter().map(|b| b.timed_jobs).sum();
    assert_eq!(timed, 200);
    // a window that starts later holds nothing
    let later = store.latency_window(config_id, Utc::now() - TimeDelta::hours(24), Utc::now() + TimeDelta::hours(2));
    assert!(later.await.unwrap().is_empty());
}

/// Issue 12: four recorders (four processes) × four writers each, recording into the same
/// histogram rows at once: every increment is kept, bucket by bucket.
async fn concurrent_recorders_lose_no_latency_increments(db: &TestDatabase) {
    let store = &db.store;
    let config_id = store.get_config(FEATURE).await.unwrap().id;
    let repos: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let time_of = |n: u64| (!n.is_multiple_of(4)).then(|| (n * 7919) % 5000 + (n % 13) * 100_000);
    let processor_of = |n: u64| if n.is_multiple_of(3) { Processor::GithubActions } else { Processor::Inngest };
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..4u64 {
        let recorder = MetricsRecorder::spawn(store.clone());
        for w in 0..4u64 {
            let recorder = recorder.clone();
            let repos = repos.clone();
            tasks.spawn(async move {
                for i in 0..400u64 {
                    let n = (r * 4 + w) * 400 + i;
                    let o = outcome(config_id, repos[(n % 4) as usize], processor_of(n), n % 11 != 0, time_of(n));
                    recorder.record(o).await.unwrap();
                }
            });
        }
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    let mut expected = [LatencyHistogram::new(), LatencyHistogram::new()];
    for n in 0..6400u64 {
        if let Some(ms) = time_of(n) {
            expected[usize::from(processor_of(n) == Processor::GithubActions)].record(ms);
        }
    }
    let timed = expected[0].count() + expected[1].count();
    assert_eq!(timed, 4800);
    assert_eq!(latency_jobs(store).await, 4800, "sum of bucket counts = timed outcomes");
    assert_eq!(stored_histogram(store, config_id, Processor::Inngest).await, expected[0]);
    assert_eq!(stored_histogram(store, config_id, Processor::GithubActions).await, expected[1]);
    assert!(expected[0].nonzero().count() > 50, "many buckets shared by all writers");
}
