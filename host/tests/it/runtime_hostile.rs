//! Hostile policies: each is contained (the call falls back, the instance is replaced, the
//! host keeps answering) or refused before it serves (the previous version keeps serving).

use crate::runtime_support::*;
use rollout::engine::{NativePolicy, Policy};
use rollout::runtime::{
    CallError, Limits, LoadError, Runtime, RuntimeEvent, RuntimeOptions, SafetyProperty, SwapError, BUNDLED_POLICY,
};
use rollout_hostile::{TRAP_STARS, TRIGGER_BOMB, TRIGGER_LOOP, TRIGGER_TRAP};
use rollout_policy::{EligibilityReason, Processor, RepositoryStats, RouteRule};

/// The host still answers, and answers like the reference rules.
fn assert_healthy(runtime: &Runtime) {
    let cfg = config(50);
    for i in 0..50 {
        let (r, j) = (repo(i), job(i));
        assert_eq!(runtime.route(&cfg, &r, &j), NativePolicy::new().route(&cfg, &r, &j), "repository {i}");
    }
}

fn contained(trigger_id: &str, limits: Limits) -> rollout::runtime::VersionStatus {
    let runtime = Runtime::new(RuntimeOptions { limits, ..options() }).expect("runtime");
    runtime.load_bytes(&fixture("triggers"), "test").expect("load");
    assert_healthy(&runtime);
    let e = runtime.route(&config(50), &trigger(trigger_id), &job(0)).unwrap_err();
    assert!(e.is_failure(), "{e}");
    // what every caller that must answer makes of it (SPEC §2.3)
    let d = rollout::engine::fallback_route();
    assert_eq!((d.processor, d.rule), (Processor::Inngest, RouteRule::PolicyError));
    assert_eq!(d.eligibility.reason, EligibilityReason::PolicyError);
    // The trapped instance was replaced; the next calls answer normally.
    assert_healthy(&runtime);
    let status = runtime.status();
    let active = status.active.expect("a version serves");
    assert_eq!(active.policy.name, "hostile-triggers");
    assert_eq!(active.counts.fallbacks, 1);
    assert_eq!(active.counts.traps, 1);
    assert_eq!(active.counts.decisions, 100);
    active
}

#[test]
fn an_infinite_loop_is_interrupted_at_the_deadline() {
    let status = contained(TRIGGER_LOOP, Limits::default());
    assert_eq!((status.counts.timeouts, status.counts.memory_failures), (1, 0));
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    // A deadline far beyond the time the bomb needs, so the memory cap is what stops it
    // even when a loaded CI machine stretches the allocation loop past the default 10 ms
    // (CI once counted this bomb as a timeout).
    let status = contained(TRIGGER_BOMB, Limits { epoch_ticks: 30_000, ..Limits::default() });
    assert_eq!((status.counts.timeouts, status.counts.memory_failures), (0, 1));
}

#[test]
fn a_trap_falls_back() {
    let status = contained(TRIGGER_TRAP, Limits::default());
    assert_eq!((status.counts.timeouts, status.counts.memory_failures), (0, 0));
}

#[test]
fn a_trap_inside_a_batch_falls_back_for_the_whole_batch() {
    let runtime = runtime_with(&fixture("triggers"));
    let cfg = config(100);
    let mut requests: Vec<_> = (0..10).map(|i| (repo(i), job(i))).collect();
    requests.push((trigger(TRIGGER_TRAP), job(0)));
    assert!(matches!(runtime.route_batch(&cfg, &requests), Err(CallError::Trap(_))));
    let repos: Vec<_> = vec![repo(1), trigger(TRIGGER_LOOP)];
    assert!(matches!(runtime.is_eligible_batch(&cfg, &repos), Err(CallError::Timeout(_))));
    let counts = runtime.status().active.unwrap().counts;
    assert_eq!((counts.fallbacks, counts.traps, counts.timeouts), (13, 2, 1));
    assert_healthy(&runtime);
}

#[test]
fn traps_while_building_the_evaluator_or_in_other_functions_fall_back() {
    let runtime = runtime_with(&fixture("triggers"));
    assert!(matches!(runtime.route(&config_named(TRIGGER_TRAP), &repo(1), &job(1)), Err(CallError::Trap(_))));
    assert!(matches!(
        runtime.is_eligible(&config_named(TRIGGER_BOMB), &repo(1)),
        Err(CallError::MemoryExhausted(_) | CallError::Timeout(_))
    ));
    let stats = RepositoryStats { star_count: TRAP_STARS, contributor_count: 1, pr_count: 1 };
    assert!(matches!(runtime.categorize(&stats), Err(CallError::Trap(_))));
    let fine = RepositoryStats { star_count: 1, contributor_count: 1, pr_count: 1 };
    assert_eq!(runtime.categorize(&fine), NativePolicy::new().categorize(&fine));
    assert!(matches!(runtime.evaluate_health(config_named(TRIGGER_LOOP).config(), &[]), Err(CallError::Timeout(_))));
    assert_eq!(runtime.status().active.unwrap().counts.traps, 4);
    assert_healthy(&runtime);
}

