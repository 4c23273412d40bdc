//! `rollout policy diff`: evaluate two policy versions on the same inputs and group the
//! decisions that change by (old rule or reason → new rule or reason).
//!
//! Inputs are case files (SPEC §5; their `expect` is ignored) or JSON-lines corpora of
//! recorded requests, one case object per line (`.jsonl`/`.ndjson`, or any file that is not
//! one JSON document). Inputs that neither version can evaluate (bad input) are counted
//! apart and never count as changes.

use crate::cases::{self, Case, Op, Outcome};
use crate::engine::Policy;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One input of the corpus, with where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `file:line` (JSON lines) or `file#index` (case files).
    pub source: String,
    /// The case (its `expect` is ignored).
    pub case: Case,
}

/// The inputs read from the paths given.
#[derive(Debug, Default)]
pub struct Corpus {
    /// The cases.
    pub entries: Vec<Entry>,
    /// Inputs that could not be read as cases: (source, message).
    pub unreadable: Vec<(String, String)>,
}

/// Why the corpus could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file or directory could not be read.
    #[error(transparent)]
    File(#[from] cases::FileError),
    /// A file is neither a case file nor JSON lines.
    #[error("`{path}` is neither a case file nor JSON lines: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl" || e == "ndjson")
}

/// Read case files and JSON-lines corpora; directories give every `*.json`, `*.jsonl` and
/// `*.ndjson` beneath them (except `index.json`).
pub fn read_corpus(paths: &[PathBuf]) -> Result<Corpus, CorpusError> {
    let mut files = cases::collect_files(paths)?;
    for p in paths.iter().filter(|p| p.is_dir()) {
        collect_jsonl(p, &mut files)?;
    }
    let mut corpus = Corpus::default();
    for file in files {
        read_one(&file, &mut corpus)?;
    }
    Ok(corpus)
}

fn collect_jsonl(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CorpusError> {
    let rd = std::fs::read_dir(dir).map_err(|source| cases::FileError::Io { path: dir.to_owned(), source })?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_jsonl(&p, out)?;
        } else if is_jsonl(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn read_one(path: &Path, corpus: &mut Corpus) -> Result<(), CorpusError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| cases::FileError::Io { path: path.to_owned(), source })?;
    let whole = if is_jsonl(path) { None } else { serde_json::from_str::<Value>(&text).ok() };
    let shown = path.display();
    match whole {
        Some(v) => {
            let cases = cases::parse_cases(&v, false)
                .map_err(|e| CorpusError::Format { path: path.to_owned(), message: e.message })?;
            for (i, case) in cases.into_iter().enumerate() {
                let source = format!("{shown}#{i}");
                match case {
                    Ok(case) => corpus.entries.push(Entry { source, case }),
                    Err(e) => corpus.unreadable.push((source, e.message)),
                }
            }
        }
        None => {
            let mut any = false;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let source = format!("{shown}:{}", i + 1);
                let v: Value = match serde_json::from_str(line) {
                    Ok(v) => v,
                    Err(e) if !any && !is_jsonl(path) => {
                        return Err(CorpusError::Format {
                            path: path.to_owned(),
                            message: format!("line {}: {e}", i + 1),
                        })
                    }
                    Err(e) => {
                        corpus.unreadable.push((source, e.to_string()));
                        continue;
                    }
                };
                any = true;
                match Case::from_json(&v, false) {
                    Ok(case) => corpus.entries.push(Entry { source, case }),
                    Err(e) => corpus.unreadable.push((source, e.message)),
                }
            }
        }
    }
    Ok(())
}

/// The name of an op as in case files.
pub fn op_name(op: Op) -> &'static str {
    match op {
        Op::IsEligible => "is_eligible",
        Op::Route => "route",
        Op::Categorize => "categorize",
        Op::EvaluateHealth => "evaluate_health",
    }
}

fn field(d: &Map<String, Value>, k: &str) -> String {
    match d.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".to_owned(),
    }
}

/// The short label of a decision that groups it: `rule (processor)` for `route`,
/// `reason (eligible|not eligible)` for `is_eligible`, the category, `level/action`.
pub fn label(op: Op, outcome: &Outcome) -> String {
    let d = match outcome {
        Ok(d) => d,
        Err(_) => return "error".to_owned(),
    };
    match op {
        Op::Route => format!("{} ({})", field(d, "rule"), field(d, "processor")),
        Op::IsEligible => {
            let eligible = if d.get("eligible") == Some(&Value::Bool(true)) { "eligible" } else { "not eligible" };
            format!("{} ({eligible})", field(d, "reason"))
        }
        Op::Categorize => field(d, "category"),
        Op::EvaluateHealth => format!("{}/{}", field(d, "level"), field(d, "action")),
    }
}

