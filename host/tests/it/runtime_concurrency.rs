//! Four threads decide continuously while 50 swaps alternate two versions: no decision
//! fails or differs from the reference rules, and both versions serve.

use crate::runtime_support::*;
use rollout::engine::{NativePolicy, Policy};
use rollout::runtime::{Runtime, RuntimeOptions, BUNDLED_POLICY};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[test]
fn fifty_swaps_under_four_deciding_threads() {
    let runtime = Runtime::new(RuntimeOptions { pool_size: 4, ..options() }).unwrap();
    let reference = runtime.load_bytes(BUNDLED_POLICY, "reference").unwrap().version;
    // The same rules under another name (it delegates to the reference rules).
    let other = runtime.load_bytes(&fixture("triggers"), "triggers").unwrap().version;
    assert_ne!(reference.sha256, other.sha256);

    let stop = Arc::new(AtomicBool::new(false));
    let decided = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (runtime, stop, decided, failed) = (runtime.clone(), stop.clone(), decided.clone(), failed.clone());
            std::thread::spawn(move || {
                let cfg = config(40);
                let requests: Vec<_> = (0..64).map(|i| (repo(t * 1000 + i), job(i))).collect();
                let expected = NativePolicy::new().route_batch(&cfg, &requests).unwrap();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let wrong = if i.is_multiple_of(8) {
                        match runtime.route_batch(&cfg, &requests) {
                            Ok(got) => got.iter().zip(&expected).filter(|(g, e)| g != e).count() as u64,
                            Err(_) => requests.len() as u64,
                        }
                    } else {
                        let k = i % requests.len();
                        let (r, j) = &requests[k];
                        u64::from(runtime.route(&cfg, r, j).ok() != Some(expected[k]))
                    };
                    failed.fetch_add(wrong, Ordering::Relaxed);
                    decided.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();

    let bytes = [BUNDLED_POLICY.to_vec(), fixture("triggers")];
    for swap in 0..50 {
        let report = runtime.load_bytes(&bytes[swap % 2], "swap").unwrap();
        assert!(!report.unchanged);
        // Let the deciders make a few calls on this version before the next swap.
        let seen = decided.load(Ordering::Relaxed);
        while decided.load(Ordering::Relaxed) < seen + 20 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    assert_eq!(failed.load(Ordering::Relaxed), 0, "decisions that failed or differed");
    let status = runtime.status();
    assert_eq!(status.swaps, 52);
    assert_eq!(status.auto_reverts, 0);
    for version in [&reference, &other] {
        let v = status.versions.iter().find(|v| &v.policy == version).unwrap();
        assert!(v.counts.decisions > 0, "{} served no decision", version.name);
        assert_eq!(v.counts.fallbacks, 0, "{} fell back", version.name);
        assert_eq!(v.counts.traps, 0);
    }
}
