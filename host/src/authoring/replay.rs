//! `rollout replay` and `rollout decisions export`: re-evaluate logged decisions
//! ([`crate::store::DecisionRecord`]) and compare them with what was logged.
//!
//! Two modes ([`Replay::determinism`], [`Replay::what_if`]):
//! - **determinism check**: each decision is re-evaluated under the policy (`policy_sha256`)
//!   and the configuration version (`config_version`, plus the environment overrides the
//!   deciding process had) it was logged with; any difference is a determinism failure;
//! - **what-if**: each decision is re-evaluated by one candidate policy under its own
//!   configuration; the changes are grouped by (old rule → new rule) — for eligibility
//!   decisions (old reason → new reason) — and by the repository's category.
//!
//! How a record maps back to the policy's input ([`query_of`]): the repository is
//! `RepoId::parse(repository_id)` with its logged category; the job is the logged JSON
//! ([`crate::cases::job_from_json`]); the configuration is the snapshot of
//! `(feature, config_version)` with [`EnvOverrides::from_json`] of `overrides` applied
//! ([`EnvOverrides::apply_to`]). Compared: processor, rule, eligible, reason and bucket of
//! a route decision; eligible, reason and bucket of an eligibility decision.
//!
//! Not compared, counted apart:
//! - **masked** decisions (the repository id is a keyed hash, and the bucket depends on the
//!   id): not replayed;
//! - **fallbacks** (the logged decision is the fallback: the policy trapped or ran past its
//!   deadline): re-evaluated, and counted as re-decided when the policy answers now;
//! - **skipped** decisions, each with its reason: a configuration version that is not kept,
//!   a policy sha256 that is unknown (or does not compile), `none` (no policy was loaded),
//!   an input that cannot be read.
//!
//! Evaluation is batched: the records of a page are grouped by (policy sha256, feature,
//! configuration version, overrides, kind) and each group asks its policy with
//! [`Policy::route_batch`] / [`Policy::is_eligible_batch`] in chunks of [`BATCH`]; a chunk
//! the policy fails on is split until the failing decisions are found, and a decision the
//! policy gives no answer for is compared as the fallback the server would have served.
//!
//! Sources: the database ([`replay_store`], oldest first in pages of [`PAGE`] read with
//! the `after` cursor, the next page read while this one is evaluated) or an export
//! ([`replay_export`]).
//!
//! ## Export format (`rollout decisions export`, JSON Lines)
//!
//! ```text
//! {"format":"rollout-decisions","version":1}
//! {"config":{…snapshot of (feature, config_version)…}}
//! {"decision":{…DecisionRecord…}}
//! {"decision":{…}}
//! …
//! ```
//!
//! The first line is the header. Then the decisions oldest first, one `{"decision": …}`
//! line each (the JSON of [`DecisionRecord`]); before the first decision that needs a
//! configuration version, one `{"config": …}` line with its snapshot
//! ([`crate::store::config_versions::snapshot_json`], which names its `feature_name` and
//! `config_version`). A version that is not kept has no config line (its decisions are
//! skipped on replay). Policies are not in the export: an offline determinism check finds
//! components by sha256 in a directory ([`policies_in_dir`]).

use crate::engine::{fallback_eligibility, fallback_route, ConfigSnapshot, NativePolicy, Policy, Query};
use crate::env::EnvOverrides;
use crate::runtime::{sha256_hex, Limits, Sandbox, BUNDLED_POLICY};
use crate::store::config_versions::snapshot_json;
use crate::store::{DecisionFilter, DecisionKind, DecisionRecord, Store, StoreError, StoredConfig};
use chrono::{DateTime, Utc};
use rollout_policy::{Category, Eligibility, Job, Repository, RouteDecision};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// Decisions read from the database per page.
pub const PAGE: u32 = 10_000;
/// Decisions per batch call to a policy.
pub const BATCH: usize = 1024;
/// Differences (determinism) and examples (what-if) kept.
pub const SHOWN: usize = 10;
/// Running time a replayed batch call may take, in milliseconds (a replay runs offline, so
/// it gives a call far more room than a server's 10 ms).
pub const CALL_LIMIT_MS: u64 = 1000;
/// The header line of an export.
pub const EXPORT_FORMAT: &str = "rollout-decisions";
/// The export format version this build writes and reads.
pub const EXPORT_VERSION: u64 = 1;

/// Why a replay or an export could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An export line is not what the format says.
    #[error("export line {line}: {message}")]
    Export {
        /// The line number (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done (`read`, `write`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What a replay is checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each decision under its own policy and configuration: any difference is a failure.
    Determinism,
    /// Each decision under one candidate policy: the changes grouped.
    WhatIf,
}

/// One field that differs between the logged and the replayed decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The decision id.
    pub id: Uuid,
    /// The feature.
    pub feature: String,
    /// `processor`, `rule`, `eligible`, `reason`, `bucket`, or `fallback` (the policy gave
    /// no answer on replay).
    pub field: &'static str,
    /// The logged value.
    pub logged: String,
    /// The replayed value.
    pub replayed: String,
}

/// A changed decision shown as an example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The decision id.
    pub id: Uuid,
    /// When it was decided.
    pub time: DateTime<Utc>,
    /// The feature.
    pub feature: String,
    /// `route` or `eligibility`.
    pub kind: DecisionKind,
    /// The repository id.
    pub repository_id: String,
    /// Its category (`none` when not categorised).
    pub category: String,
    /// The logged decision (processor, rule, eligible, reason, bucket).
    pub from: serde_json::Value,
    /// The replayed decision.
    pub to: serde_json::Value,
}

/// The changed decisions of one (kind, old label → new label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeGroup {
    /// `route` or `eligibility`.
    pub kind: DecisionKind,
    /// The logged label: `rule (processor)` for a route, `reason (eligible|not eligible)`
    /// for an eligibility decision; the whole decision when only its bucket changed.
    pub from: String,
    /// The replayed label.
    pub to: String,
    /// How many decisions changed this way.
    pub count: u64,
}

/// Replayed and changed decisions of one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryChanges {
    /// The category (`none` when not categorised).
    pub category: String,
    /// Decisions of the category compared.
    pub compared: u64,
    /// Of which changed.
    pub changed: u64,
}

/// Decisions skipped for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Why (naming the version, the policy or the input).
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// The result of a replay. `read = replayed + masked + skipped`; `replayed = identical +
/// changed + fallbacks`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Determinism check or what-if.
    pub mode: Mode,
    /// The candidate policy (what-if).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Decisions read.
    pub read: u64,
    /// Decisions re-evaluated.
    pub replayed: u64,
    /// Re-evaluated to the logged decision.
    pub identical: u64,
    /// Re-evaluated to another decision (in a determinism check: failures).
    pub changed: u64,
    /// Logged as the fallback (the policy gave no answer when deciding): re-evaluated, not
    /// compared.
    pub fallbacks: u64,
    /// Of the fallbacks, those the policy answers on replay.
    pub fallbacks_redecided: u64,
    /// Re-evaluations the policy gave no answer for (compared as the fallback; logged
    /// fallbacks not included).
    pub policy_errors: u64,
    /// Masked decisions (not replayable).
    pub masked: u64,
    /// Decisions skipped.
    pub skipped: u64,
    /// Why, most frequent first.
    pub skipped_reasons: Vec<Skipped>,
    /// The first [`SHOWN`] differences, oldest decision first (one per differing field).
    pub differences: Vec<Difference>,
    /// Changed decisions grouped, most frequent first.
    pub groups: Vec<ChangeGroup>,
    /// Changes per category.
    pub by_category: Vec<CategoryChanges>,
    /// The first [`SHOWN`] changed decisions, oldest first.
    pub examples: Vec<Example>,
}

impl ReplayReport {
    /// Whether a determinism check failed (a decision replayed differently).
    pub fn failed(&self) -> bool {
        self.mode == Mode::Determinism && self.changed > 0
    }
}

