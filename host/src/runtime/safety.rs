//! The safety contract a policy version must pass before it serves.
//!
//! Two samples are decided under a grid of configurations — every percentage from 0 to 100,
//! each strategy, with and without overlapping target and exclusion lists — and each
//! property of [`SafetyProperty`] is checked on every answer:
//!
//! - a **fixed** sample (UUIDs and free-text ids, every category and none, a grid of
//!   repository statistics and health windows at their edges), the same everywhere, whose
//!   verdict is cached by the digest of the component's bytes;
//! - a **fresh** sample drawn from a new random seed each time a version is checked for
//!   activation (ids with any characters and lengths, random jobs, statistics and health
//!   windows), so a component cannot be tuned to the fixed sample. Its seed is part of any
//!   counterexample, so a refusal can be reproduced.
//!
//! At a few points of each running configuration the check also decides requests one at a
//! time, through the component's scalar `packed` call (where it has one and the request
//! fits) and through the typed call, and requires each answer to be the batch's.
//!
//! The first violation stops the check and names the property and a counterexample (the
//! configuration, the input and what the policy answered). A policy that traps, times out
//! or refuses a valid configuration during the check is refused too
//! ([`SafetyProperty::Answers`], or the health and categorisation properties when it is
//! those functions that fail).

use super::PolicyInstance;
use crate::engine::ConfigSnapshot;
use rollout_policy::packed::PackedQuery;
use rollout_policy::{
    Category, Config, Eligibility, Job, Processor, ProcessorWindow, RepoId, Repository, RepositoryStats, RouteDecision,
    Strategy, TriggerSource,
};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// Version of the contract and its fixed sample; part of the key of a cached verdict.
/// Version 2 checks every percentage for every strategy, `categorize` and
/// `evaluate_health`, and adds the fresh sample; version 3 checks that single calls
/// (packed and typed) decide as the batch does; version 4 checks that `monitoring` (WIT
/// contract 0.1.1) answers every health sample with signals.
pub(crate) const CONTRACT_VERSION: u32 = 4;

/// Fewest repositories in the fixed sample.
pub(crate) const MIN_SAMPLE: usize = 1000;

/// Repositories of the fixed sample decided under an emergency stop or an inactive
/// rollout at each point of the grid (the first ones: they hold the target and exclusion
/// lists).
const STOPPED_SAMPLE: usize = 250;

/// Repositories in the fresh sample of each activation.
pub(crate) const FRESH_SAMPLE: usize = 100;

/// Requests decided one at a time (four calls each) at each running point of the grid.
const SINGLES: usize = 4;

/// A property of the safety contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SafetyProperty {
    /// Every eligibility and routing call of the check answers: no trap, no timeout, no
    /// refused valid configuration.
    Answers,
    /// An emergency stop admits nobody.
    EmergencyStop,
    /// An inactive rollout admits nobody.
    Inactive,
    /// An excluded repository is never eligible.
    Excluded,
    /// At 0 % nobody beyond the target list is eligible, whatever the strategy.
    ZeroPercent,
    /// Eligible at a percentage means eligible at every higher percentage.
    Monotonic,
    /// A repository that is not eligible routes to Inngest.
    IneligibleRoutesToInngest,
    /// `evaluate-health` answers every configuration and every window, with a finite
    /// error rate (and so does `monitoring.evaluate-health-signals`, where exported, with
    /// backlog and processing-time signals beside each window).
    HealthAnswers,
    /// `categorize` answers every repository's statistics.
    CategorizeTotal,
    /// A single decision — through the scalar `packed` call where the component has it
    /// and the request fits, and through the typed call — is exactly the batch's decision
    /// for the same input and configuration.
    SingleAgrees,
}

