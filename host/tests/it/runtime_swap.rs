//! Loading, swapping, reverting, automatic revert, the disk cache, watching and status.

use crate::runtime_support::*;
use rollout::engine::{CallError, ConfigSnapshot, NativePolicy, Policy};
use rollout::runtime::{CompileSource, Runtime, RuntimeEvent, RuntimeOptions, SwapError, BUNDLED_POLICY};
use rollout_hostile::TRIGGER_TRAP;
use rollout_policy::{Config, RepositoryStats, Strategy};
use std::time::{Duration, Instant};

#[test]
fn decisions_match_the_native_rules() {
    let runtime = runtime_with(BUNDLED_POLICY);
    for (p, strategy) in [(0, Strategy::Percentage), (37, Strategy::Percentage), (50, Strategy::RepositorySize)] {
        let cfg = ConfigSnapshot::new(Config {
            is_active: true,
            rollout_percentage: p,
            rollout_strategy: strategy,
            target_repositories: vec![repo(3).id.to_string()],
            excluded_repositories: vec![repo(4).id.to_string()],
            ..Config::default()
        });
        let requests: Vec<_> = (0..500).map(|i| (repo(i), job(i))).collect();
        let repos: Vec<_> = requests.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(runtime.route_batch(&cfg, &requests), NativePolicy::new().route_batch(&cfg, &requests));
        assert_eq!(runtime.is_eligible_batch(&cfg, &repos), NativePolicy::new().is_eligible_batch(&cfg, &repos));
        for (r, j) in requests.iter().take(100) {
            assert_eq!(runtime.route(&cfg, r, j), NativePolicy::new().route(&cfg, r, j));
            assert_eq!(runtime.is_eligible(&cfg, r), NativePolicy::new().is_eligible(&cfg, r));
        }
    }
    let stats = RepositoryStats { star_count: 40, contributor_count: 3, pr_count: 90 };
    assert_eq!(runtime.categorize(&stats), NativePolicy::new().categorize(&stats));
    assert_eq!(
        runtime.evaluate_health(config(10).config(), &[]),
        NativePolicy::new().evaluate_health(config(10).config(), &[])
    );
    assert!(runtime.route_batch(&config(10), &[]).unwrap().is_empty());
    let counts = runtime.status().active.unwrap().counts;
    assert_eq!(counts.fallbacks, 0);
    assert_eq!(counts.decisions, 3 * (500 + 500 + 200) + 2);
}

#[test]
fn many_configurations_alternate_without_mixing_up_evaluators() {
    let runtime = runtime_with(BUNDLED_POLICY);
    let configs: Vec<_> = (0..20).map(|p| config(p * 5)).collect();
    for round in 0..3 {
        for (k, cfg) in configs.iter().enumerate() {
            let r = repo(round * 100 + k as u64);
            assert_eq!(runtime.is_eligible(cfg, &r), NativePolicy::new().is_eligible(cfg, &r), "config {k}");
        }
    }
    // A configuration the policy refuses falls back and counts as a refusal, not a trap.
    let bad = ConfigSnapshot::new(Config { feature_name: String::new(), ..config(10).config().clone() });
    assert!(matches!(runtime.route(&bad, &repo(1), &job(1)), Err(CallError::Config(c)) if c.field == "feature_name"));
    let counts = runtime.status().active.unwrap().counts;
    assert_eq!((counts.config_refusals, counts.traps, counts.fallbacks), (1, 0, 1));
}

#[test]
fn without_a_policy_every_decision_falls_back() {
    let runtime = Runtime::new(options()).unwrap();
    assert_eq!(runtime.policy_version(), None);
    assert_eq!(runtime.route(&config(100), &repo(1), &job(0)), Err(CallError::NoPolicy));
    assert_eq!(runtime.is_eligible(&config(100), &repo(1)), Err(CallError::NoPolicy));
    assert_eq!(runtime.categorize(&RepositoryStats::default()), Err(CallError::NoPolicy));
    assert_eq!(runtime.route_batch(&config(100), &[(repo(1), job(1)), (repo(2), job(2))]), Err(CallError::NoPolicy));
    let status = runtime.status();
    assert!(status.active.is_none());
    assert_eq!(status.fallbacks_without_policy, 5);
    assert!(matches!(runtime.revert(), Err(SwapError::NoPrevious)));
}

