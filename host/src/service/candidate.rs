//! Rolling out the policy itself: a *candidate* version beside the serving one, in shadow
//! or as a canary, judged by a guard, stepped on a schedule, promoted or reverted (issue 15).
//!
//! - **Shadow.** A sampled share of live decisions (by decision id, the same on every
//!   instance) is handed — with the configuration snapshot, the repository as the serving
//!   policy saw it and the served answer — to a bounded queue ([`SHADOW_QUEUE`] items). One
//!   worker thread per process asks the candidate the same question and compares. The
//!   request never waits: a full queue drops the item (counted), and a trapping or slow
//!   candidate only costs the worker's time. Counts are kept per feature and per
//!   (served rule → candidate rule) and (served reason → candidate reason) pair, with the
//!   last [`MISMATCHES_KEPT`] mismatching inputs and both answers.
//! - **Canary.** The candidate *serves* a sticky share of repositories: a repository is in
//!   the cohort when `xxh3_64("canary:" + sha256 + ":" + id) mod 10,000` is below the share
//!   in hundredths of a percent. The hash is salted with the candidate's digest, not the
//!   feature's name, so the cohort is independent of the feature's own buckets (the early
//!   adopters are not the canary cohort); a repository in at 1 % stays in at 5 %; every
//!   instance computes the same cohort from the same stored state. A cohort decision names
//!   the candidate's version (in the response and the decision log).
//! - **Guard.** At every health check the canary cohort is compared with the control
//!   cohort over the same window (since the share last changed): fallback rates, and the
//!   error rates of outcomes attributed to each cohort by recomputing the assignment of the
//!   outcome's repository ([`super::guard`]: a sequential test with a stated false-alarm
//!   rate). A worse canary is reverted to 0 (a stored event, all instances follow); a
//!   satisfied one advances along its schedule and is promoted after its last step.
//! - **State.** `policy_candidate_events` ([`crate::store::candidate`]): the newest event
//!   is the state; every change is a compare-and-set on its `seq`, so of several instances
//!   judging one canary exactly one records a revert or a step.
//!
//! Counts are per instance, in memory (`GET /v1/policies/shadow` and `/metrics` of each
//! instance). Outcomes given by `owner/name` are not attributed to a cohort (only ids).

use super::guard::{self, Cohort, GuardLimits, Judgement};
use super::{Feature, Service, ServiceError, ServiceResult};
use crate::engine::{fallback_eligibility, fallback_route, ConfigSnapshot, Policy, PolicyVersion};
use crate::input::values::{Actor, Reason};
use crate::runtime::Candidate;
use crate::store::{CandidateAction, CandidateEvent, NewCandidateEvent};
use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};
use rollout_policy::{Eligibility, EligibilityReason, Job, RepoId, Repository, RouteDecision, RouteRule};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Items waiting for the shadow worker; more are dropped (counted).
pub const SHADOW_QUEUE: usize = 16_384;

/// Mismatching inputs kept for inspection (the most recent).
pub const MISMATCHES_KEPT: usize = 20;

/// Cohort positions: a share is in hundredths of a percent.
const COHORT_SLOTS: u64 = 10_000;

/// Significance of the guard's sequential test (its false-alarm rate over a whole step).
pub const GUARD_ALPHA: f64 = 0.05;

/// How a candidate takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateMode {
    /// Decides beside the serving version; never serves.
    Shadow,
    /// Serves a sticky share of repositories.
    Canary,
}

/// A candidate as stored (the newest `policy_candidate_events` row's `state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateState {
    /// The candidate version.
    pub sha256: String,
    /// Shadow or canary.
    pub mode: CandidateMode,
    /// Shadow: share of decisions the candidate also evaluates, 0–1.
    #[serde(default)]
    pub sample_rate: f64,
    /// Canary: share of repositories it serves, percent (0–100; hundredths count).
    #[serde(default)]
    pub percentage: f64,
    /// Canary: the guard reverts when the canary's fallback rate exceeds the control's by
    /// more than this (0–1).
    #[serde(default)]
    pub max_fallback_rate: f64,
    /// Canary: the guard reverts when the canary's outcome error rate exceeds the
    /// control's by more than this (0–1).
    #[serde(default)]
    pub max_error_rate_delta: f64,
    /// Canary: the shares still to come, in order (a schedule; empty: none).
    #[serde(default)]
    pub steps: Vec<f64>,
    /// Canary: seconds each share is held (with the guard satisfied) before the next.
    #[serde(default)]
    pub interval_seconds: u64,
}

impl CandidateState {
    fn threshold(&self) -> u64 {
        match self.mode {
            CandidateMode::Shadow => 0,
            CandidateMode::Canary => cohort_threshold(self.percentage),
        }
    }
}

/// The cohort slots (of 10,000) a canary share of `percentage` (0–100) takes: a repository
/// whose [`cohort_slot`] is below it is in the cohort.
fn cohort_threshold(percentage: f64) -> u64 {
    // clamped to 0..=10,000 first, so the cast is exact
    (percentage * 100.0).round().clamp(0.0, COHORT_SLOTS as f64) as u64
}

/// Whether repository `id` is in the canary cohort of the candidate `sha256` at
/// `percentage` (0–100). Pure: every instance, and a test, computes the same answer; a
/// repository in at one share is in at every larger share.
pub fn in_cohort(sha256: &str, id: &RepoId, percentage: f64) -> bool {
    cohort_slot(sha256, id) < cohort_threshold(percentage)
}