impl SafetyProperty {
    /// Every property, in the order they are checked.
    pub const ALL: [SafetyProperty; 10] = [
        SafetyProperty::Answers,
        SafetyProperty::EmergencyStop,
        SafetyProperty::Inactive,
        SafetyProperty::Excluded,
        SafetyProperty::ZeroPercent,
        SafetyProperty::Monotonic,
        SafetyProperty::IneligibleRoutesToInngest,
        SafetyProperty::HealthAnswers,
        SafetyProperty::CategorizeTotal,
        SafetyProperty::SingleAgrees,
    ];

    /// The property's id (`emergency_stop`, `monotonic`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SafetyProperty::Answers => "answers",
            SafetyProperty::EmergencyStop => "emergency_stop",
            SafetyProperty::Inactive => "inactive",
            SafetyProperty::Excluded => "excluded",
            SafetyProperty::ZeroPercent => "zero_percent",
            SafetyProperty::Monotonic => "monotonic",
            SafetyProperty::IneligibleRoutesToInngest => "ineligible_routes_to_inngest",
            SafetyProperty::HealthAnswers => "health_answers",
            SafetyProperty::CategorizeTotal => "categorize_total",
            SafetyProperty::SingleAgrees => "single_agrees",
        }
    }

    /// The property in words.
    pub fn describe(self) -> &'static str {
        match self {
            SafetyProperty::Answers => "every call answers within the limits",
            SafetyProperty::EmergencyStop => "an emergency stop admits nobody",
            SafetyProperty::Inactive => "an inactive rollout admits nobody",
            SafetyProperty::Excluded => "an excluded repository is never eligible",
            SafetyProperty::ZeroPercent => "0 % admits nobody beyond the target list, whatever the strategy",
            SafetyProperty::Monotonic => "eligible at p % implies eligible at every higher percentage",
            SafetyProperty::IneligibleRoutesToInngest => "a repository that is not eligible routes to inngest",
            SafetyProperty::HealthAnswers => "the health evaluation answers every window with a finite error rate",
            SafetyProperty::CategorizeTotal => "categorisation answers every repository's statistics",
            SafetyProperty::SingleAgrees => {
                "a single decision (packed or typed call) is the batch's decision for the same input"
            }
        }
    }
}

impl fmt::Display for SafetyProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.describe())
    }
}

/// A broken property and the input that shows it.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub property: SafetyProperty,
    pub counterexample: String,
}

/// The generated inputs.
struct Sample {
    /// `fixed sample` or `fresh sample (seed 0x…)`: the start of every counterexample.
    label: String,
    /// `true` for the fixed sample: the whole grid (both features, with and without the
    /// lists); a fresh sample is checked with the lists and the first feature, which
    /// covers every property at every percentage and strategy at a sixth of the calls.
    full: bool,
    repos: Vec<Repository>,
    ids: Vec<String>,
    /// Each repository with a job, for the routing checks.
    requests: Vec<(Repository, Job)>,
    targets: HashSet<String>,
    excluded: HashSet<String>,
    stats: Vec<RepositoryStats>,
    /// Health inputs: configuration knobs and the windows judged under them.
    health: Vec<(HealthKnobs, Vec<ProcessorWindow>)>,
}

/// The health-relevant settings of a configuration.
#[derive(Debug, Clone, Copy)]
struct HealthKnobs {
    max_error_rate: f64,
    min_jobs_for_rollback: u32,
    auto_rollback_enabled: bool,
    percentage: u8,
}

/// The samples' generator: a sample is the same everywhere for the same seed.
use crate::rng::SplitMix as Rng;

fn uuid(rng: &mut Rng) -> RepoId {
    RepoId::Uuid((u128::from(rng.next()) << 64) | u128::from(rng.next()))
}

/// Statistics at the edges of the categorisation thresholds and of the integer range.
const STAT_EDGES: [u32; 12] = [0, 1, 9, 10, 49, 50, 99, 100, 999, 1000, 0x7FFF_FFFF, u32::MAX];

