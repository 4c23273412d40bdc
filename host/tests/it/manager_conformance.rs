//! The manager suite: every test body is written once and runs against SQLite and Postgres
//! (see `store_conformance.rs` for the `DATABASE_URL` / `CI` rules).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p rollout --test manager_conformance`

use rollout::engine::{NativePolicy, Policy};
use rollout::env::EnvOverrides;
use rollout::input::values::{Actor, Percentage, Reason, RepositoryRef};
use rollout::manager::{Manager, ManagerError, OpenOptions, OutcomeInput, ValueSource, AUTO_ROLLBACK_TRIGGER};
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout::service::operations::Operation;
use rollout::service::{ErrorKind, Service, ServiceOptions};
use rollout::store::testing::TestDatabase;
use rollout::store::{Change, ChangeRequest, ConfigPatch, HistoryAction, Store};
use rollout_policy::{
    Category, EligibilityReason, Job, Processor, RepositoryStats, RouteRule, Strategy, TriggerSource,
};
use rollout_policy::{HealthAction, HealthLevel};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

const FEATURE: &str = "hybrid_progressive_capture";

both_backends!(
    decisions_read_memory_only_and_never_write,
    two_managers_roll_back_exactly_once,
    fresh_ramp_is_not_judged_on_old_errors,
    ten_jobs_are_enough_to_judge,
    stats_eligibility_agrees_with_routing,
    stats_report_rates_kinds_trend_and_cost,
    env_overrides_are_marked_and_audited_once_per_start,
    categorize_from_repositories_or_given_stats,
    edits_resolve_owner_name_and_refresh_decisions,
    reload_sees_other_managers_changes,
    record_metrics_validates_ids,
    a_ramp_made_while_health_is_judged_is_not_rolled_back,
    stats_and_health_report_processing_time_percentiles,
);

async fn open(store: &Store) -> Manager {
    Manager::open(store.clone(), Arc::new(NativePolicy::new()), FEATURE, OpenOptions::default()).await.unwrap()
}

async fn open_with(store: &Store, overrides: EnvOverrides) -> Manager {
    let options = OpenOptions { overrides, audit_overrides: true, create: false };
    Manager::open(store.clone(), Arc::new(NativePolicy::new()), FEATURE, options).await.unwrap()
}

/// Apply one change through the manager (what the service does for every operation).
async fn change(m: &Manager, change: Change, reason: Option<&str>) {
    m.change(&ChangeRequest::new(change, reason.map(str::to_owned), "test")).await.unwrap();
}

