//! The component export glue, shared by every policy built on these rules (compiled only
//! for wasm, feature `guest`).
//!
//! A policy implements [`Policy`] and [`Evaluate`] on the crate's domain types; this
//! module converts between those and the WIT types wit-bindgen generates from `wit/`, and
//! implements the generated `Guest` traits once for all of them: the world
//! `explained-policy`, that is the `rules` of world `policy` plus `explain`, `packed`
//! (the single decisions as scalar calls, implemented here over the same evaluator) and
//! `monitoring` (health from every indicator, [`Policy::evaluate_health_signals`]). The reference
//! policy (feature `component`) is one such policy; `examples/size-aware-policy` and the
//! hostile test fixtures are others. A policy crate exports the world with two lines:
//!
//! ```ignore
//! type Component = rollout_policy::guest::Export<MyPolicy>;
//! rollout_policy::guest::export_policy!(Component);
//! ```
//!
//! Explanations: the `*_traced` methods of [`Policy`] and [`Evaluate`] record the checks of
//! a decision in a [`p::Trace`]. Their default implementations run the untraced method and
//! record one held check per section ([`p::UNTRACED`]), so a policy that does not trace
//! still explains which decision it made; a policy overrides them to show its chain,
//! ideally by writing its rules once, generic over [`p::Tracer`] (as the reference does). The
//! `explain` functions always answer with the decision of the untraced method: should a
//! policy's traced method decide otherwise (a bug of the policy), the trace gets one more
//! held check per section saying so, naming the decision actually made.

use crate as p;
use core::marker::PhantomData;

wit_bindgen::generate!({
    path: "../wit",
    world: "explained-policy",
    pub_export_macro: true,
    export_macro_name: "export_policy",
    default_bindings_module: "rollout_policy::guest",
});

use exports::rollout::policy::explain::{self as x, Guest as ExplainGuest};
use exports::rollout::policy::monitoring::Guest as MonitoringGuest;
use exports::rollout::policy::packed::Guest as PackedGuest;
use exports::rollout::policy::rules::{Guest, GuestEvaluator};
use rollout::policy::types as w;

/// A policy: its name and version, categorisation and health (the reference rules unless
/// overridden), and the evaluator it builds from a configuration.
pub trait Policy: 'static {
    /// The evaluator `create` builds from a configuration.
    type Evaluator: Evaluate;

    /// `(name, version)` reported by `info()`.
    fn info() -> (&'static str, &'static str);

    /// The category of a repository; the reference rules by default.
    fn categorize(stats: &p::RepositoryStats) -> p::Categorization {
        p::categorize(stats)
    }

    /// Health over the monitoring window; the reference rules by default.
    fn evaluate_health(config: &p::Config, windows: &[p::ProcessorWindow]) -> p::Health {
        p::evaluate_health(config, windows)
    }

    /// Health from every indicator (WIT `monitoring`): by default
    /// [`Policy::evaluate_health`] raised by the reference's signal rules
    /// ([`p::raise_by_signals`]).
    fn evaluate_health_signals(
        config: &p::Config,
        windows: &[p::ProcessorWindow],
        signals: &[p::ProcessorSignals],
        limits: &p::HealthLimits,
    ) -> p::Health {
        p::raise_by_signals(Self::evaluate_health(config, windows), signals, limits)
    }

    /// [`Policy::categorize`] with its checks recorded in `trace`. By default one held check
    /// naming the category ([`p::Trace::record_categorization`]); a policy that keeps the
    /// reference's `categorize` can return [`p::categorize_traced`] instead.
    fn categorize_traced(stats: &p::RepositoryStats, trace: &mut p::Trace) -> p::Categorization {
        let c = Self::categorize(stats);
        trace.record_categorization(&c, p::UNTRACED);
        c
    }

    /// [`Policy::evaluate_health`] with its checks recorded in `trace`. By default one held
    /// check per section naming the level and the action ([`p::Trace::record_health`]); a
    /// policy that keeps the reference's `evaluate_health` can return
    /// [`p::evaluate_health_traced`] instead.
    fn evaluate_health_traced(config: &p::Config, windows: &[p::ProcessorWindow], trace: &mut p::Trace) -> p::Health {
        let h = Self::evaluate_health(config, windows);
        trace.record_health(&h, p::UNTRACED);
        h
    }
}

