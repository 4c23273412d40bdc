//! A serving version: one loaded policy with its pool of instances.
//!
//! The pool is a fixed array of slots, each an instance behind its own mutex. A caller
//! starts at the slot its thread prefers and takes the first free one (`try_lock`), so
//! threads decide in parallel without a shared lock; only when every slot is busy does it
//! wait for its preferred slot. Counters live in the slots too, written only by the slot's
//! holder, so the hot path has no contended atomic; the status sums them.

use super::{CallError, CompiledPolicy, Limits, PolicyInstance};
use crate::engine::PolicyVersion;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock, TryLockError};

/// Counts of one version's calls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Decisions the policy made (a batch counts each item).
    pub decisions: u64,
    /// Decisions answered with the `policy_error` fallback instead.
    pub fallbacks: u64,
    /// Calls that trapped, timed out, ran out of memory or could not instantiate.
    pub traps: u64,
    /// Of `traps`, calls interrupted at their deadline.
    pub timeouts: u64,
    /// Of `traps`, calls that hit the memory cap.
    pub memory_failures: u64,
    /// Calls refused because the policy rejected the configuration.
    pub config_refusals: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.decisions += o.decisions;
        self.fallbacks += o.fallbacks;
        self.traps += o.traps;
        self.timeouts += o.timeouts;
        self.memory_failures += o.memory_failures;
        self.config_refusals += o.config_refusals;
    }
}

/// Atomic counters; in a slot only the lock holder writes them (load + store, no
/// read-modify-write), anyone may read them.
#[derive(Debug, Default)]
struct AtomicCounts {
    decisions: AtomicU64,
    fallbacks: AtomicU64,
    traps: AtomicU64,
    timeouts: AtomicU64,
    memory_failures: AtomicU64,
    config_refusals: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

impl AtomicCounts {
    fn snapshot(&self) -> Counts {
        Counts {
            decisions: self.decisions.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            traps: self.traps.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            memory_failures: self.memory_failures.load(Relaxed),
            config_refusals: self.config_refusals.load(Relaxed),
        }
    }

    /// Record a call's outcome (single writer).
    fn record(&self, items: u64, outcome: Result<(), &CallError>) {
        match outcome {
            Ok(()) => bump(&self.decisions, items),
            Err(e) => {
                bump(&self.fallbacks, items);
                match e {
                    CallError::Config(_) => bump(&self.config_refusals, 1),
                    CallError::Unsupported(_) | CallError::NoPolicy => {}
                    CallError::Timeout(_) => {
                        bump(&self.traps, 1);
                        bump(&self.timeouts, 1);
                    }
                    CallError::MemoryExhausted(_) => {
                        bump(&self.traps, 1);
                        bump(&self.memory_failures, 1);
                    }
                    CallError::Trap(_) | CallError::BadAnswer(_) | CallError::Instantiate(_) | CallError::Poisoned => {
                        bump(&self.traps, 1)
                    }
                }
            }
        }
    }

    /// Add `c` (shared writers: read-modify-write).
    fn absorb(&self, c: &Counts) {
        self.decisions.fetch_add(c.decisions, Relaxed);
        self.fallbacks.fetch_add(c.fallbacks, Relaxed);
        self.traps.fetch_add(c.traps, Relaxed);
        self.timeouts.fetch_add(c.timeouts, Relaxed);
        self.memory_failures.fetch_add(c.memory_failures, Relaxed);
        self.config_refusals.fetch_add(c.config_refusals, Relaxed);
    }
}

/// A policy version loaded in this process: compiled, checked, with its lifetime counts.
#[derive(Debug)]
pub(crate) struct Version {
    pub compiled: CompiledPolicy,
    /// Name, version and sha256, shared: a logged decision takes a handle
    /// ([`crate::engine::Policy::version_shared`]) without copying its strings.
    pub info: std::sync::Arc<PolicyVersion>,
    pub source: String,
    pub loaded_at: DateTime<Utc>,
    /// Decisions checked by the safety contract, once it passed in this process (or the
    /// on-disk verdict said it had).
    pub validated: OnceLock<u64>,
    /// Counts folded in from servings that ended.
    totals: AtomicCounts,
}

impl Version {
    pub fn new(compiled: CompiledPolicy, source: &str) -> Version {
        let info = PolicyVersion {
            name: compiled.name().to_owned(),
            version: compiled.version().to_owned(),
            sha256: compiled.sha256().to_owned(),
        };
        Version {
            compiled,
            info: std::sync::Arc::new(info),
            source: source.to_owned(),
            loaded_at: Utc::now(),
            validated: OnceLock::new(),
            totals: AtomicCounts::default(),
        }
    }

    /// Counts of servings that ended.
    pub fn ended_counts(&self) -> Counts {
        self.totals.snapshot()
    }
}

/// Watches a new version's first calls.
#[derive(Debug)]
pub(crate) struct Probation {
    pub window: u64,
    pub threshold: f64,
    calls: AtomicU64,
    failed: AtomicU64,
    over: AtomicBool,
}

/// What a probation decided after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Still watching, or passed.
    Fine,
    /// The fallback rate passed the threshold (reported once).
    Failed { calls: u64, failed: u64 },
}

impl Probation {
    pub fn new(window: u64, threshold: f64) -> Probation {
        Probation {
            window,
            threshold,
            calls: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            over: AtomicBool::new(false),
        }
    }

