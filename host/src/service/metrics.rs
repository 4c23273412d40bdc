//! The Prometheus registry: atomics on the hot path, encoded in the OpenMetrics text format
//! by [`prometheus_client`] at scrape time.
//!
//! Decision counters are fixed arrays indexed by the policy's enums (no locks on the hot
//! path); request latency is a histogram per (method, route) kept in a map that is only
//! written the first time a route is seen. A scrape snapshots the maps (cheap `Arc` clones)
//! into a [`Collector`] that reads the atomics while `prometheus_client` encodes the typed
//! families (counters get their `_total` suffix from the encoder).

use crate::manager::HealthReport;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use rollout_policy::{EligibilityReason, HealthLevel, Processor, RouteRule};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counters are arrays indexed by the policy's enums, sized from them: a new rule or
/// reason grows them with no edit here.
const PROCESSORS: usize = Processor::ALL.len();
const RULES: usize = RouteRule::ALL.len();
const REASONS: usize = EligibilityReason::ALL.len();

fn processor_index(p: Processor) -> usize {
    Processor::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

fn rule_index(r: RouteRule) -> usize {
    RouteRule::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

fn reason_index(r: EligibilityReason) -> usize {
    EligibilityReason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

/// Decision counters of one feature.
pub struct DecisionCounters {
    routes: [[[AtomicU64; REASONS]; RULES]; PROCESSORS],
    eligibility: [[AtomicU64; REASONS]; 2],
    rollbacks: AtomicU64,
    /// Error rate (percent) of the last health check, as f64 bits.
    error_rate: AtomicU64,
    /// Error rate per processor of the last health check, as f64 bits.
    processor_error_rate: [AtomicU64; PROCESSORS],
    buffered: AtomicU64,
    buffered_bytes: AtomicU64,
    dead_lettered: AtomicU64,
}

impl std::fmt::Debug for DecisionCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCounters").finish_non_exhaustive()
    }
}

impl Default for DecisionCounters {
    fn default() -> Self {
        DecisionCounters {
            routes: std::array::from_fn(|_| std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0)))),
            eligibility: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            rollbacks: AtomicU64::new(0),
            error_rate: AtomicU64::new(0f64.to_bits()),
            processor_error_rate: std::array::from_fn(|_| AtomicU64::new(0f64.to_bits())),
            buffered: AtomicU64::new(0),
            buffered_bytes: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        }
    }
}

impl DecisionCounters {
    /// Count a routing decision.
    #[inline]
    pub fn route(&self, d: &rollout_policy::RouteDecision) {
        if let Some(c) = self
            .routes
            .get(processor_index(d.processor))
            .and_then(|a| a.get(rule_index(d.rule)))
            .and_then(|a| a.get(reason_index(d.eligibility.reason)))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Count an eligibility decision.
    #[inline]
    pub fn eligibility(&self, e: &rollout_policy::Eligibility) {
        if let Some(c) = self.eligibility.get(usize::from(e.eligible)).and_then(|a| a.get(reason_index(e.reason))) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// Count a rollback this process made.
    pub fn rollback(&self) {
        self.rollbacks.fetch_add(1, Relaxed);
    }

    /// Record the error rates of a health check.
    pub fn health(&self, error_rate: f64, per_processor: &[(Processor, f64)]) {
        self.error_rate.store(error_rate.to_bits(), Relaxed);
        for (p, rate) in per_processor {
            if let Some(slot) = self.processor_error_rate.get(processor_index(*p)) {
                slot.store(rate.to_bits(), Relaxed);
            }
        }
    }

    /// Count buffered outcomes the database refused and that were set aside.
    pub fn dead_lettered(&self, n: usize) {
        self.dead_lettered.fetch_add(n as u64, Relaxed);
    }

    /// Outcomes set aside so far.
    pub fn dead_letters(&self) -> u64 {
        self.dead_lettered.load(Relaxed)
    }

    /// Set the number and size of outcomes waiting for the database.
    pub fn set_buffered(&self, n: usize, bytes: usize) {
        self.buffered.store(n as u64, Relaxed);
        self.buffered_bytes.store(bytes as u64, Relaxed);
    }

    /// Route decisions with rule `policy_error` plus eligibility decisions with reason
    /// `policy_error`.
    pub fn fallbacks(&self) -> u64 {
        let pe = reason_index(EligibilityReason::PolicyError);
        let rule = rule_index(RouteRule::PolicyError);
        let mut n = 0;
        for per_processor in &self.routes {
            if let Some(per_reason) = per_processor.get(rule) {
                n += per_reason.iter().map(|c| c.load(Relaxed)).sum::<u64>();
            }
        }
        for per_eligible in &self.eligibility {
            n += per_eligible.get(pe).map_or(0, |c| c.load(Relaxed));
        }
        n
    }

    /// Routing decisions counted so far per rule (summed over processors and eligibility
    /// reasons), every rule present, in [`RouteRule::ALL`] order.
    pub fn decisions_by_rule(&self) -> Vec<(RouteRule, u64)> {
        RouteRule::ALL
            .iter()
            .enumerate()
            .map(|(ri, r)| {
                let n: u64 =
                    self.routes.iter().filter_map(|per_rule| per_rule.get(ri)).flatten().map(|c| c.load(Relaxed)).sum();
                (*r, n)
            })
            .collect()
    }
}

/// The methods with a latency histogram of their own; anything else counts as `OTHER`.
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OTHER"];

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Count, sum (seconds) and per-bucket (not cumulative) counts with `+Inf` last, as
    /// the encoder takes them; the count is never below the buckets' total (an observation
    /// racing the scrape may be in its bucket before it is in the count).
    fn snapshot(&self) -> (u64, f64, Vec<(f64, u64)>) {
        let count = self.count.load(Relaxed);
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let mut buckets: Vec<(f64, u64)> =
            BUCKETS.iter().zip(self.buckets.iter()).map(|(bound, n)| (*bound, n.load(Relaxed))).collect();
        let finite: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(finite)));
        (count.max(finite), sum, buckets)
    }
}

