//! Offline case files (SPEC §5): parsing, evaluation on a backend, comparison.
//!
//! One format serves the shared vectors in `tests/vectors/` and policy authors' own cases.
//! Inputs decode into the same typed inputs as the HTTP API ([`crate::input`]: one job
//! decoder, validated values, unknown fields refused), so every error names the field it is
//! about (`job.trigger_source`, `config.rollout_percentage`, …) and the allowed values.
//! Cases run on any [`Policy`]: a component ([`crate::runtime::Sandbox`]), the serving
//! runtime, or the reference rules natively ([`crate::engine::NativePolicy`]).
//!
//! Project extension: `"expect": {"error": "<substring>"}` means evaluation must fail with
//! an error whose message contains the substring.

use crate::engine::{CallError, ConfigSnapshot, Policy, Query};
use crate::input::config::ConfigInput;
use crate::input::{from_value, InputError, JobInput};
use rollout_policy as p;
use serde::Deserialize;
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

impl From<InputError> for CaseError {
    fn from(e: InputError) -> CaseError {
        if e.field.is_empty() {
            CaseError { message: e.message }
        } else {
            CaseError::field(&e.field, e.message)
        }
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

/// The inputs of a case, checked and converted: a policy [`Query`].
pub type Inputs = Query;

const CASE_FIELDS: &[&str] = &["name", "op", "config", "repository", "job", "stats", "windows", "expect"];

/// The inputs of a case as JSON gives them; each is decoded only when the op needs it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputsJson {
    #[serde(default)]
    config: Option<ConfigInput>,
    #[serde(default)]
    repository: Option<RepositoryInput>,
    #[serde(default)]
    job: Option<JobInput>,
    #[serde(default)]
    stats: Option<StatsInput>,
    #[serde(default)]
    windows: Option<Vec<WindowInput>>,
}

/// A repository: `id` (any text; UUIDs are canonicalised) and an optional `category`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryInput {
    id: String,
    #[serde(default)]
    category: Option<p::Category>,
}

/// Activity numbers; omitted ones are 0.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsInput {
    #[serde(default)]
    star_count: u32,
    #[serde(default)]
    contributor_count: u32,
    #[serde(default)]
    pr_count: u32,
}

/// One processor's counts over the window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowInput {
    processor_type: p::Processor,
    #[serde(default)]
    success_count: u64,
    #[serde(default)]
    error_count: u64,
    #[serde(default)]
    total_jobs: u64,
    #[serde(default)]
    average_processing_time: Option<f64>,
}

/// Read a configuration object (case files, `--config`): omitted fields take the seed's
/// defaults, except `is_active`, which defaults to `is_active_default` (true in case files).
pub fn config_from_json(v: Option<&Value>, is_active_default: bool) -> Result<p::Config, CaseError> {
    let input: ConfigInput = match v {
        None | Some(Value::Null) => ConfigInput::default(),
        Some(v) => from_value(v).map_err(|e| CaseError::from(e.within("config")))?,
    };
    let config = input.into_config(is_active_default);
    config.validate().map_err(|e| CaseError::field(&crate::input::join("config", &e.field), e.message))?;
    Ok(config)
}

