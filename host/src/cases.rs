//! Offline case files (SPEC §5): parsing, evaluation on a backend, comparison.
//!
//! One format serves the shared vectors in `tests/vectors/` and policy authors' own cases.
//! Inputs are read by hand from JSON so every error names the field it is about
//! (`job.trigger_source`, `config.rollout_percentage`, …) and the allowed values.
//!
//! Project extension: `"expect": {"error": "<substring>"}` means evaluation must fail with
//! an error whose message contains the substring.

use crate::engine::ConfigSnapshot;
use crate::runtime::{CallError, PolicyInstance};
use rollout_policy as p;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Why a case could not be evaluated: bad input or a policy failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CaseError {
    /// The full message, naming the field.
    pub message: String,
}

impl CaseError {
    fn field(path: &str, msg: impl std::fmt::Display) -> CaseError {
        CaseError { message: format!("`{path}`: {msg}") }
    }
}

/// Why a case file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a case file.
    #[error("`{path}` is not a case file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The operation a case exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `is_eligible`.
    IsEligible,
    /// `route`.
    Route,
    /// `categorize`.
    Categorize,
    /// `evaluate_health`.
    EvaluateHealth,
}

impl Op {
    fn parse(s: &str) -> Result<Op, CaseError> {
        match s {
            "is_eligible" => Ok(Op::IsEligible),
            "route" => Ok(Op::Route),
            "categorize" => Ok(Op::Categorize),
            "evaluate_health" => Ok(Op::EvaluateHealth),
            _ => Err(CaseError::field(
                "op",
                format!("unknown op `{s}`: allowed values are is_eligible, route, categorize, evaluate_health"),
            )),
        }
    }

    /// The fields a decision of this op has (what `expect` may name, besides `error`).
    pub fn output_fields(self) -> &'static [&'static str] {
        match self {
            Op::IsEligible => &["eligible", "reason", "bucket"],
            Op::Route => &["processor", "rule", "eligible", "reason", "bucket"],
            Op::Categorize => &["category", "priority_level", "is_test_repository", "monthly_activity_score"],
            Op::EvaluateHealth => &["level", "action", "error_rate", "total_jobs", "reason"],
        }
    }
}

/// One case, as written in the file.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// Its operation.
    pub op: Op,
    /// The whole case object (inputs are read from it on evaluation).
    raw: Map<String, Value>,
    /// The expected output fields.
    pub expect: Map<String, Value>,
}

/// The inputs of a case, checked and converted.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// `is_eligible(config, repository)`.
    IsEligible(p::Config, p::Repository),
    /// `route(config, repository, job)`.
    Route(p::Config, p::Repository, p::Job),
    /// `categorize(stats)`.
    Categorize(p::RepositoryStats),
    /// `evaluate_health(config, windows)`.
    EvaluateHealth(p::Config, Vec<p::ProcessorWindow>),
}

const CASE_FIELDS: &[&str] = &["name", "op", "config", "repository", "job", "stats", "windows", "expect"];
const CONFIG_FIELDS: &[&str] = &[
    "id",
    "feature_name",
    "rollout_percentage",
    "is_active",
    "target_repositories",
    "excluded_repositories",
    "rollout_strategy",
    "max_error_rate",
    "monitoring_window_hours",
    "auto_rollback_enabled",
    "emergency_stop",
    "metadata",
    "created_at",
    "updated_at",
    "min_jobs_for_rollback",
];

