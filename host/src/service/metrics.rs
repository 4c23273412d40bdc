//! A small Prometheus registry of atomics, rendered in the text exposition format.
//!
//! Decision counters are fixed arrays indexed by the policy's enums (no locks on the hot
//! path); request latency is a histogram per (method, route) kept in a map that is only
//! written the first time a route is seen.

use rollout_policy::{EligibilityReason, Processor, RouteRule};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

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

    /// The registry in the Prometheus text format.
    pub fn render(&self, inputs: &RenderInputs) -> String {
        let mut out = String::with_capacity(8192);
        let features = read(&self.features).clone();

        let _ = writeln!(
            out,
            "# HELP rollout_decisions_total Routing decisions by feature, processor, rule and eligibility reason."
        );
        let _ = writeln!(out, "# TYPE rollout_decisions_total counter");
        for (feature, c) in &features {
            for (pi, p) in Processor::ALL.iter().enumerate() {
                for (ri, r) in RouteRule::ALL.iter().enumerate() {
                    for (ei, e) in EligibilityReason::ALL.iter().enumerate() {
                        let n = c
                            .routes
                            .get(pi)
                            .and_then(|a| a.get(ri))
                            .and_then(|a| a.get(ei))
                            .map_or(0, |x| x.load(Relaxed));
                        if n > 0 {
                            let _ = writeln!(
                                out,
                                "rollout_decisions_total{{feature=\"{}\",processor=\"{p}\",rule=\"{r}\",reason=\"{e}\"}} {n}",
                                escape(feature)
                            );
                        }
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP rollout_eligibility_decisions_total Eligibility decisions by feature, outcome and reason."
        );
        let _ = writeln!(out, "# TYPE rollout_eligibility_decisions_total counter");
        for (feature, c) in &features {
            for (eligible, per_reason) in c.eligibility.iter().enumerate() {
                for (ei, e) in EligibilityReason::ALL.iter().enumerate() {
                    let n = per_reason.get(ei).map_or(0, |x| x.load(Relaxed));
                    if n > 0 {
                        let _ = writeln!(
                            out,
                            "rollout_eligibility_decisions_total{{feature=\"{}\",eligible=\"{}\",reason=\"{e}\"}} {n}",
                            escape(feature),
                            eligible == 1
                        );
                    }
                }
            }
        }
        let _ =
            writeln!(out, "# HELP rollout_fallback_decisions_total Decisions answered with the policy_error fallback.");
        let _ = writeln!(out, "# TYPE rollout_fallback_decisions_total counter");
        for (feature, c) in &features {
            let _ =
                writeln!(out, "rollout_fallback_decisions_total{{feature=\"{}\"}} {}", escape(feature), c.fallbacks());
        }
        let _ = writeln!(
            out,
            "# HELP rollout_error_rate_percent Error rate over the health window at the last health check."
        );
        let _ = writeln!(out, "# TYPE rollout_error_rate_percent gauge");
        for (feature, c) in &features {
            let _ = writeln!(
                out,
                "rollout_error_rate_percent{{feature=\"{}\"}} {}",
                escape(feature),
                f64::from_bits(c.error_rate.load(Relaxed))
            );
            for (pi, p) in Processor::ALL.iter().enumerate() {
                let rate = c.processor_error_rate.get(pi).map_or(0.0, |x| f64::from_bits(x.load(Relaxed)));
                let _ = writeln!(
                    out,
                    "rollout_error_rate_percent{{feature=\"{}\",processor=\"{p}\"}} {rate}",
                    escape(feature)
                );
            }
        }
        let _ = writeln!(out, "# HELP rollout_rollbacks_total Automatic rollbacks this process carried out.");
        let _ = writeln!(out, "# TYPE rollout_rollbacks_total counter");
        for (feature, c) in &features {
            let _ = writeln!(
                out,
                "rollout_rollbacks_total{{feature=\"{}\"}} {}",
                escape(feature),
                c.rollbacks.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP rollout_outcomes_buffered Outcomes waiting for the database.");
        let _ = writeln!(out, "# TYPE rollout_outcomes_buffered gauge");
        for (feature, c) in &features {
            let _ = writeln!(
                out,
                "rollout_outcomes_buffered{{feature=\"{}\"}} {}",
                escape(feature),
                c.buffered.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP rollout_outcomes_buffered_bytes Bytes of outcomes waiting for the database.");
        let _ = writeln!(out, "# TYPE rollout_outcomes_buffered_bytes gauge");
        for (feature, c) in &features {
            let _ = writeln!(
                out,
                "rollout_outcomes_buffered_bytes{{feature=\"{}\"}} {}",
                escape(feature),
                c.buffered_bytes.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rollout_outcomes_dead_lettered_total Buffered outcomes the database refused for their content, set aside."
        );
        let _ = writeln!(out, "# TYPE rollout_outcomes_dead_lettered_total counter");
        for (feature, c) in &features {
            let _ = writeln!(
                out,
                "rollout_outcomes_dead_lettered_total{{feature=\"{}\"}} {}",
                escape(feature),
                c.dead_lettered.load(Relaxed)
            );
        }
        let _ =
            writeln!(out, "# HELP rollout_outcomes_refused_total Outcomes refused because the outage buffer was full.");
        let _ = writeln!(out, "# TYPE rollout_outcomes_refused_total counter");
        let _ = writeln!(out, "rollout_outcomes_refused_total {}", self.outcomes_refused.load(Relaxed));

        let _ = writeln!(out, "# HELP rollout_policy_info The policy serving now.");
        let _ = writeln!(out, "# TYPE rollout_policy_info gauge");
        if let Some(p) = &inputs.policy {
            let _ = writeln!(
                out,
                "rollout_policy_info{{name=\"{}\",version=\"{}\",sha256=\"{}\"}} 1",
                escape(&p.name),
                escape(&p.version),
                escape(&p.sha256)
            );
        }
        let _ =
            writeln!(out, "# HELP rollout_policy_swaps_total Policy activations in this process (loads and reverts).");
        let _ = writeln!(out, "# TYPE rollout_policy_swaps_total counter");
        let _ = writeln!(out, "rollout_policy_swaps_total {}", inputs.swaps);
        let _ = writeln!(
            out,
            "# HELP rollout_policy_auto_reverts_total New policy versions reverted for falling back too often."
        );
        let _ = writeln!(out, "# TYPE rollout_policy_auto_reverts_total counter");
        let _ = writeln!(out, "rollout_policy_auto_reverts_total {}", inputs.auto_reverts);
        let _ = writeln!(
            out,
            "# HELP rollout_policy_missing_fallbacks_total Decisions that fell back because no policy was loaded."
        );
        let _ = writeln!(out, "# TYPE rollout_policy_missing_fallbacks_total counter");
        let _ = writeln!(out, "rollout_policy_missing_fallbacks_total {}", inputs.fallbacks_without_policy);
        let _ = writeln!(out, "# HELP rollout_database_up Whether the database answered the last time it was asked.");
        let _ = writeln!(out, "# TYPE rollout_database_up gauge");
        let _ = writeln!(out, "rollout_database_up {}", u8::from(inputs.database_up));
        let _ = writeln!(
            out,
            "# HELP rollout_config_age_seconds Seconds since the configuration was last read from the database."
        );
        let _ = writeln!(out, "# TYPE rollout_config_age_seconds gauge");
        let _ = writeln!(out, "rollout_config_age_seconds {:.3}", inputs.config_age_seconds);
        let _ = writeln!(out, "# HELP rollout_ready Whether a policy and the configuration are loaded.");
        let _ = writeln!(out, "# TYPE rollout_ready gauge");
        let _ = writeln!(out, "rollout_ready {}", u8::from(inputs.ready));
        let _ = writeln!(
            out,
            "# HELP rollout_config_reloads_total Configuration reloads (notifications and periodic re-reads)."
        );
        let _ = writeln!(out, "# TYPE rollout_config_reloads_total counter");
        let _ = writeln!(out, "rollout_config_reloads_total {}", self.config_reloads.load(Relaxed));
        let _ = writeln!(out, "# HELP rollout_change_notifications_total Change notifications received from Postgres.");
        let _ = writeln!(out, "# TYPE rollout_change_notifications_total counter");
        let _ = writeln!(out, "rollout_change_notifications_total {}", self.notifications.load(Relaxed));
        let _ = writeln!(out, "# HELP rollout_health_checks_total Health checks run.");
        let _ = writeln!(out, "# TYPE rollout_health_checks_total counter");
        let _ = writeln!(out, "rollout_health_checks_total {}", self.health_checks.load(Relaxed));
        let _ = writeln!(
            out,
            "# HELP rollout_http_requests_refused_total Requests refused at the limit of requests in flight."
        );
        let _ = writeln!(out, "# TYPE rollout_http_requests_refused_total counter");
        let _ = writeln!(out, "rollout_http_requests_refused_total {}", self.requests_refused.load(Relaxed));
        let _ = writeln!(out, "# HELP rollout_http_requests_timed_out_total Requests ended at their deadline.");
        let _ = writeln!(out, "# TYPE rollout_http_requests_timed_out_total counter");
        let _ = writeln!(out, "rollout_http_requests_timed_out_total {}", self.requests_timed_out.load(Relaxed));

        let _ = writeln!(
            out,
            "# HELP rollout_http_request_duration_seconds Time to answer HTTP requests, by method and route."
        );
        let _ = writeln!(out, "# TYPE rollout_http_request_duration_seconds histogram");
        for (route, per_method) in read(&self.latency).iter() {
            for (method, h) in METHODS.iter().zip(per_method.iter()) {
                if h.count.load(Relaxed) == 0 {
                    continue;
                }
                let labels = format!("method=\"{}\",route=\"{}\"", escape(method), escape(route));
                let mut cumulative = 0;
                for (i, bound) in BUCKETS.iter().enumerate() {
                    cumulative += h.buckets.get(i).map_or(0, |b| b.load(Relaxed));
                    let _ = writeln!(
                        out,
                        "rollout_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let count = h.count.load(Relaxed);
                let _ = writeln!(out, "rollout_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
                let _ = writeln!(
                    out,
                    "rollout_http_request_duration_seconds_sum{{{labels}}} {}",
                    h.sum_ns.load(Relaxed) as f64 / 1e9
                );
                let _ = writeln!(out, "rollout_http_request_duration_seconds_count{{{labels}}} {count}");
            }
        }
        out
    }
}

/// Escape a label value (backslash, quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollout_policy::{Eligibility, RouteDecision};

    #[test]
    fn counts_render_with_labels() {
        let m = Metrics::default();
        let c = m.feature("f");
        let e = Eligibility { eligible: true, reason: EligibilityReason::InPercentage, bucket: 3 };
        c.route(&RouteDecision { processor: Processor::GithubActions, rule: RouteRule::ScheduledBulk, eligibility: e });
        c.route(&RouteDecision { processor: Processor::GithubActions, rule: RouteRule::ScheduledBulk, eligibility: e });
        c.route(&crate::engine::fallback_route());
        c.eligibility(&e);
        m.observe_request("POST", "/v1/features/{feature}/route", Duration::from_micros(300));
        let text = m.render(&RenderInputs::default());
        assert!(text.contains(
            "rollout_decisions_total{feature=\"f\",processor=\"github_actions\",rule=\"scheduled_bulk\",reason=\"in_percentage\"} 2"
        ));
        assert!(text.contains("rollout_fallback_decisions_total{feature=\"f\"} 1"));
        assert!(text.contains(
            "rollout_eligibility_decisions_total{feature=\"f\",eligible=\"true\",reason=\"in_percentage\"} 1"
        ));
        assert!(text.contains(
            "rollout_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/features/{feature}/route\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "rollout_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/features/{feature}/route\",le=\"0.00025\"} 0"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
