//! The shared vectors (tests/vectors) run natively and through the component, and both
//! must agree case by case; plus checks on the component artefact itself.

use proptest::prelude::*;
use rollout::cases;
use rollout::engine::{ConfigSnapshot, NativePolicy};
use rollout::runtime::{new_engine, CompiledPolicy, Limits, Sandbox};
use rollout_policy as p;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn component_bytes() -> Vec<u8> {
    let path = root().join("target/wasm/rollout_policy.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} — run `make policy` first", path.display()))
}

fn compiled() -> CompiledPolicy {
    let engine = new_engine().expect("engine");
    CompiledPolicy::compile(&engine, &component_bytes(), "rollout_policy.wasm").expect("reference policy loads")
}

/// The files `index.json` lists, and a check that it lists every topic file present.
fn vector_files() -> Vec<PathBuf> {
    let dir = root().join("tests/vectors");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).expect("index.json"))
            .expect("index json");
    let listed: Vec<PathBuf> = index["files"]
        .as_array()
        .expect("files list")
        .iter()
        .map(|f| dir.join(f.as_str().expect("file name")))
        .collect();
    let on_disk = cases::collect_files(&[dir]).expect("vector dir");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "index.json must list exactly the case files in tests/vectors");
    listed
}

#[test]
fn every_vector_passes_natively_and_in_wasm_with_identical_outputs() {
    let native = NativePolicy::new();
    let wasm = Sandbox::new(compiled(), Limits::default());
    let mut total = 0;
    let mut errors = 0;
    let mut failures = Vec::new();
    for file in vector_files() {
        for case in cases::read_file(&file, true).expect("readable") {
            let case = case.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let n = cases::evaluate(&case, &native);
            let w = cases::evaluate(&case, &wasm);
            if let Err(p) = cases::check(&case, &n) {
                failures.push(format!("native {} :: {}: {p:?}", file.display(), case.name));
            }
            if let Err(p) = cases::check(&case, &w) {
                failures.push(format!("wasm {} :: {}: {p:?}", file.display(), case.name));
            }
            match (&n, &w) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "native and wasm disagree on {}", case.name),
                (Err(_), Err(_)) => errors += 1,
                _ => panic!("native {n:?} vs wasm {w:?} on {}", case.name),
            }
            total += 1;
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(total >= 150, "only {total} vectors");
    assert!(errors >= 3, "the corpus must cover bad input (unknown trigger source, 101 %, unknown strategy)");
}

#[test]
fn a_wrong_expectation_is_reported_with_expected_and_actual() {
    let v: serde_json::Value = serde_json::from_str(
        r#"{"name": "wrong", "op": "is_eligible", "config": {"rollout_percentage": 0},
            "repository": {"id": "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11"},
            "expect": {"eligible": true, "bucket": 59}}"#,
    )
    .unwrap();
    let case = cases::Case::from_json(&v, true).unwrap();
    let problems = cases::check(&case, &cases::evaluate(&case, &NativePolicy::new())).unwrap_err();
    assert_eq!(problems, vec!["eligible: expected true, got false".to_owned()]);
}

#[test]
fn bad_input_names_the_field_and_the_allowed_values() {
    let cases = [
        (
            r#"{"op": "route", "repository": {"id": "x"}, "job": {"trigger_source": "cron"}, "expect": {"rule": "default"}}"#,
            "job.trigger_source",
            "manual, scheduled, automatic",
        ),
        (
            r#"{"op": "is_eligible", "config": {"rollout_percentage": 101}, "repository": {"id": "x"}, "expect": {"eligible": false}}"#,
            "config.rollout_percentage",
            "0 to 100",
        ),
        (
            r#"{"op": "is_eligible", "config": {"rollout_strategy": "canary"}, "repository": {"id": "x"}, "expect": {"eligible": false}}"#,
            "config.rollout_strategy",
            "percentage, whitelist, repository_size",
        ),
        (
            r#"{"op": "is_eligible", "config": {"colour": 1}, "repository": {"id": "x"}, "expect": {"eligible": false}}"#,
            "config.colour",
            "unknown field",
        ),
    ];
    for (json, field, allowed) in cases {
        let case = cases::Case::from_json(&serde_json::from_str(json).unwrap(), true).unwrap();
        let err = case.inputs().unwrap_err().message;
        assert!(err.contains(field) && err.contains(allowed), "{err}");
    }
    let empty = serde_json::json!({"op": "categorize", "stats": {}, "expect": {}});
    assert!(cases::Case::from_json(&empty, true).unwrap_err().message.contains("expect"));
}

