//! `rollout policy bench`: decisions per second of a policy on generated input, one call
//! per decision and batched.
//!
//! The input is deterministic: repositories with UUID and text ids, a few categories, and
//! jobs cycling through every routing line, under a 50 % percentage configuration with a
//! few targets and exclusions. Each measurement runs a warm-up, then times `decisions`
//! decisions with [`std::time::Instant`].

use crate::engine::ConfigSnapshot;
use crate::engine::Policy;
use crate::runtime::CallError;
use rollout_policy as p;
use std::sync::Arc;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Decisions timed per measurement.
    pub decisions: usize,
    /// Requests per batch call.
    pub batch: usize,
}

impl Default for BenchOptions {
    /// 100 000 decisions, batches of 256.
    fn default() -> Self {
        BenchOptions { decisions: 100_000, batch: 256 }
    }
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// What was measured (`route, one call per decision`, …).
    pub name: String,
    /// Decisions timed.
    pub decisions: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Decisions per second.
    pub per_second: f64,
    /// Nanoseconds per decision.
    pub ns_per_decision: f64,
}

impl Measurement {
    fn new(name: String, decisions: usize, seconds: f64) -> Measurement {
        let seconds = seconds.max(1e-9);
        Measurement {
            name,
            decisions,
            seconds,
            per_second: decisions as f64 / seconds,
            ns_per_decision: seconds * 1e9 / decisions.max(1) as f64,
        }
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `n` generated route requests (the same for the same `n` and `seed`).
pub fn generate_requests(n: usize, seed: u64) -> Vec<(p::Repository, p::Job)> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let id = if i % 4 == 3 {
                p::RepoId::Text(format!("owner-{}/repo-{}", rng.next() % 1000, rng.next() % 1000))
            } else {
                p::RepoId::Uuid((u128::from(rng.next()) << 64) | u128::from(rng.next()))
            };
            let category = p::Category::ALL.get((rng.next() % 6) as usize).copied();
            let trigger = [
                None,
                Some(p::TriggerSource::Manual),
                Some(p::TriggerSource::Scheduled),
                Some(p::TriggerSource::Automatic),
            ]
            .get((rng.next() % 4) as usize)
            .copied()
            .flatten();
            let job = match i % 6 {
                0 => p::Job {
                    time_range_days: Some((rng.next() % 3) as u32),
                    trigger_source: trigger,
                    ..p::Job::default()
                },
                1 => {
                    p::Job { pr_numbers: (0..rng.next() % 14).collect(), trigger_source: trigger, ..p::Job::default() }
                }
                2 => {
                    p::Job { max_items: Some((rng.next() % 120) as u32), trigger_source: trigger, ..p::Job::default() }
                }
                3 => {
                    p::Job { time_range_days: Some(30), job_type: Some("historical-sync".into()), ..p::Job::default() }
                }
                4 => p::Job { trigger_source: trigger, ..p::Job::default() },
                _ => p::Job::default(),
            };
            (p::Repository { id, category }, job)
        })
        .collect()
}

/// The configuration the bench decides with: 50 % of `feature`, a few targets and
/// exclusions taken from `requests`.
pub fn bench_config(feature: &str, requests: &[(p::Repository, p::Job)]) -> Arc<ConfigSnapshot> {
    let ids = |skip: usize| requests.iter().skip(skip).step_by(97).take(8).map(|(r, _)| r.id.to_string()).collect();
    ConfigSnapshot::new(p::Config {
        feature_name: feature.to_owned(),
        rollout_percentage: 50,
        is_active: true,
        target_repositories: ids(1),
        excluded_repositories: ids(2),
        ..p::Config::default()
    })
}

fn time<F: FnMut() -> Result<usize, CallError>>(mut f: F) -> Result<(usize, f64), CallError> {
    let start = Instant::now();
    let n = f()?;
    Ok((n, start.elapsed().as_secs_f64()))
}

/// Measure `policy`: route and is_eligible, one call per decision and in batches.
pub fn bench(policy: &dyn Policy, feature: &str, options: BenchOptions) -> Result<Vec<Measurement>, CallError> {
    let n = options.decisions.max(1);
    let batch = options.batch.max(1);
    let requests = generate_requests(n, 0x5eed);
    let repos: Vec<p::Repository> = requests.iter().map(|(r, _)| r.clone()).collect();
    let config = bench_config(feature, &requests);
    // Warm-up: builds the evaluator, touches every code path once.
    let warm = n.min(1000);
    for (r, j) in requests.iter().take(warm) {
        policy.route(&config, r, j)?;
    }
    policy.route_batch(&config, requests.get(..warm).unwrap_or_default())?;
    let mut out = Vec::new();
    let (count, secs) = time(|| {
        for (r, j) in &requests {
            policy.route(&config, r, j)?;
        }
        Ok(requests.len())
    })?;
    out.push(Measurement::new("route, one call per decision".into(), count, secs));
    let (count, secs) = time(|| {
        let mut done = 0;
        for chunk in requests.chunks(batch) {
            done += policy.route_batch(&config, chunk)?.len();
        }
        Ok(done)
    })?;
    out.push(Measurement::new(format!("route, batches of {batch}"), count, secs));
    let (count, secs) = time(|| {
        for r in &repos {
            policy.is_eligible(&config, r)?;
        }
        Ok(repos.len())
    })?;
    out.push(Measurement::new("is_eligible, one call per decision".into(), count, secs));
    let (count, secs) = time(|| {
        let mut done = 0;
        for chunk in repos.chunks(batch) {
            done += policy.is_eligible_batch(&config, chunk)?.len();
        }
        Ok(done)
    })?;
    out.push(Measurement::new(format!("is_eligible, batches of {batch}"), count, secs));
    Ok(out)
}

/// The measurements as a table.
pub fn render_text(policy: &str, measurements: &[Measurement]) -> String {
    use std::fmt::Write;
    let mut out = format!("{policy}\n");
    for m in measurements {
        let _ =
            writeln!(out, "  {:<40} {:>12.0} decisions/s {:>9.0} ns/decision", m.name, m.per_second, m.ns_per_decision);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_input_is_deterministic_and_covers_the_routing_lines() {
        let a = generate_requests(600, 1);
        assert_eq!(a, generate_requests(600, 1));
        let config = bench_config(p::DEFAULT_FEATURE, &a);
        let e = match p::Evaluator::new(config.config().clone()) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        let rules: std::collections::HashSet<p::RouteRule> = a.iter().map(|(r, j)| e.route(r, j).rule).collect();
        for rule in [
            p::RouteRule::NotEligible,
            p::RouteRule::RecentData,
            p::RouteRule::SmallPrBatch,
            p::RouteRule::HistoricalRange,
            p::RouteRule::LargeBatch,
            p::RouteRule::Default,
        ] {
            assert!(rules.contains(&rule), "{rule}");
        }
    }

    #[test]
    fn native_bench_counts_every_decision() {
        let ms =
            bench(&crate::engine::NativePolicy::new(), p::DEFAULT_FEATURE, BenchOptions { decisions: 500, batch: 64 });
        let ms = ms.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ms.len(), 4);
        assert!(ms.iter().all(|m| m.decisions == 500 && m.per_second > 0.0));
    }
}