/// The cohort position of `id` for the candidate `sha256`, in `0..10_000`.
pub fn cohort_slot(sha256: &str, id: &RepoId) -> u64 {
    let mut input = Vec::with_capacity(8 + sha256.len() + 37);
    input.extend_from_slice(b"canary:");
    input.extend_from_slice(sha256.as_bytes());
    input.push(b':');
    id.write_canonical(&mut input);
    xxhash_rust::xxh3::xxh3_64(&input) % COHORT_SLOTS
}

/// Decisions and outcomes of one cohort, counted lock-free.
#[derive(Debug, Default)]
struct CohortCounters {
    decisions: AtomicU64,
    fallbacks: AtomicU64,
    outcomes: AtomicU64,
    failures: AtomicU64,
}

impl CohortCounters {
    fn decided(&self, n: u64, fallbacks: u64) {
        self.decisions.fetch_add(n, Relaxed);
        if fallbacks > 0 {
            self.fallbacks.fetch_add(fallbacks, Relaxed);
        }
    }

    fn snapshot(&self) -> Cohort {
        Cohort {
            decisions: self.decisions.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            outcomes: self.outcomes.load(Relaxed),
            failures: self.failures.load(Relaxed),
        }
    }
}

/// Shadow counts of one feature.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeatureShadow {
    /// Decisions the candidate was asked about.
    pub evaluated: u64,
    /// Of those, answered exactly as served.
    pub matched: u64,
    /// Answered differently.
    pub mismatched: u64,
    /// The candidate gave no answer (trap, timeout).
    pub candidate_errors: u64,
    /// Mismatches whose routing rule differs, by `served rule → candidate rule`.
    pub rule_pairs: BTreeMap<String, u64>,
    /// Mismatches whose eligibility reason differs, by `served reason → candidate reason`.
    pub reason_pairs: BTreeMap<String, u64>,
}

/// A decision the candidate answered differently.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// When it was compared.
    pub at: DateTime<Utc>,
    /// The feature.
    pub feature: String,
    /// The repository id as the policy saw it.
    pub repository_id: String,
    /// Its category, when known.
    pub category: Option<&'static str>,
    /// The job (route decisions).
    pub job: Option<serde_json::Value>,
    /// What was served.
    pub served: Answer,
    /// What the candidate answered (`None`: it gave no answer).
    pub candidate: Option<Answer>,
    /// Why the candidate gave no answer.
    pub candidate_error: Option<String>,
}

/// One side of a compared decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Where the job runs (`None` for an eligibility decision).
    pub processor: Option<&'static str>,
    /// The routing rule (`None` for an eligibility decision).
    pub rule: Option<&'static str>,
    /// Whether the repository takes part.
    pub eligible: bool,
    /// The eligibility rule.
    pub reason: &'static str,
    /// The bucket.
    pub bucket: u8,
}

impl Answer {
    fn route(d: &RouteDecision) -> Answer {
        Answer {
            processor: Some(d.processor.as_str()),
            rule: Some(d.rule.as_str()),
            eligible: d.eligibility.eligible,
            reason: d.eligibility.reason.as_str(),
            bucket: d.eligibility.bucket,
        }
    }

    fn eligibility(e: &Eligibility) -> Answer {
        Answer { processor: None, rule: None, eligible: e.eligible, reason: e.reason.as_str(), bucket: e.bucket }
    }
}

/// The shadow results of a candidate in this process.
#[derive(Debug, Default)]
struct ShadowStats {
    offered: AtomicU64,
    dropped: AtomicU64,
    results: Mutex<ShadowResults>,
}

#[derive(Debug, Default)]
struct ShadowResults {
    features: BTreeMap<String, FeatureShadow>,
    mismatches: VecDeque<Mismatch>,
}

/// The candidate this process follows: the stored state and the loaded version.
pub(crate) struct Live {
    event: CandidateEvent,
    state: CandidateState,
    policy: Candidate,
    threshold: u64,
    shadow: Arc<ShadowStats>,
    canary: CohortCounters,
    control: CohortCounters,
    /// Health checks judged since the share last changed.
    checks: AtomicU64,
    last_judgement: Mutex<Option<Judgement>>,
}

impl Live {
    /// Whether the canary serves `id`.
    #[inline]
    pub(crate) fn serves(&self, id: &RepoId) -> bool {
        self.threshold > 0 && cohort_slot(&self.state.sha256, id) < self.threshold
    }

    fn is_canary(&self) -> bool {
        self.state.mode == CandidateMode::Canary
    }

    fn shadow_rate(&self) -> f64 {
        match self.state.mode {
            CandidateMode::Shadow => self.state.sample_rate,
            CandidateMode::Canary => 0.0,
        }
    }
}

enum Ask {
    Route { job: Job, served: RouteDecision },
    Eligibility { served: Eligibility },
}

struct ShadowItem {
    live: Arc<Live>,
    feature: Arc<Feature>,
    snapshot: Arc<ConfigSnapshot>,
    repo: Repository,
    ask: Ask,
}

/// The process's candidate and its shadow worker.
pub(crate) struct Candidates {
    live: ArcSwapOption<Live>,
    queue: SyncSender<ShadowItem>,
    /// Why the stored candidate is not followed here (it was refused, or its bytes are
    /// missing); cleared when the state changes.
    refused: Mutex<Option<(i64, String)>>,
    turn: tokio::sync::Mutex<()>,
}