/// Every import of the component must be type-only: no function, module or instance with
/// functions (the policy reads no clock, files or randomness).
fn function_imports(bytes: &[u8]) -> Vec<String> {
    use wasmtime::component::types::ComponentItem;
    let engine = new_engine().unwrap();
    let component = wasmtime::component::Component::new(&engine, bytes).unwrap();
    let ty = component.component_type();
    let mut found = Vec::new();
    fn visit(engine: &wasmtime::Engine, name: &str, item: ComponentItem, found: &mut Vec<String>) {
        match item {
            ComponentItem::Type(_) | ComponentItem::Resource(_) => {}
            ComponentItem::ComponentInstance(inst) => {
                for (n, i) in inst.exports(engine) {
                    visit(engine, &format!("{name}/{n}"), i.ty, found);
                }
            }
            _ => found.push(name.to_owned()),
        }
    }
    for (name, item) in ty.imports(&engine) {
        visit(&engine, name, item.ty, &mut found);
    }
    found
}

#[test]
fn the_component_imports_no_function() {
    assert_eq!(function_imports(&component_bytes()), Vec::<String>::new());
    // The check itself can fail: a component importing a function is caught.
    let importer = wat::parse_str(r#"(component (import "wasi:clocks/now" (func)))"#).unwrap();
    assert_eq!(function_imports(&importer), vec!["wasi:clocks/now".to_owned()]);
}

#[test]
fn the_component_reports_its_name_and_version() {
    let c = compiled();
    assert_eq!(c.name(), p::POLICY_NAME);
    assert_eq!(c.version(), p::POLICY_VERSION);
    assert_eq!(c.sha256().len(), 64);
}

fn arb_config() -> impl Strategy<Value = p::Config> {
    (
        0u8..=100,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(p::Strategy::ALL.to_vec()),
        prop::collection::vec(any::<u128>(), 0..4),
    )
        .prop_map(|(pct, active, stop, strategy, ids)| {
            let ids: Vec<String> = ids.iter().map(|v| p::RepoId::Uuid(*v).to_string()).collect();
            p::Config {
                rollout_percentage: pct,
                is_active: active,
                emergency_stop: stop,
                rollout_strategy: strategy,
                target_repositories: ids.iter().step_by(2).cloned().collect(),
                excluded_repositories: ids.iter().skip(1).step_by(2).cloned().collect(),
                ..p::Config::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Differential test: the component and the native rules agree on arbitrary input,
    /// single and batched. Every request of a batch has its own repository and job, so the
    /// batch columns (text ids among UUIDs, PR lists of different lengths, job types,
    /// present zeros) must stay aligned.
    #[test]
    fn component_agrees_with_native_rules(
        config in arb_config(),
        items in prop::collection::vec((
            (any::<u128>(), "[a-z/]{0,12}", any::<bool>()),
            prop::option::of(prop::sample::select(p::Category::ALL.to_vec())),
            prop::option::of(0u32..5), prop::option::of(0u32..100), 0usize..13,
            prop::option::of(prop::sample::select(p::TriggerSource::ALL.to_vec())),
            prop::option::of("[a-z]{0,6}"),
        ), 1..20),
    ) {
        let mut inst = COMPILED.with(|c| c.instantiate(&Limits::default())).unwrap();
        let snap = ConfigSnapshot::new(config.clone());
        let native = p::Evaluator::new(config).unwrap();
        let requests: Vec<(p::Repository, p::Job)> = items.into_iter().map(|((u, t, is_uuid), cat, days, max, prs, trigger, job_type)| {
            let repo = if is_uuid { p::Repository { id: p::RepoId::Uuid(u), category: cat } } else { p::Repository::parse(&t, cat) };
            let job = p::Job { job_type, time_range_days: days, pr_numbers: (1..=prs as u64).collect(), trigger_source: trigger, max_items: max };
            (repo, job)
        }).collect();
        let repos: Vec<p::Repository> = requests.iter().map(|(r, _)| r.clone()).collect();
        let batch = inst.route_batch(&snap, &requests).unwrap();
        let elig = inst.is_eligible_batch(&snap, &repos).unwrap();
        for (i, (r, job)) in requests.iter().enumerate() {
            let want = native.route(r, job);
            prop_assert_eq!(inst.route(&snap, r, job).unwrap(), want);
            prop_assert_eq!(batch[i], want);
            prop_assert_eq!(elig[i], want.eligibility);
        }
    }
}

thread_local! {
    static COMPILED: CompiledPolicy = compiled();
}

#[test]
fn native_backend_and_wasm_backend_agree_on_health_reasons() {
    // The reason string crosses the boundary too.
    let v = serde_json::json!({"op": "evaluate_health", "config": {"rollout_percentage": 10},
        "windows": [{"processor_type": "inngest", "success_count": 5, "error_count": 5, "total_jobs": 10}],
        "expect": {"action": "rollback"}});
    let case = cases::Case::from_json(&v, true).unwrap();
    let inputs = case.inputs().unwrap();
    let a = cases::evaluate_inputs(&inputs, &NativePolicy::new()).unwrap();
    let b = cases::evaluate_inputs(&inputs, &Sandbox::new(compiled(), Limits::default())).unwrap();
    assert_eq!(a, b);
    assert!(a["reason"].as_str().unwrap().contains("exceeds the maximum"));
}
