//! The status page at `/`: a dashboard rendered with askama templates
//! (`host/templates/status.html`, `dashboard.html`; checked at compile time, every value
//! HTML-escaped), charts as server-rendered inline SVG ([`charts`]), readable on a phone.
//! `?feature=NAME` picks the feature (default: the service's default); `?fragment=1`
//! answers only the dashboard's inner HTML, which a few lines of inline script fetch every
//! 5 s to refresh the page without a reload. Without scripts the page is complete, and
//! reloads itself.
//!
//! Parts that need the database (stats, charts, history) say so when it is unreachable;
//! the configuration, the policy, the decision counters and the last health check come from
//! memory and are always shown.

pub mod charts;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::manager::stats::{CostEstimate, TrendDirection};
use crate::manager::{EffectiveConfig, HealthReport, RolloutStats, Sourced, ValueSource};
use crate::service::{Feature, Service};
use crate::store::HistoryEntry;
use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Html;
use charts::{BarChart, BarInput, ErrorChart, RampChart};
use chrono::{DateTime, TimeDelta, Utc};
use rollout_policy::{Category, HealthLevel, Processor};
use std::sync::Arc;

/// History rows read for the ramp chart (the table shows the newest [`HISTORY_SHOWN`]).
const HISTORY_READ: u32 = 200;
/// History rows in the table.
const HISTORY_SHOWN: usize = 15;
/// How often the inline script refreshes the dashboard, in milliseconds.
pub const REFRESH_MS: u32 = 5000;

/// What the query string asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PageQuery {
    feature: Option<String>,
    fragment: bool,
}