/// Latest backlog report of one (feature, processor).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Backlog {
    depth: u64,
    oldest_age_seconds: f64,
}

/// The process-wide registry.
#[derive(Default)]
pub struct Metrics {
    features: RwLock<BTreeMap<String, Arc<DecisionCounters>>>,
    /// Per route, one histogram per method of [`METHODS`].
    latency: RwLock<BTreeMap<String, Arc<[Histogram; METHODS.len()]>>>,
    config_reloads: AtomicU64,
    notifications: AtomicU64,
    health_checks: AtomicU64,
    requests_refused: AtomicU64,
    requests_timed_out: AtomicU64,
    outcomes_refused: AtomicU64,
    /// Per (feature, processor), the last backlog reported.
    backlog: RwLock<BTreeMap<(String, String), Backlog>>,
    alerts_pending: AtomicU64,
    alerts_dead: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the last health check of a feature found, for the `rollout_health_level` and
/// `rollout_processing_time_ms` gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureHealth {
    /// The level; `None` before the first check or when the policy gave no answer
    /// (rendered as -1, unknown).
    pub level: Option<HealthLevel>,
    /// Per processor, the p50, p95 and p99 processing times (ms) over the window; `None`
    /// where no job reported a time.
    pub processing_ms: BTreeMap<String, [Option<f64>; 3]>,
}

impl From<&HealthReport> for FeatureHealth {
    fn from(report: &HealthReport) -> FeatureHealth {
        FeatureHealth {
            level: report.level,
            processing_ms: report
                .processors
                .iter()
                .map(|(p, s)| {
                    (p.clone(), [s.p50_processing_time_ms, s.p95_processing_time_ms, s.p99_processing_time_ms])
                })
                .collect(),
        }
    }
}

impl FeatureHealth {
    /// The gauge value of [`FeatureHealth::level`]: 0 ok, 1 warning, 2 critical, -1 unknown.
    pub fn level_value(&self) -> i64 {
        match self.level {
            Some(HealthLevel::Ok) => 0,
            Some(HealthLevel::Warning) => 1,
            Some(HealthLevel::Critical) => 2,
            None => -1,
        }
    }
}

/// The `quantile` label values of `rollout_processing_time_ms`, in the order of
/// [`FeatureHealth::processing_ms`].
const QUANTILES: [&str; 3] = ["0.5", "0.95", "0.99"];

/// Values read from elsewhere at render time.
#[derive(Debug, Clone, Default)]
pub struct RenderInputs {
    /// Name, version and sha256 of the serving policy.
    pub policy: Option<crate::engine::PolicyVersion>,
    /// Policy swaps in this process.
    pub swaps: u64,
    /// Automatic reverts of new policy versions.
    pub auto_reverts: u64,
    /// Decisions answered with the fallback because no policy was loaded.
    pub fallbacks_without_policy: u64,
    /// Whether the database answered the last time it was asked.
    pub database_up: bool,
    /// Seconds since the configuration was last read from the database.
    pub config_age_seconds: f64,
    /// Whether the service is ready.
    pub ready: bool,
    /// Per feature served, what its last health check found (a feature absent here but
    /// with counters renders health level -1).
    pub health: BTreeMap<String, FeatureHealth>,
    /// The decision log's figures.
    pub decision_log: super::decision_log::DecisionLogFigures,
    /// The policy candidate this process follows (shadow and canary counts).
    pub candidate: Option<super::candidate::CandidateStatus>,
}