/// The per-configuration half of a policy (the WIT `evaluator` resource).
pub trait Evaluate: Sized + 'static {
    /// Check `config` and build the evaluator, or say which field is wrong.
    fn create(config: p::Config) -> Result<Self, p::ConfigError>;
    /// Eligibility of one repository.
    fn is_eligible(&self, repository: &p::Repository) -> p::Eligibility;
    /// Where a job runs.
    fn route(&self, repository: &p::Repository, job: &p::Job) -> p::RouteDecision;

    /// [`Evaluate::is_eligible`] with its checks recorded in `trace`. By default one held
    /// check naming the reason ([`p::Trace::record_eligibility`]).
    fn is_eligible_traced(&self, repository: &p::Repository, trace: &mut p::Trace) -> p::Eligibility {
        let e = self.is_eligible(repository);
        trace.record_eligibility(&e, p::UNTRACED);
        e
    }

    /// [`Evaluate::route`] with its checks recorded in `trace` (eligibility's, then
    /// routing's). By default one held check per section naming the reason and the rule
    /// ([`p::Trace::record_route`]).
    fn route_traced(&self, repository: &p::Repository, job: &p::Job, trace: &mut p::Trace) -> p::RouteDecision {
        let d = self.route(repository, job);
        trace.record_route(&d, p::UNTRACED);
        d
    }
}

impl Evaluate for p::Evaluator {
    fn create(config: p::Config) -> Result<Self, p::ConfigError> {
        p::Evaluator::new(config)
    }

    fn is_eligible(&self, repository: &p::Repository) -> p::Eligibility {
        p::Evaluator::is_eligible(self, repository)
    }

    fn route(&self, repository: &p::Repository, job: &p::Job) -> p::RouteDecision {
        p::Evaluator::route(self, repository, job)
    }

    fn is_eligible_traced(&self, repository: &p::Repository, trace: &mut p::Trace) -> p::Eligibility {
        p::Evaluator::is_eligible_traced(self, repository, trace)
    }

    fn route_traced(&self, repository: &p::Repository, job: &p::Job, trace: &mut p::Trace) -> p::RouteDecision {
        p::Evaluator::route_traced(self, repository, job, trace)
    }
}

/// The exported component of policy `P`; pass it (through a type alias) to
/// [`export_policy!`](crate::guest::export_policy).
pub struct Export<P>(PhantomData<P>);

/// The exported `evaluator` resource of an [`Evaluate`] implementation.
pub struct Exported<E>(E);

impl<P: Policy> Guest for Export<P> {
    type Evaluator = Exported<P::Evaluator>;

    fn categorize(stats: w::RepositoryStats) -> w::Categorization {
        categorization_out(P::categorize(&stats_in(stats)))
    }

    fn evaluate_health(config: w::Config, windows: Vec<w::ProcessorWindow>) -> w::Health {
        let windows = windows_in(windows);
        health_out(P::evaluate_health(&config_in(config), &windows))
    }

    fn info() -> w::PolicyInfo {
        let (name, version) = P::info();
        w::PolicyInfo { name: name.into(), version: version.into() }
    }
}

/// What the `explain` functions add to a trace when a policy's traced method decided
/// otherwise than its untraced one: the decision returned is always the untraced one.
const MISMATCH: &str =
    "decided by this policy's rules; its explanation above concluded otherwise (a bug of the policy)";

impl<P: Policy> ExplainGuest for Export<P> {
    fn explain_eligibility(
        config: w::Config,
        repository: w::Repository,
    ) -> Result<(w::Eligibility, Vec<x::Check>), w::ConfigError> {
        let e = P::Evaluator::create(config_in(config)).map_err(config_error_out)?;
        let repository = repository_in(repository);
        let mut trace = p::Trace::new();
        let explained = e.is_eligible_traced(&repository, &mut trace);
        let decided = e.is_eligible(&repository);
        if explained != decided {
            trace.record_eligibility(&decided, MISMATCH);
        }
        Ok((eligibility_out(decided), checks_out(trace)))
    }