/// Health windows at the edges: none, empty, one processor, both, duplicated processors,
/// errors above the total, counts at `u64::MAX`, and processing times that are not finite.
fn edge_windows() -> Vec<Vec<ProcessorWindow>> {
    let w = |processor, success_count, error_count, total_jobs, average_processing_time| ProcessorWindow {
        processor,
        success_count,
        error_count,
        total_jobs,
        average_processing_time,
    };
    let (i, g) = (Processor::Inngest, Processor::GithubActions);
    vec![
        vec![],
        vec![w(i, 0, 0, 0, None)],
        vec![w(i, 90, 10, 100, Some(12.5)), w(g, 99, 1, 100, None)],
        vec![w(g, 0, 50, 50, Some(0.0)), w(g, 0, 50, 50, Some(0.0))],
        vec![w(i, 0, 100, 10, Some(-1.0))],
        vec![w(i, u64::MAX, u64::MAX, u64::MAX, Some(f64::MAX)), w(g, u64::MAX, u64::MAX, u64::MAX, None)],
        vec![w(i, 1, u64::MAX, 1, Some(f64::NAN)), w(g, 0, 0, u64::MAX, Some(f64::INFINITY))],
        vec![w(i, 5, 5, 10, Some(f64::NEG_INFINITY))],
    ]
}

fn edge_knobs() -> Vec<HealthKnobs> {
    let mut knobs = Vec::new();
    for max_error_rate in [0.0, 2.5, 5.0, 10.0, 100.0] {
        for min_jobs_for_rollback in [0, 10, u32::MAX] {
            for auto_rollback_enabled in [true, false] {
                knobs.push(HealthKnobs {
                    max_error_rate,
                    min_jobs_for_rollback,
                    auto_rollback_enabled,
                    percentage: 50,
                });
            }
        }
    }
    knobs
}

impl Sample {
    /// The fixed sample: at least [`MIN_SAMPLE`] repositories.
    fn fixed(size: usize) -> Sample {
        let mut rng = Rng(0x0001_5EED);
        let repos: Vec<Repository> = (0..size.max(MIN_SAMPLE))
            .map(|i| {
                let id = if i % 10 == 9 { RepoId::Text(format!("org-{}/repo-{i}", i % 7)) } else { uuid(&mut rng) };
                let category = match i % 6 {
                    0 => None,
                    k => Category::ALL.get(k - 1).copied(),
                };
                Repository { id, category }
            })
            .collect();
        let job = Job::default;
        let jobs = vec![
            Job { trigger_source: Some(TriggerSource::Scheduled), ..job() },
            Job { max_items: Some(500), trigger_source: Some(TriggerSource::Automatic), ..job() },
            Job { time_range_days: Some(30), ..job() },
            Job { time_range_days: Some(1), trigger_source: Some(TriggerSource::Scheduled), ..job() },
            Job { pr_numbers: vec![1, 2, 3], trigger_source: Some(TriggerSource::Scheduled), ..job() },
            Job { trigger_source: Some(TriggerSource::Manual), max_items: Some(10), ..job() },
            Job { job_type: Some("capture".into()), trigger_source: Some(TriggerSource::Automatic), ..job() },
            job(),
        ];
        let mut stats = Vec::new();
        for star_count in STAT_EDGES {
            for contributor_count in STAT_EDGES {
                for pr_count in [0, 10, 1000, u32::MAX] {
                    stats.push(RepositoryStats { star_count, contributor_count, pr_count });
                }
            }
        }
        let windows = edge_windows();
        let health = edge_knobs().into_iter().flat_map(|k| windows.iter().map(move |w| (k, w.clone()))).collect();
        Sample::new("fixed sample".to_owned(), true, repos, jobs, stats, health)
    }