/// Read a JSON object's fields, refusing unknown ones, with errors naming the path.
struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn new(path: &str, v: &'a Value, allowed: &[&str]) -> Result<Fields<'a>, CaseError> {
        let map = v.as_object().ok_or_else(|| CaseError::field(path, "must be an object"))?;
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(CaseError::field(
                    &join(path, k),
                    format!("unknown field: allowed fields are {}", allowed.join(", ")),
                ));
            }
        }
        Ok(Fields { path: path.to_owned(), map })
    }

    fn get(&self, k: &str) -> Option<&'a Value> {
        self.map.get(k).filter(|v| !v.is_null())
    }

    fn p(&self, k: &str) -> String {
        join(&self.path, k)
    }

    fn bool(&self, k: &str, default: bool) -> Result<bool, CaseError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| CaseError::field(&self.p(k), "must be true or false")),
        }
    }

    fn uint(&self, k: &str, max: u64) -> Result<Option<u64>, CaseError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(CaseError::field(&self.p(k), format!("`{v}` is not allowed: a whole number from 0 to {max}"))),
            },
        }
    }

    fn u32(&self, k: &str) -> Result<Option<u32>, CaseError> {
        Ok(self.uint(k, u64::from(u32::MAX))?.map(|n| n as u32))
    }

    fn u64(&self, k: &str) -> Result<Option<u64>, CaseError> {
        self.uint(k, u64::MAX)
    }

    fn f64(&self, k: &str) -> Result<Option<f64>, CaseError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                v.as_f64().map(Some).ok_or_else(|| CaseError::field(&self.p(k), format!("`{v}` is not a number")))
            }
        }
    }

    fn str(&self, k: &str) -> Result<Option<&'a str>, CaseError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                v.as_str().map(Some).ok_or_else(|| CaseError::field(&self.p(k), format!("`{v}` is not a string")))
            }
        }
    }

    fn named<T>(&self, k: &str, parse: fn(&str) -> Result<T, p::UnknownName>) -> Result<Option<T>, CaseError> {
        match self.str(k)? {
            None => Ok(None),
            Some(s) => parse(s).map(Some).map_err(|e| CaseError::field(&self.p(k), e)),
        }
    }

    fn strings(&self, k: &str) -> Result<Vec<String>, CaseError> {
        match self.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| CaseError::field(&format!("{}[{i}]", self.p(k)), "must be a string"))
                })
                .collect(),
            Some(_) => Err(CaseError::field(&self.p(k), "must be a list of strings")),
        }
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

/// Read a configuration object: omitted fields take the seed's defaults, except
/// `is_active`, which defaults to `is_active_default` (true in case files).
pub fn config_from_json(v: Option<&Value>, is_active_default: bool) -> Result<p::Config, CaseError> {
    let empty = Value::Object(Map::new());
    let f = Fields::new("config", v.unwrap_or(&empty), CONFIG_FIELDS)?;
    let d = p::Config::default();
    let config = p::Config {
        feature_name: f.str("feature_name")?.map_or(d.feature_name, str::to_owned),
        rollout_percentage: match f.uint("rollout_percentage", 100)? {
            Some(n) => n as u8,
            None => d.rollout_percentage,
        },
        is_active: f.bool("is_active", is_active_default)?,
        target_repositories: f.strings("target_repositories")?,
        excluded_repositories: f.strings("excluded_repositories")?,
        rollout_strategy: f.named("rollout_strategy", p::Strategy::parse)?.unwrap_or(d.rollout_strategy),
        max_error_rate: f.f64("max_error_rate")?.unwrap_or(d.max_error_rate),
        monitoring_window_hours: f.u32("monitoring_window_hours")?.unwrap_or(d.monitoring_window_hours),
        auto_rollback_enabled: f.bool("auto_rollback_enabled", d.auto_rollback_enabled)?,
        emergency_stop: f.bool("emergency_stop", d.emergency_stop)?,
        min_jobs_for_rollback: f.u32("min_jobs_for_rollback")?.unwrap_or(d.min_jobs_for_rollback),
    };
    config.validate().map_err(|e| CaseError::field(&join("config", &e.field), e.message))?;
    Ok(config)
}

/// Read a repository object (`id`, optional `category`).
pub fn repository_from_json(v: Option<&Value>) -> Result<p::Repository, CaseError> {
    let v = v.ok_or_else(|| CaseError::field("repository", "is required for this op"))?;
    let f = Fields::new("repository", v, &["id", "category"])?;
    let id = f.str("id")?.ok_or_else(|| CaseError::field("repository.id", "is required"))?;
    Ok(p::Repository::parse(id, f.named("category", p::Category::parse)?))
}