    fn explain_route(
        config: w::Config,
        repository: w::Repository,
        job: w::Job,
    ) -> Result<(w::RouteDecision, Vec<x::Check>), w::ConfigError> {
        let e = P::Evaluator::create(config_in(config)).map_err(config_error_out)?;
        let (repository, job) = (repository_in(repository), job_in(job));
        let mut trace = p::Trace::new();
        let explained = e.route_traced(&repository, &job, &mut trace);
        let decided = e.route(&repository, &job);
        if explained != decided {
            trace.record_route(&decided, MISMATCH);
        }
        Ok((decision_out(decided), checks_out(trace)))
    }

    fn explain_categorize(stats: w::RepositoryStats) -> (w::Categorization, Vec<x::Check>) {
        let stats = stats_in(stats);
        let mut trace = p::Trace::new();
        let explained = P::categorize_traced(&stats, &mut trace);
        let decided = P::categorize(&stats);
        if explained != decided {
            trace.record_categorization(&decided, MISMATCH);
        }
        (categorization_out(decided), checks_out(trace))
    }

    fn explain_health(config: w::Config, windows: Vec<w::ProcessorWindow>) -> (w::Health, Vec<x::Check>) {
        let (config, windows) = (config_in(config), windows_in(windows));
        let mut trace = p::Trace::new();
        let explained = P::evaluate_health_traced(&config, &windows, &mut trace);
        let decided = P::evaluate_health(&config, &windows);
        // `error_rate` is a float: NaN never comes out of the reference rules, but a policy's
        // could; compare its bits so a NaN decided twice counts as the same.
        let same = explained.level == decided.level
            && explained.action == decided.action
            && explained.error_rate.to_bits() == decided.error_rate.to_bits()
            && explained.total_jobs == decided.total_jobs
            && explained.reason == decided.reason;
        if !same {
            trace.record_health(&decided, MISMATCH);
        }
        (health_out(decided), checks_out(trace))
    }
}

/// `monitoring`: [`Policy::evaluate_health_signals`].
impl<P: Policy> MonitoringGuest for Export<P> {
    fn evaluate_health_signals(
        config: w::Config,
        windows: Vec<w::ProcessorWindow>,
        signals: Vec<w::ProcessorSignals>,
        limits: w::HealthLimits,
    ) -> w::Health {
        let signals: Vec<p::ProcessorSignals> = signals
            .into_iter()
            .map(|s| p::ProcessorSignals {
                processor: processor_in(s.processor),
                backlog_depths: s.backlog_depths,
                backlog_oldest_age_seconds: s.backlog_oldest_age_seconds,
                p95_processing_time_ms: s.p95_processing_time_ms,
                baseline_p95_processing_time_ms: s.baseline_p95_processing_time_ms,
            })
            .collect();
        let limits = p::HealthLimits {
            backlog_warning_age_seconds: limits.backlog_warning_age_seconds,
            backlog_critical_age_seconds: limits.backlog_critical_age_seconds,
            backlog_critical_depth: limits.backlog_critical_depth,
            p95_limit_ms: limits.p95_limit_ms,
            p95_baseline_factor: limits.p95_baseline_factor,
        };
        health_out(P::evaluate_health_signals(&config_in(config), &windows_in(windows), &signals, &limits))
    }
}

