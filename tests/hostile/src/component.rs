//! The export: the reference rules, wrapped with this build's hostile behaviour, through
//! the shared glue of `rollout_policy::guest`.

use crate::Behaviour;
use core::sync::atomic::{AtomicU32, Ordering};
use rollout_policy as p;

use rollout_policy::guest::{export_policy, Evaluate, Export, Policy};

/// The hostile policy.
pub struct Hostile;

type Component = Export<Hostile>;

export_policy!(Component);

/// Routing calls so far (the `moody` build's memory).
static ROUTES: AtomicU32 = AtomicU32::new(0);

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

/// The exported resource: a checked configuration (and, for `ignores-stop` and
/// `stop-at-37`, the same configuration without its emergency stop; for `trap-1pct`,
/// whether its feature name arms the traps).
pub struct EvaluatorResource(p::Evaluator, Option<p::Evaluator>, bool);

impl EvaluatorResource {
    fn is_eligible(&self, r: &p::Repository) -> p::Eligibility {
        check_id(&r.id);
        if cfg!(feature = "trap-1pct") && self.2 && crate::trap_1pct_id(&r.id) {
            misbehave(Behaviour::Trap);
        }
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
        if cfg!(feature = "unicode-zero")
            && c.rollout_percentage == 0
            && c.is_active
            && !c.emergency_stop
            && !e.eligible
            && e.reason != p::EligibilityReason::Excluded
            && matches!(&r.id, p::RepoId::Text(t) if !t.is_ascii())
        {
            e.eligible = true;
            e.reason = p::EligibilityReason::InPercentage;
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
        } else if cfg!(feature = "shadow-diff") && crate::shadow_differs(j.time_range_days) {
            // `recent_data` up to `SHADOW_RECENT_DAYS` days: it is the first rule for an
            // eligible repository, so it wins wherever it holds.
            d.processor = p::Processor::Inngest;
            d.rule = p::RouteRule::RecentData;
        } else if cfg!(feature = "moody") && ROUTES.fetch_add(1, Ordering::Relaxed).is_multiple_of(3) {
            d.processor = match d.processor {
                p::Processor::Inngest => p::Processor::GithubActions,
                p::Processor::GithubActions => p::Processor::Inngest,
            };
        }
        d
    }
}

impl Policy for Hostile {
    type Evaluator = EvaluatorResource;

    fn info() -> (&'static str, &'static str) {
        if cfg!(feature = "loop-info") {
            misbehave(Behaviour::Loop);
        }
        (crate::POLICY_NAME, env!("CARGO_PKG_VERSION"))
    }

    fn categorize(stats: &p::RepositoryStats) -> p::Categorization {
        if stats.star_count == crate::TRAP_STARS
            || (cfg!(feature = "partial-categorize") && stats.star_count > 1_000_000)
        {
            misbehave(Behaviour::Trap);
        }
        p::categorize(stats)
    }

    fn evaluate_health(config: &p::Config, windows: &[p::ProcessorWindow]) -> p::Health {
        if let Some(b) = Behaviour::of(&config.feature_name) {
            misbehave(b);
        }
        if cfg!(feature = "panicky-health") && windows.is_empty() {
            misbehave(Behaviour::Trap);
        }
        p::evaluate_health(config, windows)
    }
}

impl Evaluate for EvaluatorResource {
    fn create(config: p::Config) -> Result<Self, p::ConfigError> {
        if let Some(b) = Behaviour::of(&config.feature_name) {
            misbehave(b);
        }
        let ignores_stop =
            cfg!(feature = "ignores-stop") || (cfg!(feature = "stop-at-37") && config.rollout_percentage == 37);
        let unstopped = (ignores_stop && config.emergency_stop)
            .then(|| p::Evaluator::new(p::Config { emergency_stop: false, ..config.clone() }).ok())
            .flatten();
        let armed = cfg!(feature = "trap-1pct") && crate::trap_1pct_armed(&config.feature_name);
        p::Evaluator::new(config).map(|e| EvaluatorResource(e, unstopped, armed))
    }

    fn is_eligible(&self, repository: &p::Repository) -> p::Eligibility {
        EvaluatorResource::is_eligible(self, repository)
    }

    fn route(&self, repository: &p::Repository, job: &p::Job) -> p::RouteDecision {
        EvaluatorResource::route(self, repository, job)
    }
}