/// A replayed decision, in the terms of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Where the job runs (route decisions).
    pub processor: Option<&'static str>,
    /// The routing rule (route decisions).
    pub rule: Option<&'static str>,
    /// Whether the repository takes part.
    pub eligible: bool,
    /// The eligibility rule.
    pub reason: &'static str,
    /// The bucket.
    pub bucket: u8,
    /// Why the policy gave no answer (the fields are then the fallback's).
    pub error: Option<String>,
}

impl Answer {
    /// A route decision.
    pub fn route(d: &RouteDecision) -> Answer {
        Answer {
            processor: Some(d.processor.as_str()),
            rule: Some(d.rule.as_str()),
            eligible: d.eligibility.eligible,
            reason: d.eligibility.reason.as_str(),
            bucket: d.eligibility.bucket,
            error: None,
        }
    }

    /// An eligibility decision.
    pub fn eligibility(e: &Eligibility) -> Answer {
        Answer {
            processor: None,
            rule: None,
            eligible: e.eligible,
            reason: e.reason.as_str(),
            bucket: e.bucket,
            error: None,
        }
    }

    /// The fallback the server serves when the policy gives no answer (SPEC §2.3).
    pub fn fallback(kind: DecisionKind, error: String) -> Answer {
        let mut a = match kind {
            DecisionKind::Route => Answer::route(&fallback_route()),
            DecisionKind::Eligibility => Answer::eligibility(&fallback_eligibility()),
        };
        a.error = Some(error);
        a
    }

    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(p) = self.processor {
            m.insert("processor".into(), p.into());
        }
        if let Some(r) = self.rule {
            m.insert("rule".into(), r.into());
        }
        m.insert("eligible".into(), self.eligible.into());
        m.insert("reason".into(), self.reason.into());
        m.insert("bucket".into(), self.bucket.into());
        if let Some(e) = &self.error {
            m.insert("fallback".into(), e.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

fn logged_json(r: &DecisionRecord) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(p) = &r.processor {
        m.insert("processor".into(), p.clone().into());
    }
    if let Some(rule) = &r.rule {
        m.insert("rule".into(), rule.clone().into());
    }
    m.insert("eligible".into(), r.eligible.into());
    m.insert("reason".into(), r.reason.clone().into());
    m.insert("bucket".into(), r.bucket.into());
    if let Some(f) = &r.fallback {
        m.insert("fallback".into(), f.clone().into());
    }
    serde_json::Value::Object(m)
}

fn eligible_text(b: bool) -> &'static str {
    if b {
        "eligible"
    } else {
        "not eligible"
    }
}

/// The fields of `answer` that differ from what `record` logged (empty: identical).
pub fn compare(record: &DecisionRecord, answer: &Answer) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |field: &'static str, logged: String, replayed: String| {
        if logged != replayed {
            out.push(Difference { id: record.id, feature: record.feature.clone(), field, logged, replayed });
        }
    };
    if record.fallback.is_none() {
        if let Some(e) = &answer.error {
            push("fallback", "none".to_owned(), e.clone());
        }
    }
    let opt = |v: Option<&str>| v.unwrap_or("-").to_owned();
    if record.kind == DecisionKind::Route {
        push("processor", opt(record.processor.as_deref()), opt(answer.processor));
        push("rule", opt(record.rule.as_deref()), opt(answer.rule));
    }
    push("eligible", record.eligible.to_string(), answer.eligible.to_string());
    push("reason", record.reason.clone(), answer.reason.to_owned());
    push("bucket", record.bucket.to_string(), answer.bucket.to_string());
    out
}

/// Whether `answer` is the decision `record` logged ([`compare`] finds no difference),
/// without building the differences.
pub fn identical(record: &DecisionRecord, answer: &Answer) -> bool {
    fn opt(v: Option<&str>) -> &str {
        v.unwrap_or("-")
    }
    (record.fallback.is_some() || answer.error.is_none())
        && (record.kind != DecisionKind::Route
            || (opt(record.processor.as_deref()) == opt(answer.processor)
                && opt(record.rule.as_deref()) == opt(answer.rule)))
        && record.eligible == answer.eligible
        && record.reason == answer.reason
        && record.bucket == answer.bucket
}

/// The label of a logged decision that groups it ([`ChangeGroup::from`]).
fn logged_label(r: &DecisionRecord) -> String {
    match r.kind {
        DecisionKind::Route => {
            format!("{} ({})", r.rule.as_deref().unwrap_or("-"), r.processor.as_deref().unwrap_or("-"))
        }
        DecisionKind::Eligibility => format!("{} ({})", r.reason, eligible_text(r.eligible)),
    }
}

fn answer_label(kind: DecisionKind, a: &Answer) -> String {
    match kind {
        DecisionKind::Route => format!("{} ({})", a.rule.unwrap_or("-"), a.processor.unwrap_or("-")),
        DecisionKind::Eligibility => format!("{} ({})", a.reason, eligible_text(a.eligible)),
    }
}

fn full_logged(r: &DecisionRecord) -> String {
    format!("{}, reason {}, bucket {}", logged_label(r), r.reason, r.bucket)
}

fn full_answer(kind: DecisionKind, a: &Answer) -> String {
    format!("{}, reason {}, bucket {}", answer_label(kind, a), a.reason, a.bucket)
}

/// Why a record cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreplayable {
    /// The repository id is masked.
    #[error("the repository id is masked")]
    Masked,
    /// A reason to skip it, naming the input.
    #[error("{0}")]
    Skip(String),
}

/// The repository of a logged decision.
pub fn repository_of(record: &DecisionRecord) -> Result<Repository, Unreplayable> {
    if record.masked {
        return Err(Unreplayable::Masked);
    }
    let category = match record.category.as_deref() {
        None => None,
        Some(c) => Some(Category::parse(c).map_err(|e| Unreplayable::Skip(format!("unreadable category: {e}")))?),
    };
    Ok(Repository::parse(&record.repository_id, category))
}

/// The job of a logged route decision.
pub fn job_of(record: &DecisionRecord) -> Result<Job, Unreplayable> {
    // the common case read straight from the value; a job that does not read is read again
    // by the case-file decoder, which names the field (tracking the path costs every record)
    if let Some(v) = &record.job {
        if let Ok(job) = <crate::input::JobInput as serde::Deserialize>::deserialize(v) {
            return Ok(job.into_job());
        }
    }
    crate::cases::job_from_json(record.job.as_ref()).map_err(|e| Unreplayable::Skip(format!("unreadable job: {e}")))
}

/// The configuration a logged decision saw: the snapshot of its version with its overrides.
pub fn config_of(record: &DecisionRecord, stored: &StoredConfig) -> Result<rollout_policy::Config, Unreplayable> {
    let overrides = match &record.overrides {
        None => EnvOverrides::default(),
        Some(v) => EnvOverrides::from_json(v).map_err(|e| Unreplayable::Skip(format!("unreadable overrides: {e}")))?,
    };
    Ok(overrides.apply_to(stored))
}

/// The query a logged decision asked, under the snapshot `stored` of its configuration
/// version.
pub fn query_of(record: &DecisionRecord, stored: &StoredConfig) -> Result<Query, Unreplayable> {
    let repository = repository_of(record)?;
    let config = config_of(record, stored)?;
    Ok(match record.kind {
        DecisionKind::Route => Query::Route(config, repository, job_of(record)?),
        DecisionKind::Eligibility => Query::IsEligible(config, repository),
    })
}

/// The policy a sha256 names without a database: `native` (the reference rules linked
/// natively) or the bundled component's digest; `None` for any other.
pub fn builtin_policy(sha256: &str) -> Option<Result<Arc<dyn Policy>, String>> {
    if sha256 == "native" {
        return Some(Ok(Arc::new(NativePolicy::new())));
    }
    if sha256 == sha256_hex(BUNDLED_POLICY) {
        return Some(compile_policy(BUNDLED_POLICY, "the bundled policy"));
    }
    None
}

