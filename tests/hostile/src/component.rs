//! The export glue: the reference rules, wrapped with this build's hostile behaviour.

use crate::Behaviour;
use rollout_policy as p;

wit_bindgen::generate!({ path: "../../wit", world: "policy" });

use exports::rollout::policy::rules::{Guest, GuestEvaluator};
use rollout::policy::types as w;

struct Component;

export!(Component);

/// Do what `behaviour` says; never returns.
fn misbehave(behaviour: Behaviour) -> ! {
    match behaviour {
        Behaviour::Loop => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Behaviour::Bomb => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                std::hint::black_box(&hoard);
            }
        }
        Behaviour::Trap => core::arch::wasm32::unreachable(),
    }
}

fn check_id(id: &p::RepoId) {
    if let p::RepoId::Text(t) = id {
        if let Some(b) = Behaviour::of(t) {
            misbehave(b);
        }
    }
}

/// The exported resource: a checked configuration (and, for `ignores-stop`, the same
/// configuration without its emergency stop).
struct EvaluatorResource(p::Evaluator, Option<p::Evaluator>);

impl EvaluatorResource {
    fn is_eligible(&self, r: &p::Repository) -> p::Eligibility {
        check_id(&r.id);
        let c = self.0.config();
        if let Some(unstopped) = &self.1 {
            return unstopped.is_eligible(r);
        }
        let mut e = self.0.is_eligible(r);
        if cfg!(feature = "nonmonotonic")
            && c.rollout_strategy == p::Strategy::Percentage
            && c.rollout_percentage > 50
            && e.bucket < 5
            && e.reason == p::EligibilityReason::InPercentage
        {
            e.eligible = false;
            e.reason = p::EligibilityReason::OutsidePercentage;
        }
        e
    }

    fn route(&self, r: &p::Repository, j: &p::Job) -> p::RouteDecision {
        let eligibility = self.is_eligible(r);
        let mut d = self.0.route(r, j);
        d.eligibility = eligibility;
        if !eligibility.eligible {
            d.processor = p::Processor::Inngest;
            d.rule = p::RouteRule::NotEligible;
            if cfg!(feature = "routes-ineligible") && j.trigger_source == Some(p::TriggerSource::Scheduled) {
                d.processor = p::Processor::GithubActions;
                d.rule = p::RouteRule::ScheduledBulk;
            }
        }
        d
    }
}

impl Guest for Component {
    type Evaluator = EvaluatorResource;

    fn categorize(stats: w::RepositoryStats) -> w::Categorization {
        if stats.star_count == crate::TRAP_STARS {
            misbehave(Behaviour::Trap);
        }
        let c = p::categorize(&p::RepositoryStats {
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
        let config = config_in(config);
        if let Some(b) = Behaviour::of(&config.feature_name) {
            misbehave(b);
        }
        let windows: Vec<p::ProcessorWindow> = windows
            .into_iter()
            .map(|x| p::ProcessorWindow {
                processor: match x.processor {
                    w::Processor::Inngest => p::Processor::Inngest,
                    w::Processor::GithubActions => p::Processor::GithubActions,
                },
                success_count: x.success_count,
                error_count: x.error_count,
                total_jobs: x.total_jobs,
                average_processing_time: x.average_processing_time,
            })
            .collect();
        let h = p::evaluate_health(&config, &windows);
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
        if cfg!(feature = "loop-info") {
            misbehave(Behaviour::Loop);
        }
        w::PolicyInfo { name: crate::POLICY_NAME.into(), version: env!("CARGO_PKG_VERSION").into() }
    }
}

impl GuestEvaluator for EvaluatorResource {
    fn create(config: w::Config) -> Result<exports::rollout::policy::rules::Evaluator, w::ConfigError> {
        let config = config_in(config);
        if let Some(b) = Behaviour::of(&config.feature_name) {
            misbehave(b);
        }
        let unstopped = (cfg!(feature = "ignores-stop") && config.emergency_stop)
            .then(|| p::Evaluator::new(p::Config { emergency_stop: false, ..config.clone() }).ok())
            .flatten();
        match p::Evaluator::new(config) {
            Ok(e) => Ok(exports::rollout::policy::rules::Evaluator::new(EvaluatorResource(e, unstopped))),
            Err(e) => Err(w::ConfigError { field: e.field, message: e.message }),
        }
    }

    fn is_eligible(&self, repository: w::Repository) -> w::Eligibility {
        eligibility_out(EvaluatorResource::is_eligible(self, &repository_in(repository)))
    }

    fn is_eligible_batch(&self, repositories: Vec<w::Repository>) -> Vec<w::Eligibility> {
        repositories
            .into_iter()
            .map(|r| eligibility_out(EvaluatorResource::is_eligible(self, &repository_in(r))))
            .collect()
    }

    fn route(&self, repository: w::Repository, job: w::Job) -> w::RouteDecision {
        decision_out(EvaluatorResource::route(self, &repository_in(repository), &job_in(job)))
    }

    fn route_batch(&self, requests: Vec<w::RouteRequest>) -> Vec<w::RouteDecision> {
        requests
            .into_iter()
            .map(|r| decision_out(EvaluatorResource::route(self, &repository_in(r.repository), &job_in(r.job))))
            .collect()
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
        pr_numbers: j.pr_numbers,
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
            R::NotTargeted | R::PolicyError => W::NotTargeted,
            R::InPercentage => W::InPercentage,
            R::OutsidePercentage => W::OutsidePercentage,
            R::Uncategorized => W::Uncategorized,
            R::CategoryIncluded => W::CategoryIncluded,
            R::CategoryExcluded => W::CategoryExcluded,
        },
        bucket: e.bucket,
    }
}

fn decision_out(d: p::RouteDecision) -> w::RouteDecision {
    use p::RouteRule as R;
    use w::RouteRule as W;
    w::RouteDecision {
        processor: match d.processor {
            p::Processor::Inngest => w::Processor::Inngest,
            p::Processor::GithubActions => w::Processor::GithubActions,
        },
        rule: match d.rule {
            R::NotEligible => W::NotEligible,
            R::RecentData => W::RecentData,
            R::SmallPrBatch => W::SmallPrBatch,
            R::ManualSmallBatch => W::ManualSmallBatch,
            R::HistoricalRange => W::HistoricalRange,
            R::LargeBatch => W::LargeBatch,
            R::ScheduledBulk => W::ScheduledBulk,
            R::Default | R::PolicyError => W::Default,
        },
        eligibility: eligibility_out(d.eligibility),
    }
}
