//! One feature being served, and the decisions made on it.

use super::db::{from_ms, now_ms};
use super::decision_log::{new_decision_id, sampled, DropReason, LogSettings};
use super::metrics::DecisionCounters;
use super::outcomes::OutcomeBuffer;
use super::Service;
use crate::input::values::RepositoryUuid;
use crate::manager::{HealthReport, Manager, Participation};
use crate::store::{DecisionFields, DecisionKind, PackedDecision, PolicySha};
use chrono::{DateTime, Utc};
use rollout_policy::{Eligibility, Job, Repository, RouteDecision};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The policy sha256 logged for a decision made with no policy loaded (a fallback).
static NO_POLICY: std::sync::LazyLock<Arc<dyn PolicySha>> = std::sync::LazyLock::new(|| Arc::new("none".to_owned()));

/// One feature being served: its manager and what the service keeps beside it.
pub struct Feature {
    /// The manager.
    pub manager: Manager,
    /// Its decision counters.
    pub counters: Arc<DecisionCounters>,
    /// Outcomes waiting for the database.
    pub(crate) buffer: OutcomeBuffer,
    /// When the configuration was last read from (or written to) the database, unix ms.
    loaded_at_ms: AtomicI64,
    /// Set when outcomes were recorded since the last health check.
    pub(crate) health_due: AtomicBool,
    /// The last health check.
    last_health: Mutex<Option<HealthReport>>,
    /// The health level this process last recorded in the database (`rollout_health_levels`),
    /// so only a change costs a transaction.
    pub(crate) recorded_level: Mutex<Option<&'static str>>,
    /// The last participation count, and whether a recount is under way.
    participation: arc_swap::ArcSwapOption<Participation>,
    counting: AtomicBool,
    /// Buffered outcomes the database refused, most recent last (at most [`DEAD_LETTERS`]).
    dead_letters: Mutex<std::collections::VecDeque<super::outcomes::DeadLetter>>,
    /// The name as each of its logged decisions carries it (shared, not copied per entry).
    log_name: Arc<str>,
}

/// Refused outcomes a feature keeps for the status.
pub const DEAD_LETTERS: usize = 1000;

impl std::fmt::Debug for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feature").field("feature", &self.manager.feature()).finish_non_exhaustive()
    }
}

impl Feature {
    pub(crate) fn new(manager: Manager, counters: Arc<DecisionCounters>) -> Feature {
        Feature {
            counters,
            buffer: OutcomeBuffer::default(),
            loaded_at_ms: AtomicI64::new(now_ms()),
            health_due: AtomicBool::new(false),
            last_health: Mutex::new(None),
            recorded_level: Mutex::new(None),
            participation: arc_swap::ArcSwapOption::empty(),
            counting: AtomicBool::new(false),
            dead_letters: Mutex::new(std::collections::VecDeque::new()),
            log_name: Arc::from(manager.feature()),
            manager,
        }
    }

    /// The feature's name.
    pub fn name(&self) -> &str {
        self.manager.feature()
    }

