//! Helpers shared by the runtime tests (`host/tests/runtime_*.rs`).
#![allow(dead_code, reason = "each test crate uses a different subset")]

use rollout::engine::ConfigSnapshot;
use rollout::runtime::{Limits, Runtime, RuntimeOptions};
use rollout_policy::{Category, Config, Job, RepoId, Repository, Strategy, TriggerSource};
use std::path::PathBuf;
use std::sync::Arc;

/// `target/wasm/<name>.wasm`, built by `make policy` / `make fixtures`.
pub fn wasm_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm").join(format!("{name}.wasm"))
}

/// A hostile fixture's bytes (`make fixtures` builds them).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = wasm_path(&format!("hostile-{name}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read `{}` ({e}): run `make fixtures`", path.display()))
}

/// `bytes` with a custom section appended: the same policy under a different sha256.
pub fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"rollout-test-variant";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Options for tests: small pool, default limits.
pub fn options() -> RuntimeOptions {
    RuntimeOptions { pool_size: 2, limits: Limits::default(), ..RuntimeOptions::default() }
}

/// A runtime serving `bytes`.
pub fn runtime_with(bytes: &[u8]) -> Runtime {
    let runtime = Runtime::new(options()).expect("runtime");
    runtime.load_bytes(bytes, "test").expect("load");
    runtime
}

/// An active percentage rollout at `percentage` %.
pub fn config(percentage: u8) -> Arc<ConfigSnapshot> {
    ConfigSnapshot::new(Config {
        is_active: true,
        rollout_percentage: percentage,
        rollout_strategy: Strategy::Percentage,
        ..Config::default()
    })
}

/// A config with a given feature name (the hostile fixture's triggers).
pub fn config_named(feature: &str) -> Arc<ConfigSnapshot> {
    ConfigSnapshot::new(Config { feature_name: feature.to_owned(), ..(*config(100)).config().clone() })
}

/// The `i`-th test repository (a UUID; every 7th is text).
pub fn repo(i: u64) -> Repository {
    let id = if i % 7 == 6 {
        RepoId::Text(format!("repo-{i}"))
    } else {
        RepoId::Uuid(u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) ^ 0xABCD)
    };
    let category = Category::ALL.get((i % 6) as usize).copied();
    Repository { id, category }
}

/// The `i`-th test job.
pub fn job(i: u64) -> Job {
    match i % 4 {
        0 => Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() },
        1 => Job { max_items: Some(100), ..Job::default() },
        2 => Job { time_range_days: Some(1), ..Job::default() },
        _ => Job { pr_numbers: vec![i], trigger_source: Some(TriggerSource::Manual), ..Job::default() },
    }
}

/// A repository whose id triggers the hostile fixture.
pub fn trigger(id: &str) -> Repository {
    Repository { id: RepoId::Text(id.to_owned()), category: None }
}