async fn count(store: &Store, sql: &str) -> i64 {
    match store {
        Store::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
        Store::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn row_counts(store: &Store) -> Vec<i64> {
    let mut out = Vec::new();
    for t in ["rollout_configuration", "repository_categories", "rollout_metrics", "rollout_history", "repositories"] {
        out.push(count(store, &format!("SELECT count(*) FROM {t}")).await);
    }
    out
}

fn outcome(repo: &str, processor: Processor, success: bool, ms: Option<u64>, error: Option<&str>) -> OutcomeInput {
    OutcomeInput {
        repository: RepositoryRef::new(repo).unwrap(),
        processor,
        success,
        processing_time_ms: ms.map(|v| rollout::input::values::ProcessingTimeMs::new(v).unwrap()),
        error_message: error.map(|e| rollout::input::values::ErrorMessage::new(e).unwrap()),
        decision_id: None,
    }
}

/// Bug 4: eligibility wrote (categorised) in the read path on every job.
async fn decisions_read_memory_only_and_never_write(db: &TestDatabase) {
    let store = &db.store;
    let m = open(store).await;
    change(&m, Change::SetPercentage(100), Some("all")).await;
    let before = row_counts(store).await;
    let ids: Vec<String> = (0..500).map(|_| Uuid::new_v4().to_string()).collect();
    for id in &ids {
        let e = m.is_eligible(id);
        assert!(e.eligible);
        assert_eq!(e.reason, EligibilityReason::InPercentage);
    }
    assert_eq!(row_counts(store).await, before, "deciding wrote nothing");
    // no round trip either: decisions keep working with the database gone
    store.close().await;
    let job = Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
    let d = m.route(&ids[0], &job);
    assert_eq!((d.processor, d.rule), (Processor::GithubActions, RouteRule::ScheduledBulk));
    let batch: Vec<(String, Job)> = ids.iter().map(|id| (id.clone(), job.clone())).collect();
    let direct = NativePolicy::new()
        .route_batch(&m.snapshot(), &batch.iter().map(|(id, j)| (m.repository(id), j.clone())).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(m.route_batch(&batch), direct);
    assert_eq!(m.is_eligible_batch(&ids).len(), 500);
}

async fn fail_jobs(m: &Manager, n: usize, success: usize) {
    let repo = Uuid::new_v4().to_string();
    let mut inputs = Vec::new();
    for i in 0..n {
        let ok = i < success;
        inputs.push(outcome(
            &repo,
            Processor::GithubActions,
            ok,
            Some(100),
            (!ok).then_some("API rate limit exceeded"),
        ));
    }
    m.record_outcomes(inputs).await.unwrap();
}

/// Bug 9: the rollback re-fired on every check and was logged as `updated`.
async fn two_managers_roll_back_exactly_once(db: &TestDatabase) {
    let a = open(&db.store).await;
    let other = Store::connect(&db.url).await.unwrap();
    let b = open(&other).await;
    change(&a, Change::SetPercentage(50), Some("ramp")).await;
    fail_jobs(&a, 20, 10).await;
    let (ra, rb) = tokio::join!(a.check_and_trigger_auto_rollback(), b.check_and_trigger_auto_rollback());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(usize::from(ra.rolled_back) + usize::from(rb.rolled_back), 1, "exactly one rollback");
    let (winner, loser) = if ra.rolled_back { (&ra, &rb) } else { (&rb, &ra) };
    assert_eq!((winner.action, winner.level), (HealthAction::Rollback, Some(HealthLevel::Critical)));
    assert!((winner.error_rate - 50.0).abs() < 1e-9);
    assert!(winner.rollback.is_some() && loser.rollback.is_none());
    // the loser either decided `rollback` too (and its conditional update matched nothing)
    // or already saw the rollout at 0 %
    assert!(loser.action == HealthAction::Rollback || loser.reason.contains("already at 0%"), "{loser:?}");
    let rows: Vec<_> =
        a.history(100).await.unwrap().into_iter().filter(|h| h.action == HistoryAction::Rollback).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].previous_percentage, rows[0].new_percentage), (Some(50), Some(0)));
    assert_eq!(rows[0].triggered_by.as_deref(), Some(AUTO_ROLLBACK_TRIGGER));
    assert_eq!(rows[0].metadata["health"]["total_jobs"], 20);
    // checking again does nothing: already at 0 %
    let again = b.check_and_trigger_auto_rollback().await.unwrap();
    assert!(!again.rolled_back);
    assert_eq!(count(&db.store, "SELECT count(*) FROM rollout_history WHERE action = 'rollback'").await, 1);
    assert_eq!(b.effective_config().rollout_percentage.value, 0, "the check refreshed the cache");
    other.close().await;
}

/// Bug 9: a fresh ramp was judged on the errors that caused the previous rollback.
async fn fresh_ramp_is_not_judged_on_old_errors(db: &TestDatabase) {
    let m = open(&db.store).await;
    change(&m, Change::SetPercentage(20), None).await;
    fail_jobs(&m, 30, 0).await;
    assert!(m.check_and_trigger_auto_rollback().await.unwrap().rolled_back);
    change(&m, Change::SetPercentage(10), Some("try again")).await;
    let report = m.check_and_trigger_auto_rollback().await.unwrap();
    assert_eq!(report.total_jobs, 0, "the window starts at the new ramp");
    assert!(!report.rolled_back);
    assert!(report.window_start >= m.stored_config().state_changed_at);
    fail_jobs(&m, 12, 12).await;
    let report = m.check_and_trigger_auto_rollback().await.unwrap();
    assert_eq!((report.total_jobs, report.level, report.rolled_back), (12, Some(HealthLevel::Ok), false));
    assert_eq!(m.effective_config().rollout_percentage.value, 10);
}