/// Load `bytes` into a runtime serving the reference policy; the refusal, after checking
/// that the reference still serves and the refusal was reported.
fn refused(bytes: &[u8]) -> SwapError {
    let runtime = runtime_with(BUNDLED_POLICY);
    let events = runtime.subscribe();
    let before = runtime.policy_version();
    let error = runtime.load_bytes(bytes, "hostile").expect_err("refused");
    assert_eq!(runtime.policy_version(), before, "the previous version keeps serving");
    assert_healthy(&runtime);
    let status = runtime.status();
    assert_eq!(status.last_error.expect("the refusal is kept").message, error.to_string());
    assert!(status.previous.is_none(), "a refused version is not kept for revert");
    match events.try_recv() {
        Ok(RuntimeEvent::Refused { source, error: message, .. }) => {
            assert_eq!(source, "hostile");
            assert_eq!(message, error.to_string());
        }
        other => panic!("expected a refusal event, got {other:?}"),
    }
    // `validate_bytes` refuses the same way without touching the status (a counterexample
    // of a fresh sample differs from one check to the next; the property does not).
    match (runtime.validate_bytes(bytes, "hostile").expect_err("refused"), &error) {
        (SwapError::Unsafe { property: again, .. }, SwapError::Unsafe { property, .. }) => assert_eq!(again, *property),
        (again, error) => assert_eq!(again.to_string(), error.to_string()),
    }
    error
}

#[test]
fn the_wrong_world_is_refused() {
    let empty = wat::parse_str("(component)").unwrap();
    assert!(matches!(refused(&empty), SwapError::Load(LoadError::World { .. })), "{:?}", refused(&empty));
    let importing = wat::parse_str(
        r#"(component (import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func)))))"#,
    )
    .unwrap();
    let e = refused(&importing);
    assert!(
        matches!(&e, SwapError::Load(LoadError::World { message, .. }) if message.contains("wasi:cli/environment")),
        "{e}"
    );
}

#[test]
fn garbage_and_core_modules_are_refused() {
    let e = refused(b"\0asm garbage, not a component");
    assert!(matches!(e, SwapError::Load(LoadError::Compile { .. })), "{e}");
    let core = wat::parse_str("(module (func (export \"info\")))").unwrap();
    let e = refused(&core);
    assert!(matches!(e, SwapError::Load(LoadError::Compile { .. })), "{e}");
}

