//! The safety contract a policy version must pass before it serves.
//!
//! A deterministic sample of repositories (UUIDs and free-text ids, every category and
//! none) is decided under a grid of configurations, and each property of
//! [`SafetyProperty`] is checked on every answer. The first violation stops the check and
//! names the property and a counterexample (the configuration, the repository and what the
//! policy answered). A policy that traps, times out or refuses a valid configuration
//! during the check is refused too ([`SafetyProperty::Answers`]).

use super::PolicyInstance;
use crate::engine::ConfigSnapshot;
use rollout_policy::{Category, Config, Eligibility, Job, Processor, RepoId, Repository, Strategy, TriggerSource};
use std::fmt;

/// Version of the contract and its sample; part of the key of a cached verdict.
pub(crate) const CONTRACT_VERSION: u32 = 1;

/// Fewest repositories in the sample.
pub(crate) const MIN_SAMPLE: usize = 1000;

/// A property of the safety contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SafetyProperty {
    /// Every call of the check answers: no trap, no timeout, no refused valid configuration.
    Answers,
    /// An emergency stop admits nobody.
    EmergencyStop,
    /// An inactive rollout admits nobody.
    Inactive,
    /// An excluded repository is never eligible.
    Excluded,
    /// The percentage strategy at 0 % with no targets admits nobody.
    ZeroPercent,
    /// Eligible at a percentage means eligible at every higher percentage.
    Monotonic,
    /// A repository that is not eligible routes to Inngest.
    IneligibleRoutesToInngest,
}

impl SafetyProperty {
    /// Every property, in the order they are checked.
    pub const ALL: [SafetyProperty; 7] = [
        SafetyProperty::Answers,
        SafetyProperty::EmergencyStop,
        SafetyProperty::Inactive,
        SafetyProperty::Excluded,
        SafetyProperty::ZeroPercent,
        SafetyProperty::Monotonic,
        SafetyProperty::IneligibleRoutesToInngest,
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
        }
    }

    /// The property in words.
    pub fn describe(self) -> &'static str {
        match self {
            SafetyProperty::Answers => "every call answers within the limits",
            SafetyProperty::EmergencyStop => "an emergency stop admits nobody",
            SafetyProperty::Inactive => "an inactive rollout admits nobody",
            SafetyProperty::Excluded => "an excluded repository is never eligible",
            SafetyProperty::ZeroPercent => "0 % with no targets admits nobody",
            SafetyProperty::Monotonic => "eligible at p % implies eligible at every higher percentage",
            SafetyProperty::IneligibleRoutesToInngest => "a repository that is not eligible routes to inngest",
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
    repos: Vec<Repository>,
    ids: Vec<String>,
    jobs: Vec<Job>,
}

/// splitmix64: a small deterministic generator, so the sample is the same everywhere.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn sample(size: usize) -> Sample {
    let mut state = 0x0001_5EED_u64;
    let repos: Vec<Repository> = (0..size.max(MIN_SAMPLE))
        .map(|i| {
            let id = if i % 10 == 9 {
                RepoId::Text(format!("org-{}/repo-{i}", i % 7))
            } else {
                RepoId::Uuid((u128::from(splitmix(&mut state)) << 64) | u128::from(splitmix(&mut state)))
            };
            let category = match i % 6 {
                0 => None,
                k => Category::ALL.get(k - 1).copied(),
            };
            Repository { id, category }
        })
        .collect();
    let ids = repos.iter().map(|r| r.id.to_string()).collect();
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
    Sample { repos, ids, jobs }
}

/// Targets are the first 100 ids of the sample, exclusions the 100 from the 50th on: the
/// two lists overlap, and an id in both must stay excluded.
const TARGETS: std::ops::Range<usize> = 0..100;
const EXCLUDED: std::ops::Range<usize> = 50..150;

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
    fn config(&self, ids: &[String]) -> Config {
        let list =
            |r: std::ops::Range<usize>| if self.lists { ids.get(r).unwrap_or_default().to_vec() } else { Vec::new() };
        Config {
            feature_name: self.feature.to_owned(),
            rollout_percentage: self.percentage,
            is_active: self.active,
            target_repositories: list(TARGETS),
            excluded_repositories: list(EXCLUDED),
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
            write!(f, ", targets = sample[0..100], excluded = sample[50..150]")?;
        }
        Ok(())
    }
}

fn describe_repo(r: &Repository) -> String {
    match r.category {
        Some(c) => format!("repository `{}` (category {c})", r.id),
        None => format!("repository `{}` (uncategorised)", r.id),
    }
}

fn describe_eligibility(e: &Eligibility) -> String {
    format!("{} ({}, bucket {})", if e.eligible { "eligible" } else { "not eligible" }, e.reason, e.bucket)
}

const FEATURES: [&str; 2] = [rollout_policy::DEFAULT_FEATURE, "safety-check/β"];
/// Percentages for the coarse sweeps: the category thresholds and their neighbours.
const COARSE: [u8; 14] = [0, 1, 9, 10, 11, 24, 25, 26, 49, 50, 51, 75, 99, 100];
const STRATEGIES: [Strategy; 3] = [Strategy::Percentage, Strategy::Whitelist, Strategy::RepositorySize];

/// Runs the contract on one instance.
pub(crate) struct Checker<'a> {
    instance: &'a mut PolicyInstance,
    sample: Sample,
    decisions: u64,
}

