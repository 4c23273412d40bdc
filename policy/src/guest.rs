//! The component export glue, shared by every policy built on these rules (compiled only
//! for wasm, feature `guest`).
//!
//! A policy implements [`Policy`] and [`Evaluate`] on the crate's domain types; this
//! module converts between those and the WIT types wit-bindgen generates from `wit/`, and
//! implements the generated `Guest` traits once for all of them. The reference policy
//! (feature `component`) is one such policy; `examples/size-aware-policy` and the hostile
//! test fixtures are others. A policy crate exports the world with two lines:
//!
//! ```ignore
//! type Component = rollout_policy::guest::Export<MyPolicy>;
//! rollout_policy::guest::export_policy!(Component);
//! ```

use crate as p;
use core::marker::PhantomData;

wit_bindgen::generate!({
    path: "../wit",
    world: "policy",
    pub_export_macro: true,
    export_macro_name: "export_policy",
    default_bindings_module: "rollout_policy::guest",
});

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
}

/// The per-configuration half of a policy (the WIT `evaluator` resource).
pub trait Evaluate: Sized + 'static {
    /// Check `config` and build the evaluator, or say which field is wrong.
    fn create(config: p::Config) -> Result<Self, p::ConfigError>;
    /// Eligibility of one repository.
    fn is_eligible(&self, repository: &p::Repository) -> p::Eligibility;
    /// Where a job runs.
    fn route(&self, repository: &p::Repository, job: &p::Job) -> p::RouteDecision;
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
}

/// The exported component of policy `P`; pass it (through a type alias) to
/// [`export_policy!`](crate::guest::export_policy).
pub struct Export<P>(PhantomData<P>);

/// The exported `evaluator` resource of an [`Evaluate`] implementation.
pub struct Exported<E>(E);

impl<P: Policy> Guest for Export<P> {
    type Evaluator = Exported<P::Evaluator>;

    fn categorize(stats: w::RepositoryStats) -> w::Categorization {
        let c = P::categorize(&p::RepositoryStats {
            star_count: stats.star_count,
            contributor_count: stats.contributor_count,
            pr_count: stats.pr_count,
        });
        w::Categorization {
            category: category_out(c.category),
            priority_level: c.priority_level,
            is_test_repository: c.is_test_repository,
            monthly_activity_score: c.monthly_activity_score,
        }
    }

    fn evaluate_health(config: w::Config, windows: Vec<w::ProcessorWindow>) -> w::Health {
        let windows: Vec<p::ProcessorWindow> = windows
            .into_iter()
            .map(|w| p::ProcessorWindow {
                processor: processor_in(w.processor),
                success_count: w.success_count,
                error_count: w.error_count,
                total_jobs: w.total_jobs,
                average_processing_time: w.average_processing_time,
            })
            .collect();
        let h = P::evaluate_health(&config_in(config), &windows);
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

    fn info() -> w::PolicyInfo {
        let (name, version) = P::info();
        w::PolicyInfo { name: name.into(), version: version.into() }
    }
}

impl<E: Evaluate> GuestEvaluator for Exported<E> {
    fn create(config: w::Config) -> Result<exports::rollout::policy::rules::Evaluator, w::ConfigError> {
        match E::create(config_in(config)) {
            Ok(e) => Ok(exports::rollout::policy::rules::Evaluator::new(Exported(e))),
            Err(e) => Err(w::ConfigError { field: e.field, message: e.message }),
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