    #[inline]
    fn record(&self, failed: bool) -> Verdict {
        if self.over.load(Relaxed) {
            return Verdict::Fine;
        }
        self.record_slow(failed)
    }

    #[cold]
    fn record_slow(&self, failed: bool) -> Verdict {
        let calls = self.calls.fetch_add(1, Relaxed) + 1;
        let failures = if failed { self.failed.fetch_add(1, Relaxed) + 1 } else { self.failed.load(Relaxed) };
        // Failed as soon as the rate over the whole window can no longer stay under the
        // threshold; passed when the window is over.
        let limit = self.threshold * self.window as f64;
        if failures as f64 > limit {
            if !self.over.swap(true, Relaxed) {
                return Verdict::Failed { calls, failed: failures };
            }
        } else if calls >= self.window {
            self.over.store(true, Relaxed);
        }
        Verdict::Fine
    }

    /// `(calls, failed calls, over)`.
    pub fn snapshot(&self) -> (u64, u64, bool) {
        (self.calls.load(Relaxed).min(self.window), self.failed.load(Relaxed), self.over.load(Relaxed))
    }
}

/// One pool slot; aligned so neighbouring slots' counters do not share a cache line.
#[repr(align(128))]
struct Slot {
    instance: Mutex<Option<PolicyInstance>>,
    counts: AtomicCounts,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static PREFERRED: usize = NEXT_THREAD.fetch_add(1, Relaxed);
}

/// A version while it serves: its pool of instances and its probation.
pub(crate) struct Serving {
    pub version: std::sync::Arc<Version>,
    pub probation: Option<Probation>,
    pub activated_at: DateTime<Utc>,
    limits: Limits,
    slots: Box<[Slot]>,
}

impl Serving {
    /// A serving of `version` with `size` slots, each instantiated now (so the first calls
    /// after a swap do not pay for instantiation); `warm` fills the first.
    pub fn new(
        version: std::sync::Arc<Version>,
        size: usize,
        limits: Limits,
        probation: Option<Probation>,
        mut warm: Option<PolicyInstance>,
    ) -> Serving {
        let slots: Box<[Slot]> = (0..size.max(1))
            .map(|_| {
                let instance = warm.take().or_else(|| version.compiled.instantiate(&limits).ok());
                Slot { instance: Mutex::new(instance), counts: AtomicCounts::default() }
            })
            .collect();
        Serving { version, probation, activated_at: Utc::now(), limits, slots }
    }

    fn lock(&self) -> (&Slot, MutexGuard<'_, Option<PolicyInstance>>) {
        let n = self.slots.len();
        let start = PREFERRED.with(|p| *p) % n;
        for slot in self.slots.iter().cycle().skip(start).take(n) {
            match slot.instance.try_lock() {
                Ok(guard) => return (slot, guard),
                // A panic while holding the slot: the instance may be mid-call; drop it.
                Err(TryLockError::Poisoned(p)) => {
                    let mut guard = p.into_inner();
                    *guard = None;
                    return (slot, guard);
                }
                Err(TryLockError::WouldBlock) => {}
            }
        }
        // Every slot is busy: wait for the preferred one (calls are short and bounded).
        let slot = self.slots.iter().cycle().nth(start).unwrap_or_else(|| self.first_slot());
        let guard = slot.instance.lock().unwrap_or_else(|p| {
            let mut guard = p.into_inner();
            *guard = None;
            guard
        });
        (slot, guard)
    }

    fn first_slot(&self) -> &Slot {
        // `new` makes at least one slot.
        #[allow(clippy::indexing_slicing, reason = "a serving always has at least one slot")]
        &self.slots[0]
    }

    /// Run `f` on an instance, counting `items` decisions or fallbacks; a trapped instance
    /// is discarded (the next call on its slot instantiates a fresh one).
    #[inline]
    pub fn call<R>(
        &self,
        items: u64,
        f: impl FnOnce(&mut PolicyInstance) -> Result<R, CallError>,
    ) -> (Result<R, CallError>, Verdict) {
        self.call_with(items, true, f)
    }

    /// [`Serving::call`]; a call with `probation` false is not watched by the probation.
    #[inline]
    pub fn call_with<R>(
        &self,
        items: u64,
        probation: bool,
        f: impl FnOnce(&mut PolicyInstance) -> Result<R, CallError>,
    ) -> (Result<R, CallError>, Verdict) {
        let (slot, mut guard) = self.lock();
        let result = match guard.as_mut() {
            Some(instance) if !instance.is_poisoned() => f(instance),
            _ => match self.version.compiled.instantiate(&self.limits) {
                Ok(instance) => f(guard.insert(instance)),
                Err(e) => Err(e),
            },
        };
        slot.counts.record(items, result.as_ref().map(|_| ()));
        if let Err(e) = &result {
            if e.is_failure() {
                *guard = None;
            }
        }
        drop(guard);
        let verdict = match &self.probation {
            Some(p) if probation => p.record(result.is_err()),
            _ => Verdict::Fine,
        };
        (result, verdict)
    }

    /// Counts of this serving so far.
    pub fn counts(&self) -> Counts {
        let mut total = Counts::default();
        for slot in self.slots.iter() {
            total.add(&slot.counts.snapshot());
        }
        total
    }

    /// Instances alive in the pool now.
    pub fn live_instances(&self) -> usize {
        self.slots.iter().filter(|s| s.instance.try_lock().map_or(true, |g| g.is_some())).count()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.version.totals.absorb(&self.counts());
    }
}