/// Whether two outcomes are the same decision (error rates within 1e-9; two errors are the
/// same when their messages are).
pub fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => {
            x.len() == y.len()
                && x.iter().all(|(k, v)| match (k.as_str(), v.as_f64(), y.get(k).and_then(Value::as_f64)) {
                    ("error_rate", Some(p), Some(q)) => (p - q).abs() <= 1e-9,
                    _ => y.get(k) == Some(v),
                })
        }
        (Err(x), Err(y)) => x.message == y.message,
        _ => false,
    }
}

fn outcome_json(o: &Outcome) -> Value {
    match o {
        Ok(d) => Value::Object(d.clone()),
        Err(e) => serde_json::json!({"error": e.message}),
    }
}

/// One changed decision shown as an example.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Example {
    /// Where the input came from.
    pub source: String,
    /// The case name.
    pub name: String,
    /// The old decision.
    pub from: Value,
    /// The new decision.
    pub to: Value,
}

/// The changed decisions of one (op, old label → new label).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Group {
    /// The op.
    pub op: &'static str,
    /// The old label ([`label`]).
    pub from: String,
    /// The new label.
    pub to: String,
    /// How many decisions changed this way.
    pub count: usize,
    /// The first ones, in input order.
    pub examples: Vec<Example>,
}

/// The result of a diff.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DiffReport {
    /// Inputs evaluated by both versions.
    pub compared: usize,
    /// Decisions that changed.
    pub changed: usize,
    /// Inputs both versions refused with the same error (bad input).
    pub invalid: usize,
    /// Changed decisions grouped, most frequent first (ties in label order).
    pub groups: Vec<Group>,
}

/// Evaluate every entry on both versions and group the changes, keeping `examples` of each.
pub fn diff(corpus: &Corpus, from: &dyn Policy, to: &dyn Policy, examples: usize) -> DiffReport {
    let mut report = DiffReport::default();
    let mut groups: BTreeMap<(&'static str, String, String), Group> = BTreeMap::new();
    for entry in &corpus.entries {
        let a = cases::evaluate(&entry.case, from);
        let b = cases::evaluate(&entry.case, to);
        report.compared += 1;
        if same(&a, &b) {
            if a.is_err() {
                report.invalid += 1;
            }
            continue;
        }
        report.changed += 1;
        let op = op_name(entry.case.op);
        let (fl, tl) = (label(entry.case.op, &a), label(entry.case.op, &b));
        let (fl, tl) = if fl == tl {
            // Same rule, something else changed (a bucket, a reason): show the values.
            (outcome_json(&a).to_string(), outcome_json(&b).to_string())
        } else {
            (fl, tl)
        };
        let g = groups.entry((op, fl.clone(), tl.clone())).or_insert_with(|| Group {
            op,
            from: fl,
            to: tl,
            count: 0,
            examples: Vec::new(),
        });
        g.count += 1;
        if g.examples.len() < examples {
            g.examples.push(Example {
                source: entry.source.clone(),
                name: entry.case.name.clone(),
                from: outcome_json(&a),
                to: outcome_json(&b),
            });
        }
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    report.groups = groups;
    report
}

/// The report for people.
pub fn render_text(report: &DiffReport, from: &str, to: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "from {from}\nto   {to}");
    let _ = writeln!(
        out,
        "{} decisions compared, {} changed{}",
        report.compared,
        report.changed,
        if report.invalid > 0 {
            format!(" ({} inputs refused by both as bad input)", report.invalid)
        } else {
            String::new()
        }
    );
    for g in &report.groups {
        let _ = writeln!(out, "\n{:>7}  {}: {} → {}", g.count, g.op, g.from, g.to);
        for e in &g.examples {
            let _ = writeln!(out, "         e.g. {} ({})", e.name, e.source);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::CaseError;

    #[test]
    fn labels_name_the_rule_or_reason() {
        let mut d = Map::new();
        d.insert("rule".into(), "recent_data".into());
        d.insert("processor".into(), "inngest".into());
        d.insert("eligible".into(), true.into());
        d.insert("reason".into(), "in_percentage".into());
        assert_eq!(label(Op::Route, &Ok(d.clone())), "recent_data (inngest)");
        assert_eq!(label(Op::IsEligible, &Ok(d)), "in_percentage (eligible)");
        assert_eq!(label(Op::Route, &Err(CaseError { message: "x".into() })), "error");
    }

    #[test]
    fn same_compares_error_rates_within_tolerance() {
        let mk = |r: f64| {
            let mut m = Map::new();
            m.insert("error_rate".into(), r.into());
            Ok(m)
        };
        assert!(same(&mk(10.0), &mk(10.0 + 1e-12)));
        assert!(!same(&mk(10.0), &mk(10.1)));
        assert!(!same(&mk(1.0), &Err(CaseError { message: "x".into() })));
    }
}