#[test]
fn swap_keeps_the_previous_version_for_revert() {
    let runtime = Runtime::new(options()).unwrap();
    let events = runtime.subscribe();
    let a = runtime.load_bytes(BUNDLED_POLICY, "a").unwrap();
    assert!(a.previous.is_none());
    let triggers = fixture("triggers");
    let b = runtime.load_bytes(&triggers, "b").unwrap();
    assert_eq!(b.previous.as_ref(), Some(&a.version));
    assert_eq!(runtime.policy_version().unwrap().name, "hostile-triggers");
    // Loading what already serves changes nothing.
    let same = runtime.load_bytes(&triggers, "b again").unwrap();
    assert!(same.unchanged);
    let r = runtime.revert().unwrap();
    assert_eq!((r.version.clone(), r.previous.clone()), (a.version.clone(), Some(b.version.clone())));
    assert_eq!(runtime.policy_version(), Some(a.version.clone()));
    // Reverting again swaps back.
    runtime.revert().unwrap();
    assert_eq!(runtime.policy_version(), Some(b.version.clone()));
    // Both are known: loading either again reuses the compiled code and the verdict.
    let again = runtime.load_bytes(BUNDLED_POLICY, "a again").unwrap();
    assert_eq!((again.compiled, again.validated_decisions), (CompileSource::Memory, None));
    let status = runtime.status();
    assert_eq!(status.swaps, 5);
    assert_eq!(status.previous.unwrap().policy, b.version);
    let received: Vec<RuntimeEvent> = events.try_iter().collect();
    assert_eq!(received.len(), 5);
    assert!(received.iter().all(|e| matches!(e, RuntimeEvent::Activated { .. })));
    assert!(matches!(&received[2], RuntimeEvent::Activated { source, .. } if source == "revert"));
}

#[test]
fn validate_bytes_checks_without_activating() {
    let runtime = runtime_with(BUNDLED_POLICY);
    let checked = runtime.validate_bytes(&fixture("triggers"), "upload").unwrap();
    assert_eq!(checked.name, "hostile-triggers");
    assert_eq!(runtime.policy_version().unwrap().name, "rollout-reference");
    let report = runtime.load_bytes(&fixture("triggers"), "upload").unwrap();
    assert_eq!((report.compiled, report.validated_decisions), (CompileSource::Memory, None));
}

#[test]
fn a_new_version_that_keeps_failing_is_reverted_automatically() {
    let options = RuntimeOptions { auto_revert_window: 20, auto_revert_threshold: 0.25, ..options() };
    let runtime = Runtime::new(options).unwrap();
    let good = runtime.load_bytes(BUNDLED_POLICY, "good").unwrap().version;
    let events = runtime.subscribe();
    let bad = runtime.load_bytes(&fixture("triggers"), "bad").unwrap().version;
    let failing = config_named(TRIGGER_TRAP);
    // 5 of 20 is the threshold; the 6th failure reverts.
    for _ in 0..5 {
        assert!(matches!(runtime.route(&failing, &repo(1), &job(1)), Err(CallError::Trap(_))));
        assert_eq!(runtime.policy_version().as_ref(), Some(&bad));
    }
    assert_eq!(runtime.status().probation.unwrap().failed_calls, 5);
    let _ = runtime.route(&failing, &repo(1), &job(1));
    assert_eq!(runtime.policy_version().as_ref(), Some(&good));
    let status = runtime.status();
    assert_eq!(status.auto_reverts, 1);
    assert_eq!(status.previous.unwrap().policy, bad);
    assert!(status.last_error.unwrap().message.contains("fell back on 6 of its first 6 calls"));
    assert!(status.probation.is_none(), "a version reverted to is not on probation");
    let bad_counts = status.versions.iter().find(|v| v.policy == bad).unwrap().counts;
    assert_eq!((bad_counts.fallbacks, bad_counts.traps), (6, 6));
    let received: Vec<_> = events.try_iter().collect();
    match received.as_slice() {
        [RuntimeEvent::Activated { .. }, RuntimeEvent::ProbationFailed { version, calls: 6, failed_calls: 6, reverted_to, .. }] =>
        {
            assert_eq!(version, &bad);
            assert_eq!(reverted_to.as_ref(), Some(&good));
        }
        other => panic!("unexpected events {other:?}"),
    }
    // The reverted-to version serves normally.
    assert_eq!(
        runtime.route(&config(100), &repo(1), &job(0)),
        NativePolicy::new().route(&config(100), &repo(1), &job(0))
    );
}