/// Bug 9: the original wanted more than 10 jobs where the design says 10.
async fn ten_jobs_are_enough_to_judge(db: &TestDatabase) {
    let m = open(&db.store).await;
    change(&m, Change::SetPercentage(25), None).await;
    fail_jobs(&m, 9, 0).await;
    let r = m.check_health().await.unwrap();
    assert_eq!((r.total_jobs, r.action), (9, HealthAction::None));
    fail_jobs(&m, 1, 0).await;
    let r = m.check_and_trigger_auto_rollback().await.unwrap();
    assert_eq!(r.total_jobs, 10);
    assert!(r.rolled_back);
}

/// Bugs 1, 2 and 3: the stats' eligible count used another hash and ignored exclusions,
/// the stop and the size strategy; 0 % admitted half; size strategy admitted everyone.
async fn stats_eligibility_agrees_with_routing(db: &TestDatabase) {
    let store = &db.store;
    let m = open(store).await;
    let mut ids = Vec::new();
    for i in 0..150u32 {
        let stats = match i % 5 {
            0 => RepositoryStats { star_count: 0, contributor_count: 1, pr_count: 3 },
            1 => RepositoryStats { star_count: 20, contributor_count: 5, pr_count: 50 },
            2 => RepositoryStats { star_count: 200, contributor_count: 20, pr_count: 500 },
            3 => RepositoryStats { star_count: 2000, contributor_count: 100, pr_count: 5000 },
            _ => RepositoryStats { star_count: 90_000, contributor_count: 900, pr_count: 90_000 },
        };
        ids.push(store.upsert_repository("org", &format!("repo{i}"), &stats).await.unwrap().to_string());
    }
    // uncategorised ids known only through metrics are not "known repositories"
    let summary = m.categorize_all(false).await.unwrap();
    assert_eq!((summary.total, summary.categorized), (150, 150));
    assert_eq!(summary.by_category["test"], 30);
    let routed_eligible =
        |m: &Manager| ids.iter().filter(|id| m.route(id, &Job::default()).eligibility.eligible).count() as u64;

    let s = m.get_rollout_stats().await.unwrap();
    assert_eq!(
        (s.total_repositories, s.categorized_repositories, s.eligible_repositories),
        (150, 150, 0),
        "0% selects nobody"
    );

    change(&m, Change::SetPercentage(30), None).await;
    let s = m.get_rollout_stats().await.unwrap();
    assert_eq!(s.eligible_repositories, routed_eligible(&m));
    assert!(s.eligible_repositories > 10 && s.eligible_repositories < 90, "{}", s.eligible_repositories);
    assert_eq!(s.config_version, m.snapshot().version());

    change(
        &m,
        Change::Update(ConfigPatch { rollout_strategy: Some(Strategy::RepositorySize), ..Default::default() }),
        None,
    )
    .await;
    let s = m.get_rollout_stats().await.unwrap();
    assert_eq!(s.eligible_repositories, 60, "30% admits test and small only");
    assert_eq!(s.eligible_repositories, routed_eligible(&m));
    assert!((s.participation_rate - 40.0).abs() < 1e-9);
    assert_eq!(s.categories["enterprise"], 30);

    let excluded = ids.iter().find(|id| m.is_eligible(id).eligible).unwrap().clone();
    change(&m, Change::ExcludeAdd(vec![excluded.parse().unwrap()]), None).await;
    let s = m.get_rollout_stats().await.unwrap();
    assert_eq!(s.eligible_repositories, 59);
    assert_eq!(m.is_eligible(&excluded).reason, EligibilityReason::Excluded);

    change(&m, Change::EmergencyStop, Some("incident")).await;
    assert_eq!(m.get_rollout_stats().await.unwrap().eligible_repositories, 0);
    assert_eq!(routed_eligible(&m), 0);
}

