//! The authoring tools through the `rollout` binary: `policy simulate`, `policy diff`,
//! `policy bench` and `explain`, on the reference component and the example policy
//! (`examples/size-aware-policy`).
//!
//! The components are built by `make policy examples` (`make test` does it first). Without
//! them these tests print `SKIPPED` — or fail when `CI=true`.

use crate::support::Run;
use rollout_policy as p;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The component at `target/wasm/NAME.wasm`; `None` (loudly) when it has not been built.
fn component(name: &str, test: &str) -> Option<PathBuf> {
    let path = root().join("target/wasm").join(format!("{name}.wasm"));
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but `{}` is missing: run `make policy examples`",
        path.display()
    );
    eprintln!("SKIPPED {test}: `{}` is missing (run `make policy examples`)", path.display());
    None
}

fn reference(test: &str) -> Option<PathBuf> {
    component("rollout_policy", test)
}

fn example(test: &str) -> Option<PathBuf> {
    component("size_aware_policy", test)
}

fn rollout(args: &[&str]) -> Run {
    crate::support::run_rollout(args)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A deterministic UUID text for `i`.
fn uuid(i: u64) -> String {
    let a = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = (i ^ 0x5555).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn stats_for(i: u64) -> p::RepositoryStats {
    let pick = |xs: &[u32], k: u64| xs[(k % xs.len() as u64) as usize];
    p::RepositoryStats {
        star_count: pick(&[0, 7, 50, 300, 4000, 9000], i),
        contributor_count: pick(&[1, 2, 9, 40, 150, 400], i / 6),
        pr_count: pick(&[3, 10, 90, 900, 9000, 20000], i / 36),
    }
}

// ---------------------------------------------------------------------------------------
// simulate

/// Per step and category: (total, eligible, added), computed natively.
fn native_ramp(
    ids: &[(String, Option<p::Category>)],
    strategy: p::Strategy,
    steps: &[u8],
) -> Vec<Vec<(String, usize, usize, usize)>> {
    let mut previous = vec![false; ids.len()];
    let mut out = Vec::new();
    for &pct in steps {
        let config =
            p::Config { rollout_percentage: pct, is_active: true, rollout_strategy: strategy, ..p::Config::default() };
        let ev = p::Evaluator::new(config).expect("config");
        let now: Vec<bool> = ids.iter().map(|(id, c)| ev.is_eligible(&p::Repository::parse(id, *c)).eligible).collect();
        let mut rows = Vec::new();
        for cat in p::Category::ALL.iter().map(|c| Some(*c)).chain([None]) {
            let members: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].1 == cat).collect();
            if members.is_empty() {
                continue;
            }
            let eligible = members.iter().filter(|&&i| now[i]).count();
            let added = members.iter().filter(|&&i| now[i] && !previous[i]).count();
            rows.push((cat.map_or("uncategorized", p::Category::as_str).to_owned(), members.len(), eligible, added));
        }
        out.push(rows);
        previous = now;
    }
    out
}

fn simulated_rows(step: &Value) -> Vec<(String, usize, usize, usize)> {
    step["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().expect(k) as usize;
            (r["category"].as_str().expect("category").to_owned(), n("total"), n("eligible"), n("added"))
        })
        .collect()
}

#[test]
fn simulate_ramps_monotonically_with_counts_equal_to_the_native_rules() {
    let Some(policy) = reference("simulate_counts") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // 3000 repositories with stats (categorised by the component), as CSV.
    let csv_path = dir.path().join("repos.csv");
    let mut csv = String::from("id,star_count,contributor_count,pr_count\n");
    let mut ids = Vec::new();
    for i in 0..3000u64 {
        let st = stats_for(i * 7 + 1);
        csv.push_str(&format!("{},{},{},{}\n", uuid(i), st.star_count, st.contributor_count, st.pr_count));
        ids.push((uuid(i), Some(p::categorize(&st).category)));
    }
    std::fs::write(&csv_path, csv).expect("write csv");
    let steps = [0u8, 10, 25, 50, 75, 100];
    for strategy in [p::Strategy::Percentage, p::Strategy::RepositorySize] {
        let run = rollout(&[
            "--json",
            "policy",
            "simulate",
            "--policy",
            s(&policy),
            "--repos",
            s(&csv_path),
            "--percentages",
            "0,10,25,50,75,100",
            "--strategy",
            strategy.as_str(),
        ]);
        assert_eq!(run.code, 0, "{strategy}: {}", run.stderr);
        let out = run.json();
        assert_eq!(out["monotonic"], true);
        assert_eq!(out["repositories"], 3000);
        assert_eq!(out["categorized_by_policy"], 3000);
        let expected = native_ramp(&ids, strategy, &steps);
        let got: Vec<_> = out["steps"].as_array().expect("steps").iter().map(simulated_rows).collect();
        assert_eq!(got, expected, "{strategy}");
        // Every category is present, and at 100 % everyone is in.
        assert_eq!(got[0].len(), 5, "the generated set has every category");
        assert_eq!(out["steps"][5]["eligible"], 3000);
    }
}