    /// A sample drawn from `seed`: ids of any characters and lengths, random jobs,
    /// statistics and health windows.
    fn fresh(seed: u64, size: usize) -> Sample {
        let mut rng = Rng(seed);
        const PIECES: [&str; 16] =
            ["a", "Z", "0", "9", "-", "_", "/", ".", ":", " ", "é", "β", "中", "😀", "\u{200b}", "%"];
        let repos = (0..size)
            .map(|_| {
                let id = if rng.chance(40) {
                    uuid(&mut rng)
                } else {
                    let len = 1 + rng.below(48);
                    RepoId::Text((0..len).filter_map(|_| rng.pick(&PIECES).copied()).collect())
                };
                let category = rng.pick(Category::ALL).copied().filter(|_| rng.chance(85));
                Repository { id, category }
            })
            .collect();
        let jobs = (0..16)
            .map(|_| {
                let small = |rng: &mut Rng, n: u64| rng.chance(50).then(|| rng.below(n) as u32);
                Job {
                    time_range_days: small(&mut rng, 400),
                    // Half the jobs carry no PR numbers, so that with a UUID id and no
                    // job type a request fits the `packed` call and single decisions
                    // take both paths.
                    pr_numbers: match rng.chance(50) {
                        true => (0..rng.below(14)).map(|_| rng.below(100_000)).collect(),
                        false => Vec::new(),
                    },
                    trigger_source: rng.pick(TriggerSource::ALL).copied().filter(|_| rng.chance(80)),
                    max_items: small(&mut rng, 2000),
                    job_type: rng.chance(30).then(|| "capture".to_owned()),
                }
            })
            .collect();
        let stats = (0..200)
            .map(|_| {
                let mut stat = || if rng.chance(20) { rng.next() as u32 } else { rng.below(2000) as u32 };
                RepositoryStats { star_count: stat(), contributor_count: stat(), pr_count: stat() }
            })
            .collect();
        let processors = [Processor::Inngest, Processor::GithubActions];
        let health = (0..200)
            .map(|_| {
                let knobs = HealthKnobs {
                    max_error_rate: rng.below(10_001) as f64 / 100.0,
                    min_jobs_for_rollback: if rng.chance(10) { rng.next() as u32 } else { rng.below(200) as u32 },
                    auto_rollback_enabled: rng.chance(70),
                    percentage: rng.below(101) as u8,
                };
                let windows = (0..rng.below(4))
                    .map(|_| {
                        let mut count = || if rng.chance(10) { rng.next() } else { rng.below(10_000) };
                        let (success_count, error_count, total_jobs) = (count(), count(), count());
                        let average_processing_time = match rng.below(5) {
                            0 => None,
                            1 => Some(f64::from_bits(rng.next())),
                            _ => Some(rng.below(1_000_000) as f64 / 7.0),
                        };
                        ProcessorWindow {
                            processor: processors.get(rng.below(2) as usize).copied().unwrap_or(Processor::Inngest),
                            success_count,
                            error_count,
                            total_jobs,
                            average_processing_time,
                        }
                    })
                    .collect();
                (knobs, windows)
            })
            .collect();
        Sample::new(format!("fresh sample (seed {seed:#018x})"), false, repos, jobs, stats, health)
    }

    fn new(
        label: String,
        full: bool,
        repos: Vec<Repository>,
        jobs: Vec<Job>,
        stats: Vec<RepositoryStats>,
        health: Vec<(HealthKnobs, Vec<ProcessorWindow>)>,
    ) -> Sample {
        let ids: Vec<String> = repos.iter().map(|r| r.id.to_string()).collect();
        let requests = repos
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), jobs.get(i % jobs.len().max(1)).cloned().unwrap_or_default()))
            .collect();
        let set = |range: std::ops::Range<usize>| -> HashSet<String> {
            ids.iter().skip(range.start).take(range.len()).cloned().collect()
        };
        let (targets, excluded) = (set(TARGETS), set(EXCLUDED));
        Sample { label, full, repos, ids, requests, targets, excluded, stats, health }
    }
}

/// Targets are the first 40 ids of the sample, exclusions the 40 from the 20th on: the
/// two lists overlap, and an id in both must stay excluded. (Every configuration of the
/// grid carries them; each id is a string the guest receives, so they stay short.)
const TARGETS: std::ops::Range<usize> = 0..40;
const EXCLUDED: std::ops::Range<usize> = 20..60;