impl Metrics {
    /// The counters of `feature` (created on first use).
    pub fn feature(&self, feature: &str) -> Arc<DecisionCounters> {
        if let Some(c) = read(&self.features).get(feature) {
            return c.clone();
        }
        write(&self.features).entry(feature.to_owned()).or_default().clone()
    }

    /// Record one request's latency.
    pub fn observe_request(&self, method: &str, route: &str, elapsed: Duration) {
        let m = METHODS.iter().position(|x| *x == method).unwrap_or(METHODS.len() - 1);
        let found = read(&self.latency).get(route).cloned();
        let per_method = match found {
            Some(h) => h,
            None => write(&self.latency)
                .entry(route.to_owned())
                .or_insert_with(|| Arc::new(std::array::from_fn(|_| Histogram::new())))
                .clone(),
        };
        if let Some(h) = per_method.get(m) {
            h.observe(elapsed);
        }
    }

    /// Count a configuration reload.
    pub fn config_reloaded(&self) {
        self.config_reloads.fetch_add(1, Relaxed);
    }

    /// Count a change notification received.
    pub fn notified(&self) {
        self.notifications.fetch_add(1, Relaxed);
    }

    /// Count a health check run.
    pub fn health_checked(&self) {
        self.health_checks.fetch_add(1, Relaxed);
    }

    /// Count a request refused because the server had its limit of requests in flight.
    pub fn request_refused(&self) {
        self.requests_refused.fetch_add(1, Relaxed);
    }

    /// Count outcomes refused because the outage buffer was full.
    pub fn outcomes_refused(&self, n: usize) {
        self.outcomes_refused.fetch_add(n as u64, Relaxed);
    }

    /// Count a request ended at its deadline.
    pub fn request_timed_out(&self) {
        self.requests_timed_out.fetch_add(1, Relaxed);
    }

    /// Set the queue backlog of `processor` in `feature`: `depth` items waiting, the oldest
    /// of them waiting for `oldest_age_seconds`. Rendered as the gauges
    /// `rollout_queue_backlog_depth{feature,processor}` and
    /// `rollout_queue_backlog_oldest_age_seconds{feature,processor}`; a pair never set has
    /// no sample. The latest call wins (a report of depth 0 keeps the series at 0).
    pub fn set_backlog(&self, feature: &str, processor: &str, depth: u64, oldest_age_seconds: f64) {
        let value = Backlog { depth, oldest_age_seconds };
        write(&self.backlog).insert((feature.to_owned(), processor.to_owned()), value);
    }

    /// Set the alert outbox's figures: `pending` events not yet delivered to every webhook
    /// and `dead` events that exhausted their retries. Rendered as the gauges
    /// `rollout_alerts_pending` and `rollout_alerts_dead_letter` (both 0 until called).
    pub fn set_alert_outbox(&self, pending: u64, dead: u64) {
        self.alerts_pending.store(pending, Relaxed);
        self.alerts_dead.store(dead, Relaxed);
    }

    /// The registry in the OpenMetrics text format ([`CONTENT_TYPE`]), ending with `# EOF`.
    pub fn render(&self, inputs: &RenderInputs) -> String {
        let scrape = Scrape {
            features: read(&self.features).clone(),
            latency: read(&self.latency).clone(),
            backlog: read(&self.backlog).clone(),
            scalars: Scalars {
                config_reloads: self.config_reloads.load(Relaxed),
                notifications: self.notifications.load(Relaxed),
                health_checks: self.health_checks.load(Relaxed),
                requests_refused: self.requests_refused.load(Relaxed),
                requests_timed_out: self.requests_timed_out.load(Relaxed),
                outcomes_refused: self.outcomes_refused.load(Relaxed),
                alerts_pending: self.alerts_pending.load(Relaxed),
                alerts_dead: self.alerts_dead.load(Relaxed),
            },
            inputs: inputs.clone(),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut out = String::with_capacity(8192);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            // Writing to a String does not fail; an encoder error still must not lose the
            // scrape silently.
            tracing::error!("encoding the metrics failed: {e}");
        }
        out
    }
}

/// Counters of the process, read once per scrape.
#[derive(Debug, Clone, Copy, Default)]
struct Scalars {
    config_reloads: u64,
    notifications: u64,
    health_checks: u64,
    requests_refused: u64,
    requests_timed_out: u64,
    outcomes_refused: u64,
    alerts_pending: u64,
    alerts_dead: u64,
}

/// One scrape: the maps of the registry (their atomics are read while encoding) and the
/// values given by the caller.
#[derive(Debug)]
struct Scrape {
    features: BTreeMap<String, Arc<DecisionCounters>>,
    latency: BTreeMap<String, Arc<[Histogram; METHODS.len()]>>,
    backlog: BTreeMap<(String, String), Backlog>,
    scalars: Scalars,
    inputs: RenderInputs,
}