/// Read a job object; every field is optional.
pub fn job_from_json(v: Option<&Value>) -> Result<p::Job, CaseError> {
    match v {
        None | Some(Value::Null) => Ok(p::Job::default()),
        Some(v) => Ok(from_value::<JobInput>(v).map_err(|e| CaseError::from(e.within("job")))?.into_job()),
    }
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, CaseError> {
    v.ok_or_else(|| CaseError::field(field, "is required for this op"))
}

impl Case {
    /// Read one case object; its `expect` may be empty only when `require_expect` is false.
    pub fn from_json(v: &Value, require_expect: bool) -> Result<Case, CaseError> {
        let obj = v.as_object().ok_or_else(|| CaseError { message: "a case must be a JSON object".into() })?;
        if let Some(k) = obj.keys().find(|k| !CASE_FIELDS.contains(&k.as_str())) {
            return Err(CaseError::field(k, format!("unknown field: allowed fields are {}", CASE_FIELDS.join(", "))));
        }
        let text = |k: &str| -> Result<Option<&str>, CaseError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(CaseError::field(k, format!("`{other}` is not a string"))),
            }
        };
        let name = text("name")?.unwrap_or("(unnamed)").to_owned();
        let op = Op::parse(text("op")?.ok_or_else(|| CaseError::field("op", "is required"))?)?;
        let expect = match obj.get("expect") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(CaseError::field("expect", "must be an object")),
        };
        if require_expect && expect.is_empty() {
            return Err(CaseError::field("expect", "is empty: a case must assert at least one output field"));
        }
        for k in expect.keys() {
            if k != "error" && !op.output_fields().contains(&k.as_str()) {
                return Err(CaseError::field(
                    &crate::input::join("expect", k),
                    format!("not an output of `{op:?}`: allowed fields are error, {}", op.output_fields().join(", ")),
                ));
            }
        }
        let raw = obj
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "name" | "op" | "expect"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Case { name, op, raw, expect })
    }

    /// Check and convert the inputs.
    pub fn inputs(&self) -> Result<Inputs, CaseError> {
        let json: InputsJson = from_value(&Value::Object(self.raw.clone()))?;
        let config = |c: Option<ConfigInput>| {
            let config = c.unwrap_or_default().into_config(true);
            config.validate().map_err(|e| CaseError::field(&crate::input::join("config", &e.field), e.message))?;
            Ok::<p::Config, CaseError>(config)
        };
        let repository = |r: Option<RepositoryInput>| {
            let r = required(r, "repository")?;
            Ok::<p::Repository, CaseError>(p::Repository::parse(&r.id, r.category))
        };
        Ok(match self.op {
            Op::IsEligible => Inputs::IsEligible(config(json.config)?, repository(json.repository)?),
            Op::Route => Inputs::Route(
                config(json.config)?,
                repository(json.repository)?,
                json.job.map(JobInput::into_job).unwrap_or_default(),
            ),
            Op::Categorize => {
                let s = required(json.stats, "stats")?;
                Inputs::Categorize(p::RepositoryStats {
                    star_count: s.star_count,
                    contributor_count: s.contributor_count,
                    pr_count: s.pr_count,
                })
            }
            Op::EvaluateHealth => Inputs::EvaluateHealth(
                config(json.config)?,
                json.windows
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| p::ProcessorWindow {
                        processor: w.processor_type,
                        success_count: w.success_count,
                        error_count: w.error_count,
                        total_jobs: w.total_jobs,
                        average_processing_time: w.average_processing_time,
                    })
                    .collect(),
            ),
        })
    }
}

/// Read a case file (`{"description", "cases": [...]}`) or a single case object.
pub fn parse_cases(v: &Value, require_expect: bool) -> Result<Vec<Result<Case, CaseError>>, CaseError> {
    let obj = v.as_object().ok_or_else(|| CaseError { message: "a case file must be a JSON object".into() })?;
    if obj.contains_key("op") {
        return Ok(vec![Case::from_json(v, require_expect)]);
    }
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "description" | "cases")) {
        return Err(CaseError::field(k, "unknown field: allowed fields are description, cases"));
    }
    match obj.get("cases") {
        Some(Value::Array(items)) => Ok(items.iter().map(|c| Case::from_json(c, require_expect)).collect()),
        _ => Err(CaseError::field("cases", "is required: a list of cases")),
    }
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

fn call_error(e: CallError) -> CaseError {
    match e {
        CallError::Config(c) => CaseError::field(&crate::input::join("config", &c.field), c.message),
        other => CaseError { message: other.to_string() },
    }
}

/// Evaluate checked inputs on `policy`, giving the decision as a JSON object of output
/// fields.
pub fn evaluate_inputs(inputs: &Inputs, policy: &dyn Policy) -> Result<Map<String, Value>, CaseError> {
    Ok(match inputs {
        Inputs::IsEligible(c, r) => {
            eligibility_to_json(&policy.is_eligible(&ConfigSnapshot::new(c.clone()), r).map_err(call_error)?)
        }
        Inputs::Route(c, r, j) => route_json(&policy.route(&ConfigSnapshot::new(c.clone()), r, j).map_err(call_error)?),
        Inputs::Categorize(s) => categorization_json(&policy.categorize(s).map_err(call_error)?),
        Inputs::EvaluateHealth(c, w) => health_json(&policy.evaluate_health(c, w).map_err(call_error)?),
    })
}

/// The result of evaluating one case.
pub type Outcome = Result<Map<String, Value>, CaseError>;

/// Evaluate a case on `policy`: input errors and policy errors both become `Err`.
pub fn evaluate(case: &Case, policy: &dyn Policy) -> Outcome {
    let inputs = case.inputs()?;
    evaluate_inputs(&inputs, policy)
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

/// Run every case of every file under `paths` on `policy`.
pub fn run(paths: &[PathBuf], policy: &dyn Policy) -> Report {
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
                let outcome = evaluate(&case, policy);
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