/// Compile component `bytes` (named `source` in errors) for replay, with
/// [`CALL_LIMIT_MS`] per call.
pub fn compile_policy(bytes: &[u8], source: &str) -> Result<Arc<dyn Policy>, String> {
    let limits = Limits { epoch_ticks: CALL_LIMIT_MS, ..Limits::default() };
    Sandbox::compile(bytes, source, limits)
        .map(|s| Arc::new(s) as Arc<dyn Policy>)
        .map_err(|e| format!("policy sha256 {} does not compile: {e}", short(&sha256_hex(bytes))))
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// The components of `dir` (every `*.wasm` file, not recursing) by the sha256 of their
/// bytes.
pub fn policies_in_dir(dir: &Path) -> Result<HashMap<String, Vec<u8>>, ReplayError> {
    let io = |source| ReplayError::Io { action: "read", path: dir.to_owned(), source };
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            let bytes = std::fs::read(&path).map_err(|source| ReplayError::Io {
                action: "read",
                path: path.clone(),
                source,
            })?;
            out.insert(sha256_hex(&bytes), bytes);
        }
    }
    Ok(out)
}

/// What a page of records needs that the replay does not have yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    /// Configuration versions: (feature, config_version).
    pub configs: Vec<(String, i64)>,
    /// Policies by sha256 (determinism checks only; never `none`).
    pub policies: Vec<String>,
}

impl Missing {
    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty() && self.policies.is_empty()
    }
}

/// What the records of one evaluation group share: the policy sha256 (empty in a what-if),
/// the feature, the configuration version, the overrides (serialised) and the kind.
type GroupKey<'r> = (&'r str, &'r str, i64, Option<String>, &'static str);

/// A replay in progress: feed it pages of records ([`Replay::replay`]) after giving it the
/// configurations and policies they need ([`Replay::missing`], [`Replay::add_config`],
/// [`Replay::add_policy`]); [`Replay::report`] at any time.
pub struct Replay {
    mode: Mode,
    candidate: Option<(String, Arc<dyn Policy>)>,
    configs: HashMap<(String, i64), Option<Arc<StoredConfig>>>,
    policies: HashMap<String, Result<Arc<dyn Policy>, String>>,
    snapshots: HashMap<(String, i64, String), Result<Arc<ConfigSnapshot>, String>>,
    report: ReplayReport,
    skipped: BTreeMap<String, u64>,
    groups: BTreeMap<(&'static str, String, String), u64>,
    categories: BTreeMap<String, (u64, u64)>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").field("mode", &self.mode).field("report", &self.report).finish()
    }
}

impl Replay {
    fn new(mode: Mode, candidate: Option<(String, Arc<dyn Policy>)>) -> Replay {
        Replay {
            mode,
            report: ReplayReport {
                mode,
                policy: candidate.as_ref().map(|(n, _)| n.clone()),
                read: 0,
                replayed: 0,
                identical: 0,
                changed: 0,
                fallbacks: 0,
                fallbacks_redecided: 0,
                policy_errors: 0,
                masked: 0,
                skipped: 0,
                skipped_reasons: Vec::new(),
                differences: Vec::new(),
                groups: Vec::new(),
                by_category: Vec::new(),
                examples: Vec::new(),
            },
            candidate,
            configs: HashMap::new(),
            policies: HashMap::new(),
            snapshots: HashMap::new(),
            skipped: BTreeMap::new(),
            groups: BTreeMap::new(),
            categories: BTreeMap::new(),
        }
    }

    /// A determinism check: each decision under the policy and configuration it was logged
    /// with.
    pub fn determinism() -> Replay {
        Replay::new(Mode::Determinism, None)
    }

