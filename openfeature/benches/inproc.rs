//! In-process evaluation through OpenFeature: one evaluation of the routing flag
//! (`F/processor`) and of the eligibility flag (`F`) through an `open-feature` client and
//! [`rollout_openfeature::RolloutProvider`], against a `rollout serve` that only feeds the
//! snapshot (`target/release/rollout` when built, else `target/debug/rollout`).
//!
//! `cargo bench -p rollout-openfeature --bench inproc`: 3 rounds of 100,000 evaluations
//! each, over 1,024 repositories and varied jobs; the medians: `inproc_rust_eval_ns` (the
//! routing flag), `inproc_rust_bool_eval_ns`. Under `cargo test` a short smoke run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, reason = "a benchmark")]

use open_feature::{EvaluationContext, OpenFeature};
use rollout_openfeature::RolloutProvider;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const F: &str = "hybrid_progressive_capture";

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = ["target/release/rollout", "target/debug/rollout"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.exists())
        .expect("build rollout first (cargo build -p rollout)");
    let dir = std::env::temp_dir().join(format!("rollout-inproc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(&bin)
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("bench.db").display()))
        .args(["serve", "--listen", "127.0.0.1:0", "--health-interval", "3600"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rollout serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().and_then(Result::ok).expect("rollout serve did not start");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (route_ns, bool_ns) = rt.block_on(async {
        let provider = RolloutProvider::connect(&base, F).await.unwrap();
        let mut api = OpenFeature::singleton_mut().await;
        api.set_provider(provider).await;
        let client = api.create_client();
        drop(api);
        let contexts: Vec<EvaluationContext> = (0..1024u128)
            .map(|i| {
                let id = uuid::Uuid::from_u128(0x9e37_79b9_7f4a_4c15_8000_0000_0000_0000 ^ (i * 0x0001_0000_0001));
                EvaluationContext::default()
                    .with_targeting_key(id.to_string())
                    .with_custom_field("trigger_source", ["manual", "scheduled", "automatic"][(i % 3) as usize])
                    .with_custom_field("max_items", (i % 100) as i64)
            })
            .collect();
        let n = if bench { 100_000 } else { 2_000 };
        let processor = format!("{F}/processor");
        let (mut route, mut boolean) = (Vec::new(), Vec::new());
        for _ in 0..if bench { 3 } else { 1 } {
            let start = Instant::now();
            for k in 0..n {
                let v = client.get_string_value(&processor, Some(&contexts[k % contexts.len()]), None).await.unwrap();
                std::hint::black_box(v);
            }
            route.push(start.elapsed().as_nanos() as f64 / n as f64);
            let start = Instant::now();
            for k in 0..n {
                let v = client.get_bool_value(F, Some(&contexts[k % contexts.len()]), None).await.unwrap();
                std::hint::black_box(v);
            }
            boolean.push(start.elapsed().as_nanos() as f64 / n as f64);
        }
        route.sort_by(f64::total_cmp);
        boolean.sort_by(f64::total_cmp);
        (route[route.len() / 2], boolean[boolean.len() / 2])
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "in-process OpenFeature evaluation (open-feature 0.3 client → RolloutProvider → embedded component): routing flag \
         {route_ns:.0} ns, eligibility flag {bool_ns:.0} ns (median of the rounds)"
    );
    if bench {
        println!("SUMMARY inproc_rust_eval_ns: {route_ns:.0}");
        println!("SUMMARY inproc_rust_bool_eval_ns: {bool_ns:.0}");
    } else {
        assert!(route_ns > 0.0 && bool_ns > 0.0);
    }
    std::thread::sleep(Duration::from_millis(10));
}