async fn stats_report_rates_kinds_trend_and_cost(db: &TestDatabase) {
    let m = open(&db.store).await;
    let repo = Uuid::new_v4().to_string();
    let mut inputs = Vec::new();
    for i in 0..40u64 {
        inputs.push(outcome(&repo, Processor::Inngest, true, Some(100 + i), None));
    }
    for i in 0..10u64 {
        inputs.push(outcome(
            &repo,
            Processor::GithubActions,
            i >= 4,
            Some(1000),
            (i < 4).then_some("connection reset by peer"),
        ));
    }
    m.record_outcomes(inputs).await.unwrap();
    let other = Uuid::new_v4().to_string();
    m.record_outcome(outcome(&other, Processor::GithubActions, false, None, Some("404 Not Found"))).await.unwrap();

    let s = m.get_rollout_stats().await.unwrap();
    assert_eq!((s.total_jobs, s.success_count, s.error_count), (51, 46, 5));
    assert!((s.error_rate - 100.0 * 5.0 / 51.0).abs() < 1e-9);
    assert!((s.success_rate - 100.0 * 46.0 / 51.0).abs() < 1e-9);
    assert_eq!(s.processor_distribution["inngest"], 40);
    assert_eq!(s.processor_distribution["github_actions"], 11);
    let inngest = &s.processors["inngest"];
    assert_eq!(inngest.error_rate, 0.0);
    assert!((inngest.average_processing_time_ms.unwrap() - 119.5).abs() < 1e-9, "exact mean of 100..=139");
    let gha = &s.processors["github_actions"];
    assert!((gha.error_rate - 100.0 * 5.0 / 11.0).abs() < 1e-9);
    assert_eq!(gha.average_processing_time_ms, Some(1000.0));
    assert_eq!(s.errors_by_kind["network"], 4);
    assert_eq!(s.errors_by_kind["not_found"], 1);
    assert_eq!(s.errors_by_kind.len(), 7);
    assert_eq!(s.error_trend.points.iter().map(|p| p.jobs).sum::<u64>(), 51);
    assert!(s.cost.is_none(), "no costs configured");
    let json = serde_json::to_value(&s).unwrap();
    assert!(json.get("cost").is_none());

    let metadata = serde_json::json!({"cost_per_job": {"inngest": 0.0004, "github_actions": 0.0001}});
    change(&m, Change::Update(ConfigPatch { metadata: Some(metadata), ..Default::default() }), Some("prices")).await;
    let cost = m.get_rollout_stats().await.unwrap().cost.unwrap();
    assert!((cost.window_cost - (40.0 * 0.0004 + 11.0 * 0.0001)).abs() < 1e-12);
    assert!((cost.savings - 11.0 * 0.0003).abs() < 1e-12);
}

/// Bug 10: only one of the five variables did anything, and it was read once.
async fn env_overrides_are_marked_and_audited_once_per_start(db: &TestDatabase) {
    let vars =
        [("HYBRID_ROLLOUT_PERCENTAGE", "25"), ("HYBRID_EMERGENCY_STOP", "true"), ("HYBRID_MAX_ERROR_RATE", "7.5")];
    let overrides =
        EnvOverrides::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap();
    let m = open_with(&db.store, overrides.clone()).await;
    let e = m.effective_config();
    assert_eq!((e.rollout_percentage.value, e.rollout_percentage.database_value), (25, 0));
    assert_eq!(e.rollout_percentage.source, ValueSource::Environment);
    assert_eq!(e.emergency_stop.source, ValueSource::Environment);
    assert!(e.emergency_stop.value);
    assert_eq!(e.max_error_rate.value, 7.5);
    assert_eq!(e.auto_rollback_enabled.source, ValueSource::Database);
    assert_eq!(e.env_overrides.len(), 3);
    assert!(m.snapshot().config().emergency_stop);
    assert_eq!(m.is_eligible(&Uuid::new_v4().to_string()).reason, EligibilityReason::EmergencyStop);
    let rows: Vec<_> =
        m.history(50).await.unwrap().into_iter().filter(|h| h.action == HistoryAction::EnvOverride).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].previous_percentage, rows[0].new_percentage), (Some(0), Some(25)));
    assert_eq!(rows[0].metadata["variables"]["HYBRID_ROLLOUT_PERCENTAGE"], "25");
    // a change to the database value keeps the override in force and visible
    change(&m, Change::SetPercentage(60), None).await;
    let e = m.effective_config();
    assert_eq!((e.rollout_percentage.value, e.rollout_percentage.database_value), (25, 60));
    // a second start writes a second row; no overrides, no row
    let _again = open_with(&db.store, overrides).await;
    let _plain = open(&db.store).await;
    let n = count(&db.store, "SELECT count(*) FROM rollout_history WHERE action = 'env_override'").await;
    assert_eq!(n, 2);
}

