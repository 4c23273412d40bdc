//! Eligibility (SPEC §2.2) and the evaluator that holds a checked configuration.

use crate::{
    bucket, Config, ConfigError, Eligibility, EligibilityReason, IdSet, Job, Repository, RouteDecision, Strategy,
};

/// A configuration checked once and prepared for many decisions: the id lists are parsed
/// into sets, so a decision is a hash and two binary searches.
#[derive(Debug, Clone)]
pub struct Evaluator {
    config: Config,
    targets: IdSet,
    excluded: IdSet,
}

impl Evaluator {
    /// Check `config` ([`Config::validate`]) and prepare it.
    pub fn new(config: Config) -> Result<Evaluator, ConfigError> {
        config.validate()?;
        Ok(Evaluator {
            targets: IdSet::from_strings(&config.target_repositories),
            excluded: IdSet::from_strings(&config.excluded_repositories),
            config,
        })
    }

    /// The configuration this evaluator decides with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `repository` takes part in the rollout; the first matching rule of SPEC §2.2
    /// decides, and the bucket is reported whatever decided.
    pub fn is_eligible(&self, repository: &Repository) -> Eligibility {
        let c = &self.config;
        let bucket = bucket(&c.feature_name, &repository.id);
        let (eligible, reason) = if c.emergency_stop {
            (false, EligibilityReason::EmergencyStop)
        } else if !c.is_active {
            (false, EligibilityReason::Inactive)
        } else if self.excluded.contains(&repository.id) {
            (false, EligibilityReason::Excluded)
        } else if self.targets.contains(&repository.id) {
            (true, EligibilityReason::Targeted)
        } else {
            match c.rollout_strategy {
                Strategy::Whitelist => (false, EligibilityReason::NotTargeted),
                Strategy::Percentage if bucket < c.rollout_percentage => (true, EligibilityReason::InPercentage),
                Strategy::Percentage => (false, EligibilityReason::OutsidePercentage),
                Strategy::RepositorySize => match repository.category {
                    None => (false, EligibilityReason::Uncategorized),
                    Some(cat) if c.rollout_percentage >= cat.threshold() => (true, EligibilityReason::CategoryIncluded),
                    Some(_) => (false, EligibilityReason::CategoryExcluded),
                },
            }
        };
        Eligibility { eligible, reason, bucket }
    }

    /// Where `job` for `repository` runs (SPEC §2.3).
    pub fn route(&self, repository: &Repository, job: &Job) -> RouteDecision {
        crate::routing::route(self.is_eligible(repository), job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Category, RepoId};

    const ID: &str = "6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11";

    fn active(strategy: Strategy, pct: u8) -> Config {
        Config { is_active: true, rollout_strategy: strategy, rollout_percentage: pct, ..Config::default() }
    }

    fn decide(config: Config, category: Option<Category>) -> Eligibility {
        match Evaluator::new(config) {
            Ok(e) => e.is_eligible(&Repository::parse(ID, category)),
            Err(e) => panic!("config refused: {e}"),
        }
    }

    #[test]
    fn rules_apply_in_order() {
        let mut c = active(Strategy::Percentage, 100);
        c.emergency_stop = true;
        c.is_active = false;
        assert_eq!(decide(c.clone(), None).reason, EligibilityReason::EmergencyStop);
        c.emergency_stop = false;
        assert_eq!(decide(c.clone(), None).reason, EligibilityReason::Inactive);
        c.is_active = true;
        c.excluded_repositories = vec![ID.to_uppercase()];
        c.target_repositories = vec![ID.into()];
        assert_eq!(decide(c.clone(), None).reason, EligibilityReason::Excluded);
        c.excluded_repositories.clear();
        let d = decide(c.clone(), None);
        assert!(d.eligible);
        assert_eq!(d.reason, EligibilityReason::Targeted);
    }

    #[test]
    fn percentage_bounds() {
        assert_eq!(decide(active(Strategy::Percentage, 0), None).reason, EligibilityReason::OutsidePercentage);
        assert_eq!(decide(active(Strategy::Percentage, 100), None).reason, EligibilityReason::InPercentage);
        let b = bucket("hybrid_progressive_capture", &RepoId::parse(ID));
        assert!(!decide(active(Strategy::Percentage, b), None).eligible);
        assert!(decide(active(Strategy::Percentage, b + 1), None).eligible);
    }

    #[test]
    fn size_strategy_admits_by_threshold_never_everyone() {
        // The original admitted everyone at any percentage other than 0/10/25/50/75 (SPEC §7.2).
        for pct in [5u8, 20, 99] {
            let d = decide(active(Strategy::RepositorySize, pct), Some(Category::Enterprise));
            assert_eq!(d.reason, EligibilityReason::CategoryExcluded, "{pct}");
        }
        assert!(decide(active(Strategy::RepositorySize, 20), Some(Category::Test)).eligible);
        assert!(!decide(active(Strategy::RepositorySize, 20), Some(Category::Small)).eligible);
        assert_eq!(decide(active(Strategy::RepositorySize, 100), None).reason, EligibilityReason::Uncategorized);
    }

    #[test]
    fn whitelist_without_target_is_not_eligible() {
        assert_eq!(decide(active(Strategy::Whitelist, 100), None).reason, EligibilityReason::NotTargeted);
    }

    #[test]
    fn percentage_above_100_is_refused_naming_the_field() {
        match Evaluator::new(active(Strategy::Percentage, 101)) {
            Err(e) => assert_eq!(e.field, "rollout_percentage"),
            Ok(_) => panic!("101 accepted"),
        }
    }
}
