//! Decisions (memory only) and categorisation (which writes).
//!
//! A decision always answers: when the policy gives no answer (a trap, a timeout, no policy)
//! eligibility is "not eligible, `policy_error`" and routing is "inngest, `policy_error`"
//! (SPEC §2.3). The runtime counts those fallbacks; the caller never sees an error.

use super::{Manager, ManagerError, ManagerResult};
use crate::engine::{fallback_eligibility, fallback_route};
use crate::store::CategoryRow;
use rollout_policy::{Categorization, Category, Eligibility, Job, RepoId, Repository, RepositoryStats, RouteDecision};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// A decision with what made it, for the decision log.
#[derive(Debug, Clone, PartialEq)]
pub struct Traced<T> {
    /// The decision (the fallback when the policy gave no answer).
    pub decision: T,
    /// The stored `config_version` of the configuration snapshot the policy was given.
    pub config_version: i64,
    /// Why the policy gave no answer (`None` when it answered).
    pub fallback: Option<String>,
}

/// What categorize-all did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CategorizeSummary {
    /// Repositories read from `repositories`.
    pub total: u64,
    /// Categorised and stored.
    pub categorized: u64,
    /// Per category.
    pub by_category: BTreeMap<String, u64>,
    /// Repositories the policy could not categorise.
    pub failed: Vec<Uuid>,
}

impl Manager {
    /// The repository as the policy sees it: the id canonicalised, the cached category.
    pub fn repository(&self, repository_id: &str) -> Repository {
        self.repository_of(RepoId::parse(repository_id.trim()))
    }

    /// The repository of an already parsed id, with its cached category.
    pub fn repository_of(&self, id: RepoId) -> Repository {
        let category = self.categories.load().get(&id).copied();
        Repository { id, category }
    }

    /// Eligibility of one repository (memory only; never writes).
    pub fn is_eligible(&self, repository_id: &str) -> Eligibility {
        self.decide_eligibility(&self.repository(repository_id))
    }

    /// Eligibility of a repository as the policy sees it.
    pub fn decide_eligibility(&self, repository: &Repository) -> Eligibility {
        self.policy.is_eligible(&self.snapshot(), repository).unwrap_or_else(|_| fallback_eligibility())
    }

    /// Eligibility of many repositories, in order, with one snapshot.
    pub fn is_eligible_batch(&self, repository_ids: &[String]) -> Vec<Eligibility> {
        let repos: Vec<Repository> = repository_ids.iter().map(|id| self.repository(id)).collect();
        self.policy
            .is_eligible_batch(&self.snapshot(), &repos)
            .unwrap_or_else(|_| repos.iter().map(|_| fallback_eligibility()).collect())
    }

    /// Where a job runs (memory only; never writes).
    pub fn route(&self, repository_id: &str, job: &Job) -> RouteDecision {
        self.decide_route(&self.repository(repository_id), job)
    }

    /// Where a job of a repository as the policy sees it runs.
    pub fn decide_route(&self, repository: &Repository, job: &Job) -> RouteDecision {
        self.policy.route(&self.snapshot(), repository, job).unwrap_or_else(|_| fallback_route())
    }

    /// Where many jobs run, in order, with one snapshot.
    pub fn decide_routes(&self, requests: &[(Repository, Job)]) -> Vec<RouteDecision> {
        self.policy
            .route_batch(&self.snapshot(), requests)
            .unwrap_or_else(|_| requests.iter().map(|_| fallback_route()).collect())
    }

    /// Where many jobs run, in order, with one snapshot.
    pub fn route_batch(&self, requests: &[(String, Job)]) -> Vec<RouteDecision> {
        let requests: Vec<(Repository, Job)> =
            requests.iter().map(|(id, job)| (self.repository(id), job.clone())).collect();
        self.decide_routes(&requests)
    }