/// A sample's labels.
type Labels = Vec<(&'static str, String)>;

/// One family: its descriptor, then each sample (labels and value).
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter family; `name` without the `_total` the encoder appends.
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Counter, samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v))))
}

/// A gauge family.
fn gauges<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, N)>,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Gauge, samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v))))
}

fn feature_label(feature: &str) -> Labels {
    vec![("feature", feature.to_owned())]
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let features = &self.features;
        let inputs = &self.inputs;
        let per_feature = |value: fn(&DecisionCounters) -> u64| -> Vec<(Labels, u64)> {
            features.iter().map(|(f, c)| (feature_label(f), value(c))).collect()
        };

        let mut decisions = Vec::new();
        for (feature, c) in features {
            for (pi, p) in Processor::ALL.iter().enumerate() {
                for (ri, r) in RouteRule::ALL.iter().enumerate() {
                    for (ei, reason) in EligibilityReason::ALL.iter().enumerate() {
                        let n = c
                            .routes
                            .get(pi)
                            .and_then(|a| a.get(ri))
                            .and_then(|a| a.get(ei))
                            .map_or(0, |x| x.load(Relaxed));
                        if n > 0 {
                            let labels = vec![
                                ("feature", feature.clone()),
                                ("processor", p.to_string()),
                                ("rule", r.to_string()),
                                ("reason", reason.to_string()),
                            ];
                            decisions.push((labels, n));
                        }
                    }
                }
            }
        }
        counters(
            e,
            "rollout_decisions",
            "Routing decisions by feature, processor, rule and eligibility reason.",
            decisions,
        )?;

        let mut eligibility = Vec::new();
        for (feature, c) in features {
            for (eligible, per_reason) in c.eligibility.iter().enumerate() {
                for (ei, reason) in EligibilityReason::ALL.iter().enumerate() {
                    let n = per_reason.get(ei).map_or(0, |x| x.load(Relaxed));
                    if n > 0 {
                        let labels = vec![
                            ("feature", feature.clone()),
                            ("eligible", (eligible == 1).to_string()),
                            ("reason", reason.to_string()),
                        ];
                        eligibility.push((labels, n));
                    }
                }
            }
        }
        counters(
            e,
            "rollout_eligibility_decisions",
            "Eligibility decisions by feature, outcome and reason.",
            eligibility,
        )?;
        counters(
            e,
            "rollout_fallback_decisions",
            "Decisions answered with the policy_error fallback.",
            per_feature(DecisionCounters::fallbacks),
        )?;

        let mut error_rates = Vec::new();
        for (feature, c) in features {
            error_rates.push((feature_label(feature), f64::from_bits(c.error_rate.load(Relaxed))));
            for (pi, p) in Processor::ALL.iter().enumerate() {
                let rate = c.processor_error_rate.get(pi).map_or(0.0, |x| f64::from_bits(x.load(Relaxed)));
                error_rates.push((vec![("feature", feature.clone()), ("processor", p.to_string())], rate));
            }
        }
        gauges(
            e,
            "rollout_error_rate_percent",
            "Error rate over the health window at the last health check.",
            error_rates,
        )?;

        let mut names: Vec<&String> = features.keys().chain(inputs.health.keys()).collect();
        names.sort();
        names.dedup();
        let unknown = FeatureHealth::default();
        gauges(
            e,
            "rollout_health_level",
            "Health level at the last health check: 0 ok, 1 warning, 2 critical, -1 unknown (no check yet or no answer).",
            names.iter().map(|f| (feature_label(f), inputs.health.get(*f).unwrap_or(&unknown).level_value())),
        )?;
        let mut processing = Vec::new();
        for (feature, health) in &inputs.health {
            for (processor, quantiles) in &health.processing_ms {
                for (q, value) in QUANTILES.iter().zip(quantiles) {
                    if let Some(ms) = value {
                        let labels = vec![
                            ("feature", feature.clone()),
                            ("processor", processor.clone()),
                            ("quantile", (*q).to_owned()),
                        ];
                        processing.push((labels, *ms));
                    }
                }
            }
        }
        gauges(
            e,
            "rollout_processing_time_ms",
            "Processing time (ms) per processor over the health window at the last health check, by quantile.",
            processing,
        )?;

        let backlog_labels = |(f, p): &(String, String)| vec![("feature", f.clone()), ("processor", p.clone())];
        gauges(
            e,
            "rollout_queue_backlog_depth",
            "Items waiting in a processor's queue, as last reported.",
            self.backlog.iter().map(|(k, b)| (backlog_labels(k), b.depth)),
        )?;
        gauges(
            e,
            "rollout_queue_backlog_oldest_age_seconds",
            "Age of the oldest item waiting in a processor's queue, as last reported.",
            self.backlog.iter().map(|(k, b)| (backlog_labels(k), b.oldest_age_seconds)),
        )?;
        gauges(
            e,
            "rollout_alerts_pending",
            "Alert events in the outbox not yet delivered.",
            [(Labels::new(), self.scalars.alerts_pending)],
        )?;
        gauges(
            e,
            "rollout_alerts_dead_letter",
            "Alert events that exhausted their delivery retries.",
            [(Labels::new(), self.scalars.alerts_dead)],
        )?;
        let log = &inputs.decision_log;
        counters(
            e,
            "rollout_decision_log_written",
            "Decision log entries written to the database.",
            [(Labels::new(), log.written)],
        )?;
        counters(
            e,
            "rollout_decision_log_dropped",
            "Decision log entries dropped (never a decision), by reason: queue_full, write_failed, no_mask_key, policy_swapped.",
            super::decision_log::DropReason::ALL.iter().map(|r| (vec![("reason", r.as_str().to_owned())], log.dropped(*r))),
        )?;
        gauges(
            e,
            "rollout_decision_log_queue_entries",
            "Decision log entries waiting for the writer.",
            [(Labels::new(), log.queued)],
        )?;
        gauges(
            e,
            "rollout_decision_log_queue_bytes",
            "Bytes (estimated) of decision log entries waiting for the writer.",
            [(Labels::new(), log.queued_bytes)],
        )?;

        if let Some(c) = inputs.candidate.as_ref().filter(|c| c.state.is_some()) {
            let shadow_samples = c.shadow.iter().flat_map(|(f, s)| {
                [("match", s.matched), ("mismatch", s.mismatched), ("candidate_error", s.candidate_errors)]
                    .into_iter()
                    .map(move |(r, v)| (vec![("feature", f.clone()), ("result", r.to_owned())], v))
            });
            counters(
                e,
                "rollout_policy_shadow",
                "Decisions the shadow candidate was asked about, by feature and result: match, mismatch, candidate_error.",
                shadow_samples,
            )?;
            counters(
                e,
                "rollout_policy_shadow_dropped",
                "Shadow evaluations dropped because the shadow queue was full (never a decision).",
                [(Labels::new(), c.shadow_dropped)],
            )?;
            let share = c.state.as_ref().map_or(0.0, |s| match s.mode {
                super::candidate::CandidateMode::Canary => s.percentage,
                super::candidate::CandidateMode::Shadow => 0.0,
            });
            gauges(
                e,
                "rollout_policy_canary_percentage",
                "Share of repositories the canary candidate serves.",
                [(Labels::new(), share)],
            )?;
            let cohorts = || [("canary", c.canary.unwrap_or_default()), ("control", c.control.unwrap_or_default())];
            counters(
                e,
                "rollout_policy_canary_decisions",
                "Decisions of each cohort since the canary's share last changed.",
                cohorts().map(|(k, v)| (vec![("cohort", k.to_owned())], v.decisions)),
            )?;
            counters(
                e,
                "rollout_policy_canary_fallbacks",
                "Fallback decisions of each cohort since the canary's share last changed.",
                cohorts().map(|(k, v)| (vec![("cohort", k.to_owned())], v.fallbacks)),
            )?;
            counters(
                e,
                "rollout_policy_canary_outcomes",
                "Outcomes attributed to each cohort since the canary's share last changed.",
                cohorts().map(|(k, v)| (vec![("cohort", k.to_owned())], v.outcomes)),
            )?;
            counters(
                e,
                "rollout_policy_canary_failures",
                "Failed outcomes attributed to each cohort since the canary's share last changed.",
                cohorts().map(|(k, v)| (vec![("cohort", k.to_owned())], v.failures)),
            )?;
        }

        counters(
            e,
            "rollout_rollbacks",
            "Automatic rollbacks this process carried out.",
            per_feature(|c| c.rollbacks.load(Relaxed)),
        )?;
        gauges(
            e,
            "rollout_outcomes_buffered",
            "Outcomes waiting for the database.",
            per_feature(|c| c.buffered.load(Relaxed)),
        )?;
        gauges(
            e,
            "rollout_outcomes_buffered_bytes",
            "Bytes of outcomes waiting for the database.",
            per_feature(|c| c.buffered_bytes.load(Relaxed)),
        )?;
        counters(
            e,
            "rollout_outcomes_dead_lettered",
            "Buffered outcomes the database refused for their content, set aside.",
            per_feature(|c| c.dead_lettered.load(Relaxed)),
        )?;
        let one = |n: u64| [(Labels::new(), n)];
        counters(
            e,
            "rollout_outcomes_refused",
            "Outcomes refused because the outage buffer was full.",
            one(self.scalars.outcomes_refused),
        )?;

        let mut policy = e.encode_descriptor("rollout_policy", "The policy serving now.", None, MetricType::Info)?;
        if let Some(p) = &inputs.policy {
            let labels: Labels =
                vec![("name", p.name.clone()), ("version", p.version.clone()), ("sha256", p.sha256.clone())];
            policy.encode_info(&labels)?;
        }
        counters(
            e,
            "rollout_policy_swaps",
            "Policy activations in this process (loads and reverts).",
            one(inputs.swaps),
        )?;
        counters(
            e,
            "rollout_policy_auto_reverts",
            "New policy versions reverted for falling back too often.",
            one(inputs.auto_reverts),
        )?;
        counters(
            e,
            "rollout_policy_missing_fallbacks",
            "Decisions that fell back because no policy was loaded.",
            one(inputs.fallbacks_without_policy),
        )?;
        gauges(
            e,
            "rollout_database_up",
            "Whether the database answered the last time it was asked.",
            [(Labels::new(), i64::from(inputs.database_up))],
        )?;
        gauges(
            e,
            "rollout_config_age_seconds",
            "Seconds since the configuration was last read from the database.",
            [(Labels::new(), inputs.config_age_seconds)],
        )?;
        gauges(
            e,
            "rollout_ready",
            "Whether a policy and the configuration are loaded.",
            [(Labels::new(), i64::from(inputs.ready))],
        )?;
        counters(
            e,
            "rollout_config_reloads",
            "Configuration reloads (notifications and periodic re-reads).",
            one(self.scalars.config_reloads),
        )?;
        counters(
            e,
            "rollout_change_notifications",
            "Change notifications received from Postgres.",
            one(self.scalars.notifications),
        )?;
        counters(e, "rollout_health_checks", "Health checks run.", one(self.scalars.health_checks))?;
        counters(
            e,
            "rollout_http_requests_refused",
            "Requests refused at the limit of requests in flight.",
            one(self.scalars.requests_refused),
        )?;
        counters(
            e,
            "rollout_http_requests_timed_out",
            "Requests ended at their deadline.",
            one(self.scalars.requests_timed_out),
        )?;

        let mut latency = e.encode_descriptor(
            "rollout_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route.",
            None,
            MetricType::Histogram,
        )?;
        for (route, per_method) in &self.latency {
            for (method, h) in METHODS.iter().zip(per_method.iter()) {
                let (count, sum, buckets) = h.snapshot();
                if count == 0 {
                    continue;
                }
                let labels: Labels = vec![("method", (*method).to_owned()), ("route", route.clone())];
                latency.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::ProcessorStats;
    use rollout_policy::{Eligibility, HealthAction, RouteDecision};

    /// One sample of the exposition: name, labels (sorted by key) and value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parse the OpenMetrics text: every sample line, checking the exposition's shape
    /// (descriptors before samples, `# EOF` last).
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value `{v}`: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => (name.to_owned(), parse_labels(rest.strip_suffix('}').expect("closing brace"))),
            };
            samples.push((name, labels, value));
        }
        samples
    }

    fn parse_labels(s: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut chars = s.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "label {key} is not quoted: {s}");
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated label value") {
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => panic!("dangling escape: {s}"),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            out.insert(key, value);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        out
    }

    /// The value of the sample `name` with exactly the labels `labels`.
    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let found: Vec<f64> = samples.iter().filter(|(n, l, _)| n == name && *l == want).map(|(_, _, v)| *v).collect();
        assert!(found.len() <= 1, "{name} {labels:?} appears {} times", found.len());
        found.first().copied()
    }

    fn families(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
            .collect()
    }

    #[test]
    fn counts_render_with_labels() {
        let m = Metrics::default();
        let c = m.feature("f");
        let e = Eligibility { eligible: true, reason: EligibilityReason::InPercentage, bucket: 3 };
        c.route(&RouteDecision { processor: Processor::GithubActions, rule: RouteRule::ScheduledBulk, eligibility: e });
        c.route(&RouteDecision { processor: Processor::GithubActions, rule: RouteRule::ScheduledBulk, eligibility: e });
        c.route(&crate::engine::fallback_route());
        c.eligibility(&e);
        c.rollback();
        m.outcomes_refused(4);
        m.observe_request("POST", "/v1/features/{feature}/route", Duration::from_micros(300));
        m.observe_request("POST", "/v1/features/{feature}/route", Duration::from_secs(9));
        let text = m.render(&RenderInputs { swaps: 3, ready: false, ..RenderInputs::default() });
        let s = parse(&text);
        let decisions = [
            ("feature", "f"),
            ("processor", "github_actions"),
            ("rule", "scheduled_bulk"),
            ("reason", "in_percentage"),
        ];
        assert_eq!(value(&s, "rollout_decisions_total", &decisions), Some(2.0), "{text}");
        assert_eq!(value(&s, "rollout_fallback_decisions_total", &[("feature", "f")]), Some(1.0));
        assert_eq!(
            value(
                &s,
                "rollout_eligibility_decisions_total",
                &[("feature", "f"), ("eligible", "true"), ("reason", "in_percentage")]
            ),
            Some(1.0)
        );
        assert_eq!(value(&s, "rollout_rollbacks_total", &[("feature", "f")]), Some(1.0));
        assert_eq!(value(&s, "rollout_outcomes_refused_total", &[]), Some(4.0));
        assert_eq!(value(&s, "rollout_policy_swaps_total", &[]), Some(3.0));
        assert_eq!(value(&s, "rollout_ready", &[]), Some(0.0));
        assert_eq!(value(&s, "rollout_error_rate_percent", &[("feature", "f")]), Some(0.0));
        let route = [("method", "POST"), ("route", "/v1/features/{feature}/route")];
        let bucket = |le: &str| {
            let mut l = route.to_vec();
            l.push(("le", le));
            value(&s, "rollout_http_request_duration_seconds_bucket", &l)
        };
        assert_eq!(bucket("0.0005"), Some(1.0), "{text}");
        assert_eq!(bucket("0.00025"), Some(0.0));
        assert_eq!(bucket("5.0"), Some(1.0));
        assert_eq!(bucket("+Inf"), Some(2.0));
        assert_eq!(value(&s, "rollout_http_request_duration_seconds_count", &route), Some(2.0));
        let sum = value(&s, "rollout_http_request_duration_seconds_sum", &route).unwrap_or(0.0);
        assert!((sum - 9.0003).abs() < 1e-9, "{sum}");
        // the old text format's names survive: counters keep their `_total` samples
        let types = families(&text);
        assert_eq!(types.get("rollout_decisions").map(String::as_str), Some("counter"));
        assert_eq!(types.get("rollout_http_request_duration_seconds").map(String::as_str), Some("histogram"));
        assert_eq!(types.get("rollout_policy").map(String::as_str), Some("info"));
        assert!(!text.contains("rollout_policy_info{"), "no policy loaded, no info sample");
    }

    #[test]
    fn every_family_is_described_once_and_before_its_samples() {
        let m = Metrics::default();
        m.feature("f").rollback();
        let text = m.render(&RenderInputs::default());
        let types = families(&text);
        for name in [
            "rollout_decisions",
            "rollout_eligibility_decisions",
            "rollout_fallback_decisions",
            "rollout_error_rate_percent",
            "rollout_health_level",
            "rollout_processing_time_ms",
            "rollout_queue_backlog_depth",
            "rollout_queue_backlog_oldest_age_seconds",
            "rollout_alerts_pending",
            "rollout_alerts_dead_letter",
            "rollout_rollbacks",
            "rollout_outcomes_buffered",
            "rollout_outcomes_buffered_bytes",
            "rollout_outcomes_dead_lettered",
            "rollout_outcomes_refused",
            "rollout_policy",
            "rollout_policy_swaps",
            "rollout_policy_auto_reverts",
            "rollout_policy_missing_fallbacks",
            "rollout_database_up",
            "rollout_config_age_seconds",
            "rollout_ready",
            "rollout_config_reloads",
            "rollout_change_notifications",
            "rollout_health_checks",
            "rollout_http_requests_refused",
            "rollout_http_requests_timed_out",
            "rollout_http_request_duration_seconds",
        ] {
            assert!(types.contains_key(name), "{name} is not described:\n{text}");
            assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap_or_default().to_owned();
                assert!(seen.insert(current.clone()), "{current} described twice");
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&current), "{line} is outside its family {current}");
            }
        }
    }

    fn stats(p50: f64, p95: f64, p99: f64) -> ProcessorStats {
        ProcessorStats {
            total_jobs: 10,
            success_count: 10,
            error_count: 0,
            error_rate: 0.0,
            average_processing_time_ms: Some(p50),
            p50_processing_time_ms: Some(p50),
            p95_processing_time_ms: Some(p95),
            p99_processing_time_ms: Some(p99),
        }
    }

    fn report(level: Option<HealthLevel>) -> HealthReport {
        let mut processors = BTreeMap::new();
        processors.insert("inngest".to_owned(), stats(12.0, 250.5, 900.0));
        let mut untimed = stats(0.0, 0.0, 0.0);
        untimed.p50_processing_time_ms = None;
        untimed.p95_processing_time_ms = None;
        untimed.p99_processing_time_ms = None;
        processors.insert("github_actions".to_owned(), untimed);
        HealthReport {
            feature_name: "f".to_owned(),
            level,
            action: HealthAction::None,
            error_rate: 3.0,
            total_jobs: 20,
            reason: "test".to_owned(),
            policy_answered: level.is_some(),
            window_start: chrono::Utc::now(),
            window_hours: 24,
            processors,
            rolled_back: false,
            rollback: None,
            backlog: Default::default(),
            baseline_p95_processing_time_ms: Default::default(),
            limits: crate::manager::signals::default_limits().into(),
            signals_judged: true,
            notes: Vec::new(),
        }
    }

    #[test]
    fn health_level_and_processing_time_come_from_the_last_check() {
        let m = Metrics::default();
        m.feature("f");
        m.feature("unchecked");
        let mut health = BTreeMap::new();
        health.insert("f".to_owned(), FeatureHealth::from(&report(Some(HealthLevel::Warning))));
        health.insert("critical".to_owned(), FeatureHealth::from(&report(Some(HealthLevel::Critical))));
        health.insert("ok".to_owned(), FeatureHealth::from(&report(Some(HealthLevel::Ok))));
        health.insert("silent".to_owned(), FeatureHealth::from(&report(None)));
        let text = m.render(&RenderInputs { health, ..RenderInputs::default() });
        let s = parse(&text);
        let level = |f: &str| value(&s, "rollout_health_level", &[("feature", f)]);
        assert_eq!(level("f"), Some(1.0), "{text}");
        assert_eq!(level("critical"), Some(2.0));
        assert_eq!(level("ok"), Some(0.0));
        assert_eq!(level("silent"), Some(-1.0));
        assert_eq!(level("unchecked"), Some(-1.0));
        let time = |q: &str| {
            value(&s, "rollout_processing_time_ms", &[("feature", "f"), ("processor", "inngest"), ("quantile", q)])
        };
        assert_eq!((time("0.5"), time("0.95"), time("0.99")), (Some(12.0), Some(250.5), Some(900.0)), "{text}");
        assert!(
            !s.iter().any(|(n, l, _)| n == "rollout_processing_time_ms"
                && l.get("processor").map(String::as_str) == Some("github_actions")),
            "a processor without timed jobs has no processing time: {text}"
        );
        assert!(!s
            .iter()
            .any(|(n, l, _)| n == "rollout_processing_time_ms"
                && l.get("feature").map(String::as_str) == Some("unchecked")));
    }

    #[test]
    fn backlog_and_alert_outbox_are_absent_or_zero_until_set() {
        let m = Metrics::default();
        let before = parse(&m.render(&RenderInputs::default()));
        assert_eq!(value(&before, "rollout_alerts_pending", &[]), Some(0.0));
        assert_eq!(value(&before, "rollout_alerts_dead_letter", &[]), Some(0.0));
        assert!(!before.iter().any(|(n, _, _)| n.starts_with("rollout_queue_backlog")));

        m.set_backlog("f", "inngest", 42, 612.5);
        m.set_backlog("f", "github_actions", 7, 3.0);
        m.set_backlog("f", "github_actions", 0, 0.0);
        m.set_alert_outbox(3, 1);
        let text = m.render(&RenderInputs::default());
        let s = parse(&text);
        let inngest = [("feature", "f"), ("processor", "inngest")];
        let gha = [("feature", "f"), ("processor", "github_actions")];
        assert_eq!(value(&s, "rollout_queue_backlog_depth", &inngest), Some(42.0), "{text}");
        assert_eq!(value(&s, "rollout_queue_backlog_oldest_age_seconds", &inngest), Some(612.5));
        assert_eq!(value(&s, "rollout_queue_backlog_depth", &gha), Some(0.0), "the latest report wins");
        assert_eq!(value(&s, "rollout_queue_backlog_oldest_age_seconds", &gha), Some(0.0));
        assert_eq!(value(&s, "rollout_alerts_pending", &[]), Some(3.0));
        assert_eq!(value(&s, "rollout_alerts_dead_letter", &[]), Some(1.0));
        assert_eq!(families(&text).get("rollout_queue_backlog_depth").map(String::as_str), Some("gauge"));
    }

    #[test]
    fn policy_info_and_label_values_are_escaped() {
        let m = Metrics::default();
        m.feature("we\"ird\\na\nme").rollback();
        let policy = crate::engine::PolicyVersion {
            name: "rollout-reference".to_owned(),
            version: "1.2.3".to_owned(),
            sha256: "abc".to_owned(),
        };
        let text = m.render(&RenderInputs { policy: Some(policy), database_up: true, ..RenderInputs::default() });
        assert!(text.contains("rollout_rollbacks_total{feature=\"we\\\"ird\\\\na\\nme\"} 1"), "{text}");
        let s = parse(&text);
        assert_eq!(value(&s, "rollout_rollbacks_total", &[("feature", "we\"ird\\na\nme")]), Some(1.0));
        assert_eq!(
            value(&s, "rollout_policy_info", &[("name", "rollout-reference"), ("version", "1.2.3"), ("sha256", "abc")]),
            Some(1.0),
            "{text}"
        );
        assert_eq!(value(&s, "rollout_database_up", &[]), Some(1.0));
    }
}