#[test]
fn a_version_that_passes_probation_stays() {
    let options = RuntimeOptions { auto_revert_window: 10, auto_revert_threshold: 0.25, ..options() };
    let runtime = Runtime::new(options).unwrap();
    runtime.load_bytes(BUNDLED_POLICY, "good").unwrap();
    runtime.load_bytes(&fixture("triggers"), "new").unwrap();
    for i in 0..10 {
        runtime.route(&config(50), &repo(i), &job(i)).unwrap();
    }
    let failing = config_named(TRIGGER_TRAP);
    for _ in 0..10 {
        let _ = runtime.route(&failing, &repo(1), &job(1));
    }
    let status = runtime.status();
    assert_eq!(status.active.unwrap().policy.name, "hostile-triggers");
    assert!(status.probation.unwrap().over);
    assert_eq!(status.auto_reverts, 0);
}

#[test]
fn the_disk_cache_skips_compilation_and_validation_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = RuntimeOptions { cache_dir: Some(dir.path().join("cache")), ..options() };
    // Unique bytes, so nothing of this process is reused.
    let bytes = variant(BUNDLED_POLICY, "disk-cache-test");
    let first = Runtime::new(options.clone()).unwrap().load_bytes(&bytes, "first").unwrap();
    assert_eq!(first.compiled, CompileSource::Compiled);
    assert!(first.validated_decisions.is_some());
    let files: Vec<String> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // The artifact, its safety verdict and the cache's HMAC key.
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().any(|f| f == "key"), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with(&first.version.sha256) && f.ends_with(".cwasm")));

    let restarted = Runtime::new(options.clone()).unwrap();
    let second = restarted.load_bytes(&bytes, "second").unwrap();
    assert_eq!((second.compiled, second.validated_decisions), (CompileSource::DiskCache, None));
    assert_eq!(
        restarted.route(&config(100), &repo(1), &job(0)),
        NativePolicy::new().route(&config(100), &repo(1), &job(0))
    );

    // A damaged artifact is discarded and the component compiled again.
    let cwasm = files.iter().find(|f| f.ends_with(".cwasm")).unwrap();
    std::fs::write(dir.path().join("cache").join(cwasm), b"damaged").unwrap();
    let third = Runtime::new(options).unwrap().load_bytes(&bytes, "third").unwrap();
    assert_eq!(third.compiled, CompileSource::Compiled);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    // A generous bound so a broken watcher fails the test instead of hanging it.
    let give_up = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_watched_file_is_loaded_and_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    std::fs::write(&path, BUNDLED_POLICY).unwrap();
    let runtime = Runtime::new(options()).unwrap();
    let watch = runtime.watch(&path);
    wait_for("the first load", || runtime.policy_version().is_some());
    assert_eq!(runtime.policy_version().unwrap().name, "rollout-reference");

    let triggers = fixture("triggers");
    std::fs::write(&path, &triggers).unwrap();
    wait_for("the reload", || runtime.policy_version().unwrap().name == "hostile-triggers");
    assert_eq!(runtime.status().active.unwrap().source, format!("watch:{}", path.display()));

    // A broken file is refused; the serving version stays and the error is reported.
    std::fs::write(&path, b"not a component").unwrap();
    wait_for("the refusal", || runtime.status().last_error.is_some());
    assert_eq!(runtime.policy_version().unwrap().name, "hostile-triggers");
    assert!(runtime.status().last_error.unwrap().message.contains("is not a valid policy component"));
    watch.stop();
    // Stopped: changes are no longer picked up.
    std::fs::write(&path, BUNDLED_POLICY).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(runtime.policy_version().unwrap().name, "hostile-triggers");
}