    /// A what-if: each decision under `policy` (described as `name`) and its own
    /// configuration.
    pub fn what_if(name: String, policy: Arc<dyn Policy>) -> Replay {
        Replay::new(Mode::WhatIf, Some((name, policy)))
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The configurations and policies `records` need that were not given yet.
    pub fn missing(&self, records: &[DecisionRecord]) -> Missing {
        let mut configs = HashSet::new();
        let mut policies = HashSet::new();
        // the records of a page mostly share what they need: look each run up once (a key
        // lookup clones the feature name)
        let mut previous: Option<&DecisionRecord> = None;
        for r in records {
            if r.masked || r.policy_sha256 == "none" {
                continue;
            }
            let same = previous.is_some_and(|p| {
                p.config_version == r.config_version && p.feature == r.feature && p.policy_sha256 == r.policy_sha256
            });
            previous = Some(r);
            if same {
                continue;
            }
            if !self.configs.contains_key(&(r.feature.clone(), r.config_version)) {
                configs.insert((r.feature.clone(), r.config_version));
            }
            if self.mode == Mode::Determinism && !self.policies.contains_key(&r.policy_sha256) {
                policies.insert(r.policy_sha256.clone());
            }
        }
        let mut configs: Vec<_> = configs.into_iter().collect();
        configs.sort();
        let mut policies: Vec<_> = policies.into_iter().collect();
        policies.sort();
        Missing { configs, policies }
    }

    /// The snapshot of `(feature, version)`, or `None` when it is not kept.
    pub fn add_config(&mut self, feature: &str, version: i64, config: Option<StoredConfig>) {
        self.configs.insert((feature.to_owned(), version), config.map(Arc::new));
    }

    /// The policy with digest `sha256`, or why there is none (the reason its decisions are
    /// skipped).
    pub fn add_policy(&mut self, sha256: &str, policy: Result<Arc<dyn Policy>, String>) {
        self.policies.insert(sha256.to_owned(), policy);
    }

    fn skip(&mut self, reason: String) {
        self.report.skipped += 1;
        *self.skipped.entry(reason).or_insert(0) += 1;
    }

    fn snapshot(&mut self, record: &DecisionRecord, overrides_key: &str) -> Result<Arc<ConfigSnapshot>, String> {
        let key = (record.feature.clone(), record.config_version, overrides_key.to_owned());
        if let Some(s) = self.snapshots.get(&key) {
            return s.clone();
        }
        let made = match self.configs.get(&(record.feature.clone(), record.config_version)) {
            Some(Some(stored)) => match config_of(record, stored) {
                Ok(c) => Ok(ConfigSnapshot::new(c)),
                Err(e) => Err(e.to_string()),
            },
            _ => Err(format!("configuration version {} of `{}` is not kept", record.config_version, record.feature)),
        };
        self.snapshots.insert(key, made.clone());
        made
    }

    fn policy_for(&self, record: &DecisionRecord) -> Result<Arc<dyn Policy>, String> {
        if record.policy_sha256 == "none" {
            return Err("no policy was loaded when deciding (`none`)".to_owned());
        }
        if let Some((_, p)) = &self.candidate {
            return Ok(p.clone());
        }
        match self.policies.get(&record.policy_sha256) {
            Some(p) => p.clone(),
            None => Err(format!("policy sha256 {} is unknown", short(&record.policy_sha256))),
        }
    }

    /// Re-evaluate `records` (oldest first) and add them to the report. Records whose
    /// configuration or policy was not given ([`Replay::missing`]) are skipped as unknown.
    pub fn replay(&mut self, records: &[DecisionRecord]) {
        self.report.read += records.len() as u64;
        // grouped by keys borrowed from the records (nothing is cloned per record; overrides,
        // rare, are serialised to compare them); a run of records with the key of the one
        // before joins its group without hashing
        let mut groups: HashMap<GroupKey<'_>, Vec<usize>> = HashMap::new();
        let mut run: Option<(GroupKey<'_>, Vec<usize>)> = None;
        for (i, r) in records.iter().enumerate() {
            if r.masked {
                self.report.masked += 1;
                continue;
            }
            let overrides = r.overrides.as_ref().map(serde_json::Value::to_string);
            let sha = if self.candidate.is_some() && r.policy_sha256 != "none" { "" } else { r.policy_sha256.as_str() };
            let key = (sha, r.feature.as_str(), r.config_version, overrides, r.kind.as_str());
            match &mut run {
                Some((k, indices)) if *k == key => indices.push(i),
                _ => {
                    if let Some((k, indices)) = run.replace((key, vec![i])) {
                        groups.entry(k).or_default().extend(indices);
                    }
                }
            }
        }
        if let Some((k, indices)) = run {
            groups.entry(k).or_default().extend(indices);
        }
        let mut groups: Vec<(GroupKey<'_>, Vec<usize>)> = groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let mut differences: Vec<Difference> = Vec::new();
        let mut examples: Vec<Example> = Vec::new();
        for (key, indices) in groups {
            let Some(&first) = indices.first() else { continue };
            let first = &records[first];
            let policy = match self.policy_for(first) {
                Ok(p) => p,
                Err(reason) => {
                    for _ in &indices {
                        self.skip(reason.clone());
                    }
                    continue;
                }
            };
            let snapshot = match self.snapshot(first, key.3.as_deref().unwrap_or_default()) {
                Ok(s) => s,
                Err(reason) => {
                    for _ in &indices {
                        self.skip(reason.clone());
                    }
                    continue;
                }
            };
            let answers = self.evaluate(records, &indices, first.kind, policy.as_ref(), &snapshot);
            for (i, answer) in answers {
                let Some(answer) = answer else { continue };
                self.account(&records[i], &answer, &mut differences, &mut examples);
            }
        }
        differences.sort_by_key(|d| d.id);
        examples.sort_by_key(|e| e.id);
        let room = SHOWN.saturating_sub(self.report.differences.len());
        self.report.differences.extend(differences.into_iter().take(room));
        let room = SHOWN.saturating_sub(self.report.examples.len());
        self.report.examples.extend(examples.into_iter().take(room));
    }

    /// The answers for `indices` (all of one kind), `None` for a record skipped here.
    fn evaluate(
        &mut self,
        records: &[DecisionRecord],
        indices: &[usize],
        kind: DecisionKind,
        policy: &dyn Policy,
        snapshot: &Arc<ConfigSnapshot>,
    ) -> Vec<(usize, Option<Answer>)> {
        let mut out = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(BATCH) {
            match kind {
                DecisionKind::Route => {
                    let (ok, requests) = self.inputs(records, chunk, &mut out, |r| Ok((repository_of(r)?, job_of(r)?)));
                    let answers = split_batch(&requests, &|rs| policy.route_batch(snapshot, rs), Answer::route, kind);
                    out.extend(ok.into_iter().zip(answers.into_iter().map(Some)));
                }
                DecisionKind::Eligibility => {
                    let (ok, repos) = self.inputs(records, chunk, &mut out, repository_of);
                    let answers =
                        split_batch(&repos, &|rs| policy.is_eligible_batch(snapshot, rs), Answer::eligibility, kind);
                    out.extend(ok.into_iter().zip(answers.into_iter().map(Some)));
                }
            }
        }
        out
    }

    /// The inputs `make` builds for the records of `chunk`, with their indices; a record it
    /// cannot build is skipped (counted, and answered `None` in `out`).
    fn inputs<T>(
        &mut self,
        records: &[DecisionRecord],
        chunk: &[usize],
        out: &mut Vec<(usize, Option<Answer>)>,
        make: impl Fn(&DecisionRecord) -> Result<T, Unreplayable>,
    ) -> (Vec<usize>, Vec<T>) {
        let mut ok = Vec::with_capacity(chunk.len());
        let mut inputs = Vec::with_capacity(chunk.len());
        for &i in chunk {
            match make(&records[i]) {
                Ok(input) => {
                    ok.push(i);
                    inputs.push(input);
                }
                Err(e) => {
                    self.skip(e.to_string());
                    out.push((i, None));
                }
            }
        }
        (ok, inputs)
    }

    fn account(
        &mut self,
        record: &DecisionRecord,
        answer: &Answer,
        differences: &mut Vec<Difference>,
        examples: &mut Vec<Example>,
    ) {
        self.report.replayed += 1;
        if record.fallback.is_some() {
            self.report.fallbacks += 1;
            if answer.error.is_none() {
                self.report.fallbacks_redecided += 1;
            }
            return;
        }
        if answer.error.is_some() {
            self.report.policy_errors += 1;
        }
        let category = record.category.as_deref().unwrap_or("none");
        let same = identical(record, answer);
        let entry = match self.categories.get_mut(category) {
            Some(e) => e,
            None => self.categories.entry(category.to_owned()).or_insert((0, 0)),
        };
        entry.0 += 1;
        if same {
            self.report.identical += 1;
            return;
        }
        entry.1 += 1;
        let category = category.to_owned();
        let diffs = compare(record, answer);
        self.report.changed += 1;
        let (from, to) = (logged_label(record), answer_label(record.kind, answer));
        let (from, to) = if from == to { (full_logged(record), full_answer(record.kind, answer)) } else { (from, to) };
        *self.groups.entry((record.kind.as_str(), from, to)).or_insert(0) += 1;
        if self.report.differences.len() < SHOWN {
            differences.extend(diffs);
        }
        if self.report.examples.len() < SHOWN {
            examples.push(Example {
                id: record.id,
                time: record.time,
                feature: record.feature.clone(),
                kind: record.kind,
                repository_id: record.repository_id.clone(),
                category,
                from: logged_json(record),
                to: answer.json(),
            });
        }
    }

    /// The report so far.
    pub fn report(&self) -> ReplayReport {
        let mut r = self.report.clone();
        let mut skipped: Vec<Skipped> =
            self.skipped.iter().map(|(reason, &count)| Skipped { reason: reason.clone(), count }).collect();
        skipped.sort_by_key(|s| std::cmp::Reverse(s.count));
        r.skipped_reasons = skipped;
        let mut groups: Vec<ChangeGroup> = self
            .groups
            .iter()
            .filter_map(|((kind, from, to), &count)| {
                Some(ChangeGroup { kind: DecisionKind::parse(kind)?, from: from.clone(), to: to.clone(), count })
            })
            .collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.count));
        r.groups = groups;
        r.by_category = self
            .categories
            .iter()
            .map(|(c, &(compared, changed))| CategoryChanges { category: c.clone(), compared, changed })
            .collect();
        r
    }
}

/// Ask `call` for all of `items`; a failing batch is split in halves until the items the
/// policy gives no answer for are found, and each of those answers the fallback.
fn split_batch<I, D>(
    items: &[I],
    call: &dyn Fn(&[I]) -> crate::engine::CallResult<Vec<D>>,
    answer: fn(&D) -> Answer,
    kind: DecisionKind,
) -> Vec<Answer> {
    if items.is_empty() {
        return Vec::new();
    }
    match call(items) {
        Ok(ds) if ds.len() == items.len() => ds.iter().map(answer).collect(),
        Ok(ds) => {
            let e = format!("policy answered {} decisions for a batch of {}", ds.len(), items.len());
            items.iter().map(|_| Answer::fallback(kind, e.clone())).collect()
        }
        Err(e) if items.len() == 1 => vec![Answer::fallback(kind, e.to_string())],
        Err(_) => {
            let (a, b) = items.split_at(items.len() / 2);
            let mut out = split_batch(a, call, answer, kind);
            out.extend(split_batch(b, call, answer, kind));
            out
        }
    }
}

/// The report for people: the counts, the skip reasons, and the first differences
/// (determinism) or the grouped changes and examples (what-if).
pub fn render_text(report: &ReplayReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match (&report.mode, &report.policy) {
        (Mode::WhatIf, Some(p)) => {
            let _ = writeln!(out, "what-if: logged decisions re-evaluated by {p}");
        }
        _ => {
            let _ =
                writeln!(out, "determinism check: logged decisions re-evaluated by their own policy and configuration");
        }
    }
    let changed = if report.mode == Mode::Determinism { "failures" } else { "changed" };
    let _ = writeln!(
        out,
        "read {}, replayed {}: identical {}, {changed} {}, fallbacks {} ({} re-decided)",
        report.read, report.replayed, report.identical, report.changed, report.fallbacks, report.fallbacks_redecided
    );
    if report.policy_errors > 0 {
        let _ = writeln!(
            out,
            "the policy gave no answer for {} decisions (compared as the fallback)",
            report.policy_errors
        );
    }
    let _ = writeln!(out, "masked {} (not replayable), skipped {}", report.masked, report.skipped);
    for s in &report.skipped_reasons {
        let _ = writeln!(out, "{:>9}  skipped: {}", s.count, s.reason);
    }
    match report.mode {
        Mode::Determinism => {
            if !report.differences.is_empty() {
                let _ = writeln!(out, "\nfirst differences (decision, field: logged → replayed):");
                for d in &report.differences {
                    let _ = writeln!(out, "  {} ({}) {}: {} → {}", d.id, d.feature, d.field, d.logged, d.replayed);
                }
            }
        }
        Mode::WhatIf => {
            if !report.groups.is_empty() {
                let _ = writeln!(out, "\nchanges (old → new):");
                for g in &report.groups {
                    let _ = writeln!(out, "{:>9}  {}: {} → {}", g.count, g.kind.as_str(), g.from, g.to);
                }
                let _ = writeln!(out, "\nby category (changed of compared):");
                for c in &report.by_category {
                    let _ = writeln!(out, "{:>9} of {:>9}  {}", c.changed, c.compared, c.category);
                }
                let _ = writeln!(out, "\nexamples:");
                for e in &report.examples {
                    let _ = writeln!(
                        out,
                        "  {} {} {} {} ({}): {} → {}",
                        e.id,
                        e.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        e.feature,
                        e.repository_id,
                        e.category,
                        e.from,
                        e.to
                    );
                }
            }
        }
    }
    out
}

/// Give `replay` what `records` need from the database: configuration snapshots (an unknown
/// feature or version: not kept) and, for a determinism check, the policies (built in, or
/// the stored bytes compiled once per sha256).
pub async fn resolve_from_store(
    store: &Store,
    replay: &mut Replay,
    records: &[DecisionRecord],
) -> Result<(), ReplayError> {
    let missing = replay.missing(records);
    for (feature, version) in missing.configs {
        let config = match store.config_at_version(&feature, version).await {
            Ok(c) => c,
            Err(StoreError::UnknownFeature(_)) => None,
            Err(e) => return Err(e.into()),
        };
        replay.add_config(&feature, version, config);
    }
    for sha in missing.policies {
        let policy = match builtin_policy(&sha) {
            Some(p) => p,
            None => match store.policy_bytes(&sha).await? {
                Some(bytes) => compile_policy(&bytes, &format!("policy {}", short(&sha))),
                None => Err(format!("policy sha256 {} is not in the database", short(&sha))),
            },
        };
        replay.add_policy(&sha, policy);
    }
    Ok(())
}

/// Concurrent readers of a long replay or export: the id range is cut into this many slices
/// read at once (each page by page, at most [`AHEAD`] pages ahead of the evaluation), and
/// evaluated in order.
pub const STREAMS: usize = 3;
/// Pages a slice's reader may read ahead of the evaluation.
pub const AHEAD: usize = 2;

/// The millisecond timestamp of a UUIDv7 (its first 48 bits).
fn id_ms(id: Uuid) -> u64 {
    let b = id.as_bytes();
    u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The smallest UUIDv7 of millisecond `ms` (a boundary between slices).
fn v7_floor(ms: u64) -> Uuid {
    let mut b = [0u8; 16];
    if let Some(t) = ms.to_be_bytes().get(2..) {
        b[..6].copy_from_slice(t);
    }
    b[6] = 0x70;
    Uuid::from_bytes(b)
}

/// Cut the ids of `filter` after `start` into at most [`STREAMS`] consecutive slices,
/// `(after, before)` each, by the time in their UUIDv7 between the first and the newest id
/// matching; one slice when the range is short or `left` fits in two pages.
async fn slices(
    store: &Store,
    filter: &DecisionFilter,
    start: Uuid,
    left: u64,
) -> Result<Vec<(Uuid, Option<Uuid>)>, ReplayError> {
    let whole = vec![(start, filter.before)];
    if left <= 2 * u64::from(PAGE) {
        return Ok(whole);
    }
    let first = DecisionFilter { after: Some(start), limit: 1, ..filter.clone() };
    let newest = DecisionFilter { after: None, limit: 1, ..filter.clone() };
    let (Some(first), Some(newest)) =
        (store.decisions(&first).await?.first().map(|r| r.id), store.decisions(&newest).await?.first().map(|r| r.id))
    else {
        return Ok(whole);
    };
    let (t0, t1) = (id_ms(first), id_ms(newest));
    let streams = STREAMS as u64;
    if newest <= start || t1 < t0 + streams {
        return Ok(whole);
    }
    let bounds: Vec<Uuid> = (1..streams).map(|k| v7_floor(t0 + (t1 - t0) * k / streams)).collect();
    let mut out = Vec::with_capacity(STREAMS);
    let mut after = start;
    for b in bounds {
        out.push((after, Some(b)));
        // the next slice starts at `b` itself (`after` is exclusive)
        after = Uuid::from_u128(b.as_u128().saturating_sub(1));
    }
    out.push((after, filter.before));
    Ok(out)
}

/// Read one slice page by page, oldest first, sending each page (or the error) to `pages`
/// until the slice ends or the receiver is gone.
async fn read_slice(
    store: Store,
    mut filter: DecisionFilter,
    pages: tokio::sync::mpsc::Sender<Result<Vec<DecisionRecord>, StoreError>>,
) {
    filter.limit = PAGE;
    loop {
        let page = store.decisions(&filter).await;
        let next = match &page {
            Ok(p) if p.len() == PAGE as usize => p.last().map(|r| r.id),
            _ => None,
        };
        if pages.send(page).await.is_err() {
            return;
        }
        match next {
            Some(id) => filter.after = Some(id),
            None => return,
        }
    }
}

/// Read the decisions matching `filter` oldest first, in pages of [`PAGE`] (slices of the
/// range read concurrently ahead of the evaluation, [`STREAMS`]), at most `limit` of them,
/// calling `page` with each in order.
async fn for_each_page<F>(
    store: &Store,
    filter: &DecisionFilter,
    limit: Option<u64>,
    mut page: F,
) -> Result<u64, ReplayError>
where
    F: AsyncPage,
{
    let mut left = limit.unwrap_or(u64::MAX);
    if left == 0 {
        return Ok(0);
    }
    let start = filter.after.unwrap_or(Uuid::nil());
    let mut readers = Vec::new();
    for (after, before) in slices(store, filter, start, left).await? {
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        let f = DecisionFilter { after: Some(after), before, ..filter.clone() };
        tokio::spawn(read_slice(store.clone(), f, tx));
        readers.push(rx);
    }
    let mut total = 0u64;
    for mut rx in readers {
        while let Some(records) = rx.recv().await {
            let mut records = records?;
            records.truncate(usize::try_from(left).unwrap_or(usize::MAX));
            left -= records.len() as u64;
            total += records.len() as u64;
            if !records.is_empty() {
                page.page(records).await?;
            }
            if left == 0 {
                return Ok(total);
            }
        }
    }
    Ok(total)
}

/// A consumer of pages of records (an async closure, spelled as a trait).
trait AsyncPage {
    async fn page(&mut self, records: Vec<DecisionRecord>) -> Result<(), ReplayError>;
}

struct ReplayPages<'a, P: FnMut(u64)> {
    store: &'a Store,
    replay: &'a mut Replay,
    progress: P,
}

impl<P: FnMut(u64)> AsyncPage for ReplayPages<'_, P> {
    async fn page(&mut self, records: Vec<DecisionRecord>) -> Result<(), ReplayError> {
        resolve_from_store(self.store, self.replay, &records).await?;
        self.replay.replay(&records);
        (self.progress)(records.len() as u64);
        Ok(())
    }
}

