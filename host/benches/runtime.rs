//! The runtime benchmark (`make bench`): one run, one table, medians, then `SUMMARY name:
//! value` lines the Makefile collects.
//!
//! Measured: the native rules per decision; a single `route` through the wasm runtime
//! (the full path: version lookup, pool, conversions, the component call) and through a
//! bare instance; `route-batch` of 1,000 per decision; cold compilation; loading from the
//! on-disk cache into a fresh runtime (a restart, `swap_cached_ms`); a swap to bytes never
//! seen (`swap_cold_ms`) and to a version in memory (`swap_known_ms`), each up to the first
//! decision on the new version, wall clock; instantiation with the pooling allocator; the
//! cold safety check. Single calls are measured through the scalar `packed` call (every
//! request here fits it) and, on a bare instance, through the typed call too.

use rollout::engine::{ConfigSnapshot, Policy};
use rollout::runtime::{new_engine, CompiledPolicy, Limits, Runtime, RuntimeOptions, BUNDLED_POLICY};
use rollout_policy::{Category, Config, Evaluator, Job, RepoId, Repository, Strategy, TriggerSource};
use std::hint::black_box;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// CPU time this thread has run, in ns (`CLOCK_THREAD_CPUTIME_ID`).
///
/// Two cores are shared with whatever else runs (other builds, other tests): wall-clock
/// time then counts the time this thread waited for a core. Thread CPU time does not, so
/// single-threaded measures are medians of CPU time; wall-clock medians are printed
/// beside them.
fn cpu_ns() -> Option<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).ok()?.checked_mul(1_000_000_000)?.checked_add(u64::try_from(t.tv_nsec).ok()?)
}

/// A measurement: median CPU time and median wall-clock time of one unit, in ns.
#[derive(Clone, Copy)]
struct Measure {
    cpu: f64,
    wall: f64,
}

impl Measure {
    fn scaled(self, by: f64) -> Measure {
        Measure { cpu: self.cpu * by, wall: self.wall * by }
    }
}

fn measure(samples: usize, mut one: impl FnMut(usize) -> (u64, Option<u64>, usize)) -> Measure {
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let (w, c, units) = one(i);
        wall.push(w as f64 / units as f64);
        cpu.push(c.unwrap_or(w) as f64 / units as f64);
    }
    Measure { cpu: median(cpu), wall: median(wall) }
}

fn timed(f: impl FnOnce()) -> (u64, Option<u64>) {
    let (c0, start) = (cpu_ns(), Instant::now());
    f();
    let wall = start.elapsed().as_nanos() as u64;
    (wall, cpu_ns().zip(c0).map(|(b, a)| b.saturating_sub(a)))
}

/// Median over `samples` of the time per iteration (ns) of `iters` runs of `f`.
fn per_iter(samples: usize, iters: usize, mut f: impl FnMut(usize)) -> Measure {
    // Warm up: caches, the pool, the guest's evaluator.
    for i in 0..iters.min(1000) {
        f(i);
    }
    measure(samples, |_| {
        let (w, c) = timed(|| {
            for i in 0..iters {
                f(i);
            }
        });
        (w, c, iters)
    })
}