/// Read a job object; every field is optional.
pub fn job_from_json(v: Option<&Value>) -> Result<p::Job, CaseError> {
    let empty = Value::Object(Map::new());
    let f = Fields::new(
        "job",
        v.unwrap_or(&empty),
        &["job_type", "time_range_days", "pr_numbers", "trigger_source", "max_items"],
    )?;
    let pr_numbers = match f.get("pr_numbers") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_u64().ok_or_else(|| {
                    CaseError::field(&format!("job.pr_numbers[{i}]"), format!("`{v}` is not a PR number"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(CaseError::field("job.pr_numbers", "must be a list of PR numbers")),
    };
    Ok(p::Job {
        job_type: f.str("job_type")?.map(str::to_owned),
        time_range_days: f.u32("time_range_days")?,
        pr_numbers,
        trigger_source: f.named("trigger_source", p::TriggerSource::parse)?,
        max_items: f.u32("max_items")?,
    })
}

fn stats_from_json(v: Option<&Value>) -> Result<p::RepositoryStats, CaseError> {
    let v = v.ok_or_else(|| CaseError::field("stats", "is required for this op"))?;
    let f = Fields::new("stats", v, &["star_count", "contributor_count", "pr_count"])?;
    Ok(p::RepositoryStats {
        star_count: f.u32("star_count")?.unwrap_or(0),
        contributor_count: f.u32("contributor_count")?.unwrap_or(0),
        pr_count: f.u32("pr_count")?.unwrap_or(0),
    })
}

fn windows_from_json(v: Option<&Value>) -> Result<Vec<p::ProcessorWindow>, CaseError> {
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(CaseError::field("windows", "must be a list of processor windows")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let path = format!("windows[{i}]");
            let f = Fields::new(
                &path,
                w,
                &["processor_type", "success_count", "error_count", "total_jobs", "average_processing_time"],
            )?;
            Ok(p::ProcessorWindow {
                processor: f
                    .named("processor_type", p::Processor::parse)?
                    .ok_or_else(|| CaseError::field(&f.p("processor_type"), "is required"))?,
                success_count: f.u64("success_count")?.unwrap_or(0),
                error_count: f.u64("error_count")?.unwrap_or(0),
                total_jobs: f.u64("total_jobs")?.unwrap_or(0),
                average_processing_time: f.f64("average_processing_time")?,
            })
        })
        .collect()
}

impl Case {
    /// Read one case object; its `expect` may be empty only when `require_expect` is false.
    pub fn from_json(v: &Value, require_expect: bool) -> Result<Case, CaseError> {
        let f = Fields::new("", v, CASE_FIELDS)?;
        let name = f.str("name")?.unwrap_or("(unnamed)").to_owned();
        let op = Op::parse(f.str("op")?.ok_or_else(|| CaseError::field("op", "is required"))?)?;
        let expect = match f.get("expect") {
            None => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(CaseError::field("expect", "must be an object")),
        };
        if require_expect && expect.is_empty() {
            return Err(CaseError::field("expect", "is empty: a case must assert at least one output field"));
        }
        for k in expect.keys() {
            if k != "error" && !op.output_fields().contains(&k.as_str()) {
                return Err(CaseError::field(
                    &join("expect", k),
                    format!("not an output of `{op:?}`: allowed fields are error, {}", op.output_fields().join(", ")),
                ));
            }
        }
        let raw = f.map.clone();
        Ok(Case { name, op, raw, expect })
    }

    /// Check and convert the inputs.
    pub fn inputs(&self) -> Result<Inputs, CaseError> {
        let g = |k: &str| self.raw.get(k);
        Ok(match self.op {
            Op::IsEligible => {
                Inputs::IsEligible(config_from_json(g("config"), true)?, repository_from_json(g("repository"))?)
            }
            Op::Route => Inputs::Route(
                config_from_json(g("config"), true)?,
                repository_from_json(g("repository"))?,
                job_from_json(g("job"))?,
            ),
            Op::Categorize => Inputs::Categorize(stats_from_json(g("stats"))?),
            Op::EvaluateHealth => {
                Inputs::EvaluateHealth(config_from_json(g("config"), true)?, windows_from_json(g("windows"))?)
            }
        })
    }
}

/// Read a case file (`{"description", "cases": [...]}`) or a single case object.
pub fn parse_cases(v: &Value, require_expect: bool) -> Result<Vec<Result<Case, CaseError>>, CaseError> {
    let obj = v.as_object().ok_or_else(|| CaseError::field("", "a case file must be a JSON object"))?;
    if obj.contains_key("op") {
        return Ok(vec![Case::from_json(v, require_expect)]);
    }
    let f = Fields::new("", v, &["description", "cases"])?;
    match f.get("cases") {
        Some(Value::Array(items)) => Ok(items.iter().map(|c| Case::from_json(c, require_expect)).collect()),
        _ => Err(CaseError::field("cases", "is required: a list of cases")),
    }
}

/// Something that evaluates case inputs: the native rules or a component instance.
pub trait Backend {
    /// Evaluate `inputs`, giving the decision as a JSON object of output fields.
    fn evaluate(&mut self, inputs: &Inputs) -> Result<Map<String, Value>, CaseError>;
}

fn eligibility_json(e: &p::Eligibility, out: &mut Map<String, Value>) {
    out.insert("eligible".into(), e.eligible.into());
    out.insert("reason".into(), e.reason.as_str().into());
    out.insert("bucket".into(), e.bucket.into());
}

/// The JSON output of a decision.
pub fn route_json(d: &p::RouteDecision) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("processor".into(), d.processor.as_str().into());
    out.insert("rule".into(), d.rule.as_str().into());
    eligibility_json(&d.eligibility, &mut out);
    out
}

/// The JSON output of an eligibility decision.
pub fn eligibility_to_json(e: &p::Eligibility) -> Map<String, Value> {
    let mut out = Map::new();
    eligibility_json(e, &mut out);
    out
}

/// The JSON output of a categorisation.
pub fn categorization_json(c: &p::Categorization) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("category".into(), c.category.as_str().into());
    out.insert("priority_level".into(), c.priority_level.into());
    out.insert("is_test_repository".into(), c.is_test_repository.into());
    out.insert("monthly_activity_score".into(), c.monthly_activity_score.into());
    out
}

