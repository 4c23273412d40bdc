//! Configuration versions as data (issue 14): every configuration a feature ever had is kept
//! as an immutable snapshot addressed by its `config_version`, written in the transaction of
//! the change and its history row — none for a change that failed or was skipped, one per
//! version under concurrent changes, and one backfilled by the migration for every row that
//! existed before it. Every test runs on SQLite and on Postgres.

use rollout::store::testing::TestDatabase;
use rollout::store::{Change, ChangeRequest, ConfigPatch, ErrorKind, Store, StoredConfig};
use rollout_policy::Strategy;
use uuid::Uuid;

const FEATURE: &str = "versions_feature";

/// The feature the migrations seed.
const SEED_FEATURE: &str = "hybrid_progressive_capture";

both_backends!(
    every_version_is_addressable_and_equals_the_configuration_it_was,
    a_failed_or_skipped_change_keeps_no_snapshot,
    concurrent_changes_from_8_connections_keep_consecutive_versions,
    the_migration_backfills_a_snapshot_of_every_existing_row,
);

fn req(change: Change) -> ChangeRequest {
    ChangeRequest::new(change, Some("test".into()), "tester")
}

async fn exec(store: &Store, sql: &str) {
    match store {
        Store::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
        Store::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
    }
    .unwrap();
}

async fn count(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn snapshot_count(store: &Store) -> i64 {
    count(store, "SELECT count(*) FROM rollout_config_versions").await
}

async fn every_version_is_addressable_and_equals_the_configuration_it_was(db: &TestDatabase) {
    let store = &db.store;
    let created = store.ensure_config(FEATURE, "tester").await.unwrap();
    let mut seen: Vec<StoredConfig> = vec![store.get_config(FEATURE).await.unwrap()];
    assert_eq!(seen[0], created);
    let changes = [
        Change::SetPercentage(30),
        Change::WhitelistAdd(vec![Uuid::new_v4(), Uuid::new_v4()]),
        Change::Update(ConfigPatch {
            rollout_strategy: Some(Strategy::RepositorySize),
            metadata: Some(serde_json::json!({ "cost_per_job": { "inngest": 0.125 }, "owner": "team" })),
            ..ConfigPatch::default()
        }),
        Change::EmergencyStop,
        Change::Resume,
    ];
    for change in changes {
        let outcome = store.apply_change(FEATURE, &req(change)).await.unwrap();
        assert!(outcome.applied);
        let now = store.get_config(FEATURE).await.unwrap();
        assert_eq!(outcome.after, now, "the change returns the row as read back");
        seen.push(now);
    }
    let versions: Vec<i64> = seen.iter().map(|c| c.version).collect();
    assert_eq!(versions, (1..=6).collect::<Vec<i64>>(), "one version per write");
    for config in &seen {
        let kept = store.config_at_version(FEATURE, config.version).await.unwrap();
        assert_eq!(kept.as_ref(), Some(config), "version {}", config.version);
    }
    assert_eq!(store.config_at_version(FEATURE, 7).await.unwrap(), None, "a version never reached");
    assert_eq!(store.config_at_version(FEATURE, 0).await.unwrap(), None);

    let listed = store.config_versions(FEATURE, 100).await.unwrap();
    assert_eq!(listed.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![6, 5, 4, 3, 2, 1], "newest first");
    assert!(listed.windows(2).all(|w| w[0].1 >= w[1].1), "written in order: {listed:?}");
    assert_eq!(store.config_versions(FEATURE, 2).await.unwrap(), listed[..2].to_vec(), "the limit keeps the newest");

    // unknown features are errors naming the feature, on both reads
    let e = store.config_at_version("no_such_feature", 1).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Input { .. }) && e.to_string().contains("no_such_feature"), "{e}");
    let e = store.config_versions("no_such_feature", 10).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Input { .. }) && e.to_string().contains("no_such_feature"), "{e}");

    // a snapshot is kept: a later change does not touch an earlier version
    store.apply_change(FEATURE, &req(Change::SetPercentage(90))).await.unwrap();
    assert_eq!(store.config_at_version(FEATURE, 2).await.unwrap().as_ref(), Some(&seen[1]));
    // and it goes with its configuration
    exec(store, &format!("DELETE FROM rollout_configuration WHERE feature_name = '{FEATURE}'")).await;
    assert_eq!(
        count(
            store,
            "SELECT count(*) FROM rollout_config_versions v \
             WHERE NOT EXISTS (SELECT 1 FROM rollout_configuration c WHERE c.id = v.rollout_config_id)"
        )
        .await,
        0
    );
    assert_eq!(snapshot_count(store).await, 1, "only the seed's snapshot is left");
}

