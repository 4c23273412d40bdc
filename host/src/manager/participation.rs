//! Participation: how many known repositories the policy admits under the configuration in
//! force, overall and by category.
//!
//! Counting it asks the policy about every known repository — a million, on a big
//! installation — so it is computed in chunks ([`CHUNK`] repositories per guest call, well
//! inside a call's time and memory bounds) and, by a server, in the background and cached
//! ([`crate::service`]): a read of the statistics or the status page never scans. The
//! policy is asked through [`Policy::is_eligible_batch_for_read`], which does not count
//! against a new version's probation: a page refresh must not revert a good policy.

use super::{Manager, ManagerResult};
use crate::engine::fallback_eligibility;
use chrono::{DateTime, Utc};
use rollout_policy::{Category, RepoId, Repository};
use serde::Serialize;
use std::collections::BTreeMap;

/// Repositories per guest call while counting.
pub const CHUNK: usize = 10_000;

/// Participation under one configuration snapshot, policy and set of categories.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Participation {
    /// The configuration snapshot counted ([`crate::engine::ConfigSnapshot::version`]).
    pub config_version: u64,
    /// The categories counted ([`Manager::categories_version`]).
    pub categories_version: u64,
    /// The policy that decided (`None` when none was loaded: every decision fell back).
    pub policy_sha256: Option<String>,
    /// When the count finished.
    pub computed_at: DateTime<Utc>,
    /// How long it took, in milliseconds.
    pub took_ms: f64,
    /// Known repositories (`repositories` ∪ categorised).
    pub total_repositories: u64,
    /// Categorised repositories.
    pub categorized_repositories: u64,
    /// Known repositories the policy finds eligible.
    pub eligible_repositories: u64,
    /// Categorised repositories the policy finds eligible.
    pub eligible_categorized_repositories: u64,
    /// Categorised repositories per category (every category present).
    pub categories: BTreeMap<String, u64>,
    /// Eligible categorised repositories per category (every category present).
    pub eligible_by_category: BTreeMap<String, u64>,
    /// Decisions the policy could not make (counted as not eligible).
    pub fallbacks: u64,
}

impl Participation {
    /// Nothing counted yet: zeros, counted at the epoch, current for nothing.
    pub fn none() -> Participation {
        Participation {
            config_version: 0,
            categories_version: 0,
            policy_sha256: None,
            computed_at: DateTime::<Utc>::UNIX_EPOCH,
            took_ms: 0.0,
            total_repositories: 0,
            categorized_repositories: 0,
            eligible_repositories: 0,
            eligible_categorized_repositories: 0,
            categories: per_category(),
            eligible_by_category: per_category(),
            fallbacks: 0,
        }
    }

    /// Whether this count still describes `manager`'s state: the same configuration
    /// snapshot, categories and policy.
    pub fn is_current(&self, manager: &Manager) -> bool {
        self.config_version == manager.snapshot().version()
            && self.categories_version == manager.categories_version()
            && self.policy_sha256 == manager.policy().version().map(|v| v.sha256)
    }
}

fn per_category() -> BTreeMap<String, u64> {
    Category::ALL.iter().map(|c| (c.as_str().to_owned(), 0)).collect()
}

impl Manager {
    /// Count participation now, [`CHUNK`] repositories per call, yielding between chunks.
    pub async fn compute_participation(&self) -> ManagerResult<Participation> {
        let start = std::time::Instant::now();
        let snapshot = self.snapshot();
        let categories_version = self.categories_version();
        let categories = self.categories.load_full();
        let policy_sha256 = self.policy.version().map(|v| v.sha256);
        let mut ids: Vec<RepoId> =
            self.store.list_repository_ids().await?.into_iter().map(|u| RepoId::Uuid(u.as_u128())).collect();
        ids.extend(categories.keys().filter(|id| !matches!(id, RepoId::Uuid(_))).cloned());
        let mut p = Participation {
            config_version: snapshot.version(),
            categories_version,
            policy_sha256,
            computed_at: Utc::now(),
            took_ms: 0.0,
            total_repositories: ids.len() as u64,
            categorized_repositories: categories.len() as u64,
            eligible_repositories: 0,
            eligible_categorized_repositories: 0,
            categories: per_category(),
            eligible_by_category: per_category(),
            fallbacks: 0,
        };
        for c in categories.values() {
            *p.categories.entry(c.as_str().to_owned()).or_default() += 1;
        }
        for chunk in ids.chunks(CHUNK) {
            let repos: Vec<Repository> =
                chunk.iter().map(|id| Repository { category: categories.get(id).copied(), id: id.clone() }).collect();
            let decisions = match self.policy.is_eligible_batch_for_read(&snapshot, &repos) {
                Ok(d) if d.len() == repos.len() => d,
                _ => {
                    p.fallbacks += repos.len() as u64;
                    repos.iter().map(|_| fallback_eligibility()).collect()
                }
            };
            for (r, d) in repos.iter().zip(&decisions) {
                if !d.eligible {
                    continue;
                }
                p.eligible_repositories += 1;
                if let Some(c) = r.category {
                    p.eligible_categorized_repositories += 1;
                    *p.eligible_by_category.entry(c.as_str().to_owned()).or_default() += 1;
                }
            }
            tokio::task::yield_now().await;
        }
        p.computed_at = Utc::now();
        p.took_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok(p)
    }
}
