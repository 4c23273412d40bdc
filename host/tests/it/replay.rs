//! The decision log read back and replayed through the `rollout` binary (issue 14):
//! `rollout replay` (determinism check, what-if, offline from an export), `rollout decisions
//! list|show|export` and `rollout explain --decision`.
//!
//! The logged decisions are made here, independently of the code under test: by the native
//! reference rules ([`rollout_policy::Evaluator`]) for records logged under `native` and under
//! the bundled component's digest (the bundled component is the reference rules, so the
//! replay also checks that the component and the native rules agree), and by the rule the
//! size-aware example documents (the reference, except that a scheduled job of an eligible
//! large or enterprise repository the reference keeps on Inngest goes to GitHub Actions
//! with `scheduled_bulk`) for records logged under that component's digest. Every test runs
//! on SQLite and on Postgres.

use crate::support::Run;
use rollout::runtime::{sha256_hex, BUNDLED_POLICY};
use rollout::store::testing::TestDatabase;
use rollout::store::{Change, ChangeRequest, ConfigPatch, DecisionKind, DecisionRecord, NewPolicyVersion, Store};
use rollout_policy as p;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use uuid::Uuid;

const FEATURE: &str = "replay_feature";

both_backends!(
    logged_decisions_replay_identically_after_five_changes_and_a_tampered_one_is_reported,
    a_what_if_groups_the_changes_and_an_export_replays_offline_with_the_same_counts,
    a_long_log_is_read_completely_and_in_order_within_a_limit,
);

fn rollout(url: &str, args: &[&str]) -> Run {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    crate::support::run_rollout(&all)
}

/// `target/wasm/NAME.wasm`; `None` (loudly) when it has not been built (`make examples`).
fn component(name: &str, test: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm").join(format!("{name}.wasm"));
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but `{}` is missing", path.display());
    eprintln!("SKIPPED {test}: `{}` is missing (run `make policy examples`)", path.display());
    None
}

fn req(change: Change) -> ChangeRequest {
    ChangeRequest::new(change, Some("replay test".into()), "tester")
}

/// The size-aware example's routing, written from its documentation.
fn size_aware(e: &p::Evaluator, r: &p::Repository, j: &p::Job) -> p::RouteDecision {
    let d = e.route(r, j);
    let big = matches!(r.category, Some(p::Category::Large | p::Category::Enterprise));
    if d.eligibility.eligible
        && big
        && j.trigger_source == Some(p::TriggerSource::Scheduled)
        && d.processor == p::Processor::Inngest
    {
        return p::RouteDecision { processor: p::Processor::GithubActions, rule: p::RouteRule::ScheduledBulk, ..d };
    }
    d
}