async fn categorize_from_repositories_or_given_stats(db: &TestDatabase) {
    let store = &db.store;
    let m = open(store).await;
    let id = store
        .upsert_repository("acme", "tiny", &RepositoryStats { star_count: 0, contributor_count: 1, pr_count: 2 })
        .await
        .unwrap();
    let c = m.categorize_repository("acme/tiny", None).await.unwrap();
    assert_eq!((c.category, c.priority_level, c.is_test_repository), (Category::Test, 100, true));
    assert_eq!(m.repository(&id.to_string()).category, Some(Category::Test));
    let given = RepositoryStats { star_count: 3000, contributor_count: 150, pr_count: 8000 };
    let c = m.categorize_repository(&id.to_string(), Some(given)).await.unwrap();
    assert_eq!(c.category, Category::Large);
    let stored: Vec<_> = store.list_categories().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].category, stored[0].stats), (Category::Large, given));
    let unknown = Uuid::new_v4().to_string();
    let err = m.categorize_repository(&unknown, None).await.unwrap_err();
    assert!(matches!(&err, ManagerError::NoStats(s) if *s == unknown), "{err}");
    assert!(err.to_string().contains(&unknown));
    // an unknown repository can be categorised from given numbers
    m.categorize_repository(&unknown, Some(RepositoryStats::default())).await.unwrap();
    assert_eq!(m.repository(&unknown).category, Some(Category::Test));
}

/// The service's operations (what HTTP and the CLI call): ids resolve through
/// `repositories`, bad ones name themselves, and decisions see the change at once.
async fn edits_resolve_owner_name_and_refresh_decisions(db: &TestDatabase) {
    let store = &db.store;
    let runtime = Runtime::new(RuntimeOptions::default()).unwrap();
    runtime.load_bytes(BUNDLED_POLICY, "bundled").unwrap();
    let service = Service::open(store.clone(), runtime, ServiceOptions::default()).await.unwrap();
    let m = &service.feature(FEATURE).await.unwrap().manager;
    let alice = Actor::new("alice").unwrap();
    let id = store.upsert_repository("Acme", "Rocket", &RepositoryStats::default()).await.unwrap().to_string();
    change(m, Change::Update(ConfigPatch { rollout_strategy: Some(Strategy::Whitelist), ..Default::default() }), None)
        .await;
    assert_eq!(m.is_eligible(&id).reason, EligibilityReason::NotTargeted);
    let refs = |ids: &[&str]| ids.iter().map(|i| RepositoryRef::new(i).unwrap()).collect::<Vec<_>>();
    let out = service
        .apply(FEATURE, Operation::WhitelistAdd(refs(&["acme/rocket"])), Some(Reason::new("pilot").unwrap()), &alice)
        .await
        .unwrap();
    assert_eq!(out.config.target_repositories, vec![id.clone()]);
    assert_eq!(m.is_eligible(&id.to_uppercase()).reason, EligibilityReason::Targeted);
    assert!(RepositoryRef::new("nope").unwrap_err().contains("`nope`"), "bad ids are refused by their type");
    let err = service.apply(FEATURE, Operation::WhitelistAdd(refs(&["ghost/ship"])), None, &alice).await.unwrap_err();
    assert!(err.to_string().contains("`ghost/ship`"), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound { field: "repository_ids".into() });
    let err = service.apply(FEATURE, Operation::WhitelistAdd(vec![]), None, &alice).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid { field: "repository_ids".into() });
    assert!(Percentage::new(101).is_err(), "101 % is refused by its type");
    service.apply(FEATURE, Operation::WhitelistRemove(refs(&[&id])), None, &alice).await.unwrap();
    assert_eq!(m.is_eligible(&id).reason, EligibilityReason::NotTargeted);
    let actions: Vec<HistoryAction> = m.history(3).await.unwrap().into_iter().map(|h| h.action).collect();
    assert_eq!(actions, vec![HistoryAction::WhitelistRemove, HistoryAction::WhitelistAdd, HistoryAction::Updated]);
}

