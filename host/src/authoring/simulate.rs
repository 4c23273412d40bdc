//! `rollout policy simulate`: ramp a configuration through percentages over a set of
//! repositories and check the ramp is monotonic (SPEC §2.1: raising the percentage only
//! ever adds repositories).
//!
//! Repositories come from CSV (a header row naming `id` — or `repository_id` — and either
//! `category` or `star_count`, `contributor_count`, `pr_count`) or JSON (an array of objects
//! with the same fields). A repository with stats is categorised by the policy under test
//! (its `categorize`), so a policy that changes the categories is simulated with its own;
//! one without stats keeps the given category, or none.

use crate::engine::ConfigSnapshot;
use crate::engine::Policy;
use crate::runtime::CallError;
use rollout_policy as p;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Most repositories sent to the policy in one batch call.
pub const BATCH: usize = 1024;

/// A repository to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInput {
    /// Its id as given.
    pub id: String,
    /// Its category, when given.
    pub category: Option<p::Category>,
    /// Its activity numbers, when given (then the policy categorises it).
    pub stats: Option<p::RepositoryStats>,
}

/// Why the repositories could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReposError {
    /// The file could not be read.
    #[error("cannot read repositories `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid CSV or JSON, or a row is wrong.
    #[error("`{path}`{}: {message}", location.as_ref().map(|l| format!(" {l}")).unwrap_or_default())]
    Format {
        /// The file.
        path: PathBuf,
        /// Where in the file (`row 3`, `[2].category`), when known.
        location: Option<String>,
        /// What is wrong.
        message: String,
    },
}

fn format_error(path: &Path, location: Option<String>, message: impl Into<String>) -> ReposError {
    ReposError::Format { path: path.to_owned(), location, message: message.into() }
}

/// Read repositories from a CSV or JSON file: `.json` is JSON, `.csv` is CSV, anything
/// else is JSON when its first non-blank character is `[`, CSV otherwise.
pub fn read_repos(path: &Path) -> Result<Vec<RepoInput>, ReposError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReposError::Io { path: path.to_owned(), source })?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let json = match ext.as_deref() {
        Some("json") => true,
        Some("csv") => false,
        _ => text.trim_start().starts_with('['),
    };
    let repos = if json { parse_json(&text, path)? } else { parse_csv(&text, path)? };
    if repos.is_empty() {
        return Err(format_error(path, None, "holds no repositories"));
    }
    let mut seen = HashSet::new();
    for r in &repos {
        if !seen.insert(p::RepoId::parse(&r.id)) {
            return Err(format_error(path, None, format!("repository `{}` appears twice", r.id)));
        }
    }
    Ok(repos)
}

fn number(path: &Path, location: &str, text: &str) -> Result<u32, ReposError> {
    text.trim().parse::<u32>().map_err(|_| {
        format_error(path, Some(location.to_owned()), format!("`{text}` is not a whole number from 0 to {}", u32::MAX))
    })
}

/// Parse CSV text (with a header row).
pub fn parse_csv(text: &str, path: &Path) -> Result<Vec<RepoInput>, ReposError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| format_error(path, Some("header".into()), e.to_string()))?.clone();
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h));
    let id_col = column(&["id", "repository_id"])
        .ok_or_else(|| format_error(path, Some("header".into()), "needs an `id` (or `repository_id`) column"))?;
    let category_col = column(&["category"]);
    let stat_cols = [column(&["star_count"]), column(&["contributor_count"]), column(&["pr_count"])];
    let stats_present = stat_cols.iter().filter(|c| c.is_some()).count();
    if stats_present != 0 && stats_present != 3 {
        return Err(format_error(
            path,
            Some("header".into()),
            "stats need all three columns: star_count, contributor_count, pr_count",
        ));
    }
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = format!("row {}", i + 2);
        let record = record.map_err(|e| format_error(path, Some(row.clone()), e.to_string()))?;
        let cell = |c: Option<usize>| c.and_then(|c| record.get(c)).filter(|s| !s.is_empty());
        let id = cell(Some(id_col)).ok_or_else(|| format_error(path, Some(row.clone()), "`id` is empty"))?;
        let category = match cell(category_col) {
            None => None,
            Some(c) => Some(
                p::Category::parse(c)
                    .map_err(|e| format_error(path, Some(format!("{row} category")), e.to_string()))?,
            ),
        };
        let stats = match stat_cols {
            [Some(s), Some(c), Some(pr)] => {
                let get = |col: usize, name: &str| -> Result<u32, ReposError> {
                    let v = record.get(col).unwrap_or_default();
                    number(path, &format!("{row} {name}"), v)
                };
                Some(p::RepositoryStats {
                    star_count: get(s, "star_count")?,
                    contributor_count: get(c, "contributor_count")?,
                    pr_count: get(pr, "pr_count")?,
                })
            }
            _ => None,
        };
        out.push(RepoInput { id: id.to_owned(), category, stats });
    }
    Ok(out)
}

