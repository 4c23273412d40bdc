//! The store layer of the decision log (issue 14): decisions are kept exactly as logged
//! (every optional field present or absent), a repeated id is ignored, the filters and both
//! cursors read each decision once in id (= time) order, pruning deletes by age and by count,
//! outcomes that name their decision are split by the (policy, configuration version) that
//! decided, and a logged decision cannot be updated. Every test runs on SQLite and on
//! Postgres.

use chrono::{DateTime, TimeDelta, Utc};
use rollout::store::testing::TestDatabase;
use rollout::store::{DecisionFilter, DecisionKind, DecisionOutcome, DecisionRecord, DecisionVersionOutcomes, Store};
use uuid::Uuid;

const FEATURE: &str = "decision_log_feature";
const OTHER: &str = "decision_log_other";

both_backends!(
    a_decision_reads_back_exactly_as_logged_and_a_repeated_id_is_ignored,
    filters_and_the_cursor_read_each_decision_once_newest_first,
    after_reads_oldest_first,
    pruning_deletes_by_age_then_beyond_the_newest_rows,
    pruning_by_age_deletes_old_outcome_links,
    outcomes_are_split_by_the_policy_and_configuration_that_decided,
    a_logged_decision_cannot_be_updated,
    a_large_batch_is_inserted_whole,
    a_repository_is_found_across_days_in_both_orders_and_within_a_window,
    interleaved_segments_read_and_prune_in_id_order,
    the_segments_migration_keeps_every_decision_logged_before_it,
    a_segment_names_its_policy_once_and_the_view_names_it_for_each_decision,
);

/// 2025-12-03T00:00:00.123456Z: a time with microseconds, the precision both databases keep.
fn base() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_764_720_000_123_456).unwrap()
}

/// Decision `i`: decided `i` seconds and `i` microseconds after [`base`], its UUIDv7 made from
/// that time, so id order is time order. Even `i` are route decisions with every optional
/// field set; odd `i` eligibility decisions with none.
fn record(i: u32, feature: &str) -> DecisionRecord {
    let time = base() + TimeDelta::seconds(i64::from(i)) + TimeDelta::microseconds(i64::from(i));
    let millis = u64::try_from(time.timestamp_millis()).unwrap();
    let random: [u8; 10] = Uuid::new_v4().as_bytes()[..10].try_into().unwrap();
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    let route = i.is_multiple_of(2);
    DecisionRecord {
        id,
        time,
        feature: feature.to_owned(),
        kind: if route { DecisionKind::Route } else { DecisionKind::Eligibility },
        config_version: i64::from(i % 3) + 1,
        overrides: route.then(|| serde_json::json!({ "rollout_percentage": 40, "emergency_stop": false })),
        policy_sha256: format!("{:064x}", i % 2),
        repository_id: format!("repo-{}", i % 5),
        masked: i.is_multiple_of(7),
        category: route.then(|| "large".to_owned()),
        job: route.then(|| serde_json::json!({ "trigger_source": "scheduled", "size": { "files": i } })),
        processor: route.then(|| "inngest".to_owned()),
        rule: route.then(|| if i.is_multiple_of(4) { "rule_a" } else { "rule_b" }.to_owned()),
        eligible: i % 3 != 1,
        reason: if i.is_multiple_of(3) { "rule_a" } else { "percentage" }.to_owned(),
        bucket: u8::try_from(i * 7 % 100).unwrap(),
        fallback: (route && i % 4 == 2).then(|| "policy_error: trap".to_owned()),
        duration_us: i64::from(i) * 13 + 1,
    }
}

fn ids(records: &[DecisionRecord]) -> Vec<Uuid> {
    records.iter().map(|r| r.id).collect()
}