#[derive(Clone, Copy)]
struct Grid<'a> {
    feature: &'a str,
    strategy: Strategy,
    percentage: u8,
    active: bool,
    stop: bool,
    lists: bool,
}

impl Grid<'_> {
    fn list(&self, ids: &[String], range: std::ops::Range<usize>) -> Vec<String> {
        let end = range.end.min(ids.len());
        match self.lists {
            true => ids.get(range.start.min(end)..end).unwrap_or_default().to_vec(),
            false => Vec::new(),
        }
    }

    fn config(&self, ids: &[String]) -> Config {
        Config {
            feature_name: self.feature.to_owned(),
            rollout_percentage: self.percentage,
            is_active: self.active,
            target_repositories: self.list(ids, TARGETS),
            excluded_repositories: self.list(ids, EXCLUDED),
            rollout_strategy: self.strategy,
            emergency_stop: self.stop,
            ..Config::default()
        }
    }
}

impl fmt::Display for Grid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "feature `{}`, strategy {}, {} %, {}, {}",
            self.feature,
            self.strategy,
            self.percentage,
            if self.active { "active" } else { "inactive" },
            if self.stop { "emergency stop on" } else { "no emergency stop" },
        )?;
        if self.lists {
            write!(f, ", targets = sample[{TARGETS:?}], excluded = sample[{EXCLUDED:?}]")?;
        }
        Ok(())
    }
}

fn describe_repo(r: &Repository) -> String {
    match r.category {
        Some(c) => format!("repository `{}` (category {c})", r.id.to_string().escape_debug()),
        None => format!("repository `{}` (uncategorised)", r.id.to_string().escape_debug()),
    }
}

fn describe_eligibility(e: &Eligibility) -> String {
    format!("{} ({}, bucket {})", if e.eligible { "eligible" } else { "not eligible" }, e.reason, e.bucket)
}

const FEATURES: [&str; 2] = [rollout_policy::DEFAULT_FEATURE, "safety-check/β"];
const STRATEGIES: [Strategy; 3] = [Strategy::Percentage, Strategy::Whitelist, Strategy::RepositorySize];

/// Runs the contract on one instance.
pub(crate) struct Checker<'a> {
    instance: &'a mut PolicyInstance,
    sample: Sample,
    decisions: u64,
}

