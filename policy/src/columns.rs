//! Batches as columns: the encoding `is-eligible-batch` and `route-batch` use at the
//! component boundary (`wit/policy.wit`, records `repository-columns` and `job-columns`).
//!
//! A `list<record>` crosses the canonical ABI field by field: the host writes every field
//! of every request into guest memory separately, and calls into the guest's allocator for
//! every string and list inside. A list of numbers crosses as one copy. So a batch travels
//! as a struct of arrays: entry `i` of each per-request column belongs to request `i`;
//! the rare variable-sized parts (text ids, job types, pull request numbers) are sparse or
//! concatenated columns. Measured on the reference policy: 468 ns per routed request as a
//! `list<route-request>`, of which the per-field lowering was the largest part.
//!
//! The host encodes ([`RepositoryColumns::encode`], [`JobColumns::encode`]) and the guest
//! decodes ([`RepositoryColumns::decode`], [`JobColumns::decode`]) with this one
//! implementation. Decoding checks every column first and names the one at fault, so a
//! malformed batch is an error value, never a panic.
//!
//! ```
//! use rollout_policy::{Category, Job, JobColumns, Repository, RepositoryColumns, TriggerSource};
//!
//! let repos = [Repository::parse("6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11", Some(Category::Large)),
//!              Repository::parse("owner/name", None)];
//! let jobs = [Job { pr_numbers: vec![7, 8], ..Job::default() },
//!             Job { trigger_source: Some(TriggerSource::Scheduled), max_items: Some(0), ..Job::default() }];
//! let (rc, jc) = (RepositoryColumns::encode(&repos), JobColumns::encode(&jobs));
//! assert_eq!(rc.len(), 2);
//! assert_eq!(rc.decode()?.collect::<Vec<_>>(), repos);
//! assert_eq!(jc.decode(2)?.collect::<Vec<_>>(), jobs);
//! # Ok::<(), rollout_policy::BatchError>(())
//! ```

use crate::{
    Category, Eligibility, EligibilityReason, Job, Processor, RepoId, Repository, RouteDecision, RouteRule,
    TriggerSource,
};
use std::fmt;

/// Repositories as columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryColumns {
    /// Two entries per repository: the high and the low 64 bits of its UUID id (both 0 for
    /// a repository listed in `text_ids`).
    pub uuids: Vec<u64>,
    /// Repositories whose id is not a UUID: `(index, id as given)`, indices increasing.
    pub text_ids: Vec<(u32, String)>,
    /// One entry per repository: 0 when uncategorised, else 1 + the category's position
    /// in [`Category::ALL`] (1 `test` … 5 `enterprise`). Its length is the batch size.
    pub categories: Vec<u8>,
}

/// Jobs as columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobColumns {
    /// One entry per job: `time_range_days`, see [`encode_option`].
    pub time_range_days: Vec<u64>,
    /// One entry per job: `max_items`, see [`encode_option`].
    pub max_items: Vec<u64>,
    /// One entry per job: 0 none, 1 manual, 2 scheduled, 3 automatic.
    pub trigger_sources: Vec<u8>,
    /// One entry per job: how many of `pr_numbers` belong to it.
    pub pr_counts: Vec<u32>,
    /// The pull request numbers of all jobs, concatenated in job order.
    pub pr_numbers: Vec<u64>,
    /// Jobs with a job type: `(index, job type)`, indices increasing.
    pub job_types: Vec<(u32, String)>,
}

/// Eligibility decisions as columns (what `is-eligible-batch` answers). Enum values are
/// their case's position in the WIT enum, which is their position in the domain enum's
/// `ALL` (the host-only `policy_error`, last in `ALL`, is not a valid code).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EligibilityColumns {
    /// One entry per decision: 1 when eligible, else 0.
    pub eligible: Vec<u8>,
    /// One entry per decision: the [`EligibilityReason`] (0 `emergency_stop` …
    /// 9 `category_excluded`).
    pub reasons: Vec<u8>,
    /// One entry per decision: the bucket.
    pub buckets: Vec<u8>,
}

