//! The decision path pays nothing for explanations: with [`NoTrace`] no description is
//! built, so an eligibility or routing decision of a UUID repository allocates nothing at
//! all, while the traced one (the same code with a [`Trace`]) does.
//!
//! Its own test binary: the allocator counts per thread, and nothing else runs here.
#![allow(unsafe_code, reason = "a counting global allocator wrapping the system one")]

use rollout_policy::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the counter is a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn untraced_decisions_allocate_nothing_traced_ones_do() {
    let id = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";
    let jobs = [
        Job::default(),
        Job { time_range_days: Some(0), ..Job::default() },
        Job { pr_numbers: vec![1, 2], ..Job::default() },
        Job { trigger_source: Some(TriggerSource::Manual), ..Job::default() },
        Job { time_range_days: Some(30), ..Job::default() },
        Job { max_items: Some(51), ..Job::default() },
        Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() },
    ];
    for strategy in Strategy::ALL {
        for pct in [0u8, 50, 100] {
            let config = Config {
                is_active: true,
                rollout_strategy: *strategy,
                rollout_percentage: pct,
                excluded_repositories: vec!["someone/else".into()],
                target_repositories: vec!["7f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11".into()],
                ..Config::default()
            };
            let e = match Evaluator::new(config) {
                Ok(e) => e,
                Err(e) => panic!("{e}"),
            };
            for category in [None, Some(Category::Large)] {
                let repo = Repository::parse(id, category);
                let (_, n) = allocations(|| e.is_eligible(&repo));
                assert_eq!(n, 0, "is_eligible allocated ({strategy}, {pct} %)");
                for job in &jobs {
                    let (untraced, n) = allocations(|| e.route(&repo, job));
                    assert_eq!(n, 0, "route allocated ({strategy}, {pct} %, {job:?})");
                    let mut trace = Trace::new();
                    let (traced, n) = allocations(|| e.route_traced(&repo, job, &mut trace));
                    assert_eq!(traced, untraced);
                    assert!(n > 0, "the traced route recorded its checks");
                }
            }
        }
    }
    let stats = RepositoryStats { star_count: 600, contributor_count: 3, pr_count: 20 };
    let (_, n) = allocations(|| categorize(&stats));
    assert_eq!(n, 0, "categorize allocated");
}