impl Candidates {
    pub(crate) fn new() -> Candidates {
        let (queue, rx) = sync_channel(SHADOW_QUEUE);
        let spawned = std::thread::Builder::new().name("rollout-shadow".into()).spawn(move || shadow_worker(&rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start the shadow worker: {e}; shadow items will be dropped");
        }
        Candidates { live: ArcSwapOption::const_empty(), queue, refused: Mutex::new(None), turn: Default::default() }
    }

    /// The candidate followed now.
    #[inline]
    pub(crate) fn current(&self) -> Option<Arc<Live>> {
        self.live.load_full()
    }

    /// Whether any candidate is followed (no allocation, no reference count).
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.live.load().is_some()
    }

    fn offer(&self, item: ShadowItem) {
        let stats = item.live.shadow.clone();
        stats.offered.fetch_add(1, Relaxed);
        match self.queue.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// How long the shadow worker sleeps between drains while items keep coming.
const SHADOW_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Compare what is offered until the process ends.
///
/// The worker waits on the channel only when it is idle. While items keep coming it drains
/// what is queued and then sleeps [`SHADOW_PAUSE`]: a receiver waiting on the channel makes
/// every offer wake it (a futex call on the deciding thread and a context switch per
/// decision), a sleeping one costs an offer nothing. At 50,000 decisions a second a pause
/// queues about 50 items of the 16,384 the queue holds.
fn shadow_worker(rx: &Receiver<ShadowItem>) {
    while let Ok(item) = rx.recv() {
        compare(&item);
        loop {
            let mut drained = 0usize;
            while let Ok(item) = rx.try_recv() {
                compare(&item);
                drained += 1;
            }
            if drained == 0 {
                break;
            }
            std::thread::sleep(SHADOW_PAUSE);
        }
    }
}

fn compare(item: &ShadowItem) {
    let policy = &item.live.policy;
    let (served, candidate, error, job) = match &item.ask {
        Ask::Route { job, served } => match policy.route(&item.snapshot, &item.repo, job) {
            Ok(d) => (Answer::route(served), Some(Answer::route(&d)), None, job),
            Err(e) => (Answer::route(served), None, Some(e.to_string()), job),
        },
        Ask::Eligibility { served } => {
            let answer = Answer::eligibility(served);
            let result = policy.is_eligible(&item.snapshot, &item.repo);
            let Ok(mut results) = item.live.shadow.results.lock() else { return };
            let Some(f) = feature_counts(&mut results, item.feature.name()) else { return };
            f.evaluated += 1;
            match result {
                Ok(e) if e == *served => f.matched += 1,
                Ok(e) => {
                    f.mismatched += 1;
                    if e.reason != served.reason {
                        *f.reason_pairs.entry(pair(served.reason.as_str(), e.reason.as_str())).or_default() += 1;
                    }
                    push_mismatch(&mut results, item, None, answer, Some(Answer::eligibility(&e)), None);
                }
                Err(err) => {
                    f.candidate_errors += 1;
                    push_mismatch(&mut results, item, None, answer, None, Some(err.to_string()));
                }
            }
            return;
        }
    };
    let Ok(mut results) = item.live.shadow.results.lock() else { return };
    let Some(f) = feature_counts(&mut results, item.feature.name()) else { return };
    f.evaluated += 1;
    match candidate {
        Some(c) if c == served => f.matched += 1,
        Some(c) => {
            f.mismatched += 1;
            if c.rule != served.rule {
                *f.rule_pairs.entry(pair(served.rule.unwrap_or("-"), c.rule.unwrap_or("-"))).or_default() += 1;
            }
            if c.reason != served.reason {
                *f.reason_pairs.entry(pair(served.reason, c.reason)).or_default() += 1;
            }
            push_mismatch(&mut results, item, Some(job), served, Some(c), None);
        }
        None => {
            f.candidate_errors += 1;
            push_mismatch(&mut results, item, Some(job), served, None, error);
        }
    }
}

/// The counts of `feature` (its name allocated only the first time).
fn feature_counts<'r>(results: &'r mut ShadowResults, feature: &str) -> Option<&'r mut FeatureShadow> {
    if !results.features.contains_key(feature) {
        results.features.insert(feature.to_owned(), FeatureShadow::default());
    }
    results.features.get_mut(feature)
}

fn pair(a: &str, b: &str) -> String {
    format!("{a} → {b}")
}

fn push_mismatch(
    results: &mut ShadowResults,
    item: &ShadowItem,
    job: Option<&Job>,
    served: Answer,
    candidate: Option<Answer>,
    candidate_error: Option<String>,
) {
    if results.mismatches.len() == MISMATCHES_KEPT {
        results.mismatches.pop_front();
    }
    results.mismatches.push_back(Mismatch {
        at: Utc::now(),
        feature: item.feature.name().to_owned(),
        repository_id: item.repo.id.to_string(),
        category: item.repo.category.map(|c| c.as_str()),
        job: job.map(crate::input::job_to_json),
        served,
        candidate,
        candidate_error,
    });
}

/// Whether a served route decision is the fallback.
fn route_fell_back(d: &RouteDecision) -> bool {
    d.rule == RouteRule::PolicyError
}

/// Whether a served eligibility is the fallback.
fn eligibility_fell_back(e: &Eligibility) -> bool {
    e.reason == EligibilityReason::PolicyError
}

/// A canary cohort's decision: what was served, and what made it.
pub(crate) struct CanaryDecision<T> {
    pub(crate) decision: T,
    pub(crate) config_version: i64,
    pub(crate) fallback: Option<String>,
    pub(crate) version: PolicyVersion,
}