/// The JSON output of a health evaluation.
pub fn health_json(h: &p::Health) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("level".into(), h.level.as_str().into());
    out.insert("action".into(), h.action.as_str().into());
    out.insert("error_rate".into(), h.error_rate.into());
    out.insert("total_jobs".into(), h.total_jobs.into());
    out.insert("reason".into(), h.reason.clone().into());
    out
}

/// The reference rules, natively.
#[derive(Debug, Default)]
pub struct NativeBackend;

impl Backend for NativeBackend {
    fn evaluate(&mut self, inputs: &Inputs) -> Result<Map<String, Value>, CaseError> {
        let ev = |c: &p::Config| {
            p::Evaluator::new(c.clone()).map_err(|e| CaseError::field(&join("config", &e.field), e.message))
        };
        Ok(match inputs {
            Inputs::IsEligible(c, r) => eligibility_to_json(&ev(c)?.is_eligible(r)),
            Inputs::Route(c, r, j) => route_json(&ev(c)?.route(r, j)),
            Inputs::Categorize(s) => categorization_json(&p::categorize(s)),
            Inputs::EvaluateHealth(c, w) => health_json(&p::evaluate_health(c, w)),
        })
    }
}

/// A policy component instance. A trapped instance is replaced by a fresh one.
pub struct WasmBackend {
    policy: crate::runtime::CompiledPolicy,
    instance: Option<PolicyInstance>,
}

impl WasmBackend {
    /// Evaluate cases with instances of `policy`.
    pub fn new(policy: crate::runtime::CompiledPolicy) -> WasmBackend {
        WasmBackend { policy, instance: None }
    }
}

fn call_error(e: CallError) -> CaseError {
    match e {
        CallError::Config(c) => CaseError::field(&join("config", &c.field), c.message),
        other => CaseError { message: other.to_string() },
    }
}

impl Backend for WasmBackend {
    fn evaluate(&mut self, inputs: &Inputs) -> Result<Map<String, Value>, CaseError> {
        if self.instance.as_ref().is_none_or(PolicyInstance::is_poisoned) {
            self.instance = Some(self.policy.instantiate(&crate::runtime::Limits::default()).map_err(call_error)?);
        }
        let Some(inst) = self.instance.as_mut() else {
            return Err(CaseError { message: "no policy instance".into() });
        };
        Ok(match inputs {
            Inputs::IsEligible(c, r) => {
                eligibility_to_json(&inst.is_eligible(&ConfigSnapshot::new(c.clone()), r).map_err(call_error)?)
            }
            Inputs::Route(c, r, j) => {
                route_json(&inst.route(&ConfigSnapshot::new(c.clone()), r, j).map_err(call_error)?)
            }
            Inputs::Categorize(s) => categorization_json(&inst.categorize(s).map_err(call_error)?),
            Inputs::EvaluateHealth(c, w) => health_json(&inst.evaluate_health(c, w).map_err(call_error)?),
        })
    }
}

