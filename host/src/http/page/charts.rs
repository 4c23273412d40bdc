//! Geometry of the status page's charts: plain numbers in SVG user units, computed here
//! (and unit-tested) so the templates only place them. Nothing here is markup: every
//! label the templates print is escaped by askama.

use crate::store::WindowRow;
use chrono::{DateTime, TimeDelta, Utc};
use rollout_policy::Processor;
use std::collections::BTreeMap;

/// The drawing area of a chart: the whole `viewBox` and the margins around the plot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame {
    /// Width of the `viewBox`.
    pub width: f64,
    /// Height of the `viewBox`.
    pub height: f64,
    /// Margin left of the plot (y labels).
    pub left: f64,
    /// Margin right of the plot (legend, threshold label).
    pub right: f64,
    /// Margin above the plot.
    pub top: f64,
    /// Margin below the plot (x labels).
    pub bottom: f64,
}

impl Frame {
    /// Width of the plot.
    pub fn plot_width(&self) -> f64 {
        (self.width - self.left - self.right).max(1.0)
    }

    /// Height of the plot.
    pub fn plot_height(&self) -> f64 {
        (self.height - self.top - self.bottom).max(1.0)
    }

    /// Right edge of the plot.
    pub fn plot_right(&self) -> f64 {
        self.left + self.plot_width()
    }

    /// x of `t` on a time axis from `since` to `now` (clamped to the plot).
    pub fn x_at(&self, t: DateTime<Utc>, since: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
        let span = (now - since).num_milliseconds().max(1) as f64;
        self.left + self.plot_width() * ((t - since).num_milliseconds() as f64 / span).clamp(0.0, 1.0)
    }

    /// y of `value` on an axis from 0 (bottom) to `max` (top), clamped to the plot.
    pub fn y_at(&self, value: f64, max: f64) -> f64 {
        let max = if max > 0.0 { max } else { 1.0 };
        self.top + self.plot_height() * (1.0 - (value / max).clamp(0.0, 1.0))
    }
}

/// A labelled horizontal line across the plot (an axis tick).
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Its y.
    pub y: f64,
    /// y of its label's baseline.
    pub label_y: f64,
    /// The label.
    pub label: String,
}

/// `points` as the `points` attribute of a `<polyline>` (one decimal).
pub fn points_attr(points: &[(f64, f64)]) -> String {
    points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect::<Vec<_>>().join(" ")
}

fn ticks(frame: &Frame, max: f64, unit: &str, fractions: &[f64]) -> Vec<Tick> {
    fractions
        .iter()
        .map(|f| {
            let v = max * f;
            let y = frame.y_at(v, max);
            let label = if max >= 10.0 { format!("{v:.0}{unit}") } else { format!("{v:.1}{unit}") };
            Tick { y, label_y: y + 3.0, label }
        })
        .collect()
}

/// The frame of the ramp chart.
pub const RAMP_FRAME: Frame = Frame { width: 640.0, height: 180.0, left: 40.0, right: 16.0, top: 10.0, bottom: 24.0 };

/// The step chart of the rollout percentage over time.
#[derive(Debug, Clone, PartialEq)]
pub struct RampChart {
    /// The frame.
    pub frame: Frame,
    /// The corners of the step line, oldest first, ending at now.
    pub points: Vec<(f64, f64)>,
    /// The same as a `points` attribute.
    pub points_attr: String,
    /// One dot per change, with its label (`10 % at 2026-01-01 12:00`).
    pub marks: Vec<(f64, f64, String)>,
    /// The y axis: 0, 50 and 100 %.
    pub ticks: Vec<Tick>,
    /// Label of the start of the time axis.
    pub since_label: String,
}