#[test]
fn an_oversize_component_is_refused_before_compiling() {
    let runtime = runtime_with(BUNDLED_POLICY);
    let limit = runtime.options().max_upload_bytes;
    assert_eq!(limit, 8 << 20);
    let big = variant(BUNDLED_POLICY, &"x".repeat(limit));
    let e = runtime.load_bytes(&big, "big").unwrap_err();
    assert!(matches!(e, SwapError::TooLarge { size, limit: 8388608, .. } if size == big.len() as u64), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.wasm");
    std::fs::write(&path, &big).unwrap();
    assert!(matches!(runtime.load_file(&path), Err(SwapError::TooLarge { .. })));
    assert_eq!(runtime.policy_version().unwrap().name, "rollout-reference");
    // Just under the limit is accepted (a custom section does not change behaviour).
    let fits = variant(BUNDLED_POLICY, &"x".repeat(limit - BUNDLED_POLICY.len() - 64));
    assert!(runtime.load_bytes(&fits, "fits").is_ok());
}

fn unsafe_property(name: &str) -> (SafetyProperty, String) {
    match refused(&fixture(name)) {
        SwapError::Unsafe { property, counterexample } => (property, counterexample),
        other => panic!("`{name}` should break the safety contract, got: {other}"),
    }
}

#[test]
fn a_version_that_breaks_monotonicity_is_refused() {
    let (property, counterexample) = unsafe_property("nonmonotonic");
    assert_eq!(property, SafetyProperty::Monotonic);
    // 50 % admits the repository, 51 % (where the variant drops low buckets) does not.
    assert!(counterexample.contains("at 50 %") && counterexample.contains("at 51 %"), "{counterexample}");
    assert!(counterexample.contains("in_percentage") && counterexample.contains("outside_percentage"));
}

#[test]
fn a_version_that_ignores_the_emergency_stop_is_refused() {
    let (property, counterexample) = unsafe_property("ignores-stop");
    assert_eq!(property, SafetyProperty::EmergencyStop);
    assert!(counterexample.contains("emergency stop on") && counterexample.contains("is eligible"), "{counterexample}");
}

#[test]
fn a_version_that_routes_ineligible_repositories_away_from_inngest_is_refused() {
    let (property, counterexample) = unsafe_property("routes-ineligible");
    assert_eq!(property, SafetyProperty::IneligibleRoutesToInngest);
    assert!(counterexample.contains("routes to github_actions"), "{counterexample}");
}

/// Defect 16: the contract checked stops at 0, 50 and 100 % only; this variant ignores the
/// stop at exactly 37 %.
#[test]
fn defect_16_a_stop_ignored_at_one_percentage_is_refused() {
    let (property, counterexample) = unsafe_property("stop-at-37");
    assert_eq!(property, SafetyProperty::EmergencyStop);
    assert!(counterexample.contains("37 %") && counterexample.contains("emergency stop on"), "{counterexample}");
    assert!(counterexample.starts_with("fixed sample: "), "{counterexample}");
}

/// Defect 16: the sample was fixed (ASCII ids only); this variant admits non-ASCII ids at
/// 0 %, which only a fresh random sample finds.
#[test]
fn defect_16_a_version_tuned_to_the_fixed_sample_is_refused_by_the_fresh_one() {
    let (property, counterexample) = unsafe_property("unicode-zero");
    assert_eq!(property, SafetyProperty::ZeroPercent);
    assert!(counterexample.starts_with("fresh sample (seed 0x"), "{counterexample}");
    assert!(counterexample.contains(", 0 %,") && counterexample.contains("is eligible"), "{counterexample}");
}

/// A version whose decisions depend on the calls before them (every third job of an
/// eligible repository goes to the other processor) keeps every batch-only property; the
/// contract before version 3 never made a single call, so it served, and single decisions
/// (the HTTP API's) disagreed with batch ones for the same input.
#[test]
fn a_version_whose_single_calls_disagree_with_the_batch_is_refused() {
    let (property, counterexample) = unsafe_property("moody");
    assert_eq!(property, SafetyProperty::SingleAgrees);
    assert!(counterexample.contains("the batch"), "{counterexample}");
    assert!(counterexample.starts_with("fixed sample: "), "{counterexample}");
}

/// Defect 16: the contract never called `categorize`.
#[test]
fn defect_16_a_partial_categorize_is_refused() {
    let (property, counterexample) = unsafe_property("partial-categorize");
    assert_eq!(property, SafetyProperty::CategorizeTotal);
    assert!(counterexample.contains("categorize(") && counterexample.contains("trap"), "{counterexample}");
}

/// Defect 16: the contract never called `evaluate-health`; this variant traps when the
/// window is empty (a feature with no outcomes yet).
#[test]
fn defect_16_a_health_evaluation_that_traps_is_refused() {
    let (property, counterexample) = unsafe_property("panicky-health");
    assert_eq!(property, SafetyProperty::HealthAnswers);
    assert!(counterexample.contains("evaluate-health") && counterexample.contains("windows []"), "{counterexample}");
}

/// Defect 16: a cached verdict skipped the whole contract; now the fresh sample is checked
/// on every load, with a new seed each time.
#[test]
fn defect_16_every_load_checks_a_fresh_sample() {
    let bytes = variant(BUNDLED_POLICY, "fresh-every-load");
    let (first, second) = (Runtime::new(options()).unwrap(), Runtime::new(options()).unwrap());
    let a = first.load_bytes(&bytes, "a").unwrap();
    let b = second.load_bytes(&bytes, "b").unwrap();
    assert!(a.validated_decisions.is_some(), "the first load checks the fixed sample");
    assert_eq!(b.validated_decisions, None, "the fixed verdict is known to the process");
    let (fa, fb) = (a.fresh_check.expect("fresh check"), b.fresh_check.expect("fresh check"));
    assert_ne!(fa.seed, fb.seed);
    assert!(fa.decisions > 50_000 && fb.decisions > 50_000, "{fa:?} {fb:?}");
}

#[test]
fn a_version_whose_info_never_returns_is_refused() {
    let e = refused(&fixture("loop-info"));
    assert!(matches!(&e, SwapError::Load(LoadError::Call { error: CallError::Timeout(10), .. })), "{e}");
}

#[test]
fn the_trigger_fixture_itself_passes_the_contract() {
    let runtime = Runtime::new(options()).unwrap();
    // A distinct sha256, so no verdict from another test of this process is reused.
    let report = runtime.load_bytes(&variant(&fixture("triggers"), "passes"), "triggers").unwrap();
    assert!(report.validated_decisions.unwrap() > 100_000);
    assert_eq!(report.version.name, "hostile-triggers");
}