/// Median over `samples` of the ratio `b / a` of CPU times, `a` and `b` run back to back in
/// each sample. The machine is shared: a slow phase slows both sides of a pair, so the
/// ratio varies far less from run to run than the ratio of two separately taken medians.
fn paired_ratio(samples: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> f64 {
    a();
    b();
    let ratios = (0..samples)
        .map(|_| {
            let (wa, ca) = timed(&mut a);
            let (wb, cb) = timed(&mut b);
            cb.unwrap_or(wb) as f64 / ca.unwrap_or(wa).max(1) as f64
        })
        .collect();
    median(ratios)
}

/// Median over `samples` of one run of `f` (ns); `setup` runs untimed before each.
fn each<S>(samples: usize, mut setup: impl FnMut(usize) -> S, mut f: impl FnMut(S)) -> Measure {
    measure(samples, |i| {
        let s = setup(i);
        let (w, c) = timed(|| f(s));
        (w, c, 1)
    })
}

/// `bytes` with a custom section appended: the same policy, another sha256.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"rollout-bench-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    let mut n = payload.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

fn inputs() -> (std::sync::Arc<ConfigSnapshot>, Vec<(Repository, Job)>) {
    let config = ConfigSnapshot::new(Config {
        is_active: true,
        rollout_percentage: 50,
        rollout_strategy: Strategy::Percentage,
        target_repositories: vec!["1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()],
        excluded_repositories: vec!["6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11".into()],
        ..Config::default()
    });
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let requests = (0..1000u64)
        .map(|i| {
            let repo = Repository {
                id: RepoId::Uuid((u128::from(next()) << 64) | u128::from(next())),
                category: Category::ALL.get((i % 5) as usize).copied(),
            };
            let job = match i % 4 {
                0 => Job { trigger_source: Some(TriggerSource::Scheduled), ..Job::default() },
                1 => Job { max_items: Some(200), trigger_source: Some(TriggerSource::Automatic), ..Job::default() },
                2 => Job { time_range_days: Some(7), ..Job::default() },
                _ => Job { trigger_source: Some(TriggerSource::Manual), max_items: Some(10), ..Job::default() },
            };
            (repo, job)
        })
        .collect();
    (config, requests)
}

/// The native rules behind the same kind of call as the runtime's (config snapshot in).
struct NativeEval<'a>(&'a ConfigSnapshot);

impl NativeEval<'_> {
    fn route(&self, r: &Repository, j: &Job) -> rollout_policy::RouteDecision {
        thread_local! {
            static EVALUATOR: std::cell::OnceCell<Evaluator> = const { std::cell::OnceCell::new() };
        }
        EVALUATOR.with(|e| match e.get() {
            Some(e) => e.route(r, j),
            None => e
                .get_or_init(|| Evaluator::new(self.0.config().clone()).unwrap_or_else(|_| std::process::abort()))
                .route(r, j),
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let (config, requests) = inputs();
    let n = requests.len();
    let pick = |i: usize| &requests[i % n];

    // `--profile single|batch|bare`: loop one path for 5 s (for `perf record`).
    let args: Vec<String> = std::env::args().collect();
    if let Some(what) = args.iter().position(|a| a == "--profile").and_then(|i| args.get(i + 1)) {
        // `ROLLOUT_BENCH_POLICY=path`: profile another build of the policy.
        let bytes = match std::env::var_os("ROLLOUT_BENCH_POLICY") {
            Some(path) => std::fs::read(path)?,
            None => BUNDLED_POLICY.to_vec(),
        };
        let runtime = Runtime::new(RuntimeOptions::default())?;
        runtime.load_bytes(&bytes, "bundled")?;
        let compiled = CompiledPolicy::compile(&new_engine()?, &bytes, "bench")?;
        let mut instance = compiled.instantiate(&Limits::default())?;
        // `--iters N`: exactly N×1000 iterations (for instruction counts under valgrind).
        let rounds: Option<usize> =
            args.iter().position(|a| a == "--iters").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok());
        let end = Instant::now() + std::time::Duration::from_secs(5);
        let mut i = 0;
        while rounds.map_or(Instant::now() < end, |r| i < r * 1000) {
            for _ in 0..1000 {
                let (r, j) = pick(i);
                match what.as_str() {
                    "batch" => {
                        let _ = black_box(runtime.route_batch(&config, &requests));
                    }
                    "bare" => {
                        black_box(instance.route(&config, r, j).ok());
                    }
                    "eligible" => {
                        let _ = black_box(runtime.is_eligible(&config, r));
                    }
                    "native" => {
                        black_box(NativeEval(&config).route(r, j));
                    }
                    _ => {
                        let _ = black_box(runtime.route(&config, r, j));
                    }
                }
                i += 1;
            }
        }
        println!("{what}: {i} iterations");
        return Ok(());
    }

    // Native rules: the reference evaluator, built once like the guest's.
    let evaluator = Evaluator::new(config.config().clone())?;
    let native = per_iter(15, 200_000 / scale, |i| {
        let (r, j) = pick(i);
        black_box(evaluator.route(black_box(r), black_box(j)));
    });

    let native_bucket = per_iter(15, 200_000 / scale, |i| {
        let (r, _) = pick(i);
        black_box(rollout_policy::bucket(black_box(&config.config().feature_name), black_box(&r.id)));
    });

    let engine = new_engine()?;
    let limits = Limits::default();
    let compile = each(
        11 / scale.min(5),
        |_| (),
        |()| {
            black_box(CompiledPolicy::compile(&engine, BUNDLED_POLICY, "bench").ok());
        },
    );
    let compiled = CompiledPolicy::compile(&engine, BUNDLED_POLICY, "bench")?;
    // Instantiation alone; the instance is dropped (its slot returned) untimed.
    let made = std::cell::RefCell::new(None);
    let instantiate = each(
        201 / scale,
        |_| drop(made.borrow_mut().take()),
        |()| *made.borrow_mut() = Some(compiled.instantiate(&limits)),
    );
    drop(made);

    // A bare instance: the component call and conversions, no pool.
    let mut instance = compiled.instantiate(&limits)?;
    let bare = per_iter(15, 50_000 / scale, |i| {
        let (r, j) = pick(i);
        black_box(instance.route(&config, black_box(r), black_box(j)).ok());
    });
    // The same through the typed call (what a request that does not fit `packed` costs).
    let bare_typed = per_iter(15, 50_000 / scale, |i| {
        let (r, j) = pick(i);
        black_box(instance.route_typed(&config, black_box(r), black_box(j)).ok());
    });
    let bare_eligible = per_iter(15, 50_000 / scale, |i| {
        let (r, _) = pick(i);
        black_box(instance.is_eligible(&config, black_box(r)).ok());
    });

    // The runtime: cold load (compile + safety check), then single and batch decisions.
    let cache = std::env::temp_dir().join(format!("rollout-bench-cache-{}", std::process::id()));
    let options = RuntimeOptions { cache_dir: Some(cache.clone()), ..RuntimeOptions::default() };
    let runtime = Runtime::new(options.clone())?;
    let cold = runtime.load_bytes(BUNDLED_POLICY, "bundled")?;
    let checked = cold.validated_decisions.unwrap_or(0);
    let single = per_iter(15, 50_000 / scale, |i| {
        let (r, j) = pick(i);
        let _ = black_box(runtime.route(&config, black_box(r), black_box(j)));
    });
    let single_eligible = per_iter(15, 50_000 / scale, |i| {
        let (r, _) = pick(i);
        let _ = black_box(runtime.is_eligible(&config, black_box(r)));
    });
    let batch = per_iter(15, 40 / scale.min(4), |_| {
        let _ = black_box(runtime.route_batch(&config, black_box(&requests)));
    })
    .scaled(1.0 / n as f64);
    // The same 1,000 requests natively and as one `route-batch`, paired per sample.
    let batch_ratio = paired_ratio(
        31 / scale.min(3),
        || {
            for (r, j) in &requests {
                black_box(evaluator.route(black_box(r), black_box(j)));
            }
        },
        || {
            let _ = black_box(runtime.route_batch(&config, black_box(&requests)));
        },
    );
    let single_ratio = paired_ratio(
        31 / scale.min(3),
        || {
            for (r, j) in &requests {
                black_box(evaluator.route(black_box(r), black_box(j)));
            }
        },
        || {
            for (r, j) in &requests {
                let _ = black_box(runtime.route(&config, black_box(r), black_box(j)));
            }
        },
    );
    let repos: Vec<Repository> = requests.iter().map(|(r, _)| r.clone()).collect();
    let eligibility_batch = per_iter(15, 40 / scale.min(4), |_| {
        let _ = black_box(runtime.is_eligible_batch(&config, black_box(&repos)));
    })
    .scaled(1.0 / n as f64);
    let native_eligible = per_iter(15, 200_000 / scale, |i| {
        black_box(evaluator.is_eligible(black_box(&repos[i % n])));
    });
    let status = runtime.status();
    let fallbacks = status.active.as_ref().map_or(0, |a| a.counts.fallbacks);

    // Cold safety check alone: a fresh sha256 each time, compiled, then checked.
    let validate = each(
        3,
        |i| (Runtime::new(RuntimeOptions::default()), variant(BUNDLED_POLICY, &format!("validate-{i}"))),
        |(rt, bytes)| {
            black_box(rt.ok().map(|rt| rt.validate_bytes(&bytes, "bench")));
        },
    );

    // Restart: a fresh runtime loads a version from the disk cache (compiled code and the
    // safety verdict), then makes its first decision.
    let cached_load = each(
        11 / scale.min(5),
        |_| Runtime::new(options.clone()),
        |rt| {
            if let Ok(rt) = rt {
                black_box(rt.load_bytes(BUNDLED_POLICY, "bundled").ok());
                let _ = black_box(rt.route(&config, &requests[0].0, &requests[0].1));
            }
        },
    );

    // Cold swap: bytes never seen → compiled, checked (fixed and fresh samples), cached on
    // disk, serving, first decision on it; on the serving runtime, wall clock.
    let swap_cold = each(
        5,
        |i| variant(BUNDLED_POLICY, &format!("cold-{i}")),
        |bytes| {
            black_box(runtime.load_bytes(&bytes, "cold").ok());
            let _ = black_box(runtime.route(&config, &requests[2].0, &requests[2].1));
        },
    );

    // Swap: two known versions, alternately; bytes in hand → first decision on the new one.
    let other = variant(BUNDLED_POLICY, "swap");
    runtime.load_bytes(&other, "other")?;
    let versions = [BUNDLED_POLICY.to_vec(), other];
    let swap = each(
        41 / scale.min(4),
        |i| &versions[i % 2],
        |bytes| {
            black_box(runtime.load_bytes(bytes, "swap").ok());
            let _ = black_box(runtime.route(&config, &requests[1].0, &requests[1].1));
        },
    );
    let _ = std::fs::remove_dir_all(&cache);

    let ms = |m: Measure| format!("{:.2} ms ({:.2})", m.cpu / 1e6, m.wall / 1e6);
    let ns = |m: Measure| format!("{:.1} ns ({:.1})", m.cpu, m.wall);
    println!();
    println!(
        "== runtime benchmark: medians of CPU time (wall clock in parentheses), one run, {} cores ==",
        std::thread::available_parallelism()?.get()
    );
    println!("| measure | median | target |");
    println!("| --- | ---: | --- |");
    println!("| native rules: `Evaluator::route` | {} | |", ns(native));
    println!("| native rules: `Evaluator::is_eligible` | {} | |", ns(native_eligible));
    println!("| native rules: `bucket` (UUID text + xxh3) | {} | |", ns(native_bucket));
    println!("| wasm single `route` (Runtime: version, pool, call) | {} | ≤ 300 ns |", ns(single));
    println!("| wasm single `route` (bare instance, scalar `packed` call) | {} | |", ns(bare));
    println!("| wasm single `route` (bare instance, typed call) | {} | |", ns(bare_typed));
    println!("| wasm single `is-eligible` (Runtime) | {} | |", ns(single_eligible));
    println!("| wasm single `is-eligible` (bare instance) | {} | |", ns(bare_eligible));
    println!("| wasm `route-batch` of {n}, per decision | {} | ≤ 150 ns, ≤ 3× native |", ns(batch));
    println!("| wasm `is-eligible-batch` of {n}, per decision | {} | |", ns(eligibility_batch));
    println!("| ratio single `route` / native (paired samples) | {single_ratio:.1}× | |");
    println!("| ratio `route-batch` / native (paired samples) | {batch_ratio:.2}× | ≤ 3× |");
    println!("| cold compile (Cranelift, world check, `info()`), wall clock | {:.2} ms | |", compile.wall / 1e6);
    println!(
        "| cold check: compile + safety contract ({checked} decisions), wall clock | {:.0} ms | |",
        validate.wall / 1e6
    );
    println!(
        "| swap, cold: new bytes → compiled, checked, cached, first decision (`swap_cold_ms`) | {} | |",
        ms(swap_cold)
    );
    println!(
        "| swap, cached: fresh runtime loads from the disk cache (reads, fresh sample), first decision (`swap_cached_ms`) | {} | |",
        ms(cached_load)
    );
    println!("| swap to a version in memory → first decision on it (`swap_known_ms`) | {} | ≤ 10 ms |", ms(swap));
    println!("| instantiate (pooling allocator) | {:.1} µs ({:.1}) | |", instantiate.cpu / 1e3, instantiate.wall / 1e3);
    println!("| fallbacks during the run | {fallbacks} | 0 |");
    println!();
    println!("SUMMARY native_route_ns: {:.1}", native.cpu);
    println!("SUMMARY wasm_route_single_ns: {:.0}", single.cpu);
    println!("SUMMARY wasm_route_single_bare_ns: {:.0}", bare.cpu);
    println!("SUMMARY wasm_route_single_typed_bare_ns: {:.0}", bare_typed.cpu);
    println!("SUMMARY wasm_route_batch_ns: {:.1}", batch.cpu);
    println!("SUMMARY wasm_route_batch_ratio: {batch_ratio:.2}");
    println!("SUMMARY wasm_route_single_ratio: {single_ratio:.1}");
    // Compilation runs on several threads: its latency is wall-clock time.
    println!("SUMMARY compile_ms: {:.1}", compile.wall / 1e6);
    // Swaps are waits a user sees: wall clock, I/O included.
    println!("SUMMARY swap_cold_ms: {:.1}", swap_cold.wall / 1e6);
    println!("SUMMARY swap_cached_ms: {:.2}", cached_load.wall / 1e6);
    println!("SUMMARY swap_known_ms: {:.3}", swap.wall / 1e6);
    println!("SUMMARY instantiate_us: {:.1}", instantiate.cpu / 1e3);
    Ok(())
}
