//! Explanations of the reference rules: the traced decision is the decision, and the trace
//! says which check decided it (SPEC §2, `policy/src/trace.rs`).

use proptest::prelude::*;
use proptest::strategy::Strategy;
use rollout_policy::*;

const ID: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

fn evaluator(c: Config) -> Evaluator {
    match Evaluator::new(c) {
        Ok(e) => e,
        Err(e) => panic!("valid config refused: {e}"),
    }
}

fn active(strategy: rollout_policy::Strategy, pct: u8) -> Config {
    Config { is_active: true, rollout_strategy: strategy, rollout_percentage: pct, ..Config::default() }
}

/// The reference stops at the first check that holds: in every section of the trace, the
/// last check is the only one that held, and it names `decided`.
fn assert_reference_chain(trace: &Trace, section: Section, decided: &str) {
    let checks: Vec<&Check> = trace.section(section).collect();
    let held: Vec<&str> = checks.iter().filter(|c| c.held).map(|c| c.rule.as_str()).collect();
    assert_eq!(held, [decided], "{section}: exactly one check holds, the deciding one: {checks:#?}");
    assert!(checks.last().is_some_and(|c| c.held), "{section}: the chain stops at the check that held: {checks:#?}");
    assert_eq!(trace.decided(section).map(|c| c.rule.as_str()), Some(decided));
    for c in &checks {
        assert!(!c.condition.is_empty() && !c.rule.is_empty(), "{c:?}");
    }
}

/// Sections appear in order, each one contiguous.
fn sections(trace: &Trace) -> Vec<Section> {
    let mut out: Vec<Section> = trace.checks.iter().map(|c| c.section).collect();
    out.dedup();
    out
}

fn check_route(e: &Evaluator, repo: &Repository, job: &Job) {
    let mut trace = Trace::new();
    let traced = e.route_traced(repo, job, &mut trace);
    assert_eq!(traced, e.route(repo, job), "{repo:?} {job:?}");
    assert_eq!(sections(&trace), [Section::Eligibility, Section::Routing]);
    assert_reference_chain(&trace, Section::Eligibility, traced.eligibility.reason.as_str());
    assert_reference_chain(&trace, Section::Routing, traced.rule.as_str());

    let mut trace = Trace::new();
    let traced = e.is_eligible_traced(repo, &mut trace);
    assert_eq!(traced, e.is_eligible(repo));
    assert_eq!(sections(&trace), [Section::Eligibility]);
    assert_reference_chain(&trace, Section::Eligibility, traced.reason.as_str());
}

fn check_categorize(stats: RepositoryStats) {
    let mut trace = Trace::new();
    let traced = categorize_traced(&stats, &mut trace);
    assert_eq!(traced, categorize(&stats), "{stats:?}");
    assert_eq!(sections(&trace), [Section::Categorization]);
    assert_reference_chain(&trace, Section::Categorization, traced.category.as_str());
}

fn check_health(config: &Config, windows: &[ProcessorWindow]) {
    let mut trace = Trace::new();
    let traced = evaluate_health_traced(config, windows, &mut trace);
    assert_eq!(traced, evaluate_health(config, windows), "{config:?} {windows:?}");
    assert_eq!(sections(&trace), [Section::HealthLevel, Section::HealthAction]);
    assert_reference_chain(&trace, Section::HealthLevel, traced.level.as_str());
    assert_reference_chain(&trace, Section::HealthAction, traced.action.as_str());
}