impl Service {
    /// The candidate's route decision for a repository of its cohort (the fallback when it
    /// gives no answer), counted for the guard.
    pub(crate) fn canary_route(
        &self,
        feature: &Feature,
        live: &Live,
        repo: &Repository,
        job: &Job,
    ) -> CanaryDecision<RouteDecision> {
        let state = feature.manager.state();
        let (decision, fallback) = match live.policy.route(&state.snapshot, repo, job) {
            Ok(d) => (d, None),
            Err(e) => (fallback_route(), Some(e.to_string())),
        };
        live.canary.decided(1, u64::from(fallback.is_some()));
        CanaryDecision { decision, config_version: state.stored.version, fallback, version: live_version(live) }
    }

    /// The candidate's eligibility for a repository of its cohort, counted for the guard.
    pub(crate) fn canary_eligibility(
        &self,
        feature: &Feature,
        live: &Live,
        repo: &Repository,
    ) -> CanaryDecision<Eligibility> {
        let state = feature.manager.state();
        let (decision, fallback) = match live.policy.is_eligible(&state.snapshot, repo) {
            Ok(d) => (d, None),
            Err(e) => (fallback_eligibility(), Some(e.to_string())),
        };
        live.canary.decided(1, u64::from(fallback.is_some()));
        CanaryDecision { decision, config_version: state.stored.version, fallback, version: live_version(live) }
    }

    /// After a serving version's route decision: counted for the control cohort of a
    /// canary, or offered to the shadow worker when the decision id is sampled.
    pub(crate) fn after_route(
        &self,
        live: &Arc<Live>,
        feature: &Arc<Feature>,
        id: uuid::Uuid,
        repo: &Repository,
        job: &Job,
        d: &RouteDecision,
    ) {
        if live.is_canary() {
            live.control.decided(1, u64::from(route_fell_back(d)));
        } else if super::decision_log::sampled(id, live.shadow_rate()) {
            self.inner.candidates.offer(ShadowItem {
                live: live.clone(),
                feature: feature.clone(),
                snapshot: feature.manager.snapshot(),
                repo: repo.clone(),
                ask: Ask::Route { job: job.clone(), served: *d },
            });
        }
    }

    /// [`Service::after_route`] for an eligibility decision.
    pub(crate) fn after_eligibility(
        &self,
        live: &Arc<Live>,
        feature: &Arc<Feature>,
        id: uuid::Uuid,
        repo: &Repository,
        e: &Eligibility,
    ) {
        if live.is_canary() {
            live.control.decided(1, u64::from(eligibility_fell_back(e)));
        } else if super::decision_log::sampled(id, live.shadow_rate()) {
            self.inner.candidates.offer(ShadowItem {
                live: live.clone(),
                feature: feature.clone(),
                snapshot: feature.manager.snapshot(),
                repo: repo.clone(),
                ask: Ask::Eligibility { served: *e },
            });
        }
    }

    /// Attribute outcomes to the canary or control cohort (by recomputing the assignment of
    /// each outcome's repository; `owner/name` references are not attributed).
    pub(crate) fn attribute_outcomes(&self, outcomes: &[crate::manager::OutcomeInput]) {
        let Some(live) = self.inner.candidates.current() else { return };
        if !live.is_canary() {
            return;
        }
        for o in outcomes {
            let id = RepoId::parse(o.repository.as_str().trim());
            if !id.is_uuid() {
                continue;
            }
            let cohort = if live.serves(&id) { &live.canary } else { &live.control };
            cohort.outcomes.fetch_add(1, Relaxed);
            if !o.success {
                cohort.failures.fetch_add(1, Relaxed);
            }
        }
    }
}

fn live_version(live: &Live) -> PolicyVersion {
    live.policy.policy_version().unwrap_or_else(|| PolicyVersion {
        name: String::new(),
        version: String::new(),
        sha256: live.state.sha256.clone(),
    })
}

/// What `POST /v1/policies/{sha256}/canary` asks.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryRequest {
    /// Share of repositories, percent (0–100).
    pub percentage: f64,
    /// Largest tolerated excess of the canary's fallback rate over the control's (0–1).
    pub max_fallback_rate: f64,
    /// Largest tolerated excess of the canary's outcome error rate (0–1).
    pub max_error_rate_delta: f64,
    /// Shares to step through after `percentage` (each 0–100, increasing).
    pub steps: Vec<f64>,
    /// Seconds to hold each share before the next (required with `steps`).
    pub interval_seconds: u64,
}

/// Parse a schedule interval: whole seconds (`600`) or a number with a unit (`30s`, `10m`,
/// `1h`, `1d`), at least one second.
pub fn parse_interval(text: &str) -> ServiceResult<u64> {
    let t = text.trim();
    let bad = || {
        ServiceError::invalid(
            "interval",
            format!("invalid interval `{text}`: expected seconds or a duration such as 30s, 10m, 1h, 1d"),
        )
    };
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (t.get(..i).ok_or_else(bad)?, c),
        _ => (t, 's'),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    crate::input::values::unit_seconds(n, unit).filter(|s| *s > 0).ok_or_else(bad)
}

/// Check a share in percent.
pub fn check_percentage(field: &str, p: f64) -> ServiceResult<f64> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(ServiceError::invalid(field, format!("invalid {field} `{p}`: expected a number from 0 to 100")))
    }
}

/// Check a rate 0–1.
pub fn check_rate(field: &str, r: f64) -> ServiceResult<f64> {
    if r.is_finite() && (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(ServiceError::invalid(field, format!("invalid {field} `{r}`: expected a number from 0 to 1")))
    }
}