/// Replay the decisions of the database matching `filter` (its `before`/`after`/`limit` are
/// replaced), oldest first, at most `limit`; `progress` is called with the number of
/// decisions of each page done.
pub async fn replay_store(
    store: &Store,
    filter: &DecisionFilter,
    limit: Option<u64>,
    replay: &mut Replay,
    progress: impl FnMut(u64),
) -> Result<(), ReplayError> {
    let mut filter = filter.clone();
    filter.after = None;
    for_each_page(store, &filter, limit, ReplayPages { store, replay, progress }).await?;
    Ok(())
}

/// Whether `record` matches `filter` as the store reads it: feature, repository id, time
/// range, rule (or eligibility reason), and the `before`/`after` cursors (`limit` aside).
pub fn matches(filter: &DecisionFilter, record: &DecisionRecord) -> bool {
    let rule = |rule: &String| match record.kind {
        DecisionKind::Route => record.rule.as_ref() == Some(rule),
        DecisionKind::Eligibility => &record.reason == rule,
    };
    filter.feature.as_ref().is_none_or(|f| *f == record.feature)
        && filter.repository_id.as_ref().is_none_or(|r| *r == record.repository_id)
        && filter.since.is_none_or(|t| record.time >= t)
        && filter.until.is_none_or(|t| record.time < t)
        && filter.rule.as_ref().is_none_or(rule)
        && filter.before.is_none_or(|id| record.id < id)
        && filter.after.is_none_or(|id| record.id > id)
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportLine {
    /// The header, with its version.
    Header(u64),
    /// A configuration snapshot.
    Config(Box<StoredConfig>),
    /// A decision.
    Decision(Box<DecisionRecord>),
}

/// Read one line of an export (`number` for errors).
pub fn parse_export_line(line: &str, number: usize) -> Result<ExportLine, ReplayError> {
    let bad = |message: String| ReplayError::Export { line: number, message };
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    let object = value.as_object().ok_or_else(|| bad("not a JSON object".to_owned()))?;
    if let Some(d) = object.get("decision") {
        let record: DecisionRecord =
            serde_json::from_value(d.clone()).map_err(|e| bad(format!("`decision` is not a decision record: {e}")))?;
        return Ok(ExportLine::Decision(Box::new(record)));
    }
    if let Some(c) = object.get("config") {
        let config = StoredConfig::from_json(c).map_err(|e| bad(format!("`config`: {e}")))?;
        return Ok(ExportLine::Config(Box::new(config)));
    }
    if object.get("format").and_then(|f| f.as_str()) == Some(EXPORT_FORMAT) {
        let version = object.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != EXPORT_VERSION {
            return Err(bad(format!("export version `{version}` is not supported: allowed {EXPORT_VERSION}")));
        }
        return Ok(ExportLine::Header(version));
    }
    Err(bad("expected a `decision`, `config` or header line".to_owned()))
}

/// Replay an export (read from `input`, named `path` in errors), the decisions that match
/// `filter` ([`matches`]; none: all), at most `limit` of them:
/// configurations from the file, policies (determinism check) built in or from `library`
/// (components by sha256, [`policies_in_dir`]).
pub fn replay_export(
    input: impl BufRead,
    path: &Path,
    library: &HashMap<String, Vec<u8>>,
    filter: Option<&DecisionFilter>,
    limit: Option<u64>,
    replay: &mut Replay,
    mut progress: impl FnMut(u64),
) -> Result<(), ReplayError> {
    let mut pending: Vec<DecisionRecord> = Vec::new();
    let mut left = limit.unwrap_or(u64::MAX);
    let mut flush = |replay: &mut Replay, pending: &mut Vec<DecisionRecord>| {
        let missing = replay.missing(pending);
        for (feature, version) in missing.configs {
            replay.add_config(&feature, version, None);
        }
        for sha in missing.policies {
            let policy = builtin_policy(&sha).unwrap_or_else(|| match library.get(&sha) {
                Some(bytes) => compile_policy(bytes, &format!("policy {}", short(&sha))),
                None => Err(format!("policy sha256 {} is not in the policy directory", short(&sha))),
            });
            replay.add_policy(&sha, policy);
        }
        replay.replay(pending);
        progress(pending.len() as u64);
        pending.clear();
    };
    let mut header = false;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| ReplayError::Io { action: "read", path: path.to_owned(), source })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = parse_export_line(&line, i + 1);
        if !header {
            match parsed {
                Ok(ExportLine::Header(_)) => {
                    header = true;
                    continue;
                }
                Err(e) if line.contains("\"format\"") => return Err(e),
                _ => {
                    return Err(ReplayError::Export {
                        line: i + 1,
                        message: format!("the first line must be the header {{\"format\":\"{EXPORT_FORMAT}\",…}}"),
                    })
                }
            }
        }
        match parsed? {
            // exports concatenated (`cat a.jsonl b.jsonl`) repeat the header
            ExportLine::Header(_) => {}
            ExportLine::Config(c) => {
                let (feature, version) = (c.config.feature_name.clone(), c.version);
                replay.add_config(&feature, version, Some(*c));
            }
            ExportLine::Decision(d) => {
                if filter.is_some_and(|f| !matches(f, &d)) {
                    continue;
                }
                if left == 0 {
                    break;
                }
                left -= 1;
                pending.push(*d);
                if pending.len() >= PAGE as usize {
                    flush(replay, &mut pending);
                }
            }
        }
    }
    if !header {
        return Err(ReplayError::Export { line: 1, message: "the file is empty: no export header".to_owned() });
    }
    flush(replay, &mut pending);
    Ok(())
}