/// The example's grid of jobs: every combination of the values around each rule's bounds.
fn jobs() -> Vec<Job> {
    let mut out = Vec::new();
    for trigger in [None, Some(TriggerSource::Manual), Some(TriggerSource::Scheduled), Some(TriggerSource::Automatic)] {
        for days in [None, Some(0), Some(1), Some(2), Some(30)] {
            for prs in [0u64, 1, 10, 11] {
                for items in [None, Some(0), Some(50), Some(51)] {
                    out.push(Job {
                        trigger_source: trigger,
                        time_range_days: days,
                        pr_numbers: (1..=prs).collect(),
                        max_items: items,
                        job_type: None,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn traced_routing_decides_alike_on_the_whole_grid() {
    let ids = [ID, "owner/name"];
    let mut configs = Vec::new();
    for strategy in rollout_policy::Strategy::ALL {
        for pct in [0u8, 10, 25, 50, 75, 99, 100] {
            configs.push(active(*strategy, pct));
        }
    }
    configs.push(Config { emergency_stop: true, ..active(rollout_policy::Strategy::Percentage, 100) });
    configs.push(Config { is_active: false, ..active(rollout_policy::Strategy::Percentage, 100) });
    configs
        .push(Config { excluded_repositories: vec![ID.into()], ..active(rollout_policy::Strategy::Percentage, 100) });
    configs.push(Config { target_repositories: vec![ID.into()], ..active(rollout_policy::Strategy::Whitelist, 0) });
    let jobs = jobs();
    for config in configs {
        let e = evaluator(config);
        for id in ids {
            for category in std::iter::once(None).chain(Category::ALL.iter().copied().map(Some)) {
                let repo = Repository::parse(id, category);
                for job in &jobs {
                    check_route(&e, &repo, job);
                }
            }
        }
    }
}

#[test]
fn traced_categorization_decides_alike_around_every_bound() {
    let around = |bounds: &[u32]| -> Vec<u32> {
        let mut v: Vec<u32> = bounds.iter().flat_map(|&b| [b.saturating_sub(1), b, b.saturating_add(1)]).collect();
        v.push(u32::MAX);
        v
    };
    for stars in around(&[0, 50, 500, 5000]) {
        for contributors in around(&[2, 10, 50, 200]) {
            for prs in around(&[10, 100, 1000, 10000]) {
                check_categorize(RepositoryStats { star_count: stars, contributor_count: contributors, pr_count: prs });
            }
        }
    }
}

fn window(errors: u64, total: u64) -> ProcessorWindow {
    ProcessorWindow {
        processor: Processor::GithubActions,
        success_count: total.saturating_sub(errors),
        error_count: errors,
        total_jobs: total,
        average_processing_time: None,
    }
}

#[test]
fn traced_health_decides_alike_on_a_grid() {
    for auto in [false, true] {
        for stop in [false, true] {
            for pct in [0u8, 25] {
                for max in [0.0, 2.5, 5.0, 10.0, 12.0, 100.0] {
                    for min_jobs in [0u32, 10, 11] {
                        let config = Config {
                            is_active: true,
                            auto_rollback_enabled: auto,
                            emergency_stop: stop,
                            rollout_percentage: pct,
                            max_error_rate: max,
                            min_jobs_for_rollback: min_jobs,
                            ..Config::default()
                        };
                        for (errors, total) in [(0, 0), (0, 10), (1, 40), (1, 39), (1, 10), (5, 50), (6, 50), (3, 9)] {
                            check_health(&config, &[window(errors, total)]);
                            check_health(&config, &[window(errors, total), window(errors, total)]);
                        }
                        check_health(&config, &[]);
                    }
                }
            }
        }
    }
}

/// The full order of the eligibility checks (SPEC §2.2; lines 6 and 8 are two checks each).
const ELIGIBILITY_ORDER: [&str; 10] = [
    "emergency_stop",
    "inactive",
    "excluded",
    "targeted",
    "not_targeted",
    "in_percentage",
    "outside_percentage",
    "uncategorized",
    "category_included",
    "category_excluded",
];

#[test]
fn the_eligibility_trace_stops_at_the_line_that_decides() {
    use rollout_policy::Strategy::{Percentage, RepositorySize, Whitelist};
    let b = bucket(DEFAULT_FEATURE, &RepoId::parse(ID));
    // One configuration per line of SPEC §2.2, each also meeting every later line it can.
    let rows: [(Config, Option<Category>, EligibilityReason); 10] = [
        (
            Config {
                emergency_stop: true,
                is_active: false,
                excluded_repositories: vec![ID.into()],
                ..active(Percentage, 100)
            },
            None,
            EligibilityReason::EmergencyStop,
        ),
        (
            Config { is_active: false, excluded_repositories: vec![ID.into()], ..active(Percentage, 100) },
            None,
            EligibilityReason::Inactive,
        ),
        (
            Config {
                excluded_repositories: vec![ID.to_uppercase()],
                target_repositories: vec![ID.into()],
                ..active(Percentage, 100)
            },
            None,
            EligibilityReason::Excluded,
        ),
        (Config { target_repositories: vec![ID.into()], ..active(Whitelist, 0) }, None, EligibilityReason::Targeted),
        (active(Whitelist, 100), None, EligibilityReason::NotTargeted),
        (active(Percentage, b + 1), Some(Category::Test), EligibilityReason::InPercentage),
        (active(Percentage, b), Some(Category::Test), EligibilityReason::OutsidePercentage),
        (active(RepositorySize, 100), None, EligibilityReason::Uncategorized),
        (active(RepositorySize, 75), Some(Category::Large), EligibilityReason::CategoryIncluded),
        (active(RepositorySize, 74), Some(Category::Large), EligibilityReason::CategoryExcluded),
    ];
    for (config, category, reason) in rows {
        let e = evaluator(config);
        let mut trace = Trace::new();
        let d = e.is_eligible_traced(&Repository::parse(ID, category), &mut trace);
        assert_eq!(d.reason, reason);
        assert_eq!(d.bucket, b, "the bucket is reported whatever decided");
        let rules: Vec<&str> = trace.checks.iter().map(|c| c.rule.as_str()).collect();
        let n = ELIGIBILITY_ORDER.iter().position(|r| *r == reason.as_str()).map_or(0, |i| i + 1);
        assert_eq!(rules, ELIGIBILITY_ORDER.get(..n).unwrap_or_default(), "{reason}");
        let held: Vec<bool> = trace.checks.iter().map(|c| c.held).collect();
        let mut expected = vec![false; n];
        if let Some(last) = expected.last_mut() {
            *last = true;
        }
        assert_eq!(held, expected, "{reason}");
    }
}

#[test]
fn checks_show_the_values_compared() {
    let b = bucket(DEFAULT_FEATURE, &RepoId::parse(ID));
    let e = evaluator(active(rollout_policy::Strategy::Percentage, b));
    let mut trace = Trace::new();
    e.is_eligible_traced(&Repository::parse(ID, None), &mut trace);
    let values: Vec<&str> = trace.checks.iter().map(|c| c.values.as_str()).collect();
    let compared = format!("bucket {b} < rollout_percentage {b}: no");
    assert_eq!(
        values,
        [
            "emergency_stop = false",
            "is_active = true",
            &format!("`{ID}` is not among the 0 excluded ids"),
            &format!("`{ID}` is not among the 0 target ids"),
            "rollout_strategy = percentage",
            &compared,
            &compared,
        ]
    );

    let e = evaluator(active(rollout_policy::Strategy::RepositorySize, 60));
    let mut trace = Trace::new();
    e.is_eligible_traced(&Repository::parse(ID, Some(Category::Large)), &mut trace);
    let last = trace.checks.last().map(|c| (c.rule.as_str(), c.values.as_str()));
    assert_eq!(last, Some(("category_excluded", "rollout_percentage 60 ≥ threshold(large) 75: no")));

    let e = evaluator(active(rollout_policy::Strategy::Percentage, 100));
    let job = Job {
        pr_numbers: vec![1; 11],
        max_items: Some(51),
        trigger_source: Some(TriggerSource::Manual),
        ..Job::default()
    };
    let mut trace = Trace::new();
    e.route_traced(&Repository::parse(ID, None), &job, &mut trace);
    let routing: Vec<(&str, &str)> =
        trace.section(Section::Routing).map(|c| (c.rule.as_str(), c.values.as_str())).collect();
    assert_eq!(
        routing,
        [
            ("not_eligible", "eligible, reason in_percentage"),
            ("recent_data", "time_range_days = absent"),
            ("small_pr_batch", "pr_numbers has 11 entries"),
            ("manual_small_batch", "trigger_source = manual, max_items = 51"),
            ("historical_range", "time_range_days = absent"),
            ("large_batch", "max_items = 51"),
        ]
    );

    let mut trace = Trace::new();
    categorize_traced(&RepositoryStats { star_count: 0, contributor_count: 3, pr_count: 10 }, &mut trace);
    let first = trace.checks.first().map(|c| (c.rule.as_str(), c.values.as_str()));
    assert_eq!(first, Some(("test", "stars 0 = 0: yes, contributors 3 ≤ 2: no, PRs 10 ≤ 10: yes")));
    assert_eq!(trace.decided(Section::Categorization).map(|c| c.rule.as_str()), Some("small"));

    // Critical but within the maximum: SPEC §2.5 as amended rolls back anyway, by one more
    // check after `error_rate > max_error_rate`.
    let config = Config { rollout_percentage: 25, is_active: true, max_error_rate: 13.0, ..Config::default() };
    let mut trace = Trace::new();
    let h = evaluate_health_traced(&config, &[window(25, 200)], &mut trace);
    assert_eq!((h.level, h.action), (HealthLevel::Critical, HealthAction::Rollback));
    let checks: Vec<(Section, &str, &str, bool)> =
        trace.checks.iter().map(|c| (c.section, c.rule.as_str(), c.values.as_str(), c.held)).collect();
    assert_eq!(
        checks,
        [
            (Section::HealthLevel, "critical", "error_rate 12.50 (100 × 25 / 200) > 10.00: yes", true),
            (Section::HealthAction, "none", "auto_rollback_enabled = true", false),
            (Section::HealthAction, "none", "emergency_stop = false", false),
            (Section::HealthAction, "none", "rollout_percentage = 25", false),
            (Section::HealthAction, "none", "total jobs 200 < min_jobs_for_rollback 10: no", false),
            (Section::HealthAction, "rollback", "error_rate 12.50 (100 × 25 / 200) > max_error_rate 13.00: no", false),
            (Section::HealthAction, "rollback", "error_rate 12.50 (100 × 25 / 200) > 10.00: yes", true),
        ]
    );
}

/// A tracer of one's own: the rules are generic over [`Tracer`], and the untraced functions
/// are the generic ones with [`NoTrace`].
#[test]
fn any_tracer_sees_the_same_checks_and_decision() {
    #[derive(Default)]
    struct Count {
        checks: usize,
        held: usize,
    }
    impl Tracer for Count {
        fn check(
            &mut self,
            _: Section,
            _: &'static str,
            _: &'static str,
            _: impl FnOnce() -> String,
            held: bool,
        ) -> bool {
            self.checks += 1;
            self.held += usize::from(held);
            held
        }
    }
    let e = evaluator(active(rollout_policy::Strategy::RepositorySize, 50));
    let repo = Repository::parse(ID, Some(Category::Medium));
    let job = Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() };
    let mut count = Count::default();
    let mut trace = Trace::new();
    let (counted, traced) = (e.route_with(&repo, &job, &mut count), e.route_traced(&repo, &job, &mut trace));
    assert_eq!(counted, e.route_with(&repo, &job, &mut NoTrace));
    assert_eq!(counted, e.route(&repo, &job));
    assert_eq!(counted, traced);
    assert_eq!((count.checks, count.held), (trace.checks.len(), 2));
}

#[test]
fn record_untraced_decisions_as_one_held_check_per_section() {
    let e = evaluator(active(rollout_policy::Strategy::Percentage, 100));
    let d = e.route(&Repository::parse(ID, None), &Job { max_items: Some(51), ..Job::default() });
    let mut trace = Trace::new();
    trace.record_route(&d, UNTRACED);
    let checks: Vec<(Section, &str, &str, bool)> =
        trace.checks.iter().map(|c| (c.section, c.rule.as_str(), c.condition.as_str(), c.held)).collect();
    assert_eq!(
        checks,
        [(Section::Eligibility, "in_percentage", UNTRACED, true), (Section::Routing, "large_batch", UNTRACED, true),]
    );
    assert_eq!(trace.checks.last().map(|c| c.values.as_str()), Some("github_actions, rule large_batch"));

    let c = categorize(&RepositoryStats { star_count: 9000, contributor_count: 1, pr_count: 1 });
    let mut trace = Trace::new();
    trace.record_categorization(&c, UNTRACED);
    assert_eq!(trace.decided(Section::Categorization).map(|c| c.rule.as_str()), Some("enterprise"));

    let h = evaluate_health(&Config { rollout_percentage: 5, ..Config::default() }, &[window(1, 100)]);
    let mut trace = Trace::new();
    trace.record_health(&h, UNTRACED);
    assert_eq!(trace.decided(Section::HealthLevel).map(|c| c.rule.as_str()), Some("ok"));
    assert_eq!(
        trace.decided(Section::HealthAction).map(|c| (c.rule.as_str(), c.values.as_str())),
        Some(("none", h.reason.as_str()))
    );
}

fn any_strategy() -> impl Strategy<Value = rollout_policy::Strategy> {
    prop::sample::select(rollout_policy::Strategy::ALL.to_vec())
}

fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![any::<u128>().prop_map(|v| RepoId::Uuid(v).to_string()), "[a-z0-9/_-]{0,40}"]
}

fn any_job() -> impl Strategy<Value = Job> {
    (
        prop::option::of(prop_oneof![0u32..4, any::<u32>()]),
        prop::collection::vec(any::<u64>(), 0..14),
        prop::option::of(prop::sample::select(TriggerSource::ALL.to_vec())),
        prop::option::of(prop_oneof![45u32..56, any::<u32>()]),
    )
        .prop_map(|(time_range_days, pr_numbers, trigger_source, max_items)| Job {
            job_type: None,
            time_range_days,
            pr_numbers,
            trigger_source,
            max_items,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The traced decision is the decision, and the trace names it.
    #[test]
    fn traced_route_is_the_route(
        id in any_id(),
        cat in prop::option::of(prop::sample::select(Category::ALL.to_vec())),
        strategy in any_strategy(),
        pct in 0u8..=100,
        flags in any::<(bool, bool, bool, bool)>(),
        job in any_job(),
    ) {
        let (stop, inactive, excluded, targeted) = flags;
        let config = Config {
            emergency_stop: stop,
            is_active: !inactive,
            excluded_repositories: if excluded { vec![id.clone()] } else { vec![] },
            target_repositories: if targeted { vec![id.to_uppercase()] } else { vec![] },
            ..active(strategy, pct)
        };
        check_route(&evaluator(config), &Repository::parse(&id, cat), &job);
    }

    #[test]
    fn traced_categorize_is_categorize(s in prop_oneof![0u32..6000, any::<u32>()], c in prop_oneof![0u32..250, any::<u32>()], p in prop_oneof![0u32..12000, any::<u32>()]) {
        check_categorize(RepositoryStats { star_count: s, contributor_count: c, pr_count: p });
    }

    #[test]
    fn traced_health_is_health(
        flags in any::<(bool, bool)>(),
        pct in 0u8..=100,
        max in 0.0f64..=100.0,
        min_jobs in 0u32..30,
        windows in prop::collection::vec((0u64..50, 0u64..60), 0..4),
    ) {
        let config = Config {
            auto_rollback_enabled: flags.0,
            emergency_stop: flags.1,
            rollout_percentage: pct,
            max_error_rate: max,
            min_jobs_for_rollback: min_jobs,
            ..Config::default()
        };
        let windows: Vec<ProcessorWindow> = windows.into_iter().map(|(e, extra)| window(e, e + extra)).collect();
        check_health(&config, &windows);
    }
}