async fn reload_sees_other_managers_changes(db: &TestDatabase) {
    let a = open(&db.store).await;
    let b = open(&db.store).await;
    let v = b.snapshot().version();
    change(&a, Change::SetPercentage(100), None).await;
    let id = Uuid::new_v4().to_string();
    assert!(!b.is_eligible(&id).eligible, "b still decides with its cached snapshot");
    b.reload().await.unwrap();
    assert!(b.is_eligible(&id).eligible);
    assert_ne!(b.snapshot().version(), v, "a reload makes a new snapshot");
}

async fn record_metrics_validates_ids(db: &TestDatabase) {
    let store = &db.store;
    let m = open(store).await;
    store.upsert_repository("o", "n", &RepositoryStats::default()).await.unwrap();
    m.record_outcome(outcome("o/n", Processor::Inngest, true, Some(5), None)).await.unwrap();
    assert!(RepositoryRef::new("bad id").unwrap_err().contains("`bad id`"), "refused by the type");
    let err = m.record_outcome(outcome("ghost/ship", Processor::Inngest, true, None, None)).await.unwrap_err();
    assert!(err.to_string().contains("`ghost/ship`"), "{err}");
    let buckets = store.list_buckets(m.stored_config().id).await.unwrap();
    let repos: HashSet<Uuid> = buckets.iter().map(|b| b.repository_id).collect();
    assert_eq!(repos.len(), 1);
}

/// The reference rules, except that `evaluate_health` (once armed) tells the test it was
/// entered and waits for the test to release it: a barrier inside the health evaluation.
struct GatedHealth {
    inner: NativePolicy,
    armed: std::sync::atomic::AtomicBool,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Policy for GatedHealth {
    fn version(&self) -> Option<rollout::engine::PolicyVersion> {
        self.inner.version()
    }
    fn is_eligible(
        &self,
        c: &Arc<rollout::engine::ConfigSnapshot>,
        r: &rollout_policy::Repository,
    ) -> rollout::engine::CallResult<rollout_policy::Eligibility> {
        self.inner.is_eligible(c, r)
    }
    fn is_eligible_batch(
        &self,
        c: &Arc<rollout::engine::ConfigSnapshot>,
        r: &[rollout_policy::Repository],
    ) -> rollout::engine::CallResult<Vec<rollout_policy::Eligibility>> {
        self.inner.is_eligible_batch(c, r)
    }
    fn route(
        &self,
        c: &Arc<rollout::engine::ConfigSnapshot>,
        r: &rollout_policy::Repository,
        j: &Job,
    ) -> rollout::engine::CallResult<rollout_policy::RouteDecision> {
        self.inner.route(c, r, j)
    }
    fn route_batch(
        &self,
        c: &Arc<rollout::engine::ConfigSnapshot>,
        r: &[(rollout_policy::Repository, Job)],
    ) -> rollout::engine::CallResult<Vec<rollout_policy::RouteDecision>> {
        self.inner.route_batch(c, r)
    }
    fn categorize(&self, s: &RepositoryStats) -> rollout::engine::CallResult<rollout_policy::Categorization> {
        self.inner.categorize(s)
    }
    fn evaluate_health(
        &self,
        c: &rollout_policy::Config,
        w: &[rollout_policy::ProcessorWindow],
    ) -> rollout::engine::CallResult<rollout_policy::Health> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let _ = self.entered.lock().unwrap().send(());
            // off the worker: tasks queued on it (a connection going back to the pool) go on
            tokio::task::block_in_place(|| {
                let _ = self.release.lock().unwrap().recv_timeout(std::time::Duration::from_secs(60));
            });
        }
        self.inner.evaluate_health(c, w)
    }
}