async fn a_failed_or_skipped_change_keeps_no_snapshot(db: &TestDatabase) {
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    store.apply_change(FEATURE, &req(Change::SetPercentage(25))).await.unwrap();
    let before = store.get_config(FEATURE).await.unwrap();
    let snapshots = snapshot_count(store).await;

    // the history row cannot be written (triggered_by too long): the change and its
    // snapshot roll back together
    let failed = ChangeRequest::new(Change::SetPercentage(40), None, "x".repeat(200));
    store.apply_change(FEATURE, &failed).await.unwrap_err();
    assert_eq!(store.get_config(FEATURE).await.unwrap(), before);
    assert_eq!(snapshot_count(store).await, snapshots);
    assert_eq!(store.config_at_version(FEATURE, before.version + 1).await.unwrap(), None);

    // a change of nothing writes nothing
    let same = store.apply_change(FEATURE, &req(Change::SetPercentage(25))).await.unwrap();
    assert!(!same.applied);
    assert_eq!(snapshot_count(store).await, snapshots);
    assert_eq!(store.config_at_version(FEATURE, before.version + 1).await.unwrap(), None);

    // a second ensure creates nothing and keeps nothing more
    store.ensure_config(FEATURE, "tester").await.unwrap();
    assert_eq!(snapshot_count(store).await, snapshots);

    // the next change that commits takes the next version, with its snapshot
    let next = store.apply_change(FEATURE, &req(Change::SetPercentage(40))).await.unwrap();
    assert_eq!(next.after.version, before.version + 1);
    assert_eq!(store.config_at_version(FEATURE, next.after.version).await.unwrap(), Some(next.after));
    assert_eq!(snapshot_count(store).await, snapshots + 1);
}

async fn concurrent_changes_from_8_connections_keep_consecutive_versions(db: &TestDatabase) {
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let url = db.url.clone();
        tasks.spawn(async move {
            let own = Store::connect(&url).await.unwrap();
            let outcome = own.apply_change(FEATURE, &req(Change::SetPercentage(10 + i))).await.unwrap();
            own.close().await;
            outcome.after
        });
    }
    let mut written = Vec::new();
    while let Some(r) = tasks.join_next().await {
        written.push(r.unwrap());
    }
    written.sort_by_key(|c| c.version);
    assert_eq!(written.iter().map(|c| c.version).collect::<Vec<_>>(), (2..=9).collect::<Vec<i64>>());
    for config in &written {
        assert_eq!(store.config_at_version(FEATURE, config.version).await.unwrap().as_ref(), Some(config));
    }
    let listed: Vec<i64> = store.config_versions(FEATURE, 100).await.unwrap().into_iter().map(|(v, _)| v).collect();
    assert_eq!(listed, (1..=9).rev().collect::<Vec<i64>>());
    let last = store.get_config(FEATURE).await.unwrap();
    assert_eq!(last.version, 9);
    assert_eq!(store.config_at_version(FEATURE, 9).await.unwrap(), Some(last));
}

/// The backfill statement of this backend's migration.
fn backfill_sql(store: &Store) -> String {
    let text = match store {
        Store::Postgres(_) => include_str!("../../../migrations/postgres/20251203030000_config_versions.sql"),
        Store::Sqlite(_) => include_str!("../../../migrations/sqlite/20251203030000_config_versions.sql"),
    };
    let start = text.find("-- Backfill").unwrap();
    text[start..].to_owned()
}

async fn the_migration_backfills_a_snapshot_of_every_existing_row(db: &TestDatabase) {
    let store = &db.store;
    // the seed row the migrations created has its snapshot
    let seed = store.get_config(SEED_FEATURE).await.unwrap();
    assert_eq!(store.config_at_version(SEED_FEATURE, seed.version).await.unwrap(), Some(seed.clone()));
    assert_eq!(store.config_versions(SEED_FEATURE, 10).await.unwrap().len(), 1);

    // rows written before the migration, by hand, with every column away from its default:
    // the backfill spells them as the store does
    exec(
        store,
        &format!(
            "UPDATE rollout_configuration SET rollout_percentage = 35, target_repositories = {targets}, \
             excluded_repositories = {excluded}, rollout_strategy = 'whitelist', max_error_rate = 2.75, \
             monitoring_window_hours = 6, auto_rollback_enabled = {f}, emergency_stop = {t}, \
             min_jobs_for_rollback = 3, metadata = '{{\"cost_per_job\": {{\"inngest\": 0.5}}, \"n\": [1, 2.5]}}', \
             rolled_back = {t} WHERE feature_name = '{SEED_FEATURE}'",
            targets = match store {
                Store::Postgres(_) => "ARRAY['a', 'b']",
                Store::Sqlite(_) => "'[\"a\", \"b\"]'",
            },
            excluded = match store {
                Store::Postgres(_) => "ARRAY['c']",
                Store::Sqlite(_) => "'[\"c\"]'",
            },
            t = "true",
            f = "false",
        ),
    )
    .await;
    exec(store, "DELETE FROM rollout_config_versions").await;
    let changed = store.get_config(SEED_FEATURE).await.unwrap();
    assert!(changed.version > seed.version, "a manual update bumps the version");
    assert_eq!(store.config_at_version(SEED_FEATURE, changed.version).await.unwrap(), None);

    exec(store, &backfill_sql(store)).await;
    assert_eq!(store.config_at_version(SEED_FEATURE, changed.version).await.unwrap(), Some(changed.clone()));
    assert_eq!(store.config_versions(SEED_FEATURE, 10).await.unwrap().len(), 1);
    // the backfill is idempotent
    exec(store, &backfill_sql(store)).await;
    assert_eq!(snapshot_count(store).await, 1);

    // and the store continues from the backfilled version
    let next = store.apply_change(SEED_FEATURE, &req(Change::SetPercentage(50))).await.unwrap();
    assert_eq!(next.after.version, changed.version + 1);
    assert_eq!(store.config_at_version(SEED_FEATURE, next.after.version).await.unwrap(), Some(next.after));
    assert_eq!(store.config_at_version(SEED_FEATURE, changed.version).await.unwrap(), Some(changed));
}
