//! Eligibility (SPEC §2.2) and the evaluator that holds a checked configuration.

use crate::trace::{opt, yes};
use crate::{
    bucket, Config, ConfigError, Eligibility, EligibilityReason, IdSet, Job, NoTrace, Repository, RouteDecision,
    Section, Strategy, Trace, Tracer,
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
        self.is_eligible_with(repository, &mut NoTrace)
    }

    /// [`Evaluator::is_eligible`], recording its checks (section
    /// [`Section::Eligibility`]) in `trace`.
    pub fn is_eligible_traced(&self, repository: &Repository, trace: &mut Trace) -> Eligibility {
        self.is_eligible_with(repository, trace)
    }

    /// The one implementation of SPEC §2.2, generic over the tracer: one check per line of
    /// the table (lines 6 and 8 as two checks each, one per reason), in order, up to the
    /// first that holds.
    pub fn is_eligible_with<T: Tracer>(&self, repository: &Repository, t: &mut T) -> Eligibility {
        use EligibilityReason as R;
        const S: Section = Section::Eligibility;
        let c = &self.config;
        let id = &repository.id;
        let bucket = bucket(&c.feature_name, id);
        let (eligible, reason) = 'decide: {
            let stop = c.emergency_stop;
            if t.check(
                S,
                R::EmergencyStop.as_str(),
                "the emergency stop is on",
                || format!("emergency_stop = {stop}"),
                stop,
            ) {
                break 'decide (false, R::EmergencyStop);
            }
            let active = c.is_active;
            if t.check(
                S,
                R::Inactive.as_str(),
                "the rollout is not active",
                || format!("is_active = {active}"),
                !active,
            ) {
                break 'decide (false, R::Inactive);
            }
            let excluded = self.excluded.contains(id);
            let listed = |what: &str, n: usize, held: bool| {
                format!("`{id}` {} among the {n} {what} ids", if held { "is" } else { "is not" })
            };
            let n = c.excluded_repositories.len();
            if t.check(
                S,
                R::Excluded.as_str(),
                "the id is in excluded_repositories",
                || listed("excluded", n, excluded),
                excluded,
            ) {
                break 'decide (false, R::Excluded);
            }
            let targeted = self.targets.contains(id);
            let n = c.target_repositories.len();
            if t.check(
                S,
                R::Targeted.as_str(),
                "the id is in target_repositories",
                || listed("target", n, targeted),
                targeted,
            ) {
                break 'decide (true, R::Targeted);
            }
            // Lines 5 to 8 by strategy. Each arm also records the lines of the other
            // strategies, as not holding, so that the trace reads as the table.
            let whitelist = |t: &mut T, held: bool| {
                t.check(
                    S,
                    R::NotTargeted.as_str(),
                    "the strategy is whitelist (and the id is not targeted)",
                    || format!("rollout_strategy = {}", c.rollout_strategy),
                    held,
                )
            };
            let compared = || {
                let (strategy, pct) = (c.rollout_strategy, c.rollout_percentage);
                if strategy == Strategy::Percentage {
                    format!("bucket {bucket} < rollout_percentage {pct}: {}", yes(bucket < pct))
                } else {
                    format!("rollout_strategy = {strategy}")
                }
            };
            let in_percentage = |t: &mut T, held: bool| {
                let condition = "the strategy is percentage and bucket < rollout_percentage";
                t.check(S, R::InPercentage.as_str(), condition, compared, held)
            };
            let outside_percentage = |t: &mut T, held: bool| {
                let condition = "the strategy is percentage and bucket ≥ rollout_percentage";
                t.check(S, R::OutsidePercentage.as_str(), condition, compared, held)
            };
            let uncategorized = |t: &mut T, held: bool| {
                let condition = "the strategy is repository_size and the category is unknown";
                t.check(
                    S,
                    R::Uncategorized.as_str(),
                    condition,
                    || format!("category = {}", opt(repository.category)),
                    held,
                )
            };
            match c.rollout_strategy {
                Strategy::Whitelist => {
                    whitelist(t, true);
                    (false, R::NotTargeted)
                }
                Strategy::Percentage => {
                    whitelist(t, false);
                    if in_percentage(t, bucket < c.rollout_percentage) {
                        (true, R::InPercentage)
                    } else {
                        outside_percentage(t, true);
                        (false, R::OutsidePercentage)
                    }
                }
                Strategy::RepositorySize => {
                    whitelist(t, false);
                    in_percentage(t, false);
                    outside_percentage(t, false);
                    match repository.category {
                        None => {
                            uncategorized(t, true);
                            (false, R::Uncategorized)
                        }
                        Some(category) => {
                            uncategorized(t, false);
                            let compared = || {
                                let (pct, threshold) = (c.rollout_percentage, category.threshold());
                                let reached = yes(pct >= threshold);
                                format!("rollout_percentage {pct} ≥ threshold({category}) {threshold}: {reached}")
                            };
                            if t.check(
                                S,
                                R::CategoryIncluded.as_str(),
                                "the strategy is repository_size and rollout_percentage ≥ threshold(category)",
                                compared,
                                c.rollout_percentage >= category.threshold(),
                            ) {
                                (true, R::CategoryIncluded)
                            } else {
                                t.check(
                                    S,
                                    R::CategoryExcluded.as_str(),
                                    "the strategy is repository_size and rollout_percentage < threshold(category)",
                                    compared,
                                    true,
                                );
                                (false, R::CategoryExcluded)
                            }
                        }
                    }
                }
            }
        };
        Eligibility { eligible, reason, bucket }
    }

    /// Where `job` for `repository` runs (SPEC §2.3).
    pub fn route(&self, repository: &Repository, job: &Job) -> RouteDecision {
        self.route_with(repository, job, &mut NoTrace)
    }

    /// [`Evaluator::route`], recording its checks in `trace`: the eligibility checks
    /// (section [`Section::Eligibility`]), then the routing checks ([`Section::Routing`]).
    pub fn route_traced(&self, repository: &Repository, job: &Job, trace: &mut Trace) -> RouteDecision {
        self.route_with(repository, job, trace)
    }

    /// The one implementation of SPEC §2.3 (after §2.2), generic over the tracer.
    pub fn route_with<T: Tracer>(&self, repository: &Repository, job: &Job, t: &mut T) -> RouteDecision {
        let eligibility = self.is_eligible_with(repository, t);
        crate::routing::route_with(eligibility, job, t)
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