impl<'a> Checker<'a> {
    pub fn new(instance: &'a mut PolicyInstance, size: usize) -> Checker<'a> {
        Checker { instance, sample: sample(size), decisions: 0 }
    }

    fn eligibility(&mut self, grid: &Grid<'_>) -> Result<Vec<Eligibility>, Violation> {
        let config = ConfigSnapshot::new(grid.config(&self.sample.ids));
        let out = self.instance.is_eligible_batch(&config, &self.sample.repos).map_err(|e| Violation {
            property: SafetyProperty::Answers,
            counterexample: format!("is-eligible-batch with {grid}: {e}"),
        })?;
        self.decisions += out.len() as u64;
        Ok(out)
    }

    fn nobody(&mut self, grid: &Grid<'_>, property: SafetyProperty) -> Result<(), Violation> {
        let out = self.eligibility(grid)?;
        if let Some((r, e)) = self.sample.repos.iter().zip(&out).find(|(_, e)| e.eligible) {
            return Err(Violation {
                property,
                counterexample: format!("with {grid}: {} is {}", describe_repo(r), describe_eligibility(e)),
            });
        }
        Ok(())
    }

    /// Check every property; the number of decisions checked.
    pub fn run(mut self) -> Result<u64, Violation> {
        let base = Grid {
            feature: FEATURES[0],
            strategy: Strategy::Percentage,
            percentage: 0,
            active: true,
            stop: false,
            lists: false,
        };
        // Emergency stop and inactive rollouts admit nobody, whatever else is set.
        for strategy in STRATEGIES {
            for percentage in [0, 50, 100] {
                for lists in [false, true] {
                    let g = Grid { strategy, percentage, lists, ..base };
                    self.nobody(&Grid { stop: true, ..g }, SafetyProperty::EmergencyStop)?;
                    self.nobody(&Grid { active: false, ..g }, SafetyProperty::Inactive)?;
                }
            }
        }
        // Sweeps over the percentage: exclusions hold, 0 % admits nobody, and raising the
        // percentage never removes anyone. Every percentage for the first feature's
        // percentage and size strategies; the category thresholds for the rest.
        let full: Vec<u8> = (0..=100).collect();
        for (fi, feature) in FEATURES.into_iter().enumerate() {
            for strategy in STRATEGIES {
                let grid: &[u8] = if fi == 0 && strategy != Strategy::Whitelist { &full } else { &COARSE };
                for lists in [false, true] {
                    self.sweep(Grid { feature, strategy, lists, ..base }, grid)?;
                }
            }
        }
        // Routing: whatever the policy says about eligibility, a repository that is not
        // eligible goes to Inngest.
        for strategy in STRATEGIES {
            for percentage in [0, 30, 70, 100] {
                let g = Grid { strategy, percentage, lists: true, ..base };
                for grid in [g, Grid { lists: false, ..g }, Grid { stop: true, ..g }, Grid { active: false, ..g }] {
                    self.routes(&grid)?;
                }
            }
        }
        Ok(self.decisions)
    }

    fn sweep(&mut self, grid: Grid<'_>, percentages: &[u8]) -> Result<(), Violation> {
        let mut last: Option<(u8, Vec<Eligibility>)> = None;
        for &percentage in percentages {
            let g = Grid { percentage, ..grid };
            let out = self.eligibility(&g)?;
            let repos = &self.sample.repos;
            if g.lists {
                for i in EXCLUDED {
                    if let (Some(r), Some(e)) = (repos.get(i), out.get(i)) {
                        if e.eligible {
                            return Err(Violation {
                                property: SafetyProperty::Excluded,
                                counterexample: format!(
                                    "with {g}: excluded {} is {}",
                                    describe_repo(r),
                                    describe_eligibility(e)
                                ),
                            });
                        }
                    }
                }
            }
            if percentage == 0 && g.strategy == Strategy::Percentage && !g.lists {
                if let Some((r, e)) = repos.iter().zip(&out).find(|(_, e)| e.eligible) {
                    return Err(Violation {
                        property: SafetyProperty::ZeroPercent,
                        counterexample: format!("with {g}: {} is {}", describe_repo(r), describe_eligibility(e)),
                    });
                }
            }
            if let Some((p, before)) = &last {
                let broken = repos.iter().zip(before.iter().zip(&out)).find(|(_, (b, a))| b.eligible && !a.eligible);
                if let Some((r, (b, a))) = broken {
                    return Err(Violation {
                        property: SafetyProperty::Monotonic,
                        counterexample: format!(
                            "with {grid}: {} is {} at {p} % but {} at {percentage} %",
                            describe_repo(r),
                            describe_eligibility(b),
                            describe_eligibility(a),
                            grid = Grid { percentage: *p, ..g },
                        ),
                    });
                }
            }
            last = Some((percentage, out));
        }
        Ok(())
    }

    fn routes(&mut self, grid: &Grid<'_>) -> Result<(), Violation> {
        let eligibility = self.eligibility(grid)?;
        let config = ConfigSnapshot::new(grid.config(&self.sample.ids));
        let jobs = &self.sample.jobs;
        let requests: Vec<(Repository, Job)> = self
            .sample
            .repos
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), jobs.get(i % jobs.len()).cloned().unwrap_or_default()))
            .collect();
        let decisions = self.instance.route_batch(&config, &requests).map_err(|e| Violation {
            property: SafetyProperty::Answers,
            counterexample: format!("route-batch with {grid}: {e}"),
        })?;
        self.decisions += decisions.len() as u64;
        for ((r, job), (d, e)) in requests.iter().zip(decisions.iter().zip(&eligibility)) {
            if d.processor != Processor::Inngest && (!e.eligible || !d.eligibility.eligible) {
                return Err(Violation {
                    property: SafetyProperty::IneligibleRoutesToInngest,
                    counterexample: format!(
                        "with {grid}: {} is {} (route says {}) yet {job:?} routes to {} ({})",
                        describe_repo(r),
                        describe_eligibility(e),
                        describe_eligibility(&d.eligibility),
                        d.processor,
                        d.rule,
                    ),
                });
            }
        }
        Ok(())
    }
}