    /// Where a job runs, with what made the decision ([`Traced`]): the stored configuration
    /// version of the snapshot used and the fallback's cause. The version and the snapshot
    /// come from one load of the state, so they always agree.
    pub fn decide_route_traced(&self, repository: &Repository, job: &Job) -> Traced<RouteDecision> {
        let state = self.state();
        let (decision, fallback) = match self.policy.route(&state.snapshot, repository, job) {
            Ok(d) => (d, None),
            Err(e) => (fallback_route(), Some(e.to_string())),
        };
        Traced { decision, config_version: state.stored.version, fallback }
    }

    /// Eligibility, with what made the decision ([`Traced`]).
    pub fn decide_eligibility_traced(&self, repository: &Repository) -> Traced<Eligibility> {
        let state = self.state();
        let (decision, fallback) = match self.policy.is_eligible(&state.snapshot, repository) {
            Ok(d) => (d, None),
            Err(e) => (fallback_eligibility(), Some(e.to_string())),
        };
        Traced { decision, config_version: state.stored.version, fallback }
    }

    /// Where many jobs run, in order, with one snapshot, with what made the decisions.
    pub fn decide_routes_traced(&self, requests: &[(Repository, Job)]) -> Traced<Vec<RouteDecision>> {
        let state = self.state();
        let (decision, fallback) = match self.policy.route_batch(&state.snapshot, requests) {
            Ok(d) => (d, None),
            Err(e) => (requests.iter().map(|_| fallback_route()).collect(), Some(e.to_string())),
        };
        Traced { decision, config_version: state.stored.version, fallback }
    }

    /// Categorise one repository (a UUID or `owner/name`) with the policy and store it; the
    /// numbers come from `stats`, else from `repositories`.
    pub async fn categorize_repository(
        &self,
        repository_id: &str,
        stats: Option<RepositoryStats>,
    ) -> ManagerResult<Categorization> {
        let id = self.store.resolve_repository_id(repository_id).await?;
        let stats = match stats {
            Some(s) => s,
            None => {
                self.store.repository_stats(id).await?.ok_or_else(|| ManagerError::NoStats(repository_id.to_owned()))?
            }
        };
        let c =
            self.policy.categorize(&stats).map_err(|e| ManagerError::PolicyUnavailable(repository_id.to_owned(), e))?;
        self.store.upsert_categories(&[category_row(id, stats, &c)]).await?;
        let mut map = HashMap::clone(&self.categories.load());
        map.insert(RepoId::Uuid(id.as_u128()), c.category);
        self.set_categories(map);
        Ok(c)
    }

    /// Categorise every repository of `repositories`, storing in batches of 500; `progress`
    /// shows a progress bar on stderr.
    pub async fn categorize_all(&self, progress: bool) -> ManagerResult<CategorizeSummary> {
        let repos = self.store.list_repository_stats().await?;
        let bar = if progress {
            let bar = indicatif::ProgressBar::new(repos.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} categorised ({eta} left)")
            {
                bar.set_style(style);
            }
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let mut summary = CategorizeSummary {
            total: repos.len() as u64,
            categorized: 0,
            by_category: Category::ALL.iter().map(|c| (c.as_str().to_owned(), 0)).collect(),
            failed: Vec::new(),
        };
        for chunk in repos.chunks(500) {
            let mut rows = Vec::with_capacity(chunk.len());
            for (id, stats) in chunk {
                match self.policy.categorize(stats) {
                    Ok(c) => {
                        *summary.by_category.entry(c.category.as_str().to_owned()).or_default() += 1;
                        rows.push(category_row(*id, *stats, &c));
                    }
                    Err(_) => summary.failed.push(*id),
                }
            }
            self.store.upsert_categories(&rows).await?;
            summary.categorized += rows.len() as u64;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        self.set_categories(super::load_categories(&self.store).await?);
        Ok(summary)
    }
}

fn category_row(id: Uuid, stats: RepositoryStats, c: &Categorization) -> CategoryRow {
    CategoryRow {
        repository_id: id,
        category: c.category,
        priority_level: c.priority_level,
        is_test_repository: c.is_test_repository,
        stats,
        monthly_activity_score: c.monthly_activity_score,
    }
}