/// The ramp from `start` (the percentage before the first step) through `steps` (time and
/// new percentage, oldest first) to `now`, on a time axis from `since` to `now` and a
/// percentage axis from 0 to 100: a horizontal segment per level, a vertical one per step.
pub fn ramp_chart(
    frame: Frame,
    start: u8,
    steps: &[(DateTime<Utc>, u8)],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> RampChart {
    let y = |p: u8| frame.y_at(f64::from(p), 100.0);
    let mut points = vec![(frame.x_at(since, since, now), y(start))];
    let mut marks = Vec::with_capacity(steps.len());
    let mut level = start;
    for (t, p) in steps {
        let x = frame.x_at(*t, since, now);
        points.push((x, y(level)));
        points.push((x, y(*p)));
        marks.push((x, y(*p), format!("{p} % at {}", t.format("%Y-%m-%d %H:%M:%S UTC"))));
        level = *p;
    }
    points.push((frame.x_at(now, since, now), y(level)));
    // a step with no time between it and the previous corner draws nothing: leave it out
    points.dedup_by(|b, a| (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
    RampChart {
        frame,
        points_attr: points_attr(&points),
        points,
        marks,
        ticks: ticks(&frame, 100.0, " %", &[0.0, 0.5, 1.0]),
        since_label: since.format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// The frame of the error-rate chart.
pub const ERROR_FRAME: Frame = Frame { width: 640.0, height: 220.0, left: 44.0, right: 130.0, top: 10.0, bottom: 28.0 };

/// One processor's line on the error-rate chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The processor.
    pub processor: String,
    /// Its colour.
    pub colour: &'static str,
    /// The line, as a `points` attribute (empty without data).
    pub points_attr: String,
    /// One dot per hour with jobs: x, y and the label (`inngest: 1.50%`).
    pub dots: Vec<(f64, f64, String)>,
    /// y of its legend entry's text baseline.
    pub legend_y: f64,
}

/// The hourly error rate per processor, with the threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorChart {
    /// The frame.
    pub frame: Frame,
    /// The y axis.
    pub ticks: Vec<Tick>,
    /// y of the threshold line.
    pub threshold_y: f64,
    /// The threshold's label (`max 5%`).
    pub threshold_label: String,
    /// One line per processor.
    pub series: Vec<Series>,
    /// Label of the start of the time axis.
    pub since_label: String,
}

/// The colours of the processors' lines, bars and legends.
pub fn colour(p: Processor) -> &'static str {
    match p {
        Processor::Inngest => "#1f77b4",
        Processor::GithubActions => "#2ca02c",
    }
}

/// The hourly error rate of `rows` per processor from `since` to `now` (each hour's dot at
/// its middle), on an axis up to 110 % of the larger of the highest rate, the threshold
/// and 1 %.
pub fn error_chart(
    frame: Frame,
    rows: &[WindowRow],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    threshold: f64,
) -> ErrorChart {
    let mut hourly: BTreeMap<Processor, BTreeMap<DateTime<Utc>, (u64, u64)>> = BTreeMap::new();
    for r in rows {
        let e = hourly.entry(r.processor).or_default().entry(crate::store::hour_start(r.window_start)).or_default();
        e.0 = e.0.saturating_add(r.total_jobs);
        e.1 = e.1.saturating_add(r.error_count);
    }
    let rate = |jobs: u64, errors: u64| 100.0 * errors as f64 / jobs as f64;
    let max = hourly
        .values()
        .flat_map(|s| s.values())
        .filter(|(jobs, _)| *jobs > 0)
        .map(|(jobs, errors)| rate(*jobs, *errors))
        .fold(threshold, f64::max)
        .max(1.0)
        * 1.1;
    let series = Processor::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let dots: Vec<(f64, f64, String)> = hourly
                .get(p)
                .map(|s| {
                    s.iter()
                        .filter(|(_, (jobs, _))| *jobs > 0)
                        .map(|(t, (jobs, errors))| {
                            let r = rate(*jobs, *errors);
                            (
                                frame.x_at(*t + TimeDelta::minutes(30), since, now),
                                frame.y_at(r, max),
                                format!("{p}: {r:.2}%"),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let line: Vec<(f64, f64)> = dots.iter().map(|(x, y, _)| (*x, *y)).collect();
            Series {
                processor: p.as_str().to_owned(),
                colour: colour(*p),
                points_attr: points_attr(&line),
                dots,
                legend_y: frame.top + 14.0 * (i as f64 + 1.0) + 20.0,
            }
        })
        .collect();
    ErrorChart {
        frame,
        ticks: ticks(&frame, max, "%", &[0.0, 0.5, 1.0]),
        threshold_y: frame.y_at(threshold, max),
        threshold_label: format!("max {threshold}%"),
        series,
        since_label: since.format("%Y-%m-%d %H:%M").to_string(),
    }
}

/// Height of one bar of a bar chart, and the gap below it.
const BAR: f64 = 16.0;
const BAR_GAP: f64 = 8.0;

/// The frame of a horizontal bar chart with `rows` bars.
pub fn bar_frame(rows: usize) -> Frame {
    Frame {
        width: 420.0,
        height: 8.0 + (BAR + BAR_GAP) * rows.max(1) as f64,
        left: 138.0,
        right: 96.0,
        top: 4.0,
        bottom: 4.0,
    }
}

/// What one bar shows.
#[derive(Debug, Clone, PartialEq)]
pub struct BarInput {
    /// What the bar's value label is known by (its element id is `{chart id}-{key}`).
    pub key: String,
    /// What it counts.
    pub label: String,
    /// Its value.
    pub value: f64,
    /// The value as shown beside the bar.
    pub value_label: String,
    /// Its colour.
    pub colour: &'static str,
}

impl BarInput {
    /// A bar.
    pub fn new(
        key: impl Into<String>,
        label: impl Into<String>,
        value: f64,
        value_label: impl Into<String>,
        colour: &'static str,
    ) -> BarInput {
        BarInput { key: key.into(), label: label.into(), value, value_label: value_label.into(), colour }
    }
}

/// One bar of a horizontal bar chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Element id of its value label.
    pub id: String,
    /// What it counts.
    pub label: String,
    /// The value as shown beside the bar.
    pub value_label: String,
    /// Its top.
    pub y: f64,
    /// Baseline of its labels.
    pub text_y: f64,
    /// Its length (0 for a zero value).
    pub width: f64,
    /// Where the value label starts.
    pub value_x: f64,
    /// Its colour.
    pub colour: &'static str,
}

/// A horizontal bar chart.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// The `<svg>` element's id.
    pub id: String,
    /// The frame.
    pub frame: Frame,
    /// The bars, top to bottom.
    pub bars: Vec<Bar>,
}

/// A chart `id` of `rows`, scaled so the largest value (or `max` when larger) fills the
/// plot.
pub fn bar_chart(id: &str, rows: Vec<BarInput>, max: f64) -> BarChart {
    let frame = bar_frame(rows.len());
    let scale = rows.iter().map(|r| r.value).fold(max, f64::max);
    let bars = rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let y = frame.top + (BAR + BAR_GAP) * i as f64;
            let width = if scale > 0.0 { frame.plot_width() * (r.value / scale).clamp(0.0, 1.0) } else { 0.0 };
            Bar {
                id: format!("{id}-{}", r.key),
                label: r.label,
                value_label: r.value_label,
                y,
                text_y: y + BAR - 4.0,
                width,
                value_x: frame.left + width + 6.0,
                colour: r.colour,
            }
        })
        .collect();
    BarChart { id: id.to_owned(), frame, bars }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plot of exactly 100 × 100 from (20, 10).
    const SQUARE: Frame = Frame { width: 140.0, height: 120.0, left: 20.0, right: 20.0, top: 10.0, bottom: 10.0 };

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_767_225_600 + minutes * 60, 0).unwrap()
    }

    #[test]
    fn a_ramp_is_a_step_line_through_each_level() {
        // 0 % from the start, 10 % after a quarter of the span, 50 % at half, until now
        let chart = ramp_chart(SQUARE, 0, &[(at(25), 10), (at(50), 50)], at(0), at(100));
        assert_eq!(
            chart.points,
            vec![(20.0, 110.0), (45.0, 110.0), (45.0, 100.0), (70.0, 100.0), (70.0, 60.0), (120.0, 60.0)]
        );
        assert_eq!(chart.points_attr, "20.0,110.0 45.0,110.0 45.0,100.0 70.0,100.0 70.0,60.0 120.0,60.0");
        let marks: Vec<(f64, f64)> = chart.marks.iter().map(|(x, y, _)| (*x, *y)).collect();
        assert_eq!(marks, vec![(45.0, 100.0), (70.0, 60.0)]);
        assert!(chart.marks[1].2.starts_with("50 % at "), "{:?}", chart.marks);
        let ticks: Vec<(f64, &str)> = chart.ticks.iter().map(|t| (t.y, t.label.as_str())).collect();
        assert_eq!(ticks, vec![(110.0, "0 %"), (60.0, "50 %"), (10.0, "100 %")]);
    }

    #[test]
    fn a_ramp_without_steps_is_flat_and_steps_outside_the_axis_are_clamped() {
        let flat = ramp_chart(SQUARE, 30, &[], at(0), at(100));
        assert_eq!(flat.points, vec![(20.0, 80.0), (120.0, 80.0)]);
        // a step at the very start: no zero-length segment
        let late = ramp_chart(SQUARE, 0, &[(at(0), 100), (at(200), 20)], at(0), at(100));
        assert_eq!(late.points, vec![(20.0, 110.0), (20.0, 10.0), (120.0, 10.0), (120.0, 90.0)]);
    }

    #[test]
    fn error_rates_are_placed_per_processor_with_the_threshold() {
        let since = at(0);
        let now = at(24 * 60);
        let row = |p, hour: i64, jobs, errors| WindowRow {
            processor: p,
            window_start: at(hour * 60),
            success_count: jobs - errors,
            error_count: errors,
            total_jobs: jobs,
            total_processing_time_ms: 0,
            timed_jobs: 0,
        };
        // 10 % at hour 5 for inngest (the maximum: the axis goes to 11 %), none for actions
        let rows = [row(Processor::Inngest, 5, 10, 1), row(Processor::GithubActions, 11, 20, 0)];
        let c = error_chart(ERROR_FRAME, &rows, since, now, 5.0);
        let plot_w = 640.0 - 44.0 - 130.0;
        let plot_h = 220.0 - 10.0 - 28.0;
        let inngest = &c.series[0];
        assert_eq!(inngest.processor, "inngest");
        assert_eq!(inngest.dots.len(), 1);
        let (x, y, label) = &inngest.dots[0];
        assert!((x - (44.0 + plot_w * 5.5 / 24.0)).abs() < 1e-9, "{x}");
        assert!((y - (10.0 + plot_h * (1.0 - 10.0 / 11.0))).abs() < 1e-9, "{y}");
        assert_eq!(label, "inngest: 10.00%");
        let actions = &c.series[1];
        assert!((actions.dots[0].1 - (10.0 + plot_h)).abs() < 1e-9, "0 % sits on the bottom");
        assert!((c.threshold_y - (10.0 + plot_h * (1.0 - 5.0 / 11.0))).abs() < 1e-9);
        assert_eq!(c.threshold_label, "max 5%");
    }

    #[test]
    fn bars_scale_to_the_largest_value() {
        let bar = |k: &str, v: f64| BarInput::new(k, k, v, v.to_string(), "#000");
        let c = bar_chart("c", vec![bar("a", 50.0), bar("b", 100.0), bar("c", 0.0)], 0.0);
        let w = c.frame.plot_width();
        let widths: Vec<f64> = c.bars.iter().map(|b| b.width).collect();
        assert_eq!(widths, vec![w / 2.0, w, 0.0]);
        assert_eq!(c.bars[1].y, 4.0 + 24.0);
        assert_eq!(c.bars[1].id, "c-b");
        // a fixed scale (percentages) is kept when every value is below it
        let pct = bar_chart("p", vec![bar("a", 25.0)], 100.0);
        assert_eq!(pct.bars[0].width, pct.frame.plot_width() / 4.0);
        // nothing to show: no bar, no division by zero
        assert_eq!(bar_chart("z", vec![bar("a", 0.0)], 0.0).bars[0].width, 0.0);
    }
}