std::thread_local! {
    /// The evaluators `packed.open` built, by handle (the index); `None` once closed. A
    /// component is single-threaded: this is one table per instance. Type-erased because a
    /// static cannot be generic; each call downcasts to the policy's evaluator type.
    static PACKED: core::cell::RefCell<Vec<Option<Box<dyn core::any::Any>>>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// `f` on the evaluator behind `handle`, or [`p::packed::REFUSED`] for an unknown handle.
#[inline]
fn with_packed<E: Evaluate>(handle: u32, f: impl FnOnce(&E) -> u32) -> u32 {
    PACKED.with_borrow(|table| {
        match table.get(handle as usize).and_then(|e| e.as_ref()).and_then(|e| e.downcast_ref::<E>()) {
            Some(e) => f(e),
            None => p::packed::REFUSED,
        }
    })
}

/// `packed`: the typed `evaluator` calls with scalar arguments and a `u32` answer (the codes
/// of `rollout_policy::packed`), over the same [`Evaluate`] implementation, so no policy
/// writes it and the two paths make the same decisions.
impl<P: Policy> PackedGuest for Export<P> {
    fn open(config: w::Config) -> Result<u32, w::ConfigError> {
        let e = P::Evaluator::create(config_in(config)).map_err(config_error_out)?;
        PACKED.with_borrow_mut(|table| {
            let boxed: Box<dyn core::any::Any> = Box::new(e);
            let handle = match table.iter().position(Option::is_none) {
                Some(free) => {
                    if let Some(slot) = table.get_mut(free) {
                        *slot = Some(boxed);
                    }
                    free
                }
                None => {
                    table.push(Some(boxed));
                    table.len() - 1
                }
            };
            u32::try_from(handle).map_err(|_| w::ConfigError {
                field: "config".into(),
                message: format!("too many open evaluators ({handle}): allowed fewer than 2^32"),
            })
        })
    }

    fn close(handle: u32) {
        PACKED.with_borrow_mut(|table| {
            if let Some(slot) = table.get_mut(handle as usize) {
                *slot = None;
            }
            while table.last().is_some_and(Option::is_none) {
                table.pop();
            }
        })
    }

    fn is_eligible(handle: u32, hi: u64, lo: u64, category: u8) -> u32 {
        let Some(repository) = p::packed::PackedQuery::decode_repository(hi, lo, category) else {
            return p::packed::REFUSED;
        };
        with_packed(handle, |e: &P::Evaluator| p::packed::encode_eligibility(&e.is_eligible(&repository)))
    }

    fn route(
        handle: u32,
        hi: u64,
        lo: u64,
        category: u8,
        trigger_source: u8,
        time_range_days: u64,
        max_items: u64,
    ) -> u32 {
        let query = p::packed::PackedQuery { hi, lo, category, trigger_source, time_range_days, max_items };
        let Some((repository, job)) = query.decode() else { return p::packed::REFUSED };
        with_packed(handle, |e: &P::Evaluator| p::packed::encode_route(&e.route(&repository, &job)))
    }
}

impl<E: Evaluate> GuestEvaluator for Exported<E> {
    fn create(config: w::Config) -> Result<exports::rollout::policy::rules::Evaluator, w::ConfigError> {
        match E::create(config_in(config)) {
            Ok(e) => Ok(exports::rollout::policy::rules::Evaluator::new(Exported(e))),
            Err(e) => Err(config_error_out(e)),
        }
    }

    fn is_eligible(&self, repository: w::Repository) -> w::Eligibility {
        eligibility_out(self.0.is_eligible(&repository_in(repository)))
    }

    fn is_eligible_batch(&self, repositories: w::RepositoryColumns) -> Result<w::EligibilityColumns, w::BatchError> {
        let repositories = repository_columns_in(repositories).decode().map_err(batch_error_out)?;
        Ok(eligibility_columns_out(p::EligibilityColumns::encode(repositories.map(|r| self.0.is_eligible(&r)))))
    }

    fn route(&self, repository: w::Repository, job: w::Job) -> w::RouteDecision {
        decision_out(self.0.route(&repository_in(repository), &job_in(job)))
    }

    fn route_batch(
        &self,
        repositories: w::RepositoryColumns,
        jobs: w::JobColumns,
    ) -> Result<w::DecisionColumns, w::BatchError> {
        let repositories = repository_columns_in(repositories);
        let n = repositories.len();
        let repositories = repositories.decode().map_err(batch_error_out)?;
        let jobs = job_columns_in(jobs).decode(n).map_err(batch_error_out)?;
        let d = p::DecisionColumns::encode(repositories.zip(jobs).map(|(r, j)| self.0.route(&r, &j)));
        Ok(w::DecisionColumns {
            processors: d.processors,
            rules: d.rules,
            eligibility: eligibility_columns_out(d.eligibility),
        })
    }
}

fn config_error_out(e: p::ConfigError) -> w::ConfigError {
    w::ConfigError { field: e.field, message: e.message }
}

fn stats_in(s: w::RepositoryStats) -> p::RepositoryStats {
    p::RepositoryStats { star_count: s.star_count, contributor_count: s.contributor_count, pr_count: s.pr_count }
}

fn categorization_out(c: p::Categorization) -> w::Categorization {
    w::Categorization {
        category: category_out(c.category),
        priority_level: c.priority_level,
        is_test_repository: c.is_test_repository,
        monthly_activity_score: c.monthly_activity_score,
    }
}

fn windows_in(windows: Vec<w::ProcessorWindow>) -> Vec<p::ProcessorWindow> {
    windows
        .into_iter()
        .map(|w| p::ProcessorWindow {
            processor: processor_in(w.processor),
            success_count: w.success_count,
            error_count: w.error_count,
            total_jobs: w.total_jobs,
            average_processing_time: w.average_processing_time,
        })
        .collect()
}

fn health_out(h: p::Health) -> w::Health {
    w::Health {
        level: match h.level {
            p::HealthLevel::Ok => w::HealthLevel::Ok,
            p::HealthLevel::Warning => w::HealthLevel::Warning,
            p::HealthLevel::Critical => w::HealthLevel::Critical,
        },
        action: match h.action {
            p::HealthAction::None => w::HealthAction::None,
            p::HealthAction::Rollback => w::HealthAction::Rollback,
        },
        error_rate: h.error_rate,
        total_jobs: h.total_jobs,
        reason: h.reason,
    }
}

fn checks_out(trace: p::Trace) -> Vec<x::Check> {
    trace
        .checks
        .into_iter()
        .map(|c| x::Check {
            section: match c.section {
                p::Section::Eligibility => x::Section::Eligibility,
                p::Section::Routing => x::Section::Routing,
                p::Section::Categorization => x::Section::Categorization,
                p::Section::HealthLevel => x::Section::HealthLevel,
                p::Section::HealthAction => x::Section::HealthAction,
            },
            rule: c.rule,
            condition: c.condition,
            values: c.values,
            held: c.held,
        })
        .collect()
}

fn config_in(c: w::Config) -> p::Config {
    p::Config {
        feature_name: c.feature_name,
        rollout_percentage: c.rollout_percentage,
        is_active: c.is_active,
        target_repositories: c.target_repositories,
        excluded_repositories: c.excluded_repositories,
        rollout_strategy: match c.rollout_strategy {
            w::Strategy::Percentage => p::Strategy::Percentage,
            w::Strategy::Whitelist => p::Strategy::Whitelist,
            w::Strategy::RepositorySize => p::Strategy::RepositorySize,
        },
        max_error_rate: c.max_error_rate,
        monitoring_window_hours: c.monitoring_window_hours,
        auto_rollback_enabled: c.auto_rollback_enabled,
        emergency_stop: c.emergency_stop,
        min_jobs_for_rollback: c.min_jobs_for_rollback,
    }
}

fn repository_columns_in(c: w::RepositoryColumns) -> p::RepositoryColumns {
    p::RepositoryColumns { uuids: c.uuids, text_ids: c.text_ids, categories: c.categories }
}

fn job_columns_in(c: w::JobColumns) -> p::JobColumns {
    p::JobColumns {
        time_range_days: c.time_range_days,
        max_items: c.max_items,
        trigger_sources: c.trigger_sources,
        pr_counts: c.pr_counts,
        pr_numbers: c.pr_numbers,
        job_types: c.job_types,
    }
}

fn eligibility_columns_out(c: p::EligibilityColumns) -> w::EligibilityColumns {
    w::EligibilityColumns { eligible: c.eligible, reasons: c.reasons, buckets: c.buckets }
}

fn batch_error_out(e: p::BatchError) -> w::BatchError {
    w::BatchError { field: e.field, message: e.message }
}

fn repository_in(r: w::Repository) -> p::Repository {
    let id = match r.id {
        w::RepositoryId::Uuid((hi, lo)) => p::RepoId::Uuid((u128::from(hi) << 64) | u128::from(lo)),
        w::RepositoryId::Text(t) => p::RepoId::Text(t),
    };
    p::Repository { id, category: r.category.map(category_in) }
}

fn job_in(j: w::Job) -> p::Job {
    p::Job {
        job_type: j.job_type,
        time_range_days: j.time_range_days,
        pr_numbers: j.pr_numbers.unwrap_or_default(),
        trigger_source: j.trigger_source.map(|t| match t {
            w::TriggerSource::Manual => p::TriggerSource::Manual,
            w::TriggerSource::Scheduled => p::TriggerSource::Scheduled,
            w::TriggerSource::Automatic => p::TriggerSource::Automatic,
        }),
        max_items: j.max_items,
    }
}

fn category_in(c: w::Category) -> p::Category {
    match c {
        w::Category::Test => p::Category::Test,
        w::Category::Small => p::Category::Small,
        w::Category::Medium => p::Category::Medium,
        w::Category::Large => p::Category::Large,
        w::Category::Enterprise => p::Category::Enterprise,
    }
}

fn category_out(c: p::Category) -> w::Category {
    match c {
        p::Category::Test => w::Category::Test,
        p::Category::Small => w::Category::Small,
        p::Category::Medium => w::Category::Medium,
        p::Category::Large => w::Category::Large,
        p::Category::Enterprise => w::Category::Enterprise,
    }
}

fn processor_in(x: w::Processor) -> p::Processor {
    match x {
        w::Processor::Inngest => p::Processor::Inngest,
        w::Processor::GithubActions => p::Processor::GithubActions,
    }
}

fn processor_out(x: p::Processor) -> w::Processor {
    match x {
        p::Processor::Inngest => w::Processor::Inngest,
        p::Processor::GithubActions => w::Processor::GithubActions,
    }
}

fn eligibility_out(e: p::Eligibility) -> w::Eligibility {
    use p::EligibilityReason as R;
    use w::EligibilityReason as W;
    w::Eligibility {
        eligible: e.eligible,
        reason: match e.reason {
            R::EmergencyStop => W::EmergencyStop,
            R::Inactive => W::Inactive,
            R::Excluded => W::Excluded,
            R::Targeted => W::Targeted,
            R::NotTargeted => W::NotTargeted,
            R::InPercentage => W::InPercentage,
            R::OutsidePercentage => W::OutsidePercentage,
            R::Uncategorized => W::Uncategorized,
            R::CategoryIncluded => W::CategoryIncluded,
            R::CategoryExcluded => W::CategoryExcluded,
            // Never decided by a policy; the host's own fallback.
            R::PolicyError => W::NotTargeted,
        },
        bucket: e.bucket,
    }
}

fn decision_out(d: p::RouteDecision) -> w::RouteDecision {
    use p::RouteRule as R;
    use w::RouteRule as W;
    w::RouteDecision {
        processor: processor_out(d.processor),
        rule: match d.rule {
            R::NotEligible => W::NotEligible,
            R::RecentData => W::RecentData,
            R::SmallPrBatch => W::SmallPrBatch,
            R::ManualSmallBatch => W::ManualSmallBatch,
            R::HistoricalRange => W::HistoricalRange,
            R::LargeBatch => W::LargeBatch,
            R::ScheduledBulk => W::ScheduledBulk,
            // A policy never decides `policy_error`; the host uses it for its own fallback.
            R::Default | R::PolicyError => W::Default,
        },
        eligibility: eligibility_out(d.eligibility),
    }
}
