//! Properties of the reference rules over arbitrary inputs (SPEC §2).

use proptest::prelude::*;
use proptest::strategy::Strategy;
use rollout_policy::*;

fn any_strategy() -> impl Strategy<Value = rollout_policy::Strategy> {
    prop_oneof![
        Just(rollout_policy::Strategy::Percentage),
        Just(rollout_policy::Strategy::Whitelist),
        Just(rollout_policy::Strategy::RepositorySize)
    ]
}

fn any_category() -> impl Strategy<Value = Option<Category>> {
    prop::option::of(prop::sample::select(Category::ALL.to_vec()))
}

fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u128>().prop_map(|v| RepoId::Uuid(v).to_string()),
        any::<u128>().prop_map(|v| RepoId::Uuid(v).to_string().to_uppercase()),
        "[a-z0-9/_-]{0,40}",
    ]
}

fn any_trigger() -> impl Strategy<Value = Option<TriggerSource>> {
    prop::option::of(prop::sample::select(TriggerSource::ALL.to_vec()))
}

fn any_job() -> impl Strategy<Value = Job> {
    (
        prop::option::of(any::<u32>()),
        prop::collection::vec(any::<u64>(), 0..20),
        any_trigger(),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(time_range_days, pr_numbers, trigger_source, max_items)| Job {
            job_type: None,
            time_range_days,
            pr_numbers,
            trigger_source,
            max_items,
        })
}

fn config(strategy: rollout_policy::Strategy, pct: u8, targets: Vec<String>, excluded: Vec<String>) -> Config {
    Config {
        is_active: true,
        rollout_strategy: strategy,
        rollout_percentage: pct,
        target_repositories: targets,
        excluded_repositories: excluded,
        ..Config::default()
    }
}

fn eligible(c: Config, repo: &Repository) -> Eligibility {
    match Evaluator::new(c) {
        Ok(e) => e.is_eligible(repo),
        Err(e) => panic!("valid config refused: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Raising the percentage only ever adds repositories, for every strategy.
    #[test]
    fn ramp_is_monotonic(id in any_id(), cat in any_category(), strategy in any_strategy(), p in 0u8..=100, q in 0u8..=100, targeted in any::<bool>()) {
        let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
        let targets = if targeted { vec![id.clone()] } else { vec![] };
        let repo = Repository::parse(&id, cat);
        let a = eligible(config(strategy, lo, targets.clone(), vec![]), &repo);
        let b = eligible(config(strategy, hi, targets, vec![]), &repo);
        prop_assert!(!a.eligible || b.eligible, "eligible at {lo}% but not at {hi}%: {a:?} {b:?}");
        prop_assert_eq!(a.bucket, b.bucket);
    }

    /// An excluded repository is never eligible, whatever else holds.
    #[test]
    fn exclusion_always_wins(id in any_id(), cat in any_category(), strategy in any_strategy(), pct in 0u8..=100) {
        let repo = Repository::parse(&id, cat);
        // Excluded in another spelling of the same id, and targeted too.
        let excluded = vec![id.to_uppercase(), id.clone()];
        let d = eligible(config(strategy, pct, vec![id.clone()], excluded), &repo);
        prop_assert!(!d.eligible);
        prop_assert_eq!(d.reason, EligibilityReason::Excluded);
    }

    /// The emergency stop admits nobody.
    #[test]
    fn emergency_stop_is_never_eligible(id in any_id(), cat in any_category(), strategy in any_strategy(), pct in 0u8..=100, job in any_job()) {
        let mut c = config(strategy, pct, vec![id.clone()], vec![]);
        c.emergency_stop = true;
        let repo = Repository::parse(&id, cat);
        let e = match Evaluator::new(c) { Ok(e) => e, Err(e) => panic!("{e}") };
        prop_assert!(!e.is_eligible(&repo).eligible);
        let r = e.route(&repo, &job);
        prop_assert_eq!((r.processor, r.rule), (Processor::Inngest, RouteRule::NotEligible));
    }

    /// Routing is total, and a non-eligible repository always goes to inngest.
    #[test]
    fn route_is_total(id in any_id(), cat in any_category(), strategy in any_strategy(), pct in 0u8..=100, job in any_job()) {
        let e = match Evaluator::new(config(strategy, pct, vec![], vec![])) { Ok(e) => e, Err(e) => panic!("{e}") };
        let repo = Repository::parse(&id, cat);
        let d = e.route(&repo, &job);
        prop_assert!(d.eligibility.bucket < 100);
        if !d.eligibility.eligible {
            prop_assert_eq!((d.processor, d.rule), (Processor::Inngest, RouteRule::NotEligible));
        } else {
            prop_assert_ne!(d.rule, RouteRule::NotEligible);
        }
    }

    /// Categorisation is total and consistent.
    #[test]
    fn categorize_is_total(s in any::<u32>(), c in any::<u32>(), p in any::<u32>()) {
        let r = categorize(&RepositoryStats { star_count: s, contributor_count: c, pr_count: p });
        prop_assert!(r.monthly_activity_score <= 100);
        prop_assert_eq!(r.priority_level, r.category.priority_level());
        prop_assert_eq!(r.is_test_repository, r.category == Category::Test);
    }

    /// Any percentage above 100 is refused, naming the field; never a panic.
    #[test]
    fn bad_percentage_is_refused(pct in 101u8..=255) {
        let err = Evaluator::new(config(rollout_policy::Strategy::Percentage, pct, vec![], vec![])).err();
        prop_assert_eq!(err.map(|e| e.field), Some("rollout_percentage".to_owned()));
    }
}

/// Buckets are uniform: chi-square over 100,000 ids against 100 equal cells, p > 0.001.
#[test]
fn buckets_are_uniform() {
    // A fixed splitmix64 stream, so the test is deterministic.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    const N: usize = 100_000;
    let ids: Vec<RepoId> = (0..N).map(|_| RepoId::Uuid((u128::from(next()) << 64) | u128::from(next()))).collect();
    let mut counts = [0u32; 100];
    for id in &ids {
        counts[usize::from(bucket(DEFAULT_FEATURE, id))] += 1;
    }
    let expected = N as f64 / 100.0;
    let chi2: f64 = counts.iter().map(|&c| (f64::from(c) - expected).powi(2) / expected).sum();
    // The 0.999 quantile of chi-square with 99 degrees of freedom.
    const CRITICAL: f64 = 148.23;
    assert!(chi2 < CRITICAL, "chi-square {chi2:.1} ≥ {CRITICAL}: buckets are not uniform ({counts:?})");
    // And nobody is in at 0 %: the original's signed hash admitted about half (SPEC §7.1).
    let zero =
        Evaluator::new(config(rollout_policy::Strategy::Percentage, 0, vec![], vec![])).map_err(|e| e.to_string());
    let zero = zero.unwrap_or_else(|e| panic!("{e}"));
    let admitted = ids
        .iter()
        .take(2000)
        .filter(|id| zero.is_eligible(&Repository { id: (*id).clone(), category: None }).eligible)
        .count();
    assert_eq!(admitted, 0, "{admitted} of 2000 repositories eligible at 0 %");
}
