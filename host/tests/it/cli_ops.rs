//! The operator CLI end to end: the real `rollout` binary against a fresh SQLite file and a
//! fresh Postgres database (every test body runs on both).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test -p rollout --test cli_ops`
//! Without a Postgres `DATABASE_URL` the Postgres half prints `SKIPPED` — or fails when
//! `CI=true`.

use rollout::store::testing::TestDatabase;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const UUID_A: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";
const UUID_B: &str = "0b6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";

use crate::support::pg_url;

/// A database for one test and the binary pointed at it.
struct Db {
    url: String,
    env: Vec<(String, String)>,
}

impl Db {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::support::rollout_bin());
        c.arg("--database-url").arg(&self.url).args(args);
        c.env_remove("DATABASE_URL").env("USER", "tester").stdin(Stdio::null());
        for v in rollout::env::VARIABLES {
            c.env_remove(v);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().expect("run rollout");
        eprintln!(
            "$ rollout {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run, insist on exit 0, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(0), "`rollout {}` failed: {}", args.join(" "), stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run with `--json`, insist on exit 0, parse stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`rollout {}` printed no JSON ({e}): {text}", args.join(" ")))
    }

    /// Run, insist on `code`, return stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "`rollout {}`: {}", args.join(" "), stderr(&out));
        stderr(&out)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wasm(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm").join(name)
}

/// A component `make` builds: `None` (SKIPPED, loudly) when absent outside CI; under
/// `CI=true` its absence fails the test like a missing database does.
fn built(name: &str, how: &str) -> Option<PathBuf> {
    let path = wasm(name);
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true but {} is missing: run `{how}`", path.display());
    eprintln!("SKIPPED part of a test: {} is not built (run `{how}`)", path.display());
    None
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("rollout.db").display());
                let db = super::Db { url, env: Vec::new() };
                db.ok(&["migrate"]);
                tokio::task::spawn_blocking(move || super::$name(&db)).await.unwrap();
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(base) = super::pg_url(stringify!($name)) else { return };
                let test_db = super::TestDatabase::postgres(&base).await.unwrap();
                let db = super::Db { url: test_db.url.clone(), env: Vec::new() };
                db.ok(&["migrate"]);
                tokio::task::spawn_blocking(move || super::$name(&db)).await.unwrap();
                test_db.cleanup().await;
            }
        }
    )*};
}

both!(
    migrate_is_idempotent_and_status_reads_the_seed_row,
    set_percentage_writes_one_history_row_with_previous_and_new,
    emergency_stop_needs_a_terminal_or_yes,
    bad_input_exits_2_naming_the_field,
    route_prints_processor_and_rule,
    record_then_stats_counts_it,
    whitelist_and_exclusions_edit_the_lists,
    policy_upload_validates_and_activation_is_audited,
    policy_revert_falls_back_to_the_bundled_policy,
    policy_candidate_commands_store_each_step,
    check_health_fails_when_critical_and_applies_the_rollback,
    demo_seed_is_idempotent_and_categorize_works,
    env_overrides_are_shown_as_coming_from_the_environment,
);

fn migrate_is_idempotent_and_status_reads_the_seed_row(db: &Db) {
    let out = db.json(&["migrate"]);
    assert_eq!(out["migrated"], true);
    assert!(!out["database"].as_str().unwrap_or("").is_empty());
    let status = db.json(&["status"]);
    assert_eq!(status["feature"], "hybrid_progressive_capture");
    assert_eq!(status["config"]["rollout_percentage"]["value"], 0);
    assert_eq!(status["config"]["rollout_percentage"]["source"], "database");
    assert_eq!(status["config"]["emergency_stop"]["value"], false);
    assert_eq!(status["policy"]["source"], "bundled");
    assert_eq!(status["policy"]["name"], "rollout-reference");
    assert_eq!(status["health"]["level"], "ok");
    let text = db.ok(&["status"]);
    assert!(text.contains("percentage:") && text.contains("0 %"), "{text}");
    // two migrations made one configuration: the history has a single `created` row at most
    let history = db.json(&["history"]);
    let created = history.as_array().unwrap().iter().filter(|h| h["action"] == "created").count();
    assert!(created <= 1, "{history}");
}