impl CanaryRequest {
    /// Check every field (naming the one at fault): the first share is `percentage`, the
    /// schedule must increase and needs an interval.
    pub fn validate(self) -> ServiceResult<CanaryRequest> {
        check_percentage("percentage", self.percentage)?;
        check_rate("max_fallback_rate", self.max_fallback_rate)?;
        check_rate("max_error_rate_delta", self.max_error_rate_delta)?;
        let mut last = self.percentage;
        for s in &self.steps {
            check_percentage("steps", *s)?;
            if *s <= last {
                return Err(ServiceError::invalid(
                    "steps",
                    format!("invalid steps: each share must be larger than the one before ({s} after {last})"),
                ));
            }
            last = *s;
        }
        if !self.steps.is_empty() && self.interval_seconds == 0 {
            return Err(ServiceError::invalid("interval", "a schedule of steps needs an interval (e.g. `10m`)"));
        }
        Ok(self)
    }
}

/// A candidate's status in this process (`GET /v1/policies/shadow`, the status page).
#[derive(Debug, Clone, Serialize)]
pub struct CandidateStatus {
    /// The stored state (`None`: no candidate).
    pub state: Option<CandidateState>,
    /// The stored event it comes from.
    pub event: Option<CandidateEvent>,
    /// The candidate's name and semver when loaded here.
    pub version: Option<PolicyVersion>,
    /// Why this process does not follow the stored candidate, if it does not.
    pub refused_here: Option<String>,
    /// Shadow: decisions offered to the worker, and dropped because its queue was full.
    pub shadow_offered: u64,
    /// Shadow: dropped because the queue was full.
    pub shadow_dropped: u64,
    /// Shadow: per feature.
    pub shadow: BTreeMap<String, FeatureShadow>,
    /// Shadow: the most recent mismatches, oldest first.
    pub mismatches: Vec<Mismatch>,
    /// Canary: the cohort's counts since the share last changed.
    pub canary: Option<Cohort>,
    /// Canary: the control cohort's counts over the same window.
    pub control: Option<Cohort>,
    /// Canary: health checks judged since the share last changed.
    pub checks: u64,
    /// Canary: the guard's last judgement.
    pub guard: Option<Judgement>,
    /// The candidate's own call counts (decisions, fallbacks, traps).
    pub calls: Option<crate::runtime::Counts>,
}

/// What one guard round did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum GuardAction {
    /// No canary, or nothing to do.
    None,
    /// Judged; nothing changed.
    Held {
        /// The judgement.
        judgement: Judgement,
    },
    /// The canary was worse: reverted to 0.
    Reverted {
        /// The judgement.
        judgement: Judgement,
    },
    /// The schedule moved to the next share.
    Stepped {
        /// The new share.
        percentage: f64,
    },
    /// The schedule ended: the candidate is the active version.
    Promoted,
    /// Another instance changed the state first.
    Raced,
}