/// Parse a JSON array of repository objects.
pub fn parse_json(text: &str, path: &Path) -> Result<Vec<RepoInput>, ReposError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format_error(path, None, e.to_string()))?;
    let items = v.as_array().ok_or_else(|| format_error(path, None, "must be a JSON array of repositories"))?;
    const FIELDS: &[&str] = &["id", "repository_id", "category", "star_count", "contributor_count", "pr_count"];
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |k: &str| Some(format!("[{i}].{k}"));
            let obj =
                item.as_object().ok_or_else(|| format_error(path, Some(format!("[{i}]")), "must be an object"))?;
            if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
                return Err(format_error(
                    path,
                    at(k),
                    format!("unknown field: allowed fields are {}", FIELDS.join(", ")),
                ));
            }
            let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
            let id = get("id")
                .or_else(|| get("repository_id"))
                .and_then(|v| v.as_str())
                .ok_or_else(|| format_error(path, at("id"), "is required: a string"))?;
            let category = match get("category") {
                None => None,
                Some(c) => {
                    let s = c.as_str().ok_or_else(|| format_error(path, at("category"), "must be a string"))?;
                    Some(p::Category::parse(s).map_err(|e| format_error(path, at("category"), e.to_string()))?)
                }
            };
            let stat = |k: &str| -> Result<Option<u32>, ReposError> {
                match get(k) {
                    None => Ok(None),
                    Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| {
                        format_error(path, at(k), format!("`{v}` is not a whole number from 0 to {}", u32::MAX))
                    }),
                }
            };
            let stats = match (stat("star_count")?, stat("contributor_count")?, stat("pr_count")?) {
                (None, None, None) => None,
                (Some(s), Some(c), Some(pr)) => {
                    Some(p::RepositoryStats { star_count: s, contributor_count: c, pr_count: pr })
                }
                _ => {
                    return Err(format_error(
                        path,
                        Some(format!("[{i}]")),
                        "stats need all three fields: star_count, contributor_count, pr_count",
                    ))
                }
            };
            Ok(RepoInput { id: id.to_owned(), category, stats })
        })
        .collect()
}

/// Why a percentage list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`--percentages`: {0}")]
pub struct PercentagesError(String);

/// Parse `0,10,25,…`: whole numbers 0..=100, strictly increasing, at least one.
pub fn parse_percentages(s: &str) -> Result<Vec<u8>, PercentagesError> {
    let mut out: Vec<u8> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let n: u8 = part
            .parse()
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| PercentagesError(format!("`{part}` is not a whole number from 0 to 100")))?;
        if let Some(last) = out.last() {
            if n <= *last {
                return Err(PercentagesError(format!("`{n}` after `{last}`: percentages must increase")));
            }
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err(PercentagesError("is empty: give percentages like 0,10,25,50,75,100".into()));
    }
    Ok(out)
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A policy call failed.
    #[error("policy call failed at {step}: {error}")]
    Call {
        /// What was being done (`categorize`, `20 %`).
        step: String,
        /// The failure.
        error: CallError,
    },
    /// The policy answered a batch with the wrong number of decisions.
    #[error("policy answered {got} decisions for {sent} repositories at {percentage} %")]
    BatchLength {
        /// The step.
        percentage: u8,
        /// Repositories sent.
        sent: usize,
        /// Decisions received.
        got: usize,
    },
}

/// Counts of one category at one step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CategoryRow {
    /// The category (`None`: uncategorised).
    #[serde(serialize_with = "category_name")]
    pub category: Option<p::Category>,
    /// Repositories of the category.
    pub total: usize,
    /// How many are eligible at this step.
    pub eligible: usize,
    /// How many became eligible since the previous step.
    pub added: usize,
}