impl PageQuery {
    fn parse(raw: Option<&str>) -> PageQuery {
        let mut q = PageQuery::default();
        for part in raw.unwrap_or("").split('&') {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            match key {
                "feature" => q.feature = Some(percent_decode(value)).filter(|s| !s.is_empty()),
                "fragment" => q.fragment = !matches!(value, "0" | "false"),
                _ => {}
            }
        }
        q
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'%') => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            Some(b'+') => out.push(b' '),
            Some(b) => out.push(*b),
            None => {}
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` percent-encoded for a query value (everything but unreserved characters).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A link to another feature's dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureLink {
    /// The feature.
    pub name: String,
    /// `/?feature=…`.
    pub href: String,
    /// Whether it is the one shown.
    pub current: bool,
}

/// One row of the configuration table.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigRow {
    /// What it is.
    pub label: &'static str,
    /// The element id of the value, for the ones tests and scripts read.
    pub id: Option<&'static str>,
    /// The value in force.
    pub value: String,
    /// Its unit (` %`, ` h`), or empty.
    pub unit: &'static str,
    /// Where an environment override came from and what the database holds.
    pub env_note: Option<String>,
}

/// The last health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthView {
    /// `ok`, `warning`, `critical` or `unknown`.
    pub level: &'static str,
    /// Error rate in the window, two decimals.
    pub error_rate: String,
    /// Jobs in the window.
    pub total_jobs: u64,
    /// The policy's reason.
    pub reason: String,
    /// Start of the window judged.
    pub window_start: String,
}

/// An alert in force.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    /// `warning` or `critical` (or `info`).
    pub level: String,
    /// Why, in words.
    pub reason: String,
    /// Since when (UTC, as text).
    pub since: String,
    /// Where it comes from (`health check`, or an outbox event's kind).
    pub source: String,
}

/// One processor's figures over the stats window.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorView {
    /// The processor.
    pub name: String,
    /// Its colour in the charts.
    pub colour: &'static str,
    /// Jobs.
    pub jobs: u64,
    /// Errors.
    pub errors: u64,
    /// Error rate, two decimals.
    pub error_rate: String,
    /// Mean processing time (ms, one decimal) or `–`.
    pub average_ms: String,
    /// p50 processing time (ms, one decimal) or `–`.
    pub p50_ms: String,
    /// p95 processing time (ms, one decimal) or `–`.
    pub p95_ms: String,
    /// p99 processing time (ms, one decimal) or `–`.
    pub p99_ms: String,
}

/// One processor's queue backlog, as the last health check saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogView {
    /// The processor.
    pub processor: String,
    /// Items waiting at the last report.
    pub depth: u64,
    /// Age of the oldest waiting item at the last report, seconds (one decimal).
    pub oldest_age_seconds: String,
    /// `growing` when the depth grew across the window, else `steady`.
    pub trend: &'static str,
    /// Reports in the window.
    pub reports: usize,
}

/// The cost estimate, formatted.
#[derive(Debug, Clone, PartialEq)]
pub struct CostView {
    /// What the window's jobs cost where they ran.
    pub window_cost: String,
    /// What they would have cost all on inngest.
    pub all_inngest_cost: String,
    /// The difference.
    pub savings: String,
    /// The difference in percent of the all-inngest cost, or `–`.
    pub savings_percent: String,
    /// Price of a job per processor.
    pub cost_per_job: Vec<(String, String)>,
    /// Where they ran against all on inngest.
    pub chart: BarChart,
}

/// The statistics of the window (the same as `GET /v1/features/{feature}/stats`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatsView {
    /// The window, in hours.
    pub window_hours: u32,
    /// Jobs.
    pub total_jobs: u64,
    /// Errors.
    pub error_count: u64,
    /// Error rate, two decimals.
    pub error_rate: String,
    /// `up`, `down` or `flat`.
    pub trend: &'static str,
    /// Per processor.
    pub processors: Vec<ProcessorView>,
    /// Error rate per processor.
    pub error_rate_chart: BarChart,
    /// p95 processing time per processor.
    pub p95_chart: BarChart,
    /// Errors per kind with at least one.
    pub errors_by_kind: Vec<(String, u64)>,
    /// The cost estimate (`None` without `metadata.cost_per_job`).
    pub cost: Option<CostView>,
}

/// One row of the participation table.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryRow {
    /// The category.
    pub category: &'static str,
    /// Its size threshold, in percent.
    pub threshold: u8,
    /// Repositories categorised in it.
    pub total: u64,
    /// Those eligible now.
    pub eligible: u64,
}

/// Participation by category.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoriesView {
    /// One row per category.
    pub rows: Vec<CategoryRow>,
    /// Categorised repositories.
    pub categorized: u64,
    /// Eligible categorised repositories.
    pub eligible: u64,
    /// Eligible per category, against the largest category.
    pub chart: BarChart,
    /// Whether the count predates the last change.
    pub recounting: bool,
}

/// One row of the history table.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// When (UTC).
    pub when: String,
    /// The action.
    pub action: &'static str,
    /// `a → b`, `b` or empty.
    pub percentage: String,
    /// Who or what.
    pub by: String,
    /// Why.
    pub reason: String,
}

/// Everything the dashboard shows, formatted; the templates only place it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// The feature.
    pub feature: String,
    /// Where the live refresh fetches the dashboard's inner HTML.
    pub fragment_url: String,
    /// The refresh period, in milliseconds.
    pub refresh_ms: u32,
    /// The features served, when more than one.
    pub features: Vec<FeatureLink>,
    /// The serving policy (`name version`), or what happens without one.
    pub policy: String,
    /// The first 12 hex digits of its sha256.
    pub policy_sha: Option<String>,
    /// The policy candidate (shadow or canary), its share, counts and the guard's state,
    /// one line each; empty without one.
    pub candidate: Vec<String>,
    /// Whether the service is ready.
    pub ready: bool,
    /// `postgres` or `sqlite`.
    pub backend: &'static str,
    /// When this was rendered (UTC).
    pub rendered_at: String,
    /// The outage notice (the database is unreachable).
    pub stale: Option<String>,
    /// Notices in red (emergency stop, rolled back).
    pub notices: Vec<String>,
    /// Environment overrides in force, `VARIABLE=value`.
    pub overrides: Vec<String>,
    /// The configuration in force.
    pub config: Vec<ConfigRow>,
    /// The last health check of this process.
    pub health: Option<HealthView>,
    /// Queue backlog per processor that reported, from the last health check.
    pub backlog: Vec<BacklogView>,
    /// Alerts in force: today a last health check at `warning` or `critical`; the outbox
    /// of issue 12 adds its undelivered or recent events here.
    pub alerts: Vec<AlertView>,
    /// The statistics (`None`: the database cannot be read).
    pub stats: Option<StatsView>,
    /// The ramp over time (`None`: the history cannot be read).
    pub ramp: Option<RampChart>,
    /// The hourly error rate per processor (`None`: the database cannot be read).
    pub error_chart: Option<ErrorChart>,
    /// Participation by category (`None`: being counted).
    pub categories: Option<CategoriesView>,
    /// Routing decisions of this process per rule.
    pub decisions: BarChart,
    /// Routing decisions of this process in all.
    pub decisions_total: u64,
    /// Recent history (`None`: the database cannot be read).
    pub history: Option<Vec<HistoryRow>>,
}

/// The whole page.
#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage<'a> {
    dash: &'a Dashboard,
}

/// The dashboard container's inner HTML alone (`?fragment=1`).
#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardFragment<'a> {
    dash: &'a Dashboard,
}

/// The whole page for `dash`.
pub fn render_page(dash: &Dashboard) -> Result<String, askama::Error> {
    StatusPage { dash }.render()
}

/// The dashboard's inner HTML for `dash`.
pub fn render_fragment(dash: &Dashboard) -> Result<String, askama::Error> {
    DashboardFragment { dash }.render()
}

fn sourced<T: std::fmt::Display + Clone + PartialEq>(
    label: &'static str,
    id: Option<&'static str>,
    unit: &'static str,
    v: &Sourced<T>,
    c: &EffectiveConfig,
    field: &str,
) -> ConfigRow {
    let env_note = match v.source {
        ValueSource::Database => None,
        ValueSource::Environment => {
            let variable = c.env_overrides.iter().find(|o| o.field == field).map(|o| o.variable);
            Some(format!(
                "(from the environment{}; database value {})",
                variable.map_or_else(String::new, |x| format!(": {x}")),
                v.database_value
            ))
        }
    };
    ConfigRow { label, id, value: v.value.to_string(), unit, env_note }
}

fn plain(label: &'static str, value: impl ToString, unit: &'static str) -> ConfigRow {
    ConfigRow { label, id: None, value: value.to_string(), unit, env_note: None }
}

fn config_rows(c: &EffectiveConfig) -> Vec<ConfigRow> {
    vec![
        sourced("rollout percentage", Some("rollout-percentage"), " %", &c.rollout_percentage, c, "rollout_percentage"),
        sourced("strategy", Some("rollout-strategy"), "", &c.rollout_strategy, c, "rollout_strategy"),
        plain("active", c.is_active, ""),
        sourced("emergency stop", Some("emergency-stop"), "", &c.emergency_stop, c, "emergency_stop"),
        sourced("auto-rollback", None, "", &c.auto_rollback_enabled, c, "auto_rollback_enabled"),
        sourced("max error rate", None, " %", &c.max_error_rate, c, "max_error_rate"),
        plain("monitoring window", c.monitoring_window_hours, " h"),
        plain("jobs before a rollback", c.min_jobs_for_rollback, ""),
        plain("whitelisted", c.target_repositories.len(), ""),
        plain("excluded", c.excluded_repositories.len(), ""),
        plain("updated", c.updated_at.to_rfc3339(), ""),
    ]
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

/// The backlog of the last health check, per processor that reported.
fn backlog_views(h: &HealthReport) -> Vec<BacklogView> {
    h.backlog
        .iter()
        .map(|(p, b)| BacklogView {
            processor: p.clone(),
            depth: b.depth,
            oldest_age_seconds: format!("{:.1}", b.oldest_age_seconds),
            trend: if b.growing { "growing" } else { "steady" },
            reports: b.reports,
        })
        .collect()
}

/// The health view and the alert it raises (a level of `warning` or `critical`).
fn health_view(h: &HealthReport) -> (HealthView, Option<AlertView>) {
    let level = h.level.map_or("unknown", HealthLevel::as_str);
    let view = HealthView {
        level,
        error_rate: format!("{:.2}", h.error_rate),
        total_jobs: h.total_jobs,
        reason: h.reason.clone(),
        window_start: time(h.window_start),
    };
    let alert = h.is_unhealthy().then(|| AlertView {
        level: level.to_owned(),
        reason: h.reason.clone(),
        since: time(h.window_start),
        source: "health check".to_owned(),
    });
    (view, alert)
}

fn cost_view(c: &CostEstimate) -> CostView {
    let money = |v: f64| format!("{v:.4}");
    CostView {
        window_cost: money(c.window_cost),
        all_inngest_cost: money(c.all_inngest_cost),
        savings: money(c.savings),
        savings_percent: c.savings_percent.map_or_else(|| "–".to_owned(), |p| format!("{p:.1}")),
        cost_per_job: c.cost_per_job.iter().map(|(p, v)| (p.clone(), format!("{v}"))).collect(),
        chart: charts::bar_chart(
            "cost-chart",
            vec![
                BarInput::new("actual", "where they ran", c.window_cost, money(c.window_cost), "#2ca02c"),
                BarInput::new("all-inngest", "all on inngest", c.all_inngest_cost, money(c.all_inngest_cost), "#999"),
            ],
            0.0,
        ),
    }
}

/// The stats view of `s`.
pub fn stats_view(s: &RolloutStats) -> StatsView {
    let processors: Vec<ProcessorView> = Processor::ALL
        .iter()
        .filter_map(|p| {
            let v = s.processors.get(p.as_str())?;
            Some(ProcessorView {
                name: p.as_str().to_owned(),
                colour: charts::colour(*p),
                jobs: v.total_jobs,
                errors: v.error_count,
                error_rate: format!("{:.2}", v.error_rate),
                average_ms: ms(v.average_processing_time_ms),
                p50_ms: ms(v.p50_processing_time_ms),
                p95_ms: ms(v.p95_processing_time_ms),
                p99_ms: ms(v.p99_processing_time_ms),
            })
        })
        .collect();
    let error_rate_chart = charts::bar_chart(
        "error-rate-chart",
        Processor::ALL
            .iter()
            .filter_map(|p| {
                let v = s.processors.get(p.as_str())?;
                let label = format!("{:.2} %", v.error_rate);
                Some(BarInput::new(p.as_str(), p.as_str(), v.error_rate, label, charts::colour(*p)))
            })
            .collect(),
        1.0,
    );
    let p95_chart = charts::bar_chart(
        "p95-chart",
        Processor::ALL
            .iter()
            .filter_map(|p| {
                let v = s.processors.get(p.as_str())?;
                let p95 = v.p95_processing_time_ms;
                let label = p95.map_or_else(|| "no timed job".to_owned(), |x| format!("{x:.1} ms"));
                Some(BarInput::new(p.as_str(), p.as_str(), p95.unwrap_or(0.0), label, charts::colour(*p)))
            })
            .collect(),
        0.0,
    );
    StatsView {
        window_hours: s.window_hours,
        total_jobs: s.total_jobs,
        error_count: s.error_count,
        error_rate: format!("{:.2}", s.error_rate),
        trend: match s.error_trend.direction {
            TrendDirection::Up => "up",
            TrendDirection::Down => "down",
            TrendDirection::Flat => "flat",
        },
        processors,
        error_rate_chart,
        p95_chart,
        errors_by_kind: s.errors_by_kind.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)).collect(),
        cost: s.cost.as_ref().map(cost_view),
    }
}

/// The ramp from history rows (newest first, as the store answers): every row that set a
/// percentage is a step; the axis starts at the oldest row read (at least an hour back).
pub fn ramp_from_history(entries: &[HistoryEntry], current: u8, now: DateTime<Utc>) -> RampChart {
    let pct = |p: i32| u8::try_from(p.clamp(0, 100)).unwrap_or(0);
    let mut steps: Vec<(DateTime<Utc>, u8)> =
        entries.iter().filter_map(|e| e.new_percentage.map(|p| (e.created_at, pct(p)))).collect();
    steps.reverse();
    let oldest = entries.iter().map(|e| e.created_at).min().unwrap_or(now);
    let since = oldest.min(now - TimeDelta::hours(1));
    let start = entries
        .iter()
        .rev()
        .find(|e| e.new_percentage.is_some())
        .map_or(current, |e| e.previous_percentage.map_or(0, pct));
    charts::ramp_chart(charts::RAMP_FRAME, start, &steps, since, now)
}

fn categories_view(service: &Service, feature: &Arc<Feature>) -> Option<CategoriesView> {
    let p = service.participation(feature)?;
    let rows: Vec<CategoryRow> = Category::ALL
        .iter()
        .map(|c| CategoryRow {
            category: c.as_str(),
            threshold: c.threshold(),
            total: p.categories.get(c.as_str()).copied().unwrap_or(0),
            eligible: p.eligible_by_category.get(c.as_str()).copied().unwrap_or(0),
        })
        .collect();
    let largest = rows.iter().map(|r| r.total).max().unwrap_or(0) as f64;
    let chart = charts::bar_chart(
        "participation-chart",
        rows.iter()
            .map(|r| {
                let label = format!("{} of {}", r.eligible, r.total);
                BarInput::new(r.category, r.category, r.eligible as f64, label, "#6f42c1")
            })
            .collect(),
        largest,
    );
    Some(CategoriesView {
        rows,
        categorized: p.categorized_repositories,
        eligible: p.eligible_categorized_repositories,
        chart,
        recounting: !p.is_current(&feature.manager),
    })
}

fn history_rows(entries: &[HistoryEntry]) -> Vec<HistoryRow> {
    entries
        .iter()
        .take(HISTORY_SHOWN)
        .map(|h| HistoryRow {
            when: h.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            action: h.action.as_str(),
            percentage: match (h.previous_percentage, h.new_percentage) {
                (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
                (_, Some(b)) => b.to_string(),
                _ => String::new(),
            },
            by: h.triggered_by.clone().unwrap_or_default(),
            reason: h.reason.clone().unwrap_or_default(),
        })
        .collect()
}

/// Gather what the dashboard of `feature` shows.
pub async fn dashboard(service: &Service, feature: &Arc<Feature>) -> Dashboard {
    let c = feature.manager.effective_config();
    let now = Utc::now();
    let policy = service.runtime().policy_version();
    let features = service.features();
    let stale = service.db().is_down().then(|| {
        format!(
            "the database is unreachable: decisions use the configuration read {:.0} s ago; {} outcomes buffered; \
             operations are refused",
            feature.config_age_seconds(),
            feature.buffered()
        )
    });
    let mut notices = Vec::new();
    if c.emergency_stop.value {
        notices.push("emergency stop is on: nobody is eligible".to_owned());
    }
    if c.rolled_back {
        notices.push(
            "rolled back automatically: the percentage is held at 0 % (over any environment override) until an \
             operator sets one"
                .to_owned(),
        );
    }
    let last_health = feature.last_health();
    let (health, alerts) = match &last_health {
        Some(h) => {
            let (view, alert) = health_view(h);
            (Some(view), alert.into_iter().collect())
        }
        None => (None, Vec::new()),
    };
    let backlog = last_health.as_ref().map(backlog_views).unwrap_or_default();

    let stats = service.stats(feature.name()).await.ok();
    let since = now - TimeDelta::hours(i64::from(c.monitoring_window_hours.max(1)));
    let error_chart = match service.store().metrics_window(c.id, since, DateTime::<Utc>::UNIX_EPOCH).await {
        Ok(rows) => Some(charts::error_chart(charts::ERROR_FRAME, &rows, since, now, c.max_error_rate.value)),
        Err(e) => {
            service.db().observe::<(), _>(&Err(e));
            None
        }
    };
    let history = match feature.manager.history(HISTORY_READ).await {
        Ok(entries) => Some(entries),
        Err(e) => {
            service.db().observe::<(), _>(&Err(e));
            None
        }
    };
    let by_rule = feature.counters.decisions_by_rule();
    let decisions_total = by_rule.iter().map(|(_, n)| n).sum();
    let decisions = charts::bar_chart(
        "decisions-chart",
        by_rule
            .iter()
            .map(|(rule, n)| BarInput::new(rule.as_str(), rule.as_str(), *n as f64, n.to_string(), "#1f77b4"))
            .collect(),
        0.0,
    );
    Dashboard {
        feature: feature.name().to_owned(),
        fragment_url: format!("/?feature={}&fragment=1", percent_encode(feature.name())),
        refresh_ms: REFRESH_MS,
        features: if features.len() > 1 {
            features
                .iter()
                .map(|f| FeatureLink {
                    name: f.name().to_owned(),
                    href: format!("/?feature={}", percent_encode(f.name())),
                    current: f.name() == feature.name(),
                })
                .collect()
        } else {
            Vec::new()
        },
        policy: policy.as_ref().map_or_else(
            || "none loaded (every decision falls back)".to_owned(),
            |p| format!("{} {}", p.name, p.version),
        ),
        policy_sha: policy.as_ref().map(|p| p.sha256.get(..12).unwrap_or(&p.sha256).to_owned()),
        candidate: candidate_lines(&service.candidate_status()),
        ready: service.is_ready(),
        backend: match service.store().backend() {
            crate::store::Backend::Postgres => "postgres",
            crate::store::Backend::Sqlite => "sqlite",
        },
        rendered_at: time(now),
        stale,
        notices,
        overrides: c.env_overrides.iter().map(|o| format!("{}={}", o.variable, o.value)).collect(),
        config: config_rows(&c),
        health,
        backlog,
        alerts,
        stats: stats.as_ref().map(stats_view),
        ramp: history.as_ref().map(|h| ramp_from_history(h, c.rollout_percentage.database_value, now)),
        error_chart,
        categories: categories_view(service, feature),
        decisions,
        decisions_total,
        history: history.as_deref().map(history_rows),
    }
}

/// The status page's lines about the policy candidate.
pub fn candidate_lines(c: &crate::service::candidate::CandidateStatus) -> Vec<String> {
    use crate::service::candidate::CandidateMode;
    let mut lines = Vec::new();
    if let Some(refused) = &c.refused_here {
        lines.push(format!("the stored policy candidate is refused here: {refused}"));
    }
    let Some(state) = &c.state else { return lines };
    let name = c.version.as_ref().map_or_else(String::new, |v| format!("{} {} ", v.name, v.version));
    let sha = state.sha256.get(..12).unwrap_or(&state.sha256);
    match state.mode {
        CandidateMode::Shadow => {
            lines.push(format!(
                "candidate {name}({sha}) in shadow on {:.0} % of decisions: {} offered, {} dropped",
                state.sample_rate * 100.0,
                c.shadow_offered,
                c.shadow_dropped
            ));
            for (feature, f) in &c.shadow {
                let pairs: Vec<String> = f.rule_pairs.iter().map(|(p, n)| format!("{p} ×{n}")).collect();
                lines.push(format!(
                    "{feature}: {} evaluated, {} matched, {} mismatched, {} candidate errors{}",
                    f.evaluated,
                    f.matched,
                    f.mismatched,
                    f.candidate_errors,
                    if pairs.is_empty() { String::new() } else { format!(" ({})", pairs.join(", ")) }
                ));
            }
        }
        CandidateMode::Canary => {
            let schedule = if state.steps.is_empty() {
                String::new()
            } else {
                let steps: Vec<String> = state.steps.iter().map(|s| format!("{s}")).collect();
                format!(", then {} % every {} s", steps.join(", "), state.interval_seconds)
            };
            lines.push(format!("candidate {name}({sha}) serves a {} % canary{schedule}", state.percentage));
            if let (Some(k), Some(o)) = (&c.canary, &c.control) {
                lines.push(format!(
                    "canary: {} decisions, {} fallbacks, {} outcomes, {} failed · control: {} decisions, {} fallbacks, \
                     {} outcomes, {} failed",
                    k.decisions, k.fallbacks, k.outcomes, k.failures, o.decisions, o.fallbacks, o.outcomes, o.failures
                ));
            }
            let guard = match &c.guard {
                None => "not judged yet".to_owned(),
                Some(crate::service::guard::Judgement::Waiting { reason }) => format!("waiting: {reason}"),
                Some(crate::service::guard::Judgement::Satisfied { .. }) => {
                    format!("satisfied after {} checks", c.checks)
                }
                Some(crate::service::guard::Judgement::Worse { detail, .. }) => format!("worse: {detail}"),
            };
            lines.push(format!("guard: {guard}"));
        }
    }
    lines
}

/// `GET /`: the status page; `GET /?fragment=1`: the dashboard's inner HTML alone.
pub async fn status_page(State(state): State<AppState>, RawQuery(query): RawQuery) -> ApiResult<Html<String>> {
    let service = state.service();
    let q = PageQuery::parse(query.as_deref());
    let name = q.feature.unwrap_or_else(|| service.options().default_feature.clone());
    let feature = service.feature(&name).await?;
    let dash = dashboard(service, &feature).await;
    let html = if q.fragment { render_fragment(&dash) } else { render_page(&dash) };
    html.map(Html).map_err(|e| ApiError::Internal(format!("the status page did not render: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HistoryAction;

    fn empty_chart() -> BarChart {
        charts::bar_chart("x", Vec::new(), 0.0)
    }

    /// A dashboard whose every text field is `evil`.
    fn dashboard_with(evil: &str) -> Dashboard {
        let now = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap();
        Dashboard {
            feature: evil.to_owned(),
            fragment_url: format!("/?feature={}&fragment=1", percent_encode(evil)),
            refresh_ms: REFRESH_MS,
            features: vec![FeatureLink { name: evil.to_owned(), href: "/?feature=x".into(), current: true }],
            policy: evil.to_owned(),
            policy_sha: Some(evil.to_owned()),
            candidate: vec![evil.to_owned()],
            ready: true,
            backend: "sqlite",
            rendered_at: evil.to_owned(),
            stale: Some(evil.to_owned()),
            notices: vec![evil.to_owned()],
            overrides: vec![evil.to_owned()],
            config: vec![ConfigRow {
                label: "rollout percentage",
                id: Some("rollout-percentage"),
                value: evil.to_owned(),
                unit: " %",
                env_note: Some(evil.to_owned()),
            }],
            health: Some(HealthView {
                level: "warning",
                error_rate: "3.00".into(),
                total_jobs: 10,
                reason: evil.to_owned(),
                window_start: evil.to_owned(),
            }),
            backlog: vec![BacklogView {
                processor: evil.to_owned(),
                depth: 7,
                oldest_age_seconds: "12.0".into(),
                trend: "growing",
                reports: 3,
            }],
            alerts: vec![AlertView {
                level: "warning".into(),
                reason: evil.to_owned(),
                since: evil.to_owned(),
                source: evil.to_owned(),
            }],
            stats: None,
            ramp: Some(charts::ramp_chart(charts::RAMP_FRAME, 0, &[(now, 10)], now - TimeDelta::hours(1), now)),
            error_chart: Some(charts::error_chart(charts::ERROR_FRAME, &[], now - TimeDelta::hours(1), now, 5.0)),
            categories: None,
            decisions: empty_chart(),
            decisions_total: 0,
            history: Some(vec![HistoryRow {
                when: evil.to_owned(),
                action: "percentage_change",
                percentage: evil.to_owned(),
                by: evil.to_owned(),
                reason: evil.to_owned(),
            }]),
        }
    }

    #[test]
    fn every_value_is_escaped() {
        let evil = "<script>alert('x')</script>&\"";
        let dash = dashboard_with(evil);
        for html in [render_page(&dash).unwrap(), render_fragment(&dash).unwrap()] {
            assert!(!html.contains("<script>alert"), "{html}");
            assert!(!html.contains("alert('x')"), "{html}");
            // askama escapes with numeric references
            let escaped = "&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;&#38;&#34;";
            // the feature, policy, sha, rendered-at, stale, notice, override, config value (twice)
            // and note, health reason and window, backlog processor, alert reason, since and
            // source, history (4)
            assert!(html.matches(escaped).count() >= 18, "{html}");
        }
        let page = render_page(&dash).unwrap();
        assert!(page.contains("name=\"viewport\""), "readable on a phone");
        assert!(page.contains("id=\"dashboard\""), "the container the script refreshes");
        assert!(page.contains("<svg id=\"error-chart\""), "{page}");
        assert!(page.contains("<svg id=\"ramp-chart\""), "{page}");
        assert!(page.contains("id=\"alerts\""), "{page}");
    }

    #[test]
    fn the_fragment_is_the_containers_inside() {
        let dash = dashboard_with("f");
        let page = render_page(&dash).unwrap();
        let fragment = render_fragment(&dash).unwrap();
        assert!(!fragment.contains("<html"), "{fragment}");
        assert!(page.contains(fragment.trim()), "the page embeds the fragment as it is");
    }

    #[test]
    fn reads_the_query() {
        assert_eq!(PageQuery::parse(Some("feature=my%20f")).feature.as_deref(), Some("my f"));
        assert_eq!(PageQuery::parse(Some("x=1")), PageQuery::default());
        assert_eq!(PageQuery::parse(None), PageQuery::default());
        let q = PageQuery::parse(Some("feature=a&fragment=1"));
        assert_eq!((q.feature.as_deref(), q.fragment), (Some("a"), true));
        assert!(!PageQuery::parse(Some("fragment=0")).fragment);
        assert_eq!(percent_decode(&percent_encode("a b&c/é")), "a b&c/é");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    fn entry(minutes_ago: i64, previous: Option<i32>, new: Option<i32>, now: DateTime<Utc>) -> HistoryEntry {
        HistoryEntry {
            id: uuid::Uuid::nil(),
            seq: 0,
            rollout_config_id: None,
            action: HistoryAction::Updated,
            previous_percentage: previous,
            new_percentage: new,
            reason: None,
            triggered_by: None,
            metadata: serde_json::Value::Null,
            created_at: now - TimeDelta::minutes(minutes_ago),
        }
    }

    #[test]
    fn the_ramp_follows_the_history_rows() {
        let now = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap();
        // newest first, as the store answers: created at 0 % 120 min ago, 0 → 10 at 90, an
        // unrelated update at 60, 10 → 50 at 30
        let rows = [
            entry(30, Some(10), Some(50), now),
            entry(60, None, None, now),
            entry(90, Some(0), Some(10), now),
            entry(120, None, Some(0), now),
        ];
        let ramp = ramp_from_history(&rows, 50, now);
        let f = charts::RAMP_FRAME;
        let x = |minutes_ago: f64| f.left + f.plot_width() * (120.0 - minutes_ago) / 120.0;
        let y = |p: f64| f.top + f.plot_height() * (1.0 - p / 100.0);
        let expected = [
            (x(120.0), y(0.0)),
            (x(90.0), y(0.0)),
            (x(90.0), y(10.0)),
            (x(30.0), y(10.0)),
            (x(30.0), y(50.0)),
            (x(0.0), y(50.0)),
        ];
        assert_eq!(ramp.points.len(), expected.len(), "{:?}", ramp.points);
        for ((ax, ay), (ex, ey)) in ramp.points.iter().zip(expected) {
            assert!((ax - ex).abs() < 1e-9 && (ay - ey).abs() < 1e-9, "{:?}", ramp.points);
        }
        // no history: flat at the current percentage over the last hour
        let flat = ramp_from_history(&[], 25, now);
        assert_eq!(flat.points, vec![(f.left, y(25.0)), (f.plot_right(), y(25.0))]);
    }

    #[test]
    fn an_unhealthy_check_is_an_alert() {
        let now = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap();
        let mut report = HealthReport {
            feature_name: "f".into(),
            level: Some(HealthLevel::Ok),
            action: rollout_policy::HealthAction::None,
            error_rate: 1.0,
            total_jobs: 100,
            reason: "fine".into(),
            policy_answered: true,
            window_start: now,
            window_hours: 24,
            processors: Default::default(),
            rolled_back: false,
            rollback: None,
            backlog: Default::default(),
            baseline_p95_processing_time_ms: Default::default(),
            limits: crate::manager::signals::default_limits().into(),
            signals_judged: true,
            notes: Vec::new(),
        };
        assert_eq!(health_view(&report).1, None);
        report.level = Some(HealthLevel::Critical);
        report.reason = "error rate 12.00 % above 10 %".into();
        let alert = health_view(&report).1.unwrap();
        assert_eq!((alert.level.as_str(), alert.reason.as_str()), ("critical", "error rate 12.00 % above 10 %"));
        assert_eq!(alert.since, "2026-01-01 00:00:00 UTC");
    }
}