/// Routing decisions as columns (what `route-batch` answers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionColumns {
    /// One entry per decision: the [`Processor`] (0 `inngest`, 1 `github_actions`).
    pub processors: Vec<u8>,
    /// One entry per decision: the [`RouteRule`] (0 `not_eligible` … 7 `default`).
    pub rules: Vec<u8>,
    /// The eligibility each decision rests on.
    pub eligibility: EligibilityColumns,
}

/// A malformed batch: the column at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// The column (`categories`, `pr_counts`, …).
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid batch column `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for BatchError {}

pub(crate) fn error(field: &str, message: String) -> BatchError {
    BatchError { field: field.to_owned(), message }
}

/// Bit 32 marks a present `option<u32>` in a `u64` column; the value is the low 32 bits.
const PRESENT: u64 = 1 << 32;

/// An `Option<u32>` as one `u64`: 0 for `None`, `1 << 32 | v` for `Some(v)` (so a present
/// zero is distinct from an absent value).
pub fn encode_option(v: Option<u32>) -> u64 {
    v.map_or(0, |v| PRESENT | u64::from(v))
}

/// The inverse of [`encode_option`]; `None` for a code that is neither form.
pub(crate) fn decode_option(code: u64) -> Option<Option<u32>> {
    match code {
        0 => Some(None),
        c if c >> 32 == 1 => Some(Some(c as u32)),
        _ => None,
    }
}

pub(crate) fn category_code(c: Option<Category>) -> u8 {
    match c {
        None => 0,
        Some(Category::Test) => 1,
        Some(Category::Small) => 2,
        Some(Category::Medium) => 3,
        Some(Category::Large) => 4,
        Some(Category::Enterprise) => 5,
    }
}

pub(crate) fn category_of(code: u8) -> Option<Option<Category>> {
    match code {
        0 => Some(None),
        c => Category::ALL.get(usize::from(c) - 1).copied().map(Some),
    }
}

pub(crate) fn trigger_code(t: Option<TriggerSource>) -> u8 {
    match t {
        None => 0,
        Some(TriggerSource::Manual) => 1,
        Some(TriggerSource::Scheduled) => 2,
        Some(TriggerSource::Automatic) => 3,
    }
}

pub(crate) fn trigger_of(code: u8) -> Option<Option<TriggerSource>> {
    match code {
        0 => Some(None),
        1 => Some(Some(TriggerSource::Manual)),
        2 => Some(Some(TriggerSource::Scheduled)),
        3 => Some(Some(TriggerSource::Automatic)),
        _ => None,
    }
}

/// Check that a sparse column's indices increase and stay below `n`.
fn check_sparse(field: &str, entries: &[(u32, String)], n: usize) -> Result<(), BatchError> {
    let mut next = 0usize;
    for (k, (i, _)) in entries.iter().enumerate() {
        let i = *i as usize;
        if i < next || i >= n {
            return Err(error(
                field,
                format!("entry {k} names request {i}: allowed indices increase and are below the batch size {n}"),
            ));
        }
        next = i + 1;
    }
    Ok(())
}

fn check_len(field: &str, len: usize, want: usize) -> Result<(), BatchError> {
    if len != want {
        return Err(error(field, format!("has {len} entries: allowed exactly {want}")));
    }
    Ok(())
}

/// Takes the sparse entry for request `i`, if the next one is for it.
fn take_sparse(entries: &mut std::iter::Peekable<std::vec::IntoIter<(u32, String)>>, i: usize) -> Option<String> {
    entries.next_if(|(at, _)| *at as usize == i).map(|(_, s)| s)
}

/// `v`'s position in `all` (0 if absent, which the callers' enums rule out).
pub(crate) fn code<T: PartialEq>(all: &[T], v: &T) -> u8 {
    all.iter().position(|x| x == v).and_then(|i| u8::try_from(i).ok()).unwrap_or(0)
}

/// The value at position `code` of `all`, excluding its last `hidden` entries.
pub(crate) fn of_code<T: Copy>(all: &[T], hidden: usize, code: u8) -> Option<T> {
    let usable = all.get(..all.len().saturating_sub(hidden))?;
    usable.get(usize::from(code)).copied()
}

/// The first entry of `column` that `valid` rejects, as an error naming the column.
fn check_codes(field: &str, column: &[u8], allowed: &str, valid: impl Fn(u8) -> bool) -> Result<(), BatchError> {
    match column.iter().position(|&c| !valid(c)) {
        Some(i) => {
            let code = column.get(i).copied().unwrap_or_default();
            Err(error(field, format!("entry {i} is {code}: allowed {allowed}")))
        }
        None => Ok(()),
    }
}

impl EligibilityColumns {
    /// Encode `decisions` in order.
    pub fn encode(decisions: impl IntoIterator<Item = Eligibility>) -> EligibilityColumns {
        let decisions = decisions.into_iter();
        let n = decisions.size_hint().0;
        let mut out = EligibilityColumns {
            eligible: Vec::with_capacity(n),
            reasons: Vec::with_capacity(n),
            buckets: Vec::with_capacity(n),
        };
        for e in decisions {
            out.push(&e);
        }
        out
    }

    fn push(&mut self, e: &Eligibility) {
        self.eligible.push(u8::from(e.eligible));
        self.reasons.push(code(EligibilityReason::ALL, &e.reason));
        self.buckets.push(e.bucket);
    }

    fn check(&self, n: usize) -> Result<(), BatchError> {
        check_len("eligible", self.eligible.len(), n)?;
        check_len("reasons", self.reasons.len(), n)?;
        check_len("buckets", self.buckets.len(), n)?;
        check_codes("eligible", &self.eligible, "0 or 1", |c| c <= 1)?;
        check_codes("reasons", &self.reasons, "an eligibility-reason case, 0 to 9", |c| {
            of_code(EligibilityReason::ALL, 1, c).is_some()
        })
    }

    fn at(&self, i: usize) -> Eligibility {
        let reason = self.reasons.get(i).and_then(|&c| of_code(EligibilityReason::ALL, 1, c));
        Eligibility {
            eligible: self.eligible.get(i) == Some(&1),
            reason: reason.unwrap_or(EligibilityReason::PolicyError),
            bucket: self.buckets.get(i).copied().unwrap_or_default(),
        }
    }

    /// Check every column against `n` decisions, then the decisions in order.
    pub fn decode(self, n: usize) -> Result<Vec<Eligibility>, BatchError> {
        self.check(n)?;
        Ok((0..n).map(|i| self.at(i)).collect())
    }
}

impl DecisionColumns {
    /// Encode `decisions` in order.
    pub fn encode(decisions: impl IntoIterator<Item = RouteDecision>) -> DecisionColumns {
        let decisions = decisions.into_iter();
        let n = decisions.size_hint().0;
        let mut out = DecisionColumns {
            processors: Vec::with_capacity(n),
            rules: Vec::with_capacity(n),
            eligibility: EligibilityColumns {
                eligible: Vec::with_capacity(n),
                reasons: Vec::with_capacity(n),
                buckets: Vec::with_capacity(n),
            },
        };
        for d in decisions {
            out.processors.push(code(Processor::ALL, &d.processor));
            out.rules.push(code(RouteRule::ALL, &d.rule));
            out.eligibility.push(&d.eligibility);
        }
        out
    }

    /// Check every column against `n` decisions, then the decisions in order.
    pub fn decode(self, n: usize) -> Result<Vec<RouteDecision>, BatchError> {
        check_len("processors", self.processors.len(), n)?;
        check_len("rules", self.rules.len(), n)?;
        check_codes("processors", &self.processors, "0 (inngest) or 1 (github-actions)", |c| {
            of_code(Processor::ALL, 0, c).is_some()
        })?;
        check_codes("rules", &self.rules, "a route-rule case, 0 to 7", |c| of_code(RouteRule::ALL, 1, c).is_some())?;
        self.eligibility.check(n)?;
        Ok((0..n)
            .map(|i| RouteDecision {
                processor: self
                    .processors
                    .get(i)
                    .and_then(|&c| of_code(Processor::ALL, 0, c))
                    .unwrap_or(Processor::Inngest),
                rule: self.rules.get(i).and_then(|&c| of_code(RouteRule::ALL, 1, c)).unwrap_or(RouteRule::PolicyError),
                eligibility: self.eligibility.at(i),
            })
            .collect())
    }
}

impl RepositoryColumns {
    /// Encode `repositories` in order.
    pub fn encode<'a>(repositories: impl IntoIterator<Item = &'a Repository>) -> RepositoryColumns {
        let repositories = repositories.into_iter();
        let n = repositories.size_hint().0;
        let mut out = RepositoryColumns {
            uuids: Vec::with_capacity(2 * n),
            text_ids: Vec::new(),
            categories: Vec::with_capacity(n),
        };
        for (i, r) in repositories.enumerate() {
            match &r.id {
                RepoId::Uuid(v) => out.uuids.extend([(*v >> 64) as u64, *v as u64]),
                RepoId::Text(t) => {
                    out.uuids.extend([0, 0]);
                    out.text_ids.push((u32::try_from(i).unwrap_or(u32::MAX), t.clone()));
                }
            }
            out.categories.push(category_code(r.category));
        }
        out
    }

    /// The number of repositories.
    pub fn len(&self) -> usize {
        self.categories.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    /// Check every column, then yield the repositories in order.
    pub fn decode(self) -> Result<impl Iterator<Item = Repository>, BatchError> {
        let n = self.len();
        check_len("uuids", self.uuids.len(), 2 * n)?;
        if let Some(i) = self.categories.iter().position(|&c| category_of(c).is_none()) {
            let code = self.categories.get(i).copied().unwrap_or_default();
            return Err(error("categories", format!("entry {i} is {code}: allowed 0 (none) to 5")));
        }
        check_sparse("text_ids", &self.text_ids, n)?;
        let mut texts = self.text_ids.into_iter().peekable();
        let uuids = self.uuids;
        Ok(self.categories.into_iter().enumerate().map(move |(i, c)| {
            let id = match take_sparse(&mut texts, i) {
                Some(text) => RepoId::Text(text),
                None => {
                    let hi = uuids.get(2 * i).copied().unwrap_or_default();
                    let lo = uuids.get(2 * i + 1).copied().unwrap_or_default();
                    RepoId::Uuid((u128::from(hi) << 64) | u128::from(lo))
                }
            };
            Repository { id, category: category_of(c).flatten() }
        }))
    }
}

impl JobColumns {
    /// Encode `jobs` in order.
    pub fn encode<'a>(jobs: impl IntoIterator<Item = &'a Job>) -> JobColumns {
        let jobs = jobs.into_iter();
        let n = jobs.size_hint().0;
        let mut out = JobColumns {
            time_range_days: Vec::with_capacity(n),
            max_items: Vec::with_capacity(n),
            trigger_sources: Vec::with_capacity(n),
            pr_counts: Vec::with_capacity(n),
            pr_numbers: Vec::new(),
            job_types: Vec::new(),
        };
        for (i, j) in jobs.enumerate() {
            out.time_range_days.push(encode_option(j.time_range_days));
            out.max_items.push(encode_option(j.max_items));
            out.trigger_sources.push(trigger_code(j.trigger_source));
            out.pr_counts.push(u32::try_from(j.pr_numbers.len()).unwrap_or(u32::MAX));
            out.pr_numbers.extend_from_slice(&j.pr_numbers);
            if let Some(t) = &j.job_type {
                out.job_types.push((u32::try_from(i).unwrap_or(u32::MAX), t.clone()));
            }
        }
        out
    }

    /// Check every column against a batch of `n` jobs, then yield the jobs in order.
    pub fn decode(self, n: usize) -> Result<impl Iterator<Item = Job>, BatchError> {
        check_len("time_range_days", self.time_range_days.len(), n)?;
        check_len("max_items", self.max_items.len(), n)?;
        check_len("trigger_sources", self.trigger_sources.len(), n)?;
        check_len("pr_counts", self.pr_counts.len(), n)?;
        for (field, column) in [("time_range_days", &self.time_range_days), ("max_items", &self.max_items)] {
            if let Some(i) = column.iter().position(|&c| decode_option(c).is_none()) {
                return Err(error(field, format!("entry {i} is neither 0 (absent) nor 2^32 + a value (present)")));
            }
        }
        if let Some(i) = self.trigger_sources.iter().position(|&c| trigger_of(c).is_none()) {
            return Err(error("trigger_sources", format!("entry {i}: allowed 0 (none) to 3")));
        }
        let total: u64 = self.pr_counts.iter().map(|&c| u64::from(c)).sum();
        if total != self.pr_numbers.len() as u64 {
            return Err(error(
                "pr_counts",
                format!("the counts add up to {total}, but `pr_numbers` has {} entries", self.pr_numbers.len()),
            ));
        }
        check_sparse("job_types", &self.job_types, n)?;
        let mut types = self.job_types.into_iter().peekable();
        let prs = self.pr_numbers;
        let mut pr_at = 0usize;
        let columns =
            self.time_range_days.into_iter().zip(self.max_items).zip(self.trigger_sources).zip(self.pr_counts);
        Ok(columns.enumerate().map(move |(i, (((days, items), trigger), count))| {
            let end = pr_at + count as usize;
            let pr_numbers = prs.get(pr_at..end).map(<[u64]>::to_vec).unwrap_or_default();
            pr_at = end;
            Job {
                job_type: take_sparse(&mut types, i),
                time_range_days: decode_option(days).flatten(),
                pr_numbers,
                trigger_source: trigger_of(trigger).flatten(),
                max_items: decode_option(items).flatten(),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repos() -> Vec<Repository> {
        let mut out = Vec::new();
        for (i, c) in [None].into_iter().chain(Category::ALL.iter().copied().map(Some)).enumerate() {
            out.push(Repository { id: RepoId::Uuid(u128::MAX - i as u128), category: c });
            out.push(Repository { id: RepoId::Text(format!("owner/repo-{i}")), category: c });
        }
        out.push(Repository { id: RepoId::Uuid(0), category: None });
        out.push(Repository { id: RepoId::Text(String::new()), category: None });
        out
    }

    fn jobs() -> Vec<Job> {
        let mut out = Vec::new();
        for (i, t) in
            [None, Some(TriggerSource::Manual), Some(TriggerSource::Scheduled), Some(TriggerSource::Automatic)]
                .into_iter()
                .enumerate()
        {
            for v in [None, Some(0), Some(1), Some(u32::MAX)] {
                out.push(Job {
                    job_type: (i % 2 == 0).then(|| format!("type-{i}")),
                    time_range_days: v,
                    pr_numbers: (0..i as u64).collect(),
                    trigger_source: t,
                    max_items: v.map(|v| v ^ 1),
                });
            }
        }
        out
    }

    fn decode_repos(c: RepositoryColumns) -> Result<Vec<Repository>, BatchError> {
        c.decode().map(Iterator::collect)
    }

    fn decode_jobs(c: JobColumns, n: usize) -> Result<Vec<Job>, BatchError> {
        c.decode(n).map(Iterator::collect)
    }

    #[test]
    fn round_trips() {
        let (r, j) = (repos(), jobs());
        assert_eq!(decode_repos(RepositoryColumns::encode(&r)).unwrap(), r);
        assert_eq!(decode_jobs(JobColumns::encode(&j), j.len()).unwrap(), j);
        assert_eq!(decode_repos(RepositoryColumns::default()).unwrap(), vec![]);
        assert_eq!(decode_jobs(JobColumns::default(), 0).unwrap(), vec![]);
    }

    #[test]
    fn decisions_round_trip_and_policy_error_is_not_a_code() {
        let mut decisions = Vec::new();
        for (i, &rule) in RouteRule::ALL.iter().filter(|r| **r != RouteRule::PolicyError).enumerate() {
            for &reason in EligibilityReason::ALL.iter().filter(|r| **r != EligibilityReason::PolicyError) {
                decisions.push(RouteDecision {
                    processor: Processor::ALL[i % 2],
                    rule,
                    eligibility: Eligibility { eligible: i % 3 == 0, reason, bucket: (i * 13 % 100) as u8 },
                });
            }
        }
        let n = decisions.len();
        let columns = DecisionColumns::encode(decisions.iter().copied());
        assert_eq!(columns.clone().decode(n).unwrap(), decisions);
        let eligibility: Vec<Eligibility> = decisions.iter().map(|d| d.eligibility).collect();
        assert_eq!(EligibilityColumns::encode(eligibility.iter().copied()).decode(n).unwrap(), eligibility);
        assert_eq!(columns.clone().decode(n + 1).unwrap_err().field, "processors");
        let mut bad = columns.clone();
        bad.rules[0] = code(RouteRule::ALL, &RouteRule::PolicyError);
        assert_eq!(bad.decode(n).unwrap_err().field, "rules");
        let mut bad = columns.clone();
        bad.eligibility.reasons[1] = code(EligibilityReason::ALL, &EligibilityReason::PolicyError);
        assert_eq!(bad.decode(n).unwrap_err().field, "reasons");
        let mut bad = columns.clone();
        bad.processors[2] = 2;
        assert_eq!(bad.decode(n).unwrap_err().field, "processors");
        let mut bad = columns;
        bad.eligibility.eligible[3] = 2;
        assert_eq!(bad.decode(n).unwrap_err().field, "eligible");
    }

    #[test]
    fn a_present_zero_is_not_absent() {
        assert_eq!(encode_option(None), 0);
        assert_ne!(encode_option(Some(0)), 0);
        assert_eq!(decode_option(encode_option(Some(0))), Some(Some(0)));
        assert_eq!(decode_option(encode_option(Some(u32::MAX))), Some(Some(u32::MAX)));
        assert_eq!(decode_option(7), None);
        assert_eq!(decode_option(3 << 32), None);
    }

    #[test]
    fn malformed_columns_name_the_column() {
        let field = |r: Result<Vec<Repository>, BatchError>| r.unwrap_err().field;
        let good = RepositoryColumns::encode(&repos());
        let mut c = good.clone();
        c.uuids.pop();
        assert_eq!(field(decode_repos(c)), "uuids");
        let mut c = good.clone();
        c.categories[0] = 6;
        assert_eq!(field(decode_repos(c)), "categories");
        let mut c = good.clone();
        c.text_ids.swap(0, 1);
        assert_eq!(field(decode_repos(c)), "text_ids");
        let mut c = good.clone();
        c.text_ids.push((u32::MAX, "x".into()));
        assert_eq!(field(decode_repos(c)), "text_ids");

        let jfield = |r: Result<Vec<Job>, BatchError>| r.unwrap_err().field;
        let js = jobs();
        let good = JobColumns::encode(&js);
        assert_eq!(jfield(decode_jobs(good.clone(), js.len() + 1)), "time_range_days");
        let mut c = good.clone();
        c.max_items[3] = 5;
        assert_eq!(jfield(decode_jobs(c, js.len())), "max_items");
        let mut c = good.clone();
        c.trigger_sources[1] = 4;
        assert_eq!(jfield(decode_jobs(c, js.len())), "trigger_sources");
        let mut c = good.clone();
        c.pr_numbers.push(1);
        assert_eq!(jfield(decode_jobs(c, js.len())), "pr_counts");
        let mut c = good.clone();
        c.pr_counts[0] = u32::MAX;
        assert_eq!(jfield(decode_jobs(c, js.len())), "pr_counts");
        let mut c = good;
        c.job_types.push((0, "again".into()));
        assert_eq!(jfield(decode_jobs(c, js.len())), "job_types");
    }
}
