//! The status page at `/`: server-rendered HTML with an inline SVG chart; no scripts, no
//! front-end build. `?feature=NAME` picks the feature (default: the service's default).
//!
//! Parts that need the database (chart, categories, history) say so when it is unreachable;
//! the configuration and the policy come from memory and are always shown.

use super::error::ApiResult;
use super::AppState;
use crate::manager::{EffectiveConfig, Sourced, ValueSource};
use crate::service::{Feature, Service};
use crate::store::WindowRow;
use axum::extract::{RawQuery, State};
use axum::response::Html;
use chrono::{DateTime, TimeDelta, Utc};
use rollout_policy::{Category, Processor};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn query_feature(raw: Option<&str>) -> Option<String> {
    raw?.split('&').find_map(|p| p.strip_prefix("feature=")).map(percent_decode).filter(|s| !s.is_empty())
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

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}\
h1{margin-bottom:.2rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem}\
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left;vertical-align:top}\
th{background:#f4f4f4}.env{color:#a15c00;font-weight:600}.warn{background:#fff3cd;padding:.6rem;border:1px solid #e0c36b}\
.bad{background:#fde2e1;padding:.6rem;border:1px solid #e59a97}.muted{color:#777}code{font-size:.9em}\
.grid{display:flex;gap:2rem;flex-wrap:wrap}";

fn sourced<T: std::fmt::Display + Clone + PartialEq>(v: &Sourced<T>, variable: Option<&str>) -> String {
    match v.source {
        ValueSource::Database => esc(&v.value.to_string()),
        ValueSource::Environment => format!(
            "{} <span class=\"env\">(from the environment{}; database value {})</span>",
            esc(&v.value.to_string()),
            variable.map_or_else(String::new, |x| format!(": {x}")),
            esc(&v.database_value.to_string())
        ),
    }
}

fn config_table(out: &mut String, c: &EffectiveConfig) {
    let var = |field: &str| c.env_overrides.iter().find(|o| o.field == field).map(|o| o.variable);
    let _ = write!(
        out,
        "<h2>Configuration</h2><table id=\"config\">\
         <tr><th>rollout percentage</th><td><span id=\"rollout-percentage\" data-value=\"{p}\">{pv}</span> %</td></tr>\
         <tr><th>strategy</th><td id=\"rollout-strategy\">{s}</td></tr>\
         <tr><th>active</th><td>{active}</td></tr>\
         <tr><th>emergency stop</th><td id=\"emergency-stop\">{stop}</td></tr>\
         <tr><th>auto-rollback</th><td>{ar}</td></tr>\
         <tr><th>max error rate</th><td>{mer} %</td></tr>\
         <tr><th>monitoring window</th><td>{win} h</td></tr>\
         <tr><th>jobs before a rollback</th><td>{minj}</td></tr>\
         <tr><th>whitelisted</th><td>{wl}</td></tr>\
         <tr><th>excluded</th><td>{ex}</td></tr>\
         <tr><th>updated</th><td>{upd}</td></tr></table>",
        p = c.rollout_percentage.value,
        pv = sourced(&c.rollout_percentage, var("rollout_percentage")),
        s = sourced(&c.rollout_strategy, var("rollout_strategy")),
        active = c.is_active,
        stop = sourced(&c.emergency_stop, var("emergency_stop")),
        ar = sourced(&c.auto_rollback_enabled, var("auto_rollback_enabled")),
        mer = sourced(&c.max_error_rate, var("max_error_rate")),
        win = c.monitoring_window_hours,
        minj = c.min_jobs_for_rollback,
        wl = c.target_repositories.len(),
        ex = c.excluded_repositories.len(),
        upd = esc(&c.updated_at.to_rfc3339()),
    );
}

/// An SVG line chart of the hourly error rate per processor, with the threshold.
pub fn error_chart(rows: &[WindowRow], since: DateTime<Utc>, now: DateTime<Utc>, threshold: f64) -> String {
    let (w, h, left, bottom, top, right) = (640.0_f64, 220.0_f64, 44.0_f64, 28.0_f64, 10.0_f64, 130.0_f64);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let mut series: BTreeMap<Processor, BTreeMap<DateTime<Utc>, (u64, u64)>> = BTreeMap::new();
    for r in rows {
        let e = series.entry(r.processor).or_default().entry(crate::store::hour_start(r.window_start)).or_default();
        e.0 += r.total_jobs;
        e.1 += r.error_count;
    }
    let max_rate = series
        .values()
        .flat_map(|s| s.values())
        .filter(|(jobs, _)| *jobs > 0)
        .map(|(jobs, errors)| 100.0 * *errors as f64 / *jobs as f64)
        .fold(threshold, f64::max)
        .max(1.0)
        * 1.1;
    let span = (now - since).num_seconds().max(1) as f64;
    let x = |t: DateTime<Utc>| left + plot_w * ((t - since).num_seconds() as f64 / span).clamp(0.0, 1.0);
    let y = |rate: f64| top + plot_h * (1.0 - (rate / max_rate).clamp(0.0, 1.0));
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg id=\"error-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         role=\"img\" aria-label=\"error rate per processor\">\
         <rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"#fafafa\" stroke=\"#ccc\"/>"
    );
    for frac in [0.0, 0.5, 1.0] {
        let rate = max_rate * frac;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{rate:.1}%</text>",
            left - 4.0,
            y(rate) + 3.0
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">now</text>",
        h - 8.0,
        esc(&since.format("%Y-%m-%d %H:%M").to_string()),
        left + plot_w,
        h - 8.0
    );
    let ty = y(threshold);
    let _ = write!(
        svg,
        "<line x1=\"{left}\" x2=\"{}\" y1=\"{ty}\" y2=\"{ty}\" stroke=\"#c00\" stroke-dasharray=\"4 3\"/>\
         <text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#c00\">max {threshold}%</text>",
        left + plot_w,
        left + plot_w + 6.0,
        ty + 3.0
    );
    let colours = [("#1f77b4", Processor::Inngest), ("#2ca02c", Processor::GithubActions)];
    for (i, (colour, p)) in colours.iter().enumerate() {
        let points: Vec<(f64, f64, f64)> = series
            .get(p)
            .map(|s| {
                s.iter()
                    .filter(|(_, (jobs, _))| *jobs > 0)
                    .map(|(t, (jobs, errors))| {
                        let rate = 100.0 * *errors as f64 / *jobs as f64;
                        (x(*t + TimeDelta::minutes(30)), y(rate), rate)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let path: Vec<String> = points.iter().map(|(px, py, _)| format!("{px:.1},{py:.1}")).collect();
        if !path.is_empty() {
            let _ = write!(
                svg,
                "<polyline class=\"series\" data-processor=\"{p}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
            for (px, py, rate) in &points {
                let _ = write!(svg, "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"{colour}\"><title>{p}: {rate:.2}%</title></circle>");
            }
        }
        let ly = top + 14.0 * (i as f64 + 1.0) + 20.0;
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{ly}\" font-size=\"11\">{p}</text>",
            left + plot_w + 6.0,
            ly - 9.0,
            left + plot_w + 20.0
        );
    }
    svg.push_str("</svg>");
    svg
}

async fn chart_section(state: &Service, feature: &Arc<Feature>, out: &mut String) {
    let c = feature.manager.effective_config();
    let now = Utc::now();
    let since = now - TimeDelta::hours(i64::from(c.monitoring_window_hours.max(1)));
    let _ = write!(out, "<h2>Error rate per processor, last {} h</h2>", c.monitoring_window_hours);
    match state.store().metrics_window(c.id, since, DateTime::<Utc>::UNIX_EPOCH).await {
        Ok(rows) => {
            out.push_str(&error_chart(&rows, since, now, c.max_error_rate.value));
            let mut totals: BTreeMap<Processor, (u64, u64)> = BTreeMap::new();
            for r in &rows {
                let e = totals.entry(r.processor).or_default();
                e.0 += r.total_jobs;
                e.1 += r.error_count;
            }
            out.push_str(
                "<table id=\"processors\"><tr><th>processor</th><th>jobs</th><th>errors</th><th>error rate</th></tr>",
            );
            for p in Processor::ALL {
                let (jobs, errors) = totals.get(p).copied().unwrap_or_default();
                let rate = if jobs == 0 { 0.0 } else { 100.0 * errors as f64 / jobs as f64 };
                let _ = write!(out, "<tr><td>{p}</td><td>{jobs}</td><td>{errors}</td><td>{rate:.2} %</td></tr>");
            }
            out.push_str("</table>");
        }
        Err(e) => {
            state.db().observe::<(), _>(&Err(e));
            out.push_str("<p class=\"muted\">unavailable: the database cannot be read</p>");
        }
    }
}

fn categories_section(state: &Service, feature: &Arc<Feature>, out: &mut String) {
    out.push_str("<h2>Eligible repositories by category</h2>");
    let Some(p) = state.participation(feature) else {
        out.push_str("<p class=\"muted\">being counted; refresh in a moment</p>");
        return;
    };
    out.push_str(
        "<table id=\"categories\"><tr><th>category</th><th>threshold</th><th>categorised</th><th>eligible</th></tr>",
    );
    for c in Category::ALL {
        let total = p.categories.get(c.as_str()).copied().unwrap_or(0);
        let eligible = p.eligible_by_category.get(c.as_str()).copied().unwrap_or(0);
        let _ = write!(
            out,
            "<tr data-category=\"{c}\"><td>{c}</td><td>{} %</td><td>{total}</td><td class=\"eligible\">{eligible}</td></tr>",
            c.threshold()
        );
    }
    let _ = write!(
        out,
        "<tr><th>all</th><td></td><th>{}</th><th>{}</th></tr></table>",
        p.categorized_repositories, p.eligible_categorized_repositories
    );
    if !p.is_current(&feature.manager) {
        out.push_str("<p class=\"muted\">recounting after a change</p>");
    }
}

async fn history_section(state: &Service, feature: &Arc<Feature>, out: &mut String) {
    out.push_str("<h2>Recent history</h2>");
    let entries = match feature.manager.history(15).await {
        Ok(e) => e,
        Err(e) => {
            state.db().observe::<(), _>(&Err(e));
            out.push_str("<p class=\"muted\">unavailable: the database cannot be read</p>");
            return;
        }
    };
    out.push_str(
        "<table id=\"history\"><tr><th>when</th><th>action</th><th>percentage</th><th>by</th><th>reason</th></tr>",
    );
    for h in entries {
        let pct = match (h.previous_percentage, h.new_percentage) {
            (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
            (_, Some(b)) => b.to_string(),
            _ => String::new(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&h.created_at.format("%Y-%m-%d %H:%M:%S").to_string()),
            h.action.as_str(),
            esc(&pct),
            esc(h.triggered_by.as_deref().unwrap_or("")),
            esc(h.reason.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
}

/// `GET /`: the status page.
pub async fn status_page(State(state): State<AppState>, RawQuery(query): RawQuery) -> ApiResult<Html<String>> {
    let state = state.service();
    let name = query_feature(query.as_deref()).unwrap_or_else(|| state.options().default_feature.clone());
    let feature = state.feature(&name).await?;
    let c = feature.manager.effective_config();
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>rollout: {f}</title><style>{STYLE}</style></head><body><h1>rollout <code>{f}</code></h1>",
        f = esc(feature.name())
    );
    let policy = state.runtime().policy_version();
    let _ = write!(
        out,
        "<p>policy <strong id=\"policy-version\">{}</strong> · ready: <span id=\"ready\">{}</span> · {} · rendered {}</p>",
        policy.as_ref().map_or_else(
            || "none loaded (every decision falls back)".to_owned(),
            |p| format!("{} {} <code>{}</code>", esc(&p.name), esc(&p.version), esc(p.sha256.get(..12).unwrap_or(&p.sha256)))
        ),
        state.is_ready(),
        match state.store().backend() {
            crate::store::Backend::Postgres => "postgres",
            crate::store::Backend::Sqlite => "sqlite",
        },
        esc(&Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string()),
    );
    let features = state.features();
    if features.len() > 1 {
        out.push_str("<p>features: ");
        for f in &features {
            let _ = write!(out, "<a href=\"/?feature={0}\">{0}</a> ", esc(f.name()));
        }
        out.push_str("</p>");
    }
    if state.db().is_down() {
        let _ = write!(
            out,
            "<p class=\"bad\" id=\"stale\">the database is unreachable: decisions use the configuration read {:.0} s ago; \
             {} outcomes buffered; operations are refused</p>",
            feature.config_age_seconds(),
            feature.buffered()
        );
    }
    if c.emergency_stop.value {
        out.push_str("<p class=\"bad\">emergency stop is on: nobody is eligible</p>");
    }
    if c.rolled_back {
        out.push_str(
            "<p class=\"bad\">rolled back automatically: the percentage is held at 0 % (over any environment \
             override) until an operator sets one</p>",
        );
    }
    if !c.env_overrides.is_empty() {
        out.push_str("<p class=\"warn\">environment overrides in force: ");
        for o in &c.env_overrides {
            let _ = write!(out, "<code>{}={}</code> ", esc(o.variable), esc(&o.value));
        }
        out.push_str("</p>");
    }
    out.push_str("<div class=\"grid\"><div>");
    config_table(&mut out, &c);
    out.push_str("</div><div>");
    if let Some(h) = feature.last_health() {
        let _ = write!(
            out,
            "<h2>Health</h2><table id=\"health\"><tr><th>level</th><td>{}</td></tr><tr><th>error rate</th><td>{:.2} %</td></tr>\
             <tr><th>jobs in window</th><td>{}</td></tr><tr><th>reason</th><td>{}</td></tr></table>",
            h.level.map_or("unknown", rollout_policy::HealthLevel::as_str),
            h.error_rate,
            h.total_jobs,
            esc(&h.reason)
        );
    }
    categories_section(state, &feature, &mut out);
    out.push_str("</div></div>");
    chart_section(state, &feature, &mut out).await;
    history_section(state, &feature, &mut out).await;
    out.push_str(
        "<p class=\"muted\">JSON: <a href=\"/v1/features\">/v1/features</a> · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/readyz\">/readyz</a></p></body></html>",
    );
    Ok(Html(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn reads_the_feature_parameter() {
        assert_eq!(query_feature(Some("feature=my%20f")).as_deref(), Some("my f"));
        assert_eq!(query_feature(Some("x=1")), None);
        assert_eq!(query_feature(None), None);
    }

    #[test]
    fn chart_has_a_series_per_processor_with_data() {
        let now = Utc::now();
        let since = now - TimeDelta::hours(24);
        let row = |p, jobs, errors| WindowRow {
            processor: p,
            window_start: crate::store::hour_start(now - TimeDelta::hours(2)),
            success_count: jobs - errors,
            error_count: errors,
            total_jobs: jobs,
            total_processing_time_ms: 0,
            timed_jobs: 0,
        };
        let svg = error_chart(&[row(Processor::Inngest, 10, 1), row(Processor::GithubActions, 10, 0)], since, now, 5.0);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("data-processor=\"inngest\""));
        assert!(svg.contains("data-processor=\"github_actions\""));
        assert!(svg.contains("inngest: 10.00%"));
    }
}
