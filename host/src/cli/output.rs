//! What the commands print: JSON for scripts, tables and lines for people, and the
//! formatting they share.

/// `print!` that ignores a closed stdout (`rollout history | head` must not panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` that ignores a closed stdout.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use super::table::Table;
use super::CliError;
use crate::manager::{HealthReport, ProcessorStats, Sourced, ValueSource};
use crate::service::operations::OperationOutcome;
use crate::store::HistoryEntry;
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;

/// Print `value` as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .context("cannot encode the output as JSON")
        .map_err(CliError::unavailable)?;
    outln!("{text}");
    Ok(())
}

/// The first 12 hex digits of a digest.
pub(crate) fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

pub(crate) fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub(crate) fn pct(v: f64) -> String {
    format!("{v:.2} %")
}

pub(crate) fn sourced<T: PartialEq + std::fmt::Display>(s: &Sourced<T>, show: impl Fn(&T) -> String) -> String {
    match s.source {
        ValueSource::Database => show(&s.value),
        ValueSource::Environment => format!("{}  (environment; database {})", show(&s.value), show(&s.database_value)),
    }
}

/// The serialised name of a value (`postgres`, `up`, …).
pub(crate) fn name_of(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

pub(crate) fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub(crate) fn processors_table(processors: &BTreeMap<String, ProcessorStats>) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_owned(), |ms| format!("{ms:.0} ms"));
    let mut t =
        Table::new(["processor", "jobs", "successes", "errors", "error rate", "mean time", "p50", "p95", "p99"])
            .right(1)
            .right(2)
            .right(3)
            .right(4)
            .right(5)
            .right(6)
            .right(7)
            .right(8);
    for (name, p) in processors {
        t.row([
            name.clone(),
            p.total_jobs.to_string(),
            p.success_count.to_string(),
            p.error_count.to_string(),
            pct(p.error_rate),
            ms(p.average_processing_time_ms),
            ms(p.p50_processing_time_ms),
            ms(p.p95_processing_time_ms),
            ms(p.p99_processing_time_ms),
        ]);
    }
    t.render()
}

fn percentage_change(h: &HistoryEntry) -> String {
    match (h.previous_percentage, h.new_percentage) {
        (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
        (Some(a), Some(_)) => a.to_string(),
        (None, Some(b)) => format!("→ {b}"),
        (Some(a), None) => format!("{a} →"),
        (None, None) => "-".to_owned(),
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() > max {
        let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    } else {
        flat
    }
}

pub(crate) fn history_table(rows: &[HistoryEntry]) -> String {
    let mut t = Table::new(["#", "time", "action", "percentage", "by", "reason"]).right(0);
    for h in rows {
        t.row([
            h.seq.to_string(),
            time(&h.created_at),
            h.action.as_str().to_owned(),
            percentage_change(h),
            h.triggered_by.clone().unwrap_or_default(),
            one_line(h.reason.as_deref().unwrap_or(""), 60),
        ]);
    }
    t.render()
}

pub(crate) fn level_name(h: &HealthReport) -> &'static str {
    h.level.map_or("unknown", rollout_policy::HealthLevel::as_str)
}

pub(crate) fn health_line(h: &HealthReport) -> String {
    format!(
        "{}, action {} — {} over {} jobs since {} ({})",
        level_name(h),
        h.action,
        pct(h.error_rate),
        h.total_jobs,
        time(&h.window_start),
        h.reason
    )
}

pub(crate) fn list_summary(ids: &[String]) -> String {
    match ids {
        [] => "none".to_owned(),
        [_] | [_, _] | [_, _, _] => ids.join(", "),
        [a, b, ..] => format!("{} repositories ({a}, {b}, …)", ids.len()),
    }
}

/// `history #N`, or that nothing was written.
pub(crate) fn history_note(outcome: &OperationOutcome) -> String {
    outcome
        .history
        .as_ref()
        .map_or_else(|| "nothing changed, no history row".to_owned(), |h| format!("history #{}", h.seq))
}

/// Tell the operator that an environment override hides what the database now holds.
pub(crate) fn warn_overridden(outcome: &OperationOutcome) {
    for field in &outcome.overridden_by_environment {
        if let Some(o) = outcome.config.env_overrides.iter().find(|o| o.field == *field) {
            eprintln!(
                "warning: {} is set in this environment and overrides `{field}` in processes started with it",
                o.variable
            );
        }
    }
}