/// Defect 3 (SPEC §2.5): a rollback could undo a change it never judged — the update was
/// guarded only by `percentage > 0 AND NOT stop`, so a ramp committed while the health
/// check evaluated was rolled back on errors from before it. With a barrier inside
/// `evaluate_health`, an operator ramps from 50 % to 80 %; the check, released, must leave
/// the ramp alone (compare-and-set on the judged window's start).
async fn a_ramp_made_while_health_is_judged_is_not_rolled_back(db: &TestDatabase) {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let gated = Arc::new(GatedHealth {
        inner: NativePolicy::new(),
        armed: std::sync::atomic::AtomicBool::new(false),
        entered: std::sync::Mutex::new(entered_tx),
        release: std::sync::Mutex::new(release_rx),
    });
    let m = Arc::new(Manager::open(db.store.clone(), gated.clone(), FEATURE, OpenOptions::default()).await.unwrap());
    let operator = open(&db.store).await;
    change(&m, Change::SetPercentage(50), Some("ramp")).await;
    fail_jobs(&m, 20, 10).await;
    gated.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let check = tokio::spawn({
        let m = m.clone();
        async move { m.check_and_trigger_auto_rollback().await }
    });
    // the check has read the configuration and is evaluating its window
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(std::time::Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the health check never reached evaluate_health");
    change(&operator, Change::SetPercentage(80), Some("ramp further")).await;
    release_tx.send(()).unwrap();
    let report = check.await.unwrap().unwrap();
    assert_eq!(report.action, HealthAction::Rollback, "the judged window (50 %) did ask for a rollback");
    assert!(!report.rolled_back, "the rollback undid a ramp it never judged: {report:?}");
    assert_eq!(db.store.get_config(FEATURE).await.unwrap().config.rollout_percentage, 80, "the ramp stays");
    assert_eq!(count(&db.store, "SELECT count(*) FROM rollout_history WHERE action = 'rollback'").await, 0);
}

/// Issue 12: p50/p95/p99 per processor in the stats and the health report, from outcomes
/// recorded through the manager; `None` for a processor without a timed job.
async fn stats_and_health_report_processing_time_percentiles(db: &TestDatabase) {
    let m = open(&db.store).await;
    let repo = Uuid::new_v4().to_string();
    let mut inputs = Vec::new();
    // 200 inngest jobs: 100 at 20 ms, 90 at 3000 ms, 10 at 90000 ms (and 5 untimed)
    for i in 0..200u64 {
        let ms = match i {
            0..=99 => 20,
            100..=189 => 3000,
            _ => 90_000,
        };
        inputs.push(outcome(&repo, Processor::Inngest, true, Some(ms), None));
    }
    for _ in 0..5 {
        inputs.push(outcome(&repo, Processor::Inngest, true, None, None));
    }
    // github_actions: jobs, none timed
    inputs.push(outcome(&repo, Processor::GithubActions, true, None, None));
    m.record_outcomes(inputs).await.unwrap();

    let bucket_mid = |ms: u64| rollout::manager::latency::bucket_value(rollout::manager::latency::bucket_of(ms));
    let s = m.get_rollout_stats().await.unwrap();
    let inngest = &s.processors["inngest"];
    assert_eq!(inngest.total_jobs, 205, "existing fields unchanged");
    assert_eq!(inngest.p50_processing_time_ms, Some(20.0), "the 100th of 200 is 20 ms, exact below 32 ms");
    assert_eq!(inngest.p95_processing_time_ms, Some(bucket_mid(3000)), "the 190th is 3000 ms");
    assert_eq!(inngest.p99_processing_time_ms, Some(bucket_mid(90_000)), "the 198th is 90 s");
    let p95 = inngest.p95_processing_time_ms.unwrap();
    assert!((p95 - 3000.0).abs() <= 3000.0 / 32.0, "p95 {p95} near 3000 ms");
    let gha = &s.processors["github_actions"];
    assert_eq!(gha.total_jobs, 1);
    assert_eq!(
        (gha.p50_processing_time_ms, gha.p95_processing_time_ms, gha.p99_processing_time_ms),
        (None, None, None)
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["processors"]["github_actions"]["p99_processing_time_ms"], serde_json::Value::Null);
    assert_eq!(json["processors"]["inngest"]["p50_processing_time_ms"], 20.0);

    let health = m.check_health().await.unwrap();
    assert_eq!(health.processors["inngest"].p99_processing_time_ms, Some(bucket_mid(90_000)));
}