impl Service {
    /// Start (or re-tune) shadow evaluation of the stored version `sha256` at `sample_rate`
    /// (0–1): validated here first, stored as a `shadow_started` event, followed by every
    /// instance.
    pub async fn start_shadow(
        &self,
        sha256: &crate::input::values::Sha256,
        sample_rate: f64,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<CandidateStatus> {
        check_rate("sample_rate", sample_rate)?;
        let state = CandidateState {
            sha256: sha256.as_str().to_owned(),
            mode: CandidateMode::Shadow,
            sample_rate,
            percentage: 0.0,
            max_fallback_rate: 0.0,
            max_error_rate_delta: 0.0,
            steps: Vec::new(),
            interval_seconds: 0,
        };
        self.set_candidate(state, CandidateAction::ShadowStarted, reason, actor).await
    }

    /// Start (or re-tune) a canary of the stored version `sha256`.
    pub async fn start_canary(
        &self,
        sha256: &crate::input::values::Sha256,
        request: CanaryRequest,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<CandidateStatus> {
        let r = request.validate()?;
        let state = CandidateState {
            sha256: sha256.as_str().to_owned(),
            mode: CandidateMode::Canary,
            sample_rate: 0.0,
            percentage: r.percentage,
            max_fallback_rate: r.max_fallback_rate,
            max_error_rate_delta: r.max_error_rate_delta,
            steps: r.steps,
            interval_seconds: r.interval_seconds,
        };
        self.set_candidate(state, CandidateAction::CanaryStarted, reason, actor).await
    }

    async fn set_candidate(
        &self,
        state: CandidateState,
        action: CandidateAction,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<CandidateStatus> {
        self.inner.db.require()?;
        if self.inner.runtime.policy_version().is_some_and(|v| v.sha256 == state.sha256) {
            return Err(ServiceError::Conflict(format!(
                "policy `{}` is the serving version already: a candidate must be another version",
                state.sha256
            )));
        }
        // validate here first: a candidate this process refuses is not stored
        self.load_candidate(&state.sha256).await?;
        let current = self.observed(self.inner.store.current_candidate()).await?;
        let event = NewCandidateEvent {
            sha256: state.sha256.clone(),
            action,
            state: Some(serde_json::to_value(&state).map_err(|e| ServiceError::Internal(e.to_string()))?),
            reason: reason.map(|r| r.as_str().to_owned()),
            triggered_by: actor.as_str().to_owned(),
            metadata: serde_json::json!({ "previous": current.as_ref().and_then(|c| c.state.clone()) }),
        };
        let written = self.observed(self.inner.store.append_candidate_event(current.map(|c| c.seq), &event)).await?;
        if written.is_none() {
            return Err(ServiceError::Conflict("another change of the policy candidate came first; retry".into()));
        }
        self.reconcile_candidate().await;
        Ok(self.candidate_status())
    }

    /// End the shadow or canary (a `stopped` event): the candidate serves nothing and is
    /// no longer evaluated, on every instance.
    pub async fn stop_candidate(&self, reason: Option<Reason>, actor: &Actor) -> ServiceResult<CandidateStatus> {
        self.inner.db.require()?;
        let current = self.observed(self.inner.store.current_candidate()).await?;
        let Some(current) = current.filter(|c| c.state.is_some()) else {
            return Err(ServiceError::Conflict("there is no policy candidate to stop".into()));
        };
        let event = NewCandidateEvent {
            sha256: current.sha256.clone(),
            action: CandidateAction::Stopped,
            state: None,
            reason: reason.map(|r| r.as_str().to_owned()),
            triggered_by: actor.as_str().to_owned(),
            metadata: serde_json::json!({ "previous": current.state, "counts": self.cohort_counts() }),
        };
        let written = self.observed(self.inner.store.append_candidate_event(Some(current.seq), &event)).await?;
        if written.is_none() {
            return Err(ServiceError::Conflict("another change of the policy candidate came first; retry".into()));
        }
        self.reconcile_candidate().await;
        Ok(self.candidate_status())
    }

    /// Make the candidate `sha256` the active version (validated and audited as
    /// `policy_activated`), then end the candidate (a `promoted` event).
    pub async fn promote_candidate(
        &self,
        sha256: &crate::input::values::Sha256,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<super::policies::Activated> {
        self.inner.db.require()?;
        let current = self.observed(self.inner.store.current_candidate()).await?;
        let Some(current) = current.filter(|c| c.state.is_some() && c.sha256 == sha256.as_str()) else {
            return Err(ServiceError::Conflict(format!(
                "policy `{sha256}` is not the current candidate: start a shadow or canary of it first, or activate it \
                 directly"
            )));
        };
        self.promote(current, reason, actor).await
    }

    async fn promote(
        &self,
        current: CandidateEvent,
        reason: Option<Reason>,
        actor: &Actor,
    ) -> ServiceResult<super::policies::Activated> {
        let sha = crate::input::values::Sha256::new(&current.sha256).map_err(ServiceError::Internal)?;
        let activated = self.activate_policy(&sha, reason.clone(), actor).await?;
        let event = NewCandidateEvent {
            sha256: current.sha256.clone(),
            action: CandidateAction::Promoted,
            state: None,
            reason: reason.map(|r| r.as_str().to_owned()),
            triggered_by: actor.as_str().to_owned(),
            metadata: serde_json::json!({ "previous": current.state, "counts": self.cohort_counts() }),
        };
        // the activation is what matters: it is done and audited; a candidate changed
        // meanwhile keeps its own event, and a failed write of this one is logged
        match self.observed(self.inner.store.append_candidate_event(Some(current.seq), &event)).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::info!("the policy candidate changed while `{}` was promoted", current.sha256),
            Err(e) => tracing::warn!("policy `{}` is active, but ending its candidate failed: {e}", current.sha256),
        }
        self.reconcile_candidate().await;
        Ok(activated)
    }

    fn cohort_counts(&self) -> serde_json::Value {
        match self.inner.candidates.current() {
            Some(live) if live.is_canary() => {
                serde_json::json!({ "canary": live.canary.snapshot(), "control": live.control.snapshot() })
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Compile and validate the stored version `sha256` as a candidate.
    async fn load_candidate(&self, sha256: &str) -> ServiceResult<Candidate> {
        if let Some(live) = self.inner.candidates.current().filter(|l| l.state.sha256 == sha256) {
            return Ok(live.policy.clone());
        }
        let bytes =
            self.observed(self.inner.store.policy_bytes(sha256)).await?.ok_or_else(|| ServiceError::NotFound {
                field: "sha256".into(),
                message: format!("unknown policy `{sha256}`: no stored policy version has this sha256"),
            })?;
        let runtime = self.inner.runtime.clone();
        let source = format!("candidate {sha256}");
        tokio::task::spawn_blocking(move || runtime.candidate_bytes(&bytes, &source))
            .await
            .map_err(|e| ServiceError::Internal(format!("the policy task failed: {e}")))?
            .map_err(|e| ServiceError::PolicyRejected(e.to_string()))
    }

    /// Follow the stored candidate: load it when it changed (a refusal is kept for the
    /// status, and nothing is followed), drop it when there is none. Called at every re-read
    /// and after every change made here.
    pub async fn reconcile_candidate(&self) {
        let candidates = &self.inner.candidates;
        let _turn = candidates.turn.lock().await;
        let current = match self.observed(self.inner.store.current_candidate()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("cannot read the policy candidate: {e}");
                return;
            }
        };
        let followed = candidates.current();
        if followed.as_ref().map(|l| l.event.seq) == current.as_ref().map(|c| c.seq) && followed.is_some() {
            return;
        }
        let Some(event) = current else {
            candidates.live.store(None);
            return;
        };
        let state = match event.state.clone().map(serde_json::from_value::<CandidateState>) {
            None => {
                candidates.live.store(None);
                return;
            }
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::error!("the stored policy candidate (event {}) cannot be read: {e}", event.seq);
                candidates.live.store(None);
                return;
            }
        };
        if lock(&candidates.refused).as_ref().is_some_and(|(seq, _)| *seq == event.seq) {
            return;
        }
        let policy = match self.load_candidate(&state.sha256).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("the policy candidate `{}` is refused here: {e}", state.sha256);
                *lock(&candidates.refused) = Some((event.seq, e.to_string()));
                candidates.live.store(None);
                return;
            }
        };
        *lock(&candidates.refused) = None;
        // shadow results carry over while the same version stays in shadow
        let shadow = followed
            .as_ref()
            .filter(|l| l.state.sha256 == state.sha256 && l.state.mode == state.mode)
            .map_or_else(Arc::default, |l| l.shadow.clone());
        let threshold = state.threshold();
        candidates.live.store(Some(Arc::new(Live {
            event,
            state,
            policy,
            threshold,
            shadow,
            canary: CohortCounters::default(),
            control: CohortCounters::default(),
            checks: AtomicU64::new(0),
            last_judgement: Mutex::new(None),
        })));
    }

    /// The candidate as this process follows it.
    pub fn candidate_status(&self) -> CandidateStatus {
        let live = self.inner.candidates.current();
        let refused = lock(&self.inner.candidates.refused).as_ref().map(|(_, m)| m.clone());
        let Some(live) = live else {
            return CandidateStatus {
                state: None,
                event: None,
                version: None,
                refused_here: refused,
                shadow_offered: 0,
                shadow_dropped: 0,
                shadow: BTreeMap::new(),
                mismatches: Vec::new(),
                canary: None,
                control: None,
                checks: 0,
                guard: None,
                calls: None,
            };
        };
        let (shadow, mismatches) = match live.shadow.results.lock() {
            Ok(r) => (r.features.clone(), r.mismatches.iter().cloned().collect()),
            Err(_) => (BTreeMap::new(), Vec::new()),
        };
        let canary = live.is_canary();
        let guard = lock(&live.last_judgement).clone();
        CandidateStatus {
            state: Some(live.state.clone()),
            event: Some(live.event.clone()),
            version: live.policy.policy_version(),
            refused_here: refused,
            shadow_offered: live.shadow.offered.load(Relaxed),
            shadow_dropped: live.shadow.dropped.load(Relaxed),
            shadow,
            mismatches,
            canary: canary.then(|| live.canary.snapshot()),
            control: canary.then(|| live.control.snapshot()),
            checks: live.checks.load(Relaxed),
            guard,
            calls: Some(live.policy.counts()),
        }
    }

    /// The stored candidate events, newest first.
    pub async fn candidate_history(&self, limit: u32) -> ServiceResult<Vec<CandidateEvent>> {
        self.observed(self.inner.store.candidate_events(limit)).await
    }

    /// One guard round (every health check of a server): judge the canary against the
    /// control cohort; revert a worse one to 0, step a satisfied one along its schedule
    /// once its share was held for the interval, promote it after the last step.
    pub async fn check_candidate(&self) -> ServiceResult<GuardAction> {
        let Some(live) = self.inner.candidates.current() else { return Ok(GuardAction::None) };
        if !live.is_canary() || live.threshold == 0 {
            return Ok(GuardAction::None);
        }
        let check = live.checks.fetch_add(1, Relaxed) + 1;
        let limits = GuardLimits {
            max_fallback_rate: live.state.max_fallback_rate,
            max_error_rate_delta: live.state.max_error_rate_delta,
            alpha: GUARD_ALPHA,
        };
        let (canary, control) = (live.canary.snapshot(), live.control.snapshot());
        let judgement = guard::judge(&canary, &control, &limits, check);
        *lock(&live.last_judgement) = Some(judgement.clone());
        let guard_actor = Actor::new("guard").map_err(ServiceError::Internal)?;
        match &judgement {
            Judgement::Worse { .. } => {
                let mut state = live.state.clone();
                state.percentage = 0.0;
                state.steps.clear();
                let event = NewCandidateEvent {
                    sha256: state.sha256.clone(),
                    action: CandidateAction::CanaryReverted,
                    state: Some(serde_json::to_value(&state).map_err(|e| ServiceError::Internal(e.to_string()))?),
                    reason: Some(format!("the canary guard found the candidate worse: {}", judgement_text(&judgement))),
                    triggered_by: guard_actor.as_str().to_owned(),
                    metadata: serde_json::json!({
                        "judgement": judgement, "canary": canary, "control": control, "check": check,
                        "previous_percentage": live.state.percentage,
                    }),
                };
                let written =
                    self.observed(self.inner.store.append_candidate_event(Some(live.event.seq), &event)).await?;
                self.reconcile_candidate().await;
                Ok(if written.is_some() { GuardAction::Reverted { judgement } } else { GuardAction::Raced })
            }
            // at 100 % there is no control cohort to compare with: the earlier shares were
            // judged, and the schedule ends once the full share was held for the interval
            Judgement::Satisfied { .. } | Judgement::Waiting { .. }
                if live.state.interval_seconds > 0
                    && (matches!(judgement, Judgement::Satisfied { .. }) || live.state.percentage >= 100.0) =>
            {
                let held = (Utc::now() - live.event.created_at).num_seconds();
                if held < i64::try_from(live.state.interval_seconds).unwrap_or(i64::MAX) {
                    return Ok(GuardAction::Held { judgement });
                }
                let mut state = live.state.clone();
                if state.steps.is_empty() {
                    self.promote(live.event.clone(), Some(schedule_reason("the schedule ended")?), &guard_actor)
                        .await?;
                    return Ok(GuardAction::Promoted);
                }
                state.percentage = state.steps.remove(0);
                let percentage = state.percentage;
                let event = NewCandidateEvent {
                    sha256: state.sha256.clone(),
                    action: CandidateAction::CanaryStep,
                    state: Some(serde_json::to_value(&state).map_err(|e| ServiceError::Internal(e.to_string()))?),
                    reason: Some(format!(
                        "held {}% for {} s with the guard satisfied: stepping to {percentage}%",
                        live.state.percentage, live.state.interval_seconds
                    )),
                    triggered_by: "schedule".to_owned(),
                    metadata: serde_json::json!({
                        "judgement": judgement, "canary": canary, "control": control, "check": check,
                        "previous_percentage": live.state.percentage,
                    }),
                };
                let written =
                    self.observed(self.inner.store.append_candidate_event(Some(live.event.seq), &event)).await?;
                self.reconcile_candidate().await;
                Ok(if written.is_some() { GuardAction::Stepped { percentage } } else { GuardAction::Raced })
            }
            _ => Ok(GuardAction::Held { judgement }),
        }
    }
}

fn schedule_reason(text: &str) -> ServiceResult<Reason> {
    Reason::new(text).map_err(ServiceError::Internal)
}

fn judgement_text(j: &Judgement) -> String {
    match j {
        Judgement::Worse { detail, .. } => detail.clone(),
        other => format!("{other:?}"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> RepoId {
        RepoId::Uuid(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_cohort_is_sticky_as_the_share_grows() {
        let steps = [0.0, 1.0, 5.0, 25.0, 100.0];
        for n in 0..20_000u128 {
            let r = id(n);
            let memberships: Vec<bool> = steps.iter().map(|p| in_cohort(SHA, &r, *p)).collect();
            // once in, in at every larger share
            let first_in = memberships.iter().position(|m| *m);
            if let Some(i) = first_in {
                assert!(memberships.iter().skip(i).all(|m| *m), "repository {r} left the cohort: {memberships:?}");
            }
            assert!(!memberships.first().copied().unwrap_or(true), "0 % admits nobody");
            assert!(memberships.last().copied().unwrap_or(false), "100 % admits everybody");
        }
    }

    #[test]
    fn the_cohort_has_the_share_asked_for() {
        let n = 100_000u128;
        let inside = (0..n).filter(|i| in_cohort(SHA, &id(*i), 5.0)).count();
        // 5 % of 100,000 = 5,000; a binomial's sd is 69: ±5 sd
        assert!((4_655..=5_345).contains(&inside), "{inside} of {n} in a 5 % cohort");
    }

    /// Independence from the feature's bucket: a chi-square test of cohort membership at
    /// 10 % against the feature's bucket decile on 100,000 ids (9 degrees of freedom; the
    /// 0.1 % critical value is 27.88).
    #[test]
    fn the_cohort_is_independent_of_the_feature_bucket() {
        let n = 100_000u128;
        let mut table = [[0f64; 2]; 10];
        for i in 0..n {
            let r = id(i);
            let decile = usize::from(rollout_policy::bucket("hybrid_progressive_capture", &r) / 10);
            let inside = usize::from(in_cohort(SHA, &r, 10.0));
            if let Some(cell) = table.get_mut(decile).and_then(|row| row.get_mut(inside)) {
                *cell += 1.0;
            }
        }
        let total = n as f64;
        let col = |c: usize| table.iter().map(|row| row.get(c).copied().unwrap_or(0.0)).sum::<f64>();
        let (c0, c1) = (col(0), col(1));
        let mut chi2 = 0.0;
        for row in &table {
            let row_total: f64 = row.iter().sum();
            for (c, observed) in row.iter().enumerate() {
                let expected = row_total * if c == 0 { c0 } else { c1 } / total;
                chi2 += (observed - expected).powi(2) / expected;
            }
        }
        assert!(chi2 < 27.88, "chi-square {chi2:.2} with 9 degrees of freedom: the cohort depends on the bucket");
        // and the early adopters (buckets below 10) are not the cohort
        let early_in_cohort = table.first().and_then(|r| r.get(1)).copied().unwrap_or(0.0);
        let early = table.first().map(|r| r.iter().sum::<f64>()).unwrap_or(0.0);
        assert!(early_in_cohort / early < 0.12, "{early_in_cohort} of {early} early adopters in a 10 % cohort");
    }

    #[test]
    fn intervals_parse_with_units_and_name_the_field() {
        assert_eq!(parse_interval("600").ok(), Some(600));
        assert_eq!(parse_interval("30s").ok(), Some(30));
        assert_eq!(parse_interval("10m").ok(), Some(600));
        assert_eq!(parse_interval(" 2h ").ok(), Some(7200));
        assert_eq!(parse_interval("1d").ok(), Some(86_400));
        for bad in ["", "0", "-5m", "10x", "m", "1.5h"] {
            match parse_interval(bad) {
                Err(ServiceError::Invalid { field, .. }) => assert_eq!(field, "interval", "{bad}"),
                other => panic!("`{bad}` gave {other:?}"),
            }
        }
    }

    #[test]
    fn canary_requests_name_the_field_at_fault() {
        let ok = CanaryRequest {
            percentage: 1.0,
            max_fallback_rate: 0.01,
            max_error_rate_delta: 0.02,
            steps: vec![5.0, 25.0, 100.0],
            interval_seconds: 600,
        };
        assert!(ok.clone().validate().is_ok());
        let field = |r: CanaryRequest| match r.validate() {
            Err(ServiceError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(field(CanaryRequest { percentage: 101.0, ..ok.clone() }), "percentage");
        assert_eq!(field(CanaryRequest { percentage: f64::NAN, ..ok.clone() }), "percentage");
        assert_eq!(field(CanaryRequest { max_fallback_rate: 2.0, ..ok.clone() }), "max_fallback_rate");
        assert_eq!(field(CanaryRequest { max_error_rate_delta: -0.1, ..ok.clone() }), "max_error_rate_delta");
        assert_eq!(field(CanaryRequest { steps: vec![5.0, 2.0], ..ok.clone() }), "steps");
        assert_eq!(field(CanaryRequest { interval_seconds: 0, ..ok }), "interval");
    }
}