/// The result of evaluating one case.
pub type Outcome = Result<Map<String, Value>, CaseError>;

/// Evaluate a case on `backend`: input errors and policy errors both become `Err`.
pub fn evaluate(case: &Case, backend: &mut dyn Backend) -> Outcome {
    let inputs = case.inputs()?;
    backend.evaluate(&inputs)
}

/// Compare an outcome with a case's `expect`; `Err` lists every mismatch.
pub fn check(case: &Case, outcome: &Outcome) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    match (case.expect.get("error"), outcome) {
        (Some(want), Err(e)) => {
            let want = want.as_str().unwrap_or_default();
            if !e.message.contains(want) {
                problems.push(format!("error: expected a message containing `{want}`, got `{}`", e.message));
            }
        }
        (Some(want), Ok(actual)) => {
            problems.push(format!("error: expected an error containing {want}, got {}", Value::Object(actual.clone())))
        }
        (None, Err(e)) => problems.push(format!("failed: {}", e.message)),
        (None, Ok(actual)) => {
            for (k, want) in &case.expect {
                let got = actual.get(k).unwrap_or(&Value::Null);
                let same = match (k.as_str(), want.as_f64(), got.as_f64()) {
                    ("error_rate", Some(a), Some(b)) => (a - b).abs() <= 1e-9,
                    _ => want == got,
                };
                if !same {
                    problems.push(format!("{k}: expected {want}, got {got}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Every `*.json` case file under `paths` (files as given, directories walked in sorted
/// order; files named `index.json` are corpus indexes, not case files, and are skipped).
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FileError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), FileError> {
        let rd = std::fs::read_dir(dir).map_err(|source| FileError::Io { path: dir.to_owned(), source })?;
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "json") && p.file_name().is_some_and(|n| n != "index.json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Read the cases of one file.
pub fn read_file(path: &Path, require_expect: bool) -> Result<Vec<Result<Case, CaseError>>, FileError> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|source| FileError::Io { path: path.to_owned(), source })?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|source| FileError::Io { path: path.to_owned(), source })?
    };
    let v: Value =
        serde_json::from_str(&text).map_err(|e| FileError::Format { path: path.to_owned(), message: e.to_string() })?;
    parse_cases(&v, require_expect).map_err(|e| FileError::Format { path: path.to_owned(), message: e.message })
}

/// A failed case: where, which, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The file.
    pub file: PathBuf,
    /// The case name (or its index when it could not be read).
    pub case: String,
    /// Each mismatch or error.
    pub problems: Vec<String>,
}

/// The result of running case files.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed or could not be read.
    pub failures: Vec<Failure>,
    /// Files that could not be read at all.
    pub unreadable: Vec<String>,
}

impl Report {
    /// Whether everything passed and every file was read.
    pub fn ok(&self) -> bool {
        self.failures.is_empty() && self.unreadable.is_empty()
    }
}

/// Run every case of every file under `paths` on `backend`.
pub fn run(paths: &[PathBuf], backend: &mut dyn Backend) -> Report {
    let mut report = Report::default();
    let files = match collect_files(paths) {
        Ok(f) => f,
        Err(e) => {
            report.unreadable.push(e.to_string());
            return report;
        }
    };
    if files.is_empty() {
        report.unreadable.push(format!(
            "no case files (*.json) under {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    for file in files {
        let cases = match read_file(&file, true) {
            Ok(c) => c,
            Err(e) => {
                report.unreadable.push(e.to_string());
                continue;
            }
        };
        for (i, case) in cases.into_iter().enumerate() {
            let result = case.map_err(|e| (format!("#{i}"), vec![e.message])).and_then(|case| {
                let outcome = evaluate(&case, backend);
                check(&case, &outcome).map_err(|p| (case.name.clone(), p))
            });
            match result {
                Ok(()) => report.passed += 1,
                Err((case, problems)) => report.failures.push(Failure { file: file.clone(), case, problems }),
            }
        }
    }
    report
}