    /// Outcomes waiting for the database.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Note that the configuration was just read from the database.
    pub fn mark_loaded(&self) {
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When the configuration was last read from the database.
    pub fn loaded_at(&self) -> Option<DateTime<Utc>> {
        from_ms(self.loaded_at_ms.load(Ordering::Relaxed))
    }

    /// Seconds since the configuration was last read from the database.
    pub fn config_age_seconds(&self) -> f64 {
        (now_ms() - self.loaded_at_ms.load(Ordering::Relaxed)).max(0) as f64 / 1000.0
    }

    /// The last health check this process ran.
    pub fn last_health(&self) -> Option<HealthReport> {
        self.last_health.lock().ok().and_then(|h| h.clone())
    }

    /// Buffered outcomes the database refused and that were set aside, oldest first.
    pub fn dead_letters(&self) -> Vec<super::outcomes::DeadLetter> {
        self.dead_letters.lock().map(|d| d.iter().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn push_dead_letter(&self, letter: super::outcomes::DeadLetter) {
        if let Ok(mut d) = self.dead_letters.lock() {
            if d.len() == DEAD_LETTERS {
                d.pop_front();
            }
            d.push_back(letter);
        }
    }

    pub(crate) fn set_health(&self, report: &HealthReport) {
        if let Ok(mut h) = self.last_health.lock() {
            *h = Some(report.clone());
        }
    }
}

impl Service {
    /// The repository `id` as the policy sees it: with `category` when the caller gives one
    /// (an OpenFeature context attribute), else with its cached category — one without is
    /// queued for background categorisation.
    pub fn repository_for(
        &self,
        feature: &Arc<Feature>,
        id: RepositoryUuid,
        category: Option<rollout_policy::Category>,
    ) -> Repository {
        match category {
            Some(c) => Repository { id: id.repo_id(), category: Some(c) },
            None => self.repository(feature, id),
        }
    }

    /// The repository as the policy sees it; one without a category is queued for
    /// background categorisation (a bounded, deduplicated, non-blocking enqueue).
    fn repository(&self, feature: &Arc<Feature>, id: RepositoryUuid) -> Repository {
        let repo = feature.manager.repository_of(id.repo_id());
        if repo.category.is_none() {
            self.inner.categorize.offer(feature, id);
        }
        repo
    }

    /// Eligibility of one repository (memory only), counted: decided by the canary for a
    /// repository of its cohort, offered to the shadow when one runs.
    pub fn is_eligible(&self, feature: &Arc<Feature>, id: RepositoryUuid) -> Eligibility {
        let repo = self.repository(feature, id);
        self.decide_eligibility(feature, &repo, false).decision
    }

    /// Where a job runs (memory only), counted: decided by the canary for a repository of
    /// its cohort, offered to the shadow when one runs.
    pub fn route(&self, feature: &Arc<Feature>, id: RepositoryUuid, job: &Job) -> RouteDecision {
        let repo = self.repository(feature, id);
        self.decide_route(feature, &repo, job, false).decision
    }

    /// Where many jobs run, in order, with one configuration snapshot; each counted.
    pub fn route_batch(&self, feature: &Arc<Feature>, requests: Vec<(RepositoryUuid, Job)>) -> Vec<RouteDecision> {
        let ids: Vec<uuid::Uuid> = requests.iter().map(|_| new_decision_id()).collect();
        let requests: Vec<(Repository, Job)> =
            requests.into_iter().map(|(id, job)| (self.repository(feature, id), job)).collect();
        self.route_batch_plain(feature, &requests, &ids).into_iter().map(|l| l.decision).collect()
    }

    /// The serving version's decisions of a batch without logging; the canary's (and the
    /// shadow's offers) when a candidate is followed.
    fn route_batch_plain(
        &self,
        feature: &Arc<Feature>,
        requests: &[(Repository, Job)],
        ids: &[uuid::Uuid],
    ) -> Vec<Logged<RouteDecision>> {
        let mut decisions: Vec<Logged<RouteDecision>> = feature
            .manager
            .decide_routes(requests)
            .into_iter()
            .zip(ids)
            .map(|(decision, id)| Logged { decision, id: *id, logged: false, canary: None })
            .collect();
        if let Some(live) = self.inner.candidates.current() {
            for (logged, (repo, job)) in decisions.iter_mut().zip(requests) {
                if live.serves(&repo.id) {
                    let c = self.canary_route(feature, &live, repo, job);
                    logged.decision = c.decision;
                    logged.canary = Some(c.version);
                } else {
                    self.after_route(&live, feature, logged.id, repo, job, &logged.decision);
                }
            }
        }
        for d in &decisions {
            feature.counters.route(&d.decision);
        }
        decisions
    }
}

/// A decision served over HTTP: its id (returned to the caller) and whether it was logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged<T> {
    /// The decision.
    pub decision: T,
    /// The decision id (UUIDv7), logged or not.
    pub id: uuid::Uuid,
    /// Whether the entry was queued for the decision log.
    pub logged: bool,
    /// The candidate version that decided, when the repository is in a canary's cohort
    /// (`None`: the serving version decided).
    pub canary: Option<crate::engine::PolicyVersion>,
}

/// What a logged decision answered, for [`Service::log_decision`].
enum Answer<'a> {
    Eligibility(&'a Eligibility),
    Route(&'a Job, &'a RouteDecision),
}

impl Service {
    /// Eligibility of one repository (memory only), counted, with a decision id; logged when
    /// the id is sampled at the feature's rate (`metadata.decision_log.sample_rate`). A
    /// repository of a canary's cohort is decided by the candidate; a shadow is offered the
    /// decision when its id is sampled.
    pub fn is_eligible_logged(&self, feature: &Arc<Feature>, repo: &Repository) -> Logged<Eligibility> {
        self.decide_eligibility(feature, repo, true)
    }

    fn decide_eligibility(&self, feature: &Arc<Feature>, repo: &Repository, log: bool) -> Logged<Eligibility> {
        let decision_id = new_decision_id();
        let settings = if log {
            LogSettings::from_metadata(&feature.manager.state().stored.metadata)
        } else {
            LogSettings::default()
        };
        let live = if self.inner.candidates.any() { self.inner.candidates.current() } else { None };
        if let Some(live) = live.as_ref().filter(|l| l.serves(&repo.id)) {
            let start = Instant::now();
            let c = self.canary_eligibility(feature, live, repo);
            let took = start.elapsed();
            feature.counters.eligibility(&c.decision);
            let traced =
                crate::manager::Traced { decision: c.decision, config_version: c.config_version, fallback: c.fallback };
            let logged = sampled(decision_id, settings.sample_rate)
                && self.log_decision(
                    feature,
                    &settings,
                    decision_id,
                    Some(Arc::new(c.version.clone())),
                    false,
                    repo,
                    &traced,
                    Answer::Eligibility(&traced.decision),
                    took,
                );
            return Logged { decision: traced.decision, id: decision_id, logged, canary: Some(c.version) };
        }
        let out = if !sampled(decision_id, settings.sample_rate) {
            let decision = feature.manager.decide_eligibility(repo);
            feature.counters.eligibility(&decision);
            Logged { decision, id: decision_id, logged: false, canary: None }
        } else {
            let policy = self.inner.policy.version_shared();
            let start = Instant::now();
            let traced = feature.manager.decide_eligibility_traced(repo);
            let took = start.elapsed();
            feature.counters.eligibility(&traced.decision);
            let answer = Answer::Eligibility(&traced.decision);
            let logged = self.log_decision(feature, &settings, decision_id, policy, true, repo, &traced, answer, took);
            Logged { decision: traced.decision, id: decision_id, logged, canary: None }
        };
        if let Some(live) = &live {
            self.after_eligibility(live, feature, decision_id, repo, &out.decision);
        }
        out
    }

    /// Where a job runs (memory only), counted, with a decision id; logged when sampled;
    /// decided by the canary for a repository of its cohort, offered to a shadow.
    pub fn route_logged(&self, feature: &Arc<Feature>, repo: &Repository, job: &Job) -> Logged<RouteDecision> {
        self.decide_route(feature, repo, job, true)
    }

    fn decide_route(&self, feature: &Arc<Feature>, repo: &Repository, job: &Job, log: bool) -> Logged<RouteDecision> {
        let decision_id = new_decision_id();
        let settings = if log {
            LogSettings::from_metadata(&feature.manager.state().stored.metadata)
        } else {
            LogSettings::default()
        };
        let live = if self.inner.candidates.any() { self.inner.candidates.current() } else { None };
        if let Some(live) = live.as_ref().filter(|l| l.serves(&repo.id)) {
            let start = Instant::now();
            let c = self.canary_route(feature, live, repo, job);
            let took = start.elapsed();
            feature.counters.route(&c.decision);
            let traced =
                crate::manager::Traced { decision: c.decision, config_version: c.config_version, fallback: c.fallback };
            let logged = sampled(decision_id, settings.sample_rate)
                && self.log_decision(
                    feature,
                    &settings,
                    decision_id,
                    Some(Arc::new(c.version.clone())),
                    false,
                    repo,
                    &traced,
                    Answer::Route(job, &traced.decision),
                    took,
                );
            return Logged { decision: traced.decision, id: decision_id, logged, canary: Some(c.version) };
        }
        let out = if !sampled(decision_id, settings.sample_rate) {
            let decision = feature.manager.decide_route(repo, job);
            feature.counters.route(&decision);
            Logged { decision, id: decision_id, logged: false, canary: None }
        } else {
            let policy = self.inner.policy.version_shared();
            let start = Instant::now();
            let traced = feature.manager.decide_route_traced(repo, job);
            let took = start.elapsed();
            feature.counters.route(&traced.decision);
            let answer = Answer::Route(job, &traced.decision);
            let logged = self.log_decision(feature, &settings, decision_id, policy, true, repo, &traced, answer, took);
            Logged { decision: traced.decision, id: decision_id, logged, canary: None }
        };
        if let Some(live) = &live {
            self.after_route(live, feature, decision_id, repo, job, &out.decision);
        }
        out
    }

    /// Where many jobs run, in order, with one configuration snapshot; each counted, each
    /// with its own decision id, each logged when its id is sampled.
    pub fn route_batch_logged(
        &self,
        feature: &Arc<Feature>,
        requests: Vec<(RepositoryUuid, Job)>,
    ) -> Vec<Logged<RouteDecision>> {
        let ids: Vec<uuid::Uuid> = requests.iter().map(|_| new_decision_id()).collect();
        let settings = LogSettings::from_metadata(&feature.manager.state().stored.metadata);
        let requests: Vec<(Repository, Job)> =
            requests.into_iter().map(|(id, job)| (self.repository(feature, id), job)).collect();
        if !ids.iter().any(|id| sampled(*id, settings.sample_rate)) {
            return self.route_batch_plain(feature, &requests, &ids);
        }
        let live = self.inner.candidates.current();
        let policy = self.inner.policy.version_shared();
        let start = Instant::now();
        let traced = feature.manager.decide_routes_traced(&requests);
        let took = start.elapsed() / u32::try_from(requests.len().max(1)).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(requests.len());
        for ((decision, id), (repo, job)) in traced.decision.iter().zip(ids).zip(&requests) {
            if let Some(live) = live.as_ref().filter(|l| l.serves(&repo.id)) {
                let c = self.canary_route(feature, live, repo, job);
                feature.counters.route(&c.decision);
                let one = crate::manager::Traced {
                    decision: c.decision,
                    config_version: c.config_version,
                    fallback: c.fallback,
                };
                let logged = sampled(id, settings.sample_rate)
                    && self.log_decision(
                        feature,
                        &settings,
                        id,
                        Some(Arc::new(c.version.clone())),
                        false,
                        repo,
                        &one,
                        Answer::Route(job, &one.decision),
                        took,
                    );
                out.push(Logged { decision: one.decision, id, logged, canary: Some(c.version) });
                continue;
            }
            feature.counters.route(decision);
            if let Some(live) = &live {
                self.after_route(live, feature, id, repo, job, decision);
            }
            let logged = sampled(id, settings.sample_rate)
                && self.log_decision(
                    feature,
                    &settings,
                    id,
                    policy.clone(),
                    true,
                    repo,
                    &traced,
                    Answer::Route(job, decision),
                    took,
                );
            out.push(Logged { decision: *decision, id, logged, canary: None });
        }
        out
    }

    /// Queue the log entry of a sampled decision; whether it was queued. Not logged (and
    /// counted) when a policy swap happened while it was made (which version decided is not
    /// known), when masking is asked without a key, or when the queue is full.
    #[allow(clippy::too_many_arguments, reason = "one private call site per decision kind")]
    fn log_decision<T>(
        &self,
        feature: &Arc<Feature>,
        settings: &LogSettings,
        id: uuid::Uuid,
        policy: Option<Arc<crate::engine::PolicyVersion>>,
        serving: bool,
        repo: &Repository,
        traced: &crate::manager::Traced<T>,
        answer: Answer<'_>,
        took: std::time::Duration,
    ) -> bool {
        let log = &self.inner.decision_log;
        if serving && self.inner.policy.version_shared() != policy {
            log.drop_entry(DropReason::PolicySwapped, 1);
            return false;
        }
        let Some((repository_id, masked)) = log.logged_repository_id(settings, repo.id.to_string()) else {
            return false;
        };
        let overrides = feature.manager.overrides();
        let overrides = (!overrides.is_empty()).then(|| serde_json::to_value(overrides).unwrap_or_default());
        let (kind, eligibility, job, processor, rule) = match answer {
            Answer::Eligibility(e) => (DecisionKind::Eligibility, *e, None, None, None),
            Answer::Route(job, d) => (
                DecisionKind::Route,
                d.eligibility,
                Some(crate::input::JobJson(job)),
                Some(d.processor.as_str()),
                Some(d.rule.as_str()),
            ),
        };
        let reason = eligibility.reason.as_str();
        let found_by = kind.found_by(rule, reason);
        let fields = DecisionFields {
            id,
            // the id's millisecond: a time filter then bounds the id exactly
            // (`store::decision_log::first_id_at`)
            time_us: crate::store::id_ms(id).saturating_mul(1000),
            kind,
            config_version: traced.config_version,
            overrides: overrides.as_ref(),
            repository_id: &repository_id,
            masked,
            category: repo.category.map(|c| c.as_str()),
            job,
            processor,
            rule,
            eligible: eligibility.eligible,
            reason,
            bucket: eligibility.bucket,
            fallback: traced.fallback.as_deref(),
            duration_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
        };
        match fields.encode() {
            Ok(json) => log.offer_packed(PackedDecision {
                id,
                feature: feature.log_name.clone(),
                policy_sha256: match policy {
                    Some(version) => version,
                    None => NO_POLICY.clone(),
                },
                repository_id,
                rule: found_by.map(std::borrow::Cow::Borrowed),
                json,
            }),
            Err(_) => {
                // (a decision's fields always serialise; counted rather than lost unseen)
                log.drop_entry(DropReason::WriteFailed, 1);
                false
            }
        }
    }
}

impl Service {
    /// The statistics of `feature` over its monitoring window. Participation comes from
    /// the cache (a read never scans every repository); when it is not current a recount
    /// starts in the background and the statistics say so.
    pub async fn stats(&self, feature: &str) -> super::ServiceResult<crate::manager::RolloutStats> {
        let feature = self.feature(feature).await?;
        self.inner.db.require()?;
        let participation = self.participation(&feature).unwrap_or_else(|| Arc::new(Participation::none()));
        self.observed(feature.manager.rollout_stats_with(&participation)).await
    }

    /// The cached participation of `feature` (`None` before the first count); a recount is
    /// started in the background when it is not current.
    pub fn participation(&self, feature: &Arc<Feature>) -> Option<Arc<Participation>> {
        let cached = feature.participation.load_full();
        if !cached.as_ref().is_some_and(|p| p.is_current(&feature.manager)) {
            self.recount(feature);
        }
        cached
    }

    /// Count the participation of `feature` in the background unless a count is under way.
    pub(crate) fn recount(&self, feature: &Arc<Feature>) {
        if feature.counting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (service, feature) = (self.clone(), feature.clone());
        tokio::spawn(async move {
            match service.observed(feature.manager.compute_participation()).await {
                Ok(p) => {
                    tracing::debug!(
                        feature = feature.name(),
                        took_ms = p.took_ms,
                        repositories = p.total_repositories,
                        "counted participation"
                    );
                    feature.participation.store(Some(Arc::new(p)));
                }
                Err(e) => tracing::debug!(feature = feature.name(), "cannot count participation: {e}"),
            }
            feature.counting.store(false, Ordering::Release);
        });
    }

    /// Count the participation of `feature` now and cache it (for callers that wait, such
    /// as tests and benchmarks; a server counts in the background).
    pub async fn count_participation(&self, feature: &str) -> super::ServiceResult<Arc<Participation>> {
        let feature = self.feature(feature).await?;
        let p = Arc::new(self.observed(feature.manager.compute_participation()).await?);
        feature.participation.store(Some(p.clone()));
        Ok(p)
    }

    /// The history of `feature`, newest first, at most `limit` rows.
    pub async fn history(&self, feature: &str, limit: u32) -> super::ServiceResult<Vec<crate::store::HistoryEntry>> {
        let feature = self.feature(feature).await?;
        self.inner.db.require()?;
        self.observed(feature.manager.history(limit)).await
    }
}