/// Writes an export: the header, then each configuration before the first decision that
/// needs it.
#[derive(Debug)]
pub struct ExportWriter<W: Write> {
    out: W,
    written: HashSet<(String, i64)>,
    /// Decisions written.
    pub decisions: u64,
    /// Configuration snapshots written.
    pub configs: u64,
}

impl<W: Write> ExportWriter<W> {
    /// A writer that has written the header line.
    pub fn new(mut out: W) -> std::io::Result<ExportWriter<W>> {
        writeln!(out, "{}", serde_json::json!({"format": EXPORT_FORMAT, "version": EXPORT_VERSION}))?;
        Ok(ExportWriter { out, written: HashSet::new(), decisions: 0, configs: 0 })
    }

    /// Whether the configuration of `(feature, version)` was written or found missing.
    pub fn has_config(&self, feature: &str, version: i64) -> bool {
        self.written.contains(&(feature.to_owned(), version))
    }

    /// Write `record`, after the snapshot of its configuration (`config`, looked up by the
    /// caller) unless written already; `None` when it is not kept (no line).
    pub fn write(&mut self, record: &DecisionRecord, config: Option<&StoredConfig>) -> std::io::Result<()> {
        if self.written.insert((record.feature.clone(), record.config_version)) {
            if let Some(c) = config {
                writeln!(self.out, "{}", serde_json::json!({"config": snapshot_json(c)}))?;
                self.configs += 1;
            }
        }
        let line = serde_json::to_string(&serde_json::json!({"decision": record}))?;
        writeln!(self.out, "{line}")?;
        self.decisions += 1;
        Ok(())
    }

    /// Flush and give the output back.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

struct ExportPages<'a, W: Write, P: FnMut(u64)> {
    store: &'a Store,
    writer: &'a mut ExportWriter<W>,
    path: &'a Path,
    progress: P,
}