fn newest_first(records: &[DecisionRecord]) -> Vec<Uuid> {
    let mut ids = ids(records);
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

/// `filter` read page by page, `next` setting the cursor of the next page to the last id of
/// the previous one, until a page is empty: the size of every page and the ids in the order
/// read.
async fn pages(
    store: &Store,
    mut filter: DecisionFilter,
    next: fn(&mut DecisionFilter, Uuid),
) -> (Vec<usize>, Vec<Uuid>) {
    let (mut sizes, mut seen) = (Vec::new(), Vec::new());
    loop {
        let page = store.decisions(&filter).await.unwrap();
        sizes.push(page.len());
        let Some(last) = page.last() else { return (sizes, seen) };
        next(&mut filter, last.id);
        seen.extend(ids(&page));
    }
}

async fn count(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn a_decision_reads_back_exactly_as_logged_and_a_repeated_id_is_ignored(db: &TestDatabase) {
    let store = &db.store;
    assert_eq!(store.insert_decisions(&[]).await.unwrap(), 0, "an empty batch");
    let mut records: Vec<DecisionRecord> = (0..6).map(|i| record(i, FEATURE)).collect();
    // JSON of every shape, text with quotes and non-ASCII, the extremes of the numbers
    records[0].overrides = Some(serde_json::json!({ "a": [1, 2.5, null, true], "b": { "c": "\"q\" é" } }));
    records[0].reason = "it's \"quoted\" — é".to_owned();
    records[0].bucket = 99;
    records[0].duration_us = i64::MAX;
    records[0].config_version = i64::MAX;
    records[1].bucket = 0;
    records[1].duration_us = 0;
    assert!(records[0].category.is_some() && records[0].fallback.is_none(), "a route record");
    assert!(records[2].fallback.is_some(), "every optional field set");
    assert!(records[1].overrides.is_none() && records[1].job.is_none() && records[1].rule.is_none());

    assert_eq!(store.insert_decisions(&records).await.unwrap(), 6);
    for r in &records {
        assert_eq!(store.decision(r.id).await.unwrap().as_ref(), Some(r), "decision {}", r.id);
    }
    assert_eq!(store.decision(Uuid::now_v7()).await.unwrap(), None, "an id never logged");

    // the same ids again, and a batch half old, half new: only the new count, nothing changes
    let mut changed = records[0].clone();
    changed.reason = "changed".into();
    assert_eq!(store.insert_decisions(&[changed]).await.unwrap(), 0);
    assert_eq!(store.insert_decisions(&records).await.unwrap(), 0);
    let mixed = vec![records[3].clone(), record(6, FEATURE), records[4].clone(), record(7, FEATURE)];
    assert_eq!(store.insert_decisions(&mixed).await.unwrap(), 2);
    assert_eq!(store.decision(records[0].id).await.unwrap().as_ref(), Some(&records[0]), "the first row stays");
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions").await, 8);
}

async fn filters_and_the_cursor_read_each_decision_once_newest_first(db: &TestDatabase) {
    let store = &db.store;
    let a: Vec<DecisionRecord> = (0..25).map(|i| record(i, FEATURE)).collect();
    let b: Vec<DecisionRecord> = (25..30).map(|i| record(i, OTHER)).collect();
    // inserted out of order: the order read is the ids', not the insertion's
    let mut all: Vec<DecisionRecord> = a.iter().chain(&b).cloned().collect();
    all.reverse();
    all.swap(3, 17);
    assert_eq!(store.insert_decisions(&all).await.unwrap(), 30);

    let filter = |f: DecisionFilter| DecisionFilter { limit: 100, ..f };
    // no filter: everything, newest first
    let got = store.decisions(&filter(DecisionFilter::default())).await.unwrap();
    assert_eq!(ids(&got), newest_first(&all));
    // feature, with whole records
    let got = store.decisions(&filter(DecisionFilter { feature: Some(FEATURE.into()), ..Default::default() })).await;
    let mut expected = a.clone();
    expected.reverse();
    assert_eq!(got.unwrap(), expected);
    // repository
    let got = store
        .decisions(&filter(DecisionFilter { repository_id: Some("repo-3".into()), ..Default::default() }))
        .await
        .unwrap();
    let expected: Vec<DecisionRecord> = all.iter().filter(|r| r.repository_id == "repo-3").cloned().collect();
    assert_eq!(expected.len(), 6);
    assert_eq!(ids(&got), newest_first(&expected));
    // since (inclusive) and until (exclusive)
    let since = a[5].time;
    let until = a[15].time;
    let got = store
        .decisions(&filter(DecisionFilter {
            feature: Some(FEATURE.into()),
            since: Some(since),
            until: Some(until),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(ids(&got), newest_first(&a[5..15]));
    let got = store.decisions(&filter(DecisionFilter { since: Some(b[2].time), ..Default::default() })).await;
    assert_eq!(ids(&got.unwrap()), newest_first(&b[2..]));
    // rule: the routing rule, or the eligibility reason of an eligibility decision (not the
    // reason of a route decision)
    let is_rule_a = |r: &DecisionRecord| {
        r.rule.as_deref() == Some("rule_a") || (r.kind == DecisionKind::Eligibility && r.reason == "rule_a")
    };
    assert!(a.iter().any(|r| r.kind == DecisionKind::Route && r.reason == "rule_a" && !is_rule_a(r)));
    assert!(a.iter().any(|r| r.kind == DecisionKind::Eligibility && is_rule_a(r)));
    assert!(a.iter().any(|r| r.kind == DecisionKind::Route && is_rule_a(r)));
    let got = store
        .decisions(&filter(DecisionFilter {
            feature: Some(FEATURE.into()),
            rule: Some("rule_a".into()),
            ..Default::default()
        }))
        .await
        .unwrap();
    let expected: Vec<DecisionRecord> = a.iter().filter(|r| is_rule_a(r)).cloned().collect();
    assert_eq!(ids(&got), newest_first(&expected));
    // the limit
    let got = store.decisions(&DecisionFilter { limit: 3, ..Default::default() }).await.unwrap();
    assert_eq!(ids(&got), newest_first(&all)[..3]);
    let got = store.decisions(&DecisionFilter::default()).await.unwrap();
    assert!(got.is_empty(), "limit 0 reads nothing");
    // a feature nobody logged
    let got = store.decisions(&filter(DecisionFilter { feature: Some("nobody".into()), ..Default::default() })).await;
    assert!(got.unwrap().is_empty());

    // pages of 10 over the feature's 25: each id once, newest first
    let first = DecisionFilter { feature: Some(FEATURE.into()), limit: 10, ..Default::default() };
    let (sizes, seen) = pages(store, first, |f, last| f.before = Some(last)).await;
    assert_eq!(sizes, vec![10, 10, 5, 0]);
    assert_eq!(seen, newest_first(&a));
}

async fn after_reads_oldest_first(db: &TestDatabase) {
    let store = &db.store;
    let a: Vec<DecisionRecord> = (0..25).map(|i| record(i, FEATURE)).collect();
    store.insert_decisions(&a).await.unwrap();
    store.insert_decisions(&[record(30, OTHER)]).await.unwrap();
    let first =
        DecisionFilter { feature: Some(FEATURE.into()), after: Some(Uuid::nil()), limit: 10, ..Default::default() };
    let (sizes, seen) = pages(store, first, |f, last| f.after = Some(last)).await;
    assert_eq!(sizes, vec![10, 10, 5, 0]);
    assert_eq!(seen, ids(&a), "oldest first, each once");
    // from the middle, bounded by `before` as well
    let got = store
        .decisions(&DecisionFilter { after: Some(a[9].id), before: Some(a[14].id), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ids(&got), ids(&a[10..14]));
}

async fn pruning_deletes_by_age_then_beyond_the_newest_rows(db: &TestDatabase) {
    let store = &db.store;
    let records: Vec<DecisionRecord> = (0..10).map(|i| record(i, FEATURE)).collect();
    store.insert_decisions(&records).await.unwrap();
    let everything = DecisionFilter { limit: 100, ..Default::default() };
    let all = || store.decisions(&everything);
    let long_ago = base() - TimeDelta::days(30);

    // nothing old, more room than rows: nothing deleted
    assert_eq!(store.prune_decisions(long_ago, u64::MAX).await.unwrap(), 0);
    assert_eq!(store.prune_decisions(long_ago, 10).await.unwrap(), 0);
    // by age: before the time of row 3 (exclusive)
    assert_eq!(store.prune_decisions(records[3].time, 100).await.unwrap(), 3);
    assert_eq!(ids(&all().await.unwrap()), newest_first(&records[3..]));
    // by rows: the newest 4 stay
    assert_eq!(store.prune_decisions(long_ago, 4).await.unwrap(), 3);
    assert_eq!(ids(&all().await.unwrap()), newest_first(&records[6..]));
    // both at once: age takes row 6, the count rows 7 and 8
    assert_eq!(store.prune_decisions(records[7].time, 1).await.unwrap(), 3);
    assert_eq!(ids(&all().await.unwrap()), vec![records[9].id]);
    // keeping none deletes everything
    assert_eq!(store.prune_decisions(long_ago, 0).await.unwrap(), 1);
    assert!(all().await.unwrap().is_empty());
}

/// Defect: retention deleted decisions only, so `rollout_decision_outcomes` grew forever.
async fn pruning_by_age_deletes_old_outcome_links(db: &TestDatabase) {
    let store = &db.store;
    let decision = record(9, FEATURE);
    store.insert_decisions(std::slice::from_ref(&decision)).await.unwrap();
    let link = |minutes: i64| DecisionOutcome {
        decision_id: decision.id,
        feature: FEATURE.into(),
        success: true,
        recorded_at: base() - TimeDelta::minutes(minutes),
    };
    store.link_outcomes(&[link(10), link(1)]).await.unwrap();
    let count = || store.outcomes_by_decision_version(FEATURE, base() - TimeDelta::days(1));
    assert_eq!(count().await.unwrap()[0].successes, 2);
    // the decision (decided after `before`) stays; the link recorded before it goes
    store.prune_decisions(base() - TimeDelta::minutes(5), u64::MAX).await.unwrap();
    assert_eq!(store.decision(decision.id).await.unwrap().map(|d| d.id), Some(decision.id));
    assert_eq!(count().await.unwrap()[0].successes, 1, "the link older than the retention is deleted");
}

async fn outcomes_are_split_by_the_policy_and_configuration_that_decided(db: &TestDatabase) {
    let store = &db.store;
    let decided = |i: u32, feature: &str, policy: &str, version: i64| DecisionRecord {
        policy_sha256: policy.to_owned(),
        config_version: version,
        ..record(i, feature)
    };
    let d1 = decided(1, FEATURE, "p1", 1);
    let d2 = decided(2, FEATURE, "p1", 1);
    let d3 = decided(3, FEATURE, "p2", 2);
    let d4 = decided(4, OTHER, "p1", 1);
    let since = base() + TimeDelta::hours(1);
    let at = |minutes: i64| since + TimeDelta::minutes(minutes) + TimeDelta::microseconds(7);
    let outcome = |d: &DecisionRecord, success: bool, recorded_at: DateTime<Utc>| DecisionOutcome {
        decision_id: d.id,
        feature: d.feature.clone(),
        success,
        recorded_at,
    };
    let unlogged = record(5, FEATURE);
    let outcomes = vec![
        outcome(&d1, true, at(1)),
        outcome(&d1, false, at(2)),
        outcome(&d1, true, at(1)), // a repeat: kept once
        outcome(&d2, true, at(3)),
        outcome(&d2, false, at(-1)), // before `since`
        outcome(&d3, false, at(4)),
        outcome(&d3, false, at(5)),
        outcome(&d3, true, at(6)),
        outcome(&d4, true, at(7)), // another feature
        outcome(&unlogged, true, at(8)),
    ];
    // the outcomes may arrive before their decisions are logged
    store.link_outcomes(&[]).await.unwrap();
    store.link_outcomes(&outcomes).await.unwrap();
    store.link_outcomes(&outcomes[..3]).await.unwrap();
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decision_outcomes").await, 9, "repeats kept once");
    assert_eq!(store.outcomes_by_decision_version(FEATURE, since).await.unwrap(), vec![], "no decision logged yet");
    store.insert_decisions(&[d1, d2, d3, d4]).await.unwrap();

    let split = store.outcomes_by_decision_version(FEATURE, since).await.unwrap();
    let row = |policy: &str, version: i64, successes: u64, failures: u64| DecisionVersionOutcomes {
        policy_sha256: policy.to_owned(),
        config_version: version,
        successes,
        failures,
    };
    assert_eq!(split, vec![row("p2", 2, 1, 2), row("p1", 1, 2, 1)]);
    // the earlier outcome counts when the window reaches it
    let wider = store.outcomes_by_decision_version(FEATURE, at(-1)).await.unwrap();
    assert_eq!(wider, vec![row("p2", 2, 1, 2), row("p1", 1, 2, 2)]);
    assert_eq!(store.outcomes_by_decision_version(OTHER, since).await.unwrap(), vec![row("p1", 1, 1, 0)]);
    assert_eq!(store.outcomes_by_decision_version(FEATURE, at(9)).await.unwrap(), vec![]);
}

async fn a_logged_decision_cannot_be_updated(db: &TestDatabase) {
    let store = &db.store;
    let r = record(2, FEATURE);
    store.insert_decisions(std::slice::from_ref(&r)).await.unwrap();
    let linked = DecisionOutcome { decision_id: r.id, feature: FEATURE.into(), success: true, recorded_at: base() };
    store.link_outcomes(&[linked]).await.unwrap();
    let update = "UPDATE rollout_decision_segments SET body = '[]'";
    match store {
        Store::Sqlite(pool) => {
            let err = sqlx::query(update).execute(pool).await.unwrap_err();
            assert!(err.to_string().contains("immutable"), "{err}");
            let err = sqlx::query("UPDATE rollout_decision_outcomes SET success = 0").execute(pool).await;
            assert!(err.unwrap_err().to_string().contains("immutable"));
        }
        Store::Postgres(pool) => {
            // the service role inserts and deletes, never updates
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET LOCAL ROLE rollout_service").execute(&mut *tx).await.unwrap();
            let err = sqlx::query(update).execute(&mut *tx).await.unwrap_err();
            assert!(err.to_string().contains("permission denied"), "{err}");
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET LOCAL ROLE rollout_service").execute(&mut *tx).await.unwrap();
            let err = sqlx::query("UPDATE rollout_decision_outcomes SET success = false").execute(&mut *tx).await;
            assert!(err.unwrap_err().to_string().contains("permission denied"));
            tx.rollback().await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET LOCAL ROLE rollout_service").execute(&mut *tx).await.unwrap();
            let done = sqlx::query("DELETE FROM rollout_decision_segments").execute(&mut *tx).await.unwrap();
            assert_eq!(done.rows_affected(), 1, "the service role prunes");
            tx.rollback().await.unwrap();
        }
    }
    assert_eq!(store.decision(r.id).await.unwrap(), Some(r), "unchanged");
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decision_outcomes WHERE success = true").await, 1);
}

async fn a_large_batch_is_inserted_whole(db: &TestDatabase) {
    let store = &db.store;
    // more rows than one SQLite statement takes (32,766 parameters / 18 columns)
    let batch: Vec<DecisionRecord> = (0..5_000).map(|i| record(i, FEATURE)).collect();
    assert_eq!(store.insert_decisions(&batch).await.unwrap(), 5_000);
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions").await, 5_000);
    // (the records alternate between two policies: a segment names one)
    let segments = count(store, "SELECT count(*) FROM rollout_decision_segments").await;
    assert_eq!(segments, 6, "1,000 decisions a segment, per policy: 2,500 each");
    let last = store.decisions(&DecisionFilter { limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(last.first(), batch.last());

    // throughput in batches of 1,000 (printed; `--nocapture` shows it)
    let batches: Vec<Vec<DecisionRecord>> =
        (0..20u32).map(|b| (0..1_000).map(|i| record(10_000 + b * 1_000 + i, OTHER)).collect()).collect();
    let started = std::time::Instant::now();
    for batch in &batches {
        assert_eq!(store.insert_decisions(batch).await.unwrap(), 1_000);
    }
    let elapsed = started.elapsed();
    let backend = if matches!(store, Store::Postgres(_)) { "postgres" } else { "sqlite" };
    eprintln!("decision log insert, {backend}: {:.0} rows/s", 20_000.0 / elapsed.as_secs_f64());
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions").await, 25_000);
}

/// A repository's decisions, days apart and logged in batches whose id ranges overlap, read a
/// page at a time in both orders and within a time window, are each found once and in order;
/// on SQLite the segments are read through their index, in order, without a sort.
async fn a_repository_is_found_across_days_in_both_orders_and_within_a_window(db: &TestDatabase) {
    let store = &db.store;
    // repo-x every 20 hours over 5 days, other repositories in between
    let at = |hours: i64, n: u32| {
        let mut r = record(n, FEATURE);
        r.time = base() + TimeDelta::hours(hours) + TimeDelta::microseconds(i64::from(n));
        let millis = u64::try_from(r.time.timestamp_millis()).unwrap();
        let random: [u8; 10] = Uuid::new_v4().as_bytes()[..10].try_into().unwrap();
        r.id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        r
    };
    let mine: Vec<DecisionRecord> = (0..7)
        .map(|k| {
            let mut r = at(20 * k, u32::try_from(k).unwrap());
            r.repository_id = "repo-x".into();
            r
        })
        .collect();
    let others: Vec<DecisionRecord> = (0..12).map(|k| at(11 * k + 1, 100 + u32::try_from(k).unwrap())).collect();
    let all: Vec<DecisionRecord> = others.iter().chain(&mine).cloned().collect();
    // batches of 4: the last ones hold `mine`, spanning the same days as the first ones
    for batch in all.chunks(4) {
        assert_eq!(store.insert_decisions(batch).await.unwrap(), batch.len() as u64);
    }
    // a segment per batch and policy (each batch holds decisions of both)
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decision_segments").await, 10);

    let first = DecisionFilter { repository_id: Some("repo-x".into()), limit: 3, ..Default::default() };
    let (sizes, seen) = pages(store, first.clone(), |f, last| f.before = Some(last)).await;
    assert_eq!(sizes, vec![3, 3, 1, 0]);
    assert_eq!(seen, newest_first(&mine));
    let oldest = DecisionFilter { after: Some(Uuid::nil()), ..first.clone() };
    let (sizes, seen) = pages(store, oldest, |f, last| f.after = Some(last)).await;
    assert_eq!(sizes, vec![3, 3, 1, 0]);
    assert_eq!(seen, ids(&mine));
    // within [mine[2], mine[5]): 2, 3 and 4
    let window = DecisionFilter { since: Some(mine[2].time), until: Some(mine[5].time), limit: 100, ..first.clone() };
    assert_eq!(ids(&store.decisions(&window).await.unwrap()), newest_first(&mine[2..5]));
    let whole = store.decisions(&DecisionFilter { limit: 100, ..first.clone() }).await.unwrap();
    assert_eq!(whole, mine.iter().rev().cloned().collect::<Vec<_>>(), "whole records");
    let nobody = DecisionFilter { repository_id: Some("nobody".into()), limit: 100, ..Default::default() };
    assert!(store.decisions(&nobody).await.unwrap().is_empty());

    // a row whose id is not a time (a UUID made elsewhere) is found by its time: the search
    // spans the seconds logged, not the ids (from the ids, it spanned every second since 1970)
    let mut foreign = at(30, 200);
    foreign.id = Uuid::from_u128(7);
    foreign.repository_id = "repo-y".into();
    assert_eq!(store.insert_decisions(std::slice::from_ref(&foreign)).await.unwrap(), 1);
    let repo_y = DecisionFilter { repository_id: Some("repo-y".into()), limit: 10, ..Default::default() };
    let found = tokio::time::timeout(std::time::Duration::from_secs(60), store.decisions(&repo_y)).await;
    assert_eq!(found.expect("found within a minute").unwrap(), vec![foreign]);

    if let Store::Sqlite(pool) = store {
        // segments are read newest first by their index, skipping by the repositories they name
        let rows = sqlx::query(
            "EXPLAIN QUERY PLAN SELECT seq, body FROM rollout_decision_segments \
             WHERE last_id >= '0' AND first_id <= 'f' AND instr(repositories, 'x') > 0 \
             AND (last_id, seq) < ('f', 9) ORDER BY last_id DESC, seq DESC LIMIT 4",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| sqlx::Row::get::<String, _>(r, "detail")).collect();
        assert!(plan.iter().any(|p| p.contains("rollout_decision_segments_last")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "no sort: {plan:?}");
        // the segments that may hold an id (the writer asks it of every batch) are found from
        // the last ids at or after it, not from every first id before it
        let rows = sqlx::query(
            "EXPLAIN QUERY PLAN SELECT seq, first_id, last_id, body FROM rollout_decision_segments \
             WHERE last_id >= 'a' AND first_id <= 'b' ORDER BY last_id",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| sqlx::Row::get::<String, _>(r, "detail")).collect();
        assert!(plan.iter().any(|p| p.contains("rollout_decision_segments_last (last_id>?)")), "{plan:?}");
    }
}

/// Two writers (two instances) log batches whose id ranges interleave, of two features: every
/// read merges them in id order, and pruning by rows and by age deletes exactly the oldest,
/// writing again the segments it cuts through.
async fn interleaved_segments_read_and_prune_in_id_order(db: &TestDatabase) {
    let store = &db.store;
    let records: Vec<DecisionRecord> = (0..20).map(|i| record(i, if i % 3 == 0 { OTHER } else { FEATURE })).collect();
    let even: Vec<DecisionRecord> = records.iter().step_by(2).cloned().collect();
    let odd: Vec<DecisionRecord> = records.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(store.insert_decisions(&even).await.unwrap(), 10);
    assert_eq!(store.insert_decisions(&odd).await.unwrap(), 10);
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decision_segments").await, 4, "a segment per feature");
    // the same batch again from a retrying writer: nothing new
    assert_eq!(store.insert_decisions(&odd).await.unwrap(), 0);
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions").await, 20);

    let first = DecisionFilter { limit: 3, ..Default::default() };
    let (sizes, seen) = pages(store, first.clone(), |f, last| f.before = Some(last)).await;
    assert_eq!(sizes, vec![3, 3, 3, 3, 3, 3, 2, 0]);
    assert_eq!(seen, newest_first(&records));
    let oldest = DecisionFilter { after: Some(Uuid::nil()), ..first.clone() };
    let (_, seen) = pages(store, oldest, |f, last| f.after = Some(last)).await;
    assert_eq!(seen, ids(&records));
    let mine = DecisionFilter { feature: Some(FEATURE.into()), limit: 4, ..Default::default() };
    let (_, seen) = pages(store, mine, |f, last| f.before = Some(last)).await;
    let of_feature: Vec<DecisionRecord> = records.iter().filter(|r| r.feature == FEATURE).cloned().collect();
    assert_eq!(seen, newest_first(&of_feature));

    let everything = DecisionFilter { limit: 100, ..Default::default() };
    let long_ago = base() - TimeDelta::days(30);
    assert_eq!(store.prune_decisions(long_ago, 5).await.unwrap(), 15);
    assert_eq!(ids(&store.decisions(&everything).await.unwrap()), newest_first(&records[15..]));
    assert_eq!(store.prune_decisions(records[17].time, 100).await.unwrap(), 2);
    assert_eq!(ids(&store.decisions(&everything).await.unwrap()), newest_first(&records[17..]));
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions").await, 3);
    for r in &records[17..] {
        assert_eq!(store.decision(r.id).await.unwrap().as_ref(), Some(r), "kept whole: {}", r.id);
    }
    assert_eq!(store.decision(records[16].id).await.unwrap(), None, "pruned");
}

async fn exec(store: &Store, sql: &str) {
    match store {
        Store::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
        Store::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Migration `20251207010000_decision_log_segments` turns the rows of the old table into
/// segments (a segment per feature and thousand decisions): every decision reads back exactly
/// as logged. The old table is rebuilt from the view that replaced it (the view spells every
/// column as the table did), then the migration's conversion runs on it.
async fn the_segments_migration_keeps_every_decision_logged_before_it(db: &TestDatabase) {
    let store = &db.store;
    let mut records: Vec<DecisionRecord> =
        (0..1_010).map(|i| record(i, if i < 1_005 { FEATURE } else { OTHER })).collect();
    records[0].overrides = Some(serde_json::json!({ "a": [1, 2.5, null, true], "b": { "c": "\"q\" é" } }));
    records[0].reason = "it's \"quoted\" — é".to_owned();
    records[0].duration_us = i64::MAX;
    records[0].config_version = i64::MAX;
    for batch in records.chunks(7) {
        store.insert_decisions(batch).await.unwrap();
    }
    exec(
        store,
        "CREATE TABLE legacy AS SELECT * FROM rollout_decisions; DELETE FROM rollout_decision_segments; \
         DROP VIEW rollout_decisions; ALTER TABLE legacy RENAME TO rollout_decisions;",
    )
    .await;
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions").await, 1_010);
    assert_eq!(store.decision(records[0].id).await.unwrap(), None, "the segments are gone");

    let migration = match store {
        Store::Postgres(_) => include_str!("../../../migrations/postgres/20251207010000_decision_log_segments.sql"),
        Store::Sqlite(_) => include_str!("../../../migrations/sqlite/20251207010000_decision_log_segments.sql"),
    };
    let start = migration.find("-- The decisions already logged").unwrap();
    let end =
        migration[start..].find("\n-- Immutable").or_else(|| migration[start..].find("\n-- Segments are immutable"));
    exec(store, &migration[start..start + end.unwrap()]).await;

    assert_eq!(count(store, "SELECT count(*) FROM rollout_decision_segments").await, 3, "1,000 + 5 and 5");
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions").await, 1_010);
    for r in records.iter().step_by(101).chain([&records[1_004], &records[1_009]]) {
        assert_eq!(store.decision(r.id).await.unwrap().as_ref(), Some(r), "decision {}", r.id);
    }
    let all = DecisionFilter { after: Some(Uuid::nil()), limit: 2_000, ..Default::default() };
    assert_eq!(store.decisions(&all).await.unwrap(), records, "every decision, whole, in id order");
    let repo = DecisionFilter {
        repository_id: Some("repo-3".into()),
        rule: Some("rule_b".into()),
        limit: 2_000,
        ..Default::default()
    };
    let want: Vec<Uuid> = newest_first(
        &records
            .iter()
            .filter(|r| r.repository_id == "repo-3" && r.rule.as_deref() == Some("rule_b"))
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(!want.is_empty());
    assert_eq!(ids(&store.decisions(&repo).await.unwrap()), want, "found through the segments' repositories and rules");
}

/// A segment names its policy once (its decisions hold `null` there); the decisions read
/// back, and the view `rollout_decisions`, name each decision's policy, in segments written
/// in both formats (before migration `20251208010000_decision_log_segment_policy` each
/// decision named its own).
async fn a_segment_names_its_policy_once_and_the_view_names_it_for_each_decision(db: &TestDatabase) {
    let store = &db.store;
    let records: Vec<DecisionRecord> = (0..10).map(|i| record(i, FEATURE)).collect();
    assert_eq!(store.insert_decisions(&records).await.unwrap(), 10);
    let sha = |i: u32| format!("{:064x}", i % 2);
    let per_policy =
        "SELECT count(*) FROM rollout_decision_segments WHERE policy_sha256 = '{}' AND body NOT LIKE '%{}%'";
    for policy in [sha(0), sha(1)] {
        let sql = per_policy.replacen("{}", &policy, 1).replacen("{}", &policy, 1);
        assert_eq!(count(store, &sql).await, 1, "one segment names {policy}, its decisions do not");
    }
    // a segment in the format before: no policy of its own, each decision naming one (an
    // eligibility decision, masked: no optional field)
    let old = record(21, FEATURE);
    assert!(old.masked && old.job.is_none());
    assert_eq!(store.insert_decisions(std::slice::from_ref(&old)).await.unwrap(), 1);
    let older = format!(
        "[[\"{}\",{},\"eligibility\",{},null,\"{}\",\"{}\",true,null,null,null,null,{},\"{}\",{},null,{}]]",
        old.id,
        old.time.timestamp_micros(),
        old.config_version,
        "ab".repeat(32),
        old.repository_id,
        old.eligible,
        old.reason,
        old.bucket,
        old.duration_us,
    );
    exec(
        store,
        &format!(
            "DELETE FROM rollout_decision_segments WHERE first_id = '{id}'; \
             INSERT INTO rollout_decision_segments (feature, first_id, last_id, rows, repositories, rules, body) \
             VALUES ('{FEATURE}', '{id}', '{id}', 1, '\n{repo}\n', '\n{rule}\n', '{older}')",
            id = old.id,
            repo = old.repository_id,
            rule = old.reason,
        ),
    )
    .await;
    let back = store.decision(old.id).await.unwrap();
    assert_eq!(back, Some(DecisionRecord { policy_sha256: "ab".repeat(32), ..old }));
    for (policy, n) in [(sha(0), 5), (sha(1), 5), ("ab".repeat(32), 1)] {
        let sql = format!("SELECT count(*) FROM rollout_decisions WHERE policy_sha256 = '{policy}'");
        assert_eq!(count(store, &sql).await, n, "the view names {policy}");
    }
    assert_eq!(count(store, "SELECT count(*) FROM rollout_decisions WHERE policy_sha256 IS NULL").await, 0);
}