/// A value in `0..m` for item `i`, independent of the other attributes' (`salt`).
fn pick(i: usize, salt: u64, m: usize) -> usize {
    let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(salt.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    ((h ^ (h >> 29)).wrapping_mul(0x94d0_49bb_1331_11eb) >> 33) as usize % m
}

/// The `i`th job, as the rules take it and as JSON.
fn job(i: usize) -> (p::Job, Value) {
    let days = [1u32, 7, 30, 3][pick(i, 1, 4)];
    let trigger = [p::TriggerSource::Scheduled, p::TriggerSource::Manual, p::TriggerSource::Automatic][pick(i, 2, 3)];
    let prs: Vec<u64> = if pick(i, 3, 5) == 0 { vec![1, 2] } else { Vec::new() };
    let j = p::Job {
        time_range_days: Some(days),
        trigger_source: Some(trigger),
        pr_numbers: prs.clone(),
        ..p::Job::default()
    };
    let mut v = json!({"time_range_days": days, "trigger_source": trigger.as_str()});
    if !prs.is_empty() {
        v["pr_numbers"] = json!(prs);
    }
    (j, v)
}

/// What was logged: the records, and the digest of the size-aware component (stored).
struct Logged {
    records: Vec<DecisionRecord>,
    size_aware_sha: Option<String>,
}

/// A record of decision `d` (route) or `e` (eligibility).
#[allow(clippy::too_many_arguments)]
fn record(
    version: i64,
    sha: &str,
    repo: &str,
    category: Option<p::Category>,
    job: Option<Value>,
    route: Option<p::RouteDecision>,
    eligibility: p::Eligibility,
    overrides: Option<Value>,
) -> DecisionRecord {
    DecisionRecord {
        id: Uuid::now_v7(),
        time: chrono::Utc::now(),
        feature: FEATURE.to_owned(),
        kind: if route.is_some() { DecisionKind::Route } else { DecisionKind::Eligibility },
        config_version: version,
        overrides,
        policy_sha256: sha.to_owned(),
        repository_id: p::RepoId::parse(repo).to_string(),
        masked: false,
        category: category.map(|c| c.as_str().to_owned()),
        job,
        processor: route.map(|d| d.processor.as_str().to_owned()),
        rule: route.map(|d| d.rule.as_str().to_owned()),
        eligible: eligibility.eligible,
        reason: eligibility.reason.as_str().to_owned(),
        bucket: eligibility.bucket,
        fallback: None,
        duration_us: 4,
    }
}

/// Create the feature at 40 %, store the size-aware component, log `n` decisions made under
/// that version (plus a fallback, a masked one and one decided with no policy), then apply
/// five more changes.
async fn log_decisions(store: &Store, n: usize, test: &str) -> Logged {
    store.ensure_config(FEATURE, "tester").await.unwrap();
    let at = store.apply_change(FEATURE, &req(Change::SetPercentage(40))).await.unwrap().after;
    let size_aware_sha = match component("size_aware_policy", test) {
        Some(path) => {
            let bytes = std::fs::read(path).unwrap();
            let sha = sha256_hex(&bytes);
            store
                .put_policy_version(&NewPolicyVersion {
                    bytes,
                    sha256: sha.clone(),
                    name: Some("size-aware-example".into()),
                    semver: "0.1.0".into(),
                    notes: None,
                    uploaded_by: Some("tester".into()),
                })
                .await
                .unwrap();
            Some(sha)
        }
        None => None,
    };
    let bundled = sha256_hex(BUNDLED_POLICY);
    let categories = [
        None,
        Some(p::Category::Test),
        Some(p::Category::Small),
        Some(p::Category::Medium),
        Some(p::Category::Large),
        Some(p::Category::Enterprise),
    ];
    let everyone = json!({"rollout_percentage": 100});
    let mut records = Vec::new();
    for i in 0..n {
        let repo = if i % 2 == 0 {
            Uuid::from_u128(0x9e37_79b9_7f4a_7c15 * (i as u128 + 1)).to_string()
        } else {
            format!("Owner-{i}/Repo-{}", i * 3)
        };
        let category = categories[pick(i, 4, categories.len())];
        let overrides = (i % 7 == 0).then(|| everyone.clone());
        let mut config = at.config.clone();
        if overrides.is_some() {
            config.rollout_percentage = 100;
        }
        let e = p::Evaluator::new(config).unwrap();
        let repository = p::Repository::parse(&repo, category);
        let sha = match (i % 3, &size_aware_sha) {
            (0, _) => "native",
            (1, Some(s)) => s.as_str(),
            _ => bundled.as_str(),
        };
        let r = if i % 4 == 3 {
            record(at.version, sha, &repo, category, None, None, e.is_eligible(&repository), overrides)
        } else {
            let (j, v) = job(i);
            let d = if Some(sha) == size_aware_sha.as_deref() {
                size_aware(&e, &repository, &j)
            } else {
                e.route(&repository, &j)
            };
            record(at.version, sha, &repo, category, Some(v), Some(d), d.eligibility, overrides)
        };
        records.push(r);
    }
    // the policy ran past its deadline: the fallback decided
    let mut fallback = records[1].clone();
    fallback.id = Uuid::now_v7();
    (fallback.processor, fallback.rule) = (Some("inngest".into()), Some("policy_error".into()));
    (fallback.eligible, fallback.reason, fallback.bucket) = (false, "policy_error".into(), 0);
    fallback.kind = DecisionKind::Route;
    fallback.job = Some(job(1).1);
    fallback.fallback = Some("policy ran past its deadline of 10 ms".into());
    let mut masked = records[2].clone();
    (masked.id, masked.masked, masked.repository_id) =
        (Uuid::now_v7(), true, format!("hmac-sha256:{}", "ab".repeat(32)));
    let mut none = records[3].clone();
    (none.id, none.policy_sha256) = (Uuid::now_v7(), "none".into());
    records.extend([fallback, masked, none]);
    assert_eq!(store.insert_decisions(&records).await.unwrap(), records.len() as u64);
    let changes = [
        Change::SetPercentage(90),
        Change::WhitelistAdd(vec![Uuid::new_v4()]),
        Change::Update(ConfigPatch { rollout_strategy: Some(p::Strategy::RepositorySize), ..ConfigPatch::default() }),
        Change::EmergencyStop,
        Change::SetPercentage(5),
    ];
    for change in changes {
        assert!(store.apply_change(FEATURE, &req(change)).await.unwrap().applied);
    }
    Logged { records, size_aware_sha }
}

fn counts(report: &Value) -> Vec<(&'static str, u64)> {
    ["read", "replayed", "identical", "changed", "fallbacks", "fallbacks_redecided", "masked", "skipped"]
        .into_iter()
        .map(|k| (k, report[k].as_u64().unwrap_or_else(|| panic!("no `{k}` in {report}"))))
        .collect()
}

async fn logged_decisions_replay_identically_after_five_changes_and_a_tampered_one_is_reported(db: &TestDatabase) {
    let n = 240;
    let logged = log_decisions(&db.store, n, "replay").await;
    let url = db.url.as_str();

    // under their own policy and configuration version: every decision replays identically
    let run = rollout(url, &["--json", "replay"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let replayable = n as u64 + 1; // and the fallback
    assert_eq!(
        counts(&report),
        vec![
            ("read", n as u64 + 3),
            ("replayed", replayable),
            ("identical", n as u64),
            ("changed", 0),
            ("fallbacks", 1),
            ("fallbacks_redecided", 1),
            ("masked", 1),
            ("skipped", 1),
        ],
        "{report:#}"
    );
    assert!(report["skipped_reasons"][0]["reason"].as_str().unwrap().contains("`none`"), "{report}");
    // the same for people, filtered to the feature
    let run = rollout(url, &["--feature", FEATURE, "replay", "--since", "1h"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("identical {n}, failures 0")), "{}", run.stdout);
    // another feature has no decisions
    let run = rollout(url, &["--feature", "other_feature", "--json", "replay"]);
    assert_eq!((run.code, run.json()["read"].as_u64()), (0, Some(0)), "{}", run.stderr);

    // one logged decision whose result was tampered with
    let mut tampered = logged
        .records
        .iter()
        .find(|r| r.kind == DecisionKind::Route && r.rule.as_deref() != Some("policy_error"))
        .unwrap()
        .clone();
    tampered.id = Uuid::now_v7();
    let honest_rule = tampered.rule.clone().unwrap();
    let forged = if honest_rule == "scheduled_bulk" { "recent_data" } else { "scheduled_bulk" };
    tampered.rule = Some(forged.to_owned());
    db.store.insert_decisions(std::slice::from_ref(&tampered)).await.unwrap();
    let run = rollout(url, &["replay"]);
    assert_eq!(run.code, 1, "a determinism failure exits 1: {}\n{}", run.stdout, run.stderr);
    let line =
        run.stdout.lines().find(|l| l.contains(&tampered.id.to_string())).unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(line.contains(&format!("rule: {forged} → {honest_rule}")), "{line}");
    assert!(run.stdout.contains("failures 1"), "{}", run.stdout);

    // explain --decision: the honest one equals its log, the tampered one does not
    let honest = &logged.records[0];
    let run = rollout(url, &["explain", "--decision", &honest.id.to_string()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("the replayed decision equals the logged one"), "{}", run.stdout);
    assert!(run.stdout.contains("▶"), "{}", run.stdout);
    let run = rollout(url, &["--json", "explain", "--decision", &tampered.id.to_string()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let v = run.json();
    assert_eq!(v["identical"], false);
    assert_eq!(v["differences"][0]["field"], "rule");
    assert_eq!(v["explanation"]["decision"]["rule"], honest_rule.as_str());

    // decisions list and show
    let run = rollout(url, &["--feature", FEATURE, "--json", "decisions", "list", "--limit", "5"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let ids: Vec<&str> = v["decisions"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(ids[0], tampered.id.to_string(), "newest first");
    let cursor = v["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, ids[4]);
    let run = rollout(url, &["--json", "decisions", "list", "--limit", "5", "--cursor", &cursor]);
    let next = run.json();
    assert!(next["decisions"].as_array().unwrap().iter().all(|d| d["id"].as_str().unwrap() < cursor.as_str()));
    let run = rollout(url, &["decisions", "list", "--rule", forged]);
    assert!(run.stdout.contains(&tampered.id.to_string()), "{}", run.stdout);
    let run = rollout(url, &["--json", "decisions", "show", &honest.id.to_string()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown = serde_json::from_value::<DecisionRecord>(run.json()).unwrap();
    assert_eq!(
        (&shown.id, &shown.repository_id, &shown.rule, &shown.reason, shown.bucket, &shown.job, shown.config_version),
        (
            &honest.id,
            &honest.repository_id,
            &honest.rule,
            &honest.reason,
            honest.bucket,
            &honest.job,
            honest.config_version
        )
    );
    let run = rollout(url, &["decisions", "show", &Uuid::now_v7().to_string()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no logged decision"), "{}", run.stderr);
}

async fn a_what_if_groups_the_changes_and_an_export_replays_offline_with_the_same_counts(db: &TestDatabase) {
    let test = "replay what-if";
    let n = 300;
    let logged = log_decisions(&db.store, n, test).await;
    let url = db.url.as_str();
    let Some(example) = component("size_aware_policy", test) else { return };
    let example = example.to_str().unwrap();

    // what-if: the size-aware example moves scheduled jobs of eligible large and enterprise
    // repositories that the reference keeps on inngest
    let run = rollout(url, &["--json", "replay", "--policy", example]);
    assert_eq!(run.code, 0, "a what-if does not fail: {}\n{}", run.stdout, run.stderr);
    let report = run.json();
    let reference_only = |r: &&DecisionRecord| {
        r.kind == DecisionKind::Route
            && r.fallback.is_none()
            && r.policy_sha256 != "none"
            && Some(&r.policy_sha256) != logged.size_aware_sha.as_ref()
    };
    let expected: Vec<&DecisionRecord> = logged
        .records
        .iter()
        .filter(reference_only)
        .filter(|r| {
            r.eligible
                && matches!(r.category.as_deref(), Some("large" | "enterprise"))
                && r.job.as_ref().unwrap()["trigger_source"] == "scheduled"
                && r.processor.as_deref() == Some("inngest")
        })
        .collect();
    assert!(!expected.is_empty(), "the corpus has decisions the example changes");
    assert_eq!(report["changed"].as_u64(), Some(expected.len() as u64), "{report:#}");
    for g in report["groups"].as_array().unwrap() {
        assert_eq!(g["kind"], "route", "{g}");
        assert_eq!(g["to"], "scheduled_bulk (github_actions)", "{g}");
        assert!(["recent_data (inngest)", "small_pr_batch (inngest)"].contains(&g["from"].as_str().unwrap()), "{g}");
    }
    let grouped: u64 = report["groups"].as_array().unwrap().iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(grouped, expected.len() as u64);
    for c in report["by_category"].as_array().unwrap() {
        let changed = c["changed"].as_u64().unwrap();
        let expected_here = expected.iter().filter(|r| r.category.as_deref() == c["category"].as_str()).count() as u64;
        assert_eq!(changed, expected_here, "{c}");
    }
    let examples = report["examples"].as_array().unwrap();
    assert_eq!(examples.len(), expected.len().min(10));
    assert_eq!(examples[0]["id"], expected[0].id.to_string(), "oldest first");
    // the same with the stored component named by its digest
    if let Some(sha) = &logged.size_aware_sha {
        let run = rollout(url, &["--json", "replay", "--sha", sha]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.json()["changed"], report["changed"]);
    }

    // export, then replay offline: the same counts as the database replay
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("decisions.jsonl");
    let run = rollout(url, &["decisions", "export", "--out", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], r#"{"format":"rollout-decisions","version":1}"#);
    assert!(lines[1].starts_with(r#"{"config":"#), "{}", lines[1]);
    assert_eq!(lines.len(), 1 + 1 + logged.records.len(), "one config version, every decision");
    let online = rollout(url, &["--json", "replay"]);
    assert_eq!(online.code, 0, "{}", online.stderr);
    let wasm_dir = Path::new(example).parent().unwrap().to_str().unwrap().to_owned();
    let nowhere = "sqlite:///nonexistent/never.db";
    let offline = rollout(nowhere, &["--json", "replay", "--from", file.to_str().unwrap(), "--policy-dir", &wasm_dir]);
    assert_eq!(offline.code, 0, "{}", offline.stderr);
    assert_eq!(counts(&offline.json()), counts(&online.json()));
    // without the directory, the example's decisions are skipped, naming the policy
    let offline = rollout(nowhere, &["--json", "replay", "--from", file.to_str().unwrap()]);
    let v = offline.json();
    let skipped_example =
        logged.records.iter().filter(|r| Some(&r.policy_sha256) == logged.size_aware_sha.as_ref()).count() as u64;
    assert_eq!(v["skipped"].as_u64(), Some(1 + skipped_example), "{v:#}");
    assert!(v["skipped_reasons"].to_string().contains("not in the policy directory"), "{v}");
    // and the what-if offline
    let offline = rollout(nowhere, &["--json", "replay", "--from", file.to_str().unwrap(), "--policy", example]);
    assert_eq!(offline.json()["changed"], report["changed"]);
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let nowhere = "sqlite:///nonexistent/never.db";
    for (args, flag) in [
        (vec!["replay", "--since", "yesterday"], "--since"),
        (vec!["replay", "--until", "5w"], "--until"),
        (vec!["replay", "--limit", "0"], "--limit"),
        (vec!["replay", "--sha", "XYZ"], "--sha"),
        (vec!["replay", "--policy-dir", "/tmp"], "--from"),
        (vec!["replay", "--sha", "native", "--from", "x.jsonl"], "--from"),
        (vec!["decisions", "list", "--limit", "0"], "--limit"),
        (vec!["decisions", "list", "--cursor", "nope"], "--cursor"),
        (vec!["decisions", "show", "nope"], "<ID>"),
        (vec!["decisions", "list", "--since", "2026-01-02", "--until", "2026-01-01"], "--since"),
        (vec!["explain", "--decision", "nope"], "--decision"),
        (vec!["explain", "--decision", "0190b3c4-0000-7000-8000-000000000000", "--repo", "a/b"], "--repo"),
    ] {
        let run = rollout(nowhere, &args);
        assert_eq!(run.code, 2, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(flag), "{args:?} should name {flag}: {}", run.stderr);
    }
    // a what-if from a file that is not an export names the line
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.jsonl");
    std::fs::write(&file, "{\"format\":\"rollout-decisions\",\"version\":1}\nnot json\n").unwrap();
    let run = rollout(nowhere, &["replay", "--from", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);
}

/// More than two pages, with ids spread over time, so the replay reads the range in
/// concurrent slices: every decision is read once, the differences come oldest first, and a
/// limit cuts at the oldest decisions.
async fn a_long_log_is_read_completely_and_in_order_within_a_limit(db: &TestDatabase) {
    use rollout::authoring::replay::{replay_store, Replay};
    use rollout::store::DecisionFilter;
    const N: usize = 25_000;
    let store = &db.store;
    store.ensure_config(FEATURE, "tester").await.unwrap();
    let at = store.apply_change(FEATURE, &req(Change::SetPercentage(60))).await.unwrap().after;
    let e = p::Evaluator::new(at.config.clone()).unwrap();
    let start_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap() - 3_600_000;
    let mut records = Vec::with_capacity(N);
    for i in 0..N {
        let repo = format!("org-{}/repo-{i}", i % 97);
        let mut r = record(
            at.version,
            "native",
            &repo,
            None,
            None,
            None,
            e.is_eligible(&p::Repository::parse(&repo, None)),
            None,
        );
        // one decision every 100 ms over 40 minutes
        let random: [u8; 10] = *Uuid::new_v4().as_bytes().first_chunk().unwrap();
        r.id = uuid::Builder::from_unix_timestamp_millis(start_ms + 100 * i as u64, &random).into_uuid();
        records.push(r);
    }
    let tampered = [24_000usize, 5, 12_000, 20_999, 21_000];
    for &i in &tampered {
        records[i].bucket = (records[i].bucket + 1) % 100;
    }
    for chunk in records.chunks(5000) {
        store.insert_decisions(chunk).await.unwrap();
    }
    let filter = DecisionFilter { feature: Some(FEATURE.into()), ..DecisionFilter::default() };
    let mut replay = Replay::determinism();
    let mut progress = 0u64;
    replay_store(store, &filter, None, &mut replay, |n| progress += n).await.unwrap();
    let report = replay.report();
    assert_eq!((report.read, progress), (N as u64, N as u64));
    assert_eq!((report.identical, report.changed), (N as u64 - 5, 5), "{report:?}");
    let ids: Vec<Uuid> = report.differences.iter().map(|d| d.id).collect();
    let mut oldest_first: Vec<usize> = tampered.to_vec();
    oldest_first.sort();
    assert_eq!(ids, oldest_first.iter().map(|&i| records[i].id).collect::<Vec<_>>());

    let mut limited = Replay::determinism();
    replay_store(store, &filter, Some(21_000), &mut limited, |_| {}).await.unwrap();
    let report = limited.report();
    assert_eq!((report.read, report.changed), (21_000, 3), "the oldest 21,000: {report:?}");
    assert_eq!(report.differences.last().map(|d| d.id), Some(records[20_999].id));
}