#[test]
fn status_serialises_for_operators() {
    let runtime = runtime_with(BUNDLED_POLICY);
    let _ = runtime.route(&config(100), &repo(1), &job(0));
    let value = serde_json::to_value(runtime.status()).unwrap();
    let active = &value["active"];
    assert_eq!(active["name"], "rollout-reference");
    assert_eq!(active["version"], rollout_policy::POLICY_VERSION);
    assert_eq!(active["sha256"].as_str().unwrap().len(), 64);
    assert!(active["loaded_at"].is_string());
    assert_eq!(active["decisions"], 1);
    assert_eq!(active["fallbacks"], 0);
    assert_eq!(value["limits"]["epoch_ticks"], 10);
    assert_eq!(value["limits"]["memory_bytes"], 16 << 20);
    assert!(value["previous"].is_null());
    let event =
        serde_json::to_value(RuntimeEvent::Refused { source: "x".into(), error: "y".into(), at: chrono::Utc::now() })
            .unwrap();
    assert_eq!(event["event"], "refused");
}

/// A component built before the contract had the `explain` interface still loads, serves
/// like today's rules, and says it cannot explain.
#[test]
fn a_component_built_against_the_previous_contract_still_serves_and_cannot_explain() {
    let old = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/rollout_policy-rules-only.wasm"))
        .expect("the fixture");
    let runtime = runtime_with(&old);
    let cfg = config(60);
    for i in 0..200 {
        let (r, j) = (repo(i), job(i));
        assert_eq!(runtime.route(&cfg, &r, &j), NativePolicy::new().route(&cfg, &r, &j));
    }
    let query = rollout::engine::Query::Route(cfg.config().clone(), repo(1), job(1));
    assert!(matches!(runtime.explain(&query), Err(CallError::Unsupported(m)) if m.contains("explain")));
    // and today's component explains
    let new = runtime_with(BUNDLED_POLICY);
    assert_eq!(
        new.explain(&query).unwrap().decision,
        rollout::engine::Decision::Route(NativePolicy::new().route(&cfg, &repo(1), &job(1)).unwrap())
    );
}

mod single_decisions {
    use super::*;
    use proptest::prelude::*;
    use rollout_policy::{Category, Job, RepoId, Repository, TriggerSource};
    use std::sync::OnceLock;

    fn runtime() -> &'static Runtime {
        static RUNTIME: OnceLock<Runtime> = OnceLock::new();
        RUNTIME.get_or_init(|| runtime_with(BUNDLED_POLICY))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Single decisions — the scalar `packed` call for a UUID id and a job without a
        /// type or PR numbers, the typed call otherwise — are the native rules' decisions.
        #[test]
        fn single_decisions_through_either_call_are_the_native_rules(
            id in any::<u128>(),
            text in prop::option::of("[a-z0-9/_.-]{1,24}"),
            category in prop::option::of(prop::sample::select(Category::ALL)),
            trigger_source in prop::option::of(prop::sample::select(TriggerSource::ALL)),
            time_range_days in prop::option::of(0u32..400),
            max_items in prop::option::of(0u32..5000),
            job_type in prop::option::of(Just("capture".to_owned())),
            pr_numbers in prop::collection::vec(0u64..100_000, 0..3),
            percentage in 0u8..=100,
            strategy in prop::sample::select(vec![rollout_policy::Strategy::Percentage, rollout_policy::Strategy::Whitelist, rollout_policy::Strategy::RepositorySize]),
            stop in any::<bool>(),
        ) {
            let id = match text { Some(t) => RepoId::Text(t), None => RepoId::Uuid(id) };
            let repo = Repository { id, category };
            let job = Job { job_type, time_range_days, pr_numbers, trigger_source, max_items };
            let cfg = ConfigSnapshot::new(Config {
                is_active: true,
                rollout_percentage: percentage,
                rollout_strategy: strategy,
                emergency_stop: stop,
                excluded_repositories: vec!["acme/excluded".into()],
                ..Config::default()
            });
            let native = NativePolicy::new();
            prop_assert_eq!(runtime().route(&cfg, &repo, &job), native.route(&cfg, &repo, &job));
            prop_assert_eq!(runtime().is_eligible(&cfg, &repo), native.is_eligible(&cfg, &repo));
        }
    }
}