fn category_name<S: serde::Serializer>(c: &Option<p::Category>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.map_or("uncategorized", p::Category::as_str))
}

impl CategoryRow {
    /// Eligible share of the category, in percent (0 for an empty category).
    pub fn share(&self) -> f64 {
        share(self.eligible, self.total)
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// One step of the ramp.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// The percentage.
    pub percentage: u8,
    /// Eligible repositories.
    pub eligible: usize,
    /// Repositories that became eligible since the previous step (all eligible at the first).
    pub added: usize,
    /// Ids of repositories eligible at the previous step and not at this one.
    pub dropped: Vec<String>,
    /// Per category, in category order, uncategorised last; categories with no
    /// repositories are left out.
    pub categories: Vec<CategoryRow>,
}

/// The result of a simulation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Simulation {
    /// Repositories simulated.
    pub repositories: usize,
    /// Repositories the policy categorised from their stats.
    pub categorized_by_policy: usize,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Simulation {
    /// Every drop-out: (the step's percentage, the repository id).
    pub fn dropouts(&self) -> Vec<(u8, &str)> {
        self.steps.iter().flat_map(|s| s.dropped.iter().map(move |id| (s.percentage, id.as_str()))).collect()
    }

    /// Whether no repository drops out while ramping.
    pub fn monotonic(&self) -> bool {
        self.steps.iter().all(|s| s.dropped.is_empty())
    }
}

/// Indexes of the repositories eligible in `previous` and not in `current` (the two slices
/// are in the same repository order).
pub fn dropouts(previous: &[bool], current: &[bool]) -> Vec<usize> {
    previous.iter().zip(current).enumerate().filter(|(_, (was, is))| **was && !**is).map(|(i, _)| i).collect()
}

/// Category slot: 0..=4 in category order, 5 for uncategorised.
fn slot(c: Option<p::Category>) -> usize {
    c.and_then(|c| p::Category::ALL.iter().position(|x| *x == c)).unwrap_or(p::Category::ALL.len())
}

fn slot_category(i: usize) -> Option<p::Category> {
    p::Category::ALL.get(i).copied()
}

/// Ramp `base` (its percentage replaced by each of `percentages`, which should increase)
/// over `repos` with `policy`. `progress` is told how many repository decisions were made
/// after each batch (categorisations included).
pub fn simulate(
    policy: &dyn Policy,
    base: &p::Config,
    repos: &[RepoInput],
    percentages: &[u8],
    progress: &mut dyn FnMut(u64),
) -> Result<Simulation, SimulateError> {
    let mut categorized_by_policy = 0;
    let mut prepared = Vec::with_capacity(repos.len());
    for r in repos {
        let category = match &r.stats {
            Some(stats) => {
                categorized_by_policy += 1;
                let c = policy
                    .categorize(stats)
                    .map_err(|error| SimulateError::Call { step: format!("categorize `{}`", r.id), error })?;
                progress(1);
                Some(c.category)
            }
            None => r.category,
        };
        prepared.push(p::Repository::parse(&r.id, category));
    }
    let slots: Vec<usize> = prepared.iter().map(|r| slot(r.category)).collect();
    let mut totals = [0usize; 6];
    for s in &slots {
        if let Some(t) = totals.get_mut(*s) {
            *t += 1;
        }
    }
    let mut previous = vec![false; repos.len()];
    let mut steps = Vec::with_capacity(percentages.len());
    for &percentage in percentages {
        let config = ConfigSnapshot::new(p::Config { rollout_percentage: percentage, ..base.clone() });
        let mut current = Vec::with_capacity(repos.len());
        for chunk in prepared.chunks(BATCH) {
            let answers = policy
                .is_eligible_batch(&config, chunk)
                .map_err(|error| SimulateError::Call { step: format!("{percentage} %"), error })?;
            if answers.len() != chunk.len() {
                return Err(SimulateError::BatchLength { percentage, sent: chunk.len(), got: answers.len() });
            }
            current.extend(answers.iter().map(|e| e.eligible));
            progress(chunk.len() as u64);
        }
        let mut eligible = [0usize; 6];
        let mut added = [0usize; 6];
        for (i, (&is, &was)) in current.iter().zip(&previous).enumerate() {
            let s = slots.get(i).copied().unwrap_or(5);
            if is {
                if let Some(e) = eligible.get_mut(s) {
                    *e += 1;
                }
                if !was {
                    if let Some(a) = added.get_mut(s) {
                        *a += 1;
                    }
                }
            }
        }
        let dropped =
            dropouts(&previous, &current).into_iter().filter_map(|i| repos.get(i).map(|r| r.id.clone())).collect();
        let categories = (0..6)
            .filter(|&s| totals.get(s).copied().unwrap_or(0) > 0)
            .map(|s| CategoryRow {
                category: slot_category(s),
                total: totals.get(s).copied().unwrap_or(0),
                eligible: eligible.get(s).copied().unwrap_or(0),
                added: added.get(s).copied().unwrap_or(0),
            })
            .collect();
        steps.push(Step {
            percentage,
            eligible: eligible.iter().sum(),
            added: added.iter().sum(),
            dropped,
            categories,
        });
        previous = current;
    }
    Ok(Simulation { repositories: repos.len(), categorized_by_policy, steps })
}

/// The simulation as tables for people; ends with the verdict on the ramp.
pub fn render_text(sim: &Simulation) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for step in &sim.steps {
        let _ = writeln!(
            out,
            "\nat {:>3} %: {} of {} repositories eligible ({:.1} %), {:+} new{}",
            step.percentage,
            step.eligible,
            sim.repositories,
            share(step.eligible, sim.repositories),
            step.added,
            if step.dropped.is_empty() { String::new() } else { format!(", {} DROPPED OUT", step.dropped.len()) }
        );
        let _ = writeln!(out, "  {:<14} {:>8} {:>9} {:>8} {:>8}", "category", "total", "eligible", "share", "new");
        for row in &step.categories {
            let _ = writeln!(
                out,
                "  {:<14} {:>8} {:>9} {:>7.1}% {:>8}",
                row.category.map_or("uncategorized", p::Category::as_str),
                row.total,
                row.eligible,
                row.share(),
                format!("{:+}", row.added)
            );
        }
    }
    let dropouts = sim.dropouts();
    if dropouts.is_empty() {
        let _ = writeln!(out, "\nramp is monotonic: no repository drops out");
    } else {
        let _ = writeln!(out, "\nFAIL: {} repositories drop out while ramping (first 20):", dropouts.len());
        for (pct, id) in dropouts.iter().take(20) {
            let _ = writeln!(out, "  {id} drops out at {pct} %");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NativePolicy;
    use std::sync::Arc;

    #[test]
    fn dropouts_finds_exactly_the_repositories_that_left() {
        assert_eq!(dropouts(&[true, true, false, false], &[true, false, true, false]), vec![1]);
        assert!(dropouts(&[false, true], &[true, true]).is_empty());
    }

    #[test]
    fn percentages_must_increase_and_stay_in_range() {
        assert_eq!(parse_percentages("0, 10,25,100").ok(), Some(vec![0, 10, 25, 100]));
        assert!(parse_percentages("10,5").is_err_and(|e| e.to_string().contains("must increase")));
        assert!(parse_percentages("101").is_err_and(|e| e.to_string().contains("`101`")));
        assert!(parse_percentages("").is_err());
        assert!(parse_percentages("10,10").is_err());
    }

    #[test]
    fn csv_with_stats_or_category_and_errors_naming_the_row() {
        let path = Path::new("repos.csv");
        let rows = parse_csv("id,category\n a ,large\nb,\n", path).unwrap_or_default();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], RepoInput { id: "a".into(), category: Some(p::Category::Large), stats: None });
        assert_eq!(rows[1].category, None);
        let rows =
            parse_csv("repository_id,star_count,contributor_count,pr_count\nx,1,2,3\n", path).unwrap_or_default();
        assert_eq!(rows[0].stats, Some(p::RepositoryStats { star_count: 1, contributor_count: 2, pr_count: 3 }));
        let e = parse_csv("id,category\na,huge\n", path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("row 2 category") && e.contains("huge"), "{e}");
        let e = parse_csv("id,star_count\na,1\n", path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("all three"), "{e}");
        let e = parse_csv("name\na\n", path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`id`"), "{e}");
    }

    #[test]
    fn json_rows_and_errors_naming_the_field() {
        let path = Path::new("repos.json");
        let rows = parse_json(
            r#"[{"id":"a","category":"test"},{"id":"b","star_count":0,"contributor_count":1,"pr_count":2}]"#,
            path,
        )
        .unwrap_or_default();
        assert_eq!(rows.len(), 2);
        assert!(rows[1].stats.is_some());
        let e = parse_json(r#"[{"id":"a","stars":1}]"#, path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("[0].stars"), "{e}");
        let e = parse_json(r#"[{"category":"test"}]"#, path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("[0].id"), "{e}");
    }

    /// A policy whose eligibility window slides: eligible iff bucket is in
    /// `[pct - 10, pct)`, so raising the percentage drops repositories out.
    struct Sliding;

    impl Policy for Sliding {
        fn version(&self) -> Option<crate::engine::PolicyVersion> {
            None
        }
        fn categorize(&self, s: &p::RepositoryStats) -> Result<p::Categorization, CallError> {
            Ok(p::categorize(s))
        }
        fn is_eligible(&self, c: &Arc<ConfigSnapshot>, r: &p::Repository) -> Result<p::Eligibility, CallError> {
            let bucket = p::bucket(&c.config().feature_name, &r.id);
            let pct = c.config().rollout_percentage;
            let eligible = bucket < pct && bucket + 10 >= pct;
            Ok(p::Eligibility { eligible, reason: p::EligibilityReason::InPercentage, bucket })
        }
        fn is_eligible_batch(
            &self,
            c: &Arc<ConfigSnapshot>,
            rs: &[p::Repository],
        ) -> Result<Vec<p::Eligibility>, CallError> {
            rs.iter().map(|r| self.is_eligible(c, r)).collect()
        }
        fn route(&self, c: &Arc<ConfigSnapshot>, r: &p::Repository, j: &p::Job) -> Result<p::RouteDecision, CallError> {
            NativePolicy::new().route(c, r, j)
        }
        fn route_batch(
            &self,
            c: &Arc<ConfigSnapshot>,
            rs: &[(p::Repository, p::Job)],
        ) -> Result<Vec<p::RouteDecision>, CallError> {
            NativePolicy::new().route_batch(c, rs)
        }
        fn evaluate_health(&self, c: &p::Config, w: &[p::ProcessorWindow]) -> Result<p::Health, CallError> {
            NativePolicy::new().evaluate_health(c, w)
        }
    }

    fn repos(n: usize) -> Vec<RepoInput> {
        (0..n).map(|i| RepoInput { id: format!("repo-{i}"), category: None, stats: None }).collect()
    }

    fn base() -> p::Config {
        p::Config { is_active: true, ..p::Config::default() }
    }

    #[test]
    fn a_sliding_policy_is_caught_dropping_repositories() {
        let repos = repos(500);
        let sim = simulate(&Sliding, &base(), &repos, &[10, 50], &mut |_| {});
        let sim = sim.unwrap_or_else(|e| panic!("{e}"));
        assert!(!sim.monotonic());
        // Exactly the repositories with bucket < 10 were in at 10 % and are out at 50 %.
        let expected: Vec<&str> = repos
            .iter()
            .filter(|r| p::bucket(p::DEFAULT_FEATURE, &p::RepoId::parse(&r.id)) < 10)
            .map(|r| r.id.as_str())
            .collect();
        assert!(!expected.is_empty());
        let got: Vec<&str> = sim
            .dropouts()
            .into_iter()
            .map(|(pct, id)| {
                assert_eq!(pct, 50);
                id
            })
            .collect();
        assert_eq!(got, expected);
        assert!(render_text(&sim).contains("FAIL"));
    }

    #[test]
    fn the_reference_ramps_monotonically_and_counts_add_up() {
        let repos = repos(3000);
        let mut calls = 0u64;
        let sim = simulate(&NativePolicy::new(), &base(), &repos, &[0, 10, 25, 50, 75, 100], &mut |n| calls += n);
        let sim = sim.unwrap_or_else(|e| panic!("{e}"));
        assert!(sim.monotonic());
        assert_eq!(calls, 6 * 3000);
        assert_eq!(sim.steps[0].eligible, 0);
        assert_eq!(sim.steps[5].eligible, 3000);
        let mut sum = 0;
        for s in &sim.steps {
            sum += s.added;
            assert_eq!(sum, s.eligible, "added accumulates to eligible at {} %", s.percentage);
        }
    }
}