impl<W: Write, P: FnMut(u64)> AsyncPage for ExportPages<'_, W, P> {
    async fn page(&mut self, records: Vec<DecisionRecord>) -> Result<(), ReplayError> {
        let mut configs: HashMap<(String, i64), Option<StoredConfig>> = HashMap::new();
        for r in &records {
            let key = (r.feature.clone(), r.config_version);
            if self.writer.has_config(&key.0, key.1) || configs.contains_key(&key) {
                continue;
            }
            let config = match self.store.config_at_version(&key.0, key.1).await {
                Ok(c) => c,
                Err(StoreError::UnknownFeature(_)) => None,
                Err(e) => return Err(e.into()),
            };
            configs.insert(key, config);
        }
        let io = |source| ReplayError::Io { action: "write", path: self.path.to_owned(), source };
        for r in &records {
            let config = configs.get(&(r.feature.clone(), r.config_version)).and_then(Option::as_ref);
            self.writer.write(r, config).map_err(io)?;
        }
        (self.progress)(records.len() as u64);
        Ok(())
    }
}

/// Export the decisions of the database matching `filter` (oldest first, at most `limit`)
/// to `writer` (its output named `path` in errors).
pub async fn export_store<W: Write>(
    store: &Store,
    filter: &DecisionFilter,
    limit: Option<u64>,
    writer: &mut ExportWriter<W>,
    path: &Path,
    progress: impl FnMut(u64),
) -> Result<(), ReplayError> {
    let mut filter = filter.clone();
    filter.after = None;
    for_each_page(store, &filter, limit, ExportPages { store, writer, path, progress }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CallError;
    use rollout_policy as p;

    fn stored(feature: &str, version: i64, percentage: u8) -> StoredConfig {
        let t = Utc::now();
        StoredConfig {
            id: Uuid::nil(),
            config: p::Config {
                feature_name: feature.to_owned(),
                rollout_percentage: percentage,
                is_active: true,
                ..p::Config::default()
            },
            metadata: serde_json::json!({}),
            state_changed_at: t,
            created_at: t,
            updated_at: t,
            version,
            rolled_back: false,
        }
    }

    /// A record of what the native rules decide for `repo` under `config` (a route when
    /// `job` is given).
    fn record(
        n: u128,
        feature: &str,
        version: i64,
        config: &p::Config,
        repo: &str,
        job: Option<serde_json::Value>,
    ) -> DecisionRecord {
        let e = p::Evaluator::new(config.clone()).unwrap();
        let repository = p::Repository::parse(repo, Some(p::Category::Small));
        let (kind, processor, rule, eligibility) = match &job {
            Some(j) => {
                let d = e.route(&repository, &crate::cases::job_from_json(Some(j)).unwrap());
                (
                    DecisionKind::Route,
                    Some(d.processor.as_str().to_owned()),
                    Some(d.rule.as_str().to_owned()),
                    d.eligibility,
                )
            }
            None => (DecisionKind::Eligibility, None, None, e.is_eligible(&repository)),
        };
        DecisionRecord {
            id: Uuid::from_u128(n),
            time: Utc::now(),
            feature: feature.to_owned(),
            kind,
            config_version: version,
            overrides: None,
            policy_sha256: "native".to_owned(),
            repository_id: repo.to_owned(),
            masked: false,
            category: Some("small".to_owned()),
            job,
            processor,
            rule,
            eligible: eligibility.eligible,
            reason: eligibility.reason.as_str().to_owned(),
            bucket: eligibility.bucket,
            fallback: None,
            duration_us: 3,
        }
    }

    fn repos(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("owner-{i}/repo-{}", i * 7)).collect()
    }

    fn corpus(feature: &str, version: i64, config: &p::Config, n: usize) -> Vec<DecisionRecord> {
        repos(n)
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let job = (i % 2 == 0)
                    .then(|| serde_json::json!({"time_range_days": (i % 40) as u32, "trigger_source": "manual"}));
                record(i as u128 + 1, feature, version, config, r, job)
            })
            .collect()
    }

    fn run(replay: &mut Replay, configs: &[StoredConfig], records: &[DecisionRecord]) -> ReplayReport {
        let missing = replay.missing(records);
        for (f, v) in missing.configs {
            let c = configs.iter().find(|c| c.config.feature_name == f && c.version == v).cloned();
            replay.add_config(&f, v, c);
        }
        for sha in missing.policies {
            let p = builtin_policy(&sha).unwrap_or_else(|| Err(format!("policy sha256 {sha} is unknown")));
            replay.add_policy(&sha, p);
        }
        replay.replay(records);
        replay.report()
    }

    #[test]
    fn records_made_by_the_native_rules_replay_identically_under_their_own_version() {
        let v3 = stored("f", 3, 30);
        let v4 = stored("f", 4, 80);
        let mut records = corpus("f", 3, &v3.config, 300);
        records.extend(corpus("f", 4, &v4.config, 300).into_iter().map(|mut r| {
            r.id = Uuid::from_u128(r.id.as_u128() + 1000);
            r
        }));
        let report = run(&mut Replay::determinism(), &[v3, v4], &records);
        assert_eq!(report.read, 600);
        assert_eq!(report.replayed, 600);
        assert_eq!(report.identical, 600, "{report:?}");
        assert!(!report.failed());
        // the two versions decide differently for some repositories: the version matters
        let v3_under_v4 = corpus("f", 4, &stored("f", 3, 30).config, 300);
        let report = run(&mut Replay::determinism(), &[stored("f", 4, 80)], &v3_under_v4);
        assert!(report.changed > 0 && report.failed(), "{report:?}");
    }

    #[test]
    fn a_tampered_record_is_a_difference_naming_its_id_and_field() {
        let v = stored("f", 1, 50);
        let mut records = corpus("f", 1, &v.config, 50);
        let target = records.iter().position(|r| r.kind == DecisionKind::Eligibility).unwrap();
        records[target].bucket = (records[target].bucket + 1) % 100;
        let report = run(&mut Replay::determinism(), &[v], &records);
        assert_eq!(report.changed, 1);
        assert_eq!(report.identical, 49);
        assert_eq!(report.differences.len(), 1);
        let d = &report.differences[0];
        assert_eq!((d.id, d.field), (records[target].id, "bucket"));
        assert_eq!(d.logged, records[target].bucket.to_string());
        let text = render_text(&report);
        assert!(text.contains(&records[target].id.to_string()) && text.contains("failures 1"), "{text}");
    }

    #[test]
    fn identical_agrees_with_compare() {
        let v = stored("f", 1, 50);
        let records = corpus("f", 1, &v.config, 4);
        for r in &records {
            let mut a = match r.kind {
                DecisionKind::Route => Answer {
                    processor: Some(p::Processor::parse(r.processor.as_deref().unwrap()).unwrap().as_str()),
                    rule: Some(p::RouteRule::parse(r.rule.as_deref().unwrap()).unwrap().as_str()),
                    eligible: r.eligible,
                    reason: p::EligibilityReason::parse(&r.reason).unwrap().as_str(),
                    bucket: r.bucket,
                    error: None,
                },
                DecisionKind::Eligibility => Answer {
                    processor: None,
                    rule: None,
                    eligible: r.eligible,
                    reason: p::EligibilityReason::parse(&r.reason).unwrap().as_str(),
                    bucket: r.bucket,
                    error: None,
                },
            };
            assert!(identical(r, &a) && compare(r, &a).is_empty());
            a.bucket = a.bucket.wrapping_add(1);
            assert!(!identical(r, &a) && compare(r, &a).len() == 1);
            a.bucket = r.bucket;
            a.error = Some("trap".into());
            assert!(!identical(r, &a));
            assert_eq!(compare(r, &a)[0].field, "fallback");
            a.error = None;
            a.eligible = !a.eligible;
            assert!(!identical(r, &a) && compare(r, &a)[0].field == "eligible");
        }
    }

    #[test]
    fn at_most_ten_differences_are_kept_oldest_first() {
        let v = stored("f", 1, 50);
        let mut records = corpus("f", 1, &v.config, 40);
        for r in &mut records {
            r.reason = "tampered".into();
        }
        let report = run(&mut Replay::determinism(), &[v], &records);
        assert_eq!(report.changed, 40);
        assert_eq!(report.differences.len(), SHOWN);
        let ids: Vec<Uuid> = report.differences.iter().map(|d| d.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(ids[0], records[0].id);
    }

    #[test]
    fn masked_none_unknown_versions_and_policies_are_counted_apart_with_their_reason() {
        let v = stored("f", 1, 50);
        let mut records = corpus("f", 1, &v.config, 10);
        records[0].masked = true;
        records[1].policy_sha256 = "none".into();
        records[2].config_version = 99;
        records[3].policy_sha256 = "ab".repeat(32);
        records[4].fallback = Some("policy trapped".into());
        records[5].category = Some("gigantic".into());
        let report = run(&mut Replay::determinism(), &[v], &records);
        assert_eq!(report.read, 10);
        assert_eq!(report.masked, 1);
        assert_eq!(report.skipped, 4, "{report:?}");
        assert_eq!(report.fallbacks, 1);
        assert_eq!(report.fallbacks_redecided, 1);
        assert_eq!(report.identical, 4);
        assert_eq!(report.read, report.replayed + report.masked + report.skipped);
        let reasons: Vec<&str> = report.skipped_reasons.iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("version 99 of `f`")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("`none`")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("abababababab")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("gigantic")), "{reasons:?}");
    }

    #[test]
    fn overrides_logged_with_a_decision_are_applied() {
        let v = stored("f", 1, 0);
        let with = p::Config { rollout_percentage: 100, ..v.config.clone() };
        let mut records = corpus("f", 1, &with, 20);
        let overrides =
            serde_json::to_value(EnvOverrides { rollout_percentage: Some(100), ..EnvOverrides::default() }).unwrap();
        for r in &mut records {
            r.overrides = Some(overrides.clone());
        }
        let report = run(&mut Replay::determinism(), std::slice::from_ref(&v), &records);
        assert_eq!(report.identical, 20, "{report:?}");
        for r in &mut records {
            r.overrides = None;
        }
        let report = run(&mut Replay::determinism(), &[v], &records);
        assert!(report.changed > 0, "without the overrides 0 % decides otherwise");
    }

    /// A policy that answers every batch with an error, and the native rules otherwise.
    struct Failing;

    impl Policy for Failing {
        fn version(&self) -> Option<crate::engine::PolicyVersion> {
            None
        }
        fn is_eligible(&self, _: &Arc<ConfigSnapshot>, _: &Repository) -> crate::engine::CallResult<Eligibility> {
            Err(CallError::Timeout(10))
        }
        fn is_eligible_batch(
            &self,
            _: &Arc<ConfigSnapshot>,
            rs: &[Repository],
        ) -> crate::engine::CallResult<Vec<Eligibility>> {
            if rs.iter().any(|r| r.id.to_string().contains("repo-0")) {
                return Err(CallError::Trap("boom".into()));
            }
            Ok(rs
                .iter()
                .map(|_| Eligibility { eligible: true, reason: p::EligibilityReason::Targeted, bucket: 1 })
                .collect())
        }
        fn route(&self, _: &Arc<ConfigSnapshot>, _: &Repository, _: &Job) -> crate::engine::CallResult<RouteDecision> {
            Err(CallError::Timeout(10))
        }
        fn route_batch(
            &self,
            _: &Arc<ConfigSnapshot>,
            _: &[(Repository, Job)],
        ) -> crate::engine::CallResult<Vec<RouteDecision>> {
            Err(CallError::Timeout(10))
        }
        fn categorize(&self, _: &p::RepositoryStats) -> crate::engine::CallResult<p::Categorization> {
            Err(CallError::Timeout(10))
        }
        fn evaluate_health(&self, _: &p::Config, _: &[p::ProcessorWindow]) -> crate::engine::CallResult<p::Health> {
            Err(CallError::Timeout(10))
        }
    }

    #[test]
    fn what_if_groups_changes_by_rule_and_category_and_finds_the_failing_decisions() {
        let v = stored("f", 1, 50);
        let records = corpus("f", 1, &v.config, 40);
        let mut replay = Replay::what_if("failing".into(), Arc::new(Failing));
        let report = run(&mut replay, &[v], &records);
        assert_eq!(report.replayed, 40);
        assert!(report.missing_is_consistent());
        // every route answers the fallback; eligibility answers whitelisted except repo-0s
        let routes = records.iter().filter(|r| r.kind == DecisionKind::Route).count() as u64;
        let trapping = records
            .iter()
            .filter(|r| r.kind == DecisionKind::Eligibility && r.repository_id.contains("repo-0"))
            .count() as u64;
        assert_eq!(report.policy_errors, routes + trapping, "{report:?}");
        assert!(
            report.groups.iter().any(|g| g.kind == DecisionKind::Route && g.to == "policy_error (inngest)"),
            "{:?}",
            report.groups
        );
        assert!(report.groups.iter().any(|g| g.kind == DecisionKind::Eligibility && g.to == "targeted (eligible)"));
        assert_eq!(
            report.by_category,
            vec![CategoryChanges { category: "small".into(), compared: 40, changed: report.changed }]
        );
        assert_eq!(report.examples.len(), SHOWN);
        assert!(!report.failed(), "a what-if never fails");
        let text = render_text(&report);
        assert!(text.contains("what-if") && text.contains("→"), "{text}");
    }

    impl ReplayReport {
        fn missing_is_consistent(&self) -> bool {
            self.replayed == self.identical + self.changed + self.fallbacks
        }
    }

    #[test]
    fn slice_boundaries_sort_between_the_ids_of_their_milliseconds() {
        for _ in 0..100 {
            let id = Uuid::now_v7();
            let ms = id_ms(id);
            assert!(v7_floor(ms) < id, "{id}");
            assert!(v7_floor(ms + 1) > id, "{id}");
            assert_eq!(id_ms(v7_floor(ms)), ms);
        }
    }

    #[test]
    fn an_export_round_trips_through_the_reader() {
        let v = stored("f", 2, 50);
        let records = corpus("f", 2, &v.config, 30);
        let mut w = ExportWriter::new(Vec::new()).unwrap();
        for r in &records {
            w.write(r, Some(&v)).unwrap();
        }
        assert_eq!((w.decisions, w.configs), (30, 1));
        let bytes = w.finish().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"format":"rollout-decisions","version":1}"#);
        assert!(lines[1].starts_with(r#"{"config":"#), "{}", lines[1]);
        assert_eq!(parse_export_line(lines[2], 3).unwrap(), ExportLine::Decision(Box::new(records[0].clone())));
        let mut replay = Replay::determinism();
        replay_export(&bytes[..], Path::new("x.jsonl"), &HashMap::new(), None, None, &mut replay, |_| {}).unwrap();
        let report = replay.report();
        assert_eq!((report.read, report.identical), (30, 30), "{report:?}");
        let mut limited = Replay::determinism();
        replay_export(&bytes[..], Path::new("x.jsonl"), &HashMap::new(), None, Some(7), &mut limited, |_| {}).unwrap();
        assert_eq!(limited.report().read, 7);
    }

    #[test]
    fn a_bad_export_names_the_line() {
        let mut replay = Replay::determinism();
        let text = "{\"format\":\"rollout-decisions\",\"version\":1}\n{\"decision\":{\"id\":3}}\n";
        let e = replay_export(text.as_bytes(), Path::new("x"), &HashMap::new(), None, None, &mut replay, |_| {})
            .unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = replay_export(
            "{\"decision\":{}}\n".as_bytes(),
            Path::new("x"),
            &HashMap::new(),
            None,
            None,
            &mut replay,
            |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
        let e = parse_export_line("{\"format\":\"rollout-decisions\",\"version\":2}", 1).unwrap_err();
        assert!(e.to_string().contains("version `2`"), "{e}");
    }
}