fn set_percentage_writes_one_history_row_with_previous_and_new(db: &Db) {
    let out = db.json(&["set-percentage", "25", "--reason", "first step"]);
    assert_eq!(out["applied"], true);
    assert_eq!(out["config"]["rollout_percentage"]["database_value"], 25);
    assert_eq!(out["history"]["action"], "updated");
    let history = db.json(&["history"]);
    let updated: Vec<&Value> = history.as_array().unwrap().iter().filter(|h| h["action"] == "updated").collect();
    assert_eq!(updated.len(), 1, "{history}");
    assert_eq!(updated[0]["previous_percentage"], 0);
    assert_eq!(updated[0]["new_percentage"], 25);
    assert_eq!(updated[0]["reason"], "first step");
    assert_eq!(updated[0]["triggered_by"], "cli:tester");
    let table = db.ok(&["history"]);
    assert!(table.contains("0 → 25") && table.contains("first step"), "{table}");
    assert_eq!(db.json(&["status"])["config"]["rollout_percentage"]["value"], 25);
}

fn emergency_stop_needs_a_terminal_or_yes(db: &Db) {
    let err = db.fails(2, &["emergency-stop", "--reason", "incident"]);
    assert!(err.contains("--yes") && err.contains("not a terminal"), "{err}");
    assert_eq!(db.json(&["status"])["config"]["emergency_stop"]["value"], false, "a refused stop changed nothing");
    db.ok(&["emergency-stop", "--reason", "incident 42", "--yes"]);
    let status = db.json(&["status"]);
    assert_eq!(status["config"]["emergency_stop"]["value"], true);
    let route = db.json(&["route", UUID_A]);
    assert_eq!(route["reason"], "emergency_stop");
    assert_eq!(route["processor"], "inngest");
    let history = db.json(&["history", "--limit", "1"]);
    assert_eq!(history[0]["action"], "emergency_stop");
    assert_eq!(history[0]["reason"], "incident 42");
    assert_eq!(db.json(&["emergency-stop", "--reason", "again", "--yes"])["applied"], false, "already stopped");
    db.ok(&["resume", "--reason", "fixed"]);
    assert_eq!(db.json(&["status"])["config"]["emergency_stop"]["value"], false);
    assert_eq!(db.json(&["history", "--limit", "1"])[0]["action"], "resume");
    assert_eq!(db.json(&["resume", "--reason", "again"])["applied"], false, "nothing to resume");
    let stops = db
        .json(&["history"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["action"] == "emergency_stop" || h["action"] == "resume")
        .count();
    assert_eq!(stops, 2, "no-op stops and resumes write no history");
}

fn bad_input_exits_2_naming_the_field(db: &Db) {
    let err = db.fails(2, &["set-percentage", "101", "--reason", "x"]);
    assert!(err.contains("`101`") && err.contains("an integer from 0 to 100"), "{err}");
    let err = db.fails(2, &["set-percentage", "ten", "--reason", "x"]);
    assert!(err.contains("`ten`"), "{err}");
    let err = db.fails(2, &["set-percentage", "10", "--reason", "  "]);
    assert!(err.contains("--reason"), "{err}");
    let err = db.fails(2, &["set-percentage", "10"]);
    assert!(err.contains("--reason"), "{err}");
    let err = db.fails(2, &["record", UUID_A, "--processor", "foo", "--success"]);
    assert!(err.contains("unknown processor `foo`") && err.contains("inngest, github_actions"), "{err}");
    let err = db.fails(2, &["record", UUID_A, "--processor", "inngest"]);
    assert!(err.contains("--success") || err.contains("--error"), "{err}");
    let err = db.fails(2, &["record", UUID_A, "--processor", "inngest", "--success", "--time-ms", "soon"]);
    assert!(err.contains("--time-ms"), "{err}");
    let err = db.fails(2, &["whitelist", "add", UUID_A, "not a repo"]);
    assert!(err.contains("`not a repo`"), "{err}");
    let err = db.fails(2, &["exclude", "add", "nobody/nothing"]);
    assert!(err.contains("`nobody/nothing`"), "{err}");
    let err = db.fails(2, &["route", UUID_A, "--job", r#"{"trigger_source":"cron"}"#]);
    assert!(err.contains("trigger_source") && err.contains("cron"), "{err}");
    let err = db.fails(2, &["route", UUID_A, "--job", "{not json"]);
    assert!(err.contains("--job"), "{err}");
    let err = db.fails(2, &["categorize"]);
    assert!(err.contains("--all"), "{err}");
    // nothing was written by any of them
    let history = db.json(&["history"]);
    assert!(history.as_array().unwrap().iter().all(|h| h["action"] == "created"), "{history}");
}

fn route_prints_processor_and_rule(db: &Db) {
    db.ok(&["set-percentage", "100", "--reason", "everyone"]);
    let d = db.json(&["route", UUID_A, "--job", r#"{"trigger_source":"scheduled"}"#]);
    assert_eq!(d["processor"], "github_actions");
    assert_eq!(d["rule"], "scheduled_bulk");
    assert_eq!(d["eligible"], true);
    assert_eq!(d["reason"], "in_percentage");
    assert_eq!(d["repository_id"], UUID_A);
    assert_eq!(d["policy_version"]["name"], "rollout-reference");
    assert!(d["bucket"].as_u64().is_some_and(|b| b < 100));
    let text = db.ok(&["route", UUID_A, "--job", r#"{"time_range_days":1}"#]);
    assert!(text.contains("inngest") && text.contains("recent_data"), "{text}");
    db.ok(&["set-percentage", "0", "--reason", "nobody"]);
    let d = db.json(&["route", UUID_A, "--job", r#"{"trigger_source":"scheduled"}"#]);
    assert_eq!((d["processor"].as_str(), d["rule"].as_str()), (Some("inngest"), Some("not_eligible")));
}

fn record_then_stats_counts_it(db: &Db) {
    db.ok(&["record", UUID_A, "--processor", "github_actions", "--success", "--time-ms", "1200"]);
    let out = db.json(&["record", UUID_B, "--processor", "github_actions", "--error", "API rate limit exceeded"]);
    assert_eq!(out["recorded"], true);
    assert_eq!(out["success"], false);
    db.ok(&["record", UUID_B, "--processor", "inngest", "--success"]);
    let s = db.json(&["stats"]);
    assert_eq!(s["total_jobs"], 3);
    assert_eq!(s["processors"]["github_actions"]["total_jobs"], 2);
    assert_eq!(s["processors"]["github_actions"]["error_count"], 1);
    assert_eq!(s["processors"]["github_actions"]["average_processing_time_ms"], 1200.0);
    // 1200 ms lies in the 1152-1215 ms bucket: its midpoint
    assert_eq!(s["processors"]["github_actions"]["p50_processing_time_ms"], 1183.5);
    assert_eq!(s["processors"]["github_actions"]["p99_processing_time_ms"], 1183.5);
    assert_eq!(s["processors"]["inngest"]["p50_processing_time_ms"], serde_json::Value::Null);
    assert_eq!(s["processors"]["inngest"]["success_count"], 1);
    assert_eq!(s["errors_by_kind"]["rate_limit"], 1);
    let text = db.ok(&["stats"]);
    assert!(text.contains("github_actions") && text.contains("rate_limit"), "{text}");
    assert!(text.contains("p95") && text.contains("1184 ms"), "{text}");
}

fn whitelist_and_exclusions_edit_the_lists(db: &Db) {
    let out = db.json(&["whitelist", "add", UUID_A, UUID_B, "--reason", "early adopters"]);
    assert_eq!(out["config"]["target_repositories"].as_array().map(Vec::len), Some(2));
    db.ok(&["whitelist", "remove", UUID_B]);
    db.ok(&["exclude", "add", &UUID_B.to_uppercase()]);
    let status = db.json(&["status"]);
    assert_eq!(status["config"]["target_repositories"], serde_json::json!([UUID_A]));
    assert_eq!(status["config"]["excluded_repositories"], serde_json::json!([UUID_B]));
    assert_eq!(db.json(&["route", UUID_A])["reason"], "targeted");
    assert_eq!(db.json(&["route", UUID_B])["reason"], "excluded");
    let actions: Vec<String> = db
        .json(&["history", "--limit", "3"])
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["exclude_add", "whitelist_remove", "whitelist_add"]);
}

fn policy_upload_validates_and_activation_is_audited(db: &Db) {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm this is not a component").unwrap();
    let err = db.fails(1, &["policy", "upload", garbage.to_str().unwrap()]);
    assert!(err.contains("refused"), "{err}");
    let err = db.fails(2, &["policy", "upload", dir.path().join("missing.wasm").to_str().unwrap()]);
    assert!(err.contains("missing.wasm"), "{err}");
    if let Some(hostile) = built("hostile-ignores-stop.wasm", "make fixtures") {
        let err = db.fails(1, &["policy", "upload", hostile.to_str().unwrap()]);
        assert!(err.contains("safety contract"), "{err}");
    }
    assert_eq!(db.json(&["policy", "list"])["versions"], serde_json::json!([]));

    let reference = wasm("rollout_policy.wasm");
    let up = db.json(&["policy", "upload", reference.to_str().unwrap(), "--notes", "the reference"]);
    let sha = up["policy"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha.len(), 64);
    assert_eq!(up["policy"]["active"], false);
    let err = db.fails(2, &["policy", "activate", "abc"]);
    assert!(err.contains("`abc`"), "{err}");
    let err = db.fails(2, &["policy", "activate", "ffffffffff"]);
    assert!(err.contains("unknown policy"), "{err}");
    db.ok(&["policy", "activate", &sha[..10], "--reason", "go"]);
    let list = db.json(&["policy", "list"]);
    assert_eq!(list["active_sha256"], sha.as_str());
    assert_eq!(db.json(&["status"])["policy"]["source"], "policy_versions");
    let h = db.json(&["history", "--limit", "1"]);
    assert_eq!(h[0]["action"], "policy_activated");
    assert_eq!(h[0]["metadata"]["new"]["policy_sha256"], sha.as_str());
    let err = db.fails(2, &["policy", "revert"]);
    assert!(err.contains("no previous policy version"), "{err}");

    let Some(example) = built("size_aware_policy.wasm", "make examples") else { return };
    let up = db.json(&["policy", "upload", example.to_str().unwrap(), "--activate", "--reason", "try it"]);
    let example_sha = up["policy"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(up["activation"]["previous_sha256"], sha.as_str());
    assert_eq!(db.json(&["status"])["policy"]["sha256"], example_sha.as_str());
    let out = db.json(&["policy", "revert", "--reason", "back"]);
    assert_eq!(out["serving"]["sha256"], sha.as_str());
    assert_eq!(db.json(&["status"])["policy"]["sha256"], sha.as_str());
    assert_eq!(db.json(&["history", "--limit", "1"])[0]["action"], "policy_reverted");
}

/// `rollout policy shadow | canary | candidate | promote | stop-candidate`: each step
/// stored, bad input exit 2 naming the option, promotion audited as an activation.
fn policy_candidate_commands_store_each_step(db: &Db) {
    let Some(diff) = built("hostile-shadow-diff.wasm", "make fixtures") else { return };
    let up = db.json(&["policy", "upload", diff.to_str().unwrap()]);
    let sha = up["policy"]["sha256"].as_str().unwrap().to_owned();
    let err = db.fails(2, &["policy", "stop-candidate"]);
    assert!(err.contains("no policy candidate"), "{err}");
    let err = db.fails(2, &["policy", "shadow", &sha[..10], "--sample", "1.5"]);
    assert!(err.contains("sample_rate"), "{err}");
    let err = db.fails(2, &["policy", "canary", &sha[..10], "--steps", "5,1", "--interval", "1m"]);
    assert!(err.contains("steps"), "{err}");
    let err = db.fails(2, &["policy", "canary", &sha[..10], "--percentage", "5", "--interval", "soon"]);
    assert!(err.contains("--interval"), "{err}");
    let err = db.fails(2, &["policy", "canary", &sha[..10]]);
    assert!(err.contains("--percentage"), "{err}");

    let out = db.json(&["policy", "shadow", &sha[..10], "--sample", "0.25", "--reason", "look first"]);
    assert_eq!(out["state"]["mode"], "shadow", "{out}");
    assert_eq!(out["state"]["sample_rate"], 0.25, "{out}");
    let out = db.json(&["policy", "canary", &sha[..10], "--steps", "1,5,25,100", "--interval", "10m"]);
    assert_eq!(out["state"]["mode"], "canary", "{out}");
    assert_eq!(out["state"]["percentage"], 1.0, "{out}");
    assert_eq!(out["state"]["steps"], serde_json::json!([5.0, 25.0, 100.0]), "{out}");
    assert_eq!(out["state"]["interval_seconds"], 600, "{out}");
    let text = db.ok(&["policy", "candidate"]);
    assert!(text.contains("canary_started") && text.contains("shadow_started"), "{text}");

    let out = db.json(&["policy", "promote", &sha[..10], "--reason", "looks right"]);
    assert_eq!(out["serving"]["sha256"], sha.as_str(), "{out}");
    assert_eq!(db.json(&["status"])["policy"]["sha256"], sha.as_str());
    assert_eq!(db.json(&["history", "--limit", "1"])[0]["action"], "policy_activated");
    let history = db.json(&["policy", "candidate"])["history"].clone();
    let actions: Vec<&str> = history.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["promoted", "canary_started", "shadow_started"]);
    let err = db.fails(2, &["policy", "promote", &sha[..10]]);
    assert!(err.contains("not the current candidate"), "{err}");
}

fn policy_revert_falls_back_to_the_bundled_policy(db: &Db) {
    let Some(example) = built("size_aware_policy.wasm", "make examples") else { return };
    // Nothing stored: the servers run the bundled policy, and there is nothing to revert.
    let err = db.fails(2, &["policy", "revert"]);
    assert!(err.contains("no previous policy version"), "{err}");
    let up = db.json(&["policy", "upload", example.to_str().unwrap(), "--activate", "--reason", "first"]);
    let example_sha = up["policy"]["sha256"].as_str().unwrap().to_owned();
    // The only stored version is active: revert goes back to the bundled policy, storing it.
    let out = db.json(&["policy", "revert", "--reason", "back to the reference"]);
    let bundled = out["serving"]["sha256"].as_str().unwrap().to_owned();
    assert_ne!(bundled, example_sha);
    assert_eq!(out["serving"]["name"], "rollout-reference");
    assert_eq!(out["previous_sha256"], example_sha.as_str());
    assert_eq!(db.json(&["status"])["policy"]["sha256"], bundled.as_str());
    let list = db.json(&["policy", "list"]);
    assert_eq!(list["versions"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["active_sha256"], bundled.as_str());
    assert_eq!(db.json(&["history", "--limit", "1"])[0]["action"], "policy_reverted");
    // A second revert swaps back.
    let out = db.json(&["policy", "revert"]);
    assert_eq!(out["serving"]["sha256"], example_sha.as_str());
}

fn check_health_fails_when_critical_and_applies_the_rollback(db: &Db) {
    let out = db.json(&["check-health"]);
    assert_eq!(out["level"], "ok");
    db.ok(&["set-percentage", "10", "--reason", "ramp"]);
    for _ in 0..10 {
        db.ok(&["record", UUID_A, "--processor", "github_actions", "--error", "network timeout"]);
    }
    let out = db.run(&["--json", "check-health"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["level"], "critical");
    assert_eq!(report["action"], "rollback");
    assert_eq!(report["rolled_back"], false);
    assert_eq!(
        db.json(&["status"])["config"]["rollout_percentage"]["value"],
        10,
        "a check without --apply changes nothing"
    );
    let out = db.run(&["--json", "check-health", "--apply"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rolled_back"], true);
    assert_eq!(db.json(&["status"])["config"]["rollout_percentage"]["value"], 0);
    let rollbacks = db.json(&["history"]).as_array().unwrap().iter().filter(|h| h["action"] == "rollback").count();
    assert_eq!(rollbacks, 1);
    // a second --apply finds nothing left to roll back
    let report: Value = serde_json::from_slice(&db.run(&["--json", "check-health", "--apply"]).stdout).unwrap();
    assert_eq!(report["rolled_back"], false);
    let rollbacks = db.json(&["history"]).as_array().unwrap().iter().filter(|h| h["action"] == "rollback").count();
    assert_eq!(rollbacks, 1);
}

fn demo_seed_is_idempotent_and_categorize_works(db: &Db) {
    let first = db.json(&["demo", "seed", "--repositories", "40", "--outcomes", "200"]);
    assert_eq!(first["repositories"], 40);
    assert_eq!(first["outcomes_recorded"], 200);
    assert_eq!(first["percentage"], 25);
    for c in ["test", "small", "medium", "large", "enterprise"] {
        assert!(first["by_category"][c].as_u64().is_some_and(|n| n > 0), "{c}: {first}");
    }
    let stats = db.json(&["stats"]);
    assert_eq!(stats["total_jobs"], 200);
    assert_eq!(stats["categorized_repositories"], 40);
    assert!(stats["cost"]["window_cost"].as_f64().is_some(), "{stats}");
    let history_len = db.json(&["history", "--limit", "100"]).as_array().unwrap().len();

    let second = db.json(&["demo", "seed", "--repositories", "40", "--outcomes", "200"]);
    assert_eq!(second["outcomes_recorded"], 0);
    assert_eq!(db.json(&["stats"])["total_jobs"], 200);
    assert_eq!(db.json(&["history", "--limit", "100"]).as_array().unwrap().len(), history_len);

    let c = db.json(&["categorize", "acme/demo-000"]);
    assert_eq!(c["category"], "test");
    let c = db.json(&["categorize", "acme/demo-000", "--stars", "600", "--contributors", "3", "--prs", "5"]);
    assert_eq!(c["category"], "large");
    let all = db.json(&["categorize", "--all"]);
    assert_eq!(all["total"], 40);
    assert_eq!(all["categorized"], 40);
    let d = db.json(&["route", "globex/demo-001"]);
    assert_eq!(d["reason"], "targeted", "the demo whitelists globex/demo-001: {d}");
}

fn env_overrides_are_shown_as_coming_from_the_environment(db: &Db) {
    let with_env = Db { url: db.url.clone(), env: vec![("HYBRID_ROLLOUT_PERCENTAGE".into(), "40".into())] };
    let status = with_env.json(&["status"]);
    assert_eq!(status["config"]["rollout_percentage"]["value"], 40);
    assert_eq!(status["config"]["rollout_percentage"]["source"], "environment");
    assert_eq!(status["config"]["rollout_percentage"]["database_value"], 0);
    let text = with_env.ok(&["status"]);
    assert!(text.contains("environment") && text.contains("HYBRID_ROLLOUT_PERCENTAGE"), "{text}");
    // A CLI command is not a serving process: no `env_override` row per invocation.
    let history = with_env.json(&["history", "--limit", "100"]);
    let rows = history.as_array().unwrap();
    assert!(rows.iter().all(|r| r["action"] != "env_override"), "{history}");
    let bad = Db { url: db.url.clone(), env: vec![("HYBRID_ROLLOUT_PERCENTAGE".into(), "lots".into())] };
    let err = bad.fails(2, &["status"]);
    assert!(err.contains("HYBRID_ROLLOUT_PERCENTAGE") && err.contains("`lots`"), "{err}");
    assert_eq!(db.json(&["status"])["config"]["rollout_percentage"]["source"], "database");
}

#[test]
fn unreachable_or_missing_database_exits_3_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("nope.db").display());
    let db = Db { url: missing.clone(), env: Vec::new() };
    let err = db.fails(3, &["status"]);
    assert!(err.contains(&missing) && err.contains("rollout migrate"), "{err}");
    assert!(!dir.path().join("nope.db").exists(), "status must not create the database");

    let bad_dir = Db { url: format!("sqlite://{}/no/such/dir/x.db", dir.path().display()), env: Vec::new() };
    let err = bad_dir.fails(3, &["migrate"]);
    assert!(err.contains("no/such/dir/x.db"), "{err}");

    let pg = Db { url: "postgres://postgres:hunter2@127.0.0.1:1/rollout".into(), env: Vec::new() };
    let err = pg.fails(3, &["history"]);
    assert!(err.contains("postgres://postgres:***@127.0.0.1:1/rollout"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");

    let unsupported = Db { url: "mysql://localhost/x".into(), env: Vec::new() };
    let err = unsupported.fails(2, &["status"]);
    assert!(err.contains("unsupported database url"), "{err}");
}

#[test]
fn json_output_of_a_fresh_sqlite_file_parses() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db { url: format!("sqlite://{}", dir.path().join("r.db").display()), env: Vec::new() };
    db.ok(&["migrate"]);
    for args in [&["status"][..], &["stats"], &["history"], &["check-health"], &["policy", "list"], &["route", UUID_A]]
    {
        let v = db.json(args);
        assert!(v.is_object() || v.is_array(), "{args:?}: {v}");
    }
}