#[test]
fn simulate_reads_json_with_categories_and_tables_for_people() {
    let Some(policy) = reference("simulate_json") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("repos.json");
    let cats = [Some("test"), Some("small"), Some("medium"), Some("large"), Some("enterprise"), None];
    let repos: Vec<Value> = (0..600u64).map(|i| json!({"id": uuid(i), "category": cats[(i % 6) as usize]})).collect();
    std::fs::write(&path, serde_json::to_string(&repos).expect("json")).expect("write");
    let run = rollout(&[
        "policy",
        "simulate",
        "--policy",
        s(&policy),
        "--repos",
        s(&path),
        "--strategy",
        "repository_size",
        "--percentages",
        "10,25",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // At 10 % only the 100 test repositories are in; at 25 % small joins (+100).
    assert!(run.stdout.contains("at  10 %: 100 of 600 repositories eligible"), "{}", run.stdout);
    assert!(run.stdout.contains("at  25 %: 200 of 600 repositories eligible (33.3 %), +100 new"), "{}", run.stdout);
    assert!(run.stdout.contains("uncategorized"));
    assert!(run.stdout.contains("ramp is monotonic"));
}

#[test]
fn simulate_refuses_bad_input_with_exit_2_and_a_missing_policy_with_exit_3() {
    let Some(policy) = reference("simulate_errors") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "id,category\nabc,huge\n").expect("write");
    let run = rollout(&["policy", "simulate", "--policy", s(&policy), "--repos", s(&bad)]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("row 2 category") && run.stderr.contains("huge"), "{}", run.stderr);
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "id\nabc\n").expect("write");
    let run = rollout(&["policy", "simulate", "--policy", s(&policy), "--repos", s(&good), "--percentages", "50,10"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--percentages"), "{}", run.stderr);
    let run = rollout(&["policy", "simulate", "--policy", s(&policy), "--repos", s(&good), "--strategy", "canary"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("canary"), "{}", run.stderr);
    let run = rollout(&["policy", "simulate", "--policy", s(&dir.path().join("none.wasm")), "--repos", s(&good)]);
    assert_eq!(run.code, 3, "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// diff

/// A corpus of route requests where the intended change of the example policy is known:
/// (corpus lines, expected count of `recent_data → scheduled_bulk`, of `small_pr_batch →
/// scheduled_bulk`).
fn routing_corpus() -> (Vec<Value>, usize, usize) {
    let categories = [
        None,
        Some(p::Category::Test),
        Some(p::Category::Small),
        Some(p::Category::Medium),
        Some(p::Category::Large),
        Some(p::Category::Enterprise),
    ];
    let triggers = [None, Some("manual"), Some("scheduled"), Some("automatic")];
    let jobs = [
        json!({}),
        json!({"time_range_days": 0}),
        json!({"time_range_days": 1}),
        json!({"time_range_days": 2}),
        json!({"time_range_days": 1, "pr_numbers": [1, 2]}),
        json!({"pr_numbers": [1, 2, 3]}),
        json!({"pr_numbers": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}),
        json!({"max_items": 20}),
        json!({"max_items": 500, "pr_numbers": [7]}),
    ];
    let (mut lines, mut recent, mut small) = (Vec::new(), 0, 0);
    for pct in [0u8, 50, 100] {
        for i in 0..4u64 {
            let id = uuid(1000 + i);
            for cat in categories {
                for trigger in triggers {
                    for job in &jobs {
                        let mut job = job.clone();
                        if let Some(t) = trigger {
                            job["trigger_source"] = json!(t);
                        }
                        let config = json!({"rollout_percentage": pct});
                        lines.push(json!({
                            "name": format!("{pct}% {id} {cat:?} {job}"),
                            "op": "route",
                            "config": config,
                            "repository": {"id": id, "category": cat.map(p::Category::as_str)},
                            "job": job,
                        }));
                        // The intended change, stated independently of both policies.
                        let ev = p::Evaluator::new(p::Config {
                            rollout_percentage: pct,
                            is_active: true,
                            ..p::Config::default()
                        })
                        .expect("config");
                        let eligible = ev.is_eligible(&p::Repository::parse(&id, cat)).eligible;
                        let big = matches!(cat, Some(p::Category::Large | p::Category::Enterprise));
                        if eligible && big && trigger == Some("scheduled") {
                            let days = job["time_range_days"].as_u64();
                            let prs = job["pr_numbers"].as_array().map_or(0, Vec::len);
                            if days.is_some_and(|d| d <= 1) {
                                recent += 1;
                            } else if (1..=10).contains(&prs) {
                                small += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    (lines, recent, small)
}

#[test]
fn diff_reference_to_example_finds_exactly_the_intended_changes() {
    let (Some(from), Some(to)) = (reference("diff_intended"), example("diff_intended")) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (lines, recent, small) = routing_corpus();
    assert!(recent > 0 && small > 0);
    let corpus = dir.path().join("recorded.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&corpus, text).expect("write corpus");
    // Plus eligibility, categorize and health cases: the example must change none of them.
    let vectors = root().join("tests/vectors");
    let run = rollout(&["--json", "policy", "diff", "--from", s(&from), "--to", s(&to), s(&corpus), s(&vectors)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    let groups: Vec<(String, String, String, u64)> = out["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["op"].as_str().unwrap().into(),
                g["from"].as_str().unwrap().into(),
                g["to"].as_str().unwrap().into(),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![
        (
            "route".to_owned(),
            "recent_data (inngest)".to_owned(),
            "scheduled_bulk (github_actions)".to_owned(),
            recent as u64,
        ),
        (
            "route".to_owned(),
            "small_pr_batch (inngest)".to_owned(),
            "scheduled_bulk (github_actions)".to_owned(),
            small as u64,
        ),
    ];
    expected.sort_by_key(|g| std::cmp::Reverse(g.3));
    assert_eq!(groups, expected);
    assert_eq!(out["changed"], (recent + small) as u64);
    assert!(out["compared"].as_u64().unwrap() > lines.len() as u64, "the vectors were compared too");
    // Examples carry both decisions.
    let ex = &out["groups"][0]["examples"][0];
    assert_eq!(ex["to"]["processor"], "github_actions");
    assert_eq!(ex["from"]["processor"], "inngest");
    assert_eq!(out["groups"][0]["examples"].as_array().unwrap().len(), 3);

    // The gate: exactly at the threshold passes, one below fails.
    let n = (recent + small).to_string();
    let m = (recent + small - 1).to_string();
    let at = rollout(&["policy", "diff", "--from", s(&from), "--to", s(&to), s(&corpus), "--max-changed", &n]);
    assert_eq!(at.code, 0, "{}", at.stderr);
    let over = rollout(&["policy", "diff", "--from", s(&from), "--to", s(&to), s(&corpus), "--max-changed", &m]);
    assert_eq!(over.code, 1, "{}", over.stderr);
    assert!(over.stdout.contains("route: recent_data (inngest) → scheduled_bulk (github_actions)"), "{}", over.stdout);
    assert!(over.stdout.contains("FAIL"));
}

#[test]
fn diff_of_a_version_with_itself_changes_nothing_and_bad_inputs_are_exit_2() {
    let Some(policy) = reference("diff_self") else { return };
    let vectors = root().join("tests/vectors");
    let run = rollout(&[
        "--json",
        "policy",
        "diff",
        "--from",
        s(&policy),
        "--to",
        s(&policy),
        s(&vectors),
        "--max-changed",
        "0",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    assert_eq!(out["changed"], 0);
    assert!(out["compared"].as_u64().unwrap() >= 400);
    assert!(out["invalid"].as_u64().unwrap() > 0, "08-errors.json is bad input for both");
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "not json\n").expect("write");
    let run = rollout(&["policy", "diff", "--from", s(&policy), "--to", s(&policy), s(&junk)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("junk.txt"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------
// bench

#[test]
fn bench_prints_positive_rates_for_single_and_batched_calls() {
    let Some(policy) = example("bench") else { return };
    let run = rollout(&["--json", "policy", "bench", "--policy", s(&policy), "--decisions", "2000", "--batch", "100"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = run.json();
    assert_eq!(out["policy"]["name"], "size-aware-example");
    let ms = out["measurements"].as_array().expect("measurements");
    let names: Vec<&str> = ms.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "route, one call per decision",
            "route, batches of 100",
            "is_eligible, one call per decision",
            "is_eligible, batches of 100",
            "route, native reference rules (baseline)"
        ]
    );
    for m in ms {
        assert_eq!(m["decisions"], 2000);
        assert!(m["per_second"].as_f64().unwrap() > 0.0, "{m}");
        assert!(m["ns_per_decision"].as_f64().unwrap() > 0.0, "{m}");
    }
    let text = rollout(&["policy", "bench", "--policy", s(&policy), "--decisions", "500"]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("decisions/s"));
}

// ---------------------------------------------------------------------------------------
// explain

fn decided(explanation: &Value) -> Vec<(String, String)> {
    explanation["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["decided"] == true)
        .map(|l| (l["section"].as_str().unwrap().to_owned(), l["rule"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn explain_names_the_deciding_check_of_each_case() {
    let Some(policy) = reference("explain_cases") else { return };
    let id = uuid(7);
    let cases = json!({"description": "explain", "cases": [
        {"name": "stopped", "op": "is_eligible", "config": {"rollout_percentage": 100, "emergency_stop": true}, "repository": {"id": id}},
        {"name": "excluded", "op": "is_eligible", "config": {"rollout_percentage": 100, "excluded_repositories": [id.to_uppercase()]}, "repository": {"id": id}},
        {"name": "whitelist", "op": "route", "config": {"rollout_strategy": "whitelist"}, "repository": {"id": id}, "job": {"trigger_source": "scheduled"}},
        {"name": "historical", "op": "route", "config": {"rollout_percentage": 100}, "repository": {"id": id}, "job": {"time_range_days": 30, "max_items": 500}},
        {"name": "size", "op": "is_eligible", "config": {"rollout_percentage": 60, "rollout_strategy": "repository_size"}, "repository": {"id": id, "category": "large"}},
        {"name": "categorize", "op": "categorize", "stats": {"star_count": 300, "contributor_count": 20, "pr_count": 50}},
        {"name": "health", "op": "evaluate_health", "config": {"rollout_percentage": 10}, "windows": [{"processor_type": "inngest", "success_count": 5, "error_count": 1, "total_jobs": 6}]}
    ]});
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cases.json");
    std::fs::write(&path, cases.to_string()).expect("write");
    let run = rollout(&["--json", "explain", "--policy", s(&policy), "--case", s(&path)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    type Decided = (String, Vec<(String, String)>);
    let got: Vec<Decided> = run
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            (v["name"].as_str().unwrap().to_owned(), decided(&v["explanation"]))
        })
        .collect();
    let d = |pairs: &[(&str, &str)]| pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            ("stopped".into(), d(&[("eligibility", "emergency_stop")])),
            ("excluded".into(), d(&[("eligibility", "excluded")])),
            ("whitelist".into(), d(&[("eligibility", "not_targeted"), ("routing", "not_eligible")])),
            ("historical".into(), d(&[("eligibility", "in_percentage"), ("routing", "historical_range")])),
            ("size".into(), d(&[("eligibility", "category_excluded")])),
            ("categorize".into(), d(&[("categorization", "medium")])),
            ("health".into(), d(&[("health_level", "critical"), ("health_action", "none")])),
        ]
    );
}

#[test]
fn explain_shows_the_example_policys_own_rule_deciding() {
    let Some(policy) = example("explain_example") else { return };
    let id = uuid(9);
    let args = [
        "explain",
        "--policy",
        s(&policy),
        "--repo",
        &id,
        "--category",
        "enterprise",
        "--job",
        r#"{"trigger_source":"scheduled","time_range_days":1}"#,
        "--config",
        r#"{"rollout_percentage":100}"#,
    ];
    let run = rollout(&args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // the reference's line held, then the example's own check overrode it and decided
    assert!(run.stdout.contains("holds (recent_data), overridden by a later check"), "{}", run.stdout);
    let decisive: Vec<&str> = run.stdout.lines().filter(|l| l.trim_start().starts_with('▶')).collect();
    assert!(
        decisive.iter().any(|l| l.contains("size-aware") && l.ends_with("holds → scheduled_bulk")),
        "the example's own rule decides: {}",
        run.stdout
    );
    assert!(run.stdout.contains("decision: github_actions, rule scheduled_bulk"), "{}", run.stdout);
    // A medium repository: the example's rule is considered and does not hold.
    let mut json_args = vec!["--json"];
    json_args.extend(args.iter().copied());
    if let Some(c) = json_args.iter_mut().find(|a| **a == "enterprise") {
        *c = "medium";
    }
    let run = rollout(&json_args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["explanation"]["decision"]["rule"], "recent_data");
    assert_eq!(
        decided(&v["explanation"]),
        vec![("eligibility".into(), "in_percentage".into()), ("routing".into(), "recent_data".into())]
    );
    let lines = v["explanation"]["lines"].as_array().unwrap();
    assert!(lines.iter().any(|l| l["condition"].as_str().unwrap().contains("size-aware") && l["held"] == false), "{v}");
    // Bad flags are exit 2, naming the flag.
    let run = rollout(&["explain", "--repo", &id, "--category", "huge"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--category"), "{}", run.stderr);
    let run = rollout(&["explain", "--repo", &id, "--job", r#"{"trigger_source":"cron"}"#]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("trigger_source"), "{}", run.stderr);
}