impl<'a> Checker<'a> {
    /// The check of the fixed sample (at least [`MIN_SAMPLE`] repositories).
    pub fn new(instance: &'a mut PolicyInstance, size: usize) -> Checker<'a> {
        Checker { instance, sample: Sample::fixed(size), decisions: 0 }
    }

    /// The check of a fresh sample drawn from `seed`.
    pub fn fresh(instance: &'a mut PolicyInstance, seed: u64) -> Checker<'a> {
        Checker { instance, sample: Sample::fresh(seed, FRESH_SAMPLE), decisions: 0 }
    }

    fn violation(&self, property: SafetyProperty, counterexample: String) -> Violation {
        Violation { property, counterexample: format!("{}: {counterexample}", self.sample.label) }
    }

    /// The configuration of `grid`, as one snapshot for every call made under it (the
    /// instance keeps the evaluator it built for it).
    fn snapshot(&self, grid: &Grid<'_>) -> Arc<ConfigSnapshot> {
        ConfigSnapshot::new(grid.config(&self.sample.ids))
    }

    fn eligibility(
        &mut self,
        grid: &Grid<'_>,
        config: &ConfigSnapshot,
        n: usize,
    ) -> Result<Vec<Eligibility>, Violation> {
        let repos = self.sample.repos.get(..n.min(self.sample.repos.len())).unwrap_or_default();
        let out = self
            .instance
            .is_eligible_batch(config, repos)
            .map_err(|e| self.violation(SafetyProperty::Answers, format!("is-eligible-batch with {grid}: {e}")))?;
        self.decisions += out.len() as u64;
        Ok(out)
    }

    /// Check every property; the number of decisions checked.
    pub fn run(mut self) -> Result<u64, Violation> {
        // Each percentage of each strategy: the properties of a running rollout, of a
        // stopped one and of an inactive one. The fixed sample is checked with and without
        // the lists, and the second feature (another hash) for eligibility too.
        let all = self.sample.repos.len();
        let stopped = STOPPED_SAMPLE.min(all);
        let (features, lists): (&[&str], &[bool]) =
            if self.sample.full { (&FEATURES, &[false, true]) } else { (&FEATURES[..1], &[true]) };
        for (fi, &feature) in features.iter().enumerate() {
            for strategy in STRATEGIES {
                for &lists in lists {
                    let mut last: Option<(u8, Vec<Eligibility>)> = None;
                    for percentage in 0..=100 {
                        let g = Grid { feature, strategy, percentage, active: true, stop: false, lists };
                        let config = self.snapshot(&g);
                        let out = self.eligibility(&g, &config, all)?;
                        self.running(&g, &out, last.as_ref())?;
                        if fi == 0 {
                            let decisions = self.routes(&g, &config, Some(&out), all)?;
                            self.singles(&g, &config, &out, &decisions)?;
                            for (h, property) in [
                                (Grid { stop: true, ..g }, SafetyProperty::EmergencyStop),
                                (Grid { active: false, ..g }, SafetyProperty::Inactive),
                            ] {
                                let config = self.snapshot(&h);
                                self.nobody(&h, &config, property, stopped)?;
                                self.routes(&h, &config, None, stopped)?;
                            }
                        }
                        last = Some((percentage, out));
                    }
                }
            }
        }
        self.categorize()?;
        self.health()?;
        Ok(self.decisions)
    }

    fn nobody(
        &mut self,
        grid: &Grid<'_>,
        config: &ConfigSnapshot,
        property: SafetyProperty,
        n: usize,
    ) -> Result<(), Violation> {
        let out = self.eligibility(grid, config, n)?;
        if let Some((r, e)) = self.sample.repos.iter().zip(&out).find(|(_, e)| e.eligible) {
            return Err(
                self.violation(property, format!("with {grid}: {} is {}", describe_repo(r), describe_eligibility(e)))
            );
        }
        Ok(())
    }

    /// Exclusions, 0 % and the monotonic ramp on the answers `out` for `g`.
    fn running(
        &self,
        g: &Grid<'_>,
        out: &[Eligibility],
        last: Option<&(u8, Vec<Eligibility>)>,
    ) -> Result<(), Violation> {
        let sample = &self.sample;
        for ((r, id), e) in sample.repos.iter().zip(&sample.ids).zip(out) {
            if !e.eligible {
                continue;
            }
            if g.lists && sample.excluded.contains(id) {
                return Err(self.violation(
                    SafetyProperty::Excluded,
                    format!("with {g}: excluded {} is {}", describe_repo(r), describe_eligibility(e)),
                ));
            }
            if g.percentage == 0 && !(g.lists && sample.targets.contains(id)) {
                return Err(self.violation(
                    SafetyProperty::ZeroPercent,
                    format!("with {g}: {} is {}", describe_repo(r), describe_eligibility(e)),
                ));
            }
        }
        if let Some((p, before)) = last {
            let broken = sample.repos.iter().zip(before.iter().zip(out)).find(|(_, (b, a))| b.eligible && !a.eligible);
            if let Some((r, (b, a))) = broken {
                let percentage = g.percentage;
                return Err(self.violation(
                    SafetyProperty::Monotonic,
                    format!(
                        "with {grid}: {} is {} at {p} % but {} at {percentage} %",
                        describe_repo(r),
                        describe_eligibility(b),
                        describe_eligibility(a),
                        grid = Grid { percentage: *p, ..*g },
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A repository that is not eligible (by `eligibility`, when given, or by the route's
    /// own answer) routes to Inngest; under a stop or an inactive rollout nobody is
    /// eligible in the route's answer either.
    fn routes(
        &mut self,
        grid: &Grid<'_>,
        config: &ConfigSnapshot,
        eligibility: Option<&[Eligibility]>,
        n: usize,
    ) -> Result<Vec<RouteDecision>, Violation> {
        let requests = self.sample.requests.get(..n.min(self.sample.requests.len())).unwrap_or_default();
        let decisions = self
            .instance
            .route_batch(config, requests)
            .map_err(|e| self.violation(SafetyProperty::Answers, format!("route-batch with {grid}: {e}")))?;
        self.decisions += decisions.len() as u64;
        let shut = grid.stop || !grid.active;
        for (i, ((r, job), d)) in requests.iter().zip(&decisions).enumerate() {
            let e = eligibility.and_then(|e| e.get(i)).unwrap_or(&d.eligibility);
            if shut && d.eligibility.eligible {
                let property = if grid.stop { SafetyProperty::EmergencyStop } else { SafetyProperty::Inactive };
                return Err(self.violation(
                    property,
                    format!("with {grid}: route says {} is {}", describe_repo(r), describe_eligibility(&d.eligibility)),
                ));
            }
            if d.processor != Processor::Inngest && (!e.eligible || !d.eligibility.eligible) {
                return Err(self.violation(
                    SafetyProperty::IneligibleRoutesToInngest,
                    format!(
                        "with {grid}: {} is {} (route says {}) yet {job:?} routes to {} ({})",
                        describe_repo(r),
                        describe_eligibility(e),
                        describe_eligibility(&d.eligibility),
                        d.processor,
                        d.rule,
                    ),
                ));
            }
        }
        Ok(decisions)
    }

    /// [`SafetyProperty::SingleAgrees`] on [`SINGLES`] requests of the sample, a different
    /// few at each percentage: `is_eligible` and `route` one at a time, through `packed`
    /// (where the component has it and the request fits) and through the typed call, each
    /// answer exactly the batch's (`eligibility`, `decisions`).
    fn singles(
        &mut self,
        grid: &Grid<'_>,
        config: &ConfigSnapshot,
        eligibility: &[Eligibility],
        decisions: &[RouteDecision],
    ) -> Result<(), Violation> {
        let n = decisions.len().min(eligibility.len()).min(self.sample.requests.len());
        for k in 0..SINGLES.min(n) {
            let i = (usize::from(grid.percentage) * 7 + k * n / SINGLES) % n;
            let (Some((r, job)), Some(batch), Some(e)) =
                (self.sample.requests.get(i).cloned(), decisions.get(i), eligibility.get(i))
            else {
                continue;
            };
            let single = |what: &str, e: crate::engine::CallError| {
                let property = match e {
                    crate::engine::CallError::BadAnswer(_) => SafetyProperty::SingleAgrees,
                    _ => SafetyProperty::Answers,
                };
                (property, format!("{what} of {} and {job:?} with {grid}: {e}", describe_repo(&r)))
            };
            let fits = self.instance.has_packed() && PackedQuery::encode(&r, &job).is_some();
            let fits_eligibility = self.instance.has_packed() && PackedQuery::encode_repository(&r).is_some();
            let routes = [
                (if fits { "route (packed)" } else { "route" }, self.instance.route(config, &r, &job)),
                ("route (typed)", self.instance.route_typed(config, &r, &job)),
            ];
            for (what, got) in routes {
                let d = got.map_err(|e| {
                    let (p, c) = single(what, e);
                    self.violation(p, c)
                })?;
                if &d != batch {
                    return Err(self.violation(
                        SafetyProperty::SingleAgrees,
                        format!(
                            "{what} of {} and {job:?} with {grid} answers {d:?}, the batch {batch:?}",
                            describe_repo(&r)
                        ),
                    ));
                }
            }
            let eligibilities = [
                (
                    if fits_eligibility { "is-eligible (packed)" } else { "is-eligible" },
                    self.instance.is_eligible(config, &r),
                ),
                ("is-eligible (typed)", self.instance.is_eligible_typed(config, &r)),
            ];
            for (what, got) in eligibilities {
                let d = got.map_err(|e| {
                    let (p, c) = single(what, e);
                    self.violation(p, c)
                })?;
                if &d != e {
                    return Err(self.violation(
                        SafetyProperty::SingleAgrees,
                        format!(
                            "{what} of {} with {grid} answers {}, the batch {}",
                            describe_repo(&r),
                            describe_eligibility(&d),
                            describe_eligibility(e)
                        ),
                    ));
                }
            }
            self.decisions += 4;
        }
        Ok(())
    }

    fn categorize(&mut self) -> Result<(), Violation> {
        for i in 0..self.sample.stats.len() {
            let Some(stats) = self.sample.stats.get(i).copied() else { break };
            self.instance
                .categorize(&stats)
                .map_err(|e| self.violation(SafetyProperty::CategorizeTotal, format!("categorize({stats:?}): {e}")))?;
            self.decisions += 1;
        }
        Ok(())
    }

    fn health(&mut self) -> Result<(), Violation> {
        for i in 0..self.sample.health.len() {
            let Some((k, windows)) = self.sample.health.get(i).cloned() else { break };
            let config = Config {
                rollout_percentage: k.percentage,
                is_active: true,
                max_error_rate: k.max_error_rate,
                min_jobs_for_rollback: k.min_jobs_for_rollback,
                auto_rollback_enabled: k.auto_rollback_enabled,
                ..Config::default()
            };
            let what = || {
                format!(
                    "evaluate-health with max error rate {} %, min jobs {}, auto-rollback {}, {} %, windows {windows:?}",
                    k.max_error_rate,
                    k.min_jobs_for_rollback,
                    if k.auto_rollback_enabled { "on" } else { "off" },
                    k.percentage
                )
            };
            let health = self
                .instance
                .evaluate_health(&config, &windows)
                .map_err(|e| self.violation(SafetyProperty::HealthAnswers, format!("{}: {e}", what())))?;
            if !health.error_rate.is_finite() {
                return Err(self.violation(
                    SafetyProperty::HealthAnswers,
                    format!("{}: error rate {}", what(), health.error_rate),
                ));
            }
            self.decisions += 1;
            if self.instance.has_monitoring() {
                // the same window with backlog and processing-time signals (contract 0.1.1)
                let signals: Vec<rollout_policy::ProcessorSignals> = windows
                    .iter()
                    .enumerate()
                    .map(|(j, w)| rollout_policy::ProcessorSignals {
                        processor: w.processor,
                        backlog_depths: (0..(i + j) as u64 % 5).map(|d| d * 10 + j as u64).collect(),
                        backlog_oldest_age_seconds: Some(((i * 97 + j * 13) % 2000) as f64),
                        p95_processing_time_ms: w.average_processing_time,
                        baseline_p95_processing_time_ms: (i % 2 == 0).then_some(100.0),
                    })
                    .collect();
                let limits = rollout_policy::HealthLimits {
                    backlog_warning_age_seconds: Some(900.0),
                    backlog_critical_depth: (i % 3 == 0).then_some(20),
                    p95_baseline_factor: Some(2.0),
                    ..rollout_policy::HealthLimits::default()
                };
                let judged =
                    self.instance.evaluate_health_signals(&config, &windows, &signals, &limits).map_err(|e| {
                        self.violation(
                            SafetyProperty::HealthAnswers,
                            format!("{} with signals {signals:?}: {e}", what()),
                        )
                    })?;
                if !judged.error_rate.is_finite() {
                    return Err(self.violation(
                        SafetyProperty::HealthAnswers,
                        format!("{} with signals: error rate {}", what(), judged.error_rate),
                    ));
                }
                self.decisions += 1;
            }
        }
        Ok(())
    }
}
